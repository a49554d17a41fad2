/*
 * fs.h - the FUSE layer: maps kernel requests on the tree (node.h) to store
 * operations (store.h) and the cache (cache.h). It knows no protocol.
 *
 * Threads: libfuse's worker threads call the handlers. One tree lock guards
 * the node table; it is never held across network or disk I/O. Listings
 * are refreshed by the thread that needs them, one refresh at a time.
 */
#ifndef MAILFS_FS_H
#define MAILFS_FS_H

#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>

#include "cache.h"
#include "config.h"
#include "store.h"

struct mfs_fs;

/* A filesystem over store and cache (both borrowed; they must outlive it).
 * Returns NULL on ENOMEM. */
struct mfs_fs *mfs_fs_new(const struct mfs_account *acct,
			  struct mfs_store *store, struct mfs_cache *cache);
void mfs_fs_free(struct mfs_fs *fs);

struct mfs_spool;

/* Gives the filesystem an outbox/ directory backed by spool (borrowed; it
 * must outlive fs). Call before mfs_fs_prepare(). */
void mfs_fs_set_spool(struct mfs_fs *fs, struct mfs_spool *spool);

/* The callback the spool's Sent-copy thread calls for a message the server
 * accepted: on stores that can append, a copy goes to the Sent folder
 * (sent_folder, else the folder with SPECIAL-USE \Sent), marked \Seen. arg
 * is the fs. Returns 0 when the copy is made or cannot ever be (logged),
 * -1 when the IMAP server could not be reached or did not answer: the
 * spool keeps the copy and tries again later. */
int mfs_fs_sent_copy(void *arg, const char *name, int fd, off_t size);

/* Watches INBOX with the store's watch op (store.h: IDLE on a connection
 * the driver keeps for it, or polling) from a thread of its own, so that
 * new or removed messages are listed again at the next look without
 * waiting for the listing to age. Does nothing for a store without watch.
 * Call after daemonizing. */
void mfs_fs_start_watch(struct mfs_fs *fs);

/* Stops the watch thread (within a few seconds even when the server does
 * not answer). Safe when not started. */
void mfs_fs_stop_watch(struct mfs_fs *fs);

/* Starts replaying the changes kept while offline (journal.h), when the
 * store is a journal; after fuse_daemonize(). mfs_fs_free() stops it. */
void mfs_fs_start_journal(struct mfs_fs *fs);

/* Starts the thread that fetches the messages of the folders the account's
 * `prefetch` setting names into the cache (prefetch.c), when it has one;
 * after fuse_daemonize(). */
void mfs_fs_start_prefetch(struct mfs_fs *fs);
/* Stops it; the batch on its way is finished first. */
void mfs_fs_stop_prefetch(struct mfs_fs *fs);

/* IMAP: logs in once, before mounting, so that a bad login or an
 * unreachable server is reported on the terminal, and shows INBOX; the
 * other folders are listed when first needed. POP3: shows INBOX (the
 * first use logs in). Errors: those of the store's connect or list. */
int mfs_fs_prepare(struct mfs_fs *fs, struct mfs_err *err);

/* What fs holds in memory (for tests and the log): nodes; views of
 * messages (their bytes and layout, see msgview.c), how many of them are
 * loaded (at most a few unless in use), and the file mappings they hold. */
struct mfs_fs_mem {
	unsigned long nodes, views, loaded, mapped;
};
void mfs_fs_mem(struct mfs_fs *fs, struct mfs_fs_mem *m);

/* The handlers to give to fuse_session_new() with fs as userdata. */
extern const struct fuse_lowlevel_ops mfs_fs_ops;

#endif
