/*
 * header.h - the fields of a message's header block (RFC 5322), one at a
 * time with their continuation lines, in a buffer that need not end in
 * NUL. Lines end in LF or CRLF. mime.c lays messages out with it; pop3.c
 * reads the headers TOP sent.
 */
#ifndef MAILFS_HEADER_H
#define MAILFS_HEADER_H

#include <stddef.h>

/* One field: [off, end) is "Name: value" with its continuation lines,
 * without the final line end; colon is the index of the ':'. */
struct mfs_field {
	size_t off, end, colon;
};

/* The index just past the line of b that starts at p (its '\n' included;
 * end when the line has none). */
size_t mfs_line_next(const char *b, size_t p, size_t end);
/* The end of the text of that line (next from mfs_line_next()): before
 * its CRLF or LF. */
size_t mfs_line_text_end(const char *b, size_t p, size_t next);

/* Is the line [p, e) the start of a field: printable name characters, then
 * ':' (the test of Python's email parser)? */
int mfs_field_line(const char *b, size_t p, size_t e);

/* The next logical line of the header block [*pos, hend): a line and the
 * continuation lines (starting with a space or tab) that follow it, *pos
 * advanced past them. f->colon is the index of the ':' when the first line
 * is a field (mfs_field_line), else MFS_NOT_FIELD. Returns 1, or 0 at the
 * end. */
#define MFS_NOT_FIELD ((size_t)-1)
int mfs_header_line_next(const char *b, size_t *pos, size_t hend,
			 struct mfs_field *f);

/* The next field of the header block [*pos, hend), *pos advanced past it.
 * Lines that are not fields (a "From " line, a continuation with no field
 * before it) are skipped. Returns 1, or 0 at the end. */
int mfs_field_next(const char *b, size_t *pos, size_t hend,
		   struct mfs_field *f);

/* The first field called name (any case) in the header block
 * [hoff, hoff + hlen). Returns 1 with *out filled, or 0. */
int mfs_field_find(const char *b, size_t hoff, size_t hlen, const char *name,
		   struct mfs_field *out);

#endif
