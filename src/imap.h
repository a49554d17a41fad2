/*
 * imap.h - the IMAP driver: one authenticated connection to the store.
 *
 * A struct mfs_imap is one IMAP connection with its own lock: every call
 * below takes the lock for the length of its commands, so several FUSE
 * threads may share one connection (they queue). The connection is opened on
 * first use and reopened on the next call after it died; a call that finds
 * the connection dead fails once with MFS_E_CONNECT/MFS_E_TIMEOUT/MFS_E_TLS
 * rather than retrying behind the caller's back.
 *
 * Every network wait lasts at most acct->timeout seconds (tls.h).
 *
 * Mailbox names in this interface are the server's names (modified UTF-7,
 * as LIST returns them); conversion for display is the caller's job.
 */
#ifndef MAILFS_IMAP_H
#define MAILFS_IMAP_H

#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "config.h"
#include "error.h"
#include "store.h"

struct mfs_imap;

/* Creates the IMAP store for acct; connects nothing yet. acct and
 * password are borrowed and must outlive the store. Returns NULL on ENOMEM.
 * The store's ops are described in store.h; on IMAP:
 *   connect  TCP, implicit TLS or required STARTTLS (no password is sent
 *            when STARTTLS is missing: MFS_E_TLS), LOGIN or, with auth =
 *            xoauth2/oauthbearer, AUTHENTICATE with the token (a refused
 *            token is asked for again once) (MFS_E_AUTH).
 *   list     LIST "" "*".
 *   index    EXAMINE (CONDSTORE when offered); when the listing kept in
 *            cache_dir/.index matches the folder's UIDVALIDITY, UIDNEXT,
 *            EXISTS and HIGHESTMODSEQ it is served as it is, with
 *            changed flags from UID FETCH 1:* (FLAGS) (CHANGEDSINCE m)
 *            when only HIGHESTMODSEQ moved; otherwise one UID FETCH 1:*
 *            (UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE): at most two
 *            commands for any folder size.
 *   fetch    UID FETCH uid BODY.PEEK[] (never sets \Seen), after EXAMINE
 *            when another folder is selected; MFS_E_NOENT when the
 *            UIDVALIDITY changed or the message was expunged.
 *   watch    IDLE on the folder, on this connection (busy meanwhile: give
 *            it a store of its own); a server without IDLE is polled every
 *            `refresh` seconds.
 * Network failures: MFS_E_CONNECT, MFS_E_TIMEOUT, MFS_E_TLS, MFS_E_PROTO. */
struct mfs_store *mfs_imap_store_new(const struct mfs_account *acct,
				     const char *password);

#endif
