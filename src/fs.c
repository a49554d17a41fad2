/*
 * fs.c - the FUSE layer (see fs.h): the handlers, open files, files
 * written into folders, attributes. Its rooms (fsint.h): folders.c,
 * msgview.c and outbox.c.
 *
 * A request flows: kernel -> libfuse worker thread -> handler here ->
 * (tree lock) node lookup -> (no lock) store op or cache read -> (tree lock)
 * merge the result into the tree -> reply.
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
#include <sys/statvfs.h>
#include <unistd.h>

#include "journal.h"
#include "log.h"
#include "mime.h"
#include "names.h"
#include "node.h"
#include "spool.h"

/* A directory listing taken at opendir, served by readdir: the children
 * of the directory then, each held so that it stays until releasedir. Names
 * are read from the nodes when readdir runs (no copy: a folder of 100,000
 * messages would otherwise hold a second set of names while it is read).
 * Offsets: 0 is ".", 1 is "..", 2 + i is nodes[i]. */
struct dir_snap {
	uint64_t self, parent; /* inode numbers of "." and ".." */
	size_t n, room;
	struct mfs_node **nodes; /* owned array; each node held */
	struct dir_snap *prev, *next; /* in fs->snaps, until releasedir */
	unsigned refs; /* the handle's; and opendir_coming's while coming */
	/* A listing still coming (opendir_coming): nodes are added as its
	 * parts come; readdir waits for them, and at its end reports rc. */
	int coming;
	int rc;
	struct mfs_err err;
};

static void node_priv_free(struct mfs_node *n);

struct mfs_fs *mfs_fs_new(const struct mfs_account *acct,
			  struct mfs_store *store, struct mfs_cache *cache)
{
	struct mfs_fs *fs = calloc(1, sizeof(*fs));

	if (fs == NULL)
		return NULL;
	fs->nodes = mfs_nodes_new(node_priv_free);
	if (fs->nodes == NULL) {
		free(fs);
		return NULL;
	}
	pthread_mutex_init(&fs->lock, NULL);
	pthread_mutex_init(&fs->refresh, NULL);
	pthread_cond_init(&fs->ahead_cond, NULL);
	pthread_cond_init(&fs->snap_cond, NULL);
	fs->store = store;
	fs->cache = cache;
	fs->acct = acct;
	fs->uid = getuid();
	fs->gid = getgid();
	pthread_mutex_lock(&fs->lock);
	state_nodes_add(fs);
	pthread_mutex_unlock(&fs->lock);
	return fs;
}

static void handle_free(struct mfs_fs *fs, struct handle *h);
static void snap_free(struct mfs_fs *fs, struct dir_snap *s);

void mfs_fs_free(struct mfs_fs *fs)
{
	if (fs == NULL)
		return;
	msgview_ahead_stop(fs);
	mfs_journal_stop(fs->store); /* its hooks use the fs */
	mfs_fs_end_watch(fs);
	/* directories and files whose release never came (the session
	 * ended first) */
	pthread_mutex_lock(&fs->lock);
	while (fs->snaps != NULL)
		snap_free(fs, fs->snaps);
	pthread_mutex_unlock(&fs->lock);
	while (fs->handles != NULL) {
		if (fs->handles->dirty && !fs->handles->committed &&
		    fs->handles->node->file != MFS_F_FLAGS)
			mfs_log_err("%s: still open at the unmount; not "
				    "committed",
				    fs->handles->node->name);
		handle_free(fs, fs->handles);
	}
	mfs_nodes_free(fs->nodes);
	free(fs->sent_mailbox);
	free(fs->root_prefix);
	pthread_mutex_destroy(&fs->lock);
	pthread_mutex_destroy(&fs->refresh);
	pthread_cond_destroy(&fs->ahead_cond);
	pthread_cond_destroy(&fs->snap_cond);
	free(fs);
}

static void node_priv_free(struct mfs_node *n)
{
	if (n->kind == MFS_N_MESSAGE) {
		view_free(n->priv);
	} else if (n->kind == MFS_N_FILE && n->file == MFS_F_NEW) {
		struct upload *u = n->priv;

		close(u->fd);
		free(u);
	} else if (n->kind == MFS_N_FILE && n->file == MFS_F_OUTBOX) {
		struct sent_file *sf = n->priv;

		close(sf->fd);
		free(sf);
	}
	n->priv = NULL;
}

/* --- node kinds ------------------------------------------------------------
 *
 * What each kind of node does is one row of the table `kinds` below: a
 * handler finds the row of its node once (kind_of) and calls through it,
 * the way upas/nfs dispatches on the type of a qid. An op left NULL means
 * the kind does not do that, and the handler answers what fits (EPERM, or
 * EROFS on a read-only mount). Every op is called with the lock held and
 * the nodes it is given held; an op that goes to the network or the spool
 * drops the lock meanwhile. Ops that change the tree return 0 or an errno,
 * having logged what the server said.
 */

enum kind_id {
	K_ROOT,
	K_FOLDER,
	K_MESSAGE,
	K_PARTDIR,
	K_OUTBOX,
	K_STATUSDIR,
	K_PART,
	K_FLAGS,
	K_NEW,
	K_OUTFILE,
	K_STATUSFILE,
	K_SEARCH,
	K_QUERY,
	K_HITDIR,
	K_LINK,
	K_MAILFSDIR,
	K_STATEFILE,
	K_COUNT
};

struct kind {
	/* seconds the kernel may keep the entry and attributes */
	double ttl;
	/* may it be written (its mode bits)? NULL: never */
	int (*writable)(const struct mfs_fs *fs, const struct mfs_node *n);
	/* status files: their text, made at each look (malloc'd, or NULL
	 * with err set); size and open then serve it (text_size,
	 * open_text) */
	char *(*text)(struct mfs_fs *fs, const struct mfs_node *n,
		      struct mfs_err *err);
	/* files: brings n->size up to date */
	int (*size)(struct mfs_fs *fs, struct mfs_node *n, struct mfs_err *err);
	/* directories: brings the children up to date, before a lookup
	 * (opening 0) or a listing (opening 1) */
	int (*sync)(struct mfs_fs *fs, struct mfs_node *dir, int opening,
		    struct mfs_err *err);
	/* directories: looks again for a name that was not there */
	struct mfs_node *(*miss)(struct mfs_fs *fs, struct mfs_node *dir,
				 const char *name, struct mfs_err *err);
	/* files: opens n into h */
	int (*open)(struct mfs_fs *fs, struct mfs_node *n,
		    struct fuse_file_info *fi, struct handle *h,
		    struct mfs_err *err);
	/* setattr: 0 or an errno. NULL: times are accepted (the message
	 * date is the mtime), anything else is EPERM */
	int (*setattr)(struct mfs_fs *fs, struct mfs_node *n,
		       struct handle *h, const struct stat *attr, int to_set);
	/* directories: a regular file made in dir; replies, and releases
	 * the lock */
	void (*create)(fuse_req_t req, struct mfs_fs *fs, struct mfs_node *dir,
		       const char *name, struct fuse_file_info *fi);
	/* directories: mkdir of name in dir; on success *made is the new
	 * node */
	int (*mkdir)(struct mfs_fs *fs, struct mfs_node *dir, const char *name,
		     struct mfs_node **made);
	/* directories: unlink of name in dir (n: that child, or NULL) */
	int (*unlink)(struct mfs_fs *fs, struct mfs_node *dir,
		      struct mfs_node *n, const char *name);
	/* rmdir of n */
	int (*rmdir)(struct mfs_fs *fs, struct mfs_node *n);
	/* rename of n, a child of dir, to ndir/newname */
	int (*rename)(struct mfs_fs *fs, struct mfs_node *dir,
		      struct mfs_node *n, struct mfs_node *ndir,
		      const char *newname);
};

static const struct kind kinds[K_COUNT];

static enum kind_id kind_of(const struct mfs_node *n)
{
	switch (n->kind) {
	case MFS_N_ROOT:
		return K_ROOT;
	case MFS_N_FOLDER:
		return K_FOLDER;
	case MFS_N_MESSAGE:
		return K_MESSAGE;
	case MFS_N_PARTDIR:
		return K_PARTDIR;
	case MFS_N_OUTBOX:
		return K_OUTBOX;
	case MFS_N_STATUS:
		return K_STATUSDIR;
	case MFS_N_SEARCH:
		return K_SEARCH;
	case MFS_N_QUERY:
		return K_QUERY;
	case MFS_N_HITDIR:
		return K_HITDIR;
	case MFS_N_LINK:
		return K_LINK;
	case MFS_N_MAILFS:
		return K_MAILFSDIR;
	case MFS_N_FILE:
		break;
	}
	switch (n->file) {
	case MFS_F_PART:
		return K_PART;
	case MFS_F_FLAGS:
		return K_FLAGS;
	case MFS_F_NEW:
		return K_NEW;
	case MFS_F_OUTBOX:
		return K_OUTFILE;
	case MFS_F_STATE:
		return K_STATEFILE;
	case MFS_F_STATUS:
		break;
	}
	return K_STATUSFILE;
}

static const struct kind *kind(const struct mfs_node *n)
{
	return &kinds[kind_of(n)];
}

/* The errno of a failure the server or the spool reported in err, which
 * is logged (but ENOENT: the user sees that one). */
static int fail(const struct mfs_err *err)
{
	if (err->code != MFS_E_NOENT)
		mfs_log_err("%s", err->msg);
	return mfs_err_errno(err->code);
}

/* What a write to a kind that takes none gets. */
static int no_write(const struct mfs_fs *fs)
{
	return fs->store->read_only ? EROFS : EPERM;
}

/* --- attributes ---------------------------------------------------------- */

static int writable_store(const struct mfs_fs *fs, const struct mfs_node *n)
{
	(void)n;
	return !fs->store->read_only;
}

static int writable_always(const struct mfs_fs *fs, const struct mfs_node *n)
{
	(void)fs;
	(void)n;
	return 1;
}

/* Brings n->size up to date. Caller holds the lock and a hold on n: the
 * lock may be dropped while bytes are fetched. */
int node_size(struct mfs_fs *fs, struct mfs_node *n, struct mfs_err *err)
{
	const struct kind *k = kind(n);

	return k->size != NULL ? k->size(fs, n, err) : MFS_OK;
}

static void node_stat(const struct mfs_fs *fs, const struct mfs_node *n,
		      struct stat *st)
{
	const struct kind *k = kind(n);
	int w = k->writable != NULL && k->writable(fs, n);

	memset(st, 0, sizeof(*st));
	st->st_ino = n->ino;
	st->st_uid = fs->uid;
	st->st_gid = fs->gid;
	st->st_mtime = st->st_ctime = st->st_atime = n->mtime;
	st->st_blksize = 4096;
	if (n->kind == MFS_N_FILE) {
		st->st_mode = S_IFREG | (w ? 0600 : 0400);
		st->st_nlink = 1;
		st->st_size = (off_t)n->size;
		st->st_blocks = (blkcnt_t)((n->size + 511) / 512);
	} else if (n->kind == MFS_N_LINK) {
		char *t = search_link_target(n);

		st->st_mode = S_IFLNK | 0777;
		st->st_nlink = 1;
		st->st_size = t != NULL ? (off_t)strlen(t) : 0;
		free(t);
	} else {
		st->st_mode = S_IFDIR | (w ? 0700 : 0500);
		st->st_nlink = 2;
	}
}

