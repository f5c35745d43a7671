//! The inspector of an in-process isolate: V8's inspector, its sessions, and the message loop a
//! run waits in while a debugger has it paused.
//!
//! Messages for V8 go through the agent's inbox and are dispatched by whichever thread holds
//! the isolate: a job of the isolate when it is idle, an interrupt when JavaScript runs (so
//! `Debugger.pause` reaches a spinning script), and the paused run's own thread while V8 waits
//! in [`V8InspectorClientImpl::run_message_loop_on_pause`]. While paused, the isolate's clock
//! and its runs' deadlines stand still: time at a breakpoint is neither CPU time nor part of a
//! timeout.
//!
//! What V8 says back goes to each session's [`Messages`], bounded in bytes: a session that does
//! not read is closed rather than let the host's memory grow.

use std::collections::{HashMap, VecDeque};
use std::ffi::c_void;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use v8::inspector::{
    Channel, ChannelImpl, StringBuffer, StringView, V8Inspector, V8InspectorClient, V8InspectorClientImpl,
    V8InspectorClientTrustLevel, V8InspectorSession,
};

use super::IsolateInner;
use crate::sync::{Condvar, Mutex};

/// The one context group of an isolate's contexts.
const GROUP: i32 = 1;

/// Bytes of responses and notifications a session may have unread before it is closed.
const UNREAD_LIMIT: usize = 64 << 20;

/// A value V8's inspector objects are wrapped in: they are used only by the thread holding the
/// isolate, which V8 requires of them, and so may live in state other threads reach.
struct OnIsolate<T>(T);

// SAFETY: see `OnIsolate`: every use is by the thread holding the isolate (a job or interrupt
// of the isolate, or the paused run), one at a time.
unsafe impl<T> Send for OnIsolate<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for OnIsolate<T> {}

/// What V8 said to one session, waiting to be read.
pub(crate) struct Messages {
    state: Mutex<MessagesState>,
    arrived: Condvar,
    /// Held to [`UNREAD_LIMIT`] (a debugger's); the host's own sessions read what they asked.
    bounded: bool,
}

impl Default for Messages {
    fn default() -> Messages {
        Messages { state: Mutex::default(), arrived: Condvar::default(), bounded: true }
    }
}

#[derive(Default)]
struct MessagesState {
    queue: VecDeque<String>,
    bytes: usize,
    /// No more will come: the session or the isolate is gone (or fell behind).
    closed: bool,
    wakers: Vec<Waker>,
}

impl Messages {
    pub(crate) fn push(&self, message: String) {
        let mut state = self.state.lock();
        if state.closed {
            return;
        }
        if self.bounded && state.bytes + message.len() > UNREAD_LIMIT {
            // The reader fell behind: it is told by the end of its messages.
            state.closed = true;
        } else {
            state.bytes += message.len();
            state.queue.push_back(message);
        }
        self.wake(state);
    }

    pub(crate) fn close(&self) {
        let mut state = self.state.lock();
        state.closed = true;
        self.wake(state);
    }

    fn wake(&self, mut state: crate::sync::MutexGuard<'_, MessagesState>) {
        let wakers = std::mem::take(&mut state.wakers);
        drop(state);
        self.arrived.notify_all();
        wakers.into_iter().for_each(Waker::wake);
    }

    fn take(state: &mut MessagesState) -> Option<String> {
        let message = state.queue.pop_front()?;
        state.bytes -= message.len();
        Some(message)
    }

