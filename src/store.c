/* store.c - helpers shared by all store drivers (see store.h) */
#include "store.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libetpan/libetpan.h>

#include "header.h"
#include "names.h"

const char *const mfs_flag_names[MFS_NFLAGS] = {
	"\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft",
};

void mfs_store_folders_free(struct mfs_store_folder *folders, size_t n)
{
	size_t i;

	for (i = 0; i < n && folders != NULL; i++)
		free(folders[i].name);
	free(folders);
}

void mfs_store_msgs_free(struct mfs_store_msg *msgs, size_t n)
{
	size_t i;

	for (i = 0; i < n && msgs != NULL; i++) {
		free(msgs[i].uidl);
		free(msgs[i].from);
		free(msgs[i].subject);
	}
	free(msgs);
}

void mfs_store_segs_free(struct mfs_seg *segs, size_t n)
{
	size_t i;

	for (i = 0; i < n && segs != NULL; i++)
		free(segs[i].section);
	free(segs);
}

void mfs_many_more_free(struct mfs_many_more *m)
{
	free(m->uids);
	free(m->whole);
	free(m->later);
	memset(m, 0, sizeof(*m));
}

int mfs_store_watch_poll(int stop_fd, int secs, int *changed)
{
	struct pollfd p = {.fd = stop_fd, .events = POLLIN};
	struct timespec end, now;
	long left;
	int r;

	*changed = 0;
	clock_gettime(CLOCK_MONOTONIC, &end);
	end.tv_sec += secs > 0 ? secs : 1;
	for (;;) {
		clock_gettime(CLOCK_MONOTONIC, &now);
		left = (end.tv_sec - now.tv_sec) * 1000 +
		       (end.tv_nsec - now.tv_nsec) / 1000000;
		if (left <= 0) {
			*changed = 1;
			return MFS_OK;
		}
		r = poll(&p, 1, left > 60000 ? 60000 : (int)left);
		if (r > 0)
			return MFS_OK; /* stopped */
		if (r < 0 && errno != EINTR)
			return MFS_OK;
	}
}

void mfs_store_hits_free(struct mfs_store_hits *hits, size_t n)
{
	size_t i;

	if (hits == NULL)
		return;
	for (i = 0; i < n; i++) {
		free(hits[i].uids);
		hits[i].uids = NULL;
		hits[i].n = 0;
		mfs_store_msgs_free(hits[i].msgs, hits[i].nmsgs);
		hits[i].msgs = NULL;
		hits[i].nmsgs = 0;
	}
}

/* The value of the first header `name` in the header block hdr, folded
 * lines included, trimmed; malloc'd, or NULL when absent. */
static char *header_value(const char *hdr, const char *name)
{
	struct mfs_field f;
	const char *v;
	size_t len;

	if (!mfs_field_find(hdr, 0, strlen(hdr), name, &f))
		return NULL;
	v = hdr + f.colon + 1;
	len = f.end - f.colon - 1;
	while (len > 0 &&
	       (*v == ' ' || *v == '\t' || *v == '\r' || *v == '\n')) {
		v++;
		len--;
	}
	while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t'))
		len--;
	return strndup(v, len);
}

/* The sender display: the decoded display name of the first From
 * mailbox, else its address, else the decoded header as it stands. */
static char *from_display(const char *raw)
{
	struct mailimf_mailbox_list *list = NULL;
	struct mailimf_mailbox *mb;
	size_t idx = 0;
	char *out;

	if (raw == NULL)
		return strdup("");
	if (mailimf_mailbox_list_parse(raw, strlen(raw), &idx, &list) !=
		MAILIMF_NO_ERROR ||
	    clist_begin(list->mb_list) == NULL) {
		if (list != NULL)
			mailimf_mailbox_list_free(list);
		return mfs_hdr_decode(raw);
	}
	mb = clist_content(clist_begin(list->mb_list));
	if (mb->mb_display_name != NULL && mb->mb_display_name[0] != '\0')
		out = mfs_hdr_decode(mb->mb_display_name);
	else
		out = mfs_hdr_decode(mb->mb_addr_spec);
	mailimf_mailbox_list_free(list);
	return out;
}

int mfs_store_msg_headers(struct mfs_store_msg *m, const char *hdr)
{
	char *from = header_value(hdr, "From");
	char *subject = header_value(hdr, "Subject");
	char *date = header_value(hdr, "Date");
	int r = 0;

	m->date = date != NULL ? mfs_parse_date(date) : (time_t)-1;
	if (m->date == (time_t)-1)
		m->date = 0;
	free(m->from);
	free(m->subject);
	m->from = from_display(from);
	m->subject = mfs_hdr_decode(subject != NULL ? subject : "");
	if (m->from == NULL || m->subject == NULL)
		r = -1;
	free(from);
	free(subject);
	free(date);
	return r;
}
