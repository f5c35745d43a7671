//! The native half of the `isolated-vm` package for Node.js whose isolates live in ivm worker
//! processes. It links no V8: it drives the workers (the `ivm` binary) through `ivm-client`,
//! and builds Node values from what they send. `index.js` shapes isolated-vm's API on top.
//!
//! Every call returns an *outcome* (`{ value }` or `{ error: { kind, name, message, stack } }`)
//! rather than throwing, so that the JavaScript half throws isolated-vm's own errors.

pub mod calls;
pub mod ops;
mod values;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use ivm_client::protocol::{FromWorker, NewIsolate, Op, Out, Reply, StartFrom};
use ivm_client::tls::{self, Origin};
use ivm_client::sync::Mutex;
use ivm_client::value::wire::Budget;
use ivm_client::{IsolateEvents, Link, PoolOptions, ScriptOrigin, Value, WorkerIsolate, WorkerPool, WorkerSettings};
use napi::Env;
use napi::bindgen_prelude::Unknown;
use napi_derive::napi;

use ops::OpArgs;
use values::Outcome;

/// How long a run may go on after its timeout before its worker is killed (ivm's default).
const TERMINATE_GRACE: Duration = Duration::from_secs(5);

/// How many isolates share a worker unless `IVM_ISOLATES_PER_WORKER` says otherwise: a
/// thousand isolates are sixteen processes, not a thousand (isolates of one worker share its
/// fate if V8 aborts it; a memory limit disposes only its isolate).
const ISOLATES_PER_WORKER: usize = 64;

/// A memory limit in MB from JavaScript: at least 8, at most 1 TiB (isolated-vm takes 10 TB).
fn memory_limit(mb: f64) -> u64 {
    mb.clamp(8.0, (1u64 << 40) as f64) as u64
}

/// What may be made in Node of data an isolate of `memory_limit` MB made (as the
/// `WorkerIsolate`'s own copy budget).
fn copy_budget(memory_limit: u64) -> Budget {
    Budget::of_isolate(usize::try_from(memory_limit << 20).unwrap_or(usize::MAX))
}

/// One pool of workers per worker program.
fn pool(program: String) -> WorkerPool {
    static POOLS: OnceLock<Mutex<HashMap<PathBuf, WorkerPool>>> = OnceLock::new();
    let mut pools = POOLS.get_or_init(Default::default).lock();
    let program = PathBuf::from(program);
    let made = |program: PathBuf| {
        let per_worker = std::env::var("IVM_ISOLATES_PER_WORKER").ok().and_then(|n| n.parse().ok()).unwrap_or(ISOLATES_PER_WORKER);
        WorkerPool::new(PoolOptions::default().worker_program(program).isolates_per_worker(per_worker))
    };
    pools.entry(program.clone()).or_insert_with(|| made(program)).clone()
}

/// The key this process seals code caches with (`produceCachedData`): random, so that cached
/// data from elsewhere, which V8 would run as machine code, is rejected, not trusted.
/// (`None` if this machine gives no randomness: then no cached data is made or used.)
fn cache_secret() -> Option<[u8; 32]> {
    static SECRET: OnceLock<Option<[u8; 32]>> = OnceLock::new();
    *SECRET.get_or_init(|| {
        let mut secret = [0u8; 32];
        let mut random = std::fs::File::open("/dev/urandom").ok()?;
        std::io::Read::read_exact(&mut random, &mut secret).ok()?;
        Some(secret)
    })
}

/// What the worker reports for an isolate: its calls of Node functions go to [`calls::route`],
/// its worker's death to `index.js`'s crash handler, and its unhandled rejections into the
/// operation that ran them.
struct Events {
    key: u64,
    /// The queue of the JavaScript thread that made the isolate.
    queue: Option<Arc<calls::Queue>>,
    link: OnceLock<Weak<Link>>,
    /// What reads of its calls' arguments may make (its `WorkerIsolate`'s copy budget, which
    /// the reader thread that routes the calls does not hold).
    budget: Budget,
    /// The first promise rejection nothing handled since the last reply, as isolated-vm throws
    /// it into the call that is running (the rest it drops).
    rejection: Mutex<Option<ivm_client::JsError>>,
}

