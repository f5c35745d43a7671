"""libivm from Python with ctypes only (no compiled extension): isolates, eval with JSON and
MessagePack results, a timeout, an exception, a Python host function, a module, the memory
limit. CI runs it; it exits 0 when every check held.

    python3 example.py [path/to/libivm.so]

Without an argument it loads `libivm.so.0` as the system finds it (LD_LIBRARY_PATH, ldconfig).
"""

import ctypes
import json
import sys
import time
from ctypes import POINTER, byref, c_bool, c_char_p, c_double, c_size_t, c_uint8, c_uint64, c_void_p

lib = ctypes.CDLL(sys.argv[1] if len(sys.argv) > 1 else "libivm.so.0")

# Opaque handles are void pointers; errors are checked by `check`.
Error = c_void_p


class Bytes(ctypes.Structure):
    _fields_ = [("data", POINTER(c_uint8)), ("size", c_size_t)]

    def take(self):
        """The bytes as Python bytes; frees the C copy."""
        data = ctypes.string_at(self.data, self.size)
        lib.ivm_bytes_delete(byref(self))
        return data


IVM_ERROR_EXCEPTION, IVM_ERROR_TIMEOUT, IVM_ERROR_MEMORY_LIMIT = 1, 2, 3
IVM_TRANSFER_COPY = 1

FUNCTION = ctypes.CFUNCTYPE(Error, c_void_p, POINTER(c_void_p), c_size_t, POINTER(c_void_p))
FINALIZER = ctypes.CFUNCTYPE(None, c_void_p)

# The signatures used here (ctypes needs them for anything but int-sized arguments).
for name, restype, argtypes in [
    ("ivm_version", c_char_p, []),
    ("ivm_error_kind", c_uint8, [Error]),
    ("ivm_error_message", c_char_p, [Error]),
    ("ivm_error_name", c_char_p, [Error]),
    ("ivm_error_stack", c_char_p, [Error]),
    ("ivm_error_delete", None, [Error]),
    ("ivm_error_new", Error, [c_char_p, c_char_p, c_size_t]),
    ("ivm_bytes_delete", None, [POINTER(Bytes)]),
    ("ivm_isolate_options_new", c_void_p, []),
    ("ivm_isolate_options_delete", None, [c_void_p]),
    ("ivm_isolate_options_set_memory_limit", Error, [c_void_p, c_uint64]),
    ("ivm_isolate_new", Error, [c_void_p, POINTER(c_void_p)]),
    ("ivm_isolate_delete", None, [c_void_p]),
    ("ivm_isolate_is_disposed", c_bool, [c_void_p]),
    ("ivm_isolate_create_context", Error, [c_void_p, c_void_p, POINTER(c_void_p)]),
    ("ivm_context_delete", None, [c_void_p]),
    ("ivm_context_global", Error, [c_void_p, POINTER(c_void_p)]),
    ("ivm_run_options_new", c_void_p, []),
    ("ivm_run_options_delete", None, [c_void_p]),
    ("ivm_run_options_set_timeout_ms", Error, [c_void_p, c_uint64]),
    ("ivm_run_options_set_transfer", Error, [c_void_p, c_uint8]),
    ("ivm_run_options_set_promise", Error, [c_void_p, c_bool]),
    ("ivm_context_eval", Error, [c_void_p, c_char_p, c_size_t, c_void_p, POINTER(c_void_p)]),
    ("ivm_value_new_json", Error, [c_char_p, c_size_t, POINTER(c_void_p)]),
    ("ivm_value_new_number", c_void_p, [c_double]),
    ("ivm_value_get_number", c_bool, [c_void_p, POINTER(c_double)]),
    ("ivm_value_to_json", Error, [c_void_p, POINTER(Bytes)]),
    ("ivm_value_to_msgpack", Error, [c_void_p, POINTER(Bytes)]),
    ("ivm_value_delete", None, [c_void_p]),
    ("ivm_function_new", Error, [c_char_p, FUNCTION, c_void_p, FINALIZER, POINTER(c_void_p)]),
    ("ivm_reference_set", Error, [c_void_p, c_char_p, c_size_t, c_void_p]),
    ("ivm_reference_get", Error, [c_void_p, c_char_p, c_size_t, c_uint8, POINTER(c_void_p)]),
    ("ivm_reference_delete", None, [c_void_p]),
    ("ivm_isolate_compile_module", Error, [c_void_p, c_char_p, c_size_t, c_void_p, POINTER(c_void_p)]),
    ("ivm_module_instantiate", Error, [c_void_p, c_void_p, c_void_p, c_void_p]),
    ("ivm_module_evaluate", Error, [c_void_p, c_void_p]),
    ("ivm_module_namespace", Error, [c_void_p, POINTER(c_void_p)]),
    ("ivm_module_delete", None, [c_void_p]),
]:
    function = getattr(lib, name)
    function.restype, function.argtypes = restype, argtypes


class IvmError(Exception):
    def __init__(self, error):
        self.kind = lib.ivm_error_kind(error)
        self.name = lib.ivm_error_name(error).decode()
        self.stack = (lib.ivm_error_stack(error) or b"").decode()
        super().__init__(lib.ivm_error_message(error).decode())
        lib.ivm_error_delete(error)


def check(error):
    if error:
        raise IvmError(error)


def out(call, *args):
    """Calls a function whose last argument is an out-pointer; returns what it wrote."""
    result = c_void_p()
    check(call(*args, byref(result)))
    return result


