//! Isolates for WebAssembly components: the `ivm:isolate` WIT interface
//! (`guest-abi/wit/isolate.wit`, version 0.2.0) hosted with wasmtime, with its version 0.1.0
//! (`guest-abi/wit-0.1.0`) beside it for the guests built for that one.
//!
//! Any wasmtime embedder offers ivm isolates to its guests in a few lines:
//!
//! ```no_run
//! use ivm::component::{CompileCache, GuestIsolates, GuestLimits, IsolatesView};
//! use wasmtime::component::Linker;
//! use wasmtime::{Engine, Store};
//!
//! struct State { isolates: GuestIsolates }
//! impl IsolatesView for State {
//!     fn isolates(&mut self) -> &mut GuestIsolates { &mut self.isolates }
//! }
//!
//! let engine = Engine::default();
//! let mut linker = Linker::<State>::new(&engine);
//! ivm::component::add_to_linker(&mut linker)?;
//! // Compiled once, then loaded from a sealed artifact (~/.cache/ivm) on later starts.
//! let cache = CompileCache::open(CompileCache::default_dir().expect("HOME is set"))?;
//! let (component, _) = cache.compile(&engine, &std::fs::read("guest.wasm")?)?;
//! let limits = GuestLimits::default().max_isolates(4).memory_budget_mb(512);
//! let mut store = Store::new(&engine, State { isolates: GuestIsolates::new(limits) });
//! // ... instantiate `component` with `linker` and call it ...
//! drop(store); // every isolate the guest still held is disposed
//! # Ok::<(), wasmtime::Error>(())
//! ```
//!
//! Failures are values (`result<_, error>`), never traps: a trap would poison the guest's whole
//! store. Because wasmtime cannot enter a guest that is inside one of its own calls,
//! JavaScript calls guest functions through *tasks*: `eval-task` runs the code as an async
//! operation of the isolate, and each call of a guest function suspends it and comes back to
//! the guest as a `step::call` from `task.resume`, answered by the next `resume`. While it
//! answers, the guest may make synchronous calls on the task's isolate too (the call waits
//! outside the isolate).
//!
//! A guest's isolates live in the host process, or in worker processes with
//! [`GuestLimits::isolation`] (or `IVM_ISOLATION=process`), behind the same interface.
//!
//! Debugging and profiling (inspector sessions, the CPU profiler, heap snapshots) are offered
//! to guests only when [`GuestLimits::debugging`] allows them.

/// `?` for the inner, guest-visible result (here and in the submodules).
macro_rules! guest {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return Ok(Err(wit::Error::from(e))),
        }
    };
}

mod cache;
mod debug;
mod module_hooks;
mod run;
mod snapshot;
mod v0_1;

use std::sync::{Arc, Weak, mpsc};
use std::time::Duration;

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

use crate::data::CachedData;
use crate::context::Context;
use crate::data::{CompileOptions, ImportRequest, ScriptOrigin, Transfer};
use crate::external_copy::{CopyIntoOptions, ExternalCopy, ExternalCopyOptions};
use crate::inspector::{InspectorSession, PausesHeld};
use crate::isolate::{Isolate, IsolateOptions};
use crate::module::Module;
use crate::reference::Reference;
use crate::script::Script;
use crate::transfer::{Transferable, Transferred};
use crate::value::{Value, msgpack};
use crate::isolate::Operation;
use crate::{Callback, EvalOptions, Isolation};

pub use cache::{CacheUse, CompileCache};
pub use run::{GuestProgram, GuestRun, Output};

pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../guest-abi/wit",
        world: "host",
        imports: { default: trappable },
        with: {
            "ivm:isolate/types.isolate": super::GuestIsolate,
            "ivm:isolate/types.context": crate::Context,
            "ivm:isolate/types.script": crate::Script,
            "ivm:isolate/types.module": crate::Module,
            "ivm:isolate/types.reference": crate::Reference,
            "ivm:isolate/types.external-copy": crate::ExternalCopy,
            "ivm:isolate/types.task": super::Task,
            "ivm:isolate/types.inspector-session": super::debug::GuestSession,
            "ivm:isolate/types.heap-snapshot-stream": super::debug::HeapSnapshotStream,
            "ivm:isolate/types.snapshot": crate::Snapshot,
        },
    });
}

use bindings::ivm::isolate::types as wit;

/// What a host allows one guest (one store).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct GuestLimits {
    /// Isolates the guest may hold at once.
    pub max_isolates: usize,
    /// The sum of the memory limits of the guest's live isolates and the sizes of the external
    /// copies it holds (each handle counting its copy), in MB.
    pub memory_budget_mb: u64,
    /// The timeout of runs that set none. `None`: no limit.
    pub default_timeout: Option<Duration>,
    /// The CPU-time limit of runs that set none (`run-options.cpu-limit-ms`). `None`: no limit.
    pub default_cpu_limit: Option<Duration>,
    /// Where the guest's isolates live. `None`: as [`IsolateOptions::isolation`] decides
    /// when unset (`IVM_ISOLATION`, else in process).
    pub isolation: Option<Isolation>,
    /// Whether the guest may debug and profile its isolates (inspector sessions, the CPU
    /// profiler, heap snapshots). Default `false`: they show the guest only its own isolates,
    /// but cost host memory beyond the isolates' limits (profiles, snapshots and unread
    /// session output, each bounded by the heap or 64 MB per session). A pause never waits
    /// for a guest that is inside a call (see `inspector-session` in the WIT), but what a
    /// debugger evaluates while a run is paused has no time limit and cannot be stopped (see
    /// [`InspectorSession`]): allow it to guests trusted with the
    /// host's threads.
    pub debugging: bool,
    /// The key the guest's startup snapshots are sealed with. `None`: this process's own
    /// ([`CacheKey::for_this_process`](crate::CacheKey::for_this_process)), so a sealed
    /// snapshot the guest keeps opens only in this process.
    pub snapshot_key: Option<crate::CacheKey>,
}

impl Default for GuestLimits {
    fn default() -> Self {
        GuestLimits {
            max_isolates: 16,
            memory_budget_mb: 2048,
            default_timeout: Some(Duration::from_secs(30)),
            default_cpu_limit: None,
            isolation: None,
            debugging: false,
            snapshot_key: None,
        }
    }
}

