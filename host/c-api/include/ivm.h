/*
 * ivm.h — libivm, ivm's C API: V8 isolates with hard memory and time limits, for C, C++, Go,
 * Python (ctypes/cffi), Ruby, Zig and other hosts that are not Rust.
 *
 * Link with `pkg-config --libs ivm` (libivm.so) or `pkg-config --static --libs ivm`
 * (libivm.a). The examples in host/c-api/examples/ show every part of this API at work.
 *
 * CONVENTIONS (those of wasmtime's C API)
 *
 * - Everything is prefixed `ivm_`. Handles are opaque pointers (`ivm_isolate_t *`, ...); each
 *   type has one `ivm_<type>_delete`, which accepts NULL.
 * - A function that can fail returns `ivm_error_t *`: NULL on success, else an error the
 *   caller owns and frees with `ivm_error_delete`. Results come through out-pointers, which
 *   are written only on success.
 * - A JavaScript exception is an error of kind IVM_ERROR_EXCEPTION, with the exception's
 *   name, message and stack; every other kind is the host's (a timeout, the memory limit, a
 *   bad argument...). isolated-vm's message texts are kept (`Script execution timed out.`).
 * - OWNERSHIP. Handles passed in are borrowed: the call neither keeps nor frees them, unless
 *   its comment says it "takes" one. Handles and `ivm_bytes_t` passed out are owned by the
 *   caller. `const char *` results are borrowed from the handle they came from (valid until it
 *   is deleted) or static, as each function says.
 * - Text in: code, JSON, property keys and messages are UTF-8 given as a pointer and a length
 *   (they may hold NUL; the pointer may be NULL when the length is 0); names (file names,
 *   titles, specifiers, paths) are NUL-terminated UTF-8.
 * - A NULL handle or out-pointer, text that is not UTF-8 or a value out of range gives an
 *   IVM_ERROR_INVALID_ARGUMENT error, never a crash. No Rust panic crosses into C: a bug in
 *   libivm is an IVM_ERROR_INTERNAL error. A handle used after its `_delete` is undefined
 *   behaviour, as in any C API.
 * - THREADS. Every handle may be used from any thread, and from several at once: calls on one
 *   isolate take turns (the Rust API's rules), and a call that runs JavaScript blocks the
 *   calling thread until it is done. `ivm_*_options_t` are plain data: do not change one
 *   while another thread reads it. Callbacks (host functions, console sinks, resolvers,
 *   finalizers) are called on whichever thread runs the isolate's JavaScript, which may be
 *   one of libivm's threads: their `user_data` must be usable from any thread. A callback
 *   returns to libivm normally: no longjmp, C++ exception or thread exit may leave it (a
 *   Python ctypes callback must not run while the interpreter shuts down: wait for the
 *   finalizers of the host functions it made).
 * - Calls that run JavaScript are synchronous. A host function may be asynchronous (see
 *   `ivm_function_new_async`): JavaScript gets a promise, settled from any thread.
 */
#ifndef IVM_H
#define IVM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The version of the API this header describes. `ivm_version()` is the library's. */
#define IVM_VERSION "0.1.0"
#define IVM_VERSION_MAJOR 0
#define IVM_VERSION_MINOR 1
#define IVM_VERSION_PATCH 0

/* The library's version (static string), e.g. to check it matches IVM_VERSION at run time. */
const char *ivm_version(void);
/* The version of the V8 inside (static string). */
const char *ivm_v8_version(void);

/* ---------------------------------------------------------------------------------------- */
/* Errors                                                                                    */

typedef struct ivm_error ivm_error_t;

typedef uint8_t ivm_error_kind_t;
enum ivm_error_kind_enum {
    /* JavaScript threw (a syntax error too): name, message and stack are the exception's. */
    IVM_ERROR_EXCEPTION = 1,
    /* The run's timeout expired; the script was stopped and the isolate stays usable. The
       stack is the frames that were running. */
    IVM_ERROR_TIMEOUT = 2,
    /* The isolate went over its memory limit and has been disposed. */
    IVM_ERROR_MEMORY_LIMIT = 3,
    /* The isolate, or the handle used, is disposed or released. */
    IVM_ERROR_DISPOSED = 4,
    /* A promise the call waited for can never settle. */
    IVM_ERROR_ABANDONED = 5,
    /* An argument was invalid (NULL, not UTF-8, out of range); nothing ran. */
    IVM_ERROR_INVALID_ARGUMENT = 6,
    /* A value could not be converted (e.g. a function where data was asked for). */
    IVM_ERROR_CONVERSION = 7,
    /* The worker process of a process-isolated isolate died; the message says how. */
    IVM_ERROR_WORKER_CRASHED = 8,
    /* The run used up its CPU time (its own limit, or what was left of the isolate's CPU
       budget; once that is spent, runs are refused with this). The isolate stays usable. */
    IVM_ERROR_CPU_LIMIT = 9,
    /* A bug in libivm, caught before it could cross into C. */
    IVM_ERROR_INTERNAL = 100,
};

