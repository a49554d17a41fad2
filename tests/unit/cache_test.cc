#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

extern "C" {
#include "cache.h"
}

namespace fs = std::filesystem;

namespace
{

/* The bytes of an entry: a function of its key and size only. */
std::string pattern(const std::string &key, size_t size)
{
	std::mt19937 rng((unsigned)std::hash<std::string>()(key));
	std::string s(size, '\0');

	for (auto &ch : s)
		ch = (char)(rng() & 0xff);
	return s;
}

struct Fill {
	std::string data;
	int calls = 0;
};

int fill_fn(void *ctx, int fd, size_t *len, struct mfs_err *err)
{
	auto *f = (Fill *)ctx;
	size_t off = 0;

	f->calls++;
	while (off < f->data.size()) {
		ssize_t n =
		    write(fd, f->data.data() + off, f->data.size() - off);
		if (n <= 0)
			return mfs_err_set(err, MFS_E_IO, "write");
		off += (size_t)n;
	}
	*len = off;
	return MFS_OK;
}

std::string read_fd(int fd)
{
	std::string s;
	char buf[8192];
	off_t off = 0;
	ssize_t n;

	while ((n = pread(fd, buf, sizeof(buf), off)) > 0) {
		s.append(buf, (size_t)n);
		off += n;
	}
	return s;
}

std::string read_file(const fs::path &p)
{
	int fd = open(p.c_str(), O_RDONLY);
	std::string s;

	if (fd < 0)
		return s;
	s = read_fd(fd);
	close(fd);
	return s;
}

void write_file(const fs::path &p, const std::string &data, mode_t mode)
{
	int fd = open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC, mode);

	ASSERT_GE(fd, 0) << p;
	ASSERT_EQ((ssize_t)data.size(), write(fd, data.data(), data.size()));
	close(fd);
}

/* Bytes of the regular files under dir, outbox/ left out. */
uint64_t disk_total(const fs::path &dir)
{
	uint64_t total = 0;

	for (auto it = fs::recursive_directory_iterator(dir);
	     it != fs::recursive_directory_iterator(); ++it) {
		if (it->path() == dir / "outbox") {
			it.disable_recursion_pending();
			continue;
		}
		if (it->is_regular_file())
			total += it->file_size();
	}
	return total;
}

std::vector<fs::path> files_named_tmp(const fs::path &dir)
{
	std::vector<fs::path> v;

	for (auto &e : fs::recursive_directory_iterator(dir))
		if (e.path().filename().string().find(".tmp.") !=
		    std::string::npos)
			v.push_back(e.path());
	return v;
}

class Cache : public ::testing::Test
{
      protected:
	fs::path dir;
	struct mfs_cache *c = nullptr;
	struct mfs_err err;

	void SetUp() override
	{
		char tmpl[] = "/tmp/mailfs-cache-test.XXXXXX";

		ASSERT_NE(nullptr, mkdtemp(tmpl));
		dir = fs::path(tmpl) / "cache";
		mfs_err_clear(&err);
	}

	void TearDown() override
	{
		mfs_cache_close(c);
		fs::remove_all(dir.parent_path());
	}

	void reopen(uint64_t limit)
	{
		mfs_cache_close(c);
		c = nullptr;
		ASSERT_EQ(MFS_OK, mfs_cache_open(dir.c_str(), &c, &err))
		    << err.msg;
		if (limit != 0)
			mfs_cache_set_limit(c, limit);
	}

	/* Puts an entry through mfs_cache_get; checks the bytes served. */
	void put(const std::string &key, const std::string &data)
	{
		Fill f{data};
		int fd = -1;

		ASSERT_EQ(MFS_OK, mfs_cache_get(c, key.c_str(), data.size(),
						fill_fn, &f, &fd, &err))
		    << err.msg;
		EXPECT_EQ(data, read_fd(fd));
		close(fd);
	}

