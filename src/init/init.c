/*
 * init.c - sbx-init, PID 1 of every sandbox.
 *
 * A small static program (like E2B's envd or tini) that:
 *   - reaps every orphan of the sandbox and keeps it alive between commands;
 *   - listens on the agent socket it inherits as fd 3 (bound by sbxd on a
 *     path in the daemon's state directory, invisible from inside) and
 *     carries out the daemon's requests: start processes and stream their
 *     output, re-attach to them, send input, signals and terminal sizes,
 *     list them, and file operations (files.c);
 *   - enforces per-process timeouts by killing the process's whole tree
 *     (or, when the request asks, the process alone, as E2B's envd does).
 *
 * Each command runs under a "shepherd": a child of init that is a child
 * subreaper, so whatever the command double-forks or setsid()s stays in the
 * shepherd's subtree until the command exits; when a timeout expires the
 * shepherd kills that whole subtree (or the command alone, if the request
 * says so: what it started is then inherited by init and lives on).  Once the command itself exits
 * normally, the shepherd exits and leftover background processes are
 * inherited by init and keep running (a server started with `cmd &`).
 *
 * The agent is started by sbxd after pivot_root, with capabilities bounded,
 * no_new_privs set and the seccomp filter loaded, so it holds no more power
 * than root inside the sandbox.  It makes itself non-dumpable so that the
 * sandbox's processes cannot reach its file descriptors through /proc/1.
 *
 * sbxd may stop and start again at any time: the agent keeps running, and
 * processes keep running with their output drained (and dropped) while no
 * one is attached.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "../common/proto.h"
#include "../common/util.h"
#include "files.h"
#include "users.h"

#define LISTEN_FD 3
#define MAX_SUBS 8
#define MAX_PROCS 4096

extern char **environ;

enum watch_kind { W_LISTEN, W_SIGNAL, W_STATUS, W_OUT, W_ERR, W_SUB };

struct proc;

struct watch {
  enum watch_kind kind;
  int fd;
  struct proc *p;
};

struct proc {
  pid_t pid;       /* the command, as seen inside the sandbox */
  pid_t shepherd;
  bool pty;
  int in_fd;       /* stdin pipe or pty master; -1 when closed */
  struct watch out, err, status;
  int subs[MAX_SUBS];
  struct watch *sub_watch[MAX_SUBS];
  uint64_t deadline_ns; /* 0 = no timeout (or already fired) */
  bool timed_out;
  bool timeout_command_only; /* the timeout kills the command, not its children */
  char *tag, *cwd;
  char **argv;
  struct proc *next;
};

static int epfd = -1;
static struct proc *procs;
/* set when a watch was freed: the rest of an epoll batch may point at it */
static bool batch_dirty;
static int nprocs;

/* Messages from a shepherd to init, on its status pipe. */
struct shepherd_msg {
  uint32_t kind; /* 1 = pid of the command, 2 = exit */
  int32_t value; /* pid, or wait status */
  uint32_t timed_out;
};

static void
watch_add (struct watch *w, uint32_t events)
{
  struct epoll_event ev = { .events = events, .data.ptr = w };
  epoll_ctl (epfd, EPOLL_CTL_ADD, w->fd, &ev);
}

static void
watch_del (struct watch *w)
{
  if (w->fd >= 0)
    {
      epoll_ctl (epfd, EPOLL_CTL_DEL, w->fd, NULL);
      close (w->fd);
      w->fd = -1;
    }
}

static void
set_nonblock (int fd)
{
  fcntl (fd, F_SETFL, fcntl (fd, F_GETFL) | O_NONBLOCK);
}

/* ---- the command side (runs in the shepherd and its child) ---- */

struct spawn_req {
  char **argv;
  char **env;  /* per-request additions, "K=V" */
  char *cwd;
  bool cwd_default; /* CWD is the template's default: the home if it cannot be entered */
  char *user;
  bool pty;
  uint32_t rows, cols;
  bool keep_stdin;
};

static volatile sig_atomic_t kill_requested;
/* the command, in its shepherd; 0 once reaped */
static volatile pid_t command_pid;

static void
on_usr1 (int sig)
{
  (void) sig;
  kill_requested = 1;
}

/* SIGUSR2 to a shepherd: kill the command alone (a timeout that leaves
   what it started running).  kill() is async-signal-safe. */
static void
on_usr2 (int sig)
{
  (void) sig;
  if (command_pid > 0)
    kill (command_pid, SIGKILL);
}

/* Build the command's environment: init's own (the sandbox's base
   environment), then the user's identity, then the request's variables. */
