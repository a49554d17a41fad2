/*
 * fsint.h - what the rooms of the FUSE layer share, and nothing else
 * includes:
 *
 *   fs.c       the FUSE handlers, open files, written files, attributes
 *   folders.c  the folder tree, folder listings, new mail (IDLE)
 *   msgview.c  what a message shows: its views (whole, or a skeleton with
 *              holes), decoding into the cache, fetch-ahead, cache keys
 *   outbox.c   outbox/ and outbox/.status/ over the spool (spool.h)
 *   search.c   FOLDER/.search/QUERY/ and MOUNT/.search/QUERY/ (query.h)
 *
 * One lock, fs->lock, guards the node tree, every node and what hangs off
 * a node (views, uploads, sent files) and the open handles. Functions
 * below say when the caller holds it; none holds it across network I/O:
 * those that may block drop it and take it again, so a node they were
 * given must be held (mfs_nodes_hold) by the caller.
 */
#ifndef MAILFS_FSINT_H
#define MAILFS_FSINT_H

#include <pthread.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>

#include "fs.h"

#include "cache.h"
#include "config.h"
#include "error.h"
#include "node.h"
#include "spool.h"
#include "store.h"

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
	uint64_t folders_kept; /* hash of the folder list kept on disk */
	unsigned gen;
	char delim; /* the server's hierarchy delimiter, '\0' if flat */
	char *root_prefix; /* owned: server name prefix of a folder made at
			    * the root (the personal namespace), or NULL
			    * until known */
	char *sent_mailbox; /* owned: SPECIAL-USE \Sent, else a folder
			     * named as Sent folders usually are, or NULL */
	struct mfs_spool *spool;  /* borrowed, or NULL: no outbox/ */
	struct mfs_node *outbox;  /* outbox/, or NULL */
	struct watch *watch;	  /* owned, or NULL */
	struct prefetch *prefetch; /* owned, or NULL */
	struct handle *handles;	  /* open files (fs->lock) */
	struct dir_snap *snaps;	  /* open directories (fs->lock) */
	/* signalled when a listing still coming (fs.c, opendir_coming) has
	 * shown more of a folder, or has ended */
	pthread_cond_t snap_cond;
	uid_t uid;
	gid_t gid;
	/* The run of fetch-aheads going on (fs->lock): in which folder, how
	 * many messages the last one asked for, and when one last started
	 * or ended. */
	uint64_t ahead_folder;
	size_t ahead_window;
	time_t ahead_last;
	/* The run reads what fetch-ahead leaves out of a message of a few
	 * hundred kB (its message.eml, an attachment): such messages come
	 * whole again until the next run (msgview.c, ahead_skeletal). */
	int ahead_whole;
	/* The batches of fetch-ahead on their threads, and those a read in
	 * a row may still follow (msgview.c; fs->lock); ahead_cond is
	 * signalled when a message of one has come or a batch has ended. */
	struct ahead *aheads;
	pthread_cond_t ahead_cond;
	/* Files written into folders committed so far (fs->lock); a listing
	 * that began after commit number k shows the messages of commits up
	 * to k, so their written names can go (folder_merge). */
	unsigned commits;
	/* Views of messages that hold a mapping or a layout (msgview.c;
	 * fs->lock): most recently used first, at most VIEWS_MAX of them
	 * unless in use. views counts the views of messages, loaded or not;
	 * views_freed those let go since the last malloc_trim(). */
	struct view *views_new, *views_old;
	unsigned long views, views_loaded, views_freed;
	/* Bytes of decoded files held in memory by open handles (msgview.c,
	 * MEM_PARTS_MAX; fs->lock). */
	size_t part_mem;
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

/* Which message to fetch: copied out of the tree under the lock. */
struct msg_ref {
	char *mailbox; /* owned */
	uint32_t validity;
	struct mfs_store_msg msg; /* uid, size and an owned uidl copy */
};

