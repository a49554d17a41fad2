/* config.c - see config.h */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TIMEOUT_DEFAULT 30
#define TIMEOUT_MAX	3600
/* The longest password line accepted, terminator included. */
#define PASSWORD_MAX 4096
#define CACHE_SIZE_DEFAULT (1ULL << 30)
#define CACHE_SIZE_MIN	   (1ULL << 20)
#define CONNECTIONS_DEFAULT 4
#define CONNECTIONS_MAX	    16

enum cfg_key {
	K_IMAP,
	K_POP3,
	K_USER,
	K_PASSWORD_COMMAND,
	K_PASSWORD_FILE,
	K_SMTP,
	K_FROM,
	K_SENT_FOLDER,
	K_CA_FILE,
	K_CACHE_DIR,
	K_TIMEOUT,
	K_TLS,
	K_RETRY_MIN,
	K_RETRY_MAX,
	K_QUEUE_LIFETIME,
	K_REFRESH,
	K_AUTH,
	K_APOP,
	K_ALLOW_EXPIRE,
	K_CACHE_SIZE,
	K_CONNECTIONS,
	K_PREFETCH,
	K_COMPRESS,
	K_COUNT
};

static const char *const key_names[K_COUNT] = {
    [K_IMAP] = "imap",
    [K_POP3] = "pop3",
    [K_USER] = "user",
    [K_PASSWORD_COMMAND] = "password_command",
    [K_PASSWORD_FILE] = "password_file",
    [K_SMTP] = "smtp",
    [K_FROM] = "from",
    [K_SENT_FOLDER] = "sent_folder",
    [K_CA_FILE] = "ca_file",
    [K_CACHE_DIR] = "cache_dir",
    [K_TIMEOUT] = "timeout",
    [K_TLS] = "tls",
    [K_RETRY_MIN] = "retry_min",
    [K_RETRY_MAX] = "retry_max",
    [K_QUEUE_LIFETIME] = "queue_lifetime",
    [K_REFRESH] = "refresh",
    [K_AUTH] = "auth",
    [K_APOP] = "apop",
    [K_ALLOW_EXPIRE] = "allow_expire",
    [K_CACHE_SIZE] = "cache_size",
    [K_CONNECTIONS] = "connections",
    [K_PREFETCH] = "prefetch",
    [K_COMPRESS] = "compress",
};

struct scheme {
	const char *name;
	enum mfs_proto proto;
	enum mfs_tls_mode tls;
	int port;
};

static const struct scheme schemes[] = {
    {"imap", MFS_PROTO_IMAP, MFS_TLS_STARTTLS, 143},
    {"imaps", MFS_PROTO_IMAP, MFS_TLS_IMPLICIT, 993},
    {"pop3", MFS_PROTO_POP3, MFS_TLS_STARTTLS, 110},
    {"pop3s", MFS_PROTO_POP3, MFS_TLS_IMPLICIT, 995},
    {"smtp", MFS_PROTO_SMTP, MFS_TLS_STARTTLS, 587},
    {"smtps", MFS_PROTO_SMTP, MFS_TLS_IMPLICIT, 465},
};

/* A name seen in the file and the line it was on. */
struct seen {
	char *name; /* owned */
	int line;
};

struct seen_list {
	struct seen *v; /* owned */
	size_t n, cap;
};

struct parser {
	const char *path;	   /* borrowed */
	const char *want;	   /* borrowed: the section asked for */
	int lineno;		   /* line being parsed */
	int in_section;		   /* a [section] line has been seen */
	int in_want;		   /* the current section is `want` */
	int want_line;		   /* line of [want], 0 while not seen */
	char *val[K_COUNT];	   /* owned: raw values of [want] */
	int line[K_COUNT];	   /* their lines */
	struct seen_list sections; /* every section header so far */
	struct seen_list keys;	   /* keys of the current section */
	struct stat st;		   /* of the file, as opened */
	struct mfs_err *err;	   /* borrowed */
};

/* Error helpers. */

static int __attribute__((format(printf, 3, 4)))
line_err(struct parser *p, int line, const char *fmt, ...)
{
	char msg[MFS_ERRMSG_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (line > 0)
		return mfs_err_set(p->err, MFS_E_CONFIG, "%s:%d: %s", p->path,
				   line, msg);
	return mfs_err_set(p->err, MFS_E_CONFIG, "%s: %s", p->path, msg);
}

static int key_err(struct parser *p, enum cfg_key k, const char *what)
{
	return line_err(p, p->line[k], "%s: %s", key_names[k], what);
}

static int nomem(struct mfs_err *err)
{
	return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
}

/* The list of names seen. */

static void seen_clear(struct seen_list *l)
{
	size_t i;

	for (i = 0; i < l->n; i++)
		free(l->v[i].name);
	l->n = 0;
}

static void seen_free(struct seen_list *l)
{
	seen_clear(l);
	free(l->v);
	l->v = NULL;
	l->cap = 0;
}

static const struct seen *seen_find(const struct seen_list *l, const char *name)
{
	size_t i;

	for (i = 0; i < l->n; i++)
		if (strcmp(l->v[i].name, name) == 0)
			return &l->v[i];
	return NULL;
}

static int seen_add(struct seen_list *l, const char *name, int line)
{
	struct seen *v;
	char *copy;

	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 16;

		v = reallocarray(l->v, cap, sizeof(*v));
		if (v == NULL)
			return -1;
		l->v = v;
		l->cap = cap;
	}
	copy = strdup(name);
	if (copy == NULL)
		return -1;
	l->v[l->n].name = copy;
	l->v[l->n].line = line;
	l->n++;
	return 0;
}

/* Line syntax. */

