#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <dirent.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>
#include <thread>

#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <set>
#include <vector>
#include <algorithm>

extern "C" {
#include "spool.h"
}

#include "mail_servers.h"

namespace
{

// A TCP relay on 127.0.0.1 to a target port that counts the connections
// made through it, can cut them all (as a server that closes an idle
// session) and can stop relaying without closing (a server gone silent).
class Relay
{
      public:
	explicit Relay(int target) : target_(target)
	{
		struct sockaddr_in a = {};
		socklen_t len = sizeof(a);

		lfd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		a.sin_family = AF_INET;
		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		EXPECT_EQ(0, bind(lfd_, (struct sockaddr *)&a, sizeof(a)));
		EXPECT_EQ(0, listen(lfd_, 8));
		getsockname(lfd_, (struct sockaddr *)&a, &len);
		port = ntohs(a.sin_port);
		accepter_ = std::thread([this] { accept_loop(); });
	}
	~Relay()
	{
		done_ = true;
		shutdown(lfd_, SHUT_RDWR);
		accepter_.join();
		cut();
		for (auto &t : pumps_)
			t.join();
		close(lfd_);
	}
	int connections()
	{
		return count_;
	}
	int open_now()
	{
		return open_;
	}
	// Closes every relayed connection, both sides.
	void cut()
	{
		std::lock_guard<std::mutex> g(mu_);
		for (int fd : fds_)
			shutdown(fd, SHUT_RDWR);
	}
	// Closes the connection the client writes to next, before any of
	// what it writes gets through.
	void cut_on_next_write()
	{
		cut_next_ = true;
	}
	// Stops relaying: nothing more reaches either side.
	void freeze()
	{
		frozen_ = true;
	}
	int port = 0;

      private:
	void accept_loop()
	{
		for (;;) {
			int c = accept4(lfd_, nullptr, nullptr, SOCK_CLOEXEC);
			if (c < 0 || done_) {
				if (c >= 0)
					close(c);
				return;
			}
			int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
			struct sockaddr_in a = {};
			a.sin_family = AF_INET;
			a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
			a.sin_port = htons(target_);
			if (connect(s, (struct sockaddr *)&a, sizeof(a)) != 0) {
				close(s);
				close(c);
				continue;
			}
			count_++;
			open_++;
			std::lock_guard<std::mutex> g(mu_);
			fds_.push_back(c);
			fds_.push_back(s);
			pumps_.emplace_back([this, c, s] { pump(c, s); });
		}
	}
	void pump(int c, int s)
	{
		struct pollfd p[2] = {{c, POLLIN, 0}, {s, POLLIN, 0}};
		char buf[65536];

		for (;;) {
			if (poll(p, 2, 100) < 0)
				break;
			if (frozen_ && !done_) {
				usleep(10000);
				continue;
			}
			int i = (p[0].revents & (POLLIN | POLLHUP | POLLERR))
				    ? 0
				    : (p[1].revents &
				       (POLLIN | POLLHUP | POLLERR))
					  ? 1
					  : -1;
			if (i < 0)
				continue;
			if (i == 0 && cut_next_.exchange(false))
				break;
			ssize_t n = recv(p[i].fd, buf, sizeof(buf), 0);
			if (n <= 0 || send(p[1 - i].fd, buf, n, MSG_NOSIGNAL) != n)
				break;
		}
		{
			std::lock_guard<std::mutex> g(mu_);
			fds_.erase(std::remove(fds_.begin(), fds_.end(), c),
				   fds_.end());
			fds_.erase(std::remove(fds_.begin(), fds_.end(), s),
				   fds_.end());
		}
		close(c);
		close(s);
		open_--;
	}
	int target_, lfd_ = -1;
	std::atomic<bool> done_{false}, frozen_{false}, cut_next_{false};
	std::atomic<int> count_{0}, open_{0};
	std::mutex mu_;
	std::vector<int> fds_;
	std::vector<std::thread> pumps_;
	std::thread accepter_;
};

class Spool : public ::testing::Test
{
      protected:
	struct mfs_account acct = {};
	struct mfs_spool *sp = nullptr;
	std::string dir;
	// the fake sent callback: what it made, how often it was called,
	// and what it is told to do (fail the next N calls, block until
	// released); all under mu
	std::mutex mu;
	std::condition_variable cv;
	std::vector<std::string> sent_names;  // made, in order
	std::vector<std::string> sent_bodies; // what each got to read
	int sent_calls = 0;
	int fail_next = 0;
	bool block = false;
	bool in_call = false;

