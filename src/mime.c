/* mime.c - see mime.h */
#include "mime.h"

#include <ctype.h>
#include <errno.h>
#include <iconv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base64.h"
#include "hash.h"
#include "header.h"
#include "names.h"

/* Decoders hand out at most this many bytes at a time. */
#define CHUNK 8192

/* The longest RFC 2231 continuation index we join (filename*99*). */
#define CONT_MAX 100

/* ---- small helpers ------------------------------------------------------- */

static char *xstrndup_lower(const char *s, size_t n)
{
	char *d = malloc(n + 1);
	size_t i;

	if (d == NULL)
		return NULL;
	for (i = 0; i < n; i++)
		d[i] = tolower((unsigned char)s[i]);
	d[n] = '\0';
	return d;
}

static int is_wsp(char c)
{
	return c == ' ' || c == '\t';
}

static int is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* ---- header block -------------------------------------------------------- */

static int is_from_line(const char *b, size_t p, size_t e)
{
	return e - p >= 5 && memcmp(b + p, "From ", 5) == 0;
}

/*
 * Splits [off, end) into a header block and a body. The header block ends
 * at a blank line (which belongs to neither) or before the first line that
 * is neither a field, a continuation nor a "From " line.
 */
static void split_headers(const char *b, size_t off, size_t end,
			  size_t *hdr_len, size_t *body_off)
{
	size_t p = off, next, e;

	while (p < end) {
		next = mfs_line_next(b, p, end);
		e = mfs_line_text_end(b, p, next);
		if (e == p && next > p) {
			/* a blank line: CRLF or LF alone */
			*hdr_len = p - off;
			*body_off = next;
			return;
		}
		if (!is_wsp(b[p]) && !is_from_line(b, p, e) &&
		    !mfs_field_line(b, p, e))
			break;
		p = next;
	}
	*hdr_len = p - off;
	*body_off = p;
}

/*
 * Copies len bytes at s as a C string with folding removed (a line end
 * before a blank goes; another line end becomes a space) and NUL bytes made
 * spaces; at most MFS_MIME_FIELD_MAX bytes are taken.
 */
static char *field_text(const char *s, size_t len)
{
	char *d, *o;
	size_t i;

	if (len > MFS_MIME_FIELD_MAX)
		len = MFS_MIME_FIELD_MAX;
	d = malloc(len + 1);
	if (d == NULL)
		return NULL;
	o = d;
	for (i = 0; i < len; i++) {
		char c = s[i];

		if (c == '\r' || c == '\n') {
			if (i + 1 < len &&
			    (s[i + 1] == '\r' || s[i + 1] == '\n'))
				continue;
			if (i + 1 < len && is_wsp(s[i + 1]))
				continue;
			c = ' ';
		}
		*o++ = c ? c : ' ';
	}
	*o = '\0';
	return d;
}

/* ---- parameters (RFC 2045, RFC 2231) ------------------------------------- */

struct param {
	char *name;  /* owned; lower case */
	char *value; /* owned; unquoted */
};

struct params {
	struct param *v; /* owned */
	size_t n;
	char *value; /* owned; the part before the first ';', trimmed */
};

static void params_free(struct params *ps)
{
	size_t i;

	for (i = 0; i < ps->n; i++) {
		free(ps->v[i].name);
		free(ps->v[i].value);
	}
	free(ps->v);
	free(ps->value);
	memset(ps, 0, sizeof(*ps));
}

static void trim(const char **s, const char **e)
{
	while (*s < *e && is_space(**s))
		(*s)++;
	while (*e > *s && is_space((*e)[-1]))
		(*e)--;
}

/* The unquoted copy of [s, e): a value in double quotes loses them and
 * its backslash escapes. */
static char *unquote(const char *s, const char *e)
{
	char *d, *o;

	if (e - s < 2 || *s != '"' || e[-1] != '"')
		return strndup(s, e - s);
	s++;
	e--;
	d = malloc(e - s + 1);
	if (d == NULL)
		return NULL;
	for (o = d; s < e; s++) {
		if (*s == '\\' && s + 1 < e)
			s++;
		*o++ = *s;
	}
	*o = '\0';
	return d;
}

/* The end of the ';'-separated item at s: quotes hide ';'. */
static const char *item_end(const char *s)
{
	int quoted = 0;

	for (; *s; s++) {
		if (*s == '\\' && quoted && s[1])
			s++;
		else if (*s == '"')
			quoted = !quoted;
		else if (*s == ';' && !quoted)
			break;
	}
	return s;
}

static int params_add(struct params *ps, const char *s, const char *e)
{
	const char *eq = memchr(s, '=', e - s), *ne, *vs;
	struct param *v;

	if (eq == NULL)
		return 0;
	ne = eq;
	trim(&s, &ne);
	vs = eq + 1;
	trim(&vs, &e);
	if (s == ne)
		return 0;
	v = realloc(ps->v, (ps->n + 1) * sizeof(*v));
	if (v == NULL)
		return -1;
	ps->v = v;
	v[ps->n].name = xstrndup_lower(s, ne - s);
	v[ps->n].value = unquote(vs, e);
	if (v[ps->n].name == NULL || v[ps->n].value == NULL) {
		free(v[ps->n].name);
		free(v[ps->n].value);
		return -1;
	}
	ps->n++;
	return 0;
}

/* Parses a field value "value; a=b; c="d"" (a C string). Returns 0 or -1
 * when out of memory. */
static int params_parse(const char *text, struct params *ps)
{
	const char *s = text, *e = item_end(s), *vs, *ve;

	memset(ps, 0, sizeof(*ps));
	vs = s;
	ve = e;
	trim(&vs, &ve);
	ps->value = strndup(vs, ve - vs);
	if (ps->value == NULL)
		return -1;
	while (*e == ';') {
		s = e + 1;
		e = item_end(s);
		if (params_add(ps, s, e) < 0)
			return -1;
	}
	return 0;
}

static const char *param_raw(const struct params *ps, const char *name)
{
	size_t i;

	for (i = 0; i < ps->n; i++)
		if (strcmp(ps->v[i].name, name) == 0)
			return ps->v[i].value;
	return NULL;
}

/* Appends s to the growing string *d (length *n); in plain (not extended)
 * continuations '%' and '\'' are escaped so that the RFC 2231 decoder
 * leaves them alone. */
static int cat_section(char **d, size_t *n, const char *s, int extended)
{
	size_t add = strlen(s) * 3, i;
	char *p = realloc(*d, *n + add + 1);

	if (p == NULL)
		return -1;
	*d = p;
	for (i = 0; s[i]; i++) {
		if (!extended && (s[i] == '%' || s[i] == '\'')) {
			*n += sprintf(p + *n, "%%%02X", (unsigned char)s[i]);
			continue;
		}
		p[(*n)++] = s[i];
	}
	p[*n] = '\0';
	return 0;
}

/* Joins name*0, name*1*, ... into one RFC 2231 value; NULL with errno 0
 * when there is no name*0. */
static char *param_continued(const struct params *ps, const char *name,
			     int *any_ext)
{
	char key[64], *d = NULL;
	const char *v;
	size_t n = 0;
	int i, ext;

	errno = 0;
	*any_ext = 0;
	for (i = 0; i < CONT_MAX; i++) {
		snprintf(key, sizeof(key), "%s*%d*", name, i);
		v = param_raw(ps, key);
		ext = v != NULL;
		if (v == NULL) {
			snprintf(key, sizeof(key), "%s*%d", name, i);
			v = param_raw(ps, key);
		}
		if (v == NULL)
			break;
		if (ext)
			*any_ext = 1;
		if (cat_section(&d, &n, v, ext) < 0) {
			free(d);
			errno = ENOMEM;
			return NULL;
		}
	}
	return d;
}

