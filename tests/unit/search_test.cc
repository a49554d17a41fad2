// Unit tests for src/search.c, the FUSE layer's room for searching,
// without a mount: the tree of nodes over a small store in memory whose
// search op answers what a test says, called the way fs.c's handlers call
// the room (lookup of .search and of a query, listing, touch, rmdir).
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

extern "C" {
#include "fsint.h"
#include "query.h"
}

namespace
{

// A store of folders, each a list of (uid, subject); search answers the
// UIDs whose subject contains the text of a subject: query.
struct MemStore {
	struct Msg {
		uint32_t uid;
		std::string subject;
	};
	std::map<std::string, std::vector<Msg>> folders;
	uint32_t validity = 7;
	int searches = 0, indexes = 0;
	int entries = 1; // give the matches' entries when wanted
	std::vector<std::string> searched;

	static MemStore *of(struct mfs_store *st)
	{
		return static_cast<MemStore *>(st->priv);
	}
	static struct mfs_store_msg entry(const Msg &m)
	{
		struct mfs_store_msg e;

		memset(&e, 0, sizeof(e));
		e.uid = m.uid;
		e.size = 100;
		e.date = 1794821400;
		e.from = strdup("Bob <bob@example.test>");
		e.subject = strdup(m.subject.c_str());
		return e;
	}
	static int list(struct mfs_store *st, struct mfs_store_folder **out,
			size_t *n, struct mfs_err *err)
	{
		MemStore *s = of(st);
		size_t i = 0;

		*out = static_cast<struct mfs_store_folder *>(
		    calloc(s->folders.size(), sizeof(**out)));
		for (const auto &f : s->folders) {
			(*out)[i].name = strdup(f.first.c_str());
			(*out)[i].delim = '/';
			i++;
		}
		*n = i;
		mfs_err_clear(err);
		return MFS_OK;
	}
	static int index(struct mfs_store *st, const char *folder,
			 uint32_t *validity, struct mfs_store_msg **msgs,
			 size_t *n, struct mfs_err *err)
	{
		MemStore *s = of(st);
		auto it = s->folders.find(folder);

		s->indexes++;
		if (it == s->folders.end())
			return mfs_err_set(err, MFS_E_NOENT, "no %s", folder);
		*validity = s->validity;
		*n = it->second.size();
		*msgs = static_cast<struct mfs_store_msg *>(
		    calloc(*n ? *n : 1, sizeof(**msgs)));
		for (size_t i = 0; i < *n; i++)
			(*msgs)[i] = entry(it->second[i]);
		mfs_err_clear(err);
		return MFS_OK;
	}
	static int search(struct mfs_store *st, const char *const *folders,
			  size_t n, const struct mfs_query *q,
			  struct mfs_store_hits *hits, struct mfs_err *err)
	{
		MemStore *s = of(st);

		s->searches++;
		if (q->op != MFS_Q_SUBJECT)
			return mfs_err_set(err, MFS_E_INVAL, "subject: only");
		for (size_t i = 0; i < n; i++) {
			auto it = s->folders.find(folders[i]);

			s->searched.push_back(folders[i]);
			if (it == s->folders.end()) {
				mfs_err_set(&hits[i].err, MFS_E_NOENT, "no");
				continue;
			}
			hits[i].validity = s->validity;
			hits[i].uids = static_cast<uint32_t *>(calloc(
			    it->second.size() + 1, sizeof(uint32_t)));
			std::vector<Msg> found;
			for (const auto &m : it->second)
				if (m.subject.find(q->text) != std::string::npos) {
					hits[i].uids[hits[i].n++] = m.uid;
					found.push_back(m);
				}
			if (hits[i].want_msgs && s->entries && !found.empty()) {
				hits[i].msgs = static_cast<struct mfs_store_msg *>(
				    calloc(found.size(), sizeof(*hits[i].msgs)));
				for (const auto &m : found)
					hits[i].msgs[hits[i].nmsgs++] = entry(m);
			}
		}
		mfs_err_clear(err);
		return MFS_OK;
	}
};

struct mfs_store_ops mem_ops_make()
{
	struct mfs_store_ops o;