impl GuestLimits {
    /// Sets how many isolates the guest may hold.
    pub fn max_isolates(mut self, n: usize) -> Self {
        self.max_isolates = n;
        self
    }
    /// Sets the sum of memory limits the guest's isolates may have.
    pub fn memory_budget_mb(mut self, mb: u64) -> Self {
        self.memory_budget_mb = mb;
        self
    }
    /// Sets the timeout of runs that set none.
    pub fn default_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.default_timeout = timeout;
        self
    }
    /// Sets the CPU-time limit of runs that set none.
    pub fn default_cpu_limit(mut self, limit: Option<Duration>) -> Self {
        self.default_cpu_limit = limit;
        self
    }
    /// Puts the guest's isolates in this process or in worker processes (a guest that
    /// crashes V8 then takes only its worker down, and the guest sees `disposed` errors).
    pub fn isolation(mut self, isolation: Isolation) -> Self {
        self.isolation = Some(isolation);
        self
    }
    /// Lets the guest debug and profile its isolates (see [`debugging`](Self::debugging)).
    pub fn debugging(mut self, allow: bool) -> Self {
        self.debugging = allow;
        self
    }
    /// Seals the guest's snapshots with `key` (see [`snapshot_key`](Self::snapshot_key)).
    pub fn snapshot_key(mut self, key: crate::CacheKey) -> Self {
        self.snapshot_key = Some(key);
        self
    }
}

/// The isolates of one guest: what the `ivm:isolate` host functions work on. Put one in each
/// store's data and expose it with [`IsolatesView`]. Dropping it (with the store) disposes
/// every isolate the guest still holds.
pub struct GuestIsolates {
    table: ResourceTable,
    limits: GuestLimits,
    /// Every isolate the guest made, with its memory limit, for the limits and for disposal.
    isolates: Vec<(Isolate, u64)>,
    /// Bytes of the external copies and snapshots the guest holds (each handle counts its
    /// copy's size: they count against its memory budget with its isolates).
    copies: u64,
    /// The guest's inspector sessions, by isolate (see [`GuestIsolates::waiting_on`]).
    sessions: Vec<(Isolate, Weak<InspectorSession>)>,
    /// The heap snapshot streams not read to their end, by isolate.
    snapshots: Vec<(Isolate, Weak<()>)>,
}

impl std::fmt::Debug for GuestIsolates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestIsolates").field("limits", &self.limits).field("isolates", &self.isolates.len()).finish_non_exhaustive()
    }
}

impl GuestIsolates {
    /// No isolates yet, under `limits`.
    pub fn new(limits: GuestLimits) -> GuestIsolates {
        GuestIsolates { table: ResourceTable::new(), limits, isolates: Vec::new(), copies: 0, sessions: Vec::new(), snapshots: Vec::new() }
    }

    /// The isolates the guest made that are not disposed (e.g. to watch them).
    pub fn live(&self) -> Vec<Isolate> {
        self.isolates.iter().map(|(i, _)| i.clone()).filter(|i| !i.is_disposed()).collect()
    }
}

impl Drop for GuestIsolates {
    fn drop(&mut self) {
        for (isolate, _) in &self.isolates {
            let _ = isolate.dispose();
        }
    }
}

/// Gives the `ivm:isolate` host functions the store's [`GuestIsolates`].
pub trait IsolatesView: Send {
    /// The guest's isolates.
    fn isolates(&mut self) -> &mut GuestIsolates;
}

struct HasIsolates;

impl HasData for HasIsolates {
    type Data<'a> = &'a mut GuestIsolates;
}

/// Adds the `ivm:isolate/types` interface to `linker`, in versions 0.2.0 and 0.1.0.
pub fn add_to_linker<T: IsolatesView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, HasIsolates>(linker, |state| state.isolates())?;
    v0_1::add_to_linker::<T, HasIsolates>(linker, |state| state.isolates())
}

/// An isolate resource, with its unhandled rejections not yet taken; dropping it disposes
/// the isolate.
pub struct GuestIsolate(Isolate, Arc<Rejections>);

/// The unhandled rejections of a guest's isolate, until the guest takes them.
struct Rejections(crate::sync::Mutex<wit::UnhandledRejections>);

impl Default for Rejections {
    fn default() -> Self {
        Rejections(crate::sync::Mutex::new(wit::UnhandledRejections { reports: Vec::new(), dropped: 0 }))
    }
}

impl Rejections {
    /// How many reports are kept, and how many bytes of each text: a guest that never takes
    /// them must not make the host hold much (a report's text can be as large as its isolate's
    /// heap, and one string rejected over and over is copied each time).
    const KEPT: usize = 64;
    const TEXT: usize = 16 << 10;

    fn report(&self, error: crate::JsError) {
        let mut held = self.0.lock();
        if held.reports.len() < Self::KEPT {
            let mut report = js_error(error);
            // Cut so that the text with its `…` fits.
            for text in [&mut report.name, &mut report.message].into_iter().chain(report.stack.as_mut()) {
                if text.len() > Self::TEXT {
                    crate::exception::cut(text, Self::TEXT - '…'.len_utf8());
                }
            }
            held.reports.push(report);
        } else {
            held.dropped += 1;
        }
    }

    fn take(&self) -> wit::UnhandledRejections {
        let mut held = self.0.lock();
        wit::UnhandledRejections { reports: std::mem::take(&mut held.reports), dropped: std::mem::take(&mut held.dropped) }
    }
}

/// The caller tag of a task's run: where the questions its JavaScript asks the guest (calls of
/// guest functions, module hooks) go.
struct TaskLine(mpsc::Sender<Event>);

/// Where the guest's answer to a question of a task's run goes.
type Reply<T> = oneshot::Sender<Result<T, crate::JsError>>;

/// What a task's run reports to the guest.
enum Event {
    /// JavaScript called guest function `id`; the reply goes back on `reply`.
    Call { id: u32, args: Vec<Value>, reply: Reply<Value> },
    /// JavaScript imports a module (see `module_hooks`).
    Import { request: ImportRequest, referrer: String, reply: Reply<Module> },
    /// A module's `import.meta` is being filled.
    Meta { filename: String, reply: Reply<Value> },
    Done(crate::Result<Transferred>),
    /// The run could not start (its arguments were wrong).
    Failed(wit::Error),
}

