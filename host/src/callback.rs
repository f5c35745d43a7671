//! [`Callback`]: Rust closures as JavaScript functions (host functions).
//!
//! Arguments are copied out of the isolate and handed to the closure through serde; its
//! result is copied back in. Four call styles, as in isolated-vm:
//!
//! - [`Callback::new`]: synchronous; JavaScript waits for the closure.
//! - [`Callback::new_async`]: the closure returns a future; JavaScript gets a promise at once,
//!   settled when the future completes. The future runs on ivm's worker pool.
//! - [`Callback::new_blocking`]: the closure returns a future and JavaScript *blocks* until it
//!   completes (isolated-vm's `applySyncPromise`). The isolate is released while it waits, so
//!   the future may itself use the isolate; the operation's timeout still holds.
//! - [`Callback::new_ignored`]: fire-and-forget; JavaScript gets `undefined` at once and the
//!   closure runs on the worker pool.
//!
//! A closure may call back into isolates (the same one, or others); see
//! `isolate::nesting` for how that works without deadlocks.

use std::collections::VecDeque;
use std::ffi::c_void;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::task::{Context as TaskContext, Poll, Wake, Waker};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::engine::tasks;
use crate::error::{Error, Result};
use crate::exception;
use crate::isolate::{IsolateInner, nesting};
use crate::value::{self, Value, js};

type BoxFuture = Pin<Box<dyn Future<Output = Result<Value>> + Send>>;

enum Call {
    Sync(Box<dyn Fn(Value) -> Result<Value> + Send + Sync>),
    Async(Box<dyn Fn(Value) -> BoxFuture + Send + Sync>),
    Blocking(Box<dyn Fn(Value) -> BoxFuture + Send + Sync>),
    Ignored(Arc<dyn Fn(Value) + Send + Sync>),
}

/// A Rust closure that becomes a JavaScript function when it is put into an isolate (e.g.
/// with [`Context::set_global`](crate::Context::set_global)).
///
/// The closure takes its arguments as one serde value: a tuple (`(u32, String)`), a
/// `Vec<T>`, or [`Value`] for the raw list. Read into a tuple, missing arguments are
/// `undefined` (so trailing `Option`s are optional) and extra ones are ignored. An `Err` returned by the closure is thrown in JavaScript, with
/// its class when it is an [`Error::Exception`] (see [`Error::js`]).
///
/// ```
/// use ivm::{Callback, Isolate};
/// let isolate = Isolate::new(Default::default())?;
/// let context = isolate.create_context()?;
/// context.set_global("add", Callback::new(|(a, b): (f64, f64)| Ok(a + b)))?;
/// assert_eq!(context.eval::<f64>("add(1, 2)")?, 3.0);
/// # Ok::<(), ivm::Error>(())
/// ```
#[derive(Clone)]
pub struct Callback {
    host: Arc<HostFn>,
}

struct HostFn {
    name: String,
    call: Call,
}

impl std::fmt::Debug for Callback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Callback").field("name", &self.host.name).finish_non_exhaustive()
    }
}

fn args_of<A: DeserializeOwned + 'static>(args: Value) -> Result<A> {
    let result = match args {
        Value::Array(list) if std::any::TypeId::of::<A>() != std::any::TypeId::of::<Value>() => A::deserialize(Args(list)),
        other => value::from_value(other),
    };
    result.map_err(|e| Error::js("TypeError", e.message().to_owned()))
}

/// A host function's argument list, read as JavaScript reads one: into a tuple, missing
/// arguments are `undefined` and extra ones are ignored.
struct Args(Vec<Value>);

impl<'de> serde::Deserializer<'de> for Args {
    type Error = Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        Value::Array(self.0).deserialize_any(visitor)
    }

    fn deserialize_tuple<V: serde::de::Visitor<'de>>(mut self, len: usize, visitor: V) -> Result<V::Value> {
        self.0.resize(len, Value::Undefined);
        Value::Array(self.0).deserialize_tuple(len, visitor)
    }

    /// `()` takes no arguments, and ignores any it is given.
    fn deserialize_unit<V: serde::de::Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit_struct newtype_struct seq tuple_struct map struct enum identifier ignored_any
    }
}

