//! `ivm`: run JavaScript in an isolate with a memory limit and a timeout.

mod code_cache;
mod inspect;
mod key_file;
mod snapshot;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use ivm::{
    CompileOptions, ConsoleLevel, Context, ContextOptions, DirLoader, Error, ErrorKind, EvalOptions, Isolate, IsolateOptions,
    Isolation, ScriptOrigin, Snapshot, Value,
};

use code_cache::DiskCache;
use inspect::Debugging;

/// Bounds V8's serializer when a script's result is copied out (see `ivm::alloc`), here and in
/// worker processes.
#[global_allocator]
static ALLOCATOR: ivm::BoundedAllocator = ivm::BoundedAllocator::new();

const HELP: &str = "\
ivm - run JavaScript in an isolated V8 isolate with hard limits

USAGE:
    ivm run [OPTIONS] FILE      Run a script file ('-' or /dev/stdin reads standard input)
    ivm eval [OPTIONS] CODE     Evaluate CODE and print its completion value
    ivm component run [OPTIONS] GUEST.wasm [ARGS...]
                                Run a WASI command component that imports the isolate
                                interface (ivm:isolate); ARGS go to the guest
    ivm snapshot create -o FILE [--warmup CODE] [OPTIONS] SCRIPT...
                                Run the SCRIPTs in a fresh isolate (in a worker process of
                                its own, under --memory-limit and --timeout, default 30 s)
                                and write a startup snapshot of what they left to FILE,
                                sealed with the snapshot key

OPTIONS:
    --memory-limit MB   Memory limit of the isolate in MB (default 128, minimum 8)
    --timeout MS        Wall-clock limit in milliseconds for the script, its microtasks
                        and the promise it returns (default: none)
    --json              Print exactly one JSON line on stdout:
                        {\"ok\":true,\"value\":...} or {\"ok\":false,\"error\":{...}};
                        console output then goes to stderr
    --module            Run FILE as an ES module: its imports (and import()) load from
                        its directory and nothing else; top-level await is awaited
    --allow-read DIR    With --module: load modules from DIR (which must hold FILE)
                        instead of FILE's directory
    --code-cache DIR    Keep sealed code caches of FILE in DIR across runs; the key that
                        seals them is DIR/key (made on first use, readable by the owner only)
    --code-cache-key F  Seal code caches with the key in file F (32 bytes or more)
    --isolation MODE    Where the isolate lives: 'in-process' (default, or IVM_ISOLATION)
                        or 'process' (a worker process: a V8 crash or abort, or a
                        script that ignores its timeout, ends only the worker); for
                        'component run', where the guest's isolates live
    --inspect[=HOST:PORT]
                        Serve the isolate's inspector to DevTools clients (Chrome's
                        DevTools, `node inspect HOST:PORT`) on HOST:PORT (default
                        127.0.0.1:9229): /json, /json/list, /json/version and the
                        WebSocket; with 'run' and 'eval'
    --inspect-brk[=HOST:PORT]
                        The same, and wait for a debugger, then pause before the first
                        statement
    --cpu-prof FILE     Write a CPU profile of the run to FILE (.cpuprofile, as DevTools
                        reads it)
    --heap-snapshot FILE
                        Write a heap snapshot to FILE when the script ends (.heapsnapshot;
                        V8 needs memory in proportion to the heap to take it)
    -v, --verbose       Report on stderr what the code cache did
    --max-isolates N    component: isolates the guest may hold at once (default 16)
    --memory-budget MB  component: sum of its isolates' memory limits (default 2048)
                        (--timeout sets the default timeout of the guest's runs, 30 s
                        unless given; 0 lifts it)
    --allow-debugging   component: let the guest debug and profile its isolates
                        (inspector sessions, CPU profiles, heap snapshots)
    --snapshot FILE     run, eval: start the isolate from the snapshot in FILE (made by
                        'ivm snapshot create'; one altered, truncated, made by another
                        V8 or sealed with another key is refused, exit status 2)
    --snapshot-key F    Seal and open snapshots with the key in file F (32 bytes or more,
                        mode 600); default: $XDG_CONFIG_HOME/ivm/snapshot.key (else
                        ~/.config/ivm/snapshot.key), made on first use
    -o, --output FILE   snapshot create: where the snapshot goes
    --warmup CODE       snapshot create: run CODE after the scripts in a throw-away
                        context, so that what it calls is compiled into the snapshot
    -h, --help          Print this help
    -V, --version       Print the versions of ivm and V8