	static int on_sent(void *arg, const char *name, int fd, off_t size)
	{
		auto *self = (Spool *)arg;
		std::string body(size > 0 ? size : 0, '\0');
		EXPECT_GT(size, 0);
		EXPECT_EQ(size, pread(fd, &body[0], body.size(), 0));
		std::unique_lock<std::mutex> g(self->mu);
		EXPECT_FALSE(self->in_call) << "calls overlap";
		self->sent_calls++;
		self->in_call = true;
		self->cv.notify_all();
		self->cv.wait(g, [self] { return !self->block; });
		self->in_call = false;
		self->cv.notify_all();
		if (self->fail_next > 0) {
			self->fail_next--;
			return -1;
		}
		self->sent_names.push_back(name);
		self->sent_bodies.push_back(body);
		return 0;
	}
	// Waits until pred() holds (under mu), at most secs seconds.
	template <typename P> bool wait_until(P pred, double secs = 10)
	{
		std::unique_lock<std::mutex> g(mu);
		return cv.wait_for(g, std::chrono::duration<double>(secs),
				   pred);
	}
	void set_block(bool b)
	{
		std::lock_guard<std::mutex> g(mu);
		block = b;
		cv.notify_all();
	}
	// Waits (at most 2 s) until the copy directory is empty: ID.eml goes
	// just before ID.name, after the callback returned.
	void wait_no_copies()
	{
		for (int i = 0; i < 100 && copies_on_disk(""); i++)
			usleep(20000);
	}
	// Files in the Sent copy directory whose names end in suffix ("":
	// all).
	size_t copies_on_disk(const std::string &suffix = ".eml")
	{
		size_t n = 0;
		DIR *d = opendir((dir + "/.sent").c_str());
		if (!d)
			return 0;
		while (struct dirent *de = readdir(d)) {
			std::string f = de->d_name;
			if (f != "." && f != ".." &&
			    f.size() > suffix.size() &&
			    f.compare(f.size() - suffix.size(), suffix.size(),
				      suffix) == 0)
				n++;
		}
		closedir(d);
		return n;
	}
	void SetUp() override
	{
		if (env.empty())
			GTEST_SKIP() << "the local mail servers did not start";
		char tmpl[] = "/tmp/spool_dir.XXXXXX";
		dir = std::string(mkdtemp(tmpl)) + "/outbox";
		acct.has_smtp = 1;
		acct.smtp.proto = MFS_PROTO_SMTP;
		acct.smtp.tls = MFS_TLS_IMPLICIT;
		acct.smtp.host = (char *)"localhost";
		acct.smtp.port = atoi(env["MFS_SMTPS_PORT"].c_str());
		acct.user = (char *)env["MFS_USER"].c_str();
		acct.ca_file = (char *)env["MFS_CA"].c_str();
		acct.timeout = 5;
		open_spool();
	}
	int backoff_min = 1, backoff_max = 2; // for the next open
	int try_open(struct mfs_err *err, const char *password = nullptr,
		     int keep_open = 0)
	{
		struct mfs_spool_opts o = {};
		o.dir = dir.c_str();
		o.acct = &acct;
		o.password = password ? password : env["MFS_PASS"].c_str();
		o.backoff_min = backoff_min;
		o.backoff_max = backoff_max;
		o.keep_open = keep_open;
		o.sent = on_sent;
		o.sent_arg = this;
		return mfs_spool_open(&o, &sp, err);
	}
	void open_spool(const char *password = nullptr, int keep_open = 0)
	{
		struct mfs_err err = {};
		ASSERT_EQ(MFS_OK, try_open(&err, password, keep_open))
			<< err.msg;
	}
	// Paths of the files in the spool whose names end in suffix.
	std::vector<std::string> spool_files(const std::string &suffix)
	{
		std::vector<std::string> v;
		DIR *d = opendir(dir.c_str());
		if (!d)
			return v;
		while (struct dirent *de = readdir(d)) {
			std::string f = de->d_name;
			if (f.size() > suffix.size() &&
			    f.compare(f.size() - suffix.size(), suffix.size(),
				      suffix) == 0)
				v.push_back(dir + "/" + f);
		}
		closedir(d);
		return v;
	}
	void TearDown() override
	{
		set_block(false);
		mfs_spool_close(sp);
		if (!dir.empty())
			system(("rm -rf " + dir.substr(0, dir.rfind('/')))
				       .c_str());
	}
	void write_entry(const std::string &name, const std::string &text)
	{
		struct mfs_err err = {};
		int fd = -1;
		ASSERT_EQ(MFS_OK, mfs_spool_create(sp, name.c_str(), &fd, &err))
			<< err.msg;
		size_t off = 0;
		while (off < text.size()) {
			ssize_t n = pwrite(fd, text.data() + off,
					   std::min<size_t>(1 << 20,
							    text.size() - off),
					   off);
			ASSERT_GT(n, 0);
			off += n;
		}
		close(fd);
	}
	int commit(const std::string &name, struct mfs_spool_outcome *oc,
		   struct mfs_err *err)
	{
		return mfs_spool_commit(sp, name.c_str(), oc, err);
	}
	std::string status(const std::string &name)
	{
		struct mfs_err err = {};
		char *t = mfs_spool_status_text(sp, name.c_str(), &err);
		std::string s = t ? t : std::string("ERR ") + err.msg;
		free(t);
		return s;
	}
	size_t count()
	{
		struct mfs_spool_entry *e;
		size_t n = 0;
		struct mfs_err err = {};
		EXPECT_EQ(MFS_OK, mfs_spool_list(sp, &e, &n, &err));
		mfs_spool_entries_free(e, n);
		return n;
	}
};

std::string msg(const std::string &token, const std::string &to,
		const std::string &body, const std::string &extra = "")
{
	return "From: Alice <alice@example.test>\nTo: " + to +
	       "\nSubject: spool " + token + "\nX-Test-Id: " + token + "\n" +
	       extra + "\n" + body;
}

TEST_F(Spool, CommitSendsBareLfUtf8AndHidesBcc)
{
	std::string body = "Gr\xc3\xbc\xc3\x9f"
			   "e\n.\n.foo\nend\n";
	write_entry("hello.eml",
		    msg("sp1", "alice@example.test", body,
			"Bcc: bob@example.test\nSubject: \xc3\x84pfel\n"));
	struct mfs_spool_outcome oc;
	struct mfs_err err = {};
	ASSERT_EQ(MFS_OK, commit("hello.eml", &oc, &err)) << err.msg;
	EXPECT_EQ(MFS_SPOOL_SENT, oc.result) << oc.reply;
	EXPECT_EQ(0u, count());
	EXPECT_EQ(0, sent_calls); // not on the committing thread
	EXPECT_EQ(1, mfs_spool_run_sent(sp));
	EXPECT_EQ(std::vector<std::string>{"hello.eml"}, sent_names);
	// the Sent copy is what the server got: CRLF, no Bcc
	ASSERT_EQ(1u, sent_bodies.size());
	EXPECT_EQ(std::string::npos, sent_bodies[0].find("Bcc"));
	EXPECT_NE(std::string::npos, sent_bodies[0].find("end\r\n"));
	EXPECT_EQ(0u, copies_on_disk());
	EXPECT_EQ(0u, copies_on_disk(".name"));
	auto bob = fetch(2, "sp1", 1);
	ASSERT_EQ(1u, bob.size());
	EXPECT_EQ(std::string::npos, bob[0].find("Bcc"));
	EXPECT_NE(std::string::npos,
		  bob[0].find("Gr\xc3\xbc\xc3\x9f"
			      "e\r\n.\r\n.foo\r\nend\r\n"));
	EXPECT_NE(std::string::npos, bob[0].find("Message-ID: <"));
	EXPECT_EQ(1u, fetch(1, "sp1", 1).size());
}

// An expired token is renewed through password_command once, and the new
// token serves the later sessions too.
TEST_F(Spool, RefusedTokenIsRenewedOnceAndKept)
{
	std::string tdir = dir.substr(0, dir.rfind('/'));
	std::ofstream(tdir + "/token") << env["MFS_PASS"] << "\n";
	std::string cmd = tdir + "/print-token";
	std::ofstream(cmd) << "#!/bin/sh\n"
			      "echo x >>" << tdir << "/count\n"
			      "cat " << tdir << "/token\n";
	chmod(cmd.c_str(), 0700);
	mfs_spool_close(sp);
	sp = nullptr;
	acct.auth = MFS_AUTH_XOAUTH2;
	acct.name = (char *)"t";
	acct.path = (char *)"/test/config";
	acct.password_command = &cmd[0];
	// a new session for each message: the renewed token must serve
	// the second login
	open_spool("expired-token", -1);
	for (const char *name : {"tok1.eml", "tok2.eml"}) {
		SCOPED_TRACE(name);
		write_entry(name, msg("sptok", "bob@example.test", "x\n"));
		struct mfs_spool_outcome oc;
		struct mfs_err err = {};
		ASSERT_EQ(MFS_OK, commit(name, &oc, &err)) << err.msg;
		EXPECT_EQ(MFS_SPOOL_SENT, oc.result) << oc.reply;
	}
	std::string runs = slurp(tdir + "/count");
	EXPECT_EQ(1, std::count(runs.begin(), runs.end(), '\n'));
	EXPECT_EQ(2u, fetch(2, "sptok", 2).size());
	acct.password_command = nullptr;
}

TEST_F(Spool, WaitingNamesAreHeldUntilRenamed)
{
	write_entry(".draft.swp", msg("sp2", "bob@example.test", "x\n"));
	struct mfs_spool_outcome oc;
	struct mfs_err err = {};
	ASSERT_EQ(MFS_OK, commit(".draft.swp", &oc, &err));
	EXPECT_EQ(MFS_SPOOL_HELD, oc.result);
	EXPECT_NE(std::string::npos, status(".draft.swp").find("waiting"));
	ASSERT_EQ(MFS_OK, mfs_spool_rename(sp, ".draft.swp", "draft", &err));
	EXPECT_NE(std::string::npos, status("draft").find("status: queued"));
	EXPECT_EQ(1, mfs_spool_run_due(sp));
	EXPECT_EQ(0u, count());
	EXPECT_EQ(1u, fetch(2, "sp2", 1).size());
}

TEST_F(Spool, PermanentFailureKeepsFileWithReason)
{
	write_entry("bad", msg("sp3", "nobody@elsewhere.invalid", "x\n"));
	struct mfs_spool_outcome oc;
	struct mfs_err err = {};
	EXPECT_EQ(MFS_E_ACCESS, commit("bad", &oc, &err));
	EXPECT_EQ(MFS_SPOOL_REJECTED, oc.result);
	EXPECT_NE(nullptr, strstr(err.msg, "Relay access denied")) << err.msg;
	std::string st = status("bad");
	EXPECT_NE(std::string::npos, st.find("status: failed")) << st;
	EXPECT_NE(std::string::npos, st.find("last reply: 554")) << st;
	EXPECT_EQ(1u, count());
	ASSERT_EQ(MFS_OK, mfs_spool_unlink(sp, "bad", &err));
	EXPECT_EQ(0u, count());
}

TEST_F(Spool, InvalidMessageStaysWithReason)
{
	write_entry("inv", "Subject: no recipients\n\nbody\n");
	struct mfs_spool_outcome oc;
	struct mfs_err err = {};
	EXPECT_EQ(MFS_E_INVAL, commit("inv", &oc, &err));
	EXPECT_EQ(MFS_SPOOL_BAD, oc.result);
	EXPECT_NE(std::string::npos, status("inv").find("status: invalid"));
	EXPECT_NE(std::string::npos, status("inv").find("From"));
}

TEST_F(Spool, PartialRejectionIsSentAndReported)
{
	write_entry("part", msg("sp4", "bob@example.test, unknown@example.test",
				"x\n"));
	struct mfs_spool_outcome oc;
	struct mfs_err err = {};
	EXPECT_EQ(MFS_OK, commit("part", &oc, &err));
	EXPECT_EQ(MFS_SPOOL_SENT, oc.result);
	EXPECT_NE(nullptr, strstr(oc.reply, "unknown@example.test")) << oc.reply;
	EXPECT_NE(nullptr, strstr(oc.reply, "550")) << oc.reply;
	EXPECT_EQ(1u, fetch(2, "sp4", 1).size());
}

TEST_F(Spool, ServerDownThenRetryThreadDelivers)
{
	int port = acct.smtp.port;
	acct.smtp.port = 1; // nothing listens there
	write_entry("later", msg("sp5", "bob@example.test", "retry me\n"));
	struct mfs_spool_outcome oc;
	struct mfs_err err = {};
	EXPECT_EQ(MFS_OK, commit("later", &oc, &err)) << err.msg;
	EXPECT_EQ(MFS_SPOOL_DEFERRED, oc.result);
	std::string st = status("later");
	EXPECT_NE(std::string::npos, st.find("status: queued")) << st;
	EXPECT_NE(std::string::npos, st.find("next attempt:")) << st;
	EXPECT_NE(std::string::npos, st.find("attempts: 1")) << st;
	acct.smtp.port = port; // the server is back
	ASSERT_EQ(MFS_OK, mfs_spool_start(sp, &err));
	auto got = fetch(2, "sp5", 1);
	EXPECT_EQ(1u, got.size());
	for (int i = 0; i < 50 && count(); i++)
		usleep(100000);
	EXPECT_EQ(0u, count());
	mfs_spool_stop(sp);
}

TEST_F(Spool, BurstOfHundredArrivesOnceEach)
{
	for (int i = 0; i < 100; i++)
		write_entry("m" + std::to_string(i),
			    msg("sp6", "bob@example.test",
				"n" + std::to_string(i) + "\n",
				"X-Seq: " + std::to_string(i) + "\n"));
	// rename-style submission: all queued, one session for the burst
	struct mfs_err err = {};
	for (int i = 0; i < 100; i++) {
		std::string n = "m" + std::to_string(i);
		ASSERT_EQ(MFS_OK, mfs_spool_rename(sp, n.c_str(),
						   (n + ".tmp").c_str(), &err));
		struct mfs_spool_outcome oc;
		ASSERT_EQ(MFS_OK, commit(n + ".tmp", &oc, &err));
		ASSERT_EQ(MFS_OK, mfs_spool_rename(sp, (n + ".tmp").c_str(),
						   n.c_str(), &err));
	}
	EXPECT_EQ(100, mfs_spool_run_due(sp));
	auto got = fetch(2, "sp6", 100, 60);
	ASSERT_EQ(100u, got.size());
	std::set<std::string> seqs;
	for (auto &m : got) {
		size_t p = m.find("X-Seq: ");
		seqs.insert(m.substr(p + 7, m.find("\r\n", p) - p - 7));
	}
	EXPECT_EQ(100u, seqs.size());
}

TEST_F(Spool, LargeAttachmentArrivesIntact)
{
	std::string blob(25 * 1024 * 1024 / 4 * 3, '\0');
	unsigned x = 12345;
	for (auto &c : blob) {
		x = x * 1103515245 + 12345;
		c = (char)(x >> 16);
	}
	std::string b64;
	static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnop"
				  "qrstuvwxyz0123456789+/";
	for (size_t i = 0; i < blob.size(); i += 3) {
		unsigned v = (unsigned char)blob[i] << 16 |
			     (unsigned char)blob[i + 1] << 8 |
			     (unsigned char)blob[i + 2];
		b64 += tab[v >> 18];
		b64 += tab[(v >> 12) & 63];
		b64 += tab[(v >> 6) & 63];
		b64 += tab[v & 63];
		if ((i / 3) % 19 == 18)
			b64 += '\n';
	}
	std::string body = "--b\nContent-Type: text/plain\n\nsee attached\n"
			   "--b\nContent-Type: application/octet-stream\n"
			   "Content-Transfer-Encoding: base64\n\n" +
			   b64 + "\n--b--\n";
	write_entry("big", msg("sp7", "bob@example.test", body,
			       "MIME-Version: 1.0\nContent-Type: "
			       "multipart/mixed; boundary=b\n"));
	struct mfs_spool_outcome oc;
	struct mfs_err err = {};
	ASSERT_EQ(MFS_OK, commit("big", &oc, &err)) << err.msg;
	ASSERT_EQ(MFS_SPOOL_SENT, oc.result) << oc.reply;
	auto got = fetch(2, "sp7", 1, 60);
	ASSERT_EQ(1u, got.size());
	// compare the attachment's base64 text after removing line ends
	size_t p = got[0].find("base64\r\n\r\n") + 10;
	std::string rx = got[0].substr(p, got[0].find("\r\n--b--") - p);
	std::string clean;
	for (char c : rx)
		if (c != '\r' && c != '\n')
			clean += c;
	std::string want;
	for (char c : b64)
		if (c != '\n')
			want += c;
	EXPECT_EQ(want.size(), clean.size());
	EXPECT_TRUE(want == clean);
}

TEST_F(Spool, CrashWhileSendingIsNotResent)
{
	write_entry("crash", msg("sp8", "bob@example.test", "once\n"));
	mfs_spool_close(sp);
	sp = nullptr;
	// the state a crash between DATA and the reply leaves behind
	std::string cmd = "sed -i 's/^status: .*/status: sending/; "
			  "s/^message-id: .*/message-id: <c@x>/' " +
			  dir + "/*.state";
	ASSERT_EQ(0, system(cmd.c_str()));
	open_spool();
	std::string st = status("crash");
	EXPECT_NE(std::string::npos, st.find("status: unknown")) << st;
	EXPECT_NE(std::string::npos, st.find("<c@x>")) << st;
	EXPECT_EQ(0, mfs_spool_run_due(sp));
	EXPECT_EQ(0u, fetch(2, "sp8", 1, 3).size());
	// the user's way to send it again: a rename
	struct mfs_err err = {};
	ASSERT_EQ(MFS_OK, mfs_spool_rename(sp, "crash", "crash2", &err));
	EXPECT_EQ(1, mfs_spool_run_due(sp));
	EXPECT_EQ(1u, fetch(2, "sp8", 1).size());
}

// Messages committed one after another share one SMTP connection, and
// each arrives once.
TEST_F(Spool, CommitsShareOneConnection)
{
	Relay relay(acct.smtp.port);
	acct.smtp.port = relay.port;
	for (int i = 0; i < 5; i++) {
		std::string name = "r" + std::to_string(i);
		write_entry(name, msg("sp10", "bob@example.test",
				      name + "\n", "X-Seq: " + name + "\n"));
		struct mfs_spool_outcome oc;
		struct mfs_err err = {};
		ASSERT_EQ(MFS_OK, commit(name, &oc, &err)) << err.msg;
		EXPECT_EQ(MFS_SPOOL_SENT, oc.result) << oc.reply;
	}
	EXPECT_EQ(1, relay.connections());
	EXPECT_EQ(1, relay.open_now());
	EXPECT_EQ(5, mfs_spool_run_sent(sp));
	EXPECT_EQ(5u, sent_names.size());
	EXPECT_EQ(5u, fetch(2, "sp10", 6, 3).size());
	mfs_spool_close(sp);
	sp = nullptr;
	for (int i = 0; i < 30 && relay.open_now(); i++)
		usleep(100000);
	EXPECT_EQ(0, relay.open_now());
}

// The server closed the kept session between two messages (seen before
// it is used): the second one goes on a new connection, at once, and
// arrives exactly once.
TEST_F(Spool, ClosedSessionIsReopenedAndSentOnce)
{
	Relay relay(acct.smtp.port);
	acct.smtp.port = relay.port;
	struct mfs_spool_outcome oc;
	struct mfs_err err = {};
	write_entry("c1", msg("sp11a", "bob@example.test", "one\n"));
	ASSERT_EQ(MFS_OK, commit("c1", &oc, &err)) << err.msg;
	EXPECT_EQ(MFS_SPOOL_SENT, oc.result) << oc.reply;
	relay.cut();
	for (int i = 0; i < 30 && relay.open_now(); i++)
		usleep(100000);
	write_entry("c2", msg("sp11b", "bob@example.test", "two\n"));
	ASSERT_EQ(MFS_OK, commit("c2", &oc, &err)) << err.msg;
	EXPECT_EQ(MFS_SPOOL_SENT, oc.result) << oc.reply;
	EXPECT_EQ(0u, count());
	EXPECT_EQ(2, relay.connections());
	EXPECT_EQ(1u, fetch(2, "sp11b", 2, 3).size());
	EXPECT_EQ(1u, fetch(2, "sp11a", 2, 1).size());
}

// The retry thread ends a session idle for keep_open seconds; the next
// message opens a new one.
// The kept session breaks while the next message's envelope is being
// sent: the message goes once more on a new connection, and arrives
// exactly once.
TEST_F(Spool, SessionLostBeforeTheDataIsResentOnce)
{
	// the STARTTLS port, whose Postfix offers no CHUNKING: with DATA the
	// envelope's replies come before any of the message goes out
	Relay relay(atoi(env["MFS_SMTP_PORT"].c_str()));
	acct.smtp.tls = MFS_TLS_STARTTLS;
	acct.smtp.port = relay.port;
	struct mfs_spool_outcome oc;
	struct mfs_err err = {};
	write_entry("d1", msg("sp14a", "bob@example.test", "one\n"));
	ASSERT_EQ(MFS_OK, commit("d1", &oc, &err)) << err.msg;
	EXPECT_EQ(MFS_SPOOL_SENT, oc.result) << oc.reply;
	relay.cut_on_next_write();
	write_entry("d2", msg("sp14b", "bob@example.test", "two\n"));
	ASSERT_EQ(MFS_OK, commit("d2", &oc, &err)) << err.msg;
	EXPECT_EQ(MFS_SPOOL_SENT, oc.result) << oc.reply;
	EXPECT_EQ(0u, count());
	EXPECT_EQ(2, relay.connections());
	EXPECT_EQ(1u, fetch(2, "sp14b", 2, 3).size());
}

// With BDAT the message goes out in the same write as its envelope: a
// kept session cut just as it is reused leaves the message "unknown"
// (it may have arrived), never sent a second time on a new connection.
TEST_F(Spool, SessionLostAsABdatMessageGoesOutIsUnknown)
{
	Relay relay(acct.smtp.port);
	acct.smtp.port = relay.port;
	struct mfs_spool_outcome oc;
	struct mfs_err err = {};
	write_entry("u1", msg("sp15a", "bob@example.test", "one\n"));
	ASSERT_EQ(MFS_OK, commit("u1", &oc, &err)) << err.msg;
	EXPECT_EQ(MFS_SPOOL_SENT, oc.result) << oc.reply;
	relay.cut_on_next_write();
	write_entry("u2", msg("sp15b", "bob@example.test", "two\n"));
	EXPECT_NE(MFS_OK, commit("u2", &oc, &err));
	EXPECT_EQ(MFS_SPOOL_UNSURE, oc.result) << oc.reply;
	EXPECT_EQ(1u, count()) << "the entry stays, marked unknown";
	EXPECT_EQ(1, relay.connections()) << "not sent again";
}

TEST_F(Spool, IdleSessionIsClosed)
{
	Relay relay(acct.smtp.port);
	acct.smtp.port = relay.port;
	mfs_spool_close(sp);
	sp = nullptr;
	open_spool(nullptr, 1);
	struct mfs_err err = {};
	ASSERT_EQ(MFS_OK, mfs_spool_start(sp, &err));
	struct mfs_spool_outcome oc;
	write_entry("i1", msg("sp12", "bob@example.test", "one\n"));
	ASSERT_EQ(MFS_OK, commit("i1", &oc, &err)) << err.msg;
	EXPECT_EQ(MFS_SPOOL_SENT, oc.result) << oc.reply;
	EXPECT_EQ(1, relay.open_now());
	for (int i = 0; i < 40 && relay.open_now(); i++)
		usleep(100000);
	EXPECT_EQ(0, relay.open_now());
	write_entry("i2", msg("sp12", "bob@example.test", "two\n"));
	ASSERT_EQ(MFS_OK, commit("i2", &oc, &err)) << err.msg;
	EXPECT_EQ(MFS_SPOOL_SENT, oc.result) << oc.reply;
	EXPECT_EQ(2, relay.connections());
	EXPECT_EQ(2u, fetch(2, "sp12", 2).size());
}

// A kept session whose server went silent does not hold up closing the
// spool (an unmount) for longer than the short wait for QUIT.
TEST_F(Spool, CloseIsQuickWhenTheServerIsGone)
{
	Relay relay(acct.smtp.port);
	acct.smtp.port = relay.port;
	acct.timeout = 30;
	struct mfs_spool_outcome oc;
	struct mfs_err err = {};
	ASSERT_EQ(MFS_OK, mfs_spool_start(sp, &err));
	write_entry("g1", msg("sp13", "bob@example.test", "one\n"));
	ASSERT_EQ(MFS_OK, commit("g1", &oc, &err)) << err.msg;
	EXPECT_EQ(MFS_SPOOL_SENT, oc.result) << oc.reply;
	relay.freeze();
	auto t0 = std::chrono::steady_clock::now();
	mfs_spool_close(sp);
	sp = nullptr;
	double secs = std::chrono::duration<double>(
			  std::chrono::steady_clock::now() - t0)
			  .count();
	EXPECT_LT(secs, 4.0);
	EXPECT_GE(secs, 1.5); // it did wait for QUIT's reply, briefly
}

TEST_F(Spool, StateSurvivesReopen)
{
	write_entry("keep.tmp", msg("sp9", "bob@example.test", "x\n"));
	struct mfs_spool_outcome oc;
	struct mfs_err err = {};
	ASSERT_EQ(MFS_OK, commit("keep.tmp", &oc, &err));
	mfs_spool_close(sp);
	sp = nullptr;
	open_spool();
	struct mfs_spool_entry e;
	ASSERT_EQ(MFS_OK, mfs_spool_stat(sp, "keep.tmp", &e, &err));
	EXPECT_EQ(MFS_SPOOL_WAITING, e.status);
	EXPECT_GT(e.size, 0);
	free(e.name);
	struct stat st;
	ASSERT_EQ(0, stat(dir.c_str(), &st));
	EXPECT_EQ(0700u, st.st_mode & 0777);
	int fd = -1;
	EXPECT_EQ(MFS_E_EXIST, mfs_spool_create(sp, "keep.tmp", &fd, &err));
	EXPECT_EQ(-1, fd);
}

// close() in outbox/ (the commit) returns once the server accepted the
// message, while the Sent copy is still being made on another thread.
TEST_F(Spool, CommitReturnsBeforeTheSentCopyIsMade)
{
	struct mfs_err err = {};
	ASSERT_EQ(MFS_OK, mfs_spool_start(sp, &err));
	set_block(true);
	write_entry("async", msg("sp20", "bob@example.test", "x\n",
				 "Bcc: alice@example.test\n"));
	struct mfs_spool_outcome oc;
	auto f = std::async(std::launch::async, [&] {
		struct mfs_err e = {};
		return commit("async", &oc, &e);
	});
	bool returned = f.wait_for(std::chrono::seconds(15)) ==
			std::future_status::ready;
	bool called = wait_until([this] { return in_call; });
	EXPECT_TRUE(returned) << "the commit waited for the Sent copy";
	EXPECT_TRUE(called) << "the Sent copy was not started";
	EXPECT_EQ(0u, sent_names.size());
	// the copy waits on disk; the entry has left outbox/
	EXPECT_EQ(1u, copies_on_disk());
	set_block(false);
	ASSERT_EQ(MFS_OK, f.get());
	EXPECT_EQ(MFS_SPOOL_SENT, oc.result) << oc.reply;
	EXPECT_EQ(0u, count());
	ASSERT_TRUE(wait_until([this] { return sent_names.size() == 1; }));
	EXPECT_EQ("async", sent_names[0]);
	EXPECT_EQ(std::string::npos, sent_bodies[0].find("Bcc"));
	EXPECT_NE(std::string::npos, sent_bodies[0].find("X-Test-Id: sp20\r\n"));
	wait_no_copies();
	EXPECT_EQ(0u, copies_on_disk());
	EXPECT_EQ(0u, copies_on_disk(".name"));
	EXPECT_EQ(1, sent_calls);
	EXPECT_EQ(1u, fetch(2, "sp20", 1).size());
}

// A callback that fails is called again after the backoff, and the copy
// stays on disk until it succeeds.
TEST_F(Spool, FailedSentCopyIsKeptAndRetried)
{
	struct mfs_err err = {};
	fail_next = 2;
	ASSERT_EQ(MFS_OK, mfs_spool_start(sp, &err));
	write_entry("retry", msg("sp21", "bob@example.test", "x\n"));
	struct mfs_spool_outcome oc;
	ASSERT_EQ(MFS_OK, commit("retry", &oc, &err)) << err.msg;
	EXPECT_EQ(MFS_SPOOL_SENT, oc.result) << oc.reply;
	ASSERT_TRUE(wait_until([this] { return sent_calls >= 1; }));
	// the next try is a backoff (1 s) away: kept meanwhile
	EXPECT_EQ(1u, copies_on_disk());
	EXPECT_EQ(0, mfs_spool_run_sent(sp)); // not due yet
	auto t0 = std::chrono::steady_clock::now();
	ASSERT_TRUE(wait_until([this] { return sent_names.size() == 1; }));
	double secs = std::chrono::duration<double>(
			  std::chrono::steady_clock::now() - t0)
			  .count();
	EXPECT_GE(secs, 2.0); // backoff 1 s, then 2 s
	EXPECT_EQ(3, sent_calls);
	wait_no_copies();
	EXPECT_EQ(0u, copies_on_disk());
}

// Copies an earlier run left are made after the spool is opened again;
// half-written files are dropped, never handed over.
TEST_F(Spool, SentCopyLeftOnDiskIsMadeAfterReopen)
{
	struct mfs_err err = {};
	write_entry("left", msg("sp22", "bob@example.test", "left over\n"));
	struct mfs_spool_outcome oc;
	ASSERT_EQ(MFS_OK, commit("left", &oc, &err)) << err.msg;
	EXPECT_EQ(MFS_SPOOL_SENT, oc.result) << oc.reply;
	EXPECT_EQ(0, mfs_spool_close(sp)); // never started: nothing made
	sp = nullptr;
	EXPECT_EQ(0, sent_calls);
	EXPECT_EQ(1u, copies_on_disk());
	EXPECT_EQ(1u, copies_on_disk(".name"));
	// what a crash while keeping a copy leaves: a torn .new, a name alone
	std::ofstream(dir + "/.sent/00000000000000010000ffff.eml.new")
		<< "From: torn";
	std::ofstream(dir + "/.sent/00000000000000010000fffe.name")
		<< "name: orphan\n";
	open_spool();
	EXPECT_EQ(0u, count()); // not listed in outbox/
	ASSERT_EQ(MFS_OK, mfs_spool_start(sp, &err));
	ASSERT_TRUE(wait_until([this] { return sent_names.size() == 1; }));
	EXPECT_EQ("left", sent_names[0]);
	EXPECT_NE(std::string::npos, sent_bodies[0].find("left over\r\n"));
	wait_no_copies();
	EXPECT_EQ(0u, copies_on_disk());
	EXPECT_EQ(0u, copies_on_disk(".new"));
	EXPECT_EQ(0u, copies_on_disk(".name"));
	EXPECT_EQ(1, sent_calls);
}

// Closing the spool (an unmount) does not wait longer than the account's
// timeout for a callback that hangs; that copy stays on disk and is made
// at the next open.
TEST_F(Spool, CloseWithHungSentCopyIsBounded)
{
	struct mfs_err err = {};
	acct.timeout = 2;
	ASSERT_EQ(MFS_OK, mfs_spool_start(sp, &err));
	set_block(true);
	write_entry("hung", msg("sp23", "bob@example.test", "x\n"));
	struct mfs_spool_outcome oc;
	ASSERT_EQ(MFS_OK, commit("hung", &oc, &err)) << err.msg;
	ASSERT_TRUE(wait_until([this] { return in_call; }));
	auto t0 = std::chrono::steady_clock::now();
	EXPECT_EQ(1, mfs_spool_close(sp));
	sp = nullptr;
	double secs = std::chrono::duration<double>(
			  std::chrono::steady_clock::now() - t0)
			  .count();
	EXPECT_LT(secs, 3.5);
	EXPECT_GE(secs, 1.5);
	EXPECT_EQ(1u, copies_on_disk());
	// the hung call ends in a failure: the copy stays for the next run
	{
		std::lock_guard<std::mutex> g(mu);
		fail_next = 1;
	}
	set_block(false);
	ASSERT_TRUE(wait_until([this] { return !in_call; }));
	usleep(200000); // the left thread records the failure and ends
	EXPECT_EQ(1u, copies_on_disk());
	open_spool();
	EXPECT_EQ(1, mfs_spool_run_sent(sp));
	ASSERT_EQ(std::vector<std::string>{"hung"}, sent_names);
	EXPECT_EQ(2, sent_calls);
	EXPECT_EQ(0u, copies_on_disk());
}

// With the server unreachable for the copies (the callback fails), closing
// does not wait at all; the copy stays.
TEST_F(Spool, CloseDoesNotWaitForFailingSentCopies)
{
	struct mfs_err err = {};
	acct.timeout = 5;
	fail_next = 1000;
	ASSERT_EQ(MFS_OK, mfs_spool_start(sp, &err));
	write_entry("down", msg("sp24", "bob@example.test", "x\n"));
	struct mfs_spool_outcome oc;
	ASSERT_EQ(MFS_OK, commit("down", &oc, &err)) << err.msg;
	ASSERT_TRUE(wait_until([this] { return sent_calls >= 1 && !in_call; }));
	auto t0 = std::chrono::steady_clock::now();
	EXPECT_EQ(0, mfs_spool_close(sp));
	sp = nullptr;
	double secs = std::chrono::duration<double>(
			  std::chrono::steady_clock::now() - t0)
			  .count();
	EXPECT_LT(secs, 1.0);
	EXPECT_EQ(1u, copies_on_disk());
	EXPECT_LE(sent_calls, 2);
}

// Pending copies get their chance at close, in order, while the server
// answers.
TEST_F(Spool, CloseMakesPendingCopies)
{
	struct mfs_err err = {};
	for (int i = 0; i < 3; i++) {
		std::string n = "p" + std::to_string(i);
		write_entry(n, msg("sp25", "bob@example.test", n + "\n"));
		struct mfs_spool_outcome oc;
		ASSERT_EQ(MFS_OK, commit(n, &oc, &err)) << err.msg;
	}
	EXPECT_EQ(3u, copies_on_disk());
	ASSERT_EQ(MFS_OK, mfs_spool_start(sp, &err));
	EXPECT_EQ(0, mfs_spool_close(sp));
	sp = nullptr;
	EXPECT_EQ((std::vector<std::string>{"p0", "p1", "p2"}), sent_names);
	EXPECT_EQ(0u, copies_on_disk());
}

// Many copies, some failing first, and a second thread making copies at
// the same time as the spool's own: each copy is made exactly once, in
// the order the messages were accepted.
TEST_F(Spool, EachSentCopyIsMadeOnceInOrder)
{
	struct mfs_err err = {};
	std::vector<std::string> want;
	fail_next = 2;
	ASSERT_EQ(MFS_OK, mfs_spool_start(sp, &err));
	std::atomic<bool> done{false};
	std::thread racer([&] {
		while (!done)
			mfs_spool_run_sent(sp);
	});
	for (int i = 0; i < 8; i++) {
		std::string n = "o" + std::to_string(i);
		write_entry(n, msg("sp26", "bob@example.test", n + "\n"));
		struct mfs_spool_outcome oc;
		ASSERT_EQ(MFS_OK, commit(n, &oc, &err)) << err.msg;
		ASSERT_EQ(MFS_SPOOL_SENT, oc.result) << oc.reply;
		want.push_back(n);
	}
	bool all = wait_until([this] { return sent_names.size() >= 8; }, 20);
	done = true;
	racer.join();
	ASSERT_TRUE(all);
	// once the Sent-copy thread has ended, no copy can be made again
	EXPECT_EQ(0, mfs_spool_stop(sp));
	std::lock_guard<std::mutex> g(mu);
	EXPECT_EQ(want, sent_names);
	EXPECT_EQ(10, sent_calls);
	EXPECT_EQ(0u, copies_on_disk());
}

} // namespace

