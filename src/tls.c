/*
 * tls.c - see tls.h
 *
 * One mailstream_low driver serves plain and TLS streams alike, so that a
 * timeout or a cancellation behaves the same on both. Every read and write
 * first tries the operation without blocking and, when it would block, waits
 * in poll() on the socket and on the stream's cancel pipe, at most the
 * stream's timeout. The socket itself stays blocking on plain streams (send
 * and recv use MSG_DONTWAIT) and is made non-blocking under TLS, where
 * OpenSSL must be free to return SSL_ERROR_WANT_READ/WANT_WRITE at any time.
 */
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <zlib.h>

/*
 * libetpan exports these but does not install mailstream_cancel.h; the
 * prototypes are those of libetpan 1.9 (src/data-types/mailstream_cancel.h).
 */
struct mailstream_cancel *mailstream_cancel_new(void);
void mailstream_cancel_free(struct mailstream_cancel *cancel);
int mailstream_cancel_cancelled(struct mailstream_cancel *cancel);
void mailstream_cancel_notify(struct mailstream_cancel *cancel);
int mailstream_cancel_get_fd(struct mailstream_cancel *cancel);

/*
 * Layout of struct mailstream_cancel in libetpan 1.9
 * (mailstream_cancel_types.h, also not installed). Used only to mark the
 * pipe close-on-exec, and only after checking that ms_fds[0] is the fd that
 * mailstream_cancel_get_fd() reports.
 */
struct etpan_cancel_layout {
	int ms_cancelled;
	int ms_fds[2];
	void *ms_internal;
};

/* What the IMAP reader (mfs_stream_imap_literals) knows of the response
 * being read. */
enum resp_kind {
	RESP_HEAD,   /* its first words are still coming */
	RESP_FETCH,  /* "* N FETCH ": body literals may be streamed */
	RESP_STATUS, /* OK, NO, BAD, BYE, PREAUTH or "+": text to the end */
	RESP_OTHER,
};

struct imap_scan {
	int on;		   /* the stream is IMAP: responses are read */
	int body_ok;	   /* body literals may exceed MFS_LITERAL_MAX */
	uint64_t lit_left; /* bytes of the literal being read */
	int lit_body;	   /* that literal is a streamed body, not held */
	uint64_t held;	   /* bytes of this response libetpan keeps */
	enum resp_kind kind;
	char head[32]; /* the response's first bytes, until kind is known */
	size_t head_len;
	int status_start; /* RESP_STATUS: the next byte may open a code */
	int code;	  /* RESP_STATUS: inside "[...]", else plain text */
	int quote;	  /* inside a quoted string */
	int escape;	  /* after a backslash in a quoted string */
	int depth;	  /* parentheses open, outside quoted strings */
	int brace;	  /* 1: after '{'; 2: after '}'; 3: after "}\r" */
	int brace_neg;	  /* "{-N}", which libetpan reads as 0 */
	int brace_digits;
	uint64_t number;   /* the literal's announced size */
	size_t brace_tail; /* tail_len where the '{' came */
	char tail[256];	   /* the text since the response or the last
			    * literal began (its last bytes) */
	size_t tail_len;
	char refusal[96]; /* why the stream was refused, or "" */
};

struct zconn;

/* The driver's data: one per mailstream_low. */
struct mfs_conn {
	int fd;				  /* owned until close; -1 after */
	SSL *ssl;			  /* owned; NULL on a plain stream */
	struct mailstream_cancel *cancel; /* owned */
	int timeout;			  /* seconds, when low->timeout is 0 */
	int timed_out;			  /* a wait ran out: stream is dead */
	int eof;			  /* the peer closed: reads fail */
	int broken;			  /* the compressed stream failed:
					   * every later call fails */
	int byte_reads;			  /* reads return one byte at most */
	struct zconn *z;		  /* owned: compression, or NULL */
	size_t since_nl;		  /* bytes read since the last LF */
	struct imap_scan imap;		  /* IMAP streams only */
};

/* A server that sends more than this without a line end is refused: the
 * protocol parsers above keep a line in memory while they read it. */
#define MFS_LINE_MAX (16u * 1024 * 1024)

static ssize_t conn_read(mailstream_low *low, void *buf, size_t count);
static ssize_t conn_write(mailstream_low *low, const void *buf, size_t count);
static int conn_close(mailstream_low *low);
static int conn_get_fd(mailstream_low *low);
static void conn_free(mailstream_low *low);
static void conn_cancel(mailstream_low *low);
static struct mailstream_cancel *conn_get_cancel(mailstream_low *low);

static mailstream_low_driver mfs_driver = {
    .mailstream_read = conn_read,
    .mailstream_write = conn_write,
    .mailstream_close = conn_close,
    .mailstream_get_fd = conn_get_fd,
    .mailstream_free = conn_free,
    .mailstream_cancel = conn_cancel,
    .mailstream_get_cancel = conn_get_cancel,
    .mailstream_get_certificate_chain = NULL,
    .mailstream_setup_idle = NULL,
    .mailstream_unsetup_idle = NULL,
    .mailstream_interrupt_idle = NULL,
};

/* ---- time and waiting ---- */

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int set_cloexec(int fd)
{
	int flags = fcntl(fd, F_GETFD);

	if (flags < 0)
		return -1;
	return fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
}

static int set_nonblock(int fd, int on)
{
	int flags = fcntl(fd, F_GETFL);

	if (flags < 0)
		return -1;
	flags = on ? flags | O_NONBLOCK : flags & ~O_NONBLOCK;
	return fcntl(fd, F_SETFL, flags);
}

/*
 * Waits until fd is ready for events, the stream is cancelled, or the
 * monotonic clock reaches deadline (ms). Returns 0 when fd is ready (an error
 * or hang-up counts as ready: the next I/O call reports it), -1 otherwise;
 * on timeout conn->timed_out is set.
 */
static int conn_wait(struct mfs_conn *conn, short events, int64_t deadline)
{
	struct pollfd pfd[2];
	int64_t left;
	int n;

	for (;;) {
		if (mailstream_cancel_cancelled(conn->cancel))
			return -1;
		left = deadline - now_ms();
		if (left <= 0) {
			conn->timed_out = 1;
			return -1;
		}
		pfd[0].fd = conn->fd;
		pfd[0].events = events;
		pfd[0].revents = 0;
		pfd[1].fd = mailstream_cancel_get_fd(conn->cancel);
		pfd[1].events = POLLIN;
		pfd[1].revents = 0;
		n = poll(pfd, 2, left > INT32_MAX ? INT32_MAX : (int)left);
		if (n < 0 && errno != EINTR)
			return -1;
		if (n > 0 && pfd[1].revents != 0)
			return -1;
		if (n > 0 && pfd[0].revents != 0)
			return 0;
	}
}

