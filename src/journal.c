/*
 * journal.c - writes kept while the server is out of reach, replayed in
 * order when it answers (see journal.h).
 *
 * The steps file holds one line per event, fields separated by a blank
 * and encoded by field_put() (no blank, control character or '%' inside):
 *
 *   Q <next seq>                          first line after a compaction
 *   S <seq> C <folder>                    mkdir: CREATE
 *   S <seq> R <folder>                    rmdir: DELETE
 *   S <seq> N <from> <to>                 mv of a folder: RENAME
 *   S <seq> A <folder> <date> <flags> ENTRY          cp into a folder
 *   S <seq> M <from> <validity> <uid> <to> ENTRY     mv of a message
 *   S <seq> E <folder> <validity> <uid>   rm -r of a message
 *   S <seq> F <folder> <validity> <uid> <how> <name>...  flags
 *   B <seq>    begun: sent to the server, its answer not yet known
 *   D <seq>    done
 *   X <seq>    failed on replay (the reason is in the failed file)
 *   K <seq>    cancelled by a later change (a moved or appended message
 *              moved again, flagged or removed before it reached the
 *              server: one step takes the place of both)
 *
 * ENTRY is "<size> <date> <flags> <from> <subject>": the listing entry the
 * message shows with in its new folder (size 0: none known). Each line is
 * written with one write() and fsync'd before the op returns; a line cut
 * short by a crash is dropped at the next load.
 */
#include "journal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "names.h"

/* How long the replay waits before it tries the server again when the
 * store does not say, and how much of an appended message is read for its
 * listing entry. */
#define RETRY_SECS 5
#define HEAD_MAX 65536
/* Lines of the failed file the status shows. */
#define FAILED_SHOWN 10

enum step_state { ST_WAIT, ST_DONE, ST_FAILED, ST_CANCELLED };

struct step {
	unsigned long seq;
	char op;	   /* 'C' 'R' 'N' 'A' 'M' 'E' 'F' (above) */
	int state;	   /* enum step_state */
	int begun;	   /* a B line is on disk */
	int inflight;	   /* the replay thread has it at the server */
	char *folder;	   /* owned: the folder it acts on (N, M: from) */
	char *to;	   /* owned: N, M: the new name or folder */
	uint32_t validity; /* M, E, F */
	uint32_t uid;	   /* M, E, F */
	time_t date;	   /* A: internal date (0: the server's clock) */
	unsigned flags;	   /* A: flags of the new message */
	char how;	   /* F: '+', '-' or '=' */
	char **names;	   /* owned: F, nnames flag names */
	size_t nnames;
	struct mfs_store_msg entry; /* A, M: as shown in the new folder;
				     * entry.size 0: none (M) */
};

struct journal {
	struct mfs_store *inner; /* owned */
	char *dir;		 /* owned */
	int fd;			 /* the steps file, O_APPEND */
	pthread_mutex_t lock;	 /* guards everything below but hooks */
	pthread_cond_t wake;
	struct step **steps; /* owned; in order */
	size_t n, room;
	unsigned long next_seq;
	size_t settled; /* steps on disk that no longer wait */
	char delim;	/* the hierarchy delimiter, once a list told it */
	time_t next_try;
	int stop;
	int started;
	pthread_t thread;
	pthread_mutex_t hooks_lock; /* held while a hook runs */
	struct mfs_journal_hooks hooks;
};

static const struct mfs_store_ops journal_ops;
static int step_send(struct journal *j, const struct step *s,
		     struct mfs_err *err);

static struct journal *journal_of(struct mfs_store *st)
{
	return st != NULL && st->ops == &journal_ops ? st->priv : NULL;
}

/* ---- steps ------------------------------------------------------------ */

static uint32_t standin_uid(unsigned long seq)
{
	return MFS_JOURNAL_UID | (uint32_t)(seq & 0x0FFFFFFFu);
}

static void step_free(struct step *s)
{
	size_t i;

	if (s == NULL)
		return;
	free(s->folder);
	free(s->to);
	for (i = 0; i < s->nnames; i++)
		free(s->names[i]);
	free(s->names);
	free(s->entry.from);
	free(s->entry.subject);
	free(s);
}

static int steps_push(struct journal *j, struct step *s)
{
	if (j->n == j->room) {
		size_t room = j->room ? 2 * j->room : 16;
		struct step **m = realloc(j->steps, room * sizeof(*m));

		if (m == NULL)
			return -1;
		j->steps = m;
		j->room = room;
	}
	j->steps[j->n++] = s;
	return 0;
}

static struct step *step_by_seq(struct journal *j, unsigned long seq)
{
	size_t i;

	for (i = 0; i < j->n; i++)
		if (j->steps[i]->seq == seq)
			return j->steps[i];
	return NULL;
}

/* The waiting step whose message shows under stand-in uid, or NULL. */
static struct step *step_by_standin(struct journal *j, uint32_t uid)
{
	size_t i;

	if (uid < MFS_JOURNAL_UID)
		return NULL;
	for (i = 0; i < j->n; i++) {
		struct step *s = j->steps[i];

		if ((s->op == 'A' || s->op == 'M') &&
		    standin_uid(s->seq) == uid)
			return s;
	}
	return NULL;
}

static int waiting(const struct journal *j)
{
	size_t i;

	for (i = 0; i < j->n; i++)
		if (j->steps[i]->state == ST_WAIT)
			return 1;
	return 0;
}

static char *appended_path(const struct journal *j, unsigned long seq)
{
	char *p;

	if (asprintf(&p, "%s/A%lu.eml", j->dir, seq) < 0)
		return NULL;
	return p;
}

/* ---- lines -------------------------------------------------------------- */

/* Appends field s to the stream, blank first: "=" for "", and %XX for '%',
 * '=', blanks, control characters and DEL. */
static void field_put(FILE *f, const char *s)
{
	fputc(' ', f);
	if (*s == '\0') {
		fputc('=', f);
		return;
	}
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;

		if (c <= 0x20 || c == 0x7f || c == '%' || c == '=')
			fprintf(f, "%%%02X", c);
		else
			fputc(c, f);
	}
}

/* Decodes one field in place; -1 when it is not well formed. */
static int field_get(char *s)
{
	char *w = s;

	if (strcmp(s, "=") == 0) {
		*s = '\0';
		return 0;
	}
	for (; *s != '\0'; s++) {
		if (*s != '%') {
			*w++ = *s;
			continue;
		}
		int hi = mfs_hex_value((unsigned char)s[1]);
		int lo = hi >= 0 ? mfs_hex_value((unsigned char)s[2]) : -1;

		if (lo < 0 || (hi == 0 && lo == 0))
			return -1;
		*w++ = (char)(hi * 16 + lo);
		s += 2;
	}
	*w = '\0';
	return 0;
}

static void entry_put(FILE *f, const struct mfs_store_msg *e)
{
	fprintf(f, " %" PRIu64 " %lld %u", e->size, (long long)e->date,
		e->flags);
	field_put(f, e->from != NULL ? e->from : "");
	field_put(f, e->subject != NULL ? e->subject : "");
}

/* Writes the step's S line to the stream. */
static void step_put(FILE *f, const struct step *s)
{
	size_t i;

	fprintf(f, "S %lu %c", s->seq, s->op);
	field_put(f, s->folder);
	switch (s->op) {
	case 'N':
		field_put(f, s->to);
		break;
	case 'A':
		fprintf(f, " %lld %u", (long long)s->date, s->flags);
		entry_put(f, &s->entry);
		break;
	case 'M':
		fprintf(f, " %" PRIu32 " %" PRIu32, s->validity, s->uid);
		field_put(f, s->to);
		entry_put(f, &s->entry);
		break;
	case 'E':
		fprintf(f, " %" PRIu32 " %" PRIu32, s->validity, s->uid);
		break;
	case 'F':
		fprintf(f, " %" PRIu32 " %" PRIu32 " %c", s->validity, s->uid,
			s->how);
		for (i = 0; i < s->nnames; i++)
			field_put(f, s->names[i]);
		break;
	}
	fputc('\n', f);
}

/* Writes text (len bytes, whole lines) to the steps file with one write()
 * and makes it durable. */
static int lines_write(struct journal *j, const char *text, size_t len,
		       struct mfs_err *err)
{
	ssize_t w = write(j->fd, text, len);

	if (w < 0 || (size_t)w != len || fsync(j->fd) != 0) {
		if (w > 0 && (size_t)w != len) {
			/* a short write: cut the torn line off again */
			struct stat st;

			if (fstat(j->fd, &st) == 0)
				(void)ftruncate(j->fd, st.st_size - w);
		}
		return mfs_err_set(err, MFS_E_IO, "journal %s/steps: %s",
				   j->dir, strerror(errno ? errno : EIO));
	}
	return MFS_OK;
}

/* Writes "<mark> <seq>" lines for marks[0..n), then the S lines of
 * adds[0..nadd), all with one write. */
static int marks_write(struct journal *j, const char *marks,
		       const unsigned long *seqs, size_t n,
		       struct step *const *adds, size_t nadd,
		       struct mfs_err *err)
{
	char *text = NULL;
	size_t len = 0, i;
	FILE *f = open_memstream(&text, &len);
	int r;

	if (f == NULL)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	for (i = 0; i < n; i++)
		fprintf(f, "%c %lu\n", marks[i], seqs[i]);
	for (i = 0; i < nadd; i++)
		step_put(f, adds[i]);
	if (fclose(f) != 0) {
		free(text);
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	}
	r = lines_write(j, text, len, err);
	free(text);
	return r;
}

