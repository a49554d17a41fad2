/*
 * msgview.c - what a message shows (see fsint.h): the view of a message
 * (the whole message from the cache, or for a large one a skeleton whose
 * large parts are holes fetched when read), the nodes of its directory,
 * the descriptor of each of its files (decoded into the cache), and
 * fetch-ahead for reads in a row.
 */
#include "fsint.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <malloc.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "mime.h"
#include "names.h"
#include "skeleton.h"

/* Messages of at least LAZY_MIN bytes are read lazily where the store can:
 * their directory is laid out from a skeleton (store.h) in which each part
 * body of at least HOLE_MIN bytes is a hole, and a hole is fetched only
 * when a file that needs it is read. */
#define LAZY_MIN (1024 * 1024)

#define HOLE_MIN (64 * 1024)

/* At most this many views keep their mapping (and, for a whole message,
 * its layout) when nobody uses them: a traversal (du, find, grep -r)
 * keeps no more than these mapped, whatever the number of messages it
 * looks into. The least recently used beyond go (view_unload). */
#define VIEWS_MAX 16

/* malloc_trim() once this many views were freed since the last: freed
 * layouts and nodes would otherwise stay in glibc's arenas. */
#define VIEWS_TRIM 64

/* A file mapping whose pages mime.c may have dropped while it scans or
 * decodes (mfs_release_fn): they are read again from the file. */
struct mapping {
	void *map;
	size_t len;
};

/*
 * The bytes of a message and their layout, made on the first look inside
 * the message directory; owned by the message node (its priv).
 *
 * Its life: made by view_get(), and pinned (busy) by whoever uses it
 * while dropping the lock. Unpinned, it is on fs's list of loaded views,
 * most recently used first; beyond VIEWS_MAX the oldest is unloaded: its
 * mapping goes, and for a whole message also its descriptor and layout
 * (laid out again from the cache when next needed; the nodes of its
 * directory keep their entry ids, which the same bytes give again). A
 * skeleton keeps its layout and memory file, which cannot be made again
 * without the server. When no node of the message's directory is known
 * to the kernel, open or in use, the view goes altogether with those
 * nodes (view_drop): after the kernel forgot them (view_forget), or when
 * unloaded.
 */
struct view {
	struct mfs_fs *fs;	   /* borrowed; NULL for a view not (yet) a
				    * message's */
	struct mfs_node *msg;	   /* borrowed: the node whose priv it is */
	int fd;			   /* owned: the cache entry, or the skeleton;
				    * -1 when unloaded */
	char *map;		   /* owned: fd mapped, or NULL when empty or
				    * unloaded */
	size_t len;
	struct mfs_layout *layout; /* owned; borrows map */
	struct mfs_entry **by_id;  /* owned: the layout's entries by id,
				    * 1..nentries */
	uint32_t nentries;	   /* the layout's, kept when it goes */
	struct mfs_seg *segs;	   /* owned; a skeleton: its real and hole
				    * ranges (nsegs); NULL for the message */
	size_t nsegs;
	struct view *full;	   /* owned; a skeleton: the whole message,
				    * made when a file needs bytes that the
				    * skeleton makes up (message.eml) */
	unsigned busy;		   /* pins (view_get) */
	int loaded;		   /* mapped, on fs's list */
	struct view *newer, *older; /* on fs's list */
};

/* Takes v off fs's list of loaded views. Caller holds the lock. */
static void views_remove(struct view *v)
{
	struct mfs_fs *fs = v->fs;

	if (!v->loaded)
		return;
	if (v->newer != NULL)
		v->newer->older = v->older;
	else
		fs->views_new = v->older;
	if (v->older != NULL)
		v->older->newer = v->newer;
	else
		fs->views_old = v->newer;
	v->newer = v->older = NULL;
	v->loaded = 0;
	fs->views_loaded--;
}

/* Puts v first on fs's list. Caller holds the lock. */
static void views_push(struct view *v)
{
	struct mfs_fs *fs = v->fs;

	views_remove(v);
	v->older = fs->views_new;
	v->newer = NULL;
	if (fs->views_new != NULL)
		fs->views_new->newer = v;
	else
		fs->views_old = v;
	fs->views_new = v;
	v->loaded = 1;
	fs->views_loaded++;
}

static void view_unmap(struct view *v)
{
	if (v->map != NULL)
		munmap(v->map, v->len);
	v->map = NULL;
	if (v->layout != NULL)
		v->layout->buf = NULL;
}

void view_free(struct view *v)
{
	if (v == NULL)
		return;
	if (v->fs != NULL) {
		views_remove(v);
		v->fs->views--;
	}
	view_unmap(v);
	mfs_layout_free(v->layout);
	free(v->by_id);
	if (v->fd >= 0)
		close(v->fd);
	mfs_store_segs_free(v->segs, v->nsegs);
	view_free(v->full);
	free(v);
}

/* Lets what v holds go but what its nodes need: see struct view. Caller
 * holds the lock; v is not pinned. */
static void view_unload(struct view *v)
{
	views_remove(v);
	view_free(v->full);
	v->full = NULL;
	view_unmap(v);
	if (v->segs == NULL) {
		mfs_layout_free(v->layout);
		v->layout = NULL;
		free(v->by_id);
		v->by_id = NULL;
		if (v->fd >= 0)
			close(v->fd);
		v->fd = -1;
	}
	v->fs->views_freed++;
}

/* Whether nothing but the tree holds the nodes below n: no kernel lookup,
 * open file, directory listing or handler. Caller holds the lock. */
static int below_idle(const struct mfs_node *n)
{
	const struct mfs_node *c, *k;

	for (c = n->first_child; c != NULL; c = c->next_sibling) {
		unsigned long kids = 0;

		for (k = c->first_child; k != NULL; k = k->next_sibling)
			kids++;
		if (c->nlookup != 0 || c->refs != 1 + kids || !below_idle(c))
			return 0;
	}
	return 1;
}

/* Frees msg's view (not pinned) and the nodes of its directory, which
 * below_idle() says nobody holds. Caller holds the lock. */
static void view_drop(struct mfs_fs *fs, struct mfs_node *msg)
{
	struct view *v = msg->priv;

	mfs_nodes_hold(msg);
	while (msg->first_child != NULL)
		mfs_nodes_unlink(fs->nodes, msg->first_child);
	msg->populated = 0;
	msg->priv = NULL;
	view_free(v);
	fs->views_freed++;
	mfs_nodes_release(fs->nodes, msg);
}

/* Unloads (or drops) the least recently used views beyond VIEWS_MAX, but
 * keep and those pinned. Caller holds the lock. */
static void views_trim(struct mfs_fs *fs, const struct view *keep)
{
	struct view *v = fs->views_old, *newer;

	for (; v != NULL && fs->views_loaded > VIEWS_MAX; v = newer) {
		newer = v->newer;
		if (v == keep || v->busy > 0)
			continue;
		if (below_idle(v->msg))
			view_drop(fs, v->msg);
		else
			view_unload(v);
	}
}

void view_forget(struct mfs_fs *fs, struct mfs_node *msg)
{
	struct view *v = msg->priv;

	if (v != NULL && v->busy == 0 && below_idle(msg))
		view_drop(fs, msg);
}

void views_trim_memory(struct mfs_fs *fs)
{
	int trim;

	pthread_mutex_lock(&fs->lock);
	trim = fs->views_freed >= VIEWS_TRIM;
	if (trim)
		fs->views_freed = 0;
	pthread_mutex_unlock(&fs->lock);
	if (trim)
		malloc_trim(0);
}

void mfs_fs_mem(struct mfs_fs *fs, struct mfs_fs_mem *m)
{
	const struct view *v;

	memset(m, 0, sizeof(*m));
	pthread_mutex_lock(&fs->lock);
	m->nodes = mfs_nodes_count(fs->nodes);
	m->views = fs->views;
	m->loaded = fs->views_loaded;
	for (v = fs->views_new; v != NULL; v = v->older)
		m->mapped += (v->map != NULL) +
			     (v->full != NULL && v->full->map != NULL);
	pthread_mutex_unlock(&fs->lock);
}

void msg_ref_free(struct msg_ref *r)
{
	free(r->mailbox);
	free(r->msg.uidl);
	memset(r, 0, sizeof(*r));
}

/* The message node above n (n itself when it is one), or NULL. */
struct mfs_node *message_of(struct mfs_node *n)
{
	while (n != NULL && n->kind != MFS_N_MESSAGE)
		n = n->parent;
	return n;
}

/* Caller holds the lock. Returns 0, or -1 on ENOMEM. */
int msg_ref_take(const struct mfs_node *msg, struct msg_ref *r)
{
	memset(r, 0, sizeof(*r));
	r->mailbox = strdup(msg->parent->mailbox);
	r->validity = msg->parent->validity;
	r->msg.uid = msg->msg.uid;
	r->msg.size = msg->msg.size;
	if (msg->msg.uidl != NULL)
		r->msg.uidl = strdup(msg->msg.uidl);
	if (r->mailbox == NULL || (msg->msg.uidl != NULL && !r->msg.uidl)) {
		msg_ref_free(r);
		return -1;
	}
	return 0;
}

/* The cache key of a message: "m/<hex folder>/<validity>/<id>" plus a
 * suffix (a decoded part: ".p<entry id>"). */
static int cache_key(const struct msg_ref *r, const char *suffix, char *key,
		     size_t len)
{
	char tail[64];

	snprintf(key, len, "m/");
	if (mfs_cache_key_hex(r->mailbox, key, len) != 0)
		return -1;
	snprintf(tail, sizeof(tail), "/%" PRIu32 "/", r->validity);
	if (strlen(key) + strlen(tail) >= len)
		return -1;
	strcat(key, tail);
	if (r->msg.uidl != NULL) {
		if (mfs_cache_key_hex(r->msg.uidl, key, len) != 0)
			return -1;
	} else {
		snprintf(tail, sizeof(tail), "%" PRIu32, r->msg.uid);
		if (strlen(key) + strlen(tail) >= len)
			return -1;
		strcat(key, tail);
	}
	if (strlen(key) + strlen(suffix) >= len)
		return -1;
	strcat(key, suffix);
	return 0;
}

/* A message the listing showed is not on the server (expunged, or its UIDs
 * changed): the folder's listing is out of date. Called without the lock. */
static void folder_gone_msg(struct mfs_fs *fs, const char *mailbox)
{
	pthread_mutex_lock(&fs->lock);
	mailbox_stale(fs, mailbox);
	pthread_mutex_unlock(&fs->lock);
}

static void ahead_wait_finishing(struct mfs_fs *fs);

struct fetch_ctx {
	struct mfs_fs *fs;
	const struct msg_ref *ref;
};

