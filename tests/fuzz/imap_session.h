/*
 * imap_session.h - what the IMAP fuzz targets share: the driver itself
 * (src/imap.c, included so that its static functions run unchanged) and a
 * libetpan session reading what a fake server has already said through
 * mailfs's own plain stream (tls.c).
 */
#ifndef MAILFS_FUZZ_IMAP_SESSION_H
#define MAILFS_FUZZ_IMAP_SESSION_H

#include "../../src/imap.c"
#include "server_said.h"

#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>

/* Bigger inputs would not fit the socket buffer written before reading. */
#define FUZZ_MAX 65536

/* libetpan 1.9.4 itself leaks parts of a response when
 * mailimap_parse_response fails on some inputs; that is not the driver's to
 * fix. libetpan has no frame pointers: the suppression needs full unwinding
 * to see that frame. An allocation above 2 GiB is a failure, also when the
 * seeds are replayed without libFuzzer (replay.c). */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
	return "fast_unwind_on_malloc=0:max_allocation_size_mb=2048";
}

const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
	return "leak:mailimap_parse_response\n"
	       "leak:mailimap_greeting_parse\n";
}

static void check(int ok)
{
	if (!ok)
		abort();
}

/* A session whose server has said everything in data and closed its side
 * for writing; NULL when the greeting already fails. */
static mailimap *session_over(const uint8_t *data, size_t size)
{
	struct mfs_err err;
	mailstream *s;
	mailimap *imap;
	int fd = server_said(data, size), r;

	s = mfs_stream_plain(fd, 1, &err);
	if (s == NULL) {
		close(peer);
		peer = -1;
		return NULL;
	}
	mfs_stream_imap_literals(s); /* as imap_open() does */
	imap = mailimap_new(0, NULL);
	check(imap != NULL);
	mailimap_set_timeout(imap, 1);
	r = mailimap_connect(imap, s);
	if (r != MAILIMAP_NO_ERROR_NON_AUTHENTICATED &&
	    r != MAILIMAP_NO_ERROR_AUTHENTICATED) {
		mailimap_free(imap);
		close(peer);
		peer = -1;
		return NULL;
	}
	return imap;
}

#endif
