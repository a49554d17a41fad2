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
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libetpan/libetpan.h>

#include "log.h"
#include "names.h"
#include "tls.h"

struct mfs_imap {
	pthread_mutex_t lock;
	const struct mfs_account *acct; /* borrowed */
	const char *password;		/* borrowed */
	mailimap *session;		/* owned; NULL while disconnected */
	char *selected;			/* owned: mailbox under EXAMINE, or NULL */
	uint32_t selected_validity;
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
}

static void imap_free(struct mfs_imap *imap)
{
	if (imap == NULL)
		return;
	if (imap->session != NULL)
		mailimap_logout(imap->session);
	imap_drop(imap);
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
	int timed_out;

	switch (r) {
	case MAILIMAP_ERROR_STREAM:
	case MAILIMAP_ERROR_CONNECTION_REFUSED:
		timed_out = imap->session != NULL &&
			    imap->session->imap_stream != NULL &&
			    mfs_stream_timed_out(imap->session->imap_stream);
		imap_drop(imap);
		if (timed_out)
			return mfs_err_set(err, MFS_E_TIMEOUT,
					   "%s: %s:%d did not answer within %d s",
					   what, srv->host, srv->port,
					   imap->acct->timeout);
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

/* Asks for CAPABILITY and says whether `name` is among them. */
static int imap_has_cap(struct mfs_imap *imap, const char *name, int *has,
			struct mfs_err *err)
{
	struct mailimap_capability_data *caps = NULL;
	int r = mailimap_capability(imap->session, &caps);

	if (r != MAILIMAP_NO_ERROR)
		return imap_fail(imap, r, "CAPABILITY", MFS_E_PROTO, err);
	*has = caps_have(caps, name);
	mailimap_capability_data_free(caps);
	return MFS_OK;
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
	return MFS_OK;
}

static int imap_open(struct mfs_imap *imap, struct mfs_err *err)
{
	const struct mfs_account *acct = imap->acct;
	const struct mfs_server *srv = &acct->store;
	struct mfs_tls_opts tls = {srv->host, acct->ca_file, acct->timeout};
	mailstream *s;
	int fd, r, has;

	fd = mfs_tcp_connect(srv->host, srv->port, acct->timeout, err);
	if (fd < 0)
		return err->code;
	if (srv->tls == MFS_TLS_IMPLICIT)
		s = mfs_stream_tls(fd, &tls, err);
	else
		s = mfs_stream_plain(fd, acct->timeout, err);
	if (s == NULL)
		return err->code;

	imap->session = mailimap_new(0, NULL);
	if (imap->session == NULL) {
		mailstream_close(s);
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	}
	mailimap_set_timeout(imap->session, acct->timeout);
	r = mailimap_connect(imap->session, s); /* the session owns s now */
	if (r == MAILIMAP_NO_ERROR_AUTHENTICATED &&
	    srv->tls != MFS_TLS_NONE) {
		/* PREAUTH before TLS would skip STARTTLS: a downgrade. */
		if (srv->tls == MFS_TLS_STARTTLS) {
			imap_drop(imap);
			return mfs_err_set(err, MFS_E_TLS,
					   "%s:%d sent PREAUTH before STARTTLS",
					   srv->host, srv->port);
		}
		return MFS_OK;
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
	r = mailimap_login(imap->session, acct->user, imap->password);
	if (r != MAILIMAP_NO_ERROR) {
		r = imap_fail(imap, r, "login", MFS_E_AUTH, err);
		if (r == MFS_E_AUTH)
			mfs_err_set(err, MFS_E_AUTH,
				    "login as %s at %s:%d refused: %s",
				    acct->user, srv->host, srv->port,
				    imap_reply(imap));
		imap_drop(imap);
		return r;
	}
	mfs_log_debug("imap: logged in to %s:%d as %s", srv->host, srv->port,
		      acct->user);
	return MFS_OK;
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
	r = mailimap_list(imap->session, "", "*", &list);
	if (r != MAILIMAP_NO_ERROR) {
		imap_fail(imap, r, "LIST", MFS_E_PROTO, err);
		goto unlock;
	}
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

/* EXAMINE mailbox unless it is already the selected one (or `force`). */
static int imap_examine(struct mfs_imap *imap, const char *mailbox, int force,
			struct mfs_err *err)
{
	int r;

	if (!force && imap->selected != NULL &&
	    strcmp(imap->selected, mailbox) == 0)
		return MFS_OK;
	free(imap->selected);
	imap->selected = NULL;
	r = mailimap_examine(imap->session, mailbox);
	if (r != MAILIMAP_NO_ERROR)
		return imap_fail(imap, r, "EXAMINE", MFS_E_NOENT, err);
	imap->selected = strdup(mailbox);
	if (imap->selected == NULL)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	imap->selected_validity =
		imap->session->imap_selection_info != NULL
			? imap->session->imap_selection_info->sel_uidvalidity
			: 0;
	return MFS_OK;
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

/* The sender as one line: decoded display name, else mailbox@host. */
static char *envelope_from(const struct mailimap_envelope *env)
{
	struct mailimap_address *a;
	char *s;

	if (env == NULL || env->env_from == NULL ||
	    env->env_from->frm_list == NULL ||
	    clist_begin(env->env_from->frm_list) == NULL)
		return strdup("");
	a = clist_content(clist_begin(env->env_from->frm_list));
	if (a->ad_personal_name != NULL && a->ad_personal_name[0] != '\0')
		return mfs_hdr_decode(a->ad_personal_name);
	if (asprintf(&s, "%s@%s", a->ad_mailbox_name ? a->ad_mailbox_name : "",
		     a->ad_host_name ? a->ad_host_name : "") < 0)
		return NULL;
	return s;
}

static unsigned flags_from(const struct mailimap_msg_att_dynamic *dyn)
{
	unsigned flags = 0;
	clistiter *it;

	if (dyn == NULL || dyn->att_list == NULL)
		return 0;
	for (it = clist_begin(dyn->att_list); it != NULL;
	     it = clist_next(it)) {
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
	time_t internal = 0;
	clistiter *it;

	memset(m, 0, sizeof(*m));
	for (it = clist_begin(att->att_list); it != NULL;
	     it = clist_next(it)) {
		struct mailimap_msg_att_item *item = clist_content(it);
		struct mailimap_msg_att_static *st;

		if (item->att_type == MAILIMAP_MSG_ATT_ITEM_DYNAMIC) {
			m->flags = flags_from(item->att_data.att_dyn);
			continue;
		}
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
	m->date = (time_t)-1;
	if (env != NULL && env->env_date != NULL)
		m->date = mfs_parse_date(env->env_date);
	if (m->date == (time_t)-1)
		m->date = internal;
	m->from = envelope_from(env);
	m->subject = mfs_hdr_decode(env != NULL && env->env_subject != NULL
					    ? env->env_subject
					    : "");
	if (m->from == NULL || m->subject == NULL) {
		free(m->from);
		free(m->subject);
		return -1;
	}
	return 0;
}

static struct mailimap_fetch_type *index_fetch_type(void)
{
	struct mailimap_fetch_type *ft;

	ft = mailimap_fetch_type_new_fetch_att_list_empty();
	if (ft == NULL)
		return NULL;
	if (mailimap_fetch_type_new_fetch_att_list_add(
		    ft, mailimap_fetch_att_new_uid()) != MAILIMAP_NO_ERROR ||
	    mailimap_fetch_type_new_fetch_att_list_add(
		    ft, mailimap_fetch_att_new_flags()) != MAILIMAP_NO_ERROR ||
	    mailimap_fetch_type_new_fetch_att_list_add(
		    ft, mailimap_fetch_att_new_rfc822_size()) !=
		    MAILIMAP_NO_ERROR ||
	    mailimap_fetch_type_new_fetch_att_list_add(
		    ft, mailimap_fetch_att_new_internaldate()) !=
		    MAILIMAP_NO_ERROR ||
	    mailimap_fetch_type_new_fetch_att_list_add(
		    ft, mailimap_fetch_att_new_envelope()) != MAILIMAP_NO_ERROR) {
		mailimap_fetch_type_free(ft);
		return NULL;
	}
	return ft;
}

static int imap_index(struct mfs_store *st, const char *mailbox,
		      uint32_t *uidvalidity, struct mfs_store_msg **msgs,
		      size_t *n, struct mfs_err *err)
{
	struct mfs_imap *imap = st->priv;
	struct mailimap_fetch_type *ft = NULL;
	struct mailimap_set *set = NULL;
	clist *result = NULL;
	clistiter *it;
	struct mfs_store_msg *out = NULL;
	size_t count = 0;
	int r;

	pthread_mutex_lock(&imap->lock);
	if (imap_ensure(imap, err) != MFS_OK ||
	    imap_examine(imap, mailbox, 1, err) != MFS_OK)
		goto unlock;
	*uidvalidity = imap->selected_validity;
	if (imap->session->imap_selection_info->sel_exists == 0) {
		*msgs = NULL;
		*n = 0;
		mfs_err_clear(err);
		pthread_mutex_unlock(&imap->lock);
		return MFS_OK;
	}
	ft = index_fetch_type();
	set = mailimap_set_new_interval(1, 0); /* 1:* */
	if (ft == NULL || set == NULL) {
		mfs_err_set(err, MFS_E_NOMEM, "out of memory");
		goto free_req;
	}
	r = mailimap_uid_fetch(imap->session, set, ft, &result);
	if (r != MAILIMAP_NO_ERROR) {
		imap_fail(imap, r, "UID FETCH", MFS_E_PROTO, err);
		goto free_req;
	}
	out = calloc(clist_count(result) + 1, sizeof(*out));
	if (out == NULL) {
		mfs_err_set(err, MFS_E_NOMEM, "out of memory");
		goto free_result;
	}
	for (it = clist_begin(result); it != NULL; it = clist_next(it)) {
		if (msg_from_att(clist_content(it), &out[count]) != 0) {
			mfs_err_set(err, MFS_E_NOMEM, "out of memory");
			goto free_out;
		}
		if (out[count].uid == 0) { /* a FETCH without UID: ignore */
			free(out[count].from);
			free(out[count].subject);
			continue;
		}
		count++;
	}
	mailimap_fetch_list_free(result);
	mailimap_fetch_type_free(ft);
	mailimap_set_free(set);
	*msgs = out;
	*n = count;
	mfs_err_clear(err);
	pthread_mutex_unlock(&imap->lock);
	return MFS_OK;

free_out:
	mfs_store_msgs_free(out, count);
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

/* The BODY[] literal of a FETCH result, or NULL. */
static const struct mailimap_msg_att_body_section *
body_of(const clist *result, uint32_t uid)
{
	const clistiter *it, *jt;

	for (it = clist_begin(result); it != NULL; it = clist_next(it)) {
		const struct mailimap_msg_att *att = clist_content(it);
		const struct mailimap_msg_att_body_section *body = NULL;
		uint32_t got = 0;

		for (jt = clist_begin(att->att_list); jt != NULL;
		     jt = clist_next(jt)) {
			const struct mailimap_msg_att_item *item =
				clist_content(jt);
			const struct mailimap_msg_att_static *st;

			if (item->att_type != MAILIMAP_MSG_ATT_ITEM_STATIC)
				continue;
			st = item->att_data.att_static;
			if (st->att_type == MAILIMAP_MSG_ATT_UID)
				got = st->att_data.att_uid;
			else if (st->att_type == MAILIMAP_MSG_ATT_BODY_SECTION)
				body = st->att_data.att_body_section;
		}
		if (got == uid && body != NULL)
			return body;
	}
	return NULL;
}

static int imap_fetch(struct mfs_store *st, const char *mailbox,
		      uint32_t uidvalidity, const struct mfs_store_msg *msg,
		      int fd, size_t *len, struct mfs_err *err)
{
	struct mfs_imap *imap = st->priv;
	uint32_t uid = msg->uid;
	struct mailimap_fetch_type *ft = NULL;
	struct mailimap_set *set = NULL;
	clist *result = NULL;
	const struct mailimap_msg_att_body_section *body;
	int r;

	pthread_mutex_lock(&imap->lock);
	if (imap_ensure(imap, err) != MFS_OK ||
	    imap_examine(imap, mailbox, 0, err) != MFS_OK)
		goto unlock;
	if (imap->selected_validity != uidvalidity) {
		mfs_err_set(err, MFS_E_NOENT,
			    "%s: UIDVALIDITY changed, message %u is gone",
			    mailbox, uid);
		goto unlock;
	}
	ft = mailimap_fetch_type_new_fetch_att_list_empty();
	set = mailimap_set_new_single(uid);
	if (ft == NULL || set == NULL ||
	    mailimap_fetch_type_new_fetch_att_list_add(
		    ft, mailimap_fetch_att_new_uid()) != MAILIMAP_NO_ERROR ||
	    mailimap_fetch_type_new_fetch_att_list_add(
		    ft, mailimap_fetch_att_new_body_peek_section(
				mailimap_section_new(NULL))) !=
		    MAILIMAP_NO_ERROR) {
		mfs_err_set(err, MFS_E_NOMEM, "out of memory");
		goto free_req;
	}
	r = mailimap_uid_fetch(imap->session, set, ft, &result);
	if (r != MAILIMAP_NO_ERROR) {
		imap_fail(imap, r, "UID FETCH BODY.PEEK[]", MFS_E_PROTO, err);
		goto free_req;
	}
	body = body_of(result, uid);
	if (body == NULL) {
		mfs_err_set(err, MFS_E_NOENT, "%s: message %u is gone",
			    mailbox, uid);
		goto free_result;
	}
	if (body->sec_length > 0 &&
	    write_all(fd, body->sec_body_part, body->sec_length) != 0) {
		mfs_err_set(err, MFS_E_IO, "cannot write message %u: %s", uid,
			    strerror(errno));
		goto free_result;
	}
	*len = body->sec_length;
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

static void imap_tls_info(struct mfs_store *st, char *version, size_t vlen,
			  char *subject, size_t slen, char *issuer,
			  size_t ilen)
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

static const struct mfs_store_ops imap_ops = {
	.connect = imap_connect,
	.list = imap_list,
	.index = imap_index,
	.fetch = imap_fetch,
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
	st->priv = imap_new(acct, password);
	if (st->priv == NULL) {
		free(st);
		return NULL;
	}
	return st;
}
