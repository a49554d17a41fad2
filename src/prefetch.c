/*
 * prefetch.c - the `prefetch` setting: the messages of some folders fetched
 * into the cache in the background, so that they can be read offline
 * (README, "Offline").
 *
 * One thread. A round: list the folders, and for each folder whose path
 * matches a pattern, list it and fetch the messages the cache does not
 * hold, newest first, a batch per command (msgview_fetch_into_cache: one
 * connection of the pool, so that the reader's own fetches keep the
 * others). A round stops when the cache would be more than CACHE_SHARE
 * full, so that prefetching never evicts what was read. Then it waits for
 * the next round (the account's refresh time, at least ROUND_MIN) or until
 * it is stopped. Offline, it waits too.
 */
#include "fsint.h"

#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cache.h"
#include "log.h"

#define BATCH_MAX 256		       /* messages per command */
#define BATCH_BYTES (4 * 1024 * 1024) /* bytes per command, or one message */
#define CACHE_SHARE 80		       /* percent of cache_size it may fill */
#define ROUND_MIN 60		       /* seconds between rounds, at least */

struct prefetch {
	pthread_t thread;
	int pipe[2];	   /* owned: written to stop the thread */
	struct mfs_fs *fs; /* borrowed */
	char **patterns;   /* owned */
	size_t npatterns;
};

/* The patterns of the setting: words separated by blanks, a word in double
 * quotes may hold blanks ("Sent Items"). NULL on ENOMEM. */
static char **split_patterns(const char *s, size_t *n)
{
	char **out = calloc(strlen(s) / 2 + 2, sizeof(*out));
	size_t count = 0;

	if (out == NULL)
		return NULL;
	while (*s != '\0') {
		const char *start, *end;

		while (*s == ' ' || *s == '\t')
			s++;
		if (*s == '\0')
			break;
		if (*s == '"') {
			start = ++s;
			end = strchr(s, '"');
			if (end == NULL)
				end = s + strlen(s);
			s = *end == '"' ? end + 1 : end;
		} else {
			start = s;
			end = s + strcspn(s, " \t");
			s = end;
		}
		if (end > start) {
			out[count] = strndup(start, (size_t)(end - start));
			if (out[count] == NULL)
				goto nomem;
			count++;
		}
	}
	*n = count;
	return out;
nomem:
	while (count > 0)
		free(out[--count]);
	free(out);
	return NULL;
}

static int stopped(struct prefetch *p, int secs)
{
	struct pollfd pfd = {.fd = p->pipe[0], .events = POLLIN};

	return poll(&pfd, 1, secs * 1000) != 0;
}

/* The path of folder node n from the root ("Archive/2026"), into buf. */
static int folder_path(const struct mfs_node *n, char *buf, size_t len)
{
	char tmp[4096];

	if (n->parent == NULL || n->kind != MFS_N_FOLDER) {
		buf[0] = '\0';
		return 0;
	}
	if (folder_path(n->parent, tmp, sizeof(tmp)) != 0)
		return -1;
	if ((size_t)snprintf(buf, len, "%s%s%s", tmp, tmp[0] ? "/" : "",
			     n->name) >= len)
		return -1;
	return 0;
}

static int matches(const struct prefetch *p, const char *path)
{
	size_t i;

	for (i = 0; i < p->npatterns; i++)
		if (fnmatch(p->patterns[i], path, FNM_PATHNAME) == 0)
			return 1;
	return 0;
}

/* The folders that match, held, into *out. Caller holds the lock. */
static void collect_folders(struct prefetch *p, struct mfs_node *dir,
			    struct mfs_node ***out, size_t *n, size_t *cap)
{
	struct mfs_node *c;
	char path[4096];

	for (c = dir->first_child; c != NULL; c = c->next_sibling) {
		if (c->kind != MFS_N_FOLDER)
			continue;
		if (!c->noselect && folder_path(c, path, sizeof(path)) == 0 &&
		    matches(p, path)) {
			if (*n == *cap) {
				size_t ncap = *cap ? 2 * *cap : 16;
				struct mfs_node **g =
				    realloc(*out, ncap * sizeof(**out));

				if (g == NULL)
					return;
				*out = g;
				*cap = ncap;
			}
			mfs_nodes_hold(c);
			(*out)[(*n)++] = c;
		}
		collect_folders(p, c, out, n, cap);
	}
}

/* Newest first: by date, then by UID. */
static int newest_first(const void *a, const void *b)
{
	const struct mfs_node *x = *(struct mfs_node *const *)a;
	const struct mfs_node *y = *(struct mfs_node *const *)b;

	if (x->msg.date != y->msg.date)
		return x->msg.date < y->msg.date ? 1 : -1;
	return x->msg.uid < y->msg.uid ? 1 : x->msg.uid > y->msg.uid ? -1 : 0;
}

/* Whether the cache may take bytes more within its share. */
static int cache_room(struct mfs_fs *fs, uint64_t bytes)
{
	uint64_t limit = fs->acct->cache_size != 0 ? fs->acct->cache_size
						   : MFS_CACHE_DEFAULT_LIMIT;

	return mfs_cache_usage(fs->cache) + bytes <= limit / 100 * CACHE_SHARE;
}

