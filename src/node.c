/* node.c - see node.h */
#include "node.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"

/* Buckets of each hash table, at the start and at least. */
#define BUCKETS_MIN 1024

struct mfs_nodes {
	struct mfs_node *root;
	struct mfs_node **by_ino;  /* owned array of chains */
	struct mfs_node **by_name; /* owned array of chains */
	size_t buckets;		   /* power of two, same for both */
	unsigned long count;
	uint64_t next_ino;
	void (*priv_free)(struct mfs_node *node);
};

static size_t ino_slot(const struct mfs_nodes *t, uint64_t ino)
{
	return (size_t)((ino * 11400714819323198485ULL) >> 17) &
	       (t->buckets - 1);
}

static size_t name_slot(const struct mfs_nodes *t, uint64_t parent,
			const char *name)
{
	/* the parent's inode, then the name */
	uint64_t h = mfs_fnv1a(MFS_FNV1A_INIT, &parent, sizeof(parent));

	return (size_t)mfs_fnv1a_str(h, name) & (t->buckets - 1);
}

static void hash_ino_insert(struct mfs_nodes *t, struct mfs_node *n)
{
	size_t s = ino_slot(t, n->ino);

	n->next_by_ino = t->by_ino[s];
	t->by_ino[s] = n;
}

static void hash_name_insert(struct mfs_nodes *t, struct mfs_node *n)
{
	size_t s = name_slot(t, n->parent->ino, n->name);

	n->next_by_name = t->by_name[s];
	t->by_name[s] = n;
}

static void hash_ino_remove(struct mfs_nodes *t, struct mfs_node *n)
{
	struct mfs_node **p = &t->by_ino[ino_slot(t, n->ino)];

	while (*p != NULL && *p != n)
		p = &(*p)->next_by_ino;
	if (*p != NULL)
		*p = n->next_by_ino;
}

static void hash_name_remove(struct mfs_nodes *t, struct mfs_node *n)
{
	struct mfs_node **p = &t->by_name[name_slot(t, n->parent->ino, n->name)];

	while (*p != NULL && *p != n)
		p = &(*p)->next_by_name;
	if (*p != NULL)
		*p = n->next_by_name;
}

/* Gives the tables `buckets` buckets. Failure only leaves them as they
 * were. */
static void resize(struct mfs_nodes *t, size_t buckets)
{
	struct mfs_node **ino, **name, *n, *next;
	struct mfs_node **old_ino = t->by_ino, **old_name = t->by_name;
	size_t old = t->buckets, i;

	ino = calloc(buckets, sizeof(*ino));
	name = calloc(buckets, sizeof(*name));
	if (ino == NULL || name == NULL) {
		free(ino);
		free(name);
		return;
	}
	t->by_ino = ino;
	t->by_name = name;
	t->buckets = buckets;
	for (i = 0; i < old; i++) {
		for (n = old_ino[i]; n != NULL; n = next) {
			next = n->next_by_ino;
			hash_ino_insert(t, n);
		}
		for (n = old_name[i]; n != NULL; n = next) {
			next = n->next_by_name;
			hash_name_insert(t, n);
		}
	}
	free(old_ino);
	free(old_name);
}

/* Doubles the tables when they hold more nodes than buckets. Failure to
 * grow only makes chains longer. */
static void maybe_grow(struct mfs_nodes *t)
{
	if (t->count >= t->buckets)
		resize(t, t->buckets * 2);
}

/* Halves them when they hold fewer than an eighth: after the kernel
 * forgot the files of a traversal, the tables need not stay that large. */
static void maybe_shrink(struct mfs_nodes *t)
{
	if (t->buckets > BUCKETS_MIN && t->count < t->buckets / 8)
		resize(t, t->buckets / 2);
}

static void sibling_remove(struct mfs_node *node)
{
	struct mfs_node *parent = node->parent;

	if (node->prev_sibling != NULL)
		node->prev_sibling->next_sibling = node->next_sibling;
	else
		parent->first_child = node->next_sibling;
	if (node->next_sibling != NULL)
		node->next_sibling->prev_sibling = node->prev_sibling;
	else
		parent->last_child = node->prev_sibling;
	node->prev_sibling = node->next_sibling = NULL;
}

static void sibling_append(struct mfs_node *parent, struct mfs_node *n)
{
	n->prev_sibling = parent->last_child;
	n->next_sibling = NULL;
	if (parent->last_child != NULL)
		parent->last_child->next_sibling = n;
	else
		parent->first_child = n;
	parent->last_child = n;
}

struct mfs_nodes *mfs_nodes_new(void (*priv_free)(struct mfs_node *node))
{
	struct mfs_nodes *t = calloc(1, sizeof(*t));

