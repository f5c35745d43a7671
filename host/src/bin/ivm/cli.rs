//! The command line, defined once: parsing, `--help`, `ivm completions SHELL` and the man page
//! (`ivm manpage`) all come from these types.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::inspect;

const ABOUT: &str = "Run JavaScript in an isolated V8 isolate with hard limits";

const AFTER_HELP: &str = "\
The script gets the ECMAScript built-ins and a `console` (log, info, debug to stdout; warn,
trace, error to stderr) and nothing else from the host. A promise returned by the script is
awaited.

EXIT STATUS:
    0 success, 1 JavaScript exception, 2 usage error, 3 timeout, 4 memory limit,
    5 the isolate's worker process crashed, 6 CPU-time limit

ENVIRONMENT:
    IVM_ISOLATION      the default of --isolation
    IVM_SANDBOX        'required': a worker the kernel refuses part of its sandbox does not
                       start (default: it starts with what could be applied; see --verbose)
    XDG_CONFIG_HOME    where the per-user snapshot key lives (ivm/snapshot.key; else
                       ~/.config/ivm/snapshot.key)
    XDG_CACHE_HOME     where 'component run' keeps compiled guests (ivm/; else ~/.cache/ivm)";

const SNAPSHOT_KEY_HELP: &str = "Seal and open snapshots with the key in FILE (32 bytes or more, mode 600); default: \
    $XDG_CONFIG_HOME/ivm/snapshot.key (else ~/.config/ivm/snapshot.key), made on first use";

#[derive(Parser)]
#[command(name = "ivm", about = ABOUT, after_help = AFTER_HELP, subcommand_required = true, arg_required_else_help = true)]
// The last of a repeated option wins, as it always did.
#[command(disable_version_flag = true, args_override_self = true, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub limits: Limits,
    /// Print the versions of ivm and V8
    #[arg(short = 'V', long, action = clap::ArgAction::Version)]
    version: Option<bool>,
    #[command(subcommand)]
    pub command: Command,
}

/// Options of every command, given before or after it.
#[derive(Args)]
#[command(next_help_heading = "Common options")]
pub struct Limits {
    /// Memory limit of the isolate in MB (minimum 8)
    #[arg(long, global = true, value_name = "MB", default_value_t = 128, value_parser = clap::value_parser!(u64).range(8..))]
    pub memory_limit: u64,
    /// Wall-clock limit in milliseconds for the script, its microtasks and the promise it returns
    /// (default: none; 'component run': the default timeout of the guest's runs, 30 s unless
    /// given; 'snapshot create': 30 s; 0 lifts it)
    #[arg(long, global = true, value_name = "MS")]
    timeout: Option<u64>,
    /// CPU-time limit in milliseconds for the same, on the CPU clock of the threads running the
    /// isolate: time the script spends waiting (Atomics.wait, promises) is not charged
    /// (default: none; 'component run': for the guest's runs that set none; 0 lifts it)
    #[arg(long, global = true, value_name = "MS")]
    cpu_limit: Option<u64>,
    /// Print exactly one JSON line on stdout: {"ok":true,"value":...} or {"ok":false,"error":{...}};
    /// console output then goes to stderr
    #[arg(long, global = true)]
    pub json: bool,
    /// Where the isolate lives (default: IVM_ISOLATION, else in-process); 'process': a worker
    /// process, so a V8 crash or abort, or a script that ignores its timeout, ends only the
    /// worker. For 'component run', where the guest's isolates live
    #[arg(long, global = true, value_name = "MODE")]
    isolation: Option<IsolationArg>,
    /// Report on stderr what the code cache did, and (with --isolation process) what confines
    /// the worker
    #[arg(short, long, global = true)]
    pub verbose: bool,
}

impl Limits {
    /// `None`: no `--timeout`; `Some(None)`: `--timeout 0`, no timeout.
    pub fn timeout(&self) -> Option<Option<Duration>> {
        self.timeout.map(|ms| (ms > 0).then(|| Duration::from_millis(ms)))
    }

    /// `--cpu-limit`, `None` when not given or 0.
    pub fn cpu_limit(&self) -> Option<Duration> {
        self.cpu_limit.filter(|&ms| ms > 0).map(Duration::from_millis)
    }

