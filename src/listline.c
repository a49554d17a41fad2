/*
 * listline.c - one FETCH response of a folder listing (see listline.h).
 *
 * The reader walks the line once and only records where each value lies
 * (a span); nothing is copied or allocated until the whole line has been
 * found of the right shape, so "not mine" costs nothing and leaves no
 * state behind. Every function returns 0 when its piece is there (and
 * moves past it) or -1 when it is not.
 */
#include "listline.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "names.h"

struct rd {
	const char *p, *end;
};

/* An nstring: NIL, a quoted string [p, p + len) as sent (escapes not yet
 * undone) or a literal's bytes [p, p + len). */
struct span {
	const char *p;
	size_t len;
	int nil;
	int literal;
};

static int rd_char(struct rd *r, char c)
{
	if (r->p >= r->end || *r->p != c)
		return -1;
	r->p++;
	return 0;
}

/* The word w (upper case, no lower case letters in it), in any case. */
static int rd_word(struct rd *r, const char *w)
{
	size_t n = strlen(w);

	if ((size_t)(r->end - r->p) < n || strncasecmp(r->p, w, n) != 0)
		return -1;
	r->p += n;
	return 0;
}

/* 1*DIGIT, at most max. */
static int rd_number(struct rd *r, uint64_t max, uint64_t *v)
{
	uint64_t x = 0;
	const char *s = r->p;

	while (r->p < r->end && *r->p >= '0' && *r->p <= '9') {
		unsigned d = (unsigned)(*r->p - '0');

		if (x > (max - d) / 10)
			return -1;
		x = x * 10 + d;
		r->p++;
	}
	if (r->p == s)
		return -1;
	*v = x;
	return 0;
}

/* A quoted string of 7-bit TEXT-CHARs, '"' and '\' only escaped. */
static int rd_quoted(struct rd *r, struct span *v)
{
	if (rd_char(r, '"') != 0)
		return -1;
	v->p = r->p;
	v->nil = 0;
	v->literal = 0;
	while (r->p < r->end) {
		unsigned char c = (unsigned char)*r->p;

		if (c == '"') {
			v->len = (size_t)(r->p - v->p);
			r->p++;
			return 0;
		}
		if (c == '\\') {
			if (r->end - r->p < 2 ||
			    (r->p[1] != '"' && r->p[1] != '\\'))
				return -1;
			r->p += 2;
			continue;
		}
		if (c == 0 || c == '\r' || c == '\n' || c >= 0x80)
			return -1;
		r->p++;
	}
	return -1;
}

/* "{" number "}" CRLF, then that many bytes, none of them NUL (a C
 * string would end there). */
static int rd_literal(struct rd *r, struct span *v)
{
	uint64_t n;

	if (rd_char(r, '{') != 0 || rd_number(r, UINT32_MAX, &n) != 0 ||
	    rd_word(r, "}\r\n") != 0 || (uint64_t)(r->end - r->p) < n ||
	    memchr(r->p, '\0', (size_t)n) != NULL)
		return -1;
	v->p = r->p;
	v->len = (size_t)n;
	v->nil = 0;
	v->literal = 1;
	r->p += n;
	return 0;
}

static int rd_nstring(struct rd *r, struct span *v)
{
	if (r->p < r->end && *r->p == '"')
		return rd_quoted(r, v);
	if (r->p < r->end && *r->p == '{')
		return rd_literal(r, v);
	if (rd_word(r, "NIL") != 0)
		return -1;
	v->p = NULL;
	v->len = 0;
	v->nil = 1;
	v->literal = 0;
	return 0;
}

/* "(" name SP adl SP mailbox SP host ")"; the first of a list is kept. */
static int rd_address(struct rd *r, struct span a[4])
{
	if (rd_char(r, '(') != 0)
		return -1;
	for (int i = 0; i < 4; i++) {
		if ((i > 0 && rd_char(r, ' ') != 0) ||
		    rd_nstring(r, &a[i]) != 0)
			return -1;
	}
	return rd_char(r, ')');
}

/* NIL or "(" 1*address ")"; *first the first address, *some whether
 * there is one. */
static int rd_addresses(struct rd *r, struct span first[4], int *some)
{
	struct span other[4];

	*some = 0;
	if (rd_word(r, "NIL") == 0)
		return 0;
	*some = 1;
	if (rd_char(r, '(') != 0 || rd_address(r, first) != 0)
		return -1;
	while (r->p < r->end && *r->p == '(') {
		if (rd_address(r, other) != 0)
			return -1;
	}
	return rd_char(r, ')');
}

struct envelope {
	struct span date, subject;
	struct span from[4]; /* name, adl, mailbox, host */
	int has_from;	     /* the From list is not NIL */
};

/* "(" date SP subject SP from SP sender SP reply-to SP to SP cc SP bcc SP
 * in-reply-to SP message-id ")" */