static double node_ttl(const struct mfs_node *n)
{
	return kind(n)->ttl;
}

void reply_err(fuse_req_t req, const struct mfs_err *err)
{
	if (err->code != MFS_E_NOENT)
		mfs_log_err("%s", err->msg);
	fuse_reply_err(req, mfs_err_errno(err->code));
}

/* Replies with an entry for n and counts the lookup. Caller holds the
 * lock. */
static void reply_entry(fuse_req_t req, struct mfs_fs *fs, struct mfs_node *n)
{
	struct fuse_entry_param e;

	memset(&e, 0, sizeof(e));
	e.ino = n->ino;
	e.attr_timeout = e.entry_timeout = node_ttl(n);
	node_stat(fs, n, &e.attr);
	mfs_nodes_lookup(n);
	fuse_reply_entry(req, &e);
}

/* The node of inode ino, or NULL after replying with an error. Takes the
 * lock: on success the caller holds it. */
static struct mfs_node *node_get(fuse_req_t req, struct mfs_fs *fs,
				 fuse_ino_t ino)
{
	struct mfs_node *n;

	pthread_mutex_lock(&fs->lock);
	n = mfs_nodes_get(fs->nodes, ino);
	if (n == NULL) {
		pthread_mutex_unlock(&fs->lock);
		fuse_reply_err(req, ENOENT);
	}
	return n;
}

/* The directory of inode ino, held, or NULL after replying with an error
 * (ENOENT, ENOTDIR). On success the caller holds the lock and must release
 * the hold. */
static struct mfs_node *dir_get(fuse_req_t req, struct mfs_fs *fs,
				fuse_ino_t ino)
{
	struct mfs_node *dir = node_get(req, fs, ino);

	if (dir == NULL)
		return NULL;
	if (dir->kind == MFS_N_FILE || dir->kind == MFS_N_LINK) {
		pthread_mutex_unlock(&fs->lock);
		fuse_reply_err(req, ENOTDIR);
		return NULL;
	}
	mfs_nodes_hold(dir);
	return dir;
}

/* --- handlers: looking ---------------------------------------------------- */

static void fs_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct mfs_fs *fs = fuse_req_userdata(req);
	const struct kind *k;
	struct mfs_node *dir, *n;
	struct mfs_err err;

	mfs_err_clear(&err);
	dir = dir_get(req, fs, parent);
	if (dir == NULL)
		return;
	k = kind(dir);
	if (k->sync != NULL && k->sync(fs, dir, 0, &err) == MFS_E_NOENT) {
		mfs_nodes_release(fs->nodes, dir);
		pthread_mutex_unlock(&fs->lock);
		fuse_reply_err(req, ENOENT);
		return;
	}
	n = mfs_nodes_child(fs->nodes, dir, name);
	/* .search is in no listing: it is made when looked up */
	if (n == NULL && strcmp(name, SEARCH_DIR) == 0 &&
	    (dir->kind == MFS_N_ROOT || dir->kind == MFS_N_FOLDER) &&
	    (n = search_dir(fs, dir)) == NULL)
		mfs_err_set(&err, MFS_E_NOMEM, "out of memory");
	if (n == NULL && k->miss != NULL && err.code == MFS_OK)
		n = k->miss(fs, dir, name, &err);
	if (n != NULL) {
		mfs_nodes_hold(n);
		if (node_size(fs, n, &err) != MFS_OK) {
			mfs_nodes_release(fs->nodes, n);
			n = NULL;
		}
	}
	if (n == NULL) {
		mfs_nodes_release(fs->nodes, dir);
		pthread_mutex_unlock(&fs->lock);
		if (err.code != MFS_OK && err.code != MFS_E_NOENT) {
			reply_err(req, &err);
			return;
		}
		fuse_reply_err(req, ENOENT);
		return;
	}
	reply_entry(req, fs, n);
	mfs_nodes_release(fs->nodes, n);
	mfs_nodes_release(fs->nodes, dir);
	pthread_mutex_unlock(&fs->lock);
}

/* The kernel forgets nlookup lookups of inode ino; a message whose files
 * it no longer knows lets its view go (view_forget). Caller holds the
 * lock. */
static void forget_one(struct mfs_fs *fs, uint64_t ino, uint64_t nlookup)
{
	struct mfs_node *n = mfs_nodes_get(fs->nodes, ino), *msg;

	if (n == NULL || n->kind == MFS_N_ROOT)
		return;
	msg = message_of(n);
	if (msg != NULL)
		mfs_nodes_hold(msg);
	mfs_nodes_forget(fs->nodes, n, nlookup);
	if (msg != NULL) {
		view_forget(fs, msg);
		mfs_nodes_release(fs->nodes, msg);
	}
}

static void fs_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	struct mfs_fs *fs = fuse_req_userdata(req);

	pthread_mutex_lock(&fs->lock);
	forget_one(fs, ino, nlookup);
	pthread_mutex_unlock(&fs->lock);
	views_trim_memory(fs);
	fuse_reply_none(req);
}

static void fs_forget_multi(fuse_req_t req, size_t count,
			    struct fuse_forget_data *forgets)
{
	struct mfs_fs *fs = fuse_req_userdata(req);
	size_t i;

	pthread_mutex_lock(&fs->lock);
	for (i = 0; i < count; i++)
		forget_one(fs, forgets[i].ino, forgets[i].nlookup);
	pthread_mutex_unlock(&fs->lock);
	views_trim_memory(fs);
	fuse_reply_none(req);
}

static void fs_getattr(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct mfs_fs *fs = fuse_req_userdata(req);
	struct mfs_node *n;
	struct mfs_err err;
	struct stat st;
	double ttl;

	(void)fi;
	mfs_err_clear(&err);
	n = node_get(req, fs, ino);
	if (n == NULL)
		return;
	if (node_size(fs, n, &err) != MFS_OK) {
		pthread_mutex_unlock(&fs->lock);
		reply_err(req, &err);
		return;
	}
	node_stat(fs, n, &st);
	ttl = node_ttl(n);
	pthread_mutex_unlock(&fs->lock);
	fuse_reply_attr(req, &st, ttl);
}

/* Lets go of one reference to the snapshot: at the last, releases its
 * nodes and frees it. Caller holds the lock. */
static void snap_put(struct mfs_fs *fs, struct dir_snap *s)
{
	if (s != NULL && --s->refs == 0)
		snap_free(fs, s);
}

/* Releases the snapshot's nodes and frees it. Caller holds the lock. */
static void snap_free(struct mfs_fs *fs, struct dir_snap *s)
{
	size_t i;

	if (s == NULL)
		return;
	if (s->prev != NULL)
		s->prev->next = s->next;
	else
		fs->snaps = s->next;
	if (s->next != NULL)
		s->next->prev = s->prev;
	for (i = 0; i < s->n; i++)
		mfs_nodes_release(fs->nodes, s->nodes[i]);
	free(s->nodes);
	free(s);
}

/* Takes the listing of dir. Caller holds the lock. */
static struct dir_snap *snap_take(struct mfs_fs *fs, struct mfs_node *dir)
{
	struct dir_snap *s = calloc(1, sizeof(*s));
	struct mfs_node *c;
	size_t count = 0;

	if (s == NULL)
		return NULL;
	s->refs = 1;
	s->self = dir->ino;
	s->parent = dir->parent ? dir->parent->ino : 1;
	for (c = dir->first_child; c != NULL; c = c->next_sibling)
		count++;
	s->room = count ? count : 1;
	s->nodes = calloc(s->room, sizeof(*s->nodes));
	/* .search is left out: ls, grep -r and find do not wander into it */
	if (s->nodes == NULL) {
		free(s);
		return NULL;
	}
	for (c = dir->first_child; c != NULL; c = c->next_sibling) {
		/* reached by name only, so that ls -a, grep -r and find do
		 * not wander into them */
		if (c->kind == MFS_N_SEARCH || c->kind == MFS_N_MAILFS)
			continue;
		mfs_nodes_hold(c);
		s->nodes[s->n++] = c;
	}
	s->next = fs->snaps;
	if (fs->snaps != NULL)
		fs->snaps->prev = s;
	fs->snaps = s;
	return s;
}

/* Adds node c (held from now on) at the end of snapshot s. Returns 0, or
 * -1 when memory is short. Caller holds the lock. */
static int snap_add(struct dir_snap *s, struct mfs_node *c)
{
	if (s->n == s->room) {
		struct mfs_node **v =
		    realloc(s->nodes, 2 * s->room * sizeof(*v));

		if (v == NULL)
			return -1;
		s->nodes = v;
		s->room *= 2;
	}
	mfs_nodes_hold(c);
	s->nodes[s->n++] = c;
	return 0;
}

static int ptr_cmp(const void *a, const void *b)
{
	uintptr_t x = (uintptr_t) * (void *const *)a;
	uintptr_t y = (uintptr_t) * (void *const *)b;

	return x < y ? -1 : x > y;
}

/* The listing snapshot s was taking as it came has ended with rc (err):
 * the nodes dir shows now that s lacks (the end of the listing may show
 * entries its parts did not) are added, and readers go on. Caller holds
 * the lock. */
static void snap_finish(struct mfs_fs *fs, struct dir_snap *s,
			struct mfs_node *dir, int rc, const struct mfs_err *err)
{
	struct mfs_node **seen = malloc((s->n ? s->n : 1) * sizeof(*seen));
	struct mfs_node *c;
	size_t n = s->n;

	if (seen != NULL) {
		memcpy(seen, s->nodes, n * sizeof(*seen));
		qsort(seen, n, sizeof(*seen), ptr_cmp);
		for (c = dir->first_child; c != NULL; c = c->next_sibling)
			if (c->kind != MFS_N_SEARCH &&
			    c->kind != MFS_N_MAILFS &&
			    bsearch(&c, seen, n, sizeof(*seen), ptr_cmp) ==
				NULL &&
			    snap_add(s, c) != 0)
				break;
		free(seen);
	}
	s->coming = 0;
	s->rc = seen == NULL ? MFS_E_NOMEM : rc;
	if (seen == NULL)
		mfs_err_set(&s->err, MFS_E_NOMEM, "out of memory");
	else if (rc != MFS_OK)
		s->err = *err;
	pthread_cond_broadcast(&fs->snap_cond);
}

/* Waits, while the listing of s still comes, until entry off is there.
 * Returns 0, or, at the end of a listing that failed, the error (an
 * errno value). Caller holds the lock. */
static int snap_wait(struct mfs_fs *fs, struct dir_snap *s, off_t off)
{
	while (s->coming && off >= 2 && (size_t)(off - 2) >= s->n)
		pthread_cond_wait(&fs->snap_cond, &fs->lock);
	if (off >= 2 && (size_t)(off - 2) >= s->n && s->rc != MFS_OK)
		return mfs_err_errno(s->rc);
	return 0;
}

