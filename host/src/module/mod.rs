//! [`Module`]: ES modules — compiled in an isolate, linked in a context by a resolver,
//! evaluated (top-level `await` included) under the operation's limits — plus modules the host
//! makes from Rust data or JSON, and the isolate's hooks for `import()` and `import.meta`.
//!
//! Linking walks the module graph in Rust first, asking the resolver for each import of each
//! module not linked yet, then lets V8 instantiate the whole graph at once. A resolver that
//! fails leaves every module as it was, so the graph can be linked again (isolated-vm #559);
//! linking a linked module is a no-op that asks the resolver nothing.

pub mod loader;
pub(crate) mod state;

use std::cell::RefCell;
use std::collections::HashSet;
use std::future::Future;
use std::borrow::Cow;
use std::sync::Arc;

use serde::Serialize;

use crate::code_cache::{CacheRequest, Kind};
use crate::data::{CacheOutcome, CachedData};
use crate::context::Context;
use crate::data::{CompileOptions, EvalOptions, ImportRequest};
use crate::engine::tasks;
use crate::error::{Error, Result};
use crate::handle::HandleRef;
use crate::isolate::{Backend, Isolate, IsolateInner, Operation, Session, Slot};
use crate::op::{InSession, IsolateOp, LocalWork};
use crate::process::protocol::{Op, Reply};
use crate::process::RemoteIsolate;
use crate::reference::Reference;
use crate::run::{self, Body, Finish, JsRun, Limits};
use crate::js::{origin, source_string};
use crate::transfer::read_remote;
use crate::js;
use crate::value::wire;
use state::{Export, Exports, ImportFn, RemoteImportFn};

/// An import request from V8: the specifier and the `(key, value[, position])` entries V8
/// lists attributes as.
fn import_request(scope: &v8::PinScope<'_, '_>, specifier: v8::Local<v8::String>, list: v8::Local<v8::FixedArray>, stride: usize) -> ImportRequest {
    let text = |i: usize| {
        list.get(scope, i)
            .and_then(|d| v8::Local::<v8::String>::try_from(d).ok())
            .map(|s| s.to_rust_string_lossy(scope))
            .unwrap_or_default()
    };
    let attributes = (0..list.length()).step_by(stride).map(|i| (text(i), text(i + 1))).collect();
    ImportRequest { specifier: specifier.to_rust_string_lossy(scope), attributes }
}

/// An ES module of an isolate (isolated-vm's `Module`).
///
/// ```
/// use ivm::{CompileOptions, Isolate, ScriptOrigin};
/// let isolate = Isolate::new(Default::default())?;
/// let context = isolate.create_context()?;
/// let main = isolate.compile_module(
///     "import { double } from 'math'; export const answer = await double(21);",
///     &CompileOptions::origin(ScriptOrigin::new("file:///main.mjs")),
/// )?;
/// assert_eq!(main.dependency_specifiers(), ["math"]);
/// let math = isolate.compile_module("export const double = async x => 2 * x;", &Default::default())?;
/// main.instantiate(&context, |request, _referrer| match request.specifier.as_str() {
///     "math" => Ok(math.clone()),
///     other => Err(ivm::Error::InvalidArgument(format!("no module {other}"))),
/// })?;
/// main.evaluate(&Default::default())?;
/// assert_eq!(main.namespace()?.get::<u32>("answer")?, 42);
/// # Ok::<(), ivm::Error>(())
/// ```
#[derive(Clone)]
pub struct Module {
    handle: Arc<HandleRef>,
    info: Arc<ModuleInfo>,
}

struct ModuleInfo {
    filename: String,
    requests: Vec<ImportRequest>,
    cache: CacheOutcome,
    /// The exports of a module made by the host: held here so that they live as long as a
    /// handle to the module does (the registry V8's callback reads holds them weakly).
    _exports: Option<Arc<Exports>>,
}

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Module").field("filename", &self.info.filename).finish_non_exhaustive()
    }
}

impl Isolate {
    /// Compiles an ES module (isolated-vm's `compileModule`). `options.origin.filename`
    /// names it in stack traces, for resolvers and in `import.meta`.
    pub fn compile_module(&self, code: &str, options: &CompileOptions) -> Result<Module> {
        self.call(CompileModule { code: Cow::Borrowed(code), options: Cow::Borrowed(options) })
    }

    /// Async form of [`compile_module`](Isolate::compile_module).
    pub fn compile_module_async(&self, code: impl Into<String>, options: CompileOptions) -> Operation<Module> {
        self.call_async(CompileModule { code: Cow::Owned(code.into()), options: Cow::Owned(options) })
    }

