/*
 * test_disk.c - sandbox disks (src/core/disk.c) against the real kernel:
 * many threads attaching disks at the same moment all get a loop device.
 *
 * LOOP_CTL_GET_FREE names the lowest free device without taking it, so
 * every thread of a burst is handed the same one; all but one lose the
 * race and ask again.  A burst of creates once failed with "no free loop
 * device" when a thread lost more races than it allowed itself.
 *
 * Must run as root.  Images live in a fresh directory under /tmp and are
 * removed at the end, and so are the loop devices this made.
 */
#include "core/disk.h"
#include "common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <linux/loop.h>
#include <unistd.h>

#include "check.h"

#define THREADS 128
#define ROUNDS 4
#define SIZE_MB 16

static pthread_barrier_t go;
static char dir[64];

struct attach {
  int n;
  int fd;
  int loop_nr;
  char error[512];
};

static void *
attach_main (void *arg)
{
  struct attach *a = arg;
  char image[128];
  snprintf (image, sizeof image, "%s/disk%d.img", dir, a->n);
  pthread_barrier_wait (&go);
  struct sbx_err err;
  a->fd = sbx_disk_mount (image, &a->loop_nr, &err);
  if (a->fd < 0)
    snprintf (a->error, sizeof a->error, "%s", err.msg);
  return NULL;
}

int
main (void)
{
  snprintf (dir, sizeof dir, "/tmp/sbxd-test-disk-XXXXXX");
  if (mkdtemp (dir) == NULL)
    {
      perror ("mkdtemp");
      return 1;
    }
  char blank[128];
  snprintf (blank, sizeof blank, "%s/blank.img", dir);
  struct sbx_err err;
  int formatted = sbx_disk_format (blank, SIZE_MB, &err);
  CHECK (formatted == 0);
  if (formatted < 0)
    fprintf (stderr, "format: %s\n", err.msg);
  int src = open (blank, O_RDONLY | O_CLOEXEC);
  for (int i = 0; i < THREADS && src >= 0; i++)
    {
      char image[128];
      snprintf (image, sizeof image, "%s/disk%d.img", dir, i);
      int dst = open (image, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
      uint64_t bytes;
      CHECK (dst >= 0 && sbx_disk_copy (src, dst, &bytes, &err) == 0);
      if (dst >= 0)
        close (dst);
    }
  if (src >= 0)
    close (src);

  /* every thread attaches at once: all succeed, each on a device of its
     own; then the mounts go, the devices clear themselves and are removed */
  static struct attach a[THREADS];
  pthread_t t[THREADS];
  int ctl = open ("/dev/loop-control", O_RDWR | O_CLOEXEC);
  CHECK (ctl >= 0);
  for (int round = 0; round < ROUNDS; round++)
    {
      /* free devices ready, as a daemon that has run a while keeps them:
         the threads then race for the same ones */
      int added[THREADS], n_added = 0;
      for (int nr = 0; nr < 1 << 16 && n_added < THREADS && ctl >= 0; nr++)
        if (ioctl (ctl, LOOP_CTL_ADD, nr) >= 0)
          added[n_added++] = nr;
      pthread_barrier_init (&go, NULL, THREADS);
      for (int i = 0; i < THREADS; i++)
        {
          a[i] = (struct attach) { .n = i, .fd = -1, .loop_nr = -1 };
          CHECK (pthread_create (&t[i], NULL, attach_main, &a[i]) == 0);
        }
      int ok = 0;
      for (int i = 0; i < THREADS; i++)
        {
          pthread_join (t[i], NULL);
          if (a[i].fd >= 0)
            ok++;
          else
            fprintf (stderr, "attach %d: %s\n", i, a[i].error);
        }
      pthread_barrier_destroy (&go);
      printf ("round %d: %d of %d attached at once\n", round, ok, THREADS);
      CHECK (ok == THREADS);
      int distinct = 1;
      for (int i = 0; i < THREADS; i++)
        for (int j = i + 1; j < THREADS; j++)
          if (a[i].fd >= 0 && a[j].fd >= 0 && a[i].loop_nr == a[j].loop_nr)
            distinct = 0;
      CHECK (distinct);
      for (int i = 0; i < THREADS; i++)
        if (a[i].fd >= 0)
          close (a[i].fd);
      for (int i = 0; i < THREADS; i++)
        if (a[i].loop_nr >= 0)
          for (int tries = 0; tries < 100 && sbx_disk_loop_remove (a[i].loop_nr) == -EBUSY; tries++)
            usleep (20000);
      for (int i = 0; i < n_added; i++)
        sbx_disk_loop_remove (added[i]);
    }
  if (ctl >= 0)
    close (ctl);
  CHECK (sbx_rm_rf (dir, &err) == 0);
  printf ("test_disk: %d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
