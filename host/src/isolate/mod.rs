//! [`Isolate`]: one V8 heap with its own memory limit, and the machinery that runs operations
//! on it: blocking calls lock it on the caller's thread (no thread hop), async calls queue on
//! it and run on the worker pool in submission order.

mod clock;
mod jobs;
pub(crate) mod memory;
pub(crate) mod nesting;
mod operation;
mod parked;
pub(crate) mod rejections;
mod tasks;

pub use operation::Operation;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::code_cache::CacheKey;
use crate::data::HeapStatistics;
use crate::engine::{self, executor};
use crate::error::{Error, Result};
use crate::callback::{BlockingWaits, Completions};
use crate::run::{self, Progress};
use jobs::Job;
use crate::op::{InSession, IsolateOp, LocalWork};
use crate::process::protocol::{Op, Reply};
use crate::process::{Isolation, RemoteIsolate, WorkerPool};
use crate::sync::Mutex;

use clock::Clock;
use memory::MemoryGuard;

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
    /// Process-isolated isolates share workers only with isolates of the same tenant.
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
}

/// The default of [`IsolateOptions::default_timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The handler of [`IsolateOptions::on_catastrophic_error`].
pub type CatastrophicHandler = Arc<dyn Fn(&str) + Send + Sync>;

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
            .finish_non_exhaustive()
    }
}

impl IsolateOptions {
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

pub(crate) struct IsolateInner {
    /// `None` once disposed; `dispose` hands it to the reaper together with the guard and the
    /// host state its callbacks point at.
    v8: Mutex<Option<Arc<v8::SharedIsolate>>>,
    handle: v8::IsolateHandle,
    disposed: AtomicBool,
    pub(crate) memory: Arc<MemoryGuard>,
    clock: Clock,
    handles: Mutex<HandleTable>,
    /// Who holds the isolate, and the async operations queued on it.
    jobs: jobs::Jobs,
    /// Runs waiting for their promises to settle.
    parked: parked::Parked,
    /// V8's foreground tasks waiting to run.
    tasks: tasks::Tasks,
    /// V8's address of the isolate, under which its foreground tasks arrive.
    address: usize,
    /// This isolate, for the work it queues on itself.
    me: Weak<IsolateInner>,
    /// The timeout of operations that give none, and of JavaScript that runs for no operation.
    pub(crate) default_timeout: Option<Duration>,
    /// Stretches of runs of this isolate on some thread's stack right now.
    pub(crate) runs_on_stack: Arc<std::sync::atomic::AtomicUsize>,
    /// The deadlines of its runs.
    pub(crate) deadlines: Arc<run::Deadlines>,
    /// Host state that JavaScript functions of this isolate point at (console sinks, host
    /// functions).
    kept: Mutex<Vec<Arc<dyn std::any::Any + Send + Sync>>>,
    /// Seals and opens this isolate's code caches.
    pub(crate) cache_key: CacheKey,
    /// A context kept for compiling scripts and modules, made on first use.
    compile_context: Mutex<Option<v8::Global<v8::Context>>>,
    /// Module hooks (`import()`, `import.meta`) and bookkeeping for V8's module callbacks.
    pub(crate) module_hooks: Arc<crate::module::Hooks>,
    /// Results of async host functions on their way back in.
    pub(crate) completions: Completions,
    /// Threads blocked in blocking host functions, woken by timeouts and disposal.
    pub(crate) blocking_waits: Arc<BlockingWaits>,
}

/// Engine objects that handles point at, by id. Public handles hold ids, not V8 pointers, so
/// the same API can later front an isolate living in another process.
#[derive(Default)]
struct HandleTable {
    next: u64,
    slots: HashMap<u64, Slot>,
}

pub(crate) enum Slot {
    Context(v8::Global<v8::Context>),
    Script(v8::Global<v8::UnboundScript>),
    /// A value and the context it was reached in (where operations on it run).
    Reference { value: v8::Global<v8::Value>, context: v8::Global<v8::Context> },
    /// A module, and once instantiated, the context it was instantiated in.
    Module { module: v8::Global<v8::Module>, context: Option<v8::Global<v8::Context>> },
}

/// How many async operations a worker runs per turn before letting other isolates go first.
const BATCH: usize = 64;

/// An isolate locked by the current thread.
pub(crate) struct Session<'a> {
    pub(crate) isolate: &'a mut v8::Isolate,
    pub(crate) inner: &'a Arc<IsolateInner>,
    /// When this thread took the isolate for the operation, if it read the time then (the
    /// operation's run starts right after: its deadline counts from here rather than read the
    /// clock again).
    pub(crate) since: Option<Instant>,
}

