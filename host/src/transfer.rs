//! What crosses into and out of an isolate, and by which rule (isolated-vm's transfer rules,
//! reference §1.4, with Rust types choosing where isolated-vm needs options).
//!
//! **Into an isolate** anything [`IntoJs`] goes: `Serialize` data is copied (built directly
//! in the isolate, no intermediate tree), a [`Callback`] becomes a function, a [`Reference`]
//! becomes the value it points at (in its own isolate only), an [`ExternalCopy`] is copied
//! in, and the single-use [`Transferable`]s from [`Reference::deref_into`] and
//! [`ExternalCopy::copy_into`] do their one job.
//!
//! **Out of an isolate** the caller's type decides: any `DeserializeOwned` type is a copy;
//! [`Reference`] and [`ExternalCopy`] are what they say; the dynamic [`Value`] and
//! [`Transferred`] follow the operation's [`Transfer`] option, whose default
//! ([`Transfer::Auto`]) is isolated-vm's rule for that operation.

use std::any::TypeId;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::callback::Callback;
use crate::data::Transfer;
use crate::error::{Error, Result};
use crate::external_copy::{CopyIntoOptions, ExternalCopy};
use crate::isolate::{Isolate, IsolateInner};
use crate::process::RemoteIsolate;
use crate::process::protocol::{self, Input, Want, Wire};
use crate::reference::Reference;
use crate::sync::Mutex;
use crate::js;
use crate::value::{self, Value, wire};

/// A result as the transfer rule made it, for callers that take whatever comes
/// (`eval::<Transferred>(...)`).
#[derive(Debug, Clone)]
pub enum Transferred {
    /// A primitive, or a copy.
    Value(Value),
    /// A handle to the value in its isolate (functions, and objects under
    /// [`Transfer::Reference`] or a reference rule).
    Reference(Reference),
    /// A structured clone held outside every isolate.
    ExternalCopy(ExternalCopy),
}

/// isolated-vm's per-operation fallback for objects under [`Transfer::Auto`].
#[derive(Clone, Copy, Debug)]
pub(crate) enum Fallback {
    Undefined,
    Throw,
    Reference,
}

/// The transfer rule for one result.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rule {
    pub(crate) transfer: Transfer,
    pub(crate) fallback: Fallback,
    /// References made from the result follow prototype chains (a derived `inherit`).
    pub(crate) inherit: bool,
}

impl Rule {
    pub(crate) fn new(transfer: Transfer, fallback: Fallback) -> Rule {
        Rule { transfer, fallback, inherit: false }
    }
}

const NON_TRANSFERABLE: &str = "A non-transferable value was passed";

/// A result on its way out of an isolate: the value, in its (locked) isolate, with the rule
/// that applies. Only ivm makes these.
#[doc(hidden)]
pub struct Out<'a, 's, 'i> {
    pub(crate) scope: &'a mut v8::PinScope<'s, 'i>,
    pub(crate) inner: &'a Arc<IsolateInner>,
    pub(crate) value: v8::Local<'s, v8::Value>,
    pub(crate) rule: Rule,
}

/// A result that came back from an isolate in a worker process, as [`FromJs::want`] asked.
/// Only ivm makes these.
#[doc(hidden)]
pub struct RemoteOut<'a> {
    pub(crate) out: protocol::Out,
    pub(crate) isolate: &'a Isolate,
    /// References made from it follow prototype chains / run getters.
    pub(crate) inherit: bool,
    pub(crate) accessors: bool,
}

impl RemoteOut<'_> {
    fn data(self) -> Result<Wire> {
        match self.out {
            protocol::Out::Data(wire) => Ok(wire),
            _ => Err(mismatch()),
        }
    }
}

fn mismatch() -> Error {
    Error::Conversion("the worker's result does not match the type asked for".into())
}

