/*
 * mime.h - one raw message turned into the message directory of SPEC.md.
 *
 * A pure module: no network, no files, no global state. The IMAP and POP3
 * mounts both hand it the bytes of a cached message.eml and serve what it
 * lays out. Two steps:
 *
 *   1. mfs_mime_parse() cuts the bytes into a tree of struct mfs_part: byte
 *      ranges of the header block and the body of every MIME part, with the
 *      decoded Content-Type, transfer encoding, disposition and file name.
 *   2. mfs_layout_build() parses and then lays the tree out as directories
 *      of struct mfs_entry. A file entry holds a recipe, struct mfs_source:
 *      a byte range of the message plus how to decode it, or a small
 *      generated string. Nothing is decoded until a file is read.
 *
 * The message directory (the top one, and every message/rfc822 part):
 *
 *   message.eml  the raw message (for an embedded message: its bytes)
 *   headers      the header block: one line per field, "Name: value",
 *                unfolded, RFC 2047 decoded, valid UTF-8, each ending in "\n"
 *   from subject date
 *                the decoded field on one line ending in "\n"; always there,
 *                "\n" alone when the field is missing
 *   to cc        as above, present only when the field exists
 *   body.txt     the main text: the first text/plain leaf that is not an
 *                attachment, depth first (through multipart/alternative,
 *                mixed, related, ...; not into message/rfc822 parts);
 *                transfer-decoded, converted to UTF-8, CRLF turned into LF.
 *                Absent when there is no such part (HTML-only mail).
 *   body.html    the first text/html leaf that is not an attachment,
 *                decoded the same way; absent when there is none
 *   ATTACHMENTS  each leaf that is not body.txt or body.html and has
 *                Content-Disposition attachment, a filename or name
 *                parameter, or a type other than text/ and multipart/;
 *                a message/rfc822 part is such a leaf. Content:
 *                transfer-decoded bytes, no charset conversion. Name: the
 *                decoded filename (RFC 2231 continuations and charset, RFC
 *                2047), else the name parameter, else "attachment-N.EXT"
 *                (N counts the attachments of this directory from 1, EXT
 *                from the type); then mfs_name_sanitize(); a clash with a
 *                fixed name (MFS_MIME_RESERVED) or an earlier attachment
 *                gets mfs_name_unique() suffixes " (2)", " (3)", ...
 *   parts/       the MIME tree, numbered as IMAP sections (RFC 3501 6.4.5):
 *                a message that is not multipart has one part, parts/1 (its
 *                body); the children of a multipart are 1, 2, ...
 *
 * A part directory (parts/N/, parts/N/M/, ...):
 *
 *   type         "type/subtype\n", or "type/subtype; charset=CS\n" when the
 *                part has a charset parameter (type, subtype and CS lower
 *                case)
 *   headers      the part's own header block, formatted as above
 *   content      the body, transfer-decoded, no charset conversion (for a
 *                multipart: its raw body, boundaries and all)
 *   1/ 2/ ...    for a multipart: its children
 *
 * A message/rfc822 part directory is also a message directory: besides
 * type and content it holds message.eml, from, to, cc, subject, date,
 * body.txt, body.html, the attachments and parts/ of the embedded message,
 * and `headers` is the embedded message's header block. Its parts/1/ is
 * IMAP section N.1 when the part is section N.
 *
 * Bad input never makes a call fail; it gives something sensible:
 *   - LF or CRLF line ends (a lone CR is an ordinary byte);
 *   - a line in the header block that is neither a field nor a
 *     continuation starts the body (no blank line needed); a leading
 *     "From " line is skipped; no headers at all is an empty header block;
 *   - a missing or bad Content-Type is text/plain (message/rfc822 in a
 *     multipart/digest); a multipart without boundary or without any
 *     delimiter line is a leaf, read as text/plain for body.txt;
 *   - a missing close delimiter: the last part runs to the end of its parent;
 *   - an unknown Content-Transfer-Encoding is read as binary;
 *   - base64: bytes outside the alphabet are skipped, padding is optional,
 *     a '=' ends the current group (decoding goes on after it), a lone
 *     sextet at the end is dropped;
 *   - quoted-printable: "=" then optional blanks then a line end is a soft
 *     break, =XX takes upper or lower case hex, "==" is "=", any other '='
 *     is kept as it is;
 *   - charset: missing, us-ascii or unknown to iconv: UTF-8 when the whole
 *     decoded text is valid UTF-8, else windows-1252; a few labels are
 *     widened as mfs_text_to_utf8() does (iso-8859-1 -> windows-1252,
 *     gb2312 -> GB18030, shift_jis -> CP932, ...); a byte the charset
 *     rejects becomes U+FFFD and conversion goes on after it;
 *   - nesting deeper than MFS_MIME_DEPTH_MAX: the part is an opaque leaf
 *     (type as declared, raw content, no children, never an attachment);
 *   - more than MFS_MIME_PARTS_MAX parts: the remaining bytes of each open
 *     multipart become one opaque application/octet-stream leaf;
 *   - a header field longer than MFS_MIME_FIELD_MAX bytes is cut there
 *     before decoding (headers, from, ... files only).
 *
 * Memory: parsing and layout allocate in proportion to the number of parts
 * and fields, never to the size of a body. Decoding works in fixed-size
 * chunks.
 *
 * Threads: a layout is not locked. Lookups and mfs_entry_decode() only read
 * it; mfs_entry_size() stores the size it computed in the entry, so calls
 * on one layout from several threads need the caller's lock.
 */
