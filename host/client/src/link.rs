//! [`Link`]: one worker process and the pipes to it: requests out, replies and calls in, and
//! what happens when the worker dies (the only way a link ends besides retirement).

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use crate::ceiling::{self, Cgroup};
use crate::error::{Error, Result};
use crate::isolate::IsolateEvents;
use crate::protocol::{self, Answer, FromWorker, Id, Op, Reply, ToWorker, WORKER_ARG};
use crate::sandbox::{SandboxPolicy, SandboxReport};
use crate::spin::PollingPipe;
use crate::sync::{Condvar, Mutex};
use crate::tls::{self, Origin};
use crate::watchdog::Timer;

/// How long a new worker has to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(20);
/// Lines of the worker's standard error kept for the crash report, and bytes kept of each.
const STDERR_LINES: usize = 64;
const STDERR_LINE_BYTES: u64 = 1000;
/// The environment variables a worker gets (it starts with nothing else of the host's).
const WORKER_ENV: [&str; 3] = ["IVM_V8_FLAGS", "IVM_SPIN_US", "TZ"];
/// Bytes of console output and rejections a worker may have queued for the embedder's
/// handlers. Past it the host stops reading from the worker until the handlers catch up, so
/// a slow reader of the output slows the worker down instead of growing the host.
const EVENT_BYTES: usize = 8 << 20;

type ReplySender = oneshot::Sender<Result<Reply>>;

/// One worker process: the pipes to it, the requests waiting for its replies, and the
/// isolates it hosts (whose events it routes).
pub struct Link {
    pub pid: u32,
    /// `None` once retired (closing it makes the worker exit).
    input: Mutex<Option<ChildStdin>>,
    kill: Arc<KillSwitch>,
    pending: Mutex<HashMap<u64, Pending>>,
    next_request: AtomicU64,
    isolates: Mutex<HashMap<Id, Weak<dyn IsolateEvents>>>,
    /// Why the worker is gone, once it is.
    crashed: OnceLock<String>,
    /// What confined the worker, as its hello said.
    sandbox: OnceLock<SandboxReport>,
    retired: AtomicBool,
    /// The tenant whose isolates it hosts.
    pub tenant: Option<String>,
    /// What the worker has been sent once and keeps (startup snapshots), by name.
    holds: Mutex<HashSet<String>>,
    /// Isolates leased to it (changed under the pool's lock).
    pub hosted: AtomicUsize,
    /// The OS memory ceiling set on it, in bytes, and the memory limits of its isolates, in MB.
    ceiling: Mutex<Ceiling>,
    /// Its cgroup, where the host may make one (see `ceiling.rs`).
    cgroup: Option<Cgroup>,
    /// Console output and unhandled rejections go to the embedder's handlers in order on a
    /// thread of their own: a handler that calls back into the worker must not stop the
    /// reader that would read the answer. While handlers are behind, replies queue after
    /// them, so output comes before the result of the run that printed it; unless a handler
    /// waits for a reply itself (then what it waits for may be among them).
    events: OnceLock<std::sync::mpsc::Sender<Event>>,
    /// Events queued and not yet handled.
    events_behind: Arc<AtomicUsize>,
    /// Bytes of the events queued and not yet handled (see [`EVENT_BYTES`]).
    event_bytes: Arc<(Mutex<usize>, Condvar)>,
    /// Requests sent by event handlers and not yet answered.
    handler_requests: AtomicUsize,
}

type Event = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct Ceiling {
    /// `RLIMIT_DATA`.
    bytes: u64,
    /// The cgroup's limit, if it has one.
    cgroup_bytes: u64,
    fixed: bool,
    limits_mb: u64,
}

struct Pending {
    reply: ReplySender,
    /// What calls this request makes back into the host continue (see [`tls`]).
    origin: Origin,
    /// Sent by an event handler of this link: its reply cannot wait behind that handler.
    from_handler: bool,
    /// How long after the run starts the worker is killed if it has not answered.
    escalate_after: Option<Duration>,
    /// Armed when the worker says the run started.
    escalation: Option<Timer>,
    escalated: Arc<AtomicBool>,
    /// The isolate it runs on.
    isolate: Option<Id>,
    /// Its escalation was taken back while a debugger has the isolate paused.
    suspended: bool,
}

