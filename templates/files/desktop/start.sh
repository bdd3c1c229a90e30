# The desktop of the `desktop` template, started by the template's start
# command (as the user) in every sandbox: an X server on :0 with the
# arguments @e2b/desktop 2.4.0 gives it (1024x768x24, 96 dpi, local
# connections only), then an xfce4 session on it.  The template's ready
# command waits for the processes the SDK waits for (xfce4-session, xfwm4,
# xfdesktop), so the desktop is up when the sandbox is.  One desktop per
# sandbox: a second start finds the lock taken and exits.
if [ "$1" != "--locked" ]; then
  mkdir -p /tmp/.sbxd-desktop
  exec flock -n /tmp/.sbxd-desktop/start.lock sh "$0" --locked </dev/null >/tmp/.sbxd-desktop/start.log 2>&1
fi
export DISPLAY=:0
# The session's D-Bus at the fixed address the template's environment
# names, so that every command (xdg-open, exo-open, xfconf) reaches the
# session's services, not a bus of its own.
export DBUS_SESSION_BUS_ADDRESS=unix:path=/tmp/.sbxd-desktop/bus
dbus-daemon --session --address="$DBUS_SESSION_BUS_ADDRESS" --fork --nopidfile
/opt/sbxd/desktop/xvfb-start :0 -ac -screen 0 1024x768x24 -retro -dpi 96 -nolisten tcp -nolisten unix
exec /usr/bin/startxfce4
