//! The shared part of every handle into an isolate (context, script): the isolate and an id
//! in its handle table. Dropping the last clone of a handle releases the engine object.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::isolate::Isolate;

pub(crate) struct HandleRef {
    pub(crate) isolate: Isolate,
    pub(crate) id: u64,
    released: AtomicBool,
}

impl HandleRef {
    pub(crate) fn new(isolate: Isolate, id: u64) -> Self {
        HandleRef { isolate, id, released: AtomicBool::new(false) }
    }

    /// Releases the engine object. Returns whether it was still held.
    pub(crate) fn release(&self) -> bool {
        !self.released.swap(true, Ordering::SeqCst) && self.isolate.release_handle(self.id)
    }

    /// Lets go of the engine object without releasing it (someone else does).
    pub(crate) fn forget(&self) {
        self.released.store(true, Ordering::SeqCst);
    }

    pub(crate) fn is_released(&self) -> bool {
        self.released.load(Ordering::SeqCst)
    }
}

impl Drop for HandleRef {
    fn drop(&mut self) {
        self.release();
    }
}
