use std::time::Duration;

use ivm::{Error, EvalOptions, Isolate, IsolateOptions, Value};

use crate::new_context;

#[test]
fn memory_limit_below_8_mb_is_a_clear_error() {
    let err = Isolate::new(IsolateOptions::default().memory_limit(7)).unwrap_err();
    assert_eq!(err, Error::InvalidArgument("`memory_limit` must be at least 8".into()));
    Isolate::new(IsolateOptions::default().memory_limit(8)).expect("8 MB is allowed");
}

#[test]
fn a_very_high_memory_limit_is_accepted() {
    // isolated-vm: tests/heap-limit-high.js (10 TB).
    let isolate = Isolate::new(IsolateOptions::default().memory_limit(10 * 1024 * 1024)).unwrap();
    let context = isolate.create_context().unwrap();
    assert_eq!(context.eval::<i32>("1 + 1").unwrap(), 2);
}

#[test]
fn intl_works_with_bundled_icu_data() {
    let (_isolate, context) = new_context();
    let formatted: String = context.eval("new Intl.NumberFormat('de-DE').format(1234.5)").unwrap();
    assert_eq!(formatted, "1.234,5");
}

#[test]
fn dispose_makes_every_handle_report_disposed() {
    let (isolate, context) = new_context();
    let script = isolate.compile_script("1", &Default::default()).unwrap();
    assert!(!isolate.is_disposed());
    isolate.dispose().unwrap();
    assert!(isolate.is_disposed());
    assert_eq!(context.eval::<Value>("1").unwrap_err(), Error::Disposed { message: "Isolate is disposed".into() });
    assert!(matches!(script.run::<Value>(&context, &Default::default()), Err(Error::Disposed { .. })));
    assert!(matches!(isolate.create_context(), Err(Error::Disposed { .. })));
    assert!(matches!(isolate.heap_statistics(), Err(Error::Disposed { .. })));
    assert!(matches!(isolate.cpu_time(), Err(Error::Disposed { .. })));
    assert_eq!(isolate.dispose().unwrap_err().message(), "Isolate is already disposed");
}

#[test]
fn dispose_from_another_thread_stops_a_running_script() {
    let (isolate, context) = new_context();
    let other = isolate.clone();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        other.dispose().unwrap();
    });
    let err = context.eval::<Value>("for (;;) {}").unwrap_err();
    killer.join().unwrap();
    assert_eq!(err, Error::Disposed { message: "Isolate was disposed during execution".into() });
}

#[test]
fn queued_async_operations_fail_with_disposed() {
    let (isolate, context) = new_context();
    let running = context.eval_async::<Value>("const t = Date.now(); while (Date.now() - t < 100) {}", Default::default());
    let queued = context.eval_async::<Value>("1", Default::default());
    std::thread::sleep(Duration::from_millis(20));
    isolate.dispose().unwrap();
    assert!(matches!(crate::block_on(running), Err(Error::Disposed { .. })));
    assert!(matches!(crate::block_on(queued), Err(Error::Disposed { .. })));
}

#[test]
fn heap_statistics_count_array_buffers_exactly() {
    // isolated-vm: tests/heap-stats.js
    let (isolate, context) = new_context();
    let before = isolate.heap_statistics().unwrap();
    assert_eq!(before.externally_allocated_size, 0);
    assert!(before.heap_size_limit > 0 && before.used_heap_size > 0);
    context.eval::<Value>("globalThis.buffer = new Uint8Array(1024)").unwrap();
    assert_eq!(isolate.heap_statistics().unwrap().externally_allocated_size, 1024);
    assert_eq!(crate::block_on(isolate.heap_statistics_async()).unwrap().externally_allocated_size, 1024);
    // WebAssembly memories count too: V8 reserves them outside the ArrayBuffer allocator.
    context.eval::<Value>("globalThis.memory = new WebAssembly.Memory({ initial: 2 })").unwrap();
    assert_eq!(isolate.heap_statistics().unwrap().externally_allocated_size, 1024 + 2 * 65536);
}