    /// A module whose exports are Rust data: `exports` must serialize to a map from export
    /// names to values (e.g. a struct, or `serde_json::json!({ "default": ..., "limit": 3 })`).
    /// Every importer gets its own copy of the values.
    pub fn data_module(&self, name: &str, exports: impl Serialize) -> Result<Module> {
        self.call(SyntheticModule::data(name, exports)?)
    }

    /// Async form of [`data_module`](Isolate::data_module).
    pub fn data_module_async(&self, name: impl Into<String>, exports: impl Serialize) -> Operation<Module> {
        match SyntheticModule::data(name, exports) {
            Ok(op) => self.call_async(op),
            Err(e) => Operation::failed(e),
        }
    }

    /// A JSON module: its default export is `JSON.parse(json)` (what
    /// `import data from './x.json' with { type: 'json' }` imports).
    pub fn json_module(&self, name: &str, json: &str) -> Result<Module> {
        self.call(SyntheticModule::json(name, json))
    }

    /// Async form of [`json_module`](Isolate::json_module).
    pub fn json_module_async(&self, name: impl Into<String>, json: impl Into<String>) -> Operation<Module> {
        self.call_async(SyntheticModule::json(name, json))
    }

    /// A module with these exports, as a worker is asked to make it.
    pub(crate) fn synthetic_module(&self, name: String, exports: Vec<(String, Export)>) -> Result<Module> {
        self.call(SyntheticModule { name, exports: Arc::new(Exports(exports)) })
    }

    /// Lets `import()` load modules: `hook(isolate, request, referrer_filename)` returns the
    /// module (compiled in this isolate); ivm links it with the same hook for its imports,
    /// evaluates it, and resolves the import with its namespace. Without a hook `import()`
    /// rejects with a TypeError that says so.
    ///
    /// The hook is kept as long as the isolate; one that holds a handle to the isolate keeps
    /// it alive until it is disposed.
    pub fn set_dynamic_import(&self, hook: impl Fn(&Isolate, &ImportRequest, &str) -> Result<Module> + Send + Sync + 'static) {
        let hook = Arc::new(hook);
        match &self.backend {
            Backend::Local(inner) => {
                let import: ImportFn = Arc::new(move |scope, request, referrer| import(scope, &*hook, request, referrer));
                // The replaced hook is dropped after the lock is let go (dropping it may run
                // an embedder's finalizer, which may set a hook again).
                let replaced = inner.module_hooks.import.lock().replace(import);
                drop(replaced);
            }
            Backend::Remote(remote) => {
                // The hook is given this isolate: a handle that does not keep it alive.
                let isolate = Arc::downgrade(remote);
                let import: RemoteImportFn = Arc::new(move |request, referrer| {
                    let remote = isolate.upgrade().ok_or_else(Error::isolate_disposed)?;
                    let module = hook(&Isolate { backend: Backend::Remote(remote.clone()) }, request, referrer)?;
                    Ok((module.remote_id(&remote)?, Box::new(module)))
                });
                let replaced = remote.import.lock().replace(import);
                drop(replaced);
                // A disposed isolate needs no hook.
                let _ = remote.run(Ok(Op::Hooks { import: true, meta: false }));
            }
        }
    }

    /// Fills `import.meta` of each module on first use with the properties of
    /// `hook(filename)` (an object, e.g. `{ "url": ... }`). Without a hook, `import.meta.url`
    /// is the module's filename.
    pub fn set_import_meta(&self, hook: impl Fn(&str) -> Result<crate::Value> + Send + Sync + 'static) {
        match &self.backend {
            // Replaced hooks are dropped after the lock is let go, as in `set_dynamic_import`.
            Backend::Local(inner) => drop(inner.module_hooks.meta.lock().replace(Arc::new(hook))),
            Backend::Remote(remote) => {
                let replaced = remote.meta.lock().replace(Arc::new(hook));
                drop(replaced);
                let _ = remote.run(Ok(Op::Hooks { import: false, meta: true }));
            }
        }
    }
}

/// A hook or resolver gave a module of another isolate.
fn foreign_module() -> Error {
    Error::InvalidArgument("Resolved dependency was not `Module`: the module belongs to another isolate".into())
}

fn not_a_map() -> Error {
    Error::InvalidArgument("a data module's exports must be a map of names to values".into())
}

