/*
 * proto.h - the wire protocol between sbxd and the init agent (PID 1 of
 * every sandbox).
 *
 * The agent listens on a Unix stream socket whose path lives in the
 * daemon's state directory (the sandbox itself cannot see it).  The daemon
 * opens one connection per request.  Every message is a frame:
 *
 *   u32 length (little endian, counts type + payload) | u8 type | payload
 *
 * and a payload is a sequence of fields: u8 tag | u32 length | bytes.
 * Integers inside fields are little-endian fixed width.  Tags may repeat
 * (argv, env).  Unknown tags are ignored, so either side can grow.
 *
 * A process request (EXEC or ATTACH) turns the connection into a stream of
 * events that ends with EV_END; every other request is answered by EV_OK or
 * EV_ERROR, preceded by EV_ENTRY / EV_DATA / EV_PROC frames where it lists
 * or reads something.
 */
#ifndef SBX_PROTO_H
#define SBX_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

#define SBX_PROTO_MAX_FRAME (1u << 20) /* 1 MiB payload at most */
#define SBX_PROTO_CHUNK (64u << 10)    /* data is sent in chunks of this size */

enum sbx_msg_type {
  /* requests */
  SBX_REQ_EXEC = 1,
  SBX_REQ_ATTACH = 2,
  SBX_REQ_INPUT = 3,
  SBX_REQ_CLOSE_STDIN = 4,
  SBX_REQ_SIGNAL = 5,
  SBX_REQ_RESIZE = 6,
  SBX_REQ_LIST = 7,
  SBX_REQ_FILE = 8,
  SBX_REQ_PING = 9,
  SBX_REQ_DATA = 10, /* file content that follows a FILE write */
  SBX_REQ_EOF = 11,  /* end of file content */
  SBX_REQ_WATCH = 12, /* watch a directory: EV_OK, then EV_FSEVENT until hang-up */
  SBX_REQ_SETENV = 13, /* SBX_T_ENV "KEY=VALUE", repeated: set in the base environment of later commands
                          (processes already running keep theirs); EV_OK.  It also tells a booted
                          spare's init that it is claimed (it no longer dies with the daemon) */
  /* events and answers */
  SBX_EV_START = 64,
  SBX_EV_STDOUT = 65,
  SBX_EV_STDERR = 66,
  SBX_EV_PTY = 67,
  SBX_EV_END = 68,
  SBX_EV_OK = 69,
  SBX_EV_ERROR = 70,
  SBX_EV_PROC = 71,
  SBX_EV_ENTRY = 72,
  SBX_EV_DATA = 73,
  SBX_EV_FSEVENT = 74, /* NAME (relative to the watched directory), TYPE (enum sbx_fs_event) */
};

enum sbx_fs_event { SBX_FS_CREATE = 1, SBX_FS_WRITE = 2, SBX_FS_REMOVE = 3, SBX_FS_RENAME = 4, SBX_FS_CHMOD = 5 };

enum sbx_tag {
  SBX_T_ARG = 1,       /* string, repeated: argv */
  SBX_T_ENV = 2,       /* string, repeated: "KEY=VALUE" */
  SBX_T_CWD = 3,       /* string */
  SBX_T_USER = 4,      /* string: user name or decimal uid */
  SBX_T_TAG = 5,       /* string: caller's tag for the process */
  SBX_T_PTY = 6,       /* u32 rows, u32 cols: allocate a terminal */
  SBX_T_STDIN = 7,     /* u32 1: keep stdin open as a pipe */
  SBX_T_TIMEOUT = 8,   /* u32 milliseconds; 0 = none */
  SBX_T_PID = 9,       /* u32 */
  SBX_T_DATA = 10,     /* bytes */
  SBX_T_SIGNAL = 11,   /* u32 */
  SBX_T_ROWS = 12,     /* u32 */
  SBX_T_COLS = 13,     /* u32 */
  SBX_T_EXIT = 14,     /* u32 (int) exit code, -1 when killed by a signal */
  SBX_T_TERMSIG = 15,  /* u32 signal that ended it, 0 if none */
  SBX_T_TIMEDOUT = 16, /* u32 1 when killed because its timeout expired */
  SBX_T_ERRNO = 17,    /* u32 */
  SBX_T_MSG = 18,      /* string */
  SBX_T_OP = 19,       /* u32 file operation (enum sbx_file_op) */
  SBX_T_PATH = 20,     /* string */
  SBX_T_PATH2 = 21,    /* string: destination of a move */
  SBX_T_DEPTH = 22,    /* u32 */
  SBX_T_MODE = 23,     /* u32 */
  SBX_T_NAME = 24,     /* string */
  SBX_T_TYPE = 25,     /* u32 enum sbx_file_type */
  SBX_T_SIZE = 26,     /* u64 */
  SBX_T_UID = 27,      /* u32 */
  SBX_T_GID = 28,      /* u32 */
  SBX_T_OWNER = 29,    /* string */
  SBX_T_GROUP = 30,    /* string */
  SBX_T_MTIME = 31,    /* u64 nanoseconds since the epoch */
  SBX_T_LINK = 32,     /* string: symlink target */
  SBX_T_FLAGS = 33,    /* u32 */
  SBX_T_META = 34,     /* bytes, repeated: KEY NUL VALUE, a file's user.e2b.KEY extended attribute */
};