/* Frees an error (NULL is ignored). */
void ivm_error_delete(ivm_error_t *error);
/* The error's kind (0 for NULL). */
ivm_error_kind_t ivm_error_kind(const ivm_error_t *error);
/* A kind's stable name ("exception", "timeout", "memory-limit", ...; the same as
   `ivm --json`'s), static. */
const char *ivm_error_kind_name(ivm_error_kind_t kind);
/* The message, borrowed from the error. A NUL inside the JavaScript text shows as U+FFFD. */
const char *ivm_error_message(const ivm_error_t *error);
/* The exception's class name (`TypeError`, a custom name; "" for a thrown non-Error, and for
   kinds other than IVM_ERROR_EXCEPTION), borrowed from the error. */
const char *ivm_error_name(const ivm_error_t *error);
/* The JavaScript stack, or NULL if there is none; borrowed from the error. */
const char *ivm_error_stack(const ivm_error_t *error);
/* An error for a host function to return (or an async one to reject with): JavaScript gets
   an exception of class `name` (NULL: "Error") with the message's `len` bytes. The caller
   owns it until it gives it to libivm. */
ivm_error_t *ivm_error_new(const char *name, const char *message, size_t len);

/* ---------------------------------------------------------------------------------------- */
/* Bytes                                                                                     */

/* Bytes libivm gives the caller (JSON, MessagePack, profiles, sealed snapshots). A NUL
   follows the last byte (not counted in `size`), so text can be used as a C string when it
   holds no NUL of its own. Free with `ivm_bytes_delete`, which zeroes the struct. */
typedef struct ivm_bytes {
    uint8_t *data;
    size_t size;
} ivm_bytes_t;

void ivm_bytes_delete(ivm_bytes_t *bytes);

/* ---------------------------------------------------------------------------------------- */
/* Handles                                                                                   */

typedef struct ivm_isolate_options ivm_isolate_options_t;
typedef struct ivm_isolate ivm_isolate_t;
typedef struct ivm_context_options ivm_context_options_t;
typedef struct ivm_context ivm_context_t;
typedef struct ivm_run_options ivm_run_options_t;
typedef struct ivm_compile_options ivm_compile_options_t;
typedef struct ivm_script ivm_script_t;
typedef struct ivm_module ivm_module_t;
typedef struct ivm_reference ivm_reference_t;
typedef struct ivm_value ivm_value_t;
typedef struct ivm_completion ivm_completion_t;
typedef struct ivm_snapshot_options ivm_snapshot_options_t;
typedef struct ivm_snapshot ivm_snapshot_t;
typedef struct ivm_inspector_session ivm_inspector_session_t;

/* ---------------------------------------------------------------------------------------- */
/* Values                                                                                    */

/* A value crossing between the host and an isolate. Data (primitives, arrays, objects,
 * bytes, dates, Maps, Sets...) is copied and read or written as JSON text or as MessagePack
 * bytes, with the mapping of the WIT interface (guest-abi/wit/isolate.wit: undefined is ext
 * type 0, BigInt ext 1 as decimal text, Map ext 2, Set ext 3, RegExp ext 4, Error ext 5, Date
 * the timestamp ext -1, typed arrays and ArrayBuffers bin). References, external copies and
 * host functions are handles inside a value. */

typedef uint8_t ivm_value_kind_t;
enum ivm_value_kind_enum {
    IVM_VALUE_UNDEFINED = 0,
    IVM_VALUE_NULL = 1,
    IVM_VALUE_BOOLEAN = 2,
    IVM_VALUE_NUMBER = 3,
    IVM_VALUE_BIGINT = 4,
    IVM_VALUE_STRING = 5,
    /* An ArrayBuffer, typed array or DataView's bytes (arrives in JavaScript as a Uint8Array). */
    IVM_VALUE_BYTES = 6,
    /* Other data: arrays, objects, dates, Maps, Sets, RegExps, Errors. */
    IVM_VALUE_OBJECT = 7,
    /* A value left in its isolate (`ivm_value_get_reference`). */
    IVM_VALUE_REFERENCE = 8,
    /* A structured clone held outside every isolate (IVM_TRANSFER_EXTERNAL_COPY results). */
    IVM_VALUE_EXTERNAL_COPY = 9,
    /* A host function (`ivm_function_new`). */
    IVM_VALUE_FUNCTION = 10,
};

