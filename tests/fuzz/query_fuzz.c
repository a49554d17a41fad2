// fuzz-sources: src/query.c src/names.c src/base64.c src/error.c
/*
 * query_fuzz.c - libFuzzer target for src/query.c.
 *
 * Parses arbitrary bytes as a search query and abort()s when a documented
 * invariant breaks: a query that parses renders as IMAP keys ending in
 * CRLF, whose literals are each announced by "{n}\r\n" just before their
 * offset and hold n bytes; a query that does not parse is EINVAL with a
 * reason and no tree; matching (by a listing, or by a message's text)
 * answers 0 or 1.
 *
 * Build and run:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Isrc \
 *     tests/fuzz/query_fuzz.c src/query.c src/names.c src/base64.c \
 *     src/error.c -o /tmp/query_fuzz
 *   /tmp/query_fuzz -max_total_time=60
 */
#include "query.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void check(int ok)
{
	if (!ok)
		abort();
}

/* Every literal of w: "{n}\r\n" or "{n+}\r\n" just before its offset,
 * n bytes after it, none past the end. */
static void check_wire(const struct mfs_query_wire *w)
{
	size_t i;

	check(w->buf != NULL && w->len >= 2);
	check(w->len == strlen(w->buf));
	check(memcmp(w->buf + w->len - 2, "\r\n", 2) == 0);
	check(w->ascii == (w->nlits == 0));
	for (i = 0; i < w->nlits; i++) {
		size_t at = w->lits[i], j, n = 0, mul = 1;

		check(at >= 5 && at <= w->len);
		check(memcmp(w->buf + at - 3, "}\r\n", 3) == 0);
		j = at - 3;
		if (w->buf[j - 1] == '+')
			j--;
		for (; j > 0 && w->buf[j - 1] >= '0' && w->buf[j - 1] <= '9';
		     j--) {
			n += (size_t)(w->buf[j - 1] - '0') * mul;
			mul *= 10;
		}
		check(j > 0 && w->buf[j - 1] == '{');
		check(n > 0 && at + n <= w->len - 2);
		if (i + 1 < w->nlits)
			check(at + n < w->lits[i + 1]);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mfs_query *q = NULL;
	struct mfs_query_wire w;
	struct mfs_store_msg m;
	struct mfs_err err;
	char *name;
	int rc, plus;

	if (size > 2 * MFS_QUERY_MAX)
		return 0;
	name = malloc(size + 1);
	if (name == NULL)
		return 0;
	memcpy(name, data, size);
	name[size] = '\0';
	rc = mfs_query_parse(name, &q, &err);
	if (rc != MFS_OK) {
		check(rc == MFS_E_INVAL && q == NULL && err.msg[0] != '\0');
		free(name);
		return 0;
	}
	check(q != NULL);
	for (plus = 0; plus <= 1; plus++) {
		check(mfs_query_imap(q, MFS_QUERY_UTF8, plus, &w, &err) ==
		      MFS_OK);
		check_wire(&w);
		mfs_query_wire_free(&w);
	}
	rc = mfs_query_imap(q, MFS_QUERY_LATIN1, 0, &w, &err);
	check(rc == MFS_OK || rc == MFS_E_INVAL);
	if (rc == MFS_OK) {
		check_wire(&w);
		mfs_query_wire_free(&w);
	}
	if (mfs_query_listing_only(q)) {
		memset(&m, 0, sizeof(m));
		m.from = name;
		m.subject = "";
		m.date = (time_t)size * 86400;
		m.size = size;
		m.flags = (unsigned)size & 0x1f;
		rc = mfs_query_match(q, &m);
		check(rc == 0 || rc == 1);
	}
	{
		struct mfs_query_text t = {name, "", NULL, name, name, name};

		memset(&m, 0, sizeof(m));
		m.date = (time_t)size * 86400;
		rc = mfs_query_match_text(q, &m, &t);
		check(rc == 0 || rc == 1);
	}
	mfs_query_free(q);
	free(name);
	return 0;
}
