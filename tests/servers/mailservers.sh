#!/bin/bash
# Local test mail servers: Dovecot (IMAP, POP3, LMTP) and Postfix
# (submission with STARTTLS and implicit TLS, SASL through Dovecot),
# each run from its own configuration in a private state directory.
#
#   mailservers.sh start DIR          create DIR, start both, write DIR/env
#   mailservers.sh stop DIR           stop what "start DIR" started
#   mailservers.sh populate DIR demo  put the sample messages into alice's
#                                     mailboxes (IMAP APPEND)
#
# Environment for "start":
#   DOVECOT_EXTRA_CONF  text appended to DIR/dovecot.conf
#   POSTFIX_EXTRA_CONF  "name = value" lines set in DIR/postfix/main.cf
#
# Every port is chosen free at start, and every pid file, socket, queue
# and log lives under DIR, so several instances can run side by side.

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY=/usr/bin/python3
DOMAIN=example.test
WAIT_SECS=20
# Dovecot refuses mail access as root, so the mailboxes belong to this
# existing system user when the script runs as root.
MAIL_USER=mail

# Set by "start" while it runs, so that a failure stops what it started.
STARTING_DIR=

die()
{
	echo "mailservers: $*" >&2
	if [ -n "$STARTING_DIR" ]; then
		local d=$STARTING_DIR
		STARTING_DIR=
		cmd_stop "$d" || true
	fi
	exit 1
}

usage()
{
	cat >&2 <<EOF
usage: $0 start DIR
       $0 stop DIR
       $0 populate DIR demo
EOF
	exit 2
}

need_tools()
{
	local t

	[ "$(id -u)" -eq 0 ] ||
		die "must run as root (Postfix and Dovecot drop privileges)"
	for t in openssl dovecot postfix postconf "$PY"; do
		command -v "$t" >/dev/null 2>&1 || die "missing program: $t"
	done
	[ -x /usr/lib/dovecot/lmtp ] ||
		die "dovecot-lmtpd is missing; run make deps"
	id postfix >/dev/null 2>&1 || die "user 'postfix' does not exist"
}

# A password of 24 URL-safe characters from /dev/urandom.
random_password()
{
	head -c 18 /dev/urandom | base64 | tr '+/' '-_'
}

# ---------------------------------------------------------------- TLS

write_openssl_cnf()
{
	local d=$1

	mkdir -p "$d/ca/newcerts"
	: >"$d/ca/index.txt"
	echo 1000 >"$d/ca/serial"
	cat >"$d/ca/openssl.cnf" <<EOF
[ ca ]
default_ca = mfs_ca

[ mfs_ca ]
dir = $d/ca
database = \$dir/index.txt
new_certs_dir = \$dir/newcerts
serial = \$dir/serial
certificate = $d/ca.pem
private_key = $d/ca.key
default_md = sha256
default_days = 3650
policy = policy_any
copy_extensions = none
unique_subject = no
email_in_dn = no

[ policy_any ]
commonName = supplied

[ req ]
distinguished_name = req_dn
prompt = no

[ req_dn ]
CN = unused

[ ext_ca ]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash

[ ext_server ]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = DNS:localhost,IP:127.0.0.1

[ ext_wronghost ]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = DNS:wrong.example
EOF
}

# Keys are ECDSA P-256: generated in milliseconds, where five RSA keys
# took a second or more of every start.
KEY_OPTS="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1"

# make_ca DIR NAME CN: self-signed CA, DIR/NAME.pem and DIR/NAME.key.
make_ca()
{
	local d=$1 name=$2 cn=$3

	openssl req -config "$d/ca/openssl.cnf" -x509 -new $KEY_OPTS \
		-nodes -keyout "$d/$name.key" \
		-out "$d/$name.pem" -days 3650 -subj "/CN=$cn" \
		-extensions ext_ca 2>>"$d/openssl.log"
}