/// Types a result can be read into: any `DeserializeOwned` type (a copy, through serde),
/// [`Value`] and [`Transferred`] (following the [`Transfer`] rule), [`Reference`] and
/// [`ExternalCopy`] — and your own types, from what the transfer rule made:
///
/// ```
/// use ivm::{FromJs, Reference, Transferred};
///
/// /// A function of the isolate, checked to be one.
/// struct JsFunction(Reference);
///
/// impl FromJs for JsFunction {
///     fn from_transferred(value: Transferred) -> ivm::Result<Self> {
///         match value {
///             Transferred::Reference(r) if r.type_of() == "function" => Ok(JsFunction(r)),
///             other => Err(ivm::Error::Conversion(format!("not a function: {other:?}"))),
///         }
///     }
/// }
///
/// # let isolate = ivm::Isolate::new(Default::default())?;
/// # let context = isolate.create_context()?;
/// let double: JsFunction = context.eval("x => 2 * x")?;
/// assert_eq!(double.0.apply::<u32>((), (21,), &Default::default())?, 42);
/// assert!(context.eval::<JsFunction>("1").is_err());
/// # Ok::<(), ivm::Error>(())
/// ```
pub trait FromJs: Sized + Send + 'static {
    /// Converts a result as the operation's [`Transfer`] rule made it: a primitive or a
    /// copy, a [`Reference`] (functions, and objects where the rule says so) or an
    /// [`ExternalCopy`].
    ///
    /// For an isolate in this process it runs while the operation still holds the isolate:
    /// it may call blocking operations on that isolate (they run inline) but must not wait
    /// for an `_async` one, which would wait for it in turn.
    fn from_transferred(value: Transferred) -> Result<Self>;

    /// Reads the result. Called by ivm with the isolate locked; the types above read
    /// straight from V8 rather than through [`Transferred`].
    #[doc(hidden)]
    fn from_js(out: Out<'_, '_, '_>) -> Result<Self> {
        Transferred::from_js(out).and_then(Self::from_transferred)
    }

    /// What an isolate in a worker process should send back for this type.
    #[doc(hidden)]
    fn want() -> Want {
        Want::Transferred
    }

    /// Reads what the worker sent back.
    #[doc(hidden)]
    fn from_remote(out: RemoteOut<'_>) -> Result<Self> {
        Transferred::from_remote(out).and_then(Self::from_transferred)
    }
}

/// The error for a result that is not the kind of thing asked for.
fn not_a(asked: &str, value: &Transferred) -> Error {
    let found = match value {
        Transferred::Value(_) => "data",
        Transferred::Reference(_) => "a reference",
        Transferred::ExternalCopy(_) => "an external copy",
    };
    Error::Conversion(format!("the result is {found}, not {asked}"))
}

fn downcast<T: 'static, U: 'static>(value: U) -> T {
    *(Box::new(value) as Box<dyn std::any::Any>).downcast::<T>().expect("the caller checked the type")
}

impl<T: DeserializeOwned + Send + 'static> FromJs for T {
    fn from_transferred(value: Transferred) -> Result<T> {
        // As `from_js`: a caller that ignores the result cannot fail on it.
        if TypeId::of::<T>() == TypeId::of::<()>() {
            return Ok(downcast(()));
        }
        match value {
            Transferred::Value(v) if TypeId::of::<T>() == TypeId::of::<Value>() => Ok(downcast(v)),
            Transferred::Value(v) => value::from_value(v),
            Transferred::ExternalCopy(copy) => copy.copy(),
            // Asked for as data, an object is copied.
            Transferred::Reference(r) => r.copy(),
        }
    }

    fn from_js(out: Out<'_, '_, '_>) -> Result<T> {
        if TypeId::of::<T>() == TypeId::of::<Value>() {
            return dynamic_value(out).map(downcast);
        }
        if TypeId::of::<T>() == TypeId::of::<()>() {
            // A caller that ignores the result does not copy it (and cannot fail on it).
            return Ok(downcast(()));
        }
        js::from_v8(out.scope, out.value)
    }

    fn want() -> Want {
        if TypeId::of::<T>() == TypeId::of::<Value>() {
            Want::Value
        } else if TypeId::of::<T>() == TypeId::of::<()>() {
            Want::Nothing
        } else {
            Want::Data
        }
    }

    fn from_remote(out: RemoteOut<'_>) -> Result<T> {
        if TypeId::of::<T>() == TypeId::of::<()>() {
            return Ok(downcast(()));
        }
        let budget = out.isolate.copy_budget();
        let data = out.data()?;
        if TypeId::of::<T>() == TypeId::of::<Value>() {
            return wire::read_value(&data.bytes, &data, budget).map(downcast);
        }
        // Primitives read as `from_js` reads them.
        if wire::is_primitive(&data.bytes) {
            return value::from_value(wire::read_value(&data.bytes, &data, budget)?);
        }
        wire::from_wire(&data.bytes, &data, budget)
    }
}

