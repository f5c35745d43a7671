#!/usr/bin/env bash
# Builds the native addon into node/ivm.node (a release build, or a debug one with --debug).
# Needs Rust only: napi-rs needs no Node headers, and the addon links no V8.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
profile=release
[ "${1:-}" = --debug ] && profile=debug
cd "$root"
cargo build --locked -p ivm-node $([ "$profile" = release ] && echo --release)
cp "target/$profile/libivm_node.so" node/ivm.node
