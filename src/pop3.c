/*
 * pop3.c - the POP3 driver (see pop3.h).
 *
 * This file speaks POP3 itself over the mailstream that tls.c provides
 * (libetpan's mailpop3 sends one command and waits for its reply, which
 * rules out pipelining, and it reads whole messages into memory). Replies
 * are read through a small buffer of our own, so that a message is
 * streamed to its file line by line and memory does not grow with its
 * size.
 *
 * One session per operation: POP3 servers lock the maildrop for as long as
 * a session is open (another client, or the user's phone, would get
 * "-ERR in use"), and message numbers mean nothing outside their session.
 */
#include "pop3.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <libetpan/libetpan.h>
#include <openssl/evp.h>

#include "auth.h"
#include "header.h"
#include "log.h"
#include "names.h"
#include "query.h"
#include "sasl.h"
#include "tls.h"

#define P3_LINE_MAX 1024	 /* status, CAPA, UIDL and LIST lines */
#define P3_HDR_MAX  (256 * 1024) /* header bytes kept per message */
#define P3_WINDOW   16384	 /* TOP bytes unanswered (see read_headers) */
#define P3_UIDL_MAX 70		 /* RFC 1939 7 */
#define P3_CMD_MAX  16384	 /* a command line with a secret in it */
#define P3_CMD_IR   255		 /* RFC 5034 4: AUTH with initial response */
#define P3_OUT_BUF  16384	 /* bytes gathered before a write(2) */

/* What CAPA said (RFC 2449). */
enum {
	CAP_STLS = 1 << 0,
	CAP_USER = 1 << 1,
	CAP_SASL_PLAIN = 1 << 2,
	CAP_PIPELINING = 1 << 3,
	CAP_UIDL = 1 << 4,
	CAP_TOP = 1 << 5,
	CAP_EXPIRE_0 = 1 << 6,	  /* "EXPIRE 0": RETR deletes */
	CAP_EXPIRE_USER = 1 << 7, /* the policy is per user: ask after login */
	CAP_SASL_XOAUTH2 = 1 << 8,
	CAP_SASL_OAUTHBEARER = 1 << 9,
};

struct mfs_pop3 {
	pthread_mutex_t lock;		/* one session at a time */
	const struct mfs_account *acct; /* borrowed */
	const char *password;		/* borrowed */
	char *fresh; /* owned (mfs_password_free) or NULL: a token asked for
			again after the server refused the one before; used
			instead of password from then on */
	int expire_warned; /* the EXPIRE 0 warning has been logged */
	/* of the last session that completed its TLS handshake */
	char tls_version[64];
	char tls_subject[512];
	char tls_issuer[512];
};

/* One POP3 session. */
struct pop3_conn {
	struct mfs_pop3 *pop;	 /* borrowed */
	mailstream *s;		 /* owned */
	unsigned caps;		 /* CAP_* */
	int have_capa;		 /* the server answered CAPA */
	int broken;		 /* the stream failed: close without QUIT */
	int quit_sent;		 /* QUIT went out with the last batch */
	int secret;		 /* a secret is queued: wipe after the flush */
	char stamp[P3_LINE_MAX]; /* the greeting's <timestamp>, or "" */
	size_t pos, len;	 /* unread bytes are buf[pos..len) */
	char buf[8192];		 /* at most the stream's buffer size */
};

/* ---- the session: bytes in and out ----------------------------------- */

static int conn_stream_fail(struct pop3_conn *c, const char *what,
			    struct mfs_err *err)
{
	const struct mfs_server *srv = &c->pop->acct->store;

	c->broken = 1;
	if (mfs_stream_timed_out(c->s))
		return mfs_err_set(err, MFS_E_TIMEOUT,
				   "%s: %s:%d did not answer within %d s", what,
				   srv->host, srv->port, c->pop->acct->timeout);
	return mfs_err_set(err, MFS_E_CONNECT, "%s: connection to %s:%d lost",
			   what, srv->host, srv->port);
}

static int conn_fill(struct pop3_conn *c, const char *what, struct mfs_err *err)
{
	ssize_t n = mailstream_read(c->s, c->buf, sizeof(c->buf));

	if (n <= 0)
		return conn_stream_fail(c, what, err);
	c->pos = 0;
	c->len = (size_t)n;
	return MFS_OK;
}

/*
 * Reads the next piece of a line into out (at most cap >= 2 bytes, not
 * NUL-terminated): up to and including its LF, or cap bytes. *eol says
 * whether the piece ends the line; the LF and a CR just before it are
 * then removed. A CR is never the last byte of a piece that does not end
 * the line, so a CRLF is never split between two pieces.
 */
static int conn_piece(struct pop3_conn *c, char *out, size_t cap, size_t *n,
		      int *eol, const char *what, struct mfs_err *err)
{
	size_t k = 0;

	*eol = 0;
	for (;;) {
		char ch;

		if (k == cap) {
			if (out[k - 1] == '\r' && k > 1) {
				k--;
				c->pos--; /* still in buf: no refill since */
			}
			break;
		}
		if (c->pos == c->len && conn_fill(c, what, err) != MFS_OK)
			return err->code;
		ch = c->buf[c->pos++];
		if (ch == '\n') {
			*eol = 1;
			if (k > 0 && out[k - 1] == '\r')
				k--;
			break;
		}
		out[k++] = ch;
	}
	*n = k;
	return MFS_OK;
}

/* One whole reply line, NUL-terminated, cut at cap - 1 bytes (the rest of
 * the line is read and dropped). A NUL byte in it is MFS_E_PROTO. */
static int conn_line(struct pop3_conn *c, char *line, size_t cap,
		     const char *what, struct mfs_err *err)
{
	size_t n, len = 0, skip;
	char scratch[256];
	int eol;

	if (conn_piece(c, line, cap - 1, &n, &eol, what, err) != MFS_OK)
		return err->code;
	len = n;
	while (!eol) {
		if (conn_piece(c, scratch, sizeof(scratch), &skip, &eol, what,
			       err) != MFS_OK)
			return err->code;
	}
	if (memchr(line, '\0', len) != NULL) {
		c->broken = 1;
		return mfs_err_set(err, MFS_E_PROTO,
				   "%s: the server sent a NUL byte", what);
	}
	line[len] = '\0';
	return MFS_OK;
}

/*
 * Queues the command line shown + secret (secret may be NULL), CRLF added;
 * sent by conn_flush(). The -d trace shows it as "C: shown<hidden>".
 */
static int conn_put(struct pop3_conn *c, const char *what, const char *shown,
		    const char *secret, struct mfs_err *err)
{
	size_t n = strlen(shown), k = secret != NULL ? strlen(secret) : 0;

	if (n + k + 2 > P3_CMD_MAX)
		return mfs_err_set(err, MFS_E_INVAL, "%s: command too long",
				   what);
	mfs_log_debug("pop3: C: %s%s", shown, secret != NULL ? "<hidden>" : "");
	if (secret != NULL)
		c->secret = 1;
	if (mailstream_write(c->s, shown, n) != (ssize_t)n ||
	    (k > 0 && mailstream_write(c->s, secret, k) != (ssize_t)k) ||
	    mailstream_write(c->s, "\r\n", 2) != 2)
		return conn_stream_fail(c, what, err);
	return MFS_OK;
}

