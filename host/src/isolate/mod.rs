//! [`Isolate`]: one V8 heap with its own memory limit, in this process or in a worker process,
//! and its options. The handle dispatches each operation (`op.rs`) to the engine's state of an
//! in-process isolate (`inner.rs`) or to a worker (`process::RemoteIsolate`); `create.rs`
//! makes isolates.

mod clock;
pub(crate) use clock::Clock;
mod create;
mod inner;
pub(crate) mod inspector;
mod jobs;
pub(crate) mod memory;
pub(crate) mod nesting;
mod operation;
mod parked;
pub(crate) mod rejections;
mod tasks;

pub use inner::CatastrophicHandler;
pub(crate) use inner::{IsolateInner, Session, Slot};
pub use operation::Operation;

use std::sync::Arc;
use std::time::Duration;

use crate::code_cache::CacheKey;
use crate::data::HeapStatistics;
use crate::error::{Error, Result};
use crate::op::{InSession, IsolateOp, LocalWork};
use crate::process::protocol::{Op, Reply};
use crate::process::{Isolation, RemoteIsolate, WorkerPool};


/// Options for [`Isolate::new`].
///
/// ```
/// let isolate = ivm::Isolate::new(ivm::IsolateOptions::default().memory_limit(64)).unwrap();
/// # drop(isolate);
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct IsolateOptions {
    /// Memory limit in MB (heap, plus ArrayBuffers and WebAssembly memories). Default 128,
    /// minimum 8.
    pub memory_limit: u64,
    /// Called with each promise rejection that nothing handled by the end of the operation
    /// that caused it (e.g. a forgotten `async` call that threw). Without it such rejections
    /// are dropped; they never turn up as the error of an unrelated later call.
    pub on_unhandled_rejection: Option<rejections::Handler>,
    /// The key code caches of this isolate are sealed with (see [`CachedData`](crate::CachedData)).
    /// Default: a random key of this process, so caches are good only within it; give a key
    /// to keep caches across runs.
    pub code_cache_key: Option<CacheKey>,
    /// Where the isolate lives: in this process, or in a worker process of [`pool`](Self::pool)
    /// (see [`Isolation`]). `None`: as the `IVM_ISOLATION` environment variable says
    /// (`in-process`, the default, or `process`).
    pub isolation: Option<Isolation>,
    /// The worker pool of a process-isolated isolate (default: [`WorkerPool::global`]).
    pub pool: Option<WorkerPool>,
    /// Process-isolated isolates share workers only with isolates of the same tenant (a name
    /// without NUL characters).
    pub tenant: Option<String>,
    /// How long a script may go on after its timeout asked it to stop before ivm gives up on
    /// it: a process-isolated isolate's worker is then killed (the caller gets the timeout),
    /// an in-process one reports `Script failed to terminate` to
    /// [`on_catastrophic_error`](Self::on_catastrophic_error). Default 5 s, as isolated-vm.
    pub terminate_grace: Duration,
    /// Hears when ivm has lost control of the isolate (isolated-vm's `onCatastrophicError`):
    /// its worker process died (the message says why), or an in-process script did not stop
    /// within [`terminate_grace`](Self::terminate_grace) of its timeout.
    pub on_catastrophic_error: Option<CatastrophicHandler>,
    /// The timeout of every operation that gives none ([`EvalOptions::timeout`](crate::EvalOptions::timeout)
    /// unset, and reads such as [`Reference::get`](crate::Reference::get) or
    /// [`Context::get_global`](crate::Context::get_global), which run getters and proxy
    /// traps), and of JavaScript that runs for no operation: what an async host function's
    /// completion runs after the operation that called it has ended, V8 tasks such as
    /// `FinalizationRegistry` callbacks. Default 30 s; `None`: no limit.
    pub default_timeout: Option<Duration>,
    /// The CPU time the isolate may use in all, across runs (a platform's per-request CPU
    /// allowance, say): a run is stopped with [`Error::CpuLimit`](crate::Error::CpuLimit) when
    /// it is spent, and later runs are refused with it. Counted as
    /// [`cpu_time`](Isolate::cpu_time) counts. Default `None`: no budget.
    pub cpu_budget: Option<Duration>,
    /// Gives the isolate V8's inspector (isolated-vm's `inspector: true`): its contexts are
    /// reported by name, and [`inspector_session`](Isolate::inspector_session)s connect to it.
    /// Default `false`. The CPU profiler and heap snapshots do not need it.
    pub inspector: bool,
    /// The startup snapshot the isolate starts from (see [`Snapshot`](crate::Snapshot)): its
    /// contexts start with what the snapshot's scripts left. Default: V8's built-in one. An
    /// isolate from a snapshot always lives in a worker process that hosts only that
    /// snapshot's isolates (V8 cannot mix snapshots in one process).
    pub snapshot: Option<crate::Snapshot>,
}