The script gets the ECMAScript built-ins and a `console` (log, info, debug to stdout;
warn, trace, error to stderr) and nothing else from the host. A promise returned by the
script is awaited.

EXIT STATUS:
    0 success, 1 JavaScript exception, 2 usage error, 3 timeout, 4 memory limit,
    5 the isolate's worker process crashed
";

struct Args {
    command: Command,
    memory_limit: u64,
    /// `Some(None)`: `--timeout 0`, no timeout.
    timeout: Option<Option<Duration>>,
    json: bool,
    module: bool,
    allow_read: Option<PathBuf>,
    code_cache: Option<PathBuf>,
    code_cache_key: Option<PathBuf>,
    verbose: bool,
    max_isolates: Option<u64>,
    memory_budget: Option<u64>,
    allow_debugging: bool,
    isolation: Option<Isolation>,
    debugging: Debugging,
    snapshot: Option<PathBuf>,
    snapshot_key: Option<PathBuf>,
    warmup: Option<String>,
    /// The snapshot of `--snapshot`, opened.
    starting: Option<Snapshot>,
}

enum Command {
    Run(String),
    Eval(String),
    Component { guest: String, args: Vec<String> },
    /// `snapshot create`: its scripts, and where the snapshot goes.
    Snapshot { scripts: Vec<String>, output: PathBuf },
}

enum Parsed {
    Go(Box<Args>),
    Exit(ExitCode),
}

fn usage(message: &str) -> Parsed {
    print_err(&format!("ivm: {message}\nTry 'ivm --help' for more information."));
    Parsed::Exit(ExitCode::from(2))
}

