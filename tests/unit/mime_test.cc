// Tests of the MIME-to-tree module: decoders, layout, bounds, and every
// message of tests/mime-corpus checked byte for byte against Python's email
// package (tests/integration/mime_reference.py). Run from the top of the
// repository (MAILFS_SRCDIR overrides).
#include <gtest/gtest.h>

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

extern "C" {
#include "mime.h"
#include "names.h"
}

namespace
{

std::string srcdir()
{
	const char *d = getenv("MAILFS_SRCDIR");
	return d ? d : ".";
}

std::string corpus(const std::string &name)
{
	return srcdir() + "/tests/mime-corpus/" + name;
}

std::string read_file(const std::string &path)
{
	std::ifstream f(path, std::ios::binary);
	std::stringstream ss;
	ss << f.rdbuf();
	return ss.str();
}

int append_sink(void *ctx, const char *d, size_t n)
{
	static_cast<std::string *>(ctx)->append(d, n);
	return 0;
}

std::string b64(const std::string &in)
{
	std::string out;
	EXPECT_EQ(0, mfs_cte_decode(MFS_CTE_BASE64, in.data(), in.size(),
				    append_sink, &out));
	return out;
}

std::string qp(const std::string &in)
{
	std::string out;
	EXPECT_EQ(0, mfs_cte_decode(MFS_CTE_QP, in.data(), in.size(),
				    append_sink, &out));
	return out;
}

std::string text(const char *charset, const std::string &in)
{
	std::string out;
	EXPECT_EQ(0, mfs_text_decode(charset, in.data(), in.size(),
				     append_sink, &out));
	return out;
}

// A message held the way the mount holds it: the bytes stay alive as long
// as the layout.
struct Msg {
	std::string raw;
	mfs_layout *l = nullptr;

