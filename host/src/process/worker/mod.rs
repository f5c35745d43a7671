//! The worker side: `ivm --ivm-worker` runs the host's requests on in-process isolates,
//! through the same public API an embedder uses.
//!
//! Threads: the main thread reads requests and routes them; each isolate has a thread that
//! runs its requests in order (so async operations keep their submission order and one busy
//! isolate never holds up another). A request made from a host function the worker is
//! waiting for (`within` a call) runs on the thread that waits, inside the call, as a nested
//! call would in process.
//!
//! Here: start-up and routing. `sandbox.rs` confines the worker before anything else runs,
//! `queue.rs` is an isolate's queue of requests, `execute.rs` runs one request through the
//! public API, `host_call.rs` calls the host and serves the requests made inside such a call.

mod execute;
mod host_call;
mod inspect;
mod queue;
mod sandbox;

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ivm_client::spin::PollingPipe;
use super::protocol::{self, Answer, FromWorker, Id, NewIsolate, Op, Reply, StartFrom, ToWorker};
use crate::code_cache::CacheKey;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::isolate::{Isolate, IsolateOptions};
use crate::module::Module;
use crate::reference::Reference;
use crate::script::Script;
use crate::sync::Mutex;
use host_call::{Answered, Mail, Mailbox};
use inspect::Inspected;
use queue::Queue;

/// Serves the host on standard input and output until the host goes away. The `ivm` binary
/// runs this when started with [`WORKER_ARG`](super::WORKER_ARG); an embedder that wants its
/// own executable as the worker program calls it the same way, first thing in `main`, before
/// anything starts a thread (the worker's sandbox is confined to the threads it starts; one
/// started earlier leaves the namespaces, Landlock and dropped capabilities out of its
/// report):
///
/// ```no_run
/// fn main() -> std::process::ExitCode {
///     if std::env::args().nth(1).as_deref() == Some(ivm::process::WORKER_ARG) {
///         return ivm::process::serve_worker();
///     }
///     // ... the embedder's program
/// #   std::process::ExitCode::SUCCESS
/// }
/// ```
pub fn serve_worker() -> ExitCode {
    // A request a panicking thread was running would never be answered, and the host would
    // wait for it: a panic ends the worker instead, which the host reports as a crash.
    std::panic::set_hook(Box::new(|panic| {
        eprintln!("ivm worker: {panic}");
        std::process::abort();
    }));
    // First, while the process has one thread (see sandbox.rs).
    let sandbox = match sandbox::confine(ivm_client::SandboxPolicy::from_env()) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("ivm worker: {e}");
            return ExitCode::from(3);
        }
    };
    crate::engine::platform();
    let out = match protocol_output() {
        Ok(out) => out,
        Err(e) => {
            eprintln!("ivm worker: cannot take over standard output: {e}");
            return ExitCode::from(3);
        }
    };
    let worker = Arc::new(Worker {
        out: Mutex::new(out),
        isolates: Mutex::default(),
        calls: Mutex::default(),
        next: AtomicU64::new(1),
        start: Mutex::default(),
        ready: Mutex::default(),
        making_ahead: AtomicBool::new(false),
    });
    worker.send(&FromWorker::Hello { version: protocol::VERSION, pid: std::process::id(), sandbox });
    let mut input = match PollingPipe::new(std::io::stdin()) {
        Ok(pipe) => BufReader::with_capacity(64 << 10, pipe),
        Err(e) => {
            eprintln!("ivm worker: cannot read standard input: {e}");
            return ExitCode::from(3);
        }
    };
    loop {
        match protocol::read_frame::<ToWorker>(&mut input) {
            Ok(Some(message)) => worker.route(message),
            Ok(None) => break,
            Err(e) => {
                eprintln!("ivm worker: {e}");
                return ExitCode::from(3);
            }
        }
    }
    // The host is gone (or let this worker go): nothing is left to do for anyone. Exit without
    // unwinding the isolates still running.
    let _ = std::io::stderr().flush();
    std::process::exit(0)
}

