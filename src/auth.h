/*
 * auth.h - logging in with an OAuth token that may have expired: the one
 * "refused, ask for a new token once, try again" that the IMAP, POP3 and
 * SMTP clients share. The protocol's own exchange is the caller's
 * mfs_login_fn; SASL strings come from sasl.h.
 */
#ifndef MAILFS_AUTH_H
#define MAILFS_AUTH_H

#include "config.h"
#include "error.h"

/*
 * One login attempt with secret on the caller's connection (arg).
 * Returns MFS_OK or an error code with err set; sets *refused when the
 * server turned the secret down and the connection can take another
 * attempt.
 */
typedef int (*mfs_login_fn)(void *arg, const char *secret, int *refused,
			    struct mfs_err *err);

/*
 * Logs in with token by login(arg, ...). When the server refuses it, the
 * token may have expired: acct's password source (mfs_password_get) is
 * asked once for a new one and the login tried once more with it; proto
 * ("imap") and srv name the server in the log. When the password source
 * fails, that is logged and the refusal is what is returned.
 *
 * *fresh is NULL, or the new token when one was asked for, whether or not
 * the second attempt succeeded: the caller owns it (mfs_password_free()).
 * Returns what the last attempt returned; MFS_E_NOMEM.
 */
int mfs_login_renewing(const struct mfs_account *acct, const char *proto,
		       const struct mfs_server *srv, mfs_login_fn login,
		       void *arg, const char *token, char **fresh,
		       struct mfs_err *err);

#endif
