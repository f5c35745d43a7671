//! Startup snapshots: isolates that start with libraries already loaded (isolated-vm's
//! `Isolate.createSnapshot` and `new Isolate({ snapshot })`), made safe to use.
//!
//! - **Made in a worker process of its own**, under a memory limit and a timeout: hostile code
//!   in the scripts ends in [`Error::Timeout`] or [`Error::MemoryLimit`], or at worst kills that
//!   worker, never the host (V8 cannot unwind a snapshot creator that failed half-way).
//! - **Sealed** like code caches: a blob is V8's heap, machine code included, so ivm only starts
//!   isolates from blobs it made itself under the host's [`CacheKey`]. A sealed snapshot is
//!   `IVMSNAPS`, a format byte, the V8 version that made it, a hash of V8's version and flags,
//!   V8's blob, and an HMAC-SHA-256 of all of that. A tampered, truncated, foreign-key or
//!   other-version snapshot is refused with an error saying which, before V8 sees it; the seal
//!   is checked once, when the snapshot is opened, not at every start. The seal vouches for
//!   where a blob comes from, not for what its scripts did: scripts that exploited a V8 bug in
//!   the creation worker could shape the blob, so make snapshots of code you would trust with
//!   the isolates that start from them (which run in worker processes too).
//! - **Isolates from a snapshot live in worker processes, one snapshot per worker**, whatever
//!   [`IsolateOptions::isolation`](crate::IsolateOptions::isolation) says. V8 makes one
//!   read-only heap per process from the first isolate's snapshot, and an isolate from another
//!   snapshot (V8's built-in one included) then aborts the process: measured with ivm's V8,
//!   isolates from a snapshot and from the built-in one made on 6 threads at once died with
//!   `libc++ Hardening assertion __n < size() failed: vector[] index out of bounds`. Workers
//!   that host a snapshot's isolates host no others, so isolates from any number of snapshots
//!   and from the built-in one run at once, from one host process.
//!
//! What survives: the scripts' global object and top-level declarations (functions,
//! classes, Maps, closures and the state they hold). The scripts see the ECMAScript built-ins
//! only (no `console`).

use std::borrow::Cow;
use std::ops::Range;
use std::sync::{Arc, OnceLock};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ring::{digest, hmac};

use crate::code_cache::CacheKey;
use crate::data::ScriptOrigin;
use crate::error::{Error, Result};
use crate::isolate::memory::MemoryGuard;
use crate::process::WorkerPool;
use crate::process::protocol::{Op, Reply};
use crate::watchdog::Timer;

const MAGIC: &[u8; 8] = b"IVMSNAPS";
const FORMAT: u8 = 1;
const TAG_LEN: usize = 32;
/// How long a creation may overstay its timeout before its worker is killed.
const GRACE: Duration = Duration::from_secs(5);

/// A startup snapshot, sealed: make one with [`Snapshot::builder`], keep its
/// [`sealed`](Self::sealed) bytes, open them again with [`Snapshot::open`], and start isolates
/// from it with [`IsolateOptions::snapshot`](crate::IsolateOptions::snapshot). Cloning is
/// cheap. Snapshots are made, and their isolates run, in worker processes: the `ivm` binary
/// (see [`WorkerPool`]).
///
/// ```no_run
/// use ivm::{Isolate, IsolateOptions, ScriptOrigin, Snapshot};
/// let library = "globalThis.greet = name => `Hello, ${name}!`";
/// let snapshot = Snapshot::builder().script(library, ScriptOrigin::new("greet.js")).create()?;
/// let isolate = Isolate::new(IsolateOptions::default().snapshot(snapshot))?;
/// let context = isolate.create_context()?;
/// assert_eq!(context.eval::<String>("greet('snapshot')")?, "Hello, snapshot!");
/// # Ok::<(), ivm::Error>(())
/// ```
#[derive(Clone)]
pub struct Snapshot(Arc<Sealed>);

struct Sealed {
    /// The sealed form (V8's blob inside it, checked); in a worker, V8's blob alone, kept for
    /// the worker's life (it hosts one snapshot's isolates) so that its isolates start from it
    /// without a copy each.
    bytes: Cow<'static, [u8]>,
    /// Where V8's blob is in `bytes`.
    blob: Range<usize>,
    /// The SHA-256 of the blob, in hex: which workers may host its isolates.
    id: OnceLock<String>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot").field("bytes", &self.0.blob.len()).finish_non_exhaustive()
    }
}

