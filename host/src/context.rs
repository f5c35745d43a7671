//! [`Context`]: a global object in an isolate, where code is evaluated.

use std::borrow::{Borrow, Cow};
use std::marker::PhantomData;
use std::sync::Arc;

use crate::console::Console;
use crate::data::{ConsoleLevel, EvalOptions, Key, Transfer};
use crate::error::Result;
use crate::handle::HandleRef;
use crate::isolate::inspector::Agent;
use crate::isolate::{Isolate, IsolateInner, Operation, Session, Slot};
use crate::op::{InSession, IsolateOp, LocalWork};
use crate::process::protocol::{Op, Reply};
use crate::process::RemoteIsolate;
use crate::run::{Body, Finish, JsRun, Limits};
use crate::reference::Reference;
use crate::script;
use crate::transfer::{Arg, Fallback, FromJs, IntoArgs, IntoJs, Rule, all_converted, read_out, read_remote, remote_args};
use crate::js;

/// Options for [`Isolate::create_context_with`].
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct ContextOptions {
    /// Gives the context a `console` object (`log`, `info`, `debug`, `warn`, `error`, `trace`)
    /// whose output goes to this sink. Without it the context has no `console`.
    #[allow(clippy::type_complexity)] // spelled out: what the closure given to `console` becomes
    pub console: Option<Arc<dyn Fn(ConsoleLevel, &str) + Send + Sync>>,
    /// The context's name in the inspector (default `context N`, N its number in the
    /// isolate).
    pub name: Option<String>,
}

impl ContextOptions {
    /// Names the context in the inspector.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

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
    let id = inner.insert(Slot::Context(v8::Global::new(scope, context)));
    if let Some(agent) = Agent::of(scope) {
        agent.context_created(context, options.name.as_deref().unwrap_or(&format!("context {id}")));
    }
    Ok(id)
}

impl Isolate {
    /// Creates a context (a global object and its built-ins) in this isolate.
    pub fn create_context(&self) -> Result<Context> {
        self.create_context_with(ContextOptions::default())
    }

    /// Creates a context with options (e.g. a `console`).
    pub fn create_context_with(&self, options: ContextOptions) -> Result<Context> {
        self.call(CreateContext { options })
    }

    /// Async form of [`create_context_with`](Isolate::create_context_with).
    pub fn create_context_async(&self, options: ContextOptions) -> Operation<Context> {
        self.call_async(CreateContext { options })
    }
}

/// A new context (isolate `create_context`).
struct CreateContext {
    options: ContextOptions,
}

impl IsolateOp for CreateContext {
    type Output = Context;
    type Owned = CreateContext;

    fn into_owned(self) -> Result<CreateContext> {
        Ok(self)
    }

    fn local(self) -> impl LocalWork<Context> {
        InSession(move |s: &mut Session<'_>| {
            let id = create(s, &self.options)?;
            Ok(Context::from_id(Isolate::local(s.inner.clone()), id))
        })
    }

    fn request(&self, remote: &Arc<RemoteIsolate>) -> Result<Op> {
        Ok(remote.create_context(self.options.console.clone(), self.options.name.clone()))
    }

    fn reply(&self, reply: Reply, isolate: &Isolate) -> Result<Context> {
        Ok(Context::from_id(isolate.clone(), reply.id()?))
    }
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
        self.isolate().call(Eval::new(self.id(), Cow::Borrowed(code), Cow::Borrowed(options)))
    }

    /// Async form of [`eval_with`](Context::eval_with).
    pub fn eval_async<T: FromJs>(&self, code: impl Into<String>, options: EvalOptions) -> Operation<T> {
        self.isolate().call_async(Eval::new(self.id(), Cow::Owned(code.into()), Cow::Owned(options)))
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
        self.isolate().call(EvalClosure::new(self.id(), Cow::Borrowed(code), args.into_args(), Cow::Borrowed(options)))
    }

    /// Async form of [`eval_closure`](Context::eval_closure).
    pub fn eval_closure_async<T: FromJs>(&self, code: impl Into<String>, args: impl IntoArgs, options: EvalOptions) -> Operation<T> {
        self.isolate().call_async(EvalClosure::new(self.id(), Cow::Owned(code.into()), args.into_args(), Cow::Owned(options)))
    }

    /// Reads a property of the global object, like [`Reference::get`](crate::Reference::get).
    pub fn get_global<T: FromJs>(&self, name: &str) -> Result<T> {
        self.isolate().call(GlobalGet::new(self.id(), Cow::Borrowed(name)))
    }

    /// Async form of [`get_global`](Context::get_global).
    pub fn get_global_async<T: FromJs>(&self, name: impl Into<String>) -> Operation<T> {
        self.isolate().call_async(GlobalGet::new(self.id(), Cow::Owned(name.into())))
    }

    /// Sets a property of the global object to `value` (anything [`IntoJs`]: a copy of
    /// `Serialize` data, e.g. `context.set_global("config", &config)`, a
    /// [`Callback`](crate::Callback), ...). Setters are not run: the property is (re)defined
    /// as a data property.
    pub fn set_global(&self, name: &str, value: impl IntoJs) -> Result<()> {
        self.isolate().call(GlobalSet { context: self.id(), name: Cow::Borrowed(name), value: value.into_arg() })
    }

    /// Async form of [`set_global`](Context::set_global).
    pub fn set_global_async(&self, name: impl Into<String>, value: impl IntoJs) -> Operation<()> {
        self.isolate().call_async(GlobalSet { context: self.id(), name: Cow::Owned(name.into()), value: value.into_arg() })
    }

    /// Releases the context. Later calls on it fail with `Context is released`. Returns
    /// whether it was still held.
    pub fn release(&self) -> bool {
        self.handle.release()
    }
}

