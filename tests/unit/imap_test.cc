// imap_test.cc - the IMAP driver's writes against a real Dovecot.
//
// Each fixture starts its own servers with tests/servers/mailservers.sh
// (run from the top of the repository, as root) and checks every result
// with an independent client: Python's imaplib, run as /usr/bin/python3.
// Without the servers the tests are skipped, not passed. ImapScripted
// talks to a small scripted server instead, for replies Dovecot never
// gives (a search refused with BADCHARSET).
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <functional>
#include <map>
#include <mutex>
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

// Neither MOVE nor UIDPLUS: moves and deletes are refused.
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

TEST_F(ImapNoUidplus, MoveAndExpungeRefused)
{
	create("Plain");
	create("Plain2");
	append("Plain", message(80));
	std::string uid = srv->check("uids Plain");
	ASSERT_FALSE(uid.empty());
	uint32_t val = validity_of("Plain");
	EXPECT_EQ(st->ops->move(st, "Plain", val, std::stoul(uid), "Plain2",
				&err),
		  MFS_E_ACCESS);
	EXPECT_NE(std::string(err.msg).find("UIDPLUS"), std::string::npos);
	EXPECT_EQ(st->ops->expunge(st, "Plain", val, std::stoul(uid), &err),
		  MFS_E_ACCESS);
	EXPECT_EQ(srv->check("uids Plain"), uid);
	EXPECT_EQ(srv->check("flags Plain " + uid), "");
	EXPECT_EQ(srv->check("uids Plain2"), "");
}

// ---- a scripted server for what Dovecot never says ------------------------

// A plaintext IMAP server on 127.0.0.1 for one connection: OK to every
// command but UID SEARCH, which is answered by `search` (given the
// command with its literals, and the tag); it records every command.
struct ScriptedImap {
	int lfd, port = 0;
	std::thread th;
	std::mutex mu;
	std::vector<std::string> commands;
	std::function<std::string(const std::string &, const std::string &)>
	    search;
	std::string caps = "IMAP4rev1 LITERAL+";
	// capabilities said nowhere: not in the greeting, not after LOGIN,
	// and CAPABILITY answered with a bare OK
	bool quiet = false;

	ScriptedImap()
	{
		struct sockaddr_in sa = {};
		socklen_t len = sizeof(sa);

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
		th = std::thread([this] { run(); });
	}
	~ScriptedImap()
	{
		shutdown(lfd, SHUT_RDWR);
		if (th.joinable())
			th.join();
		close(lfd);
	}
	// One line (without CRLF) from fd, "" at the end.
	static bool read_line(int fd, std::string &line)
	{
		char c;
		line.clear();
		while (read(fd, &c, 1) == 1) {
			if (c == '\n') {
				if (!line.empty() && line.back() == '\r')
					line.pop_back();
				return true;
			}
			line += c;
		}
		return false;
	}
	static void say(int fd, const std::string &s)
	{
		if (write(fd, s.data(), s.size()) != (ssize_t)s.size())
			return;
	}
	void run()
	{
		int c = accept(lfd, NULL, NULL);
		std::string line;

		if (c < 0)
			return;
		say(c, quiet ? "* OK hi\r\n"
			     : "* OK [CAPABILITY IMAP4rev1 LITERAL+ AUTH=PLAIN] "
			       "hi\r\n");
		while (read_line(c, line)) {
			std::string cmd = line;
			// literals: {n+} or {n} (answered with "+")
			while (!line.empty() && line.back() == '}') {
				size_t open = line.rfind('{');
				bool plus = line[line.size() - 2] == '+';
				size_t n = std::stoul(line.substr(open + 1));
				std::string lit(n, '\0');
				if (!plus)
					say(c, "+ go on\r\n");
				for (size_t got = 0; got < n;) {
					ssize_t r = read(c, &lit[got], n - got);
					if (r <= 0)
						return;
					got += (size_t)r;
				}
				if (!read_line(c, line))
					return;
				cmd += "\r\n" + lit + line;
			}
			std::string tag = cmd.substr(0, cmd.find(' '));
			std::string rest = cmd.substr(tag.size() + 1);
			{
				std::lock_guard<std::mutex> g(mu);
				commands.push_back(rest);
			}
			if (rest.rfind("UID SEARCH", 0) == 0)
				say(c, search(rest, tag));
			else if (rest.rfind("EXAMINE", 0) == 0)
				say(c, "* 5 EXISTS\r\n* OK [UIDVALIDITY 7] v\r\n" +
					   tag + " OK [READ-ONLY] done\r\n");
			else if (quiet && (rest.rfind("LOGIN", 0) == 0 ||
					   rest.rfind("CAPABILITY", 0) == 0))
				say(c, tag + " OK done\r\n");
			else if (rest.rfind("LOGIN", 0) == 0 ||
				 rest.rfind("AUTHENTICATE", 0) == 0)
				say(c, tag + " OK [CAPABILITY " + caps +
					   "] in\r\n");
			else if (rest.rfind("CAPABILITY", 0) == 0)
				say(c, "* CAPABILITY " + caps + "\r\n" + tag +
					   " OK done\r\n");
			else if (rest.rfind("LOGOUT", 0) == 0) {
				say(c, "* BYE bye\r\n" + tag + " OK done\r\n");
				break;
			} else
				say(c, tag + " OK done\r\n");
		}
		close(c);
	}
	size_t count(const char *prefix)
	{
		std::lock_guard<std::mutex> g(mu);
		size_t n = 0;
		for (const auto &c : commands)
			n += c.rfind(prefix, 0) == 0;
		return n;
	}
	std::vector<std::string> searches()
	{
		std::lock_guard<std::mutex> g(mu);
		std::vector<std::string> out;
		for (const auto &c : commands)
			if (c.rfind("UID SEARCH", 0) == 0)
				out.push_back(c);
		return out;
	}
};

