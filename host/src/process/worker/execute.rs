//! Runs one request on its isolate, through the public API, and makes its reply.

use std::sync::Arc;

use super::inspect::Chunks;
use super::{Handle, Hosted, Worker};
use crate::context::{Context, ContextOptions};
use crate::error::{Error, Result};
use crate::external_copy::{CopyIntoOptions, ExternalCopy, ExternalCopyOptions};
use crate::module::Module;
use crate::process::protocol::{Access, FromWorker, Id, Input, Op, Out, Reply, Want, Wire};
use crate::reference::Reference;
use crate::script::Script;
use crate::transfer::{Raw, Transferable, Transferred};
use crate::value::{Value, wire};

impl Worker {
    /// Runs one request on the isolate, through the public API.
    pub(super) fn execute(self: &Arc<Self>, hosted: &Arc<Hosted>, op: Op) -> Result<Reply> {
        let isolate = &hosted.isolate;
        Ok(match op {
            Op::CreateContext { console, name } => {
                let mut options = ContextOptions { name, ..Default::default() };
                if let Some(sink) = console {
                    let (worker, isolate) = (Arc::downgrade(self), hosted.id);
                    options = options.console(move |level, text| {
                        if let Some(worker) = worker.upgrade() {
                            worker.send(&FromWorker::Console { isolate, sink, level, text: text.to_owned() });
                        }
                    });
                }
                Reply::Id(self.insert(hosted, Handle::Context(isolate.create_context_with(options)?)))
            }
            Op::HeapStatistics => Reply::Heap(isolate.heap_statistics()?),
            Op::Release { handle } => {
                hosted.handles.lock().remove(&handle);
                Reply::Done
            }
            Op::Eval { context, code, run, want } => {
                let context = hosted.context(context)?;
                Reply::Out(produce!(self, hosted, want, T => context.eval_with::<T>(&code, &run)))
            }
            Op::EvalClosure { context, code, args, run, want } => {
                let (context, args) = (hosted.context(context)?, self.inputs(hosted, args)?);
                Reply::Out(produce!(self, hosted, want, T => context.eval_closure::<T>(&code, args.clone(), &run)))
            }
            Op::Global { context } => {
                let global = hosted.context(context)?.global()?;
                Reply::Out(self.reference_out(hosted, global))
            }
            Op::GlobalGet { context, name, want } => {
                let context = hosted.context(context)?;
                Reply::Out(produce!(self, hosted, want, T => context.get_global::<T>(&name)))
            }
            Op::GlobalSet { context, name, value } => {
                hosted.context(context)?.set_global(&name, self.input(hosted, value)?)?;
                Reply::Done
            }
            Op::CompileScript { code, compile } => {
                let script = isolate.compile_script(&code, &compile)?;
                let (produced, rejected) = (script.cached_data().cloned(), script.cached_data_rejected());
                let id = self.insert(hosted, Handle::Script(script));
                Reply::Compiled { id, requests: Vec::new(), produced, rejected }
            }
            Op::RunScript { script, context, run, want } => {
                let (script, context) = (hosted.script(script)?, hosted.context(context)?);
                Reply::Out(produce!(self, hosted, want, T => script.run::<T>(&context, &run)))
            }
            Op::Get { reference, access, key, want } => {
                let reference = hosted.reference(reference, access)?;
                Reply::Out(produce!(self, hosted, want, T => reference.get::<T>(key.clone())))
            }
            Op::Set { reference, key, value } => {
                let reference = hosted.reference(reference, Access { inherit: false, accessors: false })?;
                reference.set(key, self.input(hosted, value)?)?;
                Reply::Done
            }
            Op::Delete { reference, key } => {
                hosted.reference(reference, Access { inherit: false, accessors: false })?.delete(key)?;
                Reply::Done
            }
            Op::Apply { reference, access, recv, args, run, want } => {
                let reference = hosted.reference(reference, access)?;
                let (recv, args) = (self.input(hosted, recv)?, self.inputs(hosted, args)?);
                Reply::Out(produce!(self, hosted, want, T => reference.apply::<T>(recv.clone(), args.clone(), &run)))
            }
            Op::Copy { reference, want } => {
                let reference = hosted.reference(reference, Access { inherit: false, accessors: false })?;
                Reply::Out(produce!(self, hosted, want, T => reference.copy_as::<T>()))
            }
            Op::ExternalCopy { reference, transfer, transfer_out } => {
                let no_access = Access { inherit: false, accessors: false };
                let reference = hosted.reference(reference, no_access)?;
                let transfer_list = transfer.into_iter().map(|id| hosted.reference(id, no_access)).collect::<Result<Vec<_>>>()?;
                let options = ExternalCopyOptions { transfer_list, transfer_out };
                Reply::Copy(reference.external_copy(&options)?.export()?)
            }
            Op::CompileModule { code, compile } => {
                let module = isolate.compile_module(&code, &compile)?;
                let (produced, rejected) = (module.cached_data().cloned(), module.cached_data_rejected());
                let requests = module.requests().to_vec();
                let id = self.insert(hosted, Handle::Module(module));
                Reply::Compiled { id, requests, produced, rejected }
            }
            Op::SyntheticModule { name, exports } => Reply::Id(self.insert(hosted, Handle::Module(isolate.synthetic_module(name, exports)?))),
            Op::Linked { module } => Reply::Linked(hosted.module(module)?.is_linked()?),
            Op::Instantiate { module, context, links } => {
                let (module, context) = (hosted.module(module)?, hosted.context(context)?);
                let links = links
                    .into_iter()
                    .map(|(referrer, request, target)| Ok((hosted.module(referrer)?, request, hosted.module(target)?)))
                    .collect::<Result<Vec<_>>>()?;
                module.instantiate(&context, |request, referrer| {
                    links
                        .iter()
                        .find(|(from, r, _)| r == request && from.same(referrer))
                        .map(|(_, _, target)| target.clone())
                        .ok_or_else(|| Error::js("Error", format!("Cannot resolve module '{}'", request.specifier)))
                })?;
                Reply::Done
            }
            Op::Evaluate { module, run } => {
                hosted.module(module)?.evaluate(&run)?;
                Reply::Done
            }
            Op::Namespace { module } => {
                let namespace = hosted.module(module)?.namespace()?;
                Reply::Out(self.reference_out(hosted, namespace))
            }
            Op::Hooks { import, meta } => {
                self.install_hooks(hosted, import, meta);
                Reply::Done
            }
            Op::InspectorConnect => self.connect_inspector(hosted)?,
            Op::StartProfiler { title } => {
                isolate.start_cpu_profiler(&title)?;
                Reply::Done
            }
            Op::StopProfiler { title } => Reply::Profiles(isolate.stop_cpu_profiler(&title)?),
            Op::HeapSnapshot { snapshot } => {
                let chunks = Chunks { worker: self.clone(), isolate: hosted.id, snapshot };
                // Chunks of 1 MB: V8 hands over a few KB at a time.
                isolate.heap_snapshot(std::io::BufWriter::with_capacity(1 << 20, chunks))?;
                Reply::Done
            }
            // Handled as they arrive (see `Worker::queue`), and never made within a call.
            Op::InspectorDispatch { .. } | Op::InspectorClose { .. } | Op::HoldPauses { .. } => {
                return Err(Error::InvalidArgument("not an operation to queue".into()));
            }
            Op::CreateIsolate(_) | Op::CreateSnapshot { .. } | Op::Dispose | Op::Times | Op::ReferenceCount | Op::WaitForDebugger => {
                return Err(Error::InvalidArgument("not an operation on an isolate".into()));
            }
            #[cfg(debug_assertions)]
            Op::SandboxProbe(_) => return Err(Error::InvalidArgument("not an operation on an isolate".into())),
        })
    }

