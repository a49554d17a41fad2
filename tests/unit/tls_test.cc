// tls_test.cc - TCP connect, the stream driver's timeouts and cancellation,
// certificate and host name verification, and STARTTLS.
//
// Certificates are made with the openssl command line in a temporary
// directory; TLS servers are `openssl s_server -rev` children on 127.0.0.1
// and, for STARTTLS, a small line-protocol server thread in this file.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include <fstream>
#include <sstream>
#include <string>
#include <thread>

extern "C" {
#include "tls.h"
}

namespace
{

double now_s()
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int remove_entry(const char *path, const struct stat *, int, struct FTW *)
{
	return remove(path);
}

std::string read_file(const std::string &path)
{
	std::ifstream in(path);
	std::stringstream ss;
	ss << in.rdbuf();
	return ss.str();
}

// A listening socket on 127.0.0.1 with a kernel-chosen port. It never
// accepts: connections complete in the kernel and then stay silent.
struct Listener {
	int fd = -1;
	int port = 0;

	explicit Listener(int backlog = 16)
	{
		struct sockaddr_in sa = {};
		socklen_t len = sizeof(sa);

		fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		sa.sin_family = AF_INET;
		sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
		    listen(fd, backlog) != 0 ||
		    getsockname(fd, (struct sockaddr *)&sa, &len) != 0)
			abort();
		port = ntohs(sa.sin_port);
	}
	~Listener()
	{
		close(fd);
	}
};

// A port on 127.0.0.1 where nothing listens.
int closed_port()
{
	Listener l;
	return l.port;
}

// Certificates, and one `openssl s_server -rev` per server certificate.
class TlsEnv : public ::testing::Environment
{
      public:
	static std::string dir;
	static bool ok;
	static int port_good, port_other, port_wronghost, port_expired;

	void SetUp() override
	{
		char tmpl[] = "/tmp/mailfs-tls-XXXXXX";

		signal(SIGPIPE, SIG_IGN);
		if (mkdtemp(tmpl) == nullptr)
			return;
		dir = tmpl;
		if (!make_certs())
			return;
		port_good = start_server("good");
		port_other = start_server("other");
		port_wronghost = start_server("wronghost");
		port_expired = start_server("expired");
		ok = port_good > 0 && port_other > 0 && port_wronghost > 0 &&
		     port_expired > 0;
	}

	void TearDown() override
	{
		for (pid_t pid : pids_) {
			kill(pid, SIGTERM);
			waitpid(pid, nullptr, 0);
		}
		if (!dir.empty())
			nftw(dir.c_str(), remove_entry, 16,
			     FTW_DEPTH | FTW_PHYS);
	}

      private:
	std::vector<pid_t> pids_;

	static bool make_certs()
	{
		// EC keys: fast to make. "expired" goes through `openssl ca`,
		// the one subcommand in OpenSSL 3.0 that takes a past
		// start and end date.
		const std::string script = R"(
set -e
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out $1.key; }
mkca() {
  key $1
  openssl req -x509 -new -key $1.key -out $1.pem -days 3650 -subj /CN=$1 \
    -addext basicConstraints=critical,CA:TRUE \
    -addext keyUsage=critical,keyCertSign,cRLSign
}
leaf() {
  key $1
  openssl req -new -key $1.key -out $1.csr -subj /CN=$1
  printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' "$3" > $1.ext
  openssl x509 -req -in $1.csr -CA $2.pem -CAkey $2.key -CAcreateserial \
    -out $1.pem -days 365 -extfile $1.ext
}
mkca ca
mkca otherca
leaf good ca DNS:localhost,IP:127.0.0.1
leaf other otherca DNS:localhost,IP:127.0.0.1
leaf wronghost ca DNS:mail.example.org,IP:10.9.9.9
key expired
openssl req -new -key expired.key -out expired.csr -subj /CN=expired
mkdir cadb
: > cadb/index.txt
echo 01 > cadb/serial
cat > ca.cnf <<EOF
[ca]
default_ca = c
[c]
database = cadb/index.txt
serial = cadb/serial
new_certs_dir = cadb
certificate = ca.pem
private_key = ca.key
default_md = sha256
policy = p
x509_extensions = e
[p]
commonName = supplied
[e]
subjectAltName = DNS:localhost,IP:127.0.0.1
basicConstraints = CA:FALSE
EOF
openssl ca -batch -config ca.cnf -in expired.csr -out expired.pem -notext \
  -startdate 20200101000000Z -enddate 20200201000000Z
)";
		std::ofstream(dir + "/make.sh") << script;
		std::string cmd =
		    "cd " + dir + " && sh make.sh > make.log 2>&1";
		if (system(cmd.c_str()) != 0) {
			fprintf(stderr, "certificate generation failed:\n%s\n",
				read_file(dir + "/make.log").c_str());
			return false;
		}
		return true;
	}

	// Starts s_server for name.pem on a kernel-chosen port and returns
	// the port once it listens, or -1.
	int start_server(const std::string &name)
	{
		std::string out = dir + "/" + name + ".out";
		std::string cert = dir + "/" + name + ".pem";
		std::string key = dir + "/" + name + ".key";
		const char *argv[] = {"openssl",     "s_server",  "-accept",
				      "127.0.0.1:0", "-cert",	  cert.c_str(),
				      "-key",	     key.c_str(), "-rev",
				      nullptr};
		pid_t parent = getpid();
		pid_t pid = fork();

		if (pid < 0)
			return -1;
		if (pid == 0) {
			// Dies with the test binary, even when it crashes.
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			if (getppid() != parent)
				_exit(127);
			int in = open("/dev/null", O_RDONLY);
			int o = open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
				     0600);
			if (in < 0 || o < 0 || dup2(in, 0) < 0 ||
			    dup2(o, 1) < 0 || dup2(o, 2) < 0)
				_exit(127);
			execvp("openssl", (char **)argv);
			_exit(127);
		}
		pids_.push_back(pid);
		for (int i = 0; i < 200; i++) {
			std::string text = read_file(out);
			size_t at = text.find("ACCEPT 127.0.0.1:");
			if (at != std::string::npos &&
			    text.find('\n', at) != std::string::npos)
				return atoi(text.c_str() + at + 17);
			usleep(50 * 1000);
		}
		return -1;
	}
};

