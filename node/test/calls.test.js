'use strict';
// References, Node functions called from isolates, external copies, modules, rejections and
// crashes: isolated-vm's API over ivm workers (run by node/test.sh, which ci/test.sh runs).
const test = require('node:test');
const assert = require('node:assert');
const { execFileSync, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { Worker } = require('node:worker_threads');
const ivm = require('..');

test('References: the global, get/set/delete, apply in every style, functions as functions', async () => {
  const isolate = new ivm.Isolate({ memoryLimit: 32 });
  const context = isolate.createContextSync();
  const global = context.global;
  assert.strictEqual(global.typeof, 'object');
  global.setSync('n', 41);
  assert.strictEqual(context.evalSync('n + 1'), 42);
  assert.strictEqual(global.setIgnored('m', 1), undefined);
  await global.set('o', { a: [1, 2] }, { copy: true });
  assert.deepStrictEqual(global.getSync('o', { copy: true }), { a: [1, 2] });
  assert.deepStrictEqual((await global.get('o', { externalCopy: true })).copy(), { a: [1, 2] });
  const o = global.getSync('o');
  assert.ok(o instanceof ivm.Reference, 'objects come back as References');
  assert.strictEqual(o.getSync('a').getSync(1), 2);
  global.deleteSync('o');
  assert.strictEqual(global.getSync('o'), undefined);
  assert.throws(() => global.setSync('f', {}), { message: 'A non-transferable value was passed' });

  const add = context.evalSync('(a, b) => a + b', { reference: true });
  assert.strictEqual(add.typeof, 'function');
  assert.strictEqual(add.applySync(undefined, [2, 3]), 5);
  assert.strictEqual(await add.apply(undefined, [4, 5]), 9);
  assert.strictEqual(add.applyIgnored(undefined, [1, 1]), undefined);
  const sum = context.evalSync('(function sum(...xs) { return xs.reduce((a, b) => a + b, 0) })');
  assert.strictEqual(typeof sum, 'function', 'a function result is a Node function');
  assert.strictEqual(sum(1, 2, 3), 6);
  assert.throws(() => add.applySyncPromise(), { message: 'This function may not be called from the default thread' });

  // derefInto gives the value back to its own isolate, once.
  const once = global.derefInto();
  global.setSync('self', once);
  assert.strictEqual(context.evalSync('self === globalThis'), true);
  assert.throws(() => global.setSync('again', once), /only be used once/);
  add.release();
  assert.throws(() => add.typeof, { message: 'Reference has been released' });
  isolate.dispose();
});

test('Node functions called from isolates: inline and re-entrant while Node waits, on the event loop otherwise', async () => {
  const isolate = new ivm.Isolate({ memoryLimit: 32 });
  const context = isolate.createContextSync();
  const global = context.global;
  let depth = 0;
  // A Node function that calls back into the same isolate while the isolate waits for it.
  global.setSync('recurse', new ivm.Reference((n) => {
    depth = Math.max(depth, n);
    return n === 0 ? 'bottom' : context.evalSync(`recurse.applySync(undefined, [${n - 1}])`);
  }));
  assert.strictEqual(context.evalSync('recurse.applySync(undefined, [5])'), 'bottom');
  assert.strictEqual(depth, 5);

  const seen = [];
  global.setSync('log', new ivm.Callback((...args) => seen.push(args)));
  global.setSync('later', new ivm.Reference(async (x) => {
    await new Promise(setImmediate);
    return x * 2;
  }));
  global.setSync('fail', new ivm.Reference(() => {
    throw new RangeError('from Node');
  }));
  context.evalSync('log(1, "two", [3])');
  assert.deepStrictEqual(seen, [[1, 'two', [3]]]);
  // An async run's calls are served on the event loop, before the run's promise settles.
  await context.eval('log("async")');
  assert.deepStrictEqual(seen.at(-1), ['async']);
  assert.strictEqual(await context.eval('later.apply(undefined, [21])', { promise: true }), 42);
  assert.strictEqual(await context.eval('later.applySyncPromise(undefined, [4])'), 8);
  assert.strictEqual(await context.eval('later.applySync(undefined, [5], { result: { promise: true } })', { promise: true }), 10);
  assert.strictEqual(context.evalSync('try { fail.applySync() } catch (e) { `${e.name}: ${e.message}` }'), 'RangeError: from Node');
  assert.strictEqual(context.evalSync('try { later.applySync(undefined, [1]) } catch (e) { e.message }'), '#<Promise> could not be cloned.');
  isolate.dispose();
});

test('hundreds of isolates await async Node functions at once, beside runaways that time out', async () => {
  const tenants = Array.from({ length: 200 }, () => {
    const context = new ivm.Isolate({ memoryLimit: 16 }).createContextSync();
    context.global.setSync('lookup', new ivm.Reference(async (x) => {
      await new Promise(setImmediate);
      return x * 2;
    }));
    return context;
  });
  const runaways = Array.from({ length: 10 }, () => new ivm.Isolate({ memoryLimit: 16 }).createContextSync());
  const code = '(async () => { let s = 0; for (let i = 0; i < 20; i++) s += await lookup.apply(undefined, [i], { result: { promise: true } }); return s })()';
  const [sums, stopped] = await Promise.all([
    Promise.all(tenants.map((context) => context.eval(code, { promise: true, timeout: 20000 }))),
    Promise.allSettled(runaways.map((context) => context.eval('for (;;) {}', { timeout: 100 }))),
  ]);
  assert.ok(sums.every((sum) => sum === 380), `sums: ${[...new Set(sums)]}`);
  assert.ok(stopped.every((s) => s.status === 'rejected' && s.reason.message === 'Script execution timed out.'));
});

test('ExternalCopy: transfers, single use, release and the total size', () => {
  const before = ivm.ExternalCopy.totalExternalSize;
  const bytes = new Uint8Array([1, 2, 3, 4]);
  const copy = new ivm.ExternalCopy(bytes.buffer, { transferOut: true });
  assert.strictEqual(bytes.byteLength, 0, 'the source is detached');
  assert.ok(ivm.ExternalCopy.totalExternalSize > before);
  assert.deepStrictEqual([...new Uint8Array(copy.copy())], [1, 2, 3, 4]);

  const context = new ivm.Isolate({ memoryLimit: 32 }).createContextSync();
  const into = copy.copyInto({ transferIn: true });
  context.global.setSync('buffer', into);
  assert.strictEqual(context.evalSync('new Uint8Array(buffer).join()'), '1,2,3,4');
  assert.throws(() => context.global.setSync('again', into), /only be used once/);
  assert.throws(() => copy.copy(), { message: 'Array buffer is invalid' });
  copy.release();
  assert.throws(() => copy.copy(), { message: 'Copy has been released' });
  assert.strictEqual(ivm.ExternalCopy.totalExternalSize, before);
  assert.throws(() => new ivm.ExternalCopy(Symbol('no')), { message: 'Unsupported type' });

  const fromIsolate = context.evalSync('({ list: [1, "a", 2n] })', { externalCopy: true });
  assert.deepStrictEqual(fromIsolate.copy(), { list: [1, 'a', 2n] });
});

test('modules: link with a resolver, evaluate, read live bindings', async () => {
  const isolate = new ivm.Isolate({ memoryLimit: 32 });
  const context = isolate.createContextSync();
  const counter = isolate.compileModuleSync('export let value = 0; export function up() { return ++value; }');
  const main = await isolate.compileModule("import { up } from './counter'; export const first = up();", { filename: 'main.mjs' });
  assert.deepStrictEqual(main.dependencySpecifiers, ['./counter']);
  assert.throws(() => main.namespace, /not been instantiated/);
  assert.throws(() => main.instantiateSync(context, () => undefined), { message: 'Resolved dependency was not `Module`' });
  await assert.rejects(main.instantiate(context, async () => {
    throw new Error('no such module');
  }), /no such module/);
  await main.instantiate(context, async (specifier) => (specifier === './counter' ? counter : undefined));
  main.evaluateSync();
  assert.strictEqual(main.namespace.getSync('first'), 1);
  counter.namespace.getSync('up')();
  assert.strictEqual(counter.namespace.getSync('value'), 2, 'a live binding');
  const slow = isolate.compileModuleSync('for (;;) {}');
  slow.instantiateSync(context, () => undefined);
  assert.throws(() => slow.evaluateSync({ timeout: 50 }), { message: 'Script execution timed out.' });
});

test("a rejection nothing handled is thrown into the run that made it, as isolated-vm's are", async () => {
  const context = new ivm.Isolate({ memoryLimit: 32 }).createContextSync();
  assert.throws(() => context.evalSync('Promise.resolve().then(() => { throw new Error("late") })'), { message: 'late' });
  assert.doesNotThrow(() => context.evalSync('Promise.reject(new Error("handled")).catch(() => {})'));
  await assert.rejects(context.eval('Promise.reject(new TypeError("async"))'), { name: 'TypeError', message: 'async' });
  assert.strictEqual(context.evalSync('"next run is clean"'), 'next run is clean');
});

test('a dead worker fails the calls in flight and calls onCatastrophicError; Node carries on', async (t) => {
  // A worker program of its own (a link to the same binary) is a pool of its own: the newest
  // worker is this isolate's.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ivm-node-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const program = path.join(dir, 'ivm');
  fs.symlinkSync(process.env.IVM_WORKER, program);
  let reported;
  const crashed = new Promise((resolve) => {
    reported = resolve;
  });
  const isolate = new ivm.Isolate({ memoryLimit: 16, ivmPath: program, onCatastrophicError: (message) => reported(message) });
  const context = isolate.createContextSync();
  const worker = Number(execFileSync('pgrep', ['-n', '-P', String(process.pid)]).toString().trim());
  const running = context.eval('for (;;) {}');
  process.kill(worker, 'SIGKILL');
  await assert.rejects(running, /disposed during execution/);
  assert.match(await crashed, /signal|killed|exit/i);
  assert.strictEqual(isolate.isDisposed, true);
  assert.strictEqual(new ivm.Isolate().createContextSync().evalSync('"others work"'), 'others work');
});

test('isolates made in a worker thread are served there', async () => {
  const worker = new Worker(`
    const ivm = require(${JSON.stringify(require.resolve('..'))});
    const { parentPort } = require('node:worker_threads');
    (async () => {
      const context = await new ivm.Isolate({ memoryLimit: 16 }).createContext();
      const seen = [];
      await context.global.set('log', new ivm.Reference((x) => seen.push(x)));
      await context.eval('log.applySync(undefined, ["sync"]); log.apply(undefined, ["async"])');
      parentPort.postMessage(seen);
    })();
  `, { eval: true });
  const [seen] = await Promise.all([new Promise((resolve) => worker.once('message', resolve)), new Promise((resolve) => worker.once('exit', resolve))]);
  assert.deepStrictEqual(seen, ['sync', 'async']);
});

test('Node exits by itself when nothing is pending, with isolates still alive', () => {
  const script = `
    const ivm = require(${JSON.stringify(require.resolve('..'))});
    const context = new ivm.Isolate({ memoryLimit: 16 }).createContextSync();
    context.global.setSync('log', new ivm.Reference((x) => console.log(x)));
    context.eval('log.apply(undefined, ["served"])').then(() => console.log('done'));
  `;
  const started = Date.now();
  const child = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 20000 });
  assert.strictEqual(child.status, 0, child.stderr);
  assert.strictEqual(child.stdout, 'served\ndone\n');
  assert.strictEqual(child.stderr, '', 'nothing of the workers reaches Node\'s stderr');
  assert.ok(Date.now() - started < 15000);
});

