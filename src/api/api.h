/*
 * api.h - what the files of the HTTP layer share: the server, the request
 * being read, the caller's organisation, the route table's types, the
 * dialects' error shapes, and the helpers that parse bodies and write
 * answers.
 *
 * One file per dialect translates requests into service and core calls
 * and results into its own shapes: sandbase.c (seed 001, E2B-compatible
 * /sandboxes), e2b.c (E2B's control-plane extras), e2b_envd.c (E2B's
 * in-sandbox agent protocol), interp.c (the code interpreter), seed002.c
 * (/api/sandbox), e2b_templates.c (E2B's template build API), events.c
 * (events and webhooks), files.c (uploads and
 * downloads), network.c (egress rules), v1.c (seed 004's /v1/sandboxes),
 * terminal.c (its WebSocket terminal), mcp.c (the MCP server), agents.c
 * (seed 000's agents and sessions).  routes.c is the one route table.
 */
#ifndef SBX_API_H
#define SBX_API_H

#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdbool.h>

#include "../core/sandbox.h"
#include "../service/service.h"
#include "../service/store.h"
#include "../service/webhook.h"
#include "server.h"

struct upload;
struct handlers;
struct resumer;
struct terminals;
struct relay;
struct proxy;

struct http_server {
  struct MHD_Daemon *mhd;
  struct sbx_engine *engine;
  struct sbx_store *store;
  struct sbx_webhooks *webhooks;
  struct sbx_outbound outbound; /* checks webhook URLs at registration */
  struct sbx_service *svc;
  const char *const *images;  /* seed 002's approved images, "ALIAS=TEMPLATE"; NULL: the defaults */
  char docs_dir[4096];
  char state_dir[4096];
  unsigned char envd_secret[32]; /* keys the sandboxes' envd access tokens */
  struct handlers *handlers;  /* the threads that run handlers (server.c) */
  struct resumer *resumer;    /* wakes streams whose pipe has data (server.c) */
  struct terminals *terminals; /* seed 004's open terminals (terminal.c) */
  uint32_t terminal_ttl_s;    /* how long a terminalUrl's token is good for */
  char domain[SBX_DOMAIN_MAX]; /* --domain as given (NAME[:PORT]), "" when none (proxy.c) */
  char domain_name[SBX_DOMAIN_MAX]; /* its NAME, lower case */
  bool tls;                   /* serving HTTPS */
  char *tls_cert, *tls_key;   /* their PEM text, held for libmicrohttpd */
  struct relay *relay;        /* upgraded connections to sandbox ports (proxy.c) */
  struct sbx_agents *agents;  /* seed 000's agents and sessions (agents.c) */
  char metrics_token[SBX_METRICS_TOKEN_MAX]; /* GET /metrics's Bearer token (metrics.c); "": not served here */
};

#define CALL_MAX_SEGS 8

struct request;
struct route;

/* One routed request. */
struct call {
  struct http_server *h;
  struct MHD_Connection *c;
  struct request *rq;
  const char *method;
  const char *arg[4];           /* the values of the pattern's ":name" segments, in order */
  char *seg[CALL_MAX_SEGS];     /* the path's segments */
  int n;
  bool have_rec;
  struct sbx_sandbox_rec rec;   /* with ROUTE_SANDBOX: the caller's sandbox arg[0] */
};

/* Where a request is: its headers and body arrive on one of
   libmicrohttpd's threads; its handler runs on a handler thread while the
   connection is suspended; the answer is queued back on libmicrohttpd's
   thread. */
enum request_phase {
  RQ_READING,
  RQ_RUNNING,
  RQ_ANSWERED,
};