std::string TlsEnv::dir;
bool TlsEnv::ok;
int TlsEnv::port_good, TlsEnv::port_other, TlsEnv::port_wronghost,
    TlsEnv::port_expired;

const auto *const kEnv = ::testing::AddGlobalTestEnvironment(new TlsEnv);

std::string path(const char *name)
{
	return TlsEnv::dir + "/" + name;
}

#define REQUIRE_ENV()                                                          \
	do {                                                                   \
		if (!TlsEnv::ok)                                               \
			GTEST_FAIL() << "test certificates or s_server "       \
					"unavailable";                         \
	} while (0)

// Connects to 127.0.0.1:port and runs the TLS handshake for host.
mailstream *tls_to(int port, const char *host, const char *ca_file,
		   struct mfs_err *err, int timeout = 5)
{
	struct mfs_tls_opts opts = {host, ca_file, timeout};
	int fd = mfs_tcp_connect("127.0.0.1", port, timeout, err);

	if (fd < 0)
		return nullptr;
	return mfs_stream_tls(fd, &opts, err);
}

// Runs tls_to and expects it to fail; closes a stream that should not
// exist, so that s_server is free for the next test.
void expect_refused(int port, const char *host, const char *ca_file,
		    struct mfs_err *err, int timeout = 5)
{
	mailstream *s = tls_to(port, host, ca_file, err, timeout);
	EXPECT_EQ(nullptr, s);
	if (s != nullptr)
		mailstream_close(s);
}

// Writes line and reads one line back, without its end of line.
std::string round_trip(mailstream *s, const std::string &line)
{
	if (mailstream_write(s, line.data(), line.size()) !=
		(ssize_t)line.size() ||
	    mailstream_flush(s) != 0)
		return "<write failed>";
	MMAPString *buf = mmap_string_new("");
	char *got = mailstream_read_line_remove_eol(s, buf);
	std::string r = got != nullptr ? got : "<read failed>";
	mmap_string_free(buf);
	return r;
}

// ---- TCP ----

TEST(TcpConnect, RefusedIsConnectError)
{
	struct mfs_err err;
	int port = closed_port();

	EXPECT_EQ(-1, mfs_tcp_connect("127.0.0.1", port, 2, &err));
	EXPECT_EQ(MFS_E_CONNECT, err.code);
	std::string want =
	    "cannot connect to 127.0.0.1:" + std::to_string(port) +
	    ": Connection refused";
	EXPECT_EQ(want, err.msg);
}

TEST(TcpConnect, SocketIsBlockingCloexecNodelay)
{
	Listener l;
	struct mfs_err err;
	int one = 0;
	socklen_t len = sizeof(one);

	int fd = mfs_tcp_connect("localhost", l.port, 2, &err);
	ASSERT_GE(fd, 0) << err.msg;
	EXPECT_TRUE(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	EXPECT_FALSE(fcntl(fd, F_GETFL) & O_NONBLOCK);
	ASSERT_EQ(0, getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, &len));
	EXPECT_NE(0, one);
	close(fd);
}

