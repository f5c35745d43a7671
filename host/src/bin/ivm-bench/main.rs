//! `ivm-bench`: the workloads of `isolated-vm-baseline.js`, measured the same way, printed
//! with the same JSON keys (`--json`) so `ci/bench-compare.sh` can put them side by side.
//! `--soak SECONDS` runs a mixed hostile load instead and reports the host's memory at its
//! start and end (see `soak.rs`). Build it in release mode.

mod soak;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context as TaskContext, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use ivm::{
    CacheKey, Callback, CompileOptions, Context, EvalOptions, Isolate, IsolateOptions, Operation, PoolOptions, Reference, ScriptOrigin, Snapshot, Value,
    WorkerPool,
};

/// As in the `ivm` binary (see `ivm::alloc`).
#[global_allocator]
static ALLOCATOR: ivm::BoundedAllocator = ivm::BoundedAllocator::new();

fn main() -> Result<(), ivm::Error> {
    // As a host of hostile code should (and the `ivm` binary does).
    ivm::BoundedAllocator::free_large_blocks_eagerly();
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--soak") {
        let seconds = args.get(at + 1).and_then(|s| s.parse().ok()).unwrap_or(600);
        println!("{}", soak::soak(seconds)?);
        return Ok(());
    }
    let json = args.iter().any(|a| a == "--json");
    let mut out = serde_json::Map::new();
    let mut put = |key: &str, value: f64| {
        out.insert(key.into(), serde_json::json!(value));
    };

    // 1. cold isolate: create + context + eval + dispose
    put(
        "isolate_cycle_ms",
        time_ms(200, |_| {
            let isolate = Isolate::new(IsolateOptions::default().memory_limit(128)).expect("isolate");
            let context = isolate.create_context().expect("context");
            context.eval::<Value>("1+1").expect("eval");
            isolate.dispose().expect("dispose");
        }),
    );

    let isolate = Isolate::new(IsolateOptions::default().memory_limit(128))?;
    let context = isolate.create_context()?;
    // 2. context create + release in a warm isolate
    put(
        "context_create_ms",
        time_ms(500, |_| {
            let c = isolate.create_context().expect("context");
            c.release();
        }),
    );
    // 3. sync eval round trip
    let eval_sync_us = 1000.0 * time_ms(20_000, |_| drop(context.eval::<Value>("1+1").expect("eval")));
    put("eval_sync_us", eval_sync_us);
    // ... and in an isolate with the inspector enabled, no session attached
    let inspected = Isolate::new(IsolateOptions::default().inspector().isolation(ivm::Isolation::InProcess))?.create_context()?;
    put("eval_sync_inspector_us", 1000.0 * time_ms(20_000, |_| drop(inspected.eval::<Value>("1+1").expect("eval"))));

    // 4. host -> isolate function call via Reference
    context.eval::<Value>("globalThis.add = (a, b) => a + b")?;
    let add = context.global()?.get::<Reference>("add")?;
    let no_options = EvalOptions::default();
    put(
        "call_sync_us",
        1000.0 * time_ms(20_000, |i| drop(add.apply::<Value>((), (i as f64, 1), &no_options).expect("apply"))),
    );

    // 5. isolate -> host callback, 100k calls inside one eval
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    context.set_global(
        "hostInc",
        Callback::new(move |(): ()| {
            counter.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }),
    )?;
    let start = Instant::now();
    context.eval::<Value>("for (let i = 0; i < 100000; i++) hostInc()")?;
    put("callback_us", start.elapsed().as_secs_f64() * 1e6 / 100_000.0);
    assert_eq!(hits.load(Ordering::Relaxed), 100_000);

    // 6. structured copy of a ~1 MB object graph into the isolate: the same rows, as the Rust
    // types a host would hold them in, copied in through serde
    let data = Rows {
        rows: (0..10_000).map(|i| Row { id: i, name: format!("row{i}"), tags: vec!["a".into(), "b".into()], score: f64::from(i) / 3.0 }).collect(),
    };
    // The baseline's byte count: the length of the JSON text.
    let megabytes = serde_json::to_string(&data).map_or(0, |s| s.len()) as f64 / 1e6;
    let global = context.global()?;
    let start = Instant::now();
    for _ in 0..20 {
        global.set("data", &data)?;
    }
    put("copy_in_MBps", 20.0 * megabytes / start.elapsed().as_secs_f64());
    // 7. copy out of the isolate, into the same Rust types
    let start = Instant::now();
    for _ in 0..20 {
        drop(global.get::<Rows>("data")?);
    }
    put("copy_out_MBps", 20.0 * megabytes / start.elapsed().as_secs_f64());

    // 8. timeout latency: requested 20 ms
    let start = Instant::now();
    let err = context.eval_with::<Value>("for(;;){}", &EvalOptions::default().timeout(Duration::from_millis(20)));
    put("timeout_20ms_elapsed_ms", start.elapsed().as_secs_f64() * 1000.0);
    let timeout_msg = err.err().map(|e| e.to_string()).unwrap_or_default();

    // 9. memory per idle isolate + context
    let rss0 = rss_bytes();
    let mut keep = Vec::new();
    for _ in 0..200 {
        let is = Isolate::new(IsolateOptions::default().memory_limit(128))?;
        let c = is.create_context()?;
        c.eval::<Value>("1")?;
        keep.push((is, c));
    }
    put("rss_per_isolate_MB", (rss_bytes() as f64 - rss0 as f64) / 200.0 / 1e6);
    for (is, _) in &keep {
        is.dispose()?;
    }
    drop(keep);

    // 10. async throughput: 8 isolates x 500 evals in flight
    let contexts = (0..8)
        .map(|_| Isolate::new(IsolateOptions::default().memory_limit(64))?.create_context())
        .collect::<Result<Vec<_>, _>>()?;
    let start = Instant::now();
    let mut pending = Vec::with_capacity(4000);
    for _ in 0..500 {
        for c in &contexts {
            pending.push(c.eval_async::<Value>(
                "(() => { let s = 0; for (let i = 0; i < 1000; i++) s += i; return s })()",
                EvalOptions::default(),
            ));
        }
    }
    let count = pending.len();
    for p in pending {
        block_on(p)?;
    }
    put("async_evals_per_s", count as f64 / start.elapsed().as_secs_f64());

    // 11. tenants: 200 isolates at once, each awaiting 50 async host calls in sequence; the
    // host function resolves on a later poll
    put("async_host_calls_per_s", async_host_calls_per_s(IsolateOptions::default())?);

    // 12. starvation: as many isolates spinning (long timeouts) as the pool has threads to
    // begin with; how long an eval on another isolate takes meanwhile
    put("starved_eval_ms", starved_eval_ms()?);

    // 13. code cache: compiling a script of 20,000 functions (isolated-vm's cached-data test)
    // with a valid cache, as a share of a cold compile; each compile in a fresh isolate, since
    // V8 also caches compiled code within an isolate
    put("cached_compile_ratio", cached_compile_ratio()?);

    // 14. eval round trip from a wasm guest (tests/guests/bench.c, built by
    // ci/bench-compare.sh), the same `1+1` as eval_sync_us
    if let Some(guest) = std::env::var_os("IVM_BENCH_GUEST") {
        put("component_eval_us", component_eval_us(std::path::Path::new(&guest)));
    }

    // 14b. component starts through the compile cache (`GuestProgram::load` with a
    // `CompileCache`, then the guest's run): the first, into an empty cache, compiles; the
    // median of the next three loads the sealed artifact. The C bench guest, and the
    // componentize-py example guest (guest-abi/examples/python) when ci/bench-compare.sh could
    // build it.
    for (name, var) in [("c", "IVM_BENCH_GUEST"), ("python", "IVM_BENCH_PYTHON_GUEST")] {
        if let Some(guest) = std::env::var_os(var) {
            let (first, cached) = component_starts_ms(std::path::Path::new(&guest));
            put(&format!("component_{name}_first_start_ms"), first);
            put(&format!("component_{name}_cached_start_ms"), cached);
        }
    }

    // 15. eval round trip through libivm's C API (host/c-api/examples/bench.c, built by
    // ci/bench-compare.sh), the same `1+1` as eval_sync_us, and its ratio to it
    if let Some(program) = std::env::var_os("IVM_BENCH_C_API") {
        let c_api = c_api_eval_us(std::path::Path::new(&program));
        put("c_api_eval_us", c_api);
        put("c_api_eval_ratio", c_api / eval_sync_us);
    }

    // 16. process isolation (an isolate in a worker process): eval and call round trips, a
    // host function called from the worker, and creating an isolate from a warm pool
    if std::env::var_os("IVM_BENCH_NO_PROCESS").is_none() {
        for (key, value) in process_figures()? {
            put(key, value);
        }
        // 17. startup snapshot: an isolate and a context ready with a ~1 MB library, from a
        // snapshot (in a warm worker of that snapshot) against evaluating the library anew
        for (key, value) in snapshot_figures()? {
            put(key, value);
        }
    }

    out.insert("timeout_msg".into(), timeout_msg.into());
    out.insert("v8".into(), ivm::v8_version().into());
    if json {
        println!("{}", serde_json::Value::Object(out));
    } else {
        for (k, v) in &out {
            println!("{k:>26}  {v}");
        }
    }
    Ok(())
}