/// The pipe to the host, which was standard output. Standard output itself becomes standard
/// error, so that nothing else in the process (V8 printing, say) can write into the protocol;
/// and frames go out in one `write` each, not split at newlines as `Stdout` would.
fn protocol_output() -> std::io::Result<std::fs::File> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain descriptor calls; the duplicate is owned by the returned File alone.
    unsafe {
        let pipe = libc::fcntl(libc::STDOUT_FILENO, libc::F_DUPFD_CLOEXEC, 3);
        if pipe < 0 || libc::dup2(libc::STDERR_FILENO, libc::STDOUT_FILENO) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(std::fs::File::from_raw_fd(pipe))
    }
}

struct Worker {
    out: Mutex<std::fs::File>,
    isolates: Mutex<HashMap<Id, Arc<Hosted>>>,
    /// Calls of host functions and hooks waiting for their answer.
    calls: Mutex<HashMap<u64, Arc<Mailbox>>>,
    /// Ids of isolates, handles and calls.
    next: AtomicU64,
    /// How this worker's isolates start, fixed by its first: from V8's built-in snapshot
    /// (`Some(None)`) or from one sent by the host, kept for the worker's life. V8 aborts a
    /// process whose isolates start from different snapshots, so the others are refused.
    start: Mutex<Option<Option<crate::Snapshot>>>,
    /// The isolate made, or being made, ahead of the next request in a worker of a snapshot:
    /// deserializing a large snapshot takes milliseconds (4 for a 2.7 MB one here) that the
    /// request then need not wait for. It costs the worker one isolate more than it hosts.
    ready: Mutex<Option<Ready>>,
    /// Whether an isolate is being made ahead (at most one is).
    making_ahead: AtomicBool,
}

/// An isolate made ahead of its request.
struct Ready {
    /// What it is like; a request for another kind drops it.
    new: NewIsolate,
    made: std::sync::mpsc::Receiver<(Id, Result<Isolate>)>,
}

/// An isolate of this worker, the handles the host holds into it, and its requests.
struct Hosted {
    id: Id,
    isolate: Isolate,
    /// The isolate's timeout for operations that give none.
    default_timeout: Option<Duration>,
    handles: Mutex<HashMap<Id, Handle>>,
    queue: Queue,
    /// Its inspector, once a session has connected.
    inspector: Inspected,
}

