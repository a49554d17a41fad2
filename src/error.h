/*
 * error.h - mailfs's own error codes and the one place they become errno.
 *
 * Every module reports failure as a struct mfs_err: a code from enum
 * mfs_errcode plus a sentence for the user. Only the FUSE layer turns a code
 * into -errno, through mfs_err_errno().
 */
#ifndef MAILFS_ERROR_H
#define MAILFS_ERROR_H

#include <stddef.h>

enum mfs_errcode {
	MFS_OK = 0,
	MFS_E_NOMEM,	  /* allocation failed                         -> ENOMEM */
	MFS_E_CONFIG,	  /* bad config file or option                 -> EINVAL */
	MFS_E_INVAL,	  /* bad input from the user                   -> EINVAL */
	MFS_E_NOENT,	  /* no such folder or message                 -> ENOENT */
	MFS_E_EXIST,	  /* already exists                            -> EEXIST */
	MFS_E_NOTEMPTY,	  /* folder still holds something              -> ENOTEMPTY */
	MFS_E_ACCESS,	  /* refused by the server or by policy        -> EACCES */
	MFS_E_ROFS,	  /* write on a read-only tree                 -> EROFS */
	MFS_E_CONNECT,	  /* cannot reach the server                   -> EIO */
	MFS_E_TLS,	  /* TLS handshake or verification failed      -> EIO */
	MFS_E_AUTH,	  /* login refused                             -> EACCES */
	MFS_E_PROTO,	  /* the server said something we cannot use   -> EIO */
	MFS_E_TIMEOUT,	  /* a network wait ran out                    -> ETIMEDOUT */
	MFS_E_IO,	  /* local I/O failed (cache, spool)           -> EIO */
	MFS_E_QUOTA,	  /* the server's quota is full (OVERQUOTA)    -> EDQUOT */
	MFS_E_TOOBIG,	  /* larger than the server takes (LIMIT)      -> EFBIG */
	MFS_E_OFFLINE,	  /* the server is out of reach: not tried now -> EHOSTDOWN */
};

#define MFS_ERRMSG_MAX 512

struct mfs_err {
	enum mfs_errcode code;
	char msg[MFS_ERRMSG_MAX]; /* one sentence, no trailing newline */
};

/* Sets code and a printf-style message. Returns the code, so that
 * "return mfs_err_set(err, MFS_E_IO, "...")" reads naturally.
 * err may be NULL: then nothing is recorded and the code is still returned. */
int mfs_err_set(struct mfs_err *err, enum mfs_errcode code, const char *fmt,
		...) __attribute__((format(printf, 3, 4)));

/* Clears err to MFS_OK and an empty message. */
void mfs_err_clear(struct mfs_err *err);

/* Whether code says the server is out of reach (cannot be connected to,
 * or a connection to it broke or timed out), not what it answered. */
int mfs_err_unreachable(enum mfs_errcode code);

/* The errno (positive) that code maps to at the FUSE boundary. */
int mfs_err_errno(enum mfs_errcode code);

#endif