    /// The next message, waiting up to `timeout` (`None`: until one comes or the session ends).
    /// `Ok(None)`: the session has ended; `Err(())`: the time ran out.
    pub(crate) fn recv(&self, timeout: Option<Duration>) -> Result<Option<String>, ()> {
        let until = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut state = self.state.lock();
        loop {
            if let Some(message) = Self::take(&mut state) {
                return Ok(Some(message));
            }
            if state.closed {
                return Ok(None);
            }
            state = match until {
                None => self.arrived.wait(state),
                Some(until) => {
                    let left = until.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(());
                    }
                    self.arrived.wait_timeout(state, left).0
                }
            };
        }
    }

    /// The next message, if one is there.
    pub(crate) fn try_recv(&self) -> Option<String> {
        Self::take(&mut self.state.lock())
    }

    /// The next message, awaited: `None` once the session has ended.
    pub(crate) fn next(self: &Arc<Self>) -> impl Future<Output = Option<String>> + Send + 'static + use<> {
        let messages = self.clone();
        std::future::poll_fn(move |cx| {
            let mut state = messages.state.lock();
            if let Some(message) = Self::take(&mut state) {
                return Poll::Ready(Some(message));
            }
            if state.closed {
                return Poll::Ready(None);
            }
            if !state.wakers.iter().any(|waker| waker.will_wake(cx.waker())) {
                state.wakers.push(cx.waker().clone());
            }
            Poll::Pending
        })
    }
}

/// Where a session's responses and notifications go: its [`Messages`] in this process, the
/// host's side of it for a worker's session.
pub(crate) trait SessionSink: Send + Sync {
    /// A message from V8 (on the thread holding the isolate: it must not block).
    fn message(&self, text: String);
    /// The session has ended.
    fn closed(&self);
}

impl SessionSink for Messages {
    fn message(&self, text: String) {
        self.push(text);
    }

    fn closed(&self) {
        self.close();
    }
}

/// A session's channel: V8's responses and notifications, to its sink.
struct SessionChannel(Arc<dyn SessionSink>);

impl ChannelImpl for SessionChannel {
    fn send_response(&self, _call_id: i32, message: v8::UniquePtr<StringBuffer>) {
        self.0.message(text(message));
    }

    fn send_notification(&self, message: v8::UniquePtr<StringBuffer>) {
        self.0.message(text(message));
    }

    fn flush_protocol_notifications(&self) {}
}

fn text(message: v8::UniquePtr<StringBuffer>) -> String {
    message.as_ref().map(|buffer| buffer.string().to_string()).unwrap_or_default()
}

/// Hears when a run pauses in the debugger (`true`) and goes on (`false`).
pub(crate) type PauseListener = Arc<dyn Fn(bool) + Send + Sync>;

/// The inspector of one isolate.
pub(crate) struct Agent {
    /// Taken (and dropped with the isolate locked) when the isolate is torn down.
    v8: Mutex<Option<OnIsolate<V8Inspector>>>,
    sessions: Mutex<HashMap<u64, Session>>,
    /// The CPU profiles started, by title: their internal session, and the thread that
    /// started them.
    profiles: Mutex<HashMap<String, (Internal, u64)>>,
    inbox: Mutex<Inbox>,
    arrived: Condvar,
    next_session: AtomicU64,
    /// Whether the isolate was created with the inspector (sessions may connect), or the
    /// agent was made for the profiler only.
    pub(crate) enabled: bool,
    /// The session whose message is being dispatched (for `run_if_waiting_for_debugger`).
    dispatching: AtomicU64,
    /// A drain is asked for (a job of the isolate and an interrupt; whichever comes first
    /// drains, and clears this so that later messages ask again).
    drain_queued: AtomicBool,
    /// This agent's number in `AGENTS`: what its interrupts carry to find it.
    id: u64,
    /// Told when a run pauses (`true`) and goes on (`false`): a worker tells its host.
    on_pause: Mutex<Option<PauseListener>>,
    /// Callers waiting on the isolate that cannot serve a pause (see `hold_pauses`).
    pauses_held: AtomicUsize,
    isolate: Weak<IsolateInner>,
    /// V8's isolate, for the client's callbacks (which run on the thread holding it).
    isolate_ptr: OnIsolate<v8::UnsafeRawIsolatePtr>,
    handle: v8::IsolateHandle,
    me: Weak<Agent>,
}

/// A session the host keeps for itself (a CPU profile): its id and messages.
pub(crate) type Internal = (u64, Arc<Messages>);

struct Session {
    v8: Arc<OnIsolate<V8InspectorSession>>,
    sink: Arc<dyn SessionSink>,
}

