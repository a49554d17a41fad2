/*
 * folders.c - the folder tree and the messages of each folder (see
 * fsint.h): LIST into folder nodes, a folder's listing merged into message
 * nodes, and new mail in INBOX noticed by the store's watch (IDLE).
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

#include "folderlist.h"
#include "hash.h"
#include "journal.h"
#include "log.h"
#include "mime.h"
#include "names.h"

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
struct mfs_node *folder_child(struct mfs_fs *fs, struct mfs_node *dir,
			      const char *display, const char *prefix)
{
	struct mfs_node *n = NULL;
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
		if (strcmp(name, SEARCH_DIR) == 0)
			continue; /* the searches' name: a suffix */
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
	const char *p = f->name + f->shown; /* the personal prefix left out */
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

/* Without SPECIAL-USE (RFC 6154) the Sent folder is the first folder at
 * the root that has one of these names, in this order. */
static const char *const sent_names[] = {"Sent", "Sent Items", "Sent Messages",
					 "Sent Mail"};

static void sent_by_name(struct mfs_fs *fs,
			 const struct mfs_store_folder *folders, size_t n)
{
	size_t i, k;

	for (k = 0; k < sizeof(sent_names) / sizeof(sent_names[0]); k++)
		for (i = 0; i < n; i++)
			if (!folders[i].noselect &&
			    strcasecmp(folders[i].name + folders[i].shown,
				       sent_names[k]) == 0) {
				fs->sent_mailbox = strdup(folders[i].name);
				return;
			}
}

/* Learns the personal namespace once, for the folders made at the root. */
static void learn_root(struct mfs_fs *fs)
{
	struct mfs_err err;
	char *prefix = NULL, delim = '\0';

	if (fs->root_prefix != NULL || fs->store->ops->personal == NULL)
		return;
	mfs_err_clear(&err);
	if (fs->store->ops->personal(fs->store, &prefix, &delim, &err) !=
	    MFS_OK) {
		mfs_log_err("%s", err.msg); /* asked again at the next LIST */
		return;
	}
	pthread_mutex_lock(&fs->lock);
	fs->root_prefix = prefix;
	if (delim != '\0')
		fs->delim = delim;
	pthread_mutex_unlock(&fs->lock);
}

