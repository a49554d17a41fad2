/* store.c - helpers shared by all store drivers (see store.h) */
#include "store.h"

#include <stdlib.h>

void mfs_store_folders_free(struct mfs_store_folder *folders, size_t n)
{
	size_t i;

	for (i = 0; i < n && folders != NULL; i++)
		free(folders[i].name);
	free(folders);
}

void mfs_store_msgs_free(struct mfs_store_msg *msgs, size_t n)
{
	size_t i;

	for (i = 0; i < n && msgs != NULL; i++) {
		free(msgs[i].uidl);
		free(msgs[i].from);
		free(msgs[i].subject);
	}
	free(msgs);
}

void mfs_store_segs_free(struct mfs_seg *segs, size_t n)
{
	size_t i;

	for (i = 0; i < n && segs != NULL; i++)
		free(segs[i].section);
	free(segs);
}