#ifndef MAILFS_MIME_H
#define MAILFS_MIME_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "error.h"

/* Deeper multipart or message/rfc822 nesting gives opaque leaves. */
#define MFS_MIME_DEPTH_MAX 64
/* Parts beyond this many are folded into opaque leaves. */
#define MFS_MIME_PARTS_MAX 10000
/* Longest header field decoded for headers, from, to, ... (bytes). */
#define MFS_MIME_FIELD_MAX (1024 * 1024)

/* Names a message directory reserves; attachments never take them. */
#define MFS_MIME_RESERVED                                                      \
	"message.eml", "headers", "from", "to", "cc", "subject", "date",       \
	    "body.txt", "body.html", "flags", "parts", "type", "content"

enum mfs_cte {
	MFS_CTE_BINARY = 0, /* 7bit, 8bit, binary, none or unknown */
	MFS_CTE_BASE64,
	MFS_CTE_QP,
};

enum mfs_disp {
	MFS_DISP_NONE = 0,
	MFS_DISP_INLINE,
	MFS_DISP_ATTACHMENT,
};

/*
 * One MIME part. All offsets are into the buffer given to mfs_mime_parse().
 * The body of a part is [body_off, body_off + body_len) without the line
 * end that belongs to the next boundary delimiter.
 */
struct mfs_part {
	size_t hdr_off, hdr_len;   /* header block, without the blank line */
	size_t body_off, body_len; /* encoded body */
	char *type;		   /* owned; lower case, e.g. "text" */
	char *subtype;		   /* owned; lower case, e.g. "plain" */
	char *charset;		   /* owned; lower case, or NULL */
	char *filename;		   /* owned; decoded UTF-8 (filename or
				    * name parameter), not sanitized, or NULL */
	enum mfs_cte cte;
	enum mfs_disp disp;
	int opaque;	  /* bounds reached: not looked into */
	int broken_multi; /* multipart that did not split: a text leaf */
	char *section;	  /* owned; IMAP section, "" for a multipart top,
			   * "2.1" for the first child of part 2 */
	struct mfs_part **children; /* owned array of owned parts */
	size_t nchildren;
	struct mfs_part *message; /* owned; message/rfc822: the embedded
				   * message (its header block and body) */
	struct mfs_part *parent;  /* borrowed; NULL for the top part */
};

/*
 * Parses len bytes at buf (any bytes; len may be 0) into a part tree and
 * stores it in *out. The tree borrows buf only while parsing: it keeps
 * offsets, never pointers into buf, and may outlive it.
 * Free the tree with mfs_part_free().
 * Errors: MFS_E_NOMEM.
 */