/* The deadline of one wait on low, from its timeout (seconds). */
static int64_t low_deadline(mailstream_low *low)
{
	struct mfs_conn *conn = low->data;
	int64_t t = low->timeout != 0 ? (int64_t)low->timeout : conn->timeout;

	return now_ms() + t * 1000;
}

/* A stream that timed out, was cancelled or whose compressed stream
 * failed fails every later call. */
static int conn_dead(struct mfs_conn *conn)
{
	return conn->fd < 0 || conn->timed_out || conn->broken ||
	       mailstream_cancel_cancelled(conn->cancel);
}

/* ---- the driver ---- */

static ssize_t plain_read(struct mfs_conn *conn, void *buf,
			  size_t count, int64_t deadline)
{
	ssize_t r;

	for (;;) {
		r = recv(conn->fd, buf, count, MSG_DONTWAIT);
		if (r >= 0)
			return r;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return -1;
		if (conn_wait(conn, POLLIN, deadline) < 0)
			return -1;
	}
}

static ssize_t plain_write(struct mfs_conn *conn, const void *buf,
			  size_t count, int64_t deadline)
{
	ssize_t r;

	for (;;) {
		r = send(conn->fd, buf, count, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (r >= 0)
			return r;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return -1;
		if (conn_wait(conn, POLLOUT, deadline) < 0)
			return -1;
	}
}

/*
 * After an SSL call returned r <= 0: waits as OpenSSL asks and returns 0 to
 * retry, or returns -1 when the call failed for good.
 */
static int ssl_retry(struct mfs_conn *conn, int r, int64_t deadline)
{
	switch (SSL_get_error(conn->ssl, r)) {
	case SSL_ERROR_WANT_READ:
		return conn_wait(conn, POLLIN, deadline);
	case SSL_ERROR_WANT_WRITE:
		return conn_wait(conn, POLLOUT, deadline);
	case SSL_ERROR_SYSCALL:
		if (errno == EINTR)
			return 0;
		return -1;
	default:
		return -1;
	}
}

static ssize_t ssl_read(struct mfs_conn *conn, void *buf,
			  size_t count, int64_t deadline)
{
	size_t n = 0;
	int r;

	for (;;) {
		ERR_clear_error();
		errno = 0;
		r = SSL_read_ex(conn->ssl, buf, count, &n);
		if (r == 1)
			return (ssize_t)n;
		if (SSL_get_error(conn->ssl, r) == SSL_ERROR_ZERO_RETURN)
			return 0;
		if (ssl_retry(conn, r, deadline) < 0)
			return -1;
	}
}

static ssize_t ssl_write(struct mfs_conn *conn, const void *buf,
			  size_t count, int64_t deadline)
{
	size_t n = 0;
	int r;

	for (;;) {
		ERR_clear_error();
		errno = 0;
		r = SSL_write_ex(conn->ssl, buf, count, &n);
		if (r == 1)
			return (ssize_t)n;
		if (ssl_retry(conn, r, deadline) < 0)
			return -1;
	}
}

/* ---- IMAP literals ---- */

/*
 * The reader follows libetpan's grammar only as far as it must to know
 * where a literal starts and whether libetpan streams it: quoted strings,
 * parentheses, "{N}" followed by CRLF. Where libetpan's reading could
 * differ from this one (a brace in a status response's code, "{N}" not
 * followed by a line end) the stream is refused rather than guessed at.
 */

static int scan_refuse(struct imap_scan *m, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int scan_refuse(struct imap_scan *m, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(m->refusal, sizeof(m->refusal), fmt, ap);
	va_end(ap);
	return -1;
}

/* Forgets the response that ended (at its last line end). */
static void scan_response_end(struct imap_scan *m)
{
	m->held = 0;
	m->kind = RESP_HEAD;
	m->head_len = 0;
	m->status_start = 0;
	m->code = 0;
	m->quote = 0;
	m->escape = 0;
	m->depth = 0;
	m->brace = 0;
	m->tail_len = 0;
}

static int word_is(const char *w, size_t n, const char *word)
{
	return n == strlen(word) && strncasecmp(w, word, n) == 0;
}

/* Decides the kind of the response from its head, after a space. */
static void scan_classify(struct imap_scan *m)
{
	const char *w[3];
	size_t len[3], i = 0, k = 0, start = 0;

	for (i = 0; i < m->head_len && k < 3; i++) {
		if (m->head[i] != ' ')
			continue;
		w[k] = m->head + start;
		len[k++] = i - start;
		start = i + 1;
	}
	if (k == 2 && word_is(w[0], len[0], "*")) {
		if (word_is(w[1], len[1], "OK") || word_is(w[1], len[1], "NO") ||
		    word_is(w[1], len[1], "BAD") ||
		    word_is(w[1], len[1], "BYE") ||
		    word_is(w[1], len[1], "PREAUTH"))
			m->kind = RESP_STATUS;
		else if (len[1] == 0 || strspn(w[1], "0123456789") < len[1])
			m->kind = RESP_OTHER;
	} else if (k == 2) {
		if (word_is(w[1], len[1], "OK") || word_is(w[1], len[1], "NO") ||
		    word_is(w[1], len[1], "BAD"))
			m->kind = RESP_STATUS;
		else
			m->kind = RESP_OTHER;
	} else if (k == 3) {
		m->kind = word_is(w[2], len[2], "FETCH") ? RESP_FETCH
							  : RESP_OTHER;
	}
	if (m->kind == RESP_STATUS)
		m->status_start = 1;
}

/* Whether the text before the literal's '{' is the key of a body item
 * libetpan streams: "BODY[...]", "BODY[...]<n>", "RFC822" or
 * "RFC822.TEXT", after "(" or a space, then one space. */
static int scan_body_key(const char *t, size_t p)
{
	size_t q;

	if (p == 0 || t[--p] != ' ')
		return 0;
	if (p > 0 && t[p - 1] == '>') {
		p--;
		while (p > 0 && t[p - 1] >= '0' && t[p - 1] <= '9')
			p--;
		if (p == 0 || t[p - 1] != '<')
			return 0;
		p--;
	}
	if (p > 0 && t[p - 1] == ']') {
		for (q = p - 1; q > 0 && t[q - 1] != '['; q--)
			;
		if (q == 0 || q - 1 < 4 || strncasecmp(t + q - 5, "BODY", 4))
			return 0;
		p = q - 5;
	} else if (p >= 11 && strncasecmp(t + p - 11, "RFC822.TEXT", 11) == 0) {
		p -= 11;
	} else if (p >= 6 && strncasecmp(t + p - 6, "RFC822", 6) == 0) {
		p -= 6;
	} else {
		return 0;
	}
	return p > 0 && (t[p - 1] == '(' || t[p - 1] == ' ');
}

/* After "{N}\r\n": the literal starts. */
static int scan_literal(struct imap_scan *m)
{
	uint64_t n = m->brace_neg ? 0 : m->number;
	int body = m->body_ok && m->kind == RESP_FETCH && m->depth == 1 &&
		   scan_body_key(m->tail, m->brace_tail);

	if (n > MFS_LITERAL_MAX && !body)
		return scan_refuse(m, "announced a literal of %llu bytes",
				   (unsigned long long)n);
	m->brace = 0;
	m->lit_left = n;
	m->lit_body = body;
	m->tail_len = 0;
	return 0;
}

/* Keeps s[0, n) as the last bytes of the text seen (m->tail): when the
 * tail is full, its older half goes. */
static void scan_tail_n(struct imap_scan *m, const char *s, size_t n)
{
	size_t k;

	while (n > 0) {
		if (m->tail_len == sizeof(m->tail)) {
			memmove(m->tail, m->tail + sizeof(m->tail) / 2,
				sizeof(m->tail) / 2);
			m->tail_len = sizeof(m->tail) / 2;
		}
		k = sizeof(m->tail) - m->tail_len;
		if (k > n)
			k = n;
		memcpy(m->tail + m->tail_len, s, k);
		m->tail_len += k;
		s += k;
		n -= k;
	}
}

static void scan_tail(struct imap_scan *m, char c)
{
	scan_tail_n(m, &c, 1);
}

/* A byte that is part of a quoted string, or opens one: 1 (and the string
 * followed), else 0. */
static int scan_quoted(struct imap_scan *m, char c)
{
	if (m->quote) {
		if (m->escape)
			m->escape = 0;
		else if (c == '\\')
			m->escape = 1;
		else if (c == '"')
			m->quote = 0;
		return 1;
	}
	if (c != '"')
		return 0;
	m->quote = 1;
	return 1;
}

/* A byte of text (not of a literal) in a FETCH or other response. */
static int scan_text(struct imap_scan *m, char c)
{
	if (m->brace == 1) {
		if (c == '-' && !m->brace_neg && m->brace_digits == 0) {
			m->brace_neg = 1;
		} else if (c >= '0' && c <= '9') {
			m->brace_digits++;
			if (m->number <= UINT32_MAX)
				m->number = m->number * 10 + (uint64_t)(c - '0');
		} else if (c == '}' && m->brace_digits > 0) {
			m->brace = 2;
		} else {
			m->brace = 0; /* not a literal: libetpan fails there */
		}
	} else if (scan_quoted(m, c)) {
		/* inside a string: nothing counts */
	} else if (c == '(') {
		m->depth++;
	} else if (c == ')') {
		m->depth--;
	} else if (c == '{') {
		m->brace = 1;
		m->brace_neg = 0;
		m->brace_digits = 0;
		m->number = 0;
		m->brace_tail = m->tail_len;
	}
	scan_tail(m, c);
	return 0;
}

/* A byte of a status response: a response code may hold strings (libetpan
 * reads BADCHARSET's as such); the text after it is only text. */
static int scan_status(struct imap_scan *m, char c)
{
	if (m->status_start) {
		m->status_start = 0;
		m->code = c == '[';
		return 0;
	}
	if (!m->code || scan_quoted(m, c))
		return 0;
	if (c == ']') {
		m->code = 0;
	} else if (c == '{') {
		return scan_refuse(m, "sent a literal in a response code");
	}
	return 0;
}

static int scan_byte(struct imap_scan *m, char c)
{
	if (++m->held > MFS_LINE_MAX)
		return scan_refuse(m, "sent a response of more than %u bytes",
				   MFS_LINE_MAX);
	if (m->brace == 2 && c == '\r') {
		m->brace = 3;
		return 0;
	}
	if (m->brace >= 2) {
		if (c == '\n')
			return scan_literal(m);
		return scan_refuse(m, "announced a literal of %llu bytes "
				      "without a line end after it",
				   (unsigned long long)m->number);
	}
	if (c == '\n') {
		scan_response_end(m);
		return 0;
	}
	if (m->kind == RESP_HEAD) {
		if (m->head_len == 0 && c == '+') {
			m->kind = RESP_STATUS;
			m->status_start = 1; /* "+ " then maybe a code */
			m->head[m->head_len++] = c;
			return 0;
		}
		if (c == '"' || c == '(' || c == '{' || c == '\r' ||
		    m->head_len == sizeof(m->head)) {
			m->kind = RESP_OTHER;
		} else {
			m->head[m->head_len++] = c;
			if (c == ' ')
				scan_classify(m);
			scan_tail(m, c);
			return 0;
		}
	}
	if (m->kind == RESP_STATUS) {
		/* "+ [" or "* OK [": the space before the code is no start */
		if (m->status_start && c == ' ' && m->head_len == 1) {
			m->head_len++;
			return 0;
		}
		return scan_status(m, c);
	}
	return scan_text(m, c);
}

/* How many bytes at the start of s[0, n) scan_text would only count and
 * keep: text that opens or closes nothing and ends no line. Most of a
 * listing is such text; it is taken a run at a time. */
static size_t scan_plain(const struct imap_scan *m, const char *s, size_t n)
{
	size_t i = 0;

	if (m->lit_left > 0 || (m->kind != RESP_FETCH && m->kind != RESP_OTHER) ||
	    m->brace != 0 || m->escape)
		return 0;
	if (m->quote) {
		while (i < n && s[i] != '"' && s[i] != '\\' && s[i] != '\n')
			i++;
	} else {
		while (i < n && s[i] != '(' && s[i] != ')' && s[i] != '{' &&
		       s[i] != '"' && s[i] != '\n')
			i++;
	}
	return i;
}

/* Reads n bytes the server sent. Returns 0, or -1 when they are refused
 * (m->refusal says why). */
static int scan_read(struct imap_scan *m, const char *buf, size_t n)
{
	size_t i = 0, k;

	while (i < n) {
		if (m->lit_left > 0) {
			k = n - i < m->lit_left ? n - i : (size_t)m->lit_left;
			m->lit_left -= k;
			i += k;
			if (m->lit_body)
				continue;
		} else if ((k = scan_plain(m, buf + i, n - i)) > 0) {
			scan_tail_n(m, buf + i, k);
			i += k;
		} else {
			if (scan_byte(m, buf[i++]) < 0)
				return -1;
			continue;
		}
		m->held += k; /* what libetpan keeps of this response */
		if (m->held > MFS_LINE_MAX)
			return scan_refuse(m,
					   "sent a response of more than %u "
					   "bytes",
					   MFS_LINE_MAX);
	}
	return 0;
}

/* ---- compression (RFC 4978) ---- */

/* Raw deflate both ways (no zlib header), with the 32 KiB window the RFC
 * names; the server may use any window up to that. */
#define Z_WINDOW_BITS (-15)
/* The most plaintext one write compresses: libetpan hands over literals
 * it writes directly (an APPEND) whole, and asks again for the rest. */
#define Z_WRITE_MAX (64u * 1024)

/*
 * The compression layer of one connection, between the protocol bytes and
 * the TLS or plain transport. Its buffers are fixed: what the server sends
 * is inflated into the caller's buffer, at most as much as it asked for, so
 * a small compressed input that inflates to gigabytes costs no memory here
 * (the IMAP reader above bounds what libetpan keeps).
 */
struct zconn {
	z_stream in;	      /* inflates the server's bytes */
	z_stream out;	      /* deflates ours */
	int in_ready;	      /* inflateInit2 done: inflateEnd owed */
	int out_ready;	      /* deflateInit2 done: deflateEnd owed */
	int more;	      /* the last inflate filled its output: it may
			       * hold more without new input */
	size_t ipos, ilen;    /* ibuf[ipos, ilen): read, not yet inflated */
	unsigned char ibuf[16384];
	unsigned char obuf[16384]; /* deflated, being sent */
};

static void zconn_free(struct zconn *z)
{
	if (z == NULL)
		return;
	if (z->in_ready)
		inflateEnd(&z->in);
	if (z->out_ready)
		deflateEnd(&z->out);
	free(z);
}

/* The transport's read or write, under TLS or plain, until deadline. */
static ssize_t raw_read(struct mfs_conn *conn, void *buf, size_t count,
			int64_t deadline)
{
	if (conn->ssl != NULL)
		return ssl_read(conn, buf, count, deadline);
	return plain_read(conn, buf, count, deadline);
}

static ssize_t raw_write(struct mfs_conn *conn, const void *buf,
			 size_t count, int64_t deadline)
{
	if (conn->ssl != NULL)
		return ssl_write(conn, buf, count, deadline);
	return plain_write(conn, buf, count, deadline);
}

/* Refuses the server's compressed stream: the connection is dead. */
static ssize_t z_refuse(struct mfs_conn *conn, const char *why,
			const char *detail)
{
	snprintf(conn->imap.refusal, sizeof(conn->imap.refusal),
		 "sent a corrupt compressed stream (%s%s%s)", why,
		 detail != NULL ? ": " : "", detail != NULL ? detail : "");
	conn->broken = 1;
	return -2;
}

/*
 * Inflates what the server sent into buf, at most count bytes, reading
 * from the transport as needed, all before deadline: a server that keeps
 * sending compressed bytes that inflate to nothing (empty blocks) cannot
 * hold the caller longer than one wait. Returns the bytes made (> 0), 0 at
 * the transport's end, -1 when a read failed or the wait ran out, -2 when
 * the stream is corrupt (conn->imap.refusal says how).
 */
static ssize_t z_read(struct mfs_conn *conn, void *buf, size_t count,
		      int64_t deadline)
{
	struct zconn *z = conn->z;
	size_t made, left;
	ssize_t n;
	uInt room;
	int r;

	if (count > UINT32_MAX)
		count = UINT32_MAX;
	for (;;) {
		if (z->ipos < z->ilen || z->more) {
			room = (uInt)count;
			z->in.next_in = z->ibuf + z->ipos;
			z->in.avail_in = (uInt)(z->ilen - z->ipos);
			z->in.next_out = buf;
			z->in.avail_out = room;
			r = inflate(&z->in, Z_SYNC_FLUSH);
			z->ipos = z->ilen - z->in.avail_in;
			made = room - z->in.avail_out;
			z->more = z->in.avail_out == 0;
			if (r == Z_STREAM_END)
				return z_refuse(conn, "it ended", NULL);
			if (r == Z_NEED_DICT)
				return z_refuse(conn, "a dictionary asked for",
						NULL);
			if (r != Z_OK && r != Z_BUF_ERROR)
				return z_refuse(conn, "inflate failed",
						z->in.msg);
			if (made > 0)
				return (ssize_t)made;
		}
		/* Everything read so far inflated to nothing: read more,
		 * after what is left of the input. */
		if (now_ms() >= deadline) {
			conn->timed_out = 1;
			return -1;
		}
		left = z->ilen - z->ipos;
		if (left == sizeof(z->ibuf))
			return z_refuse(conn, "no progress", NULL);
		memmove(z->ibuf, z->ibuf + z->ipos, left);
		z->ipos = 0;
		z->ilen = left;
		n = raw_read(conn, z->ibuf + left, sizeof(z->ibuf) - left,
			     deadline);
		if (n <= 0)
			return n;
		z->ilen += (size_t)n;
	}
}

/* Sends all of buf[0, len) before deadline. Returns 0 or -1. */
static int raw_write_all(struct mfs_conn *conn, const unsigned char *buf,
			 size_t len, int64_t deadline)
{
	ssize_t w;

	while (len > 0) {
		w = raw_write(conn, buf, len, deadline);
		if (w <= 0)
			return -1;
		buf += w;
		len -= (size_t)w;
	}
	return 0;
}

/*
 * Deflates buf (at most Z_WRITE_MAX of it) and sends it with a sync flush,
 * so that the server can inflate the whole command at once (RFC 4978
 * asks for a flush at the end of each command; libetpan writes at most a
 * command's end at once). Returns the bytes of buf consumed, or -1: then
 * the compressed stream has lost bytes and the connection is dead.
 */
static ssize_t z_write(struct mfs_conn *conn, const void *buf, size_t count,
		       int64_t deadline)
{
	struct zconn *z = conn->z;
	size_t have;
	int r;

	if (count > Z_WRITE_MAX)
		count = Z_WRITE_MAX;
	z->out.next_in = (Bytef *)buf;
	z->out.avail_in = (uInt)count;
	do {
		z->out.next_out = z->obuf;
		z->out.avail_out = sizeof(z->obuf);
		r = deflate(&z->out, Z_SYNC_FLUSH);
		if (r != Z_OK && r != Z_BUF_ERROR) {
			conn->broken = 1;
			errno = EPROTO;
			return -1;
		}
		have = sizeof(z->obuf) - z->out.avail_out;
		if (raw_write_all(conn, z->obuf, have, deadline) < 0) {
			conn->broken = 1;
			return -1;
		}
	} while (z->out.avail_out == 0);
	return (ssize_t)count;
}

/*
 * End of stream is reported as an error, not as 0: libetpan's IMAP parser
 * loops for ever on a read of 0 bytes in the middle of a literal (1.9.4,
 * mailimap_literal_parse_progress), which a server that closes the
 * connection mid-message would turn into a busy hang.
 */
static ssize_t conn_read(mailstream_low *low, void *buf, size_t count)
{
	struct mfs_conn *conn = low->data;
	int64_t deadline = low_deadline(low);
	ssize_t n;

	if (conn_dead(conn) || conn->eof)
		return -1;
	/* Nothing after the reply's line end may be read ahead: it may be
	 * the first compressed bytes (mfs_stream_byte_reads). */
	if (conn->byte_reads && count > 1)
		count = 1;
	if (conn->z != NULL)
		n = z_read(conn, buf, count, deadline);
	else
		n = raw_read(conn, buf, count, deadline);
	if (n == -2) {
		errno = EPROTO;
		return -1;
	}
	if (n == 0 && count > 0) {
		conn->eof = 1;
		errno = ECONNRESET;
		return -1;
	}
	if (n > 0 && conn->imap.on) {
		if (scan_read(&conn->imap, buf, (size_t)n) < 0) {
			conn->eof = 1;
			errno = EPROTO;
			return -1;
		}
	} else if (n > 0) {
		const char *nl = memrchr(buf, '\n', (size_t)n);

		if (nl != NULL)
			conn->since_nl = (size_t)n - (size_t)(nl - (char *)buf) - 1;
		else
			conn->since_nl += (size_t)n;
		if (conn->since_nl > MFS_LINE_MAX) {
			conn->eof = 1;
			errno = EPROTO;
			return -1;
		}
	}
	return n;
}

static ssize_t conn_write(mailstream_low *low, const void *buf, size_t count)
{
	struct mfs_conn *conn = low->data;
	int64_t deadline = low_deadline(low);

	if (conn_dead(conn))
		return -1;
	if (conn->z != NULL)
		return z_write(conn, buf, count, deadline);
	return raw_write(conn, buf, count, deadline);
}

static int conn_close(mailstream_low *low)
{
	struct mfs_conn *conn = low->data;

	if (conn->fd < 0)
		return 0;
	/* The socket is non-blocking under TLS: one try, no wait. */
	if (conn->ssl != NULL && !conn->timed_out) {
		ERR_clear_error();
		SSL_shutdown(conn->ssl);
		ERR_clear_error();
	}
	close(conn->fd);
	conn->fd = -1;
	return 0;
}

static int conn_get_fd(mailstream_low *low)
{
	struct mfs_conn *conn = low->data;

	return conn->fd;
}

static void conn_cancel(mailstream_low *low)
{
	struct mfs_conn *conn = low->data;

	mailstream_cancel_notify(conn->cancel);
}

static struct mailstream_cancel *conn_get_cancel(mailstream_low *low)
{
	struct mfs_conn *conn = low->data;

	return conn->cancel;
}

/* Frees conn without closing its fd (only close does that). */
static void conn_destroy(struct mfs_conn *conn)
{
	if (conn == NULL)
		return;
	SSL_free(conn->ssl);
	zconn_free(conn->z);
	mailstream_cancel_free(conn->cancel);
	free(conn);
}

/* libetpan's mailstream_low_free calls this; the low itself is ours too. */
static void conn_free(mailstream_low *low)
{
	conn_destroy(low->data);
	low->data = NULL;
	free(low);
}

/* A new conn over fd (borrowed until the conn is wrapped in a stream). */
static struct mfs_conn *conn_new(int fd, int timeout, struct mfs_err *err)
{
	struct etpan_cancel_layout *layout;
	struct mfs_conn *conn;

	conn = calloc(1, sizeof(*conn));
	if (conn == NULL)
		goto fail;
	conn->cancel = mailstream_cancel_new();
	if (conn->cancel == NULL)
		goto free_conn;
	layout = (struct etpan_cancel_layout *)conn->cancel;
	if (layout->ms_fds[0] == mailstream_cancel_get_fd(conn->cancel)) {
		set_cloexec(layout->ms_fds[0]);
		set_cloexec(layout->ms_fds[1]);
	}
	conn->fd = fd;
	conn->timeout = timeout;
	return conn;

free_conn:
	free(conn);
fail:
	mfs_err_set(err, MFS_E_NOMEM, "out of memory for a connection");
	return NULL;
}

/* Wraps conn in a mailstream_low; on failure conn is left to the caller. */
static mailstream_low *conn_low(struct mfs_conn *conn, struct mfs_err *err)
{
	mailstream_low *low = mailstream_low_new(conn, &mfs_driver);

	if (low == NULL) {
		mfs_err_set(err, MFS_E_NOMEM, "out of memory for a connection");
		return NULL;
	}
	mailstream_low_set_timeout(low, conn->timeout);
	return low;
}

/* Wraps conn in a mailstream; on failure conn is left to the caller. */
static mailstream *conn_stream(struct mfs_conn *conn, struct mfs_err *err)
{
	mailstream_low *low;
	mailstream *s;

	low = conn_low(conn, err);
	if (low == NULL)
		return NULL;
	s = mailstream_new(low, 8192);
	if (s == NULL) {
		free(low);
		mfs_err_set(err, MFS_E_NOMEM, "out of memory for a connection");
		return NULL;
	}
	return s;
}

/* The conn behind s, or NULL when s does not use this module's driver. */
static struct mfs_conn *stream_conn(mailstream *s)
{
	mailstream_low *low;

	if (s == NULL)
		return NULL;
	low = mailstream_get_low(s);
	if (low == NULL || low->driver != &mfs_driver)
		return NULL;
	return low->data;
}

/* ---- TCP ---- */

/* Connects fd to ai within timeout seconds. Returns 0 or an errno value;
 * ETIMEDOUT when the wait ran out. */
static int connect_one(int fd, const struct addrinfo *ai, int timeout)
{
	int64_t deadline = now_ms() + (int64_t)timeout * 1000;
	struct pollfd pfd;
	socklen_t len;
	int64_t left;
	int soerr;
	int n;

	if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
		return 0;
	if (errno != EINPROGRESS && errno != EINTR)
		return errno;
	for (;;) {
		left = deadline - now_ms();
		if (left <= 0)
			return ETIMEDOUT;
		pfd.fd = fd;
		pfd.events = POLLOUT;
		pfd.revents = 0;
		n = poll(&pfd, 1, left > INT32_MAX ? INT32_MAX : (int)left);
		if (n < 0 && errno != EINTR)
			return errno;
		if (n > 0)
			break;
	}
	len = sizeof(soerr);
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
		return errno;
	return soerr;
}

/* A connected, blocking, close-on-exec socket to ai, or -1 with *e set. */
static int tcp_try(const struct addrinfo *ai, int timeout, int *e)
{
	int one = 1;
	int fd;

	fd = socket(ai->ai_family,
		    ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
		    ai->ai_protocol);
	if (fd < 0) {
		*e = errno;
		return -1;
	}
	*e = connect_one(fd, ai, timeout);
	if (*e == 0 && set_nonblock(fd, 0) < 0)
		*e = errno;
	if (*e != 0) {
		close(fd);
		return -1;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

/*
 * TCP keepalive: a connection whose peer went away without a word (a
 * suspend and resume, a change of network, a NAT that forgot it) is found
 * dead within KEEP_IDLE + KEEP_COUNT * KEEP_INTVL seconds, also while it
 * waits in IDLE, where nothing else is sent for minutes. Best effort: a
 * failure leaves the connection as it is.
 */
#define KEEP_IDLE 60
#define KEEP_INTVL 10
#define KEEP_COUNT 3

static void keepalive(int fd)
{
	int on = 1, idle = KEEP_IDLE, intvl = KEEP_INTVL, count = KEEP_COUNT;

	if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on)) != 0)
		return;
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl,
			 sizeof(intvl));
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof(count));
}

