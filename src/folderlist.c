/*
 * folderlist.c - the on-disk copy of the folder list (see folderlist.h).
 */
#include "folderlist.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "privdir.h"
#include "statefile.h"

#define MAGIC "mailfs folders 1"
#define FILE_NAME "folders"
#define MAX_FOLDERS 1000000

/* cache_dir/.index, malloc'd, or NULL. */
static char *index_dir(const char *cache_dir)
{
	char *dir;

	if (asprintf(&dir, "%s/.index", cache_dir) < 0)
		return NULL;
	return dir;
}

int mfs_folderlist_save(const char *cache_dir, const char *key,
			const struct mfs_store_folder *folders, size_t n,
			struct mfs_err *err)
{
	char *dir = index_dir(cache_dir), *text = NULL;
	size_t len = 0, i;
	FILE *f;
	int dfd = -1, rc;

	if (dir == NULL)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	f = open_memstream(&text, &len);
	if (f == NULL) {
		free(dir);
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	}
	fprintf(f, "%s\n", MAGIC);
	mfs_state_put_escaped(f, key);
	fputc('\n', f);
	for (i = 0; i < n; i++) {
		fprintf(f, "%d %d %u %zu ", folders[i].noselect != 0,
			folders[i].sent != 0, (unsigned char)folders[i].delim,
			folders[i].shown);
		mfs_state_put_escaped(f, folders[i].name);
		fputc('\n', f);
	}
	if (fclose(f) != 0) {
		free(text);
		free(dir);
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	}
	rc = mfs_mkdir_private(dir, O_NOFOLLOW, "index directory", &dfd, err);
	if (rc == MFS_OK) {
		if (mfs_state_write(dfd, FILE_NAME, text, len) != 0 ||
		    fsync(dfd) != 0)
			rc = mfs_err_set(err, MFS_E_IO,
					 "cannot write %s/" FILE_NAME ": %s",
					 dir, strerror(errno));
		close(dfd);
	}
	free(text);
	free(dir);
	return rc;
}

/* One folder line into *f. Returns 0, -1 when it does not parse, -2 on
 * ENOMEM. */
static int parse_line(char *line, struct mfs_store_folder *f)
{
	unsigned noselect, sent, delim;
	size_t shown;
	int used = 0;

	if (sscanf(line, "%u %u %u %zu %n", &noselect, &sent, &delim, &shown,
		   &used) != 4 ||
	    used == 0 || noselect > 1 || sent > 1 || delim > 255 ||
	    line[used] == '\0')
		return -1;
	f->name = mfs_state_unescape(line + used);
	if (f->name == NULL)
		return -2;
	if (shown >= strlen(f->name)) {
		free(f->name);
		f->name = NULL;
		return -1;
	}
	f->noselect = (int)noselect;
	f->sent = (int)sent;
	f->delim = (char)delim;
	f->shown = shown;
	return 0;
}

/* Reads the folder lines of f. */
static int read_folders(FILE *f, const char *path,
			struct mfs_store_folder **folders, size_t *n,
			struct mfs_err *err)
{
	struct mfs_store_folder *out = NULL, *grown;
	size_t count = 0, cap = 0, len = 0;
	char *line = NULL;
	ssize_t got;
	int r;

	while ((got = getline(&line, &len, f)) > 0) {
		if (line[got - 1] == '\n')
			line[got - 1] = '\0';
		if (count == cap) {
			cap = cap ? 2 * cap : 16;
			grown = cap <= MAX_FOLDERS
					? realloc(out, cap * sizeof(*out))
					: NULL;
			if (grown == NULL) {
				r = mfs_err_set(err, MFS_E_NOMEM,
						"out of memory");
				goto fail;
			}
			out = grown;
		}
		memset(&out[count], 0, sizeof(out[count]));
		r = parse_line(line, &out[count]);
		if (r != 0) {
			r = r == -2 ? mfs_err_set(err, MFS_E_NOMEM,
						  "out of memory")
				    : mfs_err_set(err, MFS_E_IO,
						  "%s is not a folder list",
						  path);
			goto fail;
		}
		count++;
	}
	free(line);
	*folders = out;
	*n = count;
	return MFS_OK;
fail:
	free(line);
	mfs_store_folders_free(out, count);
	return r;
}

int mfs_folderlist_load(const char *cache_dir, const char *key,
			struct mfs_store_folder **folders, size_t *n,
			struct mfs_err *err)
{
	char *path = NULL, *line = NULL, *kept = NULL;
	size_t len = 0;
	ssize_t got;
	FILE *f = NULL;
	int fd, rc;

	*folders = NULL;
	*n = 0;
	if (asprintf(&path, "%s/.index/" FILE_NAME, cache_dir) < 0)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		rc = mfs_err_set(err, errno == ENOENT ? MFS_E_NOENT : MFS_E_IO,
				 "cannot open %s: %s", path, strerror(errno));
		goto out;
	}
	f = fdopen(fd, "r");
	if (f == NULL) {
		close(fd);
		rc = mfs_err_set(err, MFS_E_NOMEM, "out of memory");
		goto out;
	}
	rc = mfs_err_set(err, MFS_E_IO, "%s is not a folder list of this "
					"account",
			 path);
	got = getline(&line, &len, f);
	if (got <= 0 || strcmp(line, MAGIC "\n") != 0)
		goto out;
	got = getline(&line, &len, f);
	if (got <= 0 || line[got - 1] != '\n')
		goto out;
	line[got - 1] = '\0';
	kept = mfs_state_unescape(line);
	if (kept == NULL) {
		rc = mfs_err_set(err, MFS_E_NOMEM, "out of memory");
		goto out;
	}
	if (strcmp(kept, key) != 0)
		goto out;
	rc = read_folders(f, path, folders, n, err);
	if (rc == MFS_OK)
		mfs_err_clear(err);
out:
	if (f != NULL)
		fclose(f);
	free(kept);
	free(line);
	free(path);
	return rc;
}