impl Session<'_> {
    /// The time the operation started: when the isolate was taken for it, or now.
    pub(crate) fn now(&self) -> Instant {
        self.since.unwrap_or_else(Instant::now)
    }
}

impl Isolate {
    /// Creates an isolate, in this process or in a worker process (see
    /// [`IsolateOptions::isolation`]).
    ///
    /// Fails with [`Error::InvalidArgument`] if `memory_limit` is below 8 MB, and for a
    /// process-isolated isolate with [`Error::WorkerCrashed`] if no worker could be started.
    pub fn new(options: IsolateOptions) -> Result<Isolate> {
        if options.memory_limit < 8 {
            return Err(Error::InvalidArgument("`memory_limit` must be at least 8".into()));
        }
        let isolation = match options.isolation {
            Some(isolation) => isolation,
            None => Isolation::from_env()?,
        };
        match isolation {
            Isolation::InProcess => Isolate::new_local(options),
            Isolation::Process => {
                let pool = options.pool.clone().unwrap_or_else(WorkerPool::global);
                Ok(Isolate { backend: Backend::Remote(RemoteIsolate::create(&pool, &options)?) })
            }
        }
    }

    fn new_local(options: IsolateOptions) -> Result<Isolate> {
        let cache_key = match options.code_cache_key.clone() {
            Some(key) => key,
            None => CacheKey::for_this_process()?,
        };
        engine::platform();
        let limit = usize::try_from(options.memory_limit.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
        // isolated-vm's sizing: a young generation of 1-16 MB, growing with the limit.
        let young = (1usize << (options.memory_limit / 128).min(4)) << 20;
        let memory = MemoryGuard::new(limit);
        let params = v8::CreateParams::default()
            .set_max_old_generation_size_in_bytes(limit)
            .set_max_young_generation_size_in_bytes(young)
            .array_buffer_allocator(memory.allocator());
        let mut isolate = v8::Isolate::new(params);
        memory.install(&mut isolate);
        if let Some(handler) = options.on_unhandled_rejection {
            rejections::install(&mut isolate, handler);
        }
        isolate.set_microtasks_policy(v8::MicrotasksPolicy::Explicit);
        isolate.set_capture_stack_trace_for_uncaught_exceptions(true, 10);
        crate::module::install(&mut isolate);
        let handle = isolate.thread_safe_handle();
        let address = engine::platform::address(&isolate);
        let mut failed = None;
        let blocking_waits = Arc::<BlockingWaits>::default();
        let inner = Arc::new_cyclic(|owner: &Weak<IsolateInner>| {
            // V8's callbacks find their way back to the isolate's state through this.
            isolate.set_slot(owner.clone());
            // And its foreground tasks.
            engine::platform::register(address, owner.clone() as Weak<dyn engine::platform::TaskTarget>);
            // SAFETY: all state attached to the isolate is `Send`: the memory guard (an `Arc` of
            // atomics), the allocator it backs, and `Weak`/`Arc`s of `Send + Sync` state.
            let shared = unsafe { isolate.try_into_shared() }
                .map_err(|e| failed = Some(Error::InvalidArgument(format!("cannot share the isolate: {e:?}"))))
                .ok();
            IsolateInner {
                disposed: AtomicBool::new(shared.is_none()),
                v8: Mutex::new(shared.map(Arc::new)),
                handle,
                memory,
                clock: Clock::default(),
                handles: Mutex::default(),
                jobs: jobs::Jobs::default(),
                parked: parked::Parked::default(),
                tasks: tasks::Tasks::default(),
                runs_on_stack: Arc::default(),
                deadlines: run::Deadlines::new(blocking_waits.clone(), options.terminate_grace, options.on_catastrophic_error.clone()),
                address,
                me: owner.clone(),
                default_timeout: options.default_timeout,
                kept: Mutex::default(),
                cache_key,
                compile_context: Mutex::default(),
                module_hooks: Arc::default(),
                completions: Completions::default(),
                blocking_waits,
            }
        });
        match failed {
            Some(error) => Err(error),
            None => Ok(Isolate::local(inner)),
        }
    }

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

impl Drop for IsolateInner {
    /// The last handle is gone: the isolate goes to the reaper like a disposed one.
    fn drop(&mut self) {
        self.dispose();
    }
}

impl IsolateInner {
    pub(crate) fn check_alive(&self) -> Result<()> {
        if self.disposed.load(Ordering::SeqCst) { Err(Error::isolate_disposed()) } else { Ok(()) }
    }

    pub(crate) fn is_disposed(&self) -> bool {
        self.disposed.load(Ordering::SeqCst)
    }

    fn shared(&self) -> Result<Arc<v8::SharedIsolate>> {
        self.v8.lock().clone().ok_or_else(Error::isolate_disposed)
    }

    /// Marks the isolate disposed and lets go of it. Returns `false` if it already was.
    fn dispose(&self) -> bool {
        if self.disposed.swap(true, Ordering::SeqCst) {
            return false;
        }
        self.handle.terminate_execution();
        self.blocking_waits.abort();
        engine::platform::unregister(self.address);
        let shared = self.v8.lock().take();
        std::mem::take(&mut self.handles.lock().slots);
        for job in self.jobs.take_all() {
            job(Err(Error::isolate_disposed()));
        }
        self.drop_tasks();
        self.wake_all_parked();
        // The reaper drops the isolate with the state its callbacks point at, so they outlive
        // it. If an operation still holds the isolate, the last one to finish frees it.
        let kept = std::mem::take(&mut *self.kept.lock());
        engine::reaper::retire((shared, self.memory.clone(), kept));
        true
    }

    /// Runs `op` with the isolate locked on the calling thread: inline if this thread is
    /// already inside it (a host function called from its JavaScript), after stepping out of
    /// another isolate if it is inside that one (see [`nesting`]).
    pub(crate) fn run_sync<R>(self: &Arc<Self>, op: impl FnOnce(&mut Session<'_>) -> Result<R>) -> Result<R> {
        match nesting::current() {
            None => {
                let shared = self.shared()?;
                self.jobs.hold();
                let _let_go = LetGo(self);
                let mut locker = shared.lock();
                self.enter(&mut locker, op)
            }
            Some(frame) if std::ptr::eq(frame.inner, Arc::as_ptr(self)) => {
                self.check_alive()?;
                // SAFETY: the frame's isolate is locked by an enclosing call on this thread,
                // which is suspended in the host function that called us.
                let isolate = unsafe { &mut *frame.isolate };
                let result = nesting::within(frame, || op(&mut Session { isolate, inner: self, since: None }));
                self.after(result)
            }
            Some(frame) => nesting::step_out(frame, || self.run_sync(op)),
        }
    }

    /// Runs `op` on the worker pool after the operations queued before it.
    pub(crate) fn run_async<R: Send + 'static, F: FnOnce(&mut Session<'_>) -> Result<R> + Send + 'static>(
        self: &Arc<Self>,
        op: F,
    ) -> impl Future<Output = Result<R>> + Send + 'static + use<R, F> {
        let (tx, rx) = oneshot::channel();
        // The operation runs for whoever submitted it: its host functions see their tag.
        let tag = crate::callback::caller_tag();
        self.enqueue(Box::new(move |session| {
            let _ = tx.send(crate::callback::with_caller_tag(tag, || session.and_then(op)));
        }));
        async move { rx.await.unwrap_or_else(|_| Err(Error::isolate_disposed())) }
    }

