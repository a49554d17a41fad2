/*
 * search.c - the room of the FUSE layer for searching (see fsint.h):
 *
 *   FOLDER/.search/          the queries looked up in this mount (never in
 *                            a listing of FOLDER)
 *   FOLDER/.search/QUERY/    a symbolic link per match, named as its
 *                            message directory, pointing to ../../NAME
 *   MOUNT/.search/QUERY/     every folder: a directory per folder with
 *                            matches, nested as the folder tree, links
 *                            inside pointing back to the messages
 *
 * The query is the name of its directory (query.h); the store's search
 * op does the matching. A QUERY directory is searched again when it is
 * listed after `refresh` seconds (LIST_TTL without one) or after a touch.
 * A match whose message the folder listing does not show yet has that
 * folder listed first.
 */
#include "fsint.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "query.h"

struct mfs_node *search_dir(struct mfs_fs *fs, struct mfs_node *dir)
{
	struct mfs_node *n = mfs_nodes_child(fs->nodes, dir, SEARCH_DIR);

	if (n != NULL)
		return n->kind == MFS_N_SEARCH ? n : NULL;
	n = mfs_nodes_add(fs->nodes, dir, SEARCH_DIR, MFS_N_SEARCH);
	if (n != NULL)
		n->mtime = time(NULL);
	return n;
}

/* Parses name as a query; err says why it is not one, naming it. */
static int query_parse(const char *name, struct mfs_query **q,
		       struct mfs_err *err)
{
	char why[MFS_ERRMSG_MAX];

	if (mfs_query_parse(name, q, err) == MFS_OK)
		return MFS_OK;
	snprintf(why, sizeof(why), "%s", err->msg);
	return mfs_err_set(err, err->code, "search \"%.200s\": %s", name,
			   why);
}

static int query_check(const char *name, struct mfs_err *err)
{
	struct mfs_query *q = NULL;

	if (query_parse(name, &q, err) != MFS_OK)
		return err->code;
	mfs_query_free(q);
	return MFS_OK;
}

static struct mfs_node *query_add(struct mfs_fs *fs, struct mfs_node *dir,
				  const char *name, struct mfs_err *err)
{
	struct mfs_node *n = mfs_nodes_add(fs->nodes, dir, name, MFS_N_QUERY);

	if (n == NULL) {
		mfs_err_set(err, MFS_E_NOMEM, "out of memory");
		return NULL;
	}
	n->mtime = time(NULL);
	return n;
}

struct mfs_node *search_miss(struct mfs_fs *fs, struct mfs_node *dir,
			     const char *name, struct mfs_err *err)
{
	if (query_check(name, err) != MFS_OK)
		return NULL;
	return query_add(fs, dir, name, err);
}

int search_mkdir(struct mfs_fs *fs, struct mfs_node *dir, const char *name,
		 struct mfs_node **made)
{
	struct mfs_err err;

	mfs_err_clear(&err);
	if (mfs_nodes_child(fs->nodes, dir, name) != NULL)
		return EEXIST;
	if (query_check(name, &err) != MFS_OK) {
		mfs_log_err("%s", err.msg);
		return mfs_err_errno(err.code);
	}
	*made = query_add(fs, dir, name, &err);
	return *made != NULL ? 0 : ENOMEM;
}

int search_rmdir(struct mfs_fs *fs, struct mfs_node *n)
{
	if (n->linked)
		mfs_nodes_unlink(fs->nodes, n);
	return 0;
}

/* rm -r .search/QUERY removes the links and folder directories inside
 * before the query: that succeeds and does nothing; the rmdir of the
 * query forgets it all. */
int search_unlink(struct mfs_fs *fs, struct mfs_node *dir, struct mfs_node *n,
		  const char *name)
{
	(void)fs;
	(void)dir;
	(void)name;
	if (n == NULL)
		return ENOENT;
	return n->kind == MFS_N_LINK ? 0 : EISDIR;
}

int search_rmdir_hitdir(struct mfs_fs *fs, struct mfs_node *n)
{
	(void)fs;
	(void)n;
	return 0;
}

/* touch .search/QUERY: search again at the next look. */
int search_setattr(struct mfs_fs *fs, struct mfs_node *n, struct handle *h,
		   const struct stat *attr, int to_set)
{
	(void)fs;
	(void)h;
	(void)attr;
	if (to_set & (FUSE_SET_ATTR_SIZE | FUSE_SET_ATTR_MODE |
		      FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID))
		return EPERM;
	n->listed = 0;
	return 0;
}

