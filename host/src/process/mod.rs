//! Process isolation: isolates that live in worker processes, behind the same API.
//!
//! V8 cannot always unwind from running out of memory (some allocations go straight to
//! `FatalProcessOutOfMemory`, which aborts the process), a script can sit in a builtin that
//! ignores termination, and a V8 bug exploited by hostile code owns the process it runs in.
//! An isolate created with [`Isolation::Process`] lives in a worker process instead: if the
//! worker dies for any reason, only its isolates are lost. Every operation in flight on them
//! ends with [`Error::WorkerCrashed`] saying why (signal, exit status, V8's last words), their
//! handles report disposed, [`IsolateOptions::on_catastrophic_error`] hears about it, and new
//! isolates work at once.
//!
//! Workers are the `ivm` binary itself, started as `ivm --ivm-worker`, talking a versioned
//! MessagePack protocol over pipes (`protocol.rs`). A [`WorkerPool`] starts them lazily and
//! reuses them: one isolate per worker (the default), N isolates per worker, or workers per
//! tenant ([`IsolateOptions::tenant`]). Each worker has an OS memory ceiling (`RLIMIT_DATA`)
//! on top of its isolates' heap limits.
//!
//! Host functions ([`Callback`](crate::Callback)s) still run in the host process: the worker
//! calls them over the pipe, and calls they make into the same worker's isolates run inside
//! the call, as they would in process.
//!
//! [`IsolateOptions::on_catastrophic_error`]: crate::IsolateOptions::on_catastrophic_error
//! [`IsolateOptions::tenant`]: crate::IsolateOptions::tenant

mod ceiling;
mod link;
mod pool;
pub(crate) mod protocol;
mod remote;
mod spin;
mod worker;

use std::path::PathBuf;

pub use pool::{PoolOptions, WorkerPool};
pub(crate) use remote::RemoteIsolate;
pub use worker::serve_worker;

use crate::error::{Error, Result};
use protocol::Reply;

/// The argument that starts an `ivm` binary (or an embedder's binary that calls
/// [`serve_worker`]) as a worker.
pub const WORKER_ARG: &str = "--ivm-worker";

/// Where an isolate lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Isolation {
    /// In this process: the fastest calls, but a V8 abort or exploit takes the process.
    InProcess,
    /// In a worker process of a [`WorkerPool`].
    Process,
}

impl Isolation {
    /// The default from the `IVM_ISOLATION` environment variable: `in-process` (also when
    /// unset) or `process`.
    pub fn from_env() -> Result<Isolation> {
        match std::env::var("IVM_ISOLATION").as_deref() {
            Err(_) | Ok("" | "in-process") => Ok(Isolation::InProcess),
            Ok("process") => Ok(Isolation::Process),
            Ok(other) => Err(Error::InvalidArgument(format!("IVM_ISOLATION is '{other}': it takes `in-process` or `process`"))),
        }
    }
}

impl std::str::FromStr for Isolation {
    type Err = Error;

    fn from_str(s: &str) -> Result<Isolation> {
        match s {
            "in-process" => Ok(Isolation::InProcess),
            "process" => Ok(Isolation::Process),
            other => Err(Error::InvalidArgument(format!("isolation '{other}': it takes `in-process` or `process`"))),
        }
    }
}

/// The worker program: the configured one, `IVM_WORKER`, this executable if it is `ivm`, or
/// an `ivm` beside this executable (or one directory up, where cargo puts binaries next to
/// its test executables).
fn worker_program(configured: Option<&PathBuf>) -> Result<PathBuf> {
    if let Some(path) = configured {
        return Ok(path.clone());
    }
    if let Some(path) = std::env::var_os("IVM_WORKER") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().map_err(|e| Error::InvalidArgument(format!("cannot find this executable: {e}")))?;
    if exe.file_stem().is_some_and(|name| name == "ivm") {
        return Ok(exe);
    }
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join("ivm"))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            Error::InvalidArgument(
                "no worker program for process isolation: set PoolOptions::worker_program or IVM_WORKER to an `ivm` binary".into(),
            )
        })
}

/// A compiled script or module, as the worker reports it.
pub(crate) struct Compiled {
    pub(crate) id: u64,
    pub(crate) requests: Vec<crate::ImportRequest>,
    pub(crate) cache: crate::code_cache::CacheOutcome,
}

impl From<Compiled> for (u64, crate::code_cache::CacheOutcome) {
    fn from(compiled: Compiled) -> Self {
        (compiled.id, compiled.cache)
    }
}

impl From<Compiled> for (u64, Vec<crate::ImportRequest>, crate::code_cache::CacheOutcome) {
    fn from(compiled: Compiled) -> Self {
        (compiled.id, compiled.requests, compiled.cache)
    }
}

fn mismatch() -> Error {
    Error::Conversion("the worker's reply does not match the request".into())
}

impl Reply {
    pub(crate) fn id(self) -> Result<u64> {
        match self {
            Reply::Id(id) => Ok(id),
            _ => Err(mismatch()),
        }
    }

    pub(crate) fn done(self) -> Result<()> {
        match self {
            Reply::Done => Ok(()),
            _ => Err(mismatch()),
        }
    }

    pub(crate) fn heap(self) -> Result<crate::HeapStatistics> {
        match self {
            Reply::Heap(heap) => Ok(heap),
            _ => Err(mismatch()),
        }
    }

    pub(crate) fn linked(self) -> Result<bool> {
        match self {
            Reply::Linked(linked) => Ok(linked),
            _ => Err(mismatch()),
        }
    }

    pub(crate) fn out(self) -> Result<protocol::Out> {
        match self {
            Reply::Out(out) => Ok(out),
            _ => Err(mismatch()),
        }
    }

    pub(crate) fn copy(self) -> Result<protocol::Copy> {
        match self {
            Reply::Copy(copy) => Ok(copy),
            _ => Err(mismatch()),
        }
    }

    pub(crate) fn compiled(self) -> Result<Compiled> {
        match self {
            Reply::Compiled { id, requests, produced, rejected } => Ok(Compiled {
                id,
                requests,
                cache: crate::code_cache::CacheOutcome { produced, rejected },
            }),
            _ => Err(mismatch()),
        }
    }
}
