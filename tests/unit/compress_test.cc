// compress_test.cc - the stream's compression layer (RFC 4978
// COMPRESS=DEFLATE, tls.h): round trips in odd-sized chunks and of large
// data, the switch after the server's reply, and hostile compressed input
// from the peer (corrupt, ended, endless empty blocks, bombs).
//
// The peer is the other end of a socketpair, with zlib of its own: raw
// deflate, window bits -15, as a server that offers COMPRESS=DEFLATE.
#include <gtest/gtest.h>

#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include <random>
#include <string>
#include <thread>
#include <vector>

extern "C" {
#include "tls.h"
}

namespace
{

double now_s()
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

// The peer's half of the compression: a deflater and an inflater.
struct Peer {
	z_stream def = {};
	z_stream inf = {};

	Peer()
	{
		if (deflateInit2(&def, 6, Z_DEFLATED, -15, 8,
				 Z_DEFAULT_STRATEGY) != Z_OK ||
		    inflateInit2(&inf, -15) != Z_OK)
			abort();
	}
	~Peer()
	{
		deflateEnd(&def);
		inflateEnd(&inf);
	}

	// data deflated, ending with a flush of kind `flush`
	std::string deflate_chunk(const std::string &data,
				  int flush = Z_SYNC_FLUSH)
	{
		std::string out;
		unsigned char buf[16384];

		def.next_in = (Bytef *)data.data();
		def.avail_in = (uInt)data.size();
		do {
			def.next_out = buf;
			def.avail_out = sizeof(buf);
			int r = ::deflate(&def, flush);
			if (r != Z_OK && r != Z_BUF_ERROR && r != Z_STREAM_END)
				abort();
			out.append((char *)buf, sizeof(buf) - def.avail_out);
		} while (def.avail_out == 0);
		return out;
	}

	// what the client's bytes inflate to; -1 in *rc on a corrupt stream
	std::string inflate_chunk(const std::string &data, int *rc = nullptr)
	{
		std::string out;
		unsigned char buf[16384];

		inf.next_in = (Bytef *)data.data();
		inf.avail_in = (uInt)data.size();
		if (rc != nullptr)
			*rc = 0;
		do {
			inf.next_out = buf;
			inf.avail_out = sizeof(buf);
			int r = ::inflate(&inf, Z_SYNC_FLUSH);
			if (r != Z_OK && r != Z_BUF_ERROR) {
				if (rc != nullptr)
					*rc = -1;
				break;
			}
			out.append((char *)buf, sizeof(buf) - inf.avail_out);
		} while (inf.avail_out == 0 || inf.avail_in > 0);
		return out;
	}
};

void send_all(int fd, const std::string &data)
{
	size_t off = 0;
	while (off < data.size()) {
		ssize_t w = send(fd, data.data() + off, data.size() - off,
				 MSG_NOSIGNAL);
		if (w <= 0)
			return;
		off += (size_t)w;
	}
}

// Whatever fd has now, waiting at most ms for the first byte.
std::string recv_some(int fd, int ms = 2000)
{
	std::string out;
	char buf[65536];
	struct pollfd p = {fd, POLLIN, 0};

	while (poll(&p, 1, out.empty() ? ms : 50) > 0) {
		ssize_t n = recv(fd, buf, sizeof(buf), 0);
		if (n <= 0)
			break;
		out.append(buf, (size_t)n);
	}
	return out;
}

// A compressed plain stream over one end of a socketpair; the test owns
// the other end.
struct Pair {
	int peer = -1;
	mailstream *s = nullptr;

