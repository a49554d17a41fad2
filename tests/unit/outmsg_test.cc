// outmsg_test.cc - envelope and header parsing, the prepared message:
// Bcc removal, added Date and Message-ID, CRLF, 8-bit policy.
#include <gtest/gtest.h>

#include <sys/mman.h>
#include <unistd.h>

#include <string>
#include <vector>

extern "C" {
#include "outmsg.h"
}

namespace
{

int memfd_with(const std::string &s)
{
	int fd = memfd_create("msg", MFD_CLOEXEC);
	EXPECT_EQ((ssize_t)s.size(), write(fd, s.data(), s.size()));
	return fd;
}

std::string read_all(int fd)
{
	std::string out;
	char buf[4096];
	ssize_t n;
	off_t off = 0;

	while ((n = pread(fd, buf, sizeof(buf), off)) > 0) {
		out.append(buf, n);
		off += n;
	}
	return out;
}

struct Parsed {
	struct mfs_outmsg msg = {};
	struct mfs_err err = {};
	int rc = 0;
	int fd = -1;

	Parsed(const std::string &text, const char *from = nullptr,
	       const char *msgid = nullptr)
	{
		struct mfs_outmsg_opts o = {from, msgid, 0};

		fd = memfd_with(text);
		rc = mfs_outmsg_parse(fd, &o, &msg, &err);
	}
	~Parsed()
	{
		mfs_outmsg_free(&msg);
		close(fd);
	}
	std::vector<std::string> rcpts() const
	{
		return std::vector<std::string>(msg.rcpts,
						msg.rcpts + msg.nrcpts);
	}
	// The prepared message, or "ERR: ..." on failure.
	std::string prepared(unsigned caps)
	{
		int out = memfd_create("out", MFD_CLOEXEC);
		off_t size = -1;
		int r = mfs_outmsg_write(&msg, fd, caps, out, &size, &err);
		std::string s = r ? std::string("ERR: ") + err.msg
				  : read_all(out);

		if (r == 0) {
			EXPECT_EQ((off_t)s.size(), size);
		}
		close(out);
		return s;
	}
};

const unsigned ALL = MFS_OUTMSG_8BITMIME | MFS_OUTMSG_SMTPUTF8;

TEST(Outmsg, EnvelopeFromHeaders)
{
	Parsed p("From: Alice <alice@example.test>\n"
		 "To: \"Smith, Bob\" <bob@example.test>, carol@example.test\n"
		 "Cc: undisclosed: dave@x.test, Eve (the spy) <eve@y.test>;\n"
		 "Bcc: frank@z.test (hidden)\n"
		 "Subject: hi\n\nbody\n");

	ASSERT_EQ(MFS_OK, p.rc) << p.err.msg;
	EXPECT_STREQ("alice@example.test", p.msg.sender);
	EXPECT_EQ((std::vector<std::string>{"bob@example.test",
					    "carol@example.test", "dave@x.test",
					    "eve@y.test", "frank@z.test"}),
		  p.rcpts());
}

TEST(Outmsg, ConfiguredFromWinsAndDuplicatesDrop)
{
	Parsed p("From: other@example.test\nTo: a@b.test\nCc: A@B.test\n"
		 "To: \"x\" <c@d.test>\n\n",
		 "Alice Smith <alice@example.test>");

	ASSERT_EQ(MFS_OK, p.rc) << p.err.msg;
	EXPECT_STREQ("alice@example.test", p.msg.sender);
	EXPECT_EQ((std::vector<std::string>{"a@b.test", "c@d.test"}),
		  p.rcpts());
}

TEST(Outmsg, FoldedAndEncodedDisplayNamesAndEmptyGroup)
{
	Parsed p("From: =?UTF-8?B?R3LDvMOfZQ==?= <a@b.test>\r\n"
		 "To: undisclosed-recipients:;\r\n"
		 "Cc: \"Q \\\"x\\\" <no@no>\" <q@r.test>,\r\n"
		 "  (comment, with comma) s@t.test\r\n\r\nbody\r\n");

	ASSERT_EQ(MFS_OK, p.rc) << p.err.msg;
	EXPECT_EQ((std::vector<std::string>{"q@r.test", "s@t.test"}),
		  p.rcpts());
}

TEST(Outmsg, MalformedIsInvalidWithAReason)
{
	struct {
		const char *text, *from, *needle;
	} cases[] = {
		{"From: a@b.test\nno colon here\n\n", nullptr, "header line 2"},
		{"From: a@b.test\nSubject: x\n\nbody", nullptr, "no recipient"},
		{"To: a@b.test\n\nbody", nullptr, "no From"},
		{"From: a@b.test\nTo: Bob Smith bob@x.test\n\n", nullptr,
		 "To: cannot read"},
		{"From: a@b.test\nTo: <bob@x.test\n\n", nullptr, "cannot read"},
		{"From: a@b.test\nTo: \"open quote <b@x.test>\n\n", nullptr,
		 "cannot read"},
		{"From: a@b.test\nTo: nobody\n\n", nullptr, "cannot read"},
		{"", nullptr, "no header"},
		{"\nbody only\n", nullptr, "no header"},
		{": empty name\nTo: a@b.test\n\n", "a@b.test", "no field name"},
	};
	for (auto &c : cases) {
		Parsed p(c.text, c.from);

		EXPECT_EQ(MFS_E_INVAL, p.rc) << c.text;
		EXPECT_NE(nullptr, strstr(p.err.msg, c.needle))
			<< c.text << " -> " << p.err.msg;
	}
}

TEST(Outmsg, OversizedHeaderIsInvalid)
{
	std::string big = "From: a@b.test\nTo: c@d.test\n";

	while (big.size() <= MFS_OUTMSG_HDR_MAX)
		big += "X-Pad: " + std::string(70, 'p') + "\n";
	Parsed p(big + "\nbody\n");
	EXPECT_EQ(MFS_E_INVAL, p.rc);
}

TEST(Outmsg, BccRemovedDateAndMessageIdAdded)
{
	Parsed p("From: a@example.test\nTo: c@d.test\nBcc: secret@x.test,\n"
		 " other@x.test\nSubject: s\n\nline1\nline2\n");
	ASSERT_EQ(MFS_OK, p.rc) << p.err.msg;
	EXPECT_EQ(3u, p.msg.nrcpts);
	std::string out = p.prepared(ALL);

	EXPECT_EQ(std::string::npos, out.find("Bcc"));
	EXPECT_EQ(std::string::npos, out.find("secret"));
	EXPECT_EQ(std::string::npos, out.find("other@"));
	EXPECT_NE(std::string::npos, out.find("\r\nDate: "));
	EXPECT_NE(std::string::npos,
		  out.find(std::string("\r\nMessage-ID: ") + p.msg.message_id));
	EXPECT_NE(std::string::npos, std::string(p.msg.message_id)
					     .find("@example.test>"));
	EXPECT_EQ(0, p.msg.has_date);
	EXPECT_NE(std::string::npos, out.find("\r\n\r\nline1\r\nline2\r\n"));
	// every LF is part of a CRLF
	for (size_t i = 0; i < out.size(); i++)
		if (out[i] == '\n') {
			ASSERT_EQ('\r', out[i - 1]) << i;
		}
}

TEST(Outmsg, ExistingDateAndMessageIdKept)
{
	Parsed p("From: a@b.test\r\nTo: c@d.test\r\n"
		 "Date: Thu, 20 Nov 2026 15:32:01 +0100\r\n"
		 "Message-ID: <own@b.test>\r\n\r\nbody\r\n",
		 nullptr, "<given@x>");
	ASSERT_EQ(MFS_OK, p.rc) << p.err.msg;
	EXPECT_STREQ("<own@b.test>", p.msg.message_id);
	std::string out = p.prepared(ALL);
	size_t first = out.find("Date:");

	EXPECT_EQ(std::string::npos, out.find("Date:", first + 1));
	EXPECT_EQ(std::string::npos, out.find("given"));
	EXPECT_EQ("From: a@b.test\r\nTo: c@d.test\r\n"
		  "Date: Thu, 20 Nov 2026 15:32:01 +0100\r\n"
		  "Message-ID: <own@b.test>\r\n\r\nbody\r\n",
		  out);
}

TEST(Outmsg, GivenMessageIdUsedWhenMissing)
{
	Parsed p("From: a@b.test\nTo: c@d.test\n\nx", nullptr, "<keep@x>");
	ASSERT_EQ(MFS_OK, p.rc);
	EXPECT_STREQ("<keep@x>", p.msg.message_id);
	EXPECT_NE(std::string::npos,
		  p.prepared(ALL).find("Message-ID: <keep@x>\r\n"));
}

TEST(Outmsg, EightBitDetection)
{
	Parsed ascii("From: a@b.test\nTo: c@d.test\n\nplain\n");
	Parsed body("From: a@b.test\nTo: c@d.test\n\nGr\xc3\xbc\xc3\x9f"
		    "e\n");
	Parsed hdr("From: a@b.test\nTo: c@d.test\nSubject: \xc3\xa4\n\nx\n");
	Parsed addr("From: a@b.test\nTo: j\xc3\xb6rg@d.test\n\nx\n");

	EXPECT_EQ(0, ascii.msg.body_8bit + ascii.msg.hdr_8bit +
			     ascii.msg.addr_8bit);
	EXPECT_EQ(1, body.msg.body_8bit);
	EXPECT_EQ(0, body.msg.hdr_8bit);
	EXPECT_EQ(1, hdr.msg.hdr_8bit);
	EXPECT_EQ(0, hdr.msg.body_8bit);
	EXPECT_EQ(1, addr.msg.addr_8bit);
	EXPECT_EQ(0, addr.prepared(ALL).rfind("ERR", 0) == 0);
	std::string refused = addr.prepared(MFS_OUTMSG_8BITMIME);
	EXPECT_EQ(0u, refused.rfind("ERR", 0)) << refused;
	EXPECT_NE(std::string::npos, refused.find("SMTPUTF8"));
}

TEST(Outmsg, QuotedPrintableWithout8BitMime)
{
	std::string line(100, 'x');
	Parsed p("From: a@b.test\nTo: c@d.test\nContent-Transfer-Encoding: "
		 "8bit\n\nGr\xc3\xbc\xc3\x9f"
		 "e = ok \n" +
		 line + "\n.dot\n");
	ASSERT_EQ(MFS_OK, p.rc);
	std::string out = p.prepared(MFS_OUTMSG_SMTPUTF8);

	EXPECT_EQ(std::string::npos, out.find("8bit"));
	EXPECT_NE(std::string::npos,
		  out.find("Content-Transfer-Encoding: quoted-printable\r\n"));
	EXPECT_NE(std::string::npos, out.find("MIME-Version: 1.0\r\n"));
	EXPECT_NE(std::string::npos,
		  out.find("Content-Type: text/plain; charset=utf-8\r\n"));
	EXPECT_NE(std::string::npos, out.find("Gr=C3=BC=C3=9Fe =3D ok=20\r\n"));
	EXPECT_NE(std::string::npos, out.find("=\r\n"));   // soft break
	EXPECT_NE(std::string::npos, out.find("\r\n.dot\r\n"));
	for (unsigned char c : out)
		ASSERT_LT(c, 0x80);
	size_t start = 0, end;
	while ((end = out.find("\r\n", start)) != std::string::npos) {
		EXPECT_LE(end - start, 76u);
		start = end + 2;
	}
	// with 8BITMIME the body goes as it is
	EXPECT_NE(std::string::npos,
		  p.prepared(ALL).find("Gr\xc3\xbc\xc3\x9f"
				       "e = ok \r\n"));
}

TEST(Outmsg, Multipart8BitWithout8BitMimeRefused)
{
	Parsed p("From: a@b.test\nTo: c@d.test\nMIME-Version: 1.0\n"
		 "Content-Type: multipart/mixed; boundary=b\n\n--b\n\n"
		 "\xc3\xa4\n--b--\n");
	ASSERT_EQ(MFS_OK, p.rc);
	EXPECT_EQ(1, p.msg.multipart);
	std::string out = p.prepared(0);
	EXPECT_EQ(0u, out.rfind("ERR", 0));
	EXPECT_NE(std::string::npos, out.find("8BITMIME"));
	EXPECT_EQ(0u, p.prepared(ALL).find("From:"));
}

TEST(Outmsg, Rfc2047HeadersWithoutSmtpUtf8)
{
	Parsed p("From: J\xc3\xb6rg M\xc3\xbcller <j@b.test>\n"
		 "To: \"Z\xc3\xa4h, Ann\" <ann@d.test>, plain@d.test\n"
		 "Subject: Gr\xc3\xbc\xc3\x9f"
		 "e aus K\xc3\xb6ln\n\nx\n");
	ASSERT_EQ(MFS_OK, p.rc) << p.err.msg;
	std::string out = p.prepared(MFS_OUTMSG_8BITMIME);

	for (unsigned char c : out)
		ASSERT_LT(c, 0x80) << out;
	// "Grüße aus Köln" in base64
	EXPECT_NE(std::string::npos,
		  out.find("Subject: =?UTF-8?B?R3LDvMOfZSBhdXMgS8O2bG4=?=\r\n"))
		<< out;
	EXPECT_NE(std::string::npos,
		  out.find("From: =?UTF-8?B?SsO2cmcgTcO8bGxlcg==?= <j@b.test>"))
		<< out;
	EXPECT_NE(std::string::npos,
		  out.find("=?UTF-8?B?WsOkaCwgQW5u?= <ann@d.test>,\r\n "
			   "plain@d.test\r\n"))
		<< out;
	// a long subject is split into several words, each at most 75 chars
	std::string longsub;
	for (int i = 0; i < 40; i++)
		longsub += "\xc3\xa4";
	Parsed q("From: a@b.test\nTo: c@d.test\nSubject: " + longsub +
		 "\n\nx\n");
	std::string o2 = q.prepared(0);
	EXPECT_NE(std::string::npos, o2.find("?=\r\n =?UTF-8?B?")) << o2;
}

TEST(Outmsg, EightBitMessageIdRefusedWithoutSmtpUtf8)
{
	Parsed p("From: a@b.test\nTo: c@d.test\nMessage-ID: <\xc3\xa4@x>\n\n");
	ASSERT_EQ(MFS_OK, p.rc);
	EXPECT_EQ(0u, p.prepared(MFS_OUTMSG_8BITMIME).rfind("ERR", 0));
}

TEST(Outmsg, BareLfAndMixedLineEnds)
{
	Parsed p("From: a@b.test\r\nTo: c@d.test\n\r\none\ntwo\r\nthree");
	ASSERT_EQ(MFS_OK, p.rc);
	EXPECT_EQ(std::string::npos, p.prepared(ALL).find("\r\r"));
	std::string out = p.prepared(ALL);
	EXPECT_NE(std::string::npos, out.find("\r\n\r\none\r\ntwo\r\nthree"))
		<< out;
}

TEST(Outmsg, AddressListHelper)
{
	char **list = nullptr;
	size_t n = 0;
	struct mfs_err err = {};

	ASSERT_EQ(MFS_OK, mfs_outmsg_addresses(
				  "g: a@x.test, \"b, c\" <b@x.test>;, "
				  "<@route,@r2:d@x.test>, , e@x.test (c)",
				  &list, &n, &err))
		<< err.msg;
	std::vector<std::string> got(list, list + n);
	EXPECT_EQ((std::vector<std::string>{"a@x.test", "b@x.test", "d@x.test",
					    "e@x.test"}),
		  got);
	for (size_t i = 0; i < n; i++)
		free(list[i]);
	free(list);
}

} // namespace