fn parse(mut argv: impl Iterator<Item = String>) -> Parsed {
    let mut memory_limit = 128;
    let mut timeout = None;
    let (mut json, mut module, mut verbose, mut allow_debugging) = (false, false, false, false);
    let (mut allow_read, mut code_cache, mut code_cache_key) = (None, None, None);
    let (mut max_isolates, mut memory_budget) = (None, None);
    let mut isolation = None;
    let mut debugging = Debugging::default();
    let (mut snapshot, mut snapshot_key, mut output, mut warmup) = (None, None, None, None);
    let mut words = Vec::new();
    while let Some(arg) = argv.next() {
        match arg.as_str() {
            "-h" | "--help" => {
                print_out(HELP.trim_end());
                return Parsed::Exit(ExitCode::SUCCESS);
            }
            "-V" | "--version" => {
                print_out(&format!("ivm {} (V8 {})", env!("CARGO_PKG_VERSION"), ivm::v8_version()));
                return Parsed::Exit(ExitCode::SUCCESS);
            }
            "--json" => json = true,
            flag if flag == "--inspect" || flag == "--inspect-brk" || flag.starts_with("--inspect=") || flag.starts_with("--inspect-brk=") => {
                let (name, address) = flag.split_once('=').unwrap_or((flag, inspect::DEFAULT_ADDRESS));
                if address.is_empty() {
                    return usage(&format!("{name} needs HOST:PORT after '='"));
                }
                debugging.inspect = Some((address.to_owned(), name == "--inspect-brk"));
            }
            "--cpu-prof" | "--heap-snapshot" => {
                let Some(value) = argv.next() else { return usage(&format!("{arg} needs a value")) };
                *(if arg == "--cpu-prof" { &mut debugging.cpu_prof } else { &mut debugging.heap_snapshot }) = Some(PathBuf::from(value));
            }
            "--module" => module = true,
            "-v" | "--verbose" => verbose = true,
            "--allow-read" | "--code-cache" | "--code-cache-key" => {
                let Some(value) = argv.next() else { return usage(&format!("{arg} needs a value")) };
                let slot = match arg.as_str() {
                    "--allow-read" => &mut allow_read,
                    "--code-cache" => &mut code_cache,
                    _ => &mut code_cache_key,
                };
                *slot = Some(PathBuf::from(value));
            }
            "--isolation" => {
                let Some(value) = argv.next() else { return usage("--isolation needs a value") };
                match value.parse::<Isolation>() {
                    Ok(mode) => isolation = Some(mode),
                    Err(e) => return usage(e.message()),
                }
            }
            "--max-isolates" | "--memory-budget" => {
                let Some(value) = argv.next() else { return usage(&format!("{arg} needs a value")) };
                let Ok(n) = value.parse::<u64>() else {
                    return usage(&format!("{arg} takes a whole number, not '{value}'"));
                };
                *(if arg == "--max-isolates" { &mut max_isolates } else { &mut memory_budget }) = Some(n);
            }
            "--memory-limit" | "--timeout" => {
                let Some(value) = argv.next() else { return usage(&format!("{arg} needs a value")) };
                let Ok(n) = value.parse::<u64>() else {
                    return usage(&format!("{arg} takes a whole number, not '{value}'"));
                };
                if arg == "--memory-limit" {
                    memory_limit = n;
                } else {
                    // 0: no timeout (which for a component also lifts the default one).
                    timeout = Some((n > 0).then(|| Duration::from_millis(n)));
                }
            }
            "--allow-debugging" => allow_debugging = true,
            "--snapshot" | "--snapshot-key" | "-o" | "--output" | "--warmup" => {
                let Some(value) = argv.next() else { return usage(&format!("{arg} needs a value")) };
                match arg.as_str() {
                    "--snapshot" => snapshot = Some(PathBuf::from(value)),
                    "--snapshot-key" => snapshot_key = Some(PathBuf::from(value)),
                    "--warmup" => warmup = Some(value),
                    _ => output = Some(PathBuf::from(value)),
                }
            }
            "--" => words.extend(argv.by_ref()),
            // Everything after a component's path belongs to the guest.
            _ if words.len() == 2 && words[0] == "component" => {
                words.push(arg);
                words.extend(argv.by_ref());
            }
            "-" => words.push(arg),
            flag if flag.starts_with('-') && words.is_empty() => return usage(&format!("unknown option '{flag}'")),
            _ => words.push(arg),
        }
    }
    let command = match words.as_slice() {
        [cmd, sub, guest, args @ ..] if cmd == "component" && sub == "run" => Command::Component { guest: guest.clone(), args: args.to_vec() },
        [cmd, ..] if cmd == "component" => return usage("usage: ivm component run GUEST.wasm [ARGS...]"),
        [cmd, sub, scripts @ ..] if cmd == "snapshot" && sub == "create" && !scripts.is_empty() => match output.take() {
            Some(output) => Command::Snapshot { scripts: scripts.to_vec(), output },
            None => return usage("'snapshot create' needs -o FILE"),
        },
        [cmd, ..] if cmd == "snapshot" => return usage("usage: ivm snapshot create -o FILE [--warmup CODE] SCRIPT..."),
        [cmd, file] if cmd == "run" => Command::Run(file.clone()),
        [cmd, code] if cmd == "eval" => Command::Eval(code.clone()),
        [] => return usage("missing command"),
        [cmd, ..] if cmd == "run" => return usage("'run' takes one FILE"),
        [cmd, ..] if cmd == "eval" => return usage("'eval' takes one CODE argument"),
        [cmd, ..] => return usage(&format!("unknown command '{cmd}'")),
    };
    if (module || allow_read.is_some() || code_cache.is_some()) && !matches!(command, Command::Run(_)) {
        return usage("--module, --allow-read and --code-cache go with 'run'");
    }
    if allow_read.is_some() && !module {
        return usage("--allow-read goes with --module");
    }
    if code_cache_key.is_some() && code_cache.is_none() {
        return usage("--code-cache-key goes with --code-cache");
    }
    if (max_isolates.is_some() || memory_budget.is_some() || allow_debugging) && !matches!(command, Command::Component { .. }) {
        return usage("--max-isolates, --memory-budget and --allow-debugging go with 'component run'");
    }
    if isolation.is_none() {
        // The default comes from IVM_ISOLATION: a bad value there is a usage error too.
        if let Err(e) = Isolation::from_env() {
            return usage(e.message());
        }
    }
    let creates = matches!(command, Command::Snapshot { .. });
    if (output.is_some() || warmup.is_some()) && !creates {
        return usage("-o and --warmup go with 'snapshot create'");
    }
    if snapshot.is_some() && !matches!(command, Command::Run(_) | Command::Eval(_)) {
        return usage("--snapshot goes with 'run' and 'eval'");
    }
    if snapshot_key.is_some() && snapshot.is_none() && !creates {
        return usage("--snapshot-key goes with --snapshot and 'snapshot create'");
    }
    let debugs = debugging.inspect.is_some() || debugging.cpu_prof.is_some() || debugging.heap_snapshot.is_some();
    if debugs && !matches!(command, Command::Run(_) | Command::Eval(_)) {
        return usage("--inspect, --cpu-prof and --heap-snapshot go with 'run' and 'eval'");
    }
    Parsed::Go(Box::new(Args {
        command,
        memory_limit,
        timeout,
        json,
        module,
        allow_read,
        code_cache,
        code_cache_key,
        verbose,
        max_isolates,
        memory_budget,
        allow_debugging,
        isolation,
        debugging,
        snapshot,
        snapshot_key,
        warmup,
        starting: None,
    }))
}