    /// Queues `job` to run after the operations queued before it; its outcome is dropped.
    pub(crate) fn post(self: &Arc<Self>, job: impl FnOnce(&mut Session<'_>) + Send + 'static) {
        self.enqueue(Box::new(move |session| {
            if let Ok(session) = session {
                job(session)
            }
        }));
    }

    fn enqueue(self: &Arc<Self>, job: Job) {
        if self.is_disposed() {
            return job(Err(Error::isolate_disposed()));
        }
        if self.jobs.push(job).0 {
            executor::schedule(self.clone());
        }
    }

    /// Lets go of the isolate (see [`jobs`]); queues it on the pool if jobs wait.
    pub(crate) fn let_go(&self) {
        let schedule = self.jobs.let_go().0;
        let tasks_left = self.tasks.pending();
        if !schedule && !tasks_left {
            return;
        }
        let Some(me) = self.me.upgrade() else { return };
        if tasks_left {
            // V8 tasks that came after the holder ran them.
            me.queue_task_job();
        }
        if schedule {
            executor::schedule(me);
        }
    }

    /// Holds the isolate again after [`let_go`](Self::let_go), waiting for it if need be.
    pub(crate) fn hold(&self) {
        self.jobs.hold();
    }

    /// Runs JavaScript that may wait for a promise (see [`run`](crate::run)), blocking the
    /// calling thread until it is done. While the run waits, the isolate is free.
    pub(crate) fn run_js_sync<R, F: run::Finish<R>>(self: &Arc<Self>, js: run::JsRun<impl run::Body, F>) -> Result<R> {
        let mut progress = self.run_sync(|s| run::start(s, js))?;
        loop {
            match progress {
                Progress::Done(result) => return Ok(result),
                Progress::Waiting(waiting) => {
                    waiting.wait_here();
                    progress = self.run_sync(|s| run::resume(s, waiting)).map_err(|e| self.gone(e))?;
                }
            }
        }
    }

    /// The async form of [`run_js_sync`](Self::run_js_sync): each stretch of the run is a job
    /// of the isolate, and while it waits it holds no thread.
    pub(crate) fn run_js_async<R, B, F>(self: &Arc<Self>, js: run::JsRun<B, F>) -> impl Future<Output = Result<R>> + Send + 'static + use<R, B, F>
    where
        R: Send + 'static,
        B: run::Body + Send + 'static,
        F: run::Finish<R> + Send + 'static,
    {

        let (tx, rx) = oneshot::channel();
        // The operation runs for whoever submitted it: its host functions see their tag.
        let tag = crate::callback::caller_tag();
        let me = self.me.clone();
        self.enqueue(Box::new(move |session| {
            let progress = crate::callback::with_caller_tag(tag.clone(), || session.and_then(|s| run::start(s, js)));
            go_on(me, progress, tx, tag);
        }));
        async move { rx.await.unwrap_or_else(|_| Err(Error::isolate_disposed())) }
    }

    /// The error for a run whose isolate went while it waited.
    fn gone(&self, error: Error) -> Error {
        match error {
            _ if self.memory.hit() => Error::MemoryLimit,
            Error::Disposed { .. } => Error::disposed("Isolate was disposed during execution"),
            other => other,
        }
    }

    /// The bookkeeping around every locked stretch: the thread's frame, the clock, and the
    /// memory limit (an isolate found over it is disposed and the caller gets `MemoryLimit`).
    fn enter<R>(self: &Arc<Self>, locker: &mut v8::Locker<'_>, op: impl FnOnce(&mut Session<'_>) -> Result<R>) -> Result<R> {
        let frame = nesting::Frame {
            inner: Arc::as_ptr(self),
            isolate: &mut **locker as *mut v8::Isolate,
            // The frame never outlives `locker`: `within` pops it before returning.
            locker: std::ptr::from_mut(locker).cast::<v8::Locker<'static>>(),
        };
        let since = Some(self.clock.start());
        // SAFETY: `frame.isolate` is the isolate `locker` holds, for the duration of `within`.
        let result = nesting::within(frame, || {
            // SAFETY: as above.
            let isolate = unsafe { &mut *frame.isolate };
            let result = op(&mut Session { isolate: &mut *isolate, inner: self, since });
            // Within the frame: a task's JavaScript may call host functions that call back in.
            self.run_tasks(isolate);
            result
        });
        self.check_parked(locker);
        self.clock.stop();
        self.after(result)
    }

