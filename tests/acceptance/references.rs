//! [`Reference`]: values that stay in their isolate, reached from outside under
//! isolated-vm's safety rules (reference §1.2 `Reference`, §1.4).

use std::time::Duration;

use ivm::{Callback, Error, EvalOptions, Reference, Value};

use crate::new_context;

#[test]
fn a_reference_reads_writes_and_deletes_own_properties() {
    let (_isolate, context) = new_context();
    let global = context.global().unwrap();
    assert_eq!(global.type_of(), "object");
    global.set("config", serde_json::json!({ "depth": 3 })).unwrap();
    assert_eq!(context.eval::<u32>("config.depth").unwrap(), 3);
    assert_eq!(global.get::<serde_json::Value>("config").unwrap(), serde_json::json!({ "depth": 3 }));
    // Inherited properties are not visible unless asked for.
    context.eval::<Value>("globalThis.child = Object.create({ inherited: 1 }); child.own = 2").unwrap();
    let child = global.get::<Reference>("child").unwrap();
    assert_eq!(child.get::<Value>("inherited").unwrap(), Value::Undefined);
    assert_eq!(child.get::<u32>("own").unwrap(), 2);
    assert_eq!(child.clone().inherit().get::<u32>("inherited").unwrap(), 1);
    // Indexes, delete, and a property that cannot be deleted.
    context.eval::<Value>("globalThis.list = [10, 20]").unwrap();
    assert_eq!(global.get::<Reference>("list").unwrap().get::<u32>(1u32).unwrap(), 20);
    child.delete("own").unwrap();
    assert!(!context.eval::<bool>("'own' in child").unwrap());
    context.eval::<Value>("Object.defineProperty(child, 'fixed', { value: 1 })").unwrap();
    assert_eq!(child.delete("fixed").unwrap_err().message(), "Delete failed");
}

#[test]
fn getters_and_setters_do_not_run_unless_asked_for() {
    let (_isolate, context) = new_context();
    context
        .eval::<Value>("globalThis.ran = []; globalThis.o = { get g() { ran.push('get'); return 1 }, set s(v) { ran.push('set') } }")
        .unwrap();
    let o = context.global().unwrap().get::<Reference>("o").unwrap();
    let err = o.get::<Value>("g").unwrap_err();
    assert_eq!((err.name(), err.message()), ("TypeError", "Property is getter"));
    assert_eq!(o.clone().accessors().get::<u32>("g").unwrap(), 1);
    // `set` defines a data property: the setter is replaced, not called.
    o.set("s", 5).unwrap();
    assert_eq!(context.eval::<Vec<String>>("ran").unwrap(), ["get"]);
    assert_eq!(context.eval::<u32>("o.s").unwrap(), 5);
    context.eval::<Value>("Object.defineProperty(o, 'locked', { get() { return 1 } })").unwrap();
    assert_eq!(o.set("locked", 2).unwrap_err().message(), "Set failed");
}

#[test]
fn proxies_and_functions_are_refused_where_isolated_vm_refuses_them() {
    let (_isolate, context) = new_context();
    context
        .eval::<Value>("globalThis.p = new Proxy({}, {}); globalThis.behind = Object.create(p); globalThis.f = () => 1")
        .unwrap();
    let global = context.global().unwrap();
    for name in ["p", "behind"] {
        let err = global.get::<Reference>(name).unwrap().get::<Value>("x").unwrap_err();
        assert_eq!(err.message(), "Object is or has proxy", "{name}");
    }
    let f = global.get::<Reference>("f").unwrap();
    assert_eq!(f.type_of(), "function");
    assert_eq!(f.get::<Value>("name").unwrap_err().message(), "Reference is not an object");
    assert_eq!(global.apply::<Value>((), (), &Default::default()).unwrap_err().message(), "Reference is not a function");
}

#[test]
fn apply_calls_a_function_with_copied_arguments_and_limits() {
    let (_isolate, context) = new_context();
    context.eval::<Value>("globalThis.add = (a, b) => a + b; globalThis.spin = () => { for (;;) {} }").unwrap();
    let global = context.global().unwrap();
    let add = global.get::<Reference>("add").unwrap();
    assert_eq!(add.apply::<u32>((), (2, 3), &Default::default()).unwrap(), 5);
    assert_eq!(crate::block_on(add.apply_async::<String>((), ("a", "b"), Default::default())).unwrap(), "ab");
    // A host function as an argument, and a reference of the same isolate passed as itself.
    context.eval::<Value>("globalThis.callWith = (f, x) => f(x)").unwrap();
    let call_with = global.get::<Reference>("callWith").unwrap();
    let doubled: u32 = call_with.apply((), (Callback::new(|(n,): (u32,)| Ok(n * 2)), 21), &Default::default()).unwrap();
    assert_eq!(doubled, 42);
    let same: bool = context.eval::<Value>("globalThis.same = (a, b) => a === b").and_then(|_| {
        global.get::<Reference>("same").unwrap().apply((), (&global, &global), &Default::default())
    }).unwrap();
    assert!(same);
    // Timeouts hold; objects can come back as references.
    let spin = global.get::<Reference>("spin").unwrap();
    let err = spin.apply::<Value>((), (), &EvalOptions::default().timeout(Duration::from_millis(20))).unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }));
    context.eval::<Value>("globalThis.make = () => ({ n: 7 })").unwrap();
    let made = global.get::<Reference>("make").unwrap().apply::<Reference>((), (), &Default::default()).unwrap();
    assert_eq!(made.get::<u32>("n").unwrap(), 7);
    assert_eq!(made.copy::<serde_json::Value>().unwrap(), serde_json::json!({ "n": 7 }));
}

#[test]
fn a_reference_cannot_enter_another_isolate_and_a_released_one_says_so() {
    let (_a, ctx_a) = new_context();
    let (_b, ctx_b) = new_context();
    let global_a = ctx_a.global().unwrap();
    let err = ctx_b.global().unwrap().set("leak", &global_a).unwrap_err();
    assert_eq!(err.message(), "Cannot dereference this into target isolate");
    assert!(global_a.release());
    assert!(!global_a.release());
    let err = global_a.get::<Value>("x").unwrap_err();
    assert!(matches!(&err, Error::Disposed { message } if message == "Reference has been released"), "{err:?}");
}

#[test]
fn every_reference_operation_has_an_async_form() {
    let (_isolate, context) = new_context();
    let global = crate::block_on(context.global_async()).unwrap();
    crate::block_on(global.set_async("box", serde_json::json!({ "n": 1 }))).unwrap();
    let boxed: Reference = crate::block_on(global.get_async("box")).unwrap();
    let copy = crate::block_on(boxed.external_copy_async(Default::default())).unwrap();
    assert_eq!(copy.copy::<serde_json::Value>().unwrap()["n"], 1);
    assert_eq!(crate::block_on(boxed.copy_async::<serde_json::Value>()).unwrap()["n"], 1);
    crate::block_on(global.delete_async("box")).unwrap();
    assert!(context.eval::<bool>("typeof box === 'undefined'").unwrap());
    // A released reference fails the same way in either form.
    boxed.release();
    let err = crate::block_on(boxed.external_copy_async(Default::default())).unwrap_err();
    assert_eq!(err.message(), "Reference has been released");
}