int main(int argc, char **argv)
{
	::testing::InitGoogleTest(&argc, argv);
	::testing::AddGlobalTestEnvironment(new Servers("spool_test"));
	return RUN_ALL_TESTS();
}

namespace
{

void put_file(const std::string &path, const std::string &text)
{
	std::ofstream(path, std::ios::binary) << text;
}

std::string get_file(const std::string &path)
{
	std::ifstream f(path, std::ios::binary);
	std::stringstream ss;
	ss << f.rdbuf();
	return ss.str();
}

} // namespace

// `touch outbox/NAME`: a queued or failed message is tried again at once,
// and its attempts go on counting.
TEST_F(Spool, RetryNowTriesQueuedAndFailedAgain)
{
	mfs_spool_close(sp);
	sp = nullptr;
	backoff_min = backoff_max = 3600;
	open_spool();
	int port = acct.smtp.port;
	acct.smtp.port = 1; // nothing listens there
	write_entry("later", msg("retrynow1", "bob@example.test", "x\n"));
	struct mfs_spool_outcome oc;
	struct mfs_err err = {};
	EXPECT_EQ(MFS_OK, commit("later", &oc, &err)) << err.msg;
	EXPECT_EQ(MFS_SPOOL_DEFERRED, oc.result);
	EXPECT_EQ(0, mfs_spool_run_due(sp)); // not due for an hour
	EXPECT_NE(std::string::npos, status("later").find("attempts: 1"));
	ASSERT_EQ(MFS_OK, mfs_spool_retry_now(sp, "later", &err)) << err.msg;
	EXPECT_EQ(0, mfs_spool_run_due(sp)); // tried: the server is still down
	std::string st = status("later");
	EXPECT_NE(std::string::npos, st.find("status: queued")) << st;
	EXPECT_NE(std::string::npos, st.find("attempts: 2")) << st;
	acct.smtp.port = port; // the server is back
	EXPECT_EQ(0, mfs_spool_run_due(sp)); // due in an hour again
	ASSERT_EQ(MFS_OK, mfs_spool_retry_now(sp, "later", &err)) << err.msg;
	EXPECT_EQ(1, mfs_spool_run_due(sp));
	EXPECT_EQ(1u, fetch(2, "retrynow1", 1).size());

	write_entry("bad", msg("retrynow2", "nobody@elsewhere.invalid", "x\n"));
	EXPECT_EQ(MFS_E_ACCESS, commit("bad", &oc, &err));
	EXPECT_NE(std::string::npos, status("bad").find("status: failed"));
	ASSERT_EQ(MFS_OK, mfs_spool_retry_now(sp, "bad", &err)) << err.msg;
	st = status("bad");
	EXPECT_NE(std::string::npos, st.find("status: queued")) << st;
	EXPECT_EQ(0, mfs_spool_run_due(sp)); // refused again
	st = status("bad");
	EXPECT_NE(std::string::npos, st.find("status: failed")) << st;
	EXPECT_NE(std::string::npos, st.find("attempts: 2")) << st;

	// a waiting message is left as it is; an unknown name is an error
	write_entry(".w.swp", msg("retrynow3", "bob@example.test", "x\n"));
	ASSERT_EQ(MFS_OK, commit(".w.swp", &oc, &err));
	ASSERT_EQ(MFS_OK, mfs_spool_retry_now(sp, ".w.swp", &err));
	EXPECT_NE(std::string::npos, status(".w.swp").find("status: waiting"));
	EXPECT_EQ(MFS_E_NOENT, mfs_spool_retry_now(sp, "none", &err));
}