/* An open file. */
struct handle {
	struct mfs_node *node; /* held */
	int fd;		       /* owned, or -1 when the content is buf */
	off_t base;	       /* where the file starts in fd */
	uint64_t size;	       /* bytes readable from fd at base */
	char *buf;	       /* owned: content (flags, a small decoded file),
				* or what was written */
	size_t len, cap;
	size_t mem; /* of buf, the bytes counted in fs->part_mem */
	/* flags: written since the last flush. A new or outbox file: this
	 * handle made, truncated or wrote it, and may commit it. */
	int dirty;
	int writer;    /* MFS_F_NEW: counted in the upload's writers */
	int committed; /* what it wrote went to the server: no more writes */
	int wopen;     /* MFS_F_OUTBOX: fd is open for writing */
	pid_t opener;  /* the process that opened it (not the thread) */
	struct handle *prev, *next; /* in fs->handles */
};

/* --- fs.c ----------------------------------------------------------------- */

/* Logs err (but ENOENT) and replies with its errno. */
void reply_err(fuse_req_t req, const struct mfs_err *err);
/* Replies to a create with the new node n and its open handle h, which it
 * registers. Called with the lock held; releases it. */
void reply_create(fuse_req_t req, struct mfs_fs *fs, struct mfs_node *n,
		  struct handle *h, struct fuse_file_info *fi);
/* The process (not the thread) that made req. */
pid_t req_process(fuse_req_t req);

/* May h write (or truncate) its new or outbox file now? 0, or EPERM once
 * what it wrote was committed. Caller holds the lock. */
int may_write(struct mfs_fs *fs, struct handle *h);
/* Is a chown (to_set, attr) one a written file takes: to the mounting
 * user only? */
int owner_ok(const struct mfs_fs *fs, const struct stat *attr, int to_set);

/* Fetches into the cache the messages msgs[0..n) of folder dir that it
 * does not hold, in one command (prefetch.c). Caller holds the lock, dir
 * and msgs; the lock is dropped meanwhile. Errors as the store's
 * fetch_many. */
int msgview_fetch_into_cache(struct mfs_fs *fs, struct mfs_node *dir,
			     struct mfs_node **msgs, size_t n,
			     struct mfs_err *err);

/* Waits for the threads of fetch-ahead to end, and frees their batches.
 * Caller does not hold the lock; no request runs any more. */
void msgview_ahead_stop(struct mfs_fs *fs);

/* A descriptor (*fd) on the cached raw bytes of message uid of mailbox,
 * size bytes long: the journal's `cached` hook. Takes no lock. Returns 0,
 * or -1 when they are not cached whole. */
int msgview_cached(struct mfs_fs *fs, const char *mailbox, uint32_t validity,
		   uint32_t uid, uint64_t size, int *fd);

/* Frees the watch that mfs_fs_stop_watch() left to a thread that did not
 * stop in time, when that thread has ended since. */
void mfs_fs_end_watch(struct mfs_fs *fs);

/* --- state.c --------------------------------------------------------------- */

/* Adds .mailfs/ and .mailfs/status under the root. Caller holds the lock. */
void state_nodes_add(struct mfs_fs *fs);
/* The text of .mailfs/status (n), malloc'd, or NULL (err set). */
char *state_text(struct mfs_fs *fs, const struct mfs_node *n,
		 struct mfs_err *err);

/* --- folders.c ------------------------------------------------------------- */

/* Lists the folders again when the last LIST is older than ttl seconds.
 * Caller does not hold the lock. */
int refresh_folders(struct mfs_fs *fs, int ttl, struct mfs_err *err);
/* Marks dir's listing out of date: it is listed again at the next look,
 * and kept, like any earlier listing, when that fails. Caller holds the
 * lock. */
void folder_stale(struct mfs_node *dir);
/* folder_stale() of the folder whose server name is mailbox, if shown.
 * Caller holds the lock. */
void mailbox_stale(struct mfs_fs *fs, const char *mailbox);
/* The server name of a folder `name` (modified UTF-7) at the root: in the
 * personal namespace. malloc'd, or NULL on ENOMEM. Caller holds the lock. */
