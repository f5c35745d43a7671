//! `ivm_error_t`: what went wrong, with its kind. A JavaScript exception (kind
//! `IVM_ERROR_EXCEPTION`, with the exception's name, message and stack) is told apart from
//! the host's errors (a timeout, the memory limit, a bad argument...) by its kind, as
//! wasmtime tells traps from errors.

use std::any::Any;
use std::ffi::{CString, c_char};
use std::ptr;

use engine::{Error, ErrorKind};

use crate::{args, boundary, c_text, give, quietly};

/// The kinds, as numbered in ivm.h (`IVM_ERROR_*`).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Kind {
    Exception = 1,
    Timeout = 2,
    MemoryLimit = 3,
    Disposed = 4,
    Abandoned = 5,
    InvalidArgument = 6,
    Conversion = 7,
    WorkerCrashed = 8,
    CpuLimit = 9,
    /// A bug in ivm (a panic caught at the boundary).
    Internal = 100,
}

impl Kind {
    fn of(kind: ErrorKind) -> Kind {
        match kind {
            ErrorKind::Exception => Kind::Exception,
            ErrorKind::Timeout => Kind::Timeout,
            ErrorKind::MemoryLimit => Kind::MemoryLimit,
            ErrorKind::Disposed => Kind::Disposed,
            ErrorKind::Abandoned => Kind::Abandoned,
            ErrorKind::InvalidArgument => Kind::InvalidArgument,
            ErrorKind::Conversion => Kind::Conversion,
            ErrorKind::WorkerCrashed => Kind::WorkerCrashed,
            ErrorKind::CpuLimit => Kind::CpuLimit,
            _ => Kind::Internal,
        }
    }
}

/// An error on its way to C: ivm's, or a panic's.
pub(crate) enum Failure {
    Ivm(Error),
    Internal(String),
}

impl From<Error> for Failure {
    fn from(error: Error) -> Failure {
        Failure::Ivm(error)
    }
}

impl Failure {
    pub(crate) fn panicked(panic: Box<dyn Any + Send>) -> Failure {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        Failure::Internal(format!("internal error in libivm: {what}"))
    }
}

/// An error, with its texts ready as C strings.
pub struct ivm_error_t {
    /// The error itself, for host functions that throw it on (`ivm_error_new`'s).
    pub(crate) error: Error,
    kind: Kind,
    name: CString,
    message: CString,
    stack: Option<CString>,
}

impl ivm_error_t {
    pub(crate) fn new(failure: Failure) -> ivm_error_t {
        let (error, kind) = match failure {
            Failure::Ivm(error) => {
                let kind = Kind::of(error.kind());
                (error, kind)
            }
            Failure::Internal(message) => (Error::InvalidArgument(message), Kind::Internal),
        };
        let name = if kind == Kind::Exception { error.name() } else { "" };
        ivm_error_t {
            kind,
            name: c_text(name),
            message: c_text(error.message()),
            stack: error.stack().map(c_text),
            error,
        }
    }

    pub(crate) fn boxed(failure: Failure) -> *mut ivm_error_t {
        give(ivm_error_t::new(failure))
    }
}

crate::deleters!(ivm_error_delete: ivm_error_t);

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_error_kind(error: *const ivm_error_t) -> u8 {
    // SAFETY: the header's contract (NULL or an error).
    quietly(Kind::Internal as u8, || unsafe { error.as_ref() }.map_or(0, |e| e.kind as u8))
}

/// The kind's stable name (`exception`, `timeout`, `memory-limit`, ... as ivm's `--json`).
#[unsafe(no_mangle)]
pub extern "C" fn ivm_error_kind_name(kind: u8) -> *const c_char {
    let name: &'static std::ffi::CStr = match kind {
        1 => c"exception",
        2 => c"timeout",
        3 => c"memory-limit",
        4 => c"disposed",
        5 => c"abandoned",
        6 => c"invalid-argument",
        7 => c"conversion",
        8 => c"worker-crashed",
        9 => c"cpu-limit",
        100 => c"internal",
        _ => c"unknown",
    };
    name.as_ptr()
}

unsafe fn text_of(error: *const ivm_error_t, pick: impl FnOnce(&ivm_error_t) -> *const c_char) -> *const c_char {
    // SAFETY: the header's contract (NULL or an error).
    quietly(ptr::null(), || unsafe { error.as_ref() }.map_or(ptr::null(), pick))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_error_message(error: *const ivm_error_t) -> *const c_char {
    unsafe { text_of(error, |e| e.message.as_ptr()) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_error_name(error: *const ivm_error_t) -> *const c_char {
    unsafe { text_of(error, |e| e.name.as_ptr()) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_error_stack(error: *const ivm_error_t) -> *const c_char {
    unsafe { text_of(error, |e| e.stack.as_ref().map_or(ptr::null(), |s| s.as_ptr())) }
}

/// An error for a host function to return: JavaScript gets an exception of class `name`
/// (NULL: `Error`) with `message`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_error_new(name: *const c_char, message: *const c_char, len: usize) -> *mut ivm_error_t {
    let mut made = ptr::null_mut();
    let failed = boundary(|| {
        let class = if name.is_null() { "Error" } else { unsafe { args::name(name, "name") }? };
        let message = unsafe { args::text(message, len, "message") }?;
        made = ivm_error_t::boxed(Error::js(class, message).into());
        Ok(())
    });
    // A bad argument is reported as the error made: the host function's caller sees why.
    if failed.is_null() { made } else { failed }
}