// A peer that went away without a word (suspend, another network) is found
// by TCP keepalive within about 90 s, also under a silent IDLE.
TEST(TcpConnect, KeepaliveFindsADeadPeer)
{
	Listener l;
	struct mfs_err err;
	int v = 0;
	socklen_t len = sizeof(v);

	int fd = mfs_tcp_connect("127.0.0.1", l.port, 2, &err);
	ASSERT_GE(fd, 0) << err.msg;
	ASSERT_EQ(0, getsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &v, &len));
	EXPECT_NE(0, v);
	ASSERT_EQ(0, getsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &v, &len));
	EXPECT_EQ(60, v);
	ASSERT_EQ(0, getsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &v, &len));
	EXPECT_EQ(10, v);
	ASSERT_EQ(0, getsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &v, &len));
	EXPECT_EQ(3, v);
	close(fd);
}

TEST(TcpConnect, FullBacklogTimesOut)
{
	// With a backlog of 0 the first connection fills the accept queue;
	// the kernel then drops further SYNs, so the next connect hangs.
	Listener l(0);
	struct mfs_err err;

	int first = mfs_tcp_connect("127.0.0.1", l.port, 2, &err);
	ASSERT_GE(first, 0) << err.msg;
	double t0 = now_s();
	EXPECT_EQ(-1, mfs_tcp_connect("127.0.0.1", l.port, 1, &err));
	double took = now_s() - t0;
	EXPECT_EQ(MFS_E_TIMEOUT, err.code);
	std::string want =
	    "cannot connect to 127.0.0.1:" + std::to_string(l.port) +
	    ": timed out after 1 s";
	EXPECT_EQ(want, err.msg);
	EXPECT_GE(took, 0.9);
	EXPECT_LT(took, 2.0);
	close(first);
}

TEST(TcpConnect, BadArgumentsFail)
{
	struct mfs_err err;

	EXPECT_EQ(-1, mfs_tcp_connect("", 143, 2, &err));
	EXPECT_EQ(MFS_E_CONNECT, err.code);
	EXPECT_EQ(-1, mfs_tcp_connect("127.0.0.1", 0, 2, &err));
	EXPECT_EQ(-1, mfs_tcp_connect("127.0.0.1", 70000, 2, &err));
}

// ---- plain streams: timeouts and cancellation ----

TEST(PlainStream, RoundTripAndTimeoutField)
{
	int sv[2];
	struct mfs_err err;
	char buf[16] = {};

	ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
	mailstream *s = mfs_stream_plain(sv[0], 7, &err);
	ASSERT_NE(nullptr, s) << err.msg;
	EXPECT_EQ(7, (int)mailstream_low_get_timeout(mailstream_get_low(s)));
	EXPECT_EQ(sv[0], mailstream_low_get_fd(mailstream_get_low(s)));

	ASSERT_EQ(4, mailstream_write(s, "ping", 4));
	ASSERT_EQ(0, mailstream_flush(s));
	ASSERT_EQ(4, read(sv[1], buf, sizeof(buf)));
	EXPECT_EQ(std::string("ping"), std::string(buf, 4));
	ASSERT_EQ(5, write(sv[1], "pong\n", 5));
	MMAPString *line = mmap_string_new("");
	char *got = mailstream_read_line_remove_eol(s, line);
	ASSERT_NE(nullptr, got);
	EXPECT_STREQ("pong", got);
	mmap_string_free(line);

	char v[32], subj[64], iss[64];
	mfs_stream_tls_info(s, v, sizeof(v), subj, sizeof(subj), iss,
			    sizeof(iss));
	EXPECT_STREQ("", v);
	EXPECT_STREQ("", subj);
	EXPECT_STREQ("", iss);
	EXPECT_EQ(0, mfs_stream_timed_out(s));

	mailstream_close(s);
	// The stream owned sv[0]: the peer now sees end of file.
	EXPECT_EQ(0, read(sv[1], buf, sizeof(buf)));
	close(sv[1]);
}

// Every descriptor a stream opens (socket, cancel pipe) is close-on-exec.
TEST(PlainStream, NewDescriptorsAreCloexec)
{
	Listener l;
	struct mfs_err err;
	bool before[1024] = {};

	for (int fd = 0; fd < 1024; fd++)
		before[fd] = fcntl(fd, F_GETFD) != -1;
	int fd = mfs_tcp_connect("127.0.0.1", l.port, 2, &err);
	ASSERT_GE(fd, 0) << err.msg;
	mailstream *s = mfs_stream_plain(fd, 2, &err);
	ASSERT_NE(nullptr, s);
	int fresh = 0;
	for (int i = 0; i < 1024; i++) {
		int flags = fcntl(i, F_GETFD);
		if (flags == -1 || before[i])
			continue;
		fresh++;
		EXPECT_TRUE(flags & FD_CLOEXEC) << "fd " << i;
	}
	EXPECT_EQ(3, fresh); // the socket and the two ends of the pipe
	mailstream_close(s);
}