	explicit Msg(std::string bytes) : raw(std::move(bytes))
	{
		mfs_err err;
		EXPECT_EQ(0, mfs_layout_build(raw.data(), raw.size(), &l, &err))
			<< err.msg;
	}
	~Msg()
	{
		mfs_layout_free(l);
	}
	mfs_entry *find(const char *path) const
	{
		return mfs_layout_lookup_path(l, path);
	}
	bool has(const char *path) const
	{
		return find(path) != nullptr;
	}
	std::string get(const char *path) const
	{
		mfs_entry *e = find(path);
		std::string out;
		mfs_err err;

		if (e == nullptr) {
			ADD_FAILURE() << "no " << path;
			return "";
		}
		EXPECT_EQ(0, mfs_entry_decode(l, e, append_sink, &out, &err))
			<< err.msg;
		return out;
	}
	std::vector<std::string> names(const char *path) const
	{
		const mfs_dir *d = &l->root_dir;
		std::vector<std::string> v;

		if (*path) {
			mfs_entry *e = find(path);
			if (e == nullptr || !e->is_dir)
				return v;
			d = e->dir;
		}
		for (size_t i = 0; i < d->n; i++)
			v.push_back(d->entries[i].name);
		return v;
	}
};

Msg *load(const std::string &name)
{
	return new Msg(read_file(corpus(name)));
}

bool contains(const std::vector<std::string> &v, const std::string &s)
{
	for (auto &x : v)
		if (x == s)
			return true;
	return false;
}

// ---- writing a layout out as files ------------------------------------

struct FileSink {
	FILE *f;
	uint64_t n;
	size_t max_chunk;
};

int file_sink(void *ctx, const char *d, size_t n)
{
	auto *s = static_cast<FileSink *>(ctx);
	if (n > s->max_chunk)
		s->max_chunk = n;
	s->n += n;
	return fwrite(d, 1, n, s->f) == n ? 0 : MFS_E_IO;
}

void check_name(const char *name)
{
	size_t n = strlen(name);

	EXPECT_GT(n, 0u);
	EXPECT_LE(n, (size_t)MFS_NAME_MAX) << name;
	EXPECT_EQ(nullptr, strchr(name, '/')) << name;
	EXPECT_STRNE(".", name);
	EXPECT_STRNE("..", name);
	EXPECT_TRUE(mfs_utf8_valid(name, n)) << name;
}

// Writes dir under path; checks names, exact sizes and chunk sizes.
// Returns the number of files written.
size_t materialize(mfs_layout *l, const mfs_dir *dir, const std::string &path)
{
	size_t files = 0;

	EXPECT_EQ(0, mkdir(path.c_str(), 0700)) << path;
	for (size_t i = 0; i < dir->n; i++) {
		mfs_entry *e = &dir->entries[i];
		std::string p = path + "/" + e->name;

		check_name(e->name);
		EXPECT_EQ(e, mfs_dir_find(dir, e->name));
		if (e->is_dir) {
			files += materialize(l, e->dir, p);
			continue;
		}
		FileSink s = {fopen(p.c_str(), "wb"), 0, 0};
		mfs_err err;
		uint64_t size = 0;

		EXPECT_NE(nullptr, s.f) << p;
		if (s.f == nullptr)
			continue;
		EXPECT_EQ(0, mfs_entry_decode(l, e, file_sink, &s, &err))
			<< err.msg;
		fclose(s.f);
		EXPECT_EQ(0, mfs_entry_size(l, e, &size, &err)) << err.msg;
		EXPECT_EQ(size, s.n) << p;
		EXPECT_LE(s.max_chunk, 8192u) << p;
		files++;
	}
	return files;
}

struct TempDir {
	std::string path;
	TempDir()
	{
		char t[] = "/tmp/mime_test.XXXXXX";
		EXPECT_NE(nullptr, mkdtemp(t));
		path = t;
	}
	~TempDir()
	{
		std::string cmd = "rm -rf '" + path + "'";
		EXPECT_EQ(0, system(cmd.c_str()));
	}
};

std::vector<std::string> corpus_files()
{
	std::vector<std::string> v;
	DIR *d = opendir((srcdir() + "/tests/mime-corpus").c_str());

	if (d == nullptr)
		return v;
	while (dirent *de = readdir(d)) {
		std::string n = de->d_name;
		if (n.size() > 4 && n.substr(n.size() - 4) == ".eml")
			v.push_back(n);
	}
	closedir(d);
	std::sort(v.begin(), v.end());
	return v;
}

// Lays out file, writes the tree and has Python check every byte.
void check_against_python(const std::string &file)
{
	int fd = open(file.c_str(), O_RDONLY);
	struct stat st;
	mfs_layout *l = nullptr;
	mfs_err err;
	TempDir tmp;

	ASSERT_GE(fd, 0) << file;
	ASSERT_EQ(0, fstat(fd, &st));
	size_t len = st.st_size;
	void *map = len ? mmap(nullptr, len, PROT_READ, MAP_PRIVATE, fd, 0)
			: nullptr;
	close(fd);
	ASSERT_NE(MAP_FAILED, map);
	ASSERT_EQ(0, mfs_layout_build((const char *)map, len, &l, &err))
		<< err.msg;
	std::string dir = tmp.path + "/msg";
	EXPECT_GT(materialize(l, &l->root_dir, dir), 0u);
	mfs_layout_free(l);
	if (map)
		munmap(map, len);

	std::string log = tmp.path + "/check.log";
	std::string cmd = "/usr/bin/python3 " + srcdir() +
			  "/tests/integration/mime_reference.py check '" +
			  file + "' '" + dir + "' > '" + log + "' 2>&1";
	int rc = system(cmd.c_str());
	EXPECT_EQ(0, rc) << read_file(log);
}

} // namespace

// ---- transfer decoders -------------------------------------------------

TEST(MimeBase64, Plain)
{
	EXPECT_EQ("ABC", b64("QUJD"));
	EXPECT_EQ("Hello, world!", b64("SGVsbG8s\r\nIHdvcmxkIQ==\r\n"));
	EXPECT_EQ("", b64(""));
}

TEST(MimeBase64, NoPadding)
{
	EXPECT_EQ("AB", b64("QUI"));
	EXPECT_EQ("A", b64("QQ"));
	EXPECT_EQ("", b64("Q")); // a lone sextet carries no byte
	EXPECT_EQ("ABC", b64("QUJDR"));
}

TEST(MimeBase64, GarbageSkipped)
{
	EXPECT_EQ("ABC", b64("Q*U!J\n D"));
	EXPECT_EQ(std::string("\xff\xfe", 2), b64("//4=\x80\x01"));
}

TEST(MimeBase64, PaddingEndsGroupOnly)
{
	EXPECT_EQ("AA", b64("QQ==QQ=="));
	EXPECT_EQ("AA", b64("QQ=QQ=="));
	EXPECT_EQ("ABC", b64("=QUJD")); // a pad before any data is ignored
}

