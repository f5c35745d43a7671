//! Isolates for WebAssembly guests: real guest components (C, built here from
//! `tests/guests/*.c` with `ci/build-guest.sh`, and the Python example built with
//! componentize-py) using the `ivm:isolate` WIT interface through wasmtime. The guests in
//! `tests/guests/0.1.0/` are built for version 0.1.0 of the interface, which the host still
//! offers; the others for the newest.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use ivm::Isolation;
use ivm::component::{GuestLimits, GuestProgram, Output};

/// Builds `tests/guests/NAME.c` into a component (once per test run); `0.1.0/NAME` against
/// that version of the interface.
fn guest(name: &'static str) -> PathBuf {
    static BUILT: OnceLock<std::sync::Mutex<Vec<&'static str>>> = OnceLock::new();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = root.join("target/guests");
    std::fs::create_dir_all(out.join("0.1.0")).unwrap();
    let wasm = out.join(format!("{name}.wasm"));
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap();
    if !built.contains(&name) {
        let source = root.join(format!("tests/guests/{name}.c"));
        let mut build = Command::new("bash");
        build.arg(root.join("ci/build-guest.sh"));
        if name.starts_with("0.1.0/") {
            build.arg("--wit").arg(root.join("guest-abi/wit-0.1.0"));
        }
        let result = build.arg(&source).arg(&wasm).output().unwrap();
        assert!(result.status.success(), "building the {name} guest failed:\n{}", String::from_utf8_lossy(&result.stderr));
        built.push(name);
    }
    wasm
}

/// What the tour guest prints (tests/guests/0.1.0/tour.c), given the argument `wasm`.
const TOUR: &str = "\
eval: 42
argument: 'WASM'
msgpack in: 22
msgpack out: msgpack 82a1619201a178a47768656ec70cff000000000000000000000000
during a call: 'function'
guest calls: 2
task: 422
outside a task: 'TypeError'
module: 42
timeout: error timeout
after timeout: 2
exception: error exception TypeError: bad
memory: error memory-limit
disposed: yes
still running: 'yes'
fourth isolate: error limit this guest may hold at most 2 isolates
done
";

#[test]
fn a_guest_uses_isolates_through_the_wit_interface() {
    // Data both ways in MessagePack, guest functions called from JavaScript, modules, and a
    // timeout, an exception, a memory limit and a host limit, all as error values the guest
    // carries on after.
    let program = GuestProgram::load(&guest("0.1.0/tour"), None).unwrap();
    let run = program.run(&["wasm".into()], GuestLimits::default().max_isolates(2), Output::Capture).unwrap();
    assert_eq!(run.status, 0);
    assert_eq!(String::from_utf8_lossy(&run.stdout), TOUR);
    assert!(run.isolates.iter().all(|i| i.is_disposed()), "nothing outlives the guest's store");
}

#[test]
fn several_guests_run_at_once() {
    let program = std::sync::Arc::new(GuestProgram::load(&guest("0.1.0/tour"), None).unwrap());
    let runs: Vec<_> = (0..3)
        .map(|_| {
            let program = program.clone();
            std::thread::spawn(move || program.run(&["wasm".into()], GuestLimits::default().max_isolates(2), Output::Capture).unwrap())
        })
        .collect();
    for run in runs {
        let run = run.join().unwrap();
        assert_eq!((run.status, String::from_utf8_lossy(&run.stdout).into_owned()), (0, TOUR.to_owned()));
    }
}

