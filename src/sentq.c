/*
 * sentq.c - the Sent-copy queue of the spool (see sentq.h and "Sent
 * copies" in spool.h). Times of the queue are CLOCK_MONOTONIC seconds.
 */
#include "sentq.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "privdir.h"
#include "statefile.h"

#define SENT_DIR ".sent"

struct copy {
	struct copy *next;
	char id[MFS_SPOOL_ID_LEN];
	char *name;	 /* owned: the name in outbox/, for the log */
	int attempts;	 /* failed calls so far */
	double next_try; /* monotonic; 0: now */
};

struct mfs_sentq {
	pthread_mutex_t lock;
	pthread_cond_t cond; /* CLOCK_MONOTONIC */
	int refs;	     /* the spool's, and the thread's while it runs */
	int dirfd;	     /* owned: SPOOL/.sent */
	mfs_spool_sent_fn fn;
	void *arg; /* borrowed: passed to fn */
	int backoff_min, backoff_max, lifetime;
	struct copy *head; /* owned list, in order of acceptance */
	int busy;	   /* fn runs on head now */
	int running;	   /* the thread exists (it is detached) */
	int stop;	   /* the thread is asked to end by deadline */
	double deadline;   /* monotonic */
};

static double mono_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Waits on q->cond until woken or the monotonic time t (0: no limit).
 * Called with q->lock held. */
static void sentq_wait(struct mfs_sentq *q, double t)
{
	struct timespec ts;

	if (t <= 0) {
		pthread_cond_wait(&q->cond, &q->lock);
		return;
	}
	ts.tv_sec = (time_t)t;
	ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
	pthread_cond_timedwait(&q->cond, &q->lock, &ts);
}

static void copy_free(struct copy *c)
{
	free(c->name);
	free(c);
}

void mfs_sentq_close(struct mfs_sentq *q)
{
	int last;

	if (!q)
		return;
	pthread_mutex_lock(&q->lock);
	last = --q->refs == 0;
	pthread_mutex_unlock(&q->lock);
	if (!last)
		return;
	while (q->head) {
		struct copy *c = q->head;

		q->head = c->next;
		copy_free(c);
	}
	close(q->dirfd);
	pthread_cond_destroy(&q->cond);
	pthread_mutex_destroy(&q->lock);
	free(q);
}

/* Adds c in id order (ids sort by time of acceptance). Lock held. */
static void sentq_insert(struct mfs_sentq *q, struct copy *c)
{
	struct copy **pp = &q->head;

	while (*pp && strcmp((*pp)->id, c->id) < 0)
		pp = &(*pp)->next;
	c->next = *pp;
	*pp = c;
}

/* The wall-clock time the copy's message was accepted, from the id. */
static time_t copy_time(const struct copy *c)
{
	char hex[17];

	snprintf(hex, sizeof(hex), "%.16s", c->id);
	return (time_t)strtoll(hex, NULL, 16);
}

/* Records what the call of fn on the first copy c returned (rc; gone: its
 * file is missing). Called with q->lock held; removes c unless it is to
 * be tried again. */
static void copy_outcome(struct mfs_sentq *q, struct copy *c, int rc, int gone)
{
	long delay = q->backoff_min;

	if (rc == 0 || gone || time(NULL) - copy_time(c) >= q->lifetime) {
		if (rc == 0)
			mfs_log_info("outbox: the Sent copy of %s was made",
				     c->name);
		else
			mfs_log_err("outbox: the Sent copy of %s is dropped: "
				    "%s",
				    c->name,
				    gone ? "its file is gone"
					 : "not made within the queue "
					   "lifetime");
		q->head = c->next;
		mfs_state_remove(q->dirfd, c->id, "name");
		copy_free(c);
		return;
	}
	c->attempts++;
	for (int i = 1; i < c->attempts && delay < q->backoff_max; i++)
		delay *= 2;
	if (delay > q->backoff_max)
		delay = q->backoff_max;
	c->next_try = mono_now() + delay;
	mfs_log_err("outbox: the Sent copy of %s failed (attempt %d); "
		    "next try in %ld s",
		    c->name, c->attempts, delay);
}

/*
 * Hands the first copy to fn when it is due and nobody makes it now.
 * Called with q->lock held; drops it during the call. Returns 1 when made
 * (or dropped), 0 when it failed, -1 when there was nothing to do.
 */
static int sentq_make_one(struct mfs_sentq *q)
{
	struct copy *c = q->head;
	char path[MFS_SPOOL_ID_LEN + 16];
	struct stat st;
	int fd, rc = -1;

	if (!c || q->busy || c->next_try > mono_now())
		return -1;
	q->busy = 1;
	pthread_mutex_unlock(&q->lock);
	snprintf(path, sizeof(path), "%s.eml", c->id);
	fd = openat(q->dirfd, path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd >= 0 && fstat(fd, &st) == 0)
		rc = q->fn(q->arg, c->name, fd, st.st_size);
	if (fd >= 0)
		close(fd);
	pthread_mutex_lock(&q->lock);
	q->busy = 0;
	/* only this call removes c; a new copy is never put before it */
	copy_outcome(q, c, rc, fd < 0);
	pthread_cond_broadcast(&q->cond);
	return rc == 0 || fd < 0;
}

