// imap_test.cc - the IMAP driver's writes against a real Dovecot.
//
// Each fixture starts its own servers with tests/servers/mailservers.sh
// (run from the top of the repository, as root) and checks every result
// with an independent client: Python's imaplib, run as /usr/bin/python3.
// Without the servers the tests are skipped, not passed. ImapScripted
// talks to a small stateful scripted server instead, for what Dovecot
// never does: a search refused with BADCHARSET, APPEND refused into the
// mailbox the connection has EXAMINEd (Courier), UIDs renumbered under the
// client (Mailutils), a NIL hierarchy delimiter, refusals with every
// response code, a server with IMAP4rev1 alone.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/mman.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

extern "C" {
#include "imap.h"
#include "query.h"
#include "store.h"
}

namespace
{

const char *const SERVERS = "tests/servers/mailservers.sh";

// The independent client: `check.py ENV CMD ARGS...` prints one answer.
const char *const CHECK_PY = R"PY(
import hashlib, imaplib, re, ssl, sys
env = dict(l.strip().split("=", 1) for l in open(sys.argv[1]) if "=" in l)
ctx = ssl.create_default_context(cafile=env["MFS_CA"])
c = imaplib.IMAP4_SSL("localhost", int(env["MFS_IMAPS_PORT"]), ssl_context=ctx)
c.login(env["MFS_USER"], env["MFS_PASS"])
cmd, args = sys.argv[2], sys.argv[3:]
def q(box):
    return '"' + box.replace("\\", "\\\\").replace('"', '\\"') + '"'
if cmd == "list":
    for line in c.list()[1]:
        print(re.match(rb'\(.*?\) (?:NIL|"."|) ?(.*)$', line).group(1)
              .decode().strip('"'))
elif cmd == "uids":
    c.select(q(args[0]), readonly=True)
    print(" ".join(x.decode() for x in c.uid("SEARCH", "ALL")[1][0].split()))
elif cmd == "flags":
    c.select(q(args[0]), readonly=True)
    d = c.uid("FETCH", args[1], "(FLAGS)")[1]
    fl = re.search(rb"FLAGS \((.*?)\)", d[0]).group(1).decode() if d[0] else "GONE"
    print(" ".join(sorted(f for f in fl.split() if f != "\\Recent")))
elif cmd == "sha":
    c.select(q(args[0]), readonly=True)
    d = c.uid("FETCH", args[1], "(BODY.PEEK[] INTERNALDATE)")[1]
    print(hashlib.sha256(d[0][1]).hexdigest(),
          re.search(rb'INTERNALDATE "(.*?)"', d[0][0]).group(1).decode())
elif cmd == "append":
    typ, d = c.append(q(args[0]), args[1] or None, None, args[2].encode())
    print(re.search(rb"APPENDUID \d+ (\d+)", d[0]).group(1).decode())
elif cmd == "mark":
    c.select(q(args[0]))
    c.uid("STORE", args[1], "+FLAGS", "(" + args[2] + ")")
    print("ok")
elif cmd == "caps":
    print(" ".join(c.capabilities))
c.logout()
)PY";

std::string run(const std::string &cmd)
{
	std::string out;
	FILE *p = popen(cmd.c_str(), "r");
	char buf[4096];
	size_t n;

	if (p == NULL)
		return "";
	while ((n = fread(buf, 1, sizeof(buf), p)) > 0)
		out.append(buf, n);
	pclose(p);
	while (!out.empty() && out.back() == '\n')
		out.pop_back();
	return out;
}

class Servers
{
      public:
	std::string dir, envfile, checker, why_not;
	std::map<std::string, std::string> vars;

	explicit Servers(const std::string &extra_conf)
	{
		char tmpl[] = "/tmp/mfs-imap-test-XXXXXX";

		if (geteuid() != 0 || access(SERVERS, X_OK) != 0 ||
		    access("/usr/sbin/dovecot", X_OK) != 0) {
			why_not = "needs root, dovecot and " +
				  std::string(SERVERS) +
				  " (run from the top of the repository)";
			return;
		}
		if (mkdtemp(tmpl) == NULL) {
			why_not = "mkdtemp failed";
			return;
		}
		dir = tmpl;
		chmod(dir.c_str(), 0755);
		std::string cmd = "DOVECOT_EXTRA_CONF='" + extra_conf + "' " +
				  SERVERS + " start " + dir + "/srv >" + dir +
				  "/start.log 2>&1";
		if (system(cmd.c_str()) != 0) {
			why_not = "servers did not start; see " + dir +
				  "/start.log";
			return;
		}
		envfile = dir + "/srv/env";
		std::ifstream in(envfile);
		std::string line;
		while (std::getline(in, line)) {
			size_t eq = line.find('=');
			if (eq != std::string::npos)
				vars[line.substr(0, eq)] = line.substr(eq + 1);
		}
		checker = dir + "/check.py";
		std::ofstream(checker) << CHECK_PY;
	}

	~Servers()
	{
		if (!envfile.empty())
			run(std::string(SERVERS) + " stop " + dir +
			    "/srv >/dev/null 2>&1");
		if (!dir.empty() && getenv("MAILFS_KEEP") == NULL)
			run("rm -rf '" + dir + "'");
	}

	// The independent client's answer to `cmd` (quoted by the caller).
	std::string check(const std::string &args) const
	{
		return run("/usr/bin/python3 " + checker + " " + envfile +
			   " " + args);
	}
};

std::string sq(const std::string &s)
{
	std::string out = "'";
	for (char c : s)
		out += c == '\'' ? std::string("'\\''") : std::string(1, c);
	return out + "'";
}

std::string message(int i, const std::string &eol = "\r\n")
{
	return "From: Sender " + std::to_string(i) + " <s@example.test>" +
	       eol + "To: alice@example.test" + eol + "Subject: Test " +
	       std::to_string(i) + eol +
	       "Date: Mon, 16 Nov 2026 09:30:00 +0000" + eol + eol + "Body " +
	       std::to_string(i) + "." + eol;
}

// A message for the search tests.
std::string mail(const std::string &from, const std::string &subject,
		 const std::string &date, const std::string &body)
{
	return "From: " + from + "\r\nTo: alice@example.test\r\nSubject: " +
	       subject + "\r\nDate: " + date +
	       "\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; "
	       "charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" +
	       body + "\r\n";
}

std::string sha256_of(const std::string &path)
{
	std::string out = run("sha256sum " + sq(path));
	return out.substr(0, out.find(' '));
}

class ImapWrite : public ::testing::Test
{
      protected:
	static Servers *srv;
	static std::string extra_conf;
	struct mfs_account acct = {};
	struct mfs_store *st = NULL;
	struct mfs_err err = {};
	std::string tmpdir;

	static void start(const std::string &conf)
	{
		srv = new Servers(conf);
	}
	static void stop()
	{
		delete srv;
		srv = NULL;
	}

	void SetUp() override
	{
		if (!srv->why_not.empty())
			GTEST_SKIP() << srv->why_not;
		acct.name = (char *)"test";
		acct.store.proto = MFS_PROTO_IMAP;
		acct.store.tls = MFS_TLS_IMPLICIT;
		acct.store.host = (char *)"localhost";
		acct.store.port = std::stoi(srv->vars["MFS_IMAPS_PORT"]);
		acct.ca_file = (char *)srv->vars["MFS_CA"].c_str();
		acct.user = (char *)srv->vars["MFS_USER"].c_str();
		acct.timeout = 10;
		st = mfs_imap_store_new(&acct, srv->vars["MFS_PASS"].c_str());
		ASSERT_NE(st, nullptr);
		ASSERT_EQ(st->ops->connect(st, &err), MFS_OK) << err.msg;
		tmpdir = srv->dir;
	}

	void TearDown() override
	{
		if (st != NULL)
			st->ops->free(st);
	}

	std::string write_file(const std::string &name, const std::string &s)
	{
		std::string path = tmpdir + "/" + name;
		std::ofstream(path, std::ios::binary) << s;
		return path;
	}

	// APPEND through the driver; returns the uid (0 without UIDPLUS).
	uint32_t append(const char *folder, const std::string &text,
			unsigned flags = 0, uint32_t *validity = NULL)
	{
		std::string path = write_file("msg.eml", text);
		int fd = open(path.c_str(), O_RDONLY);
		uint32_t v = 0, uid = 0;

		EXPECT_GE(fd, 0);
		EXPECT_EQ(st->ops->append(st, folder, fd, text.size(),
					  1794821400, flags, &v, &uid, &err),
			  MFS_OK)
			<< err.msg;
		close(fd);
		if (validity != NULL)
			*validity = v;
		return uid;
	}

	uint32_t validity_of(const char *folder)
	{
		struct mfs_store_msg *msgs = NULL;
		size_t n = 0;
		uint32_t v = 0;

		EXPECT_EQ(st->ops->index(st, folder, &v, &msgs, &n, &err),
			  MFS_OK)
			<< err.msg;
		mfs_store_msgs_free(msgs, n);
		return v;
	}

	void create(const char *folder)
	{
		ASSERT_EQ(st->ops->create(st, folder, &err), MFS_OK) << err.msg;
	}

	std::vector<std::string> folders()
	{
		std::vector<std::string> out;
		std::istringstream in(srv->check("list"));
		std::string line;
		while (std::getline(in, line))
			out.push_back(line);
		return out;
	}

	// The UIDs of folder that match query, as "1 2 3"; "E<code>" when
	// the whole search failed, "F<code>" when the folder did.
	std::string search(const char *folder, const char *query)
	{
		std::vector<const char *> f = {folder};
		return search_all(f, query)[0];
	}

	std::vector<std::string> search_all(std::vector<const char *> folders,
					    const char *query)
	{
		struct mfs_query *q = NULL;
		std::vector<struct mfs_store_hits> hits(folders.size());
		std::vector<std::string> out;

		EXPECT_EQ(mfs_query_parse(query, &q, &err), MFS_OK) << query;
		memset(hits.data(), 0, hits.size() * sizeof(hits[0]));
		int rc = st->ops->search(st, folders.data(), folders.size(), q,
					 hits.data(), &err);
		mfs_query_free(q);
		for (size_t i = 0; i < folders.size(); i++) {
			std::string r;
			if (rc != MFS_OK)
				r = "E" + std::to_string(rc);
			else if (hits[i].err.code != MFS_OK)
				r = "F" + std::to_string(hits[i].err.code);
			for (size_t j = 0; rc == MFS_OK && j < hits[i].n; j++)
				r += (j ? " " : "") +
				     std::to_string(hits[i].uids[j]);
			out.push_back(r);
		}
		mfs_store_hits_free(hits.data(), hits.size());
		return out;
	}

	// Searches of one folder and of several (see the tests below).
	void check_search()
	{
		create("SrA");
		create("SrB");
		uint32_t u1 = append("SrA",
				     mail("Bob <bob@example.test>", "hello",
					  "Mon, 16 Nov 2026 09:30:00 +0000",
					  "apples and pears"));
		uint32_t u2 = append("SrA",
				     mail("=?utf-8?q?J=C3=BCrgen?= <j@example.test>",
					  "=?utf-8?q?=C3=9Cber_alles?=",
					  "Tue, 17 Nov 2026 23:30:00 -0500",
					  "grüße"),
				     MFS_FLAG_SEEN);
		append("SrB", mail("Carol <c@example.test>", "apples",
				   "Mon, 16 Nov 2026 09:30:00 +0000", "x"));
		std::string s1 = std::to_string(u1), s2 = std::to_string(u2);
		if (u1 == 0) {
			s1 = "1";
			s2 = "2";
		}
		EXPECT_EQ(search("SrA", "from:bob"), s1);
		EXPECT_EQ(search("SrA", "body:pears"), s1);
		EXPECT_EQ(search("SrA", "is:seen"), s2);
		EXPECT_EQ(search("SrA", "-is:seen"), s1);
		EXPECT_EQ(search("SrA", "from:bob or is:seen"), s1 + " " + s2);
		EXPECT_EQ(search("SrA", "from:Jürgen"), s2);
		EXPECT_EQ(search("SrA", "subject:über from:jürgen"), s2);
		EXPECT_EQ(search("SrA", "grüße"), s2);
		EXPECT_EQ(search("SrA", "since:2026-11-17"), s2);
		EXPECT_EQ(search("SrA", "before:2026-11-17"), s1);
		EXPECT_EQ(search("SrA", "nothing-like-this"), "");
		std::vector<std::string> all =
		    search_all({"SrA", "NoSuchFolder", "SrB"}, "apples");
		ASSERT_EQ(all.size(), 3u);
		EXPECT_EQ(all[0], s1);
		EXPECT_EQ(all[1], "F" + std::to_string(MFS_E_NOENT));
		EXPECT_EQ(all[2], "1");
		all = search_all({"SrB", "SrA"}, "from:jürgen or from:carol");
		EXPECT_EQ(all[0], "1");
		EXPECT_EQ(all[1], s2);
		// the connection is still in order
		EXPECT_EQ(validity_of("SrA") != 0, true);
		EXPECT_EQ(search("SrA", "from:bob"), s1);

		// the listing entries of the matches, where wanted
		struct mfs_query *q = NULL;
		struct mfs_store_hits hits[3];
		const char *boxes[] = {"SrA", "SrB", "NoSuchFolder"};

		ASSERT_EQ(mfs_query_parse("apples or grüße", &q, &err), MFS_OK);
		memset(hits, 0, sizeof(hits));
		hits[0].want_msgs = 1;
		hits[2].want_msgs = 1;
		ASSERT_EQ(st->ops->search(st, boxes, 3, q, hits, &err), MFS_OK)
			<< err.msg;
		mfs_query_free(q);
		ASSERT_EQ(hits[0].n, 2u);
		ASSERT_EQ(hits[0].nmsgs, 2u);
		EXPECT_EQ(hits[0].msgs[0].uid, hits[0].uids[0]);
		EXPECT_EQ(hits[0].msgs[1].uid, hits[0].uids[1]);
		EXPECT_STREQ(hits[0].msgs[0].subject, "hello");
		EXPECT_STREQ(hits[0].msgs[1].subject, "Über alles");
		EXPECT_EQ(hits[0].msgs[1].flags, (unsigned)MFS_FLAG_SEEN);
		EXPECT_EQ(hits[1].n, 1u);
		EXPECT_EQ(hits[1].msgs, nullptr); // not wanted
		EXPECT_EQ(hits[2].err.code, MFS_E_NOENT);
		EXPECT_EQ(hits[2].msgs, nullptr);
		mfs_store_hits_free(hits, 3);
		EXPECT_EQ(search("SrB", "apples"), "1");
	}

	bool has_folder(const std::string &name)
	{
		for (const auto &f : folders())
			if (f == name)
				return true;
		return false;
	}
};

Servers *ImapWrite::srv = NULL;

// Dovecot's defaults: MOVE and UIDPLUS.
class ImapDefault : public ImapWrite
{
      protected:
	static void SetUpTestSuite() { start(""); }
	static void TearDownTestSuite() { stop(); }
};

TEST_F(ImapDefault, CreateNestedAndNonAscii)
{
	create("Work");
	create("Work/2026");
	create("Caf&AOk-"); // "Café"
	EXPECT_TRUE(has_folder("Work"));
	EXPECT_TRUE(has_folder("Work/2026"));
	EXPECT_TRUE(has_folder("Caf&AOk-"));
	EXPECT_EQ(srv->check("uids 'Caf&AOk-'"), "");
}

TEST_F(ImapDefault, CreateExistingIsExist)
{
	create("Twice");
	EXPECT_EQ(st->ops->create(st, "Twice", &err), MFS_E_EXIST) << err.msg;
	EXPECT_EQ(st->ops->create(st, "INBOX", &err), MFS_E_EXIST) << err.msg;
	EXPECT_EQ(st->ops->create(st, "Bad\xc3\xa9", &err), MFS_E_INVAL);
}

TEST_F(ImapDefault, RemoveRefusesWhatHoldsSomething)
{
	create("Full");
	append("Full", message(1));
	EXPECT_EQ(st->ops->remove(st, "Full", &err), MFS_E_NOTEMPTY)
		<< err.msg;
	EXPECT_TRUE(has_folder("Full"));
	EXPECT_EQ(srv->check("uids Full").empty(), false);

	create("Parent");
	create("Parent/Child");
	EXPECT_EQ(st->ops->remove(st, "Parent", &err), MFS_E_NOTEMPTY)
		<< err.msg;
	EXPECT_TRUE(has_folder("Parent/Child"));

	EXPECT_EQ(st->ops->remove(st, "Missing", &err), MFS_E_NOENT)
		<< err.msg;
	EXPECT_EQ(st->ops->remove(st, "INBOX", &err), MFS_E_ACCESS);
	EXPECT_EQ(st->ops->remove(st, "inbox", &err), MFS_E_ACCESS);
}

TEST_F(ImapDefault, RemoveEmptyAndSelected)
{
	create("Empty");
	validity_of("Empty"); // leaves Empty selected
	ASSERT_EQ(st->ops->remove(st, "Empty", &err), MFS_OK) << err.msg;
	EXPECT_FALSE(has_folder("Empty"));
	// The connection survived and nothing stale is left selected.
	EXPECT_EQ(st->ops->create(st, "Empty", &err), MFS_OK) << err.msg;
	EXPECT_EQ(validity_of("Empty") != 0, true);
}

