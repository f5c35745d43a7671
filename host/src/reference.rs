//! [`Reference`]: a handle to a value that stays inside its isolate.

use std::borrow::Cow;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::data::{EvalOptions, Key, Transfer};
use crate::error::{Error, Result};
use crate::external_copy::{ExternalCopy, ExternalCopyOptions};
use crate::handle::HandleRef;
use crate::isolate::{Isolate, IsolateInner, Operation, Slot};
use crate::op::{IsolateOp, LocalWork};
use crate::process::RemoteIsolate;
use crate::process::protocol::{Access, Op, Reply};
use crate::run::{Body, Finish, JsRun, Limits};
use crate::transfer::{Arg, Fallback, FromJs, IntoArgs, IntoJs, Once, Rule, Transferable, all_converted, read_out, read_remote, remote_args};
use crate::js;

/// A handle to a value inside an isolate (an object, a function, or a primitive), usable from
/// any thread. The value is not copied: operations run in its isolate, under isolated-vm's
/// safety rules:
///
/// - [`get`](Reference::get), [`set`](Reference::set) and [`delete`](Reference::delete) see
///   own properties only, unless the reference was made with [`inherit`](Reference::inherit);
/// - an object that is a Proxy, or has one on its prototype chain, is refused;
/// - getters never run unless asked for with [`accessors`](Reference::accessors) (`get` on
///   an accessor property fails with `Property is getter`); `set` always defines a data
///   property, so setters never run.
///
/// ```
/// let isolate = ivm::Isolate::new(Default::default())?;
/// let context = isolate.create_context()?;
/// context.eval::<()>("globalThis.add = (a, b) => a + b")?;
/// let add: ivm::Reference = context.global()?.get("add")?;
/// assert_eq!(add.type_of(), "function");
/// assert_eq!(add.apply::<i32>((), (2, 3), &Default::default())?, 5);
/// # Ok::<(), ivm::Error>(())
/// ```
#[derive(Clone)]
pub struct Reference {
    handle: Arc<HandleRef>,
    type_of: &'static str,
    inherit: bool,
    accessors: bool,
}

impl std::fmt::Debug for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reference").field("type_of", &self.type_of).finish_non_exhaustive()
    }
}