/// A task resource: a run that may call the guest.
pub struct Task {
    events: mpsc::Receiver<Event>,
    /// The question the guest is answering.
    pending: Option<Pending>,
    done: bool,
    /// The isolate it runs in (none for a task that could not start).
    isolate: Option<Isolate>,
}

type Host<T> = wasmtime::Result<Result<T, wit::Error>>;

impl From<crate::Error> for wit::Error {
    fn from(e: crate::Error) -> wit::Error {
        use crate::Error as E;
        match e {
            E::Exception(e) => wit::Error::Exception(js_error(*e)),
            // With no frames, the stack's first line alone (as in the WIT's promise).
            E::Timeout { stack } => wit::Error::Timeout(if stack.is_empty() { format!("Error: {}", crate::TIMEOUT_MESSAGE) } else { stack }),
            E::CpuLimit { stack } => wit::Error::CpuLimit(if stack.is_empty() { format!("Error: {}", crate::CPU_LIMIT_MESSAGE) } else { stack }),
            E::MemoryLimit => wit::Error::MemoryLimit,
            E::Disposed { message } => wit::Error::Disposed(message),
            E::Abandoned => wit::Error::Abandoned,
            E::InvalidArgument(m) => wit::Error::InvalidArgument(m),
            E::Conversion(m) => wit::Error::Conversion(m),
            // The isolate's worker process died (the guest's isolates may live in workers): it is gone.
            E::WorkerCrashed { reason } => wit::Error::Disposed(reason),
            // A kind added to ivm after this interface version: its message, as a host error.
            other => wit::Error::InvalidArgument(other.to_string()),
        }
    }
}

fn js_error(e: crate::JsError) -> wit::JsError {
    wit::JsError { name: e.name, message: e.message, stack: e.stack }
}

impl GuestIsolates {
    fn run_options(&self, options: wit::RunOptions) -> EvalOptions {
        let mut eval = EvalOptions::default().transfer(transfer(options.transfer));
        eval.timeout = options.timeout_ms.map(|ms| Duration::from_millis(ms.into())).or(self.limits.default_timeout);
        eval.cpu_limit = options.cpu_limit_ms.map(|ms| Duration::from_millis(ms.into())).or(self.limits.default_cpu_limit);
        eval.promise = options.promise;
        eval
    }

    /// A guest value on its way into an isolate. Handles in it are given away.
    fn take_in(&mut self, value: wit::Value) -> wasmtime::Result<Result<Transferable, wit::Error>> {
        Ok(Ok(match value {
            wit::Value::Reference(r) => Transferable::from(self.table.delete(r)?),
            wit::Value::ExternalCopy(c) => Transferable::from(self.take_copy(c)?),
            wit::Value::TransferIn(c) => self.take_copy(c)?.copy_into(CopyIntoOptions::default().transfer_in()),
            data => match data_of(data) {
                Ok(v) => Transferred::Value(v).into(),
                Err(e) => return Ok(Err(e)),
            },
        }))
    }

    /// A guest value as data (an external copy is copied out; a reference cannot be).
    fn data(&mut self, value: wit::Value) -> wasmtime::Result<Result<Value, wit::Error>> {
        Ok(match value {
            wit::Value::Reference(r) => {
                self.table.delete(r)?;
                Err(wit::Error::InvalidArgument("a reference cannot be used here: only data".into()))
            }
            wit::Value::ExternalCopy(c) | wit::Value::TransferIn(c) => self.take_copy(c)?.copy::<Value>().map_err(wit::Error::from),
            data => data_of(data),
        })
    }

    fn args(&mut self, values: Vec<wit::Value>) -> wasmtime::Result<Result<Vec<Transferable>, wit::Error>> {
        let mut args = Vec::with_capacity(values.len());
        for value in values {
            match self.take_in(value)? {
                Ok(arg) => args.push(arg),
                Err(e) => return Ok(Err(e)),
            }
        }
        Ok(Ok(args))
    }

    /// A result on its way to the guest.
    fn give_out(&mut self, result: crate::Result<Transferred>) -> Host<wit::Value> {
        Ok(match result {
            Ok(Transferred::Value(v)) => guest_value(v),
            Ok(Transferred::Reference(r)) => Ok(wit::Value::Reference(self.table.push(r)?)),
            Ok(Transferred::ExternalCopy(c)) => self.hold_copy(c)?.map(wit::Value::ExternalCopy),
            Err(e) => Err(e.into()),
        })
    }

    /// Memory the guest holds, in bytes: its isolates' limits and its external copies.
    fn used_bytes(&self) -> u64 {
        self.isolates.iter().map(|(_, mb)| mb << 20).sum::<u64>() + self.copies
    }

    /// Gives the guest a handle to `copy`, within its memory budget.
    fn hold_copy(&mut self, copy: ExternalCopy) -> Host<Resource<ExternalCopy>> {
        if let Err(e) = self.charge(copy.size() as u64, "an external copy") {
            return Ok(Err(e));
        }
        Ok(Ok(self.table.push(copy)?))
    }

    /// Counts `size` bytes more that the guest holds (`what`) against its memory budget.
    fn charge(&mut self, size: u64, what: &str) -> Result<(), wit::Error> {
        self.isolates.retain(|(isolate, _)| !isolate.is_disposed());
        let used = self.used_bytes();
        if used + size > self.limits.memory_budget_mb << 20 {
            return Err(wit::Error::Limit(format!(
                "{what} of {size} bytes would take this guest to {} MB, over its budget of {} MB",
                (used + size) >> 20,
                self.limits.memory_budget_mb
            )));
        }
        self.copies += size;
        Ok(())
    }

    /// Checks that `mb` more of memory limits fit the guest's budget (`what` needs them).
    fn fits(&mut self, mb: u64, what: &str) -> Result<(), wit::Error> {
        self.isolates.retain(|(isolate, _)| !isolate.is_disposed());
        let used = self.used_bytes() >> 20;
        if used + mb > self.limits.memory_budget_mb {
            return Err(wit::Error::Limit(format!(
                "{what} of {mb} MB would take this guest's isolates and copies to {} MB, over its budget of {} MB",
                used + mb,
                self.limits.memory_budget_mb
            )));
        }
        Ok(())
    }