impl Module {
    fn new(isolate: Isolate, (id, requests, cache): (u64, Vec<ImportRequest>, CacheOutcome), filename: String, synthetic: Option<Arc<Exports>>) -> Module {
        Module { handle: Arc::new(HandleRef::new(isolate, id)), info: Arc::new(ModuleInfo { filename, requests, cache, _exports: synthetic }) }
    }

    /// The isolate the module belongs to.
    pub fn isolate(&self) -> &Isolate {
        &self.handle.isolate
    }

    /// The module's filename (its origin), as resolvers see the referrer.
    pub fn filename(&self) -> &str {
        &self.info.filename
    }

    /// Its imports, in source order, with their import attributes.
    pub fn requests(&self) -> &[ImportRequest] {
        &self.info.requests
    }

    /// The specifiers of its imports (isolated-vm's `dependencySpecifiers`).
    pub fn dependency_specifiers(&self) -> Vec<&str> {
        self.info.requests.iter().map(|r| r.specifier.as_str()).collect()
    }

    /// The code cache made with [`CompileOptions::produce_cached_data`].
    pub fn cached_data(&self) -> Option<&CachedData> {
        self.info.cache.produced.as_ref()
    }

    /// Whether the supplied [`CompileOptions::cached_data`] was rejected (`None` if none was
    /// supplied).
    pub fn cached_data_rejected(&self) -> Option<bool> {
        self.info.cache.rejected
    }

    /// Whether two handles are the same module.
    pub fn same(&self, other: &Module) -> bool {
        Arc::ptr_eq(&self.handle, &other.handle) || (self.isolate().same(other.isolate()) && self.handle.id == other.handle.id)
    }

    /// Links the module and everything it imports in `context` (isolated-vm's `instantiate`):
    /// `resolve(request, referrer)` returns the module each import names. Cycles link; a
    /// module already linked is left as it is. If the resolver fails (or V8 refuses the graph,
    /// e.g. a missing export) nothing is linked and it can be tried again.
    pub fn instantiate(&self, context: &Context, mut resolve: impl FnMut(&ImportRequest, &Module) -> Result<Module>) -> Result<()> {
        self.check_context(context)?;
        let mut plan = Vec::new();
        let mut seen = HashSet::from([self.handle.id]);
        let mut pending = vec![self.clone()];
        while let Some(module) = pending.pop() {
            if module.is_linked()? {
                continue;
            }
            for request in module.requests() {
                let target = resolve(request, &module)?;
                module.check_link(request, &target)?;
                if seen.insert(target.handle.id) {
                    pending.push(target.clone());
                }
                plan.push(Link { referrer: module.clone(), request: request.clone(), target });
            }
        }
        self.isolate().call(Instantiate { root: self.handle.id, context: context.id(), plan })
    }

    /// Async form of [`instantiate`](Module::instantiate), with an async resolver (which may
    /// load sources lazily). It starts at once, on ivm's worker pool.
    pub fn instantiate_async<F, Fut>(&self, context: &Context, mut resolve: F) -> Operation<()>
    where
        F: FnMut(ImportRequest, Module) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Module>> + Send + 'static,
    {
        let (module, context) = (self.clone(), context.clone());
        let (tx, rx) = oneshot::channel();
        tasks::spawn(async move {
            let linked = async {
                module.check_context(&context)?;
                let mut plan = Vec::new();
                let mut seen = HashSet::from([module.handle.id]);
                let mut pending = vec![module.clone()];
                while let Some(next) = pending.pop() {
                    if next.is_linked_async().await? {
                        continue;
                    }
                    for request in next.requests() {
                        let target = resolve(request.clone(), next.clone()).await?;
                        next.check_link(request, &target)?;
                        if seen.insert(target.handle.id) {
                            pending.push(target.clone());
                        }
                        plan.push(Link { referrer: next.clone(), request: request.clone(), target });
                    }
                }
                module.isolate().call_async(Instantiate { root: module.handle.id, context: context.id(), plan }).await
            };
            let _ = tx.send(linked.await);
        });
        Operation::new(async move { rx.await.unwrap_or_else(|_| Err(Error::isolate_disposed())) })
    }

    /// Runs the module graph (isolated-vm's `evaluate`) and waits until it has finished,
    /// top-level `await` included, within `options.timeout`. A module that threw throws the
    /// same error again if evaluated again.
    pub fn evaluate(&self, options: &EvalOptions) -> Result<()> {
        self.isolate().call(Evaluate { module: self.handle.id, options: Cow::Borrowed(options) })
    }