impl Snapshot {
    /// Starts describing a snapshot.
    pub fn builder() -> SnapshotBuilder {
        SnapshotBuilder {
            scripts: Vec::new(),
            warmup: None,
            memory_limit: 128,
            timeout: Some(crate::DEFAULT_TIMEOUT),
            key: None,
            pool: None,
        }
    }

    /// Opens a sealed snapshot made under `key`, checking its seal; an error of kind
    /// [`InvalidArgument`](crate::ErrorKind::InvalidArgument) says why one is refused.
    pub fn open(sealed: impl Into<Vec<u8>>, key: &CacheKey) -> Result<Snapshot> {
        let sealed = sealed.into();
        let blob = unseal(key, &sealed).map_err(|why| Error::InvalidArgument(format!("Snapshot refused: {why}")))?;
        Ok(Snapshot::new(sealed.into(), blob))
    }

    fn new(bytes: Cow<'static, [u8]>, blob: Range<usize>) -> Snapshot {
        Snapshot(Arc::new(Sealed { bytes, blob, id: OnceLock::new() }))
    }

    /// The sealed snapshot, to store and [`open`](Self::open) later (with the same key).
    pub fn sealed(&self) -> &[u8] {
        match self.0.bytes {
            // A worker's holds V8's blob alone.
            Cow::Borrowed(_) => &[],
            Cow::Owned(ref sealed) => sealed,
        }
    }

    /// V8's blob.
    pub(crate) fn blob(&self) -> &[u8] {
        &self.0.bytes[self.0.blob.clone()]
    }

    /// V8's blob, for an isolate to start from (a copy unless kept for good).
    pub(crate) fn startup_data(&self) -> v8::StartupData {
        match self.0.bytes {
            Cow::Borrowed(kept) => v8::StartupData::from(&kept[self.0.blob.clone()]),
            Cow::Owned(_) => v8::StartupData::from(self.blob().to_vec()),
        }
    }

    /// Names the snapshot's blob (its SHA-256).
    pub(crate) fn id(&self) -> &str {
        self.0.id.get_or_init(|| digest::digest(&digest::SHA256, self.blob()).as_ref().iter().map(|b| format!("{b:02x}")).collect())
    }

    /// A blob the host checked (`id` names it), in a worker process, kept for the process's
    /// life: a worker's isolates start from one snapshot at most.
    pub(crate) fn checked(blob: Vec<u8>, id: String) -> Snapshot {
        let len = blob.len();
        let snapshot = Snapshot::new(Cow::Borrowed(Box::leak(blob.into_boxed_slice())), 0..len);
        let _ = snapshot.0.id.set(id);
        snapshot
    }
}

/// What goes into a [`Snapshot`], and the limits its creation runs under.
#[derive(Debug, Clone)]
#[must_use]
pub struct SnapshotBuilder {
    scripts: Vec<(String, ScriptOrigin)>,
    warmup: Option<String>,
    memory_limit: u64,
    timeout: Option<Duration>,
    key: Option<CacheKey>,
    pool: Option<WorkerPool>,
}

impl SnapshotBuilder {
    /// Adds a script; scripts run in order, in one context.
    pub fn script(mut self, code: impl Into<String>, origin: ScriptOrigin) -> Self {
        self.scripts.push((code.into(), origin));
        self
    }

    /// A script run after the others in a second, throw-away context, so that the functions
    /// it calls are compiled into the snapshot (isolated-vm's `warmupScript`): faster first
    /// calls, a bigger blob.
    pub fn warmup(mut self, code: impl Into<String>) -> Self {
        self.warmup = Some(code.into());
        self
    }

    /// The creation's memory limit in MB (default 128, minimum 8).
    pub fn memory_limit(mut self, mb: u64) -> Self {
        self.memory_limit = mb;
        self
    }

    /// How long the scripts may run in all (default 30 s; `None`: no limit).
    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// Seals the snapshot with `key` (default: [`CacheKey::for_this_process`], good only
    /// within this process).
    pub fn key(mut self, key: CacheKey) -> Self {
        self.key = Some(key);
        self
    }

    /// Runs the creation in a worker of `pool` (its program and memory ceiling; default: the
    /// [global pool](WorkerPool::global)'s). The worker serves this creation only.
    pub fn pool(mut self, pool: &WorkerPool) -> Self {
        self.pool = Some(pool.clone());
        self
    }

