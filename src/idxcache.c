/*
 * idxcache.c - the on-disk copy of one folder's listing (see idxcache.h).
 */
#include "idxcache.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hash.h"
#include "privdir.h"

#define IDX_MAGIC     "MFSIDX\r\n"
#define IDX_MAGIC_LEN 8
#define IDX_DIR	      ".index"
/* Longest from, subject or key kept; longer ones are refused on reading
 * before any allocation, so a corrupted length cannot ask for gigabytes. */
#define IDX_STR_MAX (1u << 20)
/* Longest folder name spelt out in hex in a file name (2 chars a byte). */
#define IDX_HEX_MAX 120

struct mfs_idx_reader {
	FILE *f;	  /* owned */
	uint64_t sum;	  /* FNV-1a of the bytes read so far */
	uint32_t count;	  /* records announced by the header */
	const char *path; /* borrowed: for messages */
};

static void put_le(unsigned char *out, uint64_t v, size_t len)
{
	for (size_t i = 0; i < len; i++)
		out[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_le(const unsigned char *in, size_t len)
{
	uint64_t v = 0;

	for (size_t i = 0; i < len; i++)
		v |= (uint64_t)in[i] << (8 * i);
	return v;
}

char *mfs_idx_path(const char *cache_dir, const char *folder)
{
	size_t len = strlen(folder);
	char *path, *p;
	int r;

	if (len > IDX_HEX_MAX) {
		r = asprintf(
		    &path, "%s/%s/h%016llx", cache_dir, IDX_DIR,
		    (unsigned long long)mfs_fnv1a(MFS_FNV1A_INIT, folder, len));
		return r < 0 ? NULL : path;
	}
	path = malloc(strlen(cache_dir) + sizeof(IDX_DIR) + 2 * len + 3);
	if (path == NULL)
		return NULL;
	p = path + sprintf(path, "%s/%s/", cache_dir, IDX_DIR);
	for (size_t i = 0; i < len; i++)
		p += sprintf(p, "%02x", (unsigned char)folder[i]);
	if (len == 0)
		strcpy(p, "-");
	return path;
}

/* --- writing ------------------------------------------------------------- */

/* A buffered writer that sums what it writes and remembers its first
 * failure. */
struct idx_writer {
	FILE *f; /* borrowed */
	uint64_t sum;
	int failed;
};

static void put(struct idx_writer *w, const void *p, size_t len)
{
	if (w->failed || len == 0)
		return;
	w->sum = mfs_fnv1a(w->sum, p, len);
	if (fwrite(p, 1, len, w->f) != len)
		w->failed = 1;
}

static void put_u32(struct idx_writer *w, uint32_t v)
{
	unsigned char b[4];

	put_le(b, v, 4);
	put(w, b, 4);
}

static void put_u64(struct idx_writer *w, uint64_t v)
{
	unsigned char b[8];

	put_le(b, v, 8);
	put(w, b, 8);
}

static void put_str(struct idx_writer *w, const char *s)
{
	size_t len = s != NULL ? strlen(s) : 0;

	put_u32(w, (uint32_t)len);
	put(w, s, len);
}

static int str_ok(const char *s)
{
	return s == NULL || strlen(s) <= IDX_STR_MAX;
}

/* Creates the directory of path (and what is missing above it), mode
 * 0700; an existing one must be the user's own and no symbolic link, and
 * is made private. Errors: MFS_E_IO, MFS_E_NOMEM. */
static int make_dirs(const char *path, struct mfs_err *err)
{
	char *dir = strdup(path);
	char *slash;
	int rc;

	if (dir == NULL)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	slash = strrchr(dir, '/');
	if (slash == NULL || slash == dir) {
		free(dir);
		return mfs_err_set(err, MFS_E_IO, "%s is not in a directory",
				   path);
	}
	*slash = '\0';
	rc = mfs_mkdir_private(dir, O_NOFOLLOW, "index directory", NULL, err);
	free(dir);
	if (rc == MFS_OK)
		return MFS_OK;
	err->code = MFS_E_IO; /* a foreign directory too */
	return MFS_E_IO;
}

/* A listing file being written (mfs_idx_out_*): to a temporary file
 * beside path, renamed into place by mfs_idx_out_commit. */
struct mfs_idx_out {
	struct idx_writer w;
	char *path; /* owned */
	char *tmp;  /* owned */
	int fd;
	uint32_t n;	    /* messages the header announced */
	uint32_t added;	    /* messages written */
	uint32_t last_uid;  /* of the last one, for the order */
	struct mfs_err err; /* the first problem */
};

static void out_free(struct mfs_idx_out *o)
{
	if (o->w.f != NULL)
		fclose(o->w.f);
	else if (o->fd >= 0)
		close(o->fd);
	if (o->tmp != NULL)
		unlink(o->tmp);
	free(o->tmp);
	free(o->path);
	free(o);
}

int mfs_idx_out_open(const char *path, const char *key,
		     const struct mfs_idx_head *head, size_t n,
		     struct mfs_idx_out **out, struct mfs_err *err)
{
	struct mfs_idx_out *o;

	*out = NULL;
	if (!str_ok(key) || n > UINT32_MAX)
		return mfs_err_set(err, MFS_E_INVAL,
				   "listing too large to keep");
	if (make_dirs(path, err) != MFS_OK)
		return MFS_E_IO;
	o = calloc(1, sizeof(*o));
	if (o == NULL)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	o->fd = -1;
	o->w.sum = MFS_FNV1A_INIT;
	o->n = (uint32_t)n;
	o->path = strdup(path);
	if (o->path == NULL || asprintf(&o->tmp, "%s.tmp.XXXXXX", path) < 0) {
		o->tmp = NULL;
		out_free(o);
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	}
	o->fd = mkstemp(o->tmp); /* mode 0600 */
	if (o->fd < 0) {
		mfs_err_set(err, MFS_E_IO, "cannot create %s: %s", o->tmp,
			    strerror(errno));
		free(o->tmp);
		o->tmp = NULL;
		out_free(o);
		return err->code;
	}
	o->w.f = fdopen(o->fd, "w");
	if (o->w.f == NULL) {
		mfs_err_set(err, MFS_E_IO, "cannot write %s: %s", o->tmp,
			    strerror(errno));
		out_free(o);
		return err->code;
	}
	put(&o->w, IDX_MAGIC, IDX_MAGIC_LEN);
	put_u32(&o->w, MFS_IDX_VERSION);
	put_str(&o->w, key);
	put_u32(&o->w, head->validity);
	put_u32(&o->w, head->uidnext);
	put_u32(&o->w, head->exists);
	put_u32(&o->w, (uint32_t)n);
	put_u64(&o->w, head->modseq);
	*out = o;
	return MFS_OK;
}

void mfs_idx_out_add(struct mfs_idx_out *o, const struct mfs_store_msg *m)
{
	if (o->err.code != MFS_OK)
		return;
	if (o->added == o->n)
		mfs_err_set(&o->err, MFS_E_INVAL, "more messages than %u",
			    o->n);
	else if (o->added > 0 && m->uid <= o->last_uid)
		mfs_err_set(&o->err, MFS_E_INVAL,
			    "listing not in UID order at %u", m->uid);
	else if (!str_ok(m->from) || !str_ok(m->subject))
		mfs_err_set(&o->err, MFS_E_INVAL,
			    "message %u: header too long to keep", m->uid);
	if (o->err.code != MFS_OK)
		return;
	put_u32(&o->w, m->uid);
	put_u32(&o->w, m->flags);
	put_u64(&o->w, m->size);
	put_u64(&o->w, (uint64_t)(int64_t)m->date);
	put_str(&o->w, m->from);
	put_str(&o->w, m->subject);
	o->added++;
	o->last_uid = m->uid;
}

int mfs_idx_out_commit(struct mfs_idx_out *o, struct mfs_err *err)
{
	unsigned char b[8];

	if (o->err.code == MFS_OK && o->added != o->n)
		mfs_err_set(&o->err, MFS_E_INVAL, "%u messages of %u",
			    o->added, o->n);
	if (o->err.code != MFS_OK) {
		*err = o->err;
		out_free(o);
		return err->code;
	}
	/* the checksum itself is not part of the sum */
	put_le(b, o->w.sum, 8);
	if (!o->w.failed && fwrite(b, 1, 8, o->w.f) != 8)
		o->w.failed = 1;
	if (fflush(o->w.f) != 0 || fsync(o->fd) != 0)
		o->w.failed = 1;
	if (fclose(o->w.f) != 0)
		o->w.failed = 1;
	o->w.f = NULL;
	o->fd = -1;
	if (o->w.failed) {
		mfs_err_set(err, MFS_E_IO, "cannot write %s: %s", o->tmp,
			    strerror(errno));
		out_free(o);
		return err->code;
	}
	if (rename(o->tmp, o->path) != 0) {
		mfs_err_set(err, MFS_E_IO, "cannot rename %s: %s", o->tmp,
			    strerror(errno));
		out_free(o);
		return err->code;
	}
	free(o->tmp);
	o->tmp = NULL;
	out_free(o);
	mfs_err_clear(err);
	return MFS_OK;
}

void mfs_idx_out_abort(struct mfs_idx_out *o)
{
	if (o != NULL)
		out_free(o);
}

int mfs_idx_save(const char *path, const char *key,
		 const struct mfs_idx_head *head,
		 const struct mfs_store_msg *msgs, size_t n,
		 struct mfs_err *err)
{
	struct mfs_idx_out *o;
	size_t i;

	if (mfs_idx_out_open(path, key, head, n, &o, err) != MFS_OK)
		return err->code;
	for (i = 0; i < n; i++)
		mfs_idx_out_add(o, &msgs[i]);
	return mfs_idx_out_commit(o, err);
}

/* --- reading ------------------------------------------------------------- */

/* Reads exactly len bytes into p and adds them to the sum. */
static int get(struct mfs_idx_reader *rd, void *p, size_t len)
{
	if (len == 0)
		return 0;
	if (fread(p, 1, len, rd->f) != len)
		return -1;
	rd->sum = mfs_fnv1a(rd->sum, p, len);
	return 0;
}

static int get_u32(struct mfs_idx_reader *rd, uint32_t *v)
{
	unsigned char b[4];

	if (get(rd, b, 4) != 0)
		return -1;
	*v = (uint32_t)get_le(b, 4);
	return 0;
}

static int get_u64(struct mfs_idx_reader *rd, uint64_t *v)
{
	unsigned char b[8];

	if (get(rd, b, 8) != 0)
		return -1;
	*v = get_le(b, 8);
	return 0;
}

/* A length-prefixed string, NUL-terminated. Returns 0, -1 when the file
 * is bad, -2 on ENOMEM. */
static int get_str(struct mfs_idx_reader *rd, char **out)
{
	uint32_t len;
	char *s;

	if (get_u32(rd, &len) != 0 || len > IDX_STR_MAX)
		return -1;
	s = malloc((size_t)len + 1);
	if (s == NULL)
		return -2;
	if (get(rd, s, len) != 0) {
		free(s);
		return -1;
	}
	s[len] = '\0';
	*out = s;
	return 0;
}

static int bad_file(struct mfs_idx_reader *rd, const char *why,
		    struct mfs_err *err)
{
	return mfs_err_set(err, MFS_E_IO, "%s: %s", rd->path, why);
}

/* Reads the header after the magic; checks version and key. */
static int read_head(struct mfs_idx_reader *rd, const char *key,
		     struct mfs_idx_head *head, struct mfs_err *err)
{
	char magic[IDX_MAGIC_LEN];
	uint32_t version;
	char *stored = NULL;
	int r;

	if (get(rd, magic, IDX_MAGIC_LEN) != 0 ||
	    memcmp(magic, IDX_MAGIC, IDX_MAGIC_LEN) != 0)
		return bad_file(rd, "not a folder listing", err);
	if (get_u32(rd, &version) != 0 || version != MFS_IDX_VERSION)
		return bad_file(rd, "another version of the listing format",
				err);
	r = get_str(rd, &stored);
	if (r == -2)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	if (r != 0)
		return bad_file(rd, "cut short", err);
	r = strcmp(stored, key);
	free(stored);
	if (r != 0)
		return bad_file(rd, "written for another folder", err);
	if (get_u32(rd, &head->validity) != 0 ||
	    get_u32(rd, &head->uidnext) != 0 ||
	    get_u32(rd, &head->exists) != 0 || get_u32(rd, &head->count) != 0 ||
	    get_u64(rd, &head->modseq) != 0)
		return bad_file(rd, "cut short", err);
	rd->count = head->count;
	return MFS_OK;
}

int mfs_idx_open(const char *path, const char *key, struct mfs_idx_head *head,
		 struct mfs_idx_reader **rd, struct mfs_err *err)
{
	struct mfs_idx_reader *r = calloc(1, sizeof(*r));
	struct stat st;
	int fd;

	*rd = NULL;
	if (r == NULL)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	r->path = path;
	r->sum = MFS_FNV1A_INIT;
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		mfs_err_set(err, errno == ENOENT ? MFS_E_NOENT : MFS_E_IO,
			    "cannot open %s: %s", path, strerror(errno));
		goto free_reader;
	}
	/* another user's file is not trusted to describe the folder */
	if (fstat(fd, &st) != 0 || st.st_uid != geteuid()) {
		mfs_err_set(err, MFS_E_IO, "%s does not belong to you", path);
		close(fd);
		goto free_reader;
	}
	r->f = fdopen(fd, "r");
	if (r->f == NULL) {
		mfs_err_set(err, MFS_E_NOMEM, "out of memory");
		close(fd);
		goto free_reader;
	}
	if (read_head(r, key, head, err) != MFS_OK)
		goto close_file;
	*rd = r;
	mfs_err_clear(err);
	return MFS_OK;

close_file:
	fclose(r->f);
free_reader:
	free(r);
	return err->code;
}

static void msgs_free(struct mfs_store_msg *msgs, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(msgs[i].from);
		free(msgs[i].subject);
	}
	free(msgs);
}

