/*
 * names.h - text that comes from a mail server, made fit for the tree.
 *
 * Pure functions on strings, no network and no global state:
 *
 *   - IMAP folder names: modified UTF-7 (RFC 3501 5.1.3) <-> UTF-8;
 *   - header values: RFC 2047 encoded words, RFC 2231 parameter values,
 *     legacy 8-bit bytes, all turned into valid UTF-8;
 *   - file and directory names: one safe path component from untrusted
 *     text, clash suffixes, and the message directory name of SPEC.md;
 *   - dates: RFC 5322 Date headers and IMAP INTERNALDATE to time_t.
 *
 * Conventions for every function here:
 *   - Every returned string is malloc'd and owned by the caller, who frees it.
 *   - NULL is returned, with errno ENOMEM, only when an allocation fails,
 *     unless a function documents another case (then errno says which).
 *   - Input strings are borrowed and never modified. They must not be NULL
 *     unless a function says otherwise.
 *   - "Valid UTF-8" means strict UTF-8 (no overlong forms, no surrogates,
 *     nothing above U+10FFFF) that contains no NUL byte.
 *   - Charsets are converted with iconv(3) (glibc); undecodable bytes become
 *     U+FFFD REPLACEMENT CHARACTER, never an error.
 */
#ifndef MAILFS_NAMES_H
#define MAILFS_NAMES_H

#include <iconv.h>
#include <stddef.h>
#include <time.h>

/* The longest name a path component may have, in bytes (NAME_MAX). */
#define MFS_NAME_MAX 255

/* The longest message id (IMAP UID or POP3 UIDL) mfs_msg_dirname accepts, in
 * bytes. RFC 1939 limits a UIDL to 70 characters. */
#define MFS_MSG_ID_MAX 128

/* ---- UTF-8 ---------------------------------------------------------- */

/* Returns 1 when the len bytes at s are valid UTF-8 (see above: no NUL),
 * else 0. s may be NULL when len is 0. Never fails. */
int mfs_utf8_valid(const char *s, size_t len);

/*
 * Returns the len bytes at in as valid UTF-8: every valid sequence is kept,
 * every byte that does not start a valid sequence (a stray continuation byte,
 * a truncated or overlong sequence, an encoded surrogate, a NUL byte) is
 * replaced by U+FFFD, one U+FFFD per byte. in may be NULL when len is 0.
 * Invariant: mfs_utf8_clean(s, n) equals s exactly when mfs_utf8_valid(s, n).
 * Errors: NULL/ENOMEM.
 */
char *mfs_utf8_clean(const char *in, size_t len);

/*
 * Converts len bytes of text in `charset` to valid UTF-8, the way every
 * decoder of this module does:
 *   - charset NULL, empty, not a plausible charset name or unknown to iconv:
 *     the bytes are taken as UTF-8 when they are valid UTF-8, else as
 *     windows-1252;
 *   - a few labels are widened to the superset that mail software really
 *     sends under them (iso-8859-1 and us-ascii -> windows-1252, gb2312 ->
 *     GB18030, shift_jis -> CP932, euc-kr -> CP949), as web browsers do;
 *   - bytes that are invalid in the charset become U+FFFD.
 * If outlen is not NULL, *outlen receives the length of the result.
 * Errors: NULL/ENOMEM.
 */
char *mfs_text_to_utf8(const char *charset, const char *in, size_t len,
		       size_t *outlen);

/* ---- IMAP modified UTF-7 ---------------------------------------------- */

/*
 * Decodes an IMAP mailbox name from modified UTF-7 to UTF-8.
 * Decoding is strict, so that a name decodes to exactly one UTF-8 string and
 * mfs_mutf7_encode() of the result gives back the server's name byte for
 * byte. The tree can therefore always map a directory back to its folder.
 * Errors:
 *   NULL/EINVAL  in is not canonical modified UTF-7: a byte outside printable
 *                US-ASCII, a '&' without its closing '-', a character outside
 *                the modified base64 alphabet, an encoded printable US-ASCII
 *                character or NUL, a UTF-16 sequence that does not end on a
 *                code unit boundary or leaves non-zero padding bits, an
 *                unpaired surrogate, or a null shift ("-&" inside a name).
 *                The caller then shows mfs_name_sanitize(in) instead.
 *   NULL/ENOMEM
 */
