/*
 * log.h - one log for the whole daemon.
 *
 * To stderr while mailfs runs in the foreground, to syslog (facility
 * LOG_MAIL, ident "mailfs") once it has daemonized. Debug lines appear only
 * with -d. Never pass a password or message content to these functions.
 */
#ifndef MAILFS_LOG_H
#define MAILFS_LOG_H

/* use_syslog: send lines to syslog instead of stderr. debug: show
 * mfs_log_debug lines. May be called again (after daemonizing). */
void mfs_log_init(int use_syslog, int debug);

/* 1 when -d was given. */
int mfs_log_debugging(void);

void mfs_log_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void mfs_log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void mfs_log_debug(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));

#endif