static char **
build_env (const struct spawn_req *r, const struct sbx_user *u, const char *cwd)
{
  size_t n = 0, extra = 0;
  while (environ[n])
    n++;
  while (r->env && r->env[extra])
    extra++;
  char **env = calloc (n + extra + 8, sizeof *env);
  if (env == NULL)
    return NULL;
  size_t k = 0;
  for (size_t i = 0; i < n; i++)
    env[k++] = environ[i];
  char *ids[5];
  if (asprintf (&ids[0], "HOME=%s", u->home) < 0 || asprintf (&ids[1], "USER=%s", u->name) < 0
      || asprintf (&ids[2], "LOGNAME=%s", u->name) < 0 || asprintf (&ids[3], "SHELL=%s", u->shell) < 0
      || asprintf (&ids[4], "PWD=%s", cwd) < 0)
    return NULL;
  char **add[2] = { ids, r->env };
  size_t add_n[2] = { 5, extra };
  for (int a = 0; a < 2; a++)
    for (size_t i = 0; i < add_n[a]; i++)
      {
        const char *kv = add[a][i];
        const char *eq = strchr (kv, '=');
        size_t klen = eq ? (size_t) (eq - kv) : strlen (kv);
        size_t j;
        for (j = 0; j < k; j++)
          if (strncmp (env[j], kv, klen) == 0 && env[j][klen] == '=')
            break;
        env[j] = (char *) kv;
        if (j == k)
          k++;
      }
  if (r->pty)
    {
      size_t j;
      for (j = 0; j < k; j++)
        if (strncmp (env[j], "TERM=", 5) == 0)
          break;
      if (j == k)
        env[k++] = "TERM=xterm-256color";
    }
  env[k] = NULL;
  return env;
}

/* In the command process: become the user, enter the directory, exec. */
static void __attribute__ ((noreturn))
exec_command (const struct spawn_req *r)
{
  sigset_t all;
  sigemptyset (&all);
  sigprocmask (SIG_SETMASK, &all, NULL);
  signal (SIGPIPE, SIG_DFL);
  signal (SIGUSR1, SIG_DFL);
  signal (SIGUSR2, SIG_DFL);
  setsid ();
  if (r->pty)
    ioctl (0, TIOCSCTTY, 0);
  close_range (3, ~0u, 0);

  struct sbx_user u;
  const char *uname = r->user ? r->user : "root";
  if (sbx_user_lookup (uname, &u) < 0)
    {
      dprintf (2, "sbxd: unknown user %s\n", uname);
      _exit (126);
    }
  if (sbx_user_become (&u) < 0)
    {
      dprintf (2, "sbxd: cannot switch to user %s: %s\n", uname, strerror (errno));
      _exit (126);
    }
  const char *cwd = r->cwd && *r->cwd ? r->cwd : u.home;
  /* a home the filesystem policy blocks (/root) is no reason to refuse a
     command that did not ask for it: start in / instead, as login does */
  int rc = chdir (cwd);
  if (rc < 0 && r->cwd_default && cwd != u.home)
    {
      cwd = u.home;
      rc = chdir (cwd);
    }
  if (rc < 0 && cwd == u.home && errno == EACCES)
    {
      cwd = "/";
      rc = chdir (cwd);
    }
  if (rc < 0)
    {
      dprintf (2, "sbxd: cannot enter directory %s: %s\n", cwd, strerror (errno));
      _exit (126);
    }
  char **env = build_env (r, &u, cwd);
  if (env == NULL)
    _exit (126);
  environ = env; /* execvp looks PATH up in environ */
  execvp (r->argv[0], r->argv);
  int e = errno;
  dprintf (2, "sbxd: %s: %s\n", r->argv[0], strerror (e));
  _exit (e == ENOENT ? 127 : 126);
}

/* Kill every descendant of the calling subreaper and reap them all. */
static void
kill_subtree (pid_t main_pid)
{
  kill (-main_pid, SIGKILL);
  kill (main_pid, SIGKILL);
  for (;;)
    {
      char path[64];
      snprintf (path, sizeof path, "/proc/self/task/%d/children", (int) getpid ());
      FILE *f = fopen (path, "re");
      int pid, any = 0;
      while (f && fscanf (f, "%d", &pid) == 1)
        {
          kill (pid, SIGKILL);
          any = 1;
        }
      if (f)
        fclose (f);
      /* reap whatever died; the children of the killed are re-parented to
         us and show up in the next round */
      pid_t r;
      while ((r = waitpid (-1, NULL, WNOHANG)) > 0)
        any = 1;
      if (r < 0 && errno == ECHILD)
        return;
      if (!any)
        {
          struct timespec ts = { 0, 1000000 };
          nanosleep (&ts, NULL);
        }
    }
}