TEST_F(ImapDefault, Rename)
{
	create("Old");
	uint32_t uid = append("Old", message(2));
	validity_of("Old");
	ASSERT_EQ(st->ops->rename(st, "Old", "Moved/Deeper", &err), MFS_OK)
		<< err.msg;
	EXPECT_FALSE(has_folder("Old"));
	EXPECT_TRUE(has_folder("Moved/Deeper"));
	EXPECT_EQ(srv->check("uids Moved/Deeper"), std::to_string(uid));

	create("Taken");
	EXPECT_EQ(st->ops->rename(st, "Moved/Deeper", "Taken", &err),
		  MFS_E_EXIST)
		<< err.msg;
	EXPECT_EQ(st->ops->rename(st, "Nowhere", "Else", &err), MFS_E_NOENT)
		<< err.msg;
	EXPECT_EQ(st->ops->rename(st, "INBOX", "Else", &err), MFS_E_ACCESS);
	EXPECT_FALSE(has_folder("Else"));
}

TEST_F(ImapDefault, AppendThreeWithUids)
{
	create("Three");
	uint32_t v = 0, uids[3];
	for (int i = 0; i < 3; i++) {
		uint32_t vi;
		uids[i] = append("Three", message(10 + i),
				 i == 1 ? MFS_FLAG_SEEN | MFS_FLAG_FLAGGED : 0,
				 &vi);
		EXPECT_NE(uids[i], 0u);
		if (i > 0) {
			EXPECT_GT(uids[i], uids[i - 1]);
			EXPECT_EQ(vi, v);
		}
		v = vi;
	}
	EXPECT_EQ(validity_of("Three"), v);
	EXPECT_EQ(srv->check("uids Three"),
		  std::to_string(uids[0]) + " " + std::to_string(uids[1]) +
			  " " + std::to_string(uids[2]));
	std::string path = write_file("m11.eml", message(11));
	EXPECT_EQ(srv->check("sha Three " + std::to_string(uids[1])),
		  sha256_of(path) + " 16-Nov-2026 09:30:00 +0000");
	EXPECT_EQ(srv->check("flags Three " + std::to_string(uids[1])),
		  "\\Flagged \\Seen");
	EXPECT_EQ(srv->check("flags Three " + std::to_string(uids[0])), "");
}

TEST_F(ImapDefault, AppendTurnsBareLfIntoCrlf)
{
	create("Lf");
	uint32_t uid = append("Lf", message(20, "\n"));
	std::string path = write_file("crlf.eml", message(20));
	EXPECT_EQ(srv->check("sha Lf " + std::to_string(uid)).substr(0, 64),
		  sha256_of(path));
}

TEST_F(ImapDefault, AppendToMissingFolderIsNoent)
{
	std::string path = write_file("x.eml", message(21));
	int fd = open(path.c_str(), O_RDONLY);
	uint32_t v, uid;
	EXPECT_EQ(st->ops->append(st, "NoSuchFolder", fd, message(21).size(),
				  0, 0, &v, &uid, &err),
		  MFS_E_NOENT)
		<< err.msg;
	close(fd);
	create("AfterNoent"); // the connection is still usable
}

TEST_F(ImapDefault, AppendLargeIsStreamed)
{
	create("Big");
	std::string path = tmpdir + "/big.eml";
	{
		std::ofstream out(path, std::ios::binary);
		out << message(30);
		std::string line(998, 'x');
		line += "\r\n";
		for (int i = 0; i < 25 * 1024; i++)
			out << line; // 25 MB
	}
	struct stat sb;
	ASSERT_EQ(stat(path.c_str(), &sb), 0);
	struct rusage before, after;
	getrusage(RUSAGE_SELF, &before);
	int fd = open(path.c_str(), O_RDONLY);
	uint32_t v = 0, uid = 0;
	ASSERT_EQ(st->ops->append(st, "Big", fd, (uint64_t)sb.st_size, 0, 0,
				  &v, &uid, &err),
		  MFS_OK)
		<< err.msg;
	close(fd);
	getrusage(RUSAGE_SELF, &after);
	// Streamed: the peak resident size did not grow by the message.
	EXPECT_LT(after.ru_maxrss - before.ru_maxrss, 8 * 1024);
	ASSERT_NE(uid, 0u);
	EXPECT_EQ(srv->check("sha Big " + std::to_string(uid)).substr(0, 64),
		  sha256_of(path));
}

TEST_F(ImapDefault, MoveWithMove)
{
	create("MvSrc");
	create("MvDst");
	uint32_t uid = append("MvSrc", message(40));
	uint32_t keep = append("MvSrc", message(41));
	uint32_t v = validity_of("MvSrc");
	ASSERT_EQ(st->ops->move(st, "MvSrc", v, uid, "MvDst", &err), MFS_OK)
		<< err.msg;
	EXPECT_EQ(srv->check("uids MvSrc"), std::to_string(keep));
	EXPECT_EQ(srv->check("uids MvDst").empty(), false);

	EXPECT_EQ(st->ops->move(st, "MvSrc", v, uid, "MvDst", &err),
		  MFS_E_NOENT)
		<< err.msg;
	EXPECT_EQ(st->ops->move(st, "MvSrc", v + 1, keep, "MvDst", &err),
		  MFS_E_NOENT)
		<< err.msg;
	EXPECT_EQ(st->ops->move(st, "MvSrc", v, keep, "NoSuchBox", &err),
		  MFS_E_NOENT)
		<< err.msg;
	EXPECT_EQ(srv->check("uids MvSrc"), std::to_string(keep));
}

TEST_F(ImapDefault, ExpungeOnlyThatUid)
{
	create("Ex");
	uint32_t mine = append("Ex", message(50));
	uint32_t theirs = append("Ex", message(51));
	uint32_t v = validity_of("Ex");
	ASSERT_EQ(srv->check("mark Ex " + std::to_string(theirs) +
			     " '\\Deleted'"),
		  "ok");
	ASSERT_EQ(st->ops->expunge(st, "Ex", v, mine, &err), MFS_OK)
		<< err.msg;
	EXPECT_EQ(srv->check("uids Ex"), std::to_string(theirs));
	EXPECT_EQ(srv->check("flags Ex " + std::to_string(theirs)),
		  "\\Deleted");
	EXPECT_EQ(st->ops->expunge(st, "Ex", v, mine, &err), MFS_E_NOENT)
		<< err.msg;
	EXPECT_EQ(st->ops->expunge(st, "Ex", v + 1, theirs, &err),
		  MFS_E_NOENT)
		<< err.msg;
	EXPECT_EQ(srv->check("uids Ex"), std::to_string(theirs));
}

// A login with a token (auth = xoauth2 or oauthbearer); password_command
// prints `next` and counts its runs in a file. Returns the connect result.
static int oauth_login(struct mfs_account base, enum mfs_auth auth,
		       const std::string &first, const std::string &next,
		       const std::string &dir, int *runs, struct mfs_err *err)
{
	std::string count = dir + "/token-runs";
	std::string cmd = "echo run >> '" + count + "'; echo '" + next + "'";
	struct mfs_store *st;
	int rc;

	unlink(count.c_str());
	base.auth = auth;
	base.password_command = (char *)cmd.c_str();
	st = mfs_imap_store_new(&base, first.c_str());
	if (st == NULL)
		return MFS_E_NOMEM;
	rc = st->ops->connect(st, err);
	st->ops->free(st);
	std::ifstream in(count);
	std::string line;
	*runs = 0;
	while (std::getline(in, line))
		(*runs)++;
	return rc;
}

TEST_F(ImapDefault, OauthTokensLogIn)
{
	std::string pass = srv->vars["MFS_PASS"];
	int runs;

	EXPECT_EQ(oauth_login(acct, MFS_AUTH_XOAUTH2, pass, pass, tmpdir, &runs,
			      &err),
		  MFS_OK)
	    << err.msg;
	EXPECT_EQ(runs, 0);
	EXPECT_EQ(oauth_login(acct, MFS_AUTH_OAUTHBEARER, pass, pass, tmpdir,
			      &runs, &err),
		  MFS_OK)
	    << err.msg;
	EXPECT_EQ(runs, 0);
}

TEST_F(ImapDefault, RefusedTokenIsAskedForAgainOnce)
{
	std::string pass = srv->vars["MFS_PASS"];
	int runs;

	for (enum mfs_auth a : {MFS_AUTH_XOAUTH2, MFS_AUTH_OAUTHBEARER}) {
		EXPECT_EQ(oauth_login(acct, a, "expired", pass, tmpdir, &runs,
				      &err),
			  MFS_OK)
		    << err.msg;
		EXPECT_EQ(runs, 1);
		EXPECT_EQ(oauth_login(acct, a, "expired", "also-bad", tmpdir,
				      &runs, &err),
			  MFS_E_AUTH);
		EXPECT_EQ(runs, 1);
	}
}

TEST_F(ImapDefault, RefusedPasswordIsNotAskedForAgain)
{
	int runs;

	EXPECT_EQ(oauth_login(acct, MFS_AUTH_PASSWORD, "wrong",
			      srv->vars["MFS_PASS"], tmpdir, &runs, &err),
		  MFS_E_AUTH);
	EXPECT_EQ(runs, 0);
	EXPECT_NE(std::string(err.msg).find("refused"), std::string::npos)
	    << err.msg;
}

TEST_F(ImapDefault, StoreFlags)
{
	create("Fl");
	uint32_t uid = append("Fl", message(60), MFS_FLAG_SEEN);
	uint32_t v = validity_of("Fl");
	std::string u = std::to_string(uid);
	unsigned now = 0;
	const char *add[] = {"\\Flagged", "$Work"};
	ASSERT_EQ(st->ops->store_flags(st, "Fl", v, uid, '+', add, 2, &now,
				       &err),
		  MFS_OK)
		<< err.msg;
	EXPECT_EQ(now, (unsigned)(MFS_FLAG_SEEN | MFS_FLAG_FLAGGED));
	EXPECT_EQ(srv->check("flags Fl " + u), "$Work \\Flagged \\Seen");

	const char *del[] = {"\\Seen"};
	ASSERT_EQ(st->ops->store_flags(st, "Fl", v, uid, '-', del, 1, &now,
				       &err),
		  MFS_OK)
		<< err.msg;
	EXPECT_EQ(now, (unsigned)MFS_FLAG_FLAGGED);
	EXPECT_EQ(srv->check("flags Fl " + u), "$Work \\Flagged");

	// Removing what is not there changes nothing and still answers.
	ASSERT_EQ(st->ops->store_flags(st, "Fl", v, uid, '-', del, 1, &now,
				       &err),
		  MFS_OK)
		<< err.msg;
	EXPECT_EQ(now, (unsigned)MFS_FLAG_FLAGGED);

	const char *set[] = {"\\Seen", "\\Answered"};
	ASSERT_EQ(st->ops->store_flags(st, "Fl", v, uid, '=', set, 2, &now,
				       &err),
		  MFS_OK)
		<< err.msg;
	EXPECT_EQ(now, (unsigned)(MFS_FLAG_SEEN | MFS_FLAG_ANSWERED));
	EXPECT_EQ(srv->check("flags Fl " + u), "\\Answered \\Seen");

	ASSERT_EQ(st->ops->store_flags(st, "Fl", v, uid, '=', NULL, 0, &now,
				       &err),
		  MFS_OK)
		<< err.msg;
	EXPECT_EQ(now, 0u);
	EXPECT_EQ(srv->check("flags Fl " + u), "");

	const char *bogus[] = {"\\Bogus"}, *spaced[] = {"two words"};
	EXPECT_EQ(st->ops->store_flags(st, "Fl", v, uid, '+', bogus, 1, &now,
				       &err),
		  MFS_E_INVAL);
	EXPECT_EQ(st->ops->store_flags(st, "Fl", v, uid, '+', spaced, 1, &now,
				       &err),
		  MFS_E_INVAL);
	EXPECT_EQ(st->ops->store_flags(st, "Fl", v, uid, '?', add, 1, &now,
				       &err),
		  MFS_E_INVAL);
	EXPECT_EQ(st->ops->store_flags(st, "Fl", v + 1, uid, '+', add, 1,
				       &now, &err),
		  MFS_E_NOENT);
	EXPECT_EQ(st->ops->store_flags(st, "Fl", v, uid + 100, '+', add, 1,
				       &now, &err),
		  MFS_E_NOENT)
		<< err.msg;
	EXPECT_EQ(srv->check("flags Fl " + u), "");
}

// Searches of one folder and of several at once, non-ASCII terms
// (literals), a missing folder among others: with ESEARCH and LITERAL+
// (Dovecot's defaults), and without either (ImapNoUidplus).
TEST_F(ImapDefault, Search)
{
	check_search();
}

// MOVE hidden, UIDPLUS offered: COPY + \Deleted + UID EXPUNGE.
class ImapNoMove : public ImapWrite
{
      protected:
	static void SetUpTestSuite()
	{
		start("imap_capability = IMAP4rev1 SASL-IR LOGIN-REFERRALS ID "
		      "ENABLE IDLE SORT MULTIAPPEND UNSELECT CHILDREN "
		      "NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 ESEARCH "
		      "SPECIAL-USE");
	}
	static void TearDownTestSuite() { stop(); }
};

TEST_F(ImapNoMove, MoveByCopyKeepsOthersDeleted)
{
	ASSERT_EQ(srv->check("caps").find("MOVE"), std::string::npos);
	create("CpSrc");
	create("CpDst");
	uint32_t uid = append("CpSrc", message(70));
	uint32_t theirs = append("CpSrc", message(71));
	uint32_t v = validity_of("CpSrc");
	ASSERT_EQ(srv->check("mark CpSrc " + std::to_string(theirs) +
			     " '\\Deleted'"),
		  "ok");
	ASSERT_EQ(st->ops->move(st, "CpSrc", v, uid, "CpDst", &err), MFS_OK)
		<< err.msg;
	EXPECT_EQ(srv->check("uids CpSrc"), std::to_string(theirs));
	std::string moved = srv->check("uids CpDst");
	ASSERT_FALSE(moved.empty());
	// The copy does not carry the \Deleted that the move set.
	EXPECT_EQ(srv->check("flags CpDst " + moved), "");
	EXPECT_EQ(st->ops->move(st, "CpSrc", v, uid, "CpDst", &err),
		  MFS_E_NOENT)
		<< err.msg;
	EXPECT_EQ(srv->check("uids CpDst"), moved);
}

// Neither MOVE nor UIDPLUS: moves and deletes still work (UID COPY,
// \Deleted, EXPUNGE), and never expunge what another client marked.
class ImapNoUidplus : public ImapWrite
{
      protected:
	static void SetUpTestSuite()
	{
		start("imap_capability = IMAP4rev1 SASL-IR ID ENABLE IDLE "
		      "UNSELECT NAMESPACE SPECIAL-USE");
	}
	static void TearDownTestSuite() { stop(); }
};

// Without ESEARCH and LITERAL+: "* SEARCH", and each literal waits.
TEST_F(ImapNoUidplus, Search)
{
	check_search();
}

// A move is UID COPY and then the removal of the source message; a
// removal marks it \Deleted and EXPUNGEs, but a message another client
// marked \Deleted (here between the two removed ones) is not expunged
// with it and keeps its \Deleted. A message that is gone is MFS_E_NOENT.
TEST_F(ImapNoUidplus, MoveAndExpungeKeepOthersDeleted)
{
	std::string caps = srv->check("caps");
	ASSERT_EQ(caps.find("UIDPLUS"), std::string::npos) << caps;
	ASSERT_EQ(caps.find("MOVE"), std::string::npos) << caps;
	create("Plain");
	create("Plain2");
	append("Plain", message(80));
	append("Plain", message(81));
	append("Plain", message(82));
	std::istringstream in(srv->check("uids Plain"));
	std::string first, theirs, last;
	ASSERT_TRUE(in >> first >> theirs >> last);
	ASSERT_EQ(srv->check("mark Plain " + theirs + " '\\Deleted'"), "ok");
	uint32_t val = validity_of("Plain");

	ASSERT_EQ(st->ops->move(st, "Plain", val, std::stoul(first), "Plain2",
				&err),
		  MFS_OK)
		<< err.msg;
	EXPECT_EQ(srv->check("uids Plain"), theirs + " " + last);
	EXPECT_EQ(srv->check("flags Plain " + theirs), "\\Deleted");
	std::string moved = srv->check("uids Plain2");
	ASSERT_FALSE(moved.empty());
	EXPECT_EQ(moved.find(' '), std::string::npos) << moved;
	// the copy does not carry the \Deleted that the removal set
	EXPECT_EQ(srv->check("flags Plain2 " + moved), "");
	std::string path = write_file("m80.eml", message(80));
	EXPECT_EQ(srv->check("sha Plain2 " + moved).substr(0, 64),
		  sha256_of(path));

	ASSERT_EQ(st->ops->expunge(st, "Plain", val, std::stoul(last), &err),
		  MFS_OK)
		<< err.msg;
	EXPECT_EQ(srv->check("uids Plain"), theirs);
	EXPECT_EQ(srv->check("flags Plain " + theirs), "\\Deleted");

	EXPECT_EQ(st->ops->expunge(st, "Plain", val, std::stoul(last), &err),
		  MFS_E_NOENT)
		<< err.msg;
	EXPECT_EQ(st->ops->move(st, "Plain", val, std::stoul(first), "Plain2",
				&err),
		  MFS_E_NOENT)
		<< err.msg;
	EXPECT_EQ(srv->check("uids Plain2"), moved);
	EXPECT_EQ(srv->check("uids Plain"), theirs);
	EXPECT_EQ(srv->check("flags Plain " + theirs), "\\Deleted");
}

// ---- a scripted server for what Dovecot never says ------------------------

// The scripted server hangs up on a client that sends (or reads) nothing
// for this long: longer than the driver's own timeout (5 s), so that a
// driver that waits too long fails by its own timeout, and no test can
// hang on the server.
const int SCRIPTED_WAIT_S = 10;

