//! Debugging and profiling: inspector sessions speaking the DevTools protocol, pausing, the CPU
//! profiler, heap snapshots and the reference count (in both isolation modes: with process
//! isolation the protocol messages, profiles and snapshot chunks cross the worker protocol).

use std::time::{Duration, Instant};

use ivm::{ContextOptions, Error, EvalOptions, InspectorSession, Isolate, IsolateOptions};

fn inspected() -> Isolate {
    Isolate::new(IsolateOptions::default().inspector()).unwrap()
}

/// Reads messages until one satisfies `wanted` (within 10 s); returns it.
fn expect(session: &InspectorSession, what: &str, wanted: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let message = session.recv_timeout(left).unwrap_or_else(|_| panic!("no {what} within 10 s")).expect("the session ended");
        let message: serde_json::Value = serde_json::from_str(&message).unwrap();
        if wanted(&message) {
            return message;
        }
    }
}

fn response(session: &InspectorSession, id: u64) -> serde_json::Value {
    expect(session, &format!("response {id}"), |m| m["id"] == id)
}

fn notification(session: &InspectorSession, method: &str) -> serde_json::Value {
    expect(session, method, |m| m["method"] == method)
}

#[test]
fn a_session_speaks_the_devtools_protocol_and_sees_named_contexts() {
    let isolate = inspected();
    let _main = isolate.create_context_with(ContextOptions::default().name("main")).unwrap();
    let session = isolate.inspector_session().unwrap();
    session.dispatch(r#"{"id":1,"method":"Runtime.enable"}"#).unwrap();
    let created = notification(&session, "Runtime.executionContextCreated");
    assert_eq!(created["params"]["context"]["name"], "main");
    response(&session, 1);
    // Contexts made later are reported as they come.
    let _other = isolate.create_context().unwrap();
    let created = notification(&session, "Runtime.executionContextCreated");
    assert!(created["params"]["context"]["name"].as_str().unwrap().starts_with("context "), "{created}");
    session.dispatch(r#"{"id":2,"method":"Runtime.evaluate","params":{"expression":"[1, 2, 3].length"}}"#).unwrap();
    let evaluated = response(&session, 2);
    assert_eq!(evaluated["result"]["result"]["value"], 3, "{evaluated}");
    // A second session works beside the first; closing one leaves the isolate usable.
    let second = isolate.inspector_session().unwrap();
    second.dispatch(r#"{"id":7,"method":"Runtime.evaluate","params":{"expression":"'two'"}}"#).unwrap();
    assert_eq!(response(&second, 7)["result"]["result"]["value"], "two");
    drop(second);
    session.dispatch(r#"{"id":3,"method":"Runtime.evaluate","params":{"expression":"40 + 2"}}"#).unwrap();
    assert_eq!(response(&session, 3)["result"]["result"]["value"], 42);
    assert_eq!(isolate.create_context().unwrap().eval::<u32>("1 + 1").unwrap(), 2);
}

#[test]
fn a_run_paused_at_debugger_waits_without_spending_its_timeout_or_cpu_time() {
    // A short grace too: a worker whose run is paused is not killed past timeout and grace.
    let isolate = Isolate::new(IsolateOptions::default().inspector().terminate_grace(Duration::from_millis(100))).unwrap();
    let context = isolate.create_context().unwrap();
    let session = isolate.inspector_session().unwrap();
    session.dispatch(r#"{"id":1,"method":"Debugger.enable"}"#).unwrap();
    response(&session, 1);
    let cpu_before = isolate.cpu_time().unwrap();
    // A 300 ms timeout: the pause below lasts longer.
    let run = context.eval_async::<u32>(
        "let secret = 20; debugger; secret * 2 + 2",
        EvalOptions::default().timeout(Duration::from_millis(300)),
    );
    let paused = notification(&session, "Debugger.paused");
    let frame = paused["params"]["callFrames"][0]["callFrameId"].as_str().unwrap().to_owned();
    std::thread::sleep(Duration::from_millis(600));
    let ask = format!(r#"{{"id":2,"method":"Debugger.evaluateOnCallFrame","params":{{"callFrameId":"{frame}","expression":"secret"}}}}"#);
    session.dispatch(ask).unwrap();
    assert_eq!(response(&session, 2)["result"]["result"]["value"], 20);
    session.dispatch(r#"{"id":3,"method":"Debugger.resume"}"#).unwrap();
    assert_eq!(crate::block_on(run).unwrap(), 42);
    let spent = isolate.cpu_time().unwrap() - cpu_before;
    assert!(spent < Duration::from_millis(300), "paused time counted as CPU time: {spent:?}");
}

#[test]
fn debugger_pause_stops_a_busy_loop_and_the_timeout_still_holds_after() {
    let isolate = inspected();
    let context = isolate.create_context().unwrap();
    let session = isolate.inspector_session().unwrap();
    session.dispatch(r#"{"id":1,"method":"Debugger.enable"}"#).unwrap();
    response(&session, 1);
    let run = context.eval_async::<()>("let spins = 0; for (;;) spins++", EvalOptions::default().timeout(Duration::from_millis(500)));
    std::thread::sleep(Duration::from_millis(50));
    session.dispatch(r#"{"id":2,"method":"Debugger.pause"}"#).unwrap();
    let paused = notification(&session, "Debugger.paused");
    let frame = paused["params"]["callFrames"][0]["callFrameId"].as_str().unwrap().to_owned();
    let ask = format!(r#"{{"id":3,"method":"Debugger.evaluateOnCallFrame","params":{{"callFrameId":"{frame}","expression":"spins > 0"}}}}"#);
    session.dispatch(ask).unwrap();
    let evaluated = response(&session, 3);
    assert_eq!(evaluated["result"]["result"]["value"], true, "{evaluated}");
    session.dispatch(r#"{"id":4,"method":"Debugger.resume"}"#).unwrap();
    let err = crate::block_on(run).unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert_eq!(context.eval::<u32>("7").unwrap(), 7);
}

#[test]
fn closing_the_session_that_paused_a_run_lets_it_go_on() {
    let isolate = inspected();
    let context = isolate.create_context().unwrap();
    let session = isolate.inspector_session().unwrap();
    session.dispatch(r#"{"id":1,"method":"Debugger.enable"}"#).unwrap();
    response(&session, 1);
    let run = context.eval_async::<String>("debugger; 'went on'", EvalOptions::default());
    notification(&session, "Debugger.paused");
    drop(session);
    assert_eq!(crate::block_on(run).unwrap(), "went on");
}

#[test]
fn sessions_need_the_inspector_enabled() {
    let isolate = Isolate::new(IsolateOptions::default()).unwrap();
    let err = isolate.inspector_session().unwrap_err();
    assert_eq!(err.to_string(), "Inspector is not enabled for this isolate");
}

#[test]
fn the_cpu_profiler_names_the_hot_function() {
    let isolate = Isolate::new(IsolateOptions::default()).unwrap();
    let context = isolate.create_context().unwrap();
    assert!(isolate.stop_cpu_profiler("never started").unwrap().is_empty());
    isolate.start_cpu_profiler("hot").unwrap();
    context
        .eval::<()>("function hotLoop() { let x = 0; for (let i = 0; i < 3e7; i++) x = (x + i) % 7919; return x } hotLoop()")
        .unwrap();
    let profiles = isolate.stop_cpu_profiler("hot").unwrap();
    assert_eq!(profiles.len(), 1);
    let profile = &profiles[0].profile;
    let hot = profile.nodes.iter().find(|n| n.call_frame.function_name == "hotLoop").expect("hotLoop in the profile");
    assert!(!profile.samples.is_empty());
    assert_eq!(profile.samples.len(), profile.time_deltas.len());
    assert!(profile.samples.contains(&hot.id), "no sample in hotLoop");
    // A .cpuprofile is the profile object itself, in DevTools' field names.
    let file: serde_json::Value = serde_json::to_value(profile).unwrap();
    for field in ["nodes", "startTime", "endTime", "samples", "timeDeltas"] {
        assert!(file.get(field).is_some(), "{field} missing");
    }
    assert!(isolate.stop_cpu_profiler("hot").unwrap().is_empty());
}

#[test]
fn a_profile_stopped_on_another_thread_leaves_the_process_alive() {
    // V8 samples the thread that started a profile with SIGPROF, and puts back the disposition
    // it found when the process's last profile stops. A signal sent to a starting thread that
    // was not running at that moment (busy threads on few cores; stopping from another thread,
    // as async callers do) arrived after that, and its default action ended the process.
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let busy: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    let isolate = Isolate::new(IsolateOptions::default()).unwrap();
    let context = isolate.create_context().unwrap();
    for round in 0..100 {
        let title = format!("round {round}");
        let (started, stopped) = (std::sync::Arc::new(AtomicBool::new(false)), std::sync::Arc::new(AtomicBool::new(false)));
        let starter = {
            let (isolate, title, started, stopped) = (isolate.clone(), title.clone(), started.clone(), stopped.clone());
            std::thread::spawn(move || {
                isolate.start_cpu_profiler(&title).unwrap();
                started.store(true, Ordering::SeqCst);
                // The thread V8 samples stays alive, and busy, until the profile stopped.
                while !stopped.load(Ordering::SeqCst) {
                    std::hint::spin_loop();
                }
            })
        };
        while !started.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        context.eval::<u32>("{ let x = 0; for (let i = 0; i < 1e5; i++) x = (x + i) % 7; x }").unwrap();
        assert_eq!(isolate.stop_cpu_profiler(&title).unwrap().len(), 1);
        stopped.store(true, Ordering::SeqCst);
        starter.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for thread in busy {
        thread.join().unwrap();
    }
}

#[test]
fn a_heap_snapshot_streams_json_holding_what_the_script_made() {
    let isolate = Isolate::new(IsolateOptions::default()).unwrap();
    let context = isolate.create_context().unwrap();
    context.eval::<()>("globalThis.kept = ['needle-' + 'in-the-heap-4711']").unwrap();
    let snapshot = isolate.heap_snapshot(Vec::new()).unwrap();
    let parsed: serde_json::Value = serde_json::from_slice(&snapshot).unwrap();
    assert!(parsed["snapshot"]["meta"].is_object());
    let strings = parsed["strings"].as_array().unwrap();
    assert!(strings.iter().any(|s| s == "needle-in-the-heap-4711"));
    // A writer that fails ends the snapshot with an error, not a crash.
    #[derive(Debug)]
    struct Broken;
    impl std::io::Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("disk full"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let err = isolate.heap_snapshot(Broken).unwrap_err();
    assert!(err.to_string().contains("disk full"), "{err}");
    assert_eq!(context.eval::<u32>("kept.length").unwrap(), 1);
}

#[test]
fn reference_count_counts_live_handles() {
    let isolate = Isolate::new(IsolateOptions::default()).unwrap();
    let before = isolate.reference_count().unwrap();
    let context = isolate.create_context().unwrap();
    let global = context.global().unwrap();
    assert_eq!(isolate.reference_count().unwrap(), before + 2);
    drop(global);
    // Releases reach the engine in order: a blocking call after them sees them done.
    assert_eq!(context.eval::<u32>("1").unwrap(), 1);
    assert_eq!(isolate.reference_count().unwrap(), before + 1);
    isolate.dispose().unwrap();
    assert!(isolate.reference_count().is_err());
}

#[test]
fn waiting_for_a_debugger_pauses_before_the_first_statement() {
    let isolate = inspected();
    let context = isolate.create_context().unwrap();
    let session = isolate.inspector_session().unwrap();
    // The debugger, on a thread of its own: attach, say it is ready, resume at the break.
    let debugger = std::thread::spawn(move || {
        session.dispatch(r#"{"id":1,"method":"Debugger.enable"}"#).unwrap();
        response(&session, 1);
        std::thread::sleep(Duration::from_millis(50));
        session.dispatch(r#"{"id":2,"method":"Runtime.runIfWaitingForDebugger"}"#).unwrap();
        let paused = notification(&session, "Debugger.paused");
        session.dispatch(r#"{"id":3,"method":"Debugger.resume"}"#).unwrap();
        response(&session, 3);
        paused
    });
    let waited = Instant::now();
    isolate.wait_for_debugger().unwrap();
    assert!(waited.elapsed() >= Duration::from_millis(50), "went on before the debugger was ready");
    assert_eq!(context.eval::<u32>("let x = 1;\nx + 1").unwrap(), 2);
    let paused = debugger.join().unwrap();
    assert_eq!(paused["params"]["reason"], "Break on start", "{paused}");
}

#[test]
fn disposing_ends_a_pause_and_a_wait_for_a_debugger() {
    let isolate = inspected();
    let context = isolate.create_context().unwrap();
    let session = isolate.inspector_session().unwrap();
    session.dispatch(r#"{"id":1,"method":"Debugger.enable"}"#).unwrap();
    response(&session, 1);
    let run = context.eval_async::<u32>("debugger; 1", EvalOptions::default());
    notification(&session, "Debugger.paused");
    isolate.dispose().unwrap();
    let err = crate::block_on(run).unwrap_err();
    assert!(matches!(err, Error::Disposed { .. } | Error::WorkerCrashed { .. }), "{err:?}");
    // The session ends with its isolate.
    assert_eq!(session.recv_timeout(Duration::from_secs(10)).map(|_| ()).ok(), Some(()));

    let waiting = inspected();
    let waiter = {
        let waiting = waiting.clone();
        std::thread::spawn(move || waiting.wait_for_debugger())
    };
    std::thread::sleep(Duration::from_millis(50));
    waiting.dispose().unwrap();
    assert!(waiter.join().unwrap().is_err());
}

/// Many inspected isolates at once from a tokio multi-thread runtime: each with a session
/// awaited on the runtime, a CPU profile and async evals in flight.
#[test]
fn many_inspected_isolates_at_once_from_tokio() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
    let tasks: Vec<_> = (0..24u32)
        .map(|n| {
            runtime.spawn(async move {
                let isolate = Isolate::new(IsolateOptions::default().inspector()).unwrap();
                let context = isolate.create_context_async(Default::default()).await.unwrap();
                let session = isolate.inspector_session().unwrap();
                isolate.start_cpu_profiler("load").unwrap();
                let evals: Vec<_> = (0..10).map(|i| context.eval_async::<u32>(format!("{n} * 100 + {i}"), EvalOptions::default())).collect();
                session.dispatch(format!(r#"{{"id":1,"method":"Runtime.evaluate","params":{{"expression":"{n} + 1"}}}}"#)).unwrap();
                let reply: serde_json::Value = serde_json::from_str(&session.next().await.expect("a response")).unwrap();
                assert_eq!(reply["result"]["result"]["value"], n + 1);
                for (i, eval) in evals.into_iter().enumerate() {
                    assert_eq!(eval.await.unwrap(), n * 100 + i as u32);
                }
                let profiles = isolate.stop_cpu_profiler_async("load").await.unwrap();
                assert_eq!(profiles.len(), 1);
            })
        })
        .collect();
    for task in tasks {
        runtime.block_on(task).unwrap();
    }
}
