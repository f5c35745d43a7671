//! [`WorkerIsolate`]: one isolate in a worker process, as its client sees it: requests out,
//! replies back, and what the worker reports for it handed to an [`IsolateEvents`].

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::link::Link;
use crate::pool::Lease;
use crate::protocol::{FromWorker, Id, Op, Reply};
use crate::tls::{self, Origin};
use crate::value::wire;

/// What the worker reports for an isolate reaches its front end through this: the front end
/// answers the calls its JavaScript makes (host functions, module hooks), shows its console
/// output and rejections, and hears when the worker is gone.
pub trait IsolateEvents: Send + Sync {
    /// A [`FromWorker::Call`], [`Console`](FromWorker::Console) or
    /// [`Rejection`](FromWorker::Rejection) for this isolate. A call comes with the
    /// [`Origin`] of the request whose JavaScript made it; answer it with [`Link::reply`].
    /// Calls arrive on the link's reader thread and must not block it; console output and
    /// rejections arrive in order on the link's event thread.
    fn on_event(self: Arc<Self>, event: FromWorker, origin: Origin);

    /// Whether `event` is handled on the reader thread rather than queued on the event
    /// thread: when what waits for it is a handler on the event thread itself (a heap
    /// snapshot a console handler asked for), behind which it would otherwise queue.
    fn handles_inline(&self, event: &FromWorker) -> bool {
        let _ = event;
        false
    }

    /// The worker process is gone (`reason` says how); the isolate with it.
    fn on_crash(&self, reason: &str);
}

/// How a [`WorkerIsolate`] runs its requests.
#[derive(Debug, Clone, Copy)]
pub struct WorkerSettings {
    /// How long after its timeout a run may go on before the worker is killed.
    pub grace: Duration,
    /// The timeout of operations that give none.
    pub default_timeout: Option<Duration>,
    /// The isolate's memory limit, in MB (what may be made here of data its scripts made).
    pub memory_limit: u64,
}

/// An isolate in a worker process.
pub struct WorkerIsolate {
    pub link: Arc<Link>,
    /// The isolate's id in the worker.
    pub id: Id,
    disposed: Arc<AtomicBool>,
    settings: WorkerSettings,
    /// What may be made here of data its scripts made (see [`wire::Budget`]).
    pub copy_budget: wire::Budget,
    /// The isolate's place in its worker; given back when the isolate goes.
    _lease: Lease,
}

impl WorkerIsolate {
    /// The isolate `id` the worker of `lease` created; `events` hears what the worker reports
    /// for it.
    pub fn new(lease: Lease, id: Id, settings: WorkerSettings, events: Weak<dyn IsolateEvents>) -> WorkerIsolate {
        let link = lease.link().clone();
        link.adopt(id, events);
        WorkerIsolate {
            link,
            id,
            disposed: Arc::default(),
            copy_budget: wire::Budget::of_isolate(usize::try_from(settings.memory_limit << 20).unwrap_or(usize::MAX)),
            settings,
            _lease: lease,
        }
    }

    pub fn is_disposed(&self) -> bool {
        self.disposed.load(Ordering::SeqCst) || self.link.crash().is_some()
    }

    /// The isolate is gone (its worker said so, or died).
    pub fn set_disposed(&self) {
        self.disposed.store(true, Ordering::SeqCst);
    }

    fn check_alive(&self) -> Result<()> {
        if let Some(reason) = self.link.crash() {
            return Err(Error::WorkerCrashed { reason: reason.to_owned() });
        }
        if self.disposed.load(Ordering::SeqCst) { Err(Error::isolate_disposed()) } else { Ok(()) }
    }

    /// Runs `op` in the worker and waits for its reply. Inside a host function the worker
    /// called, the request runs inside that call (see [`tls`]).
    pub fn request(&self, op: Op) -> Result<Reply> {
        self.request_waiting(op, |reply| {
            let mut answer = None;
            crate::spin::poll_for(|| match reply.try_recv() {
                Ok(result) => {
                    answer = Some(result);
                    true
                }
                Err(oneshot::TryRecvError::Empty) => false,
                Err(oneshot::TryRecvError::Disconnected) => true,
            });
            match answer {
                Some(result) => result,
                None => reply.recv().unwrap_or_else(|_| Err(self.link.crash_error())),
            }
        })
    }

    /// Sends `op` as [`request`](Self::request) does and has `wait` wait for its reply: for a
    /// caller that serves the calls its JavaScript makes back while it waits, on the same
    /// thread (Node's main thread runs host functions inline). A reply channel that closes
    /// without a reply means the worker is gone: [`Link::crash_error`].
    pub fn request_waiting(&self, op: Op, wait: impl FnOnce(oneshot::Receiver<Result<Reply>>) -> Result<Reply>) -> Result<Reply> {
        self.check_alive()?;
        let within = tls::answering(self.link.key());
        let escalate = self.escalation(&op);
        let reply = self.link.send(Some(self.id), within, op, escalate)?;
        after(&self.disposed, wait(reply))
    }

    /// Queues `op` in the worker now and returns a future of its reply.
    pub fn request_async(&self, op: Op) -> impl Future<Output = Result<Reply>> + Send + 'static + use<> {
        let sent = self.check_alive().and_then(|()| {
            let escalate = self.escalation(&op);
            self.link.send(Some(self.id), None, op, escalate)
        });
        let (link, disposed) = (self.link.clone(), self.disposed.clone());
        async move {
            let reply = sent?.await.unwrap_or_else(|_| Err(link.crash_error()));
            after(&disposed, reply)
        }
    }

    /// When to give up on a run that overstays its timeout: kill the worker.
    fn escalation(&self, op: &Op) -> Option<Duration> {
        op.timeout(self.settings.default_timeout).and_then(|timeout| timeout.checked_add(self.settings.grace))
    }

    /// Releases a handle in the worker, after the operations queued before.
    pub fn release(&self, handle: Id) -> bool {
        if self.is_disposed() {
            return false;
        }
        self.link.post(Some(self.id), Op::Release { handle });
        true
    }

    /// Disposes the isolate in the worker, once; whether this call did.
    pub fn dispose(&self) -> bool {
        if self.disposed.swap(true, Ordering::SeqCst) || self.link.crash().is_some() {
            return false;
        }
        self.link.post(Some(self.id), Op::Dispose);
        true
    }

    /// CPU and wall time, answered by the worker at once (even while the isolate is busy).
    pub fn times(&self) -> Result<(Duration, Duration)> {
        match self.request(Op::Times)? {
            Reply::Times { cpu, wall } => Ok((cpu, wall)),
            _ => Err(Error::Conversion("the worker's reply does not match the request".into())),
        }
    }
}

fn after(disposed: &AtomicBool, reply: Result<Reply>) -> Result<Reply> {
    if let Err(Error::MemoryLimit) = reply {
        // The worker disposed the isolate.
        disposed.store(true, Ordering::SeqCst);
    }
    reply
}

impl WorkerIsolate {
    /// The isolate's live handles, answered by the worker at once.
    pub fn reference_count(&self) -> Result<usize> {
        match self.request(Op::ReferenceCount)? {
            Reply::Count(count) => Ok(usize::try_from(count).unwrap_or(usize::MAX)),
            _ => Err(Error::Conversion("the worker's reply does not match the request".into())),
        }
    }
}

impl Drop for WorkerIsolate {
    /// The last handle is gone: the worker disposes the isolate.
    fn drop(&mut self) {
        self.dispose();
        self.link.forget(self.id);
    }
}
