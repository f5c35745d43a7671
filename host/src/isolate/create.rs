//! Making an isolate: in this process (a V8 isolate with ivm's limits, callbacks and hooks
//! installed) or in a worker process. Above every feature that installs something on a new
//! isolate.

use super::inspector::Agent;
use super::memory::MemoryGuard;
use super::{Backend, Isolate, IsolateInner, IsolateOptions, rejections};
use crate::code_cache::CacheKey;
use crate::engine;
use crate::error::{Error, Result};
use crate::process::protocol::{NewIsolate, Op, StartFrom};
use crate::process::{Isolation, RemoteIsolate, WorkerPool};
use ivm_client::WorkerSettings;

impl Isolate {
    /// Creates an isolate, in this process or in a worker process (see
    /// [`IsolateOptions::isolation`]).
    ///
    /// Fails with [`Error::InvalidArgument`] if `memory_limit` is below 8 MB, and for a
    /// process-isolated isolate with [`Error::WorkerCrashed`] if no worker could be started.
    pub fn new(options: IsolateOptions) -> Result<Isolate> {
        if options.memory_limit < 8 {
            return Err(Error::InvalidArgument("`memory_limit` must be at least 8".into()));
        }
        if options.tenant.as_deref().is_some_and(|tenant| tenant.contains('\0')) {
            // The character ivm's own tenants of snapshot isolates are marked with (below).
            return Err(Error::InvalidArgument("a tenant's name cannot hold a NUL character".into()));
        }
        let isolation = match options.isolation {
            Some(isolation) => isolation,
            None => Isolation::from_env()?,
        };
        // V8 shares one read-only heap across a process, made from the first isolate's snapshot:
        // isolates from other snapshots (V8's built-in one included) then abort the process. So
        // an isolate from a snapshot lives in a worker that hosts only that snapshot's.
        let tenant = match &options.snapshot {
            Some(snapshot) => Some(format!("{}\u{0}snapshot {}", options.tenant.as_deref().unwrap_or(""), snapshot.id())),
            None => options.tenant.clone(),
        };
        match isolation {
            Isolation::InProcess if options.snapshot.is_none() => Isolate::new_in_this_process(options),
            _ => {
                let pool = options.pool.clone().unwrap_or_else(WorkerPool::global);
                // A snapshot's worker makes its next isolate ahead of the request (it saves the
                // request the snapshot's deserialization), unless the embedder fixed the
                // worker's memory ceiling, which does not count an isolate nobody asked for.
                let ahead = options.snapshot.is_some() && !pool.has_fixed_ceiling();
                let created = pool.create_isolate(tenant.as_deref(), options.memory_limit, ahead, |link| {
                    Op::CreateIsolate(NewIsolate {
                        memory_limit: options.memory_limit,
                        rejections: options.on_unhandled_rejection.is_some(),
                        cache_secret: options.code_cache_key.as_ref().map(|key| key.secret().to_vec()),
                        default_timeout: options.default_timeout,
                        cpu_budget: options.cpu_budget,
                        terminate_grace: options.terminate_grace,
                        inspector: options.inspector,
                        snapshot: options.snapshot.as_ref().map(|snapshot| StartFrom {
                            id: snapshot.id().to_owned(),
                            blob: (!link.holds(snapshot.id())).then(|| serde_bytes::ByteBuf::from(snapshot.blob())),
                            ahead,
                        }),
                    })
                })?;
                if let Some(snapshot) = &options.snapshot {
                    created.0.link().now_holds(snapshot.id());
                }
                let settings = WorkerSettings {
                    grace: options.terminate_grace,
                    default_timeout: options.default_timeout,
                    memory_limit: options.memory_limit,
                };
                let remote = RemoteIsolate::new(created, settings, options.on_catastrophic_error, options.on_unhandled_rejection);
                Ok(Isolate { backend: Backend::Remote(remote) })
            }
        }
    }

    /// An isolate in this process, whatever `options.isolation` says (a worker makes its
    /// isolates so).
    pub(crate) fn new_in_this_process(options: IsolateOptions) -> Result<Isolate> {
        let cache_key = match options.code_cache_key.clone() {
            Some(key) => key,
            None => CacheKey::for_this_process()?,
        };
        engine::platform();
        let limit = usize::try_from(options.memory_limit.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
        // isolated-vm's sizing: a young generation of 1-16 MB, growing with the limit.
        let mut young = (1usize << (options.memory_limit / 128).min(4)) << 20;
        if options.snapshot.is_some() {
            // Deserializing a large snapshot's context into a young generation that small runs
            // the scavenger over and over: an eighth of the limit, up to 16 MB (measured with
            // a 2.7 MB snapshot: isolate and context 8.8 ms instead of 14).
            young = young.max(usize::try_from(options.memory_limit / 8).unwrap_or(16).min(16) << 20);
        }
        let memory = MemoryGuard::new(limit);
        let mut params = v8::CreateParams::default()
            .set_max_old_generation_size_in_bytes(limit)
            .set_max_young_generation_size_in_bytes(young)
            .array_buffer_allocator(memory.allocator());
        if let Some(snapshot) = &options.snapshot {
            params = params.snapshot_blob(snapshot.startup_data());
        }
        let mut isolate = v8::Isolate::new(params);
        memory.install(&mut isolate);
        if let Some(handler) = options.on_unhandled_rejection {
            rejections::install(&mut isolate, handler);
        }
        isolate.set_microtasks_policy(v8::MicrotasksPolicy::Explicit);
        isolate.set_capture_stack_trace_for_uncaught_exceptions(true, 10);
        crate::module::install(&mut isolate);
        let inner = IsolateInner::create(
            isolate,
            memory,
            cache_key,
            options.default_timeout,
            options.cpu_budget,
            options.terminate_grace,
            options.on_catastrophic_error,
        )?;
        if options.inspector {
            inner.run_sync(|s| {
                Agent::install(s.isolate, s.inner, true);
                Ok(())
            })?;
        }
        Ok(Isolate::local(inner))
    }
}