	if (t == NULL)
		return NULL;
	t->priv_free = priv_free;
	t->buckets = BUCKETS_MIN;
	t->by_ino = calloc(t->buckets, sizeof(*t->by_ino));
	t->by_name = calloc(t->buckets, sizeof(*t->by_name));
	t->root = calloc(1, sizeof(*t->root));
	if (t->by_ino == NULL || t->by_name == NULL || t->root == NULL)
		goto free_t;
	t->root->name = strdup("");
	if (t->root->name == NULL)
		goto free_t;
	t->root->ino = 1;
	t->root->kind = MFS_N_ROOT;
	t->root->refs = 1;
	t->root->linked = 1;
	t->root->mtime = time(NULL);
	t->next_ino = 2;
	t->count = 1;
	hash_ino_insert(t, t->root);
	return t;

free_t:
	if (t->root != NULL)
		free(t->root->name);
	free(t->root);
	free(t->by_ino);
	free(t->by_name);
	free(t);
	return NULL;
}

static void node_destroy(struct mfs_nodes *t, struct mfs_node *n)
{
	if (n->priv != NULL && t->priv_free != NULL)
		t->priv_free(n);
	if (n->name != n->name_here)
		free(n->name);
	free(n->mailbox);
	free(n->msg.uidl);
	free(n->msg.from);
	free(n->msg.subject);
	free(n);
}

void mfs_nodes_free(struct mfs_nodes *t)
{
	struct mfs_node *n, *next;
	size_t i;

	if (t == NULL)
		return;
	for (i = 0; i < t->buckets; i++) {
		for (n = t->by_ino[i]; n != NULL; n = next) {
			next = n->next_by_ino;
			node_destroy(t, n);
		}
	}
	free(t->by_ino);
	free(t->by_name);
	free(t);
}

struct mfs_node *mfs_nodes_root(struct mfs_nodes *t)
{
	return t->root;
}

struct mfs_node *mfs_nodes_get(struct mfs_nodes *t, uint64_t ino)
{
	struct mfs_node *n = t->by_ino[ino_slot(t, ino)];

	while (n != NULL && n->ino != ino)
		n = n->next_by_ino;
	return n;
}

struct mfs_node *mfs_nodes_child(struct mfs_nodes *t, struct mfs_node *dir,
				 const char *name)
{
	struct mfs_node *n = t->by_name[name_slot(t, dir->ino, name)];

	while (n != NULL && (n->parent != dir || strcmp(n->name, name) != 0))
		n = n->next_by_name;
	return n;
}

struct mfs_node *mfs_nodes_add(struct mfs_nodes *t, struct mfs_node *parent,
			       const char *name, enum mfs_node_kind kind)
{
	size_t len = strlen(name);
	struct mfs_node *n =
	    calloc(1, offsetof(struct mfs_node, name_here) + len + 1);

	if (n == NULL)
		return NULL;
	n->name = memcpy(n->name_here, name, len + 1);
	maybe_grow(t);
	n->ino = t->next_ino++;
	n->kind = kind;
	n->parent = parent;
	parent->refs++;
	n->refs = 1; /* linked */
	n->linked = 1;
	n->mtime = parent->mtime;
	sibling_append(parent, n);
	hash_ino_insert(t, n);
	hash_name_insert(t, n);
	t->count++;
	return n;
}

static void node_unref(struct mfs_nodes *t, struct mfs_node *n)
{
	while (n != NULL && --n->refs == 0) {
		struct mfs_node *parent = n->parent;

		hash_ino_remove(t, n);
		node_destroy(t, n);
		t->count--;
		maybe_shrink(t);
		n = parent;
	}
}

void mfs_nodes_unlink(struct mfs_nodes *t, struct mfs_node *node)
{
	struct mfs_node *parent = node->parent;

	if (!node->linked || parent == NULL)
		return;
	while (node->first_child != NULL)
		mfs_nodes_unlink(t, node->first_child);
	hash_name_remove(t, node);
	sibling_remove(node);
	node->linked = 0;
	node_unref(t, node);
}

int mfs_nodes_move(struct mfs_nodes *t, struct mfs_node *node,
		   struct mfs_node *newparent, const char *newname)
{
	struct mfs_node *oldparent = node->parent;
	char *name = strdup(newname);

	if (name == NULL)
		return -1;
	hash_name_remove(t, node);
	sibling_remove(node);
	if (node->name != node->name_here)
		free(node->name);
	node->name = name;
	node->parent = newparent;
	newparent->refs++;
	sibling_append(newparent, node);
	hash_name_insert(t, node);
	node_unref(t, oldparent);
	return 0;
}

void mfs_nodes_lookup(struct mfs_node *node)
{
	node->nlookup++;
	node->refs++;
}

void mfs_nodes_forget(struct mfs_nodes *t, struct mfs_node *node, uint64_t n)
{
	if (n > node->nlookup)
		n = node->nlookup;
	node->nlookup -= n;
	while (n-- > 0)
		node_unref(t, node);
}

void mfs_nodes_hold(struct mfs_node *node)
{
	node->refs++;
}

void mfs_nodes_release(struct mfs_nodes *t, struct mfs_node *node)
{
	node_unref(t, node);
}

unsigned long mfs_nodes_count(const struct mfs_nodes *t)
{
	return t->count;
}
