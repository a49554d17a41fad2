/*
 * spool.c - the durable outbox queue.
 *
 * Ordering that keeps every message safe:
 *   create:  ID.eml with O_EXCL first (an id already on disk, left by an
 *            earlier run with the same time and pid, is skipped, never
 *            overwritten), then ID.state ("writing"); an empty ID.eml
 *            without its state is a create that stopped half way and is
 *            dropped at open, as is an ID.state without ID.eml (an unlink
 *            that stopped half way);
 *   commit:  fsync ID.eml and the directory, then "sending" durably, then
 *            the first byte to the server; when "sending" cannot be
 *            written, nothing is sent (the entry stays queued);
 *   accept:  ID.eml is removed before ID.state.
 * The directories are the user's own and private (checked at open), and
 * every file in them is opened with O_NOFOLLOW: a symbolic link is never
 * followed, nor a file written through one.
 * An entry is "busy" while one thread commits or sends it; a busy entry is
 * never renamed, unlinked or freed by another thread, so its pointer stays
 * valid without the lock.
 */
#include "spool.h"

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
#include "outmsg.h"
#include "privdir.h"
#include "sentq.h"
#include "smtp.h"
#include "statefile.h"

#define ID_LEN	 MFS_SPOOL_ID_LEN
#define ID_TRIES 1000 /* ids tried by one create */

struct entry {
	struct entry *next;
	char id[ID_LEN];
	char *name; /* owned */
	enum mfs_spool_status status;
	int attempts;
	time_t first_queued; /* 0: never queued */
	time_t next_attempt;
	char *message_id; /* owned or NULL */
	time_t date;	  /* Date given to the message, or 0 */
	char *reply;	  /* owned or NULL: last reply or reason */
	int busy;
};

struct mfs_spool {
	struct mfs_spool_opts o; /* borrowed pointers inside */
	int dirfd;		 /* owned */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct entry *head; /* owned list, creation order */
	unsigned counter;
	pthread_t thread;
	int started, stop;
	struct mfs_smtp *cur;	/* borrowed: session of the retry thread */
	struct mfs_smtp *idle;	/* owned or NULL: the open session kept
				   between messages (see session_take) */
	time_t idle_since;	/* when idle was put back */
	char *token;		/* owned or NULL: a token asked for again after
				   the server refused o.password; used instead
				   of it from then on (under lock) */
	struct mfs_sentq *sent; /* owned reference, or NULL without o.sent:
				   the Sent copies to make (sentq.c) */
};

static const char *const status_names[] = {
    "writing", "waiting", "queued", "sending", "failed", "invalid", "unknown",
};

const char *mfs_spool_status_name(enum mfs_spool_status status)
{
	return status_names[status];
}

int mfs_spool_name_waits(const char *name)
{
	size_t n = strlen(name);

	return name[0] == '.' || (n && name[n - 1] == '~') ||
	       (n >= 4 && strcmp(name + n - 4, ".swp") == 0) ||
	       (n >= 4 && strcmp(name + n - 4, ".tmp") == 0);
}

static int name_ok(const char *name)
{
	return name && *name && !strchr(name, '/') && strcmp(name, ".") &&
	       strcmp(name, "..") && strlen(name) <= 255;
}

/* ---- entries --------------------------------------------------------------
 */

static void entry_free(struct entry *e)
{
	free(e->name);
	free(e->message_id);
	free(e->reply);
	free(e);
}

static struct entry *find(struct mfs_spool *sp, const char *name)
{
	for (struct entry *e = sp->head; e; e = e->next)
		if (strcmp(e->name, name) == 0)
			return e;
	return NULL;
}

/* Appends in id order (ids sort by creation time). */
static void insert(struct mfs_spool *sp, struct entry *e)
{
	struct entry **pp = &sp->head;

	while (*pp && strcmp((*pp)->id, e->id) < 0)
		pp = &(*pp)->next;
	e->next = *pp;
	*pp = e;
}

/* A new id: the time, the pid and a counter, in hex, so that ids sort by
 * time. Another run may have used it (the same second and pid after a
 * restart): whoever creates files under it creates them with O_EXCL.
 * Called with the lock held. */
static void new_id(struct mfs_spool *sp, char id[ID_LEN])
{
	snprintf(id, ID_LEN, "%016llx%04x%04x", (long long)time(NULL),
		 (unsigned)getpid() & 0xffff, sp->counter++ & 0xffff);
}

static void unlink_from_list(struct mfs_spool *sp, struct entry *e)
{
	for (struct entry **pp = &sp->head; *pp; pp = &(*pp)->next)
		if (*pp == e) {
			*pp = e->next;
			return;
		}
}

static void set_str(char **dst, const char *src)
{
	char *s = src ? strdup(src) : NULL;

	if (src && !s)
		return; /* keep the old text rather than none */
	free(*dst);
	*dst = s;
}

/* ---- state files ------------------------------------------------------ */

static int fsync_dir(struct mfs_spool *sp)
{
	return fsync(sp->dirfd);
}

/* Writes ID.state durably. Called with the lock held. */
static int save_state(struct mfs_spool *sp, struct entry *e,
		      struct mfs_err *err)
{
	char path[ID_LEN + 16], *text = NULL;
	size_t len = 0;
	int rc = -1;
	FILE *f = open_memstream(&text, &len);

