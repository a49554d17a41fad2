// The journal of offline writes (src/journal.c) over a store in memory:
// what it keeps, what it shows before the replay, the order of the replay,
// and that nothing is lost or doubled when a mount dies mid-way.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "fake_store.h"

extern "C" {
#include "journal.h"
}

namespace
{

const char *kMsg = "From: Offline <o@example.test>\r\n"
		   "Subject: written offline\r\n"
		   "Date: Thu, 1 Oct 2026 10:00:00 +0000\r\n"
		   "\r\n"
		   "body\r\n";
const time_t kMsgDate = 1790848800; /* its Date header */

std::string read_file(const std::string &path)
{
	std::ifstream f(path);
	std::stringstream s;
	s << f.rdbuf();
	return s.str();
}

class Journal : public ::testing::Test
{
      protected:
	void SetUp() override
	{
		char tmpl[] = "/tmp/mfs-journal-XXXXXX";
		ASSERT_NE(mkdtemp(tmpl), nullptr);
		base = tmpl;
		dir = base + "/.journal";
		a1 = fake.add("A", "From: x\r\nSubject: one\r\n\r\n1\r\n", 100,
			      "x", "one");
		a2 = fake.add("A", "From: x\r\nSubject: two\r\n\r\n2\r\n", 200,
			      "x", "two");
		a3 = fake.add("A", "From: x\r\nSubject: three\r\n\r\n3\r\n",
			      300, "x", "three");
		fake.folder("B");
		open_journal();
	}
	void TearDown() override
	{
		close_journal();
		std::string cmd = "rm -rf '" + base + "'";
		ASSERT_EQ(system(cmd.c_str()), 0);
	}
	void open_journal()
	{
		struct mfs_err err;
		j = mfs_journal_new(&fake.st, dir.c_str(), &err);
		ASSERT_NE(j, nullptr) << err.msg;
	}
	void close_journal()
	{
		if (j != nullptr)
			j->ops->free(j); /* the fake's free does nothing */
		j = nullptr;
	}
	/* The server is out of reach for writes: each of the first write
	 * ops fails as MFS_E_OFFLINE, and the journal keeps it. */
	void offline()
	{
		for (const char *op : {"create", "remove", "rename", "append",
				       "move", "expunge", "store_flags"})
			fake.fail(op, MFS_E_OFFLINE, -1);
	}
	void online() { fake.heal(); }
	void replay_all()
	{
		ASSERT_EQ(mfs_journal_start(j, nullptr), 0);
		for (int i = 0; i < 200 && !mfs_journal_idle(j); i++)
			std::this_thread::sleep_for(std::chrono::milliseconds(50));
		ASSERT_TRUE(mfs_journal_idle(j)) << status();
	}
	std::vector<uint32_t> shown(const char *folder)
	{
		struct mfs_store_msg *msgs = nullptr;
		struct mfs_err err;
		uint32_t validity = 0;
		size_t n = 0;
		std::vector<uint32_t> out;
		EXPECT_EQ(j->ops->index(j, folder, &validity, &msgs, &n, &err),
			  MFS_OK)
		    << err.msg;
		for (size_t i = 0; i < n; i++)
			out.push_back(msgs[i].uid);
		mfs_store_msgs_free(msgs, n);
		return out;
	}
	unsigned shown_flags(const char *folder, uint32_t uid)
	{
		struct mfs_store_msg *msgs = nullptr;
		struct mfs_err err;
		uint32_t validity = 0;
		size_t n = 0;
		unsigned flags = ~0u;
		EXPECT_EQ(j->ops->index(j, folder, &validity, &msgs, &n, &err),
			  MFS_OK);
		for (size_t i = 0; i < n; i++)
			if (msgs[i].uid == uid)
				flags = msgs[i].flags;
		mfs_store_msgs_free(msgs, n);
		return flags;
	}
	std::string status()
	{
		char *text = nullptr;
		size_t len = 0;
		FILE *f = open_memstream(&text, &len);
		mfs_journal_describe(j, f);
		fclose(f);
		std::string s(text, len);
		free(text);
		return s;
	}
	int append(const char *folder, const char *bytes)
	{
		char path[] = "/tmp/mfs-journal-msg-XXXXXX";
		int fd = mkstemp(path);
		EXPECT_GE(fd, 0);
		unlink(path);
		EXPECT_EQ(write(fd, bytes, strlen(bytes)),
			  (ssize_t)strlen(bytes));
		uint32_t validity, uid;
		struct mfs_err err;
		int r = j->ops->append(j, folder, fd, strlen(bytes), kMsgDate,
				       0, &validity, &uid, &err);
		close(fd);
		return r;
	}
	int move(const char *from, uint32_t uid, const char *to)
	{
		struct mfs_err err;
		return j->ops->move(j, from, 1, uid, to, &err);
	}
	int flag(const char *folder, uint32_t uid, char how, const char *name,
		 unsigned *now)
	{
		struct mfs_err err;
		const char *names[] = {name};
		return j->ops->store_flags(j, folder, 1, uid, how, names, 1,
					   now, &err);
	}
	std::string fetch(const char *folder, uint32_t uid)
	{
		struct mfs_store_msg m = {};
		struct mfs_err err;
		size_t len = 0;
		char path[] = "/tmp/mfs-journal-out-XXXXXX";
		int fd = mkstemp(path);
		unlink(path);
		m.uid = uid;
		int r = j->ops->fetch(j, folder, 1, &m, fd, &len, &err);
		std::string out;
		if (r == MFS_OK) {
			out.resize(len);
			EXPECT_EQ(pread(fd, &out[0], len, 0), (ssize_t)len);
		} else {
			out = "error: " + std::string(err.msg);
		}
		close(fd);
		return out;
	}

