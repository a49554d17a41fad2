// Unit tests for sentq.c: the Sent-copy queue on its own, without SMTP.
// The spool's own use of it (copies of accepted messages, stop and close)
// is tested in spool_test.cc.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <vector>

extern "C" {
#include "sentq.h"
}

namespace fs = std::filesystem;

namespace
{

class SentQ : public ::testing::Test
{
      protected:
	fs::path dir;
	int dirfd = -1;
	struct mfs_sentq *q = nullptr;
	std::mutex mu;
	std::condition_variable cv;
	std::vector<std::string> names, bodies;
	int fail = 0; // calls still to fail

	void SetUp() override
	{
		char tmpl[] = "/tmp/mailfs-sentq-XXXXXX";

		ASSERT_NE(nullptr, mkdtemp(tmpl));
		dir = tmpl;
		dirfd = open(tmpl, O_RDONLY | O_DIRECTORY);
		ASSERT_GE(dirfd, 0);
		open_queue();
	}
	void TearDown() override
	{
		mfs_sentq_close(q);
		close(dirfd);
		std::error_code ec;
		fs::remove_all(dir, ec);
	}
	static int on_sent(void *arg, const char *name, int fd, off_t size)
	{
		auto *t = (SentQ *)arg;
		std::string body((size_t)size, '\0');

		if (pread(fd, &body[0], body.size(), 0) != size)
			return -1;
		std::lock_guard<std::mutex> g(t->mu);
		if (t->fail > 0) {
			t->fail--;
			return 1;
		}
		t->names.push_back(name);
		t->bodies.push_back(body);
		t->cv.notify_all();
		return 0;
	}
	void open_queue()
	{
		struct mfs_sentq_opts o = {on_sent, this, 60, 3600, 3600};
		struct mfs_err err = {};

		mfs_sentq_close(q);
		q = nullptr;
		ASSERT_EQ(MFS_OK, mfs_sentq_open(dirfd, dir.c_str(), &o, &q,
						 &err))
		    << err.msg;
	}
	// Keeps body as copy id (ids sort by time: a hex time first).
	void keep(const std::string &id, const std::string &name,
		  const std::string &body)
	{
		int fd = open(dir.c_str(), O_TMPFILE | O_RDWR, 0600);

		ASSERT_GE(fd, 0);
		ASSERT_EQ((ssize_t)body.size(),
			  write(fd, body.data(), body.size()));
		ASSERT_EQ(0, mfs_sentq_keep(q, id.c_str(), name.c_str(), fd,
					    (off_t)body.size()));
		close(fd);
	}
	size_t files()
	{
		size_t n = 0;

		for (auto &e : fs::directory_iterator(dir / ".sent")) {
			(void)e;
			n++;
		}
		return n;
	}
};

// An id as the spool makes them: hex time, pid, counter.
std::string id(int n)
{
	char buf[MFS_SPOOL_ID_LEN];

	snprintf(buf, sizeof(buf), "%016llx%04x%04x",
		 (long long)time(nullptr), 1u, (unsigned)n);
	return buf;
}

} // namespace

TEST_F(SentQ, MadeInOrderOfIdsThenDeleted)
{
	struct stat st;

	ASSERT_EQ(0, stat((dir / ".sent").c_str(), &st));
	EXPECT_EQ(0700u, st.st_mode & 07777);
	keep(id(2), "second", "two\r\n");
	keep(id(1), "first\nline", "one\r\n");
	EXPECT_EQ(4u, files()); // ID.name and ID.eml each
	EXPECT_EQ(2, mfs_sentq_run(q));
	EXPECT_EQ((std::vector<std::string>{"first\nline", "second"}), names);
	EXPECT_EQ((std::vector<std::string>{"one\r\n", "two\r\n"}), bodies);
	EXPECT_EQ(0u, files());
	EXPECT_EQ(0, mfs_sentq_run(q));
}

// A failure keeps the copy on disk and waits backoff_min before the next
// try: nothing after it is made meanwhile.
TEST_F(SentQ, FailureKeepsTheCopyForLater)
{
	fail = 1;
	keep(id(1), "a", "A");
	keep(id(2), "b", "B");
	EXPECT_EQ(0, mfs_sentq_run(q));
	EXPECT_EQ(0, mfs_sentq_run(q)); // not due for 60 s
	EXPECT_TRUE(names.empty());
	EXPECT_EQ(4u, files());
}

// Copies left on disk are loaded by the next open, with their names; what
// a stop half way left is dropped.
TEST_F(SentQ, ReopenLoadsWhatWasLeft)
{
	fail = 1;
	keep(id(1), "left%name", "kept\r\n");
	EXPECT_EQ(0, mfs_sentq_run(q));
	std::ofstream(dir / ".sent" / (id(7) + ".name")) << "name: lone\n";
	std::ofstream(dir / ".sent" / (id(8) + ".eml.new")) << "half";
	open_queue();
	EXPECT_EQ(2u, files());
	EXPECT_EQ(1, mfs_sentq_run(q));
	EXPECT_EQ(std::vector<std::string>{"left%name"}, names);
	EXPECT_EQ(std::vector<std::string>{"kept\r\n"}, bodies);
	EXPECT_EQ(0u, files());
}

// The thread makes a copy kept after it started; stop then ends it at once.
TEST_F(SentQ, ThreadMakesCopiesAndStops)
{
	ASSERT_EQ(0, mfs_sentq_start(q));
	keep(id(1), "t", "T");
	{
		std::unique_lock<std::mutex> g(mu);
		ASSERT_TRUE(cv.wait_for(g, std::chrono::seconds(10),
					[this] { return names.size() == 1; }));
	}
	EXPECT_EQ(0, mfs_sentq_stop(q, 5));
	EXPECT_EQ(std::vector<std::string>{"t"}, names);
}

// Another user's .sent is refused.
TEST_F(SentQ, ForeignDirectoryIsRefused)
{
	struct mfs_sentq_opts o = {on_sent, this, 60, 3600, 3600};
	struct mfs_sentq *other = nullptr;
	struct mfs_err err = {};

	if (chown((dir / ".sent").c_str(), 65534, 65534) != 0)
		GTEST_SKIP() << "cannot chown (not root)";
	EXPECT_EQ(MFS_E_ACCESS,
		  mfs_sentq_open(dirfd, dir.c_str(), &o, &other, &err));
	EXPECT_EQ(nullptr, other);
	EXPECT_NE(nullptr, strstr(err.msg, "/.sent")) << err.msg;
	EXPECT_NE(nullptr, strstr(err.msg, "uid 65534")) << err.msg;
}