/* Queues one command line without a secret in it (see conn_put). */
static int conn_send(struct pop3_conn *c, const char *what, struct mfs_err *err,
		     const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int conn_send(struct pop3_conn *c, const char *what, struct mfs_err *err,
		     const char *fmt, ...)
{
	char cmd[P3_LINE_MAX];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(cmd))
		return mfs_err_set(err, MFS_E_INVAL, "%s: command too long",
				   what);
	return conn_put(c, what, cmd, NULL, err);
}

static int conn_flush(struct pop3_conn *c, const char *what,
		      struct mfs_err *err)
{
	int r = mailstream_flush(c->s);

	/* The password or token went out from libetpan's write buffer. */
	if (c->secret) {
		mfs_stream_wipe(c->s);
		c->secret = 0;
	}
	if (r != 0)
		return conn_stream_fail(c, what, err);
	return MFS_OK;
}

/* Reads a status line (not a data line) and traces it ("S: ..."). */
static int conn_reply(struct pop3_conn *c, char *line, size_t cap,
		      const char *what, struct mfs_err *err)
{
	if (conn_line(c, line, cap, what, err) != MFS_OK)
		return err->code;
	mfs_log_debug("pop3: S: %s", line);
	return MFS_OK;
}

/*
 * Reads a status line. *ok is 1 for "+OK", 0 for "-ERR"; text (cap bytes)
 * receives what follows it, for error messages. Anything else is
 * MFS_E_PROTO and breaks the session.
 */
static int conn_status(struct pop3_conn *c, int *ok, char *text, size_t cap,
		       const char *what, struct mfs_err *err)
{
	char line[P3_LINE_MAX];
	const char *rest;

	if (conn_reply(c, line, sizeof(line), what, err) != MFS_OK)
		return err->code;
	if (strncmp(line, "+OK", 3) == 0) {
		*ok = 1;
		rest = line + 3;
	} else if (strncmp(line, "-ERR", 4) == 0) {
		*ok = 0;
		rest = line + 4;
	} else {
		c->broken = 1;
		return mfs_err_set(err, MFS_E_PROTO,
				   "%s: unexpected reply \"%.80s\"", what,
				   line);
	}
	while (*rest == ' ')
		rest++;
	if (text != NULL)
		snprintf(text, cap, "%s",
			 *rest != '\0' ? rest : "no reason given");
	return MFS_OK;
}

/* The next line of a multi-line reply, dot-unstuffed, into line (cap
 * bytes, cut as by conn_line). *end is 1 at the terminating ".". */
static int conn_ml_line(struct pop3_conn *c, char *line, size_t cap, int *end,
			const char *what, struct mfs_err *err)
{
	if (conn_line(c, line, cap, what, err) != MFS_OK)
		return err->code;
	*end = strcmp(line, ".") == 0;
	if (line[0] == '.')
		memmove(line, line + 1, strlen(line));
	return MFS_OK;
}

/* Reads and drops the rest of a multi-line reply. */
static int conn_ml_skip(struct pop3_conn *c, const char *what,
			struct mfs_err *err)
{
	char line[P3_LINE_MAX];
	int end = 0;

	while (!end)
		if (conn_ml_line(c, line, sizeof(line), &end, what, err) !=
		    MFS_OK)
			return err->code;
	return MFS_OK;
}

/* Sends one command and reads its status line. */
static int conn_cmd(struct pop3_conn *c, int *ok, char *text, size_t cap,
		    const char *what, struct mfs_err *err, const char *cmd)
{
	if (conn_send(c, what, err, "%s", cmd) != MFS_OK ||
	    conn_flush(c, what, err) != MFS_OK)
		return err->code;
	return conn_status(c, ok, text, cap, what, err);
}

/* ---- the session: opening and closing --------------------------------- */

/* Ends the session: QUIT unless the stream broke, then the socket. */
static void conn_close(struct pop3_conn *c)
{
	int ok;

	if (c == NULL)
		return;
	if (c->s != NULL && !c->broken) {
		struct mfs_err ignored;

		if (c->quit_sent ||
		    conn_send(c, "QUIT", &ignored, "QUIT") == MFS_OK) {
			if (conn_flush(c, "QUIT", &ignored) == MFS_OK)
				conn_status(c, &ok, NULL, 0, "QUIT", &ignored);
		}
	}
	if (c->s != NULL)
		mailstream_close(c->s);
	free(c);
}

static void capa_line(struct pop3_conn *c, const char *line)
{
	char word[64];
	const char *rest;
	size_t n = strcspn(line, " ");

	if (n >= sizeof(word))
		return;
	memcpy(word, line, n);
	word[n] = '\0';
	rest = line + n;
	if (strcasecmp(word, "STLS") == 0)
		c->caps |= CAP_STLS;
	else if (strcasecmp(word, "USER") == 0)
		c->caps |= CAP_USER;
	else if (strcasecmp(word, "PIPELINING") == 0)
		c->caps |= CAP_PIPELINING;
	else if (strcasecmp(word, "UIDL") == 0)
		c->caps |= CAP_UIDL;
	else if (strcasecmp(word, "TOP") == 0)
		c->caps |= CAP_TOP;
	else if (strcasecmp(word, "SASL") == 0) {
		char mechs[P3_LINE_MAX], *save = NULL, *m;

		snprintf(mechs, sizeof(mechs), "%s", rest);
		for (m = strtok_r(mechs, " ", &save); m != NULL;
		     m = strtok_r(NULL, " ", &save)) {
			if (strcasecmp(m, "PLAIN") == 0)
				c->caps |= CAP_SASL_PLAIN;
			else if (strcasecmp(m, "XOAUTH2") == 0)
				c->caps |= CAP_SASL_XOAUTH2;
			else if (strcasecmp(m, "OAUTHBEARER") == 0)
				c->caps |= CAP_SASL_OAUTHBEARER;
		}
	} else if (strcasecmp(word, "EXPIRE") == 0) {
		char val[32] = "", user[16] = "";

		if (sscanf(rest, " %31s %15s", val, user) >= 1) {
			if (strcmp(val, "0") == 0)
				c->caps |= CAP_EXPIRE_0;
			if (strcasecmp(user, "USER") == 0)
				c->caps |= CAP_EXPIRE_USER;
		}
	}
}