/// A result copied in V8's wire format, as a worker sends it back for a serde type.
pub(crate) struct Raw(pub(crate) Wire);

impl FromJs for Raw {
    /// Required by the trait; the worker reads `Raw` only through `from_js`, straight from V8.
    fn from_transferred(value: Transferred) -> Result<Self> {
        match value {
            Transferred::Value(v) => Ok(Raw(Wire { bytes: wire::to_wire(&v)?, shared: Vec::new() })),
            other => Err(not_a("data", &other)),
        }
    }

    fn from_js(out: Out<'_, '_, '_>) -> Result<Self> {
        if let Some(p) = js::primitive(out.scope, out.value) {
            return Ok(Raw(Wire { bytes: wire::to_wire(&p)?, shared: Vec::new() }));
        }
        let clone = js::serialize(out.scope, out.value, &[])?;
        if !clone.wasm_modules.is_empty() {
            return Err(Error::Conversion("a WebAssembly.Module cannot leave its worker process".into()));
        }
        let shared = clone.shared.iter().map(|store| serde_bytes::ByteBuf::from(js::store_bytes(store))).collect();
        Ok(Raw(Wire { bytes: clone.bytes, shared }))
    }

    fn want() -> Want {
        Want::Data
    }

    fn from_remote(out: RemoteOut<'_>) -> Result<Self> {
        out.data().map(Raw)
    }
}

/// A result asked for as a [`Value`].
fn dynamic_value(out: Out<'_, '_, '_>) -> Result<Value> {
    if let Some(p) = js::primitive(out.scope, out.value) {
        return Ok(p);
    }
    match (out.rule.transfer, out.rule.fallback) {
        (Transfer::Copy, _) | (Transfer::Auto, Fallback::Reference) => js::copy_out(out.scope, out.value),
        (Transfer::Auto, Fallback::Undefined) => Ok(Value::Undefined),
        (Transfer::Auto, Fallback::Throw) => Err(Error::InvalidArgument(NON_TRANSFERABLE.into())),
        (other, _) => Err(Error::Conversion(format!(
            "the transfer option {other:?} makes a handle, which a `Value` cannot hold: ask for `{other:?}` or `Transferred`"
        ))),
    }
}

impl FromJs for Reference {
    fn from_transferred(value: Transferred) -> Result<Self> {
        match value {
            Transferred::Reference(r) => Ok(r),
            other => Err(not_a("a reference", &other)),
        }
    }

    fn from_js(out: Out<'_, '_, '_>) -> Result<Self> {
        Ok(Reference::create(out.scope, out.inner, out.value, out.rule.inherit))
    }

    fn want() -> Want {
        Want::Reference
    }

    fn from_remote(out: RemoteOut<'_>) -> Result<Self> {
        match out.out {
            protocol::Out::Reference { id, type_of } => Ok(Reference::remote(out.isolate, id, &type_of, out.inherit, out.accessors)),
            _ => Err(mismatch()),
        }
    }
}

impl FromJs for ExternalCopy {
    fn from_transferred(value: Transferred) -> Result<Self> {
        match value {
            Transferred::ExternalCopy(copy) => Ok(copy),
            Transferred::Value(v) => ExternalCopy::new(&v),
            Transferred::Reference(r) => r.external_copy(&Default::default()),
        }
    }

