//! A worker's side of the inspector: sessions whose messages go to the host as
//! `FromWorker::Inspector` events, protocol messages handed to the isolate's inspector as they
//! arrive (the isolate's thread may be paused in it), and heap snapshots sent in chunks.

use std::io::Write;
use std::sync::{Arc, OnceLock, Weak};

use super::{Hosted, Worker};
use crate::error::Result;
use crate::isolate::inspector::{Agent, SessionSink};
use crate::process::protocol::{FromWorker, Id, Reply};
use crate::sync::Mutex;

/// An isolate's inspector, once a session has connected.
#[derive(Default)]
pub(super) struct Inspected {
    agent: Mutex<Weak<Agent>>,
}

impl Inspected {
    pub(super) fn dispatch(&self, session: u64, message: String) {
        if let Some(agent) = self.agent.lock().upgrade() {
            agent.send(session, message);
        }
    }

    pub(super) fn close(&self, session: u64) {
        if let Some(agent) = self.agent.lock().upgrade() {
            agent.close(session);
        }
    }

    pub(super) fn hold_pauses(&self, hold: bool) {
        if let Some(agent) = self.agent.lock().upgrade() {
            agent.hold_pauses(hold);
        }
    }
}

/// A session's messages, on their way to the host.
struct ToHost {
    worker: Weak<Worker>,
    isolate: Id,
    /// Set once connected (V8 says nothing before).
    session: OnceLock<u64>,
}

impl ToHost {
    fn send(&self, message: Option<String>) {
        if let (Some(worker), Some(&session)) = (self.worker.upgrade(), self.session.get()) {
            worker.send(&FromWorker::Inspector { isolate: self.isolate, session, message });
        }
    }
}

impl SessionSink for ToHost {
    fn message(&self, text: String) {
        self.send(Some(text));
    }

    fn closed(&self) {
        self.send(None);
    }
}

/// Heap snapshot bytes, as chunks to the host.
pub(super) struct Chunks {
    pub(super) worker: Arc<Worker>,
    pub(super) isolate: Id,
    pub(super) snapshot: u64,
}

impl Write for Chunks {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.worker.send(&FromWorker::SnapshotChunk { isolate: self.isolate, snapshot: self.snapshot, bytes: bytes.to_vec() });
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Worker {
    /// Connects a session of `hosted`'s inspector whose messages go to the host.
    pub(super) fn connect_inspector(self: &Arc<Self>, hosted: &Hosted) -> Result<Reply> {
        let sink = Arc::new(ToHost { worker: Arc::downgrade(self), isolate: hosted.id, session: OnceLock::new() });
        let (session, agent) = hosted.isolate.connect_inspector(sink.clone())?;
        let _ = sink.session.set(session);
        // The host's kill timer for a run stands still while the run is paused.
        if let Some(agent) = agent.upgrade() {
            let (worker, isolate) = (Arc::downgrade(self), hosted.id);
            agent.on_pause(Arc::new(move |paused| {
                if let Some(worker) = worker.upgrade() {
                    worker.send(&FromWorker::Paused { isolate, paused });
                }
            }));
        }
        *hosted.inspector.agent.lock() = agent;
        Ok(Reply::Id(session))
    }
}