std::string upper(std::string s)
{
	for (char &ch : s)
		ch = (char)toupper((unsigned char)ch);
	return s;
}

// s as an IMAP quoted string.
std::string quote(const std::string &s)
{
	std::string out = "\"";
	for (char ch : s) {
		if (ch == '"' || ch == '\\')
			out += '\\';
		out += ch;
	}
	return out + "\"";
}

std::string join(const std::vector<std::string> &v, const char *sep)
{
	std::string out;
	for (size_t i = 0; i < v.size(); i++)
		out += (i ? sep : "") + v[i];
	return out;
}

// Splits the IMAP arguments of s[i..] into out, with one kind each in
// kinds: atoms ('a', with their [...] parts: BODY.PEEK[HEADER.FIELDS (To)]),
// quoted strings ('q', unquoted), literals "{N}\r\n..." ('l', their
// bytes; 'L' when s ends at "{N}", the bytes still to come) and
// parenthesized lists ('(', as written). false when s does not parse.
bool split_args(const std::string &s, size_t i, std::vector<std::string> &out,
		std::string &kinds)
{
	while (i < s.size()) {
		size_t start = i;

		if (s[i] == ' ') {
			i++;
		} else if (s[i] == '"') {
			std::string v;
			for (i++; i < s.size() && s[i] != '"'; i++) {
				if (s[i] == '\\' && i + 1 < s.size())
					i++;
				v += s[i];
			}
			if (i++ >= s.size())
				return false;
			out.push_back(v);
			kinds += 'q';
		} else if (s[i] == '(') {
			int depth = 0;
			bool quoted = false;
			for (; i < s.size(); i++) {
				if (quoted && s[i] == '\\')
					i++;
				else if (s[i] == '"')
					quoted = !quoted;
				else if (!quoted && s[i] == '(')
					depth++;
				else if (!quoted && s[i] == ')' && --depth == 0)
					break;
			}
			if (i++ >= s.size())
				return false;
			out.push_back(s.substr(start, i - start));
			kinds += '(';
		} else if (s[i] == '{') {
			size_t close = s.find('}', i);
			if (close == std::string::npos)
				return false;
			std::string num = s.substr(i + 1, close - i - 1);
			if (!num.empty() && num.back() == '+')
				num.pop_back();
			if (num.empty() || num.size() > 9 ||
			    num.find_first_not_of("0123456789") !=
				std::string::npos)
				return false;
			size_t n = std::stoul(num);
			i = close + 1;
			if (i == s.size()) {
				out.push_back("");
				kinds += 'L';
				return true;
			}
			if (s.compare(i, 2, "\r\n") != 0 ||
			    s.size() - i - 2 < n)
				return false;
			out.push_back(s.substr(i + 2, n));
			kinds += 'l';
			i += 2 + n;
		} else {
			int brackets = 0;
			for (; i < s.size(); i++) {
				if (s[i] == '[')
					brackets++;
				else if (s[i] == ']')
					brackets--;
				else if (brackets <= 0 &&
					 (s[i] == ' ' || s[i] == ')'))
					break;
			}
			if (i == start)
				return false;
			out.push_back(s.substr(start, i - start));
			kinds += 'a';
		}
	}
	return true;
}

// The items of a parenthesized list ("(A B)"), split as above.
std::vector<std::string> list_items(const std::string &list,
				    std::string *kinds = NULL)
{
	std::vector<std::string> out;
	std::string k;

	if (list.size() < 2 ||
	    !split_args(list.substr(1, list.size() - 2), 0, out, k))
		out.clear();
	if (kinds != NULL)
		*kinds = k;
	return out;
}

// Whether n is in the IMAP sequence set `set`, "*" standing for star;
// clears *ok when set is not a sequence set.
bool in_set(const std::string &set, uint32_t n, uint32_t star, bool *ok)
{
	std::istringstream in(set);
	std::string piece;
	bool found = false;
	auto num = [star](const std::string &t, uint32_t *v) {
		if (t == "*") {
			*v = star;
			return true;
		}
		if (t.empty() || t.size() > 10 ||
		    t.find_first_not_of("0123456789") != std::string::npos)
			return false;
		unsigned long long x = std::stoull(t);
		*v = (uint32_t)x;
		return x > 0 && x <= UINT32_MAX;
	};

	if (set.empty())
		*ok = false;
	while (std::getline(in, piece, ',')) {
		size_t colon = piece.find(':');
		uint32_t lo, hi;
		if (!num(piece.substr(0, colon), &lo) ||
		    !num(colon == std::string::npos ? piece
						    : piece.substr(colon + 1),
			 &hi)) {
			*ok = false;
			return false;
		}
		if (lo > hi)
			std::swap(lo, hi);
		found |= n >= lo && n <= hi;
	}
	return found;
}

// The numbers a sequence set names one by one, not as a range.
std::vector<uint32_t> singles(const std::string &set)
{
	std::istringstream in(set);
	std::string piece;
	std::vector<uint32_t> out;

	while (std::getline(in, piece, ','))
		if (!piece.empty() && piece.size() <= 10 &&
		    piece.find_first_not_of("0123456789") == std::string::npos)
			out.push_back((uint32_t)std::stoull(piece));
	return out;
}

// LIST's patterns: '*' matches anything, '%' anything but the delimiter.
bool glob(const char *p, const char *s, char delim)
{
	if (*p == '\0')
		return *s == '\0';
	if (*p == '*' || *p == '%') {
		for (const char *t = s;; t++) {
			if (glob(p + 1, t, delim))
				return true;
			if (*t == '\0' ||
			    (*p == '%' && delim != '\0' && *t == delim))
				return false;
		}
	}
	return *s != '\0' && *p == *s && glob(p + 1, s + 1, delim);
}

// A system flag in its usual case ("\\SEEN" is "\\Seen"); keywords as
// they are.
std::string canon_flag(const std::string &f)
{
	std::string out = f;
	if (f.size() < 2 || f[0] != '\\')
		return f;
	for (size_t i = 1; i < out.size(); i++)
		out[i] = (char)(i == 1 ? toupper((unsigned char)out[i])
				       : tolower((unsigned char)out[i]));
	return out;
}

// "" for no flags, else ":" and the flags in order, comma-separated: how
// the tests below write a message's flags.
std::string flag_text(const std::set<std::string> &flags)
{
	std::vector<std::string> v(flags.begin(), flags.end());
	return v.empty() ? "" : ":" + join(v, ",");
}

std::string flag_list(const std::set<std::string> &flags)
{
	return "(" +
	       join(std::vector<std::string>(flags.begin(), flags.end()), " ") +
	       ")";
}

// The value of header field `name` of a raw message ("" when it has none;
// several fields of that name joined by ", ").
std::string header_of(const std::string &text, const std::string &name)
{
	size_t end = text.find("\r\n\r\n");
	std::istringstream in(text.substr(0, end));
	std::string line, out;
	bool in_field = false;

	while (std::getline(in, line)) {
		if (!line.empty() && line.back() == '\r')
			line.pop_back();
		if (!line.empty() && (line[0] == ' ' || line[0] == '\t')) {
			if (in_field)
				out += line;
			continue;
		}
		size_t colon = line.find(':');
		in_field = colon != std::string::npos &&
			   upper(line.substr(0, colon)) == upper(name);
		if (in_field) {
			size_t v = line.find_first_not_of(' ', colon + 1);
			out += (out.empty() ? "" : ", ") +
			       (v == std::string::npos ? "" : line.substr(v));
		}
	}
	return out;
}

bool icontains(const std::string &hay, const std::string &needle)
{
	return upper(hay).find(upper(needle)) != std::string::npos;
}

// One message of the scripted server.
struct FakeMsg {
	uint32_t uid = 0;
	std::set<std::string> flags; // "\\Seen", keywords (no \Recent)
	std::string text;	     // the raw message
	std::string date = "16-Nov-2026 09:30:00 +0000"; // INTERNALDATE
};

// One mailbox: its messages in the order of their sequence numbers.
struct FakeBox {
	uint32_t validity = 7, uidnext = 1;
	std::string attrs; // LIST attributes: "\\Sent"
	std::vector<FakeMsg> msgs;
};

// A command as the scripted server read it, as its handlers see it.
struct ImapCmd {
	std::string tag;
	std::string line; // without the tag, literals inline: "{3}\r\nabc"
	std::string name; // upper case: "APPEND", "UID STORE"
	// the arguments after the name and their kinds (split_args())
	std::vector<std::string> args;
	std::string kinds;
	std::string selected; // the connection's mailbox, "" when none
	bool rw = false;      // ... selected by SELECT, not EXAMINE
	// the command stopped at a synchronizing literal: a reply now refuses
	// it before the server's "+", as Courier refuses APPEND
	bool partial = false;
};

// A plaintext IMAP server on 127.0.0.1, a small stateful one: mailboxes
// with messages, flags and UIDs; per connection the selected mailbox, and
// whether EXAMINE or SELECT chose it. It answers what an IMAP4rev1 server
// answers (SELECT, FETCH, STORE, COPY, SEARCH, EXPUNGE, CLOSE, APPEND,
// LIST, ...), and each extension only when `caps` advertises it; every
// other use is answered BAD and kept in problems(), as is a command it
// does not model. handlers[name] may answer a command first (with the
// whole reply; "" leaves it to the server). It records every command, and
// takes any number of connections, one thread each.
struct ScriptedImap {
	using Handler = std::function<std::string(const ImapCmd &)>;

	int lfd, port = 0;
	std::thread th;
	std::atomic<bool> stopping{false};
	std::mutex conn_mu; // the connections' threads and sockets
	std::vector<std::thread> conn_threads;
	std::vector<int> conn_fds;

	// Everything below is the server's state, guarded by mu; handlers run
	// with it held (recursive: they may call the methods below).
	std::recursive_mutex mu;
	std::vector<std::string> commands; // without tags, literals inline
	std::map<std::string, Handler> handlers;
	std::map<std::string, FakeBox> boxes;
	std::string caps = "IMAP4rev1 LITERAL+";
	// capabilities said nowhere: not in the greeting, not after LOGIN,
	// and CAPABILITY answered with a bare OK
	bool quiet = false;
	char delim = '/'; // hierarchy delimiter; '\0': NIL
	std::string ns;	  // the NAMESPACE response, "" for the usual one
	// when set, the reply (after the tag) to a UID command naming a UID
	// the selected mailbox does not have, as Mailutils answers a UID it
	// renumbered ("BAD Failed to parse message set")
	std::string missing_uid;
	std::vector<std::string> broken;  // used what is not advertised
	std::vector<std::string> lacking; // not modelled here
	size_t closes_rw = 0; // CLOSE of a SELECTed mailbox: it expunges
	// client bursts: commands read after the server had waited for the
	// client with nothing left to answer (a round trip each)
	std::atomic<size_t> bursts{0};
	uint32_t next_validity = 8;

	struct Session {
		std::string selected;
		bool rw = false;
	};