/// Kills the worker process, unless it has already been reaped (its pid may be reused).
struct KillSwitch {
    pid: u32,
    reaped: Mutex<bool>,
    /// Set when ivm killed it because a script overstayed its timeout.
    by_escalation: AtomicBool,
}

impl KillSwitch {
    fn kill(&self) {
        let reaped = self.reaped.lock();
        if !*reaped {
            // SAFETY: plain syscall on a child this process has not reaped.
            unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGKILL) };
        }
    }
}

/// Bytes of the automatic ceiling. `RLIMIT_DATA` counts writable mappings, touched or not,
/// and V8 maps about 530 MB of them per isolate (its code range and heap reservations), so
/// the ceiling is a base for V8 and the headroom the memory guard grants a heap at its limit
/// (up to 2 GB, so V8 reaches its own errors), plus per isolate 1 GB (its mappings, and those
/// of a disposed predecessor not yet freed) and twice its memory limit.
fn automatic_ceiling(limits_mb: u64, isolates: u64) -> u64 {
    (3072 + 2 * limits_mb + 1024 * isolates) << 20
}

impl Link {
    /// Starts a worker and waits for its hello.
    pub fn spawn(program: &Path, fixed_ceiling_mb: Option<u64>, sandbox: SandboxPolicy, tenant: Option<String>) -> Result<Arc<Link>> {
        let ceiling = fixed_ceiling_mb.map_or_else(|| automatic_ceiling(0, 0), |mb| mb << 20);
        let cgroup_bytes = fixed_ceiling_mb.map_or_else(|| ceiling::for_isolates(0, 0), |mb| mb << 20);
        let cgroup = Cgroup::create(cgroup_bytes);
        let joiner = cgroup.as_ref().map(Cgroup::joiner);
        let mut command = Command::new(program);
        command.arg(WORKER_ARG).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        // Nothing of the host's environment (its secrets) but what the worker needs.
        command.env_clear().envs(WORKER_ENV.iter().filter_map(|name| Some((name, std::env::var_os(name)?))));
        command.env(SandboxPolicy::ENV, sandbox.as_str());
        // SAFETY: the closure runs in the child between fork and exec and only makes
        // async-signal-safe syscalls.
        unsafe {
            // (No PR_SET_PDEATHSIG: it fires when the *thread* that started the worker ends. The
            // worker exits when its input closes, which the kernel does when the host dies.)
            command.pre_exec(move || {
                if let Some(joiner) = &joiner {
                    joiner.join();
                }
                let limit = libc::rlimit { rlim_cur: ceiling, rlim_max: libc::RLIM_INFINITY };
                libc::setrlimit(libc::RLIMIT_DATA, &limit);
                // No set-uid or file-capability gains for the worker or what it runs.
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                Ok(())
            });
        }
        let mut child = command
            .spawn()
            .map_err(|e| Error::WorkerCrashed { reason: format!("cannot start the worker program {}: {e}", program.display()) })?;
        let pid = child.id();
        let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let (Some(stdin), Some(stdout), Some(stderr)) = (stdin, stdout, stderr) else {
            unreachable!("all three pipes were asked for")
        };
        let link = Arc::new(Link {
            pid,
            input: Mutex::new(Some(stdin)),
            kill: Arc::new(KillSwitch { pid, reaped: Mutex::new(false), by_escalation: AtomicBool::new(false) }),
            pending: Mutex::default(),
            next_request: AtomicU64::new(1),
            isolates: Mutex::default(),
            crashed: OnceLock::new(),
            sandbox: OnceLock::new(),
            retired: AtomicBool::new(false),
            tenant,
            holds: Mutex::default(),
            hosted: AtomicUsize::new(0),
            ceiling: Mutex::new(Ceiling { bytes: ceiling, cgroup_bytes, fixed: fixed_ceiling_mb.is_some(), limits_mb: 0 }),
            cgroup,
            events: OnceLock::new(),
            events_behind: Arc::default(),
            event_bytes: Arc::default(),
            handler_requests: AtomicUsize::new(0),
        });
        let tail = Arc::new(StderrTail::default());
        let writer = tail.clone();
        std::thread::Builder::new()
            .name(format!("ivm-worker-{pid}-stderr"))
            .spawn(move || writer.read(stderr))
            .map_err(|e| Error::WorkerCrashed { reason: format!("cannot start a thread: {e}") })?;
        let (hello, said_hello) = oneshot::channel();
        let reader = link.clone();
        std::thread::Builder::new()
            .name(format!("ivm-worker-{pid}"))
            .spawn(move || reader.read(stdout, child, tail, hello))
            .map_err(|e| Error::WorkerCrashed { reason: format!("cannot start a thread: {e}") })?;
        match said_hello.recv_timeout(HELLO_TIMEOUT) {
            Ok(Ok(())) => Ok(link),
            Ok(Err(reason)) => Err(Error::WorkerCrashed { reason }),
            Err(_) => {
                link.kill.kill();
                Err(Error::WorkerCrashed { reason: format!("the worker program {} did not start in time", program.display()) })
            }
        }
    }

