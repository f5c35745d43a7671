//! Node values from what a worker sends: ivm's [`Value`]s (read from V8's wire format by
//! ivm's own codec) built through N-API, and the outcomes every native call returns.

use std::ptr;
use std::time::Duration;

use ivm_client::{HeapStatistics, Value};
use napi::bindgen_prelude::ToNapiValue;
use napi::sys;

/// A native call's result for the JavaScript half: `{ value }`, `{ reference, typeof }` (a
/// handle to a value left in the isolate), `{ externalCopy: { bytes, buffers } }`, or
/// `{ error: { kind, name, message, stack } }` for it to throw as isolated-vm would.
pub enum Outcome {
    Value(Value),
    Reference { id: u64, type_of: String },
    ExternalCopy(ivm_client::protocol::Copy),
    Failed(ivm_client::Error),
}

impl Outcome {
    pub fn of(result: ivm_client::Result<Value>) -> Outcome {
        result.map_or_else(Outcome::Failed, Outcome::Value)
    }

    /// A worker's reply, read within `budget`.
    pub fn reply(reply: ivm_client::Result<ivm_client::protocol::Reply>, budget: ivm_client::value::wire::Budget) -> Outcome {
        reply.and_then(|reply| crate::reply_outcome(reply, budget)).unwrap_or_else(Outcome::Failed)
    }
}

/// The Node value of `value` (a failure leaves no exception pending).
pub fn node_value<'env>(env: &'env napi::Env, value: &Value) -> napi::Result<napi::bindgen_prelude::Unknown<'env>> {
    let raw = Builder { env: env.raw() }.value(value).inspect_err(|_| clear_exception(env.raw()))?;
    // SAFETY: `raw` was just made in `env`.
    unsafe { napi::bindgen_prelude::FromNapiValue::from_napi_value(env.raw(), raw) }
}

pub fn number(n: f64) -> Value {
    Value::Number(n)
}

/// isolated-vm's `[cpuTime, wallTime]`: BigInt nanoseconds.
pub fn times(cpu: Duration, wall: Duration) -> Value {
    let nanos = |d: Duration| Value::BigInt(ivm_client::BigInt::from(d.as_nanos()));
    Value::Array(vec![nanos(cpu), nanos(wall)])
}

/// `getHeapStatistics()`, with V8's (and Node's `v8.getHeapStatistics()`) names.
pub fn heap(s: &HeapStatistics) -> Value {
    let fields = [
        ("total_heap_size", s.total_heap_size),
        ("total_heap_size_executable", s.total_heap_size_executable),
        ("total_physical_size", s.total_physical_size),
        ("total_available_size", s.total_available_size),
        ("used_heap_size", s.used_heap_size),
        ("heap_size_limit", s.heap_size_limit),
        ("malloced_memory", s.malloced_memory),
        ("peak_malloced_memory", s.peak_malloced_memory),
        ("number_of_native_contexts", s.number_of_native_contexts),
        ("number_of_detached_contexts", s.number_of_detached_contexts),
        ("externally_allocated_size", s.externally_allocated_size),
    ];
    let mut object: Vec<(String, Value)> = fields.into_iter().map(|(k, v)| (k.to_owned(), Value::Number(v as f64))).collect();
    object.push(("does_zap_garbage".into(), Value::Number(f64::from(u8::from(s.does_zap_garbage)))));
    Value::Object(object.into_iter().collect())
}

/// An N-API call's status as a `Result`.
fn check(status: sys::napi_status) -> napi::Result<()> {
    if status == sys::Status::napi_ok { Ok(()) } else { Err(napi::Error::from_reason(format!("N-API call failed ({status})"))) }
}

struct Builder {
    env: sys::napi_env,
}

impl Builder {
    fn string(&self, s: &str) -> napi::Result<sys::napi_value> {
        let mut out = ptr::null_mut();
        check(unsafe { sys::napi_create_string_utf8(self.env, s.as_ptr().cast(), s.len() as isize, &mut out) })?;
        Ok(out)
    }

    fn object(&self) -> napi::Result<sys::napi_value> {
        let mut out = ptr::null_mut();
        check(unsafe { sys::napi_create_object(self.env, &mut out) })?;
        Ok(out)
    }