# make_leaf DIR NAME CN EXT [openssl ca options...]: NAME.pem and NAME.key
# signed by DIR/ca.pem with extension section EXT.
make_leaf()
{
	local d=$1 name=$2 cn=$3 ext=$4
	shift 4

	openssl req -config "$d/ca/openssl.cnf" -new $KEY_OPTS \
		-nodes -keyout "$d/$name.key" -out "$d/ca/$name.csr" \
		-subj "/CN=$cn" 2>>"$d/openssl.log"
	openssl ca -config "$d/ca/openssl.cnf" -batch -notext \
		-extensions "$ext" -in "$d/ca/$name.csr" -out "$d/$name.pem" \
		"$@" 2>>"$d/openssl.log"
}

make_certs()
{
	local d=$1

	write_openssl_cnf "$d"
	make_ca "$d" ca "mailfs test CA $RANDOM$RANDOM" ||
		die "CA generation failed, see $d/openssl.log"
	make_ca "$d" other-ca "mailfs other test CA $RANDOM$RANDOM" ||
		die "second CA generation failed, see $d/openssl.log"
	make_leaf "$d" server localhost ext_server -days 3650 ||
		die "server certificate failed, see $d/openssl.log"
	make_leaf "$d" expired localhost ext_server \
		-startdate 20200101000000Z -enddate 20200102000000Z ||
		die "expired certificate failed, see $d/openssl.log"
	make_leaf "$d" wronghost wrong.example ext_wronghost -days 3650 ||
		die "wrong-host certificate failed, see $d/openssl.log"
	# Dovecot and Postfix read the key as root before dropping privileges.
	chmod 0600 "$d"/*.key
}

# ------------------------------------------------------------ Dovecot

write_dovecot_conf()
{
	local d=$1 uid gid dh=""

	uid=$(id -u "$MAIL_USER")
	gid=$(id -g "$MAIL_USER")
	[ -r /usr/share/dovecot/dh.pem ] &&
		dh="ssl_dh = </usr/share/dovecot/dh.pem"

	mkdir -p "$d/dovecot-run" "$d/dovecot-state" "$d/mail/alice" \
		"$d/mail/bob"
	chown -R "$uid:$gid" "$d/mail"
	chmod 0700 "$d/mail/alice" "$d/mail/bob"
	{
		printf 'alice:{PLAIN}%s::::%s/mail/alice::\n' "$ALICE_PASS" "$d"
		printf 'bob:{PLAIN}%s::::%s/mail/bob::\n' "$BOB_PASS" "$d"
	} >"$d/users"
	chgrp dovecot "$d/users" 2>/dev/null || true
	chmod 0640 "$d/users"

	cat >"$d/dovecot.conf" <<EOF
# Generated by tests/servers/mailservers.sh for one test run.
instance_name = mfs-$PORT_IMAP
base_dir = $d/dovecot-run
state_dir = $d/dovecot-state
log_path = $d/dovecot.log
info_log_path = $d/dovecot.log
debug_log_path = $d/dovecot.log
protocols = imap pop3 lmtp
listen = 127.0.0.1
shutdown_clients = yes

ssl = yes
ssl_cert = <$d/server.pem
ssl_key = <$d/server.key
$dh

disable_plaintext_auth = no
# XOAUTH2 and OAUTHBEARER: without an oauth2 passdb, Dovecot 2.3 checks the
# bearer token against the passdb as if it were the password, so the
# user's password is a valid token and anything else is refused (IMAP
# AUTHENTICATIONFAILED; SMTP through Postfix answers 334 with an error JSON,
# then 535 after the client's "AQ==" or empty line). Postfix offers both
# mechanisms too, since its SASL is this Dovecot's (private/auth).
auth_mechanisms = plain login xoauth2 oauthbearer
auth_failure_delay = 0
auth_username_format = %Ln
passdb {
  driver = passwd-file
  args = scheme=PLAIN $d/users
}
userdb {
  driver = passwd-file
  args = $d/users
}

first_valid_uid = $uid
first_valid_gid = $gid
mail_uid = $uid
mail_gid = $gid
mail_location = maildir:~/Maildir
mail_max_userip_connections = 100

namespace inbox {
  inbox = yes
  separator = /
  mailbox Sent {
    special_use = \\Sent
    auto = subscribe
  }
  mailbox Drafts {
    special_use = \\Drafts
    auto = subscribe
  }
  mailbox Trash {
    special_use = \\Trash
    auto = subscribe
  }
  mailbox Archive {
    special_use = \\Archive
    auto = subscribe
  }
}

service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $PORT_IMAP
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = $PORT_IMAPS
    ssl = yes
  }
}
service pop3-login {
  inet_listener pop3 {
    address = 127.0.0.1
    port = $PORT_POP3
  }
  inet_listener pop3s {
    address = 127.0.0.1
    port = $PORT_POP3S
    ssl = yes
  }
}
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = $PORT_LMTP
  }
}
# No auth penalty (up to 15 s before each login after failed ones from
# the same IP): tests refuse passwords and tokens on purpose, and a
# penalty would outlast their timeouts. mode = 0 removes the socket, and
# the auth process then skips the penalty.
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
service auth {
  unix_listener $d/postfix-queue/private/auth {
    mode = 0660
    user = postfix
    group = postfix
  }
}

# COMPRESS=DEFLATE (RFC 4978), so that every IMAP test runs compressed
# where mailfs asks for it
mail_plugins = \$mail_plugins zlib
protocol imap {
  imap_idle_notify_interval = 1 mins
  mail_plugins = \$mail_plugins imap_zlib
}
protocol pop3 {
  pop3_uidl_format = %08Xu%08Xv
}
protocol lmtp {
  postmaster_address = postmaster@$DOMAIN
}
EOF
	if [ -n "${DOVECOT_EXTRA_CONF:-}" ]; then
		printf '\n# DOVECOT_EXTRA_CONF\n%s\n' "$DOVECOT_EXTRA_CONF" \
			>>"$d/dovecot.conf"
	fi
}

# detached LOG CMD...: run CMD with stdin from /dev/null, stdout and stderr
# appended to LOG and every other inherited descriptor closed, so that a
# daemon it leaves behind holds no pipe of whoever ran this script (a
# caller reading our output would otherwise never see end-of-file).
detached()
{
	local log=$1
	shift

	(
		local fd
		for fd in /proc/self/fd/*; do
			fd=${fd##*/}
			[ "$fd" -gt 2 ] && eval "exec $fd>&-" 2>/dev/null
		done
		exec "$@" </dev/null >>"$log" 2>&1
	)
}

