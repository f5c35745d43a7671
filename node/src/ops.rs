//! The operations `index.js` asks for, as one N-API object each ([`OpArgs`]), made into the
//! worker protocol's [`Op`]: one entry point for every isolate operation rather than a native
//! method per operation and call style.

use std::time::Duration;

use ivm_client::protocol::{Access, CallKind, Copy, Input, Op, Want, Wire};
use ivm_client::{CompileOptions, EvalOptions, ImportRequest, Key, ScriptOrigin, Transfer};
use napi::bindgen_prelude::Buffer;
use napi_derive::napi;

/// A value going into an isolate, as `index.js` prepared it: exactly one of `data` (V8's
/// wire format, from Node's `v8.Serializer`), `callback` (a Node function by its id),
/// `reference` (a value of that isolate, by its handle) or `copy` (an external copy).
#[napi(object)]
pub struct InputArg {
    pub data: Option<Buffer>,
    pub callback: Option<f64>,
    /// `sync`, `async`, `ignored` or `blocking`.
    pub kind: Option<String>,
    pub name: Option<String>,
    pub reference: Option<f64>,
    /// Release the reference once used (`derefInto({ release: true })`).
    pub release: Option<bool>,
    pub copy: Option<Buffer>,
    /// The ArrayBuffers transferred with `copy`.
    pub buffers: Option<Vec<Buffer>>,
    pub transfer_in: Option<bool>,
}

/// One operation: `op` names it, the other fields are its arguments.
#[napi(object)]
pub struct OpArgs {
    pub op: String,
    pub context: Option<f64>,
    pub script: Option<f64>,
    pub reference: Option<f64>,
    pub code: Option<String>,
    pub filename: Option<String>,
    pub line_offset: Option<i32>,
    pub column_offset: Option<i32>,
    /// A property name, or (`index`) an array index.
    pub key: Option<String>,
    pub index: Option<u32>,
    pub value: Option<InputArg>,
    pub recv: Option<InputArg>,
    pub args: Option<Vec<InputArg>>,
    pub timeout: Option<f64>,
    /// The result's transfer option: `copy`, `externalCopy` or `reference` (none: isolated-vm's
    /// rule for the operation).
    pub transfer: Option<String>,
    pub promise: Option<bool>,
    pub accessors: Option<bool>,
    pub inherit: Option<bool>,
    pub cached_data: Option<Buffer>,
    pub produce_cached_data: Option<bool>,
    pub title: Option<String>,
    pub module: Option<f64>,
    /// A module graph's imports, for `instantiate`.
    pub links: Option<Vec<LinkArg>>,
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

/// A timeout in milliseconds: 0, absent or not finite is none.
fn millis(ms: Option<f64>) -> Option<Duration> {
    ms.filter(|ms| *ms > 0.0 && ms.is_finite()).map(|ms| Duration::from_secs_f64(ms / 1000.0))
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

fn kind(kind: Option<&str>) -> CallKind {
    match kind {
        Some("async") => CallKind::Async,
        Some("ignored") => CallKind::Ignored,
        Some("blocking") => CallKind::Blocking,
        _ => CallKind::Sync,
    }
}

fn input(arg: Option<InputArg>) -> ivm_client::Result<Input> {
    let Some(arg) = arg else {
        return Ok(Input::Data(Wire { bytes: vec![0xff, 0x0f, b'_'], shared: Vec::new() }));
    };
    Ok(if let Some(data) = arg.data {
        Input::Data(Wire { bytes: data.to_vec(), shared: Vec::new() })
    } else if let Some(callback) = arg.callback {
        Input::Callback { callback: callback as u64, kind: kind(arg.kind.as_deref()), name: arg.name.unwrap_or_default() }
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
        "externalCopy" => Op::ExternalCopy { reference: id(args.reference, "reference")?, transfer: Vec::new(), transfer_out: false },
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
