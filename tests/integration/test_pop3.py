"""The POP3 tree: one read-only INBOX whose message.eml files equal what
IMAP reads from the same Dovecot mailbox, and whose writes all fail with
EROFS without touching the server (checked with Python's poplib)."""
import email
import errno
import os
import time
import poplib
import re
import subprocess

from harness import check, eq, wait_for

M = None  # the shared POP3 mount of this module

DIRNAME = re.compile(r"^\d{4}-\d\d-\d\d \d{4} .+ \u2014 .* \u00b7([!-~]+)$")

EXTRA = [
    b"Subject: pop3 no final newline\r\nMessage-ID: <pop3-t1@x>\r\n\r\nno end",
    b"Subject: pop3 dots\r\nMessage-ID: <pop3-t2@x>\r\n\r\n.\r\n..x\r\n.\r\n",
    b"Subject: pop3 lf only\nMessage-ID: <pop3-t3@x>\n\nline1\nline2\n",
]


def pop3_config(env, name="config-pop3", url=None, **more):
    keys = {"imap": None,
            "pop3": url or "pop3s://localhost:%s" % env["MFS_POP3S_PORT"]}
    keys.update(more)
    return env.write_config(name, keys)


def imap_inbox(env):
    """[(uid, bytes)] of alice's INBOX, read with BODY.PEEK[]."""
    c = env.imap()
    c.select("INBOX", readonly=True)
    typ, data = c.uid("FETCH", "1:*", "(UID BODY.PEEK[])")
    c.logout()
    out = []
    for item in data:
        if isinstance(item, tuple):
            uid = int(re.search(rb"UID (\d+)", item[0]).group(1))
            out.append((uid, item[1]))
    return out


def pop3_state(env):
    """(count, [uidl]) of alice's maildrop, read with poplib."""
    p = poplib.POP3_SSL("localhost", int(env["MFS_POP3S_PORT"]),
                        context=env.ssl_context(), timeout=30)
    p.user(env["MFS_USER"])
    p.pass_(env["MFS_PASS"])
    count = p.stat()[0]
    uidls = [line.split()[1].decode() for line in p.uidl()[1]]
    p.quit()
    return count, uidls


def message_dirs(path):
    return [n for n in os.listdir(path) if DIRNAME.match(n)]


def setup_module(env):
    global M
    if not imap_inbox(env):
        subprocess.run([os.path.join(os.path.dirname(__file__), "..",
                                     "servers", "mailservers.sh"),
                        "populate", env.srvdir, "demo"],
                       check=True, timeout=120)
    c = env.imap()
    for m in EXTRA:
        c.append("INBOX", None, None, m)
    c.logout()
    M = env.mount(config=pop3_config(env))


def teardown_module(env):
    if M is not None:
        M.umount()


def test_pop3_tree_is_one_inbox(env):
    eq(os.listdir(M.path), ["INBOX"], "top level of a POP3 mount")


def test_pop3_message_eml_equals_imap(env):
    imap = imap_inbox(env)
    by_id = {}
    for uid, raw in imap:
        mid = email.message_from_bytes(raw)["Message-ID"]
        check(mid, "IMAP message %d has a Message-ID" % uid)
        by_id.setdefault(mid.strip(), set()).add(raw)
    path = os.path.join(M.path, "INBOX")
    dirs = message_dirs(path)
    eq(len(dirs), len(imap), "message count, POP3 mount vs IMAP")
    count, uidls = pop3_state(env)
    eq(sorted(DIRNAME.match(d).group(1) for d in dirs), sorted(uidls),
       "directory names carry the UIDLs")
    for d in dirs:
        f = os.path.join(path, d, "message.eml")
        with open(f, "rb") as fh:
            data = fh.read()
        eq(os.stat(f).st_size, len(data), "st_size of %s" % d)
        mid = email.message_from_bytes(data)["Message-ID"]
        check(mid and mid.strip() in by_id, "Message-ID of %s known" % d)
        check(data in by_id[mid.strip()],
              "message.eml of %s equals IMAP BODY[] (%r)" % (d, data[-40:]))


def expect_erofs(what, fn):
    try:
        fn()
    except OSError as e:
        eq(e.errno, errno.EROFS, "%s: errno %s" % (what, errno.errorcode.get(e.errno)))
    else:
        raise AssertionError("%s succeeded on a POP3 mount" % what)


