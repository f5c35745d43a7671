//! [`RemoteIsolate`]: the host's side of an isolate that lives in a worker process — what
//! the public handles hold instead of an in-process isolate — and the host functions, console
//! sinks and hooks the worker calls back into.

use std::any::Any;
use std::collections::HashMap;
use std::io::Write;
use std::ops::Deref;
use std::sync::{Arc, Weak};

use ivm_client::protocol::{Answer, FromWorker, Id, Op, Target, Wire};
use ivm_client::tls::{Ancestry, Answering, CallerTag, Origin, Within, within};
use ivm_client::{IsolateEvents, Lease, Link, WorkerIsolate, WorkerSettings};

use crate::callback::{Callback, Invoked};
use crate::data::ConsoleLevel;
use crate::engine::tasks;
use crate::error::{Error, Result};
use crate::isolate::inspector::Messages;
use crate::isolate::{CatastrophicHandler, rejections};
use crate::module::state::{MetaHook, RemoteImportFn};
use crate::sync::Mutex;
use crate::value::{Value, wire};

pub(crate) type Sink = Arc<dyn Fn(ConsoleLevel, &str) + Send + Sync>;

/// An isolate in a worker process: the client's [`WorkerIsolate`] (which it derefs to), and
/// the host state the worker's calls and reports reach.
pub(crate) struct RemoteIsolate {
    on_catastrophic_error: Option<CatastrophicHandler>,
    on_unhandled_rejection: Option<rejections::Handler>,
    /// Host state the worker's JavaScript points at, by id.
    exported: Mutex<Exported>,
    pub(crate) import: Mutex<Option<RemoteImportFn>>,
    pub(crate) meta: Mutex<Option<MetaHook>>,
    /// The messages of its inspector sessions, by id.
    inspector_sessions: Mutex<HashMap<u64, Arc<Messages>>>,
    /// Heap snapshots on their way in, by id.
    snapshots: Mutex<Snapshots>,
    /// Last: dropped after the host state above, as its lease gives the worker back.
    worker: WorkerIsolate,
}

impl Deref for RemoteIsolate {
    type Target = WorkerIsolate;

    fn deref(&self) -> &WorkerIsolate {
        &self.worker
    }
}

/// Where a heap snapshot of a worker's isolate goes: any writer, given back when it is done.
pub(crate) trait SnapshotOut: Write + Send {
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send>;
}

impl<W: Write + Send + 'static> SnapshotOut for W {
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
}

#[derive(Default)]
struct Snapshots {
    next: u64,
    writing: HashMap<u64, Writing>,
}

/// Where a heap snapshot's chunks go.
struct Writing {
    out: Box<dyn SnapshotOut>,
    /// The error that stopped writing to `out`, if one did.
    failed: Option<std::io::Error>,
    /// Asked for on the link's event thread (by a console handler): its chunks are written on
    /// the reader thread, since the event thread waits for the snapshot.
    inline: bool,
}

#[derive(Default)]
struct Exported {
    next: u64,
    callbacks: HashMap<u64, Callback>,
    /// Ids of callbacks already exported, by the address of their shared state.
    callback_ids: HashMap<usize, u64>,
    sinks: HashMap<u64, Sink>,
}

impl RemoteIsolate {
    /// Isolate `id`, which the worker of `lease` created, with the embedder's handlers.
    pub(crate) fn new(
        (lease, id): (Lease, Id),
        settings: WorkerSettings,
        on_catastrophic_error: Option<CatastrophicHandler>,
        on_unhandled_rejection: Option<rejections::Handler>,
    ) -> Arc<RemoteIsolate> {
        Arc::new_cyclic(|this: &Weak<RemoteIsolate>| RemoteIsolate {
            on_catastrophic_error,
            on_unhandled_rejection,
            exported: Mutex::default(),
            import: Mutex::default(),
            meta: Mutex::default(),
            inspector_sessions: Mutex::default(),
            snapshots: Mutex::default(),
            worker: WorkerIsolate::new(lease, id, settings, this.clone()),
        })
    }