static int mark(struct journal *j, char m, unsigned long seq,
		struct mfs_err *err)
{
	return marks_write(j, &m, &seq, 1, NULL, 0, err);
}

/* ---- loading ------------------------------------------------------------ */

static int parse_u32(const char *s, uint32_t *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno != 0 || *end != '\0' || end == s || v > UINT32_MAX)
		return -1;
	*out = (uint32_t)v;
	return 0;
}

static int parse_entry(char **f, size_t nf, struct mfs_store_msg *e)
{
	char *end;
	long long date;

	if (nf != 5)
		return -1;
	errno = 0;
	e->size = strtoull(f[0], &end, 10);
	if (errno != 0 || *end != '\0')
		return -1;
	date = strtoll(f[1], &end, 10);
	if (errno != 0 || *end != '\0')
		return -1;
	e->date = (time_t)date;
	e->flags = (unsigned)strtoul(f[2], &end, 10);
	if (*end != '\0')
		return -1;
	e->from = strdup(f[3]);
	e->subject = strdup(f[4]);
	return e->from != NULL && e->subject != NULL ? 0 : -1;
}

/* Builds a step from the fields of an S line (after "S <seq> <op>"). */
static struct step *step_parse(unsigned long seq, char op, char **f,
			       size_t nf)
{
	struct step *s = calloc(1, sizeof(*s));
	int bad = 0;
	size_t i;

	if (s == NULL || nf < 1)
		goto fail;
	s->seq = seq;
	s->op = op;
	s->folder = strdup(f[0]);
	if (s->folder == NULL)
		goto fail;
	switch (op) {
	case 'C':
	case 'R':
		bad = nf != 1;
		break;
	case 'N':
		bad = nf != 2 || (s->to = strdup(f[1])) == NULL;
		break;
	case 'A':
		bad = nf != 8 || parse_entry(f + 3, 5, &s->entry) != 0;
		if (!bad) {
			s->date = (time_t)strtoll(f[1], NULL, 10);
			s->flags = (unsigned)strtoul(f[2], NULL, 10);
		}
		break;
	case 'M':
		bad = nf != 9 || parse_u32(f[1], &s->validity) != 0 ||
		      parse_u32(f[2], &s->uid) != 0 ||
		      (s->to = strdup(f[3])) == NULL ||
		      parse_entry(f + 4, 5, &s->entry) != 0;
		break;
	case 'E':
		bad = nf != 3 || parse_u32(f[1], &s->validity) != 0 ||
		      parse_u32(f[2], &s->uid) != 0;
		break;
	case 'F':
		bad = nf < 4 || parse_u32(f[1], &s->validity) != 0 ||
		      parse_u32(f[2], &s->uid) != 0 || strlen(f[3]) != 1 ||
		      strchr("+-=", f[3][0]) == NULL;
		if (bad)
			break;
		s->how = f[3][0];
		s->nnames = nf - 4;
		s->names = calloc(s->nnames ? s->nnames : 1,
				  sizeof(*s->names));
		bad = s->names == NULL;
		for (i = 0; !bad && i < s->nnames; i++)
			bad = (s->names[i] = strdup(f[4 + i])) == NULL;
		break;
	default:
		bad = 1;
	}
	if (!bad)
		return s;
fail:
	step_free(s);
	return NULL;
}

/* Applies one line of the steps file. Returns -1 when it is not well
 * formed. */
static int line_load(struct journal *j, char *line)
{
	char *f[40], *save = NULL, *t;
	size_t nf = 0, i;
	unsigned long seq;
	struct step *s;
	char *end;

	for (t = strtok_r(line, " ", &save); t != NULL;
	     t = strtok_r(NULL, " ", &save)) {
		if (nf == sizeof(f) / sizeof(f[0]))
			return -1;
		f[nf++] = t;
	}
	if (nf < 2 || strlen(f[0]) != 1)
		return -1;
	errno = 0;
	seq = strtoul(f[1], &end, 10);
	if (errno != 0 || *end != '\0')
		return -1;
	if (f[0][0] == 'Q') {
		if (seq > j->next_seq)
			j->next_seq = seq;
		return 0;
	}
	if (f[0][0] == 'S') {
		if (nf < 4 || strlen(f[2]) != 1 || step_by_seq(j, seq) != NULL)
			return -1;
		for (i = 3; i < nf; i++)
			if (field_get(f[i]) != 0)
				return -1;
		s = step_parse(seq, f[2][0], f + 3, nf - 3);
		if (s == NULL || steps_push(j, s) != 0) {
			step_free(s);
			return -1;
		}
		if (seq >= j->next_seq)
			j->next_seq = seq + 1;
		return 0;
	}
	s = step_by_seq(j, seq);
	if (s == NULL || nf != 2)
		return -1;
	switch (f[0][0]) {
	case 'B':
		s->begun = 1;
		return 0;
	case 'D':
		s->state = ST_DONE;
		return 0;
	case 'X':
		s->state = ST_FAILED;
		return 0;
	case 'K':
		s->state = ST_CANCELLED;
		return 0;
	}
	return -1;
}

/* Reads the steps file; a last line without its newline (a write cut
 * short) is cut off. */
static int steps_load(struct journal *j, struct mfs_err *err)
{
	FILE *f = fdopen(dup(j->fd), "r");
	char *line = NULL;
	size_t room = 0, i;
	off_t good = 0;
	ssize_t len;

	if (f == NULL)
		return mfs_err_set(err, MFS_E_IO, "journal %s/steps: %s",
				   j->dir, strerror(errno));
	while ((len = getline(&line, &room, f)) > 0) {
		if (line[len - 1] != '\n')
			break; /* torn */
		good += len;
		line[len - 1] = '\0';
		if (line_load(j, line) != 0)
			mfs_log_err("journal %s/steps: a line that cannot be "
				    "read is skipped",
				    j->dir);
	}
	free(line);
	fclose(f);
	if (lseek(j->fd, 0, SEEK_END) != good &&
	    ftruncate(j->fd, good) != 0)
		return mfs_err_set(err, MFS_E_IO, "journal %s/steps: %s",
				   j->dir, strerror(errno));
	for (i = 0; i < j->n; i++)
		if (j->steps[i]->state != ST_WAIT)
			j->settled++;
	return MFS_OK;
}

/* When no step waits, the steps file starts again with only the next
 * sequence number (written to a new file, then renamed over). Caller
 * holds the lock. */
static void compact(struct journal *j)
{
	char *path = NULL, *tmp = NULL;
	size_t i;
	int fd = -1;

	if (j->settled == 0 || waiting(j))
		return;
	if (asprintf(&path, "%s/steps", j->dir) < 0 ||
	    asprintf(&tmp, "%s/steps.new", j->dir) < 0)
		goto out;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC,
		  0600);
	/* the new file holds the lock before it takes the old one's place */
	if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB) != 0 ||
	    dprintf(fd, "Q %lu\n", j->next_seq) < 0 || fsync(fd) != 0 ||
	    rename(tmp, path) != 0) {
		mfs_log_err("journal %s: cannot start the steps file again: "
			    "%s",
			    j->dir, strerror(errno));
		if (fd >= 0)
			close(fd);
		unlink(tmp);
		goto out;
	}
	close(j->fd);
	j->fd = fd;
	for (i = 0; i < j->n; i++)
		step_free(j->steps[i]);
	j->n = 0;
	j->settled = 0;
out:
	free(path);
	free(tmp);
}

/* ---- what the journal shows --------------------------------------------- */

/* Is name the folder f or one below it (f, then the delimiter)? Returns
 * the rest of name after f, or NULL. */
static const char *below(const struct journal *j, const char *name,
			 const char *f)
{
	size_t l = strlen(f);

	if (strncmp(name, f, l) != 0)
		return NULL;
	if (name[l] == '\0')
		return name + l;
	if (j->delim != '\0' ? name[l] == j->delim
			     : (name[l] == '.' || name[l] == '/'))
		return name + l;
	return NULL;
}

/* name after the rename of `from` to `to`, malloc'd; NULL when the rename
 * does not touch it or on ENOMEM (*nomem set). */
static char *renamed(const struct journal *j, const char *name,
		     const struct step *s, int *nomem)
{
	const char *rest = below(j, name, s->folder);
	char *out;

	if (rest == NULL)
		return NULL;
	if (asprintf(&out, "%s%s", s->to, rest) < 0) {
		*nomem = 1;
		return NULL;
	}
	return out;
}

/* Where the folder called `folder` now came from, following the waiting
 * renames back: *origin (malloc'd) is its name before them and *from the
 * index of the first step that may touch it. *origin NULL: the folder was
 * made by step *from - 1 (its listing starts empty; *made its name then).
 * Returns MFS_E_NOENT when a waiting step removed it. Caller holds the
 * lock. */
static int origin_of(struct journal *j, const char *folder, char **origin,
		     char **made, size_t *from, struct mfs_err *err)
{
	char *name = strdup(folder), *prev;
	int nomem = 0;
	size_t i;

	*origin = *made = NULL;
	*from = 0;
	if (name == NULL)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	for (i = j->n; i-- > 0;) {
		struct step *s = j->steps[i];

		if (s->state != ST_WAIT)
			continue;
		if (s->op == 'C' && strcmp(s->folder, name) == 0) {
			*made = name;
			*from = i + 1;
			return MFS_OK;
		}
		if (s->op == 'R' && strcmp(s->folder, name) == 0) {
			free(name);
			return mfs_err_set(err, MFS_E_NOENT,
					   "%s: removed while offline",
					   folder);
		}
		if (s->op == 'N' && below(j, name, s->to) == NULL &&
		    below(j, name, s->folder) != NULL) {
			free(name);
			return mfs_err_set(err, MFS_E_NOENT,
					   "%s: renamed while offline", folder);
		}
		if (s->op == 'N' && below(j, name, s->to) != NULL) {
			struct step back = {.folder = s->to, .to = s->folder};

			prev = name;
			name = renamed(j, prev, &back, &nomem);
			free(prev);
			if (name == NULL)
				return mfs_err_set(err, MFS_E_NOMEM,
						   "out of memory");
		}
	}
	*origin = name;
	return MFS_OK;
}

