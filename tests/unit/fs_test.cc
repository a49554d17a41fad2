// Unit tests of the FUSE layer (src/fs.c and its rooms) against a store in
// memory (fake_store.h): the filesystem is mounted for real inside the
// test (libfuse's loop in a thread), used with POSIX calls, and both what
// the calls return and what the store saw are checked.
//
// Every test mounts its own tree and unmounts it at the end; a watchdog
// aborts the FUSE connection of a test that takes too long, so a bug
// makes the test fail rather than hang the binary. Needs /dev/fuse and
// the right to mount (root): skipped, and says so, otherwise.
#include <gtest/gtest.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "fake_store.h"

extern "C" {
#include "cache.h"
#include "config.h"
#include "fs.h"
}

namespace
{

using namespace std::chrono_literals;

const time_t DATE1 = 1763650320; /* Thu, 20 Nov 2025 14:52:00 +0000 */
const time_t DATE2 = 1763736720;

std::string message(const std::string &from, const std::string &subject,
		    const std::string &body, const char *date)
{
	return "From: " + from + "\r\nTo: bob@example.com\r\nSubject: " +
	       subject + "\r\nDate: " + date +
	       "\r\nMessage-ID: <" + subject + "@example.com>\r\n"
	       "Content-Type: text/plain; charset=utf-8\r\n\r\n" + body;
}

/* Names in a directory, sorted; *err: 0 or the errno of opendir. */
std::vector<std::string> ls(const std::string &path, int *err = nullptr)
{
	std::vector<std::string> v;
	DIR *d = opendir(path.c_str());

	if (err != nullptr)
		*err = d == nullptr ? errno : 0;
	if (d == nullptr)
		return v;
	while (struct dirent *e = readdir(d)) {
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
			v.push_back(e->d_name);
	}
	closedir(d);
	std::sort(v.begin(), v.end());
	return v;
}

/* The whole file; *err: 0 or the errno of open or read. */
std::string slurp(const std::string &path, int *err = nullptr)
{
	std::string s;
	int fd = open(path.c_str(), O_RDONLY);
	int e = 0;

	if (fd < 0) {
		e = errno;
	} else {
		char buf[65536];
		ssize_t r;
		while ((r = read(fd, buf, sizeof(buf))) > 0)
			s.append(buf, (size_t)r);
		if (r < 0)
			e = errno;
		close(fd);
	}
	if (err != nullptr)
		*err = e;
	return s;
}

bool write_all(int fd, const std::string &s)
{
	size_t off = 0;
	while (off < s.size()) {
		ssize_t w = write(fd, s.data() + off, s.size() - off);
		if (w <= 0)
			return false;
		off += (size_t)w;
	}
	return true;
}

/* errno of a call that returned -1, or 0 when it succeeded. */
int err_of(int rc)
{
	return rc == 0 ? 0 : errno;
}

/* A descriptor closed at the end of the test whatever happens, so that
 * no file of the mount is open when it is unmounted. */
struct Fd {
	int fd;
	explicit Fd(int f) : fd(f) {}
	~Fd()
	{
		if (fd >= 0)
			::close(fd);
	}
	/* close(); the errno it gave, or 0 */
	int close()
	{
		int rc = ::close(fd);
		fd = -1;
		return err_of(rc);
	}
	operator int() const
	{
		return fd;
	}
};

class FsTest : public ::testing::Test
{
      protected:
	void SetUp() override
	{
		if (geteuid() != 0 || access("/dev/fuse", R_OK | W_OK) != 0)
			GTEST_SKIP() << "needs /dev/fuse and root to mount";
		char tmpl[] = "/tmp/mailfs-fs-test-XXXXXX";
		ASSERT_NE(mkdtemp(tmpl), nullptr);
		dir = tmpl;
		mnt = dir + "/mnt";
		cachedir = dir + "/cache";
		ASSERT_EQ(mkdir(mnt.c_str(), 0700), 0);
		ASSERT_EQ(mkdir(cachedir.c_str(), 0700), 0);
		fake.folder("INBOX", 7);
		fake.folder("Archive", 9);
		inbox1 = fake.add("INBOX",
				  message("Alice <alice@example.com>", "Budget",
					  "the numbers\r\n",
					  "Thu, 20 Nov 2025 14:52:00 +0000"),
				  DATE1, "Alice", "Budget");
		inbox2 = fake.add("INBOX",
				  message("Carol <carol@example.com>", "Lunch",
					  "at noon?\r\n",
					  "Fri, 21 Nov 2025 14:52:00 +0000"),
				  DATE2, "Carol", "Lunch");
	}

