//! Debugging and profiling: the CPU profiler, heap snapshots, inspector sessions.

use std::ffi::{c_char, c_void};
use std::io::Write;
use std::time::Duration;

use engine::{Error, InspectorSession};

use crate::bytes::ivm_bytes_t;
use crate::callback::UserData;
use crate::isolate::ivm_isolate_t;
use crate::{args, boundary, give};

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_isolate_start_cpu_profiler(isolate: *const ivm_isolate_t, title: *const c_char) -> *mut crate::ivm_error_t {
    boundary(|| {
        let (isolate, title) = unsafe { (args::borrow(isolate, "isolate")?, args::name(title, "title")?) };
        isolate.0.start_cpu_profiler(title)
    })
}

/// Stops profile `title`: `out` gets isolated-vm's shape, a JSON array of
/// `{"threadId": ..., "profile": <Chrome .cpuprofile>}` (empty for an unknown title).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_isolate_stop_cpu_profiler(isolate: *const ivm_isolate_t, title: *const c_char, out: *mut ivm_bytes_t) -> *mut crate::ivm_error_t {
    boundary(|| {
        let (isolate, title) = unsafe { (args::borrow(isolate, "isolate")?, args::name(title, "title")?) };
        let out = unsafe { args::out(out, "out") }?;
        let profiles = isolate.0.stop_cpu_profiler(title)?;
        ivm_bytes_t::give(out, serde_json::to_vec(&profiles).map_err(|e| Error::Conversion(e.to_string()))?);
        Ok(())
    })
}

/// Receives the pieces of a heap snapshot; returns false to stop.
pub type ivm_write_func_t = unsafe extern "C" fn(user_data: *mut c_void, data: *const u8, len: usize) -> bool;

/// The embedder's writer as `std::io::Write`.
struct CWriter {
    write: ivm_write_func_t,
    user_data: std::sync::Arc<UserData>,
}

impl Write for CWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // SAFETY: the embedder's function, with its data and the piece, lent for the call.
        if unsafe { (self.write)(self.user_data.get(), buf.as_ptr(), buf.len()) } {
            Ok(buf.len())
        } else {
            Err(std::io::Error::other("the write function stopped the heap snapshot"))
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Takes a heap snapshot (`.heapsnapshot` JSON), handing it to `write` in pieces, on one
/// thread at a time, before it returns.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_isolate_heap_snapshot(
    isolate: *const ivm_isolate_t,
    write: Option<ivm_write_func_t>,
    user_data: *mut c_void,
) -> *mut crate::ivm_error_t {
    boundary(|| {
        let isolate = unsafe { args::borrow(isolate, "isolate") }?;
        let write = write.ok_or_else(|| Error::InvalidArgument("`write` is NULL".into()))?;
        isolate.0.heap_snapshot(CWriter { write, user_data: UserData::new(user_data, None) })?;
        Ok(())
    })
}

pub struct ivm_inspector_session_t(InspectorSession);

crate::deleters!(ivm_inspector_session_delete: ivm_inspector_session_t);

/// Connects a session to the isolate's inspector (made with `ivm_isolate_options_set_inspector`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_isolate_inspector_session(isolate: *const ivm_isolate_t, out: *mut *mut ivm_inspector_session_t) -> *mut crate::ivm_error_t {
    boundary(|| {
        let (isolate, out) = unsafe { (args::borrow(isolate, "isolate")?, args::out(out, "out")?) };
        *out = give(ivm_inspector_session_t(isolate.0.inspector_session()?));
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_inspector_session_dispatch(session: *const ivm_inspector_session_t, message: *const c_char, len: usize) -> *mut crate::ivm_error_t {
    boundary(|| {
        let (session, message) = unsafe { (args::borrow(session, "session")?, args::text(message, len, "message")?) };
        session.0.dispatch(message)
    })
}

/// The next response or notification, waiting up to `wait_ms`: `*received` says whether one
/// came; an error of kind `IVM_ERROR_DISPOSED` once the session has ended.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ivm_inspector_session_poll(
    session: *const ivm_inspector_session_t,
    wait_ms: u32,
    out: *mut ivm_bytes_t,
    received: *mut bool,
) -> *mut crate::ivm_error_t {
    boundary(|| {
        let session = unsafe { args::borrow(session, "session") }?;
        let (out, received) = unsafe { (args::out(out, "out")?, args::out(received, "received")?) };
        match session.0.recv_timeout(Duration::from_millis(wait_ms.into())) {
            Ok(Some(message)) => {
                ivm_bytes_t::give(out, message.into_bytes());
                *received = true;
            }
            Ok(None) => return Err(Error::disposed("The inspector session has ended")),
            Err(_) => *received = false,
        }
        Ok(())
    })
}