    fn after<R>(&self, result: Result<R>) -> Result<R> {
        if self.memory.hit() {
            self.dispose();
            return Err(Error::MemoryLimit);
        }
        result
    }

    pub(crate) fn thread_safe_handle(&self) -> v8::IsolateHandle {
        self.handle.clone()
    }

    /// Keeps `state` alive as long as the isolate (JavaScript functions point at it).
    pub(crate) fn keep_alive(&self, state: Arc<dyn std::any::Any + Send + Sync>) {
        self.kept.lock().push(state);
    }

    pub(crate) fn insert(&self, slot: Slot) -> u64 {
        let mut table = self.handles.lock();
        table.next += 1;
        let id = table.next;
        table.slots.insert(id, slot);
        id
    }

    /// Drops the engine object behind a handle id. Returns whether there was one.
    pub(crate) fn remove(&self, id: u64) -> bool {
        // The `Global` is dropped outside the table lock; V8 defers its reset if this thread
        // does not hold the isolate.
        let removed = self.handles.lock().slots.remove(&id);
        removed.is_some()
    }

    /// Whether a handle id is still held.
    pub(crate) fn holds(&self, id: u64) -> bool {
        self.handles.lock().slots.contains_key(&id)
    }

    /// The state of a locked isolate, for V8's callbacks.
    pub(crate) fn of(isolate: &v8::Isolate) -> Option<Arc<IsolateInner>> {
        isolate.get_slot::<Weak<IsolateInner>>()?.upgrade()
    }

