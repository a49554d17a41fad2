/*
 * store.h - what the FUSE layer needs from a mail store, whatever the
 * protocol: the folders, the messages of a folder, and one message's bytes.
 *
 * A driver (imap.c; pop3.c) fills a struct mfs_store with its ops and its
 * private data. Every op may block on the network for at most the account's
 * timeout per wait, is safe to call from several threads at once (the
 * driver serializes what must be serialized), and reports failure as an
 * mfs_err (error.h); the FUSE layer maps the code to errno.
 */
#ifndef MAILFS_STORE_H
#define MAILFS_STORE_H

#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "error.h"

/* One folder as the server names it. */
struct mfs_store_folder {
	char *name;   /* owned: server name (IMAP: modified UTF-7) */
	size_t shown; /* name + shown is the path shown from the root: the
		       * personal namespace's prefix ("INBOX.") is left out */
	char delim;   /* hierarchy delimiter, '\0' when flat */
	int noselect; /* holds no messages (only subfolders) */
	int sent;     /* the folder for sent mail (SPECIAL-USE \Sent) */
};

/* Flags of a message. */
enum {
	MFS_FLAG_SEEN = 1 << 0,
	MFS_FLAG_ANSWERED = 1 << 1,
	MFS_FLAG_FLAGGED = 1 << 2,
	MFS_FLAG_DELETED = 1 << 3,
	MFS_FLAG_DRAFT = 1 << 4,
};

/* The IMAP names of the flags: mfs_flag_names[i] names bit 1 << i. */
#define MFS_NFLAGS 5
extern const char *const mfs_flag_names[MFS_NFLAGS];

/* One message as a folder listing knows it. */
struct mfs_store_msg {
	uint32_t uid;	/* IMAP UID; POP3: position in the listing */
	char *uidl;	/* owned: POP3 UIDL, NULL on IMAP */
	uint64_t size;	/* exact bytes of the raw message */
	time_t date;	/* Date header, else arrival time (UTC seconds) */
	char *from;	/* owned: decoded sender display, UTF-8 */
	char *subject;	/* owned: decoded subject, UTF-8, may be "" */
	unsigned flags; /* MFS_FLAG_* bits */
	/* a listing shown as it came (index_pieces) whose caller said it
	 * needs the entry's from and subject no more: both are NULL then */
	unsigned char shown;
};

/*
 * One range of a message skeleton (the skeleton op below) that holds the
 * message's real bytes, or a hole where they are left out.
 */
struct mfs_seg {
	size_t off, len;  /* in the skeleton */
	int hole;	  /* zeros in the skeleton: fetch `section` */
	char *section;	  /* owned; hole: the IMAP section of its bytes */
};

/* What a search (the search op) found in one folder. */
struct mfs_store_hits {
	int want_msgs;	   /* set by the caller: the matches' listing
			    * entries are wanted too (msgs below) */
	uint32_t validity; /* the numbering of uids (IMAP UIDVALIDITY) */
	uint32_t *uids;	   /* owned: ascending, n of them */
	size_t n;
	/* owned: with want_msgs, the listing entries (as index gives them)
	 * of the matches when the driver could fetch them with the search
	 * (IMAP: at most MFS_SEARCH_MSGS_MAX), in UID order; else NULL */
	struct mfs_store_msg *msgs;
	size_t nmsgs;
	struct mfs_err err; /* MFS_OK, or why this folder has no answer
			     * (MFS_E_NOENT: no such folder) */
};

/* Whether the server answers (the state op). */
struct mfs_store_state {
	time_t offline_since; /* 0: online */
	time_t retry_at;      /* offline: when the server is tried again */
	char why[MFS_ERRMSG_MAX]; /* offline: the last failure */
};

/* The most matches of one folder whose listing entries a search fetches. */
#define MFS_SEARCH_MSGS_MAX 2000

struct mfs_store;
struct mfs_query;

/* The next batch of a skeleton_many call (mfs_many_cb's more): as the
 * call's own uids, whole and later, each malloc'd (or NULL when empty)
 * and ascending; the driver frees them (mfs_many_more_free). */
struct mfs_many_more {
	uint32_t *uids, *whole, *later;
	size_t n, nwhole, nlater;
};

/* The callbacks of skeleton_many (store.h, below), called in the
 * thread of the op, one at a time. */