	/* Puts an entry through mfs_cache_tmp and mfs_cache_commit. */
	int commit(const std::string &key, const std::string &data)
	{
		char *tmp = nullptr;
		int fd = -1, rc;

		EXPECT_EQ(MFS_OK, mfs_cache_tmp(c, &fd, &tmp, &err)) << err.msg;
		EXPECT_EQ((ssize_t)data.size(),
			  write(fd, data.data(), data.size()));
		rc = mfs_cache_commit(c, key.c_str(), fd, tmp, data.size());
		free(tmp);
		return rc;
	}

	/* Reads an entry that must be cached: fill() must not run. */
	std::string get_cached(const std::string &key, size_t size)
	{
		Fill f{std::string(size, 'X')};
		int fd = -1;
		std::string s;

		if (mfs_cache_get(c, key.c_str(), size, fill_fn, &f, &fd,
				  &err) != MFS_OK)
			return "<error>";
		s = read_fd(fd);
		close(fd);
		EXPECT_EQ(0, f.calls) << key << " was not cached";
		return s;
	}

	bool has(const std::string &key, size_t size)
	{
		return mfs_cache_has(c, key.c_str(), size) == 1;
	}
};

TEST_F(Cache, GetRoundTrip)
{
	std::string data = pattern("m/61/1/1", 5000);
	Fill f{data}, again{"never used"};
	int fd = -1;

	reopen(0);
	ASSERT_EQ(MFS_OK, mfs_cache_get(c, "m/61/1/1", data.size(), fill_fn, &f,
					&fd, &err))
	    << err.msg;
	EXPECT_EQ(1, f.calls);
	EXPECT_EQ(0, lseek(fd, 0, SEEK_CUR));
	EXPECT_EQ(data, read_fd(fd));
	close(fd);
	EXPECT_EQ(data, read_file(dir / "m/61/1/1"));
	EXPECT_EQ(data, get_cached("m/61/1/1", data.size()));
	EXPECT_TRUE(has("m/61/1/1", data.size()));
	EXPECT_FALSE(has("m/61/1/1", data.size() + 1));
	EXPECT_FALSE(has("m/61/1/2", data.size()));
	EXPECT_EQ(data.size(), mfs_cache_usage(c));

	/* the wrong size on disk: fetched again, and counted once */
	std::string longer = pattern("m/61/1/1", 6000);
	put("m/61/1/1", longer);
	EXPECT_EQ(longer, read_file(dir / "m/61/1/1"));
	EXPECT_EQ(longer.size(), mfs_cache_usage(c));
	EXPECT_TRUE(files_named_tmp(dir).empty());
}

TEST_F(Cache, CommitRoundTrip)
{
	std::string data = pattern("m/61/1/7.p2", 3000);

	reopen(0);
	EXPECT_EQ(0, commit("m/61/1/7.p2", data));
	EXPECT_EQ(data, get_cached("m/61/1/7.p2", data.size()));
	/* a size that is not the announced one is not kept */
	char *tmp = nullptr;
	int fd = -1;
	ASSERT_EQ(MFS_OK, mfs_cache_tmp(c, &fd, &tmp, &err));
	ASSERT_EQ(3, write(fd, "abc", 3));
	EXPECT_EQ(-1, mfs_cache_commit(c, "m/61/1/8", fd, tmp, 4));
	free(tmp);
	EXPECT_FALSE(fs::exists(dir / "m/61/1/8"));
	EXPECT_TRUE(files_named_tmp(dir).empty());
	EXPECT_EQ(data.size(), mfs_cache_usage(c));
}