impl Reference {
    /// Makes a reference to `value` in the current context.
    pub(crate) fn create<'s>(
        scope: &mut v8::PinScope<'s, '_>,
        inner: &Arc<IsolateInner>,
        value: v8::Local<'s, v8::Value>,
        inherit: bool,
    ) -> Reference {
        let context = scope.get_current_context();
        let id = inner.insert(Slot::Reference { value: v8::Global::new(scope, value), context: v8::Global::new(scope, context) });
        Reference {
            handle: Arc::new(HandleRef::new(Isolate::local(inner.clone()), id)),
            type_of: type_of(value),
            inherit,
            accessors: false,
        }
    }

    /// A reference to value `id` of an isolate in a worker process.
    pub(crate) fn remote(isolate: &Isolate, id: u64, type_of: &str, inherit: bool, accessors: bool) -> Reference {
        let type_of = ["null", "undefined", "number", "string", "boolean", "function"].into_iter().find(|t| *t == type_of).unwrap_or("object");
        Reference { handle: Arc::new(HandleRef::new(isolate.clone(), id)), type_of, inherit, accessors }
    }

    /// The isolate the value lives in.
    pub fn isolate(&self) -> &Isolate {
        &self.handle.isolate
    }

    /// JavaScript's `typeof` of the value, as isolated-vm reports it: `"null"`, `"undefined"`,
    /// `"number"`, `"string"`, `"boolean"`, `"function"` or `"object"` (also for symbols and
    /// BigInts).
    pub fn type_of(&self) -> &'static str {
        self.type_of
    }

    /// Follows the prototype chain in `get` (isolated-vm's `unsafeInherit`). References
    /// obtained through this one inherit the setting.
    pub fn inherit(mut self) -> Reference {
        self.inherit = true;
        self
    }

    /// Lets `get` run getters.
    pub fn accessors(mut self) -> Reference {
        self.accessors = true;
        self
    }

    /// Reads a property: a copy into any `DeserializeOwned` type, a [`Reference`] to it, an
    /// [`ExternalCopy`](crate::ExternalCopy), or a [`Transferred`](crate::Transferred) by
    /// isolated-vm's rule for `get` (primitives copied, objects and functions as references).
    ///
    /// ```
    /// # let isolate = ivm::Isolate::new(Default::default())?;
    /// # let context = isolate.create_context()?;
    /// context.eval::<()>("globalThis.config = { name: 'job', limits: { cpu: 2 } }")?;
    /// let config: ivm::Reference = context.global()?.get("config")?;
    /// assert_eq!(config.get::<String>("name")?, "job");
    /// let limits = config.get::<ivm::Reference>("limits")?;
    /// assert_eq!(limits.get::<u32>("cpu")?, 2);
    /// # Ok::<(), ivm::Error>(())
    /// ```
    pub fn get<T: FromJs>(&self, key: impl Into<Key>) -> Result<T> {
        self.isolate().call(self.get_op(key.into()))
    }

    /// Async form of [`get`](Reference::get).
    pub fn get_async<T: FromJs>(&self, key: impl Into<Key>) -> Operation<T> {
        self.isolate().call_async(self.get_op(key.into()))
    }

    fn get_op<T>(&self, key: Key) -> Get<T> {
        Get { reference: self.handle.id, access: self.access(), key, result: PhantomData }
    }

    /// Defines a data property (setters do not run), e.g. `reference.set("config", &config)`
    /// or a [`Callback`](crate::Callback).
    pub fn set(&self, key: impl Into<Key>, value: impl IntoJs) -> Result<()> {
        self.isolate().call(Set { reference: self.handle.id, key: key.into(), value: value.into_arg() })
    }

    /// Async form of [`set`](Reference::set).
    pub fn set_async(&self, key: impl Into<Key>, value: impl IntoJs) -> Operation<()> {
        self.isolate().call_async(Set { reference: self.handle.id, key: key.into(), value: value.into_arg() })
    }

    /// Fire-and-forget [`set`](Reference::set): queued like `set_async`; errors are dropped.
    pub fn set_ignored(&self, key: impl Into<Key>, value: impl IntoJs) {
        drop(self.set_async(key, value));
    }

    /// Deletes a property. Fails with `Delete failed` if it cannot be deleted.
    pub fn delete(&self, key: impl Into<Key>) -> Result<()> {
        self.isolate().call(Delete { reference: self.handle.id, key: key.into() })
    }

    /// Async form of [`delete`](Reference::delete).
    pub fn delete_async(&self, key: impl Into<Key>) -> Operation<()> {
        self.isolate().call_async(Delete { reference: self.handle.id, key: key.into() })
    }

    /// Fire-and-forget [`delete`](Reference::delete).
    pub fn delete_ignored(&self, key: impl Into<Key>) {
        drop(self.delete_async(key));
    }

    /// Calls the function with `this` = `recv` (`()` for `undefined`) and `args` (a tuple of
    /// anything [`IntoJs`], e.g. `(1, "a", callback)`). The result is read like
    /// [`get`](Reference::get)'s: a copy into a `DeserializeOwned` type, a [`Reference`], an
    /// [`ExternalCopy`](crate::ExternalCopy), or a [`Transferred`](crate::Transferred).
    /// `options.timeout` bounds the call, `options.promise` waits for a promise result.
    pub fn apply<T: FromJs>(&self, recv: impl IntoJs, args: impl IntoArgs, options: &EvalOptions) -> Result<T> {
        self.isolate().call(self.apply_op(recv.into_arg(), args.into_args(), Cow::Borrowed(options)))
    }

    /// Async form of [`apply`](Reference::apply).
    pub fn apply_async<T: FromJs>(&self, recv: impl IntoJs, args: impl IntoArgs, options: EvalOptions) -> Operation<T> {
        self.isolate().call_async(self.apply_op(recv.into_arg(), args.into_args(), Cow::Owned(options)))
    }

    fn apply_op<'a, T>(&self, recv: Arg<'a>, args: Vec<Arg<'a>>, options: Cow<'a, EvalOptions>) -> Apply<'a, T> {
        Apply { reference: self.handle.id, access: self.access(), recv, args, options, result: PhantomData }
    }

    /// Fire-and-forget [`apply`](Reference::apply): queued like `apply_async`; the result
    /// and errors are dropped.
    pub fn apply_ignored(&self, recv: impl IntoJs, args: impl IntoArgs, options: EvalOptions) {
        drop(self.apply_async::<()>(recv, args, options));
    }

    /// Copies the value out into `T` (isolated-vm's `copy()`).
    pub fn copy<T: DeserializeOwned + Send + 'static>(&self) -> Result<T> {
        self.copy_as()
    }

    /// [`copy`](Reference::copy) into any [`FromJs`] type.
    pub(crate) fn copy_as<T: FromJs>(&self) -> Result<T> {
        self.isolate().call(Copy { reference: self.handle.id, result: PhantomData })
    }

    /// Async form of [`copy`](Reference::copy).
    pub fn copy_async<T: DeserializeOwned + Send + 'static>(&self) -> Operation<T> {
        self.isolate().call_async(Copy { reference: self.handle.id, result: PhantomData })
    }

    /// Makes an [`ExternalCopy`] of the value, optionally transferring ArrayBuffers into it
    /// (isolated-vm's `new ExternalCopy(value, { transferList, transferOut })`).
    pub fn external_copy(&self, options: &ExternalCopyOptions) -> Result<ExternalCopy> {
        self.isolate().call(CopyOut { reference: self.handle.id, options: Cow::Borrowed(options) })
    }

    /// Async form of [`external_copy`](Reference::external_copy).
    pub fn external_copy_async(&self, options: ExternalCopyOptions) -> Operation<ExternalCopy> {
        self.isolate().call_async(CopyOut { reference: self.handle.id, options: Cow::Owned(options) })
    }

    /// The value itself, for passing into its own isolate (isolated-vm's `deref()`); passing
    /// `&Reference` does the same. In any other isolate it fails with `Cannot dereference this
    /// into target isolate`: values never leave their isolate this way.
    pub fn deref(&self) -> Transferable {
        Transferable::from(self.clone())
    }

    /// A single-use [`deref`](Reference::deref) (isolated-vm's `derefInto()`); a second use
    /// fails. With `release`, the reference is released once it was used.
    pub fn deref_into(&self, release: bool) -> Transferable {
        Transferable::once(Once::Deref { reference: self.clone(), release })
    }

    /// Releases the handle. Later calls fail with `Reference has been released`. Returns
    /// whether it was still held.
    pub fn release(&self) -> bool {
        self.handle.release()
    }

    /// Lets go of the handle without releasing the value: the worker releases it.
    pub(crate) fn forget(&self) {
        self.handle.forget();
    }

    /// The value, in its own isolate (locked by the caller as `inner`).
    pub(crate) fn local_in<'s>(&self, scope: &v8::PinScope<'s, '_>, inner: &Arc<IsolateInner>) -> Result<v8::Local<'s, v8::Value>> {
        if !self.isolate().as_local().is_some_and(|own| Arc::ptr_eq(own, inner)) {
            return Err(not_here());
        }
        value_of(scope, inner, self.handle.id)
    }

    /// The value's id in `remote`, which must be its isolate.
    pub(crate) fn id_in(&self, remote: &Arc<RemoteIsolate>) -> Result<u64> {
        if !self.isolate().is_remote(remote) {
            return Err(not_here());
        }
        if self.handle.is_released() {
            return Err(Error::disposed("Reference has been released"));
        }
        Ok(self.handle.id)
    }

    /// Whether no clone of this handle is left elsewhere.
    pub(crate) fn is_only_handle(&self) -> bool {
        Arc::strong_count(&self.handle) == 1
    }

    fn access(&self) -> Access {
        Access { inherit: self.inherit, accessors: self.accessors }
    }
}