thread_local! {
    /// The isolate whose thread this is.
    static ISOLATE_THREAD: std::cell::Cell<Option<Id>> = const { std::cell::Cell::new(None) };
    /// The request this thread is running (host calls made now are made for it).
    static CURRENT_REQUEST: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

enum Handle {
    Context(Context),
    Script(Script),
    Reference(Reference),
    Module(Module),
}

impl Worker {
    fn send(&self, message: &FromWorker) {
        if let Err(e) = self.try_send(message) {
            // Too big to send: say so instead.
            if let FromWorker::Response { id, .. } = message {
                let _ = self.try_send(&FromWorker::Response { id: *id, result: Err(e) });
            }
        }
    }

    /// Sends a message; a message over the frame limit is not sent, and its error returned.
    fn try_send(&self, message: &FromWorker) -> Result<()> {
        let mut out = self.out.lock();
        match protocol::write_frame(&mut *out, message) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => Err(Error::Conversion(format!("cannot send it to the host: {e}"))),
            // The host is gone.
            Err(_) => std::process::exit(0),
        }
    }

    fn next_id(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    fn hosted(&self, id: Id) -> Result<Arc<Hosted>> {
        let isolates = self.isolates.lock();
        isolates.get(&id).cloned().ok_or_else(Error::isolate_disposed)
    }

    fn route(self: &Arc<Self>, message: ToWorker) {
        match message {
            ToWorker::Reply { call, result } => {
                let mailbox = self.calls.lock().get(&call).cloned();
                if let Some(mailbox) = mailbox {
                    // A module is taken now, before what the host sent after this answer (its
                    // release of the module, say) is routed.
                    let answered = result.and_then(|answer| match answer {
                        Answer::Value(value) => Ok(Answered::Value(value)),
                        Answer::Module(id) => self.hosted(mailbox.isolate)?.module(id).map(Answered::Module),
                    });
                    mailbox.deliver(Mail::Answer(answered));
                }
            }
            ToWorker::Request { id, within: Some(call), isolate, op } => {
                let mailbox = self.calls.lock().get(&call).cloned();
                match (mailbox, isolate) {
                    (Some(mailbox), Some(isolate)) => mailbox.deliver(Mail::Request { id, isolate, op }),
                    _ => self.respond(id, Err(Error::InvalidArgument("the host function call this request was made in has returned".into()))),
                }
            }
            ToWorker::Request { id, within: None, isolate: None, op: Op::CreateIsolate(new) } => self.create_isolate(id, new),
            #[cfg(debug_assertions)]
            ToWorker::Request { id, within: None, isolate: None, op: Op::SandboxProbe(probe) } => {
                self.respond(id, Ok(Reply::Count(sandbox::probe(probe))));
            }
            ToWorker::Request { id, within: None, isolate: None, op: Op::CreateSnapshot { scripts, warmup, memory_limit, timeout } } => {
                // On a thread of its own: this worker serves nothing else, but must go on
                // reading (the host may end it).
                let worker = self.clone();
                let started = std::thread::Builder::new().name("ivm-snapshot".into()).spawn(move || {
                    worker.send(&FromWorker::Started { id });
                    let made = crate::snapshot::make_blob(&scripts, warmup.as_deref(), memory_limit, timeout);
                    worker.respond(
                        id,
                        made.map(|blob| Reply::Snapshot {
                            blob: serde_bytes::ByteBuf::from(blob),
                            environment: serde_bytes::ByteBuf::from(crate::code_cache::environment().to_vec()),
                        }),
                    );
                });
                if let Err(e) = started {
                    self.respond(id, Err(Error::InvalidArgument(format!("the worker cannot start a thread: {e}"))));
                }
            }
            ToWorker::Request { id, within: None, isolate: Some(isolate), op } => self.queue(id, isolate, op),
            ToWorker::Request { id, .. } => self.respond(id, Err(Error::InvalidArgument("a request without an isolate".into()))),
        }
    }

    /// Queues a request on its isolate's thread; disposal and the clocks are answered at once.
    fn queue(self: &Arc<Self>, id: u64, isolate: Id, op: Op) {
        match op {
            Op::Dispose => {
                let removed = self.isolates.lock().remove(&isolate);
                let result = match removed {
                    // Terminates what runs; the isolate's thread fails what is queued and ends.
                    Some(hosted) => {
                        hosted.queue.close();
                        hosted.isolate.dispose()
                    }
                    None => Err(Error::isolate_disposed()),
                };
                self.respond(id, result.map(|()| Reply::Done));
            }
            Op::Times => {
                let times = self.hosted(isolate).and_then(|h| Ok(Reply::Times { cpu: h.isolate.cpu_time()?, wall: h.isolate.wall_time()? }));
                self.respond(id, times);
            }
            Op::ReferenceCount => {
                let count = self.hosted(isolate).map(|h| Reply::Count(h.handles.lock().len() as u64));
                self.respond(id, count);
            }
            // Handed to the inspector at once: the isolate's thread may be paused in it.
            Op::InspectorDispatch { session, message } => {
                if let Ok(hosted) = self.hosted(isolate) {
                    hosted.inspector.dispatch(session, message);
                }
            }
            Op::InspectorClose { session } => {
                if let Ok(hosted) = self.hosted(isolate) {
                    hosted.inspector.close(session);
                }
            }
            Op::HoldPauses { hold } => {
                if let Ok(hosted) = self.hosted(isolate) {
                    hosted.inspector.hold_pauses(hold);
                }
            }
            // Waited for on a thread of its own: the isolate's thread must stay free to connect
            // the debugger's session.
            Op::WaitForDebugger => match self.hosted(isolate) {
                Ok(hosted) => {
                    let worker = self.clone();
                    let waiting = std::thread::Builder::new().name("ivm-wait-debugger".into()).spawn(move || {
                        worker.respond(id, hosted.isolate.wait_for_debugger().map(|()| Reply::Done));
                    });
                    if let Err(e) = waiting {
                        self.respond(id, Err(Error::InvalidArgument(format!("the worker cannot start a thread: {e}"))));
                    }
                }
                Err(e) => self.respond(id, Err(e)),
            },
            op => match self.hosted(isolate) {
                Ok(hosted) => {
                    if !hosted.queue.push(id, op) {
                        self.respond(id, Err(Error::isolate_disposed()));
                    }
                }
                Err(e) => self.respond(id, Err(e)),
            },
        }
    }

    fn respond(&self, id: u64, result: Result<Reply>) {
        self.send(&FromWorker::Response { id, result });
    }

    /// Creates an isolate and its thread, which then runs the isolate's requests. An
    /// isolate from a snapshot may be followed by another made like it ahead of its request
    /// ([`Worker::ready`], [`StartFrom::ahead`]).
    fn create_isolate(self: &Arc<Self>, request: u64, mut new: NewIsolate) {
        let make_ahead = new.snapshot.as_ref().is_some_and(|from| from.ahead);
        // The blob is taken in here, in the order requests come: a later request for the same
        // snapshot need not carry it.
        let start = match self.start_from(new.snapshot.take()) {
            Ok(start) => start,
            Err(e) => return self.respond(request, Err(e)),
        };
        // Used only if it is made already: one still being made, at the lowest priority,
        // could be starved by a busy machine.
        let ahead = self.ready.lock().take().filter(|ready| ready.new == new).and_then(|ready| match ready.made.try_recv() {
            Ok((id, Ok(isolate))) => Some((id, isolate)),
            _ => None,
        });
        let worker = self.clone();
        let started = std::thread::Builder::new().name("ivm-isolate".into()).spawn(move || {
            let (id, made) = match ahead {
                Some((id, isolate)) => (id, Ok(isolate)),
                None => {
                    let id = worker.next_id();
                    (id, worker.make_isolate(id, new.clone(), start.clone()))
                }
            };
            let hosted = match made {
                Ok(isolate) => Arc::new(Hosted {
                    id,
                    isolate,
                    default_timeout: new.default_timeout,
                    handles: Mutex::default(),
                    queue: Queue::default(),
                    inspector: Inspected::default(),
                }),
                Err(e) => return worker.respond(request, Err(e)),
            };
            worker.isolates.lock().insert(id, hosted.clone());
            worker.respond(request, Ok(Reply::Id(id)));
            if make_ahead {
                worker.make_ahead(new, start);
            }
            ISOLATE_THREAD.set(Some(id));
            while let Some((id, op)) = hosted.queue.next() {
                worker.run_request(&hosted, id, op);
            }
        });
        if let Err(e) = started {
            self.respond(request, Err(Error::InvalidArgument(format!("the worker cannot start a thread: {e}"))));
        }
    }

    /// Makes an isolate like `new` for the next request, on a thread of the lowest priority
    /// (nice 19), so that it takes time the worker's running isolates leave.
    fn make_ahead(self: &Arc<Self>, new: NewIsolate, start: Option<crate::Snapshot>) {
        // One at a time: a burst of requests must not pile up isolates half made (the
        // worker's memory ceiling allows for one).
        if self.making_ahead.swap(true, Ordering::SeqCst) {
            return;
        }
        // The reaper disposes of an isolate made ahead that nobody took: started here, at the
        // worker's priority, so that it does not inherit the lower one.
        crate::engine::reaper::start();
        let (made_one, made) = std::sync::mpsc::channel();
        *self.ready.lock() = Some(Ready { new: new.clone(), made });
        let worker = self.clone();
        let started = std::thread::Builder::new().name("ivm-isolate-ahead".into()).spawn(move || {
            // SAFETY: plain system call; on Linux, `PRIO_PROCESS` of 0 is the calling thread
            // alone (the sandbox allows no other). Failing leaves it at the worker's priority.
            unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
            let id = worker.next_id();
            // Unclaimed (taken by a request for another kind, or not made in time), it is
            // disposed by the reaper, already started: no thread this one starts inherits
            // its priority.
            let _ = made_one.send((id, worker.make_isolate(id, new, start)));
            worker.making_ahead.store(false, Ordering::SeqCst);
        });
        if started.is_err() {
            // The next request makes its isolate itself.
            self.making_ahead.store(false, Ordering::SeqCst);
        }
    }

    /// The snapshot an isolate starts from (`None`: V8's built-in one), if this worker's
    /// isolates may start so.
    fn start_from(&self, from: Option<StartFrom>) -> Result<Option<crate::Snapshot>> {
        let mut start = self.start.lock();
        let wanted = from.as_ref().map(|from| from.id.as_str());
        if let Some(kept) = &*start {
            if kept.as_ref().map(crate::Snapshot::id) != wanted {
                return Err(Error::InvalidArgument("this worker's isolates start from another snapshot".into()));
            }
            return Ok(kept.clone());
        }
        let snapshot = match from {
            None => None,
            Some(StartFrom { id, blob: Some(blob), .. }) => Some(crate::Snapshot::checked(blob.into_vec(), id)),
            Some(StartFrom { blob: None, .. }) => return Err(Error::InvalidArgument("this worker was not sent the isolate's snapshot".into())),
        };
        *start = Some(snapshot.clone());
        Ok(snapshot)
    }

    fn make_isolate(self: &Arc<Self>, id: Id, new: NewIsolate, snapshot: Option<crate::Snapshot>) -> Result<Isolate> {
        let mut options = IsolateOptions::default()
            .memory_limit(new.memory_limit)
            .default_timeout(new.default_timeout)
            .cpu_budget(new.cpu_budget)
            // The host kills a worker whose script overstays its timeout by the grace period;
            // a CPU limit it cannot see, so a script that ignores one's termination (a huge
            // BigInt) ends the worker here, a grace period later than the host would.
            .terminate_grace(new.terminate_grace.saturating_mul(2))
            .on_catastrophic_error(|why| {
                eprintln!("ivm worker: {why}");
                std::process::abort();
            });
        options.inspector = new.inspector;
        options.snapshot = snapshot;
        if let Some(secret) = new.cache_secret {
            options = options.code_cache_key(CacheKey::new(&secret)?);
        }
        if new.rejections {
            let worker = Arc::downgrade(self);
            options = options.on_unhandled_rejection(move |error| {
                if let Some(worker) = worker.upgrade() {
                    worker.send(&FromWorker::Rejection { isolate: id, error });
                }
            });
        }
        Isolate::new_in_this_process(options)
    }

    /// Runs a request and sends the response.
    fn run_request(self: &Arc<Self>, hosted: &Arc<Hosted>, id: u64, op: Op) {
        if op.timeout(hosted.default_timeout).is_some() {
            // The host's escalation timer counts from here.
            self.send(&FromWorker::Started { id });
        }
        let outer = CURRENT_REQUEST.replace(Some(id));
        let result = self.execute(hosted, op);
        CURRENT_REQUEST.set(outer);
        self.respond(id, result);
        if hosted.isolate.is_disposed() {
            // Gone over its memory limit: later requests fail as the host expects.
            self.isolates.lock().remove(&hosted.id);
            hosted.queue.close();
        }
    }

    /// Runs a request that came inside a call, on the thread waiting for that call.
    fn run_nested(self: &Arc<Self>, id: u64, isolate: Id, op: Op) {
        match (op, self.hosted(isolate)) {
            (op @ (Op::Times | Op::ReferenceCount | Op::Dispose | Op::WaitForDebugger), _) => self.queue(id, isolate, op),
            (op, Ok(hosted)) => self.run_request(&hosted, id, op),
            (_, Err(e)) => self.respond(id, Err(e)),
        }
    }
}
