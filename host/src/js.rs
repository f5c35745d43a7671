//! Copying between V8 values and Rust, with the isolate locked and inside the operation's
//! timeout (getters met while copying run JavaScript).
//!
//! Primitives are made and read through the embedder API directly. Anything else goes through
//! V8's own structured-clone serializer and the [wire](crate::value::wire) codec: Rust data is
//! written as wire bytes and V8 builds the objects; V8 serializes objects and Rust reads the
//! bytes into the type asked for.

use std::cell::RefCell;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::value::{BigInt, Value, wire};
use crate::Error;
use crate::data::ScriptOrigin;
use crate::isolate::memory::MemoryGuard;

/// Copies a primitive; `None` for objects and functions.
pub(crate) fn primitive(scope: &v8::PinScope<'_, '_>, value: v8::Local<v8::Value>) -> Option<Value> {
    Some(if value.is_undefined() {
        Value::Undefined
    } else if value.is_null() {
        Value::Null
    } else if value.is_boolean() {
        Value::Bool(value.is_true())
    } else if value.is_number() {
        Value::Number(value.number_value(scope).unwrap_or(f64::NAN))
    } else if value.is_string() {
        Value::String(value.to_rust_string_lossy(scope))
    } else if let Ok(big) = v8::Local::<v8::BigInt>::try_from(value) {
        let mut words = vec![0u64; big.word_count()];
        let (negative, words) = big.to_words_array(&mut words);
        Value::BigInt(BigInt::from_words(negative, words.to_vec()))
    } else {
        return None;
    })
}

/// Makes a primitive [`Value`]; `None` for the others.
fn make_primitive<'s>(scope: &v8::PinScope<'s, '_>, value: &Value) -> Result<Option<v8::Local<'s, v8::Value>>, Error> {
    Ok(Some(match value {
        Value::Undefined => v8::undefined(scope).into(),
        Value::Null => v8::null(scope).into(),
        Value::Bool(b) => v8::Boolean::new(scope, *b).into(),
        Value::Number(n) => v8::Number::new(scope, *n).into(),
        Value::BigInt(b) => {
            let (negative, words) = b.words();
            v8::BigInt::new_from_words(scope, negative, words).ok_or_else(threw)?.into()
        }
        Value::String(s) => v8::String::new(scope, s)
            .ok_or_else(|| Error::Conversion("a string is longer than V8's maximum string length".into()))?
            .into(),
        _ => return Ok(None),
    }))
}

/// The error for "JavaScript threw": the caller's `TryCatch` holds the real exception.
pub(crate) fn threw() -> Error {
    Error::Exception(Box::default())
}

/// Whether `error` is [`threw`]'s marker rather than an error of its own.
pub(crate) fn is_threw(error: &Error) -> bool {
    matches!(error, Error::Exception(e) if e.name.is_empty() && e.message.is_empty())
}

/// Copies any value into a [`Value`] (see the mapping in [`crate::value`]).
pub(crate) fn copy_out<'s>(scope: &mut v8::PinScope<'s, '_>, value: v8::Local<'s, v8::Value>) -> Result<Value, Error> {
    if let Some(p) = primitive(scope, value) {
        return Ok(p);
    }
    let clone = serialize(scope, value, &[])?;
    wire::read_value(&clone.bytes, &clone, copy_budget(scope))
}

/// What may be made in the host of data a script of this isolate made.
pub(crate) fn copy_budget(isolate: &v8::Isolate) -> wire::Budget {
    wire::Budget::of_isolate(MemoryGuard::of(isolate).limit())
}

/// Reads any value into a `T`.
pub(crate) fn from_v8<'s, T: DeserializeOwned + 'static>(
    scope: &mut v8::PinScope<'s, '_>,
    value: v8::Local<'s, v8::Value>,
) -> Result<T, Error> {
    if let Some(p) = primitive(scope, value) {
        return crate::value::from_value(p);
    }
    let clone = serialize(scope, value, &[])?;
    wire::from_wire(&clone.bytes, &clone, copy_budget(scope))
}

