//! Unhandled promise rejections: collected while an operation runs, reported to the
//! embedder's handler when it ends (isolated-vm instead throws the first one into whatever call
//! is running, and drops the rest).
//!
//! V8 reports a rejection without a handler when it happens, and takes it back if a handler is
//! attached later in the same turn (`promise.catch` after `Promise.reject`). So rejections are
//! held until the operation has run its microtasks, and only those still unhandled then are
//! reported.

use std::sync::Arc;

use crate::error::JsError;
use crate::sync::Mutex;

/// The embedder's handler for unhandled rejections.
pub(crate) type Handler = Arc<dyn Fn(JsError) + Send + Sync>;

pub(crate) struct Rejections {
    handler: Handler,
    pending: Mutex<Vec<(v8::Global<v8::Promise>, v8::Global<v8::Value>)>>,
}

/// Starts tracking rejections in a new isolate.
pub(crate) fn install(isolate: &mut v8::Isolate, handler: Handler) {
    isolate.set_slot(Arc::new(Rejections { handler, pending: Mutex::default() }));
    isolate.set_promise_reject_callback(on_reject);
}

fn of(isolate: &v8::Isolate) -> Option<Arc<Rejections>> {
    isolate.get_slot::<Arc<Rejections>>().cloned()
}

unsafe extern "C" fn on_reject(message: v8::PromiseRejectMessage) {
    // SAFETY: V8 calls this with the isolate entered, from inside JavaScript.
    v8::callback_scope!(unsafe scope, &message);
    let Some(rejections) = of(scope) else { return };
    let promise = message.get_promise();
    let mut pending = rejections.pending.lock();
    match message.get_event() {
        v8::PromiseRejectEvent::PromiseRejectWithNoHandler => {
            let reason = message.get_value().unwrap_or_else(|| v8::undefined(scope).into());
            pending.push((v8::Global::new(scope, promise), v8::Global::new(scope, reason)));
        }
        v8::PromiseRejectEvent::PromiseHandlerAddedAfterReject => {
            pending.retain(|(p, _)| v8::Local::new(scope, p) != promise);
        }
        _ => {}
    }
}

/// Stops tracking `promise`: its rejection is handled by ivm (an operation awaited it).
pub(crate) fn forget(scope: &v8::PinScope<'_, '_>, promise: v8::Local<v8::Promise>) {
    if let Some(rejections) = of(scope) {
        rejections.pending.lock().retain(|(p, _)| v8::Local::new(scope, p) != promise);
    }
}

/// Reports the rejections still unhandled to the handler.
pub(crate) fn report(scope: &mut v8::PinScope<'_, '_>) {
    let Some(rejections) = of(scope) else { return };
    let pending = std::mem::take(&mut *rejections.pending.lock());
    for (_, reason) in pending {
        let reason = v8::Local::new(scope, &reason);
        let error = crate::exception::exception(scope, reason, None);
        // A panicking handler must not unwind into V8.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (rejections.handler)(error)));
    }
}
