/*
 * imap_session.h - what the IMAP fuzz targets share: the driver itself
 * (src/imap.c, included so that its static functions run unchanged) and a
 * libetpan session reading what a fake server has already said through
 * mailfs's own plain stream (tls.c).
 */
#ifndef MAILFS_FUZZ_IMAP_SESSION_H
#define MAILFS_FUZZ_IMAP_SESSION_H

#include "../../src/imap.c"

#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>

/* Bigger inputs would not fit the socket buffer written before reading. */
#define FUZZ_MAX 65536

/* The server's end of the current session's socketpair. */
static int peer = -1;

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
	int sv[2], r;
	size_t off = 0;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
		abort();
	while (off < size) {
		ssize_t w = send(sv[1], data + off, size - off, MSG_NOSIGNAL);

		check(w > 0);
		off += (size_t)w;
	}
	shutdown(sv[1], SHUT_WR);
	/* sv[1] stays open (and unread) while the session lives, so that
	 * the driver's commands can be written */
	peer = sv[1];
	s = mfs_stream_plain(sv[0], 1, &err);
	if (s == NULL) {
		close(sv[1]);
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
		close(sv[1]);
		peer = -1;
		return NULL;
	}
	return imap;
}

#endif