/// Makes a [`Value`] in the scope's current context.
pub(crate) fn copy_in<'s>(scope: &mut v8::PinScope<'s, '_>, value: &Value) -> Result<v8::Local<'s, v8::Value>, Error> {
    match make_primitive(scope, value)? {
        Some(p) => Ok(p),
        None => deserialize(scope, &wire::to_wire(value)?, Incoming::default()),
    }
}

/// Builds any `Serialize` value in the scope's current context: objects and arrays that JSON
/// represents exactly through V8's JSON parser, everything else through its deserializer.
pub(crate) fn to_v8<'s, T: Serialize + ?Sized>(scope: &mut v8::PinScope<'s, '_>, value: &T) -> Result<v8::Local<'s, v8::Value>, Error> {
    if let Some(json) = wire::to_json(value)?
        && let Some(b'{' | b'[') = json.first()
    {
        return parse_json(scope, &json);
    }
    let bytes = wire::to_wire(value)?;
    if let Some(p) = wire_primitive(scope, &bytes)? {
        return Ok(p);
    }
    deserialize(scope, &bytes, Incoming::default())
}

/// A primitive in wire bytes, made directly; `None` for anything else, which V8 builds.
fn wire_primitive<'s>(scope: &v8::PinScope<'s, '_>, bytes: &[u8]) -> Result<Option<v8::Local<'s, v8::Value>>, Error> {
    if !wire::is_primitive(bytes) {
        return Ok(None);
    }
    make_primitive(scope, &wire::read_value(bytes, &wire::NoStores, wire::Budget::HOST)?)
}

/// Builds a value that came from another process in the wire format; the SharedArrayBuffers
/// it refers to arrive as copies of their contents.
pub(crate) fn from_wire<'s>(scope: &mut v8::PinScope<'s, '_>, data: &wire::Wire) -> Result<v8::Local<'s, v8::Value>, Error> {
    if let Some(p) = wire_primitive(scope, &data.bytes)? {
        return Ok(p);
    }
    let memory = MemoryGuard::of(scope);
    let shared = data
        .shared
        .iter()
        .map(|bytes| memory.adopt(bytes.to_vec()).map(|store| store.make_shared()))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| Error::js("RangeError", "Array buffer allocation failed"))?;
    deserialize(scope, &data.bytes, Incoming { shared, ..Default::default() })
}

/// `JSON.parse` of text the JSON writer made (no reviver: no JavaScript runs).
fn parse_json<'s>(scope: &mut v8::PinScope<'s, '_>, json: &[u8]) -> Result<v8::Local<'s, v8::Value>, Error> {
    // The text and the objects it becomes both live on the heap for a moment.
    if !MemoryGuard::of(scope).fits(json.len() * 2) {
        return Err(Error::js("RangeError", "Array buffer allocation failed"));
    }
    // ASCII text (the usual case) is also Latin-1: V8 takes it without decoding UTF-8.
    let text = if json.is_ascii() {
        v8::String::new_from_one_byte(scope, json, v8::NewStringType::Normal)
    } else {
        v8::String::new_from_utf8(scope, json, v8::NewStringType::Normal)
    }
    .ok_or_else(|| Error::Conversion("the value is longer than V8's maximum string length".into()))?;
    v8::json::parse(scope, text).ok_or_else(threw)
}

/// What V8's serializer produced: the bytes, and the shared memory and compiled modules they
/// refer to by id.
#[derive(Default)]
pub(crate) struct Clone {
    pub(crate) bytes: Vec<u8>,
    pub(crate) shared: Vec<v8::SharedRef<v8::BackingStore>>,
    pub(crate) wasm_modules: Vec<Arc<v8::CompiledWasmModule>>,
}