static bool is_blank(char c)
{
	return c == ' ' || c == '\t';
}

static char *trim(char *s)
{
	char *end;

	while (is_blank(*s))
		s++;
	end = s + strlen(s);
	while (end > s && is_blank(end[-1]))
		end--;
	*end = '\0';
	return s;
}

/* Cuts a comment that starts with '#' after a blank: "a #b" -> "a ". */
static void cut_comment(char *s)
{
	char *h;

	for (h = strchr(s, '#'); h != NULL; h = strchr(h + 1, '#')) {
		if (h > s && is_blank(h[-1])) {
			*h = '\0';
			return;
		}
	}
}

static bool valid_key_name(const char *k)
{
	if (*k == '\0')
		return false;
	for (; *k; k++)
		if (!(*k >= 'a' && *k <= 'z') && !(*k >= 'A' && *k <= 'Z') &&
		    !(*k >= '0' && *k <= '9') && *k != '_' && *k != '-')
			return false;
	return true;
}

/* A section name becomes a directory name (the default cache_dir). */
static bool valid_section_name(const char *s)
{
	const unsigned char *c;

	if (*s == '\0' || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
		return false;
	for (c = (const unsigned char *)s; *c; c++)
		if (*c < 0x20 || *c == 0x7f || *c == '/' || *c == '[' ||
		    *c == ']')
			return false;
	return true;
}

static int parse_section(struct parser *p, char *s)
{
	char *close = strchr(s, ']');
	const struct seen *dup;
	char *name;

	if (close == NULL)
		return line_err(p, p->lineno, "section header without ']'");
	if (close[1] != '\0')
		return line_err(p, p->lineno, "unexpected text after ']'");
	*close = '\0';
	name = trim(s + 1);
	if (!valid_section_name(name))
		return line_err(p, p->lineno,
				"bad section name '[%s]' (it must not be "
				"empty, '.', '..' or contain '/', '[', ']')",
				name);
	dup = seen_find(&p->sections, name);
	if (dup != NULL)
		return line_err(p, p->lineno,
				"duplicate section [%s] (first at line %d)",
				name, dup->line);
	if (seen_add(&p->sections, name, p->lineno) < 0)
		return nomem(p->err);
	seen_clear(&p->keys);
	p->in_section = 1;
	p->in_want = strcmp(name, p->want) == 0;
	if (p->in_want)
		p->want_line = p->lineno;
	return 0;
}

static int lookup_key(const char *name)
{
	int k;

	for (k = 0; k < K_COUNT; k++)
		if (strcmp(key_names[k], name) == 0)
			return k;
	return -1;
}

static int parse_pair(struct parser *p, char *s)
{
	char *eq = strchr(s, '=');
	const struct seen *dup;
	char *key, *value;
	int k;

	if (eq == NULL)
		return line_err(p, p->lineno,
				"expected 'key = value' or '[section]'");
	*eq = '\0';
	key = trim(s);
	value = trim(eq + 1);
	if (*key == '\0')
		return line_err(p, p->lineno, "missing key before '='");
	if (!valid_key_name(key))
		return line_err(p, p->lineno, "bad key '%s'", key);
	if (!p->in_section)
		return line_err(p, p->lineno,
				"key '%s' outside any section (add a "
				"[name] line above it)",
				key);
	dup = seen_find(&p->keys, key);
	if (dup != NULL)
		return line_err(p, p->lineno,
				"duplicate key '%s' (first at line %d)", key,
				dup->line);
	if (seen_add(&p->keys, key, p->lineno) < 0)
		return nomem(p->err);
	if (!p->in_want)
		return 0;
	k = lookup_key(key);
	if (k < 0)
		return line_err(p, p->lineno, "unknown key '%s'", key);
	p->val[k] = strdup(value);
	if (p->val[k] == NULL)
		return nomem(p->err);
	p->line[k] = p->lineno;
	return 0;
}

static int parse_line(struct parser *p, char *line, size_t len)
{
	char *s;

	if (memchr(line, '\0', len) != NULL)
		return line_err(p, p->lineno, "NUL byte in line");
	while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
		line[--len] = '\0';
	/* A UTF-8 byte order mark, as some editors write. */
	if (p->lineno == 1 && strncmp(line, "\xef\xbb\xbf", 3) == 0)
		line += 3;
	s = trim(line);
	if (*s == '\0' || *s == '#' || *s == ';')
		return 0;
	cut_comment(s);
	s = trim(s);
	if (*s == '[')
		return parse_section(p, s);
	return parse_pair(p, s);
}

static int parse_file(struct parser *p)
{
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	FILE *f;
	int rc = 0;

	f = fopen(p->path, "re");
	if (f == NULL)
		return line_err(p, 0, "cannot open: %s", strerror(errno));
	if (fstat(fileno(f), &p->st) != 0) {
		rc = line_err(p, 0, "cannot stat: %s", strerror(errno));
		goto free_line;
	}
	while ((len = getline(&line, &cap, f)) >= 0) {
		p->lineno++;
		rc = parse_line(p, line, (size_t)len);
		if (rc != 0)
			goto free_line;
	}
	if (ferror(f))
		rc = line_err(p, 0, "cannot read: %s", strerror(errno));
free_line:
	free(line);
	fclose(f);
	return rc;
}

/* Values of the requested section. */

static int parse_port(struct parser *p, enum cfg_key k, const char *s,
		      int *port)
{
	long v = 0;

	if (*s == '\0')
		return key_err(p, k, "empty port after ':'");
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return key_err(p, k, "bad port (digits only)");
		v = v * 10 + (*s - '0');
		if (v > 65535)
			break;
	}
	if (v < 1 || v > 65535)
		return key_err(p, k, "port out of range (1-65535)");
	*port = (int)v;
	return 0;
}