char *root_mailbox(const struct mfs_fs *fs, const char *name)
{
	const char *prefix = fs->root_prefix != NULL ? fs->root_prefix : "";
	char *out;

	if (strcasecmp(name, "INBOX") == 0)
		prefix = "";
	if (asprintf(&out, "%s%s", prefix, name) < 0)
		return NULL;
	return out;
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

/* What ties the kept folder list to this account. malloc'd, or NULL. */
static char *folders_key(const struct mfs_fs *fs)
{
	const struct mfs_account *a = fs->acct;
	char *key;

	if (asprintf(&key, "%s %s@%s:%d", a->name ? a->name : "",
		     a->user ? a->user : "", a->store.host ? a->store.host : "",
		     a->store.port) < 0)
		return NULL;
	return key;
}

/* Keeps the folder list on disk for an offline mount, when it changed. A
 * failure only costs that mount its folders. */
static void folders_keep(struct mfs_fs *fs,
			 const struct mfs_store_folder *folders, size_t n)
{
	uint64_t h = mfs_fnv1a(0, &n, sizeof(n));
	struct mfs_err err;
	char *key;
	size_t i;

	if (fs->store->ops->kept_index == NULL || fs->acct->cache_dir == NULL)
		return; /* a driver that keeps no listings: no offline mount */
	for (i = 0; i < n; i++) {
		h = mfs_fnv1a_str(h, folders[i].name);
		h = mfs_fnv1a(h, &folders[i].shown, sizeof(folders[i].shown));
		h = mfs_fnv1a(h, &folders[i].delim, 1);
		h = mfs_fnv1a(h, &folders[i].noselect,
			      sizeof(folders[i].noselect));
		h = mfs_fnv1a(h, &folders[i].sent, sizeof(folders[i].sent));
	}
	if (h == fs->folders_kept)
		return;
	key = folders_key(fs);
	if (key == NULL)
		return;
	if (mfs_folderlist_save(fs->acct->cache_dir, key, folders, n, &err) ==
	    MFS_OK)
		fs->folders_kept = h;
	else
		mfs_log_err("folder list not kept for offline use: %s",
			    err.msg);
	free(key);
}

/* The folder list kept by an earlier LIST, for when the server is out of
 * reach. */
static int folders_kept(struct mfs_fs *fs, struct mfs_store_folder **folders,
			size_t *n, struct mfs_err *err)
{
	char *key;
	size_t i;
	int r;

	if (fs->store->ops->kept_index == NULL || fs->acct->cache_dir == NULL)
		return mfs_err_set(err, MFS_E_NOENT, "no folder list kept");
	key = folders_key(fs);
	if (key == NULL)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	r = mfs_folderlist_load(fs->acct->cache_dir, key, folders, n, err);
	free(key);
	if (r != MFS_OK)
		return r;
	/* the personal namespace, for folders made at the root offline */
	pthread_mutex_lock(&fs->lock);
	for (i = 0; i < *n && fs->root_prefix == NULL; i++)
		if ((*folders)[i].shown > 0) {
			fs->root_prefix = strndup((*folders)[i].name,
						  (*folders)[i].shown);
			if ((*folders)[i].delim != '\0')
				fs->delim = (*folders)[i].delim;
		}
	pthread_mutex_unlock(&fs->lock);
	mfs_journal_folders(fs->store, folders, n); /* changes made offline */
	return MFS_OK;
}

/* Brings the folder nodes in line with folders[0..n). Caller holds
 * fs->refresh, not the lock. */
static int folders_apply(struct mfs_fs *fs,
			 const struct mfs_store_folder *folders, size_t n,
			 struct mfs_err *err)
{
	int r = MFS_OK;
	size_t i;

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
		if (fs->sent_mailbox == NULL)
			sent_by_name(fs, folders, n);
		fs->folders_listed = time(NULL);
	}
	pthread_mutex_unlock(&fs->lock);
	return r;
}

/* LIST, then brings the folder nodes in line. Takes the locks itself.
 * With the server out of reach before any LIST of this mount, the folder
 * list kept by an earlier mount is shown instead. */
int refresh_folders(struct mfs_fs *fs, int ttl, struct mfs_err *err)
{
	struct mfs_store_folder *folders = NULL;
	struct mfs_err kerr;
	size_t n = 0;
	int r = MFS_OK;

	pthread_mutex_lock(&fs->refresh);
	if (ttl > 0 && time(NULL) - fs->folders_listed < ttl)
		goto unlock_refresh;
	r = fs->store->ops->list(fs->store, &folders, &n, err);
	if (r == MFS_OK) {
		learn_root(fs);
		folders_keep(fs, folders, n);
	} else if (mfs_err_unreachable(r) && fs->folders_listed == 0 &&
		   folders_kept(fs, &folders, &n, &kerr) == MFS_OK) {
		mfs_log_info("%s: showing the folders kept by an earlier "
			     "mount",
			     err->msg);
		r = MFS_OK;
	} else {
		goto unlock_refresh;
	}
	r = folders_apply(fs, folders, n, err);
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
	if (fs->store->ops->connect(fs->store, err) != MFS_OK) {
		/* offline: a mount with the folders an earlier one kept; the
		 * first mount of an account needs the server */
		struct mfs_store_folder *folders = NULL;
		struct mfs_err kerr;
		size_t n = 0;

		if (!mfs_err_unreachable(err->code) ||
		    folders_kept(fs, &folders, &n, &kerr) != MFS_OK)
			return err->code;
		mfs_log_err("offline, mounted without the server: %s",
			    err->msg);
		pthread_mutex_lock(&fs->refresh);
		r = folders_apply(fs, folders, n, err);
		pthread_mutex_unlock(&fs->refresh);
		mfs_store_folders_free(folders, n);
		if (r != MFS_OK)
			return r;
	}
	pthread_mutex_lock(&fs->lock);
	r = folder_add(fs, &inbox);
	pthread_mutex_unlock(&fs->lock);
	if (r != 0)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	mfs_err_clear(err);
	return MFS_OK;
}

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

