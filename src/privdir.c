/*
 * privdir.c - private directories (see privdir.h).
 */
#include "privdir.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int mfs_mkdir_p(const char *dir)
{
	char *copy = strdup(dir), *p;
	int rc = 0;

	if (copy == NULL)
		return -1;
	for (p = copy + 1; *p != '\0' && rc == 0; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(copy, 0700) != 0 && errno != EEXIST)
			rc = -1;
		*p = '/';
	}
	if (rc == 0 && mkdir(copy, 0700) != 0 && errno != EEXIST)
		rc = -1;
	free(copy);
	return rc;
}

int mfs_dir_check_private(int fd, const char *what, const char *path,
			  struct mfs_err *err)
{
	struct stat st;

	if (fstat(fd, &st) != 0)
		return mfs_err_set(err, MFS_E_IO, "cannot stat %s %s: %s", what,
				   path, strerror(errno));
	if (st.st_uid != geteuid())
		return mfs_err_set(err, MFS_E_ACCESS,
				   "%s %s belongs to uid %u, not to you (uid "
				   "%u); refusing to use it",
				   what, path, (unsigned)st.st_uid,
				   (unsigned)geteuid());
	if ((st.st_mode & 077) != 0 && fchmod(fd, 0700) != 0)
		return mfs_err_set(err, MFS_E_ACCESS,
				   "%s %s is open to others (mode %04o) and "
				   "cannot be made private: %s",
				   what, path, (unsigned)(st.st_mode & 07777),
				   strerror(errno));
	return MFS_OK;
}

int mfs_mkdir_private(const char *dir, int oflags, const char *what, int *fd,
		      struct mfs_err *err)
{
	int dfd, rc;

	if (fd != NULL)
		*fd = -1;
	if (mfs_mkdir_p(dir) != 0)
		return mfs_err_set(err, MFS_E_IO, "cannot create %s %s: %s",
				   what, dir, strerror(errno));
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | oflags);
	if (dfd < 0)
		return mfs_err_set(err, MFS_E_IO, "cannot open %s %s: %s", what,
				   dir, strerror(errno));
	rc = mfs_dir_check_private(dfd, what, dir, err);
	if (rc != MFS_OK || fd == NULL)
		close(dfd);
	else
		*fd = dfd;
	return rc;
}
