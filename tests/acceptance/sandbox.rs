//! Worker processes confine themselves before they run anything: a seccomp-bpf allow-list, no
//! file system, no network, no new processes or programs, no capabilities. What the kernel
//! refuses is reported (or, if required, stops the worker); a call that can only mean a
//! takeover kills the worker, which the host reports as a crash.
//!
//! Namespaces behave differently for root and for other users, so the tests that look at a
//! confined worker run twice: as they are (CI runs as root), and again as `nobody` through
//! `setpriv`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use ivm::process::SandboxProbe;
use ivm::{Error, Isolate, IsolateOptions, Isolation, PoolOptions, SandboxPolicy, SandboxStep, WorkerPool};

use crate::process::{WORKER, eventually, watched};

/// The worker program: `IVM_TEST_WORKER` in a child run as another user, else the one built.
fn worker() -> PathBuf {
    std::env::var_os("IVM_TEST_WORKER").map_or_else(|| PathBuf::from(WORKER), PathBuf::from)
}

fn sandboxed(policy: SandboxPolicy) -> WorkerPool {
    WorkerPool::new(PoolOptions::default().worker_program(worker()).idle_workers(0).sandbox(policy))
}

/// A line of `/proc/PID/status`, e.g. `Seccomp`.
fn status(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|line| line.starts_with(&format!("{field}:"))).unwrap_or_else(|| panic!("no {field} in {status}"));
    line.split_once(':').unwrap().1.trim().to_owned()
}

fn namespace(pid: &str, kind: &str) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).unwrap()
}

#[test]
fn a_worker_is_confined_and_says_how() {
    let isolate = Isolate::new(IsolateOptions::default().pool(&sandboxed(SandboxPolicy::Required))).unwrap();
    let report = isolate.sandbox().expect("a process-isolated isolate has a report");
    assert!(report.is_complete(), "{report}");
    assert_eq!(report.applied, SandboxStep::ALL.to_vec());
    let in_process = Isolate::new(IsolateOptions::default().isolation(Isolation::InProcess)).unwrap();
    assert!(in_process.sandbox().is_none());

    // Seen from outside.
    let pid = isolate.worker_pid().unwrap();
    assert_eq!(status(pid, "Seccomp"), "2", "filter mode");
    assert_eq!(status(pid, "NoNewPrivs"), "1");
    assert_eq!(status(pid, "CapEff"), "0000000000000000");
    for kind in ["net", "mnt", "user"] {
        assert_ne!(namespace(&pid.to_string(), kind), namespace("self", kind), "its own {kind} namespace");
    }
    let root: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/root")).unwrap().collect();
    assert!(root.is_empty(), "its root is empty: {root:?}");

    // Seen from inside: harmless attempts fail with EPERM, and the worker goes on.
    assert_eq!(isolate.sandbox_probe(SandboxProbe::OpenFile).unwrap(), libc::EPERM as u64, "open");
    assert_eq!(isolate.sandbox_probe(SandboxProbe::Socket).unwrap(), libc::EPERM as u64, "socket");
    let context = isolate.create_context().unwrap();
    let seeded = "[Math.random(), Math.random()].every(n => n > 0 && n < 1) && new Date(0).getTime() === 0";
    assert!(context.eval::<bool>(seeded).unwrap());
}

#[test]
fn a_takeover_call_kills_the_worker_and_is_reported() {
    for probe in [SandboxProbe::Fork, SandboxProbe::Exec] {
        let pool = sandboxed(SandboxPolicy::BestEffort);
        let (options, heard) = watched(&pool);
        let isolate = Isolate::new(options).unwrap();
        let err = isolate.sandbox_probe(probe).unwrap_err();
        match &err {
            Error::WorkerCrashed { reason } => {
                assert!(reason.contains("killed by its sandbox") && reason.contains("SIGSYS"), "{probe:?}: {reason}")
            }
            other => panic!("{probe:?}: expected WorkerCrashed, got {other:?}"),
        }
        eventually("the catastrophic-error handler", || !heard.lock().unwrap().is_empty());
        assert!(heard.lock().unwrap()[0].contains("SIGSYS"));
        assert!(isolate.create_context().is_err(), "{probe:?}: the isolate went with its worker");
        let next = Isolate::new(IsolateOptions::default().pool(&pool)).unwrap();
        assert_eq!(next.create_context().unwrap().eval::<u32>("6 * 7").unwrap(), 42);
    }
}