/* Entry off of a snapshot: its name, inode number and file type; NULL past
 * the end. *node is the entry's node, NULL for "." and "..". */
static const char *snap_entry(const struct dir_snap *s, off_t off,
			      struct mfs_node **node, struct stat *st)
{
	struct mfs_node *n;

	*node = NULL;
	st->st_mode = S_IFDIR;
	if (off == 0 || off == 1) {
		st->st_ino = off == 0 ? s->self : s->parent;
		return off == 0 ? "." : "..";
	}
	if (off < 0 || (size_t)(off - 2) >= s->n)
		return NULL;
	n = s->nodes[off - 2];
	*node = n;
	st->st_ino = n->ino;
	st->st_mode = n->kind == MFS_N_FILE   ? S_IFREG
		      : n->kind == MFS_N_LINK ? S_IFLNK
					      : S_IFDIR;
	return n->name;
}

static int sync_folder(struct mfs_fs *fs, struct mfs_node *dir, int opening,
		       struct mfs_err *err);

/* Answers an opendir with snapshot s, or with err when s is NULL.
 * Called without the lock. */
static void opendir_reply(fuse_req_t req, struct mfs_fs *fs,
			  struct fuse_file_info *fi, struct dir_snap *s,
			  const struct mfs_err *err)
{
	if (s == NULL) {
		reply_err(req, err);
		return;
	}
	fi->fh = (uint64_t)(uintptr_t)s;
	if (fuse_reply_open(req, fi) != 0) {
		/* the request was interrupted: no releasedir will come */
		pthread_mutex_lock(&fs->lock);
		snap_put(fs, s);
		pthread_mutex_unlock(&fs->lock);
	}
}

/* An opendir of a folder never listed: the listing comes in parts
 * (refresh_folder_pieces), and the directory opens at the first, its
 * snapshot growing as the rest comes, so that ls reads while the server
 * still sends. */
struct coming {
	fuse_req_t req;
	struct fuse_file_info fi;
	struct mfs_fs *fs;
	struct mfs_node *dir; /* held */
	struct dir_snap *s;   /* once opened: the lister's reference */
	int unshown;	      /* parts are not shown (see coming_piece) */
	int full;	      /* memory is short for the snapshot to grow */
};

/* Takes out of s (just taken) the files written into the folder and
 * appended: the listing shows them as messages, and its end removes
 * their written names (folder_merge; one appended after the listing
 * began stays, and snap_finish shows it). Caller holds the lock. */
static void snap_drop_appended(struct mfs_fs *fs, struct dir_snap *s)
{
	size_t i, k = 0;

	for (i = 0; i < s->n; i++) {
		struct mfs_node *c = s->nodes[i];
		struct upload *u = c->kind == MFS_N_FILE ? c->priv : NULL;

		if (u != NULL && u->committed && u->seq != 0)
			mfs_nodes_release(fs->nodes, c);
		else
			s->nodes[k++] = c;
	}
	s->n = k;
}

/* A part of the listing has come (mfs_index_piece_fn): 1 when dir shows
 * each of its entries now. */
static int coming_piece(void *ctx, uint32_t validity,
			const struct mfs_store_msg *msgs, size_t n)
{
	struct coming *c = ctx;
	struct mfs_fs *fs = c->fs;
	struct mfs_node *dir = c->dir, *m;
	int opened = 0, shown;
	size_t i;

	pthread_mutex_lock(&fs->lock);
	if (c->s == NULL && !c->unshown) {
		/* the first part: a folder listed or renumbered meanwhile
		 * waits for the end, as any other */
		if (!dir->linked || dir->listed != 0 ||
		    (dir->validity != 0 && dir->validity != validity) ||
		    (c->s = snap_take(fs, dir)) == NULL) {
			c->unshown = 1;
		} else {
			snap_drop_appended(fs, c->s);
			c->s->refs = 2; /* the handle's and the lister's */
			c->s->coming = 1;
			dir->validity = validity;
			opened = 1;
		}
	}
	shown = c->s != NULL && c->s->coming;
	for (i = 0; i < n && shown; i++) {
		if (folder_show(fs, dir, &msgs[i], &m) != 0)
			shown = 0; /* the end of the listing shows the rest */
		else if (m != NULL && !c->full && snap_add(c->s, m) != 0)
			c->full = 1; /* snap_finish adds it, at the end */
	}
	pthread_cond_broadcast(&fs->snap_cond);
	pthread_mutex_unlock(&fs->lock);
	if (opened)
		opendir_reply(c->req, fs, &c->fi, c->s, NULL);
	return shown;
}

/* opendir of folder dir, never listed: see struct coming. Caller holds
 * the lock and a hold on dir; both are let go. */
static void opendir_coming(fuse_req_t req, struct mfs_fs *fs,
			   struct mfs_node *dir, struct fuse_file_info *fi)
{
	struct coming c = {req, *fi, fs, dir, NULL, 0, 0};
	struct dir_snap *s = NULL;
	struct mfs_err err;
	int rc;

	pthread_mutex_unlock(&fs->lock);
	mfs_err_clear(&err);
	rc = refresh_folder_pieces(
	    fs, dir, fs->acct->refresh > 0 ? fs->acct->refresh : LIST_TTL,
	    coming_piece, &c, &err);
	if (rc != MFS_OK && err.code != MFS_E_OFFLINE)
		mfs_log_err("%s (showing the last listing)", err.msg);
	pthread_mutex_lock(&fs->lock);
	if (c.s != NULL) {
		/* opened at the first part: the rest, or how it failed */
		snap_finish(fs, c.s, dir, rc, &err);
		snap_put(fs, c.s);
		mfs_nodes_release(fs->nodes, dir);
		pthread_mutex_unlock(&fs->lock);
		return;
	}
	/* no part came (a listing kept or read another way, or an error
	 * first): as any opendir */
	if (rc == MFS_OK || dir->listed != 0) {
		s = snap_take(fs, dir);
		if (s == NULL)
			mfs_err_set(&err, MFS_E_NOMEM, "out of memory");
	}
	mfs_nodes_release(fs->nodes, dir);
	pthread_mutex_unlock(&fs->lock);
	opendir_reply(req, fs, fi, s, &err);
}

static void fs_opendir(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct mfs_fs *fs = fuse_req_userdata(req);
	struct mfs_node *dir;
	struct dir_snap *s = NULL;
	struct mfs_err err;

	mfs_err_clear(&err);
	dir = dir_get(req, fs, ino);
	if (dir == NULL)
		return;
	if (kind(dir)->sync == sync_folder && dir->listed == 0 &&
	    !dir->noselect && fs->store->ops->index_pieces != NULL) {
		opendir_coming(req, fs, dir, fi);
		return;
	}
	if (kind(dir)->sync != NULL &&
	    kind(dir)->sync(fs, dir, 1, &err) != MFS_OK)
		goto fail;
	mfs_err_clear(&err);
	s = snap_take(fs, dir);
	if (s == NULL)
		mfs_err_set(&err, MFS_E_NOMEM, "out of memory");
fail:
	mfs_nodes_release(fs->nodes, dir);
	pthread_mutex_unlock(&fs->lock);
	opendir_reply(req, fs, fi, s, &err);
}

static void fs_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	struct mfs_fs *fs = fuse_req_userdata(req);
	struct dir_snap *s = (struct dir_snap *)(uintptr_t)fi->fh;
	struct mfs_node *n;
	const char *name;
	char *buf;
	size_t used = 0;
	off_t i;
	int rc;

	(void)ino;
	buf = malloc(size);
	if (buf == NULL) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	pthread_mutex_lock(&fs->lock);
	rc = snap_wait(fs, s, off);
	for (i = off; i >= 0 && rc == 0; i++) {
		struct stat st = {0};
		size_t len;

		name = snap_entry(s, i, &n, &st);
		if (name == NULL)
			break;
		len = fuse_add_direntry(req, buf + used, size - used, name,
					&st, i + 1);
		if (len > size - used)
			break;
		used += len;
	}
	pthread_mutex_unlock(&fs->lock);
	if (rc != 0)
		fuse_reply_err(req, rc);
	else
		fuse_reply_buf(req, buf, used);
	free(buf);
}

/* readdir with attributes: "ls -l" of a large folder then costs one
 * request per buffer instead of one lookup per entry. Every entry given
 * counts as a lookup of its node. */
static void fs_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size,
			   off_t off, struct fuse_file_info *fi)
{
	struct mfs_fs *fs = fuse_req_userdata(req);
	struct dir_snap *s = (struct dir_snap *)(uintptr_t)fi->fh;
	struct mfs_err err;
	char *buf;
	size_t used = 0;
	off_t i;
	int rc;

	(void)ino;
	mfs_err_clear(&err);
	buf = malloc(size);
	if (buf == NULL) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	pthread_mutex_lock(&fs->lock);
	rc = snap_wait(fs, s, off);
	for (i = off; i >= 0 && rc == 0; i++) {
		struct fuse_entry_param e;
		struct mfs_node *n;
		const char *name;
		size_t len;

		memset(&e, 0, sizeof(e));
		name = snap_entry(s, i, &n, &e.attr);
		if (name == NULL)
			break;
		if (n == NULL) {
			/* "." and "..": attributes, no lookup counted */
			n = mfs_nodes_get(fs->nodes, e.attr.st_ino);
			if (n != NULL)
				node_stat(fs, n, &e.attr);
			n = NULL;
		} else if (n->linked && !size_needs_fetch(n) &&
			   node_size(fs, n, &err) == MFS_OK) {
			/* node_size() may drop the lock: n is held */
			node_stat(fs, n, &e.attr);
			e.ino = n->ino;
			e.attr_timeout = e.entry_timeout = node_ttl(n);
		}
		/* else gone since opendir, or its size would cost a fetch:
		 * offered without attributes (a LOOKUP follows when they are
		 * wanted) */
		len = fuse_add_direntry_plus(req, buf + used, size - used, name,
					     &e, i + 1);
		if (len > size - used)
			break;
		used += len;
		if (e.ino != 0)
			mfs_nodes_lookup(n);
	}
	pthread_mutex_unlock(&fs->lock);
	if (rc != 0)
		fuse_reply_err(req, rc);
	else
		fuse_reply_buf(req, buf, used);
	free(buf);
}

static void fs_releasedir(fuse_req_t req, fuse_ino_t ino,
			  struct fuse_file_info *fi)
{
	struct mfs_fs *fs = fuse_req_userdata(req);

	(void)ino;
	pthread_mutex_lock(&fs->lock);
	snap_put(fs, (struct dir_snap *)(uintptr_t)fi->fh);
	pthread_mutex_unlock(&fs->lock);
	fuse_reply_err(req, 0);
}

static void fs_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct statvfs st = {0};

	(void)ino;
	st.f_bsize = 4096;
	st.f_frsize = 4096;
	st.f_namemax = 255;
	fuse_reply_statfs(req, &st);
}

/* --- open files ---------------------------------------------------------- */

/* The process of thread tid (FUSE names the thread that made a request),
 * or tid itself when /proc cannot say. */
