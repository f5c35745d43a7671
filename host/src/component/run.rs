//! Running a guest program: a component that imports the isolate interface (with WASI for
//! its standard streams and arguments) and exports `run`, or a WASI command. This is
//! `ivm component run`, and what tests and embedders use to run guests.

use std::path::Path;

use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::p2::bindings::sync::Command;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::{CacheUse, CompileCache, GuestIsolates, GuestLimits, IsolatesView};
use crate::Isolate;

mod guest {
    wasmtime::component::bindgen!({
        path: "../guest-abi/wit",
        world: "guest",
        with: { "ivm:isolate/types": crate::component::bindings::ivm::isolate::types },
    });
}

struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    isolates: GuestIsolates,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl IsolatesView for State {
    fn isolates(&mut self) -> &mut GuestIsolates {
        &mut self.isolates
    }
}

/// A compiled guest program, to run any number of times, from any number of threads at once
/// (each run has a store, WASI context and isolates of its own).
pub struct GuestProgram {
    engine: Engine,
    component: Component,
    linker: Linker<State>,
    exports_run: bool,
    cache_use: Option<CacheUse>,
}

/// Where a run's standard output and error go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// This process's own.
    Inherit,
    /// Kept, and returned in [`GuestRun::stdout`].
    Capture,
}

/// How a run ended.
#[derive(Debug)]
#[non_exhaustive]
pub struct GuestRun {
    /// The exit status: 0 when `run` returned `ok`, 1 for `err` (its text went to standard
    /// error), or the guest's `exit(n)`.
    pub status: u8,
    /// Standard output, with [`Output::Capture`].
    pub stdout: Vec<u8>,
    /// Every isolate the guest made. The run is over, so all are disposed, whether the guest
    /// dropped them or not.
    pub isolates: Vec<Isolate>,
}

impl GuestProgram {
    /// Compiles the component at `path`, or loads it from `cache` (see [`CompileCache`]).
    pub fn load(path: &Path, cache: Option<&CompileCache>) -> wasmtime::Result<GuestProgram> {
        let engine = Engine::default();
        let (component, cache_use) = match cache {
            None => (Component::from_file(&engine, path)?, None),
            Some(cache) => {
                let wasm = std::fs::read(path).map_err(|e| wasmtime::Error::msg(format!("cannot read {}: {e}", path.display())))?;
                let (component, how) = cache.compile(&engine, &wasm)?;
                (component, Some(how))
            }
        };
        let mut linker = Linker::<State>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        super::add_to_linker(&mut linker)?;
        let exports_run = component.component_type().exports(&engine).any(|(export, _)| export == "run");
        Ok(GuestProgram { engine, component, linker, exports_run, cache_use })
    }

    /// How the cache given to [`load`](Self::load) served it; none without a cache.
    pub fn cache_use(&self) -> Option<&CacheUse> {
        self.cache_use.as_ref()
    }

    /// Runs the program with `args` (its `run` arguments; a command's `argv[1..]`).
    pub fn run(&self, args: &[String], limits: GuestLimits, output: Output) -> wasmtime::Result<GuestRun> {
        let mut wasi = WasiCtx::builder();
        wasi.args(&["guest"]).args(args).inherit_stdin();
        let captured = MemoryOutputPipe::new(usize::MAX);
        match output {
            Output::Inherit => wasi.inherit_stdout().inherit_stderr(),
            Output::Capture => wasi.stdout(captured.clone()).inherit_stderr(),
        };
        let state = State { wasi: wasi.build(), table: ResourceTable::new(), isolates: GuestIsolates::new(limits) };
        let mut store = Store::new(&self.engine, state);
        let outcome = if self.exports_run {
            let guest = guest::Guest::instantiate(&mut store, &self.component, &self.linker)?;
            guest.call_run(&mut store, args).map(|result| result.map_err(|failure| eprintln!("{failure}")))
        } else {
            Command::instantiate(&mut store, &self.component, &self.linker)?.wasi_cli_run().call_run(&mut store)
        };
        let status = match outcome {
            Ok(Ok(())) => 0,
            Ok(Err(())) => 1,
            // `exit(n)` in the guest arrives as a trap carrying the status.
            Err(e) => match e.downcast_ref::<wasmtime_wasi::I32Exit>() {
                Some(exit) => u8::try_from(exit.0).unwrap_or(1),
                None => return Err(e),
            },
        };
        let isolates = store.data().isolates.isolates.iter().map(|(isolate, _)| isolate.clone()).collect();
        // The store's isolates are disposed with it.
        drop(store);
        Ok(GuestRun { status, stdout: captured.contents().to_vec(), isolates })
    }
}