    /// Makes an isolate for the guest, within its limits.
    fn new_isolate(&mut self, options: wit::IsolateOptions, snapshot: Option<crate::Snapshot>) -> Host<Resource<GuestIsolate>> {
        let mb = if options.memory_limit_mb == 0 { 128 } else { u64::from(options.memory_limit_mb) };
        self.isolates.retain(|(isolate, _)| !isolate.is_disposed());
        if self.isolates.len() >= self.limits.max_isolates {
            return Ok(Err(wit::Error::Limit(format!("this guest may hold at most {} isolates", self.limits.max_isolates))));
        }
        if let Err(e) = self.fits(mb, "an isolate") {
            return Ok(Err(e));
        }
        if options.inspector
            && let Err(e) = self.may_debug()
        {
            return Ok(Err(e));
        }
        let cpu_budget = options.cpu_budget_ms.map(|ms| Duration::from_millis(ms.into()));
        let rejections = Arc::new(Rejections::default());
        let reported = rejections.clone();
        let mut options = IsolateOptions { inspector: options.inspector, snapshot, cpu_budget, ..IsolateOptions::default().memory_limit(mb) }
            .on_unhandled_rejection(move |error| reported.report(error));
        options.isolation = self.limits.isolation;
        let isolate = guest!(Isolate::new(options));
        self.isolates.push((isolate.clone(), mb));
        Ok(Ok(self.table.push(GuestIsolate(isolate, rejections))?))
    }

    /// Takes the guest's handle to an external copy.
    fn take_copy(&mut self, handle: Resource<ExternalCopy>) -> wasmtime::Result<ExternalCopy> {
        let copy = self.table.delete(handle)?;
        self.copies = self.copies.saturating_sub(copy.size() as u64);
        Ok(copy)
    }
}

/// The longest `task.resume` wait during which a task's run may pause (see the WIT's
/// `inspector-session`).
const MAX_SERVED_WAIT_MS: u32 = 1000;

/// A resource whose calls wait on an isolate.
pub(super) trait IsolateResource: 'static {
    fn isolate(&self) -> &Isolate;
}

impl IsolateResource for GuestIsolate {
    fn isolate(&self) -> &Isolate {
        &self.0
    }
}

macro_rules! on_isolate {
    ($($resource:ty),*) => {$(
        impl IsolateResource for $resource {
            fn isolate(&self) -> &Isolate {
                <$resource>::isolate(self)
            }
        }
    )*};
}

on_isolate!(Context, Script, Module, Reference);

impl GuestIsolates {
    /// The resource behind `handle`, for a call that waits on its isolate, with the isolate's
    /// pauses held off meanwhile if the guest has inspector sessions there: the guest serves
    /// its sessions between its calls, so a run paused while it waits inside one would wait
    /// for it forever. The pause ends, and none begins, until the call returns.
    pub(super) fn waiting_on<R: IsolateResource>(&self, handle: &Resource<R>) -> wasmtime::Result<(&R, Option<PausesHeld>)> {
        let resource = self.table.get(handle)?;
        let held = self.hold_pauses(resource.isolate());
        Ok((resource, held))
    }

    /// Holds off pauses of `isolate` if the guest has inspector sessions there.
    pub(super) fn hold_pauses(&self, isolate: &Isolate) -> Option<PausesHeld> {
        self.sessions.iter().filter(|(on, _)| on.same(isolate)).find_map(|(_, session)| Some(session.upgrade()?.hold_pauses()))
    }
}

/// The data variants of a guest value.
fn data_of(value: wit::Value) -> Result<Value, wit::Error> {
    use wit::Value as V;
    Ok(match value {
        V::Undefined => Value::Undefined,
        V::Null => Value::Null,
        V::Boolean(b) => Value::Bool(b),
        V::Number(n) => Value::Number(n),
        V::Bigint(text) => Value::BigInt(text.parse().map_err(|_| wit::Error::InvalidArgument(format!("'{text}' is not a decimal BigInt")))?),
        V::String(s) => Value::String(s),
        V::Bytes(b) => Value::Bytes(b),
        V::Msgpack(bytes) => msgpack::from_msgpack(&bytes)?,
        V::Reference(_) | V::ExternalCopy(_) | V::TransferIn(_) => unreachable!("handles are taken out by the callers"),
    })
}

/// Data as a guest value: primitives as themselves, anything else as MessagePack.
fn guest_value(value: Value) -> Result<wit::Value, wit::Error> {
    use wit::Value as V;
    Ok(match value {
        Value::Undefined => V::Undefined,
        Value::Null => V::Null,
        Value::Bool(b) => V::Boolean(b),
        Value::Number(n) => V::Number(n),
        Value::BigInt(b) => V::Bigint(b.to_string()),
        Value::String(s) => V::String(s),
        Value::Bytes(b) => V::Bytes(b),
        other => V::Msgpack(msgpack::to_msgpack(&other)?),
    })
}

fn transfer(t: wit::Transfer) -> Transfer {
    match t {
        wit::Transfer::Auto => Transfer::Auto,
        wit::Transfer::Copy => Transfer::Copy,
        wit::Transfer::ExternalCopy => Transfer::ExternalCopy,
        wit::Transfer::Reference => Transfer::Reference,
    }
}

fn compile_options(options: wit::CompileOptions) -> CompileOptions {
    let mut compile = match options.origin {
        Some(o) => CompileOptions::origin(ScriptOrigin::new(o.filename).offsets(o.line_offset, o.column_offset)),
        None => CompileOptions::default(),
    };
    compile.cached_data = options.cached_data.map(CachedData::from_bytes);
    compile.produce_cached_data = options.produce_cached_data;
    compile
}

impl wit::Host for GuestIsolates {}

impl wit::HostIsolate for GuestIsolates {
    fn create(&mut self, options: wit::IsolateOptions) -> Host<Resource<GuestIsolate>> {
        self.new_isolate(options, None)
    }

