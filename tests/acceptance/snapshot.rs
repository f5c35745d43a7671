//! Startup snapshots: isolates that start with a library loaded; made in a worker process
//! under limits, sealed under the host's key, and mixed freely (each snapshot's isolates in
//! workers of their own).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ivm::{CacheKey, Error, ErrorKind, Isolate, IsolateOptions, ScriptOrigin, Snapshot};

const LIBRARY: &str = r#"
    function double(x) { return x * 2 }
    var counter = (() => { let n = 40; return () => ++n })();
    globalThis.Point = class Point {
        constructor(x, y) { this.x = x; this.y = y }
        get length() { return Math.hypot(this.x, this.y) }
    };
    globalThis.table = new Map([["one", 1], ["two", 2]]);
    globalThis.loadedOnce = (globalThis.loadedOnce ?? 0) + 1;
    let hidden = "script scope";
"#;

fn library() -> Snapshot {
    Snapshot::builder().script(LIBRARY, ScriptOrigin::new("library.js")).create().unwrap()
}

fn key() -> CacheKey {
    CacheKey::new(&[7; 32]).unwrap()
}

#[test]
fn a_librarys_functions_classes_maps_and_closures_survive() {
    let isolate = Isolate::new(IsolateOptions::default().snapshot(library())).unwrap();
    let context = isolate.create_context().unwrap();
    assert_eq!(context.eval::<u32>("double(21)").unwrap(), 42);
    assert_eq!(context.eval::<u32>("counter()").unwrap(), 41, "the closure kept its state");
    assert_eq!(context.eval::<u32>("counter()").unwrap(), 42);
    assert_eq!(context.eval::<f64>("new Point(3, 4).length").unwrap(), 5.0);
    assert_eq!(context.eval::<u32>("table.get('two') + loadedOnce").unwrap(), 3);
    assert_eq!(context.eval::<String>("typeof hidden").unwrap(), "string", "top-level declarations too");
    // Isolates from a snapshot live in workers that host no other snapshot's.
    assert!(isolate.is_process_isolated());
    // Each context starts from the snapshot afresh, and the usual console is there.
    let other = isolate.create_context().unwrap();
    assert_eq!(other.eval::<u32>("counter()").unwrap(), 41);
    assert_eq!(other.eval::<String>("typeof console.log").unwrap(), "function");
}

#[test]
fn the_warmup_script_runs_at_creation_and_leaves_nothing_behind() {
    let snapshot = Snapshot::builder()
        .script("globalThis.square = x => x * x", ScriptOrigin::default())
        .warmup("for (let i = 0; i < 1000; i++) square(i); globalThis.warmed = true")
        .create()
        .unwrap();
    let context = Isolate::new(IsolateOptions::default().snapshot(snapshot)).unwrap().create_context().unwrap();
    assert_eq!(context.eval::<u32>("square(12)").unwrap(), 144);
    assert_eq!(context.eval::<String>("typeof warmed").unwrap(), "undefined", "the warm-up ran in a throw-away context");
}