// "sending" is on disk before the message goes: when it cannot be written
// (here a directory stands where the state file goes, which stops root
// too), nothing is sent and the message stays queued.
TEST_F(Spool, UnwritableSendingStateSendsNothing)
{
	write_entry("nostate", msg("nostate1", "bob@example.test", "x\n"));
	auto states = spool_files(".state");
	ASSERT_EQ(1u, states.size());
	ASSERT_EQ(0, unlink(states[0].c_str()));
	ASSERT_EQ(0, mkdir(states[0].c_str(), 0700));
	struct mfs_spool_outcome oc;
	struct mfs_err err = {};
	EXPECT_EQ(MFS_OK, commit("nostate", &oc, &err)) << err.msg;
	EXPECT_EQ(MFS_SPOOL_DEFERRED, oc.result) << oc.reply;
	EXPECT_NE(std::string::npos, status("nostate").find("status: queued"));
	EXPECT_EQ(0u, fetch(2, "nostate1", 1, 3).size());
	// the state can be written again: it goes, once
	ASSERT_EQ(0, rmdir(states[0].c_str()));
	ASSERT_EQ(MFS_OK, mfs_spool_retry_now(sp, "nostate", &err)) << err.msg;
	EXPECT_EQ(1, mfs_spool_run_due(sp));
	EXPECT_EQ(1u, fetch(2, "nostate1", 1).size());
}