    /// Async form of [`evaluate`](Module::evaluate).
    pub fn evaluate_async(&self, options: EvalOptions) -> Operation<()> {
        self.isolate().call_async(Evaluate { module: self.handle.id, options: Cow::Owned(options) })
    }

    /// A reference to the module's namespace object. Its bindings are live: reading through
    /// it sees what the module has assigned since (it is made with
    /// [`accessors`](Reference::accessors), as in isolated-vm).
    pub fn namespace(&self) -> Result<Reference> {
        self.isolate().call(Namespace { module: self.handle.id })
    }

    /// Async form of [`namespace`](Module::namespace).
    pub fn namespace_async(&self) -> Operation<Reference> {
        self.isolate().call_async(Namespace { module: self.handle.id })
    }

    /// Releases the handle. Returns whether it was still held.
    pub fn release(&self) -> bool {
        self.handle.release()
    }

    /// The module's id in `remote`, which must be its isolate.
    pub(crate) fn remote_id(&self, remote: &Arc<RemoteIsolate>) -> Result<u64> {
        if self.isolate().is_remote(remote) { Ok(self.handle.id) } else { Err(foreign_module()) }
    }

    fn check_context(&self, context: &Context) -> Result<()> {
        if context.isolate().same(self.isolate()) { Ok(()) } else { Err(Error::InvalidArgument("Invalid context".into())) }
    }

    fn check_link(&self, request: &ImportRequest, target: &Module) -> Result<()> {
        if target.isolate().same(self.isolate()) {
            return Ok(());
        }
        Err(Error::InvalidArgument(format!(
            "Resolved dependency was not `Module`: '{}' imported by '{}' resolved to a module of another isolate",
            request.specifier, self.info.filename
        )))
    }

    /// Whether V8 has linked the module (its imports are resolved).
    pub(crate) fn is_linked(&self) -> Result<bool> {
        self.isolate().call(Linked { module: self.handle.id })
    }

    async fn is_linked_async(&self) -> Result<bool> {
        self.isolate().call_async(Linked { module: self.handle.id }).await
    }
}

/// Code compiled as an ES module (isolate `compile_module`).
struct CompileModule<'a> {
    code: Cow<'a, str>,
    options: Cow<'a, CompileOptions>,
}

impl IsolateOp for CompileModule<'_> {
    type Output = Module;
    type Owned = CompileModule<'static>;

    fn into_owned(self) -> Result<CompileModule<'static>> {
        Ok(CompileModule { code: Cow::Owned(self.code.into_owned()), options: Cow::Owned(self.options.into_owned()) })
    }

    fn local(self) -> impl LocalWork<Module> {
        InSession(move |s: &mut Session<'_>| {
            let compiled = compile(s, &self.code, &self.options)?;
            Ok(Module::new(Isolate::local(s.inner.clone()), compiled, self.options.origin.filename.clone(), None))
        })
    }

    fn request(&self, _: &Arc<RemoteIsolate>) -> Result<Op> {
        Ok(Op::CompileModule { code: self.code.to_string(), compile: self.options.as_ref().clone() })
    }

    fn reply(&self, reply: Reply, isolate: &Isolate) -> Result<Module> {
        Ok(Module::new(isolate.clone(), reply.compiled()?.into(), self.options.origin.filename.clone(), None))
    }
}

/// A module whose exports the host made (isolate `data_module`, `json_module`).
struct SyntheticModule {
    name: String,
    exports: Arc<Exports>,
}

impl SyntheticModule {
    fn data(name: impl Into<String>, exports: impl Serialize) -> Result<SyntheticModule> {
        let exports = match crate::value::to_value(&exports)? {
            crate::Value::Object(map) => map.into_iter().map(|(k, v)| Ok((k, Export::Wire(wire::to_wire(&v)?)))).collect::<Result<Vec<_>>>()?,
            _ => return Err(not_a_map()),
        };
        Ok(SyntheticModule { name: name.into(), exports: Arc::new(Exports(exports)) })
    }

    fn json(name: impl Into<String>, json: impl Into<String>) -> SyntheticModule {
        SyntheticModule { name: name.into(), exports: Arc::new(Exports(vec![("default".to_owned(), Export::Json(json.into()))])) }
    }
}

impl IsolateOp for SyntheticModule {
    type Output = Module;
    type Owned = SyntheticModule;

    fn into_owned(self) -> Result<SyntheticModule> {
        Ok(self)
    }

