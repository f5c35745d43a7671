//! The worker side: `ivm --ivm-worker` runs the host's requests on in-process isolates,
//! through the same public API an embedder uses.
//!
//! Threads: the main thread reads requests and routes them; each isolate has a thread that
//! runs its requests in order (so async operations keep their submission order and one busy
//! isolate never holds up another). A request made from a host function the worker is
//! waiting for (`within` a call) runs on the thread that waits, inside the call, as a nested
//! call would in process.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io::{BufReader, Write};
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Duration;

use super::spin::{self, PollingPipe};
use super::protocol::{self, Access, Answer, CallKind, FromWorker, Id, Input, Op, Out, Reply, Target, ToWorker, Want, Wire};
use crate::callback::Callback;
use crate::code_cache::CacheKey;
use crate::context::{Context, ContextOptions};
use crate::error::{Error, Result};
use crate::external_copy::{CopyIntoOptions, ExternalCopy, ExternalCopyOptions};
use crate::isolate::{Isolate, IsolateOptions};
use crate::module::Module;
use crate::reference::Reference;
use crate::script::Script;
use crate::sync::Mutex;
use crate::transfer::{Raw, Transferable, Transferred};
use crate::value::{Value, wire};
use crate::Isolation;

/// Serves the host on standard input and output until the host goes away. The `ivm` binary
/// runs this when started with [`WORKER_ARG`](super::WORKER_ARG); an embedder that wants its
/// own executable as the worker program calls it the same way, first thing in `main`:
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
    });
    worker.send(&FromWorker::Hello { version: protocol::VERSION, pid: std::process::id() });
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
}

/// An isolate of this worker, the handles the host holds into it, and its requests.
struct Hosted {
    id: Id,
    isolate: Isolate,
    /// The isolate's timeout for operations that give none.
    default_timeout: Option<Duration>,
    handles: Mutex<HashMap<Id, Handle>>,
    queue: Queue,
}

/// An isolate's requests, in order. Its thread takes them one by one; while JavaScript on
/// that thread waits for a host function, the wait takes them too, so the isolate serves
/// others while its host function runs (as an in-process isolate does while its thread is
/// in another isolate).
#[derive(Default)]
struct Queue {
    state: Mutex<QueueState>,
    ready: crate::sync::Condvar,
}

#[derive(Default)]
struct QueueState {
    requests: VecDeque<(u64, Op)>,
    closed: bool,
    /// A host call waiting on the isolate's thread.
    waiter: Option<Waker>,
}

impl Queue {
    /// Adds a request; `false` once the isolate is gone.
    fn push(&self, id: u64, op: Op) -> bool {
        let mut state = self.state.lock();
        if state.closed {
            return false;
        }
        state.requests.push_back((id, op));
        if let Some(waker) = state.waiter.take() {
            waker.wake();
        }
        self.ready.notify_one();
        true
    }

    fn close(&self) {
        self.state.lock().closed = true;
        self.ready.notify_one();
    }

    /// The next request, waiting for one; `None` once closed and drained.
    fn next(&self) -> Option<(u64, Op)> {
        let mut next = None;
        let ready = |next: &mut Option<(u64, Op)>| {
            let mut state = self.state.lock();
            *next = state.requests.pop_front();
            next.is_some() || state.closed
        };
        if spin::poll_for(|| ready(&mut next)) {
            return next;
        }
        let mut state = self.state.lock();
        loop {
            if let Some(request) = state.requests.pop_front() {
                return Some(request);
            }
            if state.closed {
                return None;
            }
            state = self.ready.wait(state);
        }
    }

