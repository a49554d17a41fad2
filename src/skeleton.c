/*
 * skeleton.c - a stand-in for a large message (see skeleton.h).
 */
#include "skeleton.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libetpan/libetpan.h>

/* Deeper nesting is fetched whole. */
#define PLAN_DEPTH_MAX 16

struct plan {
	struct mfs_skel *s;
	size_t cap;
	uint64_t hole_min;
	uint64_t small; /* bytes of real sections planned */
	int holes;
	int unfit; /* the structure is not covered: fetch whole */
	int nomem;
};

static struct mfs_skel_item *plan_add(struct plan *p, enum mfs_skel_kind kind)
{
	struct mfs_skel_item *it;

	if (p->unfit || p->nomem)
		return NULL;
	if (p->s->n == MFS_SKEL_ITEMS_MAX) {
		p->unfit = 1;
		return NULL;
	}
	if (p->s->n == p->cap) {
		size_t cap = p->cap ? 2 * p->cap : 16;
		struct mfs_skel_item *v =
		    realloc(p->s->items, cap * sizeof(*v));

		if (v == NULL) {
			p->nomem = 1;
			return NULL;
		}
		p->s->items = v;
		p->cap = cap;
	}
	it = &p->s->items[p->s->n++];
	memset(it, 0, sizeof(*it));
	it->kind = kind;
	return it;
}

/* out = sec "." tail, or the one that is not empty. -1: too long. */
static int sec_join(char out[MFS_SKEL_SECTION_MAX], const char *sec,
		    const char *tail)
{
	int n;

	if (sec[0] == '\0')
		n = snprintf(out, MFS_SKEL_SECTION_MAX, "%s", tail);
	else if (tail[0] == '\0')
		n = snprintf(out, MFS_SKEL_SECTION_MAX, "%s", sec);
	else
		n = snprintf(out, MFS_SKEL_SECTION_MAX, "%s.%s", sec, tail);
	return n < 0 || n >= MFS_SKEL_SECTION_MAX ? -1 : 0;
}

static void plan_text(struct plan *p, const char *fmt, const char *boundary)
{
	struct mfs_skel_item *it = plan_add(p, MFS_SKEL_TEXT);
	int n;

	if (it == NULL)
		return;
	n = asprintf(&it->text, fmt, boundary);
	if (n < 0) {
		it->text = NULL;
		p->nomem = 1;
		return;
	}
	it->text_len = (size_t)n;
}

/* A real section: sec joined with tail ("HEADER", "MIME", or "" for the
 * body of part sec). */
static void plan_section(struct plan *p, const char *sec, const char *tail,
			 int is_header)
{
	struct mfs_skel_item *it = plan_add(p, MFS_SKEL_SECTION);

	if (it == NULL)
		return;
	if (sec_join(it->section, sec, tail) != 0)
		p->unfit = 1;
	it->is_header = is_header;
}

/* The boundary parameter of a multipart, or NULL. */
static const char *boundary_of(const struct mailimap_body_type_mpart *mp)
{
	const struct mailimap_body_fld_param *prm;
	clistiter *it;

	if (mp->bd_ext_mpart == NULL || mp->bd_ext_mpart->bd_parameter == NULL)
		return NULL;
	prm = mp->bd_ext_mpart->bd_parameter;
	for (it = clist_begin(prm->pa_list); it != NULL; it = clist_next(it)) {
		const struct mailimap_single_body_fld_param *one =
		    clist_content(it);
		size_t len = strlen(one->pa_value);

		if (strcasecmp(one->pa_name, "boundary") != 0)
			continue;
		if (len == 0 || len > 70 || strpbrk(one->pa_value, "\r\n"))
			return NULL;
		return one->pa_value;
	}
	return NULL;
}

static void plan_body(struct plan *p, const struct mailimap_body *b,
		      const char *sec, int msg_body, int depth);

/* A message: its header and its body. sec: "" at the top, else the
 * section of the message/rfc822 part. */
static void plan_message(struct plan *p, const struct mailimap_body *b,
			 const char *sec, int depth)
{
	plan_section(p, sec, "HEADER", 1);
	plan_body(p, b, sec, 1, depth);
}

static void plan_multipart(struct plan *p,
			   const struct mailimap_body_type_mpart *mp,
			   const char *sec, int depth)
{
	const char *boundary = boundary_of(mp);
	char child[MFS_SKEL_SECTION_MAX], num[16];
	size_t i = 0;
	clistiter *it;

	if (boundary == NULL) {
		p->unfit = 1;
		return;
	}
	for (it = clist_begin(mp->bd_list); it != NULL; it = clist_next(it)) {
		snprintf(num, sizeof(num), "%zu", ++i);
		if (sec_join(child, sec, num) != 0) {
			p->unfit = 1;
			return;
		}
		plan_text(p, i == 1 ? "--%s\r\n" : "\r\n--%s\r\n", boundary);
		plan_section(p, child, "MIME", 1);
		plan_body(p, clist_content(it), child, 0, depth + 1);
	}
	if (i == 0)
		p->unfit = 1;
	plan_text(p, "\r\n--%s--\r\n", boundary);
}