/* CAPA: fills c->caps (0 and have_capa 0 when the server knows no CAPA). */
static int conn_capa(struct pop3_conn *c, struct mfs_err *err)
{
	char line[P3_LINE_MAX];
	int ok, end = 0;

	c->caps = 0;
	c->have_capa = 0;
	if (conn_cmd(c, &ok, NULL, 0, "CAPA", err, "CAPA") != MFS_OK)
		return err->code;
	if (!ok)
		return MFS_OK;
	c->have_capa = 1;
	for (;;) {
		if (conn_ml_line(c, line, sizeof(line), &end, "CAPA", err) !=
		    MFS_OK)
			return err->code;
		if (end)
			break;
		capa_line(c, line);
	}
	return MFS_OK;
}

static int conn_stls(struct pop3_conn *c, const struct mfs_tls_opts *tls,
		     struct mfs_err *err)
{
	const struct mfs_server *srv = &c->pop->acct->store;
	char text[256];
	int ok;

	if (!(c->caps & CAP_STLS)) {
		c->broken = 1; /* say nothing more, QUIT included */
		return mfs_err_set(err, MFS_E_TLS,
				   "%s:%d does not offer STLS; refusing to "
				   "log in without TLS (tls = none allows it)",
				   srv->host, srv->port);
	}
	if (conn_cmd(c, &ok, text, sizeof(text), "STLS", err, "STLS") != MFS_OK)
		return err->code;
	if (!ok) {
		c->broken = 1;
		return mfs_err_set(err, MFS_E_TLS, "STLS at %s:%d refused: %s",
				   srv->host, srv->port, text);
	}
	if (c->pos != c->len) {
		c->broken = 1;
		return mfs_err_set(err, MFS_E_TLS,
				   "TLS to %s: server sent data before the "
				   "TLS handshake",
				   srv->host);
	}
	if (mfs_stream_starttls(c->s, tls, err) != MFS_OK) {
		c->broken = 1;
		return err->code;
	}
	return conn_capa(c, err);
}

/* EXPIRE 0 (RFC 2449 6.7): the server deletes every message it sends.
 * Refused unless allow_expire; then a warning, once per store. */
static int check_expire(struct pop3_conn *c, struct mfs_err *err)
{
	const struct mfs_account *acct = c->pop->acct;
	const struct mfs_server *srv = &acct->store;

	if (!(c->caps & CAP_EXPIRE_0))
		return MFS_OK;
	if (!acct->allow_expire)
		return mfs_err_set(err, MFS_E_ACCESS,
				   "%s:%d: server deletes retrieved mail "
				   "(EXPIRE 0); refusing to read (set "
				   "allow_expire = yes to read it anyway, the "
				   "server then deletes every message mailfs "
				   "reads)",
				   srv->host, srv->port);
	if (!c->pop->expire_warned) {
		c->pop->expire_warned = 1;
		mfs_log_err("warning: %s:%d deletes every message mailfs reads "
			    "(EXPIRE 0); reading anyway (allow_expire = yes)",
			    srv->host, srv->port);
	}
	return MFS_OK;
}

static int auth_refused(struct pop3_conn *c, const char *text,
			struct mfs_err *err)
{
	const struct mfs_account *acct = c->pop->acct;

	return mfs_err_set(err, MFS_E_AUTH, "login as %s at %s:%d refused: %s",
			   acct->user, acct->store.host, acct->store.port,
			   text);
}

/* The secret of the next login: the token asked for again, else the one
 * the store was made with. */
static const char *pop_secret(const struct mfs_pop3 *pop)
{
	return pop->fresh != NULL ? pop->fresh : pop->password;
}

/* USER and PASS, sent together when the server pipelines. */
static int login_user_pass(struct pop3_conn *c, struct mfs_err *err)
{
	const struct mfs_account *acct = c->pop->acct;
	char text[256];
	int ok, ok2;

	if (conn_send(c, "USER", err, "USER %s", acct->user) != MFS_OK)
		return err->code;
	if (!(c->caps & CAP_PIPELINING)) {
		if (conn_flush(c, "USER", err) != MFS_OK ||
		    conn_status(c, &ok, text, sizeof(text), "USER", err) !=
			MFS_OK)
			return err->code;
		if (!ok)
			return auth_refused(c, text, err);
	}
	if (conn_put(c, "PASS", "PASS ", pop_secret(c->pop), err) != MFS_OK ||
	    conn_flush(c, "PASS", err) != MFS_OK)
		return err->code;
	if (c->caps & CAP_PIPELINING) {
		if (conn_status(c, &ok, text, sizeof(text), "USER", err) !=
		    MFS_OK)
			return err->code;
		if (conn_status(c, &ok2, ok ? text : NULL, sizeof(text), "PASS",
				err) != MFS_OK)
			return err->code;
		ok = ok && ok2;
	} else if (conn_status(c, &ok, text, sizeof(text), "PASS", err) !=
		   MFS_OK) {
		return err->code;
	}
	return ok ? MFS_OK : auth_refused(c, text, err);
}

/* The timestamp of an APOP greeting ("+OK ... <stamp>"), if any. */
static void greeting_stamp(struct pop3_conn *c, const char *text)
{
	const char *lt = strchr(text, '<');
	const char *gt = lt != NULL ? strchr(lt, '>') : NULL;

	c->stamp[0] = '\0';
	if (gt != NULL && gt - lt > 1)
		snprintf(c->stamp, sizeof(c->stamp), "%.*s", (int)(gt - lt + 1),
			 lt);
}

/* MD5 of stamp and secret as 32 lower-case hex digits (RFC 1939 7). */
static int apop_digest(const char *stamp, const char *secret, char hex[33])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int len = 0, i;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int ok;

	if (ctx == NULL)
		return -1;
	ok = EVP_DigestInit_ex(ctx, EVP_md5(), NULL) == 1 &&
	     EVP_DigestUpdate(ctx, stamp, strlen(stamp)) == 1 &&
	     EVP_DigestUpdate(ctx, secret, strlen(secret)) == 1 &&
	     EVP_DigestFinal_ex(ctx, md, &len) == 1 && len == 16;
	EVP_MD_CTX_free(ctx);
	for (i = 0; ok && i < 16; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	explicit_bzero(md, sizeof(md));
	return ok ? 0 : -1;
}

/* APOP user digest: the password itself never goes out. */
static int login_apop(struct pop3_conn *c, struct mfs_err *err)
{
	const struct mfs_account *acct = c->pop->acct;
	char shown[P3_LINE_MAX], digest[33], text[256];
	int ok, r;

	if (c->stamp[0] == '\0')
		return mfs_err_set(err, MFS_E_AUTH,
				   "apop = yes, but the server offers no APOP "
				   "(no <timestamp> in its greeting); the "
				   "password is not sent");
	if (apop_digest(c->stamp, pop_secret(c->pop), digest) != 0)
		return mfs_err_set(err, MFS_E_AUTH,
				   "APOP: MD5 is not available");
	if (snprintf(shown, sizeof(shown), "APOP %s ", acct->user) >=
	    (int)sizeof(shown))
		return mfs_err_set(err, MFS_E_AUTH, "APOP: user name too long");
	r = conn_put(c, "APOP", shown, digest, err);
	explicit_bzero(digest, sizeof(digest));
	if (r != MFS_OK || conn_flush(c, "APOP", err) != MFS_OK ||
	    conn_status(c, &ok, text, sizeof(text), "APOP", err) != MFS_OK)
		return err->code;
	return ok ? MFS_OK : auth_refused(c, text, err);
}