#[derive(Default)]
struct Inbox {
    queue: VecDeque<(u64, Incoming)>,
    /// V8 asked the pause loop to end.
    quit: bool,
    /// A run waits in the pause loop.
    paused: bool,
    /// The session that sent `Runtime.runIfWaitingForDebugger`, if one has.
    debugger_ready: Option<u64>,
    /// The isolate is gone: waits end.
    closed: bool,
}

enum Incoming {
    Message(String),
    Close,
}

struct Client(Weak<Agent>);

impl V8InspectorClientImpl for Client {
    fn run_message_loop_on_pause(&self, _context_group_id: i32) {
        if let Some(agent) = self.0.upgrade() {
            agent.pause_loop();
        }
    }

    fn quit_message_loop_on_pause(&self) {
        if let Some(agent) = self.0.upgrade() {
            agent.inbox.lock().quit = true;
            agent.arrived.notify_all();
        }
    }

    fn run_if_waiting_for_debugger(&self, _context_group_id: i32) {
        if let Some(agent) = self.0.upgrade() {
            agent.debugger_ready();
        }
    }

    /// Where a debugger's evaluations run when it names no context (`Runtime.evaluate` from a
    /// console): the isolate's oldest context, as Node's main context.
    fn ensure_default_context_in_group(&self, _context_group_id: i32) -> Option<v8::Local<'_, v8::Context>> {
        let agent = self.0.upgrade()?;
        let context = agent.isolate.upgrade()?.first_context()?;
        // SAFETY: V8 calls this on the thread holding the isolate, inside a dispatch, with a
        // handle scope of its own open: the handle made here lives in it, as V8 expects.
        let mut raw = agent.isolate_ptr.0;
        let isolate = unsafe { v8::Isolate::ref_from_raw_isolate_ptr_mut(&mut raw) };
        v8::callback_scope!(unsafe scope, isolate);
        let context = v8::Local::new(scope, &context);
        // SAFETY: the handle belongs to V8's scope (see above), not to `scope`.
        Some(unsafe { std::mem::transmute::<v8::Local<'_, v8::Context>, v8::Local<'_, v8::Context>>(context) })
    }
}

impl Agent {
    /// The isolate's agent, made (and kept in the isolate) on first use. `enable`: sessions
    /// may connect (the isolate was created with the inspector).
    pub(crate) fn install(isolate: &mut v8::Isolate, inner: &Arc<IsolateInner>, enable: bool) -> Arc<Agent> {
        if let Some(agent) = Agent::of(isolate) {
            return agent;
        }
        let handle = isolate.thread_safe_handle();
        // SAFETY: V8's isolate outlives its agent (kept in the isolate's slots).
        let isolate_ptr = OnIsolate(unsafe { isolate.as_raw_isolate_ptr() });
        let agent = Arc::new_cyclic(|me: &Weak<Agent>| {
            let client = V8InspectorClient::new(Box::new(Client(me.clone())));
            Agent {
                v8: Mutex::new(Some(OnIsolate(V8Inspector::create(isolate, client)))),
                sessions: Mutex::default(),
                profiles: Mutex::default(),
                inbox: Mutex::default(),
                arrived: Condvar::default(),
                next_session: AtomicU64::new(1),
                enabled: enable,
                dispatching: AtomicU64::new(0),
                drain_queued: AtomicBool::new(false),
                id: NEXT_AGENT.fetch_add(1, Ordering::Relaxed),
                on_pause: Mutex::default(),
                pauses_held: AtomicUsize::new(0),
                isolate: Arc::downgrade(inner),
                isolate_ptr,
                handle,
                me: me.clone(),
            }
        });
        AGENTS.lock().insert(agent.id, Arc::downgrade(&agent));
        isolate.set_slot(agent.clone());
        // Disposing ends a pause and a wait for a debugger; V8's inspector goes with the
        // isolate locked, before V8 frees the isolate.
        let told = Arc::downgrade(&agent);
        inner.on_dispose(move || {
            if let Some(agent) = told.upgrade() {
                agent.fail_all();
            }
        });
        inner.on_teardown(|isolate| {
            if let Some(agent) = isolate.remove_slot::<Arc<Agent>>() {
                agent.tear_down();
            }
        });
        agent
    }

