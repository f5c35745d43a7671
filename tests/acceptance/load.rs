//! The core under load: hundreds of isolates in flight at once from a tokio multi-thread
//! runtime, awaiting async host functions, some spinning until their timeouts. A run that
//! waits holds no thread; only running JavaScript does, and the pool grows past scripts that
//! keep its threads busy.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::{Duration, Instant};

use ivm::{Callback, Context, Error, EvalOptions, Isolate, IsolateOptions, Isolation, PoolOptions, Spawner, WorkerPool};

/// Options for the many isolates of these tests. With process isolation (the suite's second
/// pass) they share workers, a hundred to a process.
fn options(memory_limit: u64) -> IsolateOptions {
    let options = IsolateOptions::default().memory_limit(memory_limit);
    if !matches!(Isolation::from_env().unwrap(), Isolation::Process) {
        return options;
    }
    static POOL: OnceLock<WorkerPool> = OnceLock::new();
    options.pool(POOL.get_or_init(|| WorkerPool::new(PoolOptions::default().isolates_per_worker(100))))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap()
}

/// A tenant: an isolate whose rule awaits an async host function ten times.
fn tenant(index: usize) -> Context {
    let context = Isolate::new(options(32)).unwrap().create_context().unwrap();
    context
        .set_global(
            "lookupLimit",
            // Made inside the runtime: its futures run there, so tokio's timers work.
            Callback::new_async(|(country,): (String,)| async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                Ok(country.len() as u32 * 10)
            }),
        )
        .unwrap();
    context.set_global("order", serde_json::json!({ "id": index, "country": "NL".repeat(index % 3 + 1) })).unwrap();
    context
        .eval::<()>("globalThis.check = async (order) => { let total = 0; for (let i = 0; i < 10; i++) total += await lookupLimit(order.country); return total }")
        .unwrap();
    context
}

#[test]
fn hundreds_of_isolates_await_tokio_host_functions_beside_runaways() {
    runtime().block_on(async {
        let tenants: Vec<Context> = (0..200).map(tenant).collect();
        // Runaways: as many as the pool has threads to begin with, spinning until their timeout.
        let runaways: Vec<Context> = (0..std::thread::available_parallelism().unwrap().get() + 1)
            .map(|_| Isolate::new(options(16)).unwrap().create_context().unwrap())
            .collect();
        let spinning: Vec<_> = runaways
            .iter()
            .map(|c| tokio::spawn(c.eval_async::<()>("for (;;) {}", EvalOptions::default().timeout(Duration::from_secs(3)))))
            .collect();
        let started = Instant::now();
        let checks: Vec<_> = tenants
            .iter()
            .map(|c| tokio::spawn(c.eval_async::<u32>("check(order)", EvalOptions::default().promise().timeout(Duration::from_secs(20)))))
            .collect();
        // A fast one, on an isolate of its own, is not held up by either.
        let fast = Isolate::new(options(16)).unwrap().create_context().unwrap();
        assert_eq!(fast.eval_async::<u32>("6 * 7", EvalOptions::default()).await.unwrap(), 42);
        for (index, check) in checks.into_iter().enumerate() {
            assert_eq!(check.await.unwrap().unwrap(), (index as u32 % 3 + 1) * 2 * 10 * 10, "tenant {index}");
        }
        // All of that happened while the runaways still ran.
        assert!(started.elapsed() < Duration::from_secs(3), "the tenants waited for the runaways: {:?}", started.elapsed());
        for spin in spinning {
            assert!(matches!(spin.await.unwrap(), Err(Error::Timeout { .. })));
        }
        // Every isolate is still usable.
        assert_eq!(runaways[0].eval::<u32>("1 + 1").unwrap(), 2);
        assert_eq!(tenants[0].eval::<u32>("1 + 1").unwrap(), 2);
    });
}

#[test]
fn scripts_spinning_on_every_thread_do_not_starve_the_others() {
    // More runaways than the pool has threads to begin with, each spinning for a long time: an
    // eval on another isolate still runs (the pool grows), well before any of them ends.
    let runaways: Vec<Context> = (0..std::thread::available_parallelism().unwrap().get() + 2)
        .map(|_| Isolate::new(options(16)).unwrap().create_context().unwrap())
        .collect();
    let spinning: Vec<_> =
        runaways.iter().map(|c| c.eval_async::<()>("for (;;) {}", EvalOptions::default().timeout(Duration::from_secs(10)))).collect();
    // Let them take their threads.
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let other = Isolate::new(options(16)).unwrap().create_context().unwrap();
    assert_eq!(crate::block_on(other.eval_async::<u32>("1", EvalOptions::default())).unwrap(), 1);
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    for (context, spin) in runaways.iter().zip(spinning) {
        context.isolate().dispose().unwrap();
        assert!(crate::block_on(spin).is_err());
    }
}

/// A future that stays pending until [`Gate::open`], then completes; counts how many wait.
#[derive(Clone, Default)]
struct Gate(Arc<GateState>);

#[derive(Default)]
struct GateState {
    open: AtomicBool,
    waiting: AtomicUsize,
    wakers: Mutex<Vec<Waker>>,
}

impl Gate {
    fn wait(&self) -> impl Future<Output = ()> + Send + use<> {
        self.0.waiting.fetch_add(1, Ordering::SeqCst);
        GateWait(self.0.clone())
    }

