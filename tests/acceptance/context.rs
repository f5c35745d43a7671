use std::time::Duration;

use ivm::{ConsoleLevel, ContextOptions, Error, EvalOptions, ScriptOrigin, Value};

use crate::new_context;

#[test]
fn eval_returns_primitives_and_follows_isolated_vm_for_objects() {
    let (_isolate, context) = new_context();
    assert_eq!(context.eval::<Value>("1 + 1").unwrap(), Value::Number(2.0));
    assert_eq!(context.eval::<Value>("'a' + 'b'").unwrap(), Value::String("ab".into()));
    assert_eq!(context.eval::<Value>("undefined").unwrap(), Value::Undefined);
    assert_eq!(context.eval::<Value>("null").unwrap(), Value::Null);
    assert_eq!(context.eval::<Value>("2n ** 70n").unwrap().to_string(), "1180591620717411303424");
    // Reference §1.4: `eval` transfers plain objects as `undefined` unless asked to copy...
    assert_eq!(context.eval::<Value>("({ a: 1 })").unwrap(), Value::Undefined);
    let copied: Value = context.eval_with("({ a: 1 })", &EvalOptions::default().copy()).unwrap();
    assert_eq!(copied.to_json(), serde_json::json!({ "a": 1 }));
    // ...and asking for a concrete type is asking for a copy.
    let map: std::collections::HashMap<String, u8> = context.eval("({ a: 1 })").unwrap();
    assert_eq!(map["a"], 1);
}

#[test]
fn eval_closure_takes_dollar_arguments_and_returns() {
    let (_isolate, context) = new_context();
    let n: i32 = context.eval_closure("return $0 * $1", (6, 7), &Default::default()).unwrap();
    assert_eq!(n, 42);
    let this_is_global: bool = context.eval_closure("return this === globalThis", (), &Default::default()).unwrap();
    assert!(this_is_global);
    let joined: String = context
        .eval_closure("return $0.names.join('+')", (serde_json::json!({ "names": ["a", "b"] }),), &Default::default())
        .unwrap();
    assert_eq!(joined, "a+b");
    // Reference §1.4: a non-transferable result of evalClosure throws.
    let err = context.eval_closure::<Value>("return {}", (), &Default::default()).unwrap_err();
    assert_eq!(err.message(), "A non-transferable value was passed");
    let async_sum: f64 = crate::block_on(context.eval_closure_async("return $0 + 1", (1.5,), Default::default())).unwrap();
    assert_eq!(async_sum, 2.5);
}

#[test]
fn exceptions_keep_class_message_stack_and_location() {
    let (_isolate, context) = new_context();
    let options = EvalOptions::default().filename("file:///job.js");
    let err = context.eval_with::<Value>("\n  null.x", &options).unwrap_err();
    let e = err.as_exception().expect("an exception");
    assert_eq!(e.name, "TypeError");
    assert!(e.message.contains("Cannot read properties of null"), "{}", e.message);
    assert!(e.stack.as_deref().unwrap().contains("file:///job.js:2:"), "{:?}", e.stack);
    assert_eq!(e.location.as_ref().unwrap().line, 2);

    // A custom `name` survives (isolated-vm: tests/exception-info.js).
    let err = context.eval::<Value>("class Hello extends Error { name = 'Hello' }; throw new Hello('hi')").unwrap_err();
    assert_eq!((err.name(), err.message()), ("Hello", "hi"));
    for class in ["Error", "RangeError", "ReferenceError", "SyntaxError", "TypeError"] {
        let err = context.eval::<Value>(&format!("throw new {class}('m')")).unwrap_err();
        assert_eq!((err.name(), err.message()), (class, "m"));
    }
    // Thrown non-Errors get isolated-vm's message; thrown primitives keep their text.
    let err = context.eval::<Value>("throw { message: 'no' }").unwrap_err();
    assert_eq!(
        err.message(),
        "An object was thrown from supplied code within isolated-vm, but that object was not an instance of `Error`."
    );
    assert_eq!(context.eval::<Value>("throw 42").unwrap_err().message(), "42");
}

#[test]
fn syntax_errors_carry_isolated_vm_location_suffix() {
    let (isolate, context) = new_context();
    let err = context.eval::<Value>("1 +* 2").unwrap_err();
    assert_eq!(err.name(), "SyntaxError");
    assert_eq!(err.message(), "Unexpected token '*' [<isolated-vm>:1:4]");
    let options = ivm::CompileOptions::origin(ScriptOrigin::new("file:///a.js").offsets(10, 0));
    let err = isolate.compile_script("let = = 1", &options).unwrap_err();
    assert_eq!(err.message(), "Unexpected token '=' [file:///a.js:11:7]");
}