/* Frees a value (NULL is ignored). */
void ivm_value_delete(ivm_value_t *value);
/* Constructors that cannot fail return the caller's new value. */
ivm_value_t *ivm_value_new_undefined(void);
ivm_value_t *ivm_value_new_null(void);
ivm_value_t *ivm_value_new_boolean(bool value);
ivm_value_t *ivm_value_new_number(double value);
ivm_error_t *ivm_value_new_string(const char *text, size_t len, ivm_value_t **out);
/* A BigInt from decimal text ("-12"). */
ivm_error_t *ivm_value_new_bigint(const char *decimal, ivm_value_t **out);
/* Bytes (copied); JavaScript gets a Uint8Array. */
ivm_error_t *ivm_value_new_bytes(const uint8_t *bytes, size_t len, ivm_value_t **out);
/* Data from JSON text (nesting is limited to 128 levels). */
ivm_error_t *ivm_value_new_json(const char *json, size_t len, ivm_value_t **out);
/* Data from MessagePack (the mapping above; ints beyond ±2^53 become BigInts). */
ivm_error_t *ivm_value_new_msgpack(const uint8_t *bytes, size_t len, ivm_value_t **out);
/* A value holding a new handle to `reference` (the caller keeps its own); NULL for NULL. */
ivm_value_t *ivm_value_new_reference(const ivm_reference_t *reference);
/* Another value like `value` (handles in it are cloned); NULL for NULL. */
ivm_value_t *ivm_value_clone(const ivm_value_t *value);

/* The value's kind (IVM_VALUE_UNDEFINED for NULL). */
ivm_value_kind_t ivm_value_kind(const ivm_value_t *value);
/* Reads a primitive: true and `*out` set if the value is of that kind, else false. */
bool ivm_value_get_boolean(const ivm_value_t *value, bool *out);
bool ivm_value_get_number(const ivm_value_t *value, double *out);
/* A string's UTF-8 bytes, borrowed from the value (not NUL-terminated). */
bool ivm_value_get_string(const ivm_value_t *value, const char **data, size_t *len);
/* A new handle (the caller's) to the reference inside an IVM_VALUE_REFERENCE value. */
bool ivm_value_get_reference(const ivm_value_t *value, ivm_reference_t **out);
/* The value as JSON, as JSON.stringify writes it (`undefined` at the top is `null`, BigInts
   are decimal strings, bytes arrays of numbers, dates milliseconds, Maps and Sets `{}`). An
   external copy is copied out first; a reference or function is IVM_ERROR_CONVERSION. */
ivm_error_t *ivm_value_to_json(const ivm_value_t *value, ivm_bytes_t *out);
/* The value as MessagePack (lossless, the mapping above). */
ivm_error_t *ivm_value_to_msgpack(const ivm_value_t *value, ivm_bytes_t *out);

/* ---------------------------------------------------------------------------------------- */
/* Isolates                                                                                  */

typedef uint8_t ivm_isolation_t;
enum ivm_isolation_enum {
    /* As the IVM_ISOLATION environment variable says (`in-process` when unset). */
    IVM_ISOLATION_DEFAULT = 0,
    /* In this process: the fastest calls, but a V8 crash takes the process. */
    IVM_ISOLATION_IN_PROCESS = 1,
    /* In a worker process (the `ivm` binary): a V8 crash or an out-of-memory is that worker's,
       reported as IVM_ERROR_WORKER_CRASHED / IVM_ERROR_MEMORY_LIMIT. The worker program is the
       one set with ivm_isolate_options_set_worker_program, else IVM_WORKER, else an `ivm`
       beside this executable. */
    IVM_ISOLATION_PROCESS = 2,
};

ivm_isolate_options_t *ivm_isolate_options_new(void);
void ivm_isolate_options_delete(ivm_isolate_options_t *options);
/* Memory limit in MB (heap, ArrayBuffers and WebAssembly memories): default 128, minimum 8
   (a smaller one is refused by ivm_isolate_new). A setter that fails leaves the options as
   they were. */
ivm_error_t *ivm_isolate_options_set_memory_limit(ivm_isolate_options_t *options, uint64_t mb);
ivm_error_t *ivm_isolate_options_set_isolation(ivm_isolate_options_t *options, ivm_isolation_t isolation);
/* The `ivm` binary worker processes run (an absolute path); it makes the isolate process-
   isolated. Isolates whose options name the same program share its worker processes. */
ivm_error_t *ivm_isolate_options_set_worker_program(ivm_isolate_options_t *options, const char *path);
/* The timeout of runs that set none (and of async host functions' completions): default
   30000 ms; 0: none. */
