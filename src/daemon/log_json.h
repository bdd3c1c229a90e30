/*
 * log_json.h - the daemon's JSON-lines sink for the logger (log.h):
 * `sbxd serve --log-format json` writes one JSON object per record,
 *
 *   {"time":"2026-12-01T07:45:43.123Z","level":"info","msg":"listening","addr":"127.0.0.1:49982"}
 *
 * with the record's fields as string members after them (a field named
 * time, level or msg, or named twice, is dropped).
 */
#ifndef SBX_DAEMON_LOG_JSON_H
#define SBX_DAEMON_LOG_JSON_H

#include "../common/log.h"

/* A sink for sbx_log_set_sink; writes to sbx_log_get_fd(); UD unused. */
void sbx_log_json_sink (const struct sbx_log_record *rec, void *ud);

#endif