def test_pop3_every_write_is_erofs(env):
    before = pop3_state(env)
    inbox = os.path.join(M.path, "INBOX")
    d = os.path.join(inbox, sorted(message_dirs(inbox))[0])
    eml = os.path.join(d, "message.eml")
    expect_erofs("mkdir", lambda: os.mkdir(os.path.join(M.path, "New")))
    expect_erofs("mkdir in INBOX", lambda: os.mkdir(os.path.join(inbox, "x")))
    expect_erofs("create", lambda: open(os.path.join(inbox, "x.eml"), "wb"))
    expect_erofs("open for writing", lambda: open(eml, "r+b"))
    expect_erofs("unlink", lambda: os.unlink(eml))
    expect_erofs("rmdir message", lambda: os.rmdir(d))
    expect_erofs("rmdir INBOX", lambda: os.rmdir(inbox))
    expect_erofs("rename", lambda: os.rename(d, os.path.join(inbox, "y")))
    expect_erofs("chmod", lambda: os.chmod(eml, 0o600))
    expect_erofs("truncate", lambda: os.truncate(eml, 0))
    expect_erofs("setxattr", lambda: os.setxattr(eml, "user.x", b"1"))
    expect_erofs("symlink", lambda: os.symlink("/etc", os.path.join(inbox, "l")))
    expect_erofs("link", lambda: os.link(eml, os.path.join(inbox, "h")))
    eq(pop3_state(env), before, "maildrop (count, UIDLs) after the writes")


def test_pop3_new_message_appears(env):
    inbox = os.path.join(M.path, "INBOX")
    n = len(message_dirs(inbox))
    c = env.imap()
    c.append("INBOX", None, None,
             b"From: Late <late@example.test>\r\nSubject: pop3 late arrival\r\n"
             b"Message-ID: <pop3-late@x>\r\n\r\nhello\r\n")
    c.logout()
    time.sleep(1)
    eq(len(message_dirs(inbox)), n, "POP3 listings are kept for 60 s")
    try:
        os.utime(inbox)  # asks for a new listing (and says EROFS)
    except OSError as e:
        eq(e.errno, errno.EROFS, "touch INBOX")
    wait_for(lambda: len(message_dirs(inbox)) == n + 1, 20,
             "the new message after touch")
    late = [d for d in message_dirs(inbox) if "pop3 late arrival" in d]
    eq(len(late), 1, "the new message by subject")
    with open(os.path.join(inbox, late[0], "message.eml"), "rb") as f:
        check(f.read().endswith(b"\r\n\r\nhello\r\n"), "its bytes")


def test_pop3_stls_mount(env):
    cfg = pop3_config(env, "config-pop3-stls",
                      "pop3://localhost:%s" % env["MFS_POP3_PORT"])
    with env.mount(config=cfg) as m:
        eq(len(message_dirs(os.path.join(m.path, "INBOX"))),
           len(message_dirs(os.path.join(M.path, "INBOX"))), "INBOX over STLS")


def test_pop3_check(env):
    r = env.mailfs(["--check", "-o", "config=" + pop3_config(env), "test"])
    out = r.stdout.decode()
    eq(r.returncode, 0, "exit status (%s)" % out)
    check("TLSv1." in out, out)


def test_outbox_works_on_a_pop3_mount(env):
    cfg = pop3_config(env, "config-pop3-smtp",
                      smtp="smtp://localhost:%s" % env["MFS_SMTP_PORT"],
                      **{"from": env["MFS_EMAIL"]})
    tag = "pop3-outbox-%d" % os.getpid()
    with env.mount(config=cfg) as m:
        with open(os.path.join(m.path, "outbox", "note"), "wb") as f:
            f.write(("To: %s\nSubject: %s\n\nsent from a POP3 mount\n"
                     % (env["MFS_EMAIL"], tag)).encode())

        def arrived():
            c = env.imap()
            c.select("INBOX", readonly=True)
            found = c.uid("SEARCH", "SUBJECT", tag)[1][0].split()
            c.logout()
            return len(found) == 1
        wait_for(arrived, 30, "the message sent through outbox/")
        wait_for(lambda: not os.path.exists(
            os.path.join(m.path, "outbox", "note")), 15,
            "the file leaving outbox/")


# --- APOP, EXPIRE 0, OAuth2 and the -d trace, through the config file -------

RFC1939_GREETING = b"+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>\r\n"