static void __attribute__ ((noreturn))
shepherd_main (const struct spawn_req *r, int status_fd)
{
  prctl (PR_SET_CHILD_SUBREAPER, 1);
  struct sigaction sa = { .sa_handler = on_usr1 };
  sigaction (SIGUSR1, &sa, NULL);
  struct sigaction sa2 = { .sa_handler = on_usr2 };
  sigaction (SIGUSR2, &sa2, NULL);
  sigset_t all;
  sigemptyset (&all);
  sigprocmask (SIG_SETMASK, &all, NULL);

  /* SIGUSR2 waits until command_pid is set */
  sigset_t usr2, old;
  sigemptyset (&usr2);
  sigaddset (&usr2, SIGUSR2);
  sigprocmask (SIG_BLOCK, &usr2, &old);
  pid_t pid = fork ();
  if (pid == 0)
    exec_command (r);
  command_pid = pid;
  sigprocmask (SIG_SETMASK, &old, NULL);
  struct shepherd_msg m = { 1, pid < 0 ? -errno : pid, 0 };
  sbx_write_full (status_fd, &m, sizeof m);
  if (pid < 0)
    _exit (1);
  /* the command's stdio belongs to it alone now */
  close (0);
  close (1);
  close (2);

  int status = 0;
  for (;;)
    {
      if (kill_requested)
        {
          kill_subtree (pid);
          m = (struct shepherd_msg) { 2, (int32_t) (SIGKILL), 1 };
          sbx_write_full (status_fd, &m, sizeof m);
          _exit (0);
        }
      pid_t w = waitpid (-1, &status, 0);
      if (w == pid)
        {
          command_pid = 0;
          break;
        }
      if (w < 0 && errno == ECHILD)
        break;
    }
  m = (struct shepherd_msg) { 2, status, 0 };
  sbx_write_full (status_fd, &m, sizeof m);
  _exit (0);
}

/* ---- the agent side ---- */

static void
sub_drop (struct proc *p, int i)
{
  if (p->subs[i] < 0)
    return;
  watch_del (p->sub_watch[i]);
  free (p->sub_watch[i]);
  batch_dirty = true;
  p->sub_watch[i] = NULL;
  p->subs[i] = -1;
}

static void
sub_add (struct proc *p, int fd)
{
  for (int i = 0; i < MAX_SUBS; i++)
    if (p->subs[i] < 0)
      {
        struct watch *w = calloc (1, sizeof *w);
        if (w == NULL)
          break;
        *w = (struct watch) { W_SUB, fd, p };
        p->subs[i] = fd;
        p->sub_watch[i] = w;
        /* a subscriber never sends anything: readable means it hung up */
        watch_add (w, EPOLLIN | EPOLLRDHUP);
        return;
      }
  sbx_msg_send_error (fd, EBUSY, "too many clients attached to process %d", (int) p->pid);
  close (fd);
}

static void
broadcast (struct proc *p, const struct sbx_msg *m)
{
  for (int i = 0; i < MAX_SUBS; i++)
    if (p->subs[i] >= 0 && sbx_msg_send (p->subs[i], m) < 0)
      sub_drop (p, i);
}

static void
send_start (int fd, struct proc *p)
{
  struct sbx_msg m;
  sbx_msg_init (&m, SBX_EV_START);
  sbx_msg_put_u32 (&m, SBX_T_PID, (uint32_t) p->pid);
  sbx_msg_send (fd, &m);
  sbx_msg_free (&m);
}

/* Read what is available on an output fd and pass it on.  Returns false at
   end of file. */
static bool
pump (struct proc *p, struct watch *w)
{
  static char buf[SBX_PROTO_CHUNK];
  for (int rounds = 0; rounds < 16; rounds++)
    {
      ssize_t n = read (w->fd, buf, sizeof buf);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0 && errno == EAGAIN)
        return true;
      if (n <= 0) /* EOF, or EIO on a pty whose last slave closed */
        return false;
      struct sbx_msg m;
      sbx_msg_init (&m, p->pty ? SBX_EV_PTY : w->kind == W_OUT ? SBX_EV_STDOUT : SBX_EV_STDERR);
      sbx_msg_put (&m, SBX_T_DATA, buf, (size_t) n);
      broadcast (p, &m);
      sbx_msg_free (&m);
    }
  return true;
}