static unsigned flag_bit(const char *name)
{
	size_t i;

	for (i = 0; i < MFS_NFLAGS; i++)
		if (strcasecmp(name, mfs_flag_names[i]) == 0)
			return 1u << i;
	return 0;
}

/* The flags after a STORE of names with how ('+', '-', '='). Keywords
 * are not among the bits a listing shows. */
static unsigned flags_after(unsigned now, char how, char *const *names,
			    size_t n)
{
	unsigned bits = 0;
	size_t i;

	for (i = 0; i < n; i++)
		bits |= flag_bit(names[i]);
	if (how == '+')
		return now | bits;
	if (how == '-')
		return now & ~bits;
	return bits;
}

static int entry_copy(struct mfs_store_msg *out,
		      const struct mfs_store_msg *in)
{
	*out = *in;
	out->uidl = NULL;
	out->shown = 0;
	out->from = strdup(in->from != NULL ? in->from : "");
	out->subject = strdup(in->subject != NULL ? in->subject : "");
	if (out->from == NULL || out->subject == NULL) {
		free(out->from);
		free(out->subject);
		out->from = out->subject = NULL;
		return -1;
	}
	return 0;
}

static struct mfs_store_msg *entry_find(struct mfs_store_msg *msgs, size_t n,
					uint32_t uid)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (msgs[i].uid == uid)
			return &msgs[i];
	return NULL;
}

static void entry_drop(struct mfs_store_msg *msgs, size_t *n, uint32_t uid)
{
	struct mfs_store_msg *m = entry_find(msgs, *n, uid);

	if (m == NULL)
		return;
	free(m->uidl);
	free(m->from);
	free(m->subject);
	memmove(m, m + 1, (size_t)(msgs + *n - (m + 1)) * sizeof(*m));
	(*n)--;
}

static int entry_add(struct mfs_store_msg **msgs, size_t *n,
		     const struct step *s)
{
	struct mfs_store_msg *m = realloc(*msgs, (*n + 1) * sizeof(*m));

	if (m == NULL)
		return -1;
	*msgs = m;
	if (entry_copy(&m[*n], &s->entry) != 0)
		return -1;
	m[*n].uid = standin_uid(s->seq);
	(*n)++;
	return 0;
}

/* Applies the waiting steps from index `from` on to the listing of the
 * folder called `name` at that point. Caller holds the lock. */
static int msgs_apply(struct journal *j, size_t from, const char *name,
		      struct mfs_store_msg **msgs, size_t *n)
{
	char *cur = strdup(name);
	int nomem = cur == NULL;
	size_t i;

	for (i = from; i < j->n && !nomem; i++) {
		struct step *s = j->steps[i];
		struct mfs_store_msg *m;
		char *next;

		if (s->state != ST_WAIT)
			continue;
		switch (s->op) {
		case 'N':
			next = renamed(j, cur, s, &nomem);
			if (next != NULL) {
				free(cur);
				cur = next;
			}
			break;
		case 'E':
			if (strcmp(s->folder, cur) == 0)
				entry_drop(*msgs, n, s->uid);
			break;
		case 'F':
			m = strcmp(s->folder, cur) == 0
				    ? entry_find(*msgs, *n, s->uid)
				    : NULL;
			if (m != NULL)
				m->flags = flags_after(m->flags, s->how,
						       s->names, s->nnames);
			break;
		case 'M':
			if (strcmp(s->folder, cur) == 0)
				entry_drop(*msgs, n, s->uid);
			if (strcmp(s->to, cur) == 0 && s->entry.size > 0 &&
			    entry_add(msgs, n, s) != 0)
				nomem = 1;
			break;
		case 'A':
			if (strcmp(s->folder, cur) == 0 &&
			    entry_add(msgs, n, s) != 0)
				nomem = 1;
			break;
		}
	}
	free(cur);
	return nomem ? -1 : 0;
}

/* The listing of folder with the waiting steps applied: the server's (or,
 * out of reach or with kept_only, the one kept on disk) for the folder it
 * was before them. */
static int listing(struct journal *j, const char *folder, int kept_only,
		   uint32_t *validity, struct mfs_store_msg **msgs, size_t *n,
		   mfs_index_piece_fn piece, void *ctx, struct mfs_err *err)
{
	struct mfs_store *in = j->inner;
	char *origin = NULL, *made = NULL;
	struct mfs_err kerr;
	size_t from = 0, i;
	int r;

	*msgs = NULL;
	*n = 0;
	*validity = 0;
	pthread_mutex_lock(&j->lock);
	r = origin_of(j, folder, &origin, &made, &from, err);
	/* the parts of a listing as it comes are the server's as they are:
	 * shown only while no step waits, as a waiting step may change any
	 * folder's listing (msgs_apply below) */
	for (i = 0; i < j->n && piece != NULL; i++)
		if (j->steps[i]->state == ST_WAIT)
			piece = NULL;
	pthread_mutex_unlock(&j->lock);
	if (r != MFS_OK)
		return r;
	if (origin != NULL) {
		/* out of reach: the listing kept on disk, else the error */
		if (kept_only)
			r = MFS_E_OFFLINE;
		else if (piece != NULL && in->ops->index_pieces != NULL)
			r = in->ops->index_pieces(in, origin, validity, msgs,
						  n, piece, ctx, err);
		else
			r = in->ops->index(in, origin, validity, msgs, n,
					   err);
		if (mfs_err_unreachable(r)) {
			int k = in->ops->kept_index == NULL
					? mfs_err_set(&kerr, MFS_E_NOENT,
						      "no listing kept")
					: in->ops->kept_index(in, origin,
							      validity, msgs,
							      n, &kerr);

			if (k == MFS_OK || kept_only) {
				r = k;
				if (k != MFS_OK)
					*err = kerr;
			}
		}
		if (r != MFS_OK) {
			free(origin);
			return r;
		}
	}
	pthread_mutex_lock(&j->lock);
	r = msgs_apply(j, from, origin != NULL ? origin : made, msgs, n);
	pthread_mutex_unlock(&j->lock);
	free(origin);
	free(made);
	if (r != 0) {
		mfs_store_msgs_free(*msgs, *n);
		*msgs = NULL;
		*n = 0;
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	}
	mfs_err_clear(err);
	return MFS_OK;
}

/* The listing entry of uid in folder as the journal shows it, from what is
 * kept on disk: *out (the caller frees its strings). -1 when not known. */
static int entry_of(struct journal *j, const char *folder, uint32_t uid,
		    struct mfs_store_msg *out)
{
	struct mfs_store_msg *msgs = NULL, *m;
	struct mfs_err err;
	uint32_t validity;
	size_t n = 0;
	int r = -1;

	memset(out, 0, sizeof(*out));
	if (listing(j, folder, 1, &validity, &msgs, &n, NULL, NULL, &err) !=
	    MFS_OK)
		return -1;
	m = entry_find(msgs, n, uid);
	if (m != NULL)
		r = entry_copy(out, m);
	mfs_store_msgs_free(msgs, n);
	return r;
}

static int folder_find(const struct mfs_store_folder *f, size_t n,
		       const char *name)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (strcmp(f[i].name, name) == 0)
			return (int)i;
	return -1;
}

/* A folder made while offline: its delimiter and the part of its name
 * not shown follow its parent's, else any folder under the same prefix. */
static void folder_guess(const struct journal *j, struct mfs_store_folder *nf,
			 const struct mfs_store_folder *f, size_t n)
{
	size_t i, best = 0;
	int found = 0;

	nf->delim = j->delim;
	for (i = 0; i < n; i++) {
		size_t l = strlen(f[i].name);
		const char *rest = below(j, nf->name, f[i].name);

		if (rest != NULL && *rest != '\0' && l > best) {
			best = l;
			nf->shown = f[i].shown;
			nf->delim = f[i].delim;
			found = 1;
		}
	}
	for (i = 0; i < n && !found; i++)
		if (f[i].shown > 0 &&
		    strncmp(nf->name, f[i].name, f[i].shown) == 0) {
			nf->shown = f[i].shown;
			found = 1;
		}
}

/* Applies the waiting folder steps to a folder list. Caller holds the
 * lock. Returns -1 on ENOMEM (the list may be half done). */
static int folders_apply(struct journal *j, struct mfs_store_folder **fp,
			 size_t *np)
{
	size_t i, k;
	int nomem = 0;

	for (k = 0; k < *np; k++)
		if ((*fp)[k].delim != '\0' && j->delim == '\0')
			j->delim = (*fp)[k].delim;
	for (i = 0; i < j->n && !nomem; i++) {
		struct step *s = j->steps[i];
		struct mfs_store_folder *f = *fp, nf;
		int at;

		if (s->state != ST_WAIT)
			continue;
		if (s->op == 'C' && folder_find(f, *np, s->folder) < 0) {
			memset(&nf, 0, sizeof(nf));
			nf.name = strdup(s->folder);
			f = realloc(f, (*np + 1) * sizeof(*f));
			if (nf.name == NULL || f == NULL) {
				free(nf.name);
				return -1;
			}
			*fp = f;
			folder_guess(j, &nf, f, *np);
			f[(*np)++] = nf;
		} else if (s->op == 'R' &&
			   (at = folder_find(f, *np, s->folder)) >= 0) {
			free(f[at].name);
			memmove(&f[at], &f[at + 1],
				(*np - (size_t)at - 1) * sizeof(*f));
			(*np)--;
		} else if (s->op == 'N') {
			for (k = 0; k < *np && !nomem; k++) {
				char *to = renamed(j, f[k].name, s, &nomem);

				if (to != NULL) {
					free(f[k].name);
					f[k].name = to;
				}
			}
		}
	}
	return nomem ? -1 : 0;
}