    /// The next request if there is one; otherwise `waker` hears of the next.
    fn poll_next(&self, waker: &Waker) -> Option<(u64, Op)> {
        let mut state = self.state.lock();
        let next = state.requests.pop_front();
        if next.is_none() {
            state.waiter = Some(waker.clone());
        }
        next
    }
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
            ToWorker::Request { id, within: None, isolate: None, op: Op::CreateIsolate { memory_limit, rejections, cache_secret, default_timeout } } => {
                self.create_isolate(id, memory_limit, rejections, cache_secret, default_timeout)
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

    /// Creates an isolate and its thread, which then runs the isolate's requests.
    fn create_isolate(
        self: &Arc<Self>,
        request: u64,
        memory_limit: u64,
        rejections: bool,
        cache_secret: Option<Vec<u8>>,
        default_timeout: Option<Duration>,
    ) {
        let worker = self.clone();
        let started = std::thread::Builder::new().name("ivm-isolate".into()).spawn(move || {
            let id = worker.next_id();
            let hosted = match worker.make_isolate(id, memory_limit, rejections, cache_secret, default_timeout) {
                Ok(isolate) => Arc::new(Hosted { id, isolate, default_timeout, handles: Mutex::default(), queue: Queue::default() }),
                Err(e) => return worker.respond(request, Err(e)),
            };
            worker.isolates.lock().insert(id, hosted.clone());
            worker.respond(request, Ok(Reply::Id(id)));
            ISOLATE_THREAD.set(Some(id));
            while let Some((id, op)) = hosted.queue.next() {
                worker.run_request(&hosted, id, op);
            }
        });
        if let Err(e) = started {
            self.respond(request, Err(Error::InvalidArgument(format!("the worker cannot start a thread: {e}"))));
        }
    }

    fn make_isolate(
        self: &Arc<Self>,
        id: Id,
        memory_limit: u64,
        rejections: bool,
        cache_secret: Option<Vec<u8>>,
        default_timeout: Option<Duration>,
    ) -> Result<Isolate> {
        let mut options =
            IsolateOptions::default().isolation(Isolation::InProcess).memory_limit(memory_limit).default_timeout(default_timeout);
        if let Some(secret) = cache_secret {
            options = options.code_cache_key(CacheKey::new(&secret)?);
        }
        if rejections {
            let worker = Arc::downgrade(self);
            options = options.on_unhandled_rejection(move |error| {
                if let Some(worker) = worker.upgrade() {
                    worker.send(&FromWorker::Rejection { isolate: id, error });
                }
            });
        }
        Isolate::new(options)
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
            (op @ (Op::Times | Op::Dispose), _) => self.queue(id, isolate, op),
            (op, Ok(hosted)) => self.run_request(&hosted, id, op),
            (_, Err(e)) => self.respond(id, Err(e)),
        }
    }