#[test]
fn promises_are_awaited_on_request_and_the_timeout_covers_them() {
    let (_isolate, context) = new_context();
    let v: u32 = context.eval_with("Promise.resolve(41).then(x => x + 1)", &EvalOptions::default().promise()).unwrap();
    assert_eq!(v, 42);
    let err = context.eval_with::<Value>("Promise.reject(new RangeError('nope'))", &EvalOptions::default().promise()).unwrap_err();
    assert_eq!((err.name(), err.message()), ("RangeError", "nope"));
    // A promise nothing can settle is reported instead of hanging.
    let err = context.eval_with::<Value>("new Promise(() => {})", &EvalOptions::default().promise()).unwrap_err();
    assert_eq!(err, Error::Abandoned);
    // Microtasks the script queues run inside the timeout (isolated-vm leaves them out).
    let options = EvalOptions::default().timeout(Duration::from_millis(50));
    let err = context.eval_with::<Value>("Promise.resolve().then(() => { for (;;) {} }); 1", &options).unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    let err = context
        .eval_with::<Value>("(async () => { await null; for (;;) {} })()", &options.clone().promise())
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert_eq!(context.eval::<i32>("7").unwrap(), 7, "the isolate stays usable");
}

#[test]
fn globals_are_set_and_read_as_copies() {
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Config {
        name: String,
        retries: u32,
        tags: Vec<String>,
    }
    let (_isolate, context) = new_context();
    let config = Config { name: "job".into(), retries: 3, tags: vec!["a".into()] };
    context.set_global("config", &config).unwrap();
    assert_eq!(context.eval::<String>("config.name + config.retries + config.tags[0]").unwrap(), "job3a");
    let back: Config = context.get_global("config").unwrap();
    assert_eq!(back, config);
    // set defines a data property: an existing setter does not run.
    context.eval::<Value>("Object.defineProperty(globalThis, 'trap', { set(v) { throw 1 }, configurable: true })").unwrap();
    context.set_global("trap", 5).unwrap();
    assert_eq!(context.eval::<i32>("trap").unwrap(), 5);
    // The async forms, queued in order: the copy is made when `set_global_async` is called.
    let set = context.set_global_async("later", &config);
    let read = context.get_global_async::<Config>("later");
    crate::block_on(set).unwrap();
    assert_eq!(crate::block_on(read).unwrap(), config);
    let err = crate::block_on(context.get_global_async::<u32>("later")).unwrap_err();
    assert_eq!(err.kind(), ivm::ErrorKind::Conversion);
}

#[test]
fn a_context_has_no_host_capabilities() {
    let (_isolate, context) = new_context();
    let kinds: String = context
        .eval("[typeof require, typeof process, typeof fetch, typeof setTimeout, typeof Deno].join()")
        .unwrap();
    assert_eq!(kinds, "undefined,undefined,undefined,undefined,undefined");
}

#[test]
fn console_output_goes_to_the_sink() {
    let (isolate, _) = new_context();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = lines.clone();
    let context = isolate
        .create_context_with(ContextOptions::default().console(move |level, text| {
            sink.lock().unwrap().push((level, text.to_owned()));
        }))
        .unwrap();
    context.eval::<Value>("console.log('a', 1, { b: [2, 'c'] }); console.error(new Error('x').message); console.warn(1n)").unwrap();
    let lines = lines.lock().unwrap();
    assert_eq!(
        *lines,
        vec![
            (ConsoleLevel::Log, "a 1 { b: [ 2, 'c' ] }".to_owned()),
            (ConsoleLevel::Error, "x".to_owned()),
            (ConsoleLevel::Warn, "1n".to_owned()),
        ]
    );
}

#[test]
fn a_released_context_reports_it() {
    // isolated-vm: tests/context-release.js
    let (_isolate, context) = new_context();
    let copy = context.clone();
    assert!(context.release());
    assert!(!context.release());
    assert_eq!(copy.eval::<Value>("1").unwrap_err(), Error::Disposed { message: "Context is released".into() });
}

#[test]
fn many_contexts_created_and_released_stay_within_a_small_limit() {
    // isolated-vm: tests/context-leak.js — 500 create+release cycles in a 32 MB isolate.
    let isolate = ivm::Isolate::new(ivm::IsolateOptions::default().memory_limit(32)).unwrap();
    for _ in 0..500 {
        let context = isolate.create_context().unwrap();
        context.eval::<Value>("globalThis.x = [1, 2, 3]").unwrap();
        context.release();
    }
    assert!(!isolate.is_disposed());
}
