/*
 * fs.c - the FUSE layer (see fs.h).
 *
 * A request flows: kernel -> libfuse worker thread -> handler here ->
 * (tree lock) node lookup -> (no lock) store op or cache read -> (tree lock)
 * merge the result into the tree -> reply.
 */
#include "fs.h"

#include "imap.h"

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

#include "log.h"
#include "mime.h"
#include "names.h"
#include "node.h"
#include "spool.h"

/* How long a folder listing is trusted before it is asked for again. */
#define LIST_TTL 5
/* How long the folder tree is trusted. */
#define FOLDERS_TTL 5
/* How long the kernel may keep what it learnt of a folder, and of the
 * immutable message directories and files. */
#define FOLDER_ATTR_TTL 1.0
#define MESSAGE_ATTR_TTL 60.0

struct mfs_fs {
	pthread_mutex_t lock;		/* guards nodes and every node */
	pthread_mutex_t refresh;	/* one listing refresh at a time */
	struct mfs_nodes *nodes;	/* owned */
	struct mfs_store *store;	/* borrowed */
	struct mfs_cache *cache;	/* borrowed */
	const struct mfs_account *acct; /* borrowed */
	time_t folders_listed;
	unsigned gen;
	char delim; /* the server's hierarchy delimiter, '\0' if flat */
	char *sent_mailbox;	  /* owned: SPECIAL-USE \Sent, or NULL */
	struct mfs_spool *spool;  /* borrowed, or NULL: no outbox/ */
	struct mfs_node *outbox;  /* outbox/, or NULL */
	struct idle *idle;	  /* owned, or NULL */
	struct handle *handles;	  /* open files (fs->lock) */
	uid_t uid;
	gid_t gid;
	/* Readers: stores of their own that fetch message bytes, so that
	 * parallel reads do not queue behind one connection or a listing.
	 * None: fs->store reads. Guarded by readers_lock. */
	pthread_mutex_t readers_lock;
	pthread_cond_t reader_free;
	struct mfs_store **readers; /* owned array of owned stores */
	int *reader_busy;	    /* owned; one per reader */
	size_t nreaders;
	int store_reading;	    /* fs->store is reading (with readers) */
	/* The run of fetch-aheads going on (fs->lock): in which folder, how
	 * many messages the last one asked for, and when it ended. */
	uint64_t ahead_folder;
	size_t ahead_window;
	time_t ahead_last;
	/* Files written into folders committed so far (fs->lock); a listing
	 * that began after commit number k shows the messages of commits up
	 * to k, so their written names can go (folder_merge). */
	unsigned commits;
};

/* A directory listing taken at opendir, served by readdir: the children
 * of the directory then, each held so that it stays until releasedir. Names
 * are read from the nodes when readdir runs (no copy: a folder of 100,000
 * messages would otherwise hold a second set of names while it is read).
 * Offsets: 0 is ".", 1 is "..", 2 + i is nodes[i]. */
struct dir_snap {
	uint64_t self, parent; /* inode numbers of "." and ".." */
	size_t n;
	struct mfs_node **nodes; /* owned array; each node held */
};

/* A file being written into a folder (MFS_F_NEW); owned by its node. See
 * "written files" below for its life. */
struct upload {
	int fd;		  /* owned: an anonymous file in cache_dir */
	unsigned writers; /* handles that may still write and commit */
	int committed;	  /* APPENDed, or being: read-only from then on */
	time_t when;	  /* mtime set before the commit: internal date */
	unsigned seq;	  /* fs->commits when it was appended */
};

/* An outbox/ file the server accepted, shown a few seconds more
 * (MFS_F_OUTBOX with priv); owned by its node. */
struct sent_file {
	int fd;	      /* owned: the message file as written */
	time_t until; /* when it leaves outbox/ */
};

/* How long an accepted outbox/ file stays, so that a tool that sets its
 * mode or times after close() still finds it. */
#define SENT_LINGER 5

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
	fs->store = store;
	fs->cache = cache;
	fs->acct = acct;
	fs->uid = getuid();
	fs->gid = getgid();
	pthread_mutex_init(&fs->readers_lock, NULL);
	pthread_cond_init(&fs->reader_free, NULL);
	return fs;
}

static void *store_free_thread(void *arg)
{
	struct mfs_store *st = arg;

	st->ops->free(st);
	return NULL;
}

/* Frees the readers side by side: each may wait a second for its
 * LOGOUT to be answered, and unmounting must not wait for them in turn. */
static void readers_free(struct mfs_fs *fs)
{
	pthread_t *t = calloc(fs->nreaders ? fs->nreaders : 1, sizeof(*t));
	int *started = calloc(fs->nreaders ? fs->nreaders : 1,
			      sizeof(*started));
	size_t i;

	for (i = 0; i < fs->nreaders; i++) {
		started[i] = t != NULL && started != NULL &&
			     pthread_create(&t[i], NULL, store_free_thread,
					    fs->readers[i]) == 0;
		if (!started[i])
			fs->readers[i]->ops->free(fs->readers[i]);
	}
	for (i = 0; i < fs->nreaders; i++)
		if (started[i])
			pthread_join(t[i], NULL);
	free(t);
	free(started);
	free(fs->readers);
	free(fs->reader_busy);
	fs->readers = NULL;
	fs->reader_busy = NULL;
	fs->nreaders = 0;
}

void mfs_fs_set_readers(struct mfs_fs *fs, struct mfs_store **readers,
			size_t n)
{
	fs->reader_busy = calloc(n ? n : 1, sizeof(*fs->reader_busy));
	fs->readers = readers;
	fs->nreaders = n;
	if (fs->reader_busy == NULL) /* then fs->store reads */
		readers_free(fs);
}

/* A store to fetch message bytes with: fs->store, logged in already, when
 * no fetch uses it, else a reader no one is using (waiting for one when
 * all are busy); fs->store alone when there are no readers. Give it back
 * with reader_put(). Called without fs->lock. */
static struct mfs_store *reader_get(struct mfs_fs *fs)
{
	struct mfs_store *st = NULL;
	size_t i;

	if (fs->nreaders == 0)
		return fs->store;
	pthread_mutex_lock(&fs->readers_lock);
	while (st == NULL) {
		if (!fs->store_reading) {
			fs->store_reading = 1;
			st = fs->store;
		}
		for (i = 0; i < fs->nreaders && st == NULL; i++) {
			if (!fs->reader_busy[i]) {
				fs->reader_busy[i] = 1;
				st = fs->readers[i];
			}
		}
		if (st == NULL)
			pthread_cond_wait(&fs->reader_free, &fs->readers_lock);
	}
	pthread_mutex_unlock(&fs->readers_lock);
	return st;
}

static void reader_put(struct mfs_fs *fs, struct mfs_store *st)
{
	size_t i;

	if (fs->nreaders == 0)
		return;
	pthread_mutex_lock(&fs->readers_lock);
	if (st == fs->store)
		fs->store_reading = 0;
	for (i = 0; i < fs->nreaders; i++)
		if (fs->readers[i] == st)
			fs->reader_busy[i] = 0;
	pthread_cond_signal(&fs->reader_free);
	pthread_mutex_unlock(&fs->readers_lock);
}

void mfs_fs_free(struct mfs_fs *fs)
{
	if (fs == NULL)
		return;
	readers_free(fs);
	pthread_cond_destroy(&fs->reader_free);
	pthread_mutex_destroy(&fs->readers_lock);
	mfs_nodes_free(fs->nodes);
	free(fs->sent_mailbox);
	pthread_mutex_destroy(&fs->lock);
	pthread_mutex_destroy(&fs->refresh);
	free(fs);
}

/* --- folder tree -------------------------------------------------------- */

/* The display name of one component of a server folder name. */
static char *folder_display(const char *raw, size_t len)
{
	char *comp = strndup(raw, len), *utf8, *name;

	if (comp == NULL)
		return NULL;
	if (strcasecmp(comp, "INBOX") == 0) {
		free(comp);
		return strdup("INBOX");
	}
	utf8 = mfs_mutf7_decode(comp);
	name = mfs_name_sanitize(utf8 != NULL ? utf8 : comp);
	free(utf8);
	free(comp);
	return name;
}

/*
 * The folder node for the server name prefix under dir: an existing child
 * with that mailbox, else a new one under the display name (with a suffix
 * when another folder already shows under it). Caller holds the lock.
 */
static struct mfs_node *folder_child(struct mfs_fs *fs, struct mfs_node *dir,
				     const char *display, const char *prefix)
{
	struct mfs_node *n;
	char *alt = NULL;
	int i;

	for (i = 1; i < 100; i++) {
		const char *name = display;

		if (i > 1) {
			free(alt);
			alt = mfs_name_unique(display, i);
			if (alt == NULL)
				return NULL;
			name = alt;
		}
		n = mfs_nodes_child(fs->nodes, dir, name);
		if (n != NULL && n->kind == MFS_N_FOLDER &&
		    strcmp(n->mailbox, prefix) == 0)
			break;
		if (n != NULL)
			continue;
		n = mfs_nodes_add(fs->nodes, dir, name, MFS_N_FOLDER);
		if (n != NULL) {
			n->mailbox = strdup(prefix);
			n->noselect = 1; /* until LIST names it */
			if (n->mailbox == NULL) {
				mfs_nodes_unlink(fs->nodes, n);
				n = NULL;
			}
		}
		break;
	}
	free(alt);
	return n;
}

/* Makes the nodes for one LIST entry, creating parents the server did not
 * list. Caller holds the lock. Returns 0, or -1 on ENOMEM. */
static int folder_add(struct mfs_fs *fs, const struct mfs_store_folder *f)
{
	struct mfs_node *dir = mfs_nodes_root(fs->nodes);
	const char *p = f->name;
	char *prefix;

	for (;;) {
		const char *end = f->delim != '\0' ? strchr(p, f->delim) : NULL;
		size_t plen = end != NULL ? (size_t)(end - f->name)
					  : strlen(f->name);
		char *display = folder_display(p, end != NULL
							  ? (size_t)(end - p)
							  : strlen(p));

		prefix = strndup(f->name, plen);
		if (display == NULL || prefix == NULL) {
			free(display);
			free(prefix);
			return -1;
		}
		dir = folder_child(fs, dir, display, prefix);
		free(display);
		free(prefix);
		if (dir == NULL)
			return -1;
		dir->gen = fs->gen;
		dir->delim = f->delim;
		if (end == NULL)
			break;
		p = end + 1;
	}
	dir->noselect = f->noselect;
	if (fs->delim == '\0')
		fs->delim = f->delim;
	if (f->sent && fs->sent_mailbox == NULL)
		fs->sent_mailbox = strdup(f->name);
	return 0;
}

