//! [`Link`]: one worker process and the pipes to it: requests out, replies and calls in, and
//! what happens when the worker dies (the only way a link ends besides retirement).

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::WORKER_ARG;
use super::protocol::{self, Answer, FromWorker, Id, Op, Reply, ToWorker};
use super::remote::{Ancestry, RemoteRef};
use super::spin::PollingPipe;
use crate::engine::watchdog::Timer;
use crate::error::{Error, Result};

/// How long a new worker has to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(20);
/// Lines of the worker's standard error kept for the crash report.
const STDERR_LINES: usize = 64;

type ReplySender = oneshot::Sender<Result<Reply>>;

/// One worker process.
pub(crate) struct Link {
    pub(crate) pid: u32,
    /// `None` once retired (closing it makes the worker exit).
    input: Mutex<Option<ChildStdin>>,
    kill: Arc<KillSwitch>,
    pending: Mutex<HashMap<u64, Pending>>,
    next_request: AtomicU64,
    isolates: Mutex<HashMap<Id, RemoteRef>>,
    /// Why the worker is gone, once it is.
    crashed: OnceLock<String>,
    retired: AtomicBool,
    /// The tenant whose isolates it hosts.
    pub(crate) tenant: Option<String>,
    /// Isolates leased to it (changed under the pool's lock).
    pub(crate) hosted: AtomicUsize,
    /// The OS memory ceiling set on it, in bytes, and the memory limits of its isolates, in MB.
    ceiling: Mutex<Ceiling>,
}

#[derive(Default)]
struct Ceiling {
    bytes: u64,
    fixed: bool,
    limits_mb: u64,
}

