/*
 * replay.c - runs a fuzz target's LLVMFuzzerTestOneInput() once on each
 * file named, or in a directory named, on the command line: the seed
 * corpora, replayed by `make test` with the normal and the sanitizer build
 * (tests/fuzz/README.md). No libFuzzer and no new inputs: an input that
 * once crashed or hung a target must still pass.
 *
 * Each input gets REPLAY_SECONDS of wall time; SIGALRM ends a hang. Exit
 * status 0 when every input ran, 1 on an unreadable file or directory (a
 * crash ends the process by itself).
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define REPLAY_SECONDS 10

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Under AddressSanitizer, an allocation above 2 GiB fails the replay, as
 * libFuzzer's -malloc_limit_mb does when fuzzing (its default is
 * -rss_limit_mb, 2048). Without the sanitizer nothing reads this. Weak: a
 * target with options of its own says the same in them. */
const char *__asan_default_options(void) __attribute__((weak));
const char *__asan_default_options(void)
{
	return "max_allocation_size_mb=2048";
}

/* Runs the target on the file at path. Returns 0, or -1 when it cannot
 * be read. */
static int replay_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL;
	long len;
	int r = -1;

	if (f == NULL)
		goto fail;
	if (fseek(f, 0, SEEK_END) != 0 || (len = ftell(f)) < 0 ||
	    fseek(f, 0, SEEK_SET) != 0)
		goto close_f;
	/* One byte more, so that an empty file still has a buffer. */
	buf = malloc((size_t)len + 1);
	if (buf == NULL || fread(buf, 1, (size_t)len, f) != (size_t)len)
		goto close_f;
	fprintf(stderr, "replay: %s\n", path);
	alarm(REPLAY_SECONDS);
	LLVMFuzzerTestOneInput(buf, (size_t)len);
	alarm(0);
	r = 0;
close_f:
	free(buf);
	fclose(f);
fail:
	if (r != 0)
		perror(path);
	return r;
}

/* Runs every regular file of dir (not recursing). Adds their number to
 * *n. Returns 0 or -1. */
static int replay_dir(const char *dir, unsigned *n)
{
	struct dirent **names;
	int count, i, r = 0;

	count = scandir(dir, &names, NULL, alphasort);
	if (count < 0) {
		perror(dir);
		return -1;
	}
	for (i = 0; i < count; i++) {
		char path[4096];
		struct stat st;

		if (names[i]->d_name[0] != '.' &&
		    snprintf(path, sizeof(path), "%s/%s", dir,
			     names[i]->d_name) < (int)sizeof(path) &&
		    stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
			if (replay_file(path) != 0)
				r = -1;
			(*n)++;
		}
		free(names[i]);
	}
	free(names);
	return r;
}

int main(int argc, char **argv)
{
	unsigned n = 0;
	struct stat st;
	int i, r = 0;

	for (i = 1; i < argc; i++) {
		if (stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode)) {
			if (replay_dir(argv[i], &n) != 0)
				r = 1;
		} else {
			if (replay_file(argv[i]) != 0)
				r = 1;
			n++;
		}
	}
	printf("replayed %u inputs\n", n);
	return r;
}
