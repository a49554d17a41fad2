// fuzz-sources: src/outmsg.c src/header.c src/names.c src/error.c src/base64.c
/*
 * outmsg_fuzz.c - libFuzzer target for src/outmsg.c.
 *
 * Parses arbitrary bytes as a message written by a user and, when that
 * succeeds, prepares it for every server capability set. Aborts when an
 * invariant breaks: a parsed message has a sender and a recipient; the
 * prepared output has only CRLF line ends, no Bcc field, and without
 * SMTPUTF8 and 8BITMIME no byte >= 0x80.
 *
 * Build and run:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Isrc \
 *     tests/fuzz/outmsg_fuzz.c src/outmsg.c src/names.c src/error.c \
 *     -o /tmp/outmsg_fuzz
 *   /tmp/outmsg_fuzz -max_total_time=120
 */
#include "outmsg.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static void check(int ok)
{
	if (!ok)
		abort();
}

static void check_output(int fd, off_t size, unsigned caps)
{
	char *p = size ? mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0) : NULL;

	if (!size)
		return;
	check(p != MAP_FAILED);
	for (off_t i = 0; i < size; i++) {
		if (p[i] == '\n')
			check(i > 0 && p[i - 1] == '\r');
		if (caps == 0)
			check((unsigned char)p[i] < 0x80);
	}
	/* the header block ends at the first empty line */
	for (off_t i = 0; i + 3 < size; i++) {
		if (memcmp(p + i, "\r\n\r\n", 4) == 0)
			break;
		if (i == 0 || p[i - 1] == '\n')
			check(strncasecmp(p + i, "bcc:", 4) != 0);
	}
	munmap(p, size);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const unsigned caps[] = {
	    0, MFS_OUTMSG_8BITMIME, MFS_OUTMSG_SMTPUTF8,
	    MFS_OUTMSG_8BITMIME | MFS_OUTMSG_SMTPUTF8};
	struct mfs_outmsg_opts opts = {NULL, NULL, 1};
	struct mfs_outmsg msg;
	struct mfs_err err;
	int in = memfd_create("in", 0);

	check(in >= 0);
	check(write(in, data, size) == (ssize_t)size);
	if (mfs_outmsg_parse(in, &opts, &msg, &err) == MFS_OK) {
		check(msg.sender && msg.nrcpts > 0 && msg.message_id);
		for (size_t i = 0; i < 4; i++) {
			int out = memfd_create("out", 0);
			off_t n = 0;

			check(out >= 0);
			if (mfs_outmsg_write(&msg, in, caps[i], out, &n,
					     &err) == MFS_OK)
				check_output(out, n, caps[i]);
			else
				check(err.code == MFS_E_INVAL);
			close(out);
		}
	} else {
		check(err.code == MFS_E_INVAL && err.msg[0]);
	}
	mfs_outmsg_free(&msg);
	close(in);
	return 0;
}