int mfs_tcp_connect(const char *host, int port, int timeout,
		    struct mfs_err *err)
{
	struct addrinfo hints, *res, *ai;
	char service[16];
	int e = ECONNREFUSED;
	int fd = -1;
	int r;

	if (host == NULL || host[0] == '\0' || port <= 0 || port > 65535 ||
	    timeout <= 0) {
		mfs_err_set(err, MFS_E_CONNECT, "cannot connect: bad address");
		return -1;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	snprintf(service, sizeof(service), "%d", port);
	r = getaddrinfo(host, service, &hints, &res);
	if (r != 0) {
		mfs_err_set(err, MFS_E_CONNECT, "cannot resolve %s: %s", host,
			    r == EAI_SYSTEM ? strerror(errno)
					    : gai_strerror(r));
		return -1;
	}
	for (ai = res; ai != NULL && fd < 0; ai = ai->ai_next)
		fd = tcp_try(ai, timeout, &e);
	freeaddrinfo(res);
	if (fd >= 0) {
		keepalive(fd);
		return fd;
	}
	if (e == ETIMEDOUT)
		mfs_err_set(err, MFS_E_TIMEOUT,
			    "cannot connect to %s:%d: timed out after %d s",
			    host, port, timeout);
	else
		mfs_err_set(err, MFS_E_CONNECT, "cannot connect to %s:%d: %s",
			    host, port, strerror(e));
	return -1;
}

/* ---- streams ---- */

mailstream *mfs_stream_plain(int fd, int timeout, struct mfs_err *err)
{
	struct mfs_conn *conn;
	mailstream *s;

	conn = conn_new(fd, timeout, err);
	if (conn == NULL)
		goto close_fd;
	s = conn_stream(conn, err);
	if (s == NULL)
		goto free_conn;
	return s;

free_conn:
	conn_destroy(conn);
close_fd:
	close(fd);
	return NULL;
}

/*
 * OpenSSL writes to a socket with plain send(), which raises SIGPIPE when
 * the server has gone. This BIO is OpenSSL's socket BIO with a write that
 * passes MSG_NOSIGNAL instead.
 */
static BIO_METHOD *nosig_method; /* owned, lives until exit */
static pthread_once_t nosig_once = PTHREAD_ONCE_INIT;

static int nosig_write(BIO *bio, const char *buf, int len)
{
	ssize_t r;
	int fd;

	if (BIO_get_fd(bio, &fd) < 0)
		return -1;
	errno = 0;
	r = send(fd, buf, len, MSG_NOSIGNAL);
	BIO_clear_retry_flags(bio);
	if (r <= 0 && BIO_sock_should_retry((int)r))
		BIO_set_retry_write(bio);
	return (int)r;
}

static void nosig_init(void)
{
	const BIO_METHOD *sock = BIO_s_socket();
	BIO_METHOD *m;

	m = BIO_meth_new(BIO_TYPE_SOCKET, "mailfs socket");
	if (m == NULL)
		return;
	if (BIO_meth_set_write(m, nosig_write) != 1 ||
	    BIO_meth_set_read(m, BIO_meth_get_read(sock)) != 1 ||
	    BIO_meth_set_puts(m, BIO_meth_get_puts(sock)) != 1 ||
	    BIO_meth_set_ctrl(m, BIO_meth_get_ctrl(sock)) != 1 ||
	    BIO_meth_set_create(m, BIO_meth_get_create(sock)) != 1 ||
	    BIO_meth_set_destroy(m, BIO_meth_get_destroy(sock)) != 1) {
		BIO_meth_free(m);
		return;
	}
	nosig_method = m;
}

/* Attaches fd (not closed by OpenSSL) to ssl. Returns 0 or -1. */
static int ssl_attach_fd(SSL *ssl, int fd)
{
	BIO *bio;

	pthread_once(&nosig_once, nosig_init);
	if (nosig_method == NULL)
		return SSL_set_fd(ssl, fd) == 1 ? 0 : -1;
	bio = BIO_new(nosig_method);
	if (bio == NULL)
		return -1;
	BIO_set_fd(bio, fd, BIO_NOCLOSE);
	SSL_set_bio(ssl, bio, bio);
	return 0;
}

static int is_ip_literal(const char *host)
{
	unsigned char addr[sizeof(struct in6_addr)];

	return inet_pton(AF_INET, host, addr) == 1 ||
	       inet_pton(AF_INET6, host, addr) == 1;
}

/* A client context: TLS 1.2 or later, system store plus ca_file, peer
 * verification on. Returns NULL with err set. */
static SSL_CTX *tls_ctx_new(const struct mfs_tls_opts *opts,
			    struct mfs_err *err)
{
	SSL_CTX *ctx;