static bool valid_host_name(const char *h)
{
	const char *c;

	if (*h == '\0' || *h == '.' || *h == '-' || strstr(h, "..") != NULL ||
	    h[strlen(h) - 1] == '.')
		return false;
	for (c = h; *c; c++)
		if (!(*c >= 'a' && *c <= 'z') && !(*c >= 'A' && *c <= 'Z') &&
		    !(*c >= '0' && *c <= '9') && *c != '.' && *c != '-' &&
		    *c != '_')
			return false;
	return true;
}

/* Splits "host[:port]" or "[v6]:port" (modified in place). */
static int parse_authority(struct parser *p, enum cfg_key k, char *a,
			   char **host, const char **port)
{
	struct in6_addr addr;
	char *colon, *close;

	*host = NULL;
	*port = NULL;
	if (*a == '[') {
		close = strchr(a, ']');
		if (close == NULL)
			return key_err(p, k, "IPv6 address without ']'");
		*close = '\0';
		*host = a + 1;
		if (inet_pton(AF_INET6, *host, &addr) != 1)
			return key_err(p, k, "bad IPv6 address");
		if (close[1] == ':')
			*port = close + 2;
		else if (close[1] != '\0')
			return key_err(p, k, "unexpected text after ']'");
		return 0;
	}
	colon = strchr(a, ':');
	if (colon != NULL) {
		*colon = '\0';
		*port = colon + 1;
	}
	*host = a;
	if (**host == '\0')
		return key_err(p, k, "missing host name");
	if (!valid_host_name(*host))
		return key_err(p, k, "bad host name");
	return 0;
}

static const struct scheme *find_scheme(const char *url, size_t len)
{
	size_t i;

	for (i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++)
		if (strlen(schemes[i].name) == len &&
		    strncasecmp(schemes[i].name, url, len) == 0)
			return &schemes[i];
	return NULL;
}

/* Checks what follows host[:port]: nothing or a single '/'. */
static int check_url_tail(struct parser *p, enum cfg_key k, const char *t)
{
	if (*t == '\0' || strcmp(t, "/") == 0)
		return 0;
	if (*t == '?')
		return key_err(p, k,
			       "a query ('?...') is not allowed in the URL");
	if (*t == '#')
		return key_err(p, k,
			       "a fragment ('#...') is not allowed in "
			       "the URL");
	return key_err(p, k,
		       "a path is not allowed in the URL (only "
		       "scheme://host[:port])");
}

static const char *scheme_hint(enum mfs_proto proto)
{
	switch (proto) {
	case MFS_PROTO_IMAP:
		return "imap:// or imaps://";
	case MFS_PROTO_POP3:
		return "pop3:// or pop3s://";
	case MFS_PROTO_SMTP:
		return "smtp:// or smtps://";
	}
	return "";
}

/* Parses the URL of key k, which must be of protocol `proto`. */
static int parse_url(struct parser *p, enum cfg_key k, enum mfs_proto proto,
		     struct mfs_server *srv)
{
	const char *url = p->val[k], *sep, *port;
	const struct scheme *sc;
	char *auth, *host;
	size_t alen;
	int rc;

	sep = strstr(url, "://");
	if (sep == NULL || sep == url)
		return line_err(p, p->line[k], "%s: '%s' is not a URL (use %s)",
				key_names[k], url, scheme_hint(proto));
	sc = find_scheme(url, (size_t)(sep - url));
	if (sc == NULL || sc->proto != proto)
		return line_err(p, p->line[k],
				"%s: scheme '%.*s://' not allowed here (use "
				"%s)",
				key_names[k], (int)(sep - url), url,
				scheme_hint(proto));
	sep += 3;
	alen = strcspn(sep, "/?#");
	auth = strndup(sep, alen);
	if (auth == NULL)
		return nomem(p->err);
	if (strchr(auth, '@') != NULL) {
		rc = key_err(p, k,
			     "user info ('name@') is not allowed in the "
			     "URL; use the 'user' key");
		goto free_auth;
	}
	rc = check_url_tail(p, k, sep + alen);
	if (rc != 0)
		goto free_auth;
	rc = parse_authority(p, k, auth, &host, &port);
	if (rc != 0)
		goto free_auth;
	srv->port = sc->port;
	if (port != NULL) {
		rc = parse_port(p, k, port, &srv->port);
		if (rc != 0)
			goto free_auth;
	}
	srv->host = strdup(host);
	if (srv->host == NULL) {
		rc = nomem(p->err);
		goto free_auth;
	}
	srv->proto = sc->proto;
	srv->tls = sc->tls;
free_auth:
	free(auth);
	return rc;
}

/* A whole number of seconds from 1 to max for key, else def. */
static int parse_seconds(struct parser *p, int key, int def, long max,
			 int *out)
{
	const char *s = p->val[key];
	char msg[64];
	long v = 0;

	*out = def;
	if (s == NULL)
		return 0;
	snprintf(msg, sizeof(msg), "not a number of seconds (1-%ld)", max);
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return key_err(p, key, msg);
		v = v * 10 + (*s - '0');
		if (v > max)
			break;
	}
	if (v < 1 || v > max) {
		snprintf(msg, sizeof(msg), "out of range (1-%ld seconds)", max);
		return key_err(p, key, msg);
	}
	*out = (int)v;
	return 0;
}

static int parse_timeout(struct parser *p, int *timeout)
{
	return parse_seconds(p, K_TIMEOUT, TIMEOUT_DEFAULT, TIMEOUT_MAX,
			     timeout);
}