TEST(MimeQp, SoftBreaksAndEscapes)
{
	EXPECT_EQ("ab", qp("a=\r\nb"));
	EXPECT_EQ("ab", qp("a=\nb"));
	EXPECT_EQ("ab", qp("a= \t\r\nb")); // blanks after '=' (RFC 2045)
	EXPECT_EQ("AB\xc3\xa9", qp("=41=42=c3=A9"));
	EXPECT_EQ("line\r\nnext\n", qp("line\r\nnext\n"));
	EXPECT_EQ("a", qp("a="));
}

TEST(MimeQp, BrokenEscapesKept)
{
	EXPECT_EQ("=4g", qp("=4g"));
	EXPECT_EQ("=41", qp("==41"));
	EXPECT_EQ("x=\xff", qp("x=\xff"));
	EXPECT_EQ("100% =", qp("100% ==")); // "==" is "="
}

TEST(MimeCte, Names)
{
	EXPECT_EQ(MFS_CTE_BASE64, mfs_cte_from_name(" Base64 "));
	EXPECT_EQ(MFS_CTE_QP, mfs_cte_from_name("Quoted-Printable"));
	EXPECT_EQ(MFS_CTE_BINARY, mfs_cte_from_name("8bit"));
	EXPECT_EQ(MFS_CTE_BINARY, mfs_cte_from_name("x-uuencode"));
	EXPECT_EQ(MFS_CTE_BINARY, mfs_cte_from_name(nullptr));
}

// ---- charset conversion ------------------------------------------------

TEST(MimeText, Charsets)
{
	EXPECT_EQ("caf\xc3\xa9", text("iso-8859-1", "caf\xe9"));
	EXPECT_EQ("\xe2\x82\xac", text("iso-8859-15", "\xa4"));
	EXPECT_EQ("\xe2\x80\x9cq\xe2\x80\x9d", text("windows-1252", "\x93q\x94"));
	EXPECT_EQ("\xd0\x9f", text("koi8-r", "\xf0"));
	EXPECT_EQ("\xe6\x97\xa5", text("shift_jis", "\x93\xfa"));
	EXPECT_EQ("\xe4\xbd\xa0", text("gb2312", "\xc4\xe3"));
	// iso-8859-1 is read as windows-1252, as every mail reader does
	EXPECT_EQ("\xe2\x82\xac", text("ISO-8859-1", "\x80"));
}

TEST(MimeText, NoCharsetGuess)
{
	EXPECT_EQ("\xc3\xa9", text(nullptr, "\xc3\xa9"));     // valid UTF-8
	EXPECT_EQ("\xc3\x83\xc2\xa9", text(nullptr, "\xc3\xa9\xff")
					      .substr(0, 4)); // cp1252
	EXPECT_EQ("caf\xc3\xa9", text("us-ascii", "caf\xe9"));
	EXPECT_EQ("caf\xc3\xa9", text("x-no-such", "caf\xe9"));
	EXPECT_EQ("caf\xc3\xa9", text("x-no-such", "caf\xc3\xa9"));
	EXPECT_EQ("a\xef\xbf\xbd", text(nullptr, "a\x81")); // undefined 0x81
	EXPECT_EQ("a", text("bad/name//TRANSLIT", "a"));
}

TEST(MimeText, InvalidBytesOneReplacementEach)
{
	EXPECT_EQ("\xef\xbf\xbd\xef\xbf\xbd"
		  "A",
		  text("utf-8", "\xe2\x82"
				"A"));
	EXPECT_EQ("x\xef\xbf\xbd", text("utf-8", "x\xe2")); // cut at the end
}

TEST(MimeText, Utf8AsIconvMakesIt)
{
	// valid UTF-8 is passed as it is, invalid goes through iconv: either
	// way what iconv's one-shot conversion (names.c) gives, CRLF aside
	const char *ins[] = {"\xef\xbb\xbf" "BOM kept", "caf\xc3\xa9 \xf4\x8f\xbf\xbf!",
			     "surrogate \xed\xa0\x80", "overlong \xc0\xaf!",
			     "plain ascii", ""};
	for (const char *label : {"utf-8", "UTF8", "Utf-8"}) {
		for (const char *in : ins) {
			size_t n = 0;
			char *want = mfs_text_to_utf8(label, in, strlen(in), &n);
			ASSERT_NE(nullptr, want);
			EXPECT_EQ(std::string(want, n), text(label, in))
			    << label << ": " << in;
			free(want);
		}
	}
}

TEST(MimeText, CrlfToLf)
{
	EXPECT_EQ("a\nb\rc\n", text("utf-8", "a\r\nb\rc\r\n"));
	EXPECT_EQ("a\n\r", text(nullptr, "a\r\n\r"));
}

