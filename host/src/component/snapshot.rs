//! Startup snapshots for guests (`ivm:isolate@0.2.0`): made in a worker process of their own
//! under the guest's limits, sealed with the host's snapshot key, counted against the guest's
//! memory budget while it holds them.

use std::time::Duration;

use wasmtime::component::Resource;

use super::{GuestIsolates, Host, wit};
use crate::{CacheKey, ScriptOrigin, Snapshot};

impl GuestIsolates {
    fn snapshot_key(&self) -> crate::Result<CacheKey> {
        match &self.limits.snapshot_key {
            Some(key) => Ok(key.clone()),
            None => CacheKey::for_this_process(),
        }
    }

    /// Gives the guest a handle to `snapshot`, within its memory budget.
    fn hold_snapshot(&mut self, snapshot: Snapshot) -> Host<Resource<Snapshot>> {
        if let Err(e) = self.charge(snapshot.sealed().len() as u64, "a snapshot") {
            return Ok(Err(e));
        }
        Ok(Ok(self.table.push(snapshot)?))
    }
}

impl wit::HostSnapshot for GuestIsolates {
    fn create(&mut self, options: wit::SnapshotOptions) -> Host<Resource<Snapshot>> {
        let mb = if options.memory_limit_mb == 0 { 128 } else { u64::from(options.memory_limit_mb) };
        if let Err(e) = self.fits(mb, "a snapshot's creation") {
            return Ok(Err(e));
        }
        let timeout = options.timeout_ms.map(|ms| Duration::from_millis(ms.into())).or(self.limits.default_timeout);
        let mut builder = Snapshot::builder().key(guest!(self.snapshot_key())).memory_limit(mb).timeout(timeout);
        for (code, origin) in options.scripts {
            builder = builder.script(code, ScriptOrigin::new(origin.filename).offsets(origin.line_offset, origin.column_offset));
        }
        if let Some(warmup) = options.warmup {
            builder = builder.warmup(warmup);
        }
        let snapshot = guest!(builder.create());
        self.hold_snapshot(snapshot)
    }

    fn open(&mut self, sealed: Vec<u8>) -> Host<Resource<Snapshot>> {
        let snapshot = guest!(Snapshot::open(sealed, &guest!(self.snapshot_key())));
        self.hold_snapshot(snapshot)
    }

    fn sealed(&mut self, this: Resource<Snapshot>) -> wasmtime::Result<Vec<u8>> {
        Ok(self.table.get(&this)?.sealed().to_vec())
    }

    fn drop(&mut self, this: Resource<Snapshot>) -> wasmtime::Result<()> {
        let snapshot = self.table.delete(this)?;
        self.copies = self.copies.saturating_sub(snapshot.sealed().len() as u64);
        Ok(())
    }
}