	void TearDown() override
	{
		Unmount();
		if (fs != nullptr)
			mfs_fs_free(fs);
		if (cache != nullptr)
			mfs_cache_close(cache);
		mfs_account_free(&acct);
		if (!dir.empty()) {
			std::string cmd = "rm -rf '" + dir + "'";
			EXPECT_EQ(system(cmd.c_str()), 0);
		}
	}

	/* Mounts the fs over the fake at mnt, as main.c does. */
	void Mount()
	{
		struct mfs_err err;

		ASSERT_EQ(mfs_cache_open(cachedir.c_str(), &cache, &err), MFS_OK)
		    << err.msg;
		acct.name = strdup("test");
		acct.user = strdup("alice@example.com");
		acct.cache_dir = strdup(cachedir.c_str());
		acct.timeout = 5;
		acct.refresh = refresh;
		acct.connections = 1;
		fs = mfs_fs_new(&acct, &fake.st, cache);
		ASSERT_NE(fs, nullptr);
		ASSERT_EQ(mfs_fs_prepare(fs, &err), MFS_OK) << err.msg;
		const char *argv[] = {"fs_test", "-o",
				      "fsname=mailfs-test,subtype=mailfs"};
		struct fuse_args args = FUSE_ARGS_INIT(3, (char **)argv);
		se = fuse_session_new(&args, &mfs_fs_ops, sizeof(mfs_fs_ops), fs);
		fuse_opt_free_args(&args);
		ASSERT_NE(se, nullptr);
		ASSERT_EQ(fuse_session_mount(se, mnt.c_str()), 0);
		mounted = true;
		conn = connection_of(mnt);
		loop = std::thread([this] {
			struct fuse_loop_config *c = fuse_loop_cfg_create();
			fuse_loop_cfg_set_max_threads(c, 8);
			fuse_session_loop_mt(se, c);
			fuse_loop_cfg_destroy(c);
			std::lock_guard<std::mutex> g(mu);
			loop_done = true;
			cv.notify_all();
		});
		watchdog = std::thread([this] {
			std::unique_lock<std::mutex> g(mu);
			if (!cv.wait_for(g, 20s, [this] { return stopping; })) {
				ADD_FAILURE() << "test took over 20 s: FUSE "
						 "connection aborted";
				abort_connection();
			}
		});
	}

	void Unmount()
	{
		if (!mounted)
			return;
		mounted = false;
		if (umount2(mnt.c_str(), 0) != 0) {
			/* busy (a file left open): a forced unmount aborts
			 * the connection, so that nothing waits for the loop
			 * (not even the flush of that file at exit) */
			ADD_FAILURE() << "unmount: " << strerror(errno);
			abort_connection();
			umount2(mnt.c_str(), MNT_DETACH);
		}
		{
			std::unique_lock<std::mutex> g(mu);
			if (!cv.wait_for(g, 5s, [this] { return loop_done; })) {
				ADD_FAILURE() << "FUSE loop still running 5 s "
						 "after unmount: aborted";
				abort_connection();
				cv.wait_for(g, 5s, [this] { return loop_done; });
			}
			stopping = true;
			cv.notify_all();
		}
		watchdog.join();
		if (loop_done) {
			loop.join();
			fuse_session_unmount(se);
			fuse_session_destroy(se);
		} else {
			loop.detach(); /* reported above; never hang */
			fs = nullptr;
			cache = nullptr;
		}
		se = nullptr;
	}

	/* The FUSE connection number of the mount at path, from mountinfo
	 * (no request to the mount itself). */
	static std::string connection_of(const std::string &path)
	{
		std::ifstream in("/proc/self/mountinfo");
		std::string line, found;
		while (std::getline(in, line)) {
			std::istringstream f(line);
			std::string id, parent, dev, root, point;
			f >> id >> parent >> dev >> root >> point;
			if (point == path)
				found = dev.substr(dev.find(':') + 1);
		}
		return found;
	}
	void abort_connection()
	{
		umount2(mnt.c_str(), MNT_FORCE); /* FUSE aborts the connection */
		std::string p = "/sys/fs/fuse/connections/" + conn + "/abort";
		int fd = open(p.c_str(), O_WRONLY);
		if (fd >= 0) {
			(void)!write(fd, "1", 1);
			close(fd);
		}
	}

