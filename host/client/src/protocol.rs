//! The host ↔ worker protocol: MessagePack messages (serde + rmp-serde) in length-prefixed
//! frames over the worker's standard input and output.
//!
//! A frame is a little-endian `u32` length and that many bytes of message. The worker speaks
//! first with `Hello`, carrying [`VERSION`]; a different version, a malformed message or a
//! frame over [`MAX_FRAME`] ends the link: the host kills that worker, and only its isolates
//! are affected. Values travel in V8's structured-clone format ([`Wire`]): host and worker are
//! the same binary, so the same V8.

use std::io::{self, Read, Write};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::data::{CacheOutcome, CachedData, CompileOptions, ThreadCpuProfile, ConsoleLevel, EvalOptions, HeapStatistics, ImportRequest, Key, ScriptOrigin};
use crate::error::{Error, JsError, Result};

/// The argument that starts an `ivm` binary (or an embedder's binary that calls
/// `ivm::process::serve_worker`) as a worker.
pub const WORKER_ARG: &str = "--ivm-worker";

/// The protocol version both sides must speak.
pub const VERSION: u32 = 8;
/// The largest frame either side accepts.
pub const MAX_FRAME: usize = 256 << 20;

pub use crate::value::wire::Wire;

/// Worker-side ids: of isolates, and of handles (contexts, scripts, references, modules).
pub type Id = u64;

/// What [`Op::SandboxProbe`] makes a worker try. It answers with [`Reply::Count`]: the
/// `errno` the call failed with, 0 if it succeeded.
#[cfg(debug_assertions)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SandboxProbe {
    /// `open("/etc/passwd")`.
    OpenFile,
    /// `socket(AF_INET, SOCK_STREAM)`.
    Socket,
    /// `fork()`, the child exiting at once.
    Fork,
    /// `execv("/bin/true")`.
    Exec,
}

/// What an isolate made in a worker is like.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewIsolate {
    pub memory_limit: u64,
    /// Whether unhandled rejections are reported (`FromWorker::Rejection`).
    pub rejections: bool,
    pub cache_secret: Option<Vec<u8>>,
    pub default_timeout: Option<Duration>,
    pub cpu_budget: Option<Duration>,
    /// The host's `terminate_grace`.
    pub terminate_grace: Duration,
    pub inspector: bool,
    /// The startup snapshot to start from.
    pub snapshot: Option<StartFrom>,
}

/// A startup snapshot for a worker's isolate. A worker that hosts a snapshot's isolates hosts
/// no others, and keeps the blob: it crosses once per worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartFrom {
    /// The blob's SHA-256.
    pub id: String,
    /// V8's blob, which the host has checked; `None` if this worker has it already.
    pub blob: Option<serde_bytes::ByteBuf>,
    /// Whether the worker makes an isolate like this one ahead of the next request (the
    /// host's ceiling for the worker allows for it: [`crate::WorkerPool::create_isolate`]).
    pub ahead: bool,
}

/// Host → worker.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToWorker {
    /// An operation. `within` is the worker's call this request is made from (a host
    /// function running for it), which the worker runs it in, inline.
    Request { id: u64, within: Option<u64>, isolate: Option<Id>, op: Op },
    /// The answer to a worker's call of a host function or hook.
    Reply { call: u64, result: Result<Answer, Error> },
}

/// Worker → host.
#[derive(Debug, Serialize, Deserialize)]
pub enum FromWorker {
    /// The worker is ready, confined as `sandbox` says.
    Hello { version: u32, pid: u32, sandbox: crate::sandbox::SandboxReport },
    Response { id: u64, result: Result<Reply, Error> },
    /// Request `id`, which has a timeout, has started running (its escalation counts from
    /// now, not from when it was queued).
    Started { id: u64 },
    /// JavaScript called a host function or hook, while running `request` (if it was).
    /// Requests the host makes while it answers carry `within: Some(call)`.
    Call { call: u64, isolate: Id, request: Option<u64>, target: Target },
    /// Output of a context's `console`.
    Console { isolate: Id, sink: u64, level: ConsoleLevel, text: String },
    /// An unhandled promise rejection.
    Rejection { isolate: Id, error: JsError },
    /// A message of inspector session `session`; `None`: the session has ended.
    Inspector { isolate: Id, session: u64, message: Option<String> },
    /// A run of isolate `isolate` paused in its debugger (`true`), or went on: its escalation
    /// (the kill after timeout and grace) waits meanwhile.
    Paused { isolate: Id, paused: bool },
    /// Bytes of heap snapshot `snapshot`, in order.
    SnapshotChunk {
        isolate: Id,
        snapshot: u64,
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
}

/// What a worker's call asks of the host.
#[derive(Debug, Serialize, Deserialize)]
pub enum Target {
    /// Host function `callback` with the arguments (an array).
    Callback { callback: u64, args: Wire },
    /// The dynamic-import hook.
    Import { request: ImportRequest, referrer: String },
    /// The `import.meta` hook.
    Meta { filename: String },
}

/// The host's answer to a call.
#[derive(Debug, Serialize, Deserialize)]
pub enum Answer {
    Value(Wire),
    Module(Id),
}

/// How a host function behaves (see `ivm::Callback`'s constructors).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CallKind {
    Sync,
    Async,
    Blocking,
    Ignored,
}