TEST_F(Cache, EntryOfAnySize)
{
	std::string data = pattern("m/61/1/9.s", 777);
	Fill f{data}, none{"never used"};
	int fd = -1;

	reopen(0);
	EXPECT_FALSE(has("m/61/1/9.s", MFS_CACHE_ANY_SIZE));
	EXPECT_EQ(0, mfs_cache_known(c, "m/61/1/9.s", MFS_CACHE_ANY_SIZE));
	/* filled whatever the length the fill gives */
	ASSERT_EQ(MFS_OK, mfs_cache_get(c, "m/61/1/9.s", MFS_CACHE_ANY_SIZE,
					fill_fn, &f, &fd, &err))
	    << err.msg;
	EXPECT_EQ(data, read_fd(fd));
	close(fd);
	EXPECT_EQ(1, f.calls);
	EXPECT_TRUE(has("m/61/1/9.s", MFS_CACHE_ANY_SIZE));
	EXPECT_TRUE(has("m/61/1/9.s", data.size()));
	EXPECT_EQ(1, mfs_cache_known(c, "m/61/1/9.s", MFS_CACHE_ANY_SIZE));
	EXPECT_EQ(0, mfs_cache_known(c, "m/61/1/9.s", data.size() + 1));
	EXPECT_EQ(data.size(), mfs_cache_usage(c));
	/* and a hit, counted at its real size */
	ASSERT_EQ(MFS_OK, mfs_cache_get(c, "m/61/1/9.s", MFS_CACHE_ANY_SIZE,
					fill_fn, &none, &fd, &err));
	EXPECT_EQ(data, read_fd(fd));
	close(fd);
	EXPECT_EQ(0, none.calls);

	/* a commit of any size; replaced, and counted once */
	char *tmp = nullptr;
	ASSERT_EQ(MFS_OK, mfs_cache_tmp(c, &fd, &tmp, &err));
	ASSERT_EQ(3, write(fd, "abc", 3));
	EXPECT_EQ(0, mfs_cache_commit(c, "m/61/1/9.s", fd, tmp,
				      MFS_CACHE_ANY_SIZE));
	free(tmp);
	EXPECT_EQ("abc", read_file(dir / "m/61/1/9.s"));
	EXPECT_EQ(3u, mfs_cache_usage(c));
	EXPECT_TRUE(files_named_tmp(dir).empty());
}

TEST_F(Cache, TakeOpensOnlyWhatIsThere)
{
	std::string data = pattern("m/61/1/10", 900);
	int fd = -1;

	reopen(0);
	EXPECT_EQ(-1, mfs_cache_take(c, "m/61/1/10", MFS_CACHE_ANY_SIZE, &fd));
	EXPECT_EQ(-1, fd);
	EXPECT_TRUE(files_named_tmp(dir).empty()) << "nothing made";
	EXPECT_EQ(0, commit("m/61/1/10", data));
	EXPECT_EQ(-1, mfs_cache_take(c, "m/61/1/10", data.size() + 1, &fd));
	ASSERT_EQ(0, mfs_cache_take(c, "m/61/1/10", data.size(), &fd));
	EXPECT_EQ(data, read_fd(fd));
	close(fd);
	ASSERT_EQ(0, mfs_cache_take(c, "m/61/1/10", MFS_CACHE_ANY_SIZE, &fd));
	close(fd);
	EXPECT_EQ(-1, mfs_cache_take(c, "../x", MFS_CACHE_ANY_SIZE, &fd));
}

TEST_F(Cache, InvalidKeysRejected)
{
	const char *bad[] = {"../x",	  "m/../../x", "outbox/q", "outbox",
			     "m/.hidden", "m//x",      "m/x/",	   "/m/x",
			     "m/x.tmp.1", "m/x y",     ""};

	reopen(0);
	for (const char *k : bad) {
		Fill f{"data"};
		int fd = -1;
		EXPECT_EQ(MFS_E_IO,
			  mfs_cache_get(c, k, 4, fill_fn, &f, &fd, &err))
		    << k;
		EXPECT_EQ(0, f.calls) << k;
		EXPECT_FALSE(has(k, 4)) << k;
	}
	EXPECT_FALSE(fs::exists(dir.parent_path() / "x"));
	EXPECT_FALSE(fs::exists(dir / "outbox"));
}