	explicit Pair(int timeout = 5, bool imap = false)
	{
		int sv[2];
		struct mfs_err err;

		if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
			abort();
		peer = sv[1];
		s = mfs_stream_plain(sv[0], timeout, &err);
		if (s == nullptr)
			abort();
		if (imap)
			mfs_stream_imap_literals(s);
		if (mfs_stream_compress(s, &err) != MFS_OK)
			abort();
	}
	~Pair()
	{
		if (s != nullptr)
			mailstream_close(s);
		close(peer);
	}
};

std::string random_text(size_t n, unsigned seed)
{
	std::mt19937 rng(seed);
	const char *words[] = {"From: ", "Subject: ", "alice ", "bob ",
			       "the ", "budget ", "Q4 ", "\r\n", "=?UTF-8?B?",
			       "report ", "2026 "};
	std::string out;
	while (out.size() < n) {
		if (rng() % 8 == 0)
			out += (char)(rng() % 256); // some binary too
		out += words[rng() % (sizeof(words) / sizeof(*words))];
	}
	out.resize(n);
	return out;
}

// Reads exactly n bytes from s (or fewer when it fails).
std::string read_n(mailstream *s, size_t n)
{
	std::string out;
	char buf[5000];
	while (out.size() < n) {
		size_t want = n - out.size() < sizeof(buf) ? n - out.size()
							    : sizeof(buf);
		ssize_t r = mailstream_read(s, buf, want);
		if (r <= 0)
			break;
		out.append(buf, (size_t)r);
	}
	return out;
}

const size_t ODD[] = {1, 7, 13, 255, 4093, 8191, 8193, 3, 65537, 17};

// Writes in odd-sized chunks, each flushed: after each flush the peer can
// inflate everything written so far (a sync flush after each write).
TEST(Compress, ClientWritesInOddChunks)
{
	Pair p;
	Peer peer;
	std::string data = random_text(120000, 1), got;
	size_t off = 0;

	for (size_t i = 0; off < data.size(); i++) {
		size_t n = ODD[i % (sizeof(ODD) / sizeof(*ODD))];
		if (n > data.size() - off)
			n = data.size() - off;
		std::thread w([&] {
			ASSERT_EQ((ssize_t)n,
				  mailstream_write(p.s, data.data() + off, n));
			ASSERT_EQ(0, mailstream_flush(p.s));
		});
		std::string part;
		while (part.size() < n) {
			std::string more = peer.inflate_chunk(recv_some(p.peer));
			ASSERT_FALSE(more.empty()) << "chunk " << i;
			part += more;
		}
		w.join();
		EXPECT_EQ(data.substr(off, n), part) << "chunk " << i;
		got += part;
		off += n;
	}
	EXPECT_EQ(data, got);
	EXPECT_EQ(1, mfs_stream_compressed(p.s));
}

// The peer sends in odd-sized compressed chunks, some split in the middle
// of a deflate block; the stream reads the exact bytes.
TEST(Compress, PeerSendsInOddChunks)
{
	Pair p;
	Peer peer;
	std::string data = random_text(150000, 2);
	std::thread w([&] {
		size_t off = 0;
		for (size_t i = 0; off < data.size(); i++) {
			size_t n = ODD[i % (sizeof(ODD) / sizeof(*ODD))];
			if (n > data.size() - off)
				n = data.size() - off;
			std::string z = peer.deflate_chunk(data.substr(off, n));
			// split the compressed bytes too
			send_all(p.peer, z.substr(0, z.size() / 2));
			usleep(200);
			send_all(p.peer, z.substr(z.size() / 2));
			off += n;
		}
	});
	std::string got = read_n(p.s, data.size());
	w.join();
	EXPECT_EQ(data.size(), got.size());
	EXPECT_TRUE(data == got);
}

// Large data both ways at once: 16 MiB each, text that compresses and
// random bytes that do not.
TEST(Compress, LargeDataBothWays)
{
	Pair p(10);
	Peer peer;
	std::string down = random_text(8 << 20, 3);
	std::string up = random_text(8 << 20, 4);
	std::mt19937 rng(5);
	for (int i = 0; i < (8 << 20); i++) {
		down += (char)rng();
		up += (char)rng();
	}
	std::string peer_got;
	size_t wire_up = 0;
	std::thread server([&] {
		// the peer sends everything while reading what comes
		std::thread sender([&] {
			for (size_t off = 0; off < down.size(); off += 100000)
				send_all(p.peer, peer.deflate_chunk(
						     down.substr(off, 100000)));
		});
		while (peer_got.size() < up.size()) {
			std::string z = recv_some(p.peer, 5000);
			if (z.empty())
				break;
			wire_up += z.size();
			peer_got += peer.inflate_chunk(z);
		}
		sender.join();
	});
	std::thread client_writer([&] {
		for (size_t off = 0; off < up.size(); off += 30011) {
			size_t n = std::min((size_t)30011, up.size() - off);
			ASSERT_EQ((ssize_t)n,
				  mailstream_write(p.s, up.data() + off, n));
		}
		ASSERT_EQ(0, mailstream_flush(p.s));
	});
	std::string got = read_n(p.s, down.size());
	client_writer.join();
	server.join();
	EXPECT_TRUE(got == down) << got.size() << " of " << down.size();
	EXPECT_TRUE(peer_got == up) << peer_got.size() << " of " << up.size();
	// the text half compressed: fewer bytes went over the wire
	EXPECT_LT(wire_up, up.size() * 3 / 4);
}

// The server's OK and its first compressed bytes in one segment: with byte
// reads, libetpan's buffer ends at the reply's line end, and what follows
// is read inflated.
TEST(Compress, SwitchAfterTheReplyLine)
{
	int sv[2];
	struct mfs_err err;
	Peer peer;

	ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
	mailstream *s = mfs_stream_plain(sv[0], 5, &err);
	ASSERT_NE(nullptr, s);
	mfs_stream_imap_literals(s);
	mfs_stream_byte_reads(s, 1);
	send_all(sv[1], "A3 OK DEFLATE active\r\n" +
			    peer.deflate_chunk("* 4 EXISTS\r\n"));
	MMAPString *line = mmap_string_new("");
	ASSERT_NE(nullptr, mailstream_read_line(s, line));
	EXPECT_STREQ("A3 OK DEFLATE active\r\n", line->str);
	EXPECT_EQ(0u, s->read_buffer_len);
	ASSERT_EQ(MFS_OK, mfs_stream_compress(s, &err)) << err.msg;
	ASSERT_NE(nullptr, mailstream_read_line(s, line));
	EXPECT_STREQ("* 4 EXISTS\r\n", line->str);

	// never twice
	EXPECT_EQ(MFS_E_PROTO, mfs_stream_compress(s, &err));
	EXPECT_STREQ("compression: already on", err.msg);
	mmap_string_free(line);
	mailstream_close(s);
	close(sv[1]);
}

// Bytes read ahead, or not yet sent, refuse the switch.
TEST(Compress, DataWaitingRefusesTheSwitch)
{
	int sv[2];
	struct mfs_err err;
	char c;

	ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
	mailstream *s = mfs_stream_plain(sv[0], 5, &err);
	ASSERT_NE(nullptr, s);
	send_all(sv[1], "A3 OK go\r\nmore");
	ASSERT_EQ(1, mailstream_read(s, &c, 1)); // buffers the rest
	EXPECT_EQ(MFS_E_PROTO, mfs_stream_compress(s, &err));
	EXPECT_EQ(0, mfs_stream_compressed(s));
	mailstream_close(s);
	close(sv[1]);

	ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
	s = mfs_stream_plain(sv[0], 5, &err);
	ASSERT_NE(nullptr, s);
	ASSERT_EQ(3, mailstream_write(s, "abc", 3));
	EXPECT_EQ(MFS_E_PROTO, mfs_stream_compress(s, &err));
	mailstream_close(s);
	close(sv[1]);
}

// Expects the next read of s to fail at once with a refusal that
// contains `why`, and every later read and write to fail too.
void expect_refused(Pair &p, const char *why)
{
	char buf[4096];
	double t0 = now_s();
	ssize_t n;

	while ((n = mailstream_read(p.s, buf, sizeof(buf))) > 0)
		;
	EXPECT_EQ(-1, n);
	EXPECT_LT(now_s() - t0, 2.0);
	const char *r = mfs_stream_refusal(p.s);
	ASSERT_NE(nullptr, r);
	EXPECT_NE(nullptr, strstr(r, why)) << r;
	EXPECT_EQ(0, mfs_stream_timed_out(p.s));
	EXPECT_EQ(-1, mailstream_read(p.s, buf, sizeof(buf)));
	EXPECT_EQ(3, mailstream_write(p.s, "abc", 3));
	EXPECT_EQ(-1, mailstream_flush(p.s));
}

TEST(Compress, CorruptStreamIsAnError)
{
	Pair p;
	send_all(p.peer, std::string("\xff\xfe\xfd garbage \x07", 13));
	expect_refused(p, "sent a corrupt compressed stream (inflate failed");
}

TEST(Compress, GoodBytesThenCorruptOnes)
{
	Pair p;
	Peer peer;
	char buf[64];

	send_all(p.peer, peer.deflate_chunk("* 1 EXISTS\r\n"));
	EXPECT_EQ(12, mailstream_read(p.s, buf, sizeof(buf)));
	// a stored block whose length check fails
	send_all(p.peer, std::string("\x00\x05\x00\x05\x00hello", 10));
	expect_refused(p, "corrupt compressed stream");
}

// Random bytes of every seed: an error or data, never a crash or a hang.
TEST(Compress, RandomGarbageNeverCrashes)
{
	for (unsigned seed = 0; seed < 200; seed++) {
		Pair p(1);
		std::mt19937 rng(seed);
		std::string junk;
		for (int i = 0; i < 2000; i++)
			junk += (char)rng();
		send_all(p.peer, junk);
		shutdown(p.peer, SHUT_WR);
		char buf[4096];
		double t0 = now_s();
		while (mailstream_read(p.s, buf, sizeof(buf)) > 0)
			;
		EXPECT_LT(now_s() - t0, 1.5) << seed;
	}
}

// RFC 4978 has no end of compression: a server that ends its deflate
// stream is refused.
TEST(Compress, EndedStreamIsAnError)
{
	Pair p;
	Peer peer;
	send_all(p.peer, peer.deflate_chunk("* BYE\r\n", Z_FINISH));
	expect_refused(p, "it ended");
}

// The peer closes in the middle of a deflate block: an error, no hang.
TEST(Compress, TruncatedStreamIsAnError)
{
	Pair p;
	Peer peer;
	std::string z = peer.deflate_chunk(random_text(5000, 6));
	send_all(p.peer, z.substr(0, z.size() / 2));
	shutdown(p.peer, SHUT_WR);
	std::string got = read_n(p.s, 5000);
	EXPECT_LT(got.size(), 5000u);
	char c;
	EXPECT_EQ(-1, mailstream_read(p.s, &c, 1));
}

// Empty deflate blocks, sent without end: they inflate to nothing, and
// the read still ends after the timeout, as a timeout.
TEST(Compress, EmptyBlocksKeepTheTimeout)
{
	Pair p(1);
	Peer peer;
	bool stop = false;
	std::thread w([&] {
		double t0 = now_s();
		while (!stop && now_s() - t0 < 5) {
			send_all(p.peer, peer.deflate_chunk(""));
			usleep(1000);
		}
	});
	char buf[64];
	double t0 = now_s();
	EXPECT_EQ(-1, mailstream_read(p.s, buf, sizeof(buf)));
	double took = now_s() - t0;
	stop = true;
	w.join();
	EXPECT_GE(took, 0.9);
	EXPECT_LT(took, 2.0);
	EXPECT_EQ(1, mfs_stream_timed_out(p.s));
}

// A few KiB that inflate to 64 MiB: read in bounded pieces, and an IMAP
// stream refuses the response at its bound on the inflated bytes.
TEST(Compress, BombIsBoundedByTheImapReader)
{
	Pair p(5, true);
	Peer peer;
	std::thread w([&] {
		send_all(p.peer, peer.deflate_chunk("* 1 FETCH (ENVELOPE (\""));
		std::string a(1 << 20, 'a');
		for (int i = 0; i < 64; i++)
			send_all(p.peer, peer.deflate_chunk(a, Z_NO_FLUSH));
		send_all(p.peer, peer.deflate_chunk(""));
		shutdown(p.peer, SHUT_WR);
	});
	char buf[8192];
	size_t got = 0;
	ssize_t n;
	while ((n = mailstream_read(p.s, buf, sizeof(buf))) > 0) {
		EXPECT_LE((size_t)n, sizeof(buf));
		got += (size_t)n;
	}
	w.join();
	EXPECT_LE(got, (size_t)16 << 20);
	ASSERT_NE(nullptr, mfs_stream_refusal(p.s));
	EXPECT_STREQ("sent a response of more than 16777216 bytes",
		     mfs_stream_refusal(p.s));
}

// Inflated bytes the reader has not taken yet count as pending: a wait
// for the server must not poll the socket then.
TEST(Compress, HeldBytesArePending)
{
	Pair p;
	Peer peer;
	char buf[4];

	EXPECT_EQ(0, mfs_stream_pending(p.s));
	send_all(p.peer, peer.deflate_chunk("* 1 EXISTS\r\n* 2 EXISTS\r\n"));
	ASSERT_EQ(4, mailstream_low_read(mailstream_get_low(p.s), buf, 4));
	EXPECT_EQ(1, mfs_stream_pending(p.s));
	char rest[64];
	ASSERT_EQ(20,
		  mailstream_low_read(mailstream_get_low(p.s), rest, 64));
	EXPECT_EQ(0, mfs_stream_pending(p.s));
}

} // namespace