/// What a result should become: the caller's `ivm::FromJs` type.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Want {
    /// A copy, for a serde type.
    Data,
    /// A [`Value`](crate::Value), by the transfer rule.
    Value,
    /// A `ivm::Transferred`, by the transfer rule.
    Transferred,
    Reference,
    ExternalCopy,
    /// Nothing (`()`).
    Nothing,
}

/// A result, as [`Want`] asked.
#[derive(Debug, Serialize, Deserialize)]
pub enum Out {
    Data(Wire),
    Reference { id: Id, type_of: String },
    ExternalCopy(Copy),
    Nothing,
}

/// An export of a module the host made (`data_module`, `json_module`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Export {
    /// A value, in V8's wire format.
    Wire(#[serde(with = "serde_bytes")] Vec<u8>),
    /// JSON text, parsed when the module is evaluated.
    Json(String),
}

/// An external copy's bytes and the ArrayBuffers transferred with it.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Copy {
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
    pub buffers: Vec<serde_bytes::ByteBuf>,
}

/// A value going into a worker's isolate.
#[derive(Debug, Serialize, Deserialize)]
pub enum Input {
    Data(Wire),
    /// A host function, by its id on the host.
    Callback { callback: u64, kind: CallKind, name: String },
    /// A value of that isolate (`release`: release the reference once used).
    Reference { id: Id, release: bool },
    /// An external copy, copied in (its transferred buffers move in with `transfer_in`).
    Copy { copy: Copy, transfer_in: bool },
}

/// How a reference reads properties: `ivm::Reference::inherit` and
/// `accessors`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Access {
    pub inherit: bool,
    pub accessors: bool,
}

/// An operation for the worker. Handle ids are of the request's isolate.
#[derive(Debug, Serialize, Deserialize)]
pub enum Op {
    CreateIsolate(NewIsolate),
    /// Test-only, and only in debug builds: the worker tries what its sandbox forbids.
    #[cfg(debug_assertions)]
    SandboxProbe(SandboxProbe),
    /// Makes a startup snapshot from `scripts` (and a warm-up script), in a worker that does
    /// nothing else: V8's raw blob (the host seals it).
    CreateSnapshot { scripts: Vec<(String, ScriptOrigin)>, warmup: Option<String>, memory_limit: u64, timeout: Option<Duration> },
    Dispose,
    HeapStatistics,
    Times,
    /// The isolate's live handles (answered at once, like `Times`).
    ReferenceCount,
    CreateContext { console: Option<u64>, name: Option<String> },
    Release { handle: Id },
    Eval { context: Id, code: String, run: EvalOptions, want: Want },
    EvalClosure { context: Id, code: String, args: Vec<Input>, run: EvalOptions, want: Want },
    Global { context: Id },
    GlobalGet { context: Id, name: String, want: Want },
    GlobalSet { context: Id, name: String, value: Input },
    CompileScript { code: String, compile: CompileOptions },
    RunScript { script: Id, context: Id, run: EvalOptions, want: Want },
    Get { reference: Id, access: Access, key: Key, want: Want },
    Set { reference: Id, key: Key, value: Input },
    Delete { reference: Id, key: Key },
    Apply { reference: Id, access: Access, recv: Input, args: Vec<Input>, run: EvalOptions, want: Want },
    Copy { reference: Id, want: Want },
    ExternalCopy { reference: Id, transfer: Vec<Id>, transfer_out: bool },
    CompileModule { code: String, compile: CompileOptions },
    SyntheticModule { name: String, exports: Vec<(String, Export)> },
    Linked { module: Id },
    Instantiate { module: Id, context: Id, links: Vec<(Id, ImportRequest, Id)> },
    Evaluate { module: Id, run: EvalOptions },
    Namespace { module: Id },
    Hooks { import: bool, meta: bool },
    /// Connects an inspector session; its messages come as `FromWorker::Inspector`.
    InspectorConnect,
    /// A protocol message for session `session` (answered by none: its response is one of
    /// the session's messages). The worker hands it over at once, even while the isolate is
    /// paused or busy.
    InspectorDispatch { session: u64, message: String },
    /// Disconnects session `session` (answered by none).
    InspectorClose { session: u64 },
    /// A caller that cannot serve a pause waits on the isolate (`true`), or no longer
    /// (answered by none; handled at once): while any does, a pause ends at once and none
    /// begins.
    HoldPauses { hold: bool },
    /// Waits until a session says it is ready, then has it pause before the next run's first
    /// statement.
    WaitForDebugger,
    StartProfiler { title: String },
    StopProfiler { title: String },
    /// A heap snapshot, sent as `FromWorker::SnapshotChunk`s for `snapshot` before the reply.
    HeapSnapshot { snapshot: u64 },
}

