/*
 * files.h - file requests of the agent (see files.c).
 */
#ifndef SBX_INIT_FILES_H
#define SBX_INIT_FILES_H

#include "../common/proto.h"

/* Serve one FILE request on CONN; runs in a forked worker. */
void sbx_files_serve (int conn, struct sbx_msg *req);

#endif