	ScriptedImap()
	{
		struct sockaddr_in sa = {};
		socklen_t len = sizeof(sa);

		boxes["INBOX"].validity = 7;
		lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		sa.sin_family = AF_INET;
		sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
		    listen(lfd, 4) != 0 ||
		    getsockname(lfd, (struct sockaddr *)&sa, &len) != 0)
			abort();
		port = ntohs(sa.sin_port);
	}
	void start()
	{
		if (!th.joinable())
			th = std::thread([this] { run(); });
	}
	~ScriptedImap()
	{
		stopping = true;
		if (th.joinable())
			th.join();
		// wakes every connection's thread at once: a read or write
		// in progress ends
		for (int c : conn_fds)
			shutdown(c, SHUT_RDWR);
		for (auto &t : conn_threads)
			t.join();
		for (int c : conn_fds)
			close(c);
		close(lfd);
	}

	// --- for the tests (each takes the lock) ---------------------------

	void on(const std::string &name, Handler h)
	{
		std::lock_guard<std::recursive_mutex> g(mu);
		if (h)
			handlers[name] = h;
		else
			handlers.erase(name);
	}
	void box(const std::string &name, const std::string &attrs = "")
	{
		std::lock_guard<std::recursive_mutex> g(mu);
		if (boxes.count(name) == 0)
			boxes[name].validity = next_validity++;
		boxes[name].attrs = attrs;
	}
	// A message put in box (made if need be) by another client; its UID.
	uint32_t add(const std::string &name, const std::string &text,
		     const std::set<std::string> &flags = {})
	{
		std::lock_guard<std::recursive_mutex> g(mu);
		FakeMsg m;
		if (boxes.count(name) == 0)
			box(name);
		FakeBox &b = boxes[name];
		m.uid = b.uidnext++;
		m.text = text;
		m.flags = flags;
		b.msgs.push_back(m);
		return m.uid;
	}
	// Another client sets the flags of a message.
	void set_flags(const std::string &name, uint32_t uid,
		       const std::set<std::string> &flags)
	{
		std::lock_guard<std::recursive_mutex> g(mu);
		for (auto &m : boxes[name].msgs)
			if (m.uid == uid)
				m.flags = flags;
	}
	// Every message of box gets a new UID, UIDVALIDITY staying the same:
	// what Mailutils does to a message it has just appended when another
	// session selects the folder.
	void renumber(const std::string &name)
	{
		std::lock_guard<std::recursive_mutex> g(mu);
		for (auto &m : boxes[name].msgs)
			m.uid = boxes[name].uidnext++;
	}
	void set_missing_uid(const std::string &reply)
	{
		std::lock_guard<std::recursive_mutex> g(mu);
		missing_uid = reply;
	}
	std::vector<FakeMsg> msgs(const std::string &name)
	{
		std::lock_guard<std::recursive_mutex> g(mu);
		return boxes.count(name) ? boxes[name].msgs
					 : std::vector<FakeMsg>();
	}
	// The messages of box as "uid" or "uid:\\Flag,..." each, blank
	// separated; "none" without such a mailbox.
	std::string listing(const std::string &name)
	{
		std::lock_guard<std::recursive_mutex> g(mu);
		std::vector<std::string> out;
		if (boxes.count(name) == 0)
			return "none";
		for (const auto &m : boxes[name].msgs)
			out.push_back(std::to_string(m.uid) +
				      flag_text(m.flags));
		return join(out, " ");
	}
	std::vector<std::string> all()
	{
		std::lock_guard<std::recursive_mutex> g(mu);
		return commands;
	}
	size_t count(const char *prefix)
	{
		std::lock_guard<std::recursive_mutex> g(mu);
		size_t n = 0;
		for (const auto &c : commands)
			n += c.rfind(prefix, 0) == 0;
		return n;
	}
	std::vector<std::string> searches()
	{
		std::lock_guard<std::recursive_mutex> g(mu);
		std::vector<std::string> out;
		for (const auto &c : commands)
			if (c.rfind("UID SEARCH", 0) == 0)
				out.push_back(c);
		return out;
	}
	size_t closes_of_selected()
	{
		std::lock_guard<std::recursive_mutex> g(mu);
		return closes_rw;
	}
	// What the client used that this server does not advertise, and what
	// it asked that this server does not model: "" when nothing.
	std::string problems()
	{
		std::lock_guard<std::recursive_mutex> g(mu);
		std::string out;
		for (const auto &b : broken)
			out += "not advertised: " + b + "\n";
		for (const auto &l : lacking)
			out +=
			    "not modelled by the scripted server: " + l + "\n";
		return out;
	}

	// --- the connections ------------------------------------------------

	void run()
	{
		while (!stopping) {
			struct pollfd p = {lfd, POLLIN, 0};
			if (poll(&p, 1, 50) <= 0)
				continue;
			int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
			if (c < 0)
				continue;
			struct timeval tv = {SCRIPTED_WAIT_S, 0};
			setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
			setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
			std::lock_guard<std::mutex> g(conn_mu);
			conn_fds.push_back(c);
			conn_threads.emplace_back([this, c] { serve(c); });
		}
	}
	// Every write waits at most SCRIPTED_WAIT_S (SO_SNDTIMEO); a client
	// that hung up costs no SIGPIPE.
	static bool say(int fd, const std::string &s)
	{
		for (size_t off = 0; off < s.size();) {
			ssize_t w = send(fd, s.data() + off, s.size() - off,
					 MSG_NOSIGNAL);
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0)
				return false;
			off += (size_t)w;
		}
		return true;
	}
	// A client's bytes; every read waits at most SCRIPTED_WAIT_S
	// (SO_RCVTIMEO), after which the client counts as gone.
	struct Reader {
		int fd;
		std::string buf;
		size_t pos = 0;

		bool fill()
		{
			char tmp[4096];
			ssize_t r;
			do
				r = read(fd, tmp, sizeof(tmp));
			while (r < 0 && errno == EINTR);
			if (r <= 0)
				return false;
			buf.erase(0, pos);
			pos = 0;
			buf.append(tmp, (size_t)r);
			return true;
		}
		// One line, without its CRLF.
		bool line(std::string &out)
		{
			size_t nl;
			while ((nl = buf.find('\n', pos)) == std::string::npos)
				if (buf.size() - pos > (1u << 20) || !fill())
					return false;
			out = buf.substr(pos, nl - pos);
			pos = nl + 1;
			if (!out.empty() && out.back() == '\r')
				out.pop_back();
			return true;
		}
		bool bytes(size_t n, std::string &out)
		{
			while (buf.size() - pos < n)
				if (!fill())
					return false;
			out = buf.substr(pos, n);
			pos += n;
			return true;
		}
	};
	// The size of the literal that ends line ("{12}", "{12+}"), or -1.
	static long long literal_at_end(const std::string &line, bool *plus)
	{
		size_t open = line.rfind('{');
		if (line.empty() || line.back() != '}' ||
		    open == std::string::npos)
			return -1;
		std::string num = line.substr(open + 1, line.size() - open - 2);
		*plus = !num.empty() && num.back() == '+';
		if (*plus)
			num.pop_back();
		if (num.empty() || num.size() > 12 ||
		    num.find_first_not_of("0123456789") != std::string::npos)
			return -1;
		return std::stoll(num);
	}
	void serve(int fd)
	{
		Reader in{fd, "", 0};
		Session ss;
		std::string line;
		bool bye = false;

		{
			std::lock_guard<std::recursive_mutex> g(mu);
			line = quiet ? "* OK hi\r\n"
				     : "* OK [CAPABILITY " + caps +
					   " AUTH=PLAIN] hi\r\n";
		}
		say(fd, line);
		for (;;) {
			if (in.buf.find('\n', in.pos) == std::string::npos) {
				struct pollfd p = {fd, POLLIN, 0};
				if (poll(&p, 1, 0) <= 0) {
					if (!in.fill())
						break;
					bursts++;
				}
			}
			if (bye || !in.line(line))
				break;
			std::string cmd = line, reply, lit;
			bool plus, lost = false;
			long long n;
			while ((n = literal_at_end(line, &plus)) >= 0) {
				if (!plus) {
					reply = answer(ss, cmd, true, &bye);
					if (!reply.empty())
						break; // refused before it
					say(fd, "+ go on\r\n");
				}
				if (n > (64 << 20) ||
				    !in.bytes((size_t)n, lit) ||
				    !in.line(line)) {
					lost = true;
					break;
				}
				cmd += "\r\n" + lit + line;
			}
			if (lost)
				break;
			if (reply.empty())
				reply = answer(ss, cmd, false, &bye);
			if (!say(fd, reply))
				break;
		}
		shutdown(fd, SHUT_RDWR);
	}

	// --- the answers (caller holds mu) ----------------------------------

	bool has_cap(const std::string &name)
	{
		std::istringstream in(caps);
		std::string c;
		while (in >> c)
			if (upper(c) == upper(name))
				return true;
		return false;
	}
	std::string delim_text()
	{
		return delim == '\0' ? "NIL" : quote(std::string(1, delim));
	}
	// The server's name of a mailbox (INBOX in any case is INBOX).
	static std::string box_name(const std::string &name)
	{
		return upper(name) == "INBOX" ? "INBOX" : name;
	}
	static uint32_t max_uid(const FakeBox &b)
	{
		return b.msgs.empty() ? 0 : b.msgs.back().uid;
	}
	// The capability c needs and this server does not advertise, or "".
	std::string unadvertised(const ImapCmd &c)
	{
		static const std::map<std::string, std::string> ext = {
		    {"IDLE", "IDLE"},
		    {"UNSELECT", "UNSELECT"},
		    {"NAMESPACE", "NAMESPACE"},
		    {"ENABLE", "ENABLE"},
		    {"MOVE", "MOVE"},
		    {"UID MOVE", "MOVE"},
		    {"UID EXPUNGE", "UIDPLUS"},
		    {"ID", "ID"},
		    {"GETQUOTA", "QUOTA"},
		    {"GETQUOTAROOT", "QUOTA"},
		    {"COMPRESS", "COMPRESS=DEFLATE"},
		    {"XLIST", "XLIST"},
		    {"STARTTLS", "STARTTLS"},
		    {"SORT", "SORT"},
		    {"UID SORT", "SORT"},
		    {"THREAD", "THREAD"},
		    {"UID THREAD", "THREAD"},
		    {"GETMETADATA", "METADATA"},
		};
		const std::string &n = c.name;
		std::string line = upper(c.line);
		auto e = ext.find(n);

		if (e != ext.end() && !has_cap(e->second))
			return e->second;
		if (line.find("+}\r\n") != std::string::npos &&
		    !has_cap("LITERAL+"))
			return "LITERAL+";
		if ((n == "SELECT" || n == "EXAMINE") && c.args.size() > 1) {
			if (line.find("CONDSTORE") != std::string::npos &&
			    !has_cap("CONDSTORE"))
				return "CONDSTORE";
			if (line.find("QRESYNC") != std::string::npos &&
			    !has_cap("QRESYNC"))
				return "QRESYNC";
		}
		if ((n == "FETCH" || n == "UID FETCH" || n == "STORE" ||
		     n == "UID STORE" || n == "STATUS") &&
		    (line.find("MODSEQ") != std::string::npos ||
		     line.find("CHANGEDSINCE") != std::string::npos) &&
		    !has_cap("CONDSTORE"))
			return "CONDSTORE";
		if ((n == "FETCH" || n == "UID FETCH") &&
		    line.find("VANISHED") != std::string::npos &&
		    !has_cap("QRESYNC"))
			return "QRESYNC";
		if ((n == "SEARCH" || n == "UID SEARCH") && !c.args.empty() &&
		    upper(c.args[0]) == "RETURN" && !has_cap("ESEARCH"))
			return "ESEARCH";
		if (n == "LIST" &&
		    ((!c.kinds.empty() && c.kinds[0] == '(') ||
		     c.args.size() > 2) &&
		    !has_cap("LIST-EXTENDED"))
			return "LIST-EXTENDED";
		if (n == "LIST" &&
		    line.find("SPECIAL-USE") != std::string::npos &&
		    !has_cap("SPECIAL-USE"))
			return "SPECIAL-USE";
		return "";
	}
	// The reply to one command line (tag and all); with partial, stopped
	// at a synchronizing literal, "" lets the literal come.
	std::string answer(Session &ss, const std::string &line, bool partial,
			   bool *bye)
	{
		std::lock_guard<std::recursive_mutex> g(mu);
		ImapCmd c;
		std::vector<std::string> words;
		std::string kinds, reply;
		size_t sp = line.find(' '), skip = 1;

		c.tag = line.substr(0, sp);
		c.line = sp == std::string::npos ? "" : line.substr(sp + 1);
		if (!partial)
			commands.push_back(c.line);
		if (!split_args(c.line, 0, words, kinds) || words.empty() ||
		    kinds[0] != 'a')
			return partial ? ""
				       : c.tag + " BAD cannot parse that\r\n";
		c.name = upper(words[0]);
		if (c.name == "UID" && words.size() > 1) {
			c.name += " " + upper(words[1]);
			skip = 2;
		}
		c.args.assign(words.begin() + skip, words.end());
		c.kinds = kinds.substr(skip);
		c.selected = ss.selected;
		c.rw = ss.rw;
		c.partial = partial;
		if (!partial) {
			std::string ext = unadvertised(c);
			if (!ext.empty()) {
				broken.push_back(c.line.substr(0, 200) + " (" +
						 ext + ")");
				return c.tag + " BAD " + ext +
				       " is not advertised\r\n";
			}
		}
		auto h = handlers.find(c.name);
		if (h != handlers.end())
			reply = h->second(c);
		if (partial && !reply.empty())
			commands.push_back(
			    c.line); // refused before the literal
		if (!reply.empty() || partial)
			return reply;
		return standard(ss, c, bye);
	}
	// Whether message i of b matches the search key at keys[*j] (and
	// its arguments, *j is moved past them); why says what is not
	// modelled or not a search key.
	bool search_key(const std::vector<std::string> &keys,
			const std::string &kinds, size_t *j, const FakeBox &b,
			size_t i, std::string &why)
	{
		const FakeMsg &m = b.msgs[i];
		bool ok = true;

		if (*j >= keys.size()) {
			why = "a search key is missing";
			return false;
		}
		if (kinds[*j] == '(') {
			std::string k;
			std::vector<std::string> inner =
			    list_items(keys[(*j)++], &k);
			bool all = true;
			for (size_t x = 0; x < inner.size() && why.empty();)
				all =
				    search_key(inner, k, &x, b, i, why) && all;
			return all;
		}
		std::string key = upper(keys[(*j)++]);
		auto arg = [&]() -> std::string {
			if (*j < keys.size())
				return keys[(*j)++];
			why = key + " without its argument";
			return "";
		};
		static const std::map<std::string,
				      std::pair<const char *, bool>>
		    flag_keys = {
			{"SEEN", {"\\Seen", true}},
			{"UNSEEN", {"\\Seen", false}},
			{"DELETED", {"\\Deleted", true}},
			{"UNDELETED", {"\\Deleted", false}},
			{"FLAGGED", {"\\Flagged", true}},
			{"UNFLAGGED", {"\\Flagged", false}},
			{"ANSWERED", {"\\Answered", true}},
			{"UNANSWERED", {"\\Answered", false}},
			{"DRAFT", {"\\Draft", true}},
			{"UNDRAFT", {"\\Draft", false}},
		    };
		auto f = flag_keys.find(key);
		if (f != flag_keys.end())
			return (m.flags.count(f->second.first) > 0) ==
			       f->second.second;
		if (key == "ALL")
			return true;
		if (key == "NOT")
			return !search_key(keys, kinds, j, b, i, why);
		if (key == "OR") {
			bool x = search_key(keys, kinds, j, b, i, why);
			bool y = search_key(keys, kinds, j, b, i, why);
			return x || y;
		}
		if (key == "KEYWORD")
			return m.flags.count(arg()) > 0;
		if (key == "UNKEYWORD")
			return m.flags.count(arg()) == 0;
		if (key == "UID" || isdigit((unsigned char)key[0]) ||
		    key[0] == '*') {
			std::string set = key == "UID" ? arg() : key;
			bool in = key == "UID"
				      ? in_set(set, m.uid, max_uid(b), &ok)
				      : in_set(set, (uint32_t)i + 1,
					       (uint32_t)b.msgs.size(), &ok);
			if (!ok)
				why = "not a sequence set: " + set;
			return in;
		}
		if (key == "FROM" || key == "TO" || key == "CC" ||
		    key == "BCC" || key == "SUBJECT")
			return icontains(header_of(m.text, key), arg());
		if (key == "HEADER") {
			std::string name = arg();
			return icontains(header_of(m.text, name), arg());
		}
		if (key == "TEXT")
			return icontains(m.text, arg());
		if (key == "BODY") {
			size_t end = m.text.find("\r\n\r\n");
			return icontains(end == std::string::npos
					     ? ""
					     : m.text.substr(end + 4),
					 arg());
		}
		if (key == "LARGER" || key == "SMALLER") {
			std::string n = arg();
			if (n.empty() || n.find_first_not_of("0123456789") !=
					     std::string::npos) {
				why = key + " " + n;
				return false;
			}
			return key == "LARGER" ? m.text.size() > std::stoull(n)
					       : m.text.size() < std::stoull(n);
		}
		why = "search key " + key;
		return false;
	}
	// What an IMAP4rev1 server does with c.
	std::string standard(Session &ss, const ImapCmd &c, bool *bye)
	{
		const std::string &n = c.name;
		bool uid = n.rfind("UID ", 0) == 0;

		if (n == "CAPABILITY")
			return quiet ? ok(c, "done")
				     : "* CAPABILITY " + caps + "\r\n" +
					   ok(c, "done");
		if (n == "LOGIN" || n == "AUTHENTICATE")
			return ok(c, quiet ? "in"
					   : "[CAPABILITY " + caps + "] in");
		if (n == "LOGOUT") {
			*bye = true;
			return "* BYE bye\r\n" + ok(c, "done");
		}
		if (n == "NOOP" || n == "CHECK" || n == "SUBSCRIBE" ||
		    n == "UNSUBSCRIBE" || n == "LSUB")
			return ok(c, "done");
		if (n == "ENABLE")
			return "* ENABLED\r\n" + ok(c, "done");
		if (n == "NAMESPACE")
			return (ns.empty() ? "* NAMESPACE ((\"\" " +
						 delim_text() + ")) NIL NIL"
					   : ns) +
			       "\r\n" + ok(c, "done");
		if (n == "LIST")
			return list_cmd(c);
		if (n == "CREATE" || n == "DELETE" || n == "RENAME" ||
		    n == "STATUS")
			return mailbox_cmd(ss, c);
		if (n == "APPEND")
			return append_cmd(ss, c);
		if (n == "SELECT" || n == "EXAMINE")
			return select_cmd(ss, c);
		if (n != "CLOSE" && n != "UNSELECT" && n != "FETCH" &&
		    n != "STORE" && n != "COPY" && n != "SEARCH" &&
		    n != "EXPUNGE" && !uid)
			return lacks(c, n);
		if (ss.selected.empty() || boxes.count(ss.selected) == 0)
			return bad(c, "no mailbox selected");
		FakeBox &b = boxes[ss.selected];
		if (n == "CLOSE" || n == "UNSELECT") {
			if (n == "CLOSE" && ss.rw) {
				// CLOSE expunges silently (RFC 3501 6.4.2)
				closes_rw++;
				expunge(b, "", false);
			}
			ss.selected.clear();
			ss.rw = false;
			return ok(c, "done");
		}
		if (n == "EXPUNGE")
			return ss.rw ? expunge(b, "", true) + ok(c, "expunged")
				     : no_read_only(c);
		if (n == "SEARCH" || n == "UID SEARCH")
			return search_cmd(c, b, uid);
		bool set_ok = true;
		if (c.args.empty() ||
		    (in_set(c.args[0], 0, 1, &set_ok), !set_ok))
			return bad(c, "not a sequence set");
		// Mailutils: a UID it renumbered is not a UID to it
		for (uint32_t u : uid && !missing_uid.empty()
				      ? singles(c.args[0])
				      : std::vector<uint32_t>()) {
			bool there = false;
			for (const auto &m : b.msgs)
				there |= m.uid == u;
			if (!there)
				return c.tag + " " + missing_uid + "\r\n";
		}
		if (n == "UID EXPUNGE")
			return ss.rw ? expunge(b, c.args[0], true) +
					   ok(c, "expunged")
				     : no_read_only(c);
		if (n == "FETCH" || n == "UID FETCH")
			return fetch_cmd(ss, c, b, uid);
		if (n == "STORE" || n == "UID STORE")
			return store_cmd(ss, c, b, uid);
		if (n == "COPY" || n == "UID COPY" || n == "UID MOVE")
			return copy_cmd(c, b, uid);
		return lacks(c, n);
	}

	static std::string ok(const ImapCmd &c, const std::string &text)
	{
		return c.tag + " OK " + text + "\r\n";
	}
	static std::string bad(const ImapCmd &c, const std::string &why)
	{
		return c.tag + " BAD " + why + "\r\n";
	}
	static std::string no_read_only(const ImapCmd &c)
	{
		return c.tag + " NO [READ-ONLY] mailbox is read-only\r\n";
	}
	// BAD for what this server does not model, kept for problems().
	std::string lacks(const ImapCmd &c, const std::string &what)
	{
		lacking.push_back(c.line.substr(0, 200) + " (" + what + ")");
		return bad(c, what + " is not modelled here");
	}
	// Whether message i of b is in c's set (a UID set with uid).
	static bool picked(const ImapCmd &c, const FakeBox &b, size_t i,
			   bool uid)
	{
		bool set_ok = true;
		return uid ? in_set(c.args[0], b.msgs[i].uid, max_uid(b),
				    &set_ok)
			   : in_set(c.args[0], (uint32_t)i + 1,
				    (uint32_t)b.msgs.size(), &set_ok);
	}

	std::string list_cmd(const ImapCmd &c)
	{
		const std::vector<std::string> &a = c.args;
		std::string out;

		if (a.size() != 2)
			return bad(c, "LIST reference pattern");
		if (a[1].empty())
			return "* LIST (\\Noselect) " + delim_text() +
			       " \"\"\r\n" + ok(c, "done");
		for (const auto &b : boxes)
			if (glob((a[0] + a[1]).c_str(), b.first.c_str(), delim))
				out += "* LIST (" + b.second.attrs + ") " +
				       delim_text() + " " + quote(b.first) +
				       "\r\n";
		return out + ok(c, "done");
	}

	// CREATE, DELETE, RENAME, STATUS.
	std::string mailbox_cmd(Session &ss, const ImapCmd &c)
	{
		const std::vector<std::string> &a = c.args;
		const std::string &n = c.name;

		if (a.empty() || (n == "RENAME" && a.size() < 2))
			return bad(c, "mailbox?");
		std::string name = box_name(a[0]);
		auto b = boxes.find(name);
		if (n == "CREATE") {
			if (b != boxes.end())
				return c.tag +
				       " NO [ALREADYEXISTS] it exists\r\n";
			box(name);
			return ok(c, "created");
		}
		if (b == boxes.end())
			return c.tag + " NO [NONEXISTENT] no such mailbox\r\n";
		if (n == "STATUS") {
			std::vector<std::string> parts;
			uint32_t unseen = 0, v;
			for (const auto &m : b->second.msgs)
				unseen += m.flags.count("\\Seen") == 0;
			for (const auto &item :
			     list_items(a.size() > 1 ? a[1] : "")) {
				std::string u = upper(item);
				if (u == "MESSAGES")
					v = (uint32_t)b->second.msgs.size();
				else if (u == "RECENT")
					v = 0;
				else if (u == "UIDNEXT")
					v = b->second.uidnext;
				else if (u == "UIDVALIDITY")
					v = b->second.validity;
				else if (u == "UNSEEN")
					v = unseen;
				else
					return lacks(c, "STATUS " + item);
				parts.push_back(u + " " + std::to_string(v));
			}
			return "* STATUS " + quote(name) + " (" +
			       join(parts, " ") + ")\r\n" + ok(c, "done");
		}
		if (name == "INBOX")
			return c.tag + " NO [CANNOT] not INBOX\r\n";
		if (n == "RENAME") {
			if (boxes.count(box_name(a[1])))
				return c.tag +
				       " NO [ALREADYEXISTS] it exists\r\n";
			boxes[box_name(a[1])] = b->second;
		}
		if (name == ss.selected) {
			ss.selected.clear();
			ss.rw = false;
		}
		boxes.erase(name);
		return ok(c, "done");
	}

	// APPEND mailbox [(flags)] ["date"] literal.
	std::string append_cmd(Session &ss, const ImapCmd &c)
	{
		const std::vector<std::string> &a = c.args;
		size_t lit = c.kinds.find('l');
		FakeMsg m;

		if (a.empty() || lit == std::string::npos || lit == 0)
			return bad(c, "APPEND mailbox [flags] [date] literal");
		std::string name = box_name(a[0]);
		auto b = boxes.find(name);
		if (b == boxes.end())
			return c.tag + " NO [TRYCREATE] no such mailbox\r\n";
		m.text = a[lit];
		for (size_t i = 1; i < lit; i++) {
			if (c.kinds[i] == '(')
				for (const auto &f : list_items(a[i]))
					m.flags.insert(canon_flag(f));
			else if (c.kinds[i] == 'q')
				m.date = a[i];
			else
				return lacks(c, "APPEND with " + a[i]);
		}
		FakeBox &to = b->second;
		m.uid = to.uidnext++;
		to.msgs.push_back(m);
		std::string code = has_cap("UIDPLUS")
				       ? "[APPENDUID " +
					     std::to_string(to.validity) + " " +
					     std::to_string(m.uid) + "] "
				       : "";
		return (name == ss.selected
			    ? "* " + std::to_string(to.msgs.size()) +
				  " EXISTS\r\n"
			    : "") +
		       ok(c, code + "appended");
	}

	std::string select_cmd(Session &ss, const ImapCmd &c)
	{
		// a SELECT that fails leaves no mailbox selected (RFC 3501
		// 6.3.1)
		ss.selected.clear();
		ss.rw = false;
		if (c.args.empty())
			return bad(c, "mailbox?");
		auto b = boxes.find(box_name(c.args[0]));
		if (b == boxes.end())
			return c.tag + " NO [NONEXISTENT] no such mailbox\r\n";
		ss.selected = b->first;
		ss.rw = c.name == "SELECT";
		return "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen "
		       "\\Draft)\r\n* OK [PERMANENTFLAGS " +
		       std::string(ss.rw ? "(\\Answered \\Flagged \\Deleted "
					   "\\Seen \\Draft \\*)"
					 : "()") +
		       "] flags\r\n* " + std::to_string(b->second.msgs.size()) +
		       " EXISTS\r\n* 0 RECENT\r\n* OK [UIDVALIDITY " +
		       std::to_string(b->second.validity) +
		       "] v\r\n* OK [UIDNEXT " +
		       std::to_string(b->second.uidnext) + "] n\r\n" +
		       ok(c, ss.rw ? "[READ-WRITE] selected"
				   : "[READ-ONLY] examined");
	}

	// Removes the messages of b marked \Deleted (within the UID set
	// `uids` unless it is ""); their EXPUNGE responses when `say`.
	std::string expunge(FakeBox &b, const std::string &uids, bool say)
	{
		std::string out;
		bool set_ok = true;

		for (size_t i = b.msgs.size(); i-- > 0;) {
			if (b.msgs[i].flags.count("\\Deleted") == 0 ||
			    (!uids.empty() &&
			     !in_set(uids, b.msgs[i].uid, max_uid(b), &set_ok)))
				continue;
			if (say)
				out += "* " + std::to_string(i + 1) +
				       " EXPUNGE\r\n";
			b.msgs.erase(b.msgs.begin() + (long)i);
		}
		return out;
	}

	// One FETCH item of m, appended to parts; false when it is not
	// modelled here. BODY[] (not PEEK) sets \Seen, on a SELECTed mailbox.
	static bool fetch_item(FakeMsg &m, const std::string &item, bool rw,
			       std::vector<std::string> &parts)
	{
		std::string u = upper(item), subject, bytes, section;
		size_t open = u.find('['), hend = m.text.find("\r\n\r\n");

		hend = hend == std::string::npos ? m.text.size() : hend + 4;
		if (u == "FLAGS") {
			parts.push_back("FLAGS " + flag_list(m.flags));
		} else if (u == "RFC822.SIZE") {
			parts.push_back("RFC822.SIZE " +
					std::to_string(m.text.size()));
		} else if (u == "INTERNALDATE") {
			parts.push_back("INTERNALDATE \"" + m.date + "\"");
		} else if (u == "ENVELOPE") {
			subject = header_of(m.text, "Subject");
			parts.push_back(
			    "ENVELOPE (NIL " +
			    (subject.empty() ? "NIL" : quote(subject)) +
			    " NIL NIL NIL NIL NIL NIL NIL NIL)");
		} else if ((u.rfind("BODY[", 0) == 0 ||
			    u.rfind("BODY.PEEK[", 0) == 0) &&
			   u.back() == ']') {
			section = u.substr(open + 1, u.size() - open - 2);
			if (section.empty())
				bytes = m.text;
			else if (section == "HEADER")
				bytes = m.text.substr(0, hend);
			else if (section == "TEXT")
				bytes = m.text.substr(hend);
			else
				return false;
			parts.push_back("BODY[" + section + "] {" +
					std::to_string(bytes.size()) + "}\r\n" +
					bytes);
			if (u[4] == '[' && rw)
				m.flags.insert("\\Seen");
		} else {
			return false;
		}
		return true;
	}

	std::string fetch_cmd(Session &ss, const ImapCmd &c, FakeBox &b,
			      bool uid)
	{
		const std::vector<std::string> &a = c.args;
		std::vector<std::string> items;
		std::string out;

		if (a.size() < 2)
			return bad(c, "FETCH set items");
		if (c.kinds[1] == '(')
			items = list_items(a[1]);
		else
			items.assign(a.begin() + 1, a.end());
		for (size_t i = 0; i < b.msgs.size(); i++) {
			std::vector<std::string> parts;
			bool uid_said = uid;
			if (!picked(c, b, i, uid))
				continue;
			// UID FETCH answers with the UID, asked or not
			if (uid)
				parts.push_back("UID " +
						std::to_string(b.msgs[i].uid));
			for (const auto &item : items) {
				if (upper(item) == "UID") {
					if (!uid_said)
						parts.push_back(
						    "UID " +
						    std::to_string(
							b.msgs[i].uid));
					uid_said = true;
				} else if (!fetch_item(b.msgs[i], item, ss.rw,
						       parts)) {
					return lacks(c, item);
				}
			}
			out += "* " + std::to_string(i + 1) + " FETCH (" +
			       join(parts, " ") + ")\r\n";
		}
		return out + ok(c, "done");
	}

	// STORE set [+-]FLAGS[.SILENT] (flags) / flag...
	std::string store_cmd(Session &ss, const ImapCmd &c, FakeBox &b,
			      bool uid)
	{
		const std::vector<std::string> &a = c.args;
		std::string out, op = a.size() > 1 ? upper(a[1]) : "";
		std::vector<std::string> names;
		std::set<std::string> fl;
		bool silent = op.size() > 7 &&
			      op.compare(op.size() - 7, 7, ".SILENT") == 0;

		if (silent)
			op.resize(op.size() - 7);
		if (a.size() < 3 ||
		    (op != "FLAGS" && op != "+FLAGS" && op != "-FLAGS"))
			return bad(c, "STORE set [+-]FLAGS[.SILENT] flags");
		if (!ss.rw)
			return no_read_only(c);
		if (c.kinds[2] == '(')
			names = list_items(a[2]);
		else
			names.assign(a.begin() + 2, a.end());
		for (const auto &f : names)
			fl.insert(canon_flag(f));
		for (size_t i = 0; i < b.msgs.size(); i++) {
			FakeMsg &m = b.msgs[i];
			if (!picked(c, b, i, uid))
				continue;
			if (op == "FLAGS")
				m.flags = fl;
			for (const auto &f : fl) {
				if (op == "+FLAGS")
					m.flags.insert(f);
				else if (op == "-FLAGS")
					m.flags.erase(f);
			}
			if (silent)
				continue;
			out += "* " + std::to_string(i + 1) + " FETCH (";
			if (uid)
				out += "UID " + std::to_string(m.uid) + " ";
			out += "FLAGS " + flag_list(m.flags) + ")\r\n";
		}
		return out + ok(c, "stored");
	}

	// COPY, UID COPY, UID MOVE set mailbox; COPYUID with UIDPLUS.
	std::string copy_cmd(const ImapCmd &c, FakeBox &b, bool uid)
	{
		std::vector<std::string> from, made;
		std::string out, code;

		if (c.args.size() < 2)
			return bad(c, "COPY set mailbox");
		auto dst = boxes.find(box_name(c.args[1]));
		if (dst == boxes.end())
			return c.tag + " NO [TRYCREATE] no such mailbox\r\n";
		FakeBox &to = dst->second;
		size_t count = b.msgs.size(); // b may be `to`
		for (size_t i = 0; i < count; i++) {
			if (!picked(c, b, i, uid))
				continue;
			FakeMsg m = b.msgs[i];
			from.push_back(std::to_string(m.uid));
			m.uid = to.uidnext++;
			made.push_back(std::to_string(m.uid));
			to.msgs.push_back(m);
		}
		if (has_cap("UIDPLUS") && !from.empty())
			code = "[COPYUID " + std::to_string(to.validity) + " " +
			       join(from, ",") + " " + join(made, ",") + "] ";
		if (c.name != "UID MOVE")
			return ok(c, code + "copied");
		for (size_t i = count; i-- > 0;) {
			if (!picked(c, b, i, uid))
				continue;
			out += "* " + std::to_string(i + 1) + " EXPUNGE\r\n";
			b.msgs.erase(b.msgs.begin() + (long)i);
		}
		return (code.empty() ? "" : "* OK " + code + "moved\r\n") +
		       out + ok(c, "moved");
	}

	// SEARCH [RETURN (ALL)] [CHARSET cs] keys: "* SEARCH", or
	// "* ESEARCH" when RETURN asks for it.
	std::string search_cmd(const ImapCmd &c, FakeBox &b, bool uid)
	{
		const std::vector<std::string> &a = c.args;
		std::vector<std::string> hits;
		std::string why, out;
		size_t i = 0;
		bool ret = !a.empty() && upper(a[0]) == "RETURN";

		if (ret)
			i += 2; // RETURN (ALL): the only one asked
		if (i < a.size() && upper(a[i]) == "CHARSET")
			i += 2;
		if (i >= a.size())
			return bad(c, "search keys?");
		std::vector<std::string> keys(a.begin() + (long)i, a.end());
		std::string kinds = c.kinds.substr(i);
		for (size_t s = 0; s < b.msgs.size(); s++) {
			bool all = true;
			for (size_t j = 0; j < keys.size() && why.empty();)
				all = search_key(keys, kinds, &j, b, s, why) &&
				      all;
			if (!why.empty())
				return lacks(c, why);
			if (all)
				hits.push_back(std::to_string(
				    uid ? b.msgs[s].uid : s + 1));
		}
		if (ret)
			out = "* ESEARCH (TAG \"" + c.tag + "\")" +
			      (uid ? " UID" : "") +
			      (hits.empty() ? "" : " ALL " + join(hits, ","));
		else
			out = "* SEARCH" +
			      (hits.empty() ? "" : " " + join(hits, " "));
		return out + "\r\n" + ok(c, "done");
	}
};