#[test]
fn a_step_the_kernel_refuses_is_reported_or_stops_the_worker() {
    if crate::in_own_process("sandbox::a_step_the_kernel_refuses_is_reported_or_stops_the_worker") {
        return;
    }
    // This process (and the workers it starts, which inherit the filter) is refused new
    // namespaces, as a kernel without unprivileged user namespaces would refuse them.
    refuse_namespaces();
    let isolate = Isolate::new(IsolateOptions::default().pool(&sandboxed(SandboxPolicy::BestEffort))).unwrap();
    let report = isolate.sandbox().unwrap();
    let missing: Vec<SandboxStep> = report.missing.iter().map(|(step, _)| *step).collect();
    assert_eq!(missing, [SandboxStep::UserNamespace, SandboxStep::NetworkNamespace, SandboxStep::EmptyRoot], "{report}");
    assert!(report.missing[0].1.contains("Operation not permitted"), "{report}");
    assert!(report.applied(SandboxStep::SyscallFilter) && report.applied(SandboxStep::CapabilitiesDropped), "{report}");
    // It still starts, with the rest in place.
    assert_eq!(isolate.create_context().unwrap().eval::<u32>("1 + 1").unwrap(), 2);
    assert_eq!(isolate.sandbox_probe(SandboxProbe::OpenFile).unwrap(), libc::EPERM as u64);
    // Required: the worker stops before it runs anything, and says why.
    let err = Isolate::new(IsolateOptions::default().pool(&sandboxed(SandboxPolicy::Required))).unwrap_err();
    match &err {
        Error::WorkerCrashed { reason } => assert!(reason.contains("the sandbox is required") && reason.contains("user-namespace"), "{reason}"),
        other => panic!("expected WorkerCrashed, got {other:?}"),
    }
}

/// Makes `unshare` fail with `EPERM` in this process and what it starts.
fn refuse_namespaces() {
    use seccompiler::{SeccompAction, SeccompFilter};
    let rules = [(libc::SYS_unshare, vec![])].into_iter().collect();
    let arch = std::env::consts::ARCH.try_into().unwrap();
    let filter = SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(libc::EPERM as u32), arch).unwrap();
    let program: seccompiler::BpfProgram = filter.try_into().unwrap();
    seccompiler::apply_filter_all_threads(&program).unwrap();
}

#[test]
fn the_sandbox_holds_for_a_host_that_is_not_root() {
    // SAFETY: plain syscall.
    if unsafe { libc::geteuid() } != 0 || std::env::var_os("IVM_TEST_CHILD").is_some() {
        return; // Run as another user by root's run of this test.
    }
    let (test, worker, copied) = reachable_by_anyone();
    for name in ["sandbox::a_worker_is_confined_and_says_how", "sandbox::a_takeover_call_kills_the_worker_and_is_reported"] {
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(&test)
            .args([name, "--exact", "--test-threads=1"])
            .env("IVM_TEST_CHILD", "1")
            .env("IVM_TEST_WORKER", &worker)
            .output()
            .expect("setpriv (util-linux)");
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && said.contains("1 passed"), "{name} as nobody:\n{said}");
    }
    if let Some(dir) = copied {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

/// This test binary and the worker program, where user `nobody` can run them: where they
/// are if every directory above them lets others through, else copies in a fresh directory
/// (returned too, to be removed).
fn reachable_by_anyone() -> (PathBuf, PathBuf, Option<PathBuf>) {
    let test = std::env::current_exe().unwrap();
    let worker = PathBuf::from(WORKER);
    let open = |path: &Path| path.ancestors().skip(1).all(|dir| dir.metadata().is_ok_and(|m| m.permissions().mode() & 0o001 != 0));
    if open(&test) && open(&worker) {
        return (test, worker, None);
    }
    let dir = std::env::temp_dir().join(format!("ivm-sandbox-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = |from: &Path, name: &str| {
        let to = dir.join(name);
        std::fs::copy(from, &to).unwrap();
        to
    };
    (copy(&test, "acceptance"), copy(&worker, "ivm"), Some(dir))
}
