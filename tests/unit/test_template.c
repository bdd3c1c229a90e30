/*
 * test_template.c - tests of src/core/template.c, building real templates.
 *
 * Builds a tiny two-level template (an include chain on top of Debian
 * minbase) with mmdebstrap into a temporary template directory, three
 * times: a good build, a failing rebuild that must leave the first one
 * intact, and a good rebuild that must replace it.  Needs root and
 * mmdebstrap with network access to the Debian mirror; about a minute.
 *
 *   gcc -std=c17 -D_GNU_SOURCE -Wall -Wextra -O2 -Isrc -o /tmp/test_template \
 *     tests/unit/test_template.c src/core/template.c src/common/error.c \
 *     src/common/util.c -ljansson && /tmp/test_template
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"
#include "core/template.h"

#include "check.h"

static char base[64], specs[PATH_MAX], tdir[PATH_MAX];

static void
write_spec (const char *name, const char *text)
{
  char path[PATH_MAX + 64];
  snprintf (path, sizeof path, "%s/%s.spec", specs, name);
  FILE *f = fopen (path, "w");
  if (f == NULL || fputs (text, f) < 0 || fclose (f) != 0)
    {
      perror (path);
      exit (2);
    }
}

/* Read a small file below the template directory; "" when missing. */
static const char *
slurp (const char *rel)
{
  static char buf[8192];
  char path[PATH_MAX + 256];
  snprintf (path, sizeof path, "%s/%s", tdir, rel);
  buf[0] = '\0';
  FILE *f = fopen (path, "r");
  if (f == NULL)
    return buf;
  size_t n = fread (buf, 1, sizeof buf - 1, f);
  buf[n] = '\0';
  fclose (f);
  return buf;
}

static bool
exists_in_tdir (const char *rel)
{
  char path[PATH_MAX + 256];
  struct stat st;
  snprintf (path, sizeof path, "%s/%s", tdir, rel);
  return lstat (path, &st) == 0;
}

/* Entries of the template directory starting with PREFIX. */
static int
count_prefixed (const char *prefix)
{
  DIR *d = opendir (tdir);
  int n = 0;
  if (d == NULL)
    return -1;
  for (struct dirent *de; (de = readdir (d)) != NULL;)
    n += strncmp (de->d_name, prefix, strlen (prefix)) == 0;
  closedir (d);
  return n;
}

static bool
has_env (const struct sbx_template *t, const char *kv)
{
  for (char **e = t->env; e && *e; e++)
    if (strcmp (*e, kv) == 0)
      return true;
  return false;
}

static int
count_env_key (const struct sbx_template *t, const char *key)
{
  int n = 0;
  for (char **e = t->env; e && *e; e++)
    n += strncmp (*e, key, strlen (key)) == 0 && (*e)[strlen (key)] == '=';
  return n;
}

/* Run a build with its progress captured in memory. */
static int
build (const char *name, char **progress, struct sbx_err *err)
{
  size_t len;
  FILE *mem = open_memstream (progress, &len);
  int r = sbx_template_build (specs, tdir, name, mem, err);
  fclose (mem);
  return r;
}

static void
test_template_dir (void)
{
  char buf[PATH_MAX];
  unsetenv ("SBXD_TEMPLATE_DIR");
  sbx_template_dir (buf, sizeof buf);
  CHECK (strcmp (buf, "/var/lib/sbxd/templates") == 0);
  setenv ("SBXD_TEMPLATE_DIR", "/tmp/elsewhere", 1);
  sbx_template_dir (buf, sizeof buf);
  CHECK (strcmp (buf, "/tmp/elsewhere") == 0);
  unsetenv ("SBXD_TEMPLATE_DIR");
}