TEST_F(Cache, BoundHoldsAfterManyCommits)
{
	const uint64_t limit = 64 * 1024;
	std::mt19937 rng(7);
	std::string last;

	reopen(limit);
	for (int i = 0; i < 300; i++) {
		std::string key = "m/62/1/" + std::to_string(i);
		std::string data = pattern(key, 500 + rng() % 3500);
		if (i % 2 == 0)
			put(key, data);
		else
			EXPECT_EQ(0, commit(key, data));
		ASSERT_LE(disk_total(dir), limit) << "after entry " << i;
		/* the newest entry is never the one that goes */
		EXPECT_TRUE(has(key, data.size())) << key;
	}
	EXPECT_EQ(disk_total(dir), mfs_cache_usage(c));
	/* eviction went down to 90%, so the cache is not near empty */
	EXPECT_GT(disk_total(dir), limit / 2);
	for (auto &e : fs::recursive_directory_iterator(dir)) {
		if (!e.is_regular_file())
			continue;
		std::string key = fs::relative(e.path(), dir).string();
		EXPECT_EQ(pattern(key, e.file_size()), read_file(e.path()))
		    << key;
	}
	EXPECT_TRUE(files_named_tmp(dir).empty());
}

/* 1 KiB entries under a 10 KiB bound: 10 fit; the 11th takes the total to
 * 11 KiB and the cache evicts down to 9 KiB, i.e. the two least recently
 * used entries. */
static std::string lru_key(int i)
{
	return "m/63/1/" + std::to_string(i);
}

TEST_F(Cache, RecentlyReadEntrySurvives)
{
	reopen(10 * 1024);
	for (int i = 0; i <= 8; i++)
		put(lru_key(i), pattern(lru_key(i), 1024));
	EXPECT_EQ(pattern(lru_key(0), 1024), get_cached(lru_key(0), 1024));
	put(lru_key(9), pattern(lru_key(9), 1024));
	EXPECT_EQ(10u * 1024, disk_total(dir));
	put(lru_key(10), pattern(lru_key(10), 1024));
	EXPECT_EQ(9u * 1024, disk_total(dir));
	EXPECT_TRUE(has(lru_key(0), 1024));
	EXPECT_FALSE(has(lru_key(1), 1024));
	EXPECT_FALSE(has(lru_key(2), 1024));
	for (int i = 3; i <= 10; i++)
		EXPECT_TRUE(has(lru_key(i), 1024)) << i;
}

TEST_F(Cache, OrderSurvivesReopen)
{
	reopen(10 * 1024);
	for (int i = 0; i <= 8; i++)
		put(lru_key(i), pattern(lru_key(i), 1024));
	EXPECT_EQ(pattern(lru_key(0), 1024), get_cached(lru_key(0), 1024));

	reopen(10 * 1024);
	EXPECT_EQ(9u * 1024, mfs_cache_usage(c));
	put(lru_key(9), pattern(lru_key(9), 1024));
	put(lru_key(10), pattern(lru_key(10), 1024));
	EXPECT_TRUE(has(lru_key(0), 1024));
	EXPECT_FALSE(has(lru_key(1), 1024));
	EXPECT_FALSE(has(lru_key(2), 1024));
	EXPECT_TRUE(has(lru_key(3), 1024));

	/* a read after reopening counts too; a lower bound applies at once:
	 * 9 KiB down to at most 4.5 KiB, oldest use first */
	EXPECT_EQ(pattern(lru_key(3), 1024), get_cached(lru_key(3), 1024));
	reopen(0);
	mfs_cache_set_limit(c, 5 * 1024);
	EXPECT_LE(disk_total(dir), 4608u);
	EXPECT_EQ(disk_total(dir), mfs_cache_usage(c));
	for (int i : {4, 5, 6, 7, 8})
		EXPECT_FALSE(has(lru_key(i), 1024)) << i;
	for (int i : {0, 9, 10, 3})
		EXPECT_TRUE(has(lru_key(i), 1024)) << i;
}

