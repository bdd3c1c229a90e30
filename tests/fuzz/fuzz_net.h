/*
 * fuzz_net.h - socket helpers for the fuzz harnesses that talk to the
 * daemon's parts over loopback.  libFuzzer's timers deliver signals, so
 * every wait here goes on after EINTR.
 */
#ifndef SBX_FUZZ_NET_H
#define SBX_FUZZ_NET_H

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>

/* Blocking connect that survives EINTR (the connection goes on in the
   kernel: wait for it and read its result).  0, or -1. */
__attribute__ ((unused)) static int
fuzz_connect (int fd, const struct sockaddr *sa, socklen_t len)
{
  if (connect (fd, sa, len) == 0)
    return 0;
  if (errno != EINTR && errno != EINPROGRESS)
    return -1;
  struct pollfd pfd = { fd, POLLOUT, 0 };
  while (poll (&pfd, 1, 30000) < 0)
    if (errno != EINTR)
      return -1;
  int soerr = 0;
  socklen_t sl = sizeof soerr;
  if (getsockopt (fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 || soerr != 0)
    return -1;
  return 0;
}

/* Is FD readable within MS milliseconds? */
__attribute__ ((unused)) static bool
fuzz_readable (int fd, int ms)
{
  struct timespec t0;
  clock_gettime (CLOCK_MONOTONIC, &t0);
  for (;;)
    {
      struct timespec t;
      clock_gettime (CLOCK_MONOTONIC, &t);
      int64_t left = ms - ((int64_t) (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000);
      if (left <= 0)
        return false;
      struct pollfd pfd = { fd, POLLIN, 0 };
      int r = poll (&pfd, 1, (int) left);
      if (r > 0)
        return true;
      if (r < 0 && errno != EINTR)
        return false;
    }
}

/* libFuzzer's timer (SIGALRM) is for the thread running the inputs: the
   threads a harness starts (the daemon's, fake peers) block it, so that
   it interrupts none of their calls.  Between these two calls, every
   thread started inherits the block. */
#include <signal.h>

static sigset_t fuzz_saved_mask;
static int fuzz_threads_depth;

__attribute__ ((unused)) static void
fuzz_threads_begin (void)
{
  if (fuzz_threads_depth++)
    return;
  sigset_t s;
  sigemptyset (&s);
  sigaddset (&s, SIGALRM);
  pthread_sigmask (SIG_BLOCK, &s, &fuzz_saved_mask);
}

__attribute__ ((unused)) static void
fuzz_threads_end (void)
{
  if (--fuzz_threads_depth == 0)
    pthread_sigmask (SIG_SETMASK, &fuzz_saved_mask, NULL);
}

#endif