static int parse_auth(struct parser *p, enum mfs_auth *auth)
{
	static const struct {
		const char *name;
		enum mfs_auth auth;
	} kinds[] = {
	    {"password", MFS_AUTH_PASSWORD},
	    {"xoauth2", MFS_AUTH_XOAUTH2},
	    {"oauthbearer", MFS_AUTH_OAUTHBEARER},
	};
	const char *v = p->val[K_AUTH];
	size_t i;

	*auth = MFS_AUTH_PASSWORD;
	if (v == NULL)
		return 0;
	for (i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
		if (strcasecmp(v, kinds[i].name) == 0) {
			*auth = kinds[i].auth;
			return 0;
		}
	}
	return key_err(p, K_AUTH,
		       "must be 'password', 'xoauth2' or 'oauthbearer'");
}

/* "yes" or "no" for key k, else def. */
static int parse_yes_no(struct parser *p, enum cfg_key k, int def, int *out)
{
	const char *v = p->val[k];

	*out = def;
	if (v == NULL)
		return 0;
	if (strcasecmp(v, "yes") == 0)
		*out = 1;
	else if (strcasecmp(v, "no") == 0)
		*out = 0;
	else
		return key_err(p, k, "must be 'yes' or 'no'");
	return 0;
}

/* A byte count: digits and an optional suffix K, M or G (1024-based). */
static int parse_cache_size(struct parser *p, unsigned long long *out)
{
	const char *s = p->val[K_CACHE_SIZE];
	unsigned long long v = 0, unit = 1;
	const char *c;

	*out = CACHE_SIZE_DEFAULT;
	if (s == NULL)
		return 0;
	for (c = s; *c >= '0' && *c <= '9'; c++) {
		if (v > (~0ULL - 9) / 10)
			return key_err(p, K_CACHE_SIZE, "too large");
		v = v * 10 + (unsigned long long)(*c - '0');
	}
	if (c == s)
		return key_err(p, K_CACHE_SIZE,
			       "not a size (digits with an optional K, M "
			       "or G)");
	if (*c == 'K' || *c == 'k')
		unit = 1ULL << 10;
	else if (*c == 'M' || *c == 'm')
		unit = 1ULL << 20;
	else if (*c == 'G' || *c == 'g')
		unit = 1ULL << 30;
	if (unit != 1)
		c++;
	if (*c != '\0')
		return key_err(p, K_CACHE_SIZE,
			       "not a size (digits with an optional K, M "
			       "or G)");
	if (v > ~0ULL / unit)
		return key_err(p, K_CACHE_SIZE, "too large");
	v *= unit;
	if (v < CACHE_SIZE_MIN)
		return key_err(p, K_CACHE_SIZE, "too small (at least 1M)");
	*out = v;
	return 0;
}

static int parse_connections(struct parser *p, int *out)
{
	const char *s = p->val[K_CONNECTIONS];
	long v = 0;

	*out = CONNECTIONS_DEFAULT;
	if (s == NULL)
		return 0;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return key_err(p, K_CONNECTIONS,
				       "not a number (1-16)");
		v = v * 10 + (*s - '0');
		if (v > CONNECTIONS_MAX)
			break;
	}
	if (v < 1 || v > CONNECTIONS_MAX)
		return key_err(p, K_CONNECTIONS, "out of range (1-16)");
	*out = (int)v;
	return 0;
}

/* The keys that are neither URLs, paths nor durations. */
static int parse_options(struct parser *p, struct mfs_account *a)
{
	int rc;

	rc = parse_auth(p, &a->auth);
	if (rc == 0)
		rc = parse_yes_no(p, K_APOP, 0, &a->apop);
	if (rc == 0)
		rc = parse_yes_no(p, K_ALLOW_EXPIRE, 0, &a->allow_expire);
	if (rc == 0)
		rc = parse_cache_size(p, &a->cache_size);
	if (rc == 0)
		rc = parse_connections(p, &a->connections);
	if (rc == 0)
		rc = parse_yes_no(p, K_COMPRESS, 1, &a->compress);
	return rc;
}

/* An environment variable that holds an absolute path, else NULL. */
static const char *env_dir(const char *name)
{
	const char *v = getenv(name);

	return v != NULL && v[0] == '/' ? v : NULL;
}

/* Expands "~" and "~/..." in the value of key k into *out (malloc'd). */
static int expand_path(struct parser *p, enum cfg_key k, char **out)
{
	const char *v = p->val[k], *home;
	int n;

	*out = NULL;
	if (v[0] == '~') {
		if (v[1] != '\0' && v[1] != '/')
			return key_err(p, k,
				       "only '~/' is expanded, not "
				       "'~user'");
		home = env_dir("HOME");
		if (home == NULL)
			return key_err(p, k,
				       "'~' used but HOME is not set "
				       "to an absolute path");
		n = asprintf(out, "%s%s", home, v + 1);
	} else if (v[0] == '/') {
		*out = strdup(v);
		n = *out == NULL ? -1 : 0;
	} else {
		return key_err(p, k,
			       "must be an absolute path or start with "
			       "'~/'");
	}
	if (n < 0) {
		*out = NULL;
		return nomem(p->err);
	}
	return 0;
}

static int default_cache_dir(struct parser *p, char **out)
{
	const char *xdg = env_dir("XDG_CACHE_HOME");
	const char *home = env_dir("HOME");
	int n;

	if (xdg != NULL)
		n = asprintf(out, "%s/mailfs/%s", xdg, p->want);
	else if (home != NULL)
		n = asprintf(out, "%s/.cache/mailfs/%s", home, p->want);
	else
		return line_err(p, p->want_line,
				"[%s]: no cache_dir, and neither "
				"XDG_CACHE_HOME nor HOME is set",
				p->want);
	if (n < 0) {
		*out = NULL;
		return nomem(p->err);
	}
	return 0;
}

