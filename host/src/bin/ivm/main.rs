//! `ivm`: run JavaScript in an isolate with a memory limit and a timeout.

use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use ivm::{ConsoleLevel, ContextOptions, Error, ErrorKind, EvalOptions, Isolate, IsolateOptions, ScriptOrigin, Value};

const HELP: &str = "\
ivm - run JavaScript in an isolated V8 isolate with hard limits

USAGE:
    ivm run [OPTIONS] FILE      Run a script file ('-' or /dev/stdin reads standard input)
    ivm eval [OPTIONS] CODE     Evaluate CODE and print its completion value

OPTIONS:
    --memory-limit MB   Memory limit of the isolate in MB (default 128, minimum 8)
    --timeout MS        Wall-clock limit in milliseconds for the script, its microtasks
                        and the promise it returns (default: none)
    --json              Print exactly one JSON line on stdout:
                        {\"ok\":true,\"value\":...} or {\"ok\":false,\"error\":{...}};
                        console output then goes to stderr
    -h, --help          Print this help
    -V, --version       Print the versions of ivm and V8

The script gets the ECMAScript built-ins and a `console` (log, info, debug to stdout;
warn, trace, error to stderr) and nothing else from the host. A promise returned by the
script is awaited.

EXIT STATUS:
    0 success, 1 JavaScript exception, 2 usage error, 3 timeout, 4 memory limit
";

struct Args {
    command: Command,
    memory_limit: u64,
    timeout: Option<Duration>,
    json: bool,
}

enum Command {
    Run(String),
    Eval(String),
}

enum Parsed {
    Go(Args),
    Exit(ExitCode),
}

fn usage(message: &str) -> Parsed {
    eprintln!("ivm: {message}\nTry 'ivm --help' for more information.");
    Parsed::Exit(ExitCode::from(2))
}

fn parse(mut argv: impl Iterator<Item = String>) -> Parsed {
    let mut memory_limit = 128;
    let mut timeout = None;
    let mut json = false;
    let mut words = Vec::new();
    while let Some(arg) = argv.next() {
        match arg.as_str() {
            "-h" | "--help" => {
                print!("{HELP}");
                return Parsed::Exit(ExitCode::SUCCESS);
            }
            "-V" | "--version" => {
                println!("ivm {} (V8 {})", env!("CARGO_PKG_VERSION"), ivm::v8_version());
                return Parsed::Exit(ExitCode::SUCCESS);
            }
            "--json" => json = true,
            "--memory-limit" | "--timeout" => {
                let Some(value) = argv.next() else { return usage(&format!("{arg} needs a value")) };
                let Ok(n) = value.parse::<u64>() else {
                    return usage(&format!("{arg} takes a whole number, not '{value}'"));
                };
                if arg == "--memory-limit" {
                    memory_limit = n;
                } else if n > 0 {
                    timeout = Some(Duration::from_millis(n));
                }
            }
            "--" => words.extend(argv.by_ref()),
            "-" => words.push(arg),
            flag if flag.starts_with('-') && words.is_empty() => return usage(&format!("unknown option '{flag}'")),
            _ => words.push(arg),
        }
    }
    let command = match words.as_slice() {
        [cmd, file] if cmd == "run" => Command::Run(file.clone()),
        [cmd, code] if cmd == "eval" => Command::Eval(code.clone()),
        [] => return usage("missing command"),
        [cmd, ..] if cmd == "run" => return usage("'run' takes one FILE"),
        [cmd, ..] if cmd == "eval" => return usage("'eval' takes one CODE argument"),
        [cmd, ..] => return usage(&format!("unknown command '{cmd}'")),
    };
    Parsed::Go(Args { command, memory_limit, timeout, json })
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Parsed::Go(args) => args,
        Parsed::Exit(code) => return code,
    };
    let (code, filename, print_value) = match &args.command {
        Command::Eval(code) => (code.clone(), "<eval>".to_owned(), true),
        Command::Run(path) => match read_source(path) {
            Ok(code) => (code, path.clone(), false),
            Err(e) => {
                eprintln!("ivm: cannot read {path}: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let result = run(&args, &code, &filename);
    let exit = match &result {
        Ok(_) => 0,
        Err(Error::InvalidArgument(message)) if message.contains("memory_limit") => {
            return match usage(message) {
                Parsed::Exit(code) => code,
                Parsed::Go(_) => unreachable!("usage always exits"),
            };
        }
        Err(e) => match e.kind() {
            ErrorKind::Timeout => 3,
            ErrorKind::MemoryLimit => 4,
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
        println!("{line}");
    } else {
        match &result {
            Ok(value) if print_value => println!("{value}"),
            Ok(_) => {}
            Err(e) => eprintln!("Uncaught {}", e.stack().map_or_else(|| e.to_string(), str::to_owned)),
        }
    }
    ExitCode::from(exit)
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

fn run(args: &Args, code: &str, filename: &str) -> Result<Value, Error> {
    let isolate = Isolate::new(IsolateOptions::default().memory_limit(args.memory_limit))?;
    let json = args.json;
    let context = isolate.create_context_with(ContextOptions::default().console(move |level, text| {
        if json || level != ConsoleLevel::Log {
            eprintln!("{text}");
        } else {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{text}");
        }
    }))?;
    let mut options = EvalOptions::default().origin(ScriptOrigin::new(filename)).copy().promise();
    options.timeout = args.timeout;
    context.eval_with::<Value>(code, &options)
}
