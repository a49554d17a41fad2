// fuzz-sources: src/tls.c src/sasl.c src/config.c src/error.c src/log.c src/base64.c src/auth.c
/*
 * smtp_fuzz.c - libFuzzer target for the SMTP client's reading of server
 * replies.
 *
 * The first input byte chooses how the client logs in and sends, and
 * which message (see struct knobs); the rest is what a server sends:
 * greeting, EHLO reply, AUTH replies, then the replies to MAIL, RCPT, DATA
 * and the data's end (or, when the EHLO reply offers CHUNKING and
 * PIPELINING, to MAIL, RCPT and "BDAT n LAST"), twice (the second message
 * goes after RSET when the first was refused), and the reply to QUIT. It
 * is served through a socketpair under mailfs's own plain stream (tls.c);
 * src/smtp.c is included so that its static greet() runs unchanged.
 *
 * The contract checked: no crash, leak or hang (the peer has shut down its
 * side, so a short input ends every read at once, and every wait is bounded
 * by a 1 s timeout); an error is one the header documents; a session
 * opens only after a "220" greeting (and, with a login, a "235"); every
 * outcome that quotes the server quotes a valid reply code (200-559,
 * second digit 0-5) of the right class. What the client wrote for each
 * message is read back from the socketpair and checked too: BDAT only
 * when CHUNKING and PIPELINING were offered, and then never DATA; "BDAT n
 * LAST" followed by exactly the n bytes of the message as it is (not
 * dot-stuffed, a missing final CRLF added); ACCEPTED and UNKNOWN only
 * after the whole message went out (the whole chunk, or the dot-stuffed
 * data and its ".").
 *
 * A refused token is renewed from a password file written at start-up, so
 * that the renewal path runs without starting a process.
 *
 * Build and run: tests/fuzz/run.sh, or by hand:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Isrc \
 *     $(pkg-config --cflags fuse3 libetpan) tests/fuzz/smtp_fuzz.c \
 *     src/tls.c src/sasl.c src/config.c src/error.c src/log.c \
 *     $(pkg-config --libs libetpan openssl) -o /tmp/smtp_fuzz
 *   /tmp/smtp_fuzz -max_total_time=60 tests/fuzz/smtp-seeds
 */
#include "../../src/smtp.c"

#include <fcntl.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>

/* Bigger inputs would not fit the socket buffer written before reading. */
#define FUZZ_MAX 65536

/* The first byte. */
struct knobs {
	enum mfs_auth auth; /* bits 0-1: 0 password, 1 xoauth2,
			       2 oauthbearer, 3 no login */
	int login;
	unsigned send_flags; /* bits 2-3: MFS_SMTP_SEND_* */
	int starttls;	     /* bit 4: smtp:// (STARTTLS required) */
	int one_rcpt;	     /* bit 5 */
	int msg;	     /* bits 6-7: which of messages[] */
};

/* What the client may be asked to send: no final CRLF, a final CRLF, a
 * final lone CR, a lone ".". */
static const char *const messages[] = {
    "From: alice@example.test\r\nTo: bob@example.test\r\n"
    "Subject: fuzz\r\n\r\n.leading dot\r\nbody\r\n.\r\nend",
    "Subject: crlf\r\n\r\n..two\r\n.\r\n",
    "Subject: cr\r\n\r\nx\r\n.\r",
    ".",
};

/* Everything the client wrote, read back from the server's side. */
#define WIRE_MAX (256 * 1024)
static char wire[WIRE_MAX];

static char token_file[64]; /* the renewed token's password_file */

static void check(int ok)
{
	if (!ok)
		abort();
}

static void write_token_file(void)
{
	int fd;

	if (token_file[0] != '\0')
		return;
	strcpy(token_file, "/tmp/mailfs-smtp-fuzz-XXXXXX");
	fd = mkstemp(token_file);
	check(fd >= 0);
	check(fchmod(fd, 0600) == 0);
	check(write(fd, "fresh-token\n", 12) == 12);
	close(fd);
}

static struct knobs knobs_of(uint8_t b)
{
	struct knobs k = {0};

	k.login = (b & 3) != 3;
	k.auth = (b & 3) == 1	? MFS_AUTH_XOAUTH2
		 : (b & 3) == 2 ? MFS_AUTH_OAUTHBEARER
				: MFS_AUTH_PASSWORD;
	k.send_flags = (b >> 2) & 3;
	k.starttls = (b >> 4) & 1;
	k.one_rcpt = (b >> 5) & 1;
	k.msg = (b >> 6) & 3;
	return k;
}

