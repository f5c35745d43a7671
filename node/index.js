'use strict';
// isolated-vm's API, with the isolates in ivm worker processes. The native addon (src/, built
// by build.sh into ivm.node) links no V8: it starts the `ivm` binary as workers and speaks
// ivm's worker protocol to them. Every native call returns `{ value }`, `{ reference, typeof }`,
// `{ externalCopy }` or `{ error }`; this file shapes the classes and throws isolated-vm's
// errors.
//
// Each operation is written once, as a generator that yields the worker operations it needs
// (`function* (…) { const made = yield { op: … } }`); `sync`, `async` and `ignored` drive it
// in isolated-vm's three call styles.
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const util = require('util');
const v8 = require('v8');

const native = require(process.env.IVM_NODE_ADDON || path.join(__dirname, 'ivm.node'));

/** The `ivm` binary the workers run: the option, `IVM_WORKER`, the `ivm` on PATH, or /usr/bin/ivm. */
function workerProgram(option) {
  if (option) return option;
  if (process.env.IVM_WORKER) return process.env.IVM_WORKER;
  for (const dir of (process.env.PATH || '').split(path.delimiter)) {
    const candidate = path.join(dir || '.', 'ivm');
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      return candidate;
    } catch {}
  }
  return '/usr/bin/ivm';
}

// ---- Errors ---------------------------------------------------------------------------------

/** isolated-vm's error for an outcome's `error` of an operation of `isolate`. */
function thrown(error, isolate) {
  // Calls in flight hear of a dead worker first: its crash handler is told now, while Node is
  // sure to be running (the addon's own report may come when nothing keeps Node alive).
  if (error.kind === 'worker-crashed') isolate?._crashed(error.message);
  // A run the isolate's disposal stopped.
  const stopped = ['timeout', 'disposed', 'abandoned'].includes(error.kind) && isolate?._disposedByUser;
  if (stopped && error.message !== 'Isolate is disposed') return new Error('Isolate was disposed during execution');
  switch (error.kind) {
    case 'timeout':
    case 'cpu-limit':
      return withStack(new Error('Script execution timed out.'), error.stack);
    case 'memory-limit':
      return new RangeError('Isolate was disposed during execution due to memory limit');
    case 'disposed':
    case 'abandoned':
    case 'worker-crashed':
      if (/^(Isolate is disposed|.* has been released|Context is released)$/.test(error.message)) return new Error(error.message);
      return new Error(`Isolate was disposed during execution (${error.message})`);
    case 'exception': {
      if (!error.name && /^#<Object>$|^\[object Object\]$|^Uncaught/.test(error.message || '')) {
        return new Error('An object was thrown from supplied code within isolated-vm, but that object was not an instance of `Error`.');
      }
      // Only the standard classes: the isolate chooses the name, and a class of the
      // application's would run its constructor on the isolate's data.
      const Class = STANDARD_ERRORS[error.name] ?? Error;
      const made = withStack(new Class(error.message), error.stack);
      if (Class === Error && error.name && error.name !== 'Error') {
        Object.defineProperty(made, 'name', { value: error.name, writable: true, configurable: true });
      }
      return made;
    }
    default:
      return new TypeError(error.message);
  }
}

function withStack(error, stack) {
  if (stack) Object.defineProperty(error, 'stack', { value: stack, writable: true, configurable: true });
  return error;
}

const disposedError = () => new Error('Isolate is disposed');

const STANDARD_ERRORS = { __proto__: null, Error, EvalError, RangeError, ReferenceError, SyntaxError, TypeError, URIError };

// ---- Call styles ----------------------------------------------------------------------------

/**
 * A step of an operation that is not a worker operation: a value of the caller's (a module
 * resolver's answer), which the async style awaits and the sync style takes as it is.
 */
class Awaiting {
  constructor(value) {
    this.value = value;
  }
}

/** Runs operation `steps` (a generator of worker operations) of `isolate`, blocking. */
function sync(isolate, steps) {
  let step = steps.next();
  while (!step.done) step = steps.next(step.value instanceof Awaiting ? step.value.value : isolate._request(step.value));
  return step.value;
}

/** Runs operation `steps` of `isolate`; a promise of its result. */
async function async(isolate, steps) {
  let step = steps.next();
  while (!step.done) {
    let result;
    try {
      result = await (step.value instanceof Awaiting ? step.value.value : isolate._requestAsync(step.value));
    } catch (error) {
      step = steps.throw(error);
      continue;
    }
    step = steps.next(result);
  }
  return step.value;
}

/**
 * Defines `name`, `nameSync` and `nameIgnored` on `Class` from `name`'s generator `body`.
 * `promised(args)` says whether a call asks for its result as a promise (`promise: true`): its
 * sync form then returns that promise, as isolated-vm's does, rather than block Node on it.
 */
function styles(Class, name, body, { forms = ['async', 'sync', 'ignored'], promised = () => false } = {}) {
  const isolateOf = handle => handle._isolate;
  const runAsync = (handle, args) => {
    try {
      return async(isolateOf(handle), body.apply(handle, args));
    } catch (error) {
      return Promise.reject(error);
    }
  };
  if (forms.includes('async')) {
    Class.prototype[name] = function (...args) {
      return runAsync(this, args);
    };
  }
  if (forms.includes('sync')) {
    Class.prototype[`${name}Sync`] = function (...args) {
      if (promised(args)) return runAsync(this, args);
      return sync(isolateOf(this), body.apply(this, args));
    };
  }
  if (forms.includes('ignored')) {
    Class.prototype[`${name}Ignored`] = function (...args) {
      runAsync(this, args).catch(() => {});
    };
  }
}