	ctx = SSL_CTX_new(TLS_client_method());
	if (ctx == NULL)
		goto nomem;
	if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1)
		goto free_ctx_nomem;
	/* Without a system store only ca_file can vouch for the server. */
	SSL_CTX_set_default_verify_paths(ctx);
	if (opts->ca_file != NULL &&
	    SSL_CTX_load_verify_locations(ctx, opts->ca_file, NULL) != 1) {
		mfs_err_set(err, MFS_E_TLS,
			    "TLS to %s: cannot load CA file %s: %s", opts->host,
			    opts->ca_file,
			    ERR_reason_error_string(ERR_peek_last_error())
				?: "not a readable PEM certificate file");
		goto free_ctx;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
				  SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	ERR_clear_error();
	return ctx;

free_ctx_nomem:
	SSL_CTX_free(ctx);
nomem:
	mfs_err_set(err, MFS_E_NOMEM, "out of memory for TLS");
	return NULL;
free_ctx:
	ERR_clear_error();
	SSL_CTX_free(ctx);
	return NULL;
}

/* Sets SNI and the name or address the certificate must match. */
static int tls_set_host(SSL *ssl, const char *host, struct mfs_err *err)
{
	X509_VERIFY_PARAM *param = SSL_get0_param(ssl);

	if (is_ip_literal(host)) {
		if (X509_VERIFY_PARAM_set1_ip_asc(param, host) != 1)
			goto bad;
		return 0;
	}
	SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	if (SSL_set1_host(ssl, host) != 1)
		goto bad;
	if (SSL_set_tlsext_host_name(ssl, host) != 1)
		goto bad;
	return 0;

bad:
	ERR_clear_error();
	return mfs_err_set(err, MFS_E_TLS, "TLS to %s: bad host name", host);
}

/* The sentence for a failed certificate check. */
static const char *verify_reason(long result)
{
	switch (result) {
	case X509_V_ERR_CERT_HAS_EXPIRED:
		return "certificate has expired";
	case X509_V_ERR_CERT_NOT_YET_VALID:
		return "certificate is not yet valid";
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
	case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
	case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
	case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
		return "certificate is not trusted (unknown CA)";
	default:
		return X509_verify_cert_error_string(result);
	}
}

/* Sets err for a failed handshake: which check failed, or why the TLS
 * layer gave up. */
static void handshake_error(struct mfs_conn *conn, const char *host, int r,
			    struct mfs_err *err)
{
	int saved_errno = errno;
	int ssl_err = SSL_get_error(conn->ssl, r);
	long result = SSL_get_verify_result(conn->ssl);
	unsigned long e = ERR_peek_last_error();

