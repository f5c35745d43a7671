//! The worker's confinement, applied to itself before it starts a thread or reads a request
//! (see the policy in `process/mod.rs`'s docs). Each step is one [`SandboxStep`]; a step the
//! kernel refuses is reported, and stops the worker if the host asked for
//! [`SandboxPolicy::Required`].
//!
//! The order matters: `unshare(CLONE_NEWUSER)` needs a single-threaded process, so the
//! namespaces and the empty root come before V8 starts its threads; Landlock after the mounts
//! (a Landlock domain may not change them) and, like the rest, while there is one thread, for
//! it applies to the calling thread and those it starts; capabilities are dropped after the
//! namespaces that needed them; the system-call filter comes last (it forbids what the steps
//! before it use) and is synchronised to every thread there is.

use std::collections::BTreeMap;
use std::ffi::CStr;

use ivm_client::sandbox::{SandboxPolicy, SandboxReport, SandboxStep};
use seccompiler::{SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Cmp, SeccompCondition, SeccompFilter, SeccompRule};

/// Confines this process (the worker) as far as the kernel lets it. With
/// [`SandboxPolicy::Required`], a step that could not be applied is an error naming it.
pub(super) fn confine(policy: SandboxPolicy) -> Result<SandboxReport, String> {
    let mut report = SandboxReport::default();
    let mut step = |step: SandboxStep, outcome: Result<(), String>| match outcome {
        Ok(()) => report.applied.push(step),
        Err(why) => report.missing.push((step, why)),
    };
    // The namespaces, Landlock and capabilities are the calling thread's (and those it starts
    // later): in a worker program that started threads before `serve_worker`, those would keep
    // them. (The host set `no_new_privs` before the program started; the filter is put on
    // every thread.) Where threads cannot be counted (no /proc), the worker is taken to be
    // alone, as `ivm`'s always is.
    let crowded = match threads() {
        Some(n) if n > 1 => Some(format!("the worker program had {n} threads before it confined itself (serve_worker must come first)")),
        _ => None,
    };
    let per_thread = |apply: fn() -> Result<(), String>| crowded.clone().map_or_else(apply, Err);
    // SAFETY: plain syscall.
    step(SandboxStep::NoNewPrivileges, check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) }, "prctl(PR_SET_NO_NEW_PRIVS)"));
    step(SandboxStep::InheritedDescriptorsClosed, close_inherited_descriptors());
    if crowded.is_none() {
        keep_time_zone();
    }
    step(SandboxStep::UserNamespace, per_thread(|| unshare(libc::CLONE_NEWUSER, "unshare(CLONE_NEWUSER)")));
    step(SandboxStep::NetworkNamespace, per_thread(|| unshare(libc::CLONE_NEWNET, "unshare(CLONE_NEWNET)")));
    step(SandboxStep::EmptyRoot, per_thread(empty_root));
    step(SandboxStep::Landlock, per_thread(landlock));
    step(SandboxStep::CapabilitiesDropped, per_thread(drop_capabilities));
    step(SandboxStep::SyscallFilter, install_filter());
    if policy == SandboxPolicy::Required && !report.is_complete() {
        return Err(format!("the sandbox is required, but the kernel refused part of it ({report})"));
    }
    Ok(report)
}

/// The threads of this process, from `/proc/self/status`.
fn threads() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|line| line.strip_prefix("Threads:"))?.trim().parse().ok()
}

/// `Ok` for a call that returned 0, else the error it set, as `what: error`.
fn check(result: libc::c_int, what: &str) -> Result<(), String> {
    match result {
        0 => Ok(()),
        _ => Err(format!("{what}: {}", std::io::Error::last_os_error())),
    }
}

fn unshare(namespace: libc::c_int, what: &str) -> Result<(), String> {
    // SAFETY: plain syscall.
    check(unsafe { libc::unshare(namespace) }, what)
}

/// Closes every descriptor but standard input, output and error: a host's descriptor that
/// was not close-on-exec (a socket, a file) must not reach JavaScript's process.
fn close_inherited_descriptors() -> Result<(), String> {
    // SAFETY: plain syscall; nothing in this process uses descriptors above 2 yet.
    check(unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) } as libc::c_int, "close_range")
}