    /// Runs the scripts in a new worker process and seals what they left. Fails with
    /// [`Error::Exception`] if a script throws, [`Error::Timeout`] or [`Error::MemoryLimit`]
    /// if it overstays or outgrows its limits, and [`Error::WorkerCrashed`] if V8 gave up on
    /// the heap they left (e.g. one holding objects a snapshot cannot keep).
    pub fn create(self) -> Result<Snapshot> {
        if self.memory_limit < 8 {
            return Err(Error::InvalidArgument("`memory_limit` must be at least 8".into()));
        }
        let key = match self.key {
            Some(key) => key,
            None => CacheKey::for_this_process()?,
        };
        let pool = self.pool.unwrap_or_else(WorkerPool::global);
        let worker = pool.dedicated_worker(self.memory_limit)?;
        let op = Op::CreateSnapshot { scripts: self.scripts, warmup: self.warmup, memory_limit: self.memory_limit, timeout: self.timeout };
        let made = worker
            .send(None, None, op, self.timeout.map(|timeout| timeout + GRACE))
            .and_then(|reply| reply.recv().unwrap_or_else(|_| Err(worker.crash_error())));
        worker.retire();
        match made {
            // Sealed as what this process's V8 can start from: a worker program with another
            // V8 or other flags made it for nothing.
            Ok(Reply::Snapshot { blob, environment }) if environment.as_slice() == crate::code_cache::environment() => {
                let (sealed, within) = seal(&key, &blob);
                Ok(Snapshot::new(sealed.into(), within))
            }
            Ok(Reply::Snapshot { .. }) => Err(Error::InvalidArgument("the worker program runs another V8, or V8 with other flags".into())),
            Ok(_) => Err(Error::Conversion("the worker's reply is not a snapshot".into())),
            // V8 or the allocator ran out of memory too fast for the limit to stop it.
            Err(Error::WorkerCrashed { reason }) if reason.contains("out of memory") || reason.contains("memory allocation of") => {
                Err(Error::MemoryLimit)
            }
            Err(e) => Err(e),
        }
    }
}

/// The magic, the format, the V8 version that makes and reads the snapshot (for errors), and
/// a hash of what it depends on (V8's version, flags and code version tag, as code caches).
fn header() -> Vec<u8> {
    let version = v8::V8::get_version().as_bytes();
    // V8's versions are short ("15.2.124.1-rusty"); a longer one is cut.
    let version = &version[..version.len().min(255)];
    let mut out = Vec::with_capacity(8 + 2 + version.len() + 32 + 8);
    out.extend_from_slice(MAGIC);
    out.push(FORMAT);
    out.push(version.len() as u8);
    out.extend_from_slice(version);
    out.extend_from_slice(crate::code_cache::environment());
    out
}

/// The sealed form of V8's `blob`, and where the blob is in it.
fn seal(key: &CacheKey, blob: &[u8]) -> (Vec<u8>, Range<usize>) {
    let mut out = header();
    out.extend_from_slice(&(blob.len() as u64).to_le_bytes());
    let within = out.len()..out.len() + blob.len();
    out.extend_from_slice(blob);
    let tag = hmac::sign(key.hmac(), &out);
    out.extend_from_slice(tag.as_ref());
    (out, within)
}

/// Where V8's blob is in a sealed snapshot, or why it is refused.
fn unseal(key: &CacheKey, sealed: &[u8]) -> std::result::Result<Range<usize>, String> {
    let rest = sealed.strip_prefix(MAGIC.as_slice()).ok_or("it is not an ivm snapshot")?;
    let (&format, rest) = rest.split_first().ok_or("it is truncated")?;
    if format != FORMAT {
        return Err(format!("it is in format {format}, this ivm reads format {FORMAT}"));
    }
    let (&version_len, rest) = rest.split_first().ok_or("it is truncated")?;
    let (version, rest) = rest.split_at_checked(version_len.into()).ok_or("it is truncated")?;
    let (_, rest) = rest.split_at_checked(32).ok_or("it is truncated")?;
    let (len, rest) = rest.split_at_checked(8).ok_or("it is truncated")?;
    let len = u64::from_le_bytes(len.try_into().map_err(|_| "it is truncated")?);
    if (rest.len() as u64) < len.saturating_add(TAG_LEN as u64) {
        return Err(format!("it is truncated: {} bytes of a {len}-byte blob and its seal", rest.len()));
    }
    let (signed, tag) = sealed.split_at(sealed.len() - TAG_LEN);
    if hmac::verify(key.hmac(), signed, tag).is_err() {
        return Err("its seal does not verify: it was altered, or sealed under another key".into());
    }
    // Genuine: whether it fits this V8.
    let ours = header();
    if !sealed.starts_with(&ours) {
        let version = String::from_utf8_lossy(version);
        return Err(match version == v8::V8::get_version() {
            true => "it was made with other V8 flags".to_owned(),
            false => format!("it was made by V8 {version}, this is V8 {}", v8::V8::get_version()),
        });
    }
    let within = ours.len() + 8..signed.len();
    if within.len() as u64 != len {
        return Err("its length does not match its blob".into());
    }
    Ok(within)
}

