/*
 * http_internal.h - what the files of the HTTP layer share: the server,
 * the request being read, the caller's organisation, and the helpers that
 * parse bodies and write answers in the API's shapes.
 */
#ifndef SBX_DAEMON_HTTP_INTERNAL_H
#define SBX_DAEMON_HTTP_INTERNAL_H

#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdbool.h>

#include "../core/sandbox.h"
#include "server.h"
#include "../service/store.h"
#include "../service/webhook.h"

struct upload;

struct http_server {
  struct MHD_Daemon *mhd;
  struct sbx_engine *engine;
  struct sbx_store *store;
  struct sbx_webhooks *webhooks;
  pthread_mutex_t create_lock; /* the concurrent-sandbox check and create */
  char docs_dir[4096];
  char state_dir[4096];
  unsigned char envd_secret[32]; /* keys the sandboxes' envd access tokens */
};

struct request {
  char *body;
  size_t len;
  bool too_big;
  bool authed;
  bool envd;             /* an E2B envd call (E2b-Sandbox-Id header) */
  char signed_id[SBX_ID_MAX]; /* the sandbox of a signed download URL */
  struct sbx_org org;
  struct upload *upload; /* a multipart upload being streamed */
};

/* answers */
enum MHD_Result send_json (struct MHD_Connection *c, unsigned status, json_t *j);
enum MHD_Result send_error (struct MHD_Connection *c, unsigned status, const char *fmt, ...)
    __attribute__ ((format (printf, 3, 4)));
enum MHD_Result send_empty (struct MHD_Connection *c, unsigned status);
enum MHD_Result send_core_error (struct MHD_Connection *c, const struct sbx_err *err);
enum MHD_Result send_file_error (struct MHD_Connection *c, const struct sbx_err *err);
/* 200 with a body streamed from the read end FD of a pipe (chunked); the
   arguments after CONTENT_TYPE are extra header name, value pairs ending
   with NULL. */
enum MHD_Result send_pipe (struct MHD_Connection *c, int fd, const char *content_type, ...);
/* Run FN (ARG) in a detached thread; false when it cannot start. */
bool start_detached (void *(*fn) (void *), void *arg);

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
void free_strv (char **v);

/* The record of sandbox ID if it belongs to the caller's organisation;
   otherwise answers 404 and returns false. */
bool own_sandbox (struct http_server *h, struct MHD_Connection *c, struct request *rq, const char *id,
                  struct sbx_sandbox_rec *rec, enum MHD_Result *ret);

/* A sandbox object: the seed's fields and E2B's; WITH_TOKEN adds the
   envd access token (create and connect answers). */
json_t *sandbox_object (struct http_server *h, const struct sbx_sandbox_rec *r, bool with_token);

/* the E2B dialect (api_e2b.c) */
int e2b_load_secret (struct http_server *h, struct sbx_err *err);
void e2b_access_token (struct http_server *h, const char *id, char out[65]);
enum MHD_Result e2b_list_v2 (struct http_server *h, struct MHD_Connection *c, struct request *rq);
bool e2b_is_envd (struct MHD_Connection *c);
/* A GET or POST /files with a valid E2B signature (signed URL): fills ID
   with the sandbox whose access token signed it. */
bool e2b_signed_file (struct http_server *h, struct MHD_Connection *c, const char *method, const char *url,
                      char id[SBX_ID_MAX]);
/* Check an envd call's sandbox and access token; fills ID or answers. */
bool e2b_envd_check (struct http_server *h, struct MHD_Connection *c, char id[SBX_ID_MAX], enum MHD_Result *ret);
enum MHD_Result e2b_envd (struct http_server *h, struct MHD_Connection *c, struct request *rq, const char *method,
                          const char *url);

/* the code interpreter (api_interp.c): envd calls to port 49999 of
   sandbox ID, already authenticated */
enum MHD_Result interp_request (struct http_server *h, struct MHD_Connection *c, struct request *rq,
                                const char *method, const char *url, const char *id);

/* events and webhooks (api_events.c) */
enum MHD_Result api_events (struct http_server *h, struct MHD_Connection *c, struct request *rq, const char *method,
                            char **seg, int n);

/* uploads and downloads (api_files.c) */
bool upload_wanted (const char *method, char **seg, int n);
bool envd_upload_wanted (struct MHD_Connection *c, const char *method, const char *url);
enum MHD_Result upload_begin (struct http_server *h, struct MHD_Connection *c, struct request *rq, const char *id);
enum MHD_Result upload_feed (struct request *rq, const char *data, size_t size);
enum MHD_Result upload_end (struct http_server *h, struct MHD_Connection *c, struct request *rq);
void upload_free (struct request *rq);
enum MHD_Result download_file (struct http_server *h, struct MHD_Connection *c, struct request *rq, const char *id);

/* api_network.c */
struct sbx_net_policy;
/* The egress policy a body asks for (create, or PUT .../network when
   ALWAYS).  *GIVEN false: nothing asked, the template decides.
   *ALLOW_INTERNET: 0 not said, >0 true, <0 false. */
int body_network (struct MHD_Connection *c, json_t *b, bool always, struct sbx_net_policy *p, int *allow_internet,
                  bool *given, enum MHD_Result *ret);
/* Add "network" and "allowInternetAccess" of live sandbox ID to OBJ. */
void network_object (struct http_server *h, const char *id, json_t *obj);
enum MHD_Result network_sandbox (struct http_server *h, struct MHD_Connection *c, const char *id, struct request *rq);

#endif