TEST(MimeText, StreamingAcrossChunks)
{
	// Multibyte characters straddle every chunk boundary; the result must
	// equal the one-shot conversion of names.c.
	std::string in;
	for (int i = 0; i < 5000; i++)
		in += (i % 7) ? "\x93\xfa\x96\x7b" : "ab";
	std::string got = text("shift_jis", in);
	size_t n = 0;
	char *want = mfs_text_to_utf8("shift_jis", in.data(), in.size(), &n);
	ASSERT_NE(nullptr, want);
	EXPECT_EQ(std::string(want, n), got);
	free(want);
	std::string u8;
	for (int i = 0; i < 4000; i++)
		u8 += "\xe2\x82\xac\xf0\x9f\x98\x80";
	EXPECT_EQ(u8, text(nullptr, u8));
	EXPECT_EQ(u8, text("utf-8", u8));
}

// ---- structure ---------------------------------------------------------

TEST(MimeLayout, SimpleMessage)
{
	Msg m("From: A <a@x>\r\nSubject: Hi\r\n\r\nHello\r\n");
	EXPECT_EQ("Hello\n", m.get("body.txt"));
	EXPECT_EQ("A <a@x>\n", m.get("from"));
	EXPECT_EQ("Hi\n", m.get("subject"));
	EXPECT_EQ("\n", m.get("date"));
	EXPECT_FALSE(m.has("to"));
	EXPECT_FALSE(m.has("cc"));
	EXPECT_FALSE(m.has("body.html"));
	EXPECT_EQ("From: A <a@x>\nSubject: Hi\n", m.get("headers"));
	EXPECT_EQ("text/plain\n", m.get("parts/1/type"));
	EXPECT_EQ("Hello\r\n", m.get("parts/1/content"));
	EXPECT_EQ(m.raw, m.get("message.eml"));
	EXPECT_STREQ("1", m.l->root->section);
}

TEST(MimeLayout, EmptyMessage)
{
	Msg m("");
	EXPECT_EQ("", m.get("body.txt"));
	EXPECT_EQ("\n", m.get("subject"));
	EXPECT_EQ("", m.get("headers"));
	EXPECT_TRUE(m.has("parts/1/content"));
	EXPECT_EQ((time_t)-1, m.l->date);
}

TEST(MimeLayout, Lookup)
{
	std::unique_ptr<Msg> m(load("nested-mixed.eml"));
	const char *comp[] = {"parts", "1", "2", "2", "type"};
	mfs_entry *e = mfs_layout_lookup(m->l, comp, 5);
	ASSERT_NE(nullptr, e);
	EXPECT_EQ("image/png\n", m->get("parts/1/2/2/type"));
	EXPECT_EQ(e, m->find("/parts//1/2/2/type"));
	EXPECT_EQ(nullptr, m->find("parts/1/9"));
	EXPECT_EQ(nullptr, m->find("body.txt/x"));
	EXPECT_EQ(nullptr, mfs_layout_lookup(m->l, comp, 0));
	EXPECT_GT(m->l->date, 0);
	EXPECT_EQ("text/plain; charset=utf-8\n", m->get("parts/1/1/type"));
	EXPECT_EQ("multipart/related\n", m->get("parts/1/2/type"));
	EXPECT_TRUE(m->has("report.pdf"));
	EXPECT_TRUE(m->has("attachment-1.png"));
	EXPECT_TRUE(m->has("body.html"));
}

TEST(MimeLayout, EntryIdsUniqueAndStable)
{
	std::unique_ptr<Msg> a(load("forward-nested.eml"));
	std::unique_ptr<Msg> b(load("forward-nested.eml"));
	mfs_entry *x = a->find("parts/2/parts/2/body.txt");
	mfs_entry *y = b->find("parts/2/parts/2/body.txt");
	ASSERT_NE(nullptr, x);
	ASSERT_NE(nullptr, y);
	EXPECT_EQ(x->id, y->id);
	EXPECT_NE(x->id, a->find("parts/2/body.txt")->id);
	EXPECT_LE(x->id, a->l->nentries);
}