/// ICU finds the local time zone through files when a script first asks (`TZ` naming a zone
/// file, else `/etc/localtime`), which the empty root hides: the zone's name goes into `TZ`
/// now (ICU has the zone data itself). The name comes from the path of the zone file (a `TZ`
/// such as `:/etc/localtime`, or the link `/etc/localtime` is), else from `/etc/timezone`. A
/// `TZ` that names a zone stays as it is.
fn keep_time_zone() {
    let file = match std::env::var("TZ") {
        Ok(tz) if !tz.trim_start_matches(':').starts_with('/') => return,
        Ok(tz) => tz.trim_start_matches(':').to_owned(),
        Err(_) => "/etc/localtime".to_owned(),
    };
    let named = std::fs::canonicalize(&file).ok().and_then(|path| Some(path.to_str()?.split_once("zoneinfo/")?.1.to_owned()));
    let zone = named.or_else(|| Some(std::fs::read_to_string("/etc/timezone").ok()?.trim().to_owned()));
    if let Some(zone) = zone.filter(|zone| !zone.is_empty()) {
        // SAFETY: the worker has one thread here (see `confine`), so nothing reads the
        // environment meanwhile.
        unsafe { std::env::set_var("TZ", zone) };
    }
}

/// A mount namespace whose root is an empty, read-only tmpfs: no path leads to a file. The
/// tmpfs is mounted over a directory every system has (`/tmp`, else `/dev`, ...), then made
/// the root with `pivot_root`, and the old root is detached; where `pivot_root` refuses
/// nonetheless (a root file system that cannot be moved, as an initramfs), the tmpfs becomes
/// the root through `chroot`. In a chroot, where `/` is no mount point, the step is left out.
fn empty_root() -> Result<(), String> {
    fn c(path: &CStr) -> *const libc::c_char {
        path.as_ptr()
    }
    let Some(under) = [c"/tmp", c"/dev", c"/proc", c"/mnt", c"/run"]
        .into_iter()
        .find(|dir| std::fs::metadata(dir.to_str().unwrap_or("/")).is_ok_and(|m| m.is_dir()))
    else {
        return Err("no directory to mount the empty root on (/tmp, /dev, /proc, /mnt, /run)".into());
    };
    unshare(libc::CLONE_NEWNS, "unshare(CLONE_NEWNS)")?;
    let null = std::ptr::null::<libc::c_char>();
    // SAFETY: plain syscalls on constant strings.
    unsafe {
        // Nothing done here propagates to the host's mounts.
        // (In a chroot, `/` is no mount point and this fails: the step is then left out, as
        // a tmpfs mounted there could reach the host's mounts.)
        check(libc::mount(null, c(c"/"), null, libc::MS_REC | libc::MS_PRIVATE, std::ptr::null()), "mount(/, MS_PRIVATE), / is no mount point in a chroot")?;
        let flags = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        let options = c"size=4k,nr_inodes=1,mode=0555";
        check(libc::mount(c(c"ivm-empty"), c(under), c(c"tmpfs"), flags, options.as_ptr().cast()), "mount(tmpfs)")?;
        check(libc::chdir(c(under)), "chdir(empty tmpfs)")?;
        if libc::syscall(libc::SYS_pivot_root, c(c"."), c(c".")) == 0 {
            check(libc::umount2(c(c"."), libc::MNT_DETACH), "umount2(old root)")?;
        } else {
            check(libc::chroot(c(c".")), "chroot(empty tmpfs)")?;
        }
        check(libc::chdir(c(c"/")), "chdir(/)")
    }
}

