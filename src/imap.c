/*
 * imap.c - the IMAP driver (see imap.h).
 *
 * libetpan does the protocol; this file chooses the commands, owns the
 * connection and turns libetpan's results into mailfs's own types. The
 * socket and TLS come from tls.c so that every wait has a timeout and every
 * certificate is verified.
 */
#include "imap.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libetpan/libetpan.h>

#include "auth.h"
#include "idxcache.h"
#include "listline.h"
#include "log.h"
#include "names.h"
#include "query.h"
#include "sasl.h"
#include "skeleton.h"
#include "tls.h"

struct mfs_imap {
	pthread_mutex_t lock;
	const struct mfs_account *acct; /* borrowed */
	const char *password;		/* borrowed */
	char *fresh; /* owned: a token asked for again after the server
		      * refused the first one; used instead of password */
	mailimap *session;		/* owned; NULL while disconnected */
	char *selected;			/* owned: selected mailbox, or NULL */
	int selected_rw;		/* selected by SELECT, not EXAMINE */
	uint32_t selected_validity;
	unsigned caps; /* IMAP_CAP_* after login */
	int watcher;   /* the store only watches (IDLE): not compressed */
	/* listings are read by libetpan's parser alone: a response the
	 * listing's own reader read ahead (past a literal) turned out not to
	 * be of its shape, and libetpan cannot take it from there */
	int listline_off;
	/* The namespaces (RFC 2342), asked for once, by the first LIST: */
	int ns_known;
	char *ns_prefix;  /* owned: the personal one's prefix, "" if none */
	char ns_delim;	  /* and its delimiter */
	int ns_delim_known; /* from NAMESPACE or a LIST; else LIST "" "" */
	char **ns_others; /* owned: the other users' and shared prefixes */
	size_t ns_nothers;
	/* Skeleton plans of large messages whose structure came ahead of
	 * their skeleton_many (its `later`), for one mailbox and validity. */
	char *plans_box; /* owned, or NULL */
	uint32_t plans_validity;
	struct imap_plan {
		uint32_t uid;
		struct mfs_skel sk; /* owned */
	} *plans;	 /* owned array */
	size_t nplans;
};

/* At most this many plans are kept; more: the oldest go. */
#define PLANS_MAX 256

static void plans_clear(struct mfs_imap *imap)
{
	size_t i;

	for (i = 0; i < imap->nplans; i++)
		mfs_skel_free(&imap->plans[i].sk);
	free(imap->plans);
	free(imap->plans_box);
	imap->plans = NULL;
	imap->plans_box = NULL;
	imap->nplans = 0;
}

/* Moves the kept plan of uid into *sk: 1, or 0 when none is kept. */
static int plans_take(struct mfs_imap *imap, const char *mailbox,
		      uint32_t validity, uint32_t uid, struct mfs_skel *sk)
{
	size_t i;

	if (imap->plans_box == NULL || strcmp(imap->plans_box, mailbox) != 0 ||
	    imap->plans_validity != validity)
		return 0;
	for (i = 0; i < imap->nplans; i++) {
		if (imap->plans[i].uid != uid)
			continue;
		*sk = imap->plans[i].sk;
		imap->plans[i] = imap->plans[--imap->nplans];
		return 1;
	}
	return 0;
}

/* Keeps plan *sk of uid (taken; freed when it cannot be kept). */
static void plans_put(struct mfs_imap *imap, const char *mailbox,
		      uint32_t validity, uint32_t uid, struct mfs_skel *sk)
{
	struct mfs_skel old;

	if (imap->plans_box == NULL || strcmp(imap->plans_box, mailbox) != 0 ||
	    imap->plans_validity != validity) {
		plans_clear(imap);
		imap->plans_box = strdup(mailbox);
		imap->plans_validity = validity;
		imap->plans = calloc(PLANS_MAX, sizeof(*imap->plans));
		if (imap->plans_box == NULL || imap->plans == NULL) {
			plans_clear(imap);
			mfs_skel_free(sk);
			return;
		}
	}
	if (plans_take(imap, mailbox, validity, uid, &old))
		mfs_skel_free(&old);
	if (imap->nplans == PLANS_MAX) {
		mfs_skel_free(&imap->plans[0].sk);
		memmove(&imap->plans[0], &imap->plans[1],
			(PLANS_MAX - 1) * sizeof(*imap->plans));
		imap->nplans--;
	}
	imap->plans[imap->nplans].uid = uid;
	imap->plans[imap->nplans++].sk = *sk;
	memset(sk, 0, sizeof(*sk));
}

/* Capabilities the writes depend on, read once per connection. */
enum {
	IMAP_CAP_MOVE = 1 << 0,
	IMAP_CAP_UIDPLUS = 1 << 1,
	IMAP_CAP_UNSELECT = 1 << 2,
	IMAP_CAP_CONDSTORE = 1 << 3,
	IMAP_CAP_LITERALPLUS = 1 << 4, /* RFC 7888: APPEND without waiting */
	IMAP_CAP_NAMESPACE = 1 << 5,
};

static struct mfs_imap *imap_new(const struct mfs_account *acct,
				 const char *password)
{
	struct mfs_imap *imap = calloc(1, sizeof(*imap));

	if (imap == NULL)
		return NULL;
	pthread_mutex_init(&imap->lock, NULL);
	imap->acct = acct;
	imap->password = password;
	return imap;
}

/* Forgets the connection without a word to the server: used when the
 * stream is dead or in an unknown state. */
static void imap_drop(struct mfs_imap *imap)
{
	if (imap->session != NULL)
		mailimap_free(imap->session);
	imap->session = NULL;
	free(imap->selected);
	imap->selected = NULL;
	imap->selected_rw = 0;
	imap->caps = 0;
}

static void ns_forget(struct mfs_imap *imap)
{
	size_t i;

	for (i = 0; i < imap->ns_nothers; i++)
		free(imap->ns_others[i]);
	free(imap->ns_others);
	free(imap->ns_prefix);
	imap->ns_others = NULL;
	imap->ns_nothers = 0;
	imap->ns_prefix = NULL;
	imap->ns_known = 0;
	imap->ns_delim_known = 0;
}

static void imap_free(struct mfs_imap *imap)
{
	if (imap == NULL)
		return;
	if (imap->session != NULL && imap->session->imap_stream != NULL) {
		/* A polite LOGOUT, but unmounting must not wait a whole
		 * timeout for a server that stopped answering. */
		mailstream_low_set_timeout(
			mailstream_get_low(imap->session->imap_stream), 1);
		mailimap_logout(imap->session);
	}
	imap_drop(imap);
	ns_forget(imap);
	plans_clear(imap);
	mfs_password_free(imap->fresh);
	pthread_mutex_destroy(&imap->lock);
	free(imap);
}

/* The server's text for the last tagged reply, or a placeholder. */
static const char *imap_reply(struct mfs_imap *imap)
{
	if (imap->session != NULL && imap->session->imap_response != NULL &&
	    imap->session->imap_response[0] != '\0')
		return imap->session->imap_response;
	return "no reason given";
}

/*
 * Turns a libetpan result code into an mfs error. A broken stream or a reply
 * we could not parse leaves the connection in an unknown state, so it is
 * dropped and the next call reconnects. `no_code` is what a NO/BAD reply to
 * this command means.
 */
static int imap_fail(struct mfs_imap *imap, int r, const char *what,
		     enum mfs_errcode no_code, struct mfs_err *err)
{
	const struct mfs_server *srv = &imap->acct->store;
	mailstream *s = imap->session != NULL ? imap->session->imap_stream
					      : NULL;
	const char *refusal;
	int timed_out;

	switch (r) {
	case MAILIMAP_ERROR_STREAM:
	case MAILIMAP_ERROR_CONNECTION_REFUSED:
	case MAILIMAP_ERROR_FATAL: /* BYE: the server closes the connection */
		timed_out = s != NULL && mfs_stream_timed_out(s);
		refusal = s != NULL ? mfs_stream_refusal(s) : NULL;
		if (refusal != NULL) {
			mfs_err_set(err, MFS_E_PROTO,
				    "%s: %s:%d %s; connection dropped", what,
				    srv->host, srv->port, refusal);
			imap_drop(imap);
			return err->code;
		}
		imap_drop(imap);
		if (timed_out)
			return mfs_err_set(
			    err, MFS_E_TIMEOUT,
			    "%s: %s:%d did not answer within %d s", what,
			    srv->host, srv->port, imap->acct->timeout);
		return mfs_err_set(err, MFS_E_CONNECT,
				   "%s: connection to %s:%d lost", what,
				   srv->host, srv->port);
	case MAILIMAP_ERROR_PARSE:
		imap_drop(imap);
		return mfs_err_set(err, MFS_E_PROTO,
				   "%s: cannot parse the reply of %s:%d", what,
				   srv->host, srv->port);
	case MAILIMAP_ERROR_MEMORY:
		imap_drop(imap);
		return mfs_err_set(err, MFS_E_NOMEM, "%s: out of memory", what);
	default:
		return mfs_err_set(err, no_code, "%s: %s", what,
				   imap_reply(imap));
	}
}

static int imap_fail_no(struct mfs_imap *imap, int r, const char *what,
			enum mfs_errcode dflt, struct mfs_err *err);

static int caps_have(struct mailimap_capability_data *caps, const char *name)
{
	clistiter *it;

	if (caps == NULL)
		return 0;
	for (it = clist_begin(caps->cap_list); it != NULL;
	     it = clist_next(it)) {
		struct mailimap_capability *c = clist_content(it);

		if (c->cap_type == MAILIMAP_CAPABILITY_NAME &&
		    strcasecmp(c->cap_data.cap_name, name) == 0)
			return 1;
	}
	return 0;
}

/* CAPABILITY into *caps (the caller frees it). libetpan answers from the
 * connection's capability list and dereferences it even when the server
 * sent no "* CAPABILITY" line: an empty list is put there first, so that
 * such a server has no capabilities instead of crashing us. */
static int ask_capability(struct mfs_imap *imap,
			  struct mailimap_capability_data **caps,
			  struct mfs_err *err)
{
	mailimap *session = imap->session;
	struct mailimap_capability_data *empty = NULL;
	clist *none;
	int r;

	*caps = NULL;
	if (session->imap_connection_info == NULL) {
		session->imap_connection_info = mailimap_connection_info_new();
		if (session->imap_connection_info == NULL)
			return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	}
	if (session->imap_connection_info->imap_capability == NULL) {
		none = clist_new();
		if (none != NULL)
			empty = mailimap_capability_data_new(none);
		if (empty == NULL) {
			if (none != NULL)
				clist_free(none);
			return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
		}
		session->imap_connection_info->imap_capability = empty;
	}
	r = mailimap_capability(session, caps);
	if (r != MAILIMAP_NO_ERROR)
		return imap_fail(imap, r, "CAPABILITY", MFS_E_PROTO, err);
	return MFS_OK;
}

/* Says whether `name` is among the server's capabilities: those it sent
 * unasked (in its greeting, as Dovecot does) when there are any, which
 * saves a round trip; otherwise it asks with CAPABILITY. */
static int imap_has_cap(struct mfs_imap *imap, const char *name, int *has,
			struct mfs_err *err)
{
	struct mailimap_connection_info *ci =
	    imap->session->imap_connection_info;
	struct mailimap_capability_data *caps = NULL;

	if (ci != NULL && ci->imap_capability != NULL) {
		*has = caps_have(ci->imap_capability, name);
		return MFS_OK;
	}
	if (ask_capability(imap, &caps, err) != MFS_OK)
		return err->code;
	*has = caps != NULL && caps_have(caps, name);
	mailimap_capability_data_free(caps);
	return MFS_OK;
}

/*
 * Reads the capabilities the writes need. Dovecot and most servers list
 * them in the LOGIN reply's CAPABILITY code, which libetpan keeps in the
 * connection info; only when that is missing is CAPABILITY asked.
 */
static int imap_load_caps(struct mfs_imap *imap, struct mfs_err *err)
{
	struct mailimap_connection_info *ci =
	    imap->session->imap_connection_info;
	struct mailimap_capability_data *caps = NULL;

	if (ci == NULL || ci->imap_capability == NULL) {
		if (ask_capability(imap, &caps, err) != MFS_OK)
			return err->code;
		if (caps != NULL)
			mailimap_capability_data_free(caps);
		ci = imap->session->imap_connection_info;
		if (ci == NULL || ci->imap_capability == NULL)
			return MFS_OK; /* no capabilities at all */
	}
	imap->caps = 0;
	if (caps_have(ci->imap_capability, "MOVE"))
		imap->caps |= IMAP_CAP_MOVE;
	if (caps_have(ci->imap_capability, "UIDPLUS"))
		imap->caps |= IMAP_CAP_UIDPLUS;
	if (caps_have(ci->imap_capability, "UNSELECT"))
		imap->caps |= IMAP_CAP_UNSELECT;
	if (caps_have(ci->imap_capability, "CONDSTORE") ||
	    caps_have(ci->imap_capability, "QRESYNC"))
		imap->caps |= IMAP_CAP_CONDSTORE;
	if (caps_have(ci->imap_capability, "LITERAL+"))
		imap->caps |= IMAP_CAP_LITERALPLUS;
	if (caps_have(ci->imap_capability, "NAMESPACE"))
		imap->caps |= IMAP_CAP_NAMESPACE;
	return MFS_OK;
}

/* Forgets the capabilities seen before login: they may change with it. */
static void imap_forget_caps(struct mfs_imap *imap)
{
	struct mailimap_connection_info *ci =
	    imap->session->imap_connection_info;

	if (ci != NULL && ci->imap_capability != NULL) {
		mailimap_capability_data_free(ci->imap_capability);
		ci->imap_capability = NULL;
	}
}

static int imap_starttls(struct mfs_imap *imap, const struct mfs_tls_opts *tls,
			 struct mfs_err *err)
{
	const struct mfs_server *srv = &imap->acct->store;
	int has = 0, r;

	if (imap_has_cap(imap, "STARTTLS", &has, err) != MFS_OK)
		return err->code;
	if (!has) {
		imap_drop(imap);
		return mfs_err_set(err, MFS_E_TLS,
				   "%s:%d does not offer STARTTLS; refusing to "
				   "log in without TLS (tls = none allows it)",
				   srv->host, srv->port);
	}
	r = mailimap_starttls(imap->session);
	if (r != MAILIMAP_NO_ERROR) {
		r = imap_fail(imap, r, "STARTTLS", MFS_E_TLS, err);
		imap_drop(imap);
		return r;
	}
	if (mfs_stream_starttls(imap->session->imap_stream, tls, err) !=
	    MFS_OK) {
		imap_drop(imap);
		return err->code;
	}
	imap_forget_caps(imap); /* those sent before TLS are not trusted */
	return MFS_OK;
}

/* The protocol trace of -d. Secrets (the LOGIN password) come marked
 * private and are never shown; long data is cut, so that message contents
 * do not fill the log. */
static void imap_logger(mailimap *session, int type, const char *str,
			size_t size, void *ctx)
{
	const char *dir;
	int len;

	(void)session;
	(void)ctx;
	switch (type) {
	case MAILSTREAM_LOG_TYPE_DATA_SENT_PRIVATE:
		mfs_log_debug("imap C: <%zu bytes not shown>", size);
		return;
	case MAILSTREAM_LOG_TYPE_DATA_SENT:
		dir = "C";
		break;
	case MAILSTREAM_LOG_TYPE_DATA_RECEIVED:
		dir = "S";
		break;
	default:
		return;
	}
	len = size > 200 ? 200 : (int)size;
	while (len > 0 && (str[len - 1] == '\n' || str[len - 1] == '\r'))
		len--;
	mfs_log_debug("imap %s: %.*s%s", dir, len, str,
		      size > 200 ? " [...]" : "");
}

/* Parses the responses up to the tagged reply of the command whose tag is
 * session->imap_tag, its first line read already; *state is the reply's
 * MAILIMAP_RESP_COND_STATE_*. Returns libetpan's error, or
 * MAILIMAP_NO_ERROR. */
static int parse_tagged(mailimap *session, int *state)
{
	struct mailimap_response *rsp = NULL;
	int r = mailimap_parse_response(session, &rsp);

	if (r != MAILIMAP_NO_ERROR)
		return r;
	*state = rsp->rsp_resp_done->rsp_data.rsp_tagged->rsp_cond_state
		     ->rsp_type;
	mailimap_response_free(rsp);
	return MAILIMAP_NO_ERROR;
}

/* read_tagged (below), with the first line of the responses already read
 * into the session's buffer. */
static int read_tagged_line(mailimap *session, int tag, clist **list,
			    int *ok)
{
	clist **fl;
	int r, state;

	session->imap_tag = tag; /* libetpan checks the reply's tag */
	r = parse_tagged(session, &state);
	if (r != MAILIMAP_NO_ERROR)
		return r;
	fl = &session->imap_response_info->rsp_fetch_list;
	if (list != NULL)
		*list = *fl;
	else if (*fl != NULL)
		mailimap_fetch_list_free(*fl);
	*fl = NULL;
	*ok = state == MAILIMAP_RESP_COND_STATE_OK;
	return MAILIMAP_NO_ERROR;
}

/* Reads the responses to the command tagged `tag` up to its tagged reply;
 * *list (when list is not NULL; else they are freed) takes its FETCH
 * responses, to be freed with mailimap_fetch_list_free(). *ok: the reply
 * is OK. Returns libetpan's error when the connection is not usable. */
static int read_tagged(mailimap *session, int tag, clist **list, int *ok)
{
	if (mailimap_read_line(session) == NULL)
		return MAILIMAP_ERROR_STREAM;
	return read_tagged_line(session, tag, list, ok);
}

/* The tagged reply of the command just sent, after its line has been
 * read: MAILIMAP_NO_ERROR for OK, MAILIMAP_ERROR_LOGIN for NO or BAD. */
static int tagged_reply(mailimap *session)
{
	int state, r = parse_tagged(session, &state);

	if (r != MAILIMAP_NO_ERROR)
		return r;
	if (state != MAILIMAP_RESP_COND_STATE_OK)
		return MAILIMAP_ERROR_LOGIN;
	session->imap_state = MAILIMAP_STATE_AUTHENTICATED;
	return MAILIMAP_NO_ERROR;
}

/*
 * AUTHENTICATE mech with a SASL initial response (RFC 4959). The command
 * line is marked private until it has been flushed (libetpan traces what
 * it writes at the flush, as its own LOGIN does), so the -d trace does not
 * show it, and libetpan's write buffer is wiped afterwards. A server that
 * refuses a token answers with a challenge first ("+ <error>"): it gets
 * `cancel` ("" for XOAUTH2, "AQ==" for OAUTHBEARER as RFC 7628 asks) and
 * then says NO.
 */
static int imap_authenticate(struct mfs_imap *imap, const char *mech,
			     const char *ir, const char *cancel)
{
	mailimap *session = imap->session;
	mailstream *s = session->imap_stream;
	int ok;

	mailstream_set_privacy(s, 0);
	ok = mailimap_send_current_tag(session) == MAILIMAP_NO_ERROR &&
	     mailstream_write(s, "AUTHENTICATE ", 13) == 13 &&
	     mailstream_write(s, mech, strlen(mech)) == (ssize_t)strlen(mech) &&
	     mailstream_write(s, " ", 1) == 1 &&
	     mailstream_write(s, ir, strlen(ir)) == (ssize_t)strlen(ir) &&
	     mailstream_write(s, "\r\n", 2) == 2 && mailstream_flush(s) == 0;
	mailstream_set_privacy(s, 1);
	mfs_stream_wipe(s);
	ok = ok && mailimap_read_line(session) != NULL;
	if (ok && session->imap_stream_buffer->str[0] == '+') {
		/* the server's error, as a challenge: end the exchange */
		ok = mailstream_write(s, cancel, strlen(cancel)) ==
			 (ssize_t)strlen(cancel) &&
		     mailstream_write(s, "\r\n", 2) == 2 &&
		     mailstream_flush(s) == 0 &&
		     mailimap_read_line(session) != NULL;
	}
	if (!ok)
		return MAILIMAP_ERROR_STREAM;
	return tagged_reply(session);
}

/* One login with secret: LOGIN, or the SASL mechanism auth asks for. */
static int imap_login_once(struct mfs_imap *imap, const char *secret)
{
	const struct mfs_account *acct = imap->acct;
	const struct mfs_server *srv = &acct->store;
	char *ir;
	int r;

	if (acct->auth == MFS_AUTH_PASSWORD) {
		r = mailimap_login(imap->session, acct->user, secret);
		if (imap->session->imap_stream != NULL)
			mfs_stream_wipe(imap->session->imap_stream);
		return r;
	}
	if (acct->auth == MFS_AUTH_XOAUTH2)
		ir = mfs_sasl_xoauth2(acct->user, secret);
	else
		ir = mfs_sasl_oauthbearer(acct->user, srv->host, srv->port,
					  secret);
	if (ir == NULL)
		return MAILIMAP_ERROR_MEMORY;
	r = imap_authenticate(imap,
			      acct->auth == MFS_AUTH_XOAUTH2 ? "XOAUTH2"
							     : "OAUTHBEARER",
			      ir, acct->auth == MFS_AUTH_XOAUTH2 ? "" : "AQ==");
	mfs_sasl_free(ir);
	return r;
}

/* One login with secret, as an mfs_login_fn: arg is the struct mfs_imap. */
static int imap_login_try(void *arg, const char *secret, int *refused,
			  struct mfs_err *err)
{
	struct mfs_imap *imap = arg;
	const struct mfs_account *acct = imap->acct;
	const struct mfs_server *srv = &acct->store;
	int r = imap_login_once(imap, secret);

	*refused = r == MAILIMAP_ERROR_LOGIN;
	if (r == MAILIMAP_NO_ERROR)
		return MFS_OK;
	r = imap_fail(imap, r, "login", MFS_E_AUTH, err);
	if (r == MFS_E_AUTH)
		mfs_err_set(err, MFS_E_AUTH, "login as %s at %s:%d refused: %s",
			    acct->user, srv->host, srv->port, imap_reply(imap));
	return r;
}

/*
 * Logs in. A refused OAuth token may have expired: the token is asked for
 * again (password_command) and tried once more on the same connection
 * (mfs_login_renewing); the new one is kept for later logins. A refused
 * password is final.
 */
static int imap_login(struct mfs_imap *imap, struct mfs_err *err)
{
	const struct mfs_account *acct = imap->acct;
	const char *secret = imap->fresh ? imap->fresh : imap->password;
	char *fresh;
	int r, refused;

	if (acct->auth == MFS_AUTH_PASSWORD)
		return imap_login_try(imap, secret, &refused, err);
	r = mfs_login_renewing(acct, "imap", &acct->store, imap_login_try, imap,
			       secret, &fresh, err);
	if (fresh != NULL) {
		mfs_password_free(imap->fresh);
		imap->fresh = fresh;
	}
	return r;
}

/* The transfer from which COMPRESS pays for its round trip. */
#define COMPRESS_MIN (64 * 1024)

