#!/usr/bin/env bash
# Side-by-side benchmark: ivm (target/release/ivm-bench --json) and the npm package node/
# (isolated-vm's API over ivm workers, running the baseline script itself) vs isolated-vm 5.
#
# Usage: ci/bench-compare.sh [--baseline-only | --node-only] [--runs N]
#   --baseline-only  run only the isolated-vm half (no cargo build, no ivm-bench)
#   --node-only      run isolated-vm and the npm package only (no ivm-bench)
#   --runs N         repeat each side N times (default 1), interleaved, and report
#                    the median of every numeric figure
#
# Environment:
#   IVM_BASELINE_JS  baseline script to use (default: ../shared/bench/isolated-vm-baseline.js
#                    relative to the repo root; a relative value is taken relative to the
#                    directory the script was called from)
#
# Outputs (under the repo root):
#   target/bench/ivm.json, target/bench/isolated-vm.json,  figures (median over runs; with
#   target/bench/node-package.json                         --runs 1 the raw object as printed)
#   target/bench/runs/<side>.<i>.json                       raw object of every run
#   target/bench/compare.md                                 header + comparison table
set -euo pipefail

caller_pwd="$PWD"
cd "$(dirname "$0")/.."
root="$PWD"

baseline_only=0
node_only=0
runs=1
while [ $# -gt 0 ]; do
  case "$1" in
    --baseline-only) baseline_only=1; shift ;;
    --node-only) node_only=1; shift ;;
    --runs) [ $# -ge 2 ] || { echo "--runs needs a value" >&2; exit 2; }; runs="$2"; shift 2 ;;
    --runs=*) runs="${1#--runs=}"; shift ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
if ! [[ "$runs" =~ ^[1-9][0-9]*$ ]]; then
  echo "--runs must be a positive integer, got '$runs'" >&2; exit 2
fi

