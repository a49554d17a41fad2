// smtp_test.cc - the SMTP client against the real local Postfix
// (tests/servers/mailservers.sh): both ports, dot-stuffing, UTF-8,
// rejections, partial rejection, a closed port, session reuse.
#include <gtest/gtest.h>

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <sstream>
#include <string>

extern "C" {
#include "smtp.h"
}

#include "mail_servers.h"

namespace
{

int memfd_with(const std::string &s)
{
	int fd = memfd_create("msg", MFD_CLOEXEC);
	EXPECT_EQ((ssize_t)s.size(), write(fd, s.data(), s.size()));
	return fd;
}

struct Session {
	struct mfs_server server = {};
	struct mfs_smtp *s = nullptr;
	struct mfs_err err = {};
	int rc;

	explicit Session(bool implicit, const char *pass = nullptr,
			 int port = 0)
	{
		server.proto = MFS_PROTO_SMTP;
		server.tls = implicit ? MFS_TLS_IMPLICIT : MFS_TLS_STARTTLS;
		server.host = (char *)"localhost";
		server.port = port ? port
				   : atoi(env[implicit ? "MFS_SMTPS_PORT"
						       : "MFS_SMTP_PORT"]
						  .c_str());
		struct mfs_smtp_opts o = {
			&server,
			env["MFS_USER"].c_str(),
			pass ? pass : env["MFS_PASS"].c_str(),
			env["MFS_CA"].c_str(),
			5,
			nullptr};
		rc = mfs_smtp_open(&o, &s, &err);
	}
	~Session()
	{
		mfs_smtp_close(s);
	}
	struct mfs_smtp_result send(const std::string &msg,
				    std::vector<const char *> rcpts,
				    unsigned flags = 0)
	{
		struct mfs_smtp_result r = {};
		int fd = memfd_with(msg);
		EXPECT_EQ(MFS_OK, mfs_smtp_send(s, "alice@example.test",
						rcpts.data(), rcpts.size(), fd,
						msg.size(), flags, &r, &err));
		close(fd);
		return r;
	}
};

std::string message(const std::string &token, const std::string &body,
		    const std::string &extra = "")
{
	return "From: alice@example.test\r\nTo: bob@example.test\r\n"
	       "Subject: test " +
	       token + "\r\nX-Test-Id: " + token + "\r\n" + extra + "\r\n" +
	       body;
}

// Every test needs the servers; without them it is skipped, not passed.
class Smtp : public ::testing::Test
{
      protected:
	void SetUp() override
	{
		if (env.empty())
			GTEST_SKIP() << "the local mail servers did not start";
	}
};

TEST_F(Smtp, StartTlsPortDotsArriveIntact)
{
	Session ses(false);
	ASSERT_EQ(MFS_OK, ses.rc) << ses.err.msg;
	unsigned caps = mfs_smtp_caps(ses.s);
	EXPECT_TRUE(caps & MFS_SMTP_PIPELINING);
	EXPECT_TRUE(caps & MFS_SMTP_8BITMIME);
	std::string body = "first\r\n.\r\n.foo\r\n..two\r\nlast\r\n";
	auto r = ses.send(message("dots1", body), {"bob@example.test"});
	EXPECT_EQ(MFS_SMTP_ACCEPTED, r.status) << r.reply;
	mfs_smtp_result_free(&r);
	auto got = fetch(2, "dots1", 1);
	ASSERT_EQ(1u, got.size());
	EXPECT_NE(std::string::npos, got[0].find("\r\n\r\n" + body)) << got[0];
}

TEST_F(Smtp, ImplicitTlsUtf8AndNoFinalNewline)
{
	Session ses(true);
	ASSERT_EQ(MFS_OK, ses.rc) << ses.err.msg;
	std::string body = "Gr\xc3\xbc\xc3\x9f"
			   "e \xe2\x82\xac\r\nno newline at the end";
	auto r = ses.send(message("utf1", body,
				  "Content-Type: text/plain; charset=utf-8\r\n"
				  "Content-Transfer-Encoding: 8bit\r\n"),
			  {"bob@example.test"}, MFS_SMTP_SEND_8BIT);
	EXPECT_EQ(MFS_SMTP_ACCEPTED, r.status) << r.reply;
	mfs_smtp_result_free(&r);
	auto got = fetch(2, "utf1", 1);
	ASSERT_EQ(1u, got.size());
	EXPECT_NE(std::string::npos, got[0].find(body + "\r\n"));
}

TEST_F(Smtp, RejectionsArePermanentWithTheReason)
{
	Session ses(true);
	ASSERT_EQ(MFS_OK, ses.rc) << ses.err.msg;
	auto r = ses.send(message("rej1", "x\r\n"),
			  {"nobody@elsewhere.invalid"});
	EXPECT_EQ(MFS_SMTP_PERMFAIL, r.status);
	EXPECT_NE(nullptr, strstr(r.reply, "554")) << r.reply;
	EXPECT_NE(nullptr, strstr(r.reply, "Relay access denied")) << r.reply;
	mfs_smtp_result_free(&r);
	// the session goes on (RSET) after a failed transaction
	r = ses.send(message("rej2", "x\r\n"), {"unknown@example.test"});
	EXPECT_EQ(MFS_SMTP_PERMFAIL, r.status);
	EXPECT_NE(nullptr, strstr(r.reply, "550")) << r.reply;
	ASSERT_EQ(1u, r.nrejected);
	EXPECT_STREQ("unknown@example.test", r.rejected[0].rcpt);
	mfs_smtp_result_free(&r);
}

TEST_F(Smtp, PartialRejectionDeliversToTheOthers)
{
	Session ses(false);
	ASSERT_EQ(MFS_OK, ses.rc) << ses.err.msg;
	auto r = ses.send(message("part1", "x\r\n"),
			  {"unknown@example.test", "bob@example.test",
			   "nobody@elsewhere.invalid"});
	EXPECT_EQ(MFS_SMTP_ACCEPTED, r.status) << r.reply;
	ASSERT_EQ(2u, r.nrejected);
	EXPECT_STREQ("unknown@example.test", r.rejected[0].rcpt);
	EXPECT_NE(nullptr, strstr(r.rejected[0].reply, "550"));
	EXPECT_STREQ("nobody@elsewhere.invalid", r.rejected[1].rcpt);
	EXPECT_NE(nullptr, strstr(r.rejected[1].reply, "554"));
	mfs_smtp_result_free(&r);
	EXPECT_EQ(1u, fetch(2, "part1", 1).size());
}

TEST_F(Smtp, SeveralMessagesInOneSession)
{
	Session ses(true);
	ASSERT_EQ(MFS_OK, ses.rc) << ses.err.msg;
	for (int i = 0; i < 5; i++) {
		auto r = ses.send(message("multi1", "n" + std::to_string(i) +
							    "\r\n"),
				  {"bob@example.test", "alice@example.test"});
		EXPECT_EQ(MFS_SMTP_ACCEPTED, r.status) << r.reply;
		mfs_smtp_result_free(&r);
	}
	EXPECT_EQ(5u, fetch(2, "multi1", 5).size());
	EXPECT_EQ(5u, fetch(1, "multi1", 5).size());
}

TEST_F(Smtp, WrongPasswordIsAuthError)
{
	Session ses(true, "wrong-password");
	EXPECT_EQ(MFS_E_AUTH, ses.rc) << ses.err.msg;
	EXPECT_EQ(0, mfs_smtp_err_temporary(&ses.err));
	EXPECT_EQ(nullptr, strstr(ses.err.msg, "wrong-password"));
}

TEST_F(Smtp, ClosedPortIsTemporary)
{
	Session ses(true, nullptr, 1);
	EXPECT_EQ(MFS_E_CONNECT, ses.rc);
	EXPECT_EQ(1, mfs_smtp_err_temporary(&ses.err));
}

TEST_F(Smtp, NoStartTlsOfferedIsRefused)
{
	// the implicit-TLS port speaks TLS at once: a plaintext greeting
	// never comes, which must fail within the timeout, not hang
	Session ses(false, nullptr, atoi(env["MFS_SMTPS_PORT"].c_str()));
	EXPECT_NE(MFS_OK, ses.rc);
}

} // namespace

int main(int argc, char **argv)
{
	::testing::InitGoogleTest(&argc, argv);
	::testing::AddGlobalTestEnvironment(new Servers("smtp_test"));
	return RUN_ALL_TESTS();
}
