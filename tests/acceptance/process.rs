//! Process isolation: isolates in worker processes, and what happens when a worker dies.
//! (The rest of the suite runs against process-isolated isolates too, with
//! `IVM_ISOLATION=process`.)

use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use ivm::{Context, ContextOptions, Error, EvalOptions, Isolate, IsolateOptions, Isolation, PoolOptions, Value, WorkerPool};

pub(crate) const WORKER: &str = env!("CARGO_BIN_EXE_ivm");

fn pool(options: PoolOptions) -> WorkerPool {
    WorkerPool::new(options.worker_program(WORKER))
}

/// Options for an isolate in `pool` whose catastrophic errors land in the returned list.
pub(crate) fn watched(pool: &WorkerPool) -> (IsolateOptions, Arc<Mutex<Vec<String>>>) {
    watched_options(IsolateOptions::default().pool(pool))
}

/// `options` with catastrophic errors landing in the returned list.
pub(crate) fn watched_options(options: IsolateOptions) -> (IsolateOptions, Arc<Mutex<Vec<String>>>) {
    let heard = Arc::new(Mutex::new(Vec::new()));
    let sink = heard.clone();
    (options.on_catastrophic_error(move |message| sink.lock().unwrap().push(message.to_owned())), heard)
}

fn timeout(ms: u64) -> EvalOptions {
    EvalOptions::default().timeout(Duration::from_millis(ms))
}

/// Waits (a little) for something another thread reports.
pub(crate) fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn an_isolate_in_a_worker_behaves_as_one_in_process() {
    let pool = pool(PoolOptions::default());
    let isolate = Isolate::new(IsolateOptions::default().pool(&pool)).unwrap();
    assert!(isolate.is_process_isolated());
    let pid = isolate.worker_pid().unwrap();
    assert_ne!(pid, std::process::id());
    let context = isolate.create_context().unwrap();
    context.set_global("twice", ivm::Callback::new(|(n,): (u32,)| Ok(n * 2))).unwrap();
    assert_eq!(context.eval::<u32>("twice(21)").unwrap(), 42);
    // Host functions run here, in the host process.
    let host_pid = std::process::id();
    context.set_global("pid", ivm::Callback::new(move |(): ()| Ok(host_pid))).unwrap();
    assert_eq!(context.eval::<u32>("pid()").unwrap(), host_pid);
    let in_process = Isolate::new(IsolateOptions::default().isolation(Isolation::InProcess)).unwrap();
    assert!(!in_process.is_process_isolated() && in_process.worker_pid().is_none());
}

#[test]
fn a_killed_worker_fails_the_calls_in_flight_and_new_isolates_work() {
    let pool = pool(PoolOptions::default());
    let (options, heard) = watched(&pool);
    let isolate = Isolate::new(options).unwrap();
    let bystander = Isolate::new(IsolateOptions::default().pool(&pool)).unwrap().create_context().unwrap();
    let context = isolate.create_context().unwrap();
    let running = {
        let context = context.clone();
        std::thread::spawn(move || context.eval::<Value>("for (;;) {}"))
    };
    std::thread::sleep(Duration::from_millis(100));
    let pid = isolate.worker_pid().unwrap();
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    match running.join().unwrap() {
        Err(Error::WorkerCrashed { reason }) => assert!(reason.contains("killed by signal 9 (SIGKILL)"), "{reason}"),
        other => panic!("expected WorkerCrashed, got {other:?}"),
    }
    assert_eq!(Error::WorkerCrashed { reason: String::new() }.kind().as_str(), "worker-crashed");
    assert!(isolate.is_disposed(), "its handles report disposed");
    assert!(matches!(context.eval::<u32>("1"), Err(Error::WorkerCrashed { .. })));
    eventually("the catastrophic-error handler", || heard.lock().unwrap().len() == 1);
    assert!(heard.lock().unwrap()[0].contains("SIGKILL"));
    // Other workers' isolates go on, and new isolates work at once.
    assert_eq!(bystander.eval::<u32>("2 + 2").unwrap(), 4);
    let fresh = Isolate::new(IsolateOptions::default().pool(&pool)).unwrap();
    assert_ne!(fresh.worker_pid(), Some(pid));
    assert_eq!(fresh.create_context().unwrap().eval::<u32>("6 * 7").unwrap(), 42);
}

