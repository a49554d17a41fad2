// fuzz-sources: src/tls.c src/names.c src/error.c src/log.c src/store.c src/config.c src/sasl.c src/base64.c src/auth.c src/query.c src/header.c
// src/config.c src/sasl.c
/*
 * pop3_fuzz.c - libFuzzer target for the POP3 driver's reading of server
 * replies.
 *
 * The input is what a server sends: a greeting, then replies. It is served
 * through a socketpair under mailfs's own plain stream (tls.c), and the
 * driver (src/pop3.c, included here so that its static functions run
 * unchanged) reads it from the start on a fresh session four times:
 *   1. login (USER/PASS, pipelined when CAPA says so), CAPA and the index
 *      (UIDL, LIST, TOP n 0 in batches);
 *   2. login and the fetch of one message (UIDL n, maybe the whole UIDL
 *      listing, RETR), the first message of step 1 when it succeeded;
 *   3. an APOP login (the greeting's <timestamp>);
 *   4. an XOAUTH2 login, with the new token from a password file after a
 *      refusal.
 * The driver must not crash, leak or hang (every wait ends at the end of
 * the input: the server's side is shut down for writing). On success the
 * index is well formed and every size and UIDL it returns was in the
 * input; a fetch writes the number of bytes it reports. On failure the
 * code is one a network driver may return.
 *
 * Build and run: tests/fuzz/run.sh (FUZZ_SECONDS each), or by hand:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Isrc \
 *     $(pkg-config --cflags fuse3 libetpan) tests/fuzz/pop3_fuzz.c \
 *     src/tls.c src/names.c src/error.c src/log.c src/store.c \
 *     src/config.c src/sasl.c $(pkg-config --libs libetpan openssl) \
 *     -o /tmp/pop3_fuzz
 *   /tmp/pop3_fuzz -max_total_time=60 -max_len=65536 tests/fuzz/pop3-seeds
 */
#include "../../src/pop3.c"
#include "server_said.h"

#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>

/* Bigger inputs would not fit the socket buffer written before reading. */
#define FUZZ_MAX 65536

static void check(int ok)
{
	if (!ok)
		abort();
}

static int sane_code(enum mfs_errcode c)
{
	return c == MFS_E_PROTO || c == MFS_E_CONNECT || c == MFS_E_TIMEOUT ||
	       c == MFS_E_NOENT || c == MFS_E_NOMEM || c == MFS_E_AUTH ||
	       c == MFS_E_ACCESS;
}

/* Fills err with a code no function returns: a result taken from an err
 * that nothing set shows as an insane code. */
static void poison(struct mfs_err *err)
{
	memset(err, 0x5a, sizeof(*err));
	err->msg[sizeof(err->msg) - 1] = '\0';
}

/* A session of pop whose server has said everything in data and closed
 * its side for writing. */
static struct pop3_conn *session_over(struct mfs_pop3 *pop, const uint8_t *data,
				      size_t size)
{
	struct mfs_err err;
	struct pop3_conn *c;
	int fd = server_said(data, size);

	c = calloc(1, sizeof(*c));
	check(c != NULL);
	c->pop = pop;
	c->s = mfs_stream_plain(fd, 1, &err);
	check(c->s != NULL);
	return c;
}

static void session_end(struct pop3_conn *c)
{
	conn_close(c);
	close(peer);
	peer = -1;
}

/* The decimal digits of v occur in data. */
static int number_in(const uint8_t *data, size_t size, unsigned long long v)
{
	char digits[32];
	int n = snprintf(digits, sizeof(digits), "%llu", v);

	return memmem(data, size, digits, (size_t)n) != NULL;
}

static void check_index(const uint8_t *data, size_t size,
			const struct mfs_store_msg *msgs, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		const struct mfs_store_msg *m = &msgs[i];

		check(m->uid != 0 && (i == 0 || m->uid > msgs[i - 1].uid));
		check(number_in(data, size, m->uid));
		check(m->uidl != NULL && uidl_valid(m->uidl));
		check(memmem(data, size, m->uidl, strlen(m->uidl)) != NULL);
		check(number_in(data, size, m->size));
		check(m->from != NULL && m->subject != NULL);
		check(mfs_utf8_valid(m->from, strlen(m->from)));
		check(mfs_utf8_valid(m->subject, strlen(m->subject)));
		check(m->flags == 0);
	}
}

