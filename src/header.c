/*
 * header.c - the fields of a header block (see header.h).
 */
#include "header.h"

#include <string.h>
#include <strings.h>

static int is_wsp(char c)
{
	return c == ' ' || c == '\t';
}

size_t mfs_line_next(const char *b, size_t p, size_t end)
{
	const char *nl = memchr(b + p, '\n', end - p);

	return nl ? (size_t)(nl - b) + 1 : end;
}

size_t mfs_line_text_end(const char *b, size_t p, size_t next)
{
	size_t e = next;

	if (e > p && b[e - 1] == '\n')
		e--;
	if (e > p && b[e - 1] == '\r')
		e--;
	return e;
}

int mfs_field_line(const char *b, size_t p, size_t e)
{
	for (; p < e; p++) {
		unsigned char c = b[p];

		if (c == ':')
			return 1;
		if (c < 0x21 || c > 0x7e)
			return 0;
	}
	return 0;
}

int mfs_header_line_next(const char *b, size_t *pos, size_t hend,
			 struct mfs_field *f)
{
	size_t p = *pos, next, e;

	if (p >= hend)
		return 0;
	next = mfs_line_next(b, p, hend);
	e = mfs_line_text_end(b, p, next);
	f->off = p;
	f->colon = !is_wsp(b[p]) && mfs_field_line(b, p, e)
			   ? (size_t)((const char *)memchr(b + p, ':', e - p) -
				      b)
			   : MFS_NOT_FIELD;
	f->end = e;
	p = next;
	while (p < hend && is_wsp(b[p])) {
		next = mfs_line_next(b, p, hend);
		f->end = mfs_line_text_end(b, p, next);
		p = next;
	}
	*pos = p;
	return 1;
}

int mfs_field_next(const char *b, size_t *pos, size_t hend,
		   struct mfs_field *f)
{
	while (mfs_header_line_next(b, pos, hend, f))
		if (f->colon != MFS_NOT_FIELD)
			return 1;
	return 0;
}

int mfs_field_find(const char *b, size_t hoff, size_t hlen, const char *name,
		   struct mfs_field *out)
{
	size_t pos = hoff, n = strlen(name);
	struct mfs_field f;

	while (mfs_field_next(b, &pos, hoff + hlen, &f)) {
		if (f.colon - f.off == n &&
		    strncasecmp(b + f.off, name, n) == 0) {
			*out = f;
			return 1;
		}
	}
	return 0;
}