/* ---- journaling a write ------------------------------------------------- */

static struct step *step_new(struct journal *j, char op, const char *folder,
			     const char *to)
{
	struct step *s = calloc(1, sizeof(*s));

	if (s == NULL)
		return NULL;
	s->op = op;
	s->seq = j->next_seq;
	s->folder = strdup(folder);
	s->to = to != NULL ? strdup(to) : NULL;
	if (s->folder == NULL || (to != NULL && s->to == NULL)) {
		step_free(s);
		return NULL;
	}
	return s;
}

/* Makes steps adds[0..nadd) part of the journal, cancelling the steps
 * cancel[0..ncancel) (each waiting, not in flight) in the same write.
 * Takes the steps (freed on failure). Caller holds the lock. */
static int steps_add(struct journal *j, struct step **adds, size_t nadd,
		     struct step **cancel, size_t ncancel,
		     struct mfs_err *err)
{
	unsigned long seqs[4];
	char marks[4];
	size_t i;
	int r;

	for (i = 0; i < nadd; i++)
		adds[i]->seq = j->next_seq + i;
	for (i = 0; i < ncancel; i++) {
		marks[i] = 'K';
		seqs[i] = cancel[i]->seq;
	}
	if (j->n + nadd > j->room) {
		size_t room = j->n + nadd + 16;
		struct step **m = realloc(j->steps, room * sizeof(*m));

		if (m == NULL) {
			r = mfs_err_set(err, MFS_E_NOMEM, "out of memory");
			goto fail;
		}
		j->steps = m;
		j->room = room;
	}
	r = marks_write(j, marks, seqs, ncancel, adds, nadd, err);
	if (r != MFS_OK)
		goto fail;
	j->next_seq += nadd;
	for (i = 0; i < ncancel; i++) {
		cancel[i]->state = ST_CANCELLED;
		j->settled++;
	}
	for (i = 0; i < nadd; i++)
		j->steps[j->n++] = adds[i];
	pthread_cond_signal(&j->wake);
	return MFS_OK;
fail:
	for (i = 0; i < nadd; i++)
		step_free(adds[i]);
	return r;
}

static int step_add(struct journal *j, struct step *s, struct mfs_err *err)
{
	int r;

	if (s == NULL)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	r = steps_add(j, &s, 1, NULL, 0, err);
	if (r == MFS_OK)
		mfs_log_info("offline: kept in the journal to be done later");
	return r;
}

/* A message that shows under a stand-in UID is still a step that waits,
 * or one the server is being told of right now. */
static int standin_busy(const struct step *s, struct mfs_err *err)
{
	if (s->state != ST_WAIT || s->inflight)
		return mfs_err_set(err, MFS_E_NOENT,
				   "the message is on its way to the server; "
				   "its folder is listed again");
	return MFS_OK;
}

/* The bytes of append step s hard-linked under the name of step t. */
static int appended_link(struct journal *j, const struct step *s,
			 const struct step *t, struct mfs_err *err)
{
	char *from = appended_path(j, s->seq), *to = appended_path(j, t->seq);
	int r = MFS_OK;

	if (from == NULL || to == NULL)
		r = mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	else if (link(from, to) != 0)
		r = mfs_err_set(err, MFS_E_IO, "journal: %s: %s", to,
				strerror(errno));
	free(from);
	free(to);
	return r;
}

static void appended_unlink(struct journal *j, unsigned long seq)
{
	char *p = appended_path(j, seq);

	if (p != NULL)
		unlink(p);
	free(p);
}

/* A copy of append step s under a new sequence number, to folder. */
static struct step *append_again(struct journal *j, const struct step *s,
				 const char *folder, unsigned flags)
{
	struct step *t = step_new(j, 'A', folder, NULL);

	if (t == NULL)
		return NULL;
	t->date = s->date;
	t->flags = flags;
	if (entry_copy(&t->entry, &s->entry) != 0) {
		step_free(t);
		return NULL;
	}
	t->entry.flags = flags;
	return t;
}

/* ---- the store ops -------------------------------------------------------- */

static int j_connect(struct mfs_store *st, struct mfs_err *err)
{
	struct mfs_store *in = journal_of(st)->inner;

	return in->ops->connect(in, err);
}

static int j_list(struct mfs_store *st, struct mfs_store_folder **folders,
		  size_t *n, struct mfs_err *err)
{
	struct journal *j = journal_of(st);
	int r = j->inner->ops->list(j->inner, folders, n, err);

	if (r != MFS_OK)
		return r;
	pthread_mutex_lock(&j->lock);
	r = folders_apply(j, folders, n);
	pthread_mutex_unlock(&j->lock);
	if (r != 0) {
		mfs_store_folders_free(*folders, *n);
		*folders = NULL;
		*n = 0;
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	}
	return MFS_OK;
}

static int j_personal(struct mfs_store *st, char **prefix, char *delim,
		      struct mfs_err *err)
{
	struct mfs_store *in = journal_of(st)->inner;

	return in->ops->personal(in, prefix, delim, err);
}

static int j_index(struct mfs_store *st, const char *folder,
		   uint32_t *validity, struct mfs_store_msg **msgs, size_t *n,
		   struct mfs_err *err)
{
	return listing(journal_of(st), folder, 0, validity, msgs, n, NULL,
		       NULL, err);
}

static int j_index_pieces(struct mfs_store *st, const char *folder,
			  uint32_t *validity, struct mfs_store_msg **msgs,
			  size_t *n, mfs_index_piece_fn piece, void *ctx,
			  struct mfs_err *err)
{
	return listing(journal_of(st), folder, 0, validity, msgs, n, piece,
		       ctx, err);
}

static int j_kept_index(struct mfs_store *st, const char *folder,
			uint32_t *validity, struct mfs_store_msg **msgs,
			size_t *n, struct mfs_err *err)
{
	return listing(journal_of(st), folder, 1, validity, msgs, n, NULL,
		       NULL, err);
}

static int copy_fd(int in, int out, size_t *len, struct mfs_err *err)
{
	char buf[65536];
	ssize_t got;
	off_t off = 0;

	*len = 0;
	while ((got = pread(in, buf, sizeof(buf), off)) > 0) {
		ssize_t put = 0;

		while (put < got) {
			ssize_t w = write(out, buf + put, (size_t)(got - put));

			if (w < 0)
				return mfs_err_set(err, MFS_E_IO, "%s",
						   strerror(errno));
			put += w;
		}
		off += got;
	}
	if (got < 0)
		return mfs_err_set(err, MFS_E_IO, "%s", strerror(errno));
	*len = (size_t)off;
	return MFS_OK;
}

/*
 * The bytes of a message shown under a stand-in UID: the appended file,
 * or for a moved message its bytes in the cache, else from the server in
 * the folder it still is in there. *handled is 0 when uid is no stand-in
 * the journal knows (the caller asks the server).
 */
static int standin_fetch(struct journal *j, uint32_t uid, int fd,
			 size_t *len, int *handled, struct mfs_err *err)
{
	struct mfs_store_msg msg;
	struct step *s;
	char *path = NULL, *src = NULL;
	uint32_t validity = 0;
	int r, in = -1;

	*handled = 0;
	pthread_mutex_lock(&j->lock);
	s = step_by_standin(j, uid);
	if (s == NULL) {
		pthread_mutex_unlock(&j->lock);
		return MFS_OK;
	}
	*handled = 1;
	r = standin_busy(s, err);
	memset(&msg, 0, sizeof(msg));
	if (r == MFS_OK && s->op == 'A') {
		path = appended_path(j, s->seq);
		in = path != NULL ? open(path, O_RDONLY | O_CLOEXEC) : -1;
		if (in < 0)
			r = mfs_err_set(err, MFS_E_IO, "journal: %s: %s",
					path ? path : "", strerror(errno));
	} else if (r == MFS_OK) {
		src = strdup(s->folder);
		validity = s->validity;
		msg.uid = s->uid;
		msg.size = s->entry.size;
		if (src == NULL)
			r = mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	}
	pthread_mutex_unlock(&j->lock);
	if (r == MFS_OK && in < 0) {
		pthread_mutex_lock(&j->hooks_lock);
		if (j->hooks.cached == NULL ||
		    j->hooks.cached(j->hooks.ctx, src, validity, msg.uid,
				    msg.size, &in) != 0)
			in = -1;
		pthread_mutex_unlock(&j->hooks_lock);
		if (in < 0)
			r = j->inner->ops->fetch(j->inner, src, validity, &msg,
						 fd, len, err);
	}
	if (r == MFS_OK && in >= 0)
		r = copy_fd(in, fd, len, err);
	if (in >= 0)
		close(in);
	free(path);
	free(src);
	return r;
}

