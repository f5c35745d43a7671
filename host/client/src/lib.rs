//! # ivm-client — ivm's worker processes, driven without V8
//!
//! Everything a front end needs to run isolates in ivm worker processes, and nothing that links
//! V8: the [plain-data types](data) and [errors](error) of ivm's API, its [values](value) and
//! their codecs (V8's structured-clone format spoken from Rust, MessagePack), the
//! [worker protocol](protocol), and the client side of a worker: [`Link`] (one worker process
//! and its pipes), [`WorkerPool`] (workers started lazily and shared), [`WorkerIsolate`] (one
//! isolate in a worker: requests out, replies back, its events to an [`IsolateEvents`]).
//!
//! The `ivm` crate builds its in-process isolates and its Rust API on top of this crate; a
//! front end that must not link V8 (a Node.js addon living beside Node's own V8, a thin C
//! client) drives the same workers through the same protocol with this crate alone. The
//! worker program is the `ivm` binary, started as `ivm --ivm-worker` ([`WORKER_ARG`]).

pub mod data;
pub mod error;
pub mod protocol;
pub mod sandbox;
pub mod sync;
pub mod tls;
pub mod value;
pub mod watchdog;

mod ceiling;
mod isolate;
mod link;
mod pool;
pub mod spin;

pub use data::{CacheOutcome, CachedData, CallFrame, CompileOptions, CpuProfile, ConsoleLevel, EvalOptions, HeapStatistics, ImportRequest, Key, PositionTick, ProfileNode, ScriptOrigin, ThreadCpuProfile, Transfer};
pub use error::{CPU_LIMIT_MESSAGE, Error, ErrorKind, JsError, Location, MEMORY_LIMIT_MESSAGE, Result, TIMEOUT_MESSAGE};
pub use isolate::{IsolateEvents, WorkerIsolate, WorkerSettings};
pub use link::Link;
/// The reply channel of [`WorkerIsolate::request_waiting`].
pub use oneshot;
pub use pool::{Lease, PoolOptions, WorkerPool, worker_program};
pub use protocol::WORKER_ARG;
pub use sandbox::{SandboxPolicy, SandboxReport, SandboxStep};
pub use value::{BigInt, Value, from_value, to_value};
