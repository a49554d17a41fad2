/*
 * folderlist.h - the on-disk copy of the account's folder list, so that a
 * mount without the server still shows its folders (docs/DESIGN.md,
 * "Offline").
 *
 * The file is cache_dir/.index/folders, a text file written whole (a
 * temporary name, fsync, rename; statefile.h), 0600 in a directory 0700:
 *
 *   mailfs folders 1
 *   KEY
 *   NOSELECT SENT DELIM SHOWN NAME      (one line per folder)
 *
 * KEY (escaped as statefile.h does) ties the file to one account: a file
 * with another key is not served. DELIM is the delimiter's byte as a
 * decimal number (0: none), SHOWN as store.h's mfs_store_folder; NAME is
 * escaped. A file that does not parse is refused whole.
 */
#ifndef MAILFS_FOLDERLIST_H
#define MAILFS_FOLDERLIST_H

#include <stddef.h>

#include "error.h"
#include "store.h"

/* Writes folders[0..n) with key under cache_dir, replacing the file.
 * Errors: MFS_E_IO, MFS_E_NOMEM. */
int mfs_folderlist_save(const char *cache_dir, const char *key,
			const struct mfs_store_folder *folders, size_t n,
			struct mfs_err *err);

/* Reads the list kept under cache_dir for key into *folders (free with
 * mfs_store_folders_free) and *n. Errors: MFS_E_NOENT (none kept),
 * MFS_E_IO (unreadable, another key, not a folder list), MFS_E_NOMEM. */
int mfs_folderlist_load(const char *cache_dir, const char *key,
			struct mfs_store_folder **folders, size_t *n,
			struct mfs_err *err);

#endif
