"""Hostile mail, hostile servers, and what another local user could read:
names from mail never escape their directory, a server's bytes never crash
mailfs or blow up its memory, modes are private and the password stays
secret."""
import base64
import email.utils
import errno
import os
import re
import socket
import threading
import time

from harness import check, eq, wait_for

DIRNAME = re.compile(r"^\d{4}-\d\d-\d\d \d{4} .+ \u2014 .* \u00b7(\d+)$")
BAD_CHARS = re.compile("[\x00-\x1f\x7f\u0080-\u009f\u202a-\u202e\u2066-\u2069/]")
FIXED = ("message.eml", "headers", "from", "to", "cc", "subject", "date",
         "body.txt", "body.html", "flags", "parts")
HOSTILE = ["../../etc/passwd", "/abs/path", "=?utf-8?b?YQBi?=",
           "n" * 1000 + ".txt", "evil\u202egpj.exe", "body.txt", "flags",
           "..", ".", "message.eml", "headers", "parts", "a/../../b",
           "tab\there", "x" * 300]
RSS_LIMIT_KB = 200 * 1024


def rfc2231(name):
    from urllib.parse import quote
    return "filename*=utf-8''%s" % quote(name.encode("utf-8"), safe="")


def hostile_message():
    parts = []
    for k, name in enumerate(HOSTILE):
        if name.startswith("=?"):
            disp = 'attachment; filename="%s"' % name
        else:
            disp = "attachment; " + rfc2231(name)
        parts.append("--BOUND\r\nContent-Type: application/octet-stream\r\n"
                     "Content-Disposition: %s\r\n\r\nATTACH-%02d\r\n" % (disp, k))
    return ("From: Mallory <m@example.test>\r\nTo: alice@example.test\r\n"
            "Subject: hostile names\r\nDate: %s\r\n"
            "Message-ID: <hostile@security.test>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=BOUND\r\n\r\n"
            "--BOUND\r\nContent-Type: text/plain\r\n\r\nTHE-BODY-TEXT\r\n%s"
            "--BOUND--\r\n" % (email.utils.formatdate(1750000000),
                               "".join(parts))).encode()


M = None


def setup_module(env):
    global M
    c = env.imap()
    c.create("Hostile")
    c.append("Hostile", None, None, hostile_message())
    c.logout()
    M = env.mount()


def teardown_module(env):
    if M is not None:
        M.umount()


def check_name(name, where):
    b = name.encode("utf-8", "surrogateescape")
    check(1 <= len(b) <= 255, "%s: %d bytes" % (where, len(b)))
    b.decode("utf-8")
    check(name not in (".", ".."), "%s: %r" % (where, name))
    check(not BAD_CHARS.search(name), "%s: bad character in %r" % (where, name))


def walk_inside(top):
    """Every entry below top: sanitized names, realpath inside top.
    Returns {relative path: bytes} of the regular files."""
    real_top = os.path.realpath(top)
    files = {}
    for d, dirs, fnames in os.walk(top):
        for n in dirs + fnames:
            p = os.path.join(d, n)
            check_name(n, p)
            rp = os.path.realpath(p)
            check(rp.startswith(real_top + os.sep), "%r escapes to %r" % (p, rp))
            check(not os.path.islink(p), "symlink %r" % p)
        for n in fnames:
            p = os.path.join(d, n)
            with open(p, "rb") as f:
                files[os.path.relpath(p, top)] = f.read()
    return files


