/*
 * interp.c - reaching a sandbox's code interpreter server (see interp.h).
 *
 * The server listens on the sandbox's own port 49999; sbx_port_connect
 * opens a connection from inside the sandbox's network namespace, so it
 * works whatever the sandbox's network policy (no internet, a deny-all
 * egress list).  If nothing listens, the server's supervisor has gone
 * (the supervisor restarts the server itself when only the server is
 * killed): the template's start command runs again (sbx_builds_started),
 * and the connection is retried every 50 ms, the start command again every
 * 5 s, until it succeeds or SBX_INTERP_START_WAIT_MS have passed.  A
 * second supervisor started by a race exits at once (start.sh's lock).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "../common/util.h"
#include "../core/sandbox.h"
#include "builds.h"
#include "interp.h"
#include "service.h"

#define RETRY_NS (50ull * 1000000ull)
#define RESTART_EVERY_NS (5000ull * 1000000ull)
#define CONNECT_MS 5000

/* sbx_port_connect, waited for: a blocking socket, or -1 with ERR
   (ECONNREFUSED when nothing listens). */
static int
connect_port (struct sbx_engine *e, const char *sid, int *fd, struct sbx_err *err)
{
  int s = sbx_port_connect (e, sid, SBX_INTERP_PORT, err);
  if (s < 0)
    return -1;
  struct pollfd p = { s, POLLOUT, 0 };
  int r;
  do
    r = poll (&p, 1, CONNECT_MS);
  while (r < 0 && errno == EINTR);
  int soerr = r == 0 ? ETIMEDOUT : 0;
  socklen_t len = sizeof soerr;
  if (r < 0)
    soerr = errno;
  else if (r > 0 && getsockopt (s, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
    soerr = errno;
  int flags = fcntl (s, F_GETFL);
  if (soerr == 0 && (flags < 0 || fcntl (s, F_SETFL, flags & ~O_NONBLOCK) < 0))
    soerr = errno;
  if (soerr)
    {
      close (s);
      return sbx_fail (err, soerr, "connect to port %d", SBX_INTERP_PORT);
    }
  *fd = s;
  return 0;
}

int
sbx_interp_connect (struct sbx_service *svc, const char *sid, int *fd, struct sbx_err *err)
{
  struct sbx_engine *e = sbx_service_engine (svc);
  uint64_t start = sbx_now_ns (), last_start = 0;
  for (;;)
    {
      if (connect_port (e, sid, fd, err) == 0)
        return 0;
      enum sbx_err_kind k = sbx_err_kind (err);
      if (k == SBX_E_PAUSED || k == SBX_E_STOPPED || k == SBX_E_NOT_FOUND)
        {
          err->kind = SBX_E_UNAVAILABLE;
          return -1;
        }
      char why[sizeof err->msg];
      snprintf (why, sizeof why, "%s", err->msg);
      if (err->code != ECONNREFUSED)
        return sbx_failk (err, SBX_E_UNAVAILABLE, "cannot reach the code interpreter: %s", why);
      uint64_t now = sbx_now_ns ();
      if (now - start > (uint64_t) SBX_INTERP_START_WAIT_MS * 1000000ull)
        return sbx_failk (err, SBX_E_UNAVAILABLE, "the code interpreter did not start within %u s",
                          SBX_INTERP_START_WAIT_MS / 1000);
      if (last_start == 0 || now - last_start > RESTART_EVERY_NS)
        {
          last_start = now;
          struct sbx_info info;
          if (sbx_get_info (e, sid, &info, err) < 0)
            {
              err->kind = SBX_E_UNAVAILABLE;
              return -1;
            }
          char tmpl[sizeof info.template_name];
          snprintf (tmpl, sizeof tmpl, "%s", info.template_name);
          sbx_info_free (&info);
          if (!sbx_builds_has_start (svc, tmpl))
            return sbx_failk (err, SBX_E_UNAVAILABLE, "this sandbox has no code interpreter (template %s)", tmpl);
          if (sbx_builds_started (svc, sid, tmpl, err) < 0)
            {
              snprintf (why, sizeof why, "%s", err->msg);
              return sbx_failk (err, SBX_E_UNAVAILABLE, "cannot start the code interpreter: %s", why);
            }
        }
      struct timespec ts = { 0, (long) RETRY_NS };
      nanosleep (&ts, NULL);
    }
}