/* A file's metadata (SBX_T_META): the extended attributes user.e2b.KEY,
   as E2B's envd keeps them.  KEY is 1..SBX_META_KEY_MAX bytes and VALUE at
   most SBX_META_VALUE_MAX, neither with a NUL byte; an entry carries at
   most SBX_META_MAX of them. */
#define SBX_META_PREFIX "user.e2b."
#define SBX_META_KEY_MAX 246u /* 255, the kernel's limit of a name, less the prefix */
#define SBX_META_VALUE_MAX 1024u
#define SBX_META_MAX 64u

enum sbx_file_op {
  SBX_FILE_READ = 1,
  SBX_FILE_WRITE = 2,
  SBX_FILE_STAT = 3,
  SBX_FILE_LIST = 4,
  SBX_FILE_MKDIR = 5,
  SBX_FILE_MOVE = 6,
  SBX_FILE_REMOVE = 7,
  SBX_FILE_SYMLINK = 8, /* PATH -> PATH2 (the target, as given) */
};

/* SBX_T_FLAGS bits of a FILE request */
#define SBX_FILE_F_PARENTS 1u   /* write/mkdir: create missing parents */
#define SBX_FILE_F_EXIST_OK 2u  /* mkdir: an existing directory is fine */
#define SBX_FILE_F_RECURSIVE 4u /* watch: subdirectories too */
/* SBX_T_FLAGS bits of a SIGNAL request */
#define SBX_SIGNAL_F_TREE 1u    /* kill every process the command started, setsid()ed ones too, as its
                                   timeout does (an agent without it kills the command's group) */
#define SBX_FILE_F_OWNER 8u     /* write/mkdir/symlink: owner SBX_T_UID:SBX_T_GID, mode SBX_T_MODE as given */
/* SBX_T_FLAGS bits of an EXEC request */
#define SBX_EXEC_F_TIMEOUT_COMMAND 1u /* the timeout kills the command alone: what it started lives on
                                         (without it, the timeout kills the command's whole tree) */
#define SBX_EXEC_F_CWD_DEFAULT 2u     /* SBX_T_CWD is the template's default, not asked for: a command
                                         that cannot enter it starts in the user's home instead */

enum sbx_file_type { SBX_FT_FILE = 1, SBX_FT_DIR = 2, SBX_FT_SYMLINK = 3, SBX_FT_OTHER = 4 };

/* A frame being built or parsed. */
struct sbx_msg {
  uint8_t type;
  uint8_t *buf; /* payload */
  size_t len;
  size_t cap;
  int oom;      /* set when an append failed; the send then fails */
};

void sbx_msg_init (struct sbx_msg *m, uint8_t type);
void sbx_msg_free (struct sbx_msg *m);
void sbx_msg_put (struct sbx_msg *m, uint8_t tag, const void *data, size_t len);
void sbx_msg_put_str (struct sbx_msg *m, uint8_t tag, const char *s);
void sbx_msg_put_u32 (struct sbx_msg *m, uint8_t tag, uint32_t v);
void sbx_msg_put_u64 (struct sbx_msg *m, uint8_t tag, uint64_t v);

/* Send M on FD (blocking).  Returns 0 or -1 with errno. */
int sbx_msg_send (int fd, const struct sbx_msg *m);
/* Receive one frame into M (which must be freed by the caller).  Returns 1
   on a frame, 0 on a clean EOF before a frame, -1 on error (errno set;
   EPROTO for a malformed frame). */
int sbx_msg_recv (int fd, struct sbx_msg *m);
/* The same, but the whole frame must have arrived by DEADLINE_NS (on
   sbx_now_ns's clock, CLOCK_MONOTONIC; 0: no deadline): -1 with errno
   ETIMEDOUT when it has not, whatever part of it came. */
int sbx_msg_recv_by (int fd, struct sbx_msg *m, uint64_t deadline_ns);

/* Field iteration: *POS starts at 0.  Returns 1 and fills TAG/DATA/LEN for
   the next field, 0 at the end, -1 when the payload is malformed. */
int sbx_msg_next (const struct sbx_msg *m, size_t *pos, uint8_t *tag, const uint8_t **data, uint32_t *len);
/* First field with TAG; returns 0 when absent. */
int sbx_msg_get (const struct sbx_msg *m, uint8_t tag, const uint8_t **data, uint32_t *len);
/* Typed getters: return DEF when absent or of the wrong size. */
uint32_t sbx_msg_u32 (const struct sbx_msg *m, uint8_t tag, uint32_t def);
uint64_t sbx_msg_u64 (const struct sbx_msg *m, uint8_t tag, uint64_t def);
/* The signal field SBX_T_TERMSIG of an end report: 0 when absent, the
   signal when it is a real one (1..64), -1 otherwise.  The agent is not
   trusted: a huge value would overflow the 128 + signal exit codes that
   answers compute from it. */
int sbx_msg_termsig (const struct sbx_msg *m);
/* A newly allocated NUL-terminated copy of a string field, or NULL. */
char *sbx_msg_strdup (const struct sbx_msg *m, uint8_t tag);

/* Convenience for one-shot answers. */
int sbx_msg_send_error (int fd, int errnum, const char *fmt, ...) __attribute__ ((format (printf, 3, 4)));
int sbx_msg_send_ok (int fd);

#endif
