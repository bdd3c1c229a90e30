/*
 * agent.c - reading a sandbox agent's replies within bounds (see agent.h).
 */
#include "agent.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/log.h"
#include "../common/util.h"

const struct sbx_agent_bounds sbx_agent_plain = { SBX_AGENT_ANSWER_MS, 0, SBX_AGENT_FRAMES_MAX };
const struct sbx_agent_bounds sbx_agent_listing = { SBX_AGENT_ANSWER_MS, 0, 0 };

/* A violation of the protocol: kind internal, "sandbox agent ...". */
static int violation (struct sbx_err *err, const char *fmt, ...) __attribute__ ((format (printf, 2, 3)));

static int
violation (struct sbx_err *err, const char *fmt, ...)
{
  char what[256];
  va_list ap;
  va_start (ap, fmt);
  vsnprintf (what, sizeof what, fmt, ap);
  va_end (ap);
  return sbx_failk (err, SBX_E_INTERNAL, "sandbox agent %s", what);
}

static void
log_violation (const char *sandbox, const struct sbx_err *err)
{
  if (err->kind == SBX_E_INTERNAL)
    sbx_log_fields (SBX_LOG_WARN, "sandbox agent broke the protocol", "sandbox", sandbox ? sandbox : "-", "error",
                    err->msg, NULL);
}

static uint64_t
deadline_after (uint32_t ms)
{
  return ms ? sbx_now_ns () + (uint64_t) ms * 1000000ull : 0;
}

int
sbx_agent_recv (int fd, const char *sandbox, uint64_t deadline_ns, struct sbx_msg *m, struct sbx_err *err)
{
  int r = sbx_msg_recv_by (fd, m, deadline_ns);
  if (r == 1)
    return 0;
  if (r == 0)
    return sbx_failk (err, SBX_E_STOPPED, "sandbox agent closed the connection");
  if (errno == ETIMEDOUT)
    violation (err, "did not answer in time");
  else if (errno == EPROTO)
    violation (err, "sent a malformed frame");
  else
    return sbx_fail (err, errno, "read from sandbox agent");
  log_violation (sandbox, err);
  return -1;
}

int
sbx_agent_error (const struct sbx_msg *m, struct sbx_err *err)
{
  cleanup_free char *msg = sbx_msg_strdup (m, SBX_T_MSG);
  return sbx_failx (err, (int) sbx_msg_u32 (m, SBX_T_ERRNO, EIO), "%s", msg ? msg : "agent error");
}

int
sbx_agent_answer (int fd, const char *sandbox, const struct sbx_agent_bounds *b, sbx_agent_frame_fn fn, void *ud,
                  struct sbx_err *err)
{
  uint64_t deadline = deadline_after (b->answer_ms);
  uint32_t frames = 0;
  struct sbx_msg m;
  sbx_msg_init (&m, 0);
  int r = -1;
  for (;;)
    {
      uint64_t frame_deadline = deadline_after (b->frame_ms);
      if (deadline && (frame_deadline == 0 || deadline < frame_deadline))
        frame_deadline = deadline;
      if (sbx_agent_recv (fd, sandbox, frame_deadline, &m, err) < 0)
        break;
      if (m.type == SBX_EV_OK)
        {
          r = 0;
          break;
        }
      if (m.type == SBX_EV_ERROR)
        {
          sbx_agent_error (&m, err);
          break;
        }
      if (b->max_frames && ++frames > b->max_frames)
        {
          violation (err, "sent more than %u frames before its answer", b->max_frames);
          log_violation (sandbox, err);
          break;
        }
      if (fn && fn (&m, ud, err) < 0)
        {
          log_violation (sandbox, err);
          break;
        }
    }
  sbx_msg_free (&m);
  return r;
}

/* ---- fields ---- */

/* String field TAG of M into *OUT (NULL when absent and not REQUIRED):
   at most MAX bytes, no NUL byte.  *BYTES grows by its length. */
