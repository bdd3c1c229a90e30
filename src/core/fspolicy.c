/*
 * fspolicy.c - checking and encoding a sandbox's filesystem policy
 * (fspolicy.h).  The rules come from clients, so everything about them is
 * checked here, in the daemon, before a sandbox is touched; the sandbox's
 * first process (isolate.c) then only mounts what it is given.
 */
#include "fspolicy.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "../common/util.h"

static const char *
access_name (enum sbx_fs_access a)
{
  switch (a)
    {
    case SBX_FS_READ_ONLY:
      return "read-only";
    case SBX_FS_READ_WRITE:
      return "read-write";
    case SBX_FS_BLOCKED:
      return "blocked";
    }
  return "?";
}

/* Is PATH the directory DIR or below it?  Both are normalised. */
static bool
path_within (const char *path, const char *dir)
{
  size_t n = strlen (dir);
  return strncmp (path, dir, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

static size_t
path_depth (const char *path)
{
  size_t d = 0;
  for (const char *p = path; *p; p++)
    d += *p == '/';
  return d;
}

static int
check_path (const char *p, struct sbx_err *err)
{
  if (p == NULL || *p == '\0')
    return sbx_failx (err, EINVAL, "filesystem rule with an empty path");
  size_t len = strnlen (p, SBX_FS_PATH_MAX);
  if (len >= SBX_FS_PATH_MAX)
    return sbx_failx (err, EINVAL, "filesystem path %.64s... is too long (at most %d bytes)", p,
                      SBX_FS_PATH_MAX - 1);
  for (size_t i = 0; i < len; i++)
    if ((unsigned char) p[i] < 0x20 || p[i] == 0x7f)
      return sbx_failx (err, EINVAL, "filesystem path %.*s... has a control character", (int) i, p);
  if (p[0] != '/')
    return sbx_failx (err, EINVAL, "filesystem path %s is not absolute", p);
  if (strcmp (p, "/") == 0)
    return sbx_failx (err, EINVAL, "filesystem path / cannot have a rule: name the directories below it");
  if (p[len - 1] == '/')
    return sbx_failx (err, EINVAL, "filesystem path %s ends with /", p);
  /* every component is non-empty, not "." and not ".." */
  for (const char *c = p + 1; c <= p + len; )
    {
      const char *end = strchr (c, '/');
      size_t n = end ? (size_t) (end - c) : strlen (c);
      if (n == 0 || (n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.'))
        return sbx_failx (err, EINVAL, "filesystem path %s is not normalised (no \"//\", \".\" or \"..\")", p);
      if (end == NULL)
        break;
      c = end + 1;
    }
  /* what the kernel provides is not the image's to restrict or open up */
  static const char *const kernel_fs[] = { "/proc", "/sys", "/dev" };
  for (size_t i = 0; i < sizeof kernel_fs / sizeof kernel_fs[0]; i++)
    if (path_within (p, kernel_fs[i]))
      return sbx_failx (err, EINVAL, "filesystem path %s is on a kernel file system (%s)", p, kernel_fs[i]);
  return 0;
}

int
sbx_fs_rules_check (const struct sbx_fs_rule *rules, size_t n, struct sbx_err *err)
{
  if (n > SBX_FS_RULES_MAX)
    return sbx_failx (err, EINVAL, "too many filesystem rules (%zu, at most %d)", n, SBX_FS_RULES_MAX);
  if (n > 0 && rules == NULL)
    return sbx_failx (err, EINVAL, "filesystem rules missing");
  for (size_t i = 0; i < n; i++)
    {
      if (check_path (rules[i].path, err) < 0)
        return -1;
      if (rules[i].access != SBX_FS_READ_ONLY && rules[i].access != SBX_FS_READ_WRITE
          && rules[i].access != SBX_FS_BLOCKED)
        return sbx_failx (err, EINVAL, "filesystem path %s has an unknown access mode", rules[i].path);
    }
  /* quadratic, on at most 64 rules */
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < n; j++)
      {
        if (i == j)
          continue;
        if (j > i && strcmp (rules[i].path, rules[j].path) == 0)
          return sbx_failx (err, EINVAL, "filesystem path %s is listed twice (%s and %s)", rules[i].path,
                            access_name (rules[i].access), access_name (rules[j].access));
        /* a blocked directory cannot be entered, so nothing below it can
           be reached to be mounted over: such a rule would be a lie */
        if (rules[j].access == SBX_FS_BLOCKED && strcmp (rules[i].path, rules[j].path) != 0
            && path_within (rules[i].path, rules[j].path))
          return sbx_failx (err, EINVAL, "filesystem path %s is below the blocked path %s", rules[i].path,
                            rules[j].path);
      }
  return 0;
}

int
sbx_fs_mount_paths_check (const char *const *paths, size_t n, struct sbx_err *err)
{
  if (n > SBX_FS_MOUNTS_MAX)
    return sbx_failx (err, EINVAL, "too many volume mounts (%zu, at most %d)", n, SBX_FS_MOUNTS_MAX);
  for (size_t i = 0; i < n; i++)
    if (check_path (paths[i], err) < 0)
      return -1;
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < n; j++)
      if (i != j && path_within (paths[i], paths[j]))
        return strcmp (paths[i], paths[j]) == 0
                   ? sbx_failx (err, EINVAL, "mount path %s is listed twice", paths[i])
                   : sbx_failx (err, EINVAL, "mount path %s is below mount path %s", paths[i], paths[j]);
  return 0;
}

int
sbx_fs_rules_encode (const struct sbx_fs_rule *rules, size_t n, char **out, size_t *len, struct sbx_err *err)
{
  *out = NULL;
  *len = 0;
  if (sbx_fs_rules_check (rules, n, err) < 0)
    return -1;
  if (n == 0)
    return 0;
  size_t order[SBX_FS_RULES_MAX], total = 0;
  for (size_t i = 0; i < n; i++)
    {
      order[i] = i;
      total += 1 + strlen (rules[i].path) + 1;
    }
  /* stable insertion sort by depth: parents are mounted before children */
  for (size_t i = 1; i < n; i++)
    for (size_t j = i; j > 0 && path_depth (rules[order[j - 1]].path) > path_depth (rules[order[j]].path); j--)
      {
        size_t t = order[j];
        order[j] = order[j - 1];
        order[j - 1] = t;
      }
  char *buf = malloc (total);
  if (buf == NULL)
    return sbx_fail (err, ENOMEM, "filesystem rules");
  size_t off = 0;
  for (size_t k = 0; k < n; k++)
    {
      const struct sbx_fs_rule *r = &rules[order[k]];
      buf[off++] = r->access == SBX_FS_READ_ONLY ? 'r' : r->access == SBX_FS_READ_WRITE ? 'w' : 'b';
      size_t l = strlen (r->path) + 1;
      memcpy (buf + off, r->path, l);
      off += l;
    }
  *out = buf;
  *len = off;
  return 0;
}
