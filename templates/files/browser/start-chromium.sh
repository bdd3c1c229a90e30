#!/bin/sh
# start-chromium.sh - the browser template's start command: a headless
# Chromium serving the DevTools protocol on 127.0.0.1:9222, restarted
# whenever it ends (a script may close it with Browser.close).
# --no-sandbox: Chromium's own sandbox needs user namespaces or a setuid
# helper, which the sandbox's seccomp filter refuses; the sandbox is the
# isolation.  --disable-dev-shm-usage: /dev/shm is small.
dir="${HOME:-/home/user}/.config/sbxd-chromium"
while :; do
  /usr/bin/chromium --headless --no-sandbox --disable-gpu --disable-dev-shm-usage \
    --no-first-run --no-default-browser-check --disable-background-networking \
    --remote-debugging-address=127.0.0.1 --remote-debugging-port=9222 \
    --user-data-dir="$dir" about:blank >/dev/null 2>&1
  sleep 0.5
done
