// fuzz-sources: src/listline.c src/tls.c src/names.c src/error.c src/log.c src/store.c src/header.c src/skeleton.c src/idxcache.c src/config.c src/sasl.c src/base64.c src/hash.c src/privdir.c src/auth.c src/query.c
/*
 * imap_fuzz.c - libFuzzer target for the IMAP driver's reading of server
 * replies.
 *
 * The input is what a server sends: a greeting, then replies. It is served
 * through a socketpair under mailfs's own plain stream (tls.c), and the
 * driver's list, index, fetch, skeleton and search operations (src/imap.c, included here so
 * that its static functions run unchanged) each read it from the start on a
 * fresh session. The driver must not crash, leak or hang; what it returns
 * is checked against store.h: on success the results are well formed, on
 * failure the code is one a network driver may return.
 *
 * libetpan numbers its command tags from 1 per session, so a useful input
 * looks like "* OK hi\r\n* LIST () \"/\" INBOX\r\n1 OK done\r\n".
 *
 * Build and run: tests/fuzz/run.sh (FUZZ_SECONDS each), or by hand:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Isrc \
 *     $(pkg-config --cflags fuse3 libetpan) tests/fuzz/imap_fuzz.c \
 *     src/tls.c src/names.c src/error.c src/log.c src/store.c \
 *     $(pkg-config --libs libetpan openssl) -o /tmp/imap_fuzz
 *   /tmp/imap_fuzz -max_total_time=60 -max_len=65536
 */
#include "imap_session.h"

static int sane_code(enum mfs_errcode c)
{
	return c == MFS_E_PROTO || c == MFS_E_CONNECT || c == MFS_E_TIMEOUT ||
	       c == MFS_E_NOENT || c == MFS_E_NOMEM || c == MFS_E_AUTH ||
	       c == MFS_E_OFFLINE; /* a listing made again reconnects */
}

static void session_end(struct mfs_imap *imap)
{
	if (imap->session != NULL)
		imap_drop(imap);
	close(peer);
	peer = -1;
}

static void fuzz_list(struct mfs_store *st, struct mfs_imap *imap,
		      const uint8_t *data, size_t size)
{
	struct mfs_store_folder *folders = NULL;
	struct mfs_err err;
	mailimap *session = session_over(data, size);
	size_t n = 0, i;

	if (session == NULL)
		return;
	imap->session = session;
	if (st->ops->list(st, &folders, &n, &err) == MFS_OK) {
		for (i = 0; i < n; i++)
			check(folders[i].name != NULL);
		mfs_store_folders_free(folders, n);
	} else {
		check(sane_code(err.code));
	}
	session_end(imap);
}

static void fuzz_index(struct mfs_store *st, struct mfs_imap *imap,
		       const uint8_t *data, size_t size,
		       struct mfs_store_msg *first, uint32_t *validity)
{
	struct mfs_store_msg *msgs = NULL;
	struct mfs_err err;
	mailimap *session = session_over(data, size);
	size_t n = 0, i;

	if (session == NULL)
		return;
	imap->session = session;
	if (st->ops->index(st, "INBOX", validity, &msgs, &n, &err) == MFS_OK) {
		for (i = 0; i < n; i++) {
			check(msgs[i].uid != 0);
			check(msgs[i].from != NULL && msgs[i].subject != NULL);
			check(
			    mfs_utf8_valid(msgs[i].from, strlen(msgs[i].from)));
			check(mfs_utf8_valid(msgs[i].subject,
					     strlen(msgs[i].subject)));
		}
		if (n > 0)
			first->uid = msgs[0].uid;
		mfs_store_msgs_free(msgs, n);
	} else {
		check(sane_code(err.code));
	}
	session_end(imap);
}

static void fuzz_fetch(struct mfs_store *st, struct mfs_imap *imap,
		       const uint8_t *data, size_t size,
		       const struct mfs_store_msg *msg, uint32_t validity)
{
	struct mfs_err err;
	mailimap *session = session_over(data, size);
	size_t len = 0;
	int fd;

	if (session == NULL)
		return;
	fd = memfd_create("fuzz", MFD_CLOEXEC);
	check(fd >= 0);
	imap->session = session;
	if (st->ops->fetch(st, "INBOX", validity, msg, fd, &len, &err) ==
	    MFS_OK)
		check(lseek(fd, 0, SEEK_CUR) == (off_t)len);
	else
		check(sane_code(err.code) || err.code == MFS_E_IO);
	close(fd);
	session_end(imap);
}

