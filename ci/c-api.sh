#!/usr/bin/env bash
# libivm, ivm's C API (host/c-api): builds it, stages it as an install tree and proves it.
#
# Usage: ci/c-api.sh [--release] [--stage-only]
#   --release     the release profile (default: dev, as ci/test.sh builds)
#   --stage-only  build and stage only (ci/package.sh, ci/bench-compare.sh)
#
# The staged tree, target/c-api/: include/ivm.h, lib/libivm.a, lib/libivm.so.0 (the soname)
# with lib/libivm.so pointing at it, lib/pkgconfig/ivm.pc. The proofs, built with pkg-config
# against it:
#   - ivm.h and libivm.so agree: each function the header declares is exported, and each
#     ivm_* the library exports is declared; the header compiles alone as C99 and C++11;
#   - examples/example.c against the shared library and against the static one, with the
#     `ivm` binary as worker program; examples/example.cpp (RAII wrappers, 200 isolates from
#     8 threads); examples/example.py (ctypes only);
#   - the C example under valgrind's memcheck: no invalid access and nothing definitely lost
#     beyond host/c-api/valgrind.supp (each suppression is V8's and says why).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

profile=dev
dir=debug
stage_only=0
for arg in "$@"; do
  case "$arg" in
    --release) profile=release; dir=release ;;
    --stage-only) stage_only=1 ;;
    *) echo "ci/c-api.sh: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

need_packages=()
command -v cc >/dev/null 2>&1 || need_packages+=(gcc)
command -v c++ >/dev/null 2>&1 || need_packages+=(g++)
command -v pkg-config >/dev/null 2>&1 || need_packages+=(pkg-config)
command -v python3 >/dev/null 2>&1 || need_packages+=(python3)
[ "$stage_only" = 1 ] || command -v valgrind >/dev/null 2>&1 || need_packages+=(valgrind)
. ci/install-packages.sh
install_packages ci/c-api.sh "${need_packages[@]}"
export PATH="$HOME/.cargo/bin:$PATH"

cargo build --locked --profile "$profile" -p ivm-c-api
stage=target/c-api
rm -rf "$stage"
mkdir -p "$stage/include" "$stage/lib/pkgconfig"
cp host/c-api/include/ivm.h "$stage/include/"
cp "target/$dir/libivm.a" "$stage/lib/"
cp "target/$dir/libivm.so" "$stage/lib/libivm.so.0"
ln -s libivm.so.0 "$stage/lib/libivm.so"
version=$(sed -n 's/^#define IVM_VERSION "\(.*\)"$/\1/p' host/c-api/include/ivm.h)
sed -e "s|@prefix@|$root/$stage|" -e "s|@libdir@|\${prefix}/lib|" -e "s|@version@|$version|" \
  host/c-api/ivm.pc.in > "$stage/lib/pkgconfig/ivm.pc"
[ "$stage_only" = 1 ] && exit 0

export PKG_CONFIG_PATH="$root/$stage/lib/pkgconfig"
out=target/c-api-examples
rm -rf "$out"
mkdir -p "$out"

# The header and the library agree, and the header stands alone.
declared=$(grep -oE '\bivm_[a-z0-9_]+\(' host/c-api/include/ivm.h | tr -d '(' | sort -u)
exported=$(nm -D --defined-only "$stage/lib/libivm.so.0" | awk '$3 ~ /^ivm_/ { print $3 }' | sort -u)
if [ "$declared" != "$exported" ]; then
  echo "ci/c-api.sh: ivm.h and libivm.so differ (< declared only, > exported only):" >&2
  diff <(echo "$declared") <(echo "$exported") >&2 || true
  exit 1
fi
echo '#include <ivm.h>' > "$out/header.c"
cc -std=c99 -Wall -Wextra -pedantic -Werror $(pkg-config --cflags ivm) -c "$out/header.c" -o "$out/header-c.o"
c++ -std=c++11 -Wall -Wextra -pedantic -Werror -x c++ $(pkg-config --cflags ivm) -c "$out/header.c" -o "$out/header-cpp.o"

# The examples.
worker="$root/target/$dir/ivm"
cargo build --locked --profile "$profile" --bin ivm
cflags=(-std=c11 -Wall -Wextra -Werror -D_DEFAULT_SOURCE)
cc "${cflags[@]}" host/c-api/examples/example.c $(pkg-config --cflags --libs ivm) -lpthread -o "$out/example"
cc "${cflags[@]}" host/c-api/examples/example.c $(pkg-config --cflags ivm) "$stage/lib/libivm.a" \
  $(pkg-config --static --libs-only-l ivm | sed 's/-livm//') -lpthread -o "$out/example-static"
c++ -std=c++17 -Wall -Wextra -Werror host/c-api/examples/example.cpp $(pkg-config --cflags --libs ivm) -pthread \
  -o "$out/example-cpp"
cc "${cflags[@]}" host/c-api/examples/bench.c $(pkg-config --cflags --libs ivm) -o "$out/bench"
export LD_LIBRARY_PATH="$root/$stage/lib"
echo ">> example.c (libivm.so)"
"$out/example" "$worker"
echo ">> example.c (libivm.a)"
"$out/example-static" "$worker"
echo ">> example.cpp"
"$out/example-cpp"
echo ">> example.py (ctypes)"
python3 host/c-api/examples/example.py
echo ">> bench.c"
"$out/bench"
echo ">> example.c under valgrind"
valgrind --quiet --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite --error-exitcode=9 \
  --suppressions=host/c-api/valgrind.supp "$out/example" "$worker"
