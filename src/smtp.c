/*
 * smtp.c - SMTP submission client over our own mailstream.
 *
 * libetpan's mailsmtp wants the whole message in memory; here the body is
 * streamed from a file descriptor and dot-stuffed on the way, so a 25 MB
 * message costs one 64 KiB buffer.
 */
#include "smtp.h"

#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "auth.h"
#include "log.h"
#include "sasl.h"
#include "tls.h"

#define CHUNK	  65536
#define REPLY_MAX 4096 /* bytes of reply text kept */
#define LINE_MAX_ 4096 /* longest reply line accepted, CRLF excluded */
#define LINES_MAX 1000 /* most lines in one reply */
#define CMD_MAX	  512  /* RFC 5321 4.5.3.1.4: a command line, CRLF included */
#define QUIT_WAIT 2    /* seconds for the reply to QUIT */

struct mfs_smtp {
	mailstream *stream;	  /* owned */
	char line[LINE_MAX_ + 1]; /* the line being read */
	char host[256];		  /* for messages */
	unsigned caps;		  /* MFS_SMTP_* */
	off_t size_limit;
	int timeout; /* seconds for any one wait */
	int alive;
	int dirty;    /* MAIL was accepted and no reply to the data's end came
			 yet: RSET before the next MAIL */
	int data_out; /* the whole message went out with BDAT: from here a
			 lost reply leaves the outcome unknown */
};

/* One reply: the code and the text lines joined with "; ". */
struct reply {
	int code;
	char text[REPLY_MAX];
};

/* ---- lines ----------------------------------------------------------------
 */

static int net_error(struct mfs_smtp *s, const char *what, struct mfs_err *err)
{
	s->alive = 0;
	if (mfs_stream_timed_out(s->stream))
		return mfs_err_set(err, MFS_E_TIMEOUT, "SMTP %s: %s: timed out",
				   s->host, what);
	return mfs_err_set(err, MFS_E_CONNECT, "SMTP %s: %s: connection lost",
			   s->host, what);
}

/* A failed read_reply: a malformed reply says so, anything else is the
 * network's failure. */
static int reply_error(struct mfs_smtp *s, const struct reply *r,
		       const char *what, struct mfs_err *err)
{
	if (r->code == 0 && r->text[0] != '\0')
		return mfs_err_set(err, MFS_E_PROTO, "SMTP %s: %s: %s", s->host,
				   what, r->text);
	return net_error(s, what, err);
}

static int write_raw(struct mfs_smtp *s, const char *p, size_t n)
{
	if (!s->alive)
		return -1;
	if (n && mailstream_write(s->stream, p, n) != (ssize_t)n)
		return -1;
	return 0;
}

/* Queues one command line (CRLF added) and traces it. */
static int put_cmd(struct mfs_smtp *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int put_cmd(struct mfs_smtp *s, const char *fmt, ...)
{
	char buf[1200];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf) - 2, fmt, ap);
	va_end(ap);
	if (n < 0 || n >= (int)sizeof(buf) - 2)
		return -1;
	mfs_log_debug("smtp: C: %s", buf);
	memcpy(buf + n, "\r\n", 2);
	return write_raw(s, buf, n + 2);
}

/* Queues shown followed by secret and CRLF; the trace shows "<hidden>" in
 * place of the secret. */
static int put_secret(struct mfs_smtp *s, const char *shown, const char *secret)
{
	mfs_log_debug("smtp: C: %s<hidden>", shown);
	if (write_raw(s, shown, strlen(shown)) ||
	    write_raw(s, secret, strlen(secret)) || write_raw(s, "\r\n", 2))
		return -1;
	return 0;
}

static int flush(struct mfs_smtp *s)
{
	return s->alive && mailstream_flush(s->stream) == 0 ? 0 : -1;
}

/* Reads one line into s->line, without its CRLF (or bare LF). Returns its
 * length, -1 on a network error, -2 when it is too long or holds a NUL. */
static int read_line(struct mfs_smtp *s)
{
	size_t n = 0;
	char c;

	for (;;) {
		if (mailstream_read(s->stream, &c, 1) != 1)
			return -1;
		if (c == '\n')
			break;
		if (c == '\0' || n == LINE_MAX_)
			return -2;
		s->line[n++] = c;
	}
	if (n > 0 && s->line[n - 1] == '\r')
		n--;
	s->line[n] = '\0';
	return (int)n;
}

/* RFC 5321 4.2: a reply line is a code from 200 to 559 whose second digit
 * is 0-5, then the end, a space or a hyphen. */
static int reply_code(const char *l)
{
	if (l[0] < '2' || l[0] > '5' || l[1] < '0' || l[1] > '5' ||
	    !isdigit((unsigned char)l[2]))
		return -1;
	if (l[3] != '\0' && l[3] != ' ' && l[3] != '-')
		return -1;
	return (l[0] - '0') * 100 + (l[1] - '0') * 10 + (l[2] - '0');
}

