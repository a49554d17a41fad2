/* names.c - see names.h */
#include "names.h"

#include <ctype.h>
#include <errno.h>
#include <iconv.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base64.h"

#define REPLACEMENT_CHAR 0xFFFDu

/* ---- growing byte buffer ------------------------------------------------ */

/* A byte string under construction. After an allocation failure every
 * further append is ignored and sb_finish() reports ENOMEM, so callers check
 * once at the end. */
struct sbuf {
	char *data; /* owned; NUL-terminated once sb_finish() returns it */
	size_t len;
	size_t cap;
	int failed;
};

static int sb_reserve(struct sbuf *sb, size_t more)
{
	size_t need, cap;
	char *p;

	if (sb->failed)
		return -1;
	if (more > SIZE_MAX - sb->len - 1)
		goto fail;
	need = sb->len + more + 1;
	if (need <= sb->cap)
		return 0;
	cap = sb->cap ? sb->cap : 64;
	while (cap < need)
		cap = cap > SIZE_MAX / 2 ? need : cap * 2;
	p = realloc(sb->data, cap);
	if (p == NULL)
		goto fail;
	sb->data = p;
	sb->cap = cap;
	return 0;
fail:
	free(sb->data);
	sb->data = NULL;
	sb->len = 0;
	sb->cap = 0;
	sb->failed = 1;
	return -1;
}

static void sb_add(struct sbuf *sb, const void *p, size_t n)
{
	if (n == 0 || sb_reserve(sb, n) < 0)
		return;
	memcpy(sb->data + sb->len, p, n);
	sb->len += n;
}

static void sb_addc(struct sbuf *sb, char c)
{
	sb_add(sb, &c, 1);
}

static void sb_adds(struct sbuf *sb, const char *s)
{
	sb_add(sb, s, strlen(s));
}

/* Writes code point cp (<= U+10FFFF) as UTF-8 into out; returns its length. */
static size_t utf8_put(char *out, uint32_t cp)
{
	unsigned char *o = (unsigned char *)out;

	if (cp < 0x80) {
		o[0] = cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = 0xC0 | (cp >> 6);
		o[1] = 0x80 | (cp & 0x3F);
		return 2;
	}
	if (cp < 0x10000) {
		o[0] = 0xE0 | (cp >> 12);
		o[1] = 0x80 | ((cp >> 6) & 0x3F);
		o[2] = 0x80 | (cp & 0x3F);
		return 3;
	}
	o[0] = 0xF0 | (cp >> 18);
	o[1] = 0x80 | ((cp >> 12) & 0x3F);
	o[2] = 0x80 | ((cp >> 6) & 0x3F);
	o[3] = 0x80 | (cp & 0x3F);
	return 4;
}

static void sb_add_cp(struct sbuf *sb, uint32_t cp)
{
	char buf[4];

	sb_add(sb, buf, utf8_put(buf, cp));
}

static void sb_free(struct sbuf *sb)
{
	free(sb->data);
	sb->data = NULL;
	sb->len = sb->cap = 0;
}

/* Hands over the NUL-terminated string (the caller owns it) and its length;
 * NULL with errno ENOMEM when an allocation failed on the way. */
static char *sb_finish(struct sbuf *sb, size_t *lenp)
{
	char *s;

	if (sb_reserve(sb, 0) < 0) {
		errno = ENOMEM;
		return NULL;
	}
	sb->data[sb->len] = '\0';
	if (lenp)
		*lenp = sb->len;
	s = sb->data;
	sb->data = NULL;
	sb->len = sb->cap = 0;
	return s;
}

/* ---- UTF-8 ------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s (n bytes available), its code point
 * in *cp; 0 when s does not start one. A NUL byte is a valid sequence here. */
static size_t utf8_seq(const char *str, size_t n, uint32_t *cp)
{
	const unsigned char *s = (const unsigned char *)str;
	uint32_t c, min;
	size_t len, i;

	if (n == 0)
		return 0;
	if (s[0] < 0x80) {
		*cp = s[0];
		return 1;
	}
	if (s[0] < 0xC2)
		return 0;
	if (s[0] < 0xE0) {
		len = 2;
		c = s[0] & 0x1F;
		min = 0x80;
	} else if (s[0] < 0xF0) {
		len = 3;
		c = s[0] & 0x0F;
		min = 0x800;
	} else if (s[0] < 0xF5) {
		len = 4;
		c = s[0] & 0x07;
		min = 0x10000;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (i = 1; i < len; i++) {
		if ((s[i] & 0xC0) != 0x80)
			return 0;
		c = (c << 6) | (s[i] & 0x3F);
	}
	if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
		return 0;
	*cp = c;
	return len;
}

int mfs_utf8_valid(const char *s, size_t len)
{
	size_t i = 0, n;
	uint32_t cp;

	while (i < len) {
		n = utf8_seq(s + i, len - i, &cp);
		if (n == 0 || cp == 0)
			return 0;
		i += n;
	}
	return 1;
}

static void sb_add_clean(struct sbuf *sb, const char *in, size_t len)
{
	size_t i = 0, n;
	uint32_t cp;

	while (i < len) {
		/* a run of ASCII, the usual case, in one piece */
		for (n = 0; i + n < len && in[i + n] != '\0' &&
			    (unsigned char)in[i + n] < 0x80;
		     n++)
			;
		if (n > 0) {
			sb_add(sb, in + i, n);
			i += n;
			continue;
		}
		n = utf8_seq(in + i, len - i, &cp);
		if (n == 0 || cp == 0) {
			sb_add_cp(sb, REPLACEMENT_CHAR);
			i++;
			continue;
		}
		sb_add(sb, in + i, n);
		i += n;
	}
}

char *mfs_utf8_clean(const char *in, size_t len)
{
	struct sbuf sb = {0};

	sb_add_clean(&sb, in, len);
	return sb_finish(&sb, NULL);
}

/* Largest character boundary <= max in the valid UTF-8 string s of len
 * bytes. */
static size_t utf8_cut(const char *s, size_t len, size_t max)
{
	size_t i;

	if (len <= max)
		return len;
	i = max;
	while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80)
		i--;
	return i;
}