static int
get_str (const struct sbx_msg *m, uint8_t tag, const char *what, bool required, size_t max, char **out,
         uint64_t *bytes, struct sbx_err *err)
{
  const uint8_t *d;
  uint32_t l;
  *out = NULL;
  if (!sbx_msg_get (m, tag, &d, &l))
    return required ? violation (err, "sent a frame without its %s", what) : 0;
  if (l > max)
    return violation (err, "sent a %s of %u bytes (at most %zu)", what, l, max);
  if (memchr (d, '\0', l) != NULL)
    return violation (err, "sent a %s with a NUL byte", what);
  *out = strndup ((const char *) d, l);
  if (*out == NULL)
    return sbx_fail (err, ENOMEM, "read from sandbox agent");
  if (bytes)
    *bytes += l + 1;
  return 0;
}

void
sbx_entry_free (struct sbx_entry *en)
{
  free (en->name);
  free (en->path);
  free (en->owner);
  free (en->group);
  free (en->link);
  for (size_t i = 0; i < en->n_meta; i++)
    {
      free (en->meta[i].key);
      free (en->meta[i].value);
    }
  free (en->meta);
  memset (en, 0, sizeof *en);
}

void
sbx_entries_free (struct sbx_entry *en, size_t n)
{
  for (size_t i = 0; i < n; i++)
    sbx_entry_free (&en[i]);
  free (en);
}

/* The SBX_T_META fields of M into EN: each KEY NUL VALUE within the
   bounds of proto.h, at most SBX_META_MAX. */
static int
get_meta (const struct sbx_msg *m, struct sbx_entry *en, uint64_t *bytes, struct sbx_err *err)
{
  size_t pos = 0, cap = 0;
  uint8_t tag;
  const uint8_t *d;
  uint32_t l;
  int r;
  while ((r = sbx_msg_next (m, &pos, &tag, &d, &l)) == 1)
    {
      if (tag != SBX_T_META)
        continue;
      if (en->n_meta >= SBX_META_MAX)
        return violation (err, "sent more than %u metadata entries for one file", SBX_META_MAX);
      const uint8_t *nul = memchr (d, '\0', l);
      size_t klen = nul ? (size_t) (nul - d) : 0, vlen = nul ? l - klen - 1 : 0;
      if (nul == NULL || klen == 0 || klen > SBX_META_KEY_MAX || vlen > SBX_META_VALUE_MAX
          || memchr (nul + 1, '\0', vlen) != NULL)
        return violation (err, "sent a malformed metadata entry of %u bytes", l);
      struct sbx_meta *slot = sbx_grow (&en->meta, &en->n_meta, &cap, sizeof *en->meta);
      if (slot == NULL || (slot->key = strndup ((const char *) d, klen)) == NULL
          || (slot->value = strndup ((const char *) nul + 1, vlen)) == NULL)
        return sbx_fail (err, ENOMEM, "read from sandbox agent");
      if (bytes)
        *bytes += l + 1;
    }
  return r < 0 ? violation (err, "sent a malformed entry") : 0;
}

/* An EV_ENTRY into EN, which is overwritten: the caller frees what EN held
   before, and EN holds nothing when this fails. */
static int
parse_entry (const struct sbx_msg *m, struct sbx_entry *en, uint64_t *bytes, struct sbx_err *err)
{
  memset (en, 0, sizeof *en);
  if (get_str (m, SBX_T_PATH, "path", true, SBX_AGENT_STR_MAX, &en->path, bytes, err) < 0
      || get_str (m, SBX_T_NAME, "name", true, SBX_AGENT_STR_MAX, &en->name, bytes, err) < 0
      || get_str (m, SBX_T_OWNER, "owner", false, SBX_AGENT_STR_MAX, &en->owner, bytes, err) < 0
      || get_str (m, SBX_T_GROUP, "group", false, SBX_AGENT_STR_MAX, &en->group, bytes, err) < 0
      || get_str (m, SBX_T_LINK, "link target", false, SBX_AGENT_STR_MAX, &en->link, bytes, err) < 0
      || get_meta (m, en, bytes, err) < 0)
    {
      sbx_entry_free (en);
      return -1;
    }
  uint32_t type = sbx_msg_u32 (m, SBX_T_TYPE, SBX_FT_OTHER);
  en->type = type >= SBX_FT_FILE && type <= SBX_FT_OTHER ? (enum sbx_file_type) type : SBX_FT_OTHER;
  en->size = sbx_msg_u64 (m, SBX_T_SIZE, 0);
  en->mode = sbx_msg_u32 (m, SBX_T_MODE, 0);
  en->uid = sbx_msg_u32 (m, SBX_T_UID, 0);
  en->gid = sbx_msg_u32 (m, SBX_T_GID, 0);
  en->mtime_ns = sbx_msg_u64 (m, SBX_T_MTIME, 0);
  return 0;
}

