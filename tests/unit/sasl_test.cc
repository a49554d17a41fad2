// Unit tests for sasl.c: the initial responses, decoded back.
#include <gtest/gtest.h>

#include <openssl/evp.h>

#include <string>

extern "C" {
#include "sasl.h"
}

static std::string unb64(const char *s)
{
	std::string out(3 * strlen(s) / 4 + 3, '\0');
	int n = EVP_DecodeBlock((unsigned char *)&out[0],
				(const unsigned char *)s, (int)strlen(s));
	EXPECT_GE(n, 0);
	size_t len = (size_t)n;
	for (const char *p = s + strlen(s); p > s && p[-1] == '='; p--)
		len--;
	out.resize(len);
	return out;
}

TEST(Sasl, Base64KnownVectors)
{
	const char *in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
	const char *want[] = {"",     "Zg==",	  "Zm8=",    "Zm9v",
			      "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
	for (int i = 0; i < 7; i++) {
		char *s = mfs_b64_encode(in[i], strlen(in[i]));
		ASSERT_NE(s, nullptr);
		EXPECT_STREQ(s, want[i]);
		mfs_sasl_free(s);
	}
}

TEST(Sasl, Plain)
{
	char *s = mfs_sasl_plain("alice", "p4ss");
	ASSERT_NE(s, nullptr);
	EXPECT_EQ(unb64(s), std::string("\0alice\0p4ss", 11));
	mfs_sasl_free(s);
}

TEST(Sasl, Xoauth2)
{
	char *s = mfs_sasl_xoauth2("alice@example.org", "ya29.tok");
	ASSERT_NE(s, nullptr);
	EXPECT_EQ(unb64(s),
		  "user=alice@example.org\001auth=Bearer ya29.tok\001\001");
	mfs_sasl_free(s);
}

TEST(Sasl, OauthbearerEscapesTheUser)
{
	char *s = mfs_sasl_oauthbearer("a,b=c", "mail.example.org", 993, "T");
	ASSERT_NE(s, nullptr);
	EXPECT_EQ(unb64(s), "n,a=a=2Cb=3Dc,\001host=mail.example.org\001"
			    "port=993\001auth=Bearer T\001\001");
	mfs_sasl_free(s);
}

// mfs_sasl_free(NULL) returns and does nothing: checked in a child, which
// must exit normally after the call.
TEST(Sasl, FreeNullIsFine)
{
	EXPECT_EXIT(
	    {
		    mfs_sasl_free(nullptr);
		    exit(0);
	    },
	    ::testing::ExitedWithCode(0), "");
}