static int enc_is(const struct mailimap_body_fields *f, int a, int b, int c)
{
	int t = f->bd_encoding != NULL ? f->bd_encoding->enc_type : -1;

	return t == a || t == b || t == c;
}

/* A part that is not multipart, at section sec. */
static void plan_leaf(struct plan *p, const struct mailimap_body_type_1part *one,
		      const char *sec, int depth)
{
	const struct mailimap_body_fields *f;
	struct mfs_skel_item *it;

	switch (one->bd_type) {
	case MAILIMAP_BODY_TYPE_1PART_MSG:
		f = one->bd_data.bd_type_msg->bd_fields;
		if (!enc_is(f, MAILIMAP_BODY_FLD_ENC_7BIT,
			    MAILIMAP_BODY_FLD_ENC_8BIT,
			    MAILIMAP_BODY_FLD_ENC_BINARY)) {
			p->unfit = 1;
			return;
		}
		plan_message(p, one->bd_data.bd_type_msg->bd_body, sec,
			     depth + 1);
		return;
	case MAILIMAP_BODY_TYPE_1PART_TEXT:
		f = one->bd_data.bd_type_text->bd_fields;
		break;
	case MAILIMAP_BODY_TYPE_1PART_BASIC:
		f = one->bd_data.bd_type_basic->bd_fields;
		break;
	default:
		p->unfit = 1;
		return;
	}
	if (f->bd_size >= p->hole_min &&
	    (enc_is(f, MAILIMAP_BODY_FLD_ENC_7BIT, MAILIMAP_BODY_FLD_ENC_8BIT,
		    MAILIMAP_BODY_FLD_ENC_BINARY) ||
	     enc_is(f, MAILIMAP_BODY_FLD_ENC_BASE64,
		    MAILIMAP_BODY_FLD_ENC_QUOTED_PRINTABLE, -2))) {
		it = plan_add(p, MFS_SKEL_HOLE);
		if (it == NULL)
			return;
		if (sec_join(it->section, sec, "") != 0)
			p->unfit = 1;
		it->octets = f->bd_size;
		p->holes++;
		return;
	}
	p->small += f->bd_size;
	if (p->small > MFS_SKEL_SMALL_MAX)
		p->unfit = 1;
	plan_section(p, sec, "", 0);
}

/* The body of a part at section sec; msg_body: the body of a message (a
 * part that is not multipart is then section sec.1). */
static void plan_body(struct plan *p, const struct mailimap_body *b,
		      const char *sec, int msg_body, int depth)
{
	char leaf[MFS_SKEL_SECTION_MAX];

	if (p->unfit || p->nomem)
		return;
	if (b == NULL || depth > PLAN_DEPTH_MAX) {
		p->unfit = 1;
		return;
	}
	if (b->bd_type == MAILIMAP_BODY_MPART) {
		plan_multipart(p, b->bd_data.bd_body_mpart, sec, depth);
		return;
	}
	if (msg_body && b->bd_data.bd_body_1part->bd_type ==
			    MAILIMAP_BODY_TYPE_1PART_MSG) {
		p->unfit = 1; /* a message whose body is a message */
		return;
	}
	if (sec_join(leaf, sec, msg_body ? "1" : "") != 0) {
		p->unfit = 1;
		return;
	}
	plan_leaf(p, b->bd_data.bd_body_1part, leaf, depth);
}

void mfs_skel_free(struct mfs_skel *s)
{
	size_t i;

	for (i = 0; i < s->n; i++)
		free(s->items[i].text);
	free(s->items);
	s->items = NULL;
	s->n = 0;
}

int mfs_skel_plan(const struct mailimap_body *body, uint64_t hole_min,
		  struct mfs_skel *s, struct mfs_err *err)
{
	struct plan p = {.s = s, .hole_min = hole_min ? hole_min : 1};

	s->items = NULL;
	s->n = 0;
	plan_message(&p, body, "", 0);
	if (p.nomem) {
		mfs_skel_free(s);
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	}
	if (p.unfit || p.holes == 0)
		mfs_skel_free(s);
	mfs_err_clear(err);
	return MFS_OK;
}

