/*
 * users.c - /etc/passwd and /etc/group parsing for the agent (users.h).
 *
 * The files are read afresh on every lookup, so users added inside the
 * sandbox are found.  When the sandbox's filesystem policy makes them
 * unreadable (/etc blocked), the agent falls back to the copies it was
 * handed at boot (sbx_users_snapshot).
 */
#include "users.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SNAPSHOT_MAX (4u << 20) /* bytes kept of each file */

static struct {
  const char *path;
  char *data;
  size_t len;
} dbs[] = { { "/etc/passwd", NULL, 0 }, { "/etc/group", NULL, 0 } };

static void
snapshot_one (int fd, size_t i)
{
  if (fcntl (fd, F_GETFD) < 0)
    return; /* not handed over: no policy */
  size_t cap = 0, len = 0;
  char *buf = NULL;
  for (;;)
    {
      if (len == cap)
        {
          if (cap >= SNAPSHOT_MAX)
            break;
          cap = cap ? cap * 2 : 4096;
          char *nb = realloc (buf, cap);
          if (nb == NULL)
            break;
          buf = nb;
        }
      ssize_t n = read (fd, buf + len, cap - len);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        break;
      len += (size_t) n;
    }
  close (fd);
  dbs[i].data = buf ? buf : strdup ("");
  dbs[i].len = buf ? len : 0;
}

void
sbx_users_snapshot (int passwd_fd, int group_fd)
{
  snapshot_one (passwd_fd, 0);
  snapshot_one (group_fd, 1);
}

/* The live file, or the boot copy when the policy denies the file. */
static FILE *
db_open (size_t i)
{
  FILE *f = fopen (dbs[i].path, "re");
  if (f == NULL && (errno == EACCES || errno == EPERM) && dbs[i].data)
    f = dbs[i].len ? fmemopen (dbs[i].data, dbs[i].len, "r") : fopen ("/dev/null", "re");
  return f;
}

/* Split a colon-separated line in place into at most N fields. */
static int
split (char *line, char **f, int n)
{
  int i = 0;
  f[i++] = line;
  for (char *p = line; *p && i < n; p++)
    if (*p == ':')
      {
        *p = '\0';
        f[i++] = p + 1;
      }
  char *nl = strchr (f[i - 1], '\n');
  if (nl)
    *nl = '\0';
  return i;
}

static int
parse_id (const char *s, unsigned long *out)
{
  if (*s == '\0')
    return -1;
  char *end;
  errno = 0;
  unsigned long v = strtoul (s, &end, 10);
  if (errno || *end || v > 0x7fffffff)
    return -1;
  *out = v;
  return 0;
}

int
sbx_user_lookup (const char *name, struct sbx_user *u)
{
  unsigned long want_uid = 0;
  int by_uid = parse_id (name, &want_uid) == 0;
  FILE *f = db_open (0);
  char line[1024];
  while (f && fgets (line, sizeof line, f))
    {
      char *fl[7];
      if (split (line, fl, 7) < 7)
        continue;
      unsigned long uid, gid;
      if (parse_id (fl[2], &uid) < 0 || parse_id (fl[3], &gid) < 0)
        continue;
      if (by_uid ? uid != want_uid : strcmp (fl[0], name) != 0)
        continue;
      u->uid = (uid_t) uid;
      u->gid = (gid_t) gid;
      snprintf (u->name, sizeof u->name, "%s", fl[0]);
      snprintf (u->home, sizeof u->home, "%s", *fl[5] ? fl[5] : "/");
      snprintf (u->shell, sizeof u->shell, "%s", *fl[6] ? fl[6] : "/bin/sh");
      fclose (f);
      return 0;
    }
  if (f)
    fclose (f);
  if (by_uid)
    {
      u->uid = (uid_t) want_uid;
      u->gid = (gid_t) want_uid;
      snprintf (u->name, sizeof u->name, "%lu", want_uid);
      snprintf (u->home, sizeof u->home, "/");
      snprintf (u->shell, sizeof u->shell, "/bin/sh");
      return 0;
    }
  errno = ENOENT;
  return -1;
}

int
sbx_user_groups (const struct sbx_user *u, gid_t *groups, int max)
{
  int n = 0;
  if (max > 0)
    groups[n++] = u->gid;
  FILE *f = db_open (1);
  char line[4096];
  while (f && fgets (line, sizeof line, f) && n < max)
    {
      char *fl[4];
      if (split (line, fl, 4) < 4)
        continue;
      unsigned long gid;
      if (parse_id (fl[2], &gid) < 0 || gid == u->gid)
        continue;
      for (char *tok = strtok (fl[3], ","); tok; tok = strtok (NULL, ","))
        if (strcmp (tok, u->name) == 0)
          {
            groups[n++] = (gid_t) gid;
            break;
          }
    }
  if (f)
    fclose (f);
  return n;
}

int
sbx_user_become (const struct sbx_user *u)
{
  gid_t groups[64];
  int n = sbx_user_groups (u, groups, 64);
  if (setgroups ((size_t) n, groups) < 0)
    return -1;
  if (setresgid (u->gid, u->gid, u->gid) < 0)
    return -1;
  if (setresuid (u->uid, u->uid, u->uid) < 0)
    return -1;
  return 0;
}

static void
id_name (size_t db, int field_count, unsigned long id, char *buf, size_t n)
{
  FILE *f = db_open (db);
  char line[4096];
  while (f && fgets (line, sizeof line, f))
    {
      char *fl[7];
      if (split (line, fl, field_count) < 3)
        continue;
      unsigned long v;
      if (parse_id (fl[2], &v) == 0 && v == id)
        {
          snprintf (buf, n, "%s", fl[0]);
          fclose (f);
          return;
        }
    }
  if (f)
    fclose (f);
  snprintf (buf, n, "%lu", id);
}

void
sbx_uid_name (uid_t uid, char *buf, size_t n)
{
  id_name (0, 7, uid, buf, n);
}

void
sbx_gid_name (gid_t gid, char *buf, size_t n)
{
  id_name (1, 4, gid, buf, n);
}