    /// Drops V8's inspector and sessions (with the isolate locked, before V8 frees it).
    fn tear_down(&self) {
        self.fail_all();
        self.profiles.lock().clear();
        let sessions = std::mem::take(&mut *self.sessions.lock());
        drop(sessions);
        let inspector = self.v8.lock().take();
        drop(inspector);
    }

    /// The agent of `isolate`, if it has one.
    pub(crate) fn of(isolate: &v8::Isolate) -> Option<Arc<Agent>> {
        isolate.get_slot::<Arc<Agent>>().cloned()
    }

    /// The agent of `isolate` if sessions may connect (it was created with the inspector).
    pub(crate) fn enabled(isolate: &v8::Isolate) -> Option<Arc<Agent>> {
        Agent::of(isolate).filter(|agent| agent.enabled)
    }

    /// Reports a new context, under `name`, to the sessions (and those to come).
    pub(crate) fn context_created(&self, context: v8::Local<v8::Context>, name: &str) {
        if let Some(inspector) = &*self.v8.lock() {
            inspector.0.context_created(context, GROUP, StringView::from(name.as_bytes()), StringView::empty());
        }
    }

    /// Connects a session (with the isolate held); its id, and where its messages go.
    pub(crate) fn connect(&self) -> crate::error::Result<(u64, Arc<Messages>)> {
        let messages = Arc::<Messages>::default();
        Ok((self.connect_to(messages.clone())?, messages))
    }

    /// Connects a session whose messages go to `sink` (with the isolate held); its id.
    pub(crate) fn connect_to(&self, sink: Arc<dyn SessionSink>) -> crate::error::Result<u64> {
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let channel = Channel::new(Box::new(SessionChannel(sink.clone())));
        let session = {
            let inspector = self.v8.lock();
            let inspector = inspector.as_ref().ok_or_else(crate::error::Error::isolate_disposed)?;
            inspector.0.connect(GROUP, channel, StringView::empty(), V8InspectorClientTrustLevel::FullyTrusted)
        };
        self.sessions.lock().insert(id, Session { v8: Arc::new(OnIsolate(session)), sink });
        Ok(id)
    }

    /// Starts profile `title` (unless it is running) in an internal session, with `start`
    /// (with the isolate held).
    pub(crate) fn start_profile(&self, title: &str, thread: u64, start: impl FnOnce(&Internal) -> crate::error::Result<()>) -> crate::error::Result<()> {
        if self.profiles.lock().contains_key(title) {
            return Ok(());
        }
        let messages = Arc::new(Messages { bounded: false, ..Messages::default() });
        let session = (self.connect_to(messages.clone())?, messages);
        if let Err(e) = start(&session) {
            self.close(session.0);
            self.drain();
            return Err(e);
        }
        self.profiles.lock().insert(title.to_owned(), (session, thread));
        Ok(())
    }

    /// The session of profile `title`, which is no longer running, and its thread.
    pub(crate) fn take_profile(&self, title: &str) -> Option<(Internal, u64)> {
        self.profiles.lock().remove(title)
    }

    /// Queues `message` for session `id` and sees that it is dispatched soon: by the paused run,
    /// by an interrupt of the JavaScript running, or by a job of the idle isolate.
    pub(crate) fn send(&self, id: u64, message: String) {
        self.queue(id, Incoming::Message(message));
    }

    /// Disconnects session `id` (after the messages sent before).
    pub(crate) fn close(&self, id: u64) {
        self.queue(id, Incoming::Close);
    }

    fn queue(&self, id: u64, incoming: Incoming) {
        let paused = {
            let mut inbox = self.inbox.lock();
            inbox.queue.push_back((id, incoming));
            inbox.paused
        };
        if paused {
            self.arrived.notify_all();
        } else {
            self.schedule_drain();
        }
    }

