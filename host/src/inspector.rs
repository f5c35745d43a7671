//! Debugging and profiling what runs in an isolate: inspector sessions (the Chrome DevTools
//! protocol), the CPU profiler (isolated-vm's `startCpuProfiler`/`stopCpuProfiler`), heap
//! snapshots and the reference count.
//!
//! ```
//! use ivm::{Isolate, IsolateOptions};
//! let isolate = Isolate::new(IsolateOptions::default().inspector())?;
//! let context = isolate.create_context()?;
//! let session = isolate.inspector_session()?;
//! session.dispatch(r#"{"id":1,"method":"Runtime.evaluate","params":{"expression":"6 * 7"}}"#)?;
//! let reply = session.recv().expect("a response");
//! assert!(reply.contains(r#""value":42"#), "{reply}");
//! # drop(context);
//! # Ok::<(), ivm::Error>(())
//! ```

use std::io::Write;
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::data::ThreadCpuProfile;
use crate::error::{Error, Result};
use crate::isolate::inspector::{Agent, Messages, SessionSink};
use crate::isolate::{Isolate, Operation, Session};
use crate::op::{InSession, IsolateOp, LocalWork};
use crate::process::RemoteIsolate;
use crate::process::protocol::{Op, Reply};
use crate::sync::Mutex;

/// A session of an isolate's inspector: Chrome DevTools protocol messages in
/// ([`dispatch`](Self::dispatch)), responses and notifications out ([`recv`](Self::recv),
/// [`next`](Self::next)). Several may be connected at once; dropping one disconnects it (a run
/// it had paused goes on) and leaves the isolate usable.
///
/// While a session has a run paused (a breakpoint, `debugger;`, `Debugger.pause`), the run's
/// thread serves the sessions until `Debugger.resume`; the paused time counts neither as the
/// isolate's CPU time nor against any run's timeout. Messages are dispatched even while
/// JavaScript runs (`Debugger.pause` stops a busy loop). Unread output is bounded (64 MB): a
/// session that falls that far behind is closed.
///
/// What a debugger evaluates while a run is paused (`Runtime.evaluate`,
/// `Debugger.evaluateOnCallFrame`) has no time limit, and V8 holds off interrupts for the
/// whole pause: neither a timeout, `Runtime.terminateExecution` nor
/// [`dispose`](Isolate::dispose) stops an evaluation that never ends, which keeps the isolate's
/// thread (as in Node and Chrome). Give sessions only to those trusted with that thread; with
/// process isolation, ending the worker ([`Isolate::worker_pid`]) frees it.
pub struct InspectorSession {
    id: u64,
    inspector: Inspector,
    messages: Arc<Messages>,
}

/// The inspector a session belongs to.
#[derive(Clone)]
enum Inspector {
    Local(Weak<Agent>),
    /// A worker's: messages cross the worker protocol.
    Remote(Weak<RemoteIsolate>),
}

impl std::fmt::Debug for InspectorSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InspectorSession").field("id", &self.id).finish_non_exhaustive()
    }
}

impl InspectorSession {
    /// Sends a protocol message (a JSON request such as
    /// `{"id":1,"method":"Debugger.enable"}`). It is dispatched soon, on the thread holding
    /// the isolate; its response comes through [`recv`](Self::recv).
    pub fn dispatch(&self, message: impl Into<String>) -> Result<()> {
        match &self.inspector {
            Inspector::Local(agent) => {
                agent.upgrade().ok_or_else(Error::isolate_disposed)?.send(self.id, message.into());
                Ok(())
            }
            Inspector::Remote(remote) => remote.upgrade().ok_or_else(Error::isolate_disposed)?.inspector_dispatch(self.id, message.into()),
        }
    }

    /// The next response or notification, waiting for it; `None` once the session has ended
    /// (the isolate is gone, or the session fell behind).
    pub fn recv(&self) -> Option<String> {
        self.messages.recv(None).unwrap_or(None)
    }