static int j_fetch(struct mfs_store *st, const char *folder,
		   uint32_t validity, const struct mfs_store_msg *msg, int fd,
		   size_t *len, struct mfs_err *err)
{
	struct journal *j = journal_of(st);
	int handled, r = standin_fetch(j, msg->uid, fd, len, &handled, err);

	if (handled)
		return r;
	return j->inner->ops->fetch(j->inner, folder, validity, msg, fd, len,
				    err);
}

static int is_standin(struct journal *j, uint32_t uid)
{
	int known;

	pthread_mutex_lock(&j->lock);
	known = step_by_standin(j, uid) != NULL;
	pthread_mutex_unlock(&j->lock);
	return known;
}

/* The messages of uids[0..n) that the server has (no stand-in) into
 * rest (room for n), in order; the stand-ins among them go to done_fn
 * whole as j_fetch_many delivers them. */
static size_t standins_apart(struct journal *j, const uint32_t *uids,
			     size_t n, uint32_t *rest,
			     int (*open_fn)(void *ctx),
			     void (*done_fn)(void *ctx, uint32_t uid, int fd,
					     size_t len),
			     void *ctx)
{
	size_t nrest = 0, i;

	for (i = 0; i < n; i++) {
		struct mfs_err e;
		size_t len = 0;
		int fd, handled;

		if (!is_standin(j, uids[i])) {
			rest[nrest++] = uids[i];
			continue;
		}
		/* fetch-ahead: what cannot be had now is skipped */
		fd = open_fn(ctx);
		if (fd < 0)
			continue;
		if (standin_fetch(j, uids[i], fd, &len, &handled, &e) != MFS_OK)
			len = 0; /* not a uid it asked for: dropped */
		done_fn(ctx, len > 0 ? uids[i] : 0, fd, len);
	}
	return nrest;
}


static int j_fetch_many(struct mfs_store *st, const char *folder,
			uint32_t validity, const uint32_t *uids, size_t n,
			int (*open_fn)(void *ctx),
			void (*done_fn)(void *ctx, uint32_t uid, int fd,
					size_t len),
			void *ctx, struct mfs_err *err)
{
	struct journal *j = journal_of(st);
	uint32_t *rest = malloc((n ? n : 1) * sizeof(*rest));
	size_t nrest;
	int r = MFS_OK;

	if (rest == NULL)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	nrest = standins_apart(j, uids, n, rest, open_fn, done_fn, ctx);
	if (nrest > 0)
		r = j->inner->ops->fetch_many(j->inner, folder, validity, rest,
					      nrest, open_fn, done_fn, ctx,
					      err);
	free(rest);
	return r;
}

static int j_skeleton(struct mfs_store *st, const char *folder,
		      uint32_t validity, const struct mfs_store_msg *msg,
		      uint64_t hole_min, int fd, struct mfs_seg **segs,
		      size_t *nsegs, struct mfs_err *err)
{
	struct journal *j = journal_of(st);

	if (is_standin(j, msg->uid)) {
		*segs = NULL;
		*nsegs = 0; /* fetch it whole */
		return MFS_OK;
	}
	return j->inner->ops->skeleton(j->inner, folder, validity, msg,
				       hole_min, fd, segs, nsegs, err);
}

/* skeleton_many's callbacks through the journal (j_skeleton_many): each
 * goes to the caller's, and the batches the caller adds on the way (more)
 * lose their stand-ins as the first one does. */
struct j_many {
	struct journal *j;
	const struct mfs_many_cb *outer;
};

static int j_many_open(void *ctx)
{
	const struct mfs_many_cb *o = ((struct j_many *)ctx)->outer;

	return o->open_fn(o->ctx);
}

static void j_many_done(void *ctx, uint32_t uid, int fd, size_t len)
{
	const struct mfs_many_cb *o = ((struct j_many *)ctx)->outer;

	o->done_fn(o->ctx, uid, fd, len);
}

static int j_many_skel_open(void *ctx)
{
	const struct mfs_many_cb *o = ((struct j_many *)ctx)->outer;

	return o->skel_open(o->ctx);
}

static void j_many_skel_done(void *ctx, uint32_t uid, int fd,
			     struct mfs_seg *segs, size_t nsegs)
{
	const struct mfs_many_cb *o = ((struct j_many *)ctx)->outer;

	o->skel_done(o->ctx, uid, fd, segs, nsegs);
}

/* uids[0..*n) without the stand-ins. */
static void standins_out(struct journal *j, uint32_t *uids, size_t *n)
{
	size_t k = 0, i;

	for (i = 0; i < *n; i++)
		if (!is_standin(j, uids[i]))
			uids[k++] = uids[i];
	*n = k;
}

/* The stand-ins of an added batch are left out, not delivered: this runs
 * inside the server's call, and a stand-in may need a fetch of its own;
 * the reader that wants one fetches it as any message a batch did not
 * bring. */
static int j_many_more(void *ctx, struct mfs_many_more *nx)
{
	struct j_many *w = ctx;
	const struct mfs_many_cb *o = w->outer;

	if (!o->more(o->ctx, nx))
		return 0;
	standins_out(w->j, nx->uids, &nx->n);
	standins_out(w->j, nx->whole, &nx->nwhole);
	standins_out(w->j, nx->later, &nx->nlater);
	return 1;
}

/* Stand-ins come whole (their skeleton is "none"); the rest as the
 * server's store brings them. */
static int j_skeleton_many(struct mfs_store *st, const char *folder,
			   uint32_t validity, const uint32_t *uids, size_t n,
			   uint64_t hole_min, const uint32_t *whole,
			   size_t nwhole, const uint32_t *later, size_t nlater,
			   const struct mfs_many_cb *cb, struct mfs_err *err)
{
	struct journal *j = journal_of(st);
	struct mfs_store *in = j->inner;
	size_t room = n + nwhole + nlater + 1, nl, nw, nt, i;
	uint32_t *rest = malloc(room * sizeof(*rest)), *large, *ahead;
	int r = MFS_OK;

	if (rest == NULL)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	nl = standins_apart(j, uids, n, rest, cb->open_fn, cb->done_fn,
			    cb->ctx);
	large = rest;
	nw = standins_apart(j, whole, nwhole, rest + nl, cb->open_fn,
			    cb->done_fn, cb->ctx);
	ahead = rest + nl + nw;
	for (nt = 0, i = 0; i < nlater; i++)
		if (!is_standin(j, later[i]))
			ahead[nt++] = later[i];
	if (nl + nw + nt > 0) {
		struct j_many w = {j, cb};
		struct mfs_many_cb jcb = {j_many_open, j_many_done,
					  j_many_skel_open, j_many_skel_done,
					  &w, cb->more ? j_many_more : NULL};

		r = in->ops->skeleton_many(in, folder, validity, large, nl,
					   hole_min, rest + nl, nw, ahead, nt,
					   &jcb, err);
	}
	free(rest);
	return r;
}

static int j_fetch_section(struct mfs_store *st, const char *folder,
			   uint32_t validity, const struct mfs_store_msg *msg,
			   const char *section, int fd, size_t *len,
			   struct mfs_err *err)
{
	struct journal *j = journal_of(st);

	if (is_standin(j, msg->uid)) {
		int handled;

		if (*section != '\0')
			return mfs_err_set(err, MFS_E_IO,
					   "a part of a message not on the "
					   "server yet");
		return standin_fetch(j, msg->uid, fd, len, &handled, err);
	}
	return j->inner->ops->fetch_section(j->inner, folder, validity, msg,
					    section, fd, len, err);
}

static int j_search(struct mfs_store *st, const char *const *folders,
		    size_t n, const struct mfs_query *q,
		    struct mfs_store_hits *hits, struct mfs_err *err)
{
	struct mfs_store *in = journal_of(st)->inner;

	return in->ops->search(in, folders, n, q, hits, err);
}

/* Whether a write goes to the journal: always while steps wait (so that
 * the order holds), else when the server, asked, is out of reach. */
static int journal_first(struct journal *j)
{
	int w;

	pthread_mutex_lock(&j->lock);
	w = waiting(j);
	pthread_mutex_unlock(&j->lock);
	return w;
}

/* A write that needs nothing more than its step: to the server while
 * nothing waits, else (or when the server is out of reach) to the
 * journal. Takes s. */
static int write_step(struct journal *j, struct step *s, struct mfs_err *err)
{
	int r;

	if (s == NULL)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	if (!journal_first(j)) {
		r = step_send(j, s, err);
		if (r != MFS_E_OFFLINE) {
			step_free(s);
			return r;
		}
	}
	pthread_mutex_lock(&j->lock);
	r = step_add(j, s, err);
	pthread_mutex_unlock(&j->lock);
	return r;
}

static int j_create(struct mfs_store *st, const char *folder,
		    struct mfs_err *err)
{
	struct journal *j = journal_of(st);

	return write_step(j, step_new(j, 'C', folder, NULL), err);
}

static int j_remove(struct mfs_store *st, const char *folder,
		    struct mfs_err *err)
{
	struct journal *j = journal_of(st);

	return write_step(j, step_new(j, 'R', folder, NULL), err);
}

static int j_rename(struct mfs_store *st, const char *from, const char *to,
		    struct mfs_err *err)
{
	struct journal *j = journal_of(st);

	return write_step(j, step_new(j, 'N', from, to), err);
}

/* Copies len bytes of fd into the journal as the bytes of step s, on
 * disk before the step is. */