static void
proc_free (struct proc *p)
{
  for (struct proc **pp = &procs; *pp; pp = &(*pp)->next)
    if (*pp == p)
      {
        *pp = p->next;
        break;
      }
  nprocs--;
  batch_dirty = true;
  for (int i = 0; i < MAX_SUBS; i++)
    if (p->subs[i] >= 0)
      sub_drop (p, i);
  watch_del (&p->out);
  watch_del (&p->err);
  watch_del (&p->status);
  if (!p->pty && p->in_fd >= 0)
    close (p->in_fd); /* a pty's master is p->out's fd */
  free (p->tag);
  free (p->cwd);
  for (char **a = p->argv; a && *a; a++)
    free (*a);
  free (p->argv);
  free (p);
}

/* The command has exited: flush its output, tell everyone, forget it. */
static void
proc_end (struct proc *p, int status, bool timed_out)
{
  if (p->out.fd >= 0)
    pump (p, &p->out);
  if (p->err.fd >= 0)
    pump (p, &p->err);
  struct sbx_msg m;
  sbx_msg_init (&m, SBX_EV_END);
  int code = -1, sig = 0;
  if (WIFEXITED (status))
    code = WEXITSTATUS (status);
  else if (WIFSIGNALED (status))
    sig = WTERMSIG (status);
  sbx_msg_put_u32 (&m, SBX_T_EXIT, (uint32_t) code);
  sbx_msg_put_u32 (&m, SBX_T_TERMSIG, (uint32_t) sig);
  sbx_msg_put_u32 (&m, SBX_T_TIMEDOUT, timed_out || p->timed_out);
  broadcast (p, &m);
  sbx_msg_free (&m);
  proc_free (p);
}

static struct proc *
proc_find (pid_t pid)
{
  for (struct proc *p = procs; p; p = p->next)
    if (p->pid == pid)
      return p;
  return NULL;
}

static char **
collect_strings (const struct sbx_msg *m, uint8_t tag)
{
  size_t pos = 0, n = 0;
  uint8_t t;
  const uint8_t *d;
  uint32_t l;
  while (sbx_msg_next (m, &pos, &t, &d, &l) == 1)
    n += t == tag;
  char **v = calloc (n + 1, sizeof *v);
  if (v == NULL)
    return NULL;
  pos = 0;
  n = 0;
  while (sbx_msg_next (m, &pos, &t, &d, &l) == 1)
    if (t == tag)
      {
        if (memchr (d, '\0', l) || (v[n] = strndup ((const char *) d, l)) == NULL)
          {
            for (size_t i = 0; i < n; i++)
              free (v[i]);
            free (v);
            return NULL;
          }
        n++;
      }
  return v;
}

static void
free_strings (char **v)
{
  for (char **a = v; a && *a; a++)
    free (*a);
  free (v);
}

