/* cache.c - see cache.h */
#include "cache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "hash.h"
#include "log.h"
#include "privdir.h"

/* The subdirectory of the spool (main.c puts the outbox there). */
#define FOREIGN_DIR "outbox"
/* Deeper than any key goes; a bound for the scan. */
#define SCAN_DEPTH_MAX	  16
#define INDEX_BUCKETS_MIN 1024

/* An entry the cache knows of; in a hash bucket and in the list of use. */
struct entry {
	struct entry *hnext; /* borrowed: next in the same bucket */
	struct entry *older; /* borrowed: list of use, oldest first */
	struct entry *newer; /* borrowed */
	uint64_t size;
	char key[];
};

struct mfs_cache {
	char *dir;	   /* owned */
	atomic_int warned; /* the "cannot write" problem was logged */
	/* lock guards every field below it */
	pthread_mutex_t lock;
	struct entry **bucket; /* owned, with every entry */
	size_t nbucket;	       /* a power of two */
	size_t n;
	struct entry *oldest; /* borrowed: the next to go */
	struct entry *newest; /* borrowed */
	uint64_t total;	      /* bytes of the entries in the index */
	uint64_t limit;
	int evict_warned; /* a failed removal was logged */
};

/* ---- the index ---------------------------------------------------------- */

static uint64_t key_hash(const char *key)
{
	return mfs_fnv1a_str(MFS_FNV1A_INIT, key);
}

static struct entry **index_slot(struct mfs_cache *c, const char *key)
{
	struct entry **p = &c->bucket[key_hash(key) & (c->nbucket - 1)];

	while (*p != NULL && strcmp((*p)->key, key) != 0)
		p = &(*p)->hnext;
	return p;
}

/* Doubles the buckets; on failure the index stays as it was. */
static void index_grow(struct mfs_cache *c)
{
	size_t nb = c->nbucket * 2, i;
	struct entry **b = calloc(nb, sizeof(*b));
	struct entry *e, *next;

	if (b == NULL)
		return;
	for (i = 0; i < c->nbucket; i++) {
		for (e = c->bucket[i]; e != NULL; e = next) {
			next = e->hnext;
			e->hnext = b[key_hash(e->key) & (nb - 1)];
			b[key_hash(e->key) & (nb - 1)] = e;
		}
	}
	free(c->bucket);
	c->bucket = b;
	c->nbucket = nb;
}

static void lru_remove(struct mfs_cache *c, struct entry *e)
{
	if (e->older != NULL)
		e->older->newer = e->newer;
	else
		c->oldest = e->newer;
	if (e->newer != NULL)
		e->newer->older = e->older;
	else
		c->newest = e->older;
	e->older = e->newer = NULL;
}

static void lru_append(struct mfs_cache *c, struct entry *e)
{
	e->older = c->newest;
	e->newer = NULL;
	if (c->newest != NULL)
		c->newest->newer = e;
	else
		c->oldest = e;
	c->newest = e;
}

/* Records entry key of size bytes as the most recently used. Returns it,
 * or NULL when out of memory (the entry is then not counted). */
static struct entry *index_put(struct mfs_cache *c, const char *key,
			       uint64_t size)
{
	struct entry **slot = index_slot(c, key);
	struct entry *e = *slot;
	size_t len;

	if (e != NULL) {
		c->total = c->total - e->size + size;
		e->size = size;
		lru_remove(c, e);
		lru_append(c, e);
		return e;
	}
	len = strlen(key);
	e = malloc(sizeof(*e) + len + 1);
	if (e == NULL)
		return NULL;
	memcpy(e->key, key, len + 1);
	e->size = size;
	e->hnext = NULL;
	*slot = e;
	lru_append(c, e);
	c->total += size;
	if (++c->n > c->nbucket)
		index_grow(c);
	return e;
}

static void index_drop(struct mfs_cache *c, struct entry *e)
{
	struct entry **slot = index_slot(c, e->key);

	*slot = e->hnext;
	lru_remove(c, e);
	c->total -= e->size;
	c->n--;
	free(e);
}

/* ---- eviction ----------------------------------------------------------- */

/* Removes the file of entry key. A file already gone (another process
 * removed it) is fine. Caller holds the lock. */
static void entry_unlink(struct mfs_cache *c, const char *key)
{
	char path[PATH_MAX];

	if (snprintf(path, sizeof(path), "%s/%s", c->dir, key) >=
	    (int)sizeof(path))
		return;
	if (unlink(path) == 0 || errno == ENOENT)
		return;
	if (!c->evict_warned) {
		c->evict_warned = 1;
		mfs_log_err("cache %s: cannot remove %s: %s", c->dir, key,
			    strerror(errno));
	}
}