static int take(struct parser *p, enum cfg_key k, char **out)
{
	*out = p->val[k];
	p->val[k] = NULL;
	return 0;
}

static int check_presence(struct parser *p)
{
	int k;

	for (k = 0; k < K_COUNT; k++)
		if (p->val[k] != NULL && p->val[k][0] == '\0')
			return key_err(p, k, "empty value");
	if (p->val[K_IMAP] != NULL && p->val[K_POP3] != NULL)
		return line_err(p,
				p->line[K_IMAP] > p->line[K_POP3]
				    ? p->line[K_IMAP]
				    : p->line[K_POP3],
				"both imap and pop3 are set; an account has "
				"one of them");
	if (p->val[K_IMAP] == NULL && p->val[K_POP3] == NULL)
		return line_err(p, p->want_line,
				"[%s]: neither imap nor pop3 is set", p->want);
	if (p->val[K_PASSWORD_COMMAND] != NULL &&
	    p->val[K_PASSWORD_FILE] != NULL)
		return line_err(p,
				p->line[K_PASSWORD_COMMAND] >
					p->line[K_PASSWORD_FILE]
				    ? p->line[K_PASSWORD_COMMAND]
				    : p->line[K_PASSWORD_FILE],
				"both password_command and password_file are "
				"set; use one");
	if (p->val[K_PASSWORD_COMMAND] == NULL &&
	    p->val[K_PASSWORD_FILE] == NULL)
		return line_err(p, p->want_line,
				"[%s]: no password source (set "
				"password_command or password_file)",
				p->want);
	if (p->val[K_USER] == NULL)
		return line_err(p, p->want_line, "[%s]: no user", p->want);
	return 0;
}

/* Applies "tls = ..." to the servers already parsed. */
static int apply_tls(struct parser *p, struct mfs_account *a)
{
	const char *v = p->val[K_TLS];

	if (v == NULL || strcasecmp(v, "required") == 0)
		return 0;
	if (strcasecmp(v, "none") != 0)
		return key_err(p, K_TLS, "must be 'none' or 'required'");
	if (a->store.tls == MFS_TLS_IMPLICIT)
		return line_err(p, p->line[K_TLS],
				"tls = none contradicts the TLS URL of '%s' "
				"(line %d); use a plain scheme such as "
				"imap:// or drop 'tls = none'",
				key_names[p->val[K_IMAP] ? K_IMAP : K_POP3],
				p->line[p->val[K_IMAP] ? K_IMAP : K_POP3]);
	if (a->has_smtp && a->smtp.tls == MFS_TLS_IMPLICIT)
		return line_err(p, p->line[K_TLS],
				"tls = none contradicts the TLS URL of 'smtp' "
				"(line %d); use smtp:// or drop 'tls = none'",
				p->line[K_SMTP]);
	a->store.tls = MFS_TLS_NONE;
	if (a->has_smtp)
		a->smtp.tls = MFS_TLS_NONE;
	return 0;
}

static int build_paths(struct parser *p, struct mfs_account *a)
{
	int rc = 0;

	if (p->val[K_PASSWORD_FILE] != NULL)
		rc = expand_path(p, K_PASSWORD_FILE, &a->password_file);
	if (rc == 0 && p->val[K_CA_FILE] != NULL)
		rc = expand_path(p, K_CA_FILE, &a->ca_file);
	if (rc == 0 && p->val[K_CACHE_DIR] != NULL)
		rc = expand_path(p, K_CACHE_DIR, &a->cache_dir);
	else if (rc == 0)
		rc = default_cache_dir(p, &a->cache_dir);
	return rc;
}

/*
 * password_command runs as the user: a config file that someone else may
 * write (owned by another user than the user or root, or writable by group
 * or others) could make it run anything.
 */
static int check_command_file(struct parser *p)
{
	int line = p->line[K_PASSWORD_COMMAND];
	uid_t me = geteuid();

	if (p->val[K_PASSWORD_COMMAND] == NULL)
		return 0;
	if (p->st.st_uid != me && p->st.st_uid != 0)
		return line_err(p, line,
				"password_command in a file owned by uid %u, "
				"not by you (uid %u) or root; run: chown %u %s",
				(unsigned)p->st.st_uid, (unsigned)me,
				(unsigned)me, p->path);
	if ((p->st.st_mode & 022) != 0)
		return line_err(p, line,
				"password_command in a file that others may "
				"write (mode %04o); run: chmod go-w %s",
				(unsigned)(p->st.st_mode & 07777), p->path);
	return 0;
}

/* Fills *a from the values of the requested section; *a owns what it took
 * even on error. */
