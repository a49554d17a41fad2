/*
 * outmsg.c - preparing a message a user wrote for SMTP submission.
 *
 * The header block is read into memory (bounded); the body is only ever
 * streamed. See outmsg.h for the policy on 8-bit content.
 */
#include "outmsg.h"

#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <unistd.h>

#include "base64.h"
#include "header.h"
#include "names.h"

#define CHUNK 65536

/* ---- growing strings ------------------------------------------------- */

struct sbuf {
	char *s; /* owned */
	size_t len, cap;
	int oom;
};

static void sb_add(struct sbuf *b, const char *p, size_t n)
{
	if (b->oom)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 64;
		char *s;

		while (b->len + n + 1 > cap)
			cap *= 2;
		s = realloc(b->s, cap);
		if (!s) {
			b->oom = 1;
			return;
		}
		b->s = s;
		b->cap = cap;
	}
	memcpy(b->s + b->len, p, n);
	b->len += n;
	b->s[b->len] = '\0';
}

static void sb_str(struct sbuf *b, const char *s)
{
	sb_add(b, s, strlen(s));
}

static void sb_ch(struct sbuf *b, char c)
{
	sb_add(b, &c, 1);
}

static const char *sb_get(struct sbuf *b)
{
	return b->s ? b->s : "";
}

static void sb_free(struct sbuf *b)
{
	free(b->s);
	memset(b, 0, sizeof(*b));
}

static int has_8bit(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] >= 0x80)
			return 1;
	return 0;
}

/* ---- header fields ----------------------------------------------------- */

/* One field of the header block: name and the value up to (not including)
 * the LF that ends its last line. */
struct field {
	const char *name;
	size_t name_len;
	const char *value; /* after the colon */
	size_t value_len;
	const char *start; /* the whole field, name to last LF inclusive */
	size_t len;
};

/* Steps through the header block [*pos, hend) (LF line ends) a logical
 * line at a time (header.h). Returns 1 with *f filled, 0 at the end; a
 * line that is not a field has name_len 0. */
static int next_field(const char *hdr, size_t hend, size_t *pos,
		      struct field *f)
{
	struct mfs_field m;
	size_t at = *pos;

	if (!mfs_header_line_next(hdr, pos, hend, &m))
		return 0;
	f->start = hdr + at;
	f->len = *pos - at;
	f->name = hdr + m.off;
	f->name_len = m.colon != MFS_NOT_FIELD ? m.colon - m.off : 0;
	f->value = m.colon != MFS_NOT_FIELD ? hdr + m.colon + 1 : f->start;
	f->value_len = (size_t)(hdr + m.end - f->value);
	return 1;
}

static int field_is(const struct field *f, const char *name)
{
	return f->name_len == strlen(name) &&
	       strncasecmp(f->name, name, f->name_len) == 0;
}

/* The value unfolded (CR and LF become spaces) and trimmed; malloc'd. */
static char *field_value(const struct field *f)
{
	const char *v = f->value;
	size_t n = f->value_len;
	char *out;

	while (n && (*v == ' ' || *v == '\t')) {
		v++;
		n--;
	}
	while (n && isspace((unsigned char)v[n - 1]))
		n--;
	out = strndup(v, n);
	if (!out)
		return NULL;
	for (char *p = out; *p; p++)
		if (*p == '\r' || *p == '\n')
			*p = ' ';
	return out;
}

/* Checks the syntax of every field: a name of printable ASCII before a
 * colon. */
static int check_fields(const char *hdr, struct mfs_err *err)
{
	size_t pos = 0, hend = strlen(hdr), i;
	int line = 1;
	struct field f;

	while (next_field(hdr, hend, &pos, &f)) {
		if (f.len > 0 && f.start[0] == ':')
			return mfs_err_set(err, MFS_E_INVAL,
					   "header line %d has no field name "
					   "before a colon: \"%.60s\"",
					   line, f.start);
		if (f.name_len == 0)
			return mfs_err_set(
			    err, MFS_E_INVAL,
			    "header line %d is not a header field "
			    "(\"Name: value\"): \"%.60s\"",
			    line, f.start);
		for (i = 0; i < f.len; i++)
			line += f.start[i] == '\n';
	}
	return MFS_OK;
}

/* ---- address lists ----------------------------------------------------- */

enum item_kind { ITEM_MAILBOX, ITEM_GROUP, ITEM_GROUP_END };

struct addr_item {
	enum item_kind kind;
	char *display; /* owned: phrase, unquoted, or NULL */
	char *addr;    /* owned: addr-spec (mailbox only) */
};

struct addr_list {
	struct addr_item *items; /* owned */
	size_t n;
};