    fn open(&self) {
        self.0.open.store(true, Ordering::SeqCst);
        for waker in std::mem::take(&mut *self.0.wakers.lock().unwrap()) {
            waker.wake();
        }
    }
}

struct GateWait(Arc<GateState>);

impl Future for GateWait {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        if self.0.open.load(Ordering::SeqCst) {
            return Poll::Ready(());
        }
        self.0.wakers.lock().unwrap().push(cx.waker().clone());
        if self.0.open.load(Ordering::SeqCst) { Poll::Ready(()) } else { Poll::Pending }
    }
}

#[test]
fn ten_thousand_host_calls_pending_over_a_thousand_isolates_complete() {
    // No runtime: ivm's own pool runs the host futures. Every isolate waits on ten calls at
    // once, all 10,000 pending together, then all complete.
    let gate = Gate::default();
    let contexts: Vec<Context> = (0..1000)
        .map(|_| {
            let context = Isolate::new(options(16)).unwrap().create_context().unwrap();
            let gate = gate.clone();
            context
                .set_global(
                    "slow",
                    Callback::new_async(move |(n,): (u32,)| {
                        let opened = gate.wait();
                        async move {
                            opened.await;
                            Ok(n)
                        }
                    })
                    .spawner(Spawner::ivm()),
                )
                .unwrap();
            context
        })
        .collect();
    let runs: Vec<_> = contexts
        .iter()
        .map(|c| {
            c.eval_async::<u32>(
                "Promise.all(Array.from({ length: 10 }, (_, i) => slow(i))).then((all) => all.reduce((a, b) => a + b))",
                EvalOptions::default().promise().timeout(Duration::from_secs(60)),
            )
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while gate.0.waiting.load(Ordering::SeqCst) < 10_000 {
        assert!(Instant::now() < deadline, "only {} calls pending", gate.0.waiting.load(Ordering::SeqCst));
        std::thread::sleep(Duration::from_millis(10));
    }
    gate.open();
    for run in runs {
        assert_eq!(crate::block_on(run).unwrap(), 45);
    }
    for context in &contexts {
        context.isolate().dispose().unwrap();
    }
}

#[test]
fn javascript_a_completion_runs_is_bounded_by_its_run_then_by_the_default_timeout() {
    let default = Duration::from_millis(300);
    let context = Isolate::new(options(16).default_timeout(Some(default))).unwrap().create_context().unwrap();
    context.set_global("tick", Callback::new_async(|(): ()| async { Ok(()) })).unwrap();
    // While the run waits, what its completion runs is the run's: its timeout stops it, with
    // the stack of the loop.
    let err = context
        .eval_with::<()>("(async function rule() { await tick(); for (;;) {} })()", &EvalOptions::default().promise().timeout(Duration::from_millis(100)))
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    // Left behind by a run that has ended, it gets the isolate's default timeout; the isolate
    // stays usable.
    context.eval::<()>("globalThis.spun = false; tick().then(() => { spun = true; for (;;) {} })").unwrap();
    std::thread::sleep(default * 2);
    assert!(context.eval::<bool>("spun").unwrap());
    assert_eq!(context.eval::<u32>("1 + 1").unwrap(), 2);
}

#[test]
fn tokio_futures_work_in_every_kind_of_host_function() {
    runtime().block_on(async {
        let context = Isolate::new(options(32)).unwrap().create_context().unwrap();
        let slept = Arc::new(AtomicUsize::new(0));
        let counter = slept.clone();
        context
            .set_global(
                "sleep",
                Callback::new_async(|(ms,): (u64,)| async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    Ok(ms)
                }),
            )
            .unwrap();
        context
            .set_global(
                "sleepNow",
                Callback::new_blocking(|(ms,): (u64,)| async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    Ok(ms)
                }),
            )
            .unwrap();
        context
            .set_global(
                "later",
                Callback::new_ignored(move |(): ()| {
                    // Inside the runtime: it may spawn on it.
                    let counter = counter.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        counter.fetch_add(1, Ordering::SeqCst);
                    });
                }),
            )
            .unwrap();
        let total = context.eval_async::<u64>("(async () => (await sleep(5)) + sleepNow(5) + (later(), 0))()", EvalOptions::default().promise()).await;
        assert_eq!(total.unwrap(), 10);
        let deadline = Instant::now() + Duration::from_secs(10);
        while slept.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
}

#[test]
fn other_executors_plug_in_as_a_spawner() {
    let spawned = Arc::new(AtomicUsize::new(0));
    let count = spawned.clone();
    // A thread per future, each polled to completion by the test's own executor.
    let spawner = Spawner::new(move |future| {
        count.fetch_add(1, Ordering::SeqCst);
        std::thread::spawn(move || crate::block_on(future));
    });
    let context = Isolate::new(options(32)).unwrap().create_context().unwrap();
    context.set_global("double", Callback::new_async(|(n,): (u32,)| async move { Ok(n * 2) }).spawner(spawner)).unwrap();
    assert_eq!(context.eval_with::<u32>("double(21)", &EvalOptions::default().promise()).unwrap(), 42);
    assert_eq!(spawned.load(Ordering::SeqCst), 1);
}