/* A node for message m (taken) under name in dir. NULL on ENOMEM. Caller
 * holds the lock. */
static struct mfs_node *message_add(struct mfs_fs *fs, struct mfs_node *dir,
				    const char *name, struct mfs_store_msg *m)
{
	struct mfs_node *c = mfs_nodes_add(fs->nodes, dir, name, MFS_N_MESSAGE);

	if (c != NULL)
		message_take(c, m);
	return c;
}

/* The message nodes of a folder by UID (open addressing), for a listing
 * whose entries were shown as it came (mfs_store_msg.shown): those have
 * no sender and subject left to make their names from. */
struct uid_map {
	struct mfs_node **slot; /* owned; NULL: empty */
	size_t mask;
};

static size_t uid_slot(const struct uid_map *u, uint32_t uid)
{
	return (size_t)(uid * 2654435761u) & u->mask;
}

/* Fills u with dir's message nodes. Returns 0, or -1 on ENOMEM. */
static int uid_map_make(struct uid_map *u, const struct mfs_node *dir)
{
	struct mfs_node *c;
	size_t n = 0, room = 16, i;

	for (c = dir->first_child; c != NULL; c = c->next_sibling)
		n++;
	while (room < 2 * n)
		room *= 2;
	u->slot = calloc(room, sizeof(*u->slot));
	u->mask = room - 1;
	if (u->slot == NULL)
		return -1;
	for (c = dir->first_child; c != NULL; c = c->next_sibling) {
		if (c->kind != MFS_N_MESSAGE)
			continue;
		for (i = uid_slot(u, c->msg.uid); u->slot[i] != NULL;
		     i = (i + 1) & u->mask)
			;
		u->slot[i] = c;
	}
	return 0;
}

static struct mfs_node *uid_map_find(const struct uid_map *u, uint32_t uid)
{
	size_t i;

	for (i = uid_slot(u, uid); u->slot[i] != NULL; i = (i + 1) & u->mask)
		if (u->slot[i]->msg.uid == uid)
			return u->slot[i];
	return NULL;
}

/* Merges a listing into folder dir; the listing began after `commits`
 * files written into folders were appended, and shows those messages, so
 * their written names leave. Entries shown as the listing came are found
 * by UID; one whose node went meanwhile is left to the next listing.
 * Caller holds the lock. */
static int folder_merge(struct mfs_fs *fs, struct mfs_node *dir,
			uint32_t validity, struct mfs_store_msg *msgs,
			size_t n, unsigned commits)
{
	struct mfs_node *c, *next;
	struct uid_map by_uid = {NULL, 0};
	size_t i, missed = 0;

	for (i = 0; i < n && by_uid.slot == NULL; i++)
		if (msgs[i].shown && uid_map_make(&by_uid, dir) != 0)
			return -1;
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
		char *name;

		if (msgs[i].shown) {
			c = uid_map_find(&by_uid, msgs[i].uid);
			if (c != NULL && c->linked && c->parent == dir) {
				c->msg.flags = msgs[i].flags;
				c->gen = fs->gen;
			} else {
				missed++;
			}
			continue;
		}
		name = message_name(&msgs[i]);
		if (name == NULL) {
			free(by_uid.slot);
			return -1;
		}
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
			c = message_add(fs, dir, name, &msgs[i]);
			if (c == NULL) {
				free(name);
				free(by_uid.slot);
				return -1;
			}
			c->gen = fs->gen;
		}
		free(name);
	}
	free(by_uid.slot);
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
	if (missed > 0)
		folder_stale(dir); /* listed again at the next look */
	return 0;
}

void folder_stale(struct mfs_node *dir)
{
	if (dir->listed != 0)
		dir->listed = 1; /* long ago, but listed: kept on failure */
}

static void stale_below(struct mfs_node *dir, const char *mailbox)
{
	struct mfs_node *c;

	for (c = dir->first_child; c != NULL; c = c->next_sibling) {
		if (c->kind != MFS_N_FOLDER)
			continue;
		if (c->mailbox != NULL && strcmp(c->mailbox, mailbox) == 0)
			folder_stale(c);
		stale_below(c, mailbox);
	}
}