/* Step 1; *first becomes the first message listed, if any. */
static void fuzz_index(struct mfs_pop3 *pop, const uint8_t *data, size_t size,
		       struct mfs_store_msg *first)
{
	struct pop3_conn *c = session_over(pop, data, size);
	struct mfs_store_msg *msgs = NULL;
	struct mfs_err err;
	size_t n = 0;

	poison(&err);
	if (conn_start(c, &err) != MFS_OK) {
		check(sane_code(err.code));
		goto end_session;
	}
	poison(&err);
	if (index_session(c, &msgs, &n, &err) != MFS_OK) {
		check(sane_code(err.code));
		goto end_session;
	}
	check_index(data, size, msgs, n);
	if (n > 0) {
		first->uid = msgs[0].uid;
		first->size = msgs[0].size;
		first->uidl = strdup(msgs[0].uidl);
		check(first->uidl != NULL);
	}
	mfs_store_msgs_free(msgs, n);
end_session:
	session_end(c);
}

static void fuzz_fetch(struct mfs_pop3 *pop, const uint8_t *data, size_t size,
		       const struct mfs_store_msg *msg)
{
	struct pop3_conn *c = session_over(pop, data, size);
	struct mfs_err err;
	size_t len = 0;
	int fd = memfd_create("fuzz", MFD_CLOEXEC);

	check(fd >= 0);
	poison(&err);
	if (conn_start(c, &err) != MFS_OK) {
		check(sane_code(err.code));
		goto close_fd;
	}
	poison(&err);
	if (fetch_session(c, msg, fd, &len, &err) != MFS_OK) {
		check(sane_code(err.code) || err.code == MFS_E_IO);
		goto close_fd;
	}
	/* every line of the reply gains at most a CR */
	check(lseek(fd, 0, SEEK_CUR) == (off_t)len);
	check(len <= 2 * size);
close_fd:
	close(fd);
	session_end(c);
}

static void fuzz_login(struct mfs_pop3 *pop, const uint8_t *data, size_t size)
{
	struct pop3_conn *c = session_over(pop, data, size);
	struct mfs_err err;

	poison(&err);
	if (conn_start(c, &err) != MFS_OK)
		check(sane_code(err.code));
	session_end(c);
}

static char token_path[64];

static void token_file_remove(void)
{
	unlink(token_path);
}

/* A 0600 token file for the XOAUTH2 account's second try, removed at
 * exit. */
static char *token_file(void)
{
	char *path = token_path;
	int fd;

	snprintf(path, sizeof(token_path), "/tmp/mailfs-pop3-fuzz-%d",
		 (int)getpid());
	atexit(token_file_remove);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	check(fd >= 0 && fchmod(fd, 0600) == 0);
	check(write(fd, "tok2\n", 5) == 5);
	close(fd);
	return path;
}

/* A store that lives as long as the process. */
static struct mfs_pop3 *pop_new(struct mfs_store **st,
				const struct mfs_account *acct)
{
	*st = mfs_pop3_store_new(acct, "p");
	check(*st != NULL);
	return (*st)->priv;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct mfs_account plain = {
	    .name = "fuzz",
	    .path = "/fuzz/config",
	    .store = {MFS_PROTO_POP3, MFS_TLS_NONE, "127.0.0.1", 1},
	    .user = "u",
	    .timeout = 1,
	    .allow_expire = 1,
	};
	static struct mfs_account apop, oauth;
	static struct mfs_store *stores[3];
	static struct mfs_pop3 *p_plain, *p_apop, *p_oauth;
	struct mfs_store_msg msg = {.uid = 1, .size = 47, .uidl = NULL};

	if (p_plain == NULL) {
		signal(SIGPIPE, SIG_IGN);
		apop = plain;
		apop.apop = 1;
		apop.allow_expire = 0;
		oauth = plain;
		oauth.auth = MFS_AUTH_XOAUTH2;
		oauth.password_file = token_file();
		p_plain = pop_new(&stores[0], &plain);
		p_apop = pop_new(&stores[1], &apop);
		p_oauth = pop_new(&stores[2], &oauth);
	}
	if (size > FUZZ_MAX)
		return 0;
	fuzz_index(p_plain, data, size, &msg);
	if (msg.uidl == NULL)
		msg.uidl = strdup("000000017e3c9a51"); /* Dovecot's form */
	check(msg.uidl != NULL);
	fuzz_fetch(p_plain, data, size, &msg);
	free(msg.uidl);
	fuzz_login(p_apop, data, size);
	fuzz_login(p_oauth, data, size);
	return 0;
}
