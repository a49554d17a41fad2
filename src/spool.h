/*
 * spool.h - the durable outbox queue behind outbox/.
 *
 * A spool is a directory (mode 0700) that belongs to the user: one that
 * belongs to another user, or is open to others and cannot be made
 * private, is refused at open, and no file in it is ever opened through a
 * symbolic link. Each entry is two files named by an internal id (the
 * time, the pid and a counter; an id an earlier run left on disk is
 * skipped), never by the user's name:
 *
 *   ID.eml     the message exactly as the user wrote it (mode 0600)
 *   ID.state   a small text file: the user's name, status, attempts,
 *              first queued time, next attempt time, Message-ID, Date,
 *              last server reply
 *
 * so that a rename in outbox/ only rewrites ID.state. Every state change is
 * written as ID.state.new, fsync'd, renamed over ID.state, and the
 * directory fsync'd. A password is never written.
 *
 * Status of an entry (what the user sees in the status text):
 *   writing   created, not yet committed (a file still open, or left open
 *             by a crash: not sent until committed again)
 *   waiting   committed under a name that starts with '.' or ends in '~',
 *             ".swp" or ".tmp": held until renamed to a normal name
 *   queued    to be sent at `next attempt` (a temporary failure, or a
 *             rename out of a waiting name)
 *   sending   being sent now (on disk before the first byte of the
 *             message goes; when it cannot be written, nothing is sent
 *             and the entry stays queued)
 *   failed    permanent failure (5xx, or queued longer than the queue
 *             lifetime); the reason is in `last reply`
 *   invalid   the message cannot be sent as written (outmsg said why)
 *   unknown   a previous run stopped after the message's data was sent and
 *             before the server's reply came (a crash while "sending", or
 *             a connection lost right after the final "."): the server may
 *             have accepted it. It is NOT sent again by itself; the log
 *             names its Message-ID so the user can look for it in the
 *             recipients' or the Sent folder. To send it again anyway, the
 *             user commits it again (opens it for writing and closes it,
 *             e.g. `touch` with O_WRONLY, or renames it), which the FUSE
 *             layer turns into mfs_spool_commit().
 * A message is removed from the spool once the server accepted it.
 *
 * 8-bit: the body goes with BODY=8BITMIME when offered (else outmsg
 * re-encodes it). Non-ASCII header text is always RFC 2047 encoded, and
 * SMTPUTF8 is used only when an address needs it: a server may offer
 * SMTPUTF8 while a later hop does not (Postfix in front of Dovecot LMTP
 * bounces such mail), and encoded words reach every reader.
 *
 * Sessions: after a message the SMTP session stays open for keep_open
 * seconds (the retry thread, or the next message, then ends it), and the
 * next message, from a commit or the retry thread, uses it: the connection,
 * TLS handshake and login are paid once for a series of messages. Should
 * the kept session turn out dead while sending (the server closed it after
 * its own idle time, a 421, a broken connection), the message is sent once
 * more on a new session, but only when the failure came before the
 * server could have the message's data; after the final "." without a
 * reply the entry is "unknown" as always. One session is kept; a thread
 * that finds it taken by another opens one of its own (and closes it after
 * its message when one is kept already).
 *
 * Sent copies: when the server accepts a message, its prepared form (what
 * the server got) is kept as a "Sent copy to make" before the entry
 * leaves the spool, so that close() in outbox/ waits for SMTP alone:
 *
 *   .sent/ID.eml    the prepared message (mode 0600), named only once its
 *                   bytes are on disk (linkat of the fsync'd O_TMPFILE, or
 *                   a copy written as ID.eml.new, fsync'd and renamed),
 *                   so a crash never leaves a torn copy to append
 *   .sent/ID.name   the user's name, for the log (written before ID.eml;
 *                   one without its ID.eml is dropped at open)
 *
 * A thread of its own (started with the retry thread) hands them to the
 * sent callback one at a time in the order the messages were accepted,
 * and deletes ID.eml, then ID.name, when the callback returns 0. A
 * non-zero return keeps the copy and retries it after backoff_min
 * seconds, doubling up to backoff_max; a copy still not made after
 * lifetime seconds since its message was accepted is dropped (logged).
 * Copies left by an earlier run are loaded at open, in order, and made
 * once the thread starts. A copy is handed to the callback again only
 * after a failure it reported, or when mailfs stopped after the callback
 * made it and before ID.eml was deleted: then the Sent folder may hold it
 * twice. Sent copies are not entries: outbox/ does not list them, and
 * they have no status text; the log says when one is made or fails. With
 * no sent callback nothing is kept.
 *
 * Locking: every function may be called from any thread; one mutex guards
 * the in-memory index and the kept session, another the Sent copies, and
 * no network wait ever happens under either.
 */
