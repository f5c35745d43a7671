//! `ivm:isolate@0.1.0` (`guest-abi/wit-0.1.0`), still offered so that the guests built for it
//! keep working: each of its calls is the 0.2.0 call of the same name, its records and
//! variants converted. The resources are the same host objects in both versions.

use wasmtime::component::Resource;

use super::{GuestIsolate, GuestIsolates, Task, wit};
use crate::{Context, ExternalCopy, Module, Reference, Script};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../guest-abi/wit-0.1.0",
        world: "host",
        imports: { default: trappable },
        with: {
            "ivm:isolate/types.isolate": crate::component::GuestIsolate,
            "ivm:isolate/types.context": crate::Context,
            "ivm:isolate/types.script": crate::Script,
            "ivm:isolate/types.module": crate::Module,
            "ivm:isolate/types.reference": crate::Reference,
            "ivm:isolate/types.external-copy": crate::ExternalCopy,
            "ivm:isolate/types.task": crate::component::Task,
        },
    });
}

use bindings::ivm::isolate::types as old;

pub(super) use old::add_to_linker;

type Host<T> = wasmtime::Result<Result<T, old::Error>>;

/// A 0.2.0 result as 0.1.0's.
fn back<T: Into<U>, U>(result: super::Host<T>) -> Host<U> {
    result.map(|inner| inner.map(Into::into).map_err(Into::into))
}

impl From<wit::Error> for old::Error {
    fn from(e: wit::Error) -> old::Error {
        use wit::Error as E;
        match e {
            E::Exception(e) => old::Error::Exception(e.into()),
            E::Timeout(stack) => old::Error::Timeout(stack),
            E::MemoryLimit => old::Error::MemoryLimit,
            E::Disposed(m) => old::Error::Disposed(m),
            E::Abandoned => old::Error::Abandoned,
            E::InvalidArgument(m) => old::Error::InvalidArgument(m),
            E::Conversion(m) => old::Error::Conversion(m),
            E::Limit(m) => old::Error::Limit(m),
            // 0.1.0 guests set no CPU limits; were one to reach them, a timeout is the nearest.
            E::CpuLimit(stack) => old::Error::Timeout(stack),
        }
    }
}

impl From<wit::JsError> for old::JsError {
    fn from(e: wit::JsError) -> old::JsError {
        old::JsError { name: e.name, message: e.message, stack: e.stack }
    }
}

impl From<old::JsError> for wit::JsError {
    fn from(e: old::JsError) -> wit::JsError {
        wit::JsError { name: e.name, message: e.message, stack: e.stack }
    }
}

impl From<wit::Value> for old::Value {
    fn from(value: wit::Value) -> old::Value {
        use wit::Value as V;
        match value {
            V::Undefined => old::Value::Undefined,
            V::Null => old::Value::Null,
            V::Boolean(b) => old::Value::Boolean(b),
            V::Number(n) => old::Value::Number(n),
            V::Bigint(text) => old::Value::Bigint(text),
            V::String(s) => old::Value::String(s),
            V::Bytes(b) => old::Value::Bytes(b),
            V::Msgpack(b) => old::Value::Msgpack(b),
            V::Reference(r) => old::Value::Reference(r),
            V::ExternalCopy(c) | V::TransferIn(c) => old::Value::ExternalCopy(c),
        }
    }
}

impl From<old::Value> for wit::Value {
    fn from(value: old::Value) -> wit::Value {
        use old::Value as V;
        match value {
            V::Undefined => wit::Value::Undefined,
            V::Null => wit::Value::Null,
            V::Boolean(b) => wit::Value::Boolean(b),
            V::Number(n) => wit::Value::Number(n),
            V::Bigint(text) => wit::Value::Bigint(text),
            V::String(s) => wit::Value::String(s),
            V::Bytes(b) => wit::Value::Bytes(b),
            V::Msgpack(b) => wit::Value::Msgpack(b),
            V::Reference(r) => wit::Value::Reference(r),
            V::ExternalCopy(c) => wit::Value::ExternalCopy(c),
        }
    }
}