static int malformed(struct mfs_smtp *s, struct reply *r, const char *why)
{
	r->code = 0;
	snprintf(r->text, sizeof(r->text), "malformed reply (%s)", why);
	s->alive = 0;
	return -1;
}

/* Reads one (maybe multi-line) reply. Returns 0, or -1 on a network error
 * or a malformed reply (then the session is dead, and r->code is 0). When
 * lines is not NULL, every line's text is appended to it, '\n' after each. */
static int read_reply(struct mfs_smtp *s, struct reply *r, char *lines,
		      size_t lines_len)
{
	size_t tl = 0, ll = 0;

	r->code = 0;
	r->text[0] = '\0';
	if (lines && lines_len)
		lines[0] = '\0';
	for (int i = 0;; i++) {
		const char *l = s->line;
		int code, n;

		if (!s->alive)
			return -1;
		n = read_line(s);
		if (n == -1) {
			r->code = 0;
			r->text[0] = '\0';
			s->alive = 0;
			return -1;
		}
		if (n == -2)
			return malformed(s, r, "line too long or NUL byte");
		mfs_log_debug("smtp: S: %.512s", l);
		code = reply_code(l);
		if (code < 0)
			return malformed(s, r, "no reply code");
		if (r->code && code != r->code)
			return malformed(s, r, "code changes within a reply");
		if (i == LINES_MAX)
			return malformed(s, r, "too many lines");
		r->code = code;
		if (tl + 1 < sizeof(r->text))
			tl += snprintf(r->text + tl, sizeof(r->text) - tl,
				       "%s%s", tl ? "; " : "", l);
		if (tl >= sizeof(r->text))
			tl = sizeof(r->text) - 1;
		if (lines && ll + 1 < lines_len) {
			ll += snprintf(lines + ll, lines_len - ll, "%s\n",
				       l[3] ? l + 4 : "");
			if (ll >= lines_len)
				ll = lines_len - 1;
		}
		if (l[3] == '-')
			continue;
		/* RFC 5321 3.8: 421 comes before the server closes */
		if (code == 421)
			s->alive = 0;
		return 0;
	}
}

/* Sends a command and reads its reply; a network failure sets err. */
static int command(struct mfs_smtp *s, struct reply *r, const char *what,
		   const char *cmd, struct mfs_err *err)
{
	if (put_cmd(s, "%s", cmd) || flush(s) || read_reply(s, r, NULL, 0))
		return reply_error(s, r, what, err);
	return MFS_OK;
}

/* Sends shown + secret (traced as hidden) and reads the reply. */
static int secret_command(struct mfs_smtp *s, struct reply *r,
			  const char *shown, const char *secret,
			  struct mfs_err *err)
{
	int bad = put_secret(s, shown, secret) || flush(s);

	/* The secret went out from libetpan's write buffer: wipe it. */
	mfs_stream_wipe(s->stream);
	if (bad) {
		r->code = 0;
		r->text[0] = '\0';
	}
	if (bad || read_reply(s, r, NULL, 0))
		return reply_error(s, r, "AUTH", err);
	return MFS_OK;
}

/* ---- opening ------------------------------------------------------------- */

static void parse_ehlo(struct mfs_smtp *s, char *lines)
{
	char *save = NULL;

	s->caps = 0;
	s->size_limit = 0;
	/* the first line is the greeting name */
	for (char *l = strtok_r(lines, "\n", &save); l;
	     l = strtok_r(NULL, "\n", &save)) {
		if (strcasecmp(l, "8BITMIME") == 0)
			s->caps |= MFS_SMTP_8BITMIME;
		else if (strcasecmp(l, "SMTPUTF8") == 0)
			s->caps |= MFS_SMTP_SMTPUTF8;
		else if (strcasecmp(l, "PIPELINING") == 0)
			s->caps |= MFS_SMTP_PIPELINING;
		else if (strcasecmp(l, "CHUNKING") == 0)
			s->caps |= MFS_SMTP_CHUNKING;
		else if (strcasecmp(l, "STARTTLS") == 0)
			s->caps |= MFS_SMTP_STARTTLS;
		else if (strncasecmp(l, "SIZE", 4) == 0 &&
			 (!l[4] || l[4] == ' ')) {
			s->caps |= MFS_SMTP_SIZE;
			s->size_limit = l[4] ? strtoll(l + 5, NULL, 10) : 0;
		} else if (strncasecmp(l, "AUTH ", 5) == 0 ||
			   strncasecmp(l, "AUTH=", 5) == 0) {
			char *save2 = NULL;

			for (char *m = strtok_r(l + 5, " ", &save2); m;
			     m = strtok_r(NULL, " ", &save2)) {
				if (strcasecmp(m, "PLAIN") == 0)
					s->caps |= MFS_SMTP_AUTH_PLAIN;
				else if (strcasecmp(m, "LOGIN") == 0)
					s->caps |= MFS_SMTP_AUTH_LOGIN;
				else if (strcasecmp(m, "XOAUTH2") == 0)
					s->caps |= MFS_SMTP_AUTH_XOAUTH2;
				else if (strcasecmp(m, "OAUTHBEARER") == 0)
					s->caps |= MFS_SMTP_AUTH_OAUTHBEARER;
			}
		}
	}
}

