// Unit tests for hash.c: FNV-1a, 64 bits.
#include <gtest/gtest.h>

#include <cstring>

extern "C" {
#include "hash.h"
}

// The published FNV-1a 64-bit test vectors.
TEST(Hash, KnownVectors)
{
	EXPECT_EQ(mfs_fnv1a(MFS_FNV1A_INIT, "", 0), 0xcbf29ce484222325ULL);
	EXPECT_EQ(mfs_fnv1a(MFS_FNV1A_INIT, "a", 1), 0xaf63dc4c8601ec8cULL);
	EXPECT_EQ(mfs_fnv1a(MFS_FNV1A_INIT, "foobar", 6),
		  0x85944171f73967e8ULL);
}

TEST(Hash, StringIsItsBytes)
{
	const char *s = "INBOX/\xc3\xa9t\xc3\xa9";

	EXPECT_EQ(mfs_fnv1a_str(MFS_FNV1A_INIT, s),
		  mfs_fnv1a(MFS_FNV1A_INIT, s, strlen(s)));
	EXPECT_EQ(mfs_fnv1a_str(MFS_FNV1A_INIT, ""), MFS_FNV1A_INIT);
}

// A hash continued piece by piece is the hash of the whole.
TEST(Hash, Continues)
{
	uint64_t h = mfs_fnv1a(MFS_FNV1A_INIT, "foo", 3);

	EXPECT_EQ(mfs_fnv1a(h, "bar", 3), mfs_fnv1a(MFS_FNV1A_INIT, "foobar", 6));
	EXPECT_EQ(mfs_fnv1a_str(h, "bar"),
		  mfs_fnv1a(MFS_FNV1A_INIT, "foobar", 6));
}
