"""Writing on an IMAP mount (SPEC "Writing on an IMAP mount"): folders,
new messages, moves, deletes and flags made through the mount, each result
read back from the same Dovecot with Python's imaplib."""
import email.utils
import errno
import hashlib
import os
import re
import shutil
import subprocess

from harness import check, eq, wait_for

M = None  # the shared mount of this module

DIRNAME = re.compile(r"^\d{4}-\d\d-\d\d \d{4} .+ \u2014 .* \u00b7(\d+)$")


def make_message(i, subject=None, eol="\r\n"):
    date = email.utils.formatdate(1794821400 + i * 60, localtime=False)
    return eol.join([
        "From: Writer %d <w%d@example.test>" % (i, i),
        "To: alice@example.test",
        "Subject: %s" % (subject or "Written %d" % i),
        "Date: %s" % date,
        "Message-ID: <write-%d@example.test>" % i,
        "",
        "Body of written message %d." % i,
        ""]).encode()


def setup_module(env):
    global M
    M = env.mount()


def teardown_module(env):
    if M is not None:
        M.umount()


def imap(env):
    return env.imap()


def server_folders(env):
    c = imap(env)
    typ, data = c.list()
    c.logout()
    out = set()
    for line in data:
        name = re.match(rb'\(.*?\) (?:NIL|".") (.*)$', line).group(1).decode()
        out.add(name.strip('"'))
    return out


def server_uids(env, folder):
    c = imap(env)
    c.select('"%s"' % folder, readonly=True)
    typ, data = c.uid("SEARCH", "ALL")
    c.logout()
    return [int(x) for x in data[0].split()]


def server_flags(env, folder, uid):
    c = imap(env)
    c.select('"%s"' % folder, readonly=True)
    typ, data = c.uid("FETCH", str(uid), "(FLAGS)")
    c.logout()
    if data[0] is None:
        return None
    fl = re.search(rb"FLAGS \((.*?)\)", data[0]).group(1).decode().split()
    return sorted(f for f in fl if f != "\\Recent")


def server_body(env, folder, uid):
    c = imap(env)
    c.select('"%s"' % folder, readonly=True)
    typ, data = c.uid("FETCH", str(uid), "(BODY.PEEK[] INTERNALDATE)")
    c.logout()
    return data[0][1], re.search(rb'INTERNALDATE "(.*?)"', data[0][0]).group(1)


def server_append(env, folder, i, flags=None):
    c = imap(env)
    typ, data = c.append('"%s"' % folder, flags, None, make_message(i))
    c.logout()
    return int(re.search(rb"APPENDUID \d+ (\d+)", data[0]).group(1))


def msg_dir(folder_path, uid):
    """The message directory of uid, waiting for the mount to show it."""
    found = []

    def look():
        found[:] = [n for n in os.listdir(folder_path)
                    if DIRNAME.match(n) and int(DIRNAME.match(n).group(1)) == uid]
        return bool(found)
    wait_for(look, 15, "message %d in %s" % (uid, folder_path))
    return os.path.join(folder_path, found[0])


def uids_in(folder_path):
    return sorted(int(DIRNAME.match(n).group(1))
                  for n in os.listdir(folder_path) if DIRNAME.match(n))


def expect_errno(code, fn, what):
    try:
        fn()
    except OSError as e:
        eq(e.errno, code, what)
    else:
        raise AssertionError("%s succeeded" % what)


def test_mkdir_nested_and_non_ascii(env):
    os.mkdir(os.path.join(M.path, "Wr"))
    os.mkdir(os.path.join(M.path, "Wr", "Sub"))
    os.mkdir(os.path.join(M.path, "Wr", "Caf\u00e9 \u65e5\u672c"))
    folders = server_folders(env)
    check("Wr" in folders and "Wr/Sub" in folders, "nested folders: %r" % folders)
    check("Wr/Caf&AOk- &ZeVnLA-" in folders, "modified UTF-7 name: %r" % folders)
    check(os.path.isdir(os.path.join(M.path, "Wr", "Caf\u00e9 \u65e5\u672c")),
          "the new folder shows")
    expect_errno(errno.EEXIST, lambda: os.mkdir(os.path.join(M.path, "Wr")),
                 "mkdir of an existing folder")


def test_rmdir(env):
    os.mkdir(os.path.join(M.path, "RmFull"))
    server_append(env, "RmFull", 1)
    expect_errno(errno.ENOTEMPTY, lambda: os.rmdir(os.path.join(M.path, "RmFull")),
                 "rmdir of a folder holding a message")
    os.mkdir(os.path.join(M.path, "RmParent"))
    os.mkdir(os.path.join(M.path, "RmParent", "Child"))
    expect_errno(errno.ENOTEMPTY, lambda: os.rmdir(os.path.join(M.path, "RmParent")),
                 "rmdir of a folder holding a folder")
    check({"RmFull", "RmParent", "RmParent/Child"} <= server_folders(env),
          "nothing was deleted")
    os.mkdir(os.path.join(M.path, "RmEmpty"))
    os.rmdir(os.path.join(M.path, "RmEmpty"))
    check("RmEmpty" not in server_folders(env), "the empty folder is gone")
    check(not os.path.exists(os.path.join(M.path, "RmEmpty")), "and from the mount")
    expect_errno(errno.ENOENT, lambda: os.rmdir(os.path.join(M.path, "RmEmpty")),
                 "rmdir of a missing folder")


