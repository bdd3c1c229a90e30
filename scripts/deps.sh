# deps.sh - sourced by the other scripts: install what sbxd needs from
# Debian's packages, only when something is missing.
SBXD_DEBS="gcc clang make pkg-config libc6-dev libmicrohttpd-dev libjansson-dev libseccomp-dev libssl-dev libsqlite3-dev libcurl4-openssl-dev
 libnftables-dev libmnl-dev libnetfilter-log-dev libldns-dev
 mmdebstrap e2fsprogs util-linux bubblewrap iproute2 nftables dnsmasq-base openssl python3 python3-pytest python3-requests python3-yaml ca-certificates wrk"

sbxd_install_deps() {
  local missing=""
  for p in $SBXD_DEBS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
  done
  # node and npm run the E2B SDK compatibility suite; any install will do
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    missing="$missing nodejs npm"
  fi
  if [ -n "$missing" ]; then
    echo "sbxd: installing Debian packages:$missing" >&2
    if [ "$(id -u)" != 0 ]; then echo "sbxd: run as root to install packages" >&2; return 1; fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $missing >&2
  fi
}

# Build a template unless it is already built.
sbxd_ensure_template() {
  local tdir="${SBXD_TEMPLATE_DIR:-/var/lib/sbxd/templates}"
  if [ ! -f "$tdir/$1/template.json" ]; then
    "$SBXD_ROOT/build/sbxd" template build "$1"
  fi
}
