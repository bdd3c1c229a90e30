/*
 * test_agent.c - tests of src/core/agent.c: the daemon reading a hostile
 * sandbox agent.
 *
 * A thread plays the agent on one end of a socketpair and sends what a
 * compromised sandbox could: entries without a path, the same entry again
 * and again, repeated tags, endless process lists and listings, huge
 * arguments, oversized or NUL-carrying names, malformed frames, a file
 * larger than announced, and nothing at all (or one byte at a time).  The
 * daemon's side must end each call with the right error, keep no more
 * than its bounds, and leak nothing: the test command runs this program
 * under ASan, UBSan and LeakSanitizer.  No root; a few seconds.
 *
 *   gcc -std=c17 -D_GNU_SOURCE -Wall -Wextra -O1 -g -fsanitize=address,undefined -Isrc \
 *     -o build/test_agent tests/unit/test_agent.c src/core/agent.c src/common/proto.c \
 *     src/common/log.c src/common/error.c src/common/util.c -lpthread && build/test_agent
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "core/agent.h"

#include "check.h"

/* ------------------------------------------------------------ the agent */

typedef void (*play_fn) (int fd);

struct peer {
  int fd;
  play_fn play;
  pthread_t th;
};

static void *
peer_main (void *arg)
{
  struct peer *p = arg;
  p->play (p->fd);
  return NULL;
}