/*
 * AUTH mech with the initial response ir (RFC 5034): on the command line
 * when that stays within 255 octets, else after the server's "+"
 * challenge. A challenge after the response means failure (XOAUTH2 and
 * OAUTHBEARER carry their error in it): it is answered with `cancel` and
 * the final -ERR is read. MFS_E_AUTH means the server refused.
 */
static int login_sasl(struct pop3_conn *c, const char *mech, const char *ir,
		      const char *cancel, struct mfs_err *err)
{
	char shown[64], line[P3_LINE_MAX];
	int ok;

	snprintf(shown, sizeof(shown), "AUTH %s ", mech);
	if (strlen(shown) + strlen(ir) <= P3_CMD_IR) {
		if (conn_put(c, "AUTH", shown, ir, err) != MFS_OK)
			return err->code;
	} else {
		if (conn_send(c, "AUTH", err, "AUTH %s", mech) != MFS_OK ||
		    conn_flush(c, "AUTH", err) != MFS_OK ||
		    conn_reply(c, line, sizeof(line), "AUTH", err) != MFS_OK)
			return err->code;
		if (strncmp(line, "-ERR", 4) == 0)
			return auth_refused(
			    c, line[4] == ' ' ? line + 5 : "no reason given",
			    err);
		if (line[0] != '+' || strncmp(line, "+OK", 3) == 0) {
			c->broken = 1;
			return mfs_err_set(err, MFS_E_PROTO,
					   "AUTH: unexpected reply \"%.80s\"",
					   line);
		}
		if (conn_put(c, "AUTH", "", ir, err) != MFS_OK)
			return err->code;
	}
	if (conn_flush(c, "AUTH", err) != MFS_OK ||
	    conn_reply(c, line, sizeof(line), "AUTH", err) != MFS_OK)
		return err->code;
	if (strncmp(line, "+OK", 3) == 0)
		return MFS_OK;
	if (line[0] == '+') {
		if (conn_put(c, "AUTH", cancel, NULL, err) != MFS_OK ||
		    conn_flush(c, "AUTH", err) != MFS_OK ||
		    conn_status(c, &ok, line, sizeof(line), "AUTH", err) !=
			MFS_OK)
			return err->code;
		return auth_refused(
		    c, ok ? "the server sent a challenge" : line, err);
	}
	if (strncmp(line, "-ERR", 4) != 0) {
		c->broken = 1;
		return mfs_err_set(err, MFS_E_PROTO,
				   "AUTH: unexpected reply \"%.80s\"", line);
	}
	return auth_refused(c, line[4] == ' ' ? line + 5 : "no reason given",
			    err);
}

/* SASL PLAIN with the initial response. */
static int login_plain(struct pop3_conn *c, struct mfs_err *err)
{
	char *ir = mfs_sasl_plain(c->pop->acct->user, pop_secret(c->pop));
	int r;

	if (ir == NULL)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	r = login_sasl(c, "PLAIN", ir, "*", err);
	mfs_sasl_free(ir);
	return r;
}

/* One XOAUTH2 or OAUTHBEARER attempt with token, as an mfs_login_fn: arg
 * is the struct pop3_conn. */
static int login_token(void *arg, const char *token, int *refused,
		       struct mfs_err *err)
{
	struct pop3_conn *c = arg;
	const struct mfs_account *acct = c->pop->acct;
	int bearer = acct->auth == MFS_AUTH_OAUTHBEARER;
	char *ir;
	int r;

	*refused = 0;
	if (bearer)
		ir = mfs_sasl_oauthbearer(acct->user, acct->store.host,
					  acct->store.port, token);
	else
		ir = mfs_sasl_xoauth2(acct->user, token);
	if (ir == NULL)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	r = login_sasl(c, bearer ? "OAUTHBEARER" : "XOAUTH2", ir,
		       bearer ? "AQ==" : "*", err);
	mfs_sasl_free(ir);
	*refused = r == MFS_E_AUTH && !c->broken;
	return r;
}

/*
 * XOAUTH2 or OAUTHBEARER. Tokens expire: when the server refuses one, the
 * password source is asked once more and the login tried once more in the
 * same session (mfs_login_renewing); the new token is kept for later
 * sessions.
 */
static int login_oauth(struct pop3_conn *c, struct mfs_err *err)
{
	struct mfs_pop3 *pop = c->pop;
	const struct mfs_server *srv = &pop->acct->store;
	int bearer = pop->acct->auth == MFS_AUTH_OAUTHBEARER;
	unsigned need = bearer ? CAP_SASL_OAUTHBEARER : CAP_SASL_XOAUTH2;
	char *fresh;
	int r;

	if (c->have_capa && !(c->caps & need))
		return mfs_err_set(
		    err, MFS_E_AUTH, "%s:%d does not offer SASL %s", srv->host,
		    srv->port, bearer ? "OAUTHBEARER" : "XOAUTH2");
	r = mfs_login_renewing(pop->acct, "pop3", srv, login_token, c,
			       pop_secret(pop), &fresh, err);
	if (fresh != NULL) {
		mfs_password_free(pop->fresh);
		pop->fresh = fresh;
	}
	return r;
}

static int conn_login(struct pop3_conn *c, struct mfs_err *err)
{
	const struct mfs_account *acct = c->pop->acct;

	if (acct->auth == MFS_AUTH_XOAUTH2 ||
	    acct->auth == MFS_AUTH_OAUTHBEARER)
		return login_oauth(c, err);
	if (strpbrk(acct->user, "\r\n") != NULL ||
	    strpbrk(pop_secret(c->pop), "\r\n") != NULL)
		return mfs_err_set(err, MFS_E_AUTH,
				   "user name or password contains a line "
				   "break");
	if (acct->apop)
		return login_apop(c, err);
	/* Without CAPA, USER/PASS is the one method every server has. */
	if (!c->have_capa || (c->caps & CAP_USER))
		return login_user_pass(c, err);
	if (c->caps & CAP_SASL_PLAIN)
		return login_plain(c, err);
	return mfs_err_set(err, MFS_E_AUTH,
			   "%s:%d offers neither USER nor SASL PLAIN",
			   acct->store.host, acct->store.port);
}

