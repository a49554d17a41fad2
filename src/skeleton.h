/*
 * skeleton.h - a stand-in for a large message, planned from its IMAP
 * BODYSTRUCTURE, so that its directory can be laid out (mime.c) without
 * fetching its large part bodies.
 *
 * Two steps, with the network in between (imap.c does that part):
 *
 *   1. mfs_skel_plan() walks the structure and lists what the stand-in is
 *      made of, in order: made-up text (multipart delimiter lines), real
 *      sections to fetch (BODY.PEEK[HEADER], BODY.PEEK[2.MIME], the bodies
 *      of small parts) and holes (the bodies of parts of at least hole_min
 *      bytes).
 *   2. The caller fetches the sections into the items, then
 *      mfs_skel_write() writes the stand-in and the list of its real and
 *      hole ranges (struct mfs_seg, store.h).
 *
 * Sections are numbered as RFC 3501 6.4.5 says: the top header is HEADER,
 * the parts of a multipart message 1, 2, ..., their MIME headers 1.MIME,
 * the body of a message that is not multipart 1; inside a message/rfc822
 * part N, N.HEADER and N.1, N.2, ...
 *
 * The stand-in drops what the structure does not tell (a multipart's
 * preamble and epilogue), so only the ranges in segs hold real bytes.
 */
#ifndef MAILFS_SKELETON_H
#define MAILFS_SKELETON_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "store.h"

struct mailimap_body;

/* Longest section name planned ("1.2.3.MIME"); deeper trees are fetched
 * whole. */
#define MFS_SKEL_SECTION_MAX 64
/* At most this many items; a message with more parts is fetched whole. */
#define MFS_SKEL_ITEMS_MAX 400
/* At most this many bytes of real sections; more: fetched whole. */
#define MFS_SKEL_SMALL_MAX (4 * 1024 * 1024)

enum mfs_skel_kind {
	MFS_SKEL_TEXT,	  /* made-up bytes: text */
	MFS_SKEL_SECTION, /* the bytes of BODY.PEEK[section] */
	MFS_SKEL_HOLE,	  /* octets zeros; BODY.PEEK[section] later */
};

struct mfs_skel_item {
	enum mfs_skel_kind kind;
	char section[MFS_SKEL_SECTION_MAX]; /* SECTION, HOLE */
	char *text;			    /* owned; TEXT */
	size_t text_len;
	uint64_t octets;    /* HOLE: encoded size from the structure */
	int is_header;	    /* SECTION: a header block (HEADER, MIME) */
	/* filled by the caller before mfs_skel_write(): */
	const char *data;   /* borrowed; SECTION: the fetched bytes */
	size_t data_len;
	int got;	    /* SECTION: data is set */
};

struct mfs_skel {
	struct mfs_skel_item *items; /* owned array */
	size_t n;
};

/*
 * Plans the stand-in of the message whose BODYSTRUCTURE is body. On
 * success s->n is 0 when the message is not worth it: no part body of
 * hole_min bytes or more, or a structure the plan does not cover (a
 * multipart without boundary, an encoding the server may not decode,
 * deeper than MFS_SKEL_SECTION_MAX allows, more than MFS_SKEL_ITEMS_MAX
 * items or MFS_SKEL_SMALL_MAX real bytes, a message/rfc822 at the top).
 * Free with mfs_skel_free() either way.
 * Errors: MFS_E_NOMEM.
 */
int mfs_skel_plan(const struct mailimap_body *body, uint64_t hole_min,
		  struct mfs_skel *s, struct mfs_err *err);

/*
 * Writes the stand-in to fd (from its current offset 0; holes are left
 * sparse) and stores its real and hole ranges in *segs (malloc'd, *nsegs;
 * free with mfs_store_segs_free()).
 * Errors: MFS_E_PROTO when a section was not filled, or a header section
 * does not end with a blank line (the server's answer does not fit the
 * plan); MFS_E_IO when fd cannot be written; MFS_E_NOMEM.
 */
int mfs_skel_write(const struct mfs_skel *s, int fd, struct mfs_seg **segs,
		   size_t *nsegs, struct mfs_err *err);

/* Frees what s owns and zeroes it. */
void mfs_skel_free(struct mfs_skel *s);

/*
 * A skeleton kept in the cache (msgview.c), so that it outlives the
 * mount: its length, its ranges and the bytes outside its holes.
 *
 *   "mailfs-skeleton 1\n"
 *   "<length> <nsegs>\n"
 *   nsegs lines "<off> <len> <section>\n", ascending, not overlapping;
 *       section "-" for a real range, else the hole's (digits, dots and
 *       capitals, as the plan makes them)
 *   then the skeleton's bytes outside its holes, in order, to the end.
 *
 * Numbers are decimal without sign or leading zeros.
 */

/* Writes to out (from offset 0 on) the entry of the skeleton in file fd
 * with ranges segs. Errors: MFS_E_IO (fd unreadable, out
 * unwritable, or a range beyond fd's end), MFS_E_NOMEM. */
int mfs_skel_save(int fd, const struct mfs_seg *segs, size_t nsegs, int out,
		  struct mfs_err *err);

/* Makes from entry buf[0, len) the skeleton in file fd (empty; holes are
 * left sparse) and its ranges in *segs (malloc'd, *nsegs; free with
 * mfs_store_segs_free()). Errors: MFS_E_PROTO when buf is not such an
 * entry, whole and exact (nothing is made then); MFS_E_IO when fd cannot
 * be written; MFS_E_NOMEM. */
int mfs_skel_load(const char *buf, size_t len, int fd, struct mfs_seg **segs,
		  size_t *nsegs, struct mfs_err *err);

#endif