// A file holding s, at offset 0, open for reading and writing; unlinked,
// so that it goes with its fd.
int temp_fd(const std::string &s)
{
	char path[] = "/tmp/mfs-imap-test-XXXXXX";
	int fd = mkstemp(path);

	if (fd < 0)
		return -1;
	unlink(path);
	if (write(fd, s.data(), s.size()) != (ssize_t)s.size()) {
		close(fd);
		return -1;
	}
	return fd;
}

std::string fd_text(int fd)
{
	std::string out;
	char buf[4096];
	ssize_t r;

	while ((r = pread(fd, buf, sizeof(buf), (off_t)out.size())) > 0)
		out.append(buf, (size_t)r);
	return out;
}

// Frees a store at the end of a scope, also when an ASSERT ends the test
// early (the suite runs under ASan and valgrind). Declared after the
// server it talks to, so that its LOGOUT still finds the server.
struct StoreGuard {
	struct mfs_store *st;
	~StoreGuard()
	{
		if (st != NULL)
			st->ops->free(st);
	}
};

class ImapScripted : public ::testing::Test
{
      protected:
	struct mfs_account acct = {};
	struct mfs_err err = {};
	ScriptedImap srv;

	void TearDown() override
	{
		// whatever a test checks: mailfs used only what the server
		// advertised, and nothing the scripted server cannot answer
		// as a real one would
		EXPECT_EQ(srv.problems(), "");
	}

	// A store on the scripted server, which starts now.
	struct mfs_store *open()
	{
		return open_on(srv);
	}
	// ... on another one (the previous store must be gone: they share
	// acct).
	struct mfs_store *open_on(ScriptedImap &s)
	{
		acct.name = (char *)"scripted";
		acct.store.proto = MFS_PROTO_IMAP;
		acct.store.tls = MFS_TLS_NONE;
		acct.store.host = (char *)"127.0.0.1";
		acct.store.port = s.port;
		acct.user = (char *)"alice";
		acct.timeout = 5;
		s.start();
		return mfs_imap_store_new(&acct, "secret");
	}

	// UIDs found for query as "1 2", or "E<code>: message".
	std::string search(const char *query)
	{
		struct mfs_store *st = open();
		EXPECT_NE(st, nullptr);
		std::string out = search_in(st, "INBOX", query);
		st->ops->free(st);
		return out;
	}
	std::string search_in(struct mfs_store *st, const char *folder,
			      const char *query)
	{
		struct mfs_query *q = NULL;
		struct mfs_store_hits hits = {};
		std::string out;

		EXPECT_EQ(mfs_query_parse(query, &q, &err), MFS_OK);
		int rc = st->ops->search(st, &folder, 1, q, &hits, &err);
		if (rc != MFS_OK)
			out = "E" + std::to_string(rc) + ": " + err.msg;
		else if (hits.err.code != MFS_OK)
			out = "F" + std::to_string(hits.err.code) + ": " +
			      hits.err.msg;
		for (size_t i = 0; rc == MFS_OK && i < hits.n; i++)
			out += (i ? " " : "") + std::to_string(hits.uids[i]);
		mfs_store_hits_free(&hits, 1);
		mfs_query_free(q);
		return out;
	}

	// The driver's listing of folder, written as ScriptedImap::listing()
	// writes the server's: "uid" or "uid:\\Flag,..." each; "E<code>:
	// message" when it failed.
	std::string index(struct mfs_store *st, const char *folder,
			  uint32_t *validity = NULL)
	{
		struct mfs_store_msg *msgs = NULL;
		size_t n = 0;
		uint32_t v = 0;
		std::vector<std::string> out;

		int rc = st->ops->index(st, folder, &v, &msgs, &n, &err);
		if (rc != MFS_OK)
			return "E" + std::to_string(rc) + ": " + err.msg;
		for (size_t i = 0; i < n; i++) {
			std::set<std::string> names;
			for (int b = 0; b < MFS_NFLAGS; b++)
				if (msgs[i].flags & (1u << b))
					names.insert(mfs_flag_names[b]);
			out.push_back(std::to_string(msgs[i].uid) +
				      flag_text(names));
		}
		mfs_store_msgs_free(msgs, n);
		if (validity != NULL)
			*validity = v;
		return join(out, " ");
	}

	// APPEND text through the driver; its result.
	int append(struct mfs_store *st, const char *folder,
		   const std::string &text, unsigned flags = 0)
	{
		int fd = temp_fd(text);
		uint32_t v = 0, uid = 0;

		EXPECT_GE(fd, 0);
		int rc = st->ops->append(st, folder, fd, text.size(), 0, flags,
					 &v, &uid, &err);
		close(fd);
		return rc;
	}

	// The bytes of message uid as the driver fetches them, or
	// "E<code>: message".
	std::string fetch(struct mfs_store *st, const char *folder,
			  uint32_t validity, uint32_t uid, uint64_t size)
	{
		struct mfs_store_msg m = {};
		size_t len = 0;
		int fd = temp_fd("");
		std::string out;

		EXPECT_GE(fd, 0);
		m.uid = uid;
		m.size = size;
		int rc =
		    st->ops->fetch(st, folder, validity, &m, fd, &len, &err);
		out = rc != MFS_OK ? "E" + std::to_string(rc) + ": " + err.msg
				   : fd_text(fd);
		if (rc == MFS_OK) {
			EXPECT_EQ(len, out.size());
		}
		close(fd);
		return out;
	}

	unsigned store_flags(struct mfs_store *st, const char *folder,
			     uint32_t validity, uint32_t uid, char how,
			     const char *flag, int *rc)
	{
		unsigned now = 0;
		*rc = st->ops->store_flags(st, folder, validity, uid, how,
					   &flag, 1, &now, &err);
		return now;
	}

	void append_into_examined(const std::string &caps, bool any_mode);
	void stale_uids(const std::string &refusal);
	void append_refusals(const std::string &caps, bool early, bool parse);
	void nil_delimiter(const std::string &caps);
};

// A server without UTF-8 search that offers ISO-8859-1: the search is sent
// again in that charset; "* SEARCH" without ESEARCH.
TEST_F(ImapScripted, BadcharsetFallsBackToLatin1)
{
	srv.on("UID SEARCH", [](const ImapCmd &c) {
		if (c.line.find("CHARSET UTF-8") != std::string::npos)
			return c.tag + " NO [BADCHARSET (US-ASCII ISO-8859-1)] "
				       "no\r\n";
		return "* SEARCH 3 5\r\n" + c.tag + " OK done\r\n";
	});
	EXPECT_EQ(search("from:J\u00fcrgen"), "3 5");
	std::vector<std::string> s = srv.searches();
	ASSERT_EQ(s.size(), 2u);
	EXPECT_EQ(s[0], "UID SEARCH CHARSET UTF-8 FROM {7+}\r\nJ\u00fcrgen");
	EXPECT_EQ(s[1], "UID SEARCH CHARSET ISO-8859-1 FROM {6+}\r\nJ\xfc"
			"rgen");
}

