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
	size_t n;
	struct mfs_node **nodes; /* owned array; each node held */
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
struct mfs_store *reader_get(struct mfs_fs *fs)
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

void reader_put(struct mfs_fs *fs, struct mfs_store *st)
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

/* --- attributes ---------------------------------------------------------- */

/* Brings n->size up to date. Caller holds the lock and a hold on n: the
 * lock may be dropped while bytes are fetched. */
int node_size(struct mfs_fs *fs, struct mfs_node *n,
		     struct mfs_err *err)
{
	struct mfs_spool_entry e;
	struct stat st;
	char *text;

	if (n->kind != MFS_N_FILE)
		return MFS_OK;
	switch (n->file) {
	case MFS_F_PART:
		return part_size(fs, n, err);
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
		text = outbox_status_text(fs, n, err);
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
		h->buf = outbox_status_text(fs, n, &err);
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