	memset(&o, 0, sizeof(o));
	o.list = MemStore::list;
	o.index = MemStore::index;
	o.search = MemStore::search;
	return o;
}

const struct mfs_store_ops mem_ops = mem_ops_make();

class SearchRoom : public ::testing::Test
{
      protected:
	MemStore mem;
	struct mfs_store st = {};
	struct mfs_account acct = {};
	struct mfs_fs *fs = nullptr;
	struct mfs_err err = {};

	void SetUp() override
	{
		mem.folders["INBOX"] = {{1, "hello world"}, {2, "invoice 42"},
					{3, "more invoices"}};
		mem.folders["Work"] = {{5, "invoice 43"}};
		mem.folders["Work/Old"] = {{8, "old invoice"}, {9, "x"}};
		mem.folders[".search"] = {{4, "invoice in a folder .search"}};
		st.ops = &mem_ops;
		st.priv = &mem;
		acct.refresh = 60;
		fs = mfs_fs_new(&acct, &st, nullptr);
		ASSERT_NE(fs, nullptr);
		ASSERT_EQ(refresh_folders(fs, 0, &err), MFS_OK) << err.msg;
		pthread_mutex_lock(&fs->lock);
	}
	void TearDown() override
	{
		pthread_mutex_unlock(&fs->lock);
		mfs_fs_free(fs);
	}

	struct mfs_node *root() { return mfs_nodes_root(fs->nodes); }
	struct mfs_node *child(struct mfs_node *d, const char *name)
	{
		return mfs_nodes_child(fs->nodes, d, name);
	}
	// What fs.c's lookup does for a query in dir's .search, then its
	// listing (sync with opening 1); the query node or NULL.
	struct mfs_node *query(struct mfs_node *dir, const char *q)
	{
		struct mfs_node *s = search_dir(fs, dir), *n;

