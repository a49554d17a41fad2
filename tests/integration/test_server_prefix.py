"""mailfs against a server whose personal namespace has the prefix INBOX.
and the delimiter "." (Cyrus, Courier, many hosting setups), with a
public namespace Public. beside it (README, "Other IMAP servers"). The module
starts a Dovecot of its own set up that way (the runner's is the default
one) and runs the checks of server_checks.py against it: the server's
INBOX.Archive is Archive/ at the root, mkdir Receipts creates
INBOX.Receipts, the public folders show under Public/."""
import os
import re
import subprocess

import harness
import server_checks as sc
from harness import check, eq

ENV = None  # the servers of this module
S = None  # its server_checks.Setup
PUBLIC = "Public.Shared"  # a folder of the public namespace


def dovecot_conf(srvdir):
    """The settings appended to the default Dovecot configuration: the
    same namespace "inbox" with another prefix and delimiter (Dovecot
    merges a section of the same name), and a public namespace."""
    return """namespace inbox {
  prefix = INBOX.
  separator = .
}
namespace public {
  type = public
  prefix = Public.
  separator = .
  location = maildir:%s/mail/public
  list = yes
  subscriptions = no
}
""" % srvdir


def public_message(i):
    return ("From: Shared %d <shared%d@example.test>\r\n"
            "To: team@example.test\r\n"
            "Subject: Shared note %d\r\n"
            "Date: Mon, 16 Nov 2026 1%d:00:00 +0000\r\n"
            "Message-ID: <public-%d@example.test>\r\n"
            "\r\n"
            "Shared body %d.\r\n" % (i, i, i, i, i, i)).encode()


def prepare_server(env):
    """Checks that the server is set up as this module means (NAMESPACE
    answers the INBOX. prefix and the public namespace, LIST shows the
    default folders under INBOX) and puts two messages into a public
    folder."""
    c = env.imap()
    try:
        typ, data = c.namespace()
        eq(typ, "OK", "NAMESPACE")
        check(data[0].startswith(b'(("INBOX." ".")) '),
              "personal namespace: %r" % data)
        check(data[0].endswith(b' (("Public." "."))'),
              "public namespace: %r" % data)
        typ, _ = c.create(PUBLIC)
        eq(typ, "OK", "CREATE %s" % PUBLIC)
        for i in (1, 2):
            typ, _ = c.append(PUBLIC, None, None, public_message(i))
            eq(typ, "OK", "APPEND to %s" % PUBLIC)
    finally:
        c.logout()
    s = sc.Setup(env, None, "INBOX.", ".", {}, None)
    names = set(sc.server_folders(s))
    want = {"INBOX", "INBOX.Archive", "INBOX.Drafts", "INBOX.Sent",
            "INBOX.Trash", PUBLIC}
    check(want <= names, "LIST: %r" % names)
    check("Archive" not in names, "LIST: %r" % names)


def setup_module(env):
    global ENV, S
    ENV = harness.Env.start(dovecot_conf)
    try:
        prepare_server(ENV)
        cfg = ENV.write_config("config-prefix", {
            "smtp": "smtps://localhost:%s" % ENV["MFS_SMTPS_PORT"],
            "from": "Alice <%s>" % ENV["MFS_EMAIL"],
            "retry_min": "1", "retry_max": "2",
            "refresh": "1"})
        S = sc.Setup(ENV, ENV.mount(config=cfg), "INBOX.", ".",
                     {"Public.": "Public"}, "INBOX.Sent")
    except Exception:
        ENV.stop()
        ENV = None
        raise


def teardown_module(env):
    try:
        if S is not None:
            S.mount.umount()
    finally:
        if ENV is not None:
            ENV.stop()


def test_root_shows_personal_folders(env):
    sc.root_shows_folders(S)
    eq(sorted(os.listdir(S.path("Public"))), ["Shared"],
       "the public namespace's folder under Public/")


def test_public_folder_is_readable(env):
    uids = sc.server_uids(S, PUBLIC)
    eq(len(uids), 2, "the public folder's messages")
    folder = S.path("Public", "Shared")
    eq(sc.uids_in(folder), uids, "the messages of Public/Shared")
    for uid in uids:
        d = sc.msg_dir(folder, uid)
        r = subprocess.run(["cat", os.path.join(d, "message.eml")],
                           stdout=subprocess.PIPE, timeout=30)
        eq(r.returncode, 0, "cat of a public message")
        eq(r.stdout, sc.server_body(S, PUBLIC, uid), "message.eml of %d" % uid)
        with open(os.path.join(d, "subject")) as f:
            check(re.match(r"Shared note \d", f.read()), "its subject file")


def test_mkdir_at_root_and_cp(env):
    sc.mkdir_and_cp(S)
    check("Receipts" not in sc.server_folders(S),
          "nothing made outside the namespace")


def test_flags(env):
    sc.flags_change(S)


def test_mv_message(env):
    sc.mv_message(S)


def test_rm_message(env):
    sc.rm_message(S)


def test_rename_and_rmdir(env):
    sc.rename_and_rmdir(S)


def test_outbox_copy_in_sent(env):
    sc.outbox_sent_copy(S)


def test_search(env):
    sc.search_lists_match(S)


def test_offline_mkdir_at_root_lands_in_the_namespace(env):
    """A folder made at the root while the server is out of reach is kept
    in the journal and made as INBOX.<name> when it is back: the personal
    prefix comes from the folder list an earlier mount kept."""
    import sys
    import time
    sys.path.insert(0, os.path.join(os.path.dirname(
        os.path.abspath(__file__)), ".."))
    from faultproxy import FaultProxy
    p = FaultProxy(int(ENV["MFS_IMAP_PORT"]))
    cfg = ENV.write_config("config-prefix-offline", {
        "imap": "imap://127.0.0.1:%d" % p.port, "tls": "none",
        "timeout": "5", "ca_file": None,
        "cache_dir": os.path.join(ENV.dir, "cache-prefix-offline")})
    try:
        m = ENV.mount(config=cfg)
        os.listdir(m.path)  # the folder list, kept for the offline mount
        m.umount()
        p.refuse()
        m = ENV.mount(config=cfg)
        os.mkdir(os.path.join(m.path, "Offl"))
        check("Offl" in os.listdir(m.path), "shown at once")
        p.passthrough()
        deadline = time.time() + 90
        while "INBOX.Offl" not in sc.server_folders(S):
            check(time.time() < deadline, "not replayed")
            time.sleep(0.3)
        m.umount()
    finally:
        p.close()
    check("Offl" not in sc.server_folders(S), "nothing outside the namespace")
    c = ENV.imap()  # the other tests compare the whole folder list
    eq(c.delete("INBOX.Offl")[0], "OK", "DELETE INBOX.Offl")
    c.logout()
