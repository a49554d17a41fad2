/*
 * smtp.h - SMTP submission client.
 *
 * The dialogue is spoken directly over our mailstream (tls.h), not through
 * libetpan's mailsmtp: the message is streamed from a file descriptor with
 * dot-stuffing done here, so memory does not grow with the message, and
 * every wait is bounded by the stream's timeout.
 *
 *   smtps://  mfs_tcp_connect + mfs_stream_tls, greeting, EHLO
 *   smtp://   mfs_stream_plain, greeting, EHLO, STARTTLS (refused when the
 *             server does not offer it, before any AUTH), EHLO again
 *   tls=none  plain, no STARTTLS (only with the account's explicit setting)
 *
 * Then, when a user is given, AUTH PLAIN (AUTH LOGIN when PLAIN is not
 * offered), or with a token (opts.auth) AUTH XOAUTH2 or AUTH OAUTHBEARER;
 * an initial response that would make the AUTH line longer than 512 bytes
 * is sent after the server's empty 334 instead (RFC 4954). A refused token
 * (535, or 334 with an error, which is answered with an empty line for
 * XOAUTH2 and "AQ==" for OAUTHBEARER, RFC 7628) is asked for once more
 * through mfs_password_get(opts.acct) and tried once more on the same
 * connection. A refused password is not retried.
 *
 * EHLO names the local host name, or "localhost" when it has none
 * that is a plain DNS name. Used extensions: PIPELINING (RFC 2920: MAIL,
 * every RCPT and DATA go in one write, and their replies are read in
 * order, so the envelope costs one round trip), CHUNKING with PIPELINING
 * (RFC 3030: "BDAT n LAST" and the message, not dot-stuffed, go in that
 * same write, so a whole submission costs one round trip; once every byte
 * is out, a lost reply makes the outcome MFS_SMTP_UNKNOWN), 8BITMIME
 * (BODY=8BITMIME), SMTPUTF8, SIZE (checked before MAIL and given as SIZE=).
 * One session sends several messages: after a transaction that ended with
 * the reply to the data's end no RSET is needed; after one that stopped
 * earlier (a refused RCPT or DATA) RSET goes first (in the same write
 * with PIPELINING). A 421 reply ends the session (the server closes it).
 * QUIT on close.
 *
 * Replies must be well formed: every line a code 200-559 (second digit
 * 0-5) followed by the end, a space or '-', the same code on every line of
 * a reply, lines of at most 4096 bytes with no NUL, at most 1000 lines;
 * anything else ends the session (MFS_E_PROTO, or a TEMPFAIL outcome).
 *
 * With -d (mfs_log_debugging()) every command line and reply line is logged
 * as "smtp: C: ..." and "smtp: S: ...", except the AUTH secrets: the initial
 * response, the AUTH LOGIN steps and every line sent after a 334 show as
 * "<hidden>". The password or token is borrowed from the caller and never
 * logged.
 *
 * A session is used by one thread at a time; mfs_smtp_cancel() is the only
 * call another thread may make.
 */
#ifndef MAILFS_SMTP_H
#define MAILFS_SMTP_H

#include <stddef.h>
#include <sys/types.h>

#include "config.h"
#include "error.h"

/* Extensions the server announced (mfs_smtp_caps()). */
#define MFS_SMTP_8BITMIME	  0x01
#define MFS_SMTP_SMTPUTF8	  0x02
#define MFS_SMTP_PIPELINING	  0x04
#define MFS_SMTP_SIZE		  0x08
#define MFS_SMTP_STARTTLS	  0x10
#define MFS_SMTP_AUTH_PLAIN	  0x20
#define MFS_SMTP_AUTH_LOGIN	  0x40
#define MFS_SMTP_AUTH_XOAUTH2	  0x80
#define MFS_SMTP_AUTH_OAUTHBEARER 0x100
#define MFS_SMTP_CHUNKING	  0x200

/* Flags for mfs_smtp_send(). */
#define MFS_SMTP_SEND_8BIT 0x1 /* add BODY=8BITMIME */
#define MFS_SMTP_SEND_UTF8 0x2 /* add SMTPUTF8 */

struct mfs_smtp_opts {
	const struct mfs_server *server; /* borrowed: host, port, tls mode */
	const char *user;		 /* borrowed, or NULL: no AUTH */
	const char *password;		 /* borrowed, or NULL: no AUTH */
	const char *ca_file;		 /* borrowed, or NULL */
	int timeout;			 /* seconds for any one wait, > 0 */
	const char *helo_name;		 /* borrowed, or NULL: see above */
	enum mfs_auth auth;		 /* MFS_AUTH_PASSWORD (0): password is a
					    password (PLAIN, LOGIN); else it is
					    a token for XOAUTH2/OAUTHBEARER */
	const struct mfs_account *acct;	 /* borrowed, or NULL: asked for a new
					    token (mfs_password_get) when the
					    server refuses one; NULL: no retry */
	char **renewed;			 /* borrowed, or NULL: after a login
					    with a new token, *renewed is that
					    token (owned by the caller: keep it
					    for later logins, wipe it with
					    mfs_password_free(); an old value
					    is freed) */
};

struct mfs_smtp; /* one open session */

