/*
 * test_layers.c - sbx_layer_commit (core/template.c): an overlay upper
 * layer, as a sandbox's build step leaves it, applied onto a hard-linked
 * copy of its base template.  Whiteouts remove, opaque directories
 * replace, owners come back from the sandbox's id range, symlinks are
 * kept and never followed, FIFOs are dropped, and the base's files, hard
 * linked into the layer, are never written through.  Needs root (mknod
 * of a whiteout, trusted.* xattrs, chown); no network, under a second.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "check.h"
#include "common/util.h"
#include "core/template.h"

#define ID_BASE 300000u

static char root[256], tdir[300], up[300];

static void
put (const char *dir, const char *rel, const char *text, uid_t uid, mode_t mode)
{
  char path[600];
  snprintf (path, sizeof path, "%s/%s", dir, rel);
  FILE *f = fopen (path, "w");
  CHECK (f != NULL);
  if (f == NULL)
    return;
  fputs (text, f);
  fclose (f);
  CHECK (chown (path, uid, uid) == 0 && chmod (path, mode) == 0);
}

static void
dir (const char *base, const char *rel, uid_t uid)
{
  char path[600];
  snprintf (path, sizeof path, "%s/%s", base, rel);
  CHECK (mkdir (path, 0755) == 0 && chown (path, uid, uid) == 0);
}

static char *
slurp (const char *rel)
{
  char path[600], *out = NULL;
  struct sbx_err err;
  snprintf (path, sizeof path, "%s/%s", tdir, rel);
  if (sbx_read_file_at (AT_FDCWD, path, &out, 4096, &err) < 0)
    return NULL;
  return out;
}

static bool
gone (const char *rel)
{
  char path[600];
  struct stat st;
  snprintf (path, sizeof path, "%s/%s", tdir, rel);
  return lstat (path, &st) < 0 && errno == ENOENT;
}

static struct stat
st_of (const char *rel)
{
  char path[600];
  struct stat st;
  memset (&st, 0, sizeof st);
  snprintf (path, sizeof path, "%s/%s", tdir, rel);
  lstat (path, &st);
  return st;
}

int
main (void)
{
  struct sbx_err err;
  if (geteuid () != 0)
    {
      fprintf (stderr, "test_layers needs root\n");
      return 2;
    }
  snprintf (root, sizeof root, "/tmp/sbx-test-layers-XXXXXX");
  if (mkdtemp (root) == NULL)
    return 2;
  snprintf (tdir, sizeof tdir, "%s/t", root);
  snprintf (up, sizeof up, "%s/upper", root);

  /* the base template "b" */
  CHECK (mkdir (tdir, 0755) == 0);
  dir (tdir, "b", 0);
  dir (tdir, "b/rootfs", 0);
  dir (tdir, "b/rootfs/etc", 0);
  dir (tdir, "b/rootfs/dir", 0);
  dir (tdir, "b/rootfs/dir/sub", 0);
  dir (tdir, "b/rootfs/opq", 0);
  put (tdir, "b/rootfs/etc/keep", "keep\n", 0, 0644);
  put (tdir, "b/rootfs/etc/change", "old\n", 0, 0644);
  put (tdir, "b/rootfs/gone", "x\n", 0, 0644);
  put (tdir, "b/rootfs/dir/sub/x", "x\n", 0, 0644);
  put (tdir, "b/rootfs/dir/stay", "stay\n", 0, 0644);
  put (tdir, "b/rootfs/opq/old", "old\n", 0, 0644);
  put (tdir, "b/template.json", "{\"name\": \"b\"}\n", 0, 0644);

  /* what a sandbox (root = ID_BASE on the host) changed */
  dir (root, "upper", ID_BASE);
  dir (root, "upper/etc", ID_BASE);
  put (up, "etc/change", "new\n", ID_BASE + 1000, 0600);
  char path[600];
  snprintf (path, sizeof path, "%s/gone", up);
  CHECK (mknod (path, S_IFCHR | 0, makedev (0, 0)) == 0);
  dir (root, "upper/dir", ID_BASE);
  snprintf (path, sizeof path, "%s/dir/sub", up);
  CHECK (mknod (path, S_IFCHR | 0, makedev (0, 0)) == 0);
  dir (root, "upper/opq", ID_BASE + 1000);
  snprintf (path, sizeof path, "%s/opq", up);
  CHECK (setxattr (path, "trusted.overlay.opaque", "y", 1, 0) == 0);
  put (up, "opq/fresh", "fresh\n", ID_BASE + 1000, 0644);
  snprintf (path, sizeof path, "%s/link", up);
  CHECK (symlink ("/etc/shadow", path) == 0 && lchown (path, ID_BASE + 7, ID_BASE + 7) == 0);
  snprintf (path, sizeof path, "%s/fifo", up);
  CHECK (mkfifo (path, 0644) == 0);
  dir (root, "upper/newdir", ID_BASE + 5);
  put (up, "newdir/file", "secret\n", ID_BASE + 5, 04750);
  put (up, "outsider", "o\n", 1234, 0644); /* not of the sandbox's range */

  int upfd = open (up, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  CHECK (upfd >= 0);
  const char *env[] = { "A=1", "B=two", NULL };
  struct sbx_layer_meta m = { .env = env, .user = "u", .workdir = "/w", .start_cmd = "s &", .ready_cmd = "true",
                              .cpu_count = 3 };
  int r = sbx_layer_commit (tdir, "_l-test", "b", upfd, ID_BASE, &m, NULL, &err);
  CHECK (r == 0);
  if (r < 0)
    fprintf (stderr, "commit: %s\n", err.msg);

  char *s = slurp ("_l-test/rootfs/etc/change");
  CHECK (s && strcmp (s, "new\n") == 0);
  free (s);
  struct stat st = st_of ("_l-test/rootfs/etc/change");
  CHECK (st.st_uid == 1000 && (st.st_mode & 07777) == 0600 && st.st_nlink == 1);
  /* the base's file was replaced, not written through its hard link */
  s = slurp ("b/rootfs/etc/change");
  CHECK (s && strcmp (s, "old\n") == 0);
  free (s);
  /* unchanged files are the base's inodes */
  CHECK (st_of ("_l-test/rootfs/etc/keep").st_ino == st_of ("b/rootfs/etc/keep").st_ino);
  CHECK (gone ("_l-test/rootfs/gone") && !gone ("b/rootfs/gone"));
  CHECK (gone ("_l-test/rootfs/dir/sub") && !gone ("_l-test/rootfs/dir/stay") && !gone ("b/rootfs/dir/sub/x"));
  CHECK (gone ("_l-test/rootfs/opq/old") && !gone ("_l-test/rootfs/opq/fresh") && !gone ("b/rootfs/opq/old"));
  CHECK (st_of ("_l-test/rootfs/opq").st_uid == 1000);
  st = st_of ("_l-test/rootfs/link");
  CHECK (S_ISLNK (st.st_mode) && st.st_uid == 7);
  char target[64] = "";
  snprintf (path, sizeof path, "%s/_l-test/rootfs/link", tdir);
  CHECK (readlink (path, target, sizeof target - 1) == 11 && strcmp (target, "/etc/shadow") == 0);
  CHECK (gone ("_l-test/rootfs/fifo"));
  st = st_of ("_l-test/rootfs/newdir/file");
  CHECK (st.st_uid == 5 && st.st_gid == 5 && (st.st_mode & 07777) == 04750);
  CHECK (st_of ("_l-test/rootfs/outsider").st_uid == 65534);
  st = st_of ("_l-test/rootfs");
  CHECK (st.st_uid == 0 && (st.st_mode & 07777) == 0755);

  struct sbx_template t;
  CHECK (sbx_template_load (tdir, "_l-test", &t, &err) == 0);
  CHECK (strcmp (t.user, "u") == 0 && strcmp (t.workdir, "/w") == 0 && t.cpu_count == 3);
  CHECK (t.start_cmd && strcmp (t.start_cmd, "s &") == 0 && t.ready_cmd && strcmp (t.ready_cmd, "true") == 0);
  CHECK (t.env && t.env[0] && strcmp (t.env[0], "A=1") == 0 && t.env[1] && strcmp (t.env[1], "B=two") == 0
         && t.env[2] == NULL);
  sbx_template_free (&t);

  /* a layer is made once; a base without start_cmd has none */
  CHECK (sbx_layer_commit (tdir, "_l-test", "b", -1, 0, &m, NULL, &err) == 0);
  CHECK (sbx_template_load (tdir, "b", &t, &err) == 0 && t.start_cmd == NULL);
  sbx_template_free (&t);
  /* layers are left out of the list */
  char *listing = NULL;
  size_t len = 0;
  FILE *f = open_memstream (&listing, &len);
  CHECK (sbx_template_list (tdir, f, &err) == 0);
  fclose (f);
  CHECK (listing && strstr (listing, "b\t") == listing && strstr (listing, "_l-") == NULL);
  free (listing);
  /* a layer of nothing: the base with the new settings */
  CHECK (sbx_layer_commit (tdir, "_l-plain", "b", -1, 0, &m, NULL, &err) == 0);
  s = slurp ("_l-plain/rootfs/etc/change");
  CHECK (s && strcmp (s, "old\n") == 0);
  free (s);
  CHECK (sbx_layer_commit (tdir, "../x", "b", -1, 0, &m, NULL, &err) < 0 && err.code == EINVAL);
  CHECK (sbx_layer_commit (tdir, "_l-x", "nobase", -1, 0, &m, NULL, &err) < 0 && err.code == ENOENT);
  CHECK (gone ("_l-x"));

  close (upfd);
  if (sbx_rm_rf (root, &err) < 0)
    fprintf (stderr, "cleanup: %s\n", err.msg);
  printf ("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