		if (s == nullptr)
			return nullptr;
		n = child(s, q);
		if (n == nullptr)
			n = search_miss(fs, s, q, &err);
		if (n == nullptr)
			return nullptr;
		mfs_nodes_hold(n);
		int rc = search_sync(fs, n, 1, &err);
		mfs_nodes_release(fs->nodes, n);
		return rc == MFS_OK ? n : nullptr;
	}
	// name -> link target of the links below dir, their paths from dir
	std::map<std::string, std::string> links(struct mfs_node *dir,
						 const std::string &at = "")
	{
		std::map<std::string, std::string> out;

		for (struct mfs_node *c = dir->first_child; c != nullptr;
		     c = c->next_sibling) {
			if (c->kind == MFS_N_LINK) {
				char *t = search_link_target(c);
				out[at + c->name] = t;
				free(t);
			} else if (c->kind == MFS_N_HITDIR) {
				auto sub = links(c, at + c->name + "/");
				out.insert(sub.begin(), sub.end());
			}
		}
		return out;
	}
	// The name of the message node of folder dir with that uid.
	std::string name_of(struct mfs_node *dir, uint32_t uid)
	{
		for (struct mfs_node *c = dir->first_child; c != nullptr;
		     c = c->next_sibling)
			if (c->kind == MFS_N_MESSAGE && c->msg.uid == uid)
				return c->name;
		return "<none>";
	}
};

// A server folder named .mailfs does not take the place of the mount's own
// .mailfs/ (status): it is shown under a suffixed name.
TEST_F(SearchRoom, AServerFolderNamedMailfsGetsASuffix)
{
	int folders = 0, own = 0;

	mem.folders[".mailfs"] = {{6, "a folder named as the status directory"}};
	pthread_mutex_unlock(&fs->lock); /* refresh_folders takes it */
	int r = refresh_folders(fs, 0, &err);
	pthread_mutex_lock(&fs->lock);
	ASSERT_EQ(r, MFS_OK) << err.msg;

	for (struct mfs_node *c = root()->first_child; c != nullptr;
	     c = c->next_sibling) {
		if (c->kind == MFS_N_MAILFS) {
			EXPECT_STREQ(c->name, ".mailfs");
			own++;
		}
		if (c->kind == MFS_N_FOLDER && c->mailbox != nullptr &&
		    strcmp(c->mailbox, ".mailfs") == 0) {
			EXPECT_STRNE(c->name, ".mailfs");
			folders++;
		}
	}
	EXPECT_EQ(own, 1);
	EXPECT_EQ(folders, 1);
}

TEST_F(SearchRoom, AServerFolderNamedSearchGetsASuffix)
{
	struct mfs_node *s = search_dir(fs, root());

	ASSERT_NE(s, nullptr);
	EXPECT_EQ(s->kind, MFS_N_SEARCH);
	int folders = 0;
	for (struct mfs_node *c = root()->first_child; c != nullptr;
	     c = c->next_sibling)
		if (c->kind == MFS_N_FOLDER && c->mailbox != nullptr &&
		    strcmp(c->mailbox, ".search") == 0) {
			EXPECT_STRNE(c->name, ".search");
			folders++;
		}
	EXPECT_EQ(folders, 1);
	EXPECT_EQ(search_dir(fs, root()), s) << "one .search";
}

TEST_F(SearchRoom, FolderQueryLinksItsMatchesListingOnlyThem)
{
	struct mfs_node *inbox = child(root(), "INBOX");
	struct mfs_node *q = query(inbox, "subject:invoice");

	ASSERT_NE(q, nullptr) << err.msg;
	EXPECT_EQ(inbox->listed, 0) << "the folder is not listed whole";
	EXPECT_EQ(mem.indexes, 0);
	std::string a = name_of(inbox, 2), b = name_of(inbox, 3);
	std::map<std::string, std::string> want = {{a, "../../" + a},
						   {b, "../../" + b}};
	EXPECT_EQ(links(q), want);
	EXPECT_EQ(name_of(inbox, 1), "<none>");
	EXPECT_EQ(mem.searched, std::vector<std::string>{"INBOX"});
}

TEST_F(SearchRoom, WithoutEntriesTheFolderIsListed)
{
	mem.entries = 0;
	struct mfs_node *inbox = child(root(), "INBOX");
	struct mfs_node *q = query(inbox, "subject:invoice");

	ASSERT_NE(q, nullptr) << err.msg;
	EXPECT_EQ(mem.indexes, 1);
	EXPECT_NE(inbox->listed, 0);
	EXPECT_EQ(links(q).size(), 2u);
}

TEST_F(SearchRoom, SearchedAgainAfterTouchOnly)
{
	struct mfs_node *inbox = child(root(), "INBOX");
	struct mfs_node *q = query(inbox, "subject:invoice");

	ASSERT_NE(q, nullptr);
	mem.folders["INBOX"].push_back({10, "late invoice"});
	mem.folders["INBOX"].erase(mem.folders["INBOX"].begin() + 1);
	ASSERT_EQ(query(inbox, "subject:invoice"), q);
	EXPECT_EQ(mem.searches, 1) << "within refresh: no search";
	EXPECT_EQ(links(q).size(), 2u);
	struct stat attr = {};
	EXPECT_EQ(search_setattr(fs, q, nullptr, &attr, FUSE_SET_ATTR_MTIME),
		  0);
	ASSERT_EQ(query(inbox, "subject:invoice"), q);
	EXPECT_EQ(mem.searches, 2);
	auto l = links(q);
	EXPECT_EQ(l.size(), 2u);
	EXPECT_EQ(l.count(name_of(inbox, 10)), 1u) << "the new match";
	EXPECT_EQ(l.count(name_of(inbox, 3)), 1u);
}

TEST_F(SearchRoom, RootQueryShowsTheFolderTree)
{
	struct mfs_node *q = query(root(), "subject:invoice");

	ASSERT_NE(q, nullptr) << err.msg;
	struct mfs_node *inbox = child(root(), "INBOX");
	struct mfs_node *work = child(root(), "Work");
	struct mfs_node *old = child(work, "Old");
	struct mfs_node *dot = nullptr;
	for (struct mfs_node *c = root()->first_child; c != nullptr;
	     c = c->next_sibling)
		if (c->kind == MFS_N_FOLDER && strcmp(c->mailbox, ".search") == 0)
			dot = c;
	ASSERT_NE(old, nullptr);
	ASSERT_NE(dot, nullptr);
	std::string i2 = name_of(inbox, 2), i3 = name_of(inbox, 3),
		    w5 = name_of(work, 5), o8 = name_of(old, 8),
		    d4 = name_of(dot, 4);
	std::string dn = dot->name;
	std::map<std::string, std::string> want = {
	    {"INBOX/" + i2, "../../../INBOX/" + i2},
	    {"INBOX/" + i3, "../../../INBOX/" + i3},
	    {"Work/" + w5, "../../../Work/" + w5},
	    {"Work/Old/" + o8, "../../../../Work/Old/" + o8},
	    {dn + "/" + d4, "../../../" + dn + "/" + d4},
	};
	EXPECT_EQ(links(q), want);
	EXPECT_EQ(mem.searches, 1) << "every folder in one search";
	EXPECT_EQ(mem.searched.size(), 4u);
}

TEST_F(SearchRoom, NoLongerMatchingLinksAndFolderDirsGo)
{
	struct mfs_node *q = query(root(), "subject:invoice");

	ASSERT_NE(q, nullptr);
	mem.folders["Work/Old"] = {{9, "x"}};
	q->listed = 0;
	ASSERT_EQ(query(root(), "subject:invoice"), q);
	struct mfs_node *work = child(q, "Work");
	ASSERT_NE(work, nullptr);
	EXPECT_EQ(child(work, "Old"), nullptr);
	EXPECT_EQ(links(q).size(), 4u);
}

TEST_F(SearchRoom, BadQueriesAreEinvalWithTheReason)
{
	struct mfs_node *s = search_dir(fs, child(root(), "INBOX"));

	EXPECT_EQ(search_miss(fs, s, "since:yesterday", &err), nullptr);
	EXPECT_EQ(err.code, MFS_E_INVAL);
	EXPECT_STREQ(err.msg, "search \"since:yesterday\": since:yesterday: "
			      "not a date YYYY-MM-DD");
	EXPECT_EQ(s->first_child, nullptr) << "nothing kept";
	struct mfs_node *made = nullptr;
	EXPECT_EQ(search_mkdir(fs, s, "foo:bar", &made), EINVAL);
	EXPECT_EQ(search_mkdir(fs, s, "subject:x", &made), 0);
	ASSERT_NE(made, nullptr);
	EXPECT_EQ(search_mkdir(fs, s, "subject:x", &made), EEXIST);
	// a query the store cannot answer: its error
	struct mfs_node *n = search_miss(fs, s, "from:bob", &err);
	ASSERT_NE(n, nullptr);
	mfs_nodes_hold(n);
	EXPECT_EQ(search_sync(fs, n, 1, &err), MFS_E_INVAL);
	mfs_nodes_release(fs->nodes, n);
}

TEST_F(SearchRoom, RmdirForgetsAQuery)
{
	struct mfs_node *inbox = child(root(), "INBOX");
	struct mfs_node *q = query(inbox, "subject:invoice");

	ASSERT_NE(q, nullptr);
	struct mfs_node *s = search_dir(fs, inbox);
	EXPECT_EQ(child(s, "subject:invoice"), q);
	EXPECT_EQ(search_rmdir(fs, q), 0);
	EXPECT_EQ(child(s, "subject:invoice"), nullptr);
	EXPECT_EQ(s->first_child, nullptr);
}

} // namespace
