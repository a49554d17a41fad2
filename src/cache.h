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
 * The cache is bounded (mfs_cache_set_limit; 1 GiB unless set). It keeps an
 * index of its entries in memory, built by one scan of the directory at
 * open, and each entry's last use in the file's mtime, so that the order of
 * use survives a restart. When a new entry takes the total over the bound,
 * the least recently used entries are removed until the total is at most
 * 90% of it. An entry larger than the bound by itself is served but not
 * kept.
 *
 * An entry is never removed while the cache itself is handing it out. A
 * descriptor returned by mfs_cache_get may still be read (or mapped) after
 * its entry has been removed: on Linux an unlinked file stays readable
 * until its last descriptor and mapping are gone, so readers never see a
 * removal; its blocks are freed only then, so the disk may briefly hold
 * more than the bound by what readers still have open.
 *
 * The directory may be shared with another process (a second mount of the
 * same account): entries may vanish at any time and the cache copes (a
 * missing entry is fetched again). Each process bounds the entries it
 * knows of; one written by another process is counted once this process
 * uses it. The subdirectory "outbox" and names starting with '.' at the
 * top belong to others (the outbox spool): the cache never looks at them.
 *
 * When the cache directory cannot be written (full disk, read-only), the
 * bytes go to an anonymous temporary file instead: reads still work, the
 * problem is logged once.
 *
 * Every function is safe to call from several threads at once; fill()
 * runs without the cache's lock held.
 */
#ifndef MAILFS_CACHE_H
#define MAILFS_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

/* The bound when none is set, or 0 is set: 1 GiB. */
#define MFS_CACHE_DEFAULT_LIMIT (1ULL << 30)

struct mfs_cache;

/* Opens (creating, mode 0700) the cache at dir. dir is copied. Scans the
 * directory once: indexes the entries with their sizes and last use,
 * removes temporary files left by a crash (not those a live writer holds),
 * and makes directories 0700 and files 0600. Opening removes no entry: the
 * bound is applied by mfs_cache_set_limit and by the next new entry.
 * dir must belong to the user; a file or directory in it that belongs to
 * someone else is never served, and no entry is opened through a symbolic
 * link.
 * Errors: MFS_E_IO (cannot create or not a directory), MFS_E_ACCESS (dir
 * belongs to another user, or is open to group or others and chmod 0700
 * fails; err->msg names it), MFS_E_NOMEM. */
int mfs_cache_open(const char *dir, struct mfs_cache **cache,
		   struct mfs_err *err);
void mfs_cache_close(struct mfs_cache *cache);

/* Sets the bound of the cache, in bytes of entries; 0 means
 * MFS_CACHE_DEFAULT_LIMIT. When the cache already holds more, the least
 * recently used entries are removed now, down to 90% of the bound. */
void mfs_cache_set_limit(struct mfs_cache *cache, uint64_t bytes);

/* The bytes of the entries the cache knows of (its in-memory total). */
uint64_t mfs_cache_usage(struct mfs_cache *cache);

/* As `expected` below: an entry whose size is not known before it is
 * read (one that checks itself, such as a skeleton's); any size is
 * taken. */
#define MFS_CACHE_ANY_SIZE UINT64_MAX

/* Writes the entry's bytes to fd and sets *len to their count. */
typedef int (*mfs_cache_fill_fn)(void *ctx, int fd, size_t *len,
				 struct mfs_err *err);

/*
 * Returns in *fd a descriptor open for reading on entry `key` (a relative
 * path of components made of [A-Za-z0-9._-], none starting with '.', not
 * containing ".tmp.", not starting with "outbox/"; built by the caller),
 * calling fill() to create it when it is missing or its size is not
 * `expected` (or MFS_CACHE_ANY_SIZE: whatever its size). A hit counts as a use of the entry. The caller owns *fd.
 * Errors: whatever fill() returns; MFS_E_IO when the key is not valid, the
 * filled size is not `expected` (the bytes are not trusted then) or no
 * temporary file can be made at all.
 */
int mfs_cache_get(struct mfs_cache *cache, const char *key, uint64_t expected,
		  mfs_cache_fill_fn fill, void *ctx, int *fd,
		  struct mfs_err *err);

/* *fd open for reading on entry key when it exists with size expected
 * (or MFS_CACHE_ANY_SIZE), counted as a use; the caller owns *fd.
 * Returns 0, or -1 when there is no such entry (nothing is made). */
int mfs_cache_take(struct mfs_cache *cache, const char *key,
		   uint64_t expected, int *fd);

/* 1 when entry key exists with size expected (not counted as a use). */
int mfs_cache_has(struct mfs_cache *cache, const char *key, uint64_t expected);

/* 1 when the cache's index holds entry key with size expected: what
 * mfs_cache_has() says, without a look at the disk, so it may be wrong
 * when another process shares the directory (a hint, never a promise that
 * mfs_cache_get() will not fill). */
int mfs_cache_known(struct mfs_cache *cache, const char *key,
		    uint64_t expected);

/* A temporary file in the cache for an entry still to come: *fd open for
 * writing, *tmp its path (malloc'd, the caller frees it). Errors: MFS_E_IO,
 * MFS_E_NOMEM. */
int mfs_cache_tmp(struct mfs_cache *cache, int *fd, char **tmp,
		  struct mfs_err *err);

/* Closes fd and renames the temporary file tmp into place as entry key
 * when its size is expected (and the key valid, and the entry not larger
 * than the bound); otherwise removes it. Returns 0 when the entry is in
 * place, -1 otherwise. */
int mfs_cache_commit(struct mfs_cache *cache, const char *key, int fd,
		     const char *tmp, uint64_t expected);

/* Appends to buf (of size len) the lowercase hex of s: a safe key
 * component for any string. Returns 0, or -1 when buf is too small. */
int mfs_cache_key_hex(const char *s, char *buf, size_t len);

#endif