impl Events {
    /// An operation's outcome: its reply, or the rejection its JavaScript left unhandled. The
    /// worker reports rejections as the operation ends, before its reply, and they are taken
    /// in order on the link's reader thread ([`handles_inline`](IsolateEvents::handles_inline)),
    /// so the rejection is here by the time the reply is. (Async operations of one isolate
    /// that end close together may take each other's: isolated-vm's "the call that is
    /// running" is no more precise.)
    /// Only operations that run JavaScript (`runs_js`) take it.
    fn outcome(&self, reply: ivm_client::Result<Reply>, budget: Budget, runs_js: bool) -> Outcome {
        let rejection = if runs_js { self.rejection.lock().take() } else { None };
        match (rejection, reply) {
            (Some(rejection), Ok(_)) => Outcome::Failed(ivm_client::Error::Exception(Box::new(rejection))),
            (_, reply) => Outcome::reply(reply, budget),
        }
    }
}

impl IsolateEvents for Events {
    fn on_event(self: Arc<Self>, event: FromWorker, origin: Origin) {
        match event {
            FromWorker::Call { call, isolate, target, .. } => {
                if let Some(link) = self.link.get().and_then(Weak::upgrade) {
                    let caller = calls::Caller { isolate, key: self.key, budget: self.budget };
                    calls::route(link, call, target, origin, caller, self.queue.as_deref());
                }
            }
            FromWorker::Rejection { error, .. } => {
                self.rejection.lock().get_or_insert(error);
            }
            _ => {}
        }
    }

    fn handles_inline(&self, event: &FromWorker) -> bool {
        matches!(event, FromWorker::Rejection { .. })
    }

    fn on_crash(&self, reason: &str) {
        if let Some(queue) = &self.queue {
            queue.crashed(self.key, reason);
        }
    }
}

/// An isolate in a worker process.
#[napi]
pub struct NativeIsolate {
    /// Until `dispose`, which gives its place in the worker back at once (not when Node
    /// collects this object): a program that makes and disposes isolates one after another
    /// keeps using one worker.
    worker: Mutex<Option<Arc<WorkerIsolate>>>,
    events: Arc<Events>,
}

impl NativeIsolate {
    fn worker(&self) -> ivm_client::Result<Arc<WorkerIsolate>> {
        self.worker.lock().clone().ok_or_else(ivm_client::Error::isolate_disposed)
    }
}

#[napi]
impl NativeIsolate {
    /// Starts (or joins) a worker of `program` (the `ivm` binary) and makes an isolate there
    /// with a memory limit of `memory_limit_mb`, from `snapshot` if given (which `index.js`
    /// has checked is one this process made with `program`).
    #[napi(factory)]
    pub fn create(memory_limit_mb: f64, program: String, snapshot: Option<SnapshotArg>) -> napi::Result<NativeIsolate> {
        static KEYS: AtomicU64 = AtomicU64::new(1);
        let memory_limit = memory_limit(memory_limit_mb);
        // V8 shares one read-only heap across a process, made from its first isolate's snapshot:
        // an isolate from a snapshot lives in a worker that hosts only that snapshot's (ivm's
        // own rule, and tenant name for it).
        let tenant = snapshot.as_ref().map(|snapshot| format!("\u{0}snapshot {}", snapshot.id));
        let (lease, id) = pool(program)
            .create_isolate(tenant.as_deref(), memory_limit, false, |link| {
                Op::CreateIsolate(NewIsolate {
                    memory_limit,
                    rejections: true,
                    cache_secret: cache_secret().map(|secret| secret.to_vec()),
                    default_timeout: None,
                    cpu_budget: None,
                    terminate_grace: TERMINATE_GRACE,
                    inspector: false,
                    snapshot: snapshot.as_ref().map(|snapshot| StartFrom {
                        id: snapshot.id.clone(),
                        blob: (!link.holds(&snapshot.id)).then(|| serde_bytes::ByteBuf::from(snapshot.blob.to_vec())),
                        ahead: false,
                    }),
                })
            })
            .map_err(|e| napi::Error::from_reason(e.to_string()))?;
        if let Some(snapshot) = &snapshot {
            lease.link().now_holds(&snapshot.id);
        }
        let settings = WorkerSettings { grace: TERMINATE_GRACE, default_timeout: None, memory_limit };
        let budget = copy_budget(memory_limit);
        let events = Arc::new(Events { key: KEYS.fetch_add(1, Ordering::Relaxed), queue: calls::queue_of_this_thread(), link: OnceLock::new(), budget, rejection: Mutex::default() });
        let _ = events.link.set(Arc::downgrade(lease.link()));
        let listener: Weak<dyn IsolateEvents> = Arc::downgrade(&(events.clone() as Arc<dyn IsolateEvents>));
        let worker = WorkerIsolate::new(lease, id, settings, listener);
        Ok(NativeIsolate { worker: Mutex::new(Some(Arc::new(worker))), events })
    }