    fn set(&self, object: sys::napi_value, key: &str, value: sys::napi_value) -> napi::Result<()> {
        let name = self.string(key)?;
        if key == "__proto__" {
            // An own property, as a copy makes it: assigning would set the prototype.
            let property = sys::napi_property_descriptor {
                utf8name: ptr::null(),
                name,
                method: None,
                getter: None,
                setter: None,
                value,
                attributes: sys::PropertyAttributes::writable | sys::PropertyAttributes::enumerable | sys::PropertyAttributes::configurable,
                data: ptr::null_mut(),
            };
            return check(unsafe { sys::napi_define_properties(self.env, object, 1, &property) });
        }
        check(unsafe { sys::napi_set_property(self.env, object, name, value) })
    }

    /// `new globalThis[constructor](...args)`.
    fn construct(&self, constructor: &str, args: &[sys::napi_value]) -> napi::Result<sys::napi_value> {
        let (mut global, mut class, mut out) = (ptr::null_mut(), ptr::null_mut(), ptr::null_mut());
        let name = std::ffi::CString::new(constructor).map_err(|e| napi::Error::from_reason(e.to_string()))?;
        check(unsafe { sys::napi_get_global(self.env, &mut global) })?;
        check(unsafe { sys::napi_get_named_property(self.env, global, name.as_ptr(), &mut class) })?;
        check(unsafe { sys::napi_new_instance(self.env, class, args.len(), args.as_ptr(), &mut out) })?;
        Ok(out)
    }

    fn array(&self, items: &[Value]) -> napi::Result<sys::napi_value> {
        let mut out = ptr::null_mut();
        check(unsafe { sys::napi_create_array_with_length(self.env, items.len(), &mut out) })?;
        for (i, item) in items.iter().enumerate() {
            let item = self.value(item)?;
            check(unsafe { sys::napi_set_element(self.env, out, i as u32, item) })?;
        }
        Ok(out)
    }

    /// The Node value of `value`. Nesting is bounded by the reader (1,000 levels); deep data
    /// moves to a stack of its own, as every recursion over nested data does.
    fn value(&self, value: &Value) -> napi::Result<sys::napi_value> {
        ivm_client::value::deep(value.nests(), || self.build(value))
    }

    fn build(&self, value: &Value) -> napi::Result<sys::napi_value> {
        let env = self.env;
        let mut out = ptr::null_mut();
        match value {
            Value::Undefined => check(unsafe { sys::napi_get_undefined(env, &mut out) })?,
            Value::Null => check(unsafe { sys::napi_get_null(env, &mut out) })?,
            Value::Bool(b) => check(unsafe { sys::napi_get_boolean(env, *b, &mut out) })?,
            Value::Number(n) => check(unsafe { sys::napi_create_double(env, *n, &mut out) })?,
            Value::String(s) => out = self.string(s)?,
            Value::BigInt(b) => {
                let (negative, words) = b.words();
                check(unsafe { sys::napi_create_bigint_words(env, i32::from(negative), words.len(), words.as_ptr(), &mut out) })?
            }
            Value::Array(items) => out = self.array(items)?,
            Value::Object(fields) => {
                out = self.object()?;
                for (key, field) in fields {
                    let field = self.value(field)?;
                    self.set(out, key, field)?;
                }
            }
            Value::Bytes(bytes) => {
                let (mut data, mut buffer) = (ptr::null_mut(), ptr::null_mut());
                check(unsafe { sys::napi_create_arraybuffer(env, bytes.len(), &mut data, &mut buffer) })?;
                if !bytes.is_empty() {
                    // SAFETY: N-API gave `data` as `bytes.len()` writable bytes.
                    unsafe { ptr::copy_nonoverlapping(bytes.as_ptr(), data.cast::<u8>(), bytes.len()) };
                }
                check(unsafe { sys::napi_create_typedarray(env, sys::TypedarrayType::uint8_array, bytes.len(), buffer, 0, &mut out) })?
            }
            Value::Date(ms) => check(unsafe { sys::napi_create_date(env, *ms, &mut out) })?,
            Value::Map(entries) => {
                let pairs: Vec<Value> = entries.iter().map(|(k, v)| Value::Array(vec![k.clone(), v.clone()])).collect();
                out = self.construct("Map", &[self.array(&pairs)?])?
            }
            Value::Set(items) => out = self.construct("Set", &[self.array(items)?])?,
            Value::RegExp { source, flags } => out = self.construct("RegExp", &[self.string(source)?, self.string(flags)?])?,
            Value::Error(e) => {
                let class = match e.name.as_str() {
                    "EvalError" | "RangeError" | "ReferenceError" | "SyntaxError" | "TypeError" | "URIError" => e.name.as_str(),
                    _ => "Error",
                };
                out = self.construct(class, &[self.string(&e.message)?])?;
                if let Some(stack) = &e.stack {
                    self.set(out, "stack", self.string(stack)?)?;
                }
                if class == "Error" && !e.name.is_empty() && e.name != "Error" {
                    self.set(out, "name", self.string(&e.name)?)?;
                }
            }
        }
        Ok(out)
    }