/// Serializes `value` with V8's structured clone; the `transfer` buffers are written as
/// transfers (ids in order), not copied. A value that cannot be cloned is
/// [`Error::Conversion`] with V8's message (e.g. `#<Promise> could not be cloned.`).
pub(crate) fn serialize<'s>(
    scope: &mut v8::PinScope<'s, '_>,
    value: v8::Local<'s, v8::Value>,
    transfer: &[v8::Local<'s, v8::ArrayBuffer>],
) -> Result<Clone, Error> {
    let state = std::rc::Rc::new(RefCell::new(SerializerState::default()));
    let serializer = v8::ValueSerializer::new(scope, Box::new(SerializerDelegate(state.clone())));
    use v8::ValueSerializerHelper;
    serializer.write_header();
    for (id, buffer) in transfer.iter().enumerate() {
        serializer.transfer_array_buffer(id as u32, *buffer);
    }
    let context = scope.get_current_context();
    // V8 grows its buffer through the global allocator: with ivm's installed, the buffer is
    // held to the copy's budget (see `crate::alloc`).
    let budget = copy_budget(scope);
    let (written, refused) = crate::alloc::limited(budget.bytes(), || serializer.write_value(context, value));
    let bytes = serializer.release();
    drop(serializer);
    let state = state.take();
    match (written, state.clone_error) {
        (Some(true), _) => Ok(Clone { bytes, shared: state.shared, wasm_modules: state.wasm_modules }),
        // The serializer threw its out-of-memory DataCloneError; the caller gets ours.
        _ if refused => Err(budget.exceeded()),
        (_, Some(message)) => Err(Error::Conversion(message)),
        _ => Err(threw()),
    }
}

#[derive(Default)]
struct SerializerState {
    shared: Vec<v8::SharedRef<v8::BackingStore>>,
    wasm_modules: Vec<Arc<v8::CompiledWasmModule>>,
    /// V8's DataCloneError message, when the value cannot be cloned.
    clone_error: Option<String>,
}

struct SerializerDelegate(std::rc::Rc<RefCell<SerializerState>>);

impl v8::ValueSerializerImpl for SerializerDelegate {
    fn throw_data_clone_error<'s>(&self, scope: &mut v8::PinScope<'s, '_>, message: v8::Local<'s, v8::String>) {
        self.0.borrow_mut().clone_error = Some(message.to_rust_string_lossy(scope));
        let error = v8::Exception::type_error(scope, message);
        scope.throw_exception(error);
    }

    fn get_shared_array_buffer_id<'s>(&self, _: &mut v8::PinScope<'s, '_>, buffer: v8::Local<'s, v8::SharedArrayBuffer>) -> Option<u32> {
        let mut state = self.0.borrow_mut();
        state.shared.push(buffer.get_backing_store());
        Some(state.shared.len() as u32 - 1)
    }

    fn get_wasm_module_transfer_id(&self, _: &mut v8::PinScope<'_, '_>, module: v8::Local<v8::WasmModuleObject>) -> Option<u32> {
        let mut state = self.0.borrow_mut();
        state.wasm_modules.push(Arc::new(module.get_compiled_module()));
        Some(state.wasm_modules.len() as u32 - 1)
    }
}

/// What travels beside serialized bytes into an isolate.
#[derive(Default)]
pub(crate) struct Incoming<'s> {
    /// ArrayBuffers for the transfer ids, in order.
    pub(crate) transferred: Vec<v8::Local<'s, v8::ArrayBuffer>>,
    pub(crate) shared: Vec<v8::SharedRef<v8::BackingStore>>,
    pub(crate) wasm_modules: Vec<Arc<v8::CompiledWasmModule>>,
}

/// Builds a value from serialized bytes in the scope's current context. Data that would not
/// fit under the isolate's memory limit is refused first, as isolated-vm does:
/// `RangeError: Array buffer allocation failed`.
pub(crate) fn deserialize<'s>(scope: &mut v8::PinScope<'s, '_>, bytes: &[u8], incoming: Incoming<'s>) -> Result<v8::Local<'s, v8::Value>, Error> {
    if !MemoryGuard::of(scope).fits(bytes.len()) {
        return Err(Error::js("RangeError", "Array buffer allocation failed"));
    }
    let Incoming { transferred, shared, wasm_modules } = incoming;
    let deserializer = v8::ValueDeserializer::new(scope, Box::new(DeserializerDelegate { shared, wasm_modules }), bytes);
    let context = scope.get_current_context();
    use v8::ValueDeserializerHelper;
    deserializer.read_header(context).ok_or_else(threw)?;
    for (id, buffer) in transferred.into_iter().enumerate() {
        deserializer.transfer_array_buffer(id as u32, buffer);
    }
    deserializer.read_value(context).ok_or_else(threw)
}