    /// The context behind a context (or instantiated module, or reference) handle id. The
    /// caller holds the isolate.
    pub(crate) fn context_global(&self, id: u64) -> Option<v8::Global<v8::Context>> {
        let table = self.handles.lock();
        match table.slots.get(&id)? {
            Slot::Context(g) | Slot::Reference { context: g, .. } | Slot::Module { context: Some(g), .. } => Some(g.clone()),
            _ => None,
        }
    }

    /// The context scripts and modules are compiled in (code is not bound to it).
    pub(crate) fn compile_context<'s>(&self, scope: &v8::PinScope<'s, '_, ()>) -> v8::Local<'s, v8::Context> {
        let mut kept = self.compile_context.lock();
        match kept.as_ref() {
            Some(context) => v8::Local::new(scope, context),
            None => {
                let context = v8::Context::new(scope, Default::default());
                *kept = Some(v8::Global::new(scope, context));
                context
            }
        }
    }

    /// Changes the engine object behind a handle id.
    pub(crate) fn update(&self, id: u64, change: impl FnOnce(&mut Slot)) {
        if let Some(slot) = self.handles.lock().slots.get_mut(&id) {
            change(slot);
        }
    }

    /// Looks up a handle id and makes a `Local` of it.
    pub(crate) fn local<'s, T>(
        &self,
        scope: &v8::PinScope<'s, '_, ()>,
        id: u64,
        pick: impl FnOnce(&Slot) -> Option<&v8::Global<T>>,
    ) -> Option<v8::Local<'s, T>> {
        let table = self.handles.lock();
        table.slots.get(&id).and_then(pick).map(|global| v8::Local::new(scope, global))
    }
}

/// Sends an async run's result, or queues its next stretch for when it is woken.
fn go_on<R: Send + 'static, F: run::Finish<R> + Send + 'static>(
    inner: Weak<IsolateInner>,
    progress: Result<Progress<R, F>>,
    tx: oneshot::Sender<Result<R>>,
    tag: Option<crate::callback::CallerTag>,
) {
    let waiting = match progress {
        Ok(Progress::Done(result)) => return drop(tx.send(Ok(result))),
        Err(e) => return drop(tx.send(Err(e))),
        Ok(Progress::Waiting(waiting)) => waiting,
    };
    let resume = move |waiting: run::Waiting<F>| {
        let Some(isolate) = inner.upgrade() else { return drop(tx.send(Err(Error::isolate_disposed()))) };
        isolate.enqueue(Box::new(move |session| {
            let progress = crate::callback::with_caller_tag(tag.clone(), || match session {
                Ok(s) => run::resume(s, waiting),
                Err(e) => Err(s_gone(&inner, e)),
            });
            go_on(inner, progress, tx, tag);
        }));
    };
    waiting.state().on_wake(Box::new(move || resume(waiting)));
}

/// [`IsolateInner::gone`] through a weak reference.
fn s_gone(inner: &Weak<IsolateInner>, error: Error) -> Error {
    match inner.upgrade() {
        Some(inner) => inner.gone(error),
        None => error,
    }
}

/// Lets go of the isolate when dropped.
struct LetGo<'a>(&'a IsolateInner);

impl Drop for LetGo<'_> {
    fn drop(&mut self) {
        self.0.let_go();
    }
}

impl executor::Runnable for IsolateInner {
    fn run_queued(self: Arc<Self>) -> bool {
        if !self.jobs.try_hold_for_pool() {
            return false;
        }
        let _let_go = LetGo(&self);
        let Ok(shared) = self.shared() else {
            // Disposed: `dispose` failed the queued jobs; fail any that raced in after it.
            while let Some(job) = self.jobs.pop() {
                job(Err(Error::isolate_disposed()));
            }
            return false;
        };
        let mut locker = shared.lock();
        for done in 0..BATCH {
            // A synchronous caller waiting goes next (after one job: turns alternate); letting
            // go queues the rest again.
            if done > 0 && self.jobs.caller_waits() {
                break;
            }
            let Some(job) = self.jobs.pop() else { break };
            if self.is_disposed() {
                job(Err(Error::isolate_disposed()));
                continue;
            }
            let _ = self.enter(&mut locker, |session| {
                job(Ok(session));
                Ok(())
            });
        }
        false
    }
}
