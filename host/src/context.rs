//! [`Context`]: a global object in an isolate, where code is evaluated.

use std::borrow::Borrow;
use std::sync::Arc;

use crate::console::Console;
use crate::data::{ConsoleLevel, EvalOptions, Key, Transfer};
use crate::error::Result;
use crate::handle::HandleRef;
use crate::isolate::{Backend, Isolate, IsolateInner, Operation, Session, Slot};
use crate::process::protocol::Op;
use crate::process::RemoteIsolate;
use crate::run::{self, Body, Finish, JsRun, Limits};
use crate::script;
use crate::transfer::{Arg, Fallback, FromJs, IntoArgs, IntoJs, Rule, all_converted, read_out, remote_args};
use crate::value::js;

impl EvalOptions {
    pub(crate) fn limits(&self) -> Limits {
        Limits { timeout: self.timeout, await_promise: self.promise }
    }
}

/// Options for [`Isolate::create_context_with`].
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct ContextOptions {
    /// Gives the context a `console` object (`log`, `info`, `debug`, `warn`, `error`, `trace`)
    /// whose output goes to this sink. Without it the context has no `console`.
    #[allow(clippy::type_complexity)] // spelled out: what the closure given to `console` becomes
    pub console: Option<Arc<dyn Fn(ConsoleLevel, &str) + Send + Sync>>,
}

impl ContextOptions {
    /// Sends `console.*` output to `sink`.
    pub fn console(mut self, sink: impl Fn(ConsoleLevel, &str) + Send + Sync + 'static) -> Self {
        self.console = Some(Arc::new(sink));
        self
    }
}

/// A context in an isolate: a global object with the ECMAScript built-ins and nothing from
/// the host (no `require`, `process`, `fetch`; a `console` only when asked for).
///
/// `Context` is a handle (`Clone + Send + Sync`); the context is released when the last
/// handle is dropped or [`release`](Context::release) is called.
#[derive(Clone)]
pub struct Context {
    handle: Arc<HandleRef>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("id", &self.handle.id).finish()
    }
}

/// Creates a context in a locked isolate and returns its handle id.
pub(crate) fn create(session: &mut Session<'_>, options: &ContextOptions) -> Result<u64> {
    let inner = session.inner;
    v8::scope!(let scope, &mut *session.isolate);
    let context = v8::Context::new(scope, Default::default());
    let scope = &mut v8::ContextScope::new(scope, context);
    if let Some(sink) = &options.console {
        Console::install(scope, inner, sink.clone())?;
    }
    Ok(inner.insert(Slot::Context(v8::Global::new(scope, context))))
}

impl Context {
    pub(crate) fn from_id(isolate: Isolate, id: u64) -> Context {
        Context { handle: Arc::new(HandleRef::new(isolate, id)) }
    }

    pub(crate) fn id(&self) -> u64 {
        self.handle.id
    }

    /// The isolate this context belongs to.
    pub fn isolate(&self) -> &Isolate {
        &self.handle.isolate
    }

    /// Evaluates `code` and reads its completion value into `T`: a copy into any
    /// `DeserializeOwned` type, a [`Reference`](crate::Reference), an
    /// [`ExternalCopy`](crate::ExternalCopy), or a dynamic [`Value`](crate::Value) or
    /// [`Transferred`](crate::Transferred), which follow isolated-vm's rule for `eval`:
    /// primitives come back as they are, other objects as `undefined` unless
    /// [`EvalOptions::transfer`] says otherwise.
    ///
    /// ```
    /// # let isolate = ivm::Isolate::new(Default::default())?;
    /// # let context = isolate.create_context()?;
    /// #[derive(serde::Deserialize)]
    /// struct Report { total: u32, names: Vec<String> }
    /// let r: Report = context.eval("({ total: 2, names: ['a', 'b'] })")?;
    /// assert_eq!((r.total, r.names.len()), (2, 2));
    /// # Ok::<(), ivm::Error>(())
    /// ```
    pub fn eval<T: FromJs>(&self, code: &str) -> Result<T> {
        self.eval_with(code, &EvalOptions::default())
    }