start_dovecot()
{
	local d=$1

	detached "$d/dovecot-start.log" dovecot -c "$d/dovecot.conf" ||
		die "dovecot failed to start, see $d/dovecot-start.log" \
			"and $d/dovecot.log"
}

# ------------------------------------------------------------ Postfix

write_postfix_conf()
{
	local d=$1
	local pc=$d/postfix

	mkdir -p "$pc" "$d/postfix-queue/private" "$d/postfix-data"
	# Dovecot puts its auth socket into private/ before Postfix starts.
	chown postfix:root "$d/postfix-queue/private"
	chmod 0700 "$d/postfix-queue/private"
	chown postfix:postfix "$d/postfix-data"
	chmod 0700 "$d/postfix-data"
	printf 'alice@%s OK\nbob@%s OK\n' "$DOMAIN" "$DOMAIN" \
		>"$pc/virtual_mailboxes"

	cat >"$pc/main.cf" <<EOF
# Generated by tests/servers/mailservers.sh for one test run.
compatibility_level = 3.6
config_directory = $pc
queue_directory = $d/postfix-queue
data_directory = $d/postfix-data
mail_owner = postfix
setgid_group = postdrop
maillog_file = $d/postfix.log
maillog_file_prefixes = $d
syslog_name = mfs-postfix-$PORT_SMTP

myhostname = mail.$DOMAIN
mydomain = $DOMAIN
myorigin = $DOMAIN
mydestination =
mynetworks = 127.0.0.1/32
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
biff = no
local_transport = error:local delivery is disabled
alias_maps =
alias_database =

virtual_mailbox_domains = $DOMAIN
virtual_mailbox_maps = texthash:$pc/virtual_mailboxes
virtual_transport = lmtp:inet:127.0.0.1:$PORT_LMTP
relay_domains =
relayhost =
default_transport = error:relaying is disabled on this test server
smtp_dns_support_level = disabled
smtpd_reject_unlisted_recipient = yes

smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = private/auth
smtpd_sasl_security_options = noanonymous
smtpd_relay_restrictions = reject_unauth_destination
smtpd_recipient_restrictions = permit_sasl_authenticated, reject
smtpd_client_restrictions =
smtpd_helo_required = no

smtpd_tls_cert_file = $d/server.pem
smtpd_tls_key_file = $d/server.key
smtpd_tls_security_level = may
smtpd_tls_auth_only = yes
smtpd_tls_session_cache_database =
smtp_tls_security_level = none
lmtp_tls_security_level = none

message_size_limit = 52428800
EOF
	# Each "name = value" line replaces the setting in place, so that
	# Postfix does not warn about duplicates.
	if [ -n "${POSTFIX_EXTRA_CONF:-}" ]; then
		local line
		while IFS= read -r line; do
			case $line in
			'' | '#'*) continue ;;
			esac
			postconf -c "$pc" -e "$line" ||
				die "bad POSTFIX_EXTRA_CONF line: $line"
		done <<<"$POSTFIX_EXTRA_CONF"
	fi

	cat >"$pc/master.cf" <<EOF