/// `code` run as a script in a context.
struct Eval<'a, T> {
    context: u64,
    code: Cow<'a, str>,
    options: Cow<'a, EvalOptions>,
    result: PhantomData<fn() -> T>,
}

impl<'a, T> Eval<'a, T> {
    fn new(context: u64, code: Cow<'a, str>, options: Cow<'a, EvalOptions>) -> Self {
        Eval { context, code, options, result: PhantomData }
    }
}

impl<T: FromJs> IsolateOp for Eval<'_, T> {
    type Output = T;
    type Owned = Eval<'static, T>;

    fn into_owned(self) -> Result<Eval<'static, T>> {
        Ok(Eval::new(self.context, Cow::Owned(self.code.into_owned()), Cow::Owned(self.options.into_owned())))
    }

    fn local(self) -> impl LocalWork<T> {
        eval(self.context, self.code, self.options)
    }

    fn request(&self, _: &Arc<RemoteIsolate>) -> Result<Op> {
        Ok(Op::Eval { context: self.context, code: self.code.to_string(), run: self.options.as_ref().clone(), want: T::want() })
    }

    fn reply(&self, reply: Reply, isolate: &Isolate) -> Result<T> {
        read_remote(isolate, reply.out()?, false)
    }
}

/// `code` run as the body of a function of `$0, $1, ...` in a context.
struct EvalClosure<'a, T> {
    context: u64,
    code: Cow<'a, str>,
    args: Vec<Arg<'a>>,
    options: Cow<'a, EvalOptions>,
    result: PhantomData<fn() -> T>,
}

impl<'a, T> EvalClosure<'a, T> {
    fn new(context: u64, code: Cow<'a, str>, args: Vec<Arg<'a>>, options: Cow<'a, EvalOptions>) -> Self {
        EvalClosure { context, code, args, options, result: PhantomData }
    }
}

impl<T: FromJs> IsolateOp for EvalClosure<'_, T> {
    type Output = T;
    type Owned = EvalClosure<'static, T>;

    fn into_owned(self) -> Result<EvalClosure<'static, T>> {
        let args = self.args.into_iter().map(Arg::into_owned).collect::<Result<_>>()?;
        Ok(EvalClosure::new(self.context, Cow::Owned(self.code.into_owned()), args, Cow::Owned(self.options.into_owned())))
    }

    fn local(self) -> impl LocalWork<T> {
        eval_closure(self.context, self.code, self.args, self.options)
    }

    fn request(&self, remote: &Arc<RemoteIsolate>) -> Result<Op> {
        let args = remote_args(&self.args, remote)?;
        Ok(Op::EvalClosure { context: self.context, code: self.code.to_string(), args, run: self.options.as_ref().clone(), want: T::want() })
    }

    fn reply(&self, reply: Reply, isolate: &Isolate) -> Result<T> {
        read_remote(isolate, reply.out()?, false)
    }
}

/// A property of a context's global object, read.
struct GlobalGet<'a, T> {
    context: u64,
    name: Cow<'a, str>,
    result: PhantomData<fn() -> T>,
}

impl<'a, T> GlobalGet<'a, T> {
    fn new(context: u64, name: Cow<'a, str>) -> Self {
        GlobalGet { context, name, result: PhantomData }
    }
}

