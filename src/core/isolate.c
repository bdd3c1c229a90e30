/*
 * isolate.c - the privileged steps that turn a child process into a
 * sandbox, in one place and in a fixed order (after bubblewrap):
 *
 *   parent                                 child
 *   the spawner: clone(NEWUSER|NEWNS|NEWPID|NEWNET|NEWIPC|NEWUTS)
 *   write uid_map / gid_map                 (waits)
 *   put the child in its cgroups
 *   idmapped template tree (open_tree +
 *     mount_setattr MOUNT_ATTR_IDMAP), and
 *     so the snapshot layers and the disk
 *   overlay: lower = layers, that tree;
 *     upper and work on the disk; fsmount
 *   send the overlay fd, environment
 *     and filesystem rules  ------------->  become root of the new userns
 *                                           unshare(NEWCGROUP)
 *                                           / made private, overlay moved in
 *                                           /proc, minimal /dev, ro /sys,
 *                                           masked /proc paths, resolv.conf,
 *                                           filesystem policy mounts, hostname
 *                                           pivot_root, detach the old root
 *                                           with a policy: nested user and
 *                                             mount namespaces (locked mounts)
 *                                           rlimits, seccomp, then the
 *                                           capability bounding set (last)
 *   sees EOF on the sync socket  <-------   execveat(sbx-init)
 *
 * The overlay is mounted by the daemon, in the initial user namespace,
 * because overlayfs inside a user namespace cannot copy up lower files
 * owned by ids the namespace does not map; the idmapped lower layer makes
 * the root-owned template look owned by the sandbox's root, so copy-up
 * works and the sandbox's root can change any file.  The overlay is never
 * attached in the host's mount namespace: it goes straight from fsmount to
 * the child, so nothing can leak there.
 *
 * The child is cloned by the spawner (a helper process forked from the
 * daemon, see "the spawner" below), not by the daemon; it calls no
 * malloc: everything it needs comes in the spawner's request.
 */
#include "isolate.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/mount.h>
#include <linux/openat2.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <net/route.h>
#include <sys/ioctl.h>
#include <poll.h>
#include <sched.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <stdlib.h>
#include <unistd.h>

#include "../common/log.h"
#include "../common/util.h"
#include "cgroup.h"
#include "fspolicy.h"
#include "seccomp.h"

#ifndef OVERLAYFS_SUPER_MAGIC
#define OVERLAYFS_SUPER_MAGIC 0x794c7630
#endif

#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif

/* Capabilities root inside a sandbox keeps: Docker's default set without
   NET_RAW and MKNOD. */
static const int kept_caps[] = {
  CAP_CHOWN,  CAP_DAC_OVERRIDE, CAP_FSETID, CAP_FOWNER,           CAP_SETGID, CAP_SETUID,
  CAP_SETFCAP, CAP_SETPCAP,     CAP_KILL,   CAP_NET_BIND_SERVICE, CAP_SYS_CHROOT, CAP_AUDIT_WRITE,
};

struct boot_header {
  uint32_t nofile;
  uint32_t env_len;
  uint32_t net_addr, net_gw; /* host byte order; 0: leave eth0 alone */
  uint32_t fs_len;           /* bytes of filesystem rules (fspolicy.h) */
  uint32_t n_volumes;        /* volume mounts passed after the two fds */
  uint32_t vol_len;          /* bytes of their paths, NUL-separated, after the rules */
  uint32_t no_egress_ca;     /* the spec's egress CA is not installed (a layer build) */
  uint32_t ahead;            /* booted ahead of its claim: keeps its parent-death signal */
};

#define BOOT_FDS_MAX (2 + SBX_FS_MOUNTS_MAX)

/* Send N bytes of BUF and the NFDS (at most BOOT_FDS_MAX) descriptors FDS
   on SOCK as one message. */
static ssize_t
send_with_fds (int sock, const void *buf, size_t n, const int *fds, size_t nfds)
{
  struct iovec iov = { (void *) buf, n };
  union {
    char buf[CMSG_SPACE (BOOT_FDS_MAX * sizeof (int))];
    struct cmsghdr align;
  } u;
  memset (&u, 0, sizeof u);
  struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };
  if (nfds > 0)
    {
      m.msg_control = u.buf;
      m.msg_controllen = CMSG_SPACE (nfds * sizeof (int));
      struct cmsghdr *c = CMSG_FIRSTHDR (&m);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN (nfds * sizeof (int));
      memcpy (CMSG_DATA (c), fds, nfds * sizeof (int));
    }
  ssize_t r;
  do
    r = sendmsg (sock, &m, MSG_NOSIGNAL);
  while (r < 0 && errno == EINTR);
  return r;
}

/* One message from SOCK into BUF (at most N bytes; FLAGS: recvmsg's, such
   as MSG_WAITALL) and up to MAXFDS descriptors into FDS (*NFDS of them,
   close-on-exec).  A message cut short (MSG_TRUNC, MSG_CTRUNC) closes what
   came and fails with EMSGSIZE. */
static ssize_t
recv_with_fds (int sock, void *buf, size_t n, int *fds, size_t maxfds, size_t *nfds, int flags)
{
  struct iovec iov = { buf, n };
  union {
    char buf[CMSG_SPACE (BOOT_FDS_MAX * sizeof (int))];
    struct cmsghdr align;
  } u;
  struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf };
  ssize_t r;
  do
    r = recvmsg (sock, &m, MSG_CMSG_CLOEXEC | flags);
  while (r < 0 && errno == EINTR);
  *nfds = 0;
  if (r < 0)
    return r;
  for (struct cmsghdr *c = CMSG_FIRSTHDR (&m); c; c = CMSG_NXTHDR (&m, c))
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
      {
        size_t k = (c->cmsg_len - CMSG_LEN (0)) / sizeof (int);
        for (size_t i = 0; i < k; i++)
          {
            int fd;
            memcpy (&fd, CMSG_DATA (c) + i * sizeof (int), sizeof fd);
            if (*nfds < maxfds)
              fds[(*nfds)++] = fd;
            else
              close (fd);
          }
      }
  if (m.msg_flags & (MSG_TRUNC | MSG_CTRUNC))
    {
      for (size_t i = 0; i < *nfds; i++)
        close (fds[i]);
      *nfds = 0;
      errno = EMSGSIZE;
      return -1;
    }
  return r;
}

/* Send the root file system fd, the template lock and the volumes (N_FDS
   in all) with the boot header, then the environment as NUL-separated
   strings, then the filesystem rules, then the volumes' paths. */
static int
send_boot (int sock, const int *fds, size_t n_fds, const struct boot_header *h, const char *env, size_t env_len,
           const char *fs, size_t fs_len, const char *vol, size_t vol_len)
{
  if (send_with_fds (sock, h, sizeof *h, fds, n_fds) != (ssize_t) sizeof *h)
    return -1;
  if (sbx_write_full (sock, env, env_len) < 0)
    return -1;
  if (fs_len > 0 && sbx_write_full (sock, fs, fs_len) < 0)
    return -1;
  return vol_len == 0 || sbx_write_full (sock, vol, vol_len) >= 0 ? 0 : -1;
}

static int boot_volume_fds[SBX_FS_MOUNTS_MAX];

static int
recv_boot (int sock, struct boot_header *h, int *lock_fd)
{
  int fds[BOOT_FDS_MAX];
  size_t n_fds;
  if (recv_with_fds (sock, h, sizeof *h, fds, BOOT_FDS_MAX, &n_fds, MSG_WAITALL) != (ssize_t) sizeof *h
      || h->n_volumes > SBX_FS_MOUNTS_MAX || n_fds != 2 + h->n_volumes)
    return -1;
  *lock_fd = fds[1];
  for (uint32_t i = 0; i < h->n_volumes; i++)
    boot_volume_fds[i] = fds[2 + i];
  return fds[0];
}

/* ---- the child ---- */

static int child_sync = -1;

static void __attribute__ ((noreturn, format (printf, 1, 2)))
child_fail (const char *fmt, ...)
{
  int e = errno;
  char buf[512];
  va_list ap;
  va_start (ap, fmt);
  int n = vsnprintf (buf, sizeof buf, fmt, ap);
  va_end (ap);
  if (n >= 0 && (size_t) n < sizeof buf)
    snprintf (buf + n, sizeof buf - (size_t) n, ": %s", strerror (e));
  if (child_sync >= 0 && write (child_sync, buf, strlen (buf)) < 0)
    {
    }
  _exit (1);
}

static void
bind_dev (const char *name)
{
  char host[64], inside[64];
  snprintf (host, sizeof host, "/dev/%s", name);
  snprintf (inside, sizeof inside, "dev/%s", name);
  int fd = open (inside, O_CREAT | O_WRONLY | O_CLOEXEC, 0666);
  if (fd < 0)
    child_fail ("create %s", inside);
  close (fd);
  if (mount (host, inside, NULL, MS_BIND, NULL) < 0)
    child_fail ("bind %s", host);
}