#[test]
fn cpu_and_wall_time_follow_the_work_done() {
    // isolated-vm: tests/cpu-wall-timer.js, with looser bounds for a shared CI machine.
    // Bounds come from this thread's own CPU clock, so a busy machine cannot make it flaky.
    let (isolate, context) = new_context();
    let (cpu0, wall0, thread0) = (isolate.cpu_time().unwrap(), isolate.wall_time().unwrap(), thread_cpu_time());
    context.eval::<Value>("const t = Date.now(); while (Date.now() - t < 100) {}").unwrap();
    context.eval::<Value>("const t2 = Date.now(); while (Date.now() - t2 < 100) {}").unwrap();
    let thread = thread_cpu_time() - thread0;
    let cpu = isolate.cpu_time().unwrap() - cpu0;
    let wall = isolate.wall_time().unwrap() - wall0;
    // Date.now() has millisecond granularity.
    assert!(wall >= Duration::from_millis(195), "wall {wall:?}");
    if isolate.is_process_isolated() {
        // The evals ran in the worker process: the busy loops are its CPU time.
        assert!(cpu >= Duration::from_millis(150), "cpu {cpu:?}");
    } else {
        // Synchronous evals run on this thread: the isolate's CPU time is this thread's, minus
        // the little spent outside the isolate, plus the little V8's tasks (GC steps) took on
        // the pool's threads.
        assert!(cpu <= thread + Duration::from_millis(5) && cpu + Duration::from_millis(10) >= thread, "cpu {cpu:?}, thread {thread:?}");
    }
    assert!(cpu <= wall + Duration::from_millis(5), "cpu {cpu:?}, wall {wall:?}");
}

fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[test]
fn cpu_time_is_readable_live_while_a_script_runs() {
    let (isolate, context) = new_context();
    let reader = isolate.clone();
    let sampler = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(150));
        reader.wall_time().unwrap()
    });
    context.eval::<Value>("const t = Date.now(); while (Date.now() - t < 300) {}").unwrap();
    let live = sampler.join().unwrap();
    assert!(live >= Duration::from_millis(100), "live wall time {live:?}");
}

#[test]
fn many_isolates_run_in_parallel_on_different_threads() {
    let start = std::time::Instant::now();
    let threads: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(|| {
                let (_isolate, context) = new_context();
                context.eval::<Value>("const t = Date.now(); while (Date.now() - t < 300) {}").unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // Serialised they would take 600 ms; two cores run them side by side.
    assert!(start.elapsed() < Duration::from_millis(550), "took {:?}", start.elapsed());
}

#[test]
fn async_operations_on_one_isolate_run_in_submission_order() {
    // isolated-vm: tests/ignored-async.js
    let (_isolate, context) = new_context();
    context.eval::<Value>("globalThis.log = []").unwrap();
    let pending: Vec<_> = (0..100)
        .map(|i| context.eval_async::<Value>(format!("log.push({i})"), EvalOptions::default()))
        .collect();
    for p in pending {
        crate::block_on(p).unwrap();
    }
    let log: Vec<u32> = context.eval("log").unwrap();
    assert_eq!(log, (0..100).collect::<Vec<_>>());
}

#[test]
fn handles_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Isolate>();
    assert_send_sync::<ivm::Context>();
    assert_send_sync::<ivm::Script>();
    assert_send_sync::<Error>();
}

#[test]
fn an_orphaned_isolate_is_freed_when_its_last_handle_drops() {
    // isolated-vm: tests/orphaned-isolate-gc.js — creating and dropping isolates without
    // dispose() must not accumulate memory.
    use crate::rss;
    for _ in 0..50 {
        let (_i, c) = new_context();
        c.eval::<Value>("1").unwrap();
    }
    let before = rss();
    for _ in 0..300 {
        let (_i, c) = new_context();
        c.eval::<Value>("globalThis.x = new Array(10000).fill(1)").unwrap();
    }
    let grown = rss().saturating_sub(before);
    assert!(grown < 100 << 20, "RSS grew by {} MB over 300 dropped isolates", grown >> 20);
}