/// A Landlock domain that handles every access right the kernel's Landlock knows (files, TCP
/// bind and connect, signals and abstract Unix sockets outside the domain) and grants none.
/// Threads started later inherit it.
fn landlock() -> Result<(), String> {
    #[repr(C)]
    struct RulesetAttr {
        handled_access_fs: u64,
        handled_access_net: u64,
        scoped: u64,
    }
    const CREATE_RULESET_VERSION: u32 = 1;
    let null = std::ptr::null::<RulesetAttr>();
    // SAFETY: with the version flag the kernel reads no attributes.
    let abi = unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, null, 0usize, CREATE_RULESET_VERSION) };
    if abi < 0 {
        return Err(format!("landlock_create_ruleset: {}", std::io::Error::last_os_error()));
    }
    // Rights by the ABI version that brought them: 13 for files (1), refer (2), truncate
    // (3), TCP (4), device ioctl (5), scopes (6).
    let mut attr = RulesetAttr { handled_access_fs: (1 << 13) - 1, handled_access_net: 0, scoped: 0 };
    let mut size = 8;
    for (version, fs) in [(2, 1 << 13), (3, 1 << 14), (5, 1 << 15)] {
        if abi >= version {
            attr.handled_access_fs |= fs;
        }
    }
    if abi >= 4 {
        attr.handled_access_net = 0b11;
        size = 16;
    }
    if abi >= 6 {
        attr.scoped = 0b11;
        size = 24;
    }
    // SAFETY: the kernel reads `size` bytes of `attr`, as many as this ABI version knows.
    let ruleset = unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, &attr, size as usize, 0u32) };
    if ruleset < 0 {
        return Err(format!("landlock_create_ruleset: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: `ruleset` is the descriptor just made, closed once.
    unsafe {
        let restricted = check(libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0u32) as libc::c_int, "landlock_restrict_self");
        libc::close(ruleset as libc::c_int);
        restricted
    }
}

/// Drops every capability of this thread (those a user namespace gave it included); threads
/// started later inherit none.
fn drop_capabilities() -> Result<(), String> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let mut header = Header { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let data = [Data::default(); 2];
    // SAFETY: the kernel reads a version 3 header and two data structs.
    check(unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) } as libc::c_int, "capset")
}

/// Installs the system-call filters on every thread (see [`filters`]).
fn install_filter() -> Result<(), String> {
    let filters = filters().map_err(|e| format!("cannot build the seccomp filter: {e}"))?;
    for filter in filters {
        let program: seccompiler::BpfProgram = filter.try_into().map_err(|e| format!("cannot compile the seccomp filter: {e}"))?;
        seccompiler::apply_filter_all_threads(&program).map_err(|e| format!("seccomp: {e}"))?;
    }
    Ok(())
}

/// The worker's system-call policy, as three filters, installed in this order (the kernel
/// applies the strictest answer of all; between equals, the last installed's):
/// 1. the allow-list: what V8, its threads and the worker's loop use (measured with strace
///    over the acceptance suite in process mode), some with their arguments narrowed;
///    anything else fails with `EPERM` (opening files, sockets, `ioctl`...). It lets the
///    next two be installed (`seccomp`, `prctl(PR_SET_NO_NEW_PRIVS)`).
/// 2. the takeover list: calls no worker makes, that only code taken over would (new
///    processes or programs, another process's memory), kill the worker with `SIGSYS`.
/// 3. unavailable: `clone3` fails with `ENOSYS`, as on a kernel without it (its flags are
///    behind a pointer the filter cannot read; glibc then makes threads with `clone`, whose
///    flags the filters check), and so does `seccomp`, now that the filters are in place.
fn filters() -> Built<[SeccompFilter; 3]> {
    let arch = std::env::consts::ARCH.try_into()?;
    let allowed = SeccompFilter::new(allow_list()?, SeccompAction::Errno(libc::EPERM as u32), SeccompAction::Allow, arch)?;
    let takeover = SeccompFilter::new(takeover_list()?, SeccompAction::Allow, SeccompAction::KillProcess, arch)?;
    let unavailable = [(libc::SYS_clone3, vec![]), (libc::SYS_seccomp, vec![])].into_iter().collect();
    let unavailable = SeccompFilter::new(unavailable, SeccompAction::Allow, SeccompAction::Errno(libc::ENOSYS as u32), arch)?;
    Ok([allowed, takeover, unavailable])
}

