/*
 * query.h - the search grammar: one file name (FOLDER/.search/QUERY) parsed
 * into a tree, rendered as IMAP SEARCH criteria, or matched against what a
 * listing knows of a message (POP3).
 *
 * QUERY is terms separated by blanks (space, tab), all of which must match:
 *
 *   from:X to:X cc:X subject:X body:X text:X   text in that part (a bare
 *                                              word or phrase is text:)
 *   since:YYYY-MM-DD before:YYYY-MM-DD         the Date header's day
 *                                              (SENTSINCE, SENTBEFORE)
 *   larger:N smaller:N                         size in bytes; N may end in
 *                                              k (1024) or M (1048576)
 *   is:seen|flagged|answered|draft|deleted     a flag
 *   "a phrase"   from:"Alice Smith"            blanks inside quotes
 *   -TERM                                      not
 *   A or B                                     either (binds tighter than
 *                                              the blanks between terms)
 *
 * Keys and `or` are case-insensitive; `or` is a word of its own (quote it,
 * "or", to search for the word). Text is UTF-8 without control
 * characters. A query is at most MFS_QUERY_MAX bytes.
 */
#ifndef MAILFS_QUERY_H
#define MAILFS_QUERY_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "store.h"

#define MFS_QUERY_MAX 1024

enum mfs_query_op {
	MFS_Q_FROM,
	MFS_Q_TO,
	MFS_Q_CC,
	MFS_Q_SUBJECT,
	MFS_Q_BODY,
	MFS_Q_TEXT,
	MFS_Q_SINCE,   /* Date header on or after the day */
	MFS_Q_BEFORE,  /* Date header before the day */
	MFS_Q_LARGER,  /* more than size bytes */
	MFS_Q_SMALLER, /* fewer than size bytes */
	MFS_Q_IS,      /* flag set */
	MFS_Q_NOT,     /* a does not match */
	MFS_Q_OR,      /* a or b matches */
	MFS_Q_AND,     /* a and b match */
};

struct mfs_query {
	enum mfs_query_op op;
	char *text;		  /* owned: FROM..TEXT, UTF-8, never "" */
	int year, month, day;	  /* SINCE, BEFORE */
	uint32_t size;		  /* LARGER, SMALLER */
	unsigned flag;		  /* IS: one MFS_FLAG_* bit (store.h) */
	struct mfs_query *a, *b; /* owned: NOT a; OR, AND a b */
};

/* Parses name into *q (free with mfs_query_free()). MFS_E_INVAL with the
 * reason in err ("since:yesterday: not a date YYYY-MM-DD", "unknown key
 * foo:", "unbalanced quote", ...); MFS_E_NOMEM. */
int mfs_query_parse(const char *name, struct mfs_query **q,
		    struct mfs_err *err);
void mfs_query_free(struct mfs_query *q);

/* Whether q only uses what a listing has of a message (from, subject,
 * date, size, flags): to:, cc:, body: and text: need more. */
int mfs_query_listing_only(const struct mfs_query *q);

/* Whether msg matches q by what a listing has (mfs_query_listing_only(q)
 * must be true): text as a case-insensitive (ASCII) substring of the
 * decoded sender or subject, the day of msg->date in UTC. 1 or 0. */
int mfs_query_match(const struct mfs_query *q, const struct mfs_store_msg *msg);

/* The decoded text of a message, for the terms a listing cannot answer;
 * NULL or "" where the message has none. */
struct mfs_query_text {
	const char *from, *to, *cc, *subject; /* header values, decoded */
	const char *headers;		      /* the header block, decoded */
	const char *body;		      /* the main text (body.txt) */
};

/* Whether msg matches q, text terms by t: from:, to:, cc:, subject: in
 * that header, body: in the body, text: in the headers or the body (case
 * ignored for ASCII letters); the others as mfs_query_match(). 1 or 0. */
int mfs_query_match_text(const struct mfs_query *q,
			 const struct mfs_store_msg *msg,
			 const struct mfs_query_text *t);

/* IMAP rendering. */
enum mfs_query_charset {
	MFS_QUERY_UTF8,
	MFS_QUERY_LATIN1, /* ISO-8859-1, for a server without UTF-8 */
};

/* The search keys of a query as sent after "UID SEARCH [CHARSET x] ". */
struct mfs_query_wire {
	char *buf;	/* owned: the keys, ending in "\r\n" */
	size_t len;
	size_t *lits;	/* owned: offsets in buf just after each literal's
			 * "{n}\r\n": where a sender without LITERAL+ waits
			 * for the server's "+" */
	size_t nlits;
	int ascii;	/* only US-ASCII: no CHARSET needed */
};

/* Renders q as IMAP search keys in charset: text terms as quoted strings
 * when they are printable ASCII, else as literals ({n+} when literal_plus).
 * MFS_E_INVAL when a term has a character charset cannot hold;
 * MFS_E_NOMEM. Free w with mfs_query_wire_free(). */
int mfs_query_imap(const struct mfs_query *q, enum mfs_query_charset charset,
		   int literal_plus, struct mfs_query_wire *w,
		   struct mfs_err *err);
void mfs_query_wire_free(struct mfs_query_wire *w);

#endif