char *mfs_mutf7_decode(const char *in);

/*
 * Encodes a UTF-8 mailbox name as modified UTF-7 ("&" becomes "&-", every
 * character outside printable US-ASCII goes into a "&...-" section).
 * Errors:
 *   NULL/EINVAL  utf8 is not valid UTF-8
 *   NULL/ENOMEM
 */
char *mfs_mutf7_encode(const char *utf8);

/* ---- header values ------------------------------------------------------ */

/*
 * Decodes an unstructured header value (Subject, a display name, a whole
 * header line for the `headers` file) to one line of valid UTF-8:
 *   - unfolds: CRLF or LF followed by a space or tab becomes that space or
 *     tab; a CR or LF at the end is dropped; any other CR or LF becomes a
 *     space;
 *   - decodes RFC 2047 encoded words, "=?charset?B|Q?text?=" (case does not
 *     matter; an RFC 2231 language suffix "charset*lang" is ignored), in any
 *     charset iconv knows, also where a sender put one next to other text;
 *   - drops whitespace between two adjacent encoded words and decodes
 *     adjacent words of the same charset together, so a multibyte character
 *     split across two words comes out whole;
 *   - keeps an encoded word as its raw text when its charset is unknown or
 *     its B or Q encoding is broken;
 *   - reads bytes outside encoded words as UTF-8 when the whole value is
 *     valid UTF-8, else as windows-1252.
 * Control characters other than CR and LF (a decoded "=09", say) are kept;
 * a caller that builds a file name passes the result to mfs_name_sanitize().
 * Errors: NULL/ENOMEM.
 */
char *mfs_hdr_decode(const char *in);

/*
 * Decodes an RFC 2231 extended parameter value, charset'language'text with
 * %XX escapes, e.g. "utf-8''%E2%82%AC%20rates.pdf" -> "€ rates.pdf".
 * Continuations (filename*0*, filename*1*, ...) are the caller's: join their
 * texts first; only the first carries charset and language. Without the two
 * quotes the whole value is percent-decoded text of no known charset. A '%'
 * that does not start a valid escape is kept as it is. The charset is applied
 * as by mfs_text_to_utf8().
 * Errors: NULL/ENOMEM.
 */
char *mfs_rfc2231_decode(const char *value_with_charset);

/* ---- names in the tree ----------------------------------------------- */

/*
 * Makes one safe path component out of untrusted text (an attachment name,
 * a folder name that did not decode):
 *   - invalid UTF-8 bytes become U+FFFD (mfs_utf8_clean);
 *   - '/' becomes U+2215 DIVISION SLASH;
 *   - tab, LF, VT, FF, CR, U+2028 and U+2029 become a space; every other
 *     control character (C0, DEL, C1) becomes '_';
 *   - bidi controls (U+061C, U+200E, U+200F, U+202A-U+202E, U+2066-U+2069)
 *     are removed;
 *   - leading and trailing whitespace (Unicode spaces, zero-width space and
 *     byte order mark included) is trimmed;
 *   - "" becomes "unnamed", "." becomes "_", ".." becomes "__" (other names
 *     that start with a dot are kept);
 *   - longer than MFS_NAME_MAX bytes: cut at a character boundary, keeping
 *     an extension (what follows the last '.', when that is 1 to 16 bytes
 *     long and the dot is not the first byte).
 * The result is valid UTF-8, 1 to MFS_NAME_MAX bytes, without '/'.
 * in NULL is taken as "".
 * Errors: NULL/ENOMEM.
 */
char *mfs_name_sanitize(const char *in);

