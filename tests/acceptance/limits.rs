//! Hard limits: timeouts stop runaway scripts and leave the isolate usable; going over the
//! memory limit ends in `MemoryLimit` (or a RangeError V8 throws itself) and never takes the
//! process down.

use std::time::{Duration, Instant};

use ivm::{Error, EvalOptions, Isolate, IsolateOptions, Value};

use crate::new_context;

fn timeout(ms: u64) -> EvalOptions {
    EvalOptions::default().timeout(Duration::from_millis(ms))
}

#[test]
fn timeouts_too_far_away_to_fire_are_no_timeouts() {
    let isolate = Isolate::new(IsolateOptions::default().terminate_grace(Duration::MAX)).unwrap();
    let context = isolate.create_context().unwrap();
    assert_eq!(context.eval_with::<u32>("1", &EvalOptions::default().timeout(Duration::MAX)).unwrap(), 1);
    let err = context.eval_with::<Value>("for (;;) {}", &timeout(30)).unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
}

#[test]
fn a_timeout_stops_a_runaway_script_and_names_it() {
    // isolated-vm: tests/timeout-fn.js
    let (_isolate, context) = new_context();
    let start = Instant::now();
    let err = context.eval_with::<Value>("function runaway() { for (;;) {} } runaway()", &timeout(20)).unwrap_err();
    assert!(start.elapsed() < Duration::from_millis(500));
    assert_eq!(err.to_string(), "Script execution timed out.");
    assert_eq!(err.kind(), ivm::ErrorKind::Timeout);
    assert!(err.stack().unwrap().contains("at runaway ("), "{:?}", err.stack());
    assert_eq!(context.eval::<i32>("1 + 1").unwrap(), 2, "the isolate stays usable");
}

#[test]
fn a_fired_timeout_never_leaks_into_the_next_call() {
    let (_isolate, context) = new_context();
    for i in 0..200 {
        // Timeouts that fire right around the end of the script.
        let _ = context.eval_with::<Value>("const t = Date.now(); while (Date.now() - t < 1) {}", &timeout(1));
        assert_eq!(context.eval::<i32>(&format!("{i}")).unwrap(), i, "call {i} after a racing timeout");
    }
}

#[test]
fn timeouts_hold_in_isolates_made_where_others_were_dropped() {
    // A new isolate often takes the memory of one just dropped; nothing a thread kept from the
    // old one (its last run's state, say) may stand in for the new one's deadline.
    let (to_watch, watched) = std::sync::mpsc::channel::<(Isolate, std::sync::mpsc::Receiver<()>)>();
    let runner = std::thread::spawn(move || {
        for _ in 0..50 {
            let (isolate, context) = new_context();
            assert_eq!(context.eval::<i32>("1").unwrap(), 1);
            let (done, finished) = std::sync::mpsc::channel();
            to_watch.send((isolate.clone(), finished)).unwrap();
            let err = context.eval_with::<Value>("for (;;) {}", &timeout(20)).unwrap_err();
            assert!(matches!(err, Error::Timeout { .. } | Error::Disposed { .. }), "{err:?}");
            done.send(()).unwrap();
        }
    });
    for (i, (isolate, finished)) in watched.iter().enumerate() {
        if finished.recv_timeout(Duration::from_secs(10)).is_err() {
            isolate.dispose().unwrap();
            panic!("isolate {i}: a 20 ms timeout did not fire within 10 s");
        }
    }
    runner.join().unwrap();
}

#[test]
fn timeouts_cover_closures_and_scripts_and_async_calls() {
    let (isolate, context) = new_context();
    let err = context.eval_closure::<Value>("for (;;) {}", (), &timeout(20)).unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }));
    let script = isolate.compile_script("while (true) {}", &Default::default()).unwrap();
    assert!(matches!(script.run::<Value>(&context, &timeout(20)), Err(Error::Timeout { .. })));
    let err = crate::block_on(context.eval_async::<Value>("for (;;) {}", timeout(20))).unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }));
    // Atomics.wait blocks in V8; the timeout still wakes it.
    let err = context
        .eval_with::<Value>("Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 60000)", &timeout(20))
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
}

/// Scripts that try to take all the memory, from isolated-vm's tests and issues.
const HOSTILE: &[(&str, &str)] = &[
    ("object push loop", "const a = []; for (;;) a.push({ x: 1 })"),
    ("string growth", "let s = ''; const a = []; for (let i = 0; ; i++) { s += 'abcdefgh' + i; if (i % 1000 == 0) a.push(s.slice(0)) }"),
    ("string doubling", "let s = 'ab'; for (;;) s += s"),
    ("array spread (isolated-vm #107)", "[...'.'.repeat(5e7)].length"),
    ("2 MB Uint8Array loop (isolated-vm README)", "const a = []; for (;;) a.push(new Uint8Array(2 * 1024 * 1024))"),
    ("repeated JSON.parse", "const s = JSON.stringify(Array.from({ length: 1e5 }, (_, i) => ({ i, s: 'x' + i }))); const a = []; for (;;) a.push(JSON.parse(s))"),
    ("WebAssembly memory growth", "const m = new WebAssembly.Memory({ initial: 1, maximum: 65536 }); for (;;) m.grow(16)"),
    ("memory.grow inside WebAssembly code", WASM_GROW_LOOP),
    ("one large WebAssembly memory, then filled", "const m = new WebAssembly.Memory({ initial: 16384 }); new Uint8Array(m.buffer).fill(1)"),
];

