/*
 * sasl.c - SASL initial responses (see sasl.h).
 */
#include "sasl.h"

#include "base64.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Base64 of the len bytes at raw, which are wiped and freed. */
static char *encode_secret(char *raw, size_t len)
{
	char *out;

	if (raw == NULL)
		return NULL;
	out = mfs_b64_encode(raw, len);
	explicit_bzero(raw, len);
	free(raw);
	return out;
}

char *mfs_sasl_plain(const char *user, const char *password)
{
	size_t ul = strlen(user), pl = strlen(password);
	char *raw = malloc(ul + pl + 2);

	if (raw == NULL)
		return NULL;
	raw[0] = '\0';
	memcpy(raw + 1, user, ul);
	raw[ul + 1] = '\0';
	memcpy(raw + ul + 2, password, pl);
	return encode_secret(raw, ul + pl + 2);
}

char *mfs_sasl_xoauth2(const char *user, const char *token)
{
	char *raw = NULL;
	int len = asprintf(&raw, "user=%s\001auth=Bearer %s\001\001", user,
			   token);

	if (len < 0)
		return NULL;
	return encode_secret(raw, (size_t)len);
}

/* USER with ',' and '=' escaped as RFC 5801 (gs2 authzid) asks. */
static char *gs2_name(const char *user)
{
	char *out = malloc(3 * strlen(user) + 1), *o = out;

	if (out == NULL)
		return NULL;
	for (; *user != '\0'; user++) {
		if (*user == ',')
			o = stpcpy(o, "=2C");
		else if (*user == '=')
			o = stpcpy(o, "=3D");
		else
			*o++ = *user;
	}
	*o = '\0';
	return out;
}

char *mfs_sasl_oauthbearer(const char *user, const char *host, int port,
			   const char *token)
{
	char *name = gs2_name(user), *raw = NULL;
	int len;

	if (name == NULL)
		return NULL;
	len = asprintf(&raw,
		       "n,a=%s,\001host=%s\001port=%d\001auth=Bearer %s\001\001",
		       name, host, port, token);
	free(name);
	if (len < 0)
		return NULL;
	return encode_secret(raw, (size_t)len);
}

void mfs_sasl_free(char *s)
{
	if (s == NULL)
		return;
	explicit_bzero(s, strlen(s));
	free(s);
}