TEST(PlainStream, SilentServerTimesOut)
{
	Listener l;
	struct mfs_err err;
	char buf[64];

	int fd = mfs_tcp_connect("127.0.0.1", l.port, 1, &err);
	ASSERT_GE(fd, 0) << err.msg;
	mailstream *s = mfs_stream_plain(fd, 1, &err);
	ASSERT_NE(nullptr, s) << err.msg;

	double t0 = now_s();
	EXPECT_EQ(-1, mailstream_read(s, buf, sizeof(buf)));
	double took = now_s() - t0;
	EXPECT_GE(took, 0.9);
	EXPECT_LT(took, 2.0);
	EXPECT_EQ(1, mfs_stream_timed_out(s));

	// A timed-out stream is dead: the next call fails at once.
	t0 = now_s();
	EXPECT_EQ(-1, mailstream_read(s, buf, sizeof(buf)));
	EXPECT_LT(now_s() - t0, 0.5);
	mailstream_close(s);
}

// The peer's close is an error (-1), never a read of 0 bytes: libetpan's
// IMAP parser would spin on 0 in the middle of a literal.
TEST(PlainStream, PeerCloseIsAnErrorNotTimeout)
{
	int sv[2];
	struct mfs_err err;
	char buf[8];

	ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
	mailstream *s = mfs_stream_plain(sv[0], 5, &err);
	ASSERT_NE(nullptr, s);
	close(sv[1]);
	double t0 = now_s();
	EXPECT_EQ(-1, mailstream_read(s, buf, sizeof(buf)));
	EXPECT_EQ(-1, mailstream_read(s, buf, sizeof(buf)));
	EXPECT_LT(now_s() - t0, 1.0);
	EXPECT_EQ(0, mfs_stream_timed_out(s));
	mailstream_close(s);
}

// Reads from s in a thread, cancels from this one, and checks the read
// ended early and not as a timeout.
void expect_cancel_interrupts(mailstream *s)
{
	ssize_t got = 0;
	double took = 0;
	std::thread reader([&] {
		char buf[64];
		double t0 = now_s();
		got = mailstream_read(s, buf, sizeof(buf));
		took = now_s() - t0;
	});
	usleep(300 * 1000);
	mailstream_cancel(s);
	reader.join();
	EXPECT_EQ(-1, got);
	EXPECT_GE(took, 0.2);
	EXPECT_LT(took, 3.0);
	EXPECT_EQ(0, mfs_stream_timed_out(s));
}

TEST(PlainStream, CancelInterruptsBlockedRead)
{
	Listener l;
	struct mfs_err err;

	int fd = mfs_tcp_connect("127.0.0.1", l.port, 30, &err);
	ASSERT_GE(fd, 0) << err.msg;
	mailstream *s = mfs_stream_plain(fd, 30, &err);
	ASSERT_NE(nullptr, s);
	expect_cancel_interrupts(s);
	mailstream_close(s);
}

// ---- TLS against openssl s_server ----

TEST(TlsStream, GoodCertificateByName)
{
	REQUIRE_ENV();
	struct mfs_err err;
	std::string ca = path("ca.pem");

	mailstream *s =
	    tls_to(TlsEnv::port_good, "localhost", ca.c_str(), &err);
	ASSERT_NE(nullptr, s) << err.msg;
	EXPECT_EQ("olleh", round_trip(s, "hello\n"));
	EXPECT_EQ("dlrow", round_trip(s, "world\n"));

	char v[32], subj[128], iss[128];
	mfs_stream_tls_info(s, v, sizeof(v), subj, sizeof(subj), iss,
			    sizeof(iss));
	EXPECT_EQ(0, strncmp(v, "TLSv1.", 6)) << v;
	EXPECT_STREQ("/CN=good", subj);
	EXPECT_STREQ("/CN=ca", iss);
	EXPECT_EQ(5, (int)mailstream_low_get_timeout(mailstream_get_low(s)));
	mailstream_close(s);
}

TEST(TlsStream, GoodCertificateByIpAddress)
{
	REQUIRE_ENV();
	struct mfs_err err;
	std::string ca = path("ca.pem");

	mailstream *s =
	    tls_to(TlsEnv::port_good, "127.0.0.1", ca.c_str(), &err);
	ASSERT_NE(nullptr, s) << err.msg;
	EXPECT_EQ("cba", round_trip(s, "abc\n"));
	mailstream_close(s);
}

TEST(TlsStream, UnknownCaRefused)
{
	REQUIRE_ENV();
	struct mfs_err err;
	std::string ca = path("ca.pem");

	expect_refused(TlsEnv::port_other, "localhost", ca.c_str(), &err);
	EXPECT_EQ(MFS_E_TLS, err.code);
	EXPECT_STREQ(
	    "TLS to localhost: certificate is not trusted (unknown CA)",
	    err.msg);
}