baseline_js="${IVM_BASELINE_JS:-../shared/bench/isolated-vm-baseline.js}"
if [ -n "${IVM_BASELINE_JS:-}" ] && [[ "$baseline_js" != /* ]]; then
  baseline_js="$caller_pwd/$baseline_js"
fi
[ -f "$baseline_js" ] || { echo "baseline script not found: $baseline_js" >&2; exit 1; }

base_dir="target/isolated-vm-baseline"
out_dir="target/bench"
mkdir -p "$base_dir" "$out_dir"
rm -rf "$out_dir/runs"
mkdir -p "$out_dir/runs"

# --- isolated-vm 5: install once into target/isolated-vm-baseline ---------------------------
ivm_pkg="$base_dir/node_modules/isolated-vm/package.json"
installed_ok() {
  [ -f "$ivm_pkg" ] || return 1
  node -e 'const v = require(process.argv[1]).version; process.exit(v.split(".")[0] === "5" ? 0 : 1)' \
    "$root/$ivm_pkg" || return 1
  # the native addon must actually load
  (cd "$base_dir" && node --no-node-snapshot -e 'require("isolated-vm")') >/dev/null 2>&1
}
if ! installed_ok; then
  echo ">> installing isolated-vm@5 into $base_dir (may compile the native addon from source)" >&2
  # No prebuilt binary can be downloaded here, so node-gyp builds the addon; point it at the
  # local Node headers (no header download) unless npm is already told where they are.
  node_prefix="$(dirname "$(dirname "$(command -v node)")")"
  if [ -z "${npm_config_nodedir:-}" ] && [ "$(npm config get nodedir 2>/dev/null)" = "undefined" ] \
     && [ -f "$node_prefix/include/node/node.h" ]; then
    export npm_config_nodedir="$node_prefix"
  fi
  # niced: the fallback node-gyp build uses every core
  nice -n 10 npm install --prefix "$base_dir" isolated-vm@5 --no-audit --no-fund >&2
  installed_ok || { echo "isolated-vm@5 did not install or does not load" >&2; exit 1; }
fi
cp "$baseline_js" "$base_dir/isolated-vm-baseline.js"
isolated_vm_version="$(node -p 'require(process.argv[1]).version' "$root/$ivm_pkg")"

# --- the npm package: the same script, with `isolated-vm` resolving to node/ -----------------
# (its release addon, and the release `ivm` as the worker program).
node_dir="target/node-package-baseline"
if [ "$baseline_only" -eq 0 ]; then
  echo ">> the npm package: node/build.sh and cargo build --release --bin ivm" >&2
  bash node/build.sh >&2
  cargo build --release --bin ivm >&2
  mkdir -p "$node_dir/node_modules"
  ln -sfn "$root/node" "$node_dir/node_modules/isolated-vm"
  cp "$baseline_js" "$node_dir/isolated-vm-baseline.js"
fi

# --- ivm: build the bench binary ----------------------------------------------------------
if [ "$baseline_only" -eq 0 ] && [ "$node_only" -eq 0 ]; then
  echo ">> cargo build --release --bin ivm-bench" >&2
  cargo build --release --bin ivm-bench >&2
  # The guest that times eval from a wasm component (component_eval_us), when the guest
  # toolchain is there (ci/test.sh installs it).
  if bash ci/build-guest.sh tests/guests/bench.c "$out_dir/bench-guest.wasm" >/dev/null 2>&1; then
    export IVM_BENCH_GUEST="$root/$out_dir/bench-guest.wasm"
  else
    echo ">> no guest toolchain: component_eval_us is not measured" >&2
  fi
  # The componentize-py example guest, for its starts through the compile cache
  # (component_python_*_start_ms), when its venv can be made (PyPI, python3-venv).
  if bash ci/build-python-guest.sh "$out_dir/python-guest.wasm" >/dev/null 2>&1; then
    export IVM_BENCH_PYTHON_GUEST="$root/$out_dir/python-guest.wasm"
  else
    echo ">> no componentize-py: component_python_*_start_ms are not measured" >&2
  fi
  # The C program that times eval through libivm (c_api_eval_us, c_api_eval_ratio).
  bash ci/c-api.sh --release --stage-only >&2
  cc -O2 -Wall -Werror host/c-api/examples/bench.c -I target/c-api/include target/c-api/lib/libivm.a \
    $(PKG_CONFIG_PATH=target/c-api/lib/pkgconfig pkg-config --static --libs-only-l ivm | sed 's/-livm//') \
    -o "$out_dir/c-api-bench"
  export IVM_BENCH_C_API="$root/$out_dir/c-api-bench"
fi

# --- run both, interleaved ----------------------------------------------------------------
for i in $(seq 1 "$runs"); do
  echo ">> run $i/$runs: isolated-vm" >&2
  (cd "$base_dir" && node --no-node-snapshot --expose-gc isolated-vm-baseline.js) \
    > "$out_dir/runs/isolated-vm.$i.json"
  if [ "$baseline_only" -eq 0 ]; then
    # No --no-node-snapshot: the package does not need it.
    echo ">> run $i/$runs: the npm package" >&2
    (cd "$node_dir" && IVM_WORKER="$root/target/release/ivm" node --expose-gc isolated-vm-baseline.js) \
      > "$out_dir/runs/node-package.$i.json"
  fi
  if [ "$baseline_only" -eq 0 ] && [ "$node_only" -eq 0 ]; then
    echo ">> run $i/$runs: ivm" >&2
    target/release/ivm-bench --json > "$out_dir/runs/ivm.$i.json"
  fi
done

# --- aggregate + table --------------------------------------------------------------------
cpu_model="$(grep -m1 '^model name' /proc/cpuinfo | sed 's/^model name[[:space:]]*:[[:space:]]*//' || true)"
BENCH_RUNS="$runs" BENCH_BASELINE_ONLY="$baseline_only" BENCH_NODE_ONLY="$node_only" BENCH_NPROC="$(nproc)" \
BENCH_CPU="${cpu_model:-unknown}" BENCH_NODE="$(node --version)" BENCH_ISOLATED_VM="$isolated_vm_version" \
python3 - "$out_dir" <<'PY'
import datetime, json, os, statistics, sys

out_dir = sys.argv[1]
runs = int(os.environ["BENCH_RUNS"])
baseline_only = os.environ["BENCH_BASELINE_ONLY"] == "1"
node_only = os.environ["BENCH_NODE_ONLY"] == "1"

def parse(path):
    text = open(path).read()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        # tolerate stray lines around the object
        a, b = text.find("{"), text.rfind("}")
        if a < 0 or b < a:
            sys.exit(f"no JSON object in {path}:\n{text[:2000]}")
        return json.loads(text[a:b + 1])

def aggregate(side):
    objs = [parse(os.path.join(out_dir, "runs", f"{side}.{i}.json")) for i in range(1, runs + 1)]
    agg, per_run = {}, {}
    for o in objs:
        for k, v in o.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                per_run.setdefault(k, []).append(v)
            else:
                agg.setdefault(k, v)  # non-numeric (v8, timeout_msg, ...): first run's value
    for k, vs in per_run.items():
        agg[k] = statistics.median(vs)
    # keep the key order of the first run
    ordered = {k: agg[k] for o in objs for k in o if k in agg}
    return ordered, per_run

iso, iso_runs = aggregate("isolated-vm")
if baseline_only or node_only:
    ivm, ivm_runs = {}, {}
else:
    ivm, ivm_runs = aggregate("ivm")
pkg, pkg_runs = ({}, {}) if baseline_only else aggregate("node-package")

for name, obj in (("isolated-vm", iso), ("ivm", ivm), ("node-package", pkg)):
    if not obj:
        path = os.path.join(out_dir, f"{name}.json")
        if os.path.exists(path):
            os.remove(path)  # stale from an earlier full run
        continue
    with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")

# (key, direction, target ratio, kind)
LOWER, HIGHER = "lower", "higher"
metrics = [
    ("isolate_cycle_ms", LOWER, 1.0),
    ("context_create_ms", LOWER, 1.0),
    ("eval_sync_us", LOWER, 1.0),
    ("call_sync_us", LOWER, 1.0),
    ("callback_us", LOWER, 1.0),
    ("timeout_20ms_elapsed_ms", LOWER, 1.0),
    ("rss_per_isolate_MB", LOWER, 1.0),
    ("copy_in_MBps", HIGHER, 3.0),
    ("copy_out_MBps", HIGHER, 3.0),
    ("async_evals_per_s", HIGHER, 1.0),
    ("async_host_calls_per_s", HIGHER, 3.0),
]
DASH = "—"

def num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)

def fmt(v):
    if not num(v):
        return DASH
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.4f}"