/*
 * The decoded value of parameter name: name* (RFC 2231), else name*0...,
 * else name (RFC 2047 decoded when words is set, as mail software puts
 * encoded words in quoted file names). NULL with errno 0 when absent,
 * errno ENOMEM when out of memory.
 */
static char *param_get(const struct params *ps, const char *name, int words)
{
	char key[64], *joined, *r;
	const char *v;
	int ext;

	snprintf(key, sizeof(key), "%s*", name);
	v = param_raw(ps, key);
	if (v != NULL)
		goto decode_2231;
	joined = param_continued(ps, name, &ext);
	if (joined != NULL) {
		if (!ext) {
			/* plain continuations: undo our escaping */
			r = mfs_rfc2231_decode(joined);
			free(joined);
			if (r != NULL && words) {
				char *w = mfs_hdr_decode(r);

				free(r);
				r = w;
			}
			goto done;
		}
		r = mfs_rfc2231_decode(joined);
		free(joined);
		goto done;
	}
	if (errno == ENOMEM)
		return NULL;
	v = param_raw(ps, name);
	if (v == NULL) {
		errno = 0;
		return NULL;
	}
	r = words ? mfs_hdr_decode(v) : strdup(v);
	goto done;
decode_2231:
	r = mfs_rfc2231_decode(v);
done:
	if (r == NULL)
		errno = ENOMEM;
	return r;
}

/* ---- part tree ----------------------------------------------------------- */

struct pctx {
	const char *b;
	size_t nparts;
	int nomem;
	mfs_release_fn release; /* or NULL */
	mfs_skip_fn skip;	/* or NULL */
	void *release_ctx;	/* for both */
	size_t mark; /* where the scan was at the last release */
};

/* Bytes scanned or decoded between two calls of a release function. */
#define RELEASE_EVERY (2u << 20)

/* The delimiter scan is at p: calls the release function once every
 * RELEASE_EVERY bytes of progress. */
static void scan_progress(struct pctx *c, size_t p)
{
	if (c->release == NULL)
		return;
	if (p < c->mark) {
		c->mark = p;
	} else if (p - c->mark >= RELEASE_EVERY) {
		c->release(c->release_ctx);
		c->mark = p;
	}
}

void mfs_part_free(struct mfs_part *p)
{
	size_t i;

	if (p == NULL)
		return;
	for (i = 0; i < p->nchildren; i++)
		mfs_part_free(p->children[i]);
	free(p->children);
	mfs_part_free(p->message);
	free(p->type);
	free(p->subtype);
	free(p->charset);
	free(p->filename);
	free(p->section);
	free(p);
}

static struct mfs_part *part_new(struct pctx *c, struct mfs_part *parent)
{
	struct mfs_part *p = calloc(1, sizeof(*p));

	if (p == NULL) {
		c->nomem = 1;
		return NULL;
	}
	p->parent = parent;
	c->nparts++;
	return p;
}

static int set_type(struct mfs_part *p, const char *t, size_t tn, const char *s,
		    size_t sn)
{
	free(p->type);
	free(p->subtype);
	p->type = xstrndup_lower(t, tn);
	p->subtype = xstrndup_lower(s, sn);
	return p->type && p->subtype ? 0 : -1;
}

static int is_token_char(char c)
{
	return (unsigned char)c > 0x20 && (unsigned char)c < 0x7f &&
	       !strchr("()<>@,;:\\\"/[]?=", c);
}

/* Takes type/subtype from a Content-Type value; 0 when it is not one. */
static int parse_type_value(struct mfs_part *p, const char *v, int *nomem)
{
	const char *t = v, *sl, *s, *e;

	while (is_space(*t))
		t++;
	for (sl = t; is_token_char(*sl); sl++)
		;
	if (*sl != '/' || sl == t)
		return 0;
	s = sl + 1;
	for (e = s; is_token_char(*e); e++)
		;
	if (e == s)
		return 0;
	if (set_type(p, t, sl - t, s, e - s) < 0)
		*nomem = 1;
	return 1;
}

enum mfs_cte mfs_cte_from_name(const char *name)
{
	const char *s, *e;

	if (name == NULL)
		return MFS_CTE_BINARY;
	s = name;
	e = name + strlen(name);
	trim(&s, &e);
	if (e - s == 6 && strncasecmp(s, "base64", 6) == 0)
		return MFS_CTE_BASE64;
	if (e - s == 16 && strncasecmp(s, "quoted-printable", 16) == 0)
		return MFS_CTE_QP;
	return MFS_CTE_BINARY;
}

/* Fills type, charset, cte, disposition and file name from the header
 * block of p; a multipart's boundary goes to *bnd (owned by the caller).
 * Returns -1 when out of memory. */
static int read_part_headers(struct pctx *c, struct mfs_part *p, int digest,
			     char **bnd)
{
	struct mfs_field f;
	struct params ct = {0}, cd = {0};
	char *text = NULL;
	int nomem = 0, have_type = 0;

	if (mfs_field_find(c->b, p->hdr_off, p->hdr_len, "content-type", &f)) {
		text = field_text(c->b + f.colon + 1, f.end - f.colon - 1);
		if (text == NULL || params_parse(text, &ct) < 0)
			goto nomem;
		free(text);
		text = NULL;
		have_type = parse_type_value(p, ct.value, &nomem);
		if (nomem)
			goto nomem;
	}
	if (!have_type) {
		if (digest ? set_type(p, "message", 7, "rfc822", 6)
			   : set_type(p, "text", 4, "plain", 5))
			goto nomem;
	}
	if (mfs_field_find(c->b, p->hdr_off, p->hdr_len,
		       "content-transfer-encoding", &f)) {
		text = field_text(c->b + f.colon + 1, f.end - f.colon - 1);
		if (text == NULL)
			goto nomem;
		p->cte = mfs_cte_from_name(text);
		free(text);
		text = NULL;
	}
	if (mfs_field_find(c->b, p->hdr_off, p->hdr_len, "content-disposition",
		       &f)) {
		text = field_text(c->b + f.colon + 1, f.end - f.colon - 1);
		if (text == NULL || params_parse(text, &cd) < 0)
			goto nomem;
		free(text);
		text = NULL;
		if (strcasecmp(cd.value, "inline") == 0)
			p->disp = MFS_DISP_INLINE;
		else if (cd.value[0] != '\0')
			p->disp = MFS_DISP_ATTACHMENT;
	}
	if (have_type) {
		char *cs = param_get(&ct, "charset", 0);

		if (cs == NULL && errno == ENOMEM)
			goto nomem;
		if (cs != NULL) {
			p->charset = xstrndup_lower(cs, strlen(cs));
			free(cs);
			if (p->charset == NULL)
				goto nomem;
		}
	}
	if (cd.value != NULL) {
		p->filename = param_get(&cd, "filename", 1);
		if (p->filename == NULL && errno == ENOMEM)
			goto nomem;
	}
	if (p->filename == NULL && have_type) {
		p->filename = param_get(&ct, "name", 1);
		if (p->filename == NULL && errno == ENOMEM)
			goto nomem;
	}
	if (p->filename != NULL && p->filename[0] == '\0') {
		free(p->filename);
		p->filename = NULL;
	}
	if (have_type && strcmp(p->type, "multipart") == 0) {
		*bnd = param_get(&ct, "boundary", 0);
		if (*bnd == NULL && errno == ENOMEM)
			goto nomem;
	}
	params_free(&ct);
	params_free(&cd);
	return 0;
nomem:
	free(text);
	params_free(&ct);
	params_free(&cd);
	c->nomem = 1;
	return -1;
}

