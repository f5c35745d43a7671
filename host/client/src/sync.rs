//! A mutex and a condition variable that do not poison.
//!
//! ivm catches the panics of the embedder's code (host functions, hooks, console sinks) and
//! reports them as errors. A lock held while one unwinds is taken as it is afterwards (as
//! `parking_lot`'s and tokio's mutexes do) rather than turning every later use of the
//! runtime's bookkeeping into a second panic.

use std::time::Duration;

pub use std::sync::MutexGuard;

/// [`std::sync::Mutex`] whose [`lock`](Mutex::lock) ignores poisoning.
#[derive(Debug, Default)]
pub struct Mutex<T: ?Sized>(std::sync::Mutex<T>);

impl<T> Mutex<T> {
    pub const fn new(value: T) -> Mutex<T> {
        Mutex(std::sync::Mutex::new(value))
    }
}

impl<T: ?Sized> Mutex<T> {
    pub fn lock(&self) -> MutexGuard<'_, T> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn get_mut(&mut self) -> &mut T {
        self.0.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// [`std::sync::Condvar`] for [`Mutex`], ignoring poisoning the same way.
#[derive(Debug, Default)]
pub struct Condvar(std::sync::Condvar);

impl Condvar {
    pub const fn new() -> Condvar {
        Condvar(std::sync::Condvar::new())
    }

    pub fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        self.0.wait(guard).unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits at most `timeout`; also returns whether it ran out.
    pub fn wait_timeout<'a, T>(&self, guard: MutexGuard<'a, T>, timeout: Duration) -> (MutexGuard<'a, T>, bool) {
        let (guard, result) = self.0.wait_timeout(guard, timeout).unwrap_or_else(|poisoned| poisoned.into_inner());
        (guard, result.timed_out())
    }

    pub fn notify_one(&self) {
        self.0.notify_one();
    }

    pub fn notify_all(&self) {
        self.0.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_while_locked_leaves_the_lock_usable() {
        let mutex = std::sync::Arc::new(Mutex::new(1));
        let held = mutex.clone();
        let panicked = std::thread::spawn(move || {
            let _guard = held.lock();
            panic!("a host function's panic");
        })
        .join();
        assert!(panicked.is_err());
        *mutex.lock() += 1;
        assert_eq!(*mutex.lock(), 2);
    }

    #[test]
    fn wait_timeout_says_when_it_ran_out() {
        let (mutex, condvar) = (Mutex::new(()), Condvar::new());
        let (_guard, timed_out) = condvar.wait_timeout(mutex.lock(), Duration::from_millis(1));
        assert!(timed_out);
    }
}