char *search_link_target(const struct mfs_node *n)
{
	const struct mfs_node *d;
	size_t ups = 2, len, pos, l;
	char *t;

	len = strlen(n->name);
	for (d = n->parent; d != NULL && d->kind == MFS_N_HITDIR;
	     d = d->parent) {
		ups++;
		len += strlen(d->name) + 1;
	}
	len += 3 * ups;
	t = malloc(len + 1);
	if (t == NULL)
		return NULL;
	t[len] = '\0';
	pos = len - strlen(n->name);
	memcpy(t + pos, n->name, strlen(n->name));
	for (d = n->parent; d != NULL && d->kind == MFS_N_HITDIR;
	     d = d->parent) {
		t[--pos] = '/';
		l = strlen(d->name);
		pos -= l;
		memcpy(t + pos, d->name, l);
	}
	for (l = 0; l < ups; l++)
		memcpy(t + 3 * l, "../", 3);
	return t;
}

/* --- running a search ------------------------------------------------------ */

/* One folder searched. */
struct target {
	struct mfs_node *folder; /* held */
	char *mailbox;		 /* owned */
};

struct targets {
	struct target *v; /* owned */
	size_t n, cap;
};

static int targets_add(struct targets *ts, struct mfs_node *folder)
{
	struct target *nv;
	char *mailbox;

	if (ts->n == ts->cap) {
		size_t ncap = ts->cap == 0 ? 16 : 2 * ts->cap;

		nv = realloc(ts->v, ncap * sizeof(*nv));
		if (nv == NULL)
			return -1;
		ts->v = nv;
		ts->cap = ncap;
	}
	mailbox = strdup(folder->mailbox);
	if (mailbox == NULL)
		return -1;
	mfs_nodes_hold(folder);
	ts->v[ts->n].folder = folder;
	ts->v[ts->n].mailbox = mailbox;
	ts->n++;
	return 0;
}

/* Every folder below dir that holds messages, in tree order. */
static int targets_below(struct targets *ts, struct mfs_node *dir)
{
	struct mfs_node *c;

	for (c = dir->first_child; c != NULL; c = c->next_sibling) {
		if (c->kind != MFS_N_FOLDER)
			continue;
		if (c->mailbox != NULL && !c->noselect &&
		    targets_add(ts, c) != 0)
			return -1;
		if (targets_below(ts, c) != 0)
			return -1;
	}
	return 0;
}

static void targets_free(struct mfs_fs *fs, struct targets *ts)
{
	size_t i;

	for (i = 0; i < ts->n; i++) {
		mfs_nodes_release(fs->nodes, ts->v[i].folder);
		free(ts->v[i].mailbox);
	}
	free(ts->v);
}