static pid_t process_of(pid_t tid)
{
	char path[64], line[128];
	pid_t tgid = tid;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)tid);
	f = fopen(path, "re");
	if (f == NULL)
		return tid;
	while (fgets(line, sizeof(line), f) != NULL)
		if (strncmp(line, "Tgid:", 5) == 0) {
			tgid = (pid_t)strtol(line + 5, NULL, 10);
			break;
		}
	fclose(f);
	return tgid > 0 ? tgid : tid;
}

pid_t req_process(fuse_req_t req)
{
	return process_of(fuse_req_ctx(req)->pid);
}

/* Handles are registered while open, so that a request that reaches us
 * after its file was released finds out instead of touching freed memory.
 * Caller holds fs->lock. */
void handle_register(struct mfs_fs *fs, struct handle *h)
{
	h->prev = NULL;
	h->next = fs->handles;
	if (fs->handles != NULL)
		fs->handles->prev = h;
	fs->handles = h;
}

static int handle_live(const struct mfs_fs *fs, const struct handle *h)
{
	const struct handle *x;

	for (x = fs->handles; x != NULL; x = x->next)
		if (x == h)
			return 1;
	return 0;
}

static void handle_free(struct mfs_fs *fs, struct handle *h)
{
	if (h == NULL)
		return;
	pthread_mutex_lock(&fs->lock);
	if (handle_live(fs, h)) {
		if (h->prev != NULL)
			h->prev->next = h->next;
		else
			fs->handles = h->next;
		if (h->next != NULL)
			h->next->prev = h->prev;
	}
	if (h->writer)
		((struct upload *)h->node->priv)->writers--;
	fs->part_mem -= h->mem;
	mfs_nodes_release(fs->nodes, h->node);
	pthread_mutex_unlock(&fs->lock);
	if (h->fd >= 0)
		close(h->fd);
	free(h->buf);
	free(h);
}

static int handle_append(struct handle *h, const char *data, size_t len,
			 off_t off)
{
	size_t end = (size_t)off + len;

	if (off < 0 || end > 65536)
		return EFBIG;
	if (end > h->cap) {
		char *b = realloc(h->buf, end);

		if (b == NULL)
			return ENOMEM;
		h->buf = b;
		h->cap = end;
	}
	if ((size_t)off > h->len)
		memset(h->buf + h->len, 0, (size_t)off - h->len);
	memcpy(h->buf + off, data, len);
	if (end > h->len)
		h->len = end;
	return 0;
}

/* Opens a file being written into a folder (MFS_F_NEW). Caller holds the
 * lock. */
static int open_upload(struct mfs_node *n, int writing, int trunc,
		       struct handle *h, struct mfs_err *err)
{
	struct upload *u = n->priv;

	h->fd = dup(u->fd);
	if (h->fd < 0)
		return mfs_err_set(err, MFS_E_IO, "dup: %s", strerror(errno));
	if (!writing)
		return MFS_OK;
	if (trunc && ftruncate(u->fd, 0) != 0)
		return mfs_err_set(err, MFS_E_IO, "%s: %s", n->name,
				   strerror(errno));
	h->writer = 1;
	h->dirty = trunc;
	u->writers++;
	return MFS_OK;
}

static void fs_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct mfs_fs *fs = fuse_req_userdata(req);
	int writing = (fi->flags & O_ACCMODE) != O_RDONLY;
	const struct kind *k;
	struct handle *h;
	struct mfs_node *n;
	struct mfs_err err;
	int rc;

	mfs_err_clear(&err);
	n = node_get(req, fs, ino);
	if (n == NULL)
		return;
	k = kind(n);
	if (k->open == NULL) {
		pthread_mutex_unlock(&fs->lock);
		fuse_reply_err(req, EISDIR);
		return;
	}
	if (writing && (k->writable == NULL || !k->writable(fs, n))) {
		pthread_mutex_unlock(&fs->lock);
		fuse_reply_err(req, fs->store->read_only ? EROFS : EACCES);
		return;
	}
	h = calloc(1, sizeof(*h));
	if (h == NULL) {
		pthread_mutex_unlock(&fs->lock);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	h->fd = -1;
	h->node = n;
	if (writing)
		h->opener = req_process(req); /* only a writer commits */
	mfs_nodes_hold(n);
	rc = k->open(fs, n, fi, h, &err);
	if (rc == MFS_OK)
		handle_register(fs, h);
	pthread_mutex_unlock(&fs->lock);
	if (rc != MFS_OK) {
		handle_free(fs, h);
		reply_err(req, &err);
		return;
	}
	fi->fh = (uint64_t)(uintptr_t)h;
	if (fuse_reply_open(req, fi) != 0)
		handle_free(fs, h); /* interrupted: no release will come */
}

static void fs_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct mfs_fs *fs = fuse_req_userdata(req);
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;
	struct fuse_bufvec buf = FUSE_BUFVEC_INIT(size);
	char *copy = NULL;
	int fd = -1, grows;
	off_t pos = 0;

	(void)ino;
	pthread_mutex_lock(&fs->lock);
	if (!handle_live(fs, h)) {
		pthread_mutex_unlock(&fs->lock);
		fuse_reply_err(req, EBADF);
		return;
	}
	/* new and outbox files read back what was written so far */
	grows = h->node->file == MFS_F_NEW || h->node->file == MFS_F_OUTBOX;
	if (h->fd < 0) {
		if ((size_t)off >= h->len)
			size = 0;
		else if (size > h->len - (size_t)off)
			size = h->len - (size_t)off;
		copy = size > 0 ? malloc(size) : NULL;
		if (copy != NULL)
			memcpy(copy, h->buf + off, size);
		else
			size = 0;
	} else {
		if (!grows && (uint64_t)off >= h->size)
			size = 0;
		else if (!grows && size > h->size - (uint64_t)off)
			size = (size_t)(h->size - (uint64_t)off);
		pos = grows ? off : h->base + off;
		if (size > 0)
			fd = dup(h->fd); /* the handle may be released meanwhile */
	}
	pthread_mutex_unlock(&fs->lock);
	if (fd < 0) {
		fuse_reply_buf(req, copy, size);
		free(copy);
		return;
	}
	buf.buf[0].size = size;
	buf.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	buf.buf[0].fd = fd;
	buf.buf[0].pos = pos;
	fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
	close(fd);
}

/* May h write (or truncate) its new or outbox file now? 0, or the errno:
 * EPERM once what it wrote was committed (or, for a file of a folder, any
 * handle's), so that no byte is lost silently. The first write of an
 * outbox/ handle opens the entry for writing. Caller holds the lock. */
int may_write(struct mfs_fs *fs, struct handle *h)
{
	if (h->committed)
		return EPERM;
	if (h->node->file == MFS_F_NEW)
		return ((struct upload *)h->node->priv)->committed ? EPERM : 0;
	if (h->node->priv != NULL)
		return EPERM; /* an accepted outbox/ file */
	return h->wopen ? 0 : outbox_reopen(fs, h);
}

static void fs_write(fuse_req_t req, fuse_ino_t ino, const char *data,
		     size_t size, off_t off, struct fuse_file_info *fi)
{
	struct mfs_fs *fs = fuse_req_userdata(req);
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;
	ssize_t w = -1;
	int e = 0;

	(void)ino;
	pthread_mutex_lock(&fs->lock);
	if (!handle_live(fs, h)) {
		e = EBADF;
	} else if (h->node->file == MFS_F_NEW ||
		   h->node->file == MFS_F_OUTBOX) {
		e = may_write(fs, h);
		if (e == 0) {
			w = pwrite(h->fd, data, size, off);
			if (w < 0)
				e = errno;
			else
				h->dirty = 1;
		}
	} else if (h->node->file != MFS_F_FLAGS) {
		e = EBADF;
	} else {
		e = handle_append(h, data, size, off);
		if (e == 0) {
			h->dirty = 1;
			w = (ssize_t)size;
		}
	}
	pthread_mutex_unlock(&fs->lock);
	if (e != 0)
		fuse_reply_err(req, e);
	else
		fuse_reply_write(req, (size_t)w);
}

/* Parses a written flags file and stores it. Lines "\Flag" or "keyword"
 * set the flags exactly; lines "+X" / "-X" add or remove. */
static int flags_apply(struct mfs_fs *fs, struct mfs_node *file,
		       const char *text, size_t len, struct mfs_err *err)
{
	const char *set[64], *add[64], *del[64];
	size_t nset = 0, nadd = 0, ndel = 0;
	char *copy = strndup(text, len), *line, *save = NULL;
	struct mfs_node *msg;
	struct msg_ref r;
	unsigned now = 0;
	int rc = MFS_OK, plain = 0;

	if (copy == NULL)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	for (line = strtok_r(copy, "\n", &save); line != NULL;
	     line = strtok_r(NULL, "\n", &save)) {
		size_t l;

		while (*line == ' ' || *line == '\t')
			line++;
		l = strlen(line);
		while (l > 0 && (line[l - 1] == ' ' || line[l - 1] == '\t' ||
				 line[l - 1] == '\r'))
			line[--l] = '\0';
		if (l == 0)
			continue;
		if (nset == 64 || nadd == 64 || ndel == 64) {
			free(copy);
			return mfs_err_set(err, MFS_E_INVAL, "too many flags");
		}
		if (line[0] == '+')
			add[nadd++] = line + 1;
		else if (line[0] == '-')
			del[ndel++] = line + 1;
		else {
			set[nset++] = line;
			plain = 1;
		}
	}
	pthread_mutex_lock(&fs->lock);
	msg = message_of(file);
	rc = msg_ref_take(msg, &r) == 0
		     ? MFS_OK
		     : mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	pthread_mutex_unlock(&fs->lock);
	if (rc != MFS_OK) {
		free(copy);
		return rc;
	}
	if (r.msg.uid == 0)
		rc = mfs_err_set(err, MFS_E_NOENT, "the message moved");
	if (rc == MFS_OK && (plain || (nadd == 0 && ndel == 0))) {
		/* exact set, including the + lines */
		size_t i;

		for (i = 0; i < nadd && nset < 64; i++)
			set[nset++] = add[i];
		rc = fs->store->ops->store_flags(fs->store, r.mailbox,
						 r.validity, r.msg.uid, '=', set,
						 nset, &now, err);
		nadd = 0;
	}
	if (rc == MFS_OK && nadd > 0)
		rc = fs->store->ops->store_flags(fs->store, r.mailbox,
						 r.validity, r.msg.uid, '+', add,
						 nadd, &now, err);
	if (rc == MFS_OK && ndel > 0)
		rc = fs->store->ops->store_flags(fs->store, r.mailbox,
						 r.validity, r.msg.uid, '-', del,
						 ndel, &now, err);
	pthread_mutex_lock(&fs->lock);
	if (rc == MFS_OK) {
		msg->msg.flags = now;
		flags_node_update(msg);
	} else if (rc == MFS_E_NOENT && msg->linked) {
		folder_stale(msg->parent); /* its listing is out of date */
	}
	pthread_mutex_unlock(&fs->lock);
	msg_ref_free(&r);
	free(copy);
	return rc;
}

