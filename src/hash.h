/*
 * hash.h - FNV-1a, 64 bits: the hash of mailfs's in-memory tables (cache
 * index, a message directory's names, nodes) and the checksum of a kept
 * listing (idxcache.c), whose files depend on it never changing.
 */
#ifndef MAILFS_HASH_H
#define MAILFS_HASH_H

#include <stddef.h>
#include <stdint.h>

/* The FNV-1a offset basis: the hash of no bytes, where a hash starts. */
#define MFS_FNV1A_INIT 14695981039346656037ULL

/* h (MFS_FNV1A_INIT, or a hash so far) continued over the len bytes at
 * p. */
uint64_t mfs_fnv1a(uint64_t h, const void *p, size_t len);

/* h continued over the bytes of the string s, its NUL not included. */
uint64_t mfs_fnv1a_str(uint64_t h, const char *s);

#endif
