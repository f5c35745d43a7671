//! `cpu_time` and `wall_time`, as isolated-vm defines them: the time an isolate spent locked
//! by some thread, wall-clock and on that thread's CPU clock (`CLOCK_THREAD_CPUTIME_ID`).
//! Both can be read live from any thread while the isolate runs.
//!
//! Reading a thread's CPU clock is a system call (0.3-0.5 µs on a VM, a third of a small
//! eval), so it is read only around stretches that may run long: the first few of an isolate,
//! and those that follow a stretch of at least [`SHORT`] until [`UNMEASURED_AFTER`] short
//! ones in a row have gone by (so a GC task run between two long evals does not make the
//! second one go unmeasured). Other stretches count their wall time as CPU time, which for a
//! thread holding an isolate that briefly is what it spent on a CPU. Once a run has a CPU
//! limit ([`measure_cpu`](Clock::measure_cpu)), every stretch reads the CPU clock: a short
//! stretch's wall time would charge a wait (`Atomics.wait`) as CPU time.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::sync::Mutex;

/// A stretch at least this long makes the next ones read the CPU clock.
const SHORT: Duration = Duration::from_micros(50);
/// After this many short stretches in a row, stretches go unmeasured.
const UNMEASURED_AFTER: u32 = 8;

#[derive(Default)]
pub(crate) struct Clock {
    cpu_ns: AtomicU64,
    wall_ns: AtomicU64,
    running: Mutex<Option<Segment>>,
    /// Short stretches in a row since the last long one.
    short_in_a_row: AtomicU32,
    /// Every stretch reads the CPU clock (a CPU limit depends on it).
    measure_always: AtomicBool,
}

/// The time the isolate is being held right now.
struct Segment {
    wall_start: Instant,
    cpu_clock: libc::clockid_t,
    /// The thread's CPU clock at the start, when this stretch was expected to run long.
    cpu_start: Option<u64>,
}

impl Segment {
    fn cpu_so_far(&self, wall: Duration) -> u64 {
        match self.cpu_start {
            Some(start) => read_cpu(self.cpu_clock).saturating_sub(start),
            None => wall.as_nanos() as u64,
        }
    }
}

fn read_cpu(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-pointer; an invalid clock (thread gone) leaves it at zero.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn this_thread_cpu_clock() -> libc::clockid_t {
    let mut clock: libc::clockid_t = libc::CLOCK_THREAD_CPUTIME_ID;
    // SAFETY: `pthread_self` is always valid; on failure `clock` keeps the per-thread id,
    // which is right when read from this thread and harmlessly wrong from others.
    unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock) };
    clock
}

impl Clock {
    /// Starts a segment on the current thread (the isolate was just locked); returns when.
    pub(crate) fn start(&self) -> Instant {
        let cpu_clock = this_thread_cpu_clock();
        let measure = self.measure_always.load(Ordering::Relaxed) || self.short_in_a_row.load(Ordering::Relaxed) < UNMEASURED_AFTER;
        let cpu_start = measure.then(|| read_cpu(cpu_clock));
        let now = Instant::now();
        let segment = Segment { wall_start: now, cpu_clock, cpu_start };
        *self.running.lock() = Some(segment);
        now
    }

    /// Ends the running segment (the isolate is about to be unlocked).
    pub(crate) fn stop(&self) {
        let mut running = self.running.lock();
        if let Some(s) = running.take() {
            let wall = s.wall_start.elapsed();
            // Under the lock `cpu_time` reads with, so a reader always finds the segment in
            // one place or the other (a CPU limit checked against too little overshoots).
            self.cpu_ns.fetch_add(s.cpu_so_far(wall), Ordering::Relaxed);
            self.wall_ns.fetch_add(wall.as_nanos() as u64, Ordering::Relaxed);
            drop(running);
            if wall >= SHORT {
                self.short_in_a_row.store(0, Ordering::Relaxed);
            } else if self.short_in_a_row.load(Ordering::Relaxed) < UNMEASURED_AFTER {
                self.short_in_a_row.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// From now on every stretch reads the CPU clock, the running one too (called on the
    /// thread holding the isolate; its unmeasured part so far counts its wall time).
    pub(crate) fn measure_cpu(&self) {
        if self.measure_always.swap(true, Ordering::Relaxed) {
            return;
        }
        if let Some(s) = self.running.lock().as_mut().filter(|s| s.cpu_start.is_none()) {
            s.cpu_start = Some(read_cpu(s.cpu_clock).saturating_sub(s.wall_start.elapsed().as_nanos() as u64));
        }
    }

    pub(crate) fn cpu_time(&self) -> Duration {
        let running = self.running.lock();
        let live = running.as_ref().map_or(0, |s| s.cpu_so_far(s.wall_start.elapsed()));
        Duration::from_nanos(self.cpu_ns.load(Ordering::Relaxed) + live)
    }

    pub(crate) fn wall_time(&self) -> Duration {
        let running = self.running.lock();
        let live = running.as_ref().map_or(0, |s| s.wall_start.elapsed().as_nanos() as u64);
        Duration::from_nanos(self.wall_ns.load(Ordering::Relaxed) + live)
    }
}
