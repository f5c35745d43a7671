//! [`Script`]: code compiled once in an isolate, run in any of its contexts.

use std::borrow::Cow;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::code_cache::{CacheRequest, Kind};
use crate::data::{CacheOutcome, CachedData};
use crate::context::Context;
use crate::data::{CompileOptions, EvalOptions, ScriptOrigin};
use crate::error::{Error, Result};
use crate::handle::HandleRef;
use crate::isolate::{Isolate, IsolateInner, Operation, Session, Slot};
use crate::op::{InSession, IsolateOp, LocalWork};
use crate::process::RemoteIsolate;
use crate::process::protocol::{Op, Reply};
use crate::run::{Body, Finish, JsRun, Limits};
use crate::transfer::{Fallback, FromJs, Rule, read_out, read_remote};
use crate::js::{self, origin, source_string};

/// A compiled script, runnable in any context of the isolate that compiled it.
///
/// ```
/// let isolate = ivm::Isolate::new(Default::default())?;
/// let script = isolate.compile_script("x * 2", &ivm::CompileOptions::default())?;
/// let context = isolate.create_context()?;
/// context.set_global("x", &21)?;
/// let n: i32 = script.run(&context, &Default::default())?;
/// assert_eq!(n, 42);
/// # Ok::<(), ivm::Error>(())
/// ```
#[derive(Clone)]
pub struct Script {
    handle: Arc<HandleRef>,
    cache: Arc<CacheOutcome>,
}

impl std::fmt::Debug for Script {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Script").field("id", &self.handle.id).finish()
    }
}

impl Script {
    pub(crate) fn from_id(isolate: Isolate, (id, cache): (u64, CacheOutcome)) -> Script {
        Script { handle: Arc::new(HandleRef::new(isolate, id)), cache: Arc::new(cache) }
    }

    /// The isolate the script was compiled in.
    pub fn isolate(&self) -> &Isolate {
        &self.handle.isolate
    }

    /// The code cache made with [`CompileOptions::produce_cached_data`], sealed under the
    /// isolate's key.
    pub fn cached_data(&self) -> Option<&CachedData> {
        self.cache.produced.as_ref()
    }

    /// Whether the supplied [`CompileOptions::cached_data`] was rejected (`None` if none was
    /// supplied), as isolated-vm's `cachedDataRejected`.
    pub fn cached_data_rejected(&self) -> Option<bool> {
        self.cache.rejected
    }

    /// Runs the script in `context` (which must belong to the same isolate) and copies its
    /// completion value into `T`, with the same rules as [`Context::eval`]. `options.origin`
    /// is ignored: the script keeps the origin it was compiled with.
    pub fn run<T: FromJs>(&self, context: &Context, options: &EvalOptions) -> Result<T> {
        let (script, context) = self.ids_for(context)?;
        self.handle.isolate.call(RunScript::new(script, context, Cow::Borrowed(options)))
    }

    /// Async form of [`run`](Script::run).
    pub fn run_async<T: FromJs>(&self, context: &Context, options: EvalOptions) -> Operation<T> {
        match self.ids_for(context) {
            Ok((script, context)) => self.handle.isolate.call_async(RunScript::new(script, context, Cow::Owned(options))),
            Err(e) => Operation::failed(e),
        }
    }

    /// Releases the compiled script. Later runs fail with `Script has been released`.
    pub fn release(&self) -> bool {
        self.handle.release()
    }

    fn ids_for(&self, context: &Context) -> Result<(u64, u64)> {
        if !context.isolate().same(&self.handle.isolate) {
            return Err(Error::InvalidArgument("Invalid context".into()));
        }
        Ok((self.handle.id, context.id()))
    }
}

impl Isolate {
    /// Compiles a script, to run later in any context of this isolate.
    pub fn compile_script(&self, code: &str, options: &CompileOptions) -> Result<Script> {
        self.call(CompileScript { code: Cow::Borrowed(code), options: Cow::Borrowed(options) })
    }

    /// Async form of [`compile_script`](Isolate::compile_script).
    pub fn compile_script_async(&self, code: impl Into<String>, options: CompileOptions) -> Operation<Script> {
        self.call_async(CompileScript { code: Cow::Owned(code.into()), options: Cow::Owned(options) })
    }
}

/// Code compiled as a script (isolate `compile_script`).
struct CompileScript<'a> {
    code: Cow<'a, str>,
    options: Cow<'a, CompileOptions>,
}

impl IsolateOp for CompileScript<'_> {
    type Output = Script;
    type Owned = CompileScript<'static>;

    fn into_owned(self) -> Result<CompileScript<'static>> {
        Ok(CompileScript { code: Cow::Owned(self.code.into_owned()), options: Cow::Owned(self.options.into_owned()) })
    }

    fn local(self) -> impl LocalWork<Script> {
        InSession(move |s: &mut Session<'_>| {
            let compiled = compile(s, &self.code, &self.options)?;
            Ok(Script::from_id(Isolate::local(s.inner.clone()), compiled))
        })
    }

    fn request(&self, _: &Arc<RemoteIsolate>) -> Result<Op> {
        Ok(Op::CompileScript { code: self.code.to_string(), compile: self.options.as_ref().clone() })
    }

    fn reply(&self, reply: Reply, isolate: &Isolate) -> Result<Script> {
        Ok(Script::from_id(isolate.clone(), reply.compiled()?.into()))
    }
}

