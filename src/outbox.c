/*
 * outbox.c - outbox/ and outbox/.status/ over the spool (see fsint.h and
 * spool.h): one file node per spool entry, the status text of each, files
 * accepted a moment ago (shown SENT_LINGER seconds more), and the Sent
 * copy of what was sent.
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
int outbox_sync(struct mfs_fs *fs, struct mfs_err *err)
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
char *outbox_status_text(struct mfs_fs *fs, const struct mfs_node *n,
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
		if (mfs_err_unreachable(err.code))
			return -1; /* the spool tries again later */
	}
	pthread_mutex_lock(&fs->lock);
	if (fs->acct->sent_folder != NULL) {
		char *enc = mfs_mutf7_encode(fs->acct->sent_folder);

		mailbox = enc != NULL ? root_mailbox(fs, enc) : NULL;
		free(enc);
	} else if (fs->sent_mailbox != NULL)
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
		return mfs_err_unreachable(err.code) ? -1 : 0;
	}
	free(mailbox);
	return 0;
}

/* Opens the message file of an outbox/ entry. Opened for writing, it is
 * reopened for writing only at the first write or truncation (the spool
 * then makes it a new message): "touch outbox/NAME" changes nothing but
 * the time. An accepted file shows the bytes that were sent. Caller holds
 * the lock. */
int open_outbox(struct mfs_fs *fs, struct mfs_node *n, int writing,
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
int outbox_reopen(struct mfs_fs *fs, struct handle *h)
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

/* Submits an outbox/ file; see SPEC.md "outbox/" for what close()
 * returns. An accepted file stays SENT_LINGER seconds, showing what was
 * sent. Called with the lock held and h live; the lock is dropped while
 * the spool sends. */
int outbox_commit(struct mfs_fs *fs, struct handle *h,
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

/* A file made in outbox/: a new spool entry. Called with the lock held;
 * releases it. */
void outbox_create(fuse_req_t req, struct mfs_fs *fs,
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

/* --- the ops of outbox/ nodes (fs.c's table of node kinds) ---------------- */

int outbox_file_writable(const struct mfs_fs *fs, const struct mfs_node *n)
{
	(void)fs;
	return n->priv == NULL; /* accepted: read-only */
}

int outbox_file_size(struct mfs_fs *fs, struct mfs_node *n,
		     struct mfs_err *err)
{
	struct mfs_spool_entry e;
	struct stat st;

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
}

/* A size change of outbox/ file n: a write. */
static int outbox_truncate(struct mfs_fs *fs, struct mfs_node *n,
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

/* setattr of an outbox/ file: a size is a write; the mode and times are
 * accepted; the owner can only be the mounting user. A time set on a
 * queued or failed file that is not being written (touch) sends it again
 * now. */
int outbox_setattr(struct mfs_fs *fs, struct mfs_node *n, struct handle *h,
		   const struct stat *attr, int to_set)
{
	struct mfs_spool_entry ent;
	struct mfs_err err;
	int e;

	if (!owner_ok(fs, attr, to_set))
		return EPERM;
	if (to_set & FUSE_SET_ATTR_SIZE) {
		e = outbox_truncate(fs, n, h, attr->st_size);
		if (e != 0)
			return e;
	}
	if (!(to_set & (FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_MTIME_NOW)) ||
	    n->priv != NULL || (h != NULL && h->dirty))
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

/* rm outbox/NAME: cancels what is not sent yet; a file accepted a moment
 * ago only loses its name. */
int outbox_unlink(struct mfs_fs *fs, struct mfs_node *dir, struct mfs_node *n,
		  const char *name)
{
	struct mfs_err err;

	(void)dir;
	if (n == NULL)
		return ENOENT;
	if (n->kind != MFS_N_FILE)
		return EISDIR;
	if (n->priv != NULL) {
		mfs_nodes_unlink(fs->nodes, n);
		return 0;
	}
	mfs_err_clear(&err);
	if (mfs_spool_unlink(fs->spool, name, &err) != MFS_OK)
		return mfs_err_errno(err.code);
	outbox_sync(fs, &err);
	return 0;
}

/* mv within outbox/: the spool renames the entry (a waiting name renamed
 * to a final one is sent). */
int outbox_rename(struct mfs_fs *fs, struct mfs_node *dir, struct mfs_node *n,
		  struct mfs_node *ndir, const char *newname)
{
	struct mfs_err err;

	(void)dir;
	(void)ndir;
	mfs_err_clear(&err);
	if (mfs_spool_rename(fs->spool, n->name, newname, &err) != MFS_OK)
		return mfs_err_errno(err.code);
	outbox_sync(fs, &err);
	return 0;
}