# Generated by tests/servers/mailservers.sh for one test run.
# service type  private unpriv  chroot  wakeup  maxproc command
127.0.0.1:$PORT_SMTP inet n - n - - smtpd
  -o syslog_name=mfs-postfix-$PORT_SMTP/submission
  -o smtpd_tls_security_level=may
  -o smtpd_tls_auth_only=yes
  -o smtpd_discard_ehlo_keywords=chunking
127.0.0.1:$PORT_SMTPS inet n - n - - smtpd
  -o syslog_name=mfs-postfix-$PORT_SMTP/submissions
  -o smtpd_tls_wrappermode=yes
  -o smtpd_tls_security_level=encrypt
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
}

start_postfix()
{
	local d=$1
	local pc=$d/postfix

	# Postfix reads a file changed less than two seconds ago again and
	# again, 300 ms apart, until it has cooled down (load_file.c): the
	# files just written are dated a minute back, so that check and
	# start read them at once.
	touch -d "@$(($(date +%s) - 60))" "$pc/main.cf" "$pc/virtual_mailboxes"
	detached "$d/postfix-start.log" postfix -c "$pc" check ||
		die "postfix check failed, see $d/postfix-start.log" \
			"and $d/postfix.log"
	detached "$d/postfix-start.log" postfix -c "$pc" start ||
		die "postfix failed to start, see $d/postfix-start.log" \
			"and $d/postfix.log"
}

# ------------------------------------------------------- waiting

# wait_pidfile PATH: wait until PATH exists and is non-empty (bounded).
wait_pidfile()
{
	local f=$1 deadline=$((SECONDS + WAIT_SECS))

	while [ ! -s "$f" ]; do
		[ $SECONDS -lt $deadline ] || return 1
		sleep 0.1
	done
}

# wait_ports PORT...: wait until each port on 127.0.0.1 accepts (bounded).
wait_ports()
{
	"$PY" - "$WAIT_SECS" "$@" <<'EOF'
import socket, sys, time
limit = float(sys.argv[1])
deadline = time.monotonic() + limit
for port in map(int, sys.argv[2:]):
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                sys.exit("port %d on 127.0.0.1 does not accept connections "
                         "after %g s" % (port, limit))
            time.sleep(0.1)
EOF
}