struct request {
  struct http_server *h;
  struct MHD_Connection *c;
  const char *mhd_method, *mhd_url; /* libmicrohttpd's, valid for the request */
  char *body;
  size_t len, alloc;
  size_t body_max;       /* the route's limit */
  bool too_big;          /* the body passed body_max: 413 once it is in */
  bool no_room;          /* no room for it in memory now: 503 once it is in */
  bool drain;            /* refused from its headers; the answer waits for a small body */
  bool authed;
  bool envd;             /* an E2B envd call (E2b-Sandbox-Id header) */
  char signed_id[SBX_ID_MAX]; /* the sandbox of a signed download URL */
  struct sbx_org org;
  struct upload *upload; /* a multipart upload being streamed */
  char *stage;           /* upload bytes for the next handler job */
  size_t stage_len;
  int64_t start_ns;      /* when its headers were in, for the request log */
  char method[12], url[160];
  const char *route;     /* the pattern it matched, for the request log */
  char sandbox_id[SBX_ID_MAX]; /* the sandbox it named, for the request log */
  const struct dialect *dialect; /* whose shapes its answers take */
  unsigned status;       /* of its answer, for the request log */
  const struct route *r; /* its route, found from the headers */
  char path[1024];       /* the path, split into k.seg */
  struct call k;
  enum request_phase phase;
  bool dispatched;       /* its handler ran (or runs) */
  enum MHD_Result (*job) (struct request *rq); /* what a handler thread runs */
  struct MHD_Response *answer; /* queued by a handler thread */
  struct request *next_job;
  uint64_t terminal_seq; /* the terminal its 101 answer opens (terminal.c), 0: none */
  char *raw_url;         /* the request target as the client sent it, undecoded */
  struct proxy *proxy;   /* a request for a sandbox's port (proxy.c) */
  char host_id[SBX_ID_MAX], host_port[8]; /* the sandbox and port its Host names */
};

/* ---- dialects and routes ---- */

/* An API dialect: its table from error kind to HTTP status and its error
   body.  Every error answer of a request goes through its dialect. */
struct dialect {
  const char *name;
  unsigned status[SBX_E_INTERNAL + 1];
  unsigned bad_sandbox_id;  /* the status for a malformed sandbox id */
  json_t *(*error_body) (unsigned status, const char *msg);
  const char *unauthorized; /* the message of every 401, NULL: the service's */
};

extern const struct dialect dialect_sandbase; /* seed 001 and E2B: {code, message} */
extern const struct dialect dialect_seed002;  /* seed 002: {error: {code, message}} */
extern const struct dialect dialect_v1;       /* seed 004: {error: message} */

typedef enum MHD_Result (*route_fn) (struct call *k);

enum route_flags {
  ROUTE_PUBLIC = 1u << 0,   /* no API key */
  ROUTE_SANDBOX = 1u << 1,  /* arg[0] is a sandbox id the caller must own (else 404) */
  ROUTE_BIG_BODY = 1u << 2, /* a body carrying file contents (BIG_BODY_MAX, not JSON_BODY_MAX) */
  ROUTE_INLINE = 1u << 3,   /* never blocks: runs on libmicrohttpd's thread */
  ROUTE_SIGNED = 1u << 4,   /* with ROUTE_PUBLIC: a signed URL, checked by route_check_of's function */
};

/* METHOD ("*" for any) and PATTERN: literal segments, ":name" for one
   segment, and a final "*" for any rest. */
struct route {
  const char *method;
  const char *pattern;
  route_fn fn;
  unsigned flags;
  const struct dialect *dialect;
};

/* The check of a ROUTE_SIGNED route's own credential (a signed URL),
   made from its headers before its body is read; false after answering. */
typedef bool (*route_check_fn) (struct call *k, enum MHD_Result *ret);
route_check_fn route_check_of (const struct route *r);

extern const struct route api_routes[];
extern const size_t api_n_routes;

/* The dialect of the request this thread is answering (the router sets
   the request's, and the thread that runs its handler knows the request). */
const struct dialect *current_dialect (void);

/* An error answer in the current dialect: STATUS and a message. */
enum MHD_Result send_error (struct MHD_Connection *c, unsigned status, const char *fmt, ...)
    __attribute__ ((format (printf, 3, 4)));
/* A failure ERR in the current dialect: its kind decides the status. */
enum MHD_Result send_fail (struct MHD_Connection *c, const struct sbx_err *err);

/* answers */
enum MHD_Result send_json (struct MHD_Connection *c, unsigned status, json_t *j);
/* The same with CONTENT_TYPE (NULL: application/json; "text/event-stream":
   the JSON as one SSE message event) and a header NAME: VALUE (NULL:
   none). */
