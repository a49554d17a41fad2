/*
 * fs.c - the FUSE layer (see fs.h).
 *
 * A request flows: kernel -> libfuse worker thread -> handler here ->
 * (tree lock) node lookup -> (no lock) store op or cache read -> (tree lock)
 * merge the result into the tree -> reply.
 */
#include "fs.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "log.h"
#include "names.h"
#include "node.h"

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
	uid_t uid;
	gid_t gid;
};

/* A directory listing taken at opendir, served by readdir. */
struct dir_snap {
	size_t n;
	struct dir_ent {
		char *name; /* owned */
		uint64_t ino;
		mode_t type;
	} *ents; /* owned */
};

struct mfs_fs *mfs_fs_new(const struct mfs_account *acct,
			  struct mfs_store *store, struct mfs_cache *cache)
{
	struct mfs_fs *fs = calloc(1, sizeof(*fs));

	if (fs == NULL)
		return NULL;
	fs->nodes = mfs_nodes_new();
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
	return fs;
}

void mfs_fs_free(struct mfs_fs *fs)
{
	if (fs == NULL)
		return;
	mfs_nodes_free(fs->nodes);
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
		if (end == NULL)
			break;
		p = end + 1;
	}
	dir->noselect = f->noselect;
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

int mfs_fs_prepare(struct mfs_fs *fs, struct mfs_err *err)
{
	return refresh_folders(fs, 0, err);
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

/* Moves m into node (taking its owned strings). */
static void message_take(struct mfs_node *node, struct mfs_store_msg *m)
{
	node->msg = *m;
	node->mtime = m->date > 0 ? m->date : 0;
	memset(m, 0, sizeof(*m));
}

/* Merges a listing into folder dir. Caller holds the lock. */
static int folder_merge(struct mfs_fs *fs, struct mfs_node *dir,
			uint32_t validity, struct mfs_store_msg *msgs,
			size_t n)
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
		} else if (c == NULL) {
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
		next = c->next_sibling;
		if (c->kind == MFS_N_MESSAGE && c->gen != fs->gen)
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
	pthread_mutex_unlock(&fs->lock);
	if (mailbox == NULL) {
		r = mfs_err_set(err, MFS_E_NOMEM, "out of memory");
		goto unlock_refresh;
	}
	r = fs->store->ops->index(fs->store, mailbox, &validity, &msgs, &n,
				  err);
	if (r == MFS_OK) {
		pthread_mutex_lock(&fs->lock);
		if (folder_merge(fs, dir, validity, msgs, n) != 0)
			r = mfs_err_set(err, MFS_E_NOMEM, "out of memory");
		pthread_mutex_unlock(&fs->lock);
		mfs_store_msgs_free(msgs, n);
	}
	free(mailbox);
unlock_refresh:
	pthread_mutex_unlock(&fs->refresh);
	return r;
}

/* The fixed files of a message directory, made on first need. Caller holds
 * the lock. Returns 0, or -1 on ENOMEM. */
static int message_populate(struct mfs_fs *fs, struct mfs_node *msg)
{
	struct mfs_node *eml;

	if (msg->first_child != NULL)
		return 0;
	eml = mfs_nodes_add(fs->nodes, msg, "message.eml", MFS_N_FILE);
	if (eml == NULL)
		return -1;
	eml->file = MFS_F_EML;
	eml->size = msg->msg.size;
	eml->mtime = msg->mtime;
	return 0;
}

/* --- attributes ---------------------------------------------------------- */

static void node_stat(const struct mfs_fs *fs, const struct mfs_node *n,
		      struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = n->ino;
	st->st_uid = fs->uid;
	st->st_gid = fs->gid;
	st->st_mtime = st->st_ctime = st->st_atime = n->mtime;
	st->st_blksize = 4096;
	if (n->kind == MFS_N_FILE) {
		st->st_mode = S_IFREG | 0400;
		st->st_nlink = 1;
		st->st_size = (off_t)n->size;
		st->st_blocks = (blkcnt_t)((n->size + 511) / 512);
	} else {
		st->st_mode = S_IFDIR | 0700;
		st->st_nlink = 2;
	}
}

static double node_ttl(const struct mfs_node *n)
{
	return n->kind == MFS_N_MESSAGE || n->kind == MFS_N_FILE
		       ? MESSAGE_ATTR_TTL
		       : FOLDER_ATTR_TTL;
}

static void reply_err(fuse_req_t req, const struct mfs_err *err)
{
	if (err->code != MFS_E_NOENT)
		mfs_log_err("%s", err->msg);
	fuse_reply_err(req, mfs_err_errno(err->code));
}

