// Unit tests for privdir.c: directories made 0700 and used only when
// they are the user's own.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <string>

extern "C" {
#include "privdir.h"
}

namespace fs = std::filesystem;

namespace
{

class PrivDir : public ::testing::Test
{
      protected:
	fs::path top;

	void SetUp() override
	{
		char tmpl[] = "/tmp/mfs-privdir-XXXXXX";

		ASSERT_NE(mkdtemp(tmpl), nullptr);
		top = tmpl;
	}
	void TearDown() override
	{
		std::error_code ec;

		fs::remove_all(top, ec);
	}
};

unsigned mode_of(const fs::path &p)
{
	struct stat st;

	EXPECT_EQ(0, lstat(p.c_str(), &st));
	return st.st_mode & 07777;
}

} // namespace

TEST_F(PrivDir, MkdirPMakesEveryLevel0700)
{
	fs::path d = top / "a/b/c";

	ASSERT_EQ(0, mfs_mkdir_p(d.c_str()));
	EXPECT_EQ(0700u, mode_of(top / "a"));
	EXPECT_EQ(0700u, mode_of(top / "a/b"));
	EXPECT_EQ(0700u, mode_of(d));
	// again: nothing to do; an existing mode stays
	ASSERT_EQ(0, chmod((top / "a").c_str(), 0755));
	EXPECT_EQ(0, mfs_mkdir_p(d.c_str()));
	EXPECT_EQ(0755u, mode_of(top / "a"));
}

TEST_F(PrivDir, MkdirPFailsOnAFile)
{
	int fd = open((top / "f").c_str(), O_CREAT | O_WRONLY, 0600);

	ASSERT_GE(fd, 0);
	close(fd);
	errno = 0;
	EXPECT_EQ(-1, mfs_mkdir_p((top / "f/sub").c_str()));
	EXPECT_EQ(ENOTDIR, errno);
}

TEST_F(PrivDir, OpenToOthersIsMadePrivate)
{
	fs::path d = top / "spool";
	struct mfs_err err = {};
	int fd = -2;

	ASSERT_EQ(0, mkdir(d.c_str(), 0777));
	ASSERT_EQ(0, chmod(d.c_str(), 0777));
	ASSERT_EQ(MFS_OK, mfs_mkdir_private(d.c_str(), O_NOFOLLOW, "spool",
					    &fd, &err))
	    << err.msg;
	EXPECT_GE(fd, 0);
	EXPECT_EQ(0700u, mode_of(d));
	struct stat a, b;
	ASSERT_EQ(0, fstat(fd, &a));
	ASSERT_EQ(0, stat(d.c_str(), &b));
	EXPECT_EQ(a.st_ino, b.st_ino);
	close(fd);
	// a mode that lets no one else in is left as it is
	ASSERT_EQ(0, chmod(d.c_str(), 0500));
	EXPECT_EQ(MFS_OK, mfs_mkdir_private(d.c_str(), 0, "spool", nullptr,
					    &err));
	EXPECT_EQ(0500u, mode_of(d));
	ASSERT_EQ(0, chmod(d.c_str(), 0700));
}

TEST_F(PrivDir, SymbolicLinkIsRefusedWithNoFollow)
{
	fs::path real = top / "real", link = top / "link";
	struct mfs_err err = {};
	int fd = -2;

	ASSERT_EQ(0, mkdir(real.c_str(), 0700));
	ASSERT_EQ(0, symlink(real.c_str(), link.c_str()));
	EXPECT_EQ(MFS_E_IO, mfs_mkdir_private(link.c_str(), O_NOFOLLOW,
					      "spool", &fd, &err));
	EXPECT_EQ(-1, fd);
	EXPECT_NE(nullptr, strstr(err.msg, link.c_str())) << err.msg;
	// without O_NOFOLLOW the link is followed (a configured cache_dir
	// may be one)
	EXPECT_EQ(MFS_OK,
		  mfs_mkdir_private(link.c_str(), 0, "cache", nullptr, &err))
	    << err.msg;
}

TEST_F(PrivDir, AnotherUsersIsRefused)
{
	fs::path d = top / "foreign";
	struct mfs_err err = {};
	int fd = -2;

	ASSERT_EQ(0, mkdir(d.c_str(), 0700));
	if (chown(d.c_str(), 65534, 65534) != 0)
		GTEST_SKIP() << "cannot chown (not root)";
	EXPECT_EQ(MFS_E_ACCESS, mfs_mkdir_private(d.c_str(), 0,
						  "cache directory", &fd, &err));
	EXPECT_EQ(-1, fd);
	EXPECT_NE(nullptr, strstr(err.msg, d.c_str())) << err.msg;
	EXPECT_NE(nullptr, strstr(err.msg, "uid 65534")) << err.msg;
	EXPECT_NE(nullptr, strstr(err.msg, "cache directory")) << err.msg;

	int dfd = open(d.c_str(), O_RDONLY | O_DIRECTORY);
	ASSERT_GE(dfd, 0);
	EXPECT_EQ(MFS_E_ACCESS,
		  mfs_dir_check_private(dfd, "spool directory", "X", &err));
	EXPECT_NE(nullptr, strstr(err.msg, "spool directory X")) << err.msg;
	close(dfd);
}
