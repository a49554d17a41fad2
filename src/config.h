/*
 * config.h - the account configuration file (INI) and the password source.
 *
 * File format (see docs/mailfs.conf.5):
 *
 *   # comment            ; comment      blank lines ignored
 *   [account]            a section per account
 *   key = value          whitespace around '=' and at both ends is trimmed;
 *                        a '#' after whitespace starts a comment ("a #b" -> "a")
 *
 * '#' and ';' start a comment only as the first non-blank character of a
 * line; later, only a '#' preceded by a blank does ("a#b" and "a ;b" stay).
 * CRLF line ends and a UTF-8 byte order mark are accepted. Section names
 * must not be empty, "." or "..", nor contain '/', '[', ']' or control
 * characters (the name becomes a cache directory).
 *
 * Keys: imap, pop3, user, password_command, password_file, smtp, from,
 * sent_folder, ca_file, cache_dir, timeout, tls, retry_min, retry_max,
 * queue_lifetime, refresh, auth, apop, allow_expire, cache_size,
 * connections, prefetch.  Anything else is an error
 * that names file and line.  Exactly one of imap/pop3; exactly one of
 * password_command/password_file.
 *
 * The whole file is checked for syntax (a line is a comment, a [section] or
 * key = value; no key before the first section, no key twice in a section,
 * no section twice); only the requested section is checked for key names
 * and values, so other accounts may use keys this version does not know.
 *
 * Values: URLs are scheme://host[:port][/] with host a name, an IPv4
 * address or an IPv6 address in brackets; no user info, path, query or
 * fragment; port 1-65535. timeout is 1-3600. tls is "required" (the
 * default) or "none". password_file, ca_file and cache_dir must be absolute
 * or start with "~/" (or be "~"), expanded with $HOME. No value is empty.
 * auth is "password" (the default), "xoauth2" or "oauthbearer". apop and
 * allow_expire are "yes" or "no" (the default); compress is "yes" (the
 * default) or "no". cache_size is a whole
 * number of bytes with an optional suffix K, M or G (powers of 1024), at
 * least 1M, default 1G. connections is 1-16, default 4. Words (auth, tls,
 * yes/no) are matched without regard to case.
 */
#ifndef MAILFS_CONFIG_H
#define MAILFS_CONFIG_H

#include "error.h"

enum mfs_proto { MFS_PROTO_IMAP, MFS_PROTO_POP3, MFS_PROTO_SMTP };

/* How the store and SMTP logins prove who the user is. */
enum mfs_auth {
	MFS_AUTH_PASSWORD = 0, /* LOGIN, USER/PASS, AUTH PLAIN or LOGIN    */
	MFS_AUTH_XOAUTH2,      /* SASL XOAUTH2, the secret is a token      */
	MFS_AUTH_OAUTHBEARER,  /* SASL OAUTHBEARER (RFC 7628), a token     */
};

enum mfs_tls_mode {
	MFS_TLS_IMPLICIT, /* imaps://, pop3s://, smtps://           */
	MFS_TLS_STARTTLS, /* imap://, pop3://, smtp:// (required)    */
	MFS_TLS_NONE,	  /* imap:// etc. with "tls = none"          */
};

/* One server, parsed from a URL such as imaps://host:993. */
struct mfs_server {
	enum mfs_proto proto;
	enum mfs_tls_mode tls;
	char *host; /* owned; no brackets for IPv6 literals */
	int port;   /* explicit, else the scheme's default:
		       imap 143, imaps 993, pop3 110, pop3s 995,
		       smtp 587, smtps 465 */
};