#[test]
fn a_guests_isolates_can_live_in_worker_processes() {
    // The same tour, every isolate in a worker process: tasks and guest functions, a guest
    // using a task's isolate while it answers its call, limits and errors all behave the same.
    let program = GuestProgram::load(&guest("0.1.0/tour"), None).unwrap();
    let limits = GuestLimits::default().max_isolates(2).isolation(Isolation::Process);
    let run = program.run(&["wasm".into()], limits, Output::Capture).unwrap();
    assert_eq!((run.status, String::from_utf8_lossy(&run.stdout).into_owned()), (0, TOUR.to_owned()));
    assert!(!run.isolates.is_empty() && run.isolates.iter().all(|i| i.is_process_isolated() && i.is_disposed()));
    let out = Command::new(env!("CARGO_BIN_EXE_ivm"))
        .args(["--isolation", "process", "component", "run", "--max-isolates", "2"])
        .arg(guest("0.1.0/tour"))
        .arg("wasm")
        .output()
        .unwrap();
    assert_eq!((out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned()), (Some(0), TOUR.to_owned()));
}

#[test]
fn what_a_guest_leaks_is_disposed_with_its_store() {
    let program = GuestProgram::load(&guest("0.1.0/leak"), None).unwrap();
    let run = program.run(&[], GuestLimits::default(), Output::Capture).unwrap();
    assert_eq!((run.status, String::from_utf8_lossy(&run.stdout).as_ref()), (0, "leaked\n"));
    assert_eq!(run.isolates.len(), 3);
    assert!(run.isolates.iter().all(|i| i.is_disposed()), "the guest's isolates went with its store");
}

#[test]
fn ivm_component_run_runs_a_guest_with_arguments() {
    let out = Command::new(env!("CARGO_BIN_EXE_ivm"))
        .args(["component", "run", "--max-isolates", "2"])
        .arg(guest("0.1.0/tour"))
        .arg("wasm")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), TOUR);
    let missing = Command::new(env!("CARGO_BIN_EXE_ivm")).args(["component", "run", "/nonexistent.wasm"]).output().unwrap();
    assert_eq!(missing.status.code(), Some(1));
}

#[test]
fn the_readme_guest_runs() {
    let out = Command::new(env!("CARGO_BIN_EXE_ivm")).args(["component", "run"]).arg(guest("hello")).arg("world").output().unwrap();
    assert_eq!((out.status.code(), String::from_utf8_lossy(&out.stdout).as_ref()), (Some(0), "Hello, world! 42\n"));
    // Everything after the guest is the guest's, flags too.
    let out = Command::new(env!("CARGO_BIN_EXE_ivm")).args(["component", "run"]).arg(guest("hello")).arg("--json").output().unwrap();
    assert_eq!((out.status.code(), String::from_utf8_lossy(&out.stdout).as_ref()), (Some(0), "Hello, --json! 42\n"));
}

#[test]
fn hostile_guest_data_is_read_once_and_counted() {
    // MessagePack nested hundreds of levels deep around a megabyte is read in place (before,
    // each level was parsed and copied again), nesting past the bound is refused, and external
    // copies count against the guest's memory budget.
    let program = GuestProgram::load(&guest("0.1.0/hostile"), None).unwrap();
    let started = std::time::Instant::now();
    let run = program.run(&[], GuestLimits::default().memory_budget_mb(64), Output::Capture).unwrap();
    assert_eq!(run.status, 0, "{}", String::from_utf8_lossy(&run.stdout));
    assert_eq!(
        String::from_utf8_lossy(&run.stdout),
        "deep: ok\ndeeper: error conversion\nfirst copy: ok\nsecond copy: error limit\nafter dropping the first: ok\n"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "{:?}", started.elapsed());
}

/// What the debug guest prints (tests/guests/debug.c) when the host lets it debug.
const DEBUG: &str = "\
profiles: 1, names hot: yes, has samples: yes
second snapshot after the first's end: ok, a third before that one's: refused
snapshot: json, has the string: yes
reference count: 1
context: guest-main
paused: yes, local: 41
task: 42
eval with a debugger on: ran
task waited on without a limit: unlimited
call while paused: other (paused first: yes)
the paused task: went on
session after dispose: disposed
";

