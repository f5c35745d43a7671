//! The native half of the `isolated-vm` package for Node.js whose isolates live in ivm worker
//! processes. It links no V8: it drives the workers (the `ivm` binary) through `ivm-client`,
//! and builds Node values from what they send. `index.js` shapes isolated-vm's API on top.
//!
//! Every call returns an *outcome* (`{ value }` or `{ error: { kind, name, message, stack } }`)
//! rather than throwing, so that the JavaScript half throws isolated-vm's own errors.

mod values;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use ivm_client::protocol::{FromWorker, Id, NewIsolate, Op, Out, Reply, Want};
use ivm_client::tls::Origin;
use ivm_client::{CompileOptions, EvalOptions, IsolateEvents, PoolOptions, ScriptOrigin, Transfer, WorkerIsolate, WorkerPool, WorkerSettings};
use napi_derive::napi;

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

/// What the worker reports for an isolate. Host functions are not offered yet: a call is
/// answered with an error.
struct Events {
    crashed: Mutex<Option<String>>,
    link: OnceLock<Weak<ivm_client::Link>>,
}

impl IsolateEvents for Events {
    fn on_event(self: Arc<Self>, event: FromWorker, _origin: Origin) {
        if let (FromWorker::Call { call, .. }, Some(link)) = (event, self.link.get().and_then(Weak::upgrade)) {
            link.reply(call, Err(ivm_client::Error::js("Error", "host functions are not offered by this package yet")));
        }
    }

    fn on_crash(&self, reason: &str) {
        *self.crashed.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(reason.to_owned());
    }
}

/// An isolate in a worker process.
#[napi]
pub struct NativeIsolate {
    worker: Arc<WorkerIsolate>,
    _events: Arc<Events>,
}

fn millis(ms: Option<f64>) -> Option<Duration> {
    ms.filter(|ms| *ms > 0.0 && ms.is_finite()).map(|ms| Duration::from_secs_f64(ms / 1000.0))
}

fn transfer(copy: bool) -> Transfer {
    if copy { Transfer::Copy } else { Transfer::Auto }
}

fn run_options(timeout_ms: Option<f64>, copy: bool, promise: bool, filename: Option<String>) -> EvalOptions {
    let mut run = EvalOptions::default().transfer(transfer(copy));
    run.timeout = millis(timeout_ms);
    run.promise = promise;
    if let Some(filename) = filename {
        run.origin = ScriptOrigin::new(filename);
    }
    run
}