fn values(values: Vec<old::Value>) -> Vec<wit::Value> {
    values.into_iter().map(Into::into).collect()
}

impl From<old::Transfer> for wit::Transfer {
    fn from(t: old::Transfer) -> wit::Transfer {
        match t {
            old::Transfer::Auto => wit::Transfer::Auto,
            old::Transfer::Copy => wit::Transfer::Copy,
            old::Transfer::ExternalCopy => wit::Transfer::ExternalCopy,
            old::Transfer::Reference => wit::Transfer::Reference,
        }
    }
}

impl From<old::RunOptions> for wit::RunOptions {
    fn from(o: old::RunOptions) -> wit::RunOptions {
        wit::RunOptions { timeout_ms: o.timeout_ms, cpu_limit_ms: None, promise: o.promise, transfer: o.transfer.into() }
    }
}

impl From<old::CompileOptions> for wit::CompileOptions {
    fn from(o: old::CompileOptions) -> wit::CompileOptions {
        wit::CompileOptions {
            origin: o.origin.map(|o| wit::Origin { filename: o.filename, line_offset: o.line_offset, column_offset: o.column_offset }),
            cached_data: o.cached_data,
            produce_cached_data: o.produce_cached_data,
        }
    }
}

impl From<wit::HeapStatistics> for old::HeapStatistics {
    fn from(s: wit::HeapStatistics) -> old::HeapStatistics {
        old::HeapStatistics {
            total_heap_size: s.total_heap_size,
            total_physical_size: s.total_physical_size,
            used_heap_size: s.used_heap_size,
            heap_size_limit: s.heap_size_limit,
            malloced_memory: s.malloced_memory,
            externally_allocated_size: s.externally_allocated_size,
        }
    }
}

impl old::Host for GuestIsolates {}

impl old::HostIsolate for GuestIsolates {
    fn create(&mut self, options: old::IsolateOptions) -> Host<Resource<GuestIsolate>> {
        back(wit::HostIsolate::create(self, wit::IsolateOptions { memory_limit_mb: options.memory_limit_mb, inspector: false, cpu_budget_ms: None }))
    }

    fn create_context(&mut self, this: Resource<GuestIsolate>) -> Host<Resource<Context>> {
        back(wit::HostIsolate::create_context(self, this, wit::ContextOptions { name: None }))
    }

    fn compile_script(&mut self, this: Resource<GuestIsolate>, code: String, options: old::CompileOptions) -> Host<Resource<Script>> {
        back(wit::HostIsolate::compile_script(self, this, code, options.into()))
    }

    fn compile_module(&mut self, this: Resource<GuestIsolate>, code: String, options: old::CompileOptions) -> Host<Resource<Module>> {
        back(wit::HostIsolate::compile_module(self, this, code, options.into()))
    }

    fn json_module(&mut self, this: Resource<GuestIsolate>, name: String, json: String) -> Host<Resource<Module>> {
        back(wit::HostIsolate::json_module(self, this, name, json))
    }

    fn heap_statistics(&mut self, this: Resource<GuestIsolate>) -> Host<old::HeapStatistics> {
        back(wit::HostIsolate::heap_statistics(self, this))
    }

    fn cpu_time_ns(&mut self, this: Resource<GuestIsolate>) -> Host<u64> {
        back(wit::HostIsolate::cpu_time_ns(self, this))
    }

    fn wall_time_ns(&mut self, this: Resource<GuestIsolate>) -> Host<u64> {
        back(wit::HostIsolate::wall_time_ns(self, this))
    }

    fn is_disposed(&mut self, this: Resource<GuestIsolate>) -> wasmtime::Result<bool> {
        wit::HostIsolate::is_disposed(self, this)
    }

    fn dispose(&mut self, this: Resource<GuestIsolate>) -> Host<()> {
        back(wit::HostIsolate::dispose(self, this))
    }

