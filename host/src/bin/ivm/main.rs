//! `ivm`: run JavaScript in an isolate with a memory limit and a timeout.

mod cli;
mod code_cache;
mod inspect;
mod snapshot;

use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;

use ivm::{
    CompileOptions, ConsoleLevel, Context, ContextOptions, DirLoader, Error, ErrorKind, EvalOptions, Isolate, IsolateOptions,
    Isolation, ScriptOrigin, Snapshot, Value,
};

use clap::FromArgMatches;
use cli::{Cli, Command, ComponentCommand, ComponentRunArgs, DebugArgs, Limits, SnapshotCommand, StartArgs};
use ivm::component::{CacheUse, CompileCache, GuestProgram, Output};
use code_cache::DiskCache;
use inspect::Debugging;

/// Bounds V8's serializer when a script's result is copied out (see `ivm::alloc`), here and in
/// worker processes.
#[global_allocator]
static ALLOCATOR: ivm::BoundedAllocator = ivm::BoundedAllocator::new();

/// What a run (`run`, `eval`, `snapshot create`) was asked.
struct Args {
    limits: Limits,
    debugging: Debugging,
    /// The snapshot of `--snapshot`, opened.
    starting: Option<Snapshot>,
}

fn main() -> ExitCode {
    ivm::BoundedAllocator::free_large_blocks_eagerly();
    if std::env::args().nth(1).as_deref() == Some(ivm::process::WORKER_ARG) {
        return ivm::process::serve_worker();
    }
    let cli = match cli::command().try_get_matches().and_then(|matches| Cli::from_arg_matches(&matches)) {
        Ok(cli) => cli,
        Err(e) => {
            // Help and the version go to stdout with status 0; usage errors to stderr with 2.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    let mut args = Args { limits: cli.limits, debugging: Debugging::default(), starting: None };
    let runs_isolates = !matches!(cli.command, Command::Completions { .. } | Command::Manpage);
    if runs_isolates && args.limits.isolation().is_none() {
        // The default comes from IVM_ISOLATION: a bad value there is a usage error too.
        if let Err(e) = Isolation::from_env() {
            return exit_usage(e.message());
        }
    }
    let print_value = matches!(cli.command, Command::Eval(_));
    let result = match cli.command {
        // A reader that has gone away (`| head`) is no error, as for print_out.
        Command::Completions { shell } => {
            let _ = cli::write_completions(shell, &mut std::io::stdout().lock());
            return ExitCode::SUCCESS;
        }
        Command::Manpage => {
            let mut page = Vec::new();
            let _ = cli::write_man_page(&mut page).and_then(|()| std::io::stdout().lock().write_all(&page));
            return ExitCode::SUCCESS;
        }
        Command::Component(ComponentCommand::Run(component)) => return run_component(&args, &component),
        Command::Snapshot(SnapshotCommand::Create(create)) => {
            let Some(output) = &create.output else { return exit_usage("'snapshot create' needs -o FILE") };
            let request = snapshot::Create {
                scripts: &create.scripts,
                output,
                warmup: create.warmup.as_deref(),
                memory_limit: args.limits.memory_limit,
                timeout: args.limits.timeout(),
                key_file: create.snapshot_key.as_deref(),
            };
            match snapshot::create(&request) {
                Ok(()) => Ok(Value::Undefined),
                Err(snapshot::Failed::Usage(message)) => return exit_usage(&message),
                Err(snapshot::Failed::Run(e)) => Err(e),
            }
        }
        Command::Eval(eval) => {
            if let Err(message) = args.start(eval.start, eval.debugging) {
                return exit_usage(&message);
            }
            run_script(&args, &eval.code, "<eval>", None)
        }
        Command::Run(run) => {
            if let Err(message) = args.start(run.start, run.debugging) {
                return exit_usage(&message);
            }
            let cache = match &run.code_cache {
                Some(dir) => match DiskCache::open(dir, run.code_cache_key.as_deref()) {
                    Ok(cache) => Some(cache),
                    Err(e) => return exit_failed(&e),
                },
                None => None,
            };
            if run.module {
                run_module(&args, Path::new(&run.file), run.allow_read.as_deref(), cache.as_ref())
            } else {
                match read_source(&run.file) {
                    Ok(code) => run_script(&args, &code, &run.file, cache.as_ref()),
                    Err(e) => return exit_failed(&format!("cannot read {}: {e}", run.file)),
                }
            }
        }
    };
    report(&args, result, print_value)
}

impl Args {
    /// Takes the starting snapshot and the debugging options of `run` and `eval`; a snapshot
    /// that cannot be opened is refused with the reason.
    fn start(&mut self, start: StartArgs, debugging: DebugArgs) -> Result<(), String> {
        self.debugging = debugging.into();
        if let Some(path) = &start.snapshot {
            self.starting = Some(snapshot::open(path, start.snapshot_key.as_deref())?);
        }
        Ok(())
    }
}

/// Prints a run's result (or its error) and returns the exit status.
/// (`eval` prints its value; `run` only in its JSON line.)
fn report(args: &Args, result: Result<Value, Error>, print_value: bool) -> ExitCode {
    let exit = match &result {
        Ok(_) => 0,
        Err(Error::InvalidArgument(message)) if message.starts_with("cannot") || message.contains(" is not inside ") => {
            return exit_usage(message);
        }
        Err(e) => match e.kind() {
            ErrorKind::Timeout => 3,
            ErrorKind::MemoryLimit => 4,
            ErrorKind::WorkerCrashed => 5,
            ErrorKind::CpuLimit => 6,
            _ => 1,
        },
    };
    let _ = std::io::stdout().flush();
    if args.limits.json {
        let line = match &result {
            Ok(value) => serde_json::json!({ "ok": true, "value": value.to_json() }),
            Err(e) => serde_json::json!({ "ok": false, "error": {
                "kind": e.kind().as_str(), "name": e.name(), "message": e.message(), "stack": e.stack(),
            }}),
        };
        print_out(&line.to_string());
    } else {
        match &result {
            Ok(value) if print_value => print_out(&value.to_string()),
            Ok(_) => {}
            Err(e) => print_err(&format!("Uncaught {}", e.stack().map_or_else(|| e.to_string(), str::to_owned))),
        }
    }
    ExitCode::from(exit)
}

/// Reports a usage error (exit status 2).
fn exit_usage(message: &str) -> ExitCode {
    print_err(&format!("ivm: {message}\nTry 'ivm --help' for more information."));
    ExitCode::from(2)
}

/// Reports a file or key that cannot be used (exit status 2, as a usage error).
fn exit_failed(message: &str) -> ExitCode {
    print_err(&format!("ivm: {message}"));
    ExitCode::from(2)
}

/// Prints a line on standard output. A reader that has gone away (`ivm eval ... | head -c1`)
/// is no error: the output just ends.
fn print_out(line: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// Prints a line on standard error, if anyone reads it.
fn print_err(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

fn read_source(path: &str) -> std::io::Result<String> {
    if path == "-" || path == "/dev/stdin" {
        let mut code = String::new();
        std::io::stdin().read_to_string(&mut code)?;
        Ok(code)
    } else {
        std::fs::read_to_string(path)
    }
}

/// An isolate with the limits asked for, and a context with a `console`.
fn context(args: &Args, cache: Option<&DiskCache>) -> Result<Context, Error> {
    // JavaScript that runs for no operation (what an async host function's completion left
    // behind) is bounded by the same timeout; without --timeout, nothing is. The CPU limit
    // is the isolate's budget as well, so it bounds that too.
    let mut options = IsolateOptions::default()
        .memory_limit(args.limits.memory_limit)
        .default_timeout(args.limits.timeout().flatten())
        .cpu_budget(args.limits.cpu_limit());
    if let Some(isolation) = args.limits.isolation() {
        options = options.isolation(isolation);
    }
    if let Some(cache) = cache {
        options = options.code_cache_key(cache.key());
    }
    if args.debugging.wants_inspector() {
        options = options.inspector();
    }
    options.snapshot = args.starting.clone();
    let isolate = Isolate::new(options)?;
    if let (true, Some(sandbox), Some(pid)) = (args.limits.verbose, isolate.sandbox(), isolate.worker_pid()) {
        print_err(&format!("ivm: worker {pid} sandbox: {sandbox}"));
    }
    let json = args.limits.json;
    isolate.create_context_with(ContextOptions::default().console(move |level, text| {
        if json || level != ConsoleLevel::Log {
            print_err(text);
        } else {
            print_out(text);
        }
    }))
}

fn eval_options(args: &Args) -> EvalOptions {
    let mut options = EvalOptions::default().copy().promise();
    options.timeout = args.limits.timeout().flatten();
    options.cpu_limit = args.limits.cpu_limit();
    options
}

fn run_script(args: &Args, code: &str, filename: &str, cache: Option<&DiskCache>) -> Result<Value, Error> {
    let context = context(args, cache)?;
    args.debugging.start(context.isolate(), filename)?;
    let options = eval_options(args);
    let result = match cache {
        None => context.eval_with::<Value>(code, &options.origin(ScriptOrigin::new(filename))),
        Some(cache) => {
            let compile = cache.compile_options(filename, CompileOptions::origin(ScriptOrigin::new(filename)));
            context.isolate().compile_script(code, &compile).and_then(|script| {
                cache.store(filename, script.cached_data_rejected(), script.cached_data(), args.limits.verbose);
                script.run::<Value>(&context, &options)
            })
        }
    };
    finish(args, context.isolate(), result)
}

/// The script's result, after the profile and snapshot asked for are written (the script's
/// error comes first).
fn finish(args: &Args, isolate: &Isolate, result: Result<Value, Error>) -> Result<Value, Error> {
    let written = args.debugging.finish(isolate);
    let value = result?;
    written.map(|()| value)
}

fn run_module(args: &Args, path: &Path, allow_read: Option<&Path>, cache: Option<&DiskCache>) -> Result<Value, Error> {
    let invalid = |message: String| Error::InvalidArgument(message);
    let file = path.canonicalize().map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
    let root = match allow_read {
        Some(dir) => dir.canonicalize().map_err(|e| invalid(format!("cannot read {}: {e}", dir.display())))?,
        None => file.parent().map(Path::to_path_buf).unwrap_or_default(),
    };
    let inside = file.strip_prefix(&root).map_err(|_| invalid(format!("{} is not inside {}", file.display(), root.display())))?;
    let inside = inside.to_string_lossy().into_owned();
    let context = context(args, cache)?;
    let isolate = context.isolate().clone();
    args.debugging.start(&isolate, &format!("file:///{inside}"))?;
    let result = run_main(args, &context, &root, &file, &inside, cache);
    finish(args, &isolate, result)
}

/// The module `inside` of `root` (the file `file`), loaded, linked and evaluated in `context`.
fn run_main(args: &Args, context: &Context, root: &Path, file: &Path, inside: &str, cache: Option<&DiskCache>) -> Result<Value, Error> {
    let invalid = |message: String| Error::InvalidArgument(message);
    let isolate = context.isolate().clone();
    let loader = std::sync::Arc::new(DirLoader::open(root)?);
    let main = match cache {
        Some(cache) => {
            let source = std::fs::read_to_string(file).map_err(|e| invalid(format!("cannot read {}: {e}", file.display())))?;
            let filename = format!("file:///{inside}");
            let compile = cache.compile_options(&filename, CompileOptions::origin(ScriptOrigin::new(filename.clone())));
            let main = isolate.compile_module(&source, &compile)?;
            cache.store(&filename, main.cached_data_rejected(), main.cached_data(), args.limits.verbose);
            loader.preload(inside, main.clone());
            main
        }
        None => loader.load(&isolate, inside)?,
    };
    let dynamic = loader.clone();
    isolate.set_dynamic_import(move |isolate, request, referrer| dynamic.resolve(isolate, request, referrer));
    main.instantiate(context, |request, referrer| loader.resolve(&isolate, request, referrer.filename()))?;
    main.evaluate(&eval_options(args)).map(|()| Value::Undefined)
}

fn run_component(args: &Args, component: &ComponentRunArgs) -> ExitCode {
    let mut limits = ivm::component::GuestLimits::default();
    if let Some(timeout) = args.limits.timeout() {
        limits = limits.default_timeout(timeout);
    }
    limits = limits.default_cpu_limit(args.limits.cpu_limit());
    if let Some(n) = component.max_isolates {
        limits = limits.max_isolates(usize::try_from(n).unwrap_or(usize::MAX));
    }
    if let Some(mb) = component.memory_budget {
        limits = limits.memory_budget_mb(mb);
    }
    if let Some(isolation) = args.limits.isolation() {
        limits = limits.isolation(isolation);
    }
    limits = limits.debugging(component.allow_debugging);
    let Some((guest, guest_args)) = component.command.split_first() else { return exit_usage("'component run' needs GUEST.wasm") };
    let cache = match compile_cache(component) {
        Ok(cache) => cache,
        Err(e) => return exit_failed(&e),
    };
    let program = GuestProgram::load(Path::new(guest), cache.as_ref());
    if args.limits.verbose
        && let Ok(program) = &program
    {
        match program.cache_use() {
            Some(CacheUse::Loaded) => print_err(&format!("ivm: {guest}: loaded from the compile cache")),
            Some(CacheUse::Refused(why)) => print_err(&format!("ivm: {guest}: compiled; the cached artifact was refused: {why}")),
            _ => print_err(&format!("ivm: {guest}: compiled")),
        }
    }
    match program.and_then(|program| program.run(guest_args, limits, Output::Inherit)) {
        Ok(run) => ExitCode::from(run.status),
        Err(e) => {
            print_err(&format!("ivm: {guest}: {e:#}"));
            ExitCode::from(1)
        }
    }
}

/// The compile cache `component run` uses: `--cache-dir` (which must work), else the default
/// one if it can be used (if not, the guest is compiled, and the reason goes to standard
/// error); none with `--no-cache`, or without a home directory.
fn compile_cache(component: &ComponentRunArgs) -> Result<Option<CompileCache>, String> {
    let refused = |dir: &Path, e: ivm::Error| format!("the compile cache {}: {}", dir.display(), e.message());
    match (&component.cache_dir, component.no_cache) {
        (_, true) => Ok(None),
        (Some(dir), false) => CompileCache::open(dir).map(Some).map_err(|e| refused(dir, e)),
        (None, false) => Ok(CompileCache::default_dir().and_then(|dir| {
            CompileCache::open(&dir)
                .map_err(|e| print_err(&format!("ivm: {}; compiling without it", refused(&dir, e))))
                .ok()
        })),
    }
}
