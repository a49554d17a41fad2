/*
 * query.c - the search grammar (see query.h).
 *
 * The parser reads the name left to right, one term at a time: an
 * optional run of '-', then key:value or a bare value (a word, or a phrase
 * in double quotes). A term joins the one before it with OR when the word
 * `or` stands between them, else with AND. The tree of the top level is a
 * chain of AND nodes, so that rendering never needs parentheses.
 */
#include "query.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "names.h"

static struct mfs_query *node_new(enum mfs_query_op op)
{
	struct mfs_query *q = calloc(1, sizeof(*q));

	if (q != NULL)
		q->op = op;
	return q;
}

void mfs_query_free(struct mfs_query *q)
{
	if (q == NULL)
		return;
	mfs_query_free(q->a);
	mfs_query_free(q->b);
	free(q->text);
	free(q);
}

/* Joins a and b under a new node of op; on ENOMEM frees both. */
static struct mfs_query *join(enum mfs_query_op op, struct mfs_query *a,
			      struct mfs_query *b)
{
	struct mfs_query *q = node_new(op);

	if (q == NULL) {
		mfs_query_free(a);
		mfs_query_free(b);
		return NULL;
	}
	q->a = a;
	q->b = b;
	return q;
}

static int is_blank(char c)
{
	return c == ' ' || c == '\t';
}

/* --- terms ----------------------------------------------------------------- */

static const struct {
	const char *name;
	enum mfs_query_op op;
} keys[] = {
	{"from", MFS_Q_FROM},	    {"to", MFS_Q_TO},
	{"cc", MFS_Q_CC},	    {"subject", MFS_Q_SUBJECT},
	{"body", MFS_Q_BODY},	    {"text", MFS_Q_TEXT},
	{"since", MFS_Q_SINCE},	    {"before", MFS_Q_BEFORE},
	{"larger", MFS_Q_LARGER},   {"smaller", MFS_Q_SMALLER},
	{"is", MFS_Q_IS},
};

static const struct {
	const char *name;
	unsigned flag;
} flag_names[] = {
	{"seen", MFS_FLAG_SEEN},	 {"flagged", MFS_FLAG_FLAGGED},
	{"answered", MFS_FLAG_ANSWERED}, {"draft", MFS_FLAG_DRAFT},
	{"deleted", MFS_FLAG_DELETED},
};

