// fuzz-sources: src/names.c src/error.c src/base64.c
/*
 * names_fuzz.c - libFuzzer target for src/names.c.
 *
 * Runs the decoders and name builders on arbitrary bytes and abort()s when a
 * documented invariant breaks: every result valid UTF-8; names at most
 * MFS_NAME_MAX bytes, without '/' or control characters, never "." or "..";
 * modified UTF-7 decoding canonical (encode(decode(x)) == x); a message
 * directory name ends with its id and gives it back.
 *
 * Build and run:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Isrc \
 *     tests/fuzz/names_fuzz.c src/names.c src/error.c -o /tmp/names_fuzz
 *   /tmp/names_fuzz -max_total_time=60
 */
#include "names.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void check(int ok)
{
	if (!ok)
		abort();
}

static void check_utf8(const char *s)
{
	check(s != NULL);
	check(mfs_utf8_valid(s, strlen(s)));
}

/* A name: valid UTF-8, 1..MFS_NAME_MAX bytes, no '/', no C0/DEL/C1. */
static void check_name(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t len;

	check_utf8(s);
	len = strlen(s);
	check(len >= 1 && len <= MFS_NAME_MAX);
	check(strcmp(s, ".") != 0 && strcmp(s, "..") != 0);
	for (; *p; p++) {
		check(*p != '/' && *p >= 0x20 && *p != 0x7F);
		/* C1 controls are U+0080..U+009F: C2 80..C2 9F */
		if (p[0] == 0xC2)
			check(p[1] < 0x80 || p[1] > 0x9F);
	}
}

static void fuzz_mutf7(const char *s)
{
	char *dec, *enc, *back;

	errno = 0;
	dec = mfs_mutf7_decode(s);
	if (dec == NULL) {
		check(errno == EINVAL || errno == ENOMEM);
	} else {
		check_utf8(dec);
		enc = mfs_mutf7_encode(dec);
		check(enc != NULL && strcmp(enc, s) == 0);
		free(enc);
		free(dec);
	}
	if (!mfs_utf8_valid(s, strlen(s)))
		return;
	enc = mfs_mutf7_encode(s);
	check(enc != NULL);
	back = mfs_mutf7_decode(enc);
	check(back != NULL && strcmp(back, s) == 0);
	free(back);
	free(enc);
}

static void fuzz_names(const char *s, int n)
{
	char *name = mfs_name_sanitize(s), *uniq;

	check_name(name);
	uniq = mfs_name_unique(name, n);
	check_name(uniq);
	free(uniq);
	free(name);
}

static void fuzz_dirname(time_t date, const char *from, const char *subject,
			 const char *id)
{
	char *d = mfs_msg_dirname(date, from, subject, id);
	char got[MFS_MSG_ID_MAX + 1];
	size_t idlen = strlen(id), dlen;
	size_t i;

	if (idlen == 0 || idlen > MFS_MSG_ID_MAX) {
		check(d == NULL && errno == EINVAL);
		return;
	}
	check_name(d);
	dlen = strlen(d);
	check(dlen > idlen + 2);
	check(memcmp(d + dlen - idlen - 3, " \xC2\xB7", 3) == 0);
	check(mfs_msg_dirname_id(d, got, sizeof(got)) == 0);
	check(strlen(got) == idlen);
	for (i = 0; i < idlen; i++) {
		unsigned char c = id[i];

		if (c > 0x20 && c < 0x7F && c != '/')
			check(got[i] == id[i]);
		else
			check(got[i] == '_');
	}
	free(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *buf, *parts[3], *p, *s;
	size_t plen[3];
	size_t i, n;
	uint64_t date = 0;

	/* whole input with its NUL bytes */
	s = mfs_utf8_clean((const char *)data, size);
	check_utf8(s);
	check(mfs_utf8_valid((const char *)data, size) ==
	      (strlen(s) == size && memcmp(s, data, size) == 0));
	free(s);
	s = mfs_text_to_utf8(size > 0 && data[0] & 1 ? "shift_jis" : "koi8-r",
			     (const char *)data, size, &n);
	check(s != NULL && strlen(s) == n && mfs_utf8_valid(s, n));
	free(s);

	buf = malloc(size + 1);
	if (buf == NULL)
		return 0;
	memcpy(buf, data, size);
	buf[size] = '\0';

	s = mfs_hdr_decode(buf);
	check_utf8(s);
	fuzz_names(s, (int)(size % 1000));
	free(s);
	s = mfs_rfc2231_decode(buf);
	check_utf8(s);
	free(s);
	fuzz_mutf7(buf);
	fuzz_names(buf, 2);
	mfs_parse_date(buf);
	mfs_parse_imap_date(buf);

	/* NUL bytes split the input into sender, subject and id */
	p = buf;
	for (i = 0; i < 3; i++) {
		parts[i] = p;
		plen[i] = strlen(p);
		if (p + plen[i] < buf + size)
			p += plen[i] + 1;
		else
			p += plen[i];
	}
	for (i = 0; i < size && i < sizeof(date); i++)
		date = (date << 8) | data[i];
	fuzz_dirname((time_t)date, parts[0], parts[1], parts[2]);
	fuzz_dirname((time_t)size, parts[1], parts[0], "4711");
	free(buf);
	return 0;
}
