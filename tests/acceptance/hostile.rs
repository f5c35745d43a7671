//! Hostile data, not only hostile code: whatever the host does with what a script made
//! (describing its error, copying its result out, printing its BigInt, running its getters) is
//! bounded by the isolate's memory limit and by a deadline. A 16 MB isolate never costs the
//! host gigabytes.

use std::time::{Duration, Instant};

use ivm::{Error, EvalOptions, Isolate, IsolateOptions, Reference, Value};

fn small() -> ivm::Context {
    Isolate::new(IsolateOptions::default().memory_limit(16)).unwrap().create_context().unwrap()
}

#[test]
fn error_descriptions_are_bounded_and_say_what_they_left_out() {
    let context = small();
    // A 64 KB message, a cause that is itself, and a hundred more references to itself: before,
    // describing it followed 100^8 nodes and took the host down.
    let started = Instant::now();
    let err = context
        .eval::<()>("const e = new Error('x'.repeat(1 << 16)); e.cause = e; e.errors = Array(100).fill(e); throw e")
        .unwrap_err();
    let Error::Exception(e) = &err else { panic!("{err:?}") };
    assert_eq!(e.message.len(), 1 << 16);
    assert!(e.cause.is_none() && e.errors.is_empty(), "the cycle is cut");
    assert_eq!(e.omitted, 101, "the cause and the hundred entries are counted");
    // Nested AggregateErrors: at most 64 errors are described, the rest counted.
    let err = context
        .eval::<()>("{ let e = new Error('leaf'); for (let i = 0; i < 6; i++) e = new AggregateError(Array.from({ length: 10 }, () => new AggregateError([e], 'level ' + i)), 'top'); throw e }")
        .unwrap_err();
    let Error::Exception(e) = &err else { panic!("{err:?}") };
    fn count(e: &ivm::JsError) -> (usize, usize) {
        e.errors.iter().chain(e.cause.as_deref()).map(count).fold((1, e.omitted), |(n, o), (m, p)| (n + m, o + p))
    }
    let (described, omitted) = count(e);
    assert!(described <= 64 && omitted > 0, "{described} described, {omitted} omitted");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    // An error shared by two causes is described once.
    let err = context.eval::<()>("{ const shared = new TypeError('shared'); throw new AggregateError([shared, shared], 'two') }").unwrap_err();
    let Error::Exception(e) = &err else { panic!("{err:?}") };
    assert_eq!((e.errors.len(), e.omitted), (1, 1));
}

#[test]
fn copies_out_stay_within_twice_the_memory_limit() {
    // The host's memory is measured: away from the other tests.
    if crate::in_own_process("hostile::copies_out_stay_within_twice_the_memory_limit") {
        return;
    }
    let context = small();
    let before = crate::rss();
    // An object held 500 times: 500 MB as a tree, 1 MB in the isolate.
    let err = context
        .eval_with::<Value>("const o = { s: 'x'.repeat(1 << 20) }; const a = []; for (let i = 0; i < 500; i++) a.push(o); a", &EvalOptions::default().copy())
        .unwrap_err();
    assert!(matches!(&err, Error::Conversion(m) if m.contains("too large")), "{err:?}");
    // A string held 2,000 times: V8's serializer writes it each time (2 GB); with ivm's
    // allocator (installed in this binary, as in `ivm`) its buffer is held to the budget too.
    let err = context.eval::<Vec<String>>("const s = 'x'.repeat(1 << 20); Array(2000).fill(s)").unwrap_err();
    assert!(matches!(&err, Error::Conversion(m) if m.contains("too large")), "{err:?}");
    let grew = crate::rss().saturating_sub(before);
    assert!(grew < 256 << 20, "the host grew by {} MB", grew >> 20);
    // What fits is copied: an 8 MB string out of the 16 MB isolate.
    assert_eq!(context.eval::<String>("'y'.repeat(8 << 20)").unwrap().len(), 8 << 20);
    // Through every door: a reference's copy, an external copy.
    context.eval::<()>("globalThis.big = Array(2000).fill('x'.repeat(1 << 20))").unwrap();
    let big = context.global().unwrap().get::<Reference>("big").unwrap();
    assert!(matches!(big.copy::<Value>(), Err(Error::Conversion(_))));
    assert!(matches!(big.external_copy(&Default::default()), Err(Error::Conversion(_))));
}