struct mfs_many_cb {
	int (*open_fn)(void *ctx);
	void (*done_fn)(void *ctx, uint32_t uid, int fd, size_t len);
	int (*skel_open)(void *ctx);
	void (*skel_done)(void *ctx, uint32_t uid, int fd,
			  struct mfs_seg *segs, size_t nsegs);
	void *ctx;
	/* May be NULL. Asked after each response while the call's replies
	 * still come: 1 and *next filled when the caller wants a next batch
	 * now. The driver sends it at once on the same connection and
	 * delivers its messages through the same callbacks, before the call
	 * returns; a server may mix its responses with the earlier ones. */
	int (*more)(void *ctx, struct mfs_many_more *next);
};


/* A part of a listing as it comes (index_pieces below): n entries of
 * the numbering validity, borrowed for the call. Returns 1 when the
 * caller needs their from and subject no more (it shows them already):
 * the store may then drop them from the listing it returns (setting
 * `shown`), else 0. */
typedef int (*mfs_index_piece_fn)(void *ctx, uint32_t validity,
				  const struct mfs_store_msg *msgs, size_t n);

struct mfs_store_ops {
	/* Connects and logs in unless already connected. */
	int (*connect)(struct mfs_store *st, struct mfs_err *err);
	/* All folders. *folders: malloc'd array of *n, caller frees with
	 * mfs_store_folders_free(). */
	int (*list)(struct mfs_store *st, struct mfs_store_folder **folders,
		    size_t *n, struct mfs_err *err);
	/* The personal namespace (NULL where the protocol has none): the
	 * prefix of the server name of a folder made at the root (*prefix,
	 * malloc'd, "" when none; IMAP NAMESPACE, RFC 2342) and its
	 * hierarchy delimiter ('\0' when flat or not known). */
	int (*personal)(struct mfs_store *st, char **prefix, char *delim,
			struct mfs_err *err);
	/* All messages of a folder in a constant number of round trips.
	 * *validity identifies this numbering of the folder (IMAP
	 * UIDVALIDITY); *msgs: malloc'd array of *n, caller frees with
	 * mfs_store_msgs_free(). MFS_E_NOENT: no such folder. */
	int (*index)(struct mfs_store *st, const char *folder,
		     uint32_t *validity, struct mfs_store_msg **msgs,
		     size_t *n, struct mfs_err *err);
	/* As index; and while a listing of every message comes from the
	 * server, piece(ctx, ...) with each part of it as soon as it is
	 * read, so that the caller can show it before the end. A part may
	 * come again (a listing started over), and a listing read another
	 * way (kept, or only its changes) gives none: what index returns is
	 * the listing; the parts are only its first look. NULL where the
	 * store cannot. */
	int (*index_pieces)(struct mfs_store *st, const char *folder,
			    uint32_t *validity, struct mfs_store_msg **msgs,
			    size_t *n, mfs_index_piece_fn piece, void *ctx,
			    struct mfs_err *err);
	/* The listing of folder as the driver last kept it on disk (NULL
	 * where it keeps none), without a word to the server: what an
	 * offline mount shows. MFS_E_NOENT: none kept. Else as index. */
	int (*kept_index)(struct mfs_store *st, const char *folder,
			  uint32_t *validity, struct mfs_store_msg **msgs,
			  size_t *n, struct mfs_err *err);
	/* The raw message, written to fd; *len receives its length.
	 * MFS_E_NOENT: the message (or this validity) is gone. */
	int (*fetch)(struct mfs_store *st, const char *folder,
		     uint32_t validity, const struct mfs_store_msg *msg,
		     int fd, size_t *len, struct mfs_err *err);

	/* Fetch-ahead (NULL where the protocol has none): the raw messages
	 * uids[0..n) of folder in one command. For each message that comes
	 * the driver calls open_fn(ctx) for an fd to write it to, then
	 * done_fn(ctx, uid, fd, len) once it is complete (done_fn then owns
	 * fd). Messages that are gone are skipped. Errors as fetch. */
	int (*fetch_many)(struct mfs_store *st, const char *folder,
			  uint32_t validity, const uint32_t *uids, size_t n,
			  int (*open_fn)(void *ctx),
			  void (*done_fn)(void *ctx, uint32_t uid, int fd,
					  size_t len),
			  void *ctx, struct mfs_err *err);