/* ---- windows-1252 and charsets ----------------------------------------- */

/* windows-1252 bytes 0x80..0x9F; the five undefined ones give U+FFFD. */
static const uint16_t cp1252_high[32] = {
    0x20AC, 0xFFFD, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021,
    0x02C6, 0x2030, 0x0160, 0x2039, 0x0152, 0xFFFD, 0x017D, 0xFFFD,
    0xFFFD, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,
    0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0xFFFD, 0x017E, 0x0178,
};

static void sb_add_cp1252(struct sbuf *sb, const char *in, size_t len)
{
	size_t i;
	unsigned char c;

	for (i = 0; i < len; i++) {
		c = in[i];
		if (c >= 0x80 && c < 0xA0)
			sb_add_cp(sb, cp1252_high[c - 0x80]);
		else
			sb_add_cp(sb, c);
	}
}

/* Bytes of no known charset: UTF-8 when valid, else windows-1252. */
static void sb_add_raw(struct sbuf *sb, const char *in, size_t len, int utf8)
{
	if (utf8)
		sb_add(sb, in, len);
	else
		sb_add_cp1252(sb, in, len);
}

/* Labels that mail software uses for a superset of what they name; decoding
 * with the superset loses nothing and matches what the sender's software
 * meant (the same table as the WHATWG encoding standard, in small). glibc's
 * SJIS also maps 0x5C to YEN SIGN, which breaks ASCII text; CP932 does not. */
static const struct {
	const char *label;
	const char *iconv_name;
} charset_aliases[] = {
    {"us-ascii", "WINDOWS-1252"},
    {"ascii", "WINDOWS-1252"},
    {"iso-8859-1", "WINDOWS-1252"},
    {"iso8859-1", "WINDOWS-1252"},
    {"iso_8859-1", "WINDOWS-1252"},
    {"latin1", "WINDOWS-1252"},
    {"l1", "WINDOWS-1252"},
    {"gb2312", "GB18030"},
    {"gbk", "GB18030"},
    {"x-gbk", "GB18030"},
    {"euc-cn", "GB18030"},
    {"shift_jis", "CP932"},
    {"shift-jis", "CP932"},
    {"sjis", "CP932"},
    {"x-sjis", "CP932"},
    {"ms_kanji", "CP932"},
    {"windows-31j", "CP932"},
    {"euc-kr", "CP949"},
    {"ks_c_5601-1987", "CP949"},
    {"iso-8859-8-i", "ISO-8859-8"},
    {"iso-8859-6-i", "ISO-8859-6"},
    {"iso-8859-6-e", "ISO-8859-6"},
    {"iso-8859-8-e", "ISO-8859-8"},
};

#define CHARSET_NAME_MAX 40

/*
 * Opens a converter from charset name (n bytes at name) to UTF-8. Only
 * plausible names reach iconv_open(): letters, digits, '-', '_', '.', ':'
 * (no '/', which glibc would read as a conversion suffix).
 * Returns (iconv_t)-1 when the name is implausible or unknown.
 */
iconv_t mfs_charset_open(const char *name, size_t n)
{
	char buf[CHARSET_NAME_MAX + 1];
	const char *use = buf;
	size_t i;

	if (n == 0 || n > CHARSET_NAME_MAX)
		return (iconv_t)-1;
	for (i = 0; i < n; i++) {
		if (!isalnum((unsigned char)name[i]) &&
		    !strchr("-_.:", name[i]))
			return (iconv_t)-1;
		buf[i] = name[i];
	}
	buf[n] = '\0';
	for (i = 0; i < sizeof(charset_aliases) / sizeof(charset_aliases[0]);
	     i++) {
		if (strcasecmp(buf, charset_aliases[i].label) == 0) {
			use = charset_aliases[i].iconv_name;
			break;
		}
	}
	return iconv_open("UTF-8", use);
}

/* Converts len bytes at in through cd and appends the UTF-8; a byte that cd
 * rejects becomes U+FFFD and conversion goes on after it. */
static void sb_add_iconv(struct sbuf *sb, iconv_t cd, const char *in,
			 size_t len)
{
	char obuf[1024];
	char *ip = (char *)in, *op;
	size_t ileft = len, oleft, r;

	iconv(cd, NULL, NULL, NULL, NULL);
	while (ileft > 0) {
		op = obuf;
		oleft = sizeof(obuf);
		r = iconv(cd, &ip, &ileft, &op, &oleft);
		sb_add(sb, obuf, op - obuf);
		if (r != (size_t)-1 || errno == E2BIG)
			continue;
		/* EILSEQ or EINVAL (truncated at the end): skip one byte */
		sb_add_cp(sb, REPLACEMENT_CHAR);
		ip++;
		ileft--;
		iconv(cd, NULL, NULL, NULL, NULL);
	}
	op = obuf;
	oleft = sizeof(obuf);
	iconv(cd, NULL, NULL, &op, &oleft);
	sb_add(sb, obuf, op - obuf);
}