static int pwrite_all(int fd, const char *buf, size_t len, size_t off)
{
	while (len > 0) {
		ssize_t w = pwrite(fd, buf, len, (off_t)off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		buf += w;
		len -= (size_t)w;
		off += (size_t)w;
	}
	return 0;
}

/* A header block ends with its blank line (or is that line alone). */
static int header_complete(const char *d, size_t n)
{
	return (n == 2 && memcmp(d, "\r\n", 2) == 0) ||
	       (n >= 4 && memcmp(d + n - 4, "\r\n\r\n", 4) == 0);
}

int mfs_skel_write(const struct mfs_skel *s, int fd, struct mfs_seg **segs,
		   size_t *nsegs, struct mfs_err *err)
{
	struct mfs_seg *v = calloc(s->n ? s->n : 1, sizeof(*v));
	size_t i, n = 0, off = 0;

	*segs = NULL;
	*nsegs = 0;
	if (v == NULL)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	for (i = 0; i < s->n; i++) {
		const struct mfs_skel_item *it = &s->items[i];
		const char *data = it->kind == MFS_SKEL_TEXT ? it->text
							     : it->data;
		size_t len = it->kind == MFS_SKEL_TEXT ? it->text_len
						       : it->data_len;

		if (it->kind == MFS_SKEL_SECTION && !it->got) {
			mfs_err_set(err, MFS_E_PROTO,
				    "the server sent no section %s",
				    it->section);
			goto fail;
		}
		if (it->kind == MFS_SKEL_SECTION && it->is_header &&
		    !header_complete(it->data, it->data_len)) {
			mfs_err_set(err, MFS_E_PROTO,
				    "section %s is not a header block",
				    it->section);
			goto fail;
		}
		if (it->kind == MFS_SKEL_HOLE) {
			v[n].off = off;
			v[n].len = (size_t)it->octets;
			v[n].hole = 1;
			v[n].section = strdup(it->section);
			if (v[n++].section == NULL) {
				mfs_err_set(err, MFS_E_NOMEM, "out of memory");
				goto fail;
			}
			off += (size_t)it->octets;
			continue;
		}
		if (len > 0 && pwrite_all(fd, data, len, off) != 0) {
			mfs_err_set(err, MFS_E_IO, "skeleton: %s",
				    strerror(errno));
			goto fail;
		}
		if (it->kind == MFS_SKEL_SECTION) {
			v[n].off = off;
			v[n++].len = len;
		}
		off += len;
	}
	if (ftruncate(fd, (off_t)off) != 0) {
		mfs_err_set(err, MFS_E_IO, "skeleton: %s", strerror(errno));
		goto fail;
	}
	*segs = v;
	*nsegs = n;
	mfs_err_clear(err);
	return MFS_OK;
fail:
	mfs_store_segs_free(v, n);
	return err->code;
}

/* ---- the skeleton's cache entry (skeleton.h) ---------------------------- */

#define SAVE_MAGIC "mailfs-skeleton 1\n"
/* A skeleton is at most as long as the largest message anyone keeps. */
#define SAVE_LEN_MAX (1ULL << 40)

/* Copies fd's bytes [off, off + len) to out at *at, which moves on. */
static int copy_range(int fd, size_t off, size_t len, int out, size_t *at)
{
	char buf[16384];

	while (len > 0) {
		size_t want = len < sizeof(buf) ? len : sizeof(buf);
		ssize_t r = pread(fd, buf, want, (off_t)off);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0 || pwrite_all(out, buf, (size_t)r, *at) != 0)
			return -1;
		*at += (size_t)r;
		off += (size_t)r;
		len -= (size_t)r;
	}
	return 0;
}

int mfs_skel_save(int fd, const struct mfs_seg *segs, size_t nsegs, int out,
		  struct mfs_err *err)
{
	struct stat st;
	char line[128 + MFS_SKEL_SECTION_MAX];
	size_t i, off = 0, len, at = 0;
	int n;

	if (fstat(fd, &st) != 0)
		return mfs_err_set(err, MFS_E_IO, "skeleton: %s",
				   strerror(errno));
	len = (size_t)st.st_size;
	n = snprintf(line, sizeof(line), SAVE_MAGIC "%zu %zu\n", len, nsegs);
	if (pwrite_all(out, line, (size_t)n, at) != 0)
		goto io;
	at += (size_t)n;
	for (i = 0; i < nsegs; i++) {
		const struct mfs_seg *g = &segs[i];

		if (g->off < off || g->len > len || g->off > len - g->len ||
		    (g->hole && (g->section == NULL ||
				 strlen(g->section) >= MFS_SKEL_SECTION_MAX)))
			return mfs_err_set(err, MFS_E_IO,
					   "skeleton: range %zu is not one "
					   "of the file",
					   i);
		n = snprintf(line, sizeof(line), "%zu %zu %s\n", g->off,
			     g->len, g->hole ? g->section : "-");
		if (pwrite_all(out, line, (size_t)n, at) != 0)
			goto io;
		at += (size_t)n;
		off = g->off + g->len;
	}
	/* the bytes between the holes */
	off = 0;
	for (i = 0; i <= nsegs; i++) {
		size_t end = i < nsegs ? segs[i].off : len;

		if (i < nsegs && !segs[i].hole)
			continue;
		if (copy_range(fd, off, end - off, out, &at) != 0)
			goto io;
		if (i < nsegs)
			off = segs[i].off + segs[i].len;
	}
	mfs_err_clear(err);
	return MFS_OK;
io:
	return mfs_err_set(err, MFS_E_IO, "skeleton: %s", strerror(errno));
}