    fn local(self) -> impl LocalWork<Module> {
        InSession(move |s: &mut Session<'_>| {
            let id = create_synthetic(s, &self.name, self.exports.clone())?;
            // The module keeps its exports: V8 reads them when it is evaluated.
            Ok(Module::new(Isolate::local(s.inner.clone()), (id, Vec::new(), CacheOutcome::default()), self.name, Some(self.exports)))
        })
    }

    fn request(&self, _: &Arc<RemoteIsolate>) -> Result<Op> {
        Ok(Op::SyntheticModule { name: self.name.clone(), exports: self.exports.0.clone() })
    }

    fn reply(&self, reply: Reply, isolate: &Isolate) -> Result<Module> {
        Ok(Module::new(isolate.clone(), (reply.id()?, Vec::new(), CacheOutcome::default()), self.name.clone(), None))
    }
}

/// A module graph linked in a context by a resolved plan (module `instantiate`).
struct Instantiate {
    root: u64,
    context: u64,
    plan: Vec<Link>,
}

impl IsolateOp for Instantiate {
    type Output = ();
    type Owned = Instantiate;

    fn into_owned(self) -> Result<Instantiate> {
        Ok(self)
    }

    fn local(self) -> impl LocalWork<()> {
        InSession(move |s: &mut Session<'_>| instantiate(s, self.root, self.context, &self.plan))
    }

    fn request(&self, _: &Arc<RemoteIsolate>) -> Result<Op> {
        let links = self.plan.iter().map(|l| (l.referrer.handle.id, l.request.clone(), l.target.handle.id)).collect();
        Ok(Op::Instantiate { module: self.root, context: self.context, links })
    }

    fn reply(&self, reply: Reply, _: &Isolate) -> Result<()> {
        reply.done()
    }
}

/// A module graph run to its end (module `evaluate`).
struct Evaluate<'a> {
    module: u64,
    options: Cow<'a, EvalOptions>,
}

impl IsolateOp for Evaluate<'_> {
    type Output = ();
    type Owned = Evaluate<'static>;

    fn into_owned(self) -> Result<Evaluate<'static>> {
        Ok(Evaluate { module: self.module, options: Cow::Owned(self.options.into_owned()) })
    }

    fn local(self) -> impl LocalWork<()> {
        evaluate(self.module, &self.options)
    }

    fn request(&self, _: &Arc<RemoteIsolate>) -> Result<Op> {
        Ok(Op::Evaluate { module: self.module, run: self.options.as_ref().clone() })
    }

    fn reply(&self, reply: Reply, _: &Isolate) -> Result<()> {
        reply.done()
    }
}

/// A module's namespace object, as a reference with live bindings (module `namespace`).
struct Namespace {
    module: u64,
}

impl IsolateOp for Namespace {
    type Output = Reference;
    type Owned = Namespace;

    fn into_owned(self) -> Result<Namespace> {
        Ok(self)
    }

    fn local(self) -> impl LocalWork<Reference> {
        let module = self.module;
        JsRun::new(
            module,
            Limits::default(),
            move |scope: &mut v8::PinScope<'_, '_>, inner: &Arc<IsolateInner>| Ok(module_of(scope, inner, module)?.get_module_namespace()),
            |scope: &mut v8::PinScope<'_, '_>, inner: &Arc<IsolateInner>, namespace| Ok(Reference::create(scope, inner, namespace, false).accessors()),
        )
    }

    fn request(&self, _: &Arc<RemoteIsolate>) -> Result<Op> {
        Ok(Op::Namespace { module: self.module })
    }

    fn reply(&self, reply: Reply, isolate: &Isolate) -> Result<Reference> {
        read_remote::<Reference>(isolate, reply.out()?, false).map(Reference::accessors)
    }
}

/// Whether V8 has linked a module.
struct Linked {
    module: u64,
}

impl IsolateOp for Linked {
    type Output = bool;
    type Owned = Linked;

    fn into_owned(self) -> Result<Linked> {
        Ok(self)
    }