#[test]
fn isolates_from_different_snapshots_and_the_built_in_one_run_at_once() {
    let a = Snapshot::builder().script("globalThis.which = 'a'", ScriptOrigin::default()).create().unwrap();
    let b = Snapshot::builder().script("globalThis.which = 'b'; globalThis.extra = [1, 2, 3]", ScriptOrigin::default()).create().unwrap();
    let threads: Vec<_> = (0..9)
        .map(|i| {
            let (snapshot, expected) = match i % 3 {
                0 => (Some(a.clone()), "a:undefined"),
                1 => (Some(b.clone()), "b:object"),
                _ => (None, "undefined:undefined"),
            };
            std::thread::spawn(move || {
                for _ in 0..5 {
                    let mut options = IsolateOptions::default();
                    options.snapshot = snapshot.clone();
                    let isolate = Isolate::new(options).unwrap();
                    let context = isolate.create_context().unwrap();
                    let seen = context.eval::<String>("`${globalThis.which}:${typeof globalThis.extra}`").unwrap();
                    assert_eq!(seen, expected);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
}

#[test]
fn a_sealed_snapshot_opens_again_under_its_key() {
    let snapshot = Snapshot::builder().script("globalThis.kept = 'across runs'", ScriptOrigin::default()).key(key()).create().unwrap();
    let reopened = Snapshot::open(snapshot.sealed().to_vec(), &key()).unwrap();
    let context = Isolate::new(IsolateOptions::default().snapshot(reopened)).unwrap().create_context().unwrap();
    assert_eq!(context.eval::<String>("kept").unwrap(), "across runs");
}

/// Seals `bytes` as the snapshot format does (the HMAC over all but the tag), to forge
/// snapshots that are genuine but for another V8.
fn reseal(mut bytes: Vec<u8>) -> Vec<u8> {
    bytes.truncate(bytes.len() - 32);
    let tag = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[7; 32]), &bytes);
    bytes.extend_from_slice(tag.as_ref());
    bytes
}

#[test]
fn every_kind_of_tampering_is_refused_before_v8_sees_it() {
    let sealed = Snapshot::builder().script("globalThis.x = 1", ScriptOrigin::default()).key(key()).create().unwrap().sealed().to_vec();
    let refused = |bytes: Vec<u8>, key: &CacheKey| -> String {
        let err = Snapshot::open(bytes, key).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        err.to_string()
    };
    let mut flipped = sealed.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 1;
    assert!(refused(flipped, &key()).contains("seal does not verify"));
    assert!(refused(sealed[..sealed.len() - 1].to_vec(), &key()).contains("truncated"));
    assert!(refused(sealed[..sealed.len() / 3].to_vec(), &key()).contains("truncated"));
    assert!(refused(sealed.clone(), &CacheKey::new(&[8; 32]).unwrap()).contains("another key"));
    assert!(refused(b"\x7fELF not a snapshot".to_vec(), &key()).contains("not an ivm snapshot"));
    assert!(refused(Vec::new(), &key()).contains("not an ivm snapshot"));
    // Genuine, but made by another V8: the version is in the header (after magic and format).
    let version_len = sealed[9] as usize;
    let mut other_version = sealed.clone();
    other_version[10 + version_len - 1] ^= 1;
    assert!(refused(reseal(other_version), &key()).contains("made by V8"));
    // ... or with other flags.
    let mut other_flags = sealed.clone();
    other_flags[10 + version_len] ^= 1;
    assert!(refused(reseal(other_flags), &key()).contains("other V8 flags"));
    let mut other_format = sealed.clone();
    other_format[8] = 9;
    assert!(refused(other_format, &key()).contains("format 9"));
}

#[test]
fn hostile_creation_scripts_are_contained() {
    let spin = Snapshot::builder().script("for (;;);", ScriptOrigin::default()).timeout(Some(Duration::from_millis(300))).create();
    assert!(matches!(spin, Err(Error::Timeout { .. })), "{spin:?}");
    let hog = Snapshot::builder()
        .script("const hoard = []; for (;;) hoard.push(new Array(1e5).fill(Math.random()))", ScriptOrigin::default())
        .memory_limit(16)
        .create();
    assert!(matches!(hog, Err(Error::MemoryLimit)), "{hog:?}");
    let thrown = Snapshot::builder().script("throw new TypeError('no library today')", ScriptOrigin::new("lib.js")).create();
    match thrown {
        Err(Error::Exception(e)) => assert_eq!((e.name.as_str(), e.message.as_str()), ("TypeError", "no library today")),
        other => panic!("expected the exception, got {other:?}"),
    }
    let syntax = Snapshot::builder().script("function (", ScriptOrigin::new("broken.js")).create();
    match syntax {
        Err(Error::Exception(e)) => assert!(e.name == "SyntaxError" && e.message.contains("broken.js"), "{e:?}"),
        other => panic!("expected a SyntaxError, got {other:?}"),
    }
    // This process is fine, and snapshots still work.
    let context = Isolate::new(IsolateOptions::default().snapshot(library())).unwrap().create_context().unwrap();
    assert_eq!(context.eval::<u32>("double(2)").unwrap(), 4);
}

#[test]
fn isolates_of_one_snapshot_made_at_once_share_a_worker_that_got_the_blob_once() {
    // Four to a worker, made on four threads at once: each request either carries the blob or
    // comes after the worker has it.
    let pool = ivm::WorkerPool::new(ivm::PoolOptions::default().isolates_per_worker(4));
    let snapshot = library();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (pool, snapshot) = (pool.clone(), snapshot.clone());
            std::thread::spawn(move || {
                let isolate = Isolate::new(IsolateOptions::default().snapshot(snapshot).pool(&pool)).unwrap();
                assert_eq!(isolate.create_context().unwrap().eval::<u32>("double(4)").unwrap(), 8);
                isolate
            })
        })
        .collect();
    let isolates: Vec<Isolate> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    // And a tenant cannot pass for the workers of a snapshot.
    let mut options = IsolateOptions::default();
    options.tenant = Some("a\0snapshot".into());
    let err = Isolate::new(options).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    drop(isolates);
}

#[test]
fn a_worker_makes_its_next_isolate_ahead_and_only_a_request_like_it_gets_it() {
    // A snapshot's worker makes an isolate like its last one ahead of the next request (given
    // time, here a pause): that request gets it, with an id, limit and handler of its own; a
    // request of another kind gets one made for it.
    let pool = ivm::WorkerPool::new(ivm::PoolOptions::default().isolates_per_worker(8));
    let snapshot = library();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let like = |limit: u64| {
        let sink = seen.clone();
        IsolateOptions::default()
            .snapshot(snapshot.clone())
            .pool(&pool)
            .memory_limit(limit)
            .on_unhandled_rejection(move |e| sink.lock().unwrap().push(e.message))
    };
    let mut isolates = Vec::new();
    for (limit, rejection) in [(64, "first"), (64, "ahead"), (16, "other"), (16, "ahead again")] {
        let isolate = Isolate::new(like(limit)).unwrap();
        let context = isolate.create_context().unwrap();
        assert_eq!(context.eval::<u32>("double(2)").unwrap(), 4);
        context.eval::<()>(&format!("Promise.reject(new Error('{rejection}'))")).unwrap();
        assert_eq!(seen.lock().unwrap().last().map(String::as_str), Some(rejection), "reported for its own isolate");
        let heap_limit = isolate.heap_statistics().unwrap().heap_size_limit as u64;
        assert!((limit << 20..limit << 21).contains(&heap_limit), "a {limit} MB isolate's heap: {heap_limit}");
        isolates.push(isolate);
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(pool.workers(), 1);
}