fn not_here() -> Error {
    Error::js("TypeError", "Cannot dereference this into target isolate")
}

fn type_of(value: v8::Local<v8::Value>) -> &'static str {
    if value.is_null() {
        "null"
    } else if value.is_undefined() {
        "undefined"
    } else if value.is_number() {
        "number"
    } else if value.is_string() {
        "string"
    } else if value.is_boolean() {
        "boolean"
    } else if value.is_function() {
        "function"
    } else {
        "object"
    }
}

/// A run on reference `id`'s value, in its context, under the isolate's default timeout.
fn on_value<R>(
    id: u64,
    body: impl for<'s, 'i> FnOnce(&mut v8::PinScope<'s, 'i>, &Arc<IsolateInner>, v8::Local<'s, v8::Value>) -> Result<v8::Local<'s, v8::Value>> + Send,
    finish: impl Finish<R> + Send,
) -> JsRun<impl Body + Send, impl Finish<R> + Send> {
    JsRun::new(
        id,
        Limits::default(),
        move |scope: &mut v8::PinScope<'_, '_>, inner: &Arc<IsolateInner>| {
            let target = value_of(scope, inner, id)?;
            body(scope, inner, target)
        },
        finish,
    )
    .released("Reference has been released")
}

fn value_of<'s>(scope: &v8::PinScope<'s, '_>, inner: &IsolateInner, id: u64) -> Result<v8::Local<'s, v8::Value>> {
    inner
        .local(scope, id, |slot| match slot {
            Slot::Reference { value, .. } => Some(value),
            _ => None,
        })
        .ok_or_else(|| Error::disposed("Reference has been released"))
}

fn type_error(message: &str) -> Error {
    Error::js("TypeError", message)
}

/// The target as an object that get/set/delete may touch: not a function, no Proxy anywhere
/// on its prototype chain.
fn checked_object<'s>(scope: &mut v8::PinScope<'s, '_>, target: v8::Local<'s, v8::Value>) -> Result<v8::Local<'s, v8::Object>> {
    if target.is_function() || !target.is_object() {
        return Err(type_error("Reference is not an object"));
    }
    let object = target.to_object(scope).ok_or_else(js::threw)?;
    let mut link: v8::Local<v8::Value> = object.into();
    while link.is_object() {
        if link.is_proxy() {
            return Err(type_error("Object is or has proxy"));
        }
        link = link.to_object(scope).and_then(|o| o.get_prototype(scope)).ok_or_else(js::threw)?;
    }
    Ok(object)
}

