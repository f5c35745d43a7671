//! Host functions ([`Callback`]): Rust closures called from JavaScript, and calls that nest
//! across isolates (reference §1.2 `Callback`, §1.7, §1.8).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use ivm::{Callback, Error, EvalOptions, Isolate, Value};

use crate::new_context;

fn promise() -> EvalOptions {
    EvalOptions::default().promise()
}

#[test]
fn a_sync_callback_takes_and_returns_serde_values() {
    let (_isolate, context) = new_context();
    context.set_global("add", Callback::new(|(a, b): (f64, f64)| Ok(a + b)).name("add")).unwrap();
    assert_eq!(context.eval::<f64>("add(1, 2.5)").unwrap(), 3.5);
    assert_eq!(context.eval::<String>("add.name").unwrap(), "add");
    // Missing arguments are undefined, extra ones are ignored.
    context.set_global("greet", Callback::new(|(name, _): (String, Option<u32>)| Ok(format!("hi {name}")))).unwrap();
    assert_eq!(context.eval::<String>("greet('ann', 1, 2, 3)").unwrap(), "hi ann");
    // `new` on a host function throws; `this` is not passed.
    let err = context.eval::<Value>("new add(1, 2)").unwrap_err();
    assert_eq!(err.name(), "TypeError");
}

#[test]
fn callback_errors_are_thrown_in_javascript_with_their_class() {
    let (_isolate, context) = new_context();
    context.set_global("fail", Callback::new(|(): ()| -> ivm::Result<()> { Err(Error::js("RangeError", "too far")) })).unwrap();
    let caught: String = context.eval("try { fail() } catch (e) { `${e instanceof RangeError} ${e.message}` }").unwrap();
    assert_eq!(caught, "true too far");
    // Wrong argument types are a TypeError in JavaScript, not a panic.
    context.set_global("square", Callback::new(|(n,): (u32,)| Ok(n * n))).unwrap();
    assert_eq!(context.eval::<Value>("square('x')").unwrap_err().name(), "TypeError");
    // A panicking closure becomes an exception; the isolate goes on.
    context.set_global("boom", Callback::new(|(): ()| -> ivm::Result<()> { panic!("boom") })).unwrap();
    let err = context.eval::<Value>("boom()").unwrap_err();
    assert_eq!(err.message(), "A host function panicked");
    assert_eq!(context.eval::<u32>("square(7)").unwrap(), 49);
}

#[test]
fn an_async_callback_gives_javascript_a_promise() {
    let (_isolate, context) = new_context();
    context
        .set_global(
            "later",
            Callback::new_async(|(n,): (u32,)| async move {
                let (tx, rx) = futures_channel();
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(10));
                    tx.send(n * 2).unwrap();
                });
                Ok(rx.await)
            }),
        )
        .unwrap();
    assert!(context.eval::<bool>("later(1) instanceof Promise").unwrap());
    let n: u32 = context.eval_with("(async () => (await later(20)) + (await later(1)))()", &promise()).unwrap();
    assert_eq!(n, 42);
    context.set_global("reject", Callback::new_async(|(): ()| async { Err::<(), _>(Error::js("TypeError", "no")) })).unwrap();
    let caught: String = context.eval_with("reject().catch(e => e.name + ': ' + e.message)", &promise()).unwrap();
    assert_eq!(caught, "TypeError: no");
    // Also through the async API and without anyone waiting: the promise settles later.
    let n: u32 = crate::block_on(context.eval_async("later(4)", promise())).unwrap();
    assert_eq!(n, 8);
    context.eval::<Value>("later(5).then(v => globalThis.settled = v)").unwrap();
    let mut settled = Value::Undefined;
    for _ in 0..200 {
        settled = context.eval("globalThis.settled").unwrap();
        if settled != Value::Undefined {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(settled, Value::Number(10.0));
}

#[test]
fn an_ignored_callback_returns_at_once_and_runs_later() {
    let (_isolate, context) = new_context();
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    context.set_global("notify", Callback::new_ignored(move |(s,): (String,)| tx.lock().unwrap().send(s).unwrap())).unwrap();
    assert_eq!(context.eval::<Value>("notify('done')").unwrap(), Value::Undefined);
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), "done");
}