/* On a connected stream c->s: greeting, CAPA, STLS, EXPIRE, login. */
static int conn_start(struct pop3_conn *c, struct mfs_err *err)
{
	struct mfs_pop3 *pop = c->pop;
	const struct mfs_account *acct = pop->acct;
	const struct mfs_server *srv = &acct->store;
	struct mfs_tls_opts tls = {srv->host, acct->ca_file, acct->timeout};
	char text[P3_LINE_MAX];
	int ok;

	if (conn_status(c, &ok, text, sizeof(text), "greeting", err) != MFS_OK)
		return err->code;
	if (!ok) {
		c->broken = 1;
		return mfs_err_set(err, MFS_E_CONNECT,
				   "%s:%d refused the session: %.256s",
				   srv->host, srv->port, text);
	}
	greeting_stamp(c, text);
	if (conn_capa(c, err) != MFS_OK)
		return err->code;
	if (srv->tls == MFS_TLS_STARTTLS && conn_stls(c, &tls, err) != MFS_OK)
		return err->code;
	if (check_expire(c, err) != MFS_OK || conn_login(c, err) != MFS_OK)
		return err->code;
	if ((c->caps & CAP_EXPIRE_USER) &&
	    (conn_capa(c, err) != MFS_OK || check_expire(c, err) != MFS_OK))
		return err->code;
	mfs_stream_tls_info(c->s, pop->tls_version, sizeof(pop->tls_version),
			    pop->tls_subject, sizeof(pop->tls_subject),
			    pop->tls_issuer, sizeof(pop->tls_issuer));
	mfs_log_debug("pop3: logged in to %s:%d as %s", srv->host, srv->port,
		      acct->user);
	return MFS_OK;
}

/* TCP, TLS (implicit or STLS), greeting, CAPA, login: a session ready for
 * the transaction state, or an error. */
static int conn_open(struct mfs_pop3 *pop, struct pop3_conn **out,
		     struct mfs_err *err)
{
	const struct mfs_account *acct = pop->acct;
	const struct mfs_server *srv = &acct->store;
	struct mfs_tls_opts tls = {srv->host, acct->ca_file, acct->timeout};
	struct pop3_conn *c;
	int fd;

	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	c->pop = pop;
	fd = mfs_tcp_connect(srv->host, srv->port, acct->timeout, err);
	if (fd < 0)
		goto free_conn;
	if (srv->tls == MFS_TLS_IMPLICIT)
		c->s = mfs_stream_tls(fd, &tls, err);
	else
		c->s = mfs_stream_plain(fd, acct->timeout, err);
	if (c->s == NULL)
		goto free_conn;
	if (conn_start(c, err) != MFS_OK)
		goto close_conn;
	*out = c;
	return MFS_OK;

close_conn:
	conn_close(c);
	return err->code;
free_conn:
	free(c);
	return err->code;
}

/* ---- UIDL and LIST ----------------------------------------------------- */

/* A UIDL as RFC 1939 allows it: 1 to 70 characters 0x21..0x7E. */
static int uidl_valid(const char *s)
{
	size_t n = strlen(s), i;

	if (n == 0 || n > P3_UIDL_MAX)
		return 0;
	for (i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
			return 0;
	return 1;
}

/* "N REST": the number and a pointer to REST (one word). */
static int scan_listing(const char *line, uint32_t *num, const char **rest)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(line, &end, 10);
	if (errno != 0 || end == line || *end != ' ' || v == 0 ||
	    v > UINT32_MAX || line[0] < '0' || line[0] > '9')
		return -1;
	while (*end == ' ')
		end++;
	*num = (uint32_t)v;
	*rest = end;
	return 0;
}

static int no_uidl(struct pop3_conn *c, struct mfs_err *err)
{
	const struct mfs_server *srv = &c->pop->acct->store;

	return mfs_err_set(err, MFS_E_PROTO,
			   "%s:%d: server has no UIDL; message names would "
			   "not be stable",
			   srv->host, srv->port);
}

static int bad_reply(struct pop3_conn *c, const char *what, const char *line,
		     struct mfs_err *err)
{
	c->broken = 1;
	return mfs_err_set(err, MFS_E_PROTO,
			   "%s: cannot use the line \"%.80s\"", what, line);
}

/* Reads a UIDL listing into msgs (uid and uidl), *n of them. */
static int read_uidl(struct pop3_conn *c, struct mfs_store_msg **msgs,
		     size_t *n, struct mfs_err *err)
{
	struct mfs_store_msg *out = NULL, *grown;
	size_t count = 0, room = 0;
	char line[P3_LINE_MAX];
	const char *id;
	uint32_t num;
	int ok, end;

	if (conn_status(c, &ok, NULL, 0, "UIDL", err) != MFS_OK)
		return err->code;
	if (!ok)
		return no_uidl(c, err);
	for (;;) {
		if (conn_ml_line(c, line, sizeof(line), &end, "UIDL", err) !=
		    MFS_OK)
			goto free_out;
		if (end)
			break;
		if (scan_listing(line, &num, &id) != 0) {
			bad_reply(c, "UIDL", line, err);
			goto free_out;
		}
		if (!uidl_valid(id)) {
			c->broken = 1;
			mfs_err_set(err, MFS_E_PROTO,
				    "UIDL: message %" PRIu32 " has an "
				    "invalid UIDL (RFC 1939: 1 to 70 "
				    "characters from 0x21 to 0x7E)",
				    num);
			goto free_out;
		}
		if (count == room) {
			room = room ? room * 2 : 64;
			grown = realloc(out, room * sizeof(*out));
			if (grown == NULL) {
				mfs_err_set(err, MFS_E_NOMEM, "out of memory");
				goto free_out;
			}
			out = grown;
		}
		memset(&out[count], 0, sizeof(out[count]));
		out[count].uid = num;
		out[count].uidl = strdup(id);
		if (out[count].uidl == NULL) {
			mfs_err_set(err, MFS_E_NOMEM, "out of memory");
			goto free_out;
		}
		count++;
	}
	*msgs = out;
	*n = count;
	return MFS_OK;

free_out:
	mfs_store_msgs_free(out, count);
	return err->code;
}