def test_inbox_cannot_be_removed_or_renamed(env):
    inbox = os.path.join(M.path, "INBOX")
    try:
        os.rmdir(inbox)
    except OSError as e:
        check(e.errno in (errno.EACCES, errno.EBUSY, errno.ENOTEMPTY),
              "rmdir INBOX: errno %d" % e.errno)
    else:
        raise AssertionError("rmdir INBOX succeeded")
    try:
        os.rename(inbox, os.path.join(M.path, "NotInbox"))
    except OSError as e:
        check(e.errno in (errno.EACCES, errno.EBUSY), "mv INBOX: errno %d" % e.errno)
    else:
        raise AssertionError("mv INBOX succeeded")
    check("INBOX" in server_folders(env) and "NotInbox" not in server_folders(env),
          "INBOX stays")


def test_rename_across_levels(env):
    os.mkdir(os.path.join(M.path, "RnOld"))
    uid = server_append(env, "RnOld", 2)
    os.mkdir(os.path.join(M.path, "RnNew"))
    os.rename(os.path.join(M.path, "RnOld"), os.path.join(M.path, "RnNew", "Deep"))
    folders = server_folders(env)
    check("RnOld" not in folders and "RnNew/Deep" in folders, "renamed: %r" % folders)
    eq(server_uids(env, "RnNew/Deep"), [uid], "the message moved with it")
    msg_dir(os.path.join(M.path, "RnNew", "Deep"), uid)
    check(not os.path.exists(os.path.join(M.path, "RnOld")), "old name gone")


def test_new_message_is_appended(env):
    os.mkdir(os.path.join(M.path, "Ap"))
    data = make_message(3)
    with open(os.path.join(M.path, "Ap", "new.eml"), "wb") as f:
        f.write(data)
    wait_for(lambda: len(server_uids(env, "Ap")) == 1, 15, "the APPEND")
    uid = server_uids(env, "Ap")[0]
    body, idate = server_body(env, "Ap", uid)
    eq(body, data, "appended bytes")
    eq(idate.decode(), "16-Nov-2026 09:33:00 +0000", "internal date from Date:")
    msg_dir(os.path.join(M.path, "Ap"), uid)
    check(not os.path.exists(os.path.join(M.path, "Ap", "new.eml")),
          "the file became a message directory")


def test_cp_large_message(env):
    os.mkdir(os.path.join(M.path, "ApBig"))
    src = os.path.join(env.dir, "big.eml")
    h = hashlib.sha256()
    with open(src, "wb") as f:
        head = make_message(4)
        f.write(head)
        h.update(head)
        line = b"y" * 998 + b"\r\n"
        for _ in range(25 * 1024):
            f.write(line)
            h.update(line)
    subprocess.run(["cp", src, os.path.join(M.path, "ApBig") + "/"], check=True,
                   timeout=300)
    wait_for(lambda: len(server_uids(env, "ApBig")) == 1, 60, "the APPEND")
    body, _ = server_body(env, "ApBig", server_uids(env, "ApBig")[0])
    eq(hashlib.sha256(body).hexdigest(), h.hexdigest(), "25 MB message")


def test_mv_message_to_other_folder(env):
    os.mkdir(os.path.join(M.path, "MvA"))
    os.mkdir(os.path.join(M.path, "MvB"))
    uid = server_append(env, "MvA", 5)
    keep = server_append(env, "MvA", 6)
    d = msg_dir(os.path.join(M.path, "MvA"), uid)
    subprocess.run(["mv", d, os.path.join(M.path, "MvB") + "/"], check=True,
                   timeout=60)
    eq(server_uids(env, "MvA"), [keep], "only the moved message left MvA")
    moved = server_uids(env, "MvB")
    eq(len(moved), 1, "one message arrived in MvB")
    body, _ = server_body(env, "MvB", moved[0])
    eq(body, make_message(5), "the moved message")
    msg_dir(os.path.join(M.path, "MvB"), moved[0])
    eq(uids_in(os.path.join(M.path, "MvA")), [keep], "the mount agrees")


def test_rm_message_expunges_that_uid_only(env):
    os.mkdir(os.path.join(M.path, "Rm"))
    mine = server_append(env, "Rm", 7)
    theirs = server_append(env, "Rm", 8, "(\\Deleted)")
    d = msg_dir(os.path.join(M.path, "Rm"), mine)
    shutil.rmtree(d)
    eq(server_uids(env, "Rm"), [theirs], "another client's \\Deleted message stays")
    eq(server_flags(env, "Rm", theirs), ["\\Deleted"], "and keeps its flag")
    check(not os.path.exists(d), "the directory is gone")