/// A compiled script run in a context.
struct RunScript<'a, T> {
    script: u64,
    context: u64,
    options: Cow<'a, EvalOptions>,
    result: PhantomData<fn() -> T>,
}

impl<'a, T> RunScript<'a, T> {
    fn new(script: u64, context: u64, options: Cow<'a, EvalOptions>) -> Self {
        RunScript { script, context, options, result: PhantomData }
    }
}

impl<T: FromJs> IsolateOp for RunScript<'_, T> {
    type Output = T;
    type Owned = RunScript<'static, T>;

    fn into_owned(self) -> Result<RunScript<'static, T>> {
        Ok(RunScript::new(self.script, self.context, Cow::Owned(self.options.into_owned())))
    }

    fn local(self) -> impl LocalWork<T> {
        run_script(self.script, self.context, &self.options)
    }

    fn request(&self, _: &Arc<RemoteIsolate>) -> Result<Op> {
        Ok(Op::RunScript { script: self.script, context: self.context, run: self.options.as_ref().clone(), want: T::want() })
    }

    fn reply(&self, reply: Reply, isolate: &Isolate) -> Result<T> {
        read_remote(isolate, reply.out()?, false)
    }
}

/// Script `script_id` run in context `context_id`.
fn run_script<T: FromJs>(script_id: u64, context_id: u64, options: &EvalOptions) -> JsRun<impl Body + use<T>, impl Finish<T> + use<T>> {
    let rule = Rule::new(options.transfer, Fallback::Undefined);
    JsRun::new(
        context_id,
        Limits::of(options),
        move |scope: &mut v8::PinScope<'_, '_>, inner: &Arc<IsolateInner>| {
            let unbound = inner
                .local(scope, script_id, |slot| match slot {
                    Slot::Script(g) => Some(g),
                    _ => None,
                })
                .ok_or_else(|| Error::disposed("Script has been released"))?;
            unbound.bind_to_current_context(scope).run(scope).ok_or_else(js::threw)
        },
        move |scope: &mut v8::PinScope<'_, '_>, inner: &Arc<IsolateInner>, result| read_out(scope, inner, result, rule),
    )
}

/// Compiles code bound to the current context. A syntax error is returned as an exception
/// with isolated-vm's location suffix.
pub(crate) fn compile_in_context<'s>(
    scope: &mut v8::PinScope<'s, '_>,
    code: &str,
    script_origin: &ScriptOrigin,
) -> Result<v8::Local<'s, v8::Script>> {
    let source = source_string(scope, code)?;
    let origin = origin(scope, script_origin, false)?;
    v8::tc_scope!(let tc, scope);
    match v8::Script::compile(tc, source, Some(&origin)) {
        Some(script) => Ok(script),
        None => Err(crate::exception::compile_error(tc)),
    }
}

/// Compiles a function body with parameters `$0..$n`.
pub(crate) fn compile_function<'s>(
    scope: &mut v8::PinScope<'s, '_>,
    code: &str,
    arity: usize,
    script_origin: &ScriptOrigin,
) -> Result<v8::Local<'s, v8::Function>> {
    let source = source_string(scope, code)?;
    let origin = origin(scope, script_origin, false)?;
    let mut params = Vec::with_capacity(arity);
    for i in 0..arity {
        params.push(source_string(scope, &format!("${i}"))?);
    }
    let mut source = v8::script_compiler::Source::new(source, Some(&origin));
    v8::tc_scope!(let tc, scope);
    let compiled = v8::script_compiler::compile_function(
        tc,
        &mut source,
        &params,
        &[],
        v8::script_compiler::CompileOptions::NoCompileOptions,
        v8::script_compiler::NoCacheReason::NoReason,
    );
    compiled.ok_or_else(|| crate::exception::compile_error(tc))
}

/// Compiles an unbound script in a locked isolate and returns its handle id.
pub(crate) fn compile(session: &mut Session<'_>, code: &str, options: &CompileOptions) -> Result<(u64, CacheOutcome)> {
    let inner = session.inner;
    v8::scope!(let scope, &mut *session.isolate);
    let context = inner.compile_context(scope);
    let scope = &mut v8::ContextScope::new(scope, context);
    let text = source_string(scope, code)?;
    let origin = origin(scope, &options.origin, false)?;
    let cache = CacheRequest::new(options, &inner.cache_key, Kind::Script, code);
    let (mut source, compile_options) = cache.source(text, &origin);
    v8::tc_scope!(let tc, scope);
    let unbound = v8::script_compiler::compile_unbound_script(tc, &mut source, compile_options, v8::script_compiler::NoCacheReason::NoReason)
        .ok_or_else(|| crate::exception::compile_error(tc))?;
    let outcome = cache.outcome(&source, || unbound.create_code_cache());
    Ok((inner.insert(Slot::Script(v8::Global::new(tc, unbound))), outcome))
}