/*
 * COMPRESS DEFLATE (RFC 4978) when the server offers COMPRESS=DEFLATE and
 * the account does not say compress = no. After authentication only, so
 * that no secret goes through the compressor, and at most once per
 * connection (a new connection starts uncompressed). Not on a store that
 * only watches: IDLE carries a few lines an hour, and COMPRESS would cost
 * it a round trip and the deflate state. The reply is read
 * byte by byte (tls.h), so that the server's first compressed bytes stay
 * unread until the stream inflates them. A NO or BAD leaves the
 * connection as it was; a broken reply drops it.
 */
static int imap_compress(struct mfs_imap *imap, struct mfs_err *err)
{
	const struct mfs_server *srv = &imap->acct->store;
	mailimap *session = imap->session;
	mailstream *s = session->imap_stream;
	struct mailimap_connection_info *ci = session->imap_connection_info;
	int r, state;

	if (!imap->acct->compress || imap->watcher ||
	    mfs_stream_compressed(s) || ci == NULL ||
	    !caps_have(ci->imap_capability, "COMPRESS=DEFLATE"))
		return MFS_OK;
	mfs_stream_byte_reads(s, 1);
	/* not mailimap_custom_command(): it sends a space after the name */
	if (mailimap_send_current_tag(session) != MAILIMAP_NO_ERROR ||
	    mailstream_write(s, "COMPRESS DEFLATE\r\n", 18) != 18 ||
	    mailstream_flush(s) == -1 || mailimap_read_line(session) == NULL)
		r = MAILIMAP_ERROR_STREAM;
	else
		r = parse_tagged(session, &state);
	if (r != MAILIMAP_NO_ERROR)
		return imap_fail(imap, r, "COMPRESS", MFS_E_PROTO, err);
	if (state != MAILIMAP_RESP_COND_STATE_OK) {
		mfs_stream_byte_reads(s, 0);
		mfs_log_debug("imap: %s:%d refused COMPRESS: %s", srv->host,
			      srv->port, imap_reply(imap));
		return MFS_OK;
	}
	if (mfs_stream_compress(s, err) != MFS_OK) {
		imap_drop(imap);
		return err->code;
	}
	mfs_log_debug("imap: compression (DEFLATE) on with %s:%d", srv->host,
		      srv->port);
	return MFS_OK;
}

/* After authentication: the capabilities. Compression waits for the
 * first transfer it pays for (imap_compress_for()). */
static int imap_authenticated(struct mfs_imap *imap, struct mfs_err *err)
{
	return imap_load_caps(imap, err);
}

/* Compresses the connection before a transfer of about `bytes` (bulk:
 * UINT64_MAX) when that is worth COMPRESS's round trip: from COMPRESS_MIN
 * bytes on. A connection that only lists a folder again without change,
 * or reads a small message, stays as it is. */
static int imap_compress_for(struct mfs_imap *imap, uint64_t bytes,
			     struct mfs_err *err)
{
	if (bytes < COMPRESS_MIN)
		return MFS_OK;
	return imap_compress(imap, err);
}

static int imap_open(struct mfs_imap *imap, struct mfs_err *err)
{
	const struct mfs_account *acct = imap->acct;
	const struct mfs_server *srv = &acct->store;
	struct mfs_tls_opts tls = {srv->host, acct->ca_file, acct->timeout};
	mailstream *s;
	int fd, r, has;

	fd = mfs_tcp_connect(srv->host, srv->port, acct->timeout, err);
	if (fd < 0) {
		/* no connection could be opened: the server is out of reach
		 * (a connection that breaks later is MFS_E_CONNECT) */
		if (err->code == MFS_E_CONNECT || err->code == MFS_E_TIMEOUT)
			err->code = MFS_E_OFFLINE;
		return err->code;
	}
	if (srv->tls == MFS_TLS_IMPLICIT)
		s = mfs_stream_tls(fd, &tls, err);
	else
		s = mfs_stream_plain(fd, acct->timeout, err);
	if (s == NULL)
		return err->code;
	mfs_stream_imap_literals(s);

	imap->session = mailimap_new(0, NULL);
	if (imap->session == NULL) {
		mailstream_close(s);
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	}
	mailimap_set_timeout(imap->session, acct->timeout);
	if (mfs_log_debugging())
		mailimap_set_logger(imap->session, imap_logger, NULL);
	r = mailimap_connect(imap->session, s); /* the session owns s now */
	if (r == MAILIMAP_NO_ERROR_AUTHENTICATED && srv->tls != MFS_TLS_NONE) {
		/* PREAUTH before TLS would skip STARTTLS: a downgrade. */
		if (srv->tls == MFS_TLS_STARTTLS) {
			imap_drop(imap);
			return mfs_err_set(err, MFS_E_TLS,
					   "%s:%d sent PREAUTH before STARTTLS",
					   srv->host, srv->port);
		}
		return imap_authenticated(imap, err);
	}
	if (r != MAILIMAP_NO_ERROR_NON_AUTHENTICATED &&
	    r != MAILIMAP_NO_ERROR_AUTHENTICATED) {
		r = imap_fail(imap, r, "greeting", MFS_E_PROTO, err);
		imap_drop(imap);
		return r;
	}
	if (srv->tls == MFS_TLS_STARTTLS &&
	    imap_starttls(imap, &tls, err) != MFS_OK)
		return err->code;

	if (imap_has_cap(imap, "LOGINDISABLED", &has, err) != MFS_OK)
		return err->code;
	if (has) {
		imap_drop(imap);
		return mfs_err_set(err, MFS_E_AUTH,
				   "%s:%d does not allow LOGIN on this "
				   "connection",
				   srv->host, srv->port);
	}
	imap_forget_caps(imap);
	if (imap_login(imap, err) != MFS_OK) {
		imap_drop(imap);
		return err->code;
	}
	mfs_log_debug("imap: logged in to %s:%d as %s", srv->host, srv->port,
		      acct->user);
	return imap_authenticated(imap, err);
}

static int imap_ensure(struct mfs_imap *imap, struct mfs_err *err)
{
	if (imap->session != NULL)
		return MFS_OK;
	return imap_open(imap, err);
}

static int imap_connect(struct mfs_store *st, struct mfs_err *err)
{
	struct mfs_imap *imap = st->priv;
	int r;

	pthread_mutex_lock(&imap->lock);
	r = imap_ensure(imap, err);
	pthread_mutex_unlock(&imap->lock);
	return r;
}

static void folder_flags(struct mailimap_mbx_list_flags *fl,
			 struct mfs_store_folder *f)
{
	clistiter *it;

	if (fl == NULL)
		return;
	if (fl->mbf_type == MAILIMAP_MBX_LIST_FLAGS_SFLAG &&
	    fl->mbf_sflag == MAILIMAP_MBX_LIST_SFLAG_NOSELECT)
		f->noselect = 1;
	for (it = clist_begin(fl->mbf_oflags); it != NULL;
	     it = clist_next(it)) {
		struct mailimap_mbx_list_oflag *of = clist_content(it);

		if (of->of_type != MAILIMAP_MBX_LIST_OFLAG_FLAG_EXT)
			continue;
		if (strcasecmp(of->of_flag_ext, "Sent") == 0)
			f->sent = 1;
		else if (strcasecmp(of->of_flag_ext, "NonExistent") == 0 ||
			 strcasecmp(of->of_flag_ext, "Noselect") == 0)
			f->noselect = 1;
	}
}

/* --- namespaces (RFC 2342) ----------------------------------------------- */

/* Adds the prefixes of item's namespaces to the others'. Returns 0, or -1
 * when memory ran out. */
static int ns_add_others(struct mfs_imap *imap,
			 const struct mailimap_namespace_item *item)
{
	clistiter *it;

	if (item == NULL)
		return 0;
	for (it = clist_begin(item->ns_data_list); it != NULL;
	     it = clist_next(it)) {
		const struct mailimap_namespace_info *ni = clist_content(it);
		char **grown;

		if (ni->ns_prefix == NULL || ni->ns_prefix[0] == '\0')
			continue; /* it sets no folder apart */
		grown = realloc(imap->ns_others,
				(imap->ns_nothers + 1) * sizeof(*grown));
		if (grown == NULL)
			return -1;
		imap->ns_others = grown;
		grown[imap->ns_nothers] = strdup(ni->ns_prefix);
		if (grown[imap->ns_nothers] == NULL)
			return -1;
		imap->ns_nothers++;
	}
	return 0;
}

/* Without NAMESPACE, the root's delimiter is that of the folders LIST
 * gives (INBOX's first); asked for alone (LIST "" "", RFC 3501, 6.3.8)
 * only when the personal namespace is wanted before any LIST. */
static void ns_delim_from(struct mfs_imap *imap, clist *list)
{
	clistiter *it;

	if (imap->ns_delim_known || list == NULL || clist_begin(list) == NULL)
		return;
	imap->ns_delim = ((struct mailimap_mailbox_list *)clist_content(
			      clist_begin(list)))
			     ->mb_delimiter;
	for (it = clist_begin(list); it != NULL; it = clist_next(it)) {
		struct mailimap_mailbox_list *mb = clist_content(it);

		if (mb->mb_name != NULL && strcasecmp(mb->mb_name, "INBOX") == 0)
			imap->ns_delim = mb->mb_delimiter;
	}
	imap->ns_delim_known = 1;
}

static int ns_delim_from_list(struct mfs_imap *imap, struct mfs_err *err)
{
	clist *list = NULL;
	int r = mailimap_list(imap->session, "", "", &list);

	if (r == MAILIMAP_ERROR_STREAM || r == MAILIMAP_ERROR_FATAL ||
	    r == MAILIMAP_ERROR_PARSE || r == MAILIMAP_ERROR_MEMORY)
		return imap_fail(imap, r, "LIST", MFS_E_PROTO, err);
	ns_delim_from(imap, r == MAILIMAP_NO_ERROR ? list : NULL);
	if (list != NULL)
		mailimap_list_result_free(list);
	return MFS_OK;
}

/*
 * Learns the namespaces from NAMESPACE's outcome (r, libetpan's code; ns,
 * its data or NULL, freed here), once per store. Without NAMESPACE, or
 * when the server refuses it, the personal prefix is "" and folders are
 * shown as LIST names them. A reply libetpan cannot parse drops the
 * connection (its state is unknown) and is not asked again.
 */
static int ns_apply(struct mfs_imap *imap, int r,
		    struct mailimap_namespace_data *ns, struct mfs_err *err)
{
	const struct mailimap_namespace_info *mine = NULL;

	if (r == MAILIMAP_ERROR_STREAM || r == MAILIMAP_ERROR_FATAL ||
	    r == MAILIMAP_ERROR_PARSE || r == MAILIMAP_ERROR_MEMORY) {
		if (ns != NULL)
			mailimap_namespace_data_free(ns);
		if (r == MAILIMAP_ERROR_PARSE)
			imap->ns_known = 1; /* prefix "" from now on */
		imap->ns_prefix = imap->ns_known ? strdup("") : NULL;
		return imap_fail(imap, r, "NAMESPACE", MFS_E_PROTO, err);
	}
	if (r != MAILIMAP_NO_ERROR)
		mfs_log_debug("imap: NAMESPACE refused: %s", imap_reply(imap));
	if (ns != NULL && ns->ns_personal != NULL &&
	    clist_begin(ns->ns_personal->ns_data_list) != NULL)
		mine = clist_content(clist_begin(ns->ns_personal->ns_data_list));
	imap->ns_prefix = strdup(mine != NULL ? mine->ns_prefix : "");
	imap->ns_delim = mine != NULL ? mine->ns_delimiter : '\0';
	imap->ns_delim_known = mine != NULL;
	if (imap->ns_prefix == NULL ||
	    (ns != NULL && (ns_add_others(imap, ns->ns_other) != 0 ||
			    ns_add_others(imap, ns->ns_shared) != 0))) {
		ns_forget(imap);
		if (ns != NULL)
			mailimap_namespace_data_free(ns);
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	}
	if (ns != NULL)
		mailimap_namespace_data_free(ns);
	imap->ns_known = 1;
	return MFS_OK;
}

/* The namespaces, asked alone (the personal namespace wanted before any
 * LIST). */
static int ns_learn(struct mfs_imap *imap, struct mfs_err *err)
{
	struct mailimap_namespace_data *ns = NULL;
	int r = MAILIMAP_NO_ERROR;

	if (imap->ns_known)
		return MFS_OK;
	if (imap->caps & IMAP_CAP_NAMESPACE)
		r = mailimap_namespace(imap->session, &ns);
	return ns_apply(imap, r, ns, err);
}

/*
 * The first LIST of a store where the server offers NAMESPACE: NAMESPACE
 * and LIST "" "*" in one burst, so that the namespaces cost no round trip
 * of their own. Their replies come in order; NAMESPACE's is applied as
 * ns_learn() does. *list: the LIST result (free with
 * mailimap_list_result_free()).
 */
static int list_with_ns(struct mfs_imap *imap, clist **list,
			struct mfs_err *err)
{
	mailimap *session = imap->session;
	mailstream *s = session->imap_stream;
	struct mailimap_namespace_data *ns = NULL;
	int first = session->imap_tag + 1, r, ok;
	clistiter *it;

	*list = NULL;
	if (mailimap_send_current_tag(session) != MAILIMAP_NO_ERROR ||
	    mailstream_write(s, "NAMESPACE\r\n", 11) != 11 ||
	    mailimap_send_current_tag(session) != MAILIMAP_NO_ERROR ||
	    mailstream_write(s, "LIST \"\" \"*\"\r\n", 13) != 13 ||
	    mailstream_flush(s) == -1)
		return imap_fail(imap, MAILIMAP_ERROR_STREAM, "LIST",
				 MFS_E_PROTO, err);
	r = read_tagged(session, first, NULL, &ok); /* NAMESPACE's reply */
	if (r == MAILIMAP_NO_ERROR) {
		for (it = clist_begin(
			 session->imap_response_info->rsp_extension_list);
		     it != NULL; it = clist_next(it)) {
			struct mailimap_extension_data *ext = clist_content(it);

			if (ext->ext_extension->ext_id ==
				MAILIMAP_EXTENSION_NAMESPACE &&
			    ns == NULL) {
				ns = ext->ext_data;
				ext->ext_data = NULL;
				ext->ext_type = -1;
			}
		}
		if (!ok || ns == NULL) {
			if (ns != NULL)
				mailimap_namespace_data_free(ns);
			ns = NULL;
			r = MAILIMAP_ERROR_EXTENSION;
		}
	}
	session->imap_tag = first + 1; /* LIST's */
	if (ns_apply(imap, r, ns, err) != MFS_OK)
		return err->code;
	r = read_tagged(session, first + 1, NULL, &ok);
	if (r == MAILIMAP_NO_ERROR && !ok)
		r = MAILIMAP_ERROR_LIST;
	if (r != MAILIMAP_NO_ERROR)
		return imap_fail(imap, r, "LIST", MFS_E_PROTO, err);
	*list = session->imap_response_info->rsp_mailbox_list;
	session->imap_response_info->rsp_mailbox_list = NULL;
	if (*list == NULL && (*list = clist_new()) == NULL)
		return mfs_err_set(err, MFS_E_NOMEM, "LIST: out of memory");
	return MFS_OK;
}

/* Does name start with prefix? INBOX in it matches in any case. */
static int has_prefix(const char *name, const char *prefix)
{
	size_t n = strlen(prefix);

	if (strncasecmp(prefix, "INBOX", 5) == 0 && n >= 5)
		return strncasecmp(name, prefix, 5) == 0 &&
		       strncmp(name + 5, prefix + 5, n - 5) == 0;
	return strncmp(name, prefix, n) == 0;
}

/*
 * How much of a LIST name the path shown from the root leaves out: the
 * personal prefix ("INBOX." shows INBOX.Archive as Archive/). A name whose
 * rest would be empty, INBOX or below it, or would start with (or be)
 * another namespace's prefix keeps its whole name, so that each path
 * shown still names one folder and maps back to it.
 */
static size_t ns_shown(const struct mfs_imap *imap, const char *name)
{
	size_t plen = imap->ns_prefix != NULL ? strlen(imap->ns_prefix) : 0;
	const char *rest = name + plen;
	size_t i;

	if (plen == 0 || !has_prefix(name, imap->ns_prefix) || *rest == '\0')
		return 0;
	if (strncasecmp(rest, "INBOX", 5) == 0 &&
	    (rest[5] == '\0' || rest[5] == imap->ns_delim))
		return 0;
	for (i = 0; i < imap->ns_nothers; i++) {
		const char *o = imap->ns_others[i];
		size_t olen = strlen(o);

		if (has_prefix(rest, o) ||
		    (olen > 1 && strncmp(rest, o, olen - 1) == 0 &&
		     rest[olen - 1] == '\0'))
			return 0;
	}
	return plen;
}

static int imap_personal(struct mfs_store *st, char **prefix, char *delim,
			 struct mfs_err *err)
{
	struct mfs_imap *imap = st->priv;

	*prefix = NULL;
	*delim = '\0';
	pthread_mutex_lock(&imap->lock);
	if (imap_ensure(imap, err) == MFS_OK && ns_learn(imap, err) == MFS_OK &&
	    (imap->ns_delim_known || ns_delim_from_list(imap, err) == MFS_OK)) {
		*prefix = strdup(imap->ns_prefix != NULL ? imap->ns_prefix : "");
		*delim = imap->ns_delim;
		if (*prefix == NULL)
			mfs_err_set(err, MFS_E_NOMEM, "out of memory");
		else
			mfs_err_clear(err);
	}
	pthread_mutex_unlock(&imap->lock);
	return err->code;
}

static int imap_list(struct mfs_store *st, struct mfs_store_folder **folders,
		     size_t *n, struct mfs_err *err)
{
	struct mfs_imap *imap = st->priv;
	clist *list = NULL;
	clistiter *it;
	struct mfs_store_folder *out = NULL;
	size_t count = 0;
	int r;

	pthread_mutex_lock(&imap->lock);
	if (imap_ensure(imap, err) != MFS_OK)
		goto unlock;
	if (!imap->ns_known && (imap->caps & IMAP_CAP_NAMESPACE)) {
		if (list_with_ns(imap, &list, err) != MFS_OK)
			goto unlock;
	} else {
		if (ns_learn(imap, err) != MFS_OK)
			goto unlock;
		r = mailimap_list(imap->session, "", "*", &list);
		if (r != MAILIMAP_NO_ERROR) {
			imap_fail(imap, r, "LIST", MFS_E_PROTO, err);
			goto unlock;
		}
	}
	ns_delim_from(imap, list);
	out = calloc(clist_count(list) + 1, sizeof(*out));
	if (out == NULL) {
		mfs_err_set(err, MFS_E_NOMEM, "LIST: out of memory");
		goto free_list;
	}
	for (it = clist_begin(list); it != NULL; it = clist_next(it)) {
		struct mailimap_mailbox_list *mb = clist_content(it);
		struct mfs_store_folder *f = &out[count];

		if (mb->mb_name == NULL)
			continue;
		f->name = strdup(mb->mb_name);
		if (f->name == NULL) {
			mfs_err_set(err, MFS_E_NOMEM, "LIST: out of memory");
			goto free_out;
		}
		f->delim = mb->mb_delimiter;
		f->shown = ns_shown(imap, f->name);
		folder_flags(mb->mb_flag, f);
		count++;
	}
	mailimap_list_result_free(list);
	*folders = out;
	*n = count;
	mfs_err_clear(err);
	pthread_mutex_unlock(&imap->lock);
	return MFS_OK;

free_out:
	mfs_store_folders_free(out, count);
free_list:
	mailimap_list_result_free(list);
unlock:
	pthread_mutex_unlock(&imap->lock);
	return err->code;
}

/*
 * Selects mailbox: EXAMINE (read-only) or, when `rw`, SELECT. Nothing is
 * sent when mailbox is selected already in a mode that serves (a read-write
 * selection serves reads too), unless `force`.
 *
 * With `modseq` (read-only only, and only on a server with CONDSTORE) the
 * command is EXAMINE mailbox (CONDSTORE), always sent, and *modseq receives
 * the HIGHESTMODSEQ (0 when the server keeps none for the mailbox). This
 * selection is recorded like any other, so that later reads of the same
 * mailbox reuse it; CONDSTORE then stays on for the connection, and the
 * FETCH responses carry MODSEQ items, which every reader of FETCH
 * responses here skips.
 */
static int imap_select_modseq(struct mfs_imap *imap, const char *mailbox,
			      int rw, int force, uint64_t *modseq,
			      struct mfs_err *err)
{
	int r;

	if (modseq == NULL && !force && imap->selected != NULL &&
	    strcmp(imap->selected, mailbox) == 0 && (imap->selected_rw || !rw))
		return MFS_OK;
	free(imap->selected);
	imap->selected = NULL;
	imap->selected_rw = 0;
	if (modseq != NULL)
		r = mailimap_examine_condstore(imap->session, mailbox, modseq);
	else if (rw)
		r = mailimap_select(imap->session, mailbox);
	else
		r = mailimap_examine(imap->session, mailbox);
	if (r != MAILIMAP_NO_ERROR)
		return imap_fail(imap, r, rw ? "SELECT" : "EXAMINE",
				 MFS_E_NOENT, err);
	imap->selected = strdup(mailbox);
	if (imap->selected == NULL)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	imap->selected_rw = rw;
	imap->selected_validity =
	    imap->session->imap_selection_info != NULL
		? imap->session->imap_selection_info->sel_uidvalidity
		: 0;
	return MFS_OK;
}

static int imap_select(struct mfs_imap *imap, const char *mailbox, int rw,
		       int force, struct mfs_err *err)
{
	return imap_select_modseq(imap, mailbox, rw, force, NULL, err);
}

static int imap_examine(struct mfs_imap *imap, const char *mailbox, int force,
			struct mfs_err *err)
{
	return imap_select(imap, mailbox, 0, force, err);
}

static time_t imap_date_to_time(const struct mailimap_date_time *d)
{
	struct tm tm = {0};
	int zone = d->dt_zone < 0 ? -d->dt_zone : d->dt_zone;
	long offset = (zone / 100) * 3600L + (zone % 100) * 60L;

	tm.tm_mday = d->dt_day;
	tm.tm_mon = d->dt_month - 1;
	tm.tm_year = d->dt_year - 1900;
	tm.tm_hour = d->dt_hour;
	tm.tm_min = d->dt_min;
	tm.tm_sec = d->dt_sec;
	return timegm(&tm) - (d->dt_zone < 0 ? -offset : offset);
}


static unsigned flags_from(const struct mailimap_msg_att_dynamic *dyn)
{
	unsigned flags = 0;
	clistiter *it;

	if (dyn == NULL || dyn->att_list == NULL)
		return 0;
	for (it = clist_begin(dyn->att_list); it != NULL; it = clist_next(it)) {
		struct mailimap_flag_fetch *ff = clist_content(it);

		if (ff->fl_type != MAILIMAP_FLAG_FETCH_OTHER ||
		    ff->fl_flag == NULL)
			continue;
		switch (ff->fl_flag->fl_type) {
		case MAILIMAP_FLAG_SEEN:
			flags |= MFS_FLAG_SEEN;
			break;
		case MAILIMAP_FLAG_ANSWERED:
			flags |= MFS_FLAG_ANSWERED;
			break;
		case MAILIMAP_FLAG_FLAGGED:
			flags |= MFS_FLAG_FLAGGED;
			break;
		case MAILIMAP_FLAG_DELETED:
			flags |= MFS_FLAG_DELETED;
			break;
		case MAILIMAP_FLAG_DRAFT:
			flags |= MFS_FLAG_DRAFT;
			break;
		default:
			break;
		}
	}
	return flags;
}

