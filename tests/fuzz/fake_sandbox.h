/*
 * fake_sandbox.h - a sandbox engine for fuzz harnesses: the real engine
 * (core/sandbox.c, included here to build its structures) holding one
 * "running" sandbox, FAKE_ID, whose init agent is played by threads of
 * this process: each connection to the sandbox's agent socket gets the
 * request frame read and handed to the harness's function, which answers
 * on the connection; then the requests that follow (file data) are read
 * and dropped until the daemon's side closes.
 *
 * There are no namespaces, cgroups, disks or processes: a create fails
 * (no template directory), and a harness must not ask for what acts on
 * the sandbox's processes or cgroup (destroy, pause, resume, metrics).
 * Include this file once, before anything else of the core.
 */
#include "core/sandbox.c"

#include "fuzz_net.h"

#define FAKE_ID "sbx_fuzz0sandbox"

/* Answer request REQ on FD (the daemon's side of one connection). */
typedef void (*fake_agent_fn) (int fd, const struct sbx_msg *req, void *ud);

static fake_agent_fn fake_agent;
static void *fake_agent_ud;
static int fake_listen_fd = -1;

static void *
fake_conn_main (void *arg)
{
  int fd = (int) (intptr_t) arg;
  struct timeval tv = { 30, 0 };
  setsockopt (fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt (fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  struct sbx_msg req;
  sbx_msg_init (&req, 0);
  if (sbx_msg_recv (fd, &req) == 1)
    fake_agent (fd, &req, fake_agent_ud);
  shutdown (fd, SHUT_WR);
  char buf[65536];
  while (read (fd, buf, sizeof buf) > 0)
    ;
  sbx_msg_free (&req);
  close (fd);
  return NULL;
}

/* The connections' threads, joined by fake_quiesce: at the end of an
   input nothing of the agent's may still run, or LeakSanitizer's check
   after each input could see memory a thread holds as leaked. */
static pthread_mutex_t fake_threads_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_t fake_threads[1024];
static size_t fake_n_threads;

static void *
fake_accept_main (void *arg)
{
  (void) arg;
  for (;;)
    {
      int fd = accept4 (fake_listen_fd, NULL, NULL, SOCK_CLOEXEC);
      if (fd < 0)
        continue;
      pthread_t th;
      if (pthread_create (&th, NULL, fake_conn_main, (void *) (intptr_t) fd) != 0)
        {
          close (fd);
          continue;
        }
      pthread_mutex_lock (&fake_threads_lock);
      if (fake_n_threads < sizeof fake_threads / sizeof fake_threads[0])
        fake_threads[fake_n_threads++] = th;
      else
        pthread_detach (th);
      pthread_mutex_unlock (&fake_threads_lock);
    }
  return NULL;
}

/* Wait until the agent's connections so far have ended. */
static void
fake_quiesce (void)
{
  for (;;)
    {
      pthread_mutex_lock (&fake_threads_lock);
      if (fake_n_threads == 0)
        {
          pthread_mutex_unlock (&fake_threads_lock);
          return;
        }
      pthread_t th = fake_threads[--fake_n_threads];
      pthread_mutex_unlock (&fake_threads_lock);
      pthread_join (th, NULL);
    }
}

/* The engine, with FAKE_ID running and FN as its agent; DIR is a fresh
   directory for the agent's socket.  Aborts when it cannot be made. */
static struct sbx_engine *
fake_engine (const char *dir, fake_agent_fn fn, void *ud)
{
  fake_agent = fn;
  fake_agent_ud = ud;
  signal (SIGPIPE, SIG_IGN);
  fuzz_threads_begin ();
  struct sbx_engine *e = calloc (1, sizeof *e);
  struct sandbox *s = calloc (1, sizeof *s);
  if (e == NULL || s == NULL)
    abort ();
  e->init_fd = -1;
  pthread_mutex_init (&e->lock, NULL);
  pthread_cond_init (&e->cond, NULL);
  pthread_cond_init (&e->spare_cond, NULL);
  e->max_timeout_s = 86400;
  snprintf (e->state_dir, sizeof e->state_dir, "%s", dir);
  snprintf (e->sandboxes_dir, sizeof e->sandboxes_dir, "%s", dir);
  /* no template can be found: a create ends there */
  snprintf (e->template_dir, sizeof e->template_dir, "%s/no-templates", dir);

  snprintf (s->id, sizeof s->id, "%s", FAKE_ID);
  snprintf (s->template_name, sizeof s->template_name, "base");
  snprintf (s->default_user, sizeof s->default_user, "user");
  s->state = SBX_RUNNING;
  s->created_ms = sbx_wall_ms ();
  s->end_ms = s->created_ms + 3600 * 1000;
  s->timeout_s = 3600;
  s->refs = 1; /* never dropped: never freed */
  s->pidfd = s->disk_fd = s->agent_fd = s->idmap_fd = s->proc.sock = -1;
  /* its directory, DIR/FAKE_ID, is where the engine looks (sandbox_dir) */
  char sdir[PATH_MAX];
  snprintf (sdir, sizeof sdir, "%s/%s", dir, FAKE_ID);
  e->sandboxes_fd = open (dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
  e->list = s;
  id_index_add_locked (e, s);

  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  snprintf (sa.sun_path, sizeof sa.sun_path, "%s/agent.sock", sdir);
  unlink (sa.sun_path);
  fake_listen_fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  pthread_t th;
  if ((mkdir (sdir, 0700) < 0 && errno != EEXIST) || e->sandboxes_fd < 0 || fake_listen_fd < 0
      || bind (fake_listen_fd, (struct sockaddr *) &sa, sizeof sa) < 0
      || listen (fake_listen_fd, 128) < 0 || pthread_create (&th, NULL, fake_accept_main, NULL) != 0)
    {
      perror ("fake sandbox");
      abort ();
    }
  fuzz_threads_end ();
  return e;
}

/* A fresh directory under /dev/shm (memory: the store's syncs are free),
   /dev/shm/sbxd-fuzz-PID-XXXXXX, removed at exit; those of harnesses
   that died (a crash does not exit) go when the next one starts. */
static char fake_dir_path[64];

static void
fake_rm_rf (const char *path)
{
  char cmd[128];
  snprintf (cmd, sizeof cmd, "rm -rf '%s'", path);
  if (system (cmd) != 0)
    fprintf (stderr, "could not remove %s\n", path);
}

static void
fake_dir_remove (void)
{
  fake_rm_rf (fake_dir_path);
}

static const char *
fake_dir (void)
{
  DIR *d = opendir ("/dev/shm");
  struct dirent *de;
  while (d && (de = readdir (d)) != NULL)
    {
      int pid;
      char path[300];
      if (sscanf (de->d_name, "sbxd-fuzz-%d-", &pid) == 1 && pid > 0 && kill (pid, 0) < 0 && errno == ESRCH)
        {
          snprintf (path, sizeof path, "/dev/shm/%s", de->d_name);
          fake_rm_rf (path);
        }
    }
  if (d)
    closedir (d);
  snprintf (fake_dir_path, sizeof fake_dir_path, "/dev/shm/sbxd-fuzz-%d-XXXXXX", (int) getpid ());
  if (mkdtemp (fake_dir_path) == NULL)
    abort ();
  atexit (fake_dir_remove);
  return fake_dir_path;
}

/* Frames for answers. */
static void
fake_send (int fd, struct sbx_msg *m)
{
  sbx_msg_send (fd, m);
  sbx_msg_free (m);
}

static void
fake_send_entry (int fd, const char *name, const char *path, uint32_t type, uint64_t size)
{
  struct sbx_msg m;
  sbx_msg_init (&m, SBX_EV_ENTRY);
  sbx_msg_put_str (&m, SBX_T_NAME, name);
  sbx_msg_put_str (&m, SBX_T_PATH, path);
  sbx_msg_put_u32 (&m, SBX_T_TYPE, type);
  sbx_msg_put_u64 (&m, SBX_T_SIZE, size);
  sbx_msg_put_u32 (&m, SBX_T_MODE, 0644);
  sbx_msg_put_u32 (&m, SBX_T_UID, 1000);
  sbx_msg_put_u32 (&m, SBX_T_GID, 1000);
  sbx_msg_put_str (&m, SBX_T_OWNER, "user");
  sbx_msg_put_str (&m, SBX_T_GROUP, "user");
  sbx_msg_put_u64 (&m, SBX_T_MTIME, 1700000000000000000ull);
  fake_send (fd, &m);
}

static void
fake_send_type (int fd, uint8_t type)
{
  struct sbx_msg m;
  sbx_msg_init (&m, type);
  fake_send (fd, &m);
}

/* The answers of a well-behaved agent: what the daemon expects of each
   request, with small made-up contents. */
__attribute__ ((unused)) static void
fake_agent_canned (int fd, const struct sbx_msg *req, void *ud)
{
  (void) ud;
  struct sbx_msg m, in;
  switch (req->type)
    {
    case SBX_REQ_EXEC:
    case SBX_REQ_ATTACH:
      sbx_msg_init (&m, SBX_EV_START);
      sbx_msg_put_u32 (&m, SBX_T_PID, 42);
      fake_send (fd, &m);
      sbx_msg_init (&m, SBX_EV_STDOUT);
      sbx_msg_put (&m, SBX_T_DATA, "hello\n", 6);
      fake_send (fd, &m);
      sbx_msg_init (&m, SBX_EV_STDERR);
      sbx_msg_put (&m, SBX_T_DATA, "\x01\xff", 2);
      fake_send (fd, &m);
      sbx_msg_init (&m, SBX_EV_END);
      sbx_msg_put_u32 (&m, SBX_T_EXIT, 0);
      fake_send (fd, &m);
      return;
    case SBX_REQ_LIST:
      sbx_msg_init (&m, SBX_EV_PROC);
      sbx_msg_put_u32 (&m, SBX_T_PID, 42);
      sbx_msg_put_str (&m, SBX_T_TAG, "fuzz");
      sbx_msg_put_str (&m, SBX_T_CWD, "/home/user");
      sbx_msg_put_str (&m, SBX_T_ARG, "sh");
      sbx_msg_put_str (&m, SBX_T_ARG, "-c");
      fake_send (fd, &m);
      fake_send_type (fd, SBX_EV_OK);
      return;
    case SBX_REQ_WATCH:
      fake_send_type (fd, SBX_EV_OK);
      sbx_msg_init (&m, SBX_EV_FSEVENT);
      sbx_msg_put_str (&m, SBX_T_NAME, "new.txt");
      sbx_msg_put_u32 (&m, SBX_T_TYPE, SBX_FS_CREATE);
      fake_send (fd, &m);
      return;
    case SBX_REQ_FILE:
      break;
    default:
      fake_send_type (fd, SBX_EV_OK);
      return;
    }
  cleanup_free char *path = sbx_msg_strdup (req, SBX_T_PATH);
  const char *p = path && *path ? path : "/home/user/file";
  const char *slash = strrchr (p, '/');
  const char *name = slash && slash[1] ? slash + 1 : p;
  switch (sbx_msg_u32 (req, SBX_T_OP, 0))
    {
    case SBX_FILE_READ:
      fake_send_entry (fd, name, p, SBX_FT_FILE, 5);
      sbx_msg_init (&m, SBX_EV_DATA);
      sbx_msg_put (&m, SBX_T_DATA, "data\n", 5);
      fake_send (fd, &m);
      break;
    case SBX_FILE_WRITE:
      {
        /* the content follows, up to EOF; a hang-up drops it */
        sbx_msg_init (&in, 0);
        while (sbx_msg_recv (fd, &in) == 1 && in.type == SBX_REQ_DATA)
          ;
        bool eof = in.type == SBX_REQ_EOF;
        sbx_msg_free (&in);
        if (!eof)
          return;
        fake_send_entry (fd, name, p, SBX_FT_FILE, 5);
        break;
      }
    case SBX_FILE_LIST:
      fake_send_entry (fd, "a.txt", "/home/user/a.txt", SBX_FT_FILE, 1);
      fake_send_entry (fd, "dir", "/home/user/dir", SBX_FT_DIR, 4096);
      break;
    case SBX_FILE_REMOVE:
      break;
    default:
      fake_send_entry (fd, name, p, SBX_FT_DIR, 4096);
      break;
    }
  fake_send_type (fd, SBX_EV_OK);
}
