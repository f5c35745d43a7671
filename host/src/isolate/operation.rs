//! [`Operation`]: the future every `_async` method returns.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::error::Result;

/// An async operation on an isolate: a future of its result.
///
/// The operation is queued when the method is called and runs whether or not this future is
/// awaited; awaiting it gives the result. It works on any executor, holds no borrow of the
/// handle that started it, and is `Send`.
#[must_use = "the operation runs anyway; await this to get its result"]
pub struct Operation<T> {
    future: Pin<Box<dyn Future<Output = Result<T>> + Send>>,
}

impl<T> Operation<T> {
    pub(crate) fn new(future: impl Future<Output = Result<T>> + Send + 'static) -> Self {
        Operation { future: Box::pin(future) }
    }

    /// An operation that failed before it could be queued.
    pub(crate) fn failed(error: crate::Error) -> Self
    where
        T: Send + 'static,
    {
        Operation::new(std::future::ready(Err(error)))
    }
}

impl<T> Future for Operation<T> {
    type Output = Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        self.future.as_mut().poll(cx)
    }
}

impl<T> std::fmt::Debug for Operation<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Operation")
    }
}