/*
 * Finds the next delimiter line "--bnd" ["--"] [blanks] EOL at a line start
 * in [p, end). Returns 1 and fills *dstart (its first byte), *dnext (just
 * past it) and *close, or 0.
 */
static int find_delim(struct pctx *c, size_t p, size_t end, const char *bnd,
		      size_t blen, size_t *dstart, size_t *dnext, int *close)
{
	const char *b = c->b;
	size_t next, e, q;

	for (; p < end; p = next) {
		if (c->skip != NULL) {
			p = c->skip(c->release_ctx, p);
			if (p >= end)
				break;
		}
		next = mfs_line_next(b, p, end);
		scan_progress(c, next);
		if (b[p] != '-')
			continue;
		e = mfs_line_text_end(b, p, next);
		if (e - p < blen + 2 || b[p + 1] != '-' ||
		    memcmp(b + p + 2, bnd, blen) != 0)
			continue;
		q = p + 2 + blen;
		*close = 0;
		if (e - q >= 2 && b[q] == '-' && b[q + 1] == '-') {
			*close = 1;
			q += 2;
		}
		while (q < e && is_wsp(b[q]))
			q++;
		if (q != e)
			continue;
		*dstart = p;
		*dnext = next;
		return 1;
	}
	return 0;
}

static int parse_part(struct pctx *c, struct mfs_part *p, size_t off,
		      size_t end, int depth, int digest);

static int add_child(struct pctx *c, struct mfs_part *p, struct mfs_part *child)
{
	struct mfs_part **v;

	v = realloc(p->children, (p->nchildren + 1) * sizeof(*v));
	if (v == NULL) {
		mfs_part_free(child);
		c->nomem = 1;
		return -1;
	}
	p->children = v;
	v[p->nchildren++] = child;
	return 0;
}

/* The rest of a multipart, [off, end), as one opaque leaf. */
static int add_opaque(struct pctx *c, struct mfs_part *p, size_t off,
		      size_t end)
{
	struct mfs_part *leaf = part_new(c, p);

	if (leaf == NULL)
		return -1;
	leaf->hdr_off = off;
	leaf->body_off = off;
	leaf->body_len = end - off;
	leaf->opaque = 1;
	if (set_type(leaf, "application", 11, "octet-stream", 12) < 0) {
		mfs_part_free(leaf);
		c->nomem = 1;
		return -1;
	}
	return add_child(c, p, leaf);
}

/* Splits the body of multipart p at its boundary bnd. Returns -1 when out
 * of memory; a body without any delimiter leaves p without children. */
static int split_multipart(struct pctx *c, struct mfs_part *p, const char *bnd,
			   int depth)
{
	size_t blen = strlen(bnd), end = p->body_off + p->body_len;
	size_t pos, dstart, dnext, cend;
	int close, found, digest = strcmp(p->subtype, "digest") == 0;
	struct mfs_part *child;

	if (blen == 0 || !find_delim(c, p->body_off, end, bnd, blen, &dstart,
				     &dnext, &close)) {
		p->broken_multi = 1;
		return 0;
	}
	if (close)
		return 0;
	pos = dnext;
	for (;;) {
		if (c->nparts >= MFS_MIME_PARTS_MAX)
			return add_opaque(c, p, pos, end);
		found = find_delim(c, pos, end, bnd, blen, &dstart, &dnext,
				   &close);
		cend = end;
		if (found) {
			cend = dstart;
			if (cend > pos && c->b[cend - 1] == '\n')
				cend--;
			if (cend > pos && c->b[cend - 1] == '\r')
				cend--;
		}
		child = part_new(c, p);
		if (child == NULL)
			return -1;
		if (add_child(c, p, child) < 0)
			return -1;
		if (parse_part(c, child, pos, cend, depth + 1, digest) < 0)
			return -1;
		if (!found || close)
			return 0;
		pos = dnext;
	}
}

/* Parses [off, end) as one part with its headers into p. */
static int parse_part(struct pctx *c, struct mfs_part *p, size_t off,
		      size_t end, int depth, int digest)
{
	size_t hlen, boff;
	char *bnd = NULL;
	int r = 0;

	split_headers(c->b, off, end, &hlen, &boff);
	p->hdr_off = off;
	p->hdr_len = hlen;
	p->body_off = boff;
	p->body_len = end - boff;
	if (read_part_headers(c, p, digest, &bnd) < 0)
		return -1;
	if (strcmp(p->type, "multipart") == 0) {
		if (depth >= MFS_MIME_DEPTH_MAX)
			p->opaque = 1;
		else if (bnd == NULL)
			p->broken_multi = 1;
		else
			r = split_multipart(c, p, bnd, depth);
	} else if (strcmp(p->type, "message") == 0 &&
		   (strcmp(p->subtype, "rfc822") == 0 ||
		    strcmp(p->subtype, "global") == 0) &&
		   p->cte == MFS_CTE_BINARY) {
		if (depth >= MFS_MIME_DEPTH_MAX ||
		    c->nparts >= MFS_MIME_PARTS_MAX) {
			p->opaque = 1;
		} else {
			p->message = part_new(c, p);
			if (p->message == NULL)
				r = -1;
			else
				r = parse_part(c, p->message, boff, end,
					       depth + 1, 0);
		}
	}
	free(bnd);
	return r;
}

static int is_split(const struct mfs_part *p)
{
	return strcmp(p->type, "multipart") == 0 && !p->opaque &&
	       !p->broken_multi;
}

/* Gives p and everything below it IMAP section numbers. */
static int assign_sections(struct mfs_part *p, const char *sec)
{
	size_t i;
	char *s;

	p->section = strdup(sec);
	if (p->section == NULL)
		return -1;
	for (i = 0; i < p->nchildren; i++) {
		if (asprintf(&s, "%s%s%zu", sec, *sec ? "." : "", i + 1) < 0)
			return -1;
		if (assign_sections(p->children[i], s) < 0) {
			free(s);
			return -1;
		}
		free(s);
	}
	if (p->message == NULL)
		return 0;
	if (is_split(p->message))
		return assign_sections(p->message, sec);
	if (asprintf(&s, "%s.1", sec) < 0)
		return -1;
	i = assign_sections(p->message, s);
	free(s);
	return (int)i;
}

static int mime_parse(const char *buf, size_t len, mfs_release_fn release,
		      mfs_skip_fn skip, void *ctx, struct mfs_part **out,
		      struct mfs_err *err)
{
	struct pctx c = {buf, 0, 0, release, skip, ctx, 0};
	struct mfs_part *root;

	*out = NULL;
	root = part_new(&c, NULL);
	if (root == NULL)
		goto nomem;
	if (parse_part(&c, root, 0, len, 0, 0) < 0 || c.nomem)
		goto free_root;
	if (assign_sections(root, is_split(root) ? "" : "1") < 0)
		goto free_root;
	*out = root;
	return 0;
free_root:
	mfs_part_free(root);
nomem:
	return mfs_err_set(err, MFS_E_NOMEM, "out of memory parsing a message");
}

int mfs_mime_parse(const char *buf, size_t len, struct mfs_part **out,
		   struct mfs_err *err)
{
	return mime_parse(buf, len, NULL, NULL, NULL, out, err);
}

static int sink_chunks(mfs_sink_fn sink, void *ctx, const char *d, size_t n);

/* ---- transfer decoding --------------------------------------------------- */

