/*
 * privdir.h - the private directories mailfs keeps its files in (the
 * cache, the listing index, the outbox spool): made with mode 0700, and
 * used only when they belong to the user. Whoever else owns or can write
 * such a directory could forge cached mail or change what is sent in the
 * user's name.
 */
#ifndef MAILFS_PRIVDIR_H
#define MAILFS_PRIVDIR_H

#include "error.h"

/* mkdir -p: creates dir and every missing parent, each with mode 0700.
 * An existing directory is fine and left as it is. Returns 0, or -1 with
 * errno set. */
int mfs_mkdir_p(const char *dir);

/*
 * Checks that the directory open on fd is the user's own, and makes it
 * private (0700) when its mode lets others in. what and path name it in
 * the message ("cache directory", "/home/u/.cache/mailfs").
 * Errors: MFS_E_IO (fstat failed), MFS_E_ACCESS (another user's, or open
 * to others and chmod failed).
 */
int mfs_dir_check_private(int fd, const char *what, const char *path,
			  struct mfs_err *err);

/*
 * mfs_mkdir_p(dir), then opens dir (read-only, O_DIRECTORY, O_CLOEXEC and
 * oflags: O_NOFOLLOW refuses a symbolic link) and checks it with
 * mfs_dir_check_private(). With fd non-NULL *fd is the open directory
 * (the caller closes it), else it is closed. On failure *fd is -1.
 * Errors: MFS_E_IO (cannot create or open), MFS_E_ACCESS.
 */
int mfs_mkdir_private(const char *dir, int oflags, const char *what, int *fd,
		      struct mfs_err *err);

#endif