    fn insert(&self, hosted: &Hosted, handle: Handle) -> Id {
        let id = self.next_id();
        hosted.handles.lock().insert(id, handle);
        id
    }

    fn reference_out(&self, hosted: &Hosted, reference: Reference) -> Out {
        let type_of = reference.type_of().to_owned();
        Out::Reference { id: self.insert(hosted, Handle::Reference(reference)), type_of }
    }

    fn transferred_out(&self, hosted: &Hosted, transferred: Transferred) -> Result<Out> {
        Ok(match transferred {
            Transferred::Value(value) => Out::Data(value_wire(&value)?),
            Transferred::Reference(reference) => self.reference_out(hosted, reference),
            Transferred::ExternalCopy(copy) => Out::ExternalCopy(copy.export()?),
        })
    }

    fn inputs(self: &Arc<Self>, hosted: &Arc<Hosted>, inputs: Vec<Input>) -> Result<Vec<Transferable>> {
        inputs.into_iter().map(|input| self.input(hosted, input)).collect()
    }

    /// A value from the host, ready to go into the isolate.
    fn input(self: &Arc<Self>, hosted: &Arc<Hosted>, input: Input) -> Result<Transferable> {
        Ok(match input {
            Input::Data(wire) => Transferable::wire(wire),
            Input::Callback { callback, kind, name } => Transferable::from(self.host_function(hosted.id, callback, kind).name(name)),
            Input::Reference { id, release: false } => Transferable::from(hosted.reference(id, Access { inherit: false, accessors: false })?),
            Input::Reference { id, release: true } => {
                let reference = hosted.reference(id, Access { inherit: false, accessors: false })?;
                hosted.handles.lock().remove(&id);
                reference.deref_into(true)
            }
            Input::Copy { copy, transfer_in } => {
                // Only copied into an isolate here: no budget for Rust data applies.
                ExternalCopy::import(copy, wire::Budget::HOST)?.copy_into(CopyIntoOptions { transfer_in, release: true })
            }
        })
    }

}