	std::string path(const std::string &rel) const
	{
		return mnt + "/" + rel;
	}
	/* The directory name of message uid in folder (listing it). */
	std::string msgdir(const std::string &folder, uint32_t uid)
	{
		std::string tail = " \xc2\xb7" + std::to_string(uid);
		for (auto &n : ls(path(folder)))
			if (n.size() > tail.size() &&
			    n.compare(n.size() - tail.size(), tail.size(),
				      tail) == 0)
				return folder + "/" + n;
		return "";
	}
	/* Makes the next look at a folder list it again. */
	void touch(const std::string &rel)
	{
		ASSERT_EQ(utimensat(AT_FDCWD, path(rel).c_str(), nullptr, 0), 0)
		    << rel << ": " << strerror(errno);
	}
	/* Writes a new file into the mount and closes it; the errno of the
	 * close, or of what failed before it. */
	int put(const std::string &rel, const std::string &bytes)
	{
		int fd = open(path(rel).c_str(), O_CREAT | O_WRONLY | O_TRUNC,
			      0644);
		if (fd < 0)
			return errno;
		if (!write_all(fd, bytes)) {
			int e = errno;
			close(fd);
			return e;
		}
		return err_of(close(fd));
	}

	/* What fs holds in memory. */
	struct mfs_fs_mem mem()
	{
		struct mfs_fs_mem m;
		mfs_fs_mem(fs, &m);
		return m;
	}
	/* Makes the kernel forget the inodes nothing uses (drop_caches: "2",
	 * then "3" should pages of the files keep them) and waits until fs
	 * holds at most `views` views of messages, a few seconds at most.
	 * Whether it does then. */
	bool forget_until(unsigned long views)
	{
		for (int i = 0; i < 60; i++) {
			if (i % 20 == 0) {
				int fd = open("/proc/sys/vm/drop_caches",
					      O_WRONLY);
				if (fd < 0)
					return false;
				(void)!write(fd, i == 0 ? "2" : "3", 1);
				close(fd);
			}
			if (mem().views <= views)
				return true;
			std::this_thread::sleep_for(100ms);
		}
		return mem().views <= views;
	}

	/* Waits for the next second: a listing of the last one is then
	 * older than a refresh of 1 s. */
	static void next_second()
	{
		time_t now = time(nullptr);
		while (time(nullptr) == now)
			std::this_thread::sleep_for(20ms);
	}

