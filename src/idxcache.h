/*
 * idxcache.h - the on-disk copy of one folder's listing.
 *
 * After a full listing of a folder the IMAP driver keeps the result in a
 * file, with the state of the folder it was taken in (UIDVALIDITY, UIDNEXT,
 * EXISTS, HIGHESTMODSEQ). On the next listing the driver compares that state
 * with what EXAMINE reports and, when nothing changed, serves the file
 * instead of fetching every message again. This module only reads and
 * writes the file; when to trust it is the driver's decision.
 *
 * A file lives under the account's cache_dir in ".index/" (a name the
 * message cache leaves alone), is named by the folder, and holds, in this
 * order, little-endian:
 *
 *   magic "MFSIDX\r\n", u32 version, u32 key length, the key bytes,
 *   u32 UIDVALIDITY, u32 UIDNEXT, u32 EXISTS, u32 count, u64 HIGHESTMODSEQ,
 *   count records of
 *     u32 uid, u32 flags, u64 size, i64 date,
 *     u32 from length, from bytes, u32 subject length, subject bytes,
 *   u64 FNV-1a checksum of every byte before it, and nothing after.
 *
 * The key (chosen by the caller: account and folder) is checked on reading,
 * so a file written for another folder or account is never served. Records
 * come in strictly increasing UID order. A file is written to a temporary
 * name, synced and renamed into place, so a reader sees the old file or
 * the new one, never a torn one; a file with another version, another key,
 * a wrong length or a wrong checksum is refused. Directories are created
 * 0700 and files 0600; a file or directory that belongs to another user,
 * or a symbolic link in their place, is refused.
 *
 * Reading streams the file: the header first (mfs_idx_open), so that the
 * caller can compare the state before reading any message, then the
 * messages (mfs_idx_read) straight into the returned array.
 */
#ifndef MAILFS_IDXCACHE_H
#define MAILFS_IDXCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "store.h"

#define MFS_IDX_VERSION 1

/* The state of a folder when its listing was taken. */
struct mfs_idx_head {
	uint32_t validity; /* UIDVALIDITY */
	uint32_t uidnext;  /* UIDNEXT; 0 when the server did not say */
	uint32_t exists;   /* EXISTS */
	uint64_t modseq;   /* HIGHESTMODSEQ; 0 without CONDSTORE */
	uint32_t count;	   /* messages in the file (set by mfs_idx_save) */
};

struct mfs_idx_reader;

/* The file of folder under cache_dir: cache_dir/.index/ followed by the
 * folder name in hex, or, for a name too long for a file name, "h" and a
 * hash of it (the key inside the file tells two such names apart).
 * Returns a malloc'd path, or NULL on ENOMEM. */
char *mfs_idx_path(const char *cache_dir, const char *folder);

/*
 * Writes the listing msgs[0..n) (strictly increasing UIDs; uidl is not
 * kept) with state head (its count is ignored: n is written) and key to
 * path, replacing any file there. Creates the directory of path (and its
 * parent) with mode 0700 when missing.
 * Errors: MFS_E_INVAL (UIDs not strictly increasing, a string too long),
 * MFS_E_IO (cannot create, write or rename), MFS_E_NOMEM.
 */
int mfs_idx_save(const char *path, const char *key,
		 const struct mfs_idx_head *head,
		 const struct mfs_store_msg *msgs, size_t n,
		 struct mfs_err *err);

/*
 * The same file written as the listing comes: mfs_idx_out_open writes
 * the header of a listing of n messages to a temporary file beside path,
 * mfs_idx_out_add each message (in UID order), and mfs_idx_out_commit
 * puts the file in place when exactly n came, in order and each short
 * enough (else nothing is kept, and the commit says why). Every writer
 * ends with a commit or mfs_idx_out_abort, which frees it.
 * Errors: as mfs_idx_save.
 */
struct mfs_idx_out;
int mfs_idx_out_open(const char *path, const char *key,
		     const struct mfs_idx_head *head, size_t n,
		     struct mfs_idx_out **out, struct mfs_err *err);
void mfs_idx_out_add(struct mfs_idx_out *o, const struct mfs_store_msg *m);
int mfs_idx_out_commit(struct mfs_idx_out *o, struct mfs_err *err);
void mfs_idx_out_abort(struct mfs_idx_out *o);

/*
 * Opens the file at path and reads its header into *head; *rd then reads
 * the messages (mfs_idx_read) and must be closed with mfs_idx_close.
 * Errors: MFS_E_NOENT (no file), MFS_E_IO (unreadable, a symbolic link,
 * not the user's own, not a listing, other version, other key, cut short),
 * MFS_E_NOMEM.
 */
int mfs_idx_open(const char *path, const char *key, struct mfs_idx_head *head,
		 struct mfs_idx_reader **rd, struct mfs_err *err);

/*
 * Reads the head->count messages of an opened file and checks the
 * checksum and the end of the file. On success *msgs (malloc'd, *n of
 * them, free with mfs_store_msgs_free()) is the listing; on failure nothing
 * is returned. Call it at most once per reader.
 * Errors: MFS_E_IO (cut short, corrupted, trailing bytes, UIDs out of
 * order), MFS_E_NOMEM.
 */
int mfs_idx_read(struct mfs_idx_reader *rd, struct mfs_store_msg **msgs,
		 size_t *n, struct mfs_err *err);

/* Closes a reader; NULL is ignored. */
void mfs_idx_close(struct mfs_idx_reader *rd);

#endif