fn main() -> ExitCode {
    ivm::BoundedAllocator::free_large_blocks_eagerly();
    if std::env::args().nth(1).as_deref() == Some(ivm::process::WORKER_ARG) {
        return ivm::process::serve_worker();
    }
    let mut args = match parse(std::env::args().skip(1)) {
        Parsed::Go(args) => args,
        Parsed::Exit(code) => return code,
    };
    if let Some(path) = &args.snapshot {
        match snapshot::open(path, args.snapshot_key.as_deref()) {
            Ok(opened) => args.starting = Some(opened),
            Err(e) => return exit_usage(&e),
        }
    }
    let cache = match &args.code_cache {
        Some(dir) => match DiskCache::open(dir, args.code_cache_key.as_deref()) {
            Ok(cache) => Some(cache),
            Err(e) => {
                print_err(&format!("ivm: {e}"));
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    let print_value = matches!(args.command, Command::Eval(_));
    if let Command::Component { guest, args: guest_args } = &args.command {
        return run_component(&args, guest, guest_args);
    }
    let result = match &args.command {
        Command::Snapshot { scripts, output } => {
            let request = snapshot::Create {
                scripts,
                output,
                warmup: args.warmup.as_deref(),
                memory_limit: args.memory_limit,
                timeout: args.timeout,
                key_file: args.snapshot_key.as_deref(),
            };
            match snapshot::create(&request) {
                Ok(()) => Ok(Value::Undefined),
                Err(snapshot::Failed::Usage(message)) => return exit_usage(&message),
                Err(snapshot::Failed::Run(e)) => Err(e),
            }
        }
        Command::Eval(code) => run_script(&args, code, "<eval>", None),
        Command::Run(path) if args.module => run_module(&args, Path::new(path), cache.as_ref()),
        Command::Component { .. } => unreachable!("handled above"),
        Command::Run(path) => match read_source(path) {
            Ok(code) => run_script(&args, &code, path, cache.as_ref()),
            Err(e) => {
                print_err(&format!("ivm: cannot read {path}: {e}"));
                return ExitCode::from(2);
            }
        },
    };
    let exit = match &result {
        Ok(_) => 0,
        Err(Error::InvalidArgument(message)) if message.contains("memory_limit") || message.starts_with("cannot") || message.contains(" is not inside ") => {
            return exit_usage(message);
        }
        Err(e) => match e.kind() {
            ErrorKind::Timeout => 3,
            ErrorKind::MemoryLimit => 4,
            ErrorKind::WorkerCrashed => 5,
            _ => 1,
        },
    };
    let _ = std::io::stdout().flush();
    if args.json {
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
    match usage(message) {
        Parsed::Exit(code) => code,
        Parsed::Go(_) => unreachable!("usage always exits"),
    }
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
    // behind) is bounded by the same timeout; without --timeout, nothing is.
    let mut options = IsolateOptions::default().memory_limit(args.memory_limit).default_timeout(args.timeout.flatten());
    if let Some(isolation) = args.isolation {
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
    let json = args.json;
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
    options.timeout = args.timeout.flatten();
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
                cache.store(filename, script.cached_data_rejected(), script.cached_data(), args.verbose);
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

fn run_module(args: &Args, path: &Path, cache: Option<&DiskCache>) -> Result<Value, Error> {
    let invalid = |message: String| Error::InvalidArgument(message);
    let file = path.canonicalize().map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
    let root = match &args.allow_read {
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
            cache.store(&filename, main.cached_data_rejected(), main.cached_data(), args.verbose);
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

fn run_component(args: &Args, guest: &str, guest_args: &[String]) -> ExitCode {
    let mut limits = ivm::component::GuestLimits::default();
    if let Some(timeout) = args.timeout {
        limits = limits.default_timeout(timeout);
    }
    if let Some(n) = args.max_isolates {
        limits = limits.max_isolates(usize::try_from(n).unwrap_or(usize::MAX));
    }
    if let Some(mb) = args.memory_budget {
        limits = limits.memory_budget_mb(mb);
    }
    if let Some(isolation) = args.isolation {
        limits = limits.isolation(isolation);
    }
    limits = limits.debugging(args.allow_debugging);
    match ivm::component::run_command(Path::new(guest), guest_args, limits) {
        Ok(status) => ExitCode::from(status),
        Err(e) => {
            print_err(&format!("ivm: {guest}: {e:#}"));
            ExitCode::from(1)
        }
    }
}