static void helo_name(const struct mfs_smtp_opts *opts, char *buf, size_t len)
{
	char host[256] = "";

	if (opts->helo_name) {
		snprintf(buf, len, "%s", opts->helo_name);
		return;
	}
	if (gethostname(host, sizeof(host) - 1) != 0)
		host[0] = '\0';
	for (char *p = host; *p; p++)
		if (!isalnum((unsigned char)*p) && *p != '-' && *p != '.')
			host[0] = '\0';
	snprintf(buf, len, "%s", host[0] ? host : "localhost");
}

static int ehlo(struct mfs_smtp *s, const char *name, struct mfs_err *err)
{
	char lines[4096];
	struct reply r;

	if (put_cmd(s, "EHLO %s", name) || flush(s) ||
	    read_reply(s, &r, lines, sizeof(lines)))
		return reply_error(s, &r, "EHLO", err);
	if (r.code != 250)
		return mfs_err_set(err, MFS_E_PROTO,
				   "SMTP %s: EHLO refused: %s", s->host,
				   r.text);
	parse_ehlo(s, lines);
	return MFS_OK;
}

static int nomem(struct mfs_err *err)
{
	return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
}

static int auth_reply(struct mfs_smtp *s, const struct reply *r, int want,
		      struct mfs_err *err)
{
	if (r->code == want)
		return MFS_OK;
	if (r->code >= 500)
		return mfs_err_set(err, MFS_E_AUTH,
				   "SMTP %s: login refused: %s", s->host,
				   r->text);
	return mfs_err_set(err, MFS_E_PROTO, "SMTP %s: login failed: %s",
			   s->host, r->text);
}

/*
 * "AUTH MECH" with the base64 initial response ir: on the command line when
 * it fits the 512 bytes of RFC 5321, else after the server's empty 334
 * (RFC 4954 4).
 */
static int auth_start(struct mfs_smtp *s, struct reply *r, const char *mech,
		      const char *ir, struct mfs_err *err)
{
	char shown[64];
	int rc;

	snprintf(shown, sizeof(shown), "AUTH %s ", mech);
	if (strlen(shown) + strlen(ir) + 2 <= CMD_MAX)
		return secret_command(s, r, shown, ir, err);
	shown[strlen(shown) - 1] = '\0';
	rc = command(s, r, "AUTH", shown, err);
	if (rc != MFS_OK || r->code != 334)
		return rc;
	return secret_command(s, r, "", ir, err);
}

static int auth_plain(struct mfs_smtp *s, const char *user, const char *pass,
		      struct mfs_err *err)
{
	char *ir = mfs_sasl_plain(user, pass);
	struct reply r;
	int rc;

	if (!ir)
		return nomem(err);
	rc = auth_start(s, &r, "PLAIN", ir, err);
	mfs_sasl_free(ir);
	return rc ? rc : auth_reply(s, &r, 235, err);
}

static int auth_login(struct mfs_smtp *s, const char *user, const char *pass,
		      struct mfs_err *err)
{
	const char *steps[2] = {user, pass};
	struct reply r;
	int rc;

	rc = command(s, &r, "AUTH", "AUTH LOGIN", err);
	if (rc || (rc = auth_reply(s, &r, 334, err)))
		return rc;
	for (int i = 0; i < 2; i++) {
		char *enc = mfs_b64_encode(steps[i], strlen(steps[i]));

		if (!enc)
			return nomem(err);
		rc = secret_command(s, &r, "", enc, err);
		mfs_sasl_free(enc);
		if (rc || (rc = auth_reply(s, &r, i ? 235 : 334, err)))
			return rc;
	}
	return MFS_OK;
}

/*
 * One AUTH XOAUTH2 or OAUTHBEARER with token. A refusal comes as 334 with
 * an error (base64 JSON): the client then ends the exchange with an empty
 * line (XOAUTH2) or "AQ==", a lone ^A (RFC 7628 3.2.3), and the server
 * answers 5xx. *refused is set when the server turned the token down.
 */
static int auth_token(struct mfs_smtp *s, const struct mfs_smtp_opts *o,
		      const char *token, int *refused, struct mfs_err *err)
{
	int bearer = o->auth == MFS_AUTH_OAUTHBEARER;
	struct reply r;
	char *ir;
	int rc;

	*refused = 0;
	if (bearer)
		ir = mfs_sasl_oauthbearer(o->user, o->server->host,
					  o->server->port, token);
	else
		ir = mfs_sasl_xoauth2(o->user, token);
	if (!ir)
		return nomem(err);
	rc = auth_start(s, &r, bearer ? "OAUTHBEARER" : "XOAUTH2", ir, err);
	mfs_sasl_free(ir);
	if (rc)
		return rc;
	if (r.code == 334) {
		rc = secret_command(s, &r, "", bearer ? "AQ==" : "", err);
		if (rc)
			return rc;
		*refused = r.code >= 500;
	}
	if (r.code == 535)
		*refused = 1;
	return auth_reply(s, &r, 235, err);
}