/* One record. Returns 0, -1 when the file is bad, -2 on ENOMEM. */
static int read_msg(struct mfs_idx_reader *rd, struct mfs_store_msg *m)
{
	uint64_t date;
	int r;

	memset(m, 0, sizeof(*m));
	if (get_u32(rd, &m->uid) != 0 || get_u32(rd, &m->flags) != 0 ||
	    get_u64(rd, &m->size) != 0 || get_u64(rd, &date) != 0)
		return -1;
	m->date = (time_t)(int64_t)date;
	r = get_str(rd, &m->from);
	if (r == 0)
		r = get_str(rd, &m->subject);
	if (r != 0) {
		free(m->from);
		m->from = NULL;
	}
	return r;
}

/* The checksum and then the end of the file. */
static int read_tail(struct mfs_idx_reader *rd)
{
	unsigned char b[8];

	if (fread(b, 1, 8, rd->f) != 8 || get_le(b, 8) != rd->sum)
		return -1;
	return fgetc(rd->f) == EOF && !ferror(rd->f) ? 0 : -1;
}

int mfs_idx_read(struct mfs_idx_reader *rd, struct mfs_store_msg **msgs,
		 size_t *n, struct mfs_err *err)
{
	struct mfs_store_msg *out = NULL;
	size_t got = 0, cap = 0;
	int r = 0;

	/* grown as records arrive: a corrupted count costs nothing */
	while (got < rd->count) {
		if (got == cap) {
			size_t c = cap ? cap * 2 : 256;
			struct mfs_store_msg *p = realloc(out, c * sizeof(*p));

			if (p == NULL) {
				r = -2;
				break;
			}
			out = p;
			cap = c;
		}
		r = read_msg(rd, &out[got]);
		if (r != 0)
			break;
		if (got > 0 && out[got].uid <= out[got - 1].uid) {
			got++;
			r = -1;
			break;
		}
		got++;
	}
	if (r == 0 && read_tail(rd) != 0)
		r = -1;
	if (r != 0) {
		msgs_free(out, got);
		if (r == -2)
			return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
		return bad_file(rd, "corrupted or cut short", err);
	}
	*msgs = out;
	*n = got;
	mfs_err_clear(err);
	return MFS_OK;
}

void mfs_idx_close(struct mfs_idx_reader *rd)
{
	if (rd == NULL)
		return;
	fclose(rd->f);
	free(rd);
}
