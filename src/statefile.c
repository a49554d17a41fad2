/*
 * statefile.c - durable, escaped state files (see statefile.h).
 */
#include "statefile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void mfs_state_put_escaped(FILE *f, const char *s)
{
	for (; s && *s; s++) {
		if (*s == '%' || *s == '\n' || *s == '\r')
			fprintf(f, "%%%02X", (unsigned char)*s);
		else
			fputc(*s, f);
	}
}

char *mfs_state_unescape(const char *s)
{
	char *out = malloc(strlen(s) + 1), *o = out;

	if (!out)
		return NULL;
	while (*s) {
		unsigned v;

		if (s[0] == '%' && sscanf(s + 1, "%2X", &v) == 1 && s[1] &&
		    s[2]) {
			*o++ = (char)v;
			s += 3;
		} else {
			*o++ = *s++;
		}
	}
	*o = '\0';
	return out;
}

int mfs_state_create_new(int dirfd, const char *name)
{
	if (unlinkat(dirfd, name, 0) != 0 && errno != ENOENT)
		return -1;
	return openat(dirfd, name,
		      O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
		      0600);
}

int mfs_state_write(int dirfd, const char *name, const char *text, size_t len)
{
	char tmp[256];
	int fd, rc = -1;

	if (snprintf(tmp, sizeof(tmp), "%s.new", name) >= (int)sizeof(tmp)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	fd = mfs_state_create_new(dirfd, tmp);
	if (fd < 0)
		return -1;
	if (write(fd, text, len) == (ssize_t)len && fsync(fd) == 0 &&
	    renameat(dirfd, tmp, dirfd, name) == 0)
		rc = 0;
	close(fd);
	if (rc)
		unlinkat(dirfd, tmp, 0);
	return rc;
}

void mfs_state_remove(int dirfd, const char *id, const char *other)
{
	char path[256];

	snprintf(path, sizeof(path), "%s.eml", id);
	unlinkat(dirfd, path, 0);
	snprintf(path, sizeof(path), "%s.%s", id, other);
	unlinkat(dirfd, path, 0);
	fsync(dirfd);
}
