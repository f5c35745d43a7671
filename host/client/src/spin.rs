//! Waiting without sleeping, briefly: a pipe read or a hand-off between threads that blocks
//! costs a wake-up, which on a virtual machine whose idle CPUs halt is tens of microseconds
//! (a blocking pipe round trip between two processes measured 100 µs here, a polling one
//! 2 µs). The waits on the request path poll for a short while before they block, so back-to-
//! back requests never sleep and an idle worker costs nothing.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long a wait polls before it blocks: `IVM_SPIN_US` microseconds (default 50; 0 never
/// polls).
fn budget() -> Duration {
    static BUDGET: OnceLock<Duration> = OnceLock::new();
    *BUDGET.get_or_init(|| {
        let micros = std::env::var("IVM_SPIN_US").ok().and_then(|v| v.parse().ok()).unwrap_or(50);
        Duration::from_micros(micros)
    })
}

/// Polls `ready` for a while; whether it became true. The caller blocks if not.
pub fn poll_for(mut ready: impl FnMut() -> bool) -> bool {
    let budget = budget();
    if budget.is_zero() {
        return ready();
    }
    let start = Instant::now();
    loop {
        if ready() {
            return true;
        }
        if start.elapsed() >= budget {
            return false;
        }
        // Two CPUs are shared by both processes' threads: let the one we wait for run.
        // (Yielding every turn measured faster here than spinning between yields.)
        std::thread::yield_now();
    }
}

/// A pipe's read end that polls for data for a while before it blocks.
pub struct PollingPipe<F> {
    pipe: F,
}

impl<F: AsRawFd> PollingPipe<F> {
    pub fn new(pipe: F) -> io::Result<Self> {
        let fd = pipe.as_raw_fd();
        // SAFETY: fcntl on a descriptor this value owns.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(PollingPipe { pipe })
    }

    fn fd(&self) -> RawFd {
        self.pipe.as_raw_fd()
    }

    fn try_read(&self, buf: &mut [u8]) -> Option<io::Result<usize>> {
        // SAFETY: reads into a buffer of `buf.len()` bytes.
        let n = unsafe { libc::read(self.fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Some(Ok(n as usize));
        }
        let error = io::Error::last_os_error();
        match error.kind() {
            io::ErrorKind::WouldBlock => None,
            io::ErrorKind::Interrupted => None,
            _ => Some(Err(error)),
        }
    }
}

impl<F: AsRawFd> Read for PollingPipe<F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut got = None;
        if poll_for(|| {
            got = self.try_read(buf);
            got.is_some()
        }) {
            return got.unwrap_or(Ok(0));
        }
        loop {
            let mut pollfd = libc::pollfd { fd: self.fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: one pollfd, no timeout.
            if unsafe { libc::poll(&mut pollfd, 1, -1) } < 0 {
                let error = io::Error::last_os_error();
                if error.kind() != io::ErrorKind::Interrupted {
                    return Err(error);
                }
            }
            if let Some(result) = self.try_read(buf) {
                return result;
            }
        }
    }
}
