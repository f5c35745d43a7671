//! [`IsolateInner`]: the engine's state of one in-process isolate (its V8 isolate, limits,
//! clocks, handle table, queued jobs, parked runs, V8 tasks and host calls in flight), and the
//! machinery that runs operations on it: blocking calls lock it on the caller's thread (no
//! thread hop), async calls queue on it and run on the executor in submission order.
//!
//! This is the engine core, below the public handles: it knows nothing of `Isolate`,
//! `Context` or the other API types, which reach it through [`Session`]s and [`Slot`]s.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::clock::Clock;
use super::jobs::Jobs;
use super::memory::MemoryGuard;
use super::{nesting, parked, tasks};
use crate::code_cache::CacheKey;
use crate::engine::{self, executor};
use crate::error::{Error, Result};
use crate::module::state::Hooks;
use crate::run::{self, BlockingWaits, Completions, Progress};
use crate::sync::Mutex;

/// An async operation queued on the isolate: it runs with the isolate's session, or learns
/// why there is none (the isolate was disposed).
pub(crate) type Job = Box<dyn FnOnce(Result<&mut Session<'_>>) + Send>;

/// The handler of [`IsolateOptions::on_catastrophic_error`](super::IsolateOptions::on_catastrophic_error).
pub type CatastrophicHandler = Arc<dyn Fn(&str) + Send + Sync>;

pub(crate) struct IsolateInner {
    /// `None` once disposed; `dispose` hands it to the reaper together with the guard and the
    /// host state its callbacks point at.
    pub(super) v8: Mutex<Option<Arc<v8::SharedIsolate>>>,
    pub(super) handle: v8::IsolateHandle,
    pub(super) disposed: AtomicBool,
    pub(crate) memory: Arc<MemoryGuard>,
    /// Its CPU and wall time (shared with the deadlines, which read it for CPU limits).
    pub(super) clock: Arc<Clock>,
    handles: Mutex<HandleTable>,
    /// Who holds the isolate, and the async operations queued on it.
    pub(super) jobs: Jobs<Job>,
    /// Runs waiting for their promises to settle.
    pub(super) parked: parked::Parked,
    /// V8's foreground tasks waiting to run.
    pub(super) tasks: tasks::Tasks,
    /// V8's address of the isolate, under which its foreground tasks arrive.
    pub(super) address: usize,
    /// This isolate, for the work it queues on itself.
    pub(super) me: Weak<IsolateInner>,
    /// The timeout of operations that give none, and of JavaScript that runs for no operation.
    pub(crate) default_timeout: Option<Duration>,
    /// The CPU time it may use in all (`IsolateOptions::cpu_budget`).
    cpu_budget: Option<Duration>,
    /// Stretches of runs of this isolate on some thread's stack right now.
    pub(crate) runs_on_stack: Arc<std::sync::atomic::AtomicUsize>,
    /// The deadlines of its runs.
    pub(crate) deadlines: Arc<run::Deadlines>,
    /// Host state that JavaScript functions of this isolate point at (console sinks, host
    /// functions).
    pub(super) kept: Mutex<Vec<Arc<dyn std::any::Any + Send + Sync>>>,
    /// Seals and opens this isolate's code caches.
    pub(crate) cache_key: CacheKey,
    /// A context kept for compiling scripts and modules, made on first use.
    pub(super) compile_context: Mutex<Option<v8::Global<v8::Context>>>,
    /// Module hooks (`import()`, `import.meta`) and bookkeeping for V8's module callbacks.
    pub(crate) module_hooks: Arc<Hooks>,
    /// Results of async host functions on their way back in.
    pub(crate) completions: Completions,
    /// Threads blocked in blocking host functions, woken by timeouts and disposal.
    pub(crate) blocking_waits: Arc<BlockingWaits>,
    /// A step the next run takes first, on its thread with the isolate held (a debugger's
    /// break on start: V8 keeps such a request with the thread's state of the isolate, so it
    /// is made where the run runs).
    before_next_run: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    has_before_next_run: AtomicBool,
    /// What disposing tells at once (a debugger's pause loop, waits for a debugger).
    on_dispose: Mutex<Vec<Box<dyn FnOnce() + Send>>>,
    /// What must be torn down with the isolate locked before V8 frees it (V8's inspector):
    /// the reaper runs these.
    teardown: Mutex<Vec<Teardown>>,
}

/// A step the reaper takes with a disposed isolate locked, before V8 frees it.
pub(crate) type Teardown = Box<dyn FnOnce(&mut v8::Isolate) + Send>;

/// What the reaper drops: V8's isolate (after the teardown steps, taken with it locked), and
/// the state its callbacks point at.
struct Remains {
    shared: Option<Arc<v8::SharedIsolate>>,
    teardown: Vec<Teardown>,
    _memory: Arc<MemoryGuard>,
    _kept: Vec<Arc<dyn std::any::Any + Send + Sync>>,
}

impl Drop for Remains {
    fn drop(&mut self) {
        let (Some(shared), false) = (&self.shared, self.teardown.is_empty()) else { return };
        let mut locker = shared.lock();
        for step in self.teardown.drain(..) {
            step(&mut locker);
        }
    }
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

impl IsolateInner {
    /// The CPU time a run may use: its own `limit`, or what is left of the isolate's budget
    /// if that is less; `None`: no CPU limit.
    pub(crate) fn cpu_allowance(&self, limit: Option<Duration>) -> Option<Duration> {
        let left = self.cpu_budget.map(|budget| budget.saturating_sub(self.clock.cpu_time()));
        match (limit, left) {
            (Some(limit), Some(left)) => Some(limit.min(left)),
            (limit, left) => limit.or(left),
        }
    }

    /// The state of a new V8 isolate, which becomes shared (lockable from any thread) here.
    pub(crate) fn create(
        mut isolate: v8::OwnedIsolate,
        memory: Arc<MemoryGuard>,
        cache_key: CacheKey,
        default_timeout: Option<Duration>,
        cpu_budget: Option<Duration>,
        terminate_grace: Duration,
        on_catastrophic_error: Option<CatastrophicHandler>,
    ) -> Result<Arc<IsolateInner>> {
        let handle = isolate.thread_safe_handle();
        let address = engine::platform::address(&isolate);
        let mut failed = None;
        let blocking_waits = Arc::<BlockingWaits>::default();
        let clock = Arc::<Clock>::default();
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
                clock: clock.clone(),
                handles: Mutex::default(),
                jobs: Jobs::default(),
                parked: parked::Parked::default(),
                tasks: tasks::Tasks::default(),
                runs_on_stack: Arc::default(),
                deadlines: run::Deadlines::new(blocking_waits.clone(), clock, terminate_grace, on_catastrophic_error),
                address,
                me: owner.clone(),
                default_timeout,
                cpu_budget,
                kept: Mutex::default(),
                cache_key,
                compile_context: Mutex::default(),
                module_hooks: Arc::default(),
                completions: Completions::default(),
                blocking_waits,
                before_next_run: Mutex::default(),
                has_before_next_run: AtomicBool::new(false),
                on_dispose: Mutex::default(),
                teardown: Mutex::default(),
            }
        });
        match failed {
            Some(error) => Err(error),
            None => Ok(inner),
        }
    }
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
    pub(super) fn dispose(&self) -> bool {
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
        for told in std::mem::take(&mut *self.on_dispose.lock()) {
            told();
        }
        // The reaper drops the isolate with the state its callbacks point at, so they outlive
        // it. If an operation still holds the isolate, the last one to finish frees it.
        let kept = std::mem::take(&mut *self.kept.lock());
        let teardown = std::mem::take(&mut *self.teardown.lock());
        engine::reaper::retire(Remains { shared, teardown, _memory: self.memory.clone(), _kept: kept });
        true
    }

    /// Has disposing tell `told` at once.
    pub(crate) fn on_dispose(&self, told: impl FnOnce() + Send + 'static) {
        self.on_dispose.lock().push(Box::new(told));
    }

    /// Has the reaper take `step` with the disposed isolate locked, before V8 frees it.
    pub(crate) fn on_teardown(&self, step: impl FnOnce(&mut v8::Isolate) + Send + 'static) {
        self.teardown.lock().push(Box::new(step));
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

    /// Has the next run of the isolate take `step` first (see `before_next_run`).
    pub(crate) fn before_next_run(&self, step: impl FnOnce() + Send + 'static) {
        *self.before_next_run.lock() = Some(Box::new(step));
        self.has_before_next_run.store(true, Ordering::SeqCst);
    }

    /// The step the next run takes first, if one is waiting.
    pub(crate) fn take_before_next_run(&self) -> Option<Box<dyn FnOnce() + Send>> {
        if !self.has_before_next_run.load(Ordering::Relaxed) {
            return None;
        }
        self.has_before_next_run.store(false, Ordering::SeqCst);
        self.before_next_run.lock().take()
    }

    /// Handles alive (slots in the table).
    pub(crate) fn handle_count(&self) -> usize {
        self.handles.lock().slots.len()
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

    /// The oldest context alive (the inspector's default, where a debugger's evaluations run
    /// when it names none).
    pub(crate) fn first_context(&self) -> Option<v8::Global<v8::Context>> {
        let table = self.handles.lock();
        let first = table.slots.iter().filter(|(_, slot)| matches!(slot, Slot::Context(_))).map(|(id, _)| *id).min()?;
        match table.slots.get(&first)? {
            Slot::Context(context) => Some(context.clone()),
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
