/*
 * sentq.h - the Sent-copy queue of the outbox spool: the prepared form of
 * each message the server accepted, kept on disk in SPOOL/.sent/ until
 * the sent callback (spool.h, mfs_spool_sent_fn) has made its Sent copy,
 * made in order by a thread of its own. spool.c owns the queue and is
 * its only user; "Sent copies" in spool.h says what the files are and
 * what the user sees.
 *
 * The queue is counted by references (the owner's, and its thread's while
 * it runs), so that a thread still inside the callback when
 * mfs_sentq_stop() gives up on it can finish that copy after the owner
 * has closed the queue.
 */
#ifndef MAILFS_SENTQ_H
#define MAILFS_SENTQ_H

#include <sys/types.h>

#include "error.h"
#include "spool.h"

/* A spool id (hex time, pid, counter) with its NUL: what names a copy. */
#define MFS_SPOOL_ID_LEN 32

struct mfs_sentq_opts {
	mfs_spool_sent_fn sent; /* makes a copy; never NULL */
	void *sent_arg;		/* borrowed: passed to sent */
	int backoff_min;	/* seconds before the first retry */
	int backoff_max;	/* cap of the doubling backoff */
	int lifetime;		/* seconds from acceptance until a copy that
				   keeps failing is dropped */
};

struct mfs_sentq; /* opaque */

/*
 * Opens (creating it, 0700) SPOOL/.sent under spool_dirfd (spool_dir
 * names it in messages) and loads the copies an earlier run left there,
 * in order; drops what a stop half way left (an ID.name alone, *.new).
 * Errors: MFS_E_IO (cannot create or open), MFS_E_ACCESS (another user's
 * directory, or open to others and cannot be made private), MFS_E_NOMEM.
 */
int mfs_sentq_open(int spool_dirfd, const char *spool_dir,
		   const struct mfs_sentq_opts *opts, struct mfs_sentq **out,
		   struct mfs_err *err);

/*
 * Keeps the prepared message prep (an O_TMPFILE or any file, size bytes)
 * as the copy id, named name in outbox/, durably (ID.name first, then
 * ID.eml: a link of prep, or a copy of it), and queues it. Returns 0, or
 * -1 (errno set) when it could not be kept on disk.
 */
int mfs_sentq_keep(struct mfs_sentq *q, const char *id, const char *name,
		   int prep, off_t size);

/* Starts the thread that makes the copies (or lets one left running by a
 * stop go on). Returns 0, or -1 when the thread cannot be created. */
int mfs_sentq_start(struct mfs_sentq *q);

/*
 * Asks the thread to end within grace seconds: copies due meanwhile are
 * made, none after the callback has failed; waits that long at most.
 * Returns 1 when the thread is still inside the callback then (it ends
 * after that copy), else 0. Safe when not started.
 */
int mfs_sentq_stop(struct mfs_sentq *q, int grace);

/* Makes every copy that is due on the calling thread, in order, until the
 * callback fails for one; a copy the thread is making is left to it.
 * Returns the number made. */
int mfs_sentq_run(struct mfs_sentq *q);

/* Drops the owner's reference: the queue is freed now, or by its thread
 * when that ends. NULL is fine. */
void mfs_sentq_close(struct mfs_sentq *q);

#endif