    /// Has the inbox drained soon: by an interrupt of the JavaScript running, or by a job of
    /// the idle isolate (whichever comes first; the other finds it empty).
    fn schedule_drain(&self) {
        let Some(inner) = self.isolate.upgrade() else { return self.fail_all() };
        if self.drain_queued.swap(true, Ordering::SeqCst) {
            return;
        }
        // Each drain asks for an interrupt of its own: one asked for while the isolate was
        // idle may run only at its next JavaScript, after later messages were queued.
        // The interrupt carries the agent's number, not a pointer: V8 drops the interrupts of
        // an isolate it frees without running them, so whatever one owned would leak.
        self.handle.request_interrupt(drain_interrupt, self.id as usize as *mut c_void);
        let me = self.me.clone();
        inner.post(move |session| {
            if let Some(agent) = me.upgrade() {
                agent.drain_queued.store(false, Ordering::SeqCst);
                agent.drain_idle(session.isolate, session.inner);
            }
        });
    }

    /// Dispatches what is in the inbox as a job of the idle isolate, in its oldest context
    /// (what a debugger's `Runtime.evaluate` without a context runs in, as in Node's main
    /// context).
    fn drain_idle(&self, isolate: &mut v8::Isolate, inner: &IsolateInner) {
        match inner.first_context() {
            Some(context) => {
                v8::scope!(let scope, isolate);
                let context = v8::Local::new(scope, &context);
                let _entered = v8::ContextScope::new(scope, context);
                self.drain();
            }
            None => self.drain(),
        }
    }

    /// Dispatches what is in the inbox (with the isolate held).
    pub(crate) fn drain(&self) {
        loop {
            let Some((id, incoming)) = self.inbox.lock().queue.pop_front() else { return };
            match incoming {
                Incoming::Message(message) => self.dispatch(id, &message),
                Incoming::Close => {
                    let session = self.sessions.lock().remove(&id);
                    if let Some(session) = session {
                        session.sink.closed();
                        // Disconnecting resumes a run this session had paused; without a
                        // debugger left (the host's own sessions aside), nothing holds it.
                        drop(session);
                        if !self.debuggers_left() {
                            self.inbox.lock().quit = true;
                        }
                    }
                }
            }
        }
    }

    /// Whether a session other than the host's own (a CPU profile's) is connected.
    fn debuggers_left(&self) -> bool {
        let profiling: Vec<u64> = self.profiles.lock().values().map(|((id, _), _)| *id).collect();
        self.sessions.lock().keys().any(|id| !profiling.contains(id))
    }

    /// A caller that cannot serve a pause (a WebAssembly guest inside a call, which is where
    /// its sessions are served from) waits on the isolate (`true`), or no longer (`false`).
    /// While any does, a pause ends at once (the run goes on) and none begins: the run would
    /// otherwise wait for a debugger that waits for it.
    pub(crate) fn hold_pauses(&self, hold: bool) {
        if hold {
            self.pauses_held.fetch_add(1, Ordering::SeqCst);
        } else {
            let let_go = self.pauses_held.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
            debug_assert!(let_go.is_ok(), "pauses let go that were not held");
        }
        // Under the inbox's lock, so that a pause loop between its check and its wait hears it.
        let _inbox = self.inbox.lock();
        self.arrived.notify_all();
    }

    fn pauses_held(&self) -> bool {
        self.pauses_held.load(Ordering::SeqCst) > 0
    }

    /// Has `told` hear when a run pauses (`true`) and goes on (`false`).
    pub(crate) fn on_pause(&self, told: PauseListener) {
        *self.on_pause.lock() = Some(told);
    }

    /// Dispatches `message` for session `id` now (with the isolate held): its response is in
    /// the session's messages when this returns.
    pub(crate) fn dispatch_now(&self, id: u64, message: &str) {
        self.drain();
        self.dispatch(id, message);
    }

    /// Dispatches `message` to session `id`, if it is connected (with the isolate held; the
    /// sessions are not locked meanwhile: V8 may call back into the agent).
    fn dispatch(&self, id: u64, message: &str) {
        if let Some(session) = self.session(id) {
            self.dispatching.store(id, Ordering::SeqCst);
            session.0.dispatch_protocol_message(StringView::from(message.as_bytes()));
        }
    }

    fn session(&self, id: u64) -> Option<Arc<OnIsolate<V8InspectorSession>>> {
        self.sessions.lock().get(&id).map(|s| s.v8.clone())
    }