    /// [`request_async`](WorkerIsolate::request_async) with the op's inputs prepared first.
    pub(crate) fn request_async_with(&self, op: Result<Op>) -> impl Future<Output = Result<ivm_client::protocol::Reply>> + Send + 'static + use<> {
        let sent = op.map(|op| self.request_async(op));
        async move { sent?.await }
    }

    /// The op that creates a context named `name`, with its console sink exported.
    pub(crate) fn create_context(&self, console: Option<Sink>, name: Option<String>) -> Op {
        let console = console.map(|sink| {
            let mut exported = self.exported.lock();
            exported.next += 1;
            let id = exported.next;
            exported.sinks.insert(id, sink);
            id
        });
        Op::CreateContext { console, name }
    }

    /// Exports a host function to the worker; the same callback is exported once.
    pub(crate) fn export(&self, callback: &Callback) -> u64 {
        let mut exported = self.exported.lock();
        if let Some(id) = exported.callback_ids.get(&callback.key()) {
            return *id;
        }
        exported.next += 1;
        let id = exported.next;
        exported.callback_ids.insert(callback.key(), id);
        exported.callbacks.insert(id, callback.clone());
        id
    }

    /// Registers a new inspector session of the worker's isolate: its messages.
    pub(crate) fn inspector_session(&self, session: u64) -> Arc<Messages> {
        let messages = Arc::<Messages>::default();
        self.inspector_sessions.lock().insert(session, messages.clone());
        messages
    }

    /// The isolate is gone: so are its inspector sessions.
    fn end_inspector_sessions(&self) {
        for (_, messages) in self.inspector_sessions.lock().drain() {
            messages.close();
        }
    }

    /// Hands a protocol message to the worker's inspector at once.
    pub(crate) fn inspector_dispatch(&self, session: u64, message: String) -> Result<()> {
        if self.is_disposed() {
            return Err(Error::isolate_disposed());
        }
        self.link.post(Some(self.id), Op::InspectorDispatch { session, message });
        Ok(())
    }

    /// See [`Agent::hold_pauses`](crate::isolate::inspector::Agent::hold_pauses).
    #[cfg(feature = "component")]
    pub(crate) fn hold_pauses(&self, hold: bool) {
        if !self.is_disposed() {
            self.link.post(Some(self.id), Op::HoldPauses { hold });
        }
    }

    pub(crate) fn inspector_close(&self, session: u64) {
        if let Some(messages) = self.inspector_sessions.lock().remove(&session) {
            messages.close();
        }
        if !self.is_disposed() {
            self.link.post(Some(self.id), Op::InspectorClose { session });
        }
    }

    /// Where the chunks of a new heap snapshot go; its id.
    pub(crate) fn snapshot_into(&self, out: Box<dyn SnapshotOut>) -> u64 {
        let mut snapshots = self.snapshots.lock();
        snapshots.next += 1;
        let id = snapshots.next;
        let inline = ivm_client::tls::handling_events_of(self.link.key());
        snapshots.writing.insert(id, Writing { out, failed: None, inline });
        id
    }

    /// The writer of heap snapshot `id`, and the error that stopped it if one did.
    pub(crate) fn snapshot_done(&self, id: u64) -> Option<(Box<dyn SnapshotOut>, Option<std::io::Error>)> {
        self.snapshots.lock().writing.remove(&id).map(|w| (w.out, w.failed))
    }

    /// Runs `op`, which gives nothing back.
    pub(crate) fn run(&self, op: Result<Op>) -> Result<()> {
        self.request(op?)?.done()
    }
}

impl IsolateEvents for RemoteIsolate {
    fn on_event(self: Arc<Self>, event: FromWorker, origin: Origin) {
        match event {
            FromWorker::Call { call, target, .. } => {
                let mut chain = origin.ancestry;
                chain.push(Answering { link: self.link.key(), call });
                self.on_call(call, target, chain, origin.tag)
            }
            FromWorker::Console { sink, level, text, .. } => {
                let sink = self.exported.lock().sinks.get(&sink).cloned();
                if let Some(sink) = sink {
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sink(level, &text)));
                }
            }
            FromWorker::Rejection { error, .. } => {
                if let Some(handler) = &self.on_unhandled_rejection {
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(error)));
                }
            }
            FromWorker::Inspector { session, message, .. } => {
                let messages = self.inspector_sessions.lock().get(&session).cloned();
                match (messages, message) {
                    (Some(messages), Some(message)) => messages.push(message),
                    (Some(messages), None) => messages.close(),
                    (None, _) => {}
                }
            }
            FromWorker::SnapshotChunk { snapshot, bytes, .. } => {
                // Written outside the lock: the embedder's writer may take its time.
                let writing = self.snapshots.lock().writing.remove(&snapshot);
                if let Some(mut writing) = writing {
                    if writing.failed.is_none()
                        && let Err(e) = writing.out.write_all(&bytes)
                    {
                        writing.failed = Some(e);
                    }
                    self.snapshots.lock().writing.insert(snapshot, writing);
                }
            }
            FromWorker::Hello { .. } | FromWorker::Response { .. } | FromWorker::Started { .. } | FromWorker::Paused { .. } => {}
        }
    }

    /// A heap snapshot's chunks, when a handler on the event thread waits for it.
    fn handles_inline(&self, event: &FromWorker) -> bool {
        match event {
            FromWorker::SnapshotChunk { snapshot, .. } => self.snapshots.lock().writing.get(snapshot).is_some_and(|w| w.inline),
            _ => false,
        }
    }

    /// The worker died: the isolate is gone; tell the embedder.
    fn on_crash(&self, reason: &str) {
        self.set_disposed();
        self.end_inspector_sessions();
        if let Some(handler) = &self.on_catastrophic_error {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(reason)));
        }
    }
}

