/*
 * tls.h - TCP connections and the OpenSSL stream under libetpan.
 *
 * libetpan verifies no certificate by itself. mailfs therefore never uses
 * libetpan's own TLS: it opens the TCP socket itself (mfs_tcp_connect), and
 * wraps it either in a plain mailstream or in a mailstream whose low-level
 * driver is an OpenSSL connection (this module). The certificate chain is
 * verified against the system store plus ca_file, and the host name (or IP
 * address) against the certificate, before a single protocol byte is
 * exchanged.
 *
 * Every read and write waits at most `timeout` seconds (poll before each
 * SSL_read/SSL_write); when the wait runs out the call fails, the stream is
 * dead, and mfs_stream_timed_out() says so.
 */
#ifndef MAILFS_TLS_H
#define MAILFS_TLS_H

#include <libetpan/libetpan.h>

#include "error.h"

struct mfs_tls_opts {
	const char *host;    /* name to verify; an IP literal is checked as IP */
	const char *ca_file; /* extra trust anchor, or NULL */
	int timeout;	     /* seconds for any one wait, > 0 */
};

/* Resolves host and connects (each address in turn) with a timeout.
 * Returns a connected, blocking socket with FD_CLOEXEC set, or -1 with
 * err set: MFS_E_CONNECT (resolution failed, refused, unreachable) or
 * MFS_E_TIMEOUT. */
int mfs_tcp_connect(const char *host, int port, int timeout,
		    struct mfs_err *err);

/* Wraps a connected socket in a plain mailstream with the timeout set.
 * Takes ownership of fd (closed on failure and when the stream is closed).
 * Returns NULL with err set (MFS_E_NOMEM). */
mailstream *mfs_stream_plain(int fd, int timeout, struct mfs_err *err);

/* TLS handshake on fd, verification, and a mailstream over it.
 * Takes ownership of fd (closed on failure and when the stream is closed).
 * Returns NULL with err set: MFS_E_TLS with a message that says which check
 * failed ("certificate is not trusted (unknown CA)", "certificate has
 * expired", "certificate does not match host NAME", handshake failure), or
 * MFS_E_TIMEOUT. */
mailstream *mfs_stream_tls(int fd, const struct mfs_tls_opts *opts,
			   struct mfs_err *err);

/* After a successful protocol STARTTLS command on s: replaces the stream's
 * low-level driver with a verified TLS one over the same socket. On failure
 * the stream must not be used again (close it). Errors as mfs_stream_tls. */
int mfs_stream_starttls(mailstream *s, const struct mfs_tls_opts *opts,
			struct mfs_err *err);

/* 1 when the last failed read or write on s failed because its wait ran out. */
int mfs_stream_timed_out(mailstream *s);

/* For --check and the log: "TLSv1.3", the certificate's subject and issuer
 * (one line each). Writes "" where s is not a TLS stream. */
void mfs_stream_tls_info(mailstream *s, char *version, size_t vlen,
			 char *subject, size_t slen, char *issuer, size_t ilen);

#endif