/* Unlinks the folders the last LIST did not name (nor any folder below). */
static void folders_sweep(struct mfs_fs *fs, struct mfs_node *dir)
{
	struct mfs_node *n = dir->first_child, *next;

	for (; n != NULL; n = next) {
		next = n->next_sibling;
		if (n->kind != MFS_N_FOLDER)
			continue;
		if (n->gen != fs->gen)
			mfs_nodes_unlink(fs->nodes, n);
		else
			folders_sweep(fs, n);
	}
}

/* LIST, then brings the folder nodes in line. Takes the locks itself. */
static int refresh_folders(struct mfs_fs *fs, int ttl, struct mfs_err *err)
{
	struct mfs_store_folder *folders = NULL;
	size_t n = 0, i;
	int r = MFS_OK;

	pthread_mutex_lock(&fs->refresh);
	if (ttl > 0 && time(NULL) - fs->folders_listed < ttl)
		goto unlock_refresh;
	r = fs->store->ops->list(fs->store, &folders, &n, err);
	if (r != MFS_OK)
		goto unlock_refresh;
	pthread_mutex_lock(&fs->lock);
	fs->gen++;
	for (i = 0; i < n; i++) {
		if (folder_add(fs, &folders[i]) != 0) {
			r = mfs_err_set(err, MFS_E_NOMEM, "out of memory");
			break;
		}
	}
	if (r == MFS_OK) {
		folders_sweep(fs, mfs_nodes_root(fs->nodes));
		fs->folders_listed = time(NULL);
	}
	pthread_mutex_unlock(&fs->lock);
	mfs_store_folders_free(folders, n);
unlock_refresh:
	pthread_mutex_unlock(&fs->refresh);
	return r;
}

/*
 * IMAP: logs in and shows INBOX, which every account has (RFC 3501, 5.1). The
 * folder list is asked for only when the root is first listed or a name
 * other than INBOX is looked up there, so that a mount that goes straight
 * to INBOX costs one round trip less.
 */
int mfs_fs_prepare(struct mfs_fs *fs, struct mfs_err *err)
{
	struct mfs_store_folder inbox = {.name = "INBOX"};
	int r;

	/* POP3: its one folder is known without a word to the server, and a
	 * login now would be a session of its own */
	if (fs->store->read_only)
		return refresh_folders(fs, 0, err);
	if (fs->store->ops->connect(fs->store, err) != MFS_OK)
		return err->code;
	pthread_mutex_lock(&fs->lock);
	r = folder_add(fs, &inbox);
	pthread_mutex_unlock(&fs->lock);
	if (r != 0)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	mfs_err_clear(err);
	return MFS_OK;
}

/* --- messages of a folder ------------------------------------------------ */

static char *message_name(const struct mfs_store_msg *m)
{
	char id[32];

	if (m->uidl != NULL)
		return mfs_msg_dirname(m->date, m->from, m->subject, m->uidl);
	snprintf(id, sizeof(id), "%" PRIu32, m->uid);
	return mfs_msg_dirname(m->date, m->from, m->subject, id);
}

/* Moves m into node (taking its uidl). Sender and subject are in the
 * node's name already and are not kept: a folder of 100,000 messages must
 * stay small. */
static void message_take(struct mfs_node *node, struct mfs_store_msg *m)
{
	free(m->from);
	free(m->subject);
	m->from = m->subject = NULL;
	node->msg = *m;
	node->mtime = m->date > 0 ? m->date : 0;
	memset(m, 0, sizeof(*m));
}

/* Merges a listing into folder dir; the listing began after `commits`
 * files written into folders were appended, and shows those messages, so
 * their written names leave. Caller holds the lock. */
static int folder_merge(struct mfs_fs *fs, struct mfs_node *dir,
			uint32_t validity, struct mfs_store_msg *msgs,
			size_t n, unsigned commits)
{
	struct mfs_node *c, *next;
	size_t i;

	if (dir->listed != 0 && dir->validity != validity) {
		mfs_log_info("folder %s: UIDVALIDITY changed, relisting",
			     dir->mailbox);
		for (c = dir->first_child; c != NULL; c = next) {
			next = c->next_sibling;
			if (c->kind == MFS_N_MESSAGE)
				mfs_nodes_unlink(fs->nodes, c);
		}
	}
	fs->gen++;
	for (i = 0; i < n; i++) {
		char *name = message_name(&msgs[i]);

		if (name == NULL)
			return -1;
		c = mfs_nodes_child(fs->nodes, dir, name);
		if (c != NULL && c->kind == MFS_N_MESSAGE &&
		    c->msg.uid == msgs[i].uid) {
			c->msg.flags = msgs[i].flags;
			c->gen = fs->gen;
			free(name);
			continue;
		}
		if (c != NULL && c->kind == MFS_N_MESSAGE) {
			/* the name of a message that left, now another's */
			mfs_nodes_unlink(fs->nodes, c);
			c = NULL;
		}
		if (c == NULL) {
			c = mfs_nodes_add(fs->nodes, dir, name, MFS_N_MESSAGE);
			if (c == NULL) {
				free(name);
				return -1;
			}
			message_take(c, &msgs[i]);
			c->gen = fs->gen;
		}
		free(name);
	}
	for (c = dir->first_child; c != NULL; c = next) {
		struct upload *u = c->kind == MFS_N_FILE ? c->priv : NULL;

		next = c->next_sibling;
		if (c->kind == MFS_N_MESSAGE && c->gen != fs->gen)
			mfs_nodes_unlink(fs->nodes, c);
		else if (u != NULL && u->committed && u->seq != 0 &&
			 (int)(commits - u->seq) >= 0)
			mfs_nodes_unlink(fs->nodes, c);
	}
	dir->validity = validity;
	dir->listed = time(NULL);
	return 0;
}

/* Lists folder dir again when its listing is older than ttl seconds.
 * The caller holds a reference on dir but not the tree lock. */
static int refresh_folder(struct mfs_fs *fs, struct mfs_node *dir, int ttl,
			  struct mfs_err *err)
{
	struct mfs_store_msg *msgs = NULL;
	uint32_t validity = 0;
	unsigned commits;
	size_t n = 0;
	char *mailbox;
	int r = MFS_OK;

	pthread_mutex_lock(&fs->refresh);
	pthread_mutex_lock(&fs->lock);
	if (dir->noselect || !dir->linked ||
	    (dir->listed != 0 && time(NULL) - dir->listed < ttl)) {
		pthread_mutex_unlock(&fs->lock);
		goto unlock_refresh;
	}
	mailbox = strdup(dir->mailbox);
	commits = fs->commits;
	pthread_mutex_unlock(&fs->lock);
	if (mailbox == NULL) {
		r = mfs_err_set(err, MFS_E_NOMEM, "out of memory");
		goto unlock_refresh;
	}
	r = fs->store->ops->index(fs->store, mailbox, &validity, &msgs, &n,
				  err);
	if (r == MFS_OK) {
		pthread_mutex_lock(&fs->lock);
		if (folder_merge(fs, dir, validity, msgs, n, commits) != 0)
			r = mfs_err_set(err, MFS_E_NOMEM, "out of memory");
		pthread_mutex_unlock(&fs->lock);
		mfs_store_msgs_free(msgs, n);
		malloc_trim(0); /* give the listing's memory back */
	}
	free(mailbox);
unlock_refresh:
	pthread_mutex_unlock(&fs->refresh);
	return r;
}


/* --- message views ------------------------------------------------------- */

/* Messages of at least LAZY_MIN bytes are read lazily where the store can:
 * their directory is laid out from a skeleton (store.h) in which each part
 * body of at least HOLE_MIN bytes is a hole, and a hole is fetched only
 * when a file that needs it is read. */
#define LAZY_MIN (1024 * 1024)
#define HOLE_MIN (64 * 1024)

/* A file mapping whose pages mime.c may have dropped while it scans or
 * decodes (mfs_release_fn): they are read again from the file. */
struct mapping {
	void *map;
	size_t len;
};

/* The bytes of a message and their layout, made on the first look inside
 * the message directory; owned by the message node (its priv). */
struct view {
	int fd;			   /* owned: the cache entry, or the skeleton */
	char *map;		   /* owned: fd mapped, or NULL when empty */
	size_t len;
	struct mfs_layout *layout; /* owned; borrows map */
	struct mfs_seg *segs;	   /* owned; a skeleton: its real and hole
				    * ranges (nsegs); NULL for the message */
	size_t nsegs;
	struct view *full;	   /* owned; a skeleton: the whole message,
				    * made when a file needs bytes that the
				    * skeleton makes up (message.eml) */
};