def test_hostile_attachment_names_stay_inside(env):
    box = os.path.join(M.path, "Hostile")
    names = [n for n in os.listdir(box) if DIRNAME.match(n)]
    eq(len(names), 1, "one message")
    mdir = os.path.join(box, names[0])
    files = walk_inside(mdir)
    top = set(os.listdir(mdir))
    # the fixed files are the real ones, not an attachment that took the name
    check(b"THE-BODY-TEXT" in files["body.txt"], "body.txt is the body")
    check(b"ATTACH" not in files["flags"], "flags is the flags file")
    check(files["message.eml"].startswith(b"From: Mallory"), "message.eml")
    check(b"ATTACH" not in files["headers"], "headers")
    # every attachment is somewhere at the top, under a unique name
    for k in range(len(HOSTILE)):
        mark = ("ATTACH-%02d" % k).encode()
        holders = [p for p, b in files.items() if os.sep not in p and
                   b.strip() == mark]
        check(len(holders) == 1, "attachment %r at the top: %r (top: %r)"
              % (HOSTILE[k][:40], holders, sorted(top)))
    check(not os.path.exists(os.path.join(M.path, "etc")), "no etc/ at the top")
    check(not os.path.exists(os.path.join(M.path, "abs")), "no abs/")


def test_hostile_folder_names(env):
    c = env.imap()
    made = []
    for name in ("a..b", "amp&-x", "bidi&IC4-x", "ctl\x01x", "dot.", "~tilde",
                 "back\\slash", "sp ace ", '"quote"'):
        q = '"%s"' % name.replace("\\", "\\\\").replace('"', '\\"')
        try:
            typ, _ = c.create(q)
        except c.error:
            typ = "NO"
        if typ == "OK":
            made.append(name)
    c.logout()
    check("amp&-x" in made, "Dovecot made %r" % made)
    wait_for(lambda: "amp&x" in os.listdir(M.path), 40, "the new folders")
    for n in os.listdir(M.path):
        p = os.path.join(M.path, n)
        check_name(n, p)
        check(os.path.isdir(p), "%r is a directory" % p)
        check(os.path.realpath(p).startswith(os.path.realpath(M.path) + os.sep),
              "%r inside" % p)
    listing = os.listdir(M.path)
    check("amp&x" in listing, "'&-' decodes to '&': %r" % listing)


# --- hostile servers ------------------------------------------------------