/* Is the start of the file a plausible RFC 5322 header? */
static int looks_like_message(const char *head, size_t len)
{
	size_t i = 0;

	if (len == 0)
		return 0;
	/* the first line must be a field: name of printable ASCII, then ':' */
	while (i < len && head[i] > 32 && head[i] < 127 && head[i] != ':')
		i++;
	return i > 0 && i < len && head[i] == ':';
}

/* --- written files --------------------------------------------------------
 *
 * A file written into a folder (MFS_F_NEW) or into outbox/ is committed
 * (APPEND, or submission) exactly once, with every byte written (SPEC.md,
 * "Files written into the mount"):
 *
 *   - at a close() by the process that opened it, once the file holds
 *     bytes: the kernel sends FLUSH for the close of every copy of a
 *     descriptor, also those a forked child inherited, and a shell's
 *     "> file" closes the empty descriptor after dup2 first;
 *   - else at the RELEASE of its last descriptor;
 *   - never under a waiting name (".x", "x~", "x.swp", "x.tmp"): the
 *     rename to a final name commits, or the close after it.
 *
 * A committed file of a folder stays, read-only, until the listing that
 * shows its message replaces it (folder_merge); an accepted outbox/ file
 * stays SENT_LINGER seconds. chmod, chown to oneself and utimes succeed on
 * both; an mtime set before the commit is the APPEND's internal date.
 */

/* APPENDs the file n written into a folder, with internal date `when` (0:
 * its Date header). */
static int upload_append(struct mfs_fs *fs, struct mfs_node *n, int fd,
			 time_t when, struct mfs_err *err)
{
	char head[65536], *date, *mailbox;
	uint32_t validity = 0, uid = 0;
	struct stat st;
	ssize_t got;
	int rc;

	if (fstat(fd, &st) != 0)
		return mfs_err_set(err, MFS_E_IO, "%s", strerror(errno));
	got = pread(fd, head, sizeof(head) - 1, 0);
	if (got < 0)
		return mfs_err_set(err, MFS_E_IO, "%s", strerror(errno));
	head[got] = '\0';
	pthread_mutex_lock(&fs->lock);
	mailbox = strdup(n->parent->mailbox);
	if (!looks_like_message(head, (size_t)got))
		mfs_err_set(err, MFS_E_INVAL,
			    "%s: not a mail message (no header line at the "
			    "start); nothing was appended",
			    n->name);
	pthread_mutex_unlock(&fs->lock);
	if (err->code != MFS_OK) {
		free(mailbox);
		return err->code;
	}
	if (mailbox == NULL)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	date = strcasestr(head, "\nDate:");
	if (when == 0 && date != NULL)
		when = mfs_parse_date(date + 6);
	if (when == (time_t)-1)
		when = 0;
	rc = fs->store->ops->append(fs->store, mailbox, fd,
				    (uint64_t)st.st_size, when, 0, &validity,
				    &uid, err);
	free(mailbox);
	return rc;
}

/* Commits the file n written into a folder, unless it was already. Called
 * with the lock held and n held; the lock is dropped during the APPEND.
 * Appended, it shows as a message directory at the next listing; refused,
 * its name leaves (nothing was appended: the user still has the
 * original). */
static int upload_commit(struct mfs_fs *fs, struct mfs_node *n,
			 struct mfs_err *err)
{
	struct upload *u = n->priv;
	int fd, rc;

	if (u->committed)
		return MFS_OK;
	u->committed = 1;
	fd = dup(u->fd);
	if (fd < 0) {
		rc = mfs_err_set(err, MFS_E_IO, "dup: %s", strerror(errno));
	} else {
		time_t when = u->when;

		pthread_mutex_unlock(&fs->lock);
		rc = upload_append(fs, n, fd, when, err);
		close(fd);
		pthread_mutex_lock(&fs->lock);
	}
	if (rc == MFS_OK) {
		u->seq = ++fs->commits;
		if (u->seq == 0)
			u->seq = ++fs->commits;
		folder_stale(n->parent);
	} else if (n->linked) {
		mfs_nodes_unlink(fs->nodes, n);
	}
	return rc;
}

/* Commits what handle h wrote when now is the time (see above): at a
 * close (closer: the FLUSH request), or at the release of h (closer
 * NULL). Called with the lock held and h live; may drop it while the
 * server is asked. */
static int written_commit(struct mfs_fs *fs, struct handle *h,
			  fuse_req_t closer, struct mfs_err *err)
{
	struct mfs_node *n = h->node;
	struct upload *u = n->file == MFS_F_NEW ? n->priv : NULL;
	int release = closer == NULL;
	struct stat st;

	if (!h->dirty || h->committed || !n->linked)
		return MFS_OK;
	/* /proc is read only here: closes of other files cost nothing */
	if (!release && req_process(closer) != h->opener)
		return MFS_OK; /* a forked child or an exec'd program */
	if (fstat(h->fd, &st) != 0)
		return mfs_err_set(err, MFS_E_IO, "%s: %s", n->name,
				   strerror(errno));
	if (st.st_size == 0 && !release)
		return MFS_OK; /* e.g. the shell's own close after dup2 */
	if (u == NULL) {
		h->dirty = 0;
		if (!mfs_spool_name_waits(n->name))
			h->committed = 1;
		return outbox_commit(fs, h, err);
	}
	if (!release && h->writer) {
		/* its opener closed it: a rename may commit it now */
		h->writer = 0;
		u->writers--;
	}
	if (u->committed) {
		h->committed = 1; /* another handle's commit took it */
		return MFS_OK;
	}
	if (mfs_spool_name_waits(n->name))
		return MFS_OK; /* the rename to its final name commits */
	if (st.st_size == 0) {
		/* released empty: nothing to append */
		if (u->writers <= (unsigned)h->writer)
			mfs_nodes_unlink(fs->nodes, n);
		return MFS_OK;
	}
	h->dirty = 0;
	h->committed = 1;
	return upload_commit(fs, n, err);
}

static void fs_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct mfs_fs *fs = fuse_req_userdata(req);
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;
	struct mfs_err err;
	int rc = MFS_OK;

	(void)ino;
	mfs_err_clear(&err);
	pthread_mutex_lock(&fs->lock);
	if (h->node->file == MFS_F_FLAGS) {
		int dirty = h->dirty;

		h->dirty = 0;
		pthread_mutex_unlock(&fs->lock);
		if (dirty)
			rc = flags_apply(fs, h->node, h->buf ? h->buf : "",
					 h->len, &err);
	} else {
		if (h->node->file == MFS_F_NEW ||
		    h->node->file == MFS_F_OUTBOX)
			rc = written_commit(fs, h, req, &err);
		pthread_mutex_unlock(&fs->lock);
	}
	if (rc != MFS_OK) {
		reply_err(req, &err);
		return;
	}
	fuse_reply_err(req, 0);
}

static void fs_release(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct mfs_fs *fs = fuse_req_userdata(req);
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;
	struct mfs_err err;

	(void)ino;
	mfs_err_clear(&err);
	pthread_mutex_lock(&fs->lock);
	if ((h->node->file == MFS_F_NEW || h->node->file == MFS_F_OUTBOX) &&
	    written_commit(fs, h, NULL, &err) != MFS_OK)
		mfs_log_err("%s (committed at its last close)", err.msg);
	pthread_mutex_unlock(&fs->lock);
	handle_free(fs, h);
	fuse_reply_err(req, 0);
}

/* --- written files: creation, renames, attributes ---------------------- */

/* Renames n, a file written into a folder, to ndir/newname (a folder):
 * the rename from a waiting name (rsync, editors) commits it once no
 * handle may write it any more. An earlier written file of that name is
 * replaced. Caller holds the lock and n and ndir. */
static int rename_upload(struct mfs_fs *fs, struct mfs_node *n,
			 struct mfs_node *ndir, const char *newname,
			 struct mfs_err *err)
{
	struct mfs_node *old = mfs_nodes_child(fs->nodes, ndir, newname);
	struct upload *u = n->priv;
	struct stat st;

	if (ndir->kind != MFS_N_FOLDER || ndir->noselect)
		return mfs_err_set(err, MFS_E_ACCESS,
				   "%s: a file can only go into a folder "
				   "that holds messages",
				   newname);
	if (old == n)
		return MFS_OK;
	if (old != NULL && (old->kind != MFS_N_FILE || old->file != MFS_F_NEW))
		return mfs_err_set(err, MFS_E_EXIST, "%s exists", newname);
	if (old != NULL)
		mfs_nodes_unlink(fs->nodes, old);
	if (mfs_nodes_move(fs->nodes, n, ndir, newname) != 0)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	if (u->committed || u->writers > 0 || mfs_spool_name_waits(newname) ||
	    fstat(u->fd, &st) != 0 || st.st_size == 0)
		return MFS_OK;
	return upload_commit(fs, n, err);
}

/* Replies to a create with the new node n and its open handle h, which it
 * registers. Called with the lock held; releases it. */
void reply_create(fuse_req_t req, struct mfs_fs *fs,
			 struct mfs_node *n, struct handle *h,
			 struct fuse_file_info *fi)
{
	struct fuse_entry_param e;

	handle_register(fs, h);
	fi->fh = (uint64_t)(uintptr_t)h;
	fi->direct_io = 1;
	memset(&e, 0, sizeof(e));
	e.ino = n->ino;
	node_stat(fs, n, &e.attr);
	mfs_nodes_lookup(n);
	pthread_mutex_unlock(&fs->lock);
	if (fuse_reply_create(req, &e, fi) != 0)
		handle_free(fs, h);
}

/* A regular file made in a folder: written to an anonymous file, APPENDed
 * when committed (see "written files"). Called with the lock held;
 * releases it and replies. */
static void create_upload(fuse_req_t req, struct mfs_fs *fs,
			  struct mfs_node *dir, const char *name,
			  struct fuse_file_info *fi)
{
	struct mfs_node *n;
	struct upload *u;
	struct handle *h;
	int fd;