static int fetch_fill(void *ctx, int fd, size_t *len, struct mfs_err *err)
{
	struct fetch_ctx *f = ctx;
	struct mfs_store *st = f->fs->store;
	int rc;

	pthread_mutex_lock(&f->fs->lock);
	ahead_wait_finishing(f->fs);
	pthread_mutex_unlock(&f->fs->lock);
	rc = st->ops->fetch(st, f->ref->mailbox, f->ref->validity,
			    &f->ref->msg, fd, len, err);

	if (rc == MFS_E_NOENT)
		folder_gone_msg(f->fs, f->ref->mailbox);
	return rc;
}

/* An fd on the raw message: from the cache, else fetched into it. */
static int message_fd(struct mfs_fs *fs, const struct msg_ref *r, int *fd,
		      struct mfs_err *err)
{
	struct fetch_ctx ctx = {fs, r};
	char key[1024];

	if (r->msg.uid == 0 && r->msg.uidl == NULL)
		return mfs_err_set(err, MFS_E_NOENT,
				   "the message moved; list its folder again");
	if (cache_key(r, "", key, sizeof(key)) != 0)
		return mfs_err_set(err, MFS_E_IO, "cache key too long");
	return mfs_cache_get(fs->cache, key, r->msg.size, fetch_fill, &ctx, fd,
			     err);
}

int msgview_cached(struct mfs_fs *fs, const char *mailbox, uint32_t validity,
		   uint32_t uid, uint64_t size, int *fd)
{
	struct msg_ref r;
	char key[1024];

	memset(&r, 0, sizeof(r));
	r.mailbox = (char *)mailbox;
	r.validity = validity;
	r.msg.uid = uid;
	r.msg.size = size;
	if (cache_key(&r, "", key, sizeof(key)) != 0)
		return -1;
	return mfs_cache_take(fs->cache, key, size, fd);
}

static void mapping_release(void *ctx)
{
	struct mapping *m = ctx;

	if (m->map != NULL)
		madvise(m->map, m->len, MADV_DONTNEED);
}

/* The layout's release (mfs_release_fn) for a view. */
static void view_release(void *ctx)
{
	struct view *v = ctx;

	if (v->map != NULL)
		madvise(v->map, v->len, MADV_DONTNEED);
}

/* The layout's skip (mfs_skip_fn) for a view: a skeleton's holes hold
 * zeros, never a delimiter, and reading them would only fill memory. */
static size_t view_skip(void *ctx, size_t off)
{
	const struct view *v = ctx;
	size_t i;

	for (i = 0; i < v->nsegs; i++) {
		const struct mfs_seg *g = &v->segs[i];

		if (g->hole && off >= g->off && off - g->off < g->len)
			return g->off + g->len;
	}
	return off;
}

static void index_dir(struct mfs_entry **by_id, uint32_t n,
		      const struct mfs_dir *d)
{
	size_t i;

	for (i = 0; i < d->n; i++) {
		struct mfs_entry *e = &d->entries[i];

		if (e->id >= 1 && e->id <= n)
			by_id[e->id] = e;
		if (e->is_dir)
			index_dir(by_id, n, e->dir);
	}
}

/* The entry of node n (a part file or directory) in v's layout, or NULL
 * when unloaded or not there. */
static struct mfs_entry *view_entry(const struct view *v,
				    const struct mfs_node *n)
{
	if (v->by_id == NULL || n->entry_id == 0 || n->entry_id > v->nentries)
		return NULL;
	return v->by_id[n->entry_id];
}

/* Maps v->fd and lays it out. */
static int view_map(struct view *v, struct mfs_err *err)
{
	struct stat st;

	if (fstat(v->fd, &st) != 0)
		return mfs_err_set(err, MFS_E_IO, "cache: %s", strerror(errno));
	v->len = (size_t)st.st_size;
	if (v->len > 0) {
		v->map = mmap(NULL, v->len, PROT_READ, MAP_SHARED, v->fd, 0);
		if (v->map == MAP_FAILED) {
			v->map = NULL;
			return mfs_err_set(err, MFS_E_IO, "cache: mmap: %s",
					   strerror(errno));
		}
	}
	if (mfs_layout_build_mapped(v->map, v->len, view_release,
				    v->segs != NULL ? view_skip : NULL, v,
				    &v->layout, err) != MFS_OK)
		return err->code;
	v->nentries = v->layout->nentries;
	v->by_id = calloc((size_t)v->nentries + 1, sizeof(*v->by_id));
	if (v->by_id == NULL)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	index_dir(v->by_id, v->nentries, &v->layout->root_dir);
	/* The pages are the cache file's: let them go until a part is read,
	 * so that looking into a large message does not keep it resident. */
	if (v->map != NULL)
		madvise(v->map, v->len, MADV_DONTNEED);
	return MFS_OK;
}

/* The view of the whole message in fd (taken), or, when fd is -1,
 * fetched into the cache if need be. */
static int view_build_whole_fd(struct mfs_fs *fs, const struct msg_ref *r,
			       int fd, struct view **out, struct mfs_err *err)
{
	struct view *v = calloc(1, sizeof(*v));

	if (v == NULL) {
		if (fd >= 0)
			close(fd);
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	}
	v->fd = fd;
	if ((fd < 0 && message_fd(fs, r, &v->fd, err) != MFS_OK) ||
	    view_map(v, err) != MFS_OK) {
		view_free(v);
		return err->code;
	}
	*out = v;
	return MFS_OK;
}

/* The view of the whole message, fetched into the cache if need be. */
static int view_build_whole(struct mfs_fs *fs, const struct msg_ref *r,
			    struct view **out, struct mfs_err *err)
{
	return view_build_whole_fd(fs, r, -1, out, err);
}

/* The part of tree p (or one below it) whose body is exactly [off, off +
 * len) and that has no children: what a hole must stand for. */
static int hole_is_leaf(const struct mfs_part *p, size_t off, size_t len)
{
	size_t i;

	if (p == NULL)
		return 0;
	if (p->nchildren == 0 && p->message == NULL && p->body_off == off &&
	    p->body_len == len)
		return 1;
	for (i = 0; i < p->nchildren; i++)
		if (hole_is_leaf(p->children[i], off, len))
			return 1;
	return hole_is_leaf(p->message, off, len);
}

/* The range of v that holds every byte of file entry e: NULL when e's
 * bytes are in v as they are (generated, or in a real range); a hole;
 * or NULL with *whole set when they are made up in v (message.eml), so
 * that only the whole message has them. */
static const struct mfs_seg *entry_seg(const struct view *v,
				       const struct mfs_entry *e, int *whole)
{
	size_t i;

	*whole = 0;
	if (v->segs == NULL || e->src.kind == MFS_SRC_STRING ||
	    e->src.len == 0)
		return NULL;
	for (i = 0; i < v->nsegs; i++) {
		const struct mfs_seg *g = &v->segs[i];

		if (g->off <= e->src.off &&
		    e->src.off + e->src.len <= g->off + g->len)
			return g->hole ? g : NULL;
	}
	*whole = 1;
	return NULL;
}

/* Gives the files of a skeleton's directory d that are a hole as it is
 * (7bit, 8bit, binary: decoding changes nothing) the hole's length. Other
 * files in holes have no size until their hole is fetched: the server's
 * word for a decoded size (BINARY.SIZE) is not exact everywhere. */
static void hole_sizes(const struct view *v, const struct mfs_dir *d)
{
	size_t i;
	int whole;

	for (i = 0; i < d->n; i++) {
		struct mfs_entry *e = &d->entries[i];
		const struct mfs_seg *g;

		if (e->is_dir) {
			hole_sizes(v, e->dir);
			continue;
		}
		g = entry_seg(v, e, &whole);
		if (g != NULL && e->src.kind == MFS_SRC_DECODED &&
		    e->src.cte == MFS_CTE_BINARY) {
			e->src.size = e->src.len;
			e->src.size_known = 1;
		}
	}
}

/* Lays out skeleton v (its fd and segs set) and checks that each hole is
 * a leaf part's body. Returns 1 when v is ready for use, 0 when the
 * message is better read whole. */
static int skel_view_ready(struct view *v, uint32_t uid)
{
	struct mfs_err err;
	size_t i;

	if (v->nsegs == 0 || view_map(v, &err) != MFS_OK)
		return 0;
	for (i = 0; i < v->nsegs; i++) {
		if (v->segs[i].hole &&
		    !hole_is_leaf(v->layout->root, v->segs[i].off,
				  v->segs[i].len)) {
			mfs_log_debug("skeleton of %u does not fit its holes",
				      uid);
			return 0;
		}
	}
	hole_sizes(v, &v->layout->root_dir);
	return 1;
}

/* Keeps skeleton v in the cache as entry key (skeleton.h), so that it
 * outlives the mount and serves offline. Called without the lock. When it
 * cannot, the skeleton is still served, and fetched again next time. */
static void skel_keep(struct mfs_fs *fs, const char *key, const struct view *v)
{
	struct mfs_err err;
	char *tmp;
	int out;

	if (mfs_cache_tmp(fs->cache, &out, &tmp, &err) != MFS_OK) {
		mfs_log_debug("skeleton not kept: %s", err.msg);
		return;
	}
	if (mfs_skel_save(v->fd, v->segs, v->nsegs, out, &err) != MFS_OK) {
		mfs_log_debug("skeleton not kept: %s", err.msg);
		close(out);
		unlink(tmp);
	} else {
		mfs_cache_commit(fs->cache, key, out, tmp, MFS_CACHE_ANY_SIZE);
	}
	free(tmp);
}

/* An entry larger than this is not a skeleton mailfs wrote. */
#define KEPT_MAX (2 * MFS_SKEL_SMALL_MAX)

/* The view of message r from the skeleton the cache keeps (skel_keep),
 * or NULL when it keeps none, or one that does not load or lay out (the
 * message is fetched then). Called without the lock. */
static struct view *view_build_kept(struct mfs_fs *fs, const struct msg_ref *r)
{
	struct view *v = NULL;
	struct mfs_err err;
	struct stat st;
	char key[1024], *buf = MAP_FAILED;
	int fd = -1;

	if (r->msg.uid == 0 || cache_key(r, ".s", key, sizeof(key)) != 0 ||
	    mfs_cache_take(fs->cache, key, MFS_CACHE_ANY_SIZE, &fd) != 0)
		return NULL;
	if (fstat(fd, &st) != 0 || st.st_size <= 0 || st.st_size > KEPT_MAX)
		goto none;
	buf = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	if (buf == MAP_FAILED || (v = calloc(1, sizeof(*v))) == NULL)
		goto none;
	v->fd = memfd_create("mailfs-skeleton", MFD_CLOEXEC);
	if (v->fd < 0)
		goto none;
	if (mfs_skel_load(buf, (size_t)st.st_size, v->fd, &v->segs,
			  &v->nsegs, &err) != MFS_OK) {
		mfs_log_debug("%s: %s", key, err.msg);
		goto none;
	}
	if (!skel_view_ready(v, r->msg.uid))
		goto none;
	munmap(buf, (size_t)st.st_size);
	close(fd);
	return v;
none:
	if (v != NULL)
		view_free(v);
	if (buf != MAP_FAILED)
		munmap(buf, (size_t)st.st_size);
	close(fd);
	return NULL;
}