#[test]
fn bigints_become_text_in_bounded_time() {
    let context = small();
    let started = Instant::now();
    let Value::BigInt(big) = context.eval::<Value>("1n << 10000000n").unwrap() else { panic!() };
    // Past 2^18 bits decimal would take minutes: hex, which JavaScript reads back.
    let text = big.to_string();
    assert!(text.starts_with("0x1000") && text.len() == 2 + 10_000_000 / 4 + 1, "{}", &text[..20]);
    assert_eq!(text.parse::<ivm::BigInt>().unwrap(), big);
    assert!(context.eval_closure::<bool>("return $0 === 1n << 10000000n", (Value::BigInt(big),), &Default::default()).unwrap());
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    // Smaller ones stay decimal.
    assert_eq!(context.eval::<Value>("2n ** 100n").unwrap().to_string(), "1267650600228229401496703205376");
    assert!("1".repeat(100_000).parse::<ivm::BigInt>().is_err(), "decimal text past the bound is refused");
}

#[test]
fn reads_run_getters_and_traps_under_the_default_timeout() {
    let isolate = Isolate::new(IsolateOptions::default().memory_limit(16).default_timeout(Some(Duration::from_millis(100)))).unwrap();
    let context = isolate.create_context().unwrap();
    context
        .eval::<()>(
            "Object.defineProperty(globalThis, 'spin', { get() { for (;;) {} } });
             globalThis.nested = { a: { get b() { for (;;) {} } } };",
        )
        .unwrap();
    assert!(matches!(context.get_global::<Value>("spin"), Err(Error::Timeout { .. })));
    // A reference that runs getters (isolated-vm's `accessors`); proxies it refuses outright.
    let global = context.global().unwrap().accessors();
    assert!(matches!(global.get::<Value>("spin"), Err(Error::Timeout { .. })));
    let nested = context.global().unwrap().get::<Reference>("nested").unwrap();
    assert!(matches!(nested.copy::<Value>(), Err(Error::Timeout { .. })));
    assert!(matches!(nested.external_copy(&Default::default()), Err(Error::Timeout { .. })));
    // And the isolate goes on.
    assert_eq!(context.eval::<u32>("1 + 1").unwrap(), 2);
}

#[test]
fn setting_a_global_javascript_made_non_configurable_fails() {
    let context = small();
    context.eval::<()>("Object.defineProperty(globalThis, 'fixed', { value: 1, configurable: false, writable: false })").unwrap();
    let err = context.set_global("fixed", 2).unwrap_err();
    assert_eq!((err.name(), err.message()), ("TypeError", "Set failed"));
    assert_eq!(context.get_global::<u32>("fixed").unwrap(), 1);
}

#[test]
fn a_copy_nested_deeper_than_v8_serializes_is_a_range_error() {
    // V8's serializer gives up with a RangeError whose message has no column (-1): describing
    // it once overflowed (a panic in a debug build; in a worker, the worker's end).
    let (_isolate, context) = crate::new_context();
    let deep = "let w = 1; for (let i = 0; i < 5000; i++) w = [w]; w";
    match context.eval_with::<ivm::Value>(deep, &ivm::EvalOptions::default().transfer(ivm::Transfer::Copy)) {
        Err(ivm::Error::Exception(e)) => assert_eq!((e.name.as_str(), e.message.as_str()), ("RangeError", "Maximum call stack size exceeded")),
        other => panic!("{other:?}"),
    }
    assert_eq!(context.eval::<i32>("1 + 1").unwrap(), 2);
}