#[test]
fn a_v8_abort_at_the_workers_memory_ceiling_ends_only_that_worker() {
    // The OS ceiling (RLIMIT_DATA) sits below what the heap limit would allow, so V8 fails to
    // grow its heap and aborts the process: the pattern that takes an in-process host down.
    let pool = pool(PoolOptions::default().memory_ceiling(1024));
    let (options, heard) = watched(&pool);
    let isolate = Isolate::new(options.memory_limit(4096)).unwrap();
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", isolate.worker_pid().unwrap())).unwrap();
    let data = limits.lines().find(|l| l.starts_with("Max data size")).unwrap();
    assert!(data.contains(&(1024u64 << 20).to_string()), "{data}");
    let context = isolate.create_context().unwrap();
    let err = context.eval::<Value>("const a = []; for (;;) a.push(new Array(1e7).fill(1.5))").unwrap_err();
    match &err {
        Error::WorkerCrashed { reason } => assert!(reason.contains("out of memory"), "{reason}"),
        other => panic!("expected WorkerCrashed, got {other:?}"),
    }
    eventually("the catastrophic-error handler", || !heard.lock().unwrap().is_empty());
    assert_eq!(Isolate::new(IsolateOptions::default().pool(&pool)).unwrap().create_context().unwrap().eval::<u32>("1").unwrap(), 1);
}

/// What a fake worker writes to say hello properly: `Hello { version, pid: 7, sandbox }` with
/// an empty sandbox report, as rmp-serde writes it (`{"Hello": [version, 7, [[], []]]}`), in a
/// frame.
fn hello() -> String {
    let version = ivm_client::protocol::VERSION;
    assert!(version < 128, "one byte in MessagePack");
    format!(r"printf '\015\000\000\000\201\245Hello\223\{version:03o}\007\222\220\220'")
}

/// A fake worker program: a shell script.
fn fake_worker(name: &str, script: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("ivm-fake-worker-{name}-{}", std::process::id()));
    std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn a_worker_that_writes_garbage_loses_its_link_and_nothing_else() {
    let cases = [
        // After hello, a frame longer than the protocol allows.
        ("oversized", format!(r"{}; head -c 4 >/dev/null; printf '\377\377\377\177garbage'; sleep 5", hello()), "over the limit"),
        // After hello, a frame of bytes that are not MessagePack.
        ("malformed", format!(r"{}; head -c 4 >/dev/null; printf '\005\000\000\000\301\301\301\301\301'; sleep 5", hello()), "malformed message"),
        // Not even a hello.
        ("silent", "exit 3".to_owned(), "exited with status 3"),
    ];
    for (name, script, expected) in cases {
        let program = fake_worker(name, &script);
        let fake = WorkerPool::new(PoolOptions::default().worker_program(&program));
        let started = Instant::now();
        let err = Isolate::new(IsolateOptions::default().pool(&fake)).unwrap_err();
        match &err {
            Error::WorkerCrashed { reason } => assert!(reason.contains(expected), "{name}: {reason}"),
            other => panic!("{name}: expected WorkerCrashed, got {other:?}"),
        }
        // The broken worker was killed, not waited for.
        assert!(started.elapsed() < Duration::from_secs(4), "{name}: {:?}", started.elapsed());
        let _ = std::fs::remove_file(&program);
    }
    // This process is fine, and so are real workers.
    let isolate = Isolate::new(IsolateOptions::default().pool(&pool(PoolOptions::default()))).unwrap();
    assert_eq!(isolate.create_context().unwrap().eval::<u32>("1 + 1").unwrap(), 2);
}

#[test]
fn a_host_that_drops_its_handles_while_the_worker_is_busy_loses_nothing() {
    let pool = pool(PoolOptions::default().idle_workers(1));
    let isolate = Isolate::new(IsolateOptions::default().pool(&pool)).unwrap();
    let pid = isolate.worker_pid();
    let context = isolate.create_context().unwrap();
    // Busy for a while; meanwhile handles come and go, then the last one goes.
    let busy = context.eval_async::<u32>("const t = Date.now(); while (Date.now() - t < 300) {}; 7", EvalOptions::default());
    let made = context.eval_async::<ivm::Reference>("({ big: new Array(1000).fill(1) })", EvalOptions::default());
    drop(made);
    drop(context);
    drop(isolate);
    // The operation holds the isolate until it is done, as in process.
    assert_eq!(crate::block_on(busy).unwrap(), 7);
    // Then the isolate is gone and its worker idle, and reused.
    let again = Isolate::new(IsolateOptions::default().pool(&pool)).unwrap();
    assert_eq!(again.worker_pid(), pid);
    assert_eq!(again.create_context().unwrap().eval::<u32>("3").unwrap(), 3);
    assert_eq!(pool.workers(), 1);
}