class HostileImap:
    """Just enough IMAP for a mount with one folder holding one message;
    `evil` says which reply turns hostile."""

    def __init__(self, evil):
        self.evil = evil
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.sent_evil = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._client, args=(c,), daemon=True).start()

    def _client(self, c):
        selected = b""
        try:
            c.sendall(b"* OK hostile ready\r\n")
            f = c.makefile("rb")
            for line in f:
                tag, _, rest = line.strip().partition(b" ")
                cmd = rest.upper()
                if cmd.startswith(b"CAPABILITY"):
                    c.sendall(b"* CAPABILITY IMAP4rev1 UIDPLUS\r\n" + tag + b" OK done\r\n")
                elif cmd.startswith(b"LOGIN"):
                    c.sendall(tag + b" OK logged in\r\n")
                elif cmd.startswith(b"LIST"):
                    c.sendall(b'* LIST () "/" INBOX\r\n* LIST () "/" Evil\r\n'
                              + tag + b" OK done\r\n")
                elif cmd.startswith(b"EXAMINE") or cmd.startswith(b"SELECT"):
                    selected = cmd.split(b" ")[1].strip(b'"')
                    c.sendall(b"* 1 EXISTS\r\n* OK [UIDVALIDITY 42] v\r\n"
                              + tag + b" OK [READ-ONLY] done\r\n")
                elif (b"FETCH" in cmd and b"ENVELOPE" in cmd and
                      self.evil == "huge-envelope" and selected == b"EVIL"):
                    self.envelope_reply(c)
                elif b"FETCH" in cmd and b"ENVELOPE" in cmd:
                    c.sendall(self.index_reply(tag))
                elif cmd.startswith(b"UID FETCH"):
                    self.body_reply(c, tag)
                elif cmd.startswith(b"LOGOUT"):
                    c.sendall(b"* BYE\r\n" + tag + b" OK done\r\n")
                    return
                else:
                    c.sendall(tag + b" OK done\r\n")
        except OSError:
            pass
        finally:
            c.close()

    def index_reply(self, tag):
        env = (b'ENVELOPE ("Mon, 16 Jun 2025 10:00:00 +0000" "evil" '
               b'(("Evil" NIL "e" "example.test")) NIL NIL NIL NIL NIL NIL NIL)')
        extra = b""
        if self.evil == "nested-bodystructure":
            b = b'("text" "plain" NIL NIL NIL "7bit" 1 1)'
            b = b"(" * 10000 + b + b' "mixed")' * 10000
            extra = b" BODYSTRUCTURE " + b
            self.sent_evil += 1
        size = len(self.message()) if self.evil == "nested-message" else 100
        return (b"* 1 FETCH (UID 1 FLAGS () RFC822.SIZE %d INTERNALDATE "
                b'"16-Jun-2025 10:00:00 +0000" ' % size + env + extra +
                b")\r\n" + tag + b" OK done\r\n")

    def envelope_reply(self, c):
        """An ENVELOPE literal of 4 GB, then short lines for 8 s: libetpan
        would keep them all in memory."""
        self.sent_evil += 1
        c.sendall(b"* 1 FETCH (UID 1 FLAGS () RFC822.SIZE 100 INTERNALDATE "
                  b'"16-Jun-2025 10:00:00 +0000" ENVELOPE '
                  b'("Mon, 16 Jun 2025 10:00:00 +0000" {4000000000}\r\n')
        lines = b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n" * 2048
        deadline = time.time() + 8
        sent = 0
        while sent < 400 * 1024 * 1024 and time.time() < deadline:
            c.sendall(lines)
            sent += len(lines)
        c.close()

    def message(self):
        m = b"Subject: inner\r\n\r\ninnermost\r\n"
        for _ in range(10000):
            m = b"Content-Type: message/rfc822\r\n\r\n" + m
        return (b"From: e@example.test\r\nSubject: nested\r\n"
                b"Date: Mon, 16 Jun 2025 10:00:00 +0000\r\n" + m)

    def body_reply(self, c, tag):
        chunk = b"a" * 65536
        if self.evil == "huge-literal":
            self.sent_evil += 1
            c.sendall(b"* 1 FETCH (UID 1 BODY[] {4294967295}\r\n")
        elif self.evil == "endless-line":
            self.sent_evil += 1
            c.sendall(b"* 1 FETCH (UID 1 BODY[] ")
        elif self.evil == "nested-message":
            self.sent_evil += 1
            m = self.message()
            c.sendall(b"* 1 FETCH (UID 1 BODY[] {%d}\r\n" % len(m) + m +
                      b")\r\n" + tag + b" OK done\r\n")
            return
        else:
            c.sendall(b"* 1 FETCH (UID 1 BODY[] {100}\r\n" + b"x" * 100 +
                      b")\r\n" + tag + b" OK done\r\n")
            return
        deadline = time.time() + 8
        sent = 0
        while sent < 300 * 1024 * 1024 and time.time() < deadline:
            c.sendall(chunk)
            sent += len(chunk)
        c.close()

    def close(self):
        self.sock.close()