TEST(TlsStream, SystemStoreAloneDoesNotTrustTestCa)
{
	REQUIRE_ENV();
	struct mfs_err err;

	expect_refused(TlsEnv::port_good, "localhost", nullptr, &err);
	EXPECT_EQ(MFS_E_TLS, err.code);
	EXPECT_NE(nullptr, strstr(err.msg, "unknown CA")) << err.msg;
}

TEST(TlsStream, WrongHostRefused)
{
	REQUIRE_ENV();
	struct mfs_err err;
	std::string ca = path("ca.pem");

	expect_refused(TlsEnv::port_wronghost, "localhost", ca.c_str(), &err);
	EXPECT_EQ(MFS_E_TLS, err.code);
	EXPECT_STREQ("TLS to localhost: certificate does not match host "
		     "localhost",
		     err.msg);
}

TEST(TlsStream, WrongIpAddressRefused)
{
	REQUIRE_ENV();
	struct mfs_err err;
	std::string ca = path("ca.pem");

	expect_refused(TlsEnv::port_wronghost, "127.0.0.1", ca.c_str(), &err);
	EXPECT_EQ(MFS_E_TLS, err.code);
	EXPECT_NE(nullptr, strstr(err.msg, "does not match host 127.0.0.1"))
	    << err.msg;
}

TEST(TlsStream, IpLiteralIsNotCheckedAsName)
{
	REQUIRE_ENV();
	struct mfs_err err;
	std::string ca = path("ca.pem");

	// The good certificate names 127.0.0.1, not 127.0.0.2: the address
	// the caller asked for is what must match, not where the socket went.
	expect_refused(TlsEnv::port_good, "127.0.0.2", ca.c_str(), &err);
	EXPECT_EQ(MFS_E_TLS, err.code);
	EXPECT_NE(nullptr, strstr(err.msg, "does not match")) << err.msg;
}

TEST(TlsStream, ExpiredRefused)
{
	REQUIRE_ENV();
	struct mfs_err err;
	std::string ca = path("ca.pem");

	expect_refused(TlsEnv::port_expired, "localhost", ca.c_str(), &err);
	EXPECT_EQ(MFS_E_TLS, err.code);
	EXPECT_STREQ("TLS to localhost: certificate has expired", err.msg);
}

TEST(TlsStream, UnreadableCaFileNamed)
{
	REQUIRE_ENV();
	struct mfs_err err;
	std::string ca = path("no-such-ca.pem");

	expect_refused(TlsEnv::port_good, "localhost", ca.c_str(), &err);
	EXPECT_EQ(MFS_E_TLS, err.code);
	std::string want = "TLS to localhost: cannot load CA file " + ca + ":";
	EXPECT_EQ(0, strncmp(err.msg, want.c_str(), want.size())) << err.msg;
}

TEST(TlsStream, EmptyHostRefusedAndFdClosed)
{
	int sv[2];
	struct mfs_err err;
	struct mfs_tls_opts opts = {"", nullptr, 2};
	char c;

	ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
	EXPECT_EQ(nullptr, mfs_stream_tls(sv[0], &opts, &err));
	EXPECT_EQ(MFS_E_TLS, err.code);
	// mfs_stream_tls owned sv[0] and closed it.
	EXPECT_EQ(0, read(sv[1], &c, 1));
	close(sv[1]);
}

TEST(TlsStream, SilentServerHandshakeTimesOut)
{
	Listener l;
	struct mfs_err err;

	double t0 = now_s();
	expect_refused(l.port, "localhost", nullptr, &err, 1);
	double took = now_s() - t0;
	EXPECT_EQ(MFS_E_TIMEOUT, err.code) << err.msg;
	EXPECT_GE(took, 0.9);
	EXPECT_LT(took, 2.0);
}

TEST(TlsStream, ReadTimesOutAndCancelInterrupts)
{
	REQUIRE_ENV();
	struct mfs_err err;
	std::string ca = path("ca.pem");
	char buf[16];

	mailstream *s =
	    tls_to(TlsEnv::port_good, "localhost", ca.c_str(), &err);
	ASSERT_NE(nullptr, s) << err.msg;
	mailstream_low_set_timeout(mailstream_get_low(s), 1);
	double t0 = now_s();
	EXPECT_EQ(-1, mailstream_read(s, buf, sizeof(buf)));
	double took = now_s() - t0;
	EXPECT_GE(took, 0.9);
	EXPECT_LT(took, 2.0);
	EXPECT_EQ(1, mfs_stream_timed_out(s));
	mailstream_close(s);

	s = tls_to(TlsEnv::port_good, "localhost", ca.c_str(), &err, 30);
	ASSERT_NE(nullptr, s) << err.msg;
	expect_cancel_interrupts(s);
	mailstream_close(s);
}

