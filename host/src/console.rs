//! The optional `console` object of a context: formatting happens in JavaScript (a small
//! `util.inspect`), printing in the embedder's sink.

use std::ffi::c_void;
use std::sync::Arc;

use crate::data::ConsoleLevel;
use crate::error::{Error, Result};
use crate::isolate::IsolateInner;

type Sink = Arc<dyn Fn(ConsoleLevel, &str) + Send + Sync>;

/// Installs `console` on the current context's global object. The native printer is only
/// reachable through the console's closures.
pub(crate) struct Console;

const CONSOLE_JS: &str = include_str!("console.js");

impl Console {
    pub(crate) fn install(scope: &mut v8::PinScope<'_, '_>, inner: &IsolateInner, sink: Sink) -> Result<()> {
        // The sink lives as long as the isolate; the function's data points at it.
        let sink: Arc<Sink> = Arc::new(sink);
        let data = v8::External::new(scope, Arc::as_ptr(&sink) as *mut c_void);
        inner.keep_alive(sink);
        let print = v8::Function::builder(print).data(data.into()).build(scope).ok_or_else(internal)?;
        let source = v8::String::new(scope, CONSOLE_JS).ok_or_else(internal)?;
        let setup = v8::Script::compile(scope, source, None).and_then(|s| s.run(scope)).ok_or_else(internal)?;
        let setup = v8::Local::<v8::Function>::try_from(setup).map_err(|_| internal())?;
        let undefined = v8::undefined(scope).into();
        setup.call(scope, undefined, &[print.into()]).ok_or_else(internal)?;
        Ok(())
    }
}

fn internal() -> Error {
    Error::InvalidArgument("could not install `console` in the context".into())
}

fn print(scope: &mut v8::PinScope<'_, '_>, args: v8::FunctionCallbackArguments<'_>, _: v8::ReturnValue<'_, v8::Value>) {
    let Ok(data) = v8::Local::<v8::External>::try_from(args.data()) else { return };
    // SAFETY: `data` points at the `Sink` kept alive by the isolate (see `install`).
    let sink = unsafe { &*(data.value() as *const Sink) };
    let level = match args.get(0).int32_value(scope).unwrap_or(0) {
        1 => ConsoleLevel::Warn,
        2 => ConsoleLevel::Error,
        _ => ConsoleLevel::Log,
    };
    let text = args.get(1).to_rust_string_lossy(scope);
    // A panicking sink must not unwind into V8.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| crate::alloc::unlimited(|| sink(level, &text))));
}