#ifndef MAILFS_SPOOL_H
#define MAILFS_SPOOL_H

#include <stddef.h>
#include <sys/types.h>
#include <time.h>

#include "config.h"
#include "error.h"

enum mfs_spool_status {
	MFS_SPOOL_WRITING,
	MFS_SPOOL_WAITING,
	MFS_SPOOL_QUEUED,
	MFS_SPOOL_SENDING,
	MFS_SPOOL_FAILED,
	MFS_SPOOL_INVALID,
	MFS_SPOOL_UNKNOWN,
};

/*
 * Makes the Sent copy of a message the server accepted: fd is the prepared
 * message as sent (Bcc removed, CRLF), size bytes; read it with pread
 * (the offset is not to be relied on). IMAP mounts APPEND it to the Sent
 * folder. name is the name the message had in outbox/, for the log.
 * Returns 0 when the copy is made or is not to be made (no Sent folder, a
 * POP3 mount, a permanent refusal: the callback logs why), non-zero for a
 * temporary failure (network, server unreachable): the spool keeps the
 * copy and calls again later. It runs on the spool's Sent-copy thread (or
 * the thread of mfs_spool_run_sent()), never on a committing thread, and
 * without the spool's lock; calls never overlap. It should return within
 * a bounded time (the account's network timeouts); see mfs_spool_close()
 * for one that does not.
 */
typedef int (*mfs_spool_sent_fn)(void *arg, const char *name, int fd,
				 off_t size);

struct mfs_spool_opts {
	const char *dir; /* borrowed: the spool directory, created (0700)
			    when missing, e.g. CACHE_DIR/outbox */
	const struct mfs_account *acct; /* borrowed, lives as long as the
					   spool: smtp, user, from, ca_file,
					   timeout */
	const char *password;		/* borrowed, lives as long as the spool;
					   NULL: no AUTH. With acct->auth a
					   token mechanism it is the token:
					   when the server refuses it, a new
					   one is asked for (mfs_password_get)
					   and kept by the spool for later
					   sessions */
	int backoff_min;	/* seconds before the first retry; 0: 60 */
	int backoff_max;	/* cap of the doubling backoff; 0: 3600 */
	int lifetime;		/* seconds from first queued until a message
				   that keeps failing temporarily is
				   "failed"; 0: 7 days */
	int keep_open;		/* seconds an SMTP session stays open after
				   a message, for the next one; 0: 10;
				   < 0: closed after each message */
	mfs_spool_sent_fn sent; /* or NULL */
	void *sent_arg;		/* passed to sent */
};

struct mfs_spool; /* opaque */

struct mfs_spool_entry {
	char *name; /* owned: the name the user gave */
	off_t size; /* of the message file as written */
	enum mfs_spool_status status;
	time_t mtime; /* of the message file */
};

enum mfs_spool_result {
	MFS_SPOOL_SENT,	    /* accepted (maybe with rejected recipients,
			       see reply); the entry is gone */
	MFS_SPOOL_DEFERRED, /* temporary failure; queued for a retry */
	MFS_SPOOL_REJECTED, /* permanent failure; the entry is "failed" */
	MFS_SPOOL_BAD,	    /* the message is "invalid" */
	MFS_SPOOL_HELD,	    /* a waiting name: not sent */
	MFS_SPOOL_UNSURE,   /* no reply after the data: "unknown" */
};

struct mfs_spool_outcome {
	enum mfs_spool_result result;
	char reply[MFS_ERRMSG_MAX]; /* the server's reply or the reason;
				       for SENT, the rejected recipients
				       with reasons, or "" */
};