static void view_free(struct view *v)
{
	if (v == NULL)
		return;
	mfs_layout_free(v->layout);
	if (v->map != NULL)
		munmap(v->map, v->len);
	if (v->fd >= 0)
		close(v->fd);
	mfs_store_segs_free(v->segs, v->nsegs);
	view_free(v->full);
	free(v);
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

/* Which message to fetch: copied out of the tree under the lock. */
struct msg_ref {
	char *mailbox; /* owned */
	uint32_t validity;
	struct mfs_store_msg msg; /* uid, size and an owned uidl copy */
};

static void msg_ref_free(struct msg_ref *r)
{
	free(r->mailbox);
	free(r->msg.uidl);
	memset(r, 0, sizeof(*r));
}

/* The message node above n (n itself when it is one), or NULL. */
static struct mfs_node *message_of(struct mfs_node *n)
{
	while (n != NULL && n->kind != MFS_N_MESSAGE)
		n = n->parent;
	return n;
}

/* Caller holds the lock. Returns 0, or -1 on ENOMEM. */
static int msg_ref_take(const struct mfs_node *msg, struct msg_ref *r)
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

struct fetch_ctx {
	struct mfs_fs *fs;
	const struct msg_ref *ref;
};

static int fetch_fill(void *ctx, int fd, size_t *len, struct mfs_err *err)
{
	struct fetch_ctx *f = ctx;
	struct mfs_store *st = reader_get(f->fs);
	int rc = st->ops->fetch(st, f->ref->mailbox, f->ref->validity,
				&f->ref->msg, fd, len, err);

	reader_put(f->fs, st);
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
	/* The pages are the cache file's: let them go until a part is read,
	 * so that looking into a large message does not keep it resident. */
	if (v->map != NULL)
		madvise(v->map, v->len, MADV_DONTNEED);
	return MFS_OK;
}

/* The view of the whole message, fetched into the cache if need be. */
static int view_build_whole(struct mfs_fs *fs, const struct msg_ref *r,
			    struct view **out, struct mfs_err *err)
{
	struct view *v = calloc(1, sizeof(*v));

	if (v == NULL)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	v->fd = -1;
	if (message_fd(fs, r, &v->fd, err) != MFS_OK ||
	    view_map(v, err) != MFS_OK) {
		view_free(v);
		return err->code;
	}
	*out = v;
	return MFS_OK;
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
	size_t i;
	int rc;

	*out = NULL;
	if (ops->skeleton == NULL || r->msg.uid == 0 ||
	    r->msg.size < LAZY_MIN || cache_key(r, "", key, sizeof(key)) != 0 ||
	    mfs_cache_has(fs->cache, key, r->msg.size))
		return MFS_OK;
	v = calloc(1, sizeof(*v));
	if (v == NULL)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	v->fd = memfd_create("mailfs-skeleton", MFD_CLOEXEC);
	if (v->fd < 0) {
		mfs_log_err("skeleton: memfd: %s", strerror(errno));
		goto whole;
	}
	rd = reader_get(fs);
	rc = ops->skeleton(rd, r->mailbox, r->validity, &r->msg, HOLE_MIN,
			   v->fd, &v->segs, &v->nsegs, err);
	reader_put(fs, rd);
	if (rc != MFS_OK) {
		if (err->code != MFS_E_PROTO) {
			view_free(v);
			return err->code;
		}
		mfs_log_debug("skeleton of %u: %s", r->msg.uid, err->msg);
		goto whole;
	}
	if (v->nsegs == 0 || view_map(v, err) != MFS_OK)
		goto whole;
	for (i = 0; i < v->nsegs; i++) {
		if (v->segs[i].hole &&
		    !hole_is_leaf(v->layout->root, v->segs[i].off,
				  v->segs[i].len)) {
			mfs_log_debug("skeleton of %u does not fit its "
				      "holes",
				      r->msg.uid);
			goto whole;
		}
	}
	hole_sizes(v, &v->layout->root_dir);
	*out = v;
	return MFS_OK;
whole:
	view_free(v);
	mfs_err_clear(err);
	return MFS_OK;
}

static int view_build(struct mfs_fs *fs, const struct msg_ref *r,
		      struct view **out, struct mfs_err *err)
{
	if (view_build_lazy(fs, r, out, err) != MFS_OK)
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
 * AHEAD_MAX messages and AHEAD_BYTES bytes: 1,000 messages read in a row
 * then cost 6 round trips instead of 32. Large messages are left to their
 * own fetch.
 */
#define AHEAD_FIRST 32
#define AHEAD_MAX 1024
#define AHEAD_BYTES (16 * 1024 * 1024)
#define AHEAD_GAP 2
#define AHEAD_SIZE_MAX (1024 * 1024)

struct ahead {
	struct mfs_fs *fs;
	size_t n;
	struct ahead_item {
		uint32_t uid;
		uint64_t size;
		char *key; /* owned */
	} *item;   /* owned array */
	char *tmp; /* owned: the file being written */
};

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

static void ahead_done(void *ctx, uint32_t uid, int fd, size_t len)
{
	struct ahead *a = ctx;
	size_t i;

	(void)len; /* the commit checks the size on disk */
	for (i = 0; i < a->n; i++)
		if (a->item[i].uid == uid)
			break;
	if (i < a->n && a->tmp != NULL) {
		mfs_cache_commit(a->fs->cache, a->item[i].key, fd, a->tmp,
				 a->item[i].size);
	} else {
		close(fd);
		if (a->tmp != NULL)
			unlink(a->tmp);
	}
	free(a->tmp);
	a->tmp = NULL;
}

/* Caller holds the lock; msg is held. Drops the lock while it fetches.
 * Returns MFS_OK, or the network error that made the fetch fail (the
 * caller then fails too rather than wait a second time). */
/* Whether the cache holds msg's raw bytes. Caller holds the lock and a
 * hold on msg; the lock is dropped for the look at the disk. */
static int msg_cached(struct mfs_fs *fs, struct mfs_node *msg)
{
	struct msg_ref r;
	char key[1024];
	int have = 0;

	if (msg_ref_take(msg, &r) != 0)
		return 0;
	if (cache_key(&r, "", key, sizeof(key)) == 0) {
		pthread_mutex_unlock(&fs->lock);
		have = mfs_cache_has(fs->cache, key, r.msg.size);
		pthread_mutex_lock(&fs->lock);
	}
	msg_ref_free(&r);
	return have;
}

static int fetch_ahead(struct mfs_fs *fs, struct mfs_node *msg,
		       struct mfs_err *ret)
{
	struct ahead a = {.fs = fs};
	uint32_t *uids = NULL;
	struct mfs_node *c;
	struct msg_ref r;
	char *mailbox = NULL, key[1024];
	uint32_t validity;
	struct mfs_err err;
	size_t i, n = 0, window = AHEAD_FIRST;
	uint64_t bytes = 0;
	int rc = MFS_OK, fetched = 0;

	if (fs->store->ops->fetch_many == NULL || msg->msg.uid == 0 ||
	    msg->msg.size > AHEAD_SIZE_MAX || msg->parent->kind != MFS_N_FOLDER)
		return MFS_OK;
	/* brought by an earlier batch: no need to look at up to AHEAD_MAX
	 * neighbours for each message of a run */
	if (msg_cached(fs, msg))
		return MFS_OK;
	if (fs->ahead_folder == msg->parent->ino &&
	    time(NULL) - fs->ahead_last <= AHEAD_GAP)
		window = fs->ahead_window * 2 < AHEAD_MAX
			     ? fs->ahead_window * 2
			     : AHEAD_MAX;
	mailbox = strdup(msg->parent->mailbox);
	a.item = calloc(window, sizeof(*a.item));
	uids = calloc(window, sizeof(*uids));
	if (mailbox == NULL || a.item == NULL || uids == NULL) {
		/* no fetch-ahead: the message is fetched alone */
		pthread_mutex_unlock(&fs->lock);
		goto free_all;
	}
	validity = msg->parent->validity;
	/* msg first, then its neighbours after it, then before it: names
	 * sort by date, which may run either way along the UIDs */
	for (int back = 0; back < 2; back++) {
		c = back ? msg->prev_sibling : msg;
		for (; c != NULL && a.n < window && bytes < AHEAD_BYTES;
		     c = back ? c->prev_sibling : c->next_sibling) {
			if (c->kind != MFS_N_MESSAGE || c->msg.uid == 0 ||
			    c->msg.size > AHEAD_SIZE_MAX || c->priv != NULL)
				continue;
			if (msg_ref_take(c, &r) != 0)
				break;
			if (cache_key(&r, "", key, sizeof(key)) == 0) {
				a.item[a.n].uid = c->msg.uid;
				a.item[a.n].size = c->msg.size;
				a.item[a.n].key = strdup(key);
				if (a.item[a.n].key != NULL) {
					bytes += c->msg.size;
					a.n++;
				}
			}
			msg_ref_free(&r);
		}
	}
	pthread_mutex_unlock(&fs->lock);
	/* only what the cache does not have; none if msg itself is there */
	for (i = 0; i < a.n; i++) {
		if (mfs_cache_has(fs->cache, a.item[i].key, a.item[i].size)) {
			if (i == 0)
				break;
			continue;
		}
		uids[n++] = a.item[i].uid;
	}
	mfs_err_clear(&err);
	if (n > 1 && i == a.n) {
		struct mfs_store *st = reader_get(fs);

		if (st->ops->fetch_many(st, mailbox, validity, uids, n,
					ahead_open, ahead_done, &a,
					&err) != MFS_OK) {
			mfs_log_debug("fetch-ahead: %s", err.msg);
			if (err.code == MFS_E_TIMEOUT ||
			    err.code == MFS_E_CONNECT || err.code == MFS_E_TLS)
				rc = mfs_err_set(ret, err.code, "%s",
						 err.msg);
		}
		reader_put(fs, st);
	}
	fetched = n > 1 && i == a.n;
free_all:
	for (i = 0; i < a.n; i++)
		free(a.item[i].key);
	free(a.item);
	free(uids);
	free(a.tmp);
	free(mailbox);
	pthread_mutex_lock(&fs->lock);
	if (fetched) { /* the run goes on from here */
		fs->ahead_folder = msg->parent->ino;
		fs->ahead_window = window;
		fs->ahead_last = time(NULL);
	}
	return rc;
}

/* Builds a view of msg (whole: of the whole message, for a skeleton's
 * v->full; else msg's own view) and attaches it unless another thread
 * did meanwhile. Caller holds the lock and a hold on msg; the lock is
 * dropped while the view is built. */
static int view_attach(struct mfs_fs *fs, struct mfs_node *msg, int whole,
		       struct mfs_err *err)
{
	struct view *v = NULL, *mine;
	struct msg_ref r;
	int rc;

	if (msg_ref_take(msg, &r) != 0)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	pthread_mutex_unlock(&fs->lock);
	rc = whole ? view_build_whole(fs, &r, &v, err)
		   : view_build(fs, &r, &v, err);
	pthread_mutex_lock(&fs->lock);
	msg_ref_free(&r);
	if (rc != MFS_OK)
		return rc;
	mine = msg->priv;
	if (whole && mine->full == NULL)
		mine->full = v;
	else if (!whole && mine == NULL)
		msg->priv = v;
	else
		view_free(v);
	return MFS_OK;
}

/* Makes sure msg has its view. Caller holds the lock and a hold on msg;
 * the lock is dropped while the message is fetched. */
static int view_ensure(struct mfs_fs *fs, struct mfs_node *msg,
		       struct mfs_err *err)
{
	if (msg->priv != NULL)
		return MFS_OK;
	if (fetch_ahead(fs, msg, err) != MFS_OK)
		return err->code;
	if (msg->priv != NULL)
		return MFS_OK;
	return view_attach(fs, msg, 0, err);
}

/* The text of the flags file. Returns a malloc'd string or NULL. */
static char *flags_text(unsigned flags)
{
	static const struct {
		unsigned bit;
		const char *name;
	} names[] = {
		{MFS_FLAG_SEEN, "\\Seen"},	 {MFS_FLAG_ANSWERED, "\\Answered"},
		{MFS_FLAG_FLAGGED, "\\Flagged"}, {MFS_FLAG_DELETED, "\\Deleted"},
		{MFS_FLAG_DRAFT, "\\Draft"},
	};
	char *s = calloc(1, 64);
	size_t i;

	if (s == NULL)
		return NULL;
	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (flags & names[i].bit) {
			strcat(s, names[i].name);
			strcat(s, "\n");
		}
	}
	return s;
}

static void flags_node_update(struct mfs_node *msg)
{
	struct mfs_node *c;
	char *text = flags_text(msg->msg.flags);

	for (c = msg->first_child; c != NULL; c = c->next_sibling)
		if (c->kind == MFS_N_FILE && c->file == MFS_F_FLAGS)
			c->size = text != NULL ? strlen(text) : 0;
	free(text);
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
		if (e->is_dir) {
			n->dir = e->dir;
		} else {
			n->file = MFS_F_PART;
			n->entry = e;
		}
	}
	dirnode->populated = 1;
	return 0;
}

/* Makes the children of a message or part directory, fetching the message
 * when needed. Caller holds the lock and a hold on dir. */
static int dir_ensure(struct mfs_fs *fs, struct mfs_node *dir,
		      struct mfs_err *err)
{
	struct mfs_node *msg = message_of(dir), *flags;
	struct view *v;

