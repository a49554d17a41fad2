// fuzz-sources: src/listline.c src/tls.c src/names.c src/error.c src/log.c src/store.c src/header.c src/skeleton.c src/idxcache.c src/config.c src/sasl.c src/base64.c src/hash.c src/privdir.c src/auth.c src/query.c
/*
 * listline_fuzz.c - libFuzzer target for the listing's own reader of FETCH
 * responses (src/listline.c), against libetpan's.
 *
 * The input's first response (its first line and, for each literal a
 * line ends with, the literal and the next line) is read by mfs_listline.
 * When it takes it, libetpan's parser is given the same response after a
 * greeting, followed by a tagged OK, and the listing entry it makes
 * (msg_from_att, as the listing does) must be the same, field by field.
 * Responses mfs_listline leaves cost nothing: they go to libetpan as
 * before.
 *
 * Build and run: tests/fuzz/run.sh (FUZZ_TARGETS=listline).
 */
#include "imap_session.h"

/* The response at the start of data[0, size) as read_response() (imap.c)
 * reads it from a server: its line, then for each literal a line ends
 * with, the literal's bytes and the next line. NULL when the input ends
 * first. */
static MMAPString *first_response(const uint8_t *data, size_t size)
{
	MMAPString *buf = mmap_string_new("");
	const uint8_t *nl;
	size_t off = 0;
	int64_t n;

	check(buf != NULL);
	for (;;) {
		nl = memchr(data + off, '\n', size - off);
		if (nl == NULL)
			break;
		check(mmap_string_append_len(buf, (const char *)data + off,
					     (size_t)(nl - data) + 1 - off) !=
		      NULL);
		off = (size_t)(nl - data) + 1;
		n = literal_at_end(buf);
		if (n < 0)
			return buf;
		if ((uint64_t)n > size - off)
			break;
		check(mmap_string_append_len(buf, (const char *)data + off,
					     (size_t)n) != NULL);
		off += (size_t)n;
	}
	mmap_string_free(buf);
	return NULL;
}

/* Compares mfs_listline's reading of the input's first response with the
 * listing entry libetpan's parser gives for it (msg_from_att). */
static void fuzz_listline(const uint8_t *data, size_t size)
{
	static const char greeting[] = "* OK hi\r\n", done[] = "1 OK done\r\n";
	MMAPString *rsp = first_response(data, size);
	struct index_acc acc = {0};
	struct mfs_store_msg m;
	mailimap *session;
	size_t n;
	uint8_t *text;
	int ok, r;

	if (rsp == NULL)
		return;
	r = mfs_listline(rsp->str, rsp->len, &m);
	if (r != 1) {
		mmap_string_free(rsp);
		return;
	}
	n = strlen(greeting) + rsp->len + strlen(done);
	text = malloc(n);
	check(text != NULL);
	memcpy(text, greeting, strlen(greeting));
	memcpy(text + strlen(greeting), rsp->str, rsp->len);
	memcpy(text + strlen(greeting) + rsp->len, done, strlen(done));
	mmap_string_free(rsp);
	session = session_over(text, n);
	free(text);
	check(session != NULL);
	mailimap_set_msg_att_handler(session, index_handler, &acc);
	mailimap_set_progress_callback(session, NULL, index_progress, NULL);
	check(read_tagged(session, 1, NULL, &ok) == MAILIMAP_NO_ERROR && ok);
	check(!acc.nomem);
	if (m.uid == 0) {
		check(acc.n == 0);
	} else {
		check(acc.n == 1);
		check(acc.msgs[0].uid == m.uid && acc.msgs[0].size == m.size &&
		      acc.msgs[0].flags == m.flags &&
		      acc.msgs[0].date == m.date &&
		      strcmp(acc.msgs[0].from, m.from) == 0 &&
		      strcmp(acc.msgs[0].subject, m.subject) == 0);
	}
	mfs_store_msgs_free(acc.msgs, acc.n);
	free(m.from);
	free(m.subject);
	mailimap_free(session);
	close(peer);
	peer = -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int ready;

	if (!ready) {
		signal(SIGPIPE, SIG_IGN);
		ready = 1;
	}
	if (size > FUZZ_MAX)
		return 0;
	fuzz_listline(data, size);
	return 0;
}
