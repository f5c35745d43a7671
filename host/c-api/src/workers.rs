//! Worker pools for process isolation, by worker program: options naming the same `ivm`
//! binary share one pool (and so its worker processes), as Rust embedders share a
//! `WorkerPool`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock, PoisonError};

use engine::{PoolOptions, WorkerPool};

pub(crate) fn pool_for(program: &str) -> WorkerPool {
    static POOLS: OnceLock<Mutex<HashMap<PathBuf, WorkerPool>>> = OnceLock::new();
    let mut pools = POOLS.get_or_init(Default::default).lock().unwrap_or_else(PoisonError::into_inner);
    pools
        .entry(PathBuf::from(program))
        .or_insert_with(|| WorkerPool::new(PoolOptions::default().worker_program(program)))
        .clone()
}