    /// [`eval`](Context::eval) with options.
    pub fn eval_with<T: FromJs>(&self, code: &str, options: &EvalOptions) -> Result<T> {
        let id = self.id();
        match &self.isolate().backend {
            Backend::Local(inner) => inner.run_js_sync(eval(id, code, options)),
            Backend::Remote(remote) => remote.read(Ok(Op::Eval { context: id, code: code.to_owned(), run: options.clone(), want: T::want() }), false),
        }
    }

    /// Async form of [`eval_with`](Context::eval_with).
    pub fn eval_async<T: FromJs>(&self, code: impl Into<String>, options: EvalOptions) -> Operation<T> {
        let (id, code) = (self.id(), code.into());
        match &self.isolate().backend {
            Backend::Local(inner) => Operation::new(inner.run_js_async(eval(id, code, options))),
            Backend::Remote(remote) => remote.read_async(Ok(Op::Eval { context: id, code, run: options, want: T::want() }), false),
        }
    }

    /// Runs `code` as the body of a function whose parameters are `$0`, `$1`, ... (`args`, a
    /// tuple of anything [`IntoJs`]) and reads what it `return`s like [`eval`](Context::eval),
    /// except that a dynamic result that is an object fails with `A non-transferable value was
    /// passed` under [`Transfer::Auto`] (isolated-vm's rule for `evalClosure`). `this` is the
    /// context's global object.
    ///
    /// ```
    /// # let isolate = ivm::Isolate::new(Default::default())?;
    /// # let context = isolate.create_context()?;
    /// let sum: f64 = context.eval_closure("return $0 + $1", (1, 2.5), &Default::default())?;
    /// assert_eq!(sum, 3.5);
    /// # Ok::<(), ivm::Error>(())
    /// ```
    pub fn eval_closure<T: FromJs>(&self, code: &str, args: impl IntoArgs, options: &EvalOptions) -> Result<T> {
        let (id, args) = (self.id(), args.into_args());
        match &self.isolate().backend {
            Backend::Local(inner) => inner.run_js_sync(eval_closure(id, code, args, options)),
            Backend::Remote(remote) => remote.read(self.closure_op::<T>(remote, code, &args, options), false),
        }
    }

    /// Async form of [`eval_closure`](Context::eval_closure).
    pub fn eval_closure_async<T: FromJs>(&self, code: impl Into<String>, args: impl IntoArgs, options: EvalOptions) -> Operation<T> {
        let (id, code) = (self.id(), code.into());
        match &self.isolate().backend {
            Backend::Local(inner) => match args.into_args().into_iter().map(Arg::into_owned).collect::<Result<Vec<_>>>() {
                Ok(args) => Operation::new(inner.run_js_async(eval_closure(id, code, args, options))),
                Err(e) => Operation::new(std::future::ready(Err(e))),
            },
            Backend::Remote(remote) => remote.read_async(self.closure_op::<T>(remote, &code, &args.into_args(), &options), false),
        }
    }

