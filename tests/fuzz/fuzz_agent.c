/*
 * fuzz_agent.c - fuzz harness for what the daemon reads from a sandbox's
 * init agent: the frames of the agent protocol (src/common/proto.c) and
 * their decoding by the engine (src/core/sandbox.c: file entries, file
 * data, process lists, process events, watch events, errors), through the
 * engine's own calls.  A compromised sandbox controls every byte of these.
 *
 * The sandbox is fake_sandbox.h's: its agent answers every request with
 * the input's bytes as they are, then hangs up.  The first byte of an
 * input chooses the call (its value modulo the number of calls below),
 * the rest is the agent's answer.
 *
 * What it checks besides the sanitizers (LeakSanitizer included: a call
 * that returns must have freed or handed over everything): a call that
 * succeeds gives whole strings and lists, and no call waits forever.
 *
 *   make CC=clang B=build-clang fuzz && mkdir -p build/fuzz-corpus/agent
 *   build-clang/fuzz_agent -max_total_time=600 build/fuzz-corpus/agent tests/fuzz/corpus/agent
 */
#include "fake_sandbox.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

static pthread_mutex_t reply_lock = PTHREAD_MUTEX_INITIALIZER;
static uint8_t *reply;
static size_t reply_len;

/* The agent: the input's bytes, whatever was asked. */
static void
agent_replay (int fd, const struct sbx_msg *req, void *ud)
{
  (void) req;
  (void) ud;
  pthread_mutex_lock (&reply_lock);
  uint8_t *copy = malloc (reply_len ? reply_len : 1);
  size_t n = reply_len;
  if (copy)
    memcpy (copy, reply, n);
  pthread_mutex_unlock (&reply_lock);
  if (copy)
    sbx_write_full (fd, copy, n);
  free (copy);
}

static struct sbx_engine *engine;

static void
check_entry (const struct sbx_entry *en)
{
  const char *s[] = { en->name, en->path, en->owner, en->group, en->link };
  for (size_t i = 0; i < sizeof s / sizeof s[0]; i++)
    if (s[i] && strlen (s[i]) > SBX_PROTO_MAX_FRAME)
      abort ();
}

static int
on_data (const void *data, size_t len, void *ud)
{
  size_t *total = ud;
  if (len && data == NULL)
    abort ();
  *total += len;
  return 0;
}

static int
on_event (const struct sbx_proc_event *ev, void *ud)
{
  size_t *n = ud;
  if (ev->len && ev->data == NULL)
    abort ();
  return ++*n > 100000 ? -1 : 0;
}

static int
on_fs_event (int type, const char *name, void *ud)
{
  (void) type;
  size_t *n = ud;
  if (name == NULL)
    abort ();
  (void) strlen (name);
  return ++*n > 100000 ? -1 : 0;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  if (engine == NULL)
    {
      sbx_log_set_level (SBX_LOG_ERROR);
      engine = fake_engine (fake_dir (), agent_replay, NULL);
    }
  if (size == 0)
    return 0;
  pthread_mutex_lock (&reply_lock);
  free (reply);
  reply_len = size - 1;
  reply = malloc (reply_len ? reply_len : 1);
  if (reply)
    memcpy (reply, data + 1, reply_len);
  else
    reply_len = 0;
  pthread_mutex_unlock (&reply_lock);

  struct sbx_err err;
  struct sbx_entry en;
  size_t n = 0;
  switch (data[0] % 12)
    {
    case 0:
      if (sbx_file_stat (engine, FAKE_ID, "/home/user/f", NULL, &en, &err) == 0)
        {
          check_entry (&en);
          sbx_entry_free (&en);
        }
      break;
    case 1:
      if (sbx_file_mkdir (engine, FAKE_ID, "/home/user/d", "root", SBX_FILE_F_PARENTS, &en, &err) == 0)
        {
          check_entry (&en);
          sbx_entry_free (&en);
        }
      break;
    case 2:
      if (sbx_file_move (engine, FAKE_ID, "/a", "/b", NULL, &en, &err) == 0)
        {
          check_entry (&en);
          sbx_entry_free (&en);
        }
      break;
    case 3:
      sbx_file_remove (engine, FAKE_ID, "/a", NULL, &err);
      break;
    case 4:
      {
        struct sbx_entry *v = NULL;
        if (sbx_file_list (engine, FAKE_ID, "/home/user", NULL, 2, &v, &n, &err) == 0)
          {
            for (size_t i = 0; i < n; i++)
              check_entry (&v[i]);
            sbx_entries_free (v, n);
          }
        break;
      }
    case 5:
      {
        memset (&en, 0, sizeof en);
        if (sbx_file_read (engine, FAKE_ID, "/home/user/f", NULL, 1u << 20, &en, on_data, &n, &err) == 0)
          check_entry (&en);
        sbx_entry_free (&en);
        break;
      }
    case 6:
      {
        struct sbx_proc_info *ps = NULL;
        if (sbx_proc_list (engine, FAKE_ID, &ps, &n, &err) == 0)
          {
            for (size_t i = 0; i < n; i++)
              for (char **a = ps[i].argv; a && *a; a++)
                (void) strlen (*a);
            sbx_proc_list_free (ps, n);
          }
        break;
      }
    case 7:
      {
        const char *argv[] = { "sh", "-c", "true", NULL };
        struct sbx_exec_opts o = { .argv = argv, .stdin_open = true };
        sbx_exec (engine, FAKE_ID, &o, on_event, &n, &err);
        break;
      }
    case 8:
      sbx_attach (engine, FAKE_ID, 42, 0, on_event, &n, &err);
      break;
    case 9:
      {
        struct sbx_watcher *w;
        if (sbx_watch_open (engine, FAKE_ID, "/home/user", NULL, true, &w, &err) == 0)
          sbx_watch_run (w, 0, on_fs_event, &n, &err);
        break;
      }
    case 10:
      if (sbx_file_write (engine, FAKE_ID, "/home/user/w", NULL, "hello", 5, &en, &err) == 0)
        {
          check_entry (&en);
          sbx_entry_free (&en);
        }
      break;
    default:
      sbx_proc_input (engine, FAKE_ID, 42, "in", 2, &err);
      sbx_proc_signal (engine, FAKE_ID, 42, 15, &err);
      break;
    }
  fake_quiesce ();
  return 0;
}