    fn from_js(out: Out<'_, '_, '_>) -> Result<Self> {
        ExternalCopy::from_js(out.scope, out.inner, out.value, &Default::default())
    }

    fn want() -> Want {
        Want::ExternalCopy
    }

    fn from_remote(out: RemoteOut<'_>) -> Result<Self> {
        match out.out {
            protocol::Out::ExternalCopy(copy) => ExternalCopy::import(copy, out.isolate.copy_budget()),
            _ => Err(mismatch()),
        }
    }
}

impl FromJs for Transferred {
    fn from_transferred(value: Transferred) -> Result<Self> {
        Ok(value)
    }

    fn from_js(out: Out<'_, '_, '_>) -> Result<Self> {
        if let Some(p) = js::primitive(out.scope, out.value) {
            return Ok(Transferred::Value(p));
        }
        let as_reference = |out: Out<'_, '_, '_>| Reference::from_js(out).map(Transferred::Reference);
        if out.value.is_function() {
            return as_reference(out);
        }
        match (out.rule.transfer, out.rule.fallback) {
            (Transfer::Copy, _) => js::copy_out(out.scope, out.value).map(Transferred::Value),
            (Transfer::ExternalCopy, _) => <ExternalCopy as FromJs>::from_js(out).map(Transferred::ExternalCopy),
            (Transfer::Reference, _) | (Transfer::Auto, Fallback::Reference) => as_reference(out),
            (Transfer::Auto, Fallback::Undefined) => Ok(Transferred::Value(Value::Undefined)),
            // `Auto` with `Throw`, and any rule this crate does not know.
            _ => Err(Error::InvalidArgument(NON_TRANSFERABLE.into())),
        }
    }

    fn want() -> Want {
        Want::Transferred
    }

    fn from_remote(out: RemoteOut<'_>) -> Result<Self> {
        Ok(match out.out {
            protocol::Out::Data(data) => Transferred::Value(wire::read_value(&data.bytes, &data, out.isolate.copy_budget())?),
            protocol::Out::ExternalCopy(copy) => Transferred::ExternalCopy(ExternalCopy::import(copy, out.isolate.copy_budget())?),
            protocol::Out::Reference { .. } => Transferred::Reference(Reference::from_remote(out)?),
            protocol::Out::Nothing => return Err(mismatch()),
        })
    }
}

/// Reads a result from a worker.
pub(crate) fn read_remote<T: FromJs>(isolate: &Isolate, out: protocol::Out, inherit: bool) -> Result<T> {
    T::from_remote(RemoteOut { out, isolate, inherit, accessors: false })
}

/// Reads a result under `rule`.
pub(crate) fn read_out<'s, T: FromJs>(
    scope: &mut v8::PinScope<'s, '_>,
    inner: &Arc<IsolateInner>,
    value: v8::Local<'s, v8::Value>,
    rule: Rule,
) -> Result<T> {
    T::from_js(Out { scope, inner, value, rule })
}

/// `Serialize` data, kept as the caller's own value until it is built in the isolate.
pub(crate) trait SerializeDyn {
    fn to_v8<'s>(&self, scope: &mut v8::PinScope<'s, '_>) -> Result<v8::Local<'s, v8::Value>>;
    fn to_value(&self) -> Result<Value>;
    fn to_wire(&self) -> Result<Vec<u8>>;
}

impl<T: Serialize + ?Sized> SerializeDyn for T {
    fn to_v8<'s>(&self, scope: &mut v8::PinScope<'s, '_>) -> Result<v8::Local<'s, v8::Value>> {
        js::to_v8(scope, self)
    }
    fn to_value(&self) -> Result<Value> {
        value::to_value(self)
    }
    fn to_wire(&self) -> Result<Vec<u8>> {
        wire::to_wire(self)
    }
}

/// A value on its way into an isolate, borrowing the caller's data for `'a`. Only ivm reads
/// these; make them with [`IntoJs`].
#[doc(hidden)]
pub struct Arg<'a>(Kind<'a>);

