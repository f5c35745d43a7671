#!/usr/bin/env bash
# Builds libivm's Debian packages from the staged C API (ci/c-api.sh --release --stage-only),
# with dpkg-deb (cargo-deb writes neither shlibs nor library symlinks):
#   target/debian/libivm0_<version>-1_<arch>.deb     the shared library, libivm.so.0 (its
#                                                    soname), with shlibs and an ldconfig trigger
#   target/debian/libivm-dev_<version>-1_<arch>.deb  ivm.h, libivm.so (-> libivm.so.0),
#                                                    libivm.a, ivm.pc, and the examples
# Both are checked with lintian (errors and warnings fail; ci/debian/libivm*.lintian-overrides
# say why each override is by design). Reproducible as ci/package.sh is: file times are
# SOURCE_DATE_EPOCH, and dpkg-deb clamps to it. xz at level 2: level 6 took minutes over the
# 200 MB static library (and lintian refuses zstd).
set -euo pipefail
cd "$(dirname "$0")/.."
need_packages=()
command -v lintian >/dev/null 2>&1 || need_packages+=(lintian)
command -v dpkg-deb >/dev/null 2>&1 || need_packages+=(dpkg)
command -v objdump >/dev/null 2>&1 || need_packages+=(binutils)
. ci/install-packages.sh
install_packages ci/libivm-deb.sh "${need_packages[@]}"
export PATH="$HOME/.cargo/bin:$PATH"
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}"
# The build's own folders are remapped out of the library, as for the static binary (but
# libivm links glibc dynamically: no crt-static).
cargo_home="${CARGO_HOME:-$HOME/.cargo}"
export RUSTFLAGS="${RUSTFLAGS:-} --remap-path-prefix=$(pwd -P)=/build/ivm --remap-path-prefix=$(cd "$cargo_home" && pwd -P)=/cargo"

bash ci/c-api.sh --release --stage-only
stage=target/c-api
version="$(sed -n 's/^#define IVM_VERSION "\(.*\)"$/\1/p' "$stage/include/ivm.h")-1"
arch="$(dpkg --print-architecture)"
multiarch="$(gcc -print-multiarch)"
work=target/debian-libivm
rm -rf "$work"
mkdir -p "$work" target/debian
rm -f target/debian/libivm*.deb

# The lowest glibc the library asks for, from its versioned symbols.
glibc="$(objdump -T "$stage/lib/libivm.so.0" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)"
python3 ci/deb-copyright.py "$work/copyright" --library

# Copies the shared parts of a package: its copyright, changelog and lintian overrides.
docs() {
  local root="$1" name="$2"
  install -d "$root/usr/share/doc/$name" "$root/usr/share/lintian/overrides"
  install -m644 "$work/copyright" "$root/usr/share/doc/$name/copyright"
  gzip -9n <ci/debian/changelog >"$root/usr/share/doc/$name/changelog.Debian.gz"
  chmod 644 "$root/usr/share/doc/$name/changelog.Debian.gz"
  install -m644 "ci/debian/$name.lintian-overrides" "$root/usr/share/lintian/overrides/$name"
}

# Writes DEBIAN/control and md5sums (beside what DEBIAN/ holds already), fixes times and
# modes, and builds the .deb.
pack() {
  local root="$1" name="$2" fields="$3"
  install -d "$root/DEBIAN"
  cat >"$root/DEBIAN/control" <<CONTROL
Package: $name
Source: ivm
Version: $version
Architecture: $arch
Multi-Arch: same
Maintainer: The ivm developers <ivm@example.invalid>
Installed-Size: $(du -sk --apparent-size "$root/usr" | cut -f1)
Priority: optional
$fields
CONTROL
  (cd "$root" && find usr -type f -printf '%P\n' | LC_ALL=C sort | sed 's|^|usr/|' | xargs md5sum >DEBIAN/md5sums)
  find "$root" -type d -exec chmod 755 {} +
  chmod 644 "$root"/DEBIAN/*
  find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
  dpkg-deb --root-owner-group -Zxz -z2 --build "$root" "target/debian/${name}_${version}_$arch.deb" >/dev/null
}

description="V8 JavaScript isolates with hard memory and time limits
 libivm is ivm's C API, for C, C++, Go, Python (ctypes or cffi) and other hosts:
 V8 isolates, each with its own heap, a hard memory limit and timeouts, with
 contexts, scripts, ES modules, values as JSON or MessagePack, host functions
 as C callbacks, references, sealed code caches, startup snapshots, the CPU
 profiler, heap snapshots and the inspector. Isolates run in this process or
 in worker processes (the ivm package's binary). It bundles V8, ICU and
 libc++."

# libivm0: the shared library.
lib0="$work/libivm0"
install -d "$lib0/usr/lib/$multiarch"
install -m644 "$stage/lib/libivm.so.0" "$lib0/usr/lib/$multiarch/libivm.so.0"
strip --strip-unneeded --remove-section=.comment "$lib0/usr/lib/$multiarch/libivm.so.0"
docs "$lib0" libivm0
install -d "$lib0/DEBIAN"
printf 'libivm 0 libivm0 (>= %s)\n' "${version%-*}" >"$lib0/DEBIAN/shlibs"
printf 'activate-noawait ldconfig\n' >"$lib0/DEBIAN/triggers"
pack "$lib0" libivm0 "Section: libs
Depends: libc6 (>= $glibc), libgcc-s1 (>= 3.0)
Recommends: ivm (= $version)
Description: $(sed '1s/$/ - shared library/' <<<"$description")
 .
 This package holds the shared library. Process isolation needs the ivm
 binary (package ivm) as worker program."

# libivm-dev: what building against it needs.
dev="$work/libivm-dev"
install -d "$dev/usr/include" "$dev/usr/lib/$multiarch/pkgconfig" "$dev/usr/share/doc/libivm-dev/examples"
install -m644 "$stage/include/ivm.h" "$dev/usr/include/ivm.h"
ln -s libivm.so.0 "$dev/usr/lib/$multiarch/libivm.so"
install -m644 "$stage/lib/libivm.a" "$dev/usr/lib/$multiarch/libivm.a"
strip --strip-debug --remove-section=.comment "$dev/usr/lib/$multiarch/libivm.a"
sed -e "s|@prefix@|/usr|" -e "s|@libdir@|\${prefix}/lib/$multiarch|" -e "s|@version@|${version%-*}|" \
  host/c-api/ivm.pc.in >"$dev/usr/lib/$multiarch/pkgconfig/ivm.pc"
chmod 644 "$dev/usr/lib/$multiarch/pkgconfig/ivm.pc"
install -m644 host/c-api/examples/example.c host/c-api/examples/example.cpp host/c-api/examples/example.py \
  "$dev/usr/share/doc/libivm-dev/examples/"
docs "$dev" libivm-dev
pack "$dev" libivm-dev "Section: libdevel
Depends: libivm0 (= $version)
Description: $(sed '1s/$/ - development files/' <<<"$description")
 .
 This package holds the header (ivm.h), the static library, the pkg-config
 file and examples in C, C++ and Python."

for deb in target/debian/libivm0_*.deb target/debian/libivm-dev_*.deb; do
  echo "ci/libivm-deb.sh: $deb ($(stat -c %s "$deb") bytes)"
  lintian --fail-on error,warning --info "$deb"
done