fn key_of<'s>(scope: &mut v8::PinScope<'s, '_>, key: &Key) -> Result<v8::Local<'s, v8::Value>> {
    Ok(match key {
        Key::Name(name) => v8::String::new(scope, name).ok_or_else(|| Error::InvalidArgument("Invalid `key`".into()))?.into(),
        Key::Index(i) => v8::Integer::new_from_unsigned(scope, *i).into(),
    })
}

fn property<'s>(scope: &mut v8::PinScope<'s, '_>, target: v8::Local<'s, v8::Value>, key: &Key, access: Access) -> Result<v8::Local<'s, v8::Value>> {
    let object = checked_object(scope, target)?;
    let key = key_of(scope, key)?;
    let name = key.to_string(scope).ok_or_else(js::threw)?;
    // Find the object on the chain that has the property as its own.
    let mut holder = object;
    loop {
        if holder.has_own_property(scope, name.into()).ok_or_else(js::threw)? {
            break;
        }
        let next = holder.get_prototype(scope).filter(|p| access.inherit && p.is_object());
        match next.and_then(|p| p.to_object(scope)) {
            Some(p) => holder = p,
            None => return Ok(v8::undefined(scope).into()),
        }
    }
    if !access.accessors {
        let descriptor = holder.get_own_property_descriptor(scope, name.into()).ok_or_else(js::threw)?;
        if let Some(descriptor) = descriptor.to_object(scope) {
            let get = v8::String::new(scope, "get").ok_or_else(js::threw)?;
            if descriptor.get(scope, get.into()).is_some_and(|g| !g.is_undefined()) {
                return Err(type_error("Property is getter"));
            }
        }
    }
    holder.get(scope, key).ok_or_else(js::threw)
}

/// Defines `key` of `target` as a data property holding `value` (an accessor is replaced, not
/// its setter run); `TypeError: Set failed` if the object refuses.
pub(crate) fn define<'s>(
    scope: &mut v8::PinScope<'s, '_>,
    inner: &Arc<IsolateInner>,
    target: v8::Local<'s, v8::Value>,
    key: &Key,
    value: &Arg<'_>,
) -> Result<()> {
    let object = checked_object(scope, target)?;
    let key = key_of(scope, key)?;
    let value = value.to_js(scope, inner)?;
    let name = key.to_string(scope).ok_or_else(js::threw)?;
    // Delete first, so an accessor is replaced rather than its setter run.
    if object.delete(scope, key).ok_or_else(js::threw)? && object.create_data_property(scope, name.into(), value).ok_or_else(js::threw)? {
        Ok(())
    } else {
        Err(type_error("Set failed"))
    }
}

fn remove<'s>(scope: &mut v8::PinScope<'s, '_>, target: v8::Local<'s, v8::Value>, key: &Key) -> Result<()> {
    let object = checked_object(scope, target)?;
    let key = key_of(scope, key)?;
    if object.delete(scope, key).ok_or_else(js::threw)? { Ok(()) } else { Err(type_error("Delete failed")) }
}

