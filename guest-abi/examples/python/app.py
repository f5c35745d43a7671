"""A Python guest of ivm:isolate@0.2.0: runs JavaScript in a V8 isolate.

Build: ci/build-python-guest.sh app.wasm (componentize-py, with msgpack)
Run:   ivm component run app.wasm World
"""
import json
import math

import msgpack  # its pure-Python fallback: a component cannot load the C extension

import wit_world
from componentize_py_types import Err, Ok
from wit_world.imports.types import (
    ContextOptions, Error_MemoryLimit, Error_Timeout, Invocation, Isolate, IsolateOptions,
    JsError, RunOptions, Step_Call, Step_Done, Transfer, Value_Bigint, Value_Msgpack,
    Value_Number, Value_Reference,
)

FACTORIAL = 1  # the id of our guest function, as `context.callback` gets it


def options(timeout_ms=1000, transfer=Transfer.AUTO):
    return RunOptions(timeout_ms=timeout_ms, cpu_limit_ms=None, promise=False, transfer=transfer)


def js_ext(code, data):
    """MessagePack ext types of ivm's mapping: 0 is `undefined`, 1 a BigInt's decimal text."""
    if code == 0:
        return None
    if code == 1:
        return int(data)
    return msgpack.ExtType(code, data)


def expect_error(kind, call):
    """The error of `kind` that `call` fails with (any other outcome is a failure of ours)."""
    try:
        call()
    except Err as failure:
        if isinstance(failure.value, kind):
            return failure.value
        raise
    raise Err(f"no {kind.__name__}")


def call_guest(call):
    """Answers a call of a guest function: `Ok(value)`, or `Err` with the exception to throw."""
    match call:
        # (`id=FACTORIAL` would bind a new name, not compare: hence the guard.)
        case Invocation(id=fn, args=[Value_Number(n)]) if fn == FACTORIAL:
            return Ok(Value_Bigint(str(math.factorial(int(n)))))
    error = JsError(name="TypeError", message=f"bad call of guest function {call.id}", stack=None)
    return Err(error)


def new_isolate(memory_limit_mb):
    options = IsolateOptions(memory_limit_mb=memory_limit_mb, inspector=False, cpu_budget_ms=None)
    return Isolate.create(options)


class WitWorld(wit_world.WitWorld):
    def run(self, args):
        # Every call that fails raises `Err(error)`; `run` fails by raising `Err(text)`.
        try:
            main(args[0] if args else "guest")
        except Err as failure:
            raise Err(f"unexpected {failure.value}")
        except Exception as failure:  # a bug of ours: left uncaught, it would trap
            raise Err(f"{type(failure).__name__}: {failure}")


def main(name):
    # Dropping (or leaving the `with` of) an isolate disposes it.
    with new_isolate(32) as isolate:
        context = isolate.create_context(ContextOptions(name=None))

        # 1. Plain eval (json.dumps quotes the name as a JavaScript string): primitives come
        # back as themselves, here a `Value_String`.
        greeting = context.eval(f"'Hello, ' + {json.dumps(name)} + '! ' + 6 * 7", options())
        print(greeting.value)

        # 2. Structured data is MessagePack both ways: a dict in as `$0`, an object copied out.
        order = {"item": "tea", "qty": 3, "price": 2.5}
        result = context.eval_closure(
            "return { item: $0.item.toUpperCase(), total: $0.qty * $0.price, big: 2n ** 64n }",
            [Value_Msgpack(msgpack.packb(order))],
            options(transfer=Transfer.COPY),
        )
        print("msgpack:", msgpack.unpackb(result.value, ext_hook=js_ext))

        # 3. A guest function. JavaScript can call it only inside a task: we drive the task
        # as the WIT describes, answering each call, until it is done.
        factorial = context.callback(FACTORIAL, "factorial")
        context.global_().set("factorial", Value_Reference(factorial))
        code = "[5, 25].map(n => `${n}! = ${factorial(n)}`).join(', ')"
        task = context.eval_task(code, options())
        step = task.resume(None, None)
        while isinstance(step, Step_Call):
            step = task.resume(call_guest(step.value), None)
        match step:
            case Step_Done(Ok(value)):
                print("task:", value.value)
            case Step_Done(Err(error)):
                raise Err(error)

        # 4. Limits are error values too. After a timeout the isolate stays usable; its text
        # is the stack that was running.
        timeout = expect_error(
            Error_Timeout, lambda: context.eval("for (;;) {}", options(timeout_ms=50)))
        print("timeout:", timeout.value.splitlines()[0])

    # Going over the memory limit disposes the isolate.
    small = new_isolate(8)
    hog = small.create_context(ContextOptions(name=None))
    expect_error(Error_MemoryLimit, lambda: hog.eval(
        "const a = []; for (;;) a.push(new Array(1e5).fill(1.5))", options()))
    print("memory-limit: disposed", small.is_disposed())