    /// Runs one request on the isolate, through the public API.
    fn execute(self: &Arc<Self>, hosted: &Arc<Hosted>, op: Op) -> Result<Reply> {
        let isolate = &hosted.isolate;
        Ok(match op {
            Op::CreateContext { console } => {
                let mut options = ContextOptions::default();
                if let Some(sink) = console {
                    let (worker, isolate) = (Arc::downgrade(self), hosted.id);
                    options = options.console(move |level, text| {
                        if let Some(worker) = worker.upgrade() {
                            worker.send(&FromWorker::Console { isolate, sink, level, text: text.to_owned() });
                        }
                    });
                }
                Reply::Id(self.insert(hosted, Handle::Context(isolate.create_context_with(options)?)))
            }
            Op::HeapStatistics => Reply::Heap(isolate.heap_statistics()?),
            Op::Release { handle } => {
                hosted.handles.lock().remove(&handle);
                Reply::Done
            }
            Op::Eval { context, code, run, want } => {
                let (context, options) = (hosted.context(context)?, run);
                Reply::Out(produce!(self, hosted, want, T => context.eval_with::<T>(&code, &options)))
            }
            Op::EvalClosure { context, code, args, run, want } => {
                let (context, options) = (hosted.context(context)?, run);
                let args = self.inputs(hosted, args)?;
                Reply::Out(produce!(self, hosted, want, T => context.eval_closure::<T>(&code, args.clone(), &options)))
            }
            Op::Global { context } => {
                let global = hosted.context(context)?.global()?;
                Reply::Out(self.reference_out(hosted, global))
            }
            Op::GlobalGet { context, name, want } => {
                let context = hosted.context(context)?;
                Reply::Out(produce!(self, hosted, want, T => context.get_global::<T>(&name)))
            }
            Op::GlobalSet { context, name, value } => {
                hosted.context(context)?.set_global(&name, self.input(hosted, value)?)?;
                Reply::Done
            }
            Op::CompileScript { code, compile } => {
                let script = isolate.compile_script(&code, &compile)?;
                let (produced, rejected) = (script.cached_data().map(|c| c.as_bytes().to_vec()), script.cached_data_rejected());
                let id = self.insert(hosted, Handle::Script(script));
                Reply::Compiled { id, requests: Vec::new(), produced, rejected }
            }
            Op::RunScript { script, context, run, want } => {
                let (script, context, options) = (hosted.script(script)?, hosted.context(context)?, run);
                Reply::Out(produce!(self, hosted, want, T => script.run::<T>(&context, &options)))
            }
            Op::Get { reference, access, key, want } => {
                let reference = hosted.reference(reference, access)?;
                Reply::Out(produce!(self, hosted, want, T => reference.get::<T>(key.clone())))
            }
            Op::Set { reference, key, value } => {
                let reference = hosted.reference(reference, Access { inherit: false, accessors: false })?;
                reference.set(key, self.input(hosted, value)?)?;
                Reply::Done
            }
            Op::Delete { reference, key } => {
                hosted.reference(reference, Access { inherit: false, accessors: false })?.delete(key)?;
                Reply::Done
            }
            Op::Apply { reference, access, recv, args, run, want } => {
                let reference = hosted.reference(reference, access)?;
                let (recv, args, options) = (self.input(hosted, recv)?, self.inputs(hosted, args)?, run);
                Reply::Out(produce!(self, hosted, want, T => reference.apply::<T>(recv.clone(), args.clone(), &options)))
            }
            Op::Copy { reference, want } => {
                let reference = hosted.reference(reference, Access { inherit: false, accessors: false })?;
                Reply::Out(produce!(self, hosted, want, T => reference.copy_as::<T>()))
            }
            Op::ExternalCopy { reference, transfer, transfer_out } => {
                let no_access = Access { inherit: false, accessors: false };
                let reference = hosted.reference(reference, no_access)?;
                let transfer_list = transfer.into_iter().map(|id| hosted.reference(id, no_access)).collect::<Result<Vec<_>>>()?;
                let options = ExternalCopyOptions { transfer_list, transfer_out };
                Reply::Copy(reference.external_copy(&options)?.export()?)
            }
            Op::CompileModule { code, compile } => {
                let module = isolate.compile_module(&code, &compile)?;
                let (produced, rejected) = (module.cached_data().map(|c| c.as_bytes().to_vec()), module.cached_data_rejected());
                let requests = module.requests().to_vec();
                let id = self.insert(hosted, Handle::Module(module));
                Reply::Compiled { id, requests, produced, rejected }
            }
            Op::DataModule { name, exports } => {
                let exports = wire::read_value(&exports.bytes, &exports, wire::Budget::HOST)?;
                Reply::Id(self.insert(hosted, Handle::Module(isolate.data_module(&name, exports)?)))
            }
            Op::JsonModule { name, json } => Reply::Id(self.insert(hosted, Handle::Module(isolate.json_module(&name, &json)?))),
            Op::Linked { module } => Reply::Linked(hosted.module(module)?.is_linked()?),
            Op::Instantiate { module, context, links } => {
                let (module, context) = (hosted.module(module)?, hosted.context(context)?);
                let links = links
                    .into_iter()
                    .map(|(referrer, request, target)| Ok((hosted.module(referrer)?, request, hosted.module(target)?)))
                    .collect::<Result<Vec<_>>>()?;
                module.instantiate(&context, |request, referrer| {
                    links
                        .iter()
                        .find(|(from, r, _)| r == request && from.same(referrer))
                        .map(|(_, _, target)| target.clone())
                        .ok_or_else(|| Error::js("Error", format!("Cannot resolve module '{}'", request.specifier)))
                })?;
                Reply::Done
            }
            Op::Evaluate { module, run } => {
                hosted.module(module)?.evaluate(&run)?;
                Reply::Done
            }
            Op::Namespace { module } => {
                let namespace = hosted.module(module)?.namespace()?;
                Reply::Out(self.reference_out(hosted, namespace))
            }
            Op::Hooks { import, meta } => {
                self.install_hooks(hosted, import, meta);
                Reply::Done
            }
            Op::CreateIsolate { .. } | Op::Dispose | Op::Times => return Err(Error::InvalidArgument("not an operation on an isolate".into())),
        })
    }

