/*
 * listline.h - one FETCH response of a folder listing, read without
 * libetpan's general parser.
 *
 * A listing of 100,000 messages is 100,000 responses of one shape:
 *
 *   * 7 FETCH (UID 12 FLAGS (\Seen) RFC822.SIZE 2345
 *     INTERNALDATE "05-Dec-2026 02:17:38 +0000" ENVELOPE (...))
 *
 * libetpan builds a tree of some forty allocations for each, which was
 * most of the time of a large listing. mfs_listline reads exactly that
 * shape and nothing else: an item it does not know, 8-bit text in a
 * quoted string, a NUL in a literal or anything off the grammar of RFC
 * 3501 section 9 makes it answer "not mine", and the caller gives the
 * response to libetpan as before. It only has to be right, never
 * complete.
 */
#ifndef MAILFS_LISTLINE_H
#define MAILFS_LISTLINE_H

#include <stddef.h>

#include "store.h"

/*
 * Reads the response line[0, len) into *m: its text up to its final CRLF,
 * a literal's "{n}" CRLF followed by its n bytes and the rest of the
 * response, as libetpan holds it in the session's buffer, as the
 * listing makes an entry of libetpan's parse of it: uid, size, flags
 * (\Seen \Answered \Flagged \Deleted \Draft), date (the envelope's Date,
 * else INTERNALDATE, else 0), from (the first sender's decoded name, else
 * mailbox@host, else "") and subject (decoded, "" when none); from and
 * subject are owned by *m. A response without UID gives uid 0.
 * Returns 1 when read, 0 when the line is not of that shape (*m untouched),
 * -1 when out of memory.
 */
int mfs_listline(const char *line, size_t len, struct mfs_store_msg *m);

/* The first address of an envelope's From (NULL strings for NIL); has is
 * 0 when the From list itself is NIL. */
struct mfs_sender {
	int has;
	const char *name, *mailbox, *host;
};

/*
 * Sets m's date, from and subject from the parts of an envelope, as both
 * of the listing's readers make an entry (this file; imap.c's parse by
 * libetpan): date from the Date text, else from internal; from the
 * sender's decoded name, else mailbox@host, else ""; subject decoded, ""
 * when NULL. Returns 0, or -1 when out of memory (m->from and m->subject
 * are then NULL).
 */
int mfs_listline_entry(struct mfs_store_msg *m, const char *date,
		       time_t internal, const struct mfs_sender *from,
		       const char *subject);

#endif
