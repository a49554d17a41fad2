/*
 * main.c - the command line: mount an account, or check it.
 *
 *   mailfs [-f] [-d] [-o OPT[,OPT...]] ACCOUNT MOUNTPOINT
 *   mailfs --check ACCOUNT
 *   mailfs --help | --version
 */
#include <errno.h>
#include <malloc.h>
#include <mntent.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cache.h"
#include "config.h"
#include "drivers.h"
#include "fs.h"
#include "journal.h"
#include "log.h"
#include "spool.h"

#define MAILFS_VERSION "0.1.0"

struct cli {
	char *config;  /* owned (fuse_opt) */
	char *account; /* owned */
	int nonopts;
	int check;
	int help;
	int version;
	int debug;
};

enum { KEY_HELP, KEY_VERSION, KEY_CHECK, KEY_DEBUG };

static const struct fuse_opt cli_opts[] = {
	{"config=%s", offsetof(struct cli, config), 0},
	FUSE_OPT_KEY("-h", KEY_HELP),
	FUSE_OPT_KEY("--help", KEY_HELP),
	FUSE_OPT_KEY("-V", KEY_VERSION),
	FUSE_OPT_KEY("--version", KEY_VERSION),
	FUSE_OPT_KEY("--check", KEY_CHECK),
	FUSE_OPT_KEY("-d", KEY_DEBUG),
	FUSE_OPT_KEY("--debug", KEY_DEBUG),
	FUSE_OPT_END,
};

static void usage(FILE *out)
{
	fputs("usage: mailfs [-f] [-d] [-o OPT[,OPT...]] ACCOUNT MOUNTPOINT\n"
	      "       mailfs --check [-o config=PATH] ACCOUNT\n"
	      "       mailfs --help | --version\n"
	      "\n"
	      "Mounts the mail account ACCOUNT (a section of the config file)\n"
	      "at MOUNTPOINT.\n"
	      "\n"
	      "  -f               stay in the foreground, log to stderr\n"
	      "  -d               debug log (implies -f)\n"
	      "  -o config=PATH   config file (default "
	      "$XDG_CONFIG_HOME/mailfs/config,\n"
	      "                   else ~/.config/mailfs/config)\n"
	      "  -o OPT           any FUSE mount option\n"
	      "  --check          connect, log in, list, report; mount nothing\n",
	      out);
}

static int cli_proc(void *data, const char *arg, int key,
		    struct fuse_args *out)
{
	struct cli *cli = data;

	switch (key) {
	case KEY_HELP:
		cli->help = 1;
		return 0;
	case KEY_VERSION:
		cli->version = 1;
		return 0;
	case KEY_CHECK:
		cli->check = 1;
		return 0;
	case KEY_DEBUG:
		cli->debug = 1;
		return fuse_opt_add_arg(out, "-f");
	case FUSE_OPT_KEY_NONOPT:
		if (cli->nonopts++ == 0) {
			cli->account = strdup(arg);
			return cli->account == NULL ? -1 : 0;
		}
		return 1; /* the mount point: for fuse_parse_cmdline */
	default:
		return 1;
	}
}

/* The account's section of the config file, and its password. */
static int load_account(const struct cli *cli, struct mfs_account *acct,
			char **password)
{
	struct mfs_err err;
	char *path = cli->config ? strdup(cli->config)
				 : mfs_config_default_path();

	mfs_err_clear(&err);
	if (path == NULL) {
		fprintf(stderr, "mailfs: no config file: set HOME or use "
				"-o config=PATH\n");
		return -1;
	}
	if (mfs_config_load(path, cli->account, acct, &err) != MFS_OK) {
		fprintf(stderr, "mailfs: %s\n", err.msg);
		free(path);
		return -1;
	}
	free(path);
	if (mfs_password_get(acct, password, &err) != MFS_OK) {
		fprintf(stderr, "mailfs: %s\n", err.msg);
		mfs_account_free(acct);
		return -1;
	}
	return 0;
}

/* How long --check waits for a mount's status file. */
#define STATUS_WAIT_MS 2000

/* Copies the status file of the mount at dir to stdout, each line
 * indented. A child reads it, so that a mount whose every thread is busy
 * (a server that stalls) costs --check at most STATUS_WAIT_MS. */