/* --- handlers ------------------------------------------------------------ */

static void fs_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct mfs_fs *fs = fuse_req_userdata(req);
	struct fuse_entry_param e;
	struct mfs_node *dir, *n;
	struct mfs_err err;

	mfs_err_clear(&err);
	pthread_mutex_lock(&fs->lock);
	dir = mfs_nodes_get(fs->nodes, parent);
	if (dir == NULL || dir->kind == MFS_N_FILE) {
		pthread_mutex_unlock(&fs->lock);
		fuse_reply_err(req, dir == NULL ? ENOENT : ENOTDIR);
		return;
	}
	if (dir->kind == MFS_N_MESSAGE && message_populate(fs, dir) != 0) {
		pthread_mutex_unlock(&fs->lock);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	n = mfs_nodes_child(fs->nodes, dir, name);
	if (n == NULL && dir->kind == MFS_N_FOLDER && !dir->noselect &&
	    strstr(name, " \xc2\xb7") != NULL) {
		/* Looks like a message we have not listed yet: list again. */
		mfs_nodes_hold(dir);
		pthread_mutex_unlock(&fs->lock);
		refresh_folder(fs, dir, dir->listed == 0 ? 0 : 1, &err);
		pthread_mutex_lock(&fs->lock);
		n = dir->linked ? mfs_nodes_child(fs->nodes, dir, name) : NULL;
		mfs_nodes_release(fs->nodes, dir);
	} else if (n == NULL && (dir->kind == MFS_N_ROOT ||
				 dir->kind == MFS_N_FOLDER)) {
		/* Perhaps a folder made since the last LIST. */
		mfs_nodes_hold(dir);
		pthread_mutex_unlock(&fs->lock);
		refresh_folders(fs, FOLDERS_TTL, &err);
		pthread_mutex_lock(&fs->lock);
		n = dir->linked ? mfs_nodes_child(fs->nodes, dir, name) : NULL;
		mfs_nodes_release(fs->nodes, dir);
	}
	if (n == NULL) {
		pthread_mutex_unlock(&fs->lock);
		if (err.code != MFS_OK && err.code != MFS_E_NOENT) {
			reply_err(req, &err);
			return;
		}
		fuse_reply_err(req, ENOENT);
		return;
	}
	memset(&e, 0, sizeof(e));
	e.ino = n->ino;
	e.attr_timeout = e.entry_timeout = node_ttl(n);
	node_stat(fs, n, &e.attr);
	mfs_nodes_lookup(n);
	pthread_mutex_unlock(&fs->lock);
	fuse_reply_entry(req, &e);
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
	struct stat st;
	double ttl;

	(void)fi;
	pthread_mutex_lock(&fs->lock);
	n = mfs_nodes_get(fs->nodes, ino);
	if (n == NULL) {
		pthread_mutex_unlock(&fs->lock);
		fuse_reply_err(req, ENOENT);
		return;
	}
	node_stat(fs, n, &st);
	ttl = node_ttl(n);
	pthread_mutex_unlock(&fs->lock);
	fuse_reply_attr(req, &st, ttl);
}

static void snap_free(struct dir_snap *s)
{
	size_t i;

	if (s == NULL)
		return;
	for (i = 0; i < s->n; i++)
		free(s->ents[i].name);
	free(s->ents);
	free(s);
}

static int snap_add(struct dir_snap *s, size_t *cap, const char *name,
		    uint64_t ino, mode_t type)
{
	if (s->n == *cap) {
		size_t ncap = *cap ? *cap * 2 : 16;
		struct dir_ent *e = realloc(s->ents, ncap * sizeof(*e));

		if (e == NULL)
			return -1;
		s->ents = e;
		*cap = ncap;
	}
	s->ents[s->n].name = strdup(name);
	if (s->ents[s->n].name == NULL)
		return -1;
	s->ents[s->n].ino = ino;
	s->ents[s->n].type = type;
	s->n++;
	return 0;
}

/* Takes the listing of dir. Caller holds the lock. */
static struct dir_snap *snap_take(struct mfs_node *dir)
{
	struct dir_snap *s = calloc(1, sizeof(*s));
	struct mfs_node *c;
	size_t cap = 0;

	if (s == NULL)
		return NULL;
	if (snap_add(s, &cap, ".", dir->ino, S_IFDIR) != 0 ||
	    snap_add(s, &cap, "..", dir->parent ? dir->parent->ino : 1,
		     S_IFDIR) != 0)
		goto fail;
	for (c = dir->first_child; c != NULL; c = c->next_sibling) {
		if (snap_add(s, &cap, c->name, c->ino,
			     c->kind == MFS_N_FILE ? S_IFREG : S_IFDIR) != 0)
			goto fail;
	}
	return s;
fail:
	snap_free(s);
	return NULL;
}