/// A module whose exported `grow` runs `memory.grow(16)` in a wasm loop until it fails:
/// `(module (memory 1) (func (export "grow") (result i32)
///    (loop (br_if 0 (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) (i32.const 0)))`
const WASM_GROW_LOOP: &str = "
    const bytes = new Uint8Array([
        0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
        0x01, 0x05, 0x01, 0x60, 0x00, 0x01, 0x7f,
        0x03, 0x02, 0x01, 0x00,
        0x05, 0x03, 0x01, 0x00, 0x01,
        0x07, 0x08, 0x01, 0x04, 0x67, 0x72, 0x6f, 0x77, 0x00, 0x00,
        0x0a, 0x12, 0x01, 0x10, 0x00, 0x03, 0x40, 0x41, 0x10, 0x40, 0x00, 0x41, 0x7f, 0x47, 0x0d,
        0x00, 0x0b, 0x41, 0x00, 0x0b,
    ]);
    new WebAssembly.Instance(new WebAssembly.Module(bytes)).exports.grow()";

/// The outcome the issue allows: `MemoryLimit` with the isolate disposed, or a RangeError
/// that V8 itself throws; for a process-isolated isolate also the end of its worker, when
/// the script outruns V8's accounting and meets the worker's OS memory ceiling first
/// (WebAssembly memories grow outside the heap).
fn assert_contained(name: &str, isolate: &Isolate, result: Result<Value, Error>) {
    match result {
        Err(Error::MemoryLimit) => {
            assert!(isolate.is_disposed(), "{name}: the isolate is disposed");
            assert_eq!(Error::MemoryLimit.message(), "Isolate was disposed during execution due to memory limit");
        }
        Err(Error::Exception(e)) if e.name == "RangeError" => {}
        Err(Error::WorkerCrashed { reason }) if isolate.is_process_isolated() => {
            assert!(isolate.is_disposed(), "{name}: the isolate is disposed");
            assert!(reason.contains("out of memory"), "{name}: {reason}");
        }
        other => panic!("{name}: expected MemoryLimit or a RangeError, got {other:?}"),
    }
}

#[test]
fn each_hostile_script_is_contained() {
    for (name, code) in HOSTILE {
        let isolate = Isolate::new(IsolateOptions::default().memory_limit(64)).unwrap();
        let context = isolate.create_context().unwrap();
        assert_contained(name, &isolate, context.eval::<Value>(code));
    }
}

#[test]
fn an_uninterruptible_fill_of_a_huge_array_is_contained() {
    // Array.prototype.fill on a dictionary array ignores termination (isolated-vm #107/#198);
    // the headroom granted lets V8 reach its own RangeError instead of aborting.
    let isolate = Isolate::new(IsolateOptions::default().memory_limit(64)).unwrap();
    let context = isolate.create_context().unwrap();
    assert_contained("new Array(1e9).fill(0)", &isolate, context.eval::<Value>("new Array(1e9).fill(0)"));
}

#[test]
fn a_hundred_memory_limit_hits_leave_the_process_healthy() {
    // RSS is per process: measure in a process of its own, away from the other tests.
    if crate::in_own_process("limits::a_hundred_memory_limit_hits_leave_the_process_healthy") {
        return;
    }
    use crate::rss;
    let mut peak = 0;
    for i in 0..100 {
        let (name, code) = HOSTILE[i % HOSTILE.len()];
        let isolate = Isolate::new(IsolateOptions::default().memory_limit(16)).unwrap();
        let context = isolate.create_context().unwrap();
        assert_contained(name, &isolate, context.eval::<Value>(code));
        peak = peak.max(rss());
    }
    // Freed memory the C allocator keeps cached is not a leak; hand it back before measuring.
    // SAFETY: malloc_trim has no preconditions.
    unsafe { libc::malloc_trim(0) };
    // Healthy afterwards: new isolates work and the memory came back.
    let (_isolate, context) = new_context();
    assert_eq!(context.eval::<i32>("[1, 2, 3].length").unwrap(), 3);
    assert!(rss() < 1 << 30, "RSS after 100 runs: {} MB (peak {} MB)", rss() >> 20, peak >> 20);
}

#[test]
fn the_memory_limit_counts_array_buffers() {
    let isolate = Isolate::new(IsolateOptions::default().memory_limit(16)).unwrap();
    let context = isolate.create_context().unwrap();
    // Buffers within the limit are fine; one that would go over it is not allocated.
    context.eval::<Value>("globalThis.small = new ArrayBuffer(4 * 1024 * 1024)").unwrap();
    assert_eq!(isolate.heap_statistics().unwrap().externally_allocated_size, 4 << 20);
    let result = context.eval::<Value>("new ArrayBuffer(64 * 1024 * 1024)");
    assert_contained("one 64 MB ArrayBuffer", &isolate, result);
}