static int build_account(struct parser *p, struct mfs_account *a)
{
	int rc;

	if (p->want_line == 0)
		return line_err(p, 0, "no section [%s]", p->want);
	rc = check_presence(p);
	if (rc == 0)
		rc = check_command_file(p);
	if (rc != 0)
		return rc;
	a->name = strdup(p->want);
	a->path = strdup(p->path);
	if (a->name == NULL || a->path == NULL)
		return nomem(p->err);
	if (p->val[K_IMAP] != NULL)
		rc = parse_url(p, K_IMAP, MFS_PROTO_IMAP, &a->store);
	else
		rc = parse_url(p, K_POP3, MFS_PROTO_POP3, &a->store);
	if (rc == 0 && p->val[K_SMTP] != NULL) {
		rc = parse_url(p, K_SMTP, MFS_PROTO_SMTP, &a->smtp);
		a->has_smtp = rc == 0;
	}
	if (rc == 0)
		rc = apply_tls(p, a);
	if (rc == 0)
		rc = parse_timeout(p, &a->timeout);
	if (rc == 0)
		rc = parse_seconds(p, K_RETRY_MIN, 60, 86400, &a->retry_min);
	if (rc == 0)
		rc = parse_seconds(p, K_RETRY_MAX, 3600, 86400, &a->retry_max);
	if (rc == 0)
		rc = parse_seconds(p, K_QUEUE_LIFETIME, 7 * 86400,
				   365L * 86400, &a->queue_lifetime);
	if (rc == 0)
		rc = parse_seconds(p, K_REFRESH,
				   a->store.proto == MFS_PROTO_POP3 ? 60 : 5,
				   86400, &a->refresh);
	if (rc == 0)
		rc = parse_options(p, a);
	if (rc == 0)
		rc = build_paths(p, a);
	if (rc != 0)
		return rc;
	take(p, K_USER, &a->user);
	take(p, K_PASSWORD_COMMAND, &a->password_command);
	take(p, K_FROM, &a->from);
	take(p, K_SENT_FOLDER, &a->sent_folder);
	take(p, K_PREFETCH, &a->prefetch);
	return 0;
}

static void parser_free(struct parser *p)
{
	int k;

	for (k = 0; k < K_COUNT; k++)
		free(p->val[k]);
	seen_free(&p->sections);
	seen_free(&p->keys);
}

int mfs_config_load(const char *path, const char *account,
		    struct mfs_account *acct, struct mfs_err *err)
{
	struct parser p = {.path = path, .want = account, .err = err};
	struct mfs_account a = {0};
	int rc;

	memset(acct, 0, sizeof(*acct));
	rc = parse_file(&p);
	if (rc == 0)
		rc = build_account(&p, &a);
	parser_free(&p);
	if (rc != 0) {
		mfs_account_free(&a);
		return rc;
	}
	*acct = a;
	mfs_err_clear(err);
	return 0;
}

void mfs_account_free(struct mfs_account *acct)
{
	if (acct == NULL)
		return;
	free(acct->name);
	free(acct->path);
	free(acct->store.host);
	free(acct->smtp.host);
	free(acct->user);
	free(acct->password_command);
	free(acct->password_file);
	free(acct->from);
	free(acct->sent_folder);
	free(acct->prefetch);
	free(acct->ca_file);
	free(acct->cache_dir);
	memset(acct, 0, sizeof(*acct));
}

char *mfs_config_default_path(void)
{
	const char *xdg = env_dir("XDG_CONFIG_HOME");
	const char *home = env_dir("HOME");
	char *path;
	int n;

	if (xdg != NULL)
		n = asprintf(&path, "%s/mailfs/config", xdg);
	else if (home != NULL)
		n = asprintf(&path, "%s/.config/mailfs/config", home);
	else
		return NULL;
	return n < 0 ? NULL : path;
}

/* The password. */

/* Turns the first line of buf[0..len) into a malloc'd password. */
static int first_line(const struct mfs_account *acct, const char *src,
		      const char *buf, size_t len, char **password,
		      struct mfs_err *err)
{
	const char *nl = memchr(buf, '\n', len);
	size_t n = nl != NULL ? (size_t)(nl - buf) : len;

	if (memchr(buf, '\0', n) != NULL)
		return mfs_err_set(err, MFS_E_CONFIG,
				   "%s: [%s] %s: the password contains a NUL "
				   "byte",
				   acct->path, acct->name, src);
	while (n > 0 && buf[n - 1] == '\r')
		n--;
	if (n == 0)
		return mfs_err_set(err, MFS_E_CONFIG,
				   "%s: [%s] %s: the first line is empty",
				   acct->path, acct->name, src);
	*password = strndup(buf, n);
	if (*password == NULL)
		return nomem(err);
	return 0;
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * The program and arguments of password_command. A value with a shell
 * metacharacter runs as /bin/sh -c VALUE; any other value is split on
 * blanks and run directly, so that a plain "pass show mail/work" needs no
 * shell. Built before fork: the child may not allocate.
 */
struct command {
	const char *file; /* borrowed: argv[0] or "/bin/sh" */
	char **argv;	  /* owned array; the words point into buf or cmd */
	char *buf;	  /* owned: the split copy of the value, or NULL */
	int shell;	  /* 1: run through /bin/sh -c */
};

static bool needs_shell(const char *cmd)
{
	return strpbrk(cmd, "|&;<>()$`\\\"'*?[]#~=%{}\n") != NULL;
}

static int command_build(const char *cmd, struct command *c)
{
	size_t n = 0, i = 0;
	char *w, *save = NULL;

	memset(c, 0, sizeof(*c));
	if (needs_shell(cmd)) {
		c->argv = calloc(4, sizeof(*c->argv));
		if (c->argv == NULL)
			return -1;
		c->argv[0] = (char *)"sh";
		c->argv[1] = (char *)"-c";
		c->argv[2] = (char *)cmd;
		c->file = "/bin/sh";
		c->shell = 1;
		return 0;
	}
	c->buf = strdup(cmd);
	if (c->buf == NULL)
		return -1;
	for (w = c->buf; *w; w++)
		if (!is_blank(*w) && (w == c->buf || is_blank(w[-1])))
			n++;
	c->argv = calloc(n + 1, sizeof(*c->argv));
	if (c->argv == NULL) {
		free(c->buf);
		c->buf = NULL;
		return -1;
	}
	for (w = strtok_r(c->buf, " \t", &save); w != NULL && i < n;
	     w = strtok_r(NULL, " \t", &save))
		c->argv[i++] = w;
	c->file = c->argv[0];
	return c->file == NULL ? -1 : 0;
}

static void command_free(struct command *c)
{
	free(c->argv);
	free(c->buf);
	memset(c, 0, sizeof(*c));
}

/*
 * Runs in the child between fork and exec: only async-signal-safe calls
 * (glibc's execvp allocates nothing).
 * in and out are above 2 so that dup2 always clears their close-on-exec.
 */
static void __attribute__((noreturn))
exec_command(const struct command *c, int in, int out, int max_fd)
{
	sigset_t none;
	int fd;

	if (dup2(in, 0) < 0 || dup2(out, 1) < 0)
		_exit(126);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	signal(SIGPIPE, SIG_DFL);
	if (close_range(3, ~0U, 0) < 0)
		for (fd = 3; fd < max_fd; fd++)
			close(fd);
	if (c->shell)
		execv(c->file, c->argv);
	else
		execvp(c->file, c->argv);
	_exit(errno == ENOENT ? 127 : 126);
}

/* Moves fd above 2 (stdin/stdout/stderr), close-on-exec; -1 on error. */
static int fd_above_stdio(int fd)
{
	int moved;

	if (fd < 0 || fd > 2)
		return fd;
	moved = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	close(fd);
	return moved;
}

static int max_open_fds(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY ||
	    rl.rlim_cur > 1048576)
		return 1048576;
	return (int)rl.rlim_cur;
}