/* Fetches the messages of folder dir (held) that the cache lacks. Returns
 * -1 when the round is to stop (cache full, offline, stopped). */
static int prefetch_folder(struct prefetch *p, struct mfs_node *dir)
{
	struct mfs_fs *fs = p->fs;
	struct mfs_node **msgs = NULL, *c;
	struct mfs_err err;
	size_t n = 0, i, start;
	int rc = 0;

	mfs_err_clear(&err);
	if (refresh_folder(fs, dir, fs->acct->refresh > 0 ? fs->acct->refresh
							  : 60,
			   &err) != MFS_OK)
		return mfs_err_unreachable(err.code) ? -1 : 0;
	pthread_mutex_lock(&fs->lock);
	for (c = dir->first_child; c != NULL; c = c->next_sibling)
		n += c->kind == MFS_N_MESSAGE;
	msgs = calloc(n ? n : 1, sizeof(*msgs));
	n = 0;
	for (c = dir->first_child; msgs != NULL && c != NULL;
	     c = c->next_sibling)
		if (c->kind == MFS_N_MESSAGE) {
			mfs_nodes_hold(c);
			msgs[n++] = c;
		}
	pthread_mutex_unlock(&fs->lock);
	if (msgs == NULL)
		return -1;
	qsort(msgs, n, sizeof(*msgs), newest_first);
	for (start = 0; start < n && rc == 0;) {
		uint64_t bytes = 0;
		size_t end = start;

		while (end < n && end - start < BATCH_MAX &&
		       (end == start || bytes + msgs[end]->msg.size <=
					    BATCH_BYTES))
			bytes += msgs[end++]->msg.size;
		if (!cache_room(fs, bytes) || stopped(p, 0)) {
			rc = -1;
			break;
		}
		mfs_err_clear(&err);
		pthread_mutex_lock(&fs->lock);
		if (msgview_fetch_into_cache(fs, dir, msgs + start,
					     end - start, &err) != MFS_OK) {
			mfs_log_debug("prefetch %s: %s", dir->mailbox,
				      err.msg);
			if (mfs_err_unreachable(err.code))
				rc = -1;
		}
		pthread_mutex_unlock(&fs->lock);
		start = end;
	}
	pthread_mutex_lock(&fs->lock);
	for (i = 0; i < n; i++)
		mfs_nodes_release(fs->nodes, msgs[i]);
	pthread_mutex_unlock(&fs->lock);
	free(msgs);
	return rc;
}

static void prefetch_round(struct prefetch *p)
{
	struct mfs_fs *fs = p->fs;
	struct mfs_node **dirs = NULL;
	size_t n = 0, cap = 0, i;
	struct mfs_err err;
	int go = 1;

	mfs_err_clear(&err);
	if (refresh_folders(fs, 60, &err) != MFS_OK &&
	    mfs_err_unreachable(err.code))
		return;
	pthread_mutex_lock(&fs->lock);
	collect_folders(p, mfs_nodes_root(fs->nodes), &dirs, &n, &cap);
	pthread_mutex_unlock(&fs->lock);
	for (i = 0; i < n; i++) {
		if (go && prefetch_folder(p, dirs[i]) != 0)
			go = 0;
		pthread_mutex_lock(&fs->lock);
		mfs_nodes_release(fs->nodes, dirs[i]);
		pthread_mutex_unlock(&fs->lock);
	}
	free(dirs);
}

static void *prefetch_thread(void *arg)
{
	struct prefetch *p = arg;
	int wait = p->fs->acct->refresh > ROUND_MIN ? p->fs->acct->refresh
						    : ROUND_MIN;

	do
		prefetch_round(p);
	while (!stopped(p, wait));
	return NULL;
}

static void prefetch_free(struct prefetch *p)
{
	while (p->patterns != NULL && p->npatterns > 0)
		free(p->patterns[--p->npatterns]);
	free(p->patterns);
	close(p->pipe[0]);
	close(p->pipe[1]);
	free(p);
}

void mfs_fs_start_prefetch(struct mfs_fs *fs)
{
	struct prefetch *p;

	if (fs->acct->prefetch == NULL || fs->store->ops->fetch_many == NULL)
		return;
	p = calloc(1, sizeof(*p));
	if (p == NULL || pipe2(p->pipe, O_CLOEXEC) != 0) {
		free(p);
		mfs_log_err("prefetch does not run: %s", strerror(errno));
		return;
	}
	p->fs = fs;
	p->patterns = split_patterns(fs->acct->prefetch, &p->npatterns);
	if (p->patterns == NULL ||
	    pthread_create(&p->thread, NULL, prefetch_thread, p) != 0) {
		mfs_log_err("prefetch does not run: out of resources");
		goto fail;
	}
	fs->prefetch = p;
	return;
fail:
	prefetch_free(p);
}

void mfs_fs_stop_prefetch(struct mfs_fs *fs)
{
	struct prefetch *p = fs->prefetch;

	if (p == NULL)
		return;
	if (write(p->pipe[1], "x", 1) != 1)
		mfs_log_err("prefetch: cannot stop: %s", strerror(errno));
	pthread_join(p->thread, NULL);
	prefetch_free(p);
	fs->prefetch = NULL;
}