#[test]
fn a_guest_debugs_and_profiles_its_isolates_when_the_host_allows_it() {
    // Version 0.2.0: the CPU profiler, a heap snapshot read in pieces, and an inspector
    // session driven by polling while a task of the guest is paused at `debugger;`; in this
    // process and in worker processes. Without the host's permission, each is `error::limit`.
    let program = GuestProgram::load(&guest("debug"), None).unwrap();
    for isolation in [Isolation::InProcess, Isolation::Process] {
        let limits = GuestLimits::default().isolation(isolation);
        let run = program.run(&[], limits.clone().debugging(true), Output::Capture).unwrap();
        assert_eq!((run.status, String::from_utf8_lossy(&run.stdout).into_owned()), (0, DEBUG.to_owned()), "{isolation:?}");
        let refused = program.run(&[], limits, Output::Capture).unwrap();
        assert_eq!(
            (refused.status, String::from_utf8_lossy(&refused.stdout).as_ref()),
            (0, "inspector: refused (limit)\nprofiler: refused (limit)\nheap snapshot: refused (limit)\n"),
            "{isolation:?}"
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_ivm")).args(["component", "run", "--allow-debugging"]).arg(guest("debug")).output().unwrap();
    assert_eq!((out.status.code(), String::from_utf8_lossy(&out.stdout).as_ref()), (Some(0), DEBUG), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Runs guest `name` in both isolation modes, checking that it succeeds and prints `expected`.
fn prints_in_both_modes(name: &'static str, expected: &str) {
    let program = GuestProgram::load(&guest(name), None).unwrap();
    for isolation in [Isolation::InProcess, Isolation::Process] {
        let run = program.run(&[], GuestLimits::default().isolation(isolation), Output::Capture).unwrap();
        assert_eq!((run.status, String::from_utf8_lossy(&run.stdout).as_ref()), (0, expected), "{name}, {isolation:?}");
    }
}

#[test]
fn a_guest_makes_a_startup_snapshot_and_starts_isolates_from_it() {
    // Version 0.2.0: a snapshot made under the guest's limits, kept as sealed bytes and opened
    // again; tampering and hostile creation scripts are error values.
    prints_in_both_modes(
        "snapshot",
        "from the snapshot: Hello, guest! 12\nreopened: Hello, again!\ntampered: invalid-argument\n\
         spinning: timeout\nhoarding: memory-limit\nthrowing: exception\n",
    );
}

#[test]
fn a_guest_runs_into_cpu_limits_as_error_values() {
    // Version 0.2.0: a run's CPU limit (a spin is stopped, a wait is not charged) and an
    // isolate's CPU budget (spent, then runs are refused).
    prints_in_both_modes("cpu", "spinning: cpu-limit\nwaiting: timed-out\nover budget: cpu-limit\nspent: cpu-limit\n");
}

#[test]
fn a_guest_answers_module_hooks_and_moves_buffers_between_isolates() {
    // Version 0.2.0: a data module; `import()` and `import.meta` answered as task steps, the
    // imported module compiled while its import waits (a module of another isolate refused,
    // an answer past the run's timeout too late); unhandled rejections taken as reports, at
    // most 64 kept; an ArrayBuffer moved by a transfer list (detached in the source).
    prints_in_both_modes(
        "modules",
        "data module: 3 blue\n\
         import() before the hooks: Cannot import './lib.js': dynamic import() is not enabled for this isolate\n\
         import() outside a task: TypeError\n\
         step: import ./lib.js\nstep: import config\nstep: import.meta of lib.js\n\
         dynamic import: 42 guest:lib.js\n\
         step: import ./elsewhere.js\n\
         a module of another isolate: Resolved dependency was not `Module`: the module belongs to another isolate\n\
         step: import slow.js\nan answer too late: timeout\nafter it: undefined\n\
         rejecting: done\nunhandled rejections: 1 (dropped 0), Error: lost\ntaken again: 0\n\
         rejecting a thousand: done\nkept 64, dropped 936\n\
         source after the copy: 0\ntarget: 3: 1,2,3\n",
    );
}

/// A directory of its own for a test, empty, mode 0700.
fn scratch(name: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("ivm-component-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

/// The one artifact in the compile cache at `dir`.
fn artifact(dir: &std::path::Path) -> PathBuf {
    let mut found: Vec<_> = std::fs::read_dir(dir.join("components")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found.pop().unwrap()
}

#[test]
fn compiled_guests_are_cached_sealed_and_recompiled_when_anything_is_off() {
    use ivm::component::{CacheUse, CompileCache};
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch("cache");
    let cache = CompileCache::open(&dir).unwrap();
    let hello = guest("hello");
    let starts = |cache: &CompileCache| {
        let program = GuestProgram::load(&hello, Some(cache)).unwrap();
        let run = program.run(&["cache".into()], GuestLimits::default(), Output::Capture).unwrap();
        assert_eq!(String::from_utf8_lossy(&run.stdout), "Hello, cache! 42\n");
        program.cache_use().cloned().unwrap()
    };
    assert_eq!(starts(&cache), CacheUse::Compiled);
    assert_eq!(starts(&cache), CacheUse::Loaded);
    // The key and the artifacts are the user's alone.
    assert_eq!(std::fs::metadata(dir.join("key")).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(dir.join("components")).unwrap().permissions().mode() & 0o777, 0o700);
    let path = artifact(&dir);
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let good = std::fs::read(&path).unwrap();

    let refused = |cache: &CompileCache, bytes: &[u8], why: &str| {
        std::fs::write(&path, bytes).unwrap();
        match starts(cache) {
            CacheUse::Refused(reason) => assert!(reason.contains(why), "{reason}"),
            other => panic!("a bad artifact was used: {other:?}"),
        }
    };
    // One bit of machine code flipped; cut short; empty: refused, recompiled and replaced.
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 1;
    refused(&cache, &flipped, "seal does not match");
    assert_eq!(std::fs::read(&path).unwrap(), good, "replaced by a good artifact");
    refused(&cache, &good[..good.len() - 100], "seal does not match");
    refused(&cache, &[], "seal does not match");
    // Sealed under another key (another user's cache, say).
    let foreign = CompileCache::with_key(&dir, ivm::CacheKey::new(&[7; 32]).unwrap()).unwrap();
    std::fs::write(&path, &good).unwrap();
    match starts(&foreign) {
        CacheUse::Refused(reason) => assert!(reason.contains("seal does not match"), "{reason}"),
        other => panic!("a foreign artifact was used: {other:?}"),
    }
    // Genuine, but for another component: another guest's artifact under this one's name.
    let other_dir = scratch("cache-other");
    let other = CompileCache::with_key(&other_dir, ivm::CacheKey::new(&[7; 32]).unwrap()).unwrap();
    GuestProgram::load(&guest("cpu"), Some(&other)).unwrap();
    refused(&foreign, &std::fs::read(artifact(&other_dir)).unwrap(), "made for other code");
    assert_eq!(starts(&foreign), CacheUse::Loaded);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&other_dir);
}

#[test]
fn concurrent_starts_of_one_guest_share_the_compile_cache_without_corrupting_it() {
    use ivm::component::{CacheUse, CompileCache};
    let dir = scratch("concurrent");
    let hello = guest("hello");
    // Eight starts at once from an empty cache, each with its own handle (as processes have).
    let uses: Vec<CacheUse> = std::thread::scope(|scope| {
        let starts: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    let cache = CompileCache::open(&dir).unwrap();
                    let program = GuestProgram::load(&hello, Some(&cache)).unwrap();
                    let run = program.run(&["twin".into()], GuestLimits::default(), Output::Capture).unwrap();
                    assert_eq!(String::from_utf8_lossy(&run.stdout), "Hello, twin! 42\n");
                    program.cache_use().cloned().unwrap()
                })
            })
            .collect();
        starts.into_iter().map(|start| start.join().unwrap()).collect()
    });
    assert!(uses.iter().all(|u| matches!(u, CacheUse::Compiled | CacheUse::Loaded)), "{uses:?}");
    // One key, one whole artifact, no temporary files left.
    let cache = CompileCache::open(&dir).unwrap();
    artifact(&dir);
    let mut entries: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    entries.sort();
    assert_eq!(entries, ["components", "key"]);
    assert_eq!(GuestProgram::load(&hello, Some(&cache)).unwrap().cache_use(), Some(&CacheUse::Loaded));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_cli_caches_compiled_guests_under_the_users_cache_directory() {
    let home = scratch("cli-cache");
    let hello = guest("hello");
    let start = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_ivm"))
            .env("XDG_CACHE_HOME", &home)
            .arg("--verbose")
            .args(["component", "run"])
            .args(extra)
            .arg(&hello)
            .arg("cli")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!((out.status.code(), String::from_utf8_lossy(&out.stdout).as_ref()), (Some(0), "Hello, cli! 42\n"), "{stderr}");
        stderr
    };
    assert!(start(&["--no-cache"]).contains(": compiled"));
    assert!(!home.join("ivm").exists(), "--no-cache wrote a cache");
    assert!(start(&[]).contains(": compiled"));
    assert!(start(&[]).contains("loaded from the compile cache"));
    assert!(home.join("ivm/key").exists());
    // A cache directory others may write to is refused: they could swap the key. The default
    // one is then left out (the guest still runs); one named with --cache-dir is an error.
    std::fs::set_permissions(home.join("ivm"), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let stderr = start(&[]);
    assert!(stderr.contains("writable by you alone") && stderr.contains("compiling without it"), "{stderr}");
    let shared = home.join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ivm")).args(["component", "run", "--cache-dir"]).arg(&shared).arg(&hello).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("writable by you alone"), "{stderr}");
    let _ = std::fs::remove_dir_all(&home);
}

/// The README's Python guest (`guest-abi/examples/python/app.py`), built with componentize-py
/// by `ci/build-python-guest.sh` unless it was built from the current sources already
/// (`ci/test.sh` builds it, and compiles it into the shared cache, before the suites run).
fn python_guest() -> PathBuf {
    static BUILT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _once = BUILT.lock().unwrap();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let wasm = root.join("target/guests/python.wasm");
    let modified = |path: PathBuf| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let sources = [root.join("guest-abi/examples/python/app.py"), root.join("guest-abi/wit/isolate.wit")].map(modified);
    if sources.iter().any(|source| modified(wasm.clone()) < *source) {
        let result = Command::new("bash").arg(root.join("ci/build-python-guest.sh")).arg(&wasm).output().unwrap();
        assert!(result.status.success(), "building the Python guest failed:\n{}", String::from_utf8_lossy(&result.stderr));
    }
    wasm
}

#[test]
fn the_python_guest_example_runs_and_starts_from_the_compile_cache() {
    use ivm::component::{CacheUse, CompileCache};
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let cache = CompileCache::open(root.join("target/guests/cache")).unwrap();
    let program = GuestProgram::load(&python_guest(), Some(&cache)).unwrap();
    for isolation in [Isolation::InProcess, Isolation::Process] {
        let run = program.run(&["World".into()], GuestLimits::default().isolation(isolation), Output::Capture).unwrap();
        assert_eq!(
            (run.status, String::from_utf8_lossy(&run.stdout).as_ref()),
            (
                0,
                "Hello, World! 42\n\
                 msgpack: {'item': 'TEA', 'total': 7.5, 'big': 18446744073709551616}\n\
                 task: 5! = 120, 25! = 15511210043330985984000000\n\
                 timeout: Error: Script execution timed out.\n\
                 memory-limit: disposed True\n"
            ),
            "{isolation:?}"
        );
    }
    // Whoever compiled it (this test or ci/test.sh), the next start loads it.
    assert_eq!(GuestProgram::load(&python_guest(), Some(&cache)).unwrap().cache_use(), Some(&CacheUse::Loaded));
}