void mailbox_stale(struct mfs_fs *fs, const char *mailbox)
{
	stale_below(mfs_nodes_root(fs->nodes), mailbox);
}

/* Adds nodes for the messages msgs (entries of a listing: a search's
 * matches) that folder dir does not show, leaving every other node alone;
 * dir stays as listed (or unlisted) as it was. Caller holds the lock. */
int folder_add_some(struct mfs_fs *fs, struct mfs_node *dir,
		    uint32_t validity, struct mfs_store_msg *msgs, size_t n)
{
	struct mfs_node *c;
	size_t i;

	if (dir->listed != 0 && dir->validity != validity)
		return 0; /* a listing of another numbering: list again */
	for (i = 0; i < n; i++) {
		char *name = message_name(&msgs[i]);

		if (name == NULL)
			return -1;
		c = mfs_nodes_child(fs->nodes, dir, name);
		if (c == NULL && message_add(fs, dir, name, &msgs[i]) == NULL) {
			free(name);
			return -1;
		}
		free(name);
	}
	dir->validity = validity;
	return 0;
}

int folder_show(struct mfs_fs *fs, struct mfs_node *dir,
		const struct mfs_store_msg *m, struct mfs_node **added)
{
	struct mfs_store_msg copy = *m;
	struct mfs_node *c;
	char *name;

	*added = NULL;
	if (m->uidl != NULL || m->shown) /* not a listing as it comes */
		return -1;
	name = message_name(m);
	if (name == NULL)
		return -1;
	c = mfs_nodes_child(fs->nodes, dir, name);
	if (c != NULL) {
		free(name);
		/* a message's name holds its UID: the same message */
		return c->kind == MFS_N_MESSAGE && c->msg.uid == m->uid ? 0
									: -1;
	}
	copy.from = copy.subject = NULL; /* in the name; not kept */
	c = message_add(fs, dir, name, &copy);
	free(name);
	if (c == NULL)
		return -1;
	*added = c;
	return 0;
}

int refresh_folder(struct mfs_fs *fs, struct mfs_node *dir, int ttl,
		   struct mfs_err *err)
{
	return refresh_folder_pieces(fs, dir, ttl, NULL, NULL, err);
}

int refresh_folder_pieces(struct mfs_fs *fs, struct mfs_node *dir, int ttl,
			  mfs_index_piece_fn piece, void *ctx,
			  struct mfs_err *err)
{
	const struct mfs_store_ops *ops = fs->store->ops;
	struct mfs_store_msg *msgs = NULL;
	uint32_t validity = 0;
	unsigned commits;
	size_t n = 0;
	char *mailbox;
	int r = MFS_OK, was_listed;

