#!/bin/bash
# make demo / make demo-stop: local mail servers with sample mail, mounted
# at ./demo-mail.
#
#   tests/demo.sh start   start (once) the servers, add the sample mail,
#                         mount ./demo-mail, print what to try
#   tests/demo.sh stop    unmount and stop everything "start" started
set -euo pipefail

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=$TOP/.demo
SERVERS=$STATE/servers
MNT=$TOP/demo-mail
CONFIG=$STATE/config

running()
{
	[ -f "$SERVERS/env" ] || return 1
	# shellcheck disable=SC1091
	. "$SERVERS/env"
	kill -0 "$MFS_DOVECOT_PID" 2>/dev/null
}

start()
{
	mkdir -p "$STATE"
	if running; then
		echo "demo: mail servers already running (state in $STATE)"
	else
		rm -rf "$SERVERS"
		"$TOP/tests/servers/mailservers.sh" start "$SERVERS"
		"$TOP/tests/servers/mailservers.sh" populate "$SERVERS" demo
	fi
	# shellcheck disable=SC1091
	. "$SERVERS/env"
	cat >"$CONFIG" <<CFG
# The demo account: alice on the local Dovecot and Postfix.
[demo]
imap = imaps://localhost:$MFS_IMAPS_PORT
user = $MFS_USER
password_file = $SERVERS/alice.pass
ca_file = $MFS_CA
cache_dir = $STATE/cache
timeout = 10
smtp = smtps://localhost:$MFS_SMTPS_PORT
from = Alice Smith <$MFS_EMAIL>
CFG
	mkdir -p "$MNT"
	if mountpoint -q "$MNT"; then
		echo "demo: already mounted at $MNT"
	else
		"$TOP/mailfs" -o "config=$CONFIG" demo "$MNT"
	fi
	cat <<TXT

The demo account is mounted at ./demo-mail. Try:

  ls demo-mail
  ls demo-mail/INBOX
  cat demo-mail/INBOX/*/message.eml
  ls -R demo-mail/Projects
  cat demo-mail/INBOX/*Budget*/body.txt
  printf 'To: $MFS_EMAIL\nSubject: hello from the shell\n\nIt works.\n' > demo-mail/outbox/hello
  ls demo-mail/INBOX demo-mail/Sent      # a few seconds later

Config: $CONFIG
Stop everything with: make demo-stop
TXT
}

stop()
{
	if mountpoint -q "$MNT" 2>/dev/null; then
		fusermount3 -u "$MNT" || umount -l "$MNT"
		echo "demo: unmounted $MNT"
	fi
	if [ -d "$SERVERS" ]; then
		"$TOP/tests/servers/mailservers.sh" stop "$SERVERS"
		echo "demo: servers stopped"
	fi
}

case "${1:-}" in
start) start ;;
stop) stop ;;
*)
	echo "usage: $0 start|stop" >&2
	exit 2
	;;
esac