/*
 * The lazy view of a large message: its skeleton. *out is NULL (and the
 * result MFS_OK) when the message is better read whole: small, in the
 * cache already, nothing to leave out, or a skeleton whose layout does
 * not match its holes.
 */
static int view_build_lazy(struct mfs_fs *fs, const struct msg_ref *r,
			   struct view **out, struct mfs_err *err)
{
	const struct mfs_store_ops *ops = fs->store->ops;
	struct mfs_store *rd;
	struct view *v;
	char key[1024];
	int rc;

	*out = NULL;
	if (ops->skeleton == NULL || r->msg.uid == 0 ||
	    r->msg.size < LAZY_MIN || cache_key(r, ".s", key, sizeof(key)) != 0)
		return MFS_OK;
	v = calloc(1, sizeof(*v));
	if (v == NULL)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	v->fd = memfd_create("mailfs-skeleton", MFD_CLOEXEC);
	if (v->fd < 0) {
		mfs_log_err("skeleton: memfd: %s", strerror(errno));
		goto whole;
	}
	rd = fs->store;
	rc = ops->skeleton(rd, r->mailbox, r->validity, &r->msg, HOLE_MIN,
			   v->fd, &v->segs, &v->nsegs, err);
	if (rc != MFS_OK) {
		if (err->code != MFS_E_PROTO) {
			view_free(v);
			return err->code;
		}
		mfs_log_debug("skeleton of %u: %s", r->msg.uid, err->msg);
		goto whole;
	}
	if (!skel_view_ready(v, r->msg.uid))
		goto whole;
	skel_keep(fs, key, v);
	*out = v;
	return MFS_OK;
whole:
	view_free(v);
	mfs_err_clear(err);
	return MFS_OK;
}

/* msg r's view: the whole message when the cache holds it, else its
 * skeleton when the cache keeps one (skel_keep), else a skeleton fetched
 * (view_build_lazy), else the whole message fetched. */
static int view_build(struct mfs_fs *fs, const struct msg_ref *r,
		      struct view **out, struct mfs_err *err)
{
	char key[1024];
	int fd;

	*out = NULL;
	if (cache_key(r, "", key, sizeof(key)) == 0 &&
	    mfs_cache_take(fs->cache, key, r->msg.size, &fd) == 0)
		return view_build_whole_fd(fs, r, fd, out, err);
	*out = view_build_kept(fs, r);
	if (*out == NULL && view_build_lazy(fs, r, out, err) != MFS_OK)
		return err->code;
	if (*out != NULL)
		return MFS_OK;
	return view_build_whole(fs, r, out, err);
}

/*
 * Fetch-ahead: when a message must be fetched, the next messages of its
 * folder that are not cached yet come in the same command, so that reading
 * a folder in a row ("grep -r") costs a round trip per batch, not per
 * message. A batch asks for AHEAD_FIRST messages; while the reads go on in
 * the same folder (the next batch starts within AHEAD_GAP seconds of the
 * last) each batch asks for twice as many as the one before, up to
 * AHEAD_MAX messages and AHEAD_BYTES bytes.
 *
 * A batch is fetched by a thread of its own (ahead_run), and a reader
 * waits for its own message only: each message is in the cache, or its
 * skeleton its view, as soon as it has come. When a reader takes a
 * message past the first 1/AHEAD_FOLLOW of a batch, the next batch is
 * asked for (ahead_touch): at once when this one has come, else on this
 * one's call, by its thread (ahead_more: the store asks after each
 * response, and sends the next batch while the replies before it still
 * come), or, asked for after the last response, by a thread of its own
 * as soon as this one's is done. So a read in a row finds the next
 * messages on their way or come, and never waits for a whole batch;
 * batches stay small
 * (AHEAD_MAX), since what the last one brings beyond the end of the read
 * is wasted. A reader is slower than the batch it reads (each message
 * costs it a few requests of the kernel's), so the next batch is asked
 * for early (a quarter in, not half): asked for at half, it went out
 * only after the whole batch had come, and the server waited a round
 * trip for it.
 *
 * Messages of AHEAD_SKEL_MIN bytes or more come in the same batch as
 * skeletons (skeleton_many, store.h): their structures in the same burst
 * as the small messages, their headers and small parts in a second one,
 * at most AHEAD_LARGE_MAX of them a batch. Each counts as HOLE_MIN bytes
 * towards AHEAD_BYTES. The skeleton becomes the message's view at once,
 * as the lazy path would make it for a message of LAZY_MIN bytes, so
 * reading body.txt of such a message later costs no round trip. The
 * bound is lower than LAZY_MIN because a batch is a guess: most of the
 * bytes of a message of a few hundred kB are an attachment that a read
 * in a row (grep over body.txt) never looks at, and the attachment of a
 * message that is read comes when it is read, a round trip later. A run
 * that does read them (cp -r, tar) shows it at its first such read
 * (ahead_left_out), and its later batches bring those messages whole.
 *
 * The batch follows both orders a folder is read in: by name (a glob or
 * ls sorts the names, which begin with the date) and the directory's own
 * order (readdir: find, du, grep -r; UID order). They are the same when
 * dates grow with the UIDs; when not, the batch takes the next message
 * of each order in turn.
 */
#define AHEAD_FIRST 32

#define AHEAD_MAX 256

#define AHEAD_BYTES (4 * 1024 * 1024)

#define AHEAD_GAP 2

#define AHEAD_FOLLOW 4

#define AHEAD_LARGE_MAX 64

#define AHEAD_SKEL_MIN HOLE_MIN


/* A batch of fetch-ahead. Its own thread (ahead_run) fetches it, so that
 * a reader waits for its own message only, not for the whole batch, and
 * the next batch can come while the reader is still in this one. It is
 * on fs->aheads (fs->lock) from its start until aheads_reap() frees it.
 * msgview_fetch_into_cache() uses the first fields only, on its own
 * thread. */
struct ahead {
	struct mfs_fs *fs;
	size_t n;
	struct ahead_item {
		uint32_t uid;
		uint64_t size;
		char *key;	       /* owned */
		struct mfs_node *node; /* held until it comes or the batch
					* ends: a skeletal message's node,
					* else NULL */
		int done;	       /* came, or never will (fs->lock) */
	} *item;   /* owned array, ascending UIDs */
	char *tmp; /* owned: the file being written */
	/* a batch on its thread */
	struct ahead *next; /* on fs->aheads */
	pthread_t thread;
	struct mfs_node *dir; /* held while the thread runs */
	uint64_t dir_ino;
	char *mailbox; /* owned */
	uint32_t validity;
	uint32_t later[AHEAD_LARGE_MAX]; /* skeleton_many's later */
	size_t nlater;
	size_t window;	  /* how many messages it asked for */
	int followed;	  /* the next batch was started from it */
	struct mfs_node *follow; /* held: where the next batch starts once
				  * this one's fetch is done (ahead_touch) */
	int threaded;	  /* it has a thread of its own (ahead_run), else
			   * another batch's thread carries it */
	struct ahead **chain; /* owned array, nchain: the batches its thread
			       * fetches after it on the same call
			       * (ahead_more); none when carried */
	size_t nchain;
	int ended;	  /* its thread is done (fs->lock) */
	time_t ended_at;  /* when */
	unsigned waiters; /* readers waiting for one of its messages */
	int rc;		  /* MFS_OK, or why the fetch failed (err) */
	struct mfs_err err;
};

/* The cache key of the skeleton of item it: its message's key and ".s",
 * as cache_key(r, ".s") makes it. Returns 0, or -1 when too long. */
static int item_skel_key(const struct ahead_item *it, char *key, size_t len)
{
	return snprintf(key, len, "%s.s", it->key) < (int)len ? 0 : -1;
}

/* Frees what a owns; the holds on the nodes are let go by then. */
static void ahead_free(struct ahead *a)
{
	size_t i;

	for (i = 0; i < a->n; i++)
		free(a->item[i].key);
	free(a->item);
	free(a->tmp);
	free(a->mailbox);
	free(a->chain);
}

static int ahead_open(void *ctx)
{
	struct ahead *a = ctx;
	struct mfs_err err;
	int fd;

	free(a->tmp);
	a->tmp = NULL;
	if (mfs_cache_tmp(a->fs->cache, &fd, &a->tmp, &err) != MFS_OK)
		return -1;
	return fd;
}

static int item_cmp(const void *a, const void *b)
{
	uint32_t x = ((const struct ahead_item *)a)->uid;
	uint32_t y = ((const struct ahead_item *)b)->uid;

	return x < y ? -1 : x > y;
}

static struct ahead_item *ahead_find(const struct ahead *a, uint32_t uid)
{
	struct ahead_item key = {.uid = uid};

	return a->n == 0 ? NULL
			 : bsearch(&key, a->item, a->n, sizeof(*a->item),
				   item_cmp);
}

/* The item of uid among the batches a's thread fetches (a and its
 * chain), and in *owner its batch; NULL when none holds it. On a's
 * thread only (the chain is changed there alone). */
static struct ahead_item *ahead_find_any(struct ahead *a, uint32_t uid,
					 struct ahead **owner)
{
	struct ahead_item *it = ahead_find(a, uid);
	size_t i;

	*owner = a;
	for (i = 0; it == NULL && i < a->nchain; i++) {
		*owner = a->chain[i];
		it = ahead_find(a->chain[i], uid);
	}
	return it;
}

/* it has come, or will not: whoever waits for it goes on. Caller holds
 * the lock. */
static void ahead_item_done(struct ahead *a, struct ahead_item *it)
{
	struct mfs_fs *fs = a->fs;

	if (it->node != NULL) {
		mfs_nodes_release(fs->nodes, it->node);
		it->node = NULL;
	}
	it->done = 1;
	pthread_cond_broadcast(&fs->ahead_cond);
}

/* Whether every item of a has come, or will not. Caller holds the lock. */
static int ahead_all_done(const struct ahead *a)
{
	size_t i;

	for (i = 0; i < a->n && a->item[i].done; i++)
		;
	return i == a->n;
}

/*
 * Waits while a batch has brought all it holds but its thread has not
 * ended: it only reads its last replies. A fetch made meanwhile would find
 * the connection that batch holds still taken and open another one (TLS
 * and login, several round trips) for what is about to be left free:
 * `cat` of an attachment of a large message, whose skeleton the batch
 * has just brought, did. The wait is bounded by the driver's timeout.
 * Caller holds the lock; it is dropped while waiting.
 */
static void ahead_wait_finishing(struct mfs_fs *fs)
{
	for (;;) {
		struct ahead *a;
		int finishing = 0;
		size_t i;

		for (a = fs->aheads; a != NULL && !finishing; a = a->next) {
			if (a->ended || !a->threaded)
				continue;
			finishing = ahead_all_done(a);
			for (i = 0; finishing && i < a->nchain; i++)
				finishing = ahead_all_done(a->chain[i]);
		}
		if (!finishing)
			return;
		pthread_cond_wait(&fs->ahead_cond, &fs->lock);
	}
}