struct mfs_account {
	char *name;		/* owned: the section name */
	char *path;		/* owned: the config file it came from */
	struct mfs_server store; /* imap or pop3 (store.proto says which) */
	int has_smtp;
	struct mfs_server smtp;	 /* valid when has_smtp */
	char *user;		 /* owned */
	char *password_command;	 /* owned or NULL */
	char *password_file;	 /* owned or NULL; "~/" expanded */
	char *from;		 /* owned or NULL */
	char *sent_folder;	 /* owned or NULL (NULL: SPECIAL-USE \Sent) */
	char *prefetch;		 /* owned or NULL: folders whose messages are
				    fetched into the cache in the background,
				    as patterns (prefetch.h) */
	char *ca_file;		 /* owned or NULL; "~/" expanded */
	char *cache_dir;	 /* owned; default $XDG_CACHE_HOME/mailfs/NAME
				    else ~/.cache/mailfs/NAME; "~/" expanded */
	int timeout;		 /* seconds, > 0; default 30 */
	int retry_min;		 /* outbox: first retry after (s); 60 */
	int retry_max;		 /* outbox: longest wait between retries;
				    3600 */
	int queue_lifetime;	 /* outbox: give up after (s); 7 days */
	int refresh;		 /* a folder listing is asked for again when
				    older than this (s); 5, POP3 60 */
	enum mfs_auth auth;	 /* "auth": password (default), xoauth2,
				    oauthbearer; the token is the secret that
				    password_command prints */
	int apop;		 /* "apop = yes": POP3 APOP when offered */
	int allow_expire;	 /* "allow_expire = yes": read a POP3 server
				    that deletes what it sends (EXPIRE 0) */
	unsigned long long cache_size; /* "cache_size": bytes the disk cache
				    may hold (suffix K, M, G); 1 GiB */
	int connections;	 /* "connections": IMAP connections for
				    readers, 1-16; 4 */
	int compress;		 /* "compress = no" turns IMAP COMPRESS=DEFLATE
				    (RFC 4978) off; on by default */
};

/* The default config path: $XDG_CONFIG_HOME/mailfs/config, else
 * ~/.config/mailfs/config. Returns a malloc'd string (caller frees), or NULL
 * when neither XDG_CONFIG_HOME nor HOME is set. */
char *mfs_config_default_path(void);

/*
 * Reads section `account` of the file at `path` into *acct (which the caller
 * owns afterwards and releases with mfs_account_free()).
 * Errors (err->msg is "PATH:LINE: what" or, without a line, "PATH: what"):
 *   MFS_E_CONFIG  cannot open, syntax error, unknown key, duplicate key,
 *                 bad URL or number, no such section, imap and pop3 both or
 *                 neither, no password source or two, no user, tls=none with
 *                 an implicit-TLS URL, a relative path, "~/" without HOME,
 *                 no cache_dir and neither XDG_CACHE_HOME nor HOME set.
 *   MFS_E_NOMEM   allocation failed.
 * On error *acct is left zeroed and nothing needs freeing.
 */
int mfs_config_load(const char *path, const char *account,
		    struct mfs_account *acct, struct mfs_err *err);

/* Frees every owned field and zeroes *acct. Safe on a zeroed struct. */
void mfs_account_free(struct mfs_account *acct);

/*
 * Obtains the password (or, with auth = xoauth2/oauthbearer, the token):
 * runs password_command (via /bin/sh -c when the value holds a shell
 * metacharacter, one of | & ; < > ( ) $ ` \ " ' * ? [ ] # ~ = % { } or a
 * newline; otherwise split on blanks and run directly through PATH; stdin
 * /dev/null, stdout captured, stderr inherited, all other fds closed, the
 * environment inherited, killed after acct->timeout seconds) and takes its
 * first line; or reads the first line of password_file, refusing it unless it
 * is a regular file (not a symbolic link) owned by the current user with no
 * group/other permission bits. A trailing CR is dropped from the line.
 * The command's output is read to its end, and the command must exit 0
 * within the timeout (a background process that keeps its stdout open
 * counts as not finished).
 * On success *password is malloc'd (caller wipes with mfs_password_free());
 * on error *password is NULL.
 * Errors: MFS_E_CONFIG (file not 0600 / wrong owner / symlink / unreadable /
 *         empty first line, command failed, exited non-zero, was killed,
 *         timed out, printed nothing; a first line over 4095 bytes),
 *         MFS_E_NOMEM.
 * The password itself, and the command line, never appear in err->msg.
 */
int mfs_password_get(const struct mfs_account *acct, char **password,
		     struct mfs_err *err);

/* Overwrites the string with zeros, then frees it. NULL is fine. */
void mfs_password_free(char *password);

#endif