impl RemoteIsolate {
    /// JavaScript in the worker called a host function or hook: run it on the task pool and
    /// send the answer back.
    fn on_call(self: &Arc<Self>, call: u64, target: Target, chain: Ancestry, tag: Option<CallerTag>) {
        let this = self.clone();
        let answer = Responder { link: self.link.clone(), call, sent: false };
        match target {
            Target::Callback { callback, args } => {
                let found = self.exported.lock().callbacks.get(&callback).cloned();
                let Some(callback) = found else {
                    return answer.send(Err(Error::js("Error", "The host function is gone")));
                };
                let args = match wire::read_value(&args.bytes, &args, self.copy_budget) {
                    Ok(Value::Array(list)) => list,
                    Ok(_) => Vec::new(),
                    Err(e) => return answer.send(Err(e)),
                };
                let spawner = callback.spawner_of().clone();
                match callback.invoke(args) {
                    // The worker's JavaScript waits for these, and they may call back into it:
                    // each gets a thread (see `tasks::spawn_waiting`), or runs on its spawner
                    // answering the call.
                    Invoked::Sync(run) => tasks::spawn_waiting(move || answer.send(within(&chain, tag, run).and_then(value_answer))),
                    Invoked::Blocking(future) if spawner.polls_in_place() => {
                        tasks::spawn_waiting(move || answer.send(within(&chain, tag, || tasks::block_on(future)).and_then(value_answer)))
                    }
                    Invoked::Blocking(future) => {
                        spawner.spawn(Within { chain, tag, future: Box::pin(async move { answer.send(future.await.and_then(value_answer)) }) })
                    }
                    Invoked::Async(future) => spawner.spawn(async move { answer.send(future.await.and_then(value_answer)) }),
                    Invoked::Ignored(work) => {
                        answer.nobody_waits();
                        spawner.spawn_blocking(work)
                    }
                }
            }
            Target::Import { request, referrer } => tasks::spawn_waiting(move || {
                let hook = this.import.lock().clone();
                let result = within(&chain, tag, || match hook {
                    Some(hook) => guarded(|| hook(&request, &referrer)),
                    None => Err(Error::js(
                        "TypeError",
                        format!("Cannot import '{}': dynamic import() is not enabled for this isolate", request.specifier),
                    )),
                });
                // The module's handle lives until the answer is sent, so that its release
                // reaches the worker after the answer that names it.
                match result {
                    Ok((id, module)) => {
                        answer.send(Ok(Answer::Module(id)));
                        drop(module);
                    }
                    Err(e) => answer.send(Err(e)),
                }
            }),
            Target::Meta { filename } => tasks::spawn_waiting(move || {
                let hook = this.meta.lock().clone();
                let result = within(&chain, tag, || match hook {
                    Some(hook) => guarded(|| hook(&filename)),
                    None => Ok(Value::Object([("url".to_owned(), Value::String(filename))].into_iter().collect())),
                });
                answer.send(result.and_then(value_answer))
            }),
        }
    }
}

impl Drop for RemoteIsolate {
    /// The isolate is gone: so are its inspector sessions.
    fn drop(&mut self) {
        self.end_inspector_sessions();
    }
}

/// Answers a worker's call once; if the host code never does (it panicked in a future), the
/// answer is an error, so the worker's JavaScript does not wait forever.
struct Responder {
    link: Arc<Link>,
    call: u64,
    sent: bool,
}

impl Responder {
    fn nobody_waits(mut self) {
        self.sent = true;
    }

    fn send(mut self, result: Result<Answer>) {
        self.sent = true;
        self.link.reply(self.call, result);
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if !self.sent {
            self.link.reply(self.call, Err(Error::js("Error", "A host function panicked")));
        }
    }
}

fn guarded<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| Err(Error::js("Error", "A host function panicked")))
}

fn value_answer(value: Value) -> Result<Answer> {
    Ok(Answer::Value(Wire { bytes: wire::to_wire(&value)?, shared: Vec::new() }))
}