enum MHD_Result send_json_with (struct MHD_Connection *c, unsigned status, json_t *j, const char *content_type,
                                const char *name, const char *value);
enum MHD_Result send_empty (struct MHD_Connection *c, unsigned status);
/* Queue R (which this takes over) with STATUS, remembering STATUS for the
   request log.  On a handler thread the answer is kept and queued once
   the connection is back on libmicrohttpd's thread. */
enum MHD_Result queue_response (struct MHD_Connection *c, unsigned status, struct MHD_Response *r);
/* 200 with a body streamed from the read end FD of a pipe (chunked), which
   this takes over; the writer is a thread of the caller's.  The arguments
   after CONTENT_TYPE are extra header name, value pairs ending with
   NULL. */
enum MHD_Result send_pipe (struct MHD_Connection *c, int fd, const char *content_type, ...);

/* bodies and parameters */
json_t *body_object (struct MHD_Connection *c, struct request *rq, enum MHD_Result *ret);
int opt_int (struct MHD_Connection *c, json_t *o, const char *key, long long lo, long long hi, long long *out,
             enum MHD_Result *ret);
int opt_string (struct MHD_Connection *c, json_t *o, const char *key, const char **out, enum MHD_Result *ret);
int opt_bool (struct MHD_Connection *c, json_t *o, const char *key, bool *out, enum MHD_Result *ret);
const char *query (struct MHD_Connection *c, const char *key);
json_t *text_json (const char *s, size_t n);
json_t *entry_json (const struct sbx_entry *en);
bool valid_id (const char *id);

/* The record of sandbox ID if it belongs to the caller's organisation;
   otherwise answers 404 and returns false. */
bool own_sandbox (struct http_server *h, struct MHD_Connection *c, struct request *rq, const char *id,
                  struct sbx_sandbox_rec *rec, enum MHD_Result *ret);
/* The caller's organisation from its API key (Authorization: Bearer or
   X-API-Key); false after answering 401. */
bool authenticate (struct http_server *h, struct MHD_Connection *c, struct request *rq, enum MHD_Result *ret);
/* The value of "KEY" in an object of string values as a NULL-terminated
   "K=V" list in *OUT (NULL when absent); -1 after answering 400. */
int env_list (struct MHD_Connection *c, json_t *o, const char *key, char ***out, enum MHD_Result *ret);

/* ---- route handlers (routes.c lists them) ---- */

