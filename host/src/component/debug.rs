//! Debugging and profiling for guests (`ivm:isolate@0.2.0`): inspector sessions a guest
//! drives by polling, the CPU profiler, and heap snapshots read in pieces. All of it only when
//! the host allows it ([`GuestLimits::debugging`](super::GuestLimits::debugging)).

use std::io::{self, Write};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use wasmtime::component::Resource;

use super::{GuestIsolate, GuestIsolates, Host, wit};
use crate::Isolate;
use crate::inspector::{InspectorSession, PausesHeld};

/// An inspector session resource.
pub struct GuestSession(Arc<InspectorSession>);

/// A heap snapshot being taken, read by the guest in pieces.
pub struct HeapSnapshotStream {
    isolate: Isolate,
    pieces: mpsc::Receiver<Piece>,
    ended: bool,
    /// Held while unfinished: one stream per isolate at a time (see `heap_snapshot`).
    unfinished: Option<Arc<()>>,
}

enum Piece {
    Bytes(Vec<u8>),
    /// The snapshot is complete, or failed.
    End(Result<(), wit::Error>),
}

/// A `read` stops gathering pieces once it has this much (V8 writes pieces of a few KB, a
/// worker sends up to 1 MB at once).
const READ_MAX: usize = 1 << 20;

/// Where V8 writes a snapshot's pieces: to the guest's stream, which holds what the guest has
/// not read yet. Writing fails once the guest dropped the stream, which stops the snapshot.
struct PieceWriter(mpsc::Sender<Piece>);

impl Write for PieceWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.send(Piece::Bytes(bytes.to_vec())).map_err(|_| io::Error::other("the guest dropped the heap snapshot"))?;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl GuestIsolates {
    /// `Ok` if the host lets this guest debug and profile its isolates.
    pub(super) fn may_debug(&self) -> Result<(), wit::Error> {
        match self.limits.debugging {
            true => Ok(()),
            false => Err(wit::Error::Limit("this host does not let guests debug or profile isolates".into())),
        }
    }

    /// The isolate of `handle` if the guest may debug it, for a call that waits on it (see
    /// `waiting_on`).
    fn debuggable(&self, handle: &Resource<GuestIsolate>) -> wasmtime::Result<(Result<Isolate, wit::Error>, Option<PausesHeld>)> {
        let (GuestIsolate(isolate, _), held) = self.waiting_on(handle)?;
        Ok((self.may_debug().map(|()| isolate.clone()), held))
    }

    pub(super) fn start_profile(&mut self, handle: Resource<GuestIsolate>, title: String) -> Host<()> {
        let (isolate, _held) = self.debuggable(&handle)?;
        Ok(isolate.and_then(|isolate| isolate.start_cpu_profiler(&title).map_err(wit::Error::from)))
    }

    pub(super) fn stop_profile(&mut self, handle: Resource<GuestIsolate>, title: String) -> Host<Vec<wit::ThreadCpuProfile>> {
        let (isolate, _held) = self.debuggable(&handle)?;
        Ok(isolate.and_then(|isolate| {
            let profiles = isolate.stop_cpu_profiler(&title)?;
            profiles
                .into_iter()
                .map(|p| match serde_json::to_string(&p.profile) {
                    Ok(profile) => Ok(wit::ThreadCpuProfile { thread_id: p.thread_id, profile }),
                    Err(e) => Err(wit::Error::Conversion(e.to_string())),
                })
                .collect()
        }))
    }

    pub(super) fn heap_snapshot(&mut self, handle: Resource<GuestIsolate>) -> Host<Resource<HeapSnapshotStream>> {
        // Started, not waited for: no need to hold pauses (`read` waits, and holds them).
        let isolate = self.table.get(&handle)?.0.clone();
        if let Err(e) = self.may_debug() {
            return Ok(Err(e));
        }
        // What the guest has not read is kept for it: one unfinished stream per isolate bounds
        // that by the isolates' heaps.
        self.snapshots.retain(|(_, unfinished)| unfinished.strong_count() > 0);
        if self.snapshots.iter().any(|(of, _)| of.same(&isolate)) {
            return Ok(Err(wit::Error::Limit("this isolate's last heap snapshot is not read to its end yet".into())));
        }
        let unfinished = Arc::new(());
        self.snapshots.push((isolate.clone(), Arc::downgrade(&unfinished)));
        let (pieces, stream) = mpsc::channel();
        let snapshot = isolate.heap_snapshot_async(PieceWriter(pieces.clone()));
        crate::engine::tasks::spawn(async move {
            let _ = pieces.send(Piece::End(snapshot.await.map(drop).map_err(wit::Error::from)));
        });
        Ok(Ok(self.table.push(HeapSnapshotStream { isolate, pieces: stream, ended: false, unfinished: Some(unfinished) })?))
    }

    pub(super) fn connect_session(&mut self, handle: Resource<GuestIsolate>) -> Host<Resource<GuestSession>> {
        let (isolate, held) = self.debuggable(&handle)?;
        let connected = isolate.and_then(|isolate| Ok((isolate.inspector_session()?, isolate)));
        drop(held);
        let (session, isolate) = match connected {
            Ok(connected) => connected,
            Err(e) => return Ok(Err(e)),
        };
        let session = Arc::new(session);
        self.sessions.retain(|(_, session)| session.strong_count() > 0);
        self.sessions.push((isolate, Arc::downgrade(&session)));
        Ok(Ok(self.table.push(GuestSession(session))?))
    }
}

impl wit::HostHeapSnapshotStream for GuestIsolates {
    fn read(&mut self, this: Resource<HeapSnapshotStream>) -> Host<Vec<u8>> {
        let isolate = self.table.get(&this)?.isolate.clone();
        let _held = self.hold_pauses(&isolate);
        let stream = self.table.get_mut(&this)?;
        if stream.ended {
            return Ok(Ok(Vec::new()));
        }
        // Waits for one piece, then takes what else is there, up to READ_MAX.
        let mut bytes = Vec::new();
        let mut next = stream.pieces.recv().unwrap_or(Piece::End(Err(wit::Error::Disposed("the heap snapshot was abandoned".into()))));
        loop {
            match next {
                Piece::Bytes(piece) => bytes.extend_from_slice(&piece),
                Piece::End(result) => {
                    stream.ended = true;
                    stream.unfinished = None;
                    if let Err(e) = result {
                        return Ok(Err(e));
                    }
                    break;
                }
            }
            if bytes.len() >= READ_MAX {
                break;
            }
            match stream.pieces.try_recv() {
                Ok(piece) => next = piece,
                Err(_) => break,
            }
        }
        Ok(Ok(bytes))
    }

    fn drop(&mut self, this: Resource<HeapSnapshotStream>) -> wasmtime::Result<()> {
        // The writer's next piece fails, which stops the snapshot.
        self.table.delete(this)?;
        Ok(())
    }
}

impl wit::HostInspectorSession for GuestIsolates {
    fn dispatch(&mut self, this: Resource<GuestSession>, message: String) -> Host<()> {
        Ok(self.table.get(&this)?.0.dispatch(message).map_err(wit::Error::from))
    }

    fn poll(&mut self, this: Resource<GuestSession>, wait_ms: u32) -> Host<Option<String>> {
        let session = &self.table.get(&this)?.0;
        Ok(match session.recv_timeout(Duration::from_millis(wait_ms.into())) {
            Ok(Some(message)) => Ok(Some(message)),
            Ok(None) => Err(wit::Error::Disposed("the inspector session has ended".into())),
            Err(_) => Ok(None),
        })
    }

    fn drop(&mut self, this: Resource<GuestSession>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}
