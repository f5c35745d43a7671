//! What crosses the boundary and by which rule: isolated-vm's default transfer rules per
//! operation (reference §1.4), the `Transfer` options, single-use transfers, and unhandled
//! rejections (isolated-vm tests transfer-options.js, reference-deref*.js, promise-error.js).

use std::sync::{Arc, Mutex};

use ivm::{EvalOptions, ExternalCopy, FromJs, IntoJs, Isolate, IsolateOptions, Reference, Transfer, Transferable, Transferred, Value};

use crate::new_context;

fn transfer(t: Transfer) -> EvalOptions {
    EvalOptions::default().transfer(t)
}

#[test]
fn each_operation_follows_isolated_vms_default_rule_for_objects() {
    let (_isolate, context) = new_context();
    context.eval::<()>("globalThis.obj = { a: 1 }; globalThis.make = () => ({ b: 2 })").unwrap();
    // eval and Script::run: primitives as they are, objects undefined, functions references.
    assert!(matches!(context.eval::<Transferred>("7").unwrap(), Transferred::Value(Value::Number(n)) if n == 7.0));
    assert!(matches!(context.eval::<Transferred>("obj").unwrap(), Transferred::Value(Value::Undefined)));
    assert!(matches!(context.eval::<Transferred>("make").unwrap(), Transferred::Reference(r) if r.type_of() == "function"));
    // eval_closure: an object result is an error.
    let err = context.eval_closure::<Transferred>("return obj", (), &EvalOptions::default()).unwrap_err();
    assert_eq!(err.message(), "A non-transferable value was passed");
    // Reference::get and apply: objects come back as references.
    let global = context.global().unwrap();
    let Transferred::Reference(obj) = global.get::<Transferred>("obj").unwrap() else { panic!("get gives a reference") };
    assert_eq!(obj.get::<u32>("a").unwrap(), 1);
    let make: Reference = global.get("make").unwrap();
    let Transferred::Reference(made) = make.apply::<Transferred>((), (), &EvalOptions::default()).unwrap() else { panic!() };
    assert_eq!(made.get::<u32>("b").unwrap(), 2);
    // Asked for as a typed value, it is always a copy.
    assert_eq!(context.eval::<serde_json::Value>("obj").unwrap()["a"], 1);
}

#[test]
fn transfer_options_choose_copy_external_copy_or_reference() {
    let (_isolate, context) = new_context();
    let copied = context.eval_with::<Transferred>("({ a: [1] })", &transfer(Transfer::Copy)).unwrap();
    assert!(matches!(copied, Transferred::Value(Value::Object(_))));
    let Transferred::ExternalCopy(copy) = context.eval_with::<Transferred>("({ a: [1] })", &transfer(Transfer::ExternalCopy)).unwrap() else {
        panic!()
    };
    assert_eq!(copy.copy::<serde_json::Value>().unwrap()["a"][0], 1);
    let Transferred::Reference(reference) = context.eval_with::<Transferred>("({ a: [1] })", &transfer(Transfer::Reference)).unwrap() else {
        panic!()
    };
    assert_eq!(reference.type_of(), "object");
    // With `promise`, the rule applies to the settled value.
    let options = transfer(Transfer::Reference).promise();
    let Transferred::Reference(settled) = context.eval_with::<Transferred>("Promise.resolve({ late: true })", &options).unwrap() else {
        panic!()
    };
    assert!(settled.get::<bool>("late").unwrap());
    // The concrete types need no option at all.
    let _: Reference = context.eval("({})").unwrap();
    let _: ExternalCopy = context.eval("({})").unwrap();
    // A `Value` cannot hold a handle.
    assert_eq!(context.eval_with::<Value>("({})", &transfer(Transfer::Reference)).unwrap_err().kind(), ivm::ErrorKind::Conversion);
}

/// An embedder's own type for a function of the isolate.
struct JsFunction(Reference);

impl FromJs for JsFunction {
    fn from_transferred(value: Transferred) -> ivm::Result<Self> {
        match value {
            Transferred::Reference(r) if r.type_of() == "function" => Ok(JsFunction(r)),
            _ => Err(ivm::Error::Conversion("not a function".into())),
        }
    }
}

impl IntoJs for JsFunction {
    fn into_transferable(self) -> ivm::Result<Transferable> {
        Ok(Transferable::from(self.0))
    }
}

/// An embedder's type that cannot always be put into an isolate.
struct Port(Option<u16>);

impl IntoJs for Port {
    fn into_transferable(self) -> ivm::Result<Transferable> {
        let port = self.0.ok_or_else(|| ivm::Error::InvalidArgument("no port assigned".into()))?;
        Transferable::value(port)
    }
}