static void addr_list_free(struct addr_list *l)
{
	for (size_t i = 0; i < l->n; i++) {
		free(l->items[i].display);
		free(l->items[i].addr);
	}
	free(l->items);
	memset(l, 0, sizeof(*l));
}

static int addr_push(struct addr_list *l, enum item_kind kind,
		     const char *display, const char *addr)
{
	struct addr_item *it;

	it = realloc(l->items, (l->n + 1) * sizeof(*it));
	if (!it)
		return -1;
	l->items = it;
	it += l->n;
	it->kind = kind;
	it->display = display && *display ? strdup(display) : NULL;
	it->addr = addr ? strdup(addr) : NULL;
	if ((display && *display && !it->display) || (addr && !it->addr)) {
		free(it->display);
		free(it->addr);
		return -1;
	}
	l->n++;
	return 0;
}

/* State of the mailbox being read. */
struct mbox_acc {
	struct sbuf phrase; /* display words, unquoted, single spaces */
	struct sbuf raw;    /* addr-spec outside <>, no blanks/comments */
	struct sbuf angle;  /* inside <> */
	int words;	    /* words outside <> */
	int space;	    /* a blank since the last word */
	int saw_angle;
};

static void acc_reset(struct mbox_acc *a)
{
	sb_free(&a->phrase);
	sb_free(&a->raw);
	sb_free(&a->angle);
	a->words = a->space = a->saw_angle = 0;
}

static int addr_valid(const char *a)
{
	const char *at = strrchr(a, '@');

	if (!at || at == a || !at[1])
		return 0;
	for (const char *p = a; *p; p++) {
		unsigned char c = *p;

		if (c < 33 || c == 127 || strchr("<>,;()[]\\", c)) {
			/* a quoted local part may hold anything but CR/LF */
			if (*a == '"' && p < at && c >= 32 && c != 127)
				continue;
			return 0;
		}
	}
	return 1;
}

/* Ends the mailbox in acc: appends it to l. */
static int acc_finish(struct mbox_acc *a, struct addr_list *l,
		      const char *value, struct mfs_err *err)
{
	const char *addr;

	if (a->saw_angle) {
		addr = sb_get(&a->angle);
		/* obsolete route: <@a,@b:user@host> */
		if (*addr == '@' && strchr(addr, ':'))
			addr = strchr(addr, ':') + 1;
	} else {
		if (a->raw.len == 0)
			return MFS_OK; /* an empty element, "a@b, , c@d" */
		if (a->words > 1)
			goto bad;
		addr = sb_get(&a->raw);
	}
	if (a->phrase.oom || a->raw.oom || a->angle.oom)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	if (!addr_valid(addr))
		goto bad;
	if (addr_push(l, ITEM_MAILBOX, a->saw_angle ? sb_get(&a->phrase) : NULL,
		      addr))
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	acc_reset(a);
	return MFS_OK;
bad:
	return mfs_err_set(err, MFS_E_INVAL,
			   "cannot read an address in \"%.200s\"", value);
}

static void acc_word(struct mbox_acc *a, const char *p, size_t n,
		     const char *rawp, size_t rawn)
{
	if (a->phrase.len && a->space)
		sb_ch(&a->phrase, ' ');
	sb_add(&a->phrase, p, n);
	if (a->raw.len == 0 || a->space)
		a->words++;
	sb_add(&a->raw, rawp, rawn);
	a->space = 0;
}

/* Skips a comment starting at s[*i] == '('. Returns -1 if unterminated. */
static int skip_comment(const char *s, size_t *i)
{
	int depth = 0;

	for (; s[*i]; (*i)++) {
		if (s[*i] == '\\' && s[*i + 1])
			(*i)++;
		else if (s[*i] == '(')
			depth++;
		else if (s[*i] == ')' && --depth == 0)
			return 0;
	}
	return -1;
}

/* Reads a quoted string at s[*i] == '"' into q (unescaped). *i ends on the
 * closing quote. Returns -1 if unterminated. */
static int read_quoted(const char *s, size_t *i, struct sbuf *q)
{
	for ((*i)++; s[*i]; (*i)++) {
		if (s[*i] == '\\' && s[*i + 1])
			(*i)++;
		else if (s[*i] == '"')
			return 0;
		sb_ch(q, s[*i]);
	}
	return -1;
}