    /// `--isolation`, if given (else `IVM_ISOLATION` decides).
    pub fn isolation(&self) -> Option<ivm::Isolation> {
        self.isolation.map(Into::into)
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub enum IsolationArg {
    InProcess,
    Process,
}

impl From<IsolationArg> for ivm::Isolation {
    fn from(arg: IsolationArg) -> Self {
        match arg {
            IsolationArg::InProcess => ivm::Isolation::InProcess,
            IsolationArg::Process => ivm::Isolation::Process,
        }
    }
}

#[derive(Subcommand)]
pub enum Command {
    /// Run a script file ('-' or /dev/stdin reads standard input)
    Run(RunArgs),
    /// Evaluate CODE and print its completion value
    Eval(EvalArgs),
    /// WebAssembly components that use isolates
    #[command(subcommand)]
    Component(ComponentCommand),
    /// Startup snapshots
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Print a completion script for SHELL (bash: /usr/share/bash-completion/completions/ivm)
    Completions {
        shell: clap_complete::Shell,
    },
    /// Print the man page, ivm(1), in roff
    Manpage,
}

#[derive(Args)]
pub struct RunArgs {
    /// The script ('-' or /dev/stdin: standard input)
    pub file: String,
    /// Run FILE as an ES module: its imports (and import()) load from its directory and nothing
    /// else; top-level await is awaited
    #[arg(long)]
    pub module: bool,
    /// With --module: load modules from DIR (which must hold FILE) instead of FILE's directory
    #[arg(long, value_name = "DIR", requires = "module")]
    pub allow_read: Option<PathBuf>,
    /// Keep sealed code caches of FILE in DIR across runs; the key that seals them is DIR/key
    /// (made on first use, readable by the owner only)
    #[arg(long, value_name = "DIR")]
    pub code_cache: Option<PathBuf>,
    /// Seal code caches with the key in FILE (32 bytes or more)
    #[arg(long, value_name = "FILE", requires = "code_cache")]
    pub code_cache_key: Option<PathBuf>,
    #[command(flatten)]
    pub start: StartArgs,
    #[command(flatten)]
    pub debugging: DebugArgs,
}

#[derive(Args)]
pub struct EvalArgs {
    /// The code
    #[arg(allow_hyphen_values = true)]
    pub code: String,
    #[command(flatten)]
    pub start: StartArgs,
    #[command(flatten)]
    pub debugging: DebugArgs,
}

/// Where the isolate of `run` and `eval` starts from.
#[derive(Args)]
pub struct StartArgs {
    /// Start the isolate from the snapshot in FILE (made by 'ivm snapshot create'; one altered,
    /// truncated, made by another V8 or sealed with another key is refused, exit status 2)
    #[arg(long, value_name = "FILE")]
    pub snapshot: Option<PathBuf>,
    #[arg(long, value_name = "FILE", requires = "snapshot", help = SNAPSHOT_KEY_HELP)]
    pub snapshot_key: Option<PathBuf>,
}

/// The debugging options of `run` and `eval`.
#[derive(Args)]
pub struct DebugArgs {
    /// Serve the isolate's inspector to DevTools clients (Chrome's DevTools, `node inspect
    /// HOST:PORT`) on HOST:PORT: /json, /json/list, /json/version and the WebSocket
    #[arg(long, value_name = "HOST:PORT", num_args = 0..=1, require_equals = true, default_missing_value = inspect::DEFAULT_ADDRESS,
          value_parser = clap::builder::NonEmptyStringValueParser::new())]
    inspect: Option<String>,
    /// The same, and wait for a debugger, then pause before the first statement
    #[arg(long, value_name = "HOST:PORT", num_args = 0..=1, require_equals = true, default_missing_value = inspect::DEFAULT_ADDRESS,
          value_parser = clap::builder::NonEmptyStringValueParser::new(), conflicts_with = "inspect")]
    inspect_brk: Option<String>,
    /// Write a CPU profile of the run to FILE (.cpuprofile, as DevTools reads it)
    #[arg(long, value_name = "FILE")]
    cpu_prof: Option<PathBuf>,
    /// Write a heap snapshot to FILE when the script ends (.heapsnapshot; V8 needs memory in
    /// proportion to the heap to take it)
    #[arg(long, value_name = "FILE")]
    heap_snapshot: Option<PathBuf>,
}

impl From<DebugArgs> for inspect::Debugging {
    fn from(args: DebugArgs) -> Self {
        let inspect = match (args.inspect, args.inspect_brk) {
            (_, Some(address)) => Some((address, true)),
            (Some(address), None) => Some((address, false)),
            (None, None) => None,
        };
        inspect::Debugging { inspect, cpu_prof: args.cpu_prof, heap_snapshot: args.heap_snapshot }
    }
}

