/*
 * auth.c - a login whose refused token is asked for again (see auth.h).
 */
#include "auth.h"

#include "log.h"

int mfs_login_renewing(const struct mfs_account *acct, const char *proto,
		       const struct mfs_server *srv, mfs_login_fn login,
		       void *arg, const char *token, char **fresh,
		       struct mfs_err *err)
{
	struct mfs_err first;
	int rc, refused = 0;

	*fresh = NULL;
	rc = login(arg, token, &refused, err);
	if (rc == MFS_OK || !refused)
		return rc;
	first = *err;
	mfs_log_info("%s: %s:%d refused the token; asking for a new one", proto,
		     srv->host, srv->port);
	if (mfs_password_get(acct, fresh, err) != MFS_OK) {
		mfs_log_err("%s: no new token: %s", proto, err->msg);
		*err = first;
		return rc;
	}
	return login(arg, *fresh, &refused, err);
}