static void ahead_done(void *ctx, uint32_t uid, int fd, size_t len)
{
	struct ahead *a = ctx, *owner;
	struct ahead_item *it = ahead_find_any(a, uid, &owner);

	(void)len; /* the commit checks the size on disk */
	if (it != NULL && a->tmp != NULL) {
		mfs_cache_commit(a->fs->cache, it->key, fd, a->tmp, it->size);
	} else {
		close(fd);
		if (a->tmp != NULL)
			unlink(a->tmp);
	}
	free(a->tmp);
	a->tmp = NULL;
	if (it != NULL) {
		pthread_mutex_lock(&a->fs->lock);
		ahead_item_done(owner, it);
		pthread_mutex_unlock(&a->fs->lock);
	}
}

static int ahead_skel_open(void *ctx)
{
	(void)ctx;
	return memfd_create("mailfs-skeleton", MFD_CLOEXEC);
}

/* Makes skeleton v the view of its message, where the message is still
 * there and has none; else frees v. Caller holds the lock. */
static void ahead_settle(struct ahead *a, struct ahead_item *it,
			 struct view *v)
{
	struct mfs_fs *fs = a->fs;
	struct mfs_node *c = it->node, *dir = a->dir;

	if (c != NULL && c->linked && c->priv == NULL && c->parent == dir &&
	    dir->validity == a->validity && c->msg.uid == it->uid) {
		/* unloaded, as view_unload() leaves a skeleton: view_get()
		 * maps it when it is first used */
		view_unmap(v);
		v->fs = fs;
		v->msg = c;
		fs->views++;
		c->priv = v;
		return;
	}
	view_free(v);
}

/* A skeleton has come: laid out here, without the lock, and made its
 * message's view. */
static void ahead_skel_done(void *ctx, uint32_t uid, int fd,
			    struct mfs_seg *segs, size_t nsegs)
{
	struct ahead *a = ctx, *owner;
	struct ahead_item *it = ahead_find_any(a, uid, &owner);
	struct view *v = it != NULL && it->node != NULL
			     ? calloc(1, sizeof(*v))
			     : NULL;

	if (v == NULL) {
		close(fd);
		mfs_store_segs_free(segs, nsegs);
		return;
	}
	v->fd = fd;
	v->segs = segs;
	v->nsegs = nsegs;
	if (!skel_view_ready(v, uid)) {
		view_free(v);
		v = NULL;
	} else {
		char key[1024];

		if (item_skel_key(it, key, sizeof(key)) == 0)
			skel_keep(a->fs, key, v);
	}
	pthread_mutex_lock(&a->fs->lock);
	if (v != NULL)
		ahead_settle(owner, it, v);
	ahead_item_done(owner, it);
	pthread_mutex_unlock(&a->fs->lock);
}

/* The batch on fs->aheads that holds message msg and, in *it, msg's
 * item; NULL when none does. Caller holds the lock. */
static struct ahead *ahead_holding(const struct mfs_fs *fs,
				   const struct mfs_node *msg,
				   struct ahead_item **it)
{
	struct ahead *a;

	if (msg->parent == NULL)
		return NULL;
	for (a = fs->aheads; a != NULL; a = a->next)
		if (a->dir_ino == msg->parent->ino &&
		    (*it = ahead_find(a, msg->msg.uid)) != NULL)
			return a;
	return NULL;
}

/* Whether fetch-ahead takes message node c: one it has not brought and is
 * not bringing. Caller holds the lock. */
static int ahead_wants(const struct mfs_fs *fs, const struct mfs_node *c)
{
	struct ahead_item *it;

	if (c->kind != MFS_N_MESSAGE || c->msg.uid == 0 || c->priv != NULL ||
	    (c->msg.size >= LAZY_MIN && fs->store->ops->skeleton_many == NULL))
		return 0;
	return ahead_holding(fs, c, &it) == NULL || it->done;
}

/* Whether fetch-ahead asks for message node c's skeleton rather than its
 * bytes. */
static int ahead_skeletal(const struct mfs_fs *fs, const struct mfs_node *c)
{
	return fs->store->ops->skeleton_many != NULL &&
	       c->msg.size >= (fs->ahead_whole ? LAZY_MIN : AHEAD_SKEL_MIN);
}

/* A reader wants bytes of a message of size bytes that a skeleton left
 * out: when fetch-ahead would have brought it whole but for
 * AHEAD_SKEL_MIN, the run wants whole messages (cp -r, tar), and its next
 * batches bring them so. Caller holds the lock. */
static void ahead_left_out(struct mfs_fs *fs, uint64_t size)
{
	if (size < LAZY_MIN)
		fs->ahead_whole = 1;
}

static int u32_cmp(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

static int node_name_cmp(const void *a, const void *b)
{
	return strcmp((*(struct mfs_node *const *)a)->name,
		      (*(struct mfs_node *const *)b)->name);
}

/* Restores the max-heap by name v[0..n) (the largest name on top) after
 * v[i] was made smaller. */
static void name_heap_down(struct mfs_node **v, size_t n, size_t i)
{
	for (;;) {
		size_t l = 2 * i + 1, big = i;
		struct mfs_node *t;

		if (l < n && strcmp(v[l]->name, v[big]->name) > 0)
			big = l;
		if (l + 1 < n && strcmp(v[l + 1]->name, v[big]->name) > 0)
			big = l + 1;
		if (big == i)
			return;
		t = v[i];
		v[i] = v[big];
		v[big] = t;
		i = big;
	}
}

/* Restores the max-heap by name v[0..i] after v[i] was added. */
static void name_heap_up(struct mfs_node **v, size_t i)
{
	while (i > 0 && strcmp(v[i]->name, v[(i - 1) / 2]->name) > 0) {
		struct mfs_node *t = v[i];

		v[i] = v[(i - 1) / 2];
		v[(i - 1) / 2] = t;
		i = (i - 1) / 2;
	}
}

/* The messages after msg by name that fetch-ahead wants, in name order,
 * at most max: a malloc'd array (*n), or NULL when there are none or
 * memory is short. The max first are kept in a heap as the folder is
 * walked, so that a folder of any size costs one comparison a message,
 * not a sort of all of them. Caller holds the lock. */
static struct mfs_node **ahead_by_name(struct mfs_fs *fs,
				       const struct mfs_node *msg, size_t max,
				       size_t *n)
{
	struct mfs_node **v, *c;
	size_t k = 0;

	*n = 0;
	v = malloc((max ? max : 1) * sizeof(*v));
	if (v == NULL || max == 0)
		return v;
	for (c = msg->parent->first_child; c != NULL; c = c->next_sibling) {
		if (c == msg || strcmp(c->name, msg->name) <= 0 ||
		    (k == max && strcmp(c->name, v[0]->name) >= 0) ||
		    !ahead_wants(fs, c))
			continue;
		if (k < max) {
			v[k] = c;
			name_heap_up(v, k++);
		} else {
			v[0] = c;
			name_heap_down(v, k, 0);
		}
	}
	qsort(v, k, sizeof(*v), node_name_cmp);
	*n = k;
	return v;
}

/* Whether c is among v[0..n). */
static int picked(struct mfs_node *const *v, size_t n,
		  const struct mfs_node *c)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (v[i] == c)
			return 1;
	return 0;
}

/* A set of nodes (open addressing on their addresses), for the batch
 * being picked: whether a node is in it already without a look at each
 * of up to AHEAD_MAX others. */
struct node_set {
	struct mfs_node **slot; /* owned; NULL: empty */
	size_t mask;		/* slots - 1, a power of two minus one */
};

/* A set for up to max nodes (half full at most). Returns 0, or -1 when
 * memory is short. */
static int node_set_init(struct node_set *s, size_t max)
{
	size_t n = 16;

	while (n < 2 * max)
		n *= 2;
	s->slot = calloc(n, sizeof(*s->slot));
	s->mask = n - 1;
	return s->slot != NULL ? 0 : -1;
}

/* Adds c: 1 when it was not in the set yet, 0 when it was. */
static int node_set_add(struct node_set *s, struct mfs_node *c)
{
	size_t i = ((uintptr_t)c >> 4) * 0x9E3779B97F4A7C15ULL >> 20;

	for (i &= s->mask; s->slot[i] != NULL; i = (i + 1) & s->mask)
		if (s->slot[i] == c)
			return 0;
	s->slot[i] = c;
	return 1;
}

/* Whether the cache holds what fetch-ahead would bring of msg: its raw
 * bytes, or the skeleton it keeps when a skeleton would come
 * (ahead_skeletal). As the cache's index knows: no look at the disk (one
 * per message read in a row costs more than the rare entry another
 * process wrote, which ahead_run() still finds). Caller holds the lock. */
static int msg_cached(struct mfs_fs *fs, struct mfs_node *msg)
{
	struct msg_ref r;
	char key[1024];
	int have = 0;

	if (msg_ref_take(msg, &r) != 0)
		return 0;
	if (cache_key(&r, "", key, sizeof(key)) == 0)
		have = mfs_cache_known(fs->cache, key, r.msg.size);
	if (!have && ahead_skeletal(fs, msg) &&
	    cache_key(&r, ".s", key, sizeof(key)) == 0)
		have = mfs_cache_known(fs->cache, key, MFS_CACHE_ANY_SIZE);
	msg_ref_free(&r);
	return have;
}

/* The batch of a fetch-ahead from msg (see above) into out (room for
 * max): msg first when it is wanted, then the next ones by name and in
 * the directory's order in turn, then those before msg in the
 * directory's order; only messages fetch-ahead wants (ahead_wants) and
 * the cache does not hold; at most max_bytes (a skeleton counts
 * HOLE_MIN) and max_large messages that come as skeletons
 * (ahead_skeletal). Returns how many. Caller holds the lock. */
static size_t ahead_pick(struct mfs_fs *fs, struct mfs_node *msg,
			 struct mfs_node **out, size_t max, uint64_t max_bytes,
			 size_t max_large)
{
	size_t n = 0, nn = 0, in = 0, large = 0;
	struct mfs_node **names = ahead_by_name(fs, msg, max, &nn);
	struct mfs_node *next = msg->next_sibling, *prev = msg->prev_sibling;
	struct node_set taken;
	uint64_t bytes = 0;
	int turn = 0, skel;

	if (node_set_init(&taken, max) != 0) {
		free(names);
		return 0; /* memory is short: no batch */
	}
	node_set_add(&taken, msg);
	if (ahead_wants(fs, msg) && !msg_cached(fs, msg)) {
		out[n++] = msg;
		large = ahead_skeletal(fs, msg);
		bytes = large ? HOLE_MIN : msg->msg.size;
	}
	while (n < max && bytes < max_bytes) {
		struct mfs_node *c = NULL;

		if (turn == 0 && in < nn) {
			c = names[in++];
		} else if (turn == 1 && next != NULL) {
			c = next;
			next = next->next_sibling;
		} else if (in >= nn && next == NULL && prev != NULL) {
			c = prev;
			prev = prev->prev_sibling;
		} else if (in >= nn && next == NULL) {
			break;
		}
		turn = !turn;
		if (c == NULL || !ahead_wants(fs, c) || msg_cached(fs, c))
			continue;
		skel = ahead_skeletal(fs, c);
		if (skel && large == max_large)
			continue;
		if (!node_set_add(&taken, c))
			continue; /* in the batch already */
		large += skel;
		bytes += skel ? HOLE_MIN : c->msg.size;
		out[n++] = c;
	}
	free(taken.slot);
	free(names);
	return n;
}

