// Unit tests for base64.c: the one encoder and decoder.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>

extern "C" {
#include "base64.h"
}

static std::string encode(const std::string &in)
{
	std::string out(MFS_B64_ENCODED_LEN(in.size()) + 1, 'x');
	size_t n = mfs_b64_encode_to(&out[0], in.data(), in.size());

	EXPECT_EQ(n, MFS_B64_ENCODED_LEN(in.size()));
	EXPECT_EQ(out[n], '\0');
	out.resize(n);
	return out;
}

// Decodes in pieces of step characters, as mime.c and names.c do.
static std::string decode(const std::string &in, size_t step)
{
	struct mfs_b64_dec d = {};
	std::string out;

	for (size_t i = 0; i < in.size(); i += step) {
		size_t take = std::min(step, in.size() - i);
		std::string buf(MFS_B64_DECODED_MAX(take), '\0');
		size_t n = mfs_b64_decode(&d, in.data() + i, take,
					  (unsigned char *)&buf[0]);

		EXPECT_LE(n, buf.size());
		out.append(buf, 0, n);
	}
	return out;
}

static std::string decode(const std::string &in)
{
	return decode(in, in.size() ? in.size() : 1);
}

// RFC 4648 section 10.
TEST(Base64, EncodeRfc4648Vectors)
{
	EXPECT_EQ(encode(""), "");
	EXPECT_EQ(encode("f"), "Zg==");
	EXPECT_EQ(encode("fo"), "Zm8=");
	EXPECT_EQ(encode("foo"), "Zm9v");
	EXPECT_EQ(encode("foob"), "Zm9vYg==");
	EXPECT_EQ(encode("fooba"), "Zm9vYmE=");
	EXPECT_EQ(encode("foobar"), "Zm9vYmFy");
	EXPECT_EQ(encode(std::string("\xff\xfe\x00", 3)), "//4A");
}

TEST(Base64, EncodeNewString)
{
	char *s = mfs_b64_encode("foobar", 6);

	ASSERT_NE(s, nullptr);
	EXPECT_STREQ(s, "Zm9vYmFy");
	free(s);
	s = mfs_b64_encode("", 0);
	ASSERT_NE(s, nullptr);
	EXPECT_STREQ(s, "");
	free(s);
}

TEST(Base64, Values)
{
	EXPECT_EQ(mfs_b64_value('A'), 0);
	EXPECT_EQ(mfs_b64_value('z'), 51);
	EXPECT_EQ(mfs_b64_value('0'), 52);
	EXPECT_EQ(mfs_b64_value('+'), 62);
	EXPECT_EQ(mfs_b64_value('/'), 63);
	EXPECT_EQ(mfs_b64_value('='), -1);
	EXPECT_EQ(mfs_b64_value(','), -1);
	EXPECT_EQ(mfs_b64_value(0x80 | 'A'), -1);
}

TEST(Base64, DecodeRoundTripEveryLengthAndStep)
{
	std::string in;

	for (int i = 0; i < 300; i++)
		in.push_back((char)(i * 37 + 11));
	for (size_t len = 0; len <= in.size(); len += 7) {
		std::string enc = encode(in.substr(0, len));

		for (size_t step : {1, 2, 3, 5, 64, 4096})
			EXPECT_EQ(decode(enc, step), in.substr(0, len))
			    << "len " << len << " step " << step;
	}
}

// The lenient rules mime.h promises for bodies.
TEST(Base64, DecodeIsLenient)
{
	// line breaks and garbage are skipped
	EXPECT_EQ(decode("Zm9v\r\nYmFy\r\n"), "foobar");
	EXPECT_EQ(decode("Zm*9v!Ym Fy"), "foobar");
	// padding is optional; a lone sextet at the end is dropped
	EXPECT_EQ(decode("Zm8"), "fo");
	EXPECT_EQ(decode("Zm9vY"), "foo");
	// '=' ends a group of two or three; decoding goes on after it
	EXPECT_EQ(decode("Zg==Zm8=Zm9v"), "ffofoo");
	EXPECT_EQ(decode("Zg=Zm9v"), "ffoo");
	// '=' after one character of a group does not end it
	EXPECT_EQ(decode("Z=m9v"), decode("Zm9v"));
	EXPECT_EQ(decode("===="), "");
	EXPECT_EQ(decode(""), "");
}

// RFC 2047 "B" words: alphabet, then only '='.
TEST(Base64, Strict)
{
	auto ok = [](const char *s) { return mfs_b64_is_strict(s, strlen(s)); };

	EXPECT_TRUE(ok(""));
	EXPECT_TRUE(ok("Zm9v"));
	EXPECT_TRUE(ok("Zm8="));
	EXPECT_TRUE(ok("Zm8"));	 // missing padding is tolerated
	EXPECT_TRUE(ok("Zg"));
	EXPECT_FALSE(ok("Zm9vY")); // a group of one character
	EXPECT_FALSE(ok("Z==="));
	EXPECT_FALSE(ok("Zm 9v"));
	EXPECT_FALSE(ok("Zm8=Zg=="));
	EXPECT_FALSE(ok("Zm,v"));
	EXPECT_FALSE(ok("Zm9v\n"));
}