TEST_F(Cache, ConcurrentCommitsStayBoundedAndIntact)
{
	const uint64_t limit = 96 * 1024;
	std::atomic<int> bad{0};
	std::vector<std::thread> threads;

	reopen(limit);
	for (int t = 0; t < 4; t++) {
		threads.emplace_back([this, t, &bad] {
			std::mt19937 rng(t);
			for (int i = 0; i < 150; i++) {
				std::string key = "m/64/" + std::to_string(t) +
						  "/" + std::to_string(i);
				std::string data =
				    pattern(key, 256 + (i * 37 + t) % 3840);
				if (i % 2 == 0) {
					Fill f{data};
					int fd = -1;
					if (mfs_cache_get(c, key.c_str(),
							  data.size(), fill_fn,
							  &f, &fd,
							  nullptr) != MFS_OK ||
					    read_fd(fd) != data)
						bad++;
					close(fd);
				} else {
					char *tmp = nullptr;
					int fd = -1;
					if (mfs_cache_tmp(c, &fd, &tmp,
							  nullptr) != MFS_OK ||
					    write(fd, data.data(),
						  data.size()) !=
						(ssize_t)data.size()) {
						bad++;
						continue;
					}
					mfs_cache_commit(c, key.c_str(), fd,
							 tmp, data.size());
					free(tmp);
				}
				/* and a read of an earlier entry */
				int j = (int)(rng() % (i + 1));
				std::string k2 = "m/64/" + std::to_string(t) +
						 "/" + std::to_string(j);
				std::string d2 =
				    pattern(k2, 256 + (j * 37 + t) % 3840);
				Fill f2{d2};
				int fd2 = -1;
				if (mfs_cache_get(c, k2.c_str(), d2.size(),
						  fill_fn, &f2, &fd2,
						  nullptr) != MFS_OK ||
				    read_fd(fd2) != d2)
					bad++;
				close(fd2);
			}
		});
	}
	for (auto &th : threads)
		th.join();
	EXPECT_EQ(0, bad.load());
	EXPECT_LE(disk_total(dir), limit);
	EXPECT_EQ(disk_total(dir), mfs_cache_usage(c));
	int survivors = 0;
	for (auto &e : fs::recursive_directory_iterator(dir)) {
		if (!e.is_regular_file())
			continue;
		std::string key = fs::relative(e.path(), dir).string();
		int t = key[5] - '0';
		int i = std::stoi(key.substr(7));
		EXPECT_EQ(pattern(key, 256 + (i * 37 + t) % 3840),
			  read_file(e.path()))
		    << key;
		survivors++;
	}
	EXPECT_GT(survivors, 10);
	EXPECT_TRUE(files_named_tmp(dir).empty());
}

TEST_F(Cache, TornTempFilesRemovedAtOpenAndNeverServed)
{
	fs::create_directories(dir / "m/65/1");
	write_file(dir / "m/65/1/5.tmp.abc123", "torn", 0600);
	write_file(dir / "ahead.tmp.QWERTY", "torn too", 0600);
	/* an entry left with the wrong size: fetched again */
	write_file(dir / "m/65/1/6", "short", 0600);
	/* a temporary file a live writer (another mount) holds stays */
	write_file(dir / "m/65/1/7.tmp.live01", "in flight", 0600);
	int live = open((dir / "m/65/1/7.tmp.live01").c_str(), O_RDONLY);
	ASSERT_GE(live, 0);
	ASSERT_EQ(0, flock(live, LOCK_EX));

	reopen(0);
	EXPECT_FALSE(fs::exists(dir / "m/65/1/5.tmp.abc123"));
	EXPECT_FALSE(fs::exists(dir / "ahead.tmp.QWERTY"));
	EXPECT_TRUE(fs::exists(dir / "m/65/1/7.tmp.live01"));
	close(live);
	EXPECT_EQ(5u, mfs_cache_usage(c));

	std::string data = pattern("m/65/1/5", 4);
	Fill f{data};
	int fd = -1;
	ASSERT_EQ(MFS_OK,
		  mfs_cache_get(c, "m/65/1/5", 4, fill_fn, &f, &fd, &err));
	EXPECT_EQ(1, f.calls);
	EXPECT_EQ(data, read_fd(fd));
	close(fd);

	Fill f6{pattern("m/65/1/6", 8)};
	ASSERT_EQ(MFS_OK,
		  mfs_cache_get(c, "m/65/1/6", 8, fill_fn, &f6, &fd, &err));
	EXPECT_EQ(1, f6.calls);
	EXPECT_EQ(f6.data, read_fd(fd));
	close(fd);
	EXPECT_EQ(12u, mfs_cache_usage(c));

	/* the unlocked one goes at the next open */
	reopen(0);
	EXPECT_TRUE(files_named_tmp(dir).empty());
}