static void
handle_exec (int conn, const struct sbx_msg *req)
{
  struct spawn_req r = { 0 };
  r.argv = collect_strings (req, SBX_T_ARG);
  r.env = collect_strings (req, SBX_T_ENV);
  r.cwd = sbx_msg_strdup (req, SBX_T_CWD);
  r.cwd_default = (sbx_msg_u32 (req, SBX_T_FLAGS, 0) & SBX_EXEC_F_CWD_DEFAULT) != 0;
  r.user = sbx_msg_strdup (req, SBX_T_USER);
  r.keep_stdin = sbx_msg_u32 (req, SBX_T_STDIN, 0) != 0;
  const uint8_t *d;
  uint32_t l;
  if (sbx_msg_get (req, SBX_T_PTY, &d, &l) && l == 8)
    {
      r.pty = true;
      memcpy (&r.rows, d, 4);
      memcpy (&r.cols, d + 4, 4);
    }
  uint32_t timeout_ms = sbx_msg_u32 (req, SBX_T_TIMEOUT, 0);
  bool timeout_command_only = (sbx_msg_u32 (req, SBX_T_FLAGS, 0) & SBX_EXEC_F_TIMEOUT_COMMAND) != 0;
  char *tag = sbx_msg_strdup (req, SBX_T_TAG);

  int in[2] = { -1, -1 }, out[2] = { -1, -1 }, err[2] = { -1, -1 }, st[2] = { -1, -1 };
  int master = -1, slave = -1;
  struct proc *p = NULL;

  if (r.argv == NULL || r.argv[0] == NULL || r.env == NULL)
    {
      sbx_msg_send_error (conn, EINVAL, "a command is required");
      goto fail;
    }
  if (nprocs >= MAX_PROCS)
    {
      sbx_msg_send_error (conn, EAGAIN, "too many processes started by the agent");
      goto fail;
    }
  if (pipe2 (st, O_CLOEXEC) < 0)
    goto fail_errno;
  if (r.pty)
    {
      struct winsize ws = { .ws_row = (unsigned short) (r.rows ? r.rows : 24),
                            .ws_col = (unsigned short) (r.cols ? r.cols : 80) };
      if (openpty (&master, &slave, NULL, NULL, &ws) < 0)
        goto fail_errno;
      fcntl (master, F_SETFD, FD_CLOEXEC);
    }
  else
    {
      if (pipe2 (out, O_CLOEXEC) < 0 || pipe2 (err, O_CLOEXEC) < 0)
        goto fail_errno;
      if (r.keep_stdin && pipe2 (in, O_CLOEXEC) < 0)
        goto fail_errno;
    }

  pid_t s = fork ();
  if (s < 0)
    goto fail_errno;
  if (s == 0)
    {
      /* shepherd: stdio of the command on 0, 1, 2; status pipe on 3 */
      int fd0, fd1, fd2;
      if (r.pty)
        fd0 = fd1 = fd2 = slave;
      else
        {
          fd0 = r.keep_stdin ? in[0] : open ("/dev/null", O_RDONLY | O_CLOEXEC);
          fd1 = out[1];
          fd2 = err[1];
        }
      int stw = fcntl (st[1], F_DUPFD_CLOEXEC, 10);
      if (dup2 (fd0, 0) < 0 || dup2 (fd1, 1) < 0 || dup2 (fd2, 2) < 0 || dup2 (stw, 3) < 0)
        _exit (1);
      close_range (4, ~0u, 0);
      fcntl (3, F_SETFD, FD_CLOEXEC);
      shepherd_main (&r, 3);
    }

  close (st[1]);
  st[1] = -1;
  if (slave >= 0)
    close (slave);
  slave = -1;
  if (out[1] >= 0)
    close (out[1]), close (err[1]), out[1] = err[1] = -1;
  if (in[0] >= 0)
    close (in[0]), in[0] = -1;

  struct shepherd_msg m;
  if (sbx_read_full (st[0], &m, sizeof m) != sizeof m || m.kind != 1 || m.value <= 0)
    {
      sbx_msg_send_error (conn, m.value < 0 ? -m.value : EIO, "cannot start process");
      waitpid (s, NULL, 0);
      goto fail;
    }

  p = calloc (1, sizeof *p);
  if (p == NULL)
    {
      kill (s, SIGUSR1);
      goto fail_errno;
    }
  p->pid = m.value;
  p->shepherd = s;
  p->pty = r.pty;
  for (int i = 0; i < MAX_SUBS; i++)
    p->subs[i] = -1;
  p->status = (struct watch) { W_STATUS, st[0], p };
  st[0] = -1;
  if (r.pty)
    {
      p->out = (struct watch) { W_OUT, master, p };
      p->err = (struct watch) { W_ERR, -1, p };
      p->in_fd = master;
    }
  else
    {
      p->out = (struct watch) { W_OUT, out[0], p };
      p->err = (struct watch) { W_ERR, err[0], p };
      p->in_fd = in[1];
      if (in[1] >= 0)
        set_nonblock (in[1]);
    }
  set_nonblock (p->out.fd);
  if (p->err.fd >= 0)
    set_nonblock (p->err.fd);
  p->deadline_ns = timeout_ms ? sbx_now_ns () + (uint64_t) timeout_ms * 1000000ull : 0;
  p->timeout_command_only = timeout_command_only;
  p->tag = tag;
  p->cwd = r.cwd;
  p->argv = r.argv;
  p->next = procs;
  procs = p;
  nprocs++;
  watch_add (&p->status, EPOLLIN);
  watch_add (&p->out, EPOLLIN);
  if (p->err.fd >= 0)
    watch_add (&p->err, EPOLLIN);
  send_start (conn, p);
  sub_add (p, conn);
  free_strings (r.env);
  free (r.user);
  return;

fail_errno:
  sbx_msg_send_error (conn, errno, "cannot start process: %s", strerror (errno));
fail:
  for (int i = 0; i < 2; i++)
    {
      if (in[i] >= 0)
        close (in[i]);
      if (out[i] >= 0)
        close (out[i]);
      if (err[i] >= 0)
        close (err[i]);
      if (st[i] >= 0)
        close (st[i]);
    }
  if (master >= 0)
    close (master);
  if (slave >= 0)
    close (slave);
  free_strings (r.argv);
  free_strings (r.env);
  free (r.cwd);
  free (r.user);
  free (tag);
  close (conn);
}