/** Whether options (or their `result`) ask for a promise. */
const promiseAt = (index, field) => args => Boolean((field ? args[index]?.[field] : args[index])?.promise);

// ---- Node functions called from isolates ----------------------------------------------------

/**
 * What this JavaScript thread shares with the addon, made once per thread even if this file is
 * loaded again (a test runner's fresh module registry): Node functions isolates may call, by
 * id (`{ fn, awaits, ignored }`: `awaits`, a returned promise is waited for; `ignored`, nobody
 * waits for the result), and isolates by their native key, for their calls and crash handler.
 */
const shared = (globalThis[Symbol.for('isolated-vm over ivm workers')] ??= (() => {
  const state = { callbacks: new Map(), nextCallback: 1, liveIsolates: new Map() };
  native.setDispatcher(
    (token, key, id, args) => dispatch(state, token, key, id, args),
    (key, reason) => state.liveIsolates.get(key)?.deref()?._crashed(reason),
    () => native.serveQueued(),
  );
  return state;
})());

/** How an isolate calls a Node function: the low two bits of its id (the addon reads them). */
const KIND_BITS = { sync: 0, async: 1, ignored: 2, blocking: 3 };

function serialize(value) {
  const serializer = new v8.Serializer();
  serializer.writeHeader();
  serializer.writeValue(value);
  return serializer.releaseBuffer();
}

function failure(error) {
  try {
    if (error instanceof Error) {
      return { error: { name: String(error.name), message: String(error.message), stack: typeof error.stack === 'string' ? error.stack : undefined } };
    }
    return { error: { name: 'Error', message: String(error) } };
  } catch {
    // A getter that throws, an object with no `toString`.
    return { error: { name: 'Error', message: 'The host function threw a value that cannot be described' } };
  }
}

function success(value) {
  if (passesAsItself(value)) return { primitive: value };
  try {
    return { value: serialize(value) };
  } catch (error) {
    return failure(error);
  }
}

/** Runs Node function `id` for the isolate of `key`, which must own it, and answers `token`. */
function dispatch(state, token, key, id, args) {
  const entry = state.liveIsolates.get(key)?.deref()?._owns(id) ? state.callbacks.get(id) : undefined;
  if (!entry) return native.answer(token, { error: { name: 'Error', message: 'The host function is gone' } });
  let result;
  try {
    result = entry.fn.apply(undefined, args);
  } catch (error) {
    return native.answer(token, failure(error));
  }
  if (entry.ignored) {
    native.answer(token, {});
  } else if (entry.awaits && result !== null && typeof result === 'object' && typeof result.then === 'function') {
    Promise.resolve(result).then(value => native.answer(token, success(value)), error => native.answer(token, failure(error)));
  } else {
    native.answer(token, success(result));
  }
}

// ---- Values into isolates -------------------------------------------------------------------

const NON_TRANSFERABLE = 'A non-transferable value was passed';
/** Marks a released Node-value Reference, and the private paths of the constructors. */
const released = Symbol('released');
const remoteToken = Symbol('remote');

/**
 * A single-use value made by `derefInto()` or `copyInto()`: `{ input, isolate, local }`, the
 * input for an isolate (of `isolate` only, if set) and `local()`, the value for Node.
 */
