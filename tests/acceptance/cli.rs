//! The `ivm` command line: `run` and `eval`, limits, `--json`, exit codes.

use std::io::{Read, Write};
use std::process::{Command, Output, Stdio};

fn ivm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ivm")).args(args).output().expect("run ivm")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(o: &Output) -> serde_json::Value {
    let out = stdout(o);
    assert_eq!(out.lines().count(), 1, "exactly one line: {out:?}");
    serde_json::from_str(&out).expect("JSON")
}

#[test]
fn eval_prints_the_completion_value() {
    let o = ivm(&["eval", "6 * 7"]);
    assert_eq!((o.status.code(), stdout(&o)), (Some(0), "42\n".into()));
    let o = ivm(&["eval", "Promise.resolve('awaited')"]);
    assert_eq!(stdout(&o), "awaited\n");
}

#[test]
fn run_reads_a_file_or_standard_input_and_has_a_console() {
    let dir = std::env::temp_dir().join(format!("ivm-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("job.js");
    std::fs::write(&file, "console.log('out', [1]); console.error('err')").unwrap();
    let o = ivm(&["run", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stdout(&o), "out [ 1 ]\n");
    assert_eq!(String::from_utf8_lossy(&o.stderr), "err\n");

    let mut child = Command::new(env!("CARGO_BIN_EXE_ivm"))
        .args(["run", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"console.log(typeof require, typeof process, typeof fetch)").unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(stdout(&o), "undefined undefined undefined\n");
}

#[test]
fn json_output_is_one_line_with_ok_or_a_typed_error() {
    let o = ivm(&["eval", "--json", "console.log('to stderr'); ({ a: [1, 'x', null] })"]);
    assert_eq!(json(&o), serde_json::json!({ "ok": true, "value": { "a": [1, "x", null] } }));
    assert_eq!(String::from_utf8_lossy(&o.stderr), "to stderr\n");

    let o = ivm(&["eval", "--json", "throw new TypeError('bad')"]);
    assert_eq!(o.status.code(), Some(1));
    let v = json(&o);
    assert_eq!(v["ok"], false);
    assert_eq!(v["error"]["kind"], "exception");
    assert_eq!(v["error"]["name"], "TypeError");
    assert_eq!(v["error"]["message"], "bad");
    assert!(v["error"]["stack"].as_str().unwrap().starts_with("TypeError: bad\n    at "));
}

#[test]
fn verbose_says_what_confines_a_worker() {
    let o = ivm(&["--isolation", "process", "--verbose", "eval", "1"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(" sandbox: applied: no-new-privileges, ") && err.contains("syscall-filter"), "{err}");
    assert_eq!(stdout(&o), "1\n");
}

#[test]
fn exit_codes_say_what_happened() {
    let o = ivm(&["--timeout", "30", "--json", "eval", "for (;;) {}"]);
    assert_eq!(o.status.code(), Some(3));
    assert_eq!(json(&o)["error"]["message"], "Script execution timed out.");
    assert_eq!(json(&o)["error"]["kind"], "timeout");

    // Out of CPU time (a wait is not charged; the spin after it is).
    let o = ivm(&["--cpu-limit", "40", "--json", "eval", "Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 200); for (;;) {}"]);
    assert_eq!(o.status.code(), Some(6));
    assert_eq!(json(&o)["error"]["kind"], "cpu-limit");
    assert_eq!(json(&o)["error"]["message"], "Script execution exceeded its CPU time limit.");

    let o = ivm(&["--memory-limit", "16", "--json", "eval", "const a = []; for (;;) a.push({})"]);
    assert_eq!(o.status.code(), Some(4));
    assert_eq!(json(&o)["error"]["kind"], "memory-limit");
    assert_eq!(json(&o)["error"]["message"], "Isolate was disposed during execution due to memory limit");

    assert_eq!(ivm(&["eval", "null.x"]).status.code(), Some(1));
    assert_eq!(ivm(&[]).status.code(), Some(2));
    assert_eq!(ivm(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(ivm(&["--memory-limit", "4", "eval", "1"]).status.code(), Some(2));
    assert_eq!(ivm(&["--timeout", "soon", "eval", "1"]).status.code(), Some(2));
    assert_eq!(ivm(&["run", "/nonexistent/file.js"]).status.code(), Some(2));
    let help = ivm(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(stdout(&help).contains("EXIT STATUS"));
}

#[test]
fn every_command_has_help_and_completions_and_the_man_page_come_from_the_same_definition() {
    for command in [&["run"][..], &["eval"], &["component", "run"], &["snapshot", "create"]] {
        let help = ivm(&[command, &["--help"]].concat());
        assert_eq!(help.status.code(), Some(0), "{command:?}");
        assert!(stdout(&help).starts_with("Usage: ivm ") || stdout(&help).contains("\nUsage: ivm "), "{command:?}: {}", stdout(&help));
    }
    let eval_help = stdout(&ivm(&["eval", "--help"]));
    assert!(eval_help.contains("--snapshot <FILE>") && eval_help.contains("--memory-limit <MB>"), "{eval_help}");
    assert!(!eval_help.contains("--module"), "run's options are not eval's");
    let version = stdout(&ivm(&["--version"]));
    assert!(version.starts_with("ivm ") && version.contains("(V8 15."), "{version}");
    // Completions name the commands and their options.
    for (shell, marker) in [("bash", "complete -F"), ("zsh", "#compdef ivm"), ("fish", "complete -c ivm")] {
        let script = stdout(&ivm(&["completions", shell]));
        assert!(script.contains(marker) && script.contains("snapshot-key"), "{shell}");
    }
    assert_eq!(ivm(&["completions", "cmd.exe"]).status.code(), Some(2));
    let man = stdout(&ivm(&["manpage"]));
    assert!(man.starts_with(".ie") || man.contains(".TH ivm 1"), "{}", &man[..200.min(man.len())]);
    for section in [".SH COMMANDS", "ivm snapshot create", "EXIT STATUS", "\\-\\-allow\\-debugging"] {
        assert!(man.contains(section), "the man page lacks {section}");
    }
    // Options stay with their commands.
    assert_eq!(ivm(&["eval", "--module", "1"]).status.code(), Some(2));
    assert_eq!(ivm(&["run", "--allow-read", ".", "x.js"]).status.code(), Some(2), "--allow-read needs --module");
    assert_eq!(ivm(&["eval", "--inspect", "--inspect-brk", "1"]).status.code(), Some(2));
    // The last of a repeated option wins.
    assert_eq!(ivm(&["--timeout", "5", "eval", "--timeout", "0", "--json", "--json", "6 * 7"]).status.code(), Some(0));
}

#[test]
fn isolation_process_runs_the_isolate_in_a_worker_with_the_same_results() {
    let o = ivm(&["--isolation", "process", "eval", "console.log('from the worker'); 6 * 7"]);
    assert_eq!((o.status.code(), stdout(&o)), (Some(0), "from the worker\n42\n".into()));
    let o = ivm(&["--isolation", "process", "--timeout", "30", "--json", "eval", "for (;;) {}"]);
    assert_eq!((o.status.code(), json(&o)["error"]["message"].clone()), (Some(3), "Script execution timed out.".into()));
    let o = ivm(&["--isolation", "process", "--memory-limit", "16", "--json", "eval", "const a = []; for (;;) a.push({})"]);
    assert_eq!((o.status.code(), json(&o)["error"]["kind"].clone()), (Some(4), "memory-limit".into()));
    assert_eq!(ivm(&["--isolation", "sideways", "eval", "1"]).status.code(), Some(2));
    // The default comes from IVM_ISOLATION; a bad value there is a usage error too.
    let o = Command::new(env!("CARGO_BIN_EXE_ivm")).args(["eval", "1"]).env("IVM_ISOLATION", "bogus").output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("IVM_ISOLATION is 'bogus'"), "{o:?}");
}

#[test]
fn a_reader_that_goes_away_ends_the_output_quietly() {
    // `ivm eval ... | head -c1`: the rest of the output has nowhere to go.
    let mut child = Command::new(env!("CARGO_BIN_EXE_ivm"))
        .args(["eval", "console.log('x'.repeat(1e6)); 'x'.repeat(1e6)"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 1];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut first).unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert!(o.stderr.is_empty(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn a_huge_bigint_prints_at_once() {
    // Decimal would take minutes past the timeout; past 2^18 bits it prints in hex.
    let started = std::time::Instant::now();
    let o = ivm(&["--timeout", "100", "eval", "1n << 10000000n"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).starts_with("0x1000"));
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "{:?}", started.elapsed());
}

/// A fresh directory under the system's temporary directory.
fn fresh_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ivm-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn run_module_loads_imports_from_its_directory_only() {
    let dir = fresh_dir("module");
    let app = dir.join("app");
    std::fs::create_dir_all(app.join("lib")).unwrap();
    std::fs::write(dir.join("secret.mjs"), "export default 'secret'").unwrap();
    std::fs::write(app.join("lib/greet.mjs"), "export const greet = n => `hello ${n}`;").unwrap();
    std::fs::write(app.join("data.json"), r#"{ "name": "ivm" }"#).unwrap();
    std::fs::write(
        app.join("main.mjs"),
        "import { greet } from './lib/greet.mjs'; import data from './data.json' with { type: 'json' };
         const lazy = await import('./lib/greet.mjs'); console.log(greet(data.name), lazy.greet === greet);",
    )
    .unwrap();
    std::fs::write(app.join("escape.mjs"), "import s from '../secret.mjs'; console.log(s)").unwrap();
    let main = app.join("main.mjs");
    let o = ivm(&["run", "--module", main.to_str().unwrap()]);
    assert_eq!((o.status.code(), stdout(&o)), (Some(0), "hello ivm true\n".into()), "{}", String::from_utf8_lossy(&o.stderr));
    let o = ivm(&["run", "--module", "--json", app.join("escape.mjs").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let line = json(&o);
    assert!(line["error"]["message"].as_str().unwrap().contains("outside the module root"), "{line}");
    // --allow-read widens the root to a directory that holds the file.
    let o = ivm(&["run", "--module", "--allow-read", dir.to_str().unwrap(), app.join("escape.mjs").to_str().unwrap()]);
    assert_eq!((o.status.code(), stdout(&o)), (Some(0), "secret\n".into()));
    let o = ivm(&["run", "--module", "--allow-read", app.join("lib").to_str().unwrap(), main.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "the file must be inside the allowed directory");
}

#[test]
fn run_keeps_sealed_code_caches_across_runs() {
    let dir = fresh_dir("cache");
    let script = dir.join("job.js");
    std::fs::write(&script, "function f(x) { return x * 2 } console.log(f(21))").unwrap();
    let cache = dir.join("cache");
    let run = || ivm(&["run", "-v", "--code-cache", cache.to_str().unwrap(), script.to_str().unwrap()]);
    let first = run();
    assert_eq!((first.status.code(), stdout(&first)), (Some(0), "42\n".into()));
    assert!(String::from_utf8_lossy(&first.stderr).contains("none yet, stored a new one"), "{first:?}");
    let key = cache.join("key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    let second = run();
    assert_eq!(stdout(&second), "42\n");
    assert!(String::from_utf8_lossy(&second.stderr).contains(": used"), "{second:?}");
    // A tampered cache file is rejected (and replaced); the script still runs.
    let stored = std::fs::read_dir(&cache).unwrap().map(|e| e.unwrap().path()).find(|p| p.extension().is_some_and(|e| e == "ivmcache")).unwrap();
    let mut bytes = std::fs::read(&stored).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(&stored, bytes).unwrap();
    let third = run();
    assert_eq!(stdout(&third), "42\n");
    assert!(String::from_utf8_lossy(&third.stderr).contains("rejected, stored a new one"), "{third:?}");
    // The cache file is written through a new file of a random name, renamed into place: a
    // symlink planted where it goes is replaced, and what it pointed to is left alone; no
    // temporary file stays behind.
    let outside = dir.join("outside");
    std::fs::write(&outside, "untouched").unwrap();
    std::fs::remove_file(&stored).unwrap();
    std::os::unix::fs::symlink(&outside, &stored).unwrap();
    assert_eq!(stdout(&run()), "42\n");
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "untouched");
    assert!(!std::fs::symlink_metadata(&stored).unwrap().file_type().is_symlink());
    let names: Vec<_> = std::fs::read_dir(&cache).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    // A key others can read is refused.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let refused = run();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("readable by others"));
}

/// Output of a child process, read as it comes.
struct Transcript {
    text: std::sync::Arc<std::sync::Mutex<String>>,
    seen: usize,
}

impl Transcript {
    fn of(output: impl std::io::Read + Send + 'static) -> Transcript {
        let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = text.clone();
        std::thread::spawn(move || {
            let mut output = output;
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = output.read(&mut chunk) {
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        });
        Transcript { text, seen: 0 }
    }

    /// Waits for `needle` after what was seen so far; returns the text up to and with it.
    fn expect(&mut self, needle: &str) -> String {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            {
                let text = self.text.lock().unwrap();
                if let Some(at) = text[self.seen..].find(needle) {
                    let end = self.seen + at + needle.len();
                    let found = text[self.seen..end].to_owned();
                    self.seen = end;
                    return found;
                }
                assert!(std::time::Instant::now() < until, "no {needle:?} in:\n{}", &text[self.seen..]);
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

/// Node's own command-line debugger against `ivm run --inspect-brk`: break on start, a
/// breakpoint, a local read at it, and on to the end.
#[test]
fn node_inspect_debugs_a_script_under_inspect_brk() {
    let dir = std::env::temp_dir().join(format!("ivm-inspect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("loop.js");
    std::fs::write(&script, "const items = [1, 2, 3];\nlet total = 0;\nfor (const item of items) {\n  total += item * 10;\n}\nconsole.log('total is', total);\n").unwrap();
    let mut ivm = Command::new(env!("CARGO_BIN_EXE_ivm"))
        .args(["run", "--inspect-brk=127.0.0.1:0", script.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ivm_err = Transcript::of(ivm.stderr.take().unwrap());
    let mut ivm_out = Transcript::of(ivm.stdout.take().unwrap());
    let listening = ivm_err.expect("\n");
    let address = listening.trim().strip_prefix("Debugger listening on ws://").and_then(|rest| rest.split('/').next()).unwrap().to_owned();
    let mut node = Command::new("node").args(["inspect", &address]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("node is installed (ci/test.sh installs it)");
    let mut debugger = Transcript::of(node.stdout.take().unwrap());
    let mut input = node.stdin.take().unwrap();
    let mut say = |command: &str| writeln!(input, "{command}").unwrap();
    debugger.expect("Break on start");
    debugger.expect("debug> ");
    say("sb(4)");
    debugger.expect("debug> ");
    say("c");
    debugger.expect("break in");
    debugger.expect("debug> ");
    say("exec 'seen ' + total + ' at ' + item");
    debugger.expect("seen 0 at 1");
    say("c");
    debugger.expect("break in");
    say("c");
    debugger.expect("break in");
    say("exec 'seen ' + total + ' at ' + item");
    debugger.expect("seen 30 at 3");
    say("c");
    ivm_out.expect("total is 60");
    let status = ivm.wait().unwrap();
    assert!(status.success(), "{status}");
    let _ = node.kill();
    let _ = node.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cpu_prof_and_heap_snapshot_write_files_devtools_opens() {
    let dir = std::env::temp_dir().join(format!("ivm-prof-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (profile, snapshot) = (dir.join("run.cpuprofile"), dir.join("run.heapsnapshot"));
    let out = ivm(&[
        "eval",
        "--cpu-prof",
        profile.to_str().unwrap(),
        "--heap-snapshot",
        snapshot.to_str().unwrap(),
        "function busyWork() { let x = 0; for (let i = 0; i < 2e7; i++) x = (x + i) % 10007; return x } globalThis.kept = 'marker-' + busyWork(); 'done'",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout(&out).trim(), "done");
    let profile: serde_json::Value = serde_json::from_slice(&std::fs::read(&profile).unwrap()).unwrap();
    let nodes = profile["nodes"].as_array().unwrap();
    assert!(nodes.iter().any(|n| n["callFrame"]["functionName"] == "busyWork"), "busyWork not in the profile");
    assert!(!profile["samples"].as_array().unwrap().is_empty());
    let snapshot: serde_json::Value = serde_json::from_slice(&std::fs::read(&snapshot).unwrap()).unwrap();
    let strings = snapshot["strings"].as_array().unwrap();
    assert!(strings.iter().any(|s| s.as_str().is_some_and(|s| s.starts_with("marker-"))), "the script's string is not in the snapshot");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_inspector_server_answers_devtools_requests_and_refuses_other_hosts() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ivm"))
        .args(["eval", "--inspect-brk=127.0.0.1:0", "1"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut err = Transcript::of(child.stderr.take().unwrap());
    let listening = err.expect("\n");
    let url = listening.trim().strip_prefix("Debugger listening on ").unwrap().to_owned();
    let address = url.strip_prefix("ws://").and_then(|rest| rest.split('/').next()).unwrap().to_owned();
    let get = |path: &str, host: &str| {
        let mut stream = std::net::TcpStream::connect(&address).unwrap();
        write!(stream, "GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    };
    let list = get("/json/list", &address);
    assert!(list.starts_with("HTTP/1.1 200"), "{list}");
    let body: serde_json::Value = serde_json::from_str(list.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body[0]["webSocketDebuggerUrl"], url.as_str());
    assert!(body[0]["devtoolsFrontendUrl"].as_str().unwrap().contains(&address));
    assert!(get("/json", "localhost:9229").starts_with("HTTP/1.1 200"));
    let version = get("/json/version", "[::1]:9229");
    assert!(version.contains("Protocol-Version"), "{version}");
    // A name that is not this machine's address: DNS rebinding, refused as Node refuses it.
    let rebound = get("/json/list", "attacker.example:9229");
    assert!(rebound.starts_with("HTTP/1.1 400") && rebound.contains("not an IP address or localhost"), "{rebound}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn debugging_flags_need_an_address_and_a_script() {
    let out = ivm(&["eval", "--inspect=", "1"]);
    assert_eq!(out.status.code(), Some(2));
    let out = ivm(&["--cpu-prof", "x", "component", "run", "guest.wasm"]);
    assert_eq!(out.status.code(), Some(2));
    // Host names are not looked up (the static binary has no name services).
    let out = ivm(&["eval", "--inspect=example.invalid:9229", "1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("an IP address or localhost"), "{out:?}");
}

#[test]
fn snapshot_create_then_run_from_it_and_every_refusal_is_a_usage_error() {
    let dir = std::env::temp_dir().join(format!("ivm-snapshot-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    // The user's key is made on first use, under XDG_CONFIG_HOME, owner-only.
    let with_config = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_ivm")).args(args).env("XDG_CONFIG_HOME", dir.join("config")).output().expect("run ivm")
    };
    std::fs::write(dir.join("lib.js"), "globalThis.greet = name => `Hello, ${name}!`; var loaded = 1").unwrap();
    let made = with_config(&["snapshot", "create", "-o", &path("lib.snap"), "--warmup", "greet('warm')", &path("lib.js")]);
    assert_eq!(made.status.code(), Some(0), "{}", String::from_utf8_lossy(&made.stderr));
    let key = dir.join("config/ivm/snapshot.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    let o = with_config(&["eval", "--snapshot", &path("lib.snap"), "greet('snapshot') + loaded"]);
    assert_eq!((o.status.code(), stdout(&o)), (Some(0), "Hello, snapshot!1\n".into()));
    std::fs::write(dir.join("use.js"), "console.log(greet('run'))").unwrap();
    let o = with_config(&["run", "--isolation", "process", "--snapshot", &path("lib.snap"), &path("use.js")]);
    assert_eq!((o.status.code(), stdout(&o)), (Some(0), "Hello, run!\n".into()), "{}", String::from_utf8_lossy(&o.stderr));

    // Refusals: exit 2, saying why.
    let refused = |args: &[&str], why: &str| {
        let o = with_config(args);
        let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(why), "{args:?}: {stderr}");
    };
    let mut sealed = std::fs::read(dir.join("lib.snap")).unwrap();
    let middle = sealed.len() / 2;
    sealed[middle] ^= 0x40;
    std::fs::write(dir.join("tampered.snap"), &sealed).unwrap();
    refused(&["eval", "--snapshot", &path("tampered.snap"), "1"], "seal does not verify");
    std::fs::write(dir.join("short.snap"), &sealed[..1000]).unwrap();
    refused(&["eval", "--snapshot", &path("short.snap"), "1"], "truncated");
    std::fs::write(dir.join("other.key"), [9u8; 32]).unwrap();
    std::fs::set_permissions(dir.join("other.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    refused(&["eval", "--snapshot", &path("lib.snap"), "--snapshot-key", &path("other.key"), "1"], "another key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o620)).unwrap();
    refused(&["eval", "--snapshot", &path("lib.snap"), "1"], "writable by them");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    refused(&["snapshot", "create", &path("lib.js")], "needs -o FILE");

    // Hostile scripts: a timeout and the memory limit exit as for runs.
    std::fs::write(dir.join("spin.js"), "for (;;);").unwrap();
    let o = with_config(&["snapshot", "create", "--timeout", "200", "-o", &path("spin.snap"), &path("spin.js")]);
    assert_eq!(o.status.code(), Some(3), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::write(dir.join("hog.js"), "const all = []; for (;;) all.push(new Array(1e5).fill(1.5))").unwrap();
    let o = with_config(&["snapshot", "create", "--memory-limit", "16", "-o", &path("hog.snap"), &path("hog.js")]);
    assert_eq!(o.status.code(), Some(4), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!dir.join("spin.snap").exists() && !dir.join("hog.snap").exists());
}