/// The function reference `id` called with `recv` and `args`.
fn call<'a, T: FromJs>(
    id: u64,
    recv: Arg<'a>,
    args: Vec<Arg<'a>>,
    limits: Limits,
    rule: Rule,
) -> JsRun<impl Body + use<'a, T>, impl Finish<T> + use<'a, T>> {
    JsRun::new(
        id,
        limits,
        move |scope: &mut v8::PinScope<'_, '_>, inner: &Arc<IsolateInner>| {
            let target = value_of(scope, inner, id)?;
            let function = v8::Local::<v8::Function>::try_from(target).map_err(|_| type_error("Reference is not a function"))?;
            all_converted(Some(&recv), &args)?;
            let recv = recv.to_js(scope, inner)?;
            let mut argv = Vec::with_capacity(args.len());
            for arg in &args {
                argv.push(arg.to_js(scope, inner)?);
            }
            function.call(scope, recv, &argv).ok_or_else(js::threw)
        },
        move |scope: &mut v8::PinScope<'_, '_>, inner: &Arc<IsolateInner>, v| read_out(scope, inner, v, rule),
    )
    .released("Reference has been released")
}

/// A property read (reference `get`).
struct Get<T> {
    reference: u64,
    access: Access,
    key: Key,
    result: PhantomData<fn() -> T>,
}

impl<T: FromJs> IsolateOp for Get<T> {
    type Output = T;
    type Owned = Get<T>;

    fn into_owned(self) -> Result<Get<T>> {
        Ok(self)
    }

    fn local(self) -> impl LocalWork<T> {
        let Get { reference, access, key, .. } = self;
        let rule = Rule { inherit: access.inherit, ..Rule::new(Transfer::Auto, Fallback::Reference) };
        on_value(
            reference,
            move |scope: &mut v8::PinScope<'_, '_>, _: &Arc<IsolateInner>, target| property(scope, target, &key, access),
            move |scope: &mut v8::PinScope<'_, '_>, inner: &Arc<IsolateInner>, value| read_out(scope, inner, value, rule),
        )
    }

    fn request(&self, _: &Arc<RemoteIsolate>) -> Result<Op> {
        Ok(Op::Get { reference: self.reference, access: self.access, key: self.key.clone(), want: T::want() })
    }

    fn reply(&self, reply: Reply, isolate: &Isolate) -> Result<T> {
        read_remote(isolate, reply.out()?, self.access.inherit)
    }
}

/// A data property defined (reference `set`).
struct Set<'a> {
    reference: u64,
    key: Key,
    value: Arg<'a>,
}

impl IsolateOp for Set<'_> {
    type Output = ();
    type Owned = Set<'static>;

    fn into_owned(self) -> Result<Set<'static>> {
        Ok(Set { reference: self.reference, key: self.key, value: self.value.into_owned()? })
    }

    fn local(self) -> impl LocalWork<()> {
        let Set { reference, key, value } = self;
        on_value(
            reference,
            move |scope: &mut v8::PinScope<'_, '_>, inner: &Arc<IsolateInner>, target| {
                define(scope, inner, target, &key, &value)?;
                Ok(v8::undefined(scope).into())
            },
            |_: &mut v8::PinScope<'_, '_>, _: &Arc<IsolateInner>, _| Ok(()),
        )
    }

    fn request(&self, remote: &Arc<RemoteIsolate>) -> Result<Op> {
        Ok(Op::Set { reference: self.reference, key: self.key.clone(), value: self.value.to_remote(remote)? })
    }

    fn reply(&self, reply: Reply, _: &Isolate) -> Result<()> {
        reply.done()
    }
}

/// A property deleted (reference `delete`).
struct Delete {
    reference: u64,
    key: Key,
}

impl IsolateOp for Delete {
    type Output = ();
    type Owned = Delete;

    fn into_owned(self) -> Result<Delete> {
        Ok(self)
    }

    fn local(self) -> impl LocalWork<()> {
        let Delete { reference, key } = self;
        on_value(
            reference,
            move |scope: &mut v8::PinScope<'_, '_>, _: &Arc<IsolateInner>, target| {
                remove(scope, target, &key)?;
                Ok(v8::undefined(scope).into())
            },
            |_: &mut v8::PinScope<'_, '_>, _: &Arc<IsolateInner>, _| Ok(()),
        )
    }