/* Collects output bytes and hands them on in chunks. */
struct outbuf {
	mfs_sink_fn sink;
	void *ctx;
	size_t n;
	char data[CHUNK];
};

static int out_flush(struct outbuf *o)
{
	int r = 0;

	if (o->n > 0)
		r = o->sink(o->ctx, o->data, o->n);
	o->n = 0;
	return r;
}

static int out_byte(struct outbuf *o, char c)
{
	o->data[o->n++] = c;
	return o->n == sizeof(o->data) ? out_flush(o) : 0;
}

static int out_bytes(struct outbuf *o, const char *s, size_t n)
{
	size_t take;
	int r;

	while (n > 0) {
		take = sizeof(o->data) - o->n;
		if (take > n)
			take = n;
		memcpy(o->data + o->n, s, take);
		o->n += take;
		s += take;
		n -= take;
		if (o->n == sizeof(o->data) && (r = out_flush(o)) != 0)
			return r;
	}
	return 0;
}

#define B64_CHUNK 4096 /* characters decoded at a time */

static int b64_decode(const char *in, size_t len, struct outbuf *o)
{
	struct mfs_b64_dec d = {0};
	unsigned char buf[MFS_B64_DECODED_MAX(B64_CHUNK)];
	size_t take, n;
	int r;

	while (len > 0) {
		take = len < B64_CHUNK ? len : B64_CHUNK;
		n = mfs_b64_decode(&d, in, take, buf);
		if ((r = out_bytes(o, (const char *)buf, n)) != 0)
			return r;
		in += take;
		len -= take;
	}
	return 0;
}

static int qp_decode(const char *in, size_t len, struct outbuf *o)
{
	size_t i = 0, j, k;
	int r, h, l;

	while (i < len) {
		const char *eq = memchr(in + i, '=', len - i);
		size_t lit = eq ? (size_t)(eq - in) - i : len - i;

		if ((r = out_bytes(o, in + i, lit)) != 0)
			return r;
		i += lit;
		if (i >= len)
			break;
		j = i + 1;
		if (j >= len)
			break; /* a '=' at the very end goes */
		for (k = j; k < len && is_wsp(in[k]); k++)
			;
		if (k == len || in[k] == '\n') {
			i = k + (k < len); /* soft line break */
			continue;
		}
		if (in[k] == '\r') {
			i = k + 1 + (k + 1 < len && in[k + 1] == '\n');
			continue;
		}
		h = mfs_hex_value((unsigned char)in[j]);
		l = j + 1 < len ? mfs_hex_value((unsigned char)in[j + 1]) : -1;
		if (h >= 0 && l >= 0) {
			r = out_byte(o, (char)(h << 4 | l));
			i = j + 2;
		} else if (in[j] == '=') {
			r = out_byte(o, '=');
			i = j + 1;
		} else {
			r = out_byte(o, '=');
			i = j;
		}
		if (r != 0)
			return r;
	}
	return 0;
}

int mfs_cte_decode(enum mfs_cte cte, const char *in, size_t len,
		   mfs_sink_fn sink, void *ctx)
{
	struct outbuf *o;
	int r;

	if (cte == MFS_CTE_BINARY)
		return sink_chunks(sink, ctx, in, len);
	o = malloc(sizeof(*o));
	if (o == NULL)
		return MFS_E_NOMEM;
	o->sink = sink;
	o->ctx = ctx;
	o->n = 0;
	r = cte == MFS_CTE_BASE64 ? b64_decode(in, len, o)
				  : qp_decode(in, len, o);
	if (r == 0)
		r = out_flush(o);
	free(o);
	return r;
}

/* ---- charset conversion -------------------------------------------------- */

/* Streaming strict UTF-8 check (NUL allowed). */
struct u8check {
	int need;
	unsigned char lo, hi;
	int bad;
};

static int u8check_sink(void *ctx, const char *d, size_t n)
{
	struct u8check *u = ctx;
	size_t i;

	for (i = 0; i < n; i++) {
		unsigned char c = d[i];

		if (u->need > 0) {
			if (c < u->lo || c > u->hi)
				goto bad;
			u->need--;
			u->lo = 0x80;
			u->hi = 0xBF;
			continue;
		}
		if (c < 0x80)
			continue;
		u->lo = 0x80;
		u->hi = 0xBF;
		if (c >= 0xC2 && c <= 0xDF)
			u->need = 1;
		else if (c >= 0xE0 && c <= 0xEF)
			u->need = 2;
		else if (c >= 0xF0 && c <= 0xF4)
			u->need = 3;
		else
			goto bad;
		if (c == 0xE0)
			u->lo = 0xA0;
		else if (c == 0xED)
			u->hi = 0x9F;
		else if (c == 0xF0)
			u->lo = 0x90;
		else if (c == 0xF4)
			u->hi = 0x8F;
	}
	return 0;
bad:
	u->bad = 1;
	return MFS_SINK_STOP;
}

/* windows-1252 0x80..0x9F; the five undefined bytes give U+FFFD. */
static const unsigned short cp1252_high[32] = {
    0x20AC, 0xFFFD, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021,
    0x02C6, 0x2030, 0x0160, 0x2039, 0x0152, 0xFFFD, 0x017D, 0xFFFD,
    0xFFFD, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,
    0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0xFFFD, 0x017E, 0x0178,
};

#define CHARSET_NAME_MAX 40

/* A converter to UTF-8 for charset, or (iconv_t)-1 for "no charset":
 * NULL, us-ascii, an implausible name or one iconv does not know. */
static iconv_t charset_open(const char *cs)
{
	size_t n;

	if (cs == NULL)
		return (iconv_t)-1;
	n = strlen(cs);
	if (n == 0 || n > CHARSET_NAME_MAX || strcasecmp(cs, "us-ascii") == 0 ||
	    strcasecmp(cs, "ascii") == 0)
		return (iconv_t)-1;
	return mfs_charset_open(cs, n);
}

/* The last stage of text: CRLF -> LF. */
struct lfstage {
	struct outbuf o;
	int cr;
};

static int lf_push(struct lfstage *s, const char *d, size_t n)
{
	size_t i;
	int r;

	for (i = 0; i < n; i++) {
		if (s->cr) {
			s->cr = 0;
			if (d[i] != '\n' && (r = out_byte(&s->o, '\r')) != 0)
				return r;
		}
		if (d[i] == '\r') {
			s->cr = 1;
			continue;
		}
		if ((r = out_byte(&s->o, d[i])) != 0)
			return r;
	}
	return 0;
}

static int lf_finish(struct lfstage *s)
{
	int r;

	if (s->cr) {
		s->cr = 0;
		if ((r = out_byte(&s->o, '\r')) != 0)
			return r;
	}
	return out_flush(&s->o);
}

enum text_mode { TEXT_UTF8, TEXT_CP1252, TEXT_ICONV };

struct textconv {
	enum text_mode mode;
	iconv_t cd;
	size_t ncarry;
	char carry[16];
	char in[CHUNK + 16];
	char obuf[CHUNK];
	struct lfstage lf;
};

static const char replacement[] = "\xEF\xBF\xBD";

static int put_cp(struct lfstage *lf, unsigned cp)
{
	char u[3];
	size_t n;

	if (cp < 0x80) {
		u[0] = (char)cp;
		n = 1;
	} else if (cp < 0x800) {
		u[0] = (char)(0xC0 | cp >> 6);
		u[1] = (char)(0x80 | (cp & 0x3F));
		n = 2;
	} else {
		u[0] = (char)(0xE0 | cp >> 12);
		u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
		u[2] = (char)(0x80 | (cp & 0x3F));
		n = 3;
	}
	return lf_push(lf, u, n);
}

