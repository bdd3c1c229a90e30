/*
 * test_egress_tls.c - tests of src/core/egress_tls.c: the egress CA is
 * made once per directory (key 0600 in a 0700 directory), kept across
 * restarts and different in another directory; a leaf it mints for a
 * name passes a client that trusts the CA and checks that name, offers
 * http/1.1 only, and fails one that checks another name; the upstream
 * client refuses a server whose certificate does not verify (another
 * daemon's CA) and accepts it once that CA is an extra root; a bad extra
 * root file fails the start.  Handshakes over memory BIO pairs; no root,
 * no network.
 *
 *   gcc -std=c17 -D_GNU_SOURCE -Wall -Wextra -O2 -Isrc -o /tmp/test_egress_tls tests/unit/test_egress_tls.c \
 *     src/core/egress_tls.c src/common/log.c src/common/error.c src/common/util.c -lssl -lcrypto -lpthread \
 *     && /tmp/test_egress_tls
 */
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/egress_tls.h"

#include "check.h"

/* Handshake CLIENT with SERVER over a BIO pair: 1 when both finished. */
static int
handshake (SSL *client, SSL *server)
{
  BIO *a, *b;
  if (BIO_new_bio_pair (&a, 0, &b, 0) != 1)
    return 0;
  SSL_set_bio (client, a, a);
  SSL_set_bio (server, b, b);
  for (int i = 0; i < 100; i++)
    {
      int rc = SSL_do_handshake (client), rs = SSL_do_handshake (server);
      if (rc == 1 && rs == 1)
        return 1;
      int ec = SSL_get_error (client, rc), es = SSL_get_error (server, rs);
      if ((rc != 1 && ec != SSL_ERROR_WANT_READ && ec != SSL_ERROR_WANT_WRITE)
          || (rs != 1 && es != SSL_ERROR_WANT_READ && es != SSL_ERROR_WANT_WRITE))
        return 0;
    }
  return 0;
}

/* A client trusting only the CA in PEM, checking NAME, offering h2 and http/1.1. */
static SSL *
client_trusting (SSL_CTX **ctx, const char *pem, const char *name)
{
  *ctx = SSL_CTX_new (TLS_client_method ());
  BIO *b = BIO_new_mem_buf (pem, -1);
  X509 *ca = PEM_read_bio_X509 (b, NULL, NULL, NULL);
  BIO_free (b);
  X509_STORE_add_cert (SSL_CTX_get_cert_store (*ctx), ca);
  X509_free (ca);
  SSL_CTX_set_verify (*ctx, SSL_VERIFY_PEER, NULL);
  static const unsigned char alpn[] = "\x02h2\x08http/1.1";
  SSL_CTX_set_alpn_protos (*ctx, alpn, sizeof alpn - 1);
  SSL *s = SSL_new (*ctx);
  SSL_set_tlsext_host_name (s, name);
  SSL_set1_host (s, name);
  SSL_set_connect_state (s);
  return s;
}

static int
mode_of (const char *path)
{
  struct stat st;
  return stat (path, &st) == 0 ? (int) (st.st_mode & 07777) : -1;
}