    /// Where V8 waits while a debugger has the isolate paused: serves the sessions until V8
    /// says to go on, with the isolate's clock and deadlines stopped.
    fn pause_loop(&self) {
        if self.pauses_held() {
            return;
        }
        let inner = self.isolate.upgrade();
        let since = Instant::now();
        if let Some(inner) = &inner {
            inner.clock.stop();
            inner.deadlines.pause();
        }
        {
            let mut inbox = self.inbox.lock();
            inbox.paused = true;
            inbox.quit = false;
        }
        let told = self.on_pause.lock().clone();
        if let Some(told) = &told {
            told(true);
        }
        loop {
            self.drain();
            let mut inbox = self.inbox.lock();
            if inbox.quit || inbox.closed || self.pauses_held() {
                inbox.quit = false;
                inbox.paused = false;
                break;
            }
            if inbox.queue.is_empty() {
                drop(self.arrived.wait_timeout(inbox, Duration::from_millis(100)));
            }
        }
        if let Some(told) = &told {
            told(false);
        }
        if let Some(inner) = &inner {
            inner.deadlines.resume(since.elapsed());
            inner.clock.start();
        }
        // What came after the last drain, before the loop ended, is dispatched as usual.
        if !self.inbox.lock().queue.is_empty() {
            self.schedule_drain();
        }
    }

    fn debugger_ready(&self) {
        self.inbox.lock().debugger_ready = Some(self.dispatching.load(Ordering::SeqCst));
        self.arrived.notify_all();
    }

    /// Waits until a session sends `Runtime.runIfWaitingForDebugger`: that session's id, or
    /// `None` if the isolate went away first.
    pub(crate) fn wait_for_debugger(&self) -> Option<u64> {
        let mut inbox = self.inbox.lock();
        // Disposing the isolate closes the inbox (see `install`).
        while inbox.debugger_ready.is_none() && !inbox.closed {
            inbox = self.arrived.wait(inbox);
        }
        inbox.debugger_ready.filter(|_| !inbox.closed)
    }

    /// Has session `id` pause before the next statement this thread runs in the isolate (with
    /// the isolate held, right before running it: V8 keeps the request with the thread's
    /// state of the isolate).
    pub(crate) fn pause_on_next_statement(&self, id: u64) {
        if let Some(session) = self.session(id) {
            session.0.schedule_pause_on_next_statement(StringView::from(&b"Break on start"[..]), StringView::empty());
        }
    }

    /// The isolate is gone: every session ends, and a waiting debugger is not waited for.
    pub(crate) fn fail_all(&self) {
        self.inbox.lock().closed = true;
        self.arrived.notify_all();
        for (_, session) in self.sessions.lock().iter() {
            session.sink.closed();
        }
    }
}

impl Drop for Agent {
    /// Torn down with its isolate (`tear_down`); if not (the last handle went elsewhere), V8's
    /// objects are left rather than touched without the isolate's lock.
    fn drop(&mut self) {
        AGENTS.lock().remove(&self.id);
        self.fail_all();
        if self.v8.get_mut().is_some() {
            std::mem::forget(std::mem::take(self.sessions.get_mut()));
            std::mem::forget(self.v8.get_mut().take());
        }
    }
}

/// The agents of the process by number, for their interrupts to find them.
static AGENTS: std::sync::LazyLock<Mutex<HashMap<u64, Weak<Agent>>>> = std::sync::LazyLock::new(Mutex::default);
static NEXT_AGENT: AtomicU64 = AtomicU64::new(1);

/// The interrupt that drains the inbox while JavaScript runs.
unsafe extern "C" fn drain_interrupt(_isolate: v8::UnsafeRawIsolatePtr, data: *mut c_void) {
    // The registry's lock is let go before the agent is used (or dropped, which takes it).
    let agent = AGENTS.lock().get(&(data as usize as u64)).and_then(Weak::upgrade);
    if let Some(agent) = agent {
        // Later messages ask again (the job may wait behind the JavaScript running).
        agent.drain_queued.store(false, Ordering::SeqCst);
        agent.drain();
    }
}
