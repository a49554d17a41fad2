// fuzz-sources: src/skeleton.c src/store.c src/header.c src/names.c src/base64.c src/error.c
/*
 * skeleton_fuzz.c - libFuzzer target for the cache entry of a skeleton
 * (mfs_skel_load and mfs_skel_save, src/skeleton.c).
 *
 * Loads the input as an entry and abort()s when a documented invariant
 * breaks: a refused entry makes nothing (no ranges, an empty file); a
 * taken one gives ranges in order and within the file, holes with a
 * section of [0-9A-Z.] and real ranges without, and saving it again gives
 * the input back byte for byte (the format has one spelling).
 *
 * Build and run: tests/fuzz/run.sh (FUZZ_TARGETS=skeleton).
 */
#include "skeleton.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static void check(int ok)
{
	if (!ok)
		abort();
}

static off_t file_size(int fd)
{
	struct stat st;

	check(fstat(fd, &st) == 0);
	return st.st_size;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int fd = memfd_create("skeleton-fuzz", MFD_CLOEXEC), out;
	struct mfs_seg *segs = NULL;
	struct mfs_err err;
	size_t n = 0, i, end = 0;
	char *back;
	int rc;

	check(fd >= 0);
	rc = mfs_skel_load((const char *)data, size, fd, &segs, &n, &err);
	if (rc != MFS_OK) {
		check(rc == MFS_E_PROTO && segs == NULL && n == 0);
		check(file_size(fd) == 0);
		close(fd);
		return 0;
	}
	check(n > 0);
	for (i = 0; i < n; i++) {
		check(segs[i].off >= end);
		end = segs[i].off + segs[i].len;
		check(end <= (size_t)file_size(fd));
		check(segs[i].hole == (segs[i].section != NULL));
		if (segs[i].hole)
			check(strlen(segs[i].section) > 0 &&
			      strspn(segs[i].section, "0123456789"
						      "ABCDEFGHIJKLMNOPQRSTUVWXYZ.") ==
				  strlen(segs[i].section));
	}
	out = memfd_create("skeleton-fuzz-entry", MFD_CLOEXEC);
	check(out >= 0);
	check(mfs_skel_save(fd, segs, n, out, &err) == MFS_OK);
	check((size_t)file_size(out) == size);
	back = malloc(size);
	check(back != NULL);
	check(pread(out, back, size, 0) == (ssize_t)size);
	check(memcmp(back, data, size) == 0);
	free(back);
	mfs_store_segs_free(segs, n);
	close(out);
	close(fd);
	return 0;
}