type Rules = BTreeMap<i64, Vec<SeccompRule>>;
/// What building a filter gives.
type Built<T> = Result<T, seccompiler::BackendError>;

/// A rule that argument `arg` equals `value`.
fn equals(arg: u8, value: u64) -> Built<SeccompRule> {
    SeccompRule::new(vec![SeccompCondition::new(arg, Len::Qword, Cmp::Eq, value)?])
}

/// One rule per value argument `arg` may have.
fn one_of(arg: u8, values: &[libc::c_int]) -> Built<Vec<SeccompRule>> {
    values.iter().map(|&value| equals(arg, value as u64)).collect()
}

/// A condition that argument `arg` sets no bit outside `allowed`.
fn only_bits(arg: u8, allowed: u64) -> Built<SeccompCondition> {
    SeccompCondition::new(arg, Len::Qword, Cmp::MaskedEq(!allowed), 0)
}

fn allow_list() -> Built<Rules> {
    let mut rules = Rules::new();
    let anyhow = [
        // Pipes and the descriptors the worker has; memory; threads; time; signals.
        libc::SYS_read,
        libc::SYS_write,
        libc::SYS_readv,
        libc::SYS_writev,
        libc::SYS_close,
        libc::SYS_dup3,
        libc::SYS_ppoll,
        libc::SYS_brk,
        libc::SYS_munmap,
        libc::SYS_mremap,
        libc::SYS_futex,
        libc::SYS_set_robust_list,
        libc::SYS_rseq,
        libc::SYS_set_tid_address,
        libc::SYS_sched_yield,
        libc::SYS_sched_getaffinity,
        libc::SYS_sched_getparam,
        libc::SYS_sched_getscheduler,
        libc::SYS_nanosleep,
        libc::SYS_clock_nanosleep,
        libc::SYS_clock_gettime,
        libc::SYS_clock_getres,
        libc::SYS_gettimeofday,
        libc::SYS_getpid,
        libc::SYS_gettid,
        libc::SYS_getrandom,
        libc::SYS_uname,
        libc::SYS_sysinfo,
        libc::SYS_getrusage,
        libc::SYS_membarrier,
        libc::SYS_rt_sigaction,
        libc::SYS_rt_sigprocmask,
        libc::SYS_rt_sigreturn,
        libc::SYS_sigaltstack,
        libc::SYS_restart_syscall,
        libc::SYS_exit,
        libc::SYS_exit_group,
        // V8's memory protection keys for its code space.
        libc::SYS_pkey_alloc,
        libc::SYS_pkey_free,
    ];
    for call in anyhow {
        rules.insert(call, vec![]);
    }
    #[cfg(target_arch = "x86_64")]
    for call in [libc::SYS_poll, libc::SYS_dup2, libc::SYS_time] {
        rules.insert(call, vec![]);
    }
    let protection = (libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC) as u64;
    // Private memory only: no shared mappings, no files (the worker can open none anyway).
    let mapping = (libc::MAP_PRIVATE
        | libc::MAP_ANONYMOUS
        | libc::MAP_FIXED
        | libc::MAP_FIXED_NOREPLACE
        | libc::MAP_NORESERVE
        | libc::MAP_STACK
        | libc::MAP_POPULATE) as u64;
    rules.insert(libc::SYS_mmap, vec![SeccompRule::new(vec![only_bits(2, protection)?, only_bits(3, mapping)?])?]);
    rules.insert(libc::SYS_mprotect, vec![SeccompRule::new(vec![only_bits(2, protection)?])?]);
    rules.insert(libc::SYS_pkey_mprotect, vec![SeccompRule::new(vec![only_bits(2, protection)?])?]);
    rules.insert(
        libc::SYS_madvise,
        one_of(2, &[
            libc::MADV_NORMAL,
            libc::MADV_RANDOM,
            libc::MADV_SEQUENTIAL,
            libc::MADV_WILLNEED,
            libc::MADV_DONTNEED,
            libc::MADV_FREE,
            libc::MADV_DONTFORK,
            libc::MADV_DODUMP,
            libc::MADV_DONTDUMP,
            libc::MADV_HUGEPAGE,
            libc::MADV_NOHUGEPAGE,
        ])?,
    );
    // New threads only (process creation is on the takeover list).
    let thread = libc::CLONE_THREAD as u64;
    rules.insert(libc::SYS_clone, vec![SeccompRule::new(vec![SeccompCondition::new(0, Len::Qword, Cmp::MaskedEq(thread), thread)?])?]);
    // Thread names and V8's names of its mappings.
    rules.insert(libc::SYS_prctl, one_of(0, &[libc::PR_SET_NAME, libc::PR_GET_NAME, libc::PR_SET_VMA, libc::PR_SET_NO_NEW_PRIVS])?);
    rules.insert(libc::SYS_seccomp, vec![]);
    // Descriptor flags of its own pipes (not F_SETOWN: that would signal another process).
    rules.insert(libc::SYS_fcntl, one_of(1, &[libc::F_GETFL, libc::F_SETFL, libc::F_GETFD, libc::F_SETFD, libc::F_DUPFD_CLOEXEC])?);
    // Its own limits, read only.
    rules.insert(libc::SYS_prlimit64, vec![SeccompRule::new(vec![
        SeccompCondition::new(0, Len::Qword, Cmp::Eq, 0)?,
        SeccompCondition::new(2, Len::Qword, Cmp::Eq, 0)?,
    ])?]);
    // The calling thread's priority (the isolate made ahead runs at nice 19).
    rules.insert(libc::SYS_setpriority, vec![SeccompRule::new(vec![
        SeccompCondition::new(0, Len::Dword, Cmp::Eq, libc::PRIO_PROCESS as u64)?,
        SeccompCondition::new(1, Len::Dword, Cmp::Eq, 0)?,
    ])?]);
    // Signals to its own threads (V8's profiler samples with SIGPROF; abort), and no process
    // but itself.
    let pid = u64::from(std::process::id());
    rules.insert(libc::SYS_tgkill, vec![equals(0, pid)?]);
    rules.insert(libc::SYS_kill, vec![equals(0, pid)?]);
    Ok(rules)
}