static void print_status(const char *dir)
{
	char buf[16384], *path = NULL, *line, *save = NULL;
	size_t got = 0;
	struct pollfd pfd;
	int p[2], timed_out = 0;
	pid_t pid;

	if (asprintf(&path, "%s/.mailfs/status", dir) < 0 || pipe(p) != 0) {
		free(path);
		return;
	}
	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		FILE *f = fopen(path, "re");
		char text[1024];
		size_t n;

		close(p[0]);
		if (f == NULL) {
			n = (size_t)snprintf(text, sizeof(text),
					     "(status not readable: %s)\n",
					     strerror(errno));
			_exit(write(p[1], text, n) == (ssize_t)n ? 0 : 1);
		}
		while ((n = fread(text, 1, sizeof(text), f)) > 0)
			if (write(p[1], text, n) != (ssize_t)n)
				_exit(1);
		_exit(0);
	}
	free(path);
	close(p[1]);
	if (pid < 0) {
		close(p[0]);
		return;
	}
	pfd.fd = p[0];
	pfd.events = POLLIN;
	while (got < sizeof(buf) - 1) {
		ssize_t n;

		if (poll(&pfd, 1, STATUS_WAIT_MS) <= 0) {
			timed_out = 1;
			break;
		}
		n = read(p[0], buf + got, sizeof(buf) - 1 - got);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(p[0]);
	if (timed_out)
		kill(pid, SIGKILL);
	/* a child killed while the mount holds its request ends only when
	 * the mount answers: it is not waited for longer than a second */
	for (int i = 0; i < 100 && waitpid(pid, NULL, WNOHANG) == 0; i++)
		usleep(10000);
	buf[got] = '\0';
	for (line = strtok_r(buf, "\n", &save); line != NULL;
	     line = strtok_r(NULL, "\n", &save))
		printf("  %s\n", line);
	if (timed_out)
		printf("  (status: no answer within %d s)\n",
		       STATUS_WAIT_MS / 1000);
	fflush(stdout); /* before what the check then says on stderr */
}

/* Prints, for each mount of account name, its mount point and its
 * .mailfs/status, indented: --check says how a mounted account is doing
 * (online or offline, journal, outbox, cache) as well as what the server
 * says. */
static void print_mounts(const char *name)
{
	FILE *m = setmntent("/proc/self/mounts", "r");
	struct mntent *e;
	char *fsname;

	if (m == NULL || asprintf(&fsname, "mailfs:%s", name) < 0) {
		if (m != NULL)
			endmntent(m);
		return;
	}
	while ((e = getmntent(m)) != NULL) {
		if (strcmp(e->mnt_fsname, fsname) != 0 ||
		    strcmp(e->mnt_type, "fuse.mailfs") != 0)
			continue;
		printf("mounted at: %s\n", e->mnt_dir);
		print_status(e->mnt_dir);
	}
	endmntent(m);
	free(fsname);
}

static int run_check(const struct cli *cli)
{
	struct mfs_account acct = {0};
	struct mfs_store *st = NULL;
	struct mfs_store_folder *folders = NULL;
	struct mfs_store_msg *msgs = NULL;
	char *password = NULL, ver[64], subj[512], iss[512];
	size_t nf = 0, nm = 0;
	uint32_t validity;
	struct mfs_err err;
	int rc = 1;

	mfs_err_clear(&err);
	if (load_account(cli, &acct, &password) != 0)
		return 1;
	print_mounts(acct.name);
	st = mfs_store_open(&acct, password);
	if (st == NULL) {
		fprintf(stderr, "mailfs: %s: out of memory\n", acct.name);
		goto out;
	}
	printf("server: %s:%d\n", acct.store.host, acct.store.port);
	if (st->ops->connect(st, &err) != MFS_OK) {
		fprintf(stderr, "mailfs: %s\n", err.msg);
		goto out;
	}
	st->ops->tls_info(st, ver, sizeof(ver), subj, sizeof(subj), iss,
			  sizeof(iss));
	if (ver[0] != '\0')
		printf("tls: %s\ncertificate subject: %s\n"
		       "certificate issuer: %s\n",
		       ver, subj, iss);
	else
		printf("tls: none\n");
	printf("login: ok as %s\n", acct.user);
	if (st->ops->list(st, &folders, &nf, &err) != MFS_OK) {
		fprintf(stderr, "mailfs: %s\n", err.msg);
		goto out;
	}
	printf("folders: %zu\n", nf);
	if (st->ops->index(st, "INBOX", &validity, &msgs, &nm, &err) !=
	    MFS_OK) {
		fprintf(stderr, "mailfs: %s\n", err.msg);
		goto out;
	}
	printf("INBOX messages: %zu\n", nm);
	rc = acct.has_smtp ? mfs_submission_check(&acct, password) : 0;
out:
	mfs_store_msgs_free(msgs, nm);
	mfs_store_folders_free(folders, nf);
	if (st != NULL)
		st->ops->free(st);
	mfs_password_free(password);
	mfs_account_free(&acct);
	return rc;
}