	FakeStore fake;
	int refresh = 60; /* listed again only when told (touch) */
	uint32_t inbox1 = 0, inbox2 = 0;
	std::string dir, mnt, cachedir, conn;
	struct mfs_account acct = {};
	struct mfs_cache *cache = nullptr;
	struct mfs_fs *fs = nullptr;
	struct fuse_session *se = nullptr;
	bool mounted = false;
	std::thread loop, watchdog;
	std::mutex mu;
	std::condition_variable cv;
	bool loop_done = false, stopping = false;
};

/* ---- looking ----------------------------------------------------------- */

TEST_F(FsTest, RootShowsTheServersFolders)
{
	fake.folder("Work");
	fake.folder("Work/Projects");
	fake.folder("Work/Old").noselect = true;
	Mount();
	EXPECT_EQ(fake.count("connect"), 1);
	EXPECT_EQ(ls(mnt),
		  (std::vector<std::string>{"Archive", "INBOX", "Work"}));
	EXPECT_EQ(ls(path("Work")),
		  (std::vector<std::string>{"Old", "Projects"}));
	EXPECT_GE(fake.count("list"), 1);
	struct stat st;
	ASSERT_EQ(stat(path("Work/Projects").c_str(), &st), 0);
	EXPECT_TRUE(S_ISDIR(st.st_mode));
	EXPECT_EQ(err_of(stat(path("Nowhere").c_str(), &st)), ENOENT);
}

TEST_F(FsTest, FolderListsEachMessageAsADirectoryInOneIndex)
{
	Mount();
	auto names = ls(path("INBOX"));
	ASSERT_EQ(names.size(), 2u);
	EXPECT_NE(names[0].find("Alice"), std::string::npos);
	EXPECT_NE(names[0].find("Budget"), std::string::npos);
	EXPECT_NE(names[1].find("Lunch"), std::string::npos);
	EXPECT_EQ(fake.count("index"), 1);
	/* within the listing's lifetime: no second index */
	ls(path("INBOX"));
	EXPECT_EQ(fake.count("index"), 1);
	/* nothing fetched to list */
	EXPECT_EQ(fake.count("fetch") + fake.count("fetch_many"), 0);
	struct stat st;
	ASSERT_EQ(stat(path(msgdir("INBOX", inbox1)).c_str(), &st), 0);
	EXPECT_TRUE(S_ISDIR(st.st_mode));
	EXPECT_EQ(st.st_mtime, DATE1);
}

TEST_F(FsTest, MessageEmlIsByteExactAndFetchedOnce)
{
	Mount();
	std::string d = msgdir("INBOX", inbox1);
	ASSERT_FALSE(d.empty());
	const std::string raw = fake.folders["INBOX"].msgs[0].raw;
	struct stat st;
	ASSERT_EQ(stat(path(d + "/message.eml").c_str(), &st), 0);
	EXPECT_EQ((size_t)st.st_size, raw.size());
	EXPECT_EQ(st.st_mtime, DATE1);
	EXPECT_EQ(slurp(path(d + "/message.eml")), raw);
	EXPECT_EQ(slurp(path(d + "/body.txt")), "the numbers\n");
	EXPECT_EQ(slurp(path(d + "/subject")), "Budget\n");
	int fetches = fake.count("fetch") + fake.count("fetch_many");
	EXPECT_EQ(fetches, 1);
	/* the neighbour came in the same fetch: reading it costs nothing */
	std::string d2 = msgdir("INBOX", inbox2);
	EXPECT_EQ(slurp(path(d2 + "/message.eml")),
		  fake.folders["INBOX"].msgs[1].raw);
	EXPECT_EQ(slurp(path(d + "/message.eml")), raw);
	EXPECT_EQ(fake.count("fetch") + fake.count("fetch_many"), fetches);
}

TEST_F(FsTest, ListingErrorShowsTheLastListing)
{
	refresh = 1;
	Mount();
	auto before = ls(path("INBOX"));
	ASSERT_EQ(before.size(), 2u);
	fake.fail("index", MFS_E_CONNECT, -1);
	next_second(); /* the listing is old now */
	int e = -1;
	EXPECT_EQ(ls(path("INBOX"), &e), before);
	EXPECT_EQ(e, 0);
	EXPECT_EQ(fake.count("index"), 2) << "it did ask again";
	/* the server back, with one more message: shown at the next look */
	fake.heal();
	uint32_t uid = fake.add("INBOX", message("Dan <d@example.com>", "New",
						 "x\r\n", "Sat, 22 Nov 2025 "
							  "10:00:00 +0000"),
				DATE2 + 3600, "Dan", "New");
	touch("INBOX");
	EXPECT_EQ(ls(path("INBOX")).size(), 3u);
	EXPECT_FALSE(msgdir("INBOX", uid).empty());
}

/* The same after "touch INBOX" (which asks for a new listing): the folder
 * still counts as listed, and ls shows the last listing. */
TEST_F(FsTest, ListingErrorAfterTouchShowsTheLastListing)
{
	Mount();
	auto before = ls(path("INBOX"));
	ASSERT_EQ(before.size(), 2u);
	fake.fail("index", MFS_E_CONNECT, -1);
	touch("INBOX");
	int e = -1;
	EXPECT_EQ(ls(path("INBOX"), &e), before);
	EXPECT_EQ(e, 0);
	EXPECT_EQ(fake.count("index"), 2);
}

TEST_F(FsTest, FirstListingErrorIsAnError)
{
	fake.fail("index", MFS_E_CONNECT, -1);
	Mount();
	int e = 0;
	ls(path("Archive"), &e);
	EXPECT_EQ(e, EIO);
	fake.fail("index", MFS_E_TIMEOUT, -1);
	ls(path("Archive"), &e);
	EXPECT_EQ(e, ETIMEDOUT);
	fake.heal();
	ls(path("Archive"), &e);
	EXPECT_EQ(e, 0);
}

TEST_F(FsTest, FetchErrorsMapToErrno)
{
	Mount();
	std::string d1 = msgdir("INBOX", inbox1), d2 = msgdir("INBOX", inbox2);
	fake.fail("fetch", MFS_E_CONNECT, -1);
	fake.fail("fetch_many", MFS_E_CONNECT, -1);
	struct stat st;
	EXPECT_EQ(err_of(stat(path(d1 + "/message.eml").c_str(), &st)), EIO);
	int e = 0;
	slurp(path(d1 + "/body.txt"), &e);
	EXPECT_EQ(e, EIO);
	/* the message is gone from the server: ENOENT, not EIO */
	fake.heal();
	{
		std::lock_guard<std::mutex> g(fake.mu);
		fake.folders["INBOX"].msgs.clear();
	}
	EXPECT_EQ(err_of(stat(path(d2 + "/message.eml").c_str(), &st)), ENOENT);
	/* and no wrong bytes were cached on the way */
	fake.add("INBOX", "X: y\r\n\r\nz", DATE1, "x", "y");
	EXPECT_EQ(err_of(stat(path(d1 + "/message.eml").c_str(), &st)), ENOENT);
}

/* ---- writing files into folders --------------------------------------- */

TEST_F(FsTest, CpIntoAFolderAppendsOnceWithEveryByte)
{
	Mount();
	std::string msg = message("Eve <e@example.com>", "Copied",
				  std::string(200000, 'a') + "\r\n",
				  "Sat, 22 Nov 2025 10:00:00 +0000");
	Fd fd(open(path("Archive/new.eml").c_str(),
		   O_CREAT | O_WRONLY | O_TRUNC, 0644));
	ASSERT_GE(fd, 0) << strerror(errno);
	/* in pieces, as cp writes */
	for (size_t off = 0; off < msg.size(); off += 65536) {
		std::string piece = msg.substr(off, 65536);
		ASSERT_TRUE(write_all(fd, piece));
	}
	EXPECT_EQ(fake.count("append"), 0) << "nothing before close";
	ASSERT_EQ(fd.close(), 0);
	ASSERT_EQ(fake.count("append"), 1);
	EXPECT_EQ(fake.appends[0].folder, "Archive");
	EXPECT_TRUE(fake.appends[0].bytes == msg) << "bytes differ";
	/* the Date header is the internal date */
	EXPECT_EQ(fake.appends[0].date, 1763805600);
	/* the next listing shows it as a message directory */
	auto names = ls(path("Archive"));
	ASSERT_EQ(names.size(), 1u);
	EXPECT_NE(names[0].find("Copied"), std::string::npos);
	EXPECT_EQ(fake.count("append"), 1);
}

TEST_F(FsTest, CloseByAForkedChildCommitsNothing)
{
	Mount();
	std::string msg = message("Eve <e@example.com>", "Forked", "one\r\n",
				  "Sat, 22 Nov 2025 10:00:00 +0000");
	Fd fd(open(path("INBOX/f.eml").c_str(), O_CREAT | O_WRONLY, 0644));
	ASSERT_GE(fd, 0) << strerror(errno);
	ASSERT_TRUE(write_all(fd, msg.substr(0, 40)));
	pid_t pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0) {
		::close(fd); /* the child's copy: a FLUSH from another process */
		_exit(0);
	}
	int status = 0;
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	EXPECT_EQ(fake.count("append"), 0) << "the child's close committed";
	ASSERT_TRUE(write_all(fd, msg.substr(40)));
	ASSERT_EQ(fd.close(), 0);
	ASSERT_EQ(fake.count("append"), 1);
	EXPECT_TRUE(fake.appends[0].bytes == msg);
	EXPECT_EQ(fake.appends[0].folder, "INBOX");
}