	if (f == NULL)
		goto fail;
	fputs("name: ", f);
	mfs_state_put_escaped(f, e->name);
	fprintf(f,
		"\nstatus: %s\nattempts: %d\nfirst: %lld\nnext: %lld\n"
		"date: %lld\n",
		status_names[e->status], e->attempts,
		(long long)e->first_queued, (long long)e->next_attempt,
		(long long)e->date);
	fputs("message-id: ", f);
	mfs_state_put_escaped(f, e->message_id);
	fputs("\nreply: ", f);
	mfs_state_put_escaped(f, e->reply);
	fputc('\n', f);
	if (fclose(f) != 0)
		goto fail;
	snprintf(path, sizeof(path), "%s.state", e->id);
	if (mfs_state_write(sp->dirfd, path, text, len) == 0 &&
	    fsync_dir(sp) == 0)
		rc = MFS_OK;
fail:
	free(text);
	if (rc == MFS_OK)
		return MFS_OK;
	return mfs_err_set(err, MFS_E_IO,
			   "cannot write the outbox state of "
			   "%s: %s",
			   e->name, strerror(errno));
}

static void state_line(struct entry *e, char *line)
{
	char *v = strchr(line, ':');

	if (!v)
		return;
	*v = '\0';
	v += v[1] == ' ' ? 2 : 1;
	if (strcmp(line, "name") == 0) {
		free(e->name);
		e->name = mfs_state_unescape(v);
	} else if (strcmp(line, "status") == 0) {
		for (size_t i = 0;
		     i < sizeof(status_names) / sizeof(status_names[0]); i++)
			if (strcmp(v, status_names[i]) == 0)
				e->status = i;
	} else if (strcmp(line, "attempts") == 0) {
		e->attempts = atoi(v);
	} else if (strcmp(line, "first") == 0) {
		e->first_queued = atoll(v);
	} else if (strcmp(line, "next") == 0) {
		e->next_attempt = atoll(v);
	} else if (strcmp(line, "date") == 0) {
		e->date = atoll(v);
	} else if (strcmp(line, "message-id") == 0 && *v) {
		free(e->message_id);
		e->message_id = mfs_state_unescape(v);
	} else if (strcmp(line, "reply") == 0 && *v) {
		free(e->reply);
		e->reply = mfs_state_unescape(v);
	}
}

/* Reads ID.state; NULL when it is unreadable or has no name. */
static struct entry *load_state(struct mfs_spool *sp, const char *id)
{
	char path[ID_LEN + 16], line[4096];
	struct entry *e;
	FILE *f;
	int fd;