static int parse_list(const char *s, struct addr_list *l, struct mfs_err *err)
{
	struct mbox_acc a = {0};
	int in_angle = 0, in_group = 0, rc;
	size_t i;

	for (i = 0; s[i]; i++) {
		char c = s[i];

		if (c == '(') {
			if (skip_comment(s, &i))
				goto bad;
			a.space = 1;
		} else if (c == '"') {
			struct sbuf q = {0};
			size_t from = i;

			if (read_quoted(s, &i, &q)) {
				sb_free(&q);
				goto bad;
			}
			if (in_angle)
				sb_add(&a.angle, s + from, i + 1 - from);
			else
				acc_word(&a, sb_get(&q), q.len, s + from,
					 i + 1 - from);
			sb_free(&q);
		} else if (in_angle) {
			if (c == '>')
				in_angle = 0;
			else if (c == '<')
				goto bad;
			else if (!isspace((unsigned char)c))
				sb_ch(&a.angle, c);
		} else if (c == '<') {
			if (a.saw_angle)
				goto bad;
			a.saw_angle = in_angle = 1;
		} else if (c == ',' || c == ';') {
			rc = acc_finish(&a, l, s, err);
			if (rc)
				goto fail;
			if (c == ';') {
				if (!in_group)
					goto bad;
				in_group = 0;
				if (addr_push(l, ITEM_GROUP_END, NULL, NULL))
					goto nomem;
			}
		} else if (c == ':' && !a.saw_angle && !in_group) {
			/* "undisclosed-recipients:" starts a group */
			if (addr_push(l, ITEM_GROUP, sb_get(&a.phrase), NULL))
				goto nomem;
			acc_reset(&a);
			in_group = 1;
		} else if (isspace((unsigned char)c)) {
			a.space = 1;
		} else if (a.saw_angle) {
			goto bad; /* text after <addr> */
		} else {
			size_t n = 1;

			while (s[i + n] &&
			       !strchr("()\"<>,;: \t\r\n", s[i + n]))
				n++;
			/* '.' and '@' join words of an addr-spec */
			if (a.raw.len && (s[i] == '.' || s[i] == '@' ||
					  a.raw.s[a.raw.len - 1] == '.' ||
					  a.raw.s[a.raw.len - 1] == '@'))
				a.space = 0;
			acc_word(&a, s + i, n, s + i, n);
			i += n - 1;
		}
	}
	if (in_angle)
		goto bad;
	rc = acc_finish(&a, l, s, err);
	if (rc)
		goto fail;
	if (in_group && addr_push(l, ITEM_GROUP_END, NULL, NULL))
		goto nomem;
	acc_reset(&a);
	return MFS_OK;
nomem:
	rc = mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	goto fail;
bad:
	rc = mfs_err_set(err, MFS_E_INVAL,
			 "cannot read an address in \"%.200s\"", s);
fail:
	acc_reset(&a);
	return rc;
}

static int list_has(char **list, size_t n, const char *addr)
{
	for (size_t i = 0; i < n; i++)
		if (strcasecmp(list[i], addr) == 0)
			return 1;
	return 0;
}

int mfs_outmsg_addresses(const char *value, char ***list, size_t *n,
			 struct mfs_err *err)
{
	struct addr_list l = {0};
	int rc = parse_list(value, &l, err);

	for (size_t i = 0; rc == MFS_OK && i < l.n; i++) {
		char **nl;

		if (l.items[i].kind != ITEM_MAILBOX ||
		    list_has(*list, *n, l.items[i].addr))
			continue;
		nl = realloc(*list, (*n + 1) * sizeof(*nl));
		if (!nl) {
			rc = mfs_err_set(err, MFS_E_NOMEM, "out of memory");
			break;
		}
		*list = nl;
		nl[*n] = l.items[i].addr;
		l.items[i].addr = NULL;
		(*n)++;
	}
	addr_list_free(&l);
	return rc;
}

/* ---- parse ----------------------------------------------------------- */

/* Reads the header block: stops after the empty line. Sets body_offset.
 * The stored copy has LF line ends, one LF after every field. */