	if (fs->store->read_only || fs->store->ops->append == NULL ||
	    dir->noselect) {
		pthread_mutex_unlock(&fs->lock);
		fuse_reply_err(req, no_write(fs));
		return;
	}
	n = mfs_nodes_child(fs->nodes, dir, name);
	if (n != NULL && n->kind == MFS_N_FILE && n->file == MFS_F_NEW &&
	    ((struct upload *)n->priv)->committed)
		mfs_nodes_unlink(fs->nodes, n); /* appended: a new one now */
	else if (n != NULL) {
		pthread_mutex_unlock(&fs->lock);
		fuse_reply_err(req, EEXIST);
		return;
	}
	fd = open(fs->acct->cache_dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0)
		fd = memfd_create("mailfs-new", MFD_CLOEXEC);
	u = calloc(1, sizeof(*u));
	h = calloc(1, sizeof(*h));
	n = (fd >= 0 && u && h)
		    ? mfs_nodes_add(fs->nodes, dir, name, MFS_N_FILE)
		    : NULL;
	if (n == NULL) {
		pthread_mutex_unlock(&fs->lock);
		if (fd >= 0)
			close(fd);
		free(u);
		free(h);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	u->fd = fd;
	u->writers = 1;
	n->priv = u;
	n->file = MFS_F_NEW;
	n->mtime = time(NULL);
	h->node = n;
	h->writer = h->dirty = 1;
	h->opener = req_process(req);
	mfs_nodes_hold(n);
	h->fd = dup(fd);
	reply_create(req, fs, n, h, fi);
}

/* chown of a written file: only to the mounting user. */
int owner_ok(const struct mfs_fs *fs, const struct stat *attr, int to_set)
{
	return !((to_set & FUSE_SET_ATTR_UID) && attr->st_uid != fs->uid) &&
	       !((to_set & FUSE_SET_ATTR_GID) && attr->st_gid != fs->gid);
}

/* setattr of a file written into a folder (see "written files"): a size
 * is a write; the mode and times are accepted, and an mtime set before
 * the APPEND is its internal date; the owner can only be the mounting
 * user. */
static int setattr_upload(struct mfs_fs *fs, struct mfs_node *n,
			  struct handle *h, const struct stat *attr,
			  int to_set)
{
	struct upload *u = n->priv;
	int e = 0;

	if (!owner_ok(fs, attr, to_set))
		return EPERM;
	if ((to_set & FUSE_SET_ATTR_SIZE) && h != NULL) {
		e = may_write(fs, h);
		if (e == 0 && ftruncate(h->fd, attr->st_size) != 0)
			e = errno;
		if (e == 0)
			h->dirty = 1;
	} else if (to_set & FUSE_SET_ATTR_SIZE) {
		if (u->committed)
			e = EPERM;
		else if (ftruncate(u->fd, attr->st_size) != 0)
			e = errno;
	}
	if (e == 0 && !u->committed &&
	    (to_set & (FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_MTIME_NOW))) {
		u->when = (to_set & FUSE_SET_ATTR_MTIME_NOW) ? time(NULL)
							     : attr->st_mtime;
		n->mtime = u->when;
	}
	return e;
}

static void fs_mknod(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode, dev_t rdev)
{
	struct mfs_fs *fs = fuse_req_userdata(req);

	(void)parent;
	(void)name;
	(void)mode;
	(void)rdev;
	fuse_reply_err(req, fs->store->read_only ? EROFS : EPERM);
}

static void fs_symlink(fuse_req_t req, const char *link, fuse_ino_t parent,
		       const char *name)
{
	(void)link;
	fs_mknod(req, parent, name, 0, 0);
}

static void fs_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent,
		    const char *newname)
{
	(void)ino;
	fs_mknod(req, newparent, newname, 0, 0);
}

/* --- folders and the root -------------------------------------------------- */

static int sync_root(struct mfs_fs *fs, struct mfs_node *dir, int opening,
		     struct mfs_err *err)
{
	(void)dir;
	if (!opening)
		return MFS_OK;
	pthread_mutex_unlock(&fs->lock);
	if (refresh_folders(fs, FOLDERS_TTL, err) != MFS_OK &&
	    err->code != MFS_E_OFFLINE) /* said when it went offline */
		mfs_log_err("%s (showing the folders known before)", err->msg);
	pthread_mutex_lock(&fs->lock);
	mfs_err_clear(err);
	return MFS_OK;
}

static int sync_folder(struct mfs_fs *fs, struct mfs_node *dir, int opening,
		       struct mfs_err *err)
{
	if (!opening)
		return MFS_OK;
	pthread_mutex_unlock(&fs->lock);
	if (refresh_folder(fs, dir,
			   fs->acct->refresh > 0 ? fs->acct->refresh : LIST_TTL,
			   err) != MFS_OK &&
	    err->code != MFS_E_OFFLINE) /* said when it went offline */
		mfs_log_err("%s (showing the last listing)", err->msg);
	pthread_mutex_lock(&fs->lock);
	if (err->code != MFS_OK && dir->listed == 0)
		return err->code;
	mfs_err_clear(err);
	return MFS_OK;
}

/* A name not in the root or a folder: perhaps a folder made since the
 * last LIST. */
static struct mfs_node *miss_folders(struct mfs_fs *fs, struct mfs_node *dir,
				     const char *name, struct mfs_err *err)
{
	pthread_mutex_unlock(&fs->lock);
	refresh_folders(fs, FOLDERS_TTL, err);
	pthread_mutex_lock(&fs->lock);
	return dir->linked ? mfs_nodes_child(fs->nodes, dir, name) : NULL;
}

/* A name not in a folder that looks like a message's: list it again. */
static struct mfs_node *miss_folder(struct mfs_fs *fs, struct mfs_node *dir,
				    const char *name, struct mfs_err *err)
{
	if (dir->noselect || strstr(name, " \xc2\xb7") == NULL)
		return miss_folders(fs, dir, name, err);
	pthread_mutex_unlock(&fs->lock);
	refresh_folder(fs, dir, dir->listed == 0 ? 0 : 1, err);
	pthread_mutex_lock(&fs->lock);
	return dir->linked ? mfs_nodes_child(fs->nodes, dir, name) : NULL;
}

/* "touch FOLDER": list it again at the next look (a read-only mount
 * still says EROFS: nothing was written). */
static int setattr_folder(struct mfs_fs *fs, struct mfs_node *n,
			  struct handle *h, const struct stat *attr,
			  int to_set)
{
	(void)h;
	(void)attr;
	if (to_set & (FUSE_SET_ATTR_SIZE | FUSE_SET_ATTR_MODE |
		      FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID))
		return fs->store->read_only ? EROFS : EPERM;
	folder_stale(n);
	return fs->store->read_only ? EROFS : 0;
}

/* The server name of a new folder `name` under dir, or NULL (errno set:
 * EINVAL for a name the server could not take, ENOMEM). Caller holds the
 * lock. */
static char *child_mailbox(struct mfs_fs *fs, const struct mfs_node *dir,
			   const char *name)
{
	char delim = dir->kind == MFS_N_FOLDER ? dir->delim : fs->delim;
	char *enc, *out;

	if ((delim != '\0' && strchr(name, delim) != NULL) ||
	    (dir->kind == MFS_N_FOLDER && delim == '\0')) {
		errno = EINVAL;
		return NULL;
	}
	enc = mfs_mutf7_encode(name);
	if (enc == NULL)
		return NULL;
	if (dir->kind != MFS_N_FOLDER)
		out = root_mailbox(fs, enc);
	else if (asprintf(&out, "%s%c%s", dir->mailbox, delim, enc) < 0)
		out = NULL;
	free(enc);
	return out;
}

/* mkdir: CREATE. */
static int mkdir_folder(struct mfs_fs *fs, struct mfs_node *dir,
			const char *name, struct mfs_node **made)
{
	struct mfs_node *n;
	struct mfs_err err;
	char *mailbox;
	int rc;

	mfs_err_clear(&err);
	if (fs->store->read_only || fs->store->ops->create == NULL)
		return no_write(fs);
	if (mfs_nodes_child(fs->nodes, dir, name) != NULL)
		return EEXIST;
	mailbox = child_mailbox(fs, dir, name);
	if (mailbox == NULL)
		return errno == ENOMEM ? ENOMEM : EINVAL;
	pthread_mutex_unlock(&fs->lock);
	rc = fs->store->ops->create(fs->store, mailbox, &err);
	pthread_mutex_lock(&fs->lock);
	if (rc == MFS_OK) {
		n = folder_child(fs, dir, name, mailbox);
		if (n == NULL) {
			rc = mfs_err_set(&err, MFS_E_NOMEM, "out of memory");
		} else {
			n->noselect = 0;
			n->gen = fs->gen;
			n->delim = dir->kind == MFS_N_FOLDER ? dir->delim
							     : fs->delim;
			n->mtime = time(NULL);
			*made = n;
		}
	}
	free(mailbox);
	return rc == MFS_OK ? 0 : fail(&err);
}

/* rmdir of a folder: DELETE, when it holds no folder and, listed again
 * now, no message. */
static int rmdir_folder(struct mfs_fs *fs, struct mfs_node *n)
{
	struct mfs_node *c;
	struct mfs_err err;
	char *mailbox;
	int rc, has_msgs = 0;

	mfs_err_clear(&err);
	if (fs->store->read_only)
		return EROFS;
	if (strcasecmp(n->mailbox, "INBOX") == 0) {
		mfs_err_set(&err, MFS_E_ACCESS, "INBOX cannot be removed");
		return fail(&err);
	}
	for (c = n->first_child; c != NULL; c = c->next_sibling)
		if (c->kind == MFS_N_FOLDER)
			return ENOTEMPTY;
	pthread_mutex_unlock(&fs->lock);
	rc = refresh_folder(fs, n, 0, &err);
	pthread_mutex_lock(&fs->lock);
	for (c = n->first_child; c != NULL; c = c->next_sibling)
		if (c->kind == MFS_N_MESSAGE)
			has_msgs = 1;
	if (rc != MFS_OK)
		return fail(&err);
	if (has_msgs)
		return ENOTEMPTY;
	mailbox = strdup(n->mailbox);
	if (mailbox == NULL)
		return ENOMEM;
	pthread_mutex_unlock(&fs->lock);
	rc = fs->store->ops->remove(fs->store, mailbox, &err);
	pthread_mutex_lock(&fs->lock);
	free(mailbox);
	if (rc != MFS_OK)
		return fail(&err);
	if (n->linked)
		mfs_nodes_unlink(fs->nodes, n);
	return 0;
}

/* After a folder rename: the server names of node and every folder below
 * start with `to` instead of `from`. Caller holds the lock. */
static int rename_prefix(struct mfs_node *n, const char *from, const char *to)
{
	struct mfs_node *c;
	size_t flen = strlen(from);

	if (n->kind == MFS_N_FOLDER && strncmp(n->mailbox, from, flen) == 0) {
		char *m;

		if (asprintf(&m, "%s%s", to, n->mailbox + flen) < 0)
			return -1;
		free(n->mailbox);
		n->mailbox = m;
	}
	for (c = n->first_child; c != NULL; c = c->next_sibling)
		if (c->kind == MFS_N_FOLDER && rename_prefix(c, from, to) != 0)
			return -1;
	return 0;
}

/* mv of a folder: RENAME. */
static int rename_folder(struct mfs_fs *fs, struct mfs_node *dir,
			 struct mfs_node *n, struct mfs_node *ndir,
			 const char *newname)
{
	struct mfs_err err;
	char *from, *to;
	int rc;

	(void)dir;
	mfs_err_clear(&err);
	if (ndir->kind != MFS_N_FOLDER && ndir->kind != MFS_N_ROOT) {
		mfs_err_set(&err, MFS_E_ACCESS, "a folder can only move into "
						"a folder");
		return fail(&err);
	}
	if (strcasecmp(n->mailbox, "INBOX") == 0)
		return EBUSY;
	if (mfs_nodes_child(fs->nodes, ndir, newname) != NULL)
		return EEXIST;
	from = strdup(n->mailbox);
	to = child_mailbox(fs, ndir, newname);
	if (from == NULL || to == NULL) {
		rc = errno == ENOMEM ? ENOMEM : EINVAL;
		free(from);
		free(to);
		return rc;
	}
	pthread_mutex_unlock(&fs->lock);
	rc = fs->store->ops->rename(fs->store, from, to, &err);
	pthread_mutex_lock(&fs->lock);
	if (rc == MFS_OK && n->linked &&
	    (mfs_nodes_move(fs->nodes, n, ndir, newname) != 0 ||
	     rename_prefix(n, from, to) != 0)) {
		mfs_nodes_unlink(fs->nodes, n);
		fs->folders_listed = 0;
	}
	free(from);
	free(to);
	return rc == MFS_OK ? 0 : fail(&err);
}

