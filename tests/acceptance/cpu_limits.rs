//! CPU-time limits: a run's `cpu_limit` and an isolate's `cpu_budget` count CPU time, as
//! `cpu_time` does, so a spinning script is stopped while one that waits (in `Atomics.wait`,
//! for a host function) is not charged for waiting.

use std::time::Duration;

use ivm::{Callback, Error, ErrorKind, EvalOptions, Isolate, IsolateOptions};

use crate::new_context;

fn cpu_limit(ms: u64) -> EvalOptions {
    EvalOptions::default().cpu_limit(Duration::from_millis(ms)).timeout(Duration::from_secs(20))
}

#[test]
fn a_cpu_limit_stops_a_spinning_script_and_names_it() {
    let (isolate, context) = new_context();
    let before = isolate.cpu_time().unwrap();
    let err = context.eval_with::<()>("function spin() { for (;;) {} } spin()", &cpu_limit(50)).unwrap_err();
    assert!(matches!(err, Error::CpuLimit { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::CpuLimit);
    assert_eq!(err.kind().as_str(), "cpu-limit");
    assert_eq!(err.to_string(), "Script execution exceeded its CPU time limit.");
    let stack = err.stack().unwrap();
    assert!(stack.starts_with("Error: Script execution exceeded its CPU time limit.\n    at spin ("), "{stack}");
    let used = isolate.cpu_time().unwrap() - before;
    assert!(used >= Duration::from_millis(50), "stopped after {used:?} of CPU time");
    assert_eq!(context.eval::<i32>("1 + 1").unwrap(), 2, "the isolate stays usable");
}

#[test]
fn waiting_in_atomics_wait_is_not_charged() {
    let (_isolate, context) = new_context();
    let waited = "Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 400)";
    assert_eq!(context.eval_with::<String>(waited, &cpu_limit(100)).unwrap(), "timed-out");
    // Waiting and then spinning: only the spinning counts.
    let err = context.eval_with::<()>(&format!("{waited}; for (;;) {{}}"), &cpu_limit(100)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CpuLimit, "{err:?}");
}

#[test]
fn waiting_for_host_functions_is_not_charged() {
    let (_isolate, context) = new_context();
    // A host function that takes 300 ms of wall time, synchronously and as a promise.
    context.set_global("slow", Callback::new(|(): ()| {
        std::thread::sleep(Duration::from_millis(300));
        Ok(1)
    }))
    .unwrap();
    context.set_global("later", Callback::new_async(|(): ()| async {
        let (done, finished) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            let _ = done.send(2);
        });
        Ok(finished.await.unwrap_or(0))
    }))
    .unwrap();
    let waits = "(async () => slow() + await later())()";
    assert_eq!(context.eval_with::<i32>(waits, &cpu_limit(100).promise()).unwrap(), 3);
    // Under the same limit, work done after waiting still counts.
    let err = context.eval_with::<()>("(async () => { await later(); for (;;) {} })()", &cpu_limit(100).promise()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CpuLimit, "{err:?}");
}

#[test]
fn an_isolate_cpu_budget_spans_runs_and_then_refuses_them() {
    let isolate = Isolate::new(IsolateOptions::default().cpu_budget(Some(Duration::from_millis(150)))).unwrap();
    let context = isolate.create_context().unwrap();
    // Runs of about 20 ms of work each, until the budget is spent.
    let work = "{ const t = Date.now(); while (Date.now() - t < 20) {} 'done' }";
    let mut finished = 0;
    let err = loop {
        match context.eval::<String>(work) {
            Ok(_) => finished += 1,
            Err(e) => break e,
        }
        assert!(finished < 100, "the budget never ran out");
    };
    assert_eq!(err.kind(), ErrorKind::CpuLimit, "{err:?}");
    assert!(finished >= 3, "only {finished} runs fitted in the budget");
    let spent = isolate.cpu_time().unwrap();
    assert!(spent >= Duration::from_millis(150), "budget spent after {spent:?}");
    // Spent: even a trivial run is refused, and nothing runs.
    let refused = context.eval::<i32>("globalThis.ran = 1").unwrap_err();
    assert!(matches!(&refused, Error::CpuLimit { stack } if stack.is_empty()), "{refused:?}");
    let refused_again = context.get_global::<Option<i32>>("ran").unwrap_err();
    assert_eq!(refused_again.kind(), ErrorKind::CpuLimit);
    // A run's own limit is cut to what is left of the budget.
    let fresh = Isolate::new(IsolateOptions::default().cpu_budget(Some(Duration::from_millis(40)))).unwrap();
    let err = fresh.create_context().unwrap().eval_with::<()>("for (;;) {}", &cpu_limit(10_000)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CpuLimit);
}