/* The skeleton of a large message (BODYSTRUCTURE, then its sections):
 * on success its real and hole ranges are in order, do not overlap, lie
 * inside what was written, and every hole names a section. */
static void fuzz_skeleton(struct mfs_store *st, struct mfs_imap *imap,
			  const uint8_t *data, size_t size,
			  const struct mfs_store_msg *msg, uint32_t validity)
{
	struct mfs_seg *segs = NULL;
	struct mfs_err err;
	mailimap *session = session_over(data, size);
	size_t n = 0, i, end = 0;
	struct stat sb;
	int fd;

	if (session == NULL)
		return;
	fd = memfd_create("fuzz", MFD_CLOEXEC);
	check(fd >= 0);
	imap->session = session;
	if (st->ops->skeleton(st, "INBOX", validity, msg, 4, fd, &segs, &n,
			      &err) == MFS_OK) {
		check(fstat(fd, &sb) == 0);
		for (i = 0; i < n; i++) {
			check(segs[i].off >= end);
			end = segs[i].off + segs[i].len;
			check(end <= (size_t)sb.st_size);
			check(!segs[i].hole || segs[i].section != NULL);
		}
		mfs_store_segs_free(segs, n);
	} else {
		check(sane_code(err.code) || err.code == MFS_E_IO);
	}
	close(fd);
	session_end(imap);
}

/* A search of two folders with a literal term (no LITERAL+: it waits for
 * "+"), the entries of the matches wanted: on success each folder's UIDs
 * are in order and its entries name a message; failures are a network
 * driver's, or EINVAL (BADCHARSET). */
static void fuzz_search(struct mfs_store *st, struct mfs_imap *imap,
			const uint8_t *data, size_t size)
{
	static const char *const folders[] = {"INBOX", "A"};
	struct mfs_store_hits hits[2];
	struct mfs_query *q = NULL;
	struct mfs_err err;
	mailimap *session = session_over(data, size);
	size_t i, j;

	if (session == NULL)
		return;
	imap->session = session;
	memset(hits, 0, sizeof(hits));
	hits[0].want_msgs = hits[1].want_msgs = 1;
	check(mfs_query_parse("from:bob or subject:\xc3\xbc", &q, &err) ==
	      MFS_OK);
	if (st->ops->search(st, folders, 2, q, hits, &err) == MFS_OK) {
		for (i = 0; i < 2; i++) {
			check(hits[i].err.code == MFS_OK ||
			      sane_code(hits[i].err.code));
			check(hits[i].n <= SEARCH_MAX_UIDS);
			for (j = 1; j < hits[i].n; j++)
				check(hits[i].uids[j - 1] <= hits[i].uids[j]);
			for (j = 0; j < hits[i].nmsgs; j++)
				check(hits[i].msgs[j].uid != 0);
		}
	} else {
		check(sane_code(err.code) || err.code == MFS_E_INVAL);
	}
	mfs_store_hits_free(hits, 2);
	mfs_query_free(q);
	session_end(imap);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* Reconnects go to a port nobody listens on: refused at once. */
	static struct mfs_account acct = {
	    .store = {MFS_PROTO_IMAP, MFS_TLS_NONE, "127.0.0.1", 1},
	    .user = "u",
	    .timeout = 1,
	};
	static struct mfs_store *st;
	struct mfs_store_msg msg = {.uid = 1, .size = 10};
	uint32_t validity = 0;

	if (st == NULL) {
		signal(SIGPIPE, SIG_IGN);
		st = mfs_imap_store_new(&acct, "p");
		check(st != NULL);
	}
	if (size > FUZZ_MAX)
		return 0;
	fuzz_list(st, st->priv, data, size);
	fuzz_index(st, st->priv, data, size, &msg, &validity);
	fuzz_fetch(st, st->priv, data, size, &msg, validity);
	fuzz_skeleton(st, st->priv, data, size, &msg, validity);
	fuzz_search(st, st->priv, data, size);
	return 0;
}
