//! [`ExternalCopy`]: values held outside every isolate (reference §1.2 `ExternalCopy`;
//! isolated-vm tests external-copy-*.js, transfer-options.js, shared-array-buffer.js).

use std::time::Duration;

use ivm::{CopyIntoOptions, Error, ExternalCopy, ExternalCopyOptions, Isolate, IsolateOptions, Reference, Value};

use crate::new_context;

#[test]
fn structured_clone_types_keep_their_types_in_another_isolate() {
    let (_a, from) = new_context();
    let (_b, to) = new_context();
    let copy: ExternalCopy = from
        .eval(
            "const shared = { n: 1 };
             const cyclic = { name: 'loop' }; cyclic.self = cyclic;
             ({
               date: new Date(86400000), re: /a+b/gi, big: 12345678901234567890n,
               map: new Map([[1, 'one'], ['k', shared]]), set: new Set([1, 'two']),
               floats: new Float64Array([1.5, -2]), view: new DataView(new ArrayBuffer(4)),
               error: new RangeError('bad', { cause: new TypeError('why') }),
               negZero: -0, nan: NaN, u32: 4294967295, i32: -2147483648,
               twice: [shared, shared], cyclic,
             })",
        )
        .unwrap();
    to.set_global("v", &copy).unwrap();
    let checks: Vec<bool> = to
        .eval(
            "[v.date instanceof Date && v.date.getTime() === 86400000,
              v.re instanceof RegExp && v.re.source === 'a+b' && v.re.flags === 'gi',
              v.big === 12345678901234567890n,
              v.map instanceof Map && v.map.get(1) === 'one' && v.map.get('k').n === 1,
              v.set instanceof Set && v.set.has('two'),
              v.floats instanceof Float64Array && v.floats[0] === 1.5 && v.floats[1] === -2,
              v.view instanceof DataView && v.view.byteLength === 4,
              v.error instanceof RangeError && v.error.message === 'bad' && v.error.cause instanceof TypeError,
              Object.is(v.negZero, -0), Number.isNaN(v.nan), v.u32 === 4294967295, v.i32 === -2147483648,
              v.twice[0] === v.twice[1], v.cyclic.self === v.cyclic]",
        )
        .unwrap();
    assert!(checks.iter().all(|ok| *ok), "{checks:?}");
    // The source is untouched by copying in elsewhere.
    assert_eq!(from.eval::<u32>("1 + 1").unwrap(), 2);
}

#[test]
fn a_copy_comes_out_into_rust_types_and_values() {
    let (_isolate, context) = new_context();
    let copy: ExternalCopy = context.eval("({ when: new Date(0), tags: new Set(['a']), by: new Map([['x', 1]]), re: /x/g })").unwrap();
    let Value::Object(map) = copy.copy::<Value>().unwrap() else { panic!() };
    assert_eq!(map["when"], Value::Date(0.0));
    assert_eq!(map["tags"], Value::Set(vec![Value::String("a".into())]));
    assert_eq!(map["by"], Value::Map(vec![(Value::String("x".into()), Value::Number(1.0))]));
    assert_eq!(map["re"], Value::RegExp { source: "x".into(), flags: "g".into() });
    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Typed {
        tags: Vec<String>,
        by: std::collections::HashMap<String, u32>,
    }
    let typed: Typed = copy.copy().unwrap();
    assert_eq!(typed.tags, ["a"]);
    assert_eq!(typed.by["x"], 1);
    // Rust data makes a copy too, usable in any isolate, any number of times.
    let from_rust = ExternalCopy::new(&serde_json::json!({ "rows": [1, 2, 3] })).unwrap();
    context.set_global("a", &from_rust).unwrap();
    context.set_global("b", &from_rust).unwrap();
    assert_eq!(context.eval::<u32>("a.rows.length + b.rows[2]").unwrap(), 6);
    assert_eq!(from_rust.copy::<serde_json::Value>().unwrap()["rows"][1], 2);
}

#[test]
fn values_that_cannot_be_cloned_say_so() {
    let (_isolate, context) = new_context();
    for (code, message) in [
        ("({ f() {} })", "f() {} could not be cloned."),
        ("Symbol('s')", "Symbol(s) could not be cloned."),
        ("Promise.resolve()", "#<Promise> could not be cloned."),
    ] {
        let err = context.eval::<ExternalCopy>(code).unwrap_err();
        assert_eq!((err.kind(), err.message()), (ivm::ErrorKind::Conversion, message), "{code}");
    }
}

#[test]
fn array_buffers_are_transferred_without_copying() {
    let (_a, from) = new_context();
    let (_b, to) = new_context();
    from.eval::<()>("globalThis.buf = new Uint8Array([1, 2, 3]).buffer; globalThis.holder = { buf }").unwrap();
    let global = from.global().unwrap();
    let buffer: Reference = global.get("buf").unwrap();
    let holder: Reference = global.get("holder").unwrap();
    let copy = holder.external_copy(&ExternalCopyOptions::default().transfer(&buffer)).unwrap();
    // The source buffer is detached: its memory moved into the copy.
    assert_eq!(from.eval::<u32>("buf.byteLength").unwrap(), 0);
    // Copied in (the default), the target gets its own bytes and the copy keeps the buffer.
    to.set_global("first", &copy).unwrap();
    // Moved in, the bytes change hands once; afterwards the copy has no buffer to give.
    to.set_global("second", copy.copy_into(CopyIntoOptions::default().transfer_in())).unwrap();
    assert_eq!(to.eval::<Vec<u8>>("[...new Uint8Array(first.buf), ...new Uint8Array(second.buf)]").unwrap(), [1, 2, 3, 1, 2, 3]);
    let err = to.set_global("third", &copy).unwrap_err();
    assert_eq!(err.message(), "Array buffer is invalid");
    // transfer_out: the value is the buffer itself.
    from.eval::<()>("globalThis.out = new Float32Array([0.5])").unwrap();
    let out: Reference = global.get("out").unwrap();
    let moved = out.external_copy(&ExternalCopyOptions::default().transfer_out()).unwrap();
    assert_eq!(from.eval::<u32>("out.length").unwrap(), 0);
    to.set_global("f", &moved).unwrap();
    assert_eq!(to.eval::<f32>("f[0]").unwrap(), 0.5);
    // Only ArrayBuffers can be listed.
    let err = holder.external_copy(&ExternalCopyOptions::default().transfer(&holder)).unwrap_err();
    assert_eq!(err.message(), "Non-ArrayBuffer passed in `transferList`");
}