/* Reads a decimal number ending with `end` at *p (before lim): no sign,
 * no leading zero, at most max. Returns 0 and moves *p past `end`. */
static int read_num(const char **p, const char *lim, char end, uint64_t max,
		    size_t *out)
{
	const char *s = *p;
	uint64_t v = 0;

	if (s >= lim || *s < '0' || *s > '9' || (*s == '0' && s + 1 < lim &&
						  s[1] >= '0' && s[1] <= '9'))
		return -1;
	for (; s < lim && *s >= '0' && *s <= '9'; s++) {
		v = v * 10 + (uint64_t)(*s - '0');
		if (v > max)
			return -1;
	}
	if (s >= lim || *s != end)
		return -1;
	*out = (size_t)v;
	*p = s + 1;
	return 0;
}

/* Reads a range's section at *p up to its newline: "-" (a real range,
 * *section NULL) or a hole's. */
static int read_section(const char **p, const char *lim, char **section)
{
	const char *s = *p, *nl = memchr(s, '\n', (size_t)(lim - s));
	size_t n, i;

	*section = NULL;
	if (nl == NULL || nl == s)
		return -1;
	n = (size_t)(nl - s);
	*p = nl + 1;
	if (n == 1 && *s == '-')
		return 0;
	if (n >= MFS_SKEL_SECTION_MAX)
		return -1;
	for (i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') ||
		      (s[i] >= 'A' && s[i] <= 'Z') || s[i] == '.'))
			return -1;
	*section = strndup(s, n);
	return *section != NULL ? 0 : -2;
}

int mfs_skel_load(const char *buf, size_t len, int fd, struct mfs_seg **segs,
		  size_t *nsegs, struct mfs_err *err)
{
	const char *p = buf, *lim = buf + len;
	struct mfs_seg *v = NULL; /* calloc'd: unread sections are NULL */
	size_t total, n = 0, i, off = 0, real, pos;
	int rc;

	*segs = NULL;
	*nsegs = 0;
	if (len < sizeof(SAVE_MAGIC) - 1 ||
	    memcmp(buf, SAVE_MAGIC, sizeof(SAVE_MAGIC) - 1) != 0)
		goto bad;
	p += sizeof(SAVE_MAGIC) - 1;
	if (read_num(&p, lim, ' ', SAVE_LEN_MAX, &total) != 0 ||
	    read_num(&p, lim, '\n', MFS_SKEL_ITEMS_MAX, &n) != 0 || n == 0)
		goto bad;
	v = calloc(n, sizeof(*v));
	if (v == NULL)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	real = total;
	for (i = 0; i < n; i++) {
		if (read_num(&p, lim, ' ', SAVE_LEN_MAX, &v[i].off) != 0 ||
		    read_num(&p, lim, ' ', SAVE_LEN_MAX, &v[i].len) != 0)
			goto bad;
		rc = read_section(&p, lim, &v[i].section);
		if (rc == -2) {
			mfs_store_segs_free(v, n);
			return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
		}
		if (rc != 0 || v[i].off < off || v[i].len > total ||
		    v[i].off > total - v[i].len)
			goto bad;
		v[i].hole = v[i].section != NULL;
		off = v[i].off + v[i].len;
		if (v[i].hole)
			real -= v[i].len;
	}
	/* the bytes outside the holes: exactly what is left */
	if ((size_t)(lim - p) != real)
		goto bad;
	if (ftruncate(fd, (off_t)total) != 0)
		goto io;
	pos = 0;
	for (i = 0; i <= n; i++) {
		size_t end = i < n ? v[i].off : total;

		if (i < n && !v[i].hole)
			continue;
		if (end > pos && pwrite_all(fd, p, end - pos, pos) != 0)
			goto io;
		p += end - pos;
		if (i < n)
			pos = v[i].off + v[i].len;
	}
	*segs = v;
	*nsegs = n;
	mfs_err_clear(err);
	return MFS_OK;
bad:
	mfs_store_segs_free(v, n);
	return mfs_err_set(err, MFS_E_PROTO,
			   "the cached skeleton is not one mailfs wrote");
io:
	mfs_store_segs_free(v, n);
	return mfs_err_set(err, MFS_E_IO, "skeleton: %s", strerror(errno));
}