/* A valid reply code at the start of text (what follows it may be "; "
 * when replies are joined). */
static int quotes_code(const char *text, char cls)
{
	return text != NULL && text[0] >= '2' && text[0] <= '5' &&
	       text[1] >= '0' && text[1] <= '5' && text[2] >= '0' &&
	       text[2] <= '9' && (cls == 0 || text[0] == cls);
}

/* The line of the input that starts at p begins with code. */
static int line_starts(const uint8_t *p, size_t n, const char *code)
{
	return n >= 3 && memcmp(p, code, 3) == 0 &&
	       (n == 3 || p[3] == ' ' || p[3] == '-' || p[3] == '\r' ||
		p[3] == '\n');
}

/* Some line of the input begins with code. */
static int some_line_starts(const uint8_t *data, size_t size, const char *code)
{
	size_t i;

	for (i = 0; i < size; i++)
		if ((i == 0 || data[i - 1] == '\n') &&
		    line_starts(data + i, size - i, code))
			return 1;
	return 0;
}

static int sane_open_error(enum mfs_errcode c)
{
	return c == MFS_E_PROTO || c == MFS_E_CONNECT || c == MFS_E_TIMEOUT ||
	       c == MFS_E_AUTH || c == MFS_E_TLS || c == MFS_E_NOMEM;
}

static void check_result(const struct mfs_smtp_result *res)
{
	size_t i;

	switch (res->status) {
	case MFS_SMTP_ACCEPTED:
		check(quotes_code(res->reply, '2'));
		break;
	case MFS_SMTP_PERMFAIL:
		/* a 5xx, all recipients refused (their replies, joined),
		 * or too large for SIZE */
		check(quotes_code(res->reply, 0) ||
		      strncmp(res->reply, "message is ", 11) == 0);
		check(res->reply[0] != '2');
		break;
	case MFS_SMTP_TEMPFAIL:
	case MFS_SMTP_UNKNOWN:
		check(res->reply != NULL);
		break;
	}
	for (i = 0; i < res->nrejected; i++) {
		check(res->rejected[i].rcpt != NULL);
		check(quotes_code(res->rejected[i].reply, 0));
		check(res->rejected[i].reply[0] != '2');
	}
}

/* Reads what the client wrote since the last call (the server's side is
 * non-blocking). */
static size_t drain(int peer)
{
	size_t n = 0;
	ssize_t r;

	while (n < WIRE_MAX &&
	       (r = recv(peer, wire + n, WIRE_MAX - n, MSG_DONTWAIT)) > 0)
		n += (size_t)r;
	check(n < WIRE_MAX);
	return n;
}

/* The message as it must follow "BDAT n LAST" (stuffed 0), or "DATA"
 * up to its final "." line (1): with a final CRLF added when missing. */
static size_t expected(const char *msg, int stuffed, char *out)
{
	size_t n = 0, len = strlen(msg);
	int bol = 1;

	if (stuffed)
		n += (size_t)sprintf(out, "DATA\r\n");
	for (size_t i = 0; i < len; i++) {
		if (stuffed && bol && msg[i] == '.')
			out[n++] = '.';
		out[n++] = msg[i];
		bol = msg[i] == '\n';
	}
	if (len < 2 || strcmp(msg + len - 2, "\r\n") != 0)
		n += (size_t)sprintf(out + n, "%s",
				     msg[len - 1] == '\r' ? "\n" : "\r\n");
	if (stuffed)
		n += (size_t)sprintf(out + n, ".\r\n");
	return n;
}

/* A line of w (n bytes) that starts with cmd; NULL when none does. */
static const char *find_line(const char *w, size_t n, const char *cmd)
{
	size_t cl = strlen(cmd);

	for (size_t i = 0; i + cl <= n; i++)
		if ((i == 0 || w[i - 1] == '\n') && memcmp(w + i, cmd, cl) == 0)
			return w + i;
	return NULL;
}

