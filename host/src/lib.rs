//! # ivm — isolated V8 JavaScript isolates with hard limits
//!
//! ivm runs untrusted JavaScript in V8 isolates, each with its own heap, a hard memory limit
//! and per-call timeouts, and moves data between them and Rust safely. It is the successor of
//! the Node.js library isolated-vm, with its own pinned V8.
//!
//! ```
//! use std::time::Duration;
//! use ivm::{Isolate, IsolateOptions, EvalOptions, Error};
//!
//! let isolate = Isolate::new(IsolateOptions::default().memory_limit(64))?;
//! let context = isolate.create_context()?;
//!
//! // Values come out through serde.
//! let total: u64 = context.eval("[1, 2, 3].reduce((a, b) => a + b)")?;
//! assert_eq!(total, 6);
//!
//! // Limits hold: a runaway loop is stopped and the isolate stays usable.
//! let err = context
//!     .eval_with::<()>("for (;;) {}", &EvalOptions::default().timeout(Duration::from_millis(20)))
//!     .unwrap_err();
//! assert!(matches!(err, Error::Timeout { .. }));
//! assert_eq!(err.to_string(), "Script execution timed out.");
//! # Ok::<(), ivm::Error>(())
//! ```
//!
//! Where things live: [`Isolate`] (heap, limits, lifetime), [`Context`] (a global object and
//! evaluation), [`Script`] (compiled code), [`Reference`] (a handle to a value in an isolate),
//! [`ExternalCopy`] (a value held outside every isolate), [`Callback`] (Rust closures as
//! JavaScript functions), [`FromJs`]/[`IntoJs`] and [`Transfer`] (what crosses the boundary,
//! and how), [`Value`] and [`to_value`]/[`from_value`] (dynamic data), [`Error`] (typed
//! failures), [`Module`] and [`DirLoader`] (ES modules), [`CachedData`] (sealed code caches),
//! [`process`] (isolates in worker processes: [`Isolation`], [`WorkerPool`]), `component`
//! (the WIT interface hosted with wasmtime).

pub mod alloc;
mod callback;
mod code_cache;
#[cfg(feature = "component")]
pub mod component;
mod console;
mod context;
mod engine;
mod exception;
mod external_copy;
mod handle;
mod inspector;
mod isolate;
mod js;
pub mod key_file;
mod module;
mod op;
pub mod process;
mod reference;
mod run;
mod script;
mod snapshot;
mod spawn;
mod transfer;

// The V8-free layer (`host/client`): plain data, errors, values and their codecs, the worker
// client. Its modules are used here under the names they have there.
pub(crate) use ivm_client::{data, error, sync, watchdog};
#[doc(inline)]
pub use ivm_client::value;

pub use alloc::BoundedAllocator;
pub use callback::Callback;
pub use code_cache::CacheKey;
pub use context::{Context, ContextOptions};
pub use data::{CachedData, CallFrame, CompileOptions, CpuProfile, ConsoleLevel, EvalOptions, HeapStatistics, ImportRequest, Key, PositionTick, ProfileNode, ScriptOrigin, ThreadCpuProfile, Transfer};
pub use engine::executor::{max_threads, set_max_threads};
pub use engine::v8_version;
pub use error::{CPU_LIMIT_MESSAGE, Error, ErrorKind, JsError, Location, MEMORY_LIMIT_MESSAGE, Result, TIMEOUT_MESSAGE};
pub use inspector::InspectorSession;
pub use isolate::{CatastrophicHandler, DEFAULT_TIMEOUT, Isolate, IsolateOptions, Operation};
pub use process::{Isolation, PoolOptions, SandboxPolicy, SandboxReport, SandboxStep, WorkerPool};
pub use module::loader::DirLoader;
pub use module::Module;
pub use script::Script;
pub use snapshot::{Snapshot, SnapshotBuilder};
pub use spawn::{HostFuture, Spawner};
pub use reference::Reference;
pub use external_copy::{CopyIntoOptions, ExternalCopy, ExternalCopyOptions};
pub use transfer::{FromJs, IntoArgs, IntoJs, Transferable, Transferred};
pub use value::{BigInt, Value, from_value, to_value};