#[test]
fn shared_array_buffers_are_shared_between_isolates() {
    let (a, first) = new_context();
    let (_b, second) = new_context();
    if a.is_process_isolated() {
        // Memory cannot be shared with another process: the copy says so.
        let err = first.eval::<ExternalCopy>("new SharedArrayBuffer(8)").unwrap_err();
        assert!(err.message().contains("cannot cross into or out of a worker process"), "{err}");
        return;
    }
    let copy: ExternalCopy = first.eval("globalThis.sab = new SharedArrayBuffer(8); globalThis.view = new Int32Array(sab); sab").unwrap();
    second.set_global("sab", &copy).unwrap();
    second.eval::<()>("new Int32Array(sab)[1] = 42").unwrap();
    assert_eq!(first.eval::<i32>("view[1]").unwrap(), 42, "a write in one isolate is seen in the other");
    // Atomics.wait in one isolate, on one thread, woken by Atomics.notify from the other.
    let waiter = std::thread::spawn(move || first.eval::<String>("Atomics.wait(view, 0, 0, 10000)").unwrap());
    let mut woken = 0;
    for _ in 0..500 {
        woken += second.eval::<u32>("Atomics.notify(new Int32Array(sab), 0)").unwrap();
        if woken > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(woken, 1);
    assert_eq!(waiter.join().unwrap(), "ok");
}

#[test]
fn copies_are_single_use_or_released_where_isolated_vm_says_so() {
    let (_isolate, context) = new_context();
    let copy = ExternalCopy::new(&[1, 2]).unwrap();
    let once = copy.copy_into(CopyIntoOptions::default());
    context.set_global("x", &once).unwrap();
    let err = context.set_global("y", &once).unwrap_err();
    assert_eq!(err.message(), "The return value of `copyInto()` should only be used once");
    let released_after = copy.copy_into(CopyIntoOptions::default().release());
    context.set_global("z", released_after).unwrap();
    assert_eq!(context.eval::<u32>("x[1] + z[0]").unwrap(), 3);
    let err = context.set_global("w", &copy).unwrap_err();
    assert_eq!((err.kind(), err.message()), (ivm::ErrorKind::Disposed, "Copy has been released"));
    assert!(!copy.release(), "releasing twice reports it was already released");
}

#[test]
fn the_bytes_held_are_counted_and_given_back() {
    // A process-wide total: measured away from the other tests.
    if crate::in_own_process("external_copy::the_bytes_held_are_counted_and_given_back") {
        return;
    }
    let before = ExternalCopy::total_external_size();
    let (isolate, context) = new_context();
    let copy: ExternalCopy = context.eval("'x'.repeat(1 << 20)").unwrap();
    assert!(ExternalCopy::total_external_size() >= before + (1 << 20));
    // It counts against the memory of the isolate that made it (a process-isolated isolate's
    // copies are held in this process, not its worker's).
    if !isolate.is_process_isolated() {
        assert!(isolate.heap_statistics().unwrap().externally_allocated_size >= 1 << 20);
    }
    let clone = copy.clone();
    drop(copy);
    assert!(ExternalCopy::total_external_size() >= before + (1 << 20), "a clone keeps it");
    drop(clone);
    assert_eq!(ExternalCopy::total_external_size(), before);
}

#[test]
fn copying_into_an_isolate_respects_its_memory_limit() {
    let big = ExternalCopy::new(&serde_bytes_of(32 << 20)).unwrap();
    let isolate = Isolate::new(IsolateOptions::default().memory_limit(16)).unwrap();
    let context = isolate.create_context().unwrap();
    let err = context.set_global("big", &big).unwrap_err();
    assert_eq!((err.name(), err.message()), ("RangeError", "Array buffer allocation failed"));
    // Nothing crashed; the isolate goes on.
    assert_eq!(context.eval::<u32>("1 + 1").unwrap(), 2);
    // The same holds for bytes copied in straight from Rust.
    let err = context.set_global("raw", serde_bytes_of(32 << 20)).unwrap_err();
    assert_eq!(err.message(), "Array buffer allocation failed");
}

/// `len` bytes that serialize as bytes (a `Uint8Array`), not as a list of numbers.
fn serde_bytes_of(len: usize) -> Value {
    Value::Bytes(vec![7; len])
}

#[test]
fn copy_into_another_isolate_needs_no_lock_on_the_source() {
    // The copy is independent of its creator: disposing the source changes nothing.
    let (source, context) = new_context();
    let copy: ExternalCopy = context.eval("({ ok: true })").unwrap();
    source.dispose().unwrap();
    let (_other, target) = new_context();
    target.set_global("v", &copy).unwrap();
    assert!(target.eval::<bool>("v.ok").unwrap());
    assert!(matches!(context.eval::<u32>("1"), Err(Error::Disposed { .. })));
}