static void *sent_thread(void *arg)
{
	struct mfs_sentq *q = arg;

	pthread_mutex_lock(&q->lock);
	for (;;) {
		struct copy *c = q->head;
		double now = mono_now(), wake;

		if (q->stop && (!c || c->next_try > now || now >= q->deadline))
			break;
		if (sentq_make_one(q) >= 0)
			continue;
		/* nothing due, or mfs_sentq_run() is making it */
		wake = c && !q->busy ? c->next_try : 0;
		if (q->stop && (!wake || q->deadline < wake))
			wake = q->deadline;
		sentq_wait(q, wake);
	}
	q->running = 0;
	pthread_cond_broadcast(&q->cond);
	pthread_mutex_unlock(&q->lock);
	mfs_sentq_close(q);
	return NULL;
}

int mfs_sentq_start(struct mfs_sentq *q)
{
	pthread_attr_t attr;
	pthread_t t;
	int rc = 0;

	pthread_mutex_lock(&q->lock);
	q->stop = 0;
	if (!q->running) {
		q->refs++;
		q->running = 1;
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		if (pthread_create(&t, &attr, sent_thread, q) != 0) {
			q->refs--;
			q->running = 0;
			rc = -1;
		}
		pthread_attr_destroy(&attr);
	}
	/* a thread left running by a stop goes on as before */
	pthread_cond_broadcast(&q->cond);
	pthread_mutex_unlock(&q->lock);
	return rc;
}

/* Asks the thread to end within grace seconds and waits that long at most.
 * Returns 1 when it is still inside the callback then, else 0. */
int mfs_sentq_stop(struct mfs_sentq *q, int grace)
{
	int left;

	pthread_mutex_lock(&q->lock);
	q->stop = 1;
	q->deadline = mono_now() + grace;
	pthread_cond_broadcast(&q->cond);
	while (q->running && mono_now() < q->deadline)
		sentq_wait(q, q->deadline);
	left = q->running;
	pthread_mutex_unlock(&q->lock);
	if (left)
		mfs_log_err("outbox: a Sent copy was still being made when "
			    "mailfs stopped; it is made again at the next "
			    "mount unless it succeeds now");
	return left;
}

int mfs_sentq_run(struct mfs_sentq *q)
{
	int made = 0;

	pthread_mutex_lock(&q->lock);
	while (sentq_make_one(q) > 0)
		made++;
	pthread_mutex_unlock(&q->lock);
	return made;
}

/* Copies size bytes of fd into dirfd/path, durably. */
static int copy_durably(int fd, off_t size, int dirfd, const char *path)
{
	char tmp[MFS_SPOOL_ID_LEN + 32], buf[65536];
	int out, rc = -1;
	off_t off = 0;

	snprintf(tmp, sizeof(tmp), "%s.new", path);
	out = mfs_state_create_new(dirfd, tmp);
	if (out < 0)
		return -1;
	while (off < size) {
		ssize_t n = pread(fd, buf, sizeof(buf), off);

		if (n <= 0 || write(out, buf, n) != n)
			goto close_out;
		off += n;
	}
	if (fsync(out) == 0 && renameat(dirfd, tmp, dirfd, path) == 0)
		rc = 0;
close_out:
	close(out);
	if (rc)
		unlinkat(dirfd, tmp, 0);
	return rc;
}

/*
 * Keeps the prepared message prep (size bytes) as a Sent copy to make,
 * named after id, and queues it. Returns 0, or -1 (errno set) when it
 * could not be kept on disk.
 */
int mfs_sentq_keep(struct mfs_sentq *q, const char *id, const char *name,
		   int prep, off_t size)
{
	char path[MFS_SPOOL_ID_LEN + 16], proc[64], *text = NULL;
	struct copy *c = calloc(1, sizeof(*c));
	size_t len = 0;
	FILE *f;

	if (!c || !(c->name = strdup(name)))
		goto free_copy;
	snprintf(c->id, sizeof(c->id), "%s", id);
	f = open_memstream(&text, &len);
	if (!f)
		goto free_copy;
	fputs("name: ", f);
	mfs_state_put_escaped(f, name);
	fputc('\n', f);
	if (fclose(f) != 0)
		goto free_copy;
	snprintf(path, sizeof(path), "%s.name", id);
	if (mfs_state_write(q->dirfd, path, text, len) != 0)
		goto free_copy;
	snprintf(path, sizeof(path), "%s.eml", id);
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", prep);
	/* the O_TMPFILE gets its name only now that its bytes are safe */
	if (fsync(prep) != 0 ||
	    linkat(AT_FDCWD, proc, q->dirfd, path, AT_SYMLINK_FOLLOW) != 0) {
		if (copy_durably(prep, size, q->dirfd, path) != 0)
			goto remove_files;
	}
	if (fsync(q->dirfd) != 0)
		goto remove_files;
	free(text);
	pthread_mutex_lock(&q->lock);
	sentq_insert(q, c);
	pthread_cond_broadcast(&q->cond);
	pthread_mutex_unlock(&q->lock);
	return 0;
remove_files:
	mfs_state_remove(q->dirfd, id, "name");
free_copy:
	free(text);
	if (c)
		copy_free(c);
	return -1;
}

