/*
 * terminal.c - seed 004's terminal: an interactive PTY shell in a sandbox
 * over a WebSocket, reached through the terminalUrl of the sandbox object.
 */
#include "api.h"

char *
v1_terminal_url (struct call *k, const char *sandbox_id)
{
  (void) k;
  (void) sandbox_id;
  return NULL;
}
