//! An isolate's queue of requests.

use std::collections::VecDeque;
use std::task::Waker;

use crate::process::protocol::Op;
use ivm_client::spin;
use crate::sync::Mutex;

/// An isolate's requests, in order. Its thread takes them one by one; while JavaScript on
/// that thread waits for a host function, the wait takes them too, so the isolate serves
/// others while its host function runs (as an in-process isolate does while its thread is
/// in another isolate).
#[derive(Default)]
pub(super) struct Queue {
    state: Mutex<QueueState>,
    ready: crate::sync::Condvar,
}

#[derive(Default)]
struct QueueState {
    requests: VecDeque<(u64, Op)>,
    closed: bool,
    /// A host call waiting on the isolate's thread.
    waiter: Option<Waker>,
}

impl Queue {
    /// Adds a request; `false` once the isolate is gone.
    pub(super) fn push(&self, id: u64, op: Op) -> bool {
        let mut state = self.state.lock();
        if state.closed {
            return false;
        }
        state.requests.push_back((id, op));
        if let Some(waker) = state.waiter.take() {
            waker.wake();
        }
        self.ready.notify_one();
        true
    }

    pub(super) fn close(&self) {
        self.state.lock().closed = true;
        self.ready.notify_one();
    }

    /// The next request, waiting for one; `None` once closed and drained.
    pub(super) fn next(&self) -> Option<(u64, Op)> {
        let mut next = None;
        let ready = |next: &mut Option<(u64, Op)>| {
            let mut state = self.state.lock();
            *next = state.requests.pop_front();
            next.is_some() || state.closed
        };
        if spin::poll_for(|| ready(&mut next)) {
            return next;
        }
        let mut state = self.state.lock();
        loop {
            if let Some(request) = state.requests.pop_front() {
                return Some(request);
            }
            if state.closed {
                return None;
            }
            state = self.ready.wait(state);
        }
    }

    /// The next request if there is one; otherwise `waker` hears of the next.
    pub(super) fn poll_next(&self, waker: &Waker) -> Option<(u64, Op)> {
        let mut state = self.state.lock();
        let next = state.requests.pop_front();
        if next.is_none() {
            state.waiter = Some(waker.clone());
        }
        next
    }
}