    fn create_from_snapshot(&mut self, options: wit::IsolateOptions, snapshot: Resource<crate::Snapshot>) -> Host<Resource<GuestIsolate>> {
        let snapshot = self.table.get(&snapshot)?.clone();
        self.new_isolate(options, Some(snapshot))
    }

    fn create_context(&mut self, this: Resource<GuestIsolate>, options: wit::ContextOptions) -> Host<Resource<Context>> {
        let (GuestIsolate(isolate, _), _held) = self.waiting_on(&this)?;
        let mut context_options = crate::ContextOptions::default();
        if let Some(name) = options.name {
            context_options = context_options.name(name);
        }
        let context = guest!(isolate.create_context_with(context_options));
        Ok(Ok(self.table.push(context)?))
    }

    fn compile_script(&mut self, this: Resource<GuestIsolate>, code: String, options: wit::CompileOptions) -> Host<Resource<Script>> {
        let (GuestIsolate(isolate, _), _held) = self.waiting_on(&this)?;
        let script = guest!(isolate.compile_script(&code, &compile_options(options)));
        Ok(Ok(self.table.push(script)?))
    }

    fn compile_module(&mut self, this: Resource<GuestIsolate>, code: String, options: wit::CompileOptions) -> Host<Resource<Module>> {
        let (GuestIsolate(isolate, _), _held) = self.waiting_on(&this)?;
        let module = guest!(isolate.compile_module(&code, &compile_options(options)));
        Ok(Ok(self.table.push(module)?))
    }

    fn json_module(&mut self, this: Resource<GuestIsolate>, name: String, json: String) -> Host<Resource<Module>> {
        let (GuestIsolate(isolate, _), _held) = self.waiting_on(&this)?;
        let module = guest!(isolate.json_module(&name, &json));
        Ok(Ok(self.table.push(module)?))
    }

    fn data_module(&mut self, this: Resource<GuestIsolate>, name: String, exports: Vec<(String, wit::Value)>) -> Host<Resource<Module>> {
        let mut map = Vec::with_capacity(exports.len());
        for (export, value) in exports {
            map.push((export, guest!(self.data(value)?)));
        }
        let (GuestIsolate(isolate, _), _held) = self.waiting_on(&this)?;
        let module = guest!(isolate.data_module(&name, Value::Object(map.into_iter().collect())));
        Ok(Ok(self.table.push(module)?))
    }

    fn enable_module_hooks(&mut self, this: Resource<GuestIsolate>, hooks: wit::ModuleHooks) -> Host<()> {
        let (GuestIsolate(isolate, _), _held) = self.waiting_on(&this)?;
        guest!(module_hooks::enable(isolate, hooks));
        Ok(Ok(()))
    }

    fn unhandled_rejections(&mut self, this: Resource<GuestIsolate>) -> wasmtime::Result<wit::UnhandledRejections> {
        Ok(self.table.get(&this)?.1.take())
    }

    fn heap_statistics(&mut self, this: Resource<GuestIsolate>) -> Host<wit::HeapStatistics> {
        let (GuestIsolate(isolate, _), _held) = self.waiting_on(&this)?;
        let s = guest!(isolate.heap_statistics());
        Ok(Ok(wit::HeapStatistics {
            total_heap_size: s.total_heap_size as u64,
            total_physical_size: s.total_physical_size as u64,
            used_heap_size: s.used_heap_size as u64,
            heap_size_limit: s.heap_size_limit as u64,
            malloced_memory: s.malloced_memory as u64,
            externally_allocated_size: s.externally_allocated_size as u64,
        }))
    }

    fn cpu_time_ns(&mut self, this: Resource<GuestIsolate>) -> Host<u64> {
        Ok(Ok(guest!(self.table.get(&this)?.0.cpu_time()).as_nanos() as u64))
    }

    fn wall_time_ns(&mut self, this: Resource<GuestIsolate>) -> Host<u64> {
        Ok(Ok(guest!(self.table.get(&this)?.0.wall_time()).as_nanos() as u64))
    }

    fn is_disposed(&mut self, this: Resource<GuestIsolate>) -> wasmtime::Result<bool> {
        Ok(self.table.get(&this)?.0.is_disposed())
    }

    fn dispose(&mut self, this: Resource<GuestIsolate>) -> Host<()> {
        guest!(self.table.get(&this)?.0.dispose());
        Ok(Ok(()))
    }

    fn reference_count(&mut self, this: Resource<GuestIsolate>) -> Host<u64> {
        Ok(Ok(guest!(self.table.get(&this)?.0.reference_count()) as u64))
    }

    fn start_cpu_profiler(&mut self, this: Resource<GuestIsolate>, title: String) -> Host<()> {
        self.start_profile(this, title)
    }

    fn stop_cpu_profiler(&mut self, this: Resource<GuestIsolate>, title: String) -> Host<Vec<wit::ThreadCpuProfile>> {
        self.stop_profile(this, title)
    }

    fn take_heap_snapshot(&mut self, this: Resource<GuestIsolate>) -> Host<Resource<debug::HeapSnapshotStream>> {
        self.heap_snapshot(this)
    }

    fn inspector_session(&mut self, this: Resource<GuestIsolate>) -> Host<Resource<debug::GuestSession>> {
        self.connect_session(this)
    }

    fn drop(&mut self, this: Resource<GuestIsolate>) -> wasmtime::Result<()> {
        let GuestIsolate(isolate, _) = self.table.delete(this)?;
        // Already disposed is fine: dropping is how a guest lets go either way.
        let _ = isolate.dispose();
        Ok(())
    }
}

impl wit::HostContext for GuestIsolates {
    fn global(&mut self, this: Resource<Context>) -> Host<Resource<Reference>> {
        let (context, _held) = self.waiting_on(&this)?;
        let global = guest!(context.global());
        Ok(Ok(self.table.push(global)?))
    }

    fn eval(&mut self, this: Resource<Context>, code: String, options: wit::RunOptions) -> Host<wit::Value> {
        let options = self.run_options(options);
        let (context, _held) = self.waiting_on(&this)?;
        let result = context.eval_with::<Transferred>(&code, &options);
        self.give_out(result)
    }