/* metrics.c: GET /metrics, the operator's */
enum MHD_Result metrics_route (struct call *k);
/* server.c: GET /openapi.yaml and GET /health */
enum MHD_Result send_openapi (struct call *k);
enum MHD_Result send_health (struct call *k);
/* sandbase.c */
enum MHD_Result sandbase_create (struct call *k);
enum MHD_Result sandbase_list (struct call *k);
enum MHD_Result sandbase_get (struct call *k);
enum MHD_Result sandbase_kill (struct call *k);
enum MHD_Result sandbase_pause (struct call *k);
enum MHD_Result sandbase_connect (struct call *k);
enum MHD_Result sandbase_timeout (struct call *k);
enum MHD_Result sandbase_refresh (struct call *k);
enum MHD_Result sandbase_metrics (struct call *k);
enum MHD_Result sandbase_metrics_many (struct call *k);
enum MHD_Result sandbase_exec (struct call *k);
enum MHD_Result sandbase_exec_stream (struct call *k);
enum MHD_Result sandbase_processes (struct call *k);
enum MHD_Result sandbase_attach (struct call *k);
enum MHD_Result sandbase_process_action (struct call *k);
enum MHD_Result sandbase_filesystem (struct call *k);
enum MHD_Result sandbase_download (struct call *k);
enum MHD_Result sandbase_network (struct call *k);
/* e2b.c */
enum MHD_Result e2b_list_v2 (struct call *k);
enum MHD_Result e2b_logs_v2 (struct call *k);
enum MHD_Result e2b_logs_v1 (struct call *k);
/* e2b_templates.c: E2B's template build API */
enum MHD_Result e2bt_request (struct call *k);
enum MHD_Result e2bt_list (struct call *k);
enum MHD_Result e2bt_get (struct call *k);
enum MHD_Result e2bt_patch (struct call *k);
enum MHD_Result e2bt_delete (struct call *k);
enum MHD_Result e2bt_alias (struct call *k);
enum MHD_Result e2bt_file_link (struct call *k);
enum MHD_Result e2bt_file_put (struct call *k);
bool e2bt_upload_check (struct call *k, enum MHD_Result *ret);
enum MHD_Result e2bt_build_start (struct call *k);
enum MHD_Result e2bt_build_status (struct call *k);
enum MHD_Result e2bt_build_logs (struct call *k);
enum MHD_Result e2bt_tags_assign (struct call *k);
enum MHD_Result e2bt_tags_remove (struct call *k);
enum MHD_Result e2bt_tags_list (struct call *k);
/* E2B's snapshots and forks (e2b_snapshots.c) */
enum MHD_Result e2b_snapshot_create (struct call *k);
enum MHD_Result e2b_snapshot_list (struct call *k);
enum MHD_Result e2b_template_delete (struct call *k);
enum MHD_Result e2b_fork (struct call *k);
/* events.c */
enum MHD_Result e2b_volume_create (struct call *k);
enum MHD_Result e2b_volume_list (struct call *k);
enum MHD_Result e2b_volume_get (struct call *k);
enum MHD_Result e2b_volume_delete (struct call *k);
enum MHD_Result e2b_volume_path (struct call *k);
enum MHD_Result e2b_volume_dir (struct call *k);
enum MHD_Result e2b_volume_file (struct call *k);
bool e2b_volume_token_check (struct call *k, enum MHD_Result *ret);

enum MHD_Result events_route (struct call *k);
/* seed002.c */
enum MHD_Result seed002_create (struct call *k);
enum MHD_Result seed002_list (struct call *k);
enum MHD_Result seed002_get (struct call *k);
enum MHD_Result seed002_destroy (struct call *k);
enum MHD_Result seed002_run (struct call *k);
enum MHD_Result seed002_run_get (struct call *k);
enum MHD_Result seed002_runs (struct call *k);
/* egress.c */
enum MHD_Result egress_log_route (struct call *k);
/* agents.c: seed 000's agents and sessions */
enum MHD_Result agents_create (struct call *k);
enum MHD_Result agents_list (struct call *k);
enum MHD_Result agents_get (struct call *k);
enum MHD_Result agents_delete (struct call *k);
enum MHD_Result sessions_create (struct call *k);
enum MHD_Result sessions_list (struct call *k);
enum MHD_Result sessions_get (struct call *k);
enum MHD_Result sessions_delete (struct call *k);
enum MHD_Result session_events_post (struct call *k);
enum MHD_Result session_events_get (struct call *k);

/* the MCP server (mcp.c): POST, GET and DELETE /mcp */
extern const struct dialect dialect_mcp; /* JSON-RPC errors */
enum MHD_Result mcp_route (struct call *k);

enum mcp_message_kind {
  MCP_MSG_INVALID,
  MCP_MSG_REQUEST,
  MCP_MSG_NOTIFICATION,
  MCP_MSG_RESPONSE,
};

/* One JSON-RPC message of a client, as parsed from a request body. */
struct mcp_message {
  enum mcp_message_kind kind;
  json_t *root;        /* the parsed body (owned), or NULL */
  json_t *id;          /* a string or integer id, borrowed from ROOT, or NULL */
  const char *method;  /* requests and notifications */
  json_t *params;      /* an object, or NULL */
  int code;            /* when the parse fails: the JSON-RPC error code */
  char error[256];     /* ... and its message */
};

/* Parse the LEN bytes of BODY (untrusted) into *M: 0, or -1 with M->code
   and M->error (M->kind says whether it is still a request or a
   notification, with params that are not an object).  Free with
   mcp_message_free whatever it returned. */
int mcp_message_parse (const char *body, size_t len, struct mcp_message *m);
void mcp_message_free (struct mcp_message *m);

