//! A worker's memory ceiling: what the operating system lets a worker process use, a
//! backstop for memory V8's limits do not see (the host side of a copy, native memory).
//!
//! Two mechanisms, both applied when available:
//! - **A cgroup of its own** (cgroup v1 `memory.limit_in_bytes`, or v2 `memory.max`), made
//!   under the host's own cgroup when the host may write there (it runs as root, or was
//!   delegated its cgroup). It counts memory the worker actually uses, so it can follow the
//!   memory limits of the isolates the worker hosts closely: [`for_isolates`]. A worker over
//!   it is killed by the kernel; the host reports that as the isolates' `MemoryLimit`.
//! - **`RLIMIT_DATA`**, always: it counts writable mappings whether touched or not, and V8
//!   maps about 530 MB per isolate, so it can only be a loose ceiling (see `link.rs`).

use std::ffi::CString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// What a worker needs besides its isolates (measured: ~26 MB resident with one idle isolate).
const BASE: u64 = 64 << 20;
/// What an isolate needs besides its memory limit: its share of V8's young generation, code
/// and compiler memory.
const PER_ISOLATE: u64 = 32 << 20;

/// The cgroup ceiling for isolates whose memory limits add up to `limits_mb`: the limits three
/// times over (the heap, ArrayBuffers, and the serializer's buffer when a result is copied
/// out, which ivm holds to twice the limit), plus fixed needs.
pub fn for_isolates(limits_mb: u64, isolates: u64) -> u64 {
    BASE + 3 * (limits_mb << 20) + PER_ISOLATE * isolates
}

/// A worker's cgroup.
pub struct Cgroup {
    dir: PathBuf,
    version: Version,
    /// The `cgroup.procs` file, for the worker to join between fork and exec.
    procs: CString,
}

#[derive(Clone, Copy)]
enum Version {
    V1,
    V2,
}

impl Cgroup {
    /// A new cgroup for a worker under the host's own, limited to `bytes`; `None` where the
    /// host may not make one (no memory controller, no write access).
    pub fn create(bytes: u64) -> Option<Cgroup> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let (parent, version) = own_memory_cgroup()?;
        if NEXT.load(Ordering::Relaxed) == 0 {
            remove_abandoned(&parent);
        }
        let name = format!("{PREFIX}{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let dir = parent.join(name);
        std::fs::create_dir(&dir).ok()?;
        let procs = CString::new(dir.join("cgroup.procs").into_os_string().into_encoded_bytes()).ok();
        let cgroup = Cgroup { dir, version, procs: procs? };
        // A v2 child has the memory controller only if its parent hands it down.
        if !cgroup.limit_file().exists() || cgroup.set_limit(bytes).is_err() {
            return None;
        }
        Some(cgroup)
    }

    fn limit_file(&self) -> PathBuf {
        self.dir.join(match self.version {
            Version::V1 => "memory.limit_in_bytes",
            Version::V2 => "memory.max",
        })
    }

    /// Sets the ceiling.
    pub fn set_limit(&self, bytes: u64) -> std::io::Result<()> {
        std::fs::OpenOptions::new().write(true).open(self.limit_file())?.write_all(bytes.to_string().as_bytes())
    }

    /// What moves the calling process into the cgroup, for between fork and exec.
    pub fn joiner(&self) -> Joiner {
        Joiner(self.procs.clone())
    }

    /// Whether the kernel killed a process of the cgroup for going over the ceiling.
    pub fn oom_killed(&self) -> bool {
        let file = match self.version {
            Version::V1 => "memory.oom_control",
            Version::V2 => "memory.events",
        };
        let text = std::fs::read_to_string(self.dir.join(file)).unwrap_or_default();
        text.lines().any(|line| line.strip_prefix("oom_kill ").and_then(|n| n.trim().parse::<u64>().ok()).is_some_and(|n| n > 0))
    }
}

impl Cgroup {
    /// Removes the cgroup once its worker has been reaped (it must be empty).
    pub fn remove(&self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// The start of the name of a worker's cgroup, before `<host pid>-<n>`.
const PREFIX: &str = "ivm-worker-";

/// Removes the cgroups of workers whose host has gone: a host that ends without reaping its
/// workers (a command-line run, say) leaves them behind, empty once the workers exit.
fn remove_abandoned(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(host) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)).and_then(|rest| rest.split('-').next()) else { continue };
        let Ok(host) = host.parse::<libc::pid_t>() else { continue };
        // SAFETY: signal 0 only checks whether the process exists.
        let alive = unsafe { libc::kill(host, 0) } == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !alive {
            // Fails, harmlessly, while a worker is still inside.
            let _ = std::fs::remove_dir(entry.path());
        }
    }
}

/// Moves the calling process into a cgroup: its `cgroup.procs` path.
pub struct Joiner(CString);

impl Joiner {
    /// Async-signal-safe (between fork and exec): raw system calls on a path prepared
    /// beforehand. A failure leaves the process where it is.
    pub fn join(&self) {
        let mut digits = [0u8; 20];
        // SAFETY: plain system calls on a NUL-terminated path and a stack buffer.
        unsafe {
            let mut pid = libc::getpid() as u64;
            let mut at = digits.len();
            loop {
                at -= 1;
                digits[at] = b'0' + (pid % 10) as u8;
                pid /= 10;
                if pid == 0 {
                    break;
                }
            }
            let fd = libc::open(self.0.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd >= 0 {
                libc::write(fd, digits[at..].as_ptr().cast(), digits.len() - at);
                libc::close(fd);
            }
        }
    }
}

/// The host's own memory cgroup directory, and its version.
fn own_memory_cgroup() -> Option<(PathBuf, Version)> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    // v1: "4:memory:/path"; v2: "0::/path".
    let v1 = cgroups.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers.split(',').any(|c| c == "memory").then(|| path.to_owned())
    });
    if let Some(path) = v1 {
        return Some((mounted(&mounts, "cgroup", Some("memory"), &path)?, Version::V1));
    }
    let path = cgroups.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some((mounted(&mounts, "cgroup2", None, path)?, Version::V2))
}

/// Where the cgroup `path` of a hierarchy of file system type `fs` (with the super option
/// `option`, for v1 controllers) is in this process's view of the file system.
fn mounted(mountinfo: &str, fs: &str, option: Option<&str>, path: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        // "id parent major:minor root mountpoint options... - fstype source superoptions"
        let (before, after) = line.split_once(" - ")?;
        let mut after = after.split_whitespace();
        let (fstype, _, super_options) = (after.next()?, after.next()?, after.next().unwrap_or(""));
        if fstype != fs || option.is_some_and(|o| !super_options.split(',').any(|s| s == o)) {
            return None;
        }
        let mut before = before.split_whitespace();
        let (root, mountpoint) = (before.nth(3)?, before.next()?);
        let inside = Path::new(path).strip_prefix(root).ok()?;
        Some(Path::new(mountpoint).join(inside))
    })
}