/// The default of [`IsolateOptions::default_timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

impl Default for IsolateOptions {
    fn default() -> Self {
        IsolateOptions {
            memory_limit: 128,
            on_unhandled_rejection: None,
            code_cache_key: None,
            isolation: None,
            pool: None,
            tenant: None,
            terminate_grace: Duration::from_secs(5),
            on_catastrophic_error: None,
            default_timeout: Some(DEFAULT_TIMEOUT),
            cpu_budget: None,
            inspector: false,
            snapshot: None,
        }
    }
}

impl std::fmt::Debug for IsolateOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IsolateOptions")
            .field("memory_limit", &self.memory_limit)
            .field("on_unhandled_rejection", &self.on_unhandled_rejection.is_some())
            .field("code_cache_key", &self.code_cache_key.is_some())
            .field("isolation", &self.isolation)
            .field("tenant", &self.tenant)
            .field("terminate_grace", &self.terminate_grace)
            .field("default_timeout", &self.default_timeout)
            .field("cpu_budget", &self.cpu_budget)
            .field("inspector", &self.inspector)
            .field("snapshot", &self.snapshot)
            .finish_non_exhaustive()
    }
}

impl IsolateOptions {
    /// Enables the inspector (see [`inspector`](Self::inspector)).
    pub fn inspector(mut self) -> Self {
        self.inspector = true;
        self
    }

    /// Starts the isolate from `snapshot` (see [`snapshot`](Self::snapshot)).
    pub fn snapshot(mut self, snapshot: crate::Snapshot) -> Self {
        self.snapshot = Some(snapshot);
        self
    }

    /// Sets the memory limit in MB.
    pub fn memory_limit(mut self, mb: u64) -> Self {
        self.memory_limit = mb;
        self
    }

    /// Seals and opens code caches with `key` (see [`CachedData`](crate::CachedData)).
    pub fn code_cache_key(mut self, key: CacheKey) -> Self {
        self.code_cache_key = Some(key);
        self
    }

    /// Chooses where the isolate lives. Process isolates run in workers of the
    /// [global pool](WorkerPool::global) unless [`pool`](Self::pool) names another.
    ///
    /// ```no_run
    /// // no_run: a worker is the `ivm` binary, which documentation tests do not build.
    /// use ivm::{Isolate, IsolateOptions, Isolation};
    /// let isolate = Isolate::new(IsolateOptions::default().isolation(Isolation::Process))?;
    /// let context = isolate.create_context()?;
    /// assert_eq!(context.eval::<u32>("6 * 7")?, 42);
    /// # Ok::<(), ivm::Error>(())
    /// ```
    pub fn isolation(mut self, isolation: Isolation) -> Self {
        self.isolation = Some(isolation);
        self
    }

    /// Puts the isolate in a worker process of `pool`.
    ///
    /// ```no_run
    /// // no_run: a worker is the `ivm` binary, which documentation tests do not build.
    /// use ivm::{Isolate, IsolateOptions, PoolOptions, WorkerPool};
    /// let pool = WorkerPool::new(PoolOptions::default().isolates_per_worker(8).worker_program("/usr/bin/ivm"));
    /// let a = Isolate::new(IsolateOptions::default().pool(&pool).tenant("acme"))?;
    /// let b = Isolate::new(IsolateOptions::default().pool(&pool).tenant("acme"))?;
    /// assert_eq!(a.worker_pid(), b.worker_pid());
    /// let c = Isolate::new(IsolateOptions::default().pool(&pool).tenant("globex"))?;
    /// assert_ne!(a.worker_pid(), c.worker_pid());
    /// # Ok::<(), ivm::Error>(())
    /// ```
    pub fn pool(mut self, pool: &WorkerPool) -> Self {
        self.isolation = Some(Isolation::Process);
        self.pool = Some(pool.clone());
        self
    }