static void
handle_list (int conn)
{
  for (struct proc *p = procs; p; p = p->next)
    {
      struct sbx_msg m;
      sbx_msg_init (&m, SBX_EV_PROC);
      sbx_msg_put_u32 (&m, SBX_T_PID, (uint32_t) p->pid);
      if (p->tag)
        sbx_msg_put_str (&m, SBX_T_TAG, p->tag);
      if (p->cwd)
        sbx_msg_put_str (&m, SBX_T_CWD, p->cwd);
      for (char **a = p->argv; *a; a++)
        sbx_msg_put_str (&m, SBX_T_ARG, *a);
      sbx_msg_put_u32 (&m, SBX_T_PTY, p->pty);
      int r = sbx_msg_send (conn, &m);
      sbx_msg_free (&m);
      if (r < 0)
        return;
    }
  sbx_msg_send_ok (conn);
}

/* Requests about one running process. */
static void
handle_proc_req (int conn, const struct sbx_msg *req)
{
  pid_t pid = (pid_t) sbx_msg_u32 (req, SBX_T_PID, 0);
  struct proc *p = proc_find (pid);
  if (p == NULL)
    {
      sbx_msg_send_error (conn, ESRCH, "process %d not found", (int) pid);
      close (conn);
      return;
    }
  switch (req->type)
    {
    case SBX_REQ_ATTACH:
      send_start (conn, p);
      sub_add (p, conn);
      return;
    case SBX_REQ_INPUT:
      {
        const uint8_t *d;
        uint32_t l;
        if (p->in_fd < 0)
          sbx_msg_send_error (conn, EPIPE, "stdin of process %d is closed", (int) pid);
        else if (!sbx_msg_get (req, SBX_T_DATA, &d, &l))
          sbx_msg_send_error (conn, EINVAL, "no input");
        else
          {
            /* bounded wait: a process that never reads must not stall us */
            uint32_t done = 0;
            int waited = 0;
            while (done < l)
              {
                ssize_t n = write (p->in_fd, d + done, l - done);
                if (n > 0)
                  done += (uint32_t) n;
                else if (n < 0 && errno == EAGAIN && waited < 100)
                  {
                    struct pollfd pf = { p->in_fd, POLLOUT, 0 };
                    poll (&pf, 1, 10);
                    waited++;
                  }
                else if (n < 0 && errno == EINTR)
                  continue;
                else
                  break;
              }
            if (done == l)
              sbx_msg_send_ok (conn);
            else
              sbx_msg_send_error (conn, errno ? errno : EAGAIN, "stdin of process %d is not being read",
                                  (int) pid);
          }
        break;
      }
    case SBX_REQ_CLOSE_STDIN:
      if (p->pty)
        {
          /* a terminal has no separate stdin: send EOF (^D) */
          char eot = 4;
          if (write (p->in_fd, &eot, 1) < 0)
            {
            }
        }
      else if (p->in_fd >= 0)
        {
          close (p->in_fd);
          p->in_fd = -1;
        }
      sbx_msg_send_ok (conn);
      break;
    case SBX_REQ_SIGNAL:
      {
        int sig = (int) sbx_msg_u32 (req, SBX_T_SIGNAL, SIGKILL);
        if (sig <= 0 || sig >= 65)
          {
            sbx_msg_send_error (conn, EINVAL, "invalid signal %d", sig);
            break;
          }
        if ((sbx_msg_u32 (req, SBX_T_FLAGS, 0) & SBX_SIGNAL_F_TREE) && p->shepherd > 0)
          {
            /* the shepherd kills the whole subtree, as for a timeout */
            p->deadline_ns = 0;
            kill (p->shepherd, SIGUSR1);
            sbx_msg_send_ok (conn);
            break;
          }
        /* the command leads its own process group (setsid) */
        if (kill (-pid, sig) < 0 && kill (pid, sig) < 0)
          sbx_msg_send_error (conn, errno, "signal process %d: %s", (int) pid, strerror (errno));
        else
          sbx_msg_send_ok (conn);
        break;
      }
    case SBX_REQ_RESIZE:
      {
        struct winsize ws = { .ws_row = (unsigned short) sbx_msg_u32 (req, SBX_T_ROWS, 24),
                              .ws_col = (unsigned short) sbx_msg_u32 (req, SBX_T_COLS, 80) };
        if (!p->pty)
          sbx_msg_send_error (conn, ENOTTY, "process %d has no terminal", (int) pid);
        else if (ioctl (p->in_fd, TIOCSWINSZ, &ws) < 0)
          sbx_msg_send_error (conn, errno, "resize: %s", strerror (errno));
        else
          sbx_msg_send_ok (conn);
        break;
      }
    default:
      sbx_msg_send_error (conn, EINVAL, "unknown request");
    }
  close (conn);
}