    /// [`recv`](Self::recv), waiting at most `timeout`: `Err` with [`Error::Timeout`] if none
    /// came.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Option<String>> {
        self.messages.recv(Some(timeout)).map_err(|()| Error::Timeout { stack: String::new() })
    }

    /// The next message if one is there.
    pub fn try_recv(&self) -> Option<String> {
        self.messages.try_recv()
    }

    /// The next response or notification, awaited (any executor): `None` once the session
    /// has ended.
    pub fn next(&self) -> impl Future<Output = Option<String>> + Send + 'static + use<> {
        self.messages.next()
    }

    /// Ends a pause of the session's isolate and keeps any from beginning until the guard
    /// drops: for a caller about to wait on the isolate that is also the one that would serve
    /// the pause (a WebAssembly guest inside a call).
    #[cfg(feature = "component")]
    pub(crate) fn hold_pauses(&self) -> PausesHeld {
        self.inspector.hold_pauses(true);
        PausesHeld(self.inspector.clone())
    }
}

/// Pauses of a session's isolate held off (see [`InspectorSession::hold_pauses`]) until
/// this is dropped.
#[cfg(feature = "component")]
pub(crate) struct PausesHeld(Inspector);

#[cfg(feature = "component")]
impl Drop for PausesHeld {
    fn drop(&mut self) {
        self.0.hold_pauses(false);
    }
}

impl Inspector {
    #[cfg(feature = "component")]
    fn hold_pauses(&self, hold: bool) {
        match self {
            Inspector::Local(agent) => {
                if let Some(agent) = agent.upgrade() {
                    agent.hold_pauses(hold);
                }
            }
            Inspector::Remote(remote) => {
                if let Some(remote) = remote.upgrade() {
                    remote.hold_pauses(hold);
                }
            }
        }
    }
}

impl Drop for InspectorSession {
    fn drop(&mut self) {
        match &self.inspector {
            Inspector::Local(agent) => {
                if let Some(agent) = agent.upgrade() {
                    agent.close(self.id);
                }
            }
            Inspector::Remote(remote) => {
                if let Some(remote) = remote.upgrade() {
                    remote.inspector_close(self.id);
                }
            }
        }
    }
}

impl Isolate {
    /// Connects an inspector session (isolated-vm's `createInspectorSession`). The isolate must
    /// have been created with [`IsolateOptions::inspector`](crate::IsolateOptions::inspector),
    /// else `Inspector is not enabled for this isolate`.
    pub fn inspector_session(&self) -> Result<InspectorSession> {
        self.call(Connect)
    }

    /// Waits until a session says it is ready (`Runtime.runIfWaitingForDebugger`, which
    /// DevTools and `node inspect` send once attached), and has that session pause before the
    /// first statement of the isolate's next run: what `node --inspect-brk` does.
    pub fn wait_for_debugger(&self) -> Result<()> {
        if let Some(remote) = self.as_remote() {
            // The worker waits, and has its isolate's next run break.
            return remote.request(Op::WaitForDebugger)?.done();
        }
        // Only a weak handle off the isolate's thread: V8's inspector goes with the isolate.
        let agent = Arc::downgrade(&self.call(AgentOf)?.ok_or_else(not_enabled)?);
        let session = agent.upgrade().and_then(|agent| agent.wait_for_debugger()).ok_or_else(Error::isolate_disposed)?;
        self.call(PauseOnNextStatement { agent, session })
    }

    /// Starts a CPU profile under `title` (isolated-vm's `startCpuProfiler`); starting a title
    /// already started does nothing. Works without [`inspector`](crate::IsolateOptions::inspector).
    ///
    /// V8 samples with `SIGPROF`. When ivm initialises V8 it gives `SIGPROF` a handler that
    /// does nothing if it has its default action (ending the process), since V8 puts back the
    /// disposition it found when the last profile stops, and a sample's signal can still be on
    /// its way; a handler the embedder installed is left alone.
    pub fn start_cpu_profiler(&self, title: &str) -> Result<()> {
        self.call(StartProfiler { title: title.to_owned() })
    }