static int read_header(int fd, struct mfs_outmsg *msg, struct mfs_err *err)
{
	struct sbuf b = {0};
	char buf[8192];
	off_t off = 0;
	int bol = 1, done = 0;

	while (!done) {
		ssize_t n = pread(fd, buf, sizeof(buf), off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			sb_free(&b);
			return mfs_err_set(err, MFS_E_IO,
					   "cannot read the message: %s",
					   strerror(errno));
		}
		if (n == 0)
			break;
		for (ssize_t i = 0; i < n && !done; i++) {
			char c = buf[i];

			if (c == '\r' && i + 1 < n && buf[i + 1] == '\n')
				continue;
			if (c == '\r' && i + 1 == n) {
				/* a CR at a chunk's end: look one byte ahead */
				char next;

				if (pread(fd, &next, 1, off + n) == 1 &&
				    next == '\n')
					continue;
			}
			if (c == '\n' && bol) {
				done = 1;
				msg->body_offset = off + i + 1;
				break;
			}
			sb_ch(&b, c);
			bol = c == '\n';
		}
		off += n;
		if (b.len > MFS_OUTMSG_HDR_MAX) {
			sb_free(&b);
			return mfs_err_set(err, MFS_E_INVAL,
					   "the header block is longer than "
					   "%d bytes (no empty line after the "
					   "header?)",
					   MFS_OUTMSG_HDR_MAX);
		}
	}
	if (!done)
		msg->body_offset = off;
	if (b.len && b.s[b.len - 1] != '\n')
		sb_ch(&b, '\n');
	if (b.oom) {
		sb_free(&b);
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	}
	if (b.len == 0) {
		sb_free(&b);
		return mfs_err_set(err, MFS_E_INVAL,
				   "the message has no header (it must start "
				   "with lines such as \"To: ...\")");
	}
	msg->header = b.s;
	return MFS_OK;
}

static int scan_body(int fd, struct mfs_outmsg *msg, struct mfs_err *err)
{
	char *buf = malloc(CHUNK);
	off_t off = msg->body_offset;

	if (!buf)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	for (;;) {
		ssize_t n = pread(fd, buf, CHUNK, off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			free(buf);
			return mfs_err_set(err, MFS_E_IO,
					   "cannot read the message: %s",
					   strerror(errno));
		}
		if (n == 0)
			break;
		for (ssize_t i = 0; i < n && !msg->body_8bit; i++)
			if ((unsigned char)buf[i] >= 0x80 || buf[i] == 0)
				msg->body_8bit = 1;
		if (msg->body_8bit)
			break;
		off += n;
	}
	free(buf);
	return MFS_OK;
}

/* The first address of a From-like value. */
static int first_address(const char *value, const char *what, char **out,
			 struct mfs_err *err)
{
	char **list = NULL;
	size_t n = 0;
	int rc = mfs_outmsg_addresses(value, &list, &n, err);

	if (rc == MFS_OK && n == 0)
		rc = mfs_err_set(err, MFS_E_INVAL, "%s has no address", what);
	if (rc == MFS_OK) {
		*out = list[0];
		list[0] = NULL;
	}
	for (size_t i = 0; i < n; i++)
		free(list[i]);
	free(list);
	return rc;
}

static int make_message_id(struct mfs_outmsg *msg, struct mfs_err *err)
{
	unsigned char rnd[16];
	char hex[33];
	const char *at = strrchr(msg->sender, '@');
	const char *domain = at && at[1] && !has_8bit(at + 1, strlen(at + 1))
				 ? at + 1
				 : "localhost";

	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		return mfs_err_set(err, MFS_E_IO, "no random bytes: %s",
				   strerror(errno));
	for (size_t i = 0; i < sizeof(rnd); i++)
		sprintf(hex + 2 * i, "%02x", rnd[i]);
	if (asprintf(&msg->message_id, "<%s.mailfs@%s>", hex, domain) < 0) {
		msg->message_id = NULL;
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	}
	return MFS_OK;
}

/* Walks the fields once: recipients, From, Message-ID, Date, multipart. */
static int read_fields(struct mfs_outmsg *msg, char **from_value,
		       struct mfs_err *err)
{
	size_t pos = 0, hend = strlen(msg->header);
	struct field f;
	int rc = MFS_OK;

	while (rc == MFS_OK && next_field(msg->header, hend, &pos, &f)) {
		char *v;

		if (!field_is(&f, "to") && !field_is(&f, "cc") &&
		    !field_is(&f, "bcc") && !field_is(&f, "from") &&
		    !field_is(&f, "message-id") && !field_is(&f, "date") &&
		    !field_is(&f, "content-type"))
			continue;
		v = field_value(&f);
		if (!v)
			return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
		if (field_is(&f, "from")) {
			if (!*from_value) {
				*from_value = v;
				v = NULL;
			}
		} else if (field_is(&f, "message-id")) {
			if (!msg->message_id && *v) {
				msg->message_id = v;
				msg->has_message_id = 1;
				v = NULL;
			}
		} else if (field_is(&f, "date")) {
			msg->has_date = 1;
			msg->date = mfs_parse_date(v);
		} else if (field_is(&f, "content-type")) {
			msg->multipart = strncasecmp(v, "multipart/", 10) == 0;
		} else {
			rc = mfs_outmsg_addresses(v, &msg->rcpts, &msg->nrcpts,
						  err);
			if (rc == MFS_E_INVAL) {
				char what[64];

				snprintf(what, sizeof(what), "%.*s",
					 (int)f.name_len, f.name);
				rc = mfs_err_set(err, MFS_E_INVAL,
						 "%s: cannot read an address "
						 "in \"%.200s\"",
						 what, v);
			}
		}
		free(v);
	}
	return rc;
}

