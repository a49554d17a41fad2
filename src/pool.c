/*
 * pool.c - one store over several connections (see pool.h).
 */
#include "pool.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "log.h"

/* Network failures in a row that make the store offline, and the longest
 * wait before the server is tried again. */
#define OFFLINE_AFTER 2
#define BACKOFF_MAX 60

struct pool {
	struct mfs_store *main;	   /* owned */
	struct mfs_store **readers; /* owned array of owned stores */
	int *busy;		   /* owned; one per reader */
	size_t n;
	int main_reading; /* main is fetching */
	struct mfs_store *watcher; /* owned, or NULL */
	int watching;		   /* a watch is running on watcher */
	pthread_mutex_t lock;	   /* guards busy, main_reading, watching */
	pthread_cond_t freed;
	/* online or offline (store.h, state op), under gate: */
	pthread_mutex_t gate;
	int failures;		   /* network failures in a row */
	int backoff;		   /* seconds of the current wait */
	struct mfs_store_state state;
};

/*
 * The gate in front of every op that needs the server: offline, an op
 * fails at once until the wait is over, so that nothing waits a timeout
 * for a server known to be out of reach. Returns 1 (err set) when closed.
 */
static int gate_closed(struct pool *p, struct mfs_err *err)
{
	time_t now = time(NULL);
	int closed;

	pthread_mutex_lock(&p->gate);
	closed = p->state.offline_since != 0 && now < p->state.retry_at;
	if (closed)
		mfs_err_set(err, MFS_E_OFFLINE,
			    "offline for %lld s, trying again in %lld s: %s",
			    (long long)(now - p->state.offline_since),
			    (long long)(p->state.retry_at - now),
			    p->state.why);
	pthread_mutex_unlock(&p->gate);
	return closed;
}

/* What an op's result says of the server: a connection that could not be
 * opened (the driver's MFS_E_OFFLINE) counts towards offline, and the wait
 * doubles up to BACKOFF_MAX; a connection that broke later says nothing;
 * any answer from the server makes the store online. Returns rc. */
static int gate_note(struct pool *p, int rc, const struct mfs_err *err)
{
	time_t now = time(NULL);

	if (rc == MFS_E_CONNECT || rc == MFS_E_TIMEOUT)
		return rc;
	pthread_mutex_lock(&p->gate);
	if (rc == MFS_E_OFFLINE) {
		snprintf(p->state.why, sizeof(p->state.why), "%s", err->msg);
		if (++p->failures >= OFFLINE_AFTER) {
			if (p->state.offline_since == 0) {
				p->state.offline_since = now;
				p->backoff = 1;
				mfs_log_err("offline: %s", err->msg);
			}
			if (p->backoff < BACKOFF_MAX)
				p->backoff *= 2;
			if (p->backoff > BACKOFF_MAX)
				p->backoff = BACKOFF_MAX;
			p->state.retry_at = now + p->backoff;
		}
	} else {
		if (p->state.offline_since != 0)
			mfs_log_info("online again after %lld s offline",
				     (long long)(now - p->state.offline_since));
		p->failures = 0;
		p->backoff = 0;
		p->state.offline_since = 0;
		p->state.retry_at = 0;
		p->state.why[0] = '\0';
	}
	pthread_mutex_unlock(&p->gate);
	return rc;
}

static void pool_state(struct mfs_store *st, struct mfs_store_state *out)
{
	struct pool *p = st->priv;

	pthread_mutex_lock(&p->gate);
	*out = p->state;
	pthread_mutex_unlock(&p->gate);
}

/* A store to fetch message bytes with; give it back with put(). */
static struct mfs_store *get(struct pool *p)
{
	struct mfs_store *st = NULL;
	size_t i;

	if (p->n == 0)
		return p->main;
	pthread_mutex_lock(&p->lock);
	while (st == NULL) {
		if (!p->main_reading) {
			p->main_reading = 1;
			st = p->main;
		}
		for (i = 0; i < p->n && st == NULL; i++) {
			if (!p->busy[i]) {
				p->busy[i] = 1;
				st = p->readers[i];
			}
		}
		if (st == NULL)
			pthread_cond_wait(&p->freed, &p->lock);
	}
	pthread_mutex_unlock(&p->lock);
	return st;
}

static void put(struct pool *p, struct mfs_store *st)
{
	size_t i;

	if (p->n == 0)
		return;
	pthread_mutex_lock(&p->lock);
	if (st == p->main)
		p->main_reading = 0;
	for (i = 0; i < p->n; i++)
		if (p->readers[i] == st)
			p->busy[i] = 0;
	pthread_cond_signal(&p->freed);
	pthread_mutex_unlock(&p->lock);
}