/* Spec mistakes are caught before anything is created or downloaded. */
static void
test_spec_errors (void)
{
  struct sbx_err err;
  cleanup_free char *out = NULL;

  write_spec ("badkey", "name: badkey\nsuite: bookworm\ncolour: blue\n");
  CHECK (build ("badkey", &out, &err) < 0);
  CHECK (err.code == EINVAL && strstr (err.msg, "badkey.spec:3: unknown key 'colour'") != NULL);
  free (steal_pointer (&out));

  write_spec ("badnet", "name: badnet\nsuite: bookworm\ninternet: maybe\n");
  CHECK (build ("badnet", &out, &err) < 0);
  CHECK (err.code == EINVAL && strstr (err.msg, "badnet.spec:3: internet must be yes or no") != NULL);
  free (steal_pointer (&out));

  write_spec ("nostart", "name: nostart\nstart:\n");
  CHECK (build ("nostart", &out, &err) < 0);
  CHECK (err.code == EINVAL && strstr (err.msg, "nostart.spec:2: start must be a command") != NULL);
  free (steal_pointer (&out));

  write_spec ("cyc1", "include: cyc2\n");
  write_spec ("cyc2", "include: cyc1\n");
  CHECK (build ("cyc1", &out, &err) < 0);
  CHECK (err.code == EINVAL && strstr (err.msg, "cycle") != NULL);
  free (steal_pointer (&out));

  write_spec ("late", "packages: bash\ninclude: cyc1\n");
  CHECK (build ("late", &out, &err) < 0);
  CHECK (err.code == EINVAL && strstr (err.msg, "include must come before") != NULL);
  free (steal_pointer (&out));

  write_spec ("badpkg", "packages: ok bad,comma\n");
  CHECK (build ("badpkg", &out, &err) < 0 && err.code == EINVAL);
  free (steal_pointer (&out));

  write_spec ("badenv", "env: NOEQUALS\n");
  CHECK (build ("badenv", &out, &err) < 0 && err.code == EINVAL);
  free (steal_pointer (&out));

  write_spec ("wrongname", "name: other\n");
  CHECK (build ("wrongname", &out, &err) < 0 && err.code == EINVAL);
  free (steal_pointer (&out));

  /* file: lines are checked before anything is built */
  write_spec ("fileargs", "file: only-one-word\n");
  CHECK (build ("fileargs", &out, &err) < 0 && err.code == EINVAL);
  CHECK (strstr (err.msg, "fileargs.spec:1: expected file: SOURCE DESTINATION") != NULL);
  free (steal_pointer (&out));
  write_spec ("fileabs", "file: /etc/passwd /x\n");
  CHECK (build ("fileabs", &out, &err) < 0 && err.code == EINVAL);
  CHECK (strstr (err.msg, "below the spec directory") != NULL);
  free (steal_pointer (&out));
  write_spec ("fileup", "file: ../secret /x\n");
  CHECK (build ("fileup", &out, &err) < 0 && err.code == EINVAL);
  free (steal_pointer (&out));
  write_spec ("filemissing", "file: files/nope /x\n");
  CHECK (build ("filemissing", &out, &err) < 0 && err.code == ENOENT);
  free (steal_pointer (&out));
  write_spec ("filedest", "file: fileargs.spec relative/x\n");
  CHECK (build ("filedest", &out, &err) < 0 && err.code == EINVAL);
  CHECK (strstr (err.msg, "absolute file path") != NULL);
  free (steal_pointer (&out));
  write_spec ("filedotdot", "file: fileargs.spec /opt/../x\n");
  CHECK (build ("filedotdot", &out, &err) < 0 && err.code == EINVAL);
  free (steal_pointer (&out));
  write_spec ("filedir", "file: fileargs.spec /opt/\n");
  CHECK (build ("filedir", &out, &err) < 0 && err.code == EINVAL);
  free (steal_pointer (&out));
  /* a symlink in the spec directory may not point out of it */
  char link[PATH_MAX + 64];
  snprintf (link, sizeof link, "%s/hostfile", specs);
  CHECK (symlink ("/etc/hostname", link) == 0);
  write_spec ("filelink", "file: hostfile /x\n");
  CHECK (build ("filelink", &out, &err) < 0 && err.code == EINVAL);
  CHECK (strstr (err.msg, "outside the spec directory") != NULL);
  free (steal_pointer (&out));
  char adir[PATH_MAX + 64];
  snprintf (adir, sizeof adir, "%s/adir", specs);
  CHECK (mkdir (adir, 0755) == 0);
  write_spec ("filenotreg", "file: adir /x\n");
  CHECK (build ("filenotreg", &out, &err) < 0 && err.code == EINVAL);
  free (steal_pointer (&out));

  CHECK (build ("nospec", &out, &err) < 0 && err.code == ENOENT);
  free (steal_pointer (&out));

  CHECK (build ("../x", &out, &err) < 0 && err.code == EINVAL);
  free (steal_pointer (&out));

  /* None of the above may have created the template directory. */
  CHECK (access (tdir, F_OK) < 0 && errno == ENOENT);
}

static void
test_load_errors (void)
{
  struct sbx_template t;
  struct sbx_err err;
  static const char *const invalid[] = { "../x", "a/b", "", "..", ".hidden", "-opt", "x..y", "sp ace" };

  CHECK (sbx_template_load (tdir, "nope", &t, &err) < 0);
  CHECK (err.code == ENOENT);
  CHECK (strcmp (err.msg, "unknown template: nope") == 0);
  for (size_t i = 0; i < sizeof invalid / sizeof *invalid; i++)
    {
      CHECK (sbx_template_load (tdir, invalid[i], &t, &err) < 0);
      CHECK (err.code == EINVAL);
    }
}

