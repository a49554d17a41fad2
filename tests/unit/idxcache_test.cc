#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

extern "C" {
#include "idxcache.h"
}

namespace fs = std::filesystem;

namespace
{

struct Msg {
	uint32_t uid;
	unsigned flags;
	uint64_t size;
	time_t date;
	std::string from, subject;
};

class IdxCache : public ::testing::Test
{
      protected:
	void SetUp() override
	{
		char tmpl[] = "/tmp/idxcache-test-XXXXXX";

		ASSERT_NE(mkdtemp(tmpl), nullptr);
		dir = tmpl;
		cache = dir + "/cache";
		char *p = mfs_idx_path(cache.c_str(), "INBOX/R&AOk-sum&AOk-");
		ASSERT_NE(p, nullptr);
		path = p;
		free(p);
	}
	void TearDown() override { fs::remove_all(dir); }

	/* The entries of in, borrowing its strings. */
	static std::vector<struct mfs_store_msg> entries(const std::vector<Msg> &in)
	{
		std::vector<struct mfs_store_msg> m(in.size());

		for (size_t i = 0; i < in.size(); i++) {
			m[i] = {};
			m[i].uid = in[i].uid;
			m[i].flags = in[i].flags;
			m[i].size = in[i].size;
			m[i].date = in[i].date;
			m[i].from = (char *)in[i].from.c_str();
			m[i].subject = (char *)in[i].subject.c_str();
		}
		return m;
	}

	int save(const std::vector<Msg> &in, const struct mfs_idx_head &head,
		 const char *key = "alice@host/INBOX")
	{
		std::vector<struct mfs_store_msg> m = entries(in);
		struct mfs_err err;

		return mfs_idx_save(path.c_str(), key, &head, m.data(),
				    m.size(), &err);
	}

	/* Opens and reads the file; returns the code of the first failure. */
	int load(std::vector<Msg> &out, struct mfs_idx_head &head,
		 const char *key = "alice@host/INBOX")
	{
		struct mfs_idx_reader *rd = nullptr;
		struct mfs_store_msg *msgs = nullptr;
		struct mfs_err err;
		size_t n = 0;
		int r;

		r = mfs_idx_open(path.c_str(), key, &head, &rd, &err);
		if (r != MFS_OK)
			return r;
		r = mfs_idx_read(rd, &msgs, &n, &err);
		mfs_idx_close(rd);
		if (r != MFS_OK)
			return r;
		out.clear();
		for (size_t i = 0; i < n; i++) {
			out.push_back({msgs[i].uid, msgs[i].flags,
				       msgs[i].size, msgs[i].date,
				       msgs[i].from, msgs[i].subject});
			free(msgs[i].from);
			free(msgs[i].subject);
			EXPECT_EQ(msgs[i].uidl, nullptr);
		}
		free(msgs);
		return MFS_OK;
	}

	std::string slurp()
	{
		std::ifstream f(path, std::ios::binary);
		return std::string(std::istreambuf_iterator<char>(f), {});
	}

	void spill(const std::string &bytes)
	{
		std::ofstream f(path, std::ios::binary | std::ios::trunc);
		f << bytes;
	}

	std::vector<Msg> sample()
	{
		return {
		    {3, 1, 1234, 1700000000, "Ren\xc3\xa9\x65 Dupr\xc3\xa9",
		     "R\xc3\xa9sum\xc3\xa9 \xe2\x80\x94 \xe6\x97\xa5\xe6\x9c\xac"},
		    {7, 5, 0, -5, "", ""},
		    {4000000000u, 31, 1ULL << 40, 4102444800,
		     "bob@example.test", std::string(3000, 'x')},
		};
	}

	struct mfs_idx_head head_of()
	{
		struct mfs_idx_head h = {};

		h.validity = 1699999999;
		h.uidnext = 4000000001u;
		h.exists = 3;
		h.modseq = 0x123456789abcULL;
		return h;
	}

