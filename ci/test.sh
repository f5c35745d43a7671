#!/usr/bin/env bash
# Sets up a fresh machine and runs every test: the README's test command.
# Installs what the build needs (V8 comes prebuilt and hash-checked by host/build.rs, see
# BUILDING.md), then runs the acceptance suite and the documentation examples.
set -euo pipefail
cd "$(dirname "$0")/.."

# A C toolchain for the build scripts of a few crates. rust-lld (bundled with Rust) links.
if ! command -v cc >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq gcc >/dev/null
  else
    echo "ci/test.sh: a C compiler (cc) is needed; install gcc" >&2
    exit 1
  fi
fi

cargo test --locked --test acceptance
cargo test --locked --doc