    fn insert(&self, hosted: &Hosted, handle: Handle) -> Id {
        let id = self.next_id();
        hosted.handles.lock().insert(id, handle);
        id
    }

    fn reference_out(&self, hosted: &Hosted, reference: Reference) -> Out {
        let type_of = reference.type_of().to_owned();
        Out::Reference { id: self.insert(hosted, Handle::Reference(reference)), type_of }
    }

    fn transferred_out(&self, hosted: &Hosted, transferred: Transferred) -> Result<Out> {
        Ok(match transferred {
            Transferred::Value(value) => Out::Data(value_wire(&value)?),
            Transferred::Reference(reference) => self.reference_out(hosted, reference),
            Transferred::ExternalCopy(copy) => Out::ExternalCopy(copy.export()?),
        })
    }

    fn inputs(self: &Arc<Self>, hosted: &Arc<Hosted>, inputs: Vec<Input>) -> Result<Vec<Transferable>> {
        inputs.into_iter().map(|input| self.input(hosted, input)).collect()
    }

    /// A value from the host, ready to go into the isolate.
    fn input(self: &Arc<Self>, hosted: &Arc<Hosted>, input: Input) -> Result<Transferable> {
        Ok(match input {
            Input::Data(wire) => Transferable::wire(wire),
            Input::Callback { callback, kind, name } => Transferable::from(self.host_function(hosted.id, callback, kind).name(name)),
            Input::Reference { id, release: false } => Transferable::from(hosted.reference(id, Access { inherit: false, accessors: false })?),
            Input::Reference { id, release: true } => {
                let reference = hosted.reference(id, Access { inherit: false, accessors: false })?;
                hosted.handles.lock().remove(&id);
                reference.deref_into(true)
            }
            Input::Copy { copy, transfer_in } => {
                // Only copied into an isolate here: no budget for Rust data applies.
                ExternalCopy::import(copy, wire::Budget::HOST)?.copy_into(CopyIntoOptions { transfer_in, release: true })
            }
        })
    }

    /// A JavaScript function that calls host function `callback` over the pipe.
    fn host_function(self: &Arc<Self>, isolate: Id, callback: u64, kind: CallKind) -> Callback {
        let worker = Arc::downgrade(self);
        let call = move |args: Value| -> Result<HostCall> {
            let worker = worker.upgrade().ok_or_else(Error::isolate_disposed)?;
            let args = value_wire(&args)?;
            Ok(worker.call_host(isolate, Target::Callback { callback, args }, kind))
        };
        match kind {
            CallKind::Sync => Callback::new(move |args: Value| call(args).and_then(block_on).and_then(answer_value)),
            CallKind::Blocking => Callback::new_blocking(move |args: Value| {
                let pending = call(args);
                async move { answer_value(pending?.await?) }
            }),
            CallKind::Async => Callback::new_async(move |args: Value| {
                let pending = call(args);
                async move { answer_value(pending?.await?) }
            }),
            CallKind::Ignored => Callback::new_ignored(move |args: Value| {
                let _ = call(args);
            }),
        }
    }

    /// Forwards `import()` and `import.meta` to the host's hooks.
    fn install_hooks(self: &Arc<Self>, hosted: &Arc<Hosted>, import: bool, meta: bool) {
        let (worker, id) = (Arc::downgrade(self), hosted.id);
        if import {
            let worker = worker.clone();
            hosted.isolate.set_dynamic_import(move |_, request, referrer| {
                let worker = worker.upgrade().ok_or_else(Error::isolate_disposed)?;
                let target = Target::Import { request: request.clone(), referrer: referrer.to_owned() };
                match block_on(worker.call_host(id, target, CallKind::Sync))? {
                    Answered::Module(module) => Ok(module),
                    Answered::Value(_) => Err(Error::Conversion("the import hook gave no module".into())),
                }
            });
        }
        if meta {
            hosted.isolate.set_import_meta(move |filename| {
                let worker = worker.upgrade().ok_or_else(Error::isolate_disposed)?;
                answer_value(block_on(worker.call_host(id, Target::Meta { filename: filename.to_owned() }, CallKind::Sync))?)
            });
        }
    }

