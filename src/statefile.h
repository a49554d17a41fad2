/*
 * statefile.h - the small text files the spool keeps its state in
 * (ID.state, .sent/ID.name): written whole to NAME.new, fsync'd and
 * renamed, never through a symbolic link; values escaped so that one
 * field stays one line.
 */
#ifndef MAILFS_STATEFILE_H
#define MAILFS_STATEFILE_H

#include <stddef.h>
#include <stdio.h>

/* Writes s with '%', CR and LF as %XX. NULL writes nothing. */
void mfs_state_put_escaped(FILE *f, const char *s);

/* s with every %XX (hex) made the byte it stands for; anything else as
 * it is. malloc'd; NULL when out of memory. */
char *mfs_state_unescape(const char *s);

/*
 * Creates dirfd/name afresh for writing (mode 0600): whatever is there (a
 * file left by a crash, a planted symbolic link) is removed, not opened.
 * Returns the fd or -1 (errno set).
 */
int mfs_state_create_new(int dirfd, const char *name);

/* Writes the len bytes of text to dirfd/name durably: name.new, fsync,
 * rename. Returns 0 or -1 (errno set; name.new is removed). The caller
 * fsyncs the directory. */
int mfs_state_write(int dirfd, const char *name, const char *text, size_t len);

/* Removes the files of entry id in dirfd: ID.eml first, so that a stop in
 * between leaves ID.<other> alone (which the next open drops), then
 * ID.<other>; then fsyncs the directory. */
void mfs_state_remove(int dirfd, const char *id, const char *other);

#endif