    fn drop(&mut self, this: Resource<GuestIsolate>) -> wasmtime::Result<()> {
        wit::HostIsolate::drop(self, this)
    }
}

impl old::HostContext for GuestIsolates {
    fn global(&mut self, this: Resource<Context>) -> Host<Resource<Reference>> {
        back(wit::HostContext::global(self, this))
    }

    fn eval(&mut self, this: Resource<Context>, code: String, options: old::RunOptions) -> Host<old::Value> {
        back(wit::HostContext::eval(self, this, code, options.into()))
    }

    fn eval_closure(&mut self, this: Resource<Context>, code: String, args: Vec<old::Value>, options: old::RunOptions) -> Host<old::Value> {
        back(wit::HostContext::eval_closure(self, this, code, values(args), options.into()))
    }

    fn eval_task(&mut self, this: Resource<Context>, code: String, options: old::RunOptions) -> wasmtime::Result<Resource<Task>> {
        wit::HostContext::eval_task(self, this, code, options.into())
    }

    fn callback(&mut self, this: Resource<Context>, id: u32, name: String) -> Host<Resource<Reference>> {
        back(wit::HostContext::callback(self, this, id, name))
    }

    fn drop(&mut self, this: Resource<Context>) -> wasmtime::Result<()> {
        wit::HostContext::drop(self, this)
    }
}

impl old::HostScript for GuestIsolates {
    fn run(&mut self, this: Resource<Script>, context: Resource<Context>, options: old::RunOptions) -> Host<old::Value> {
        back(wit::HostScript::run(self, this, context, options.into()))
    }

    fn cached_data(&mut self, this: Resource<Script>) -> wasmtime::Result<Option<Vec<u8>>> {
        wit::HostScript::cached_data(self, this)
    }

    fn cached_data_rejected(&mut self, this: Resource<Script>) -> wasmtime::Result<Option<bool>> {
        wit::HostScript::cached_data_rejected(self, this)
    }

    fn drop(&mut self, this: Resource<Script>) -> wasmtime::Result<()> {
        wit::HostScript::drop(self, this)
    }
}

impl old::HostModule for GuestIsolates {
    fn filename(&mut self, this: Resource<Module>) -> wasmtime::Result<String> {
        wit::HostModule::filename(self, this)
    }

    fn dependency_specifiers(&mut self, this: Resource<Module>) -> wasmtime::Result<Vec<String>> {
        wit::HostModule::dependency_specifiers(self, this)
    }

    fn instantiate(&mut self, this: Resource<Module>, context: Resource<Context>, links: Vec<(String, Resource<Module>)>) -> Host<()> {
        back(wit::HostModule::instantiate(self, this, context, links))
    }

    fn evaluate(&mut self, this: Resource<Module>, options: old::RunOptions) -> Host<()> {
        back(wit::HostModule::evaluate(self, this, options.into()))
    }

    fn namespace(&mut self, this: Resource<Module>) -> Host<Resource<Reference>> {
        back(wit::HostModule::namespace(self, this))
    }

    fn cached_data(&mut self, this: Resource<Module>) -> wasmtime::Result<Option<Vec<u8>>> {
        wit::HostModule::cached_data(self, this)
    }

    fn cached_data_rejected(&mut self, this: Resource<Module>) -> wasmtime::Result<Option<bool>> {
        wit::HostModule::cached_data_rejected(self, this)
    }

    fn drop(&mut self, this: Resource<Module>) -> wasmtime::Result<()> {
        wit::HostModule::drop(self, this)
    }
}

impl old::HostReference for GuestIsolates {
    fn type_of(&mut self, this: Resource<Reference>) -> wasmtime::Result<String> {
        wit::HostReference::type_of(self, this)
    }

    fn clone(&mut self, this: Resource<Reference>) -> wasmtime::Result<Resource<Reference>> {
        wit::HostReference::clone(self, this)
    }