TEST_F(FsTest, EmptyFileIsNeverCommitted)
{
	Mount();
	Fd fd(open(path("INBOX/empty.eml").c_str(), O_CREAT | O_WRONLY, 0644));
	ASSERT_GE(fd, 0);
	ASSERT_EQ(fd.close(), 0);
	EXPECT_EQ(fake.count("append"), 0);
}

TEST_F(FsTest, WaitingNameCommitsAtTheRename)
{
	Mount();
	std::string msg = message("Eve <e@example.com>", "Rsynced", "r\r\n",
				  "Sat, 22 Nov 2025 10:00:00 +0000");
	ASSERT_EQ(put("INBOX/.r.eml.XXXX", msg), 0);
	EXPECT_EQ(fake.count("append"), 0) << "a temporary name waits";
	ASSERT_EQ(put("INBOX/s.eml.tmp", msg), 0);
	EXPECT_EQ(fake.count("append"), 0);
	ASSERT_EQ(rename(path("INBOX/.r.eml.XXXX").c_str(),
			 path("INBOX/r.eml").c_str()),
		  0)
	    << strerror(errno);
	ASSERT_EQ(fake.count("append"), 1);
	EXPECT_TRUE(fake.appends[0].bytes == msg);
	/* the other one, removed before its rename, is never sent */
	EXPECT_EQ(unlink(path("INBOX/s.eml.tmp").c_str()), 0);
	EXPECT_EQ(fake.count("append"), 1);
}

TEST_F(FsTest, NotAMessageFailsCloseAndAppendsNothing)
{
	Mount();
	EXPECT_EQ(put("INBOX/notes.txt", "just some text\n"), EINVAL);
	EXPECT_EQ(fake.count("append"), 0);
	struct stat st;
	EXPECT_EQ(err_of(stat(path("INBOX/notes.txt").c_str(), &st)), ENOENT);
}