/*
 * An address the SMTP commands can carry: RFC 5321 4.5.3.1.3 bounds a
 * path ("<" address ">") to 256 octets, which also keeps MAIL FROM and
 * RCPT TO with their parameters under the 512 of a command line. A longer
 * one is the user's to fix; sent anyway, the server would drop the
 * connection and the message would be retried until the queue lifetime.
 */
static int check_path(const char *addr, const char *what, struct mfs_err *err)
{
	size_t n = strlen(addr);

	if (n + 2 <= MFS_OUTMSG_PATH_MAX)
		return MFS_OK;
	return mfs_err_set(err, MFS_E_INVAL,
			   "%s address %.40s... is %zu bytes long; SMTP "
			   "takes at most %d",
			   what, addr, n, MFS_OUTMSG_PATH_MAX - 2);
}

int mfs_outmsg_parse(int fd, const struct mfs_outmsg_opts *opts,
		     struct mfs_outmsg *msg, struct mfs_err *err)
{
	char *from_value = NULL;
	int rc;

	memset(msg, 0, sizeof(*msg));
	rc = read_header(fd, msg, err);
	if (rc)
		return rc;
	rc = check_fields(msg->header, err);
	if (rc)
		return rc;
	rc = read_fields(msg, &from_value, err);
	if (rc)
		goto free_from;
	if (opts && opts->from)
		rc = first_address(opts->from, "the from setting", &msg->sender,
				   err);
	else if (from_value)
		rc = first_address(from_value, "From", &msg->sender, err);
	else
		rc = mfs_err_set(err, MFS_E_INVAL,
				 "the message has no From header and no "
				 "`from` is configured");
	if (rc)
		goto free_from;
	if (!from_value && opts && opts->from) {
		/* RFC 5322 wants a From header: the configured sender */
		msg->from_header = strdup(opts->from);
		if (!msg->from_header) {
			rc = mfs_err_set(err, MFS_E_NOMEM, "out of memory");
			goto free_from;
		}
	}
	if (msg->nrcpts == 0) {
		rc = mfs_err_set(err, MFS_E_INVAL,
				 "the message has no recipient in To, Cc or "
				 "Bcc");
		goto free_from;
	}
	rc = check_path(msg->sender, "the sender", err);
	for (size_t i = 0; rc == MFS_OK && i < msg->nrcpts; i++)
		rc = check_path(msg->rcpts[i], "the recipient", err);
	if (rc)
		goto free_from;
	msg->addr_8bit = has_8bit(msg->sender, strlen(msg->sender));
	for (size_t i = 0; i < msg->nrcpts; i++)
		msg->addr_8bit |=
		    has_8bit(msg->rcpts[i], strlen(msg->rcpts[i]));
	msg->hdr_8bit = has_8bit(msg->header, strlen(msg->header));
	if (!msg->message_id) {
		if (opts && opts->message_id) {
			msg->message_id = strdup(opts->message_id);
			if (!msg->message_id)
				rc = mfs_err_set(err, MFS_E_NOMEM,
						 "out of memory");
		} else {
			rc = make_message_id(msg, err);
		}
		if (rc)
			goto free_from;
	}
	if (!msg->has_date)
		msg->date = opts && opts->date ? opts->date : time(NULL);
	rc = scan_body(fd, msg, err);
free_from:
	free(from_value);
	return rc;
}

void mfs_outmsg_free(struct mfs_outmsg *msg)
{
	free(msg->sender);
	free(msg->from_header);
	for (size_t i = 0; i < msg->nrcpts; i++)
		free(msg->rcpts[i]);
	free(msg->rcpts);
	free(msg->message_id);
	free(msg->header);
	memset(msg, 0, sizeof(*msg));
}

/* ---- output ---------------------------------------------------------- */

struct writer {
	int fd;
	char buf[CHUNK];
	size_t len;
	off_t total;
	int failed; /* errno of the first failed write, or 0 */
};

static void w_flush(struct writer *w)
{
	size_t done = 0;

	while (!w->failed && done < w->len) {
		ssize_t n = write(w->fd, w->buf + done, w->len - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			w->failed = n < 0 ? errno : EIO;
		else
			done += n;
	}
	w->len = 0;
}

static void w_add(struct writer *w, const char *p, size_t n)
{
	while (n) {
		size_t k = sizeof(w->buf) - w->len;

		if (k > n)
			k = n;
		memcpy(w->buf + w->len, p, k);
		w->len += k;
		w->total += k;
		p += k;
		n -= k;
		if (w->len == sizeof(w->buf))
			w_flush(w);
	}
}

/* Writes text with LF line ends as CRLF. */
static void w_lines(struct writer *w, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '\n')
			w_add(w, "\r\n", 2);
		else
			w_add(w, s + i, 1);
	}
}

