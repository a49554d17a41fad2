/*
 * node.h - the data model: the tree of nodes the mount shows.
 *
 *   root ── folder ── folder ...        (IMAP folders, nested)
 *              └── message ── file      (one directory per message)
 *
 * Every node has an inode number that stays the same for the life of the
 * mount. Nodes are reference counted: a node holds one reference while it is
 * linked into its parent's directory, one per child that names it as parent,
 * and one per kernel lookup not yet forgotten. A node that the server no
 * longer has is unlinked at once (it vanishes from lookups and listings) and
 * freed when the kernel forgets it.
 *
 * Nothing here locks: the caller (fs.c) holds its tree lock around every
 * call, and never across network I/O.
 */
#ifndef MAILFS_NODE_H
#define MAILFS_NODE_H

#include <stdint.h>
#include <time.h>

#include "store.h"

enum mfs_node_kind {
	MFS_N_ROOT,
	MFS_N_FOLDER,
	MFS_N_MESSAGE, /* a message directory */
	MFS_N_PARTDIR, /* a directory inside one (parts/, parts/2/, ...) */
	MFS_N_OUTBOX,  /* outbox/ */
	MFS_N_STATUS,  /* outbox/.status/ */
	MFS_N_FILE,
	MFS_N_SEARCH,  /* FOLDER/.search/ or MOUNT/.search/: never listed */
	MFS_N_QUERY,   /* .search/QUERY/: the matches; the name is the query */
	MFS_N_HITDIR,  /* a folder's matches in MOUNT/.search/QUERY/ */
	MFS_N_LINK,    /* a match: a symbolic link to its message directory */
	MFS_N_MAILFS,  /* .mailfs/: the mount's own files */
};

/* What a file node serves. */
enum mfs_file_kind {
	MFS_F_PART,   /* a file of the message layout (mime.h) */
	MFS_F_FLAGS,  /* flags: the message's flags, one per line */
	MFS_F_NEW,    /* a file being written into a folder: becomes APPEND */
	MFS_F_OUTBOX, /* a file in outbox/: a spool entry */
	MFS_F_STATUS, /* outbox/.status/NAME: how that entry is doing */
	MFS_F_STATE,  /* .mailfs/status: how the mount is doing */
};

/* A node. 8-byte fields first, then the narrower ones, and the name last
 * in the same allocation: a du of 10,000 messages keeps some 170,000 of
 * them while the kernel knows them. */
struct mfs_node {
	uint64_t ino;
	char *name;		 /* name in the parent directory: owned, or
				  * name_here */
	struct mfs_node *parent; /* counted reference; NULL for the root */
	unsigned long refs;
	uint64_t nlookup; /* kernel lookups not yet forgotten */
	time_t mtime;

	/* Linked children, in creation order. */
	struct mfs_node *first_child, *last_child;
	struct mfs_node *prev_sibling, *next_sibling;
	/* Hash chains of the node table. */
	struct mfs_node *next_by_ino, *next_by_name;

	/* Private data of the FUSE layer, released through the table's
	 * priv_free callback when the node is freed. MFS_N_MESSAGE: the
	 * message's bytes and layout; MFS_F_NEW: the file being written. */
	void *priv;

	/* MFS_N_FOLDER */
	char *mailbox;	   /* owned: server name; NULL for a node that only
			      groups subfolders the server did not list */
	time_t listed;	   /* when the messages were last listed; 0 never
			      (MFS_N_QUERY: when last searched) */

	/* MFS_N_MESSAGE */
	struct mfs_store_msg msg; /* owned copy (uidl, from, subject) */

	/* MFS_N_FILE */
	uint64_t size;

	enum mfs_node_kind kind;
	unsigned gen;	   /* listing generation that last saw it */
	uint32_t validity; /* MFS_N_FOLDER: UIDVALIDITY of that listing */
	/* MFS_N_PARTDIR, and MFS_N_FILE of kind MFS_F_PART: the id of the
	 * entry of the message's layout it shows (mime.h: the same for the
	 * same bytes), so that the layout may be freed while the node lives
	 * and laid out again when needed (msgview.c). */
	uint32_t entry_id;
	enum mfs_file_kind file; /* MFS_N_FILE */

	unsigned char linked;	 /* reachable from the parent */
	unsigned char populated; /* the children of a message or part
				  * directory exist */
	char delim;		 /* MFS_N_FOLDER: hierarchy delimiter of the
				  * server name */
	unsigned char noselect;	 /* MFS_N_FOLDER: holds no messages */
	unsigned char sized;	 /* MFS_F_PART: size is the file's, for
				  * good */
	char name_here[];	 /* the name as created */
};

struct mfs_nodes;

/* A table holding a root node (inode 1). priv_free (may be NULL) is
 * called with a node's priv, when not NULL, as the node is freed. NULL on
 * ENOMEM. */
struct mfs_nodes *mfs_nodes_new(void (*priv_free)(struct mfs_node *node));
/* Frees every node, whatever its counts. */
void mfs_nodes_free(struct mfs_nodes *t);

struct mfs_node *mfs_nodes_root(struct mfs_nodes *t);
/* The node with that inode number (linked or not), or NULL. */
struct mfs_node *mfs_nodes_get(struct mfs_nodes *t, uint64_t ino);
/* The linked child of dir with that name, or NULL. */
struct mfs_node *mfs_nodes_child(struct mfs_nodes *t, struct mfs_node *dir,
				 const char *name);

/* Creates a node linked under parent with a copy of name (the caller makes
 * sure the name is free). Returns NULL on ENOMEM. */
struct mfs_node *mfs_nodes_add(struct mfs_nodes *t, struct mfs_node *parent,
			       const char *name, enum mfs_node_kind kind);

/* Unlinks node and, recursively, everything below it. */
void mfs_nodes_unlink(struct mfs_nodes *t, struct mfs_node *node);

/* Moves a linked node under newparent with a copy of newname (the caller
 * makes sure the name is free). Returns 0, or -1 on ENOMEM (nothing
 * changed then). */
int mfs_nodes_move(struct mfs_nodes *t, struct mfs_node *node,
		   struct mfs_node *newparent, const char *newname);

/* One more kernel lookup of node. */
void mfs_nodes_lookup(struct mfs_node *node);
/* The kernel forgets n lookups; frees the node when nothing holds it. */
void mfs_nodes_forget(struct mfs_nodes *t, struct mfs_node *node,
		      uint64_t n);

/* Pins node while the caller works on it without the tree lock held;
 * mfs_nodes_release() undoes it (and may free the node). */
void mfs_nodes_hold(struct mfs_node *node);
void mfs_nodes_release(struct mfs_nodes *t, struct mfs_node *node);

/* Number of nodes alive (for tests and the log). */
unsigned long mfs_nodes_count(const struct mfs_nodes *t);

#endif
