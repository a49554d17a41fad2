// Unit tests for src/query.c: the search grammar, its IMAP rendering and
// matching by what a listing has.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>

extern "C" {
#include "query.h"
}

namespace
{

// The IMAP keys of a query ("" when it does not parse), literals as {n}.
std::string imap(const char *name, int plus = 0,
		 enum mfs_query_charset cs = MFS_QUERY_UTF8)
{
	struct mfs_query *q = nullptr;
	struct mfs_query_wire w;
	struct mfs_err err;

	if (mfs_query_parse(name, &q, &err) != MFS_OK)
		return "";
	int rc = mfs_query_imap(q, cs, plus, &w, &err);
	mfs_query_free(q);
	if (rc != MFS_OK)
		return "<" + std::string(err.msg) + ">";
	std::string r(w.buf, w.len);
	mfs_query_wire_free(&w);
	EXPECT_EQ(r.substr(r.size() - 2), "\r\n");
	return r.substr(0, r.size() - 2);
}

// The reason a query does not parse ("" when it does), checking EINVAL.
std::string why(const char *name)
{
	struct mfs_query *q = nullptr;
	struct mfs_err err;
	int rc = mfs_query_parse(name, &q, &err);

	if (rc == MFS_OK) {
		mfs_query_free(q);
		return "";
	}
	EXPECT_EQ(rc, MFS_E_INVAL) << name;
	EXPECT_EQ(q, nullptr);
	return err.msg;
}

TEST(Query, TextKeys)
{
	EXPECT_EQ(imap("from:bob"), "FROM \"bob\"");
	EXPECT_EQ(imap("to:alice@example.org"), "TO \"alice@example.org\"");
	EXPECT_EQ(imap("cc:carol"), "CC \"carol\"");
	EXPECT_EQ(imap("subject:invoice"), "SUBJECT \"invoice\"");
	EXPECT_EQ(imap("body:word"), "BODY \"word\"");
	EXPECT_EQ(imap("text:word"), "TEXT \"word\"");
	EXPECT_EQ(imap("word"), "TEXT \"word\"");
	EXPECT_EQ(imap("FROM:Bob"), "FROM \"Bob\"");
	EXPECT_EQ(imap("10:30"), "TEXT \"10:30\"");
}

TEST(Query, Phrases)
{
	EXPECT_EQ(imap("\"hello world\""), "TEXT \"hello world\"");
	EXPECT_EQ(imap("from:\"Alice Smith\""), "FROM \"Alice Smith\"");
	EXPECT_EQ(imap("subject:\"a\\b\""), "SUBJECT \"a\\\\b\"");
	EXPECT_EQ(imap("\"or\""), "TEXT \"or\"");
	EXPECT_EQ(imap("  a\tb  "), "TEXT \"a\" TEXT \"b\"");
}

TEST(Query, DatesSizesFlags)
{
	EXPECT_EQ(imap("since:2024-01-05"), "SENTSINCE 5-Jan-2024");
	EXPECT_EQ(imap("before:2024-12-31"), "SENTBEFORE 31-Dec-2024");
	EXPECT_EQ(imap("since:2024-02-29"), "SENTSINCE 29-Feb-2024");
	EXPECT_EQ(imap("larger:100"), "LARGER 100");
	EXPECT_EQ(imap("larger:10k"), "LARGER 10240");
	EXPECT_EQ(imap("smaller:2M"), "SMALLER 2097152");
	EXPECT_EQ(imap("smaller:4095M"), "SMALLER 4293918720");
	EXPECT_EQ(imap("is:seen"), "SEEN");
	EXPECT_EQ(imap("is:flagged"), "FLAGGED");
	EXPECT_EQ(imap("is:Answered"), "ANSWERED");
	EXPECT_EQ(imap("is:draft"), "DRAFT");
	EXPECT_EQ(imap("is:deleted"), "DELETED");
}

TEST(Query, NotOrAnd)
{
	EXPECT_EQ(imap("-is:seen"), "NOT SEEN");
	EXPECT_EQ(imap("--is:seen"), "NOT NOT SEEN");
	EXPECT_EQ(imap("from:a or from:b"), "OR FROM \"a\" FROM \"b\"");
	EXPECT_EQ(imap("a OR b or c"), "OR OR TEXT \"a\" TEXT \"b\" TEXT \"c\"");
	EXPECT_EQ(imap("x a or -b y"),
		  "TEXT \"x\" OR TEXT \"a\" NOT TEXT \"b\" TEXT \"y\"");
	EXPECT_EQ(imap("-or"), "NOT TEXT \"or\"");
	EXPECT_EQ(imap("from:bob since:2024-01-01 -is:seen larger:1k"),
		  "FROM \"bob\" SENTSINCE 1-Jan-2024 NOT SEEN LARGER 1024");
}

TEST(Query, Utf8Literals)
{
	EXPECT_EQ(imap("from:Jürgen"), "FROM {7}\r\nJürgen");
	EXPECT_EQ(imap("from:Jürgen", 1), "FROM {7+}\r\nJürgen");
	EXPECT_EQ(imap("subject:\"日本 語\""), "SUBJECT {10}\r\n日本 語");
	EXPECT_EQ(imap("from:Jürgen", 0, MFS_QUERY_LATIN1),
		  "FROM {6}\r\nJ\xfcrgen");
	EXPECT_EQ(imap("subject:日本", 0, MFS_QUERY_LATIN1),
		  "<a term has characters outside ISO-8859-1, the server's "
		  "charset>");

	struct mfs_query *q;
	struct mfs_query_wire w;
	struct mfs_err err;

	ASSERT_EQ(mfs_query_parse("from:ä subject:ö x", &q, &err), MFS_OK);
	ASSERT_EQ(mfs_query_imap(q, MFS_QUERY_UTF8, 0, &w, &err), MFS_OK);
	EXPECT_EQ(w.ascii, 0);
	ASSERT_EQ(w.nlits, 2u);
	EXPECT_EQ(std::string(w.buf, w.lits[0]), "FROM {2}\r\n");
	EXPECT_EQ(std::string(w.buf + w.lits[0], 2), "ä");
	EXPECT_EQ(std::string(w.buf + w.lits[1]), "ö TEXT \"x\"\r\n");
	mfs_query_wire_free(&w);
	ASSERT_EQ(mfs_query_imap(q, MFS_QUERY_UTF8, 0, &w, &err), MFS_OK);
	mfs_query_wire_free(&w);
	mfs_query_free(q);

	ASSERT_EQ(mfs_query_parse("from:bob", &q, &err), MFS_OK);
	ASSERT_EQ(mfs_query_imap(q, MFS_QUERY_UTF8, 0, &w, &err), MFS_OK);
	EXPECT_EQ(w.ascii, 1);
	EXPECT_EQ(w.nlits, 0u);
	mfs_query_wire_free(&w);
	mfs_query_free(q);
}

TEST(Query, Errors)
{
	EXPECT_EQ(why("since:yesterday"),
		  "since:yesterday: not a date YYYY-MM-DD");
	EXPECT_EQ(why("before:2023-02-29"),
		  "before:2023-02-29: not a date YYYY-MM-DD");
	EXPECT_NE(why("since:2024-13-01"), "");
	EXPECT_NE(why("since:2024-1-01"), "");
	EXPECT_EQ(why("foo:bar"), "unknown key foo:");
	EXPECT_EQ(why("\"unbalanced"), "unbalanced quote");
	EXPECT_EQ(why("from:\"Alice"), "unbalanced quote");
	EXPECT_EQ(why("ab\"c"), "unbalanced quote");
	EXPECT_NE(why("\"a\"b"), "");
	EXPECT_EQ(why("from:"), "from: needs a value");
	EXPECT_EQ(why("from: bob"), "from: needs a value");
	EXPECT_NE(why("\"\""), "");
	EXPECT_EQ(why(""), "empty query");
	EXPECT_EQ(why("   "), "empty query");
	EXPECT_EQ(why("-"), "'-' needs a term after it");
	EXPECT_EQ(why("a -"), "'-' needs a term after it");
	EXPECT_EQ(why("or a"), "'or' needs a term before it");
	EXPECT_EQ(why("a or"), "'or' needs a term after it");
	EXPECT_EQ(why("a or or b"), "'or' needs a term after it");
	EXPECT_NE(why("larger:big"), "");
	EXPECT_NE(why("larger:4G"), "");
	EXPECT_NE(why("larger:4096M"), "");
	EXPECT_NE(why("larger:99999999999999999999"), "");
	EXPECT_NE(why("larger:"), "");
	EXPECT_NE(why("is:unread"), "");
	EXPECT_NE(why("from:a\x01"), "");
	EXPECT_NE(why("from:\xff\xfe"), "");
	EXPECT_EQ(why(std::string(MFS_QUERY_MAX + 1, 'a').c_str()),
		  "query longer than 1024 bytes");
	EXPECT_EQ(why(std::string(MFS_QUERY_MAX, 'a').c_str()), "");
}

struct mfs_store_msg msg_at(const char *from, const char *subject,
			    time_t date, uint64_t size, unsigned flags)
{
	struct mfs_store_msg m;

	memset(&m, 0, sizeof(m));
	m.from = const_cast<char *>(from);
	m.subject = const_cast<char *>(subject);
	m.date = date;
	m.size = size;
	m.flags = flags;
	return m;
}

int match(const char *name, const struct mfs_store_msg &m)
{
	struct mfs_query *q;
	struct mfs_err err;

	EXPECT_EQ(mfs_query_parse(name, &q, &err), MFS_OK) << name;
	EXPECT_TRUE(mfs_query_listing_only(q)) << name;
	int r = mfs_query_match(q, &m);
	mfs_query_free(q);
	return r;
}

TEST(Query, ListingMatch)
{
	/* 2024-01-05 23:30 UTC */
	struct mfs_store_msg m = msg_at("Bob Jones <bob@example.org>",
					"Über invoice", 1704497400, 5000,
					MFS_FLAG_SEEN);

	EXPECT_EQ(match("from:bob", m), 1);
	EXPECT_EQ(match("from:BOB", m), 1);
	EXPECT_EQ(match("from:alice", m), 0);
	EXPECT_EQ(match("subject:Über", m), 1);
	EXPECT_EQ(match("subject:INVOICE", m), 1);
	EXPECT_EQ(match("since:2024-01-05", m), 1);
	EXPECT_EQ(match("since:2024-01-06", m), 0);
	EXPECT_EQ(match("before:2024-01-05", m), 0);
	EXPECT_EQ(match("before:2024-01-06", m), 1);
	EXPECT_EQ(match("larger:4k", m), 1);
	EXPECT_EQ(match("larger:5000", m), 0);
	EXPECT_EQ(match("smaller:5001", m), 1);
	EXPECT_EQ(match("is:seen", m), 1);
	EXPECT_EQ(match("-is:seen", m), 0);
	EXPECT_EQ(match("is:flagged or from:bob", m), 1);
	EXPECT_EQ(match("is:flagged or from:alice", m), 0);
	EXPECT_EQ(match("from:bob -is:flagged", m), 1);

	struct mfs_query *q;
	struct mfs_err err;

	ASSERT_EQ(mfs_query_parse("from:bob -body:x", &q, &err), MFS_OK);
	EXPECT_FALSE(mfs_query_listing_only(q));
	mfs_query_free(q);
	ASSERT_EQ(mfs_query_parse("word", &q, &err), MFS_OK);
	EXPECT_FALSE(mfs_query_listing_only(q));
	mfs_query_free(q);
	ASSERT_EQ(mfs_query_parse("a or to:x", &q, &err), MFS_OK);
	EXPECT_FALSE(mfs_query_listing_only(q));
	mfs_query_free(q);
}

TEST(Query, TextMatch)
{
	struct mfs_store_msg m = msg_at(nullptr, nullptr, 1704497400, 5000, 0);
	struct mfs_query_text t = {"Bob <bob@example.org>",
				   "Carol <carol@example.org>",
				   nullptr,
				   "Quarterly report",
				   "From: Bob <bob@example.org>\nX-Tag: zebra\n",
				   "The figures are late."};
	const struct {
		const char *q;
		int want;
	} cases[] = {
	    {"from:bob", 1},	     {"to:carol", 1},
	    {"to:bob", 0},	     {"cc:carol", 0},
	    {"subject:QUARTERLY", 1}, {"body:figures", 1},
	    {"body:zebra", 0},	     {"text:zebra", 1},
	    {"zebra", 1},	     {"late -body:early", 1},
	    {"text:nowhere", 0},     {"body:figures since:2024-01-06", 0},
	    {"to:dave or body:\"are late\"", 1},
	};

	for (const auto &c : cases) {
		struct mfs_query *q;
		struct mfs_err err;

		ASSERT_EQ(mfs_query_parse(c.q, &q, &err), MFS_OK) << c.q;
		EXPECT_EQ(mfs_query_match_text(q, &m, &t), c.want) << c.q;
		mfs_query_free(q);
	}
}

TEST(Query, HandBuiltAndIsParenthesized)
{
	struct mfs_query *q;
	struct mfs_query_wire w;
	struct mfs_err err;

	ASSERT_EQ(mfs_query_parse("a b", &q, &err), MFS_OK);
	struct mfs_query *n =
	    static_cast<struct mfs_query *>(calloc(1, sizeof(*n)));
	ASSERT_NE(n, nullptr);
	n->op = MFS_Q_NOT;
	n->a = q;
	ASSERT_EQ(mfs_query_imap(n, MFS_QUERY_UTF8, 0, &w, &err), MFS_OK);
	EXPECT_EQ(std::string(w.buf), "NOT (TEXT \"a\" TEXT \"b\")\r\n");
	mfs_query_wire_free(&w);
	mfs_query_free(n);
}

} // namespace
