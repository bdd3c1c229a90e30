/*
 * cli.h - `sbx`, the users' command line: what its commands share.
 *
 * sbx speaks the daemon's E2B/SandBase dialect (docs/api.md) over libcurl
 * and prints human tables, or the daemon's JSON with --json.  Each command
 * is a function `int cmd_NAME (struct cli *, int argc, char **argv)` that
 * returns sbx's exit code; a failure prints one line on stderr where it is
 * found (cli_fail) and returns one of the codes below.  docs/cli.md is the
 * user's description.
 */
#ifndef SBX_CLI_H
#define SBX_CLI_H

#include <curl/curl.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Exit codes.  `exec` and `shell` exit with the command's own code once it
   has started; these are sbx's own. */
enum {
  SBX_EXIT_OK = 0,
  SBX_EXIT_SERVER = 1,  /* the daemon answered with an error (4xx, 5xx) */
  SBX_EXIT_USAGE = 2,   /* bad arguments or configuration */
  SBX_EXIT_CONNECT = 3, /* the daemon could not be reached, or broke off */
  SBX_EXIT_LOCAL = 4,   /* a local file or terminal failed */
};

struct cli {
  char *url; /* the daemon's base URL, no trailing slash */
  char *key; /* its API key */
  bool json; /* --json: the daemon's JSON on stdout */
};

/* Print "sbx: MESSAGE" (control characters made blanks) on stderr and
   return CODE. */
int cli_fail (int code, const char *fmt, ...) __attribute__ ((format (printf, 2, 3)));
/* The same with SBX_EXIT_USAGE. */
int cli_usage (const char *fmt, ...) __attribute__ ((format (printf, 1, 2)));

/* Parse a command's options: the common getopt_long loop with sbx's own
   one-line errors.  Returns the option, -1 at the end, or '?' after
   printing the usage error (the caller returns SBX_EXIT_USAGE). */
struct option;
int cli_getopt (int argc, char **argv, const char *shortopts, const struct option *longopts, const char *cmd);

/* A sandbox id as the daemon's paths take it (letters, digits, - and _,
   at most 64): 0, or the usage error printed and SBX_EXIT_USAGE. */
int cli_check_id (const char *id);

/* Parse a non-negative decimal integer at most MAX; false if not one. */
bool cli_parse_uint (const char *s, uint64_t max, uint64_t *out);

/* ---- HTTP (http.c) ---- */

/* An easy handle for PATH (appended to the base URL) with the key, the
   user agent and timeouts set; *HDRS receives the header list to free
   after the transfer (curl_slist_free_all).  JSON_BODY adds the JSON
   content type. */
CURL *cli_easy (struct cli *c, const char *path, bool json_body, struct curl_slist **hdrs);

/* One request: METHOD on PATH with BODY (NULL: none) as JSON; the answer
   (bounded at 64 MiB) parsed into *OUT when OUT is given and the answer
   has a body (NULL otherwise).  Returns 0 for a 2xx answer, else prints
   the daemon's message and returns SBX_EXIT_SERVER (or SBX_EXIT_CONNECT
   when it could not be reached or answered something unreadable). */
int cli_call (struct cli *c, const char *method, const char *path, json_t *body, json_t **out);

/* A growing byte buffer, bounded. */
struct cli_buf {
  char *data;
  size_t len, cap, max;
  bool over; /* something was dropped past MAX */
};
int cli_buf_add (struct cli_buf *b, const void *p, size_t n);
void cli_buf_free (struct cli_buf *b);
/* curl write callback appending to a struct cli_buf (WRITEDATA). */
size_t cli_buf_write (char *p, size_t size, size_t n, void *ud);

/* The daemon's error message in an error answer of any dialect (E2B's
   {code, message}, seed 004's {error}, seed 002's {error: {message}}), or
   the start of the body, as one printable line in BUF. */
void cli_error_message (const char *body, size_t len, char *buf, size_t n);

/* After a transfer on H: 0 when it succeeded with 2xx; else the error
   printed (from RES or the answer in BODY) and the exit code. */
int cli_check_answer (CURL *h, CURLcode res, const struct cli_buf *body, const char *what);

/* base64 of N bytes (malloc'd), and its decoding into *OUT (malloc'd,
   length in *OUTLEN; -1 when it is not base64). */
char *cli_b64_encode (const void *p, size_t n);
int cli_b64_decode (const char *s, size_t n, unsigned char **out, size_t *outlen);

/* Write all of BUF to FD; -1 on error. */
int cli_write_all (int fd, const void *buf, size_t n);

/* ---- output (output.c) ---- */

/* Print J as indented JSON on stdout. */
void cli_print_json (const json_t *j);

/* A human table: columns of text, aligned. */
struct cli_table {
  size_t ncol, nrow, cap;
  char **cells; /* nrow * ncol, owned */
};
void cli_table_init (struct cli_table *t, size_t ncol, ...);
void cli_table_row (struct cli_table *t, ...); /* NCOL strings (NULL: "-") */
void cli_table_print (struct cli_table *t);
void cli_table_free (struct cli_table *t);

/* "2026-07-01T10:00:00.000Z" as "2026-07-01 10:00:00" in BUF. */
const char *cli_time (const char *rfc3339, char *buf, size_t n);
/* Milliseconds since the epoch of an RFC 3339 UTC time; -1 if not one. */
int64_t cli_time_ms (const char *rfc3339);

/* A progress bar on stderr for transfers of a known size. */
struct cli_progress {
  bool on;
  const char *label;
  uint64_t total, done;
  uint64_t start_ns, last_ns;
};
void cli_progress_start (struct cli_progress *p, const char *label, uint64_t total);
void cli_progress_update (struct cli_progress *p, uint64_t done, uint64_t total);
void cli_progress_end (struct cli_progress *p, bool ok);

/* ---- commands ---- */
int cmd_create (struct cli *c, int argc, char **argv);
int cmd_ls (struct cli *c, int argc, char **argv);
int cmd_info (struct cli *c, int argc, char **argv);
int cmd_kill (struct cli *c, int argc, char **argv);
int cmd_pause (struct cli *c, int argc, char **argv);
int cmd_resume (struct cli *c, int argc, char **argv);
int cmd_logs (struct cli *c, int argc, char **argv);
int cmd_exec (struct cli *c, int argc, char **argv);
int cmd_shell (struct cli *c, int argc, char **argv);
int cmd_cp (struct cli *c, int argc, char **argv);
int cmd_template (struct cli *c, int argc, char **argv);
int cmd_mcp (struct cli *c, int argc, char **argv);

#endif
