/*
 * base64.h - base64 (RFC 4648, standard alphabet): the one encoder and
 * decoder that SASL, MIME bodies, RFC 2047 "B" words and the outgoing
 * headers share. Modified UTF-7 (names.c) uses the same values but for
 * ',' in place of '/'.
 */
#ifndef MAILFS_BASE64_H
#define MAILFS_BASE64_H

#include <stddef.h>

/* The characters mfs_b64_encode_to() writes for n bytes, padding
 * included, NUL not included. */
#define MFS_B64_ENCODED_LEN(n) (4 * (((n) + 2) / 3))

/* Room that mfs_b64_decode() may need in out for len characters: three
 * bytes for every four, plus the bits a decoder carries in. */
#define MFS_B64_DECODED_MAX(len) ((len) / 4 * 3 + 3)

/* The value (0-63) of character c, or -1 for anything outside the
 * alphabet ('=' included). */
int mfs_b64_value(int c);

/* Writes the base64 of the n bytes at p to out, with padding, no line
 * breaks, and a NUL: out must hold MFS_B64_ENCODED_LEN(n) + 1 bytes.
 * Returns the characters written (without the NUL). */
size_t mfs_b64_encode_to(char *out, const void *p, size_t n);

/* The same in a new string (free() it; sasl.h's mfs_sasl_free() when it
 * holds a secret). NULL when out of memory or n is over 1 GiB. */
char *mfs_b64_encode(const void *p, size_t n);

/* A decoder's state between calls: zero it before the first. */
struct mfs_b64_dec {
	unsigned acc;	/* the bits not yet written */
	unsigned nbits; /* how many: 0, 2, 4 or 6 */
};

/*
 * Decodes the len characters at in, which continue what earlier calls on
 * d decoded, into out (room for MFS_B64_DECODED_MAX(len) bytes). Returns
 * the bytes written. Leniently, as RFC 2045 asks of a body: characters
 * outside the alphabet (line breaks, garbage) are skipped, padding is
 * optional, a '=' after two or three characters of a group ends it
 * (decoding goes on after it), and bits left at the end that make no
 * whole byte are dropped. Never fails.
 */
size_t mfs_b64_decode(struct mfs_b64_dec *d, const char *in, size_t len,
		      unsigned char *out);

/*
 * Whether the len characters at in are base64 as an RFC 2047 "B" word
 * must be: characters of the alphabet, then nothing but '='. Padding may
 * be missing; a group of one character is refused. What passes decodes
 * with mfs_b64_decode() to the bytes it means.
 */
int mfs_b64_is_strict(const char *in, size_t len);

#endif
