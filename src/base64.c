/*
 * base64.c - base64 encoding and decoding (see base64.h).
 */
#include "base64.h"

#include <stdlib.h>

static const char b64_chars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int mfs_b64_value(int c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

size_t mfs_b64_encode_to(char *out, const void *p, size_t n)
{
	const unsigned char *in = p;
	size_t i, o = 0;
	unsigned v;

	for (i = 0; i < n; i += 3) {
		v = (unsigned)in[i] << 16;
		if (i + 1 < n)
			v |= (unsigned)in[i + 1] << 8;
		if (i + 2 < n)
			v |= in[i + 2];
		out[o++] = b64_chars[v >> 18];
		out[o++] = b64_chars[(v >> 12) & 63];
		out[o++] = i + 1 < n ? b64_chars[(v >> 6) & 63] : '=';
		out[o++] = i + 2 < n ? b64_chars[v & 63] : '=';
	}
	out[o] = '\0';
	return o;
}

char *mfs_b64_encode(const void *p, size_t n)
{
	char *out;

	if (n > (size_t)(1 << 30))
		return NULL;
	out = malloc(MFS_B64_ENCODED_LEN(n) + 1);
	if (out != NULL)
		mfs_b64_encode_to(out, p, n);
	return out;
}

size_t mfs_b64_decode(struct mfs_b64_dec *d, const char *in, size_t len,
		      unsigned char *out)
{
	size_t i, o = 0;
	int v;

	for (i = 0; i < len; i++) {
		if (in[i] == '=') {
			/* ends a group of two or three; data may follow */
			if (d->nbits != 6) {
				d->acc = 0;
				d->nbits = 0;
			}
			continue;
		}
		v = mfs_b64_value((unsigned char)in[i]);
		if (v < 0)
			continue;
		d->acc = (d->acc << 6) | (unsigned)v;
		d->nbits += 6;
		if (d->nbits >= 8) {
			d->nbits -= 8;
			out[o++] = (unsigned char)(d->acc >> d->nbits);
			d->acc &= (1u << d->nbits) - 1;
		}
	}
	return o;
}

int mfs_b64_is_strict(const char *in, size_t len)
{
	size_t i;

	for (i = 0; i < len && in[i] != '='; i++) {
		if (mfs_b64_value((unsigned char)in[i]) < 0)
			return 0;
	}
	if (i % 4 == 1)
		return 0;
	for (; i < len; i++) {
		if (in[i] != '=')
			return 0;
	}
	return 1;
}