static void
ensure_dir (const char *path, mode_t mode)
{
  if (mkdir (path, mode) < 0 && errno != EEXIST)
    child_fail ("mkdir %s", path);
}

/* Remount an existing mount read-only, keeping the flags the kernel locked
   on it (a user namespace may not clear them). */
static void
remount_ro (const char *path)
{
  if (mount (path, path, NULL, MS_BIND | MS_REC, NULL) < 0)
    {
      if (errno == ENOENT)
        return;
      child_fail ("bind %s", path);
    }
  if (mount (NULL, path, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
    child_fail ("remount %s read-only", path);
}

static int block_dir_fd = -1, block_file_fd = -1;

/* Cover PATH: a file with /dev/null, a directory with the host's empty
   mode 000 directory that blocked paths get (below), read-only.  Not a
   tmpfs of its own: every file system instance is a superblock, and the
   kernel gives each memory cgroup a slot for every superblock's shrinker
   there has been on the machine (1 KiB per 64), so a few more superblocks
   per sandbox cost about a MiB more per sandbox at 10,000 sandboxes. */
static void
mask_path (const char *path)
{
  struct stat st;
  if (lstat (path, &st) < 0)
    return;
  if (!S_ISDIR (st.st_mode))
    {
      if (mount ("/dev/null", path, NULL, MS_BIND, NULL) < 0)
        child_fail ("mask %s", path);
      return;
    }
  if (block_dir_fd < 0)
    {
      if (mount ("tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=0,mode=0555") < 0)
        child_fail ("mask %s", path);
      return;
    }
  int tree = (int) syscall (SYS_open_tree, block_dir_fd, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH);
  struct mount_attr attr = { .attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC };
  if (tree < 0 || syscall (SYS_mount_setattr, tree, "", AT_EMPTY_PATH, &attr, sizeof attr) < 0
      || syscall (SYS_move_mount, tree, "", AT_FDCWD, path, MOVE_MOUNT_F_EMPTY_PATH) < 0)
    child_fail ("mask %s", path);
  close (tree);
}

static void
drop_capabilities (void)
{
  uint64_t keep = 0;
  for (size_t i = 0; i < sizeof kept_caps / sizeof kept_caps[0]; i++)
    keep |= 1ull << kept_caps[i];
  for (int cap = 0; cap <= 63; cap++)
    if (!(keep & (1ull << cap)) && prctl (PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
      child_fail ("drop capability %d", cap);
  prctl (PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
  struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };
  struct __user_cap_data_struct data[2];
  memset (data, 0, sizeof data);
  for (int i = 0; i < 2; i++)
    {
      data[i].effective = (uint32_t) (keep >> (32 * i));
      data[i].permitted = (uint32_t) (keep >> (32 * i));
      data[i].inheritable = 0;
    }
  if (syscall (SYS_capset, &hdr, data) < 0)
    child_fail ("capset");
}

/* The boot message, read into static memory: the child may not malloc. */
static char boot_env_buf[SBX_ISOLATE_ENV_MAX];
static char *boot_env[SBX_ISOLATE_ENV_COUNT + 1];

/* Close every inherited fd but KEEP[]: the daemon's other descriptors
   (the disks and sockets of other sandboxes) must not be pinned by this
   child while it waits to boot. */
static void
close_inherited (int *keep, size_t n)
{
  /* sort the few fds to keep, then close the gaps between them */
  for (size_t i = 1; i < n; i++)
    for (size_t j = i; j > 0 && keep[j - 1] > keep[j]; j--)
      {
        int t = keep[j];
        keep[j] = keep[j - 1];
        keep[j - 1] = t;
      }
  unsigned from = 3;
  for (size_t i = 0; i < n; i++)
    {
      if ((unsigned) keep[i] > from)
        close_range (from, (unsigned) keep[i] - 1, 0);
      if ((unsigned) keep[i] + 1 > from)
        from = (unsigned) keep[i] + 1;
    }
  close_range (from, ~0u, 0);
}

static void
set_inet (int sock, unsigned long req, struct ifreq *ifr, uint32_t ip, const char *what)
{
  struct sockaddr_in *sin = (struct sockaddr_in *) &ifr->ifr_addr;
  memset (sin, 0, sizeof *sin);
  sin->sin_family = AF_INET;
  sin->sin_addr.s_addr = htonl (ip);
  if (ioctl (sock, req, ifr) < 0)
    child_fail ("%s", what);
}

/* Loopback up; eth0 (moved in by the daemon) addressed, up, with the
   default route through the host side, and without IPv6: sandboxes are
   IPv4-only beyond their loopback, so no address family escapes the
   host's IPv4 rules (which drop IPv6 from sandboxes anyway).  Called with
   proc/ mounted and writable. */
static void
setup_network (const struct boot_header *h, bool open_low_ports)
{
  int sock = socket (AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  struct ifreq ifr;
  memset (&ifr, 0, sizeof ifr);
  snprintf (ifr.ifr_name, sizeof ifr.ifr_name, "lo");
  if (sock < 0 || ioctl (sock, SIOCGIFFLAGS, &ifr) < 0)
    child_fail ("loopback flags");
  ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
  if (ioctl (sock, SIOCSIFFLAGS, &ifr) < 0)
    child_fail ("bring loopback up");
  /* no IPv6 but on the loopback, and no forwarding (a new namespace
     copies the host's, which sbxd turns on) */
  static const char *const knobs[][2] = { { "proc/sys/net/ipv6/conf/default/disable_ipv6", "1" },
                                          { "proc/sys/net/ipv6/conf/eth0/disable_ipv6", "1" },
                                          { "proc/sys/net/ipv4/ip_forward", "0" } };
  for (size_t i = 0; i < sizeof knobs / sizeof knobs[0]; i++)
    {
      int fd = open (knobs[i][0], O_WRONLY | O_CLOEXEC);
      if (fd >= 0 && write (fd, knobs[i][1], 1) != 1)
        child_fail ("set %s", knobs[i][0]);
      if (fd >= 0)
        close (fd);
    }
  /* see lock_mounts */
  if (open_low_ports)
    {
      int fd = open ("proc/sys/net/ipv4/ip_unprivileged_port_start", O_WRONLY | O_CLOEXEC);
      if (fd < 0 || write (fd, "0", 1) != 1)
        child_fail ("open the low ports");
      close (fd);
    }
  if (h->net_addr)
    {
      memset (&ifr, 0, sizeof ifr);
      snprintf (ifr.ifr_name, sizeof ifr.ifr_name, "eth0");
      set_inet (sock, SIOCSIFADDR, &ifr, h->net_addr, "address eth0");
      set_inet (sock, SIOCSIFNETMASK, &ifr, 0xfffffffcu, "netmask of eth0");
      if (ioctl (sock, SIOCGIFFLAGS, &ifr) < 0)
        child_fail ("eth0 flags");
      ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
      if (ioctl (sock, SIOCSIFFLAGS, &ifr) < 0)
        child_fail ("bring eth0 up");
      struct rtentry rt;
      memset (&rt, 0, sizeof rt);
      ((struct sockaddr_in *) &rt.rt_dst)->sin_family = AF_INET;
      ((struct sockaddr_in *) &rt.rt_genmask)->sin_family = AF_INET;
      struct sockaddr_in *gw = (struct sockaddr_in *) &rt.rt_gateway;
      gw->sin_family = AF_INET;
      gw->sin_addr.s_addr = htonl (h->net_gw);
      rt.rt_flags = RTF_UP | RTF_GATEWAY;
      if (ioctl (sock, SIOCADDRT, &rt) < 0)
        child_fail ("default route");
    }
  close (sock);
}

/* Open PATH (absolute) with every step resolved inside ROOT: symlinks and
   ".." cannot leave it, and /proc's magic links are not followed. */
static int
open_in_root (int root, const char *path, int flags)
{
  struct open_how how = { .flags = (uint64_t) (flags | O_CLOEXEC), .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS };
  return (int) syscall (SYS_openat2, root, path, &how, sizeof how);
}

/* /etc/resolv.conf naming the gateway, where the DNS filter answers;
   written through ROOT, the sandbox's root file system (so a symlink can
   only point inside), before the filesystem policy may block /etc or make
   it read-only. */
static void
write_resolv_conf (const struct boot_header *h, int root)
{
  if (h->net_gw == 0)
    return;
  char text[128];
  struct in_addr a = { htonl (h->net_gw) };
  char ip[INET_ADDRSTRLEN];
  inet_ntop (AF_INET, &a, ip, sizeof ip);
  int n = snprintf (text, sizeof text, "nameserver %s\noptions timeout:2 attempts:2\n", ip);
  int etc = open_in_root (root, "/etc", O_PATH | O_DIRECTORY);
  if (etc < 0)
    child_fail ("open /etc");
  unlinkat (etc, "resolv.conf", 0);
  int fd = openat (etc, "resolv.conf", O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd < 0 || write (fd, text, (size_t) n) != n)
    child_fail ("write /etc/resolv.conf");
  close (fd);
  close (etc);
}

/* /etc/hosts naming the sandbox's host name beside localhost, as
   container runtimes write it, so that programs resolving their own name
   (sudo, many servers) find it; written through ROOT like resolv.conf.  A
   file the template made is replaced. */
static void
write_hosts (const char *hostname, int root)
{
  char text[256];
  int n = snprintf (text, sizeof text, "127.0.0.1\tlocalhost %s\n::1\tlocalhost ip6-localhost ip6-loopback\n",
                    hostname);
  if (n < 0 || (size_t) n >= sizeof text)
    child_fail ("host name too long");
  int etc = open_in_root (root, "/etc", O_PATH | O_DIRECTORY);
  if (etc < 0)
    return; /* an image without /etc has no use for it */
  unlinkat (etc, "hosts", 0);
  int fd = openat (etc, "hosts", O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd < 0 || write (fd, text, (size_t) n) != n)
    child_fail ("write /etc/hosts");
  close (fd);
  close (etc);
}

/* The directory PATH (absolute, short) inside ROOT, each missing part
   made (0755): an O_PATH descriptor, or -1. */
static int
dir_in_root (int root, const char *path)
{
  char p[128];
  size_t n = strlen (path);
  if (n == 0 || n >= sizeof p)
    return -1;
  memcpy (p, path, n + 1);
  for (size_t i = 1;; i++)
    {
      if (p[i] != '/' && p[i] != '\0')
        continue;
      char save = p[i];
      p[i] = '\0';
      int d = open_in_root (root, p, O_PATH | O_DIRECTORY);
      if (d < 0 && errno == ENOENT)
        {
          char *slash = strrchr (p, '/');
          *slash = '\0';
          int parent = open_in_root (root, p[0] ? p : "/", O_PATH | O_DIRECTORY);
          *slash = '/';
          if (parent >= 0)
            {
              mkdirat (parent, slash + 1, 0755);
              close (parent);
            }
          d = open_in_root (root, p, O_PATH | O_DIRECTORY);
        }
      p[i] = save;
      if (d < 0 || save == '\0')
        return d;
      close (d);
    }
}

/* The egress CA (netproxy.h) trusted inside: its own file under
   /usr/local/share/ca-certificates (where update-ca-certificates finds
   it, should the sandbox rebuild its bundle), and appended to the
   template's bundle, copied into the sandbox's overlay (once: a bundle
   that ends with it already is left alone, as after a resume).  Written
   through ROOT like resolv.conf, before the filesystem policy.  Best
   effort: a template without a trust store gets the file only. */
static void
install_egress_ca (const char *pem, int root)
{
  if (pem == NULL)
    return;
  size_t n = strlen (pem);
  const char *file = strrchr (SBX_ISOLATE_CA_FILE, '/');
  char dir[128];
  snprintf (dir, sizeof dir, "%.*s", (int) (file - SBX_ISOLATE_CA_FILE), SBX_ISOLATE_CA_FILE);
  int d = dir_in_root (root, dir);
  if (d >= 0)
    {
      unlinkat (d, file + 1, 0);
      int fd = openat (d, file + 1, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
      if (fd >= 0)
        {
          if (sbx_write_full (fd, pem, n) < 0)
            unlinkat (d, file + 1, 0);
          close (fd);
        }
      close (d);
    }
  const char *bundle = strrchr (SBX_ISOLATE_CA_BUNDLE, '/');
  snprintf (dir, sizeof dir, "%.*s", (int) (bundle - SBX_ISOLATE_CA_BUNDLE), SBX_ISOLATE_CA_BUNDLE);
  int certs = open_in_root (root, dir, O_PATH | O_DIRECTORY);
  if (certs < 0)
    return; /* no trust store here */
  char buf[16384];
  int old = open_in_root (root, SBX_ISOLATE_CA_BUNDLE, O_RDONLY);
  struct stat st;
  if (old >= 0 && (fstat (old, &st) < 0 || !S_ISREG (st.st_mode)))
    {
      close (old);
      old = -1;
    }
  if (old >= 0 && n <= sizeof buf && (size_t) st.st_size >= n
      && pread (old, buf, n, st.st_size - (off_t) n) == (ssize_t) n && memcmp (buf, pem, n) == 0)
    {
      close (old);
      close (certs);
      return; /* there already */
    }
  static const char tmp[] = ".ca-certificates.crt.sbxd";
  int fd = openat (certs, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
  bool ok = fd >= 0;
  char last = '\n';
  for (ssize_t k; ok && old >= 0 && (k = read (old, buf, sizeof buf)) != 0;)
    {
      ok = k > 0 && sbx_write_full (fd, buf, (size_t) k) >= 0;
      if (ok)
        last = buf[k - 1];
    }
  ok = ok && (last == '\n' || sbx_write_full (fd, "\n", 1) >= 0) && sbx_write_full (fd, pem, n) >= 0;
  if (fd >= 0)
    close (fd);
  if (old >= 0)
    close (old);
  if (!ok || renameat (certs, tmp, certs, bundle + 1) < 0)
    unlinkat (certs, tmp, 0);
  close (certs);
}

/* ---- the filesystem policy (fspolicy.h) ----

   Each rule is a mount in the sandbox's mount namespace, made before
   pivot_root, with its path resolved inside the sandbox's root:

   - read-only: a recursive bind of the path onto itself, MOUNT_ATTR_RDONLY;
   - read-write: the same without MOUNT_ATTR_RDONLY (it opens up a path
     below a read-only one);
   - blocked: an empty directory (or, over a file, an empty file) of the
     host, mode 000 and owned by the host's root, bound read-only over the
     path.  The host's root is not mapped in the sandbox's user namespace,
     so no one inside is its owner, and CAP_DAC_OVERRIDE and
     CAP_DAC_READ_SEARCH do not apply to it either (the kernel grants them
     only over inodes whose owner and group the namespace maps;
     capable_wrt_inode_uidgid): with mode 000 nothing can open, list,
     enter or write it, root included, and chmod needs ownership or
     CAP_FOWNER, which fails the same way.  A mode 000 tmpfs made inside
     would not do: it would belong to the sandbox's root, which
     DAC_OVERRIDE lets through.  What was under the path stays
     unreachable: the dentry is covered in this namespace, mounts cannot
     be undone (see lock_mounts), and open_by_handle_at is not allowed.
     What it shows of the host: statfs of a blocked path reports the file
     system of the daemon's state directory (sizes, as the /dev nodes
     bound from the host report the host's devtmpfs).

   Rules come shallowest first, so a deeper rule lands on top of the one
   above it.  Paths that do not exist are created (directories) first,
   all of them before any mount, so that a read-only parent does not stop
   the creation of a child's path. */

static char boot_fs_buf[SBX_FS_ENCODED_MAX];
static struct {
  char access; /* 'r', 'w', 'b' */
  const char *path;
} boot_fs[SBX_FS_RULES_MAX];
static size_t boot_fs_n;
/* /etc/passwd and /etc/group as they were before the policy, for sbx-init
   (fds 5 and 6), which resolves users even when /etc is blocked */
static int passwd_fd = -1, group_fd = -1;

static void
parse_fs_rules (size_t len)
{
  if (len > 0 && boot_fs_buf[len - 1] != '\0')
    {
      errno = EINVAL;
      child_fail ("filesystem rules");
    }
  for (size_t i = 0; i < len && boot_fs_n < SBX_FS_RULES_MAX; i += strlen (boot_fs_buf + i) + 1)
    {
      boot_fs[boot_fs_n].access = boot_fs_buf[i];
      boot_fs[boot_fs_n].path = boot_fs_buf + i + 1;
      boot_fs_n++;
    }
}

/* Called while this process still has the daemon's host uid, so the
   daemon's state directory can be entered.  What masks a directory of
   /proc or /sys too (mask_path). */
static void
open_block_sources (const char *dir)
{
  if (dir == NULL)
    return;
  char path[4096];
  snprintf (path, sizeof path, "%s/dir", dir);
  block_dir_fd = open (path, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  snprintf (path, sizeof path, "%s/file", dir);
  block_file_fd = open (path, O_PATH | O_NOFOLLOW | O_CLOEXEC);
  struct stat d, f;
  if (block_dir_fd < 0 || block_file_fd < 0 || fstat (block_dir_fd, &d) < 0 || fstat (block_file_fd, &f) < 0)
    child_fail ("open %s", path);
  /* whatever happened to them, never expose anything but mode 000 */
  if ((d.st_mode & 07777) != 0 || !S_ISREG (f.st_mode) || (f.st_mode & 07777) != 0)
    {
      errno = EPERM;
      child_fail ("%s: the blocking placeholders are not mode 000", dir);
    }
}

static int
open_snapshot (int root, const char *path)
{
  int fd = open_in_root (root, path, O_RDONLY | O_NONBLOCK | O_NOCTTY);
  struct stat st;
  struct statfs sf;
  /* a plain file of the image, not something a symlink leads to in /proc */
  if (fd >= 0 && (fstat (fd, &st) < 0 || !S_ISREG (st.st_mode) || fstatfs (fd, &sf) < 0
                  || sf.f_type != OVERLAYFS_SUPER_MAGIC))
    {
      close (fd);
      fd = -1;
    }
  return fd;
}

/* Create PATH as a directory, and its missing parents, inside ROOT; the
   last one gets MODE (so a new read-write path is writable by the
   template's user, like /tmp), parents 0755. */
static void
create_path (int root, const char *path, mode_t mode)
{
  char buf[SBX_FS_PATH_MAX];
  snprintf (buf, sizeof buf, "%s", path);
  char *c = buf + 1;
  for (;;)
    {
      char *slash = strchr (c, '/');
      if (slash)
        *slash = '\0';
      int fd = open_in_root (root, buf, O_PATH);
      if (fd < 0 && errno != ENOENT)
        child_fail ("open %s", buf);
      if (fd < 0)
        {
          int parent = root;
          if (c - 1 > buf)
            {
              c[-1] = '\0';
              parent = open_in_root (root, buf, O_PATH | O_DIRECTORY);
              c[-1] = '/';
              if (parent < 0)
                child_fail ("open the parent of %s", buf);
            }
          if (mkdirat (parent, c, 0700) < 0)
            child_fail ("create %s", buf);
          fd = openat (parent, c, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
          if (fd < 0 || fchmod (fd, slash ? 0755 : mode) < 0)
            child_fail ("set the mode of %s", buf);
          if (parent != root)
            close (parent);
        }
      close (fd);
      if (slash == NULL)
        break;
      *slash = '/';
      c = slash + 1;
    }
}

static void
mount_rule (int root, const struct stat *root_st, char access, const char *path)
{
  int target = open_in_root (root, path, O_PATH);
  struct stat st;
  struct statfs sf;
  if (target < 0 || fstat (target, &st) < 0 || fstatfs (target, &sf) < 0)
    child_fail ("open %s", path);
  /* through a symlink of the image a path could name the root itself or a
     kernel file system (/proc/sys...): rules are for the sandbox's disk */
  if (sf.f_type != OVERLAYFS_SUPER_MAGIC || (st.st_dev == root_st->st_dev && st.st_ino == root_st->st_ino))
    {
      errno = EXDEV;
      child_fail ("filesystem rule %s: not a path of the sandbox's own files", path);
    }
  int tree;
  struct mount_attr attr = { 0 };
  unsigned at = AT_EMPTY_PATH;
  if (access == 'b')
    {
      tree = (int) syscall (SYS_open_tree, S_ISDIR (st.st_mode) ? block_dir_fd : block_file_fd, "",
                            OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH);
      attr.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;
    }
  else
    {
      /* recursive: a rule reached through a symlink may lie below this
         path yet have been mounted before it, and must stay */
      tree = (int) syscall (SYS_open_tree, target, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH | AT_RECURSIVE);
      if (access == 'r')
        {
          attr.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
          at |= AT_RECURSIVE;
        }
      else
        attr.attr_clr = MOUNT_ATTR_RDONLY;
    }
  if (tree < 0)
    child_fail ("filesystem rule %s: open_tree", path);
  if (syscall (SYS_mount_setattr, tree, "", at, &attr, sizeof attr) < 0)
    child_fail ("filesystem rule %s: mount_setattr", path);
  if (syscall (SYS_move_mount, tree, "", target, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
    child_fail ("filesystem rule %s: mount", path);
  close (tree);
  close (target);
}

static void
apply_fs_policy (int root)
{
  struct stat root_st;
  if (fstat (root, &root_st) < 0)
    child_fail ("stat the root file system");
  passwd_fd = open_snapshot (root, "/etc/passwd");
  group_fd = open_snapshot (root, "/etc/group");
  for (size_t i = 0; i < boot_fs_n; i++)
    {
      int fd = open_in_root (root, boot_fs[i].path, O_PATH);
      if (fd >= 0)
        close (fd);
      else if (errno == ENOENT)
        create_path (root, boot_fs[i].path, boot_fs[i].access == 'w' ? 01777 : 0755);
      else
        child_fail ("open %s", boot_fs[i].path);
    }
  for (size_t i = 0; i < boot_fs_n; i++)
    mount_rule (root, &root_st, boot_fs[i].access, boot_fs[i].path);
}

/* ---- volumes ----

   Each volume comes as a detached mount, already idmapped like the
   sandbox's layers (ids 0..65535 on the volume are the sandbox's own), and
   is moved onto its path, resolved inside the sandbox's root (a symlink
   of the image cannot lead out of it) and made a directory if missing.
   Like a rule's, the path must land on the sandbox's own files, not on a
   kernel file system nor on the root itself. */

static char boot_vol_buf[SBX_FS_MOUNTS_MAX * SBX_FS_PATH_MAX];

static void
mount_volumes (int root, const struct boot_header *h)
{
  struct stat root_st;
  if (fstat (root, &root_st) < 0)
    child_fail ("stat the root file system");
  if (h->vol_len > 0 && boot_vol_buf[h->vol_len - 1] != '\0')
    {
      errno = EINVAL;
      child_fail ("volume paths");
    }
  size_t off = 0;
  for (uint32_t i = 0; i < h->n_volumes; i++)
    {
      if (off >= h->vol_len)
        {
          errno = EINVAL;
          child_fail ("volume paths");
        }
      const char *path = boot_vol_buf + off;
      off += strlen (path) + 1;
      int target = open_in_root (root, path, O_PATH | O_DIRECTORY);
      if (target < 0 && errno == ENOENT)
        {
          create_path (root, path, 0755);
          target = open_in_root (root, path, O_PATH | O_DIRECTORY);
        }
      struct stat st;
      struct statfs sf;
      if (target < 0 || fstat (target, &st) < 0 || fstatfs (target, &sf) < 0)
        child_fail ("open the mount point %s", path);
      if (sf.f_type != OVERLAYFS_SUPER_MAGIC || (st.st_dev == root_st.st_dev && st.st_ino == root_st.st_ino))
        {
          errno = EXDEV;
          child_fail ("volume mount %s: not a path of the sandbox's own files", path);
        }
      if (syscall (SYS_move_mount, boot_volume_fds[i], "", target, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH)
          < 0)
        child_fail ("mount the volume at %s", path);
      close (boot_volume_fds[i]);
      close (target);
    }
}

/* Move into a user namespace nested in the sandbox's, mapping the same
   ids, and a mount namespace of its own.  A mount namespace copied into a
   less privileged user namespace has every mount's flags locked
   (MNT_LOCK_READONLY, _NOSUID, _NODEV, _NOEXEC, _ATIME) and every mount
   pinned over what it covers (MNT_LOCKED): from here on no one, not even
   a root holding CAP_SYS_ADMIN over the sandbox's namespaces, can make a
   read-only rule writable or unmount a block to see beneath it.  This is
   on top of what already stops the sandbox (no CAP_SYS_ADMIN, mount calls
   denied by seccomp).

   The ids of the new namespace must be mapped by a process holding
   CAP_SETUID in the parent namespace, so a helper forked beforehand
   writes them; for it to open this process's /proc files, this process
   is dumpable meanwhile (it was made non-dumpable when its ids changed,
   which hands /proc/1 to the host's root).  Done only for sandboxes with rules: the network, UTS and
   IPC namespaces stay owned by the outer user namespace, so root inside
   loses CAP_NET_BIND_SERVICE over its network namespace, which
   setup_network makes up for by opening the low ports to everyone. */
static void
lock_mounts (uint32_t count)
{
  int p[2];
  if (pipe2 (p, O_CLOEXEC) < 0)
    child_fail ("pipe");
  prctl (PR_SET_DUMPABLE, 1, 0, 0, 0);
  pid_t helper = (pid_t) syscall (SYS_clone, SIGCHLD, NULL, NULL, NULL, 0);
  if (helper < 0)
    child_fail ("fork");
  if (helper == 0)
    {
      close (p[1]);
      char c;
      if (read (p[0], &c, 1) != 1)
        _exit (1);
      char map[64];
      int n = snprintf (map, sizeof map, "0 0 %u\n", count);
      static const char *const files[] = { "/proc/1/uid_map", "/proc/1/gid_map" };
      for (size_t i = 0; i < 2; i++)
        {
          int fd = open (files[i], O_WRONLY | O_CLOEXEC);
          if (fd < 0 || write (fd, map, (size_t) n) != n)
            child_fail ("write %s of the inner user namespace", files[i]);
          close (fd);
        }
      _exit (0);
    }
  close (p[0]);
  if (unshare (CLONE_NEWUSER | CLONE_NEWNS) < 0)
    child_fail ("unshare the inner user and mount namespaces");
  if (write (p[1], "x", 1) != 1)
    child_fail ("start the id mapper");
  close (p[1]);
  int status;
  while (waitpid (helper, &status, 0) < 0)
    if (errno != EINTR)
      child_fail ("wait for the id mapper");
  if (!WIFEXITED (status) || WEXITSTATUS (status) != 0)
    {
      errno = EPERM;
      child_fail ("map the ids of the inner user namespace");
    }
  prctl (PR_SET_DUMPABLE, 0, 0, 0, 0);
}

static void __attribute__ ((noreturn))
child_main (const struct sbx_isolate_spec *s, int sync)
{
  int keep[] = { sync, s->agent_fd, s->init_fd };
  close_inherited (keep, sizeof keep / sizeof keep[0]);
  child_sync = sync;
  /* the daemon's signal handlers make no sense here; and until it boots,
     a spare dies with the daemon thread that made it (its socket closing
     covers the moment before this takes effect) */
  signal (SIGTERM, SIG_DFL);
  signal (SIGINT, SIG_DFL);
  signal (SIGPIPE, SIG_DFL);
  signal (SIGCHLD, SIG_DFL); /* the spawner ignores it; init must not */
  prctl (PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
  struct boot_header h;
  int lock_fd = -1;
  int ovl = recv_boot (sync, &h, &lock_fd);
  if (ovl < 0)
    _exit (0); /* the daemon abandoned this spare */
  /* booting: from now on the sandbox outlives the daemon, unless it boots
     ahead of its claim (then init clears it when claimed) */
  prctl (PR_SET_PDEATHSIG, 0, 0, 0, 0);
  if (h.env_len > sizeof boot_env_buf || sbx_read_full (sync, boot_env_buf, h.env_len) != (ssize_t) h.env_len)
    child_fail ("receive the environment");
  size_t k = 0;
  for (size_t i = 0; i < h.env_len && k < SBX_ISOLATE_ENV_COUNT; i += strlen (boot_env_buf + i) + 1)
    boot_env[k++] = boot_env_buf + i;
  boot_env[k] = NULL;
  if (h.fs_len > sizeof boot_fs_buf || sbx_read_full (sync, boot_fs_buf, h.fs_len) != (ssize_t) h.fs_len)
    child_fail ("receive the filesystem rules");
  parse_fs_rules (h.fs_len);
  if (h.vol_len > sizeof boot_vol_buf || sbx_read_full (sync, boot_vol_buf, h.vol_len) != (ssize_t) h.vol_len)
    child_fail ("receive the volume paths");
  if (mount (NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
    child_fail ("make / private");
  /* still the daemon's host uid here, so the root-only state directory can
     be traversed; fds opened before clone would name the old namespace */
  if (syscall (SYS_move_mount, ovl, "", AT_FDCWD, s->mountpoint, MOVE_MOUNT_F_EMPTY_PATH) < 0)
    child_fail ("attach the root file system");
  open_block_sources (s->fs_block_dir);
  /* raw system calls: glibc's wrappers would try to change the ids of
     every thread the daemon had, which this clone of it does not have,
     and wait for them forever */
  if (syscall (SYS_setresgid, 0, 0, 0) < 0 || syscall (SYS_setresuid, 0, 0, 0) < 0)
    child_fail ("become root of the user namespace");
  if (unshare (CLONE_NEWCGROUP) < 0)
    child_fail ("unshare cgroup namespace");
  if (fchdir (ovl) < 0)
    child_fail ("enter the root file system");

  ensure_dir ("proc", 0555);
  ensure_dir ("dev", 0755);
  ensure_dir ("sys", 0555);
  ensure_dir ("tmp", 01777);
  if (mount ("proc", "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
    child_fail ("mount /proc");
  if (mount ("tmpfs", "dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=65536k,nr_inodes=64k") < 0)
    child_fail ("mount /dev");
  static const char *const devs[] = { "null", "zero", "full", "random", "urandom", "tty" };
  for (size_t i = 0; i < sizeof devs / sizeof devs[0]; i++)
    bind_dev (devs[i]);
  ensure_dir ("dev/pts", 0755);
  if (mount ("devpts", "dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5") < 0)
    child_fail ("mount /dev/pts");
  /* a directory of /dev's tmpfs, not a tmpfs of its own (a superblock
     less: mask_path); noexec, as Docker mounts it */
  ensure_dir ("dev/shm", 01777);
  if (chmod ("dev/shm", 01777) < 0)
    child_fail ("chmod /dev/shm");
  static const char *const links[][2] = { { "pts/ptmx", "dev/ptmx" },       { "/proc/self/fd", "dev/fd" },
                                          { "/proc/self/fd/0", "dev/stdin" }, { "/proc/self/fd/1", "dev/stdout" },
                                          { "/proc/self/fd/2", "dev/stderr" }, { "/proc/kcore", "dev/core" } };
  for (size_t i = 0; i < sizeof links / sizeof links[0]; i++)
    if (symlink (links[i][0], links[i][1]) < 0)
      child_fail ("symlink %s", links[i][1]);
  if (mount ("sysfs", "sys", "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
    child_fail ("mount /sys");

  /* a new network namespace starts with its loopback down */
  setup_network (&h, boot_fs_n > 0);

  /* the paths Docker masks or makes read-only; and what tells about the
     host's kernel (vmcoreinfo holds physical addresses, config.gz its
     build) or IPC objects */
  static const char *const masked[]
      = { "proc/asound", "proc/acpi",       "proc/kcore",       "proc/keys",   "proc/latency_stats",
          "proc/timer_list", "proc/timer_stats", "proc/sched_debug", "proc/scsi", "proc/kallsyms",
          "proc/config.gz", "proc/sysvipc",
          "sys/firmware", "sys/devices/virtual/powercap", "sys/kernel/debug", "sys/kernel/security",
          "sys/kernel/vmcoreinfo" };
  for (size_t i = 0; i < sizeof masked / sizeof masked[0]; i++)
    mask_path (masked[i]);
  static const char *const readonly[] = { "proc/bus", "proc/fs", "proc/irq", "proc/sys", "proc/sysrq-trigger" };
  for (size_t i = 0; i < sizeof readonly / sizeof readonly[0]; i++)
    remount_ro (readonly[i]);

  write_resolv_conf (&h, ovl);
  write_hosts (s->hostname, ovl);
  if (!h.no_egress_ca)
    install_egress_ca (s->egress_ca_pem, ovl);
  if (h.n_volumes > 0)
    mount_volumes (ovl, &h);
  if (boot_fs_n > 0)
    apply_fs_policy (ovl);

  if (sethostname (s->hostname, strlen (s->hostname)) < 0)
    child_fail ("sethostname");
  if (syscall (SYS_pivot_root, ".", ".") < 0)
    child_fail ("pivot_root");
  if (umount2 (".", MNT_DETACH) < 0)
    child_fail ("detach the old root");
  if (chdir ("/") < 0)
    child_fail ("chdir /");
  if (boot_fs_n > 0)
    lock_mounts (s->uid_count);

  struct rlimit nofile = { h.nofile, h.nofile };
  if (setrlimit (RLIMIT_NOFILE, &nofile) < 0)
    child_fail ("limit open files");
  struct rlimit core = { 0, 0 };
  setrlimit (RLIMIT_CORE, &core);

  /* fd 0-2: /dev/null, fd 3: the agent socket, fd 4: the template lock
     (held by init for the sandbox's life), fds 5 and 6 with a filesystem
     policy: /etc/passwd and /etc/group as they were before it (read once
     by init, see users.c).  Everything is first moved out of the way so
     that no dup2 below overwrites a descriptor still needed. */
  int agent_hi = fcntl (s->agent_fd, F_DUPFD_CLOEXEC, 100);
  int lock_hi = fcntl (lock_fd, F_DUPFD_CLOEXEC, 100);
  int init_fd = fcntl (s->init_fd, F_DUPFD_CLOEXEC, 100);
  int sync2 = fcntl (sync, F_DUPFD_CLOEXEC, 100);
  int passwd_hi = passwd_fd >= 0 ? fcntl (passwd_fd, F_DUPFD_CLOEXEC, 100) : -1;
  int group_hi = group_fd >= 0 ? fcntl (group_fd, F_DUPFD_CLOEXEC, 100) : -1;
  if (agent_hi < 0 || lock_hi < 0 || init_fd < 0 || sync2 < 0 || (passwd_fd >= 0 && passwd_hi < 0)
      || (group_fd >= 0 && group_hi < 0))
    child_fail ("dup");
  child_sync = sync2;
  int null = open ("/dev/null", O_RDWR | O_CLOEXEC);
  if (null < 0 || dup2 (null, 0) < 0 || dup2 (null, 1) < 0 || dup2 (null, 2) < 0)
    child_fail ("open /dev/null");
  if (dup2 (agent_hi, 3) < 0 || dup2 (lock_hi, 4) < 0)
    child_fail ("pass the agent socket and the template lock");
  if ((passwd_hi >= 0 && dup2 (passwd_hi, 5) < 0) || (group_hi >= 0 && dup2 (group_hi, 6) < 0))
    child_fail ("pass the user database");
  int keep2[] = { 3, 4, passwd_hi >= 0 ? 5 : 3, group_hi >= 0 ? 6 : 3, init_fd, sync2 };
  close_inherited (keep2, sizeof keep2 / sizeof keep2[0]);

  /* The filter is loaded while this process still holds CAP_SYS_ADMIN in
     the sandbox's user namespace, which lets seccomp go without
     no_new_privs; then the capabilities are dropped, bounding every
     descendant.  No no_new_privs: a set-uid binary in the sandbox (sudo
     for the default user, as E2B's templates have) may give uid 0 in the
     sandbox, but never more than the bounded set that its root holds
     anyway, and never anything outside its user namespace. */
  struct sbx_err err;
  if (sbx_seccomp_apply (&err) < 0)
    {
      errno = err.code;
      child_fail ("%s", err.msg);
    }
  drop_capabilities ();
  /* set last: a change of ids clears it; an exec (no set-id, no file
     capabilities) keeps it */
  if (h.ahead && prctl (PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
    child_fail ("keep the parent-death signal");
  /* the spawner may have ended before the signal was armed again (the
     daemon killed while this spare booted), and would never send it: the
     daemon's end of the sync socket, closed, says the daemon is gone */
  struct pollfd gone = { sync, POLLRDHUP, 0 };
  if (h.ahead && poll (&gone, 1, 0) > 0 && (gone.revents & (POLLHUP | POLLRDHUP)))
    _exit (0);
  static char *const argv[] = { "sbx-init", NULL };
  syscall (SYS_execveat, init_fd, "", argv, boot_env, AT_EMPTY_PATH);
  child_fail ("exec sbx-init");
}

/* ---- the parent ---- */

static int
write_map (pid_t pid, const char *file, uid_t base, uint32_t count, struct sbx_err *err)
{
  char path[64], map[64];
  snprintf (path, sizeof path, "/proc/%d/%s", (int) pid, file);
  snprintf (map, sizeof map, "0 %u %u\n", (unsigned) base, count);
  return sbx_write_file_at (AT_FDCWD, path, map, err);
}

/* The body of sbx_isolate_layer_userns's child, which shares the
   daemon's memory: raw system calls only, on its own stack, with every
   signal blocked (SIGKILL ends it).  PARENT is the daemon's pid. */
static int
userns_holder (void *parent)
{
  /* it must not outlive a daemon killed meanwhile */
  syscall (SYS_prctl, PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
  if (syscall (SYS_getppid) != (long) (intptr_t) parent)
    syscall (SYS_exit, 0);
  for (;;)
    syscall (SYS_ppoll, NULL, 0, NULL, NULL, 0);
  return 0;
}

int
sbx_isolate_layer_userns (uid_t base, uint32_t count, struct sbx_err *err)
{
  /* a child that only holds the namespace while its maps are written and
     it is opened, then is killed: it waits for nothing it could miss (a
     pipe's end of file would wait for every process that inherited the
     pipe from a concurrent fork).
     It shares this process's memory (CLONE_VM) rather than copying it: a
     copy of the daemon's page tables, then the copy-on-write faults of
     every thread and the child's unmapping, was the largest part of the
     CPU a burst of creates used (a second copy remains: the sandbox's
     own, in sbx_isolate_spawn).  So it runs only raw system calls on a
     stack of its own (this frame's, which outlives it), and every signal
     is blocked across the clone, so that no handler of the daemon's ever
     runs in it.  A small stack: a few calls deep. */
  char stack[8192] __attribute__ ((aligned (64)));
  sigset_t all, old;
  sigfillset (&all);
  pthread_sigmask (SIG_SETMASK, &all, &old);
  pid_t pid = clone (userns_holder, stack + sizeof stack, CLONE_VM | CLONE_NEWUSER | SIGCHLD,
                     (void *) (intptr_t) getpid ());
  int clone_errno = errno;
  pthread_sigmask (SIG_SETMASK, &old, NULL);
  errno = clone_errno;
  if (pid < 0)
    return sbx_fail (err, errno, "clone a user namespace");
  char path[64], map[96];
  snprintf (map, sizeof map, "0 %u %u\n%u 0 1\n", (unsigned) base, count, count);
  int fd = -1;
  snprintf (path, sizeof path, "/proc/%d/uid_map", (int) pid);
  if (sbx_write_file_at (AT_FDCWD, path, map, err) == 0)
    {
      snprintf (path, sizeof path, "/proc/%d/gid_map", (int) pid);
      if (sbx_write_file_at (AT_FDCWD, path, map, err) == 0)
        {
          snprintf (path, sizeof path, "/proc/%d/ns/user", (int) pid);
          fd = open (path, O_RDONLY | O_CLOEXEC);
          if (fd < 0)
            sbx_fail (err, errno, "open %s", path);
        }
    }
  kill (pid, SIGKILL);
  while (waitpid (pid, NULL, 0) < 0 && errno == EINTR)
    ;
  return fd;
}

/* A clone of mount (or directory) FD's SUB, idmapped with USERNS.
   READ_ONLY for the lower layers. */
static int
idmapped_clone (int fd, const char *sub, int userns, bool read_only, const char *what, struct sbx_err *err)
{
  int tree = (int) syscall (SYS_open_tree, fd, sub, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (*sub ? 0 : AT_EMPTY_PATH));
  if (tree < 0)
    return sbx_fail (err, errno, "open_tree of %s", what);
  struct mount_attr attr = { .attr_set = MOUNT_ATTR_IDMAP | (read_only ? MOUNT_ATTR_RDONLY : 0),
                             .userns_fd = (uint64_t) userns };
  if (syscall (SYS_mount_setattr, tree, "", AT_EMPTY_PATH, &attr, sizeof attr) < 0)
    {
      int e = errno;
      close (tree);
      return sbx_fail (err, e, "idmap %s", what);
    }
  return tree;
}

/* The sandbox's root file system as a detached overlay mount.

   Every layer is idmapped (sbx_isolate_layer_userns), so that what lies
   on disk carries the sandbox's own ids (0 for its root), never the host
   range it happens to have: the template's tree (root-owned), the layers
   of a snapshot it starts from (LAYER_FDS, read-only ext4 mounts, newest
   first, each holding upper/), and its own disk (upper/ and work/).  A
   copy of the disk is therefore a valid layer for any other sandbox
   (snapshots, forks) without rewriting an owner. */
static int
make_rootfs (int tree_fd, int disk_fd, const int *layer_fds, size_t n_layers, int userns, struct sbx_err *err)
{
  if (n_layers > SBX_ISOLATE_LAYERS_MAX)
    return sbx_failx (err, E2BIG, "too many layers");
  cleanup_close int tree = idmapped_clone (tree_fd, "rootfs", userns, true, "the template", err);
  if (tree < 0)
    return -1;
  cleanup_close int disk = idmapped_clone (disk_fd, "", userns, false, "the disk", err);
  if (disk < 0)
    return -1;
  int layers[SBX_ISOLATE_LAYERS_MAX];
  size_t n_open = 0;
  int ret = -1;
  cleanup_close int fs = -1;
  for (; n_open < n_layers; n_open++)
    if ((layers[n_open] = idmapped_clone (layer_fds[n_open], "upper", userns, true, "a snapshot layer", err)) < 0)
      goto out;

  fs = (int) syscall (SYS_fsopen, "overlay", FSOPEN_CLOEXEC);
  if (fs < 0)
    {
      sbx_fail (err, errno, "fsopen overlay");
      goto out;
    }
  char lower[64], upper[64], work[64];
  for (size_t i = 0; i <= n_layers; i++)
    {
      snprintf (lower, sizeof lower, "/proc/self/fd/%d", i < n_layers ? layers[i] : tree);
      if (syscall (SYS_fsconfig, fs, FSCONFIG_SET_STRING, "lowerdir+", lower, 0) < 0)
        {
          sbx_fail (err, errno, "overlay lower layer");
          goto out;
        }
    }
  snprintf (upper, sizeof upper, "/proc/self/fd/%d/upper", disk);
  snprintf (work, sizeof work, "/proc/self/fd/%d/work", disk);
  if (syscall (SYS_fsconfig, fs, FSCONFIG_SET_STRING, "upperdir", upper, 0) < 0)
    {
      sbx_fail (err, errno, "overlay upper layer");
      goto out;
    }
  if (syscall (SYS_fsconfig, fs, FSCONFIG_SET_STRING, "workdir", work, 0) < 0)
    {
      sbx_fail (err, errno, "overlay work dir");
      goto out;
    }
  if (syscall (SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
    {
      sbx_fail (err, errno, "create overlay");
      goto out;
    }
  /* set-uid binaries work inside (see the comment on seccomp above) */
  ret = (int) syscall (SYS_fsmount, fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_NODEV);
  if (ret < 0)
    sbx_fail (err, errno, "fsmount overlay");
out:
  for (size_t i = 0; i < n_open; i++)
    close (layers[i]);
  return ret;
}

/* ---- the spawner ----

   Sandboxes are cloned from a small helper process, the spawner, forked
   when the engine opens, and not from the daemon itself.  A clone copies
   its caller's page tables and write-protects every private page, and
   the clone waits with those pages shared until it boots (a spare waits
   for its claim).  Each page a daemon thread then wrote was copied on a
   fault, and in a multi-threaded process each such fault flushes the TLB
   of every core running one of its threads.  Measured on a 2-core
   machine: about 700 faults per create as the spare pool refilled, and
   creates one after another took 20 to 50 ms instead of 3 to 7.  The
   spawner is one thread with little memory of its own to write.

   It reads one request at a time from a SOCK_SEQPACKET socket: struct
   spawn_req, the strings of the spec, and three descriptors (the agent
   socket, sbx-init, the child's end of the sync socket).  It clones, and
   answers with struct spawn_rep and a pidfd of the child.  Its children
   are reaped by the kernel (SIGCHLD ignored): the daemon watches them
   through pidfds, as it does the sandboxes a restart adopts.  It ends
   when the daemon's end of the socket closes, so with the daemon; spares
   waiting to boot die with it (PR_SET_PDEATHSIG), as they did with the
   daemon's thread that made them. */

enum { STR_MOUNTPOINT, STR_HOSTNAME, STR_CGROUP, STR_BLOCK_DIR, STR_CA, N_STRS };
#define SPAWN_MSG_MAX (64u << 10)

struct spawn_req {
  uint32_t uid_base, uid_count;
  uint32_t len[N_STRS]; /* each string's bytes with its NUL; 0: NULL */
};

struct spawn_rep {
  int32_t pid;
  int32_t err; /* clone's errno when pid is 0 */
};

struct sbx_isolate_spawner {
  pthread_mutex_t lock; /* one request at a time */
  int sock;             /* -1: none running (start another) */
  pid_t pid;
};

/* The spec a request carries (strings point into BUF), or false when it
   is not well formed. */
static bool
spawn_req_parse (const char *buf, size_t n, const int fds[3], struct sbx_isolate_spec *s)
{
  struct spawn_req h;
  if (n < sizeof h)
    return false;
  memcpy (&h, buf, sizeof h);
  const char *strs[N_STRS];
  size_t off = sizeof h;
  for (int i = 0; i < N_STRS; i++)
    {
      strs[i] = NULL;
      if (h.len[i] == 0)
        continue;
      if (h.len[i] > n - off || buf[off + h.len[i] - 1] != '\0')
        return false;
      strs[i] = buf + off;
      off += h.len[i];
    }
  if (strs[STR_MOUNTPOINT] == NULL || strs[STR_HOSTNAME] == NULL)
    return false;
  *s = (struct sbx_isolate_spec) { .mountpoint = strs[STR_MOUNTPOINT],
                                   .agent_fd = fds[0],
                                   .init_fd = fds[1],
                                   .uid_base = h.uid_base,
                                   .uid_count = h.uid_count,
                                   .hostname = strs[STR_HOSTNAME],
                                   .cgroup_name = strs[STR_CGROUP],
                                   .fs_block_dir = strs[STR_BLOCK_DIR],
                                   .egress_ca_pem = strs[STR_CA] };
  return true;
}

static void __attribute__ ((noreturn))
spawner_main (int sock)
{
  prctl (PR_SET_NAME, "sbx-spawner", 0, 0, 0);
  int keep[] = { sock };
  close_inherited (keep, 1);
  sigset_t none;
  sigemptyset (&none);
  sigprocmask (SIG_SETMASK, &none, NULL);
  signal (SIGTERM, SIG_DFL);
  signal (SIGINT, SIG_DFL);
  signal (SIGCHLD, SIG_IGN); /* no zombies: the kernel reaps its children */
  static char buf[SPAWN_MSG_MAX];
  for (;;)
    {
      int fds[3];
      size_t nfds;
      ssize_t n = recv_with_fds (sock, buf, sizeof buf, fds, 3, &nfds, 0);
      if (n == 0 || (n < 0 && errno != EMSGSIZE))
        _exit (0); /* the daemon has gone */
      struct spawn_rep rep = { 0, EINVAL };
      struct sbx_isolate_spec spec;
      int pidfd = -1;
      if (n > 0 && nfds == 3 && spawn_req_parse (buf, (size_t) n, fds, &spec))
        {
          /* fork-like clone: the child continues on a copy of this stack */
          pid_t pid = (pid_t) syscall (SYS_clone, CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET
                                                      | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_PIDFD | SIGCHLD,
                                       NULL, &pidfd, NULL, 0);
          if (pid == 0)
            child_main (&spec, fds[2]);
          rep = (struct spawn_rep) { pid > 0 ? pid : 0, pid > 0 ? 0 : errno };
        }
      for (size_t i = 0; i < nfds; i++)
        close (fds[i]);
      if (send_with_fds (sock, &rep, sizeof rep, &pidfd, pidfd >= 0 ? 1 : 0) < 0)
        _exit (0);
      if (pidfd >= 0)
        close (pidfd);
    }
}

/* Lock held. */
static int
spawner_fork (struct sbx_isolate_spawner *sp, struct sbx_err *err)
{
  int sv[2];
  if (socketpair (AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
    return sbx_fail (err, errno, "socketpair for the spawner");
  pid_t pid = fork ();
  if (pid < 0)
    {
      int e = errno;
      close (sv[0]);
      close (sv[1]);
      return sbx_fail (err, e, "fork the spawner");
    }
  if (pid == 0)
    spawner_main (sv[1]);
  close (sv[1]);
  sp->sock = sv[0];
  sp->pid = pid;
  return 0;
}

/* Lock held: end the running spawner, if any (it ends when its socket
   closes; SIGKILL covers one that hangs). */
static void
spawner_end (struct sbx_isolate_spawner *sp, bool kill_it)
{
  if (sp->sock < 0)
    return;
  close (sp->sock);
  sp->sock = -1;
  if (kill_it)
    kill (sp->pid, SIGKILL);
  while (waitpid (sp->pid, NULL, 0) < 0 && errno == EINTR)
    ;
}

int
sbx_isolate_spawner_start (struct sbx_isolate_spawner **out, struct sbx_err *err)
{
  struct sbx_isolate_spawner *sp = calloc (1, sizeof *sp);
  if (sp == NULL)
    return sbx_fail (err, ENOMEM, "spawner");
  pthread_mutex_init (&sp->lock, NULL);
  if (spawner_fork (sp, err) < 0)
    {
      pthread_mutex_destroy (&sp->lock);
      free (sp);
      return -1;
    }
  *out = sp;
  return 0;
}

void
sbx_isolate_spawner_stop (struct sbx_isolate_spawner *sp)
{
  if (sp == NULL)
    return;
  pthread_mutex_lock (&sp->lock);
  spawner_end (sp, false);
  pthread_mutex_unlock (&sp->lock);
  pthread_mutex_destroy (&sp->lock);
  free (sp);
}

/* Ask SP for a child of spec S waiting on SYNC: its pid and pidfd.  A
   spawner found gone (killed by someone) is started again, once. */
static int
spawner_call (struct sbx_isolate_spawner *sp, const struct sbx_isolate_spec *s, int sync, pid_t *pid, int *pidfd,
              struct sbx_err *err)
{
  static char buf[SPAWN_MSG_MAX]; /* under the lock */
  const char *strs[N_STRS] = { s->mountpoint, s->hostname, s->cgroup_name, s->fs_block_dir, s->egress_ca_pem };
  int fds[3] = { s->agent_fd, s->init_fd, sync };
  pthread_mutex_lock (&sp->lock);
  struct spawn_req h = { .uid_base = s->uid_base, .uid_count = s->uid_count };
  size_t off = sizeof h;
  for (int i = 0; i < N_STRS; i++)
    {
      size_t len = strs[i] ? strlen (strs[i]) + 1 : 0;
      if (len > sizeof buf - off)
        {
          pthread_mutex_unlock (&sp->lock);
          return sbx_failx (err, E2BIG, "sandbox spec over %u bytes", SPAWN_MSG_MAX);
        }
      if (len > 0)
        memcpy (buf + off, strs[i], len);
      h.len[i] = (uint32_t) len;
      off += len;
    }
  memcpy (buf, &h, sizeof h);
  struct spawn_rep rep;
  ssize_t n = -1;
  size_t got = 0;
  for (int attempt = 0; attempt < 2; attempt++)
    {
      if (sp->sock < 0 && spawner_fork (sp, err) < 0)
        {
          pthread_mutex_unlock (&sp->lock);
          return -1;
        }
      if (send_with_fds (sp->sock, buf, off, fds, 3) == (ssize_t) off)
        n = recv_with_fds (sp->sock, &rep, sizeof rep, pidfd, 1, &got, 0);
      if (n == (ssize_t) sizeof rep)
        break;
      sbx_log_fields (SBX_LOG_WARN, "the spawner has ended; starting another", "error",
                      n < 0 ? strerror (errno) : "no answer", NULL);
      for (size_t i = 0; i < got; i++)
        close (pidfd[i]);
      got = 0;
      spawner_end (sp, true);
    }
  pthread_mutex_unlock (&sp->lock);
  if (n != (ssize_t) sizeof rep)
    return sbx_failx (err, EIO, "the spawner does not answer");
  if (rep.pid <= 0 || got != 1)
    {
      if (got == 1)
        close (*pidfd);
      return sbx_fail (err, rep.err ? rep.err : EIO, "clone");
    }
  *pid = rep.pid;
  return 0;
}

int
sbx_isolate_spawn (struct sbx_isolate_spawner *sp, const struct sbx_isolate_spec *s, struct sbx_isolate_proc *p,
                   int *pidfd_out, struct sbx_err *err)
{
  int sv[2];
  if (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
    return sbx_fail (err, errno, "socketpair");
  cleanup_close int parent_end = sv[0];
  cleanup_close int child_end = sv[1];
  pid_t pid = 0;
  int pidfd = -1;
  if (spawner_call (sp, s, child_end, &pid, &pidfd, err) < 0)
    return -1;
  close (steal_fd (&child_end));
  p->pid = pid;
  p->sock = parent_end;
  if (write_map (pid, "uid_map", s->uid_base, s->uid_count, err) < 0
      || write_map (pid, "gid_map", s->uid_base, s->uid_count, err) < 0
      || sbx_cgroup_enter (s->cgroup_name, pid, err) < 0)
    {
      sbx_isolate_abort (p, pidfd);
      close (pidfd);
      return -1;
    }
  p->sock = steal_fd (&parent_end);
  *pidfd_out = pidfd;
  return 0;
}

int
sbx_isolate_boot (struct sbx_isolate_proc *p, int tree_fd, int lock_fd, const struct sbx_isolate_disk *disk,
                  char *const *env, uint32_t nofile, uint32_t net_addr, uint32_t net_gw,
                  const struct sbx_fs_rule *fs_rules, size_t n_fs_rules, struct sbx_err *err)
{
  if (sbx_isolate_boot_start (p, tree_fd, lock_fd, disk, env, nofile, net_addr, net_gw, fs_rules, n_fs_rules, err)
      < 0)
    return -1;
  return sbx_isolate_boot_wait (p, err);
}

int
sbx_isolate_boot_start (struct sbx_isolate_proc *p, int tree_fd, int lock_fd, const struct sbx_isolate_disk *disk,
                        char *const *env, uint32_t nofile, uint32_t net_addr, uint32_t net_gw,
                        const struct sbx_fs_rule *fs_rules, size_t n_fs_rules, struct sbx_err *err)
{
  cleanup_free char *fs = NULL;
  size_t fs_len = 0;
  if (sbx_fs_rules_encode (fs_rules, n_fs_rules, &fs, &fs_len, err) < 0)
    return -1;
  /* the environment, flattened */
  size_t len = 0, count = 0;
  for (char *const *v = env; v && *v; v++, count++)
    len += strlen (*v) + 1;
  if (len > SBX_ISOLATE_ENV_MAX || count > SBX_ISOLATE_ENV_COUNT)
    return sbx_failx (err, E2BIG, "environment too large");
  cleanup_free char *flat = malloc (len + 1);
  if (flat == NULL)
    return sbx_fail (err, ENOMEM, "environment");
  size_t off = 0;
  for (char *const *v = env; v && *v; v++)
    {
      size_t n = strlen (*v) + 1;
      memcpy (flat + off, *v, n);
      off += n;
    }
  if (disk->n_volumes > SBX_FS_MOUNTS_MAX)
    return sbx_failx (err, E2BIG, "too many volumes");
  /* the volumes' paths, flattened */
  size_t vol_len = 0;
  for (size_t i = 0; i < disk->n_volumes; i++)
    vol_len += strlen (disk->volume_paths[i]) + 1;
  if (vol_len > sizeof boot_vol_buf)
    return sbx_failx (err, E2BIG, "volume paths too long");
  cleanup_free char *vol = malloc (vol_len + 1);
  if (vol == NULL)
    return sbx_fail (err, ENOMEM, "volume paths");
  size_t voff = 0;
  for (size_t i = 0; i < disk->n_volumes; i++)
    {
      size_t n = strlen (disk->volume_paths[i]) + 1;
      memcpy (vol + voff, disk->volume_paths[i], n);
      voff += n;
    }
  cleanup_close int ovl = make_rootfs (tree_fd, disk->disk_fd, disk->layer_fds, disk->n_layers, disk->userns_fd, err);
  if (ovl < 0)
    return -1;
  int fds[BOOT_FDS_MAX] = { ovl, lock_fd };
  size_t n_fds = 2;
  int ret = -1;
  for (; n_fds < 2 + disk->n_volumes; n_fds++)
    if ((fds[n_fds] = idmapped_clone (disk->volume_fds[n_fds - 2], "", disk->userns_fd, false, "a volume", err)) < 0)
      goto out;
  struct boot_header h = { nofile, (uint32_t) len, net_addr, net_gw, (uint32_t) fs_len, (uint32_t) disk->n_volumes,
                           (uint32_t) vol_len, disk->layer_build, disk->ahead };
  if (send_boot (p->sock, fds, n_fds, &h, flat, len, fs, fs_len, vol, vol_len) < 0)
    sbx_fail (err, errno, "pass the root file system");
  else
    ret = 0;
out:
  for (size_t i = 2; i < n_fds; i++)
    close (fds[i]);
  return ret;
}

int
sbx_isolate_boot_wait (struct sbx_isolate_proc *p, struct sbx_err *err)
{
  /* EOF: the child reached execve; a message: it failed on the way.  A
     child that does neither within 30 s is given up on. */
  struct timeval tv = { 30, 0 };
  setsockopt (p->sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  char msg[512];
  ssize_t n;
  do
    n = read (p->sock, msg, sizeof msg - 1);
  while (n < 0 && errno == EINTR);
  if (n < 0)
    return sbx_fail (err, errno, "sandbox setup did not finish");
  if (n > 0)
    {
      msg[n] = '\0';
      return sbx_failx (err, EIO, "sandbox setup: %s", msg);
    }
  close (p->sock);
  p->sock = -1;
  return 0;
}

int
sbx_isolate_block_dir (const char *dir, struct sbx_err *err)
{
  if (mkdir (dir, 0700) < 0 && errno != EEXIST)
    return sbx_fail (err, errno, "create %s", dir);
  cleanup_close int d = open (dir, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (d < 0)
    return sbx_fail (err, errno, "open %s", dir);
  if (mkdirat (d, "dir", 0) < 0 && errno != EEXIST)
    return sbx_fail (err, errno, "create %s/dir", dir);
  cleanup_close int f = openat (d, "file", O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0);
  if (f < 0)
    return sbx_fail (err, errno, "create %s/file", dir);
  /* whatever a previous run or an admin left: mode 000, the host root's
     (what lies inside could not be reached from a sandbox anyway) */
  struct stat st;
  errno = 0;
  if (fstatat (d, "dir", &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR (st.st_mode)
      || fchownat (d, "dir", 0, 0, AT_SYMLINK_NOFOLLOW) < 0 || fchmodat (d, "dir", 0, 0) < 0)
    return sbx_fail (err, errno ? errno : ENOTDIR, "prepare %s/dir", dir);
  if (fchown (f, 0, 0) < 0 || fchmod (f, 0) < 0 || ftruncate (f, 0) < 0 || fstat (f, &st) < 0 || !S_ISREG (st.st_mode))
    return sbx_fail (err, errno ? errno : EINVAL, "prepare %s/file", dir);
  return 0;
}

void
sbx_isolate_abort (struct sbx_isolate_proc *p, int pidfd)
{
  /* not our child (the spawner's, reaped by the kernel): its pid may be
     another process's once it has ended, so only its pidfd is used */
  if (p->pid > 0 && pidfd >= 0)
    {
      syscall (SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
      struct pollfd pf = { pidfd, POLLIN, 0 };
      while (poll (&pf, 1, -1) < 0 && errno == EINTR)
        ;
    }
  p->pid = 0;
  if (p->sock >= 0)
    close (p->sock);
  p->sock = -1;
}