/* A connection whose far end plays PLAY in a thread; returns the near end. */
static int
agent (struct peer *p, play_fn play)
{
  int sv[2];
  if (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
    abort ();
  p->fd = sv[1];
  p->play = play;
  if (pthread_create (&p->th, NULL, peer_main, p) != 0)
    abort ();
  return sv[0];
}

/* Hang up the near end and wait for the agent to notice. */
static void
done (struct peer *p, int fd)
{
  shutdown (fd, SHUT_RDWR);
  close (fd);
  pthread_join (p->th, NULL);
  close (p->fd);
}

static int
send_entry (int fd, const char *path, const char *name, uint64_t size)
{
  struct sbx_msg m;
  sbx_msg_init (&m, SBX_EV_ENTRY);
  if (name)
    sbx_msg_put_str (&m, SBX_T_NAME, name);
  if (path)
    sbx_msg_put_str (&m, SBX_T_PATH, path);
  sbx_msg_put_str (&m, SBX_T_OWNER, "user");
  sbx_msg_put_u32 (&m, SBX_T_TYPE, SBX_FT_FILE);
  sbx_msg_put_u64 (&m, SBX_T_SIZE, size);
  int r = sbx_msg_send (fd, &m);
  sbx_msg_free (&m);
  return r;
}

/* Wait until the daemon hangs up (what it sends is ignored). */
static void
until_hangup (int fd)
{
  char buf[256];
  while (read (fd, buf, sizeof buf) > 0)
    ;
}

static void
play_good_entry (int fd)
{
  send_entry (fd, "/home/user/a.txt", "a.txt", 5);
  sbx_msg_send_ok (fd);
  until_hangup (fd);
}

static void
play_entries_without_path (int fd)
{
  for (int i = 0; i < 1000; i++)
    if (send_entry (fd, NULL, "no-path", 1) < 0)
      return;
  sbx_msg_send_ok (fd);
  until_hangup (fd);
}

static void
play_same_entry_forever (int fd)
{
  while (send_entry (fd, "/x", "x", 1) == 0)
    ;
}

static void
play_repeated_tags (int fd)
{
  struct sbx_msg m;
  sbx_msg_init (&m, SBX_EV_ENTRY);
  for (int i = 0; i < 200; i++)
    {
      sbx_msg_put_str (&m, SBX_T_PATH, "/first");
      sbx_msg_put_str (&m, SBX_T_NAME, "first");
      sbx_msg_put_str (&m, SBX_T_LINK, "target");
    }
  sbx_msg_send (fd, &m);
  sbx_msg_free (&m);
  sbx_msg_send_ok (fd);
  until_hangup (fd);
}

static void
play_endless_listing (int fd)
{
  char path[64];
  for (unsigned i = 0;; i++)
    {
      snprintf (path, sizeof path, "/d/%u", i);
      if (send_entry (fd, path, path + 3, i) < 0)
        return;
    }
}

static void
play_endless_procs (int fd)
{
  for (uint32_t pid = 1;; pid++)
    {
      struct sbx_msg m;
      sbx_msg_init (&m, SBX_EV_PROC);
      sbx_msg_put_u32 (&m, SBX_T_PID, pid);
      sbx_msg_put_str (&m, SBX_T_ARG, "sleep");
      sbx_msg_put_str (&m, SBX_T_ARG, "1000");
      sbx_msg_put_str (&m, SBX_T_TAG, "t");
      int r = sbx_msg_send (fd, &m);
      sbx_msg_free (&m);
      if (r < 0)
        return;
    }
}

static void
play_huge_procs (int fd)
{
  size_t n = 512u << 10;
  char *arg = malloc (n);
  memset (arg, 'a', n);
  for (uint32_t pid = 1;; pid++)
    {
      struct sbx_msg m;
      sbx_msg_init (&m, SBX_EV_PROC);
      sbx_msg_put_u32 (&m, SBX_T_PID, pid);
      sbx_msg_put (&m, SBX_T_ARG, arg, n);
      int r = sbx_msg_send (fd, &m);
      sbx_msg_free (&m);
      if (r < 0)
        break;
    }
  free (arg);
}

static void
play_silent (int fd)
{
  until_hangup (fd);
}

/* A frame of 1000 bytes, announced, then sent one byte every 20 ms. */
static void
play_trickle (int fd)
{
  uint8_t hdr[5] = { 0xe8, 0x03, 0, 0, SBX_EV_ENTRY };
  for (size_t i = 0; i < sizeof hdr; i++)
    if (write (fd, hdr + i, 1) != 1)
      return;
  for (int i = 0; i < 999; i++)
    {
      usleep (20000);
      if (write (fd, "x", 1) != 1)
        return;
    }
  until_hangup (fd);
}

static void
play_malformed (int fd)
{
  uint8_t hdr[5] = { 0, 0, 0, 0, SBX_EV_OK }; /* length 0: not even a type */
  if (write (fd, hdr, sizeof hdr) == (ssize_t) sizeof hdr)
    until_hangup (fd);
}

static void
play_oversized_frame (int fd)
{
  uint8_t hdr[5] = { 0xff, 0xff, 0xff, 0x7f, SBX_EV_DATA };
  if (write (fd, hdr, sizeof hdr) == (ssize_t) sizeof hdr)
    until_hangup (fd);
}

static void
play_hangup (int fd)
{
  send_entry (fd, "/a", "a", 1);
  shutdown (fd, SHUT_WR);
  until_hangup (fd);
}

static void
play_error (int fd)
{
  sbx_msg_send_error (fd, ENOENT, "/nowhere: %s", strerror (ENOENT));
  until_hangup (fd);
}

static void
play_long_name (int fd)
{
  char *name = malloc (5001);
  memset (name, 'n', 5000);
  name[5000] = '\0';
  send_entry (fd, "/a", name, 1);
  free (name);
  sbx_msg_send_ok (fd);
  until_hangup (fd);
}

static void
play_nul_in_path (int fd)
{
  struct sbx_msg m;
  sbx_msg_init (&m, SBX_EV_ENTRY);
  sbx_msg_put (&m, SBX_T_PATH, "/a\0b", 4);
  sbx_msg_put_str (&m, SBX_T_NAME, "a");
  sbx_msg_send (fd, &m);
  sbx_msg_free (&m);
  sbx_msg_send_ok (fd);
  until_hangup (fd);
}

/* A READ whose entry says 2 MiB. */
static void
play_big_file (int fd)
{
  send_entry (fd, "/big", "big", 2u << 20);
  until_hangup (fd);
}

/* A READ whose entry says 10 bytes, and data that never ends. */
static void
play_growing_file (int fd)
{
  static uint8_t chunk[SBX_PROTO_CHUNK];
  send_entry (fd, "/small", "small", 10);
  for (;;)
    {
      struct sbx_msg m;
      sbx_msg_init (&m, SBX_EV_DATA);
      sbx_msg_put (&m, SBX_T_DATA, chunk, sizeof chunk);
      int r = sbx_msg_send (fd, &m);
      sbx_msg_free (&m);
      if (r < 0)
        return;
    }
}

static void
play_data_first (int fd)
{
  struct sbx_msg m;
  sbx_msg_init (&m, SBX_EV_DATA);
  sbx_msg_put (&m, SBX_T_DATA, "xx", 2);
  sbx_msg_send (fd, &m);
  sbx_msg_free (&m);
  sbx_msg_send_ok (fd);
  until_hangup (fd);
}

static void
play_small_file (int fd)
{
  send_entry (fd, "/small", "small", 5);
  struct sbx_msg m;
  sbx_msg_init (&m, SBX_EV_DATA);
  sbx_msg_put (&m, SBX_T_DATA, "hello", 5);
  sbx_msg_send (fd, &m);
  sbx_msg_free (&m);
  sbx_msg_send_ok (fd);
  until_hangup (fd);
}

/* An entry with metadata fields: KEY NUL VALUE each. */
static void
entry_with_meta (int fd, const char *const *fields, const size_t *lens, size_t n)
{
  struct sbx_msg m;
  sbx_msg_init (&m, SBX_EV_ENTRY);
  sbx_msg_put_str (&m, SBX_T_PATH, "/m");
  sbx_msg_put_str (&m, SBX_T_NAME, "m");
  for (size_t i = 0; i < n; i++)
    sbx_msg_put (&m, SBX_T_META, fields[i], lens[i]);
  sbx_msg_send (fd, &m);
  sbx_msg_free (&m);
  sbx_msg_send_ok (fd);
  until_hangup (fd);
}

static void
play_good_meta (int fd)
{
  const char *f[] = { "author\0ada", "empty\0" };
  size_t l[] = { 10, 6 };
  entry_with_meta (fd, f, l, 2);
}

static void
play_meta_without_value (int fd)
{
  const char *f[] = { "author" };
  size_t l[] = { 6 };
  entry_with_meta (fd, f, l, 1);
}

static void
play_meta_empty_key (int fd)
{
  const char *f[] = { "\0v" };
  size_t l[] = { 2 };
  entry_with_meta (fd, f, l, 1);
}

static void
play_meta_long_value (int fd)
{
  static char big[2000];
  memset (big, 'v', sizeof big);
  big[1] = '\0';
  const char *f[] = { big };
  size_t l[] = { sizeof big };
  entry_with_meta (fd, f, l, 1);
}

static void
play_too_much_meta (int fd)
{
  const char *f[SBX_META_MAX + 1];
  size_t l[SBX_META_MAX + 1];
  for (size_t i = 0; i <= SBX_META_MAX; i++)
    {
      f[i] = "k\0v";
      l[i] = 3;
    }
  entry_with_meta (fd, f, l, SBX_META_MAX + 1);
}

/* ------------------------------------------------------------ tests */

static bool
has (const struct sbx_err *err, const char *text)
{
  bool yes = strstr (err->msg, text) != NULL;
  if (!yes)
    fprintf (stderr, "  error was: %s\n", err->msg);
  return yes;
}

static int
one_entry_call (play_fn play, struct sbx_agent_one *one, struct sbx_err *err)
{
  struct peer p;
  int fd = agent (&p, play);
  memset (one, 0, sizeof *one);
  int r = sbx_agent_answer (fd, "sbx_test", &sbx_agent_plain, sbx_agent_one_entry, one, err);
  done (&p, fd);
  return r;
}

static void
test_one_entry (void)
{
  struct sbx_agent_one one;
  struct sbx_err err;

  CHECK (one_entry_call (play_good_entry, &one, &err) == 0);
  CHECK (one.have && one.en.path && strcmp (one.en.path, "/home/user/a.txt") == 0);
  CHECK (one.en.name && strcmp (one.en.name, "a.txt") == 0 && one.en.size == 5 && one.en.type == SBX_FT_FILE);
  sbx_entry_free (&one.en);

  /* every frame would have leaked its strings before: each is refused */
  CHECK (one_entry_call (play_entries_without_path, &one, &err) < 0);
  CHECK (sbx_err_kind (&err) == SBX_E_INTERNAL && has (&err, "sandbox agent sent a frame without its path"));
  CHECK (!one.have && one.en.name == NULL);
  sbx_entry_free (&one.en);

  /* the same entry again and again: a handful of frames, then the end */
  CHECK (one_entry_call (play_same_entry_forever, &one, &err) < 0);
  CHECK (sbx_err_kind (&err) == SBX_E_INTERNAL && has (&err, "more than 16 frames before its answer"));
  sbx_entry_free (&one.en);

  /* repeated tags in one frame: the first counts, nothing is lost */
  CHECK (one_entry_call (play_repeated_tags, &one, &err) == 0);
  CHECK (one.en.path && strcmp (one.en.path, "/first") == 0 && one.en.link && strcmp (one.en.link, "target") == 0);
  sbx_entry_free (&one.en);

  CHECK (one_entry_call (play_long_name, &one, &err) < 0);
  CHECK (sbx_err_kind (&err) == SBX_E_INTERNAL && has (&err, "sent a name of 5000 bytes"));
  sbx_entry_free (&one.en);

  CHECK (one_entry_call (play_nul_in_path, &one, &err) < 0);
  CHECK (sbx_err_kind (&err) == SBX_E_INTERNAL && has (&err, "sent a path with a NUL byte"));
  sbx_entry_free (&one.en);

  /* the agent's own errors keep their errno */
  CHECK (one_entry_call (play_error, &one, &err) < 0);
  CHECK (err.code == ENOENT && sbx_err_kind (&err) == SBX_E_NOT_FOUND && has (&err, "/nowhere"));
  sbx_entry_free (&one.en);

  CHECK (one_entry_call (play_hangup, &one, &err) < 0);
  CHECK (sbx_err_kind (&err) == SBX_E_STOPPED && has (&err, "closed the connection"));
  sbx_entry_free (&one.en);

  CHECK (one_entry_call (play_malformed, &one, &err) < 0);
  CHECK (sbx_err_kind (&err) == SBX_E_INTERNAL && has (&err, "malformed frame"));
  sbx_entry_free (&one.en);

  CHECK (one_entry_call (play_oversized_frame, &one, &err) < 0);
  CHECK (sbx_err_kind (&err) == SBX_E_INTERNAL && has (&err, "malformed frame"));
  sbx_entry_free (&one.en);

  /* metadata: KEY NUL VALUE, within bounds, or the entry is refused */
  CHECK (one_entry_call (play_good_meta, &one, &err) == 0);
  CHECK (one.en.n_meta == 2 && strcmp (one.en.meta[0].key, "author") == 0
         && strcmp (one.en.meta[0].value, "ada") == 0 && strcmp (one.en.meta[1].key, "empty") == 0
         && one.en.meta[1].value[0] == '\0');
  sbx_entry_free (&one.en);
  play_fn bad_meta[] = { play_meta_without_value, play_meta_empty_key, play_meta_long_value };
  for (size_t i = 0; i < sizeof bad_meta / sizeof bad_meta[0]; i++)
    {
      CHECK (one_entry_call (bad_meta[i], &one, &err) < 0);
      CHECK (sbx_err_kind (&err) == SBX_E_INTERNAL && has (&err, "malformed metadata entry"));
      CHECK (one.en.meta == NULL);
      sbx_entry_free (&one.en);
    }
  CHECK (one_entry_call (play_too_much_meta, &one, &err) < 0);
  CHECK (sbx_err_kind (&err) == SBX_E_INTERNAL && has (&err, "more than 64 metadata entries"));
  sbx_entry_free (&one.en);
}

static void
test_lists (void)
{
  struct peer p;
  struct sbx_err err;

  int fd = agent (&p, play_endless_procs);
  struct sbx_agent_procs procs = { 0 };
  CHECK (sbx_agent_answer (fd, "sbx_test", &sbx_agent_listing, sbx_agent_collect_proc, &procs, &err) < 0);
  done (&p, fd);
  CHECK (sbx_err_kind (&err) == SBX_E_INTERNAL && has (&err, "listed more than 16384 processes"));
  CHECK (procs.n == SBX_AGENT_PROCS_MAX);
  CHECK (procs.n && procs.v[0].pid == 1 && procs.v[0].argv && strcmp (procs.v[0].argv[1], "1000") == 0
         && procs.v[0].argv[2] == NULL && strcmp (procs.v[0].tag, "t") == 0);
  sbx_proc_list_free (procs.v, procs.n);

  fd = agent (&p, play_huge_procs);
  memset (&procs, 0, sizeof procs);
  CHECK (sbx_agent_answer (fd, "sbx_test", &sbx_agent_listing, sbx_agent_collect_proc, &procs, &err) < 0);
  done (&p, fd);
  CHECK (sbx_err_kind (&err) == SBX_E_INTERNAL && has (&err, "process list larger than 16 MiB"));
  CHECK (procs.n < 32);
  sbx_proc_list_free (procs.v, procs.n);

  fd = agent (&p, play_endless_listing);
  struct sbx_agent_entries list = { 0 };
  CHECK (sbx_agent_answer (fd, "sbx_test", &sbx_agent_listing, sbx_agent_collect_entry, &list, &err) < 0);
  done (&p, fd);
  CHECK (sbx_err_kind (&err) == SBX_E_TOO_LARGE && has (&err, "more than 100000 entries"));
  CHECK (list.n == SBX_AGENT_LIST_MAX && list.bytes <= SBX_AGENT_LIST_BYTES);
  CHECK (list.n && strcmp (list.v[list.n - 1].path, "/d/99999") == 0);
  sbx_entries_free (list.v, list.n);

  /* entries without a path in a listing are refused too */
  fd = agent (&p, play_entries_without_path);
  memset (&list, 0, sizeof list);
  CHECK (sbx_agent_answer (fd, "sbx_test", &sbx_agent_listing, sbx_agent_collect_entry, &list, &err) < 0);
  done (&p, fd);
  CHECK (sbx_err_kind (&err) == SBX_E_INTERNAL && list.n == 0);
  sbx_entries_free (list.v, list.n);
}

static double
now_s (void)
{
  return (double) sbx_now_ns () / 1e9;
}

static void
test_deadlines (void)
{
  struct peer p;
  struct sbx_err err;
  const struct sbx_agent_bounds quick = { 300, 0, SBX_AGENT_FRAMES_MAX };

  /* a silent agent: the call ends at its deadline */
  int fd = agent (&p, play_silent);
  double t0 = now_s ();
  struct sbx_agent_one one = { 0 };
  CHECK (sbx_agent_answer (fd, "sbx_test", &quick, sbx_agent_one_entry, &one, &err) < 0);
  double took = now_s () - t0;
  done (&p, fd);
  CHECK (sbx_err_kind (&err) == SBX_E_INTERNAL && has (&err, "sandbox agent did not answer in time"));
  CHECK (took >= 0.25 && took < 5);

  /* one byte at a time does not stretch it */
  fd = agent (&p, play_trickle);
  t0 = now_s ();
  CHECK (sbx_agent_answer (fd, "sbx_test", &quick, sbx_agent_one_entry, &one, &err) < 0);
  took = now_s () - t0;
  done (&p, fd);
  CHECK (has (&err, "did not answer in time") && took >= 0.25 && took < 5);

  /* nor does it for a single frame of a stream */
  fd = agent (&p, play_trickle);
  struct sbx_msg m;
  sbx_msg_init (&m, 0);
  t0 = now_s ();
  CHECK (sbx_agent_recv (fd, "sbx_test", sbx_now_ns () + 200000000ull, &m, &err) < 0);
  took = now_s () - t0;
  sbx_msg_free (&m);
  done (&p, fd);
  CHECK (has (&err, "did not answer in time") && took >= 0.15 && took < 5);
  CHECK (!one.have);

  /* frames that arrive in time are fine */
  fd = agent (&p, play_good_entry);
  CHECK (sbx_agent_answer (fd, "sbx_test", &quick, sbx_agent_one_entry, &one, &err) == 0 && one.have);
  done (&p, fd);
  sbx_entry_free (&one.en);
}

static int
collect (const void *d, size_t n, void *ud)
{
  struct {
    char *buf;
    size_t len;
  } *b = ud;
  char *nb = realloc (b->buf, b->len + n);
  if (nb == NULL)
    return -1;
  memcpy (nb + b->len, d, n);
  b->buf = nb;
  b->len += n;
  return 0;
}

static void
test_reads (void)
{
  struct peer p;
  struct sbx_err err;
  struct sbx_entry st;
  struct {
    char *buf;
    size_t len;
  } b = { 0 };

  /* larger than the caller's limit: refused, and the entry is not kept */
  int fd = agent (&p, play_big_file);
  CHECK (sbx_agent_read_begin (fd, "sbx_test", 1u << 20, &st, &err) < 0);
  done (&p, fd);
  CHECK (sbx_err_kind (&err) == SBX_E_TOO_LARGE && has (&err, "larger than 1048576 bytes"));
  CHECK (st.path == NULL && st.name == NULL && st.owner == NULL);

  /* an entry that lies about the size: the data stops at the limit */
  fd = agent (&p, play_growing_file);
  CHECK (sbx_agent_read_begin (fd, "sbx_test", 1u << 20, &st, &err) == 0 && st.size == 10);
  sbx_entry_free (&st);
  CHECK (sbx_agent_read_data (fd, "sbx_test", 1u << 20, collect, &b, &err) < 0);
  done (&p, fd);
  CHECK (sbx_err_kind (&err) == SBX_E_TOO_LARGE && b.len <= 1u << 20);
  free (b.buf);
  b.buf = NULL;
  b.len = 0;

  fd = agent (&p, play_data_first);
  CHECK (sbx_agent_read_begin (fd, "sbx_test", 0, &st, &err) < 0);
  done (&p, fd);
  CHECK (sbx_err_kind (&err) == SBX_E_INTERNAL && has (&err, "sent a file without its entry") && st.path == NULL);

  fd = agent (&p, play_small_file);
  CHECK (sbx_agent_read_begin (fd, "sbx_test", 0, &st, &err) == 0);
  CHECK (sbx_agent_read_data (fd, "sbx_test", 0, collect, &b, &err) == 0);
  done (&p, fd);
  CHECK (st.path && strcmp (st.path, "/small") == 0 && b.len == 5 && memcmp (b.buf, "hello", 5) == 0);
  sbx_entry_free (&st);
  free (b.buf);
}

static void
test_fs_events (void)
{
  struct sbx_err err;
  struct sbx_msg m;
  int type;
  char *name = NULL;
  sbx_msg_init (&m, SBX_EV_FSEVENT);
  sbx_msg_put_str (&m, SBX_T_NAME, "dir/new.txt");
  sbx_msg_put_u32 (&m, SBX_T_TYPE, SBX_FS_CREATE);
  CHECK (sbx_agent_fs_event (&m, "sbx_test", &type, &name, &err) == 0 && type == SBX_FS_CREATE && name
         && strcmp (name, "dir/new.txt") == 0);
  free (name);
  sbx_msg_free (&m);

  sbx_msg_init (&m, SBX_EV_FSEVENT);
  sbx_msg_put_str (&m, SBX_T_NAME, "x");
  sbx_msg_put_u32 (&m, SBX_T_TYPE, 77);
  name = NULL;
  CHECK (sbx_agent_fs_event (&m, "sbx_test", &type, &name, &err) < 0 && name == NULL);
  CHECK (has (&err, "unknown type 77"));
  sbx_msg_free (&m);

  char *big = malloc (SBX_AGENT_STR_MAX + 2);
  memset (big, 'b', SBX_AGENT_STR_MAX + 1);
  big[SBX_AGENT_STR_MAX + 1] = '\0';
  sbx_msg_init (&m, SBX_EV_FSEVENT);
  sbx_msg_put_str (&m, SBX_T_NAME, big);
  sbx_msg_put_u32 (&m, SBX_T_TYPE, SBX_FS_WRITE);
  CHECK (sbx_agent_fs_event (&m, "sbx_test", &type, &name, &err) < 0 && name == NULL);
  CHECK (sbx_err_kind (&err) == SBX_E_INTERNAL && has (&err, "sent a name of 4097 bytes"));
  sbx_msg_free (&m);
  free (big);
}

int
main (void)
{
  signal (SIGPIPE, SIG_IGN);
  /* the violations are logged: keep them out of the output */
  sbx_log_set_level (SBX_LOG_ERROR);
  test_one_entry ();
  test_lists ();
  test_deadlines ();
  test_reads ();
  test_fs_events ();
  printf ("agent: %d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
