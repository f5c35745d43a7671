// ivm run examples/hello.js
const primes = [];
for (let n = 2; primes.length < 10; n++) {
  if (primes.every((p) => n % p !== 0)) primes.push(n);
}
console.log('first primes:', primes);
console.log('Intl works:', new Intl.NumberFormat('de-DE').format(1234.5));
