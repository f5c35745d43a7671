//! The reaper: a background thread that tears down disposed isolates.
//!
//! Freeing a V8 isolate (its heap, its code space, its handles) takes a few hundred
//! microseconds. `dispose()` and dropping the last handle hand that work here instead of
//! making the caller wait; the isolate is unusable from the moment it is disposed, only its
//! memory comes back a little later. The queue is bounded, so a program that disposes faster
//! than the reaper frees waits for it rather than piling up dead heaps.

use std::sync::OnceLock;
use std::sync::mpsc::{SyncSender, sync_channel};

type Remains = Box<dyn Send>;

/// Dead isolates waiting for the reaper. Past this many, `retire` blocks.
const BACKLOG: usize = 8;

/// The reaper's queue; the first call starts the thread, which takes the caller's scheduling
/// priority.
fn queue() -> Option<&'static SyncSender<Remains>> {
    static QUEUE: OnceLock<Option<SyncSender<Remains>>> = OnceLock::new();
    QUEUE
        .get_or_init(|| {
            let (tx, rx) = sync_channel::<Remains>(BACKLOG);
            std::thread::Builder::new()
                .name("ivm-reaper".into())
                .spawn(move || rx.into_iter().for_each(drop))
                .ok()
                .map(|_| tx)
        })
        .as_ref()
}

/// Starts the reaper now rather than at the first disposal.
pub(crate) fn start() {
    queue();
}

/// Drops `remains` on the reaper thread (or here, if the thread cannot be started).
pub(crate) fn retire(remains: impl Send + 'static) {
    let remains: Remains = Box::new(remains);
    // A failed send hands the value back inside the error, which then drops here.
    if let Some(queue) = queue() {
        let _ = queue.send(remains);
    }
}