// Ids are the time, the pid and a counter: a new run in the same second
// with the same pid (a restarted container) makes the ids an earlier run
// left on disk. Those are skipped; the entries behind them stay intact.
TEST_F(Spool, IdsLeftByAnEarlierRunAreNotReused)
{
	mfs_spool_close(sp);
	sp = nullptr;
	time_t now = time(NULL);
	std::vector<std::string> ids;
	for (int sec = 0; sec < 3; sec++) // the create may come a bit later
		for (unsigned c = 0; c < 4; c++) {
			char id[64];
			snprintf(id, sizeof(id), "%016llx%04x%04x",
				 (long long)(now + sec),
				 (unsigned)getpid() & 0xffff, c);
			ids.push_back(id);
			put_file(dir + "/" + id + ".eml",
				 "From: a@example.test\nTo: b@example.test\n"
				 "\nold " +
					 std::string(id) + "\n");
			put_file(dir + "/" + id + ".state",
				 "name: old-" + std::string(id) +
					 "\nstatus: waiting\n");
		}
	open_spool(); // its counter starts from 0 again
	ASSERT_EQ(ids.size(), count());
	write_entry("new", msg("idskip1", "bob@example.test", "x\n"));
	EXPECT_EQ(ids.size() + 1, count());
	for (const auto &id : ids) {
		EXPECT_EQ("old " + id + "\n",
			  get_file(dir + "/" + id + ".eml")
				  .substr(sizeof("From: a@example.test\nTo: "
						 "b@example.test\n\n") -
					  1));
		struct mfs_spool_entry e;
		struct mfs_err err = {};
		ASSERT_EQ(MFS_OK,
			  mfs_spool_stat(sp, ("old-" + id).c_str(), &e, &err))
			<< err.msg;
		EXPECT_EQ(MFS_SPOOL_WAITING, e.status);
		free(e.name);
	}
}