/*
 * Connects, greets, secures the connection and logs in. On success *out
 * is a session (close with mfs_smtp_close()).
 * Errors (err->msg says which step and quotes the server's reply):
 *   MFS_E_CONNECT  TCP connection failed, or the server closed it
 *   MFS_E_TIMEOUT  a wait ran out
 *   MFS_E_TLS      TLS failed, or smtp:// and no STARTTLS offered
 *   MFS_E_AUTH     AUTH refused (5xx; for a token, also after the retry
 *                  with a new one), or no usable AUTH mechanism
 *   MFS_E_PROTO    an unexpected or malformed reply (4xx greeting etc.)
 * When asking for a new token fails, the error is logged and the refusal
 * (MFS_E_AUTH) returned.
 *   MFS_E_NOMEM
 * mfs_smtp_err_temporary() tells which of these are worth a retry.
 */
int mfs_smtp_open(const struct mfs_smtp_opts *opts, struct mfs_smtp **out,
		  struct mfs_err *err);

/* The MFS_SMTP_* extensions of the session (after the last EHLO). */
unsigned mfs_smtp_caps(const struct mfs_smtp *s);

/* For --check: TLS version and certificate of the session (see
 * mfs_stream_tls_info). */
void mfs_smtp_tls_info(struct mfs_smtp *s, char *version, size_t vlen,
		       char *subject, size_t slen, char *issuer, size_t ilen);

/* The server's SIZE limit in bytes, or 0 when it announced none. */
off_t mfs_smtp_size_limit(const struct mfs_smtp *s);

enum mfs_smtp_status {
	MFS_SMTP_ACCEPTED, /* 2xx after the data; see nrejected */
	MFS_SMTP_TEMPFAIL, /* 4xx, network or timeout before the data's
			      end was sent (the final "." with DATA, the
			      last byte of the chunk with BDAT), or a
			      lost connection after MAIL or every RCPT
			      was refused: safe to send again */
	MFS_SMTP_PERMFAIL, /* 5xx on MAIL, on every RCPT, on DATA, on BDAT
			      or after the data; or too large for SIZE */
	MFS_SMTP_UNKNOWN,  /* the data's end was sent and no reply came
			      (network, timeout): the server may have
			      accepted it; do not resend automatically */
};

struct mfs_smtp_rejected {
	char *rcpt;  /* owned */
	char *reply; /* owned: "550 5.1.1 <x@y>: ... User unknown" */
};

struct mfs_smtp_result {
	enum mfs_smtp_status status;
	char *reply; /* owned: the decisive server reply (code and text,
			lines of a multi-line reply joined with "; "), or
			a local description ("connection lost: ...") */
	struct mfs_smtp_rejected *rejected; /* owned: nrejected entries */
	size_t nrejected;
};

/*
 * Sends one message: MAIL FROM:<sender> (with SIZE=, BODY=8BITMIME and
 * SMTPUTF8 as flags and capabilities say), RCPT TO for each recipient,
 * DATA, the size bytes of fd from offset 0 (read with pread, 64 KiB at a
 * time; CRLF line ends expected, lines starting with '.' are dot-stuffed
 * here; a missing final CRLF is added), ".". With PIPELINING and
 * CHUNKING, "BDAT n LAST" and those bytes as they are (no dot-stuffing, n
 * counting the added CRLF) take the place of DATA and go in the same write
 * as MAIL and RCPT; the replies are then read in order. RSET first when
 * the session's previous transaction was left open. With PIPELINING, a
 * server that answers DATA with 354 although no recipient was accepted
 * gets no data: the session is dropped instead (nothing can be delivered
 * then). With BDAT, a refused RSET (the message being out already) ends
 * the session and the reply to BDAT decides: 2xx is ACCEPTED, anything
 * else TEMPFAIL.
 * Fills *res (release with mfs_smtp_result_free()). Some recipients
 * rejected and others accepted: MFS_SMTP_ACCEPTED with the rejected ones
 * listed. After a TEMPFAIL or UNKNOWN caused by the network, or a 421
 * reply, the session is dead: mfs_smtp_alive() returns 0 and it must be
 * closed. A TEMPFAIL on a dead session means nothing of the message was
 * accepted, so it may be sent again at once on a new session.
 * Returns MFS_OK when *res holds an outcome; MFS_E_NOMEM or MFS_E_INVAL
 * (no recipient, NULL sender) otherwise.
 */
int mfs_smtp_send(struct mfs_smtp *s, const char *sender,
		  const char *const *rcpts, size_t nrcpts, int fd, off_t size,
		  unsigned flags, struct mfs_smtp_result *res,
		  struct mfs_err *err);

/* Frees the owned fields of *res and zeroes it. Safe on a zeroed struct. */
void mfs_smtp_result_free(struct mfs_smtp_result *res);

/* 1 while the session can send another message, else 0: after an error
 * that ended it, and when the server sent something unasked since the
 * last reply (a 421, or it closed the connection, e.g. after its idle
 * time), which is checked without waiting. */
int mfs_smtp_alive(const struct mfs_smtp *s);

/* Wakes a blocked read or write of the session from another thread; the
 * session is then dead (the blocked call fails as a network error). */
void mfs_smtp_cancel(struct mfs_smtp *s);

/* Sends QUIT (when alive; the reply is waited for at most 2 seconds, or
 * the session's timeout when shorter), closes the connection and frees s.
 * NULL is fine. */
void mfs_smtp_close(struct mfs_smtp *s);

/* mailfs --check of the account's submission server: connects, secures,
 * logs in, and prints to stdout the server, its TLS and what it offers;
 * a failure goes to stderr. Returns 0, or 1 on failure. */
int mfs_smtp_check(const struct mfs_account *acct, const char *password);

/* 1 when an error from mfs_smtp_open() is worth a retry later (network,
 * timeout, 4xx), 0 when it is not (TLS verification, AUTH refused with
 * 5xx, no STARTTLS). */
int mfs_smtp_err_temporary(const struct mfs_err *err);

#endif