struct Pending {
    reply: ReplySender,
    /// The worker calls the sender was answering (see `remote::within`): calls this request
    /// makes back into the host continue that chain.
    ancestry: Ancestry,
    /// Sent by an async operation.
    in_job: bool,
    /// Kills the worker if the run overstays its timeout.
    _escalation: Option<Timer>,
    escalated: Arc<AtomicBool>,
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
        let reaped = self.reaped.lock().unwrap_or_else(|e| e.into_inner());
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
    pub(crate) fn spawn(program: &Path, fixed_ceiling_mb: Option<u64>, tenant: Option<String>) -> Result<Arc<Link>> {
        let ceiling = fixed_ceiling_mb.map_or_else(|| automatic_ceiling(0, 0), |mb| mb << 20);
        let mut command = Command::new(program);
        command.arg(WORKER_ARG).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        // SAFETY: the closure runs in the child between fork and exec and only makes
        // async-signal-safe syscalls.
        unsafe {
            // (No PR_SET_PDEATHSIG: it fires when the *thread* that started the worker ends. The
            // worker exits when its input closes, which the kernel does when the host dies.)
            command.pre_exec(move || {
                let limit = libc::rlimit { rlim_cur: ceiling, rlim_max: libc::RLIM_INFINITY };
                libc::setrlimit(libc::RLIMIT_DATA, &limit);
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
            retired: AtomicBool::new(false),
            tenant,
            hosted: AtomicUsize::new(0),
            ceiling: Mutex::new(Ceiling { bytes: ceiling, fixed: fixed_ceiling_mb.is_some(), limits_mb: 0 }),
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
    pub(crate) fn send(
        &self,
        isolate: Option<Id>,
        within: Option<u64>,
        op: Op,
        escalate_after: Option<Duration>,
        in_job: bool,
    ) -> Result<oneshot::Receiver<Result<Reply>>> {
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (reply, receiver) = oneshot::channel();
        let ancestry = super::remote::ancestry();
        let escalated = Arc::new(AtomicBool::new(false));
        let escalation = escalate_after.map(|after| {
            let (kill, escalated) = (self.kill.clone(), escalated.clone());
            Timer::arm(Instant::now() + after, move || {
                escalated.store(true, Ordering::SeqCst);
                kill.by_escalation.store(true, Ordering::SeqCst);
                kill.kill();
            })
        });
        {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            // Checked under the lock the crash drains the table with, so a request is either
            // failed by the crash or sees it here.
            if self.crashed.get().is_some() {
                return Err(self.crash_error());
            }
            pending.insert(id, Pending { reply, ancestry, in_job, _escalation: escalation, escalated });
        }
        if let Err(e) = self.write(&ToWorker::Request { id, within, isolate, op }) {
            self.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
            return Err(e);
        }
        Ok(receiver)
    }

    /// Sends a request whose reply nobody waits for.
    pub(crate) fn post(&self, isolate: Option<Id>, op: Op) {
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let _ = self.write(&ToWorker::Request { id, within: None, isolate, op });
    }

    /// Answers a call of the worker.
    pub(crate) fn reply(&self, call: u64, result: Result<Answer>) {
        let _ = self.write(&ToWorker::Reply { call, result });
    }

    fn write(&self, message: &ToWorker) -> Result<()> {
        let mut input = self.input.lock().unwrap_or_else(|e| e.into_inner());
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

    /// Why the worker is gone, once it is.
    pub(crate) fn crash(&self) -> Option<&str> {
        self.crashed.get().map(String::as_str)
    }

    pub(crate) fn crash_error(&self) -> Error {
        Error::WorkerCrashed { reason: self.crash().unwrap_or("the worker process is gone").to_owned() }
    }

    pub(crate) fn adopt(&self, id: Id, isolate: RemoteRef) {
        self.isolates.lock().unwrap_or_else(|e| e.into_inner()).insert(id, isolate);
    }

    pub(crate) fn forget(&self, id: Id) {
        self.isolates.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
    }

    /// Lets the worker go: it exits once its input closes.
    pub(crate) fn retire(&self) {
        self.retired.store(true, Ordering::SeqCst);
        self.input.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Counts an isolate with this memory limit in the worker's ceiling, raising it if it is
    /// automatic. (It is never lowered: memory a worker has touched may not be returned.)
    pub(crate) fn reserve(&self, memory_limit_mb: u64, isolates: usize) {
        let mut ceiling = self.ceiling.lock().unwrap_or_else(|e| e.into_inner());
        ceiling.limits_mb += memory_limit_mb;
        let wanted = automatic_ceiling(ceiling.limits_mb, isolates as u64);
        if !ceiling.fixed && wanted > ceiling.bytes {
            ceiling.bytes = wanted;
            let limit = libc::rlimit { rlim_cur: wanted, rlim_max: libc::RLIM_INFINITY };
            // SAFETY: plain syscall on our child; a failure leaves the old, lower ceiling.
            unsafe { libc::prlimit(self.pid as libc::pid_t, libc::RLIMIT_DATA, &limit, std::ptr::null_mut()) };
        }
    }

    pub(crate) fn unreserve(&self, memory_limit_mb: u64) {
        let mut ceiling = self.ceiling.lock().unwrap_or_else(|e| e.into_inner());
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
                Ok(Some(FromWorker::Hello { version, .. })) if version == protocol::VERSION => {
                    if let Some(hello) = hello.take() {
                        let _ = hello.send(Ok(()));
                    }
                }
                Ok(Some(FromWorker::Hello { version, .. })) => {
                    break Some(format!("it speaks protocol version {version}, this host {}", protocol::VERSION));
                }
                Ok(Some(_)) if hello.is_some() => break Some("it did not start with a hello".to_owned()),
                Ok(Some(FromWorker::Response { id, result })) => {
                    let waiting = self.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
                    if let Some(waiting) = waiting {
                        let _ = waiting.reply.send(result);
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
            FromWorker::Call { isolate, .. } | FromWorker::Console { isolate, .. } | FromWorker::Rejection { isolate, .. } => *isolate,
            FromWorker::Hello { .. } | FromWorker::Response { .. } => return,
        };
        let ancestry = match &event {
            FromWorker::Call { request: Some(request), .. } => {
                let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
                pending.get(request).map(|p| (p.ancestry.clone(), p.in_job)).unwrap_or_default()
            }
            _ => Default::default(),
        };
        let found = self.isolates.lock().unwrap_or_else(|e| e.into_inner()).get(&isolate).and_then(|r| r.upgrade());
        match (found, event) {
            (Some(remote), event) => remote.on_event(event, ancestry),
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
        let reason = describe(self.pid, status, problem, self.kill.by_escalation.load(Ordering::SeqCst), &lines);
        let _ = self.crashed.set(reason.clone());
        self.input.lock().unwrap_or_else(|e| e.into_inner()).take();
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        for (_, waiting) in pending {
            let error = if waiting.escalated.load(Ordering::SeqCst) {
                // The run that overstayed its timeout: for its caller it timed out.
                Error::Timeout { stack: String::new() }
            } else {
                Error::WorkerCrashed { reason: reason.clone() }
            };
            let _ = waiting.reply.send(Err(error));
        }
        if !self.retired.load(Ordering::SeqCst) {
            let isolates: Vec<_> = self.isolates.lock().unwrap_or_else(|e| e.into_inner()).values().filter_map(|r| r.upgrade()).collect();
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
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            Ok(None) => {
                kill.kill();
                break child.wait().ok();
            }
            Err(_) => break None,
        }
    };
    *kill.reaped.lock().unwrap_or_else(|e| e.into_inner()) = true;
    status
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
        while let Ok(1..) = {
            line.clear();
            input.read_until(b'\n', &mut line)
        } {
            let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
            if lines.len() == STDERR_LINES {
                lines.pop_front();
            }
            // Long lines are cut: this is for a one-line crash report.
            line.truncate(1000);
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
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
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
        _ => "signal",
    }
}

/// V8's (or the allocator's) last words, if the worker left any on its standard error.
fn last_words(lines: &VecDeque<String>) -> Option<String> {
    const MARKERS: [&str; 5] = ["Fatal", "FATAL", "Check failed", "out of memory", "memory allocation of"];
    lines
        .iter()
        .map(|line| line.trim_start_matches(['#', ' ']).trim())
        .filter(|line| MARKERS.iter().any(|marker| line.contains(marker)))
        .last()
        .map(str::to_owned)
}

/// The crash report: how the worker ended, why, and its last words.
fn describe(pid: u32, status: Option<ExitStatus>, problem: Option<String>, escalated: bool, stderr: &VecDeque<String>) -> String {
    let mut reason = match status {
        Some(status) => match (status.signal(), status.code()) {
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