    fn eval_closure(&mut self, this: Resource<Context>, code: String, args: Vec<wit::Value>, options: wit::RunOptions) -> Host<wit::Value> {
        let args = match self.args(args)? {
            Ok(args) => args,
            Err(e) => return Ok(Err(e)),
        };
        let options = self.run_options(options);
        let (context, _held) = self.waiting_on(&this)?;
        let result = context.eval_closure::<Transferred>(&code, args, &options);
        self.give_out(result)
    }

    fn eval_task(&mut self, this: Resource<Context>, code: String, options: wit::RunOptions) -> wasmtime::Result<Resource<Task>> {
        let options = self.run_options(options);
        let context = self.table.get(&this)?;
        let task = Task::start(context.isolate(), || context.eval_async::<Transferred>(code, options));
        Ok(self.table.push(task)?)
    }

    fn callback(&mut self, this: Resource<Context>, id: u32, name: String) -> Host<Resource<Reference>> {
        let function = Callback::new_blocking(move |args: Value| {
            // Called from a task's run (in process or in a worker): the run's tag says which.
            let task = crate::callback::caller_tag().and_then(|tag| tag.downcast::<TaskLine>().ok());
            async move { call_guest(task, id, args).await }
        })
        .name(name);
        // The function, made in the context, as a reference.
        let (context, _held) = self.waiting_on(&this)?;
        let made = guest!(context.eval_closure::<Reference>("return $0", (function,), &Default::default()));
        Ok(Ok(self.table.push(made)?))
    }

    fn drop(&mut self, this: Resource<Context>) -> wasmtime::Result<()> {
        self.table.delete(this)?.release();
        Ok(())
    }
}

/// A call of guest function `id` from JavaScript: handed to the task whose run made it,
/// answered by the guest's next `resume`.
async fn call_guest(task: Option<Arc<TaskLine>>, id: u32, args: Value) -> crate::Result<Value> {
    let args = match args {
        Value::Array(args) => args,
        other => vec![other],
    };
    answered(send_to_guest(task, "A guest function was called", |reply| Event::Call { id, args, reply })?).await
}

/// Hands the question `event` makes to the task of the run that asks (`what` it did, for the
/// error outside a task); the guest's answer comes on the receiver.
fn send_to_guest<T>(task: Option<Arc<TaskLine>>, what: &str, event: impl FnOnce(Reply<T>) -> Event) -> crate::Result<oneshot::Receiver<Result<T, crate::JsError>>> {
    let task = task.ok_or_else(|| crate::Error::js("TypeError", format!("{what} outside a task (use eval-task or apply-task)")))?;
    let (reply, answer) = oneshot::channel();
    task.0.send(event(reply)).map_err(|_| crate::Error::js("Error", "The guest dropped the task"))?;
    Ok(answer)
}

/// The guest's answer, as JavaScript gets it.
async fn answered<T>(answer: oneshot::Receiver<Result<T, crate::JsError>>) -> crate::Result<T> {
    match answer.await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(crate::Error::Exception(Box::new(e))),
        Err(_) => Err(crate::Error::js("Error", "The guest dropped the task without answering")),
    }
}

/// A question of a task's run that the guest is answering.
enum Pending {
    /// A guest function's call or `import.meta`: answered by `resume`.
    Value(Reply<Value>),
    /// An `import()`: answered by `resume-import`.
    Module(Reply<Module>),
}

/// The guest's answer, from `resume` or `resume-import`.
enum Answer {
    Value(Result<Value, crate::JsError>),
    Module(Result<Module, crate::JsError>),
}

impl Pending {
    fn answer(self, answer: Answer) {
        let mismatch = |message: &str| crate::JsError { name: "TypeError".into(), message: message.into(), ..Default::default() };
        // A run that stopped waiting (it timed out) no longer takes answers.
        match (self, answer) {
            (Pending::Value(reply), Answer::Value(value)) => drop(reply.send(value)),
            (Pending::Module(reply), Answer::Module(module)) => drop(reply.send(module)),
            (Pending::Value(reply), Answer::Module(_)) => drop(reply.send(Err(mismatch("The guest answered with a module where a value was asked")))),
            (Pending::Module(reply), Answer::Value(_)) => drop(reply.send(Err(mismatch("The guest answered import() with a value (use resume-import)")))),
        }
    }
}

impl Task {
    /// Starts the async operation `submit` makes in `isolate`, tagged so that what its
    /// JavaScript asks the guest (guest-function calls, module hooks) comes to the new task.
    fn start(isolate: &Isolate, submit: impl FnOnce() -> Operation<Transferred>) -> Task {
        let (events, receiver) = mpsc::channel();
        let done = events.clone();
        let tag: crate::callback::CallerTag = Arc::new(TaskLine(events));
        let operation = crate::callback::with_caller_tag(Some(tag), submit);
        crate::engine::tasks::spawn(async move {
            let _ = done.send(Event::Done(operation.await));
        });
        Task { events: receiver, pending: None, done: false, isolate: Some(isolate.clone()) }
    }
}

impl Task {
    /// The run is over. A guest-function call from a worker can arrive after its run ended
    /// (the run timed out or its worker died meanwhile): closing the line fails such calls at
    /// once instead of leaving them waiting for a `resume` that will not come.
    fn finish(&mut self) {
        self.done = true;
        self.events = mpsc::channel().1;
    }

    /// A task that failed before it could start.
    fn failed(error: wit::Error) -> Task {
        let (events, receiver) = mpsc::channel();
        let _ = events.send(Event::Failed(error));
        Task { events: receiver, pending: None, done: false, isolate: None }
    }
}

impl wit::HostTask for GuestIsolates {
    fn resume(&mut self, this: Resource<Task>, reply: Option<Result<wit::Value, wit::JsError>>, wait_ms: Option<u32>) -> wasmtime::Result<wit::Step> {
        let answer = match reply {
            None => None,
            Some(Ok(value)) => Some(Answer::Value(self.data(value)?.map_err(|e| thrown(&e)))),
            Some(Err(e)) => Some(Answer::Value(Err(js_exception(e)))),
        };
        self.step(this, answer, wait_ms)
    }

