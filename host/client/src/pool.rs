//! [`WorkerPool`]: worker processes, started lazily, shared by isolates as configured, and
//! reused.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use crate::error::{Error, Result};
use crate::link::Link;
use crate::protocol::{Id, Op};
use crate::sandbox::SandboxPolicy;
use crate::sync::Mutex;

/// Options for a [`WorkerPool`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PoolOptions {
    /// How many isolates one worker hosts at most. 1 (the default): each isolate has a worker
    /// of its own, so nothing one does can touch another. More: fewer processes, but isolates
    /// in one worker share its fate.
    pub isolates_per_worker: usize,
    /// Workers without isolates kept warm for the next ones (default 1); others exit.
    pub idle_workers: usize,
    /// The worker program (default: `IVM_WORKER`, else this executable if it is `ivm`, else
    /// an `ivm` beside it). It is run with [`WORKER_ARG`](super::WORKER_ARG).
    pub worker_program: Option<PathBuf>,
    /// The writable memory a worker may map, in MB (`RLIMIT_DATA`, which counts mappings
    /// whether touched or not: V8 maps about 530 MB per isolate). Past it, the worker's
    /// allocations fail and V8 aborts it. Default: 3 GB, plus 1 GB and twice the memory
    /// limit per isolate, raised as isolates arrive: a backstop for what V8's limits do not
    /// see, such as native memory.
    pub memory_ceiling: Option<u64>,
    /// Whether a worker may start when the kernel refuses part of its sandbox (default: as
    /// `IVM_SANDBOX` says, `required` or else best effort). What confined a worker is in
    /// its [`SandboxReport`](crate::SandboxReport) either way.
    pub sandbox: SandboxPolicy,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            isolates_per_worker: 1,
            idle_workers: 1,
            worker_program: None,
            memory_ceiling: None,
            sandbox: SandboxPolicy::from_env(),
        }
    }
}

impl PoolOptions {
    /// Sets how many isolates share a worker.
    pub fn isolates_per_worker(mut self, n: usize) -> Self {
        self.isolates_per_worker = n.max(1);
        self
    }
    /// Sets how many idle workers are kept.
    pub fn idle_workers(mut self, n: usize) -> Self {
        self.idle_workers = n;
        self
    }
    /// Sets the worker program.
    pub fn worker_program(mut self, path: impl Into<PathBuf>) -> Self {
        self.worker_program = Some(path.into());
        self
    }
    /// Sets whether every sandbox step is required (see [`PoolOptions::sandbox`]).
    pub fn sandbox(mut self, policy: SandboxPolicy) -> Self {
        self.sandbox = policy;
        self
    }
    /// Sets a fixed memory ceiling per worker, in MB.
    pub fn memory_ceiling(mut self, mb: u64) -> Self {
        self.memory_ceiling = Some(mb);
        self
    }
}

/// Worker processes for process-isolated isolates (`ivm::Isolation::Process`).
///
/// Workers start when an isolate needs one and are reused: an isolate goes to a worker of its
/// tenant (`ivm::IsolateOptions::tenant`) that hosts fewer than
/// [`isolates_per_worker`](PoolOptions::isolates_per_worker) isolates, else to a new worker.
/// `WorkerPool` is a cheap handle; workers end when their pool and isolates are gone, and
/// always with the host process.
#[derive(Clone)]
pub struct WorkerPool {
    inner: Arc<Pool>,
}

impl std::fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerPool").field("options", &self.inner.options).field("workers", &self.workers()).finish()
    }
}

struct Pool {
    options: PoolOptions,
    workers: Mutex<Vec<Arc<Link>>>,
}

/// An isolate's place in a worker; given back on drop.
pub struct Lease {
    pool: Arc<Pool>,
    link: Arc<Link>,
    memory_limit: u64,
    /// The worker was started for this lease.
    fresh: bool,
}

impl Lease {
    /// The worker.
    pub fn link(&self) -> &Arc<Link> {
        &self.link
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.link.unreserve(self.memory_limit);
        let mut workers = self.pool.workers.lock();
        if self.link.hosted.fetch_sub(1, Ordering::SeqCst) != 1 {
            return;
        }
        let idle = workers.iter().filter(|w| w.hosted.load(Ordering::SeqCst) == 0 && w.crash().is_none()).count();
        if idle > self.pool.options.idle_workers || self.link.crash().is_some() {
            workers.retain(|w| !Arc::ptr_eq(w, &self.link));
            self.link.retire();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Every isolate's lease holds the pool: no worker hosts one now.
        for link in self.workers.get_mut().drain(..) {
            link.retire();
        }
    }
}

impl WorkerPool {
    /// A pool with these options.
    pub fn new(options: PoolOptions) -> WorkerPool {
        WorkerPool { inner: Arc::new(Pool { options, workers: Mutex::default() }) }
    }