	FakeStore fake{true};
	struct mfs_store *j = nullptr;
	std::string base, dir;
	uint32_t a1 = 0, a2 = 0, a3 = 0;
};

TEST_F(Journal, OnlineWritesGoStraightToTheServer)
{
	EXPECT_EQ(move("A", a1, "B"), MFS_OK);
	EXPECT_EQ(fake.uids("B").size(), 1u);
	EXPECT_TRUE(mfs_journal_idle(j));
	EXPECT_NE(status().find("journal: 0 steps waiting"), std::string::npos);
}

TEST_F(Journal, OnlineErrorsStayErrors)
{
	struct mfs_err err;
	EXPECT_EQ(j->ops->move(j, "A", 1, 999, "B", &err), MFS_E_NOENT);
	EXPECT_TRUE(mfs_journal_idle(j));
}

TEST_F(Journal, OfflineWritesAreShownThenReplayedInOrder)
{
	struct mfs_err err;
	unsigned now = 0;

	offline();
	ASSERT_EQ(j->ops->create(j, "C", &err), MFS_OK);
	ASSERT_EQ(move("A", a1, "C"), MFS_OK);
	ASSERT_EQ(flag("A", a2, '+', "\\Flagged", &now), MFS_OK);
	EXPECT_EQ(now, (unsigned)MFS_FLAG_FLAGGED);
	ASSERT_EQ(j->ops->expunge(j, "A", 1, a3, &err), MFS_OK);
	ASSERT_EQ(append("C", kMsg), MFS_OK);
	EXPECT_EQ(fake.count("move"), 0) << "nothing is sent while steps wait";

	/* shown before the replay */
	EXPECT_EQ(shown("A"), std::vector<uint32_t>({a2}));
	EXPECT_EQ(shown_flags("A", a2), (unsigned)MFS_FLAG_FLAGGED);
	std::vector<uint32_t> c = shown("C");
	ASSERT_EQ(c.size(), 2u);
	EXPECT_GE(c[0], MFS_JOURNAL_UID);
	EXPECT_GE(c[1], MFS_JOURNAL_UID);
	EXPECT_EQ(fetch("C", c[1]), kMsg);
	EXPECT_NE(status().find("journal: 5 steps waiting"), std::string::npos)
	    << status();
	struct mfs_store_folder *folders = nullptr;
	size_t nf = 0;
	ASSERT_EQ(j->ops->list(j, &folders, &nf, &err), MFS_OK);
	bool has_c = false;
	for (size_t i = 0; i < nf; i++)
		has_c = has_c || strcmp(folders[i].name, "C") == 0;
	mfs_store_folders_free(folders, nf);
	EXPECT_TRUE(has_c) << "a folder made offline is listed";

	/* back: the move into C works only after the CREATE */
	online();
	replay_all();
	EXPECT_TRUE(fake.has_folder("C"));
	EXPECT_EQ(fake.uids("A"), std::vector<uint32_t>({a2}));
	EXPECT_EQ(fake.flags_of("A", a2), (unsigned)MFS_FLAG_FLAGGED);
	EXPECT_EQ(fake.uids("C").size(), 2u);
	EXPECT_EQ(fake.appends.size(), 1u);
	EXPECT_EQ(fake.appends[0].bytes, kMsg);
	/* shown now as the server has it */
	for (uint32_t u : shown("C"))
		EXPECT_LT(u, MFS_JOURNAL_UID);
}

TEST_F(Journal, StepsSurviveTheProcessAndATornLine)
{
	offline();
	ASSERT_EQ(move("A", a1, "B"), MFS_OK);
	ASSERT_EQ(append("B", kMsg), MFS_OK);
	close_journal(); /* as kill -9: nothing replayed */
	{
		std::ofstream f(dir + "/steps", std::ios::app);
		f << "S 99999999 E A 1"; /* cut short: no newline */
	}
	open_journal();
	EXPECT_EQ(shown("A"), std::vector<uint32_t>({a2, a3}));
	EXPECT_EQ(shown("B").size(), 2u);
	std::string steps = read_file(dir + "/steps");
	EXPECT_EQ(steps.back(), '\n') << "the torn line is cut off";
	online();
	replay_all();
	EXPECT_EQ(fake.uids("B").size(), 2u);
	EXPECT_EQ(fake.uids("A"), std::vector<uint32_t>({a2, a3}));
}

TEST_F(Journal, AnAppendWhoseAnswerWasLostIsNotDoubled)
{
	offline();
	ASSERT_EQ(append("B", kMsg), MFS_OK);
	online();
	fake.lose_answer("append");
	ASSERT_EQ(mfs_journal_start(j, nullptr), 0);
	for (int i = 0; i < 100 && fake.count("append") < 2; i++)
		std::this_thread::sleep_for(std::chrono::milliseconds(20));
	ASSERT_EQ(fake.uids("B").size(), 1u) << "the append reached the server";
	close_journal(); /* dies before it knows */
	open_journal();
	replay_all();
	EXPECT_EQ(fake.uids("B").size(), 1u) << "appended once";
}

TEST_F(Journal, AMoveWhoseAnswerWasLostIsDoneOnce)
{
	offline();
	ASSERT_EQ(move("A", a1, "B"), MFS_OK);
	online();
	fake.lose_answer("move");
	ASSERT_EQ(mfs_journal_start(j, nullptr), 0);
	for (int i = 0; i < 100 && fake.uids("B").empty(); i++)
		std::this_thread::sleep_for(std::chrono::milliseconds(20));
	close_journal();
	open_journal();
	replay_all();
	EXPECT_EQ(fake.uids("B").size(), 1u);
	EXPECT_EQ(status().find("failed:"), std::string::npos) << status();
}

TEST_F(Journal, AMovedMessageMovedAgainIsOneMove)
{
	offline();
	ASSERT_EQ(move("A", a1, "B"), MFS_OK);
	fake.folder("C");
	std::vector<uint32_t> b = shown("B");
	ASSERT_EQ(b.size(), 1u);
	EXPECT_EQ(fetch("B", b[0]), "From: x\r\nSubject: one\r\n\r\n1\r\n")
	    << "read where the server still has it";
	fake.fail("fetch", MFS_E_OFFLINE);
	EXPECT_EQ(fetch("B", b[0]).substr(0, 7), "error: ")
	    << "not cached and the server out of reach";
	ASSERT_EQ(move("B", b[0], "C"), MFS_OK);
	EXPECT_TRUE(shown("B").empty());
	EXPECT_EQ(shown("C").size(), 1u);
	online();
	replay_all();
	ASSERT_EQ(fake.moves.size(), 1u);
	EXPECT_EQ(fake.moves[0].to, "C");
	EXPECT_TRUE(fake.uids("B").empty());
}

TEST_F(Journal, AMovedMessageMovedBackIsNoMove)
{
	offline();
	ASSERT_EQ(move("A", a1, "B"), MFS_OK);
	uint32_t standin = shown("B").at(0);
	ASSERT_EQ(move("B", standin, "A"), MFS_OK);
	EXPECT_EQ(shown("A"), std::vector<uint32_t>({a1, a2, a3}));
	online();
	replay_all();
	EXPECT_TRUE(fake.moves.empty());
}

TEST_F(Journal, AnAppendedMessageRemovedIsNeverSent)
{
	struct mfs_err err;

	offline();
	ASSERT_EQ(append("B", kMsg), MFS_OK);
	uint32_t standin = shown("B").at(0);
	ASSERT_EQ(j->ops->expunge(j, "B", 1, standin, &err), MFS_OK);
	EXPECT_TRUE(shown("B").empty());
	online();
	replay_all();
	EXPECT_TRUE(fake.appends.empty());
	/* nothing waits: the steps file starts again */
	for (int i = 0; i < 100 && read_file(dir + "/steps")[0] != 'Q'; i++)
		std::this_thread::sleep_for(std::chrono::milliseconds(20));
	std::string steps = read_file(dir + "/steps");
	EXPECT_EQ(steps[0], 'Q') << steps;
	EXPECT_EQ(steps.find('\n'), steps.size() - 1) << steps;
	/* the file that took the old one's place is locked too */
	struct mfs_err err2;
	FakeStore other;
	EXPECT_EQ(mfs_journal_new(&other.st, dir.c_str(), &err2), nullptr);
}

TEST_F(Journal, FlagsOfAMovedMessageGoWithIt)
{
	unsigned now = 0;

	offline();
	ASSERT_EQ(move("A", a1, "B"), MFS_OK);
	uint32_t standin = shown("B").at(0);
	ASSERT_EQ(flag("B", standin, '+', "\\Seen", &now), MFS_OK);
	EXPECT_EQ(now, (unsigned)MFS_FLAG_SEEN);
	ASSERT_EQ(shown("B").size(), 1u);
	EXPECT_EQ(shown_flags("B", shown("B")[0]), (unsigned)MFS_FLAG_SEEN);
	online();
	replay_all();
	ASSERT_EQ(fake.uids("B").size(), 1u);
	EXPECT_EQ(fake.flags_of("B", fake.uids("B")[0]),
		  (unsigned)MFS_FLAG_SEEN);
}

TEST_F(Journal, AStepThatNoLongerAppliesIsReportedAndItsMessageKept)
{
	offline();
	ASSERT_EQ(move("A", a1, "B"), MFS_OK);
	ASSERT_EQ(append("Gone", kMsg), MFS_OK);
	/* meanwhile, elsewhere: a1 is deleted; "Gone" never existed */
	{
		std::lock_guard<std::mutex> g(fake.mu);
		fake.folders["A"].msgs.erase(fake.folders["A"].msgs.begin());
	}
	online();
	replay_all();
	std::string s = status();
	EXPECT_NE(s.find("journal: 2 steps failed"), std::string::npos) << s;
	EXPECT_NE(s.find("move A UID 1 to B"), std::string::npos) << s;
	size_t at = s.find("the message is kept in ");
	ASSERT_NE(at, std::string::npos) << s;
	std::string kept = s.substr(at + 23, s.find(".eml", at) + 4 - at - 23);
	EXPECT_EQ(read_file(kept), kMsg);
	/* the list stays across mounts until the user removes the file */
	close_journal();
	open_journal();
	EXPECT_NE(status().find("journal: 2 steps failed"), std::string::npos);
	unlink((dir + "/failed").c_str());
	EXPECT_NE(status().find("journal: 0 steps failed"), std::string::npos);
}

TEST_F(Journal, AnAppendWhoseFileWasRemovedFailsAndTheRestGoesOn)
{
	offline();
	ASSERT_EQ(append("B", kMsg), MFS_OK);
	ASSERT_EQ(move("A", a1, "B"), MFS_OK);
	ASSERT_EQ(system(("rm -f '" + dir + "'/A*.eml").c_str()), 0);
	online();
	replay_all();
	EXPECT_TRUE(fake.appends.empty());
	EXPECT_EQ(fake.uids("B").size(), 1u) << "the move after it was done";
	EXPECT_NE(status().find("journal: 1 step failed"), std::string::npos)
	    << status();
}

TEST_F(Journal, ASecondMountOfTheAccountCannotShareIt)
{
	struct mfs_err err;
	FakeStore other;
	EXPECT_EQ(mfs_journal_new(&other.st, dir.c_str(), &err), nullptr);
	EXPECT_NE(std::string(err.msg).find("another mount"),
		  std::string::npos);
}

TEST_F(Journal, FolderRenamesCarryTheirListings)
{
	struct mfs_err err;

	offline();
	ASSERT_EQ(j->ops->rename(j, "A", "Z", &err), MFS_OK);
	EXPECT_EQ(shown("Z"), std::vector<uint32_t>({a1, a2, a3}));
	struct mfs_store_msg *msgs = nullptr;
	uint32_t validity;
	size_t n = 0;
	EXPECT_NE(j->ops->index(j, "A", &validity, &msgs, &n, &err), MFS_OK)
	    << "no folder A any more (the server still has one)";
	mfs_store_msgs_free(msgs, n);
	ASSERT_EQ(move("Z", a2, "B"), MFS_OK);
	online();
	replay_all();
	EXPECT_FALSE(fake.has_folder("A"));
	EXPECT_EQ(fake.uids("Z"), std::vector<uint32_t>({a1, a3}));
	EXPECT_EQ(fake.uids("B").size(), 1u);
}

} // namespace