	if (dir->populated)
		return MFS_OK;
	if (view_ensure(fs, msg, err) != MFS_OK)
		return err->code;
	if (dir->populated)
		return MFS_OK;
	v = msg->priv;
	if (dir->kind == MFS_N_PARTDIR)
		return dir_populate(fs, dir, dir->dir) == 0
			       ? MFS_OK
			       : mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	if (dir_populate(fs, dir, &v->layout->root_dir) != 0)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	flags = mfs_nodes_child(fs->nodes, dir, "flags");
	if (flags == NULL) {
		flags = mfs_nodes_add(fs->nodes, dir, "flags", MFS_N_FILE);
		if (flags == NULL)
			return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
		flags->file = MFS_F_FLAGS;
		flags->mtime = dir->mtime;
		flags_node_update(dir);
	}
	return MFS_OK;
}

/* --- outbox/ ------------------------------------------------------------ */

void mfs_fs_set_spool(struct mfs_fs *fs, struct mfs_spool *spool)
{
	struct mfs_node *root, *ob;

	pthread_mutex_lock(&fs->lock);
	root = mfs_nodes_root(fs->nodes);
	fs->spool = spool;
	ob = mfs_nodes_add(fs->nodes, root, "outbox", MFS_N_OUTBOX);
	if (ob != NULL) {
		ob->mtime = time(NULL);
		if (mfs_nodes_add(fs->nodes, ob, ".status", MFS_N_STATUS) ==
		    NULL)
			mfs_log_err("out of memory for outbox/.status");
	}
	fs->outbox = ob;
	pthread_mutex_unlock(&fs->lock);
}

/* Marks c, the file `name` of outbox/ or outbox/.status/ (dir), as seen
 * by this sync, adding it when c is NULL. Returns c, or NULL when out of
 * memory or when the name is a directory's (a user file named
 * ".status"). Caller holds the lock. */
static struct mfs_node *outbox_keep(struct mfs_fs *fs, struct mfs_node *dir,
				    struct mfs_node *c, const char *name,
				    enum mfs_file_kind file)
{
	if (c == NULL) {
		c = mfs_nodes_add(fs->nodes, dir, name, MFS_N_FILE);
		if (c == NULL)
			return NULL;
		c->file = file;
	}
	if (c->kind != MFS_N_FILE)
		return c;
	c->gen = fs->gen;
	return c;
}

/* Brings outbox/ and outbox/.status/ in line with the spool; a file
 * accepted a moment ago stays SENT_LINGER seconds. Caller holds
 * the lock (the spool's own lock nests inside it). */
static int outbox_sync(struct mfs_fs *fs, struct mfs_err *err)
{
	struct mfs_spool_entry *ents = NULL;
	struct mfs_node *ob = fs->outbox, *st, *c, *next;
	time_t now = time(NULL);
	size_t n = 0, i;

	if (mfs_spool_list(fs->spool, &ents, &n, err) != MFS_OK)
		return err->code;
	st = mfs_nodes_child(fs->nodes, ob, ".status");
	if (st != NULL && st->kind != MFS_N_STATUS)
		st = NULL;
	fs->gen++;
	for (i = 0; i < n; i++) {
		c = mfs_nodes_child(fs->nodes, ob, ents[i].name);
		if (c != NULL && c->kind == MFS_N_FILE && c->priv != NULL) {
			/* sent a moment ago; now a new message of that name */
			mfs_nodes_unlink(fs->nodes, c);
			c = NULL;
		}
		c = outbox_keep(fs, ob, c, ents[i].name, MFS_F_OUTBOX);
		if (c != NULL) {
			c->mtime = ents[i].mtime;
			c->size = (uint64_t)ents[i].size;
		}
		if (c == NULL ||
		    (st != NULL &&
		     outbox_keep(fs, st, mfs_nodes_child(fs->nodes, st,
							  ents[i].name),
				 ents[i].name, MFS_F_STATUS) == NULL)) {
			mfs_spool_entries_free(ents, n);
			return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
		}
	}
	mfs_spool_entries_free(ents, n);
	for (c = ob->first_child; c != NULL; c = next) {
		next = c->next_sibling;
		if (c->kind != MFS_N_FILE || c->gen == fs->gen)
			continue;
		if (c->priv != NULL &&
		    ((struct sent_file *)c->priv)->until > now && st != NULL &&
		    outbox_keep(fs, st, mfs_nodes_child(fs->nodes, st, c->name),
				c->name, MFS_F_STATUS) != NULL) {
			c->gen = fs->gen; /* accepted a moment ago */
			continue;
		}
		mfs_nodes_unlink(fs->nodes, c);
	}
	for (c = st != NULL ? st->first_child : NULL; c != NULL; c = next) {
		next = c->next_sibling;
		if (c->gen != fs->gen)
			mfs_nodes_unlink(fs->nodes, c);
	}
	return MFS_OK;
}

/* The text of outbox/.status/NAME: the spool's, or "sent" for a file
 * accepted a moment ago. malloc'd; NULL with err set. Caller holds the
 * lock. */
static char *status_text(struct mfs_fs *fs, const struct mfs_node *n,
			 struct mfs_err *err)
{
	struct mfs_node *f = mfs_nodes_child(fs->nodes, fs->outbox, n->name);
	char *text;

	if (f == NULL || f->kind != MFS_N_FILE || f->priv == NULL)
		return mfs_spool_status_text(fs->spool, n->name, err);
	text = strdup("status: sent\n");
	if (text == NULL)
		mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	return text;
}

int mfs_fs_sent_copy(void *arg, const char *name, int fd, off_t size)
{
	struct mfs_fs *fs = arg;
	uint32_t validity, uid;
	struct mfs_err err;
	char *mailbox = NULL;

	mfs_err_clear(&err);
	if (fs->store->ops->append == NULL)
		return 0; /* POP3: no Sent folder */
	/* the \Sent folder is known from LIST, which may not have run */
	if (fs->acct->sent_folder == NULL &&
	    refresh_folders(fs, FOLDERS_TTL, &err) != MFS_OK) {
		mfs_log_err("outbox/%s: %s", name, err.msg);
		if (err.code == MFS_E_CONNECT || err.code == MFS_E_TIMEOUT)
			return -1; /* the spool tries again later */
	}
	pthread_mutex_lock(&fs->lock);
	if (fs->acct->sent_folder != NULL)
		mailbox = mfs_mutf7_encode(fs->acct->sent_folder);
	else if (fs->sent_mailbox != NULL)
		mailbox = strdup(fs->sent_mailbox);
	pthread_mutex_unlock(&fs->lock);
	if (mailbox == NULL) {
		mfs_log_err("outbox/%s was sent; no Sent folder to keep a copy "
			    "in (set sent_folder)",
			    name);
		return 0;
	}
	if (fs->store->ops->append(fs->store, mailbox, fd, (uint64_t)size,
				   time(NULL), MFS_FLAG_SEEN, &validity, &uid,
				   &err) != MFS_OK) {
		mfs_log_err("outbox/%s was sent, but its copy in %s failed: %s",
			    name, mailbox, err.msg);
		free(mailbox);
		/* unreachable or silent server: the spool tries again */
		return err.code == MFS_E_CONNECT || err.code == MFS_E_TIMEOUT
			   ? -1
			   : 0;
	}
	free(mailbox);
	return 0;
}

/* --- IDLE ---------------------------------------------------------------- */

struct idle {
	pthread_t thread;
	int pipe[2];		 /* owned: written to stop the thread */
	struct mfs_store *store; /* owned */
	struct mfs_fs *fs;	 /* borrowed */
	int stop;		 /* guarded by fs->lock */
};

/* INBOX changed on the server: its listing is out of date. */
static void inbox_changed(struct mfs_fs *fs)
{
	struct mfs_node *c;

	pthread_mutex_lock(&fs->lock);
	for (c = mfs_nodes_root(fs->nodes)->first_child; c != NULL;
	     c = c->next_sibling)
		if (c->kind == MFS_N_FOLDER && c->mailbox != NULL &&
		    strcasecmp(c->mailbox, "INBOX") == 0)
			c->listed = 0;
	pthread_mutex_unlock(&fs->lock);
}

static int idle_stopping(struct idle *id)
{
	int stop;

	pthread_mutex_lock(&id->fs->lock);
	stop = id->stop;
	pthread_mutex_unlock(&id->fs->lock);
	return stop;
}

static void *idle_thread(void *arg)
{
	struct idle *id = arg;
	struct mfs_err err;
	int changed, failures = 0;

	while (!idle_stopping(id)) {
		mfs_err_clear(&err);
		if (mfs_imap_idle(id->store, "INBOX", id->pipe[0], 600,
				  &changed, &err) == MFS_OK) {
			failures = 0;
			if (changed)
				inbox_changed(id->fs);
			continue;
		}
		if (err.code == MFS_E_PROTO && failures == 0 &&
		    strstr(err.msg, "no IDLE") != NULL) {
			mfs_log_info("%s: new mail shows when INBOX is listed",
				     err.msg);
			break;
		}
		if (failures++ == 0)
			mfs_log_err("IDLE: %s (trying again)", err.msg);
		/* wait a while, or until stopped */
		struct pollfd p = {.fd = id->pipe[0], .events = POLLIN};

		poll(&p, 1, failures < 5 ? 5000 : 60000);
	}
	return NULL;
}

void mfs_fs_start_idle(struct mfs_fs *fs, struct mfs_store *store)
{
	struct idle *id = calloc(1, sizeof(*id));

	if (id == NULL || pipe2(id->pipe, O_CLOEXEC) != 0) {
		free(id);
		store->ops->free(store);
		mfs_log_err("IDLE not started: %s", strerror(errno));
		return;
	}
	id->store = store;
	id->fs = fs;
	if (pthread_create(&id->thread, NULL, idle_thread, id) != 0) {
		close(id->pipe[0]);
		close(id->pipe[1]);
		store->ops->free(store);
		free(id);
		mfs_log_err("IDLE not started: no thread");
		return;
	}
	fs->idle = id;
}

void mfs_fs_stop_idle(struct mfs_fs *fs)
{
	struct idle *id = fs->idle;
	struct timespec deadline;

	if (id == NULL)
		return;
	pthread_mutex_lock(&fs->lock);
	id->stop = 1;
	pthread_mutex_unlock(&fs->lock);
	if (write(id->pipe[1], "x", 1) < 0)
		mfs_log_err("IDLE stop: %s", strerror(errno));
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += 1;
	if (pthread_timedjoin_np(id->thread, NULL, &deadline) != 0) {
		/* The server does not answer DONE: leave the thread to the
		 * process exit rather than hold up the unmount. */
		mfs_log_err("IDLE connection did not close in time");
		fs->idle = NULL;
		return;
	}
	id->store->ops->free(id->store);
	close(id->pipe[0]);
	close(id->pipe[1]);
	free(id);
	fs->idle = NULL;
}

/* --- lazy views: files of a skeleton ------------------------------------- */

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

