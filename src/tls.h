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
 * Plain and TLS streams share one low-level driver, so they behave alike:
 * every read and write waits at most `timeout` seconds (the stream's
 * mailstream_low timeout, set here; poll before each recv/send or
 * SSL_read/SSL_write); when the wait runs out the call fails, the stream is
 * dead (every later read or write fails at once), and mfs_stream_timed_out()
 * says so. mailstream_cancel(s), which may be called from any thread, wakes
 * a blocked read or write of s; the stream is then dead too. IMAP IDLE works
 * through mailstream_low_get_cancel() as libetpan expects.
 *
 * Writes never raise SIGPIPE (MSG_NOSIGNAL, also under OpenSSL). Each TLS
 * connection has its own SSL_CTX: streams may be used from different threads
 * (one thread per stream at a time).
 */
#ifndef MAILFS_TLS_H
#define MAILFS_TLS_H

#include <libetpan/libetpan.h>

#include "error.h"

struct mfs_tls_opts {
	const char *host; /* name to verify; an IP literal is checked as IP */
	const char *ca_file; /* extra trust anchor, or NULL */
	int timeout;	     /* seconds for any one wait, > 0 */
};

/* Resolves host and connects (each address in turn) with a timeout.
 * Each address gets `timeout` seconds; name resolution itself is not bounded.
 * Returns a connected, blocking socket with FD_CLOEXEC and TCP_NODELAY set,
 * or -1 with err set: MFS_E_CONNECT (resolution failed, refused,
 * unreachable: "cannot connect to HOST:PORT: Connection refused") or
 * MFS_E_TIMEOUT ("cannot connect to HOST:PORT: timed out after N s"). */
int mfs_tcp_connect(const char *host, int port, int timeout,
		    struct mfs_err *err);

/* Wraps a connected socket in a plain mailstream with the timeout set.
 * Takes ownership of fd (closed on failure and when the stream is closed).
 * Returns NULL with err set (MFS_E_NOMEM). */
mailstream *mfs_stream_plain(int fd, int timeout, struct mfs_err *err);

/* TLS handshake on fd, verification, and a mailstream over it.
 * TLS 1.2 or later; the chain is checked against the system store plus
 * opts->ca_file, the certificate against opts->host (as a name, sent as SNI,
 * or as an IP address when host is an IP literal). The whole handshake takes
 * at most opts->timeout seconds. fd is made non-blocking.
 * Takes ownership of fd (closed on failure and when the stream is closed).
 * Returns NULL with err set: MFS_E_TLS with a message "TLS to HOST: ..."
 * that says which check failed ("certificate is not trusted (unknown CA)",
 * "certificate has expired", "certificate does not match host NAME",
 * "handshake failed: ...", "cannot load CA file PATH: ...", an empty host),
 * MFS_E_TIMEOUT, or MFS_E_NOMEM. */
mailstream *mfs_stream_tls(int fd, const struct mfs_tls_opts *opts,
			   struct mfs_err *err);

/* After a successful protocol STARTTLS command on s: replaces the stream's
 * low-level driver with a verified TLS one over the same socket. Bytes the
 * server sent after its STARTTLS reply and before the handshake are an
 * attack and fail with MFS_E_TLS ("server sent data before the TLS
 * handshake"). Returns MFS_OK, or the error code with err set; on failure
 * the stream must not be used again (close it). Errors as mfs_stream_tls. */
int mfs_stream_starttls(mailstream *s, const struct mfs_tls_opts *opts,
			struct mfs_err *err);

/* 1 when a read or write on s failed because its wait ran out (the stream
 * is then dead), 0 otherwise, also after mailstream_cancel(). */
int mfs_stream_timed_out(mailstream *s);

