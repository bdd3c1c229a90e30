/*
 * interp.h - the code interpreter: a server inside the sandbox.
 *
 * A template that has a code interpreter (code_interpreter) runs its
 * server on port 49999 inside every sandbox: templates/files/interpreter/
 * server.py, started by the template's start command, which speaks E2B's
 * code interpreter protocol over real Jupyter kernels and owns the
 * contexts.  The daemon only forwards the SDK's calls to it
 * (src/api/interp.c); this module reaches it, starting it again when
 * nothing listens (a user killed its supervisor too).  It keeps no state
 * of its own, so contexts outlive a daemon restart.
 */
#ifndef SBX_SERVICE_INTERP_H
#define SBX_SERVICE_INTERP_H

#include "../common/error.h"

struct sbx_service;

#define SBX_INTERP_PORT 49999
#define SBX_INTERP_START_WAIT_MS 30000u /* for a restarted server to listen */

/* A connection (blocking socket) to sandbox SID's interpreter server.
   When nothing listens, the template's start command runs again and the
   server is waited for up to SBX_INTERP_START_WAIT_MS.  Fails with kind
   SBX_E_UNAVAILABLE and a message for the client: the template has no
   code interpreter, the sandbox is paused or gone, or the server did not
   come up. */
int sbx_interp_connect (struct sbx_service *svc, const char *sid, int *fd, struct sbx_err *err);

#endif