static int uid_cmp(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

static int hit(const struct mfs_store_hits *h, uint32_t uid)
{
	return bsearch(&uid, h->uids, h->n, sizeof(*h->uids), uid_cmp) !=
	       NULL;
}

/* Does the listing of folder show every message of h? */
static int covered(const struct mfs_node *folder,
		   const struct mfs_store_hits *h)
{
	const struct mfs_node *c;
	size_t found = 0;

	if (folder->validity != h->validity)
		return 0;
	for (c = folder->first_child; c != NULL; c = c->next_sibling)
		if (c->kind == MFS_N_MESSAGE && hit(h, c->msg.uid))
			found++;
	return found == h->n;
}

/* The directory of folder's matches under query node qn: qn itself for
 * a folder's search, else the HITDIR path of the folder below the root,
 * made as needed and stamped gen. NULL on ENOMEM or when a name there is
 * taken by something else. */
static struct mfs_node *hits_dir(struct mfs_fs *fs, struct mfs_node *qn,
				 struct mfs_node *folder, unsigned gen)
{
	struct mfs_node *d, *h, *dir = qn;
	size_t depth = 0, i;

	if (qn->parent->parent != mfs_nodes_root(fs->nodes))
		return qn;
	for (d = folder; d != NULL && d->kind == MFS_N_FOLDER; d = d->parent)
		depth++;
	for (i = 1; i <= depth; i++) {
		size_t j;

		/* the folder i levels below the root, on folder's path */
		for (d = folder, j = depth; j > i; j--)
			d = d->parent;
		h = mfs_nodes_child(fs->nodes, dir, d->name);
		if (h == NULL) {
			h = mfs_nodes_add(fs->nodes, dir, d->name,
					  MFS_N_HITDIR);
			if (h == NULL)
				return NULL;
			h->mtime = time(NULL);
		}
		if (h->kind != MFS_N_HITDIR)
			return NULL;
		h->gen = gen;
		dir = h;
	}
	return dir;
}

/* Links in dir for the messages of folder that h names. */
static int link_hits(struct mfs_fs *fs, struct mfs_node *dir,
		     struct mfs_node *folder, const struct mfs_store_hits *h,
		     unsigned gen)
{
	struct mfs_node *c, *l;

	if (folder->validity != h->validity)
		return 0;
	for (c = folder->first_child; c != NULL; c = c->next_sibling) {
		if (c->kind != MFS_N_MESSAGE || !hit(h, c->msg.uid))
			continue;
		l = mfs_nodes_child(fs->nodes, dir, c->name);
		if (l == NULL) {
			l = mfs_nodes_add(fs->nodes, dir, c->name,
					  MFS_N_LINK);
			if (l == NULL)
				return -1;
			l->mtime = c->mtime;
		}
		if (l->kind == MFS_N_LINK)
			l->gen = gen;
	}
	return 0;
}

/* Unlinks the links and folder directories below dir not stamped gen. */
static void sweep(struct mfs_fs *fs, struct mfs_node *dir, unsigned gen)
{
	struct mfs_node *c, *next;

	for (c = dir->first_child; c != NULL; c = next) {
		next = c->next_sibling;
		if (c->kind != MFS_N_LINK && c->kind != MFS_N_HITDIR)
			continue;
		if (c->gen != gen)
			mfs_nodes_unlink(fs->nodes, c);
		else if (c->kind == MFS_N_HITDIR)
			sweep(fs, c, gen);
	}
}

/* --- reading the messages (a store whose search has no text terms) ------ */

/* The most bytes of one file of a message that a search reads. */
#define TEXT_MAX (4u * 1024 * 1024)

/* The file name of msg's directory, read into *out (malloc'd, NUL ended;
 * NULL when the message has no such file). Caller holds the lock and a
 * hold on msg; the lock is dropped while the file is read. */
static int read_text(struct mfs_fs *fs, struct mfs_node *msg,
		     const char *name, char **out, struct mfs_err *err)
{
	struct mfs_node *n = mfs_nodes_child(fs->nodes, msg, name);
	struct handle h;
	size_t len, got = 0;
	ssize_t r = 0;
	char *buf;
	int rc;

	*out = NULL;
	if (n == NULL || n->kind != MFS_N_FILE || n->file != MFS_F_PART)
		return MFS_OK;
	memset(&h, 0, sizeof(h));
	h.fd = -1;
	h.node = n;
	mfs_nodes_hold(n);
	rc = part_size(fs, n, err); /* a decoded size is known once asked */
	if (rc == MFS_OK)
		rc = open_part(fs, n, &h, err);
	if (rc != MFS_OK)
		goto release;
	len = h.size < TEXT_MAX ? (size_t)h.size : TEXT_MAX;
	buf = malloc(len + 1);
	if (buf == NULL) {
		rc = mfs_err_set(err, MFS_E_NOMEM, "out of memory");
		goto release;
	}
	if (h.fd < 0) { /* a small decoded file: in h.buf (msgview.c) */
		got = len < h.len ? len : h.len;
		memcpy(buf, h.buf, got);
	} else {
		pthread_mutex_unlock(&fs->lock);
		while (got < len &&
		       (r = pread(h.fd, buf + got, len - got,
				  h.base + (off_t)got)) > 0)
			got += (size_t)r;
		pthread_mutex_lock(&fs->lock);
	}
	if (r < 0) {
		rc = mfs_err_set(err, MFS_E_IO, "reading %s: %s", name,
				 strerror(errno));
		free(buf);
		goto release;
	}
	buf[got] = '\0';
	*out = buf;
release:
	if (h.fd >= 0)
		close(h.fd);
	free(h.buf);
	fs->part_mem -= h.mem; /* as handle_free() does */
	mfs_nodes_release(fs->nodes, n);
	return rc;
}

/* Whether message msg (held) matches q by its text: its files from, to,
 * cc, subject, headers and body.txt, the message fetched as for a look
 * inside. *m is 1 or 0. Caller holds the lock. */
static int match_message(struct mfs_fs *fs, struct mfs_node *msg,
			 const struct mfs_query *q, int *m,
			 struct mfs_err *err)
{
	static const char *const files[] = {"from",    "to",	  "cc",
					    "subject", "headers", "body.txt"};
	char *text[6] = {NULL};
	struct mfs_query_text t;
	size_t i;
	int rc;

	rc = dir_ensure(fs, msg, err);
	for (i = 0; i < 6 && rc == MFS_OK; i++)
		rc = read_text(fs, msg, files[i], &text[i], err);
	if (rc == MFS_OK) {
		t.from = text[0];
		t.to = text[1];
		t.cc = text[2];
		t.subject = text[3];
		t.headers = text[4];
		t.body = text[5];
		*m = mfs_query_match_text(q, &msg->msg, &t);
	}
	for (i = 0; i < 6; i++)
		free(text[i]);
	return rc;
}

/* The search of a store that cannot match text (POP3): the folder listed
 * as for a look, then every message read (fetched as grep would) and
 * matched here; the results into h as the store's search gives them.
 * Caller holds the lock and a hold on folder. */
static int search_messages(struct mfs_fs *fs, struct mfs_node *folder,
			   const struct mfs_query *q,
			   struct mfs_store_hits *h, struct mfs_err *err)
{
	int ttl = fs->acct->refresh > 0 ? fs->acct->refresh : LIST_TTL;
	struct mfs_node **msgs, *c;
	size_t n = 0, i;
	int rc, m;

	pthread_mutex_unlock(&fs->lock);
	rc = refresh_folder(fs, folder, ttl, &h->err);
	pthread_mutex_lock(&fs->lock);
	if (rc != MFS_OK)
		return MFS_OK; /* this folder's error, in h->err */
	for (c = folder->first_child; c != NULL; c = c->next_sibling)
		n += c->kind == MFS_N_MESSAGE;
	msgs = calloc(n ? n : 1, sizeof(*msgs));
	h->uids = calloc(n ? n : 1, sizeof(*h->uids));
	if (msgs == NULL || h->uids == NULL) {
		free(msgs);
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	}
	n = 0;
	for (c = folder->first_child; c != NULL; c = c->next_sibling)
		if (c->kind == MFS_N_MESSAGE) {
			mfs_nodes_hold(c);
			msgs[n++] = c;
		}
	h->validity = folder->validity;
	for (i = 0; i < n && rc == MFS_OK; i++) {
		if (!msgs[i]->linked)
			continue;
		m = 0;
		rc = match_message(fs, msgs[i], q, &m, err);
		if (rc == MFS_E_NOENT) { /* gone meanwhile */
			mfs_err_clear(err);
			rc = MFS_OK;
		}
		if (rc == MFS_OK && m)
			h->uids[h->n++] = msgs[i]->msg.uid;
	}
	for (i = 0; i < n; i++)
		mfs_nodes_release(fs->nodes, msgs[i]);
	free(msgs);
	if (h->n > 0)
		qsort(h->uids, h->n, sizeof(*h->uids), uid_cmp);
	return rc;
}

/* Searches query node qn (held) again. Caller holds the lock; it is
 * dropped while the server works. */
static int search_run(struct mfs_fs *fs, struct mfs_node *qn,
		      struct mfs_err *err)
{
	struct mfs_node *base = qn->parent->parent, *dir;
	struct mfs_store_hits *hits = NULL;
	const char **names = NULL;
	struct targets ts = {0};
	struct mfs_query *q = NULL;
	struct mfs_err ferr;
	unsigned gen;
	size_t i;
	int rc;

	if (query_parse(qn->name, &q, err) != MFS_OK)
		return err->code;
	if (fs->store->ops->search == NULL) {
		rc = mfs_err_set(err, MFS_E_INVAL, "this store cannot search");
		goto free_query;
	}
	if (base->kind == MFS_N_ROOT) {
		pthread_mutex_unlock(&fs->lock);
		if (refresh_folders(fs, FOLDERS_TTL, err) != MFS_OK)
			mfs_log_err("%s (searching the folders known before)",
				    err->msg);
		pthread_mutex_lock(&fs->lock);
		rc = targets_below(&ts, base);
	} else {
		rc = base->mailbox != NULL && !base->noselect
			     ? targets_add(&ts, base)
			     : 0;
	}
	hits = calloc(ts.n ? ts.n : 1, sizeof(*hits));
	names = calloc(ts.n ? ts.n : 1, sizeof(*names));
	if (rc != 0 || hits == NULL || names == NULL) {
		rc = mfs_err_set(err, MFS_E_NOMEM, "out of memory");
		goto free_targets;
	}
	for (i = 0; i < ts.n; i++) {
		names[i] = ts.v[i].mailbox;
		hits[i].want_msgs = ts.v[i].folder->listed == 0;
	}
	if (fs->store->search_text || mfs_query_listing_only(q)) {
		pthread_mutex_unlock(&fs->lock);
		rc = fs->store->ops->search(fs->store, names, ts.n, q, hits,
					    err);
		pthread_mutex_lock(&fs->lock);
	} else {
		mfs_log_info("search \"%s\": reading the messages (the "
			     "server cannot search their text)",
			     qn->name);
		for (i = 0, rc = MFS_OK; i < ts.n && rc == MFS_OK; i++)
			rc = search_messages(fs, ts.v[i].folder, q, &hits[i],
					     err);
	}
	if (rc != MFS_OK)
		goto free_hits;
	if (!qn->linked) { /* forgotten meanwhile (rmdir) */
		rc = mfs_err_set(err, MFS_E_NOENT, "search forgotten");
		goto free_hits;
	}
	/* matches the listings do not show yet: their entries, when the
	 * search brought them, else a listing of the folder */
	for (i = 0; i < ts.n; i++) {
		if (hits[i].err.code != MFS_OK) {
			if (hits[i].err.code != MFS_E_NOENT)
				mfs_log_err("%s", hits[i].err.msg);
			continue;
		}
		if (hits[i].n == 0 || covered(ts.v[i].folder, &hits[i]))
			continue;
		if (hits[i].msgs != NULL && ts.v[i].folder->linked &&
		    folder_add_some(fs, ts.v[i].folder, hits[i].validity,
				    hits[i].msgs, hits[i].nmsgs) != 0) {
			rc = mfs_err_set(err, MFS_E_NOMEM, "out of memory");
			goto free_hits;
		}
		if (covered(ts.v[i].folder, &hits[i]))
			continue;
		mfs_err_clear(&ferr);
		pthread_mutex_unlock(&fs->lock);
		if (refresh_folder(fs, ts.v[i].folder, 0, &ferr) != MFS_OK)
			mfs_log_err("%s", ferr.msg);
		pthread_mutex_lock(&fs->lock);
	}
	gen = ++fs->gen;
	for (i = 0; i < ts.n; i++) {
		if (hits[i].err.code != MFS_OK || hits[i].n == 0 ||
		    !ts.v[i].folder->linked)
			continue;
		dir = hits_dir(fs, qn, ts.v[i].folder, gen);
		if (dir != NULL &&
		    link_hits(fs, dir, ts.v[i].folder, &hits[i], gen) != 0)
			dir = NULL;
		if (dir == NULL)
			mfs_log_err("search \"%s\": cannot show the matches "
				    "of %s",
				    qn->name, ts.v[i].mailbox);
	}
	sweep(fs, qn, gen);
	qn->listed = time(NULL);
	mfs_err_clear(err);
	rc = MFS_OK;
free_hits:
	mfs_store_hits_free(hits, ts.n);
free_targets:
	free(hits);
	free(names);
	targets_free(fs, &ts);
free_query:
	mfs_query_free(q);
	return rc;
}

int search_sync(struct mfs_fs *fs, struct mfs_node *dir, int opening,
		struct mfs_err *err)
{
	struct mfs_node *qn = dir;
	int ttl = fs->acct->refresh > 0 ? fs->acct->refresh : LIST_TTL;

	while (qn->kind == MFS_N_HITDIR)
		qn = qn->parent;
	if (!qn->linked || !dir->linked)
		return mfs_err_set(err, MFS_E_NOENT, "search forgotten");
	if (!opening && qn->listed != 0)
		return MFS_OK;
	if (qn->listed != 0 && time(NULL) - qn->listed < ttl)
		return MFS_OK;
	return search_run(fs, qn, err);
}
