/*
 * egress_tls.h - what the HTTP/TLS filter (netproxy.c) needs to apply
 * request transforms (net.h, struct sbx_net_rule) to HTTPS: the daemon's
 * own certificate authority, leaf certificates minted from it for the
 * names sandboxes ask for, and the two TLS contexts (egress_tls.c).
 *
 * The CA is made at the first start (an EC P-256 key and a self-signed
 * certificate with a random serial and name, so no two daemons share
 * one) and kept in DIR: ca.key (mode 0600, owned by the daemon's user:
 * root) and ca.crt.  Sandboxes trust ca.crt (isolate.c installs it);
 * the key never leaves the host's state directory.
 *
 * Toward the sandbox the filter is a TLS server (TLS 1.2 and 1.3) that
 * offers ALPN http/1.1 only, presenting a leaf for the name of the
 * ClientHello; toward the destination it is a verifying TLS client (the
 * system's trust store plus the operator's extra roots, the name checked
 * against the certificate), offering ALPN http/1.1 only.
 */
#ifndef SBX_EGRESS_TLS_H
#define SBX_EGRESS_TLS_H

#include <openssl/ssl.h>

#include "../common/error.h"

struct sbx_egress_tls;

#define SBX_EGRESS_TLS_LEAVES_MAX 256 /* leaf certificates kept (one per name, least recently used goes) */

/* Load the CA kept in DIR, or make one there (DIR is created, 0700).
   EXTRA_CA (NULL: none): a PEM file of more roots to trust upstream. */
int sbx_egress_tls_open (const char *dir, const char *extra_ca, struct sbx_egress_tls **out, struct sbx_err *err);
void sbx_egress_tls_close (struct sbx_egress_tls *t);
/* The CA certificate, PEM: valid as long as T. */
const char *sbx_egress_tls_ca_pem (const struct sbx_egress_tls *t);
/* A TLS server for the sandbox's side of a connection to NAME (lower
   case, no final dot), presenting a leaf certificate for NAME; NULL
   when out of memory.  Thread-safe. */
SSL *sbx_egress_tls_server (struct sbx_egress_tls *t, const char *name);
/* A TLS client toward the destination, sending NAME as server_name and
   accepting only a certificate that verifies and names NAME. */
SSL *sbx_egress_tls_client (struct sbx_egress_tls *t, const char *name);

#endif
