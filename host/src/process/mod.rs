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
//! MessagePack protocol over pipes. The client side of that (the protocol, the links to workers,
//! the pool) is the V8-free crate `ivm-client` (`host/client`); this module adds what needs V8
//! or the public handles: the worker's own loop (`worker/`) and the host state the worker's
//! calls reach (`remote.rs`). A [`WorkerPool`] starts them lazily and
//! reuses them: one isolate per worker (the default), N isolates per worker, or workers per
//! tenant ([`IsolateOptions::tenant`]). Each worker has an OS memory ceiling (`RLIMIT_DATA`)
//! on top of its isolates' heap limits.
//!
//! Host functions ([`Callback`](crate::Callback)s) still run in the host process: the worker
//! calls them over the pipe, and calls they make into the same worker's isolates run inside
//! the call, as they would in process.
//!
//! A worker confines itself before it runs anything: a user, network and mount namespace of
//! its own with an empty root, a Landlock domain that grants nothing, no capabilities,
//! `no_new_privs`, and a seccomp-bpf allow-list
//! under which opening a file or a socket fails with `EPERM` and `execve`, `fork` or `ptrace`
//! kill it with `SIGSYS` (reported as a crash). A step the kernel refuses is left out and
//! reported ([`Isolate::sandbox`](crate::Isolate::sandbox)), or, with
//! [`SandboxPolicy::Required`], stops the worker. The README's "The worker sandbox" has the
//! whole policy.
//!
//! [`IsolateOptions::on_catastrophic_error`]: crate::IsolateOptions::on_catastrophic_error
//! [`IsolateOptions::tenant`]: crate::IsolateOptions::tenant

mod remote;
mod worker;

pub(crate) use ivm_client::protocol;
pub use ivm_client::{PoolOptions, SandboxPolicy, SandboxReport, SandboxStep, WORKER_ARG, WorkerPool};
#[cfg(debug_assertions)]
#[doc(hidden)]
pub use ivm_client::protocol::SandboxProbe;
pub(crate) use remote::RemoteIsolate;
pub use worker::serve_worker;

use crate::error::{Error, Result};

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

