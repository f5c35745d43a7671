//! # ivm-guest — V8 isolates from inside a WebAssembly component
//!
//! Bindings for the `ivm:isolate` WIT interface (`guest-abi/wit/isolate.wit`, the reference
//! for what each call does) and a small typed layer over them: values go in and out through
//! serde (as MessagePack, mapped as the WIT file documents), errors are one type.
//!
//! ```no_run
//! use ivm_guest::{Isolate, RunOptions};
//!
//! #[derive(serde::Serialize)]
//! struct Job { items: Vec<u32> }
//!
//! let isolate = Isolate::new(64)?;
//! let context = isolate.context()?;
//! context.set_global("job", &Job { items: vec![1, 2, 3] })?;
//! let total: u32 = context.eval("job.items.reduce((a, b) => a + b)", RunOptions::default())?;
//! assert_eq!(total, 6);
//! # Ok::<(), ivm_guest::Error>(())
//! ```
//!
//! A guest program implements the `run` export of the `guest` world with its own bindings
//! (`wit_bindgen::generate!({ world: "guest", path: ".../guest-abi/wit", with: {
//! "ivm:isolate/types": ivm_guest::raw } })`) or is a WASI command; `ivm component run
//! guest.wasm` runs it. Building needs a wasm32 target (see `guest-abi/README.md`).

mod bindings {
    wit_bindgen::generate!({ path: "wit", world: "host" });
}

/// The generated bindings, for everything the typed layer does not cover (tasks, modules,
/// references, external copies).
pub use bindings::ivm::isolate::types as raw;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A failure from the host, or a value that would not convert.
#[derive(Debug)]
pub enum Error {
    /// What the host reported.
    Host(raw::Error),
    /// A value could not be encoded or decoded.
    Value(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Host(raw::Error::Exception(e)) => write!(f, "{}: {}", e.name, e.message),
            Error::Host(raw::Error::Timeout(_)) => f.write_str("Script execution timed out."),
            Error::Host(raw::Error::CpuLimit(_)) => f.write_str("Script execution exceeded its CPU time limit."),
            Error::Host(raw::Error::MemoryLimit) => f.write_str("Isolate was disposed during execution due to memory limit"),
            Error::Host(other) => write!(f, "{other:?}"),
            Error::Value(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for Error {}

impl From<raw::Error> for Error {
    fn from(e: raw::Error) -> Error {
        Error::Host(e)
    }
}

/// Options for a run: a timeout and a CPU-time limit in milliseconds, and whether to wait for
/// a promise result.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    pub timeout_ms: Option<u32>,
    pub cpu_limit_ms: Option<u32>,
    pub promise: bool,
}

impl RunOptions {
    fn raw(self) -> raw::RunOptions {
        raw::RunOptions { timeout_ms: self.timeout_ms, cpu_limit_ms: self.cpu_limit_ms, promise: self.promise, transfer: raw::Transfer::Copy }
    }
}

/// A V8 isolate, disposed when dropped.
pub struct Isolate(raw::Isolate);

impl Isolate {
    /// An isolate with a memory limit in MB (0: the host's default, 128).
    pub fn new(memory_limit_mb: u32) -> Result<Isolate, Error> {
        Ok(Isolate(raw::Isolate::create(raw::IsolateOptions { memory_limit_mb, inspector: false, cpu_budget_ms: None })?))
    }

    /// A new context.
    pub fn context(&self) -> Result<Context, Error> {
        Ok(Context(self.0.create_context(&raw::ContextOptions { name: None })?))
    }

    /// The raw handle.
    pub fn raw(&self) -> &raw::Isolate {
        &self.0
    }
}

/// A context of an isolate.
pub struct Context(raw::Context);

impl Context {
    /// Evaluates `code` and copies its completion value into `T`.
    pub fn eval<T: DeserializeOwned>(&self, code: &str, options: RunOptions) -> Result<T, Error> {
        from_value(self.0.eval(code, options.raw())?)
    }

    /// Runs `code` as a function of `$0`, `$1`, ... (the elements of `args`, a tuple or list).
    pub fn eval_closure<T: DeserializeOwned, A: Serialize>(&self, code: &str, args: &[A], options: RunOptions) -> Result<T, Error> {
        let args = args.iter().map(to_value).collect::<Result<Vec<_>, _>>()?;
        from_value(self.0.eval_closure(code, args, options.raw())?)
    }

    /// Sets a global to a copy of `value`.
    pub fn set_global<T: Serialize + ?Sized>(&self, name: &str, value: &T) -> Result<(), Error> {
        self.0.global()?.set(name, to_value(value)?)?;
        Ok(())
    }

    /// The raw handle.
    pub fn raw(&self) -> &raw::Context {
        &self.0
    }
}

/// Any serde value as a WIT value (MessagePack).
pub fn to_value<T: Serialize + ?Sized>(value: &T) -> Result<raw::Value, Error> {
    rmp_serde::to_vec_named(value).map(raw::Value::Msgpack).map_err(|e| Error::Value(e.to_string()))
}

/// A WIT value as any serde type. Primitives convert as themselves; handles cannot.
pub fn from_value<T: DeserializeOwned>(value: raw::Value) -> Result<T, Error> {
    let bytes = match value {
        raw::Value::Msgpack(bytes) => bytes,
        raw::Value::Undefined | raw::Value::Null => encode(&())?,
        raw::Value::Boolean(b) => encode(&b)?,
        // Integral numbers as integers, so that integer types accept them (as in the mapping).
        raw::Value::Number(n) if n.fract() == 0.0 && n.abs() <= 9_007_199_254_740_992.0 => encode(&(n as i64))?,
        raw::Value::Number(n) => encode(&n)?,
        raw::Value::Bigint(text) | raw::Value::String(text) => encode(&text)?,
        raw::Value::Bytes(bytes) => encode(&serde_bytes(bytes))?,
        raw::Value::Reference(_) | raw::Value::ExternalCopy(_) | raw::Value::TransferIn(_) => {
            return Err(Error::Value("a handle cannot be read as data; use `raw`".into()));
        }
    };
    rmp_serde::from_slice(&bytes).map_err(|e| Error::Value(e.to_string()))
}

fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    rmp_serde::to_vec(value).map_err(|e| Error::Value(e.to_string()))
}

/// Bytes that serialize as MessagePack bin.
fn serde_bytes(bytes: Vec<u8>) -> impl Serialize {
    struct Bin(Vec<u8>);
    impl Serialize for Bin {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(&self.0)
        }
    }
    Bin(bytes)
}