static void fs_opendir(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct mfs_fs *fs = fuse_req_userdata(req);
	struct mfs_node *dir;
	struct dir_snap *s;
	struct mfs_err err;
	int listed;

	mfs_err_clear(&err);
	pthread_mutex_lock(&fs->lock);
	dir = mfs_nodes_get(fs->nodes, ino);
	if (dir == NULL || dir->kind == MFS_N_FILE) {
		pthread_mutex_unlock(&fs->lock);
		fuse_reply_err(req, dir == NULL ? ENOENT : ENOTDIR);
		return;
	}
	mfs_nodes_hold(dir);
	pthread_mutex_unlock(&fs->lock);

	if (dir->kind == MFS_N_ROOT &&
	    refresh_folders(fs, FOLDERS_TTL, &err) != MFS_OK)
		mfs_log_err("%s (showing the folders known before)", err.msg);
	if (dir->kind == MFS_N_FOLDER &&
	    refresh_folder(fs, dir, LIST_TTL, &err) != MFS_OK) {
		pthread_mutex_lock(&fs->lock);
		listed = dir->listed != 0;
		mfs_nodes_release(fs->nodes, dir);
		pthread_mutex_unlock(&fs->lock);
		if (!listed) {
			reply_err(req, &err);
			return;
		}
		mfs_log_err("%s (showing the last listing)", err.msg);
		pthread_mutex_lock(&fs->lock);
		mfs_nodes_hold(dir);
		pthread_mutex_unlock(&fs->lock);
	}

	pthread_mutex_lock(&fs->lock);
	if (dir->kind == MFS_N_MESSAGE && message_populate(fs, dir) != 0)
		s = NULL;
	else
		s = snap_take(dir);
	mfs_nodes_release(fs->nodes, dir);
	pthread_mutex_unlock(&fs->lock);
	if (s == NULL) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	fi->fh = (uint64_t)(uintptr_t)s;
	fuse_reply_open(req, fi);
}

static void fs_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	struct dir_snap *s = (struct dir_snap *)(uintptr_t)fi->fh;
	char *buf;
	size_t used = 0;
	off_t i;

	(void)ino;
	buf = malloc(size);
	if (buf == NULL) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	for (i = off; i >= 0 && (size_t)i < s->n; i++) {
		struct stat st = {0};
		size_t len;

		st.st_ino = s->ents[i].ino;
		st.st_mode = s->ents[i].type;
		len = fuse_add_direntry(req, buf + used, size - used,
					s->ents[i].name, &st, i + 1);
		if (len > size - used)
			break;
		used += len;
	}
	fuse_reply_buf(req, buf, used);
	free(buf);
}