ivm_error_t *ivm_isolate_options_set_default_timeout(ivm_isolate_options_t *options, uint64_t ms);
/* The CPU time the isolate may use across all its runs (ivm_isolate_cpu_time counts it);
   0: no budget (the default). */
ivm_error_t *ivm_isolate_options_set_cpu_budget_ms(ivm_isolate_options_t *options, uint64_t ms);
/* Accept inspector sessions (ivm_isolate_inspector_session). */
ivm_error_t *ivm_isolate_options_set_inspector(ivm_isolate_options_t *options, bool enabled);
/* The secret (at least 32 bytes) code caches are sealed with; default: a random key of this
   process, so caches are good only within it. */
ivm_error_t *ivm_isolate_options_set_code_cache_key(ivm_isolate_options_t *options, const uint8_t *secret, size_t len);
/* Start from a startup snapshot (borrowed; the options keep their own handle). The isolate
   lives in a worker process that hosts only that snapshot's isolates. */
ivm_error_t *ivm_isolate_options_set_snapshot(ivm_isolate_options_t *options, const ivm_snapshot_t *snapshot);

/* Hears that ivm lost control of the isolate (isolated-vm's onCatastrophicError): its worker
   process died, or a script did not stop within the grace after its timeout. `message` (why)
   is borrowed for the call, which comes on one of libivm's threads. libivm calls
   `finalizer(user_data)` (if not NULL) once nothing can call `function` any more — also when
   this call fails. */
typedef void (*ivm_catastrophic_func_t)(void *user_data, const char *message);
ivm_error_t *ivm_isolate_options_set_on_catastrophic_error(ivm_isolate_options_t *options,
                                                          ivm_catastrophic_func_t function, void *user_data,
                                                          void (*finalizer)(void *));
/* Hears each promise rejection that nothing handled by the end of the operation that caused
   it (e.g. a forgotten async call that threw): `error` (kind IVM_ERROR_EXCEPTION) is borrowed
   for the call. Without one, such rejections are dropped. `finalizer` as above. */
typedef void (*ivm_rejection_func_t)(void *user_data, const ivm_error_t *error);
ivm_error_t *ivm_isolate_options_set_on_unhandled_rejection(ivm_isolate_options_t *options,
                                                           ivm_rejection_func_t function, void *user_data,
                                                           void (*finalizer)(void *));

/* Makes an isolate; `options` may be NULL (the defaults) and stays the caller's. */
ivm_error_t *ivm_isolate_new(const ivm_isolate_options_t *options, ivm_isolate_t **out);
/* Frees the handle. The isolate itself lives while any handle into it (a context, script,
   module, reference) does, unless disposed. */
void ivm_isolate_delete(ivm_isolate_t *isolate);
/* Disposes the isolate now: a run in progress stops; later calls give IVM_ERROR_DISPOSED. */
ivm_error_t *ivm_isolate_dispose(const ivm_isolate_t *isolate);
/* True also for NULL. */
bool ivm_isolate_is_disposed(const ivm_isolate_t *isolate);
/* CPU and wall-clock time the isolate has run, in nanoseconds. */
ivm_error_t *ivm_isolate_cpu_time_ns(const ivm_isolate_t *isolate, uint64_t *out);
ivm_error_t *ivm_isolate_wall_time_ns(const ivm_isolate_t *isolate, uint64_t *out);
/* Handles into the isolate that are alive (isolated-vm's referenceCount). */
ivm_error_t *ivm_isolate_reference_count(const ivm_isolate_t *isolate, uint64_t *out);
/* The worker's process id; 0 for an isolate in this process. */
uint32_t ivm_isolate_worker_pid(const ivm_isolate_t *isolate);
/* What confines the isolate's worker process, as JSON: {"applied": ["no-new-privileges", ...,
   "syscall-filter"], "missing": [{"step": "user-namespace", "reason": "..."}]}; `null` for an
   isolate in this process. IVM_SANDBOX=required in the host's environment makes a missing
   step stop the worker instead (creating the isolate fails with IVM_ERROR_WORKER_CRASHED). */
ivm_error_t *ivm_isolate_sandbox(const ivm_isolate_t *isolate, ivm_bytes_t *out);

/* isolated-vm's getHeapStatistics(), in bytes. */
typedef struct ivm_heap_statistics {
    uint64_t total_heap_size;
    uint64_t total_heap_size_executable;
    uint64_t total_physical_size;
    uint64_t total_available_size;
    uint64_t used_heap_size;
    uint64_t heap_size_limit;
    uint64_t malloced_memory;
    uint64_t peak_malloced_memory;
    /* ArrayBuffer backing stores and WebAssembly memories. */
    uint64_t externally_allocated_size;
    uint64_t number_of_native_contexts;
    uint64_t number_of_detached_contexts;
} ivm_heap_statistics_t;