/* When the total is over the bound, removes the least recently used
 * entries but keep (which is being handed out; may be NULL) until the
 * total is at most 90% of the bound. Caller holds the lock. */
static void evict(struct mfs_cache *c, const struct entry *keep)
{
	uint64_t target = c->limit - c->limit / 10;
	struct entry *e, *next;
	size_t gone = 0;

	if (c->total <= c->limit)
		return;
	for (e = c->oldest; e != NULL && c->total > target; e = next) {
		next = e->newer;
		if (e == keep)
			continue;
		entry_unlink(c, e->key);
		index_drop(c, e);
		gone++;
	}
	mfs_log_debug("cache %s: removed %zu entries, %llu bytes left", c->dir,
		      gone, (unsigned long long)c->total);
}

/* Counts entry key, of size bytes, as just used and applies the bound.
 * The caller has just opened or renamed it into place: an entry removed
 * by another process in between is counted until its next miss. */
static void note_use(struct mfs_cache *c, const char *key, uint64_t size)
{
	struct entry *e;

	pthread_mutex_lock(&c->lock);
	e = index_put(c, key, size);
	if (e != NULL)
		evict(c, e);
	pthread_mutex_unlock(&c->lock);
}

static uint64_t cache_limit(struct mfs_cache *c)
{
	uint64_t limit;

	pthread_mutex_lock(&c->lock);
	limit = c->limit;
	pthread_mutex_unlock(&c->lock);
	return limit;
}

/* Records now as the last use of the file on fd, in its mtime: nothing
 * else changes an entry's mtime (noatime and relatime leave atime
 * unreliable). A read-only cache keeps the old time; no harm. */
static void touch(int fd)
{
	struct timespec ts[2] = {{.tv_nsec = UTIME_OMIT}};

	clock_gettime(CLOCK_REALTIME, &ts[1]);
	futimens(fd, ts);
}

/* ---- the scan at open --------------------------------------------------- */

struct found {
	char *key; /* owned */
	uint64_t size;
	struct timespec used;
};

struct scan {
	struct found *v; /* owned */
	size_t n, cap;
};

/* Temporary files are named "<entry>.tmp.XXXXXX" or "ahead.tmp.XXXXXX";
 * no valid key contains ".tmp.". */
static int is_tmp_name(const char *name)
{
	return strstr(name, ".tmp.") != NULL;
}

/* Removes a temporary file left by a crash. A live writer holds a lock on
 * its temporary file (see tmp_lock), so one still being written by another
 * process stays. */
static void drop_torn(int dfd, const char *name)
{
	int fd =
	    openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);

	if (fd < 0)
		return;
	if (flock(fd, LOCK_EX | LOCK_NB) == 0)
		unlinkat(dfd, name, 0);
	close(fd);
}

static void tmp_lock(int fd)
{
	/* Fails only when a scan has just taken it: the scan then removes
	 * the file and the rename that follows fails, which is handled. */
	flock(fd, LOCK_EX | LOCK_NB);
}

static int scan_add(struct scan *s, const char *key, const struct stat *st)
{
	struct found *v;

	if (s->n == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 256;
		v = realloc(s->v, s->cap * sizeof(*v));
		if (v == NULL)
			return -1;
		s->v = v;
	}
	s->v[s->n].key = strdup(key);
	if (s->v[s->n].key == NULL)
		return -1;
	s->v[s->n].size = (uint64_t)st->st_size;
	s->v[s->n].used = st->st_mtim;
	s->n++;
	return 0;
}

/* Walks directory dfd (whose key prefix is rel, "" at the top); takes dfd.
 * Entries that vanish during the walk are skipped. */