#[test]
fn a_blocking_callback_waits_for_its_future_within_the_timeout() {
    // isolated-vm's applySyncPromise: JavaScript calls an async host function synchronously.
    let (_isolate, context) = new_context();
    context
        .set_global(
            "fetch",
            Callback::new_blocking(|(n,): (u32,)| async move {
                let (tx, rx) = futures_channel();
                std::thread::spawn(move || tx.send(n + 1).unwrap());
                Ok(rx.await)
            }),
        )
        .unwrap();
    assert_eq!(context.eval::<u32>("fetch(1) + fetch(2)").unwrap(), 5);
    context.set_global("never", Callback::new_blocking(|(): ()| std::future::pending::<ivm::Result<()>>())).unwrap();
    let options = EvalOptions::default().timeout(Duration::from_millis(50));
    let err = context.eval_with::<Value>("never()", &options).unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert_eq!(context.eval::<u32>("fetch(40) + 1").unwrap(), 42);
}

#[test]
fn a_callback_can_call_its_own_isolate_again() {
    // isolated-vm: tests/recursive-sync.js, tests/sync-allowed-in-same-isolate.js
    let (isolate, context) = new_context();
    let inner = context.clone();
    context
        .set_global(
            "evalAgain",
            Callback::new(move |(code,): (String,)| inner.eval::<Value>(&code)),
        )
        .unwrap();
    context.eval::<Value>("globalThis.depth = 0").unwrap();
    let depth: u32 = context.eval("evalAgain('depth += 1; evalAgain(\"depth += 1; depth\")')").unwrap();
    assert_eq!(depth, 2);
    isolate.dispose().unwrap();
}

/// Two isolates, each with a function that evaluates code in the other.
fn linked_pair() -> (Isolate, ivm::Context, Isolate, ivm::Context) {
    let (a, ctx_a) = new_context();
    let (b, ctx_b) = new_context();
    let (to_a, to_b) = (ctx_a.clone(), ctx_b.clone());
    ctx_a.set_global("inB", Callback::new(move |(code,): (String,)| to_b.eval::<Value>(&code))).unwrap();
    ctx_b.set_global("inA", Callback::new(move |(code,): (String,)| to_a.eval::<Value>(&code))).unwrap();
    ctx_a.eval::<Value>("globalThis.name = 'A'").unwrap();
    ctx_b.eval::<Value>("globalThis.name = 'B'").unwrap();
    (a, ctx_a, b, ctx_b)
}

#[test]
fn calls_nest_from_isolate_a_to_b_and_back_to_a() {
    let (a, ctx_a, b, _ctx_b) = linked_pair();
    let path: String = ctx_a.eval("name + inB('name + inA(\"name + inB(`name`)\")')").unwrap();
    assert_eq!(path, "ABAB");
    a.dispose().unwrap();
    b.dispose().unwrap();
}

