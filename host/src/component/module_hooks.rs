//! `import()` and `import.meta` in a guest's isolates: ivm's module hooks, answered by the
//! guest as steps of the task whose JavaScript needs them (`step::import`, answered with
//! `task.resume-import`; `step::import-meta`, answered with `task.resume`).
//!
//! A hook runs while JavaScript waits for it. The guest answers between its calls, and may
//! compile the module meanwhile, so the hook waits with the isolate released (as a blocking
//! host function does), within the run's limits.

use std::sync::{Arc, Weak};

use super::{Event, TaskLine, wit};
use crate::Isolate;
use crate::error::{Error, JsError, Result};
use crate::isolate::IsolateInner;

/// Installs the hooks named in `hooks` on `isolate`.
pub(super) fn enable(isolate: &Isolate, hooks: wit::ModuleHooks) -> Result<()> {
    if isolate.is_disposed() {
        return Err(Error::isolate_disposed());
    }
    if hooks.contains(wit::ModuleHooks::DYNAMIC_IMPORT) {
        isolate.set_dynamic_import(|isolate, request, referrer| {
            let (request, referrer) = (request.clone(), referrer.to_owned());
            ask_guest(isolate.as_local(), "import() was used", |reply| Event::Import { request, referrer, reply })
        });
    }
    if hooks.contains(wit::ModuleHooks::IMPORT_META) {
        // Weak: the hook is kept in the isolate it would otherwise keep alive.
        let local = isolate.as_local().map(Arc::downgrade);
        isolate.set_import_meta(move |filename| {
            let filename = filename.to_owned();
            let local = local.as_ref().and_then(Weak::upgrade);
            ask_guest(local.as_ref(), "import.meta was used", |reply| Event::Meta { filename, reply })
        });
    }
    Ok(())
}

/// Hands the guest the question `event` makes, through the task whose JavaScript runs on this
/// thread, and waits for its answer (with the isolate released if it is in this process).
fn ask_guest<T: Send + 'static>(
    local: Option<&Arc<IsolateInner>>,
    what: &str,
    event: impl FnOnce(oneshot::Sender<std::result::Result<T, JsError>>) -> Event,
) -> Result<T> {
    let task = crate::callback::caller_tag().and_then(|tag| tag.downcast::<TaskLine>().ok());
    let answer = super::send_to_guest(task, what, event)?;
    crate::callback::wait_released(local, super::answered(answer))
}