    fn request(&self, _: &Arc<RemoteIsolate>) -> Result<Op> {
        Ok(Op::Delete { reference: self.reference, key: self.key.clone() })
    }

    fn reply(&self, reply: Reply, _: &Isolate) -> Result<()> {
        reply.done()
    }
}

/// A function called (reference `apply`).
struct Apply<'a, T> {
    reference: u64,
    access: Access,
    recv: Arg<'a>,
    args: Vec<Arg<'a>>,
    options: Cow<'a, EvalOptions>,
    result: PhantomData<fn() -> T>,
}

impl<T: FromJs> IsolateOp for Apply<'_, T> {
    type Output = T;
    type Owned = Apply<'static, T>;

    fn into_owned(self) -> Result<Apply<'static, T>> {
        let Apply { reference, access, recv, args, options, result } = self;
        let args = args.into_iter().map(Arg::into_owned).collect::<Result<_>>()?;
        Ok(Apply { reference, access, recv: recv.into_owned()?, args, options: Cow::Owned(options.into_owned()), result })
    }

    fn local(self) -> impl LocalWork<T> {
        let rule = Rule { inherit: self.access.inherit, ..Rule::new(self.options.transfer, Fallback::Reference) };
        call(self.reference, self.recv, self.args, Limits::of(&self.options), rule)
    }

    fn request(&self, remote: &Arc<RemoteIsolate>) -> Result<Op> {
        all_converted(Some(&self.recv), &self.args)?;
        Ok(Op::Apply {
            reference: self.reference,
            access: self.access,
            recv: self.recv.to_remote(remote)?,
            args: remote_args(&self.args, remote)?,
            run: self.options.as_ref().clone(),
            want: T::want(),
        })
    }

    fn reply(&self, reply: Reply, isolate: &Isolate) -> Result<T> {
        read_remote(isolate, reply.out()?, self.access.inherit)
    }
}

/// The value copied out (reference `copy`).
struct Copy<T> {
    reference: u64,
    result: PhantomData<fn() -> T>,
}

impl<T: FromJs> IsolateOp for Copy<T> {
    type Output = T;
    type Owned = Copy<T>;

    fn into_owned(self) -> Result<Copy<T>> {
        Ok(self)
    }

    fn local(self) -> impl LocalWork<T> {
        let rule = Rule::new(Transfer::Copy, Fallback::Reference);
        on_value(
            self.reference,
            |_: &mut v8::PinScope<'_, '_>, _: &Arc<IsolateInner>, value| Ok(value),
            move |scope: &mut v8::PinScope<'_, '_>, inner: &Arc<IsolateInner>, value| read_out(scope, inner, value, rule),
        )
    }

    fn request(&self, _: &Arc<RemoteIsolate>) -> Result<Op> {
        Ok(Op::Copy { reference: self.reference, want: T::want() })
    }

    fn reply(&self, reply: Reply, isolate: &Isolate) -> Result<T> {
        read_remote(isolate, reply.out()?, false)
    }
}

/// The value as an [`ExternalCopy`] (reference `external_copy`).
struct CopyOut<'a> {
    reference: u64,
    options: Cow<'a, ExternalCopyOptions>,
}

impl IsolateOp for CopyOut<'_> {
    type Output = ExternalCopy;
    type Owned = CopyOut<'static>;

    fn into_owned(self) -> Result<CopyOut<'static>> {
        Ok(CopyOut { reference: self.reference, options: Cow::Owned(self.options.into_owned()) })
    }

    fn local(self) -> impl LocalWork<ExternalCopy> {
        let options = self.options;
        on_value(
            self.reference,
            |_: &mut v8::PinScope<'_, '_>, _: &Arc<IsolateInner>, value| Ok(value),
            move |scope: &mut v8::PinScope<'_, '_>, inner: &Arc<IsolateInner>, value| ExternalCopy::from_js(scope, inner, value, &options),
        )
    }

    fn request(&self, remote: &Arc<RemoteIsolate>) -> Result<Op> {
        let transfer = self.options.transfer_list.iter().map(|r| r.id_in(remote)).collect::<Result<Vec<_>>>()?;
        Ok(Op::ExternalCopy { reference: self.reference, transfer, transfer_out: self.options.transfer_out })
    }

    fn reply(&self, reply: Reply, isolate: &Isolate) -> Result<ExternalCopy> {
        ExternalCopy::import(reply.copy()?, isolate.copy_budget())
    }
}