    /// Stops the profile `title` and returns it (isolated-vm's `stopCpuProfiler`): one profile
    /// for the whole isolate, whichever threads ran it (V8 follows the isolate), in an array
    /// for isolated-vm's shape. An unknown title gives an empty array.
    ///
    /// ```
    /// let isolate = ivm::Isolate::new(Default::default())?;
    /// let context = isolate.create_context()?;
    /// isolate.start_cpu_profiler("work")?;
    /// context.eval::<()>("function spin() { let x = 0; for (let i = 0; i < 1e6; i++) x += i; return x } spin()")?;
    /// let profiles = isolate.stop_cpu_profiler("work")?;
    /// let profile = &profiles[0].profile;
    /// assert!(profile.nodes.iter().any(|n| n.call_frame.function_name == "spin"));
    /// let file = serde_json::to_string(profile).unwrap(); // a .cpuprofile DevTools opens
    /// # drop(file);
    /// # Ok::<(), ivm::Error>(())
    /// ```
    pub fn stop_cpu_profiler(&self, title: &str) -> Result<Vec<ThreadCpuProfile>> {
        self.call(StopProfiler { title: title.to_owned() })
    }

    /// Async form of [`stop_cpu_profiler`](Isolate::stop_cpu_profiler).
    pub fn stop_cpu_profiler_async(&self, title: impl Into<String>) -> Operation<Vec<ThreadCpuProfile>> {
        self.call_async(StopProfiler { title: title.into() })
    }

    /// Writes a heap snapshot (a `.heapsnapshot` DevTools opens) to `out` as V8 makes it, in
    /// chunks, and gives `out` back. V8 needs memory in proportion to the heap to take one,
    /// beyond the isolate's limit; JavaScript does not run meanwhile.
    pub fn heap_snapshot<W: Write + Send + 'static>(&self, out: W) -> Result<W> {
        self.call(HeapSnapshot::new(out))
    }

    /// Async form of [`heap_snapshot`](Isolate::heap_snapshot).
    pub fn heap_snapshot_async<W: Write + Send + 'static>(&self, out: W) -> Operation<W> {
        self.call_async(HeapSnapshot::new(out))
    }

    /// Connects a session of the in-process isolate's inspector whose messages go to `sink`
    /// (a worker's, for its host): its id, and the inspector.
    pub(crate) fn connect_inspector(&self, sink: Arc<dyn SessionSink>) -> Result<(u64, Weak<Agent>)> {
        self.call(ConnectSink(sink))
    }
}

fn not_enabled() -> Error {
    Error::InvalidArgument("Inspector is not enabled for this isolate".into())
}

/// For the steps a worker takes itself (a worker's isolates are in its own process).
fn in_the_worker() -> Error {
    Error::InvalidArgument("this step of the inspector runs in the isolate's worker".into())
}

/// Connects a session (isolate `inspector_session`).
struct Connect;

impl IsolateOp for Connect {
    type Output = InspectorSession;
    type Owned = Connect;

    fn into_owned(self) -> Result<Connect> {
        Ok(self)
    }

    fn local(self) -> impl LocalWork<InspectorSession> {
        InSession(|s: &mut Session<'_>| {
            let agent = Agent::enabled(s.isolate).ok_or_else(not_enabled)?;
            let (id, messages) = agent.connect()?;
            Ok(InspectorSession { id, inspector: Inspector::Local(Arc::downgrade(&agent)), messages })
        })
    }

    fn request(&self, _: &Arc<RemoteIsolate>) -> Result<Op> {
        Ok(Op::InspectorConnect)
    }

    fn reply(&self, reply: Reply, isolate: &Isolate) -> Result<InspectorSession> {
        let id = reply.id()?;
        let remote = isolate.as_remote().ok_or_else(|| Error::Conversion("a worker's reply for an isolate of this process".into()))?;
        let messages = remote.inspector_session(id);
        Ok(InspectorSession { id, inspector: Inspector::Remote(Arc::downgrade(remote)), messages })
    }
}

/// Connects a session whose messages go to a sink (a worker's, for its host).
struct ConnectSink(Arc<dyn SessionSink>);

impl IsolateOp for ConnectSink {
    type Output = (u64, Weak<Agent>);
    type Owned = ConnectSink;

    fn into_owned(self) -> Result<ConnectSink> {
        Ok(self)
    }

