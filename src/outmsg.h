/*
 * outmsg.h - preparing a message a user wrote for SMTP submission.
 *
 * Pure message work on file descriptors, no network: read the header block,
 * derive the envelope, and write the message as it goes to the server.
 *
 *   mfs_outmsg_parse()   reads the header block (LF or CRLF line ends) and
 *                        scans the body once for 8-bit bytes; it builds the
 *                        envelope: the sender from the account's `from`
 *                        setting, else the From header; the recipients from
 *                        To, Cc and Bcc (groups, quoted display names,
 *                        comments, angle addresses; duplicates dropped,
 *                        compared without regard to case).
 *   mfs_outmsg_write()   writes the prepared message: Bcc removed, Date and
 *                        Message-ID added when missing, every bare LF made
 *                        CRLF, and 8-bit content made fit for what the server
 *                        offers (see MFS_OUTMSG_8BITMIME below). Dot-stuffing
 *                        is not done here: it belongs to the SMTP layer.
 *
 * Memory is bounded by the header block (at most MFS_OUTMSG_HDR_MAX bytes),
 * never by the body, which is streamed in fixed-size chunks.
 *
 * 8-bit policy, when the server lacks an extension:
 *   - no SMTPUTF8: 8-bit header text is RFC 2047 encoded as UTF-8 (text
 *     that is not valid UTF-8 is read as windows-1252 first). Unstructured
 *     headers (Subject, ...) become encoded words; in From, To, Cc, Reply-To
 *     and Sender the display names become encoded words and comments are
 *     dropped. An address (envelope or header) with a non-ASCII byte
 *     cannot be encoded: MFS_E_INVAL. Message-ID, In-Reply-To, References
 *     and Date with 8-bit bytes: MFS_E_INVAL.
 *   - no 8BITMIME: a single-part 8-bit body is re-encoded as
 *     quoted-printable and Content-Transfer-Encoding set accordingly (a
 *     message without Content-Type gains MIME-Version: 1.0 and
 *     "Content-Type: text/plain; charset=utf-8"). A multipart message with
 *     8-bit bytes in its body is refused with MFS_E_INVAL rather than
 *     rewritten: the user's parts are never re-cut by us.
 */
#ifndef MAILFS_OUTMSG_H
#define MAILFS_OUTMSG_H

#include <stddef.h>
#include <sys/types.h>
#include <time.h>

#include "error.h"

/* The longest header block accepted, in bytes. */
#define MFS_OUTMSG_HDR_MAX (256 * 1024)

/* The longest reverse or forward path SMTP carries, "<" and ">" included
 * (RFC 5321 4.5.3.1.3): an address may be 254 octets. */
#define MFS_OUTMSG_PATH_MAX 256

/* Capabilities of the server, for mfs_outmsg_write(). */
#define MFS_OUTMSG_8BITMIME 0x1 /* 8-bit body may go as it is */
#define MFS_OUTMSG_SMTPUTF8 0x2 /* UTF-8 headers and addresses may go */

struct mfs_outmsg_opts {
	const char *from;	/* borrowed: the account's `from` setting
				   ("Name <addr>" or "addr"), or NULL */
	const char *message_id; /* borrowed: "<id@domain>" to add when the
				   message has none (a retry keeps the id
				   of the first attempt), or NULL: make one */
	time_t date;		/* Date to add when missing; 0: now */
};

struct mfs_outmsg {
	char *sender; /* owned: envelope sender, addr-spec without <> */
	char **rcpts; /* owned: nrcpts addr-specs, each owned */
	size_t nrcpts;
	char *message_id;   /* owned: "<...>", the header's or the added one */
	time_t date;	    /* the header's date, else the one added */
	int has_message_id; /* the message had its own Message-ID */
	int has_date;	    /* the message had its own Date */
	int hdr_8bit;	    /* the header block has a byte >= 0x80 */
	int body_8bit;	    /* the body has a byte >= 0x80 (or a NUL) */
	int addr_8bit;	    /* an envelope address has a byte >= 0x80:
			       needs SMTPUTF8 */
	int multipart;	    /* top-level Content-Type is multipart/... */
	off_t body_offset;  /* where the body starts in the input */
	char *header;	    /* owned: the raw header block, LF line ends */
	char *from_header;  /* owned: a From value to add (the `from`
			       setting, when the message has no From) */
};

/*
 * Reads the header block from fd (from offset 0, with pread; the file
 * position is not used) and scans the body for 8-bit bytes. Fills *msg
 * (zeroed first; release with mfs_outmsg_free(), also after an error).
 * A Message-ID is generated as "<RANDOM@DOMAIN>" with DOMAIN the sender's
 * domain, when the message has none and opts->message_id is NULL.
 * Errors:
 *   MFS_E_INVAL  a header line without a colon or with an empty name, a
 *                header block longer than MFS_OUTMSG_HDR_MAX, no From and no
 *                opts->from, an address that cannot be read (the message
 *                names the header and the text), no recipient in To, Cc or
 *                Bcc, an address longer than SMTP can carry (a path of
 *                more than MFS_OUTMSG_PATH_MAX octets with its <>), an
 *                empty message.
 *   MFS_E_IO     reading fd failed.
 *   MFS_E_NOMEM
 */
int mfs_outmsg_parse(int fd, const struct mfs_outmsg_opts *opts,
		     struct mfs_outmsg *msg, struct mfs_err *err);

/*
 * Writes the prepared message (from in_fd, read with pread from offset 0,
 * and msg) to out_fd at its current position, for a server with the
 * capabilities `caps` (MFS_OUTMSG_*). Returns MFS_OK and, when size is not
 * NULL, the number of bytes written in *size.
 * Errors:
 *   MFS_E_INVAL  content the server cannot take and that cannot be encoded
 *                (see the 8-bit policy above); the message says what.
 *   MFS_E_IO     reading in_fd or writing out_fd failed.
 *   MFS_E_NOMEM
 */
int mfs_outmsg_write(const struct mfs_outmsg *msg, int in_fd, unsigned caps,
		     int out_fd, off_t *size, struct mfs_err *err);

/* Frees every owned field and zeroes *msg. Safe on a zeroed struct. */
void mfs_outmsg_free(struct mfs_outmsg *msg);

/*
 * Parses an RFC 5322 address list (the value of To, Cc, Bcc, From) and
 * appends each addr-spec to *list (a malloc'd array of *n malloc'd strings;
 * both may start as NULL/0; the caller frees). Groups contribute their
 * members; display names and comments are skipped.
 * Errors: MFS_E_INVAL (an address that cannot be read; the message quotes
 * it), MFS_E_NOMEM.
 */
int mfs_outmsg_addresses(const char *value, char ***list, size_t *n,
			 struct mfs_err *err);

#endif