#[test]
fn embedders_types_convert_through_what_the_transfer_rule_makes() {
    let (_isolate, context) = new_context();
    // Read from the rule's result, in whichever process the isolate lives.
    let double: JsFunction = context.eval("x => 2 * x").unwrap();
    assert_eq!(double.0.apply::<u32>((), (21,), &EvalOptions::default()).unwrap(), 42);
    assert!(matches!(context.eval::<JsFunction>("({})"), Err(e) if e.kind() == ivm::ErrorKind::Conversion));
    let global = context.global().unwrap();
    let again: JsFunction = global.get("Math").and_then(|math: Reference| math.get("max")).unwrap();
    // Put in as what they stand for, as a global and as an argument.
    context.set_global("double", again).unwrap();
    assert_eq!(context.eval::<u32>("double(3, 9)").unwrap(), 9);
    let twice: Reference = context.eval("(f, x) => f(f(x))").unwrap();
    assert_eq!(twice.apply::<u32>((), (double, 5), &EvalOptions::default()).unwrap(), 20);
    context.set_global("port", Port(Some(8080))).unwrap();
    assert_eq!(context.eval::<u16>("port").unwrap(), 8080);
    // A conversion that fails fails the operation, with its own error, and runs nothing.
    let err = twice.apply::<u32>((), (Port(None), 1), &EvalOptions::default()).unwrap_err();
    assert_eq!((err.kind(), err.message()), (ivm::ErrorKind::InvalidArgument, "no port assigned"));
    // ... and spends no single-use argument given with it (here the only handle to its value).
    let once = context.eval::<Reference>("x => 2 * x").unwrap().deref_into(false);
    assert!(twice.apply::<u32>((), (once.clone(), Port(None)), &EvalOptions::default()).is_err());
    assert_eq!(twice.apply::<u32>((), (once, 5), &EvalOptions::default()).unwrap(), 20);
    let err = context.set_global("port", Port(None)).unwrap_err();
    assert_eq!(err.message(), "no port assigned");
    assert_eq!(context.eval::<u16>("port").unwrap(), 8080);
}

#[test]
fn deref_into_is_single_use_and_only_for_the_owning_isolate() {
    // isolated-vm: tests/reference-deref.js
    let (_isolate, context) = new_context();
    let (_other, elsewhere) = new_context();
    let original: Reference = context.eval("({ id: 'me' })").unwrap();
    let check: Reference = context.eval("v => v.id === 'me'").unwrap();
    // `deref` (and a plain `&Reference`) is the value itself, as often as needed.
    assert!(check.apply::<bool>((), (original.deref(),), &Default::default()).unwrap());
    assert!(check.apply::<bool>((), (&original,), &Default::default()).unwrap());
    // `deref_into` works once.
    let once = original.deref_into(false);
    assert!(check.apply::<bool>((), (&once,), &Default::default()).unwrap());
    let err = check.apply::<bool>((), (&once,), &Default::default()).unwrap_err();
    assert_eq!(err.message(), "The return value of `derefInto()` should only be used once");
    // Values never leave their isolate this way.
    let err = elsewhere.set_global("stolen", &original).unwrap_err();
    assert_eq!((err.name(), err.message()), ("TypeError", "Cannot dereference this into target isolate"));
    // With `release`, the reference is released once used.
    context.set_global("back", original.deref_into(true)).unwrap();
    assert_eq!(original.get::<Value>("id").unwrap_err().message(), "Reference has been released");
}

#[test]
fn fire_and_forget_operations_run_in_order() {
    // isolated-vm: tests/ignored-async.js
    let (_isolate, context) = new_context();
    let global = context.global().unwrap();
    context.eval::<()>("globalThis.push = n => log.push(n)").unwrap();
    let push: Reference = global.get("push").unwrap();
    // Queued behind each other (a blocking call would not wait for them).
    global.set_ignored("log", Vec::<u32>::new());
    for n in 0..5 {
        push.apply_ignored((), (n,), EvalOptions::default());
    }
    global.delete_ignored("push");
    let log: Vec<u32> = crate::block_on(context.eval_async("log", EvalOptions::default())).unwrap();
    assert_eq!(log, [0, 1, 2, 3, 4]);
    assert_eq!(context.eval::<String>("typeof push").unwrap(), "undefined");
}

fn recording_isolate() -> (Isolate, ivm::Context, Arc<Mutex<Vec<ivm::JsError>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let isolate = Isolate::new(IsolateOptions::default().on_unhandled_rejection(move |e| sink.lock().unwrap().push(e))).unwrap();
    let context = isolate.create_context().unwrap();
    (isolate, context, seen)
}

#[test]
fn unhandled_rejections_go_to_the_handler_not_into_later_calls() {
    // isolated-vm #314, #40, #155: they used to surface in whatever call ran next.
    let (_isolate, context, seen) = recording_isolate();
    context.eval::<()>("async function forgotten() { throw new TypeError('nobody waited') } forgotten()").unwrap();
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!((seen[0].name.as_str(), seen[0].message.as_str()), ("TypeError", "nobody waited"));
        assert!(seen[0].stack.as_deref().unwrap().contains("at forgotten"), "{:?}", seen[0].stack);
    }
    // The next call is not affected.
    assert_eq!(context.eval::<u32>("1 + 1").unwrap(), 2);
    // A rejection handled later in the same turn, or awaited by the caller, is not unhandled.
    context.eval::<()>("const p = Promise.reject(new Error('late')); p.catch(() => {})").unwrap();
    let err = context.eval_with::<Value>("Promise.reject(new Error('awaited'))", &EvalOptions::default().promise()).unwrap_err();
    assert_eq!(err.message(), "awaited");
    // Thrown non-Errors are described as isolated-vm describes them.
    context.eval::<()>("Promise.reject({ not: 'an error' })").unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen[1].message.starts_with("An object was thrown from supplied code within isolated-vm"), "{seen:?}");
}