def vm(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def hostile_mount(env, evil):
    srv = HostileImap(evil)
    cfg = env.write_config("config-" + evil, {
        "imap": "imap://127.0.0.1:%d" % srv.port, "tls": "none",
        "ca_file": None, "timeout": "5"})
    return srv, env.mount(config=cfg)


def run_hostile(env, evil, action):
    srv, m = hostile_mount(env, evil)
    try:
        t0 = time.time()
        outcome = "succeeded"
        try:
            action(m)
        except OSError as e:
            outcome = "failed with %s" % os.strerror(e.errno)
            check(e.errno in (5, 110, 12, 71, 2),
                  "%s: errno %d (%s)" % (evil, e.errno, e))
        took = time.time() - t0
        check(m.proc.poll() is None, "%s: mailfs died (%s): %s"
              % (evil, m.proc.returncode, m.output()[-2000:]))
        hwm = vm(m.proc.pid, "VmHWM")
        check(srv.sent_evil > 0, "%s: the hostile reply was asked for" % evil)
        check(hwm < RSS_LIMIT_KB, "%s: mailfs peak RSS %d MB (operation %s "
              "after %.1f s)" % (evil, hwm // 1024, outcome, took))
        check(took < 20, "%s: took %.1f s" % (evil, took))
        os.listdir(m.path)  # still answers
        print("  %s: %s in %.1f s, peak RSS %d MB" % (evil, outcome, took,
                                                       hwm // 1024))
    finally:
        m.umount()
        srv.close()


def evil_dir(m):
    box = os.path.join(m.path, "Evil")
    names = [n for n in os.listdir(box) if DIRNAME.match(n)]
    eq(len(names), 1, "one message in Evil")
    return os.path.join(box, names[0])


def cat_message(m):
    with open(os.path.join(evil_dir(m), "message.eml"), "rb") as f:
        f.read()


def test_server_claims_4gb_literal(env):
    run_hostile(env, "huge-literal", cat_message)


def test_server_sends_endless_line(env):
    run_hostile(env, "endless-line", cat_message)


def test_server_sends_4gb_envelope_literal(env):
    """A listing whose ENVELOPE announces a literal of 4 GB: refused at
    the announcement, in bounded memory and at once; the other folders
    still list."""
    srv, m = hostile_mount(env, "huge-envelope")
    try:
        t0 = time.time()
        try:
            os.listdir(os.path.join(m.path, "Evil"))
            check(False, "the listing of Evil succeeded: %s"
                  % m.output()[-3000:])
        except OSError as e:
            eq(e.errno, errno.EIO, "errno of the listing (%s)" % e)
        took = time.time() - t0
        check(srv.sent_evil > 0, "the hostile reply was asked for")
        check(m.proc.poll() is None, "mailfs died: %s" % m.output()[-2000:])
        hwm = vm(m.proc.pid, "VmHWM")
        check(hwm < 64 * 1024, "peak RSS %d MB" % (hwm // 1024))
        check(took < 5, "the listing failed after %.1f s" % took)
        inbox = os.listdir(os.path.join(m.path, "INBOX"))
        eq(len([n for n in inbox if DIRNAME.match(n)]), 1, "INBOX lists")
        print("  huge-envelope: EIO in %.1f s, peak RSS %d MB"
              % (took, hwm // 1024))
    finally:
        m.umount()
        srv.close()


def test_server_sends_10000_level_bodystructure(env):
    run_hostile(env, "nested-bodystructure", lambda m: evil_dir(m))


def test_message_with_10000_nested_messages(env):
    def act(m):
        d = evil_dir(m)
        walk_inside(d)
    run_hostile(env, "nested-message", act)


# --- what other local users could see -------------------------------------

def test_modes_owner_and_mount_options(env):
    uid = os.getuid()
    seen = 0
    for d, dirs, files in os.walk(os.path.join(M.path, "Hostile")):
        for n in dirs:
            st = os.stat(os.path.join(d, n))
            check(st.st_mode & 0o777 in (0o700, 0o500), "dir %s mode %o"
                  % (n, st.st_mode & 0o777))
            eq(st.st_uid, uid, "owner of %s" % n)
            seen += 1
        for n in files:
            st = os.stat(os.path.join(d, n))
            check(st.st_mode & 0o777 in (0o600, 0o400), "file %s mode %o"
                  % (n, st.st_mode & 0o777))
            eq(st.st_uid, uid, "owner of %s" % n)
            seen += 1
    st = os.stat(M.path)
    check(st.st_mode & 0o077 == 0, "mount root mode %o" % st.st_mode)
    check(seen > 10, "walked %d entries" % seen)
    with open("/proc/mounts") as f:
        line = [x for x in f if (" %s " % M.path) in x]
    eq(len(line), 1, "one /proc/mounts line")
    opts = line[0].split()[3].split(",")
    check("allow_other" not in opts, "no allow_other: %r" % opts)
    check("default_permissions" in opts, "default_permissions: %r" % opts)


def cache_dir_of(config):
    with open(config) as f:
        return re.search(r"^cache_dir = (.*)$", f.read(), re.M).group(1)


def test_cache_dir_is_private(env):
    walk_inside(os.path.join(M.path, "Hostile"))  # fills the cache
    cache = cache_dir_of(env.config)
    st = os.stat(cache)
    eq(st.st_mode & 0o777, 0o700, "cache_dir mode")
    n = 0
    for d, dirs, files in os.walk(cache):
        for x in dirs:
            eq(os.stat(os.path.join(d, x)).st_mode & 0o777, 0o700,
               "cache subdirectory %s" % x)
        for x in files:
            eq(os.stat(os.path.join(d, x)).st_mode & 0o777, 0o600,
               "cache file %s" % x)
            n += 1
    check(n >= 1, "the cache holds files")


def test_password_never_shown(env):
    pw = env["MFS_PASS"].encode()
    cfg = env.write_config("config-debug", {})
    m = env.mount(config=cfg, args=["-d"])
    try:
        for p in ("/proc/%d/cmdline" % m.proc.pid, "/proc/%d/environ" % m.proc.pid):
            with open(p, "rb") as f:
                check(pw not in f.read(), "password in %s" % p)
        ps = os.popen("ps auxww").read().encode()
        check(pw not in ps, "password in ps output")
        walk_inside(os.path.join(m.path, "Hostile"))
        os.listdir(os.path.join(m.path, "INBOX"))
    finally:
        m.log.flush()
        log = m.output().encode()
        m.umount()
    check(pw not in log, "password in the -d log")
    for d, dirs, files in os.walk(cache_dir_of(cfg)):
        for x in files:
            with open(os.path.join(d, x), "rb") as f:
                check(pw not in f.read(), "password in cache file %s" % x)


def secret_shown(out, secret):
    """Whether out holds secret, as such or inside any base64 run."""
    if secret in out:
        return True
    for run in re.findall(rb"[A-Za-z0-9+/]{8,}={0,2}", out):
        try:
            if secret in base64.b64decode(run + b"=" * (-len(run) % 4)):
                return True
        except ValueError:
            pass
    return False


def test_oauth_token_never_traced(env):
    """The -d trace of an XOAUTH2 and an OAUTHBEARER login to IMAP, POP3
    and SMTP shows neither the token (the test servers take the password
    as one) nor its base64."""
    token = env["MFS_PASS"].encode()
    smtp = "smtps://localhost:%s" % env["MFS_SMTPS_PORT"]
    stores = {"imap": {},
              "pop3": {"imap": None,
                       "pop3": "pop3s://localhost:%s" % env["MFS_POP3S_PORT"]}}
    for mech in ("xoauth2", "oauthbearer"):
        for store, keys in stores.items():
            keys = dict(keys, auth=mech, smtp=smtp)
            cfg = env.write_config("config-trace-%s-%s" % (store, mech), keys)
            r = env.mailfs(["--check", "-d", "-o", "config=" + cfg, "test"])
            what = "%s with auth = %s" % (store, mech)
            eq(r.returncode, 0, "--check of %s: %s" % (what, r.stdout[-3000:]))
            for proto in (store, "smtp"):
                check(b"%s" % proto.encode() in r.stdout and
                      b"AUTH" in r.stdout and mech.upper().encode()
                      in r.stdout, "%s: no %s login traced" % (what, proto))
            check(b"smtp: C: AUTH " + mech.upper().encode() in r.stdout,
                  "%s: no SMTP login traced: %s" % (what, r.stdout))
            check(not secret_shown(r.stdout, token),
                  "%s: the token is in the trace: %s" % (what, r.stdout))
