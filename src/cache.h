/*
 * cache.h - the on-disk cache of message bytes.
 *
 * Entries are files under the account's cache_dir (created 0700; files
 * 0600), named by a key the caller builds from stable identities (folder,
 * UIDVALIDITY, UID), so an entry never changes once written. An entry is
 * written to a temporary file and renamed into place, so a crash never
 * leaves a torn entry; an entry whose size is not the expected one is
 * fetched again.
 *
 * When the cache directory cannot be written (full disk, read-only), the
 * bytes go to an anonymous temporary file instead: reads still work, the
 * problem is logged once.
 */
#ifndef MAILFS_CACHE_H
#define MAILFS_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

struct mfs_cache;

/* Opens (creating, mode 0700) the cache at dir. dir is copied.
 * Errors: MFS_E_IO (cannot create or not a directory), MFS_E_NOMEM. */
int mfs_cache_open(const char *dir, struct mfs_cache **cache,
		   struct mfs_err *err);
void mfs_cache_close(struct mfs_cache *cache);

/* Writes the entry's bytes to fd and sets *len to their count. */
typedef int (*mfs_cache_fill_fn)(void *ctx, int fd, size_t *len,
				 struct mfs_err *err);

/*
 * Returns in *fd a descriptor open for reading on entry `key` (a relative
 * path of components made of [A-Za-z0-9._-], built by the caller), calling
 * fill() to create it when it is missing or its size is not `expected`.
 * Errors: whatever fill() returns; MFS_E_IO when the filled size is not
 * `expected` (the bytes are not trusted then) or no temporary file can be
 * made at all.
 */
int mfs_cache_get(struct mfs_cache *cache, const char *key, uint64_t expected,
		  mfs_cache_fill_fn fill, void *ctx, int *fd,
		  struct mfs_err *err);

/* 1 when entry key exists with size expected. */
int mfs_cache_has(struct mfs_cache *cache, const char *key, uint64_t expected);

/* A temporary file in the cache for an entry still to come: *fd open for
 * writing, *tmp its path (malloc'd, the caller frees it). Errors: MFS_E_IO,
 * MFS_E_NOMEM. */
int mfs_cache_tmp(struct mfs_cache *cache, int *fd, char **tmp,
		  struct mfs_err *err);

/* Closes fd and renames the temporary file tmp into place as entry key
 * when its size is expected; otherwise removes it. Returns 0 when the
 * entry is in place. */
int mfs_cache_commit(struct mfs_cache *cache, const char *key, int fd,
		     const char *tmp, uint64_t expected);

/* Appends to buf (of size len) the lowercase hex of s: a safe key
 * component for any string. Returns 0, or -1 when buf is too small. */
int mfs_cache_key_hex(const char *s, char *buf, size_t len);

#endif
