// Unit tests for auth.c: a refused token is asked for again once.
#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

extern "C" {
#include "auth.h"
}

namespace
{

// An account whose password_command prints the token in DIR/token (or
// fails when there is none) and counts its runs.
class Tokens : public ::testing::Test
{
      protected:
	std::string dir, command;
	struct mfs_account acct = {};
	struct mfs_server srv = {};

	void SetUp() override
	{
		char tmpl[] = "/tmp/mailfs-auth-XXXXXX";

		ASSERT_NE(nullptr, mkdtemp(tmpl));
		dir = tmpl;
		command = dir + "/print-token";
		std::ofstream(command) << "#!/bin/sh\n"
					  "d=$(dirname \"$0\")\n"
					  "echo x >>\"$d/count\"\n"
					  "exec cat \"$d/token\"\n";
		ASSERT_EQ(0, chmod(command.c_str(), 0700));
		acct.name = (char *)"t";
		acct.path = (char *)"/test/config";
		acct.password_command = &command[0];
		acct.timeout = 5;
		srv.host = (char *)"mail.test";
		srv.port = 993;
	}
	void TearDown() override
	{
		ASSERT_EQ(0, system(("rm -rf " + dir).c_str()));
	}
	void token(const std::string &t)
	{
		std::ofstream(dir + "/token") << t << "\n";
	}
	int runs()
	{
		std::ifstream f(dir + "/count");
		std::string line;
		int n = 0;

		while (std::getline(f, line))
			n++;
		return n;
	}
};

// A server that takes one token; every attempt is recorded.
struct Server {
	explicit Server(const char *g, int how = MFS_E_AUTH, bool retry = true)
	    : good(g), refuse_how(how), can_retry(retry)
	{
	}
	std::string good;
	int refuse_how;	 // what a refusal returns
	bool can_retry; // whether *refused is set
	std::vector<std::string> tried;
};

int try_login(void *arg, const char *secret, int *refused, struct mfs_err *err)
{
	auto *s = (Server *)arg;

	s->tried.push_back(secret);
	*refused = 0;
	if (s->good == secret)
		return MFS_OK;
	*refused = s->can_retry;
	return mfs_err_set(err, (enum mfs_errcode)s->refuse_how,
			   "attempt %zu refused", s->tried.size());
}

} // namespace

TEST_F(Tokens, FirstTokenTakenAsksNothing)
{
	Server s("tok-1");
	struct mfs_err err = {};
	char *fresh = (char *)"garbage";

	EXPECT_EQ(MFS_OK, mfs_login_renewing(&acct, "imap", &srv, try_login,
					     &s, "tok-1", &fresh, &err));
	EXPECT_EQ(nullptr, fresh);
	EXPECT_EQ(0, runs());
	EXPECT_EQ(std::vector<std::string>{"tok-1"}, s.tried);
}

TEST_F(Tokens, RefusedTokenIsRenewedOnce)
{
	Server s("tok-2");
	struct mfs_err err = {};
	char *fresh = nullptr;

	token("tok-2");
	EXPECT_EQ(MFS_OK, mfs_login_renewing(&acct, "imap", &srv, try_login,
					     &s, "tok-1", &fresh, &err))
	    << err.msg;
	ASSERT_NE(nullptr, fresh);
	EXPECT_STREQ("tok-2", fresh);
	mfs_password_free(fresh);
	EXPECT_EQ(1, runs());
	EXPECT_EQ((std::vector<std::string>{"tok-1", "tok-2"}), s.tried);
}

// Refused twice: the second refusal is the answer, and the new token is
// still handed back (IMAP and POP3 keep it, SMTP drops it).
TEST_F(Tokens, RefusedTwiceAsksOnce)
{
	Server s("never");
	struct mfs_err err = {};
	char *fresh = nullptr;

	token("tok-2");
	EXPECT_EQ(MFS_E_AUTH, mfs_login_renewing(&acct, "pop3", &srv,
						 try_login, &s, "tok-1",
						 &fresh, &err));
	EXPECT_STREQ("attempt 2 refused", err.msg);
	ASSERT_NE(nullptr, fresh);
	EXPECT_STREQ("tok-2", fresh);
	mfs_password_free(fresh);
	EXPECT_EQ(1, runs());
	EXPECT_EQ(2u, s.tried.size());
}

// A failure that is no refusal (a lost connection) is not retried.
TEST_F(Tokens, OtherFailureIsNotRetried)
{
	Server s("tok-2", MFS_E_CONNECT, false);
	struct mfs_err err = {};
	char *fresh = nullptr;

	token("tok-2");
	EXPECT_EQ(MFS_E_CONNECT, mfs_login_renewing(&acct, "smtp", &srv,
						    try_login, &s, "tok-1",
						    &fresh, &err));
	EXPECT_EQ(nullptr, fresh);
	EXPECT_EQ(0, runs());
	EXPECT_EQ(1u, s.tried.size());
}

// When the password source fails, the first refusal is the answer.
TEST_F(Tokens, FailingSourceKeepsTheRefusal)
{
	Server s("tok-2");
	struct mfs_err err = {};
	char *fresh = nullptr;

	// no token file: the command fails
	EXPECT_EQ(MFS_E_AUTH, mfs_login_renewing(&acct, "imap", &srv,
						 try_login, &s, "tok-1",
						 &fresh, &err));
	EXPECT_STREQ("attempt 1 refused", err.msg);
	EXPECT_EQ(nullptr, fresh);
	EXPECT_EQ(1, runs());
	EXPECT_EQ(1u, s.tried.size());
}