def ivm_cell(v, shown):
    if num(v):
        return shown
    return DASH if baseline_only or node_only else DASH + " (not yet measured)"

rows = []
for key, direction, target in metrics:
    a, b = ivm.get(key), iso.get(key)
    if key == "timeout_20ms_elapsed_ms":
        # compare the overshoot past the requested 20 ms, not the raw elapsed time
        label = key + " (compared: overshoot = elapsed − 20 ms)"
        ca = a - 20 if num(a) else None
        cb = b - 20 if num(b) else None
        show = lambda v, o: f"{fmt(v)} (overshoot {'+' if o >= 0 else ''}{fmt(o)})"
        sa = ivm_cell(a, show(a, ca) if num(a) else None)
        sb = show(b, cb) if num(b) else DASH
    else:
        label, ca, cb = key, a, b
        sa = ivm_cell(a, fmt(a))
        sb = fmt(b)
    ratio, met = None, DASH
    if num(ca) and num(cb) and cb > 0:
        ratio = ca / cb
        met = "yes" if (ratio <= target if direction == LOWER else ratio >= target) else "no"
    if key == "timeout_20ms_elapsed_ms" and num(ca) and ca < 0:
        met = "no (timeout fired before 20 ms)"
    tgt = f"≤ {target:.1f}" if direction == LOWER else f"≥ {target:.1f}"
    rows.append((label, sa, sb, fmt(ratio) if ratio is not None else DASH, tgt, met))

notes = []
if "cached_compile_ratio" in ivm:
    v = ivm["cached_compile_ratio"]
    met = ("yes" if v <= 0.20 else "no") if num(v) else DASH
    rows.append(("cached_compile_ratio (absolute, no peer)", fmt(v), DASH, DASH, "≤ 0.20 (absolute)", met))
elif not baseline_only:
    notes.append("cached_compile_ratio: not in ivm-bench output (target ≤ 0.20 absolute, no peer).")

if "component_eval_us" in ivm:
    v, native = ivm["component_eval_us"], ivm.get("eval_sync_us")
    shown = fmt(v) + (f" (native eval_sync_us {fmt(native)}, ×{v / native:.2f})" if num(native) and native else "")
    rows.append(("component_eval_us (eval round trip from a wasm guest)", shown, DASH, DASH, "no target", DASH))

if "c_api_eval_us" in ivm:
    v, ratio = ivm["c_api_eval_us"], ivm.get("c_api_eval_ratio")
    shown = fmt(v) + (f" (Rust API eval_sync_us {fmt(ivm.get('eval_sync_us'))}, ×{ratio:.2f})" if num(ratio) else "")
    rows.append(("c_api_eval_us (eval round trip through libivm, from C)", shown, DASH, DASH, "no target", DASH))

# Process isolation (issue 6): absolute targets, with the in-process figure beside each.
for key, native_key, target, label in (
    ("process_eval_us", "eval_sync_us", 30.0, "eval round trip to a worker process"),
    ("process_call_us", "call_sync_us", None, "Reference apply in a worker"),
    ("process_callback_us", "callback_us", None, "JS in a worker → host function"),
    ("process_isolate_create_ms", None, 5.0, "isolate + context from a warm pool"),
    ("process_worker_start_ms", None, None, "a new worker process, sandboxed, to its hello"),
):
    if key not in ivm:
        continue
    v, native = ivm[key], ivm.get(native_key) if native_key else None
    shown = fmt(v) + (f" (in process {fmt(native)})" if num(native) else "")
    met = ("yes" if v < target else "no") if target is not None and num(v) else DASH
    rows.append((f"{key} ({label})", shown, DASH, DASH, f"< {target:g} (absolute)" if target else "no target", met))