static struct mfs_store *main_of(struct mfs_store *st)
{
	return ((struct pool *)st->priv)->main;
}

static int pool_connect(struct mfs_store *st, struct mfs_err *err)
{
	struct pool *p = st->priv;
	struct mfs_store *m = p->main;

	int rc;

	if (gate_closed(p, err))
		return err->code;
	rc = m->ops->connect(m, err);
	if (rc == MFS_E_OFFLINE) {
		/* a connection that could not be opened: offline at once */
		pthread_mutex_lock(&p->gate);
		p->failures = OFFLINE_AFTER - 1;
		pthread_mutex_unlock(&p->gate);
	}
	return gate_note(p, rc, err);
}

static int pool_list(struct mfs_store *st, struct mfs_store_folder **folders,
		     size_t *n, struct mfs_err *err)
{
	struct pool *p = st->priv;
	struct mfs_store *m = p->main;

	if (gate_closed(p, err))
		return err->code;
	return gate_note(p, m->ops->list(m, folders, n, err), err);
}

static int pool_index(struct mfs_store *st, const char *folder,
		      uint32_t *validity, struct mfs_store_msg **msgs,
		      size_t *n, struct mfs_err *err)
{
	struct pool *p = st->priv;
	struct mfs_store *m = p->main;

	if (gate_closed(p, err))
		return err->code;
	return gate_note(p, m->ops->index(m, folder, validity, msgs, n, err), err);
}

static int pool_index_pieces(struct mfs_store *st, const char *folder,
			     uint32_t *validity, struct mfs_store_msg **msgs,
			     size_t *n, mfs_index_piece_fn piece, void *ctx,
			     struct mfs_err *err)
{
	struct pool *p = st->priv;
	struct mfs_store *m = p->main;

	if (gate_closed(p, err))
		return err->code;
	if (m->ops->index_pieces == NULL)
		return gate_note(p, m->ops->index(m, folder, validity, msgs, n,
						  err),
				 err);
	return gate_note(p,
			 m->ops->index_pieces(m, folder, validity, msgs, n,
					      piece, ctx, err),
			 err);
}

static int pool_fetch(struct mfs_store *st, const char *folder,
		      uint32_t validity, const struct mfs_store_msg *msg,
		      int fd, size_t *len, struct mfs_err *err)
{
	struct pool *p = st->priv;
	struct mfs_store *r;
	int rc;

	if (gate_closed(p, err))
		return err->code;
	r = get(p);
	rc = r->ops->fetch(r, folder, validity, msg, fd, len, err);

	put(p, r);
	return gate_note(p, rc, err);
}

/* A search takes a free connection, like a fetch: it does not wait
 * behind a listing. */
static int pool_search(struct mfs_store *st, const char *const *folders,
		       size_t n, const struct mfs_query *q,
		       struct mfs_store_hits *hits, struct mfs_err *err)
{
	struct pool *p = st->priv;
	struct mfs_store *r;
	int rc;

	if (gate_closed(p, err))
		return err->code;
	r = get(p);
	rc = r->ops->search(r, folders, n, q, hits, err);

	put(p, r);
	return gate_note(p, rc, err);
}

static int pool_fetch_many(struct mfs_store *st, const char *folder,
			   uint32_t validity, const uint32_t *uids, size_t n,
			   int (*open_fn)(void *ctx),
			   void (*done_fn)(void *ctx, uint32_t uid, int fd,
					   size_t len),
			   void *ctx, struct mfs_err *err)
{
	struct pool *p = st->priv;
	struct mfs_store *r;
	int rc;

	if (gate_closed(p, err))
		return err->code;
	r = get(p);
	rc = r->ops->fetch_many(r, folder, validity, uids, n, open_fn,
				    done_fn, ctx, err);

	put(p, r);
	return gate_note(p, rc, err);
}

static int pool_skeleton(struct mfs_store *st, const char *folder,
			 uint32_t validity, const struct mfs_store_msg *msg,
			 uint64_t hole_min, int fd, struct mfs_seg **segs,
			 size_t *nsegs, struct mfs_err *err)
{
	struct pool *p = st->priv;
	struct mfs_store *r;
	int rc;

	if (gate_closed(p, err))
		return err->code;
	r = get(p);
	rc = r->ops->skeleton(r, folder, validity, msg, hole_min, fd, segs,
				  nsegs, err);

	put(p, r);
	return gate_note(p, rc, err);
}

