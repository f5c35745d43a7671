//! Exceptions crossing the isolate boundary, both ways.
//!
//! Out of an isolate: a thrown value becomes a [`JsError`] (class name, message, stack, and —
//! unlike isolated-vm — `cause` and `AggregateError.errors`). Into an isolate: an [`Error`]
//! from the host (a host function's failure, or an exception from another isolate) becomes a
//! JavaScript error of the same class, whose stack is the inner stack, a
//! `    at (<isolated-vm boundary>)` marker line, and the frames of the JavaScript that made the
//! call.

use crate::error::{Error, JsError, Location};

/// isolated-vm's message for a thrown value that is an object but not an `Error`.
const NON_ERROR_THROWN: &str =
    "An object was thrown from supplied code within isolated-vm, but that object was not an instance of `Error`.";
/// The marker line between the stack inside an isolate and the stack of its caller.
const BOUNDARY: &str = "    at (<isolated-vm boundary>)";
/// `cause` chains and `errors` lists are followed this deep.
const MAX_NESTING: usize = 8;
/// At most this many errors (the thrown one, causes, `errors` entries) are described.
const MAX_DESCRIBED: usize = 64;
/// BigInts longer than this are written in hex: decimal takes time quadratic in their length.
const DECIMAL_BIGINT_BITS: usize = 1 << 16;

/// The exception a `TryCatch` caught.
pub(crate) fn caught(tc: &mut v8::PinnedRef<'_, v8::TryCatch<v8::HandleScope>>) -> JsError {
    let exception_value = tc.exception();
    let message = tc.message();
    match exception_value {
        Some(e) => exception(tc, e, message),
        None => JsError { name: "Error".into(), message: "Unknown exception".into(), ..Default::default() },
    }
}

/// Describes a thrown value. Reading `name`, `message`, `stack`, `cause` and `errors` may run
/// getters; anything they throw is ignored. The description is bounded: at most
/// [`MAX_DESCRIBED`] errors, each met once (a cycle or a shared error is not followed again),
/// and no more text than the isolate's memory limit; what is left out is counted in
/// [`JsError::omitted`].
pub(crate) fn exception<'s>(
    scope: &mut v8::PinScope<'s, '_>,
    thrown: v8::Local<'s, v8::Value>,
    message: Option<v8::Local<'s, v8::Message>>,
) -> JsError {
    let location = message.map(|m| Location {
        filename: m.get_script_resource_name(scope).map(|n| n.to_rust_string_lossy(scope)).unwrap_or_default(),
        line: m.get_line_number(scope).unwrap_or(0) as u32,
        // V8 gives -1 for an unknown column (an exception made by the embedder, e.g. a copy
        // that nests too deep): 0 then, as for an unknown line.
        column: u32::try_from(m.get_start_column()).map_or(0, |column| column + 1),
    });
    let text_budget = crate::isolate::memory::MemoryGuard::of(scope).limit();
    let mut budget = Budget { errors: MAX_DESCRIBED, text: text_budget, seen: Vec::new() };
    JsError { location, ..describe(scope, thrown, 0, &mut budget) }
}

/// What is left for the rest of a description.
struct Budget<'s> {
    errors: usize,
    /// Bytes of text.
    text: usize,
    /// The error objects described so far.
    seen: Vec<v8::Local<'s, v8::Object>>,
}

impl Budget<'_> {
    /// `value` as text, cut to what is left of the budget.
    fn text(&mut self, scope: &mut v8::PinScope<'_, '_>, value: v8::Local<'_, v8::Value>) -> String {
        let mut text = match v8::Local::<v8::BigInt>::try_from(value) {
            Ok(big) if big.word_count() * 64 > DECIMAL_BIGINT_BITS => hex(scope, big),
            _ => value.to_rust_string_lossy(scope),
        };
        if text.len() > self.text {
            cut(&mut text, self.text);
        }
        self.text = self.text.saturating_sub(text.len());
        text
    }
}

/// Cuts `text` at the last character boundary at or before byte `end`, marking the cut with `…`.
pub(crate) fn cut(text: &mut String, end: usize) {
    let end = (0..=end).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
    text.truncate(end);
    text.push('…');
}

/// A BigInt in hex (`0x…`, `-0x…`), which takes time linear in its length.
fn hex(scope: &mut v8::PinScope<'_, '_>, big: v8::Local<'_, v8::BigInt>) -> String {
    let mut words = vec![0u64; big.word_count()];
    let (negative, words) = big.to_words_array(&mut words);
    let _ = scope;
    let mut text = String::from(if negative { "-0x" } else { "0x" });
    let mut digits = words.iter().rev().map(|w| format!("{w:016x}")).collect::<String>();
    let leading = digits.len() - digits.trim_start_matches('0').len();
    digits.drain(..leading.min(digits.len().saturating_sub(1)));
    text.push_str(&digits);
    text.push('n');
    text
}

