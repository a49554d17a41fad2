// Unit tests of the node table (src/node.c): the tree, inode numbers,
// reference counts and when a node is freed, as node.h documents them.
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>
#include <vector>

extern "C" {
#include "node.h"
}

namespace
{

/* priv_free calls seen, by priv pointer. */
std::map<void *, int> freed;

void count_free(struct mfs_node *n)
{
	freed[n->priv]++;
}

/* A distinct priv pointer per tag, never dereferenced. */
void *tag(int i)
{
	static char tags[64];
	return &tags[i];
}

class Nodes : public ::testing::Test
{
      protected:
	void SetUp() override
	{
		freed.clear();
		t = mfs_nodes_new(count_free);
		ASSERT_NE(t, nullptr);
		root = mfs_nodes_root(t);
	}
	void TearDown() override
	{
		mfs_nodes_free(t);
	}
	struct mfs_node *add(struct mfs_node *dir, const char *name,
			     enum mfs_node_kind kind = MFS_N_FOLDER)
	{
		struct mfs_node *n = mfs_nodes_add(t, dir, name, kind);

		EXPECT_NE(n, nullptr);
		return n;
	}
	/* Is a node with that inode number alive? */
	bool alive(uint64_t ino)
	{
		return mfs_nodes_get(t, ino) != nullptr;
	}
	std::vector<std::string> names(struct mfs_node *dir)
	{
		std::vector<std::string> v;

		for (struct mfs_node *c = dir->first_child; c != nullptr;
		     c = c->next_sibling)
			v.push_back(c->name);
		return v;
	}