/* Fills m from one FETCH response. Returns 0, or -1 on ENOMEM. */
static int msg_from_att(const struct mailimap_msg_att *att,
			struct mfs_store_msg *m)
{
	const struct mailimap_envelope *env = NULL;
	const struct mailimap_address *a;
	struct mfs_sender from = {0};
	time_t internal = 0;
	clistiter *it;

	memset(m, 0, sizeof(*m));
	for (it = clist_begin(att->att_list); it != NULL; it = clist_next(it)) {
		struct mailimap_msg_att_item *item = clist_content(it);
		struct mailimap_msg_att_static *st;

		if (item->att_type == MAILIMAP_MSG_ATT_ITEM_DYNAMIC) {
			m->flags = flags_from(item->att_data.att_dyn);
			continue;
		}
		if (item->att_type != MAILIMAP_MSG_ATT_ITEM_STATIC)
			continue; /* MODSEQ, once CONDSTORE is on */
		st = item->att_data.att_static;
		switch (st->att_type) {
		case MAILIMAP_MSG_ATT_UID:
			m->uid = st->att_data.att_uid;
			break;
		case MAILIMAP_MSG_ATT_RFC822_SIZE:
			m->size = st->att_data.att_rfc822_size;
			break;
		case MAILIMAP_MSG_ATT_INTERNALDATE:
			internal =
			    imap_date_to_time(st->att_data.att_internal_date);
			break;
		case MAILIMAP_MSG_ATT_ENVELOPE:
			env = st->att_data.att_env;
			break;
		default:
			break;
		}
	}
	if (env != NULL && env->env_from != NULL &&
	    env->env_from->frm_list != NULL &&
	    clist_begin(env->env_from->frm_list) != NULL) {
		a = clist_content(clist_begin(env->env_from->frm_list));
		from = (struct mfs_sender){1, a->ad_personal_name,
					   a->ad_mailbox_name, a->ad_host_name};
	}
	return mfs_listline_entry(m, env != NULL ? env->env_date : NULL,
				  internal, &from,
				  env != NULL ? env->env_subject : NULL);
}

/* Collects the listing while libetpan parses it: each FETCH response is
 * turned into an mfs_store_msg and freed at once, so a listing of any size
 * never holds more than one parsed response. */
struct index_acc {
	struct mfs_store_msg *msgs; /* owned */
	size_t n, cap;
	int nomem;
	int again; /* to be listed again by libetpan alone (listline_off) */
	/* the listing's parts as they come (index_pieces, store.h): the
	 * entries from told on are handed to piece; keep, when set, writes
	 * them to the kept listing as they are told, so that their from and
	 * subject may go once piece shows them */
	mfs_index_piece_fn piece;
	void *ctx;
	uint32_t validity;
	size_t told;
	struct mfs_idx_out *keep;
};

/* Entries of a listing handed over at once, at most (index_tell). */
#define INDEX_PIECE 1000

/* Hands the entries not told yet to acc's piece, when at least `least`
 * of them wait. */
static void index_tell(struct index_acc *acc, size_t least)
{
	size_t i;

	if (acc->piece == NULL || acc->nomem || acc->n - acc->told < least ||
	    acc->n == acc->told)
		return;
	for (i = acc->told; i < acc->n && acc->keep != NULL; i++)
		mfs_idx_out_add(acc->keep, &acc->msgs[i]);
	if (acc->piece(acc->ctx, acc->validity, acc->msgs + acc->told,
		       acc->n - acc->told) &&
	    acc->keep != NULL) {
		for (i = acc->told; i < acc->n; i++) {
			struct mfs_store_msg *m = &acc->msgs[i];

			free(m->from);
			free(m->subject);
			m->from = m->subject = NULL;
			m->shown = 1;
		}
	}
	acc->told = acc->n;
}

/* Adds m (taken: freed when not kept) to the listing. */
static void index_add(struct index_acc *acc, struct mfs_store_msg *m)
{
	if (acc->nomem || m->uid == 0) { /* a FETCH without UID: not ours */
		free(m->from);
		free(m->subject);
		return;
	}
	if (acc->n == acc->cap) {
		size_t cap = acc->cap ? acc->cap * 2 : 256;
		struct mfs_store_msg *p =
			realloc(acc->msgs, cap * sizeof(*p));

		if (p == NULL) {
			acc->nomem = 1;
			free(m->from);
			free(m->subject);
			return;
		}
		acc->msgs = p;
		acc->cap = cap;
	}
	acc->msgs[acc->n++] = *m;
}

static void index_handler(struct mailimap_msg_att *att, void *ctx)
{
	struct index_acc *acc = ctx;
	struct mfs_store_msg m;

	if (acc->nomem)
		return;
	if (msg_from_att(att, &m) != 0) {
		acc->nomem = 1;
		return;
	}
	index_add(acc, &m);
}

/* libetpan hands FETCH responses to the handler only while a progress
 * callback is set. */
static void index_progress(size_t current, size_t maximum, void *ctx)
{
	(void)current;
	(void)maximum;
	(void)ctx;
}

static int uid_cmp(const void *a, const void *b)
{
	const struct mfs_store_msg *x = a, *y = b;

	return x->uid < y->uid ? -1 : x->uid > y->uid;
}

/* Puts a listing in UID order (servers send it so; this makes sure). */
static void sort_by_uid(struct mfs_store_msg *msgs, size_t n)
{
	for (size_t i = 1; i < n; i++) {
		if (msgs[i].uid <= msgs[i - 1].uid) {
			qsort(msgs, n, sizeof(*msgs), uid_cmp);
			return;
		}
	}
}

/*
 * Messages per FETCH command of a listing. libetpan keeps the whole text of
 * one response in memory while it parses it (about 800 bytes a message), so
 * a large folder is listed in pieces of this many messages. All pieces are
 * sent at once: the listing still costs one round trip.
 */
#define INDEX_CHUNK 2000

/* Sends FETCH lo:hi (UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE) with the
 * next tag, without flushing. */
static int index_send_chunk(mailimap *session, uint32_t lo, uint32_t hi)
{
	char cmd[96];
	int len;

	len = snprintf(cmd, sizeof(cmd),
		       "FETCH %u:%u (UID FLAGS RFC822.SIZE INTERNALDATE "
		       "ENVELOPE)\r\n",
		       lo, hi);
	if (mailimap_send_current_tag(session) != MAILIMAP_NO_ERROR ||
	    mailstream_write(session->imap_stream, cmd, (size_t)len) != len)
		return MAILIMAP_ERROR_STREAM;
	return MAILIMAP_NO_ERROR;
}

/* The n of a line that ends in a literal's "{n}" CRLF; -1 when the line
 * ends otherwise. */
static int64_t literal_at_end(const MMAPString *buf)
{
	size_t i = buf->len;
	int64_t n = 0, scale = 1;

	if (i < 5 || buf->str[i - 1] != '\n' || buf->str[i - 2] != '\r' ||
	    buf->str[i - 3] != '}')
		return -1;
	for (i -= 4; i > 0 && buf->str[i] >= '0' && buf->str[i] <= '9'; i--) {
		if (scale > UINT32_MAX)
			return -1;
		n += (buf->str[i] - '0') * scale;
		scale *= 10;
	}
	if (buf->str[i] != '{' || scale == 1 || n > UINT32_MAX)
		return -1;
	return n;
}

/*
 * Reads one whole response into the session's buffer, as libetpan's
 * parser would: its first line, then for each literal a line ends with,
 * the literal's bytes and the line after them (*lines counts the lines).
 * What a literal holds is read as it comes, so a size the server makes up
 * costs no memory (the stream bounds what it lets through, tls.c).
 * Returns 0 or -1.
 */
static int read_response(mailimap *session, int *lines)
{
	MMAPString *buf = session->imap_stream_buffer;
	char chunk[16384];
	int64_t left;
	ssize_t got;

	*lines = 1;
	if (mailimap_read_line(session) == NULL)
		return -1;
	while ((left = literal_at_end(buf)) >= 0) {
		(*lines)++;
		while (left > 0) {
			got = mailstream_read(session->imap_stream, chunk,
					      left < (int64_t)sizeof(chunk)
						  ? (size_t)left
						  : sizeof(chunk));
			if (got <= 0 ||
			    mmap_string_append_len(buf, chunk, (size_t)got) ==
				NULL)
				return -1;
			left -= got;
		}
		if (mailstream_read_line_append(session->imap_stream, buf) ==
		    NULL)
			return -1;
	}
	return 0;
}

/*
 * Reads the responses to the command tagged `tag` and its tagged reply:
 * MAILIMAP_NO_ERROR for OK, MAILIMAP_ERROR_FETCH for NO or BAD. The FETCH
 * responses of the usual shape go to acc through mfs_listline, one
 * response at a time; at the first response of another kind (or shape),
 * libetpan's parser takes it, read already, and the rest of the reply,
 * its FETCH responses going to the message handler.
 */
static int index_read_chunk(struct mfs_imap *imap, int tag,
			    struct index_acc *acc)
{
	mailimap *session = imap->session;
	MMAPString *buf = session->imap_stream_buffer;
	struct mfs_store_msg m;
	int ok, r, lines;

	while (!imap->listline_off) {
		if (read_response(session, &lines) != 0)
			return MAILIMAP_ERROR_STREAM;
		r = mfs_listline(buf->str, buf->len, &m);
		if (r == 0 && lines > 1) {
			/* libetpan reads the line after each literal from
			 * the stream, not from what was read ahead */
			imap->listline_off = 1;
			acc->again = 1;
			return MAILIMAP_ERROR_PARSE;
		}
		if (r == 0)
			goto rest;
		if (r < 0)
			acc->nomem = 1;
		else
			index_add(acc, &m);
		index_tell(acc, INDEX_PIECE);
	}
	if (mailimap_read_line(session) == NULL)
		return MAILIMAP_ERROR_STREAM;
rest:
	r = read_tagged_line(session, tag, NULL, &ok);
	if (r != MAILIMAP_NO_ERROR)
		return r;
	return ok ? MAILIMAP_NO_ERROR : MAILIMAP_ERROR_FETCH;
}

/*
 * FETCH 1:exists (UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE) of the
 * selected mailbox in pipelined pieces of INDEX_CHUNK messages, in UID
 * order. Sequence numbers cannot shift meanwhile: a server sends no
 * EXPUNGE during a FETCH by sequence number (RFC 3501, 7.4.1). Messages
 * that arrive after the EXAMINE are left for the next listing. A piece
 * refused leaves the replies of later pieces unread, so the connection is
 * dropped then. Caller holds the lock.
 */
static int index_fetch_all(struct mfs_imap *imap, uint32_t validity,
			   uint32_t exists, struct mfs_store_msg **msgs,
			   size_t *n, int *again, mfs_index_piece_fn piece,
			   void *ctx, struct mfs_idx_out *keep,
			   struct mfs_err *err)
{
	mailimap *session = imap->session;
	struct index_acc acc = {0};
	uint32_t chunks = (exists + INDEX_CHUNK - 1) / INDEX_CHUNK, i;
	int first, last, r = MAILIMAP_NO_ERROR;

	acc.piece = piece;
	acc.ctx = ctx;
	acc.validity = validity;
	acc.keep = keep;

	/* an envelope is about 400 bytes */
	if (imap_compress_for(imap, (uint64_t)exists * 400, err) != MFS_OK)
		return err->code;
	session = imap->session;
	first = session->imap_tag + 1;

	for (i = 0; i < chunks && r == MAILIMAP_NO_ERROR; i++) {
		uint32_t lo = i * INDEX_CHUNK + 1;
		uint32_t hi = exists - lo < INDEX_CHUNK ? exists
							: lo + INDEX_CHUNK - 1;

		r = index_send_chunk(session, lo, hi);
	}
	if (r == MAILIMAP_NO_ERROR &&
	    mailstream_flush(session->imap_stream) == -1)
		r = MAILIMAP_ERROR_STREAM;
	last = session->imap_tag;
	mailimap_set_msg_att_handler(session, index_handler, &acc);
	mailimap_set_progress_callback(session, NULL, index_progress, NULL);
	for (i = 0; i < chunks && r == MAILIMAP_NO_ERROR; i++) {
		r = index_read_chunk(imap, first + (int)i, &acc);
		if (r == MAILIMAP_NO_ERROR)
			index_tell(&acc, 1);
	}
	mailimap_set_msg_att_handler(session, NULL, NULL);
	mailimap_set_progress_callback(session, NULL, NULL, NULL);
	session->imap_tag = last;
	*again = acc.again;
	if (r != MAILIMAP_NO_ERROR) {
		imap_fail(imap, r, "FETCH", MFS_E_PROTO, err);
		if (i < chunks || acc.again) /* replies left unread */
			imap_drop(imap);
		goto free_msgs;
	}
	if (acc.nomem) {
		mfs_err_set(err, MFS_E_NOMEM, "out of memory");
		goto free_msgs;
	}
	sort_by_uid(acc.msgs, acc.n);
	*msgs = acc.msgs;
	*n = acc.n;
	mfs_err_clear(err);
	return MFS_OK;

free_msgs:
	mfs_store_msgs_free(acc.msgs, acc.n);
	return err->code;
}

/* Applies the FETCH responses of a CHANGEDSINCE fetch to a kept listing
 * as libetpan parses them. */
struct flags_acc {
	struct mfs_store_msg *msgs; /* borrowed: the kept listing */
	size_t n;
	uint32_t uidnext; /* of the listing */
	int stray;	  /* a message older than uidnext the listing lacks */
};

static void flags_handler(struct mailimap_msg_att *att, void *ctx)
{
	struct flags_acc *acc = ctx;
	const struct mailimap_msg_att_dynamic *dyn = NULL;
	struct mfs_store_msg key = {0}, *m;
	clistiter *it;

	for (it = clist_begin(att->att_list); it != NULL; it = clist_next(it)) {
		struct mailimap_msg_att_item *item = clist_content(it);

		if (item->att_type == MAILIMAP_MSG_ATT_ITEM_DYNAMIC)
			dyn = item->att_data.att_dyn;
		else if (item->att_type == MAILIMAP_MSG_ATT_ITEM_STATIC &&
			 item->att_data.att_static->att_type ==
			     MAILIMAP_MSG_ATT_UID)
			key.uid = item->att_data.att_static->att_data.att_uid;
	}
	if (key.uid == 0)
		return;
	m = bsearch(&key, acc->msgs, acc->n, sizeof(key), uid_cmp);
	if (m == NULL) {
		/* newer than the listing: arrived after EXAMINE, not ours
		 * to show yet; older: the listing was wrong */
		if (key.uid < acc->uidnext)
			acc->stray = 1;
		return;
	}
	if (dyn != NULL)
		m->flags = flags_from(dyn);
}

/*
 * UID FETCH 1:* (UID FLAGS) (CHANGEDSINCE since) on the selected mailbox,
 * applied to msgs[0..n) (UID order). *stray is set when a message the
 * listing should hold is missing from it. Caller holds the lock.
 */
static int index_fetch_changed(struct mfs_imap *imap, uint64_t since,
			       uint32_t uidnext, struct mfs_store_msg *msgs,
			       size_t n, int *stray, struct mfs_err *err)
{
	struct flags_acc acc = {msgs, n, uidnext, 0};
	struct mailimap_fetch_type *ft;
	struct mailimap_set *set;
	clist *result = NULL;
	int r;

	ft = mailimap_fetch_type_new_fetch_att_list_empty();
	set = mailimap_set_new_interval(1, 0); /* 1:* */
	if (ft == NULL || set == NULL ||
	    mailimap_fetch_type_new_fetch_att_list_add(
		ft, mailimap_fetch_att_new_uid()) != MAILIMAP_NO_ERROR ||
	    mailimap_fetch_type_new_fetch_att_list_add(
		ft, mailimap_fetch_att_new_flags()) != MAILIMAP_NO_ERROR) {
		r = mfs_err_set(err, MFS_E_NOMEM, "out of memory");
		goto free_req;
	}
	mailimap_set_msg_att_handler(imap->session, flags_handler, &acc);
	mailimap_set_progress_callback(imap->session, NULL, index_progress,
				       NULL);
	r = mailimap_uid_fetch_changedsince(imap->session, set, ft, since,
					    &result);
	if (imap->session != NULL) {
		mailimap_set_msg_att_handler(imap->session, NULL, NULL);
		mailimap_set_progress_callback(imap->session, NULL, NULL, NULL);
	}
	if (r != MAILIMAP_NO_ERROR) {
		r = imap_fail(imap, r, "UID FETCH CHANGEDSINCE", MFS_E_PROTO,
			      err);
		goto free_req;
	}
	mailimap_fetch_list_free(result);
	*stray = acc.stray;
	r = MFS_OK;
free_req:
	if (ft != NULL)
		mailimap_fetch_type_free(ft);
	if (set != NULL)
		mailimap_set_free(set);
	return r;
}

/* The state of the mailbox just selected with modseq. */
static void index_state(struct mfs_imap *imap, uint64_t modseq,
			struct mfs_idx_head *now)
{
	const struct mailimap_selection_info *si =
	    imap->session->imap_selection_info;

	memset(now, 0, sizeof(*now));
	now->validity = imap->selected_validity;
	now->uidnext = si != NULL ? si->sel_uidnext : 0;
	now->exists = si != NULL ? si->sel_exists : 0;
	now->modseq = modseq;
}

/*
 * The listing file of mailbox and the key that ties it to this account
 * and mailbox (both malloc'd). Returns -1 without a cache_dir or on ENOMEM.
 */
static int index_file(struct mfs_imap *imap, const char *mailbox, char **path,
		      char **key)
{
	const struct mfs_account *acct = imap->acct;

	if (acct->cache_dir == NULL)
		return -1;
	*path = mfs_idx_path(acct->cache_dir, mailbox);
	if (*path == NULL)
		return -1;
	if (asprintf(key, "imap %s@%s:%d %s", acct->user ? acct->user : "",
		     acct->store.host ? acct->store.host : "", acct->store.port,
		     mailbox) < 0) {
		free(*path);
		*path = NULL;
		return -1;
	}
	return 0;
}

/* Keeps a listing taken in state now; a failure only costs a full listing
 * next time. */
static void index_keep(const char *path, const char *key,
		       const struct mfs_idx_head *now,
		       const struct mfs_store_msg *msgs, size_t n)
{
	struct mfs_err err;

	if (n != now->exists) /* the listing missed a message: not kept */
		return;
	if (mfs_idx_save(path, key, now, msgs, n, &err) != MFS_OK)
		mfs_log_debug("imap: listing not kept: %s", err.msg);
}

enum {
	KEPT_UNUSABLE = 0, /* list in full */
	KEPT_SAME,	   /* served as kept: nothing changed */
	KEPT_FLAGS,	   /* served with the flags changed since */
	KEPT_FAILED,	   /* the connection failed: err is set */
};

/*
 * The listing of the selected mailbox from its file, when the file was
 * taken with the same UIDVALIDITY, UIDNEXT and EXISTS as `now` (then the
 * same messages are there) and a HIGHESTMODSEQ no newer: as kept when the
 * HIGHESTMODSEQ is the same too, else with the flags that changed since
 * fetched. Caller holds the lock.
 */
static int index_kept(struct mfs_imap *imap, const char *path, const char *key,
		      const struct mfs_idx_head *now,
		      struct mfs_store_msg **msgs, size_t *n,
		      struct mfs_err *err)
{
	struct mfs_idx_reader *rd;
	struct mfs_idx_head was;
	struct mfs_err ierr;
	int r, stray = 0;

	if (mfs_idx_open(path, key, &was, &rd, &ierr) != MFS_OK) {
		if (ierr.code != MFS_E_NOENT)
			mfs_log_debug("imap: kept listing unusable: %s",
				      ierr.msg);
		return KEPT_UNUSABLE;
	}
	if (was.validity != now->validity || was.uidnext != now->uidnext ||
	    was.exists != now->exists || was.count != now->exists ||
	    was.modseq == 0 || was.modseq > now->modseq) {
		mfs_idx_close(rd);
		return KEPT_UNUSABLE;
	}
	r = mfs_idx_read(rd, msgs, n, &ierr);
	mfs_idx_close(rd);
	if (r != MFS_OK) {
		mfs_log_debug("imap: kept listing unusable: %s", ierr.msg);
		return KEPT_UNUSABLE;
	}
	if (was.modseq == now->modseq)
		return KEPT_SAME;
	r = index_fetch_changed(imap, was.modseq, now->uidnext, *msgs, *n,
				&stray, err);
	if (r != MFS_OK || stray) {
		mfs_store_msgs_free(*msgs, *n);
		*msgs = NULL;
		*n = 0;
		/* a refused command leaves the connection usable */
		if (r != MFS_OK && imap->session == NULL)
			return KEPT_FAILED;
		return KEPT_UNUSABLE;
	}
	return KEPT_FLAGS;
}

/*
 * The listing of a folder. EXAMINE, with CONDSTORE when the server has it;
 * then, when a listing of this folder is kept in the cache_dir and the
 * folder's state shows that no message came or went, that listing (no
 * other command, or one UID FETCH CHANGEDSINCE for the flags); else one UID
 * FETCH 1:* of everything, kept for next time when the server has
 * CONDSTORE. A kept listing is trusted only when UIDVALIDITY, UIDNEXT and
 * EXISTS are all unchanged: with the same UIDNEXT no message was added,
 * with the same EXISTS then none was expunged either.
 */
static int index_once(struct mfs_imap *imap, const char *mailbox,
		      uint32_t *uidvalidity, struct mfs_store_msg **msgs,
		      size_t *n, int *again, mfs_index_piece_fn piece,
		      void *ctx, struct mfs_err *err)
{
	struct mfs_idx_head now;
	struct mfs_idx_out *keep = NULL;
	struct mfs_err kerr;
	uint64_t modseq = 0;
	char *path = NULL, *key = NULL;
	int kept = KEPT_UNUSABLE;

	pthread_mutex_lock(&imap->lock);
	if (imap_ensure(imap, err) != MFS_OK ||
	    imap_select_modseq(imap, mailbox, 0, 1,
			       (imap->caps & IMAP_CAP_CONDSTORE) ? &modseq
								 : NULL,
			       err) != MFS_OK)
		goto unlock;
	index_state(imap, modseq, &now);
	*uidvalidity = now.validity;
	*msgs = NULL;
	*n = 0;
	/* every listing is kept, for offline mounts (kept_index); without
	 * HIGHESTMODSEQ a flag change cannot be told, so only a listing
	 * kept with one is served online */
	if (now.validity != 0 && index_file(imap, mailbox, &path, &key) != 0)
		path = key = NULL;
	if (now.exists == 0) {
		if (path != NULL)
			index_keep(path, key, &now, NULL, 0);
		mfs_err_clear(err);
		goto free_file;
	}
	if (now.modseq != 0 && now.uidnext != 0 && path != NULL)
		kept = index_kept(imap, path, key, &now, msgs, n, err);
	if (kept == KEPT_FAILED)
		goto free_file;
	if (kept == KEPT_UNUSABLE && piece != NULL && path != NULL &&
	    mfs_idx_out_open(path, key, &now, now.exists, &keep, &kerr) !=
		MFS_OK) {
		mfs_log_debug("imap: listing not kept: %s", kerr.msg);
		keep = NULL;
	}
	if (kept == KEPT_UNUSABLE &&
	    index_fetch_all(imap, now.validity, now.exists, msgs, n, again,
			    piece, ctx, keep, err) != MFS_OK) {
		mfs_idx_out_abort(keep);
		goto free_file;
	}
	if (keep != NULL) {
		/* kept as it came: complete, or not kept */
		if (mfs_idx_out_commit(keep, &kerr) != MFS_OK)
			mfs_log_debug("imap: listing not kept: %s", kerr.msg);
	} else if (kept != KEPT_SAME && path != NULL) {
		index_keep(path, key, &now, *msgs, *n);
	}
	mfs_err_clear(err);
free_file:
	free(path);
	free(key);
unlock:
	pthread_mutex_unlock(&imap->lock);
	return err->code;
}