	std::string dir, cache, path;
};

TEST_F(IdxCache, PathIsHexOfTheFolderUnderDotIndex)
{
	char *p = mfs_idx_path("/c", "A/\xc3\xa9");

	ASSERT_NE(p, nullptr);
	EXPECT_STREQ(p, "/c/.index/412fc3a9");
	free(p);

	std::string longname(200, 'n');
	char *a = mfs_idx_path("/c", longname.c_str());
	longname[199] = 'm';
	char *b = mfs_idx_path("/c", longname.c_str());
	ASSERT_NE(a, nullptr);
	ASSERT_NE(b, nullptr);
	EXPECT_LT(strlen(a), 40u);
	EXPECT_STRNE(a, b);
	free(a);
	free(b);
}

TEST_F(IdxCache, RoundTripKeepsEveryField)
{
	std::vector<Msg> in = sample(), out;
	struct mfs_idx_head h = head_of(), got = {};

	ASSERT_EQ(save(in, h), MFS_OK);
	ASSERT_EQ(load(out, got), MFS_OK);
	EXPECT_EQ(got.validity, h.validity);
	EXPECT_EQ(got.uidnext, h.uidnext);
	EXPECT_EQ(got.exists, h.exists);
	EXPECT_EQ(got.modseq, h.modseq);
	EXPECT_EQ(got.count, 3u);
	ASSERT_EQ(out.size(), in.size());
	for (size_t i = 0; i < in.size(); i++) {
		EXPECT_EQ(out[i].uid, in[i].uid);
		EXPECT_EQ(out[i].flags, in[i].flags);
		EXPECT_EQ(out[i].size, in[i].size);
		EXPECT_EQ(out[i].date, in[i].date);
		EXPECT_EQ(out[i].from, in[i].from);
		EXPECT_EQ(out[i].subject, in[i].subject);
	}
}

TEST_F(IdxCache, EmptyListingAndReplacement)
{
	std::vector<Msg> out = sample();
	struct mfs_idx_head h = head_of(), got = {};

	ASSERT_EQ(save(sample(), h), MFS_OK);
	h.exists = 0;
	h.modseq = 9;
	ASSERT_EQ(save({}, h), MFS_OK);
	ASSERT_EQ(load(out, got), MFS_OK);
	EXPECT_TRUE(out.empty());
	EXPECT_EQ(got.modseq, 9u);
	/* no temporary file left behind */
	int files = 0;
	for (auto &e : fs::directory_iterator(fs::path(path).parent_path())) {
		(void)e;
		files++;
	}
	EXPECT_EQ(files, 1);
}

TEST_F(IdxCache, ModesArePrivate)
{
	struct stat st;

	ASSERT_EQ(save(sample(), head_of()), MFS_OK);
	ASSERT_EQ(stat(path.c_str(), &st), 0);
	EXPECT_EQ(st.st_mode & 07777, 0600u);
	ASSERT_EQ(stat(fs::path(path).parent_path().c_str(), &st), 0);
	EXPECT_EQ(st.st_mode & 07777, 0700u);
	ASSERT_EQ(stat(cache.c_str(), &st), 0);
	EXPECT_EQ(st.st_mode & 07777, 0700u);

	/* an existing directory with a loose mode is tightened */
	ASSERT_EQ(chmod(fs::path(path).parent_path().c_str(), 0755), 0);
	ASSERT_EQ(save(sample(), head_of()), MFS_OK);
	ASSERT_EQ(stat(fs::path(path).parent_path().c_str(), &st), 0);
	EXPECT_EQ(st.st_mode & 07777, 0700u);
}

TEST_F(IdxCache, MissingFileIsNoent)
{
	std::vector<Msg> out;
	struct mfs_idx_head got;

	EXPECT_EQ(load(out, got), MFS_E_NOENT);
}

TEST_F(IdxCache, EveryTruncationIsRefused)
{
	std::vector<Msg> out;
	struct mfs_idx_head got;

	ASSERT_EQ(save(sample(), head_of()), MFS_OK);
	std::string whole = slurp();
	ASSERT_GT(whole.size(), 3000u);
	for (size_t len = 0; len < whole.size(); len += (len < 200 ? 1 : 97)) {
		spill(whole.substr(0, len));
		EXPECT_EQ(load(out, got), MFS_E_IO) << "cut at " << len;
	}
	spill(whole + "x");
	EXPECT_EQ(load(out, got), MFS_E_IO) << "trailing byte";
	spill(whole);
	EXPECT_EQ(load(out, got), MFS_OK);
}

TEST_F(IdxCache, EveryFlippedByteIsRefused)
{
	std::vector<Msg> out;
	struct mfs_idx_head got;

	ASSERT_EQ(save(sample(), head_of()), MFS_OK);
	std::string whole = slurp();
	for (size_t i = 0; i < whole.size(); i += (i < 300 ? 1 : 53)) {
		std::string bad = whole;
		bad[i] ^= 0x20;
		spill(bad);
		EXPECT_NE(load(out, got), MFS_OK) << "byte " << i;
	}
}

TEST_F(IdxCache, OtherVersionIsRefused)
{
	std::vector<Msg> out;
	struct mfs_idx_head got;

	ASSERT_EQ(save(sample(), head_of()), MFS_OK);
	std::string whole = slurp();
	/* the version follows the 8-byte magic, little-endian */
	ASSERT_EQ((unsigned char)whole[8], MFS_IDX_VERSION);
	whole[8] = (char)(MFS_IDX_VERSION + 1);
	spill(whole);
	EXPECT_EQ(load(out, got), MFS_E_IO);
}

TEST_F(IdxCache, OtherKeyIsRefused)
{
	std::vector<Msg> out;
	struct mfs_idx_head got;

	ASSERT_EQ(save(sample(), head_of(), "alice@host/INBOX"), MFS_OK);
	EXPECT_EQ(load(out, got, "bob@host/INBOX"), MFS_E_IO);
	EXPECT_EQ(load(out, got, "alice@host/INBOX"), MFS_OK);
}

TEST_F(IdxCache, WrittenAsItComesIsTheSameFile)
{
	std::vector<Msg> in = sample();
	struct mfs_idx_head h = head_of();
	std::vector<struct mfs_store_msg> m = entries(in);
	struct mfs_idx_out *o = nullptr;
	struct mfs_err err;

	ASSERT_EQ(save(in, h), MFS_OK);
	std::string whole = slurp();
	fs::remove(path);
	ASSERT_EQ(mfs_idx_out_open(path.c_str(), "alice@host/INBOX", &h,
				   m.size(), &o, &err),
		  MFS_OK)
	    << err.msg;
	for (auto &x : m) {
		EXPECT_FALSE(fs::exists(path)) << "in place before the commit";
		mfs_idx_out_add(o, &x);
	}
	ASSERT_EQ(mfs_idx_out_commit(o, &err), MFS_OK) << err.msg;
	EXPECT_EQ(slurp(), whole);
	EXPECT_EQ(std::distance(fs::directory_iterator(fs::path(path)
							   .parent_path()),
				fs::directory_iterator{}),
		  1)
	    << "no temporary file left";
}

TEST_F(IdxCache, WrittenAsItComesKeepsNothingAmiss)
{
	std::vector<Msg> in = sample();
	struct mfs_idx_head h = head_of();
	std::vector<struct mfs_store_msg> m = entries(in);
	struct mfs_err err;

	/* fewer than announced, more, out of order, aborted: none kept */
	for (int k = 0; k < 4; k++) {
		struct mfs_idx_out *o = nullptr;
		ASSERT_EQ(mfs_idx_out_open(path.c_str(), "alice@host/INBOX",
					   &h, k == 1 ? 2 : 3, &o, &err),
			  MFS_OK);
		if (k == 2) {
			mfs_idx_out_add(o, &m[1]);
			mfs_idx_out_add(o, &m[0]);
			mfs_idx_out_add(o, &m[2]);
		} else {
			for (size_t i = 0; i < (k == 0 ? 2u : 3u); i++)
				mfs_idx_out_add(o, &m[i]);
		}
		if (k == 3) {
			mfs_idx_out_abort(o);
		} else {
			EXPECT_EQ(mfs_idx_out_commit(o, &err), MFS_E_INVAL)
			    << k;
		}
		EXPECT_FALSE(fs::exists(path)) << k;
		EXPECT_EQ(std::distance(fs::directory_iterator(
					    fs::path(path).parent_path()),
					fs::directory_iterator{}),
			  0)
		    << k;
	}
}

TEST_F(IdxCache, UnorderedListingIsNotSaved)
{
	std::vector<Msg> in = sample();
	std::swap(in[0], in[1]);

	EXPECT_EQ(save(in, head_of()), MFS_E_INVAL);
	EXPECT_FALSE(fs::exists(path));
}

} // namespace

/* A listing that is a symbolic link, or belongs to another user, is not
 * served; a directory of another user is not written into. */
TEST_F(IdxCache, LinkedOrForeignListingIsRefused)
{
	std::vector<Msg> out;
	struct mfs_idx_head got;
	std::string elsewhere = dir + "/elsewhere";

	ASSERT_EQ(save(sample(), head_of()), MFS_OK);
	fs::rename(path, elsewhere);
	ASSERT_EQ(symlink(elsewhere.c_str(), path.c_str()), 0);
	EXPECT_EQ(load(out, got), MFS_E_IO);
	ASSERT_EQ(unlink(path.c_str()), 0);
	fs::rename(elsewhere, path);
	EXPECT_EQ(load(out, got), MFS_OK);
	if (chown(path.c_str(), 65534, 65534) != 0)
		GTEST_SKIP() << "cannot chown (not root)";
	EXPECT_EQ(load(out, got), MFS_E_IO);
	ASSERT_EQ(chown(fs::path(path).parent_path().c_str(), 65534, 65534), 0);
	EXPECT_EQ(save(sample(), head_of()), MFS_E_IO);
}
