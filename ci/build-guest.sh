#!/usr/bin/env bash
# Builds a C guest component for the ivm:isolate interface, offline, from tests/guests/NAME.c:
# bindings from `wit-bindgen c`, clang for wasm32-wasi (Debian's clang-22 and wasi-libc), and
# the Rust toolchain's wasm-component-ld with its built-in WASI reactor adapter.
#
# Usage: ci/build-guest.sh [--wit DIR] SOURCE.c OUT.wasm
#   --wit DIR: the WIT package to build against (default guest-abi/wit, the newest version;
#              guest-abi/wit-0.1.0 for a guest of ivm:isolate@0.1.0)
# Needs: clang-22 lld-22 wasi-libc libclang-rt-22-dev-wasm32 (apt), wit-bindgen-cli 0.61.1
# (cargo install); ci/test.sh installs them.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
wit="$root/guest-abi/wit"
if [ "${1:-}" = --wit ]; then
  wit="$(cd "$2" && pwd)"
  shift 2
fi
source_file="$1"
out="$2"
llvm=/usr/lib/llvm-22
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

for tool in "$llvm/bin/clang" "$llvm/bin/wasm-ld" /usr/lib/wasm32-wasi/crt1-reactor.o; do
  [ -e "$tool" ] || { echo "build-guest: $tool is missing (apt-get install clang-22 lld-22 wasi-libc libclang-rt-22-dev-wasm32)" >&2; exit 1; }
done
wit_bindgen="$(command -v wit-bindgen || echo "$HOME/.cargo/bin/wit-bindgen")"
[ -x "$wit_bindgen" ] || { echo "build-guest: wit-bindgen is missing (cargo install wit-bindgen-cli --version 0.61.1 --locked)" >&2; exit 1; }
component_ld="$(rustc --print sysroot)/lib/rustlib/x86_64-unknown-linux-gnu/bin/wasm-component-ld"

"$wit_bindgen" c "$wit" --world guest --out-dir "$work/gen" >/dev/null
# Debian's wasi-libc lives under the wasm32-wasi triple (wasm32-wasip1 finds no headers).
cflags=(--target=wasm32-wasi -Wno-deprecated --sysroot=/usr -O2 -I"$work/gen")
"$llvm/bin/clang" "${cflags[@]}" -c "$source_file" -o "$work/main.o"
"$llvm/bin/clang" "${cflags[@]}" -c "$work/gen/guest.c" -o "$work/guest.o"
# A reactor: the guest exports `run` (a command would wrap every export, cabi_realloc too,
# in libc's constructors and destructors).
"$component_ld" --wasm-ld-path "$llvm/bin/wasm-ld" --wasi-adapter reactor --no-entry -o "$out" \
  /usr/lib/wasm32-wasi/crt1-reactor.o "$work/main.o" "$work/guest.o" "$work/gen/guest_component_type.o" \
  -L/usr/lib/wasm32-wasi -lc "$llvm/lib/clang/22/lib/wasi/libclang_rt.builtins-wasm32.a"