static int imap_index_pieces(struct mfs_store *st, const char *mailbox,
			     uint32_t *uidvalidity,
			     struct mfs_store_msg **msgs, size_t *n,
			     mfs_index_piece_fn piece, void *ctx,
			     struct mfs_err *err)
{
	struct mfs_imap *imap = st->priv;
	int again = 0;

	if (index_once(imap, mailbox, uidvalidity, msgs, n, &again, piece,
		       ctx, err) == MFS_OK ||
	    !again)
		return err->code;
	/* the listing's own reader read a response ahead that only
	 * libetpan's parser can read, and libetpan cannot take it from
	 * there: the same listing again, by libetpan alone from now on */
	mfs_log_err("%s:%d: a listing response of an unexpected shape; "
		    "listing %s again with the general parser",
		    imap->acct->store.host, imap->acct->store.port, mailbox);
	again = 0;
	return index_once(imap, mailbox, uidvalidity, msgs, n, &again, piece,
			  ctx, err);
}

static int imap_index(struct mfs_store *st, const char *mailbox,
		      uint32_t *uidvalidity, struct mfs_store_msg **msgs,
		      size_t *n, struct mfs_err *err)
{
	return imap_index_pieces(st, mailbox, uidvalidity, msgs, n, NULL,
				 NULL, err);
}

/* The listing of mailbox as last kept, read without the server. */
static int imap_kept_index(struct mfs_store *st, const char *mailbox,
			   uint32_t *uidvalidity, struct mfs_store_msg **msgs,
			   size_t *n, struct mfs_err *err)
{
	struct mfs_imap *imap = st->priv;
	struct mfs_idx_reader *rd;
	struct mfs_idx_head was;
	char *path, *key;
	int r;

	*msgs = NULL;
	*n = 0;
	if (index_file(imap, mailbox, &path, &key) != 0)
		return mfs_err_set(err, MFS_E_NOENT, "%s: no listing kept",
				   mailbox);
	r = mfs_idx_open(path, key, &was, &rd, err);
	if (r == MFS_OK) {
		r = mfs_idx_read(rd, msgs, n, err);
		mfs_idx_close(rd);
	}
	free(path);
	free(key);
	if (r != MFS_OK)
		return r;
	*uidvalidity = was.validity;
	mfs_err_clear(err);
	return MFS_OK;
}

static int write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t w = write(fd, buf, len);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		buf += w;
		len -= (size_t)w;
	}
	return 0;
}

/* The UID of one FETCH response, or 0 when it has none. */
static uint32_t att_uid(const struct mailimap_msg_att *att)
{
	const clistiter *it;

	for (it = clist_begin(att->att_list); it != NULL; it = clist_next(it)) {
		const struct mailimap_msg_att_item *item = clist_content(it);

		if (item->att_type == MAILIMAP_MSG_ATT_ITEM_STATIC &&
		    item->att_data.att_static->att_type == MAILIMAP_MSG_ATT_UID)
			return item->att_data.att_static->att_data.att_uid;
	}
	return 0;
}

/*
 * The first item of a FETCH response for uid among atts (may be NULL) that
 * is the static item `type` (MAILIMAP_MSG_ATT_BODY_SECTION, ...), or the
 * dynamic one (FLAGS) when type is -1. NULL when there is none.
 */
static const struct mailimap_msg_att_item *uid_item(const clist *atts,
						    uint32_t uid, int type)
{
	const clistiter *it, *jt;

	if (atts == NULL)
		return NULL;
	for (it = clist_begin(atts); it != NULL; it = clist_next(it)) {
		const struct mailimap_msg_att *att = clist_content(it);

		if (att_uid(att) != uid)
			continue;
		for (jt = clist_begin(att->att_list); jt != NULL;
		     jt = clist_next(jt)) {
			const struct mailimap_msg_att_item *item =
			    clist_content(jt);

			if (type == -1 &&
			    item->att_type == MAILIMAP_MSG_ATT_ITEM_DYNAMIC)
				return item;
			if (type != -1 &&
			    item->att_type == MAILIMAP_MSG_ATT_ITEM_STATIC &&
			    item->att_data.att_static->att_type == type)
				return item;
		}
	}
	return NULL;
}

/* Streams a BODY[] literal to a file as libetpan reads it, so that a
 * message of any size (or a server that claims a huge literal) never sits
 * in memory. */
struct body_ctx {
	int fd;
	size_t len;
	int failed; /* errno of a failed write */
};

static bool body_sink(int type, struct mailimap_msg_att_body_section *section,
		      const char *bytes, size_t length, void *ctx)
{
	struct body_ctx *b = ctx;

	(void)section;
	if (type != MAILIMAP_MSG_ATT_BODY_SECTION)
		return true;
	if (write_all(b->fd, bytes, length) != 0) {
		b->failed = errno ? errno : EIO;
		return false;
	}
	b->len += length;
	return true;
}

/* Selects mailbox for reading about `bytes` (imap_compress_for()) and
 * checks that its numbering is still uidvalidity. Caller holds the lock. */
static int imap_reading(struct mfs_imap *imap, const char *mailbox,
			uint32_t uidvalidity, uint64_t bytes,
			struct mfs_err *err)
{
	if (imap_ensure(imap, err) != MFS_OK ||
	    imap_compress_for(imap, bytes, err) != MFS_OK ||
	    imap_examine(imap, mailbox, 0, err) != MFS_OK)
		return err->code;
	/* This connection may have selected the folder before it was made
	 * again (another connection lists it): ask once more before saying
	 * the message is gone. */
	if (imap->selected_validity != uidvalidity &&
	    imap_examine(imap, mailbox, 1, err) != MFS_OK)
		return err->code;
	if (imap->selected_validity != uidvalidity)
		return mfs_err_set(err, MFS_E_NOENT,
				   "%s: UIDVALIDITY changed, the message is "
				   "gone",
				   mailbox);
	return MFS_OK;
}

/* A fetch request for one message: UID plus the given items, each sent as
 * written ("BODY.PEEK[2.MIME]"). NULL on ENOMEM. */
static struct mailimap_fetch_type *fetch_items(const char *const *items,
					       size_t n)
{
	struct mailimap_fetch_type *ft =
	    mailimap_fetch_type_new_fetch_att_list_empty();
	size_t i;

	if (ft == NULL)
		return NULL;
	if (mailimap_fetch_type_new_fetch_att_list_add(
		ft, mailimap_fetch_att_new_uid()) != MAILIMAP_NO_ERROR)
		goto fail;
	for (i = 0; i < n; i++) {
		char *kw = strdup(items[i]);
		struct mailimap_fetch_att *att =
		    kw ? mailimap_fetch_att_new_extension(kw) : NULL;

		if (att == NULL) {
			free(kw);
			goto fail;
		}
		if (mailimap_fetch_type_new_fetch_att_list_add(ft, att) !=
		    MAILIMAP_NO_ERROR) {
			mailimap_fetch_att_free(att);
			goto fail;
		}
	}
	return ft;
fail:
	mailimap_fetch_type_free(ft);
	return NULL;
}

static int imap_fetch_section(struct mfs_store *st, const char *mailbox,
			      uint32_t uidvalidity,
			      const struct mfs_store_msg *msg,
			      const char *section, int fd, size_t *len,
			      struct mfs_err *err)
{
	struct mfs_imap *imap = st->priv;
	uint32_t uid = msg->uid;
	struct body_ctx sink = {fd, 0, 0};
	struct mailimap_fetch_type *ft = NULL;
	struct mailimap_set *set = NULL;
	clist *result = NULL;
	char item[96];
	const char *items[1] = {item};
	int r;

	if (strlen(section) > 64 || strspn(section, "0123456789.") !=
					   strlen(section))
		return mfs_err_set(err, MFS_E_INVAL, "bad section '%s'",
				   section);
	snprintf(item, sizeof(item), "BODY.PEEK[%s]", section);
	pthread_mutex_lock(&imap->lock);
	if (imap_reading(imap, mailbox, uidvalidity, msg->size, err) != MFS_OK)
		goto unlock;
	ft = fetch_items(items, 1);
	set = mailimap_set_new_single(uid);
	if (ft == NULL || set == NULL) {
		mfs_err_set(err, MFS_E_NOMEM, "out of memory");
		goto free_req;
	}
	mailimap_set_msg_body_handler(imap->session, body_sink, &sink);
	mfs_stream_body_literals(imap->session->imap_stream, 1);
	r = mailimap_uid_fetch(imap->session, set, ft, &result);
	if (imap->session != NULL) {
		mfs_stream_body_literals(imap->session->imap_stream, 0);
		mailimap_set_msg_body_handler(imap->session, NULL, NULL);
	}
	if (r != MAILIMAP_NO_ERROR) {
		if (sink.failed) {
			imap_drop(imap); /* the reply was cut short */
			mfs_err_set(err, MFS_E_IO,
				    "cannot write message %u: %s", uid,
				    strerror(sink.failed));
		} else {
			imap_fail_no(imap, r, "UID FETCH BODY.PEEK[]",
				     MFS_E_NOENT, err);
		}
		goto free_req;
	}
	if (uid_item(result, uid, MAILIMAP_MSG_ATT_BODY_SECTION) == NULL) {
		mfs_err_set(err, MFS_E_NOENT, "%s: message %u is gone", mailbox,
			    uid);
		goto free_result;
	}
	*len = sink.len;
	mfs_err_clear(err);

free_result:
	mailimap_fetch_list_free(result);
free_req:
	if (ft != NULL)
		mailimap_fetch_type_free(ft);
	if (set != NULL)
		mailimap_set_free(set);
unlock:
	pthread_mutex_unlock(&imap->lock);
	return err->code;
}

static int imap_fetch(struct mfs_store *st, const char *mailbox,
		      uint32_t uidvalidity, const struct mfs_store_msg *msg,
		      int fd, size_t *len, struct mfs_err *err)
{
	return imap_fetch_section(st, mailbox, uidvalidity, msg, "", fd, len,
				  err);
}

/* --- lazy reading: the skeleton of a large message ----------------------- */

/* The section of a BODY[...] reply item as written in the request. */
static int section_name(const struct mailimap_section *sec, char *out,
			size_t len)
{
	const struct mailimap_section_spec *sp = sec ? sec->sec_spec : NULL;
	const struct mailimap_section_text *tx;
	size_t n = 0;
	clistiter *it;
	int k;

	out[0] = '\0';
	if (sp == NULL)
		return 0;
	if (sp->sec_type == MAILIMAP_SECTION_SPEC_SECTION_MSGTEXT) {
		if (sp->sec_data.sec_msgtext == NULL ||
		    sp->sec_data.sec_msgtext->sec_type !=
			MAILIMAP_SECTION_MSGTEXT_HEADER)
			return -1;
		snprintf(out, len, "HEADER");
		return 0;
	}
	for (it = clist_begin(sp->sec_data.sec_part->sec_id); it != NULL;
	     it = clist_next(it)) {
		k = snprintf(out + n, len - n, "%s%u", n ? "." : "",
			     *(uint32_t *)clist_content(it));
		if (k < 0 || (size_t)k >= len - n)
			return -1;
		n += (size_t)k;
	}
	tx = sp->sec_text;
	if (tx == NULL)
		return 0;
	if (tx->sec_type == MAILIMAP_SECTION_TEXT_MIME)
		k = snprintf(out + n, len - n, ".MIME");
	else if (tx->sec_msgtext != NULL &&
		 tx->sec_msgtext->sec_type == MAILIMAP_SECTION_MSGTEXT_HEADER)
		k = snprintf(out + n, len - n, ".HEADER");
	else
		return -1;
	return k < 0 || (size_t)k >= len - n ? -1 : 0;
}

/* Puts the items of a FETCH reply into the plan's items. */
static void skel_fill(struct mfs_skel *sk, const struct mailimap_msg_att *att)
{
	char name[MFS_SKEL_SECTION_MAX + 8];
	const clistiter *it;
	size_t i;

	for (it = clist_begin(att->att_list); it != NULL; it = clist_next(it)) {
		const struct mailimap_msg_att_item *item = clist_content(it);
		const struct mailimap_msg_att_body_section *bs;

		if (item->att_type != MAILIMAP_MSG_ATT_ITEM_STATIC ||
		    item->att_data.att_static->att_type !=
			MAILIMAP_MSG_ATT_BODY_SECTION)
			continue;
		bs = item->att_data.att_static->att_data.att_body_section;
		if (section_name(bs->sec_section, name, sizeof(name)) != 0)
			continue;
		for (i = 0; i < sk->n; i++) {
			struct mfs_skel_item *x = &sk->items[i];

			if (x->kind == MFS_SKEL_SECTION &&
			    strcasecmp(x->section, name) == 0) {
				x->data = bs->sec_body_part;
				x->data_len = bs->sec_length;
				x->got = bs->sec_body_part != NULL ||
					 bs->sec_length == 0;
			}
		}
	}
}

/* The items to ask for: BODY.PEEK[...] of each section. Returns a
 * malloc'd array of n malloc'd strings. */
static char **skel_requests(const struct mfs_skel *sk, size_t *n)
{
	char **v = calloc(sk->n ? sk->n : 1, sizeof(*v));
	size_t i;

	*n = 0;
	if (v == NULL)
		return NULL;
	for (i = 0; i < sk->n; i++) {
		const struct mfs_skel_item *x = &sk->items[i];
		int r = 0;

		if (x->kind != MFS_SKEL_SECTION)
			continue;
		r = asprintf(&v[*n], "BODY.PEEK[%s]", x->section);
		if (r < 0) {
			v[*n] = NULL;
			goto fail;
		}
		(*n)++;
	}
	return v;
fail:
	for (i = 0; i < *n; i++)
		free(v[i]);
	free(v);
	return NULL;
}

/* UID FETCH uid (items) for one message; *result its reply. Caller holds
 * the lock. */
static int fetch_one(struct mfs_imap *imap, uint32_t uid,
		     const char *const *items, size_t n, clist **result,
		     const char *what, struct mfs_err *err)
{
	struct mailimap_fetch_type *ft = fetch_items(items, n);
	struct mailimap_set *set = mailimap_set_new_single(uid);
	int r;

	*result = NULL;
	if (ft == NULL || set == NULL) {
		mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	} else {
		r = mailimap_uid_fetch(imap->session, set, ft, result);
		if (r != MAILIMAP_NO_ERROR)
			imap_fail_no(imap, r, what, MFS_E_NOENT, err);
		else
			mfs_err_clear(err);
	}
	if (ft != NULL)
		mailimap_fetch_type_free(ft);
	if (set != NULL)
		mailimap_set_free(set);
	return err->code;
}

/* The FETCH reply for uid among result, or NULL. */
static const struct mailimap_msg_att *att_of(const clist *result, uint32_t uid)
{
	const clistiter *it;

	for (it = clist_begin(result); it != NULL; it = clist_next(it))
		if (att_uid(clist_content(it)) == uid)
			return clist_content(it);
	return NULL;
}

static int imap_skeleton(struct mfs_store *st, const char *mailbox,
			 uint32_t uidvalidity, const struct mfs_store_msg *msg,
			 uint64_t hole_min, int fd, struct mfs_seg **segs,
			 size_t *nsegs, struct mfs_err *err)
{
	static const char *const structure[] = {"BODYSTRUCTURE"};
	struct mfs_imap *imap = st->priv;
	const struct mailimap_msg_att_item *item;
	const struct mailimap_msg_att *att;
	struct mfs_skel sk = {0};
	clist *first = NULL, *second = NULL;
	char **req = NULL;
	size_t nreq = 0, i;

	*segs = NULL;
	*nsegs = 0;
	pthread_mutex_lock(&imap->lock);
	if (imap_reading(imap, mailbox, uidvalidity, 0, err) != MFS_OK)
		goto unlock;
	if (fetch_one(imap, msg->uid, structure, 1, &first,
		      "UID FETCH BODYSTRUCTURE", err) != MFS_OK)
		goto unlock;
	item = uid_item(first, msg->uid, MAILIMAP_MSG_ATT_BODYSTRUCTURE);
	if (item == NULL) {
		mfs_err_set(err, MFS_E_NOENT, "%s: message %u is gone",
			    mailbox, msg->uid);
		goto free_first;
	}
	if (mfs_skel_plan(item->att_data.att_static->att_data.att_bodystructure,
			  hole_min, &sk, err) != MFS_OK || sk.n == 0)
		goto free_first;
	req = skel_requests(&sk, &nreq);
	if (req == NULL) {
		mfs_err_set(err, MFS_E_NOMEM, "out of memory");
		goto free_plan;
	}
	if (fetch_one(imap, msg->uid, (const char *const *)req, nreq, &second,
		      "UID FETCH (sections)", err) != MFS_OK)
		goto free_req;
	att = att_of(second, msg->uid);
	if (att == NULL) {
		mfs_err_set(err, MFS_E_NOENT, "%s: message %u is gone",
			    mailbox, msg->uid);
		goto free_second;
	}
	skel_fill(&sk, att);
	mfs_skel_write(&sk, fd, segs, nsegs, err);
free_second:
	mailimap_fetch_list_free(second);
free_req:
	for (i = 0; i < nreq; i++)
		free(req[i]);
	free(req);
free_plan:
	mfs_skel_free(&sk);
free_first:
	mailimap_fetch_list_free(first);
unlock:
	pthread_mutex_unlock(&imap->lock);
	return err->code;
}

/* --- writes ------------------------------------------------------------ */

/*
 * What a NO reply means, from its response code (RFC 5530) where the server
 * gave one, else `dflt`. A NO is never EINVAL: the user's input was checked
 * before it was sent. For a UID command on a message the listing showed,
 * dflt is MFS_E_NOENT: a server whose UIDs changed under us answers BAD or
 * NO, and the FUSE layer then lists the folder again.
 */
static enum mfs_errcode imap_no_code(struct mfs_imap *imap,
				     enum mfs_errcode dflt)
{
	const struct mailimap_response_info *ri;
	const char *atom;

	if (imap->session == NULL || imap->session->imap_response_info == NULL)
		return dflt;
	ri = imap->session->imap_response_info;
	if (ri->rsp_trycreate)
		return MFS_E_NOENT;
	atom = ri->rsp_atom;
	if (atom == NULL)
		return dflt;
	if (strcasecmp(atom, "ALREADYEXISTS") == 0)
		return MFS_E_EXIST;
	if (strcasecmp(atom, "NONEXISTENT") == 0)
		return MFS_E_NOENT;
	if (strcasecmp(atom, "HASCHILDREN") == 0)
		return MFS_E_NOTEMPTY;
	if (strcasecmp(atom, "CANNOT") == 0 ||
	    strcasecmp(atom, "NOPERM") == 0 || strcasecmp(atom, "INUSE") == 0)
		return MFS_E_ACCESS;
	if (strcasecmp(atom, "OVERQUOTA") == 0)
		return MFS_E_QUOTA;
	if (strcasecmp(atom, "LIMIT") == 0)
		return MFS_E_TOOBIG;
	return dflt;
}

/* imap_fail() for a command whose NO carries a response code. */
static int imap_fail_no(struct mfs_imap *imap, int r, const char *what,
			enum mfs_errcode dflt, struct mfs_err *err)
{
	return imap_fail(imap, r, what, imap_no_code(imap, dflt), err);
}

/* A server mailbox name we can send: modified UTF-7 is printable ASCII. */
static int check_name(const char *name, struct mfs_err *err)
{
	const unsigned char *p = (const unsigned char *)name;

	if (*p == '\0')
		return mfs_err_set(err, MFS_E_INVAL, "empty folder name");
	for (; *p != '\0'; p++)
		if (*p < 0x20 || *p > 0x7e)
			return mfs_err_set(err, MFS_E_INVAL,
					   "folder name \"%s\" is not modified "
					   "UTF-7",
					   name);
	return MFS_OK;
}

static int is_inbox(const char *name)
{
	return strcasecmp(name, "INBOX") == 0;
}

/*
 * Leaves the selected mailbox, expunging nothing: UNSELECT (RFC 3691) where
 * offered, else CLOSE, which expunges nothing from a mailbox selected by
 * EXAMINE; one selected read-write is EXAMINEd first.
 */
static int imap_unselect(struct mfs_imap *imap, struct mfs_err *err)
{
	int unselect = (imap->caps & IMAP_CAP_UNSELECT) != 0, r;
	char *box;

	if (imap->selected == NULL)
		return MFS_OK;
	if (!unselect && imap->selected_rw) {
		box = strdup(imap->selected);
		if (box == NULL)
			return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
		r = imap_examine(imap, box, 1, err);
		free(box);
		if (r != MFS_OK)
			return r;
	}
	free(imap->selected);
	imap->selected = NULL;
	imap->selected_rw = 0;
	r = unselect ? mailimap_custom_command(imap->session, "UNSELECT")
		     : mailimap_close(imap->session);
	if (r != MAILIMAP_NO_ERROR)
		return imap_fail(imap, r, unselect ? "UNSELECT" : "CLOSE",
				 MFS_E_PROTO, err);
	return MFS_OK;
}

/*
 * Leaves the selected mailbox before DELETE or RENAME, which may touch it
 * (Dovecot closes the connection when the selected mailbox is deleted).
 * INBOX is never deleted nor renamed, so it may stay selected.
 */
static int imap_leave(struct mfs_imap *imap, struct mfs_err *err)
{
	if (imap->selected == NULL || is_inbox(imap->selected))
		return MFS_OK;
	return imap_unselect(imap, err);
}

static int imap_create(struct mfs_store *st, const char *folder,
		       struct mfs_err *err)
{
	struct mfs_imap *imap = st->priv;
	int r;

	if (check_name(folder, err) != MFS_OK)
		return err->code;
	pthread_mutex_lock(&imap->lock);
	if (imap_ensure(imap, err) != MFS_OK)
		goto unlock;
	r = mailimap_create(imap->session, folder);
	if (r != MAILIMAP_NO_ERROR) {
		imap_fail_no(imap, r, "CREATE", MFS_E_ACCESS, err);
		goto unlock;
	}
	mfs_err_clear(err);
unlock:
	pthread_mutex_unlock(&imap->lock);
	return err->code;
}

