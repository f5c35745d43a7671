//! [`ExternalCopy`]: a value held outside every isolate (isolated-vm's `ExternalCopy`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::isolate::IsolateInner;
use crate::isolate::memory::MemoryGuard;
use crate::process::protocol;
use crate::reference::Reference;
use crate::sync::Mutex;
use crate::transfer::{Once, Transferable};
use crate::js;
use crate::value::{self, Value, wire};

/// Bytes held by all live ExternalCopies of the process.
static TOTAL: AtomicUsize = AtomicUsize::new(0);

/// A copy of a value held outside every isolate, made once and copied into any number of
/// isolates (and into Rust) without touching the isolate it came from.
///
/// A copy made from an isolate value is a structured clone (V8's serializer): objects,
/// arrays, Map, Set, Date, RegExp, BigInt, Error objects (with `cause`), ArrayBuffers, typed
/// arrays and DataViews keep their types, numbers keep their int32/uint32/double form, and
/// shared and cyclic structure is kept. Functions and symbols cannot be cloned. Two more
/// things cross without copying:
///
/// - **SharedArrayBuffers are shared**, not copied: every isolate the copy goes into sees the
///   same memory (and `Atomics.wait`/`notify` work across them).
/// - **ArrayBuffers can be transferred**: made with
///   [`ExternalCopyOptions::transfer_list`] (or [`transfer_out`](ExternalCopyOptions::transfer_out)),
///   the buffers are detached in the source and their memory moves with the copy; copied in
///   with [`CopyIntoOptions::transfer_in`] they move again, without a copy, into the target
///   (once: afterwards the copy reports `Array buffer is invalid`).
///
/// The bytes a copy holds count in [`ExternalCopy::total_external_size`] and against the
/// memory limit of the isolate that made it, until the last handle is dropped or
/// [`release`](ExternalCopy::release)d. Transferred buffers stay charged to the isolate that
/// allocated them wherever they move, so the limits of all isolates still bound all memory.
///
/// ```
/// use ivm::{ExternalCopy, Isolate};
/// let a = Isolate::new(Default::default())?.create_context()?;
/// let b = Isolate::new(Default::default())?.create_context()?;
/// let copy: ExternalCopy = a.eval("new Map([[1, { when: new Date(0) }]])")?;
/// b.set_global("m", &copy)?;
/// assert_eq!(b.eval::<bool>("m.get(1).when instanceof Date")?, true);
/// # Ok::<(), ivm::Error>(())
/// ```
#[derive(Clone)]
pub struct ExternalCopy {
    held: Arc<Held>,
}

impl std::fmt::Debug for ExternalCopy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalCopy").field("size", &self.held.size).finish_non_exhaustive()
    }
}

struct Held {
    /// `None` once released.
    payload: Mutex<Option<Payload>>,
    size: usize,
    /// The isolate whose memory limit the copy counts against, and by how much.
    charged: Option<(Arc<MemoryGuard>, usize)>,
}

impl Drop for Held {
    fn drop(&mut self) {
        TOTAL.fetch_sub(self.size, Ordering::SeqCst);
        if let Some((guard, bytes)) = &self.charged {
            guard.refund_copy(*bytes);
        }
    }
}

/// The structured clone: V8's wire bytes and what travels beside them.
struct Payload {
    clone: js::Clone,
    /// What copying it into Rust may make (the budget of the isolate it came from).
    budget: wire::Budget,
    /// Transferred ArrayBuffers by transfer id; `None` once moved into an isolate.
    transferred: Option<Vec<v8::SharedRef<v8::BackingStore>>>,
}

/// Options for making an [`ExternalCopy`] from a [`Reference`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ExternalCopyOptions {
    /// ArrayBuffers (in the value) whose memory moves into the copy instead of being copied;
    /// they are detached in the source.
    pub transfer_list: Vec<Reference>,
    /// The value is an ArrayBuffer (or a view of one) whose memory moves into the copy.
    pub transfer_out: bool,
}

impl ExternalCopyOptions {
    /// Transfers this ArrayBuffer instead of copying it.
    pub fn transfer(mut self, buffer: &Reference) -> Self {
        self.transfer_list.push(buffer.clone());
        self
    }

    /// Transfers the value itself (an ArrayBuffer or a view of one).
    pub fn transfer_out(mut self) -> Self {
        self.transfer_out = true;
        self
    }
}

/// Options for copying an [`ExternalCopy`] into an isolate with
/// [`copy_into`](ExternalCopy::copy_into).
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct CopyIntoOptions {
    /// Move transferred ArrayBuffers into the isolate instead of copying them (O(1); once).
    pub transfer_in: bool,
    /// Release the copy after it is used.
    pub release: bool,
}