// ---- STARTTLS against a line-protocol server thread ----

// Speaks "* OK", answers "a STARTTLS" with reply, then runs the TLS server
// side with name.pem and echoes one line back with "echo: " in front.
class StartTlsServer
{
      public:
	StartTlsServer(const std::string &name, const std::string &reply)
	    : cert_(path((name + ".pem").c_str())),
	      key_(path((name + ".key").c_str())), reply_(reply)
	{
		thread_ = std::thread([this] { serve(); });
	}
	~StartTlsServer()
	{
		join();
	}
	// Waits until the server has answered and closed the connection.
	void join()
	{
		if (thread_.joinable())
			thread_.join();
	}
	int port() const
	{
		return listener_.port;
	}

      private:
	Listener listener_;
	std::string cert_, key_, reply_;
	std::thread thread_;

	static std::string read_line(int fd)
	{
		std::string line;
		char c;
		while (read(fd, &c, 1) == 1 && c != '\n')
			line += c;
		return line;
	}

	void serve()
	{
		struct pollfd pfd = {listener_.fd, POLLIN, 0};
		if (poll(&pfd, 1, 10000) != 1)
			return;
		int fd = accept(listener_.fd, nullptr, nullptr);
		if (fd < 0)
			return;
		struct timeval tv = {10, 0};
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		if (write(fd, "* OK\r\n", 6) == 6 &&
		    read_line(fd) == "a STARTTLS\r" &&
		    write(fd, reply_.data(), reply_.size()) ==
			(ssize_t)reply_.size())
			serve_tls(fd);
		close(fd);
	}

	void serve_tls(int fd)
	{
		SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
		SSL *ssl = nullptr;
		if (SSL_CTX_use_certificate_chain_file(ctx, cert_.c_str()) !=
			1 ||
		    SSL_CTX_use_PrivateKey_file(ctx, key_.c_str(),
						SSL_FILETYPE_PEM) != 1)
			goto free_ctx;
		ssl = SSL_new(ctx);
		SSL_set_fd(ssl, fd);
		if (SSL_accept(ssl) == 1) {
			char buf[256];
			int n = SSL_read(ssl, buf, sizeof(buf));
			if (n > 0) {
				std::string out =
				    "echo: " + std::string(buf, n);
				SSL_write(ssl, out.data(), (int)out.size());
			}
			SSL_shutdown(ssl);
		}
		SSL_free(ssl);
	free_ctx:
		SSL_CTX_free(ctx);
	}
};

// Connects to srv in plain text and sends STARTTLS; returns the stream
// after reading the reply line into *reply.
mailstream *plain_until_starttls(const StartTlsServer &srv, std::string *reply)
{
	struct mfs_err err;
	int fd = mfs_tcp_connect("127.0.0.1", srv.port(), 5, &err);
	if (fd < 0)
		return nullptr;
	mailstream *s = mfs_stream_plain(fd, 5, &err);
	if (s == nullptr)
		return nullptr;
	MMAPString *line = mmap_string_new("");
	char *got = mailstream_read_line_remove_eol(s, line);
	if (got == nullptr || std::string(got) != "* OK") {
		mmap_string_free(line);
		mailstream_close(s);
		return nullptr;
	}
	mmap_string_free(line);
	*reply = round_trip(s, "a STARTTLS\r\n");
	return s;
}

TEST(StartTls, UpgradesTheStream)
{
	REQUIRE_ENV();
	StartTlsServer srv("good", "a OK\r\n");
	std::string ca = path("ca.pem");
	struct mfs_tls_opts opts = {"localhost", ca.c_str(), 5};
	struct mfs_err err;
	std::string reply;
	char v[32], subj[64], iss[64];

	mailstream *s = plain_until_starttls(srv, &reply);
	ASSERT_NE(nullptr, s);
	EXPECT_EQ("a OK", reply);
	int fd = mailstream_low_get_fd(mailstream_get_low(s));
	ASSERT_EQ(MFS_OK, mfs_stream_starttls(s, &opts, &err)) << err.msg;
	EXPECT_EQ(fd, mailstream_low_get_fd(mailstream_get_low(s)));
	EXPECT_EQ(5, (int)mailstream_low_get_timeout(mailstream_get_low(s)));
	mfs_stream_tls_info(s, v, sizeof(v), subj, sizeof(subj), iss,
			    sizeof(iss));
	EXPECT_EQ(0, strncmp(v, "TLSv1.", 6)) << v;
	EXPECT_STREQ("/CN=good", subj);
	EXPECT_EQ("echo: ping", round_trip(s, "ping\n"));
	mailstream_close(s);
}