	if (conn->timed_out) {
		mfs_err_set(err, MFS_E_TIMEOUT,
			    "TLS to %s: handshake timed out after %d s", host,
			    conn->timeout);
	} else if (mailstream_cancel_cancelled(conn->cancel)) {
		mfs_err_set(err, MFS_E_TLS, "TLS to %s: handshake cancelled",
			    host);
	} else if (result == X509_V_ERR_HOSTNAME_MISMATCH ||
		   result == X509_V_ERR_IP_ADDRESS_MISMATCH) {
		mfs_err_set(err, MFS_E_TLS,
			    "TLS to %s: certificate does not match host %s",
			    host, host);
	} else if (result != X509_V_OK) {
		mfs_err_set(err, MFS_E_TLS, "TLS to %s: %s", host,
			    verify_reason(result));
	} else if (e != 0) {
		mfs_err_set(err, MFS_E_TLS, "TLS to %s: handshake failed: %s",
			    host,
			    ERR_reason_error_string(e) ?: "unknown error");
	} else if (ssl_err == SSL_ERROR_SYSCALL && saved_errno != 0) {
		mfs_err_set(err, MFS_E_TLS, "TLS to %s: handshake failed: %s",
			    host, strerror(saved_errno));
	} else {
		mfs_err_set(err, MFS_E_TLS,
			    "TLS to %s: handshake failed: connection closed by "
			    "the server",
			    host);
	}
	ERR_clear_error();
}

/* Runs the client handshake until the monotonic clock reaches deadline. */
static int tls_handshake(struct mfs_conn *conn, const char *host,
			 int64_t deadline, struct mfs_err *err)
{
	int r;

	for (;;) {
		ERR_clear_error();
		errno = 0;
		r = SSL_connect(conn->ssl);
		if (r == 1)
			return 0;
		if (ssl_retry(conn, r, deadline) < 0)
			break;
	}
	handshake_error(conn, host, r, err);
	return -1;
}

/*
 * Stores in *connp a conn with a verified TLS session over fd (borrowed: not
 * closed on failure) and returns MFS_OK, or returns the error code with err
 * set. fd is left non-blocking.
 */
static int tls_conn_new(int fd, const struct mfs_tls_opts *opts,
			struct mfs_conn **connp, struct mfs_err *err)
{
	struct mfs_err local;
	struct mfs_conn *conn;
	int64_t deadline;
	SSL_CTX *ctx;

