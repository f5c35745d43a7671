//! Typed errors: every fallible operation returns [`Result<T>`](Result).
//!
//! An [`Error`] says *what kind* of failure happened ([`ErrorKind`]) and carries the message
//! texts that isolated-vm users know (`Script execution timed out.`, `Isolate was disposed
//! during execution due to memory limit`, ...). A JavaScript exception keeps its class name,
//! message and stack as a [`JsError`].

use std::fmt;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// isolated-vm's message for a timeout.
pub const TIMEOUT_MESSAGE: &str = "Script execution timed out.";
/// The message for a run stopped by its CPU-time limit, or refused because the isolate's CPU
/// budget is spent (isolated-vm has no CPU limit; this follows its timeout's wording).
pub const CPU_LIMIT_MESSAGE: &str = "Script execution exceeded its CPU time limit.";
/// isolated-vm's message for an isolate that hit its memory limit during a call.
pub const MEMORY_LIMIT_MESSAGE: &str = "Isolate was disposed during execution due to memory limit";

/// A failed operation.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum Error {
    /// JavaScript threw (a compile error is a `SyntaxError` exception). Boxed: every
    /// `Result` of the crate carries an `Error`, and stays small.
    Exception(Box<JsError>),
    /// The `timeout` of the operation expired; the script was terminated. The isolate stays
    /// usable. `stack` holds the frames that were running when the timer fired.
    Timeout {
        /// The frames that were running when the timeout fired (may be empty).
        stack: String,
    },
    /// The run used up its CPU time: its own `cpu_limit`, or what was left of the isolate's
    /// `cpu_budget` (a run after the budget is spent is refused with this, running nothing).
    /// The script was terminated; the isolate stays usable. `stack` holds the frames that
    /// were running when the limit was reached (may be empty).
    CpuLimit {
        /// The frames that were running when the limit was reached (may be empty).
        stack: String,
    },
    /// The isolate went over its memory limit. It has been disposed.
    MemoryLimit,
    /// The isolate (or the context, script or handle used) is disposed or released.
    Disposed {
        /// What was found disposed, e.g. `Isolate is disposed`.
        message: String,
    },
    /// A promise result can never settle: nothing is left that could resolve it.
    Abandoned,
    /// An argument or option was invalid; nothing was run.
    InvalidArgument(String),
    /// A value could not be converted between JavaScript and Rust (e.g. a JS string where the
    /// Rust type asks for a number, or a value that cannot be copied).
    Conversion(String),
    /// The worker process of a process-isolated isolate exited (V8 aborted, a signal, its
    /// memory ceiling, a protocol violation, or ivm killed it after a timeout's grace period).
    /// The isolate is gone; others are not affected.
    WorkerCrashed {
        /// How the worker ended and why: its exit status or signal, and V8's last words.
        reason: String,
    },
}

/// The kind of an [`Error`], as a plain enum (e.g. for matching or for the CLI's JSON output).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// See [`Error::Exception`].
    Exception,
    /// See [`Error::Timeout`].
    Timeout,
    /// See [`Error::CpuLimit`].
    CpuLimit,
    /// See [`Error::MemoryLimit`].
    MemoryLimit,
    /// See [`Error::Disposed`].
    Disposed,
    /// See [`Error::Abandoned`].
    Abandoned,
    /// See [`Error::InvalidArgument`].
    InvalidArgument,
    /// See [`Error::Conversion`].
    Conversion,
    /// See [`Error::WorkerCrashed`].
    WorkerCrashed,
}

