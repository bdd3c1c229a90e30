# shellcheck shell=bash
# deps.sh - sourced by the other scripts: install what sbxd needs from
# Debian's packages, only when something is missing.
SBXD_DEBS="gcc clang libclang-rt-14-dev make pkg-config libc6-dev libmicrohttpd-dev libjansson-dev libseccomp-dev libssl-dev libsqlite3-dev libcurl4-openssl-dev
 libnftables-dev libmnl-dev libnetfilter-log-dev libldns-dev libwslay-dev libhttp-parser-dev zlib1g-dev
 mmdebstrap e2fsprogs util-linux bubblewrap iproute2 nftables dnsmasq-base openssl python3 python3-pytest python3-requests python3-yaml python3-websockets python3-prometheus-client gnuplot-nox ca-certificates curl wrk tmux"

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

# The templates the README's and the seeds' examples name: `base` first
# (README's quick start), then `bun` and `python` (seed 004's runtimes; its
# quick start uses bun, the default), `code_interpreter` (the seeds' quick
# starts create sandboxes with templateID "code_interpreter") and `pyodide`
# (seed 002's wasm mode).  sbxd-up prepares them all, the test command too;
# add a template here to have both build it.
SBXD_TEMPLATES="${SBXD_TEMPLATES:-base bun python code_interpreter pyodide}"
# What the test command builds besides: `documents` (seed 004's
# capabilities.documents.libreofficeHeadless), `claude` and `codex` (seed
# 000's agent templates), `browser` (seed 004's capabilities.browser) and
# `desktop` (seed 000's GUI template, for the E2B Desktop SDK), which
# sbxd-up leaves to be built on demand (`sbxd template build NAME`) as they
# take the longest (each downloads hundreds of MB).
SBXD_TEST_TEMPLATES="${SBXD_TEST_TEMPLATES:-$SBXD_TEMPLATES documents claude codex browser desktop}"

# The SHA-256 of what a template is built from: its spec, the specs it
# includes and the files its `file:` lines copy in (templates/README.md).
sbxd_spec_hash() {
  local dir="${SBXD_SPEC_DIR:-$SBXD_ROOT/templates}" name="$1" seen="" todo="$1" t inc src
  {
    while [ -n "$todo" ]; do
      t="${todo%% *}"; todo="${todo#"$t"}"; todo="${todo# }"
      case " $seen " in *" $t "*) continue ;; esac
      seen="$seen $t"
      [ -f "$dir/$t.spec" ] || continue
      cat "$dir/$t.spec"
      for inc in $(sed -n 's/^include:[[:space:]]*\([^[:space:]]*\).*/\1/p' "$dir/$t.spec"); do todo="$todo $inc"; done
      for src in $(sed -n 's/^file:[[:space:]]*\([^[:space:]]*\).*/\1/p' "$dir/$t.spec"); do
        [ -f "$dir/$src" ] && cat "$dir/$src"
      done
    done
  } | sha256sum | cut -d' ' -f1
}

# Is template NAME built, from its spec as it is now?  The hash of what it
# was built from is kept beside it (.spec-NAME.sha256), so that a changed
# spec or runner is rebuilt instead of tested or served stale.
sbxd_template_current() {
  local tdir="${SBXD_TEMPLATE_DIR:-/var/lib/sbxd/templates}"
  [ -f "$tdir/$1/template.json" ] && [ "$(cat "$tdir/.spec-$1.sha256" 2>/dev/null)" = "$(sbxd_spec_hash "$1")" ]
}

sbxd_template_built() {
  local tdir="${SBXD_TEMPLATE_DIR:-/var/lib/sbxd/templates}"
  sbxd_spec_hash "$1" > "$tdir/.spec-$1.sha256"
}

# Build a template unless it is built from its current spec.
sbxd_ensure_template() {
  if ! sbxd_template_current "$1"; then
    "$SBXD_ROOT/build/sbxd" template build "$1" && sbxd_template_built "$1"
  fi
}

# Build a template unless it is already built, telling how it goes on
# stderr: its name, the seconds so far (every SBXD_PROGRESS_EVERY, 15 s by
# default) and the build's last line, then done or failed.  The build's
# whole output goes to SBXD_LOG_DIR/template-NAME.log (default
# /var/log/sbxd).  Returns the build's status.
sbxd_prepare_template() {
  local name="$1" tdir="${SBXD_TEMPLATE_DIR:-/var/lib/sbxd/templates}"
  local logdir="${SBXD_LOG_DIR:-/var/log/sbxd}" every="${SBXD_PROGRESS_EVERY:-15}"
  if sbxd_template_current "$name"; then
    echo "sbxd: template $name: ready" >&2
    return 0
  fi
  mkdir -p "$logdir"
  local log="$logdir/template-$name.log" start=$SECONDS next=$every pid rc=0 last
  echo "sbxd: template $name: building (log: $log)" >&2
  "$SBXD_ROOT/build/sbxd" template build "$name" ${SBXD_SPEC_DIR:+--spec-dir "$SBXD_SPEC_DIR"} >"$log" 2>&1 &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    if kill -0 "$pid" 2>/dev/null && [ $((SECONDS - start)) -ge "$next" ]; then
      next=$((next + every))
      last=$(tail -n 1 "$log" 2>/dev/null | tr -d '\r' | cut -c1-100)
      echo "sbxd: template $name: building, $((SECONDS - start)) s${last:+ ($last)}" >&2
    fi
  done
  wait "$pid" || rc=$?
  if [ "$rc" = 0 ]; then
    sbxd_template_built "$name"
    echo "sbxd: template $name: done in $((SECONDS - start)) s" >&2
  else
    echo "sbxd: template $name: FAILED after $((SECONDS - start)) s (exit $rc); the end of $log:" >&2
    tail -n 5 "$log" | sed 's/^/    /' >&2
  fi
  return "$rc"
}