	struct mfs_nodes *t = nullptr;
	struct mfs_node *root = nullptr;
};

TEST_F(Nodes, NewTableHoldsOnlyTheRoot)
{
	EXPECT_EQ(root->ino, 1u);
	EXPECT_EQ(root->kind, MFS_N_ROOT);
	EXPECT_STREQ(root->name, "");
	EXPECT_EQ(root->parent, nullptr);
	EXPECT_TRUE(root->linked);
	EXPECT_EQ(mfs_nodes_get(t, 1), root);
	EXPECT_EQ(mfs_nodes_get(t, 2), nullptr);
	EXPECT_EQ(mfs_nodes_get(t, 0), nullptr);
	EXPECT_EQ(mfs_nodes_child(t, root, "INBOX"), nullptr);
	EXPECT_EQ(mfs_nodes_count(t), 1u);
}

TEST_F(Nodes, AddLinksANamedChildWithANewInode)
{
	root->mtime = 12345;
	struct mfs_node *n = add(root, "INBOX");

	EXPECT_EQ(n->ino, 2u);
	EXPECT_EQ(n->kind, MFS_N_FOLDER);
	EXPECT_STREQ(n->name, "INBOX");
	EXPECT_EQ(n->parent, root);
	EXPECT_TRUE(n->linked);
	EXPECT_EQ(n->nlookup, 0u);
	EXPECT_EQ(n->mtime, 12345); /* the parent's until told otherwise */
	EXPECT_EQ(mfs_nodes_child(t, root, "INBOX"), n);
	EXPECT_EQ(mfs_nodes_get(t, 2), n);
	EXPECT_EQ(mfs_nodes_count(t), 2u);
}

TEST_F(Nodes, AddCopiesTheName)
{
	char name[] = "Archive";
	struct mfs_node *n = add(root, name);

	name[0] = 'X';
	EXPECT_STREQ(n->name, "Archive");
	EXPECT_EQ(mfs_nodes_child(t, root, "Archive"), n);
	EXPECT_EQ(mfs_nodes_child(t, root, "Xrchive"), nullptr);
}

TEST_F(Nodes, ChildLookupIsPerDirectoryAndExact)
{
	struct mfs_node *a = add(root, "A"), *b = add(root, "B");
	struct mfs_node *ax = add(a, "x"), *bx = add(b, "x");

	EXPECT_NE(ax, bx);
	EXPECT_EQ(mfs_nodes_child(t, a, "x"), ax);
	EXPECT_EQ(mfs_nodes_child(t, b, "x"), bx);
	EXPECT_EQ(mfs_nodes_child(t, root, "x"), nullptr);
	EXPECT_EQ(mfs_nodes_child(t, a, "X"), nullptr); /* case matters */
	EXPECT_EQ(mfs_nodes_child(t, a, "x "), nullptr);
	EXPECT_EQ(mfs_nodes_child(t, a, ""), nullptr);
}

TEST_F(Nodes, ChildrenAreListedInCreationOrder)
{
	add(root, "c");
	add(root, "a");
	add(root, "b");
	EXPECT_EQ(names(root), (std::vector<std::string>{"c", "a", "b"}));
	EXPECT_STREQ(root->last_child->name, "b");
	EXPECT_EQ(root->first_child->prev_sibling, nullptr);
}

TEST_F(Nodes, InodeNumbersCountUpAndAreNeverReused)
{
	struct mfs_node *a = add(root, "a");
	uint64_t ia = a->ino;

	mfs_nodes_unlink(t, a); /* nothing else holds it: freed */
	EXPECT_FALSE(alive(ia));
	struct mfs_node *again = add(root, "a");

	EXPECT_GT(again->ino, ia);
	EXPECT_FALSE(alive(ia));
	std::set<uint64_t> seen;
	uint64_t last = again->ino;
	for (int i = 0; i < 100; i++) {
		struct mfs_node *n = add(root, ("n" + std::to_string(i)).c_str());

		EXPECT_GT(n->ino, last);
		last = n->ino;
		EXPECT_TRUE(seen.insert(n->ino).second);
	}
}

TEST_F(Nodes, InodeStaysTheSameAcrossMove)
{
	struct mfs_node *a = add(root, "A"), *b = add(root, "B");
	struct mfs_node *m = add(a, "msg", MFS_N_MESSAGE);
	uint64_t ino = m->ino;

	ASSERT_EQ(mfs_nodes_move(t, m, b, "renamed"), 0);
	EXPECT_EQ(m->ino, ino);
	EXPECT_EQ(mfs_nodes_get(t, ino), m);
}

TEST_F(Nodes, UnlinkWithNothingElseHoldingFreesAtOnce)
{
	struct mfs_node *n = add(root, "gone");
	uint64_t ino = n->ino;

	n->priv = tag(1);
	mfs_nodes_unlink(t, n);
	EXPECT_EQ(mfs_nodes_child(t, root, "gone"), nullptr);
	EXPECT_FALSE(alive(ino));
	EXPECT_EQ(mfs_nodes_count(t), 1u);
	EXPECT_EQ(freed[tag(1)], 1);
	EXPECT_EQ(root->first_child, nullptr);
	EXPECT_EQ(root->last_child, nullptr);
}

TEST_F(Nodes, UnlinkedNodeLivesUntilTheKernelForgetsIt)
{
	struct mfs_node *n = add(root, "msg", MFS_N_MESSAGE);
	uint64_t ino = n->ino;

	n->priv = tag(2);
	mfs_nodes_lookup(n);
	mfs_nodes_lookup(n);
	EXPECT_EQ(n->nlookup, 2u);
	mfs_nodes_unlink(t, n);
	/* gone from the directory, still reachable by its inode */
	EXPECT_EQ(mfs_nodes_child(t, root, "msg"), nullptr);
	EXPECT_EQ(mfs_nodes_get(t, ino), n);
	EXPECT_FALSE(n->linked);
	EXPECT_EQ(freed.count(tag(2)), 0u);
	mfs_nodes_forget(t, n, 1);
	EXPECT_TRUE(alive(ino));
	EXPECT_EQ(freed.count(tag(2)), 0u);
	mfs_nodes_forget(t, n, 1);
	EXPECT_FALSE(alive(ino));
	EXPECT_EQ(freed[tag(2)], 1);
	EXPECT_EQ(mfs_nodes_count(t), 1u);
}

TEST_F(Nodes, ForgetOfALinkedNodeKeepsIt)
{
	struct mfs_node *n = add(root, "INBOX");

	mfs_nodes_lookup(n);
	mfs_nodes_forget(t, n, 1);
	EXPECT_EQ(n->nlookup, 0u);
	EXPECT_EQ(mfs_nodes_child(t, root, "INBOX"), n);
	EXPECT_EQ(mfs_nodes_count(t), 2u);
}

TEST_F(Nodes, ForgetOfMoreThanWasLookedUpIsBounded)
{
	struct mfs_node *n = add(root, "a");
	struct mfs_node *keep = add(root, "b");
	uint64_t ino = n->ino;

	n->priv = tag(3);
	mfs_nodes_lookup(n);
	mfs_nodes_forget(t, n, 1000); /* a confused kernel: counts stay sane */
	EXPECT_EQ(n->nlookup, 0u);
	EXPECT_TRUE(alive(ino));	       /* still linked */
	EXPECT_EQ(freed.count(tag(3)), 0u);
	mfs_nodes_unlink(t, n);
	EXPECT_FALSE(alive(ino));
	EXPECT_EQ(freed[tag(3)], 1);
	EXPECT_EQ(mfs_nodes_child(t, root, "b"), keep);
	EXPECT_EQ(root->refs, 2u); /* linked + the one child left */
}

TEST_F(Nodes, HoldKeepsAnUnlinkedNodeUntilRelease)
{
	struct mfs_node *n = add(root, "held");
	uint64_t ino = n->ino;

	n->priv = tag(4);
	mfs_nodes_hold(n);
	mfs_nodes_unlink(t, n);
	EXPECT_TRUE(alive(ino));
	EXPECT_EQ(freed.count(tag(4)), 0u);
	mfs_nodes_hold(n);
	mfs_nodes_release(t, n);
	EXPECT_TRUE(alive(ino));
	mfs_nodes_release(t, n);
	EXPECT_FALSE(alive(ino));
	EXPECT_EQ(freed[tag(4)], 1);
}

TEST_F(Nodes, HoldAndReleaseOfALinkedNodeChangeNothing)
{
	struct mfs_node *n = add(root, "x");
	unsigned long refs = n->refs;

	mfs_nodes_hold(n);
	EXPECT_EQ(n->refs, refs + 1);
	mfs_nodes_release(t, n);
	EXPECT_EQ(n->refs, refs);
	EXPECT_EQ(mfs_nodes_child(t, root, "x"), n);
}

TEST_F(Nodes, ParentCountsAReferencePerChild)
{
	struct mfs_node *f = add(root, "F");

	EXPECT_EQ(f->refs, 1u); /* linked */
	add(f, "m1", MFS_N_MESSAGE);
	add(f, "m2", MFS_N_MESSAGE);
	EXPECT_EQ(f->refs, 3u);
	mfs_nodes_unlink(t, mfs_nodes_child(t, f, "m1"));
	EXPECT_EQ(f->refs, 2u);
}

TEST_F(Nodes, UnlinkIsRecursive)
{
	struct mfs_node *f = add(root, "F");
	struct mfs_node *sub = add(f, "Sub");
	struct mfs_node *m = add(sub, "msg", MFS_N_MESSAGE);
	struct mfs_node *file = add(m, "body.txt", MFS_N_FILE);
	uint64_t ifile = file->ino, im = m->ino, isub = sub->ino, i_f = f->ino;

	m->priv = tag(5);
	EXPECT_EQ(mfs_nodes_count(t), 5u);
	mfs_nodes_unlink(t, f);
	EXPECT_FALSE(alive(ifile));
	EXPECT_FALSE(alive(im));
	EXPECT_FALSE(alive(isub));
	EXPECT_FALSE(alive(i_f));
	EXPECT_EQ(mfs_nodes_count(t), 1u);
	EXPECT_EQ(freed[tag(5)], 1);
}

TEST_F(Nodes, ALookedUpChildKeepsItsUnlinkedParentsAlive)
{
	struct mfs_node *f = add(root, "F");
	struct mfs_node *m = add(f, "msg", MFS_N_MESSAGE);
	struct mfs_node *file = add(m, "body.txt", MFS_N_FILE);
	uint64_t ifile = file->ino, im = m->ino, i_f = f->ino;

	m->priv = tag(6);
	mfs_nodes_lookup(file);
	mfs_nodes_unlink(t, f);
	/* all unlinked, none freed: the file's parent chain is counted */
	EXPECT_FALSE(f->linked);
	EXPECT_FALSE(m->linked);
	EXPECT_FALSE(file->linked);
	EXPECT_TRUE(alive(ifile));
	EXPECT_TRUE(alive(im));
	EXPECT_TRUE(alive(i_f));
	EXPECT_EQ(file->parent, m);
	EXPECT_EQ(m->parent, f);
	EXPECT_EQ(mfs_nodes_count(t), 4u);
	EXPECT_EQ(mfs_nodes_child(t, root, "F"), nullptr);
	EXPECT_EQ(freed.count(tag(6)), 0u);
	/* the last forget frees the file and then its parents */
	mfs_nodes_forget(t, file, 1);
	EXPECT_FALSE(alive(ifile));
	EXPECT_FALSE(alive(im));
	EXPECT_FALSE(alive(i_f));
	EXPECT_EQ(mfs_nodes_count(t), 1u);
	EXPECT_EQ(freed[tag(6)], 1);
	EXPECT_EQ(root->refs, 1u);
}

TEST_F(Nodes, UnlinkTwiceAndUnlinkOfTheRootDoNothing)
{
	struct mfs_node *n = add(root, "x");

	mfs_nodes_lookup(n);
	mfs_nodes_unlink(t, n);
	unsigned long refs = n->refs;
	mfs_nodes_unlink(t, n);
	EXPECT_EQ(n->refs, refs);
	EXPECT_TRUE(alive(n->ino));
	mfs_nodes_unlink(t, root);
	EXPECT_TRUE(root->linked);
	EXPECT_EQ(mfs_nodes_get(t, 1), root);
	mfs_nodes_forget(t, n, 1);
	EXPECT_EQ(mfs_nodes_count(t), 1u);
}

TEST_F(Nodes, MoveRenamesAndReparents)
{
	struct mfs_node *a = add(root, "A"), *b = add(root, "B");
	struct mfs_node *m = add(a, "msg", MFS_N_MESSAGE);
	struct mfs_node *other = add(a, "other", MFS_N_MESSAGE);
	unsigned long arefs = a->refs, brefs = b->refs;

	ASSERT_EQ(mfs_nodes_move(t, m, b, "moved"), 0);
	EXPECT_STREQ(m->name, "moved");
	EXPECT_EQ(m->parent, b);
	EXPECT_TRUE(m->linked);
	EXPECT_EQ(mfs_nodes_child(t, a, "msg"), nullptr);
	EXPECT_EQ(mfs_nodes_child(t, b, "moved"), m);
	EXPECT_EQ(mfs_nodes_child(t, b, "msg"), nullptr);
	EXPECT_EQ(a->refs, arefs - 1);
	EXPECT_EQ(b->refs, brefs + 1);
	EXPECT_EQ(names(a), std::vector<std::string>{"other"});
	EXPECT_EQ(names(b), std::vector<std::string>{"moved"});
	EXPECT_EQ(mfs_nodes_child(t, a, "other"), other);
	EXPECT_EQ(mfs_nodes_count(t), 5u);
}

TEST_F(Nodes, MoveWithinADirectoryIsARename)
{
	struct mfs_node *a = add(root, "A");
	struct mfs_node *x = add(a, "x.tmp", MFS_N_FILE);
	add(a, "y", MFS_N_FILE);
	unsigned long refs = a->refs;

	ASSERT_EQ(mfs_nodes_move(t, x, a, "x"), 0);
	EXPECT_EQ(a->refs, refs);
	EXPECT_EQ(mfs_nodes_child(t, a, "x"), x);
	EXPECT_EQ(mfs_nodes_child(t, a, "x.tmp"), nullptr);
	/* a moved node goes to the end of its new directory */
	EXPECT_EQ(names(a), (std::vector<std::string>{"y", "x"}));
}

TEST_F(Nodes, MovedFolderKeepsItsSubtree)
{
	struct mfs_node *a = add(root, "A"), *b = add(root, "B");
	struct mfs_node *m = add(a, "msg", MFS_N_MESSAGE);

	ASSERT_EQ(mfs_nodes_move(t, a, b, "A2"), 0);
	EXPECT_EQ(mfs_nodes_child(t, root, "A"), nullptr);
	EXPECT_EQ(mfs_nodes_child(t, b, "A2"), a);
	EXPECT_EQ(mfs_nodes_child(t, a, "msg"), m);
	mfs_nodes_unlink(t, b);
	EXPECT_EQ(mfs_nodes_count(t), 1u);
}

TEST_F(Nodes, PrivFreeIsCalledOnceForEveryNodeWithPriv)
{
	struct mfs_node *a = add(root, "a"), *b = add(root, "b");
	struct mfs_node *c = add(a, "c", MFS_N_MESSAGE);

	a->priv = tag(7);
	c->priv = tag(8);
	(void)b; /* no priv: not called for it */
	mfs_nodes_lookup(c);
	mfs_nodes_free(t);
	t = nullptr;
	EXPECT_EQ(freed[tag(7)], 1);
	EXPECT_EQ(freed[tag(8)], 1);
	EXPECT_EQ(freed.size(), 2u);
	EXPECT_EQ(freed.count(nullptr), 0u);
}

TEST_F(Nodes, PrivFreeSeesTheNodeWhileItIsStillWhole)
{
	static std::string seen;
	struct mfs_nodes *t2 = mfs_nodes_new([](struct mfs_node *n) {
		seen = std::string(n->name) + "@" + std::to_string(n->ino);
		n->priv = nullptr;
	});
	ASSERT_NE(t2, nullptr);
	struct mfs_node *n = mfs_nodes_add(t2, mfs_nodes_root(t2), "m",
					   MFS_N_MESSAGE);
	ASSERT_NE(n, nullptr);
	n->priv = tag(9);
	mfs_nodes_unlink(t2, n);
	EXPECT_EQ(seen, "m@2");
	mfs_nodes_free(t2);
}

TEST_F(Nodes, NoPrivFreeCallbackIsFine)
{
	struct mfs_nodes *t2 = mfs_nodes_new(nullptr);
	ASSERT_NE(t2, nullptr);
	struct mfs_node *n = mfs_nodes_add(t2, mfs_nodes_root(t2), "m",
					   MFS_N_MESSAGE);
	ASSERT_NE(n, nullptr);
	n->priv = tag(10);
	mfs_nodes_unlink(t2, n);
	EXPECT_EQ(mfs_nodes_count(t2), 1u);
	mfs_nodes_free(t2);
	mfs_nodes_free(nullptr);
	EXPECT_TRUE(freed.empty());
}

TEST_F(Nodes, OwnedStringsAreFreedWithTheNode)
{
	/* the node frees mailbox and the message's strings (ASan: no leak,
	 * no double free) */
	struct mfs_node *f = add(root, "F");
	struct mfs_node *m = add(f, "msg", MFS_N_MESSAGE);

	f->mailbox = strdup("F");
	m->msg.uidl = strdup("UIDL1");
	m->msg.from = strdup("Alice");
	m->msg.subject = strdup("Hi");
	mfs_nodes_unlink(t, f);
	EXPECT_EQ(mfs_nodes_count(t), 1u);
}

TEST_F(Nodes, ManyNodesStayFindableAsTheTableGrows)
{
	const int n = 5000; /* several times the initial buckets */
	std::vector<struct mfs_node *> dirs = {add(root, "A"), add(root, "B")};
	std::vector<uint64_t> inos;

	for (int i = 0; i < n; i++) {
		struct mfs_node *x =
		    add(dirs[i % 2], ("m" + std::to_string(i)).c_str(),
			MFS_N_MESSAGE);
		inos.push_back(x->ino);
	}
	EXPECT_EQ(mfs_nodes_count(t), (unsigned long)n + 3);
	for (int i = 0; i < n; i++) {
		std::string name = "m" + std::to_string(i);
		struct mfs_node *x = mfs_nodes_child(t, dirs[i % 2], name.c_str());

		ASSERT_NE(x, nullptr) << name;
		EXPECT_EQ(x->ino, inos[i]);
		EXPECT_EQ(mfs_nodes_get(t, inos[i]), x);
		EXPECT_EQ(mfs_nodes_child(t, dirs[(i + 1) % 2], name.c_str()),
			  nullptr);
	}
	for (int i = 0; i < n; i += 2)
		mfs_nodes_unlink(t, mfs_nodes_get(t, inos[i]));
	EXPECT_EQ(mfs_nodes_count(t), (unsigned long)n / 2 + 3);
	for (int i = 0; i < n; i++) {
		EXPECT_EQ(alive(inos[i]), i % 2 == 1) << i;
	}
	EXPECT_EQ(dirs[0]->first_child, nullptr);
	EXPECT_EQ(names(dirs[1]).size(), (size_t)n / 2);
}

/* The tables shrink again when most nodes go (a traversal the kernel
 * forgot), and what is left is still found, a moved node too. */
TEST_F(Nodes, FewNodesLeftStayFindableAsTheTableShrinks)
{
	const int n = 20000;
	struct mfs_node *dir = add(root, "A");
	std::vector<uint64_t> inos;

	for (int i = 0; i < n; i++)
		inos.push_back(
		    add(dir, ("m" + std::to_string(i)).c_str(), MFS_N_FILE)
			->ino);
	struct mfs_node *kept = mfs_nodes_get(t, inos[77]);
	ASSERT_EQ(mfs_nodes_move(t, kept, root, "a longer name than before"),
		  0);
	for (int i = 0; i < n; i++)
		if (i % 1000 != 0 && i != 77)
			mfs_nodes_unlink(t, mfs_nodes_get(t, inos[i]));
	EXPECT_EQ(mfs_nodes_count(t), (unsigned long)n / 1000 + 3);
	for (int i = 0; i < n; i += 1000) {
		std::string name = "m" + std::to_string(i);
		struct mfs_node *x = mfs_nodes_child(t, dir, name.c_str());

		ASSERT_NE(x, nullptr) << name;
		EXPECT_EQ(x->ino, inos[i]);
		EXPECT_EQ(mfs_nodes_get(t, inos[i]), x);
	}
	EXPECT_EQ(mfs_nodes_child(t, root, "a longer name than before"), kept);
	EXPECT_EQ(mfs_nodes_get(t, inos[77]), kept);
	EXPECT_STREQ(kept->name, "a longer name than before");
	ASSERT_EQ(mfs_nodes_move(t, kept, dir, "m77"), 0);
	EXPECT_EQ(mfs_nodes_child(t, dir, "m77"), kept);
	EXPECT_EQ(mfs_nodes_child(t, root, "a longer name than before"),
		  nullptr);
}

} // namespace