impl ErrorKind {
    /// A stable kebab-case name: `exception`, `timeout`, `cpu-limit`, `memory-limit`, `disposed`,
    /// `abandoned`, `invalid-argument`, `conversion`, `worker-crashed`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Exception => "exception",
            ErrorKind::Timeout => "timeout",
            ErrorKind::CpuLimit => "cpu-limit",
            ErrorKind::MemoryLimit => "memory-limit",
            ErrorKind::Disposed => "disposed",
            ErrorKind::Abandoned => "abandoned",
            ErrorKind::InvalidArgument => "invalid-argument",
            ErrorKind::Conversion => "conversion",
            ErrorKind::WorkerCrashed => "worker-crashed",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A JavaScript exception copied out of an isolate.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct JsError {
    /// The error's class name (`Error`, `TypeError`, `SyntaxError`, a custom `name`...). For a
    /// thrown non-Error value this is empty.
    pub name: String,
    /// The message. A `SyntaxError` raised while compiling carries isolated-vm's
    /// ` [filename:line:column]` suffix.
    pub message: String,
    /// The JavaScript stack (`name: message` followed by `    at ...` lines), when there is one.
    pub stack: Option<String>,
    /// Where the exception was raised, when V8 knows.
    pub location: Option<Location>,
    /// The error's `cause`, when it has one.
    pub cause: Option<Box<JsError>>,
    /// An `AggregateError`'s `errors`.
    pub errors: Vec<JsError>,
    /// Causes and `errors` entries left out of this description: past its budget (how many
    /// errors, and how much text, a description of script-made data may hold), or met again
    /// (a cycle, or one error held in several places). 0 when nothing was left out.
    #[serde(default)]
    pub omitted: usize,
}

/// A position in a script.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Location {
    /// The script's filename (its origin's resource name).
    pub filename: String,
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub column: u32,
}

impl Error {
    /// This error's kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Exception(_) => ErrorKind::Exception,
            Error::Timeout { .. } => ErrorKind::Timeout,
            Error::CpuLimit { .. } => ErrorKind::CpuLimit,
            Error::MemoryLimit => ErrorKind::MemoryLimit,
            Error::Disposed { .. } => ErrorKind::Disposed,
            Error::Abandoned => ErrorKind::Abandoned,
            Error::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Error::Conversion(_) => ErrorKind::Conversion,
            Error::WorkerCrashed { .. } => ErrorKind::WorkerCrashed,
        }
    }

    /// The error's message, with isolated-vm's texts where the meaning is the same.
    pub fn message(&self) -> &str {
        match self {
            Error::Exception(e) => &e.message,
            Error::Timeout { .. } => TIMEOUT_MESSAGE,
            Error::CpuLimit { .. } => CPU_LIMIT_MESSAGE,
            Error::MemoryLimit => MEMORY_LIMIT_MESSAGE,
            Error::Disposed { message } => message,
            Error::Abandoned => "Promise was abandoned",
            Error::InvalidArgument(m) | Error::Conversion(m) => m,
            Error::WorkerCrashed { reason } => reason,
        }
    }

    /// The JavaScript class name for an exception (`Error` for the other kinds, as isolated-vm
    /// reports them to JavaScript).
    pub fn name(&self) -> &str {
        match self {
            Error::Exception(e) => &e.name,
            Error::InvalidArgument(_) | Error::Conversion(_) => "TypeError",
            _ => "Error",
        }
    }

    /// The JavaScript stack, when there is one: an exception's stack, or for a timeout (or CPU
    /// limit) the frames that were running when it fired.
    pub fn stack(&self) -> Option<&str> {
        match self {
            Error::Exception(e) => e.stack.as_deref(),
            Error::Timeout { stack } | Error::CpuLimit { stack } if !stack.is_empty() => Some(stack),
            _ => None,
        }
    }

    /// The exception, when this is [`Error::Exception`].
    pub fn as_exception(&self) -> Option<&JsError> {
        match self {
            Error::Exception(e) => Some(e.as_ref()),
            _ => None,
        }
    }

    /// A JavaScript exception of class `name` (`Error`, `TypeError`, `RangeError`, ... or a
    /// custom name), e.g. for a host function to throw.
    pub fn js(name: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Exception(Box::new(JsError { name: name.into(), message: message.into(), ..Default::default() }))
    }

    pub fn disposed(message: impl Into<String>) -> Self {
        Error::Disposed { message: message.into() }
    }

    pub fn isolate_disposed() -> Self {
        Error::disposed("Isolate is disposed")
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Exception(e) if !e.name.is_empty() => write!(f, "{}: {}", e.name, e.message),
            _ => f.write_str(self.message()),
        }
    }
}

impl std::error::Error for Error {}

impl fmt::Display for JsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.name.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.name, self.message)
        }
    }
}