static int pool_skeleton_many(struct mfs_store *st, const char *folder,
			      uint32_t validity, const uint32_t *uids,
			      size_t n, uint64_t hole_min,
			      const uint32_t *whole, size_t nwhole,
			      const uint32_t *later, size_t nlater,
			      const struct mfs_many_cb *cb, struct mfs_err *err)
{
	struct pool *p = st->priv;
	struct mfs_store *r;
	int rc;

	if (gate_closed(p, err))
		return err->code;
	r = get(p);
	rc = r->ops->skeleton_many(r, folder, validity, uids, n, hole_min,
				   whole, nwhole, later, nlater, cb, err);

	put(p, r);
	return gate_note(p, rc, err);
}

static int pool_fetch_section(struct mfs_store *st, const char *folder,
			      uint32_t validity,
			      const struct mfs_store_msg *msg,
			      const char *section, int fd, size_t *len,
			      struct mfs_err *err)
{
	struct pool *p = st->priv;
	struct mfs_store *r;
	int rc;

	if (gate_closed(p, err))
		return err->code;
	r = get(p);
	rc = r->ops->fetch_section(r, folder, validity, msg, section, fd,
				       len, err);

	put(p, r);
	return gate_note(p, rc, err);
}

static int pool_create(struct mfs_store *st, const char *folder,
		       struct mfs_err *err)
{
	struct pool *p = st->priv;
	struct mfs_store *m = p->main;

	if (gate_closed(p, err))
		return err->code;
	return gate_note(p, m->ops->create(m, folder, err), err);
}

static int pool_remove(struct mfs_store *st, const char *folder,
		       struct mfs_err *err)
{
	struct pool *p = st->priv;
	struct mfs_store *m = p->main;

	if (gate_closed(p, err))
		return err->code;
	return gate_note(p, m->ops->remove(m, folder, err), err);
}

static int pool_rename(struct mfs_store *st, const char *from, const char *to,
		       struct mfs_err *err)
{
	struct pool *p = st->priv;
	struct mfs_store *m = p->main;

	if (gate_closed(p, err))
		return err->code;
	return gate_note(p, m->ops->rename(m, from, to, err), err);
}

static int pool_append(struct mfs_store *st, const char *folder, int fd,
		       uint64_t len, time_t date, unsigned flags,
		       uint32_t *validity, uint32_t *uid, struct mfs_err *err)
{
	struct pool *p = st->priv;
	struct mfs_store *m = p->main;

	if (gate_closed(p, err))
		return err->code;
	return gate_note(p, m->ops->append(m, folder, fd, len, date, flags, validity, uid,
			      err), err);
}

static int pool_move(struct mfs_store *st, const char *from,
		     uint32_t validity, uint32_t uid, const char *to,
		     struct mfs_err *err)
{
	struct pool *p = st->priv;
	struct mfs_store *m = p->main;

	if (gate_closed(p, err))
		return err->code;
	return gate_note(p, m->ops->move(m, from, validity, uid, to, err), err);
}

static int pool_expunge(struct mfs_store *st, const char *folder,
			uint32_t validity, uint32_t uid, struct mfs_err *err)
{
	struct pool *p = st->priv;
	struct mfs_store *m = p->main;

	if (gate_closed(p, err))
		return err->code;
	return gate_note(p, m->ops->expunge(m, folder, validity, uid, err), err);
}

static int pool_store_flags(struct mfs_store *st, const char *folder,
			    uint32_t validity, uint32_t uid, char how,
			    const char *const *flags, size_t n, unsigned *now,
			    struct mfs_err *err)
{
	struct pool *p = st->priv;
	struct mfs_store *m = p->main;

	if (gate_closed(p, err))
		return err->code;
	return gate_note(p, m->ops->store_flags(m, folder, validity, uid, how, flags, n,
				   now, err), err);
}

static int pool_watch(struct mfs_store *st, const char *folder, int stop_fd,
		      int max_wait, int *changed, struct mfs_err *err)
{
	struct pool *p = st->priv;
	struct mfs_store *w = p->watcher;
	int rc;

	*changed = 0;
	if (w == NULL || w->ops->watch == NULL)
		return mfs_err_set(err, MFS_E_PROTO, "no connection to watch "
						     "with");
	pthread_mutex_lock(&p->lock);
	p->watching++;
	pthread_mutex_unlock(&p->lock);
	if (gate_closed(p, err))
		rc = err->code;
	else
		rc = gate_note(p,
			       w->ops->watch(w, folder, stop_fd, max_wait,
					     changed, err),
			       err);
	pthread_mutex_lock(&p->lock);
	p->watching--;
	pthread_mutex_unlock(&p->lock);
	return rc;
}

static int pool_personal(struct mfs_store *st, char **prefix, char *delim,
			 struct mfs_err *err)
{
	struct pool *p = st->priv;
	struct mfs_store *m = p->main;

	if (gate_closed(p, err))
		return err->code;
	return gate_note(p, m->ops->personal(m, prefix, delim, err), err);
}