class SingleUse {
  #input;
  #message;
  constructor(input, message) {
    this.#input = input;
    this.#message = message;
  }
  take() {
    if (!this.#input) throw new TypeError(this.#message);
    const input = this.#input;
    this.#input = undefined;
    return input;
  }
}

const isPrimitive = value => value === null || (typeof value !== 'object' && typeof value !== 'function');

/**
 * Whether the addon takes `value` as itself (`{ primitive }`) rather than as Node's wire format:
 * undefined, null, booleans, numbers and strings that are valid Unicode (it reads strings as
 * UTF-8, which has no lone surrogates).
 */
const passesAsItself = value =>
  value === undefined || value === null || typeof value === 'boolean' || typeof value === 'number' || (typeof value === 'string' && value.isWellFormed());

/**
 * What `value` becomes in `context`'s isolate, by isolated-vm's rules and the transfer
 * `options` (`copy`, `externalCopy`, `reference`): yields the operations it needs (a Node
 * Reference becomes an object of the isolate that calls back).
 */
function* toInput(value, context, options = {}) {
  const isolate = context._isolate;
  if (value instanceof SingleUse) {
    const made = value.take();
    if (!made.input || (made.isolate && made.isolate !== isolate)) throw new TypeError('Cannot dereference this into target isolate');
    return made.input;
  }
  if (value instanceof ExternalCopy) return value._input(false);
  if (value instanceof Callback) return isolate._callback(value._fn, value._kind, value._fn.name);
  if (value instanceof Reference) {
    if (value._isolate === undefined) return yield* proxyFor(value, context);
    if (value._isolate !== isolate) throw new TypeError('Cannot dereference this into target isolate');
    return { reference: value._handle };
  }
  if (typeof value === 'symbol') throw new TypeError(NON_TRANSFERABLE);
  if (options.reference) return yield* proxyFor(new Reference(value), context);
  if (passesAsItself(value)) return { primitive: value };
  if (isPrimitive(value) || options.copy) return { data: serialize(value) };
  if (options.externalCopy) return new ExternalCopy(value)._input(false);
  if (typeof value === 'function') return isolate._callback(value, 'sync', value.name);
  throw new TypeError(NON_TRANSFERABLE);
}

function* toInputs(values, context, options) {
  const inputs = [];
  for (const value of values || []) inputs.push(yield* toInput(value, context, options));
  return inputs;
}

/**
 * isolated-vm's Reference inside an isolate, for a Node value: an object whose `applySync`,
 * `apply`, `applyIgnored` and `applySyncPromise` call the Node function (host functions of the
 * four kinds), and whose `copySync`/`copy` copy a Node value in.
 */
const PROXY_FACTORY = `(sync, async, ignored, blocking, type) => {
  const dereference = () => { throw new TypeError('Cannot dereference this from current isolate'); };
  const call = (how) => {
    if (type !== 'function') return () => { throw new TypeError('Reference is not a function'); };
    return how;
  };
  // A Node function's Reference calls it; another value's copies it in (the host function
  // gives the value).
  const copy = (how) => {
    if (type === 'function') return () => { throw new TypeError('function could not be cloned.'); };
    return () => how();
  };
  return Object.freeze({
    __proto__: null,
    get typeof() { return type; },
    applySync: call((recv, args, options) => {
      if (options && options.result && options.result.promise) return async(...(args || []));
      return sync(...(args || []));
    }),
    apply: call((recv, args) => async(...(args || []))),
    applyIgnored: call((recv, args) => { ignored(...(args || [])); }),
    applySyncPromise: call((recv, args) => blocking(...(args || []))),
    copySync: copy(sync),
    copy: copy(async),
    deref: dereference,
    derefInto: dereference,
    release() {},
  });
}`;

/** The host functions behind a Node value's References in `isolate`, made once per Reference. */
const proxyCallbacks = new WeakMap();

function* proxyFor(reference, context) {
  const isolate = context._isolate;
  const value = reference.deref();
  const type = referenceType(value);
  let fn = proxyCallbacks.get(reference);
  if (!fn) proxyCallbacks.set(reference, (fn = typeof value === 'function' ? value : () => value));
  const kinds = ['sync', 'async', 'ignored', 'blocking'].map(kind => isolate._callback(fn, kind, fn.name));
  const factory = yield* context._proxyFactory();
  const made = yield { op: 'apply', reference: factory, args: [...kinds, { primitive: type }], transfer: 'reference' };
  if (made.error) throw thrown(made.error, isolate);
  return { reference: made.reference, release: true };
}

function referenceType(value) {
  if (value === null) return 'null';
  const type = typeof value;
  return type === 'bigint' || type === 'symbol' ? 'object' : type;
}

/** The transfer option of isolated-vm's TransferOptions (`copy`, `externalCopy`, `reference`). */
function transferOf(options = {}) {
  const set = ['copy', 'externalCopy', 'reference'].filter(name => options[name]);
  if (set.length > 1) throw new TypeError('Only one of `copy`, `externalCopy`, or `reference` may be set');
  return set[0];
}

function runFields(options = {}) {
  const fields = { transfer: transferOf(options), promise: Boolean(options.promise) };
  if (options.timeout !== undefined) fields.timeout = Number(options.timeout);
  if (options.filename !== undefined) fields.filename = String(options.filename);
  if (options.lineOffset !== undefined) fields.lineOffset = options.lineOffset | 0;
  if (options.columnOffset !== undefined) fields.columnOffset = options.columnOffset | 0;
  return fields;
}

// ---- Values out of isolates -----------------------------------------------------------------

/**
 * What an outcome becomes in Node; `transfer` is the option the caller gave, and a Reference
 * made reads its properties as `access` says (`accessors`).
 */
function received(outcome, context, transfer, access) {
  if (outcome.error) throw thrown(outcome.error, context?._isolate);
  if (outcome.reference !== undefined) {
    const reference = Reference._remote(context, outcome.reference, outcome.typeof, access);
    if (outcome.typeof === 'function' && transfer !== 'reference') {
      // isolated-vm hands functions over as Callbacks: a Node function that calls into the isolate.
      return (...args) => reference.applySync(undefined, args);
    }
    return reference;
  }
  if (outcome.externalCopy) return ExternalCopy._fromWorker(outcome.externalCopy, context._isolate._memoryLimit);
  return outcome.value;
}

// ---- Isolate --------------------------------------------------------------------------------

class Isolate {
  #native;
  #options;
  #callbacks = new Set();
  /** Node function → its callback ids, by kind. */
  #callbackIds = new WeakMap();
  #reported = false;
  #disposedByUser = false;