/* The LIST entry of exactly `folder`, or NULL. */
static struct mailimap_mailbox_list *list_find(clist *list, const char *folder)
{
	clistiter *it;

	for (it = clist_begin(list); it != NULL; it = clist_next(it)) {
		struct mailimap_mailbox_list *mb = clist_content(it);

		if (mb->mb_name != NULL && strcmp(mb->mb_name, folder) == 0)
			return mb;
	}
	return NULL;
}

/* MFS_E_NOTEMPTY when folder has subfolders. delim: its delimiter. */
static int check_no_children(struct mfs_imap *imap, const char *folder,
			     char delim, struct mfs_err *err)
{
	clist *list = NULL;
	char *pattern;
	int r, n;

	if (delim == '\0')
		return MFS_OK;
	if (asprintf(&pattern, "%s%c%%", folder, delim) < 0)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	r = mailimap_list(imap->session, "", pattern, &list);
	free(pattern);
	if (r != MAILIMAP_NO_ERROR)
		return imap_fail(imap, r, "LIST", MFS_E_PROTO, err);
	n = clist_count(list);
	mailimap_list_result_free(list);
	if (n > 0)
		return mfs_err_set(err, MFS_E_NOTEMPTY,
				   "%s still holds folders", folder);
	return MFS_OK;
}

/* MFS_E_NOTEMPTY when folder holds messages (STATUS MESSAGES). */
static int check_no_messages(struct mfs_imap *imap, const char *folder,
			     struct mfs_err *err)
{
	struct mailimap_status_att_list *atts;
	struct mailimap_mailbox_data_status *status = NULL;
	clistiter *it;
	uint32_t messages = 0;
	int r;

	atts = mailimap_status_att_list_new_empty();
	if (atts == NULL || mailimap_status_att_list_add(
				atts, MAILIMAP_STATUS_ATT_MESSAGES) != 0) {
		if (atts != NULL)
			mailimap_status_att_list_free(atts);
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	}
	r = mailimap_status(imap->session, folder, atts, &status);
	mailimap_status_att_list_free(atts);
	if (r != MAILIMAP_NO_ERROR)
		return imap_fail_no(imap, r, "STATUS", MFS_E_NOENT, err);
	for (it = status->st_info_list ? clist_begin(status->st_info_list)
				       : NULL;
	     it != NULL; it = clist_next(it)) {
		struct mailimap_status_info *si = clist_content(it);

		if (si->st_att == MAILIMAP_STATUS_ATT_MESSAGES)
			messages = si->st_value;
	}
	mailimap_mailbox_data_status_free(status);
	if (messages > 0)
		return mfs_err_set(err, MFS_E_NOTEMPTY,
				   "%s still holds %u messages", folder,
				   messages);
	return MFS_OK;
}

/*
 * DELETE would take the folder's messages with it, and on some servers
 * its subfolders' too: both are checked first, and refused.
 */
static int imap_remove(struct mfs_store *st, const char *folder,
		       struct mfs_err *err)
{
	struct mfs_imap *imap = st->priv;
	struct mailimap_mailbox_list *mb;
	clist *list = NULL;
	char delim;
	int r, noselect;

	if (check_name(folder, err) != MFS_OK)
		return err->code;
	if (is_inbox(folder))
		return mfs_err_set(err, MFS_E_ACCESS,
				   "INBOX cannot be removed");
	pthread_mutex_lock(&imap->lock);
	if (imap_ensure(imap, err) != MFS_OK)
		goto unlock;
	r = mailimap_list(imap->session, "", folder, &list);
	if (r != MAILIMAP_NO_ERROR) {
		imap_fail(imap, r, "LIST", MFS_E_PROTO, err);
		goto unlock;
	}
	mb = list_find(list, folder);
	if (mb == NULL) {
		mailimap_list_result_free(list);
		mfs_err_set(err, MFS_E_NOENT, "no folder %s", folder);
		goto unlock;
	}
	delim = mb->mb_delimiter;
	noselect = mb->mb_flag != NULL &&
		   mb->mb_flag->mbf_type == MAILIMAP_MBX_LIST_FLAGS_SFLAG &&
		   mb->mb_flag->mbf_sflag == MAILIMAP_MBX_LIST_SFLAG_NOSELECT;
	mailimap_list_result_free(list);
	if (check_no_children(imap, folder, delim, err) != MFS_OK ||
	    (!noselect && check_no_messages(imap, folder, err) != MFS_OK) ||
	    imap_leave(imap, err) != MFS_OK)
		goto unlock;
	r = mailimap_delete(imap->session, folder);
	if (r != MAILIMAP_NO_ERROR) {
		imap_fail_no(imap, r, "DELETE", MFS_E_ACCESS, err);
		goto unlock;
	}
	mfs_err_clear(err);
unlock:
	pthread_mutex_unlock(&imap->lock);
	return err->code;
}

static int imap_rename(struct mfs_store *st, const char *from, const char *to,
		       struct mfs_err *err)
{
	struct mfs_imap *imap = st->priv;
	int r;

	if (check_name(from, err) != MFS_OK || check_name(to, err) != MFS_OK)
		return err->code;
	if (is_inbox(from))
		return mfs_err_set(err, MFS_E_ACCESS,
				   "INBOX cannot be renamed");
	if (is_inbox(to))
		return mfs_err_set(err, MFS_E_EXIST, "INBOX exists");
	pthread_mutex_lock(&imap->lock);
	if (imap_ensure(imap, err) != MFS_OK || imap_leave(imap, err) != MFS_OK)
		goto unlock;
	r = mailimap_rename(imap->session, from, to);
	if (r != MAILIMAP_NO_ERROR) {
		imap_fail_no(imap, r, "RENAME", MFS_E_ACCESS, err);
		goto unlock;
	}
	mfs_err_clear(err);
unlock:
	pthread_mutex_unlock(&imap->lock);
	return err->code;
}

/* --- APPEND, streamed ---------------------------------------------------- */

#define APPEND_CHUNK (64 * 1024)

/*
 * The literal is the file with every bare LF sent as CRLF (IMAP lines end
 * in CRLF; libetpan's own APPEND does the same). Its size must be known
 * before the first byte, so the file is read twice, a chunk at a time.
 * `out` NULL: count only; else send to out. *wire: bytes of the literal.
 * Returns 0, -1 on a local read error (errno), -2 on a stream error.
 */
static int literal_pass(int fd, uint64_t len, char *buf, mailstream *out,
			uint64_t *wire)
{
	static const char cr = '\r';
	uint64_t off = 0;
	char prev = '\0';

	*wire = 0;
	while (off < len) {
		size_t want =
		    len - off < APPEND_CHUNK ? len - off : APPEND_CHUNK;
		ssize_t got = pread(fd, buf, want, (off_t)off);
		size_t i, start = 0;

		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0) {
			if (got == 0)
				errno = EIO; /* the file shrank */
			return -1;
		}
		for (i = 0; i < (size_t)got; i++) {
			if (buf[i] == '\n' && prev != '\r') {
				if (out != NULL &&
				    ((i > start &&
				      mailstream_write(out, buf + start,
						       i - start) < 0) ||
				     mailstream_write(out, &cr, 1) < 0))
					return -2;
				start = i;
				(*wire)++;
			}
			prev = buf[i];
		}
		if (out != NULL && (size_t)got > start &&
		    mailstream_write(out, buf + start, (size_t)got - start) < 0)
			return -2;
		*wire += (uint64_t)got;
		off += (uint64_t)got;
	}
	return 0;
}

/* "(\Seen \Flagged)" for MFS_FLAG_* bits. */
static void flags_text(unsigned flags, char *out, size_t len)
{
	size_t i, pos;

	pos = (size_t)snprintf(out, len, "(");
	for (i = 0; i < MFS_NFLAGS; i++)
		if (flags & (1u << i))
			pos += (size_t)snprintf(out + pos, len - pos, "%s%s",
						pos > 1 ? " " : "",
						mfs_flag_names[i]);
	snprintf(out + pos, len - pos, ")");
}

/* The mailbox as an IMAP quoted string (check_name() passed). */
static char *quoted(const char *s)
{
	char *q = malloc(2 * strlen(s) + 3), *p = q;

	if (q == NULL)
		return NULL;
	*p++ = '"';
	for (; *s != '\0'; s++) {
		if (*s == '"' || *s == '\\')
			*p++ = '\\';
		*p++ = *s;
	}
	*p++ = '"';
	*p = '\0';
	return q;
}

/* ` "16-Nov-2026 09:30:00 +0000"` for date, or "" when date is 0. */
static void date_text(time_t date, char *out, size_t len)
{
	static const char *const months[] = {"Jan", "Feb", "Mar", "Apr",
					     "May", "Jun", "Jul", "Aug",
					     "Sep", "Oct", "Nov", "Dec"};
	struct tm tm;

	out[0] = '\0';
	if (date == 0 || gmtime_r(&date, &tm) == NULL)
		return;
	snprintf(out, len, " \"%02d-%s-%04d %02d:%02d:%02d +0000\"", tm.tm_mday,
		 months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
		 tm.tm_sec);
}

/* The new message's APPENDUID (RFC 4315) from the last reply, if any. */
static void append_uid(struct mfs_imap *imap, uint32_t *validity, uint32_t *uid)
{
	const struct mailimap_response_info *ri =
	    imap->session->imap_response_info;
	clistiter *it;

	*validity = 0;
	*uid = 0;
	if (ri == NULL)
		return;
	for (it = clist_begin(ri->rsp_extension_list); it != NULL;
	     it = clist_next(it)) {
		struct mailimap_extension_data *ext = clist_content(it);
		struct mailimap_uidplus_resp_code_apnd *apnd;

		if (ext->ext_extension != &mailimap_extension_uidplus ||
		    ext->ext_type != MAILIMAP_UIDPLUS_RESP_CODE_APND)
			continue;
		apnd = ext->ext_data;
		if (apnd->uid_set == NULL ||
		    clist_begin(apnd->uid_set->set_list) == NULL)
			continue;
		*validity = apnd->uid_uidvalidity;
		*uid = ((struct mailimap_set_item *)clist_content(
			    clist_begin(apnd->uid_set->set_list)))
			   ->set_first;
		return;
	}
}

/* Reads the tagged reply; MAILIMAP_ERROR_APPEND for NO. */
static int append_reply(struct mfs_imap *imap)
{
	int type, r = parse_tagged(imap->session, &type);

	if (r != MAILIMAP_NO_ERROR)
		return r;
	return type == MAILIMAP_RESP_COND_STATE_OK ? MAILIMAP_NO_ERROR
						   : MAILIMAP_ERROR_APPEND;
}

/*
 * APPEND with a synchronizing literal written from the file a chunk at a
 * time: libetpan's mailimap_append() wants the whole message in memory.
 * The command and the reply go through libetpan's own tag, stream and
 * parser, so the session stays consistent.
 */
static int append_send(struct mfs_imap *imap, const char *folder, int fd,
		       uint64_t len, time_t date, unsigned flags, char *buf,
		       struct mfs_err *err)
{
	mailstream *s = imap->session->imap_stream;
	char ftext[64], dtext[40], *cmd, *mbox;
	int plus = (imap->caps & IMAP_CAP_LITERALPLUS) != 0;
	uint64_t wire, sent;
	const char *line;
	int r;

	if (literal_pass(fd, len, buf, NULL, &wire) != 0)
		return mfs_err_set(err, MFS_E_IO, "cannot read the message: %s",
				   strerror(errno));
	mbox = quoted(folder);
	flags_text(flags, ftext, sizeof(ftext));
	date_text(date, dtext, sizeof(dtext));
	if (mbox == NULL ||
	    asprintf(&cmd, "APPEND %s %s%s {%llu%s}\r\n", mbox, ftext, dtext,
		     (unsigned long long)wire, plus ? "+" : "") < 0) {
		free(mbox);
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	}
	free(mbox);
	r = mailimap_send_current_tag(imap->session);
	/* With LITERAL+ the literal follows at once (one round trip);
	 * otherwise the server's "+" is awaited first. */
	if (r == MAILIMAP_NO_ERROR &&
	    (mailstream_write(s, cmd, strlen(cmd)) < 0 ||
	     (!plus && mailstream_flush(s) < 0)))
		r = MAILIMAP_ERROR_STREAM;
	free(cmd);
	if (r != MAILIMAP_NO_ERROR)
		return imap_fail(imap, r, "APPEND", MFS_E_PROTO, err);
	if (!plus) {
		line = mailimap_read_line(imap->session);
		if (line == NULL)
			return imap_fail(imap, MAILIMAP_ERROR_STREAM, "APPEND",
					 MFS_E_PROTO, err);
		if (line[0] != '+') /* refused before the literal */
			return imap_fail_no(imap, append_reply(imap),
					    "APPEND", MFS_E_ACCESS, err);
	}
	r = literal_pass(fd, len, buf, s, &sent);
	if (r == 0 && sent != wire) {
		errno = EIO; /* the file changed under us */
		r = -1;
	}
	if (r == -1) {
		/* Half a literal cannot be taken back: drop the connection. */
		mfs_err_set(err, MFS_E_IO, "cannot read the message: %s",
			    strerror(errno));
		imap_drop(imap);
		return err->code;
	}
	if (r != 0 || mailstream_write(s, "\r\n", 2) < 0 ||
	    mailstream_flush(s) < 0 ||
	    mailimap_read_line(imap->session) == NULL)
		return imap_fail(imap, MAILIMAP_ERROR_STREAM, "APPEND",
				 MFS_E_PROTO, err);
	r = append_reply(imap);
	if (r != MAILIMAP_NO_ERROR)
		return imap_fail_no(imap, r, "APPEND", MFS_E_ACCESS, err);
	return MFS_OK;
}

static int imap_append(struct mfs_store *st, const char *folder, int fd,
		       uint64_t len, time_t date, unsigned flags,
		       uint32_t *validity, uint32_t *uid, struct mfs_err *err)
{
	struct mfs_imap *imap = st->priv;
	char *buf;

	if (check_name(folder, err) != MFS_OK)
		return err->code;
	buf = malloc(APPEND_CHUNK);
	if (buf == NULL)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	pthread_mutex_lock(&imap->lock);
	if (imap_ensure(imap, err) != MFS_OK)
		goto unlock;
	if (append_send(imap, folder, fd, len, date, flags, buf, err) !=
	    MFS_OK) {
		/* Courier refuses APPEND into the mailbox this connection
		 * has EXAMINEd: leave it, and try once more. */
		if (err->code != MFS_E_ACCESS || imap->session == NULL ||
		    imap->selected == NULL || strcmp(imap->selected, folder) != 0)
			goto unlock;
		mfs_log_debug("imap: APPEND refused into the selected %s: %s; "
			      "once more after leaving it",
			      folder, err->msg);
		if (imap_unselect(imap, err) != MFS_OK ||
		    append_send(imap, folder, fd, len, date, flags, buf,
				err) != MFS_OK)
			goto unlock;
	}
	append_uid(imap, validity, uid);
	mfs_err_clear(err);
unlock:
	pthread_mutex_unlock(&imap->lock);
	free(buf);
	return err->code;
}

/* --- messages ------------------------------------------------------------ */

/* SELECT folder read-write and check that it is still numbered by
 * validity. */
static int imap_select_uid(struct mfs_imap *imap, const char *folder,
			   uint32_t validity, uint32_t uid, struct mfs_err *err)
{
	if (check_name(folder, err) != MFS_OK ||
	    imap_ensure(imap, err) != MFS_OK ||
	    imap_select(imap, folder, 1, 0, err) != MFS_OK)
		return err->code;
	if (imap->selected_validity != validity)
		return mfs_err_set(
		    err, MFS_E_NOENT,
		    "%s: UIDVALIDITY changed, message %u is gone", folder, uid);
	return MFS_OK;
}

/* The flags of uid among FETCH responses. Returns 1 when found. */
static int fetch_flags_of(const clist *atts, uint32_t uid, unsigned *flags)
{
	const struct mailimap_msg_att_item *item = uid_item(atts, uid, -1);

	if (item == NULL)
		return 0;
	*flags = flags_from(item->att_data.att_dyn);
	return 1;
}

/* UID FETCH uid (FLAGS): MFS_E_NOENT when the message is gone. */
static int imap_uid_flags(struct mfs_imap *imap, uint32_t uid, unsigned *flags,
			  struct mfs_err *err)
{
	struct mailimap_fetch_type *ft;
	struct mailimap_set *set;
	clist *result = NULL;
	int r, found;

	ft = mailimap_fetch_type_new_fetch_att_list_empty();
	set = mailimap_set_new_single(uid);
	if (ft == NULL || set == NULL ||
	    mailimap_fetch_type_new_fetch_att_list_add(
		ft, mailimap_fetch_att_new_uid()) != MAILIMAP_NO_ERROR ||
	    mailimap_fetch_type_new_fetch_att_list_add(
		ft, mailimap_fetch_att_new_flags()) != MAILIMAP_NO_ERROR) {
		r = mfs_err_set(err, MFS_E_NOMEM, "out of memory");
		goto free_req;
	}
	r = mailimap_uid_fetch(imap->session, set, ft, &result);
	if (r != MAILIMAP_NO_ERROR) {
		r = imap_fail_no(imap, r, "UID FETCH FLAGS", MFS_E_NOENT,
				 err);
		goto free_req;
	}
	found = fetch_flags_of(result, uid, flags);
	mailimap_fetch_list_free(result);
	r = found ? MFS_OK
		  : mfs_err_set(err, MFS_E_NOENT, "%s: message %u is gone",
				imap->selected, uid);
free_req:
	if (ft != NULL)
		mailimap_fetch_type_free(ft);
	if (set != NULL)
		mailimap_set_free(set);
	return r;
}

/*
 * UID STORE uid with the given flag change (consumed), then the message's
 * flags: from the FETCH the STORE answers with, else (a server that stays
 * silent when nothing changed) from UID FETCH FLAGS, which also tells a
 * message that is gone (MFS_E_NOENT).
 */
static int imap_uid_store(struct mfs_imap *imap, uint32_t uid,
			  struct mailimap_store_att_flags *change,
			  unsigned *flags, struct mfs_err *err)
{
	struct mailimap_set *set = mailimap_set_new_single(uid);
	int r;

	if (set == NULL) {
		mailimap_store_att_flags_free(change);
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	}
	r = mailimap_uid_store(imap->session, set, change);
	mailimap_set_free(set);
	mailimap_store_att_flags_free(change);
	if (r != MAILIMAP_NO_ERROR)
		return imap_fail_no(imap, r, "UID STORE", MFS_E_NOENT, err);
	if (imap->session->imap_response_info != NULL &&
	    fetch_flags_of(imap->session->imap_response_info->rsp_fetch_list,
			   uid, flags))
		return MFS_OK;
	return imap_uid_flags(imap, uid, flags, err);
}

/* The STORE change +FLAGS (\Deleted) (add) or -FLAGS, .SILENT when
 * silent; NULL when out of memory. */
static struct mailimap_store_att_flags *deleted_change(int add, int silent)
{
	struct mailimap_flag_list *fl = mailimap_flag_list_new_empty();
	struct mailimap_flag *deleted = mailimap_flag_new_deleted();
	struct mailimap_store_att_flags *change = NULL;

	if (fl != NULL && deleted != NULL &&
	    mailimap_flag_list_add(fl, deleted) == MAILIMAP_NO_ERROR) {
		deleted = NULL; /* the list owns it */
		if (add)
			change =
			    silent
				? mailimap_store_att_flags_new_add_flags_silent(fl)
				: mailimap_store_att_flags_new_add_flags(fl);
		else
			change = mailimap_store_att_flags_new_remove_flags_silent(
			    fl);
	}
	if (change == NULL) {
		if (deleted != NULL)
			mailimap_flag_free(deleted);
		if (fl != NULL)
			mailimap_flag_list_free(fl);
	}
	return change;
}

/* +FLAGS (\Deleted) on uid. */
static int imap_mark_deleted(struct mfs_imap *imap, uint32_t uid,
			     struct mfs_err *err)
{
	struct mailimap_store_att_flags *change = deleted_change(1, 0);
	unsigned flags;

	if (change == NULL)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	return imap_uid_store(imap, uid, change, &flags, err);
}

/* UID EXPUNGE uid (RFC 4315): other messages marked \Deleted stay. */
static int imap_uid_expunge(struct mfs_imap *imap, uint32_t uid,
			    struct mfs_err *err)
{
	struct mailimap_set *set = mailimap_set_new_single(uid);
	int r;

	if (set == NULL)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	r = mailimap_uid_expunge(imap->session, set);
	mailimap_set_free(set);
	if (r != MAILIMAP_NO_ERROR)
		return imap_fail_no(imap, r, "UID EXPUNGE", MFS_E_NOENT, err);
	return MFS_OK;
}

/* UID STORE set +FLAGS.SILENT (add) or -FLAGS.SILENT (\Deleted). */
static int store_deleted(struct mfs_imap *imap, struct mailimap_set *set,
			 int add, struct mfs_err *err)
{
	struct mailimap_store_att_flags *change = deleted_change(add, 1);
	int r;

	if (change == NULL)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	r = mailimap_uid_store(imap->session, set, change);
	mailimap_store_att_flags_free(change);
	if (r != MAILIMAP_NO_ERROR)
		return imap_fail_no(imap, r, "UID STORE", MFS_E_NOENT, err);
	return MFS_OK;
}

/* The other messages of the selected mailbox that carry \Deleted, into
 * *others (NULL when there are none). */
static int others_deleted(struct mfs_imap *imap, uint32_t uid,
			  struct mailimap_set **others, struct mfs_err *err)
{
	struct mailimap_search_key *key;
	clist *found = NULL;
	clistiter *it;
	int r;

	*others = NULL;
	key = mailimap_search_key_new(MAILIMAP_SEARCH_KEY_DELETED, NULL, NULL,
				      NULL, NULL, NULL, NULL, NULL, NULL,
				      NULL, NULL, NULL, NULL, NULL, NULL, 0,
				      NULL, NULL, NULL, NULL, NULL, NULL, 0,
				      NULL, NULL, NULL);
	if (key == NULL)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	r = mailimap_uid_search(imap->session, NULL, key, &found);
	mailimap_search_key_free(key);
	if (r != MAILIMAP_NO_ERROR)
		return imap_fail(imap, r, "UID SEARCH DELETED", MFS_E_PROTO,
				 err);
	for (it = clist_begin(found); it != NULL; it = clist_next(it)) {
		uint32_t *u = clist_content(it);

		if (*u == uid)
			continue;
		if (*others == NULL)
			*others = mailimap_set_new_empty();
		if (*others == NULL ||
		    mailimap_set_add_single(*others, *u) != MAILIMAP_NO_ERROR) {
			mailimap_search_result_free(found);
			return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
		}
	}
	mailimap_search_result_free(found);
	return MFS_OK;
}

/*
 * Expunges uid, already marked \Deleted, on a server without UIDPLUS, whose
 * EXPUNGE removes every message marked \Deleted: the others that carry it
 * lose it for the EXPUNGE and get it back after. What stays racy (see
 * docs/mailfs.1, SERVERS): a message another client marks \Deleted between
 * the SEARCH and the EXPUNGE goes with ours.
 */
