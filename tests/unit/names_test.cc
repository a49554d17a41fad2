// Unit tests for src/names.c: charsets, modified UTF-7, RFC 2047/2231,
// name sanitizing, message directory names and dates.
#include <gtest/gtest.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>

extern "C" {
#include "names.h"
}

namespace
{

// Takes ownership of a malloc'd C string; "<NULL>" stands for NULL.
std::string own(char *s)
{
	if (s == nullptr)
		return "<NULL>";
	std::string r(s);
	free(s);
	return r;
}

bool valid_utf8(const std::string &s)
{
	return mfs_utf8_valid(s.data(), s.size()) == 1;
}

std::string clean(const std::string &s)
{
	return own(mfs_utf8_clean(s.data(), s.size()));
}

std::string hdr(const char *s)
{
	return own(mfs_hdr_decode(s));
}

std::string dec7(const char *s)
{
	return own(mfs_mutf7_decode(s));
}

std::string enc7(const char *s)
{
	return own(mfs_mutf7_encode(s));
}

std::string san(const char *s)
{
	return own(mfs_name_sanitize(s));
}

time_t utc(int y, int mon, int d, int h, int mi, int s)
{
	struct tm tm = {};
	tm.tm_year = y - 1900;
	tm.tm_mon = mon - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = s;
	return timegm(&tm);
}

bool ends_with(const std::string &s, const std::string &tail)
{
	return s.size() >= tail.size() &&
	       s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

const std::string FFFD = "\xEF\xBF\xBD";

} // namespace

// ---- UTF-8 ---------------------------------------------------------------

TEST(Utf8, ValidAndInvalid)
{
	EXPECT_TRUE(valid_utf8(""));
	EXPECT_TRUE(valid_utf8("plain"));
	EXPECT_TRUE(valid_utf8("Re\xC3\xA7us \xE6\x97\xA5 \xF0\x9F\x98\x80"));
	EXPECT_FALSE(valid_utf8("\xFF"));
	EXPECT_FALSE(valid_utf8("\xC0\xAF"));	      // overlong '/'
	EXPECT_FALSE(valid_utf8("\xED\xA0\x80"));     // surrogate
	EXPECT_FALSE(valid_utf8("\xF4\x90\x80\x80")); // > U+10FFFF
	EXPECT_FALSE(valid_utf8("\xE2\x82"));	      // truncated
	EXPECT_FALSE(valid_utf8(std::string("a\0b", 3)));
}

TEST(Utf8, CleanReplacesEachInvalidByte)
{
	EXPECT_EQ(clean("a\xFF"
			"b"),
		  "a" + FFFD + "b");
	EXPECT_EQ(clean("\xE2\x82"
			"A"),
		  FFFD + FFFD + "A");
	EXPECT_EQ(clean("\xC0\xAF"), FFFD + FFFD);
	EXPECT_EQ(clean("\xED\xA0\x80"), FFFD + FFFD + FFFD);
	EXPECT_EQ(clean("\xF4\x90\x80\x80"), FFFD + FFFD + FFFD + FFFD);
	EXPECT_EQ(clean(std::string("a\0b", 3)), "a" + FFFD + "b");
	EXPECT_EQ(clean(""), "");
	EXPECT_EQ(own(mfs_utf8_clean(nullptr, 0)), "");
}

TEST(Utf8, CleanKeepsValidText)
{
	const std::string s = "Gr\xC3\xBC\xC3\x9F\x65 \xE2\x82\xAC "
			      "\xF0\x9F\x98\x80 \xE6\x97\xA5\xE6\x9C\xAC";
	EXPECT_EQ(clean(s), s);
}

TEST(TextToUtf8, CharsetsAndFallbacks)
{
	size_t n = 0;
	std::string r =
	    own(mfs_text_to_utf8("koi8-r", "\xF0\xD2\xC9\xD7\xC5\xD4", 6, &n));
	EXPECT_EQ(r,
		  "\xD0\x9F\xD1\x80\xD0\xB8\xD0\xB2\xD0\xB5\xD1\x82"); // Привет
	EXPECT_EQ(n, r.size());
	// no charset: UTF-8 when valid, else windows-1252
	EXPECT_EQ(own(mfs_text_to_utf8(nullptr, "caf\xC3\xA9", 5, nullptr)),
		  "caf\xC3\xA9");
	EXPECT_EQ(own(mfs_text_to_utf8(nullptr, "caf\xE9", 4, nullptr)),
		  "caf\xC3\xA9");
	EXPECT_EQ(
	    own(mfs_text_to_utf8("x-no-such-charset", "\x80", 1, nullptr)),
	    "\xE2\x82\xAC");
	// a name that is not a charset name never reaches iconv
	EXPECT_EQ(own(mfs_text_to_utf8("UTF-8//IGNORE", "\x80", 1, nullptr)),
		  "\xE2\x82\xAC");
	// invalid bytes in the charset become U+FFFD
	EXPECT_EQ(own(mfs_text_to_utf8("utf-8",
				       "a\xFF"
				       "b",
				       3, nullptr)),
		  "a" + FFFD + "b");
	// iso-8859-1 is read as windows-1252
	EXPECT_EQ(own(mfs_text_to_utf8("ISO-8859-1", "\x93x\x94", 3, nullptr)),
		  "\xE2\x80\x9Cx\xE2\x80\x9D");
	// NUL bytes do not survive
	EXPECT_EQ(own(mfs_text_to_utf8("utf-8", "a\0b", 3, nullptr)),
		  "a" + FFFD + "b");
	EXPECT_EQ(own(mfs_text_to_utf8("utf-8", nullptr, 0, &n)), "");
	EXPECT_EQ(n, 0u);
}

// ---- modified UTF-7 --------------------------------------------------------

TEST(Mutf7, Rfc3501Examples)
{
	EXPECT_EQ(dec7("~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
		  "~peter/mail/\xE5\x8F\xB0\xE5\x8C\x97/"
		  "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E");
	EXPECT_EQ(enc7("~peter/mail/\xE5\x8F\xB0\xE5\x8C\x97/"
		       "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E"),
		  "~peter/mail/&U,BTFw-/&ZeVnLIqe-");
}

TEST(Mutf7, RoundTrips)
{
	const struct {
		const char *utf8, *mutf7;
	} cases[] = {
	    {"Re\xC3\xA7us", "Re&AOc-us"},
	    {"\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E", "&ZeVnLIqe-"},
	    {"&", "&-"},
	    {"a&b", "a&-b"},
	    {"&\xC3\xA7", "&-&AOc-"},
	    {"\xC3\xA7&", "&AOc-&-"},
	    {"INBOX", "INBOX"},
	    {"", ""},
	    {"\xF0\x9F\x98\x80", "&2D3eAA-"},
	    {"a\x01"
	     "b",
	     "a&AAE-b"},
	};
	for (const auto &c : cases) {
		EXPECT_EQ(enc7(c.utf8), c.mutf7) << c.utf8;
		EXPECT_EQ(dec7(c.mutf7), c.utf8) << c.mutf7;
	}
}

TEST(Mutf7, InvalidInputIsEinval)
{
	const char *bad[] = {
	    "&",	    // unterminated
	    "&AOc",	    // unterminated
	    "a&AOc b",	    // space inside base64
	    "&Jjo!-",	    // not in the alphabet
	    "&A/c-",	    // '/' is standard base64, not modified
	    "&AGE-",	    // encoded 'a'
	    "&ACY-",	    // encoded '&'
	    "&AAA-",	    // encoded NUL
	    "&AOcA-",	    // 8 bits left over: odd UTF-16
	    "&AOd-",	    // non-zero padding bits
	    "&2D0-",	    // lone high surrogate
	    "&3gA-",	    // lone low surrogate
	    "&2D0A5w-",	    // high surrogate followed by U+00E7
	    "&AOc-&AOc-",   // null shift
	    "Re\xC3\xA7us", // raw 8-bit
	    "a\tb",	    // raw control character
	    "&&-",
	};
	for (const char *b : bad) {
		errno = 0;
		char *r = mfs_mutf7_decode(b);
		EXPECT_EQ(r, nullptr) << b;
		EXPECT_EQ(errno, EINVAL) << b;
		free(r);
	}
}

TEST(Mutf7, EncodeRejectsInvalidUtf8)
{
	errno = 0;
	EXPECT_EQ(mfs_mutf7_encode("a\xFF"), nullptr);
	EXPECT_EQ(errno, EINVAL);
	errno = 0;
	EXPECT_EQ(mfs_mutf7_encode("\xED\xA0\x80"), nullptr);
	EXPECT_EQ(errno, EINVAL);
}

// ---- RFC 2047 --------------------------------------------------------------

TEST(HdrDecode, Rfc2047Section8Headers)
{
	EXPECT_EQ(hdr("=?US-ASCII?Q?Keith_Moore?= <moore@cs.utk.edu>"),
		  "Keith Moore <moore@cs.utk.edu>");
	EXPECT_EQ(hdr("=?ISO-8859-1?Q?Keld_J=F8rn_Simonsen?= <keld@dkuug.dk>"),
		  "Keld J\xC3\xB8rn Simonsen <keld@dkuug.dk>");
	EXPECT_EQ(hdr("=?ISO-8859-1?Q?Andr=E9?= Pirard <PIRARD@vm1.ulg.ac.be>"),
		  "Andr\xC3\xA9 Pirard <PIRARD@vm1.ulg.ac.be>");
	EXPECT_EQ(
	    hdr("=?ISO-8859-1?B?SWYgeW91IGNhbiByZWFkIHRoaXMgeW8=?=\r\n"
		"    =?ISO-8859-2?B?dSB1bmRlcnN0YW5kIHRoZSBleGFtcGxlLg==?="),
	    "If you can read this you understand the example.");
	EXPECT_EQ(
	    hdr("=?ISO-8859-1?Q?Olle_J=E4rvefelt?= <ojarnef@admin.kth.se>"),
	    "Olle J\xC3\xA4rvefelt <ojarnef@admin.kth.se>");
	EXPECT_EQ(
	    hdr("=?ISO-8859-1?Q?Patrik_F=E4ltstr=F6m?= <paf@nada.kth.se>"),
	    "Patrik F\xC3\xA4ltstr\xC3\xB6m <paf@nada.kth.se>");
	EXPECT_EQ(hdr("ietf-822@dimacs.rutgers.edu, ojarnef@admin.kth.se"),
		  "ietf-822@dimacs.rutgers.edu, ojarnef@admin.kth.se");
	EXPECT_EQ(hdr("Time for ISO 10646?"), "Time for ISO 10646?");
	// "םולש ןב ילטפנ" in ISO-8859-8
	EXPECT_EQ(hdr("Nathaniel Borenstein <nsb@thumper.bellcore.com>\r\n"
		      "    (=?iso-8859-8?b?7eXs+SDv4SDp7Oj08A==?=)"),
		  "Nathaniel Borenstein <nsb@thumper.bellcore.com>    ("
		  "\xD7\x9D\xD7\x95\xD7\x9C\xD7\xA9 \xD7\x9F\xD7\x91 "
		  "\xD7\x99\xD7\x9C\xD7\x98\xD7\xA4\xD7\xA0)");
}

TEST(HdrDecode, Rfc2047Section8Table)
{
	EXPECT_EQ(hdr("(=?ISO-8859-1?Q?a?=)"), "(a)");
	EXPECT_EQ(hdr("(=?ISO-8859-1?Q?a?= b)"), "(a b)");
	EXPECT_EQ(hdr("(=?ISO-8859-1?Q?a?= =?ISO-8859-1?Q?b?=)"), "(ab)");
	EXPECT_EQ(hdr("(=?ISO-8859-1?Q?a?=  =?ISO-8859-1?Q?b?=)"), "(ab)");
	EXPECT_EQ(hdr("(=?ISO-8859-1?Q?a?=\r\n    =?ISO-8859-1?Q?b?=)"),
		  "(ab)");
	EXPECT_EQ(hdr("(=?ISO-8859-1?Q?a_b?=)"), "(a b)");
	EXPECT_EQ(hdr("(=?ISO-8859-1?Q?a?= =?ISO-8859-2?Q?_b?=)"), "(a b)");
}

TEST(HdrDecode, QAndCase)
{
	EXPECT_EQ(hdr("=?utf-8?q?caf=C3=A9_au_lait?="), "caf\xC3\xA9 au lait");
	EXPECT_EQ(hdr("=?UTF-8?Q?caf=c3=a9?="), "caf\xC3\xA9");
	EXPECT_EQ(hdr("=?Utf-8?b?Y2Fmw6k=?="), "caf\xC3\xA9");
	EXPECT_EQ(hdr("=?US-ASCII*EN?Q?Keith_Moore?="), "Keith Moore");
	EXPECT_EQ(hdr("=?utf-8?q?"
		      "?="),
		  "");
	// B without its padding, as some senders write it
	EXPECT_EQ(hdr("=?utf-8?B?Y2Fmw6k?="), "caf\xC3\xA9");
}

TEST(HdrDecode, Charsets)
{
	EXPECT_EQ(hdr("=?iso-8859-1?q?Gr=FC=DFe?="), "Gr\xC3\xBC\xC3\x9F"
						     "e");
	EXPECT_EQ(hdr("=?koi8-r?B?8NLJ18XUIM3J0g==?="),
		  "\xD0\x9F\xD1\x80\xD0\xB8\xD0\xB2\xD0\xB5\xD1\x82 "
		  "\xD0\xBC\xD0\xB8\xD1\x80");
	EXPECT_EQ(hdr("=?shift_jis?B?k/qWe4zqgsyDgYFbg4s=?="),
		  "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E\xE3\x81\xAE"
		  "\xE3\x83\xA1\xE3\x83\xBC\xE3\x83\xAB");
	EXPECT_EQ(hdr("=?gb2312?B?1tDOxNPKvP4=?="),
		  "\xE4\xB8\xAD\xE6\x96\x87\xE9\x82\xAE\xE4\xBB\xB6");
	// stateful encoding
	EXPECT_EQ(hdr("=?ISO-2022-JP?B?GyRCRnxLXDhsGyhC?="),
		  "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E");
}

TEST(HdrDecode, MultibyteSplitAcrossWords)
{
	// "€" = E2 82 AC, split after two bytes
	EXPECT_EQ(hdr("=?utf-8?B?4oI=?= =?utf-8?B?rA==?="), "\xE2\x82\xAC");
	EXPECT_EQ(hdr("=?UTF-8?Q?=E2=82?=\r\n =?utf-8?q?=AC_rates?="),
		  "\xE2\x82\xAC rates");
	// B then Q in the same charset
	EXPECT_EQ(hdr("=?utf-8?B?4oI=?= =?utf-8?Q?=AC?="), "\xE2\x82\xAC");
	// "日本語" in Shift_JIS, split inside the second character
	EXPECT_EQ(hdr("=?shift_jis?B?k/qW?= =?shift_jis?B?e4zq?="),
		  "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E");
}

TEST(HdrDecode, RawKeptWhenUndecodable)
{
	EXPECT_EQ(hdr("a =?x-unknown?Q?abc?= b"), "a =?x-unknown?Q?abc?= b");
	EXPECT_EQ(hdr("=?utf-8?B?!!!!?="), "=?utf-8?B?!!!!?=");
	EXPECT_EQ(hdr("=?utf-8?B?Y?="), "=?utf-8?B?Y?=");
	EXPECT_EQ(hdr("=?utf-8?Q?=ZZ?="), "=?utf-8?Q?=ZZ?=");
	EXPECT_EQ(hdr("=?utf-8?Q?a="), "=?utf-8?Q?a=");
	EXPECT_EQ(hdr("=?utf-8?X?abc?="), "=?utf-8?X?abc?=");
	EXPECT_EQ(hdr("=?utf/8?Q?abc?="), "=?utf/8?Q?abc?=");
	// an unknown word between two good ones keeps its whitespace
	EXPECT_EQ(hdr("=?utf-8?q?a?= =?x-unknown?q?b?= =?utf-8?q?c?="),
		  "a =?x-unknown?q?b?= c");
	// whitespace next to plain text is kept
	EXPECT_EQ(hdr("=?utf-8?q?a?= b =?utf-8?q?c?="), "a b c");
	EXPECT_EQ(hdr("Re:=?utf-8?Q?caf=C3=A9?="), "Re:caf\xC3\xA9");
}

TEST(HdrDecode, BadBytesInsideWords)
{
	EXPECT_EQ(hdr("=?utf-8?Q?a=FFb?="), "a" + FFFD + "b");
	EXPECT_EQ(hdr("=?utf-8?Q?a=00b?="), "a" + FFFD + "b");
	EXPECT_EQ(hdr("=?utf-8?B?4oI=?="), FFFD + FFFD);
}

TEST(HdrDecode, EightBitAndUnfolding)
{
	EXPECT_EQ(hdr("Caf\xE9 \x93ok\x94 \x80"),
		  "Caf\xC3\xA9 \xE2\x80\x9Cok\xE2\x80\x9D \xE2\x82\xAC");
	EXPECT_EQ(hdr("Caf\xC3\xA9"), "Caf\xC3\xA9");
	EXPECT_EQ(hdr("\xE9t\xE9 =?utf-8?q?=C3=A9?="),
		  "\xC3\xA9t\xC3\xA9 \xC3\xA9");
	EXPECT_EQ(hdr("\x81"), FFFD); // undefined in windows-1252
	EXPECT_EQ(hdr("a\r\n b"), "a b");
	EXPECT_EQ(hdr("a\n\tb"), "a\tb");
	EXPECT_EQ(hdr("a\r\n"), "a");
	EXPECT_EQ(hdr("a\rb\nc"), "a b c");
	EXPECT_EQ(hdr(""), "");
}

TEST(Rfc2231, Decode)
{
	EXPECT_EQ(own(mfs_rfc2231_decode("utf-8''%E2%82%AC%20rates.pdf")),
		  "\xE2\x82\xAC rates.pdf");
	EXPECT_EQ(own(mfs_rfc2231_decode("iso-8859-1'en'%A3%20rates")),
		  "\xC2\xA3 rates");
	EXPECT_EQ(own(mfs_rfc2231_decode("koi8-r''%F0%D2%C9")),
		  "\xD0\x9F\xD1\x80\xD0\xB8");
	EXPECT_EQ(own(mfs_rfc2231_decode("''a%20b")), "a b");
	EXPECT_EQ(own(mfs_rfc2231_decode("a%20b")), "a b");
	EXPECT_EQ(own(mfs_rfc2231_decode("utf-8''100%")), "100%");
	EXPECT_EQ(own(mfs_rfc2231_decode("utf-8''%zz%4")), "%zz%4");
	EXPECT_EQ(own(mfs_rfc2231_decode("utf-8''a%00b")), "a" + FFFD + "b");
	EXPECT_EQ(own(mfs_rfc2231_decode("x-unknown''caf%E9")), "caf\xC3\xA9");
	EXPECT_EQ(own(mfs_rfc2231_decode("")), "");
}

// ---- names ---------------------------------------------------------------

TEST(Sanitize, PathsAndDots)
{
	const std::string slash = "\xE2\x88\x95";
	EXPECT_EQ(san("../../etc/passwd"),
		  ".." + slash + ".." + slash + "etc" + slash + "passwd");
	EXPECT_EQ(san("/abs/path"), slash + "abs" + slash + "path");
	EXPECT_EQ(san("."), "_");
	EXPECT_EQ(san(".."), "__");
	EXPECT_EQ(san(""), "unnamed");
	EXPECT_EQ(san(nullptr), "unnamed");
	EXPECT_EQ(san(" \t "), "unnamed");
	EXPECT_EQ(san(" . "), "_");
	EXPECT_EQ(san("..."), "...");
	EXPECT_EQ(san(".bashrc"), ".bashrc");
	EXPECT_EQ(san("report.pdf"), "report.pdf");
}

TEST(Sanitize, ControlAndBidi)
{
	// U+202E RIGHT-TO-LEFT OVERRIDE hides "exe.pdf" as "fdp.exe"
	EXPECT_EQ(san("invoice\xE2\x80\xAE"
		      "fdp.exe"),
		  "invoicefdp.exe");
	EXPECT_EQ(san("a\xE2\x81\xA6"
		      "b\xE2\x81\xA9"
		      "c\xE2\x80\x8F"
		      "d\xD8\x9C"
		      "e"),
		  "abcde");
	EXPECT_EQ(san("a\x01"
		      "b"),
		  "a_b");
	EXPECT_EQ(san("a\x7F"
		      "b\xC2\x85"
		      "c"),
		  "a_b_c");
	EXPECT_EQ(san("a\tb\r\nc"), "a b  c");
	EXPECT_EQ(san("  report.pdf \xE3\x80\x80"), "report.pdf");
	EXPECT_EQ(san("a\xFF"
		      "b"),
		  "a" + FFFD + "b");
}

TEST(Sanitize, LongNamesKeepExtension)
{
	std::string name(1000, 'x');
	name += ".pdf";
	std::string r = san(name.c_str());
	EXPECT_EQ(r.size(), 255u);
	EXPECT_TRUE(ends_with(r, "xx.pdf"));

	// 2-byte characters: the cut must fall on a boundary
	std::string multi;
	for (int i = 0; i < 500; i++)
		multi += "\xC3\xA9";
	r = san((multi + ".docx").c_str());
	EXPECT_LE(r.size(), 255u);
	EXPECT_GE(r.size(), 254u);
	EXPECT_TRUE(valid_utf8(r));
	EXPECT_TRUE(ends_with(r, "\xC3\xA9.docx"));

	// 3-byte characters, no extension
	std::string cjk;
	for (int i = 0; i < 400; i++)
		cjk += "\xE6\x97\xA5";
	r = san(cjk.c_str());
	EXPECT_EQ(r.size(), 255u);
	EXPECT_TRUE(valid_utf8(r));

	// an "extension" longer than 16 bytes is not one
	std::string longext =
	    std::string(300, 'a') + "." + std::string(20, 'b');
	r = san(longext.c_str());
	EXPECT_EQ(r, longext.substr(0, 255));

	// exactly 255 bytes stays as it is
	std::string exact(255, 'z');
	EXPECT_EQ(san(exact.c_str()), exact);
}

TEST(Sanitize, Invariants)
{
	const char *inputs[] = {"/",	 "//",		 "\x01\x02", "\xC0\xAF",
				"a/b/c", "\xE2\x80\xAE", " ",	     "..",
				".",	 "x\xFF/"};
	for (const char *in : inputs) {
		std::string r = san(in);
		EXPECT_TRUE(valid_utf8(r)) << in;
		EXPECT_FALSE(r.empty());
		EXPECT_LE(r.size(), 255u);
		EXPECT_EQ(r.find('/'), std::string::npos) << in;
		EXPECT_NE(r, ".");
		EXPECT_NE(r, "..");
	}
	EXPECT_EQ(san("\xE2\x80\xAE"), "unnamed");
}

TEST(Unique, Suffixes)
{
	EXPECT_EQ(own(mfs_name_unique("report.pdf", 2)), "report (2).pdf");
	EXPECT_EQ(own(mfs_name_unique("README", 3)), "README (3)");
	EXPECT_EQ(own(mfs_name_unique(".bashrc", 2)), ".bashrc (2)");
	EXPECT_EQ(own(mfs_name_unique("a.tar.gz", 10)), "a.tar (10).gz");
	EXPECT_EQ(own(mfs_name_unique("report.pdf", 1)), "report.pdf");

	std::string longname = std::string(251, 'x') + ".pdf";
	std::string r = own(mfs_name_unique(longname.c_str(), 12));
	EXPECT_EQ(r.size(), 255u);
	EXPECT_TRUE(ends_with(r, "x (12).pdf"));

	std::string cjk;
	for (int i = 0; i < 85; i++)
		cjk += "\xE6\x97\xA5";
	r = own(mfs_name_unique(cjk.c_str(), 7));
	EXPECT_LE(r.size(), 255u);
	EXPECT_TRUE(valid_utf8(r));
	EXPECT_TRUE(ends_with(r, "\xE6\x97\xA5 (7)"));
}

// ---- message directory names ---------------------------------------------

class Dirname : public ::testing::Test
{
      protected:
	void SetUp() override
	{
		const char *tz = getenv("TZ");
		had_tz_ = tz != nullptr;
		if (had_tz_)
			old_tz_ = tz;
		setenv("TZ", "UTC", 1);
		tzset();
	}
	void TearDown() override
	{
		if (had_tz_)
			setenv("TZ", old_tz_.c_str(), 1);
		else
			unsetenv("TZ");
		tzset();
	}
	bool had_tz_ = false;
	std::string old_tz_;
};

TEST_F(Dirname, SpecExample)
{
	time_t t = utc(2026, 11, 20, 15, 32, 1);
	EXPECT_EQ(own(mfs_msg_dirname(t, "Alice Smith", "Budget Q4", "4711")),
		  "2026-11-20 1532 Alice Smith \xE2\x80\x94 Budget Q4 "
		  "\xC2\xB7"
		  "4711");
}

TEST_F(Dirname, LocalTime)
{
	setenv("TZ", "UTC-2", 1); // POSIX: two hours east of UTC
	tzset();
	time_t t = utc(2026, 12, 31, 23, 5, 0);
	std::string r = own(mfs_msg_dirname(t, "a", "b", "1"));
	EXPECT_EQ(r.substr(0, 15), "2027-01-01 0105");
}

TEST_F(Dirname, MissingParts)
{
	EXPECT_EQ(own(mfs_msg_dirname(0, nullptr, nullptr, "7")),
		  "0000-00-00 0000 (no sender) \xE2\x80\x94 (no subject) "
		  "\xC2\xB7"
		  "7");
	EXPECT_EQ(own(mfs_msg_dirname((time_t)-1, " ", "\t", "7")),
		  "0000-00-00 0000 (no sender) \xE2\x80\x94 (no subject) "
		  "\xC2\xB7"
		  "7");
	errno = 0;
	EXPECT_EQ(mfs_msg_dirname(1, "a", "b", ""), nullptr);
	EXPECT_EQ(errno, EINVAL);
	errno = 0;
	EXPECT_EQ(mfs_msg_dirname(1, "a", "b", nullptr), nullptr);
	EXPECT_EQ(errno, EINVAL);
	std::string longid(MFS_MSG_ID_MAX + 1, 'u');
	errno = 0;
	EXPECT_EQ(mfs_msg_dirname(1, "a", "b", longid.c_str()), nullptr);
	EXPECT_EQ(errno, EINVAL);
}

TEST_F(Dirname, SanitizesSenderSubjectAndId)
{
	time_t t = utc(2026, 1, 2, 3, 4, 5);
	std::string r = own(mfs_msg_dirname(t, "  Eve \xE2\x80\xAE<e/v@x>\t\t ",
					    "Re:  a/b\r\n\tc\x01\xFF",
					    "ab/c d\x01\xC3\xBC"));
	EXPECT_EQ(r, "2026-01-02 0304 Eve <e\xE2\x88\x95v@x> \xE2\x80\x94 "
		     "Re: a\xE2\x88\x95"
		     "b c_" +
			 FFFD + " \xC2\xB7" + "ab_c_d___");
	char id[64];
	ASSERT_EQ(mfs_msg_dirname_id(r.c_str(), id, sizeof(id)), 0);
	EXPECT_STREQ(id, "ab_c_d___");
}

TEST_F(Dirname, LengthCapWithLongMultibyteSubject)
{
	time_t t = utc(2026, 11, 20, 15, 32, 1);
	std::string subject;
	for (int i = 0; i < 300; i++)
		subject += "\xE6\x97\xA5"; // 日
	std::string r =
	    own(mfs_msg_dirname(t, "Alice Smith", subject.c_str(), "4711"));
	EXPECT_LE(r.size(), 255u);
	EXPECT_GE(r.size(), 250u);
	EXPECT_TRUE(valid_utf8(r));
	EXPECT_EQ(r.substr(0, 28), "2026-11-20 1532 Alice Smith ");
	EXPECT_TRUE(ends_with(r, "\xE6\x97\xA5\xE2\x80\xA6 \xC2\xB7"
				 "4711"));
	EXPECT_EQ(r.find('/'), std::string::npos);
}

TEST_F(Dirname, LengthCapWithLongSenderAndSubject)
{
	std::string sender, subject;
	for (int i = 0; i < 200; i++)
		sender += "\xC3\xA9"; // é
	for (int i = 0; i < 200; i++)
		subject += "\xF0\x9F\x98\x80"; // 😀
	std::string id(MFS_MSG_ID_MAX, 'I');
	std::string r =
	    own(mfs_msg_dirname(utc(2026, 1, 1, 0, 0, 0), sender.c_str(),
				subject.c_str(), id.c_str()));
	EXPECT_LE(r.size(), 255u);
	EXPECT_TRUE(valid_utf8(r));
	EXPECT_TRUE(ends_with(r, " \xC2\xB7" + id));
	EXPECT_EQ(r.substr(0, 16), "2026-01-01 0000 ");
	// both parts were cut and each still shows something
	size_t dash = r.find(" \xE2\x80\x94 ");
	ASSERT_NE(dash, std::string::npos);
	EXPECT_GT(dash, 16u + 20u);
	EXPECT_GT(r.size() - dash - 5 - 2 - id.size(), 20u);

	// a long sender with a short subject: only the sender is cut
	std::string r2 = own(mfs_msg_dirname(utc(2026, 1, 1, 0, 0, 0),
					     sender.c_str(), "Hi", "1"));
	EXPECT_LE(r2.size(), 255u);
	EXPECT_TRUE(valid_utf8(r2));
	EXPECT_TRUE(ends_with(r2, "\xE2\x80\xA6 \xE2\x80\x94 Hi \xC2\xB7"
				  "1"));
}

TEST(DirnameId, Extract)
{
	char id[16];
	EXPECT_EQ(mfs_msg_dirname_id("2026-11-20 1532 A \xE2\x80\x94 x "
				     "\xC2\xB7 y \xC2\xB7"
				     "4711",
				     id, sizeof(id)),
		  0);
	EXPECT_STREQ(id, "4711");
	errno = 0;
	EXPECT_EQ(mfs_msg_dirname_id("no id here", id, sizeof(id)), -1);
	EXPECT_EQ(errno, ENOENT);
	EXPECT_EQ(mfs_msg_dirname_id("ends \xC2\xB7", id, sizeof(id)), -1);
	char tiny[4];
	errno = 0;
	EXPECT_EQ(mfs_msg_dirname_id("x \xC2\xB7"
				     "4711",
				     tiny, sizeof(tiny)),
		  -1);
	EXPECT_EQ(errno, ERANGE);
}

// ---- dates -----------------------------------------------------------------

TEST(ParseDate, Rfc5322Forms)
{
	const time_t want = utc(2026, 11, 20, 14, 32, 1);
	EXPECT_EQ(mfs_parse_date("Thu, 20 Nov 2026 15:32:01 +0100"), want);
	EXPECT_EQ(mfs_parse_date("20 Nov 2026 15:32:01 +0100"), want);
	EXPECT_EQ(mfs_parse_date("Thu, 20 Nov 2026 14:32:01 GMT"), want);
	EXPECT_EQ(mfs_parse_date("Thu, 20 Nov 2026 14:32:01 UT"), want);
	EXPECT_EQ(mfs_parse_date("Thu, 20 Nov 2026 14:32:01 Z"), want);
	EXPECT_EQ(mfs_parse_date("Thu, 20 Nov 2026 09:32:01 EST"), want);
	EXPECT_EQ(mfs_parse_date("Thu, 20 Nov 2026 07:32:01 PDT"), want);
	EXPECT_EQ(mfs_parse_date("Thu, 20 Nov 2026 14:32:01 -0000"), want);
	EXPECT_EQ(mfs_parse_date("Thu, 20 Nov 2026 09:02:01 -0530"), want);
	EXPECT_EQ(mfs_parse_date("Thu, 20 Nov 2026 15:32:01 +0100 (CET)"),
		  want);
	EXPECT_EQ(mfs_parse_date(" (c) Thu (x),\r\n 20 Nov\r\n 2026 "
				 "15:32:01 +0100"),
		  want);
	EXPECT_EQ(mfs_parse_date("thu, 20 nov 2026 15:32:01 +0100"), want);
	EXPECT_EQ(mfs_parse_date("Thursday, 20 November 2026 15:32:01 +0100"),
		  want);
	EXPECT_EQ(mfs_parse_date("20-Nov-2026 15:32:01 +0100"), want);
	EXPECT_EQ(mfs_parse_date("Thu, 20 Nov 2026 14:32:01"), want);
	EXPECT_EQ(mfs_parse_date("Thu, 20 Nov 2026 14:32:01 A"), want);
	EXPECT_EQ(mfs_parse_date("Thu, 20 Nov 2026 14:32:01 CEST"), want);
}

TEST(ParseDate, ObsoleteForms)
{
	EXPECT_EQ(mfs_parse_date("Thu, 20 Nov 2026 15:32 +0100"),
		  utc(2026, 11, 20, 14, 32, 0));
	EXPECT_EQ(mfs_parse_date("Tue, 1 Dec 2026 9:05:00 +0000"),
		  utc(2026, 12, 1, 9, 5, 0));
	EXPECT_EQ(mfs_parse_date("20 Nov 26 15:32:01 +0100"),
		  utc(2026, 11, 20, 14, 32, 1));
	EXPECT_EQ(mfs_parse_date("20 Nov 99 15:32:01 +0100"),
		  utc(1999, 11, 20, 14, 32, 1));
	EXPECT_EQ(mfs_parse_date("20 Nov 126 15:32:01 +0100"),
		  utc(2026, 11, 20, 14, 32, 1));
	EXPECT_EQ(mfs_parse_date("29 Feb 2024 00:00:00 +0000"),
		  utc(2024, 2, 29, 0, 0, 0));
	EXPECT_EQ(mfs_parse_date("1 Jan 1970 00:00:00 +0000"), 0);
}

TEST(ParseDate, Unparseable)
{
	const char *bad[] = {
	    "",
	    "garbage",
	    "Foo, 20 Nov 2026 15:32:01 +0100",
	    "Thu, 32 Nov 2026 15:32:01 +0100",
	    "Thu, 31 Apr 2026 15:32:01 +0100",
	    "29 Feb 2025 00:00:00 +0000",
	    "Thu, 20 Nov 2026 24:00:00 +0100",
	    "Thu, 20 Nov 2026 15:60:00 +0100",
	    "Thu, 20 Nov 2026 15:32:61 +0100",
	    "Thu, 20 Nux 2026 15:32:01 +0100",
	    "Thu, 20 Nov 20266 15:32:01 +0100",
	    "Thu, 20 Nov 2026 15:32:01 +01",
	    "Thu, 20 Nov 2026 15:32:01 +0160",
	    "Thu, 20 Nov 2026",
	    "Thu, 20 Nov 2026 15",
	    "Thu, 20 Nov 2026 15:3",
	    "Thu, 123 Nov 2026 15:32:01 +0100",
	};
	for (const char *b : bad)
		EXPECT_EQ(mfs_parse_date(b), (time_t)-1) << b;
	EXPECT_EQ(mfs_parse_date(nullptr), (time_t)-1);
}

TEST(ParseImapDate, Forms)
{
	const time_t want = utc(2026, 11, 20, 14, 32, 1);
	EXPECT_EQ(mfs_parse_imap_date("20-Nov-2026 15:32:01 +0100"), want);
	EXPECT_EQ(mfs_parse_imap_date("\"20-Nov-2026 15:32:01 +0100\""), want);
	EXPECT_EQ(mfs_parse_imap_date(" 1-Dec-2026 00:00:00 -0500"),
		  utc(2026, 12, 1, 5, 0, 0));
	EXPECT_EQ(mfs_parse_imap_date("1-Dec-2026 00:00:00 +0000"),
		  utc(2026, 12, 1, 0, 0, 0));
	const char *bad[] = {
	    "",
	    "20-Nov-26 15:32:01 +0100",
	    "20 Nov 2026 15:32:01 +0100",
	    "20-November-2026 15:32:01 +0100",
	    "20-Nov-2026 15:32 +0100",
	    "20-Nov-2026 15:32:01",
	    "20-Nov-2026 15:32:01 +0100 x",
	    "31-Nov-2026 15:32:01 +0100",
	};
	for (const char *b : bad)
		EXPECT_EQ(mfs_parse_imap_date(b), (time_t)-1) << b;
	EXPECT_EQ(mfs_parse_imap_date(nullptr), (time_t)-1);
}