/* Appends utf8 as RFC 2047 "B" encoded words, folded: each word holds at
 * most 45 bytes of whole characters (60 base64 characters). */
static void encode_words(struct sbuf *out, const char *utf8)
{
	char word[MFS_B64_ENCODED_LEN(45) + 1];
	size_t len = strlen(utf8), i = 0;

	while (i < len) {
		size_t n = len - i < 45 ? len - i : 45;

		while (n < len - i &&
		       ((unsigned char)utf8[i + n] & 0xc0) == 0x80)
			n--; /* do not cut a character */
		if (i)
			sb_str(out, "\n ");
		mfs_b64_encode_to(word, utf8 + i, n);
		sb_str(out, "=?UTF-8?B?");
		sb_str(out, word);
		sb_str(out, "?=");
		i += n;
	}
}

static char *to_utf8(const char *s)
{
	return mfs_text_to_utf8(NULL, s, strlen(s), NULL);
}

/* A display name: an atom sequence as it is, else quoted; non-ASCII as
 * encoded words. */
static void put_phrase(struct sbuf *out, const char *display)
{
	char *u;
	int plain = 1;

	if (!has_8bit(display, strlen(display))) {
		for (const char *p = display; *p; p++)
			if (!isalnum((unsigned char)*p) &&
			    !strchr(" !#$%&'*+-/=?^_`{|}~", *p))
				plain = 0;
		if (plain) {
			sb_str(out, display);
			return;
		}
		sb_ch(out, '"');
		for (const char *p = display; *p; p++) {
			if (*p == '"' || *p == '\\')
				sb_ch(out, '\\');
			sb_ch(out, *p);
		}
		sb_ch(out, '"');
		return;
	}
	u = to_utf8(display);
	if (!u) {
		out->oom = 1;
		return;
	}
	encode_words(out, u);
	free(u);
}

/* Rebuilds an address field with ASCII only. */
static int encode_address_field(struct sbuf *out, const struct field *f,
				struct mfs_err *err)
{
	struct addr_list l = {0};
	char *v = field_value(f);
	int rc, first = 1;

	if (!v)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	rc = parse_list(v, &l, err);
	if (rc)
		goto free_list;
	sb_add(out, f->name, f->name_len);
	sb_ch(out, ':');
	for (size_t i = 0; i < l.n; i++) {
		struct addr_item *it = &l.items[i];

		if (it->kind == ITEM_GROUP_END) {
			sb_ch(out, ';');
			first = 1;
			continue;
		}
		if (!first)
			sb_ch(out, ',');
		sb_str(out, first && out->len && out->s[out->len - 1] == ':'
				? " "
				: "\n ");
		first = 0;
		if (it->kind == ITEM_GROUP) {
			put_phrase(out, it->display ? it->display : "group");
			sb_ch(out, ':');
			first = 1;
			continue;
		}
		if (has_8bit(it->addr, strlen(it->addr))) {
			rc = mfs_err_set(err, MFS_E_INVAL,
					 "the address %.200s is not ASCII and "
					 "the server does not offer SMTPUTF8",
					 it->addr);
			goto free_list;
		}
		if (it->display) {
			put_phrase(out, it->display);
			sb_str(out, " <");
			sb_str(out, it->addr);
			sb_ch(out, '>');
		} else {
			sb_str(out, it->addr);
		}
	}
	sb_ch(out, '\n');
free_list:
	addr_list_free(&l);
	free(v);
	return rc;
}

static int is_address_field(const struct field *f)
{
	return field_is(f, "from") || field_is(f, "to") || field_is(f, "cc") ||
	       field_is(f, "reply-to") || field_is(f, "sender");
}

/* A field with 8-bit bytes for a server without SMTPUTF8. */
static int encode_field(struct sbuf *out, const struct field *f,
			struct mfs_err *err)
{
	char *v, *u;

	if (is_address_field(f))
		return encode_address_field(out, f, err);
	if (field_is(f, "message-id") || field_is(f, "in-reply-to") ||
	    field_is(f, "references") || field_is(f, "date") ||
	    field_is(f, "return-path"))
		return mfs_err_set(err, MFS_E_INVAL,
				   "the %.*s header has non-ASCII bytes",
				   (int)f->name_len, f->name);
	v = field_value(f);
	u = v ? to_utf8(v) : NULL;
	free(v);
	if (!u)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	sb_add(out, f->name, f->name_len);
	sb_str(out, ": ");
	encode_words(out, u);
	sb_ch(out, '\n');
	free(u);
	return MFS_OK;
}