TEST(StartTls, WriteToClosedPeerRaisesNoSigpipe)
{
	REQUIRE_ENV();
	StartTlsServer srv("good", "a OK\r\n");
	std::string ca = path("ca.pem");
	struct mfs_tls_opts opts = {"localhost", ca.c_str(), 5};
	struct mfs_err err;
	std::string reply;
	int failed = 0;

	mailstream *s = plain_until_starttls(srv, &reply);
	ASSERT_NE(nullptr, s);
	ASSERT_EQ(MFS_OK, mfs_stream_starttls(s, &opts, &err)) << err.msg;
	EXPECT_EQ("echo: x", round_trip(s, "x\n"));
	srv.join();
	// With the default action a SIGPIPE would end this binary here.
	signal(SIGPIPE, SIG_DFL);
	for (int i = 0; i < 50 && !failed; i++) {
		failed = mailstream_write(s, "more\n", 5) < 0 ||
			 mailstream_flush(s) != 0;
		usleep(10 * 1000);
	}
	signal(SIGPIPE, SIG_IGN);
	EXPECT_TRUE(failed);
	EXPECT_EQ(0, mfs_stream_timed_out(s));
	mailstream_close(s);
}

TEST(StartTls, DataBeforeHandshakeRefused)
{
	REQUIRE_ENV();
	// The second line arrives with the first and would be taken as if
	// it came over TLS.
	StartTlsServer srv("good", "a OK\r\n* 1 EXISTS\r\n");
	std::string ca = path("ca.pem");
	struct mfs_tls_opts opts = {"localhost", ca.c_str(), 5};
	struct mfs_err err;
	std::string reply;

	mailstream *s = plain_until_starttls(srv, &reply);
	ASSERT_NE(nullptr, s);
	EXPECT_EQ("a OK", reply);
	EXPECT_EQ(MFS_E_TLS, mfs_stream_starttls(s, &opts, &err));
	EXPECT_STREQ("TLS to localhost: server sent data before the TLS "
		     "handshake",
		     err.msg);
	mailstream_close(s);
}

TEST(StartTls, WrongHostRefused)
{
	REQUIRE_ENV();
	StartTlsServer srv("wronghost", "a OK\r\n");
	std::string ca = path("ca.pem");
	struct mfs_tls_opts opts = {"localhost", ca.c_str(), 5};
	struct mfs_err err;
	std::string reply;

	mailstream *s = plain_until_starttls(srv, &reply);
	ASSERT_NE(nullptr, s);
	EXPECT_EQ(MFS_E_TLS, mfs_stream_starttls(s, &opts, &err));
	EXPECT_NE(nullptr, strstr(err.msg, "does not match host localhost"))
	    << err.msg;
	// The failed stream can still be closed without leaking.
	mailstream_close(s);
}

} // namespace

// ---- IMAP literals (mfs_stream_imap_literals) ----------------------------

// Feeds `input` (then end of file) to an IMAP stream from a writer thread,
// reading all it gives. Returns how many bytes came through; *refusal is
// the stream's refusal ("" when none).
size_t imap_feed(const std::string &input, int body_ok, std::string *refusal)
{
	int sv[2];
	struct mfs_err err;
	size_t got = 0;
	char buf[4096];
	ssize_t n;

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
		abort();
	mailstream *s = mfs_stream_plain(sv[0], 5, &err);
	if (s == nullptr)
		abort();
	mfs_stream_imap_literals(s);
	mfs_stream_body_literals(s, body_ok);
	std::thread writer([&] {
		size_t off = 0;
		while (off < input.size()) {
			ssize_t w = send(sv[1], input.data() + off,
					 input.size() - off, MSG_NOSIGNAL);
			if (w <= 0)
				break;
			off += (size_t)w;
		}
		shutdown(sv[1], SHUT_WR);
	});
	while ((n = mailstream_read(s, buf, sizeof(buf))) > 0)
		got += (size_t)n;
	const char *why = mfs_stream_refusal(s);
	*refusal = why != nullptr ? why : "";
	mailstream_close(s); // the writer sees the peer gone
	writer.join();
	close(sv[1]);
	return got;
}

std::string short_lines(size_t bytes)
{
	std::string s;
	while (s.size() < bytes)
		s += "aaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
	return s;
}

// The hostile reply of issue 15: an ENVELOPE literal of 4 GB followed by
// short lines is refused at its announcement, before its bytes are read.
TEST(ImapLiterals, HugeEnvelopeLiteralRefused)
{
	std::string why;
	std::string head = "* OK hi\r\n* 1 FETCH (UID 1 ENVELOPE "
			   "(\"date\" {4000000000}\r\n";
	size_t got = imap_feed(head + short_lines(4 << 20), 0, &why);
	EXPECT_EQ("announced a literal of 4000000000 bytes", why);
	EXPECT_LT(got, (size_t)(1 << 20));
	// The same while bodies are streamed: an ENVELOPE is not a body.
	got = imap_feed(head + short_lines(1 << 20), 1, &why);
	EXPECT_EQ("announced a literal of 4000000000 bytes", why);
}