    /// Sends a request; the receiver gets its reply (or the crash that prevented one).
    /// `escalate_after`: kill the worker if no reply came by then.
    pub fn send(
        &self,
        isolate: Option<Id>,
        within: Option<u64>,
        op: Op,
        escalate_after: Option<Duration>,
    ) -> Result<oneshot::Receiver<Result<Reply>>> {
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (reply, receiver) = oneshot::channel();
        let origin = Origin::current();
        let escalated = Arc::new(AtomicBool::new(false));
        {
            let mut pending = self.pending.lock();
            // Checked under the lock the crash drains the table with, so a request is either
            // failed by the crash or sees it here.
            if self.crashed.get().is_some() {
                return Err(self.crash_error());
            }
            let from_handler = tls::handling_events_of(self.key());
            if from_handler {
                self.handler_requests.fetch_add(1, Ordering::SeqCst);
            }
            pending.insert(id, Pending { reply, origin, from_handler, escalate_after, escalation: None, escalated, isolate, suspended: false });
        }
        if let Err(e) = self.write(&ToWorker::Request { id, within, isolate, op }) {
            self.pending.lock().remove(&id);
            return Err(e);
        }
        Ok(receiver)
    }

    /// Sends a request whose reply nobody waits for.
    pub fn post(&self, isolate: Option<Id>, op: Op) {
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let _ = self.write(&ToWorker::Request { id, within: None, isolate, op });
    }

    /// Answers a call of the worker.
    pub fn reply(&self, call: u64, result: Result<Answer>) {
        if let Err(e @ Error::InvalidArgument(_)) = self.write(&ToWorker::Reply { call, result }) {
            // The answer could not be sent (it is too large): the call fails instead of
            // waiting forever.
            let _ = self.write(&ToWorker::Reply { call, result: Err(e) });
        }
    }

    /// The worker started running request `id`: its escalation timer starts now.
    fn started(&self, id: u64) {
        if let Some(waiting) = self.pending.lock().get_mut(&id) {
            self.escalate(waiting);
        }
    }

    /// Arms `waiting`'s escalation from now.
    fn escalate(&self, waiting: &mut Pending) {
        let Some(at) = waiting.escalate_after.and_then(|after| Instant::now().checked_add(after)) else { return };
        let (kill, escalated) = (self.kill.clone(), waiting.escalated.clone());
        waiting.escalation = Some(Timer::arm(at, move || {
            escalated.store(true, Ordering::SeqCst);
            kill.by_escalation.store(true, Ordering::SeqCst);
            kill.kill();
        }));
    }

    /// A run of `isolate` waits on something that is no runaway (a debugger paused it; its
    /// host serves a call it waits for), or no longer: the escalations of its requests are
    /// taken back meanwhile, and start over when it goes on.
    pub fn hold_escalations(&self, isolate: Id, held: bool) {
        let mut pending = self.pending.lock();
        for waiting in pending.values_mut().filter(|waiting| waiting.isolate == Some(isolate)) {
            if held {
                waiting.suspended |= waiting.escalation.take().is_some();
            } else if std::mem::take(&mut waiting.suspended) {
                self.escalate(waiting);
            }
        }
    }

