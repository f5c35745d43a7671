//! Operations on an isolate, each written once: how it runs on a locked isolate of this
//! process, its request to a worker, and how the worker's reply is read. `Isolate::call` and
//! `call_async` are the only places that choose between the two.

use std::future::Future;
use std::sync::Arc;

use crate::error::Result;
use crate::isolate::{Backend, Isolate, IsolateInner, Operation, Session};
use crate::process::RemoteIsolate;
use crate::process::protocol::{Op, Reply};
use crate::run::{Body, Finish, JsRun};

/// What an operation does on a locked isolate of this process: run JavaScript (a [`JsRun`],
/// which may wait for a promise) or a step with the isolate that runs none ([`InSession`]).
pub(crate) trait LocalWork<R>: Send {
    /// Runs on the calling thread.
    fn run_sync(self, inner: &Arc<IsolateInner>) -> Result<R>;
    /// Queued after the isolate's earlier operations.
    fn run_async(self, inner: &Arc<IsolateInner>) -> impl Future<Output = Result<R>> + Send + 'static
    where
        Self: 'static;
}

impl<R: Send + 'static, B: Body + Send, F: Finish<R> + Send> LocalWork<R> for JsRun<B, F> {
    fn run_sync(self, inner: &Arc<IsolateInner>) -> Result<R> {
        inner.run_js_sync(self)
    }

    fn run_async(self, inner: &Arc<IsolateInner>) -> impl Future<Output = Result<R>> + Send + 'static
    where
        Self: 'static,
    {
        inner.run_js_async(self)
    }
}

/// A step with the isolate held that runs no JavaScript (creating a context, compiling).
pub(crate) struct InSession<S>(pub(crate) S);

impl<R: Send + 'static, S: FnOnce(&mut Session<'_>) -> Result<R> + Send> LocalWork<R> for InSession<S> {
    fn run_sync(self, inner: &Arc<IsolateInner>) -> Result<R> {
        inner.run_sync(self.0)
    }

    fn run_async(self, inner: &Arc<IsolateInner>) -> impl Future<Output = Result<R>> + Send + 'static
    where
        Self: 'static,
    {
        inner.run_async(self.0)
    }
}

/// An operation on an isolate.
pub(crate) trait IsolateOp: Sized + Send {
    /// What the caller gets.
    type Output: Send + 'static;
    /// The same operation owning all it uses, to run later on another thread.
    type Owned: IsolateOp<Output = Self::Output> + 'static;

    fn into_owned(self) -> Result<Self::Owned>;
    /// What it does on a locked isolate of this process.
    fn local(self) -> impl LocalWork<Self::Output>;
    /// Its request to the worker an isolate lives in. Borrowed: the operation, and the
    /// handles it holds, live until the reply is read (the last clone of a handle, dropped,
    /// releases it in the worker, which would otherwise happen before the request runs).
    fn request(&self, remote: &Arc<RemoteIsolate>) -> Result<Op>;
    /// Reads the worker's reply.
    fn reply(&self, reply: Reply, isolate: &Isolate) -> Result<Self::Output>;
}

impl Isolate {
    /// Runs `op` on the calling thread.
    pub(crate) fn call<O: IsolateOp>(&self, op: O) -> Result<O::Output> {
        match &self.backend {
            Backend::Local(inner) => op.local().run_sync(inner),
            Backend::Remote(remote) => {
                let reply = remote.request(op.request(remote)?)?;
                op.reply(reply, self)
            }
        }
    }

    /// Queues `op`; the future of its result.
    pub(crate) fn call_async<O: IsolateOp>(&self, op: O) -> Operation<O::Output> {
        // Owned either way: it runs (or waits for its reply) after the caller's data is gone.
        let op = match op.into_owned() {
            Ok(op) => op,
            Err(e) => return Operation::failed(e),
        };
        match &self.backend {
            Backend::Local(inner) => Operation::new(op.local().run_async(inner)),
            Backend::Remote(remote) => {
                let sent = remote.request_async_with(op.request(remote));
                let isolate = self.clone();
                // The operation (and the handles it holds) lives until its reply is read.
                Operation::new(async move {
                    let reply = sent.await?;
                    op.reply(reply, &isolate)
                })
            }
        }
    }
}