TEST_F(FsTest, AppendErrorFailsCloseOnce)
{
	Mount();
	std::string msg = message("Eve <e@example.com>", "Refused", "r\r\n",
				  "Sat, 22 Nov 2025 10:00:00 +0000");
	fake.fail("append", MFS_E_CONNECT);
	EXPECT_EQ(put("INBOX/a.eml", msg), EIO);
	EXPECT_EQ(fake.count("append"), 1) << "tried once, not again at release";
	fake.fail("append", MFS_E_NOENT);
	EXPECT_EQ(put("INBOX/b.eml", msg), ENOENT);
	EXPECT_EQ(fake.count("append"), 2);
}

/* ---- changing the tree ------------------------------------------------- */

TEST_F(FsTest, MvOfAMessageMovesItOnce)
{
	Mount();
	std::string d = msgdir("INBOX", inbox1);
	ASSERT_FALSE(d.empty());
	std::string name = d.substr(strlen("INBOX/"));
	ls(path("Archive"));
	ASSERT_EQ(rename(path(d).c_str(), path("Archive/" + name).c_str()), 0)
	    << strerror(errno);
	ASSERT_EQ(fake.count("move"), 1);
	EXPECT_EQ(fake.moves[0].from, "INBOX");
	EXPECT_EQ(fake.moves[0].uid, inbox1);
	EXPECT_EQ(fake.moves[0].validity, 7u);
	EXPECT_EQ(fake.moves[0].to, "Archive");
	/* both folders show the result at the next ls */
	auto inbox = ls(path("INBOX"));
	ASSERT_EQ(inbox.size(), 1u);
	EXPECT_NE(inbox[0].find("Lunch"), std::string::npos);
	auto archive = ls(path("Archive"));
	ASSERT_EQ(archive.size(), 1u);
	EXPECT_NE(archive[0].find("Budget"), std::string::npos);
	EXPECT_EQ(fake.count("move"), 1);
	EXPECT_EQ(fake.count("expunge"), 0);
}

TEST_F(FsTest, MvOfAMessageThatIsGoneIsENOENT)
{
	Mount();
	std::string d = msgdir("INBOX", inbox1);
	std::string name = d.substr(strlen("INBOX/"));
	fake.fail("move", MFS_E_NOENT);
	EXPECT_EQ(err_of(rename(path(d).c_str(),
				path("Archive/" + name).c_str())),
		  ENOENT);
	fake.fail("move", MFS_E_CONNECT);
	EXPECT_EQ(err_of(rename(path(d).c_str(),
				path("Archive/" + name).c_str())),
		  EIO);
	/* a failed move leaves the message where it was */
	struct stat st;
	EXPECT_EQ(stat(path(d).c_str(), &st), 0);
	/* a message moves only to another folder, under its own name */
	EXPECT_NE(err_of(rename(path(d).c_str(),
				path("Archive/other name").c_str())),
		  0);
	EXPECT_EQ(fake.count("move"), 2);
}

TEST_F(FsTest, RmROfAMessageExpungesItOnce)
{
	Mount();
	std::string d = msgdir("INBOX", inbox2);
	ASSERT_FALSE(d.empty());
	/* a look inside first, so that rm -r has files and parts/ to go
	 * through */
	EXPECT_FALSE(ls(path(d)).empty());
	std::string cmd = "rm -r '" + path(d) + "'";
	ASSERT_EQ(system(cmd.c_str()), 0);
	ASSERT_EQ(fake.count("expunge"), 1);
	EXPECT_EQ(fake.expunges[0].folder, "INBOX");
	EXPECT_EQ(fake.expunges[0].uid, inbox2);
	EXPECT_EQ(fake.expunges[0].validity, 7u);
	EXPECT_EQ(fake.uids("INBOX"), std::vector<uint32_t>{inbox1});
	auto names = ls(path("INBOX"));
	ASSERT_EQ(names.size(), 1u);
	EXPECT_NE(names[0].find("Budget"), std::string::npos);
}

TEST_F(FsTest, RmdirOfAMessageMapsStoreErrors)
{
	Mount();
	std::string d = msgdir("INBOX", inbox2);
	fake.fail("expunge", MFS_E_CONNECT);
	EXPECT_EQ(err_of(rmdir(path(d).c_str())), EIO);
	fake.fail("expunge", MFS_E_TIMEOUT);
	EXPECT_EQ(err_of(rmdir(path(d).c_str())), ETIMEDOUT);
	fake.fail("expunge", MFS_E_NOENT);
	EXPECT_EQ(err_of(rmdir(path(d).c_str())), ENOENT);
	EXPECT_EQ(fake.uids("INBOX").size(), 2u);
	EXPECT_EQ(rmdir(path(d).c_str()), 0);
	EXPECT_EQ(fake.count("expunge"), 4);
}