  constructor(options = {}) {
    if (options === null || typeof options !== 'object') throw new TypeError('`options` must be an object');
    const memoryLimit = options.memoryLimit === undefined ? 128 : Number(options.memoryLimit);
    if (!(memoryLimit >= 8)) throw new RangeError('`memoryLimit` must be at least 8 MB');
    this.#options = options;
    this._memoryLimit = memoryLimit;
    const program = workerProgram(options.ivmPath);
    const snapshot = options.snapshot === undefined ? undefined : unsealSnapshot(options.snapshot, program);
    this.#native = native.NativeIsolate.create(memoryLimit, program, snapshot);
    shared.liveIsolates.set(this.#native.key, new WeakRef(this));
    isolates.register(this, { key: this.#native.key, callbacks: this.#callbacks });
  }

  /** @internal The native isolate, if it is not disposed. */
  get _native() {
    if (this.#native.isDisposed()) throw disposedError();
    return this.#native;
  }

  /** @internal */
  get _isolate() {
    return this;
  }

  /** @internal */
  _request(op) {
    return this._native.request(op);
  }

  /** @internal */
  _requestAsync(op) {
    if (this.#native.isDisposed()) return Promise.reject(disposedError());
    return this.#native.requestAsync(op);
  }

  /**
   * @internal A Node function this isolate may call, as an input. A function passed again
   * keeps its id: the table grows with the functions, not with how often they cross.
   */
  _callback(fn, kind, name) {
    let ids = this.#callbackIds.get(fn);
    if (!ids) this.#callbackIds.set(fn, (ids = {}));
    if (ids[kind] === undefined) {
      ids[kind] = shared.nextCallback++ * 4 + KIND_BITS[kind];
      shared.callbacks.set(ids[kind], { fn, awaits: kind === 'async' || kind === 'blocking', ignored: kind === 'ignored' });
      this.#callbacks.add(ids[kind]);
    }
    return { callback: ids[kind], name: String(name || '') };
  }

  /** @internal Whether Node function `id` was given to this isolate. */
  _owns(id) {
    return this.#callbacks.has(id);
  }

  /** @internal The worker died (once: a call in flight or the addon's report says so). */
  _crashed(reason) {
    if (this.#reported) return;
    this.#reported = true;
    forget(this.#native.key, this.#callbacks);
    const handler = this.#options.onCatastrophicError;
    if (typeof handler === 'function') queueMicrotask(() => handler(reason));
  }

  get isDisposed() {
    return this.#native.isDisposed();
  }

  /** @internal Whether `dispose()` was called (not a memory limit or a dead worker). */
  get _disposedByUser() {
    return this.#disposedByUser;
  }

  dispose() {
    if (!this.#native.dispose()) throw new Error('Isolate is already disposed');
    this.#disposedByUser = true;
    forget(this.#native.key, this.#callbacks);
  }

  get cpuTime() {
    return received(this._native.times())[0];
  }

  get wallTime() {
    return received(this._native.times())[1];
  }

  get referenceCount() {
    return received(this._native.referenceCount());
  }

  startCpuProfiler(title) {
    received(this._request({ op: 'startProfiler', title: String(title) }));
    return true;
  }

  async stopCpuProfiler(title) {
    return received(await this._requestAsync({ op: 'stopProfiler', title: String(title) }));
  }
}

// ---- Startup snapshots ----------------------------------------------------------------------

/**
 * The key this process seals startup snapshots with. V8 runs a snapshot as code, so an isolate
 * starts only from one this process made (with the same worker program), never from bytes
 * that came from elsewhere.
 */
const snapshotKey = crypto.randomBytes(32);
const SNAPSHOT_MAGIC = Buffer.from('ivm-node-snapshot-1\0');

function sealSnapshot(program, blob) {
  const programBytes = Buffer.from(program);
  const length = Buffer.alloc(4);
  length.writeUInt32LE(programBytes.length);
  const body = Buffer.concat([SNAPSHOT_MAGIC, length, programBytes, blob]);
  return Buffer.concat([body, crypto.createHmac('sha256', snapshotKey).update(body).digest()]);
}

/** `snapshot` (an ExternalCopy of what createSnapshot made) as `{ id, blob }` for `program`'s workers. */
function unsealSnapshot(snapshot, program) {
  const refused = new TypeError('`snapshot` must be an ExternalCopy of a snapshot made by Isolate.createSnapshot in this process, with this worker program');
  if (!(snapshot instanceof ExternalCopy)) throw refused;
  const sealed = Buffer.from(snapshot.copy());
  if (sealed.length < SNAPSHOT_MAGIC.length + 4 + 32) throw refused;
  const body = sealed.subarray(0, sealed.length - 32);
  const tag = crypto.createHmac('sha256', snapshotKey).update(body).digest();
  if (!crypto.timingSafeEqual(tag, sealed.subarray(sealed.length - 32)) || !body.subarray(0, SNAPSHOT_MAGIC.length).equals(SNAPSHOT_MAGIC)) throw refused;
  const programLength = body.readUInt32LE(SNAPSHOT_MAGIC.length);
  const programStart = SNAPSHOT_MAGIC.length + 4;
  if (body.subarray(programStart, programStart + programLength).toString() !== program) throw refused;
  const blob = body.subarray(programStart + programLength);
  return { id: crypto.createHash('sha256').update(blob).digest('hex'), blob };
}

/**
 * isolated-vm's `Isolate.createSnapshot(scripts, warmupScript)`: runs the scripts (`{ code,
 * filename }`) in a new worker, and gives the startup snapshot of what they left, as an
 * ExternalCopy of an ArrayBuffer for `new Isolate({ snapshot })`.
 */
Isolate.createSnapshot = function createSnapshot(scripts, warmupScript) {
  if (!Array.isArray(scripts)) throw new TypeError('`scripts` must be an array');
  const sources = scripts.map((script) => {
    if (script === null || typeof script !== 'object' || typeof script.code !== 'string') throw new TypeError('Each script must be `{ code, filename? }`');
    return { code: script.code, filename: script.filename === undefined ? undefined : String(script.filename) };
  });
  const program = workerProgram();
  const made = received(native.createSnapshot(program, sources, warmupScript === undefined ? undefined : String(warmupScript), 128));
  const sealed = sealSnapshot(program, made.blob);
  return new ExternalCopy(sealed.buffer.slice(sealed.byteOffset, sealed.byteOffset + sealed.byteLength));
};

/** Forgets an isolate's Node functions and its crash handler. */
function forget(key, ids) {
  shared.liveIsolates.delete(key);
  for (const id of ids) shared.callbacks.delete(id);
  ids.clear();
}

const isolates = new FinalizationRegistry(({ key, callbacks: ids }) => forget(key, ids));

styles(Isolate, 'createContext', function* () {
  return new Context(this, received(yield { op: 'createContext' }));
}, { forms: ['async', 'sync'] });

styles(Isolate, 'getHeapStatistics', function* () {
  return received(yield { op: 'heapStatistics' });
}, { forms: ['async', 'sync'] });

/** A compile operation's fields: the code, its origin and the cache options. */
function compileFields(op, code, options) {
  const fields = { op, code: String(code), ...runFields(options) };
  if (options.cachedData !== undefined) {
    if (!(options.cachedData instanceof ExternalCopy)) throw new TypeError('`cachedData` must be an ExternalCopy to ArrayBuffer');
    fields.cachedData = Buffer.from(options.cachedData.copy());
  }
  fields.produceCachedData = Boolean(options.produceCachedData);
  return fields;
}

/** isolated-vm's `cachedData` and `cachedDataRejected` properties. */
function addCacheResults(compiled, made) {
  if (made.cachedData) compiled.cachedData = new ExternalCopy(made.cachedData.buffer);
  if (made.cachedDataRejected !== undefined) compiled.cachedDataRejected = made.cachedDataRejected;
}

styles(Isolate, 'compileScript', function* (code, options = {}) {
  const compiled = received(yield compileFields('compileScript', code, options));
  const script = new Script(this, compiled.id);
  addCacheResults(script, compiled);
  return script;
}, { forms: ['async', 'sync'] });

styles(Isolate, 'compileModule', function* (code, options = {}) {
  const compiled = received(yield compileFields('compileModule', code, options));
  const module = new Module(this, compiled.id, compiled.requests);
  addCacheResults(module, compiled);
  if (typeof options.meta === 'function') {
    throw new TypeError('`meta` callback must belong to entered isolate');
  }
  return module;
}, { forms: ['async', 'sync'] });

// ---- Handles: contexts, scripts, references ---------------------------------------------------

const handles = new FinalizationRegistry(({ isolate, handle }) => {
  if (!isolate.deref()?.isDisposed) isolate.deref()?._native.release(handle);
});

/** A handle into an isolate: an id in its worker. */
class Handle {
  #isolate;
  #handle;
  constructor(isolate, handle) {
    this.#isolate = isolate;
    this.#handle = handle;
    // A handle Node no longer holds is released in its worker, as isolated-vm's are.
    if (isolate !== undefined) handles.register(this, { isolate: new WeakRef(isolate), handle }, this);
  }

  /** @internal */
  get _isolate() {
    return this.#isolate;
  }

  /** @internal The handle's id; once released, throws an Error saying `message`. */
  _id(message) {
    if (this.#handle === undefined) throw new Error(message);
    return this.#handle;
  }

  /** @internal */
  get _handle() {
    return this.#handle;
  }

  /** Releases the handle; whether it was still held. */
  release() {
    if (this.#handle === undefined) return false;
    handles.unregister(this);
    if (!this.#isolate.isDisposed) this.#isolate._native.release(this.#handle);
    this.#handle = undefined;
    return true;
  }
}

class Context extends Handle {
  #global;
  #proxyFactory;

  get global() {
    if (this._handle === undefined) return undefined;
    if (!this.#global) this.#global = received(this._isolate._request({ op: 'global', context: this._handle }), this, 'reference');
    return this.#global;
  }

  /** @internal The in-isolate maker of References to Node values (made once per context). */
  *_proxyFactory() {
    if (this.#proxyFactory === undefined) {
      const made = yield { op: 'eval', context: this._id('Context is released'), code: PROXY_FACTORY, transfer: 'reference' };
      if (made.error) throw thrown(made.error);
      this.#proxyFactory = Reference._remote(this, made.reference, 'function');
    }
    return this.#proxyFactory._id('Reference has been released');
  }

  release() {
    this.#global?.release();
    this.#proxyFactory?.release();
    return super.release();
  }
}

styles(Context, 'eval', function* (code, options = {}) {
  const op = { op: 'eval', context: this._id('Context is released'), code: String(code), ...runFields(options) };
  return received(yield op, this, op.transfer);
}, { promised: promiseAt(1) });

styles(Context, 'evalClosure', function* (code, args = [], options = {}) {
  const inputs = yield* toInputs(args, this, options.arguments);
  const op = { op: 'evalClosure', context: this._id('Context is released'), code: String(code), args: inputs, ...runFields(options), ...runFields(options.result) };
  return received(yield op, this, op.transfer);
}, { promised: promiseAt(2, 'result') });

class Script extends Handle {}

styles(Script, 'run', function* (context, options = {}) {
  if (!(context instanceof Context) || context._isolate !== this._isolate) throw new TypeError('Invalid context');
  const op = { op: 'runScript', script: this._id('Script has been released'), context: context._id('Context is released'), ...runFields(options) };
  const result = received(yield op, context, op.transfer);
  if (options.release) this.release();
  return result;
}, { promised: promiseAt(1) });

/** An ES module compiled in an isolate. */
class Module extends Handle {
  #requests;
  #context;
  constructor(isolate, id, requests) {
    super(isolate, id);
    this.#requests = requests;
  }

  get dependencySpecifiers() {
    return this.#requests.map(request => request.specifier);
  }

  /** @internal */
  get _requests() {
    return this.#requests;
  }

  /** @internal The context the module was instantiated in. */
  get _context() {
    return this.#context;
  }

  set _context(context) {
    this.#context = context;
  }

  /** A Reference to the module's namespace (its getters run: live bindings). */
  get namespace() {
    if (!this.#context) throw new Error('Module has not been instantiated.');
    return received(this._isolate._request({ op: 'namespace', module: this._id('Module has been released') }), this.#context, 'reference', { accessors: true });
  }
}

/**
 * Links `root`'s graph as isolated-vm's linker does: every import of every module not yet
 * linked is resolved (`resolve(specifier, referrer)`, which may answer with a promise in the
 * async style), then the graph is instantiated at once. If anything fails nothing is linked,
 * and a later call can try again.
 */
function* instantiate(root, context, resolve) {
  if (!(context instanceof Context) || context._isolate !== root._isolate) throw new TypeError('Invalid context');
  if (typeof resolve !== 'function') throw new TypeError('`resolveCallback` must be a function');
  const links = [];
  const seen = new Set([root]);
  const pending = [root];
  while (pending.length) {
    const module = pending.pop();
    if (received(yield { op: 'linked', module: module._id('Module has been released') })) continue;
    for (const request of module._requests) {
      const target = yield new Awaiting(resolve(request.specifier, module));
      if (!(target instanceof Module) || target._isolate !== root._isolate) throw new TypeError('Resolved dependency was not `Module`');
      if (!seen.has(target)) {
        seen.add(target);
        pending.push(target);
      }
      links.push({ referrer: module._id('Module has been released'), specifier: request.specifier, attributes: request.attributes, target: target._id('Module has been released') });
    }
  }
  received(yield { op: 'instantiate', module: root._id('Module has been released'), context: context._id('Context is released'), links });
  for (const module of seen) module._context ??= context;
}

styles(Module, 'instantiate', function* (context, resolve) {
  yield* instantiate(this, context, resolve);
}, { forms: ['async', 'sync'] });

styles(Module, 'evaluate', function* (options = {}) {
  if (!this._context) throw new Error('Module is uninstantiated');
  received(yield { op: 'evaluate', module: this._id('Module has been released'), timeout: options.timeout === undefined ? undefined : Number(options.timeout) }, this._context);
}, { forms: ['async', 'sync'] });

/**
 * isolated-vm's Reference: to a Node value (`new ivm.Reference(value)`), or to a value left in
 * an isolate (what `context.global`, `get` and `apply` give).
 */
class Reference extends Handle {
  #context;
  #type;
  #value;
  #local = false;
  /** Whether `get` runs getters, for a value in an isolate (a module namespace's live bindings). */
  #accessors = false;
  /** Whether `get` follows prototype chains (`unsafeInherit`), for a Node value. */
  #inherit = false;

  constructor(value, ...remote) {
    // Users pass a Node value and options (`unsafeInherit`); `Reference._remote` passes
    // `remoteToken, context, id, type, access`.
    const isRemote = remote[0] === remoteToken;
    const [options, context, id, type, access] = isRemote ? [{}, ...remote.slice(1)] : [remote[0] ?? {}];
    super(isRemote ? context._isolate : undefined, isRemote ? id : undefined);
    if (isRemote) {
      this.#context = context;
      this.#type = type;
      this.#accessors = Boolean(access.accessors);
    } else {
      this.#local = true;
      this.#value = value;
      this.#type = referenceType(value);
      this.#inherit = Boolean(options.unsafeInherit);
    }
  }

  /** @internal A reference to handle `id` of `context`'s isolate (`access.accessors`: its getters run). */
  static _remote(context, id, type, access = {}) {
    return new Reference(undefined, remoteToken, context, id, type, access);
  }

  get typeof() {
    this.#check();
    return this.#type;
  }

  #check() {
    if (this.#local ? this.#value === released : this._handle === undefined) throw new Error('Reference has been released');
  }

  /** @internal */
  get _context() {
    return this.#context;
  }

  deref(options = {}) {
    this.#check();
    if (!this.#local) throw new TypeError('Cannot dereference this from current isolate');
    const value = this.#value;
    if (options.release) this.release();
    return value;
  }

  derefInto(options = {}) {
    this.#check();
    const message = 'The return value of `derefInto()` should only be used once';
    if (this.#local) {
      const value = this.#value;
      if (options.release) this.release();
      return new SingleUse({ local: () => value }, message);
    }
    return new SingleUse({ input: { reference: this._handle, release: Boolean(options.release) }, isolate: this._isolate }, message);
  }

  release() {
    if (this.#local) {
      const held = this.#value !== released;
      this.#value = released;
      return held;
    }
    return super.release();
  }

  copySync() {
    this.#check();
    if (this.#local) return structuredClone(this.#value);
    return received(this._isolate._request({ op: 'copy', reference: this._handle }));
  }

  async copy() {
    if (this.#local) return this.copySync();
    this.#check();
    return received(await this._isolate._requestAsync({ op: 'copy', reference: this._handle }));
  }

  // Calls of a Node value's Reference run the function here.
  #localApply(recv, args) {
    this.#check();
    if (typeof this.#value !== 'function') throw new TypeError('Reference is not a function');
    return this.#value.apply(localValue(recv), (args || []).map(arg => localValue(arg)));
  }

  applySync(recv, args, options) {
    if (this.#local) return this.#localApply(recv, args);
    if (options?.result?.promise) return this.apply(recv, args, options);
    return sync(this._isolate, this.#apply(recv, args, options));
  }

  apply(recv, args, options) {
    if (this.#local) {
      try {
        return Promise.resolve(this.#localApply(recv, args));
      } catch (error) {
        return Promise.reject(error);
      }
    }
    try {
      return async(this._isolate, this.#apply(recv, args, options));
    } catch (error) {
      return Promise.reject(error);
    }
  }

  applyIgnored(recv, args, options) {
    if (this.#local) {
      try {
        this.#localApply(recv, args);
      } catch {}
      return;
    }
    async(this._isolate, this.#apply(recv, args, options)).catch(() => {});
  }

  applySyncPromise() {
    throw new TypeError('This function may not be called from the default thread');
  }

  *#apply(recv, args, options = {}) {
    this.#check();
    if (this.#type !== 'function') throw new TypeError('Reference is not a function');
    const context = this.#context;
    const recvInput = recv === undefined ? undefined : yield* toInput(recv, context, options.arguments);
    const inputs = yield* toInputs(args, context, options.arguments);
    const op = { op: 'apply', reference: this._handle, recv: recvInput, args: inputs, ...runFields(options.result), timeout: options.timeout === undefined ? undefined : Number(options.timeout) };
    return received(yield op, context, op.transfer);
  }

  *_get(key, options = {}) {
    if (this.#local) return this.#localGet(key, options);
    this.#remoteObject();
    const op = { op: 'get', reference: this._handle, ...keyFields(key), transfer: transferOf(options), accessors: options.accessors ?? this.#accessors };
    return received(yield op, this.#context, op.transfer ?? 'reference-fallback');
  }

  *_set(key, value, options = {}) {
    if (this.#local) return this.#localSet(key, value, options);
    this.#remoteObject();
    const input = yield* toInput(value, this.#context, options);
    received(yield { op: 'set', reference: this._handle, ...keyFields(key), value: input });
    return true;
  }

  *_delete(key) {
    if (this.#local) return this.#localDelete(key);
    this.#remoteObject();
    received(yield { op: 'delete', reference: this._handle, ...keyFields(key) });
    return true;
  }

  #remoteObject() {
    this.#check();
  }

  // A Node value's Reference reads and writes it here, with isolated-vm's rules: own data
  // properties only (or the prototype chain's with `unsafeInherit`), no getters unless
  // `accessors`, no proxies anywhere on the chain, and `set` defines a data property.

  /** The Node object, checked: not a proxy, nor any object on its prototype chain. */
  #localObject() {
    this.#check();
    const target = this.#value;
    if (target === null || typeof target !== 'object') throw new TypeError('Reference is not an object');
    for (let object = target; object !== null; object = Object.getPrototypeOf(object)) {
      if (util.types.isProxy(object)) throw new TypeError('Object is or has proxy');
    }
    return target;
  }

  #localGet(key, options) {
    const target = this.#localObject();
    const name = propertyKey(key);
    let descriptor;
    for (let object = target; object !== null && !descriptor; object = this.#inherit ? Object.getPrototypeOf(object) : null) {
      descriptor = Object.getOwnPropertyDescriptor(object, name);
    }
    if (!descriptor) return undefined;
    if (!('value' in descriptor)) {
      if (!options.accessors) throw new TypeError('Property is getter');
      return localOut(descriptor.get ? descriptor.get.call(target) : undefined, options, this.#inherit);
    }
    return localOut(descriptor.value, options, this.#inherit);
  }

  #localSet(key, value, options) {
    const target = this.#localObject();
    const name = propertyKey(key);
    if (!Reflect.deleteProperty(target, name) || !Reflect.defineProperty(target, name, { value: localValue(value, options), writable: true, enumerable: true, configurable: true })) {
      throw new TypeError('Set failed');
    }
    return true;
  }

  #localDelete(key) {
    if (!Reflect.deleteProperty(this.#localObject(), propertyKey(key))) throw new TypeError('Delete failed');
    return true;
  }
}

function propertyKey(key) {
  if (typeof key === 'string' || typeof key === 'symbol' || (typeof key === 'number' && Number.isInteger(key) && key >= 0)) return key;
  throw new TypeError('Invalid `key`');
}

/** What a value passed to a Node value's Reference becomes, by the transfer `options`. */
function localValue(value, options = {}) {
  if (value instanceof SingleUse) {
    const made = value.take();
    if (!made.local) throw new TypeError('Cannot dereference this into target isolate');
    return made.local();
  }
  if (value instanceof Reference && value._isolate === undefined) return new Reference(value.deref());
  if (value instanceof ExternalCopy) return value.copy();
  if (options.copy) return structuredClone(value);
  if (options.reference) return new Reference(value);
  return value;
}

/** What a Node value's Reference gives back: primitives and functions as they are, other objects as References. */
function localOut(value, options, inherit) {
  const transfer = transferOf(options);
  if (transfer === 'copy') return structuredClone(value);
  if (transfer === 'externalCopy') return new ExternalCopy(value);
  if (transfer !== 'reference' && (isPrimitive(value) || typeof value === 'function')) return value;
  return new Reference(value, { unsafeInherit: inherit });
}

function keyFields(key) {
  if (typeof key === 'number' && Number.isInteger(key) && key >= 0 && key <= 0xfffffffe) return { index: key };
  if (typeof key === 'string') return { key };
  if (typeof key === 'number') return { key: String(key) };
  throw new TypeError('Invalid `key`');
}

// A Reference to a Node value has no isolate: its get/set/delete fail with what `_get` says.
for (const [name, body, forms] of [
  ['get', Reference.prototype._get, { forms: ['async', 'sync'], promised: promiseAt(1) }],
  ['set', Reference.prototype._set],
  ['delete', Reference.prototype._delete],
]) {
  styles(Reference, name, body, forms);
}

// ---- Callback, ExternalCopy -----------------------------------------------------------------

/** A Node function that isolates call as a plain function (`{ async, ignored, sync }`). */
class Callback {
  constructor(fn, options = {}) {
    if (typeof fn !== 'function') throw new TypeError('`fn` must be a function');
    this._fn = fn;
    this._kind = options.async ? 'async' : options.ignored ? 'ignored' : 'sync';
  }
}

let totalExternalSize = 0;
const copies = new FinalizationRegistry(size => {
  totalExternalSize -= size;
});

/** A copy of a value held outside every isolate (V8's wire format, and the ArrayBuffers transferred with it). */
class ExternalCopy {
  #bytes;
  #buffers;
  /** Whether the bytes are Node's own wire format (else a worker's, read by ivm's codec). */
  #node = true;
  #memoryLimit;
  #size = 0;

  constructor(value, options = {}) {
    if (value === undefined && options === released) return;
    if (typeof value === 'symbol') throw new TypeError('Unsupported type');
    const transfer = [...(options.transferList || [])];
    for (const buffer of transfer) {
      if (!(buffer instanceof ArrayBuffer)) throw new TypeError('Non-ArrayBuffer passed in `transferList`');
    }
    if (options.transferOut) transfer.push(ArrayBuffer.isView(value) ? value.buffer : value);
    const serializer = new v8.Serializer();
    serializer.writeHeader();
    transfer.forEach((buffer, id) => {
      if (!(buffer instanceof ArrayBuffer) || buffer.detached) throw new TypeError('Array buffer is invalid');
      serializer.transferArrayBuffer(id, buffer);
    });
    serializer.writeValue(value);
    this.#bytes = serializer.releaseBuffer();
    this.#buffers = transfer.map(buffer => buffer.slice(0));
    // The sources are detached, as a transfer does.
    if (transfer.length) structuredClone(transfer, { transfer });
    this.#account();
  }

  /** @internal A copy a worker made. */
  static _fromWorker({ bytes, buffers }, memoryLimit) {
    const copy = new ExternalCopy(undefined, released);
    copy.#bytes = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    copy.#buffers = buffers.map(b => b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
    copy.#node = false;
    copy.#memoryLimit = memoryLimit;
    copy.#account();
    return copy;
  }

  static get totalExternalSize() {
    return totalExternalSize;
  }

  #account() {
    this.#size = this.#bytes.length + this.#buffers.reduce((sum, b) => sum + b.byteLength, 0);
    totalExternalSize += this.#size;
    copies.register(this, this.#size, this);
  }

  #check() {
    if (this.#bytes === undefined) throw new Error('Copy has been released');
    if (this.#buffers.some(buffer => buffer === undefined)) throw new TypeError('Array buffer is invalid');
  }

  /** The buffers for one use: moved out with `transferIn` (this copy can then not be used again). */
  #take(transferIn) {
    const buffers = transferIn ? this.#buffers : this.#buffers.map(buffer => buffer.slice(0));
    if (transferIn) this.#buffers = this.#buffers.map(() => undefined);
    return buffers;
  }

  copy(options = {}) {
    this.#check();
    const value = this.#read(this.#take(Boolean(options.transferIn)));
    if (options.release) this.release();
    return value;
  }

  /** The value of `bytes`, made in Node with `buffers` as the transferred ArrayBuffers. */
  #read(buffers, bytes = this.#bytes) {
    if (!this.#node) {
      const outcome = native.readWire(bytes, this.#memoryLimit);
      if (outcome.error) throw thrown(outcome.error);
      return outcome.value;
    }
    const deserializer = new v8.Deserializer(bytes);
    deserializer.readHeader();
    buffers.forEach((buffer, id) => deserializer.transferArrayBuffer(id, buffer));
    return deserializer.readValue();
  }

  copyInto(options = {}) {
    this.#check();
    const transferIn = Boolean(options.transferIn);
    const input = this._input(transferIn);
    const buffers = input.buffers.map(buffer => buffer.buffer.slice(buffer.byteOffset, buffer.byteOffset + buffer.byteLength));
    const bytes = this.#bytes;
    const local = () => this.#read(buffers, bytes);
    if (options.release) this.release();
    return new SingleUse({ input, local }, 'The return value of `copyInto()` should only be used once');
  }

  /** @internal This copy as an input to an isolate. */
  _input(transferIn) {
    this.#check();
    return { copy: this.#bytes, buffers: this.#take(transferIn).map(buffer => Buffer.from(buffer)), transferIn };
  }

  release() {
    if (this.#bytes === undefined) throw new Error('Copy has been released');
    copies.unregister(this);
    totalExternalSize -= this.#size;
    this.#bytes = undefined;
    this.#buffers = [];
  }
}

const lib = Object.freeze({ hrtime: process.hrtime });

module.exports = { Isolate, Context, Script, Module, Reference, Callback, ExternalCopy, lib };