#[test]
fn two_isolates_calling_each_other_from_two_threads_do_not_deadlock() {
    // isolated-vm #321 (callbacks hanging under concurrency), as a short soak.
    let (a, ctx_a, b, ctx_b) = linked_pair();
    let calls = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = [(ctx_a.clone(), "inB('inA(`1`)')"), (ctx_b.clone(), "inA('inB(`1`)')")]
        .into_iter()
        .map(|(context, code)| {
            let calls = calls.clone();
            std::thread::spawn(move || {
                for _ in 0..300 {
                    assert_eq!(context.eval::<u32>(code).unwrap(), 1);
                    calls.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(calls.load(Ordering::SeqCst), 600);
    a.dispose().unwrap();
    b.dispose().unwrap();
}

#[test]
fn an_async_operation_may_wait_for_another_of_its_isolate() {
    // An async operation blocked in a host function that waits for another async operation
    // of the same isolate: the isolate is free while the first waits, so the second runs.
    let (isolate, context) = new_context();
    let inner = context.clone();
    context
        .set_global(
            "waitForSelf",
            Callback::new_blocking(move |(): ()| inner.eval_async::<u32>("1 + 1", EvalOptions::default())),
        )
        .unwrap();
    assert_eq!(crate::block_on(context.eval_async::<u32>("waitForSelf() + 1", EvalOptions::default())).unwrap(), 3);
    assert_eq!(context.eval::<u32>("waitForSelf()").unwrap(), 2);
    isolate.dispose().unwrap();
}

#[test]
fn errors_crossing_isolates_keep_class_stack_and_cause() {
    // isolated-vm: tests/exception-info.js, plus what it loses (cause, AggregateError.errors).
    let (a, ctx_a, b, _ctx_b) = linked_pair();
    let seen: Value = ctx_a
        .eval_with(
            "try { inB('function deep() { throw new RangeError(\"bad\", { cause: new TypeError(\"why\") }) } deep()') }
             catch (e) { ({ range: e instanceof RangeError, message: e.message, cause: e.cause && e.cause.message,
                           causeType: e.cause instanceof TypeError, stack: e.stack }) }",
            &EvalOptions::default().copy(),
        )
        .unwrap();
    let Value::Object(seen) = seen else { panic!("{seen:?}") };
    assert_eq!(seen["range"], Value::Bool(true));
    assert_eq!(seen["message"], Value::String("bad".into()));
    assert_eq!(seen["cause"], Value::String("why".into()));
    assert_eq!(seen["causeType"], Value::Bool(true));
    let Value::String(stack) = &seen["stack"] else { panic!() };
    let lines: Vec<&str> = stack.lines().collect();
    assert_eq!(lines[0], "RangeError: bad");
    assert!(lines[1].contains("deep"), "{stack}");
    assert!(lines.contains(&"    at (<isolated-vm boundary>)"), "{stack}");
    assert!(lines[1..].iter().all(|l| l.starts_with("    at ")), "{stack}");
    // Out to Rust: custom names, causes and AggregateError's list survive.
    let err = ctx_a
        .eval::<Value>("class Hello extends Error { name = 'Hello' }; throw new AggregateError([new Hello('one'), 2], 'many', { cause: 'root' })")
        .unwrap_err();
    let e = err.as_exception().unwrap();
    assert_eq!((e.name.as_str(), e.message.as_str()), ("AggregateError", "many"));
    assert_eq!(e.errors[0].name, "Hello");
    assert_eq!(e.errors[1].message, "2");
    assert_eq!(e.cause.as_ref().unwrap().message, "root");
    // A thrown non-Error object gets isolated-vm's message.
    let err = ctx_a.eval::<Value>("throw { plain: true }").unwrap_err();
    assert_eq!(
        err.message(),
        "An object was thrown from supplied code within isolated-vm, but that object was not an instance of `Error`."
    );
    a.dispose().unwrap();
    b.dispose().unwrap();
}

/// A one-shot channel whose receiver is a future (the tests need no async runtime).
fn futures_channel<T: Send + 'static>() -> (mpsc::Sender<T>, impl std::future::Future<Output = T>) {
    let (tx, rx) = mpsc::channel::<T>();
    let rx = std::sync::Mutex::new(rx);
    let future = std::future::poll_fn(move |cx| match rx.lock().unwrap().try_recv() {
        Ok(v) => std::task::Poll::Ready(v),
        Err(_) => {
            // Poll again shortly: the sender has no waker to call.
            let waker = cx.waker().clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(1));
                waker.wake();
            });
            std::task::Poll::Pending
        }
    });
    (tx, future)
}
