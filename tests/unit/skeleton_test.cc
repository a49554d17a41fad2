// Unit tests of the skeleton of a large message (src/skeleton.c): what it
// plans from a BODYSTRUCTURE, the exact bytes and ranges it writes, the
// structures it declines, and that mime.c lays a skeleton out as it lays
// out the message it stands for.
#include <gtest/gtest.h>

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <libetpan/libetpan.h>

extern "C" {
#include "mime.h"
#include "skeleton.h"
}

namespace
{

/* Owns the BODYSTRUCTURE trees a test builds by hand (what libetpan's
 * parser would make of a server's answer). */
class Arena
{
      public:
	~Arena()
	{
		for (clist *l : lists_)
			clist_free(l);
		for (void *p : mem_)
			free(p);
	}
	template <typename T> T *make()
	{
		T *p = static_cast<T *>(calloc(1, sizeof(T)));
		mem_.push_back(p);
		return p;
	}
	char *str(const std::string &s)
	{
		char *p = strdup(s.c_str());
		mem_.push_back(p);
		return p;
	}
	clist *list()
	{
		clist *l = clist_new();
		lists_.push_back(l);
		return l;
	}

      private:
	std::vector<void *> mem_;
	std::vector<clist *> lists_;
};

struct Leaf {
	std::string type = "text", subtype = "plain";
	int enc = MAILIMAP_BODY_FLD_ENC_7BIT;
	uint32_t size = 0;
};

class Builder
{
      public:
	struct mailimap_body_fields *fields(int enc, uint32_t size)
	{
		auto *f = a.make<mailimap_body_fields>();
		f->bd_encoding = a.make<mailimap_body_fld_enc>();
		f->bd_encoding->enc_type = enc;
		if (enc == MAILIMAP_BODY_FLD_ENC_OTHER)
			f->bd_encoding->enc_value = a.str("x-uuencode");
		f->bd_size = size;
		return f;
	}
	struct mailimap_body *leaf(const Leaf &l)
	{
		auto *b = a.make<mailimap_body>();
		auto *one = a.make<mailimap_body_type_1part>();

		b->bd_type = MAILIMAP_BODY_1PART;
		b->bd_data.bd_body_1part = one;
		if (l.type == "text") {
			one->bd_type = MAILIMAP_BODY_TYPE_1PART_TEXT;
			one->bd_data.bd_type_text =
			    a.make<mailimap_body_type_text>();
			one->bd_data.bd_type_text->bd_media_text =
			    a.str(l.subtype);
			one->bd_data.bd_type_text->bd_fields =
			    fields(l.enc, l.size);
		} else {
			one->bd_type = MAILIMAP_BODY_TYPE_1PART_BASIC;
			auto *basic = a.make<mailimap_body_type_basic>();
			basic->bd_media_basic = a.make<mailimap_media_basic>();
			basic->bd_media_basic->med_type =
			    MAILIMAP_MEDIA_BASIC_OTHER;
			basic->bd_media_basic->med_basic_type = a.str(l.type);
			basic->bd_media_basic->med_subtype = a.str(l.subtype);
			basic->bd_fields = fields(l.enc, l.size);
			one->bd_data.bd_type_basic = basic;
		}
		return b;
	}
	struct mailimap_body *text(uint32_t size,
				   int enc = MAILIMAP_BODY_FLD_ENC_7BIT)
	{
		return leaf({"text", "plain", enc, size});
	}
	struct mailimap_body *binary(uint32_t size,
				     int enc = MAILIMAP_BODY_FLD_ENC_BASE64)
	{
		return leaf({"application", "octet-stream", enc, size});
	}
	/* A multipart; boundary nullptr: none given; no_ext: no extension
	 * data at all (BODY rather than BODYSTRUCTURE). */
	struct mailimap_body *multi(std::vector<struct mailimap_body *> kids,
				    const char *boundary = "b",
				    const char *param = "boundary",
				    bool no_ext = false)
	{
		auto *b = a.make<mailimap_body>();
		auto *mp = a.make<mailimap_body_type_mpart>();

		b->bd_type = MAILIMAP_BODY_MPART;
		b->bd_data.bd_body_mpart = mp;
		mp->bd_list = a.list();
		for (auto *k : kids)
			clist_append(mp->bd_list, k);
		mp->bd_media_subtype = a.str("mixed");
		if (no_ext)
			return b;
		mp->bd_ext_mpart = a.make<mailimap_body_ext_mpart>();
		auto *prm = a.make<mailimap_body_fld_param>();
		prm->pa_list = a.list();
		auto *cs = a.make<mailimap_single_body_fld_param>();
		cs->pa_name = a.str("charset");
		cs->pa_value = a.str("us-ascii");
		clist_append(prm->pa_list, cs);
		if (boundary != nullptr) {
			auto *one = a.make<mailimap_single_body_fld_param>();
			one->pa_name = a.str(param);
			one->pa_value = a.str(boundary);
			clist_append(prm->pa_list, one);
		}
		mp->bd_ext_mpart->bd_parameter = prm;
		return b;
	}
	/* message/rfc822 whose embedded message has body inner. */
	struct mailimap_body *message(struct mailimap_body *inner,
				      int enc = MAILIMAP_BODY_FLD_ENC_7BIT,
				      uint32_t size = 0)
	{
		auto *b = a.make<mailimap_body>();
		auto *one = a.make<mailimap_body_type_1part>();
		auto *msg = a.make<mailimap_body_type_msg>();

		b->bd_type = MAILIMAP_BODY_1PART;
		b->bd_data.bd_body_1part = one;
		one->bd_type = MAILIMAP_BODY_TYPE_1PART_MSG;
		one->bd_data.bd_type_msg = msg;
		msg->bd_fields = fields(enc, size);
		msg->bd_envelope = a.make<mailimap_envelope>();
		msg->bd_body = inner;
		return b;
	}