/* Starts the command with stdout to a pipe; *out is its read end. */
static int spawn_command(const struct mfs_account *acct, pid_t *pid, int *out,
			 struct mfs_err *err)
{
	int pfd[2], devnull, max_fd = max_open_fds(), rc = 0;
	struct command cmd;

	if (command_build(acct->password_command, &cmd) < 0)
		return nomem(err);
	if (pipe2(pfd, O_CLOEXEC) < 0) {
		rc = mfs_err_set(err, MFS_E_CONFIG,
				 "%s: [%s] password_command: pipe: %s",
				 acct->path, acct->name, strerror(errno));
		goto free_cmd;
	}
	pfd[0] = fd_above_stdio(pfd[0]);
	pfd[1] = fd_above_stdio(pfd[1]);
	devnull = fd_above_stdio(open("/dev/null", O_RDONLY | O_CLOEXEC));
	if (pfd[0] < 0 || pfd[1] < 0 || devnull < 0) {
		rc = mfs_err_set(err, MFS_E_CONFIG,
				 "%s: [%s] password_command: %s", acct->path,
				 acct->name, strerror(errno));
		goto close_fds;
	}
	*pid = fork();
	if (*pid == 0)
		exec_command(&cmd, devnull, pfd[1], max_fd);
	if (*pid < 0) {
		rc = mfs_err_set(err, MFS_E_CONFIG,
				 "%s: [%s] password_command: fork: %s",
				 acct->path, acct->name, strerror(errno));
		goto close_fds;
	}
	*out = pfd[0];
	pfd[0] = -1;
close_fds:
	if (devnull >= 0)
		close(devnull);
	if (pfd[1] >= 0)
		close(pfd[1]);
	if (pfd[0] >= 0)
		close(pfd[0]);
free_cmd:
	command_free(&cmd);
	return rc;
}

/*
 * Reads fd to its end before deadline, keeping the first `cap` bytes in buf
 * (the rest is read and dropped so that the writer never blocks or gets
 * SIGPIPE). Returns 0, ETIMEDOUT, or an errno.
 */
static int drain(int fd, long long deadline, char *buf, size_t cap, size_t *len)
{
	struct pollfd pfd = {.fd = fd, .events = POLLIN};
	char junk[512];
	long long left;
	ssize_t n;
	int rc = 0;

	*len = 0;
	for (;;) {
		left = deadline - now_ms();
		if (left <= 0) {
			rc = ETIMEDOUT;
			break;
		}
		n = poll(&pfd, 1, left > 60000 ? 60000 : (int)left);
		if (n < 0 && errno != EINTR) {
			rc = errno;
			break;
		}
		if (n <= 0)
			continue;
		if (*len < cap)
			n = read(fd, buf + *len, cap - *len);
		else
			n = read(fd, junk, sizeof(junk));
		if (n == 0)
			break;
		if (n < 0 && errno != EINTR && errno != EAGAIN) {
			rc = errno;
			break;
		}
		if (n > 0 && *len < cap)
			*len += (size_t)n;
	}
	explicit_bzero(junk, sizeof(junk));
	return rc;
}

/* Waits for pid until deadline, then kills it. Returns 0 or ETIMEDOUT. */
static int reap(pid_t pid, long long deadline, int *status)
{
	const struct timespec tick = {0, 10 * 1000 * 1000};
	pid_t r;

	for (;;) {
		r = waitpid(pid, status, WNOHANG);
		if (r == pid)
			return 0;
		if (r < 0 && errno != EINTR)
			return errno;
		if (now_ms() >= deadline)
			break;
		nanosleep(&tick, NULL);
	}
	kill(pid, SIGKILL);
	while (waitpid(pid, status, 0) < 0 && errno == EINTR)
		;
	return ETIMEDOUT;
}