static void fs_releasedir(fuse_req_t req, fuse_ino_t ino,
			  struct fuse_file_info *fi)
{
	(void)ino;
	snap_free((struct dir_snap *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

/* What the cache needs to fetch a message it does not have. */
struct fetch_ctx {
	struct mfs_fs *fs;
	const char *mailbox;
	uint32_t validity;
	struct mfs_store_msg msg; /* borrowed strings: only ids are used */
};

static int fetch_fill(void *ctx, int fd, size_t *len, struct mfs_err *err)
{
	struct fetch_ctx *f = ctx;

	return f->fs->store->ops->fetch(f->fs->store, f->mailbox, f->validity,
					&f->msg, fd, len, err);
}

/* The cache key of a message: "m/<hex folder>/<validity>/<id>". */
static int message_key(const char *mailbox, uint32_t validity,
		       const struct mfs_store_msg *m, char *key, size_t len)
{
	char tail[64];

	snprintf(key, len, "m/");
	if (mfs_cache_key_hex(mailbox, key, len) != 0)
		return -1;
	if (m->uidl != NULL) {
		snprintf(tail, sizeof(tail), "/%" PRIu32 "/", validity);
		if (strlen(key) + strlen(tail) >= len)
			return -1;
		strcat(key, tail);
		return mfs_cache_key_hex(m->uidl, key, len);
	}
	snprintf(tail, sizeof(tail), "/%" PRIu32 "/%" PRIu32, validity, m->uid);
	if (strlen(key) + strlen(tail) >= len)
		return -1;
	strcat(key, tail);
	return 0;
}

static void fs_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct mfs_fs *fs = fuse_req_userdata(req);
	struct mfs_node *n, *folder;
	struct fetch_ctx ctx = {.fs = fs};
	char key[1024], *mailbox = NULL, *uidl = NULL;
	struct mfs_err err;
	int fd = -1, has_uidl;

	mfs_err_clear(&err);
	if ((fi->flags & O_ACCMODE) != O_RDONLY) {
		fuse_reply_err(req, fs->store->read_only ? EROFS : EACCES);
		return;
	}
	pthread_mutex_lock(&fs->lock);
	n = mfs_nodes_get(fs->nodes, ino);
	if (n == NULL || n->kind != MFS_N_FILE) {
		pthread_mutex_unlock(&fs->lock);
		fuse_reply_err(req, n == NULL ? ENOENT : EISDIR);
		return;
	}
	folder = n->parent->parent;
	mailbox = strdup(folder->mailbox);
	has_uidl = n->parent->msg.uidl != NULL;
	if (has_uidl)
		uidl = strdup(n->parent->msg.uidl);
	ctx.msg.uid = n->parent->msg.uid;
	ctx.msg.size = n->parent->msg.size;
	ctx.validity = folder->validity;
	pthread_mutex_unlock(&fs->lock);
	ctx.mailbox = mailbox;
	ctx.msg.uidl = uidl;
	if (mailbox == NULL || (has_uidl && uidl == NULL)) {
		mfs_err_set(&err, MFS_E_NOMEM, "out of memory");
		goto fail;
	}
	if (message_key(mailbox, ctx.validity, &ctx.msg, key, sizeof(key)) !=
	    0) {
		mfs_err_set(&err, MFS_E_IO, "cache key too long");
		goto fail;
	}
	if (mfs_cache_get(fs->cache, key, ctx.msg.size, fetch_fill, &ctx, &fd,
			  &err) != MFS_OK)
		goto fail;
	free(mailbox);
	free(uidl);
	fi->fh = (uint64_t)fd;
	fi->keep_cache = 1; /* a message never changes */
	fuse_reply_open(req, fi);
	return;
fail:
	free(mailbox);
	free(uidl);
	reply_err(req, &err);
}

static void fs_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct fuse_bufvec buf = FUSE_BUFVEC_INIT(size);

	(void)ino;
	buf.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	buf.buf[0].fd = (int)fi->fh;
	buf.buf[0].pos = off;
	fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
}

static void fs_release(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	(void)ino;
	close((int)fi->fh);
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

/* Writes are not part of this tree yet: the mount is read-only. */
static void fs_rofs_entry(fuse_req_t req, fuse_ino_t parent, const char *name,
			  mode_t mode)
{
	(void)parent;
	(void)name;
	(void)mode;
	fuse_reply_err(req, EROFS);
}

static void fs_mknod(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode, dev_t rdev)
{
	(void)rdev;
	fs_rofs_entry(req, parent, name, mode);
}

static void fs_rofs_name(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	fs_rofs_entry(req, parent, name, 0);
}

static void fs_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
		      fuse_ino_t newparent, const char *newname,
		      unsigned int flags)
{
	(void)newparent;
	(void)newname;
	(void)flags;
	fs_rofs_name(req, parent, name);
}

static void fs_create(fuse_req_t req, fuse_ino_t parent, const char *name,
		      mode_t mode, struct fuse_file_info *fi)
{
	(void)fi;
	fs_rofs_entry(req, parent, name, mode);
}

static void fs_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
		       int to_set, struct fuse_file_info *fi)
{
	(void)ino;
	(void)attr;
	(void)to_set;
	(void)fi;
	fuse_reply_err(req, EROFS);
}

static void fs_symlink(fuse_req_t req, const char *link, fuse_ino_t parent,
		       const char *name)
{
	(void)link;
	fs_rofs_name(req, parent, name);
}

static void fs_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent,
		    const char *newname)
{
	(void)ino;
	fs_rofs_name(req, newparent, newname);
}

const struct fuse_lowlevel_ops mfs_fs_ops = {
	.lookup = fs_lookup,
	.forget = fs_forget,
	.forget_multi = fs_forget_multi,
	.getattr = fs_getattr,
	.setattr = fs_setattr,
	.opendir = fs_opendir,
	.readdir = fs_readdir,
	.releasedir = fs_releasedir,
	.open = fs_open,
	.read = fs_read,
	.release = fs_release,
	.statfs = fs_statfs,
	.mknod = fs_mknod,
	.mkdir = fs_rofs_entry,
	.unlink = fs_rofs_name,
	.rmdir = fs_rofs_name,
	.rename = fs_rename,
	.create = fs_create,
	.symlink = fs_symlink,
	.link = fs_link,
};