/* Set variables of init's own environment, the base of every later
   command's (build_env): a sandbox prepared ahead of its request gets the
   environment its create asked for.  Every variable is checked before any
   is set, so a bad request changes nothing.  Only the daemon reaches this
   socket, and it sends this once per sandbox: what glibc's setenv keeps of
   replaced values stays bounded by that one frame. */
static void
handle_setenv (int conn, const struct sbx_msg *req)
{
  /* a booted spare is claimed with this (maybe empty) request: from now
     on the sandbox outlives the daemon (isolate.c, "ahead") */
  prctl (PR_SET_PDEATHSIG, 0);
  char **vars = collect_strings (req, SBX_T_ENV);
  if (vars == NULL)
    {
      sbx_msg_send_error (conn, EINVAL, "malformed environment");
      return;
    }
  for (char **v = vars; *v; v++)
    if (**v == '=' || strchr (*v, '=') == NULL)
      {
        sbx_msg_send_error (conn, EINVAL, "not KEY=VALUE: %.64s", *v);
        free_strings (vars);
        return;
      }
  for (char **v = vars; *v; v++)
    {
      char *eq = strchr (*v, '=');
      *eq = '\0';
      if (setenv (*v, eq + 1, 1) < 0)
        {
          sbx_msg_send_error (conn, errno, "setenv %.64s: %s", *v, strerror (errno));
          free_strings (vars);
          return;
        }
    }
  free_strings (vars);
  sbx_msg_send_ok (conn);
}

static void
handle_file (int conn, struct sbx_msg *req)
{
  pid_t w = fork ();
  if (w < 0)
    {
      sbx_msg_send_error (conn, errno, "cannot start file worker: %s", strerror (errno));
      close (conn);
      return;
    }
  if (w == 0)
    {
      sigset_t all;
      sigemptyset (&all);
      sigprocmask (SIG_SETMASK, &all, NULL);
      if (conn != 0)
        {
          dup2 (conn, 0);
          conn = 0;
        }
      close_range (1, ~0u, 0);
      sbx_files_serve (conn, req);
      _exit (0);
    }
  close (conn);
}