/* Converts [in, in + len) through t->cd; a trailing incomplete sequence is
 * kept for the next call unless final. */
static int iconv_run(struct textconv *t, char *in, size_t len, int final)
{
	char *ip = in, *op;
	size_t ileft = len, oleft, rc;
	int r;

	t->ncarry = 0;
	while (ileft > 0) {
		op = t->obuf;
		oleft = sizeof(t->obuf);
		rc = iconv(t->cd, &ip, &ileft, &op, &oleft);
		if (op > t->obuf &&
		    (r = lf_push(&t->lf, t->obuf, op - t->obuf)) != 0)
			return r;
		if (rc != (size_t)-1 || errno == E2BIG)
			continue;
		if (errno == EINVAL && !final && ileft < sizeof(t->carry)) {
			memcpy(t->carry, ip, ileft);
			t->ncarry = ileft;
			return 0;
		}
		/* EILSEQ, or a truncated sequence at the end: one byte */
		if ((r = lf_push(&t->lf, replacement, 3)) != 0)
			return r;
		ip++;
		ileft--;
		iconv(t->cd, NULL, NULL, NULL, NULL);
	}
	return 0;
}

static int text_sink(void *ctx, const char *d, size_t n)
{
	struct textconv *t = ctx;
	size_t i, take;
	int r;

	if (t->mode == TEXT_UTF8)
		return lf_push(&t->lf, d, n);
	if (t->mode == TEXT_CP1252) {
		for (i = 0; i < n; i++) {
			unsigned char c = d[i];
			unsigned cp =
			    c >= 0x80 && c < 0xA0 ? cp1252_high[c - 0x80] : c;

			if ((r = put_cp(&t->lf, cp)) != 0)
				return r;
		}
		return 0;
	}
	while (n > 0) {
		memcpy(t->in, t->carry, t->ncarry);
		take = n < CHUNK ? n : CHUNK;
		memcpy(t->in + t->ncarry, d, take);
		if ((r = iconv_run(t, t->in, t->ncarry + take, 0)) != 0)
			return r;
		d += take;
		n -= take;
	}
	return 0;
}

static int text_finish(struct textconv *t)
{
	char *op;
	size_t oleft;
	int r;

	if (t->mode == TEXT_ICONV) {
		memcpy(t->in, t->carry, t->ncarry);
		if ((r = iconv_run(t, t->in, t->ncarry, 1)) != 0)
			return r;
		op = t->obuf;
		oleft = sizeof(t->obuf);
		iconv(t->cd, NULL, NULL, &op, &oleft);
		if (op > t->obuf &&
		    (r = lf_push(&t->lf, t->obuf, op - t->obuf)) != 0)
			return r;
	}
	return lf_finish(&t->lf);
}

/* Runs the transfer decoding of [in, in + len), then text conversion. */
static int text_decode(const char *charset, enum mfs_cte cte, const char *in,
		       size_t len, mfs_sink_fn sink, void *ctx)
{
	struct textconv *t;
	struct u8check u = {0, 0x80, 0xBF, 0};
	int r, plain = 0;

	t = malloc(sizeof(*t));
	if (t == NULL)
		return MFS_E_NOMEM;
	t->ncarry = 0;
	t->lf.o.sink = sink;
	t->lf.o.ctx = ctx;
	t->lf.o.n = 0;
	t->lf.cr = 0;
	t->cd = (iconv_t)-1;
	if (charset != NULL && (strcasecmp(charset, "utf-8") == 0 ||
				strcasecmp(charset, "utf8") == 0)) {
		/* valid UTF-8 is what iconv would make of it: as it is */
		r = mfs_cte_decode(cte, in, len, u8check_sink, &u);
		if (r != 0 && r != MFS_SINK_STOP)
			goto free_t;
		plain = !u.bad && !u.need;
		u = (struct u8check){0, 0x80, 0xBF, 0};
	}
	if (plain) {
		t->mode = TEXT_UTF8;
	} else if ((t->cd = charset_open(charset)) != (iconv_t)-1) {
		t->mode = TEXT_ICONV;
	} else {
		r = mfs_cte_decode(cte, in, len, u8check_sink, &u);
		if (r != 0 && r != MFS_SINK_STOP)
			goto free_t;
		t->mode = u.bad || u.need ? TEXT_CP1252 : TEXT_UTF8;
	}
	r = mfs_cte_decode(cte, in, len, text_sink, t);
	if (r == 0)
		r = text_finish(t);
free_t:
	if (t->cd != (iconv_t)-1)
		iconv_close(t->cd);
	free(t);
	return r;
}

int mfs_text_decode(const char *charset, const char *in, size_t len,
		    mfs_sink_fn sink, void *ctx)
{
	return text_decode(charset, MFS_CTE_BINARY, in, len, sink, ctx);
}

/* Passes n bytes at d to sink in pieces of at most CHUNK bytes. */
static int sink_chunks(mfs_sink_fn sink, void *ctx, const char *d, size_t n)
{
	size_t take;
	int r;

	while (n > 0) {
		take = n < CHUNK ? n : CHUNK;
		if ((r = sink(ctx, d, take)) != 0)
			return r;
		d += take;
		n -= take;
	}
	return 0;
}

/* ---- header files -------------------------------------------------------- */

/* Decodes one header text (len bytes at s) and passes it on with "\n";
 * value trims surrounding blanks. */
static int emit_decoded(const char *s, size_t len, int value, mfs_sink_fn sink,
			void *ctx)
{
	char *raw, *dec;
	const char *ds, *de;
	int r;

	raw = field_text(s, len);
	if (raw == NULL)
		return MFS_E_NOMEM;
	dec = mfs_hdr_decode(raw);
	free(raw);
	if (dec == NULL)
		return MFS_E_NOMEM;
	ds = dec;
	de = dec + strlen(dec);
	if (value)
		trim(&ds, &de);
	r = sink_chunks(sink, ctx, ds, de - ds);
	if (r == 0)
		r = sink(ctx, "\n", 1);
	free(dec);
	return r;
}

static int headers_decode(const char *b, size_t off, size_t len,
			  mfs_sink_fn sink, void *ctx)
{
	size_t pos = off;
	struct mfs_field f;
	int r;

	while (mfs_field_next(b, &pos, off + len, &f))
		if ((r = emit_decoded(b + f.off, f.end - f.off, 0, sink,
				      ctx)) != 0)
			return r;
	return 0;
}

/* ---- reading entries ----------------------------------------------------- */

/* A sink in front of the caller's that calls the layout's release function
 * once every RELEASE_EVERY bytes that pass. */
struct release_sink {
	mfs_sink_fn sink;
	void *ctx;
	const struct mfs_layout *l;
	size_t since;
};

static int release_sink(void *ctx, const char *d, size_t n)
{
	struct release_sink *rs = ctx;

	rs->since += n;
	if (rs->since >= RELEASE_EVERY) {
		rs->l->release(rs->l->release_ctx);
		rs->since = 0;
	}
	return rs->sink(rs->ctx, d, n);
}

