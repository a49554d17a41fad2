/*
 * state.c - MOUNT/.mailfs/status: what the mount is doing, in a few lines
 * of text (README, "Offline"): online or offline since when and why, the
 * outbox queue, the cache's use.
 */
#include "fsint.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cache.h"
#include "journal.h"
#include "spool.h"

#define MAILFS_DIR ".mailfs"

void state_nodes_add(struct mfs_fs *fs)
{
	struct mfs_node *root = mfs_nodes_root(fs->nodes), *d;

	d = mfs_nodes_add(fs->nodes, root, MAILFS_DIR, MFS_N_MAILFS);
	if (d == NULL)
		return;
	d->mtime = time(NULL);
	d = mfs_nodes_add(fs->nodes, d, "status", MFS_N_FILE);
	if (d != NULL) {
		d->file = MFS_F_STATE;
		d->mtime = time(NULL);
	}
}

static void put_time(FILE *f, time_t t)
{
	struct tm tm;
	char text[40];

	if (localtime_r(&t, &tm) == NULL ||
	    strftime(text, sizeof(text), "%Y-%m-%d %H:%M:%S %z", &tm) == 0)
		snprintf(text, sizeof(text), "%lld", (long long)t);
	fputs(text, f);
}

static void put_online(FILE *f, struct mfs_fs *fs)
{
	struct mfs_store_state s;
	time_t now = time(NULL);

	memset(&s, 0, sizeof(s));
	if (fs->store->ops->state != NULL)
		fs->store->ops->state(fs->store, &s);
	if (s.offline_since == 0) {
		fputs("state: online\n", f);
		return;
	}
	fputs("state: offline since ", f);
	put_time(f, s.offline_since);
	fprintf(f, "\nwhy: %s\n", s.why);
	fprintf(f, "next try: in %lld s\n",
		(long long)(s.retry_at > now ? s.retry_at - now : 0));
}

/* The outbox entries by status, from the spool. */
static void put_outbox(FILE *f, struct mfs_fs *fs)
{
	struct mfs_spool_entry *ents = NULL;
	size_t n = 0, i, queued = 0, failed = 0, other = 0;
	struct mfs_err err;

	if (fs->spool == NULL)
		return;
	if (mfs_spool_list(fs->spool, &ents, &n, &err) != MFS_OK) {
		fprintf(f, "outbox: %s\n", err.msg);
		return;
	}
	for (i = 0; i < n; i++) {
		if (ents[i].status == MFS_SPOOL_QUEUED ||
		    ents[i].status == MFS_SPOOL_SENDING)
			queued++;
		else if (ents[i].status == MFS_SPOOL_FAILED ||
			 ents[i].status == MFS_SPOOL_INVALID)
			failed++;
		else
			other++;
	}
	mfs_spool_entries_free(ents, n);
	fprintf(f, "outbox: %zu queued, %zu failed, %zu being written\n",
		queued, failed, other);
}

char *state_text(struct mfs_fs *fs, const struct mfs_node *n,
		 struct mfs_err *err)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	(void)n;
	if (f == NULL) {
		mfs_err_set(err, MFS_E_NOMEM, "out of memory");
		return NULL;
	}
	put_online(f, fs);
	mfs_journal_describe(fs->store, f);
	put_outbox(f, fs);
	if (fs->cache != NULL)
		fprintf(f, "cache: %llu bytes of %llu\n",
			(unsigned long long)mfs_cache_usage(fs->cache),
			(unsigned long long)(fs->acct->cache_size != 0
						     ? fs->acct->cache_size
						     : MFS_CACHE_DEFAULT_LIMIT));
	if (fclose(f) != 0) {
		free(text);
		mfs_err_set(err, MFS_E_NOMEM, "out of memory");
		return NULL;
	}
	return text;
}