enum Kind<'a> {
    /// The caller's data, built in the isolate when the operation runs.
    Data(Box<dyn SerializeDyn + Send + Sync + 'a>),
    Owned(Owned),
    /// [`IntoJs::into_transferable`] failed: the operation fails with this when it uses it.
    Failed(Error),
}

#[derive(Clone)]
enum Owned {
    Value(Value),
    /// Data in V8's wire format (from a host process, in a worker).
    Wire(Arc<Wire>),
    Callback(Callback),
    Reference(Reference),
    Copy(ExternalCopy),
    Once(Arc<OnceSlot>),
}

/// A single-use transfer: used up by its first successful use.
pub(crate) struct OnceSlot {
    /// isolated-vm's name for what made it, for the second-use error.
    made_by: &'static str,
    payload: Mutex<Option<Once>>,
}

impl OnceSlot {
    /// Uses the payload with `f`; it is used up only once `f` worked, so a failed use (e.g.
    /// in the wrong isolate) leaves it usable.
    fn use_once<R>(&self, f: impl FnOnce(&Once) -> Result<R>) -> Result<R> {
        let mut payload = self.payload.lock();
        let Some(once) = payload.as_ref() else {
            return Err(Error::js("TypeError", format!("The return value of `{}` should only be used once", self.made_by)));
        };
        let used = f(once)?;
        *payload = None;
        Ok(used)
    }
}

/// The payload of a single-use [`Transferable`].
pub(crate) enum Once {
    /// [`Reference::deref_into`]: the value, in its own isolate; the reference is released
    /// after use when `release` is set.
    Deref { reference: Reference, release: bool },
    /// [`ExternalCopy::copy_into`].
    CopyInto { copy: ExternalCopy, options: CopyIntoOptions },
}

/// An owned value on its way into an isolate: data, a host function, a reference, a copy,
/// or a single-use transfer from [`Reference::deref_into`] or [`ExternalCopy::copy_into`].
/// It is `Send`, so it can be prepared on one thread and used on another; clones of a
/// single-use transfer share it (the first use uses it up).
#[derive(Clone)]
pub struct Transferable(Owned);

impl std::fmt::Debug for Transferable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.0 {
            Owned::Value(_) | Owned::Wire(_) => "data",
            Owned::Callback(_) => "callback",
            Owned::Reference(_) => "reference",
            Owned::Copy(_) => "external copy",
            Owned::Once(once) => once.made_by,
        };
        f.debug_tuple("Transferable").field(&kind).finish()
    }
}

impl Transferable {
    pub(crate) fn once(once: Once) -> Transferable {
        let made_by = match once {
            Once::Deref { .. } => "derefInto()",
            Once::CopyInto { .. } => "copyInto()",
        };
        Transferable(Owned::Once(Arc::new(OnceSlot { made_by, payload: Mutex::new(Some(once)) })))
    }

    /// Data, copied into the isolate where this is used.
    pub fn value(value: impl Serialize) -> Result<Transferable> {
        Ok(Transferable(Owned::Value(value::to_value(&value)?)))
    }

    pub(crate) fn wire(wire: Wire) -> Transferable {
        Transferable(Owned::Wire(Arc::new(wire)))
    }
}

macro_rules! transferable_from {
    ($($ty:ty => $kind:ident),* $(,)?) => {$(
        impl From<$ty> for Transferable {
            fn from(handle: $ty) -> Transferable {
                Transferable(Owned::$kind(handle))
            }
        }
    )*};
}

transferable_from!(Callback => Callback, Reference => Reference, ExternalCopy => Copy);