	snprintf(path, sizeof(path), "%s.state", id);
	fd = openat(sp->dirfd, path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	f = fdopen(fd, "r");
	e = calloc(1, sizeof(*e));
	if (!f || !e) {
		if (f)
			fclose(f);
		else
			close(fd);
		free(e);
		return NULL;
	}
	snprintf(e->id, sizeof(e->id), "%s", id);
	while (fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = '\0';
		state_line(e, line);
	}
	fclose(f);
	if (!e->name) {
		entry_free(e);
		return NULL;
	}
	return e;
}

/* Removes the ID.eml of a create that could not write its state. */
static void remove_eml(struct mfs_spool *sp, const char *id)
{
	char path[ID_LEN + 16];

	snprintf(path, sizeof(path), "%s.eml", id);
	unlinkat(sp->dirfd, path, 0);
	fsync_dir(sp);
}

/* An empty ID.eml without its ID.state: a create that stopped before it
 * wrote the state (nothing was written into it yet). name is ID.eml. */
static void drop_orphan(struct mfs_spool *sp, const char *name, size_t idlen)
{
	char path[ID_LEN + 16];
	struct stat st;

	snprintf(path, sizeof(path), "%.*s.state", (int)idlen, name);
	if (faccessat(sp->dirfd, path, F_OK, AT_SYMLINK_NOFOLLOW) == 0 ||
	    errno != ENOENT)
		return;
	if (fstatat(sp->dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	    S_ISREG(st.st_mode) && st.st_size == 0)
		unlinkat(sp->dirfd, name, 0);
}

/* Replay of one loaded entry. */
static void replay(struct mfs_spool *sp, struct entry *e)
{
	if (e->status == MFS_SPOOL_SENDING) {
		e->status = MFS_SPOOL_UNKNOWN;
		set_str(&e->reply, "mailfs stopped after sending the message "
				   "and before the server's reply: it may "
				   "have been accepted; not sent again");
		mfs_log_err("outbox: %s (Message-ID %s) may have been sent "
			    "before mailfs stopped; it is not sent again",
			    e->name, e->message_id ? e->message_id : "?");
		save_state(sp, e, NULL);
	} else if (e->status == MFS_SPOOL_QUEUED) {
		e->next_attempt = 0;
	}
}

static int load(struct mfs_spool *sp, struct mfs_err *err)
{
	int fd = dup(sp->dirfd);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	struct dirent *de;

	if (!d) {
		if (fd >= 0)
			close(fd);
		return mfs_err_set(err, MFS_E_IO, "cannot read %s: %s",
				   sp->o.dir, strerror(errno));
	}
	while ((de = readdir(d))) {
		size_t n = strlen(de->d_name);
		char id[ID_LEN], path[ID_LEN + 16];
		struct entry *e;

		if (n > 4 && n - 4 < ID_LEN &&
		    strcmp(de->d_name + n - 4, ".eml") == 0) {
			drop_orphan(sp, de->d_name, n - 4);
			continue;
		}
		if (n <= 6 || n - 6 >= ID_LEN ||
		    strcmp(de->d_name + n - 6, ".state") != 0)
			continue;
		snprintf(id, sizeof(id), "%.*s", (int)(n - 6), de->d_name);
		snprintf(path, sizeof(path), "%s.eml", id);
		e = faccessat(sp->dirfd, path, F_OK, 0) == 0
			? load_state(sp, id)
			: NULL;
		if (!e) {
			unlinkat(sp->dirfd, de->d_name, 0);
			continue;
		}
		replay(sp, e);
		insert(sp, e);
	}
	closedir(d);
	return MFS_OK;
}

/* ---- open and close --------------------------------------------------- */

int mfs_spool_open(const struct mfs_spool_opts *opts, struct mfs_spool **out,
		   struct mfs_err *err)
{
	struct mfs_spool *sp;
	int rc;

	*out = NULL;
	if (!opts->acct || !opts->acct->has_smtp)
		return mfs_err_set(err, MFS_E_INVAL,
				   "the account has no smtp server");
	sp = calloc(1, sizeof(*sp));
	if (!sp)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	sp->o = *opts;
	if (!sp->o.backoff_min)
		sp->o.backoff_min = 60;
	if (!sp->o.backoff_max)
		sp->o.backoff_max = 3600;
	if (!sp->o.lifetime)
		sp->o.lifetime = 7 * 24 * 3600;
	if (!sp->o.keep_open)
		sp->o.keep_open = 10;
	rc = mfs_mkdir_private(opts->dir, O_NOFOLLOW, "spool directory",
			       &sp->dirfd, err);
	if (rc)
		goto free_sp;
	pthread_mutex_init(&sp->lock, NULL);
	pthread_cond_init(&sp->cond, NULL);
	rc = load(sp, err);
	if (rc == MFS_OK && sp->o.sent) {
		struct mfs_sentq_opts qo = {sp->o.sent, sp->o.sent_arg,
					    sp->o.backoff_min,
					    sp->o.backoff_max, sp->o.lifetime};

		rc = mfs_sentq_open(sp->dirfd, sp->o.dir, &qo, &sp->sent, err);
	}
	if (rc) {
		mfs_spool_close(sp);
		return rc;
	}
	*out = sp;
	return MFS_OK;
free_sp:
	free(sp);
	return rc;
}

int mfs_spool_close(struct mfs_spool *sp)
{
	int left;

	if (!sp)
		return 0;
	left = mfs_spool_stop(sp);
	mfs_sentq_close(sp->sent);
	while (sp->head) {
		struct entry *e = sp->head;

		sp->head = e->next;
		entry_free(e);
	}
	pthread_cond_destroy(&sp->cond);
	pthread_mutex_destroy(&sp->lock);
	mfs_password_free(sp->token);
	close(sp->dirfd);
	free(sp);
	return left;
}

/* ---- listing ------------------------------------------------------------- */

static void fill_entry(struct mfs_spool *sp, const struct entry *e,
		       struct mfs_spool_entry *out)
{
	char path[ID_LEN + 16];
	struct stat st;

	snprintf(path, sizeof(path), "%s.eml", e->id);
	out->status = e->status;
	out->size = 0;
	out->mtime = 0;
	if (fstatat(sp->dirfd, path, &st, 0) == 0) {
		out->size = st.st_size;
		out->mtime = st.st_mtime;
	}
}

int mfs_spool_list(struct mfs_spool *sp, struct mfs_spool_entry **entries,
		   size_t *n, struct mfs_err *err)
{
	size_t count = 0, i = 0;
	struct mfs_spool_entry *v;

	pthread_mutex_lock(&sp->lock);
	for (struct entry *e = sp->head; e; e = e->next)
		count++;
	v = calloc(count ? count : 1, sizeof(*v));
	for (struct entry *e = sp->head; v && e; e = e->next, i++) {
		fill_entry(sp, e, &v[i]);
		v[i].name = strdup(e->name);
		if (!v[i].name) {
			mfs_spool_entries_free(v, i);
			v = NULL;
		}
	}
	pthread_mutex_unlock(&sp->lock);
	if (!v)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	*entries = v;
	*n = count;
	return MFS_OK;
}

void mfs_spool_entries_free(struct mfs_spool_entry *entries, size_t n)
{
	for (size_t i = 0; entries && i < n; i++)
		free(entries[i].name);
	free(entries);
}

static int noent(const char *name, struct mfs_err *err)
{
	return mfs_err_set(err, MFS_E_NOENT, "no message %s in the outbox",
			   name);
}

int mfs_spool_stat(struct mfs_spool *sp, const char *name,
		   struct mfs_spool_entry *out, struct mfs_err *err)
{
	struct entry *e;
	int rc = MFS_OK;

	pthread_mutex_lock(&sp->lock);
	e = find(sp, name);
	if (!e) {
		rc = noent(name, err);
	} else {
		fill_entry(sp, e, out);
		out->name = strdup(e->name);
		if (!out->name)
			rc = mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	}
	pthread_mutex_unlock(&sp->lock);
	return rc;
}

static const char *fmt_time(time_t t, char *buf, size_t len)
{
	struct tm tm;

	localtime_r(&t, &tm);
	strftime(buf, len, "%Y-%m-%d %H:%M:%S %z", &tm);
	return buf;
}

char *mfs_spool_status_text(struct mfs_spool *sp, const char *name,
			    struct mfs_err *err)
{
	char *text = NULL, *out = NULL;
	size_t len = 0;
	struct entry *e;
	char t[64];
	FILE *f;

	pthread_mutex_lock(&sp->lock);
	e = find(sp, name);
	if (!e) {
		pthread_mutex_unlock(&sp->lock);
		noent(name, err);
		return NULL;
	}
	f = open_memstream(&text, &len);
	if (f) {
		fprintf(f, "status: %s\nattempts: %d\n",
			status_names[e->status], e->attempts);
		if (e->first_queued)
			fprintf(f, "first queued: %s\n",
				fmt_time(e->first_queued, t, sizeof(t)));
		if (e->status == MFS_SPOOL_QUEUED)
			fprintf(f, "next attempt: %s\n",
				fmt_time(e->next_attempt ? e->next_attempt
							 : time(NULL),
					 t, sizeof(t)));
		if (e->message_id)
			fprintf(f, "message-id: %s\n", e->message_id);
		if (e->reply)
			fprintf(f, "last reply: %s\n", e->reply);
		if (fclose(f) == 0)
			out = text;
		else
			free(text);
	}
	pthread_mutex_unlock(&sp->lock);
	if (!out)
		mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	return out;
}

/* ---- create, open, rename, unlink ---------------------------------------- */

static int open_eml(struct mfs_spool *sp, const struct entry *e, int flags)
{
	char path[ID_LEN + 16];

	snprintf(path, sizeof(path), "%s.eml", e->id);
	return openat(sp->dirfd, path, flags | O_NOFOLLOW | O_CLOEXEC, 0600);
}

int mfs_spool_create(struct mfs_spool *sp, const char *name, int *fd,
		     struct mfs_err *err)
{
	struct entry *e;
	int rc;

	*fd = -1;
	if (!name_ok(name))
		return mfs_err_set(err, MFS_E_INVAL, "bad outbox name");
	e = calloc(1, sizeof(*e));
	if (!e || !(e->name = strdup(name))) {
		free(e);
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	}
	pthread_mutex_lock(&sp->lock);
	if (find(sp, name)) {
		rc = mfs_err_set(err, MFS_E_EXIST,
				 "%s is already in the "
				 "outbox",
				 name);
		goto unlock;
	}
	/* an id whose files an earlier run left is skipped, never reused */
	for (int i = 0; i < ID_TRIES && *fd < 0; i++) {
		new_id(sp, e->id);
		*fd = open_eml(sp, e, O_RDWR | O_CREAT | O_EXCL);
		if (*fd < 0 && errno != EEXIST)
			break;
	}
	if (*fd < 0) {
		rc = mfs_err_set(err, MFS_E_IO, "cannot create %s: %s", name,
				 strerror(errno));
		goto unlock;
	}
	e->status = MFS_SPOOL_WRITING;
	rc = save_state(sp, e, err);
	if (rc) {
		close(*fd);
		*fd = -1;
		remove_eml(sp, e->id);
		goto unlock;
	}
	insert(sp, e);
	e = NULL;
unlock:
	pthread_mutex_unlock(&sp->lock);
	if (e)
		entry_free(e);
	return rc;
}

int mfs_spool_open_entry(struct mfs_spool *sp, const char *name, int flags,
			 int *fd, struct mfs_err *err)
{
	int writing = (flags & O_ACCMODE) != O_RDONLY;
	struct entry *e;
	int rc = MFS_OK;

	*fd = -1;
	pthread_mutex_lock(&sp->lock);
	e = find(sp, name);
	if (!e) {
		rc = noent(name, err);
		goto unlock;
	}
	if (writing && e->busy) {
		rc = mfs_err_set(err, MFS_E_ACCESS, "%s is being sent", name);
		goto unlock;
	}
	*fd = open_eml(sp, e, flags & (O_ACCMODE | O_TRUNC | O_APPEND));
	if (*fd < 0) {
		rc = mfs_err_set(err, MFS_E_IO, "cannot open %s: %s", name,
				 strerror(errno));
		goto unlock;
	}
	if (writing) {
		e->status = MFS_SPOOL_WRITING;
		e->attempts = 0;
		e->first_queued = 0;
		if (flags & O_TRUNC) {
			set_str(&e->message_id, NULL);
			e->date = 0;
		}
		rc = save_state(sp, e, err);
	}
unlock:
	pthread_mutex_unlock(&sp->lock);
	return rc;
}

int mfs_spool_rename(struct mfs_spool *sp, const char *oldname,
		     const char *newname, struct mfs_err *err)
{
	struct entry *e, *other;
	char *copy;
	int rc = MFS_OK;

	if (!name_ok(newname))
		return mfs_err_set(err, MFS_E_INVAL, "bad outbox name");
	copy = strdup(newname);
	if (!copy)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	pthread_mutex_lock(&sp->lock);
	e = find(sp, oldname);
	other = find(sp, newname);
	if (!e) {
		rc = noent(oldname, err);
		goto unlock;
	}
	if (e->busy || (other && other->busy)) {
		rc = mfs_err_set(err, MFS_E_ACCESS, "%s is being sent",
				 e->busy ? oldname : newname);
		goto unlock;
	}
	if (other == e)
		goto unlock;
	if (other) {
		unlink_from_list(sp, other);
		mfs_state_remove(sp->dirfd, other->id, "state");
		entry_free(other);
	}
	free(e->name);
	e->name = copy;
	copy = NULL;
	if (e->status != MFS_SPOOL_WRITING) {
		if (mfs_spool_name_waits(e->name)) {
			e->status = MFS_SPOOL_WAITING;
		} else if (e->status != MFS_SPOOL_QUEUED) {
			e->status = MFS_SPOOL_QUEUED;
			e->attempts = 0;
			e->first_queued = 0;
			e->next_attempt = 0;
		}
	}
	rc = save_state(sp, e, err);
	pthread_cond_broadcast(&sp->cond);
unlock:
	pthread_mutex_unlock(&sp->lock);
	free(copy);
	return rc;
}

int mfs_spool_unlink(struct mfs_spool *sp, const char *name,
		     struct mfs_err *err)
{
	struct entry *e;
	int rc = MFS_OK;

	pthread_mutex_lock(&sp->lock);
	e = find(sp, name);
	if (!e) {
		rc = noent(name, err);
	} else if (e->busy) {
		rc = mfs_err_set(err, MFS_E_ACCESS, "%s is being sent", name);
	} else {
		unlink_from_list(sp, e);
		mfs_state_remove(sp->dirfd, e->id, "state");
		entry_free(e);
	}
	pthread_mutex_unlock(&sp->lock);
	return rc;
}

int mfs_spool_retry_now(struct mfs_spool *sp, const char *name,
			struct mfs_err *err)
{
	enum mfs_spool_status was_status;
	time_t was_next, was_first;
	struct entry *e;
	int rc = MFS_OK;

	pthread_mutex_lock(&sp->lock);
	e = find(sp, name);
	if (!e) {
		rc = noent(name, err);
		goto unlock;
	}
	if (e->busy || (e->status != MFS_SPOOL_QUEUED &&
			e->status != MFS_SPOOL_FAILED))
		goto unlock;
	was_status = e->status;
	was_next = e->next_attempt;
	was_first = e->first_queued;
	e->status = MFS_SPOOL_QUEUED;
	e->next_attempt = 0;
	if (was_status == MFS_SPOOL_FAILED)
		e->first_queued = 0; /* a new queue lifetime */
	rc = save_state(sp, e, err);
	if (rc) {
		e->status = was_status;
		e->next_attempt = was_next;
		e->first_queued = was_first;
		goto unlock;
	}
	pthread_cond_broadcast(&sp->cond);
unlock:
	pthread_mutex_unlock(&sp->lock);
	return rc;
}

/* ---- sending ------------------------------------------------------------- */

/* Records a new status and reply for a busy entry, durably. Returns 0, or
 * MFS_E_IO (logged) when it could not be written: the new status holds in
 * memory only. */
static int set_status(struct mfs_spool *sp, struct entry *e,
		      enum mfs_spool_status st, const char *reply)
{
	struct mfs_err err;
	int rc;

	pthread_mutex_lock(&sp->lock);
	e->status = st;
	if (reply)
		set_str(&e->reply, reply);
	rc = save_state(sp, e, &err);
	if (rc != MFS_OK)
		mfs_log_err("outbox: %s", err.msg);
	pthread_mutex_unlock(&sp->lock);
	return rc;
}

static void deferred(struct mfs_spool *sp, struct entry *e, const char *why,
		     struct mfs_spool_outcome *oc)
{
	time_t now = time(NULL);
	long delay = sp->o.backoff_min;

	if (!e->first_queued)
		e->first_queued = now;

	for (int i = 1; i < e->attempts && delay < sp->o.backoff_max; i++)
		delay *= 2;
	if (delay > sp->o.backoff_max)
		delay = sp->o.backoff_max;
	snprintf(oc->reply, sizeof(oc->reply), "%s", why);
	if (now - e->first_queued >= sp->o.lifetime) {
		char text[MFS_ERRMSG_MAX];

		snprintf(text, sizeof(text),
			 "not sent within the queue lifetime; last: %s", why);
		oc->result = MFS_SPOOL_REJECTED;
		snprintf(oc->reply, sizeof(oc->reply), "%s", text);
		set_status(sp, e, MFS_SPOOL_FAILED, text);
		mfs_log_err("outbox: %s failed: %s", e->name, text);
		return;
	}
	oc->result = MFS_SPOOL_DEFERRED;
	pthread_mutex_lock(&sp->lock);
	e->next_attempt = now + delay;
	pthread_mutex_unlock(&sp->lock);
	set_status(sp, e, MFS_SPOOL_QUEUED, why);
	mfs_log_info("outbox: %s deferred (retry in %ld s): %s", e->name, delay,
		     why);
}

static void finish(struct mfs_spool *sp, struct entry *e,
		   enum mfs_spool_result r, enum mfs_spool_status st,
		   const char *why, struct mfs_spool_outcome *oc)
{
	oc->result = r;
	snprintf(oc->reply, sizeof(oc->reply), "%s", why);
	set_status(sp, e, st, why);
	mfs_log_err("outbox: %s %s: %s (Message-ID %s)", e->name,
		    status_names[st], why, e->message_id ? e->message_id : "?");
}

static int tmpfile_in(struct mfs_spool *sp)
{
	int fd = openat(sp->dirfd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);

	if (fd < 0) {
		char path[] = "prep.XXXXXX";
		char full[4096];

		snprintf(full, sizeof(full), "%s/%s", sp->o.dir, path);
		fd = mkostemp(full, O_CLOEXEC);
		if (fd >= 0)
			unlink(full);
	}
	return fd;
}

/* Queues the Sent copy of an accepted message before its entry goes (a
 * stop in between leaves the entry "sending", hence "unknown" and not sent
 * again, and the copy is made all the same). When it cannot be kept on
 * disk, it is made now, as the only chance left. */
static void keep_sent_copy(struct mfs_spool *sp, struct entry *e, int prep,
			   off_t size)
{
	char id[ID_LEN];

	pthread_mutex_lock(&sp->lock);
	new_id(sp, id);
	pthread_mutex_unlock(&sp->lock);
	if (mfs_sentq_keep(sp->sent, id, e->name, prep, size) == 0) {
		mfs_log_debug("outbox: the Sent copy of %s is queued as %s",
			      e->name, id);
		return;
	}
	mfs_log_err("outbox: cannot keep the Sent copy of %s on disk (%s); "
		    "making it now",
		    e->name, strerror(errno));
	if (sp->o.sent(sp->o.sent_arg, e->name, prep, size) != 0)
		mfs_log_err("outbox: the Sent copy of %s failed and is not "
			    "tried again",
			    e->name);
}

static void accepted(struct mfs_spool *sp, struct entry *e, int prep,
		     off_t size, const struct mfs_smtp_result *res,
		     struct mfs_spool_outcome *oc)
{
	size_t len = 0;

	oc->result = MFS_SPOOL_SENT;
	oc->reply[0] = '\0';
	for (size_t i = 0; i < res->nrejected && len < sizeof(oc->reply); i++)
		len += snprintf(oc->reply + len, sizeof(oc->reply) - len,
				"%s%s: %s",
				i ? "; " : "rejected: ", res->rejected[i].rcpt,
				res->rejected[i].reply);
	mfs_log_info("outbox: %s sent (Message-ID %s)%s%s", e->name,
		     e->message_id, len ? "; " : "", oc->reply);
	if (sp->sent)
		keep_sent_copy(sp, e, prep, size);
	pthread_mutex_lock(&sp->lock);
	unlink_from_list(sp, e);
	mfs_state_remove(sp->dirfd, e->id, "state");
	pthread_mutex_unlock(&sp->lock);
	entry_free(e);
}

static unsigned send_flags(const struct mfs_outmsg *m, unsigned caps)
{
	unsigned f = 0;

	if (m->body_8bit && (caps & MFS_SMTP_8BITMIME))
		f |= MFS_SMTP_SEND_8BIT;
	if (m->addr_8bit && (caps & MFS_SMTP_SMTPUTF8))
		f |= MFS_SMTP_SEND_UTF8;
	return f;
}

/* Opens a session with the latest token (a copy, since the other thread
 * may renew it meanwhile) and keeps a token renewed during the login. */
static int open_session(struct mfs_spool *sp, struct mfs_smtp **s,
			struct mfs_err *err)
{
	const struct mfs_account *a = sp->o.acct;
	char *secret = NULL, *renewed = NULL;
	struct mfs_smtp_opts so = {&a->smtp,   a->user,	   sp->o.password,
				   a->ca_file, a->timeout, NULL,
				   a->auth,    a,	   &renewed};
	int rc;

	pthread_mutex_lock(&sp->lock);
	if (sp->token)
		secret = strdup(sp->token);
	pthread_mutex_unlock(&sp->lock);
	if (secret)
		so.password = secret;
	rc = mfs_smtp_open(&so, s, err);
	mfs_password_free(secret);
	if (renewed) {
		pthread_mutex_lock(&sp->lock);
		mfs_password_free(sp->token);
		sp->token = renewed;
		pthread_mutex_unlock(&sp->lock);
	}
	return rc;
}

/*
 * The session for the next message: the one kept open since the last
 * message when there is one, it is alive and not older than keep_open,
 * else a new one (*reused tells which). The session belongs to the caller
 * until session_give(). With publish, mfs_spool_stop() may cancel it.
 */
static int session_take(struct mfs_spool *sp, int publish, struct mfs_smtp **s,
			int *reused, struct mfs_err *err)
{
	time_t since;
	int rc;

	pthread_mutex_lock(&sp->lock);
	*s = sp->idle;
	since = sp->idle_since;
	sp->idle = NULL;
	pthread_mutex_unlock(&sp->lock);
	if (*s &&
	    (!mfs_smtp_alive(*s) || time(NULL) - since >= sp->o.keep_open)) {
		mfs_smtp_close(*s);
		*s = NULL;
	}
	*reused = *s != NULL;
	if (!*s) {
		rc = open_session(sp, s, err);
		if (rc)
			return rc;
	}
	if (publish) {
		pthread_mutex_lock(&sp->lock);
		sp->cur = *s;
		if (sp->stop)
			mfs_smtp_cancel(*s);
		pthread_mutex_unlock(&sp->lock);
	}
	return MFS_OK;
}

/* Keeps s open for the next message when it is alive and no other session
 * is kept already; closes it otherwise. NULL is fine. */
static void session_give(struct mfs_spool *sp, struct mfs_smtp *s, int publish)
{
	pthread_mutex_lock(&sp->lock);
	if (publish)
		sp->cur = NULL;
	if (s && !sp->idle && !sp->stop && sp->o.keep_open > 0 &&
	    mfs_smtp_alive(s)) {
		sp->idle = s;
		sp->idle_since = time(NULL);
		s = NULL;
		/* the retry thread closes it when it has been idle too long */
		pthread_cond_broadcast(&sp->cond);
	}
	pthread_mutex_unlock(&sp->lock);
	mfs_smtp_close(s);
}

/* Writes the message as it goes to a server with caps into *prep. Returns
 * 0, or -1 with the outcome recorded. */
static int prepare(struct mfs_spool *sp, struct entry *e,
		   const struct mfs_outmsg *m, int fd, unsigned caps, int *prep,
		   off_t *size, struct mfs_spool_outcome *oc)
{
	struct mfs_err err = {0};
	unsigned oflags = 0;

	oflags |= caps & MFS_SMTP_8BITMIME ? MFS_OUTMSG_8BITMIME : 0;
	/* SMTPUTF8 only where an address needs it: a later hop (Dovecot's
	 * LMTP, for one) may lack it and bounce; RFC 2047 headers go
	 * everywhere */
	if (m->addr_8bit && (caps & MFS_SMTP_SMTPUTF8))
		oflags |= MFS_OUTMSG_SMTPUTF8;
	*prep = tmpfile_in(sp);
	if (*prep < 0) {
		deferred(sp, e, "cannot create a temporary file", oc);
		return -1;
	}
	*size = 0;
	if (mfs_outmsg_write(m, fd, oflags, *prep, size, &err) != MFS_OK) {
		if (err.code == MFS_E_INVAL)
			finish(sp, e, MFS_SPOOL_BAD, MFS_SPOOL_INVALID, err.msg,
			       oc);
		else
			deferred(sp, e, err.msg, oc);
		close(*prep);
		return -1;
	}
	return 0;
}

/* Records the server's verdict on a message. */
static void verdict(struct mfs_spool *sp, struct entry *e, int prep, off_t size,
		    const struct mfs_smtp_result *res,
		    struct mfs_spool_outcome *oc)
{
	switch (res->status) {
	case MFS_SMTP_ACCEPTED:
		accepted(sp, e, prep, size, res, oc);
		break;
	case MFS_SMTP_TEMPFAIL:
		deferred(sp, e, res->reply, oc);
		break;
	case MFS_SMTP_PERMFAIL:
		finish(sp, e, MFS_SPOOL_REJECTED, MFS_SPOOL_FAILED, res->reply,
		       oc);
		break;
	case MFS_SMTP_UNKNOWN:
		finish(sp, e, MFS_SPOOL_UNSURE, MFS_SPOOL_UNKNOWN, res->reply,
		       oc);
		break;
	}
}

/*
 * A kept session found dead while sending (the server closed it after
 * its idle time, said 421, the connection broke) before any of the
 * message was accepted: worth one more try on a new session. A TEMPFAIL
 * is never given after the data's end was sent (that is UNKNOWN), so the
 * message cannot arrive twice.
 */
static int stale(struct mfs_spool *sp, struct mfs_smtp *s, int reused,
		 const struct mfs_smtp_result *res)
{
	int stop;

	pthread_mutex_lock(&sp->lock);
	stop = sp->stop;
	pthread_mutex_unlock(&sp->lock);
	return reused && !stop && res->status == MFS_SMTP_TEMPFAIL &&
	       !mfs_smtp_alive(s);
}

/* Sends the prepared message over the kept session or a new one; the
 * entry is freed when sent. */
static void transmit(struct mfs_spool *sp, struct entry *e,
		     const struct mfs_outmsg *m, int fd, int publish,
		     struct mfs_spool_outcome *oc)
{
	struct mfs_smtp_result res = {0};
	struct mfs_err err = {0};
	struct mfs_smtp *s;
	int prep, reused, again = 1;
	unsigned caps;
	off_t size;

retry:
	if (session_take(sp, publish, &s, &reused, &err) != MFS_OK) {
		if (mfs_smtp_err_temporary(&err))
			deferred(sp, e, err.msg, oc);
		else
			finish(sp, e, MFS_SPOOL_REJECTED, MFS_SPOOL_FAILED,
			       err.msg, oc);
		return;
	}
	caps = mfs_smtp_caps(s);
	if (prepare(sp, e, m, fd, caps, &prep, &size, oc))
		goto give_session;
	/* "sending" is on disk before any of the message goes: else a stop
	 * after the server took it would leave it "queued", to go again */
	if (set_status(sp, e, MFS_SPOOL_SENDING, NULL) != MFS_OK) {
		deferred(sp, e,
			 "the outbox state cannot be written; not sent for "
			 "now",
			 oc);
		goto close_prep;
	}
	if (mfs_smtp_send(s, m->sender, (const char *const *)m->rcpts,
			  m->nrcpts, prep, size, send_flags(m, caps), &res,
			  &err) != MFS_OK) {
		deferred(sp, e, err.msg, oc);
		goto close_prep;
	}
	if (again && stale(sp, s, reused, &res)) {
		mfs_log_info("outbox: the open SMTP session ended (%s); "
			     "sending %s on a new one",
			     res.reply, e->name);
		again = 0;
		mfs_smtp_result_free(&res);
		close(prep);
		session_give(sp, s, publish);
		goto retry;
	}
	verdict(sp, e, prep, size, &res, oc);
	mfs_smtp_result_free(&res);
close_prep:
	close(prep);
give_session:
	session_give(sp, s, publish);
}

/* One attempt for a busy entry; the entry is freed when sent. */
static void attempt(struct mfs_spool *sp, struct entry *e, int publish,
		    struct mfs_spool_outcome *oc)
{
	struct mfs_outmsg_opts mo = {sp->o.acct->from, e->message_id, e->date};
	struct mfs_outmsg m;
	struct mfs_err err = {0};
	int fd = open_eml(sp, e, O_RDONLY);

	memset(oc, 0, sizeof(*oc));
	if (fd < 0) {
		finish(sp, e, MFS_SPOOL_BAD, MFS_SPOOL_INVALID,
		       "the message file is missing", oc);
		return;
	}
	if (mfs_outmsg_parse(fd, &mo, &m, &err) != MFS_OK) {
		if (err.code == MFS_E_INVAL)
			finish(sp, e, MFS_SPOOL_BAD, MFS_SPOOL_INVALID, err.msg,
			       oc);
		else
			deferred(sp, e, err.msg, oc);
		goto free_msg;
	}
	pthread_mutex_lock(&sp->lock);
	if (!e->message_id)
		set_str(&e->message_id, m.message_id);
	if (!e->date)
		e->date = m.date;
	if (!e->first_queued)
		e->first_queued = time(NULL);
	e->attempts++;
	pthread_mutex_unlock(&sp->lock);
	transmit(sp, e, &m, fd, publish, oc);
free_msg:
	mfs_outmsg_free(&m);
	close(fd);
}

static void release(struct mfs_spool *sp, struct entry *e)
{
	pthread_mutex_lock(&sp->lock);
	e->busy = 0;
	pthread_mutex_unlock(&sp->lock);
}

static int durable(struct mfs_spool *sp, struct entry *e, struct mfs_err *err)
{
	int fd = open_eml(sp, e, O_RDONLY);
	int rc = MFS_OK;

	if (fd < 0 || fsync(fd) != 0 || fsync_dir(sp) != 0)
		rc = mfs_err_set(err, MFS_E_IO, "cannot save %s: %s", e->name,
				 strerror(errno));
	if (fd >= 0)
		close(fd);
	return rc;
}

int mfs_spool_commit(struct mfs_spool *sp, const char *name,
		     struct mfs_spool_outcome *oc, struct mfs_err *err)
{
	struct entry *e;
	int rc;

	memset(oc, 0, sizeof(*oc));
	pthread_mutex_lock(&sp->lock);
	e = find(sp, name);
	if (!e || e->busy) {
		pthread_mutex_unlock(&sp->lock);
		if (!e)
			return noent(name, err);
		return mfs_err_set(err, MFS_E_ACCESS, "%s is being sent", name);
	}
	e->busy = 1;
	pthread_mutex_unlock(&sp->lock);
	rc = durable(sp, e, err);
	if (rc) {
		release(sp, e);
		return rc;
	}
	if (mfs_spool_name_waits(e->name)) {
		oc->result = MFS_SPOOL_HELD;
		rc = set_status(sp, e, MFS_SPOOL_WAITING, NULL);
		release(sp, e);
		if (rc)
			return mfs_err_set(err, MFS_E_IO,
					   "cannot save the state of %s",
					   name);
		return MFS_OK;
	}
	attempt(sp, e, 0, oc); /* e is freed when sent */
	if (oc->result != MFS_SPOOL_SENT)
		release(sp, e);
	if (oc->result == MFS_SPOOL_DEFERRED) {
		/* the retry thread may be asleep for longer than this wait */
		pthread_mutex_lock(&sp->lock);
		pthread_cond_broadcast(&sp->cond);
		pthread_mutex_unlock(&sp->lock);
	}
	switch (oc->result) {
	case MFS_SPOOL_BAD:
		return mfs_err_set(err, MFS_E_INVAL, "%s", oc->reply);
	case MFS_SPOOL_REJECTED:
		return mfs_err_set(err, MFS_E_ACCESS, "%s", oc->reply);
	case MFS_SPOOL_UNSURE:
		return mfs_err_set(err, MFS_E_ACCESS,
				   "no reply after the message was sent; "
				   "check whether it arrived: %s",
				   oc->reply);
	default:
		return MFS_OK;
	}
}

/* ---- retries ------------------------------------------------------------- */

/* Marks the due queued entries busy; returns them in *due (count n). */
static size_t take_due(struct mfs_spool *sp, struct entry ***due)
{
	time_t now = time(NULL);
	size_t n = 0;

	*due = NULL;
	for (struct entry *e = sp->head; e; e = e->next) {
		struct entry **v;

		if (e->busy || e->status != MFS_SPOOL_QUEUED ||
		    e->next_attempt > now)
			continue;
		v = realloc(*due, (n + 1) * sizeof(*v));
		if (!v)
			break;
		*due = v;
		v[n++] = e;
		e->busy = 1;
	}
	return n;
}

static int run_round(struct mfs_spool *sp)
{
	struct entry **due;
	size_t n;
	int sent = 0;

	pthread_mutex_lock(&sp->lock);
	n = take_due(sp, &due);
	pthread_mutex_unlock(&sp->lock);
	for (size_t i = 0; i < n; i++) {
		struct mfs_spool_outcome oc;
		int stop;

		pthread_mutex_lock(&sp->lock);
		stop = sp->stop;
		pthread_mutex_unlock(&sp->lock);
		if (stop) {
			release(sp, due[i]);
			continue;
		}
		attempt(sp, due[i], 1, &oc);
		if (oc.result == MFS_SPOOL_SENT)
			sent++;
		else
			release(sp, due[i]);
	}
	free(due);
	return sent;
}

int mfs_spool_run_due(struct mfs_spool *sp)
{
	return run_round(sp);
}

int mfs_spool_run_sent(struct mfs_spool *sp)
{
	return sp->sent ? mfs_sentq_run(sp->sent) : 0;
}

/* The earliest next attempt of a queued, idle entry, or 0 for none. */
static time_t next_due(struct mfs_spool *sp)
{
	time_t t = 0;

	for (struct entry *e = sp->head; e; e = e->next)
		if (!e->busy && e->status == MFS_SPOOL_QUEUED &&
		    (!t || e->next_attempt < t))
			t = e->next_attempt ? e->next_attempt : 1;
	return t;
}

/* Ends the kept session (QUIT), if any. */
static void close_idle(struct mfs_spool *sp)
{
	struct mfs_smtp *s;

	pthread_mutex_lock(&sp->lock);
	s = sp->idle;
	sp->idle = NULL;
	pthread_mutex_unlock(&sp->lock);
	mfs_smtp_close(s);
}

static void *retry_thread(void *arg)
{
	struct mfs_spool *sp = arg;

	pthread_mutex_lock(&sp->lock);
	while (!sp->stop) {
		time_t t = next_due(sp), now = time(NULL), wake;
		time_t idle_end = sp->idle_since + sp->o.keep_open;
		struct timespec ts;

		if (t && t <= now) {
			pthread_mutex_unlock(&sp->lock);
			run_round(sp);
			pthread_mutex_lock(&sp->lock);
			continue;
		}
		if (sp->idle && idle_end <= now) {
			pthread_mutex_unlock(&sp->lock);
			close_idle(sp);
			pthread_mutex_lock(&sp->lock);
			continue;
		}
		wake = t ? t : now + 3600;
		if (sp->idle && idle_end < wake)
			wake = idle_end;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += wake - now;
		pthread_cond_timedwait(&sp->cond, &sp->lock, &ts);
	}
	pthread_mutex_unlock(&sp->lock);
	return NULL;
}

int mfs_spool_start(struct mfs_spool *sp, struct mfs_err *err)
{
	int rc = MFS_OK;

	if (sp->sent && mfs_sentq_start(sp->sent) != 0)
		return mfs_err_set(err, MFS_E_NOMEM,
				   "cannot start the Sent copy thread");
	pthread_mutex_lock(&sp->lock);
	if (!sp->started) {
		sp->stop = 0;
		if (pthread_create(&sp->thread, NULL, retry_thread, sp) != 0)
			rc = mfs_err_set(err, MFS_E_NOMEM,
					 "cannot start the outbox thread");
		else
			sp->started = 1;
	}
	pthread_mutex_unlock(&sp->lock);
	return rc;
}

/* The retry thread and the kept session. */
static void stop_retries(struct mfs_spool *sp)
{
	pthread_mutex_lock(&sp->lock);
	if (!sp->started) {
		pthread_mutex_unlock(&sp->lock);
		close_idle(sp);
		return;
	}
	sp->stop = 1;
	if (sp->cur)
		mfs_smtp_cancel(sp->cur);
	pthread_cond_broadcast(&sp->cond);
	pthread_mutex_unlock(&sp->lock);
	pthread_join(sp->thread, NULL);
	sp->started = 0;
	close_idle(sp);
}

int mfs_spool_stop(struct mfs_spool *sp)
{
	int grace = sp->o.acct->timeout > 0 ? sp->o.acct->timeout : 30;

	/* first: a message being sent may still add a copy */
	stop_retries(sp);
	return sp->sent ? mfs_sentq_stop(sp->sent, grace) : 0;
}