static int rd_envelope(struct rd *r, struct envelope *env)
{
	struct span s, addr[4];
	int some;

	if (rd_char(r, '(') != 0 || rd_nstring(r, &env->date) != 0 ||
	    rd_char(r, ' ') != 0 || rd_nstring(r, &env->subject) != 0 ||
	    rd_char(r, ' ') != 0 ||
	    rd_addresses(r, env->from, &env->has_from) != 0)
		return -1;
	for (int i = 0; i < 5; i++) { /* sender, reply-to, to, cc, bcc */
		if (rd_char(r, ' ') != 0 || rd_addresses(r, addr, &some) != 0)
			return -1;
	}
	for (int i = 0; i < 2; i++) { /* in-reply-to, message-id */
		if (rd_char(r, ' ') != 0 || rd_nstring(r, &s) != 0)
			return -1;
	}
	return rd_char(r, ')');
}

/* An atom: 1*ATOM-CHAR (RFC 3501: no ']' either). */
static int rd_atom(struct rd *r, struct span *v)
{
	v->p = r->p;
	v->nil = 0;
	while (r->p < r->end) {
		unsigned char c = (unsigned char)*r->p;

		if (c <= 0x20 || c >= 0x7f || strchr("(){%*\"\\]", c) != NULL)
			break;
		r->p++;
	}
	v->len = (size_t)(r->p - v->p);
	return v->len > 0 ? 0 : -1;
}

/* The bit of the system flag a ("\\" and an atom), 0 for another one;
 * -1 when a starts with a system flag's name and goes on (libetpan takes
 * "\\Seenx" for \\Seen: such a line is left to it). */
static int system_flag(const struct span *a)
{
	/* the flags' names without '\\', bit i first, then \\Recent */
	const char *name;
	size_t n;

	for (int i = 0; i <= MFS_NFLAGS; i++) {
		name = i < MFS_NFLAGS ? mfs_flag_names[i] + 1 : "Recent";
		n = strlen(name);
		if (a->len < n || strncasecmp(a->p, name, n) != 0)
			continue;
		if (a->len > n)
			return -1;
		return i < MFS_NFLAGS ? 1 << i : 0;
	}
	return 0;
}

/* "(" [flag *(SP flag)] ")", flag = "\\" atom / atom; the five system
 * flags the listing keeps, as bits. */
static int rd_flags(struct rd *r, unsigned *flags)
{
	struct span a;
	int bit;

	*flags = 0;
	if (rd_char(r, '(') != 0)
		return -1;
	if (rd_char(r, ')') == 0)
		return 0;
	for (;;) {
		int sys = rd_char(r, '\\') == 0;

		if (rd_atom(r, &a) != 0)
			return -1;
		if (sys) {
			bit = system_flag(&a);
			if (bit < 0)
				return -1;
			*flags |= (unsigned)bit;
		}
		if (rd_char(r, ')') == 0)
			return 0;
		if (rd_char(r, ' ') != 0)
			return -1;
	}
}

/* exactly n digits */
static int rd_digits(struct rd *r, int n, int *v)
{
	*v = 0;
	for (int i = 0; i < n; i++) {
		if (r->p >= r->end || *r->p < '0' || *r->p > '9')
			return -1;
		*v = *v * 10 + (*r->p++ - '0');
	}
	return 0;
}

/* DQUOTE date-day-fixed "-" date-month "-" date-year SP time SP zone
 * DQUOTE, as UTC seconds. */
static int rd_internaldate(struct rd *r, time_t *t)
{
	static const char months[12][4] = {"JAN", "FEB", "MAR", "APR",
					   "MAY", "JUN", "JUL", "AUG",
					   "SEP", "OCT", "NOV", "DEC"};
	struct tm tm = {0};
	int day, mon = -1, year, hh, mm, ss, zh, zm, sign;

	if (rd_char(r, '"') != 0)
		return -1;
	if (rd_char(r, ' ') == 0) {
		if (rd_digits(r, 1, &day) != 0)
			return -1;
	} else if (rd_digits(r, 2, &day) != 0) {
		return -1;
	}
	if (rd_char(r, '-') != 0)
		return -1;
	for (int i = 0; i < 12 && mon < 0; i++) {
		if (rd_word(r, months[i]) == 0)
			mon = i;
	}
	if (mon < 0 || rd_char(r, '-') != 0 || rd_digits(r, 4, &year) != 0 ||
	    rd_char(r, ' ') != 0 || rd_digits(r, 2, &hh) != 0 ||
	    rd_char(r, ':') != 0 || rd_digits(r, 2, &mm) != 0 ||
	    rd_char(r, ':') != 0 || rd_digits(r, 2, &ss) != 0 ||
	    rd_char(r, ' ') != 0)
		return -1;
	if (rd_char(r, '+') == 0)
		sign = 1;
	else if (rd_char(r, '-') == 0)
		sign = -1;
	else
		return -1;
	if (rd_digits(r, 2, &zh) != 0 || rd_digits(r, 2, &zm) != 0 ||
	    rd_char(r, '"') != 0)
		return -1;
	tm.tm_mday = day;
	tm.tm_mon = mon;
	tm.tm_year = year - 1900;
	tm.tm_hour = hh;
	tm.tm_min = mm;
	tm.tm_sec = ss;
	*t = timegm(&tm) - sign * (zh * 3600L + zm * 60L);
	return 0;
}

