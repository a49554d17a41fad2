/*
 * journal.h - the changes made while the server is out of reach, kept on
 * disk and replayed in order once it answers (README, "Offline").
 *
 * The journal is a store (store.h) in front of the account's own. A write
 * (create, remove, rename, append, move, expunge, store_flags) goes
 * straight to the server as before, unless the server is out of reach
 * (MFS_E_OFFLINE) or earlier steps still wait: then it becomes a step of
 * the journal, on disk (fsync) before the op returns MFS_OK, and a thread
 * replays the steps in order when the server answers again.
 *
 * Until a step is replayed, the journal shows it: listings (index,
 * kept_index) and the folder list (list, mfs_journal_folders) come back
 * with the waiting steps applied. A message moved or appended while
 * offline shows in its new folder under a stand-in UID (MFS_JOURNAL_UID
 * and up) whose bytes come from the appended file, or from the cache (the
 * `cached` hook) for a moved one; after the replay, the next listing shows
 * it under the server's UID.
 *
 * Files under DIR (the account's cache_dir/.journal):
 *   steps        the steps and their progress, one line each, append-only
 *   A<seq>.eml   the bytes of an append step, until it is replayed
 *   failed       one line per step the server refused on replay, with its
 *                reason (the user removes the file to clear the list)
 *
 * A step is marked begun (fsync) before it goes to the server, and done
 * after. A step found begun but not done at the next start may have
 * reached the server: its replay takes "already so" as success (a move
 * whose message is gone from the source, an append whose message is in
 * the folder with the same size and date), so that nothing is doubled.
 */
#ifndef MAILFS_JOURNAL_H
#define MAILFS_JOURNAL_H

#include <stdint.h>
#include <stdio.h>

#include "store.h"

/* Stand-in UIDs of messages that only the journal knows yet. */
#define MFS_JOURNAL_UID 0xF0000000u

/* What the journal asks of the FUSE layer; both may be NULL. */
struct mfs_journal_hooks {
	void *ctx;
	/* A descriptor (*fd, the caller closes it) on the cached raw bytes
	 * of message uid of folder (numbered by validity), size bytes long.
	 * Returns 0, or -1 when they are not cached whole. */
	int (*cached)(void *ctx, const char *folder, uint32_t validity,
		      uint32_t uid, uint64_t size, int *fd);
	/* A replayed step changed folder on the server (NULL: the folder
	 * list): whatever is shown of it is out of date. */
	void (*changed)(void *ctx, const char *folder);
};

/*
 * A store that journals the writes of inner in directory dir (made 0700
 * when missing; locked, so that one mount at a time uses it), with the
 * steps an earlier mount left. It owns inner once it returns; NULL with
 * err set on failure, inner still the caller's. Nothing is replayed before
 * mfs_journal_start().
 */
struct mfs_store *mfs_journal_new(struct mfs_store *inner, const char *dir,
				  struct mfs_err *err);

/* Sets the hooks and starts the replay thread of a journal store (after
 * the process forked to the background); does nothing for any other
 * store. Returns 0, or -1 when the thread cannot start. */
int mfs_journal_start(struct mfs_store *st,
		      const struct mfs_journal_hooks *hooks);

/* Stops the replay (waiting for a step at the server to end) and clears
 * the hooks; does nothing for any other store. */
void mfs_journal_stop(struct mfs_store *st);

/* Sets (or with NULL, clears, waiting for a hook that runs) the hooks of a
 * journal store; does nothing for any other store. */
void mfs_journal_set_hooks(struct mfs_store *st,
			   const struct mfs_journal_hooks *hooks);

/* Applies the waiting steps to a folder list (*folders, *n, replaced; as
 * the list op gives it). For any other store, or on ENOMEM, leaves it as
 * it is. */
void mfs_journal_folders(struct mfs_store *st,
			 struct mfs_store_folder **folders, size_t *n);

/* Lines for the status file: steps waiting, begun and failed. Prints
 * nothing for any other store. */
void mfs_journal_describe(struct mfs_store *st, FILE *out);

/* 1 when no step waits (for tests and status); 1 for any other store. */
int mfs_journal_idle(struct mfs_store *st);

#endif