// A symbolic link planted in the spool is never followed: not to write a
// state through it, not to read a state from it.
TEST_F(Spool, PlantedLinksAreNotFollowed)
{
	write_entry("a", msg("planted1", "bob@example.test", "x\n"));
	auto states = spool_files(".state");
	ASSERT_EQ(1u, states.size());
	std::string victim = dir + "/../victim";
	put_file(victim, "precious\n");
	ASSERT_EQ(0, symlink(victim.c_str(), (states[0] + ".new").c_str()));
	struct mfs_err err = {};
	ASSERT_EQ(MFS_OK, mfs_spool_rename(sp, "a", "b", &err)) << err.msg;
	EXPECT_EQ("precious\n", get_file(victim));
	struct stat st;
	ASSERT_EQ(0, lstat(states[0].c_str(), &st));
	EXPECT_TRUE(S_ISREG(st.st_mode));
	EXPECT_NE(std::string::npos, get_file(states[0]).find("name: b\n"));

	// a state that is a link to a file elsewhere is not loaded
	mfs_spool_close(sp);
	sp = nullptr;
	std::string fake = dir + "/../fake";
	put_file(fake, "name: planted\nstatus: queued\n");
	ASSERT_EQ(0, unlink(states[0].c_str()));
	ASSERT_EQ(0, symlink(fake.c_str(), states[0].c_str()));
	open_spool();
	EXPECT_EQ(0u, count());
	EXPECT_EQ("name: planted\nstatus: queued\n", get_file(fake));
}

