/*
 * egress_tls.c - the daemon's egress CA, the leaf certificates minted
 * from it, and the TLS contexts the HTTP/TLS filter terminates and
 * re-opens sandboxes' HTTPS with (egress_tls.h).  Only connections to a
 * host that has request transforms get here (netproxy.c decides).
 *
 * Everything is OpenSSL (libssl, libcrypto): keys, certificates, the
 * handshakes.  Keys are EC P-256: a leaf costs one ECDSA signature, so
 * minting on the fly is cheap; one leaf key serves every leaf (kept in
 * memory only, made at each start), as a leaf's key protects nothing the
 * CA key does not.
 *
 * Leaves: one per name, valid from an hour ago for LEAF_DAYS, kept in a
 * table of SBX_EGRESS_TLS_LEAVES_MAX (the least recently used goes when
 * it is full) and minted again once LEAF_RENEW_S old.  The table has its
 * own mutex: the filter's loop is the only user today, the lock keeps
 * that an assumption no caller has to know.
 */
#include "egress_tls.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "../common/log.h"
#include "../common/util.h"

#define CA_DAYS 3650
#define LEAF_DAYS 30
#define LEAF_RENEW_S (24 * 3600)

struct leaf {
  char name[256];
  X509 *cert;
  time_t minted;
  uint64_t used;
};

struct sbx_egress_tls {
  EVP_PKEY *ca_key, *leaf_key;
  X509 *ca;
  char *ca_pem;
  SSL_CTX *server, *client;
  pthread_mutex_t lock; /* the leaves */
  struct leaf leaves[SBX_EGRESS_TLS_LEAVES_MAX];
  size_t n_leaves;
  uint64_t clock;
};

/* The first error OpenSSL queued, as text (and the queue emptied). */
static const char *
ossl_error (char *buf, size_t n)
{
  unsigned long e = ERR_get_error ();
  if (e == 0)
    snprintf (buf, n, "unknown error");
  else
    ERR_error_string_n (e, buf, n);
  ERR_clear_error ();
  return buf;
}

static int
ossl_fail (struct sbx_err *err, const char *what)
{
  char e[256];
  return sbx_failx (err, EIO, "%s: %s", what, ossl_error (e, sizeof e));
}

static bool
add_ext (X509 *cert, X509 *issuer, int nid, const char *value)
{
  X509V3_CTX ctx;
  X509V3_set_ctx (&ctx, issuer, cert, NULL, NULL, 0);
  X509_EXTENSION *ext = X509V3_EXT_nconf_nid (NULL, &ctx, nid, value);
  bool ok = ext != NULL && X509_add_ext (cert, ext, -1) == 1;
  X509_EXTENSION_free (ext);
  return ok;
}

/* A certificate for KEY, signed by ISSUER_KEY (ISSUER NULL: self-signed,
   a CA named CN; else a leaf for the DNS name DNS). */
