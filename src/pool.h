/*
 * pool.h - one store over several connections of a driver (store.h).
 *
 * A driver that can open more than one connection to its server (IMAP)
 * gives the pool a main store, readers and a watcher, each a connection of
 * its own. Listings, writes and everything else go to the main store;
 * message bytes (fetch, fetch_many, skeleton, fetch_section) go to the main
 * store when no fetch uses it, else to a reader no fetch uses, waiting
 * while all are busy, so that parallel reads do not queue behind one
 * connection or a listing; watch goes to the watcher, whose connection is
 * busy while it waits.
 */
#ifndef MAILFS_POOL_H
#define MAILFS_POOL_H

#include <stddef.h>

#include "store.h"

/* A store over main, readers[0..n) and watcher (NULL: no watch). It owns
 * them all and the readers array from now on (also on failure, when it
 * frees them). Returns NULL on ENOMEM. */
struct mfs_store *mfs_pool_new(struct mfs_store *main,
			       struct mfs_store **readers, size_t n,
			       struct mfs_store *watcher);

#endif