static int run_mount(struct cli *cli, struct fuse_args *args)
{
	struct fuse_cmdline_opts opts = {0};
	struct fuse_loop_config *loop = NULL;
	struct fuse_session *se = NULL;
	struct mfs_account acct = {0};
	struct mfs_store *st = NULL;
	struct mfs_cache *cache = NULL;
	struct mfs_fs *fs = NULL;
	struct mfs_spool *spool = NULL;
	char *password = NULL, *extra = NULL, *spool_dir = NULL;
	char *journal_dir = NULL;
	struct mfs_err err;
	int rc = 1;

	mfs_err_clear(&err);
	if (asprintf(&extra,
		     "-osubtype=mailfs,fsname=mailfs:%s,default_permissions",
		     cli->account) < 0 ||
	    fuse_opt_add_arg(args, extra) != 0) {
		free(extra);
		return 1;
	}
	free(extra);
	if (fuse_parse_cmdline(args, &opts) != 0)
		return 1;
	if (opts.mountpoint == NULL) {
		usage(stderr);
		goto out;
	}
	if (load_account(cli, &acct, &password) != 0)
		goto out;
	st = mfs_store_open(&acct, password);
	if (st == NULL) {
		fprintf(stderr, "mailfs: %s: out of memory\n", acct.name);
		goto out;
	}
	if (mfs_cache_open(acct.cache_dir, &cache, &err) != MFS_OK) {
		fprintf(stderr, "mailfs: %s\n", err.msg);
		goto out;
	}
	mfs_cache_set_limit(cache, acct.cache_size);
	if (!st->read_only) {
		/* writes made while the server is out of reach */
		struct mfs_store *j;

		if (asprintf(&journal_dir, "%s/.journal", acct.cache_dir) < 0) {
			journal_dir = NULL;
			goto out;
		}
		j = mfs_journal_new(st, journal_dir, &err);
		if (j != NULL)
			st = j;
		else
			fprintf(stderr,
				"mailfs: %s; changes made offline are "
				"refused on this mount\n",
				err.msg);
	}
	fs = mfs_fs_new(&acct, st, cache);
	if (fs == NULL)
		goto out;
	if (acct.has_smtp) {
		struct mfs_spool_opts so = {0};

		if (asprintf(&spool_dir, "%s/outbox", acct.cache_dir) < 0) {
			spool_dir = NULL;
			goto out;
		}
		so.dir = spool_dir;
		so.acct = &acct;
		so.password = password;
		so.backoff_min = acct.retry_min;
		so.backoff_max = acct.retry_max;
		so.lifetime = acct.queue_lifetime;
		so.sent = mfs_fs_sent_copy;
		so.sent_arg = fs;
		if (mfs_spool_open(&so, &spool, &err) != MFS_OK) {
			fprintf(stderr, "mailfs: %s\n", err.msg);
			goto out;
		}
		mfs_fs_set_spool(fs, spool);
	}
	if (mfs_fs_prepare(fs, &err) != MFS_OK) {
		fprintf(stderr, "mailfs: %s\n", err.msg);
		goto out;
	}
	se = fuse_session_new(args, &mfs_fs_ops, sizeof(mfs_fs_ops), fs);
	if (se == NULL)
		goto out;
	if (fuse_set_signal_handlers(se) != 0)
		goto out;
	if (fuse_session_mount(se, opts.mountpoint) != 0)
		goto remove_handlers;
	if (fuse_daemonize(opts.foreground) != 0)
		goto unmount;
	if (!opts.foreground)
		mfs_log_init(1, cli->debug);
	/* threads only now: fuse_daemonize() forks */
	if (spool != NULL && mfs_spool_start(spool, &err) != MFS_OK)
		mfs_log_err("outbox retries will not run: %s", err.msg);
	mfs_fs_start_watch(fs);
	mfs_fs_start_journal(fs);
	mfs_fs_start_prefetch(fs);
	mfs_log_info("mounted %s at %s", acct.name, opts.mountpoint);
	if (opts.singlethread) {
		rc = fuse_session_loop(se);
	} else {
		loop = fuse_loop_cfg_create();
		if (loop == NULL)
			goto unmount;
		fuse_loop_cfg_set_clone_fd(loop, opts.clone_fd);
		fuse_loop_cfg_set_max_threads(loop, 16);
		fuse_loop_cfg_set_idle_threads(loop, 4);
		rc = fuse_session_loop_mt(se, loop);
		fuse_loop_cfg_destroy(loop);
	}
	rc = rc != 0;
	mfs_fs_stop_prefetch(fs);
	mfs_fs_stop_watch(fs);
	mfs_log_info("unmounted %s", acct.name);
unmount:
	fuse_session_unmount(se);
remove_handlers:
	fuse_remove_signal_handlers(se);
out:
	if (se != NULL)
		fuse_session_destroy(se);
	/* before the fs and the store: its Sent copies go through them */
	if (mfs_spool_close(spool) != 0) {
		/* a Sent copy still on its way uses the fs, the cache, the
		 * store, the account and the password; the process ends now,
		 * so they are left as they are */
		free(spool_dir);
		free(opts.mountpoint);
		return rc;
	}
	free(spool_dir);
	free(journal_dir);
	mfs_fs_free(fs);
	mfs_cache_close(cache);
	if (st != NULL)
		st->ops->free(st);
	mfs_password_free(password);
	mfs_account_free(&acct);
	free(opts.mountpoint);
	return rc;
}