// ... and one that offers nothing but US-ASCII: EINVAL, saying why.
TEST_F(ImapScripted, BadcharsetWithoutLatin1IsInval)
{
	srv.on("UID SEARCH", [](const ImapCmd &c) {
		return c.tag + " NO [BADCHARSET (US-ASCII)] no\r\n";
	});
	std::string r = search("subject:\u00fcber");
	EXPECT_EQ(r.substr(0, 3), "E" + std::to_string(MFS_E_INVAL) + ":") << r;
	EXPECT_NE(r.find("BADCHARSET"), std::string::npos) << r;
	EXPECT_EQ(srv.searches().size(), 1u);
}

// ASCII terms need no CHARSET; an ESEARCH answer with ranges is expanded.
TEST_F(ImapScripted, AsciiAndEsearchRanges)
{
	srv.on("UID SEARCH", [](const ImapCmd &c) {
		return "* ESEARCH (TAG \"" + c.tag +
		       "\") UID ALL 2:4,9,12:11\r\n" + c.tag + " OK done\r\n";
	});
	srv.caps += " ESEARCH";
	EXPECT_EQ(search("from:bob or -is:seen"), "2 3 4 9 11 12");
	std::vector<std::string> s = srv.searches();
	ASSERT_EQ(s.size(), 1u);
	EXPECT_EQ(s[0], "UID SEARCH RETURN (ALL) OR FROM \"bob\" NOT SEEN");
}

// A server that says its capabilities nowhere (no code in the greeting or
// the LOGIN reply, CAPABILITY answered with a bare OK) has none: libetpan's
// mailimap_capability() used to crash on it, with a NULL capability list.
TEST_F(ImapScripted, NoCapabilitiesAnywhereIsNone)
{
	srv.quiet = true;
	struct mfs_store *st = open();
	ASSERT_NE(st, nullptr);
	EXPECT_EQ(st->ops->connect(st, &err), MFS_OK) << err.msg;
	EXPECT_GE(srv.count("CAPABILITY"), 1u);
	EXPECT_EQ(srv.count("LOGIN"), 1u);
	st->ops->free(st);
}

// --- APPEND into the mailbox the connection has EXAMINEd ---------------------

// Courier refuses APPEND into the mailbox the connection has EXAMINEd
// ("NO Current box is selected READ-ONLY.", before the literal when it is
// a synchronizing one); with any_mode the server refuses it into the
// selected mailbox whether EXAMINE or SELECT chose it. mailfs leaves that
// mailbox and APPENDs again: the message arrives once, with its bytes.
// Leaving must never be a CLOSE of a SELECTed mailbox, which would
// expunge the messages another client marked \Deleted: the first message
// here is one.
void ImapScripted::append_into_examined(const std::string &caps, bool any_mode)
{
	SCOPED_TRACE("capabilities: " + caps +
		     (any_mode ? ", refused into the selected mailbox"
			       : ", refused into the EXAMINEd mailbox"));
	ScriptedImap s;
	s.caps = caps;
	s.add("INBOX", message(1), {"\\Deleted"});
	uint32_t mine = s.add("INBOX", message(2));
	s.on("APPEND", [any_mode](const ImapCmd &c) -> std::string {
		if (!c.args.empty() && c.args[0] == c.selected &&
		    (any_mode || !c.rw))
			return c.tag + " NO Current box is selected "
				       "READ-ONLY.\r\n";
		return "";
	});
	StoreGuard g{open_on(s)};
	struct mfs_store *st = g.st;
	ASSERT_NE(st, nullptr);

	// the listing EXAMINEs INBOX
	uint32_t v = 0;
	ASSERT_EQ(index(st, "INBOX", &v), "1:\\Deleted 2");
	EXPECT_EQ(append(st, "INBOX", message(3)), MFS_OK) << err.msg;
	std::vector<FakeMsg> m = s.msgs("INBOX");
	ASSERT_EQ(m.size(), 3u);
	EXPECT_EQ(m[2].text, message(3));

	// SELECTed read-write by a flag change: Courier takes the APPEND,
	// the stricter server does not; leaving with CLOSE would expunge
	// message 1
	int rc;
	store_flags(st, "INBOX", v, mine, '+', "\\Seen", &rc);
	ASSERT_EQ(rc, MFS_OK) << err.msg;
	EXPECT_EQ(append(st, "INBOX", message(4)), MFS_OK) << err.msg;
	m = s.msgs("INBOX");
	ASSERT_EQ(m.size(), 4u);
	EXPECT_EQ(m[3].text, message(4));

	// EXAMINEd again after the SELECT
	EXPECT_EQ(index(st, "INBOX"), "1:\\Deleted 2:\\Seen 3 4");
	EXPECT_EQ(append(st, "INBOX", message(5)), MFS_OK) << err.msg;
	m = s.msgs("INBOX");
	ASSERT_EQ(m.size(), 5u);
	EXPECT_EQ(m[4].text, message(5));

	EXPECT_EQ(s.listing("INBOX"), "1:\\Deleted 2:\\Seen 3 4 5");
	EXPECT_EQ(s.closes_of_selected(), 0u);
	EXPECT_EQ(s.count("EXPUNGE"), 0u);
	EXPECT_EQ(s.count("UID EXPUNGE"), 0u);
	// no UNSELECT where it is not advertised, among others
	EXPECT_EQ(s.problems(), "");
}

// With UNSELECT; with and without LITERAL+ (then the refusal comes
// instead of the "+" for the literal).
TEST_F(ImapScripted, AppendIntoExaminedWithUnselect)
{
	append_into_examined("IMAP4rev1 LITERAL+ UNSELECT UIDPLUS", false);
	append_into_examined("IMAP4rev1 UNSELECT", false);
}

// Without UNSELECT: CLOSE, which expunges nothing on an EXAMINEd mailbox.
TEST_F(ImapScripted, AppendIntoExaminedWithoutUnselect)
{
	append_into_examined("IMAP4rev1 LITERAL+ UIDPLUS", false);
	append_into_examined("IMAP4rev1", false);
}

// A server that refuses APPEND into the selected mailbox however it was
// selected: a SELECTed one is left too, and without UNSELECT not by a
// CLOSE that expunges.
TEST_F(ImapScripted, AppendIntoSelectedRefusedToo)
{
	append_into_examined("IMAP4rev1 LITERAL+ UNSELECT", true);
	append_into_examined("IMAP4rev1 LITERAL+", true);
	append_into_examined("IMAP4rev1", true);
}

// DELETE and RENAME leave the selected mailbox first (imap_leave); on a
// server without UNSELECT that must not be a CLOSE of a mailbox SELECTed
// read-write (by a flag change), which would expunge what another client
// marked \Deleted there.
TEST_F(ImapScripted, LeavingSelectedExpungesNothing)
{
	srv.caps = "IMAP4rev1 LITERAL+";
	uint32_t mine = srv.add("Work", message(1));
	srv.add("Work", message(2), {"\\Deleted"});
	srv.box("Old");
	srv.box("Gone");
	StoreGuard g{open()};
	struct mfs_store *st = g.st;
	ASSERT_NE(st, nullptr);

	uint32_t v = 0;
	int rc;
	ASSERT_EQ(index(st, "Work", &v), "1 2:\\Deleted");
	store_flags(st, "Work", v, mine, '+', "\\Seen", &rc);
	ASSERT_EQ(rc, MFS_OK) << err.msg;
	EXPECT_EQ(st->ops->rename(st, "Old", "New", &err), MFS_OK) << err.msg;
	EXPECT_EQ(srv.listing("Work"), "1:\\Seen 2:\\Deleted");
	EXPECT_EQ(srv.listing("New"), "");

	store_flags(st, "Work", v, mine, '+', "\\Flagged", &rc);
	ASSERT_EQ(rc, MFS_OK) << err.msg;
	EXPECT_EQ(st->ops->remove(st, "Gone", &err), MFS_OK) << err.msg;
	EXPECT_EQ(srv.listing("Work"), "1:\\Flagged,\\Seen 2:\\Deleted");
	EXPECT_EQ(srv.listing("Gone"), "none");
	EXPECT_EQ(srv.closes_of_selected(), 0u);
}

// --- UIDs changed under the client ------------------------------------------

// Mailutils renumbers a message when another session selects its folder,
// UIDVALIDITY staying the same; a UID command for the UID the listing
// showed is then answered with BAD ("Failed to parse message set") or a
// bare NO. The listing is stale: MFS_E_NOENT (the FUSE layer lists the
// folder again), never EINVAL, and nothing changes on the server.
void ImapScripted::stale_uids(const std::string &refusal)
{
	SCOPED_TRACE("refusal: " + refusal);
	ScriptedImap s;
	s.caps = "IMAP4rev1 LITERAL+ UIDPLUS";
	s.add("INBOX", message(1));
	s.add("INBOX", message(2));
	s.box("Dest");
	StoreGuard g{open_on(s)};
	struct mfs_store *st = g.st;
	ASSERT_NE(st, nullptr);

	uint32_t v = 0;
	ASSERT_EQ(index(st, "INBOX", &v), "1 2");
	s.renumber("INBOX");
	s.set_missing_uid(refusal);
	ASSERT_EQ(s.listing("INBOX"), "3 4");

	int rc;
	store_flags(st, "INBOX", v, 1, '+', "\\Flagged", &rc);
	EXPECT_EQ(rc, MFS_E_NOENT) << "UID STORE: " << err.msg;
	EXPECT_EQ(fetch(st, "INBOX", v, 2, message(2).size()).substr(0, 2),
		  "E" + std::to_string(MFS_E_NOENT))
	    << "UID FETCH";
	EXPECT_EQ(st->ops->move(st, "INBOX", v, 1, "Dest", &err), MFS_E_NOENT)
	    << "UID COPY: " << err.msg;
	EXPECT_EQ(st->ops->expunge(st, "INBOX", v, 2, &err), MFS_E_NOENT)
	    << "expunge: " << err.msg;
	// each of those was refused, not avoided
	EXPECT_GE(s.count("UID STORE"), 1u);
	EXPECT_GE(s.count("UID FETCH"), 1u);
	EXPECT_GE(s.count("UID COPY") + s.count("UID MOVE"), 1u);

	EXPECT_EQ(s.listing("INBOX"), "3 4");
	EXPECT_EQ(s.listing("Dest"), "");
	// and the next listing shows the new UIDs
	EXPECT_EQ(index(st, "INBOX"), "3 4");
	EXPECT_EQ(s.problems(), "");
}

TEST_F(ImapScripted, StaleUidBadIsNoent)
{
	stale_uids("BAD Failed to parse message set");
}

TEST_F(ImapScripted, StaleUidBareNoIsNoent)
{
	stale_uids("NO Failed");
}

// --- errors by meaning
// --------------------------------------------------------

// CREATE refused with an RFC 5530 response code: its meaning, and the
// server's words in err.msg.
TEST_F(ImapScripted, CreateRefusalsByMeaning)
{
	const struct {
		const char *code, *words;
		int want;
	} cases[] = {
	    {"[ALREADYEXISTS]", "Mailbox exists already", MFS_E_EXIST},
	    {"[NOPERM]", "You may not create mailboxes here", MFS_E_ACCESS},
	};
	StoreGuard g{open()};
	struct mfs_store *st = g.st;
	ASSERT_NE(st, nullptr);

	for (const auto &k : cases) {
		std::string reply = std::string("NO ") + k.code + " " + k.words;
		srv.on("CREATE", [reply](const ImapCmd &c) {
			return c.tag + " " + reply + "\r\n";
		});
		EXPECT_EQ(st->ops->create(st, "Receipts", &err), k.want)
		    << reply << ": " << err.msg;
		EXPECT_NE(strstr(err.msg, k.words), nullptr)
		    << reply << ": " << err.msg;
	}
	srv.on("CREATE", nullptr);
	EXPECT_EQ(st->ops->create(st, "Receipts", &err), MFS_OK) << err.msg;
	EXPECT_EQ(srv.listing("Receipts"), "");
}

// APPEND refused: by the response code's meaning, the server's words in
// err.msg; a NO without a code is EACCES, not EINVAL (the user's message
// is not known to be at fault). early: refused at the synchronizing
// literal, before the "+" (as Courier refuses); else after the literal.
// With parse, only [PARSE], which says the message itself is at fault:
// still EACCES, since EINVAL is never a server's NO (SPEC, "Writing on an
// IMAP mount"); the server's words say why.
void ImapScripted::append_refusals(const std::string &caps, bool early,
				   bool parse)
{
	SCOPED_TRACE("capabilities: " + caps +
		     (early ? ", refused before the literal"
			    : ", refused after the literal"));
	struct Refusal {
		const char *code, *words;
		int want;
	};
	const std::vector<Refusal> cases = {
	    {"[TRYCREATE]", "Mailbox does not exist", MFS_E_NOENT},
	    {"[OVERQUOTA]", "Quota exceeded (mailbox is full)", MFS_E_QUOTA},
	    {"[LIMIT]", "Message too large for this server", MFS_E_TOOBIG},
	    {"[NOPERM]", "No permission to append", MFS_E_ACCESS},
	    {"", "Cannot append now", MFS_E_ACCESS},
	};
	const std::vector<Refusal> parsing = {
	    {"[PARSE]", "Message has an invalid header", MFS_E_ACCESS},
	};
	ScriptedImap s;
	s.caps = caps;
	StoreGuard g{open_on(s)};
	struct mfs_store *st = g.st;
	ASSERT_NE(st, nullptr);

	for (const auto &k : parse ? parsing : cases) {
		std::string reply = std::string("NO ") + k.code +
				    (*k.code ? " " : "") + k.words;
		s.on("APPEND", [reply, early](const ImapCmd &c) -> std::string {
			if (c.partial && !early)
				return "";
			return c.tag + " " + reply + "\r\n";
		});
		EXPECT_EQ(append(st, "INBOX", message(1)), k.want)
		    << reply << ": " << err.msg;
		EXPECT_NE(strstr(err.msg, k.words), nullptr)
		    << reply << ": " << err.msg;
	}
	// the connection is still in order; nothing refused arrived
	s.on("APPEND", nullptr);
	EXPECT_EQ(append(st, "INBOX", message(2)), MFS_OK) << err.msg;
	std::vector<FakeMsg> m = s.msgs("INBOX");
	ASSERT_EQ(m.size(), 1u);
	EXPECT_EQ(m[0].text, message(2));
	EXPECT_EQ(s.problems(), "");
}

TEST_F(ImapScripted, AppendRefusalsByMeaning)
{
	append_refusals("IMAP4rev1 LITERAL+", false, false);
	append_refusals("IMAP4rev1", true, false);
	append_refusals("IMAP4rev1", false, false);
}

TEST_F(ImapScripted, AppendRefusedAsMalformedIsAccess)
{
	append_refusals("IMAP4rev1 LITERAL+", false, true);
	append_refusals("IMAP4rev1", true, true);
}

// --- namespaces
// ----------------------------------------------------------------

// The personal namespace as the store gives it: prefix and delimiter.
static void expect_personal(struct mfs_store *st, struct mfs_err *err,
			    const char *prefix, char delim)
{
	ASSERT_NE(st->ops->personal, nullptr);
	char *got = NULL, d = 'x';
	ASSERT_EQ(st->ops->personal(st, &got, &d, err), MFS_OK) << err->msg;
	ASSERT_NE(got, nullptr);
	EXPECT_STREQ(got, prefix);
	EXPECT_EQ(d, delim);
	free(got);
}

// The personal namespace "INBOX." (Cyrus, Courier): its folders are shown
// from the root without the prefix (shown = 6); INBOX, other users' and
// shared folders keep their names; so does a personal folder whose rest
// would be INBOX (in any case) or start with another namespace's prefix,
// so that every path shown names one folder.
TEST_F(ImapScripted, NamespacePrefixIsLeftOut)
{
	const struct {
		const char *name, *attrs;
		size_t shown;
	} want[] = {
	    {"INBOX", "", 0},
	    {"INBOX.Archive", "", 6},
	    {"INBOX.Sent", "\\Sent", 6},
	    {"Public.news", "", 0},
	    {"user.bob.Stuff", "", 0},
	    {"INBOX.Public.x", "", 0},
	    {"INBOX.user.y", "", 0},
	    {"INBOX.INBOX", "", 0},
	    {"INBOX.inbox", "", 0},
	};
	srv.caps = "IMAP4rev1 LITERAL+ NAMESPACE";
	srv.delim = '.';
	srv.ns = "* NAMESPACE ((\"INBOX.\" \".\")) ((\"user.\" \".\")) "
		 "((\"Public.\" \".\"))";
	for (const auto &w : want)
		srv.box(w.name, w.attrs);
	StoreGuard g{open()};
	struct mfs_store *st = g.st;
	ASSERT_NE(st, nullptr);

	struct mfs_store_folder *f = NULL;
	size_t n = 0;
	ASSERT_EQ(st->ops->list(st, &f, &n, &err), MFS_OK) << err.msg;
	EXPECT_EQ(n, sizeof(want) / sizeof(want[0]));
	for (const auto &w : want) {
		size_t found = 0;
		for (size_t i = 0; i < n; i++) {
			if (strcmp(f[i].name, w.name) != 0)
				continue;
			found++;
			EXPECT_EQ(f[i].shown, w.shown) << w.name;
			EXPECT_EQ(f[i].delim, '.') << w.name;
			EXPECT_EQ(f[i].sent, *w.attrs != '\0') << w.name;
		}
		EXPECT_EQ(found, 1u) << w.name;
	}
	mfs_store_folders_free(f, n);

	expect_personal(st, &err, "INBOX.", '.');
	EXPECT_GE(srv.count("NAMESPACE"), 1u);
}

