#!/usr/bin/env bash
# Builds the Python guest component guest-abi/examples/python/app.py for the ivm:isolate
# interface (guest-abi/wit) with componentize-py, which bundles CPython 3.14 for WASI into the
# component. The example's MessagePack comes from msgpack's pure-Python fallback (a component
# cannot load the C extension pip installs for this machine).
#
# Usage: ci/build-python-guest.sh OUT.wasm
# Needs: python3 with venv and pip (Debian: apt-get install python3-venv), and PyPI on the first
# run: componentize-py and msgpack, pinned below, go into a venv under target/pyguest-venv that
# later runs reuse.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: ci/build-python-guest.sh OUT.wasm" >&2; exit 2; }
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$(realpath -m "$1")"
mkdir -p "$(dirname "$out")"
componentize_py_version=0.25.1
msgpack_version=1.2.4
venv="$root/target/pyguest-venv"
deps="$venv/guest-packages"  # the guest's packages, not the venv's own
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
pip=(-m pip install --quiet --disable-pip-version-check)

if [ "$("$venv/bin/componentize-py" --version 2>/dev/null)" != "componentize-py $componentize_py_version" ]; then
  python3 -m venv --clear "$venv" \
    || { echo "build-python-guest: python3 -m venv failed (apt-get install python3-venv)" >&2; rm -rf "$venv"; exit 1; }
  "$venv/bin/python" "${pip[@]}" "componentize-py==$componentize_py_version"
fi
if [ ! -d "$deps/msgpack-$msgpack_version.dist-info" ]; then
  rm -rf "$deps"
  "$venv/bin/python" "${pip[@]}" --no-compile --target "$deps" "msgpack==$msgpack_version"
  # The C extension is built for this machine; without it msgpack picks its fallback.
  find "$deps" -name '*.so' -delete
fi

# Built from a copy, so that the bytecode componentize-py writes stays out of the source tree.
cp "$root/guest-abi/examples/python/app.py" "$work/"
cd "$work"
"$venv/bin/componentize-py" -d "$root/guest-abi/wit" -w guest componentize app -p . -p "$deps" -o "$out" >/dev/null