	/* Lazy reading of large messages (NULL where the protocol has none).
	 *
	 * skeleton writes to fd (empty, at offset 0) a stand-in for the raw
	 * message with the same MIME tree: its real header blocks and the
	 * real bodies of the parts under hole_min bytes, the multipart
	 * framing made up from the structure, and a hole of zeros of the
	 * exact size in place of each larger part body. *segs (malloc'd,
	 * *nsegs of them, free with mfs_store_segs_free()) lists the ranges
	 * that hold real bytes or a hole; every other byte is made up. It
	 * costs two round trips. *nsegs is 0 and nothing is written when
	 * the message has no part worth leaving out or a structure the
	 * skeleton does not cover: fetch it whole then. Errors as fetch. */
	int (*skeleton)(struct mfs_store *st, const char *folder,
			uint32_t validity, const struct mfs_store_msg *msg,
			uint64_t hole_min, int fd, struct mfs_seg **segs,
			size_t *nsegs, struct mfs_err *err);
	/* Fetch-ahead of large messages (NULL where the protocol has none):
	 * the skeletons (as the skeleton op makes one, same hole_min) of
	 * the messages uids[0..n) of folder, and the raw messages
	 * whole[0..nwhole) as fetch_many fetches them, in two bursts
	 * whatever their numbers: the structures and the whole messages in
	 * the first, the header blocks and small part bodies of every
	 * skeleton in the second (sent as soon as the structures are in,
	 * while the whole messages still come). Both arrays ascending.
	 * Callbacks in cb (all set): a whole message as for fetch_many
	 * (open_fn, done_fn); for a skeleton the driver calls
	 * skel_open(ctx) for an empty fd to write it to, then
	 * skel_done(ctx, uid, fd, segs, nsegs), which owns fd and segs
	 * (nsegs > 0) from then on. A message of uids that has no part
	 * worth leaving out or a structure the skeleton does not cover
	 * comes whole (done_fn) in the second burst. A message that is
	 * gone, or whose sections do not fit its structure, is skipped:
	 * nothing is delivered for it. What was delivered stays delivered
	 * when the op fails later. later[0..nlater) (ascending, may be
	 * NULL): large messages a later call will likely ask for; their
	 * structures come in the first burst too, and the driver keeps what
	 * it planned from them (for this folder, validity and hole_min), so
	 * that the later call sends their sections in its first burst and,
	 * when it knows every structure, costs one round trip. Errors as
	 * fetch_many. */
	int (*skeleton_many)(struct mfs_store *st, const char *folder,
			     uint32_t validity, const uint32_t *uids,
			     size_t n, uint64_t hole_min,
			     const uint32_t *whole, size_t nwhole,
			     const uint32_t *later, size_t nlater,
			     const struct mfs_many_cb *cb,
			     struct mfs_err *err);
	/* The bytes of one section of the message (IMAP: BODY.PEEK[section],
	 * "" for the whole message) to fd; *len receives their count.
	 * Errors as fetch. */
	int (*fetch_section)(struct mfs_store *st, const char *folder,
			     uint32_t validity,
			     const struct mfs_store_msg *msg,
			     const char *section, int fd, size_t *len,
			     struct mfs_err *err);

	/* Search (NULL where the driver has none): the messages of each of
	 * folders[0..n) that match q (query.h) into hits[i], which the
	 * caller zeroes and frees with mfs_store_hits_free(). The server
	 * matches (IMAP UID SEARCH, every folder's search sent in one burst;
	 * the entries of the folders that want them in a second burst);
	 * nothing is downloaded. A folder that cannot be searched gets its
	 * hits[i].err and the others are still searched. Returns the failure
	 * of the whole: errors as connect, MFS_E_INVAL when the query cannot
	 * be put to this server (a term in a charset it does not have; on
	 * POP3 a term that needs the message text). */
	int (*search)(struct mfs_store *st, const char *const *folders,
		      size_t n, const struct mfs_query *q,
		      struct mfs_store_hits *hits, struct mfs_err *err);

	/* --- writes; NULL in a read-only store ---------------------------- */