    fn get(&mut self, this: Resource<Reference>, key: String, transfer: old::Transfer) -> Host<old::Value> {
        back(wit::HostReference::get(self, this, key, transfer.into()))
    }

    fn set(&mut self, this: Resource<Reference>, key: String, value: old::Value) -> Host<()> {
        back(wit::HostReference::set(self, this, key, value.into()))
    }

    fn delete(&mut self, this: Resource<Reference>, key: String) -> Host<()> {
        back(wit::HostReference::delete(self, this, key))
    }

    fn apply(&mut self, this: Resource<Reference>, receiver: old::Value, args: Vec<old::Value>, options: old::RunOptions) -> Host<old::Value> {
        back(wit::HostReference::apply(self, this, receiver.into(), values(args), options.into()))
    }

    fn apply_task(&mut self, this: Resource<Reference>, receiver: old::Value, args: Vec<old::Value>, options: old::RunOptions) -> wasmtime::Result<Resource<Task>> {
        wit::HostReference::apply_task(self, this, receiver.into(), values(args), options.into())
    }

    fn copy(&mut self, this: Resource<Reference>) -> Host<old::Value> {
        back(wit::HostReference::copy(self, this))
    }

    fn drop(&mut self, this: Resource<Reference>) -> wasmtime::Result<()> {
        wit::HostReference::drop(self, this)
    }
}

impl old::HostExternalCopy for GuestIsolates {
    fn create(&mut self, value: old::Value) -> Host<Resource<ExternalCopy>> {
        back(wit::HostExternalCopy::create(self, value.into()))
    }

    fn copy(&mut self, this: Resource<ExternalCopy>) -> Host<old::Value> {
        back(wit::HostExternalCopy::copy(self, this))
    }

    fn clone(&mut self, this: Resource<ExternalCopy>) -> wasmtime::Result<Resource<ExternalCopy>> {
        wit::HostExternalCopy::clone(self, this)
    }

    fn size(&mut self, this: Resource<ExternalCopy>) -> wasmtime::Result<u64> {
        wit::HostExternalCopy::size(self, this)
    }

    fn drop(&mut self, this: Resource<ExternalCopy>) -> wasmtime::Result<()> {
        wit::HostExternalCopy::drop(self, this)
    }
}

impl old::HostTask for GuestIsolates {
    fn resume(&mut self, this: Resource<Task>, reply: Option<Result<old::Value, old::JsError>>) -> wasmtime::Result<old::Step> {
        let reply = reply.map(|reply| reply.map(Into::into).map_err(Into::into));
        let mut step = wit::HostTask::resume(self, Resource::new_borrow(this.rep()), reply, None)?;
        loop {
            // Module hooks are 0.2.0's: only a guest that also imports 0.2.0 can turn them on,
            // and a task resumed through 0.1.0 cannot answer them, so they fail in JavaScript.
            let unanswerable = || wit::JsError { name: "TypeError".into(), message: "an ivm:isolate@0.1.0 task cannot answer module hooks".into(), stack: None };
            step = match step {
                wit::Step::Done(result) => return Ok(old::Step::Done(result.map(Into::into).map_err(Into::into))),
                wit::Step::Call(call) => return Ok(old::Step::Call(old::Invocation { id: call.id, args: call.args.into_iter().map(Into::into).collect() })),
                wit::Step::Import(_) => wit::HostTask::resume_import(self, Resource::new_borrow(this.rep()), Err(unanswerable()), None)?,
                wit::Step::ImportMeta(_) => wit::HostTask::resume(self, Resource::new_borrow(this.rep()), Some(Err(unanswerable())), None)?,
                // Without a wait, a task never reports `running`.
                wit::Step::Running => unreachable!("a resume without a wait returns a call or the end"),
            };
        }
    }

    fn drop(&mut self, this: Resource<Task>) -> wasmtime::Result<()> {
        wit::HostTask::drop(self, this)
    }
}
