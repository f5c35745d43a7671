#!/usr/bin/env bash
# Tests of the V8 recipe's checks that need no V8 build (CI runs them; building V8 is not CI's
# job, see BUILDING.md):
#   - build-from-source.sh refuses a crate tarball and ICU data whose hashes are not in pins,
#     before it installs or builds anything;
#   - verify.sh accepts the mirror folder and refuses it with one byte changed;
#   - compare-archives.py finds its archive and the archive unpacked identical, and names the
#     one member of a changed copy whose contents differ, and the one whose header does.
#
# Usage: v8-build/test.sh [DIR]   (DIR: the mirror folder, default ../shared/v8; without it,
#                                  only the first test runs)
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mirror="${1:-$script_dir/../../shared/v8}"
archive_name="librusty_v8_release_x86_64-unknown-linux-gnu.a.gz"
binding_name="src_binding_release_x86_64-unknown-linux-gnu.rs"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

fail() { echo "v8-build/test.sh: FAILED: $*" >&2; exit 1; }

# Runs a command that must fail with status `want`, with `pattern` in its output.
expect_failure() {
  local want="$1" pattern="$2" status=0
  shift 2
  "$@" > "$tmp/out" 2>&1 || status=$?
  [ "$status" = "$want" ] || { cat "$tmp/out" >&2; fail "$* exited with $status, not $want"; }
  grep -q -- "$pattern" "$tmp/out" || { cat "$tmp/out" >&2; fail "$* did not say '$pattern'"; }
}

# Changes one byte of `file` at `offset`, in place.
flip_byte() {
  python3 - "$1" "$2" <<'PY'
import sys
path, offset = sys.argv[1], int(sys.argv[2])
with open(path, "r+b") as f:
    f.seek(offset)
    byte = f.read(1)
    f.seek(offset)
    f.write(bytes([byte[0] ^ 0xff]))
PY
}

# ---- build-from-source.sh: inputs whose hashes are not in pins ----------------------------------
refused_before_installing() {
  ! grep -q "checking system packages" "$tmp/out" && [ ! -e "$tmp/build/venv" ] && [ ! -e "$tmp/build/work" ] \
    || fail "build-from-source.sh went on to install or unpack before refusing an input"
}
echo "not the v8 crate" > "$tmp/v8-152.2.0.crate"
expect_failure 1 "(crate) has SHA-256" \
  bash "$script_dir/build-from-source.sh" --out "$tmp/build" --crate "$tmp/v8-152.2.0.crate"
refused_before_installing
echo "not ICU data" > "$tmp/icudtl.dat"
expect_failure 1 "(icu-data) has SHA-256" \
  bash "$script_dir/build-from-source.sh" --out "$tmp/build" --icu-data "$tmp/icudtl.dat"
refused_before_installing

if [ ! -d "$mirror" ]; then
  echo "v8-build/test.sh: ok (no $mirror: verify.sh and compare-archives.py not tested)"
  exit 0
fi

# ---- verify.sh -------------------------------------------------------------------------------
bash "$script_dir/verify.sh" "$mirror" > /dev/null
mkdir "$tmp/mirror"
cp "$mirror/SHA256SUMS" "$mirror/$archive_name" "$mirror/$binding_name" "$tmp/mirror/"
chmod u+w "$tmp/mirror/$binding_name"
flip_byte "$tmp/mirror/$binding_name" 100
expect_failure 1 "$binding_name: FAILED" bash "$script_dir/verify.sh" "$tmp/mirror"

# ---- compare-archives.py ----------------------------------------------------------------------
gzip -dc "$mirror/$archive_name" > "$tmp/changed.a"
python3 "$script_dir/compare-archives.py" "$mirror" "$tmp/changed.a" > "$tmp/out"
grep -q '^identical$' "$tmp/out" \
  || fail "compare-archives.py did not find the archive and the archive unpacked identical"
# In the copy, change a byte of the second of two members with the same name, and the time in
# the header of the first member whose name is kept in the table of long names.
read -r twin members_total twin_byte long_name long_time < <(python3 - "$tmp/changed.a" <<'PY'
import collections, sys
data = open(sys.argv[1], "rb").read()
pos, long_names, seen, total = 8, b"", collections.Counter(), 0
twin = long = None
while pos < len(data):
    raw, size = data[pos:pos + 16].rstrip(b" "), int(data[pos + 48:pos + 58])
    total += 1
    if raw == b"//":
        long_names = data[pos + 60:pos + 60 + size]
    elif raw.startswith(b"/") and raw[1:].isdigit():
        start = int(raw[1:])
        long = long or (long_names[start:long_names.index(b"/\n", start)].decode(), pos + 16)
    elif raw not in (b"/", b"/SYM64/"):
        name = raw.rstrip(b"/").decode()
        seen[name] += 1
        if seen[name] == 2:
            twin = twin or (name, pos + 60 + 8)
    pos += 60 + size + (size & 1)
print(twin[0], total, twin[1], long[0], long[1])
PY
)
flip_byte "$tmp/changed.a" "$twin_byte"
printf '1' | dd of="$tmp/changed.a" bs=1 seek="$long_time" conv=notrunc status=none
expect_failure 1 "^2 of $members_total members differ\$" \
  python3 "$script_dir/compare-archives.py" "$mirror" "$tmp/changed.a"
grep -q "^differs: $twin (#2) " "$tmp/out" \
  || { cat "$tmp/out" >&2; fail "compare-archives.py did not name $twin (#2) as the member that differs"; }
grep -q "^header differs: $long_name (time 0 / 1)\$" "$tmp/out" \
  || { cat "$tmp/out" >&2; fail "compare-archives.py did not name $long_name as the member whose header differs"; }

echo "v8-build/test.sh: ok"
