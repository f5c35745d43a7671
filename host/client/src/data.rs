//! The API's plain data: options, origins, property keys, the transfer rule, import requests,
//! heap statistics. Nothing here touches V8 or a handle, and all of it is serde: the worker
//! protocol ([`protocol`](crate::protocol)) carries these types as they are, with no twins to keep in
//! step.

use std::time::Duration;


/// Where code comes from: shown in stack traces and syntax errors.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct ScriptOrigin {
    /// The filename (isolated-vm's default is `<isolated-vm>`; URLs such as
    /// `file:///app/main.js` work well with tools).
    pub filename: String,
    /// Added to line numbers (0-based).
    pub line_offset: i32,
    /// Added to column numbers on the first line (0-based).
    pub column_offset: i32,
}

impl Default for ScriptOrigin {
    fn default() -> Self {
        ScriptOrigin { filename: "<isolated-vm>".into(), line_offset: 0, column_offset: 0 }
    }
}

impl ScriptOrigin {
    /// An origin with this filename and no offsets.
    pub fn new(filename: impl Into<String>) -> Self {
        ScriptOrigin { filename: filename.into(), ..Default::default() }
    }
    /// Sets the line and column offsets.
    pub fn offsets(mut self, line: i32, column: i32) -> Self {
        self.line_offset = line;
        self.column_offset = column;
        self
    }
}

/// Options for running code: timeout, origin (for stack traces), how the result transfers.
///
/// ```
/// use std::time::Duration;
/// let options = ivm_client::EvalOptions::default()
///     .timeout(Duration::from_millis(50))
///     .filename("file:///job.js")
///     .copy();
/// # drop(options);
/// ```
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct EvalOptions {
    /// Wall-clock limit for the script, the microtasks it queues, and (with `promise`) the
    /// time until its promise settles. `None`: no limit.
    pub timeout: Option<Duration>,
    /// CPU-time limit for the same: the CPU time the isolate uses while the run is in progress
    /// (its threads' CPU clocks, as `cpu_time` reads them), so time spent blocked in
    /// `Atomics.wait` or waiting for host functions is not charged. Running out ends the run
    /// with [`Error::CpuLimit`](crate::Error::CpuLimit). `None`: no limit but the isolate's
    /// CPU budget, if it has one.
    pub cpu_limit: Option<Duration>,
    /// Where the code comes from, for stack traces and syntax errors.
    pub origin: ScriptOrigin,
    /// How a non-primitive result transfers when it is asked for as a dynamic value.
    pub transfer: Transfer,
    /// If the result is a promise, wait for it and use its value (a rejection is an
    /// [`Error::Exception`](crate::Error::Exception)).
    pub promise: bool,
}

impl EvalOptions {
    /// Sets the timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
    /// Sets the CPU-time limit (see [`EvalOptions::cpu_limit`]).
    pub fn cpu_limit(mut self, limit: Duration) -> Self {
        self.cpu_limit = Some(limit);
        self
    }
    /// Sets the filename shown in stack traces.
    pub fn filename(mut self, filename: impl Into<String>) -> Self {
        self.origin.filename = filename.into();
        self
    }
    /// Sets the origin (filename, line and column offsets).
    pub fn origin(mut self, origin: ScriptOrigin) -> Self {
        self.origin = origin;
        self
    }
    /// Sets how a non-primitive result transfers when it is asked for as a dynamic value.
    pub fn transfer(mut self, transfer: Transfer) -> Self {
        self.transfer = transfer;
        self
    }
    /// Copies a non-primitive result ([`Transfer::Copy`]).
    pub fn copy(self) -> Self {
        self.transfer(Transfer::Copy)
    }
    /// Waits for a promise result to settle.
    pub fn promise(mut self) -> Self {
        self.promise = true;
        self
    }
}

/// Options for `ivm::Isolate::compile_script` and `ivm::Isolate::compile_module`.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct CompileOptions {
    /// Where the code comes from.
    pub origin: ScriptOrigin,
    /// A code cache from an earlier compile of the same source (isolated-vm's `cachedData`).
    /// It is used only if it verifies under the isolate's key; otherwise it is reported as
    /// rejected and the code compiles normally.
    pub cached_data: Option<CachedData>,
    /// Make a code cache (isolated-vm's `produceCachedData`): done only when no cache was
    /// supplied or the supplied one was rejected.
    pub produce_cached_data: bool,
}

impl CompileOptions {
    /// Compile options with this origin.
    pub fn origin(origin: ScriptOrigin) -> Self {
        CompileOptions { origin, ..Default::default() }
    }
    /// Uses `cached` if it verifies.
    pub fn cached_data(mut self, cached: CachedData) -> Self {
        self.cached_data = Some(cached);
        self
    }
    /// Makes a code cache.
    pub fn produce_cached_data(mut self) -> Self {
        self.produce_cached_data = true;
        self
    }
}