    /// Calls the host; the future is its answer. `kind` says how JavaScript waits (a hook's
    /// call is waited for like a synchronous host function).
    fn call_host(self: &Arc<Self>, isolate: Id, target: Target, kind: CallKind) -> HostCall {
        let answered = kind != CallKind::Ignored;
        let call = self.next_id();
        let mailbox = Arc::new(Mailbox { isolate, state: Mutex::default() });
        if answered {
            self.calls.lock().insert(call, mailbox.clone());
        }
        let nested = matches!(kind, CallKind::Sync | CallKind::Blocking);
        // JavaScript waiting on the isolate's own thread serves the isolate's queue. (An async
        // host function's promise is settled from the task pool, which must not.)
        let serves = if nested && ISOLATE_THREAD.get() == Some(isolate) { self.hosted(isolate).ok() } else { None };
        if let Err(e) = self.try_send(&FromWorker::Call { call, isolate, request: CURRENT_REQUEST.get(), target }) {
            // Too large to send: the call fails here instead of waiting for an answer.
            mailbox.deliver(Mail::Answer(Err(e)));
        }
        HostCall { worker: self.clone(), call, mailbox, serves, nested, registered: false }
    }
}

/// Makes `T` the type `want` asks for and reads the result of `$body` into the matching
/// [`Out`].
macro_rules! produce {
    ($worker:expr, $hosted:expr, $want:expr, $t:ident => $body:expr) => {{
        match $want {
            Want::Data => {
                type $t = Raw;
                Out::Data(($body)?.0)
            }
            Want::Value => {
                type $t = Value;
                Out::Data(value_wire(&($body)?)?)
            }
            Want::Transferred => {
                type $t = Transferred;
                $worker.transferred_out($hosted, ($body)?)?
            }
            Want::Reference => {
                type $t = Reference;
                $worker.reference_out($hosted, ($body)?)
            }
            Want::ExternalCopy => {
                type $t = ExternalCopy;
                Out::ExternalCopy(($body)?.export()?)
            }
            Want::Nothing => {
                type $t = ();
                let () = ($body)?;
                Out::Nothing
            }
        }
    }};
}
use produce;

impl Hosted {
    fn handle<T>(&self, id: Id, pick: impl FnOnce(&Handle) -> Option<T>, gone: &str) -> Result<T> {
        let handles = self.handles.lock();
        handles.get(&id).and_then(pick).ok_or_else(|| Error::disposed(gone))
    }

    fn context(&self, id: Id) -> Result<Context> {
        let pick = |h: &Handle| match h {
            Handle::Context(c) => Some(c.clone()),
            _ => None,
        };
        self.handle(id, pick, "Context is released")
    }

    fn script(&self, id: Id) -> Result<Script> {
        let pick = |h: &Handle| match h {
            Handle::Script(s) => Some(s.clone()),
            _ => None,
        };
        self.handle(id, pick, "Script has been released")
    }

    fn reference(&self, id: Id, access: Access) -> Result<Reference> {
        let pick = |h: &Handle| match h {
            Handle::Reference(r) => Some(r.clone()),
            _ => None,
        };
        let mut reference = self.handle(id, pick, "Reference has been released")?;
        if access.inherit {
            reference = reference.inherit();
        }
        if access.accessors {
            reference = reference.accessors();
        }
        Ok(reference)
    }

    fn module(&self, id: Id) -> Result<Module> {
        let pick = |h: &Handle| match h {
            Handle::Module(m) => Some(m.clone()),
            _ => None,
        };
        self.handle(id, pick, "Module has been released")
    }
}


fn value_wire(value: &Value) -> Result<Wire> {
    Ok(Wire { bytes: wire::to_wire(value)?, shared: Vec::new() })
}