static void
handle_conn (int conn)
{
  /* the daemon writes a whole request at once; a stuck peer is dropped */
  struct timeval tv = { 5, 0 };
  setsockopt (conn, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  struct timeval stv = { 30, 0 };
  setsockopt (conn, SOL_SOCKET, SO_SNDTIMEO, &stv, sizeof stv);
  struct sbx_msg req;
  sbx_msg_init (&req, 0);
  if (sbx_msg_recv (conn, &req) != 1)
    {
      close (conn);
      sbx_msg_free (&req);
      return;
    }
  switch (req.type)
    {
    case SBX_REQ_EXEC:
      handle_exec (conn, &req);
      break;
    case SBX_REQ_ATTACH:
    case SBX_REQ_INPUT:
    case SBX_REQ_CLOSE_STDIN:
    case SBX_REQ_SIGNAL:
    case SBX_REQ_RESIZE:
      handle_proc_req (conn, &req);
      break;
    case SBX_REQ_LIST:
      handle_list (conn);
      close (conn);
      break;
    case SBX_REQ_FILE:
    case SBX_REQ_WATCH:
      handle_file (conn, &req);
      break;
    case SBX_REQ_PING:
      sbx_msg_send_ok (conn);
      close (conn);
      break;
    case SBX_REQ_SETENV:
      handle_setenv (conn, &req);
      close (conn);
      /* the claim is answered: the deadline the daemon gave init for it
         (sandbox.c, CLAIM_RUNTIME_NS) ends here, before anything runs */
      sbx_thread_normal ();
      break;
    default:
      sbx_msg_send_error (conn, EINVAL, "unknown request type %d", req.type);
      close (conn);
    }
  sbx_msg_free (&req);
}

static void
reap (void)
{
  for (;;)
    {
      int status;
      pid_t w = waitpid (-1, &status, WNOHANG);
      if (w <= 0)
        return;
      /* a shepherd that died without reporting (it should not) ends its
         process here; normal ends arrive on the status pipe */
      for (struct proc *p = procs; p; p = p->next)
        if (p->shepherd == w)
          {
            p->shepherd = 0;
            break;
          }
    }
}

static void
on_status (struct proc *p)
{
  struct shepherd_msg m;
  ssize_t n = read (p->status.fd, &m, sizeof m);
  if (n == sizeof m && m.kind == 2)
    proc_end (p, m.value, m.timed_out != 0);
  else if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
    proc_end (p, 0xff00, false); /* shepherd lost: report exit -1 */
}

static int
next_timeout_ms (void)
{
  uint64_t now = sbx_now_ns (), best = 0;
  for (struct proc *p = procs; p; p = p->next)
    if (p->deadline_ns && (best == 0 || p->deadline_ns < best))
      best = p->deadline_ns;
  if (best == 0)
    return -1;
  if (best <= now)
    return 0;
  return (int) ((best - now) / 1000000ull) + 1;
}

static void
fire_timeouts (void)
{
  uint64_t now = sbx_now_ns ();
  for (struct proc *p = procs; p; p = p->next)
    if (p->deadline_ns && p->deadline_ns <= now)
      {
        p->deadline_ns = 0;
        p->timed_out = true;
        if (p->shepherd > 0)
          kill (p->shepherd, p->timeout_command_only ? SIGUSR2 : SIGUSR1);
      }
}

/* A machine id of its own (systemd's machine-id(5): 32 lowercase hex
   digits), written at every boot before anything else runs: the
   template has none, and a sandbox made from a snapshot must not keep
   its source's.  Inside the sandbox, as its root; where the policy makes
   /etc read-only or blocked, there is none. */
static void
write_machine_id (void)
{
  unsigned char rnd[16];
  if (getrandom (rnd, sizeof rnd, 0) != (ssize_t) sizeof rnd)
    return;
  char text[34];
  for (int i = 0; i < 16; i++)
    snprintf (text + 2 * i, 3, "%02x", rnd[i]);
  text[32] = '\n';
  unlink ("/etc/machine-id");
  int fd = open ("/etc/machine-id", O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0444);
  if (fd < 0)
    return;
  if (write (fd, text, 33) != 33)
    unlink ("/etc/machine-id");
  close (fd);
}

int
main (int argc, char **argv)
{
  (void) argc;
  (void) argv;
  prctl (PR_SET_DUMPABLE, 0);
  prctl (PR_SET_NAME, "sbx-init");
  fcntl (LISTEN_FD, F_SETFD, FD_CLOEXEC);
  fcntl (4, F_SETFD, FD_CLOEXEC); /* the template lock: held, never used */
  sbx_users_snapshot (5, 6);      /* with a filesystem policy (isolate.c) */
  write_machine_id ();
  set_nonblock (LISTEN_FD);
  signal (SIGPIPE, SIG_IGN);

  sigset_t mask;
  sigemptyset (&mask);
  sigaddset (&mask, SIGCHLD);
  sigprocmask (SIG_BLOCK, &mask, NULL);
  int sfd = signalfd (-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
  epfd = epoll_create1 (EPOLL_CLOEXEC);
  if (sfd < 0 || epfd < 0)
    return 1;
  struct watch wl = { W_LISTEN, LISTEN_FD, NULL }, ws = { W_SIGNAL, sfd, NULL };
  watch_add (&wl, EPOLLIN);
  watch_add (&ws, EPOLLIN);

  for (;;)
    {
      struct epoll_event evs[64];
      int n = epoll_wait (epfd, evs, 64, next_timeout_ms ());
      if (n < 0 && errno != EINTR)
        return 1;
      batch_dirty = false;
      for (int i = 0; i < n && !batch_dirty; i++)
        {
          struct watch *w = evs[i].data.ptr;
          switch (w->kind)
            {
            case W_LISTEN:
              for (;;)
                {
                  int c = accept4 (LISTEN_FD, NULL, NULL, SOCK_CLOEXEC);
                  if (c < 0)
                    break;
                  handle_conn (c);
                }
              break;
            case W_SIGNAL:
              {
                struct signalfd_siginfo si;
                while (read (sfd, &si, sizeof si) == sizeof si)
                  ;
                reap ();
                break;
              }
            case W_STATUS:
              on_status (w->p);
              break;
            case W_OUT:
            case W_ERR:
              if (!pump (w->p, w))
                {
                  if (w->p->pty && w->kind == W_OUT)
                    w->p->in_fd = -1; /* the master is the pty's only fd */
                  watch_del (w);
                }
              break;
            case W_SUB:
              for (int k = 0; k < MAX_SUBS; k++)
                if (w->p->sub_watch[k] == w)
                  {
                    sub_drop (w->p, k);
                    break;
                  }
              break;
            }
        }
      /* events left in the batch are level-triggered and come back */
      fire_timeouts ();
    }
}