    /// The number `index.js`'s crash handler knows this isolate by.
    #[napi(getter)]
    pub fn key(&self) -> f64 {
        self.events.key as f64
    }

    #[napi]
    pub fn is_disposed(&self) -> bool {
        self.worker().map_or(true, |worker| worker.is_disposed())
    }

    /// Disposes the isolate; whether it was still alive.
    #[napi]
    pub fn dispose(&self) -> bool {
        let worker = self.worker.lock().take();
        worker.is_some_and(|worker| worker.dispose())
    }

    /// CPU and wall-clock time the isolate ran, in nanoseconds.
    #[napi]
    pub fn times(&self) -> Outcome {
        Outcome::of(self.worker().and_then(|worker| worker.times()).map(|(cpu, wall)| values::times(cpu, wall)))
    }

    #[napi]
    pub fn reference_count(&self) -> Outcome {
        Outcome::of(self.worker().and_then(|worker| worker.reference_count()).map(|n| values::number(n as f64)))
    }

    /// Releases a handle (a context, script or reference) in the worker.
    #[napi]
    pub fn release(&self, handle: f64) -> bool {
        self.worker().is_ok_and(|worker| worker.release(handle as u64))
    }

    /// Runs an operation and waits for it on this JavaScript thread, running the Node
    /// functions its JavaScript calls and waits for meanwhile.
    #[napi]
    pub fn request(&self, env: Env, args: OpArgs) -> Outcome {
        let op = match ops::op(args) {
            Ok(op) => op,
            Err(e) => return Outcome::Failed(e),
        };
        let worker = match self.worker() {
            Ok(worker) => worker,
            Err(e) => return Outcome::Failed(e),
        };
        let runs_js = runs_js(&op);
        let waiter = calls::Waiter::new(self.events.queue.clone());
        let reply = waiter.tagging(|| worker.request_waiting(op, |reply| waiter.wait_serving(&env, reply, &worker.link)));
        self.events.outcome(reply, worker.copy_budget, runs_js)
    }

    /// Sends an operation now; the promise settles when it is done, on this thread's event
    /// loop, after the calls of Node functions its JavaScript made.
    #[napi(ts_return_type = "Promise<Outcome>")]
    pub fn request_async<'env>(&self, env: &'env Env, args: OpArgs) -> napi::Result<Unknown<'env>> {
        let queue = self.events.queue.clone().ok_or_else(|| napi::Error::from_reason("isolated-vm is not loaded on this thread"))?;
        let worker = self.worker();
        let budget = worker.as_ref().map_or(Budget::HOST, |worker| worker.copy_budget);
        // Sent outside any call this thread may be answering: its JavaScript's calls are served
        // from the event loop, not inside a call that will have returned by then.
        let sent = worker.and_then(|worker| ops::op(args).map(|op| (runs_js(&op), tls::within(&Vec::new(), None, || worker.request_async(op)))));
        let events = self.events.clone();
        let promise = queue.settle_later(env, async move {
            match sent {
                Ok((runs_js, reply)) => events.outcome(reply.await, budget, runs_js),
                Err(e) => Outcome::Failed(e),
            }
        })?;
        // SAFETY: `promise` was just made in `env`.
        unsafe { napi::bindgen_prelude::FromNapiValue::from_napi_value(env.raw(), promise) }
    }
}

/// A startup snapshot to make an isolate from: V8's blob and its SHA-256 (hex), which names it.
#[napi(object)]
pub struct SnapshotArg {
    pub id: String,
    pub blob: napi::bindgen_prelude::Buffer,
}

/// A script of a startup snapshot.
#[napi(object)]
pub struct SnapshotScript {
    pub code: String,
    pub filename: Option<String>,
}