static int appended_save(struct journal *j, const struct step *s, int fd,
			 uint64_t len, struct mfs_err *err)
{
	char *path = appended_path(j, s->seq), *tmp = NULL;
	size_t got = 0;
	int out = -1, r = MFS_OK;

	if (path == NULL || asprintf(&tmp, "%s.new", path) < 0) {
		free(path);
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	}
	out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (out < 0)
		r = mfs_err_set(err, MFS_E_IO, "journal: %s: %s", tmp,
				strerror(errno));
	if (r == MFS_OK)
		r = copy_fd(fd, out, &got, err);
	if (r == MFS_OK && got != len)
		r = mfs_err_set(err, MFS_E_IO, "journal: %s: %zu bytes of %"
					       PRIu64,
				tmp, got, len);
	if (r == MFS_OK && (fsync(out) != 0 || rename(tmp, path) != 0))
		r = mfs_err_set(err, MFS_E_IO, "journal: %s: %s", path,
				strerror(errno));
	if (out >= 0)
		close(out);
	if (r != MFS_OK)
		unlink(tmp);
	free(tmp);
	free(path);
	return r;
}

/* The listing entry of a message to append, from its header. */
static int appended_entry(int fd, uint64_t len, time_t date, unsigned flags,
			  struct mfs_store_msg *e)
{
	char *head = malloc(HEAD_MAX + 1), *end;
	ssize_t got;
	int r;

	if (head == NULL)
		return -1;
	got = pread(fd, head, HEAD_MAX, 0);
	if (got < 0)
		got = 0;
	head[got] = '\0';
	end = strstr(head, "\r\n\r\n");
	if (end == NULL)
		end = strstr(head, "\n\n");
	if (end != NULL)
		end[1] = '\0';
	memset(e, 0, sizeof(*e));
	r = mfs_store_msg_headers(e, head);
	free(head);
	e->size = len;
	e->flags = flags;
	if (e->date == 0)
		e->date = date != 0 ? date : time(NULL);
	return r;
}

static int j_append(struct mfs_store *st, const char *folder, int fd,
		    uint64_t len, time_t date, unsigned flags,
		    uint32_t *validity, uint32_t *uid, struct mfs_err *err)
{
	struct journal *j = journal_of(st);
	struct step *s;
	int r;

	if (!journal_first(j)) {
		r = j->inner->ops->append(j->inner, folder, fd, len, date,
					  flags, validity, uid, err);
		if (r != MFS_E_OFFLINE)
			return r;
	}
	*validity = 0;
	*uid = 0;
	if (len == 0)
		return mfs_err_set(err, MFS_E_INVAL, "an empty message");
	pthread_mutex_lock(&j->lock);
	s = step_new(j, 'A', folder, NULL);
	r = s == NULL ? mfs_err_set(err, MFS_E_NOMEM, "out of memory")
		      : MFS_OK;
	if (r == MFS_OK) {
		s->date = date;
		s->flags = flags;
		if (appended_entry(fd, len, date, flags, &s->entry) != 0)
			r = mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	}
	if (r == MFS_OK)
		r = appended_save(j, s, fd, len, err);
	if (r == MFS_OK) {
		unsigned long seq = s->seq;

		r = step_add(j, s, err);
		if (r != MFS_OK)
			appended_unlink(j, seq);
	} else {
		step_free(s);
	}
	pthread_mutex_unlock(&j->lock);
	return r;
}

/* A message shown under a stand-in moves again: the step that put it
 * there gives way to one that takes it from where the server has it. */
static int standin_move(struct journal *j, struct step *s, const char *to,
			struct mfs_err *err)
{
	struct step *t;
	int r;

	if ((r = standin_busy(s, err)) != MFS_OK)
		return r;
	if (s->op == 'M' && strcmp(s->folder, to) == 0)
		return steps_add(j, NULL, 0, &s, 1, err); /* back home */
	t = s->op == 'A' ? append_again(j, s, to, s->flags)
			 : step_new(j, 'M', s->folder, to);
	if (t == NULL)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	if (s->op == 'M') {
		t->validity = s->validity;
		t->uid = s->uid;
		if (entry_copy(&t->entry, &s->entry) != 0) {
			step_free(t);
			return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
		}
	} else {
		t->seq = j->next_seq;
		if ((r = appended_link(j, s, t, err)) != MFS_OK) {
			step_free(t);
			return r;
		}
	}
	r = steps_add(j, &t, 1, &s, 1, err);
	if (s->op == 'A')
		appended_unlink(j, r == MFS_OK ? s->seq : j->next_seq);
	return r;
}

static int j_move(struct mfs_store *st, const char *from, uint32_t validity,
		  uint32_t uid, const char *to, struct mfs_err *err)
{
	struct journal *j = journal_of(st);
	struct step *s;
	int r;

	pthread_mutex_lock(&j->lock);
	s = step_by_standin(j, uid);
	if (s != NULL) {
		r = standin_move(j, s, to, err);
		pthread_mutex_unlock(&j->lock);
		return r;
	}
	pthread_mutex_unlock(&j->lock);
	if (!journal_first(j)) {
		r = j->inner->ops->move(j->inner, from, validity, uid, to, err);
		if (r != MFS_E_OFFLINE)
			return r;
	}
	s = step_new(j, 'M', from, to);
	if (s == NULL)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	s->validity = validity;
	s->uid = uid;
	/* the entry it shows with in `to`; size 0 (unknown) shows none */
	if (entry_of(j, from, uid, &s->entry) != 0)
		memset(&s->entry, 0, sizeof(s->entry));
	pthread_mutex_lock(&j->lock);
	s->seq = j->next_seq;
	r = step_add(j, s, err);
	pthread_mutex_unlock(&j->lock);
	return r;
}

static int j_expunge(struct mfs_store *st, const char *folder,
		     uint32_t validity, uint32_t uid, struct mfs_err *err)
{
	struct journal *j = journal_of(st);
	struct step *s;
	int r;

	pthread_mutex_lock(&j->lock);
	s = step_by_standin(j, uid);
	if (s != NULL) {
		/* never on the server: forgotten; moved: deleted where it is */
		struct step *t = NULL;

		r = standin_busy(s, err);
		if (r == MFS_OK && s->op == 'M') {
			t = step_new(j, 'E', s->folder, NULL);
			if (t == NULL)
				r = mfs_err_set(err, MFS_E_NOMEM,
						"out of memory");
			else {
				t->validity = s->validity;
				t->uid = s->uid;
			}
		}
		if (r == MFS_OK)
			r = steps_add(j, t != NULL ? &t : NULL, t != NULL, &s,
				      1, err);
		if (r == MFS_OK && s->op == 'A')
			appended_unlink(j, s->seq);
		pthread_mutex_unlock(&j->lock);
		return r;
	}
	pthread_mutex_unlock(&j->lock);
	s = step_new(j, 'E', folder, NULL);
	if (s != NULL) {
		s->validity = validity;
		s->uid = uid;
	}
	return write_step(j, s, err);
}

static struct step *flags_step(struct journal *j, const char *folder,
			       uint32_t validity, uint32_t uid, char how,
			       const char *const *flags, size_t n)
{
	struct step *s = step_new(j, 'F', folder, NULL);
	size_t i;

	if (s == NULL)
		return NULL;
	s->validity = validity;
	s->uid = uid;
	s->how = how;
	s->names = calloc(n ? n : 1, sizeof(*s->names));
	if (s->names == NULL) {
		step_free(s);
		return NULL;
	}
	for (i = 0; i < n; i++) {
		if (strchr(flags[i], ' ') != NULL ||
		    (s->names[s->nnames] = strdup(flags[i])) == NULL) {
			step_free(s);
			return NULL;
		}
		s->nnames++;
	}
	return s;
}

/* Flags of a message shown under a stand-in: an appended one is appended
 * with them; a moved one gets them where the server has it, then moves. */
static int standin_flags(struct journal *j, struct step *s, char how,
			 const char *const *flags, size_t n, unsigned *now,
			 struct mfs_err *err)
{
	struct step *t[2] = {NULL, NULL};
	size_t nt = 0;
	int r;

	if ((r = standin_busy(s, err)) != MFS_OK)
		return r;
	*now = flags_after(s->entry.flags, how, (char *const *)flags, n);
	if (s->op == 'A') {
		t[0] = append_again(j, s, s->folder, *now);
		nt = 1;
		if (t[0] != NULL) {
			t[0]->seq = j->next_seq;
			r = appended_link(j, s, t[0], err);
		}
	} else {
		t[0] = flags_step(j, s->folder, s->validity, s->uid, how,
				  flags, n);
		t[1] = step_new(j, 'M', s->folder, s->to);
		nt = 2;
		if (t[1] != NULL) {
			t[1]->validity = s->validity;
			t[1]->uid = s->uid;
			if (entry_copy(&t[1]->entry, &s->entry) != 0) {
				step_free(t[1]);
				t[1] = NULL;
			} else {
				t[1]->entry.flags = *now;
			}
		}
	}
	if (t[0] == NULL || (nt == 2 && t[1] == NULL) || r != MFS_OK) {
		if (r == MFS_OK)
			r = mfs_err_set(err, MFS_E_NOMEM, "out of memory");
		if (s->op == 'A' && t[0] != NULL)
			appended_unlink(j, j->next_seq);
		step_free(t[0]);
		step_free(t[1]);
		return r;
	}
	r = steps_add(j, t, nt, &s, 1, err);
	if (s->op == 'A')
		appended_unlink(j, r == MFS_OK ? s->seq : j->next_seq);
	return r;
}

static int j_store_flags(struct mfs_store *st, const char *folder,
			 uint32_t validity, uint32_t uid, char how,
			 const char *const *flags, size_t n, unsigned *now,
			 struct mfs_err *err)
{
	struct journal *j = journal_of(st);
	struct mfs_store_msg e;
	struct step *s;
	int r;

