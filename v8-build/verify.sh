#!/usr/bin/env bash
# Check a V8 mirror folder against its SHA256SUMS.
#
# Usage: v8-build/verify.sh [DIR]
#   DIR  folder holding librusty_v8_*.a.gz, src_binding_*.rs and SHA256SUMS
#        (default: ../shared/v8 relative to the repo root; a relative DIR is taken relative to
#        the current directory)
#
# Exits 0 when every file listed in SHA256SUMS is present and matches, non-zero otherwise.
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$script_dir/.." && pwd)"

case "${1:-}" in
  -h|--help) awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"; exit 0 ;;
esac
[ $# -le 1 ] || { echo "usage: $0 [DIR]" >&2; exit 2; }
dir="${1:-$repo_root/../shared/v8}"

fail() {
  echo "verify: FAILED: $*" >&2
  echo "verify: do not build against this folder; restore its files from a trusted copy" >&2
  echo "verify: (or rebuild them with v8-build/build-from-source.sh)." >&2
  exit 1
}

[ -d "$dir" ] || fail "$dir is not a directory"
dir="$(cd "$dir" && pwd)"
[ -f "$dir/SHA256SUMS" ] || fail "$dir/SHA256SUMS not found"

# A SHA256SUMS that does not list the archive and the binding would pass trivially.
sums="$(cat "$dir/SHA256SUMS")"
grep -Eq '^[0-9a-f]{64} [ *]librusty_v8_[A-Za-z0-9_.-]+\.a\.gz$' <<< "$sums" \
  || fail "$dir/SHA256SUMS lists no librusty_v8_*.a.gz archive"
grep -Eq '^[0-9a-f]{64} [ *]src_binding_[A-Za-z0-9_.-]+\.rs$' <<< "$sums" \
  || fail "$dir/SHA256SUMS lists no src_binding_*.rs binding"

echo "verify: checking $dir"
if ! (cd "$dir" && sha256sum --strict -c SHA256SUMS); then
  fail "a file in $dir is missing or does not match SHA256SUMS (see above)"
fi
echo "verify: OK: every file listed in $dir/SHA256SUMS matches"