/// Makes V8's blob from `scripts` (run in one context, which becomes the snapshot's default)
/// and `warmup`, in this process: the worker that serves [`Op::CreateSnapshot`], which does
/// nothing else and is retired after, so a failure leaves the creator isolate to the process's
/// end rather than tearing it down half-made.
pub(crate) fn make_blob(scripts: &[(String, ScriptOrigin)], warmup: Option<&str>, memory_limit: u64, timeout: Option<Duration>) -> Result<Vec<u8>> {
    crate::engine::platform();
    let limit = usize::try_from(memory_limit.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
    let young = (1usize << (memory_limit / 128).min(4)) << 20;
    let memory = MemoryGuard::new(limit);
    let params = v8::CreateParams::default()
        .set_max_old_generation_size_in_bytes(limit)
        .set_max_young_generation_size_in_bytes(young)
        .array_buffer_allocator(memory.allocator());
    let mut creator = v8::Isolate::snapshot_creator(None, Some(params));
    memory.install(&mut creator);
    let timed_out = Arc::new(AtomicBool::new(false));
    let timer = timeout.map(|timeout| {
        let (handle, timed_out) = (creator.thread_safe_handle(), timed_out.clone());
        Timer::arm(Instant::now() + timeout, move || {
            timed_out.store(true, Ordering::SeqCst);
            handle.terminate_execution();
        })
    });
    let ran = {
        v8::scope!(let scope, &mut creator);
        let context = v8::Context::new(scope, Default::default());
        let mut ran = run_scripts(scope, context, scripts.iter().map(|(code, origin)| (code.as_str(), origin)));
        if ran.is_ok()
            && let Some(warmup) = warmup
        {
            // Compiles what the warm-up calls; the functions are shared with the clean context.
            let dirty = v8::Context::new(scope, Default::default());
            let origin = ScriptOrigin::new("<warmup>");
            ran = run_scripts(scope, dirty, scripts.iter().map(|(code, origin)| (code.as_str(), origin)).chain([(warmup, &origin)]));
        }
        if ran.is_ok() {
            scope.set_default_context(context);
        }
        ran
    };
    drop(timer);
    // The timer may have gone off after the last script: the termination it asked for is
    // pending, and the creation is over time all the same.
    let ran = ran.and_then(|()| if timed_out.load(Ordering::SeqCst) { Err(Terminated) } else { Ok(()) });
    let failed = match ran {
        Ok(()) => return creator.create_blob(v8::FunctionCodeHandling::Keep).map(|blob| blob.to_vec()).ok_or_else(|| {
            Error::InvalidArgument("V8 could not make a snapshot of what the scripts left".into())
        }),
        Err(Terminated) if memory.hit() => Error::MemoryLimit,
        Err(Terminated) if timed_out.load(Ordering::SeqCst) => Error::Timeout { stack: String::new() },
        Err(Terminated) => Error::disposed("Snapshot creation was stopped"),
        Err(Threw(error)) => error,
    };
    // A creator is torn down only after its blob is made; this process ends soon instead.
    std::mem::forget(creator);
    Err(failed)
}

/// How running the scripts failed.
enum Failure {
    /// Execution was terminated (the memory limit or the timeout).
    Terminated,
    Threw(Error),
}
use Failure::{Terminated, Threw};

fn run_scripts<'a>(
    scope: &mut v8::PinScope<'_, '_, ()>,
    context: v8::Local<'_, v8::Context>,
    scripts: impl Iterator<Item = (&'a str, &'a ScriptOrigin)>,
) -> std::result::Result<(), Failure> {
    let scope = &mut v8::ContextScope::new(scope, context);
    for (code, origin) in scripts {
        v8::tc_scope!(let tc, scope);
        let source = v8::String::new(tc, code).ok_or_else(|| Threw(Error::InvalidArgument("a script is too long for V8".into())))?;
        let origin = crate::js::origin(tc, origin, false).map_err(Threw)?;
        let Some(script) = v8::Script::compile(tc, source, Some(&origin)) else {
            return Err(if tc.has_terminated() { Terminated } else { Threw(crate::exception::compile_error(tc)) });
        };
        if script.run(tc).is_none() {
            return Err(if tc.has_terminated() { Terminated } else { Threw(Error::Exception(Box::new(crate::exception::caught(tc)))) });
        }
        tc.perform_microtask_checkpoint();
        if tc.has_terminated() {
            return Err(Terminated);
        }
    }
    Ok(())
}
