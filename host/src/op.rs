//! Operations on an isolate, each written once: how it runs on a locked isolate of this
//! process, its request to a worker, and how the worker's reply is read. `Isolate::call` and
//! `call_async` are the only places that choose between the two.

use std::sync::Arc;

use crate::error::Result;
use crate::isolate::{Backend, Isolate, Operation};
use crate::process::RemoteIsolate;
use crate::process::protocol::{Op, Reply};
use crate::run::{Body, Finish, JsRun};

/// An operation on an isolate that runs JavaScript.
pub(crate) trait IsolateOp: Sized + Send {
    /// What the caller gets.
    type Output: Send + 'static;
    /// The same operation owning all it uses, to run later on another thread.
    type Owned: IsolateOp<Output = Self::Output> + 'static;

    fn into_owned(self) -> Result<Self::Owned>;
    /// Its run on a locked isolate of this process.
    fn local(self) -> JsRun<impl Body + Send, impl Finish<Self::Output> + Send>;
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
            Backend::Local(inner) => inner.run_js_sync(op.local()),
            Backend::Remote(remote) => {
                let reply = remote.request(op.request(remote)?)?;
                op.reply(reply, self)
            }
        }
    }

    /// Queues `op`; the future of its result.
    pub(crate) fn call_async<O: IsolateOp>(&self, op: O) -> Operation<O::Output> {
        match &self.backend {
            Backend::Local(inner) => match op.into_owned() {
                Ok(op) => Operation::new(inner.run_js_async(op.local())),
                Err(e) => Operation::new(std::future::ready(Err(e))),
            },
            Backend::Remote(remote) => match op.into_owned() {
                Ok(op) => {
                    let sent = remote.request_async_with(op.request(remote));
                    let isolate = self.clone();
                    // The operation (and the handles it holds) lives until its reply is read.
                    Operation::new(async move {
                        let reply = sent.await?;
                        op.reply(reply, &isolate)
                    })
                }
                Err(e) => Operation::failed(e),
            },
        }
    }
}