/* A sandbox object: the seed's fields and E2B's; WITH_TOKEN adds the
   envd access token (create and connect answers). */
json_t *sandbox_object (struct http_server *h, const struct sbx_sandbox_rec *r, bool with_token);
/* The same for a sandbox just created, whose ingress settings and volume
   mounts the create knows (none unless HAS_INGRESS, HAS_MOUNTS): they are
   not read back from the store. */
json_t *sandbox_object_created (struct http_server *h, const struct sbx_sandbox_rec *r, bool has_ingress,
                                bool has_mounts);

/* the E2B dialect of the sandbox agent (e2b_envd.c) */
int e2b_load_secret (struct http_server *h, struct sbx_err *err);
void e2b_access_token (struct http_server *h, const char *id, char out[65]);
bool e2b_is_envd (struct MHD_Connection *c);
/* E2B's autoResume: resume paused sandbox INFO when it was created with
   it and paused with its memory; whether it runs now. */
bool e2b_auto_resume (struct http_server *h, const struct sbx_info *info);
/* A GET or POST /files with an E2B signature (signed URL): 1 when it is
   valid (ID gets the sandbox whose access token signed it), -1 when it is
   not (answered: 401 "invalid signature" or "signature is already
   expired"), 0 when the request is no signed file request. */
int e2b_signed_file (struct http_server *h, struct MHD_Connection *c, const char *method, const char *url,
                     char id[SBX_ID_MAX], enum MHD_Result *ret);
/* Check an envd call's sandbox and access token; fills ID or answers. */
bool e2b_envd_check (struct http_server *h, struct MHD_Connection *c, char id[SBX_ID_MAX], enum MHD_Result *ret);
enum MHD_Result e2b_envd (struct http_server *h, struct MHD_Connection *c, struct request *rq, const char *method,
                          const char *url);

/* the code interpreter (interp.c): envd calls to port 49999 of
   sandbox ID, already authenticated */
enum MHD_Result interp_request (struct http_server *h, struct MHD_Connection *c, struct request *rq,
                                const char *method, const char *url, const char *id);


/* ---- sandbox ports by host name (proxy.c) ---- */

/* Wait for a descriptor while the connection is suspended: the resumer
   thread resumes it once FD has EVENTS (EPOLLIN, EPOLLOUT).  The waiter
   does not own FD.  False when the server is stopping. */
struct conn_waiter;
struct conn_waiter *conn_waiter_new (struct http_server *h, struct MHD_Connection *c, int fd);
bool conn_wait (struct conn_waiter *w, uint32_t events);
void conn_waiter_free (struct conn_waiter *w);

/* A request whose Host is PORT-ID.DOMAIN: for envd's and the code
   interpreter's ports it becomes an envd call (true, the E2b-Sandbox-*
   headers set from the name, RET untouched); for other ports the proxy
   takes it (false, *RET its first answer).  True with nothing done for
   any other Host. */
bool proxy_begin (struct request *rq, enum MHD_Result *ret);
/* The rest of a proxied request: body data (SIZE), its end (*SIZE 0),
   and the answer. */
enum MHD_Result proxy_step (struct request *rq, const char *data, size_t *size);
void proxy_request_done (struct request *rq);
int proxy_start (struct http_server *h, struct sbx_err *err);
void proxy_stop (struct http_server *h);
/* The URL of PORT of sandbox ID ("{port}" when PORT is 0), for a request
   on C; NULL without --domain.  malloc'd. */
char *proxy_url (struct http_server *h, struct MHD_Connection *c, const char *id, unsigned port);
/* The token of a sandbox's non-public ports (E2B's trafficAccessToken). */
void e2b_traffic_token (struct http_server *h, const char *id, char out[65]);

