//! Isolates for WebAssembly guests: real guest components (C, built here from
//! `tests/guests/*.c` with `ci/build-guest.sh`) using the `ivm:isolate` WIT interface through
//! wasmtime. The guests in `tests/guests/0.1.0/` are built for version 0.1.0 of the interface,
//! which the host still offers; the others for the newest.

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
    let program = GuestProgram::load(&guest("0.1.0/tour")).unwrap();
    let run = program.run(&["wasm".into()], GuestLimits::default().max_isolates(2), Output::Capture).unwrap();
    assert_eq!(run.status, 0);
    assert_eq!(String::from_utf8_lossy(&run.stdout), TOUR);
    assert!(run.isolates.iter().all(|i| i.is_disposed()), "nothing outlives the guest's store");
}

#[test]
fn several_guests_run_at_once() {
    let program = std::sync::Arc::new(GuestProgram::load(&guest("0.1.0/tour")).unwrap());
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
    let program = GuestProgram::load(&guest("0.1.0/tour")).unwrap();
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
    let program = GuestProgram::load(&guest("0.1.0/leak")).unwrap();
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
    let program = GuestProgram::load(&guest("0.1.0/hostile")).unwrap();
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
    let program = GuestProgram::load(&guest("debug")).unwrap();
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
    let program = GuestProgram::load(&guest(name)).unwrap();
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