TEST_F(FsTest, FolderMkdirRenameRmdir)
{
	Mount();
	ASSERT_EQ(mkdir(path("Archive/2025").c_str(), 0700), 0)
	    << strerror(errno);
	ASSERT_EQ(fake.creates, std::vector<std::string>{"Archive/2025"});
	EXPECT_TRUE(fake.has_folder("Archive/2025"));
	EXPECT_EQ(ls(path("Archive")), std::vector<std::string>{"2025"});
	EXPECT_EQ(err_of(mkdir(path("Archive/2025").c_str(), 0700)), EEXIST);
	EXPECT_EQ(fake.count("create"), 1) << "known to exist: not asked";

	ASSERT_EQ(rename(path("Archive/2025").c_str(),
			 path("Archive/Old").c_str()),
		  0)
	    << strerror(errno);
	ASSERT_EQ(fake.count("rename"), 1);
	EXPECT_EQ(fake.renames[0].first, "Archive/2025");
	EXPECT_EQ(fake.renames[0].second, "Archive/Old");
	EXPECT_EQ(ls(path("Archive")), std::vector<std::string>{"Old"});

	ASSERT_EQ(rmdir(path("Archive/Old").c_str()), 0) << strerror(errno);
	ASSERT_EQ(fake.removes, std::vector<std::string>{"Archive/Old"});
	EXPECT_FALSE(fake.has_folder("Archive/Old"));
	EXPECT_TRUE(ls(path("Archive")).empty());
}

TEST_F(FsTest, FolderChangesMapStoreErrors)
{
	fake.folder("Empty");
	Mount();
	fake.fail("create", MFS_E_EXIST);
	EXPECT_EQ(err_of(mkdir(path("New").c_str(), 0700)), EEXIST);
	fake.fail("create", MFS_E_ACCESS);
	EXPECT_EQ(err_of(mkdir(path("New").c_str(), 0700)), EACCES);
	fake.fail("create", MFS_E_CONNECT);
	EXPECT_EQ(err_of(mkdir(path("New").c_str(), 0700)), EIO);
	struct stat st;
	EXPECT_EQ(err_of(stat(path("New").c_str(), &st)), ENOENT);

	/* a folder that holds messages is not removed */
	EXPECT_EQ(err_of(rmdir(path("INBOX").c_str())), EACCES);
	fake.add("Archive", "X: y\r\n\r\nz", DATE1, "x", "y");
	EXPECT_EQ(err_of(rmdir(path("Archive").c_str())), ENOTEMPTY);
	EXPECT_EQ(fake.count("remove"), 0) << "the listing said so already";
	fake.fail("remove", MFS_E_NOTEMPTY);
	EXPECT_EQ(err_of(rmdir(path("Empty").c_str())), ENOTEMPTY);
	fake.fail("rename", MFS_E_ACCESS);
	EXPECT_EQ(err_of(rename(path("Empty").c_str(), path("Full").c_str())),
		  EACCES);
	EXPECT_TRUE(fake.has_folder("Empty"));
	EXPECT_EQ(stat(path("Empty").c_str(), &st), 0);
}

TEST_F(FsTest, WritingFlagsStoresThem)
{
	Mount();
	std::string f = msgdir("INBOX", inbox1) + "/flags";
	EXPECT_EQ(slurp(path(f)), "");
	Fd fd(open(path(f).c_str(), O_WRONLY | O_TRUNC));
	ASSERT_GE(fd, 0) << strerror(errno);
	ASSERT_TRUE(write_all(fd, "+\\Flagged\n"));
	ASSERT_EQ(fd.close(), 0);
	ASSERT_EQ(fake.count("store_flags"), 1);
	EXPECT_EQ(fake.stores[0].how, '+');
	EXPECT_EQ(fake.stores[0].uid, inbox1);
	EXPECT_EQ(fake.stores[0].flags, std::vector<std::string>{"\\Flagged"});
	EXPECT_EQ(fake.flags_of("INBOX", inbox1), (unsigned)MFS_FLAG_FLAGGED);
	EXPECT_NE(slurp(path(f)).find("\\Flagged"), std::string::npos);

	fake.fail("store_flags", MFS_E_CONNECT);
	Fd fd2(open(path(f).c_str(), O_WRONLY | O_TRUNC));
	ASSERT_GE(fd2, 0);
	ASSERT_TRUE(write_all(fd2, "\\Seen\n"));
	EXPECT_EQ(fd2.close(), EIO);
	EXPECT_EQ(fake.flags_of("INBOX", inbox1), (unsigned)MFS_FLAG_FLAGGED);
}