    /// Shares worker processes only with isolates of tenant `key`.
    pub fn tenant(mut self, key: impl Into<String>) -> Self {
        self.tenant = Some(key.into());
        self
    }

    /// Sets how long a timed-out script may take to stop (see [`IsolateOptions::terminate_grace`]).
    pub fn terminate_grace(mut self, grace: Duration) -> Self {
        self.terminate_grace = grace;
        self
    }

    /// Sets the timeout of operations that give none (see [`IsolateOptions::default_timeout`]);
    /// `None` lets them run without a limit.
    ///
    /// ```
    /// use std::time::Duration;
    /// let options = ivm::IsolateOptions::default().default_timeout(Some(Duration::from_millis(50)));
    /// let context = ivm::Isolate::new(options)?.create_context()?;
    /// let err = context.eval::<()>("for (;;) {}").unwrap_err();
    /// assert_eq!(err.to_string(), "Script execution timed out.");
    /// # Ok::<(), ivm::Error>(())
    /// ```
    pub fn default_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.default_timeout = timeout;
        self
    }

    /// Sets the isolate's CPU budget (see [`IsolateOptions::cpu_budget`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// let options = ivm::IsolateOptions::default().cpu_budget(Some(Duration::from_millis(20)));
    /// let context = ivm::Isolate::new(options)?.create_context()?;
    /// let err = context.eval::<()>("for (;;) {}").unwrap_err();
    /// assert_eq!(err.kind(), ivm::ErrorKind::CpuLimit);
    /// // Spent: the next run is refused.
    /// assert_eq!(context.eval::<i32>("1").unwrap_err().kind(), ivm::ErrorKind::CpuLimit);
    /// # Ok::<(), ivm::Error>(())
    /// ```
    pub fn cpu_budget(mut self, budget: Option<Duration>) -> Self {
        self.cpu_budget = budget;
        self
    }

    /// Sets the handler for lost control (see [`IsolateOptions::on_catastrophic_error`]).
    pub fn on_catastrophic_error(mut self, handler: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.on_catastrophic_error = Some(Arc::new(handler));
        self
    }

    /// Sends unhandled promise rejections (their name, message and stack) to `handler`.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex, Weak};
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let sink = seen.clone();
    /// let options = ivm::IsolateOptions::default()
    ///     .on_unhandled_rejection(move |e| sink.lock().unwrap().push(e.message));
    /// let context = ivm::Isolate::new(options)?.create_context()?;
    /// context.eval::<()>("(async () => { throw new Error('forgotten') })()")?;
    /// assert_eq!(*seen.lock().unwrap(), ["forgotten"]);
    /// # Ok::<(), ivm::Error>(())
    /// ```
    pub fn on_unhandled_rejection(mut self, handler: impl Fn(crate::JsError) + Send + Sync + 'static) -> Self {
        self.on_unhandled_rejection = Some(Arc::new(handler));
        self
    }
}

/// A V8 isolate: its own heap, its own memory limit, any number of [`Context`](crate::Context)s.
///
/// `Isolate` is a cheap handle (`Clone + Send + Sync`). The isolate lives until it is
/// disposed — by [`dispose`](Isolate::dispose), by going over its memory limit, or when the
/// last handle to it (including its contexts and scripts) is dropped.
///
/// Every operation has a blocking form, which runs on the calling thread, and an `_async`
/// form, which returns a `Future` that works on any executor; async operations on one isolate
/// run in the order they were submitted, and different isolates run in parallel.
///
/// ```
/// let isolate = ivm::Isolate::new(Default::default())?;
/// let context = isolate.create_context()?;
/// let n: u32 = context.eval("6 * 7")?;
/// assert_eq!(n, 42);
/// # Ok::<(), ivm::Error>(())
/// ```
#[derive(Clone)]
pub struct Isolate {
    pub(crate) backend: Backend,
}

/// Where an isolate lives.
#[derive(Clone)]
pub(crate) enum Backend {
    /// In this process.
    Local(Arc<IsolateInner>),
    /// In a worker process.
    Remote(Arc<RemoteIsolate>),
}