class ImapScripted : public ::testing::Test
{
      protected:
	struct mfs_account acct = {};
	struct mfs_err err = {};
	ScriptedImap srv;

	// A store on the scripted server, which starts now.
	struct mfs_store *open()
	{
		acct.name = (char *)"scripted";
		acct.store.proto = MFS_PROTO_IMAP;
		acct.store.tls = MFS_TLS_NONE;
		acct.store.host = (char *)"127.0.0.1";
		acct.store.port = srv.port;
		acct.user = (char *)"alice";
		acct.timeout = 5;
		srv.start();
		return mfs_imap_store_new(&acct, "secret");
	}

	// UIDs found for query as "1 2", or "E<code>: message".
	std::string search(const char *query)
	{
		struct mfs_query *q = NULL;
		struct mfs_store_hits hits = {};
		const char *folder = "INBOX";
		std::string out;

		struct mfs_store *st = open();
		EXPECT_NE(st, nullptr);
		EXPECT_EQ(mfs_query_parse(query, &q, &err), MFS_OK);
		int rc = st->ops->search(st, &folder, 1, q, &hits, &err);
		if (rc != MFS_OK)
			out = "E" + std::to_string(rc) + ": " + err.msg;
		for (size_t i = 0; rc == MFS_OK && i < hits.n; i++)
			out += (i ? " " : "") + std::to_string(hits.uids[i]);
		mfs_store_hits_free(&hits, 1);
		mfs_query_free(q);
		st->ops->free(st);
		return out;
	}
};

// A server without UTF-8 search that offers ISO-8859-1: the search is sent
// again in that charset; "* SEARCH" without ESEARCH.
TEST_F(ImapScripted, BadcharsetFallsBackToLatin1)
{
	srv.search = [](const std::string &cmd, const std::string &tag) {
		if (cmd.find("CHARSET UTF-8") != std::string::npos)
			return tag + " NO [BADCHARSET (US-ASCII ISO-8859-1)] "
				     "no\r\n";
		return "* SEARCH 3 5\r\n" + tag + " OK done\r\n";
	};
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
	srv.search = [](const std::string &cmd, const std::string &tag) {
		(void)cmd;
		return tag + " NO [BADCHARSET (US-ASCII)] no\r\n";
	};
	std::string r = search("subject:\u00fcber");
	EXPECT_EQ(r.substr(0, 3), "E" + std::to_string(MFS_E_INVAL) + ":")
		<< r;
	EXPECT_NE(r.find("BADCHARSET"), std::string::npos) << r;
	EXPECT_EQ(srv.searches().size(), 1u);
}

// ASCII terms need no CHARSET; an ESEARCH answer with ranges is expanded.
TEST_F(ImapScripted, AsciiAndEsearchRanges)
{
	srv.search = [](const std::string &cmd, const std::string &tag) {
		(void)cmd;
		return "* ESEARCH (TAG \"" + tag + "\") UID ALL 2:4,9,12:11\r\n" +
		       tag + " OK done\r\n";
	};
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

} // namespace