	pthread_mutex_lock(&j->lock);
	s = step_by_standin(j, uid);
	if (s != NULL) {
		r = standin_flags(j, s, how, flags, n, now, err);
		pthread_mutex_unlock(&j->lock);
		return r;
	}
	pthread_mutex_unlock(&j->lock);
	if (!journal_first(j)) {
		r = j->inner->ops->store_flags(j->inner, folder, validity, uid,
					       how, flags, n, now, err);
		if (r != MFS_E_OFFLINE)
			return r;
	}
	/* what the message shows afterwards, from its kept entry */
	*now = 0;
	if (entry_of(j, folder, uid, &e) == 0) {
		*now = e.flags;
		free(e.from);
		free(e.subject);
	}
	*now = flags_after(*now, how, (char *const *)flags, n);
	pthread_mutex_lock(&j->lock);
	s = flags_step(j, folder, validity, uid, how, flags, n);
	r = s == NULL ? mfs_err_set(err, MFS_E_INVAL,
				    "a flag name the journal cannot keep")
		      : step_add(j, s, err);
	pthread_mutex_unlock(&j->lock);
	return r;
}

static int j_watch(struct mfs_store *st, const char *folder, int stop_fd,
		   int max_wait, int *changed, struct mfs_err *err)
{
	struct mfs_store *in = journal_of(st)->inner;

	return in->ops->watch(in, folder, stop_fd, max_wait, changed, err);
}

static void j_state(struct mfs_store *st, struct mfs_store_state *out)
{
	struct mfs_store *in = journal_of(st)->inner;

	memset(out, 0, sizeof(*out));
	if (in->ops->state != NULL)
		in->ops->state(in, out);
}

static void j_tls_info(struct mfs_store *st, char *version, size_t vlen,
		       char *subject, size_t slen, char *issuer, size_t ilen)
{
	struct mfs_store *in = journal_of(st)->inner;

	in->ops->tls_info(in, version, vlen, subject, slen, issuer, ilen);
}

/* ---- the replay --------------------------------------------------------- */

/* Is a message of the same size and date in folder already (an append
 * that may have reached the server before a crash)? */
static int appended_already(struct journal *j, const struct step *s)
{
	struct mfs_store_msg *msgs = NULL;
	struct mfs_err err;
	uint32_t validity;
	size_t n = 0, i;
	int found = 0;

	if (j->inner->ops->index(j->inner, s->folder, &validity, &msgs, &n,
				 &err) != MFS_OK)
		return 0;
	for (i = 0; i < n && !found; i++)
		found = msgs[i].size == s->entry.size &&
			msgs[i].date == s->entry.date;
	mfs_store_msgs_free(msgs, n);
	return found;
}

static int replay_append(struct journal *j, const struct step *s, int again,
			 struct mfs_err *err)
{
	char *path = appended_path(j, s->seq);
	uint32_t validity, uid;
	struct stat st;
	int fd, r;

	if (path == NULL)
		return mfs_err_set(err, MFS_E_NOMEM, "out of memory");
	if (again && appended_already(j, s)) {
		mfs_log_info("journal: append to %s: a message of the same "
			     "size and date is there already (the append "
			     "before a crash); taken as done",
			     s->folder);
		free(path);
		return MFS_OK;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) != 0) {
		/* gone (removed by hand): this step can never be done */
		r = mfs_err_set(err, errno == ENOENT ? MFS_E_NOENT : MFS_E_IO,
				"journal: %s: %s", path, strerror(errno));
	} else {
		r = j->inner->ops->append(j->inner, s->folder, fd,
					  (uint64_t)st.st_size, s->date,
					  s->flags, &validity, &uid, err);
	}
	if (fd >= 0)
		close(fd);
	free(path);
	return r;
}

/* Sends step s to the server as it stands (not an append). */
static int step_send(struct journal *j, const struct step *s,
		     struct mfs_err *err)
{
	struct mfs_store *in = j->inner;
	const char *names[64];
	unsigned now;
	size_t i;

	switch (s->op) {
	case 'C':
		return in->ops->create(in, s->folder, err);
	case 'R':
		return in->ops->remove(in, s->folder, err);
	case 'N':
		return in->ops->rename(in, s->folder, s->to, err);
	case 'M':
		return in->ops->move(in, s->folder, s->validity, s->uid, s->to,
				     err);
	case 'E':
		return in->ops->expunge(in, s->folder, s->validity, s->uid,
					err);
	case 'F':
		for (i = 0; i < s->nnames && i < 64; i++)
			names[i] = s->names[i];
		return in->ops->store_flags(in, s->folder, s->validity, s->uid,
					    s->how, names, i, &now, err);
	}
	return mfs_err_set(err, MFS_E_PROTO, "unknown step");
}

/* Replays step s. again: it may have reached the server before (a B
 * line was on disk): "it is so already" counts as done. */
static int replay(struct journal *j, const struct step *s, int again,
		  struct mfs_err *err)
{
	int r;

	if (s->op == 'A')
		return replay_append(j, s, again, err);
	r = step_send(j, s, err);
	if (s->op == 'C' && r == MFS_E_EXIST)
		return MFS_OK; /* there: what the user wanted */
	if (again && r == MFS_E_NOENT && strchr("RNME", s->op) != NULL)
		return MFS_OK; /* gone from where it was: done before */
	return r;
}

/* One line for a step, as the status file and the log show it. */
static void step_describe(FILE *f, const struct step *s)
{
	size_t i;

	switch (s->op) {
	case 'C':
		fprintf(f, "mkdir %s", s->folder);
		break;
	case 'R':
		fprintf(f, "rmdir %s", s->folder);
		break;
	case 'N':
		fprintf(f, "rename %s to %s", s->folder, s->to);
		break;
	case 'A':
		fprintf(f, "append to %s: %" PRIu64 " bytes, \"%s\"", s->folder,
			s->entry.size, s->entry.subject ? s->entry.subject : "");
		break;
	case 'M':
		fprintf(f, "move %s UID %" PRIu32 " to %s", s->folder, s->uid,
			s->to);
		break;
	case 'E':
		fprintf(f, "delete %s UID %" PRIu32, s->folder, s->uid);
		break;
	case 'F':
		fprintf(f, "flags of %s UID %" PRIu32 ": %c", s->folder, s->uid,
			s->how);
		for (i = 0; i < s->nnames; i++)
			fprintf(f, "%s%s", i ? " " : "", s->names[i]);
		break;
	}
}

/* Records the failure of step s: a line in the failed file (where an
 * appended message's bytes stay, named), the log. Caller holds the lock. */
