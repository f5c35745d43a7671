'use strict';
// The package's own tests: isolated-vm's API over ivm workers, and what a process boundary
// buys (run by node/test.sh, which ci/test.sh runs, with IVM_WORKER naming the ivm binary).
const test = require('node:test');
const assert = require('node:assert');
const { execFileSync } = require('node:child_process');
const ivm = require('..');

const workers = () => Number(execFileSync('pgrep', ['-c', '-P', String(process.pid)]).toString().trim());

test('evaluates synchronously and asynchronously, copying data out', async () => {
  const isolate = new ivm.Isolate({ memoryLimit: 32 });
  const context = isolate.createContextSync();
  assert.strictEqual(context.evalSync('6 * 7'), 42);
  assert.strictEqual(context.evalSync('({ a: 1 })'), undefined, 'objects need { copy: true }');
  assert.deepStrictEqual(context.evalSync('({ a: [1, 2n, "x", new Map([[1, 2]])], d: new Date(0) })', { copy: true }), {
    a: [1, 2n, 'x', new Map([[1, 2]])],
    d: new Date(0),
  });
  assert.strictEqual(await context.eval('Promise.resolve(5)', { promise: true }), 5);
  const script = await isolate.compileScript('globalThis.n = (globalThis.n || 0) + 1', { filename: 'count.js' });
  script.runSync(context);
  assert.strictEqual(await script.run(context), 2);
  // BigInt nanoseconds, as isolated-vm gives them (the two clocks are read apart, so neither
  // bounds the other).
  assert.ok(typeof isolate.cpuTime === 'bigint' && isolate.cpuTime > 0n);
  assert.ok(typeof isolate.wallTime === 'bigint' && isolate.wallTime > 0n);
  assert.ok(isolate.getHeapStatisticsSync().heap_size_limit > 0);
  isolate.dispose();
  assert.strictEqual(isolate.isDisposed, true);
  assert.throws(() => context.evalSync('1'), { message: 'Isolate is disposed' });
});

test("isolated-vm's errors: timeouts, exceptions with their class and stack", () => {
  const context = new ivm.Isolate({ memoryLimit: 32 }).createContextSync();
  assert.throws(() => context.evalSync('for (;;) {}', { timeout: 50 }), { message: 'Script execution timed out.' });
  assert.strictEqual(context.evalSync('"still usable"'), 'still usable');
  assert.throws(() => context.evalSync('null.x', { filename: 'app.js' }), (e) => e instanceof TypeError && /app\.js/.test(e.stack));
  assert.throws(() => context.evalSync('class Custom extends Error { name = "Custom" }; throw new Custom("boom")'), { name: 'Custom', message: 'boom' });
});

test("isolated-vm's README example and #107 end in errors, with Node alive", () => {
  const isolate = new ivm.Isolate({ memoryLimit: 128 });
  const context = isolate.createContextSync();
  const fill = `const storage = []; const twoMegabytes = 1024 * 1024 * 2;
    while (true) { const array = new Uint8Array(twoMegabytes);
      for (let ii = 0; ii < twoMegabytes; ii += 4096) array[ii] = 1; storage.push(array); }`;
  assert.throws(() => context.evalSync(fill), (e) => e instanceof RangeError);
  assert.strictEqual(isolate.isDisposed, true);
  const other = new ivm.Isolate({ memoryLimit: 128 }).createContextSync();
  assert.throws(() => other.evalSync("[...'.'.repeat(1e9)]"), (e) => e instanceof RangeError);
  assert.strictEqual(other.evalSync('1 + 1'), 2);
});

test('a thousand isolates share a few workers', () => {
  const isolates = Array.from({ length: 1000 }, () => new ivm.Isolate({ memoryLimit: 8 }));
  assert.ok(workers() <= 20, `${workers()} worker processes`);
  assert.strictEqual(isolates[999].createContextSync().evalSync('"last"'), 'last');
  for (const isolate of isolates) isolate.dispose();
});

test('a worker that dies fails its isolates, and Node carries on', () => {
  const isolate = new ivm.Isolate({ memoryLimit: 16, ivmPath: process.env.IVM_WORKER });
  const context = isolate.createContextSync();
  const pids = execFileSync('pgrep', ['-P', String(process.pid)]).toString().trim().split('\n');
  for (const pid of pids) {
    try {
      process.kill(Number(pid), 'SIGKILL');
    } catch (error) {
      // A worker whose isolates were all disposed may have exited meanwhile.
      if (error.code !== 'ESRCH') throw error;
    }
  }
  assert.throws(() => context.evalSync('1'), /disposed/);
  assert.strictEqual(new ivm.Isolate().createContextSync().evalSync('"new workers"'), 'new workers');
});