/// Fails with the first argument whose conversion failed. Called before any argument is
/// used: a single-use one (`deref_into`) would otherwise be spent on a call that never runs.
pub(crate) fn all_converted(recv: Option<&Arg<'_>>, args: &[Arg<'_>]) -> Result<()> {
    match recv.into_iter().chain(args).find_map(|arg| match &arg.0 {
        Kind::Failed(e) => Some(e.clone()),
        _ => None,
    }) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

impl<'a> Arg<'a> {
    /// The owned form, for operations that run later on another thread: borrowed data is
    /// copied into a [`Value`] now.
    pub(crate) fn into_owned(self) -> Result<Arg<'static>> {
        Ok(Arg(Kind::Owned(match self.0 {
            Kind::Data(data) => Owned::Value(data.to_value()?),
            Kind::Owned(owned) => owned,
            Kind::Failed(e) => return Err(e),
        })))
    }

    /// Makes the JavaScript value in the current context of a locked isolate.
    pub(crate) fn to_js<'s>(&self, scope: &mut v8::PinScope<'s, '_>, inner: &Arc<IsolateInner>) -> Result<v8::Local<'s, v8::Value>> {
        let owned = match &self.0 {
            Kind::Data(data) => return data.to_v8(scope),
            Kind::Owned(owned) => owned,
            Kind::Failed(e) => return Err(e.clone()),
        };
        match owned {
            Owned::Value(v) => js::copy_in(scope, v),
            Owned::Wire(w) => js::from_wire(scope, w),
            Owned::Callback(c) => c.to_js(scope, inner),
            Owned::Reference(r) => r.local_in(scope, inner),
            Owned::Copy(c) => c.copy_in(scope, CopyIntoOptions::default()),
            Owned::Once(once) => once.use_once(|payload| match payload {
                Once::Deref { reference, release } => {
                    let value = reference.local_in(scope, inner)?;
                    if *release {
                        reference.release();
                    }
                    Ok(value)
                }
                Once::CopyInto { copy, options } => copy.copy_in(scope, *options),
            }),
        }
    }

    /// The value as it goes to an isolate in a worker process.
    pub(crate) fn to_remote(&self, remote: &Arc<RemoteIsolate>) -> Result<Input> {
        let owned = match &self.0 {
            Kind::Data(data) => return Ok(Input::Data(Wire { bytes: data.to_wire()?, shared: Vec::new() })),
            Kind::Owned(owned) => owned,
            Kind::Failed(e) => return Err(e.clone()),
        };
        Ok(match owned {
            Owned::Value(v) => Input::Data(Wire { bytes: wire::to_wire(v)?, shared: Vec::new() }),
            Owned::Wire(w) => Input::Data(Wire::clone(w)),
            Owned::Callback(c) => c.to_remote(remote),
            Owned::Reference(r) => Input::Reference { id: r.id_in(remote)?, release: false },
            Owned::Copy(c) => Input::Copy { copy: c.export()?, transfer_in: false },
            Owned::Once(once) => once.use_once(|payload| match payload {
                Once::Deref { reference, release } => {
                    // With no other handle left, this one goes when the transfer is used up,
                    // before the request is sent: the worker lets go of it after use instead.
                    let release = *release || reference.is_only_handle();
                    let input = Input::Reference { id: reference.id_in(remote)?, release };
                    if release {
                        // The worker releases it once used; this handle lets go now.
                        reference.forget();
                    }
                    Ok(input)
                }
                Once::CopyInto { copy, options } => {
                    let input = Input::Copy { copy: copy.export_into(options.transfer_in)?, transfer_in: options.transfer_in };
                    if options.release {
                        copy.release();
                    }
                    Ok(input)
                }
            })?,
        })
    }
}