/* Read from the disk: never offline. */
static int pool_kept_index(struct mfs_store *st, const char *folder,
			   uint32_t *validity, struct mfs_store_msg **msgs,
			   size_t *n, struct mfs_err *err)
{
	struct mfs_store *m = main_of(st);

	return m->ops->kept_index(m, folder, validity, msgs, n, err);
}

static void pool_tls_info(struct mfs_store *st, char *version, size_t vlen,
			  char *subject, size_t slen, char *issuer,
			  size_t ilen)
{
	struct mfs_store *m = main_of(st);

	m->ops->tls_info(m, version, vlen, subject, slen, issuer, ilen);
}

static void *free_thread(void *arg)
{
	struct mfs_store *st = arg;

	st->ops->free(st);
	return NULL;
}

/* Frees the stores side by side: each may wait a second for its LOGOUT
 * to be answered, and unmounting must not wait for them in turn. */
static void free_all(struct mfs_store **stores, size_t n)
{
	pthread_t *t = calloc(n ? n : 1, sizeof(*t));
	int *started = calloc(n ? n : 1, sizeof(*started));
	size_t i;

	for (i = 0; i < n; i++) {
		if (stores[i] == NULL)
			continue;
		started[i] = t != NULL && started != NULL &&
			     pthread_create(&t[i], NULL, free_thread,
					    stores[i]) == 0;
		if (!started[i])
			stores[i]->ops->free(stores[i]);
	}
	for (i = 0; i < n; i++)
		if (started != NULL && started[i])
			pthread_join(t[i], NULL);
	free(t);
	free(started);
}

static void pool_free(struct mfs_store *st)
{
	struct pool *p;
	struct mfs_store **all;
	size_t i;

	if (st == NULL)
		return;
	p = st->priv;
	pthread_mutex_lock(&p->lock);
	if (p->watching) {
		/* a watch that did not stop in time (a server that does not
		 * answer) still uses it: it is left to the process exit */
		p->watcher = NULL;
	}
	pthread_mutex_unlock(&p->lock);
	all = calloc(p->n + 2, sizeof(*all));
	if (all != NULL) {
		for (i = 0; i < p->n; i++)
			all[i] = p->readers[i];
		all[p->n] = p->main;
		all[p->n + 1] = p->watcher;
		free_all(all, p->n + 2);
	} else {
		for (i = 0; i < p->n; i++)
			p->readers[i]->ops->free(p->readers[i]);
		p->main->ops->free(p->main);
		if (p->watcher != NULL)
			p->watcher->ops->free(p->watcher);
	}
	free(all);
	free(p->readers);
	free(p->busy);
	pthread_mutex_destroy(&p->lock);
	pthread_mutex_destroy(&p->gate);
	pthread_cond_destroy(&p->freed);
	free(p);
	free(st);
}

static const struct mfs_store_ops pool_ops = {
    .connect = pool_connect,
    .list = pool_list,
    .personal = pool_personal,
    .index = pool_index,
    .index_pieces = pool_index_pieces,
    .kept_index = pool_kept_index,
    .fetch = pool_fetch,
    .fetch_many = pool_fetch_many,
    .skeleton = pool_skeleton,
    .skeleton_many = pool_skeleton_many,
    .fetch_section = pool_fetch_section,
    .search = pool_search,
    .create = pool_create,
    .remove = pool_remove,
    .rename = pool_rename,
    .append = pool_append,
    .move = pool_move,
    .expunge = pool_expunge,
    .store_flags = pool_store_flags,
    .watch = pool_watch,
    .state = pool_state,
    .tls_info = pool_tls_info,
    .free = pool_free,
};

struct mfs_store *mfs_pool_new(struct mfs_store *main,
			       struct mfs_store **readers, size_t n,
			       struct mfs_store *watcher)
{
	struct mfs_store *st = calloc(1, sizeof(*st));
	struct pool *p = calloc(1, sizeof(*p));
	size_t i;

	if (st == NULL || p == NULL ||
	    (p->busy = calloc(n ? n : 1, sizeof(*p->busy))) == NULL) {
		for (i = 0; i < n; i++)
			readers[i]->ops->free(readers[i]);
		free(readers);
		main->ops->free(main);
		if (watcher != NULL)
			watcher->ops->free(watcher);
		if (p != NULL)
			free(p->busy);
		free(p);
		free(st);
		return NULL;
	}
	p->main = main;
	p->readers = readers;
	p->n = n;
	p->watcher = watcher;
	pthread_mutex_init(&p->lock, NULL);
	pthread_mutex_init(&p->gate, NULL);
	pthread_cond_init(&p->freed, NULL);
	st->ops = &pool_ops;
	st->priv = p;
	st->read_only = main->read_only;
	st->search_text = main->search_text;
	return st;
}