int
main (void)
{
  char base[] = "/tmp/test_egress_tls.XXXXXX";
  if (mkdtemp (base) == NULL)
    return 1;
  char dir_a[256], dir_b[256], path[300];
  snprintf (dir_a, sizeof dir_a, "%s/a", base);
  snprintf (dir_b, sizeof dir_b, "%s/b", base);
  struct sbx_err err = { 0 };

  /* made once, 0600 in 0700; the same after a restart; another elsewhere */
  struct sbx_egress_tls *a = NULL, *a2 = NULL, *b = NULL;
  CHECK (sbx_egress_tls_open (dir_a, NULL, &a, &err) == 0);
  CHECK (a && strstr (sbx_egress_tls_ca_pem (a), "BEGIN CERTIFICATE") != NULL);
  snprintf (path, sizeof path, "%s/ca.key", dir_a);
  CHECK (mode_of (path) == 0600);
  CHECK (mode_of (dir_a) == 0700);
  CHECK (sbx_egress_tls_open (dir_a, NULL, &a2, &err) == 0);
  CHECK (a2 && strcmp (sbx_egress_tls_ca_pem (a), sbx_egress_tls_ca_pem (a2)) == 0);
  CHECK (sbx_egress_tls_open (dir_b, NULL, &b, &err) == 0);
  CHECK (b && strcmp (sbx_egress_tls_ca_pem (a), sbx_egress_tls_ca_pem (b)) != 0);
  CHECK (strstr (sbx_egress_tls_ca_pem (a), "PRIVATE") == NULL);

  /* a leaf for the name: verified by a client trusting the CA; http/1.1 */
  SSL_CTX *ctx;
  SSL *c = client_trusting (&ctx, sbx_egress_tls_ca_pem (a), "api.example.test");
  SSL *s = sbx_egress_tls_server (a, "api.example.test");
  CHECK (s != NULL && handshake (c, s) == 1);
  CHECK (SSL_get_verify_result (c) == X509_V_OK);
  const unsigned char *proto;
  unsigned proto_len;
  SSL_get0_alpn_selected (c, &proto, &proto_len);
  CHECK (proto_len == 8 && memcmp (proto, "http/1.1", 8) == 0);
  SSL_free (c);
  SSL_free (s);
  SSL_CTX_free (ctx);
  /* ... not by one that checks another name, nor by one trusting another CA */
  c = client_trusting (&ctx, sbx_egress_tls_ca_pem (a), "other.test");
  s = sbx_egress_tls_server (a, "api.example.test");
  CHECK (handshake (c, s) == 0);
  SSL_free (c);
  SSL_free (s);
  SSL_CTX_free (ctx);
  c = client_trusting (&ctx, sbx_egress_tls_ca_pem (b), "api.example.test");
  s = sbx_egress_tls_server (a, "api.example.test");
  CHECK (handshake (c, s) == 0);
  SSL_free (c);
  SSL_free (s);
  SSL_CTX_free (ctx);

  /* the upstream client: a's leaves do not verify for b (system roots
     only), and do once a's certificate is an extra root; the name is checked */
  c = sbx_egress_tls_client (b, "api.example.test");
  s = sbx_egress_tls_server (a, "api.example.test");
  CHECK (handshake (c, s) == 0 && SSL_get_verify_result (c) != X509_V_OK);
  SSL_free (c);
  SSL_free (s);
  struct sbx_egress_tls *b2 = NULL;
  snprintf (path, sizeof path, "%s/ca.crt", dir_a);
  CHECK (sbx_egress_tls_open (dir_b, path, &b2, &err) == 0);
  c = sbx_egress_tls_client (b2, "api.example.test");
  s = sbx_egress_tls_server (a, "api.example.test");
  CHECK (handshake (c, s) == 1 && SSL_get_verify_result (c) == X509_V_OK);
  SSL_free (c);
  SSL_free (s);
  c = sbx_egress_tls_client (b2, "api.example.test");
  s = sbx_egress_tls_server (a, "www.example.test");
  CHECK (handshake (c, s) == 0);
  SSL_free (c);
  SSL_free (s);

  /* more names than the table keeps: each still gets its leaf */
  for (int i = 0; i < SBX_EGRESS_TLS_LEAVES_MAX + 50; i++)
    {
      char name[64];
      snprintf (name, sizeof name, "n%d.example.test", i);
      s = sbx_egress_tls_server (a, name);
      CHECK (s != NULL);
      SSL_free (s);
    }

  /* a bad extra root file fails the start, naming the option */
  struct sbx_egress_tls *bad = NULL;
  CHECK (sbx_egress_tls_open (dir_b, "/nonexistent.pem", &bad, &err) < 0 && bad == NULL);
  CHECK (strstr (err.msg, "--egress-ca-file") != NULL);

  sbx_egress_tls_close (a);
  sbx_egress_tls_close (a2);
  sbx_egress_tls_close (b);
  sbx_egress_tls_close (b2);
  char cmd[300];
  snprintf (cmd, sizeof cmd, "rm -rf %s", base);
  if (system (cmd) != 0)
    fprintf (stderr, "cannot remove %s\n", base);
  printf ("egress_tls: %d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
