/*
 * drivers.h - the store of an account, whatever its protocol: the one
 * place that knows which drivers there are (imap.h, pop3.h; smtp.h for
 * the submission server's check).
 */
#ifndef MAILFS_DRIVERS_H
#define MAILFS_DRIVERS_H

#include "config.h"
#include "store.h"

/*
 * The store of acct (store.h), with the connections its driver keeps: on
 * IMAP a pool (pool.h) of `connections` connections that fetch message
 * bytes, the first of which also lists and writes, and one more that
 * watches INBOX (IDLE); on POP3 one connection. Nothing connects yet. acct
 * and password are borrowed and must outlive the store. NULL on ENOMEM or
 * for an account without a store.
 */
struct mfs_store *mfs_store_open(const struct mfs_account *acct,
				 const char *password);

/* --check of the account's submission server: connects, logs in, prints
 * what it offers (smtp.h, mfs_smtp_check()). Returns 0, or 1 on failure. */
int mfs_submission_check(const struct mfs_account *acct,
			 const char *password);

#endif