impl CopyIntoOptions {
    /// Moves transferred ArrayBuffers instead of copying them.
    pub fn transfer_in(mut self) -> Self {
        self.transfer_in = true;
        self
    }

    /// Releases the copy once it was copied in.
    pub fn release(mut self) -> Self {
        self.release = true;
        self
    }
}

fn released() -> Error {
    Error::disposed("Copy has been released")
}

fn invalid_buffer() -> Error {
    Error::js("TypeError", "Array buffer is invalid")
}

impl ExternalCopy {
    /// Copies Rust data (anything `Serialize`, mapped as in [`crate::value`]).
    pub fn new<T: Serialize + ?Sized>(value: &T) -> Result<ExternalCopy> {
        let bytes = wire::to_wire(value)?;
        let size = bytes.len();
        let payload = Payload { clone: js::Clone { bytes, ..Default::default() }, budget: wire::Budget::HOST, transferred: Some(Vec::new()) };
        Ok(ExternalCopy::hold(payload, size, None))
    }

    fn hold(payload: Payload, size: usize, charged: Option<(Arc<MemoryGuard>, usize)>) -> ExternalCopy {
        TOTAL.fetch_add(size, Ordering::SeqCst);
        if let Some((guard, bytes)) = &charged {
            guard.charge_copy(*bytes);
        }
        ExternalCopy { held: Arc::new(Held { payload: Mutex::new(Some(payload)), size, charged }) }
    }

    /// Bytes held by all ExternalCopies of the process (isolated-vm's
    /// `ExternalCopy.totalExternalSize`); back to where it was once they are released.
    pub fn total_external_size() -> usize {
        TOTAL.load(Ordering::SeqCst)
    }

    /// Bytes this copy holds.
    pub fn size(&self) -> usize {
        self.held.size
    }

    /// Copies the value into Rust: any `DeserializeOwned` type, or a [`Value`].
    pub fn copy<T: DeserializeOwned + 'static>(&self) -> Result<T> {
        let payload = self.held.payload.lock();
        let payload = payload.as_ref().ok_or_else(released)?;
        if std::any::TypeId::of::<T>() == std::any::TypeId::of::<Value>() {
            return value::from_value(wire::read_value(&payload.clone.bytes, payload, payload.budget)?);
        }
        wire::from_wire(&payload.clone.bytes, payload, payload.budget)
    }

    /// A single-use [`Transferable`] that copies the value into the isolate it is passed to
    /// (isolated-vm's `copyInto`). Passing `&ExternalCopy` itself copies too, any number of
    /// times; this form can also move transferred buffers and release the copy.
    pub fn copy_into(&self, options: CopyIntoOptions) -> Transferable {
        Transferable::once(Once::CopyInto { copy: self.clone(), options })
    }

    /// The copy's bytes and transferred buffers, to send to a worker process (or the host).
    /// SharedArrayBuffers and WebAssembly modules cannot cross processes.
    pub(crate) fn export(&self) -> Result<protocol::Copy> {
        self.export_into(false)
    }

    /// [`export`](Self::export), moving the transferred buffers out with `take_buffers`
    /// (afterwards the copy reports `Array buffer is invalid`, as after `transfer_in`).
    pub(crate) fn export_into(&self, take_buffers: bool) -> Result<protocol::Copy> {
        let mut payload = self.held.payload.lock();
        let payload = payload.as_mut().ok_or_else(released)?;
        if !payload.clone.shared.is_empty() || !payload.clone.wasm_modules.is_empty() {
            return Err(Error::Conversion(
                "a copy holding a SharedArrayBuffer or a WebAssembly.Module cannot cross into or out of a worker process".into(),
            ));
        }
        let stores = if take_buffers { payload.transferred.take() } else { payload.transferred.clone() };
        let buffers = stores.ok_or_else(invalid_buffer)?.iter().map(|s| serde_bytes::ByteBuf::from(js::store_bytes(s))).collect();
        Ok(protocol::Copy { bytes: payload.clone.bytes.clone(), buffers })
    }

    /// A copy that came from another process, from an isolate whose data may make `budget`.
    pub(crate) fn import(copy: protocol::Copy, budget: wire::Budget) -> Result<ExternalCopy> {
        crate::engine::platform();
        let size = copy.bytes.len() + copy.buffers.iter().map(|b| b.len()).sum::<usize>();
        let transferred = copy
            .buffers
            .into_iter()
            .map(|bytes| v8::ArrayBuffer::new_backing_store_from_vec(bytes.into_vec()).make_shared())
            .collect();
        let payload = Payload { clone: js::Clone { bytes: copy.bytes, ..Default::default() }, budget, transferred: Some(transferred) };
        Ok(ExternalCopy::hold(payload, size, None))
    }

    /// Releases the copy (and with the last handle, its memory). Later use fails with `Copy
    /// has been released`. Returns whether it was still held.
    pub fn release(&self) -> bool {
        self.held.payload.lock().take().is_some()
    }

    /// Clones `value` of a locked isolate.
    pub(crate) fn from_js<'s>(
        scope: &mut v8::PinScope<'s, '_>,
        inner: &Arc<IsolateInner>,
        value: v8::Local<'s, v8::Value>,
        options: &ExternalCopyOptions,
    ) -> Result<ExternalCopy> {
        let mut buffers = Vec::with_capacity(options.transfer_list.len() + 1);
        for reference in &options.transfer_list {
            let listed = reference.local_in(scope, inner)?;
            buffers.push(v8::Local::<v8::ArrayBuffer>::try_from(listed).map_err(|_| non_array_buffer())?);
        }
        if options.transfer_out {
            buffers.push(buffer_of(scope, value).ok_or_else(non_array_buffer)?);
        }
        for buffer in &buffers {
            if !buffer.is_detachable() || buffer.was_detached() {
                return Err(invalid_buffer());
            }
        }
        let clone = js::serialize(scope, value, &buffers)?;
        let mut transferred = Vec::with_capacity(buffers.len());
        for buffer in &buffers {
            transferred.push(buffer.get_backing_store());
            buffer.detach(None).ok_or_else(js::threw)?;
        }
        let size = clone.bytes.len() + transferred.iter().map(|s| s.byte_length()).sum::<usize>();
        // Only the wire bytes are new memory; transferred buffers stay charged to their
        // allocator, which is this isolate's.
        let charged = (MemoryGuard::of(scope), clone.bytes.len());
        let budget = js::copy_budget(scope);
        Ok(ExternalCopy::hold(Payload { clone, budget, transferred: Some(transferred) }, size, Some(charged)))
    }

    /// Makes the value in the current context of a locked isolate.
    pub(crate) fn copy_in<'s>(&self, scope: &mut v8::PinScope<'s, '_>, options: CopyIntoOptions) -> Result<v8::Local<'s, v8::Value>> {
        let mut payload = self.held.payload.lock();
        let value = deserialize(scope, payload.as_mut().ok_or_else(released)?, options.transfer_in)?;
        if options.release {
            *payload = None;
        }
        Ok(value)
    }
}