static int expunge_alone(struct mfs_imap *imap, uint32_t uid,
			 struct mfs_err *err)
{
	struct mailimap_set *others = NULL;
	struct mfs_err again;
	int r;

	if (others_deleted(imap, uid, &others, err) != MFS_OK)
		goto out;
	if (others != NULL && store_deleted(imap, others, 0, err) != MFS_OK)
		goto out;
	r = mailimap_expunge(imap->session);
	if (r != MAILIMAP_NO_ERROR)
		imap_fail_no(imap, r, "EXPUNGE", MFS_E_ACCESS, err);
	else
		mfs_err_clear(err);
	if (others != NULL && imap->session != NULL &&
	    store_deleted(imap, others, 1, &again) != MFS_OK) {
		mfs_log_err("%s: other messages lost their \\Deleted flag: %s",
			    imap->selected != NULL ? imap->selected : "?",
			    again.msg);
		if (err->code == MFS_OK)
			*err = again;
	}
out:
	if (others != NULL)
		mailimap_set_free(others);
	return err->code;
}

/* Removes uid, marked \Deleted, and no other message. */
static int expunge_uid(struct mfs_imap *imap, uint32_t uid,
		       struct mfs_err *err)
{
	if (imap->caps & IMAP_CAP_UIDPLUS)
		return imap_uid_expunge(imap, uid, err);
	return expunge_alone(imap, uid, err);
}

static int imap_expunge(struct mfs_store *st, const char *folder,
			uint32_t validity, uint32_t uid, struct mfs_err *err)
{
	struct mfs_imap *imap = st->priv;

	pthread_mutex_lock(&imap->lock);
	if (imap_select_uid(imap, folder, validity, uid, err) != MFS_OK ||
	    imap_mark_deleted(imap, uid, err) != MFS_OK ||
	    expunge_uid(imap, uid, err) != MFS_OK)
		goto unlock;
	mfs_err_clear(err);
unlock:
	pthread_mutex_unlock(&imap->lock);
	return err->code;
}

/* Whether the last reply carried a COPYUID (RFC 4315) code. */
static int got_copyuid(struct mfs_imap *imap)
{
	const struct mailimap_response_info *ri =
	    imap->session->imap_response_info;
	clistiter *it;

	if (ri == NULL)
		return 0;
	for (it = clist_begin(ri->rsp_extension_list); it != NULL;
	     it = clist_next(it)) {
		struct mailimap_extension_data *ext = clist_content(it);

		if (ext->ext_extension == &mailimap_extension_uidplus &&
		    ext->ext_type == MAILIMAP_UIDPLUS_RESP_CODE_COPY)
			return 1;
	}
	return 0;
}

/* UID MOVE (RFC 6851). A UID that no longer exists moves nothing and is
 * still answered OK: then no COPYUID comes (UIDPLUS), nor any EXPUNGE. */
static int move_by_move(struct mfs_imap *imap, uint32_t uid, const char *to,
			struct mfs_err *err)
{
	struct mailimap_set *set = mailimap_set_new_single(uid);
	const struct mailimap_response_info *ri;
	int r, moved;

	if (set == NULL)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	r = mailimap_uid_move(imap->session, set, to);
	mailimap_set_free(set);
	if (r != MAILIMAP_NO_ERROR)
		return imap_fail_no(imap, r, "UID MOVE", MFS_E_NOENT, err);
	ri = imap->session->imap_response_info;
	if (imap->caps & IMAP_CAP_UIDPLUS)
		moved = got_copyuid(imap);
	else
		moved = ri != NULL && clist_count(ri->rsp_expunged) > 0;
	if (!moved)
		return mfs_err_set(err, MFS_E_NOENT, "%s: message %u is gone",
				   imap->selected, uid);
	return MFS_OK;
}

/* UID COPY, then \Deleted and the expunge of that UID only. Without
 * UIDPLUS no COPYUID tells that the message was there to copy: its flags
 * are asked for first. */
static int move_by_copy(struct mfs_imap *imap, uint32_t uid, const char *to,
			struct mfs_err *err)
{
	struct mailimap_set *set;
	unsigned flags;
	int r;

	if (!(imap->caps & IMAP_CAP_UIDPLUS) &&
	    imap_uid_flags(imap, uid, &flags, err) != MFS_OK)
		return err->code;
	set = mailimap_set_new_single(uid);
	if (set == NULL)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	r = mailimap_uid_copy(imap->session, set, to);
	mailimap_set_free(set);
	if (r != MAILIMAP_NO_ERROR)
		return imap_fail_no(imap, r, "UID COPY", MFS_E_NOENT, err);
	if ((imap->caps & IMAP_CAP_UIDPLUS) && !got_copyuid(imap))
		return mfs_err_set(err, MFS_E_NOENT, "%s: message %u is gone",
				   imap->selected, uid);
	if (imap_mark_deleted(imap, uid, err) != MFS_OK)
		return err->code;
	return expunge_uid(imap, uid, err);
}

static int imap_move(struct mfs_store *st, const char *from, uint32_t validity,
		     uint32_t uid, const char *to, struct mfs_err *err)
{
	struct mfs_imap *imap = st->priv;

	if (check_name(to, err) != MFS_OK)
		return err->code;
	pthread_mutex_lock(&imap->lock);
	if (imap_select_uid(imap, from, validity, uid, err) != MFS_OK)
		goto unlock;
	if (imap->caps & IMAP_CAP_MOVE) {
		if (move_by_move(imap, uid, to, err) != MFS_OK)
			goto unlock;
	} else if (move_by_copy(imap, uid, to, err) != MFS_OK) {
		goto unlock;
	}
	mfs_err_clear(err);
unlock:
	pthread_mutex_unlock(&imap->lock);
	return err->code;
}

/* A keyword is an IMAP atom (RFC 3501 flag-keyword). */
static int keyword_ok(const char *s)
{
	if (*s == '\0')
		return 0;
	for (; *s != '\0'; s++)
		if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f ||
		    strchr("(){%*\"\\]", *s) != NULL)
			return 0;
	return 1;
}

/* One flag name as a libetpan flag, or NULL (ENOMEM or invalid: *bad). */
static struct mailimap_flag *flag_new(const char *name, int *bad)
{
	char *kw;
	struct mailimap_flag *f;

	*bad = 0;
	if (strcasecmp(name, "\\Seen") == 0)
		return mailimap_flag_new_seen();
	if (strcasecmp(name, "\\Answered") == 0)
		return mailimap_flag_new_answered();
	if (strcasecmp(name, "\\Flagged") == 0)
		return mailimap_flag_new_flagged();
	if (strcasecmp(name, "\\Deleted") == 0)
		return mailimap_flag_new_deleted();
	if (strcasecmp(name, "\\Draft") == 0)
		return mailimap_flag_new_draft();
	if (!keyword_ok(name)) {
		*bad = 1;
		return NULL;
	}
	kw = strdup(name);
	if (kw == NULL)
		return NULL;
	f = mailimap_flag_new_flag_keyword(kw);
	if (f == NULL)
		free(kw);
	return f;
}

/* The STORE change for how and flags, or NULL with err set. */
static struct mailimap_store_att_flags *
flags_change(char how, const char *const *flags, size_t n, struct mfs_err *err)
{
	struct mailimap_flag_list *fl = mailimap_flag_list_new_empty();
	struct mailimap_store_att_flags *change = NULL;
	size_t i;
	int bad;

	if (fl == NULL)
		goto nomem;
	for (i = 0; i < n; i++) {
		struct mailimap_flag *f = flag_new(flags[i], &bad);

		if (f == NULL && bad) {
			mfs_err_set(err, MFS_E_INVAL, "not a flag: \"%s\"",
				    flags[i]);
			goto free_fl;
		}
		if (f == NULL)
			goto nomem;
		if (mailimap_flag_list_add(fl, f) != MAILIMAP_NO_ERROR) {
			mailimap_flag_free(f);
			goto nomem;
		}
	}
	if (how == '+')
		change = mailimap_store_att_flags_new_add_flags(fl);
	else if (how == '-')
		change = mailimap_store_att_flags_new_remove_flags(fl);
	else if (how == '=')
		change = mailimap_store_att_flags_new_set_flags(fl);
	else {
		mfs_err_set(err, MFS_E_INVAL, "not a flag change: '%c'", how);
		goto free_fl;
	}
	if (change != NULL)
		return change;
nomem:
	mfs_err_set(err, MFS_E_NOMEM, "out of memory");
free_fl:
	if (fl != NULL)
		mailimap_flag_list_free(fl);
	return NULL;
}

static int imap_store_flags(struct mfs_store *st, const char *folder,
			    uint32_t validity, uint32_t uid, char how,
			    const char *const *flags, size_t n, unsigned *now,
			    struct mfs_err *err)
{
	struct mfs_imap *imap = st->priv;
	struct mailimap_store_att_flags *change;

	change = flags_change(how, flags, n, err);
	if (change == NULL)
		return err->code;
	pthread_mutex_lock(&imap->lock);
	if (imap_select_uid(imap, folder, validity, uid, err) != MFS_OK) {
		mailimap_store_att_flags_free(change);
		goto unlock;
	}
	if (imap_uid_store(imap, uid, change, now, err) != MFS_OK)
		goto unlock;
	mfs_err_clear(err);
unlock:
	pthread_mutex_unlock(&imap->lock);
	return err->code;
}

/* Fetch-ahead: literals go to files the caller opens, one per message;
 * the end of each FETCH response names the UID they belong to. */
struct many_ctx {
	int (*open_fn)(void *ctx);
	void (*done_fn)(void *ctx, uint32_t uid, int fd, size_t len);
	void *ctx;
	int fd; /* the message being written, or -1 */
	size_t len;
	int failed; /* errno of a failed write or open */
};

static bool many_body(int type, struct mailimap_msg_att_body_section *section,
		      const char *bytes, size_t length, void *ctx)
{
	struct many_ctx *m = ctx;

	(void)section;
	if (type != MAILIMAP_MSG_ATT_BODY_SECTION)
		return true;
	if (m->fd < 0) {
		m->fd = m->open_fn(m->ctx);
		m->len = 0;
		if (m->fd < 0) {
			m->failed = EIO;
			return false;
		}
	}
	if (write_all(m->fd, bytes, length) != 0) {
		m->failed = errno ? errno : EIO;
		return false;
	}
	m->len += length;
	return true;
}

static void many_att(struct mailimap_msg_att *att, void *ctx)
{
	struct many_ctx *m = ctx;
	uint32_t uid = att_uid(att);

	if (m->fd < 0)
		return; /* no body in this response (flags, or empty) */
	if (uid != 0)
		m->done_fn(m->ctx, uid, m->fd, m->len);
	else
		close(m->fd);
	m->fd = -1;
	m->len = 0;
}

static int imap_fetch_many(struct mfs_store *st, const char *mailbox,
			   uint32_t uidvalidity, const uint32_t *uids,
			   size_t n, int (*open_fn)(void *ctx),
			   void (*done_fn)(void *ctx, uint32_t uid, int fd,
					   size_t len),
			   void *ctx, struct mfs_err *err)
{
	static const char *const whole[] = {"BODY.PEEK[]"};
	struct mfs_imap *imap = st->priv;
	struct many_ctx m = {open_fn, done_fn, ctx, -1, 0, 0};
	struct mailimap_fetch_type *ft = NULL;
	struct mailimap_set *set = NULL;
	clist *result = NULL;
	size_t i, j;
	int r;

	pthread_mutex_lock(&imap->lock);
	if (imap_reading(imap, mailbox, uidvalidity, UINT64_MAX, err) != MFS_OK)
		goto unlock;
	ft = fetch_items(whole, 1);
	set = mailimap_set_new_empty();
	if (ft == NULL || set == NULL) {
		mfs_err_set(err, MFS_E_NOMEM, "out of memory");
		goto free_req;
	}
	for (i = 0; i < n; i = j) {
		/* a run of consecutive UIDs goes as one range "a:b" */
		for (j = i + 1; j < n && uids[j] == uids[j - 1] + 1; j++)
			;
		if (mailimap_set_add_interval(set, uids[i], uids[j - 1]) !=
		    MAILIMAP_NO_ERROR) {
			mfs_err_set(err, MFS_E_NOMEM, "out of memory");
			goto free_req;
		}
	}
	mailimap_set_msg_body_handler(imap->session, many_body, &m);
	mfs_stream_body_literals(imap->session->imap_stream, 1);
	mailimap_set_msg_att_handler(imap->session, many_att, &m);
	mailimap_set_progress_callback(imap->session, NULL, index_progress,
				       NULL);
	r = mailimap_uid_fetch(imap->session, set, ft, &result);
	if (imap->session != NULL) {
		mfs_stream_body_literals(imap->session->imap_stream, 0);
		mailimap_set_msg_body_handler(imap->session, NULL, NULL);
		mailimap_set_msg_att_handler(imap->session, NULL, NULL);
		mailimap_set_progress_callback(imap->session, NULL, NULL,
					       NULL);
	}
	if (m.fd >= 0)
		close(m.fd); /* a response cut short */
	if (r != MAILIMAP_NO_ERROR) {
		if (m.failed) {
			imap_drop(imap);
			mfs_err_set(err, MFS_E_IO, "fetch-ahead: %s",
				    strerror(m.failed));
		} else {
			imap_fail(imap, r, "UID FETCH (ahead)", MFS_E_PROTO,
				  err);
		}
		goto free_req;
	}
	mailimap_fetch_list_free(result);
	mfs_err_clear(err);
free_req:
	if (ft != NULL)
		mailimap_fetch_type_free(ft);
	if (set != NULL)
		mailimap_set_free(set);
unlock:
	pthread_mutex_unlock(&imap->lock);
	return err->code;
}

/* --- fetch-ahead of large messages: skeletons in two bursts -------------- */

static int write_uid_set(mailstream *s, const uint32_t *uids, size_t n);

/* The second burst of skeleton_many goes out before the whole messages of
 * the first are read when it is at most this long: the server may not read
 * commands while it writes a long reply, and this much always fits in the
 * socket buffers between us. A longer one waits for that reply. */
#define SKEL_EARLY_MAX (16 * 1024)

/* One large message of skeleton_many. */
struct skel_job {
	uint32_t uid;
	struct mfs_skel sk; /* planned from its structure; n == 0: none */
	char *items;	    /* owned: " (UID BODY.PEEK[HEADER] ...)\r\n" */
	int tag;	    /* of its sections' fetch, 0 when not sent */
	int planned;	    /* its structure has come */
	int done;	    /* its sections have come */
};

/* Sends "UID FETCH set items" (items with its "\r\n") with the next tag,
 * without flushing. */
static int send_uid_fetch(mailimap *session, const uint32_t *uids, size_t n,
			  const char *items)
{
	mailstream *s = session->imap_stream;
	size_t len = strlen(items);

	if (mailimap_send_current_tag(session) != MAILIMAP_NO_ERROR ||
	    mailstream_write(s, "UID FETCH ", 10) != 10 ||
	    write_uid_set(s, uids, n) != 0 ||
	    mailstream_write(s, items, len) != (ssize_t)len)
		return MAILIMAP_ERROR_STREAM;
	return MAILIMAP_NO_ERROR;
}

/* The items of job's sections fetch: " (UID BODY.PEEK[HEADER] ...)\r\n",
 * malloc'd, or NULL on ENOMEM. */
static char *skel_items(const struct mfs_skel *sk)
{
	size_t nreq = 0, len = 16, i;
	char **req = skel_requests(sk, &nreq), *out = NULL;

	if (req == NULL)
		return NULL;
	for (i = 0; i < nreq; i++)
		len += strlen(req[i]) + 1;
	out = malloc(len);
	if (out != NULL) {
		strcpy(out, " (UID");
		for (i = 0; i < nreq; i++) {
			strcat(out, " ");
			strcat(out, req[i]);
		}
		strcat(out, ")\r\n");
	}
	for (i = 0; i < nreq; i++)
		free(req[i]);
	free(req);
	return out;
}

/* The section bytes of the FETCH response being read. */
struct skm_sec {
	char name[MFS_SKEL_SECTION_MAX + 8];
	char *data; /* owned */
	size_t len, cap;
};

/* A command of skeleton_many whose tagged reply is still to be read. */
enum skm_kind { SKM_STRUCT, SKM_WHOLE, SKM_SECTIONS };
struct skm_cmd {
	int tag;
	enum skm_kind kind;
};

/*
 * The reading of skeleton_many. A server may run pipelined commands at
 * once and mix their FETCH responses (Dovecot does), so every response is
 * taken for what it holds, whichever command it answers: a whole message
 * (BODY[]) is streamed to a file as fetch_many does; a structure plans
 * its message's skeleton; sections are gathered and, at the end of the
 * response, make its skeleton.
 */
struct skm_ctx {
	struct many_ctx m;	    /* the whole messages */
	const struct mfs_many_cb *cb; /* borrowed */
	struct skel_job *jobs;	    /* owned; n, ascending UIDs */
	size_t n;
	uint64_t hole_min;
	uint32_t *again; /* owned: room for n */
	size_t nagain, again_sent;
	struct skm_sec *secs; /* owned: of the response being read */
	size_t nsecs, capsecs, bytes;
	int failed; /* out of memory, or a reply out of bounds */
	/* the structures asked for a later call, kept as plans: */
	struct mfs_imap *imap; /* borrowed */
	const char *mailbox;   /* borrowed */
	uint32_t validity;
	uint32_t *later; /* owned, ascending */
	size_t nlater;
	uint32_t *coming; /* owned, ascending: structures asked for that
			   * have not come */
	size_t ncoming;
	/* the commands whose tagged replies are still to be read, in the
	 * order they went out: q[qhead..qlen) */
	mailimap *session;
	struct skm_cmd *q; /* owned */
	size_t qhead, qlen, qcap;
	int last;      /* the tag of the last command sent */
	int s2_due;    /* sections wait for the next whole messages' reply */
	int send_failed; /* a batch added by cb->more could not be sent */
};

/* Whether uid is among uids[0..n) (ascending). */
static int uid_in(const uint32_t *uids, size_t n, uint32_t uid)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (uids[mid] == uid)
			return 1;
		if (uids[mid] < uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return 0;
}

/* Takes uid out of uids[0..*n) (ascending), where it is. */
static void uid_drop(uint32_t *uids, size_t *n, uint32_t uid)
{
	size_t i;

	for (i = 0; i < *n && uids[i] < uid; i++)
		;
	if (i < *n && uids[i] == uid) {
		memmove(uids + i, uids + i + 1, (*n - i - 1) * sizeof(*uids));
		(*n)--;
	}
}

