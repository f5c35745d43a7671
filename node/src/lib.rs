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
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use ivm_client::protocol::{FromWorker, NewIsolate, Op, Out, Reply};
use ivm_client::tls::Origin;
use ivm_client::value::wire::Budget;
use ivm_client::{IsolateEvents, Link, PoolOptions, Value, WorkerIsolate, WorkerPool, WorkerSettings};
use napi::Env;
use napi::bindgen_prelude::PromiseRaw;
use napi_derive::napi;

use ops::OpArgs;
use values::Outcome;

/// How long a run may go on after its timeout before its worker is killed (ivm's default).
const TERMINATE_GRACE: Duration = Duration::from_secs(5);

/// How many isolates share a worker unless `IVM_ISOLATES_PER_WORKER` says otherwise: a
/// thousand isolates are sixteen processes, not a thousand (isolates of one worker share its
/// fate if V8 aborts it; a memory limit disposes only its isolate).
const ISOLATES_PER_WORKER: usize = 64;

/// One pool of workers per worker program.
fn pool(program: String) -> WorkerPool {
    static POOLS: OnceLock<Mutex<HashMap<PathBuf, WorkerPool>>> = OnceLock::new();
    let mut pools = POOLS.get_or_init(Default::default).lock().unwrap_or_else(|poisoned| poisoned.into_inner());
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
/// its worker's death to `index.js`'s crash handler.
struct Events {
    key: u64,
    link: OnceLock<Weak<Link>>,
    budget: Budget,
}

impl IsolateEvents for Events {
    fn on_event(self: Arc<Self>, event: FromWorker, origin: Origin) {
        if let (FromWorker::Call { call, target, .. }, Some(link)) = (event, self.link.get().and_then(Weak::upgrade)) {
            calls::route(link, call, target, origin, self.budget);
        }
    }

    fn on_crash(&self, reason: &str) {
        calls::crashed(self.key, reason);
    }
}

/// An isolate in a worker process.
#[napi]
pub struct NativeIsolate {
    worker: Arc<WorkerIsolate>,
    events: Arc<Events>,
}

#[napi]
impl NativeIsolate {
    /// Starts (or joins) a worker of `program` (the `ivm` binary) and makes an isolate there
    /// with a memory limit of `memory_limit_mb`.
    #[napi(factory)]
    pub fn create(memory_limit_mb: f64, program: String) -> napi::Result<NativeIsolate> {
        static KEYS: AtomicU64 = AtomicU64::new(1);
        let memory_limit = memory_limit_mb.clamp(8.0, (1u64 << 40) as f64) as u64;
        let (lease, id) = pool(program)
            .create_isolate(None, memory_limit, false, |_| {
                Op::CreateIsolate(NewIsolate {
                    memory_limit,
                    rejections: false,
                    cache_secret: cache_secret().map(|secret| secret.to_vec()),
                    default_timeout: None,
                    cpu_budget: None,
                    terminate_grace: TERMINATE_GRACE,
                    inspector: false,
                    snapshot: None,
                })
            })
            .map_err(|e| napi::Error::from_reason(e.to_string()))?;
        let settings = WorkerSettings { grace: TERMINATE_GRACE, default_timeout: None, memory_limit };
        let budget = Budget::of_isolate(usize::try_from(memory_limit << 20).unwrap_or(usize::MAX));
        let events = Arc::new(Events { key: KEYS.fetch_add(1, Ordering::Relaxed), link: OnceLock::new(), budget });
        let _ = events.link.set(Arc::downgrade(lease.link()));
        let listener: Weak<dyn IsolateEvents> = Arc::downgrade(&(events.clone() as Arc<dyn IsolateEvents>));
        let worker = WorkerIsolate::new(lease, id, settings, listener);
        Ok(NativeIsolate { worker: Arc::new(worker), events })
    }

    /// The number `index.js`'s crash handler knows this isolate by.
    #[napi(getter)]
    pub fn key(&self) -> f64 {
        self.events.key as f64
    }

    #[napi]
    pub fn is_disposed(&self) -> bool {
        self.worker.is_disposed()
    }

    /// Disposes the isolate; whether it was still alive.
    #[napi]
    pub fn dispose(&self) -> bool {
        self.worker.dispose()
    }

    /// CPU and wall-clock time the isolate ran, in nanoseconds.
    #[napi]
    pub fn times(&self) -> Outcome {
        Outcome::of(self.worker.times().map(|(cpu, wall)| values::times(cpu, wall)))
    }

    #[napi]
    pub fn reference_count(&self) -> Outcome {
        Outcome::of(self.worker.reference_count().map(|n| values::number(n as f64)))
    }

    /// Releases a handle (a context, script or reference) in the worker.
    #[napi]
    pub fn release(&self, handle: f64) -> bool {
        self.worker.release(handle as u64)
    }

    /// Runs an operation and waits for it on this (Node's main) thread, running the Node
    /// functions its JavaScript calls meanwhile.
    #[napi]
    pub fn request(&self, env: Env, args: OpArgs) -> Outcome {
        let op = match ops::op(args) {
            Ok(op) => op,
            Err(e) => return Outcome::Failed(e),
        };
        let waiter = calls::Waiter::new();
        let link = &self.worker.link;
        let reply = waiter.tagging(|| self.worker.request_waiting(op, |reply| waiter.wait_serving(&env, reply, link)));
        Outcome::reply(reply, self.worker.copy_budget)
    }

    /// Sends an operation now; the promise settles when it is done (Node's event loop runs the
    /// Node functions its JavaScript calls).
    #[napi]
    pub fn request_async<'env>(&self, env: &'env Env, args: OpArgs) -> napi::Result<PromiseRaw<'env, Outcome>> {
        let budget = self.worker.copy_budget;
        let sent = ops::op(args).map(|op| self.worker.request_async(op));
        env.spawn_future(async move {
            Ok(match sent {
                Ok(reply) => Outcome::reply(reply.await, budget),
                Err(e) => Outcome::Failed(e),
            })
        })
    }
}

/// The value of an external copy a worker made (V8's wire format), read within what an isolate
/// of `memory_limit_mb` may make here.
#[napi]
pub fn read_wire(bytes: napi::bindgen_prelude::Buffer, memory_limit_mb: f64) -> Outcome {
    let wire = ivm_client::protocol::Wire { bytes: bytes.to_vec(), shared: Vec::new() };
    let budget = Budget::of_isolate((memory_limit_mb.clamp(8.0, (1u64 << 40) as f64) as usize).saturating_mul(1 << 20));
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