TEST(MimeLayout, ForwardInsideForward)
{
	std::unique_ptr<Msg> m(load("forward-nested.eml"));
	EXPECT_EQ("Forwarding twice.\n", m->get("body.txt"));
	EXPECT_TRUE(m->has("forwarded.eml"));
	EXPECT_EQ(m->get("parts/2/content"), m->get("forwarded.eml"));
	EXPECT_EQ(m->get("parts/2/content"), m->get("parts/2/message.eml"));
	EXPECT_EQ("Middle forward\n", m->get("parts/2/subject"));
	EXPECT_EQ("message/rfc822\n", m->get("parts/2/type"));
	EXPECT_EQ("See the message below.\n", m->get("parts/2/body.txt"));
	EXPECT_EQ("Innermost\n", m->get("parts/2/parts/2/subject"));
	EXPECT_EQ("Tr\xc3\xa8s bien, the innermost message.\n",
		  m->get("parts/2/parts/2/body.txt"));
	EXPECT_EQ("text/plain; charset=iso-8859-1\n",
		  m->get("parts/2/parts/2/parts/1/type"));
	// IMAP section numbers
	const mfs_part *inner = m->find("parts/2/parts/2/parts/1/content")->part;
	EXPECT_STREQ("2.2.1", inner->section);
	EXPECT_STREQ("2.1", m->find("parts/2/parts/1/content")->part->section);
	EXPECT_STREQ("", m->l->root->section);
	// the middle message attaches the innermost one
	EXPECT_TRUE(m->has("parts/2/attachment-1.eml"));
}

TEST(MimeLayout, InlineTextWithANameIsTheBody)
{
	// RFC 2183: "inline" with a file name is still the body; the next
	// named inline text and a named part without disposition are files
	std::unique_ptr<Msg> m(load("inline-named-body.eml"));
	EXPECT_EQ("The body, named.\n", m->get("body.txt"));
	EXPECT_FALSE(m->has("note.txt"));
	EXPECT_EQ("Second text.\n", m->get("second.txt"));
	EXPECT_EQ("Named, no disposition.\n", m->get("unmarked.txt"));
}

TEST(MimeLayout, Rfc822SinglePart)
{
	std::unique_ptr<Msg> m(load("rfc822-simple.eml"));
	EXPECT_EQ("\xd0\xa2\xd0\xb5\xd0\xba\xd1\x81\xd1\x82",
		  m->get("parts/2/body.txt").substr(0, 10));
	EXPECT_EQ("Carol <carol@example.net>\n", m->get("parts/2/from"));
	EXPECT_STREQ("2.1", m->find("parts/2/parts/1/content")->part->section);
}

TEST(MimeLayout, AlternativeAndHtmlOnly)
{
	std::unique_ptr<Msg> m(load("alternative.eml"));
	EXPECT_EQ("<html><body><p>Hello <b>world</b></p></body></html>\n",
		  m->get("body.html"));
	EXPECT_EQ(0u, m->get("body.txt").find("Gr\xc3\xbc\xc3\x9f"
					      "e"));
	std::unique_ptr<Msg> h(load("html-only.eml"));
	EXPECT_FALSE(h->has("body.txt"));
	EXPECT_TRUE(h->has("body.html"));
}

TEST(MimeLayout, HostileNames)
{
	std::unique_ptr<Msg> m(load("hostile-names.eml"));
	auto v = m->names("");
	EXPECT_TRUE(contains(v, "..\xe2\x88\x95..\xe2\x88\x95"
				"etc\xe2\x88\x95passwd"));
	EXPECT_TRUE(contains(v, "evilfdp.exe")); // U+202E removed
	EXPECT_TRUE(contains(v, "body (2).txt"));
	EXPECT_EQ("not the body\n", m->get("body (2).txt"));
	EXPECT_EQ("Names.\n", m->get("body.txt"));
	EXPECT_TRUE(contains(v, "report.pdf"));
	EXPECT_TRUE(contains(v, "report (2).pdf"));
	EXPECT_TRUE(contains(v, "__"));
	EXPECT_TRUE(contains(v, "parts (2)"));
	EXPECT_TRUE(contains(v, "a\"b;c.txt"));
}

TEST(MimeLayout, EncodedFileNames)
{
	std::unique_ptr<Msg> a(load("rfc2231-long.eml"));
	std::string want = "\xc3\x9c"
			   "bersicht der Quartalsergebnisse \xe2\x80\x94 "
			   "R\xc3\xa9gion \xc3\x8e"
			   "le-de-France et Provence-Alpes-C\xc3\xb4te "
			   "d'Azur, ann\xc3\xa9"
			   "e 2025 (version d\xc3\xa9"
			   "finitive).pdf";
	EXPECT_TRUE(contains(a->names(""), want));
	std::unique_ptr<Msg> b(load("rfc2047-name.eml"));
	EXPECT_TRUE(contains(b->names(""), "Pr\xc3\xbc"
					   "fbericht \xe2\x84\x96"
					   "5.pdf"));
	EXPECT_TRUE(contains(b->names(""), "caf\xc3\xa9 photo.gif"));
	std::unique_ptr<Msg> c(load("rfc2231-latin1.eml"));
	EXPECT_TRUE(contains(c->names(""), "r\xc3\xa9sum\xc3\xa9.doc"));
}