def fake_maildrop(capa, login_ok):
    """A handler for harness.FakeServer: one message, CAPA `capa`;
    login_ok(line) says whether a login line (APOP, USER, PASS, AUTH)
    succeeds."""
    msg = b"From: A <a@x>\r\nSubject: fake\r\n\r\nhello\r\n"

    def handler(line):
        line = line.rstrip(b"\r\n")
        word = line.split(b" ")[0].upper()
        if word == b"CAPA":
            return b"+OK\r\n" + capa + b".\r\n"
        if word in (b"APOP", b"USER", b"PASS", b"AUTH"):
            return b"+OK\r\n" if login_ok(line) else b"-ERR [AUTH] no\r\n"
        if line == b"UIDL":
            return b"+OK\r\n1 fake-1\r\n.\r\n"
        if line == b"LIST":
            return b"+OK\r\n1 %d\r\n.\r\n" % len(msg)
        if line == b"TOP 1 0":
            return b"+OK\r\n" + msg.split(b"\r\n\r\n")[0] + b"\r\n\r\n.\r\n"
        if line == b"QUIT":
            return b"+OK bye\r\n"
        return b"-ERR what\r\n"
    return handler


def fake_config(env, name, port, secret, **more):
    pw = os.path.join(env.dir, name + ".pass")
    with open(pw, "w") as f:
        f.write(secret + "\n")
    os.chmod(pw, 0o600)
    keys = {"user": "mrose", "password_file": pw, "tls": "none"}
    keys.update(more)
    return pop3_config(env, name, "pop3://127.0.0.1:%d" % port, **keys)


def check_run(env, cfg, debug=False):
    args = ["--check"] + (["-d"] if debug else []) + ["-o", "config=" + cfg,
                                                       "test"]
    r = env.mailfs(args)
    return r.returncode, r.stdout.decode(errors="replace")


def test_pop3_apop_login(env):
    from harness import FakeServer
    digest = b"APOP mrose c4c9334bac560ecc979e58001b3e22fb"
    srv = FakeServer(RFC1939_GREETING,
                     fake_maildrop(b"UIDL\r\nTOP\r\n", lambda l: l == digest))
    try:
        rc, out = check_run(env, fake_config(env, "config-apop", srv.port,
                                             "tanstaaf", apop="yes"))
        eq(rc, 0, "--check with APOP (%s)" % out)
        sent = b"".join(srv.lines)
        check(digest + b"\r\n" in sent, sent)
        check(b"tanstaaf" not in sent and b"PASS" not in sent, sent)
    finally:
        srv.close()
    srv = FakeServer(b"+OK ready\r\n",
                     fake_maildrop(b"USER\r\nUIDL\r\n", lambda l: True))
    try:
        rc, out = check_run(env, fake_config(env, "config-apop2", srv.port,
                                             "tanstaaf", apop="yes"))
        check(rc != 0, "--check without an APOP greeting succeeded")
        check("the server offers no APOP" in out, out)
        sent = b"".join(srv.lines)
        check(b"PASS" not in sent and b"tanstaaf" not in sent, sent)
    finally:
        srv.close()


def test_pop3_expire0_needs_allow_expire(env):
    from harness import FakeServer
    srv = FakeServer(b"+OK ready\r\n",
                     fake_maildrop(b"USER\r\nUIDL\r\nTOP\r\nEXPIRE 0\r\n",
                                   lambda l: True))
    try:
        rc, out = check_run(env, fake_config(env, "config-exp", srv.port,
                                             "pw"))
        check(rc != 0, "--check of an EXPIRE 0 server succeeded")
        check("set allow_expire = yes to read it anyway" in out, out)
        check(not any(l.startswith(b"PASS") for l in srv.lines), srv.lines)
        rc, out = check_run(env, fake_config(env, "config-exp2", srv.port,
                                             "pw", allow_expire="yes"))
        eq(rc, 0, "--check with allow_expire = yes (%s)" % out)
        eq(out.count("EXPIRE 0"), 1, "the warning, once: %s" % out)
    finally:
        srv.close()


def test_pop3_xoauth2_and_trace(env):
    """Dovecot takes the password as the token here; -d shows the
    dialogue without the secrets."""
    for mech in ("xoauth2", "oauthbearer"):
        cfg = pop3_config(env, "config-pop3-" + mech, auth=mech)
        rc, out = check_run(env, cfg, debug=True)
        eq(rc, 0, "--check with auth = %s (%s)" % (mech, out))
        check("C: AUTH %s <hidden>" % mech.upper() in out, out)
        check(env["MFS_PASS"] not in out, "the token is in the trace")
    rc, out = check_run(env, pop3_config(env), debug=True)
    eq(rc, 0, "--check -d (%s)" % out)
    check("C: PASS <hidden>" in out and "S: +OK" in out, out)
    check(env["MFS_PASS"] not in out, "the password is in the trace")