/* --- messages and their files ---------------------------------------------- */

static int sync_message(struct mfs_fs *fs, struct mfs_node *dir, int opening,
			struct mfs_err *err)
{
	int rc;

	if (!message_of(dir)->linked)
		return mfs_err_set(err, MFS_E_NOENT, "message gone");
	rc = dir_ensure(fs, dir, err);
	/* offline and not cached: only the flags file, which the listing
	 * has (so that flags can be written and "rm -r" works); a lookup of
	 * any other name fails with the error */
	if (mfs_err_unreachable(rc) && dir->kind == MFS_N_MESSAGE &&
	    flags_node_add(fs, dir) == 0 && opening) {
		mfs_log_debug("%s: %s; listed with its flags only", dir->name,
			      err->msg);
		mfs_err_clear(err);
		return MFS_OK;
	}
	return rc;
}

/* rm -r of a message directory: \Deleted and UID EXPUNGE of that UID. */
static int rmdir_message(struct mfs_fs *fs, struct mfs_node *n)
{
	struct msg_ref r;
	struct mfs_err err;
	int rc;

	mfs_err_clear(&err);
	if (fs->store->read_only)
		return EROFS;
	if (msg_ref_take(n, &r) != 0)
		return ENOMEM;
	pthread_mutex_unlock(&fs->lock);
	rc = r.msg.uid == 0
		     ? mfs_err_set(&err, MFS_E_NOENT, "message moved")
		     : fs->store->ops->expunge(fs->store, r.mailbox,
					       r.validity, r.msg.uid, &err);
	pthread_mutex_lock(&fs->lock);
	msg_ref_free(&r);
	if (rc == MFS_E_NOENT && n->linked)
		folder_stale(n->parent); /* its listing is out of date */
	if (rc != MFS_OK)
		return fail(&err);
	if (n->linked)
		mfs_nodes_unlink(fs->nodes, n);
	return 0;
}

/* "rm -r" of a message directory empties it first: succeed and do
 * nothing; the rmdir of the message deletes it. */
static int rmdir_partdir(struct mfs_fs *fs, struct mfs_node *n)
{
	(void)n;
	return fs->store->read_only ? EROFS : 0;
}

/* mv FOLDER/<msg> OTHER/: a move to another folder, under its own name.
 * Its UID in the new folder is not known here: the next look at that
 * folder lists it again and shows it under its new name. */
static int rename_message(struct mfs_fs *fs, struct mfs_node *dir,
			  struct mfs_node *n, struct mfs_node *ndir,
			  const char *newname)
{
	struct msg_ref r;
	struct mfs_err err;
	char *to;
	int rc;

	mfs_err_clear(&err);
	if (ndir->kind != MFS_N_FOLDER || ndir == dir || ndir->noselect ||
	    strcmp(n->name, newname) != 0) {
		mfs_err_set(&err, MFS_E_ACCESS, "a message can only move to "
						"another folder, under its "
						"own name");
		return fail(&err);
	}
	if (mfs_nodes_child(fs->nodes, ndir, newname) != NULL)
		return EEXIST;
	if (msg_ref_take(n, &r) != 0)
		return ENOMEM;
	to = strdup(ndir->mailbox);
	if (to == NULL) {
		msg_ref_free(&r);
		return ENOMEM;
	}
	pthread_mutex_unlock(&fs->lock);
	rc = r.msg.uid == 0
		     ? mfs_err_set(&err, MFS_E_NOENT, "message moved")
		     : fs->store->ops->move(fs->store, r.mailbox, r.validity,
					    r.msg.uid, to, &err);
	pthread_mutex_lock(&fs->lock);
	msg_ref_free(&r);
	free(to);
	if (rc == MFS_E_NOENT && n->linked)
		folder_stale(n->parent); /* its listing is out of date */
	if (rc != MFS_OK)
		return fail(&err);
	folder_stale(ndir);
	if (n->linked)
		mfs_nodes_unlink(fs->nodes, n);
	return 0;
}

/* unlink in a message, part or folder directory: a file being written is
 * dropped; the files of a message directory cannot be removed one by one,
 * but "rm -r" removes them before the directory, so that succeeds and
 * does nothing (rmdir of the message directory then deletes the
 * message). */
static int unlink_tree(struct mfs_fs *fs, struct mfs_node *dir,
		       struct mfs_node *n, const char *name)
{
	(void)dir;
	(void)name;
	if (fs->store->read_only)
		return EROFS;
	if (n == NULL)
		return ENOENT;
	if (n->kind != MFS_N_FILE)
		return EISDIR;
	if (n->file == MFS_F_NEW)
		mfs_nodes_unlink(fs->nodes, n);
	return 0;
}

static int open_part_file(struct mfs_fs *fs, struct mfs_node *n,
			  struct fuse_file_info *fi, struct handle *h,
			  struct mfs_err *err)
{
	if (!message_of(n)->linked) /* expunged, or a new UIDVALIDITY */
		return mfs_err_set(err, MFS_E_NOENT, "message gone");
	fi->keep_cache = 1; /* a message never changes */
	/* nothing to do at a close (fs_flush): the kernel need not ask */
	fi->noflush = 1;
	return open_part(fs, n, h, err);
}

static int open_flags(struct mfs_fs *fs, struct mfs_node *n,
		      struct fuse_file_info *fi, struct handle *h,
		      struct mfs_err *err)
{
	(void)fs;
	if (!message_of(n)->linked)
		return mfs_err_set(err, MFS_E_NOENT, "message gone");
	fi->direct_io = 1;
	if ((fi->flags & O_ACCMODE) != O_RDONLY && (fi->flags & O_TRUNC))
		return MFS_OK; /* "> flags": the write sets them */
	h->buf = flags_text(message_of(n)->msg.flags);
	h->len = h->cap = h->buf ? strlen(h->buf) : 0;
	if (h->buf == NULL)
		return mfs_err_set(err, MFS_E_NOMEM, "no memory");
	return MFS_OK;
}

/* "> flags" truncates before the write that sets them. */
static int setattr_flags(struct mfs_fs *fs, struct mfs_node *n,
			 struct handle *h, const struct stat *attr, int to_set)
{
	(void)n;
	(void)h;
	(void)attr;
	if (fs->store->read_only)
		return EROFS;
	if (to_set & FUSE_SET_ATTR_SIZE)
		return 0;
	if (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID |
		      FUSE_SET_ATTR_GID))
		return EPERM;
	return 0;
}

/* --- written files and outbox/ ------------------------------------------ */

static int size_upload(struct mfs_fs *fs, struct mfs_node *n,
		       struct mfs_err *err)
{
	struct stat st;

	(void)fs;
	(void)err;
	if (fstat(((struct upload *)n->priv)->fd, &st) == 0)
		n->size = (uint64_t)st.st_size;
	return MFS_OK;
}

static int writable_upload(const struct mfs_fs *fs, const struct mfs_node *n)
{
	(void)fs;
	return !((struct upload *)n->priv)->committed;
}

static int open_new(struct mfs_fs *fs, struct mfs_node *n,
		    struct fuse_file_info *fi, struct handle *h,
		    struct mfs_err *err)
{
	(void)fs;
	fi->direct_io = 1;
	return open_upload(n, (fi->flags & O_ACCMODE) != O_RDONLY,
			   fi->flags & O_TRUNC, h, err);
}

static int open_outfile(struct mfs_fs *fs, struct mfs_node *n,
			struct fuse_file_info *fi, struct handle *h,
			struct mfs_err *err)
{
	fi->direct_io = 1;
	return open_outbox(fs, n, (fi->flags & O_ACCMODE) != O_RDONLY,
			   fi->flags & O_TRUNC, h, err);
}

/* The size of a status file: its text as it is now. */
static int text_size(struct mfs_fs *fs, struct mfs_node *n,
		     struct mfs_err *err)
{
	char *text = kind(n)->text(fs, n, err);

	if (text == NULL)
		return err->code;
	n->size = strlen(text);
	free(text);
	return MFS_OK;
}

/* A status file opened: its text, made once for this open. */
static int open_text(struct mfs_fs *fs, struct mfs_node *n,
		     struct fuse_file_info *fi, struct handle *h,
		     struct mfs_err *err)
{
	fi->direct_io = 1;
	h->buf = kind(n)->text(fs, n, err);
	h->len = h->cap = h->buf ? strlen(h->buf) : 0;
	return h->buf != NULL ? MFS_OK : err->code;
}

static int sync_outbox(struct mfs_fs *fs, struct mfs_node *dir, int opening,
		       struct mfs_err *err)
{
	(void)dir;
	(void)opening;
	return outbox_sync(fs, err);
}

/* chmod, utimes of outbox/: accepted, nothing to keep. */
static int setattr_accept(struct mfs_fs *fs, struct mfs_node *n,
			  struct handle *h, const struct stat *attr,
			  int to_set)
{
	(void)fs;
	(void)n;
	(void)h;
	(void)attr;
	(void)to_set;
	return 0;
}

static int unlink_status(struct mfs_fs *fs, struct mfs_node *dir,
			 struct mfs_node *n, const char *name)
{
	(void)fs;
	(void)dir;
	(void)n;
	(void)name;
	return EPERM;
}

static int rename_new(struct mfs_fs *fs, struct mfs_node *dir,
		      struct mfs_node *n, struct mfs_node *ndir,
		      const char *newname)
{
	struct mfs_err err;

	(void)dir;
	mfs_err_clear(&err);
	return rename_upload(fs, n, ndir, newname, &err) == MFS_OK
		       ? 0
		       : fail(&err);
}

