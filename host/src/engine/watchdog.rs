//! One process-wide timer thread that fires deadlines (timeouts) with sub-millisecond
//! latency. A timer's action runs on the watchdog thread under the timer table's lock, so
//! dropping a [`Timer`] either happens before the action (which then never runs) or after it
//! (and [`Timer::fired`] says so). That makes "did the timeout hit this run or the next one?"
//! impossible to get wrong.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Instant;

type Action = Box<dyn FnOnce() + Send>;

struct Entry {
    action: Action,
    fired: Arc<AtomicBool>,
}

struct Watchdog {
    timers: Mutex<Timers>,
    wake: Condvar,
}

#[derive(Default)]
struct Timers {
    next_id: u64,
    by_deadline: BTreeMap<(Instant, u64), Entry>,
    /// When the watchdog thread will wake up next on its own (`None`: only when notified).
    /// A timer due later needs no wake-up: the thread will look again by then.
    wakes_at: Option<Instant>,
}

fn watchdog() -> &'static Watchdog {
    static WATCHDOG: OnceLock<&'static Watchdog> = OnceLock::new();
    WATCHDOG.get_or_init(|| {
        let dog: &'static Watchdog =
            Box::leak(Box::new(Watchdog { timers: Mutex::default(), wake: Condvar::new() }));
        std::thread::Builder::new()
            .name("ivm-watchdog".into())
            .spawn(move || dog.run())
            .expect("ivm: cannot start the watchdog thread");
        dog
    })
}

impl Watchdog {
    fn run(&self) {
        let mut timers = self.timers.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let now = Instant::now();
            match timers.by_deadline.first_key_value().map(|(key, _)| *key) {
                Some(key) if key.0 <= now => {
                    let entry = timers.by_deadline.remove(&key).expect("key was just read");
                    entry.fired.store(true, Ordering::SeqCst);
                    (entry.action)();
                }
                Some((deadline, _)) => {
                    timers.wakes_at = Some(deadline);
                    timers = self
                        .wake
                        .wait_timeout(timers, deadline - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                None => {
                    timers.wakes_at = None;
                    timers = self.wake.wait(timers).unwrap_or_else(|e| e.into_inner());
                }
            }
        }
    }
}

/// An armed deadline. Dropping it disarms it.
pub(crate) struct Timer {
    key: (Instant, u64),
    fired: Arc<AtomicBool>,
}

impl Timer {
    /// Runs `action` on the watchdog thread at `deadline`, unless the timer is dropped first.
    /// The action must be quick and must not arm or drop timers.
    pub(crate) fn arm(deadline: Instant, action: impl FnOnce() + Send + 'static) -> Timer {
        let dog = watchdog();
        let fired = Arc::new(AtomicBool::new(false));
        let mut timers = dog.timers.lock().unwrap_or_else(|e| e.into_inner());
        timers.next_id += 1;
        let key = (deadline, timers.next_id);
        // Wake the thread only if it would otherwise sleep past this deadline: most timeouts
        // are disarmed long before they are due, and a wake-up per call costs two context
        // switches.
        let sleeps_past = timers.wakes_at.is_none_or(|wakes_at| deadline < wakes_at);
        timers.by_deadline.insert(key, Entry { action: Box::new(action), fired: fired.clone() });
        if sleeps_past {
            timers.wakes_at = Some(deadline);
        }
        drop(timers);
        if sleeps_past {
            dog.wake.notify_one();
        }
        Timer { key, fired }
    }

    /// Whether the deadline passed and the action ran.
    pub(crate) fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        let mut timers = watchdog().timers.lock().unwrap_or_else(|e| e.into_inner());
        timers.by_deadline.remove(&self.key);
    }
}