/* Makes the whole-message view of msg's skeleton. Caller holds the lock
 * and a hold on msg; the lock is dropped while the message is fetched. */
static int full_ensure(struct mfs_fs *fs, struct mfs_node *msg,
		       struct mfs_err *err)
{
	if (((struct view *)msg->priv)->full != NULL)
		return MFS_OK;
	return view_attach(fs, msg, 1, err);
}

/* The file of the whole message that n shows: *fv, *fe. Caller holds the
 * lock and a hold on n, as for full_ensure(). */
static int full_file(struct mfs_fs *fs, struct mfs_node *n, struct view **fv,
		     struct mfs_entry **fe, struct mfs_err *err)
{
	struct mfs_node *msg = message_of(n);
	struct view *v = msg->priv;

	if (full_ensure(fs, msg, err) != MFS_OK)
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
	struct mfs_store *st = reader_get(f->fs);
	int rc = st->ops->fetch_section(st, f->ref->mailbox, f->ref->validity,
					&f->ref->msg, f->section, fd, len,
					err);

	reader_put(f->fs, st);
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
static int size_needs_fetch(struct mfs_node *n)
{
	const struct view *v;
	const struct mfs_entry *e;
	int whole;

	if (n->kind != MFS_N_FILE || n->file != MFS_F_PART)
		return 0;
	v = message_of(n)->priv;
	e = n->entry;
	if (v == NULL || v->segs == NULL || e->src.size_known)
		return 0;
	if (entry_seg(v, e, &whole) != NULL)
		return 1;
	return whole && !is_message_eml(v, e);
}

/* node_size() of a file of a skeleton. Caller holds the lock and a hold
 * on n (a kernel lookup or mfs_nodes_hold()); the lock is dropped while
 * bytes are fetched. */
static int lazy_size(struct mfs_fs *fs, struct mfs_node *n,
		     struct mfs_err *err)
{
	struct mfs_node *msg = message_of(n);
	struct view *v = msg->priv, *fv = NULL;
	struct mfs_entry *e = n->entry, *fe = NULL;
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
	if (whole) {
		if (full_file(fs, n, &fv, &fe, err) != MFS_OK)
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

/* --- attributes ---------------------------------------------------------- */

/* Brings n->size up to date. Caller holds the lock and a hold on n: the
 * lock may be dropped while bytes are fetched. */
static int node_size(struct mfs_fs *fs, struct mfs_node *n,
		     struct mfs_err *err)
{
	struct mfs_spool_entry e;
	struct stat st;
	char *text;

	if (n->kind != MFS_N_FILE)
		return MFS_OK;
	switch (n->file) {
	case MFS_F_PART: {
		struct view *v = message_of(n)->priv;
		struct mfs_entry *e = n->entry;
		int known = e->src.size_known, rc;

		if (v->segs != NULL)
			return lazy_size(fs, n, err);
		rc = mfs_entry_size(v->layout, e, &n->size, err);
		if (!known && v->map != NULL && n->size > 65536)
			madvise(v->map, v->len, MADV_DONTNEED);
		return rc;
	}
	case MFS_F_NEW:
		if (fstat(((struct upload *)n->priv)->fd, &st) == 0)
			n->size = (uint64_t)st.st_size;
		return MFS_OK;
	case MFS_F_OUTBOX:
		if (n->priv != NULL) {
			if (fstat(((struct sent_file *)n->priv)->fd, &st) == 0)
				n->size = (uint64_t)st.st_size;
			return MFS_OK;
		}
		if (mfs_spool_stat(fs->spool, n->name, &e, err) != MFS_OK)
			return err->code;
		n->size = (uint64_t)e.size;
		free(e.name);
		return MFS_OK;
	case MFS_F_STATUS:
		text = status_text(fs, n, err);
		if (text == NULL)
			return err->code;
		n->size = strlen(text);
		free(text);
		return MFS_OK;
	default:
		return MFS_OK;
	}
}

static int node_writable(const struct mfs_fs *fs, const struct mfs_node *n)
{
	if (n->kind == MFS_N_FILE && n->file == MFS_F_OUTBOX)
		return n->priv == NULL; /* accepted: read-only */
	if (n->kind == MFS_N_FILE && n->file == MFS_F_NEW)
		return !((struct upload *)n->priv)->committed;
	if (n->kind == MFS_N_OUTBOX)
		return 1;
	if (n->kind == MFS_N_STATUS ||
	    (n->kind == MFS_N_FILE && n->file == MFS_F_STATUS))
		return 0;
	if (fs->store->read_only)
		return 0;
	if (n->kind == MFS_N_FILE)
		return n->file != MFS_F_PART;
	return n->kind != MFS_N_PARTDIR;
}

static void node_stat(const struct mfs_fs *fs, const struct mfs_node *n,
		      struct stat *st)
{
	int w = node_writable(fs, n);

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
	} else {
		st->st_mode = S_IFDIR | (w ? 0700 : 0500);
		st->st_nlink = 2;
	}
}

static double node_ttl(const struct mfs_node *n)
{
	if (n->kind == MFS_N_FILE && n->file != MFS_F_PART)
		return 0.0; /* flags and new files change under us */
	if (n->kind == MFS_N_OUTBOX || n->kind == MFS_N_STATUS)
		return 0.0;
	/* A message directory's name may come back for another message
	 * (after a UIDVALIDITY change): the kernel keeps it briefly. */
	if (n->kind == MFS_N_ROOT || n->kind == MFS_N_FOLDER ||
	    n->kind == MFS_N_MESSAGE)
		return FOLDER_ATTR_TTL;
	return MESSAGE_ATTR_TTL;
}

static void reply_err(fuse_req_t req, const struct mfs_err *err)
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
	if (dir->kind == MFS_N_FILE) {
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
	struct mfs_node *dir, *n;
	struct mfs_err err;

	mfs_err_clear(&err);
	dir = dir_get(req, fs, parent);
	if (dir == NULL)
		return;
	if ((dir->kind == MFS_N_MESSAGE || dir->kind == MFS_N_PARTDIR) &&
	    !message_of(dir)->linked) {
		mfs_nodes_release(fs->nodes, dir);
		pthread_mutex_unlock(&fs->lock);
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (dir->kind == MFS_N_MESSAGE || dir->kind == MFS_N_PARTDIR)
		dir_ensure(fs, dir, &err);
	if (dir->kind == MFS_N_OUTBOX || dir->kind == MFS_N_STATUS)
		outbox_sync(fs, &err);
	n = mfs_nodes_child(fs->nodes, dir, name);
	if (n == NULL && dir->kind == MFS_N_FOLDER && !dir->noselect &&
	    strstr(name, " \xc2\xb7") != NULL) {
		/* Looks like a message we have not listed yet: list again. */
		pthread_mutex_unlock(&fs->lock);
		refresh_folder(fs, dir, dir->listed == 0 ? 0 : 1, &err);
		pthread_mutex_lock(&fs->lock);
		n = dir->linked ? mfs_nodes_child(fs->nodes, dir, name) : NULL;
	} else if (n == NULL && (dir->kind == MFS_N_ROOT ||
				 dir->kind == MFS_N_FOLDER)) {
		/* Perhaps a folder made since the last LIST. */
		pthread_mutex_unlock(&fs->lock);
		refresh_folders(fs, FOLDERS_TTL, &err);
		pthread_mutex_lock(&fs->lock);
		n = dir->linked ? mfs_nodes_child(fs->nodes, dir, name) : NULL;
	}
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

static void fs_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	struct mfs_fs *fs = fuse_req_userdata(req);
	struct mfs_node *n;

	pthread_mutex_lock(&fs->lock);
	n = mfs_nodes_get(fs->nodes, ino);
	if (n != NULL && n->kind != MFS_N_ROOT)
		mfs_nodes_forget(fs->nodes, n, nlookup);
	pthread_mutex_unlock(&fs->lock);
	fuse_reply_none(req);
}

static void fs_forget_multi(fuse_req_t req, size_t count,
			    struct fuse_forget_data *forgets)
{
	struct mfs_fs *fs = fuse_req_userdata(req);
	size_t i;

	pthread_mutex_lock(&fs->lock);
	for (i = 0; i < count; i++) {
		struct mfs_node *n = mfs_nodes_get(fs->nodes, forgets[i].ino);

		if (n != NULL && n->kind != MFS_N_ROOT)
			mfs_nodes_forget(fs->nodes, n, forgets[i].nlookup);
	}
	pthread_mutex_unlock(&fs->lock);
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

/* Releases the snapshot's nodes and frees it. Caller holds the lock. */
static void snap_free(struct mfs_fs *fs, struct dir_snap *s)
{
	size_t i;

	if (s == NULL)
		return;
	for (i = 0; i < s->n; i++)
		mfs_nodes_release(fs->nodes, s->nodes[i]);
	free(s->nodes);
	free(s);
}

/* Takes the listing of dir. Caller holds the lock. */
static struct dir_snap *snap_take(struct mfs_node *dir)
{
	struct dir_snap *s = calloc(1, sizeof(*s));
	struct mfs_node *c;
	size_t count = 0;

	if (s == NULL)
		return NULL;
	s->self = dir->ino;
	s->parent = dir->parent ? dir->parent->ino : 1;
	for (c = dir->first_child; c != NULL; c = c->next_sibling)
		count++;
	s->nodes = calloc(count ? count : 1, sizeof(*s->nodes));
	if (s->nodes == NULL) {
		free(s);
		return NULL;
	}
	for (c = dir->first_child; c != NULL; c = c->next_sibling) {
		mfs_nodes_hold(c);
		s->nodes[s->n++] = c;
	}
	return s;
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
	st->st_mode = n->kind == MFS_N_FILE ? S_IFREG : S_IFDIR;
	return n->name;
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
	if (dir->kind == MFS_N_ROOT) {
		pthread_mutex_unlock(&fs->lock);
		if (refresh_folders(fs, FOLDERS_TTL, &err) != MFS_OK)
			mfs_log_err("%s (showing the folders known before)",
				    err.msg);
		pthread_mutex_lock(&fs->lock);
	} else if (dir->kind == MFS_N_FOLDER) {
		pthread_mutex_unlock(&fs->lock);
		if (refresh_folder(fs, dir, fs->acct->refresh > 0
						    ? fs->acct->refresh
						    : LIST_TTL,
				   &err) != MFS_OK)
			mfs_log_err("%s (showing the last listing)", err.msg);
		pthread_mutex_lock(&fs->lock);
		if (err.code != MFS_OK && dir->listed == 0)
			goto fail;
	} else if (dir->kind == MFS_N_OUTBOX || dir->kind == MFS_N_STATUS) {
		if (outbox_sync(fs, &err) != MFS_OK)
			goto fail;
	} else if (!message_of(dir)->linked) {
		mfs_err_set(&err, MFS_E_NOENT, "message gone");
		goto fail;
	} else if (dir_ensure(fs, dir, &err) != MFS_OK) {
		goto fail;
	}
	mfs_err_clear(&err);
	s = snap_take(dir);
	if (s == NULL)
		mfs_err_set(&err, MFS_E_NOMEM, "out of memory");
fail:
	mfs_nodes_release(fs->nodes, dir);
	pthread_mutex_unlock(&fs->lock);
	if (s == NULL) {
		reply_err(req, &err);
		return;
	}
	fi->fh = (uint64_t)(uintptr_t)s;
	fuse_reply_open(req, fi);
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

	(void)ino;
	buf = malloc(size);
	if (buf == NULL) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	pthread_mutex_lock(&fs->lock);
	for (i = off; i >= 0; i++) {
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

	(void)ino;
	mfs_err_clear(&err);
	buf = malloc(size);
	if (buf == NULL) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	pthread_mutex_lock(&fs->lock);
	for (i = off; i >= 0; i++) {
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
	fuse_reply_buf(req, buf, used);
	free(buf);
}

static void fs_releasedir(fuse_req_t req, fuse_ino_t ino,
			  struct fuse_file_info *fi)
{
	struct mfs_fs *fs = fuse_req_userdata(req);

	(void)ino;
	pthread_mutex_lock(&fs->lock);
	snap_free(fs, (struct dir_snap *)(uintptr_t)fi->fh);
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

/* An open file. */
struct handle {
	struct mfs_node *node; /* held */
	int fd;		       /* owned, or -1 when the content is buf */
	off_t base;	       /* where the file starts in fd */
	uint64_t size;	       /* bytes readable from fd at base */
	char *buf;	       /* owned: content (flags), or what was written */
	size_t len, cap;
	/* flags: written since the last flush. A new or outbox file: this
	 * handle made, truncated or wrote it, and may commit it. */
	int dirty;
	int writer;    /* MFS_F_NEW: counted in the upload's writers */
	int committed; /* what it wrote went to the server: no more writes */
	int wopen;     /* MFS_F_OUTBOX: fd is open for writing */
	pid_t opener;  /* the process that opened it (not the thread) */
	struct handle *prev, *next; /* in fs->handles */
};

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

static pid_t req_process(fuse_req_t req)
{
	return process_of(fuse_req_ctx(req)->pid);
}

/* Handles are registered while open, so that a request that reaches us
 * after its file was released finds out instead of touching freed memory.
 * Caller holds fs->lock. */
static void handle_register(struct mfs_fs *fs, struct handle *h)
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
	mfs_nodes_release(fs->nodes, h->node);
	pthread_mutex_unlock(&fs->lock);
	if (h->fd >= 0)
		close(h->fd);
	free(h->buf);
	free(h);
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

/* Opens file e of view v (of message msg; cache key suffix ".<kind><id>"):
 * raw ranges straight from the view's file, decoded files through a cache
 * entry of their own. Caller holds the lock and a hold on msg; the lock is
 * dropped while decoding. */
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
	if (msg_ref_take(msg, &r) != 0)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	snprintf(suffix, sizeof(suffix), ".%c%" PRIu32, kind, e->id);
	if (cache_key(&r, suffix, key, sizeof(key)) != 0) {
		msg_ref_free(&r);
		return mfs_err_set(err, MFS_E_IO, "cache key too long");
	}
	msg_ref_free(&r);
	h->size = size;
	pthread_mutex_unlock(&fs->lock);
	rc = mfs_cache_get(fs->cache, key, h->size, part_fill, &pf, &h->fd,
			   err);
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

/* Opens file e of a skeleton, which lies in hole g: the hole is fetched
 * (or found in the cache) and the file decoded from it. Caller holds the
 * lock and a hold on n; the lock is dropped meanwhile. */
static int open_hole(struct mfs_fs *fs, struct mfs_node *n,
		     const struct mfs_seg *g, struct handle *h,
		     struct mfs_err *err)
{
	const struct mfs_entry *e = n->entry;
	struct hole_fill hf = {-1, g, e};
	struct msg_ref r;
	char key[1024], suffix[32];
	int rc;

	if (msg_ref_take(message_of(n), &r) != 0)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	snprintf(suffix, sizeof(suffix), ".l%" PRIu32, e->id);
	if (cache_key(&r, suffix, key, sizeof(key)) != 0) {
		msg_ref_free(&r);
		return mfs_err_set(err, MFS_E_IO, "cache key too long");
	}
	h->size = n->size;
	pthread_mutex_unlock(&fs->lock);
	rc = hole_fd(fs, &r, g, &hf.hfd, err);
	if (rc == MFS_OK && e->src.kind == MFS_SRC_RAW) {
		h->fd = hf.hfd;
		h->base = (off_t)(e->src.off - g->off);
		h->size = e->src.len;
	} else if (rc == MFS_OK) {
		rc = mfs_cache_get(fs->cache, key, h->size, hole_part_fill,
				   &hf, &h->fd, err);
		close(hf.hfd);
	}
	pthread_mutex_lock(&fs->lock);
	msg_ref_free(&r);
	return rc;
}

/* Opens a file of a message directory. Caller holds the lock and a hold
 * on n; the lock may be dropped while bytes are fetched or decoded. */
static int open_part(struct mfs_fs *fs, struct mfs_node *n, struct handle *h,
		     struct mfs_err *err)
{
	struct mfs_node *msg = message_of(n);
	struct view *v = msg->priv, *fv;
	const struct mfs_seg *g;
	struct mfs_entry *fe;
	int whole;

	if (v->segs == NULL)
		return open_entry(fs, msg, v, n->entry, 'p', n->size, h, err);
	if (node_size(fs, n, err) != MFS_OK)
		return err->code;
	g = entry_seg(v, n->entry, &whole);
	if (g != NULL)
		return open_hole(fs, n, g, h, err);
	if (!whole)
		return open_entry(fs, msg, v, n->entry, 's', n->size, h, err);
	if (full_file(fs, n, &fv, &fe, err) != MFS_OK)
		return err->code;
	return open_entry(fs, msg, fv, fe, 'p', n->size, h, err);
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

/* Opens the message file of an outbox/ entry. Opened for writing, it is
 * reopened for writing only at the first write or truncation (the spool
 * then makes it a new message): "touch outbox/NAME" changes nothing but
 * the time. An accepted file shows the bytes that were sent. Caller holds
 * the lock. */
static int open_outbox(struct mfs_fs *fs, struct mfs_node *n, int writing,
		       int trunc, struct handle *h, struct mfs_err *err)
{
	if (n->priv != NULL) {
		h->fd = dup(((struct sent_file *)n->priv)->fd);
		if (h->fd < 0)
			return mfs_err_set(err, MFS_E_IO, "dup: %s",
					   strerror(errno));
		return MFS_OK;
	}
	if (writing && trunc) {
		h->dirty = h->wopen = 1;
		return mfs_spool_open_entry(fs->spool, n->name,
					    O_RDWR | O_TRUNC, &h->fd, err);
	}
	return mfs_spool_open_entry(fs->spool, n->name, O_RDONLY, &h->fd, err);
}

/* The first write through an outbox/ handle opened for writing. Caller
 * holds the lock. */
static int outbox_reopen(struct mfs_fs *fs, struct handle *h)
{
	struct mfs_err err;
	int fd;

	mfs_err_clear(&err);
	if (mfs_spool_open_entry(fs->spool, h->node->name, O_RDWR, &fd,
				 &err) != MFS_OK)
		return mfs_err_errno(err.code);
	close(h->fd);
	h->fd = fd;
	h->wopen = 1;
	return 0;
}

static void fs_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct mfs_fs *fs = fuse_req_userdata(req);
	int writing = (fi->flags & O_ACCMODE) != O_RDONLY;
	struct handle *h;
	struct mfs_node *n;
	struct mfs_err err;
	int rc = MFS_OK;

	mfs_err_clear(&err);
	n = node_get(req, fs, ino);
	if (n == NULL)
		return;
	if (n->kind != MFS_N_FILE) {
		pthread_mutex_unlock(&fs->lock);
		fuse_reply_err(req, EISDIR);
		return;
	}
	if (writing && !node_writable(fs, n)) {
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
	h->opener = req_process(req);
	mfs_nodes_hold(n);
	if ((n->file == MFS_F_PART || n->file == MFS_F_FLAGS) &&
	    !message_of(n)->linked) {
		/* expunged, or its folder's UIDVALIDITY changed */
		pthread_mutex_unlock(&fs->lock);
		handle_free(fs, h);
		fuse_reply_err(req, ENOENT);
		return;
	}
	switch (n->file) {
	case MFS_F_PART:
		rc = open_part(fs, n, h, &err);
		fi->keep_cache = 1; /* a message never changes */
		break;
	case MFS_F_FLAGS:
		if (!writing || !(fi->flags & O_TRUNC)) {
			h->buf = flags_text(message_of(n)->msg.flags);
			h->len = h->cap = h->buf ? strlen(h->buf) : 0;
			if (h->buf == NULL)
				rc = mfs_err_set(&err, MFS_E_NOMEM, "no memory");
		}
		fi->direct_io = 1;
		break;
	case MFS_F_NEW:
		rc = open_upload(n, writing, fi->flags & O_TRUNC, h, &err);
		fi->direct_io = 1;
		break;
	case MFS_F_OUTBOX:
		rc = open_outbox(fs, n, writing, fi->flags & O_TRUNC, h, &err);
		fi->direct_io = 1;
		break;
	case MFS_F_STATUS:
		h->buf = status_text(fs, n, &err);
		h->len = h->cap = h->buf ? strlen(h->buf) : 0;
		if (h->buf == NULL)
			rc = err.code;
		fi->direct_io = 1;
		break;
	default:
		rc = mfs_err_set(&err, MFS_E_ACCESS, "not a file to open");
	}
	if (rc == MFS_OK)
		handle_register(fs, h);
	pthread_mutex_unlock(&fs->lock);
	if (rc != MFS_OK) {
		handle_free(fs, h);
		reply_err(req, &err);
		return;
	}
	fi->fh = (uint64_t)(uintptr_t)h;
	fuse_reply_open(req, fi);
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
static int may_write(struct mfs_fs *fs, struct handle *h)
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
	if (rc == MFS_OK) {
		pthread_mutex_lock(&fs->lock);
		msg->msg.flags = now;
		flags_node_update(msg);
		pthread_mutex_unlock(&fs->lock);
	}
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
		n->parent->listed = 0;
	} else if (n->linked) {
		mfs_nodes_unlink(fs->nodes, n);
	}
	return rc;
}

/* Submits an outbox/ file; see SPEC.md "outbox/" for what close()
 * returns. An accepted file stays SENT_LINGER seconds, showing what was
 * sent. Called with the lock held and h live; the lock is dropped while
 * the spool sends. */
static int outbox_commit(struct mfs_fs *fs, struct handle *h,
			 struct mfs_err *err)
{
	struct mfs_spool_outcome out;
	char *name;
	int rc;

	name = strdup(h->node->name);
	if (name == NULL)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	pthread_mutex_unlock(&fs->lock);
	memset(&out, 0, sizeof(out));
	rc = mfs_spool_commit(fs->spool, name, &out, err);
	if (rc == MFS_OK && out.result == MFS_SPOOL_SENT)
		mfs_log_info("outbox/%s sent%s%s", name,
			     out.reply[0] ? "; " : "", out.reply);
	else if (rc == MFS_OK && out.result == MFS_SPOOL_DEFERRED)
		mfs_log_info("outbox/%s queued for a retry: %s", name,
			     out.reply);
	/* A permanent refusal is an I/O error of close(), so cp reports it;
	 * the reason is in outbox/.status/NAME and the log. */
	if (rc == MFS_E_ACCESS)
		err->code = MFS_E_IO;
	pthread_mutex_lock(&fs->lock);
	if (rc == MFS_OK && out.result == MFS_SPOOL_SENT && h->node->linked &&
	    h->node->priv == NULL) {
		struct sent_file *sf = malloc(sizeof(*sf));

		if (sf != NULL && (sf->fd = dup(h->fd)) >= 0) {
			sf->until = time(NULL) + SENT_LINGER;
			h->node->priv = sf;
		} else {
			free(sf);
		}
	}
	outbox_sync(fs, &(struct mfs_err){0});
	free(name);
	return rc == MFS_E_ACCESS ? MFS_E_IO : rc;
}

/* Commits what handle h wrote when now is the time (see above): at a
 * close by process pid, or at the release of h. Called with the lock held
 * and h live; may drop it while the server is asked. */
static int written_commit(struct mfs_fs *fs, struct handle *h, int release,
			  pid_t pid, struct mfs_err *err)
{
	struct mfs_node *n = h->node;
	struct upload *u = n->file == MFS_F_NEW ? n->priv : NULL;
	struct stat st;

	if (!h->dirty || h->committed || !n->linked)
		return MFS_OK;
	if (!release && pid != h->opener)
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
	pid_t pid = req_process(req);
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
			rc = written_commit(fs, h, 0, pid, &err);
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
	    written_commit(fs, h, 1, 0, &err) != MFS_OK)
		mfs_log_err("%s (committed at its last close)", err.msg);
	pthread_mutex_unlock(&fs->lock);
	handle_free(fs, h);
	fuse_reply_err(req, 0);
}

/* --- handlers: changing the tree ----------------------------------------- */

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
		return enc;
	if (asprintf(&out, "%s%c%s", dir->mailbox, delim, enc) < 0)
		out = NULL;
	free(enc);
	return out;
}

static void fs_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode)
{
	struct mfs_fs *fs = fuse_req_userdata(req);
	struct mfs_node *dir, *n;
	struct mfs_err err;
	char *mailbox;
	int rc;

	(void)mode;
	mfs_err_clear(&err);
	dir = node_get(req, fs, parent);
	if (dir == NULL)
		return;
	if (fs->store->read_only || fs->store->ops->create == NULL ||
	    (dir->kind != MFS_N_ROOT && dir->kind != MFS_N_FOLDER)) {
		pthread_mutex_unlock(&fs->lock);
		fuse_reply_err(req, fs->store->read_only ? EROFS : EPERM);
		return;
	}
	if (mfs_nodes_child(fs->nodes, dir, name) != NULL) {
		pthread_mutex_unlock(&fs->lock);
		fuse_reply_err(req, EEXIST);
		return;
	}
	mailbox = child_mailbox(fs, dir, name);
	if (mailbox == NULL) {
		pthread_mutex_unlock(&fs->lock);
		fuse_reply_err(req, errno == ENOMEM ? ENOMEM : EINVAL);
		return;
	}
	mfs_nodes_hold(dir);
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
			reply_entry(req, fs, n);
		}
	}
	mfs_nodes_release(fs->nodes, dir);
	pthread_mutex_unlock(&fs->lock);
	free(mailbox);
	if (rc != MFS_OK)
		reply_err(req, &err);
}

/* rmdir of a folder: DELETE. Of a message directory: expunge. */
static void fs_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct mfs_fs *fs = fuse_req_userdata(req);
	struct mfs_node *dir, *n, *c;
	struct msg_ref r = {0};
	struct mfs_err err;
	char *mailbox = NULL;
	int rc, has_msgs = 0;