    fn local(self) -> impl LocalWork<bool> {
        InSession(move |s: &mut Session<'_>| linked(s, self.module))
    }

    fn request(&self, _: &Arc<RemoteIsolate>) -> Result<Op> {
        Ok(Op::Linked { module: self.module })
    }

    fn reply(&self, reply: Reply, _: &Isolate) -> Result<bool> {
        reply.linked()
    }
}

/// One resolved import.
struct Link {
    referrer: Module,
    request: ImportRequest,
    target: Module,
}

fn module_of<'s>(scope: &v8::PinScope<'s, '_, ()>, inner: &IsolateInner, id: u64) -> Result<v8::Local<'s, v8::Module>> {
    inner
        .local(scope, id, |slot| match slot {
            Slot::Module { module, .. } => Some(module),
            _ => None,
        })
        .ok_or_else(|| Error::disposed("Module has been released"))
}

fn linked(session: &mut Session<'_>, id: u64) -> Result<bool> {
    v8::scope!(let scope, &mut *session.isolate);
    let module = module_of(scope, session.inner, id)?;
    Ok(!matches!(module.get_status(), v8::ModuleStatus::Uninstantiated | v8::ModuleStatus::Instantiating))
}

/// Compiles a module in a locked isolate: its handle id, imports and cache outcome.
fn compile(session: &mut Session<'_>, code: &str, options: &CompileOptions) -> Result<(u64, Vec<ImportRequest>, CacheOutcome)> {
    let inner = session.inner;
    v8::scope!(let scope, &mut *session.isolate);
    let context = inner.compile_context(scope);
    let scope = &mut v8::ContextScope::new(scope, context);
    let text = source_string(scope, code)?;
    let origin = origin(scope, &options.origin, true)?;
    let cache = CacheRequest::new(options, &inner.cache_key, Kind::Module, code);
    let (mut source, compile_options) = cache.source(text, &origin);
    v8::tc_scope!(let tc, scope);
    let module = v8::script_compiler::compile_module2(tc, &mut source, compile_options, v8::script_compiler::NoCacheReason::NoReason)
        .ok_or_else(|| crate::exception::compile_error(tc))?;
    let outcome = cache.outcome(&source, || module.get_unbound_module_script(tc).create_code_cache());
    let list = module.get_module_requests();
    let mut requests = Vec::with_capacity(list.length());
    for i in 0..list.length() {
        let Some(request) = list.get(tc, i).and_then(|d| v8::Local::<v8::ModuleRequest>::try_from(d).ok()) else { continue };
        requests.push(import_request(tc, request.get_specifier(), request.get_import_attributes(), 3));
    }
    if let Some(script_id) = module.script_id() {
        inner.module_hooks.filenames.lock().insert(script_id, options.origin.filename.clone());
    }
    let id = inner.insert(Slot::Module { module: v8::Global::new(tc, module), context: None });
    Ok((id, requests, outcome))
}

/// A resolved import, as V8 sees it: the importing module, its request, the module it resolves to.
type Resolved = (v8::Global<v8::Module>, ImportRequest, v8::Global<v8::Module>);

thread_local! {
    /// The resolved imports of the graph being instantiated on this thread, for V8's resolve
    /// callback (which cannot capture anything).
    static LINKING: RefCell<Vec<Resolved>> = const { RefCell::new(Vec::new()) };
}

/// Links the graph rooted at `root` in the context `context_id`, with the imports in `plan`.
fn instantiate(session: &mut Session<'_>, root: u64, context_id: u64, plan: &[Link]) -> Result<()> {
    let inner = session.inner.clone();
    run::run_in_context(
        session,
        context_id,
        Limits::default(),
        |scope| {
            let module = module_of(scope, &inner, root)?;
            if !matches!(module.get_status(), v8::ModuleStatus::Uninstantiated) {
                return Ok(v8::undefined(scope).into());
            }
            let mut links = Vec::with_capacity(plan.len());
            for link in plan {
                let referrer = module_of(scope, &inner, link.referrer.handle.id)?;
                let target = module_of(scope, &inner, link.target.handle.id)?;
                links.push((v8::Global::new(scope, referrer), link.request.clone(), v8::Global::new(scope, target)));
            }
            let previous = LINKING.replace(links);
            let instantiated = module.instantiate_module(scope, resolve_callback);
            LINKING.set(previous);
            instantiated.filter(|ok| *ok).ok_or_else(js::threw)?;
            Ok(v8::undefined(scope).into())
        },
        |_, _| Ok(()),
    )?;
    // Every module of the graph now runs in that context.
    let context = inner.context_global(context_id).ok_or_else(|| Error::disposed("Context is released"))?;
    for id in std::iter::once(root).chain(plan.iter().map(|l| l.target.handle.id)) {
        inner.update(id, |slot| {
            if let Slot::Module { context: linked_in @ None, .. } = slot {
                *linked_in = Some(context.clone());
            }
        });
    }
    Ok(())
}

fn resolve_callback<'s>(
    context: v8::Local<'s, v8::Context>,
    specifier: v8::Local<'s, v8::String>,
    attributes: v8::Local<'s, v8::FixedArray>,
    referrer: v8::Local<'s, v8::Module>,
) -> Option<v8::Local<'s, v8::Module>> {
    // SAFETY: V8 calls this during `instantiate_module`, with the context entered.
    v8::callback_scope!(unsafe scope, context);
    let request = import_request(scope, specifier, attributes, 3);
    let found = LINKING.with_borrow(|links| {
        links
            .iter()
            .find(|(from, req, _)| *req == request && v8::Local::new(scope, from) == referrer)
            .map(|(_, _, target)| v8::Local::new(scope, target))
    });
    if found.is_none() {
        let message = v8::String::new(scope, &format!("Cannot resolve module '{}'", request.specifier))?;
        let error = v8::Exception::error(scope, message);
        scope.throw_exception(error);
    }
    found
}