/* What the client wrote for one message (n bytes in wire). */
static void check_wire(const struct mfs_smtp *s, const struct knobs *k,
		       size_t n, enum mfs_smtp_status st, int rc)
{
	unsigned both = MFS_SMTP_CHUNKING | MFS_SMTP_PIPELINING;
	const char *bdat = find_line(wire, n, "BDAT ");
	const char *msg = messages[k->msg];
	char want[256];
	size_t wl;
	int whole = 0;

	if (bdat) {
		char line[64];
		const char *data;

		check((s->caps & both) == both);
		check(find_line(wire, n, "DATA\r\n") == NULL);
		wl = expected(msg, 0, want);
		snprintf(line, sizeof(line), "BDAT %zu LAST\r\n", wl);
		check(strncmp(bdat, line, strlen(line)) == 0);
		data = bdat + strlen(line);
		check((size_t)(wire + n - data) >= wl);
		check(memcmp(data, want, wl) == 0);
		whole = 1;
	} else if (find_line(wire, n, "MAIL FROM:")) {
		check((s->caps & both) != both);
		wl = expected(msg, 1, want);
		whole = memmem(wire, n, want, wl) != NULL;
	}
	if (rc == MFS_OK && (st == MFS_SMTP_ACCEPTED || st == MFS_SMTP_UNKNOWN))
		check(whole);
}

static void send_one(struct mfs_smtp *s, const struct knobs *k, int fd,
		     off_t size, int peer)
{
	static const char *const rcpts[] = {"bob@example.test",
					    "carol@example.test"};
	struct mfs_smtp_result res;
	struct mfs_err err;
	int rc;

	rc = mfs_smtp_send(s, "alice@example.test", rcpts, k->one_rcpt ? 1 : 2,
			   fd, size, k->send_flags, &res, &err);
	check(rc == MFS_OK || rc == MFS_E_NOMEM);
	if (rc == MFS_OK)
		check_result(&res);
	check_wire(s, k, drain(peer), res.status, rc);
	mfs_smtp_result_free(&res);
}

static int message_fd(const struct knobs *k, off_t *size)
{
	const char *msg = messages[k->msg];
	size_t len = strlen(msg);
	int fd = memfd_create("msg", MFD_CLOEXEC);

	check(fd >= 0);
	check(write(fd, msg, len) == (ssize_t)len);
	*size = (off_t)len;
	return fd;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mfs_server server = {MFS_PROTO_SMTP, MFS_TLS_NONE,
				    (char *)"localhost", 587};
	struct mfs_account acct = {0};
	struct mfs_smtp_opts opts = {0};
	struct knobs k;
	struct mfs_err err;
	struct mfs_smtp *s;
	char *renewed = NULL;
	int sv[2], rc, fd;
	size_t off = 0;
	off_t msize;

	if (size < 1 || size > FUZZ_MAX)
		return 0;
	write_token_file();
	k = knobs_of(data[0]);
	data++;
	size--;
	if (k.starttls)
		server.tls = MFS_TLS_STARTTLS;
	acct.name = (char *)"fuzz";
	acct.path = (char *)"fuzz.conf";
	acct.password_file = token_file;
	acct.timeout = 1;
	opts.server = &server;
	opts.user = k.login ? "alice" : NULL;
	opts.password = k.login ? "old-token" : NULL;
	opts.timeout = 1;
	opts.helo_name = "client.test";
	opts.auth = k.auth;
	opts.acct = &acct;
	opts.renewed = &renewed;

	check(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
	while (off < size) {
		ssize_t w = send(sv[1], data + off, size - off, MSG_NOSIGNAL);

		check(w > 0);
		off += (size_t)w;
	}
	shutdown(sv[1], SHUT_WR);

	s = calloc(1, sizeof(*s));
	check(s != NULL);
	snprintf(s->host, sizeof(s->host), "localhost:587");
	s->stream = mfs_stream_plain(sv[0], 1, &err);
	check(s->stream != NULL);
	s->alive = 1;
	rc = greet(s, &opts, &err);
	if (rc != MFS_OK) {
		check(sane_open_error(rc) && (int)err.code == rc);
		check(renewed == NULL);
		mailstream_close(s->stream);
		free(s);
		close(sv[1]);
		return 0;
	}
	check(line_starts(data, size, "220"));
	check(!k.login || some_line_starts(data, size, "235"));
	check(renewed == NULL || strcmp(renewed, "fresh-token") == 0);
	check(renewed == NULL || k.auth != MFS_AUTH_PASSWORD);
	drain(sv[1]);
	fd = message_fd(&k, &msize);
	send_one(s, &k, fd, msize, sv[1]);
	if (mfs_smtp_alive(s))
		send_one(s, &k, fd, msize, sv[1]);
	close(fd);
	mfs_smtp_close(s);
	mfs_password_free(renewed);
	close(sv[1]);
	return 0;
}