/// The host's answer to a call, with a module it names already taken from the handles.
enum Answered {
    Value(Wire),
    Module(Module),
}

fn answer_value(answer: Answered) -> Result<Value> {
    match answer {
        Answered::Value(value) => wire::read_value(&value.bytes, &value, wire::Budget::HOST),
        Answered::Module(_) => Err(Error::Conversion("the host answered with a module".into())),
    }
}

/// What arrives for a call the worker is waiting on.
enum Mail {
    /// A request the host made from inside the call.
    Request { id: u64, isolate: Id, op: Op },
    Answer(Result<Answered>),
}

struct Mailbox {
    /// The isolate whose JavaScript made the call.
    isolate: Id,
    state: Mutex<MailboxState>,
}

#[derive(Default)]
struct MailboxState {
    requests: VecDeque<(u64, Id, Op)>,
    answer: Option<Result<Answered>>,
    waker: Option<Waker>,
}

impl Mailbox {
    fn lock(&self) -> crate::sync::MutexGuard<'_, MailboxState> {
        self.state.lock()
    }

    fn deliver(&self, mail: Mail) {
        let mut state = self.lock();
        match mail {
            Mail::Request { id, isolate, op } => state.requests.push_back((id, isolate, op)),
            Mail::Answer(answer) => state.answer = Some(answer),
        }
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
    }
}

thread_local! {
    /// The calls this thread waits in, outermost first. A wait runs the requests made inside
    /// any of them: the host may answer an outer call with a request while an inner call is
    /// still pending (a host function of A calls B, whose host function calls A).
    static WAITING: std::cell::RefCell<Vec<Arc<Mailbox>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A call of the host in flight. Polling a call JavaScript waits for (`nested`) runs the
/// requests the host makes inside it, on the polling thread, until the answer is there; on
/// an isolate's thread it also serves that isolate's queue.
struct HostCall {
    worker: Arc<Worker>,
    call: u64,
    mailbox: Arc<Mailbox>,
    /// The isolate whose queue this wait serves.
    serves: Option<Arc<Hosted>>,
    /// JavaScript waits for it on this thread (not an async host function's promise).
    nested: bool,
    registered: bool,
}

impl HostCall {
    /// The next request made inside a call this thread waits in, after telling each of them
    /// to wake `waker` for the next one.
    fn next_request(&self, waker: &Waker) -> Option<(u64, Id, Op)> {
        let own = [self.mailbox.clone()];
        let take = |mailboxes: &[Arc<Mailbox>]| {
            mailboxes.iter().rev().find_map(|mailbox| {
                let mut state = mailbox.lock();
                state.waker = Some(waker.clone());
                state.requests.pop_front()
            })
        };
        if self.registered { WAITING.with_borrow(|waiting| take(waiting)) } else { take(&own) }
    }
}

impl Future for HostCall {
    type Output = Result<Answered>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Result<Answered>> {
        if self.nested && !self.registered {
            WAITING.with_borrow_mut(|waiting| waiting.push(self.mailbox.clone()));
            self.registered = true;
        }
        loop {
            if let Some((id, isolate, op)) = self.next_request(cx.waker()) {
                self.worker.run_nested(id, isolate, op);
                continue;
            }
            if let Some(answer) = self.mailbox.lock().answer.take() {
                return Poll::Ready(answer);
            }
            if let Some(hosted) = &self.serves
                && let Some((id, op)) = hosted.queue.poll_next(cx.waker())
            {
                self.worker.run_request(hosted, id, op);
                continue;
            }
            return Poll::Pending;
        }
    }
}

impl Drop for HostCall {
    fn drop(&mut self) {
        if self.registered {
            WAITING.with_borrow_mut(|waiting| waiting.retain(|m| !Arc::ptr_eq(m, &self.mailbox)));
        }
        self.worker.calls.lock().remove(&self.call);
    }
}

/// Waits for a host call on this thread (a synchronous host function: JavaScript waits).
fn block_on(call: HostCall) -> Result<Answered> {
    crate::engine::tasks::block_on(call)
}
