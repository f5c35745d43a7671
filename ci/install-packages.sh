# Sourced by the ci/ scripts: `install_packages CALLER PACKAGE...` installs the Debian
# packages a fresh machine lacks (as root, with apt), or names them and fails.
install_packages() {
  local caller="$1"
  shift
  [ $# -gt 0 ] || return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    echo "$caller: please install: $*" >&2
    exit 1
  fi
}
