//! One process-wide timer thread that fires deadlines (timeouts) with sub-millisecond
//! latency. A timer's action runs on the watchdog thread under the timer table's lock, so
//! dropping a [`Timer`] either happens before the action (which then never runs) or after it.
//! That makes "did the timeout hit this run or the next one?" impossible to get wrong.
//! Actions should be quick; they may arm and drop timers (those changes are applied when the
//! action returns).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use crate::sync::{Condvar, Mutex};

type Action = Box<dyn FnOnce() + Send>;
type Key = (Instant, u64);

struct Entry {
    action: Action,
}

struct Watchdog {
    timers: Mutex<Timers>,
    wake: Condvar,
}

#[derive(Default)]
struct Timers {
    by_deadline: BTreeMap<Key, Entry>,
    /// When the watchdog thread will wake up next on its own (`None`: only when notified).
    /// A timer due later needs no wake-up: the thread will look again by then.
    wakes_at: Option<Instant>,
}

/// A change an action made to the table it runs under, applied when it returns.
enum Change {
    Insert(Key, Entry),
    Remove(Key),
}

thread_local! {
    /// Set on the watchdog thread while an action runs: the changes it makes.
    static IN_ACTION: RefCell<Option<Vec<Change>>> = const { RefCell::new(None) };
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

fn watchdog() -> &'static Watchdog {
    static WATCHDOG: OnceLock<&'static Watchdog> = OnceLock::new();
    WATCHDOG.get_or_init(|| {
        let dog: &'static Watchdog = Box::leak(Box::new(Watchdog { timers: Mutex::default(), wake: Condvar::new() }));
        std::thread::Builder::new()
            .name("ivm-watchdog".into())
            .spawn(move || dog.run())
            .expect("ivm: cannot start the watchdog thread");
        dog
    })
}

impl Watchdog {
    fn run(&self) {
        let mut timers = self.timers.lock();
        loop {
            let now = Instant::now();
            match timers.by_deadline.first_key_value().map(|(key, _)| *key) {
                Some(key) if key.0 <= now => {
                    let entry = timers.by_deadline.remove(&key).expect("key was just read");
                    IN_ACTION.set(Some(Vec::new()));
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(entry.action));
                    for change in IN_ACTION.take().unwrap_or_default() {
                        match change {
                            Change::Insert(key, entry) => drop(timers.by_deadline.insert(key, entry)),
                            Change::Remove(key) => drop(timers.by_deadline.remove(&key)),
                        }
                    }
                }
                Some((deadline, _)) => {
                    timers.wakes_at = Some(deadline);
                    timers = self.wake.wait_timeout(timers, deadline - now).0;
                }
                None => {
                    timers.wakes_at = None;
                    timers = self.wake.wait(timers);
                }
            }
        }
    }
}

/// Applies `change` now, or after the action running on this thread (the watchdog's).
fn apply(change: Change) {
    let mut change = Some(change);
    // (During thread teardown the thread-local may be gone: no action runs then.)
    let _ = IN_ACTION.try_with(|deferred| {
        if let Some(changes) = deferred.borrow_mut().as_mut() {
            changes.push(change.take().expect("taken once"));
        }
    });
    let Some(change) = change else { return };
    let dog = watchdog();
    let mut timers = dog.timers.lock();
    match change {
        Change::Insert(key, entry) => {
            // Wake the thread only if it would otherwise sleep past this deadline: most
            // timeouts are disarmed long before they are due, and a wake-up per call costs two
            // context switches.
            let sleeps_past = timers.wakes_at.is_none_or(|wakes_at| key.0 < wakes_at);
            timers.by_deadline.insert(key, entry);
            if sleeps_past {
                timers.wakes_at = Some(key.0);
                drop(timers);
                dog.wake.notify_one();
            }
        }
        Change::Remove(key) => drop(timers.by_deadline.remove(&key)),
    }
}

fn insert(deadline: Instant, entry: Entry) -> Key {
    let key = (deadline, NEXT_ID.fetch_add(1, Ordering::Relaxed));
    apply(Change::Insert(key, entry));
    key
}

/// Runs `action` on the watchdog thread at `deadline`; it cannot be disarmed.
pub fn after(deadline: Instant, action: impl FnOnce() + Send + 'static) {
    insert(deadline, Entry { action: Box::new(action) });
}

/// An armed deadline. Dropping it disarms it.
pub struct Timer {
    key: Key,
}

impl Timer {
    /// Runs `action` on the watchdog thread at `deadline`, unless the timer is dropped first.
    pub fn arm(deadline: Instant, action: impl FnOnce() + Send + 'static) -> Timer {
        Timer { key: insert(deadline, Entry { action: Box::new(action) }) }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        apply(Change::Remove(self.key));
    }
}
