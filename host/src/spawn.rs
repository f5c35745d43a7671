//! [`Spawner`]: where the futures of async host functions run.
//!
//! A host function made inside a tokio runtime runs its futures on that runtime (feature
//! `tokio`, on by default), so they may use tokio's timers, sockets and everything built on
//! them (sqlx, reqwest...) with no setup. Elsewhere they run on ivm's own pool, which needs no
//! runtime but offers no reactor. Any other executor plugs in with [`Spawner::new`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::engine::tasks;

/// A future as a [`Spawner`] receives it.
pub type HostFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Runs host futures: the futures of [`Callback::new_async`](crate::Callback::new_async) and
/// [`Callback::new_blocking`](crate::Callback::new_blocking) functions, and the calls of
/// [`Callback::new_ignored`](crate::Callback::new_ignored) ones.
///
/// ```
/// // An executor of your own: anything that can run a `Send` future to completion.
/// let spawner = ivm::Spawner::new(|future| {
///     std::thread::spawn(move || ivm_test_block_on(future));
/// });
/// let lookup = ivm::Callback::new_async(|(n,): (u32,)| async move { Ok(n * 2) }).spawner(spawner);
/// # drop(lookup);
/// # fn ivm_test_block_on(f: ivm::HostFuture) { let _ = f; }
/// ```
#[derive(Clone)]
pub struct Spawner(Kind);

#[derive(Clone)]
enum Kind {
    /// ivm's pool. A blocking host function's future is polled on the thread that waits.
    Ivm,
    Custom(Arc<dyn Fn(HostFuture) + Send + Sync>),
}

impl Spawner {
    /// A spawner that hands each future to `spawn`, which must run it to completion (a future
    /// it drops instead rejects the host function's promise).
    pub fn new(spawn: impl Fn(HostFuture) + Send + Sync + 'static) -> Spawner {
        Spawner(Kind::Custom(Arc::new(spawn)))
    }

    /// ivm's own pool: futures are polled on its threads whenever they are woken. It has no
    /// I/O reactor or timers: futures that need a runtime's must run on that runtime.
    pub fn ivm() -> Spawner {
        Spawner(Kind::Ivm)
    }

    /// The tokio runtime behind `handle`.
    #[cfg(feature = "tokio")]
    pub fn tokio(handle: tokio::runtime::Handle) -> Spawner {
        Spawner::new(move |future| drop(handle.spawn(future)))
    }

    /// The spawner of the calling thread: the tokio runtime it is inside (feature `tokio`), else
    /// [`ivm`](Spawner::ivm)'s pool. This is what a [`Callback`](crate::Callback) uses unless
    /// told otherwise.
    pub fn current() -> Spawner {
        #[cfg(feature = "tokio")]
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            return Spawner::tokio(handle);
        }
        Spawner::ivm()
    }

    /// Runs `future` to completion.
    pub(crate) fn spawn(&self, future: impl Future<Output = ()> + Send + 'static) {
        match &self.0 {
            Kind::Ivm => tasks::spawn(future),
            Kind::Custom(spawn) => spawn(Box::pin(future)),
        }
    }

    /// Runs `work`, which may take its time.
    pub(crate) fn spawn_blocking(&self, work: impl FnOnce() + Send + 'static) {
        match &self.0 {
            Kind::Ivm => tasks::spawn_blocking(work),
            Kind::Custom(spawn) => spawn(Box::pin(async move { work() })),
        }
    }

    /// Whether futures are best polled by the thread that waits for them (ivm's pool: a
    /// blocking host function's thread has nothing else to do).
    pub(crate) fn polls_in_place(&self) -> bool {
        matches!(self.0, Kind::Ivm)
    }
}

impl std::fmt::Debug for Spawner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Kind::Ivm => "Spawner::ivm",
            Kind::Custom(_) => "Spawner::custom",
        })
    }
}