static void put_date(struct sbuf *out, time_t t)
{
	struct tm tm;
	char buf[64];

	localtime_r(&t, &tm);
	/* RFC 5322 wants English names whatever the locale */
	static const char *const wd[] = {"Sun", "Mon", "Tue", "Wed",
					 "Thu", "Fri", "Sat"};
	static const char *const mon[] = {"Jan", "Feb", "Mar", "Apr",
					  "May", "Jun", "Jul", "Aug",
					  "Sep", "Oct", "Nov", "Dec"};
	long off = tm.tm_gmtoff / 60;

	snprintf(buf, sizeof(buf),
		 "Date: %s, %d %s %d %02d:%02d:%02d %c%02ld%02ld\n",
		 wd[tm.tm_wday], tm.tm_mday, mon[tm.tm_mon], tm.tm_year + 1900,
		 tm.tm_hour, tm.tm_min, tm.tm_sec, off < 0 ? '-' : '+',
		 labs(off) / 60, labs(off) % 60);
	sb_str(out, buf);
}

/* Builds the header block to send (LF line ends, no empty line). */
static int build_header(const struct mfs_outmsg *msg, unsigned caps, int qp,
			struct sbuf *out, struct mfs_err *err)
{
	size_t pos = 0, hend = strlen(msg->header);
	struct field f;
	int has_ct = 0, has_mv = 0, has_cte = 0, rc;

	while (next_field(msg->header, hend, &pos, &f)) {
		if (field_is(&f, "bcc"))
			continue;
		if (field_is(&f, "content-type"))
			has_ct = 1;
		if (field_is(&f, "content-transfer-encoding"))
			has_cte = 1;
		if (field_is(&f, "mime-version"))
			has_mv = 1;
		if (qp && field_is(&f, "content-transfer-encoding"))
			continue;
		if (!(caps & MFS_OUTMSG_SMTPUTF8) && has_8bit(f.start, f.len)) {
			rc = encode_field(out, &f, err);
			if (rc)
				return rc;
			continue;
		}
		sb_add(out, f.start, f.len);
	}
	if (msg->from_header) {
		sb_str(out, "From: ");
		sb_str(out, msg->from_header);
		sb_ch(out, '\n');
	}
	if (!msg->has_date)
		put_date(out, msg->date);
	if (!msg->has_message_id) {
		sb_str(out, "Message-ID: ");
		sb_str(out, msg->message_id);
		sb_ch(out, '\n');
	}
	if (qp) {
		if (!has_mv)
			sb_str(out, "MIME-Version: 1.0\n");
		if (!has_ct)
			sb_str(out,
			       "Content-Type: text/plain; charset=utf-8\n");
		sb_str(out, "Content-Transfer-Encoding: quoted-printable\n");
	} else if (msg->body_8bit && !has_ct) {
		/* 8-bit text without a charset: say what it is (UTF-8, the
		 * only charset a shell user can be assumed to write), or
		 * readers guess and lose it. */
		if (!has_mv)
			sb_str(out, "MIME-Version: 1.0\n");
		sb_str(out, "Content-Type: text/plain; charset=utf-8\n");
		if (!has_cte)
			sb_str(out, "Content-Transfer-Encoding: 8bit\n");
	}
	if (out->oom)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	return MFS_OK;
}

/* Whether the body may be quoted-printable encoded; else an error. */
static int check_qp(const struct mfs_outmsg *msg, struct mfs_err *err)
{
	size_t pos = 0, hend = strlen(msg->header);
	struct field f;

	if (msg->multipart)
		return mfs_err_set(err, MFS_E_INVAL,
				   "the server does not accept 8-bit data (no "
				   "8BITMIME) and this multipart message has "
				   "8-bit bytes; encode its parts as "
				   "quoted-printable or base64");
	while (next_field(msg->header, hend, &pos, &f)) {
		char *v;
		int enc;

		if (!field_is(&f, "content-transfer-encoding"))
			continue;
		v = field_value(&f);
		if (!v)
			return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
		enc = strcasecmp(v, "base64") == 0 ||
		      strcasecmp(v, "quoted-printable") == 0;
		free(v);
		if (enc)
			return mfs_err_set(err, MFS_E_INVAL,
					   "the body is declared encoded but "
					   "has 8-bit bytes");
	}
	return MFS_OK;
}