    fn closure_op<T: FromJs>(&self, remote: &Arc<RemoteIsolate>, code: &str, args: &[Arg<'_>], options: &EvalOptions) -> Result<Op> {
        Ok(Op::EvalClosure {
            context: self.id(),
            code: code.to_owned(),
            args: remote_args(args, remote)?,
            run: options.clone(),
            want: T::want(),
        })
    }

    /// Reads a property of the global object, like [`Reference::get`](crate::Reference::get).
    pub fn get_global<T: FromJs>(&self, name: &str) -> Result<T> {
        let id = self.id();
        match &self.isolate().backend {
            Backend::Local(inner) => inner.run_sync(|s| global_get(s, id, name)),
            Backend::Remote(remote) => remote.read(Ok(Op::GlobalGet { context: id, name: name.to_owned(), want: T::want() }), false),
        }
    }

    /// Sets a property of the global object to `value` (anything [`IntoJs`]: a copy of
    /// `Serialize` data, e.g. `context.set_global("config", &config)`, a
    /// [`Callback`](crate::Callback), ...). Setters are not run: the property is (re)defined
    /// as a data property.
    pub fn set_global(&self, name: &str, value: impl IntoJs) -> Result<()> {
        let (id, value) = (self.id(), value.into_arg());
        match &self.isolate().backend {
            Backend::Local(inner) => inner.run_sync(|s| global_set(s, id, name, &value)),
            Backend::Remote(remote) => {
                let op = value.to_remote(remote).map(|value| Op::GlobalSet { context: id, name: name.to_owned(), value });
                remote.run(op)
            }
        }
    }

    /// Releases the context. Later calls on it fail with `Context is released`. Returns
    /// whether it was still held.
    pub fn release(&self) -> bool {
        self.handle.release()
    }
}

/// `code` run as a script in context `id`.
/// (`options` is borrowed by a blocking call, owned by an async one.)
fn eval<T: FromJs, C: AsRef<str>, O: Borrow<EvalOptions>>(
    id: u64,
    code: C,
    options: O,
) -> JsRun<impl Body + use<T, C, O>, impl Finish<T> + use<T, C, O>> {
    let (limits, rule) = (options.borrow().limits(), Rule::new(options.borrow().transfer, Fallback::Undefined));
    JsRun::new(
        id,
        limits,
        move |scope: &mut v8::PinScope<'_, '_>, _: &Arc<IsolateInner>| {
            let script = script::compile_in_context(scope, code.as_ref(), &options.borrow().origin)?;
            script.run(scope).ok_or_else(js::threw)
        },
        move |scope: &mut v8::PinScope<'_, '_>, inner: &Arc<IsolateInner>, result| read_out(scope, inner, result, rule),
    )
}

/// `code` run as the body of a function of `$0, $1, ...` in context `id`.
fn eval_closure<'a, T: FromJs, C: AsRef<str>, O: Borrow<EvalOptions>>(
    id: u64,
    code: C,
    args: Vec<Arg<'a>>,
    options: O,
) -> JsRun<impl Body + use<'a, T, C, O>, impl Finish<T> + use<'a, T, C, O>> {
    let (limits, rule) = (options.borrow().limits(), Rule::new(options.borrow().transfer, Fallback::Throw));
    JsRun::new(
        id,
        limits,
        move |scope: &mut v8::PinScope<'_, '_>, inner: &Arc<IsolateInner>| {
            let function = script::compile_function(scope, code.as_ref(), args.len(), &options.borrow().origin)?;
            all_converted(None, &args)?;
            let mut argv = Vec::with_capacity(args.len());
            for arg in &args {
                argv.push(arg.to_js(scope, inner)?);
            }
            let global = scope.get_current_context().global(scope);
            function.call(scope, global.into(), &argv).ok_or_else(js::threw)
        },
        move |scope: &mut v8::PinScope<'_, '_>, inner: &Arc<IsolateInner>, result| read_out(scope, inner, result, rule),
    )
}

fn global_get<T: FromJs>(session: &mut Session<'_>, id: u64, name: &str) -> Result<T> {
    let inner = session.inner.clone();
    run::run_in_context(
        session,
        id,
        Limits::default(),
        |scope| {
            let global = scope.get_current_context().global(scope);
            let key = v8::String::new(scope, name).ok_or_else(js::threw)?;
            global.get(scope, key.into()).ok_or_else(js::threw)
        },
        |scope, value| read_out(scope, &inner, value, Rule::new(Transfer::Auto, Fallback::Reference)),
    )
}

fn global_set(session: &mut Session<'_>, id: u64, name: &str, value: &Arg<'_>) -> Result<()> {
    let inner = session.inner.clone();
    run::run_in_context(
        session,
        id,
        Limits::default(),
        |scope| {
            let global = scope.get_current_context().global(scope);
            // As `Reference::set`: a property JavaScript made non-configurable is `Set failed`.
            crate::reference::define(scope, &inner, global.into(), &Key::from(name), value)?;
            Ok(v8::undefined(scope).into())
        },
        |_, _| Ok(()),
    )
}
