//! ivm's V8 platform: V8's own thread pool for background work, and foreground tasks (the
//! ones that must run on the isolate's thread: finishing an async WebAssembly compile,
//! `FinalizationRegistry` callbacks, GC steps) handed to the isolate they belong to, which runs
//! them as jobs of its queue. So nothing has to poll V8 for tasks, and a promise that a task
//! settles wakes the run waiting for it like any other.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::sync::Mutex;

/// An isolate that runs its foreground tasks.
pub(crate) trait TaskTarget: Send + Sync {
    /// Queues `task` to run with the isolate held.
    fn post_task(self: Arc<Self>, task: v8::Task);
}

/// Isolates by the address of their V8 isolate (what V8 names when it posts a task).
static TARGETS: Mutex<Option<HashMap<usize, Weak<dyn TaskTarget>>>> = Mutex::new(None);

/// The address V8 uses for `isolate` in task posts.
pub(crate) fn address(isolate: &v8::Isolate) -> usize {
    // SAFETY: `UnsafeRawIsolatePtr` is a transparent wrapper of the isolate's pointer.
    unsafe { std::mem::transmute::<v8::UnsafeRawIsolatePtr, *mut std::ffi::c_void>(isolate.as_raw_isolate_ptr()) as usize }
}

/// Sends the foreground tasks of the V8 isolate at `address` to `target`.
pub(crate) fn register(address: usize, target: Weak<dyn TaskTarget>) {
    TARGETS.lock().get_or_insert_with(HashMap::new).insert(address, target);
}

/// Stops sending tasks for the isolate at `address` (it is being disposed): later ones are
/// dropped.
pub(crate) fn unregister(address: usize) {
    if let Some(targets) = TARGETS.lock().as_mut() {
        targets.remove(&address);
    }
}

fn target(address: usize) -> Option<Weak<dyn TaskTarget>> {
    TARGETS.lock().as_ref()?.get(&address).cloned()
}

/// Hands `task` to its isolate; a task for an isolate that is gone (or was never ivm's) is
/// dropped, which V8 allows (its tasks are cancelable).
fn deliver(target: Option<Weak<dyn TaskTarget>>, task: v8::Task) {
    if let Some(target) = target.and_then(|t| t.upgrade()) {
        target.post_task(task);
    }
}

pub(crate) struct Platform;

impl v8::PlatformImpl for Platform {
    fn post_task(&self, isolate: *mut std::ffi::c_void, task: v8::Task) {
        deliver(target(isolate as usize), task);
    }

    fn post_non_nestable_task(&self, isolate: *mut std::ffi::c_void, task: v8::Task) {
        // Tasks run as jobs of the isolate's queue, never nested in another.
        deliver(target(isolate as usize), task);
    }

    fn post_delayed_task(&self, isolate: *mut std::ffi::c_void, task: v8::Task, delay_in_seconds: f64) {
        // The isolate is looked up now: by the time the delay is over, another isolate may
        // live at the same address.
        let target = target(isolate as usize);
        let delay = Duration::try_from_secs_f64(delay_in_seconds).unwrap_or(Duration::ZERO);
        match Instant::now().checked_add(delay) {
            Some(at) => crate::watchdog::after(at, move || deliver(target, task)),
            // Too far away to happen.
            None => drop(task),
        }
    }

    fn post_non_nestable_delayed_task(&self, isolate: *mut std::ffi::c_void, task: v8::Task, delay_in_seconds: f64) {
        self.post_delayed_task(isolate, task, delay_in_seconds);
    }

    fn post_idle_task(&self, _isolate: *mut std::ffi::c_void, task: v8::IdleTask) {
        // Idle tasks are not enabled; V8 posts none.
        drop(task);
    }
}