fn takeover_list() -> Built<Rules> {
    let mut rules = Rules::new();
    for call in [libc::SYS_execve, libc::SYS_execveat, libc::SYS_ptrace, libc::SYS_process_vm_readv, libc::SYS_process_vm_writev] {
        rules.insert(call, vec![]);
    }
    #[cfg(target_arch = "x86_64")]
    for call in [libc::SYS_fork, libc::SYS_vfork] {
        rules.insert(call, vec![]);
    }
    // A clone that is not a thread is a new process.
    let thread = libc::CLONE_THREAD as u64;
    rules.insert(libc::SYS_clone, vec![SeccompRule::new(vec![SeccompCondition::new(0, Len::Qword, Cmp::MaskedEq(thread), 0)?])?]);
    Ok(rules)
}

/// What a debug build's test asks a worker to try (`Op::SandboxProbe`): the `errno` it
/// failed with (0: it succeeded). Calls on the takeover list do not return.
#[cfg(debug_assertions)]
pub(super) fn probe(probe: ivm_client::protocol::SandboxProbe) -> u64 {
    use ivm_client::protocol::SandboxProbe;
    // SAFETY: plain syscalls; their results are only inspected; a fork's child exits at once.
    let result = unsafe {
        match probe {
            SandboxProbe::OpenFile => libc::open(c"/etc/passwd".as_ptr(), libc::O_RDONLY),
            SandboxProbe::Socket => libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0),
            SandboxProbe::Fork => match libc::fork() {
                0 => libc::_exit(0),
                pid => pid,
            },
            SandboxProbe::Exec => {
                let argv = [c"/bin/true".as_ptr(), std::ptr::null()];
                libc::execv(argv[0], argv.as_ptr())
            }
        }
    };
    if result >= 0 { 0 } else { std::io::Error::last_os_error().raw_os_error().unwrap_or(-1) as u64 }
}
