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
        check(not os.path.exists(os.path.join(m.path, "outbox", "note")),
              "the file left outbox/")