    fn error(&self, e: &ivm_client::Error) -> napi::Result<sys::napi_value> {
        let out = self.object()?;
        self.set(out, "kind", self.string(e.kind().as_str())?)?;
        let (name, message, stack) = match e {
            ivm_client::Error::Exception(js) => (js.name.as_str(), js.message.clone(), js.stack.clone()),
            ivm_client::Error::Timeout { stack } | ivm_client::Error::CpuLimit { stack } => ("Error", e.message().to_owned(), Some(stack.clone()).filter(|s| !s.is_empty())),
            other => ("Error", other.message().to_owned(), None),
        };
        self.set(out, "name", self.string(name)?)?;
        self.set(out, "message", self.string(&message)?)?;
        if let Some(stack) = stack {
            self.set(out, "stack", self.string(&stack)?)?;
        }
        Ok(out)
    }
}

/// Clears the JavaScript exception a failed N-API call may have left (`new RegExp(...)` of a
/// pattern Node's V8 refuses, say), so that it neither escapes into Node nor fails the next
/// call.
pub fn clear_exception(env: sys::napi_env) {
    let mut exception = ptr::null_mut();
    // SAFETY: a plain N-API call on the caller's env.
    unsafe { sys::napi_get_and_clear_last_exception(env, &mut exception) };
}

/// The Node value of `outcome`. It never fails: a value that cannot be made in Node (its
/// pending exception cleared) becomes a `conversion` error outcome.
pub fn outcome_value(env: sys::napi_env, outcome: Outcome) -> sys::napi_value {
    match build_outcome(env, &outcome) {
        Ok(value) => value,
        Err(e) => {
            clear_exception(env);
            let failed = Outcome::Failed(ivm_client::Error::Conversion(format!("the value cannot be made in Node: {}", e.reason)));
            build_outcome(env, &failed).unwrap_or(ptr::null_mut())
        }
    }
}

impl ToNapiValue for Outcome {
    unsafe fn to_napi_value(env: sys::napi_env, outcome: Self) -> napi::Result<sys::napi_value> {
        Ok(outcome_value(env, outcome))
    }
}

fn build_outcome(env: sys::napi_env, outcome: &Outcome) -> napi::Result<sys::napi_value> {
    let builder = Builder { env };
    let out = builder.object()?;
    match &outcome {
        Outcome::Value(value) => builder.set(out, "value", builder.value(value)?)?,
        Outcome::Reference { id, type_of } => {
            builder.set(out, "reference", builder.value(&Value::Number(*id as f64))?)?;
            builder.set(out, "typeof", builder.string(type_of)?)?;
        }
        Outcome::ExternalCopy(copy) => {
            let buffers: Vec<Value> = copy.buffers.iter().map(|b| Value::Bytes(b.to_vec())).collect();
            let made = builder.object()?;
            builder.set(made, "bytes", builder.value(&Value::Bytes(copy.bytes.clone()))?)?;
            builder.set(made, "buffers", builder.array(&buffers)?)?;
            builder.set(out, "externalCopy", made)?;
        }
        Outcome::Failed(e) => builder.set(out, "error", builder.error(e)?)?,
    }
    Ok(out)
}