    /// Runs `handler`, which holds `bytes` of the worker's output, on the link's event
    /// thread after those before it; first waits while the queued output is over
    /// [`EVENT_BYTES`] (unless a handler waits for a reply of this worker, which this thread
    /// must go on reading).
    fn event_sized(&self, bytes: usize, handler: Event) {
        let (queued, room) = &*self.event_bytes;
        let mut queued_bytes = queued.lock();
        while *queued_bytes > 0 && *queued_bytes + bytes > EVENT_BYTES && self.handler_requests.load(Ordering::SeqCst) == 0 {
            queued_bytes = room.wait_timeout(queued_bytes, Duration::from_millis(10)).0;
        }
        *queued_bytes += bytes;
        drop(queued_bytes);
        let counted = self.event_bytes.clone();
        self.event(Box::new(move || {
            handler();
            let (queued, room) = &*counted;
            *queued.lock() -= bytes;
            room.notify_all();
        }));
    }

    /// Runs `handler` on the link's event thread, after those before it.
    fn event(&self, handler: Event) {
        let events = self.events.get_or_init(|| {
            let (sender, receiver) = std::sync::mpsc::channel::<Event>();
            let (link, behind) = (self.key(), self.events_behind.clone());
            let spawned = std::thread::Builder::new().name(format!("ivm-worker-{}-events", self.pid)).spawn(move || {
                tls::handle_events_of(link);
                for handler in receiver {
                    handler();
                    behind.fetch_sub(1, Ordering::SeqCst);
                }
            });
            if let Err(e) = spawned {
                eprintln!("ivm: no thread for a worker's console and rejections: {e}");
            }
            sender
        });
        self.events_behind.fetch_add(1, Ordering::SeqCst);
        if let Err(unsent) = events.send(handler) {
            self.events_behind.fetch_sub(1, Ordering::SeqCst);
            (unsent.0)();
        }
    }