test('calls a synchronous operation does not wait for run on the event loop; awkward values stay in bounds', async () => {
  const context = new ivm.Isolate({ memoryLimit: 32 }).createContextSync();
  const seen = [];
  context.global.setSync('later', new ivm.Callback((x) => seen.push(`async ${x}`), { async: true }));
  context.global.setSync('fire', new ivm.Callback((x) => seen.push(`ignored ${x}`), { ignored: true }));
  context.global.setSync('slow', new ivm.Reference(async () => 1));
  context.evalSync('later(1); fire(2)');
  assert.deepStrictEqual(seen, [], 'not run while Node waited');
  await new Promise(setImmediate);
  await context.eval('0');
  assert.deepStrictEqual(seen.sort(), ['async 1', 'ignored 2']);
  assert.throws(() => context.evalSync('slow.applySyncPromise(undefined, [])'), { message: 'This function may not be called from the default thread' });

  // A value this Node's V8 cannot make (a pattern only newer V8s know: Node 20's does not) is
  // an error, with no exception left behind.
  const nodeKnows = (() => {
    try {
      return new RegExp('(?i:a)') instanceof RegExp;
    } catch {
      return false;
    }
  })();
  if (nodeKnows) {
    assert.ok(context.evalSync('/(?i:a)/', { copy: true }) instanceof RegExp);
  } else {
    assert.throws(() => context.evalSync('/(?i:a)/', { copy: true }), /cannot be made in Node/);
    await assert.rejects(context.eval('/(?i:a)/', { copy: true }), /cannot be made in Node/);
  }
  const parsed = context.evalSync(`JSON.parse('{"__proto__": {"x": 1}}')`, { copy: true });
  assert.strictEqual(Object.getPrototypeOf(parsed), Object.prototype);
  assert.deepStrictEqual(Object.keys(parsed), ['__proto__']);
  context.global.setSync('lone', { s: '\ud800' }, { copy: true });
  assert.strictEqual(context.evalSync('lone.s.charCodeAt(0) === 0xd800 && lone.s.length'), 1, 'Node\'s clone keeps lone surrogates');
  assert.strictEqual(context.evalSync('"still usable"'), 'still usable');
});