impl Isolate {
    pub(crate) fn local(inner: Arc<IsolateInner>) -> Isolate {
        Isolate { backend: Backend::Local(inner) }
    }

    /// The in-process isolate, for the machinery that works on V8 directly.
    pub(crate) fn as_local(&self) -> Option<&Arc<IsolateInner>> {
        match &self.backend {
            Backend::Local(inner) => Some(inner),
            Backend::Remote(_) => None,
        }
    }

    /// The worker's isolate, for the machinery that speaks to it directly.
    pub(crate) fn as_remote(&self) -> Option<&Arc<RemoteIsolate>> {
        match &self.backend {
            Backend::Local(_) => None,
            Backend::Remote(remote) => Some(remote),
        }
    }

    /// What may be made in the host of data this isolate's scripts made.
    pub(crate) fn copy_budget(&self) -> crate::value::wire::Budget {
        match &self.backend {
            Backend::Local(inner) => crate::value::wire::Budget::of_isolate(inner.memory.limit()),
            Backend::Remote(remote) => remote.copy_budget,
        }
    }

    /// Whether the isolate lives in a worker process.
    pub fn is_process_isolated(&self) -> bool {
        matches!(self.backend, Backend::Remote(_))
    }

    /// The process id of the worker a process-isolated isolate lives in.
    pub fn worker_pid(&self) -> Option<u32> {
        match &self.backend {
            Backend::Local(_) => None,
            Backend::Remote(remote) => Some(remote.link.pid),
        }
    }

    /// What confines the worker process a process-isolated isolate lives in (see
    /// [`process`](crate::process)'s docs): the sandbox steps that took effect, and those the
    /// kernel refused. `None` in process.
    ///
    /// ```no_run
    /// let isolate = ivm::Isolate::new(ivm::IsolateOptions::default().isolation(ivm::Isolation::Process))?;
    /// let sandbox = isolate.sandbox().expect("a worker's report");
    /// assert!(sandbox.applied(ivm::SandboxStep::SyscallFilter), "{sandbox}");
    /// # Ok::<(), ivm::Error>(())
    /// ```
    pub fn sandbox(&self) -> Option<crate::SandboxReport> {
        match &self.backend {
            Backend::Local(_) => None,
            Backend::Remote(remote) => Some(remote.link.sandbox()),
        }
    }

    /// Test-only, debug builds only: makes the isolate's worker try `probe`, something its
    /// sandbox forbids. The `errno` it failed with (0: it succeeded), or the crash it caused.
    #[cfg(debug_assertions)]
    #[doc(hidden)]
    pub fn sandbox_probe(&self, probe: crate::process::SandboxProbe) -> Result<u64> {
        let Backend::Remote(remote) = &self.backend else {
            return Err(Error::InvalidArgument("the isolate is not process-isolated".into()));
        };
        let reply = remote.link.send(None, None, Op::SandboxProbe(probe), None)?.recv().map_err(|_| remote.link.crash_error())??;
        match reply {
            Reply::Count(errno) => Ok(errno),
            other => Err(Error::InvalidArgument(format!("unexpected reply {other:?}"))),
        }
    }

    /// V8's heap statistics for this isolate.
    pub fn heap_statistics(&self) -> Result<HeapStatistics> {
        self.call(HeapStatisticsOf)
    }

    /// Async form of [`heap_statistics`](Isolate::heap_statistics).
    pub fn heap_statistics_async(&self) -> Operation<HeapStatistics> {
        self.call_async(HeapStatisticsOf)
    }

    /// CPU time this isolate has used: the CPU clock of the threads that held it, while they
    /// held it. Readable live, from any thread. Fails once disposed.
    pub fn cpu_time(&self) -> Result<Duration> {
        match &self.backend {
            Backend::Local(inner) => {
                inner.check_alive()?;
                Ok(inner.clock.cpu_time())
            }
            Backend::Remote(remote) => remote.times().map(|(cpu, _)| cpu),
        }
    }

    /// Wall-clock time during which this isolate was held by some thread.
    pub fn wall_time(&self) -> Result<Duration> {
        match &self.backend {
            Backend::Local(inner) => {
                inner.check_alive()?;
                Ok(inner.clock.wall_time())
            }
            Backend::Remote(remote) => remote.times().map(|(_, wall)| wall),
        }
    }