/// Makes `T` the type `want` asks for and reads the result of `$body` into the matching
/// [`Out`].
macro_rules! produce {
    ($worker:expr, $hosted:expr, $want:expr, $t:ident => $body:expr) => {{
        match $want {
            Want::Data => {
                type $t = Raw;
                Out::Data(($body)?.0)
            }
            Want::Value => {
                type $t = Value;
                Out::Data(value_wire(&($body)?)?)
            }
            Want::Transferred => {
                type $t = Transferred;
                $worker.transferred_out($hosted, ($body)?)?
            }
            Want::Reference => {
                type $t = Reference;
                $worker.reference_out($hosted, ($body)?)
            }
            Want::ExternalCopy => {
                type $t = ExternalCopy;
                Out::ExternalCopy(($body)?.export()?)
            }
            Want::Nothing => {
                type $t = ();
                let () = ($body)?;
                Out::Nothing
            }
        }
    }};
}
use produce;

impl Hosted {
    fn handle<T>(&self, id: Id, pick: impl FnOnce(&Handle) -> Option<T>, gone: &str) -> Result<T> {
        let handles = self.handles.lock();
        handles.get(&id).and_then(pick).ok_or_else(|| Error::disposed(gone))
    }

    fn context(&self, id: Id) -> Result<Context> {
        let pick = |h: &Handle| match h {
            Handle::Context(c) => Some(c.clone()),
            _ => None,
        };
        self.handle(id, pick, "Context is released")
    }

    fn script(&self, id: Id) -> Result<Script> {
        let pick = |h: &Handle| match h {
            Handle::Script(s) => Some(s.clone()),
            _ => None,
        };
        self.handle(id, pick, "Script has been released")
    }

    fn reference(&self, id: Id, access: Access) -> Result<Reference> {
        let pick = |h: &Handle| match h {
            Handle::Reference(r) => Some(r.clone()),
            _ => None,
        };
        let mut reference = self.handle(id, pick, "Reference has been released")?;
        if access.inherit {
            reference = reference.inherit();
        }
        if access.accessors {
            reference = reference.accessors();
        }
        Ok(reference)
    }

    pub(super) fn module(&self, id: Id) -> Result<Module> {
        let pick = |h: &Handle| match h {
            Handle::Module(m) => Some(m.clone()),
            _ => None,
        };
        self.handle(id, pick, "Module has been released")
    }
}

pub(super) fn value_wire(value: &Value) -> Result<Wire> {
    Ok(Wire { bytes: wire::to_wire(value)?, shared: Vec::new() })
}