static int cmp_uid(const void *a, const void *b)
{
	const struct mfs_store_msg *x = a, *y = b;

	return x->uid < y->uid ? -1 : x->uid > y->uid;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static struct mfs_store_msg *find_uid(struct mfs_store_msg *msgs, size_t n,
				      uint32_t uid)
{
	struct mfs_store_msg key = {.uid = uid};

	if (n == 0) /* msgs may be NULL, which bsearch must not get */
		return NULL;
	return bsearch(&key, msgs, n, sizeof(*msgs), cmp_uid);
}

/* Sorts msgs by number and refuses a number or a UIDL seen twice. */
static int check_unique(struct pop3_conn *c, struct mfs_store_msg *msgs,
			size_t n, struct mfs_err *err)
{
	char **ids;
	size_t i;
	int r = MFS_OK;

	if (n == 0) /* an empty maildrop: msgs is NULL */
		return MFS_OK;
	qsort(msgs, n, sizeof(*msgs), cmp_uid);
	for (i = 1; i < n; i++)
		if (msgs[i].uid == msgs[i - 1].uid)
			return bad_reply(c, "UIDL", "a message number twice",
					 err);
	ids = malloc((n + 1) * sizeof(*ids));
	if (ids == NULL)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	for (i = 0; i < n; i++)
		ids[i] = msgs[i].uidl;
	qsort(ids, n, sizeof(*ids), cmp_str);
	for (i = 1; i < n; i++) {
		if (strcmp(ids[i], ids[i - 1]) == 0) {
			c->broken = 1;
			r = mfs_err_set(err, MFS_E_PROTO,
					"UIDL: two messages share the UIDL "
					"%s",
					ids[i]);
			break;
		}
	}
	free(ids);
	return r;
}

/* Reads a LIST listing into the sizes of msgs (sorted by uid). Every
 * message of the UIDL listing must have a size, and no other. */
static int read_list(struct pop3_conn *c, struct mfs_store_msg *msgs, size_t n,
		     struct mfs_err *err)
{
	char line[P3_LINE_MAX], *end_num;
	const char *rest;
	struct mfs_store_msg *m;
	unsigned long long size;
	size_t seen = 0;
	uint32_t num;
	int ok, end;

	if (conn_status(c, &ok, NULL, 0, "LIST", err) != MFS_OK)
		return err->code;
	if (!ok) {
		c->broken = 1;
		return mfs_err_set(err, MFS_E_PROTO, "LIST refused");
	}
	for (;;) {
		if (conn_ml_line(c, line, sizeof(line), &end, "LIST", err) !=
		    MFS_OK)
			return err->code;
		if (end)
			break;
		if (scan_listing(line, &num, &rest) != 0 || rest[0] < '0' ||
		    rest[0] > '9')
			return bad_reply(c, "LIST", line, err);
		errno = 0;
		size = strtoull(rest, &end_num, 10);
		if (errno != 0 || (*end_num != '\0' && *end_num != ' '))
			return bad_reply(c, "LIST", line, err);
		m = find_uid(msgs, n, num);
		if (m == NULL)
			return bad_reply(
			    c, "LIST (a message UIDL did not list)", line, err);
		m->size = size;
		seen++;
	}
	if (seen != n) {
		c->broken = 1;
		return mfs_err_set(err, MFS_E_PROTO,
				   "LIST names %zu messages, UIDL %zu", seen,
				   n);
	}
	return MFS_OK;
}

/* ---- TOP n 0: the headers ----------------------------------------------- */

/* A growable header block, kept to at most P3_HDR_MAX bytes. */
struct hdrbuf {
	char *data; /* owned */
	size_t len, room;
	int done; /* the blank line that ends the header was seen */
};

static int hdr_add(struct hdrbuf *h, const char *s, size_t n)
{
	char *grown;

	if (h->len + n + 3 > P3_HDR_MAX)
		return 0; /* the rest is dropped: big headers stay bounded */
	if (h->len + n + 3 > h->room) {
		size_t room = h->room ? h->room * 2 : 4096;

		while (room < h->len + n + 3)
			room *= 2;
		grown = realloc(h->data, room);
		if (grown == NULL)
			return -1;
		h->data = grown;
		h->room = room;
	}
	memcpy(h->data + h->len, s, n);
	memcpy(h->data + h->len + n, "\r\n", 3);
	h->len += n + 2;
	return 0;
}

/* Reads the reply to TOP n 0 into m. A refused TOP leaves m without
 * sender, subject and date. */
static int read_top(struct pop3_conn *c, struct mfs_store_msg *m,
		    struct mfs_err *err)
{
	struct hdrbuf h = {0};
	char piece[4096];
	size_t n;
	int ok, eol, at_start = 1, skip_line = 0;

	if (conn_status(c, &ok, NULL, 0, "TOP", err) != MFS_OK)
		return err->code;
	if (!ok)
		return mfs_store_msg_headers(m, "") == 0
			   ? MFS_OK
			   : mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	for (;;) {
		const char *p = piece;

		if (conn_piece(c, piece, sizeof(piece), &n, &eol, "TOP", err) !=
		    MFS_OK)
			goto free_h;
		if (at_start && eol && n == 1 && piece[0] == '.')
			break;
		if (at_start && n > 0 && piece[0] == '.') {
			p++;
			n--;
		}
		if (at_start && eol && n == 0)
			h.done = 1;
		/* a line longer than a piece is dropped, not cut */
		if (!eol)
			skip_line = 1;
		else if (!h.done && !skip_line && hdr_add(&h, p, n) != 0) {
			mfs_err_set(err, MFS_E_NOMEM, "out of memory");
			goto free_h;
		}
		if (eol)
			skip_line = 0;
		at_start = eol;
	}
	if (mfs_store_msg_headers(m, h.data != NULL ? h.data : "") != 0)
		mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	else
		mfs_err_clear(err);
free_h:
	free(h.data);
	return err->code;
}

/* Queues "TOP uid 0"; *bytes grows by its length on the wire. */
static int send_top(struct pop3_conn *c, uint32_t uid, size_t *bytes,
		    struct mfs_err *err)
{
	char cmd[32];

	*bytes +=
	    (size_t)snprintf(cmd, sizeof(cmd), "TOP %" PRIu32 " 0", uid) + 2;
	return conn_put(c, "TOP", cmd, NULL, err);
}

/* The length on the wire of "TOP uid 0". */
static size_t top_len(uint32_t uid)
{
	return (size_t)snprintf(NULL, 0, "TOP %" PRIu32 " 0", uid) + 2;
}

/*
 * TOP n 0 for every message. When the server pipelines, commands go out
 * in one write as long as the ones not yet answered stay within
 * P3_WINDOW bytes: that much always fits in the socket buffers between
 * client and server, so the server never stops reading commands while
 * this side is still writing them (no deadlock, whatever the replies
 * weigh). When half the window has been answered, the next commands go
 * out, before the rest of the replies is read. QUIT rides along with the
 * last commands. Without pipelining, one command at a time.
 */
static int read_headers(struct pop3_conn *c, struct mfs_store_msg *msgs,
			size_t n, struct mfs_err *err)
{
	size_t sent = 0, done, out = 0;
	int pipe = (c->caps & CAP_PIPELINING) != 0;

	for (done = 0; done < n; done++) {
		if (sent < n &&
		    (sent == done || (pipe && out <= P3_WINDOW / 2))) {
			while (sent < n &&
			       (sent == done || (pipe && out < P3_WINDOW)))
				if (send_top(c, msgs[sent++].uid, &out, err) !=
				    MFS_OK)
					return err->code;
			if (sent == n && pipe) {
				if (conn_send(c, "QUIT", err, "QUIT") != MFS_OK)
					return err->code;
				c->quit_sent = 1;
			}
			if (conn_flush(c, "TOP", err) != MFS_OK)
				return err->code;
		}
		if (read_top(c, &msgs[done], err) != MFS_OK)
			return err->code;
		out -= top_len(msgs[done].uid);
	}
	return MFS_OK;
}

/* Header-less entries for a server without TOP. */
static int no_headers(struct mfs_store_msg *msgs, size_t n, struct mfs_err *err)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (mfs_store_msg_headers(&msgs[i], "") != 0)
			return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	return MFS_OK;
}

/* ---- the store ops ------------------------------------------------------ */