char *mfs_text_to_utf8(const char *charset, const char *in, size_t len,
		       size_t *outlen)
{
	struct sbuf sb = {0};
	struct sbuf conv = {0};
	iconv_t cd = (iconv_t)-1;

	if (charset != NULL)
		cd = mfs_charset_open(charset, strlen(charset));
	if (cd == (iconv_t)-1) {
		sb_add_raw(&conv, in, len, mfs_utf8_valid(in, len));
	} else {
		sb_add_iconv(&conv, cd, in, len);
		iconv_close(cd);
	}
	/* iconv passes NUL bytes through; the contract says valid UTF-8 */
	if (!conv.failed)
		sb_add_clean(&sb, conv.data, conv.len);
	else
		sb.failed = 1;
	sb_free(&conv);
	return sb_finish(&sb, outlen);
}

/* ---- modified UTF-7 ---------------------------------------------------- */

static const char mb64_chars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

/* Modified base64 (RFC 3501 5.1.3): ',' in place of '/'. */
static int mb64_value(char c)
{
	if (c == ',')
		return 63;
	if (c == '/')
		return -1;
	return mfs_b64_value((unsigned char)c);
}

static int is_print_ascii(uint32_t c)
{
	return c >= 0x20 && c <= 0x7E;
}

/* Appends UTF-16 code unit u of a shifted section; *high holds a pending
 * high surrogate. Returns -1 for what canonical modified UTF-7 never holds. */
static int mutf7_unit(struct sbuf *sb, uint32_t u, uint32_t *high)
{
	if (u >= 0xD800 && u <= 0xDBFF) {
		if (*high)
			return -1;
		*high = u;
		return 0;
	}
	if (u >= 0xDC00 && u <= 0xDFFF) {
		if (!*high)
			return -1;
		sb_add_cp(sb,
			  0x10000 + ((*high - 0xD800) << 10) + (u - 0xDC00));
		*high = 0;
		return 0;
	}
	if (*high || u == 0 || is_print_ascii(u))
		return -1;
	sb_add_cp(sb, u);
	return 0;
}

/* Decodes the shifted section after the '&' at *pp up to and including its
 * '-'; advances *pp past it. Returns -1 on anything not canonical. */
static int mutf7_section(struct sbuf *sb, const char **pp)
{
	const char *p = *pp + 1;
	uint32_t acc = 0, high = 0;
	int nbits = 0, v;

	for (; *p != '-'; p++) {
		v = mb64_value(*p);
		if (v < 0)
			return -1; /* also the end of the string */
		acc = (acc << 6) | v;
		nbits += 6;
		if (nbits >= 16) {
			nbits -= 16;
			if (mutf7_unit(sb, (acc >> nbits) & 0xFFFF, &high) < 0)
				return -1;
			acc &= (1u << nbits) - 1;
		}
	}
	/* leftover must be padding: fewer than 6 bits, all zero */
	if (high || nbits >= 6 || acc != 0)
		return -1;
	p++;
	/* "-&" would be a null shift unless it starts "&-" */
	if (p[0] == '&' && p[1] != '-')
		return -1;
	*pp = p;
	return 0;
}

char *mfs_mutf7_decode(const char *in)
{
	struct sbuf sb = {0};
	const char *p = in;

	while (*p) {
		if (*p == '&' && p[1] == '-') {
			sb_addc(&sb, '&');
			p += 2;
		} else if (*p == '&') {
			if (mutf7_section(&sb, &p) < 0)
				goto invalid;
		} else if (is_print_ascii((unsigned char)*p)) {
			sb_addc(&sb, *p++);
		} else {
			goto invalid;
		}
	}
	return sb_finish(&sb, NULL);
invalid:
	sb_free(&sb);
	errno = EINVAL;
	return NULL;
}

static void mb64_push(struct sbuf *sb, uint32_t unit, uint32_t *acc, int *nbits)
{
	*acc = (*acc << 16) | unit;
	*nbits += 16;
	while (*nbits >= 6) {
		*nbits -= 6;
		sb_addc(sb, mb64_chars[(*acc >> *nbits) & 0x3F]);
	}
	*acc &= (1u << *nbits) - 1;
}

/* Encodes the run of characters outside printable ASCII at s[*i..] as one
 * shifted section. Returns -1 on invalid UTF-8. */
static int mutf7_encode_run(struct sbuf *sb, const char *s, size_t len,
			    size_t *i)
{
	uint32_t cp, acc = 0;
	int nbits = 0;
	size_t n;

	sb_addc(sb, '&');
	while (*i < len && !is_print_ascii((unsigned char)s[*i])) {
		n = utf8_seq(s + *i, len - *i, &cp);
		if (n == 0)
			return -1;
		if (cp >= 0x10000) {
			cp -= 0x10000;
			mb64_push(sb, 0xD800 + (cp >> 10), &acc, &nbits);
			mb64_push(sb, 0xDC00 + (cp & 0x3FF), &acc, &nbits);
		} else {
			mb64_push(sb, cp, &acc, &nbits);
		}
		*i += n;
	}
	if (nbits > 0)
		sb_addc(sb, mb64_chars[(acc << (6 - nbits)) & 0x3F]);
	sb_addc(sb, '-');
	return 0;
}