// A server without NAMESPACE: no prefix, every folder shown as LIST names
// it, and NAMESPACE never sent (TearDown: nothing unadvertised).
TEST_F(ImapScripted, NoNamespaceNoPrefix)
{
	srv.box("Archive");
	srv.box("Archive/2026");
	StoreGuard g{open()};
	struct mfs_store *st = g.st;
	ASSERT_NE(st, nullptr);

	struct mfs_store_folder *f = NULL;
	size_t n = 0;
	ASSERT_EQ(st->ops->list(st, &f, &n, &err), MFS_OK) << err.msg;
	EXPECT_EQ(n, 3u);
	for (size_t i = 0; i < n; i++) {
		EXPECT_EQ(f[i].shown, 0u) << f[i].name;
		EXPECT_EQ(f[i].delim, '/') << f[i].name;
	}
	mfs_store_folders_free(f, n);

	expect_personal(st, &err, "", '/');
	EXPECT_EQ(srv.count("NAMESPACE"), 0u);
}

// ... and the personal namespace's delimiter is still known, from
// LIST "" "" (RFC 3501, 6.3.8).
TEST_F(ImapScripted, NoNamespaceDelimiterFromList)
{
	srv.caps = "IMAP4rev1 LITERAL+";
	srv.delim = '/';
	StoreGuard g{open()};
	struct mfs_store *st = g.st;
	ASSERT_NE(st, nullptr);

	expect_personal(st, &err, "", '/');
	EXPECT_EQ(srv.count("NAMESPACE"), 0u);
}

// A NIL hierarchy delimiter (a flat server): '\0', in LIST and in the
// personal namespace, with NAMESPACE (("" NIL)) and without NAMESPACE.
void ImapScripted::nil_delimiter(const std::string &caps)
{
	SCOPED_TRACE("capabilities: " + caps);
	ScriptedImap s;
	s.caps = caps;
	s.delim = '\0';
	s.box("Flat");
	StoreGuard g{open_on(s)};
	struct mfs_store *st = g.st;
	ASSERT_NE(st, nullptr);

	struct mfs_store_folder *f = NULL;
	size_t n = 0;
	ASSERT_EQ(st->ops->list(st, &f, &n, &err), MFS_OK) << err.msg;
	ASSERT_EQ(n, 2u);
	for (size_t i = 0; i < n; i++) {
		EXPECT_TRUE(strcmp(f[i].name, "Flat") == 0 ||
			    strcmp(f[i].name, "INBOX") == 0)
		    << f[i].name;
		EXPECT_EQ(f[i].delim, '\0') << f[i].name;
		EXPECT_EQ(f[i].shown, 0u) << f[i].name;
	}
	mfs_store_folders_free(f, n);

	expect_personal(st, &err, "", '\0');
	EXPECT_EQ(s.problems(), "");
}

TEST_F(ImapScripted, NilDelimiter)
{
	nil_delimiter("IMAP4rev1 LITERAL+ NAMESPACE");
	nil_delimiter("IMAP4rev1 LITERAL+");
}

// --- a server with IMAP4rev1 alone
// --------------------------------------------

// A server that offers nothing but IMAP4rev1 (GNU Mailutils, older ones)
// answers BAD to every extension: IDLE, MOVE, UID EXPUNGE, NAMESPACE,
// ENABLE, UNSELECT, ESEARCH's RETURN, CONDSTORE, non-synchronizing
// literals. Every op still works, with the base protocol alone. Without
// UIDPLUS, removing a message is UID STORE \Deleted and EXPUNGE; a message
// another client marked \Deleted is not expunged with it, and keeps its
// \Deleted.
TEST_F(ImapScripted, OnlyImap4rev1)
{
	srv.caps = "IMAP4rev1";
	uint32_t mine = srv.add("INBOX", message(1));
	uint32_t theirs = srv.add("INBOX", message(2), {"\\Deleted"});
	uint32_t seen = srv.add("INBOX", message(3), {"\\Seen"});
	std::string juergen =
	    mail("J\u00fcrgen <j@example.test>", "moving",
		 "Mon, 16 Nov 2026 09:30:00 +0000", "to the archive");
	uint32_t moving = srv.add("INBOX", juergen);
	srv.box("Archive");
	StoreGuard g{open()};
	struct mfs_store *st = g.st;
	ASSERT_NE(st, nullptr);

	struct mfs_store_folder *f = NULL;
	size_t n = 0;
	ASSERT_EQ(st->ops->list(st, &f, &n, &err), MFS_OK) << err.msg;
	EXPECT_EQ(n, 2u);
	mfs_store_folders_free(f, n);

	uint32_t v = 0;
	ASSERT_EQ(index(st, "INBOX", &v), "1 2:\\Deleted 3:\\Seen 4");
	EXPECT_EQ(v, 7u);
	EXPECT_EQ(fetch(st, "INBOX", v, seen, message(3).size()), message(3));

	// APPEND with a synchronizing literal
	EXPECT_EQ(append(st, "INBOX", message(5), MFS_FLAG_FLAGGED), MFS_OK)
	    << err.msg;
	EXPECT_EQ(srv.listing("INBOX"), "1 2:\\Deleted 3:\\Seen 4 5:\\Flagged");
	EXPECT_EQ(srv.msgs("INBOX").back().text, message(5));

	int rc;
	unsigned now =
	    store_flags(st, "INBOX", v, mine, '+', "\\Answered", &rc);
	EXPECT_EQ(rc, MFS_OK) << err.msg;
	EXPECT_EQ(now, (unsigned)MFS_FLAG_ANSWERED);

	// "* SEARCH", and a literal that waits for "+"
	EXPECT_EQ(search_in(st, "INBOX", "is:seen"), std::to_string(seen));
	EXPECT_EQ(search_in(st, "INBOX", "from:J\u00fcrgen"),
		  std::to_string(moving));

	// another client's \Deleted on message 2 stays, and so does it
	ASSERT_EQ(st->ops->expunge(st, "INBOX", v, mine, &err), MFS_OK)
	    << err.msg;
	EXPECT_EQ(srv.listing("INBOX"), "2:\\Deleted 3:\\Seen 4 5:\\Flagged");

	// a move is UID COPY and the same removal
	ASSERT_EQ(st->ops->move(st, "INBOX", v, moving, "Archive", &err),
		  MFS_OK)
	    << err.msg;
	EXPECT_EQ(srv.listing("INBOX"), "2:\\Deleted 3:\\Seen 5:\\Flagged");
	std::vector<FakeMsg> a = srv.msgs("Archive");
	ASSERT_EQ(a.size(), 1u);
	EXPECT_EQ(a[0].text, juergen);
	EXPECT_EQ(flag_text(a[0].flags), ""); // copied before its \Deleted

	// with no other \Deleted message: a plain EXPUNGE
	srv.set_flags("INBOX", theirs, {});
	ASSERT_EQ(st->ops->expunge(st, "INBOX", v, seen, &err), MFS_OK)
	    << err.msg;
	EXPECT_EQ(srv.listing("INBOX"), "2 5:\\Flagged");

	// without IDLE the watch polls
	int p[2];
	ASSERT_EQ(pipe(p), 0);
	int changed = 0;
	EXPECT_EQ(st->ops->watch(st, "INBOX", p[0], 1, &changed, &err), MFS_OK)
	    << err.msg;
	EXPECT_EQ(changed, 1);
	close(p[0]);
	close(p[1]);

	for (const auto &c : srv.all()) {
		std::string u = upper(c);
		for (const char *ext :
		     {"IDLE", "MOVE", "UID MOVE", "UID EXPUNGE", "NAMESPACE",
		      "ENABLE", "UNSELECT", "ID ", "COMPRESS"})
			EXPECT_NE(u.rfind(ext, 0), 0u) << c;
		EXPECT_EQ(u.find("RETURN ("), std::string::npos) << c;
		EXPECT_EQ(u.find("+}"), std::string::npos) << c;
		EXPECT_EQ(u.find("CONDSTORE"), std::string::npos) << c;
		EXPECT_EQ(u.find("CHANGEDSINCE"), std::string::npos) << c;
	}
	EXPECT_GE(srv.count("EXPUNGE"), 2u);
	EXPECT_EQ(srv.closes_of_selected(), 0u);
}

} // namespace

// ---- fetch-ahead of large messages (skeleton_many) -------------------------

// A multipart message whose second part (base64, `big` bytes of data) is
// worth leaving out; its sections as IMAP numbers them, and its
// BODYSTRUCTURE.
struct LargeMsg {
	std::string text, bodystructure;
	std::map<std::string, std::string> sections;
	size_t hole_off = 0, hole_len = 0;

	LargeMsg(int k, size_t big)
	{
		std::string hdr = "From: a@example.test\r\nSubject: large " +
				  std::to_string(k) +
				  "\r\nMIME-Version: 1.0\r\nContent-Type: "
				  "multipart/mixed; boundary=\"b1\"\r\n\r\n";
		std::string m1 = "Content-Type: text/plain; "
				 "charset=us-ascii\r\n\r\n";
		std::string b1 = "hello " + std::to_string(k) + "\r\n";
		std::string m2 = "Content-Type: application/octet-stream; "
				 "name=\"a.bin\"\r\nContent-Transfer-Encoding: "
				 "base64\r\n\r\n";
		std::string b2;
		for (size_t i = 0; b2.size() < big; i++)
			b2 += std::string(76, "ABCD"[(i + k) % 4]) + "\r\n";
		text = hdr + "--b1\r\n" + m1 + b1 + "\r\n--b1\r\n" + m2;
		hole_off = text.size();
		hole_len = b2.size();
		text += b2 + "\r\n--b1--\r\n";
		sections = {{"HEADER", hdr}, {"1.MIME", m1}, {"1", b1},
			    {"2.MIME", m2}, {"2", b2}};
		bodystructure =
		    "((\"TEXT\" \"PLAIN\" (\"CHARSET\" \"us-ascii\") NIL NIL "
		    "\"7BIT\" " +
		    std::to_string(b1.size()) +
		    " 1 NIL NIL NIL NIL)(\"APPLICATION\" \"OCTET-STREAM\" "
		    "(\"NAME\" \"a.bin\") NIL NIL \"BASE64\" " +
		    std::to_string(b2.size()) +
		    " NIL NIL NIL NIL) \"MIXED\" (\"BOUNDARY\" \"b1\") NIL NIL "
		    "NIL)";
	}
	// The skeleton it should give: the message with the hole zeros.
	std::string skeleton() const
	{
		std::string s = text;
		std::fill(s.begin() + (long)hole_off,
			  s.begin() + (long)(hole_off + hole_len), '\0');
		return s;
	}
};

// What skeleton_many delivered.
struct ManyGot {
	std::map<uint32_t, std::string> whole, skel;
	std::map<uint32_t, std::vector<struct mfs_seg>> segs;
	int opened = 0, closed = 0;

	static int open_fn(void *ctx)
	{
		((ManyGot *)ctx)->opened++;
		return temp_fd("");
	}
	static void done_fn(void *ctx, uint32_t uid, int fd, size_t len)
	{
		ManyGot *g = (ManyGot *)ctx;
		g->whole[uid] = fd_text(fd);
		EXPECT_EQ(len, g->whole[uid].size());
		close(fd);
		g->closed++;
	}
	static int skel_open(void *ctx)
	{
		(void)ctx; // closed by the driver when not delivered
		return memfd_create("skeleton-test", MFD_CLOEXEC);
	}
	static void skel_done(void *ctx, uint32_t uid, int fd,
			      struct mfs_seg *segs, size_t nsegs)
	{
		ManyGot *g = (ManyGot *)ctx;
		g->skel[uid] = fd_text(fd);
		for (size_t i = 0; i < nsegs; i++) {
			g->segs[uid].push_back(segs[i]);
			g->segs[uid].back().section =
			    segs[i].section ? strdup(segs[i].section) : NULL;
		}
		mfs_store_segs_free(segs, nsegs);
		close(fd);
	}
	~ManyGot()
	{
		for (auto &kv : segs)
			for (auto &g : kv.second)
				free(g.section);
	}
};

// Answers UID FETCH of BODYSTRUCTURE and of sections for the large
// messages (by UID) from their LargeMsg; the rest is left to the server.
// `broken`: what to answer to the sections of that UID instead.
static ScriptedImap::Handler
large_handler(ScriptedImap &srv, const std::map<uint32_t, LargeMsg> &large,
	      uint32_t broken_uid = 0, const std::string &broken = "")
{
	return [&srv, large, broken_uid, broken](const ImapCmd &c) {
		std::string line = upper(c.line), out;
		std::vector<uint32_t> uids;
		if (line.find("BODYSTRUCTURE") == std::string::npos &&
		    line.find("PEEK[HEADER]") == std::string::npos)
			return std::string();
		// UID FETCH set (...): the set as "a,b,c" or "a:b"
		std::istringstream in(c.line);
		std::string w1, w2, set;
		in >> w1 >> w2 >> set;
		std::istringstream ss(set);
		std::string part;
		while (std::getline(ss, part, ',')) {
			size_t colon = part.find(':');
			uint32_t lo = (uint32_t)std::stoul(part.substr(0, colon));
			uint32_t hi = colon == std::string::npos
					  ? lo
					  : (uint32_t)std::stoul(
						part.substr(colon + 1));
			for (uint32_t u = lo; u <= hi; u++)
				uids.push_back(u);
		}
		for (uint32_t u : uids) {
			auto it = large.find(u);
			if (it == large.end())
				continue; // gone
			const LargeMsg &m = it->second;
			if (line.find("BODYSTRUCTURE") != std::string::npos) {
				out += "* " + std::to_string(u) + " FETCH (UID " +
				       std::to_string(u) + " BODYSTRUCTURE " +
				       m.bodystructure + ")\r\n";
				continue;
			}
			if (u == broken_uid && !broken.empty())
				return broken.find("BYE") != std::string::npos
					   ? broken
					   : broken + c.tag + " OK done\r\n";
			out += "* " + std::to_string(u) + " FETCH (UID " +
			       std::to_string(u);
			for (const char *sec : {"HEADER", "1.MIME", "1", "2.MIME"}) {
				std::string item = std::string("BODY.PEEK[") + sec +
						   "]";
				if (line.find(item) == std::string::npos)
					continue;
				const std::string &b = m.sections.at(sec);
				out += std::string(" BODY[") + sec + "] {" +
				       std::to_string(b.size()) + "}\r\n" + b;
			}
			out += ")\r\n";
		}
		(void)srv;
		return out + c.tag + " OK done\r\n";
	};
}

// Fetch-ahead of two large and three small messages: one burst for the
// structures and the small messages, one for all sections; the skeletons
// are the messages with their large part's body left as a hole of zeros.
TEST_F(ImapScripted, SkeletonManyTwoBursts)
{
	std::map<uint32_t, LargeMsg> large;
	std::vector<uint32_t> small, big;
	for (int k = 0; k < 5; k++) {
		if (k % 2 == 0) {
			LargeMsg m(k, 100000);
			uint32_t u = srv.add("INBOX", m.text);
			large.emplace(u, m);
			big.push_back(u);
		} else {
			small.push_back(srv.add(
			    "INBOX", "Subject: small " + std::to_string(k) +
					 "\r\n\r\nbody " + std::to_string(k) +
					 "\r\n"));
		}
	}
	srv.on("UID FETCH", large_handler(srv, large));
	struct mfs_store *st = open();
	StoreGuard guard{st};
	ASSERT_EQ(index(st, "INBOX"), "1 2 3 4 5");
	size_t before = srv.bursts;
	ManyGot got;
	struct mfs_many_cb cb = {ManyGot::open_fn, ManyGot::done_fn,
				 ManyGot::skel_open, ManyGot::skel_done, &got,
				 nullptr};
	ASSERT_EQ(st->ops->skeleton_many(st, "INBOX", 7, big.data(), big.size(),
					 64 * 1024, small.data(), small.size(),
					 NULL, 0, &cb, &err),
		  MFS_OK)
	    << err.msg;
	// a burst that comes before the server waits for it is not counted:
	// at most two, whatever the number of messages
	size_t bursts = srv.bursts - before;
	EXPECT_LE(bursts, 2u) << "two bursts whatever the number of messages";
	auto msgs = srv.msgs("INBOX");
	for (uint32_t u : small)
		EXPECT_EQ(got.whole[u], msgs[u - 1].text) << u;
	for (uint32_t u : big) {
		const LargeMsg &m = large.at(u);
		EXPECT_EQ(got.whole.count(u), 0u);
		ASSERT_EQ(got.skel[u].size(), m.text.size()) << u;
		EXPECT_TRUE(got.skel[u] == m.skeleton()) << u;
		bool hole = false;
		for (const auto &g : got.segs[u])
			if (g.hole) {
				hole = true;
				EXPECT_EQ(g.off, m.hole_off);
				EXPECT_EQ(g.len, m.hole_len);
				EXPECT_STREQ(g.section, "2");
			}
		EXPECT_TRUE(hole) << u;
	}
	EXPECT_EQ(got.opened, got.closed);
	auto cmds = srv.all();
	std::vector<std::string> fetches;
	for (const auto &c : cmds)
		if (c.rfind("UID FETCH", 0) == 0)
			fetches.push_back(c);
	ASSERT_EQ(fetches.size(), 5u);
	EXPECT_EQ(fetches[0], "UID FETCH 1,3,5 (UID BODYSTRUCTURE)");
	EXPECT_EQ(fetches[1], "UID FETCH 2,4 (UID BODY.PEEK[])");
	EXPECT_EQ(fetches[2], "UID FETCH 1 (UID BODY.PEEK[HEADER] "
			      "BODY.PEEK[1.MIME] BODY.PEEK[1] BODY.PEEK[2.MIME])");
	EXPECT_EQ(fetches[3].substr(0, 12), "UID FETCH 3 ");
	EXPECT_EQ(fetches[4].substr(0, 12), "UID FETCH 5 ");
	// the next op on this connection still works
	EXPECT_EQ(fetch(st, "INBOX", 7, small[0], 0), msgs[small[0] - 1].text);
}