static int source_decode(const struct mfs_layout *l, const struct mfs_source *s,
			 mfs_sink_fn sink, void *ctx)
{
	const char *b = l->buf + s->off;
	struct release_sink rs = {sink, ctx, l, 0};

	if (l->release != NULL && s->len >= RELEASE_EVERY) {
		sink = release_sink;
		ctx = &rs;
	}

	switch (s->kind) {
	case MFS_SRC_STRING:
		return sink_chunks(sink, ctx, s->str, s->str_len);
	case MFS_SRC_RAW:
		return mfs_cte_decode(MFS_CTE_BINARY, b, s->len, sink, ctx);
	case MFS_SRC_DECODED:
		return mfs_cte_decode(s->cte, b, s->len, sink, ctx);
	case MFS_SRC_TEXT:
		return text_decode(s->charset, s->cte, b, s->len, sink, ctx);
	case MFS_SRC_HEADERS:
		return headers_decode(l->buf, s->off, s->len, sink, ctx);
	case MFS_SRC_FIELD:
		return emit_decoded(b, s->len, 1, sink, ctx);
	}
	return 0;
}

static int finish_rc(int r, struct mfs_err *err)
{
	if (r == 0 || r == MFS_SINK_STOP)
		return 0;
	if (r == MFS_E_NOMEM)
		return mfs_err_set(err, MFS_E_NOMEM,
				   "out of memory decoding a message part");
	if (r < 0)
		r = MFS_E_IO;
	return mfs_err_set(err, (enum mfs_errcode)r,
			   "the output of a decoded message part was refused");
}

int mfs_entry_decode(const struct mfs_layout *l, const struct mfs_entry *e,
		     mfs_sink_fn sink, void *ctx, struct mfs_err *err)
{
	if (e->is_dir)
		return mfs_err_set(err, MFS_E_INVAL, "%s is a directory",
				   e->name);
	return finish_rc(source_decode(l, &e->src, sink, ctx), err);
}

static int count_sink(void *ctx, const char *d, size_t n)
{
	(void)d;
	*(uint64_t *)ctx += n;
	return 0;
}

int mfs_entry_size(const struct mfs_layout *l, struct mfs_entry *e,
		   uint64_t *size, struct mfs_err *err)
{
	uint64_t n = 0;
	int r;

	if (e->is_dir)
		return mfs_err_set(err, MFS_E_INVAL, "%s is a directory",
				   e->name);
	if (!e->src.size_known) {
		r = source_decode(l, &e->src, count_sink, &n);
		if (r != 0)
			return finish_rc(r, err);
		e->src.size = n;
		e->src.size_known = 1;
	}
	*size = e->src.size;
	return 0;
}

struct read_ctx {
	uint64_t skip;
	char *out;
	size_t size, got;
};

static int read_sink(void *ctx, const char *d, size_t n)
{
	struct read_ctx *rc = ctx;
	size_t take;

	if (rc->skip >= n) {
		rc->skip -= n;
		return 0;
	}
	d += rc->skip;
	n -= rc->skip;
	rc->skip = 0;
	take = rc->size - rc->got;
	if (take > n)
		take = n;
	memcpy(rc->out + rc->got, d, take);
	rc->got += take;
	return rc->got == rc->size ? MFS_SINK_STOP : 0;
}

int mfs_entry_read(const struct mfs_layout *l, const struct mfs_entry *e,
		   uint64_t off, char *out, size_t size, size_t *got,
		   struct mfs_err *err)
{
	struct read_ctx rc = {off, out, size, 0};
	int r;

	*got = 0;
	if (e->is_dir)
		return mfs_err_set(err, MFS_E_INVAL, "%s is a directory",
				   e->name);
	if (size == 0)
		return 0;
	r = mfs_entry_decode(l, e, read_sink, &rc, err);
	*got = rc.got;
	return r;
}

/* ---- layout -------------------------------------------------------------- */

/* A directory under construction, with the set of names it holds. */
struct dirb {
	struct mfs_entry *v; /* owned, becomes mfs_dir.entries */
	size_t n, cap;
	char **set;	/* borrowed names; open addressing */
	int *next;	/* next suffix to try for a clash of set[i] */
	size_t set_cap; /* power of two */
};

struct builder {
	struct mfs_layout *l;
	uint32_t next_id;
	int nomem;
};

static void dir_free(struct mfs_dir *d);

static void entry_free(struct mfs_entry *e)
{
	free(e->name);
	free(e->src.str);
	if (e->dir != NULL) {
		dir_free(e->dir);
		free(e->dir);
	}
}

static void dir_free(struct mfs_dir *d)
{
	size_t i;

	for (i = 0; i < d->n; i++)
		entry_free(&d->entries[i]);
	free(d->entries);
	free(d->by_name);
}

/* The slot of name in the set: where it is or where it would go. */
static size_t set_slot(const struct dirb *d, const char *name)
{
	size_t i = mfs_fnv1a_str(MFS_FNV1A_INIT, name) & (d->set_cap - 1);

	while (d->set[i] != NULL && strcmp(d->set[i], name) != 0)
		i = (i + 1) & (d->set_cap - 1);
	return i;
}

static int set_grow(struct dirb *d)
{
	struct dirb nd = *d;
	size_t i, j;

	nd.set_cap = d->set_cap ? d->set_cap * 2 : 64;
	nd.set = calloc(nd.set_cap, sizeof(*nd.set));
	nd.next = calloc(nd.set_cap, sizeof(*nd.next));
	if (nd.set == NULL || nd.next == NULL) {
		free(nd.set);
		free(nd.next);
		return -1;
	}
	for (i = 0; i < d->set_cap; i++) {
		if (d->set[i] == NULL)
			continue;
		j = set_slot(&nd, d->set[i]);
		nd.set[j] = d->set[i];
		nd.next[j] = d->next[i];
	}
	free(d->set);
	free(d->next);
	*d = nd;
	return 0;
}

/* Adds name (borrowed; it must outlive d) to the set. */
static int set_add(struct dirb *d, const char *name)
{
	size_t i;

	if ((d->n + 16) * 2 >= d->set_cap && set_grow(d) < 0)
		return -1;
	i = set_slot(d, name);
	d->set[i] = (char *)name;
	d->next[i] = 2;
	return 0;
}

static int set_has(const struct dirb *d, const char *name)
{
	return d->set_cap && d->set[set_slot(d, name)] != NULL;
}

/* Adds an entry called name (owned, taken even on failure). */
static struct mfs_entry *dirb_add(struct builder *b, struct dirb *d, char *name)
{
	struct mfs_entry *e;

	if (name == NULL)
		goto fail;
	if (d->n == d->cap) {
		size_t cap = d->cap ? d->cap * 2 : 16;

		e = realloc(d->v, cap * sizeof(*e));
		if (e == NULL)
			goto fail;
		d->v = e;
		d->cap = cap;
	}
	if (set_add(d, name) < 0)
		goto fail;
	e = &d->v[d->n++];
	memset(e, 0, sizeof(*e));
	e->name = name;
	e->id = ++b->next_id;
	return e;
fail:
	free(name);
	b->nomem = 1;
	return NULL;
}

static struct mfs_entry *add_src(struct builder *b, struct dirb *d,
				 const char *name, enum mfs_src_kind kind,
				 size_t off, size_t len)
{
	struct mfs_entry *e = dirb_add(b, d, strdup(name));

	if (e == NULL)
		return NULL;
	e->src.kind = kind;
	e->src.off = off;
	e->src.len = len;
	return e;
}

static void add_string(struct builder *b, struct dirb *d, const char *name,
		       char *str)
{
	struct mfs_entry *e;

	if (str == NULL) {
		b->nomem = 1;
		return;
	}
	e = add_src(b, d, name, MFS_SRC_STRING, 0, 0);
	if (e == NULL) {
		free(str);
		return;
	}
	e->src.str = str;
	e->src.str_len = strlen(str);
	e->src.size = e->src.str_len;
	e->src.size_known = 1;
}