    fn local(self) -> impl LocalWork<(u64, Weak<Agent>)> {
        InSession(move |s: &mut Session<'_>| {
            let agent = Agent::enabled(s.isolate).ok_or_else(not_enabled)?;
            Ok((agent.connect_to(self.0)?, Arc::downgrade(&agent)))
        })
    }

    fn request(&self, _: &Arc<RemoteIsolate>) -> Result<Op> {
        Err(Error::InvalidArgument("a worker's own isolates are in its process".into()))
    }

    fn reply(&self, _: Reply, _: &Isolate) -> Result<(u64, Weak<Agent>)> {
        Err(Error::InvalidArgument("a worker's own isolates are in its process".into()))
    }
}

/// The isolate's agent, if the inspector is enabled.
struct AgentOf;

impl IsolateOp for AgentOf {
    type Output = Option<Arc<Agent>>;
    type Owned = AgentOf;

    fn into_owned(self) -> Result<AgentOf> {
        Ok(self)
    }

    fn local(self) -> impl LocalWork<Option<Arc<Agent>>> {
        InSession(|s: &mut Session<'_>| Ok(Agent::enabled(s.isolate)))
    }

    fn request(&self, _: &Arc<RemoteIsolate>) -> Result<Op> {
        Err(in_the_worker())
    }

    fn reply(&self, _: Reply, _: &Isolate) -> Result<Option<Arc<Agent>>> {
        Err(in_the_worker())
    }
}

/// Has a session pause before the next statement (isolate `wait_for_debugger`).
struct PauseOnNextStatement {
    agent: Weak<Agent>,
    session: u64,
}

impl IsolateOp for PauseOnNextStatement {
    type Output = ();
    type Owned = PauseOnNextStatement;

    fn into_owned(self) -> Result<PauseOnNextStatement> {
        Ok(self)
    }

    fn local(self) -> impl LocalWork<()> {
        InSession(move |s: &mut Session<'_>| {
            let (agent, session) = (self.agent, self.session);
            s.inner.before_next_run(move || {
                if let Some(agent) = agent.upgrade() {
                    agent.pause_on_next_statement(session);
                }
            });
            Ok(())
        })
    }

    fn request(&self, _: &Arc<RemoteIsolate>) -> Result<Op> {
        Err(in_the_worker())
    }

    fn reply(&self, _: Reply, _: &Isolate) -> Result<()> {
        Err(in_the_worker())
    }
}

/// Starts profile `title` (isolate `start_cpu_profiler`): an internal session of the
/// inspector's `Profiler` domain.
struct StartProfiler {
    title: String,
}

impl IsolateOp for StartProfiler {
    type Output = ();
    type Owned = StartProfiler;

    fn into_owned(self) -> Result<StartProfiler> {
        Ok(self)
    }

    fn local(self) -> impl LocalWork<()> {
        InSession(move |s: &mut Session<'_>| {
            let agent = Agent::install(s.isolate, s.inner, false);
            agent.start_profile(&self.title, thread_id(), |session| {
                ask(&agent, session, r#"{"id":1,"method":"Profiler.enable"}"#, 1)?;
                ask(&agent, session, r#"{"id":2,"method":"Profiler.start"}"#, 2).map(drop)
            })
        })
    }

    fn request(&self, _: &Arc<RemoteIsolate>) -> Result<Op> {
        Ok(Op::StartProfiler { title: self.title.clone() })
    }

    fn reply(&self, reply: Reply, _: &Isolate) -> Result<()> {
        reply.done()
    }
}

/// Stops profile `title` (isolate `stop_cpu_profiler`).
struct StopProfiler {
    title: String,
}

impl IsolateOp for StopProfiler {
    type Output = Vec<ThreadCpuProfile>;
    type Owned = StopProfiler;

    fn into_owned(self) -> Result<StopProfiler> {
        Ok(self)
    }

    fn local(self) -> impl LocalWork<Vec<ThreadCpuProfile>> {
        InSession(move |s: &mut Session<'_>| {
            let Some(agent) = Agent::of(s.isolate) else { return Ok(Vec::new()) };
            let Some((session, thread_id)) = agent.take_profile(&self.title) else { return Ok(Vec::new()) };
            let stopped = ask(&agent, &session, r#"{"id":3,"method":"Profiler.stop"}"#, 3);
            agent.close(session.0);
            agent.drain();
            let profile = stopped?.get("profile").cloned().ok_or_else(|| Error::Conversion("the profiler gave no profile".into()))?;
            let profile = serde_json::from_value(profile).map_err(|e| Error::Conversion(format!("the profiler's profile: {e}")))?;
            Ok(vec![ThreadCpuProfile::new(thread_id, profile)])
        })
    }