/*
 * Opens (creating it when missing) the spool directory and loads its
 * entries. Replay: an entry found "sending" becomes "unknown" (logged with
 * its Message-ID); "queued" entries are due at once (the retry thread
 * sends them when started).
 * Errors: MFS_E_INVAL (opts->acct without smtp), MFS_E_IO (cannot create,
 * not a directory, a symbolic link, unreadable), MFS_E_ACCESS (the
 * directory, or its .sent, belongs to another user, or is open to group or
 * others and chmod 0700 fails; err->msg names it), MFS_E_NOMEM.
 */
int mfs_spool_open(const struct mfs_spool_opts *opts, struct mfs_spool **out,
		   struct mfs_err *err);

/*
 * Stops the threads (see mfs_spool_stop()), ends the kept SMTP session and
 * frees the spool. Nothing on disk changes but for the Sent copies made
 * meanwhile. NULL is fine. Returns 0, or 1 when a sent callback was still
 * running when the wait for the Sent copies ended: the spool is freed all
 * the same, but that callback goes on (its copy stays on disk unless it
 * succeeds) and sent_arg must stay valid until it returns, so the caller
 * should leave sent_arg's object alone and exit.
 */
int mfs_spool_close(struct mfs_spool *sp);

/* Names waiting, queued, failed... in outbox/: every entry, in creation
 * order. *entries is malloc'd; free with mfs_spool_entries_free().
 * Errors: MFS_E_NOMEM. */
int mfs_spool_list(struct mfs_spool *sp, struct mfs_spool_entry **entries,
		   size_t *n, struct mfs_err *err);
void mfs_spool_entries_free(struct mfs_spool_entry *entries, size_t n);

/* One entry by name (for lookup/getattr); e->name is owned by the caller
 * (free it). Errors: MFS_E_NOENT, MFS_E_NOMEM. */
int mfs_spool_stat(struct mfs_spool *sp, const char *name,
		   struct mfs_spool_entry *e, struct mfs_err *err);

/*
 * Creates an entry "writing" under name and returns in *fd a descriptor
 * open O_RDWR|O_CLOEXEC on its message file (the caller closes it). The
 * caller writes through it (pwrite) and calls mfs_spool_commit() when the
 * file is closed.
 * Errors: MFS_E_INVAL (empty name, '/', "." or "..", longer than 255
 * bytes), MFS_E_EXIST, MFS_E_IO, MFS_E_NOMEM.
 */
int mfs_spool_create(struct mfs_spool *sp, const char *name, int *fd,
		     struct mfs_err *err);

/*
 * Opens the message file of an existing entry (flags as open(2): O_RDONLY,
 * O_WRONLY, O_RDWR, O_TRUNC) into *fd. Opening for writing makes the entry
 * "writing" again (a later commit sends it as new); not allowed while it is
 * "sending".
 * Errors: MFS_E_NOENT, MFS_E_ACCESS (writing while sending), MFS_E_IO.
 */
int mfs_spool_open_entry(struct mfs_spool *sp, const char *name, int flags,
			 int *fd, struct mfs_err *err);

/*
 * Renames an entry. An existing entry named newname is replaced (unless it
 * is "sending": MFS_E_ACCESS). A "waiting" entry renamed to a normal name
 * becomes "queued", due at once, and the retry thread is woken; an entry
 * renamed to a waiting name (not "sending") becomes "waiting". "failed",
 * "invalid" and "unknown" entries renamed to a normal name are queued
 * again too (the user's way to retry).
 * Errors: MFS_E_NOENT, MFS_E_INVAL (bad newname), MFS_E_ACCESS, MFS_E_IO.
 */
int mfs_spool_rename(struct mfs_spool *sp, const char *oldname,
		     const char *newname, struct mfs_err *err);

/* Removes an entry (the user cancels it). Errors: MFS_E_NOENT,
 * MFS_E_ACCESS (it is being sent right now), MFS_E_IO. */
int mfs_spool_unlink(struct mfs_spool *sp, const char *name,
		     struct mfs_err *err);