read_pid()
{
	local f=$1 pid

	[ -r "$f" ] || return 1
	pid=$(tr -d ' \n' <"$f")
	[ -n "$pid" ] || return 1
	echo "$pid"
}

write_env()
{
	local d=$1

	cat >"$d/env" <<EOF
MFS_DIR=$d
MFS_CA=$d/ca.pem
MFS_IMAP_PORT=$PORT_IMAP
MFS_IMAPS_PORT=$PORT_IMAPS
MFS_POP3_PORT=$PORT_POP3
MFS_POP3S_PORT=$PORT_POP3S
MFS_SMTP_PORT=$PORT_SMTP
MFS_SMTPS_PORT=$PORT_SMTPS
MFS_LMTP_PORT=$PORT_LMTP
MFS_USER=alice
MFS_PASS=$ALICE_PASS
MFS_USER2=bob
MFS_PASS2=$BOB_PASS
MFS_EMAIL=alice@$DOMAIN
MFS_EMAIL2=bob@$DOMAIN
MFS_MAILDIR=$d/mail/alice/Maildir
MFS_DOVECOT_PID=$DOVECOT_PID
MFS_POSTFIX_PID=$POSTFIX_PID
MFS_OTHER_CA=$d/other-ca.pem
MFS_EXPIRED_CERT=$d/expired.pem
MFS_EXPIRED_KEY=$d/expired.key
MFS_WRONGHOST_CERT=$d/wronghost.pem
MFS_WRONGHOST_KEY=$d/wronghost.key
EOF
	chmod 0600 "$d/env"
}

# ------------------------------------------------------- commands

cmd_start()
{
	local d=$1 ports
	local PORT_IMAP='' PORT_IMAPS='' PORT_POP3='' PORT_POP3S='' PORT_SMTP=''
	local PORT_SMTPS='' PORT_LMTP=''

	need_tools
	[ -e "$d" ] && [ -n "$(ls -A "$d" 2>/dev/null)" ] &&
		die "$d exists and is not empty; give a fresh directory"
	mkdir -p "$d"
	d=$(cd "$d" && pwd)
	case $d in
	*[[:space:]]*) die "DIR must not contain white space: $d" ;;
	esac
	# Dovecot's and Postfix's unprivileged processes must reach their
	# files inside DIR; nothing in DIR is readable by others that holds
	# a secret (keys, passwords and env are 0600/0640).
	chmod 0711 "$d"
	STARTING_DIR=$d

	ports=$("$PY" "$HERE/freeports.py" 7) || die "cannot pick free ports"
	read -r -d '' PORT_IMAP PORT_IMAPS PORT_POP3 PORT_POP3S PORT_SMTP \
		PORT_SMTPS PORT_LMTP <<<"$ports" || true
	[ -n "$PORT_LMTP" ] || die "cannot pick free ports"

	ALICE_PASS=$(random_password)
	BOB_PASS=$(random_password)
	(umask 077 && printf '%s\n' "$ALICE_PASS" >"$d/alice.pass")
	(umask 077 && printf '%s\n' "$BOB_PASS" >"$d/bob.pass")

	make_certs "$d"
	write_dovecot_conf "$d"
	write_postfix_conf "$d"

	start_dovecot "$d"
	wait_pidfile "$d/dovecot-run/master.pid" ||
		die "dovecot wrote no pid file in ${WAIT_SECS}s, see $d/dovecot.log"
	DOVECOT_PID=$(read_pid "$d/dovecot-run/master.pid")

	start_postfix "$d"
	wait_pidfile "$d/postfix-queue/pid/master.pid" ||
		die "postfix wrote no pid file in ${WAIT_SECS}s, see $d/postfix.log"
	POSTFIX_PID=$(read_pid "$d/postfix-queue/pid/master.pid")

	write_env "$d"

	wait_ports "$PORT_IMAP" "$PORT_IMAPS" "$PORT_POP3" "$PORT_POP3S" \
		"$PORT_LMTP" "$PORT_SMTP" "$PORT_SMTPS" ||
		die "see $d/dovecot.log and $d/postfix.log"
	STARTING_DIR=
	echo "mailservers: running; source $d/env"
}