/* How many messages the batch after one of window messages asks for. */
static size_t ahead_double(size_t window)
{
	return window * 2 < AHEAD_MAX ? window * 2 : AHEAD_MAX;
}

/* The skeletal messages the batch after this one (of window messages,
 * batch[0..nbatch)) will likely hold, whose structures can come with this
 * one (skeleton_many's later), ascending UIDs in later (room for
 * AHEAD_LARGE_MAX). Returns how many. Caller holds the lock. */
static size_t ahead_later(struct mfs_fs *fs, struct mfs_node *msg,
			  struct mfs_node *const *batch, size_t nbatch,
			  size_t window, uint32_t *later)
{
	size_t max = window + ahead_double(window);
	struct mfs_node **v = calloc(max, sizeof(*v));
	size_t nv, i, n = 0;

	if (v == NULL)
		return 0;
	nv = ahead_pick(fs, msg, v, max, 3 * (uint64_t)AHEAD_BYTES,
			2 * AHEAD_LARGE_MAX);
	for (i = 0; i < nv && n < AHEAD_LARGE_MAX; i++)
		if (ahead_skeletal(fs, v[i]) && !picked(batch, nbatch, v[i]))
			later[n++] = v[i]->msg.uid;
	free(v);
	qsort(later, n, sizeof(*later), u32_cmp);
	return n;
}

static struct ahead *ahead_start(struct mfs_fs *fs, struct mfs_node *msg,
				 size_t window);
static struct ahead *ahead_make(struct mfs_fs *fs, struct mfs_node *msg,
				size_t window);
static void ahead_register(struct mfs_fs *fs, struct ahead *a,
			   const struct mfs_node *msg);

/* Whether the cache holds item it (msg_cached, with a look at the disk). */
static int ahead_item_cached(struct mfs_fs *fs, const struct ahead_item *it)
{
	char key[1024];

	if (mfs_cache_has(fs->cache, it->key, it->size))
		return 1;
	return it->node != NULL && /* a skeleton would come */
	       item_skel_key(it, key, sizeof(key)) == 0 &&
	       mfs_cache_has(fs->cache, key, MFS_CACHE_ANY_SIZE);
}

/* What batch a asks the store for: the skeletons and the whole messages
 * the cache does not hold, and the structures to bring ahead, into nx
 * (malloc'd arrays, ascending). Without the lock (a's items do not
 * change). Returns 0, or -1 when memory is short. */
static int ahead_request(struct mfs_fs *fs, const struct ahead *a,
			 struct mfs_many_more *nx)
{
	size_t i;

	memset(nx, 0, sizeof(*nx));
	nx->uids = calloc(a->n + 1, sizeof(*nx->uids));
	nx->whole = calloc(a->n + 1, sizeof(*nx->whole));
	nx->later = calloc(a->nlater + 1, sizeof(*nx->later));
	if (nx->uids == NULL || nx->whole == NULL || nx->later == NULL) {
		mfs_many_more_free(nx);
		return -1;
	}
	for (i = 0; i < a->n; i++) {
		if (ahead_item_cached(fs, &a->item[i]))
			continue; /* done at the end */
		if (a->item[i].node != NULL)
			nx->uids[nx->n++] = a->item[i].uid;
		else
			nx->whole[nx->nwhole++] = a->item[i].uid;
	}
	memcpy(nx->later, a->later, a->nlater * sizeof(*nx->later));
	nx->nlater = a->nlater;
	return 0;
}

/* skeleton_many's more (store.h): when a reader has asked for the batch
 * after one that a's thread fetches (ahead_touch), that batch is made
 * now and carried by the same call, so that it goes out while the one
 * before still comes. On a's thread. */
static int ahead_more(void *ctx, struct mfs_many_more *nx)
{
	struct ahead *a = ctx, *b = NULL, **v;
	struct mfs_fs *fs = a->fs;
	size_t i;

	pthread_mutex_lock(&fs->lock);
	for (i = 0; i <= a->nchain && b == NULL; i++) {
		struct ahead *x = i == 0 ? a : a->chain[i - 1];
		struct mfs_node *c = x->follow;

		if (c == NULL)
			continue;
		x->follow = NULL;
		v = realloc(a->chain, (a->nchain + 1) * sizeof(*v));
		if (v != NULL)
			a->chain = v;
		if (v != NULL && c->linked && c->parent == a->dir)
			b = ahead_make(fs, c, ahead_double(x->window));
		if (b != NULL) {
			a->chain[a->nchain++] = b;
			ahead_register(fs, b, c);
		}
		mfs_nodes_release(fs->nodes, c);
	}
	pthread_mutex_unlock(&fs->lock);
	if (b == NULL || ahead_request(fs, b, nx) != 0)
		return 0; /* its items end with this call */
	if (nx->n + nx->nwhole + nx->nlater > 0)
		return 1;
	mfs_many_more_free(nx);
	return 0;
}

/* The end of batch a, fetched by its own thread or carried: every item
 * not come yet never will on this call, the batch after it starts when a
 * reader asked for it meanwhile. rc and err: how the call ended. Caller
 * holds the lock. */
static void ahead_end(struct ahead *a, int rc, const struct mfs_err *err)
{
	struct mfs_fs *fs = a->fs;
	size_t i;

	a->rc = rc;
	a->err = *err;
	for (i = 0; i < a->n; i++)
		if (!a->item[i].done)
			ahead_item_done(a, &a->item[i]);
	if (a->follow != NULL) {
		struct mfs_node *c = a->follow;

		a->follow = NULL;
		if (rc == MFS_OK && c->linked && c->parent == a->dir)
			ahead_start(fs, c, ahead_double(a->window));
		mfs_nodes_release(fs->nodes, c);
	}
	mfs_nodes_release(fs->nodes, a->dir);
	a->dir = NULL;
	a->ended = 1;
	a->ended_at = time(NULL);
	if (rc != MFS_OK)
		a->followed = 1; /* no read in a row goes on from a failure */
	fs->ahead_last = a->ended_at;
}

/* The batch's thread: fetches what the cache does not have, and the
 * batches that readers ask for meanwhile on the same call (ahead_more),
 * then lets every waiter go on, and starts the batch after them when a
 * reader asked for that after the last response. */
static void *ahead_run(void *arg)
{
	struct ahead *a = arg;
	struct mfs_fs *fs = a->fs;
	const struct mfs_store_ops *ops = fs->store->ops;
	struct mfs_many_more nx;
	struct mfs_err err;
	size_t i;
	int rc = MFS_OK;

	mfs_err_clear(&err);
	if (ahead_request(fs, a, &nx) == 0) {
		if (ops->skeleton_many != NULL &&
		    nx.n + nx.nwhole + nx.nlater > 0) {
			struct mfs_many_cb cb = {ahead_open, ahead_done,
						 ahead_skel_open,
						 ahead_skel_done, a,
						 ahead_more};

			rc = ops->skeleton_many(fs->store, a->mailbox,
						a->validity, nx.uids, nx.n,
						HOLE_MIN, nx.whole, nx.nwhole,
						nx.later, nx.nlater, &cb,
						&err);
		} else if (nx.nwhole > 0) {
			rc = ops->fetch_many(fs->store, a->mailbox,
					     a->validity, nx.whole, nx.nwhole,
					     ahead_open, ahead_done, a, &err);
		}
		mfs_many_more_free(&nx);
	}
	if (rc != MFS_OK)
		mfs_log_debug("fetch-ahead: %s", err.msg);
	pthread_mutex_lock(&fs->lock);
	for (i = 0; i < a->nchain; i++)
		ahead_end(a->chain[i], rc, &err);
	ahead_end(a, rc, &err);
	pthread_cond_broadcast(&fs->ahead_cond);
	pthread_mutex_unlock(&fs->lock);
	return NULL;
}

/* Frees the batches whose thread has ended, that nobody waits on and
 * that a read in a row will not follow any more (all: every one that
 * has ended). A batch's chain goes with it: each of those is on
 * fs->aheads too, and ended with it. Caller holds the lock. */
static void aheads_reap(struct mfs_fs *fs, int all)
{
	struct ahead **p = &fs->aheads, *a;
	time_t now = time(NULL);

	while ((a = *p) != NULL) {
		if (a->ended && a->waiters == 0 &&
		    (all || a->followed ||
		     now - a->ended_at > AHEAD_GAP)) {
			*p = a->next;
			/* it has ended: only its return is left */
			if (a->threaded)
				pthread_join(a->thread, NULL);
			ahead_free(a);
			free(a);
		} else {
			p = &a->next;
		}
	}
}

/* A batch of at most window messages from msg (see above); msg is its
 * first when fetch-ahead wants it. Not on fs->aheads yet, and no thread:
 * its dir and the nodes of its skeletal items are held. Returns NULL when
 * there is nothing to fetch or memory is short. Caller holds the lock and
 * a hold on msg. */
static struct ahead *ahead_make(struct mfs_fs *fs, struct mfs_node *msg,
				size_t window)
{
	struct mfs_node *dir = msg->parent, **pick = calloc(window,
							    sizeof(*pick));
	struct ahead *a = calloc(1, sizeof(*a));
	struct msg_ref r;
	char key[1024];
	size_t i, np;

	if (a == NULL || pick == NULL)
		goto fail;
	a->fs = fs;
	a->item = calloc(window, sizeof(*a->item));
	a->mailbox = strdup(dir->mailbox);
	if (a->item == NULL || a->mailbox == NULL)
		goto fail;
	a->dir_ino = dir->ino;
	a->validity = dir->validity;
	a->window = window;
	np = ahead_pick(fs, msg, pick, window, AHEAD_BYTES, AHEAD_LARGE_MAX);
	if (fs->store->ops->skeleton_many != NULL)
		a->nlater = ahead_later(fs, msg, pick, np, window, a->later);
	for (i = 0; i < np; i++) {
		struct mfs_node *c = pick[i];
		struct ahead_item *it = &a->item[a->n];

		if (msg_ref_take(c, &r) != 0)
			break;
		if (cache_key(&r, "", key, sizeof(key)) == 0 &&
		    (it->key = strdup(key)) != NULL) {
			it->uid = c->msg.uid;
			it->size = c->msg.size;
			if (ahead_skeletal(fs, c)) {
				mfs_nodes_hold(c);
				it->node = c;
			}
			a->n++;
		}
		msg_ref_free(&r);
	}
	if (a->n == 0)
		goto fail;
	qsort(a->item, a->n, sizeof(*a->item), item_cmp);
	a->dir = dir;
	mfs_nodes_hold(dir);
	free(pick);
	return a;
fail:
	if (a != NULL)
		ahead_free(a);
	free(a);
	free(pick);
	return NULL;
}