// RFC 5321 bounds a path to 256 octets with its <>: a longer address is
// the user's input to fix, refused before anything is sent.
TEST(Outmsg, AddressTooLongForSmtpIsInvalid)
{
	std::string ok = std::string(254 - 7, 'a') + "@x.test";
	std::string longer = std::string(1200, 'b') + "@x.test";

	ASSERT_EQ(254u, ok.size());
	{
		Parsed p("From: a@b.test\nTo: " + ok + "\n\nbody\n");
		EXPECT_EQ(MFS_OK, p.rc) << p.err.msg;
	}
	{
		Parsed p("From: a@b.test\nTo: a" + ok + "\n\nbody\n");
		EXPECT_EQ(MFS_E_INVAL, p.rc) << "255 octets";
	}
	{
		Parsed p("From: a@b.test\nTo: c@d.test, " + longer + "\n\nx\n");
		EXPECT_EQ(MFS_E_INVAL, p.rc);
		EXPECT_NE(nullptr, strstr(p.err.msg, "recipient")) << p.err.msg;
		EXPECT_NE(nullptr, strstr(p.err.msg, "1207 bytes")) << p.err.msg;
	}
	{
		Parsed p("From: " + longer + "\nTo: c@d.test\n\nx\n");
		EXPECT_EQ(MFS_E_INVAL, p.rc);
		EXPECT_NE(nullptr, strstr(p.err.msg, "sender")) << p.err.msg;
	}
}