static int token_mech_offered(struct mfs_smtp *s, enum mfs_auth auth,
			      struct mfs_err *err)
{
	unsigned bit = auth == MFS_AUTH_OAUTHBEARER ? MFS_SMTP_AUTH_OAUTHBEARER
						    : MFS_SMTP_AUTH_XOAUTH2;

	if (s->caps & bit)
		return MFS_OK;
	return mfs_err_set(
	    err, MFS_E_AUTH, "SMTP %s: the server offers no AUTH %s", s->host,
	    auth == MFS_AUTH_OAUTHBEARER ? "OAUTHBEARER" : "XOAUTH2");
}

struct token_login {
	struct mfs_smtp *s;		/* borrowed */
	const struct mfs_smtp_opts *o; /* borrowed */
};

/* auth_token() as an mfs_login_fn: arg is a struct token_login. */
static int token_try(void *arg, const char *token, int *refused,
		     struct mfs_err *err)
{
	struct token_login *l = arg;
	int rc = auth_token(l->s, l->o, token, refused, err);

	*refused = *refused && l->s->alive;
	return rc;
}

/*
 * Token login: a refused token is asked for again once (the account's
 * password_command may print a fresh one) and tried once more on the same
 * connection (RFC 4954 allows AUTH again after a failure); the new token
 * goes to *o->renewed when it worked.
 */
static int login_token(struct mfs_smtp *s, const struct mfs_smtp_opts *o,
		       struct mfs_err *err)
{
	struct token_login l = {s, o};
	char *fresh;
	int rc, refused;

	rc = token_mech_offered(s, o->auth, err);
	if (rc)
		return rc;
	if (!o->acct)
		return token_try(&l, o->password, &refused, err);
	rc = mfs_login_renewing(o->acct, "smtp", o->server, token_try, &l,
				o->password, &fresh, err);
	if (rc == MFS_OK && fresh && o->renewed) {
		mfs_password_free(*o->renewed);
		*o->renewed = fresh;
		fresh = NULL;
	}
	mfs_password_free(fresh);
	return rc;
}

static int login(struct mfs_smtp *s, const struct mfs_smtp_opts *opts,
		 struct mfs_err *err)
{
	if (!opts->user || !opts->password)
		return MFS_OK;
	if (opts->auth != MFS_AUTH_PASSWORD)
		return login_token(s, opts, err);
	if (s->caps & MFS_SMTP_AUTH_PLAIN)
		return auth_plain(s, opts->user, opts->password, err);
	if (s->caps & MFS_SMTP_AUTH_LOGIN)
		return auth_login(s, opts->user, opts->password, err);
	return mfs_err_set(err, MFS_E_AUTH,
			   "SMTP %s: the server offers no AUTH PLAIN or LOGIN",
			   s->host);
}

static int starttls(struct mfs_smtp *s, const struct mfs_smtp_opts *opts,
		    const char *name, struct mfs_err *err)
{
	struct mfs_tls_opts tls = {opts->server->host, opts->ca_file,
				   opts->timeout};
	struct reply r;
	int rc;

	if (!(s->caps & MFS_SMTP_STARTTLS))
		return mfs_err_set(err, MFS_E_TLS,
				   "SMTP %s: the server does not offer "
				   "STARTTLS",
				   s->host);
	rc = command(s, &r, "STARTTLS", "STARTTLS", err);
	if (rc)
		return rc;
	if (r.code != 220)
		return mfs_err_set(err, MFS_E_TLS,
				   "SMTP %s: STARTTLS refused: %s", s->host,
				   r.text);
	rc = mfs_stream_starttls(s->stream, &tls, err);
	if (rc) {
		s->alive = 0;
		return rc;
	}
	return ehlo(s, name, err);
}

static int greet(struct mfs_smtp *s, const struct mfs_smtp_opts *opts,
		 struct mfs_err *err)
{
	char name[256];
	struct reply r;
	int rc;

	if (read_reply(s, &r, NULL, 0))
		return reply_error(s, &r, "greeting", err);
	if (r.code != 220)
		return mfs_err_set(err, MFS_E_PROTO, "SMTP %s: not ready: %s",
				   s->host, r.text);
	helo_name(opts, name, sizeof(name));
	rc = ehlo(s, name, err);
	if (rc == MFS_OK && opts->server->tls == MFS_TLS_STARTTLS)
		rc = starttls(s, opts, name, err);
	if (rc == MFS_OK)
		rc = login(s, opts, err);
	return rc;
}

int mfs_smtp_open(const struct mfs_smtp_opts *opts, struct mfs_smtp **out,
		  struct mfs_err *err)
{
	struct mfs_tls_opts tls = {opts->server->host, opts->ca_file,
				   opts->timeout};
	struct mfs_smtp *s;
	int fd, rc;