/*
 * IMAP literals. libetpan keeps every literal of a response in memory, at
 * the size the server announces ("{N}" at the end of a line, up to 4 GiB),
 * except a message body it streams to the caller's body handler. After
 * mfs_stream_imap_literals(s) the driver reads the server's bytes as IMAP
 * responses and fails the read (the stream is then dead) when
 *  - a literal is announced of more than MFS_LITERAL_MAX bytes, unless body
 *    literals are allowed (mfs_stream_body_literals) and it is the value of
 *    a BODY[...], RFC822 or RFC822.TEXT item of a FETCH response;
 *  - one response holds more than 16 MiB outside such body literals;
 *  - "{N}" is not followed by a line end, or ends a status response (OK,
 *    NO, BAD, BYE, PREAUTH, "+"), or stands in its response code: places
 *    where libetpan's reading and this one could differ.
 * mfs_stream_refusal() then says why. Call it once, right after the stream
 * is made, before the greeting is read; it survives mfs_stream_starttls().
 * Streams of other protocols (POP3, SMTP) keep the plain line bound:
 * 16 MiB without a line end.
 */
#define MFS_LITERAL_MAX (1024u * 1024)

void mfs_stream_imap_literals(mailstream *s);

/* Allows (on != 0) or forbids again body literals above MFS_LITERAL_MAX;
 * allow them only while libetpan streams bodies to a body handler
 * (mailimap_set_msg_body_handler), around the command that fetches them. */
void mfs_stream_body_literals(mailstream *s, int on);

/* Why the driver refused the server's bytes ("announced a literal of
 * 4000000000 bytes"), or NULL when it refused nothing. The text lives as
 * long as s. */
const char *mfs_stream_refusal(mailstream *s);

/*
 * Compression (RFC 4978, COMPRESS=DEFLATE), layered on top of TLS: raw
 * deflate both ways (window bits -15), a sync flush after each write.
 *
 * The server compresses from the first byte after its OK to COMPRESS, so
 * no byte after that reply's line end may be read ahead into libetpan's
 * buffer as plain text: call mfs_stream_byte_reads(s, 1) before sending
 * COMPRESS (every read then returns at most one byte), read the reply,
 * and then either mfs_stream_compress(s) after an OK or
 * mfs_stream_byte_reads(s, 0) after anything else.
 *
 * The server's compressed bytes are hostile input: buffers are fixed
 * (what is inflated goes straight into the reader's buffer, and the IMAP
 * reader above still bounds responses and literals on the inflated
 * bytes); one read waits at most the timeout in all, also when the server
 * sends compressed bytes that inflate to nothing. A corrupt stream, one
 * that asks for a dictionary, or one the server ends fails the read (the
 * stream is then dead, every later read and write fails at once), and
 * mfs_stream_refusal() says why ("sent a corrupt compressed stream
 * (inflate failed: invalid block type)"). A write whose compressed bytes
 * could not all be sent leaves the stream dead too. The compression state
 * is freed with the stream.
 */

/* Reads return at most one byte (on != 0), or as much as there is. */
void mfs_stream_byte_reads(mailstream *s, int on);

/* Compresses s from now on, both ways; turns byte reads off. At most once
 * per stream. Returns MFS_OK, or with err set: MFS_E_PROTO (s is not a
 * stream of this module, is dead, is compressed already, or holds bytes
 * read ahead or not yet sent), MFS_E_NOMEM. On failure s is unchanged. */
int mfs_stream_compress(mailstream *s, struct mfs_err *err);

/* 1 when s is compressed, else 0. */
int mfs_stream_compressed(mailstream *s);

/* 1 when bytes the server sent are held where polling the socket cannot
 * see them: in libetpan's read buffer, in OpenSSL's, or in the
 * compression layer (read, not inflated yet). A wait for the server's next
 * word (IDLE) must not poll while this says 1. */
int mfs_stream_pending(mailstream *s);

/* Overwrites the stream's write buffer with zeros; bytes not yet sent are
 * dropped. Call it after flushing a command that held a secret (a
 * password, a token), whether the flush succeeded or not: libetpan keeps
 * the bytes it sent there until later commands overwrite them. */
void mfs_stream_wipe(mailstream *s);

/* For --check and the log: "TLSv1.3", the certificate's subject and issuer
 * (one line each). Writes "" where s is not a TLS stream. */
void mfs_stream_tls_info(mailstream *s, char *version, size_t vlen,
			 char *subject, size_t slen, char *issuer, size_t ilen);

#endif