/// A linked module graph run and waited for (top-level await included).
fn evaluate(id: u64, options: &EvalOptions) -> JsRun<impl Body + use<>, impl Finish<()> + use<>> {
    let limits = Limits { await_promise: true, ..Limits::of(options) };
    JsRun::new(
        id,
        limits,
        move |scope: &mut v8::PinScope<'_, '_>, inner: &Arc<IsolateInner>| module_of(scope, inner, id)?.evaluate(scope).ok_or_else(js::threw),
        |_: &mut v8::PinScope<'_, '_>, _: &Arc<IsolateInner>, _| Ok(()),
    )
    .released("Module has been released")
}

fn create_synthetic(session: &mut Session<'_>, name: &str, exports: Arc<Exports>) -> Result<u64> {
    let inner = session.inner;
    v8::scope!(let scope, &mut *session.isolate);
    let context = inner.compile_context(scope);
    let scope = &mut v8::ContextScope::new(scope, context);
    let name = source_string(scope, name)?;
    let names = exports.0.iter().map(|(n, _)| source_string(scope, n)).collect::<Result<Vec<_>>>()?;
    let module = v8::Module::create_synthetic_module(scope, name, &names, synthetic_steps);
    let mut registry = inner.module_hooks.synthetic.0.lock();
    registry.retain(|(_, exports)| exports.strong_count() > 0);
    registry.push((v8::Global::new(scope, module), Arc::downgrade(&exports)));
    Ok(inner.insert(Slot::Module { module: v8::Global::new(scope, module), context: None }))
}

fn synthetic_steps<'s>(context: v8::Local<'s, v8::Context>, module: v8::Local<'s, v8::Module>) -> Option<v8::Local<'s, v8::Value>> {
    // SAFETY: V8 calls this while evaluating, with the context entered.
    v8::callback_scope!(unsafe scope, context);
    let inner = IsolateInner::of(scope)?;
    let exports = {
        let registry = inner.module_hooks.synthetic.0.lock();
        registry.iter().find(|(m, _)| v8::Local::new(scope, m) == module).and_then(|(_, e)| e.upgrade())
    };
    let Some(exports) = exports else {
        let message = v8::String::new(scope, "The module's exports were released before it was evaluated")?;
        let error = v8::Exception::error(scope, message);
        scope.throw_exception(error);
        return None;
    };
    for (name, export) in &exports.0 {
        let value = match export {
            Export::Wire(bytes) => js::deserialize(scope, bytes, Default::default()).ok()?,
            Export::Json(text) => {
                let text = v8::String::new(scope, text)?;
                v8::json::parse(scope, text)?
            }
        };
        let name = v8::String::new(scope, name)?;
        module.set_synthetic_module_export(scope, name, value)?;
    }
    Some(v8::undefined(scope).into())
}

/// Installs V8's module callbacks on a new isolate.
pub(crate) fn install(isolate: &mut v8::Isolate) {
    isolate.set_host_import_module_dynamically_callback(dynamic_import);
    isolate.set_host_initialize_import_meta_object_callback(import_meta);
}

unsafe extern "C" fn import_meta(context: v8::Local<v8::Context>, module: v8::Local<v8::Module>, meta: v8::Local<v8::Object>) {
    // SAFETY: V8 calls this from inside JavaScript, with the context entered.
    v8::callback_scope!(unsafe scope, context);
    let Some(inner) = IsolateInner::of(scope) else { return };
    let hooks = &inner.module_hooks;
    let filename = module
        .script_id()
        .and_then(|id| hooks.filenames.lock().get(&id).cloned())
        .unwrap_or_default();
    let hook = hooks.meta.lock().clone();
    let properties = match hook {
        Some(hook) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| crate::alloc::unlimited(|| hook(&filename))))
            .unwrap_or_else(|_| Err(Error::js("Error", "The import.meta hook panicked"))),
        None => Ok(crate::Value::Object([("url".to_owned(), crate::Value::String(filename))].into_iter().collect())),
    };
    let properties = match properties.and_then(|p| js::copy_in(scope, &p)) {
        Ok(value) => value,
        Err(e) => return crate::exception::throw(scope, &e),
    };
    let Some(object) = properties.to_object(scope) else { return };
    let Some(keys) = object.get_own_property_names(scope, Default::default()) else { return };
    for i in 0..keys.length() {
        let Some(key) = keys.get_index(scope, i) else { continue };
        let (Ok(name), Some(value)) = (v8::Local::<v8::Name>::try_from(key), object.get(scope, key)) else { continue };
        meta.create_data_property(scope, name, value);
    }
}