/* Puts batch a (ahead_make) on fs->aheads, where readers find it. Caller
 * holds the lock. */
static void ahead_register(struct mfs_fs *fs, struct ahead *a,
			   const struct mfs_node *msg)
{
	mfs_log_debug("fetch-ahead: %zu of %s from uid %u%s", a->n,
		      a->mailbox, msg->msg.uid,
		      a->threaded ? "" : " (carried)");
	a->next = fs->aheads;
	fs->aheads = a;
	fs->ahead_folder = a->dir_ino;
	fs->ahead_window = a->window;
	fs->ahead_last = time(NULL);
}

/* Starts a batch of at most window messages from msg (ahead_make) on a
 * thread of its own. Returns the batch, or NULL when there is nothing to
 * fetch, or memory or a thread is short (the reader then fetches its
 * message alone). Caller holds the lock and a hold on msg. */
static struct ahead *ahead_start(struct mfs_fs *fs, struct mfs_node *msg,
				 size_t window)
{
	struct ahead *a = ahead_make(fs, msg, window);
	size_t i;

	if (a == NULL)
		return NULL;
	a->threaded = 1;
	if (pthread_create(&a->thread, NULL, ahead_run, a) != 0) {
		mfs_log_err("fetch-ahead: cannot start a thread");
		for (i = 0; i < a->n; i++)
			if (a->item[i].node != NULL)
				mfs_nodes_release(fs->nodes, a->item[i].node);
		mfs_nodes_release(fs->nodes, a->dir);
		ahead_free(a);
		free(a);
		return NULL;
	}
	ahead_register(fs, a, msg);
	return a;
}

/* A reader has taken msg. When msg is past the first 1/AHEAD_FOLLOW of a
 * batch that no batch follows yet, the reader reads in a row: the next
 * batch, twice as large, starts now, or on this one's call while it
 * still comes, or as soon as it is done, so that it comes while the
 * reader reads this one. Caller holds the lock and a hold on msg. */
static void ahead_touch(struct mfs_fs *fs, struct mfs_node *msg)
{
	struct ahead_item *it;
	struct ahead *a;

	if (fs->aheads == NULL)
		return;
	a = ahead_holding(fs, msg, &it);
	if (a == NULL || a->followed ||
	    (size_t)(it - a->item) * AHEAD_FOLLOW < a->n)
		return;
	a->followed = 1;
	if (!a->ended) {
		/* on this one's call (ahead_more), or once it is done,
		 * on the connection it leaves: a connection of its own
		 * would cost more round trips to open than the wait */
		mfs_nodes_hold(msg);
		a->follow = msg;
		return;
	}
	ahead_start(fs, msg, ahead_double(a->window));
}

/* Brings msg, and the neighbours a read in a row will want next, when
 * msg is neither cached nor being brought (see above); waits until msg
 * has come. Caller holds the lock; msg is held. Drops the lock while it
 * waits. Returns MFS_OK, or the network error that made the fetch of
 * msg fail (the caller then fails too rather than wait a second time). */
static int fetch_ahead(struct mfs_fs *fs, struct mfs_node *msg,
		       struct mfs_err *ret)
{
	struct mfs_node *dir = msg->parent;
	struct ahead_item *it;
	struct ahead *a;
	int rc = MFS_OK;

	if (fs->store->ops->fetch_many == NULL || msg->msg.uid == 0 ||
	    dir->kind != MFS_N_FOLDER)
		return MFS_OK;
	aheads_reap(fs, 0);
	a = ahead_holding(fs, msg, &it);
	if (a != NULL && it->done && msg->priv == NULL && !msg_cached(fs, msg))
		a = NULL; /* it has not brought msg, and will not: again */
	if (a == NULL) {
		size_t window = AHEAD_FIRST;
		int run = fs->ahead_folder == dir->ino &&
			  time(NULL) - fs->ahead_last <= AHEAD_GAP;

		if (!ahead_wants(fs, msg) || msg_cached(fs, msg))
			return MFS_OK;
		if (run)
			window = ahead_double(fs->ahead_window);
		else
			fs->ahead_whole = 0;
		a = ahead_start(fs, msg, window);
		if (a == NULL || (it = ahead_find(a, msg->msg.uid)) == NULL)
			return MFS_OK;
	}
	if (!it->done) {
		a->waiters++;
		while (!it->done)
			pthread_cond_wait(&fs->ahead_cond, &fs->lock);
		a->waiters--;
	}
	if (a->ended && a->rc != MFS_OK &&
	    (mfs_err_unreachable(a->err.code) || a->err.code == MFS_E_TLS) &&
	    msg->priv == NULL && !msg_cached(fs, msg))
		rc = mfs_err_set(ret, a->err.code, "%s", a->err.msg);
	ahead_touch(fs, msg);
	return rc;
}

void msgview_ahead_stop(struct mfs_fs *fs)
{
	struct ahead *a;

	pthread_mutex_lock(&fs->lock);
	for (;;) {
		for (a = fs->aheads; a != NULL && a->ended; a = a->next)
			;
		if (a == NULL)
			break;
		pthread_cond_wait(&fs->ahead_cond, &fs->lock);
	}
	aheads_reap(fs, 1);
	pthread_mutex_unlock(&fs->lock);
}

/* Maps a skeleton's memory file again after view_unload(). */
static int view_remap(struct view *v, struct mfs_err *err)
{
	if (v->map != NULL || v->len == 0)
		return MFS_OK;
	v->map = mmap(NULL, v->len, PROT_READ, MAP_SHARED, v->fd, 0);
	if (v->map == MAP_FAILED) {
		v->map = NULL;
		return mfs_err_set(err, MFS_E_IO, "skeleton: mmap: %s",
				   strerror(errno));
	}
	v->layout->buf = v->map;
	return MFS_OK;
}

/* Pins v and puts it first on the list. Caller holds the lock. */
static int view_ready(struct mfs_fs *fs, struct view *v, struct view **out)
{
	views_push(v);
	v->busy++;
	views_trim(fs, v);
	*out = v;
	return MFS_OK;
}

/*
 * msg's view, mapped and laid out, pinned in *out until view_put(): it
 * stays while the caller drops the lock. Made at the first look (the
 * message fetched, with neighbours ahead), and again from the cache after
 * view_unload(). Caller holds the lock and a hold on msg or on a node
 * below it; the lock is dropped while bytes are fetched or read.
 */
static int view_get(struct mfs_fs *fs, struct mfs_node *msg,
		    struct view **out, struct mfs_err *err)
{
	struct view *v, *nv = NULL;
	struct msg_ref r;
	int rc;

again:
	v = msg->priv;
	if (v == NULL) {
		if (fetch_ahead(fs, msg, err) != MFS_OK)
			return err->code;
		v = msg->priv;
	} else {
		ahead_touch(fs, msg);
	}
	if (v != NULL && !v->loaded && v->segs != NULL &&
	    view_remap(v, err) != MFS_OK)
		return err->code;
	if (v != NULL && (v->loaded || v->segs != NULL))
		return view_ready(fs, v, out);
	/* none yet, or a whole message's unloaded: laid out (again) from
	 * the cache, the same kind as before */
	if (msg_ref_take(msg, &r) != 0)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	if (v != NULL)
		v->busy++;
	pthread_mutex_unlock(&fs->lock);
	rc = v != NULL ? view_build_whole(fs, &r, &nv, err)
		       : view_build(fs, &r, &nv, err);
	pthread_mutex_lock(&fs->lock);
	msg_ref_free(&r);
	if (v != NULL)
		v->busy--;
	if (rc != MFS_OK)
		return rc;
	if (msg->priv == NULL) {
		nv->fs = fs;
		nv->msg = msg;
		fs->views++;
		msg->priv = nv;
		return view_ready(fs, nv, out);
	}
	if (msg->priv == v && v != NULL && !v->loaded && v->layout == NULL) {
		if (nv->nentries != v->nentries) {
			view_free(nv);
			return mfs_err_set(err, MFS_E_IO,
					   "%s: the cached message no longer "
					   "has the layout it had",
					   msg->name);
		}
		v->fd = nv->fd;
		v->map = nv->map;
		v->len = nv->len;
		v->layout = nv->layout;
		v->layout->release_ctx = v;
		v->by_id = nv->by_id;
		nv->fd = -1;
		nv->map = NULL;
		nv->layout = NULL;
		nv->by_id = NULL;
		view_free(nv);
		return view_ready(fs, v, out);
	}
	/* another thread made it meanwhile */
	view_free(nv);
	nv = NULL;
	goto again;
}

/* Unpins v (view_get). Caller holds the lock. */
static void view_put(struct mfs_fs *fs, struct view *v)
{
	v->busy--;
	views_trim(fs, v);
}

/* The text of the flags file. Returns a malloc'd string or NULL. */
char *flags_text(unsigned flags)
{
	char *s = calloc(1, 64);
	size_t i;

	if (s == NULL)
		return NULL;
	for (i = 0; i < MFS_NFLAGS; i++) {
		if (flags & (1u << i)) {
			strcat(s, mfs_flag_names[i]);
			strcat(s, "\n");
		}
	}
	return s;
}

void flags_node_update(struct mfs_node *msg)
{
	struct mfs_node *c;
	char *text = flags_text(msg->msg.flags);

	for (c = msg->first_child; c != NULL; c = c->next_sibling)
		if (c->kind == MFS_N_FILE && c->file == MFS_F_FLAGS)
			c->size = text != NULL ? strlen(text) : 0;
	free(text);
}

int flags_node_add(struct mfs_fs *fs, struct mfs_node *msg)
{
	struct mfs_node *flags = mfs_nodes_child(fs->nodes, msg, "flags");

	if (flags != NULL)
		return 0;
	flags = mfs_nodes_add(fs->nodes, msg, "flags", MFS_N_FILE);
	if (flags == NULL)
		return -1;
	flags->file = MFS_F_FLAGS;
	flags->mtime = msg->mtime;
	flags_node_update(msg);
	return 0;
}

/* Makes the nodes of a layout directory under dirnode. Caller holds the
 * lock. Returns 0, or -1 on ENOMEM. */
static int dir_populate(struct mfs_fs *fs, struct mfs_node *dirnode,
			const struct mfs_dir *d)
{
	size_t i;

	for (i = 0; i < d->n; i++) {
		struct mfs_entry *e = &d->entries[i];
		struct mfs_node *n;

		if (mfs_nodes_child(fs->nodes, dirnode, e->name) != NULL)
			continue;
		n = mfs_nodes_add(fs->nodes, dirnode, e->name,
				  e->is_dir ? MFS_N_PARTDIR : MFS_N_FILE);
		if (n == NULL)
			return -1;
		n->mtime = dirnode->mtime;
		n->entry_id = e->id;
		if (!e->is_dir)
			n->file = MFS_F_PART;
	}
	dirnode->populated = 1;
	return 0;
}

