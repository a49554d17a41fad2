/* error.c - see error.h */
#include "error.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>

int mfs_err_set(struct mfs_err *err, enum mfs_errcode code, const char *fmt,
		...)
{
	va_list ap;

	if (err == NULL)
		return code;
	err->code = code;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	return code;
}

void mfs_err_clear(struct mfs_err *err)
{
	if (err == NULL)
		return;
	err->code = MFS_OK;
	err->msg[0] = '\0';
}

int mfs_err_unreachable(enum mfs_errcode code)
{
	return code == MFS_E_CONNECT || code == MFS_E_TIMEOUT ||
	       code == MFS_E_OFFLINE;
}

int mfs_err_errno(enum mfs_errcode code)
{
	switch (code) {
	case MFS_OK:
		return 0;
	case MFS_E_NOMEM:
		return ENOMEM;
	case MFS_E_CONFIG:
	case MFS_E_INVAL:
		return EINVAL;
	case MFS_E_NOENT:
		return ENOENT;
	case MFS_E_EXIST:
		return EEXIST;
	case MFS_E_NOTEMPTY:
		return ENOTEMPTY;
	case MFS_E_ACCESS:
	case MFS_E_AUTH:
		return EACCES;
	case MFS_E_ROFS:
		return EROFS;
	case MFS_E_TIMEOUT:
		return ETIMEDOUT;
	case MFS_E_CONNECT:
	case MFS_E_TLS:
	case MFS_E_PROTO:
	case MFS_E_IO:
		return EIO;
	case MFS_E_QUOTA:
		return EDQUOT;
	case MFS_E_TOOBIG:
		return EFBIG;
	case MFS_E_OFFLINE:
		return EHOSTDOWN;
	}
	return EIO;
}
