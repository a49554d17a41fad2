// smtp_test.cc - the SMTP client against the real local Postfix
// (tests/servers/mailservers.sh): both ports, dot-stuffing, UTF-8,
// rejections, partial rejection, a closed port, session reuse, token
// logins (XOAUTH2, OAUTHBEARER) with one renewal, BDAT (CHUNKING, offered
// on the implicit-TLS port only) byte for byte with dot lines and a 4 MB
// message; and against a scripted server on 127.0.0.1: AUTH LOGIN, long
// initial responses, malformed replies, the -d trace that must hide every
// secret, pipelining, and BDAT's round trips, cuts and refusals.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>

extern "C" {
#include "log.h"
#include "sasl.h"
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

// A key of the servers' env file, without adding it to env when missing
// (an empty env means the servers did not start).
const char *envc(const char *key)
{
	auto it = env.find(key);
	return it == env.end() ? "" : it->second.c_str();
}

// How a Session logs in; the defaults are alice's password.
struct Login {
	const char *pass = nullptr; // nullptr: MFS_PASS
	enum mfs_auth auth = MFS_AUTH_PASSWORD;
	const struct mfs_account *acct = nullptr;
	char **renewed = nullptr;
	enum mfs_tls_mode tls = MFS_TLS_IMPLICIT;
	int port = 0; // 0: the port of tls
	const char *host = "localhost";
	const char *user = nullptr; // nullptr: MFS_USER
};

struct Session {
	struct mfs_server server = {};
	struct mfs_smtp *s = nullptr;
	struct mfs_err err = {};
	int rc;

	explicit Session(bool implicit, const char *pass = nullptr,
			 int port = 0)
	{
		Login l;
		l.pass = pass;
		l.tls = implicit ? MFS_TLS_IMPLICIT : MFS_TLS_STARTTLS;
		l.port = port;
		open(l);
	}
	explicit Session(const Login &l)
	{
		open(l);
	}
	void open(const Login &l)
	{
		server.proto = MFS_PROTO_SMTP;
		server.tls = l.tls;
		server.host = (char *)l.host;
		server.port = l.port ? l.port
				     : atoi(envc(l.tls == MFS_TLS_IMPLICIT
						     ? "MFS_SMTPS_PORT"
						     : "MFS_SMTP_PORT"));
		struct mfs_smtp_opts o = {
		    &server,
		    l.user ? l.user : envc("MFS_USER"),
		    l.pass ? l.pass : envc("MFS_PASS"),
		    envc("MFS_CA"),
		    5,
		    nullptr,
		    l.auth,
		    l.acct,
		    l.renewed};
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

std::string b64(const std::string &raw)
{
	char *e = mfs_b64_encode(raw.data(), raw.size());
	std::string s = e;
	mfs_sasl_free(e);
	return s;
}

// A password_command for token renewal: a script (its path has no shell
// metacharacter, so it runs directly) that prints the contents of
// DIR/token and counts its runs in DIR/count.
class TokenSource
{
      public:
	explicit TokenSource(const std::string &token)
	{
		char tmpl[] = "/tmp/mailfs-smtp-token-XXXXXX";
		dir_ = mkdtemp(tmpl);
		std::ofstream(dir_ + "/token") << token << "\n";
		std::string script = dir_ + "/print-token";
		std::ofstream(script)
		    << "#!/bin/sh\n"
		       "d=$(dirname \"$0\")\n"
		       "echo x >>\"$d/count\"\n"
		       "cat \"$d/token\"\n";
		chmod(script.c_str(), 0700);
		command_ = script;
		acct_.name = (char *)"t";
		acct_.path = (char *)"/test/config";
		acct_.password_command = &command_[0];
		acct_.timeout = 5;
	}
	~TokenSource()
	{
		system(("rm -rf " + dir_).c_str());
	}
	const struct mfs_account *acct() const
	{
		return &acct_;
	}
	// How many times the command ran.
	int runs() const
	{
		std::string c = slurp(dir_ + "/count");
		return (int)std::count(c.begin(), c.end(), '\n');
	}

      private:
	std::string dir_, command_;
	struct mfs_account acct_ = {};
};

// Captures what the log writes to stderr, with -d on, while it lives.
class LogCapture
{
      public:
	LogCapture()
	{
		char tmpl[] = "/tmp/mailfs-smtp-log-XXXXXX";
		int fd = mkstemp(tmpl);
		path_ = tmpl;
		fflush(stderr);
		saved_ = dup(2);
		dup2(fd, 2);
		close(fd);
		mfs_log_init(0, 1);
	}
	~LogCapture()
	{
		stop();
		unlink(path_.c_str());
	}
	std::string stop()
	{
		if (saved_ >= 0) {
			mfs_log_init(0, 0);
			fflush(stderr);
			dup2(saved_, 2);
			close(saved_);
			saved_ = -1;
			text_ = slurp(path_);
		}
		return text_;
	}

      private:
	std::string path_, text_;
	int saved_ = -1;
};

bool has(const std::string &hay, const std::string &needle)
{
	return hay.find(needle) != std::string::npos;
}

// The answer of a FakeServer that sends nothing back (lines of data).
const std::string kSilent = "\x01";

// A scripted SMTP server for one connection on 127.0.0.1: it sends the
// greeting, then answers each line it receives with answer(line); an
// empty answer closes the connection, kSilent sends nothing.
class FakeServer
{
      public:
	using Answer = std::function<std::string(const std::string &)>;

	FakeServer(const std::string &greeting, Answer answer)
	    : greeting_(greeting), answer_(std::move(answer))
	{
		struct sockaddr_in a = {};
		socklen_t len = sizeof(a);

		lfd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		a.sin_family = AF_INET;
		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		EXPECT_EQ(0, bind(lfd_, (struct sockaddr *)&a, sizeof(a)));
		EXPECT_EQ(0, listen(lfd_, 1));
		getsockname(lfd_, (struct sockaddr *)&a, &len);
		port = ntohs(a.sin_port);
		thread_ = std::thread([this] { serve(); });
	}
	~FakeServer()
	{
		shutdown(lfd_, SHUT_RDWR);
		thread_.join();
		close(lfd_);
	}
	// The lines received (after the client closed).
	std::vector<std::string> lines()
	{
		thread_.join();
		thread_ = std::thread([] {});
		return lines_;
	}
	// For each line, what had arrived after it and was not answered yet
	// (what the client wrote together with it).
	std::vector<std::string> pending()
	{
		lines();
		return pending_;
	}
	// Round trips: how often the client wrote again after a reply (the
	// first EHLO counts, after the greeting). Exact for bursts small
	// enough to arrive in one piece.
	int rounds()
	{
		lines();
		return rounds_;
	}
	int port = 0;

      private:
	void serve()
	{
		int c = accept4(lfd_, nullptr, nullptr, SOCK_CLOEXEC);
		std::string buf;
		char chunk[4096];

		if (c < 0)
			return;
		put(c, greeting_);
		bool replied = true;
		for (;;) {
			size_t nl = buf.find("\r\n");
			if (nl == std::string::npos) {
				ssize_t n = recv(c, chunk, sizeof(chunk), 0);
				if (n <= 0)
					break;
				buf.append(chunk, n);
				rounds_ += replied;
				replied = false;
				continue;
			}
			std::string line = buf.substr(0, nl);
			buf.erase(0, nl + 2);
			lines_.push_back(line);
			pending_.push_back(buf);
			std::string reply = answer_(line);
			if (reply.empty())
				break;
			if (reply != kSilent) {
				put(c, reply);
				replied = true;
			}
		}
		close(c);
	}
	static void put(int c, const std::string &s)
	{
		if (!s.empty())
			send(c, s.data(), s.size(), MSG_NOSIGNAL);
	}
	int lfd_ = -1;
	std::string greeting_;
	Answer answer_;
	std::thread thread_;
	std::vector<std::string> lines_, pending_;
	int rounds_ = 0;
};

Login fake_login(int port, const char *pass = "pw-S3CRET")
{
	Login l;
	l.tls = MFS_TLS_NONE;
	l.port = port;
	l.host = "127.0.0.1";
	l.user = "alice";
	l.pass = pass;
	return l;
}

// A fake server's answer to everything but AUTH: EHLO offers ehlo_auth.
std::string plain_answer(const std::string &line, const std::string &ehlo)
{
	if (line.rfind("EHLO ", 0) == 0)
		return "250-fake.test\r\n250-PIPELINING\r\n250 AUTH " +
		       ehlo + "\r\n";
	if (line == "QUIT")
		return "221 bye\r\n";
	return "500 what\r\n";
}

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

// --- CHUNKING (BDAT) against Postfix: the implicit-TLS port offers it,
// the STARTTLS port does not (smtpd_discard_ehlo_keywords in
// mailservers.sh), so both paths meet a real server ---

// A message with every header Postfix would otherwise add, so that it
// arrives unchanged after the headers Postfix and Dovecot put on top.
std::string full_message(const std::string &token, const std::string &body)
{
	return "Date: Sun, 22 Nov 2026 10:00:00 +0000\r\n"
	       "Message-ID: <" +
	       token + "@example.test>\r\n" + message(token, body);
}

// The delivered copy ends with the whole message as it was sent.
::testing::AssertionResult arrived_intact(const std::string &got,
					  const std::string &sent)
{
	if (got.size() >= sent.size() &&
	    got.compare(got.size() - sent.size(), sent.size(), sent) == 0)
		return ::testing::AssertionSuccess();
	size_t at = 0;
	while (at < got.size() && at < sent.size() &&
	       got[got.size() - 1 - at] == sent[sent.size() - 1 - at])
		at++;
	return ::testing::AssertionFailure()
	       << "got " << got.size() << " bytes, sent " << sent.size()
	       << "; they differ " << at << " bytes before the end: ..."
	       << got.substr(got.size() > at + 80 ? got.size() - at - 80 : 0,
			     100);
}

TEST_F(Smtp, ChunkingOnlyOnTheImplicitTlsPort)
{
	for (bool implicit : {true, false}) {
		SCOPED_TRACE(implicit ? "smtps" : "starttls");
		std::string token = implicit ? "path1" : "path2";
		LogCapture cap;
		{
			Session ses(implicit);
			ASSERT_EQ(MFS_OK, ses.rc) << ses.err.msg;
			unsigned caps = mfs_smtp_caps(ses.s);
			EXPECT_TRUE(caps & MFS_SMTP_PIPELINING);
			EXPECT_EQ(implicit, (caps & MFS_SMTP_CHUNKING) != 0);
			auto r = ses.send(full_message(token, "x\r\n"),
					  {"bob@example.test"});
			EXPECT_EQ(MFS_SMTP_ACCEPTED, r.status) << r.reply;
			mfs_smtp_result_free(&r);
		}
		std::string log = cap.stop();
		size_t size = full_message(token, "x\r\n").size();
		EXPECT_EQ(implicit,
			  has(log, "smtp: C: BDAT " + std::to_string(size) +
				       " LAST\n"))
		    << log;
		EXPECT_EQ(!implicit, has(log, "smtp: C: DATA\n")) << log;
		EXPECT_EQ(1u, fetch(2, token, 1).size());
	}
}

// With BDAT the message goes as it is: lines starting with "." (one, two,
// alone) are not stuffed, nothing ends the data but its size, and the
// delivered copy is byte for byte what was sent; a message missing its
// final CRLF gets one (counted in BDAT's size).
TEST_F(Smtp, ChunkingDotsArriveByteExact)
{
	Session ses(true);
	ASSERT_EQ(MFS_OK, ses.rc) << ses.err.msg;
	ASSERT_TRUE(mfs_smtp_caps(ses.s) & MFS_SMTP_CHUNKING);
	std::string body = ".\r\n.first\r\n..two\r\n...\r\n \t.\r\nx\r\n.\r\n";
	std::string msg = full_message("bdatdots1", body);
	auto r = ses.send(msg, {"bob@example.test"});
	EXPECT_EQ(MFS_SMTP_ACCEPTED, r.status) << r.reply;
	mfs_smtp_result_free(&r);
	std::string msg2 = full_message("bdatdots2", "no end\r\n.");
	r = ses.send(msg2, {"bob@example.test"});
	EXPECT_EQ(MFS_SMTP_ACCEPTED, r.status) << r.reply;
	mfs_smtp_result_free(&r);
	auto got = fetch(2, "bdatdots1", 1);
	ASSERT_EQ(1u, got.size());
	EXPECT_TRUE(arrived_intact(got[0], msg));
	got = fetch(2, "bdatdots2", 1);
	ASSERT_EQ(1u, got.size());
	EXPECT_TRUE(arrived_intact(got[0], msg2 + "\r\n"));
}

// A message of a few MB streamed as one BDAT chunk arrives byte for byte.
TEST_F(Smtp, ChunkingLargeMessageArrivesByteExact)
{
	std::string body;
	for (int i = 0; body.size() < 4u * 1024 * 1024; i++) {
		char line[96];
		snprintf(line, sizeof(line),
			 "%s%07d the quick brown fox jumps over the lazy dog "
			 "0123456789 abcdefghij\r\n",
			 i % 7 == 0    ? "."
			 : i % 11 == 0 ? ".."
				       : "",
			 i);
		body += line;
		if (i % 1000 == 0)
			body += ".\r\n";
	}
	std::string msg = full_message("bdatbig1", body);
	Session ses(true);
	ASSERT_EQ(MFS_OK, ses.rc) << ses.err.msg;
	ASSERT_TRUE(mfs_smtp_caps(ses.s) & MFS_SMTP_CHUNKING);
	auto r = ses.send(msg, {"bob@example.test"});
	EXPECT_EQ(MFS_SMTP_ACCEPTED, r.status) << r.reply;
	mfs_smtp_result_free(&r);
	auto got = fetch(2, "bdatbig1", 1);
	ASSERT_EQ(1u, got.size());
	EXPECT_TRUE(arrived_intact(got[0], msg));
}

// BDAT: a refused recipient among good ones is listed and the message
// reaches the others; every recipient refused is a permanent failure
// that quotes the recipients' refusals, not Postfix's "no valid
// recipients" to BDAT; and the session goes on.
TEST_F(Smtp, ChunkingRefusedRecipients)
{
	Session ses(true);
	ASSERT_EQ(MFS_OK, ses.rc) << ses.err.msg;
	ASSERT_TRUE(mfs_smtp_caps(ses.s) & MFS_SMTP_CHUNKING);
	auto r = ses.send(message("bdatpart1", "x\r\n"),
			  {"bob@example.test", "unknown@example.test"});
	EXPECT_EQ(MFS_SMTP_ACCEPTED, r.status) << r.reply;
	ASSERT_EQ(1u, r.nrejected);
	EXPECT_STREQ("unknown@example.test", r.rejected[0].rcpt);
	EXPECT_TRUE(has(r.rejected[0].reply, "550")) << r.rejected[0].reply;
	mfs_smtp_result_free(&r);
	r = ses.send(message("bdatnone1", "x\r\n"),
		     {"unknown@example.test", "nobody@elsewhere.invalid"});
	EXPECT_EQ(MFS_SMTP_PERMFAIL, r.status) << r.reply;
	EXPECT_TRUE(has(r.reply, "550")) << r.reply;
	EXPECT_TRUE(has(r.reply, "Relay access denied")) << r.reply;
	EXPECT_FALSE(has(r.reply, "no valid recipients")) << r.reply;
	EXPECT_EQ(2u, r.nrejected);
	mfs_smtp_result_free(&r);
	EXPECT_EQ(1, mfs_smtp_alive(ses.s));
	r = ses.send(message("bdatpart2", "y\r\n"), {"bob@example.test"});
	EXPECT_EQ(MFS_SMTP_ACCEPTED, r.status) << r.reply;
	mfs_smtp_result_free(&r);
	EXPECT_EQ(1u, fetch(2, "bdatpart1", 1).size());
	EXPECT_EQ(1u, fetch(2, "bdatpart2", 1).size());
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

// After a transaction Postfix refused (no recipient), the same session
// sends the next message (RSET in the same write as its envelope), and it
// arrives once.
TEST_F(Smtp, RefusedThenAcceptedInOneSession)
{
	Session ses(true);
	ASSERT_EQ(MFS_OK, ses.rc) << ses.err.msg;
	ASSERT_TRUE(mfs_smtp_caps(ses.s) & MFS_SMTP_PIPELINING);
	auto r = ses.send(message("reuse1", "x\r\n"),
			  {"unknown@example.test", "nobody@elsewhere.invalid"});
	EXPECT_EQ(MFS_SMTP_PERMFAIL, r.status) << r.reply;
	EXPECT_EQ(2u, r.nrejected);
	mfs_smtp_result_free(&r);
	EXPECT_EQ(1, mfs_smtp_alive(ses.s));
	r = ses.send(message("reuse2", "y\r\n"), {"bob@example.test"});
	EXPECT_EQ(MFS_SMTP_ACCEPTED, r.status) << r.reply;
	mfs_smtp_result_free(&r);
	r = ses.send(message("reuse2", "z\r\n"), {"bob@example.test"});
	EXPECT_EQ(MFS_SMTP_ACCEPTED, r.status) << r.reply;
	mfs_smtp_result_free(&r);
	EXPECT_EQ(2u, fetch(2, "reuse2", 3, 3).size());
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

// --- token logins against Dovecot through Postfix ---

TEST_F(Smtp, Xoauth2AndOauthbearerLogIn)
{
	// Dovecot checks a bearer token like a password (mailservers.sh).
	for (auto auth : {MFS_AUTH_XOAUTH2, MFS_AUTH_OAUTHBEARER}) {
		for (auto tls : {MFS_TLS_IMPLICIT, MFS_TLS_STARTTLS}) {
			SCOPED_TRACE(std::to_string(auth) + "/" +
				     std::to_string(tls));
			Login l;
			l.auth = auth;
			l.tls = tls;
			Session ses(l);
			ASSERT_EQ(MFS_OK, ses.rc) << ses.err.msg;
			unsigned caps = mfs_smtp_caps(ses.s);
			EXPECT_TRUE(caps & MFS_SMTP_AUTH_XOAUTH2);
			EXPECT_TRUE(caps & MFS_SMTP_AUTH_OAUTHBEARER);
		}
	}
	Login l;
	l.auth = MFS_AUTH_OAUTHBEARER;
	Session ses(l);
	ASSERT_EQ(MFS_OK, ses.rc) << ses.err.msg;
	auto r = ses.send(message("oauth1", "x\r\n"), {"bob@example.test"});
	EXPECT_EQ(MFS_SMTP_ACCEPTED, r.status) << r.reply;
	mfs_smtp_result_free(&r);
	EXPECT_EQ(1u, fetch(2, "oauth1", 1).size());
}

TEST_F(Smtp, RefusedTokenIsAskedForAgainOnceAndKept)
{
	for (auto auth : {MFS_AUTH_XOAUTH2, MFS_AUTH_OAUTHBEARER}) {
		SCOPED_TRACE(auth);
		TokenSource src(env["MFS_PASS"]);
		char *renewed = nullptr;
		Login l;
		l.pass = "expired-token";
		l.auth = auth;
		l.acct = src.acct();
		l.renewed = &renewed;
		Session ses(l);
		ASSERT_EQ(MFS_OK, ses.rc) << ses.err.msg;
		EXPECT_EQ(1, src.runs());
		ASSERT_NE(nullptr, renewed);
		EXPECT_EQ(env["MFS_PASS"], renewed);
		mfs_password_free(renewed);
	}
}

TEST_F(Smtp, TokenRefusedTwiceFailsAfterOneRenewal)
{
	TokenSource src("still-wrong");
	char *renewed = nullptr;
	Login l;
	l.pass = "expired-token";
	l.auth = MFS_AUTH_XOAUTH2;
	l.acct = src.acct();
	l.renewed = &renewed;
	Session ses(l);
	EXPECT_EQ(MFS_E_AUTH, ses.rc) << ses.err.msg;
	EXPECT_EQ(0, mfs_smtp_err_temporary(&ses.err));
	EXPECT_EQ(1, src.runs());
	EXPECT_EQ(nullptr, renewed);
	EXPECT_FALSE(has(ses.err.msg, "wrong")) << ses.err.msg;
	EXPECT_FALSE(has(ses.err.msg, "expired")) << ses.err.msg;
}

TEST_F(Smtp, RefusedPasswordIsNotAskedForAgain)
{
	TokenSource src(env["MFS_PASS"]);
	char *renewed = nullptr;
	Login l;
	l.pass = "wrong-password";
	l.acct = src.acct();
	l.renewed = &renewed;
	Session ses(l);
	EXPECT_EQ(MFS_E_AUTH, ses.rc) << ses.err.msg;
	EXPECT_EQ(0, src.runs());
	EXPECT_EQ(nullptr, renewed);
}

// --- the -d trace ---

TEST_F(Smtp, TraceShowsCommandsAndHidesSecrets)
{
	std::string pass = env["MFS_PASS"], user = env["MFS_USER"];
	LogCapture cap;
	{
		Session ses(false);
		ASSERT_EQ(MFS_OK, ses.rc) << ses.err.msg;
	}
	TokenSource src(pass);
	{
		Login l;
		l.pass = "expired-TOKEN-1";
		l.auth = MFS_AUTH_OAUTHBEARER;
		l.acct = src.acct();
		Session ses(l);
		ASSERT_EQ(MFS_OK, ses.rc) << ses.err.msg;
	}
	std::string log = cap.stop();
	EXPECT_TRUE(has(log, "smtp: S: 220 ")) << log;
	EXPECT_TRUE(has(log, "smtp: C: EHLO ")) << log;
	EXPECT_TRUE(has(log, "smtp: C: STARTTLS")) << log;
	EXPECT_TRUE(has(log, "smtp: S: 250")) << log;
	EXPECT_TRUE(has(log, "smtp: C: AUTH PLAIN <hidden>")) << log;
	EXPECT_TRUE(has(log, "smtp: C: AUTH OAUTHBEARER <hidden>")) << log;
	EXPECT_TRUE(has(log, "smtp: S: 334 ")) << log;
	EXPECT_TRUE(has(log, "smtp: C: <hidden>")) << log;
	EXPECT_TRUE(has(log, "smtp: S: 235 ")) << log;
	EXPECT_TRUE(has(log, "smtp: C: QUIT")) << log;
	EXPECT_FALSE(has(log, pass)) << log;
	EXPECT_FALSE(has(log, "expired-TOKEN-1")) << log;
	EXPECT_FALSE(has(log, "AQ==")) << log;
	EXPECT_FALSE(has(log, b64(std::string("\0", 1) + user +
				   std::string("\0", 1) + pass)))
	    << log;
}

// --- a scripted server ---

TEST(SmtpFake, AuthLoginStepsAreHiddenInTheTrace)
{
	FakeServer srv("220 fake ESMTP\r\n", [](const std::string &line) {
		if (line == "AUTH LOGIN")
			return std::string("334 VXNlcm5hbWU6\r\n");
		if (line == b64("alice"))
			return std::string("334 UGFzc3dvcmQ6\r\n");
		if (line == b64("pw-S3CRET"))
			return std::string("235 2.7.0 ok\r\n");
		return plain_answer(line, "LOGIN");
	});
	LogCapture cap;
	{
		Session ses(fake_login(srv.port));
		ASSERT_EQ(MFS_OK, ses.rc) << ses.err.msg;
	}
	std::string log = cap.stop();
	auto lines = srv.lines();
	ASSERT_EQ(5u, lines.size());
	EXPECT_EQ("AUTH LOGIN", lines[1]);
	EXPECT_EQ("QUIT", lines[4]);
	EXPECT_TRUE(has(log, "smtp: C: AUTH LOGIN\n")) << log;
	EXPECT_TRUE(has(log, "smtp: S: 334 UGFzc3dvcmQ6")) << log;
	size_t hidden = 0;
	for (size_t at = 0;
	     (at = log.find("smtp: C: <hidden>\n", at)) != std::string::npos;
	     at++)
		hidden++;
	EXPECT_EQ(2u, hidden) << log;
	EXPECT_FALSE(has(log, "pw-S3CRET")) << log;
	EXPECT_FALSE(has(log, b64("pw-S3CRET"))) << log;
	EXPECT_FALSE(has(log, b64("alice"))) << log;
}

TEST(SmtpFake, LongInitialResponseFollowsAnEmptyChallenge)
{
	std::string token(600, 't');
	std::string ir = b64("user=alice\1auth=Bearer " + token + "\1\1");
	FakeServer srv("220 fake\r\n", [&](const std::string &line) {
		if (line == "AUTH XOAUTH2")
			return std::string("334 \r\n");
		if (line == ir)
			return std::string("235 ok\r\n");
		return plain_answer(line, "PLAIN XOAUTH2");
	});
	Login l = fake_login(srv.port, token.c_str());
	l.auth = MFS_AUTH_XOAUTH2;
	{
		Session ses(l);
		ASSERT_EQ(MFS_OK, ses.rc) << ses.err.msg;
	}
	auto lines = srv.lines();
	ASSERT_GE(lines.size(), 3u);
	EXPECT_EQ("AUTH XOAUTH2", lines[1]);
	EXPECT_EQ(ir, lines[2]);
}

TEST(SmtpFake, OauthbearerErrorIsAnsweredWithCtrlA)
{
	FakeServer srv("220 fake\r\n", [&](const std::string &line) {
		if (line.rfind("AUTH OAUTHBEARER ", 0) == 0)
			return std::string("334 eyJzdGF0dXMiOiI0MDEifQ==\r\n");
		if (line == "AQ==")
			return std::string("535 5.7.8 refused\r\n");
		return plain_answer(line, "OAUTHBEARER");
	});
	TokenSource src("fresh");
	char *renewed = nullptr;
	Login l = fake_login(srv.port, "old");
	l.auth = MFS_AUTH_OAUTHBEARER;
	l.acct = src.acct();
	l.renewed = &renewed;
	{
		Session ses(l);
		EXPECT_EQ(MFS_E_AUTH, ses.rc) << ses.err.msg;
		EXPECT_TRUE(has(ses.err.msg, "535")) << ses.err.msg;
	}
	auto lines = srv.lines();
	// EHLO, AUTH, AQ==, AUTH again with the new token, AQ== (a failed
	// open sends no QUIT)
	ASSERT_EQ(5u, lines.size());
	EXPECT_EQ("AQ==", lines[2]);
	EXPECT_EQ(b64("n,a=alice,\1host=127.0.0.1\1port=" +
		      std::to_string(srv.port) + "\1auth=Bearer fresh\1\1"),
		  lines[3].substr(17));
	EXPECT_EQ("AQ==", lines[4]);
	EXPECT_EQ(1, src.runs());
	EXPECT_EQ(nullptr, renewed);
}

TEST(SmtpFake, MissingMechanismIsAnAuthError)
{
	FakeServer srv("220 fake\r\n", [](const std::string &line) {
		return plain_answer(line, "PLAIN LOGIN");
	});
	Login l = fake_login(srv.port);
	l.auth = MFS_AUTH_OAUTHBEARER;
	Session ses(l);
	EXPECT_EQ(MFS_E_AUTH, ses.rc);
	EXPECT_TRUE(has(ses.err.msg, "OAUTHBEARER")) << ses.err.msg;
}

TEST(SmtpFake, MalformedRepliesEndTheSession)
{
	const std::string bad[] = {
	    "hello\r\n",
	    "22 short\r\n",
	    "2200 four digits\r\n",
	    "600 no such class\r\n",
	    "160 no such class\r\n",
	    "260 second digit\r\n",
	    "2x0 letter\r\n",
	    "220-a\r\n221 b\r\n",
	    "220-a\r\nb\r\n",
	    std::string("220 nul\0x\r\n", 11),
	    "220 " + std::string(5000, 'a') + "\r\n",
	};
	for (const std::string &g : bad) {
		SCOPED_TRACE(g.substr(0, 40));
		FakeServer srv(g, [](const std::string &line) {
			return plain_answer(line, "PLAIN");
		});
		Session ses(fake_login(srv.port));
		EXPECT_EQ(MFS_E_PROTO, ses.rc) << ses.err.msg;
		EXPECT_EQ(nullptr, ses.s);
	}
	// A malformed EHLO reply, too.
	FakeServer srv2("220 ok\r\n", [](const std::string &line) {
		if (line.rfind("EHLO ", 0) == 0)
			return std::string("250-x\r\n2501 y\r\n");
		return plain_answer(line, "PLAIN");
	});
	Session ses2(fake_login(srv2.port));
	EXPECT_EQ(MFS_E_PROTO, ses2.rc) << ses2.err.msg;
	// The shortest valid reply is the code alone.
	FakeServer srv("220\r\n", [](const std::string &line) {
		if (line == "AUTH PLAIN " +
				b64(std::string("\0alice\0pw-S3CRET", 16)))
			return std::string("235\r\n");
		return plain_answer(line, "PLAIN");
	});
	Session ses(fake_login(srv.port));
	EXPECT_EQ(MFS_OK, ses.rc) << ses.err.msg;
}

// A fake server's answer during a transaction: AUTH, MAIL and the RCPTs
// in good are accepted, other RCPTs refused with 550, DATA gets 354 (with
// strict, 554 when no RCPT was accepted), the data is taken silently and
// "." accepted.
FakeServer::Answer transaction(std::vector<std::string> good,
			       bool strict = true)
{
	struct State {
		bool in_data = false;
		int rcpts = 0;
	};
	auto st = std::make_shared<State>();
	return [=](const std::string &line) {
		if (st->in_data) {
			st->in_data = line != ".";
			return st->in_data ? kSilent
					   : std::string("250 queued\r\n");
		}
		if (line.rfind("AUTH ", 0) == 0)
			return std::string("235 ok\r\n");
		if (line.rfind("MAIL FROM:", 0) == 0 || line == "RSET") {
			st->rcpts = 0;
			return std::string("250 ok\r\n");
		}
		if (line.rfind("RCPT TO:<", 0) == 0) {
			std::string a = line.substr(9, line.size() - 10);
			if (std::find(good.begin(), good.end(), a) !=
			    good.end()) {
				st->rcpts++;
				return std::string("250 ok\r\n");
			}
			return "550 5.1.1 <" + a + ">: User unknown\r\n";
		}
		if (line == "DATA" && strict && st->rcpts == 0)
			return std::string("554 5.5.1 no valid recipients\r\n");
		if (line == "DATA") {
			st->in_data = true;
			return std::string("354 go\r\n");
		}
		return plain_answer(line, "PLAIN");
	};
}

// PIPELINING: MAIL, every RCPT and DATA in one write; a refused RCPT
// among accepted ones is listed and the message goes; no RSET after a
// completed transaction, RSET in the envelope's write after a refused one.
TEST(SmtpFake, EnvelopeIsOneWriteAndRsetOnlyAfterAnAbort)
{
	FakeServer srv("220 ok\r\n", transaction({"a@x.test", "c@x.test"}));
	std::vector<std::string> want;
	{
		Session ses(fake_login(srv.port));
		ASSERT_EQ(MFS_OK, ses.rc) << ses.err.msg;
		auto r = ses.send("Subject: 1\r\n\r\nbody\r\n",
				  {"a@x.test", "b@x.test", "c@x.test"});
		EXPECT_EQ(MFS_SMTP_ACCEPTED, r.status) << r.reply;
		ASSERT_EQ(1u, r.nrejected);
		EXPECT_STREQ("b@x.test", r.rejected[0].rcpt);
		EXPECT_TRUE(has(r.rejected[0].reply, "550 5.1.1")) << r.rejected[0].reply;
		mfs_smtp_result_free(&r);
		r = ses.send("Subject: 2\r\n\r\nbody\r\n", {"b@x.test"});
		EXPECT_EQ(MFS_SMTP_PERMFAIL, r.status) << r.reply;
		EXPECT_TRUE(has(r.reply, "550 5.1.1")) << r.reply;
		mfs_smtp_result_free(&r);
		r = ses.send("Subject: 3\r\n\r\nbody\r\n", {"c@x.test"});
		EXPECT_EQ(MFS_SMTP_ACCEPTED, r.status) << r.reply;
		mfs_smtp_result_free(&r);
	}
	auto lines = srv.lines();
	auto pending = srv.pending();
	std::vector<std::string> cmds;
	std::map<std::string, std::string> with;
	for (size_t i = 0; i < lines.size(); i++) {
		const std::string &l = lines[i];
		if (l.rfind("MAIL", 0) == 0 || l.rfind("RCPT", 0) == 0 ||
		    l == "DATA" || l == "RSET" || l == "QUIT" || l == "." ||
		    l.rfind("Subject", 0) == 0)
			cmds.push_back(l);
		if (l == "RSET" || l.rfind("MAIL", 0) == 0)
			with[l + std::to_string(i)] = pending[i];
	}
	std::vector<std::string> expect = {
	    "MAIL FROM:<alice@example.test>", "RCPT TO:<a@x.test>",
	    "RCPT TO:<b@x.test>", "RCPT TO:<c@x.test>", "DATA",
	    "Subject: 1", ".",
	    "MAIL FROM:<alice@example.test>", "RCPT TO:<b@x.test>", "DATA",
	    "RSET", "MAIL FROM:<alice@example.test>", "RCPT TO:<c@x.test>",
	    "DATA", "Subject: 3", ".", "QUIT"};
	EXPECT_EQ(expect, cmds);
	// what came in the same write as each MAIL and RSET
	std::vector<std::string> groups;
	for (auto &kv : with)
		groups.push_back(kv.second);
	EXPECT_NE(groups.end(),
		  std::find(groups.begin(), groups.end(),
			    "RCPT TO:<a@x.test>\r\nRCPT TO:<b@x.test>\r\n"
			    "RCPT TO:<c@x.test>\r\nDATA\r\n"));
	EXPECT_NE(groups.end(),
		  std::find(groups.begin(), groups.end(),
			    "MAIL FROM:<alice@example.test>\r\n"
			    "RCPT TO:<c@x.test>\r\nDATA\r\n"));
}

// A server that answers DATA with 354 though it refused every recipient
// gets no data: the session is dropped and the refusal reported.
TEST(SmtpFake, DataAfterNoRecipientIsNotSent)
{
	FakeServer srv("220 ok\r\n", transaction({}, false));
	{
		Session ses(fake_login(srv.port));
		ASSERT_EQ(MFS_OK, ses.rc) << ses.err.msg;
		auto r = ses.send("Subject: x\r\n\r\nbody\r\n", {"b@x.test"});
		EXPECT_EQ(MFS_SMTP_PERMFAIL, r.status) << r.reply;
		EXPECT_TRUE(has(r.reply, "550 5.1.1")) << r.reply;
		EXPECT_EQ(0, mfs_smtp_alive(ses.s));
		mfs_smtp_result_free(&r);
	}
	auto lines = srv.lines();
	EXPECT_EQ(lines.end(),
		  std::find(lines.begin(), lines.end(), "Subject: x"));
	EXPECT_EQ(lines.end(), std::find(lines.begin(), lines.end(), "QUIT"));
}

// 421 (the server closes, e.g. after its idle time) is a temporary
// failure that ends the session, with the server's text.
TEST(SmtpFake, Reply421EndsTheSession)
{
	FakeServer srv("220 ok\r\n", [](const std::string &line) {
		if (line.rfind("AUTH ", 0) == 0)
			return std::string("235 ok\r\n");
		if (line.rfind("MAIL", 0) == 0)
			return std::string(
			    "421 4.4.2 fake.test Error: timeout exceeded\r\n");
		if (line.rfind("RCPT", 0) == 0 || line == "DATA")
			return std::string("503 5.5.1 need MAIL\r\n");
		return plain_answer(line, "PLAIN");
	});
	Session ses(fake_login(srv.port));
	ASSERT_EQ(MFS_OK, ses.rc) << ses.err.msg;
	auto r = ses.send("Subject: x\r\n\r\nbody\r\n", {"b@x.test"});
	EXPECT_EQ(MFS_SMTP_TEMPFAIL, r.status) << r.reply;
	EXPECT_TRUE(has(r.reply, "421 4.4.2")) << r.reply;
	EXPECT_EQ(0, mfs_smtp_alive(ses.s));
	mfs_smtp_result_free(&r);
}

// A fake server that offers CHUNKING: MAIL and the RCPTs in good are
// accepted, "BDAT n LAST" takes the next n bytes (as lines) and answers
// with done (an empty done closes the connection instead), or 554 when no
// RCPT was accepted. A line that starts with a key of fixed gets its value
// instead (key "." for the reply after the data); an empty value closes.
// Lines it was given are in the FakeServer's lines().
FakeServer::Answer chunking(std::vector<std::string> good,
			    std::string done = "250 2.0.0 queued\r\n",
			    std::map<std::string, std::string> fixed = {})
{
	struct State {
		long left = -1; // data bytes still to come
		int rcpts = 0;
	};
	auto st = std::make_shared<State>();
	return [=](const std::string &line) {
		if (st->left >= 0) {
			st->left -= (long)line.size() + 2;
			if (st->left > 0)
				return kSilent;
			st->left = -1;
			if (fixed.count("."))
				return fixed.at(".");
			if (st->rcpts == 0)
				return std::string(
				    "554 5.5.1 no valid recipients\r\n");
			return done;
		}
		if (line.rfind("BDAT ", 0) == 0)
			st->left = atol(line.c_str() + 5);
		for (auto &kv : fixed)
			if (kv.first != "." && line.rfind(kv.first, 0) == 0)
				return kv.second;
		if (line.rfind("EHLO ", 0) == 0)
			return std::string(
			    "250-fake.test\r\n250-PIPELINING\r\n"
			    "250-CHUNKING\r\n250 AUTH PLAIN\r\n");
		if (line.rfind("AUTH ", 0) == 0)
			return std::string("235 ok\r\n");
		if (line.rfind("MAIL FROM:", 0) == 0 || line == "RSET") {
			st->rcpts = 0;
			return std::string("250 ok\r\n");
		}
		if (line.rfind("RCPT TO:<", 0) == 0) {
			std::string a = line.substr(9, line.size() - 10);
			if (std::find(good.begin(), good.end(), a) !=
			    good.end()) {
				st->rcpts++;
				return std::string("250 ok\r\n");
			}
			return "550 5.1.1 <" + a + ">: User unknown\r\n";
		}
		if (line.rfind("BDAT ", 0) == 0)
			return kSilent;
		return plain_answer(line, "PLAIN");
	};
}

// CHUNKING with PIPELINING: MAIL, RCPT, "BDAT n LAST" and the message go
// in one write (one round trip per message), the message as is: a line
// that starts with "." is not stuffed, and n counts exactly its bytes.
TEST(SmtpFake, ChunkingSendsTheWholeMessageInOneWrite)
{
	FakeServer srv("220 ok\r\n", chunking({"a@x.test"}));
	const std::string msg = "Subject: 1\r\n\r\n.leading dot\r\nbody\r\n";
	{
		Session ses(fake_login(srv.port));
		ASSERT_EQ(MFS_OK, ses.rc) << ses.err.msg;
		for (int i = 0; i < 2; i++) {
			auto r = ses.send(msg, {"a@x.test"});
			EXPECT_EQ(MFS_SMTP_ACCEPTED, r.status) << r.reply;
			EXPECT_TRUE(has(r.reply, "250 2.0.0 queued")) << r.reply;
			mfs_smtp_result_free(&r);
		}
	}
	auto lines = srv.lines();
	auto pending = srv.pending();
	int mails = 0;
	for (size_t i = 0; i < lines.size(); i++) {
		EXPECT_NE("DATA", lines[i]);
		EXPECT_NE("RSET", lines[i]) << "no RSET after an accepted BDAT";
		EXPECT_NE("..leading dot", lines[i]);
		if (lines[i].rfind("MAIL FROM:", 0) != 0)
			continue;
		mails++;
		EXPECT_EQ("RCPT TO:<a@x.test>\r\nBDAT " +
			      std::to_string(msg.size()) + " LAST\r\n" + msg,
			  pending[i]);
	}
	EXPECT_EQ(2, mails);
}

// With BDAT, once every byte of the message went out a lost reply leaves
// the outcome unknown (the server may have the message): never a
// temporary failure that would send it again.
TEST(SmtpFake, ChunkingLostReplyAfterTheDataIsUnknown)
{
	FakeServer srv("220 ok\r\n", chunking({"a@x.test"}, ""));
	Session ses(fake_login(srv.port));
	ASSERT_EQ(MFS_OK, ses.rc) << ses.err.msg;
	auto r = ses.send("Subject: x\r\n\r\nbody\r\n", {"a@x.test"});
	EXPECT_EQ(MFS_SMTP_UNKNOWN, r.status) << r.reply;
	EXPECT_EQ(0, mfs_smtp_alive(ses.s));
	mfs_smtp_result_free(&r);
}

// With BDAT and no recipient accepted, the server refuses the chunk: the
// outcome is the recipients' refusal, permanent.
TEST(SmtpFake, ChunkingWithoutRecipientIsRefused)
{
	FakeServer srv("220 ok\r\n", chunking({"a@x.test"}));
	Session ses(fake_login(srv.port));
	ASSERT_EQ(MFS_OK, ses.rc) << ses.err.msg;
	auto r = ses.send("Subject: x\r\n\r\nbody\r\n", {"b@x.test"});
	EXPECT_EQ(MFS_SMTP_PERMFAIL, r.status) << r.reply;
	EXPECT_TRUE(has(r.reply, "550 5.1.1")) << r.reply;
	mfs_smtp_result_free(&r);
	// the session goes on: RSET first, then the next message
	r = ses.send("Subject: y\r\n\r\nbody\r\n", {"a@x.test"});
	EXPECT_EQ(MFS_SMTP_ACCEPTED, r.status) << r.reply;
	mfs_smtp_result_free(&r);
}

// One round trip per message with BDAT, two with DATA (the server that
// does not offer CHUNKING); plus EHLO, AUTH and QUIT.
TEST(SmtpFake, ChunkingCostsOneRoundTripPerMessage)
{
	const std::string msg = "Subject: r\r\n\r\nbody\r\n";
	FakeServer bdat("220 ok\r\n", chunking({"a@x.test"}));
	FakeServer data("220 ok\r\n", transaction({"a@x.test"}));
	for (FakeServer *srv : {&bdat, &data}) {
		Session ses(fake_login(srv->port));
		ASSERT_EQ(MFS_OK, ses.rc) << ses.err.msg;
		for (int i = 0; i < 3; i++) {
			auto r = ses.send(msg, {"a@x.test"});
			EXPECT_EQ(MFS_SMTP_ACCEPTED, r.status) << r.reply;
			mfs_smtp_result_free(&r);
		}
	}
	EXPECT_EQ(3 + 3, bdat.rounds());
	EXPECT_EQ(3 + 2 * 3, data.rounds());
	auto lines = data.lines();
	EXPECT_EQ(3, std::count(lines.begin(), lines.end(), "DATA"));
}

// A server that offers CHUNKING without PIPELINING gets DATA, dot-stuffed.
TEST(SmtpFake, ChunkingWithoutPipeliningUsesData)
{
	auto inner = transaction({"a@x.test"});
	FakeServer srv("220 ok\r\n", [=](const std::string &line) {
		if (line.rfind("EHLO ", 0) == 0)
			return std::string("250-fake.test\r\n250-CHUNKING\r\n"
					   "250 AUTH PLAIN\r\n");
		return inner(line);
	});
	{
		Session ses(fake_login(srv.port));
		ASSERT_EQ(MFS_OK, ses.rc) << ses.err.msg;
		EXPECT_EQ(MFS_SMTP_CHUNKING,
			  mfs_smtp_caps(ses.s) &
			      (MFS_SMTP_CHUNKING | MFS_SMTP_PIPELINING));
		auto r = ses.send("Subject: x\r\n\r\n.dot\r\n", {"a@x.test"});
		EXPECT_EQ(MFS_SMTP_ACCEPTED, r.status) << r.reply;
		mfs_smtp_result_free(&r);
	}
	auto lines = srv.lines();
	EXPECT_NE(lines.end(), std::find(lines.begin(), lines.end(), "DATA"));
	EXPECT_NE(lines.end(), std::find(lines.begin(), lines.end(), "..dot"));
	for (auto &l : lines)
		EXPECT_NE(0u, l.rfind("BDAT", 0)) << l;
}

// The connection cut while the chunk is still being written (the server
// closes on reading "BDAT"; the message is far larger than the socket
// buffers): nothing can have been accepted, a temporary failure.
TEST(SmtpFake, ChunkingCutBeforeTheDataIsOutIsTemporary)
{
	FakeServer srv("220 ok\r\n",
		       chunking({"a@x.test"}, "250 ok\r\n", {{"BDAT ", ""}}));
	std::string msg = "Subject: big\r\n\r\n";
	msg += std::string(32u * 1024 * 1024, 'x') + "\r\n";
	Session ses(fake_login(srv.port));
	ASSERT_EQ(MFS_OK, ses.rc) << ses.err.msg;
	auto r = ses.send(msg, {"a@x.test"});
	EXPECT_EQ(MFS_SMTP_TEMPFAIL, r.status) << r.reply;
	EXPECT_TRUE(has(r.reply, "connection lost")) << r.reply;
	EXPECT_EQ(0, mfs_smtp_alive(ses.s));
	mfs_smtp_result_free(&r);
}

// A refused MAIL is the permanent failure with its reason; when the
// connection is lost after it, the message cannot have been taken: a
// temporary failure, not an unknown outcome.
TEST(SmtpFake, ChunkingRefusedMail)
{
	const std::map<std::string, std::string> refuse = {
	    {"MAIL", "550 5.7.1 sender refused\r\n"},
	    {"RCPT", "503 5.5.1 need MAIL\r\n"}};
	FakeServer srv("220 ok\r\n", chunking({"a@x.test"}, "", refuse));
	{
		Session ses(fake_login(srv.port));
		ASSERT_EQ(MFS_OK, ses.rc) << ses.err.msg;
		auto r = ses.send("Subject: x\r\n\r\nbody\r\n", {"a@x.test"});
		EXPECT_EQ(MFS_SMTP_PERMFAIL, r.status) << r.reply;
		EXPECT_TRUE(has(r.reply, "550 5.7.1 sender refused"))
		    << r.reply;
		EXPECT_EQ(1, mfs_smtp_alive(ses.s));
		mfs_smtp_result_free(&r);
	}
	auto cut = refuse;
	cut["."] = "";
	FakeServer srv2("220 ok\r\n", chunking({"a@x.test"}, "", cut));
	Session ses(fake_login(srv2.port));
	ASSERT_EQ(MFS_OK, ses.rc) << ses.err.msg;
	auto r = ses.send("Subject: x\r\n\r\nbody\r\n", {"a@x.test"});
	EXPECT_EQ(MFS_SMTP_TEMPFAIL, r.status) << r.reply;
	EXPECT_EQ(0, mfs_smtp_alive(ses.s));
	mfs_smtp_result_free(&r);
}

// The reply to BDAT decides after accepted recipients: 5xx permanent, 4xx
// temporary, both with the server's text; the next message then starts
// with RSET, in the same write as its envelope and data.
TEST(SmtpFake, ChunkingRefusedData)
{
	const std::string msg = "Subject: x\r\n\r\nbody\r\n";
	auto refuse = std::make_shared<std::string>("552 5.3.4 too big\r\n");
	auto inner = chunking({"a@x.test"});
	FakeServer srv("220 ok\r\n", [=](const std::string &line) {
		std::string r = inner(line);
		return r == "250 2.0.0 queued\r\n" && !refuse->empty() ? *refuse
								       : r;
	});
	{
		Session ses(fake_login(srv.port));
		ASSERT_EQ(MFS_OK, ses.rc) << ses.err.msg;
		auto r = ses.send(msg, {"a@x.test"});
		EXPECT_EQ(MFS_SMTP_PERMFAIL, r.status) << r.reply;
		EXPECT_TRUE(has(r.reply, "552 5.3.4 too big")) << r.reply;
		mfs_smtp_result_free(&r);
		*refuse = "451 4.3.0 try later\r\n";
		r = ses.send(msg, {"a@x.test"});
		EXPECT_EQ(MFS_SMTP_TEMPFAIL, r.status) << r.reply;
		EXPECT_TRUE(has(r.reply, "451 4.3.0")) << r.reply;
		EXPECT_EQ(1, mfs_smtp_alive(ses.s));
		mfs_smtp_result_free(&r);
		refuse->clear();
		r = ses.send(msg, {"a@x.test"});
		EXPECT_EQ(MFS_SMTP_ACCEPTED, r.status) << r.reply;
		mfs_smtp_result_free(&r);
	}
	auto lines = srv.lines();
	auto pending = srv.pending();
	int rsets = 0;
	for (size_t i = 0; i < lines.size(); i++) {
		if (lines[i] != "RSET")
			continue;
		rsets++;
		EXPECT_EQ("MAIL FROM:<alice@example.test>\r\n"
			  "RCPT TO:<a@x.test>\r\nBDAT " +
			      std::to_string(msg.size()) + " LAST\r\n" + msg,
			  pending[i]);
	}
	EXPECT_EQ(2, rsets);
}

// A refused RSET (the message being out already with BDAT): the reply to
// BDAT decides, and the session ends either way. Accepted stays accepted
// (never a temporary failure that would send it twice); refused is
// temporary (the refusal may be the earlier transaction's).
TEST(SmtpFake, ChunkingRefusedRsetLetsBdatDecide)
{
	for (bool take : {true, false}) {
		SCOPED_TRACE(take ? "taken" : "refused");
		std::map<std::string, std::string> fixed = {
		    {"RSET", "500 5.5.2 what\r\n"}};
		if (!take)
			fixed["."] = "554 5.6.0 refused\r\n";
		FakeServer srv(
		    "220 ok\r\n",
		    chunking({"a@x.test"}, "250 2.0.0 queued\r\n", fixed));
		Session ses(fake_login(srv.port));
		ASSERT_EQ(MFS_OK, ses.rc) << ses.err.msg;
		auto r = ses.send("Subject: x\r\n\r\nbody\r\n", {"b@x.test"});
		EXPECT_EQ(MFS_SMTP_PERMFAIL, r.status) << r.reply;
		mfs_smtp_result_free(&r);
		r = ses.send("Subject: y\r\n\r\nbody\r\n", {"a@x.test"});
		if (take) {
			EXPECT_EQ(MFS_SMTP_ACCEPTED, r.status) << r.reply;
			EXPECT_TRUE(has(r.reply, "250 2.0.0 queued"))
			    << r.reply;
		} else {
			EXPECT_EQ(MFS_SMTP_TEMPFAIL, r.status) << r.reply;
			EXPECT_TRUE(has(r.reply, "500 5.5.2 what")) << r.reply;
		}
		EXPECT_EQ(0, mfs_smtp_alive(ses.s));
		mfs_smtp_result_free(&r);
	}
}

} // namespace

int main(int argc, char **argv)
{
	::testing::InitGoogleTest(&argc, argv);
	::testing::AddGlobalTestEnvironment(new Servers("smtp_test"));
	return RUN_ALL_TESTS();
}
