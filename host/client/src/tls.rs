//! The client's thread-local state, in one place: what a thread is in the middle of, which the
//! requests it sends carry so that calls back into the host find their way.
//!
//! Three pieces, each set for the length of a closure (and restored after it, also on unwind)
//! and read when a request is sent:
//! - the **caller tag** ([`caller_tag`], [`with_caller_tag`]): a value an operation lends the
//!   host functions its JavaScript calls. The component host tags a guest's task with it, so a
//!   guest function's call finds the task it belongs to. A request carries the tag of the thread
//!   that sent it; the host functions its JavaScript calls run with it.
//! - the **worker calls being answered** ([`ancestry`], [`answering`]): a host function answering
//!   call C of worker W that calls into W again makes its request inside C, so it runs where C's
//!   JavaScript waits (as a nested call runs inline in process). The chain crosses workers: a
//!   host function of isolate A calls isolate B (another worker), whose JavaScript calls a host
//!   function that calls A: that request belongs inside A's call, found further up the chain.
//! - the **link whose events this thread handles** ([`handling_events_of`]): a request sent
//!   from a link's event thread must not have its reply queued behind that same thread.
//!
//! [`within`] and [`Within`] set the first two together, for a closure or a future.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A value an operation lends to the host functions its JavaScript calls (see the module docs).
pub type CallerTag = Arc<dyn Any + Send + Sync>;

/// A worker call being answered: the link (by address) and the call's number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answering {
    pub link: usize,
    pub call: u64,
}

/// The worker calls a thread is answering, outermost first.
pub type Ancestry = Vec<Answering>;

/// What a request was sent with, which the calls its JavaScript makes back into the host
/// continue.
#[derive(Clone, Default)]
pub struct Origin {
    /// The worker calls its sender was answering.
    pub ancestry: Ancestry,
    /// Its sender's caller tag.
    pub tag: Option<CallerTag>,
}

impl Origin {
    /// This thread's.
    pub fn current() -> Origin {
        Origin { ancestry: ancestry(), tag: caller_tag() }
    }
}

thread_local! {
    static CALLER_TAG: RefCell<Option<CallerTag>> = const { RefCell::new(None) };
    static ANSWERING: RefCell<Ancestry> = const { RefCell::new(Vec::new()) };
    static HANDLING_EVENTS_OF: Cell<usize> = const { Cell::new(0) };
}

/// Sets a thread-local for the length of `f`, restoring the outer value after (also on unwind).
fn scoped<T: 'static, R>(key: &'static std::thread::LocalKey<RefCell<T>>, value: T, f: impl FnOnce() -> R) -> R {
    struct Restore<T: 'static>(&'static std::thread::LocalKey<RefCell<T>>, Option<T>);
    impl<T> Drop for Restore<T> {
        fn drop(&mut self) {
            if let Some(outer) = self.1.take() {
                self.0.set(outer);
            }
        }
    }
    let _restore = Restore(key, Some(key.replace(value)));
    f()
}

/// The tag of the operation this thread runs a host function for (or is submitting).
pub fn caller_tag() -> Option<CallerTag> {
    CALLER_TAG.with_borrow(Clone::clone)
}

/// Runs `f` with `tag` as this thread's caller tag.
pub fn with_caller_tag<R>(tag: Option<CallerTag>, f: impl FnOnce() -> R) -> R {
    scoped(&CALLER_TAG, tag, f)
}

/// The chain of worker calls this thread is answering.
pub fn ancestry() -> Ancestry {
    ANSWERING.with_borrow(Clone::clone)
}

/// The innermost call of link `link` (its address) this thread is answering.
pub fn answering(link: usize) -> Option<u64> {
    ANSWERING.with_borrow(|calls| calls.iter().rev().find(|a| a.link == link).map(|a| a.call))
}

/// Runs `f` answering `chain`, for an operation tagged `tag`.
pub fn within<R>(chain: &Ancestry, tag: Option<CallerTag>, f: impl FnOnce() -> R) -> R {
    scoped(&ANSWERING, chain.clone(), || with_caller_tag(tag, f))
}

/// A future polled answering `chain`, for an operation tagged `tag` (see [`within`]).
pub struct Within<F> {
    pub chain: Ancestry,
    pub tag: Option<CallerTag>,
    pub future: Pin<Box<F>>,
}

impl<F: Future<Output = ()>> Future for Within<F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        let (chain, tag) = (self.chain.clone(), self.tag.clone());
        within(&chain, tag, || self.future.as_mut().poll(cx))
    }
}

/// Whether this thread is the event thread of link `link` (its address).
pub fn handling_events_of(link: usize) -> bool {
    HANDLING_EVENTS_OF.get() == link
}

/// Makes this thread the event thread of link `link` for the rest of its life.
pub(crate) fn handle_events_of(link: usize) {
    HANDLING_EVENTS_OF.set(link);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(n: u32) -> Option<CallerTag> {
        Some(Arc::new(n))
    }

    fn current_tag() -> Option<u32> {
        caller_tag().and_then(|t| t.downcast_ref::<u32>().copied())
    }

    #[test]
    fn caller_tag_is_scoped_and_restored() {
        assert_eq!(current_tag(), None);
        with_caller_tag(tag(1), || {
            assert_eq!(current_tag(), Some(1));
            with_caller_tag(tag(2), || assert_eq!(current_tag(), Some(2)));
            assert_eq!(current_tag(), Some(1));
        });
        assert_eq!(current_tag(), None);
    }

    #[test]
    fn restored_on_unwind() {
        let unwound = std::panic::catch_unwind(|| within(&vec![Answering { link: 1, call: 7 }], tag(3), || panic!("host code")));
        assert!(unwound.is_err());
        assert_eq!(current_tag(), None);
        assert!(ancestry().is_empty());
    }

    #[test]
    fn innermost_call_of_each_link() {
        let chain = vec![Answering { link: 1, call: 10 }, Answering { link: 2, call: 20 }, Answering { link: 1, call: 11 }];
        within(&chain, None, || {
            assert_eq!(answering(1), Some(11));
            assert_eq!(answering(2), Some(20));
            assert_eq!(answering(3), None);
            let origin = Origin::current();
            assert_eq!(origin.ancestry, chain);
        });
        assert_eq!(answering(1), None);
    }

    #[test]
    fn each_thread_has_its_own() {
        with_caller_tag(tag(5), || {
            std::thread::spawn(|| assert_eq!(current_tag(), None)).join().unwrap();
            assert!(!handling_events_of(9));
            std::thread::spawn(|| {
                handle_events_of(9);
                assert!(handling_events_of(9));
            })
            .join()
            .unwrap();
            assert!(!handling_events_of(9));
        });
    }

    #[test]
    fn a_future_is_polled_within_its_chain() {
        let chain = vec![Answering { link: 4, call: 40 }];
        let seen = Arc::new(std::sync::Mutex::new(None));
        let record = seen.clone();
        let mut future = Within { chain, tag: tag(8), future: Box::pin(async move { *record.lock().unwrap() = Some((answering(4), current_tag())) }) };
        let waker = std::task::Waker::noop();
        let polled = Pin::new(&mut future).poll(&mut std::task::Context::from_waker(waker));
        assert!(polled.is_ready());
        assert_eq!(*seen.lock().unwrap(), Some((Some(40), Some(8))));
        assert_eq!(answering(4), None);
    }
}