/// The arguments of an operation as they go to a worker.
pub(crate) fn remote_args(args: &[Arg<'_>], remote: &Arc<RemoteIsolate>) -> Result<Vec<Input>> {
    all_converted(None, args)?;
    args.iter().map(|arg| arg.to_remote(remote)).collect()
}

/// Types that can be put into an isolate: anything `Serialize` (copied), [`Callback`]s,
/// [`Reference`]s to values of that isolate, [`ExternalCopy`]s, [`Transferable`]s and
/// [`Transferred`] results — and your own types, as one of those:
///
/// ```
/// use ivm::{IntoJs, Reference, Transferable};
///
/// /// A function of the isolate, passed as itself.
/// struct JsFunction(Reference);
///
/// impl IntoJs for JsFunction {
///     fn into_transferable(self) -> ivm::Result<Transferable> {
///         Ok(Transferable::from(self.0))
///     }
/// }
///
/// # let isolate = ivm::Isolate::new(Default::default())?;
/// # let context = isolate.create_context()?;
/// let double = JsFunction(context.eval("x => 2 * x")?);
/// context.set_global("double", double)?;
/// assert_eq!(context.eval::<u32>("double(21)")?, 42);
/// # Ok::<(), ivm::Error>(())
/// ```
pub trait IntoJs: Sized {
    /// The value as a [`Transferable`]: data ([`Transferable::value`]), a host function, a
    /// reference, an external copy.
    fn into_transferable(self) -> Result<Transferable>;

    /// Prepares the value. Called by ivm. `Serialize` data overrides it to keep the caller's
    /// value as it is until it is built in the isolate (no copy on the way).
    #[doc(hidden)]
    fn into_arg<'a>(self) -> Arg<'a>
    where
        Self: 'a,
    {
        match self.into_transferable() {
            Ok(transferable) => Arg(Kind::Owned(transferable.0)),
            Err(e) => Arg(Kind::Failed(e)),
        }
    }
}

impl<T: Serialize + Send + Sync> IntoJs for T {
    fn into_transferable(self) -> Result<Transferable> {
        Transferable::value(self)
    }

    fn into_arg<'a>(self) -> Arg<'a>
    where
        Self: 'a,
    {
        Arg(Kind::Data(Box::new(self)))
    }
}

macro_rules! into_js_handle {
    ($($ty:ty),* $(,)?) => {$(
        impl IntoJs for $ty {
            fn into_transferable(self) -> Result<Transferable> {
                Ok(Transferable::from(self))
            }
        }
        impl IntoJs for &$ty {
            fn into_transferable(self) -> Result<Transferable> {
                Ok(Transferable::from(self.clone()))
            }
        }
    )*};
}

into_js_handle!(Callback, Reference, ExternalCopy);

impl IntoJs for Transferable {
    fn into_transferable(self) -> Result<Transferable> {
        Ok(self)
    }
}

impl IntoJs for &Transferable {
    fn into_transferable(self) -> Result<Transferable> {
        Ok(self.clone())
    }
}

impl From<Transferred> for Transferable {
    fn from(result: Transferred) -> Transferable {
        Transferable(match result {
            Transferred::Value(v) => Owned::Value(v),
            Transferred::Reference(r) => Owned::Reference(r),
            Transferred::ExternalCopy(c) => Owned::Copy(c),
        })
    }
}

impl IntoJs for Transferred {
    fn into_transferable(self) -> Result<Transferable> {
        Ok(Transferable::from(self))
    }
}

/// Argument lists: tuples of [`IntoJs`] values (`()`, `(a,)`, `(a, b)`, ... up to 8) or a
/// `Vec<Transferable>`.
pub trait IntoArgs {
    /// Prepares the arguments. Called by ivm.
    #[doc(hidden)]
    fn into_args<'a>(self) -> Vec<Arg<'a>>
    where
        Self: 'a;
}

impl IntoArgs for Vec<Transferable> {
    fn into_args<'a>(self) -> Vec<Arg<'a>>
    where
        Self: 'a,
    {
        self.into_iter().map(|t| Arg(Kind::Owned(t.0))).collect()
    }
}

macro_rules! tuple_args {
    ($($name:ident),*) => {
        impl<$($name: IntoJs),*> IntoArgs for ($($name,)*) {
            #[allow(non_snake_case)]
            fn into_args<'a>(self) -> Vec<Arg<'a>> where Self: 'a {
                let ($($name,)*) = self;
                vec![$($name.into_arg()),*]
            }
        }
    };
}

tuple_args!();
tuple_args!(A);
tuple_args!(A, B);
tuple_args!(A, B, C);
tuple_args!(A, B, C, D);
tuple_args!(A, B, C, D, E);
tuple_args!(A, B, C, D, E, F);
tuple_args!(A, B, C, D, E, F, G);
tuple_args!(A, B, C, D, E, F, G, H);