TEST(MimeLayout, UnnamedAttachments)
{
	std::unique_ptr<Msg> m(load("unnamed-attachments.eml"));
	auto v = m->names("");
	EXPECT_TRUE(contains(v, "attachment-1.pdf"));
	EXPECT_TRUE(contains(v, "attachment-2.png"));
	EXPECT_TRUE(contains(v, "attachment-3.bin"));
}

TEST(MimeLayout, Headers)
{
	std::unique_ptr<Msg> m(load("encoded-headers.eml"));
	EXPECT_EQ("Andr\xc3\xa9 Pirard <pirard@example.be>\n", m->get("from"));
	EXPECT_EQ("Caf\xc3\xa9 cr\xc3\xa8me folded continuation\n",
		  m->get("subject"));
	std::string h = m->get("headers");
	EXPECT_NE(std::string::npos,
		  h.find("Subject: Caf\xc3\xa9 cr\xc3\xa8me folded "
			 "continuation\n"));
	EXPECT_NE(std::string::npos, h.find("Cc: \xe6\x97\xa5\xe6\x9c\xac"));
	std::unique_ptr<Msg> r(load("8bit-headers.eml"));
	EXPECT_EQ("J\xc3\xbcrgen M\xc3\xbcller <jm@example.de>\n",
		  r->get("from"));
	EXPECT_EQ("\xc3\x89lodie <e@example.fr>\n", r->get("cc"));
}

TEST(MimeLayout, BrokenInput)
{
	Msg a("Subject: x");
	EXPECT_EQ("x\n", a.get("subject"));
	EXPECT_EQ("", a.get("body.txt"));
	Msg b("Just body\nmore\n");
	EXPECT_EQ("Just body\nmore\n", b.get("body.txt"));
	EXPECT_EQ("", b.get("headers"));
	std::unique_ptr<Msg> c(load("missing-close.eml"));
	EXPECT_EQ("First part.\n", c->get("body.txt"));
	EXPECT_EQ(90u, c->get("parts/2/content").size());
	std::unique_ptr<Msg> d(load("boundary-never.eml"));
	EXPECT_EQ("No delimiter anywhere.\n--z\n", d->get("body.txt"));
	std::unique_ptr<Msg> e(load("unknown-cte.eml"));
	EXPECT_EQ("raw =41 bytes QQ==\n", e->get("body.txt"));
	std::unique_ptr<Msg> f(load("truncated.eml"));
	EXPECT_EQ("Before the cut.\n", f->get("body.txt"));
	Msg g("Content-Type: multipart/mixed; boundary=b\n\n--b\n");
	EXPECT_TRUE(g.has("parts/1/content"));
}

TEST(MimeLayout, DepthBound)
{
	std::unique_ptr<Msg> m(load("deep-nesting.eml"));
	const mfs_part *p = m->l->root;
	int depth = 0;
	while (p->nchildren > 0) {
		ASSERT_EQ(1u, p->nchildren);
		p = p->children[0];
		depth++;
	}
	EXPECT_EQ(MFS_MIME_DEPTH_MAX, depth);
	EXPECT_TRUE(p->opaque);
	EXPECT_STREQ("multipart", p->type);
	EXPECT_FALSE(m->has("body.txt")); // the leaf is beyond the bound
}

TEST(MimeLayout, PartsBound)
{
	std::unique_ptr<Msg> m(load("many-parts.eml"));
	const mfs_part *r = m->l->root;
	ASSERT_EQ((size_t)MFS_MIME_PARTS_MAX, r->nchildren);
	const mfs_part *last = r->children[r->nchildren - 1];
	EXPECT_TRUE(last->opaque);
	EXPECT_EQ("application/octet-stream\n", m->get("parts/10000/type"));
	EXPECT_EQ(0u, m->get("parts/10000/content").find("Content-Type"));
	EXPECT_EQ("p0", m->get("body.txt"));
}

