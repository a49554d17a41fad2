// fuzz-sources: src/mime.c src/names.c src/error.c src/base64.c src/hash.c src/header.c
/*
 * mime_fuzz.c - libFuzzer target for the MIME-to-tree module.
 *
 * Parses and lays out the input, then decodes every file of the layout and
 * checks the invariants of mime.h: names valid UTF-8, 1..255 bytes, no '/',
 * not "." or "..", unique in their directory and found by lookup; the size
 * equals the bytes produced; no chunk above the decoder's chunk size.
 *
 * clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Isrc \
 *   tests/fuzz/mime_fuzz.c src/mime.c src/names.c src/error.c -o /tmp/mime_fuzz
 * /tmp/mime_fuzz -max_total_time=300 tests/mime-corpus
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mime.h"
#include "names.h"

struct count {
	uint64_t n;
};

static int count_sink(void *ctx, const char *d, size_t n)
{
	struct count *c = ctx;

	if (n == 0 || n > 8192 || d == NULL)
		abort();
	c->n += n;
	return 0;
}

static void check_dir(const struct mfs_layout *l, const struct mfs_dir *d)
{
	size_t i, j, len;

	for (i = 0; i < d->n; i++) {
		struct mfs_entry *e = &d->entries[i];
		struct count c = {0};
		uint64_t size;

		len = strlen(e->name);
		if (len == 0 || len > MFS_NAME_MAX || strchr(e->name, '/') ||
		    strcmp(e->name, ".") == 0 || strcmp(e->name, "..") == 0 ||
		    !mfs_utf8_valid(e->name, len))
			abort();
		if (mfs_dir_find(d, e->name) != e)
			abort();
		/* sorted index: neighbours differ, so names are unique */
		j = d->by_name[i];
		if (i > 0 && strcmp(d->entries[d->by_name[i - 1]].name,
				    d->entries[j].name) >= 0)
			abort();
		if (e->id == 0 || e->id > l->nentries)
			abort();
		if (e->is_dir) {
			check_dir(l, e->dir);
			continue;
		}
		if (mfs_entry_decode(l, e, count_sink, &c, NULL) != 0)
			abort();
		if (mfs_entry_size(l, e, &size, NULL) != 0 || size != c.n)
			abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mfs_layout *l;
	char *copy;

	/* an exact-size copy, so that ASan sees any read past the end */
	copy = malloc(size ? size : 1);
	if (copy == NULL)
		return 0;
	memcpy(copy, data, size);
	if (mfs_layout_build(copy, size, &l, NULL) == 0) {
		check_dir(l, &l->root_dir);
		mfs_layout_free(l);
	}
	free(copy);
	return 0;
}