static int cmp_names(const void *a, const void *b, void *arg)
{
	const struct mfs_entry *v = arg;

	return strcmp(v[*(const size_t *)a].name, v[*(const size_t *)b].name);
}

/* Turns d into the directory out; d's set goes. */
static void dirb_finish(struct builder *b, struct dirb *d, struct mfs_dir *out,
			const struct mfs_part *part)
{
	size_t i;

	free(d->set);
	free(d->next);
	out->entries = d->v;
	out->n = d->n;
	out->part = part;
	out->by_name = malloc((d->n ? d->n : 1) * sizeof(*out->by_name));
	if (out->by_name == NULL) {
		b->nomem = 1;
		return;
	}
	for (i = 0; i < d->n; i++)
		out->by_name[i] = i;
	qsort_r(out->by_name, d->n, sizeof(*out->by_name), cmp_names, d->v);
}

static struct mfs_entry *add_dir(struct builder *b, struct dirb *d, char *name)
{
	struct mfs_entry *e = dirb_add(b, d, name);

	if (e == NULL)
		return NULL;
	e->is_dir = 1;
	e->dir = calloc(1, sizeof(*e->dir));
	if (e->dir == NULL)
		b->nomem = 1;
	return e->dir ? e : NULL;
}

static const struct {
	const char *type;
	const char *ext;
} extensions[] = {
    {"application/pdf", "pdf"},
    {"application/zip", "zip"},
    {"application/gzip", "gz"},
    {"application/x-gzip", "gz"},
    {"application/x-tar", "tar"},
    {"application/json", "json"},
    {"application/xml", "xml"},
    {"application/msword", "doc"},
    {"application/vnd.ms-excel", "xls"},
    {"application/vnd.openxmlformats-officedocument.wordprocessingml."
     "document",
     "docx"},
    {"application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
     "xlsx"},
    {"application/pgp-signature", "asc"},
    {"application/pgp-encrypted", "asc"},
    {"application/pkcs7-signature", "p7s"},
    {"application/x-pkcs7-signature", "p7s"},
    {"application/ics", "ics"},
    {"image/png", "png"},
    {"image/jpeg", "jpg"},
    {"image/gif", "gif"},
    {"image/webp", "webp"},
    {"image/svg+xml", "svg"},
    {"image/bmp", "bmp"},
    {"image/tiff", "tiff"},
    {"audio/mpeg", "mp3"},
    {"audio/ogg", "ogg"},
    {"audio/wav", "wav"},
    {"video/mp4", "mp4"},
    {"video/mpeg", "mpeg"},
    {"text/plain", "txt"},
    {"text/html", "html"},
    {"text/csv", "csv"},
    {"text/calendar", "ics"},
    {"text/vcard", "vcf"},
    {"text/x-vcard", "vcf"},
    {"text/xml", "xml"},
    {"text/markdown", "md"},
    {"message/rfc822", "eml"},
    {"message/global", "eml"},
    {"message/delivery-status", "txt"},
};

static const char *ext_for(const struct mfs_part *p)
{
	size_t i, tl = strlen(p->type);

	for (i = 0; i < sizeof(extensions) / sizeof(extensions[0]); i++) {
		const char *t = extensions[i].type;

		if (strncmp(t, p->type, tl) == 0 && t[tl] == '/' &&
		    strcmp(t + tl + 1, p->subtype) == 0)
			return extensions[i].ext;
	}
	return strcmp(p->type, "text") == 0 ? "txt" : "bin";
}

/* Adds name (owned, sanitized here), with a suffix when it is taken. */
static struct mfs_entry *add_unique(struct builder *b, struct dirb *d,
				    char *name)
{
	char *clean = mfs_name_sanitize(name), *alt;
	size_t slot;
	int n;

	free(name);
	if (clean == NULL)
		goto nomem;
	if (!set_has(d, clean))
		return dirb_add(b, d, clean);
	slot = set_slot(d, clean);
	for (n = d->next[slot];; n++) {
		alt = mfs_name_unique(clean, n);
		if (alt == NULL) {
			free(clean);
			goto nomem;
		}
		if (!set_has(d, alt))
			break;
		free(alt);
	}
	/* the set may grow in dirb_add: update the counter first */
	d->next[slot] = n + 1;
	free(clean);
	return dirb_add(b, d, alt);
nomem:
	b->nomem = 1;
	return NULL;
}

static int is_attachment_like(const struct mfs_part *p)
{
	return p->disp == MFS_DISP_ATTACHMENT || p->filename != NULL;
}

/* Can p be the body? Not an attachment; a part marked inline is a body
 * even with a file name (RFC 2183), one with a name and no disposition is
 * taken for an attachment. */
static int may_be_body(const struct mfs_part *p)
{
	return p->disp == MFS_DISP_INLINE || !is_attachment_like(p);
}

/* The first text/<sub> leaf below p that is not an attachment. */
static const struct mfs_part *find_text(const struct mfs_part *p,
					const char *sub)
{
	const struct mfs_part *r;
	size_t i;

	if (p->opaque)
		return NULL;
	if (is_split(p)) {
		for (i = 0; i < p->nchildren; i++)
			if ((r = find_text(p->children[i], sub)) != NULL)
				return r;
		return NULL;
	}
	if (!may_be_body(p))
		return NULL;
	if (p->broken_multi)
		return strcmp(sub, "plain") == 0 ? p : NULL;
	if (strcmp(p->type, "text") == 0 && strcmp(p->subtype, sub) == 0)
		return p;
	return NULL;
}

static void build_part_dir(struct builder *b, struct mfs_dir *out,
			   const struct mfs_part *p);
static void add_children(struct builder *b, struct dirb *d,
			 const struct mfs_part *p);

static void add_text(struct builder *b, struct dirb *d, const char *name,
		     const struct mfs_part *p)
{
	struct mfs_entry *e;

	e = add_src(b, d, name, MFS_SRC_TEXT, p->body_off, p->body_len);
	if (e == NULL)
		return;
	e->src.cte = p->cte;
	e->src.charset = p->broken_multi ? NULL : p->charset;
	e->part = p;
}

static void add_attachments(struct builder *b, struct dirb *d,
			    const struct mfs_part *p,
			    const struct mfs_part *txt,
			    const struct mfs_part *html, int *count)
{
	struct mfs_entry *e;
	char *name;
	size_t i;

	if (p->opaque || b->nomem)
		return;
	if (is_split(p)) {
		for (i = 0; i < p->nchildren; i++)
			add_attachments(b, d, p->children[i], txt, html, count);
		return;
	}
	if (p == txt || p == html)
		return;
	if (!is_attachment_like(p) &&
	    (strcmp(p->type, "text") == 0 || strcmp(p->type, "multipart") == 0))
		return;
	(*count)++;
	if (p->filename != NULL)
		name = strdup(p->filename);
	else if (asprintf(&name, "attachment-%d.%s", *count, ext_for(p)) < 0)
		name = NULL;
	if (name == NULL) {
		b->nomem = 1;
		return;
	}
	e = add_unique(b, d, name);
	if (e == NULL)
		return;
	e->src.kind = MFS_SRC_DECODED;
	e->src.off = p->body_off;
	e->src.len = p->body_len;
	e->src.cte = p->cte;
	e->part = p;
}

static void add_field(struct builder *b, struct dirb *d, const char *name,
		      const struct mfs_part *m, int always)
{
	struct mfs_field f;

	if (mfs_field_find(b->l->buf, m->hdr_off, m->hdr_len, name, &f))
		add_src(b, d, name, MFS_SRC_FIELD, f.colon + 1,
			f.end - f.colon - 1);
	else if (always)
		add_string(b, d, name, strdup("\n"));
}