static int scan_dir(struct scan *s, int dfd, const char *rel, int depth)
{
	char key[PATH_MAX];
	struct dirent *d;
	struct stat st;
	DIR *dir = fdopendir(dfd);
	int fd, rc = 0;

	if (dir == NULL) {
		close(dfd);
		return 0;
	}
	while (rc == 0 && (d = readdir(dir)) != NULL) {
		if (strcmp(d->d_name, ".") == 0 || strcmp(d->d_name, "..") == 0)
			continue;
		if (depth == 0 && (d->d_name[0] == '.' ||
				   strcmp(d->d_name, FOREIGN_DIR) == 0))
			continue;
		if (fstatat(dfd, d->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
		    st.st_uid != geteuid())
			continue; /* not ours: never served (cache_lookup) */
		if (snprintf(key, sizeof(key), "%s%s%s", rel, *rel ? "/" : "",
			     d->d_name) >= (int)sizeof(key))
			continue;
		if (S_ISREG(st.st_mode) && is_tmp_name(d->d_name)) {
			drop_torn(dfd, d->d_name);
		} else if (S_ISREG(st.st_mode)) {
			if ((st.st_mode & 077) != 0)
				fchmodat(dfd, d->d_name, 0600, 0);
			rc = scan_add(s, key, &st);
		} else if (S_ISDIR(st.st_mode) && depth < SCAN_DEPTH_MAX) {
			if ((st.st_mode & 077) != 0)
				fchmodat(dfd, d->d_name, 0700, 0);
			fd = openat(dfd, d->d_name,
				    O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
					O_CLOEXEC);
			if (fd >= 0)
				rc = scan_dir(s, fd, key, depth + 1);
		}
	}
	closedir(dir);
	return rc;
}

static int found_cmp(const void *a, const void *b)
{
	const struct timespec *x = &((const struct found *)a)->used;
	const struct timespec *y = &((const struct found *)b)->used;

	if (x->tv_sec != y->tv_sec)
		return x->tv_sec < y->tv_sec ? -1 : 1;
	if (x->tv_nsec != y->tv_nsec)
		return x->tv_nsec < y->tv_nsec ? -1 : 1;
	return 0;
}

/* Builds the index from the directory, oldest use first. */
static int cache_scan(struct mfs_cache *c, struct mfs_err *err)
{
	struct scan s = {0};
	size_t i;
	int fd, rc = MFS_OK;

	fd = open(c->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return mfs_err_set(err, MFS_E_IO, "cache directory %s: %s",
				   c->dir, strerror(errno));
	if (scan_dir(&s, fd, "", 0) != 0) {
		rc = mfs_err_set(err, MFS_E_NOMEM, "out of memory");
		goto free_found;
	}
	if (s.n > 0)
		qsort(s.v, s.n, sizeof(*s.v), found_cmp);
	for (i = 0; i < s.n; i++) {
		if (index_put(c, s.v[i].key, s.v[i].size) == NULL) {
			rc = mfs_err_set(err, MFS_E_NOMEM, "out of memory");
			goto free_found;
		}
	}
free_found:
	for (i = 0; i < s.n; i++)
		free(s.v[i].key);
	free(s.v);
	return rc;
}

/* ---- open and close ----------------------------------------------------- */

static void index_free(struct mfs_cache *c)
{
	struct entry *e, *next;

	for (e = c->oldest; e != NULL; e = next) {
		next = e->newer;
		free(e);
	}
	free(c->bucket);
}

int mfs_cache_open(const char *dir, struct mfs_cache **cache,
		   struct mfs_err *err)
{
	struct mfs_cache *c;
	int rc;

	rc = mfs_mkdir_private(dir, 0, "cache directory", NULL, err);
	if (rc != MFS_OK)
		return rc;
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	c->dir = strdup(dir);
	c->nbucket = INDEX_BUCKETS_MIN;
	c->bucket = calloc(c->nbucket, sizeof(*c->bucket));
	if (c->dir == NULL || c->bucket == NULL) {
		mfs_err_set(err, MFS_E_NOMEM, "out of memory");
		goto free_cache;
	}
	c->limit = MFS_CACHE_DEFAULT_LIMIT;
	if (cache_scan(c, err) != MFS_OK)
		goto free_cache;
	pthread_mutex_init(&c->lock, NULL);
	*cache = c;
	return MFS_OK;
free_cache:
	index_free(c);
	free(c->dir);
	free(c);
	return err->code;
}

void mfs_cache_close(struct mfs_cache *cache)
{
	if (cache == NULL)
		return;
	index_free(cache);
	pthread_mutex_destroy(&cache->lock);
	free(cache->dir);
	free(cache);
}

void mfs_cache_set_limit(struct mfs_cache *cache, uint64_t bytes)
{
	pthread_mutex_lock(&cache->lock);
	cache->limit = bytes != 0 ? bytes : MFS_CACHE_DEFAULT_LIMIT;
	evict(cache, NULL);
	pthread_mutex_unlock(&cache->lock);
}

uint64_t mfs_cache_usage(struct mfs_cache *cache)
{
	uint64_t total;

	pthread_mutex_lock(&cache->lock);
	total = cache->total;
	pthread_mutex_unlock(&cache->lock);
	return total;
}

/* ---- entries ------------------------------------------------------------ */

int mfs_cache_key_hex(const char *s, char *buf, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	size_t used = strlen(buf);

	for (; *s != '\0'; s++) {
		if (used + 3 > len)
			return -1;
		buf[used++] = hex[(unsigned char)*s >> 4];
		buf[used++] = hex[(unsigned char)*s & 15];
	}
	buf[used] = '\0';
	return 0;
}

/* 1 when key names an entry: components of [A-Za-z0-9._-], none empty or
 * starting with '.', no temporary name, nothing of the spool's. */
static int key_ok(const char *key)
{
	const char *p;

	if (is_tmp_name(key) ||
	    strncmp(key, FOREIGN_DIR "/", sizeof(FOREIGN_DIR)) == 0 ||
	    strcmp(key, FOREIGN_DIR) == 0)
		return 0;
	for (p = key;; p++) {
		if (p == key || p[-1] == '/') {
			if (*p == '\0' || *p == '/' || *p == '.')
				return 0;
		}
		if (*p == '\0')
			return 1;
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || *p == '.' || *p == '_' ||
		      *p == '-' || *p == '/'))
			return 0;
	}
}