/*
 * Tries a "queued" or "failed" entry again at once (`touch outbox/NAME`):
 * it becomes "queued", due now, and the retry thread is woken. A "failed"
 * entry gets a new queue lifetime from its next attempt. Its attempt count
 * is kept and grows with each attempt. Any other entry (writing, waiting,
 * sending, invalid, unknown) is left as it is, and 0 returned; an entry
 * already sent is no longer in the spool (MFS_E_NOENT).
 * Errors: MFS_E_NOENT, MFS_E_IO (the new state could not be written;
 * nothing changed).
 */
int mfs_spool_retry_now(struct mfs_spool *sp, const char *name,
			struct mfs_err *err);

/*
 * Submits an entry whose file was closed after writing: fsyncs the message
 * file and the directory before any byte goes to the server; under a
 * waiting name, marks it "waiting" and stops (HELD). Else prepares it
 * (outmsg) and sends it now, and fills *outcome. The SMTP session of the
 * previous message is used when it is still open (see "Sessions" above),
 * else a new one.
 * Blocks for the network (bounded by the account's timeout per wait).
 * Returns what close() should return:
 *   MFS_OK        SENT, DEFERRED (cp succeeds: it will be retried), HELD
 *   MFS_E_INVAL   BAD: the message is invalid (err->msg says why)
 *   MFS_E_ACCESS  REJECTED: a permanent failure (err->msg quotes the
 *                 server), and UNSURE (err->msg says to check)
 *   MFS_E_NOENT   no such entry; MFS_E_ACCESS if it is "sending" now
 *   MFS_E_IO      fsync or a state write failed (nothing was sent);
 *                 but "sending" that cannot be written is DEFERRED (not
 *                 sent, queued for a retry) and MFS_OK
 *   MFS_E_NOMEM
 */
int mfs_spool_commit(struct mfs_spool *sp, const char *name,
		     struct mfs_spool_outcome *outcome, struct mfs_err *err);

/*
 * The status text of an entry, for outbox/.status/NAME: lines
 *   status: queued
 *   attempts: 2
 *   first queued: 2026-11-20 15:32:01 +0100
 *   next attempt: 2026-11-20 15:36:01 +0100     (queued only)
 *   message-id: <...>
 *   last reply: 451 4.3.0 Try again later
 * malloc'd, owned by the caller. Errors: NULL with err MFS_E_NOENT or
 * MFS_E_NOMEM.
 */
char *mfs_spool_status_text(struct mfs_spool *sp, const char *name,
			    struct mfs_err *err);

/* Starts the retry thread: it sends every due "queued" entry, then sleeps
 * until the next is due or it is woken; it also ends the kept SMTP session
 * once it has been idle for keep_open seconds. With a sent callback it
 * starts the Sent-copy thread too (see "Sent copies" above), which makes
 * the copies loaded at open and every new one.
 * Errors: MFS_E_NOMEM (thread creation failed). Calling it twice is a
 * no-op. */
int mfs_spool_start(struct mfs_spool *sp, struct mfs_err *err);

/*
 * Stops the retry thread: wakes it, cancels a session in progress, joins
 * it, then ends the kept session (QUIT, its reply waited for at most 2
 * seconds). Then stops the Sent-copy thread: the copies still to make get
 * until acct->timeout seconds from then to be made, one after another,
 * but none is started once the callback has failed for the first of them
 * (the server is unreachable: it waits for its next try, on disk) or once
 * that time is up; what is left stays on disk for the next open. A
 * callback running at the end of that time is not waited for (return 1,
 * see mfs_spool_close()). Returns within about one network timeout plus
 * acct->timeout, and 0 unless a callback was left running. Safe when not
 * started.
 */
int mfs_spool_stop(struct mfs_spool *sp);

/* Sends every due "queued" entry now on the calling thread (what the retry
 * thread does in one round). Returns the number of entries sent. */
int mfs_spool_run_due(struct mfs_spool *sp);

/* Makes every Sent copy that is due on the calling thread, in order, until
 * the callback fails for one (what the Sent-copy thread does in one
 * round); a copy the thread is making is left to it. Returns the number
 * made. */
int mfs_spool_run_sent(struct mfs_spool *sp);

/* 1 for a name that waits for a rename ('.' first, or ending in '~',
 * ".swp", ".tmp"), else 0. */
int mfs_spool_name_waits(const char *name);

/* "queued", "failed", ... for a status. */
const char *mfs_spool_status_name(enum mfs_spool_status status);

#endif
