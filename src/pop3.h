/*
 * pop3.h - the POP3 driver: a read-only store with one folder, "INBOX".
 *
 * POP3 servers lock the maildrop while a session is open, and message
 * numbers are valid only within one session. This driver therefore keeps no
 * session between calls: every index and fetch opens its own session (TCP,
 * TLS, CAPA, login), does its work and ends it with QUIT; a session that saw
 * a network error is closed without QUIT. Messages are identified by UIDL
 * across sessions; DELE is never sent.
 *
 * Every network wait lasts at most acct->timeout seconds (tls.h). One lock
 * per store serializes the sessions of one store.
 */
#ifndef MAILFS_POP3_H
#define MAILFS_POP3_H

#include "config.h"
#include "error.h"
#include "store.h"

/*
 * Creates the POP3 store for acct (read_only = 1; the write ops are NULL);
 * connects nothing yet. acct and password (the password or OAuth2 token)
 * are borrowed and must outlive the store. Returns NULL on ENOMEM.
 * The store's ops (store.h) on POP3:
 *   connect  opens a session and ends it (QUIT): checks that the server is
 *            reachable, the TLS and the login. TCP, then implicit TLS
 *            (pop3s://) or STLS (pop3://; required: when CAPA does not list
 *            STLS no password is sent, MFS_E_TLS, unless tls = none). CAPA
 *            before and after STLS. Login, by acct->auth:
 *              password: APOP when acct->apop (MD5 of the greeting's
 *                <timestamp> and the password; no timestamp: MFS_E_AUTH
 *                "the server offers no APOP", and no password is sent),
 *                else USER/PASS, or AUTH PLAIN when CAPA lists no USER but
 *                SASL PLAIN (MFS_E_AUTH when neither is offered).
 *              xoauth2, oauthbearer: AUTH XOAUTH2 / AUTH OAUTHBEARER with
 *                the password as the token (MFS_E_AUTH when CAPA does not
 *                list the mechanism). When the server refuses the token,
 *                mfs_password_get() is asked once for a new one and the
 *                login tried once more in the same session; the new token
 *                (owned by the store, wiped when it is freed) is used from
 *                then on. A refused password is never asked for again.
 *            AUTH carries its initial response on the command line when
 *            that stays within 255 octets, else after a "+" challenge
 *            (RFC 5034). MFS_E_AUTH when the login is refused.
 *            A server whose CAPA says "EXPIRE 0" deletes every message
 *            that is retrieved: MFS_E_ACCESS ("... refusing to read (set
 *            allow_expire = yes to read it anyway, the server then
 *            deletes every message mailfs reads)") before logging in, or
 *            right after it when the policy is per user ("EXPIRE n USER"
 *            before login); with acct->allow_expire the store reads
 *            anyway and logs a warning once.
 *            With -d (mfs_log_debugging()), every command line is logged
 *            as "pop3: C: ..." and every status line received as
 *            "pop3: S: ..." (not the lines of multi-line replies); the
 *            PASS argument, the APOP digest and AUTH responses show as
 *            "<hidden>".
 *   list     one folder, "INBOX"; no network.
 *   index    "INBOX" only (else MFS_E_NOENT); *validity is 0. UIDL and
 *            LIST, then TOP n 0 for every message. When CAPA lists
 *            PIPELINING, USER+PASS go out together, UIDL+LIST together,
 *            and TOP in one write while the commands not yet answered
 *            stay within 16 KB (less than any socket buffer pair, so
 *            neither side can block while the other waits); past that,
 *            more go out whenever half of them have been answered, and
 *            QUIT rides with the last ones: 1000 messages cost 4 client
 *            round trips after the greeting. Without PIPELINING every
 *            command waits for its reply (1006 for 1000 messages).
 *            uid is the message number in this session, uidl the UIDL,
 *            size the LIST size (RFC 1939: the octets of the message with
 *            CRLF line ends, before dot-stuffing; Dovecot's equals the
 *            IMAP RFC822.SIZE and what fetch delivers), date the Date
 *            header (0 when absent or unparsable), from the decoded
 *            display name of the first From mailbox else its address,
 *            subject the decoded Subject; flags 0. Without TOP in CAPA,
 *            from/subject are "" and date 0.
 *            MFS_E_PROTO: the server has no UIDL ("server has no UIDL;
 *            message names would not be stable"), a UIDL longer than 70
 *            characters or with a byte outside '!'..'~', a UIDL or
 *            message number twice, or a listing it cannot read.
 *   fetch    "INBOX" only; msg->uidl and msg->size are used. "UIDL
 *            msg->uid" checks that the number still names that UIDL,
 *            else the whole UIDL listing finds its number now
 *            (MFS_E_NOENT when it is gone); then RETR, streamed to fd
 *            line by line (memory does not grow with the message),
 *            dot-unstuffed, every line ending in CRLF. POP3 adds a CRLF
 *            after a message that does not end in one; it is dropped
 *            when the bytes without it are exactly msg->size, so the
 *            result equals IMAP BODY[]. *len is the number of bytes
 *            written. MFS_E_IO when writing to fd fails.
 *            RETR may set \Seen in the server's IMAP view (Dovecot does).
 * Network failures: MFS_E_CONNECT, MFS_E_TIMEOUT, MFS_E_TLS, MFS_E_PROTO.
 */
struct mfs_store *mfs_pop3_store_new(const struct mfs_account *acct,
				     const char *password);

#endif
