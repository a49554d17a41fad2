/* cache.c - see cache.h */
#include "cache.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

struct mfs_cache {
	char *dir;	   /* owned */
	atomic_int warned; /* the "cannot write" problem was logged */
};

/* mkdir -p with mode 0700 for every component it creates. */
static int mkdir_p(const char *path)
{
	char buf[PATH_MAX];
	char *p;

	if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	for (p = buf + 1; *p != '\0'; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, 0700) != 0 && errno != EEXIST)
			return -1;
		*p = '/';
	}
	if (mkdir(buf, 0700) != 0 && errno != EEXIST)
		return -1;
	return 0;
}

int mfs_cache_open(const char *dir, struct mfs_cache **cache,
		   struct mfs_err *err)
{
	struct mfs_cache *c;
	struct stat st;

	if (mkdir_p(dir) != 0 || stat(dir, &st) != 0)
		return mfs_err_set(err, MFS_E_IO, "cache directory %s: %s",
				   dir, strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return mfs_err_set(err, MFS_E_IO,
				   "cache directory %s is not a directory", dir);
	if ((st.st_mode & 077) != 0 && chmod(dir, 0700) != 0)
		mfs_log_err("cannot make %s private: %s", dir,
			    strerror(errno));
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	c->dir = strdup(dir);
	if (c->dir == NULL) {
		free(c);
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	}
	*cache = c;
	return MFS_OK;
}

void mfs_cache_close(struct mfs_cache *cache)
{
	if (cache == NULL)
		return;
	free(cache->dir);
	free(cache);
}

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

/* An open entry of the right size, or -1. */
static int cache_lookup(const char *path, uint64_t expected)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

	if (fd < 0)
		return -1;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ||
	    (uint64_t)st.st_size != expected) {
		close(fd);
		return -1;
	}
	return fd;
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
	if (len != expected) {
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
	char path[PATH_MAX], tmp[PATH_MAX], *slash;
	size_t len = 0;
	int out;

	if (snprintf(path, sizeof(path), "%s/%s", cache->dir, key) >=
		    (int)sizeof(path) ||
	    snprintf(tmp, sizeof(tmp), "%s.tmp.XXXXXX", path) >=
		    (int)sizeof(tmp))
		return mfs_err_set(err, MFS_E_IO, "cache key too long");
	*fd = cache_lookup(path, expected);
	if (*fd >= 0)
		return MFS_OK;

	slash = strrchr(path, '/');
	*slash = '\0';
	if (mkdir_p(path) != 0) {
		*slash = '/';
		return cache_fill_anon(cache, expected, fill, ctx, fd, err);
	}
	*slash = '/';
	out = mkostemp(tmp, O_CLOEXEC);
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
	if (len != expected) {
		close(out);
		unlink(tmp);
		return mfs_err_set(err, MFS_E_IO,
				   "server sent %zu bytes where it announced "
				   "%llu",
				   len, (unsigned long long)expected);
	}
	if (rename(tmp, path) != 0) {
		close(out);
		unlink(tmp);
		return cache_fill_anon(cache, expected, fill, ctx, fd, err);
	}
	*fd = out;
	if (lseek(out, 0, SEEK_SET) != 0) {
		close(out);
		return mfs_err_set(err, MFS_E_IO, "cache %s: %s", path,
				   strerror(errno));
	}
	return MFS_OK;
}

int mfs_cache_has(struct mfs_cache *cache, const char *key, uint64_t expected)
{
	char path[PATH_MAX];
	int fd;

	if (snprintf(path, sizeof(path), "%s/%s", cache->dir, key) >=
	    (int)sizeof(path))
		return 0;
	fd = cache_lookup(path, expected);
	if (fd < 0)
		return 0;
	close(fd);
	return 1;
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
	return MFS_OK;
}

int mfs_cache_commit(struct mfs_cache *cache, const char *key, int fd,
		     const char *tmp, uint64_t expected)
{
	char path[PATH_MAX], *slash;
	struct stat st;
	int ok;

	ok = fstat(fd, &st) == 0 && (uint64_t)st.st_size == expected;
	close(fd);
	if (ok && snprintf(path, sizeof(path), "%s/%s", cache->dir, key) <
		      (int)sizeof(path)) {
		slash = strrchr(path, '/');
		*slash = '\0';
		ok = mkdir_p(path) == 0;
		*slash = '/';
		if (ok && rename(tmp, path) == 0)
			return 0;
	}
	unlink(tmp);
	return -1;
}