int
sbx_agent_one_entry (const struct sbx_msg *m, void *ud, struct sbx_err *err)
{
  struct sbx_agent_one *o = ud;
  /* the first entry is the answer's; a later one is not news */
  if (m->type != SBX_EV_ENTRY || o->have)
    return 0;
  if (parse_entry (m, &o->en, NULL, err) < 0)
    return -1;
  o->have = true;
  return 0;
}

int
sbx_agent_collect_entry (const struct sbx_msg *m, void *ud, struct sbx_err *err)
{
  struct sbx_agent_entries *a = ud;
  if (m->type != SBX_EV_ENTRY)
    return 0;
  if (a->n >= SBX_AGENT_LIST_MAX)
    return sbx_failk (err, SBX_E_TOO_LARGE, "the listing has more than %u entries: list a smaller depth",
                      SBX_AGENT_LIST_MAX);
  struct sbx_entry en;
  if (parse_entry (m, &en, &a->bytes, err) < 0)
    return -1;
  if (a->bytes > SBX_AGENT_LIST_BYTES)
    {
      sbx_entry_free (&en);
      return sbx_failk (err, SBX_E_TOO_LARGE, "the listing is larger than %u MiB: list a smaller depth",
                        SBX_AGENT_LIST_BYTES >> 20);
    }
  struct sbx_entry *slot = sbx_grow (&a->v, &a->n, &a->cap, sizeof *a->v);
  if (slot == NULL)
    {
      sbx_entry_free (&en);
      return sbx_fail (err, ENOMEM, "read a listing");
    }
  *slot = en;
  return 0;
}

/* ---- processes ---- */

void
sbx_proc_list_free (struct sbx_proc_info *procs, size_t n)
{
  for (size_t i = 0; i < n; i++)
    {
      free (procs[i].tag);
      free (procs[i].cwd);
      for (char **a = procs[i].argv; a && *a; a++)
        free (*a);
      free (procs[i].argv);
    }
  free (procs);
}

static void
proc_free (struct sbx_proc_info *p)
{
  sbx_proc_list_free (p, 1);
}

int
sbx_agent_collect_proc (const struct sbx_msg *m, void *ud, struct sbx_err *err)
{
  struct sbx_agent_procs *a = ud;
  if (m->type != SBX_EV_PROC)
    return 0;
  if (a->n >= SBX_AGENT_PROCS_MAX)
    return violation (err, "listed more than %u processes", SBX_AGENT_PROCS_MAX);
  struct sbx_proc_info *p = calloc (1, sizeof *p);
  if (p == NULL)
    return sbx_fail (err, ENOMEM, "read a process list");
  p->pid = sbx_msg_u32 (m, SBX_T_PID, 0);
  p->pty = sbx_msg_u32 (m, SBX_T_PTY, 0) != 0;
  if (get_str (m, SBX_T_TAG, "tag", false, SBX_AGENT_STR_MAX, &p->tag, &a->bytes, err) < 0
      || get_str (m, SBX_T_CWD, "working directory", false, SBX_AGENT_STR_MAX, &p->cwd, &a->bytes, err) < 0)
    {
      proc_free (p);
      return -1;
    }
  size_t pos = 0, argc = 0;
  uint8_t t;
  const uint8_t *d;
  uint32_t l;
  while (sbx_msg_next (m, &pos, &t, &d, &l) == 1)
    argc += t == SBX_T_ARG;
  p->argv = calloc (argc + 1, sizeof *p->argv);
  if (p->argv == NULL)
    {
      proc_free (p);
      return sbx_fail (err, ENOMEM, "read a process list");
    }
  pos = argc = 0;
  while (sbx_msg_next (m, &pos, &t, &d, &l) == 1)
    {
      if (t != SBX_T_ARG)
        continue;
      /* an argument may be long (a script), but the list has a total */
      if ((p->argv[argc] = strndup ((const char *) d, l)) == NULL)
        {
          proc_free (p);
          return sbx_fail (err, ENOMEM, "read a process list");
        }
      a->bytes += l + 1;
      argc++;
    }
  a->bytes += sizeof *p;
  if (a->bytes > SBX_AGENT_PROCS_BYTES)
    {
      proc_free (p);
      return violation (err, "sent a process list larger than %u MiB", SBX_AGENT_PROCS_BYTES >> 20);
    }
  struct sbx_proc_info *slot = sbx_grow (&a->v, &a->n, &a->cap, sizeof *a->v);
  if (slot == NULL)
    {
      proc_free (p);
      return sbx_fail (err, ENOMEM, "read a process list");
    }
  *slot = *p;
  free (p);
  return 0;
}