TEST_F(FsTest, MessageFilesAreReadOnly)
{
	Mount();
	std::string d = msgdir("INBOX", inbox1);
	Fd fd(open(path(d + "/message.eml").c_str(), O_WRONLY));
	EXPECT_LT(fd, 0);
	EXPECT_EQ(err_of(unlink(path(d + "/nothing").c_str())), ENOENT);
	EXPECT_EQ(fake.count("append") + fake.count("store_flags") +
		      fake.count("expunge"),
		  0);
}

/* ---- memory ---------------------------------------------------------- */

std::string note(int i)
{
	return message("Dave <dave@example.com>", "Note" + std::to_string(i),
		       "note " + std::to_string(i) + "\r\n",
		       "Sat, 22 Nov 2025 10:00:00 +0000");
}

/* A traversal keeps few messages mapped and laid out (16, msgview.c's
 * VIEWS_MAX), however many it looks into; the others are laid out again
 * from the cache when looked at again. Once the kernel forgets their
 * files, the views and the nodes of the message directories go. */
TEST_F(FsTest, ViewsAreBoundedAndGoWhenTheKernelForgets)
{
	const int n = 40;
	for (int i = 0; i < n; i++)
		fake.add("Archive", note(i), DATE1 + 60 * i, "Dave",
			 "Note" + std::to_string(i));
	Mount();
	std::vector<std::string> names = ls(path("Archive"));
	ASSERT_EQ(names.size(), (size_t)n);
	struct mfs_fs_mem listed = mem();
	EXPECT_EQ(listed.views, 0u);
	auto body = [&](const std::string &name) {
		size_t at = name.find("Note");
		return "note " + name.substr(at + 4, name.find(' ', at) -
							 at - 4) +
		       "\n";
	};
	for (auto &name : names) {
		std::string d = path("Archive/" + name);
		struct stat st;
		EXPECT_EQ(slurp(d + "/body.txt"), body(name)) << name;
		EXPECT_EQ(stat((d + "/headers").c_str(), &st), 0) << name;
		/* message.eml headers from to subject date body.txt
		 * parts flags */
		EXPECT_EQ(ls(d).size(), 9u) << name;
	}
	struct mfs_fs_mem m = mem();
	EXPECT_EQ(m.views, (unsigned long)n); /* their files are known */
	EXPECT_LE(m.loaded, 16u);
	EXPECT_LE(m.mapped, 16u);
	EXPECT_GE(m.nodes, listed.nodes + 9 * n);
	int fetches = fake.count("fetch") + fake.count("fetch_many");
	/* read again, in the same order: every view was unloaded */
	for (auto &name : names)
		EXPECT_EQ(slurp(path("Archive/" + name + "/body.txt")),
			  body(name))
		    << name;
	m = mem();
	EXPECT_LE(m.loaded, 16u);
	EXPECT_EQ(fake.count("fetch") + fake.count("fetch_many"), fetches);

	ASSERT_TRUE(forget_until(0)) << mem().views << " views left";
	m = mem();
	EXPECT_EQ(m.loaded, 0u);
	EXPECT_EQ(m.mapped, 0u);
	EXPECT_LE(m.nodes, listed.nodes);
	/* a look makes them again, from the cache */
	EXPECT_EQ(slurp(path("Archive/" + names[7] + "/body.txt")),
		  body(names[7]));
	EXPECT_EQ(mem().views, 1u);
	EXPECT_EQ(fake.count("fetch") + fake.count("fetch_many"), fetches);
}

/* A file open across the kernel's forgetting keeps its message's view
 * and directory; the message's other files are still there. */
TEST_F(FsTest, AnOpenFileKeepsItsMessage)
{
	Mount();
	std::string d1 = msgdir("INBOX", inbox1), d2 = msgdir("INBOX", inbox2);
	struct stat st;
	Fd fd(open(path(d1 + "/body.txt").c_str(), O_RDONLY));
	ASSERT_GE(fd, 0);
	ASSERT_EQ(stat(path(d2 + "/subject").c_str(), &st), 0);
	EXPECT_EQ(mem().views, 2u);
	ASSERT_TRUE(forget_until(1)) << mem().views << " views left";
	char buf[64];
	ssize_t r = pread(fd, buf, sizeof(buf), 0);
	EXPECT_EQ(std::string(buf, r > 0 ? (size_t)r : 0), "the numbers\n");
	EXPECT_EQ(slurp(path(d1 + "/subject")), "Budget\n");
	EXPECT_EQ(mem().views, 1u);
	EXPECT_EQ(fd.close(), 0);
	EXPECT_TRUE(forget_until(0)) << mem().views << " views left";
	EXPECT_EQ(slurp(path(d2 + "/subject")), "Lunch\n");
}

} // namespace