# Workload 11 with process isolation, against isolated-vm's (in-process) figure.
v, b = ivm.get("process_async_host_calls_per_s"), iso.get("async_host_calls_per_s")
if num(v):
    ratio = v / b if num(b) and b > 0 else None
    met = ("yes" if ratio >= 1.0 else "no") if ratio is not None else DASH
    rows.append(("process_async_host_calls_per_s (workload 11, fifty isolates to a worker)", fmt(v), fmt(b), fmt(ratio) if ratio is not None else DASH, "≥ 1.0", met))
if "starved_eval_ms" in ivm:
    v = ivm["starved_eval_ms"]
    met = ("yes" if v < 50 else "no") if num(v) else DASH
    rows.append(("starved_eval_ms (eval while runaways hold every thread; absolute)", fmt(v), DASH, DASH, "< 50 (absolute)", met))

missing_iso = [k for k, _, _ in metrics if k not in iso]
if missing_iso:
    notes.append("keys missing from isolated-vm output: " + ", ".join(missing_iso))
if not baseline_only and not node_only:
    missing_ivm = [k for k, _, _ in metrics if k not in ivm]
    if missing_ivm:
        notes.append("keys missing from ivm output (not yet measured): " + ", ".join(missing_ivm))

now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
lines = [
    "# ivm vs isolated-vm",
    "",
    f"- date: {now}",
    f"- nproc: {os.environ['BENCH_NPROC']}",
    f"- CPU: {os.environ['BENCH_CPU']}",
    f"- runs: {runs} (figures are the median over runs)" if runs > 1 else "- runs: 1",
    f"- ivm V8: {ivm.get('v8', DASH) if not baseline_only else DASH + ' (--baseline-only)'}",
    f"- isolated-vm V8: {iso.get('v8', DASH)} (isolated-vm {os.environ['BENCH_ISOLATED_VM']}, node {os.environ['BENCH_NODE']})",
    "",
    "| metric | ivm | isolated-vm | ratio (ivm/isolated-vm) | target | met? |",
    "| --- | ---: | ---: | ---: | --- | --- |",
]
for r in rows:
    lines.append("| " + " | ".join(r) + " |")
lines.append("")
lines.append("Lower is better for *_ms, *_us and rss_per_isolate_MB; higher is better for *_MBps and *_per_s.")

# The npm package: isolated-vm's own script, its isolates in ivm workers. Every synchronous
# operation is a round trip to a worker process; its Node functions run on Node's thread.
if pkg:
    lines += [
        "",
        "## The npm package (node/) vs isolated-vm: the same script",
        "",
        f"- node {os.environ['BENCH_NODE']}; the package's isolates run in `ivm` workers, on ivm's pinned V8",
        "",
        "| metric | npm package | isolated-vm | ratio (package/isolated-vm) | better |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for key, direction, _ in metrics:
        a, b = pkg.get(key), iso.get(key)
        if key == "timeout_20ms_elapsed_ms" and num(a) and num(b):
            a, b, key = a - 20, b - 20, key + " (overshoot past 20 ms)"
        ratio = a / b if num(a) and num(b) and b > 0 else None
        better = DASH
        if ratio is not None:
            better = "package" if (ratio < 1 if direction == LOWER else ratio > 1) else "isolated-vm"
        note = ""
        if key == "rss_per_isolate_MB":
            # Node's RSS does not hold the package's isolates: they are in the workers.
            note, better = " (Node's RSS only: the isolates are in the workers)", "not comparable"
        lines.append(f"| {key}{note} | {fmt(a)} | {fmt(b)} | {fmt(ratio) if ratio is not None else DASH} | {better} |")
for n in notes:
    lines.append(f"- {n}")
if runs > 1:
    lines.append("")
    lines.append("Per-run values:")
    lines.append("")
    for side, pr in (("isolated-vm", iso_runs), ("ivm", ivm_runs), ("node-package", pkg_runs)):
        for k, vs in pr.items():
            lines.append(f"- {side} {k}: " + ", ".join(fmt(v) for v in vs))
text = "\n".join(lines) + "\n"
with open(os.path.join(out_dir, "compare.md"), "w") as f:
    f.write(text)
sys.stdout.write(text)
PY