    /// The process-wide pool with default options, used by isolates that name none.
    pub fn global() -> WorkerPool {
        static GLOBAL: OnceLock<WorkerPool> = OnceLock::new();
        GLOBAL.get_or_init(|| WorkerPool::new(PoolOptions::default())).clone()
    }

    /// Starts `n` workers for `tenant` now, so the next isolates need not wait for a process
    /// to start.
    pub fn prestart(&self, n: usize, tenant: Option<&str>) -> Result<()> {
        let mut workers = self.inner.workers.lock();
        for _ in 0..n {
            workers.push(self.inner.spawn(tenant.map(str::to_owned))?);
        }
        Ok(())
    }

    /// Worker processes alive now.
    pub fn workers(&self) -> usize {
        self.inner.workers.lock().iter().filter(|w| w.crash().is_none()).count()
    }

    /// Creates an isolate in a worker of `tenant` with `create` (an [`Op::CreateIsolate`] with
    /// this memory limit, in MB, for the worker of that link): its place there and its id. A
    /// worker found dead on the way is replaced: new isolates work even right after a crash.
    /// With `ahead`, the worker's ceiling also allows for an isolate like this one made ahead
    /// of the next request ([`crate::protocol::StartFrom::ahead`]).
    pub fn create_isolate(&self, tenant: Option<&str>, memory_limit: u64, ahead: bool, create: impl Fn(&Link) -> Op) -> Result<(Lease, Id)> {
        let mut attempts = 0;
        loop {
            let lease = self.lease(tenant.map(str::to_owned), memory_limit, ahead)?;
            let link = lease.link.clone();
            let created = link.send(None, None, create(&link), None).and_then(|reply| reply.recv().unwrap_or_else(|_| Err(link.crash_error())));
            match created {
                Ok(reply) => return Ok((lease, reply.id()?)),
                // A worker that was already running may have died since; a new one failing is
                // the answer.
                Err(Error::WorkerCrashed { .. }) if !lease.fresh && attempts < 2 => attempts += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// Starts a worker of this pool's program for one job of its own (a snapshot's creation),
    /// shared with no isolate and not kept by the pool; its memory ceiling allows for
    /// `memory_limit` MB. [`Link::retire`] it when done.
    pub fn dedicated_worker(&self, memory_limit: u64) -> Result<Arc<Link>> {
        let link = self.inner.spawn(None)?;
        link.reserve(memory_limit, 1, false);
        Ok(link)
    }

    /// Whether its workers' memory ceiling was set ([`PoolOptions::memory_ceiling`]) rather
    /// than following their isolates' limits.
    pub fn has_fixed_ceiling(&self) -> bool {
        self.inner.options.memory_ceiling.is_some()
    }

    fn lease(&self, tenant: Option<String>, memory_limit: u64, ahead: bool) -> Result<Lease> {
        let mut workers = self.inner.workers.lock();
        workers.retain(|w| w.crash().is_none());
        let per_worker = self.inner.options.isolates_per_worker.max(1);
        let (link, fresh) = match workers.iter().find(|w| w.tenant == tenant && w.hosted.load(Ordering::SeqCst) < per_worker) {
            Some(link) => (link.clone(), false),
            None => {
                let link = self.inner.spawn(tenant)?;
                workers.push(link.clone());
                (link, true)
            }
        };
        let hosted = link.hosted.fetch_add(1, Ordering::SeqCst) + 1;
        link.reserve(memory_limit, hosted, ahead);
        Ok(Lease { pool: self.inner.clone(), link, memory_limit, fresh })
    }
}

impl Pool {
    fn spawn(&self, tenant: Option<String>) -> Result<Arc<Link>> {
        let program = worker_program(self.options.worker_program.as_ref())?;
        Link::spawn(&program, self.options.memory_ceiling, self.options.sandbox, tenant).map_err(|e| match e {
            Error::WorkerCrashed { reason } => Error::WorkerCrashed { reason: format!("no worker: {reason}") },
            other => other,
        })
    }
}

/// The worker program: the configured one, `IVM_WORKER`, this executable if it is `ivm`, or
/// an `ivm` beside this executable (or one directory up, where cargo puts binaries next to
/// its test executables).
pub fn worker_program(configured: Option<&PathBuf>) -> Result<PathBuf> {
    if let Some(path) = configured {
        return Ok(path.clone());
    }
    if let Some(path) = std::env::var_os("IVM_WORKER") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().map_err(|e| Error::InvalidArgument(format!("cannot find this executable: {e}")))?;
    if exe.file_stem().is_some_and(|name| name == "ivm") {
        return Ok(exe);
    }
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join("ivm"))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            Error::InvalidArgument(
                "no worker program for process isolation: set PoolOptions::worker_program or IVM_WORKER to an `ivm` binary".into(),
            )
        })
}