	/* CREATE folder (server name). MFS_E_EXIST: it exists already. */
	int (*create)(struct mfs_store *st, const char *folder,
		      struct mfs_err *err);
	/* DELETE folder. MFS_E_NOENT: no such folder; MFS_E_NOTEMPTY: it
	 * still holds messages; MFS_E_ACCESS: the server refused (INBOX). */
	int (*remove)(struct mfs_store *st, const char *folder,
		      struct mfs_err *err);
	/* RENAME from to. MFS_E_NOENT, MFS_E_EXIST, MFS_E_ACCESS. */
	int (*rename)(struct mfs_store *st, const char *from, const char *to,
		      struct mfs_err *err);
	/* APPEND the len bytes readable from fd (from offset 0, streamed, not
	 * read into memory whole) to folder with the given flags and internal
	 * date (0: the server's clock). On success *validity and *uid name
	 * the new message when the server says (UIDPLUS), else *uid is 0.
	 * MFS_E_NOENT: no such folder; MFS_E_QUOTA, MFS_E_TOOBIG: the
	 * server's quota, its size limit; MFS_E_ACCESS: any other refusal
	 * (never MFS_E_INVAL: the server's reason is in err). */
	int (*append)(struct mfs_store *st, const char *folder, int fd,
		      uint64_t len, time_t date, unsigned flags,
		      uint32_t *validity, uint32_t *uid, struct mfs_err *err);
	/* Moves message uid of folder `from` (numbered by validity) to folder
	 * `to`: UID MOVE, else UID COPY + \Deleted + UID EXPUNGE of that UID
	 * only (never a bare EXPUNGE). MFS_E_NOENT: the message or the
	 * validity is gone, or `to` does not exist. */
	int (*move)(struct mfs_store *st, const char *from, uint32_t validity,
		    uint32_t uid, const char *to, struct mfs_err *err);
	/* Deletes message uid: \Deleted + UID EXPUNGE of that UID only.
	 * MFS_E_NOENT as for move. */
	int (*expunge)(struct mfs_store *st, const char *folder,
		       uint32_t validity, uint32_t uid, struct mfs_err *err);
	/* UID STORE: how is '+' (add), '-' (remove) or '=' (set exactly);
	 * flags are n names such as "\\Seen" or keywords. On success *now
	 * holds the message's flags afterwards (MFS_FLAG_* bits).
	 * MFS_E_NOENT as for move; MFS_E_INVAL: a name the server refused. */
	int (*store_flags)(struct mfs_store *st, const char *folder,
			   uint32_t validity, uint32_t uid, char how,
			   const char *const *flags, size_t n, unsigned *now,
			   struct mfs_err *err);

	/* Watching (NULL where the driver cannot): one round of waiting for
	 * folder to change, on a connection kept for this alone, so that a
	 * watch never holds up the other ops. Returns when the server
	 * reports a change (*changed = 1), when stop_fd becomes readable
	 * (*changed = 0), or after at most max_wait seconds. A driver that
	 * cannot be told of changes (POP3, an IMAP server without IDLE) waits
	 * the account's refresh time and then says *changed = 1, so that the
	 * folder is listed again at the next look: it polls. Errors as
	 * connect; the caller waits a while before the next round. */
	int (*watch)(struct mfs_store *st, const char *folder, int stop_fd,
		     int max_wait, int *changed, struct mfs_err *err);

	/* Online or offline (NULL: a driver that does not tell; online).
	 * Offline, after network failures in a row, the ops that need the
	 * server fail at once with MFS_E_OFFLINE until st->retry_at; then
	 * the next op tries it again. */
	void (*state)(struct mfs_store *st, struct mfs_store_state *out);

	/* TLS version and certificate of the connection, for --check. */
	void (*tls_info)(struct mfs_store *st, char *version, size_t vlen,
			 char *subject, size_t slen, char *issuer, size_t ilen);
	/* Logs out and frees the store. */
	void (*free)(struct mfs_store *st);
};

struct mfs_store {
	const struct mfs_store_ops *ops; /* borrowed: static */
	void *priv;			 /* owned by the driver */
	int read_only;			 /* every write is EROFS (POP3) */
	int search_text; /* search answers to:, cc:, body:, text: (IMAP); 0:
			  * only what a listing has, the FUSE layer reads
			  * the messages for the rest (POP3) */
};

/* The watch of a store that cannot be told of changes: waits secs seconds
 * or until stop_fd becomes readable, and sets *changed to 1 when the time
 * ran out (the folder is to be listed again), 0 when stopped. Returns
 * MFS_OK. */
int mfs_store_watch_poll(int stop_fd, int secs, int *changed);

/* Fills date (the Date header; 0 without one), from (the decoded display
 * name of the first From mailbox, else its address) and subject (decoded)
 * of m from the header block hdr (NUL-terminated), freeing what m held
 * there. Returns 0, or -1 on ENOMEM. */
int mfs_store_msg_headers(struct mfs_store_msg *m, const char *hdr);

void mfs_store_folders_free(struct mfs_store_folder *folders, size_t n);
void mfs_store_msgs_free(struct mfs_store_msg *msgs, size_t n);
void mfs_store_segs_free(struct mfs_seg *segs, size_t n);
/* Frees the arrays of *m and empties it. */
void mfs_many_more_free(struct mfs_many_more *m);
void mfs_store_hits_free(struct mfs_store_hits *hits, size_t n);

#endif