    fn request(&self, _: &Arc<RemoteIsolate>) -> Result<Op> {
        Ok(Op::StopProfiler { title: self.title.clone() })
    }

    fn reply(&self, reply: Reply, _: &Isolate) -> Result<Vec<ThreadCpuProfile>> {
        reply.profiles()
    }
}

/// Dispatches `message` to an internal session now and reads the result of response `id`.
fn ask(agent: &Agent, (session, messages): &(u64, Arc<Messages>), message: &str, id: u64) -> Result<serde_json::Value> {
    agent.dispatch_now(*session, message);
    while let Some(reply) = messages.try_recv() {
        let mut reply: serde_json::Value = serde_json::from_str(&reply).map_err(|e| Error::Conversion(format!("the inspector's reply: {e}")))?;
        if reply.get("id").and_then(serde_json::Value::as_u64) != Some(id) {
            continue;
        }
        if let Some(error) = reply.get("error") {
            let message = error.get("message").and_then(serde_json::Value::as_str).unwrap_or("the inspector refused");
            return Err(Error::InvalidArgument(message.to_owned()));
        }
        return Ok(reply.get_mut("result").map(serde_json::Value::take).unwrap_or_default());
    }
    Err(Error::Conversion("the inspector did not answer".into()))
}

/// The operating system's id of this thread.
fn thread_id() -> u64 {
    // SAFETY: a plain system call.
    u64::try_from(unsafe { libc::gettid() }).unwrap_or_default()
}

/// A heap snapshot into `out` (isolate `heap_snapshot`). A worker's comes in chunks, written
/// to `out` as they arrive (its id in `snapshot`).
struct HeapSnapshot<W> {
    out: Mutex<Option<W>>,
    snapshot: Mutex<Option<u64>>,
}

impl<W> HeapSnapshot<W> {
    fn new(out: W) -> HeapSnapshot<W> {
        HeapSnapshot { out: Mutex::new(Some(out)), snapshot: Mutex::default() }
    }
}

fn writer_gone() -> Error {
    Error::InvalidArgument("the heap snapshot's writer is gone".into())
}

fn cannot_write(e: &std::io::Error) -> Error {
    Error::InvalidArgument(format!("cannot write the heap snapshot: {e}"))
}

impl<W: Write + Send + 'static> IsolateOp for HeapSnapshot<W> {
    type Output = W;
    type Owned = HeapSnapshot<W>;

    fn into_owned(self) -> Result<HeapSnapshot<W>> {
        Ok(self)
    }

    fn local(self) -> impl LocalWork<W> {
        InSession(move |s: &mut Session<'_>| {
            let mut out = self.out.lock().take().ok_or_else(writer_gone)?;
            let mut failed = None;
            s.isolate.take_heap_snapshot(|chunk| match out.write_all(chunk) {
                Ok(()) => true,
                Err(e) => {
                    failed = Some(e);
                    false
                }
            });
            match failed.map_or_else(|| out.flush(), Err) {
                Ok(()) => Ok(out),
                Err(e) => Err(cannot_write(&e)),
            }
        })
    }

    fn request(&self, remote: &Arc<RemoteIsolate>) -> Result<Op> {
        let out = self.out.lock().take().ok_or_else(writer_gone)?;
        let snapshot = remote.snapshot_into(Box::new(out));
        *self.snapshot.lock() = Some(snapshot);
        Ok(Op::HeapSnapshot { snapshot })
    }

    fn reply(&self, reply: Reply, isolate: &Isolate) -> Result<W> {
        // Taken back first, so that a failed snapshot does not leave it behind.
        let taken = self.snapshot.lock().and_then(|id| isolate.as_remote()?.snapshot_done(id));
        reply.done()?;
        let (out, failed) = taken.ok_or_else(writer_gone)?;
        if let Some(e) = failed {
            return Err(cannot_write(&e));
        }
        let mut out = *out.into_any().downcast::<W>().map_err(|_| Error::Conversion("the heap snapshot's writer".into()))?;
        out.flush().map_err(|e| cannot_write(&e))?;
        Ok(out)
    }
}