struct DeserializerDelegate {
    shared: Vec<v8::SharedRef<v8::BackingStore>>,
    wasm_modules: Vec<Arc<v8::CompiledWasmModule>>,
}

impl v8::ValueDeserializerImpl for DeserializerDelegate {
    fn get_shared_array_buffer_from_id<'s>(&self, scope: &mut v8::PinScope<'s, '_>, id: u32) -> Option<v8::Local<'s, v8::SharedArrayBuffer>> {
        Some(v8::SharedArrayBuffer::with_backing_store(scope, self.shared.get(id as usize)?))
    }

    fn get_wasm_module_from_id<'s>(&self, scope: &mut v8::PinScope<'s, '_>, id: u32) -> Option<v8::Local<'s, v8::WasmModuleObject>> {
        v8::WasmModuleObject::from_compiled_module(scope, self.wasm_modules.get(id as usize)?)
    }
}

impl wire::Stores for Clone {
    fn transferred(&self, _: u32) -> Option<Vec<u8>> {
        None
    }
    fn shared(&self, id: u32) -> Option<Vec<u8>> {
        Some(store_bytes(self.shared.get(id as usize)?))
    }
}

/// A copy of the bytes a backing store holds.
pub(crate) fn store_bytes(store: &v8::SharedRef<v8::BackingStore>) -> Vec<u8> {
    // SAFETY: the store is alive (the caller holds it) and `byte_length` bytes long.
    store.data().map_or_else(Vec::new, |data| unsafe { std::slice::from_raw_parts(data.as_ptr() as *const u8, store.byte_length()) }.to_vec())
}

/// Reads a host function's arguments into `A` the way JavaScript reads an argument list: into
/// a tuple, missing arguments are `undefined` (so trailing `Option`s are optional) and extra
/// ones are ignored; `()` takes none; a `Vec<T>` takes them all. A [`Value`] is the array of
/// all of them.
pub(crate) fn from_v8_args<'s, A: DeserializeOwned + 'static>(
    scope: &mut v8::PinScope<'s, '_>,
    args: &[v8::Local<'s, v8::Value>],
) -> Result<A, Error> {
    let list = args.iter().map(|arg| copy_out(scope, *arg)).collect::<Result<Vec<_>, _>>()?;
    args_from_list(list)
}

/// [`from_v8_args`] for arguments already copied out (a call from a worker process).
pub(crate) fn args_from_list<A: DeserializeOwned + 'static>(list: Vec<Value>) -> Result<A, Error> {
    if std::any::TypeId::of::<A>() == std::any::TypeId::of::<Value>() {
        return crate::value::from_value(Value::Array(list));
    }
    A::deserialize(ArgList(list))
}

/// A host function's argument list, read as JavaScript reads one.
struct ArgList(Vec<Value>);

impl<'de> serde::Deserializer<'de> for ArgList {
    type Error = Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        Value::Array(self.0).deserialize_any(visitor)
    }

    fn deserialize_tuple<V: serde::de::Visitor<'de>>(mut self, len: usize, visitor: V) -> Result<V::Value, Error> {
        self.0.resize(len, Value::Undefined);
        Value::Array(self.0).deserialize_tuple(len, visitor)
    }

    /// `()` takes no arguments, and ignores any it is given.
    fn deserialize_unit<V: serde::de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit_struct newtype_struct seq tuple_struct map struct enum identifier ignored_any
    }
}

/// Where code comes from, for V8.
pub(crate) fn origin<'s>(scope: &v8::PinScope<'s, '_>, origin: &ScriptOrigin, is_module: bool) -> Result<v8::ScriptOrigin<'s>, Error> {
    let name = v8::String::new(scope, &origin.filename)
        .ok_or_else(|| Error::InvalidArgument("the filename is too long".into()))?;
    Ok(v8::ScriptOrigin::new(scope, name.into(), origin.line_offset, origin.column_offset, false, -1, None, false, false, is_module, None))
}

/// Source text for V8.
pub(crate) fn source_string<'s>(scope: &v8::PinScope<'s, '_>, code: &str) -> Result<v8::Local<'s, v8::String>, Error> {
    v8::String::new(scope, code).ok_or_else(|| Error::InvalidArgument("the code is longer than V8's maximum string length".into()))
}