ivm_error_t *ivm_isolate_heap_statistics(const ivm_isolate_t *isolate, ivm_heap_statistics_t *out);

/* ---------------------------------------------------------------------------------------- */
/* Contexts and runs                                                                         */

typedef uint8_t ivm_console_level_t;
enum ivm_console_level_enum {
    IVM_CONSOLE_LOG = 0,   /* console.log, info, debug */
    IVM_CONSOLE_WARN = 1,  /* console.warn, trace */
    IVM_CONSOLE_ERROR = 2, /* console.error */
};

/* Receives one console line (`len` bytes of UTF-8, borrowed for the call). */
typedef void (*ivm_console_func_t)(void *user_data, ivm_console_level_t level, const char *text, size_t len);

ivm_context_options_t *ivm_context_options_new(void);
void ivm_context_options_delete(ivm_context_options_t *options);
/* The context's name, as debuggers show it. */
ivm_error_t *ivm_context_options_set_name(ivm_context_options_t *options, const char *name);
/* Gives the context a `console` (log, info, debug, warn, error, trace) whose lines go to
   `sink`, one at a time, on any thread. Without it the context has no `console`. libivm calls
   `finalizer(user_data)` (if not NULL) once nothing can call `sink` any more — also when this
   call fails. */
ivm_error_t *ivm_context_options_set_console(ivm_context_options_t *options, ivm_console_func_t sink, void *user_data,
                                             void (*finalizer)(void *));

/* Makes a context (a global object with the ECMAScript built-ins and nothing of the host's);
   `options` may be NULL and stays the caller's. */
ivm_error_t *ivm_isolate_create_context(const ivm_isolate_t *isolate, const ivm_context_options_t *options,
                                        ivm_context_t **out);
void ivm_context_delete(ivm_context_t *context);
/* A reference to the context's global object (set host functions and data on it). */
ivm_error_t *ivm_context_global(const ivm_context_t *context, ivm_reference_t **out);

/* How a result that is not a primitive comes back (isolated-vm's transfer options). */
typedef uint8_t ivm_transfer_t;
enum ivm_transfer_enum {
    /* isolated-vm's rule for the call: eval and script runs give undefined for objects, get and
       apply a reference; eval-closure refuses them. Functions always come back as references. */
    IVM_TRANSFER_AUTO = 0,
    IVM_TRANSFER_COPY = 1,
    IVM_TRANSFER_EXTERNAL_COPY = 2,
    IVM_TRANSFER_REFERENCE = 3,
};

ivm_run_options_t *ivm_run_options_new(void);
void ivm_run_options_delete(ivm_run_options_t *options);
/* Wall-clock limit of the run, its microtasks and (with promise) the wait for its promise;
   0: the isolate's default timeout. */
ivm_error_t *ivm_run_options_set_timeout_ms(ivm_run_options_t *options, uint64_t ms);
/* CPU-time limit of the same, on the CPU clock of the threads running the isolate (time
   blocked in Atomics.wait or waiting for host functions is not charged): IVM_ERROR_CPU_LIMIT
   when used up; 0: none but the isolate's CPU budget. */
ivm_error_t *ivm_run_options_set_cpu_limit_ms(ivm_run_options_t *options, uint64_t ms);
/* If the result is a promise, wait for it and use its value (a rejection is an exception). */
ivm_error_t *ivm_run_options_set_promise(ivm_run_options_t *options, bool promise);
ivm_error_t *ivm_run_options_set_transfer(ivm_run_options_t *options, ivm_transfer_t transfer);
/* The file name stack traces show for eval'd code. */
ivm_error_t *ivm_run_options_set_filename(ivm_run_options_t *options, const char *filename);

/* Runs `code` in the context. `options` may be NULL (the defaults); `*out` is the caller's. */
ivm_error_t *ivm_context_eval(const ivm_context_t *context, const char *code, size_t len,
                              const ivm_run_options_t *options, ivm_value_t **out);
/* Runs `code` as the body of a function of `$0`, `$1`, ... (the `nargs` borrowed `args`). */
ivm_error_t *ivm_context_eval_closure(const ivm_context_t *context, const char *code, size_t len,
                                      const ivm_value_t *const *args, size_t nargs, const ivm_run_options_t *options,
                                      ivm_value_t **out);

/* ---------------------------------------------------------------------------------------- */
/* Scripts and the sealed code cache                                                         */