static int status_err(const struct mfs_account *acct, int status,
		      struct mfs_err *err)
{
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	if (WIFEXITED(status))
		return mfs_err_set(
		    err, MFS_E_CONFIG,
		    "%s: [%s] password_command exited with "
		    "status %d%s",
		    acct->path, acct->name, WEXITSTATUS(status),
		    WEXITSTATUS(status) == 127 ? " (command not found?)" : "");
	return mfs_err_set(err, MFS_E_CONFIG,
			   "%s: [%s] password_command was killed by signal %d",
			   acct->path, acct->name,
			   WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

static int password_from_command(const struct mfs_account *acct,
				 char **password, struct mfs_err *err)
{
	int timeout = acct->timeout > 0 ? acct->timeout : TIMEOUT_DEFAULT;
	long long deadline = now_ms() + (long long)timeout * 1000;
	char buf[PASSWORD_MAX];
	int fd = -1, rc, rd, wt, status = 0;
	size_t len = 0;
	pid_t pid = -1;

	rc = spawn_command(acct, &pid, &fd, err);
	if (rc != 0)
		return rc;
	rd = drain(fd, deadline, buf, sizeof(buf), &len);
	close(fd);
	/* After a failed read the deadline still bounds the wait. */
	wt = reap(pid, rd == 0 || rd == ETIMEDOUT ? deadline : 0, &status);
	if (rd == ETIMEDOUT || (rd == 0 && wt == ETIMEDOUT)) {
		rc = mfs_err_set(err, MFS_E_CONFIG,
				 "%s: [%s] password_command timed out after "
				 "%d s and was killed",
				 acct->path, acct->name, timeout);
		goto wipe_buf;
	}
	if (rd != 0 || wt != 0) {
		rc = mfs_err_set(
		    err, MFS_E_CONFIG, "%s: [%s] password_command: %s: %s",
		    acct->path, acct->name, rd != 0 ? "read" : "wait",
		    strerror(rd != 0 ? rd : wt));
		goto wipe_buf;
	}
	rc = status_err(acct, status, err);
	if (rc != 0)
		goto wipe_buf;
	if (len == sizeof(buf) && memchr(buf, '\n', len) == NULL)
		rc = mfs_err_set(err, MFS_E_CONFIG,
				 "%s: [%s] password_command: first line "
				 "longer than %d bytes",
				 acct->path, acct->name, PASSWORD_MAX - 1);
	else
		rc = first_line(acct, "password_command", buf, len, password,
				err);
wipe_buf:
	explicit_bzero(buf, sizeof(buf));
	return rc;
}

static int check_password_file(const struct mfs_account *acct, int fd,
			       struct mfs_err *err)
{
	const char *pf = acct->password_file;
	struct stat st;

	if (fstat(fd, &st) < 0)
		return mfs_err_set(err, MFS_E_CONFIG,
				   "%s: [%s] password_file %s: %s", acct->path,
				   acct->name, pf, strerror(errno));
	if (!S_ISREG(st.st_mode))
		return mfs_err_set(err, MFS_E_CONFIG,
				   "%s: [%s] password_file %s is not a regular "
				   "file",
				   acct->path, acct->name, pf);
	if (st.st_uid != geteuid())
		return mfs_err_set(err, MFS_E_CONFIG,
				   "%s: [%s] password_file %s is owned by uid "
				   "%u, not by you (uid %u); run: chown %u %s",
				   acct->path, acct->name, pf,
				   (unsigned)st.st_uid, (unsigned)geteuid(),
				   (unsigned)geteuid(), pf);
	if (st.st_mode & 077)
		return mfs_err_set(err, MFS_E_CONFIG,
				   "%s: [%s] password_file %s has mode %04o, "
				   "open to group or others; run: chmod 600 %s",
				   acct->path, acct->name, pf,
				   (unsigned)(st.st_mode & 07777), pf);
	return 0;
}

static int password_from_file(const struct mfs_account *acct, char **password,
			      struct mfs_err *err)
{
	const char *pf = acct->password_file;
	char buf[PASSWORD_MAX];
	size_t len = 0;
	ssize_t n;
	int fd, rc;

	/* O_NONBLOCK: a FIFO planted at the path must not hang the open. */
	fd =
	    open(pf, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0 && errno == ELOOP)
		return mfs_err_set(err, MFS_E_CONFIG,
				   "%s: [%s] password_file %s is a symbolic "
				   "link; name the file itself",
				   acct->path, acct->name, pf);
	if (fd < 0)
		return mfs_err_set(err, MFS_E_CONFIG,
				   "%s: [%s] password_file %s: %s", acct->path,
				   acct->name, pf, strerror(errno));
	rc = check_password_file(acct, fd, err);
	if (rc != 0)
		goto close_fd;
	while (len < sizeof(buf) && memchr(buf, '\n', len) == NULL) {
		n = read(fd, buf + len, sizeof(buf) - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = mfs_err_set(
			    err, MFS_E_CONFIG, "%s: [%s] password_file %s: %s",
			    acct->path, acct->name, pf, strerror(errno));
			goto wipe_buf;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	if (len == sizeof(buf) && memchr(buf, '\n', len) == NULL)
		rc = mfs_err_set(err, MFS_E_CONFIG,
				 "%s: [%s] password_file %s: first line longer "
				 "than %d bytes",
				 acct->path, acct->name, pf, PASSWORD_MAX - 1);
	else
		rc = first_line(acct, "password_file", buf, len, password, err);
wipe_buf:
	explicit_bzero(buf, sizeof(buf));
close_fd:
	close(fd);
	return rc;
}

int mfs_password_get(const struct mfs_account *acct, char **password,
		     struct mfs_err *err)
{
	*password = NULL;
	if (acct->password_command != NULL)
		return password_from_command(acct, password, err);
	if (acct->password_file != NULL)
		return password_from_file(acct, password, err);
	return mfs_err_set(err, MFS_E_CONFIG, "%s: [%s] no password source",
			   acct->path, acct->name);
}

void mfs_password_free(char *password)
{
	if (password == NULL)
		return;
	explicit_bzero(password, strlen(password));
	free(password);
}