fn dynamic_import<'s>(
    scope: &mut v8::PinScope<'s, '_>,
    _options: v8::Local<'s, v8::Data>,
    resource_name: v8::Local<'s, v8::Value>,
    specifier: v8::Local<'s, v8::String>,
    attributes: v8::Local<'s, v8::FixedArray>,
) -> Option<v8::Local<'s, v8::Promise>> {
    let resolver = v8::PromiseResolver::new(scope)?;
    let promise = resolver.get_promise(scope);
    let request = import_request(scope, specifier, attributes, 2);
    let referrer = resource_name.to_rust_string_lossy(scope);
    let imported = match IsolateInner::of(scope).map(|inner| inner.module_hooks.import.lock().clone()) {
        Some(Some(import)) => crate::alloc::unlimited(|| import(scope, &request, &referrer)),
        Some(None) => Err(Error::js("TypeError", format!("Cannot import '{}': dynamic import() is not enabled for this isolate", request.specifier))),
        None => Err(Error::isolate_disposed()),
    };
    match imported {
        // The namespace, once the module (and its top-level await) has run.
        Ok(evaluated) => return Some(evaluated),
        Err(e) => {
            let reason = crate::exception::to_js(scope, &e);
            resolver.reject(scope, reason);
            // The run ran out of time while the hook waited: it is being stopped, and what it
            // would have done with the promise is moot, so its rejection is not reported.
            if matches!(e, Error::Timeout { .. } | Error::CpuLimit { .. }) {
                crate::isolate::rejections::forget(scope, promise);
            }
        }
    }
    Some(promise)
}

/// `import(request)` from `referrer`, with the embedder's `hook`: loads, links and starts
/// evaluating the module; the promise of its namespace.
fn import<'s>(
    scope: &mut v8::PinScope<'s, '_>,
    hook: &(dyn Fn(&Isolate, &ImportRequest, &str) -> Result<Module> + Send + Sync),
    request: &ImportRequest,
    referrer: &str,
) -> Result<v8::Local<'s, v8::Promise>> {
    let inner = IsolateInner::of(scope).ok_or_else(Error::isolate_disposed)?;
    let isolate = Isolate::local(inner.clone());
    // V8 called in: a panic of the hook must not unwind into it (as for import.meta's).
    let guarded = |request: &ImportRequest, referrer: &str| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hook(&isolate, request, referrer)))
            .unwrap_or_else(|_| Err(Error::js("Error", "The dynamic import hook panicked")))
    };
    let module = guarded(request, referrer)?;
    if !module.isolate().same(&isolate) {
        return Err(foreign_module());
    }
    // Link in the context that asked, with the hook resolving the module's own imports.
    let context = scope.get_current_context();
    let context = Context::from_id(isolate.clone(), inner.insert(Slot::Context(v8::Global::new(scope, context))));
    module.instantiate(&context, |request, referrer| guarded(request, referrer.filename()))?;
    let local = module_of(scope, &inner, module.handle.id)?;
    let evaluated = local.evaluate(scope).ok_or_else(js::threw)?;
    let evaluated = v8::Local::<v8::Promise>::try_from(evaluated).map_err(|_| Error::js("TypeError", "module evaluation gave no promise"))?;
    // `evaluated.then(() => namespace)`, with V8's own `then` (user code cannot intercept it).
    let namespace = local.get_module_namespace();
    let give_namespace = v8::Function::builder(|_: &mut v8::PinScope<'_, '_>, args: v8::FunctionCallbackArguments<'_>, mut rv: v8::ReturnValue<'_, v8::Value>| {
        rv.set(args.data());
    })
    .data(namespace)
    .build(scope)
    .ok_or_else(js::threw)?;
    evaluated.then(scope, give_namespace).ok_or_else(js::threw)
}