/*
 * The process holds the password from the start to the end: no core file
 * may carry it to disk, and no other process of the user may read its
 * memory (ptrace, /proc/PID/mem). Not dumpable also makes /proc/PID/ of
 * mailfs root's. Both are inherited by the daemon's fork and reset by an
 * exec (the password command, fusermount3).
 */
static int no_core_dumps(void)
{
	const struct rlimit none = {0, 0};

	if (setrlimit(RLIMIT_CORE, &none) != 0 ||
	    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
		fprintf(stderr, "mailfs: cannot turn core dumps off: %s\n",
			strerror(errno));
		return -1;
	}
	return 0;
}

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct cli cli = {0};
	int rc;

	if (no_core_dumps() != 0)
		return 1;
	signal(SIGPIPE, SIG_IGN);
	/* Fixed thresholds: buffers of 128 KiB or more are mapped and
	 * returned when freed, and free heap tops are given back. glibc's
	 * moving thresholds otherwise keep the buffers of a large fetch (one
	 * per worker thread's arena) resident: about 10 MB after reading a
	 * 50 MB message over TLS. */
	mallopt(M_MMAP_THRESHOLD, 128 * 1024);
	mallopt(M_TRIM_THRESHOLD, 256 * 1024);
	if (fuse_opt_parse(&args, &cli, cli_opts, cli_proc) != 0) {
		usage(stderr);
		return 1;
	}
	mfs_log_init(0, cli.debug);
	if (cli.help) {
		usage(stdout);
		rc = 0;
	} else if (cli.version) {
		printf("mailfs %s (libfuse %s)\n", MAILFS_VERSION,
		       fuse_pkgversion());
		rc = 0;
	} else if (cli.account == NULL || (cli.check && cli.nonopts != 1) ||
		   (!cli.check && cli.nonopts != 2)) {
		usage(stderr);
		rc = 1;
	} else if (cli.check) {
		rc = run_check(&cli);
	} else {
		rc = run_mount(&cli, &args);
	}
	fuse_opt_free_args(&args);
	free(cli.config);
	free(cli.account);
	return rc;
}