TEST(MimeLayout, ReadAtOffset)
{
	std::unique_ptr<Msg> m(load("base64-binary.eml"));
	mfs_entry *e = m->find("blob.bin");
	ASSERT_NE(nullptr, e);
	std::string all = m->get("blob.bin");
	ASSERT_EQ(3001u, all.size());
	char buf[100];
	size_t got = 0;
	mfs_err err;
	EXPECT_EQ(0, mfs_entry_read(m->l, e, 2950, buf, sizeof(buf), &got,
				    &err));
	EXPECT_EQ(51u, got);
	EXPECT_EQ(all.substr(2950), std::string(buf, got));
	EXPECT_EQ(0, mfs_entry_read(m->l, e, 5000, buf, sizeof(buf), &got,
				    &err));
	EXPECT_EQ(0u, got);
	EXPECT_EQ(MFS_E_INVAL, mfs_entry_read(m->l, m->find("parts"), 0, buf,
					      sizeof(buf), &got, &err));
}

static int refuse_sink(void *, const char *, size_t)
{
	return MFS_E_IO;
}

TEST(MimeLayout, SinkErrorsPropagate)
{
	std::unique_ptr<Msg> m(load("base64-binary.eml"));
	mfs_err err;
	EXPECT_EQ(MFS_E_IO, mfs_entry_decode(m->l, m->find("blob.bin"),
					     refuse_sink, nullptr, &err));
	EXPECT_EQ(MFS_E_IO, err.code);
}

TEST(MimeLayout, BigAttachmentStreams)
{
	TempDir tmp;
	std::string file = tmp.path + "/big.eml";
	std::string cmd = "/usr/bin/python3 " + srcdir() +
			  "/tests/mime-corpus/make_corpus.py big 3000000 '" +
			  file + "'";
	ASSERT_EQ(0, system(cmd.c_str()));
	{
		std::unique_ptr<Msg> m(new Msg(read_file(file)));
		mfs_entry *e = m->find("big.bin");
		ASSERT_NE(nullptr, e);
		uint64_t size = 0;
		mfs_err err;
		ASSERT_EQ(0, mfs_entry_size(m->l, e, &size, &err));
		EXPECT_EQ(3000000u, size);
		EXPECT_TRUE(e->src.size_known);
	}
	check_against_python(file);
}

// ---- every corpus message against Python ---------------------------------

TEST(MimeCorpus, AtLeastForty)
{
	EXPECT_GE(corpus_files().size(), 40u);
}

class MimeCorpusFile : public ::testing::TestWithParam<std::string>
{
};

TEST_P(MimeCorpusFile, MatchesPythonDecoding)
{
	check_against_python(corpus(GetParam()));
}

INSTANTIATE_TEST_SUITE_P(Corpus, MimeCorpusFile,
			 ::testing::ValuesIn(corpus_files()),
			 [](const ::testing::TestParamInfo<std::string> &i) {
				 std::string n = i.param;
				 for (auto &c : n)
					 if (!isalnum((unsigned char)c))
						 c = '_';
				 return n;
			 });

static int max_chunk_sink(void *ctx, const char *, size_t n)
{
	size_t *m = static_cast<size_t *>(ctx);
	if (n > *m)
		*m = n;
	return 0;
}

TEST(MimeLayout, LongHeaderChunkedAndBounded)
{
	Msg m("Subject: " + std::string(20000, 'a') + "\n\nx\n");
	size_t max = 0;
	mfs_err err;
	EXPECT_EQ(20001u, m.get("subject").size());
	EXPECT_EQ(0, mfs_entry_decode(m.l, m.find("headers"), max_chunk_sink,
				      &max, &err));
	EXPECT_LE(max, 8192u);
	Msg big("Subject: " + std::string(2 * MFS_MIME_FIELD_MAX, 'b') +
		"\n\nx\n");
	std::string s = big.get("subject");
	EXPECT_GE(s.size(), (size_t)MFS_MIME_FIELD_MAX - 1);
	EXPECT_LE(s.size(), (size_t)MFS_MIME_FIELD_MAX + 1);
}

// ---- file mappings: release and skip -----------------------------------