    fn resume_import(&mut self, this: Resource<Task>, reply: Result<Resource<Module>, wit::JsError>, wait_ms: Option<u32>) -> wasmtime::Result<wit::Step> {
        let answer = match reply {
            Ok(module) => Answer::Module(Ok(self.table.get(&module)?.clone())),
            Err(e) => Answer::Module(Err(js_exception(e))),
        };
        self.step(this, Some(answer), wait_ms)
    }

    fn drop(&mut self, this: Resource<Task>) -> wasmtime::Result<()> {
        // A pending call fails (its reply sender drops); the run finishes on its own.
        self.table.delete(this)?;
        Ok(())
    }
}

/// An exception from the guest, to throw in JavaScript.
fn js_exception(e: wit::JsError) -> crate::JsError {
    crate::JsError { name: e.name, message: e.message, stack: e.stack, ..Default::default() }
}

impl GuestIsolates {
    /// `resume` and `resume-import`: hands the guest's `answer` to the question it answers,
    /// then waits for the next question or the end.
    fn step(&mut self, this: Resource<Task>, mut answer: Option<Answer>, wait_ms: Option<u32>) -> wasmtime::Result<wit::Step> {
        // Waiting without a limit (or a long one), the guest cannot serve a pause (see
        // `waiting_on`).
        let _held = match (wait_ms, &self.table.get(&this)?.isolate) {
            (Some(ms), _) if ms <= MAX_SERVED_WAIT_MS => None,
            (_, Some(isolate)) => self.hold_pauses(isolate),
            (_, None) => None,
        };
        loop {
            let task = self.table.get_mut(&this)?;
            if task.done {
                return Ok(wit::Step::Done(Err(wit::Error::InvalidArgument("the task is done".into()))));
            }
            if let (Some(pending), Some(answer)) = (task.pending.take(), answer.take()) {
                pending.answer(answer);
            }
            let event = match wait_ms {
                None => task.events.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
                Some(ms) => task.events.recv_timeout(Duration::from_millis(ms.into())),
            };
            let event = match event {
                Ok(event) => event,
                Err(mpsc::RecvTimeoutError::Timeout) => return Ok(wit::Step::Running),
                Err(mpsc::RecvTimeoutError::Disconnected) => Event::Done(Err(crate::Error::isolate_disposed())),
            };
            match event {
                Event::Call { id, args, reply } => match args.into_iter().map(guest_value).collect::<Result<Vec<_>, _>>() {
                    Ok(args) => {
                        task.pending = Some(Pending::Value(reply));
                        return Ok(wit::Step::Call(wit::Invocation { id, args }));
                    }
                    // Arguments the guest cannot receive fail the call in JavaScript.
                    Err(e) => {
                        let _ = reply.send(Err(thrown(&e)));
                    }
                },
                Event::Import { request, referrer, reply } => {
                    task.pending = Some(Pending::Module(reply));
                    return Ok(wit::Step::Import(wit::ImportRequest { specifier: request.specifier, referrer, attributes: request.attributes }));
                }
                Event::Meta { filename, reply } => {
                    task.pending = Some(Pending::Value(reply));
                    return Ok(wit::Step::ImportMeta(filename));
                }
                Event::Done(result) => {
                    task.finish();
                    return Ok(wit::Step::Done(self.give_out(result)?));
                }
                Event::Failed(error) => {
                    task.finish();
                    return Ok(wit::Step::Done(Err(error)));
                }
            }
        }
    }
}

/// A guest-side failure as the exception JavaScript sees.
fn thrown(error: &wit::Error) -> crate::JsError {
    let (name, message) = match error {
        wit::Error::Exception(e) => return js_exception(e.clone()),
        wit::Error::InvalidArgument(m) | wit::Error::Conversion(m) | wit::Error::Limit(m) => ("TypeError", m.clone()),
        other => ("Error", format!("{other:?}")),
    };
    crate::JsError { name: name.into(), message, ..Default::default() }
}

impl wit::HostScript for GuestIsolates {
    fn run(&mut self, this: Resource<Script>, context: Resource<Context>, options: wit::RunOptions) -> Host<wit::Value> {
        let options = self.run_options(options);
        let context = self.table.get(&context)?.clone();
        let (script, _held) = self.waiting_on(&this)?;
        let result = script.run::<Transferred>(&context, &options);
        self.give_out(result)
    }

    fn cached_data(&mut self, this: Resource<Script>) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self.table.get(&this)?.cached_data().map(|c| c.as_bytes().to_vec()))
    }

    fn cached_data_rejected(&mut self, this: Resource<Script>) -> wasmtime::Result<Option<bool>> {
        Ok(self.table.get(&this)?.cached_data_rejected())
    }

    fn drop(&mut self, this: Resource<Script>) -> wasmtime::Result<()> {
        self.table.delete(this)?.release();
        Ok(())
    }
}

impl wit::HostModule for GuestIsolates {
    fn filename(&mut self, this: Resource<Module>) -> wasmtime::Result<String> {
        Ok(self.table.get(&this)?.filename().to_owned())
    }

    fn dependency_specifiers(&mut self, this: Resource<Module>) -> wasmtime::Result<Vec<String>> {
        Ok(self.table.get(&this)?.dependency_specifiers().into_iter().map(str::to_owned).collect())
    }

    fn instantiate(&mut self, this: Resource<Module>, context: Resource<Context>, links: Vec<(String, Resource<Module>)>) -> Host<()> {
        let context = self.table.get(&context)?.clone();
        let mut table = Vec::with_capacity(links.len());
        for (specifier, module) in links {
            table.push((specifier, self.table.get(&module)?.clone()));
        }
        let (module, _held) = self.waiting_on(&this)?;
        let resolve = |request: &ImportRequest, referrer: &Module| {
            table.iter().find(|(s, _)| *s == request.specifier).map(|(_, m)| m.clone()).ok_or_else(|| {
                crate::Error::js("Error", format!("Cannot resolve '{}' imported by {}: the guest linked no module for it", request.specifier, referrer.filename()))
            })
        };
        guest!(module.instantiate(&context, resolve));
        Ok(Ok(()))
    }

    fn evaluate(&mut self, this: Resource<Module>, options: wit::RunOptions) -> Host<()> {
        let options = self.run_options(options);
        let (module, _held) = self.waiting_on(&this)?;
        guest!(module.evaluate(&options));
        Ok(Ok(()))
    }