	*out = NULL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	snprintf(s->host, sizeof(s->host), "%s:%d", opts->server->host,
		 opts->server->port);
	s->timeout = opts->timeout;
	fd = mfs_tcp_connect(opts->server->host, opts->server->port,
			     opts->timeout, err);
	if (fd < 0) {
		rc = err ? err->code : MFS_E_CONNECT;
		goto free_s;
	}
	if (opts->server->tls == MFS_TLS_IMPLICIT)
		s->stream = mfs_stream_tls(fd, &tls, err);
	else
		s->stream = mfs_stream_plain(fd, opts->timeout, err);
	if (!s->stream) {
		rc = err ? err->code : MFS_E_CONNECT;
		goto free_s;
	}
	s->alive = 1;
	rc = greet(s, opts, err);
	if (rc)
		goto close_stream;
	*out = s;
	return MFS_OK;
close_stream:
	mailstream_close(s->stream);
free_s:
	free(s);
	return rc;
}

unsigned mfs_smtp_caps(const struct mfs_smtp *s)
{
	return s->caps;
}

off_t mfs_smtp_size_limit(const struct mfs_smtp *s)
{
	return s->size_limit;
}

int mfs_smtp_alive(const struct mfs_smtp *s)
{
	struct pollfd p = {0};

	if (!s->alive)
		return 0;
	/* between commands the server has nothing to say: anything to
	 * read is a 421 or the end of the connection */
	p.fd = mailstream_low_get_fd(mailstream_get_low(s->stream));
	p.events = POLLIN;
	return p.fd < 0 || poll(&p, 1, 0) == 0;
}

void mfs_smtp_cancel(struct mfs_smtp *s)
{
	if (s && s->stream)
		mailstream_cancel(s->stream);
}

void mfs_smtp_close(struct mfs_smtp *s)
{
	struct reply r;

	if (!s)
		return;
	/* a server that went away must not hold up an unmount */
	mailstream_low_set_timeout(mailstream_get_low(s->stream),
				   s->timeout < QUIT_WAIT ? s->timeout
							  : QUIT_WAIT);
	if (s->alive && put_cmd(s, "QUIT") == 0 && flush(s) == 0)
		read_reply(s, &r, NULL, 0);
	mailstream_close(s->stream);
	free(s);
}

int mfs_smtp_err_temporary(const struct mfs_err *err)
{
	return err->code == MFS_E_CONNECT || err->code == MFS_E_TIMEOUT ||
	       err->code == MFS_E_PROTO;
}

/* ---- sending --------------------------------------------------------------
 */

void mfs_smtp_result_free(struct mfs_smtp_result *res)
{
	free(res->reply);
	for (size_t i = 0; i < res->nrejected; i++) {
		free(res->rejected[i].rcpt);
		free(res->rejected[i].reply);
	}
	free(res->rejected);
	memset(res, 0, sizeof(*res));
}

static int outcome(struct mfs_smtp_result *res, enum mfs_smtp_status st,
		   const char *text, struct mfs_err *err)
{
	res->status = st;
	free(res->reply);
	res->reply = strdup(text);
	if (!res->reply)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	return MFS_OK;
}

/* A failure of the network: text from the error. */
static int net_outcome(struct mfs_smtp *s, struct mfs_smtp_result *res,
		       enum mfs_smtp_status st, const char *what,
		       struct mfs_err *err)
{
	struct mfs_err e;

	net_error(s, what, &e);
	return outcome(res, st, e.msg, err);
}

static enum mfs_smtp_status by_code(int code)
{
	return code >= 500 ? MFS_SMTP_PERMFAIL : MFS_SMTP_TEMPFAIL;
}

static int add_rejected(struct mfs_smtp_result *res, const char *rcpt,
			const char *reply)
{
	struct mfs_smtp_rejected *r;

	r = realloc(res->rejected, (res->nrejected + 1) * sizeof(*r));
	if (!r)
		return -1;
	res->rejected = r;
	r += res->nrejected;
	r->rcpt = strdup(rcpt);
	r->reply = strdup(reply);
	if (!r->rcpt || !r->reply) {
		free(r->rcpt);
		free(r->reply);
		return -1;
	}
	res->nrejected++;
	return 0;
}

/* How many bytes send_body() adds after size bytes of fd so that they end
 * in CRLF: 0, 1 or 2; -1 when fd cannot be read. */
static int crlf_missing(int fd, off_t size)
{
	char t[2] = {'\r', '\n'};

	if (size == 1 && pread(fd, t + 1, 1, 0) != 1)
		return -1;
	if (size == 1)
		t[0] = '\n';
	if (size >= 2 && pread(fd, t, 2, size - 2) != 2)
		return -1;
	if (t[0] == '\r' && t[1] == '\n')
		return 0;
	return t[1] == '\r' ? 1 : 2;
}

/* Streams size bytes of fd, dot-stuffed when `stuff` (DATA; not BDAT),
 * ending in CRLF. */
