//! The operations `index.js` asks for, as one N-API object each ([`OpArgs`]), made into the
//! worker protocol's [`Op`]: one entry point for every isolate operation rather than a native
//! method per operation and call style.

use std::time::Duration;

use ivm_client::protocol::{Access, Copy, Input, Op, Want, Wire};
use ivm_client::{CompileOptions, EvalOptions, ImportRequest, Key, ScriptOrigin, Transfer, Value};
use napi::bindgen_prelude::{Buffer, FromNapiValue};
use napi::sys;
use napi_derive::napi;

/// Defines a struct read from a JavaScript object through its own properties only. N-API's
/// derive looks up every field, present or not, at a fraction of a microsecond each: on the
/// path of every operation (an object of 25 fields, of which a call sets three to six) that
/// was most of the addon's own cost.
macro_rules! js_object {
    ($(#[$meta:meta])* pub struct $name:ident { $($(#[$field_meta:meta])* $field:ident: $ty:ty = $key:literal,)* }) => {
        $(#[$meta])*
        #[derive(Default)]
        pub struct $name {
            $($(#[$field_meta])* pub $field: $ty,)*
        }

        impl napi::bindgen_prelude::TypeName for $name {
            fn type_name() -> &'static str {
                stringify!($name)
            }

            fn value_type() -> napi::ValueType {
                napi::ValueType::Object
            }
        }

        impl napi::bindgen_prelude::FromNapiValue for $name {
            unsafe fn from_napi_value(env: napi::sys::napi_env, object: napi::sys::napi_value) -> napi::Result<Self> {
                let mut made = $name::default();
                // SAFETY: N-API calls on the caller's env and value.
                unsafe {
                    $crate::ops::own_properties(env, object, |key, value| {
                        match key {
                            $($key => made.$field = <$ty as napi::bindgen_prelude::FromNapiValue>::from_napi_value(env, value)?,)*
                            _ => {}
                        }
                        Ok(())
                    })?;
                }
                Ok(made)
            }
        }
    };
}

pub(crate) use js_object;

fn check(status: sys::napi_status) -> napi::Result<()> {
    if status == sys::Status::napi_ok { Ok(()) } else { Err(napi::Error::from_reason(format!("N-API call failed ({status})"))) }
}

/// Calls `each` with every own enumerable string-keyed property of `object`. Keys are read
/// into a small buffer: a longer key (none of ours) is cut, and matches nothing.
///
/// # Safety
/// `env` and `object` must be the caller's, on its thread.
pub(crate) unsafe fn own_properties(env: sys::napi_env, object: sys::napi_value, mut each: impl FnMut(&str, sys::napi_value) -> napi::Result<()>) -> napi::Result<()> {
    let (mut names, mut length) = (std::ptr::null_mut(), 0u32);
    // SAFETY: plain N-API calls on the caller's env and value (the function's contract).
    unsafe {
        check(sys::napi_get_all_property_names(
            env,
            object,
            sys::KeyCollectionMode::own_only,
            sys::KeyFilter::enumerable | sys::KeyFilter::skip_symbols,
            sys::KeyConversion::numbers_to_strings,
            &mut names,
        ))?;
        check(sys::napi_get_array_length(env, names, &mut length))?;
        for i in 0..length {
            let (mut key, mut value, mut buffer, mut written) = (std::ptr::null_mut(), std::ptr::null_mut(), [0u8; 32], 0usize);
            check(sys::napi_get_element(env, names, i, &mut key))?;
            check(sys::napi_get_value_string_utf8(env, key, buffer.as_mut_ptr().cast(), buffer.len(), &mut written))?;
            check(sys::napi_get_property(env, object, key, &mut value))?;
            each(std::str::from_utf8(&buffer[..written]).unwrap_or(""), value)?;
        }
    }
    Ok(())
}

/// A primitive passed as itself (`undefined`, `null`, a boolean, number or string), written
/// in V8's wire format here: the common arguments cost no `v8.Serializer` buffer, which as a
/// fresh N-API Buffer costs more than the rest of a call.
#[derive(Default)]
pub struct Primitive(Option<Value>);

impl Primitive {
    /// The value in V8's wire format, if one was passed.
    pub fn wire(self) -> Option<ivm_client::Result<Wire>> {
        self.0.map(|value| Ok(Wire { bytes: ivm_client::value::wire::to_wire(&value)?, shared: Vec::new() }))
    }
}

impl FromNapiValue for Primitive {
    unsafe fn from_napi_value(env: sys::napi_env, value: sys::napi_value) -> napi::Result<Self> {
        let mut kind = 0;
        // SAFETY: N-API calls on the caller's env and value (the trait's contract).
        unsafe {
            check(sys::napi_typeof(env, value, &mut kind))?;
            Ok(Primitive(Some(match kind {
                sys::ValueType::napi_undefined => Value::Undefined,
                sys::ValueType::napi_null => Value::Null,
                sys::ValueType::napi_boolean => Value::Bool(bool::from_napi_value(env, value)?),
                sys::ValueType::napi_number => Value::Number(f64::from_napi_value(env, value)?),
                sys::ValueType::napi_string => Value::String(String::from_napi_value(env, value)?),
                _ => return Err(napi::Error::from_reason("`primitive` must be undefined, null, a boolean, a number or a string")),
            })))
        }
    }
}

js_object! {
    /// A value going into an isolate, as `index.js` prepared it: exactly one of `primitive`,
    /// `data` (V8's wire format, from Node's `v8.Serializer`), `callback` (a Node function by
    /// its id), `reference` (a value of that isolate, by its handle) or `copy` (an external
    /// copy).
    pub struct InputArg {
        primitive: Primitive = "primitive",
        data: Option<Buffer> = "data",
        /// A Node function's id, whose low two bits say how it is called (`calls::kind_of`).
        callback: Option<f64> = "callback",
        name: Option<String> = "name",
        reference: Option<f64> = "reference",
        /// Release the reference once used (`derefInto({ release: true })`).
        release: Option<bool> = "release",
        copy: Option<Buffer> = "copy",
        /// The ArrayBuffers transferred with `copy`.
        buffers: Option<Vec<Buffer>> = "buffers",
        transfer_in: Option<bool> = "transferIn",
    }
}

js_object! {
    /// One operation: `op` names it, the other fields are its arguments.
    pub struct OpArgs {
        op: String = "op",
        context: Option<f64> = "context",
        script: Option<f64> = "script",
        reference: Option<f64> = "reference",
        code: Option<String> = "code",
        filename: Option<String> = "filename",
        line_offset: Option<i32> = "lineOffset",
        column_offset: Option<i32> = "columnOffset",
        /// A property name, or (`index`) an array index.
        key: Option<String> = "key",
        index: Option<u32> = "index",
        value: Option<InputArg> = "value",
        recv: Option<InputArg> = "recv",
        args: Option<Vec<InputArg>> = "args",
        timeout: Option<f64> = "timeout",
        /// The result's transfer option: `copy`, `externalCopy` or `reference` (none:
        /// isolated-vm's rule for the operation).
        transfer: Option<String> = "transfer",
        promise: Option<bool> = "promise",
        accessors: Option<bool> = "accessors",
        inherit: Option<bool> = "inherit",
        cached_data: Option<Buffer> = "cachedData",
        produce_cached_data: Option<bool> = "produceCachedData",
        title: Option<String> = "title",
        module: Option<f64> = "module",
        /// A module graph's imports, for `instantiate`.
        links: Option<Vec<LinkArg>> = "links",
    }
}

/// One import of a module graph: `referrer`'s `specifier` (with its attributes) is `target`.
#[napi(object)]
pub struct LinkArg {
    pub referrer: f64,
    pub specifier: String,
    pub attributes: Vec<Vec<String>>,
    pub target: f64,
}

fn invalid(message: impl Into<String>) -> ivm_client::Error {
    ivm_client::Error::js("TypeError", message)
}

fn id(field: Option<f64>, what: &str) -> ivm_client::Result<u64> {
    field.filter(|n| *n >= 0.0 && n.is_finite()).map(|n| n as u64).ok_or_else(|| invalid(format!("missing {what}")))
}

/// A timeout in milliseconds: 0, absent, not finite or past what a `Duration` holds is none.
fn millis(ms: Option<f64>) -> Option<Duration> {
    ms.filter(|ms| *ms > 0.0).and_then(|ms| Duration::try_from_secs_f64(ms / 1000.0).ok())
}

fn transfer(option: Option<&str>) -> Transfer {
    match option {
        Some("copy") => Transfer::Copy,
        Some("externalCopy") => Transfer::ExternalCopy,
        Some("reference") => Transfer::Reference,
        _ => Transfer::Auto,
    }
}

/// What a result should come back as: under a `copy` option a copy, else isolated-vm's rule
/// (the worker applies the transfer option and the operation's fallback).
fn want(args: &OpArgs) -> Want {
    match args.transfer.as_deref() {
        Some("copy") => Want::Value,
        _ => Want::Transferred,
    }
}

fn origin(args: &OpArgs) -> ScriptOrigin {
    let mut origin = ScriptOrigin::new(args.filename.clone().unwrap_or_else(|| "<isolated-vm>".to_owned()));
    origin.line_offset = args.line_offset.unwrap_or(0);
    origin.column_offset = args.column_offset.unwrap_or(0);
    origin
}

fn run(args: &OpArgs) -> EvalOptions {
    let mut run = EvalOptions::default().transfer(transfer(args.transfer.as_deref()));
    run.timeout = millis(args.timeout);
    run.promise = args.promise.unwrap_or(false);
    run.origin = origin(args);
    run
}

fn key(args: &OpArgs) -> ivm_client::Result<Key> {
    match (&args.key, args.index) {
        (_, Some(index)) => Ok(Key::Index(index)),
        (Some(name), None) => Ok(Key::Name(name.clone())),
        (None, None) => Err(invalid("Invalid `key`")),
    }
}

fn access(args: &OpArgs) -> Access {
    Access { inherit: args.inherit.unwrap_or(false), accessors: args.accessors.unwrap_or(false) }
}

/// `undefined` in V8's wire format.
pub(crate) fn undefined() -> Wire {
    Wire { bytes: vec![0xff, 0x0f, b'_'], shared: Vec::new() }
}

fn input(arg: Option<InputArg>) -> ivm_client::Result<Input> {
    let Some(arg) = arg else {
        return Ok(Input::Data(undefined()));
    };
    Ok(if let Some(wire) = arg.primitive.wire() {
        Input::Data(wire?)
    } else if let Some(data) = arg.data {
        Input::Data(Wire { bytes: data.to_vec(), shared: Vec::new() })
    } else if let Some(callback) = arg.callback {
        Input::Callback { callback: callback as u64, kind: crate::calls::kind_of(callback as u64), name: arg.name.unwrap_or_default() }
    } else if let Some(reference) = arg.reference {
        Input::Reference { id: reference as u64, release: arg.release.unwrap_or(false) }
    } else if let Some(copy) = arg.copy {
        let buffers = arg.buffers.unwrap_or_default().into_iter().map(|b| serde_bytes::ByteBuf::from(b.to_vec())).collect();
        Input::Copy { copy: Copy { bytes: copy.to_vec(), buffers }, transfer_in: arg.transfer_in.unwrap_or(false) }
    } else {
        return Err(invalid("A non-transferable value was passed"));
    })
}

fn link(link: LinkArg) -> ivm_client::Result<(u64, ImportRequest, u64)> {
    let attributes = link
        .attributes
        .into_iter()
        .map(|pair| match <[String; 2]>::try_from(pair) {
            Ok([key, value]) => Ok((key, value)),
            Err(_) => Err(invalid("an import attribute is a [key, value] pair")),
        })
        .collect::<ivm_client::Result<_>>()?;
    Ok((id(Some(link.referrer), "referrer")?, ImportRequest { specifier: link.specifier, attributes }, id(Some(link.target), "target")?))
}

/// The protocol's operation for `args`.
pub fn op(mut args: OpArgs) -> ivm_client::Result<Op> {
    let compile = |args: &OpArgs| {
        let mut compile = CompileOptions::origin(origin(args));
        if let Some(cached) = &args.cached_data {
            compile = compile.cached_data(ivm_client::CachedData::from_bytes(cached.to_vec()));
        }
        compile.produce_cached_data = args.produce_cached_data.unwrap_or(false);
        compile
    };
    Ok(match args.op.as_str() {
        "createContext" => Op::CreateContext { console: None, name: None },
        "heapStatistics" => Op::HeapStatistics,
        "global" => Op::Global { context: id(args.context, "context")? },
        "eval" => Op::Eval { context: id(args.context, "context")?, code: args.code.take().unwrap_or_default(), run: run(&args), want: want(&args) },
        "evalClosure" => Op::EvalClosure {
            context: id(args.context, "context")?,
            code: args.code.take().unwrap_or_default(),
            args: args.args.take().unwrap_or_default().into_iter().map(|a| input(Some(a))).collect::<ivm_client::Result<_>>()?,
            run: run(&args),
            want: want(&args),
        },
        "compileScript" => Op::CompileScript { code: args.code.take().unwrap_or_default(), compile: compile(&args) },
        "runScript" => Op::RunScript { script: id(args.script, "script")?, context: id(args.context, "context")?, run: run(&args), want: want(&args) },
        "get" => {
            let want = match args.transfer.as_deref() {
                Some("copy") => Want::Value,
                Some("externalCopy") => Want::ExternalCopy,
                Some("reference") => Want::Reference,
                _ => Want::Transferred,
            };
            Op::Get { reference: id(args.reference, "reference")?, access: access(&args), key: key(&args)?, want }
        }
        "set" => Op::Set { reference: id(args.reference, "reference")?, key: key(&args)?, value: input(args.value.take())? },
        "delete" => Op::Delete { reference: id(args.reference, "reference")?, key: key(&args)? },
        "apply" => Op::Apply {
            reference: id(args.reference, "reference")?,
            access: access(&args),
            recv: input(args.recv.take())?,
            args: args.args.take().unwrap_or_default().into_iter().map(|a| input(Some(a))).collect::<ivm_client::Result<_>>()?,
            run: run(&args),
            want: want(&args),
        },
        "copy" => Op::Copy { reference: id(args.reference, "reference")?, want: Want::Value },
        "compileModule" => Op::CompileModule { code: args.code.take().unwrap_or_default(), compile: compile(&args) },
        "linked" => Op::Linked { module: id(args.module, "module")? },
        "instantiate" => Op::Instantiate {
            module: id(args.module, "module")?,
            context: id(args.context, "context")?,
            links: args.links.take().unwrap_or_default().into_iter().map(link).collect::<ivm_client::Result<_>>()?,
        },
        "evaluate" => Op::Evaluate { module: id(args.module, "module")?, run: run(&args) },
        "namespace" => Op::Namespace { module: id(args.module, "module")? },
        "startProfiler" => Op::StartProfiler { title: args.title.take().unwrap_or_default() },
        "stopProfiler" => Op::StopProfiler { title: args.title.take().unwrap_or_default() },
        other => return Err(invalid(format!("unknown operation {other}"))),
    })
}
