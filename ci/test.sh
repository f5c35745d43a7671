#!/usr/bin/env bash
# Sets up a fresh machine and runs every test: the README's test command.
# Installs what the build and the tests need (V8 comes prebuilt and hash-checked by
# host/build.rs, see BUILDING.md), then runs clippy (warnings are errors), the unit tests, the
# acceptance suite (in-process, then process-isolated), the documentation examples, checks
# the guest crate, and proves the C API (ci/c-api.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: a C compiler for a few crates' build scripts (rust-lld, bundled with Rust,
# links), python3 for ci/import-cycles.py, Node (`node inspect` drives the inspector tests),
# and clang-22 with wasi-libc to build the C guest components the tests run.
need_packages=()
command -v cc >/dev/null 2>&1 || need_packages+=(gcc)
command -v python3 >/dev/null 2>&1 || need_packages+=(python3)
command -v node >/dev/null 2>&1 || need_packages+=(nodejs)
# npm fetches the Node 22 and 24 the npm package is also tested on (node/test.sh).
command -v npm >/dev/null 2>&1 || need_packages+=(npm)
[ -x /usr/lib/llvm-22/bin/clang ] || need_packages+=(clang-22)
[ -x /usr/lib/llvm-22/bin/wasm-ld ] || need_packages+=(lld-22)
[ -e /usr/lib/wasm32-wasi/crt1-reactor.o ] || need_packages+=(wasi-libc)
[ -e /usr/lib/llvm-22/lib/clang/22/lib/wasi/libclang_rt.builtins-wasm32.a ] || need_packages+=(libclang-rt-22-dev-wasm32)
# A venv with pip for componentize-py, which builds the Python guest (ci/build-python-guest.sh).
python3 -c 'import ensurepip' >/dev/null 2>&1 || need_packages+=(python3-venv)
. ci/install-packages.sh
install_packages ci/test.sh "${need_packages[@]}"
# The C bindings generator for guest components (0.61 is the newest that builds with Rust 1.95).
if ! command -v wit-bindgen >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/wit-bindgen" ]; then
  cargo install wit-bindgen-cli --version 0.61.1 --locked
fi
export PATH="$HOME/.cargo/bin:$PATH"
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy

cargo clippy --locked --workspace --all-targets -- -D warnings
# The C API builds ivm without its default features (no CLI, component host or tokio): what
# only those features use must not be left dead there.
cargo clippy --locked -p ivm-c-api -- -D warnings
# The layers stay layered: no import cycle over 3 files, but the engine core's (ARCHITECTURE.md).
python3 ci/import-cycles.py host/src 3 --allow isolate/inner.rs isolate/nesting.rs run/mod.rs run/state.rs \
  run/deadlines.rs run/host_calls.rs
python3 ci/import-cycles.py host/client/src 3
# The V8 recipe's own checks (pinned inputs refused when they differ, verify.sh,
# compare-archives.py); V8 itself is never built here.
bash v8-build/test.sh
# Unit tests of the V8-free crate (its test binary does not link V8), and proof that it and
# the Node addon build without V8: nothing in their dependency trees is the v8 crate.
cargo test --locked -p ivm-client
for crate in ivm-client ivm-node; do
  tree=$(cargo tree --locked -p "$crate" -e normal,build --prefix none)
  if grep -q '^v8 ' <<<"$tree"; then
    echo "ci/test.sh: $crate depends on V8" >&2
    exit 1
  fi
done
# The Python example guest: built once (componentize-py's output differs from build to build)
# and compiled once into the cache both suites load it from. A debug build of wasmtime takes
# a minute or two to compile its 18 MB; the tests would do it too, at the same time as others.
bash ci/build-python-guest.sh target/guests/python.wasm
cargo build --locked --bin ivm
target/debug/ivm component run --cache-dir target/guests/cache target/guests/python.wasm CI >/dev/null
cargo test --locked --test acceptance
# The same suite again with every isolate in a worker process (IsolateOptions::isolation's
# default comes from IVM_ISOLATION), so both modes keep one behaviour.
IVM_ISOLATION=process cargo test --locked --test acceptance
cargo test --locked --doc
# The npm package (node/): its native addon, which links no V8, and its tests against the
# debug `ivm` as the worker program, on this Node and on Node 22 and 24 (the same build).
bash node/build.sh --debug
IVM_WORKER="$PWD/target/debug/ivm" bash node/test.sh
cargo check --locked -p ivm-guest
# libivm, the C API: its header against its exports, and the C, C++ and Python examples
# (also against the static library, and the C one under valgrind).
bash ci/c-api.sh