TEST_F(Cache, ModesArePrivate)
{
	mode_t old = umask(0);

	fs::create_directories(dir / "m/66");
	chmod(dir.c_str(), 0755);
	chmod((dir / "m").c_str(), 0755);
	chmod((dir / "m/66").c_str(), 0777);
	write_file(dir / "m/66/old", "old entry", 0644);
	chmod((dir / "m/66/old").c_str(), 0644);

	reopen(0);
	put("m/66/1/2", pattern("a", 100));
	put("m/67/9/9.p1", pattern("b", 100));
	EXPECT_EQ(0, commit("m/68/1/1", pattern("c", 100)));
	umask(old);

	struct stat st;
	ASSERT_EQ(0, stat(dir.c_str(), &st));
	EXPECT_EQ(0700u, st.st_mode & 07777);
	int dirs = 0, files = 0;
	for (auto &e : fs::recursive_directory_iterator(dir)) {
		ASSERT_EQ(0, lstat(e.path().c_str(), &st));
		if (S_ISDIR(st.st_mode)) {
			EXPECT_EQ(0700u, st.st_mode & 07777) << e.path();
			dirs++;
		} else {
			EXPECT_EQ(0600u, st.st_mode & 07777) << e.path();
			files++;
		}
	}
	EXPECT_EQ(4, files);
	EXPECT_GE(dirs, 7);
}

TEST_F(Cache, OutboxIsLeftAlone)
{
	fs::create_directories(dir / "outbox");
	write_file(dir / "outbox/q1", std::string(50000, 'q'), 0600);
	write_file(dir / "outbox/q2.tmp.x", "state", 0600);

	reopen(8 * 1024);
	EXPECT_EQ(0u, mfs_cache_usage(c));
	for (int i = 0; i < 20; i++)
		put("m/69/1/" + std::to_string(i), pattern("o", 2000));
	EXPECT_LE(disk_total(dir), 8u * 1024);
	EXPECT_EQ(50000u, fs::file_size(dir / "outbox/q1"));
	EXPECT_TRUE(fs::exists(dir / "outbox/q2.tmp.x"));
	reopen(1);
	EXPECT_EQ(50000u, fs::file_size(dir / "outbox/q1"));
}

TEST_F(Cache, EntriesVanishingBehindItsBack)
{
	const uint64_t limit = 16 * 1024;

	reopen(limit);
	for (int i = 0; i < 12; i++)
		put("m/70/1/" + std::to_string(i), pattern("v", 1024));
	/* another mount removes entries, even a whole folder */
	fs::remove(dir / "m/70/1/0");
	fs::remove(dir / "m/70/1/5");
	put("m/71/1/0", pattern("w", 1024));
	fs::remove_all(dir / "m/71");
	for (int i = 12; i < 40; i++) {
		put("m/70/1/" + std::to_string(i), pattern("v", 1024));
		ASSERT_LE(disk_total(dir), limit);
	}
	/* a removed entry is fetched again */
	put("m/70/1/5", pattern("v5", 1024));
	EXPECT_TRUE(has("m/70/1/5", 1024));
	EXPECT_LE(mfs_cache_usage(c), limit);
}

TEST_F(Cache, EntryOfAnotherProcessIsHitAndCounted)
{
	struct mfs_cache *other = nullptr;
	std::string data = pattern("m/72/1/1", 2048);

	reopen(0);
	ASSERT_EQ(MFS_OK, mfs_cache_open(dir.c_str(), &other, &err));
	Fill f{data};
	int fd = -1;
	ASSERT_EQ(MFS_OK, mfs_cache_get(other, "m/72/1/1", data.size(), fill_fn,
					&f, &fd, &err));
	close(fd);
	mfs_cache_close(other);
	EXPECT_EQ(0u, mfs_cache_usage(c));
	EXPECT_EQ(data, get_cached("m/72/1/1", data.size()));
	EXPECT_EQ(data.size(), mfs_cache_usage(c));
}