static X509 *
make_cert (EVP_PKEY *key, const char *cn, const char *dns, X509 *issuer, EVP_PKEY *issuer_key, long days)
{
  X509 *x = X509_new ();
  BIGNUM *bn = BN_new ();
  ASN1_INTEGER *serial = NULL;
  unsigned char rnd[16];
  bool ok = x && bn && RAND_bytes (rnd, sizeof rnd) == 1;
  if (ok)
    {
      rnd[0] &= 0x7f; /* positive */
      ok = BN_bin2bn (rnd, sizeof rnd, bn) && (serial = BN_to_ASN1_INTEGER (bn, NULL)) != NULL
           && X509_set_version (x, 2) && X509_set_serialNumber (x, serial) && X509_gmtime_adj (X509_getm_notBefore (x), -3600)
           && X509_gmtime_adj (X509_getm_notAfter (x), days * 24 * 3600) && X509_set_pubkey (x, key);
    }
  X509_NAME *name = ok ? X509_get_subject_name (x) : NULL;
  if (ok && issuer == NULL)
    ok = X509_NAME_add_entry_by_txt (name, "O", MBSTRING_ASC, (const unsigned char *) "sbxd", -1, -1, 0)
         && X509_NAME_add_entry_by_txt (name, "CN", MBSTRING_ASC, (const unsigned char *) cn, -1, -1, 0)
         && X509_set_issuer_name (x, name) && add_ext (x, x, NID_basic_constraints, "critical,CA:TRUE")
         && add_ext (x, x, NID_key_usage, "critical,keyCertSign,cRLSign")
         && add_ext (x, x, NID_subject_key_identifier, "hash");
  else if (ok)
    {
      char san[8 + 256];
      snprintf (san, sizeof san, "DNS:%s", dns);
      /* a CN holds at most 64 characters; the name is in the SAN anyway */
      if (strlen (dns) <= 64)
        ok = X509_NAME_add_entry_by_txt (name, "CN", MBSTRING_ASC, (const unsigned char *) dns, -1, -1, 0);
      ok = ok && X509_set_issuer_name (x, X509_get_subject_name (issuer))
           && add_ext (x, issuer, NID_basic_constraints, "critical,CA:FALSE")
           && add_ext (x, issuer, NID_key_usage, "critical,digitalSignature")
           && add_ext (x, issuer, NID_ext_key_usage, "serverAuth")
           && add_ext (x, issuer, NID_subject_alt_name, san)
           && add_ext (x, issuer, NID_authority_key_identifier, "keyid:always");
    }
  ok = ok && X509_sign (x, issuer_key, EVP_sha256 ()) > 0;
  ASN1_INTEGER_free (serial);
  BN_free (bn);
  if (!ok)
    {
      X509_free (x);
      return NULL;
    }
  return x;
}

