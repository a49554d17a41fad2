// fuzz-sources: src/config.c src/error.c
/*
 * config_fuzz.c - libFuzzer target for the config file parser.
 *
 * Writes the input to a temporary file and loads section "a" from it with
 * mfs_config_load(). Checks config.h's contract: success fills every
 * required field (user, cache_dir, a host, a port 1-65535, timeout 1-3600);
 * failure is MFS_E_CONFIG or MFS_E_NOMEM with a message and a zeroed
 * account. The file is loaded twice to catch state kept between calls.
 *
 * Build and run: tests/fuzz/run.sh, or by hand:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Isrc \
 *     tests/fuzz/config_fuzz.c src/config.c src/error.c -o /tmp/config_fuzz
 *   /tmp/config_fuzz -max_total_time=60
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

static void check(int ok)
{
	if (!ok)
		abort();
}

static int zeroed(const struct mfs_account *a)
{
	static const struct mfs_account zero;

	return memcmp(a, &zero, sizeof(zero)) == 0;
}

static void check_server(const struct mfs_server *s)
{
	check(s->host != NULL && s->host[0] != '\0');
	check(s->port >= 1 && s->port <= 65535);
}

static int load(const char *path, struct mfs_err *err)
{
	struct mfs_account a;
	int r;

	memset(&a, 0x5a, sizeof(a));
	r = mfs_config_load(path, "a", &a, err);
	if (r != MFS_OK) {
		check(r == MFS_E_CONFIG || r == MFS_E_NOMEM);
		check((int)err->code == r && err->msg[0] != '\0');
		check(zeroed(&a));
		return r;
	}
	check(a.name != NULL && strcmp(a.name, "a") == 0);
	check(a.user != NULL && a.user[0] != '\0');
	check(a.cache_dir != NULL && a.cache_dir[0] == '/');
	check((a.password_command == NULL) != (a.password_file == NULL));
	check(a.timeout >= 1 && a.timeout <= 3600);
	check_server(&a.store);
	check(a.store.proto == MFS_PROTO_IMAP ||
	      a.store.proto == MFS_PROTO_POP3);
	if (a.has_smtp)
		check_server(&a.smtp);
	mfs_account_free(&a);
	check(zeroed(&a));
	return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char path[64];
	struct mfs_err e1, e2;
	FILE *f;

	if (path[0] == '\0') {
		int fd;

		snprintf(path, sizeof(path), "/tmp/config_fuzz.XXXXXX");
		fd = mkstemp(path);
		check(fd >= 0);
		close(fd);
		setenv("HOME", "/home/fuzz", 1);
		unsetenv("XDG_CACHE_HOME");
	}
	f = fopen(path, "w");
	check(f != NULL);
	check(fwrite(data, 1, size, f) == size);
	check(fclose(f) == 0);
	check(load(path, &e1) == load(path, &e2));
	check(strcmp(e1.msg, e2.msg) == 0 || e1.code == MFS_OK);
	return 0;
}