static void
test_first_build (void)
{
  struct sbx_err err;
  cleanup_free char *out = NULL;

  write_spec ("tinybase", "# the bottom of the include chain\n"
                          "name: tinybase\n"
                          "suite: bookworm\n"
                          "aliases: tinybase-alias\n"
                          "packages: netbase\n"
                          "env: A=1\n"
                          "env: X=base\n"
                          "user: nobody\n"
                          "workdir: /tmp\n"
                          "cpu: 3\n"
                          "start: sh /base-start\n"
                          "setup: echo base > /marker-base\n"
                          "file: files/payload.txt /opt/deep/dir/payload.txt\n");
  write_spec ("tiny", "name: tiny\n"
                      "include: tinybase\n"
                      "\n"
                      "aliases: tiny-v1 tiny-latest\n"
                      "packages: netbase\n"
                      "env: X=tiny\n"
                      "env: B=two words\n"
                      "user: user\n"
                      "workdir: /srv\n"
                      "memory_mb: 300\n"
                      "internet: no\n"
                      "start: sh /opt/start.sh --quietly\n"
                      "ready: test -e /tmp\n"
                      "setup: test -f /marker-base && echo 'it'\"'\"'s tiny' > /marker\n"
                      "setup: cp /opt/deep/dir/payload.txt /payload-seen\n"
                      "setup: test -s \"$SSL_CERT_FILE\" && echo yes > /ca-seen || true\n");
  /* copied in before the setup lines run, with a mode of 0644 */
  char files[PATH_MAX + 64];
  snprintf (files, sizeof files, "%s/files", specs);
  CHECK (mkdir (files, 0755) == 0);
  FILE *pf = fopen (strcat (files, "/payload.txt"), "w");
  CHECK (pf != NULL && fputs ("it's a payload\n", pf) >= 0 && fclose (pf) == 0);
  CHECK (chmod (files, 0600) == 0);

  int r = build ("tiny", &out, &err);
  CHECK (r == 0);
  if (r < 0)
    fprintf (stderr, "build tiny: %s\n--- progress ---\n%s\n", err.msg, out ? out : "");
  CHECK (out != NULL && strstr (out, "template tiny: building with 1 package") != NULL);
  CHECK (out != NULL && strstr (out, "template tiny: done in ") != NULL);

  struct sbx_template t;
  CHECK (sbx_template_load (tdir, "tiny", &t, &err) == 0);
  CHECK (strcmp (t.name, "tiny") == 0);
  char want[PATH_MAX + 64];
  snprintf (want, sizeof want, "%s/tiny/rootfs", tdir);
  CHECK (strcmp (t.rootfs, want) == 0);
  CHECK (has_env (&t, "A=1"));
  CHECK (has_env (&t, "X=tiny"));
  CHECK (count_env_key (&t, "X") == 1);
  CHECK (has_env (&t, "B=two words"));
  CHECK (strcmp (t.user, "user") == 0);
  CHECK (strcmp (t.workdir, "/srv") == 0);
  CHECK (t.cpu_count == 3);
  CHECK (t.memory_mb == 300);
  CHECK (t.disk_mb == 4096);
  CHECK (!t.internet);
  CHECK (t.start_cmd && strcmp (t.start_cmd, "sh /opt/start.sh --quietly") == 0); /* the last start line wins */
  CHECK (t.ready_cmd && strcmp (t.ready_cmd, "test -e /tmp") == 0);
  sbx_template_free (&t);
  CHECK (t.env == NULL);

  /* By alias; aliases of included specs are not inherited. */
  CHECK (sbx_template_load (tdir, "tiny-v1", &t, &err) == 0 && strcmp (t.name, "tiny") == 0);
  sbx_template_free (&t);
  CHECK (sbx_template_load (tdir, "tiny-latest", &t, &err) == 0 && strcmp (t.name, "tiny") == 0);
  sbx_template_free (&t);
  CHECK (sbx_template_load (tdir, "tinybase-alias", &t, &err) < 0 && err.code == ENOENT);

  /* Setup ran in order, inside the root, with the quoting intact. */
  CHECK (strcmp (slurp ("tiny/rootfs/marker-base"), "base\n") == 0);
  CHECK (strcmp (slurp ("tiny/rootfs/marker"), "it's tiny\n") == 0);
  CHECK (exists_in_tdir ("tiny/rootfs/etc/services")); /* from netbase */
  CHECK (strcmp (slurp ("tiny/rootfs/opt/deep/dir/payload.txt"), "it's a payload\n") == 0);
  CHECK (strcmp (slurp ("tiny/rootfs/payload-seen"), "it's a payload\n") == 0);
  struct stat pst;
  char payload[PATH_MAX + 64];
  snprintf (payload, sizeof payload, "%s/tiny/rootfs/opt/deep/dir/payload.txt", tdir);
  CHECK (stat (payload, &pst) == 0 && (pst.st_mode & 07777) == 0644 && pst.st_uid == 0);
  /* the build host's CA bundle was there for the setup lines, and is gone */
  if (access ("/etc/ssl/certs/ca-certificates.crt", R_OK) == 0)
    CHECK (strcmp (slurp ("tiny/rootfs/ca-seen"), "yes\n") == 0);
  CHECK (!exists_in_tdir ("tiny/rootfs/tmp/.sbxd-build-ca.crt"));

  char rootfs[PATH_MAX + 64];
  struct stat st;
  snprintf (rootfs, sizeof rootfs, "%s/tiny/rootfs", tdir);
  CHECK (stat (rootfs, &st) == 0 && st.st_uid == 0 && st.st_gid == 0 && (st.st_mode & 07777) == 0755);

  json_t *j = json_loads (slurp ("tiny/template.json"), 0, NULL);
  CHECK (j != NULL);
  json_t *pk = json_object_get (j, "packages");
  CHECK (json_is_array (pk) && json_array_size (pk) == 1
         && strcmp (json_string_value (json_array_get (pk, 0)), "netbase") == 0);
  CHECK (json_is_string (json_object_get (j, "built_at")));
  CHECK (json_integer_value (json_object_get (j, "cpu_count")) == 3);
  CHECK (json_is_false (json_object_get (j, "internet")));
  CHECK (strcmp (json_string_value (json_object_get (j, "start_cmd")), "sh /opt/start.sh --quietly") == 0);
  /* a template.json from before the key existed means internet access */
  char tj[PATH_MAX + 64];
  snprintf (tj, sizeof tj, "%s/tiny/template.json", tdir);
  json_object_del (j, "internet");
  CHECK (json_dump_file (j, tj, 0) == 0);
  CHECK (sbx_template_load (tdir, "tiny", &t, &err) == 0 && t.internet);
  sbx_template_free (&t);
  json_decref (j);

  CHECK (count_prefixed (".build-") == 0);
}