char *mfs_mutf7_encode(const char *utf8)
{
	struct sbuf sb = {0};
	size_t len = strlen(utf8), i = 0;

	while (i < len) {
		if (utf8[i] == '&') {
			sb_adds(&sb, "&-");
			i++;
		} else if (is_print_ascii((unsigned char)utf8[i])) {
			sb_addc(&sb, utf8[i++]);
		} else if (mutf7_encode_run(&sb, utf8, len, &i) < 0) {
			sb_free(&sb);
			errno = EINVAL;
			return NULL;
		}
	}
	return sb_finish(&sb, NULL);
}

/* ---- RFC 2047 ----------------------------------------------------------- */

/* One encoded word found in the text. */
struct ew {
	const char *start;   /* borrowed: the "=?" */
	const char *end;     /* borrowed: just after the "?=" */
	const char *charset; /* borrowed: the charset, without "*lang" */
	size_t charset_len;
	char enc;	  /* 'B' or 'Q' */
	const char *text; /* borrowed: the encoded text */
	size_t text_len;
};

int mfs_hex_value(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Recognizes "=?charset?E?text?=" at p. Returns 0 and fills *w, or -1. */
static int ew_parse(const char *p, struct ew *w)
{
	const char *q, *star;

	if (p[0] != '=' || p[1] != '?')
		return -1;
	w->start = p;
	q = p + 2;
	while (*q > 0x20 && *q < 0x7F && *q != '?')
		q++;
	if (*q != '?' || q == p + 2)
		return -1;
	w->charset = p + 2;
	star = memchr(w->charset, '*', q - w->charset);
	w->charset_len = (star ? star : q) - w->charset;
	q++;
	if (*q != 'B' && *q != 'b' && *q != 'Q' && *q != 'q')
		return -1;
	w->enc = toupper((unsigned char)*q);
	if (q[1] != '?')
		return -1;
	q += 2;
	w->text = q;
	while (*q > 0x20 && *q < 0x7F && *q != '?')
		q++;
	if (q[0] != '?' || q[1] != '=')
		return -1;
	w->text_len = q - w->text;
	w->end = q + 2;
	return 0;
}

static int q_decode(struct sbuf *sb, const char *t, size_t n)
{
	size_t i;
	int hi, lo;

	for (i = 0; i < n; i++) {
		if (t[i] == '_') {
			sb_addc(sb, ' ');
		} else if (t[i] == '=') {
			if (i + 2 >= n)
				return -1;
			hi = mfs_hex_value((unsigned char)t[i + 1]);
			lo = mfs_hex_value((unsigned char)t[i + 2]);
			if (hi < 0 || lo < 0)
				return -1;
			sb_addc(sb, (char)(hi << 4 | lo));
			i += 2;
		} else {
			sb_addc(sb, t[i]);
		}
	}
	return 0;
}

/* Standard base64; missing padding is tolerated, anything else is not. */
static int b_decode(struct sbuf *sb, const char *t, size_t n)
{
	struct mfs_b64_dec d = {0};
	unsigned char buf[MFS_B64_DECODED_MAX(64)];
	size_t take;

	if (!mfs_b64_is_strict(t, n))
		return -1;
	while (n > 0) {
		take = n < 64 ? n : 64;
		sb_add(sb, buf, mfs_b64_decode(&d, t, take, buf));
		t += take;
		n -= take;
	}
	return 0;
}

static int ew_decode(const struct ew *w, struct sbuf *out)
{
	if (w->enc == 'B')
		return b_decode(out, w->text, w->text_len);
	return q_decode(out, w->text, w->text_len);
}

/* A run of adjacent encoded words of one charset, decoded together. */
struct ew_group {
	iconv_t cd;	     /* owned; (iconv_t)-1 when no group is open */
	const char *charset; /* borrowed */
	size_t charset_len;
	struct sbuf bytes; /* owned: the words' decoded bytes */
};

static void group_flush(struct ew_group *g, struct sbuf *out)
{
	if (g->cd == (iconv_t)-1)
		return;
	if (!g->bytes.failed)
		sb_add_iconv(out, g->cd, g->bytes.data ? g->bytes.data : "",
			     g->bytes.len);
	else
		out->failed = 1;
	iconv_close(g->cd);
	g->cd = (iconv_t)-1;
	sb_free(&g->bytes);
	g->bytes.failed = 0;
}

static int same_charset(const struct ew_group *g, const struct ew *w)
{
	return g->cd != (iconv_t)-1 && g->charset_len == w->charset_len &&
	       strncasecmp(g->charset, w->charset, w->charset_len) == 0;
}

static int only_wsp(const char *s, const char *e)
{
	for (; s < e; s++) {
		if (*s != ' ' && *s != '\t')
			return 0;
	}
	return 1;
}

/*
 * Takes the encoded word w into the output: joins it to the open group when
 * the gap before it is whitespace only and the charset is the same; else
 * closes the group and opens one. Returns -1 when w cannot be decoded
 * (unknown charset, bad encoding), so that the caller keeps it raw.
 */
static int ew_take(struct ew_group *g, const struct ew *w, const char *gap,
		   struct sbuf *out, int utf8)
{
	struct sbuf bytes = {0};
	iconv_t cd;
	int drop_gap;

	if (ew_decode(w, &bytes) < 0)
		goto free_bytes;
	if (g->cd != (iconv_t)-1 && only_wsp(gap, w->start) &&
	    same_charset(g, w)) {
		sb_add(&g->bytes, bytes.data, bytes.len);
		sb_free(&bytes);
		return 0;
	}
	cd = mfs_charset_open(w->charset, w->charset_len);
	if (cd == (iconv_t)-1)
		goto free_bytes;
	/* the whitespace between two encoded words is dropped */
	drop_gap = g->cd != (iconv_t)-1 && only_wsp(gap, w->start);
	group_flush(g, out);
	if (!drop_gap)
		sb_add_raw(out, gap, w->start - gap, utf8);
	g->cd = cd;
	g->charset = w->charset;
	g->charset_len = w->charset_len;
	g->bytes = bytes;
	return 0;
free_bytes:
	sb_free(&bytes);
	return -1;
}

/* The text with folding removed and no CR or LF left (see names.h). */
static char *unfold(const char *in)
{
	struct sbuf sb = {0};
	const char *p = in;
	size_t n;

	while (*p) {
		n = (p[0] == '\r' && p[1] == '\n') ? 2 : (*p == '\n') ? 1 : 0;
		if (n == 0 && *p == '\r')
			n = 1;
		if (n == 0) {
			sb_addc(&sb, *p++);
			continue;
		}
		p += n;
		if (*p == ' ' || *p == '\t' || *p == '\0')
			continue;
		sb_addc(&sb, ' ');
	}
	return sb_finish(&sb, NULL);
}

char *mfs_hdr_decode(const char *in)
{
	struct sbuf out = {0};
	struct ew_group g = {.cd = (iconv_t)-1};
	const char *p, *gap;
	struct ew w;
	char *u, *res;
	int utf8;

	u = unfold(in);
	if (u == NULL)
		return NULL;
	utf8 = mfs_utf8_valid(u, strlen(u));
	gap = p = u;
	while ((p = strstr(p, "=?")) != NULL) {
		if (ew_parse(p, &w) < 0 ||
		    ew_take(&g, &w, gap, &out, utf8) < 0) {
			p++;
			continue;
		}
		gap = p = w.end;
	}
	group_flush(&g, &out);
	sb_add_raw(&out, gap, strlen(gap), utf8);
	free(u);
	if (out.failed) {
		errno = ENOMEM;
		return NULL;
	}
	res = mfs_utf8_clean(out.data ? out.data : "", out.len);
	sb_free(&out);
	return res;
}

/* ---- RFC 2231 ----------------------------------------------------------- */

char *mfs_rfc2231_decode(const char *value_with_charset)
{
	const char *v = value_with_charset, *q1, *q2, *t;
	struct sbuf bytes = {0};
	char *charset = NULL, *res;
	int hi, lo;

	q1 = strchr(v, '\'');
	q2 = q1 ? strchr(q1 + 1, '\'') : NULL;
	t = v;
	if (q2) {
		charset = strndup(v, q1 - v);
		if (charset == NULL)
			return NULL;
		t = q2 + 1;
	}
	for (; *t; t++) {
		hi = t[0] == '%' ? mfs_hex_value((unsigned char)t[1]) : -1;
		lo = hi >= 0 ? mfs_hex_value((unsigned char)t[2]) : -1;
		if (lo < 0) {
			sb_addc(&bytes, *t);
			continue;
		}
		sb_addc(&bytes, (char)(hi << 4 | lo));
		t += 2;
	}
	if (bytes.failed) {
		free(charset);
		errno = ENOMEM;
		return NULL;
	}
	res = mfs_text_to_utf8(charset, bytes.data ? bytes.data : "", bytes.len,
			       NULL);
	sb_free(&bytes);
	free(charset);
	return res;
}

/* ---- sanitizing names -------------------------------------------------- */

static int is_bidi_control(uint32_t cp)
{
	return cp == 0x061C || cp == 0x200E || cp == 0x200F ||
	       (cp >= 0x202A && cp <= 0x202E) || (cp >= 0x2066 && cp <= 0x2069);
}

/* Whitespace to trim and collapse, invisible spaces included. */
static int is_space(uint32_t cp)
{
	return cp == ' ' || cp == 0xA0 || cp == 0x1680 ||
	       (cp >= 0x2000 && cp <= 0x200B) || cp == 0x202F || cp == 0x205F ||
	       cp == 0x3000 || cp == 0xFEFF;
}

/* The character a name holds instead of cp; 0 to drop it. */
static uint32_t name_char(uint32_t cp)
{
	if (cp == '/')
		return 0x2215;
	if ((cp >= '\t' && cp <= '\r') || cp == 0x2028 || cp == 0x2029)
		return ' ';
	if (cp < 0x20 || (cp >= 0x7F && cp <= 0x9F))
		return '_';
	if (is_bidi_control(cp))
		return 0;
	return cp;
}

/*
 * Appends the sanitized form of in to out: cleaned, mapped by name_char(),
 * trimmed, and with each whitespace run made one ' ' when collapse is set.
 */
static void sb_add_sanitized(struct sbuf *out, const char *in, int collapse)
{
	char *clean = mfs_utf8_clean(in, strlen(in));
	size_t base = out->len, content_end = out->len, i = 0, n, len;
	uint32_t cp;
	int last_space = 0;

	if (clean == NULL) {
		out->failed = 1;
		return;
	}
	len = strlen(clean);
	while (i < len) {
		n = utf8_seq(clean + i, len - i, &cp);
		if (n == 0)
			break; /* cannot happen: clean is valid UTF-8 */
		i += n;
		cp = name_char(cp);
		if (cp == 0)
			continue;
		if (is_space(cp)) {
			if (out->len == base || (collapse && last_space))
				continue;
			sb_add_cp(out, collapse ? ' ' : cp);
			last_space = 1;
			continue;
		}
		sb_add_cp(out, cp);
		last_space = 0;
		content_end = out->len;
	}
	if (!out->failed)
		out->len = content_end;
	free(clean);
}

/* Length of s[0..len) without trailing whitespace (s valid UTF-8). */
static size_t trim_end(const char *s, size_t len)
{
	size_t start;
	uint32_t cp;

	while (len > 0) {
		start = len - 1;
		while (start > 0 && ((unsigned char)s[start] & 0xC0) == 0x80)
			start--;
		if (utf8_seq(s + start, len - start, &cp) != len - start ||
		    !is_space(cp))
			break;
		len = start;
	}
	return len;
}

/* Offset of the extension's dot in name (len bytes), or len if none. */
static size_t ext_offset(const char *name, size_t len)
{
	const char *dot = memrchr(name, '.', len);

	if (dot == NULL || dot == name)
		return len;
	if (len - (dot - name) - 1 < 1 || len - (dot - name) - 1 > 16)
		return len;
	return dot - name;
}

/* Appends stem cut to fit max bytes (trailing whitespace trimmed after the
 * cut), then the rest of the name (suffix, extension). */
static void sb_add_cut(struct sbuf *sb, const char *stem, size_t len,
		       size_t max)
{
	size_t n = utf8_cut(stem, len, max);

	if (n < len)
		n = trim_end(stem, n);
	sb_add(sb, stem, n);
}

char *mfs_name_sanitize(const char *in)
{
	struct sbuf s = {0}, out = {0};
	size_t ext;
	char *res;

	sb_add_sanitized(&s, in ? in : "", 0);
	if (s.failed) {
		errno = ENOMEM;
		return NULL;
	}
	if (s.len == 0)
		sb_adds(&out, "unnamed");
	else if (s.len == 1 && s.data[0] == '.')
		sb_adds(&out, "_");
	else if (s.len == 2 && s.data[0] == '.' && s.data[1] == '.')
		sb_adds(&out, "__");
	else if (s.len <= MFS_NAME_MAX)
		sb_add(&out, s.data, s.len);
	else {
		ext = ext_offset(s.data, s.len);
		sb_add_cut(&out, s.data, ext, MFS_NAME_MAX - (s.len - ext));
		sb_add(&out, s.data + ext, s.len - ext);
	}
	sb_free(&s);
	res = sb_finish(&out, NULL);
	return res;
}

char *mfs_name_unique(const char *name, int n)
{
	struct sbuf out = {0};
	char suffix[24];
	size_t len, ext, room;

	if (name == NULL)
		name = "";
	if (n <= 1)
		return strdup(name);
	len = strlen(name);
	ext = ext_offset(name, len);
	snprintf(suffix, sizeof(suffix), " (%d)", n);
	room = MFS_NAME_MAX - strlen(suffix) - (len - ext);
	sb_add_cut(&out, name, ext, room);
	sb_adds(&out, suffix);
	sb_add(&out, name + ext, len - ext);
	return sb_finish(&out, NULL);
}

/* ---- message directory names -------------------------------------------- */

#define DIRNAME_DASH " \xE2\x80\x94 " /* " — " */
#define DIRNAME_DOT  " \xC2\xB7"      /* " ·" */
#define ELLIPSIS     "\xE2\x80\xA6"   /* "…" */

static void date_prefix(time_t date, char buf[64])
{
	struct tm tm;

	if (date == 0 || date == (time_t)-1 || !localtime_r(&date, &tm) ||
	    tm.tm_year < -1900 || tm.tm_year > 9999 - 1900) {
		strcpy(buf, "0000-00-00 0000");
		return;
	}
	snprintf(buf, 64, "%04d-%02d-%02d %02d%02d", tm.tm_year + 1900,
		 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min);
}

/* Sanitized, collapsed text; dflt when that leaves nothing. */
static int dirname_part(struct sbuf *sb, const char *text, const char *dflt)
{
	sb_add_sanitized(sb, text ? text : "", 1);
	if (sb->len == 0)
		sb_adds(sb, dflt);
	return sb->failed ? -1 : 0;
}

/* Shortens part to at most max bytes; a cut part ends in "…". */
static void dirname_shorten(struct sbuf *part, size_t max)
{
	size_t n;

	if (part->len <= max)
		return;
	n = max >= sizeof(ELLIPSIS) ? max - (sizeof(ELLIPSIS) - 1) : 0;
	n = trim_end(part->data, utf8_cut(part->data, part->len, n));
	part->len = n;
	if (max >= sizeof(ELLIPSIS) - 1)
		sb_adds(part, ELLIPSIS);
}

char *mfs_msg_dirname(time_t date, const char *from, const char *subject,
		      const char *id)
{
	struct sbuf out = {0}, snd = {0}, sub = {0};
	char prefix[64], idbuf[MFS_MSG_ID_MAX + 1];
	size_t idlen, i, room, half, keep;

	idlen = id ? strlen(id) : 0;
	if (idlen == 0 || idlen > MFS_MSG_ID_MAX) {
		errno = EINVAL;
		return NULL;
	}
	for (i = 0; i < idlen; i++) {
		unsigned char c = id[i];

		idbuf[i] = (c > 0x20 && c < 0x7F && c != '/') ? c : '_';
	}
	idbuf[idlen] = '\0';
	date_prefix(date, prefix);
	if (dirname_part(&snd, from, "(no sender)") < 0 ||
	    dirname_part(&sub, subject, "(no subject)") < 0)
		goto free_parts;

	room = MFS_NAME_MAX - strlen(prefix) - 1 - strlen(DIRNAME_DASH) -
	       strlen(DIRNAME_DOT) - idlen;
	if (snd.len + sub.len > room) {
		half = room / 2;
		keep = sub.len < half ? sub.len : half;
		if (room > snd.len && room - snd.len > keep)
			keep = room - snd.len;
		dirname_shorten(&sub, keep);
		dirname_shorten(&snd, room - sub.len);
	}
	sb_adds(&out, prefix);
	sb_addc(&out, ' ');
	sb_add(&out, snd.data, snd.len);
	sb_adds(&out, DIRNAME_DASH);
	sb_add(&out, sub.data, sub.len);
	sb_adds(&out, DIRNAME_DOT);
	sb_add(&out, idbuf, idlen);
free_parts:
	if (snd.failed || sub.failed)
		out.failed = 1;
	sb_free(&snd);
	sb_free(&sub);
	return sb_finish(&out, NULL);
}

int mfs_msg_dirname_id(const char *name, char *id, size_t idlen)
{
	const char *p = name, *hit = NULL;
	size_t n;

	while ((p = strstr(p, DIRNAME_DOT)) != NULL) {
		hit = p;
		p++;
	}
	if (hit == NULL || hit[strlen(DIRNAME_DOT)] == '\0') {
		errno = ENOENT;
		return -1;
	}
	hit += strlen(DIRNAME_DOT);
	n = strlen(hit);
	if (n + 1 > idlen) {
		errno = ERANGE;
		return -1;
	}
	memcpy(id, hit, n + 1);
	return 0;
}

/* ---- dates ------------------------------------------------------------ */

static const char *const month_names[12] = {"jan", "feb", "mar", "apr",
					    "may", "jun", "jul", "aug",
					    "sep", "oct", "nov", "dec"};

/* Skips whitespace and (nested) comments. */
static void skip_cfws(const char **pp)
{
	const char *p = *pp;
	int depth;

	for (;;) {
		if (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') {
			p++;
		} else if (*p == '(') {
			depth = 0;
			do {
				if (*p == '\\' && p[1] != '\0')
					p++;
				else if (*p == '(')
					depth++;
				else if (*p == ')')
					depth--;
				p++;
			} while (*p != '\0' && depth > 0);
		} else {
			break;
		}
	}
	*pp = p;
}

/* Reads min..max digits at *pp into *val. */
static int read_num(const char **pp, int min, int max, int *val)
{
	const char *p = *pp;
	int n = 0, v = 0;

	while (n < max && *p >= '0' && *p <= '9') {
		v = v * 10 + (*p++ - '0');
		n++;
	}
	if (n < min || (*p >= '0' && *p <= '9'))
		return -1;
	*val = v;
	*pp = p;
	return 0;
}

/* Reads a run of letters at *pp into buf (lowercased, cut to size - 1);
 * returns its full length. */
static size_t read_word(const char **pp, char *buf, size_t size)
{
	const char *p = *pp;
	size_t n = 0;

	while (isalpha((unsigned char)*p)) {
		if (n + 1 < size)
			buf[n] = tolower((unsigned char)*p);
		n++;
		p++;
	}
	buf[n + 1 < size ? n : size - 1] = '\0';
	*pp = p;
	return n;
}

/* Month 0..11 from a 3-letter or full English month name; -1 if none. */
static int month_index(const char *word, size_t len, int exact3)
{
	static const char *const full[12] = {"january", "february", "march",
					     "april",	"may",	    "june",
					     "july",	"august",   "september",
					     "october", "november", "december"};
	int i;

	for (i = 0; i < 12; i++) {
		if (len == 3 && strcmp(word, month_names[i]) == 0)
			return i;
		if (!exact3 && strcmp(word, full[i]) == 0)
			return i;
	}
	return -1;
}

static int days_in_month(int year, int mon)
{
	static const int days[12] = {31, 28, 31, 30, 31, 30,
				     31, 31, 30, 31, 30, 31};
	int leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;

	return days[mon] + (mon == 1 && leap);
}

/* Zone offset in seconds east of UTC from an alphabetic zone name. */
static int zone_by_name(const char *z)
{
	static const struct {
		const char *name;
		int hours;
	} zones[] = {{"ut", 0},	  {"gmt", 0},  {"z", 0},    {"est", -5},
		     {"edt", -4}, {"cst", -6}, {"cdt", -5}, {"mst", -7},
		     {"mdt", -6}, {"pst", -8}, {"pdt", -7}};
	size_t i;

	for (i = 0; i < sizeof(zones) / sizeof(zones[0]); i++) {
		if (strcmp(z, zones[i].name) == 0)
			return zones[i].hours * 3600;
	}
	return 0; /* unknown: -0000 per RFC 5322 4.3 */
}

/* Reads "+HHMM" / "-HHMM" at *pp into *off (seconds east of UTC). */
static int read_numeric_zone(const char **pp, long *off)
{
	const char *p = *pp;
	int sign, hhmm;

	if (*p != '+' && *p != '-')
		return -1;
	sign = *p++ == '-' ? -1 : 1;
	if (read_num(&p, 4, 4, &hhmm) < 0 || hhmm % 100 > 59)
		return -1;
	*off = sign * ((hhmm / 100) * 3600L + (hhmm % 100) * 60L);
	*pp = p;
	return 0;
}

/* UTC time_t from the fields; -1 when out of range. */
static time_t make_time(int year, int mon, int day, int hour, int min, int sec,
			long off)
{
	struct tm tm;

	if (year < 0 || year > 9999 || mon < 0 || mon > 11 || day < 1 ||
	    day > days_in_month(year, mon) || hour > 23 || min > 59 || sec > 60)
		return (time_t)-1;
	memset(&tm, 0, sizeof(tm));
	tm.tm_year = year - 1900;
	tm.tm_mon = mon;
	tm.tm_mday = day;
	tm.tm_hour = hour;
	tm.tm_min = min;
	tm.tm_sec = sec;
	return timegm(&tm) - off;
}

/* "Thu", or a longer name that starts like one ("Thursday"). */
static int is_day_name(const char *word, size_t len)
{
	static const char *const days[7] = {"mon", "tue", "wed", "thu",
					    "fri", "sat", "sun"};
	int i;

	if (len < 3)
		return 0;
	for (i = 0; i < 7; i++) {
		if (strncmp(word, days[i], 3) == 0)
			return 1;
	}
	return 0;
}

/* Skips CFWS, and one '-' with CFWS after it when allow_dash is set. */
static void skip_sep(const char **pp, int allow_dash)
{
	skip_cfws(pp);
	if (allow_dash && **pp == '-') {
		(*pp)++;
		skip_cfws(pp);
	}
}

time_t mfs_parse_date(const char *s)
{
	const char *p = s;
	char word[16];
	size_t wlen;
	int day, mon, year, ydigits, hour, min, sec = 0;
	long off = 0;
	const char *y;

	if (p == NULL)
		return (time_t)-1;
	skip_cfws(&p);
	if (isalpha((unsigned char)*p)) {
		wlen = read_word(&p, word, sizeof(word));
		if (!is_day_name(word, wlen))
			return (time_t)-1;
		skip_cfws(&p);
		if (*p == ',')
			p++;
		skip_cfws(&p);
	}
	if (read_num(&p, 1, 2, &day) < 0)
		return (time_t)-1;
	skip_sep(&p, 1);
	wlen = read_word(&p, word, sizeof(word));
	mon = month_index(word, wlen, 0);
	if (mon < 0)
		return (time_t)-1;
	skip_sep(&p, 1);
	y = p;
	if (read_num(&p, 2, 4, &year) < 0)
		return (time_t)-1;
	ydigits = p - y;
	if (ydigits == 2)
		year += year < 50 ? 2000 : 1900;
	else if (ydigits == 3)
		year += 1900;
	skip_cfws(&p);
	if (read_num(&p, 1, 2, &hour) < 0)
		return (time_t)-1;
	skip_cfws(&p);
	if (*p++ != ':')
		return (time_t)-1;
	skip_cfws(&p);
	if (read_num(&p, 2, 2, &min) < 0)
		return (time_t)-1;
	skip_cfws(&p);
	if (*p == ':') {
		p++;
		skip_cfws(&p);
		if (read_num(&p, 2, 2, &sec) < 0)
			return (time_t)-1;
		skip_cfws(&p);
	}
	if (*p == '+' || *p == '-') {
		if (read_numeric_zone(&p, &off) < 0)
			return (time_t)-1;
	} else if (isalpha((unsigned char)*p)) {
		read_word(&p, word, sizeof(word));
		off = zone_by_name(word);
	}
	return make_time(year, mon, day, hour, min, sec, off);
}

time_t mfs_parse_imap_date(const char *s)
{
	const char *p = s;
	char word[8];
	size_t wlen;
	int day, mon, year, hour, min, sec;
	long off;

	if (p == NULL)
		return (time_t)-1;
	if (*p == '"')
		p++;
	if (*p == ' ')
		p++;
	if (read_num(&p, 1, 2, &day) < 0 || *p++ != '-')
		return (time_t)-1;
	wlen = read_word(&p, word, sizeof(word));
	mon = month_index(word, wlen, 1);
	if (mon < 0 || *p++ != '-')
		return (time_t)-1;
	if (read_num(&p, 4, 4, &year) < 0 || *p++ != ' ')
		return (time_t)-1;
	if (read_num(&p, 2, 2, &hour) < 0 || *p++ != ':' ||
	    read_num(&p, 2, 2, &min) < 0 || *p++ != ':' ||
	    read_num(&p, 2, 2, &sec) < 0 || *p++ != ' ')
		return (time_t)-1;
	if (read_numeric_zone(&p, &off) < 0)
		return (time_t)-1;
	if (*p == '"')
		p++;
	if (*p != '\0')
		return (time_t)-1;
	return make_time(year, mon, day, hour, min, sec, off);
}
