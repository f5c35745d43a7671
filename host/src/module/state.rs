//! What an isolate keeps for its modules, in the engine's state: the hooks V8's module
//! callbacks call, module filenames for `import.meta`, and the exports of host-made modules.
//! Plain data, so that the engine holds it without depending on the module API above it (which
//! fills it in).

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Weak};

use crate::data::ImportRequest;
use crate::error::Result;
use crate::sync::Mutex;
use crate::value::Value;
pub(crate) use ivm_client::protocol::Export;

/// `import()` in an in-process isolate: loads, links and starts evaluating the module asked
/// for; the promise of its namespace. Made by [`Isolate::set_dynamic_import`](crate::Isolate::set_dynamic_import)
/// from the embedder's hook.
pub(crate) type ImportFn =
    Arc<dyn for<'s, 'i> Fn(&mut v8::PinScope<'s, 'i>, &ImportRequest, &str) -> Result<v8::Local<'s, v8::Promise>> + Send + Sync>;

/// `import()` in a process-isolated isolate: the id of the module the embedder's hook gave, in
/// the isolate's worker, and its handle (kept until the worker has the answer that names it).
pub(crate) type RemoteImportFn = Arc<dyn Fn(&ImportRequest, &str) -> Result<(u64, Box<dyn Any + Send>)> + Send + Sync>;

/// The `import.meta` hook: the properties for a module's `import.meta`, by its filename.
pub(crate) type MetaHook = Arc<dyn Fn(&str) -> Result<Value> + Send + Sync>;

/// An isolate's module hooks and bookkeeping, reachable from V8's callbacks.
#[derive(Default)]
pub(crate) struct Hooks {
    pub(crate) import: Mutex<Option<ImportFn>>,
    pub(crate) meta: Mutex<Option<MetaHook>>,
    /// Module filenames by script id, for `import.meta`.
    pub(crate) filenames: Mutex<HashMap<i32, String>>,
    pub(crate) synthetic: Synthetic,
}

/// The exports of a host-made module, by name.
pub(crate) struct Exports(pub(crate) Vec<(String, Export)>);

/// Host-made modules of an isolate, for V8's evaluation-steps callback (which cannot capture
/// anything). Entries go once their module's handles are gone.
#[derive(Default)]
pub(crate) struct Synthetic(pub(crate) Mutex<Vec<(v8::Global<v8::Module>, Weak<Exports>)>>);