/* Reads the user's name of a copy from ID.name; "?" when unreadable. */
static char *copy_name(struct mfs_sentq *q, const char *id)
{
	char path[MFS_SPOOL_ID_LEN + 16], line[4096] = "";
	FILE *f;
	int fd;

	snprintf(path, sizeof(path), "%s.name", id);
	fd = openat(q->dirfd, path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	f = fd >= 0 ? fdopen(fd, "r") : NULL;
	if (!f) {
		if (fd >= 0)
			close(fd);
		return strdup("?");
	}
	if (!fgets(line, sizeof(line), f))
		line[0] = '\0';
	fclose(f);
	line[strcspn(line, "\n")] = '\0';
	return strncmp(line, "name: ", 6) == 0 ? mfs_state_unescape(line + 6)
					       : strdup("?");
}

/* Loads one directory entry of .sent: a copy for ID.eml, a removal for a
 * left-over ID.name or a half-written *.new. */
static void sentq_load_one(struct mfs_sentq *q, const char *fname)
{
	size_t n = strlen(fname);
	char id[MFS_SPOOL_ID_LEN], path[MFS_SPOOL_ID_LEN + 16];
	struct copy *c;

	if (n > 4 && strcmp(fname + n - 4, ".new") == 0) {
		unlinkat(q->dirfd, fname, 0);
		return;
	}
	if (n > 5 && n - 5 < MFS_SPOOL_ID_LEN &&
	    strcmp(fname + n - 5, ".name") == 0) {
		snprintf(path, sizeof(path), "%.*s.eml", (int)(n - 5), fname);
		if (faccessat(q->dirfd, path, F_OK, 0) != 0)
			unlinkat(q->dirfd, fname, 0);
		return;
	}
	if (n <= 4 || n - 4 >= MFS_SPOOL_ID_LEN ||
	    strcmp(fname + n - 4, ".eml") != 0)
		return;
	snprintf(id, sizeof(id), "%.*s", (int)(n - 4), fname);
	c = calloc(1, sizeof(*c));
	if (!c)
		return;
	snprintf(c->id, sizeof(c->id), "%s", id);
	c->name = copy_name(q, id);
	if (!c->name) {
		free(c);
		return;
	}
	mfs_log_info("outbox: the Sent copy of %s, left by an earlier run, "
		     "is still to be made",
		     c->name);
	sentq_insert(q, c);
}

int mfs_sentq_open(int spool_dirfd, const char *spool_dir,
		   const struct mfs_sentq_opts *opts, struct mfs_sentq **out,
		   struct mfs_err *err)
{
	char path[4096];
	pthread_condattr_t ca;
	struct mfs_sentq *q;
	struct dirent *de;
	DIR *d;
	int fd, rc;

	*out = NULL;
	q = calloc(1, sizeof(*q));
	if (!q)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	if (mkdirat(spool_dirfd, SENT_DIR, 0700) != 0 && errno != EEXIST)
		goto fail;
	q->dirfd = openat(spool_dirfd, SENT_DIR,
			  O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (q->dirfd < 0)
		goto fail;
	snprintf(path, sizeof(path), "%s/%s", spool_dir, SENT_DIR);
	rc = mfs_dir_check_private(q->dirfd, "spool directory", path, err);
	if (rc) {
		close(q->dirfd);
		free(q);
		return rc;
	}
	fd = dup(q->dirfd);
	d = fd >= 0 ? fdopendir(fd) : NULL;
	if (!d) {
		if (fd >= 0)
			close(fd);
		close(q->dirfd);
		goto fail;
	}
	q->refs = 1;
	q->fn = opts->sent;
	q->arg = opts->sent_arg;
	q->backoff_min = opts->backoff_min;
	q->backoff_max = opts->backoff_max;
	q->lifetime = opts->lifetime;
	pthread_mutex_init(&q->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&q->cond, &ca);
	pthread_condattr_destroy(&ca);
	while ((de = readdir(d)))
		sentq_load_one(q, de->d_name);
	closedir(d);
	*out = q;
	return MFS_OK;
fail:
	free(q);
	return mfs_err_set(err, MFS_E_IO, "cannot open %s/%s: %s", spool_dir,
			   SENT_DIR, strerror(errno));
}