	*connp = NULL;
	if (err == NULL)
		err = &local;
	if (opts == NULL || opts->host == NULL || opts->host[0] == '\0' ||
	    opts->timeout <= 0)
		return mfs_err_set(err, MFS_E_TLS,
				   "TLS: no host name to verify");
	/* Setting up the context counts against the timeout too. */
	deadline = now_ms() + (int64_t)opts->timeout * 1000;
	conn = conn_new(fd, opts->timeout, err);
	if (conn == NULL)
		return err->code;
	/* One context per connection: nothing is shared between threads. */
	ctx = tls_ctx_new(opts, err);
	if (ctx == NULL)
		goto free_conn;
	conn->ssl = SSL_new(ctx);
	SSL_CTX_free(ctx); /* the SSL holds its own reference */
	if (conn->ssl == NULL || ssl_attach_fd(conn->ssl, fd) != 0) {
		mfs_err_set(err, MFS_E_NOMEM, "out of memory for TLS");
		goto free_conn;
	}
	if (tls_set_host(conn->ssl, opts->host, err) != 0)
		goto free_conn;
	if (set_nonblock(fd, 1) < 0) {
		mfs_err_set(err, MFS_E_TLS, "TLS to %s: %s", opts->host,
			    strerror(errno));
		goto free_conn;
	}
	if (tls_handshake(conn, opts->host, deadline, err) != 0)
		goto free_conn;
	*connp = conn;
	return MFS_OK;

free_conn:
	ERR_clear_error();
	conn_destroy(conn);
	return err->code;
}

mailstream *mfs_stream_tls(int fd, const struct mfs_tls_opts *opts,
			   struct mfs_err *err)
{
	struct mfs_conn *conn;
	mailstream *s;