ivm_compile_options_t *ivm_compile_options_new(void);
void ivm_compile_options_delete(ivm_compile_options_t *options);
/* Where the code comes from, for stack traces, syntax errors and module resolution. */
ivm_error_t *ivm_compile_options_set_origin(ivm_compile_options_t *options, const char *filename, int32_t line_offset,
                                            int32_t column_offset);
/* A code cache from an earlier compile (copied). It is sealed with the isolate's key
   (ivm_isolate_options_set_code_cache_key): one that was altered, made for other code or by
   another V8 is rejected and the code compiles normally. */
ivm_error_t *ivm_compile_options_set_cached_data(ivm_compile_options_t *options, const uint8_t *data, size_t len);
/* Make a code cache while compiling (read it with ivm_script_cached_data). */
ivm_error_t *ivm_compile_options_set_produce_cached_data(ivm_compile_options_t *options, bool produce);

ivm_error_t *ivm_isolate_compile_script(const ivm_isolate_t *isolate, const char *code, size_t len,
                                        const ivm_compile_options_t *options, ivm_script_t **out);
void ivm_script_delete(ivm_script_t *script);
/* Runs the script in a context of its isolate. */
ivm_error_t *ivm_script_run(const ivm_script_t *script, const ivm_context_t *context, const ivm_run_options_t *options,
                            ivm_value_t **out);
/* The code cache the compile produced: true and the bytes (borrowed from the script), or false. */
bool ivm_script_cached_data(const ivm_script_t *script, const uint8_t **data, size_t *len);
/* -1: no cache was supplied; 0: it was used; 1: it was rejected. */
int8_t ivm_script_cached_data_rejected(const ivm_script_t *script);

/* ---------------------------------------------------------------------------------------- */
/* Modules                                                                                   */

ivm_error_t *ivm_isolate_compile_module(const ivm_isolate_t *isolate, const char *code, size_t len,
                                        const ivm_compile_options_t *options, ivm_module_t **out);
/* A module whose default export is the parsed `json`, named `name`. */
ivm_error_t *ivm_isolate_json_module(const ivm_isolate_t *isolate, const char *name, const char *json, size_t len,
                                     ivm_module_t **out);
/* A module whose exports are the properties of `exports` (data, borrowed; e.g. from
   ivm_value_new_json("{\"default\": ..., \"limit\": 3}")). Every importer gets its own copy. */
ivm_error_t *ivm_isolate_data_module(const ivm_isolate_t *isolate, const char *name, const ivm_value_t *exports,
                                     ivm_module_t **out);
void ivm_module_delete(ivm_module_t *module);
/* The module's file name (its origin's), borrowed from the module; NULL for NULL. */
const char *ivm_module_filename(const ivm_module_t *module);

/* Finds the module `specifier` names, imported by `referrer` (borrowed for the call): set
   `*module` to a module of the same isolate that the resolver keeps owning (libivm takes a
   handle of its own) and return NULL, or return an error (given to libivm), which fails the
   instantiation. Called on the thread that called ivm_module_instantiate. */
typedef ivm_error_t *(*ivm_module_resolver_t)(void *user_data, const char *specifier, const ivm_module_t *referrer,
                                              const ivm_module_t **module);

/* Links the module graph in `context`, calling `resolver` for each import of each module of
   the graph. Modules already linked are left as they are; if the resolver fails, nothing is
   linked. */
ivm_error_t *ivm_module_instantiate(const ivm_module_t *module, const ivm_context_t *context,
                                    ivm_module_resolver_t resolver, void *user_data);
/* Runs the graph and waits for it, top-level await included. */
ivm_error_t *ivm_module_evaluate(const ivm_module_t *module, const ivm_run_options_t *options);
/* A reference to the module's namespace (its bindings are live). */
ivm_error_t *ivm_module_namespace(const ivm_module_t *module, ivm_reference_t **out);
bool ivm_module_cached_data(const ivm_module_t *module, const uint8_t **data, size_t *len);

int8_t ivm_module_cached_data_rejected(const ivm_module_t *module);

/* Loads the module `import(specifier)` asks for, in the module or script named `referrer`
   (both borrowed for the call): set `*module` to a module of `isolate` (borrowed for the call;
   compile the module there), which libivm takes, and return NULL; or return an error (given to
   libivm), with which the import rejects. libivm links the module with this same function for
   its own imports, evaluates it, and resolves the import with its namespace. Called on the
   thread running the isolate's JavaScript (for a process-isolated isolate, on a thread of
   libivm's). */
typedef ivm_error_t *(*ivm_import_func_t)(void *user_data, const ivm_isolate_t *isolate, const char *specifier,
                                          const char *referrer, ivm_module_t **module);