/* Makes the children of a message or part directory, fetching the message
 * when needed. Caller holds the lock and a hold on dir. */
int dir_ensure(struct mfs_fs *fs, struct mfs_node *dir,
		      struct mfs_err *err)
{
	struct mfs_node *msg = message_of(dir);
	const struct mfs_entry *e;
	struct view *v;
	int rc = MFS_OK;

	if (dir->populated)
		return MFS_OK;
	if (view_get(fs, msg, &v, err) != MFS_OK)
		return err->code;
	if (dir->populated)
		goto put;
	if (dir->kind == MFS_N_PARTDIR) {
		e = view_entry(v, dir);
		if (e == NULL || !e->is_dir)
			rc = mfs_err_set(err, MFS_E_IO,
					 "%s: not in its message's layout",
					 dir->name);
		else if (dir_populate(fs, dir, e->dir) != 0)
			rc = mfs_err_set(err, MFS_E_NOMEM, "out of memory");
		goto put;
	}
	if (dir_populate(fs, dir, &v->layout->root_dir) != 0) {
		rc = mfs_err_set(err, MFS_E_NOMEM, "out of memory");
		goto put;
	}
	if (flags_node_add(fs, dir) != 0)
		rc = mfs_err_set(err, MFS_E_NOMEM, "out of memory");
put:
	view_put(fs, v);
	return rc;
}

/* The entry of the whole message's layout at the path of n below msg, or
 * NULL when that layout has no such file. */
static struct mfs_entry *full_entry(const struct view *full,
				    const struct mfs_node *msg,
				    const struct mfs_node *n)
{
	const char *comp[3 * MFS_MIME_DEPTH_MAX + 4];
	const struct mfs_node *c;
	struct mfs_entry *e;
	size_t k = 0, i;

	for (c = n; c != NULL && c != msg; c = c->parent) {
		if (k == sizeof(comp) / sizeof(comp[0]))
			return NULL;
		comp[k++] = c->name;
	}
	for (i = 0; i < k / 2; i++) {
		const char *t = comp[i];

		comp[i] = comp[k - 1 - i];
		comp[k - 1 - i] = t;
	}
	e = mfs_layout_lookup(full->layout, comp, k);
	return e != NULL && !e->is_dir ? e : NULL;
}

/* Makes the whole-message view of msg's skeleton v (pinned). Caller
 * holds the lock and a hold on msg; the lock is dropped while the message
 * is fetched. */
static int full_ensure(struct mfs_fs *fs, struct mfs_node *msg,
		       struct view *v, struct mfs_err *err)
{
	struct view *fv = NULL;
	struct msg_ref r;
	int rc;

	if (v->full != NULL)
		return MFS_OK;
	if (msg_ref_take(msg, &r) != 0)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	ahead_left_out(fs, r.msg.size);
	pthread_mutex_unlock(&fs->lock);
	rc = view_build_whole(fs, &r, &fv, err);
	pthread_mutex_lock(&fs->lock);
	msg_ref_free(&r);
	if (rc != MFS_OK)
		return rc;
	if (v->full == NULL)
		v->full = fv;
	else
		view_free(fv);
	return MFS_OK;
}

/* The file of the whole message that n shows: *fv, *fe. v is the
 * message's skeleton, pinned. Caller holds the lock and a hold on n, as
 * for full_ensure(). */
static int full_file(struct mfs_fs *fs, struct mfs_node *n, struct view *v,
		     struct view **fv, struct mfs_entry **fe,
		     struct mfs_err *err)
{
	struct mfs_node *msg = message_of(n);

	if (full_ensure(fs, msg, v, err) != MFS_OK)
		return err->code;
	*fv = v->full;
	*fe = full_entry(v->full, msg, n);
	if (*fe == NULL)
		return mfs_err_set(err, MFS_E_IO,
				   "%s: the message does not match its "
				   "structure",
				   n->name);
	return MFS_OK;
}

struct section_fill {
	struct mfs_fs *fs;
	const struct msg_ref *ref;
	const char *section;
};

static int section_fill(void *ctx, int fd, size_t *len, struct mfs_err *err)
{
	struct section_fill *f = ctx;
	struct mfs_store *st = f->fs->store;
	int rc;

	pthread_mutex_lock(&f->fs->lock);
	ahead_left_out(f->fs, f->ref->msg.size);
	ahead_wait_finishing(f->fs);
	pthread_mutex_unlock(&f->fs->lock);
	rc = st->ops->fetch_section(st, f->ref->mailbox, f->ref->validity,
				    &f->ref->msg, f->section, fd, len, err);

	if (rc == MFS_E_NOENT)
		folder_gone_msg(f->fs, f->ref->mailbox);
	return rc;
}

/* An fd on the bytes of hole g of message r: from the cache, else
 * fetched into it. Called without the lock. */
static int hole_fd(struct mfs_fs *fs, const struct msg_ref *r,
		   const struct mfs_seg *g, int *fd, struct mfs_err *err)
{
	struct section_fill ctx = {fs, r, g->section};
	char key[1024], suffix[80];

	snprintf(suffix, sizeof(suffix), ".h%s", g->section);
	if (cache_key(r, suffix, key, sizeof(key)) != 0)
		return mfs_err_set(err, MFS_E_IO, "cache key too long");
	return mfs_cache_get(fs->cache, key, g->len, section_fill, &ctx, fd,
			     err);
}

/* Decodes file e of a skeleton, which lies in hole g, from the hole's
 * bytes in hfd: into sink, or, when sink is NULL, only to learn the size
 * (mime.c counts; stored in *size). */
static int hole_decode(int hfd, const struct mfs_seg *g,
		       const struct mfs_entry *e, mfs_sink_fn sink, void *ctx,
		       uint64_t *size, struct mfs_err *err)
{
	struct mfs_layout hole = {0};
	struct mfs_entry te = *e;
	struct mapping mapping;
	char *map = NULL;
	int rc;

	if (g->len > 0) {
		map = mmap(NULL, g->len, PROT_READ, MAP_SHARED, hfd, 0);
		if (map == MAP_FAILED)
			return mfs_err_set(err, MFS_E_IO, "cache: mmap: %s",
					   strerror(errno));
	}
	hole.buf = map;
	hole.len = g->len;
	mapping.map = map;
	mapping.len = g->len;
	hole.release = mapping_release;
	hole.release_ctx = &mapping;
	te.src.off -= g->off;
	if (sink != NULL)
		rc = mfs_entry_decode(&hole, &te, sink, ctx, err);
	else
		rc = mfs_entry_size(&hole, &te, size, err);
	if (map != NULL)
		munmap(map, g->len);
	return rc;
}

/* Whether file e of view v is the top message.eml (the whole message). */
static int is_message_eml(const struct view *v, const struct mfs_entry *e)
{
	return e->src.kind == MFS_SRC_RAW && e->src.off == 0 &&
	       e->src.len == v->len;
}

/* Whether node_size() of n would fetch: a file of a skeleton whose size
 * only its hole or the whole message can tell. Caller holds the lock. */
int size_needs_fetch(struct mfs_node *n)
{
	const struct view *v;
	const struct mfs_entry *e;
	int whole;

	if (n->kind != MFS_N_FILE || n->file != MFS_F_PART || n->sized)
		return 0;
	v = message_of(n)->priv;
	/* a skeleton keeps its layout when unloaded */
	if (v == NULL || v->segs == NULL)
		return 0;
	e = view_entry(v, n);
	if (e == NULL || e->src.size_known)
		return 0;
	if (entry_seg(v, e, &whole) != NULL)
		return 1;
	return whole && !is_message_eml(v, e);
}

/* node_size() of file n, entry e of skeleton v (pinned). Caller holds
 * the lock and a hold on n (a kernel lookup or mfs_nodes_hold()); the
 * lock is dropped while bytes are fetched. */
static int lazy_size(struct mfs_fs *fs, struct mfs_node *n, struct view *v,
		     struct mfs_entry *e, struct mfs_err *err)
{
	struct mfs_node *msg = message_of(n);
	struct view *fv = NULL;
	struct mfs_entry *fe = NULL;
	const struct mfs_seg *g;
	struct msg_ref r;
	uint64_t size = 0;
	int whole, hfd = -1, rc;

	g = entry_seg(v, e, &whole);
	if (!whole && g == NULL)
		return mfs_entry_size(v->layout, e, &n->size, err);
	if (e->src.size_known) {
		n->size = e->src.size;
		return MFS_OK;
	}
	if (whole && is_message_eml(v, e)) {
		n->size = msg->msg.size; /* message.eml */
		return MFS_OK;
	}
	if (whole || v->full != NULL) {
		if (full_file(fs, n, v, &fv, &fe, err) != MFS_OK)
			return err->code;
		return mfs_entry_size(fv->layout, fe, &n->size, err);
	}
	/* a file in a hole: its size is known once it is decoded */
	if (msg_ref_take(msg, &r) != 0)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	pthread_mutex_unlock(&fs->lock);
	rc = hole_fd(fs, &r, g, &hfd, err);
	if (rc == MFS_OK) {
		rc = hole_decode(hfd, g, e, NULL, NULL, &size, err);
		close(hfd);
	}
	pthread_mutex_lock(&fs->lock);
	msg_ref_free(&r);
	if (rc != MFS_OK)
		return rc;
	e->src.size = size;
	e->src.size_known = 1;
	n->size = size;
	return MFS_OK;
}

/* Writes decoded bytes to the cache file being filled. */
struct decode_ctx {
	int fd;
	size_t len;
};

static int decode_sink(void *ctx, const char *data, size_t len)
{
	struct decode_ctx *d = ctx;

	while (len > 0) {
		ssize_t w = write(d->fd, data, len);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return MFS_E_IO;
		d->len += (size_t)w;
		data += w;
		len -= (size_t)w;
	}
	return 0;
}

struct part_fill {
	const struct mfs_layout *layout;
	const struct mfs_entry *entry;
};

static int part_fill(void *ctx, int fd, size_t *len, struct mfs_err *err)
{
	struct part_fill *p = ctx;
	struct decode_ctx d = {fd, 0};

	if (mfs_entry_decode(p->layout, p->entry, decode_sink, &d, err) !=
	    MFS_OK)
		return err->code;
	*len = d.len;
	return MFS_OK;
}

/*
 * A decoded file of at most MEM_PART_MAX bytes is decoded at each open
 * into memory owned by the open handle (h->buf), not into a cache entry
 * of its own: decoding a few kilobytes of a mapped message costs less
 * than making, writing and renaming a file (one inode allocation each, a
 * second one beside the message's). The open handles together hold at
 * most MEM_PARTS_MAX bytes so (fs->part_mem); beyond that, and for every
 * larger file, the decoded bytes go to a cache entry as before, so memory
 * does not grow with the size of a part or the number of open files.
 */
#define MEM_PART_MAX  (256 * 1024)
#define MEM_PARTS_MAX (16 * 1024 * 1024)