/* Adds the entries of a message directory for message m (raw bytes
 * [raw_off, raw_off + raw_len)) to d. */
static void build_message(struct builder *b, struct dirb *d,
			  const struct mfs_part *m, size_t raw_off,
			  size_t raw_len)
{
	static const char *const reserved[] = {MFS_MIME_RESERVED};
	const struct mfs_part *txt, *html;
	struct mfs_entry *e;
	size_t i;
	int count = 0;

	add_src(b, d, "message.eml", MFS_SRC_RAW, raw_off, raw_len);
	e = add_src(b, d, "headers", MFS_SRC_HEADERS, m->hdr_off, m->hdr_len);
	if (e != NULL)
		e->part = m;
	add_field(b, d, "from", m, 1);
	add_field(b, d, "to", m, 0);
	add_field(b, d, "cc", m, 0);
	add_field(b, d, "subject", m, 1);
	add_field(b, d, "date", m, 1);
	txt = find_text(m, "plain");
	html = find_text(m, "html");
	if (txt != NULL)
		add_text(b, d, "body.txt", txt);
	if (html != NULL)
		add_text(b, d, "body.html", html);
	for (i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++)
		if (!b->nomem && !set_has(d, reserved[i]) &&
		    set_add(d, reserved[i]) < 0)
			b->nomem = 1;
	add_attachments(b, d, m, txt, html, &count);
	e = add_dir(b, d, strdup("parts"));
	if (e == NULL)
		return;
	if (!is_split(m)) {
		struct dirb pd = {0};
		struct mfs_entry *one = add_dir(b, &pd, strdup("1"));

		if (one != NULL)
			build_part_dir(b, one->dir, m);
		dirb_finish(b, &pd, e->dir, m);
		return;
	}
	{
		struct dirb pd = {0};

		add_children(b, &pd, m);
		dirb_finish(b, &pd, e->dir, m);
	}
}

static char *type_string(const struct mfs_part *p)
{
	char *s;

	if (p->charset != NULL && asprintf(&s, "%s/%s; charset=%s\n", p->type,
					   p->subtype, p->charset) >= 0)
		return s;
	if (asprintf(&s, "%s/%s\n", p->type, p->subtype) >= 0)
		return s;
	return NULL;
}

/* Adds the directories 1, 2, ... of the children of multipart p. */
static void add_children(struct builder *b, struct dirb *d,
			 const struct mfs_part *p)
{
	struct mfs_entry *e;
	char *name;
	size_t i;

	for (i = 0; i < p->nchildren && !b->nomem; i++) {
		if (asprintf(&name, "%zu", i + 1) < 0)
			name = NULL;
		e = add_dir(b, d, name);
		if (e != NULL)
			build_part_dir(b, e->dir, p->children[i]);
	}
}

/* Fills out with the directory of part p: type, content, headers and the
 * children; for a message/rfc822 part also the embedded message's
 * message directory (whose headers replace the part's). */
static void build_part_dir(struct builder *b, struct mfs_dir *out,
			   const struct mfs_part *p)
{
	struct dirb d = {0};
	struct mfs_entry *e;

	add_string(b, &d, "type", type_string(p));
	e = add_src(b, &d, "content", MFS_SRC_DECODED, p->body_off,
		    p->body_len);
	if (e != NULL) {
		e->src.cte = p->cte;
		e->part = p;
	}
	if (p->message != NULL)
		build_message(b, &d, p->message, p->body_off, p->body_len);
	else if ((e = add_src(b, &d, "headers", MFS_SRC_HEADERS, p->hdr_off,
			      p->hdr_len)) != NULL)
		e->part = p;
	if (is_split(p))
		add_children(b, &d, p);
	dirb_finish(b, &d, out, p);
}

void mfs_layout_free(struct mfs_layout *l)
{
	if (l == NULL)
		return;
	dir_free(&l->root_dir);
	mfs_part_free(l->root);
	free(l);
}

static time_t message_date(const char *buf, const struct mfs_part *m)
{
	struct mfs_field f;
	char *text;
	time_t t;

	if (!mfs_field_find(buf, m->hdr_off, m->hdr_len, "date", &f))
		return (time_t)-1;
	text = field_text(buf + f.colon + 1, f.end - f.colon - 1);
	if (text == NULL)
		return (time_t)-1;
	t = mfs_parse_date(text);
	free(text);
	return t;
}

int mfs_layout_build(const char *buf, size_t len, struct mfs_layout **out,
		     struct mfs_err *err)
{
	return mfs_layout_build_mapped(buf, len, NULL, NULL, NULL, out, err);
}

int mfs_layout_build_mapped(const char *buf, size_t len,
			    mfs_release_fn release, mfs_skip_fn skip,
			    void *ctx, struct mfs_layout **out,
			    struct mfs_err *err)
{
	struct mfs_layout *l;
	struct builder b = {0};
	struct dirb d = {0};
	int r;

	*out = NULL;
	if (buf == NULL)
		buf = "";
	l = calloc(1, sizeof(*l));
	if (l == NULL)
		return mfs_err_set(err, MFS_E_NOMEM,
				   "out of memory laying out a message");
	l->buf = buf;
	l->len = len;
	l->release = release;
	l->release_ctx = ctx;
	r = mime_parse(buf, len, release, skip, ctx, &l->root, err);
	if (r != 0)
		goto free_layout;
	b.l = l;
	build_message(&b, &d, l->root, 0, len);
	dirb_finish(&b, &d, &l->root_dir, l->root);
	l->nentries = b.next_id;
	if (b.nomem) {
		r = mfs_err_set(err, MFS_E_NOMEM,
				"out of memory laying out a message");
		goto free_layout;
	}
	l->date = message_date(buf, l->root);
	*out = l;
	return 0;
free_layout:
	mfs_layout_free(l);
	return r;
}

/* ---- lookup -------------------------------------------------------------- */

struct mfs_entry *mfs_dir_find(const struct mfs_dir *dir, const char *name)
{
	size_t lo = 0, hi = dir->n, mid;
	int c;

	if (dir->by_name == NULL)
		return NULL;
	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		c = strcmp(name, dir->entries[dir->by_name[mid]].name);
		if (c == 0)
			return &dir->entries[dir->by_name[mid]];
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

struct mfs_entry *mfs_layout_lookup(const struct mfs_layout *l,
				    const char *const *comp, size_t ncomp)
{
	const struct mfs_dir *d = &l->root_dir;
	struct mfs_entry *e = NULL;
	size_t i;

	for (i = 0; i < ncomp; i++) {
		if (d == NULL)
			return NULL;
		e = mfs_dir_find(d, comp[i]);
		if (e == NULL)
			return NULL;
		d = e->is_dir ? e->dir : NULL;
	}
	return e;
}

struct mfs_entry *mfs_layout_lookup_path(const struct mfs_layout *l,
					 const char *path)
{
	const struct mfs_dir *d = &l->root_dir;
	struct mfs_entry *e = NULL;
	char name[MFS_NAME_MAX + 1];
	const char *s = path, *slash;
	size_t n;

	while (*s) {
		slash = strchr(s, '/');
		n = slash ? (size_t)(slash - s) : strlen(s);
		if (n == 0) {
			s++;
			continue;
		}
		if (n > MFS_NAME_MAX || d == NULL)
			return NULL;
		memcpy(name, s, n);
		name[n] = '\0';
		e = mfs_dir_find(d, name);
		if (e == NULL)
			return NULL;
		d = e->is_dir ? e->dir : NULL;
		s += n;
	}
	return e;
}