static const struct kind kinds[K_COUNT] = {
	[K_ROOT] = {.ttl = FOLDER_ATTR_TTL,
		    .writable = writable_store,
		    .sync = sync_root,
		    .miss = miss_folders,
		    .mkdir = mkdir_folder,
		    .unlink = unlink_tree},
	[K_FOLDER] = {.ttl = FOLDER_ATTR_TTL,
		      .writable = writable_store,
		      .sync = sync_folder,
		      .miss = miss_folder,
		      .setattr = setattr_folder,
		      .create = create_upload,
		      .mkdir = mkdir_folder,
		      .unlink = unlink_tree,
		      .rmdir = rmdir_folder,
		      .rename = rename_folder},
	/* A message directory's name may come back for another message
	 * (after a UIDVALIDITY change): the kernel keeps it briefly. */
	[K_MESSAGE] = {.ttl = FOLDER_ATTR_TTL,
		       .writable = writable_store,
		       .sync = sync_message,
		       .unlink = unlink_tree,
		       .rmdir = rmdir_message,
		       .rename = rename_message},
	[K_PARTDIR] = {.ttl = MESSAGE_ATTR_TTL,
		       .sync = sync_message,
		       .unlink = unlink_tree,
		       .rmdir = rmdir_partdir},
	[K_OUTBOX] = {.ttl = 0.0,
		      .writable = writable_always,
		      .sync = sync_outbox,
		      .setattr = setattr_accept,
		      .create = outbox_create,
		      .unlink = outbox_unlink},
	[K_STATUSDIR] = {.ttl = 0.0,
			 .sync = sync_outbox,
			 .unlink = unlink_status},
	[K_PART] = {.ttl = MESSAGE_ATTR_TTL,
		    .size = part_size,
		    .open = open_part_file},
	/* flags and written files change under the kernel */
	[K_FLAGS] = {.ttl = 0.0,
		     .writable = writable_store,
		     .open = open_flags,
		     .setattr = setattr_flags},
	[K_NEW] = {.ttl = 0.0,
		   .writable = writable_upload,
		   .size = size_upload,
		   .open = open_new,
		   .setattr = setattr_upload,
		   .rename = rename_new},
	[K_OUTFILE] = {.ttl = 0.0,
		       .writable = outbox_file_writable,
		       .size = outbox_file_size,
		       .open = open_outfile,
		       .setattr = outbox_setattr,
		       .rename = outbox_rename},
	[K_STATUSFILE] = {.ttl = 0.0,
			  .text = outbox_status_text,
			  .size = text_size,
			  .open = open_text},
	/* .search/ and what is in it (search.c) */
	[K_SEARCH] = {.ttl = FOLDER_ATTR_TTL,
		      .writable = writable_always,
		      .miss = search_miss,
		      .mkdir = search_mkdir},
	[K_QUERY] = {.ttl = FOLDER_ATTR_TTL,
		     .sync = search_sync,
		     .setattr = search_setattr,
		     .unlink = search_unlink,
		     .rmdir = search_rmdir},
	[K_HITDIR] = {.ttl = FOLDER_ATTR_TTL,
		      .sync = search_sync,
		      .unlink = search_unlink,
		      .rmdir = search_rmdir_hitdir},
	[K_LINK] = {.ttl = FOLDER_ATTR_TTL},
	/* .mailfs/ and what is in it (state.c) */
	[K_MAILFSDIR] = {.ttl = 0.0},
	[K_STATEFILE] = {.ttl = 0.0,
			 .text = state_text,
			 .size = text_size,
			 .open = open_text},
};

/* --- handlers: changing the tree ----------------------------------------- */

static void fs_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode)
{
	struct mfs_fs *fs = fuse_req_userdata(req);
	struct mfs_node *dir, *made = NULL;
	int e;

	(void)mode;
	dir = dir_get(req, fs, parent);
	if (dir == NULL)
		return;
	e = kind(dir)->mkdir != NULL ? kind(dir)->mkdir(fs, dir, name, &made)
				     : no_write(fs);
	if (e == 0)
		reply_entry(req, fs, made);
	mfs_nodes_release(fs->nodes, dir);
	pthread_mutex_unlock(&fs->lock);
	if (e != 0)
		fuse_reply_err(req, e);
}

/* rmdir of a folder: DELETE. Of a message directory: expunge. */
static void fs_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct mfs_fs *fs = fuse_req_userdata(req);
	struct mfs_node *dir, *n;
	int e;

	dir = dir_get(req, fs, parent);
	if (dir == NULL)
		return;
	n = mfs_nodes_child(fs->nodes, dir, name);
	if (n == NULL)
		e = fs->store->read_only ? EROFS : ENOENT;
	else if (n->kind == MFS_N_FILE)
		e = fs->store->read_only ? EROFS : ENOTDIR;
	else if (kind(n)->rmdir == NULL)
		e = no_write(fs);
	else {
		mfs_nodes_hold(n);
		e = kind(n)->rmdir(fs, n);
		mfs_nodes_release(fs->nodes, n);
	}
	mfs_nodes_release(fs->nodes, dir);
	pthread_mutex_unlock(&fs->lock);
	fuse_reply_err(req, e);
}

static void fs_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct mfs_fs *fs = fuse_req_userdata(req);
	struct mfs_node *dir;
	int e;

	dir = dir_get(req, fs, parent);
	if (dir == NULL)
		return;
	e = kind(dir)->unlink != NULL
		    ? kind(dir)->unlink(fs, dir,
					mfs_nodes_child(fs->nodes, dir, name),
					name)
		    : no_write(fs);
	mfs_nodes_release(fs->nodes, dir);
	pthread_mutex_unlock(&fs->lock);
	fuse_reply_err(req, e);
}

/* rename: by the kind of what is renamed. outbox/ is a device of its own:
 * nothing moves in or out of it. */
static void fs_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
		      fuse_ino_t newparent, const char *newname,
		      unsigned int flags)
{
	struct mfs_fs *fs = fuse_req_userdata(req);
	struct mfs_node *dir, *ndir, *n;
	int e, outbox;

	dir = dir_get(req, fs, parent);
	if (dir == NULL)
		return;
	ndir = mfs_nodes_get(fs->nodes, newparent);
	n = mfs_nodes_child(fs->nodes, dir, name);
	outbox = dir->kind == MFS_N_OUTBOX ||
		 (ndir != NULL && ndir->kind == MFS_N_OUTBOX);
	if (outbox && n != NULL && (dir != ndir || n->kind != MFS_N_FILE))
		e = EXDEV;
	else if (!outbox && fs->store->read_only)
		e = EROFS;
	else if (ndir == NULL || n == NULL)
		e = ENOENT;
	else if (!outbox && (flags & RENAME_EXCHANGE))
		e = EINVAL;
	else if (kind(n)->rename == NULL)
		e = EACCES; /* only folders and messages move */
	else {
		mfs_nodes_hold(n);
		mfs_nodes_hold(ndir);
		e = kind(n)->rename(fs, dir, n, ndir, newname);
		mfs_nodes_release(fs->nodes, ndir);
		mfs_nodes_release(fs->nodes, n);
	}
	mfs_nodes_release(fs->nodes, dir);
	pthread_mutex_unlock(&fs->lock);
	fuse_reply_err(req, e);
}

static void fs_create(fuse_req_t req, fuse_ino_t parent, const char *name,
		      mode_t mode, struct fuse_file_info *fi)
{
	struct mfs_fs *fs = fuse_req_userdata(req);
	struct mfs_node *dir;

	(void)mode;
	dir = node_get(req, fs, parent);
	if (dir == NULL)
		return;
	if (kind(dir)->create == NULL) {
		pthread_mutex_unlock(&fs->lock);
		fuse_reply_err(req, no_write(fs));
		return;
	}
	kind(dir)->create(req, fs, dir, name, fi);
}

static void fs_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
		       int to_set, struct fuse_file_info *fi)
{
	struct mfs_fs *fs = fuse_req_userdata(req);
	const struct kind *k;
	struct handle *h = NULL;
	struct mfs_node *n;
	struct stat st;
	int e = 0;

	n = node_get(req, fs, ino);
	if (n == NULL)
		return;
	if (fi != NULL && handle_live(fs, (struct handle *)(uintptr_t)fi->fh))
		h = (struct handle *)(uintptr_t)fi->fh;
	if (h != NULL && h->node != n)
		h = NULL;
	k = kind(n);
	mfs_nodes_hold(n);
	if (k->setattr != NULL)
		e = k->setattr(fs, n, h, attr, to_set);
	else if (fs->store->read_only)
		e = EROFS;
	else if (to_set & (FUSE_SET_ATTR_SIZE | FUSE_SET_ATTR_MODE |
			   FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID))
		e = EPERM;
	/* other times are accepted and ignored: the message date is the
	 * mtime */
	if (e == 0) {
		struct mfs_err err;

		mfs_err_clear(&err);
		node_size(fs, n, &err);
		node_stat(fs, n, &st);
	}
	mfs_nodes_release(fs->nodes, n);
	pthread_mutex_unlock(&fs->lock);
	if (e != 0)
		fuse_reply_err(req, e);
	else
		fuse_reply_attr(req, &st, 0.0);
}

/* A match in .search/QUERY/ (search.c). */
static void fs_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct mfs_fs *fs = fuse_req_userdata(req);
	struct mfs_node *n = node_get(req, fs, ino);
	char *t;
	int e;

	if (n == NULL)
		return;
	t = n->kind == MFS_N_LINK ? search_link_target(n) : NULL;
	e = n->kind == MFS_N_LINK ? ENOMEM : EINVAL;
	pthread_mutex_unlock(&fs->lock);
	if (t == NULL) {
		fuse_reply_err(req, e);
		return;
	}
	fuse_reply_readlink(req, t);
	free(t);
}

/* --- extended attributes: none ----------------------------------------
 *
 * There is no listxattr: the kernel learns from the first ENOSYS that the
 * mount lists none, and stops asking. getxattr answers ENOTSUP for every
 * name, rather than ENOSYS: after an ENOSYS the kernel answers the POSIX
 * ACL names itself with ENODATA ("no ACL here"), so "ls -l" goes on asking
 * for two of them per entry; ENOTSUP tells it, and the SELinux label's
 * ENOTSUP too, that the filesystem has none, and it stops asking at the
 * first entry (coreutils keeps that per device). Flags are read and
 * written through each message's flags file. setxattr is kept so that a
 * read-only mount answers EROFS, like every other write.
 */

static void fs_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			size_t size)
{
	(void)ino;
	(void)name;
	(void)size;
	fuse_reply_err(req, ENOTSUP);
}

static void fs_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			const char *value, size_t size, int flags)
{
	struct mfs_fs *fs = fuse_req_userdata(req);

	(void)ino;
	(void)name;
	(void)value;
	(void)size;
	(void)flags;
	fuse_reply_err(req, fs->store->read_only ? EROFS : ENOTSUP);
}

static void fs_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)userdata;
	/* always READDIRPLUS: "ls -l" of a folder is the common case */
	if (conn->capable & FUSE_CAP_READDIRPLUS)
		conn->want |= FUSE_CAP_READDIRPLUS;
	conn->want &= ~FUSE_CAP_READDIRPLUS_AUTO;
}

const struct fuse_lowlevel_ops mfs_fs_ops = {
	.init = fs_init,
	.lookup = fs_lookup,
	.forget = fs_forget,
	.forget_multi = fs_forget_multi,
	.getattr = fs_getattr,
	.setattr = fs_setattr,
	.readlink = fs_readlink,
	.opendir = fs_opendir,
	.readdir = fs_readdir,
	.readdirplus = fs_readdirplus,
	.releasedir = fs_releasedir,
	.open = fs_open,
	.read = fs_read,
	.write = fs_write,
	.flush = fs_flush,
	.release = fs_release,
	.statfs = fs_statfs,
	.mknod = fs_mknod,
	.mkdir = fs_mkdir,
	.unlink = fs_unlink,
	.rmdir = fs_rmdir,
	.rename = fs_rename,
	.create = fs_create,
	.symlink = fs_symlink,
	.link = fs_link,
	.setxattr = fs_setxattr,
	.getxattr = fs_getxattr,
};