static int send_body(struct mfs_smtp *s, int fd, off_t size, int stuff)
{
	char *in = malloc(CHUNK), *out = malloc(2 * CHUNK);
	off_t off = 0;
	int bol = 1, rc = -1;
	char last[2] = {'\r', '\n'};

	if (!in || !out)
		goto free_bufs;
	while (off < size) {
		size_t want = size - off < CHUNK ? size - off : CHUNK, o = 0;
		ssize_t n = pread(fd, in, want, off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			goto free_bufs;
		for (ssize_t i = 0; i < n; i++) {
			if (stuff && bol && in[i] == '.')
				out[o++] = '.';
			out[o++] = in[i];
			bol = in[i] == '\n';
			last[0] = last[1];
			last[1] = in[i];
		}
		if (write_raw(s, out, o))
			goto free_bufs;
		off += n;
	}
	if (last[0] != '\r' || last[1] != '\n') {
		if (write_raw(s, last[1] == '\r' ? "\n" : "\r\n",
			      last[1] == '\r' ? 1 : 2))
			goto free_bufs;
	}
	rc = flush(s);
free_bufs:
	free(in);
	free(out);
	return rc;
}

/*
 * Queues the envelope: RSET when a transaction was left open, MAIL, and
 * with PIPELINING (RFC 2920) also every RCPT and DATA, so that the whole
 * envelope costs one round trip. Without it only RSET or MAIL is queued.
 * With `bdat` (PIPELINING and CHUNKING, RFC 3030) "BDAT n LAST" and the
 * message itself (fd, size bytes, as is) take the place of DATA: the whole
 * submission then costs one round trip; s->data_out is set once every
 * byte went out.
 */
static int put_envelope(struct mfs_smtp *s, const char *sender,
			const char *const *rcpts, size_t nrcpts, int fd,
			off_t size, int bdat, unsigned flags)
{
	int pipelined = (s->caps & MFS_SMTP_PIPELINING) != 0;
	char params[128] = "";
	size_t pl = 0;
	int tail;

	if (s->dirty && put_cmd(s, "RSET"))
		return -1;
	if (s->dirty && !pipelined)
		return flush(s);
	if (s->caps & MFS_SMTP_SIZE)
		pl += snprintf(params + pl, sizeof(params) - pl, " SIZE=%lld",
			       (long long)size);
	if ((flags & MFS_SMTP_SEND_8BIT) && (s->caps & MFS_SMTP_8BITMIME))
		pl += snprintf(params + pl, sizeof(params) - pl,
			       " BODY=8BITMIME");
	if ((flags & MFS_SMTP_SEND_UTF8) && (s->caps & MFS_SMTP_SMTPUTF8))
		snprintf(params + pl, sizeof(params) - pl, " SMTPUTF8");
	if (put_cmd(s, "MAIL FROM:<%s>%s", sender, params))
		return -1;
	for (size_t i = 0; pipelined && i < nrcpts; i++)
		if (put_cmd(s, "RCPT TO:<%s>", rcpts[i]))
			return -1;
	if (bdat) {
		tail = crlf_missing(fd, size);
		if (tail < 0 ||
		    put_cmd(s, "BDAT %lld LAST", (long long)size + tail) ||
		    send_body(s, fd, size, 0))
			return -1;
		s->data_out = 1;
		return 0;
	}
	if (pipelined && put_cmd(s, "DATA"))
		return -1;
	return flush(s);
}

/* The outcome of a lost connection: unknown once the whole message went
 * out with BDAT (the server may have taken it), else a temporary failure. */
static enum mfs_smtp_status lost(const struct mfs_smtp *s)
{
	return s->data_out ? MFS_SMTP_UNKNOWN : MFS_SMTP_TEMPFAIL;
}

/*
 * Reads the reply to RSET; anything but 250 ends the session. Returns 0,
 * or -1 with the outcome set in res (rc in *rc). When the message already
 * went out with BDAT and the server did not close (421), the server may
 * still take it whatever RSET did: then *refused is RSET's reply, 0 is
 * returned, and the reply to BDAT decides (see envelope()).
 */
static int rset_reply(struct mfs_smtp *s, struct reply *refused,
		      struct mfs_smtp_result *res, int *rc, struct mfs_err *err)
{
	struct reply r;

	refused->code = 0;
	if (read_reply(s, &r, NULL, 0)) {
		*rc = net_outcome(s, res, lost(s), "RSET", err);
		return -1;
	}
	if (r.code != 250 && s->data_out && s->alive) {
		*refused = r;
		return 0;
	}
	if (r.code != 250) {
		s->alive = 0;
		*rc = outcome(res, MFS_SMTP_TEMPFAIL, r.text, err);
		return -1;
	}
	s->dirty = 0;
	return 0;
}

/* Reads one reply of the envelope. Returns 0, or -1 with the outcome set
 * (rc in *rc): the network failed, or the server said 421 and closed. */
static int envelope_reply(struct mfs_smtp *s, struct reply *r, const char *what,
			  struct mfs_smtp_result *res, int *rc,
			  struct mfs_err *err)
{
	if (read_reply(s, r, NULL, 0)) {
		*rc = net_outcome(s, res, lost(s), what, err);
		return -1;
	}
	if (!s->alive) {
		*rc = outcome(res, MFS_SMTP_TEMPFAIL, r->text, err);
		return -1;
	}
	return 0;
}

/* The outcome when no recipient was accepted: every refusal, joined. */
static int none_accepted(struct mfs_smtp_result *res, int any_temp,
			 struct mfs_err *err)
{
	char text[REPLY_MAX] = "";
	size_t tl = 0;

	for (size_t i = 0; i < res->nrejected && tl < sizeof(text); i++)
		tl += snprintf(text + tl, sizeof(text) - tl, "%s%s",
			       i ? "; " : "", res->rejected[i].reply);
	return outcome(res, any_temp ? MFS_SMTP_TEMPFAIL : MFS_SMTP_PERMFAIL,
		       text, err);
}

/* The end of a transaction whose RSET was refused although its message
 * went out with BDAT: the session ends; the message went when BDAT was
 * accepted (*stop cleared), else nothing of it was taken. */
static int rset_refused(struct mfs_smtp *s, const struct reply *rset,
			const struct reply *data, int *stop,
			struct mfs_smtp_result *res, struct mfs_err *err)
{
	s->alive = 0;
	if (data->code / 100 == 2) {
		*stop = 0;
		return MFS_OK;
	}
	return outcome(res, MFS_SMTP_TEMPFAIL, rset->text, err);
}

/*
 * RSET, MAIL, RCPT and, with PIPELINING, DATA or (bdat) BDAT with the
 * message; *data is then the reply to DATA or BDAT (code 0 without
 * PIPELINING: DATA is still to be sent). Returns
 * MFS_OK with *stop set and res->status set when the transaction cannot
 * go on (res->reply set). A rejected recipient among accepted ones is
 * listed in res and the transaction goes on.
 */
static int envelope(struct mfs_smtp *s, const char *sender,
		    const char *const *rcpts, size_t nrcpts, int fd, off_t size,
		    int bdat, unsigned flags, struct reply *data, int *stop,
		    struct mfs_smtp_result *res, struct mfs_err *err)
{
	int pipelined = (s->caps & MFS_SMTP_PIPELINING) != 0;
	int any_temp = 0, rc = MFS_OK;
	size_t accepted = 0;
	struct reply mail, r, rset = {0};

	*stop = 1;
	data->code = 0;
	if (s->dirty && !pipelined) {
		if (put_envelope(s, sender, rcpts, nrcpts, fd, size, 0, flags))
			return net_outcome(s, res, MFS_SMTP_TEMPFAIL, "RSET",
					   err);
		if (rset_reply(s, &rset, res, &rc, err))
			return rc;
	}
	if (put_envelope(s, sender, rcpts, nrcpts, fd, size, bdat, flags))
		return net_outcome(s, res, MFS_SMTP_TEMPFAIL,
				   bdat ? "MAIL ... BDAT" : "MAIL", err);
	if (s->dirty && rset_reply(s, &rset, res, &rc, err))
		return rc;
	if (envelope_reply(s, &mail, "MAIL", res, &rc, err))
		return rc;
	s->dirty = mail.code / 100 == 2;
	/* a refused MAIL takes nothing: a lost reply is no longer unknown
	 * (unless a refused RSET left an earlier transaction open) */
	if (mail.code / 100 != 2 && !rset.code)
		s->data_out = 0;
	for (size_t i = 0; i < nrcpts; i++) {
		if (!pipelined && mail.code / 100 != 2)
			break;
		if (!pipelined &&
		    (put_cmd(s, "RCPT TO:<%s>", rcpts[i]) || flush(s)))
			return net_outcome(s, res, MFS_SMTP_TEMPFAIL, "RCPT",
					   err);
		if (envelope_reply(s, &r, "RCPT", res, &rc, err))
			return rc;
		if (mail.code / 100 != 2)
			continue;
		if (r.code / 100 == 2) {
			accepted++;
			continue;
		}
		any_temp |= r.code < 500;
		if (add_rejected(res, rcpts[i], r.text))
			return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	}
	if (accepted == 0 && !rset.code)
		s->data_out = 0; /* likewise without a recipient */
	if (pipelined &&
	    envelope_reply(s, data, bdat ? "BDAT" : "DATA", res, &rc, err))
		return rc;
	if (rset.code)
		return rset_refused(s, &rset, data, stop, res, err);
	if (mail.code / 100 == 2 && accepted > 0) {
		*stop = 0;
		return MFS_OK;
	}
	/* RFC 2920 3.1: DATA must fail without a recipient; should it not,
	 * the only way out that sends nothing is to drop the connection */
	if (data->code == 354)
		s->alive = 0;
	if (mail.code / 100 != 2)
		return outcome(res, by_code(mail.code), mail.text, err);
	return none_accepted(res, any_temp, err);
}

int mfs_smtp_send(struct mfs_smtp *s, const char *sender,
		  const char *const *rcpts, size_t nrcpts, int fd, off_t size,
		  unsigned flags, struct mfs_smtp_result *res,
		  struct mfs_err *err)
{
	struct reply r;
	int rc, stop;
	int bdat = (s->caps & (MFS_SMTP_PIPELINING | MFS_SMTP_CHUNKING)) ==
		   (MFS_SMTP_PIPELINING | MFS_SMTP_CHUNKING);
	char text[128];

	memset(res, 0, sizeof(*res));
	s->data_out = 0;
	if (!sender || nrcpts == 0)
		return mfs_err_set(err, MFS_E_INVAL,
				   "a message needs a sender and a recipient");
	if (!s->alive)
		return outcome(res, MFS_SMTP_TEMPFAIL, "the session is closed",
			       err);
	if (s->size_limit > 0 && size > s->size_limit) {
		snprintf(text, sizeof(text),
			 "message is %lld bytes, the server takes at most %lld",
			 (long long)size, (long long)s->size_limit);
		return outcome(res, MFS_SMTP_PERMFAIL, text, err);
	}
	rc = envelope(s, sender, rcpts, nrcpts, fd, size, bdat, flags, &r,
		      &stop, res, err);
	if (rc || stop)
		return rc;
	if (bdat) { /* r is the reply to BDAT ... LAST */
		if (r.code / 100 != 2)
			return outcome(res, by_code(r.code), r.text, err);
		s->dirty = 0;
		return outcome(res, MFS_SMTP_ACCEPTED, r.text, err);
	}
	if (r.code == 0 &&
	    (put_cmd(s, "DATA") || flush(s) || read_reply(s, &r, NULL, 0)))
		return net_outcome(s, res, MFS_SMTP_TEMPFAIL, "DATA", err);
	if (r.code != 354)
		return outcome(res, by_code(r.code), r.text, err);
	if (send_body(s, fd, size, 1))
		return net_outcome(s, res, MFS_SMTP_TEMPFAIL, "sending data",
				   err);
	/* from here on the server may have the whole message */
	if (write_raw(s, ".\r\n", 3) || flush(s) || read_reply(s, &r, NULL, 0))
		return net_outcome(s, res, MFS_SMTP_UNKNOWN,
				   "waiting for the reply to the data", err);
	s->dirty = 0;
	if (r.code / 100 == 2)
		return outcome(res, MFS_SMTP_ACCEPTED, r.text, err);
	return outcome(res, by_code(r.code), r.text, err);
}

void mfs_smtp_tls_info(struct mfs_smtp *s, char *version, size_t vlen,
		       char *subject, size_t slen, char *issuer, size_t ilen)
{
	mfs_stream_tls_info(s->stream, version, vlen, subject, slen, issuer,
			    ilen);
}

/* --check of the submission server: connect, secure, log in, and list
 * what it offers. */
int mfs_smtp_check(const struct mfs_account *acct, const char *password)
{
	static const struct {
		unsigned bit;
		const char *name;
	} exts[] = {
		{MFS_SMTP_8BITMIME, "8BITMIME"},     {MFS_SMTP_SMTPUTF8, "SMTPUTF8"},
		{MFS_SMTP_PIPELINING, "PIPELINING"}, {MFS_SMTP_SIZE, "SIZE"},
		{MFS_SMTP_STARTTLS, "STARTTLS"},     {MFS_SMTP_AUTH_PLAIN, "AUTH=PLAIN"},
		{MFS_SMTP_AUTH_LOGIN, "AUTH=LOGIN"},
		{MFS_SMTP_AUTH_XOAUTH2, "AUTH=XOAUTH2"},
		{MFS_SMTP_AUTH_OAUTHBEARER, "AUTH=OAUTHBEARER"},
	};
	struct mfs_smtp_opts so = {&acct->smtp,	 acct->user,	password,
				   acct->ca_file, acct->timeout, NULL,
				   acct->auth,	 acct,		NULL};
	char ver[64], subj[512], iss[512];
	struct mfs_smtp *s = NULL;
	struct mfs_err err;
	unsigned caps;
	size_t i;

	mfs_err_clear(&err);
	printf("smtp server: %s:%d\n", acct->smtp.host, acct->smtp.port);
	if (mfs_smtp_open(&so, &s, &err) != MFS_OK) {
		fprintf(stderr, "mailfs: %s\n", err.msg);
		return 1;
	}
	mfs_smtp_tls_info(s, ver, sizeof(ver), subj, sizeof(subj), iss,
			  sizeof(iss));
	if (ver[0] != '\0')
		printf("smtp tls: %s\nsmtp certificate subject: %s\n"
		       "smtp certificate issuer: %s\n",
		       ver, subj, iss);
	else
		printf("smtp tls: none\n");
	printf("smtp login: ok as %s\nsmtp extensions:", acct->user);
	caps = mfs_smtp_caps(s);
	for (i = 0; i < sizeof(exts) / sizeof(exts[0]); i++)
		if (caps & exts[i].bit)
			printf(" %s", exts[i].name);
	printf("\n");
	mfs_smtp_close(s);
	return 0;
}