/* The items of the response, each at most once. */
struct items {
	int have_uid, have_flags, have_size, have_internal, have_env;
	int have_modseq;
	uint64_t uid, size;
	unsigned flags;
	time_t internal;
	struct envelope env;
};

/* One item: its name, SP, its value. */
static int rd_item(struct rd *r, struct items *it)
{
	uint64_t modseq;

	if (rd_word(r, "UID ") == 0) {
		if (it->have_uid++ || rd_number(r, UINT32_MAX, &it->uid) != 0)
			return -1;
	} else if (rd_word(r, "FLAGS ") == 0) {
		if (it->have_flags++ || rd_flags(r, &it->flags) != 0)
			return -1;
	} else if (rd_word(r, "RFC822.SIZE ") == 0) {
		if (it->have_size++ || rd_number(r, UINT32_MAX, &it->size) != 0)
			return -1;
	} else if (rd_word(r, "INTERNALDATE ") == 0) {
		if (it->have_internal++ ||
		    rd_internaldate(r, &it->internal) != 0)
			return -1;
	} else if (rd_word(r, "ENVELOPE ") == 0) {
		if (it->have_env++ || rd_envelope(r, &it->env) != 0)
			return -1;
	} else if (rd_word(r, "MODSEQ (") == 0) {
		if (it->have_modseq++ ||
		    rd_number(r, UINT64_MAX, &modseq) != 0 ||
		    rd_char(r, ')') != 0)
			return -1;
	} else {
		return -1;
	}
	return 0;
}

/* "* " number " FETCH (" item *(SP item) ")" CRLF, all of line. */
static int rd_response(struct rd *r, struct items *it)
{
	uint64_t seq;

	if (rd_word(r, "* ") != 0 || rd_number(r, UINT32_MAX, &seq) != 0 ||
	    seq == 0 || rd_word(r, " FETCH (") != 0)
		return -1;
	for (;;) {
		if (rd_item(r, it) != 0)
			return -1;
		if (rd_char(r, ')') == 0)
			break;
		if (rd_char(r, ' ') != 0)
			return -1;
	}
	if (rd_word(r, "\r\n") != 0 || r->p != r->end)
		return -1;
	return 0;
}

/* The text of a string, escapes undone, in *out (NULL for NIL). Returns
 * 0, or -1 when out of memory. */
static int span_text(const struct span *v, char **out)
{
	char *o;

	*out = NULL;
	if (v->nil)
		return 0;
	*out = o = malloc(v->len + 1);
	if (o == NULL)
		return -1;
	for (size_t i = 0; i < v->len; i++) {
		if (v->p[i] == '\\' && !v->literal)
			i++; /* rd_quoted made sure a '"' or '\\' follows */
		*o++ = v->p[i];
	}
	*o = '\0';
	return 0;
}

int mfs_listline_entry(struct mfs_store_msg *m, const char *date,
		       time_t internal, const struct mfs_sender *from,
		       const char *subject)
{
	m->date = date != NULL ? mfs_parse_date(date) : (time_t)-1;
	if (m->date == (time_t)-1)
		m->date = internal;
	if (!from->has)
		m->from = strdup("");
	else if (from->name != NULL && from->name[0] != '\0')
		m->from = mfs_hdr_decode(from->name);
	else if (asprintf(&m->from, "%s@%s",
			  from->mailbox != NULL ? from->mailbox : "",
			  from->host != NULL ? from->host : "") < 0)
		m->from = NULL;
	m->subject = mfs_hdr_decode(subject != NULL ? subject : "");
	if (m->from == NULL || m->subject == NULL) {
		free(m->from);
		free(m->subject);
		m->from = m->subject = NULL;
		return -1;
	}
	return 0;
}

int mfs_listline(const char *line, size_t len, struct mfs_store_msg *m)
{
	struct rd r = {line, line + len};
	struct items it = {0};
	struct envelope *env = &it.env;
	char *date = NULL, *subject = NULL, *name = NULL, *mailbox = NULL;
	char *host = NULL;
	struct mfs_sender from = {0};
	int rc = -1;

	if (rd_response(&r, &it) != 0)
		return 0;
	memset(m, 0, sizeof(*m));
	m->uid = (uint32_t)it.uid;
	m->size = it.size;
	m->flags = it.flags;
	if (it.have_env &&
	    (span_text(&env->date, &date) != 0 ||
	     span_text(&env->subject, &subject) != 0 ||
	     (env->has_from && (span_text(&env->from[0], &name) != 0 ||
				span_text(&env->from[2], &mailbox) != 0 ||
				span_text(&env->from[3], &host) != 0))))
		goto free_text;
	from = (struct mfs_sender){it.have_env && env->has_from, name,
				   mailbox, host};
	if (mfs_listline_entry(m, date, it.have_internal ? it.internal : 0,
			       &from, subject) == 0)
		rc = 1;
free_text:
	free(date);
	free(subject);
	free(name);
	free(mailbox);
	free(host);
	return rc;
}