fn describe<'s>(scope: &mut v8::PinScope<'s, '_>, thrown: v8::Local<'s, v8::Value>, depth: usize, budget: &mut Budget<'s>) -> JsError {
    budget.errors = budget.errors.saturating_sub(1);
    if !thrown.is_object() {
        return JsError { message: budget.text(scope, thrown), ..Default::default() };
    }
    if !thrown.is_native_error() {
        return JsError { name: "Error".into(), message: NON_ERROR_THROWN.into(), ..Default::default() };
    }
    let object = thrown.to_object(scope).expect("is an object");
    budget.seen.push(object);
    v8::tc_scope!(let tc, scope);
    let get = |tc: &mut v8::PinScope<'s, '_>, key: &str| -> Option<v8::Local<'s, v8::Value>> {
        let key = v8::String::new(tc, key)?;
        object.get(tc, key.into()).filter(|v| !v.is_undefined())
    };
    let (name, message, stack, cause, errors) = (get(tc, "name"), get(tc, "message"), get(tc, "stack"), get(tc, "cause"), get(tc, "errors"));
    let mut error = JsError {
        name: name.map(|v| budget.text(tc, v)).unwrap_or_else(|| "Error".into()),
        message: message.map(|v| budget.text(tc, v)).unwrap_or_default(),
        stack: stack.filter(|s| s.is_string()).map(|s| budget.text(tc, s)),
        ..Default::default()
    };
    let mut nested: Vec<(bool, v8::Local<'s, v8::Value>)> = cause.map(|c| (true, c)).into_iter().collect();
    let list = errors.and_then(|e| v8::Local::<v8::Array>::try_from(e).ok());
    if let Some(list) = list {
        // Only as many entries as the budget could take are read.
        let readable = list.length().min(budget.errors as u32 + 1);
        error.omitted += (list.length() - readable) as usize;
        nested.extend((0..readable).filter_map(|i| list.get_index(tc, i)).map(|item| (false, item)));
    }
    for (is_cause, value) in nested {
        let repeated = value.is_object()
            && value.to_object(tc).is_some_and(|o| budget.seen.iter().any(|seen| seen.strict_equals(o.into())));
        if depth >= MAX_NESTING || budget.errors == 0 || repeated {
            error.omitted += 1;
            continue;
        }
        let described = describe(tc, value, depth + 1, budget);
        if is_cause {
            error.cause = Some(Box::new(described));
        } else {
            error.errors.push(described);
        }
    }
    error
}

/// A compile error, with isolated-vm's ` [filename:line:column]` suffix on a SyntaxError.
pub(crate) fn compile_error(tc: &mut v8::PinnedRef<'_, v8::TryCatch<v8::HandleScope>>) -> Error {
    if tc.has_terminated() {
        return Error::disposed("Isolate was disposed during execution");
    }
    let mut error = caught(tc);
    if error.name == "SyntaxError" && let Some(loc) = &error.location {
        error.message = format!("{} [{}:{}:{}]", error.message, loc.filename, loc.line, loc.column);
        // The stack's first line repeats the message; keep the two in agreement.
        let frames = error.stack.as_deref().and_then(|s| s.split_once('\n')).map(|(_, rest)| rest);
        error.stack = Some(match frames {
            Some(frames) => format!("SyntaxError: {}\n{frames}", error.message),
            None => format!("SyntaxError: {}", error.message),
        });
    }
    Error::Exception(Box::new(error))
}

/// Throws `error` in the current context.
pub(crate) fn throw(scope: &mut v8::PinScope<'_, '_>, error: &Error) {
    let value = to_js(scope, error);
    scope.throw_exception(value);
}

/// `error` as a JavaScript value of the current context (an error object of the same class,
/// or the thrown primitive).
pub(crate) fn to_js<'s>(scope: &mut v8::PinScope<'s, '_>, error: &Error) -> v8::Local<'s, v8::Value> {
    match error {
        Error::Exception(e) => js_error(scope, e),
        other => js_error(
            scope,
            &JsError { name: other.name().into(), message: other.message().into(), ..Default::default() },
        ),
    }
}

fn js_error<'s>(scope: &mut v8::PinScope<'s, '_>, e: &JsError) -> v8::Local<'s, v8::Value> {
    let message = v8::String::new(scope, &e.message).unwrap_or_else(|| v8::String::empty(scope));
    if e.name.is_empty() {
        // A thrown primitive: its string form is all that was kept.
        return message.into();
    }
    let value = match e.name.as_str() {
        "TypeError" => v8::Exception::type_error(scope, message),
        "RangeError" => v8::Exception::range_error(scope, message),
        "ReferenceError" => v8::Exception::reference_error(scope, message),
        "SyntaxError" => v8::Exception::syntax_error(scope, message),
        _ => v8::Exception::error(scope, message),
    };
    let Some(object) = value.to_object(scope) else { return value };
    let set = |scope: &mut v8::PinScope<'s, '_>, key: &str, v: v8::Local<'s, v8::Value>, enumerable: bool| {
        if let Some(key) = v8::String::new(scope, key) {
            let attr = if enumerable { v8::PropertyAttribute::NONE } else { v8::PropertyAttribute::DONT_ENUM };
            object.define_own_property(scope, key.into(), v, attr);
        }
    };
    if !matches!(e.name.as_str(), "Error" | "TypeError" | "RangeError" | "ReferenceError" | "SyntaxError")
        && let Some(name) = v8::String::new(scope, &e.name)
    {
        set(scope, "name", name.into(), false);
    }
    if let Some(inner) = &e.stack {
        let stack_key = v8::String::new(scope, "stack").map(Into::into);
        let own = stack_key.and_then(|k| object.get(scope, k)).map(|s| s.to_rust_string_lossy(scope)).unwrap_or_default();
        let combined = match own.split_once('\n') {
            Some((_, frames)) => format!("{inner}\n{BOUNDARY}\n{frames}"),
            None => inner.clone(),
        };
        if let Some(stack) = v8::String::new(scope, &combined) {
            set(scope, "stack", stack.into(), false);
        }
    }
    if let Some(cause) = &e.cause {
        let cause = js_error(scope, cause);
        set(scope, "cause", cause, false);
    }
    if !e.errors.is_empty() {
        let items: Vec<_> = e.errors.iter().map(|item| js_error(scope, item)).collect();
        let list = v8::Array::new_with_elements(scope, &items);
        set(scope, "errors", list.into(), false);
    }
    value
}
