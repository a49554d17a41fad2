/* store.c - helpers shared by all store drivers (see store.h) */
#include "store.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <time.h>

const char *const mfs_flag_names[MFS_NFLAGS] = {
	"\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft",
};

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

int mfs_store_watch_poll(int stop_fd, int secs, int *changed)
{
	struct pollfd p = {.fd = stop_fd, .events = POLLIN};
	struct timespec end, now;
	long left;
	int r;

	*changed = 0;
	clock_gettime(CLOCK_MONOTONIC, &end);
	end.tv_sec += secs > 0 ? secs : 1;
	for (;;) {
		clock_gettime(CLOCK_MONOTONIC, &now);
		left = (end.tv_sec - now.tv_sec) * 1000 +
		       (end.tv_nsec - now.tv_nsec) / 1000000;
		if (left <= 0) {
			*changed = 1;
			return MFS_OK;
		}
		r = poll(&p, 1, left > 60000 ? 60000 : (int)left);
		if (r > 0)
			return MFS_OK; /* stopped */
		if (r < 0 && errno != EINTR)
			return MFS_OK;
	}
}

void mfs_store_hits_free(struct mfs_store_hits *hits, size_t n)
{
	size_t i;

	if (hits == NULL)
		return;
	for (i = 0; i < n; i++) {
		free(hits[i].uids);
		hits[i].uids = NULL;
		hits[i].n = 0;
		mfs_store_msgs_free(hits[i].msgs, hits[i].nmsgs);
		hits[i].msgs = NULL;
		hits[i].nmsgs = 0;
	}
}