/// How long the scripts of a snapshot may run (ivm's default for snapshots).
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `scripts` (then `warmup`, in a throw-away context) in a new worker of `program` that
/// does nothing else, and gives `{ blob }`: the startup snapshot V8 made of what they left.
/// `index.js` seals it (it is machine code to V8: only this process's own are used).
#[napi]
pub fn create_snapshot(program: String, scripts: Vec<SnapshotScript>, warmup: Option<String>, memory_limit_mb: f64) -> Outcome {
    let memory_limit = memory_limit(memory_limit_mb);
    let scripts = scripts
        .into_iter()
        .map(|script| (script.code, ScriptOrigin::new(script.filename.unwrap_or_else(|| "<isolated-vm>".to_owned()))))
        .collect();
    let made = pool(program).dedicated_worker(memory_limit).and_then(|worker| {
        let op = Op::CreateSnapshot { scripts, warmup, memory_limit, timeout: Some(SNAPSHOT_TIMEOUT) };
        let made = worker
            .send(None, None, op, Some(SNAPSHOT_TIMEOUT + TERMINATE_GRACE))
            .and_then(|reply| reply.recv().unwrap_or_else(|_| Err(worker.crash_error())));
        worker.retire();
        made
    });
    Outcome::of(made.and_then(|reply| match reply {
        Reply::Snapshot { blob, .. } => Ok(Value::Object([("blob".to_owned(), Value::Bytes(blob.into_vec()))].into_iter().collect())),
        _ => Err(ivm_client::Error::Conversion("the worker's reply is not a snapshot".into())),
    }))
}

/// Whether `op` runs JavaScript (scripts, functions, getters): those the protocol gives a
/// timeout.
fn runs_js(op: &Op) -> bool {
    op.timeout(Some(Duration::MAX)).is_some()
}

/// The value of an external copy a worker made (V8's wire format), read within what an isolate
/// of `memory_limit_mb` may make here.
#[napi]
pub fn read_wire(bytes: napi::bindgen_prelude::Buffer, memory_limit_mb: f64) -> Outcome {
    let wire = ivm_client::protocol::Wire { bytes: bytes.to_vec(), shared: Vec::new() };
    let budget = copy_budget(memory_limit(memory_limit_mb));
    Outcome::of(ivm_client::value::wire::read_value(&wire.bytes, &wire, budget))
}

/// What a reply carries for the JavaScript half.
pub(crate) fn reply_outcome(reply: Reply, budget: Budget) -> ivm_client::Result<Outcome> {
    Ok(Outcome::Value(match reply {
        Reply::Done | Reply::Out(Out::Nothing) => Value::Undefined,
        Reply::Id(id) => values::number(id as f64),
        Reply::Linked(linked) => Value::Bool(linked),
        Reply::Compiled { id, produced, rejected, requests } => {
            let requests = requests
                .into_iter()
                .map(|request| {
                    let attributes = request.attributes.into_iter().map(|(k, v)| Value::Array(vec![Value::String(k), Value::String(v)])).collect();
                    Value::Object([("specifier".to_owned(), Value::String(request.specifier)), ("attributes".to_owned(), Value::Array(attributes))].into_iter().collect())
                })
                .collect();
            let mut compiled = vec![("id".to_owned(), values::number(id as f64)), ("requests".to_owned(), Value::Array(requests))];
            if let Some(produced) = produced {
                compiled.push(("cachedData".to_owned(), Value::Bytes(produced.as_bytes().to_vec())));
            }
            if let Some(rejected) = rejected {
                compiled.push(("cachedDataRejected".to_owned(), Value::Bool(rejected)));
            }
            Value::Object(compiled.into_iter().collect())
        }
        Reply::Out(Out::Data(wire)) => ivm_client::value::wire::read_value(&wire.bytes, &wire, budget)?,
        Reply::Out(Out::Reference { id, type_of }) => return Ok(Outcome::Reference { id, type_of }),
        Reply::Out(Out::ExternalCopy(copy)) | Reply::Copy(copy) => return Ok(Outcome::ExternalCopy(copy)),
        Reply::Heap(stats) => values::heap(&stats),
        Reply::Times { cpu, wall } => values::times(cpu, wall),
        Reply::Count(n) => values::number(n as f64),
        Reply::Profiles(profiles) => ivm_client::to_value(&profiles)?,
        other => return Err(ivm_client::Error::Conversion(format!("unexpected reply {other:?}"))),
    }))
}