static void
test_list (void)
{
  struct sbx_err err;
  cleanup_free char *out = NULL;
  size_t len;
  FILE *mem = open_memstream (&out, &len);
  CHECK (sbx_template_list (tdir, mem, &err) == 0);
  fclose (mem);

  char name[64], aliases[256];
  unsigned long mb = 0;
  CHECK (sscanf (out, "%63[^\t]\t%lu\t%255[^\n]\n", name, &mb, aliases) == 3);
  CHECK (strcmp (name, "tiny") == 0);
  CHECK (mb > 20 && mb < 2000);
  CHECK (strcmp (aliases, "tiny-latest,tiny-v1") == 0);
  CHECK (strchr (out, '\n') == out + len - 1); /* exactly one line */
}

/* Aliases are followed only when they name a template plainly. */
static void
test_bad_aliases (void)
{
  struct sbx_template t;
  struct sbx_err err;
  char path[PATH_MAX + 64];

  snprintf (path, sizeof path, "%s/evil", tdir);
  CHECK (symlink ("/etc", path) == 0);
  CHECK (sbx_template_load (tdir, "evil", &t, &err) < 0 && err.code == EINVAL);
  unlink (path);
  CHECK (symlink ("../tiny", path) == 0);
  CHECK (sbx_template_load (tdir, "evil", &t, &err) < 0 && err.code == EINVAL);
  unlink (path);
  CHECK (symlink ("missing", path) == 0);
  CHECK (sbx_template_load (tdir, "evil", &t, &err) < 0 && err.code == ENOENT);
  unlink (path);
}

/* A rebuild that fails must leave the old template and no litter, and
   leftovers of a dead build are cleaned away. */