    /// Whether a reply must wait for the event handlers before it (see `events`).
    fn reply_waits(&self, waiting: &Pending) -> bool {
        if waiting.from_handler {
            self.handler_requests.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        self.events_behind.load(Ordering::SeqCst) > 0 && self.handler_requests.load(Ordering::SeqCst) == 0
    }

    fn write(&self, message: &ToWorker) -> Result<()> {
        let mut input = self.input.lock();
        let Some(pipe) = input.as_mut() else { return Err(self.crash_error()) };
        protocol::write_frame(pipe, message).map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidData => Error::InvalidArgument(e.to_string()),
            _ => {
                // The worker is dying; its reader is about to say why.
                let deadline = Instant::now() + Duration::from_secs(2);
                while self.crash().is_none() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(1));
                }
                match self.crash() {
                    Some(reason) => Error::WorkerCrashed { reason: reason.to_owned() },
                    None => Error::WorkerCrashed { reason: format!("the worker process (pid {}) stopped reading: {e}", self.pid) },
                }
            }
        })
    }

    /// What confined the worker (set before [`spawn`](Self::spawn) returns).
    pub fn sandbox(&self) -> SandboxReport {
        self.sandbox.get().cloned().unwrap_or_default()
    }

    /// Why the worker is gone, once it is.
    pub fn crash(&self) -> Option<&str> {
        self.crashed.get().map(String::as_str)
    }

    pub fn crash_error(&self) -> Error {
        Error::WorkerCrashed { reason: self.crash().unwrap_or("the worker process is gone").to_owned() }
    }

    /// Whether the worker holds `name` (see [`now_holds`](Self::now_holds)).
    pub fn holds(&self, name: &str) -> bool {
        self.holds.lock().contains(name)
    }

    /// The worker has taken `name` and keeps it: later requests need not carry it. Said once
    /// it answered a request that carried it, so that requests sent meanwhile carry it too.
    pub fn now_holds(&self, name: &str) {
        self.holds.lock().insert(name.to_owned());
    }

    /// This link's address, which names it in [`tls`].
    pub fn key(&self) -> usize {
        self as *const Link as usize
    }

    /// Routes the events of isolate `id` to `isolate`.
    pub fn adopt(&self, id: Id, isolate: Weak<dyn IsolateEvents>) {
        self.isolates.lock().insert(id, isolate);
    }

    pub fn forget(&self, id: Id) {
        self.isolates.lock().remove(&id);
    }

    /// Lets the worker go: it exits once its input closes.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::SeqCst);
        self.input.lock().take();
    }

    /// Counts an isolate with this memory limit in the worker's ceiling, raising it if it is
    /// automatic; with `ahead`, the ceiling also allows for one more such isolate, made ahead
    /// of the next request. (It is never lowered: memory a worker has touched may not be
    /// returned.)
    pub fn reserve(&self, memory_limit_mb: u64, isolates: usize, ahead: bool) {
        let mut ceiling = self.ceiling.lock();
        ceiling.limits_mb += memory_limit_mb;
        if ceiling.fixed || *self.kill.reaped.lock() {
            return;
        }
        let (limits_mb, isolates) = match ahead {
            true => (ceiling.limits_mb + memory_limit_mb, isolates + 1),
            false => (ceiling.limits_mb, isolates),
        };
        if let Some(cgroup) = &self.cgroup {
            let wanted = ceiling::for_isolates(limits_mb, isolates as u64);
            // A failure leaves the old, lower ceiling.
            if wanted > ceiling.cgroup_bytes && cgroup.set_limit(wanted).is_ok() {
                ceiling.cgroup_bytes = wanted;
            }
        }
        let wanted = automatic_ceiling(limits_mb, isolates as u64);
        if wanted > ceiling.bytes {
            ceiling.bytes = wanted;
            let limit = libc::rlimit { rlim_cur: wanted, rlim_max: libc::RLIM_INFINITY };
            // SAFETY: plain syscall on our child; a failure leaves the old, lower ceiling.
            unsafe { libc::prlimit(self.pid as libc::pid_t, libc::RLIMIT_DATA, &limit, std::ptr::null_mut()) };
        }
    }

    pub fn unreserve(&self, memory_limit_mb: u64) {
        let mut ceiling = self.ceiling.lock();
        ceiling.limits_mb = ceiling.limits_mb.saturating_sub(memory_limit_mb);
    }

    /// The reader thread: routes what the worker says until the link ends, then reports why.
    fn read(
        self: Arc<Self>,
        stdout: std::process::ChildStdout,
        child: Child,
        tail: Arc<StderrTail>,
        hello: oneshot::Sender<std::result::Result<(), String>>,
    ) {
        let mut hello = Some(hello);
        let mut input = match PollingPipe::new(stdout) {
            Ok(pipe) => BufReader::with_capacity(64 << 10, pipe),
            Err(e) => {
                let reason = self.end(child, Some(format!("cannot read its pipe: {e}")), tail);
                if let Some(hello) = hello {
                    let _ = hello.send(Err(reason));
                }
                return;
            }
        };
        let problem = loop {
            match protocol::read_frame::<FromWorker>(&mut input) {
                Ok(Some(FromWorker::Hello { version, sandbox, .. })) if version == protocol::VERSION => {
                    let _ = self.sandbox.set(sandbox);
                    if let Some(hello) = hello.take() {
                        let _ = hello.send(Ok(()));
                    }
                }
                Ok(Some(FromWorker::Hello { version, .. })) => {
                    break Some(format!("it speaks protocol version {version}, this host {}", protocol::VERSION));
                }
                Ok(Some(_)) if hello.is_some() => break Some("it did not start with a hello".to_owned()),
                Ok(Some(FromWorker::Started { id })) => self.started(id),
                Ok(Some(FromWorker::Paused { isolate, paused })) => self.hold_escalations(isolate, paused),
                Ok(Some(FromWorker::Response { id, result })) => {
                    let waiting = self.pending.lock().remove(&id);
                    if let Some(waiting) = waiting {
                        let behind = self.reply_waits(&waiting);
                        // The run is over: its escalation timer goes now, even if the reply waits.
                        let reply = waiting.reply;
                        if behind {
                            self.event(Box::new(move || drop(reply.send(result))));
                        } else {
                            let _ = reply.send(result);
                        }
                    }
                }
                Ok(Some(event)) => self.route(event),
                Ok(None) => break None,
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => break Some(e.to_string()),
                Err(_) => break None,
            }
        };
        let reason = self.end(child, problem, tail);
        if let Some(hello) = hello {
            let _ = hello.send(Err(reason));
        }
    }

    fn route(&self, event: FromWorker) {
        let isolate = match &event {
            FromWorker::Call { isolate, .. }
            | FromWorker::Console { isolate, .. }
            | FromWorker::Rejection { isolate, .. }
            | FromWorker::Inspector { isolate, .. }
            | FromWorker::SnapshotChunk { isolate, .. } => *isolate,
            FromWorker::Hello { .. } | FromWorker::Response { .. } | FromWorker::Started { .. } | FromWorker::Paused { .. } => return,
        };
        let origin = match &event {
            FromWorker::Call { request: Some(request), .. } => {
                let pending = self.pending.lock();
                pending.get(request).map(|p| p.origin.clone()).unwrap_or_default()
            }
            _ => Default::default(),
        };
        let found = self.isolates.lock().get(&isolate).and_then(|r| r.upgrade());
        match (found, event) {
            (Some(remote), event @ FromWorker::Call { .. }) => remote.on_event(event, origin),
            (Some(remote), event) if remote.handles_inline(&event) => remote.on_event(event, origin),
            (Some(remote), event) => {
                let bytes = match &event {
                    FromWorker::Console { text, .. } => text.len(),
                    FromWorker::Rejection { error, .. } => error.message.len() + error.stack.as_ref().map_or(0, String::len),
                    FromWorker::Inspector { message, .. } => message.as_ref().map_or(0, String::len),
                    FromWorker::SnapshotChunk { bytes, .. } => bytes.len(),
                    _ => 0,
                };
                self.event_sized(bytes, Box::new(move || remote.on_event(event, origin)))
            }
            // Nobody on this side any more: do not leave the worker's JavaScript waiting.
            (None, FromWorker::Call { call, .. }) => self.reply(call, Err(Error::isolate_disposed())),
            (None, _) => {}
        }
    }

    /// The link has ended: reap the worker, say why it is gone, and fail what waited on it.
    fn end(&self, mut child: Child, problem: Option<String>, tail: Arc<StderrTail>) -> String {
        if problem.is_some() {
            // A worker that breaks the protocol is not trusted to exit by itself.
            self.kill.kill();
        }
        let status = wait(&mut child, &self.kill);
        let lines = tail.lines();
        let over_ceiling = self.cgroup.as_ref().is_some_and(Cgroup::oom_killed);
        if let Some(cgroup) = &self.cgroup {
            cgroup.remove();
        }
        let mut reason = describe(self.pid, status, problem, self.kill.by_escalation.load(Ordering::SeqCst), &lines);
        if over_ceiling {
            reason.push_str(", by the kernel: it went over its memory ceiling");
        }
        let _ = self.crashed.set(reason.clone());
        self.input.lock().take();
        let pending = std::mem::take(&mut *self.pending.lock());
        for (_, waiting) in pending {
            let error = if waiting.escalated.load(Ordering::SeqCst) {
                // The run that overstayed its timeout: for its caller it timed out.
                Error::Timeout { stack: String::new() }
            } else if over_ceiling {
                // Memory its isolates used (the ceiling follows their limits).
                Error::MemoryLimit
            } else {
                Error::WorkerCrashed { reason: reason.clone() }
            };
            let _ = waiting.reply.send(Err(error));
        }
        if !self.retired.load(Ordering::SeqCst) {
            let isolates: Vec<_> = self.isolates.lock().values().filter_map(|r| r.upgrade()).collect();
            for isolate in isolates {
                isolate.on_crash(&reason);
            }
        }
        reason
    }
}