fn non_array_buffer() -> Error {
    Error::js("TypeError", "Non-ArrayBuffer passed in `transferList`")
}

/// The ArrayBuffer a value is or views.
fn buffer_of<'s>(scope: &v8::PinScope<'s, '_>, value: v8::Local<'s, v8::Value>) -> Option<v8::Local<'s, v8::ArrayBuffer>> {
    if let Ok(buffer) = v8::Local::<v8::ArrayBuffer>::try_from(value) {
        return Some(buffer);
    }
    v8::Local::<v8::ArrayBufferView>::try_from(value).ok().and_then(|view| view.buffer(scope))
}

fn deserialize<'s>(scope: &mut v8::PinScope<'s, '_>, payload: &mut Payload, transfer_in: bool) -> Result<v8::Local<'s, v8::Value>> {
    let memory = MemoryGuard::of(scope);
    let stores = payload.transferred.as_ref().ok_or_else(invalid_buffer)?;
    let mut transferred = Vec::with_capacity(stores.len());
    for store in stores {
        let store = if transfer_in {
            store.clone()
        } else {
            memory.adopt(js::store_bytes(store)).ok_or_else(|| Error::js("RangeError", "Array buffer allocation failed"))?.make_shared()
        };
        transferred.push(v8::ArrayBuffer::with_backing_store(scope, &store));
    }
    let incoming = js::Incoming { transferred, shared: payload.clone.shared.clone(), wasm_modules: payload.clone.wasm_modules.clone() };
    let value = js::deserialize(scope, &payload.clone.bytes, incoming)?;
    if transfer_in {
        // The memory now belongs to the isolate; the copy no longer has it.
        payload.transferred = None;
    }
    Ok(value)
}

impl wire::Stores for Payload {
    fn transferred(&self, id: u32) -> Option<Vec<u8>> {
        Some(js::store_bytes(self.transferred.as_ref()?.get(id as usize)?))
    }

    fn shared(&self, id: u32) -> Option<Vec<u8>> {
        self.clone.shared(id)
    }
}