    fn namespace(&mut self, this: Resource<Module>) -> Host<Resource<Reference>> {
        let (module, _held) = self.waiting_on(&this)?;
        let namespace = guest!(module.namespace());
        Ok(Ok(self.table.push(namespace)?))
    }

    fn cached_data(&mut self, this: Resource<Module>) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self.table.get(&this)?.cached_data().map(|c| c.as_bytes().to_vec()))
    }

    fn cached_data_rejected(&mut self, this: Resource<Module>) -> wasmtime::Result<Option<bool>> {
        Ok(self.table.get(&this)?.cached_data_rejected())
    }

    fn drop(&mut self, this: Resource<Module>) -> wasmtime::Result<()> {
        self.table.delete(this)?.release();
        Ok(())
    }
}

impl wit::HostReference for GuestIsolates {
    fn type_of(&mut self, this: Resource<Reference>) -> wasmtime::Result<String> {
        Ok(self.table.get(&this)?.type_of().to_owned())
    }

    fn clone(&mut self, this: Resource<Reference>) -> wasmtime::Result<Resource<Reference>> {
        let copy = self.table.get(&this)?.clone();
        Ok(self.table.push(copy)?)
    }

    fn get(&mut self, this: Resource<Reference>, key: String, transfer: wit::Transfer) -> Host<wit::Value> {
        let (reference, _held) = self.waiting_on(&this)?;
        let result = match transfer {
            wit::Transfer::Auto => reference.get::<Transferred>(key),
            wit::Transfer::Copy => reference.get::<Value>(key).map(Transferred::Value),
            wit::Transfer::ExternalCopy => reference.get::<ExternalCopy>(key).map(Transferred::ExternalCopy),
            wit::Transfer::Reference => reference.get::<Reference>(key).map(Transferred::Reference),
        };
        self.give_out(result)
    }

    fn set(&mut self, this: Resource<Reference>, key: String, value: wit::Value) -> Host<()> {
        let value = match self.take_in(value)? {
            Ok(value) => value,
            Err(e) => return Ok(Err(e)),
        };
        let (reference, _held) = self.waiting_on(&this)?;
        guest!(reference.set(key, value));
        Ok(Ok(()))
    }

    fn delete(&mut self, this: Resource<Reference>, key: String) -> Host<()> {
        let (reference, _held) = self.waiting_on(&this)?;
        guest!(reference.delete(key));
        Ok(Ok(()))
    }

    fn apply(&mut self, this: Resource<Reference>, receiver: wit::Value, args: Vec<wit::Value>, options: wit::RunOptions) -> Host<wit::Value> {
        let (receiver, args) = match (self.take_in(receiver)?, self.args(args)?) {
            (Ok(receiver), Ok(args)) => (receiver, args),
            (Err(e), _) | (_, Err(e)) => return Ok(Err(e)),
        };
        let options = self.run_options(options);
        let (reference, _held) = self.waiting_on(&this)?;
        let result = reference.apply::<Transferred>(receiver, args, &options);
        self.give_out(result)
    }

    fn apply_task(&mut self, this: Resource<Reference>, receiver: wit::Value, args: Vec<wit::Value>, options: wit::RunOptions) -> wasmtime::Result<Resource<Task>> {
        let prepared = match (self.take_in(receiver)?, self.args(args)?) {
            (Ok(receiver), Ok(args)) => Ok((receiver, args)),
            (Err(e), _) | (_, Err(e)) => Err(e),
        };
        let options = self.run_options(options);
        let reference = self.table.get(&this)?;
        let task = match prepared {
            Ok((receiver, args)) => Task::start(reference.isolate(), || reference.apply_async::<Transferred>(receiver, args, options)),
            Err(e) => Task::failed(e),
        };
        Ok(self.table.push(task)?)
    }

    fn copy(&mut self, this: Resource<Reference>) -> Host<wit::Value> {
        let (reference, _held) = self.waiting_on(&this)?;
        let result = reference.copy::<Value>().map(Transferred::Value);
        self.give_out(result)
    }

    fn external_copy(&mut self, this: Resource<Reference>, options: wit::ExternalCopyOptions) -> Host<Resource<ExternalCopy>> {
        let mut copy_options = ExternalCopyOptions { transfer_out: options.transfer_out, ..Default::default() };
        for buffer in &options.transfer_list {
            copy_options = copy_options.transfer(self.table.get(buffer)?);
        }
        let (reference, _held) = self.waiting_on(&this)?;
        let copy = guest!(reference.external_copy(&copy_options));
        self.hold_copy(copy)
    }

    fn drop(&mut self, this: Resource<Reference>) -> wasmtime::Result<()> {
        self.table.delete(this)?.release();
        Ok(())
    }
}

impl wit::HostExternalCopy for GuestIsolates {
    fn create(&mut self, value: wit::Value) -> Host<Resource<ExternalCopy>> {
        let copy = match value {
            wit::Value::ExternalCopy(c) => self.take_copy(c)?,
            other => {
                let data = match self.data(other)? {
                    Ok(data) => data,
                    Err(e) => return Ok(Err(e)),
                };
                guest!(ExternalCopy::new(&data))
            }
        };
        self.hold_copy(copy)
    }

    fn copy(&mut self, this: Resource<ExternalCopy>) -> Host<wit::Value> {
        let result = self.table.get(&this)?.copy::<Value>().map(Transferred::Value);
        self.give_out(result)
    }

    fn clone(&mut self, this: Resource<ExternalCopy>) -> wasmtime::Result<Resource<ExternalCopy>> {
        let copy = self.table.get(&this)?.clone();
        // The interface gives `clone` no error to return: the guest holds the copy already, so
        // the clone is counted but not refused.
        self.copies += copy.size() as u64;
        Ok(self.table.push(copy)?)
    }

    fn size(&mut self, this: Resource<ExternalCopy>) -> wasmtime::Result<u64> {
        Ok(self.table.get(&this)?.size() as u64)
    }

    fn drop(&mut self, this: Resource<ExternalCopy>) -> wasmtime::Result<()> {
        // Other handles (clones) may still hold the copy; this one lets go.
        self.take_copy(this)?;
        Ok(())
    }
}