/* ---- reads ---- */

int
sbx_agent_read_begin (int fd, const char *sandbox, uint64_t max, struct sbx_entry *st, struct sbx_err *err)
{
  memset (st, 0, sizeof *st);
  uint64_t deadline = deadline_after (SBX_AGENT_ANSWER_MS);
  struct sbx_msg m;
  sbx_msg_init (&m, 0);
  int r = -1;
  for (uint32_t frames = 0;; frames++)
    {
      if (frames > SBX_AGENT_FRAMES_MAX)
        {
          violation (err, "sent more than %u frames before a file's entry", SBX_AGENT_FRAMES_MAX);
          log_violation (sandbox, err);
          break;
        }
      if (sbx_agent_recv (fd, sandbox, deadline, &m, err) < 0)
        break;
      if (m.type == SBX_EV_ERROR)
        {
          sbx_agent_error (&m, err);
          break;
        }
      if (m.type == SBX_EV_OK || m.type == SBX_EV_DATA)
        {
          violation (err, "sent a file without its entry");
          log_violation (sandbox, err);
          break;
        }
      if (m.type != SBX_EV_ENTRY)
        continue;
      if (parse_entry (&m, st, NULL, err) < 0)
        {
          log_violation (sandbox, err);
          break;
        }
      if (max && st->size > max)
        {
          sbx_entry_free (st);
          sbx_failk (err, SBX_E_TOO_LARGE, "file is larger than %llu bytes", (unsigned long long) max);
          break;
        }
      r = 0;
      break;
    }
  sbx_msg_free (&m);
  return r;
}

struct read_data {
  uint64_t max, got;
  sbx_data_fn fn;
  void *ud;
};

static int
read_data_frame (const struct sbx_msg *m, void *ud, struct sbx_err *err)
{
  struct read_data *c = ud;
  const uint8_t *d;
  uint32_t l;
  if (m->type != SBX_EV_DATA || !sbx_msg_get (m, SBX_T_DATA, &d, &l))
    return 0;
  c->got += l;
  /* the file may have grown since its entry was sent */
  if (c->max && c->got > c->max)
    return sbx_failk (err, SBX_E_TOO_LARGE, "file is larger than %llu bytes", (unsigned long long) c->max);
  if (c->fn (d, l, c->ud) < 0)
    return sbx_failx (err, ECANCELED, "cancelled");
  return 0;
}

int
sbx_agent_read_data (int fd, const char *sandbox, uint64_t max, sbx_data_fn fn, void *ud, struct sbx_err *err)
{
  static const struct sbx_agent_bounds stream = { 0, SBX_AGENT_FRAME_MS, 0 };
  struct read_data c = { max, 0, fn, ud };
  return sbx_agent_answer (fd, sandbox, &stream, read_data_frame, &c, err);
}

/* ---- watches ---- */

int
sbx_agent_fs_event (const struct sbx_msg *m, const char *sandbox, int *type, char **name, struct sbx_err *err)
{
  uint32_t t = sbx_msg_u32 (m, SBX_T_TYPE, 0);
  if ((t < SBX_FS_CREATE || t > SBX_FS_CHMOD ? violation (err, "sent a file system event of unknown type %u", t)
                                              : get_str (m, SBX_T_NAME, "name", true, SBX_AGENT_STR_MAX, name, NULL,
                                                         err))
      < 0)
    {
      log_violation (sandbox, err);
      return -1;
    }
  *type = (int) t;
  return 0;
}