/* uploads and downloads (files.c) */
bool upload_wanted (const char *method, char **seg, int n);
bool envd_upload_wanted (struct MHD_Connection *c, const char *method, const char *url);
enum MHD_Result upload_begin (struct http_server *h, struct MHD_Connection *c, struct request *rq, const char *id);
enum MHD_Result upload_feed (struct request *rq, const char *data, size_t size);
enum MHD_Result upload_end (struct http_server *h, struct MHD_Connection *c, struct request *rq);
void upload_free (struct request *rq);
enum MHD_Result download_file (struct http_server *h, struct MHD_Connection *c, struct request *rq, const char *id);
/* 200 with the content of reader R (taken over), streamed, as an
   attachment named FILENAME of SIZE bytes. */
enum MHD_Result send_download (struct MHD_Connection *c, struct sbx_file_reader *r, const char *filename,
                               uint64_t size);
/* A file's content collected in memory (a sbx_data_fn, UD a struct
   read_buf), for reads whose size the caller bounds; DATA stays
   NUL-terminated room-wise (one byte more than LEN is allocated). */
struct read_buf {
  char *data;
  size_t len;
};
int read_into (const void *d, size_t n, void *ud);

/* network.c */
struct sbx_net_policy;
/* The egress policy a body asks for (create, or PUT .../network when
   ALWAYS).  *GIVEN false: nothing asked, the template decides.
   *ALLOW_INTERNET: 0 not said, >0 true, <0 false. */
int body_network (struct MHD_Connection *c, json_t *b, bool always, struct sbx_net_policy *p, int *allow_internet,
                  bool *given, enum MHD_Result *ret);
/* E2B's network.allowPublicTraffic and network.maskRequestHost of a
   create body (*GIVEN: either was); -1 after answering 400. */
int body_ingress (struct MHD_Connection *c, json_t *b, struct sbx_ingress *in, bool *given, enum MHD_Result *ret);
/* Add "network" and "allowInternetAccess" of live sandbox ID to OBJ. */
void network_object (struct http_server *h, const char *id, json_t *obj);
/* The same, reading its ingress settings only when WITH_INGRESS (false:
   it has none). */
void network_object_with (struct http_server *h, const char *id, json_t *obj, bool with_ingress);
enum MHD_Result network_sandbox (struct http_server *h, struct MHD_Connection *c, const char *id, struct request *rq);

/* ---- seed 004 (v1.c, terminal.c) ---- */

/* The sandbox a /v1 request names (ID from its query or body): its record
   if it is the caller's; otherwise answers 400 (no id) or 404 and returns
   false. */
bool v1_sandbox (struct call *k, const char *id, struct sbx_sandbox_rec *rec, enum MHD_Result *ret);
/* v1.c's routes */
enum MHD_Result v1_sandboxes_post (struct call *k);
enum MHD_Result v1_sandboxes_get (struct call *k);
enum MHD_Result v1_sandboxes_delete (struct call *k);
enum MHD_Result v1_pause (struct call *k);
enum MHD_Result v1_resume (struct call *k);
enum MHD_Result v1_exec (struct call *k);
enum MHD_Result v1_code (struct call *k);
enum MHD_Result v1_file_write (struct call *k);
enum MHD_Result v1_file_read (struct call *k);
enum MHD_Result v1_file_list (struct call *k);
enum MHD_Result v1_file_delete (struct call *k);
enum MHD_Result v1_usage (struct call *k);
/* The terminalUrl of sandbox ID for the request K answers: a ws:// (or
   wss://) URL with a short-lived token for that sandbox only; NULL when
   none can be given (malloc'd). */
char *v1_terminal_url (struct call *k, const char *sandbox_id);
/* GET /v1/sandboxes/terminal?id=&token= (the WebSocket) and POST
   /v1/sandboxes/terminal {id} (a fresh terminalUrl) */
enum MHD_Result v1_terminal (struct call *k);
enum MHD_Result v1_terminal_new (struct call *k);
/* checkpoints and artifacts (v1_storage.c) */
enum MHD_Result v1_checkpoint_create (struct call *k);
enum MHD_Result v1_checkpoint_list (struct call *k);
enum MHD_Result v1_checkpoint_delete (struct call *k);
enum MHD_Result v1_artifacts_list (struct call *k);
enum MHD_Result v1_artifacts_delete (struct call *k);
enum MHD_Result v1_artifact_file (struct call *k);

#endif