// A section that is not a header block: that skeleton is not delivered,
// the others are, and the op succeeds.
TEST_F(ImapScripted, SkeletonManyBadSectionsSkipsThatOne)
{
	std::map<uint32_t, LargeMsg> large;
	std::vector<uint32_t> big;
	for (int k = 0; k < 3; k++) {
		LargeMsg m(k, 90000);
		uint32_t u = srv.add("INBOX", m.text);
		large.emplace(u, m);
		big.push_back(u);
	}
	srv.on("UID FETCH",
	       large_handler(srv, large, 2,
			     "* 2 FETCH (UID 2 BODY[HEADER] {6}\r\nFrom: "
			     "BODY[1.MIME] {2}\r\n\r\n BODY[1] {1}\r\nx "
			     "BODY[2.MIME] {2}\r\n\r\n)\r\n"));
	struct mfs_store *st = open();
	StoreGuard guard{st};
	ASSERT_EQ(index(st, "INBOX"), "1 2 3");
	ManyGot got;
	struct mfs_many_cb cb = {ManyGot::open_fn, ManyGot::done_fn,
				 ManyGot::skel_open, ManyGot::skel_done, &got,
				 nullptr};
	int rc = st->ops->skeleton_many(st, "INBOX", 7, big.data(), big.size(),
					64 * 1024, NULL, 0, NULL, 0, &cb, &err);
	EXPECT_EQ(rc, MFS_OK) << err.msg;
	EXPECT_EQ(got.skel.count(2), 0u);
	ASSERT_EQ(got.skel.count(1), 1u);
	ASSERT_EQ(got.skel.count(3), 1u);
	EXPECT_TRUE(got.skel[1] == large.at(1).skeleton());
	EXPECT_TRUE(got.skel[3] == large.at(3).skeleton());
	EXPECT_EQ(got.opened, got.closed);
}

// The server says BYE in the middle of the second burst: a clean error,
// the connection is dropped, and the next op connects again.
TEST_F(ImapScripted, SkeletonManyByeMidBurst)
{
	std::map<uint32_t, LargeMsg> large;
	std::vector<uint32_t> big;
	for (int k = 0; k < 3; k++) {
		LargeMsg m(k, 90000);
		uint32_t u = srv.add("INBOX", m.text);
		large.emplace(u, m);
		big.push_back(u);
	}
	uint32_t small = srv.add("INBOX", "Subject: s\r\n\r\nsmall\r\n");
	srv.on("UID FETCH",
	       large_handler(srv, large, 2, "* BYE going away\r\n"));
	struct mfs_store *st = open();
	StoreGuard guard{st};
	ASSERT_EQ(index(st, "INBOX"), "1 2 3 4");
	ManyGot got;
	struct mfs_many_cb cb = {ManyGot::open_fn, ManyGot::done_fn,
				 ManyGot::skel_open, ManyGot::skel_done, &got,
				 nullptr};
	int rc = st->ops->skeleton_many(st, "INBOX", 7, big.data(), big.size(),
					64 * 1024, &small, 1, NULL, 0, &cb, &err);
	EXPECT_NE(rc, MFS_OK);
	EXPECT_EQ(got.skel.count(2), 0u);
	EXPECT_EQ(got.opened, got.closed);
	for (const auto &kv : got.skel)
		EXPECT_TRUE(kv.second == large.at(kv.first).skeleton());
	if (got.whole.count(small)) {
		EXPECT_EQ(got.whole[small], "Subject: s\r\n\r\nsmall\r\n");
	}
	srv.on("UID FETCH", nullptr);
	EXPECT_EQ(fetch(st, "INBOX", 7, small, 0), "Subject: s\r\n\r\nsmall\r\n");
}

// The structures of `later` messages come with one call; the next call
// for them sends their sections in its first burst, ahead of the whole
// messages, and no BODYSTRUCTURE: one burst.
TEST_F(ImapScripted, SkeletonManyLaterPlansSaveARoundTrip)
{
	std::map<uint32_t, LargeMsg> large;
	std::vector<uint32_t> first, second;
	for (int k = 0; k < 4; k++) {
		LargeMsg m(k, 80000);
		uint32_t u = srv.add("INBOX", m.text);
		large.emplace(u, m);
		(k < 2 ? first : second).push_back(u);
	}
	uint32_t small = srv.add("INBOX", "Subject: s\r\n\r\nsmall\r\n");
	srv.on("UID FETCH", large_handler(srv, large));
	struct mfs_store *st = open();
	StoreGuard guard{st};
	ASSERT_EQ(index(st, "INBOX"), "1 2 3 4 5");
	ManyGot got;
	struct mfs_many_cb cb = {ManyGot::open_fn, ManyGot::done_fn,
				 ManyGot::skel_open, ManyGot::skel_done, &got,
				 nullptr};
	ASSERT_EQ(st->ops->skeleton_many(st, "INBOX", 7, first.data(),
					 first.size(), 64 * 1024, NULL, 0,
					 second.data(), second.size(), &cb,
					 &err),
		  MFS_OK)
	    << err.msg;
	EXPECT_EQ(got.skel.size(), 2u);
	size_t cmds = srv.all().size(), before = srv.bursts;
	ASSERT_EQ(st->ops->skeleton_many(st, "INBOX", 7, second.data(),
					 second.size(), 64 * 1024, &small, 1,
					 NULL, 0, &cb, &err),
		  MFS_OK)
	    << err.msg;
	EXPECT_LE(srv.bursts - before, 1u) << "one burst";
	auto all = srv.all();
	std::vector<std::string> after(all.begin() + (long)cmds, all.end());
	// the sections before the whole messages: a reader in UID order
	// that comes to message 3 does not wait for the whole of message 5
	ASSERT_EQ(after.size(), 3u);
	EXPECT_EQ(after[0].substr(0, 12), "UID FETCH 3 ");
	EXPECT_EQ(after[1].substr(0, 12), "UID FETCH 4 ");
	EXPECT_EQ(after[2], "UID FETCH 5 (UID BODY.PEEK[])");
	for (uint32_t u : first)
		EXPECT_TRUE(got.skel[u] == large.at(u).skeleton()) << u;
	for (uint32_t u : second)
		EXPECT_TRUE(got.skel[u] == large.at(u).skeleton()) << u;
	EXPECT_EQ(got.whole[small], "Subject: s\r\n\r\nsmall\r\n");
	// the first call asked for the structures of all four at once
	size_t structs = 0;
	for (const auto &c : all)
		if (c.find("BODYSTRUCTURE") != std::string::npos) {
			structs++;
			EXPECT_EQ(c, "UID FETCH 1:4 (UID BODYSTRUCTURE)");
		}
	EXPECT_EQ(structs, 1u);
}

// The next batch, asked for while a call's replies still come (cb.more),
// goes out on the same call: its messages are delivered before the call
// returns, its large messages' sections (their structures came with the
// first batch, as `later`) before its whole messages, and nothing is
// asked for twice.
struct MoreGot : ManyGot {
	std::vector<uint32_t> big2, small2;
	int asked = 0, given = 0, at = 4; // given at the at-th ask

	static int more(void *ctx, struct mfs_many_more *nx)
	{
		MoreGot *g = (MoreGot *)ctx;
		if (++g->asked < g->at || g->given)
			return 0;
		g->given = 1;
		nx->uids = (uint32_t *)calloc(g->big2.size(), sizeof(uint32_t));
		nx->whole =
		    (uint32_t *)calloc(g->small2.size(), sizeof(uint32_t));
		for (uint32_t u : g->big2)
			nx->uids[nx->n++] = u;
		for (uint32_t u : g->small2)
			nx->whole[nx->nwhole++] = u;
		return 1;
	}
};

// Eight messages, every other one large: the first four are a call's
// batch, the last four the batch its cb.more gives at the at-th ask.
// run() makes the call and checks that every message came, byte-exact,
// and that the connection still works; the call's commands are
// srv.all()[cmds, cmds_end).
class ImapScriptedMore : public ImapScripted
{
      protected:
	std::map<uint32_t, LargeMsg> large;
	std::vector<uint32_t> big1, small1;
	MoreGot got;
	size_t cmds = 0, cmds_end = 0;

	void run(int at)
	{
		got.at = at;
		for (int k = 0; k < 8; k++) {
			if (k % 2 == 0) {
				LargeMsg m(k, 80000);
				uint32_t u = srv.add("INBOX", m.text);
				large.emplace(u, m);
				(k < 4 ? big1 : got.big2).push_back(u);
			} else {
				uint32_t u = srv.add(
				    "INBOX", "Subject: s" + std::to_string(k) +
						 "\r\n\r\nsmall " +
						 std::to_string(k) + "\r\n");
				(k < 4 ? small1 : got.small2).push_back(u);
			}
		}
		srv.on("UID FETCH", large_handler(srv, large));
		struct mfs_store *st = open();
		StoreGuard guard{st};
		ASSERT_EQ(index(st, "INBOX"), "1 2 3 4 5 6 7 8");
		cmds = srv.all().size();
		struct mfs_many_cb cb = {ManyGot::open_fn,   ManyGot::done_fn,
					 ManyGot::skel_open, ManyGot::skel_done,
					 &got,		     MoreGot::more};
		ASSERT_EQ(st->ops->skeleton_many(
			      st, "INBOX", 7, big1.data(), big1.size(),
			      64 * 1024, small1.data(), small1.size(),
			      got.big2.data(), got.big2.size(), &cb, &err),
			  MFS_OK)
		    << err.msg;
		cmds_end = srv.all().size();
		EXPECT_EQ(got.given, 1);
		auto msgs = srv.msgs("INBOX");
		for (auto *v : {&small1, &got.small2})
			for (uint32_t u : *v)
				EXPECT_EQ(got.whole[u], msgs[u - 1].text) << u;
		for (auto *v : {&big1, &got.big2})
			for (uint32_t u : *v) {
				ASSERT_EQ(got.skel.count(u), 1u) << u;
				EXPECT_TRUE(got.skel[u] ==
					    large.at(u).skeleton())
				    << u;
			}
		EXPECT_EQ(got.opened, got.closed);
		// the next op on this connection still works
		EXPECT_EQ(fetch(st, "INBOX", 7, small1[0], 0),
			  msgs[small1[0] - 1].text);
	}
};

// The same, with the next batch asked for at once, before the structures
// of its large messages (asked for by the first batch) have come: they
// are not asked for again, and every message comes.
TEST_F(ImapScriptedMore, SkeletonManyMoreBeforeItsStructures)
{
	run(1);
	if (HasFatalFailure())
		return;
	auto all = srv.all();
	size_t structs = 0;
	for (size_t i = cmds; i < cmds_end; i++)
		structs += all[i].find("BODYSTRUCTURE") != std::string::npos;
	EXPECT_EQ(structs, 1u) << "each structure asked for once";
	EXPECT_EQ(cmds_end - cmds, 7u);
}

// once the first batch's four structures are in, as a reader a quarter
// into it would ask
TEST_F(ImapScriptedMore, SkeletonManyMoreCarriesTheNextBatch)
{
	run(4);
	if (HasFatalFailure())
		return;
	EXPECT_GE(got.asked, 4) << "asked after each response";
	auto all = srv.all();
	std::vector<std::string> after(all.begin() + (long)cmds,
				       all.begin() + (long)cmds_end);
	// first batch: structures (1, 3 and, ahead, 5, 7), whole 2, 4,
	// sections of 1 and 3; the second: sections of 5 and 7 (their
	// structures are known), then whole 6, 8; nothing twice
	std::vector<std::string> want = {
	    "UID FETCH 1,3,5,7 (UID BODYSTRUCTURE)",
	    "UID FETCH 2,4 (UID BODY.PEEK[])"};
	ASSERT_EQ(after.size(), 7u) << "nothing asked for twice";
	EXPECT_EQ(after[0], want[0]);
	EXPECT_EQ(after[1], want[1]);
	std::vector<std::string> rest(after.begin() + 2, after.end());
	auto pos = [&](const std::string &prefix) {
		for (size_t i = 0; i < rest.size(); i++)
			if (rest[i].rfind(prefix, 0) == 0)
				return (long)i;
		return -1L;
	};
	EXPECT_GE(pos("UID FETCH 5 ("), 0);
	EXPECT_GE(pos("UID FETCH 7 ("), 0);
	EXPECT_LT(pos("UID FETCH 5 ("), pos("UID FETCH 6,8 (UID BODY.PEEK[])"));
	EXPECT_LT(pos("UID FETCH 7 ("), pos("UID FETCH 6,8 (UID BODY.PEEK[])"));
}

// A listing whose reply mixes what the listing's own reader takes with
// what only libetpan reads (an item the reader does not know, an
// unsolicited EXISTS), strings sent as literals among them: every entry
// is there, whoever read it, with its subject and sender. third_subject is
// how message 3, the one with the unknown item, sends its subject.
static std::string mixed_listing(const ImapCmd &c,
				 const std::string &third_subject)
{
	auto env = [](const std::string &subj, const std::string &from) {
		return "ENVELOPE (\"Mon, 1 Dec 2025 10:00:00 +0000\" " + subj +
		       " ((" + from +
		       " NIL \"x\" \"y.org\")) NIL NIL NIL NIL NIL NIL NIL)";
	};
	return "* 1 FETCH (UID 1 FLAGS (\\Seen) RFC822.SIZE 10 " +
	       env("\"one\"", "\"Ann\"") + ")\r\n" +
	       "* 2 FETCH (UID 2 FLAGS () RFC822.SIZE 20 " +
	       env("{4}\r\ntw\xc3\xb6", "NIL") + ")\r\n" +
	       "* 3 FETCH (UID 3 FLAGS () BODY (\"TEXT\" \"PLAIN\" NIL NIL "
	       "NIL \"7BIT\" 3 1) RFC822.SIZE 30 " +
	       env(third_subject, "\"Bo\"") + ")\r\n" + "* 6 EXISTS\r\n" +
	       "* 4 FETCH (UID 4 FLAGS (\\Flagged) RFC822.SIZE 40 " +
	       env("\"four\"", "\"Cy\"") + ")\r\n" +
	       "* 5 FETCH (UID 5 FLAGS () RFC822.SIZE 50 " +
	       env("{4}\r\nfive", "\"Di\"") + ")\r\n" + c.tag +
	       " OK done\r\n";
}

static void expect_mixed(struct mfs_store *st, struct mfs_err *err)
{
	struct mfs_store_msg *msgs = NULL;
	size_t n = 0;
	uint32_t v = 0;
	ASSERT_EQ(st->ops->index(st, "INBOX", &v, &msgs, &n, err), MFS_OK)
	    << err->msg;
	ASSERT_EQ(n, 5u);
	const char *subjects[] = {"one", "tw\xc3\xb6", "three", "four",
				  "five"};
	const char *froms[] = {"Ann", "x@y.org", "Bo", "Cy", "Di"};
	for (size_t i = 0; i < n; i++) {
		EXPECT_EQ(msgs[i].uid, i + 1);
		EXPECT_EQ(msgs[i].size, 10 * (i + 1));
		EXPECT_STREQ(msgs[i].subject, subjects[i]);
		EXPECT_STREQ(msgs[i].from, froms[i]);
		EXPECT_EQ(msgs[i].date, (time_t)1764583200);
	}
	EXPECT_EQ(msgs[0].flags, (unsigned)MFS_FLAG_SEEN);
	EXPECT_EQ(msgs[3].flags, (unsigned)MFS_FLAG_FLAGGED);
	mfs_store_msgs_free(msgs, n);
}

// Lists INBOX twice from a server of five messages whose listing is
// mixed_listing() with message 3's subject sent as third_subject; after
// each listing the server has seen first, then second FETCH commands.
class ImapMixed : public ImapScripted
{
      protected:
	void list_twice(const std::string &third_subject, size_t first,
			size_t second)
	{
		for (int k = 1; k <= 5; k++)
			srv.add("INBOX", message(k));
		srv.on("FETCH", [third_subject](const ImapCmd &c) {
			return mixed_listing(c, third_subject);
		});
		struct mfs_store *st = open();
		StoreGuard guard{st};
		expect_mixed(st, &err);
		EXPECT_EQ(srv.count("FETCH"), first);
		expect_mixed(st, &err);
		EXPECT_EQ(srv.count("FETCH"), second);
	}
};

// The response the reader leaves is one line: libetpan reads it and the
// rest of the reply, on the same connection; the reader is still in use
// the second time.
TEST_F(ImapMixed, ListingOfMixedShapes)
{
	list_twice("\"three\"", 1u, 2u);
}

// It spans lines (a literal), read ahead past what libetpan would read
// itself: the listing is made again, by libetpan alone, and stays so.
TEST_F(ImapMixed, ListingOfMixedShapesWithLiteral)
{
	list_twice("{5}\r\nthree", 2u, 3u);
}