fn boxed<A, R, F, Fut>(f: F) -> Box<dyn Fn(Value) -> BoxFuture + Send + Sync>
where
    A: DeserializeOwned + 'static,
    R: Serialize,
    F: Fn(A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R>> + Send + 'static,
{
    Box::new(move |args| match args_of::<A>(args) {
        Ok(args) => {
            let future = f(args);
            Box::pin(async move { value::to_value(&future.await?) })
        }
        Err(e) => Box::pin(std::future::ready(Err(e))),
    })
}

impl Callback {
    /// A synchronous host function.
    pub fn new<A, R, F>(f: F) -> Callback
    where
        A: DeserializeOwned + 'static,
        R: Serialize,
        F: Fn(A) -> Result<R> + Send + Sync + 'static,
    {
        Callback::from_call(Call::Sync(Box::new(move |args| value::to_value(&f(args_of(args)?)?))))
    }

    /// An async host function: JavaScript gets a promise that settles with the future's output.
    ///
    /// ```
    /// use ivm::{Callback, EvalOptions, Isolate};
    /// let isolate = Isolate::new(Default::default())?;
    /// let context = isolate.create_context()?;
    /// context.set_global("double", Callback::new_async(|(n,): (u32,)| async move { Ok(n * 2) }))?;
    /// let n: u32 = context.eval_with("double(21)", &EvalOptions::default().promise())?;
    /// assert_eq!(n, 42);
    /// # Ok::<(), ivm::Error>(())
    /// ```
    pub fn new_async<A, R, F, Fut>(f: F) -> Callback
    where
        A: DeserializeOwned + 'static,
        R: Serialize,
        F: Fn(A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R>> + Send + 'static,
    {
        Callback::from_call(Call::Async(boxed(f)))
    }

    /// An async host function that JavaScript calls synchronously: the call blocks until the
    /// future completes (isolated-vm's `applySyncPromise`), within the operation's timeout.
    pub fn new_blocking<A, R, F, Fut>(f: F) -> Callback
    where
        A: DeserializeOwned + 'static,
        R: Serialize,
        F: Fn(A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R>> + Send + 'static,
    {
        Callback::from_call(Call::Blocking(boxed(f)))
    }

    /// A fire-and-forget host function: JavaScript gets `undefined` at once; the closure runs
    /// later on the worker pool and whatever it returns is dropped.
    pub fn new_ignored<A, F>(f: F) -> Callback
    where
        A: DeserializeOwned + 'static,
        F: Fn(A) + Send + Sync + 'static,
    {
        Callback::from_call(Call::Ignored(Arc::new(move |args| {
            if let Ok(args) = value::from_value(args) {
                f(args)
            }
        })))
    }

    /// Sets the function's `name` as JavaScript sees it.
    pub fn name(self, name: impl Into<String>) -> Callback {
        let host = Arc::try_unwrap(self.host).unwrap_or_else(|_| panic!("name() is called on a fresh Callback"));
        Callback { host: Arc::new(HostFn { name: name.into(), ..host }) }
    }

    fn from_call(call: Call) -> Callback {
        Callback { host: Arc::new(HostFn { name: String::new(), call }) }
    }

    /// Makes the JavaScript function in the current context of a locked isolate.
    pub(crate) fn to_js<'s>(
        &self,
        scope: &mut v8::PinScope<'s, '_>,
        inner: &Arc<IsolateInner>,
    ) -> Result<v8::Local<'s, v8::Value>> {
        let installed = Arc::new(Installed { host: self.host.clone(), isolate: Arc::downgrade(inner) });
        let data = v8::External::new(scope, Arc::as_ptr(&installed) as *mut c_void);
        // The function's data points at `installed`; the isolate keeps it alive.
        inner.keep_alive(installed);
        let function = v8::Function::builder(trampoline)
            .data(data.into())
            .constructor_behavior(v8::ConstructorBehavior::Throw)
            .build(scope)
            .ok_or_else(js::threw)?;
        if let Some(name) = v8::String::new(scope, &self.host.name) {
            function.set_name(name);
        }
        Ok(function.into())
    }
}

/// A host function installed in one isolate.
struct Installed {
    host: Arc<HostFn>,
    /// Weak: the isolate owns this, not the other way round.
    isolate: Weak<IsolateInner>,
}

fn trampoline<'s>(
    scope: &mut v8::PinScope<'s, '_>,
    args: v8::FunctionCallbackArguments<'s>,
    mut rv: v8::ReturnValue<'s, v8::Value>,
) {
    let Ok(data) = v8::Local::<v8::External>::try_from(args.data()) else { return };
    // SAFETY: `data` points at the `Installed` the isolate keeps alive (see `to_js`).
    let installed = unsafe { &*(data.value() as *const Installed) };
    let Some(isolate) = installed.isolate.upgrade() else { return };
    let mut list = Vec::with_capacity(args.length().max(0) as usize);
    for i in 0..args.length() {
        match js::copy_out(scope, args.get(i)) {
            Ok(v) => list.push(v),
            Err(e) => return throw_unless_pending(scope, &e),
        }
    }
    let list = Value::Array(list);
    let result = match &installed.host.call {
        Call::Sync(f) => guarded(|| f(list)),
        // When the operation's timeout fires, the wait ends with a Timeout error, thrown here;
        // the termination the timeout requested follows, so the script cannot go on.
        Call::Blocking(f) => block_on_released(&isolate, || f(list)),
        Call::Async(f) => {
            let Some(resolver) = v8::PromiseResolver::new(scope) else { return };
            rv.set(resolver.get_promise(scope).into());
            let context = scope.get_current_context();
            let pending = PendingCall::new(&isolate, v8::Global::new(scope, context), v8::Global::new(scope, resolver));
            match guarded(|| Ok(f(list))) {
                Ok(future) => tasks::spawn(async move { pending.complete(future.await) }),
                Err(e) => pending.complete(Err(e)),
            }
            return;
        }
        Call::Ignored(f) => {
            let f = f.clone();
            tasks::spawn_blocking(move || {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(list)));
            });
            return;
        }
    };
    match result.and_then(|v| js::copy_in(scope, &v)) {
        Ok(v) => rv.set(v),
        Err(e) => throw_unless_pending(scope, &e),
    }
}