// A spool directory that belongs to someone else is refused; one open to
// others is made private.
TEST_F(Spool, DirectoryOfAnotherUserIsRefused)
{
	mfs_spool_close(sp);
	sp = nullptr;
	if (chown(dir.c_str(), 65534, 65534) != 0)
		GTEST_SKIP() << "cannot chown (not root)";
	struct mfs_err err = {};
	EXPECT_EQ(MFS_E_ACCESS, try_open(&err));
	EXPECT_EQ(nullptr, sp);
	EXPECT_NE(nullptr, strstr(err.msg, dir.c_str())) << err.msg;
	EXPECT_NE(nullptr, strstr(err.msg, "uid 65534")) << err.msg;
	ASSERT_EQ(0, chown(dir.c_str(), geteuid(), getegid()));
	ASSERT_EQ(0, chmod(dir.c_str(), 0777));
	ASSERT_EQ(0, chown((dir + "/.sent").c_str(), 65534, 65534));
	EXPECT_EQ(MFS_E_ACCESS, try_open(&err));
	EXPECT_NE(nullptr, strstr(err.msg, "/.sent")) << err.msg;
	ASSERT_EQ(0, chown((dir + "/.sent").c_str(), geteuid(), getegid()));
	ASSERT_EQ(MFS_OK, try_open(&err)) << err.msg;
	struct stat st;
	ASSERT_EQ(0, stat(dir.c_str(), &st));
	EXPECT_EQ(0700u, st.st_mode & 0777);
}