impl Op {
    /// The timeout of the JavaScript the operation may run (scripts, getters, proxy traps),
    /// in an isolate whose default timeout is `default`; `None` for operations that run none.
    pub fn timeout(&self, default: Option<Duration>) -> Option<Duration> {
        match self {
            Op::Eval { run, .. } | Op::EvalClosure { run, .. } | Op::RunScript { run, .. } | Op::Apply { run, .. } | Op::Evaluate { run, .. } => {
                run.timeout.or(default)
            }
            Op::GlobalGet { .. } | Op::GlobalSet { .. } | Op::Get { .. } | Op::Set { .. } | Op::Delete { .. } | Op::Copy { .. } | Op::ExternalCopy { .. } => {
                default
            }
            _ => None,
        }
    }
}

/// The worker's reply to an operation.
#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    Done,
    /// A startup snapshot, as V8 made it, and what it depends on in the worker that made it
    /// (V8's version and flags, hashed).
    Snapshot { blob: serde_bytes::ByteBuf, environment: serde_bytes::ByteBuf },
    Id(Id),
    Out(Out),
    Copy(Copy),
    Linked(bool),
    Heap(HeapStatistics),
    Times { cpu: Duration, wall: Duration },
    Count(u64),
    Profiles(Vec<ThreadCpuProfile>),
    Compiled {
        id: Id,
        requests: Vec<ImportRequest>,
        produced: Option<CachedData>,
        rejected: Option<bool>,
    },
}

/// A compiled script or module, as the worker reports it.
pub struct Compiled {
    pub id: u64,
    pub requests: Vec<ImportRequest>,
    pub cache: CacheOutcome,
}

impl From<Compiled> for (u64, CacheOutcome) {
    fn from(compiled: Compiled) -> Self {
        (compiled.id, compiled.cache)
    }
}

impl From<Compiled> for (u64, Vec<ImportRequest>, CacheOutcome) {
    fn from(compiled: Compiled) -> Self {
        (compiled.id, compiled.requests, compiled.cache)
    }
}

fn mismatch() -> Error {
    Error::Conversion("the worker's reply does not match the request".into())
}

impl Reply {
    pub fn id(self) -> Result<u64> {
        match self {
            Reply::Id(id) => Ok(id),
            _ => Err(mismatch()),
        }
    }

    pub fn done(self) -> Result<()> {
        match self {
            Reply::Done => Ok(()),
            _ => Err(mismatch()),
        }
    }

    pub fn heap(self) -> Result<HeapStatistics> {
        match self {
            Reply::Heap(heap) => Ok(heap),
            _ => Err(mismatch()),
        }
    }

    pub fn linked(self) -> Result<bool> {
        match self {
            Reply::Linked(linked) => Ok(linked),
            _ => Err(mismatch()),
        }
    }

    pub fn out(self) -> Result<Out> {
        match self {
            Reply::Out(out) => Ok(out),
            _ => Err(mismatch()),
        }
    }

    pub fn copy(self) -> Result<Copy> {
        match self {
            Reply::Copy(copy) => Ok(copy),
            _ => Err(mismatch()),
        }
    }

    pub fn profiles(self) -> Result<Vec<ThreadCpuProfile>> {
        match self {
            Reply::Profiles(profiles) => Ok(profiles),
            _ => Err(mismatch()),
        }
    }

    pub fn compiled(self) -> Result<Compiled> {
        match self {
            Reply::Compiled { id, requests, produced, rejected } => Ok(Compiled {
                id,
                requests,
                cache: CacheOutcome { produced, rejected },
            }),
            _ => Err(mismatch()),
        }
    }
}

/// Writes one frame.
pub fn write_frame(out: &mut impl Write, message: &impl Serialize) -> io::Result<()> {
    let mut frame = vec![0u8; 4];
    rmp_serde::encode::write(&mut frame, message).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let length = frame.len() - 4;
    if length > MAX_FRAME {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("a message of {length} bytes is over the limit of {MAX_FRAME}")));
    }
    frame[..4].copy_from_slice(&(length as u32).to_le_bytes());
    out.write_all(&frame)?;
    out.flush()
}

/// Reads one frame: `Ok(None)` at a clean end of input.
pub fn read_frame<T: for<'de> Deserialize<'de>>(input: &mut impl Read) -> io::Result<Option<T>> {
    let mut length = [0u8; 4];
    match input.read_exact(&mut length) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let length = u32::from_le_bytes(length) as usize;
    if length > MAX_FRAME {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("a frame of {length} bytes is over the limit of {MAX_FRAME}")));
    }
    // Grown as bytes arrive: a length alone reserves nothing.
    let mut body = Vec::new();
    if input.take(length as u64).read_to_end(&mut body)? < length {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    rmp_serde::from_slice(&body).map(Some).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("a malformed message: {e}")))
}