static struct skel_job *skm_job(struct skm_ctx *c, uint32_t uid)
{
	size_t lo = 0, hi = c->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (c->jobs[mid].uid == uid)
			return &c->jobs[mid];
		if (c->jobs[mid].uid < uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

static bool skm_body(int type, struct mailimap_msg_att_body_section *section,
		     const char *bytes, size_t length, void *ctx)
{
	struct skm_ctx *c = ctx;
	struct skm_sec *sec;
	char name[MFS_SKEL_SECTION_MAX + 8];
	size_t i;

	if (type != MAILIMAP_MSG_ATT_BODY_SECTION)
		return true;
	if (section == NULL || section->sec_section == NULL)
		return many_body(type, section, bytes, length, &c->m);
	if (section_name(section->sec_section, name, sizeof(name)) != 0)
		name[0] = '\0'; /* matches no item */
	sec = c->nsecs > 0 ? &c->secs[c->nsecs - 1] : NULL;
	if (sec == NULL || strcmp(sec->name, name) != 0) {
		for (i = 0; i + 1 < c->nsecs; i++)
			if (strcmp(c->secs[i].name, name) == 0)
				name[0] = '\0'; /* said twice: ignored */
		if (c->nsecs == c->capsecs) {
			size_t cap = c->capsecs ? 2 * c->capsecs : 8;
			struct skm_sec *v =
			    realloc(c->secs, cap * sizeof(*v));

			if (v == NULL) {
				c->failed = ENOMEM;
				return false;
			}
			c->secs = v;
			c->capsecs = cap;
		}
		sec = &c->secs[c->nsecs++];
		memset(sec, 0, sizeof(*sec));
		snprintf(sec->name, sizeof(sec->name), "%s", name);
	}
	/* a skeleton holds at most MFS_SKEL_SMALL_MAX real bytes */
	c->bytes += length;
	if (c->bytes > MFS_SKEL_SMALL_MAX + MFS_LITERAL_MAX) {
		c->failed = EPROTO;
		return false;
	}
	if (sec->len + length > sec->cap) {
		size_t cap = sec->cap ? sec->cap : 4096;
		char *d;

		while (cap < sec->len + length)
			cap *= 2;
		d = realloc(sec->data, cap);
		if (d == NULL) {
			c->failed = ENOMEM;
			return false;
		}
		sec->data = d;
		sec->cap = cap;
	}
	memcpy(sec->data + sec->len, bytes, length);
	sec->len += length;
	return true;
}

static void skm_secs_clear(struct skm_ctx *c)
{
	size_t i;

	for (i = 0; i < c->nsecs; i++)
		free(c->secs[i].data);
	c->nsecs = 0;
	c->bytes = 0;
}

/* Job j's sections have come (c->secs): its skeleton to cb. */
static void skm_skeleton(struct skm_ctx *c, struct skel_job *j)
{
	struct mfs_seg *segs = NULL;
	size_t nsegs = 0, i, k;
	struct mfs_err e;
	int fd;

	for (i = 0; i < j->sk.n; i++) {
		struct mfs_skel_item *x = &j->sk.items[i];

		if (x->kind != MFS_SKEL_SECTION)
			continue;
		x->got = 0;
		for (k = 0; k < c->nsecs; k++) {
			if (strcasecmp(c->secs[k].name, x->section) == 0) {
				x->data = c->secs[k].data;
				x->data_len = c->secs[k].len;
				x->got = 1;
			}
		}
	}
	j->done = 1;
	fd = c->cb->skel_open(c->cb->ctx);
	if (fd < 0)
		return;
	if (mfs_skel_write(&j->sk, fd, &segs, &nsegs, &e) == MFS_OK &&
	    nsegs > 0) {
		c->cb->skel_done(c->cb->ctx, j->uid, fd, segs, nsegs);
		return;
	}
	mfs_log_debug("skeleton of %u: %s", j->uid,
		      nsegs == 0 ? "empty" : e.msg);
	mfs_store_segs_free(segs, nsegs);
	close(fd);
}

static void skm_more(struct skm_ctx *c);

/* The end of one FETCH response: see struct skm_ctx. */
static void skm_att(struct mailimap_msg_att *att, void *ctx)
{
	struct skm_ctx *c = ctx;
	uint32_t uid = att_uid(att);
	struct skel_job *j = uid != 0 ? skm_job(c, uid) : NULL;
	const struct mailimap_msg_att_item *item = NULL;
	const clistiter *it;
	struct mfs_err e;

	many_att(att, &c->m);
	for (it = clist_begin(att->att_list); it != NULL; it = clist_next(it)) {
		const struct mailimap_msg_att_item *x = clist_content(it);

		if (x->att_type == MAILIMAP_MSG_ATT_ITEM_STATIC &&
		    x->att_data.att_static->att_type ==
			MAILIMAP_MSG_ATT_BODYSTRUCTURE)
			item = x;
	}
	if (item != NULL)
		uid_drop(c->coming, &c->ncoming, uid);
	if (j == NULL && item != NULL && uid_in(c->later, c->nlater, uid)) {
		struct mfs_skel sk = {0};

		if (mfs_skel_plan(
			item->att_data.att_static->att_data.att_bodystructure,
			c->hole_min, &sk, &e) != MFS_OK)
			c->failed = ENOMEM;
		else if (sk.n > 0)
			plans_put(c->imap, c->mailbox, c->validity, uid, &sk);
		mfs_skel_free(&sk);
	}
	if (j != NULL && item != NULL && !j->planned) {
		j->planned = 1;
		if (mfs_skel_plan(
			item->att_data.att_static->att_data.att_bodystructure,
			c->hole_min, &j->sk, &e) != MFS_OK)
			c->failed = ENOMEM;
		else if (j->sk.n == 0)
			c->again[c->nagain++] = j->uid;
		else if ((j->items = skel_items(&j->sk)) == NULL)
			c->failed = ENOMEM;
	}
	if (j != NULL && c->nsecs > 0 && j->items != NULL && j->tag != 0 &&
	    !j->done)
		skm_skeleton(c, j);
	skm_secs_clear(c);
	skm_more(c);
}

static int u32_cmp(const void *a, const void *b);

/* Sends "UID FETCH set items" as the next command of c and queues its
 * reply (kind); *tag its tag when tag is not NULL. Keeps the session's
 * tag as it was: a reply may be being read. Does not flush. */
static int skm_send(struct skm_ctx *c, const uint32_t *uids, size_t n,
		    const char *items, enum skm_kind kind, int *tag)
{
	mailimap *session = c->session;
	int reading = session->imap_tag, r;

	if (c->qlen == c->qcap) {
		size_t cap = c->qcap ? 2 * c->qcap : 64;
		struct skm_cmd *q = realloc(c->q, cap * sizeof(*q));

		if (q == NULL) {
			c->failed = ENOMEM;
			return MAILIMAP_ERROR_MEMORY;
		}
		c->q = q;
		c->qcap = cap;
	}
	session->imap_tag = c->last;
	r = send_uid_fetch(session, uids, n, items);
	c->last = session->imap_tag;
	session->imap_tag = reading;
	if (r != MAILIMAP_NO_ERROR)
		return r;
	c->q[c->qlen].tag = c->last;
	c->q[c->qlen++].kind = kind;
	if (tag != NULL)
		*tag = c->last;
	return MAILIMAP_NO_ERROR;
}

/* Sends the sections of every job whose structure is known and whose
 * sections have not gone yet. Does not flush. */
static int skm_send_sections(struct skm_ctx *c)
{
	size_t i;
	int r;

	for (i = 0; i < c->n; i++) {
		if (c->jobs[i].items == NULL || c->jobs[i].tag != 0)
			continue;
		r = skm_send(c, &c->jobs[i].uid, 1, c->jobs[i].items,
			     SKM_SECTIONS, &c->jobs[i].tag);
		if (r != MAILIMAP_NO_ERROR)
			return r;
	}
	return MAILIMAP_NO_ERROR;
}

/* The second burst: the sections of the structures that have come, and
 * the large messages whose structure left nothing out, whole. Early
 * (check_early) only when short (SKEL_EARLY_MAX) or when no reply of
 * whole messages is still to come; else it waits for the next one
 * (s2_due). Flushes what it sent. */
static int skm_second(struct skm_ctx *c, int check_early)
{
	size_t size = 0, i;
	int r = MAILIMAP_NO_ERROR, whole = 0;

	for (i = 0; i < c->n; i++)
		if (c->jobs[i].items != NULL && c->jobs[i].tag == 0)
			size += strlen(c->jobs[i].items) + 32;
	size += (c->nagain - c->again_sent) * 12;
	if (size == 0) {
		c->s2_due = 0;
		return MAILIMAP_NO_ERROR;
	}
	for (i = c->qhead; i < c->qlen; i++)
		whole |= c->q[i].kind == SKM_WHOLE;
	if (check_early && size > SKEL_EARLY_MAX && whole) {
		c->s2_due = 1;
		return MAILIMAP_NO_ERROR;
	}
	r = skm_send_sections(c);
	if (r == MAILIMAP_NO_ERROR && c->nagain > c->again_sent) {
		r = skm_send(c, c->again + c->again_sent,
			     c->nagain - c->again_sent,
			     " (UID BODY.PEEK[])\r\n", SKM_WHOLE, NULL);
		c->again_sent = c->nagain;
	}
	if (r == MAILIMAP_NO_ERROR &&
	    mailstream_flush(c->session->imap_stream) == -1)
		r = MAILIMAP_ERROR_STREAM;
	c->s2_due = 0;
	return r;
}

/* Adds a batch to c: large messages uids[0..n) as skeletons, whole[0..
 * nwhole) whole, and the structures of later[0..nlater) to keep (all
 * ascending). Sends its first burst: the structures not known yet, the
 * sections of the messages whose structure is (before the whole
 * messages: a reader in UID order that comes to a large message finds
 * its skeleton without waiting for every whole message of the batch),
 * then the whole messages. A message c holds already is not asked for
 * again. Does not flush. */
static int skm_add(struct skm_ctx *c, const uint32_t *uids, size_t n,
		   const uint32_t *whole, size_t nwhole,
		   const uint32_t *later, size_t nlater)
{
	struct skel_job *add = calloc(n ? n : 1, sizeof(*add)), *jobs;
	uint32_t *sset = NULL, *v;
	size_t i, k, na = 0, nsset = 0;
	int r = MAILIMAP_NO_ERROR;

	if (add == NULL)
		goto nomem;
	for (i = 0; i < n; i++) {
		if (skm_job(c, uids[i]) != NULL)
			continue; /* in an earlier batch of this call */
		add[na].uid = uids[i];
		if (plans_take(c->imap, c->mailbox, c->validity, uids[i],
			       &add[na].sk)) {
			add[na].planned = 1;
			add[na].items = skel_items(&add[na].sk);
			if (add[na].items == NULL) {
				mfs_skel_free(&add[na].sk);
				goto nomem;
			}
		}
		na++;
	}
	/* the structures to ask for: of the new jobs without a plan whose
	 * structure is not on its way already (an earlier batch of this
	 * call asked for it as later), and of later */
	sset = calloc(na + nlater + 1, sizeof(*sset));
	v = realloc(c->coming, (c->ncoming + na + nlater + 1) * sizeof(*v));
	if (v != NULL)
		c->coming = v;
	if (sset == NULL || v == NULL)
		goto nomem;
	for (i = 0; i < na; i++)
		if (!add[i].planned &&
		    !uid_in(c->coming, c->ncoming, add[i].uid))
			sset[nsset++] = add[i].uid;
	for (i = 0; i < nlater; i++)
		if (!uid_in(c->coming, c->ncoming, later[i]) &&
		    skm_job(c, later[i]) == NULL)
			sset[nsset++] = later[i];
	qsort(sset, nsset, sizeof(*sset), u32_cmp);
	for (i = 0, k = 0; i < nsset; i++)
		if (k == 0 || sset[k - 1] != sset[i])
			sset[k++] = sset[i];
	nsset = k;
	for (i = 0; i < nsset; i++)
		c->coming[c->ncoming++] = sset[i];
	qsort(c->coming, c->ncoming, sizeof(*c->coming), u32_cmp);
	/* the jobs, merged in UID order; again has room for all */
	jobs = realloc(c->jobs, (c->n + na + 1) * sizeof(*jobs));
	if (jobs != NULL)
		c->jobs = jobs;
	v = realloc(c->again, (c->n + na + 1) * sizeof(*v));
	if (v != NULL)
		c->again = v;
	if (jobs == NULL || v == NULL)
		goto nomem;
	for (i = c->n, k = na; k > 0;) {
		if (i > 0 && jobs[i - 1].uid > add[k - 1].uid) {
			jobs[i + k - 1] = jobs[i - 1];
			i--;
		} else {
			jobs[i + k - 1] = add[k - 1];
			k--;
		}
	}
	c->n += na;
	na = 0; /* the jobs own them now */
	/* the structures to keep for a later call: c's and these */
	v = realloc(c->later, (c->nlater + nlater + 1) * sizeof(*v));
	if (v == NULL)
		goto nomem;
	c->later = v;
	for (i = 0, k = c->nlater; i < nlater; i++)
		if (!uid_in(c->later, k, later[i]))
			c->later[c->nlater++] = later[i];
	qsort(c->later, c->nlater, sizeof(*c->later), u32_cmp);

	if (nsset > 0)
		r = skm_send(c, sset, nsset, " (UID BODYSTRUCTURE)\r\n",
			     SKM_STRUCT, NULL);
	if (r == MAILIMAP_NO_ERROR)
		r = skm_send_sections(c);
	if (r == MAILIMAP_NO_ERROR && nwhole > 0)
		r = skm_send(c, whole, nwhole, " (UID BODY.PEEK[])\r\n",
			     SKM_WHOLE, NULL);
	free(sset);
	free(add);
	return r;
nomem:
	for (i = 0; add != NULL && i < na; i++) {
		mfs_skel_free(&add[i].sk);
		free(add[i].items);
	}
	free(add);
	free(sset);
	c->failed = ENOMEM;
	return MAILIMAP_ERROR_MEMORY;
}

/* After each response: the caller's next batch, when it has one now
 * (cb->more), goes out at once on this connection, while the replies
 * before it still come; the server does not wait a round trip between
 * the two batches. */
static void skm_more(struct skm_ctx *c)
{
	struct mfs_many_more nx = {0};
	int r;

	if (c->cb->more == NULL || c->failed || c->send_failed ||
	    !c->cb->more(c->cb->ctx, &nx))
		return;
	r = skm_add(c, nx.uids, nx.n, nx.whole, nx.nwhole, nx.later,
		    nx.nlater);
	if (r == MAILIMAP_NO_ERROR &&
	    mailstream_flush(c->session->imap_stream) == -1)
		r = MAILIMAP_ERROR_STREAM;
	if (r != MAILIMAP_NO_ERROR && !c->failed)
		c->send_failed = 1;
	mfs_many_more_free(&nx);
}

static const char *skm_kind_name(enum skm_kind kind)
{
	return kind == SKM_STRUCT	? "UID FETCH BODYSTRUCTURE"
	       : kind == SKM_SECTIONS ? "UID FETCH (sections)"
				      : "UID FETCH (ahead)";
}

static int imap_skeleton_many(struct mfs_store *st, const char *mailbox,
			      uint32_t uidvalidity, const uint32_t *uids,
			      size_t n, uint64_t hole_min,
			      const uint32_t *whole, size_t nwhole,
			      const uint32_t *later, size_t nlater,
			      const struct mfs_many_cb *cb, struct mfs_err *err)
{
	struct mfs_imap *imap = st->priv;
	struct skm_ctx c = {{cb->open_fn, cb->done_fn, cb->ctx, -1, 0, 0},
			    cb, NULL, 0, hole_min, NULL, 0, 0, NULL, 0, 0, 0, 0,
			    imap, mailbox, uidvalidity, NULL, 0, NULL, 0, NULL,
			    NULL, 0, 0, 0, 0, 0, 0};
	mailimap *session;
	size_t i;
	int ok = 1, r = MAILIMAP_NO_ERROR;
	char refused[MFS_ERRMSG_MAX] = "";

	pthread_mutex_lock(&imap->lock);
	if (imap_reading(imap, mailbox, uidvalidity, UINT64_MAX, err) != MFS_OK)
		goto unlock;
	session = c.session = imap->session;
	c.last = session->imap_tag;
	r = skm_add(&c, uids, n, whole, nwhole, later, nlater);
	if (r == MAILIMAP_ERROR_MEMORY) {
		mfs_err_set(err, MFS_E_NOMEM, "out of memory");
		goto free_all;
	}
	mailimap_set_msg_body_handler(session, skm_body, &c);
	mfs_stream_body_literals(session->imap_stream, 1);
	mailimap_set_msg_att_handler(session, skm_att, &c);
	mailimap_set_progress_callback(session, NULL, index_progress, NULL);
	if (r == MAILIMAP_NO_ERROR &&
	    mailstream_flush(session->imap_stream) == -1)
		r = MAILIMAP_ERROR_STREAM;

	/* the replies in the order of the commands; the second burst when
	 * the structures are in (skm_second), and the batches cb->more adds
	 * meanwhile (skm_more) */
	while (r == MAILIMAP_NO_ERROR && c.qhead < c.qlen) {
		struct skm_cmd k = c.q[c.qhead++];

		r = read_tagged(session, k.tag, NULL, &ok);
		if (r != MAILIMAP_NO_ERROR)
			break;
		if (c.send_failed) {
			r = MAILIMAP_ERROR_STREAM;
			break;
		}
		if (!ok && refused[0] == '\0')
			snprintf(refused, sizeof(refused), "%s: %s",
				 skm_kind_name(k.kind), imap_reply(imap));
		if (k.kind == SKM_STRUCT)
			r = skm_second(&c, 1);
		else if (k.kind == SKM_WHOLE && c.s2_due)
			r = skm_second(&c, 0);
		if (r == MAILIMAP_NO_ERROR && c.qhead == c.qlen)
			r = skm_second(&c, 0); /* what is left, if any */
	}
	if (imap->session != NULL) {
		session->imap_tag = c.last;
		mfs_stream_body_literals(session->imap_stream, 0);
		mailimap_set_msg_body_handler(session, NULL, NULL);
		mailimap_set_msg_att_handler(session, NULL, NULL);
		mailimap_set_progress_callback(session, NULL, NULL, NULL);
	}
	if (c.m.fd >= 0)
		close(c.m.fd); /* a response cut short */
	if (r == MAILIMAP_NO_ERROR && (c.failed || c.m.failed))
		r = MAILIMAP_ERROR_STREAM;
	if (r != MAILIMAP_NO_ERROR) {
		if (c.failed == ENOMEM) {
			imap_drop(imap);
			mfs_err_set(err, MFS_E_NOMEM, "out of memory");
		} else if (c.failed) {
			imap_drop(imap);
			mfs_err_set(err, MFS_E_PROTO,
				    "fetch-ahead: the server sent more than "
				    "a skeleton's sections");
		} else if (c.m.failed) {
			imap_drop(imap);
			mfs_err_set(err, MFS_E_IO, "fetch-ahead: %s",
				    strerror(c.m.failed));
		} else {
			imap_fail(imap, r, "UID FETCH (ahead)", MFS_E_PROTO,
				  err);
			if (imap->session != NULL) /* replies left unread */
				imap_drop(imap);
		}
	} else if (refused[0] != '\0') {
		mfs_err_set(err, MFS_E_PROTO, "%s", refused);
	} else {
		mfs_err_clear(err);
	}
free_all:
	skm_secs_clear(&c);
	free(c.secs);
	for (i = 0; i < c.n; i++) {
		mfs_skel_free(&c.jobs[i].sk);
		free(c.jobs[i].items);
	}
	free(c.jobs);
	free(c.again);
	free(c.later);
	free(c.coming);
	free(c.q);
unlock:
	pthread_mutex_unlock(&imap->lock);
	return err->code;
}

static void imap_tls_info(struct mfs_store *st, char *version, size_t vlen,
			  char *subject, size_t slen, char *issuer, size_t ilen)
{
	struct mfs_imap *imap = st->priv;
	pthread_mutex_lock(&imap->lock);
	if (imap->session != NULL && imap->session->imap_stream != NULL) {
		mfs_stream_tls_info(imap->session->imap_stream, version, vlen,
				    subject, slen, issuer, ilen);
	} else {
		version[0] = subject[0] = issuer[0] = '\0';
	}
	pthread_mutex_unlock(&imap->lock);
}

static void imap_store_free(struct mfs_store *st)
{
	if (st == NULL)
		return;
	imap_free(st->priv);
	free(st);
}

static int imap_watch(struct mfs_store *st, const char *mailbox, int stop_fd,
		      int max_wait, int *changed, struct mfs_err *err);
static int imap_search(struct mfs_store *st, const char *const *folders,
		       size_t n, const struct mfs_query *q,
		       struct mfs_store_hits *hits, struct mfs_err *err);

static const struct mfs_store_ops imap_ops = {
    .connect = imap_connect,
    .list = imap_list,
    .personal = imap_personal,
    .index = imap_index,
    .index_pieces = imap_index_pieces,
    .kept_index = imap_kept_index,
    .fetch = imap_fetch,
    .fetch_many = imap_fetch_many,
    .skeleton = imap_skeleton,
    .skeleton_many = imap_skeleton_many,
    .fetch_section = imap_fetch_section,
    .search = imap_search,
    .create = imap_create,
    .remove = imap_remove,
    .rename = imap_rename,
    .append = imap_append,
    .move = imap_move,
    .expunge = imap_expunge,
    .store_flags = imap_store_flags,
    .watch = imap_watch,
    .tls_info = imap_tls_info,
    .free = imap_store_free,
};

struct mfs_store *mfs_imap_store_new(const struct mfs_account *acct,
				     const char *password)
{
	struct mfs_store *st = calloc(1, sizeof(*st));

	if (st == NULL)
		return NULL;
	st->ops = &imap_ops;
	st->search_text = 1;
	st->priv = imap_new(acct, password);
	if (st->priv == NULL) {
		free(st);
		return NULL;
	}
	return st;
}

/* Writes mailbox as an IMAP quoted string (modified UTF-7 is printable
 * ASCII; backslash and '"' are escaped). Returns 0, or -1 on a write
 * error. */
static int write_quoted(mailstream *s, const char *mailbox)
{
	if (mailstream_write(s, "\"", 1) != 1)
		return -1;
	for (const char *p = mailbox; *p != '\0'; p++) {
		if ((*p == '\\' || *p == '"') &&
		    mailstream_write(s, "\\", 1) != 1)
			return -1;
		if (mailstream_write(s, p, 1) != 1)
			return -1;
	}
	return mailstream_write(s, "\"", 1) == 1 ? 0 : -1;
}

/*
 * EXAMINE mailbox and IDLE sent together, so that setting up the IDLE
 * connection costs one round trip after login, not two. libetpan sends one
 * command at a time, so both are written here and the replies read in
 * order: EXAMINE's with libetpan's parser (it checks the tag, hence
 * imap_tag is set to each command's in turn), then IDLE's "+". On any
 * surprise (EXAMINE refused, IDLE refused, a broken reply) the connection
 * is dropped: the IDLE thread connects again later. Caller holds the lock.
 */
static int examine_and_idle(struct mfs_imap *imap, const char *mailbox,
			    struct mfs_err *err)
{
	mailimap *session = imap->session;
	mailstream *s = session->imap_stream;
	int first = session->imap_tag + 1, r, state, lines;

	free(imap->selected);
	imap->selected = NULL;
	imap->selected_rw = 0;
	if (mailimap_send_current_tag(session) != MAILIMAP_NO_ERROR ||
	    mailstream_write(s, "EXAMINE ", 8) != 8 ||
	    write_quoted(s, mailbox) != 0 ||
	    mailstream_write(s, "\r\n", 2) != 2 ||
	    mailimap_send_current_tag(session) != MAILIMAP_NO_ERROR ||
	    mailstream_write(s, "IDLE\r\n", 6) != 6 ||
	    mailstream_flush(s) == -1)
		return imap_fail(imap, MAILIMAP_ERROR_STREAM, "EXAMINE",
				 MFS_E_PROTO, err);
	session->imap_tag = first; /* EXAMINE's reply */
	if (mailimap_read_line(session) == NULL)
		return imap_fail(imap, MAILIMAP_ERROR_STREAM, "EXAMINE",
				 MFS_E_PROTO, err);
	if (session->imap_selection_info != NULL)
		mailimap_selection_info_free(session->imap_selection_info);
	session->imap_selection_info = mailimap_selection_info_new();
	r = parse_tagged(session, &state);
	session->imap_tag = first + 1;
	if (r != MAILIMAP_NO_ERROR)
		return imap_fail(imap, r, "EXAMINE", MFS_E_PROTO, err);
	if (state != MAILIMAP_RESP_COND_STATE_OK) {
		mfs_err_set(err, MFS_E_NOENT, "EXAMINE %s: %s", mailbox,
			    imap_reply(imap));
		imap_drop(imap); /* IDLE's refusal is left unread */
		return err->code;
	}
	session->imap_state = MAILIMAP_STATE_SELECTED;
	imap->selected = strdup(mailbox);
	if (imap->selected == NULL)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	imap->selected_validity = session->imap_selection_info->sel_uidvalidity;
	/* IDLE's "+", after any untagged data (as mailimap_idle() skips) */
	for (lines = 0; lines < 100; lines++) {
		if (mailimap_read_line(session) == NULL)
			return imap_fail(imap, MAILIMAP_ERROR_STREAM, "IDLE",
					 MFS_E_PROTO, err);
		if (session->imap_stream_buffer->str[0] != '*')
			break;
	}
	if (session->imap_stream_buffer->str[0] != '+') {
		imap_drop(imap);
		return mfs_err_set(err, MFS_E_PROTO, "IDLE refused");
	}
	session->imap_selection_info->sel_has_exists = 0;
	session->imap_selection_info->sel_has_recent = 0;
	session->imap_idle_timestamp = time(NULL);
	return MFS_OK;
}

/* The store's watch (store.h): IDLE on mailbox, on this connection (the
 * driver keeps one for this alone, see mfs_imap_open()); a server without
 * IDLE is polled: after `refresh` seconds the folder is said to have
 * changed, so that it is listed again (with CONDSTORE, one command). */
static int imap_watch(struct mfs_store *st, const char *mailbox, int stop_fd,
		      int max_wait, int *changed, struct mfs_err *err)
{
	struct mfs_imap *imap = st->priv;
	struct pollfd pfd[2];
	int r, n;

	*changed = 0;
	pthread_mutex_lock(&imap->lock);
	imap->watcher = 1; /* the pool keeps this store for watching alone */
	if (imap_ensure(imap, err) != MFS_OK)
		goto unlock;
	if (!mailimap_has_idle(imap->session)) {
		pthread_mutex_unlock(&imap->lock);
		n = imap->acct->refresh > 0 ? imap->acct->refresh : 5;
		return mfs_store_watch_poll(stop_fd,
					    n < max_wait ? n : max_wait,
					    changed);
	}
	if (imap->selected == NULL || strcmp(imap->selected, mailbox) != 0) {
		if (examine_and_idle(imap, mailbox, err) != MFS_OK)
			goto unlock;
	} else if ((r = mailimap_idle(imap->session)) != MAILIMAP_NO_ERROR) {
		imap_fail(imap, r, "IDLE", MFS_E_PROTO, err);
		goto unlock;
	}
	/* Wait for the server to say something, for the caller to stop us,
	 * or for max_wait (servers drop an IDLE after 30 minutes). */
	n = 0;
	/* Bytes already read (by libetpan, OpenSSL or the inflater) would
	 * not wake poll(). */
	if (!mfs_stream_pending(imap->session->imap_stream)) {
		pfd[0].fd = mailimap_idle_get_fd(imap->session);
		pfd[0].events = POLLIN;
		pfd[1].fd = stop_fd;
		pfd[1].events = POLLIN;
		do
			n = poll(pfd, 2, max_wait * 1000);
		while (n < 0 && errno == EINTR);
		if (n > 0 && (pfd[0].revents & (POLLIN | POLLERR | POLLHUP)))
			*changed = 1;
		if (n > 0 && pfd[1].revents != 0 && !*changed) {
			/* stopping: no DONE, no LOGOUT, just hang up, so
			 * that a server that stopped answering cannot hold
			 * up the unmount */
			imap_drop(imap);
			mfs_err_clear(err);
			goto unlock;
		}
	} else {
		*changed = 1;
	}
	r = mailimap_idle_done(imap->session);
	if (r != MAILIMAP_NO_ERROR) {
		imap_fail(imap, r, "IDLE DONE", MFS_E_PROTO, err);
		goto unlock;
	}
	mfs_err_clear(err);
unlock:
	pthread_mutex_unlock(&imap->lock);
	return err->code;
}

/* --- search -------------------------------------------------------------
 *
 * UID SEARCH is written and its replies read here, not by libetpan: it
 * does not know ESEARCH (RFC 4731), whose "RETURN (ALL)" answers 50,000
 * matches with a sequence set of a few hundred bytes. Every folder's
 * EXAMINE and UID SEARCH go in one burst (with LITERAL+, or when the
 * query has no literal; otherwise each literal waits for the server's
 * "+"). EXAMINE replies go through libetpan's parser, which keeps the
 * selection (UIDVALIDITY); the search replies are read line by line.
 */

/* The most UIDs one search may return: an ESEARCH sequence set is
 * expanded, and a server must not make us hold billions of them. */
#define SEARCH_MAX_UIDS (16u * 1024 * 1024)

/* A search's answer as it is read. */
struct search_acc {
	uint32_t *uids; /* owned */
	size_t n, cap;
	int nomem, toomany, bad;
};

static void acc_add(struct search_acc *a, uint32_t lo, uint32_t hi)
{
	uint32_t *nu;
	size_t want, ncap;

	if (lo > hi) {
		uint32_t t = lo;

		lo = hi;
		hi = t;
	}
	if (a->nomem || a->toomany || lo == 0)
		return;
	want = a->n + (size_t)(hi - lo) + 1;
	if (want > SEARCH_MAX_UIDS) {
		a->toomany = 1;
		return;
	}
	if (want > a->cap) {
		ncap = a->cap == 0 ? 64 : a->cap;
		while (ncap < want)
			ncap *= 2;
		nu = realloc(a->uids, ncap * sizeof(*nu));
		if (nu == NULL) {
			a->nomem = 1;
			return;
		}
		a->uids = nu;
		a->cap = ncap;
	}
	for (;;) {
		a->uids[a->n++] = lo;
		if (lo == hi)
			break;
		lo++;
	}
}

/* A number (1 to 2^32 - 1) at *p; 0 and *p past it, or -1. */
static int parse_u32(const char **p, uint32_t *v)
{
	uint64_t n = 0;
	const char *s = *p;

	if (*s < '0' || *s > '9')
		return -1;
	for (; *s >= '0' && *s <= '9'; s++) {
		n = n * 10 + (uint64_t)(*s - '0');
		if (n > UINT32_MAX)
			return -1;
	}
	*p = s;
	*v = (uint32_t)n;
	return 0;
}

/* What follows "* SEARCH": UIDs separated by spaces. */
static void parse_search(const char *p, struct search_acc *a)
{
	uint32_t v;

	while (*p == ' ') {
		p++;
		if (*p == '\0')
			break;
		if (parse_u32(&p, &v) != 0) {
			a->bad = 1;
			return;
		}
		acc_add(a, v, v);
	}
	if (*p != '\0')
		a->bad = 1;
}

/* What follows "* ESEARCH": [(TAG "t")] [UID] {key value}; ALL's
 * sequence set is expanded, other keys are skipped. */
static void parse_esearch(const char *p, struct search_acc *a)
{
	uint32_t lo, hi;

	if (strncmp(p, " (", 2) == 0) {
		p = strchr(p, ')');
		if (p == NULL) {
			a->bad = 1;
			return;
		}
		p++;
	}
	if (strncasecmp(p, " UID", 4) == 0 && (p[4] == ' ' || p[4] == '\0'))
		p += 4;
	while (*p == ' ') {
		p++;
		if (strncasecmp(p, "ALL ", 4) != 0) {
			p += strcspn(p, " "); /* another key */
			if (*p == ' ')
				p += 1 + strcspn(p + 1, " "); /* its value */
			continue;
		}
		p += 4;
		for (;;) {
			if (parse_u32(&p, &lo) != 0) {
				a->bad = 1;
				return;
			}
			hi = lo;
			if (*p == ':' && (p++, parse_u32(&p, &hi) != 0)) {
				a->bad = 1;
				return;
			}
			acc_add(a, lo, hi);
			if (*p != ',')
				break;
			p++;
		}
	}
	if (*p != '\0')
		a->bad = 1;
}

/* How a search command ended. */
struct search_end {
	char state;	/* 'O' OK, 'N' NO, 'B' BAD, '+' go on (a literal) */
	int badcharset; /* NO [BADCHARSET ...] */
	int latin1;	/* ... which lists ISO-8859-1 */
	char text[200]; /* the server's words */
};

/*
 * Reads the responses to the UID SEARCH tagged `tag` up to its tagged
 * reply (or, with plus, a "+" that asks for a literal), the search
 * results into a. Returns libetpan's error for a broken stream or a reply
 * out of order, else MAILIMAP_NO_ERROR.
 */
static int search_read(struct mfs_imap *imap, int tag, int plus,
		       struct search_acc *a, struct search_end *end)
{
	char *line, *p;
	size_t len;
	long got;

	for (;;) {
		line = mailimap_read_line(imap->session);
		if (line == NULL)
			return MAILIMAP_ERROR_STREAM;
		len = strlen(line);
		while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
			line[--len] = '\0';
		if (line[0] == '+' && plus) {
			end->state = '+';
			return MAILIMAP_NO_ERROR;
		}
		if (line[0] == '*' && line[1] == ' ') {
			if (len > 0 && line[len - 1] == '}')
				return MAILIMAP_ERROR_PARSE; /* a literal */
			if (strncasecmp(line + 2, "SEARCH", 6) == 0 &&
			    (line[8] == ' ' || line[8] == '\0'))
				parse_search(line + 8, a);
			else if (strncasecmp(line + 2, "ESEARCH", 7) == 0 &&
				 (line[9] == ' ' || line[9] == '\0'))
				parse_esearch(line + 9, a);
			continue; /* EXISTS, FETCH of flags, ... */
		}
		for (p = line; (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z');
		     p++)
			;
		got = strtol(p, &p, 10);
		if (got != tag || *p != ' ')
			return MAILIMAP_ERROR_PARSE;
		p++;
		if (strncasecmp(p, "OK", 2) == 0)
			end->state = 'O';
		else if (strncasecmp(p, "NO", 2) == 0)
			end->state = 'N';
		else if (strncasecmp(p, "BAD", 3) == 0)
			end->state = 'B';
		else
			return MAILIMAP_ERROR_PARSE;
		p += strcspn(p, " ");
		p += strspn(p, " ");
		snprintf(end->text, sizeof(end->text), "%s", p);
		if (end->state == 'N' && strncasecmp(p, "[BADCHARSET", 11) == 0) {
			char *close = strchr(p, ']');

			end->badcharset = 1;
			if (close != NULL)
				*close = '\0';
			end->latin1 = strcasestr(p, "ISO-8859-1") != NULL;
		}
		return MAILIMAP_NO_ERROR;
	}
}

/* Reads EXAMINE's reply (tag) through libetpan's parser: MAILIMAP_NO_ERROR
 * with *ok and *validity, or libetpan's error. */
static int search_examined(struct mfs_imap *imap, int tag, int *ok,
			   uint32_t *validity)
{
	mailimap *session = imap->session;
	int r, state;

	session->imap_tag = tag;
	if (mailimap_read_line(session) == NULL)
		return MAILIMAP_ERROR_STREAM;
	if (session->imap_selection_info != NULL)
		mailimap_selection_info_free(session->imap_selection_info);
	session->imap_selection_info = mailimap_selection_info_new();
	if (session->imap_selection_info == NULL)
		return MAILIMAP_ERROR_MEMORY;
	r = parse_tagged(session, &state);
	if (r != MAILIMAP_NO_ERROR)
		return r;
	*ok = state == MAILIMAP_RESP_COND_STATE_OK;
	*validity = session->imap_selection_info->sel_uidvalidity;
	if (*ok)
		session->imap_state = MAILIMAP_STATE_SELECTED;
	return MAILIMAP_NO_ERROR;
}

static int u32_cmp(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

/* One folder's part of a search. */
struct search_cmd {
	const char *folder;   /* borrowed */
	int etag, stag;	      /* the tags of its EXAMINE and UID SEARCH */
	size_t sent;	      /* bytes of the keys written so far */
};

/* Writes cmd's EXAMINE and its UID SEARCH: the whole of it, or (sync) up
 * to its first literal. Does not flush. */
static int search_send(struct mfs_imap *imap, struct search_cmd *cmd,
		       const char *head, const struct mfs_query_wire *w,
		       int sync)
{
	mailimap *session = imap->session;
	mailstream *s = session->imap_stream;
	size_t upto = sync && w->nlits > 0 ? w->lits[0] : w->len;

	if (mailimap_send_current_tag(session) != MAILIMAP_NO_ERROR ||
	    mailstream_write(s, "EXAMINE ", 8) != 8 ||
	    write_quoted(s, cmd->folder) != 0 ||
	    mailstream_write(s, "\r\n", 2) != 2)
		return MAILIMAP_ERROR_STREAM;
	cmd->etag = session->imap_tag;
	if (mailimap_send_current_tag(session) != MAILIMAP_NO_ERROR ||
	    mailstream_write(s, head, strlen(head)) != (ssize_t)strlen(head) ||
	    mailstream_write(s, w->buf, upto) != (ssize_t)upto)
		return MAILIMAP_ERROR_STREAM;
	cmd->stag = session->imap_tag;
	cmd->sent = upto;
	return MAILIMAP_NO_ERROR;
}

/*
 * Reads cmd's replies into hits (sync: writing each later literal after
 * the server's "+"). A NO or BAD is the folder's own error in hits->err;
 * *end says how the search ended (for BADCHARSET). Returns libetpan's
 * error when the connection is no longer usable.
 */
static int search_collect(struct mfs_imap *imap, struct search_cmd *cmd,
			  const struct mfs_query_wire *w, int sync,
			  struct mfs_store_hits *hits, struct search_end *end)
{
	mailstream *s = imap->session->imap_stream;
	struct search_acc a = {0};
	size_t k = 1, upto;
	int r, ok = 1;

	memset(end, 0, sizeof(*end));
	r = search_examined(imap, cmd->etag, &ok, &hits->validity);
	if (r != MAILIMAP_NO_ERROR)
		return r;
	if (!ok)
		mfs_err_set(&hits->err, MFS_E_NOENT, "EXAMINE %s: %s",
			    cmd->folder, imap_reply(imap));
	for (;;) {
		r = search_read(imap, cmd->stag, sync && cmd->sent < w->len,
				&a, end);
		if (r != MAILIMAP_NO_ERROR || end->state != '+')
			break;
		upto = k < w->nlits ? w->lits[k++] : w->len;
		if (mailstream_write(s, w->buf + cmd->sent, upto - cmd->sent) !=
			(ssize_t)(upto - cmd->sent) ||
		    mailstream_flush(s) == -1) {
			r = MAILIMAP_ERROR_STREAM;
			break;
		}
		cmd->sent = upto;
	}
	if (r == MAILIMAP_NO_ERROR && ok) {
		if (end->state != 'O' && !end->badcharset)
			mfs_err_set(&hits->err, MFS_E_PROTO,
				    "UID SEARCH in %s: %s", cmd->folder,
				    end->text);
		else if (a.nomem)
			mfs_err_set(&hits->err, MFS_E_NOMEM, "out of memory");
		else if (a.bad || a.toomany)
			mfs_err_set(&hits->err, MFS_E_PROTO,
				    "UID SEARCH in %s: %s", cmd->folder,
				    a.bad ? "a reply we cannot parse"
					  : "too many results");
	}
	if (r == MAILIMAP_NO_ERROR && hits->err.code == MFS_OK &&
	    !end->badcharset) {
		if (a.n > 0)
			qsort(a.uids, a.n, sizeof(*a.uids), u32_cmp);
		hits->uids = a.uids;
		hits->n = a.n;
		return MAILIMAP_NO_ERROR;
	}
	free(a.uids);
	return r;
}

/* Writes uids[0..n) (ascending) as a sequence set: runs as lo:hi. */
static int write_uid_set(mailstream *s, const uint32_t *uids, size_t n)
{
	char buf[32];
	size_t i = 0, j;
	int len;

	while (i < n) {
		for (j = i; j + 1 < n && uids[j + 1] == uids[j] + 1; j++)
			;
		if (j > i)
			len = snprintf(buf, sizeof(buf), "%s%u:%u",
				       i > 0 ? "," : "", uids[i], uids[j]);
		else
			len = snprintf(buf, sizeof(buf), "%s%u",
				       i > 0 ? "," : "", uids[i]);
		if (mailstream_write(s, buf, (size_t)len) != len)
			return -1;
		i = j + 1;
	}
	return 0;
}

/*
 * The listing entries of the matches of each folder that wants them
 * (want_msgs, 1 to MFS_SEARCH_MSGS_MAX matches): EXAMINE and UID FETCH
 * uids (UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE), every folder in one
 * burst, parsed as a listing is. Entries whose EXAMINE shows another
 * UIDVALIDITY are left out. *cur: the folder selected afterwards (*cur_v
 * its UIDVALIDITY), or -1.
 * On a broken connection the entries are left out (the caller lists the
 * folders instead) and the connection dropped. Caller holds the lock.
 */
static void search_entries(struct mfs_imap *imap, const char *const *folders,
			   size_t n, struct mfs_store_hits *hits, long *cur,
			   uint32_t *cur_v)
{
	static const char items[] =
	    " (UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE)\r\n";
	mailimap *session = imap->session;
	mailstream *s = session->imap_stream;
	int *etag = calloc(n, sizeof(*etag)), last, r = MAILIMAP_NO_ERROR;
	int ok;
	uint32_t validity;
	struct mfs_err err;
	size_t i;

	if (etag == NULL)
		return;
	for (i = 0; i < n && r == MAILIMAP_NO_ERROR; i++) {
		if (!hits[i].want_msgs || hits[i].n == 0 ||
		    hits[i].n > MFS_SEARCH_MSGS_MAX ||
		    hits[i].err.code != MFS_OK)
			continue;
		if (mailimap_send_current_tag(session) != MAILIMAP_NO_ERROR ||
		    mailstream_write(s, "EXAMINE ", 8) != 8 ||
		    write_quoted(s, folders[i]) != 0 ||
		    mailstream_write(s, "\r\n", 2) != 2 ||
		    mailimap_send_current_tag(session) != MAILIMAP_NO_ERROR ||
		    mailstream_write(s, "UID FETCH ", 10) != 10 ||
		    write_uid_set(s, hits[i].uids, hits[i].n) != 0 ||
		    mailstream_write(s, items, sizeof(items) - 1) !=
			(ssize_t)sizeof(items) - 1)
			r = MAILIMAP_ERROR_STREAM;
		etag[i] = session->imap_tag - 1;
	}
	if (r == MAILIMAP_NO_ERROR && mailstream_flush(s) == -1)
		r = MAILIMAP_ERROR_STREAM;
	last = session->imap_tag;
	mailimap_set_progress_callback(session, NULL, index_progress, NULL);
	for (i = 0; i < n && r == MAILIMAP_NO_ERROR; i++) {
		struct index_acc acc = {0};

		if (etag[i] == 0)
			continue;
		r = search_examined(imap, etag[i], &ok, &validity);
		if (r != MAILIMAP_NO_ERROR)
			break;
		*cur = ok ? (long)i : -1;
		*cur_v = validity;
		mailimap_set_msg_att_handler(session, index_handler, &acc);
		r = index_read_chunk(imap, etag[i] + 1, &acc);
		mailimap_set_msg_att_handler(session, NULL, NULL);
		if (r == MAILIMAP_ERROR_FETCH) /* refused: list instead */
			r = MAILIMAP_NO_ERROR;
		else if (r == MAILIMAP_NO_ERROR && ok && !acc.nomem &&
			 validity == hits[i].validity) {
			sort_by_uid(acc.msgs, acc.n);
			hits[i].msgs = acc.msgs;
			hits[i].nmsgs = acc.n;
			continue;
		}
		mfs_store_msgs_free(acc.msgs, acc.n);
	}
	mailimap_set_progress_callback(session, NULL, NULL, NULL);
	session->imap_tag = last;
	free(etag);
	if (r != MAILIMAP_NO_ERROR) {
		imap_fail(imap, r, "UID FETCH", MFS_E_PROTO, &err);
		if (imap->session != NULL)
			imap_drop(imap);
		mfs_log_err("%s (listing the folders instead)", err.msg);
		for (i = 0; i < n; i++) {
			mfs_store_msgs_free(hits[i].msgs, hits[i].nmsgs);
			hits[i].msgs = NULL;
			hits[i].nmsgs = 0;
		}
		*cur = -1;
	}
}

/* Sends the searches of folders[0..n) with the keys of w in charset cs
 * and reads their answers. *badcharset (and *latin1) when the server
 * refused the charset. Caller holds the lock. */
static int search_burst(struct mfs_imap *imap, const char *const *folders,
			size_t n, const struct mfs_query_wire *w,
			const char *cs, struct mfs_store_hits *hits,
			int *badcharset, int *latin1, struct mfs_err *err)
{
	mailimap *session = imap->session;
	struct search_cmd *cmds = calloc(n, sizeof(*cmds));
	int sync = w->nlits > 0 && !(imap->caps & IMAP_CAP_LITERALPLUS);
	int esearch, r = MAILIMAP_NO_ERROR, last;
	struct search_end end = {0};
	char head[96];
	size_t i;
	long cur = -1; /* the folder selected as we read, or -1 */
	uint32_t cur_v;

	if (cmds == NULL)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	esearch = session->imap_connection_info != NULL &&
		  caps_have(session->imap_connection_info->imap_capability,
			    "ESEARCH");
	snprintf(head, sizeof(head), "UID SEARCH %s%s%s%s",
		 esearch ? "RETURN (ALL) " : "", cs != NULL ? "CHARSET " : "",
		 cs != NULL ? cs : "", cs != NULL ? " " : "");
	/* EXAMINE even a folder selected already: the server then shows
	 * what arrived since (in the same burst, no round trip more) */
	for (i = 0; i < n; i++)
		cmds[i].folder = folders[i];
	free(imap->selected);
	imap->selected = NULL;
	imap->selected_rw = 0;
	if (sync) {
		/* each literal waits for "+": one folder at a time */
		for (i = 0; i < n && r == MAILIMAP_NO_ERROR; i++) {
			r = search_send(imap, &cmds[i], head, w, 1);
			if (r == MAILIMAP_NO_ERROR &&
			    mailstream_flush(session->imap_stream) == -1)
				r = MAILIMAP_ERROR_STREAM;
			if (r == MAILIMAP_NO_ERROR)
				r = search_collect(imap, &cmds[i], w, 1,
						   &hits[i], &end);
			session->imap_tag = cmds[i].stag;
			if (r == MAILIMAP_NO_ERROR)
				cur = hits[i].err.code == MFS_E_NOENT ? -1
								      : (long)i;
			*badcharset |= end.badcharset;
			*latin1 |= end.latin1;
		}
	} else {
		/* one burst, one round trip */
		for (i = 0; i < n && r == MAILIMAP_NO_ERROR; i++)
			r = search_send(imap, &cmds[i], head, w, 0);
		if (r == MAILIMAP_NO_ERROR &&
		    mailstream_flush(session->imap_stream) == -1)
			r = MAILIMAP_ERROR_STREAM;
		last = session->imap_tag;
		for (i = 0; i < n && r == MAILIMAP_NO_ERROR; i++) {
			r = search_collect(imap, &cmds[i], w, 0, &hits[i],
					   &end);
			if (r == MAILIMAP_NO_ERROR)
				cur = hits[i].err.code == MFS_E_NOENT ? -1
								      : (long)i;
			*badcharset |= end.badcharset;
			*latin1 |= end.latin1;
		}
		session->imap_tag = last;
	}
	if (r != MAILIMAP_NO_ERROR) {
		imap_fail(imap, r, "UID SEARCH", MFS_E_PROTO, err);
		if (imap->session != NULL) /* replies left unread */
			imap_drop(imap);
		free(cmds);
		return err->code;
	}
	cur_v = cur >= 0 ? hits[cur].validity : 0;
	if (!*badcharset)
		search_entries(imap, folders, n, hits, &cur, &cur_v);
	if (imap->session != NULL && cur >= 0) {
		imap->selected = strdup(folders[cur]);
		imap->selected_validity = cur_v;
	}
	free(cmds);
	mfs_err_clear(err);
	return MFS_OK;
}

/* The store's search (store.h). Terms in US-ASCII go without CHARSET;
 * others as UTF-8, and when the server refuses that (BADCHARSET) in
 * ISO-8859-1 if it offers it and the terms fit, else MFS_E_INVAL. */
static int imap_search(struct mfs_store *st, const char *const *folders,
		       size_t n, const struct mfs_query *q,
		       struct mfs_store_hits *hits, struct mfs_err *err)
{
	struct mfs_imap *imap = st->priv;
	enum mfs_query_charset cs = MFS_QUERY_UTF8;
	struct mfs_query_wire w;
	int bad = 0, latin1 = 0;
	size_t i;

	mfs_err_clear(err);
	if (n == 0)
		return MFS_OK;
	pthread_mutex_lock(&imap->lock);
	for (;;) {
		if (imap_ensure(imap, err) != MFS_OK)
			break;
		if (mfs_query_imap(q, cs,
				   (imap->caps & IMAP_CAP_LITERALPLUS) != 0,
				   &w, err) != MFS_OK)
			break;
		bad = latin1 = 0;
		search_burst(imap, folders, n, &w,
			     w.ascii ? NULL
				     : cs == MFS_QUERY_UTF8 ? "UTF-8"
							    : "ISO-8859-1",
			     hits, &bad, &latin1, err);
		mfs_query_wire_free(&w);
		if (err->code != MFS_OK || !bad)
			break;
		mfs_store_hits_free(hits, n);
		for (i = 0; i < n; i++)
			mfs_err_clear(&hits[i].err);
		if (cs != MFS_QUERY_UTF8 || !latin1) {
			mfs_err_set(err, MFS_E_INVAL,
				    "%s:%d cannot search for text in this "
				    "charset (BADCHARSET)",
				    imap->acct->store.host,
				    imap->acct->store.port);
			break;
		}
		mfs_log_info("%s:%d has no UTF-8 search: searching in "
			     "ISO-8859-1",
			     imap->acct->store.host, imap->acct->store.port);
		cs = MFS_QUERY_LATIN1;
	}
	pthread_mutex_unlock(&imap->lock);
	return err->code;
}