#[test]
fn many_isolates_at_once_are_charged_for_their_own_work() {
    // 120 isolates driven from a tokio multi-thread runtime: a third spin into their CPU
    // limit, the rest wait 200 ms for an async host function under a CPU limit a tenth of that.
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let outcomes = runtime.block_on(async {
        let mut jobs = Vec::new();
        for i in 0..120 {
            let context = Isolate::new(IsolateOptions::default().memory_limit(16)).unwrap().create_context().unwrap();
            let pause = Callback::new_async(|(): ()| async {
                tokio::time::sleep(Duration::from_millis(200)).await;
                Ok(7)
            });
            context.set_global("pause", pause).unwrap();
            let spinning = i % 3 == 0;
            let code = if spinning { "for (;;) {}" } else { "(async () => await pause())()" };
            let run = context.eval_async::<i32>(code, cpu_limit(20).promise());
            jobs.push(tokio::spawn(async move {
                let result = run.await;
                drop(context);
                (spinning, result)
            }));
        }
        let mut outcomes = Vec::new();
        for job in jobs {
            outcomes.push(job.await.unwrap());
        }
        outcomes
    });
    for (spinning, result) in outcomes {
        match (spinning, result) {
            (true, Err(e)) => assert_eq!(e.kind(), ErrorKind::CpuLimit, "{e:?}"),
            (false, Ok(n)) => assert_eq!(n, 7),
            (spinning, other) => panic!("spinning {spinning}: {other:?}"),
        }
    }
}

/// A future that completes with `value` after `ms` milliseconds of wall time.
async fn after(ms: u64, value: i32) -> ivm::Result<i32> {
    let (done, finished) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(ms));
        let _ = done.send(value);
    });
    Ok(finished.await.unwrap_or(0))
}

#[test]
fn a_limit_of_one_run_leaves_another_runs_host_call_alone() {
    let (_isolate, context) = new_context();
    context.set_global("late", Callback::new_async(|(): ()| after(5_000, 0))).unwrap();
    context.set_global("slow", Callback::new_blocking(|(): ()| after(300, 5))).unwrap();
    // Run A waits 5 s for a host function's promise, under a 100 ms timeout; meanwhile run B
    // blocks 300 ms in a host function. A's timeout is A's alone.
    let parked = context.eval_async::<()>("late()", EvalOptions::default().promise().timeout(Duration::from_millis(100)));
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(context.eval::<i32>("slow()").unwrap(), 5);
    let err = crate::block_on(parked).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err:?}");
}

#[test]
fn a_script_that_ignores_its_cpu_limit_costs_its_worker_not_the_host() {
    // A huge BigInt's toString ignores termination for seconds. In a worker, the host cannot
    // see the CPU limit, so the worker ends itself twice the grace period after it.
    let options = IsolateOptions::default()
        .pool(&ivm::WorkerPool::new(ivm::PoolOptions::default().worker_program(crate::process::WORKER)))
        .default_timeout(None)
        .terminate_grace(Duration::from_millis(200));
    let (options, heard) = crate::process::watched_options(options);
    let context = Isolate::new(options).unwrap().create_context().unwrap();
    let started = std::time::Instant::now();
    let err = context.eval_with::<usize>("(1n << 30000000n).toString().length", &EvalOptions::default().cpu_limit(Duration::from_millis(50))).unwrap_err();
    match &err {
        Error::WorkerCrashed { reason } => assert!(reason.contains("Script failed to terminate"), "{reason}"),
        other => panic!("expected WorkerCrashed, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    crate::process::eventually("the catastrophic-error handler", || !heard.lock().unwrap().is_empty());
}
