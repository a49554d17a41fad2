// Unit tests for src/listline.c: the listing's own reader of FETCH
// responses. What it reads must equal libetpan's reading (the imap fuzz
// target compares the two); here, the values of each field by hand, and
// lines it must leave to libetpan.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <string>

extern "C" {
#include "listline.h"
}

namespace
{

struct Entry {
	int rc;
	struct mfs_store_msg m;
};

Entry read_line(const std::string &line)
{
	Entry e;

	memset(&e.m, 0, sizeof(e.m));
	e.rc = mfs_listline(line.data(), line.size(), &e.m);
	return e;
}

void drop(Entry &e)
{
	free(e.m.from);
	free(e.m.subject);
}

const char kFull[] =
    "* 1 FETCH (UID 7 FLAGS (\\Seen $Junk \\Flagged) RFC822.SIZE 1234 "
    "INTERNALDATE \" 5-Dec-2026 02:17:38 -0130\" ENVELOPE (\"Sat, 05 Dec "
    "2026 01:00:00 +0100\" \"=?utf-8?q?caf=C3=A9?= \\\"x\\\"\" ((\"Bob "
    "\\\\ B\" NIL \"bob\" \"example.org\")(\"Al\" NIL \"al\" \"x.y\")) NIL "
    "NIL ((NIL NIL \"a\" \"b\")) NIL NIL NIL \"<id@x>\"))\r\n";

TEST(Listline, ReadsEveryField)
{
	Entry e = read_line(kFull);

	ASSERT_EQ(e.rc, 1);
	EXPECT_EQ(e.m.uid, 7u);
	EXPECT_EQ(e.m.size, 1234u);
	EXPECT_EQ(e.m.flags, (unsigned)(MFS_FLAG_SEEN | MFS_FLAG_FLAGGED));
	EXPECT_EQ(e.m.date, (time_t)1796428800); // 2026-12-05 00:00:00 UTC
	EXPECT_STREQ(e.m.from, "Bob \\ B");	  // escapes undone
	EXPECT_STREQ(e.m.subject, "caf\xc3\xa9 \"x\"");
	EXPECT_EQ(e.m.uidl, nullptr);
	drop(e);
}

TEST(Listline, InternalDateWhenTheEnvelopeHasNoDate)
{
	// 05-Dec-2026 02:17:38 -0130 is 03:47:38 UTC
	Entry e = read_line("* 2 FETCH (UID 9 INTERNALDATE \" 5-Dec-2026 "
			    "02:17:38 -0130\" ENVELOPE (NIL NIL NIL NIL NIL "
			    "NIL NIL NIL NIL NIL))\r\n");

	ASSERT_EQ(e.rc, 1);
	EXPECT_EQ(e.m.date, (time_t)1796442458);
	EXPECT_STREQ(e.m.from, "");
	EXPECT_STREQ(e.m.subject, "");
	drop(e);

	// an envelope date that is no date: INTERNALDATE, here two digits
	// of day and a zone east
	e = read_line("* 2 FETCH (ENVELOPE (\"soon\" NIL NIL NIL NIL NIL NIL "
		      "NIL NIL NIL) INTERNALDATE \"05-dec-2026 12:00:00 "
		      "+1400\" UID 9)\r\n");
	ASSERT_EQ(e.rc, 1);
	EXPECT_EQ(e.m.date, (time_t)1796472000 - 14 * 3600);
	drop(e);
}

TEST(Listline, SenderWithoutNameIsMailboxAtHost)
{
	Entry e = read_line("* 3 FETCH (UID 11 ENVELOPE (NIL \"s\" ((\"\" NIL "
			    "\"ann\" \"x.org\")) NIL NIL NIL NIL NIL NIL "
			    "NIL))\r\n");

	ASSERT_EQ(e.rc, 1);
	EXPECT_STREQ(e.m.from, "ann@x.org");
	drop(e);

	// a group's start: a mailbox and no host, as libetpan leaves it
	e = read_line("* 3 FETCH (UID 11 ENVELOPE (NIL \"s\" ((NIL NIL "
		      "\"grp\" NIL)(NIL NIL NIL NIL)) NIL NIL NIL NIL NIL NIL "
		      "NIL))\r\n");
	ASSERT_EQ(e.rc, 1);
	EXPECT_STREQ(e.m.from, "grp@");
	drop(e);
}

// Strings as literals, as a server sends 8-bit text: the response as the
// session's buffer holds it, each literal's bytes after its "{n}" CRLF.
TEST(Listline, ReadsLiterals)
{
	Entry e = read_line("* 9 FETCH (UID 3 ENVELOPE (NIL {12}\r\ncaf\xc3\xa9 "
			    "\\ \"ok\" ((NIL NIL {3}\r\nbob \"x.org\")) NIL NIL "
			    "NIL NIL NIL NIL NIL))\r\n");

	ASSERT_EQ(e.rc, 1);
	EXPECT_STREQ(e.m.subject, "caf\xc3\xa9 \\ \"ok\""); // no escapes
	EXPECT_STREQ(e.m.from, "bob@x.org");
	drop(e);

	// a literal longer than what follows, or holding a NUL: libetpan's
	const char cut[] = "* 9 FETCH (UID 3 ENVELOPE (NIL {99}\r\nabc NIL "
			   "NIL NIL NIL NIL NIL NIL NIL))\r\n";
	EXPECT_EQ(read_line(cut).rc, 0);
	const char nul[] = "* 9 FETCH (UID 3 ENVELOPE (NIL {3}\r\na\0b NIL "
			   "NIL NIL NIL NIL NIL NIL NIL))\r\n";
	EXPECT_EQ(read_line(std::string(nul, sizeof(nul) - 1)).rc, 0);
}

TEST(Listline, LowerCaseModseqAndNoUid)
{
	Entry e = read_line("* 4 fetch (flags (\\answered \\DRAFT \\deleted) "
			    "modseq (18446744073709551615) rfc822.size 0)\r\n");

	ASSERT_EQ(e.rc, 1);
	EXPECT_EQ(e.m.uid, 0u); // the caller drops it
	EXPECT_EQ(e.m.flags, (unsigned)(MFS_FLAG_ANSWERED | MFS_FLAG_DRAFT |
					MFS_FLAG_DELETED));
	EXPECT_EQ(e.m.date, (time_t)0);
	drop(e);
}

// Lines libetpan must read: each answers 0 and leaves *m alone.
TEST(Listline, LeavesEverythingElseToLibetpan)
{
	const char *lines[] = {
	    "* 5 EXISTS\r\n",
	    "1 OK done\r\n",
	    "* OK [ALERT] hi\r\n",
	    // a literal whose bytes are not there
	    "* 1 FETCH (UID 7 ENVELOPE (NIL {3}\r\n",
	    // 8-bit text in a quoted string
	    "* 1 FETCH (UID 7 ENVELOPE (NIL \"caf\xc3\xa9\" NIL NIL NIL NIL "
	    "NIL NIL NIL NIL))\r\n",
	    // an item it does not know
	    "* 1 FETCH (UID 7 X-GM-MSGID 123)\r\n",
	    "* 1 FETCH (UID 7 BODY[] NIL)\r\n",
	    // an item twice
	    "* 1 FETCH (UID 7 UID 8)\r\n",
	    // numbers out of range, sequence number 0
	    "* 1 FETCH (UID 4294967296)\r\n",
	    "* 1 FETCH (RFC822.SIZE 99999999999999999999)\r\n",
	    "* 0 FETCH (UID 7)\r\n",
	    // the line not ended as it should
	    "* 1 FETCH (UID 7)\n",
	    "* 1 FETCH (UID 7)\r\nx",
	    "* 1 FETCH (UID 7) \r\n",
	    "* 1 FETCH (UID 7\r\n",
	    "* 1 FETCH (UID 7))\r\n",
	    "* 1 FETCH ()\r\n",
	    // off the grammar
	    "* 1 FETCH (UID  7)\r\n",
	    "* 1 FETCH (FLAGS \\Seen)\r\n",
	    "* 1 FETCH (FLAGS (\\Seen ))\r\n",
	    "* 1 FETCH (FLAGS (\\*))\r\n",
	    "* 1 FETCH (FLAGS (x]))\r\n",
	    // a system flag's name and more: libetpan reads \Seenx as \Seen
	    "* 1 FETCH (FLAGS (\\Seenx))\r\n",
	    "* 1 FETCH (FLAGS (\\recently))\r\n",
	    "* 1 FETCH (INTERNALDATE \"5-Dec-2026 02:17:38 +0000\")\r\n",
	    "* 1 FETCH (INTERNALDATE \"05-Dez-2026 02:17:38 +0000\")\r\n",
	    "* 1 FETCH (INTERNALDATE \"05-Dec-2026 02:17:38 0000\")\r\n",
	    "* 1 FETCH (ENVELOPE (NIL NIL () NIL NIL NIL NIL NIL NIL NIL))\r\n",
	    "* 1 FETCH (ENVELOPE (NIL NIL NIL NIL NIL NIL NIL NIL NIL))\r\n",
	    "* 1 FETCH (ENVELOPE (NIL \"a\\b\" NIL NIL NIL NIL NIL NIL NIL "
	    "NIL))\r\n",
	    "* 1 FETCH (ENVELOPE (NIL \"open NIL NIL NIL NIL NIL NIL NIL "
	    "NIL))\r\n",
	    "",
	};

	for (const char *l : lines) {
		Entry e;

		memset(&e.m, 0xa5, sizeof(e.m));
		e.rc = mfs_listline(l, strlen(l), &e.m);
		EXPECT_EQ(e.rc, 0) << l;
		EXPECT_EQ(e.m.uid, 0xa5a5a5a5u) << l;
	}
	// a NUL inside a quoted string
	std::string nul("* 1 FETCH (ENVELOPE (NIL \"a\0b\" NIL NIL NIL NIL "
			"NIL NIL NIL NIL))\r\n",
			66);
	ASSERT_EQ(nul[nul.size() - 1], '\n');
	EXPECT_EQ(read_line(nul).rc, 0);
}

// Every prefix of a good line is not one: the reader never reads past the
// length it was given (ASan checks the copy below has no slack).
TEST(Listline, EveryPrefixIsLeft)
{
	std::string full(kFull);

	for (size_t n = 0; n < full.size(); n++) {
		char *copy = static_cast<char *>(malloc(n + 1));

		ASSERT_NE(copy, nullptr);
		memcpy(copy, full.data(), n);
		Entry e;
		e.rc = mfs_listline(copy, n, &e.m);
		EXPECT_EQ(e.rc, 0) << n;
		free(copy);
	}
}

} // namespace