/* Takes room in memory for h's decoded file of size bytes: 1 when it is
 * taken (h->buf of size bytes, counted in fs->part_mem until the handle
 * is freed), 0 when the file goes through the cache. Caller holds the
 * lock. */
static int mem_reserve(struct mfs_fs *fs, struct handle *h, uint64_t size)
{
	if (size > MEM_PART_MAX || fs->part_mem + size > MEM_PARTS_MAX)
		return 0;
	h->buf = malloc(size > 0 ? size : 1);
	if (h->buf == NULL)
		return 0;
	h->cap = size;
	h->len = 0;
	h->mem = size;
	fs->part_mem += size;
	return 1;
}

/* Takes decoded bytes into the handle's buffer (mem_reserve). */
static int mem_sink(void *ctx, const char *data, size_t len)
{
	struct handle *h = ctx;

	if (len > h->cap - h->len)
		return MFS_E_IO; /* more than its size: not trusted */
	memcpy(h->buf + h->len, data, len);
	h->len += len;
	return 0;
}

/* After decoding into h->buf: MFS_OK when it holds the file's size in
 * bytes, as stat says, else MFS_E_IO (never bytes that disagree). */
static int mem_check(const struct handle *h, int rc, struct mfs_err *err)
{
	if (rc != MFS_OK)
		return rc;
	if (h->len != h->cap)
		return mfs_err_set(err, MFS_E_IO,
				   "decoded %zu bytes where its size is %zu",
				   h->len, h->cap);
	return MFS_OK;
}

/* Opens file e of view v (of message msg; cache key suffix ".<kind><id>"):
 * raw ranges straight from the view's file, small decoded files into
 * memory (MEM_PART_MAX), larger ones through a cache entry of their own.
 * Caller holds the lock and a hold on msg; the lock is dropped while
 * decoding. */
static int open_entry(struct mfs_fs *fs, struct mfs_node *msg, struct view *v,
		      const struct mfs_entry *e, char kind, uint64_t size,
		      struct handle *h, struct mfs_err *err)
{
	struct part_fill pf = {v->layout, e};
	struct msg_ref r;
	char key[1024], suffix[32];
	int rc;

	if (e->src.kind == MFS_SRC_RAW) {
		h->fd = dup(v->fd);
		if (h->fd < 0)
			return mfs_err_set(err, MFS_E_IO, "dup: %s",
					   strerror(errno));
		h->base = (off_t)e->src.off;
		h->size = e->src.len;
		return MFS_OK;
	}
	h->size = size;
	if (mem_reserve(fs, h, size)) {
		pthread_mutex_unlock(&fs->lock);
		rc = mem_check(h, mfs_entry_decode(v->layout, e, mem_sink, h,
						   err),
			       err);
	} else {
		if (msg_ref_take(msg, &r) != 0)
			return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
		snprintf(suffix, sizeof(suffix), ".%c%" PRIu32, kind, e->id);
		if (cache_key(&r, suffix, key, sizeof(key)) != 0) {
			msg_ref_free(&r);
			return mfs_err_set(err, MFS_E_IO,
					   "cache key too long");
		}
		msg_ref_free(&r);
		pthread_mutex_unlock(&fs->lock);
		rc = mfs_cache_get(fs->cache, key, h->size, part_fill, &pf,
				   &h->fd, err);
	}
	if (v->map != NULL)
		madvise(v->map, v->len, MADV_DONTNEED);
	pthread_mutex_lock(&fs->lock);
	return rc;
}

struct hole_fill {
	int hfd;
	const struct mfs_seg *g;
	const struct mfs_entry *e;
};

static int hole_part_fill(void *ctx, int fd, size_t *len, struct mfs_err *err)
{
	struct hole_fill *p = ctx;
	struct decode_ctx d = {fd, 0};

	if (hole_decode(p->hfd, p->g, p->e, decode_sink, &d, NULL, err) !=
	    MFS_OK)
		return err->code;
	*len = d.len;
	return MFS_OK;
}

/* Opens file n, entry e of a skeleton (pinned), which lies in hole g:
 * the hole is fetched (or found in the cache) and the file decoded from
 * it (into memory when small, as open_entry() does). Caller holds the
 * lock and a hold on n; the lock is dropped meanwhile. */
static int open_hole(struct mfs_fs *fs, struct mfs_node *n,
		     const struct mfs_entry *e, const struct mfs_seg *g,
		     struct handle *h, struct mfs_err *err)
{
	struct hole_fill hf = {-1, g, e};
	struct msg_ref r;
	char key[1024], suffix[32];
	int rc, mem;

	if (msg_ref_take(message_of(n), &r) != 0)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	snprintf(suffix, sizeof(suffix), ".l%" PRIu32, e->id);
	if (cache_key(&r, suffix, key, sizeof(key)) != 0) {
		msg_ref_free(&r);
		return mfs_err_set(err, MFS_E_IO, "cache key too long");
	}
	h->size = n->size;
	mem = e->src.kind != MFS_SRC_RAW && mem_reserve(fs, h, h->size);
	pthread_mutex_unlock(&fs->lock);
	rc = hole_fd(fs, &r, g, &hf.hfd, err);
	if (rc == MFS_OK && e->src.kind == MFS_SRC_RAW) {
		h->fd = hf.hfd;
		h->base = (off_t)(e->src.off - g->off);
		h->size = e->src.len;
	} else if (rc == MFS_OK && mem) {
		rc = mem_check(h, hole_decode(hf.hfd, g, e, mem_sink, h, NULL,
					      err),
			       err);
		close(hf.hfd);
	} else if (rc == MFS_OK) {
		rc = mfs_cache_get(fs->cache, key, h->size, hole_part_fill,
				   &hf, &h->fd, err);
		close(hf.hfd);
	}
	pthread_mutex_lock(&fs->lock);
	msg_ref_free(&r);
	return rc;
}

/* Brings the size of file n, entry e of view v (pinned), up to date.
 * Caller holds the lock and a hold on n. */
static int entry_size(struct mfs_fs *fs, struct mfs_node *n, struct view *v,
		      struct mfs_entry *e, struct mfs_err *err)
{
	int known = e->src.size_known, rc;

	if (v->segs != NULL) {
		rc = lazy_size(fs, n, v, e, err);
	} else {
		rc = mfs_entry_size(v->layout, e, &n->size, err);
		if (!known && v->map != NULL && n->size > 65536)
			madvise(v->map, v->len, MADV_DONTNEED);
	}
	if (rc == MFS_OK)
		n->sized = 1;
	return rc;
}

/* The view of n's message, pinned, and n's entry in it. Caller holds the
 * lock and a hold on n. */
static int view_of_file(struct mfs_fs *fs, struct mfs_node *n,
			struct view **v, struct mfs_entry **e,
			struct mfs_err *err)
{
	if (view_get(fs, message_of(n), v, err) != MFS_OK)
		return err->code;
	*e = view_entry(*v, n);
	if (*e != NULL && !(*e)->is_dir)
		return MFS_OK;
	view_put(fs, *v);
	return mfs_err_set(err, MFS_E_IO, "%s: not in its message's layout",
			   n->name);
}

/* Opens a file of a message directory. Caller holds the lock and a hold
 * on n; the lock may be dropped while bytes are fetched or decoded. */
int open_part(struct mfs_fs *fs, struct mfs_node *n, struct handle *h,
	      struct mfs_err *err)
{
	struct mfs_node *msg = message_of(n);
	struct view *v, *fv;
	const struct mfs_seg *g;
	struct mfs_entry *e, *fe;
	int whole, rc;

	if (view_of_file(fs, n, &v, &e, err) != MFS_OK)
		return err->code;
	if (!n->sized && (rc = entry_size(fs, n, v, e, err)) != MFS_OK)
		goto put;
	if (v->segs == NULL) {
		rc = open_entry(fs, msg, v, e, 'p', n->size, h, err);
		goto put;
	}
	g = entry_seg(v, e, &whole);
	/* a file in a hole comes from the whole message once that was
	 * fetched (message.eml read), rather than a second time */
	if (g != NULL && v->full == NULL)
		rc = open_hole(fs, n, e, g, h, err);
	else if (g == NULL && !whole)
		rc = open_entry(fs, msg, v, e, 's', n->size, h, err);
	else if ((rc = full_file(fs, n, v, &fv, &fe, err)) == MFS_OK)
		rc = open_entry(fs, msg, fv, fe, 'p', n->size, h, err);
put:
	view_put(fs, v);
	return rc;
}

int part_size(struct mfs_fs *fs, struct mfs_node *n, struct mfs_err *err)
{
	struct mfs_entry *e;
	struct view *v;
	int rc;

	if (n->sized)
		return MFS_OK;
	if (view_of_file(fs, n, &v, &e, err) != MFS_OK)
		return err->code;
	rc = entry_size(fs, n, v, e, err);
	view_put(fs, v);
	return rc;
}

/*
 * Prefetch (prefetch.c): the messages msgs[0..n) of folder dir that the
 * cache does not hold, fetched into it in one command, whatever their
 * sizes. Caller holds the lock and holds dir and msgs; the lock is dropped
 * while they are fetched.
 */
int msgview_fetch_into_cache(struct mfs_fs *fs, struct mfs_node *dir,
			     struct mfs_node **msgs, size_t n,
			     struct mfs_err *err)
{
	struct ahead a = {.fs = fs};
	uint32_t *uids = NULL, validity = dir->validity;
	char *mailbox = strdup(dir->mailbox), key[1024];
	struct msg_ref r;
	size_t i, k = 0;
	int rc = MFS_OK;

	a.item = calloc(n ? n : 1, sizeof(*a.item));
	uids = calloc(n ? n : 1, sizeof(*uids));
	if (mailbox == NULL || a.item == NULL || uids == NULL) {
		rc = mfs_err_set(err, MFS_E_NOMEM, "out of memory");
		goto free_all;
	}
	for (i = 0; i < n; i++) {
		if (!msgs[i]->linked || msgs[i]->msg.uid == 0 ||
		    msg_ref_take(msgs[i], &r) != 0)
			continue;
		if (cache_key(&r, "", key, sizeof(key)) == 0 &&
		    (a.item[a.n].key = strdup(key)) != NULL) {
			a.item[a.n].uid = r.msg.uid;
			a.item[a.n].size = r.msg.size;
			a.n++;
		}
		msg_ref_free(&r);
	}
	qsort(a.item, a.n, sizeof(*a.item), item_cmp);
	pthread_mutex_unlock(&fs->lock);
	for (i = 0; i < a.n; i++)
		if (!mfs_cache_has(fs->cache, a.item[i].key, a.item[i].size))
			uids[k++] = a.item[i].uid;
	if (k > 0)
		rc = fs->store->ops->fetch_many(fs->store, mailbox, validity,
						uids, k, ahead_open,
						ahead_done, &a, err);
	pthread_mutex_lock(&fs->lock);
free_all:
	ahead_free(&a);
	free(uids);
	free(mailbox);
	return rc;
}
