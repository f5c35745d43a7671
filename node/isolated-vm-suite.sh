#!/usr/bin/env bash
# Runs isolated-vm's own test suite (laverdet/isolated-vm at e1d37198: its tests/ and test.js,
# kept outside this repo) against this package, as its harness does: each test in a fresh
# `node --no-node-snapshot [node-args] tests/NAME.js` with NODE_PATH at the suite, passing
# when it prints exactly "pass", writes nothing to stderr and exits 0. Unlike test.js, each
# test gets a time limit (a hung test fails instead of stalling the run).
#
# Usage: node/isolated-vm-suite.sh SUITE_DIR [SECONDS_PER_TEST]
#   SUITE_DIR holds test.js and tests/; an `isolated-vm.js` there is (re)written to load
#   this package. IVM_WORKER names the ivm binary (default: target/release/ivm).
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
suite="$(cd "$1" && pwd)"
limit="${2:-60}"
export IVM_WORKER="${IVM_WORKER:-$root/target/release/ivm}"
printf "module.exports = require(%s);\n" "\"$root/node\"" > "$suite/isolated-vm.js"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$suite"
pass=0
fail=0
for test in $(ls tests | grep '\.js$' | sort -r); do
  args=$(sed -n 's/.*node-args: *\(.*\)/\1/p' "tests/$test" | head -1)
  NODE_PATH="$suite" timeout "$limit" node --no-node-snapshot $args "tests/$test" >"$work/stdout" 2>"$work/stderr"
  code=$?
  if printf 'pass\n' | cmp -s - "$work/stdout" && [ ! -s "$work/stderr" ] && [ $code -eq 0 ]; then
    pass=$((pass + 1))
    echo "$test: pass"
  else
    fail=$((fail + 1))
    echo "$test: fail (exit $code) $(head -c 300 "$work/stderr" | tr '\n' ' ')"
  fi
done
echo "Completed: $pass passed, $fail failed."