def eval_json(context, code, timeout_ms=0):
    options = lib.ivm_run_options_new()
    try:
        check(lib.ivm_run_options_set_transfer(options, IVM_TRANSFER_COPY))
        check(lib.ivm_run_options_set_promise(options, True))
        check(lib.ivm_run_options_set_timeout_ms(options, timeout_ms))
        source = code.encode()
        value = out(lib.ivm_context_eval, context, source, len(source), options)
    finally:
        lib.ivm_run_options_delete(options)
    try:
        encoded = Bytes()
        check(lib.ivm_value_to_json(value, byref(encoded)))
        return json.loads(encoded.take())
    finally:
        lib.ivm_value_delete(value)


def expect(kind, call, *args):
    try:
        call(*args)
    except IvmError as error:
        assert error.kind == kind, (error.kind, str(error))
        return error
    raise AssertionError(f"expected error kind {kind}")


print("libivm", lib.ivm_version().decode())
options = lib.ivm_isolate_options_new()
check(lib.ivm_isolate_options_set_memory_limit(options, 32))
isolate = out(lib.ivm_isolate_new, options)
lib.ivm_isolate_options_delete(options)
context = out(lib.ivm_isolate_create_context, isolate, None)

# JSON both ways, MessagePack out.
assert eval_json(context, "({ list: [1, 2.5, 'x'], nested: { ok: true } })") == {"list": [1, 2.5, "x"], "nested": {"ok": True}}
assert eval_json(context, "Promise.resolve(6 * 7)") == 42
copy = lib.ivm_run_options_new()
check(lib.ivm_run_options_set_transfer(copy, IVM_TRANSFER_COPY))
value = out(lib.ivm_context_eval, context, b"[1, 'a']", 8, copy)
packed = Bytes()
check(lib.ivm_value_to_msgpack(value, byref(packed)))
assert packed.take() == b"\x92\x01\xa1a"
lib.ivm_value_delete(value)
lib.ivm_run_options_delete(copy)

# Errors: an exception with its class and stack, a timeout, a bad argument.
error = expect(IVM_ERROR_EXCEPTION, eval_json, context, "function f() { throw new TypeError('nope') }\nf()")
assert (error.name, str(error)) == ("TypeError", "nope") and "at f (" in error.stack
error = expect(IVM_ERROR_TIMEOUT, eval_json, context, "for (;;) {}", 30)
assert str(error) == "Script execution timed out."
error = expect(6, out, lib.ivm_context_eval, context, b"\xff", 1, None)
assert str(error).startswith("`code` is not UTF-8")
error = expect(6, out, lib.ivm_context_eval, None, b"1", 1, None)
assert str(error) == "`context` is NULL"

# A Python host function: numbers in, a number out; a Python exception becomes a JS Error.
finalized = []


@FUNCTION
def add(user_data, args, nargs, result):
    total = 0.0
    for i in range(nargs):
        number = c_double()
        if not lib.ivm_value_get_number(args[i], byref(number)):
            message = b"add takes numbers"
            return lib.ivm_error_new(b"TypeError", message, len(message))
        total += number.value
    result[0] = lib.ivm_value_new_number(total)
    return None


@FINALIZER
def finalize(user_data):
    finalized.append(True)


function = out(lib.ivm_function_new, b"add", add, None, finalize)
global_object = out(lib.ivm_context_global, context)
check(lib.ivm_reference_set(global_object, b"add", 3, function))
lib.ivm_value_delete(function)
assert eval_json(context, "add(1, 2, 39)") == 42
assert eval_json(context, "try { add('x') } catch (e) { e.name + ': ' + e.message }") == "TypeError: add takes numbers"

# A module; without imports the resolver is not called, but one must be given.
source = b"export const answer = await Promise.resolve(42);"
module = out(lib.ivm_isolate_compile_module, isolate, source, len(source), None)
resolver_unused = ctypes.cast(None, c_void_p)
error = expect(6, lambda: check(lib.ivm_module_instantiate(module, context, resolver_unused, None)))
assert "resolver" in str(error)
RESOLVER = ctypes.CFUNCTYPE(Error, c_void_p, c_char_p, c_void_p, POINTER(c_void_p))
no_imports = RESOLVER(lambda user_data, specifier, referrer, found: lib.ivm_error_new(None, b"no", 2))
check(lib.ivm_module_instantiate(module, context, ctypes.cast(no_imports, c_void_p), None))
check(lib.ivm_module_evaluate(module, None))
namespace = out(lib.ivm_module_namespace, module)
answer = out(lib.ivm_reference_get, namespace, b"answer", 6, IVM_TRANSFER_COPY)
number = c_double()
assert lib.ivm_value_get_number(answer, byref(number)) and number.value == 42
lib.ivm_value_delete(answer)
lib.ivm_reference_delete(namespace)
lib.ivm_module_delete(module)

# The memory limit disposes the isolate; Python carries on.
expect(IVM_ERROR_MEMORY_LIMIT, eval_json, context, "const keep = []; for (;;) keep.push(new Array(1e5).fill(1))")
assert lib.ivm_isolate_is_disposed(isolate)

lib.ivm_reference_delete(global_object)
lib.ivm_context_delete(context)
lib.ivm_isolate_delete(isolate)
# The host function's finalizer runs when its isolate is freed, on one of libivm's threads.
# Wait for it: a ctypes callback must not run while Python shuts down.
for _ in range(200):
    if finalized:
        break
    time.sleep(0.01)
assert finalized, "the host function's finalizer ran with its isolate"
print("all checks passed")