namespace
{

struct MapHooks {
	const char *map = nullptr;
	size_t len = 0;
	int releases = 0;
	size_t hole_off = 0, hole_len = 0; // skip() passes over this
};

void hooks_release(void *ctx)
{
	auto *h = static_cast<MapHooks *>(ctx);

	h->releases++;
	// what fs.c does: the pages go, and are read again from the file
	EXPECT_EQ(0, madvise((void *)h->map, h->len, MADV_DONTNEED));
}

size_t hooks_skip(void *ctx, size_t off)
{
	auto *h = static_cast<MapHooks *>(ctx);

	if (off >= h->hole_off && off - h->hole_off < h->hole_len)
		return h->hole_off + h->hole_len;
	return off;
}

// A multipart message whose attachment is `size` bytes of base64.
std::string big_message(size_t size, std::string *blob)
{
	static const char b64c[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	std::string enc, m;

	for (size_t i = 0; enc.size() < size; i++) {
		enc += b64c[(i * 7 + i / 64) % 64];
		if (enc.size() % 78 == 76)
			enc += "\r\n";
	}
	while (enc.size() % 78 != 0 && enc.size() % 78 % 4 != 0)
		enc += 'A';
	*blob = b64(enc);
	m = "From: a@x\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed;"
	    " boundary=\"bb\"\r\n\r\n--bb\r\nContent-Type: text/plain\r\n\r\n"
	    "hi\r\n--bb\r\nContent-Type: application/octet-stream\r\n"
	    "Content-Disposition: attachment; filename=\"a.bin\"\r\n"
	    "Content-Transfer-Encoding: base64\r\n\r\n" +
	    enc + "\r\n--bb--\r\n";
	return m;
}

} // namespace

TEST(MimeMapped, ReleaseKeepsEveryByteAndIsCalled)
{
	std::string blob, raw = big_message(12u << 20, &blob);
	TempDir tmp;
	std::string path = tmp.path + "/m.eml";
	std::ofstream(path, std::ios::binary) << raw;
	int fd = open(path.c_str(), O_RDONLY);
	ASSERT_GE(fd, 0);
	MapHooks h;
	h.len = raw.size();
	h.map = (const char *)mmap(nullptr, h.len, PROT_READ, MAP_SHARED, fd, 0);
	close(fd);
	ASSERT_NE(MAP_FAILED, (void *)h.map);
	mfs_layout *l = nullptr;
	mfs_err err;
	ASSERT_EQ(0, mfs_layout_build_mapped(h.map, h.len, hooks_release,
					     nullptr, &h, &l, &err))
		<< err.msg;
	int after_parse = h.releases;
	EXPECT_GE(after_parse, 4) << "a 16 MB scan releases every 2 MiB";
	mfs_entry *e = mfs_dir_find(&l->root_dir, "a.bin");
	ASSERT_NE(nullptr, e);
	std::string out;
	ASSERT_EQ(0, mfs_entry_decode(l, e, append_sink, &out, &err)) << err.msg;
	EXPECT_TRUE(out == blob) << "decoded " << out.size() << " bytes, want "
				 << blob.size();
	EXPECT_GE(h.releases - after_parse, 4) << "decoding releases too";
	mfs_layout_free(l);
	munmap((void *)h.map, h.len);
}

TEST(MimeMapped, SkipPassesOverAStretch)
{
	// The attachment's body holds a line that looks like the closing
	// delimiter. Parsed plainly it ends the multipart early; with the
	// body skipped (as a skeleton's hole is) the parse never reads it.
	std::string raw = "From: a@x\r\nMIME-Version: 1.0\r\nContent-Type: "
			  "multipart/mixed; boundary=\"bb\"\r\n\r\n--bb\r\n"
			  "Content-Type: text/plain\r\n\r\nfirst\r\n--bb\r\n"
			  "Content-Type: text/plain\r\n\r\n";
	std::string body = "xxxx\r\n--bb--\r\nyyyy";
	size_t hole = raw.size();
	raw += body + "\r\n--bb\r\nContent-Type: text/plain\r\n\r\nthird\r\n"
		      "--bb--\r\n";
	MapHooks h;
	h.map = raw.data();
	h.len = raw.size();
	h.hole_off = hole;
	h.hole_len = body.size();
	mfs_layout *plain = nullptr, *skipped = nullptr;
	mfs_err err;
	ASSERT_EQ(0, mfs_layout_build(raw.data(), raw.size(), &plain, &err));
	ASSERT_EQ(0, mfs_layout_build_mapped(raw.data(), raw.size(), nullptr,
					     hooks_skip, &h, &skipped, &err));
	EXPECT_EQ(2u, plain->root->nchildren);
	ASSERT_EQ(3u, skipped->root->nchildren);
	EXPECT_EQ(body.size(), skipped->root->children[1]->body_len);
	EXPECT_EQ(0, h.releases);
	mfs_layout_free(plain);
	mfs_layout_free(skipped);
}