	if (tls_conn_new(fd, opts, &conn, err) != MFS_OK)
		goto close_fd;
	s = conn_stream(conn, err);
	if (s == NULL)
		goto free_conn;
	return s;

free_conn:
	conn_destroy(conn);
close_fd:
	close(fd);
	return NULL;
}

int mfs_stream_starttls(mailstream *s, const struct mfs_tls_opts *opts,
			struct mfs_err *err)
{
	const char *host = opts != NULL && opts->host != NULL ? opts->host : "";
	mailstream_low *old_low, *low;
	struct mfs_conn *conn;
	int fd, r;

	old_low = s != NULL ? mailstream_get_low(s) : NULL;
	fd = mailstream_low_get_fd(old_low);
	if (fd < 0)
		return mfs_err_set(err, MFS_E_TLS,
				   "TLS to %s: the connection is closed", host);
	/* Bytes that came before the handshake were never protected. */
	if (s->read_buffer_len != 0)
		return mfs_err_set(err, MFS_E_TLS,
				   "TLS to %s: server sent data before the TLS "
				   "handshake",
				   host);
	if (old_low->driver == &mfs_driver &&
	    ((struct mfs_conn *)old_low->data)->z != NULL)
		return mfs_err_set(err, MFS_E_TLS,
				   "TLS to %s: the connection is compressed",
				   host);
	r = tls_conn_new(fd, opts, &conn, err);
	if (r != MFS_OK)
		return r;
	if (old_low->driver == &mfs_driver) {
		/* The reply to STARTTLS ended a response: start afresh. */
		struct mfs_conn *old = old_low->data;

		conn->imap.on = old->imap.on;
		conn->imap.body_ok = old->imap.body_ok;
	}
	low = conn_low(conn, err);
	if (low == NULL) {
		conn_destroy(conn);
		return MFS_E_NOMEM;
	}
	/* Frees the old driver's data; only mailstream_low_close closes fd. */
	mailstream_low_free(old_low);
	mailstream_set_low(s, low);
	return MFS_OK;
}

int mfs_stream_timed_out(mailstream *s)
{
	struct mfs_conn *conn = stream_conn(s);

	return conn != NULL && conn->timed_out;
}

void mfs_stream_imap_literals(mailstream *s)
{
	struct mfs_conn *conn = stream_conn(s);

	if (conn != NULL) {
		memset(&conn->imap, 0, sizeof(conn->imap));
		conn->imap.on = 1;
	}
}

void mfs_stream_body_literals(mailstream *s, int on)
{
	struct mfs_conn *conn = stream_conn(s);

	if (conn != NULL)
		conn->imap.body_ok = on != 0;
}

const char *mfs_stream_refusal(mailstream *s)
{
	struct mfs_conn *conn = stream_conn(s);

	if (conn == NULL || conn->imap.refusal[0] == '\0')
		return NULL;
	return conn->imap.refusal;
}

void mfs_stream_byte_reads(mailstream *s, int on)
{
	struct mfs_conn *conn = stream_conn(s);

	if (conn != NULL)
		conn->byte_reads = on != 0;
}

int mfs_stream_compress(mailstream *s, struct mfs_err *err)
{
	struct mfs_conn *conn = stream_conn(s);
	struct zconn *z;

	if (conn == NULL || conn_dead(conn) || conn->eof)
		return mfs_err_set(err, MFS_E_PROTO,
				   "compression: the connection is closed");
	if (conn->z != NULL)
		return mfs_err_set(err, MFS_E_PROTO,
				   "compression: already on");
	/* Bytes read ahead would be compressed ones taken as plain; bytes
	 * not yet sent would be sent compressed. */
	if (s->read_buffer_len != 0 || s->write_buffer_len != 0)
		return mfs_err_set(err, MFS_E_PROTO,
				   "compression: data is waiting on the "
				   "connection");
	z = calloc(1, sizeof(*z));
	if (z == NULL)
		goto nomem;
	if (inflateInit2(&z->in, Z_WINDOW_BITS) != Z_OK)
		goto free_z;
	z->in_ready = 1;
	if (deflateInit2(&z->out, Z_DEFAULT_COMPRESSION, Z_DEFLATED,
			 Z_WINDOW_BITS, 8, Z_DEFAULT_STRATEGY) != Z_OK)
		goto free_z;
	z->out_ready = 1;
	conn->z = z;
	conn->byte_reads = 0;
	return MFS_OK;

free_z:
	zconn_free(z);
nomem:
	return mfs_err_set(err, MFS_E_NOMEM, "out of memory for compression");
}

int mfs_stream_compressed(mailstream *s)
{
	struct mfs_conn *conn = stream_conn(s);

	return conn != NULL && conn->z != NULL;
}

int mfs_stream_pending(mailstream *s)
{
	struct mfs_conn *conn = stream_conn(s);

	if (s == NULL)
		return 0;
	if (s->read_buffer_len != 0)
		return 1;
	if (conn == NULL)
		return 0;
	if (conn->z != NULL && (conn->z->ipos < conn->z->ilen || conn->z->more))
		return 1;
	return conn->ssl != NULL && SSL_pending(conn->ssl) > 0;
}

void mfs_stream_wipe(mailstream *s)
{
	if (s == NULL || s->write_buffer == NULL)
		return;
	explicit_bzero(s->write_buffer, s->buffer_max_size);
	s->write_buffer_len = 0;
}

static void copy_str(char *dst, size_t len, const char *src)
{
	if (dst != NULL && len > 0)
		snprintf(dst, len, "%s", src);
}

void mfs_stream_tls_info(mailstream *s, char *version, size_t vlen,
			 char *subject, size_t slen, char *issuer, size_t ilen)
{
	struct mfs_conn *conn = stream_conn(s);
	X509 *cert;

	copy_str(version, vlen, "");
	copy_str(subject, slen, "");
	copy_str(issuer, ilen, "");
	if (conn == NULL || conn->ssl == NULL)
		return;
	copy_str(version, vlen, SSL_get_version(conn->ssl));
	cert = SSL_get1_peer_certificate(conn->ssl);
	if (cert == NULL)
		return;
	if (subject != NULL && slen > 0)
		X509_NAME_oneline(X509_get_subject_name(cert), subject,
				  (int)(slen > INT32_MAX ? INT32_MAX : slen));
	if (issuer != NULL && ilen > 0)
		X509_NAME_oneline(X509_get_issuer_name(cert), issuer,
				  (int)(ilen > INT32_MAX ? INT32_MAX : ilen));
	X509_free(cert);
}