/*
 * Returns the n-th alternative of `name` for a clash: "report.pdf", 2 ->
 * "report (2).pdf"; "README", 3 -> "README (3)". The extension is found as
 * in mfs_name_sanitize(). The part before it is cut at a character boundary
 * so that the result stays within MFS_NAME_MAX bytes. name should be a
 * result of mfs_name_sanitize(). n <= 1 returns a copy of name.
 * Errors: NULL/ENOMEM.
 */
char *mfs_name_unique(const char *name, int n);

/*
 * Builds the message directory name of SPEC.md:
 *
 *   "2026-11-20 1532 Alice Smith — Budget Q4 ·4711"
 *
 * - date in local time as "YYYY-MM-DD HHMM"; 0, (time_t)-1 or a year outside
 *   0..9999 gives "0000-00-00 0000";
 * - from: the sender as decoded UTF-8 text (display name or address);
 *   "(no sender)" when NULL or empty;
 * - " — " (U+2014 with spaces), then subject (decoded UTF-8 text),
 *   "(no subject)" when NULL or empty;
 * - " ·" (U+00B7) and id: the IMAP UID in decimal or the POP3 UIDL; every
 *   byte of id outside '!'..'~', and '/', becomes '_'.
 * Sender and subject are sanitized as by mfs_name_sanitize() and each run of
 * whitespace becomes one space. When the name would exceed MFS_NAME_MAX
 * bytes, the subject is shortened first (down to half the room the two
 * share, or less when the sender is short), then the sender; a shortened
 * part ends in "…". The date and " ·id" are never cut.
 * The result is valid UTF-8, at most MFS_NAME_MAX bytes, without '/' or
 * control characters, and ends with " ·" and the sanitized id.
 * Errors:
 *   NULL/EINVAL  id is NULL, empty or longer than MFS_MSG_ID_MAX bytes
 *   NULL/ENOMEM
 */
char *mfs_msg_dirname(time_t date, const char *from, const char *subject,
		      const char *id);

/*
 * Copies into id (idlen bytes, NUL-terminated) the id of a message directory
 * name: what follows its last " ·".
 * Returns 0, or -1 with errno ENOENT when name has no " ·" followed by an id,
 * or ERANGE when the id does not fit in idlen bytes.
 */
int mfs_msg_dirname_id(const char *name, char *id, size_t idlen);

/* ---- dates ------------------------------------------------------------ */

/*
 * Parses an RFC 5322 date-time, "Thu, 20 Nov 2026 15:32:01 +0100", to UTC.
 * Accepted as well: no weekday, no seconds, comments and folding anywhere,
 * '-' between day, month and year, full month names, 1-digit days, 2-digit
 * years (< 50 -> 20xx, else 19xx) and 3-digit years (+1900), the zones UT,
 * GMT, Z, EST, EDT, CST, CDT, MST, MDT, PST, PDT, other alphabetic zones and
 * a missing zone as +0000; anything after the zone is ignored.
 * Returns (time_t)-1 when the text is NULL or not such a date (or a field
 * is out of range, such as 31 Apr or 24:00).
 */
time_t mfs_parse_date(const char *rfc5322_date);

/* The value of hex digit c (either case), or -1 when it is none. */
int mfs_hex_value(int c);

/*
 * Parses an IMAP INTERNALDATE, "20-Nov-2026 15:32:01 +0100" (the day may be
 * one digit or space-padded; surrounding double quotes are allowed), to UTC.
 * Returns (time_t)-1 when the text is NULL or not such a date.
 */
time_t mfs_parse_imap_date(const char *internaldate);

/*
 * Opens an iconv converter from the charset named by the n bytes at name to
 * UTF-8. Only plausible names reach iconv_open() (letters, digits and
 * "-_.:", at most 40 bytes), and labels that mail software uses for a
 * superset are widened (iso-8859-1 and us-ascii to windows-1252, gb2312 to
 * GB18030, shift_jis to CP932, euc-kr to CP949, ...).
 * Returns (iconv_t)-1 when the name is implausible or unknown.
 */
iconv_t mfs_charset_open(const char *name, size_t n);

#endif