	pthread_mutex_lock(&fs->refresh);
	pthread_mutex_lock(&fs->lock);
	if (dir->noselect || !dir->linked ||
	    (dir->listed != 0 && time(NULL) - dir->listed < ttl)) {
		pthread_mutex_unlock(&fs->lock);
		goto unlock_refresh;
	}
	mailbox = strdup(dir->mailbox);
	commits = fs->commits;
	was_listed = dir->listed != 0;
	pthread_mutex_unlock(&fs->lock);
	if (mailbox == NULL) {
		r = mfs_err_set(err, MFS_E_NOMEM, "out of memory");
		goto unlock_refresh;
	}
	if (piece != NULL && !was_listed && ops->index_pieces != NULL)
		r = ops->index_pieces(fs->store, mailbox, &validity, &msgs, &n,
				      piece, ctx, err);
	else
		r = ops->index(fs->store, mailbox, &validity, &msgs, &n, err);
	/* out of reach before any listing of this mount: the one kept */
	if (r != MFS_OK && mfs_err_unreachable(r) && !was_listed &&
	    fs->store->ops->kept_index != NULL) {
		struct mfs_err kerr;

		if (fs->store->ops->kept_index(fs->store, mailbox, &validity,
					       &msgs, &n, &kerr) == MFS_OK)
			r = MFS_OK;
	}
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

/* The thread that watches INBOX (fs->watch). */
struct watch {
	pthread_t thread;
	int pipe[2];	   /* owned: written to stop the thread */
	struct mfs_fs *fs; /* borrowed */
	int stop;	   /* guarded by fs->lock */
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
			folder_stale(c);
	pthread_mutex_unlock(&fs->lock);
}

static int watch_stopping(struct watch *w)
{
	int stop;

	pthread_mutex_lock(&w->fs->lock);
	stop = w->stop;
	pthread_mutex_unlock(&w->fs->lock);
	return stop;
}

static void *watch_thread(void *arg)
{
	struct watch *w = arg;
	struct mfs_store *st = w->fs->store;
	struct mfs_err err;
	int changed, failures = 0;

	while (!watch_stopping(w)) {
		mfs_err_clear(&err);
		if (st->ops->watch(st, "INBOX", w->pipe[0], 600, &changed,
				   &err) == MFS_OK) {
			failures = 0;
			if (changed)
				inbox_changed(w->fs);
			continue;
		}
		if (failures++ == 0)
			mfs_log_err("watching INBOX: %s (trying again)",
				    err.msg);
		/* wait a while, or until stopped */
		struct pollfd p = {.fd = w->pipe[0], .events = POLLIN};

		poll(&p, 1, failures < 5 ? 5000 : 60000);
	}
	return NULL;
}

void mfs_fs_start_watch(struct mfs_fs *fs)
{
	struct watch *w;

	if (fs->store->ops->watch == NULL)
		return;
	w = calloc(1, sizeof(*w));
	if (w == NULL || pipe2(w->pipe, O_CLOEXEC) != 0) {
		free(w);
		mfs_log_err("INBOX not watched: %s", strerror(errno));
		return;
	}
	w->fs = fs;
	if (pthread_create(&w->thread, NULL, watch_thread, w) != 0) {
		close(w->pipe[0]);
		close(w->pipe[1]);
		free(w);
		mfs_log_err("INBOX not watched: no thread");
		return;
	}
	fs->watch = w;
}

void mfs_fs_stop_watch(struct mfs_fs *fs)
{
	struct watch *w = fs->watch;
	struct timespec deadline;

	if (w == NULL)
		return;
	pthread_mutex_lock(&fs->lock);
	w->stop = 1;
	pthread_mutex_unlock(&fs->lock);
	if (write(w->pipe[1], "x", 1) < 0)
		mfs_log_err("watch stop: %s", strerror(errno));
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += 2;
	if (pthread_timedjoin_np(w->thread, NULL, &deadline) != 0) {
		/* The server does not answer DONE: leave the thread to the
		 * process exit rather than hold up the unmount; fs->watch
		 * stays for mfs_fs_end_watch(). */
		mfs_log_err("the watching connection did not close in time");
		return;
	}
	close(w->pipe[0]);
	close(w->pipe[1]);
	free(w);
	fs->watch = NULL;
}

void mfs_fs_end_watch(struct mfs_fs *fs)
{
	struct watch *w = fs->watch;

	if (w == NULL || pthread_tryjoin_np(w->thread, NULL) != 0)
		return; /* still waiting for its server: the exit ends it */
	close(w->pipe[0]);
	close(w->pipe[1]);
	free(w);
	fs->watch = NULL;
}

/* --- the journal of offline changes (journal.h) ---------------------------- */

static int journal_cached(void *ctx, const char *folder, uint32_t validity,
			  uint32_t uid, uint64_t size, int *fd)
{
	return msgview_cached(ctx, folder, validity, uid, size, fd);
}

/* A replayed step changed folder (NULL: the folder list) on the server. */
static void journal_changed(void *ctx, const char *folder)
{
	struct mfs_fs *fs = ctx;

	pthread_mutex_lock(&fs->lock);
	if (folder == NULL && fs->folders_listed != 0)
		fs->folders_listed = 1; /* long ago: listed at the next look */
	else if (folder != NULL)
		mailbox_stale(fs, folder);
	pthread_mutex_unlock(&fs->lock);
}

void mfs_fs_start_journal(struct mfs_fs *fs)
{
	struct mfs_journal_hooks h = {
	    .ctx = fs, .cached = journal_cached, .changed = journal_changed};

	if (mfs_journal_start(fs->store, &h) != 0)
		mfs_log_err("offline changes will not be replayed: cannot "
			    "start a thread");
}