/* Quoted-printable encoder state, across chunks. */
struct qp {
	int col;     /* characters on the current output line */
	int pending; /* a blank held back: literal unless the line ends */
	int cr;	     /* a CR held back: CRLF is a line end */
};

static void qp_put(struct writer *w, struct qp *q, const char *tok, int n)
{
	if (q->col + n > 75) {
		w_add(w, "=\r\n", 3);
		q->col = 0;
	}
	w_add(w, tok, n);
	q->col += n;
}

static void qp_flush_pending(struct writer *w, struct qp *q, int eol)
{
	char tok[4];

	if (!q->pending)
		return;
	if (eol)
		snprintf(tok, sizeof(tok), "=%02X", q->pending);
	else
		snprintf(tok, sizeof(tok), "%c", q->pending);
	qp_put(w, q, tok, eol ? 3 : 1);
	q->pending = 0;
}

static void qp_byte(struct writer *w, struct qp *q, unsigned char c)
{
	char tok[4];

	if (q->cr) {
		q->cr = 0;
		if (c == '\n')
			goto eol;
		qp_flush_pending(w, q, 0);
		qp_put(w, q, "=0D", 3);
	}
	if (c == '\r') {
		q->cr = 1;
		return;
	}
	if (c == '\n')
		goto eol;
	qp_flush_pending(w, q, 0);
	if (c == ' ' || c == '\t') {
		q->pending = c;
		return;
	}
	if (c >= 33 && c <= 126 && c != '=') {
		tok[0] = c;
		qp_put(w, q, tok, 1);
		return;
	}
	snprintf(tok, sizeof(tok), "=%02X", c);
	qp_put(w, q, tok, 3);
	return;
eol:
	qp_flush_pending(w, q, 1);
	w_add(w, "\r\n", 2);
	q->col = 0;
}

static void qp_end(struct writer *w, struct qp *q)
{
	if (q->cr) {
		q->cr = 0;
		qp_flush_pending(w, q, 0);
		qp_put(w, q, "=0D", 3);
	}
	qp_flush_pending(w, q, 1);
}

static int write_body(const struct mfs_outmsg *msg, int in_fd, int qp,
		      struct writer *w, struct mfs_err *err)
{
	char *buf = malloc(CHUNK);
	off_t off = msg->body_offset;
	struct qp q = {0};
	char prev = '\n';

	if (!buf)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	for (;;) {
		ssize_t n = pread(in_fd, buf, CHUNK, off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			free(buf);
			return mfs_err_set(err, MFS_E_IO,
					   "cannot read the message: %s",
					   strerror(errno));
		}
		if (n == 0)
			break;
		for (ssize_t i = 0; i < n; i++) {
			if (qp) {
				qp_byte(w, &q, buf[i]);
				continue;
			}
			if (buf[i] == '\n' && prev != '\r')
				w_add(w, "\r", 1);
			w_add(w, buf + i, 1);
			prev = buf[i];
		}
		off += n;
	}
	if (qp)
		qp_end(w, &q);
	free(buf);
	return MFS_OK;
}

int mfs_outmsg_write(const struct mfs_outmsg *msg, int in_fd, unsigned caps,
		     int out_fd, off_t *size, struct mfs_err *err)
{
	struct sbuf hdr = {0};
	struct writer *w;
	int qp = msg->body_8bit && !(caps & MFS_OUTMSG_8BITMIME);
	int rc;

	if (msg->addr_8bit && !(caps & MFS_OUTMSG_SMTPUTF8))
		return mfs_err_set(err, MFS_E_INVAL,
				   "an address of the envelope is not ASCII "
				   "and the server does not offer SMTPUTF8");
	if (qp) {
		rc = check_qp(msg, err);
		if (rc)
			return rc;
	}
	rc = build_header(msg, caps, qp, &hdr, err);
	if (rc)
		goto free_hdr;
	w = malloc(sizeof(*w));
	if (!w) {
		rc = mfs_err_set(err, MFS_E_NOMEM, "out of memory");
		goto free_hdr;
	}
	w->fd = out_fd;
	w->len = 0;
	w->total = 0;
	w->failed = 0;
	w_lines(w, sb_get(&hdr), hdr.len);
	w_add(w, "\r\n", 2);
	rc = write_body(msg, in_fd, qp, w, err);
	w_flush(w);
	if (rc == MFS_OK && w->failed)
		rc = mfs_err_set(err, MFS_E_IO,
				 "cannot write the prepared message: %s",
				 strerror(w->failed));
	if (rc == MFS_OK && size)
		*size = w->total;
	free(w);
free_hdr:
	sb_free(&hdr);
	return rc;
}
