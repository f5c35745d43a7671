'use strict';
// isolated-vm's API, with the isolates in ivm worker processes. The native addon (src/, built
// by build.sh into ivm.node) links no V8: it starts the `ivm` binary as workers and speaks
// ivm's worker protocol to them. Every native call returns `{ value }` or `{ error }`; this
// file shapes the classes and throws isolated-vm's errors.
const fs = require('fs');
const path = require('path');

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

/** isolated-vm's error for an outcome's `error`. */
function thrown(error) {
  switch (error.kind) {
    case 'timeout':
      return withStack(new Error('Script execution timed out.'), error.stack);
    case 'memory-limit':
      return new RangeError('Isolate was disposed during execution due to memory limit');
    case 'disposed':
    case 'worker-crashed':
      return new Error(error.message === 'Isolate is disposed' ? error.message : `Isolate was disposed during execution (${error.message})`);
    case 'exception': {
      const Class = globalThis[error.name] && globalThis[error.name].prototype instanceof Error ? globalThis[error.name] : Error;
      const made = withStack(new Class(error.message), error.stack);
      if (Class === Error && error.name && error.name !== 'Error') made.name = error.name;
      return made;
    }
    default:
      return withStack(new TypeError(error.message), undefined);
  }
}

function withStack(error, stack) {
  if (stack) Object.defineProperty(error, 'stack', { value: stack, writable: true, configurable: true });
  return error;
}

function unwrap(outcome) {
  if (outcome.error) throw thrown(outcome.error);
  return outcome.value;
}

const disposed = () => new Error('Isolate is disposed');

class Isolate {
  #native;
  constructor(options = {}) {
    const memoryLimit = options.memoryLimit === undefined ? 128 : options.memoryLimit;
    if (!(memoryLimit >= 8)) throw new RangeError('`memoryLimit` must be at least 8 MB');
    this.#native = native.NativeIsolate.create(Math.floor(memoryLimit), workerProgram(options.ivmPath));
  }

  /** @internal */
  get _native() {
    if (this.#native.isDisposed()) throw disposed();
    return this.#native;
  }

  get isDisposed() {
    return this.#native.isDisposed();
  }

  dispose() {
    if (!this.#native.dispose()) throw disposed();
  }

  get cpuTime() {
    return unwrap(this._native.times())[0];
  }

  get wallTime() {
    return unwrap(this._native.times())[1];
  }

  get referenceCount() {
    return unwrap(this._native.referenceCount());
  }

  getHeapStatisticsSync() {
    return unwrap(this._native.heapStatistics());
  }

  async getHeapStatistics() {
    return this.getHeapStatisticsSync();
  }

  createContextSync() {
    return new Context(this, unwrap(this._native.createContext()));
  }

  async createContext() {
    return new Context(this, unwrap(await this._native.createContextAsync()));
  }

  compileScriptSync(code, options = {}) {
    return new Script(this, unwrap(this._native.compileScript(String(code), options.filename)));
  }

  async compileScript(code, options = {}) {
    return new Script(this, unwrap(await this._native.compileScriptAsync(String(code), options.filename)));
  }
}

/** The run options isolated-vm takes: `timeout`, `copy`, `promise`, `filename`. */
function runArgs(options = {}) {
  return [options.timeout, Boolean(options.copy), Boolean(options.promise)];
}

/** A handle into an isolate (a context, a script): an id in its worker. */
class Handle {
  #isolate;
  #id;
  constructor(isolate, id) {
    this.#isolate = isolate;
    this.#id = id;
  }

  /** @internal */
  get _native() {
    return this.#isolate._native;
  }

  /** @internal */
  get _id() {
    return this.#id;
  }

  release() {
    this._native.release(this.#id);
  }
}

class Context extends Handle {
  evalSync(code, options = {}) {
    return unwrap(this._native.eval(this._id, String(code), ...runArgs(options), options.filename));
  }

  async eval(code, options = {}) {
    return unwrap(await this._native.evalAsync(this._id, String(code), ...runArgs(options), options.filename));
  }
}

class Script extends Handle {
  runSync(context, options = {}) {
    return unwrap(this._native.runScript(this._id, context._id, ...runArgs(options)));
  }

  async run(context, options = {}) {
    return unwrap(await this._native.runScriptAsync(this._id, context._id, ...runArgs(options)));
  }
}

module.exports = { Isolate, Context, Script };