static int is_inbox(const char *folder, struct mfs_err *err)
{
	if (strcasecmp(folder, "INBOX") == 0)
		return 1;
	mfs_err_set(err, MFS_E_NOENT, "a POP3 account has only INBOX, not %s",
		    folder);
	return 0;
}

static int pop3_connect(struct mfs_store *st, struct mfs_err *err)
{
	struct mfs_pop3 *pop = st->priv;
	struct pop3_conn *c = NULL;
	int r;

	pthread_mutex_lock(&pop->lock);
	r = conn_open(pop, &c, err);
	if (r == MFS_OK) {
		conn_close(c);
		mfs_err_clear(err);
	}
	pthread_mutex_unlock(&pop->lock);
	return r;
}

static int pop3_list(struct mfs_store *st, struct mfs_store_folder **folders,
		     size_t *n, struct mfs_err *err)
{
	struct mfs_store_folder *out = calloc(1, sizeof(*out));

	(void)st;
	if (out == NULL || (out->name = strdup("INBOX")) == NULL) {
		free(out);
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	}
	*folders = out;
	*n = 1;
	mfs_err_clear(err);
	return MFS_OK;
}

/* Reads a multi-line reply that is no longer wanted, so that the session
 * can still end with QUIT. */
static void drain_reply(struct pop3_conn *c)
{
	struct mfs_err ignored;
	int ok;

	if (c->broken)
		return;
	if (conn_status(c, &ok, NULL, 0, "LIST", &ignored) == MFS_OK && ok)
		conn_ml_skip(c, "LIST", &ignored);
}

static int index_session(struct pop3_conn *c, struct mfs_store_msg **msgs,
			 size_t *n, struct mfs_err *err)
{
	struct mfs_store_msg *out = NULL;
	size_t count = 0;

	if (c->have_capa && !(c->caps & CAP_UIDL))
		return no_uidl(c, err);
	if (conn_send(c, "UIDL", err, "UIDL") != MFS_OK)
		return err->code;
	if (c->caps & CAP_PIPELINING) {
		if (conn_send(c, "LIST", err, "LIST") != MFS_OK ||
		    conn_flush(c, "UIDL", err) != MFS_OK)
			return err->code;
		if (read_uidl(c, &out, &count, err) != MFS_OK) {
			drain_reply(c);
			return err->code;
		}
	} else {
		if (conn_flush(c, "UIDL", err) != MFS_OK ||
		    read_uidl(c, &out, &count, err) != MFS_OK)
			return err->code;
		if (conn_send(c, "LIST", err, "LIST") != MFS_OK ||
		    conn_flush(c, "LIST", err) != MFS_OK)
			goto free_out;
	}
	if (check_unique(c, out, count, err) != MFS_OK ||
	    read_list(c, out, count, err) != MFS_OK)
		goto free_out;
	if (c->have_capa && !(c->caps & CAP_TOP)) {
		if (no_headers(out, count, err) != MFS_OK)
			goto free_out;
	} else if (read_headers(c, out, count, err) != MFS_OK) {
		goto free_out;
	}
	*msgs = out;
	*n = count;
	return MFS_OK;

free_out:
	mfs_store_msgs_free(out, count);
	return err->code;
}

static int pop3_index(struct mfs_store *st, const char *folder,
		      uint32_t *validity, struct mfs_store_msg **msgs,
		      size_t *n, struct mfs_err *err)
{
	struct mfs_pop3 *pop = st->priv;
	struct pop3_conn *c = NULL;

	if (!is_inbox(folder, err))
		return err->code;
	pthread_mutex_lock(&pop->lock);
	if (conn_open(pop, &c, err) != MFS_OK)
		goto unlock;
	if (index_session(c, msgs, n, err) == MFS_OK) {
		*validity = 0;
		mfs_err_clear(err);
	}
	conn_close(c);
unlock:
	pthread_mutex_unlock(&pop->lock);
	return err->code;
}

/* The number of the message whose UIDL is uidl in this session: first
 * "UIDL hint" (the number it had in the listing), else the whole UIDL
 * listing. *num is 0 when the message is gone. */
static int find_number(struct pop3_conn *c, uint32_t hint, const char *uidl,
		       uint32_t *num, struct mfs_err *err)
{
	char line[P3_LINE_MAX], want[P3_LINE_MAX];
	struct mfs_store_msg *all = NULL;
	size_t count = 0, i;
	int ok;

	*num = 0;
	if (c->have_capa && !(c->caps & CAP_UIDL))
		return no_uidl(c, err);
	if (hint != 0) {
		snprintf(want, sizeof(want), "%" PRIu32 " %s", hint, uidl);
		if (conn_send(c, "UIDL", err, "UIDL %" PRIu32, hint) !=
			MFS_OK ||
		    conn_flush(c, "UIDL", err) != MFS_OK ||
		    conn_status(c, &ok, line, sizeof(line), "UIDL", err) !=
			MFS_OK)
			return err->code;
		if (ok && strcmp(line, want) == 0) {
			*num = hint;
			return MFS_OK;
		}
	}
	if (conn_send(c, "UIDL", err, "UIDL") != MFS_OK ||
	    conn_flush(c, "UIDL", err) != MFS_OK ||
	    read_uidl(c, &all, &count, err) != MFS_OK)
		return err->code;
	for (i = 0; i < count; i++)
		if (strcmp(all[i].uidl, uidl) == 0)
			*num = all[i].uid;
	mfs_store_msgs_free(all, count);
	return MFS_OK;
}

/* Gathers output into few write(2) calls. */
struct outbuf {
	int fd;
	size_t n;
	uint64_t total;
	char data[P3_OUT_BUF];
};