/* Lets `import()` load modules (without it, `import()` rejects with a TypeError). It replaces
   the function set before; it is kept as long as the isolate, and `finalizer(user_data)` (if
   not NULL) runs once nothing can call it — also when this call fails. */
ivm_error_t *ivm_isolate_set_dynamic_import(const ivm_isolate_t *isolate, ivm_import_func_t function, void *user_data,
                                            void (*finalizer)(void *));
/* Makes `import.meta` for the module named `filename` (borrowed for the call): set `*meta` to
   an object value given to libivm (left NULL: an empty object) and return NULL, or return an
   error. */
typedef ivm_error_t *(*ivm_import_meta_func_t)(void *user_data, const char *filename, ivm_value_t **meta);
/* Fills each module's `import.meta` on first use with the properties `function` gives
   (without it, `import.meta.url` is the module's file name). `finalizer` as above. */
ivm_error_t *ivm_isolate_set_import_meta(const ivm_isolate_t *isolate, ivm_import_meta_func_t function,
                                         void *user_data, void (*finalizer)(void *));

/* ---------------------------------------------------------------------------------------- */
/* References                                                                                */

/* A value inside an isolate, used from outside it. isolated-vm's safety rules apply: own
   properties only, no proxies, getters and setters never run. */

void ivm_reference_delete(ivm_reference_t *reference);
/* Another handle to the same value (the caller's); NULL for NULL. */
ivm_reference_t *ivm_reference_clone(const ivm_reference_t *reference);
/* `typeof` as isolated-vm reports it ("null" for null, "object" for symbols), static; NULL
   for NULL. */
const char *ivm_reference_type_of(const ivm_reference_t *reference);
/* Reads property `key`; `transfer` as for runs (AUTO: a reference for objects). */
ivm_error_t *ivm_reference_get(const ivm_reference_t *reference, const char *key, size_t len, ivm_transfer_t transfer,
                               ivm_value_t **out);
/* Defines a data property (`value` is borrowed: a host function set this way stays the
   caller's to delete too). */
ivm_error_t *ivm_reference_set(const ivm_reference_t *reference, const char *key, size_t len, const ivm_value_t *value);
/* Deletes property `key`. */
ivm_error_t *ivm_reference_delete_property(const ivm_reference_t *reference, const char *key, size_t len);
/* Calls the function with `receiver` as `this` (NULL: undefined) and the borrowed `args`. */
ivm_error_t *ivm_reference_apply(const ivm_reference_t *reference, const ivm_value_t *receiver,
                                 const ivm_value_t *const *args, size_t nargs, const ivm_run_options_t *options,
                                 ivm_value_t **out);
/* A copy of the value, as data. */
ivm_error_t *ivm_reference_copy(const ivm_reference_t *reference, ivm_value_t **out);

/* ---------------------------------------------------------------------------------------- */
/* Host functions                                                                            */

/* A synchronous host function. `args` (data values, borrowed for the call) are what
   JavaScript passed. Return NULL and set `*result` to a value given to libivm (left NULL:
   undefined), or return an error (from ivm_error_new, given to libivm), which JavaScript gets
   as an exception. Results are data: a reference or function result is a TypeError. */
typedef ivm_error_t *(*ivm_function_t)(void *user_data, const ivm_value_t *const *args, size_t nargs,
                                       ivm_value_t **result);

/* An async host function: JavaScript gets a promise. Hand `completion` (now the function's)
   to whatever finishes the work, which settles it once with ivm_completion_resolve or
   ivm_completion_reject, from any thread. Until then the promise is pending, within the
   run's timeout (or the isolate's default timeout once the run is over). */
typedef void (*ivm_async_function_t)(void *user_data, const ivm_value_t *const *args, size_t nargs,
                                     ivm_completion_t *completion);

/* Makes a host function (`name` may be NULL) as a value to set on an object
   (ivm_reference_set) or pass as an argument; `*out` is the caller's. libivm calls
   `finalizer(user_data)` (if not NULL) once, when the last isolate that holds the function
   lets go of it and `*out` is deleted — also when this call fails. */
ivm_error_t *ivm_function_new(const char *name, ivm_function_t function, void *user_data, void (*finalizer)(void *),
                              ivm_value_t **out);
ivm_error_t *ivm_function_new_async(const char *name, ivm_async_function_t function, void *user_data,
                                    void (*finalizer)(void *), ivm_value_t **out);
/* Settles the call with `value` (taken; NULL: undefined) and frees the completion. */
void ivm_completion_resolve(ivm_completion_t *completion, ivm_value_t *value);
/* Rejects the call with `error` (taken; NULL: a plain Error) and frees the completion. */
void ivm_completion_reject(ivm_completion_t *completion, ivm_error_t *error);

