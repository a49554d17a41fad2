/*
 * server_said.h - what the protocol fuzz targets share: a socketpair whose
 * far end plays a server that has said everything at once.
 */
#ifndef MAILFS_FUZZ_SERVER_SAID_H
#define MAILFS_FUZZ_SERVER_SAID_H

#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

/* The server's end of the current session's socketpair. */
static int peer = -1;

/* Returns the client's end of a socketpair whose server end (peer) has
 * sent data[0, size) and closed for writing. The server end stays open,
 * and unread, while the session lives, so that the driver's commands can
 * be written. Aborts when the pair cannot be made or written. */
static int server_said(const uint8_t *data, size_t size)
{
	int sv[2];
	size_t off = 0;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
		abort();
	while (off < size) {
		ssize_t w = send(sv[1], data + off, size - off, MSG_NOSIGNAL);

		if (w <= 0)
			abort();
		off += (size_t)w;
	}
	shutdown(sv[1], SHUT_WR);
	peer = sv[1];
	return sv[0];
}

#endif
