#!/bin/sh
# codex - the codex template's `codex` command: npm's bin/codex.js (which
# runs the native binary), given the environment E2B's templates promise.
# This Codex takes its API key from CODEX_API_KEY (or `codex login`) and
# its base URL from its configuration (openai_base_url), not from
# OPENAI_API_KEY and OPENAI_BASE_URL, so those are passed on here: the key
# as CODEX_API_KEY unless that is set, the URL as `-c openai_base_url=`
# (a command's own -c comes later and wins).
if [ -z "${CODEX_API_KEY:-}" ] && [ -n "${OPENAI_API_KEY:-}" ]; then
  CODEX_API_KEY=$OPENAI_API_KEY
  export CODEX_API_KEY
fi
js=/usr/local/lib/node_modules/@openai/codex/bin/codex.js
if [ -n "${OPENAI_BASE_URL:-}" ]; then
  exec node "$js" -c "openai_base_url=$OPENAI_BASE_URL" "$@"
fi
exec node "$js" "$@"