	mfs_err_clear(&err);
	dir = node_get(req, fs, parent);
	if (dir == NULL)
		return;
	n = mfs_nodes_child(fs->nodes, dir, name);
	if (n != NULL && n->kind == MFS_N_PARTDIR && !fs->store->read_only) {
		/* "rm -r" of a message directory empties it first: succeed
		 * and do nothing; the rmdir of the message deletes it. */
		pthread_mutex_unlock(&fs->lock);
		fuse_reply_err(req, 0);
		return;
	}
	if (fs->store->read_only || n == NULL || n->kind == MFS_N_FILE ||
	    n->kind == MFS_N_PARTDIR || n->kind == MFS_N_OUTBOX ||
	    n->kind == MFS_N_STATUS) {
		pthread_mutex_unlock(&fs->lock);
		fuse_reply_err(req, fs->store->read_only ? EROFS
				    : n == NULL	       ? ENOENT
				    : n->kind == MFS_N_FILE ? ENOTDIR
							    : EPERM);
		return;
	}
	mfs_nodes_hold(n);
	if (n->kind == MFS_N_MESSAGE) {
		if (msg_ref_take(n, &r) != 0) {
			rc = mfs_err_set(&err, MFS_E_NOMEM, "out of memory");
			goto out;
		}
		pthread_mutex_unlock(&fs->lock);
		rc = r.msg.uid == 0
			     ? mfs_err_set(&err, MFS_E_NOENT, "message moved")
			     : fs->store->ops->expunge(fs->store, r.mailbox,
						       r.validity, r.msg.uid,
						       &err);
		pthread_mutex_lock(&fs->lock);
		if (rc == MFS_OK && n->linked)
			mfs_nodes_unlink(fs->nodes, n);
		goto out;
	}
	if (strcasecmp(n->mailbox, "INBOX") == 0) {
		rc = mfs_err_set(&err, MFS_E_ACCESS, "INBOX cannot be removed");
		goto out;
	}
	for (c = n->first_child; c != NULL; c = c->next_sibling)
		if (c->kind == MFS_N_FOLDER)
			break;
	if (c != NULL) {
		rc = mfs_err_set(&err, MFS_E_NOTEMPTY, "folder has subfolders");
		goto out;
	}
	pthread_mutex_unlock(&fs->lock);
	rc = refresh_folder(fs, n, 0, &err);
	pthread_mutex_lock(&fs->lock);
	for (c = n->first_child; c != NULL; c = c->next_sibling)
		if (c->kind == MFS_N_MESSAGE)
			has_msgs = 1;
	if (rc == MFS_OK && has_msgs)
		rc = mfs_err_set(&err, MFS_E_NOTEMPTY, "folder holds messages");
	if (rc != MFS_OK)
		goto out;
	mailbox = strdup(n->mailbox);
	pthread_mutex_unlock(&fs->lock);
	rc = mailbox == NULL
		     ? mfs_err_set(&err, MFS_E_NOMEM, "out of memory")
		     : fs->store->ops->remove(fs->store, mailbox, &err);
	pthread_mutex_lock(&fs->lock);
	if (rc == MFS_OK && n->linked)
		mfs_nodes_unlink(fs->nodes, n);
out:
	mfs_nodes_release(fs->nodes, n);
	pthread_mutex_unlock(&fs->lock);
	msg_ref_free(&r);
	free(mailbox);
	if (rc != MFS_OK) {
		reply_err(req, &err);
		return;
	}
	fuse_reply_err(req, 0);
}

/* unlink: a file being written is dropped; the files of a message
 * directory cannot be removed one by one, but "rm -r" removes them before
 * the directory, so that succeeds and does nothing (rmdir of the message
 * directory then deletes the message). */
static void fs_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct mfs_fs *fs = fuse_req_userdata(req);
	struct mfs_node *dir, *n;
	int e = 0;