/// Throws `error`, unless JavaScript already threw (a getter while copying arguments).
fn throw_unless_pending(scope: &mut v8::PinScope<'_, '_>, error: &Error) {
    if matches!(error, Error::Exception(e) if e.name.is_empty() && e.message.is_empty()) {
        return;
    }
    exception::throw(scope, error);
}

/// Runs host code; a panic becomes an error instead of unwinding into V8.
fn guarded<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err(Error::js("Error", "A host function panicked")))
}

/// Starts the future and polls it on this thread until it completes, with the isolate
/// released (so other threads, and the future itself, can use it) and the thread marked as
/// waiting in the isolate (so async operations that would queue behind it fail fast).
fn block_on_released(isolate: &Arc<IsolateInner>, start: impl FnOnce() -> BoxFuture) -> Result<Value> {
    let Some(frame) = nesting::current() else { return Err(Error::js("Error", "not inside an isolate")) };
    let waits = isolate.blocking_waits.clone();
    let generation = waits.generation();
    nesting::step_out(frame, || {
        let _waiting = nesting::waiting_in(frame);
        let mut future = guarded(|| Ok(start()))?;
        let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
        let mut cx = TaskContext::from_waker(&waker);
        loop {
            if let Poll::Ready(result) = guarded(|| Ok(future.as_mut().poll(&mut cx))).and_then(|p| match p {
                Poll::Ready(r) => Ok(Poll::Ready(r)),
                Poll::Pending => Ok(Poll::Pending),
            })? {
                return result;
            }
            if waits.generation() != generation {
                // The operation's timeout fired (or the isolate is being disposed): stop
                // waiting; the termination takes over once JavaScript resumes.
                return Err(Error::Timeout { stack: String::new() });
            }
            waits.park(Duration::from_millis(50));
        }
    })
}

struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Wakes threads blocked in [`Callback::new_blocking`] functions of an isolate when one of
/// its operations times out or it is disposed.
#[derive(Default)]
pub(crate) struct BlockingWaits {
    generation: AtomicUsize,
    waiters: Mutex<Vec<std::thread::Thread>>,
}

impl BlockingWaits {
    fn generation(&self) -> usize {
        self.generation.load(Ordering::SeqCst)
    }

    fn park(&self, at_most: Duration) {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner()).push(std::thread::current());
        std::thread::park_timeout(at_most);
        let me = std::thread::current().id();
        self.waiters.lock().unwrap_or_else(|e| e.into_inner()).retain(|t| t.id() != me);
    }

    /// Makes every current wait give up.
    pub(crate) fn abort(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        for waiter in self.waiters.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            waiter.unpark();
        }
    }
}

/// Results of async host functions, waiting to settle their promises in the isolate.
#[derive(Default)]
pub(crate) struct Completions {
    ready: Mutex<VecDeque<Completion>>,
    arrived: Condvar,
    /// Async host calls whose futures have not completed yet.
    outstanding: AtomicUsize,
}

struct Completion {
    context: v8::Global<v8::Context>,
    resolver: v8::Global<v8::PromiseResolver>,
    result: Result<Value>,
}

impl Completions {
    /// Whether a promise of this isolate may still be settled by a host function.
    pub(crate) fn outstanding(&self) -> bool {
        self.outstanding.load(Ordering::SeqCst) > 0
    }

    /// Waits up to `at_most` for a completion to arrive.
    pub(crate) fn wait(&self, at_most: Duration) {
        let ready = self.ready.lock().unwrap_or_else(|e| e.into_inner());
        if ready.is_empty() {
            drop(self.arrived.wait_timeout(ready, at_most));
        }
    }

    /// Settles the promises of the completions that have arrived, then runs microtasks.
    pub(crate) fn settle(&self, scope: &mut v8::PinScope<'_, '_, ()>) {
        loop {
            let Some(c) = self.ready.lock().unwrap_or_else(|e| e.into_inner()).pop_front() else { break };
            let context = v8::Local::new(scope, &c.context);
            let scope = &mut v8::ContextScope::new(scope, context);
            let resolver = v8::Local::new(scope, &c.resolver);
            match c.result.and_then(|v| js::copy_in(scope, &v)) {
                Ok(value) => resolver.resolve(scope, value),
                Err(e) => {
                    let reason = exception::to_js(scope, &e);
                    resolver.reject(scope, reason)
                }
            };
        }
        scope.perform_microtask_checkpoint();
    }
}

/// An async host call in flight. Completing it (or dropping it, if its future panicked or was
/// lost) queues the promise's settlement on the isolate.
struct PendingCall {
    isolate: Weak<IsolateInner>,
    settle: Option<(v8::Global<v8::Context>, v8::Global<v8::PromiseResolver>)>,
}

impl PendingCall {
    fn new(isolate: &Arc<IsolateInner>, context: v8::Global<v8::Context>, resolver: v8::Global<v8::PromiseResolver>) -> Self {
        isolate.completions.outstanding.fetch_add(1, Ordering::SeqCst);
        PendingCall { isolate: Arc::downgrade(isolate), settle: Some((context, resolver)) }
    }

    fn complete(mut self, result: Result<Value>) {
        self.finish(result);
    }

    fn finish(&mut self, result: Result<Value>) {
        let Some((context, resolver)) = self.settle.take() else { return };
        let Some(isolate) = self.isolate.upgrade() else { return };
        let completions = &isolate.completions;
        completions.ready.lock().unwrap_or_else(|e| e.into_inner()).push_back(Completion { context, resolver, result });
        completions.outstanding.fetch_sub(1, Ordering::SeqCst);
        completions.arrived.notify_all();
        // If no operation is waiting on the isolate, an async job applies it.
        isolate.post(|session| {
            v8::scope!(let scope, &mut *session.isolate);
            session.inner.completions.settle(scope);
        });
    }
}

impl Drop for PendingCall {
    fn drop(&mut self) {
        self.finish(Err(Error::js("Error", "A host function panicked")));
    }
}