/* Write TEXT (LEN bytes) to PATH with MODE, replacing it atomically. */
static int
write_file (const char *path, const char *text, size_t len, mode_t mode, struct sbx_err *err)
{
  char tmp[PATH_MAX];
  if (sbx_path (tmp, sizeof tmp, "%s.tmp", path) < 0)
    return sbx_fail (err, ENAMETOOLONG, "%s", path);
  unlink (tmp);
  cleanup_close int fd = open (tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
  if (fd < 0)
    return sbx_fail (err, errno, "create %s", tmp);
  if (fchmod (fd, mode) < 0 || sbx_write_full (fd, text, len) < 0 || fsync (fd) < 0)
    {
      int e = errno;
      unlink (tmp);
      return sbx_fail (err, e, "write %s", tmp);
    }
  if (rename (tmp, path) < 0)
    {
      int e = errno;
      unlink (tmp);
      return sbx_fail (err, e, "rename %s", tmp);
    }
  return 0;
}

/* PEM text of what WRITE puts in a memory BIO, newly allocated. */
static char *
pem_text (X509 *cert, EVP_PKEY *key)
{
  BIO *b = BIO_new (BIO_s_mem ());
  if (b == NULL)
    return NULL;
  bool ok = cert ? PEM_write_bio_X509 (b, cert) == 1 : PEM_write_bio_PrivateKey (b, key, NULL, NULL, 0, NULL, NULL) == 1;
  char *data, *out = NULL;
  long n = ok ? BIO_get_mem_data (b, &data) : 0;
  if (n > 0 && (out = malloc ((size_t) n + 1)) != NULL)
    {
      memcpy (out, data, (size_t) n);
      out[n] = '\0';
    }
  BIO_free (b);
  return out;
}

/* The CA of DIR, loaded; false when there is none that is whole. */
static bool
ca_load (struct sbx_egress_tls *t, const char *key_path, const char *crt_path)
{
  FILE *f = fopen (key_path, "re");
  if (f == NULL)
    return false;
  t->ca_key = PEM_read_PrivateKey (f, NULL, NULL, NULL);
  fclose (f);
  if ((f = fopen (crt_path, "re")) == NULL)
    return false;
  t->ca = PEM_read_X509 (f, NULL, NULL, NULL);
  fclose (f);
  ERR_clear_error ();
  if (t->ca_key && t->ca && X509_check_private_key (t->ca, t->ca_key) == 1)
    {
      chmod (key_path, 0600); /* whatever became of it, readable by root only */
      return true;
    }
  EVP_PKEY_free (t->ca_key);
  X509_free (t->ca);
  t->ca_key = NULL;
  t->ca = NULL;
  ERR_clear_error ();
  return false;
}

static int
ca_make (struct sbx_egress_tls *t, const char *key_path, const char *crt_path, struct sbx_err *err)
{
  unsigned char rnd[6];
  if (RAND_bytes (rnd, sizeof rnd) != 1 || (t->ca_key = EVP_EC_gen ("P-256")) == NULL)
    return ossl_fail (err, "egress CA key");
  char cn[64];
  snprintf (cn, sizeof cn, "sbxd egress CA %02x%02x%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5]);
  t->ca = make_cert (t->ca_key, cn, NULL, NULL, t->ca_key, CA_DAYS);
  if (t->ca == NULL)
    return ossl_fail (err, "egress CA certificate");
  cleanup_free char *key = pem_text (NULL, t->ca_key);
  cleanup_free char *crt = pem_text (t->ca, NULL);
  if (key == NULL || crt == NULL)
    return sbx_fail (err, ENOMEM, "egress CA");
  int r = write_file (key_path, key, strlen (key), 0600, err);
  explicit_bzero (key, strlen (key));
  if (r < 0 || write_file (crt_path, crt, strlen (crt), 0644, err) < 0)
    return -1;
  sbx_log_fields (SBX_LOG_INFO, "made the egress CA (sandboxes trust it)", "certificate", crt_path, NULL);
  return 0;
}

/* ALPN toward the sandbox: http/1.1 if it offers it, else none (the
   filter reads HTTP/1.x only; an h2-only client fails to speak). */
static int
alpn_select (SSL *s, const unsigned char **out, unsigned char *outlen, const unsigned char *in, unsigned int inlen,
             void *arg)
{
  (void) s;
  (void) arg;
  static const unsigned char h11[] = "\x08http/1.1";
  unsigned char *sel;
  if (SSL_select_next_proto (&sel, outlen, h11, sizeof h11 - 1, in, inlen) != OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_NOACK;
  *out = sel;
  return SSL_TLSEXT_ERR_OK;
}

static SSL_CTX *
ctx_new (const SSL_METHOD *m)
{
  SSL_CTX *c = SSL_CTX_new (m);
  if (c == NULL)
    return NULL;
  SSL_CTX_set_min_proto_version (c, TLS1_2_VERSION);
  /* buffers go while a connection is idle; writes may be partial and
     come from a buffer that moved (the relay's buffers) */
  SSL_CTX_set_mode (c, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  /* an end of file without close_notify is an end of file, as curl and
     most servers do it */
  SSL_CTX_set_options (c, SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
  SSL_CTX_set_session_cache_mode (c, SSL_SESS_CACHE_OFF);
  return c;
}

int
sbx_egress_tls_open (const char *dir, const char *extra_ca, struct sbx_egress_tls **out, struct sbx_err *err)
{
  char key_path[PATH_MAX], crt_path[PATH_MAX];
  if (sbx_path (key_path, sizeof key_path, "%s/ca.key", dir) < 0
      || sbx_path (crt_path, sizeof crt_path, "%s/ca.crt", dir) < 0)
    return sbx_fail (err, ENAMETOOLONG, "egress CA directory %s", dir);
  if (sbx_mkdir_p (dir, 0700, err) < 0)
    return -1;
  chmod (dir, 0700);
  struct sbx_egress_tls *t = calloc (1, sizeof *t);
  if (t == NULL)
    return sbx_fail (err, ENOMEM, "egress TLS");
  pthread_mutex_init (&t->lock, NULL);
  if (!ca_load (t, key_path, crt_path) && ca_make (t, key_path, crt_path, err) < 0)
    goto fail;
  if ((t->ca_pem = pem_text (t->ca, NULL)) == NULL)
    {
      sbx_fail (err, ENOMEM, "egress CA");
      goto fail;
    }
  if ((t->leaf_key = EVP_EC_gen ("P-256")) == NULL)
    {
      ossl_fail (err, "egress leaf key");
      goto fail;
    }
  t->server = ctx_new (TLS_server_method ());
  t->client = ctx_new (TLS_client_method ());
  if (t->server == NULL || t->client == NULL)
    {
      ossl_fail (err, "egress TLS context");
      goto fail;
    }
  SSL_CTX_set_num_tickets (t->server, 0);
  SSL_CTX_set_alpn_select_cb (t->server, alpn_select, NULL);
  SSL_CTX_set_verify (t->client, SSL_VERIFY_PEER, NULL);
  static const unsigned char h11[] = "\x08http/1.1";
  if (SSL_CTX_set_default_verify_paths (t->client) != 1 || SSL_CTX_set_alpn_protos (t->client, h11, sizeof h11 - 1) != 0)
    {
      ossl_fail (err, "egress TLS trust store");
      goto fail;
    }
  if (extra_ca && SSL_CTX_load_verify_locations (t->client, extra_ca, NULL) != 1)
    {
      char e[256];
      sbx_failx (err, EINVAL, "--egress-ca-file %s: %s", extra_ca, ossl_error (e, sizeof e));
      goto fail;
    }
  *out = t;
  return 0;
fail:
  sbx_egress_tls_close (t);
  return -1;
}

void
sbx_egress_tls_close (struct sbx_egress_tls *t)
{
  if (t == NULL)
    return;
  for (size_t i = 0; i < t->n_leaves; i++)
    X509_free (t->leaves[i].cert);
  SSL_CTX_free (t->server);
  SSL_CTX_free (t->client);
  X509_free (t->ca);
  EVP_PKEY_free (t->ca_key);
  EVP_PKEY_free (t->leaf_key);
  free (t->ca_pem);
  pthread_mutex_destroy (&t->lock);
  free (t);
}

const char *
sbx_egress_tls_ca_pem (const struct sbx_egress_tls *t)
{
  return t ? t->ca_pem : NULL;
}

/* The leaf for NAME, a reference of the caller's. */
static X509 *
leaf_for (struct sbx_egress_tls *t, const char *name)
{
  time_t now = time (NULL);
  pthread_mutex_lock (&t->lock);
  struct leaf *slot = NULL;
  for (size_t i = 0; i < t->n_leaves && slot == NULL; i++)
    if (strcmp (t->leaves[i].name, name) == 0)
      slot = &t->leaves[i];
  if (slot && now - slot->minted >= LEAF_RENEW_S)
    {
      X509_free (slot->cert);
      slot->cert = NULL;
    }
  if (slot == NULL)
    {
      if (t->n_leaves < SBX_EGRESS_TLS_LEAVES_MAX)
        slot = &t->leaves[t->n_leaves++];
      else
        {
          slot = &t->leaves[0];
          for (size_t i = 1; i < t->n_leaves; i++)
            if (t->leaves[i].used < slot->used)
              slot = &t->leaves[i];
          X509_free (slot->cert);
        }
      slot->cert = NULL;
      snprintf (slot->name, sizeof slot->name, "%s", name);
    }
  if (slot->cert == NULL)
    {
      slot->cert = make_cert (t->leaf_key, NULL, name, t->ca, t->ca_key, LEAF_DAYS);
      slot->minted = now;
    }
  X509 *x = slot->cert;
  if (x == NULL)
    {
      /* leave no empty slot behind */
      *slot = t->leaves[--t->n_leaves];
      ERR_clear_error ();
    }
  else
    {
      slot->used = ++t->clock;
      X509_up_ref (x);
    }
  pthread_mutex_unlock (&t->lock);
  return x;
}

SSL *
sbx_egress_tls_server (struct sbx_egress_tls *t, const char *name)
{
  X509 *leaf = leaf_for (t, name);
  SSL *s = leaf ? SSL_new (t->server) : NULL;
  if (s && (SSL_use_certificate (s, leaf) != 1 || SSL_use_PrivateKey (s, t->leaf_key) != 1))
    {
      SSL_free (s);
      s = NULL;
    }
  X509_free (leaf);
  if (s == NULL)
    {
      ERR_clear_error ();
      return NULL;
    }
  SSL_set_accept_state (s);
  return s;
}

SSL *
sbx_egress_tls_client (struct sbx_egress_tls *t, const char *name)
{
  SSL *s = SSL_new (t->client);
  if (s && (SSL_set_tlsext_host_name (s, name) != 1 || SSL_set1_host (s, name) != 1))
    {
      SSL_free (s);
      s = NULL;
    }
  if (s == NULL)
    {
      ERR_clear_error ();
      return NULL;
    }
  SSL_set_connect_state (s);
  return s;
}