static void
test_failed_rebuild (void)
{
  struct sbx_err err;
  cleanup_free char *out = NULL;
  char path[PATH_MAX + 64];

  snprintf (path, sizeof path, "%s/.build-tiny-999999/rootfs/junk", tdir);
  CHECK (sbx_mkdir_p (path, 0755, &err) == 0);
  write_spec ("tiny", "include: tinybase\nsetup: echo half > /marker\nsetup: false\n");
  CHECK (build ("tiny", &out, &err) < 0);
  CHECK (strstr (err.msg, "mmdebstrap failed") != NULL);
  CHECK (out != NULL && strstr (out, "removing leftover .build-tiny-999999") != NULL);
  CHECK (count_prefixed (".build-") == 0);
  CHECK (count_prefixed (".old-") == 0);

  struct sbx_template t;
  CHECK (sbx_template_load (tdir, "tiny-v1", &t, &err) == 0);
  sbx_template_free (&t);
  CHECK (strcmp (slurp ("tiny/rootfs/marker"), "it's tiny\n") == 0);
}

static void
test_rebuild (void)
{
  struct sbx_err err;
  cleanup_free char *out = NULL;

  write_spec ("tiny", "include: tinybase\naliases: tiny-v2\nsetup: echo v2 > /marker\n");
  int r = build ("tiny", &out, &err);
  CHECK (r == 0);
  if (r < 0)
    fprintf (stderr, "rebuild tiny: %s\n--- progress ---\n%s\n", err.msg, out ? out : "");
  CHECK (strcmp (slurp ("tiny/rootfs/marker"), "v2\n") == 0);
  CHECK (! exists_in_tdir ("tiny-v1") && ! exists_in_tdir ("tiny-latest"));
  CHECK (strcmp (slurp ("tiny-v2/template.json"), slurp ("tiny/template.json")) == 0);
  CHECK (count_prefixed (".build-") == 0);
  CHECK (count_prefixed (".old-") == 0);
  CHECK (count_prefixed (".alias-") == 0);

  struct sbx_template t;
  CHECK (sbx_template_load (tdir, "tiny", &t, &err) == 0);
  CHECK (has_env (&t, "X=base") && strcmp (t.user, "nobody") == 0 && t.memory_mb == 512);
  sbx_template_free (&t);
}

static void
test_remove (void)
{
  struct sbx_err err;
  struct sbx_template t;
  char lock[PATH_MAX + 64];

  /* A build in progress (its lock held) blocks removal. */
  snprintf (lock, sizeof lock, "%s/.lock-tiny", tdir);
  int fd = open (lock, O_RDWR | O_CLOEXEC);
  CHECK (fd >= 0 && flock (fd, LOCK_EX) == 0);
  CHECK (sbx_template_remove (tdir, "tiny", &err) < 0 && err.code == EBUSY);
  close (fd);

  CHECK (sbx_template_remove (tdir, "tiny-v2", &err) == 0);
  CHECK (sbx_template_load (tdir, "tiny", &t, &err) < 0 && err.code == ENOENT);
  CHECK (sbx_template_load (tdir, "tiny-v2", &t, &err) < 0 && err.code == ENOENT);
  CHECK (! exists_in_tdir ("tiny") && ! exists_in_tdir ("tiny-v2"));
  CHECK (count_prefixed (".old-") == 0);
  CHECK (sbx_template_remove (tdir, "tiny", &err) < 0 && err.code == ENOENT
         && strcmp (err.msg, "unknown template: tiny") == 0);
  CHECK (sbx_template_remove (tdir, "../x", &err) < 0 && err.code == EINVAL);

  cleanup_free char *out = NULL;
  size_t len;
  FILE *mem = open_memstream (&out, &len);
  CHECK (sbx_template_list (tdir, mem, &err) == 0);
  fclose (mem);
  CHECK (len == 0);
}

int
main (void)
{
  struct sbx_err err;
  if (geteuid () != 0)
    fprintf (stderr, "warning: mmdebstrap --mode=root needs root; the builds will fail\n");

  snprintf (base, sizeof base, "/tmp/sbx-test-template-XXXXXX");
  if (mkdtemp (base) == NULL)
    {
      perror ("mkdtemp");
      return 2;
    }
  snprintf (specs, sizeof specs, "%s/specs", base);
  /* Two levels deep: the build must create the directory itself. */
  snprintf (tdir, sizeof tdir, "%s/var/templates", base);
  if (mkdir (specs, 0755) < 0)
    {
      perror (specs);
      return 2;
    }

  test_template_dir ();
  test_spec_errors ();
  test_load_errors ();
  test_first_build ();
  test_list ();
  test_bad_aliases ();
  test_load_errors ();
  test_failed_rebuild ();
  test_rebuild ();
  test_remove ();

  if (sbx_rm_rf (base, &err) < 0)
    fprintf (stderr, "cleanup: %s\n", err.msg);
  printf ("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
