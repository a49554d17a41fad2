/*
 * sasl.h - the client side of the SASL mechanisms mailfs speaks (RFC 4422):
 * each function returns the base64 initial response that IMAP, POP3 and
 * SMTP send after "AUTHENTICATE MECH", "AUTH MECH" and "AUTH MECH".
 *
 * Every string returned holds a secret: release it with mfs_sasl_free(),
 * which wipes it first. NULL means out of memory.
 */
#ifndef MAILFS_SASL_H
#define MAILFS_SASL_H

#include <stddef.h>

#include "base64.h" /* mfs_b64_encode(), for the steps of an exchange */

/* PLAIN (RFC 4616): base64 of "\0user\0password". */
char *mfs_sasl_plain(const char *user, const char *password);

/* XOAUTH2 (Google's and Microsoft's): base64 of
 * "user=USER\1auth=Bearer TOKEN\1\1". */
char *mfs_sasl_xoauth2(const char *user, const char *token);

/* OAUTHBEARER (RFC 7628): base64 of
 * "n,a=USER,\1host=HOST\1port=PORT\1auth=Bearer TOKEN\1\1", with ',' and
 * '=' in USER written as "=2C" and "=3D". */
char *mfs_sasl_oauthbearer(const char *user, const char *host, int port,
			   const char *token);

/* Overwrites s with zeros and frees it. NULL is fine. */
void mfs_sasl_free(char *s);

#endif