static int leap(int y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* YYYY-MM-DD, a real day. */
static int parse_date(const char *v, struct mfs_query *q)
{
	static const int mdays[] = {31, 28, 31, 30, 31, 30,
				    31, 31, 30, 31, 30, 31};
	int i;

	if (strlen(v) != 10 || v[4] != '-' || v[7] != '-')
		return -1;
	for (i = 0; i < 10; i++)
		if (i != 4 && i != 7 && !isdigit((unsigned char)v[i]))
			return -1;
	q->year = atoi(v);
	q->month = atoi(v + 5);
	q->day = atoi(v + 8);
	if (q->year < 1 || q->month < 1 || q->month > 12 || q->day < 1)
		return -1;
	if (q->day > mdays[q->month - 1] + (q->month == 2 && leap(q->year)))
		return -1;
	return 0;
}

/* N, Nk or NM, at most 2^32 - 1 bytes. */
static int parse_size(const char *v, uint32_t *size)
{
	uint64_t n = 0, unit = 1;
	const char *p = v;

	if (!isdigit((unsigned char)*p))
		return -1;
	for (; isdigit((unsigned char)*p); p++) {
		n = n * 10 + (uint64_t)(*p - '0');
		if (n > UINT32_MAX)
			return -1;
	}
	if (*p == 'k' || *p == 'K')
		unit = 1024;
	else if (*p == 'm' || *p == 'M')
		unit = 1024 * 1024;
	if (unit != 1)
		p++;
	if (*p != '\0' || n * unit > UINT32_MAX)
		return -1;
	*size = (uint32_t)(n * unit);
	return 0;
}

/* Text of a term: UTF-8 without control characters. */
static int text_ok(const char *v)
{
	const unsigned char *p;

	if (!mfs_utf8_valid(v, strlen(v)))
		return 0;
	for (p = (const unsigned char *)v; *p != '\0'; p++)
		if (*p < 0x20 || *p == 0x7f)
			return 0;
	return 1;
}

/* The term of op with value v (owned by the caller), or NULL with err
 * set. key is the key as written, for messages. */
static struct mfs_query *term(enum mfs_query_op op, const char *key,
			      const char *v, struct mfs_err *err)
{
	struct mfs_query *q = node_new(op);
	size_t i;

	if (q == NULL) {
		mfs_err_set(err, MFS_E_NOMEM, "out of memory");
		return NULL;
	}
	switch (op) {
	case MFS_Q_SINCE:
	case MFS_Q_BEFORE:
		if (parse_date(v, q) != 0) {
			mfs_err_set(err, MFS_E_INVAL,
				    "%s%s: not a date YYYY-MM-DD", key, v);
			goto free_q;
		}
		return q;
	case MFS_Q_LARGER:
	case MFS_Q_SMALLER:
		if (parse_size(v, &q->size) != 0) {
			mfs_err_set(err, MFS_E_INVAL,
				    "%s%s: not a size (N, Nk or NM, under "
				    "4 GiB)",
				    key, v);
			goto free_q;
		}
		return q;
	case MFS_Q_IS:
		for (i = 0; i < sizeof(flag_names) / sizeof(flag_names[0]); i++)
			if (strcasecmp(v, flag_names[i].name) == 0)
				q->flag = flag_names[i].flag;
		if (q->flag == 0) {
			mfs_err_set(err, MFS_E_INVAL,
				    "%s%s: not one of seen, flagged, "
				    "answered, draft, deleted",
				    key, v);
			goto free_q;
		}
		return q;
	default:
		break;
	}
	if (v[0] == '\0' || !text_ok(v)) {
		mfs_err_set(err, MFS_E_INVAL,
			    "%s empty, or not UTF-8 text", key);
		goto free_q;
	}
	q->text = strdup(v);
	if (q->text == NULL) {
		mfs_err_set(err, MFS_E_NOMEM, "out of memory");
		goto free_q;
	}
	return q;

free_q:
	mfs_query_free(q);
	return NULL;
}

/* --- the parser ------------------------------------------------------------ */

struct parser {
	const char *p; /* borrowed: where we are in the name */
	struct mfs_err *err;
};

/* Reads a value at ps->p: a phrase in quotes or a word up to a blank.
 * Returns it malloc'd, or NULL with err set. */
static char *value(struct parser *ps, const char *key)
{
	const char *s = ps->p, *e;
	char *v;

	if (*s == '"') {
		e = strchr(s + 1, '"');
		if (e == NULL) {
			mfs_err_set(ps->err, MFS_E_INVAL, "unbalanced quote");
			return NULL;
		}
		if (e[1] != '\0' && !is_blank(e[1])) {
			mfs_err_set(ps->err, MFS_E_INVAL,
				    "a closing quote must end the term");
			return NULL;
		}
		v = strndup(s + 1, (size_t)(e - s - 1));
		ps->p = e + 1;
	} else {
		for (e = s; *e != '\0' && !is_blank(*e); e++)
			if (*e == '"') {
				mfs_err_set(ps->err, MFS_E_INVAL,
					    "unbalanced quote");
				return NULL;
			}
		if (e == s) {
			mfs_err_set(ps->err, MFS_E_INVAL,
				    "%s needs a value", key);
			return NULL;
		}
		v = strndup(s, (size_t)(e - s));
		ps->p = e;
	}
	if (v == NULL)
		mfs_err_set(ps->err, MFS_E_NOMEM, "out of memory");
	return v;
}

/* One term at ps->p (not at a blank or the end), with its '-' prefixes. */
static struct mfs_query *parse_term(struct parser *ps)
{
	const char *s, *colon;
	struct mfs_query *q;
	enum mfs_query_op op = MFS_Q_TEXT;
	char key[16] = "text:";
	size_t nots = 0, i, klen;
	char *v;

	for (; *ps->p == '-'; ps->p++)
		nots++;
	if (*ps->p == '\0' || is_blank(*ps->p)) {
		mfs_err_set(ps->err, MFS_E_INVAL, "'-' needs a term after it");
		return NULL;
	}
	s = ps->p;
	for (colon = s; isalpha((unsigned char)*colon); colon++)
		;
	if (*colon == ':' && colon > s) {
		klen = (size_t)(colon - s);
		op = (enum mfs_query_op)-1;
		for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
			if (strlen(keys[i].name) == klen &&
			    strncasecmp(s, keys[i].name, klen) == 0)
				op = keys[i].op;
		if (op == (enum mfs_query_op)-1) {
			mfs_err_set(ps->err, MFS_E_INVAL, "unknown key %.*s:",
				    klen > 32 ? 32 : (int)klen, s);
			return NULL;
		}
		snprintf(key, sizeof(key), "%.*s:", (int)klen, s);
		ps->p = colon + 1;
	}
	v = value(ps, key);
	if (v == NULL)
		return NULL;
	q = term(op, key, v, ps->err);
	free(v);
	for (; q != NULL && nots > 0; nots--) {
		q = join(MFS_Q_NOT, q, NULL);
		if (q == NULL)
			mfs_err_set(ps->err, MFS_E_NOMEM, "out of memory");
	}
	return q;
}

/* Is ps->p at the word `or` standing alone? */
static int at_or(const struct parser *ps)
{
	return strncasecmp(ps->p, "or", 2) == 0 &&
	       (ps->p[2] == '\0' || is_blank(ps->p[2]));
}

static void skip_blanks(struct parser *ps)
{
	while (is_blank(*ps->p))
		ps->p++;
}

int mfs_query_parse(const char *name, struct mfs_query **q,
		    struct mfs_err *err)
{
	struct parser ps = {name, err};
	struct mfs_query *all = NULL, *last = NULL, *t;

	*q = NULL;
	if (strlen(name) > MFS_QUERY_MAX)
		return mfs_err_set(err, MFS_E_INVAL,
				   "query longer than %d bytes", MFS_QUERY_MAX);
	skip_blanks(&ps);
	while (*ps.p != '\0') {
		int either = 0;

		if (at_or(&ps)) {
			if (last == NULL) {
				mfs_err_set(err, MFS_E_INVAL,
					    "'or' needs a term before it");
				goto free_all;
			}
			ps.p += 2;
			skip_blanks(&ps);
			if (*ps.p == '\0' || at_or(&ps)) {
				mfs_err_set(err, MFS_E_INVAL,
					    "'or' needs a term after it");
				goto free_all;
			}
			either = 1;
		}
		t = parse_term(&ps);
		if (t == NULL)
			goto free_all;
		if (either) {
			last = join(MFS_Q_OR, last, t); /* frees both on ENOMEM */
			if (last == NULL) {
				mfs_err_set(err, MFS_E_NOMEM, "out of memory");
				goto free_all;
			}
		} else if (last != NULL) {
			all = all == NULL ? last : join(MFS_Q_AND, all, last);
			last = t;
			if (all == NULL) {
				mfs_err_set(err, MFS_E_NOMEM, "out of memory");
				goto free_all;
			}
		} else {
			last = t;
		}
		skip_blanks(&ps);
	}
	if (last == NULL) {
		mfs_err_set(err, MFS_E_INVAL, "empty query");
		goto free_all;
	}
	*q = all == NULL ? last : join(MFS_Q_AND, all, last);
	if (*q == NULL)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	mfs_err_clear(err);
	return MFS_OK;

free_all:
	mfs_query_free(all);
	mfs_query_free(last);
	return err->code;
}

/* --- matching what a listing has ------------------------------------------- */

int mfs_query_listing_only(const struct mfs_query *q)
{
	switch (q->op) {
	case MFS_Q_TO:
	case MFS_Q_CC:
	case MFS_Q_BODY:
	case MFS_Q_TEXT:
		return 0;
	case MFS_Q_NOT:
		return mfs_query_listing_only(q->a);
	case MFS_Q_OR:
	case MFS_Q_AND:
		return mfs_query_listing_only(q->a) &&
		       mfs_query_listing_only(q->b);
	default:
		return 1;
	}
}

/* needle in hay, ASCII letters without regard to case. */
static int contains(const char *hay, const char *needle)
{
	size_t n = strlen(needle);

	if (hay == NULL)
		return 0;
	for (; *hay != '\0'; hay++)
		if (strncasecmp(hay, needle, n) == 0)
			return 1;
	return 0;
}

/* Days since 1970-01-01 of a day of the proleptic Gregorian calendar. */
static long days_of(int y, int m, int d)
{
	struct tm tm = {0};

	tm.tm_year = y - 1900;
	tm.tm_mon = m - 1;
	tm.tm_mday = d;
	return (long)(timegm(&tm) / 86400);
}

static long day_of_time(time_t t)
{
	return (long)(t >= 0 ? t / 86400 : (t - 86399) / 86400);
}

/* msg against q; t (may be NULL: a listing only) for the text terms. */
static int match(const struct mfs_query *q, const struct mfs_store_msg *msg,
		 const struct mfs_query_text *t)
{
	switch (q->op) {
	case MFS_Q_FROM:
		return contains(t != NULL ? t->from : msg->from, q->text);
	case MFS_Q_SUBJECT:
		return contains(t != NULL ? t->subject : msg->subject, q->text);
	case MFS_Q_TO:
		return t != NULL && contains(t->to, q->text);
	case MFS_Q_CC:
		return t != NULL && contains(t->cc, q->text);
	case MFS_Q_BODY:
		return t != NULL && contains(t->body, q->text);
	case MFS_Q_TEXT:
		return t != NULL && (contains(t->headers, q->text) ||
				     contains(t->body, q->text));
	case MFS_Q_SINCE:
		return day_of_time(msg->date) >= days_of(q->year, q->month,
							  q->day);
	case MFS_Q_BEFORE:
		return day_of_time(msg->date) < days_of(q->year, q->month,
							 q->day);
	case MFS_Q_LARGER:
		return msg->size > q->size;
	case MFS_Q_SMALLER:
		return msg->size < q->size;
	case MFS_Q_IS:
		return (msg->flags & q->flag) != 0;
	case MFS_Q_NOT:
		return !match(q->a, msg, t);
	case MFS_Q_OR:
		return match(q->a, msg, t) || match(q->b, msg, t);
	case MFS_Q_AND:
		return match(q->a, msg, t) && match(q->b, msg, t);
	}
	return 0;
}

int mfs_query_match(const struct mfs_query *q, const struct mfs_store_msg *msg)
{
	return match(q, msg, NULL);
}

int mfs_query_match_text(const struct mfs_query *q,
			 const struct mfs_store_msg *msg,
			 const struct mfs_query_text *t)
{
	return match(q, msg, t);
}

/* --- IMAP ------------------------------------------------------------------ */

/* A growing buffer. */
struct out {
	struct mfs_query_wire *w;
	size_t cap, litcap;
	enum mfs_query_charset charset;
	int plus;
	int nomem;
	int bad; /* a character the charset cannot hold */
};

static void put(struct out *o, const char *s, size_t len)
{
	struct mfs_query_wire *w = o->w;
	char *nb;
	size_t ncap;

	if (o->nomem)
		return;
	if (w->len + len + 1 > o->cap) {
		ncap = o->cap == 0 ? 128 : o->cap;
		while (ncap < w->len + len + 1)
			ncap *= 2;
		nb = realloc(w->buf, ncap);
		if (nb == NULL) {
			o->nomem = 1;
			return;
		}
		w->buf = nb;
		o->cap = ncap;
	}
	memcpy(w->buf + w->len, s, len);
	w->len += len;
	w->buf[w->len] = '\0';
}

static void puts_(struct out *o, const char *s)
{
	put(o, s, strlen(s));
}

static void mark_literal(struct out *o)
{
	struct mfs_query_wire *w = o->w;
	size_t *nl;

	if (o->nomem)
		return;
	if (w->nlits == o->litcap) {
		o->litcap = o->litcap == 0 ? 4 : 2 * o->litcap;
		nl = realloc(w->lits, o->litcap * sizeof(*nl));
		if (nl == NULL) {
			o->nomem = 1;
			return;
		}
		w->lits = nl;
	}
	w->lits[w->nlits++] = w->len;
}

/* s in the output charset: a copy (UTF-8), or converted to ISO-8859-1
 * (o->bad when a character has no place there). NULL on ENOMEM. */
static char *in_charset(struct out *o, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	char *r = malloc(strlen(s) + 1), *d = r;

	if (r == NULL)
		return NULL;
	if (o->charset == MFS_QUERY_UTF8) {
		strcpy(r, s);
		return r;
	}
	while (*p != '\0') {
		if (*p < 0x80) {
			*d++ = (char)*p++;
		} else if ((*p == 0xc2 || *p == 0xc3) && (p[1] & 0xc0) == 0x80) {
			*d++ = (char)(((p[0] & 0x03) << 6) | (p[1] & 0x3f));
			p += 2;
		} else {
			o->bad = 1;
			break;
		}
	}
	*d = '\0';
	return r;
}

/* A string: quoted when it is printable ASCII, else a literal. */
static void put_string(struct out *o, const char *text)
{
	const unsigned char *p;
	char head[32], *s = in_charset(o, text);
	int ascii = 1;

	if (s == NULL) {
		o->nomem = 1;
		return;
	}
	for (p = (const unsigned char *)s; *p != '\0'; p++)
		if (*p >= 0x80)
			ascii = 0;
	if (ascii) {
		put(o, "\"", 1);
		for (p = (const unsigned char *)s; *p != '\0'; p++) {
			if (*p == '"' || *p == '\\')
				put(o, "\\", 1);
			put(o, (const char *)p, 1);
		}
		put(o, "\"", 1);
	} else {
		o->w->ascii = 0;
		snprintf(head, sizeof(head), "{%zu%s}\r\n", strlen(s),
			 o->plus ? "+" : "");
		puts_(o, head);
		mark_literal(o);
		puts_(o, s);
	}
	free(s);
}

/* Renders q; an AND below an OR or NOT (top 0) goes in parentheses. The
 * parser makes none there, but a tree built by hand may. */
static void render(struct out *o, const struct mfs_query *q, int top)
{
	static const char *const months[] = {"Jan", "Feb", "Mar", "Apr",
					     "May", "Jun", "Jul", "Aug",
					     "Sep", "Oct", "Nov", "Dec"};
	static const char *const text_keys[] = {
	    [MFS_Q_FROM] = "FROM ",	  [MFS_Q_TO] = "TO ",
	    [MFS_Q_CC] = "CC ",		  [MFS_Q_SUBJECT] = "SUBJECT ",
	    [MFS_Q_BODY] = "BODY ",	  [MFS_Q_TEXT] = "TEXT ",
	};
	char buf[48] = "";
	size_t i;

	switch (q->op) {
	case MFS_Q_FROM:
	case MFS_Q_TO:
	case MFS_Q_CC:
	case MFS_Q_SUBJECT:
	case MFS_Q_BODY:
	case MFS_Q_TEXT:
		puts_(o, text_keys[q->op]);
		put_string(o, q->text);
		return;
	case MFS_Q_SINCE:
	case MFS_Q_BEFORE:
		snprintf(buf, sizeof(buf), "%s %d-%s-%04d",
			 q->op == MFS_Q_SINCE ? "SENTSINCE" : "SENTBEFORE",
			 q->day, months[q->month - 1], q->year);
		puts_(o, buf);
		return;
	case MFS_Q_LARGER:
	case MFS_Q_SMALLER:
		snprintf(buf, sizeof(buf), "%s %u",
			 q->op == MFS_Q_LARGER ? "LARGER" : "SMALLER",
			 (unsigned)q->size);
		puts_(o, buf);
		return;
	case MFS_Q_IS:
		for (i = 0; i < sizeof(flag_names) / sizeof(flag_names[0]); i++)
			if (flag_names[i].flag == q->flag)
				snprintf(buf, sizeof(buf), "%s",
					 flag_names[i].name);
		for (i = 0; buf[i] != '\0'; i++)
			buf[i] = (char)toupper((unsigned char)buf[i]);
		puts_(o, buf);
		return;
	case MFS_Q_NOT:
		puts_(o, "NOT ");
		render(o, q->a, 0);
		return;
	case MFS_Q_OR:
		puts_(o, "OR ");
		render(o, q->a, 0);
		puts_(o, " ");
		render(o, q->b, 0);
		return;
	case MFS_Q_AND:
		if (!top)
			puts_(o, "(");
		render(o, q->a, 1);
		puts_(o, " ");
		render(o, q->b, 1);
		if (!top)
			puts_(o, ")");
		return;
	}
}

int mfs_query_imap(const struct mfs_query *q, enum mfs_query_charset charset,
		   int literal_plus, struct mfs_query_wire *w,
		   struct mfs_err *err)
{
	struct out o = {0};

	memset(w, 0, sizeof(*w));
	w->ascii = 1;
	o.w = w;
	o.charset = charset;
	o.plus = literal_plus;
	render(&o, q, 1);
	puts_(&o, "\r\n");
	if (o.nomem || o.bad) {
		mfs_query_wire_free(w);
		if (o.nomem)
			return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
		return mfs_err_set(err, MFS_E_INVAL,
				   "a term has characters outside "
				   "ISO-8859-1, the server's charset");
	}
	mfs_err_clear(err);
	return MFS_OK;
}

void mfs_query_wire_free(struct mfs_query_wire *w)
{
	free(w->buf);
	free(w->lits);
	memset(w, 0, sizeof(*w));
}