static int out_flush(struct outbuf *o)
{
	const char *p = o->data;

	while (o->n > 0) {
		ssize_t w = write(o->fd, p, o->n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		o->n -= (size_t)w;
	}
	return 0;
}

static int out_put(struct outbuf *o, const char *s, size_t n)
{
	while (n > 0) {
		size_t k = sizeof(o->data) - o->n;

		if (k > n)
			k = n;
		memcpy(o->data + o->n, s, k);
		o->n += k;
		o->total += k;
		s += k;
		n -= k;
		if (o->n == sizeof(o->data) && out_flush(o) != 0)
			return -1;
	}
	return 0;
}

/*
 * Streams the reply to RETR into o: dot-unstuffed, each line ending in
 * CRLF. POP3 must end the last line with CRLF even when the message does
 * not (RFC 1939 3); so the CRLF of the last line is held back and dropped
 * when the message is exactly `size` bytes without it (the LIST size is
 * the message's own length, which Dovecot and RFC 1939 count with CRLF
 * line ends and without the stuffing).
 */
static int read_retr(struct pop3_conn *c, uint64_t size, struct outbuf *o,
		     struct mfs_err *err)
{
	char piece[8192];
	size_t n;
	int eol, at_start = 1, pending = 0;

	for (;;) {
		const char *p = piece;

		if (conn_piece(c, piece, sizeof(piece), &n, &eol, "RETR",
			       err) != MFS_OK)
			return err->code;
		if (at_start && eol && n == 1 && piece[0] == '.')
			break;
		if (at_start && n > 0 && piece[0] == '.') {
			p++;
			n--;
		}
		if ((pending && out_put(o, "\r\n", 2) != 0) ||
		    out_put(o, p, n) != 0)
			goto write_failed;
		pending = eol;
		at_start = eol;
	}
	if (pending && o->total != size && out_put(o, "\r\n", 2) != 0)
		goto write_failed;
	if (out_flush(o) != 0)
		goto write_failed;
	return MFS_OK;

write_failed:
	/* the rest of the reply is unread: the session cannot go on */
	c->broken = 1;
	return mfs_err_set(err, MFS_E_IO, "cannot write the message: %s",
			   strerror(errno));
}

static int fetch_session(struct pop3_conn *c, const struct mfs_store_msg *msg,
			 int fd, size_t *len, struct mfs_err *err)
{
	struct outbuf *o;
	char text[256];
	uint32_t num;
	int ok, r;

	if (find_number(c, msg->uid, msg->uidl, &num, err) != MFS_OK)
		return err->code;
	if (num == 0)
		return mfs_err_set(err, MFS_E_NOENT,
				   "INBOX: message %s is gone", msg->uidl);
	if (conn_send(c, "RETR", err, "RETR %" PRIu32, num) != MFS_OK ||
	    conn_flush(c, "RETR", err) != MFS_OK ||
	    conn_status(c, &ok, text, sizeof(text), "RETR", err) != MFS_OK)
		return err->code;
	if (!ok)
		return mfs_err_set(err, MFS_E_PROTO, "RETR %s refused: %s",
				   msg->uidl, text);
	o = malloc(sizeof(*o));
	if (o == NULL) {
		c->broken = 1;
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	}
	o->fd = fd;
	o->n = 0;
	o->total = 0;
	r = read_retr(c, msg->size, o, err);
	if (r == MFS_OK)
		*len = (size_t)o->total;
	free(o);
	return r;
}

static int pop3_fetch(struct mfs_store *st, const char *folder,
		      uint32_t validity, const struct mfs_store_msg *msg,
		      int fd, size_t *len, struct mfs_err *err)
{
	struct mfs_pop3 *pop = st->priv;
	struct pop3_conn *c = NULL;

	(void)validity;
	if (!is_inbox(folder, err))
		return err->code;
	if (msg->uidl == NULL)
		return mfs_err_set(err, MFS_E_NOENT,
				   "INBOX: a POP3 message needs its UIDL");
	pthread_mutex_lock(&pop->lock);
	if (conn_open(pop, &c, err) != MFS_OK)
		goto unlock;
	mfs_err_clear(err);
	fetch_session(c, msg, fd, len, err);
	conn_close(c);
unlock:
	pthread_mutex_unlock(&pop->lock);
	return err->code;
}

static void pop3_tls_info(struct mfs_store *st, char *version, size_t vlen,
			  char *subject, size_t slen, char *issuer, size_t ilen)
{
	struct mfs_pop3 *pop = st->priv;

	pthread_mutex_lock(&pop->lock);
	snprintf(version, vlen, "%s", pop->tls_version);
	snprintf(subject, slen, "%s", pop->tls_subject);
	snprintf(issuer, ilen, "%s", pop->tls_issuer);
	pthread_mutex_unlock(&pop->lock);
}

static void pop3_store_free(struct mfs_store *st)
{
	struct mfs_pop3 *pop;

	if (st == NULL)
		return;
	pop = st->priv;
	if (pop != NULL) {
		pthread_mutex_destroy(&pop->lock);
		mfs_password_free(pop->fresh);
		free(pop);
	}
	free(st);
}

/* The store's watch (store.h): a maildrop tells nothing, so INBOX is said
 * to have changed every `refresh` seconds (listed again at the next
 * look). */
static int pop3_watch(struct mfs_store *st, const char *folder, int stop_fd,
		      int max_wait, int *changed, struct mfs_err *err)
{
	struct mfs_pop3 *pop = st->priv;
	int secs = pop->acct->refresh > 0 ? pop->acct->refresh : 5;

	(void)folder;
	(void)err;
	return mfs_store_watch_poll(stop_fd, secs < max_wait ? secs : max_wait,
				    changed);
}

/*
 * The store's search (store.h): POP3 has no search command, so the
 * maildrop is listed (as index does) and each message matched by what
 * the listing has: sender, subject, date, size, flags. A query with a
 * term that needs the message itself (to:, cc:, body:, text:, a bare
 * word) is MFS_E_INVAL.
 */
static int pop3_search(struct mfs_store *st, const char *const *folders,
		       size_t n, const struct mfs_query *q,
		       struct mfs_store_hits *hits, struct mfs_err *err)
{
	struct mfs_store_msg *msgs;
	size_t i, j, count;

	mfs_err_clear(err);
	if (!mfs_query_listing_only(q))
		return mfs_err_set(err, MFS_E_INVAL,
				   "a POP3 search matches the listing only: "
				   "from:, subject:, since:, before:, "
				   "larger:, smaller:, is: (not to:, cc:, "
				   "body:, text: or bare words)");
	for (i = 0; i < n; i++) {
		msgs = NULL;
		count = 0;
		if (pop3_index(st, folders[i], &hits[i].validity, &msgs,
			       &count, &hits[i].err) != MFS_OK) {
			if (hits[i].err.code == MFS_E_NOENT)
				continue;
			*err = hits[i].err;
			return err->code;
		}
		hits[i].uids = malloc((count ? count : 1) *
				      sizeof(*hits[i].uids));
		if (hits[i].uids == NULL) {
			mfs_store_msgs_free(msgs, count);
			return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
		}
		for (j = 0; j < count; j++)
			if (mfs_query_match(q, &msgs[j]))
				hits[i].uids[hits[i].n++] = msgs[j].uid;
		mfs_store_msgs_free(msgs, count);
	}
	return MFS_OK;
}

static const struct mfs_store_ops pop3_ops = {
    .connect = pop3_connect,
    .list = pop3_list,
    .index = pop3_index,
    .fetch = pop3_fetch,
    .search = pop3_search,
    .watch = pop3_watch,
    .tls_info = pop3_tls_info,
    .free = pop3_store_free,
};

struct mfs_store *mfs_pop3_store_new(const struct mfs_account *acct,
				     const char *password)
{
	struct mfs_store *st = calloc(1, sizeof(*st));
	struct mfs_pop3 *pop;

	if (st == NULL)
		return NULL;
	pop = calloc(1, sizeof(*pop));
	if (pop == NULL) {
		free(st);
		return NULL;
	}
	pthread_mutex_init(&pop->lock, NULL);
	pop->acct = acct;
	pop->password = password;
	st->ops = &pop3_ops;
	st->priv = pop;
	st->read_only = 1;
	return st;
}
