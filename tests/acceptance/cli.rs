//! The `ivm` command line: `run` and `eval`, limits, `--json`, exit codes.

use std::io::Write;
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
fn exit_codes_say_what_happened() {
    let o = ivm(&["--timeout", "30", "--json", "eval", "for (;;) {}"]);
    assert_eq!(o.status.code(), Some(3));
    assert_eq!(json(&o)["error"]["message"], "Script execution timed out.");
    assert_eq!(json(&o)["error"]["kind"], "timeout");

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