#[test]
fn a_thousand_isolates_share_a_pool_of_ten_workers() {
    let pool = pool(PoolOptions::default().isolates_per_worker(100).idle_workers(0));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let pool = pool.clone();
            std::thread::spawn(move || {
                (0..250)
                    .map(|i| {
                        let isolate = Isolate::new(IsolateOptions::default().pool(&pool).memory_limit(16)).unwrap();
                        let context = isolate.create_context().unwrap();
                        let n = t * 250 + i;
                        assert_eq!(context.eval::<u32>(&format!("{n} * 2")).unwrap(), n * 2);
                        (isolate, context)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let isolates: Vec<_> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    assert_eq!(isolates.len(), 1000);
    let pids: std::collections::HashSet<_> = isolates.iter().map(|(i, _)| i.worker_pid().unwrap()).collect();
    assert_eq!(pids.len(), 10);
    assert_eq!(pool.workers(), 10);
    // Every one still answers, then all go, and so do the workers.
    for (n, (_, context)) in isolates.iter().enumerate() {
        assert_eq!(context.eval::<usize>("1 + 1").unwrap(), 2, "isolate {n}");
    }
    drop(isolates);
    assert_eq!(pool.workers(), 0);
}

#[test]
fn isolates_share_workers_by_tenant() {
    let pool = pool(PoolOptions::default().isolates_per_worker(4));
    let of = |tenant: &str| Isolate::new(IsolateOptions::default().pool(&pool).tenant(tenant)).unwrap();
    let (a1, a2, b) = (of("a"), of("a"), of("b"));
    assert_eq!(a1.worker_pid(), a2.worker_pid());
    assert_ne!(a1.worker_pid(), b.worker_pid());
    // One per isolate by default.
    let single = self::pool(PoolOptions::default());
    let x = Isolate::new(IsolateOptions::default().pool(&single)).unwrap();
    let y = Isolate::new(IsolateOptions::default().pool(&single)).unwrap();
    assert_ne!(x.worker_pid(), y.worker_pid());
}

/// A builtin that ignores termination for seconds (isolated-vm #202: huge BigInts).
const UNINTERRUPTIBLE: &str = "(1n << 30000000n).toString().length";

#[test]
fn a_script_that_ignores_its_timeout_gets_its_worker_killed() {
    let pool = pool(PoolOptions::default());
    let (options, heard) = watched(&pool);
    let isolate = Isolate::new(options.terminate_grace(Duration::from_millis(200))).unwrap();
    let bystander = Isolate::new(IsolateOptions::default().pool(&pool)).unwrap().create_context().unwrap();
    let context = isolate.create_context().unwrap();
    let started = Instant::now();
    let err = context.eval_with::<Value>(UNINTERRUPTIBLE, &timeout(50)).unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert_eq!(err.message(), "Script execution timed out.");
    // Killed after the timeout and the grace period, not when the builtin finished.
    assert!(started.elapsed() < Duration::from_millis(2000), "{:?}", started.elapsed());
    assert!(isolate.is_disposed());
    eventually("the catastrophic-error handler", || !heard.lock().unwrap().is_empty());
    assert!(heard.lock().unwrap()[0].contains("did not stop within the grace period"), "{:?}", heard.lock().unwrap());
    assert_eq!(bystander.eval::<u32>("5").unwrap(), 5);
}

#[test]
fn escalation_counts_from_when_a_run_starts_not_when_it_was_queued() {
    let pool = pool(PoolOptions::default());
    let isolate = Isolate::new(IsolateOptions::default().pool(&pool).terminate_grace(Duration::from_millis(200))).unwrap();
    let pid = isolate.worker_pid();
    let context = isolate.create_context().unwrap();
    // A long run within its timeout, and a short one queued behind it whose timeout and grace
    // period pass while it waits: waiting is not overstaying.
    let long = context.eval_async::<u32>("const t = Date.now(); while (Date.now() - t < 800) {}; 1", timeout(5000));
    let short = context.eval_async::<u32>("2", timeout(50));
    assert_eq!(crate::block_on(long).unwrap(), 1);
    assert_eq!(crate::block_on(short).unwrap(), 2);
    assert_eq!(isolate.worker_pid(), pid);
    assert!(!isolate.is_disposed());
}

#[test]
fn a_console_handler_may_call_back_into_its_isolate() {
    let pool = pool(PoolOptions::default());
    let isolate = Isolate::new(IsolateOptions::default().pool(&pool)).unwrap();
    let this: Arc<OnceLock<Context>> = Arc::default();
    let (said, heard) = std::sync::mpsc::channel();
    let target = this.clone();
    let options = ContextOptions::default().console(move |_, text| {
        let count = target.get().unwrap().eval::<u32>("globalThis.logged = (globalThis.logged ?? 0) + 1");
        said.send((text.to_owned(), count.unwrap())).unwrap();
    });
    let context = isolate.create_context_with(options).unwrap();
    this.set(context.clone()).unwrap();
    assert_eq!(context.eval::<u32>("console.log('once'); console.log('twice'); 5").unwrap(), 5);
    let wait = Duration::from_secs(10);
    assert_eq!(heard.recv_timeout(wait).unwrap(), ("once".to_owned(), 1));
    assert_eq!(heard.recv_timeout(wait).unwrap(), ("twice".to_owned(), 2));
}

#[test]
fn a_console_handler_may_take_a_heap_snapshot_of_its_isolate() {
    // The snapshot's chunks come while the handler waits for it on the thread that would
    // otherwise handle them: all of them reach its writer before it returns.
    let pool = pool(PoolOptions::default());
    let isolate = Isolate::new(IsolateOptions::default().pool(&pool)).unwrap();
    let (said, heard) = std::sync::mpsc::channel();
    let target = isolate.clone();
    let options = ContextOptions::default().console(move |_, _| {
        let snapshot = target.heap_snapshot(Vec::new()).unwrap();
        said.send(serde_json::from_slice::<serde_json::Value>(&snapshot).map(|s| s["strings"].to_string().contains("logged-4711"))).unwrap();
    });
    let context = isolate.create_context_with(options).unwrap();
    context.eval::<()>("globalThis.kept = 'logged-' + 4711; console.log(kept)").unwrap();
    assert!(heard.recv_timeout(Duration::from_secs(30)).unwrap().expect("the whole snapshot, as JSON"));
}

#[test]
fn a_slow_console_handler_delays_the_result_but_is_no_timeout() {
    let pool = pool(PoolOptions::default());
    let isolate = Isolate::new(IsolateOptions::default().pool(&pool).terminate_grace(Duration::from_millis(100))).unwrap();
    let slow = ContextOptions::default().console(|_, _| std::thread::sleep(Duration::from_millis(600)));
    let context = isolate.create_context_with(slow).unwrap();
    let started = Instant::now();
    assert_eq!(context.eval_with::<u32>("console.log('slowly'); 3", &timeout(50)).unwrap(), 3);
    // The output was handled before the result came back, and the run, long over, was not
    // escalated meanwhile.
    assert!(started.elapsed() >= Duration::from_millis(600));
    assert!(!isolate.is_disposed());
}

#[test]
fn a_dropped_pool_ends_its_workers() {
    let pool = pool(PoolOptions::default().idle_workers(2));
    pool.prestart(1, None).unwrap();
    let isolate = Isolate::new(IsolateOptions::default().pool(&pool)).unwrap();
    let pid = isolate.worker_pid().unwrap();
    drop(isolate);
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists(), "an idle worker stays while its pool does");
    drop(pool);
    eventually("the worker to exit", || !std::path::Path::new(&format!("/proc/{pid}")).exists());
}

#[test]
fn an_in_process_script_that_ignores_its_timeout_is_reported() {
    let heard = Arc::new(Mutex::new(Vec::new()));
    let sink = heard.clone();
    let options = IsolateOptions::default()
        .isolation(Isolation::InProcess)
        .terminate_grace(Duration::from_millis(200))
        .on_catastrophic_error(move |message| sink.lock().unwrap().push(message.to_owned()));
    let context = Isolate::new(options).unwrap().create_context().unwrap();
    // Nothing can stop it in process: the call returns when the builtin is done, as a timeout,
    // and the embedder heard about it on time.
    let err = context.eval_with::<Value>(UNINTERRUPTIBLE, &timeout(50)).unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    // (The handler runs on a thread of its own, which may come a moment after the call.)
    eventually("the catastrophic-error handler", || !heard.lock().unwrap().is_empty());
    assert_eq!(*heard.lock().unwrap(), ["Script failed to terminate"]);
    assert_eq!(context.eval::<u32>("1").unwrap(), 1, "the isolate stays usable");
}

#[test]
fn isolation_comes_from_the_environment_unless_chosen() {
    assert_eq!("process".parse::<Isolation>().unwrap(), Isolation::Process);
    assert_eq!("in-process".parse::<Isolation>().unwrap(), Isolation::InProcess);
    assert_eq!("elsewhere".parse::<Isolation>().unwrap_err().kind(), ivm::ErrorKind::InvalidArgument);
    let expected = matches!(std::env::var("IVM_ISOLATION").as_deref(), Ok("process"));
    assert_eq!(Isolate::new(Default::default()).unwrap().is_process_isolated(), expected);
}

#[test]
fn a_flood_of_console_output_slows_the_worker_instead_of_growing_the_host() {
    // The console sink is slow (a reader of stdout that does not keep up): the worker's output
    // waits in the pipe and the worker blocks, instead of piling up in the host.
    if crate::in_own_process("process::a_flood_of_console_output_slows_the_worker_instead_of_growing_the_host") {
        return;
    }
    let pool = pool(PoolOptions::default());
    let isolate = Isolate::new(IsolateOptions::default().pool(&pool)).unwrap();
    let printed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = printed.clone();
    let context = isolate
        .create_context_with(ContextOptions::default().console(move |_, text| {
            counter.fetch_add(text.len(), std::sync::atomic::Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(20));
        }))
        .unwrap();
    let before = crate::rss();
    let err = context.eval_with::<()>("const s = 'x'.repeat(1 << 20); for (;;) console.log(s)", &timeout(2000)).unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    let grew = crate::rss().saturating_sub(before);
    // At 20 ms a line, about a hundred 1 MB lines are printed in 2 s; the host holds at most
    // its 8 MB of queued output besides.
    assert!(grew < 128 << 20, "the host grew by {} MB", grew >> 20);
    assert!(printed.load(std::sync::atomic::Ordering::SeqCst) > 0);
}

#[test]
fn a_host_call_too_large_to_send_fails_in_javascript() {
    // Arguments over the protocol's frame limit (256 MB) cannot reach the host: the call
    // throws in the worker instead of waiting forever for an answer.
    let pool = pool(PoolOptions::default());
    let context = Isolate::new(IsolateOptions::default().pool(&pool).memory_limit(2048)).unwrap().create_context().unwrap();
    context.set_global("take", ivm::Callback::new(|(s,): (String,)| Ok(s.len()))).unwrap();
    let message: String = context
        .eval_with("try { take('x'.repeat(300 << 20)); 'sent' } catch (e) { e.message }", &timeout(60_000))
        .unwrap();
    assert!(message.contains("over the limit"), "{message}");
    assert_eq!(context.eval::<usize>("take('small')").unwrap(), 5);
}

/// The memory cgroup a worker is in, if it has one of its own.
fn worker_cgroup_limit(pid: u32) -> Option<u64> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = cgroups.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        (controllers.split(',').any(|c| c == "memory") || controllers.is_empty()).then(|| path.to_owned())
    })?;
    if !path.contains("ivm-worker-") {
        return None;
    }
    ["/sys/fs/cgroup/memory", "/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .iter()
        .flat_map(|root| ["memory.limit_in_bytes", "memory.max"].map(|file| format!("{root}{path}/{file}")))
        .find_map(|file| std::fs::read_to_string(file).ok()?.trim().parse().ok())
}

#[test]
fn a_workers_memory_ceiling_follows_the_memory_limits_of_its_isolates() {
    // Where the host may make cgroups (as root, or delegated), each worker gets one, sized from
    // its isolates' memory limits; elsewhere only RLIMIT_DATA applies, which V8's reservations
    // make loose (see PoolOptions::memory_ceiling).
    let pool = pool(PoolOptions::default());
    let isolate = Isolate::new(IsolateOptions::default().pool(&pool).memory_limit(16)).unwrap();
    let Some(limit) = worker_cgroup_limit(isolate.worker_pid().unwrap()) else {
        eprintln!("no memory cgroup for workers here: the ceiling is RLIMIT_DATA only");
        return;
    };
    assert!(limit <= 256 << 20, "a 16 MB isolate's worker may use {} MB", limit >> 20);
    // A builtin that ignores termination runs the heap far past its limit (in process, the
    // guard's headroom lets V8 reach its own RangeError at ~512 MB): the worker stops at its
    // ceiling, and the caller hears the memory limit.
    let context = isolate.create_context().unwrap();
    let started = Instant::now();
    match context.eval::<Value>("new Array(1e9).fill(0)") {
        Err(Error::MemoryLimit) => {}
        Err(Error::Exception(e)) if e.name == "RangeError" => {}
        other => panic!("expected MemoryLimit, got {other:?}"),
    }
    assert!(isolate.is_disposed());
    eprintln!("stopped after {:?}", started.elapsed());
}
