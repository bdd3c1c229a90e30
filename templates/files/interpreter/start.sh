# The code interpreter server (server.py) on port 49999: the template's
# start command (run as root by sbxd when a sandbox starts, and again by
# the daemon when it finds nothing listening).  One supervisor per sandbox
# (the lock; a second one exits at once) starts the server again whenever
# it ends, so killing the server brings up a fresh one.  The last run's
# log is kept in /var/log/sbxd-interpreter.log.
if [ "$1" != "--locked" ]; then
  exec flock -n /run/sbxd-interpreter.lock sh "$0" --locked </dev/null >/dev/null 2>&1
fi
# The template's environment came through sudo -E, but not PATH (sudo's
# secure_path) and not a HOME of root's.
export PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
while :; do
  JUPYTER_PATH=/opt/sbxd/interpreter /usr/bin/python3 /opt/sbxd/interpreter/server.py >/var/log/sbxd-interpreter.log 2>&1
  sleep 0.2
done