impl<T: FromJs> IsolateOp for GlobalGet<'_, T> {
    type Output = T;
    type Owned = GlobalGet<'static, T>;

    fn into_owned(self) -> Result<GlobalGet<'static, T>> {
        Ok(GlobalGet::new(self.context, Cow::Owned(self.name.into_owned())))
    }

    fn local(self) -> impl LocalWork<T> {
        let name = self.name;
        JsRun::new(
            self.context,
            Limits::default(),
            move |scope: &mut v8::PinScope<'_, '_>, _: &Arc<IsolateInner>| {
                let global = scope.get_current_context().global(scope);
                let key = v8::String::new(scope, &name).ok_or_else(js::threw)?;
                global.get(scope, key.into()).ok_or_else(js::threw)
            },
            |scope: &mut v8::PinScope<'_, '_>, inner: &Arc<IsolateInner>, value| {
                read_out(scope, inner, value, Rule::new(Transfer::Auto, Fallback::Reference))
            },
        )
    }

    fn request(&self, _: &Arc<RemoteIsolate>) -> Result<Op> {
        Ok(Op::GlobalGet { context: self.context, name: self.name.to_string(), want: T::want() })
    }

    fn reply(&self, reply: Reply, isolate: &Isolate) -> Result<T> {
        read_remote(isolate, reply.out()?, false)
    }
}

/// A property of a context's global object, (re)defined as a data property.
struct GlobalSet<'a> {
    context: u64,
    name: Cow<'a, str>,
    value: Arg<'a>,
}

impl IsolateOp for GlobalSet<'_> {
    type Output = ();
    type Owned = GlobalSet<'static>;

    fn into_owned(self) -> Result<GlobalSet<'static>> {
        Ok(GlobalSet { context: self.context, name: Cow::Owned(self.name.into_owned()), value: self.value.into_owned()? })
    }

    fn local(self) -> impl LocalWork<()> {
        let GlobalSet { context, name, value } = self;
        JsRun::new(
            context,
            Limits::default(),
            move |scope: &mut v8::PinScope<'_, '_>, inner: &Arc<IsolateInner>| {
                let global = scope.get_current_context().global(scope);
                // As `Reference::set`: a property JavaScript made non-configurable is `Set failed`.
                crate::reference::define(scope, inner, global.into(), &Key::from(name.as_ref()), &value)?;
                Ok(v8::undefined(scope).into())
            },
            |_: &mut v8::PinScope<'_, '_>, _: &Arc<IsolateInner>, _| Ok(()),
        )
    }

    fn request(&self, remote: &Arc<RemoteIsolate>) -> Result<Op> {
        Ok(Op::GlobalSet { context: self.context, name: self.name.to_string(), value: self.value.to_remote(remote)? })
    }

    fn reply(&self, reply: Reply, _: &Isolate) -> Result<()> {
        reply.done()
    }
}

/// `code` run as a script in context `id`.
/// (`options` is borrowed by a blocking call, owned by an async one.)
fn eval<T: FromJs, C: AsRef<str>, O: Borrow<EvalOptions>>(
    id: u64,
    code: C,
    options: O,
) -> JsRun<impl Body + use<T, C, O>, impl Finish<T> + use<T, C, O>> {
    let (limits, rule) = (Limits::of(options.borrow()), Rule::new(options.borrow().transfer, Fallback::Undefined));
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
    let (limits, rule) = (Limits::of(options.borrow()), Rule::new(options.borrow().transfer, Fallback::Throw));
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

impl Context {
    /// A reference to the context's global object.
    pub fn global(&self) -> Result<Reference> {
        self.isolate().call(Global { context: self.id() })
    }

    /// Async form of [`global`](Context::global).
    pub fn global_async(&self) -> Operation<Reference> {
        self.isolate().call_async(Global { context: self.id() })
    }
}

/// A context's global object, as a reference.
struct Global {
    context: u64,
}

impl IsolateOp for Global {
    type Output = Reference;
    type Owned = Global;

    fn into_owned(self) -> Result<Global> {
        Ok(self)
    }

    fn local(self) -> impl LocalWork<Reference> {
        JsRun::new(
            self.context,
            Limits::default(),
            |scope: &mut v8::PinScope<'_, '_>, _: &Arc<IsolateInner>| Ok(scope.get_current_context().global(scope).into()),
            |scope: &mut v8::PinScope<'_, '_>, inner: &Arc<IsolateInner>, value| Ok(Reference::create(scope, inner, value, false)),
        )
    }

    fn request(&self, _: &Arc<RemoteIsolate>) -> Result<Op> {
        Ok(Op::Global { context: self.context })
    }

    fn reply(&self, reply: Reply, isolate: &Isolate) -> Result<Reference> {
        read_remote(isolate, reply.out()?, false)
    }
}