/// How a non-primitive result leaves the isolate when it is asked for as a dynamic [`Value`](crate::Value)
/// or `ivm::Transferred` (isolated-vm's `copy`/`externalCopy`/`reference` options). Results
/// asked for as a concrete type are always that type: a `DeserializeOwned` type is a copy.
///
/// Waiting for a promise result is the separate [`EvalOptions::promise`](crate::EvalOptions::promise)
/// option: it applies first, then this rule to the settled value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum Transfer {
    /// isolated-vm's default rule for the operation: primitives are copied, functions become
    /// `ivm::Reference`s, and other objects are `undefined` (`eval`, `Script::run`), an error
    /// `A non-transferable value was passed` (`eval_closure`), or a `ivm::Reference`
    /// (`Reference::get`, `Reference::apply`). A [`Value`](crate::Value) cannot hold a reference, so where
    /// the rule says reference and a `Value` is asked for, the object is copied.
    #[default]
    Auto,
    /// A deep copy (see the mapping in [`crate::value`]).
    Copy,
    /// An `ivm::ExternalCopy` (structured clone, held outside every isolate).
    ExternalCopy,
    /// A `ivm::Reference` to the value, left where it is.
    Reference,
}

/// A property key: a string or an array index.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Key {
    /// A named property.
    Name(String),
    /// An array index.
    Index(u32),
}

impl From<&str> for Key {
    fn from(name: &str) -> Key {
        Key::Name(name.to_owned())
    }
}
impl From<String> for Key {
    fn from(name: String) -> Key {
        Key::Name(name)
    }
}
impl From<u32> for Key {
    fn from(index: u32) -> Key {
        Key::Index(index)
    }
}

/// The level of a `console` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ConsoleLevel {
    /// `console.log`, `console.info`, `console.debug`
    Log,
    /// `console.warn`, `console.trace`
    Warn,
    /// `console.error`
    Error,
}

/// One `import` of a module: its specifier and import attributes (`with { type: 'json' }`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ImportRequest {
    /// What follows `from`, as written.
    pub specifier: String,
    /// The import attributes, in source order.
    pub attributes: Vec<(String, String)>,
}

impl ImportRequest {
    /// The value of an import attribute.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// V8's heap statistics for an isolate, plus `externally_allocated_size` (bytes held by its
/// ArrayBuffers and WebAssembly memories), as isolated-vm's `getHeapStatistics()` reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct HeapStatistics {
    pub total_heap_size: usize,
    pub total_heap_size_executable: usize,
    pub total_physical_size: usize,
    pub total_available_size: usize,
    pub used_heap_size: usize,
    pub heap_size_limit: usize,
    pub malloced_memory: usize,
    pub peak_malloced_memory: usize,
    pub does_zap_garbage: bool,
    pub number_of_native_contexts: usize,
    pub number_of_detached_contexts: usize,
    /// Bytes held by ArrayBuffer backing stores (exactly 1024 after `new Uint8Array(1024)`) and
    /// WebAssembly memories.
    pub externally_allocated_size: usize,
}

/// Cached data for a script or module, sealed (isolated-vm's `cachedData`). Store it anywhere:
/// it is only ever used if it verifies under the isolate's key for the same source and V8.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct CachedData(#[serde(with = "serde_bytes")] Vec<u8>);

impl std::fmt::Debug for CachedData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CachedData({} bytes)", self.0.len())
    }
}

impl CachedData {
    /// Sealed bytes, e.g. read back from a file. They are checked when used, not here.
    pub fn from_bytes(bytes: Vec<u8>) -> CachedData {
        CachedData(bytes)
    }

    /// The sealed bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// What compiling with cache options gave: a fresh sealed cache when one was asked for, and
/// whether a supplied one was rejected (isolated-vm's `cachedData` and `cachedDataRejected`).
#[derive(Debug, Clone, Default)]
pub struct CacheOutcome {
    pub produced: Option<CachedData>,
    pub rejected: Option<bool>,
}

/// A profile of the threads that ran an isolate (isolated-vm's `ThreadCpuProfile`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ThreadCpuProfile {
    /// The operating system's id of the thread that started the profiler.
    pub thread_id: u64,
    pub profile: CpuProfile,
}

impl ThreadCpuProfile {
    pub fn new(thread_id: u64, profile: CpuProfile) -> ThreadCpuProfile {
        ThreadCpuProfile { thread_id, profile }
    }
}

/// A CPU profile in Chrome's `.cpuprofile` format: `serde_json::to_writer(file, &profile)`
/// writes a file DevTools opens. (Every field is written, empty or not: the worker protocol
/// carries these as they are, by position.)
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct CpuProfile {
    pub nodes: Vec<ProfileNode>,
    /// Microseconds, on V8's monotonic clock.
    pub start_time: f64,
    pub end_time: f64,
    /// The node each sample hit, by id.
    #[serde(default)]
    pub samples: Vec<u64>,
    /// Microseconds between samples (the first from `start_time`).
    #[serde(default)]
    pub time_deltas: Vec<i64>,
}

/// A node of a [`CpuProfile`]'s call tree.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ProfileNode {
    pub id: u64,
    pub call_frame: CallFrame,
    #[serde(default)]
    pub hit_count: u64,
    #[serde(default)]
    pub children: Vec<u64>,
    #[serde(default)]
    pub deopt_reason: Option<String>,
    #[serde(default)]
    pub position_ticks: Vec<PositionTick>,
}

/// A function in a [`CpuProfile`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct CallFrame {
    pub function_name: String,
    pub script_id: String,
    pub url: String,
    /// 0-based.
    pub line_number: i64,
    /// 0-based.
    pub column_number: i64,
}

/// Samples on one line of a [`ProfileNode`]'s function.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct PositionTick {
    pub line: i64,
    pub ticks: u64,
}
