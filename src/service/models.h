/*
 * models.h - the model providers the agent loop talks to (models.c).
 *
 * The operator configures them through the daemon's environment, never
 * the API, with the conventions of the providers' own SDKs:
 *
 *   Anthropic's Messages API     ANTHROPIC_API_KEY, ANTHROPIC_BASE_URL
 *   (models named "claude...")   (default https://api.anthropic.com)
 *   OpenAI-compatible chat       OPENAI_API_KEY, OPENAI_BASE_URL
 *   completions (other names)    (default https://api.openai.com/v1)
 *
 * A provider is on when its key or its base URL is set.  Its base URL is
 * the operator's, so it is trusted (a local model on loopback is fine):
 * requests still go through the outbound guard (http and https only,
 * the name resolved once and the connection tied to that address, no
 * redirects, no proxy), with every range opened.
 *
 * Conversations are given in Anthropic's shapes (messages of text,
 * tool_use and tool_result blocks), which the OpenAI provider
 * translates; replies come back in them too.
 */
#ifndef SBX_SERVICE_MODELS_H
#define SBX_SERVICE_MODELS_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "../common/error.h"
#include "outbound.h"

#define SBX_MODEL_REPLY_MAX (8u << 20)   /* bytes of a provider's answer */
#define SBX_MODEL_NAME_MAX 128

struct sbx_provider {
  bool on;
  char base[SBX_OUTBOUND_URL_MAX];       /* no trailing '/' */
  char key[512];                         /* "" when none */
};

struct sbx_models {
  struct sbx_provider anthropic, openai;
  struct sbx_outbound trusted;           /* every range open: the operator's URLs */
};

/* Read the providers from the environment. */
void sbx_models_from_env (struct sbx_models *m);
/* The provider that serves MODEL ("anthropic", "openai"), NULL when none. */
const char *sbx_models_provider (const struct sbx_models *m, const char *model);

struct sbx_model_request {
  const char *model;
  const char *system;                    /* may be NULL */
  json_t *messages;                      /* Anthropic's shapes (borrowed) */
  json_t *tools;                         /* [{name, description, input_schema}] (borrowed) */
  uint32_t max_tokens;                   /* of the reply */
  uint32_t timeout_ms;
  const volatile bool *cancel;           /* the request stops when it becomes true; may be NULL */
};

struct sbx_model_reply {
  json_t *content;                       /* [{type:"text", text} | {type:"tool_use", id, name, input}] */
  char stop_reason[32];                  /* end_turn, tool_use, max_tokens, ... */
  int64_t input_tokens, output_tokens;
};

/* One model turn.  Fails with a message fit for the tenant (the provider's
   status and error, or why there was no answer; never the key) and kind
   SBX_E_UNAVAILABLE. */
int sbx_model_call (const struct sbx_models *m, const struct sbx_model_request *rq, struct sbx_model_reply *out,
                    struct sbx_err *err);

#endif