# alive PID: true if PID exists and is not a zombie.
alive()
{
	local state

	state=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 1
	[ -n "$state" ] && [ "$state" != Z ]
}

# wait_exit NAME PID...: wait (bounded) until every PID has exited; send
# SIGKILL to whatever is left after that.
wait_exit()
{
	local name=$1 deadline=$((SECONDS + WAIT_SECS)) pid left
	shift

	while :; do
		left=
		for pid in "$@"; do
			alive "$pid" && left="$left $pid"
		done
		[ -n "$left" ] || return 0
		[ $SECONDS -lt $deadline ] || break
		sleep 0.1
	done
	echo "mailservers: $name still running after ${WAIT_SECS}s," \
		"sending SIGKILL to$left" >&2
	for pid in $left; do
		kill -KILL "$pid" 2>/dev/null || true
	done
	return 1
}

# is_ours PID EXE MARK: true if PID is alive, runs the program EXE and has
# MARK (a NUL-separated word) in its command line or environment, so that a
# reused pid or another instance's server is never signalled.
is_ours()
{
	local pid=$1 exe=$2 mark=$3 real

	real=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
	[ "$real" = "$exe" ] || return 1
	# No "grep -q": an early exit would fail the pipe under pipefail.
	cat "/proc/$pid/cmdline" "/proc/$pid/environ" 2>/dev/null |
		tr '\0' '\n' | grep -xF -- "$mark" >/dev/null
}

# children PID: the pids of the direct children of PID.
children()
{
	ps -o pid= --ppid "$1" 2>/dev/null | tr -s ' \n' ' ' || true
}

cmd_stop()
{
	local d=$1 pid rc=0
	local -a kids

	[ -d "$d" ] || die "no such directory: $d"
	d=$(cd "$d" && pwd)

	# Postfix first, so it delivers nothing into a stopping Dovecot.
	if pid=$(read_pid "$d/postfix-queue/pid/master.pid") &&
		is_ours "$pid" /usr/lib/postfix/sbin/master \
		"MAIL_CONFIG=$d/postfix"; then
		read -r -a kids <<<"$(children "$pid")"
		postfix -c "$d/postfix" stop >>"$d/postfix-start.log" 2>&1 ||
			kill -TERM "$pid" 2>/dev/null || true
		wait_exit postfix "$pid" "${kids[@]}" || rc=1
	fi
	if pid=$(read_pid "$d/dovecot-run/master.pid") &&
		is_ours "$pid" /usr/sbin/dovecot "$d/dovecot.conf"; then
		read -r -a kids <<<"$(children "$pid")"
		kill -TERM "$pid" 2>/dev/null || true
		wait_exit dovecot "$pid" "${kids[@]}" || rc=1
	fi
	return $rc
}

cmd_populate()
{
	local d=$1 set=$2

	[ "$set" = demo ] || die "unknown sample set: $set (known: demo)"
	[ -r "$d/env" ] || die "$d/env not found; run '$0 start $d' first"
	"$PY" "$HERE/populate.py" "$d/env" "$HERE/sample"
}

[ $# -ge 2 ] || usage
case $1 in
start)
	[ $# -eq 2 ] || usage
	cmd_start "$2"
	;;
stop)
	[ $# -eq 2 ] || usage
	cmd_stop "$2"
	;;
populate)
	[ $# -eq 3 ] || usage
	cmd_populate "$2" "$3"
	;;
*)
	usage
	;;
esac