/* ---------------------------------------------------------------------------------------- */
/* Startup snapshots                                                                         */

/* What goes into a snapshot: scripts run in order in one context, in a worker process of
   their own, under a memory limit and a timeout; what they leave is sealed with a key. */
ivm_snapshot_options_t *ivm_snapshot_options_new(void);
void ivm_snapshot_options_delete(ivm_snapshot_options_t *options);
ivm_error_t *ivm_snapshot_options_add_script(ivm_snapshot_options_t *options, const char *code, size_t len,
                                             const char *filename);
/* Run after the scripts in a throw-away context, so what it calls is compiled in. */
ivm_error_t *ivm_snapshot_options_set_warmup(ivm_snapshot_options_t *options, const char *code, size_t len);
/* Memory limit of the creation in MB: default 128. */
ivm_error_t *ivm_snapshot_options_set_memory_limit(ivm_snapshot_options_t *options, uint64_t mb);
/* How long the scripts may run: default 30000 ms; 0: no limit. */
ivm_error_t *ivm_snapshot_options_set_timeout_ms(ivm_snapshot_options_t *options, uint64_t ms);
/* The key (at least 32 bytes) to seal with; default: this process's random key. */
ivm_error_t *ivm_snapshot_options_set_key(ivm_snapshot_options_t *options, const uint8_t *secret, size_t len);
ivm_error_t *ivm_snapshot_options_set_worker_program(ivm_snapshot_options_t *options, const char *path);

/* Makes a snapshot (`options` stays the caller's). A script that throws, overstays or
   outgrows the limits fails with IVM_ERROR_EXCEPTION, _TIMEOUT or _MEMORY_LIMIT. */
ivm_error_t *ivm_snapshot_new(const ivm_snapshot_options_t *options, ivm_snapshot_t **out);
void ivm_snapshot_delete(ivm_snapshot_t *snapshot);
/* The sealed snapshot, to store (a copy, the caller's). */
ivm_error_t *ivm_snapshot_sealed(const ivm_snapshot_t *snapshot, ivm_bytes_t *out);
/* Opens a sealed snapshot under the key `secret` (NULL: this process's key):
   IVM_ERROR_INVALID_ARGUMENT, saying why, for one altered, truncated, made by another V8 or
   under another key. */
ivm_error_t *ivm_snapshot_open(const uint8_t *sealed, size_t len, const uint8_t *secret, size_t secret_len,
                               ivm_snapshot_t **out);

/* ---------------------------------------------------------------------------------------- */
/* Debugging and profiling                                                                   */

/* Starts a CPU profile titled `title` (a title already started does nothing). */
ivm_error_t *ivm_isolate_start_cpu_profiler(const ivm_isolate_t *isolate, const char *title);
/* Stops profile `title`: `*out` (the caller's) is isolated-vm's shape, a JSON array of
   {"threadId": ..., "profile": <Chrome .cpuprofile>}, empty for an unknown title. */
ivm_error_t *ivm_isolate_stop_cpu_profiler(const ivm_isolate_t *isolate, const char *title, ivm_bytes_t *out);

/* Receives a piece of output (borrowed for the call); return false to stop. */
typedef bool (*ivm_write_func_t)(void *user_data, const uint8_t *data, size_t len);
/* Takes a heap snapshot (.heapsnapshot JSON for DevTools), handing it to `write` in pieces,
   one at a time, before returning. V8 needs memory in proportion to the heap for it. */
ivm_error_t *ivm_isolate_heap_snapshot(const ivm_isolate_t *isolate, ivm_write_func_t write, void *user_data);

/* A session of the isolate's inspector (Chrome DevTools protocol): messages in with dispatch,
   responses and notifications out with poll. While a session has a run paused, the run waits
   for `Debugger.resume` (poll and dispatch from another thread than the one running it). */
ivm_error_t *ivm_isolate_inspector_session(const ivm_isolate_t *isolate, ivm_inspector_session_t **out);
/* Disconnects the session. */
void ivm_inspector_session_delete(ivm_inspector_session_t *session);
ivm_error_t *ivm_inspector_session_dispatch(const ivm_inspector_session_t *session, const char *message, size_t len);
/* Waits up to `wait_ms` for the next message: `*received` says whether `*out` (the
   caller's) holds one. IVM_ERROR_DISPOSED once the session has ended. */
ivm_error_t *ivm_inspector_session_poll(const ivm_inspector_session_t *session, uint32_t wait_ms, ivm_bytes_t *out,
                                        bool *received);

#ifdef __cplusplus
}
#endif

#endif /* IVM_H */