/// Reaps the worker: it gets a moment to exit by itself after closing its output, then it is
/// killed.
fn wait(child: &mut Child, kill: &KillSwitch) -> Option<ExitStatus> {
    let deadline = Instant::now() + Duration::from_millis(500);
    loop {
        // Reaped under the lock kill() takes, so nothing signals a pid that may be reused.
        let mut reaped = kill.reaped.lock();
        let status = match child.try_wait() {
            Ok(None) if Instant::now() < deadline => None,
            Ok(None) => {
                // SAFETY: plain syscall on a child not yet reaped (we hold the lock).
                unsafe { libc::kill(kill.pid as libc::pid_t, libc::SIGKILL) };
                Some(child.wait().ok())
            }
            Ok(Some(status)) => Some(Some(status)),
            Err(_) => Some(None),
        };
        if let Some(status) = status {
            *reaped = true;
            return status;
        }
        drop(reaped);
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The last lines the worker wrote to its standard error, for the crash report.
#[derive(Default)]
struct StderrTail {
    lines: Mutex<VecDeque<String>>,
    done: AtomicBool,
}

impl StderrTail {
    fn read(&self, stderr: std::process::ChildStderr) {
        let mut input = BufReader::new(stderr);
        let mut line = Vec::new();
        // Whether the last read ended inside a line longer than we keep.
        let mut inside = false;
        loop {
            line.clear();
            // Long lines are cut (this is for a one-line crash report) without being buffered.
            match (&mut input).take(STDERR_LINE_BYTES).read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let continued = std::mem::replace(&mut inside, line.last() != Some(&b'\n'));
            if continued {
                continue;
            }
            let mut lines = self.lines.lock();
            if lines.len() == STDERR_LINES {
                lines.pop_front();
            }
            lines.push_back(String::from_utf8_lossy(&line).trim_end().to_owned());
        }
        self.done.store(true, Ordering::SeqCst);
    }

    /// The lines, once the worker has exited: they come in until its standard error closes
    /// (which a process it left behind may keep open: then what came within a moment).
    fn lines(&self) -> VecDeque<String> {
        let deadline = Instant::now() + Duration::from_millis(200);
        while !self.done.load(Ordering::SeqCst) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        self.lines.lock().clone()
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGABRT => "SIGABRT",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGFPE => "SIGFPE",
        libc::SIGTERM => "SIGTERM",
        libc::SIGSYS => "SIGSYS",
        _ => "signal",
    }
}

/// V8's (or the allocator's) last words, if the worker left any on its standard error.
fn last_words(lines: &VecDeque<String>) -> Option<String> {
    const MARKERS: [&str; 6] = ["Fatal", "FATAL", "Check failed", "out of memory", "memory allocation of", "ivm worker:"];
    lines
        .iter()
        .map(|line| line.trim_start_matches(['#', ' ']).trim())
        .rfind(|line| MARKERS.iter().any(|marker| line.contains(marker)))
        .map(str::to_owned)
}

/// The crash report: how the worker ended, why, and its last words.
fn describe(pid: u32, status: Option<ExitStatus>, problem: Option<String>, escalated: bool, stderr: &VecDeque<String>) -> String {
    let mut reason = match status {
        Some(status) => match (status.signal(), status.code()) {
            (Some(libc::SIGSYS), _) => {
                format!("the worker process (pid {pid}) was killed by its sandbox (signal 31, SIGSYS): it made a forbidden system call")
            }
            (Some(signal), _) => format!("the worker process (pid {pid}) was killed by signal {signal} ({})", signal_name(signal)),
            (None, Some(code)) => format!("the worker process (pid {pid}) exited with status {code}"),
            (None, None) => format!("the worker process (pid {pid}) ended"),
        },
        None => format!("the worker process (pid {pid}) was lost"),
    };
    if escalated {
        reason.push_str(", by ivm: a script did not stop within the grace period after its timeout");
    }
    if let Some(problem) = problem {
        reason.push_str(&format!(", by ivm: it broke the protocol ({problem})"));
    }
    if let Some(words) = last_words(stderr) {
        reason.push_str(&format!("; it said: {words}"));
    }
    reason
}