	Arena a;
};

/* A plan, freed at the end of the test. */
struct Plan {
	struct mfs_skel s = {};
	int rc = -1;
	Plan(const struct mailimap_body *body, uint64_t hole_min)
	{
		struct mfs_err err;
		rc = mfs_skel_plan(body, hole_min, &s, &err);
	}
	~Plan()
	{
		mfs_skel_free(&s);
	}
	/* Each item as one word: "T:<text>", "S:<section>", "H:<section>/N". */
	std::vector<std::string> words() const
	{
		std::vector<std::string> v;

		for (size_t i = 0; i < s.n; i++) {
			const struct mfs_skel_item &it = s.items[i];
			switch (it.kind) {
			case MFS_SKEL_TEXT:
				v.push_back("T:" +
					    std::string(it.text, it.text_len));
				break;
			case MFS_SKEL_SECTION:
				v.push_back("S:" + std::string(it.section));
				break;
			case MFS_SKEL_HOLE:
				v.push_back("H:" + std::string(it.section) +
					    "/" + std::to_string(it.octets));
				break;
			}
		}
		return v;
	}
};

/* What mfs_skel_write() made. */
struct Written {
	int rc = -1;
	struct mfs_err err = {};
	std::string bytes;
	struct mfs_seg *segs = nullptr;
	size_t nsegs = 0;
	~Written()
	{
		mfs_store_segs_free(segs, nsegs);
	}
};

std::string read_fd(int fd)
{
	struct stat st;
	std::string s;

	if (fstat(fd, &st) != 0)
		return s;
	s.resize((size_t)st.st_size);
	size_t got = 0;
	while (got < s.size()) {
		ssize_t r = pread(fd, &s[got], s.size() - got, (off_t)got);
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	s.resize(got);
	return s;
}

void write_skel(const struct mfs_skel *s, Written &w)
{
	int fd = memfd_create("skeleton-test", MFD_CLOEXEC);

	ASSERT_GE(fd, 0);
	w.rc = mfs_skel_write(s, fd, &w.segs, &w.nsegs, &w.err);
	w.bytes = read_fd(fd);
	close(fd);
}

/* The section bytes of a message as an IMAP server gives them, found from
 * mime.c's part tree of the whole message. */
class Sections
{
      public:
	Sections(const std::string &msg) : msg_(msg)
	{
		struct mfs_err err;
		EXPECT_EQ(mfs_mime_parse(msg.data(), msg.size(), &root_, &err),
			  MFS_OK);
		if (root_ != nullptr)
			walk_msg(root_, "");
	}
	~Sections()
	{
		mfs_part_free(root_);
	}
	/* Fills every SECTION item of s; false when one is unknown. */
	bool fill(struct mfs_skel *s)
	{
		for (size_t i = 0; i < s->n; i++) {
			struct mfs_skel_item &it = s->items[i];
			if (it.kind != MFS_SKEL_SECTION)
				continue;
			auto f = map_.find(it.section);
			if (f == map_.end()) {
				ADD_FAILURE() << "no section " << it.section;
				return false;
			}
			it.data = msg_.data() + f->second.first;
			it.data_len = f->second.second;
			it.got = 1;
		}
		return true;
	}
	std::map<std::string, std::pair<size_t, size_t>> map_;

      private:
	static std::string join(const std::string &a, const std::string &b)
	{
		return a.empty() ? b : a + "." + b;
	}
	void put(const std::string &sec, size_t off, size_t len)
	{
		map_[sec] = {off, len};
	}
	/* A message (the top one or an embedded one) at prefix p. */
	void walk_msg(const struct mfs_part *m, const std::string &p)
	{
		put(join(p, "HEADER"), m->hdr_off, m->body_off - m->hdr_off);
		if (m->nchildren > 0) {
			for (size_t i = 0; i < m->nchildren; i++)
				walk_part(m->children[i],
					  join(p, std::to_string(i + 1)));
		} else {
			put(join(p, "1"), m->body_off, m->body_len);
		}
	}
	void walk_part(const struct mfs_part *c, const std::string &sec)
	{
		put(sec + ".MIME", c->hdr_off, c->body_off - c->hdr_off);
		if (c->nchildren > 0) {
			for (size_t i = 0; i < c->nchildren; i++)
				walk_part(c->children[i],
					  sec + "." + std::to_string(i + 1));
		} else if (c->message != nullptr) {
			walk_msg(c->message, sec);
		} else {
			put(sec, c->body_off, c->body_len);
		}
	}

	const std::string &msg_;
	struct mfs_part *root_ = nullptr;
};

/* msg with the ranges of the hole segments made zeros. */
std::string with_holes(std::string msg, const struct mfs_seg *segs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (segs[i].hole && segs[i].off + segs[i].len <= msg.size())
			std::fill(msg.begin() + (long)segs[i].off,
				  msg.begin() + (long)(segs[i].off + segs[i].len),
				  '\0');
	return msg;
}

/* The listing of a layout directory, recursively: one line per entry
 * ("parts/2/type" ...), with each part's type and section. */
void listing(const struct mfs_dir *d, const std::string &prefix,
	     std::vector<std::string> &out)
{
	for (size_t i = 0; i < d->n; i++) {
		const struct mfs_entry &e = d->entries[i];
		std::string line = prefix + e.name;

		if (e.part != nullptr)
			line += std::string(" [") + e.part->type + "/" +
				e.part->subtype + " " + e.part->section + "]";
		out.push_back(line + (e.is_dir ? "/" : ""));
		if (e.is_dir)
			listing(e.dir, prefix + e.name + "/", out);
	}
}

std::vector<std::string> layout_of(const std::string &bytes)
{
	struct mfs_layout *l = nullptr;
	struct mfs_err err;
	std::vector<std::string> v;

	EXPECT_EQ(mfs_layout_build(bytes.data(), bytes.size(), &l, &err),
		  MFS_OK);
	if (l != nullptr)
		listing(&l->root_dir, "", v);
	mfs_layout_free(l);
	return v;
}

/* A leaf of tree p whose body is exactly [off, off + len). */
bool leaf_at(const struct mfs_part *p, size_t off, size_t len)
{
	if (p == nullptr)
		return false;
	if (p->nchildren == 0 && p->message == nullptr && p->body_off == off &&
	    p->body_len == len)
		return true;
	for (size_t i = 0; i < p->nchildren; i++)
		if (leaf_at(p->children[i], off, len))
			return true;
	return leaf_at(p->message, off, len);
}

/*
 * The check of a skeleton against the message it stands for: planned
 * from body, filled with the message's own sections, written; the
 * skeleton must be the message with the holes made zeros (the message is
 * built without preamble or epilogue, which the skeleton drops), each
 * real range must hold the message's bytes, each hole must be the body of
 * one leaf, and mime.c must lay out the same directory tree.
 */
void expect_stands_for(const std::string &msg, const struct mailimap_body *body,
		       uint64_t hole_min, size_t holes)
{
	Plan p(body, hole_min);
	ASSERT_EQ(p.rc, MFS_OK);
	ASSERT_GT(p.s.n, 0u) << "declined";
	Sections secs(msg);
	ASSERT_TRUE(secs.fill(&p.s));
	Written w;
	write_skel(&p.s, w);
	ASSERT_EQ(w.rc, MFS_OK) << w.err.msg;
	ASSERT_EQ(w.bytes.size(), msg.size());
	EXPECT_TRUE(w.bytes == with_holes(msg, w.segs, w.nsegs))
	    << "skeleton differs from the message";
	size_t nholes = 0, end = 0;
	for (size_t i = 0; i < w.nsegs; i++) {
		const struct mfs_seg &g = w.segs[i];
		EXPECT_GE(g.off, end) << "segments in order, not overlapping";
		end = g.off + g.len;
		ASSERT_LE(end, msg.size());
		if (!g.hole) {
			EXPECT_EQ(g.section, nullptr);
			EXPECT_EQ(w.bytes.compare(g.off, g.len, msg, g.off, g.len),
				  0);
			continue;
		}
		nholes++;
		ASSERT_NE(g.section, nullptr);
		auto f = secs.map_.find(g.section);
		ASSERT_NE(f, secs.map_.end()) << g.section;
		EXPECT_EQ(f->second.first, g.off) << g.section;
		EXPECT_EQ(f->second.second, g.len) << g.section;
	}
	EXPECT_EQ(nholes, holes);
	/* each hole is exactly a leaf body of the skeleton's own parse */
	struct mfs_part *tree = nullptr;
	struct mfs_err err;
	ASSERT_EQ(mfs_mime_parse(w.bytes.data(), w.bytes.size(), &tree, &err),
		  MFS_OK);
	for (size_t i = 0; i < w.nsegs; i++) {
		if (w.segs[i].hole) {
			EXPECT_TRUE(leaf_at(tree, w.segs[i].off, w.segs[i].len))
			    << w.segs[i].section;
		}
	}
	mfs_part_free(tree);
	EXPECT_EQ(layout_of(w.bytes), layout_of(msg));
}

std::string repeat(char c, size_t n)
{
	return std::string(n, c);
}

/* ---- plans -------------------------------------------------------------- */

TEST(SkelPlan, MultipartWithOneLargePart)
{
	Builder b;
	Plan p(b.multi({b.text(5), b.binary(100)}, "XX"), 50);

	ASSERT_EQ(p.rc, MFS_OK);
	EXPECT_EQ(p.words(), (std::vector<std::string>{
				 "S:HEADER", "T:--XX\r\n", "S:1.MIME", "S:1",
				 "T:\r\n--XX\r\n", "S:2.MIME", "H:2/100",
				 "T:\r\n--XX--\r\n"}));
	EXPECT_TRUE(p.s.items[0].is_header);
	EXPECT_TRUE(p.s.items[2].is_header);
	EXPECT_FALSE(p.s.items[3].is_header);
	EXPECT_TRUE(p.s.items[5].is_header);
}

TEST(SkelPlan, SinglePartMessageBodyIsSectionOne)
{
	Builder b;
	Plan p(b.binary(1000), 100);

	EXPECT_EQ(p.words(),
		  (std::vector<std::string>{"S:HEADER", "H:1/1000"}));
}

TEST(SkelPlan, HoleMinIsInclusive)
{
	Builder b;
	Plan at(b.multi({b.text(10), b.binary(64)}), 64);
	Plan below(b.multi({b.text(10), b.binary(63)}), 64);

	ASSERT_GT(at.s.n, 0u);
	EXPECT_EQ(at.words()[6], "H:2/64");
	EXPECT_EQ(below.s.n, 0u) << "no part worth leaving out";
}

TEST(SkelPlan, EveryTransferEncodingTheServerDecodesMayBeAHole)
{
	Builder b;
	for (int enc : {MAILIMAP_BODY_FLD_ENC_7BIT, MAILIMAP_BODY_FLD_ENC_8BIT,
			MAILIMAP_BODY_FLD_ENC_BINARY,
			MAILIMAP_BODY_FLD_ENC_BASE64,
			MAILIMAP_BODY_FLD_ENC_QUOTED_PRINTABLE}) {
		Plan p(b.multi({b.text(1), b.binary(500, enc)}), 100);
		ASSERT_EQ(p.s.n, 8u) << enc;
		EXPECT_EQ(p.words()[6], "H:2/500") << enc;
	}
}

TEST(SkelPlan, NestedSectionsFollowRfc3501)
{
	Builder b;
	/* mixed [ alternative [text, html], message/rfc822 [ mixed [text,
	 * big] ], big ] */
	auto *inner = b.multi({b.text(3), b.binary(900)}, "in");
	Plan p(b.multi({b.multi({b.text(4), b.leaf({"text", "html", 0, 6})},
				"alt"),
			b.message(inner), b.binary(700)},
		       "out"),
	       500);

	EXPECT_EQ(p.words(),
		  (std::vector<std::string>{
		      "S:HEADER",     "T:--out\r\n",   "S:1.MIME",
		      "T:--alt\r\n",  "S:1.1.MIME",    "S:1.1",
		      "T:\r\n--alt\r\n", "S:1.2.MIME", "S:1.2",
		      "T:\r\n--alt--\r\n", "T:\r\n--out\r\n", "S:2.MIME",
		      "S:2.HEADER",   "T:--in\r\n",    "S:2.1.MIME",
		      "S:2.1",        "T:\r\n--in\r\n", "S:2.2.MIME",
		      "H:2.2/900",    "T:\r\n--in--\r\n", "T:\r\n--out\r\n",
		      "S:3.MIME",     "H:3/700",       "T:\r\n--out--\r\n"}));
}

TEST(SkelPlan, EmbeddedSinglePartMessageBodyIsNDotOne)
{
	Builder b;
	Plan p(b.multi({b.text(1), b.message(b.binary(800))}), 100);

	EXPECT_EQ(p.words(),
		  (std::vector<std::string>{
		      "S:HEADER", "T:--b\r\n", "S:1.MIME", "S:1",
		      "T:\r\n--b\r\n", "S:2.MIME", "S:2.HEADER", "H:2.1/800",
		      "T:\r\n--b--\r\n"}));
}

TEST(SkelPlan, BoundaryParameterNameIsCaseInsensitive)
{
	Builder b;
	Plan p(b.multi({b.binary(100)}, "Q", "BOUNDARY"), 10);

	ASSERT_GT(p.s.n, 0u);
	EXPECT_EQ(p.words()[1], "T:--Q\r\n");
}

TEST(SkelPlan, HoleMinZeroMeansOne)
{
	Builder b;
	Plan p(b.multi({b.text(0), b.text(1)}), 0);

	EXPECT_EQ(p.words(), (std::vector<std::string>{
				 "S:HEADER", "T:--b\r\n", "S:1.MIME", "S:1",
				 "T:\r\n--b\r\n", "S:2.MIME", "H:2/1",
				 "T:\r\n--b--\r\n"}));
}

/* ---- what it declines (n == 0: fetch the message whole) ---------------- */

TEST(SkelDecline, NoLargePart)
{
	Builder b;
	Plan p(b.multi({b.text(10), b.binary(20)}), 1000);

	EXPECT_EQ(p.rc, MFS_OK);
	EXPECT_EQ(p.s.n, 0u);
	EXPECT_EQ(p.s.items, nullptr);
}

TEST(SkelDecline, MultipartWithoutBoundary)
{
	Builder b;
	Plan none(b.multi({b.binary(1000)}, nullptr), 10);
	Plan noext(b.multi({b.binary(1000)}, "b", "boundary", true), 10);
	Plan other(b.multi({b.binary(1000)}, "b", "charset2"), 10);

	EXPECT_EQ(none.s.n, 0u);
	EXPECT_EQ(noext.s.n, 0u);
	EXPECT_EQ(other.s.n, 0u);
}

TEST(SkelDecline, BoundaryThatCannotBeALine)
{
	Builder b;
	Plan empty(b.multi({b.binary(1000)}, ""), 10);
	Plan crlf(b.multi({b.binary(1000)}, "a\r\n--b"), 10);
	Plan lf(b.multi({b.binary(1000)}, "a\nb"), 10);
	Plan longer(b.multi({b.binary(1000)}, repeat('x', 71).c_str()), 10);
	Plan longest(b.multi({b.binary(1000)}, repeat('x', 70).c_str()), 10);

	EXPECT_EQ(empty.s.n, 0u);
	EXPECT_EQ(crlf.s.n, 0u);
	EXPECT_EQ(lf.s.n, 0u);
	EXPECT_EQ(longer.s.n, 0u);
	EXPECT_GT(longest.s.n, 0u) << "70 characters is RFC 2046's limit";
}

TEST(SkelDecline, EmptyMultipart)
{
	Builder b;
	Plan p(b.multi({b.binary(1000), b.multi({}, "inner")}), 10);

	EXPECT_EQ(p.s.n, 0u);
}

TEST(SkelDecline, MessageAtTheTop)
{
	Builder b;
	Plan p(b.message(b.binary(1000)), 10);

	EXPECT_EQ(p.s.n, 0u);
}

TEST(SkelDecline, EncodedEmbeddedMessage)
{
	Builder b;
	Plan p(b.multi({b.binary(1000),
			b.message(b.text(5), MAILIMAP_BODY_FLD_ENC_BASE64)}),
	       10);

	EXPECT_EQ(p.s.n, 0u);
}

TEST(SkelDecline, UnknownEncodingIsNeverAHole)
{
	Builder b;
	Plan alone(b.multi({b.binary(5000, MAILIMAP_BODY_FLD_ENC_OTHER)}), 10);
	Plan beside(b.multi({b.binary(5000, MAILIMAP_BODY_FLD_ENC_OTHER),
			     b.binary(5000)}),
		    10);

	EXPECT_EQ(alone.s.n, 0u);
	/* fetched as a real section beside a hole of the other part */
	EXPECT_EQ(beside.words()[3], "S:1");
	EXPECT_EQ(beside.words()[6], "H:2/5000");
}

TEST(SkelDecline, MissingPiecesOfTheStructure)
{
	Builder b;
	Plan top(nullptr, 10);
	EXPECT_EQ(top.rc, MFS_OK);
	EXPECT_EQ(top.s.n, 0u);

	/* an embedded message without a body */
	Plan inner(b.multi({b.binary(1000), b.message(nullptr)}), 10);
	EXPECT_EQ(inner.s.n, 0u);

	/* a part the parser could not read */
	auto *bad = b.binary(1000);
	bad->bd_data.bd_body_1part->bd_type = MAILIMAP_BODY_TYPE_1PART_ERROR;
	Plan err(b.multi({b.binary(1000), bad}), 10);
	EXPECT_EQ(err.s.n, 0u);
}

TEST(SkelDecline, TooDeep)
{
	Builder b;
	struct mailimap_body *body = b.binary(1000);

	for (int i = 0; i < 40; i++)
		body = b.multi({body});
	Plan p(body, 10);
	EXPECT_EQ(p.s.n, 0u);

	struct mailimap_body *ok = b.binary(1000);
	for (int i = 0; i < 5; i++)
		ok = b.multi({ok});
	Plan q(ok, 10);
	ASSERT_GT(q.s.n, 0u);
	EXPECT_EQ(q.words()[2], "S:1.MIME");
	EXPECT_EQ(q.words()[10], "S:1.1.1.1.1.MIME");
	EXPECT_EQ(q.words()[11], "H:1.1.1.1.1/1000");
}

TEST(SkelPlan, LargestHoleTheStructureCanName)
{
	Builder b;
	Plan p(b.multi({b.text(1), b.binary(UINT32_MAX)}), 10);

	ASSERT_EQ(p.s.n, 8u);
	EXPECT_EQ(p.words()[6], "H:2/4294967295");
	EXPECT_EQ(p.s.items[6].octets, (uint64_t)UINT32_MAX);
}

TEST(SkelDecline, TooManyItems)
{
	Builder b;
	std::vector<struct mailimap_body *> kids;

	for (int i = 0; i < 200; i++) /* 3 items each */
		kids.push_back(b.text(1));
	kids.push_back(b.binary(1000));
	Plan p(b.multi(kids), 10);
	EXPECT_EQ(p.s.n, 0u);

	kids.erase(kids.begin() + 100, kids.end() - 1);
	Plan q(b.multi(kids), 10); /* 1 + 101 * 3 + 1 items */
	EXPECT_EQ(q.s.n, 305u);
	EXPECT_LE(q.s.n, (size_t)MFS_SKEL_ITEMS_MAX);
}

TEST(SkelDecline, TooManyRealBytes)
{
	Builder b;
	const uint32_t part = 1024 * 1024;

	Plan over(b.multi({b.text(part - 1, MAILIMAP_BODY_FLD_ENC_OTHER),
			   b.text(part - 1, MAILIMAP_BODY_FLD_ENC_OTHER),
			   b.text(part - 1, MAILIMAP_BODY_FLD_ENC_OTHER),
			   b.text(part - 1, MAILIMAP_BODY_FLD_ENC_OTHER),
			   b.text(8, MAILIMAP_BODY_FLD_ENC_OTHER),
			   b.binary(100 * part)}),
		  2 * part);
	EXPECT_EQ(over.s.n, 0u);
	Plan at(b.multi({b.text(part, MAILIMAP_BODY_FLD_ENC_OTHER),
			 b.text(part, MAILIMAP_BODY_FLD_ENC_OTHER),
			 b.text(part, MAILIMAP_BODY_FLD_ENC_OTHER),
			 b.text(part, MAILIMAP_BODY_FLD_ENC_OTHER),
			 b.binary(100 * part)}),
		2 * part);
	EXPECT_GT(at.s.n, 0u) << "MFS_SKEL_SMALL_MAX real bytes are fine";
}

/* ---- writing ------------------------------------------------------------ */

TEST(SkelWrite, ExactBytesAndSegments)
{
	Builder b;
	Plan p(b.multi({b.text(5), b.binary(100)}, "XX"), 50);
	const std::string hdr = "Subject: t\r\nContent-Type: multipart/mixed; "
				"boundary=XX\r\n\r\n";
	const std::string m1 = "Content-Type: text/plain\r\n\r\n";
	const std::string m2 = "Content-Type: application/pdf\r\n"
			       "Content-Transfer-Encoding: base64\r\n\r\n";

	ASSERT_EQ(p.s.n, 8u);
	p.s.items[0].data = hdr.data();
	p.s.items[0].data_len = hdr.size();
	p.s.items[2].data = m1.data();
	p.s.items[2].data_len = m1.size();
	p.s.items[3].data = "hello";
	p.s.items[3].data_len = 5;
	p.s.items[5].data = m2.data();
	p.s.items[5].data_len = m2.size();
	for (int i : {0, 2, 3, 5})
		p.s.items[i].got = 1;
	Written w;
	write_skel(&p.s, w);
	ASSERT_EQ(w.rc, MFS_OK) << w.err.msg;
	const std::string want = hdr + "--XX\r\n" + m1 + "hello" +
				 "\r\n--XX\r\n" + m2 + repeat('\0', 100) +
				 "\r\n--XX--\r\n";
	EXPECT_EQ(w.bytes, want);
	ASSERT_EQ(w.nsegs, 5u);
	size_t off = 0;
	EXPECT_EQ(w.segs[0].off, off);
	EXPECT_EQ(w.segs[0].len, hdr.size());
	off = hdr.size() + 6;
	EXPECT_EQ(w.segs[1].off, off);
	EXPECT_EQ(w.segs[1].len, m1.size());
	off += m1.size();
	EXPECT_EQ(w.segs[2].off, off);
	EXPECT_EQ(w.segs[2].len, 5u);
	off += 5 + 8; /* "hello", "\r\n--XX\r\n" */
	EXPECT_EQ(w.segs[3].off, off);
	EXPECT_EQ(w.segs[3].len, m2.size());
	off += m2.size();
	EXPECT_TRUE(w.segs[4].hole);
	EXPECT_EQ(w.segs[4].off, off);
	EXPECT_EQ(w.segs[4].len, 100u);
	EXPECT_STREQ(w.segs[4].section, "2");
	for (int i = 0; i < 4; i++) {
		EXPECT_FALSE(w.segs[i].hole);
		EXPECT_EQ(w.segs[i].section, nullptr);
	}
}

TEST(SkelWrite, HolesAreSparse)
{
	Builder b;
	const uint32_t big = 64 * 1024 * 1024;
	Plan p(b.binary(big), 1024);
	const std::string hdr = "Subject: big\r\n\r\n";

	ASSERT_EQ(p.s.n, 2u);
	p.s.items[0].data = hdr.data();
	p.s.items[0].data_len = hdr.size();
	p.s.items[0].got = 1;
	char path[] = "/tmp/skeleton-test-XXXXXX";
	int fd = mkstemp(path);
	ASSERT_GE(fd, 0);
	unlink(path);
	struct mfs_seg *segs = nullptr;
	size_t n = 0;
	struct mfs_err err;
	ASSERT_EQ(mfs_skel_write(&p.s, fd, &segs, &n, &err), MFS_OK);
	struct stat st;
	ASSERT_EQ(fstat(fd, &st), 0);
	EXPECT_EQ((uint64_t)st.st_size, hdr.size() + big);
	/* the hole takes no blocks (a few for the header at most) */
	EXPECT_LT((uint64_t)st.st_blocks * 512, (uint64_t)big / 4);
	ASSERT_EQ(n, 2u);
	EXPECT_TRUE(segs[1].hole);
	EXPECT_EQ(segs[1].off, hdr.size());
	EXPECT_EQ(segs[1].len, (size_t)big);
	mfs_store_segs_free(segs, n);
	close(fd);
}

TEST(SkelWrite, UnfilledSectionIsAProtocolError)
{
	Builder b;
	Plan p(b.multi({b.text(5), b.binary(100)}), 50);
	const std::string hdr = "A: b\r\n\r\n";

	for (size_t i = 0; i < p.s.n; i++) {
		p.s.items[i].data = hdr.data();
		p.s.items[i].data_len = hdr.size();
		p.s.items[i].got = 1;
	}
	p.s.items[3].got = 0; /* the server did not send section 1 */
	Written w;
	write_skel(&p.s, w);
	EXPECT_EQ(w.rc, MFS_E_PROTO);
	EXPECT_NE(std::string(w.err.msg).find("1"), std::string::npos);
	EXPECT_EQ(w.segs, nullptr);
	EXPECT_EQ(w.nsegs, 0u);
}

TEST(SkelWrite, HeaderSectionMustEndWithABlankLine)
{
	Builder b;
	for (const char *h : {"A: b\r\n", "A: b", "", "A: b\n\n", "\r\n\r"}) {
		Plan p(b.multi({b.text(5), b.binary(100)}), 50);
		const std::string good = "A: b\r\n\r\n";
		for (size_t i = 0; i < p.s.n; i++) {
			p.s.items[i].data = good.data();
			p.s.items[i].data_len = good.size();
			p.s.items[i].got = 1;
		}
		p.s.items[2].data = h; /* 1.MIME */
		p.s.items[2].data_len = strlen(h);
		Written w;
		write_skel(&p.s, w);
		EXPECT_EQ(w.rc, MFS_E_PROTO) << "header " << h;
		EXPECT_EQ(w.nsegs, 0u);
	}
	/* a part without header fields: the blank line alone */
	Plan p(b.multi({b.text(5), b.binary(100)}), 50);
	const std::string good = "A: b\r\n\r\n";
	for (size_t i = 0; i < p.s.n; i++) {
		p.s.items[i].data = good.data();
		p.s.items[i].data_len = good.size();
		p.s.items[i].got = 1;
	}
	p.s.items[2].data = "\r\n";
	p.s.items[2].data_len = 2;
	Written w;
	write_skel(&p.s, w);
	EXPECT_EQ(w.rc, MFS_OK) << w.err.msg;
	/* a body section need not end with a blank line */
	EXPECT_EQ(w.segs[2].len, good.size());
}

TEST(SkelWrite, UnwritableFileIsAnIoError)
{
	Builder b;
	Plan p(b.binary(100), 50);
	const std::string hdr = "A: b\r\n\r\n";

	p.s.items[0].data = hdr.data();
	p.s.items[0].data_len = hdr.size();
	p.s.items[0].got = 1;
	int fds[2];
	ASSERT_EQ(pipe(fds), 0);
	struct mfs_seg *segs = nullptr;
	size_t n = 0;
	struct mfs_err err;
	EXPECT_EQ(mfs_skel_write(&p.s, fds[0], &segs, &n, &err), MFS_E_IO);
	EXPECT_EQ(segs, nullptr);
	EXPECT_EQ(n, 0u);
	close(fds[0]);
	close(fds[1]);
}

TEST(SkelWrite, EmptyPlanWritesNothing)
{
	struct mfs_skel s = {};
	Written w;

	write_skel(&s, w);
	EXPECT_EQ(w.rc, MFS_OK);
	EXPECT_EQ(w.bytes, "");
	EXPECT_EQ(w.nsegs, 0u);
	mfs_skel_free(&s);
	mfs_skel_free(&s); /* twice is fine: it zeroes */
}

/* ---- the skeleton stands for the message -------------------------------- */

/* A base64 body of n bytes in lines of 76 (the encoded size matters, not
 * the content). */
std::string b64_body(size_t n)
{
	std::string s;
	const char *a = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=";
	size_t i = 0;
	while (s.size() < n) {
		if (s.size() % 78 == 76) {
			s += "\r\n";
			continue;
		}
		s += a[i++ % 32];
	}
	s.resize(n);
	return s;
}

TEST(SkelMime, MultipartMixedWithAttachment)
{
	Builder b;
	const std::string att = b64_body(5000);
	const std::string msg =
	    "From: Alice <a@example.com>\r\nTo: b@example.com\r\n"
	    "Subject: report\r\nDate: Mon, 2 Nov 2026 10:00:00 +0000\r\n"
	    "MIME-Version: 1.0\r\n"
	    "Content-Type: multipart/mixed; boundary=\"=_b1\"\r\n\r\n"
	    "--=_b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
	    "Here it is.\r\n"
	    "\r\n--=_b1\r\n"
	    "Content-Type: application/pdf; name=\"report.pdf\"\r\n"
	    "Content-Disposition: attachment; filename=\"report.pdf\"\r\n"
	    "Content-Transfer-Encoding: base64\r\n\r\n" +
	    att + "\r\n--=_b1--\r\n";
	auto *body = b.multi({b.text(13), b.leaf({"application", "pdf",
						   MAILIMAP_BODY_FLD_ENC_BASE64,
						   (uint32_t)att.size()})},
			     "=_b1");
	expect_stands_for(msg, body, 1000, 1);
	auto l = layout_of(msg);
	EXPECT_NE(std::find(l.begin(), l.end(),
			    "report.pdf [application/pdf 2]"),
		  l.end());
}

TEST(SkelMime, NestedAlternativeAndEmbeddedMessage)
{
	Builder b;
	const std::string big1 = b64_body(3000), big2 = repeat('x', 2500);
	const std::string inner =
	    "From: Bob <b@example.com>\r\nSubject: inner\r\n"
	    "Content-Type: multipart/mixed; boundary=in\r\n\r\n"
	    "--in\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
	    "\r\n--in\r\nContent-Type: image/png\r\n"
	    "Content-Transfer-Encoding: base64\r\n"
	    "Content-Disposition: attachment; filename=a.png\r\n\r\n" +
	    big1 + "\r\n--in--\r\n";
	const std::string msg =
	    "From: Alice <a@example.com>\r\nSubject: outer\r\n"
	    "Content-Type: multipart/mixed; boundary=out\r\n\r\n"
	    "--out\r\nContent-Type: multipart/alternative; boundary=alt\r\n\r\n"
	    "--alt\r\nContent-Type: text/plain\r\n\r\nplain\r\n"
	    "\r\n--alt\r\nContent-Type: text/html\r\n\r\n<p>html</p>\r\n"
	    "\r\n--alt--\r\n"
	    "\r\n--out\r\nContent-Type: message/rfc822\r\n\r\n" +
	    inner +
	    "\r\n--out\r\nContent-Type: text/plain\r\n"
	    "Content-Disposition: attachment; filename=log.txt\r\n\r\n" +
	    big2 + "\r\n--out--\r\n";
	auto *ib = b.multi({b.text(4), b.leaf({"image", "png",
					       MAILIMAP_BODY_FLD_ENC_BASE64,
					       (uint32_t)big1.size()})},
			   "in");
	auto *body = b.multi(
	    {b.multi({b.text(7), b.leaf({"text", "html", 0, 13})}, "alt"),
	     b.message(ib, MAILIMAP_BODY_FLD_ENC_7BIT, (uint32_t)inner.size()),
	     b.text((uint32_t)big2.size())},
	    "out");
	expect_stands_for(msg, body, 1000, 2);
}

TEST(SkelMime, SinglePartMessage)
{
	Builder b;
	const std::string body = b64_body(4000);
	const std::string msg = "From: a@example.com\r\nSubject: one\r\n"
				"Content-Type: application/zip\r\n"
				"Content-Transfer-Encoding: base64\r\n\r\n" +
				body;
	expect_stands_for(msg, b.binary((uint32_t)body.size()), 1000, 1);
}

TEST(SkelMime, EmbeddedSinglePartMessage)
{
	Builder b;
	const std::string big = repeat('y', 2000);
	const std::string inner =
	    "Subject: fwd\r\nContent-Type: text/plain\r\n\r\n" + big;
	const std::string msg = "Subject: outer\r\n"
				"Content-Type: multipart/mixed; boundary=q\r\n"
				"\r\n--q\r\n\r\nfirst\r\n"
				"\r\n--q\r\nContent-Type: message/rfc822\r\n\r\n" +
				inner + "\r\n--q--\r\n";
	auto *body = b.multi({b.text(5), b.message(b.text(2000))}, "q");
	expect_stands_for(msg, body, 1000, 1);
}

TEST(SkelMime, EmptyBodyAndHeaderlessPart)
{
	Builder b;
	const std::string big = b64_body(1500);
	const std::string msg = "Subject: s\r\n"
				"Content-Type: multipart/mixed; boundary=z\r\n"
				"\r\n--z\r\n\r\n"
				"\r\n--z\r\nContent-Type: application/x-a\r\n"
				"Content-Transfer-Encoding: base64\r\n\r\n" +
				big + "\r\n--z--\r\n";
	auto *body = b.multi({b.text(0), b.binary((uint32_t)big.size())}, "z");
	expect_stands_for(msg, body, 1000, 1);
}

} // namespace

/* ---- the cache entry ---------------------------------------------------- */

namespace
{

/* The skeleton of ExactBytesAndSegments, in memfd *fd with its ranges. */
void sample_skeleton(int *fd, Written &w)
{
	Builder b;
	Plan p(b.multi({b.text(5), b.binary(100)}, "XX"), 50);
	static const std::string hdr = "Subject: t\r\nContent-Type: "
				       "multipart/mixed; boundary=XX\r\n\r\n";
	static const std::string m1 = "Content-Type: text/plain\r\n\r\n";

	ASSERT_EQ(p.s.n, 8u);
	static const std::string hello = "hello";
	const std::string *data[] = {&hdr, nullptr, &m1, &hello, nullptr, &m1};
	for (int i : {0, 2, 3, 5}) {
		p.s.items[i].data = data[i]->data();
		p.s.items[i].data_len = data[i]->size();
		p.s.items[i].got = 1;
	}
	*fd = memfd_create("skeleton-test", MFD_CLOEXEC);
	ASSERT_GE(*fd, 0);
	w.rc = mfs_skel_write(&p.s, *fd, &w.segs, &w.nsegs, &w.err);
	ASSERT_EQ(w.rc, MFS_OK) << w.err.msg;
	w.bytes = read_fd(*fd);
}

std::string saved(int fd, const struct mfs_seg *segs, size_t n)
{
	int out = memfd_create("skeleton-entry", MFD_CLOEXEC);
	struct mfs_err err;
	std::string s;

	EXPECT_GE(out, 0);
	EXPECT_EQ(mfs_skel_save(fd, segs, n, out, &err), MFS_OK) << err.msg;
	s = read_fd(out);
	close(out);
	return s;
}

/* mfs_skel_load of entry e: its result, and what it made. */
int loaded(const std::string &e, Written &w)
{
	int fd = memfd_create("skeleton-test", MFD_CLOEXEC);

	EXPECT_GE(fd, 0);
	w.rc = mfs_skel_load(e.data(), e.size(), fd, &w.segs, &w.nsegs,
			     &w.err);
	w.bytes = read_fd(fd);
	close(fd);
	return w.rc;
}

} // namespace

TEST(SkelSave, EntryRoundTrip)
{
	Written w, back;
	int fd = -1;

	sample_skeleton(&fd, w);
	ASSERT_GE(fd, 0);
	std::string e = saved(fd, w.segs, w.nsegs);
	close(fd);
	const size_t hole = w.segs[4].off;
	/* the header, the ranges, then every byte but the hole's */
	std::string head = "mailfs-skeleton 1\n" +
			   std::to_string(w.bytes.size()) + " 5\n";
	for (size_t i = 0; i < 4; i++)
		head += std::to_string(w.segs[i].off) + " " +
			std::to_string(w.segs[i].len) + " -\n";
	head += std::to_string(hole) + " 100 2\n";
	EXPECT_EQ(e, head + w.bytes.substr(0, hole) + w.bytes.substr(hole + 100));

	ASSERT_EQ(loaded(e, back), MFS_OK) << back.err.msg;
	EXPECT_EQ(back.bytes, w.bytes);
	ASSERT_EQ(back.nsegs, w.nsegs);
	for (size_t i = 0; i < w.nsegs; i++) {
		EXPECT_EQ(back.segs[i].off, w.segs[i].off);
		EXPECT_EQ(back.segs[i].len, w.segs[i].len);
		EXPECT_EQ(back.segs[i].hole, w.segs[i].hole);
		if (w.segs[i].hole)
			EXPECT_STREQ(back.segs[i].section, w.segs[i].section);
		else
			EXPECT_EQ(back.segs[i].section, nullptr);
	}
}

TEST(SkelSave, EveryCutAndEveryExtraByteIsRefused)
{
	Written w;
	int fd = -1;

	sample_skeleton(&fd, w);
	ASSERT_GE(fd, 0);
	std::string e = saved(fd, w.segs, w.nsegs);
	close(fd);
	for (size_t cut = 0; cut < e.size(); cut++) {
		Written b;
		EXPECT_EQ(loaded(e.substr(0, cut), b), MFS_E_PROTO) << cut;
		EXPECT_EQ(b.segs, nullptr);
		EXPECT_EQ(b.bytes, "") << "nothing made at cut " << cut;
	}
	Written b;
	EXPECT_EQ(loaded(e + "x", b), MFS_E_PROTO);
}

TEST(SkelSave, MalformedEntriesAreRefused)
{
	const std::string tail = "abcdef";
	const char *bad[] = {
	    "mailfs-skeleton 2\n16 1\n6 10 2\n",  /* another version */
	    "mailfs-skeleton 1\n016 1\n6 10 2\n", /* leading zero */
	    "mailfs-skeleton 1\n+16 1\n6 10 2\n", /* sign */
	    "mailfs-skeleton 1\n16 0\n",	  /* no range */
	    "mailfs-skeleton 1\n16 1\n6 11 2\n",  /* beyond the end */
	    "mailfs-skeleton 1\n16 2\n0 8 1\n6 4 2\n", /* overlapping */
	    "mailfs-skeleton 1\n16 2\n6 4 2\n0 2 1\n", /* out of order */
	    "mailfs-skeleton 1\n16 1\n6 10 2]\n",      /* not a section */
	    "mailfs-skeleton 1\n16 1\n6 10 1 2\n",     /* a space in it */
	    "mailfs-skeleton 1\n16 1\n6 10 \n",	       /* none */
	    "mailfs-skeleton 1\n16 1\n6 10 header\n",  /* lowercase */
	    "mailfs-skeleton 1\n99999999999999999999 1\n6 10 2\n",
	    "mailfs-skeleton 1\n16 401\n6 10 2\n", /* too many ranges */
	    "mailfs-skeleton 1\n16 1\n6 9 2\n",	   /* a byte short */
	};
	Written ok;
	EXPECT_EQ(loaded(std::string("mailfs-skeleton 1\n16 1\n6 10 2\n") +
				 tail,
			 ok),
		  MFS_OK)
	    << ok.err.msg;
	EXPECT_EQ(ok.bytes, tail + std::string(10, '\0'));
	for (const char *h : bad) {
		Written w;
		EXPECT_EQ(loaded(h + tail, w), MFS_E_PROTO) << h;
		EXPECT_EQ(w.segs, nullptr) << h;
	}
	std::string longest = "mailfs-skeleton 1\n16 1\n6 10 " +
			      std::string(MFS_SKEL_SECTION_MAX, '1') + "\n";
	Written w;
	EXPECT_EQ(loaded(longest + tail, w), MFS_E_PROTO);
}

TEST(SkelSave, RangeBeyondTheFileIsAnIoError)
{
	int fd = memfd_create("skeleton-test", MFD_CLOEXEC);
	int out = memfd_create("skeleton-entry", MFD_CLOEXEC);
	char sec[] = "2";
	struct mfs_seg g = {4, 10, 1, sec};
	struct mfs_err err;

	ASSERT_GE(fd, 0);
	ASSERT_GE(out, 0);
	ASSERT_EQ(write(fd, "abcdefgh", 8), 8);
	EXPECT_EQ(mfs_skel_save(fd, &g, 1, out, &err), MFS_E_IO);
	close(fd);
	close(out);
}
