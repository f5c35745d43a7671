use ivm::{CompileOptions, Error, EvalOptions, Isolate, ScriptOrigin, Value};

use crate::new_context;

#[test]
fn a_script_runs_in_any_context_of_its_isolate() {
    let (isolate, first) = new_context();
    let second = isolate.create_context().unwrap();
    let script = isolate.compile_script("globalThis.n = (globalThis.n || 0) + 1", &CompileOptions::default()).unwrap();
    assert_eq!(script.run::<u32>(&first, &EvalOptions::default()).unwrap(), 1);
    assert_eq!(script.run::<u32>(&first, &EvalOptions::default()).unwrap(), 2);
    assert_eq!(script.run::<u32>(&second, &EvalOptions::default()).unwrap(), 1);
    assert_eq!(crate::block_on(script.run_async::<u32>(&second, EvalOptions::default())).unwrap(), 2);
}

#[test]
fn origin_offsets_show_in_stack_traces() {
    let (isolate, context) = new_context();
    let origin = ScriptOrigin::new("file:///lib.js").offsets(100, 0);
    let script = isolate.compile_script("\nfunction f() { throw new Error('x') }\nf()", &CompileOptions::origin(origin)).unwrap();
    let err = script.run::<Value>(&context, &Default::default()).unwrap_err();
    let stack = err.stack().unwrap();
    assert!(stack.contains("at f (file:///lib.js:102:"), "{stack}");
}

#[test]
fn running_in_another_isolates_context_is_an_error() {
    let (isolate, _) = new_context();
    let (_other, foreign) = new_context();
    let script = isolate.compile_script("1", &CompileOptions::default()).unwrap();
    assert_eq!(script.run::<Value>(&foreign, &Default::default()).unwrap_err(), Error::InvalidArgument("Invalid context".into()));
}

#[test]
fn a_released_script_reports_it() {
    let (isolate, context) = new_context();
    let script = isolate.compile_script("1", &CompileOptions::default()).unwrap();
    let copy = script.clone();
    assert!(script.release());
    assert_eq!(copy.run::<Value>(&context, &Default::default()).unwrap_err().message(), "Script has been released");
}

#[test]
fn compile_async_works_on_any_executor() {
    let isolate = Isolate::new(Default::default()).unwrap();
    let script = crate::block_on(isolate.compile_script_async("6 * 7", CompileOptions::default())).unwrap();
    let context = crate::block_on(isolate.create_context_async(Default::default())).unwrap();
    assert_eq!(script.run::<u8>(&context, &Default::default()).unwrap(), 42);
}