static int entry_path(struct mfs_cache *c, const char *key, char *path,
		      size_t len)
{
	if (!key_ok(key))
		return -1;
	return snprintf(path, len, "%s/%s", c->dir, key) >= (int)len ? -1 : 0;
}

/* An open entry of the right size (any with MFS_CACHE_ANY_SIZE), its
 * size in *size; or -1. */
static int cache_lookup(const char *path, uint64_t expected, uint64_t *size)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

	if (fd < 0)
		return -1;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ||
	    st.st_uid != geteuid() ||
	    (expected != MFS_CACHE_ANY_SIZE &&
	     (uint64_t)st.st_size != expected)) {
		close(fd);
		return -1;
	}
	*size = (uint64_t)st.st_size;
	return fd;
}

/* Whether a fill of len bytes is what an entry of expected wants. */
static int size_fits(size_t len, uint64_t expected)
{
	return expected == MFS_CACHE_ANY_SIZE || len == expected;
}

/* Makes the directories leading to the file path (a path of the cache,
 * which has a '/'). Returns 0, or -1 (errno set). */
static int dir_of_make(char *path)
{
	char *slash = strrchr(path, '/');
	int rc;

	*slash = '\0';
	rc = mfs_mkdir_p(path);
	*slash = '/';
	return rc;
}

/* Makes a locked temporary file tmp (of size PATH_MAX) beside path, and
 * the directory of path when it is missing (first tried without: it
 * usually exists, and mkdir of each level costs a path walk each). Returns
 * its fd, or -1. */
static int tmp_beside(const char *path, char *tmp)
{
	int fd, tries;

	for (tries = 0; tries < 2; tries++) {
		/* again from the template: a failed mkostemp() leaves the
		 * name it tried */
		if (snprintf(tmp, PATH_MAX, "%s.tmp.XXXXXX", path) >=
		    PATH_MAX) {
			errno = ENAMETOOLONG;
			return -1;
		}
		fd = mkostemp(tmp, O_CLOEXEC);
		if (fd >= 0) {
			tmp_lock(fd);
			return fd;
		}
		if (errno != ENOENT || tries > 0 || dir_of_make(tmp) != 0)
			break;
	}
	return -1;
}

/* Fills an anonymous file: the fallback when the cache cannot be written. */
static int cache_fill_anon(struct mfs_cache *c, uint64_t expected,
			   mfs_cache_fill_fn fill, void *ctx, int *fd,
			   struct mfs_err *err)
{
	size_t len = 0;
	int tmp = memfd_create("mailfs", MFD_CLOEXEC);

	if (tmp < 0)
		return mfs_err_set(err, MFS_E_IO, "no temporary file: %s",
				   strerror(errno));
	if (!atomic_exchange(&c->warned, 1))
		mfs_log_err("cache %s cannot be written; serving from the "
			    "network",
			    c->dir);
	if (fill(ctx, tmp, &len, err) != MFS_OK) {
		close(tmp);
		return err->code;
	}
	if (!size_fits(len, expected)) {
		close(tmp);
		return mfs_err_set(err, MFS_E_IO,
				   "server sent %zu bytes where it announced "
				   "%llu",
				   len, (unsigned long long)expected);
	}
	*fd = tmp;
	return MFS_OK;
}

int mfs_cache_get(struct mfs_cache *cache, const char *key, uint64_t expected,
		  mfs_cache_fill_fn fill, void *ctx, int *fd,
		  struct mfs_err *err)
{
	char path[PATH_MAX], tmp[PATH_MAX];
	uint64_t size;
	size_t len = 0;
	int out;