int mfs_mime_parse(const char *buf, size_t len, struct mfs_part **out,
		   struct mfs_err *err);

/* Frees a tree from mfs_mime_parse(). NULL is a no-op. */
void mfs_part_free(struct mfs_part *part);

/* ---- layout ------------------------------------------------------------ */

enum mfs_src_kind {
	MFS_SRC_STRING,	 /* str, str_len: generated text */
	MFS_SRC_RAW,	 /* the range as it is */
	MFS_SRC_DECODED, /* the range transfer-decoded (cte) */
	MFS_SRC_TEXT,	 /* transfer-decoded, to UTF-8 from charset, LF */
	MFS_SRC_HEADERS, /* a header block, decoded field by field */
	MFS_SRC_FIELD,	 /* one field value, decoded, plus "\n" */
};

/* How a file's bytes are made from the message. */
struct mfs_source {
	enum mfs_src_kind kind;
	char *str; /* owned; MFS_SRC_STRING only */
	size_t str_len;
	size_t off, len;     /* range of the layout's buffer */
	enum mfs_cte cte;    /* MFS_SRC_DECODED, MFS_SRC_TEXT */
	const char *charset; /* borrowed from a part; MFS_SRC_TEXT; NULL for
			      * none */
	uint64_t size;	     /* valid when size_known */
	int size_known;
};

struct mfs_dir;

struct mfs_entry {
	char *name; /* owned; valid UTF-8, 1..255 bytes, no '/' */
	int is_dir;
	uint32_t id;	       /* 1.. in layout order, unique in the layout, the
				* same for the same message bytes (inode keys) */
	struct mfs_dir *dir;   /* owned; when is_dir */
	struct mfs_source src; /* when !is_dir */
	const struct mfs_part *part; /* borrowed from the layout's tree: the
				      * part the entry shows, or NULL */
};

struct mfs_dir {
	struct mfs_entry *entries; /* owned array, in listing order */
	size_t n;
	size_t *by_name;	     /* owned; indexes sorted by name */
	const struct mfs_part *part; /* borrowed; the part (or message) the
				      * directory shows, or NULL */
};

/* Called now and then while a long stretch of a message is scanned or
 * decoded (every 2 MiB), so that the owner of a file mapping can let its
 * pages go (MADV_DONTNEED): they are read again from the file when next
 * touched, so the bytes seen never change, but a 50 MB message is never
 * resident all at once. */
typedef void (*mfs_release_fn)(void *ctx);

/* The first offset at or after off where a MIME delimiter line may start:
 * off itself, or the end of a stretch the caller knows holds none (a hole
 * of zeros standing for a part's body). The parse does not read skipped
 * bytes. */
typedef size_t (*mfs_skip_fn)(void *ctx, size_t off);

struct mfs_layout {
	const char *buf; /* borrowed: the caller's message bytes */
	size_t len;
	mfs_release_fn release; /* or NULL: never called */
	void *release_ctx;
	struct mfs_part *root;	 /* owned */
	struct mfs_dir root_dir; /* the top message directory */
	time_t date;		 /* Date header via mfs_parse_date(), or
				  * (time_t)-1 */
	uint32_t nentries;	 /* highest entry id */
};

/*
 * Parses len bytes at buf and lays them out as the message directory
 * described above. The layout BORROWS buf: the caller keeps the bytes (the
 * mmap of message.eml) alive and unchanged until mfs_layout_free(). buf may
 * be NULL when len is 0.
 * Errors: MFS_E_NOMEM.
 */
int mfs_layout_build(const char *buf, size_t len, struct mfs_layout **out,
		     struct mfs_err *err);

/* The same for bytes mapped from a file: release(ctx) is called while the
 * parse scans long stretches, and kept in the layout for the decoding of
 * its files (see mfs_release_fn); skip(ctx, off), when not NULL, tells the
 * parse which stretches to pass over. Only for buffers whose pages may be
 * dropped and read again: never for malloc'd memory. */