def test_flags_file(env):
    os.mkdir(os.path.join(M.path, "Fl"))
    uid = server_append(env, "Fl", 9)
    flags = os.path.join(msg_dir(os.path.join(M.path, "Fl"), uid), "flags")
    with open(flags, "w") as f:
        f.write("\\Seen\n\\Answered\n")
    eq(server_flags(env, "Fl", uid), ["\\Answered", "\\Seen"], "set exactly")
    with open(flags, "w") as f:
        f.write("+\\Flagged\n-\\Seen\n+$Work\n")
    eq(server_flags(env, "Fl", uid), ["$Work", "\\Answered", "\\Flagged"],
       "add and remove")

    def shown():
        with open(flags) as f:
            return sorted(f.read().split())
    wait_for(lambda: "\\Flagged" in shown() and "\\Seen" not in shown(), 15,
             "the flags file to show the new flags")


def server_message_ids(env, folder):
    c = imap(env)
    c.select('"%s"' % folder, readonly=True)
    typ, data = c.uid("FETCH", "1:*", "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
    c.logout()
    ids = []
    for item in data:
        if isinstance(item, tuple):
            m = re.search(rb"<([^>]+)>", item[1])
            if m:
                ids.append(m.group(1).decode())
    return sorted(ids)


def test_not_a_message_is_refused(env):
    os.mkdir(os.path.join(M.path, "Junk1"))
    before = server_uids(env, "Junk1")
    path = os.path.join(M.path, "Junk1", "notes.txt")

    def write():
        with open(path, "wb") as f:
            f.write(b"just some notes\nno header here\n")
    expect_errno(errno.EINVAL, write, "cp of a non-message")
    eq(server_uids(env, "Junk1"), before, "nothing appended")
    check(not os.path.exists(path), "no file left behind")


def test_no_extended_attributes(env):
    """The mount has no extended attributes: every name, the POSIX ACLs'
    and the SELinux label's too, is not supported (EOPNOTSUPP, not
    ENODATA: so ls -l asks at its first entry only, not at each); flags go
    through the flags file, and a refused setxattr changes nothing on the
    server."""
    os.mkdir(os.path.join(M.path, "XattrBox"))
    uid = server_append(env, "XattrBox", 900)
    d = msg_dir(os.path.join(M.path, "XattrBox"), uid)
    f = os.path.join(d, "message.eml")
    for call in (lambda: os.listxattr(d),
                 lambda: os.getxattr(d, "user.mail.flags"),
                 lambda: os.getxattr(d, "system.posix_acl_access"),
                 lambda: os.getxattr(d, "system.posix_acl_default"),
                 lambda: os.getxattr(f, "system.posix_acl_access"),
                 lambda: os.getxattr(f, "security.selinux"),
                 lambda: os.setxattr(d, "user.mail.flags", b"\\Flagged\n")):
        expect_errno(errno.EOPNOTSUPP, call, "xattr call")
    eq(server_flags(env, "XattrBox", uid), [], "flags untouched")
    with open(os.path.join(d, "flags"), "w") as f:
        f.write("+\\Flagged\n")
    eq(server_flags(env, "XattrBox", uid), ["\\Flagged"], "flags file still works")


def test_bulk_copy_move_remove(env):
    src_dir = os.path.join(env.dir, "bulk-src")
    os.mkdir(src_dir)
    for i in range(200):
        with open(os.path.join(src_dir, "m%03d.eml" % i), "wb") as f:
            f.write(make_message(5000 + i))
    want = sorted("write-%d@example.test" % (5000 + i) for i in range(200))
    for box in ("BulkA", "BulkB"):
        try:
            os.mkdir(os.path.join(M.path, box))
        except OSError as e:
            # what the server and the mount showed, for the report
            raise AssertionError("mkdir %s: %s; server: %s; mount: %s" % (
                box, e, sorted(server_folders(env)),
                sorted(os.listdir(M.path))))
    r = subprocess.run("cp %s/*.eml '%s/'" % (src_dir, os.path.join(M.path, "BulkA")),
                       shell=True, timeout=300)
    eq(r.returncode, 0, "cp of 200 messages")
    eq(server_message_ids(env, "BulkA"), want, "Message-IDs after cp")
    a = os.path.join(M.path, "BulkA")
    wait_for(lambda: len(uids_in(a)) == 200, 20, "200 messages listed")
    names = [n for n in os.listdir(a) if DIRNAME.match(n)]
    r = subprocess.run(["mv"] + [os.path.join(a, n) for n in names] +
                       [os.path.join(M.path, "BulkB") + "/"], timeout=300)
    eq(r.returncode, 0, "mv of 200 messages")
    eq(server_message_ids(env, "BulkA"), [], "BulkA empty after mv")
    eq(server_message_ids(env, "BulkB"), want, "Message-IDs after mv")
    b = os.path.join(M.path, "BulkB")
    wait_for(lambda: len(uids_in(b)) == 200, 20, "200 messages listed in BulkB")
    names = [n for n in os.listdir(b) if DIRNAME.match(n)]
    r = subprocess.run(["rm", "-r"] + [os.path.join(b, n) for n in names], timeout=300)
    eq(r.returncode, 0, "rm -r of 200 messages")
    eq(server_message_ids(env, "BulkB"), [], "BulkB empty after rm -r")