// Literals up to the bound pass, also with a "{N}" inside them; so do
// braces in quoted strings and in status texts.
TEST(ImapLiterals, OrdinaryRepliesPass)
{
	std::string why;
	std::string lit = "x {99999999999}\r\n{5}\r\n\"";
	std::string in =
	    "* OK [CAPABILITY IMAP4rev1] ready {99999999999}\r\n"
	    "* LIST () \"/\" {4}\r\nAbcd\r\n"
	    "* 1 FETCH (UID 1 ENVELOPE (\"d\" \"{4000000000}\" NIL {" +
	    std::to_string(lit.size()) + "}\r\n" + lit +
	    " NIL NIL NIL NIL NIL NIL NIL) BODY[HEADER] {1048576}\r\n" +
	    std::string(1048576, 'h') + ")\r\n+ go ahead {12345678901}\r\n"
	    "a1 NO [ALERT] no {4000000000}\r\nA2 OK done\r\n";
	EXPECT_EQ(in.size(), imap_feed(in, 0, &why));
	EXPECT_EQ("", why);
}

// A body literal above the bound passes only while bodies are streamed,
// and only as a FETCH item BODY[...], RFC822 or RFC822.TEXT.
TEST(ImapLiterals, BodyLiteralOnlyWhenStreamed)
{
	std::string why;
	std::string body(3 << 20, 'b');
	const char *keys[] = {"BODY[]", "BODY[1.2]", "body[]<0>", "RFC822",
			      "RFC822.TEXT"};

	for (const char *k : keys) {
		std::string in = "* 1 FETCH (UID 1 " + std::string(k) + " {" +
				 std::to_string(body.size()) + "}\r\n" + body +
				 ")\r\n1 OK done\r\n";
		EXPECT_EQ(in.size(), imap_feed(in, 1, &why)) << k;
		EXPECT_EQ("", why) << k;
		imap_feed(in, 0, &why);
		EXPECT_EQ("announced a literal of 3145728 bytes", why) << k;
	}
	const char *not_bodies[] = {
	    "* 1 FETCH (UID 1 X-GM-LABELS (BODY[] {3145728}\r\n",
	    "* 1 FETCH (UID 1 RFC822.HEADER {3145728}\r\n",
	    "* 1 LIST () \"/\" BODY[] {3145728}\r\n",
	    "* 1 FETCH (UID 1 XBODY[] {3145728}\r\n",
	    "* OK BODY[] {3145728}\r\n* 1 FETCH (ENVELOPE (\"d\" {3145728}\r\n",
	};
	for (const char *in : not_bodies) {
		imap_feed(std::string(in) + body, 1, &why);
		EXPECT_NE("", why) << in;
	}
}

// Where libetpan could read a literal this reader would not: refused.
TEST(ImapLiterals, AmbiguousAnnouncementsRefused)
{
	std::string why;

	imap_feed("* 1 FETCH (ENVELOPE (\"d\" {5} hello NIL))\r\n", 0, &why);
	EXPECT_NE("", why);
	imap_feed("* NO [BADCHARSET ({5}\r\nUTF-8)] no\r\n", 0, &why);
	EXPECT_EQ("sent a literal in a response code", why);
}

// One response may hold at most 16 MiB outside streamed bodies, in
// literals of the bound or in text.
TEST(ImapLiterals, ResponseBounded)
{
	std::string why, in = "* 1 FETCH (ENVELOPE (";
	std::string lit = "{1048576}\r\n" + std::string(1048576, 'e') + " ";

	for (int i = 0; i < 17; i++)
		in += lit;
	size_t got = imap_feed(in, 1, &why);
	EXPECT_EQ("sent a response of more than 16777216 bytes", why);
	EXPECT_LT(got, (size_t)17 << 20);
}

// Streams of other protocols (POP3, SMTP) read "{N}" as text.
TEST(ImapLiterals, OffForOtherProtocols)
{
	int sv[2];
	struct mfs_err err;
	char buf[64];
	const char in[] = "+OK {4000000000}\r\nmore\r\n";

	ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
	mailstream *s = mfs_stream_plain(sv[0], 5, &err);
	ASSERT_NE(nullptr, s);
	ASSERT_EQ((ssize_t)strlen(in), write(sv[1], in, strlen(in)));
	EXPECT_EQ((ssize_t)strlen(in), mailstream_read(s, buf, sizeof(buf)));
	EXPECT_EQ(nullptr, mfs_stream_refusal(s));
	mailstream_close(s);
	close(sv[1]);
}