static void failed_note(struct journal *j, const struct step *s,
			const struct mfs_err *err)
{
	char *text = NULL, *path = NULL, stamp[32];
	size_t len = 0;
	struct tm tm;
	time_t now = time(NULL);
	FILE *f = open_memstream(&text, &len);
	int fd;

	if (f == NULL)
		return;
	if (localtime_r(&now, &tm) == NULL ||
	    strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%S", &tm) == 0)
		snprintf(stamp, sizeof(stamp), "%lld", (long long)now);
	fprintf(f, "%s ", stamp);
	step_describe(f, s);
	fprintf(f, ": %s", err->msg);
	if (s->op == 'A')
		fprintf(f, " (the message is kept in %s/A%lu.eml)", j->dir,
			s->seq);
	fputc('\n', f);
	if (fclose(f) != 0) {
		free(text);
		return;
	}
	mfs_log_err("journal: not done: %.*s", (int)len - 1, text);
	if (asprintf(&path, "%s/failed", j->dir) >= 0) {
		fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
		if (fd >= 0) {
			if (write(fd, text, len) != (ssize_t)len ||
			    fsync(fd) != 0)
				mfs_log_err("journal: %s: %s", path,
					    strerror(errno));
			close(fd);
		}
	}
	free(path);
	free(text);
}

static void changed(struct journal *j, const char *folder)
{
	pthread_mutex_lock(&j->hooks_lock);
	if (j->hooks.changed != NULL)
		j->hooks.changed(j->hooks.ctx, folder);
	pthread_mutex_unlock(&j->hooks_lock);
}

/* After step s reached the server (or failed there): what is shown of
 * its folders is out of date. Called without the lock; s is settled and
 * stays until the next compaction, which only this thread does. */
static void step_changed(struct journal *j, const struct step *s)
{
	if (s->op == 'C' || s->op == 'R' || s->op == 'N')
		changed(j, NULL);
	changed(j, s->folder);
	if (s->to != NULL)
		changed(j, s->to);
}

/* When the server is out of reach: when to try again. */
static time_t retry_time(struct journal *j)
{
	struct mfs_store_state state;
	time_t now = time(NULL);

	memset(&state, 0, sizeof(state));
	if (j->inner->ops->state != NULL)
		j->inner->ops->state(j->inner, &state);
	if (state.offline_since != 0 && state.retry_at > now)
		return state.retry_at;
	return now + RETRY_SECS;
}

static void wait_until(struct journal *j, time_t when)
{
	struct timespec ts = {.tv_sec = when, .tv_nsec = 0};

	pthread_cond_timedwait(&j->wake, &j->lock, &ts);
}

static void *replay_thread(void *arg)
{
	struct journal *j = arg;

	pthread_mutex_lock(&j->lock);
	while (!j->stop) {
		struct step *s = NULL;
		struct mfs_err err;
		time_t now = time(NULL);
		size_t i;
		int again, r;

		for (i = 0; i < j->n && s == NULL; i++)
			if (j->steps[i]->state == ST_WAIT)
				s = j->steps[i];
		if (s == NULL) {
			compact(j);
			wait_until(j, now + 60);
			continue;
		}
		if (now < j->next_try) {
			wait_until(j, j->next_try);
			continue;
		}
		mfs_err_clear(&err);
		again = s->begun;
		if (!s->begun && mark(j, 'B', s->seq, &err) != MFS_OK) {
			mfs_log_err("%s", err.msg);
			j->next_try = now + RETRY_SECS;
			continue;
		}
		s->begun = 1;
		s->inflight = 1;
		pthread_mutex_unlock(&j->lock);
		r = replay(j, s, again, &err);
		pthread_mutex_lock(&j->lock);
		s->inflight = 0;
		if (mfs_err_unreachable(r) || r == MFS_E_NOMEM ||
		    r == MFS_E_IO) {
			/* not now: the same step again later, in its turn */
			j->next_try = r == MFS_E_IO ? now + RETRY_SECS
						    : retry_time(j);
			continue;
		}
		if (r == MFS_OK) {
			if (mark(j, 'D', s->seq, &err) != MFS_OK) {
				mfs_log_err("%s", err.msg);
				j->next_try = now + RETRY_SECS;
				continue; /* done again, as a begun step */
			}
			s->state = ST_DONE;
		} else {
			failed_note(j, s, &err);
			if (mark(j, 'X', s->seq, &err) != MFS_OK) {
				mfs_log_err("%s", err.msg);
				j->next_try = now + RETRY_SECS;
				continue;
			}
			s->state = ST_FAILED;
		}
		j->settled++;
		if (s->op == 'A' && (s->state == ST_DONE ||
				     s->state == ST_FAILED)) {
			if (s->state == ST_DONE)
				appended_unlink(j, s->seq);
		}
		j->next_try = 0;
		pthread_mutex_unlock(&j->lock);
		step_changed(j, s);
		pthread_mutex_lock(&j->lock);
	}
	pthread_mutex_unlock(&j->lock);
	return NULL;
}

/* ---- status --------------------------------------------------------------- */

void mfs_journal_describe(struct mfs_store *st, FILE *out)
{
	struct journal *j = journal_of(st);
	size_t i, nwait = 0, shown = 0;
	char *path = NULL, *line = NULL, *tail[FAILED_SHOWN];
	size_t room = 0, nfailed = 0;
	FILE *f;

	if (j == NULL)
		return;
	pthread_mutex_lock(&j->lock);
	for (i = 0; i < j->n; i++)
		nwait += j->steps[i]->state == ST_WAIT;
	fprintf(out, "journal: %zu step%s waiting\n", nwait,
		nwait == 1 ? "" : "s");
	for (i = 0; i < j->n && shown < 20; i++) {
		struct step *s = j->steps[i];

		if (s->state != ST_WAIT)
			continue;
		fputs("  waiting: ", out);
		step_describe(out, s);
		fputs(s->inflight ? " (being sent)\n" : "\n", out);
		shown++;
	}
	if (nwait > shown)
		fprintf(out, "  ... and %zu more\n", nwait - shown);
	pthread_mutex_unlock(&j->lock);
	/* the failed file: its count and last lines */
	memset(tail, 0, sizeof(tail));
	if (asprintf(&path, "%s/failed", j->dir) < 0)
		return;
	f = fopen(path, "re");
	if (f != NULL) {
		ssize_t len;

		while ((len = getline(&line, &room, f)) > 0) {
			free(tail[nfailed % FAILED_SHOWN]);
			tail[nfailed % FAILED_SHOWN] = strdup(line);
			nfailed++;
		}
		fclose(f);
	}
	fprintf(out, "journal: %zu step%s failed", nfailed,
		nfailed == 1 ? "" : "s");
	if (nfailed > 0)
		fprintf(out, " (listed in %s; remove it to clear the list)",
			path);
	fputc('\n', out);
	for (i = nfailed > FAILED_SHOWN ? nfailed - FAILED_SHOWN : 0;
	     i < nfailed; i++)
		if (tail[i % FAILED_SHOWN] != NULL)
			fprintf(out, "  failed: %s", tail[i % FAILED_SHOWN]);
	for (i = 0; i < FAILED_SHOWN; i++)
		free(tail[i]);
	free(line);
	free(path);
}

int mfs_journal_idle(struct mfs_store *st)
{
	struct journal *j = journal_of(st);
	int idle;

	if (j == NULL)
		return 1;
	pthread_mutex_lock(&j->lock);
	idle = !waiting(j);
	pthread_mutex_unlock(&j->lock);
	return idle;
}

void mfs_journal_folders(struct mfs_store *st,
			 struct mfs_store_folder **folders, size_t *n)
{
	struct journal *j = journal_of(st);

	if (j == NULL)
		return;
	pthread_mutex_lock(&j->lock);
	if (folders_apply(j, folders, n) != 0)
		mfs_log_err("journal: out of memory showing its folders");
	pthread_mutex_unlock(&j->lock);
}

void mfs_journal_set_hooks(struct mfs_store *st,
			   const struct mfs_journal_hooks *hooks)
{
	struct journal *j = journal_of(st);

	if (j == NULL)
		return;
	pthread_mutex_lock(&j->hooks_lock);
	if (hooks != NULL)
		j->hooks = *hooks;
	else
		memset(&j->hooks, 0, sizeof(j->hooks));
	pthread_mutex_unlock(&j->hooks_lock);
}

/* ---- life --------------------------------------------------------------- */

static void j_free(struct mfs_store *st)
{
	struct journal *j = journal_of(st);
	size_t i;

	if (j == NULL)
		return;
	mfs_journal_stop(st);
	if (j->inner != NULL)
		j->inner->ops->free(j->inner);
	for (i = 0; i < j->n; i++)
		step_free(j->steps[i]);
	free(j->steps);
	if (j->fd >= 0)
		close(j->fd);
	pthread_mutex_destroy(&j->lock);
	pthread_mutex_destroy(&j->hooks_lock);
	pthread_cond_destroy(&j->wake);
	free(j->dir);
	free(j);
	free(st);
}

static const struct mfs_store_ops journal_ops = {
    .connect = j_connect,
    .list = j_list,
    .personal = j_personal,
    .index = j_index,
    .index_pieces = j_index_pieces,
    .kept_index = j_kept_index,
    .fetch = j_fetch,
    .fetch_many = j_fetch_many,
    .skeleton = j_skeleton,
    .skeleton_many = j_skeleton_many,
    .fetch_section = j_fetch_section,
    .search = j_search,
    .create = j_create,
    .remove = j_remove,
    .rename = j_rename,
    .append = j_append,
    .move = j_move,
    .expunge = j_expunge,
    .store_flags = j_store_flags,
    .watch = j_watch,
    .state = j_state,
    .tls_info = j_tls_info,
    .free = j_free,
};

struct mfs_store *mfs_journal_new(struct mfs_store *inner, const char *dir,
				  struct mfs_err *err)
{
	struct mfs_store *st = calloc(1, sizeof(*st));
	struct journal *j = calloc(1, sizeof(*j));
	char *path = NULL;

	if (st == NULL || j == NULL) {
		free(st);
		free(j);
		mfs_err_set(err, MFS_E_NOMEM, "out of memory");
		return NULL;
	}
	st->ops = &journal_ops;
	st->priv = j;
	st->read_only = inner->read_only;
	st->search_text = inner->search_text;
	j->fd = -1;
	pthread_mutex_init(&j->lock, NULL);
	pthread_mutex_init(&j->hooks_lock, NULL);
	pthread_cond_init(&j->wake, NULL);
	/* a fresh journal numbers from the clock, so that a stand-in UID
	 * never names what an earlier journal's did (in the cache) */
	j->next_seq = (unsigned long)time(NULL) & 0x0FFFFFFFul;
	j->dir = strdup(dir);
	if (j->dir == NULL || asprintf(&path, "%s/steps", dir) < 0) {
		path = NULL;
		mfs_err_set(err, MFS_E_NOMEM, "out of memory");
		goto fail;
	}
	if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
		mfs_err_set(err, MFS_E_IO, "journal %s: %s", dir,
			    strerror(errno));
		goto fail;
	}
	j->fd = open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (j->fd < 0) {
		mfs_err_set(err, MFS_E_IO, "journal %s: %s", path,
			    strerror(errno));
		goto fail;
	}
	if (flock(j->fd, LOCK_EX | LOCK_NB) != 0) {
		mfs_err_set(err, MFS_E_IO,
			    "journal %s: in use by another mount of the "
			    "account",
			    path);
		goto fail;
	}
	if (steps_load(j, err) != MFS_OK)
		goto fail;
	free(path);
	j->inner = inner;
	return st;
fail:
	free(path);
	j_free(st);
	return NULL;
}

int mfs_journal_start(struct mfs_store *st,
		      const struct mfs_journal_hooks *hooks)
{
	struct journal *j = journal_of(st);

	if (j == NULL || j->started)
		return 0;
	mfs_journal_set_hooks(st, hooks);
	if (pthread_create(&j->thread, NULL, replay_thread, j) != 0)
		return -1;
	j->started = 1;
	return 0;
}

void mfs_journal_stop(struct mfs_store *st)
{
	struct journal *j = journal_of(st);

	if (j == NULL)
		return;
	if (j->started) {
		pthread_mutex_lock(&j->lock);
		j->stop = 1;
		pthread_cond_signal(&j->wake);
		pthread_mutex_unlock(&j->lock);
		pthread_join(j->thread, NULL);
		j->started = 0;
	}
	mfs_journal_set_hooks(st, NULL);
}