char *root_mailbox(const struct mfs_fs *fs, const char *name);
/* Lists folder dir again when its listing is older than ttl seconds.
 * The caller holds a reference on dir but not the lock. */
int refresh_folder(struct mfs_fs *fs, struct mfs_node *dir, int ttl,
		   struct mfs_err *err);
/* As refresh_folder(); when dir was never listed and the store can, piece
 * (see mfs_index_piece_fn, store.h) is called with each part of the
 * listing as it comes, without the lock, before the listing is merged. */
int refresh_folder_pieces(struct mfs_fs *fs, struct mfs_node *dir, int ttl,
			  mfs_index_piece_fn piece, void *ctx,
			  struct mfs_err *err);
/* Shows listing entry m (copied) in folder dir, as a listing still
 * coming does ahead of its end: *added is the node made, or NULL when dir
 * shows that message already. Returns 0, or -1 when it cannot (memory is
 * short, or m is a POP3 entry). Caller holds the lock. */
int folder_show(struct mfs_fs *fs, struct mfs_node *dir,
		const struct mfs_store_msg *m, struct mfs_node **added);

/* Adds nodes for the messages msgs (listing entries, such as a search's
 * matches) that folder dir does not show yet, without listing it: the
 * rest of dir stays as it was. Takes the names it uses out of msgs.
 * Caller holds the lock. Returns 0, or -1 on ENOMEM. */
int folder_add_some(struct mfs_fs *fs, struct mfs_node *dir,
		    uint32_t validity, struct mfs_store_msg *msgs, size_t n);

/* The folder node for the server name prefix under dir: an existing
 * child with that mailbox, else a new one under the display name. Caller
 * holds the lock. */
struct mfs_node *folder_child(struct mfs_fs *fs, struct mfs_node *dir,
			      const char *display, const char *prefix);

/* --- msgview.c ------------------------------------------------------------- */

/* Adds message directory msg's flags file, which needs no byte of the
 * message, unless it has one. Caller holds the lock. Returns 0, or -1 on
 * ENOMEM. */
int flags_node_add(struct mfs_fs *fs, struct mfs_node *msg);

/* A message's view (its priv). */
struct view;
void view_free(struct view *v);
/* After the kernel forgot a node of message msg (held by the caller):
 * when no file of msg is open or known to the kernel and nobody uses its
 * view, the view goes and so do the nodes of msg's directory (made again
 * at the next look). Caller holds the lock. */
void view_forget(struct mfs_fs *fs, struct mfs_node *msg);
/* Gives memory freed by view_forget() back to the system once enough of
 * it has been. Caller does not hold the lock. */
void views_trim_memory(struct mfs_fs *fs);
/* The message node above n (n itself when it is one), or NULL. */
struct mfs_node *message_of(struct mfs_node *n);
/* Copies what a fetch needs of msg. Caller holds the lock. Returns 0, or
 * -1 on ENOMEM. */
int msg_ref_take(const struct mfs_node *msg, struct msg_ref *r);
void msg_ref_free(struct msg_ref *r);
/* Makes the children of a message or part directory, fetching the message
 * when needed. Caller holds the lock and a hold on dir. */
int dir_ensure(struct mfs_fs *fs, struct mfs_node *dir, struct mfs_err *err);
/* The text of a flags file. malloc'd, or NULL. */
char *flags_text(unsigned flags);
/* Brings the size of msg's flags file in line with msg->msg.flags. */
void flags_node_update(struct mfs_node *msg);
/* Opens part file n (MFS_F_PART) for reading into h. Caller holds the
 * lock and a hold on n. */
int open_part(struct mfs_fs *fs, struct mfs_node *n, struct handle *h,
	      struct mfs_err *err);
/* Whether part_size() of n would fetch: a file of a skeleton whose size
 * only its hole or the whole message can tell. Caller holds the lock. */
int size_needs_fetch(struct mfs_node *n);
/* Brings the size of part file n up to date. Caller holds the lock and a
 * hold on n. */
int part_size(struct mfs_fs *fs, struct mfs_node *n, struct mfs_err *err);

/* --- outbox.c -------------------------------------------------------------- */

