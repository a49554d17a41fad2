/*
 * drivers.c - the store of an account (see drivers.h).
 */
#include "drivers.h"

#include <stdlib.h>

#include "imap.h"
#include "pool.h"
#include "pop3.h"
#include "smtp.h"

/* IMAP: the main connection, connections - 1 readers and a watcher, each
 * connecting when first used. */
static struct mfs_store *imap_open(const struct mfs_account *acct,
				   const char *password)
{
	size_t n = acct->connections > 1 ? (size_t)acct->connections - 1 : 0;
	struct mfs_store *main, *watcher, **readers;
	size_t i;

	main = mfs_imap_store_new(acct, password);
	if (main == NULL)
		return NULL;
	readers = calloc(n ? n : 1, sizeof(*readers));
	if (readers == NULL) {
		main->ops->free(main);
		return NULL;
	}
	for (i = 0; i < n; i++) {
		readers[i] = mfs_imap_store_new(acct, password);
		if (readers[i] == NULL)
			break;
	}
	/* fewer readers than asked for when memory is short */
	watcher = mfs_imap_store_new(acct, password);
	return mfs_pool_new(main, readers, i, watcher);
}

struct mfs_store *mfs_store_open(const struct mfs_account *acct,
				 const char *password)
{
	switch (acct->store.proto) {
	case MFS_PROTO_IMAP:
		return imap_open(acct, password);
	case MFS_PROTO_POP3:
		return mfs_pop3_store_new(acct, password);
	default:
		return NULL;
	}
}

int mfs_submission_check(const struct mfs_account *acct,
			 const char *password)
{
	return mfs_smtp_check(acct, password);
}