	dir = node_get(req, fs, parent);
	if (dir == NULL)
		return;
	n = mfs_nodes_child(fs->nodes, dir, name);
	if (dir->kind == MFS_N_OUTBOX && n != NULL && n->kind == MFS_N_FILE &&
	    n->priv != NULL) {
		mfs_nodes_unlink(fs->nodes, n); /* sent: only the name goes */
	} else if (dir->kind == MFS_N_OUTBOX && n != NULL &&
		   n->kind == MFS_N_FILE) {
		struct mfs_err err;

		mfs_err_clear(&err);
		if (mfs_spool_unlink(fs->spool, name, &err) != MFS_OK)
			e = mfs_err_errno(err.code);
		else
			outbox_sync(fs, &err);
	} else if (dir->kind == MFS_N_STATUS)
		e = EPERM;
	else if (fs->store->read_only)
		e = EROFS;
	else if (n == NULL)
		e = ENOENT;
	else if (n->kind != MFS_N_FILE)
		e = EISDIR;
	else if (n->file == MFS_F_NEW)
		mfs_nodes_unlink(fs->nodes, n);
	pthread_mutex_unlock(&fs->lock);
	fuse_reply_err(req, e);
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

static void fs_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
		      fuse_ino_t newparent, const char *newname,
		      unsigned int flags)
{
	struct mfs_fs *fs = fuse_req_userdata(req);
	struct mfs_node *dir, *ndir, *n;
	struct msg_ref r = {0};
	struct mfs_err err;
	char *from = NULL, *to = NULL;
	int rc = MFS_OK;

	mfs_err_clear(&err);
	dir = node_get(req, fs, parent);
	if (dir == NULL)
		return;
	ndir = mfs_nodes_get(fs->nodes, newparent);
	n = mfs_nodes_child(fs->nodes, dir, name);
	if (dir->kind == MFS_N_OUTBOX || (ndir && ndir->kind == MFS_N_OUTBOX)) {
		int e = 0;

		if (dir != ndir || n == NULL || n->kind != MFS_N_FILE)
			e = n == NULL ? ENOENT : EXDEV;
		else if (mfs_spool_rename(fs->spool, name, newname, &err) !=
			 MFS_OK)
			e = mfs_err_errno(err.code);
		else
			outbox_sync(fs, &err);
		pthread_mutex_unlock(&fs->lock);
		fuse_reply_err(req, e);
		return;
	}
	if (fs->store->read_only || ndir == NULL || n == NULL ||
	    (flags & RENAME_EXCHANGE)) {
		pthread_mutex_unlock(&fs->lock);
		fuse_reply_err(req, fs->store->read_only ? EROFS
				    : (flags & RENAME_EXCHANGE) ? EINVAL
								: ENOENT);
		return;
	}
	mfs_nodes_hold(n);
	mfs_nodes_hold(ndir);
	if (n->kind == MFS_N_FILE && n->file == MFS_F_NEW) {
		rc = rename_upload(fs, n, ndir, newname, &err);
		goto out;
	}
	if (n->kind == MFS_N_MESSAGE) {
		/* mv FOLDER/<msg> OTHER/: a move to another folder */
		if (ndir->kind != MFS_N_FOLDER || ndir == dir ||
		    ndir->noselect || strcmp(name, newname) != 0) {
			rc = mfs_err_set(&err, MFS_E_ACCESS,
					 "a message can only move to another "
					 "folder, under its own name");
			goto out;
		}
		if (mfs_nodes_child(fs->nodes, ndir, newname) != NULL) {
			rc = mfs_err_set(&err, MFS_E_EXIST, "already there");
			goto out;
		}
		if (msg_ref_take(n, &r) != 0 ||
		    (to = strdup(ndir->mailbox)) == NULL) {
			rc = mfs_err_set(&err, MFS_E_NOMEM, "out of memory");
			goto out;
		}
		pthread_mutex_unlock(&fs->lock);
		rc = r.msg.uid == 0
			     ? mfs_err_set(&err, MFS_E_NOENT, "message moved")
			     : fs->store->ops->move(fs->store, r.mailbox,
						    r.validity, r.msg.uid, to,
						    &err);
		pthread_mutex_lock(&fs->lock);
		if (rc == MFS_OK) {
			/* Its UID in the new folder is not known here: the
			 * next look at that folder lists it again and shows
			 * it under its new name. */
			ndir->listed = 0;
			if (n->linked)
				mfs_nodes_unlink(fs->nodes, n);
		}
		goto out;
	}
	if (n->kind != MFS_N_FOLDER ||
	    (ndir->kind != MFS_N_FOLDER && ndir->kind != MFS_N_ROOT)) {
		rc = mfs_err_set(&err, MFS_E_ACCESS, "only folders and "
						     "messages can be moved");
		goto out;
	}
	if (strcasecmp(n->mailbox, "INBOX") == 0) {
		pthread_mutex_unlock(&fs->lock);
		fuse_reply_err(req, EBUSY);
		pthread_mutex_lock(&fs->lock);
		mfs_nodes_release(fs->nodes, ndir);
		mfs_nodes_release(fs->nodes, n);
		pthread_mutex_unlock(&fs->lock);
		return;
	}
	if (mfs_nodes_child(fs->nodes, ndir, newname) != NULL) {
		rc = mfs_err_set(&err, MFS_E_EXIST, "%s exists", newname);
		goto out;
	}
	from = strdup(n->mailbox);
	to = child_mailbox(fs, ndir, newname);
	if (from == NULL || to == NULL) {
		rc = mfs_err_set(&err, errno == ENOMEM ? MFS_E_NOMEM
						       : MFS_E_INVAL,
				 "cannot name a folder %s", newname);
		goto out;
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
out:
	mfs_nodes_release(fs->nodes, ndir);
	mfs_nodes_release(fs->nodes, n);
	pthread_mutex_unlock(&fs->lock);
	msg_ref_free(&r);
	free(from);
	free(to);
	if (rc != MFS_OK) {
		reply_err(req, &err);
		return;
	}
	fuse_reply_err(req, 0);
}

/* Replies to a create with the new node n and its open handle h, which it
 * registers. Called with the lock held; releases it. */
static void reply_create(fuse_req_t req, struct mfs_fs *fs,
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

/* A file made in outbox/: a new spool entry. Called with the lock held;
 * releases it. */
static void outbox_create(fuse_req_t req, struct mfs_fs *fs,
			  struct mfs_node *dir, const char *name,
			  struct fuse_file_info *fi)
{
	struct mfs_node *n;
	struct mfs_err err;
	struct handle *h;
	int fd = -1;

	mfs_err_clear(&err);
	n = mfs_nodes_child(fs->nodes, dir, name);
	if (n != NULL && n->kind == MFS_N_FILE && n->priv != NULL)
		mfs_nodes_unlink(fs->nodes, n); /* sent: a new one now */
	else if (n != NULL) {
		pthread_mutex_unlock(&fs->lock);
		fuse_reply_err(req, EEXIST);
		return;
	}
	h = calloc(1, sizeof(*h));
	if (h == NULL ||
	    mfs_spool_create(fs->spool, name, &fd, &err) != MFS_OK) {
		pthread_mutex_unlock(&fs->lock);
		free(h);
		if (h == NULL)
			mfs_err_set(&err, MFS_E_NOMEM, "out of memory");
		reply_err(req, &err);
		return;
	}
	outbox_sync(fs, &err);
	n = mfs_nodes_child(fs->nodes, dir, name);
	if (n == NULL) {
		pthread_mutex_unlock(&fs->lock);
		close(fd);
		free(h);
		fuse_reply_err(req, EIO);
		return;
	}
	h->node = n;
	h->fd = fd;
	h->dirty = h->wopen = 1;
	h->opener = req_process(req);
	mfs_nodes_hold(n);
	reply_create(req, fs, n, h, fi);
}

/* A regular file made in a folder: written to an anonymous file, APPENDed
 * when closed. */
static void fs_create(fuse_req_t req, fuse_ino_t parent, const char *name,
		      mode_t mode, struct fuse_file_info *fi)
{
	struct mfs_fs *fs = fuse_req_userdata(req);
	struct mfs_node *dir, *n;
	struct upload *u;
	struct handle *h;
	int fd;

	(void)mode;
	dir = node_get(req, fs, parent);
	if (dir == NULL)
		return;
	if (dir->kind == MFS_N_OUTBOX) {
		outbox_create(req, fs, dir, name, fi);
		return;
	}
	if (fs->store->read_only || fs->store->ops->append == NULL ||
	    dir->kind != MFS_N_FOLDER || dir->noselect) {
		pthread_mutex_unlock(&fs->lock);
		fuse_reply_err(req, fs->store->read_only ? EROFS : EPERM);
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

/* A size change of a written file: a write. Caller holds the lock. */
static int written_truncate(struct mfs_fs *fs, struct mfs_node *n,
			    struct handle *h, off_t size)
{
	struct mfs_err err;
	int fd, e = 0;

	if (h != NULL) {
		e = may_write(fs, h);
		if (e == 0 && ftruncate(h->fd, size) != 0)
			e = errno;
		if (e == 0)
			h->dirty = 1;
		return e;
	}
	if (n->file == MFS_F_NEW) {
		struct upload *u = n->priv;

		if (u->committed)
			return EPERM;
		return ftruncate(u->fd, size) != 0 ? errno : 0;
	}
	if (n->priv != NULL)
		return EPERM; /* accepted */
	mfs_err_clear(&err);
	if (mfs_spool_open_entry(fs->spool, n->name, O_WRONLY, &fd, &err) !=
	    MFS_OK)
		return mfs_err_errno(err.code);
	if (ftruncate(fd, size) != 0)
		e = errno;
	close(fd);
	return e;
}

/* setattr of a file written into a folder or outbox/ (see "written
 * files"): a size is a write; the mode and times are accepted, and a time
 * set before the APPEND is its internal date; the owner can only be the
 * mounting user. A time set on a queued or failed outbox/ file that is not
 * being written (touch) sends it again now. Caller holds the lock. Returns
 * 0 or an errno. */
static int written_setattr(struct mfs_fs *fs, struct mfs_node *n,
			   struct handle *h, const struct stat *attr,
			   int to_set)
{
	struct mfs_spool_entry ent;
	struct mfs_err err;
	time_t t;
	int e;

	if (((to_set & FUSE_SET_ATTR_UID) && attr->st_uid != fs->uid) ||
	    ((to_set & FUSE_SET_ATTR_GID) && attr->st_gid != fs->gid))
		return EPERM;
	if (to_set & FUSE_SET_ATTR_SIZE) {
		e = written_truncate(fs, n, h, attr->st_size);
		if (e != 0)
			return e;
	}
	if (!(to_set & (FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_MTIME_NOW)))
		return 0;
	t = (to_set & FUSE_SET_ATTR_MTIME_NOW) ? time(NULL) : attr->st_mtime;
	if (n->file == MFS_F_NEW) {
		struct upload *u = n->priv;

		if (!u->committed) {
			u->when = t;
			n->mtime = t;
		}
		return 0;
	}
	if (n->priv != NULL || (h != NULL && h->dirty))
		return 0;
	mfs_err_clear(&err);
	if (mfs_spool_stat(fs->spool, n->name, &ent, &err) != MFS_OK)
		return 0;
	free(ent.name);
	if (ent.status != MFS_SPOOL_QUEUED && ent.status != MFS_SPOOL_FAILED)
		return 0;
	if (mfs_spool_retry_now(fs->spool, n->name, &err) != MFS_OK)
		return mfs_err_errno(err.code);
	mfs_log_info("outbox/%s: tried again now", n->name);
	return 0;
}

static void fs_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
		       int to_set, struct fuse_file_info *fi)
{
	struct mfs_fs *fs = fuse_req_userdata(req);
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
	if (n->kind == MFS_N_FILE &&
	    (n->file == MFS_F_NEW || n->file == MFS_F_OUTBOX)) {
		e = written_setattr(fs, n, h, attr, to_set);
	} else if (n->kind == MFS_N_FOLDER &&
		   !(to_set & (FUSE_SET_ATTR_SIZE | FUSE_SET_ATTR_MODE |
			       FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID))) {
		/* "touch FOLDER": list it again at the next look (a POP3
		 * mount still says EROFS: nothing was written) */
		n->listed = 0;
		if (fs->store->read_only)
			e = EROFS;
	} else if (n->kind == MFS_N_OUTBOX) {
		/* chmod, utimes of outbox/: accepted, nothing to keep */
	} else if (fs->store->read_only) {
		e = EROFS;
	} else if ((to_set & FUSE_SET_ATTR_SIZE) && n->kind == MFS_N_FILE &&
		   n->file == MFS_F_FLAGS) {
		/* "> flags": the write that follows sets them */
	} else if (to_set & (FUSE_SET_ATTR_SIZE | FUSE_SET_ATTR_MODE |
			     FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
		e = EPERM;
	}
	/* other times are accepted and ignored: the message date is the
	 * mtime */
	if (e == 0) {
		struct mfs_err err;

		mfs_err_clear(&err);
		node_size(fs, n, &err);
		node_stat(fs, n, &st);
	}
	pthread_mutex_unlock(&fs->lock);
	if (e != 0)
		fuse_reply_err(req, e);
	else
		fuse_reply_attr(req, &st, 0.0);
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

/* --- extended attributes: none ----------------------------------------
 *
 * There is no getxattr or listxattr: the kernel then learns from the first
 * ENOSYS that the mount has no extended attributes and stops asking. With
 * them, "ls -l" cost three requests per entry (SELinux label and two ACLs),
 * which was most of the time of listing a large folder. Flags are read and
 * written through each message's flags file. setxattr is kept only so that
 * a read-only mount answers EROFS, like every other write.
 */

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
};