/* Brings outbox/ and outbox/.status/ in line with the spool. Caller holds
 * the lock. */
int outbox_sync(struct mfs_fs *fs, struct mfs_err *err);
/* The text of outbox/.status/NAME (node n). malloc'd; NULL with err set.
 * Caller holds the lock. */
char *outbox_status_text(struct mfs_fs *fs, const struct mfs_node *n,
			 struct mfs_err *err);
/* Opens outbox/ file n into h (see outbox.c). Caller holds the lock. */
int open_outbox(struct mfs_fs *fs, struct mfs_node *n, int writing, int trunc,
		struct handle *h, struct mfs_err *err);
/* The first write through an outbox/ handle opened for writing: 0 or an
 * errno. Caller holds the lock. */
int outbox_reopen(struct mfs_fs *fs, struct handle *h);
/* Submits what h wrote. Called with the lock held; drops it while the
 * spool sends. */
int outbox_commit(struct mfs_fs *fs, struct handle *h, struct mfs_err *err);
/* create in outbox/. Called with the lock held; releases it and
 * replies. */
void outbox_create(fuse_req_t req, struct mfs_fs *fs, struct mfs_node *dir,
		   const char *name, struct fuse_file_info *fi);


/* The ops of outbox/ files in fs.c's table of node kinds: called with the
 * lock held; sizes and setattr as in "written files" (fs.c). */
int outbox_file_writable(const struct mfs_fs *fs, const struct mfs_node *n);
int outbox_file_size(struct mfs_fs *fs, struct mfs_node *n,
		     struct mfs_err *err);
int outbox_setattr(struct mfs_fs *fs, struct mfs_node *n, struct handle *h,
		   const struct stat *attr, int to_set);
int outbox_unlink(struct mfs_fs *fs, struct mfs_node *dir, struct mfs_node *n,
		  const char *name);
int outbox_rename(struct mfs_fs *fs, struct mfs_node *dir, struct mfs_node *n,
		  struct mfs_node *ndir, const char *newname);

/* --- search.c -------------------------------------------------------------- */

/* The directory of searches under the root and under every folder. */
#define SEARCH_DIR ".search"

/* The .search directory of dir (the root or a folder), made at its first
 * lookup; it is never in a listing of dir. NULL on ENOMEM. Caller holds
 * the lock. */
struct mfs_node *search_dir(struct mfs_fs *fs, struct mfs_node *dir);
/* Where link n points: "../../NAME" in FOLDER/.search/QUERY/, with one
 * "../" more and the folder's path per folder level below
 * MOUNT/.search/QUERY/. malloc'd; NULL on ENOMEM. Caller holds the
 * lock. */
char *search_link_target(const struct mfs_node *n);

/* The ops of the search kinds in fs.c's table, called with the lock held.
 * .search/: a name looked up (or made by mkdir) becomes a query
 * directory when it parses, else EINVAL with the reason in err (the
 * log). A query directory (or a folder directory in it) is searched when
 * listed after `refresh` seconds or a touch, or at its first lookup;
 * rmdir forgets it. */
struct mfs_node *search_miss(struct mfs_fs *fs, struct mfs_node *dir,
			     const char *name, struct mfs_err *err);
int search_mkdir(struct mfs_fs *fs, struct mfs_node *dir, const char *name,
		 struct mfs_node **made);
int search_sync(struct mfs_fs *fs, struct mfs_node *dir, int opening,
		struct mfs_err *err);
int search_setattr(struct mfs_fs *fs, struct mfs_node *n, struct handle *h,
		   const struct stat *attr, int to_set);
int search_rmdir(struct mfs_fs *fs, struct mfs_node *n);
/* rm -r of a query: unlink of a link and rmdir of a folder directory in
 * it succeed and do nothing (the rmdir of the query forgets them). */
int search_unlink(struct mfs_fs *fs, struct mfs_node *dir, struct mfs_node *n,
		  const char *name);
int search_rmdir_hitdir(struct mfs_fs *fs, struct mfs_node *n);

#endif