fn process_figures() -> Result<Vec<(&'static str, f64)>, ivm::Error> {
    let pool = WorkerPool::new(PoolOptions::default().idle_workers(1));
    pool.prestart(1, None)?;
    let mut figures = Vec::new();
    // Cold: a new worker process, confined by its sandbox, up to its hello.
    let mut started = Vec::new();
    for _ in 0..20 {
        let fresh = WorkerPool::new(PoolOptions::default().idle_workers(0));
        let start = Instant::now();
        fresh.prestart(1, None)?;
        started.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    started.sort_by(f64::total_cmp);
    figures.push(("process_worker_start_ms", started[started.len() / 2]));
    // Warm: the pool has a worker waiting; creating an isolate there and a context in it.
    let mut created = Vec::new();
    for _ in 0..200 {
        let start = Instant::now();
        let isolate = Isolate::new(IsolateOptions::default().pool(&pool))?;
        let context = isolate.create_context()?;
        created.push(start.elapsed().as_secs_f64() * 1000.0);
        drop((context, isolate));
    }
    created.sort_by(f64::total_cmp);
    figures.push(("process_isolate_create_ms", created[created.len() / 2]));
    let context = Isolate::new(IsolateOptions::default().pool(&pool))?.create_context()?;
    figures.push(("process_eval_us", 1000.0 * time_ms(20_000, |_| drop(context.eval::<Value>("1+1").expect("eval")))));
    context.eval::<Value>("globalThis.add = (a, b) => a + b")?;
    let add = context.global()?.get::<Reference>("add")?;
    let no_options = EvalOptions::default();
    figures.push((
        "process_call_us",
        1000.0 * time_ms(20_000, |i| drop(add.apply::<Value>((), (i as f64, 1), &no_options).expect("apply"))),
    ));
    context.set_global("hostNoop", Callback::new(|(): ()| Ok(())))?;
    let start = Instant::now();
    context.eval::<Value>("for (let i = 0; i < 10000; i++) hostNoop()")?;
    figures.push(("process_callback_us", start.elapsed().as_secs_f64() * 1e6 / 10_000.0));
    // The tenants of workload 11, fifty to a worker.
    let tenants = WorkerPool::new(PoolOptions::default().isolates_per_worker(50));
    figures.push(("process_async_host_calls_per_s", async_host_calls_per_s(IsolateOptions::default().pool(&tenants))?));
    Ok(figures)
}

/// A library of about 1 MB: 3,000 functions and tables of objects.
fn library() -> String {
    let mut library = String::from("globalThis.lib = {};\n");
    let mut i = 0;
    while library.len() < 1 << 20 {
        library.push_str(&format!(
            "lib.f{i} = function f{i}(items) {{ const out = []; for (const item of items) {{ if (item.kind === 'k{i}') \
             out.push({{ id: item.id, score: item.score * {i} + 1, label: 'label-{i}-' + item.id }}); }} \
             return out.sort((a, b) => a.score - b.score); }};\n"
        ));
        if i % 10 == 0 {
            library.push_str(&format!("lib.table{i} = Array.from({{ length: 50 }}, (_, j) => ({{ id: j, kind: 'k{i}', score: j * 1.5 }}));\n"));
        }
        i += 1;
    }
    library
}

fn snapshot_figures() -> Result<Vec<(&'static str, f64)>, ivm::Error> {
    let library = library();
    let snapshot = Snapshot::builder().script(library.as_str(), ScriptOrigin::new("library.js")).create()?;
    // A pool of its own keeps the snapshot's worker warm between isolates.
    let pool = WorkerPool::new(PoolOptions::default().idle_workers(1));
    let ready = |context: &Context| -> Result<(), ivm::Error> {
        assert_eq!(context.eval::<String>("typeof lib.f10")?, "function");
        Ok(())
    };
    let (mut from_snapshot, mut evaluated) = (Vec::new(), Vec::new());
    for _ in 0..21 {
        let start = Instant::now();
        let isolate = Isolate::new(IsolateOptions::default().snapshot(snapshot.clone()).pool(&pool))?;
        ready(&isolate.create_context()?)?;
        from_snapshot.push(start.elapsed().as_secs_f64() * 1000.0);
        isolate.dispose()?;
        let start = Instant::now();
        let isolate = Isolate::new(IsolateOptions::default())?;
        let context = isolate.create_context()?;
        context.eval::<()>(&library)?;
        ready(&context)?;
        evaluated.push(start.elapsed().as_secs_f64() * 1000.0);
        isolate.dispose()?;
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (from_snapshot, evaluated) = (median(from_snapshot), median(evaluated));
    Ok(vec![("snapshot_start_ms", from_snapshot), ("library_eval_start_ms", evaluated), ("snapshot_start_speedup", evaluated / from_snapshot)])
}

/// Workload 11: 200 isolates at once, each awaiting 50 async host calls in sequence, the
/// host function resolving on a later poll (isolated-vm: `await new Promise(setImmediate)`).
fn async_host_calls_per_s(options: IsolateOptions) -> Result<f64, ivm::Error> {
    let tenants = tenants(200, options.memory_limit(32))?;
    let start = Instant::now();
    for sum in await_lookups(&tenants, 50) {
        assert_eq!(block_on(sum)?, 2450.0, "tenants: wrong sum");
    }
    Ok(10_000.0 / start.elapsed().as_secs_f64())
}

/// `count` isolates, each with an async host function `lookup(x)` that resolves to `2 * x` on
/// a later poll.
fn tenants(count: usize, options: IsolateOptions) -> Result<Vec<Context>, ivm::Error> {
    (0..count)
        .map(|_| {
            let context = Isolate::new(options.clone())?.create_context()?;
            context.set_global(
                "lookup",
                Callback::new_async(|(x,): (f64,)| async move {
                    YieldOnce(false).await;
                    Ok(x * 2.0)
                }),
            )?;
            Ok(context)
        })
        .collect()
}

/// Starts a run in every tenant that awaits `lookup(i)` for `i` in `0..calls` in sequence and
/// gives the sum, `calls * (calls - 1)`; all in flight at once.
fn await_lookups(tenants: &[Context], calls: u32) -> Vec<Operation<f64>> {
    let code = format!("(async () => {{ let s = 0; for (let i = 0; i < {calls}; i++) s += await lookup(i); return s }})()");
    let options = EvalOptions::default().promise().timeout(Duration::from_secs(30));
    tenants.iter().map(|c| c.eval_async::<f64>(code.clone(), options.clone())).collect()
}

/// Workload 12: milliseconds an eval takes while runaway scripts hold every thread the pool
/// starts with.
fn starved_eval_ms() -> Result<f64, ivm::Error> {
    let runaways = (0..std::thread::available_parallelism().map_or(2, |n| n.get()) + 1)
        .map(|_| Isolate::new(IsolateOptions::default().memory_limit(16))?.create_context())
        .collect::<Result<Vec<_>, _>>()?;
    let spinning: Vec<_> =
        runaways.iter().map(|c| c.eval_async::<()>("for (;;) {}", EvalOptions::default().timeout(Duration::from_secs(30)))).collect();
    std::thread::sleep(Duration::from_millis(200));
    let other = Isolate::new(IsolateOptions::default().memory_limit(16))?.create_context()?;
    let start = Instant::now();
    block_on(other.eval_async::<Value>("1", EvalOptions::default()))?;
    let elapsed = start.elapsed().as_secs_f64() * 1000.0;
    for context in &runaways {
        context.isolate().dispose()?;
    }
    for spin in spinning {
        let _ = block_on(spin);
    }
    Ok(elapsed)
}

/// A future that is pending once (waking itself), then ready: it completes on a later poll.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

fn component_eval_us(guest: &std::path::Path) -> f64 {
    use ivm::component::{GuestLimits, GuestProgram, Output};
    let run = GuestProgram::load(guest, None).and_then(|p| p.run(&[], GuestLimits::default(), Output::Capture)).expect("the bench guest runs");
    let printed: serde_json::Value = serde_json::from_slice(&run.stdout).expect("the bench guest prints JSON");
    printed["component_eval_us"].as_f64().expect("component_eval_us")
}

/// A guest's first start into an empty compile cache, and the median of three starts after.
fn component_starts_ms(guest: &std::path::Path) -> (f64, f64) {
    use ivm::component::{CompileCache, GuestLimits, GuestProgram, Output};
    let dir = std::env::temp_dir().join(format!("ivm-bench-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cache = CompileCache::open(&dir).expect("a compile cache in the temporary directory");
    let start = || {
        let began = Instant::now();
        GuestProgram::load(guest, Some(&cache)).and_then(|p| p.run(&[], GuestLimits::default(), Output::Capture)).expect("the guest runs");
        began.elapsed().as_secs_f64() * 1e3
    };
    let first = start();
    let mut cached: Vec<f64> = (0..3).map(|_| start()).collect();
    cached.sort_by(f64::total_cmp);
    let _ = std::fs::remove_dir_all(&dir);
    (first, cached[1])
}

fn c_api_eval_us(program: &std::path::Path) -> f64 {
    let run = std::process::Command::new(program).output().expect("the C API bench runs");
    assert!(run.status.success(), "the C API bench failed: {}", String::from_utf8_lossy(&run.stderr));
    let printed: serde_json::Value = serde_json::from_slice(&run.stdout).expect("the C API bench prints JSON");
    printed["c_api_eval_us"].as_f64().expect("c_api_eval_us")
}

fn cached_compile_ratio() -> Result<f64, ivm::Error> {
    // isolated-vm's tests/cached-data.js source.
    let source = (0..20_000).map(|i| format!("function a{i}(){{}}")).collect::<Vec<_>>().join(";");
    let key = CacheKey::new(&[7; 32])?;
    let fresh = || Isolate::new(IsolateOptions::default().code_cache_key(key.clone()));
    let cache = fresh()?.compile_script(&source, &CompileOptions::default().produce_cached_data())?.cached_data().cloned();
    let cache = cache.ok_or_else(|| ivm::Error::InvalidArgument("no code cache was made".into()))?;
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let isolate = fresh()?;
        let start = Instant::now();
        isolate.compile_script(&source, &CompileOptions::default())?;
        cold.push(start.elapsed().as_secs_f64());
        let isolate = fresh()?;
        let start = Instant::now();
        let script = isolate.compile_script(&source, &CompileOptions::default().cached_data(cache.clone()))?;
        warm.push(start.elapsed().as_secs_f64());
        assert_eq!(script.cached_data_rejected(), Some(false), "the cache was used");
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Ok(median(warm) / median(cold))
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Rows {
    rows: Vec<Row>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Row {
    id: u32,
    name: String,
    tags: Vec<String>,
    score: f64,
}

/// Average milliseconds per call of `f` over `n` calls.
fn time_ms(n: usize, mut f: impl FnMut(usize)) -> f64 {
    let start = Instant::now();
    for i in 0..n {
        f(i);
    }
    start.elapsed().as_secs_f64() * 1000.0 / n as f64
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

/// A minimal executor: the futures ivm returns work on any executor, this one included.
fn block_on<F: Future>(future: F) -> F::Output {
    struct ThreadWaker(std::thread::Thread);
    impl Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = TaskContext::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(v) => return v,
            Poll::Pending => std::thread::park(),
        }
    }
}