#[derive(Subcommand)]
pub enum ComponentCommand {
    /// Run a WASI command component that imports the isolate interface (ivm:isolate); ARGS go
    /// to the guest
    Run(ComponentRunArgs),
}

#[derive(Args)]
pub struct ComponentRunArgs {
    /// The component, then its arguments: everything after the component is the guest's
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true, value_name = "GUEST.wasm [ARGS]")]
    pub command: Vec<String>,
    /// Isolates the guest may hold at once [default: 16]
    #[arg(long, value_name = "N")]
    pub max_isolates: Option<u64>,
    /// Sum of its isolates' memory limits [default: 2048]
    #[arg(long, value_name = "MB")]
    pub memory_budget: Option<u64>,
    /// Let the guest debug and profile its isolates (inspector sessions, CPU profiles, heap
    /// snapshots)
    #[arg(long)]
    pub allow_debugging: bool,
    /// Keep the compiled guest in DIR, sealed with the key in DIR/key [default:
    /// $XDG_CACHE_HOME/ivm, else ~/.cache/ivm]
    #[arg(long, value_name = "DIR", conflicts_with = "no_cache")]
    pub cache_dir: Option<PathBuf>,
    /// Compile the guest without the compile cache
    #[arg(long)]
    pub no_cache: bool,
}

#[derive(Subcommand)]
pub enum SnapshotCommand {
    /// Run the SCRIPTs in a fresh isolate (in a worker process of its own, under --memory-limit
    /// and --timeout, default 30 s) and write a startup snapshot of what they left to FILE,
    /// sealed with the snapshot key
    Create(SnapshotCreateArgs),
}

#[derive(Args)]
pub struct SnapshotCreateArgs {
    /// Where the snapshot goes (required)
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Run CODE after the scripts in a throw-away context, so that what it calls is compiled
    /// into the snapshot
    #[arg(long, value_name = "CODE", allow_hyphen_values = true)]
    pub warmup: Option<String>,
    #[arg(long, value_name = "FILE", help = SNAPSHOT_KEY_HELP)]
    pub snapshot_key: Option<PathBuf>,
    /// The scripts, run in order
    #[arg(required = true, value_name = "SCRIPT")]
    pub scripts: Vec<String>,
}

/// The command line's definition, with the version line (which names V8's version, known
/// only at run time).
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    Cli::command().version(format!("{} (V8 {})", env!("CARGO_PKG_VERSION"), ivm::v8_version()))
}

/// Writes `ivm`'s man page: clap_mangen's page of the top-level command, with a COMMANDS
/// section that gives each command's usage, description and options.
pub fn write_man_page(out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let command = command();
    let man = clap_mangen::Man::new(command.clone());
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    writeln!(out, ".SH COMMANDS")?;
    for (path, sub) in leaves(&command, "ivm") {
        let mut sub = sub.clone().bin_name(&path);
        let usage = sub.render_usage().to_string();
        writeln!(out, ".SS \"{}\"", usage.trim_start_matches("Usage: ").replace('-', "\\-"))?;
        if let Some(about) = sub.get_long_about().or(sub.get_about()) {
            writeln!(out, "{}", about.to_string().replace('-', "\\-"))?;
        }
        if sub.get_arguments().any(|arg| !arg.is_hide_set() && arg.get_id() != "help") {
            let mut options = Vec::new();
            clap_mangen::Man::new(sub).render_options_section(&mut options)?;
            // Under the command's heading, not a section of its own.
            let options = String::from_utf8_lossy(&options).replacen(".SH OPTIONS\n", "", 1);
            out.write_all(options.as_bytes())?;
        }
    }
    man.render_extra_section(out)?;
    man.render_version_section(out)
}

/// The commands that run something (`component run`, not `component`), with their full names.
fn leaves<'a>(command: &'a clap::Command, path: &str) -> Vec<(String, &'a clap::Command)> {
    command
        .get_subcommands()
        .filter(|sub| sub.get_name() != "help")
        .flat_map(|sub| {
            let path = format!("{path} {}", sub.get_name());
            match sub.has_subcommands() {
                true => leaves(sub, &path),
                false => vec![(path, sub)],
            }
        })
        .collect()
}

/// Writes the completion script for `shell`.
pub fn write_completions(shell: clap_complete::Shell, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    // Made in memory first: clap_complete panics on a failed write (a reader gone away).
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command(), "ivm", &mut script);
    out.write_all(&script)
}
