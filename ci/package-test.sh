#!/usr/bin/env bash
# Proves what ci/package.sh made, as root (chroot and mount need it):
# 1. the stripped binary alone, in an otherwise empty root with /proc mounted, evaluates,
#    stops a script at its memory limit (exit 4) and runs a process-isolated isolate;
# 2. the .deb installs into a clean minimal Debian root (mmdebstrap, from Debian's mirror),
#    where `ivm --version`, `man ivm`, a hostile script and a guest component work;
# 3. there too, libivm0 and libivm-dev install, and the C example (from the package's
#    examples) builds with gcc and pkg-config against the shared and the static library and
#    passes, with /usr/bin/ivm as worker program.
#
# Usage: ci/package-test.sh STRIPPED_IVM IVM.deb LIBIVM0.deb LIBIVM-DEV.deb
set -euo pipefail
cd "$(dirname "$0")/.."
binary="$(realpath "$1")"
deb="$(realpath "$2")"
lib_deb="$(realpath "$3")"
dev_deb="$(realpath "$4")"
[ "$(id -u)" = 0 ] || { echo "package-test: run as root (chroot, mount)" >&2; exit 1; }
work="$(mktemp -d)"
cleanup() {
  umount "$work/empty/proc" 2>/dev/null || true
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT

# Runs "$@" expecting exit status $1 and, if given, stdout $2.
expect() {
  local status="$1" output="$2"
  shift 2
  local got=0 out
  out="$("$@" 2>"$work/stderr")" || got=$?
  if [ "$got" != "$status" ] || { [ -n "$output" ] && [ "$out" != "$output" ]; }; then
    echo "package-test: '$*' gave status $got and '$out' (wanted $status and '$output'); stderr:" >&2
    cat "$work/stderr" >&2
    exit 1
  fi
  echo "package-test: ok: $* -> $status ${out:0:60}"
}

hog='const a = []; for (;;) a.push(new Array(1e5).fill(1.5))'

# 1. The binary alone.
mkdir -p "$work/empty/proc"
cp "$binary" "$work/empty/ivm"
mount -t proc proc "$work/empty/proc"
expect 0 42 chroot "$work/empty" /ivm eval '6*7'
expect 4 "" chroot "$work/empty" /ivm --memory-limit 16 eval "$hog"
expect 0 42 chroot "$work/empty" /ivm --isolation process eval '6*7'
expect 4 "" chroot "$work/empty" /ivm --isolation process --memory-limit 16 eval "$hog"
umount "$work/empty/proc"

# 2. The package in a clean Debian root.
guest="$work/hello.wasm"
bash ci/build-guest.sh tests/guests/hello.c "$guest"
suite="$(. /etc/os-release && echo "$VERSION_CODENAME")"
cat >"$work/inside.sh" <<EOF
set -eu
dpkg -i /tmp/$(basename "$deb") >/dev/null
status() { "\$@" >/dev/null 2>&1 && echo 0 || echo \$?; }
ivm --version | grep "^ivm .* (V8 "
MANPAGER=cat man ivm 2>/dev/null | grep -q "snapshot create"
test "\$(status ivm --memory-limit 16 eval '$hog')" = 4
test "\$(status ivm --timeout 50 eval 'for (;;) {}')" = 3
ivm component run /tmp/hello.wasm deb >/tmp/out
grep -x "Hello, deb! 42" /tmp/out
test -s /usr/share/bash-completion/completions/ivm
test -s /usr/share/zsh/vendor-completions/_ivm
test -s /usr/share/fish/vendor_completions.d/ivm.fish
dpkg -i /tmp/$(basename "$lib_deb") /tmp/$(basename "$dev_deb") >/dev/null
cd /tmp
cp /usr/share/doc/libivm-dev/examples/example.c .
cc -std=c11 -D_DEFAULT_SOURCE example.c \$(pkg-config --cflags --libs ivm) -lpthread -o example
./example /usr/bin/ivm >out
grep -x "all checks passed" out
cc -std=c11 -D_DEFAULT_SOURCE example.c /usr/lib/\$(gcc -print-multiarch)/libivm.a \$(pkg-config --static --libs-only-l ivm | sed 's/-livm//') -lpthread -o example-static
./example-static /usr/bin/ivm >out
grep -x "all checks passed" out
EOF
# mmdebstrap mounts /proc, /sys and /dev for its hooks; the root is thrown away after.
mmdebstrap --variant=minbase --include=man-db,gcc,libc6-dev,pkg-config --quiet \
  --customize-hook="copy-in '$deb' '$lib_deb' '$dev_deb' '$guest' '$work/inside.sh' /tmp" \
  --customize-hook='chroot "$1" sh -x /tmp/inside.sh' \
  "$suite" "$work/debian-root"
echo "package-test: ok: $(basename "$deb") installs into a clean $suite root; --version, man, limits and a component work there"
echo "package-test: ok: libivm0 and libivm-dev install there; the C example builds with pkg-config (shared and static) and passes"