	if (entry_path(cache, key, path, sizeof(path)) != 0)
		return mfs_err_set(err, MFS_E_IO, "invalid cache key %.200s",
				   key);
	*fd = cache_lookup(path, expected, &size);
	if (*fd >= 0) {
		touch(*fd);
		note_use(cache, key, size);
		return MFS_OK;
	}

	out = tmp_beside(path, tmp);
	if (out < 0)
		return cache_fill_anon(cache, expected, fill, ctx, fd, err);
	if (fill(ctx, out, &len, err) != MFS_OK) {
		close(out);
		unlink(tmp);
		/* MFS_E_IO from a fill is a local write that failed (a full
		 * disk): the bytes can still go to memory. */
		if (err->code == MFS_E_IO)
			return cache_fill_anon(cache, expected, fill, ctx, fd,
					       err);
		return err->code;
	}
	if (!size_fits(len, expected)) {
		close(out);
		unlink(tmp);
		return mfs_err_set(err, MFS_E_IO,
				   "server sent %zu bytes where it announced "
				   "%llu",
				   len, (unsigned long long)expected);
	}
	if (len > cache_limit(cache)) {
		/* larger than the whole cache: read from the unlinked file */
		unlink(tmp);
	} else {
		touch(out);
		if (rename(tmp, path) != 0) {
			close(out);
			unlink(tmp);
			return cache_fill_anon(cache, expected, fill, ctx, fd,
					       err);
		}
		note_use(cache, key, len);
	}
	*fd = out;
	if (lseek(out, 0, SEEK_SET) != 0) {
		close(out);
		return mfs_err_set(err, MFS_E_IO, "cache %s: %s", path,
				   strerror(errno));
	}
	return MFS_OK;
}

int mfs_cache_take(struct mfs_cache *cache, const char *key,
		   uint64_t expected, int *fd)
{
	char path[PATH_MAX];
	uint64_t size;

	*fd = -1;
	if (entry_path(cache, key, path, sizeof(path)) != 0)
		return -1;
	*fd = cache_lookup(path, expected, &size);
	if (*fd < 0)
		return -1;
	touch(*fd);
	note_use(cache, key, size);
	return 0;
}

int mfs_cache_has(struct mfs_cache *cache, const char *key, uint64_t expected)
{
	char path[PATH_MAX];
	uint64_t size;
	int fd;

	if (entry_path(cache, key, path, sizeof(path)) != 0)
		return 0;
	fd = cache_lookup(path, expected, &size);
	if (fd < 0)
		return 0;
	close(fd);
	return 1;
}

int mfs_cache_known(struct mfs_cache *cache, const char *key,
		    uint64_t expected)
{
	struct entry *e;
	int known;

	pthread_mutex_lock(&cache->lock);
	e = *index_slot(cache, key);
	known = e != NULL &&
		(expected == MFS_CACHE_ANY_SIZE || e->size == expected);
	pthread_mutex_unlock(&cache->lock);
	return known;
}

int mfs_cache_tmp(struct mfs_cache *cache, int *fd, char **tmp,
		  struct mfs_err *err)
{
	if (asprintf(tmp, "%s/ahead.tmp.XXXXXX", cache->dir) < 0) {
		*tmp = NULL;
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	}
	*fd = mkostemp(*tmp, O_CLOEXEC);
	if (*fd < 0) {
		free(*tmp);
		*tmp = NULL;
		return mfs_err_set(err, MFS_E_IO, "cache: %s", strerror(errno));
	}
	tmp_lock(*fd);
	return MFS_OK;
}

int mfs_cache_commit(struct mfs_cache *cache, const char *key, int fd,
		     const char *tmp, uint64_t expected)
{
	char path[PATH_MAX];
	struct stat st;
	int ok;

	ok = fstat(fd, &st) == 0 && size_fits((size_t)st.st_size, expected) &&
	     (uint64_t)st.st_size <= cache_limit(cache) &&
	     entry_path(cache, key, path, sizeof(path)) == 0;
	/* Its directory usually exists; made only when the rename says
	 * not. */
	if (ok)
		touch(fd);
	if (ok && (rename(tmp, path) == 0 ||
		   (errno == ENOENT && dir_of_make(path) == 0 &&
		    rename(tmp, path) == 0))) {
		note_use(cache, key, (uint64_t)st.st_size);
		close(fd);
		return 0;
	}
	close(fd);
	unlink(tmp);
	return -1;
}