    /// Disposes the isolate: a running script is terminated (its caller gets
    /// `Isolate was disposed during execution`), queued async operations fail with
    /// [`Error::Disposed`], and every handle into the isolate stops working. The heap is freed
    /// on a background thread once no thread is using the isolate, so `dispose` returns
    /// without waiting for it. Disposing twice is an error, as in isolated-vm.
    pub fn dispose(&self) -> Result<()> {
        let disposed = match &self.backend {
            Backend::Local(inner) => inner.dispose(),
            Backend::Remote(remote) => remote.dispose(),
        };
        if disposed { Ok(()) } else { Err(Error::disposed("Isolate is already disposed")) }
    }

    /// Handles into this isolate that are alive: contexts, scripts, modules and references
    /// (isolated-vm's `referenceCount`). Fails once disposed.
    pub fn reference_count(&self) -> Result<usize> {
        match &self.backend {
            Backend::Local(inner) => {
                inner.check_alive()?;
                Ok(inner.handle_count())
            }
            Backend::Remote(remote) => remote.reference_count(),
        }
    }

    /// Whether the isolate is disposed (or being disposed). A process-isolated isolate is
    /// also disposed once its worker process has exited.
    pub fn is_disposed(&self) -> bool {
        match &self.backend {
            Backend::Local(inner) => inner.is_disposed(),
            Backend::Remote(remote) => remote.is_disposed(),
        }
    }

    /// Whether `other` is a handle to the same isolate.
    pub fn same(&self, other: &Isolate) -> bool {
        match (&self.backend, &other.backend) {
            (Backend::Local(a), Backend::Local(b)) => Arc::ptr_eq(a, b),
            (Backend::Remote(a), Backend::Remote(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// Releases the engine object behind a handle id.
    pub(crate) fn release_handle(&self, id: u64) -> bool {
        match &self.backend {
            Backend::Local(inner) => inner.remove(id),
            Backend::Remote(remote) => remote.release(id),
        }
    }
}

impl Isolate {
    /// Whether this is the isolate `remote` stands for.
    pub(crate) fn is_remote(&self, remote: &Arc<RemoteIsolate>) -> bool {
        matches!(&self.backend, Backend::Remote(r) if Arc::ptr_eq(r, remote))
    }
}

impl std::fmt::Debug for Isolate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Isolate")
            .field("disposed", &self.is_disposed())
            .field("process_isolated", &self.is_process_isolated())
            .finish_non_exhaustive()
    }
}

/// V8's heap statistics (isolate `heap_statistics`).
struct HeapStatisticsOf;

impl IsolateOp for HeapStatisticsOf {
    type Output = HeapStatistics;
    type Owned = HeapStatisticsOf;

    fn into_owned(self) -> Result<HeapStatisticsOf> {
        Ok(self)
    }

    fn local(self) -> impl LocalWork<HeapStatistics> {
        InSession(heap_statistics)
    }

    fn request(&self, _: &Arc<RemoteIsolate>) -> Result<Op> {
        Ok(Op::HeapStatistics)
    }

    fn reply(&self, reply: Reply, _: &Isolate) -> Result<HeapStatistics> {
        reply.heap()
    }
}

fn heap_statistics(session: &mut Session<'_>) -> Result<HeapStatistics> {
    let s = session.isolate.get_heap_statistics();
    let mut stats = HeapStatistics::default();
    stats.total_heap_size = s.total_heap_size();
    stats.total_heap_size_executable = s.total_heap_size_executable();
    stats.total_physical_size = s.total_physical_size();
    stats.total_available_size = s.total_available_size();
    stats.used_heap_size = s.used_heap_size();
    stats.heap_size_limit = s.heap_size_limit();
    stats.malloced_memory = s.malloced_memory();
    stats.peak_malloced_memory = s.peak_malloced_memory();
    stats.does_zap_garbage = s.does_zap_garbage();
    stats.number_of_native_contexts = s.number_of_native_contexts();
    stats.number_of_detached_contexts = s.number_of_detached_contexts();
    stats.externally_allocated_size = memory::external_bytes(session.isolate, &session.inner.memory);
    Ok(stats)
}