TEST_F(Cache, EntryLargerThanTheBoundIsServedNotKept)
{
	std::string big = pattern("m/73/1/1", 10000);

	reopen(4096);
	put("m/73/1/0", pattern("m/73/1/0", 1000));
	put("m/73/1/1", big);
	EXPECT_FALSE(fs::exists(dir / "m/73/1/1"));
	EXPECT_EQ(1, commit("m/73/1/2", big) == -1);
	EXPECT_FALSE(fs::exists(dir / "m/73/1/2"));
	EXPECT_TRUE(has("m/73/1/0", 1000));
	EXPECT_EQ(1000u, mfs_cache_usage(c));
	EXPECT_TRUE(files_named_tmp(dir).empty());
}

TEST_F(Cache, NewEntryIsNotEvictedByItsOwnCommit)
{
	reopen(10 * 1024);
	put("m/75/1/0", pattern("m/75/1/0", 3 * 1024));
	/* 12.5 KiB: the old entry goes, and the new one stays though the
	 * total is still above 90% of the bound */
	put("m/75/1/1", pattern("m/75/1/1", 9728));
	EXPECT_FALSE(has("m/75/1/0", 3 * 1024));
	EXPECT_TRUE(has("m/75/1/1", 9728));
	EXPECT_EQ(9728u, disk_total(dir));
	EXPECT_EQ(0, commit("m/75/1/2", pattern("m/75/1/2", 9728)));
	EXPECT_TRUE(has("m/75/1/2", 9728));
	EXPECT_EQ(9728u, disk_total(dir));
}

TEST_F(Cache, ZeroLimitMeansDefault)
{
	reopen(0);
	mfs_cache_set_limit(c, 0);
	/* 1 GiB: a few MiB are all kept */
	for (int i = 0; i < 4; i++)
		put("m/74/1/" + std::to_string(i), pattern("z", 1 << 20));
	EXPECT_EQ(4u << 20, disk_total(dir));
	EXPECT_EQ(1ULL << 30, MFS_CACHE_DEFAULT_LIMIT);
}

} // namespace

// A cache directory that belongs to someone else is refused. A file in it
// that belongs to someone else (planted while it was open to others) is
// not served as mail, nor one reached through a symbolic link.
TEST_F(Cache, ForeignDirectoryAndFilesAreRefused)
{
	fs::create_directories(dir);
	if (chown(dir.c_str(), 65534, 65534) != 0)
		GTEST_SKIP() << "cannot chown (not root)";
	EXPECT_EQ(MFS_E_ACCESS, mfs_cache_open(dir.c_str(), &c, &err));
	EXPECT_EQ(nullptr, c);
	EXPECT_NE(nullptr, strstr(err.msg, dir.c_str())) << err.msg;
	EXPECT_NE(nullptr, strstr(err.msg, "uid 65534")) << err.msg;
	ASSERT_EQ(0, chown(dir.c_str(), geteuid(), getegid()));

	fs::create_directories(dir / "m/1");
	write_file(dir / "m/1/forged", "forged!", 0600);
	ASSERT_EQ(0, chown((dir / "m/1/forged").c_str(), 65534, 65534));
	fs::path elsewhere = dir.parent_path() / "elsewhere";
	write_file(elsewhere, "linked!", 0600);
	ASSERT_EQ(0, symlink(elsewhere.c_str(), (dir / "m/1/linked").c_str()));
	reopen(0);
	for (const char *key : {"m/1/forged", "m/1/linked"}) {
		Fill f{"genuine"};
		int fd = -1;

		ASSERT_EQ(MFS_OK,
			  mfs_cache_get(c, key, 7, fill_fn, &f, &fd, &err))
		    << err.msg;
		EXPECT_EQ("genuine", read_fd(fd)) << key;
		EXPECT_EQ(1, f.calls) << key;
		close(fd);
	}
	EXPECT_EQ("linked!", read_file(elsewhere));
}