#[napi]
impl NativeIsolate {
    /// Starts (or joins) a worker of `program` (the `ivm` binary) and makes an isolate there
    /// with a memory limit of `memory_limit_mb`.
    #[napi(factory)]
    pub fn create(memory_limit_mb: u32, program: String) -> napi::Result<NativeIsolate> {
        let memory_limit = u64::from(memory_limit_mb.max(8));
        let (lease, id) = pool(program)
            .create_isolate(None, memory_limit, false, |_| {
                Op::CreateIsolate(NewIsolate {
                    memory_limit,
                    rejections: false,
                    cache_secret: None,
                    default_timeout: None,
                    cpu_budget: None,
                    terminate_grace: TERMINATE_GRACE,
                    inspector: false,
                    snapshot: None,
                })
            })
            .map_err(|e| napi::Error::from_reason(e.to_string()))?;
        let events = Arc::new(Events { crashed: Mutex::default(), link: OnceLock::new() });
        let _ = events.link.set(Arc::downgrade(lease.link()));
        let settings = WorkerSettings { grace: TERMINATE_GRACE, default_timeout: None, memory_limit };
        let listener: Weak<dyn IsolateEvents> = Arc::downgrade(&(events.clone() as Arc<dyn IsolateEvents>));
        let worker = WorkerIsolate::new(lease, id, settings, listener);
        Ok(NativeIsolate { worker: Arc::new(worker), _events: events })
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
    pub fn heap_statistics(&self) -> Outcome {
        Outcome::reply(self.worker.request(Op::HeapStatistics), self.worker.copy_budget)
    }

    #[napi]
    pub fn reference_count(&self) -> Outcome {
        Outcome::of(self.worker.reference_count().map(|n| values::number(n as f64)))
    }

    #[napi]
    pub fn create_context(&self) -> Outcome {
        Outcome::reply(self.worker.request(Op::CreateContext { console: None, name: None }), self.worker.copy_budget)
    }

    #[napi]
    pub async fn create_context_async(&self) -> Outcome {
        let budget = self.worker.copy_budget;
        Outcome::reply(self.worker.request_async(Op::CreateContext { console: None, name: None }).await, budget)
    }

    /// Releases a handle (a context, script or reference) in the worker.
    #[napi]
    pub fn release(&self, handle: f64) -> bool {
        self.worker.release(handle as Id)
    }

    #[napi]
    pub fn eval(&self, context: f64, code: String, timeout_ms: Option<f64>, copy: bool, promise: bool, filename: Option<String>) -> Outcome {
        let op = Op::Eval { context: context as Id, code, run: run_options(timeout_ms, copy, promise, filename), want: Want::Value };
        Outcome::reply(self.worker.request(op), self.worker.copy_budget)
    }

    #[napi]
    pub async fn eval_async(&self, context: f64, code: String, timeout_ms: Option<f64>, copy: bool, promise: bool, filename: Option<String>) -> Outcome {
        let op = Op::Eval { context: context as Id, code, run: run_options(timeout_ms, copy, promise, filename), want: Want::Value };
        let budget = self.worker.copy_budget;
        Outcome::reply(self.worker.request_async(op).await, budget)
    }

    #[napi]
    pub fn compile_script(&self, code: String, filename: Option<String>) -> Outcome {
        Outcome::reply(self.worker.request(compile(code, filename)), self.worker.copy_budget)
    }

    #[napi]
    pub async fn compile_script_async(&self, code: String, filename: Option<String>) -> Outcome {
        let budget = self.worker.copy_budget;
        Outcome::reply(self.worker.request_async(compile(code, filename)).await, budget)
    }

    #[napi]
    pub fn run_script(&self, script: f64, context: f64, timeout_ms: Option<f64>, copy: bool, promise: bool) -> Outcome {
        let op = Op::RunScript { script: script as Id, context: context as Id, run: run_options(timeout_ms, copy, promise, None), want: Want::Value };
        Outcome::reply(self.worker.request(op), self.worker.copy_budget)
    }

    #[napi]
    pub async fn run_script_async(&self, script: f64, context: f64, timeout_ms: Option<f64>, copy: bool, promise: bool) -> Outcome {
        let op = Op::RunScript { script: script as Id, context: context as Id, run: run_options(timeout_ms, copy, promise, None), want: Want::Value };
        let budget = self.worker.copy_budget;
        Outcome::reply(self.worker.request_async(op).await, budget)
    }
}

fn compile(code: String, filename: Option<String>) -> Op {
    let compile = match filename {
        Some(filename) => CompileOptions::origin(ScriptOrigin::new(filename)),
        None => CompileOptions::default(),
    };
    Op::CompileScript { code, compile }
}

/// What a reply carries for the JavaScript half.
pub(crate) fn reply_value(reply: Reply, budget: ivm_client::value::wire::Budget) -> ivm_client::Result<ivm_client::Value> {
    Ok(match reply {
        Reply::Done | Reply::Out(Out::Nothing) => ivm_client::Value::Undefined,
        Reply::Id(id) | Reply::Compiled { id, .. } => values::number(id as f64),
        Reply::Out(Out::Data(wire)) => ivm_client::value::wire::read_value(&wire.bytes, &wire, budget)?,
        Reply::Heap(stats) => values::heap(&stats),
        Reply::Times { cpu, wall } => values::times(cpu, wall),
        Reply::Count(n) => values::number(n as f64),
        other => return Err(ivm_client::Error::Conversion(format!("unexpected reply {other:?}"))),
    })
}