int mfs_layout_build_mapped(const char *buf, size_t len,
			    mfs_release_fn release, mfs_skip_fn skip,
			    void *ctx, struct mfs_layout **out,
			    struct mfs_err *err);

/* Frees a layout and its tree (not buf). NULL is a no-op. */
void mfs_layout_free(struct mfs_layout *layout);

/*
 * Finds name in dir. Returns the entry (owned by the layout) or NULL.
 */
struct mfs_entry *mfs_dir_find(const struct mfs_dir *dir, const char *name);

/*
 * Follows ncomp path components from the top directory, e.g.
 * {"parts", "2", "1", "content"}. ncomp 0 returns NULL (the top is
 * layout->root_dir, which has no entry).
 * Returns the entry (owned by the layout) or NULL when a component is
 * missing or a non-final one is not a directory.
 */
struct mfs_entry *mfs_layout_lookup(const struct mfs_layout *layout,
				    const char *const *comp, size_t ncomp);

/*
 * As mfs_layout_lookup() with a '/'-separated path, "parts/2/content".
 * Empty components are skipped. Returns NULL when not found.
 */
struct mfs_entry *mfs_layout_lookup_path(const struct mfs_layout *layout,
					 const char *path);

/* ---- reading files ---------------------------------------------------- */

/* Returned by a sink to stop decoding early without an error. */
#define MFS_SINK_STOP (-1)

/*
 * Receives decoded bytes in order, in chunks of at most 8 KiB; len is
 * never 0. Returns 0 to go on, MFS_SINK_STOP to end decoding with success,
 * or an enum mfs_errcode (> 0) to end it with that error.
 */
typedef int (*mfs_sink_fn)(void *ctx, const char *data, size_t len);

/*
 * Decodes the file entry e of layout and passes all its bytes, from the
 * first, to sink. Memory use does not depend on the size of the file.
 * Returns 0 (also after MFS_SINK_STOP).
 * Errors:
 *   MFS_E_INVAL  e is a directory
 *   MFS_E_NOMEM
 *   the code the sink returned (err then says the output was refused)
 */
int mfs_entry_decode(const struct mfs_layout *layout, const struct mfs_entry *e,
		     mfs_sink_fn sink, void *ctx, struct mfs_err *err);

/*
 * Stores the exact size of the file entry e in *size: the number of bytes
 * mfs_entry_decode() gives. The first call decodes the file (counting
 * only) and remembers the size in e; later calls are free. STRING and RAW
 * sources are known without decoding.
 * Errors: MFS_E_INVAL (a directory), MFS_E_NOMEM.
 */
int mfs_entry_size(const struct mfs_layout *layout, struct mfs_entry *e,
		   uint64_t *size, struct mfs_err *err);

/*
 * Copies up to size bytes of the decoded file e, from byte off, to out and
 * stores the count in *got (less than size only at the end of the file).
 * Decodes from the start of the file each time; a caller that reads a file
 * piece by piece should decode it once into its cache instead.
 * Errors: MFS_E_INVAL (a directory), MFS_E_NOMEM.
 */
int mfs_entry_read(const struct mfs_layout *layout, const struct mfs_entry *e,
		   uint64_t off, char *out, size_t size, size_t *got,
		   struct mfs_err *err);

/* ---- decoders, exposed for tests and for other modules ---------------- */

/*
 * Transfer-decodes len bytes at in (cte) into sink, as for a part's
 * content. Errors: what the sink returns.
 */
int mfs_cte_decode(enum mfs_cte cte, const char *in, size_t len,
		   mfs_sink_fn sink, void *ctx);

/*
 * Converts len bytes at in, text in charset (NULL for none), to UTF-8 as
 * for body.txt (charset rules above, CRLF -> LF) into sink.
 * Errors: MFS_E_NOMEM, what the sink returns.
 */
int mfs_text_decode(const char *charset, const char *in, size_t len,
		    mfs_sink_fn sink, void *ctx);

/* Returns the MFS_CTE_* for a Content-Transfer-Encoding value (NULL or
 * unknown: MFS_CTE_BINARY). */
enum mfs_cte mfs_cte_from_name(const char *name);

#endif
