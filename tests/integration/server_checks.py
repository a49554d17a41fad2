"""The checks that every IMAP server setup must pass (README, "Other
IMAP servers"), shared by the modules that run them against a Dovecot set up as
another kind of server (test_server_prefix.py, test_server_rev1.py). Each
check uses the mount as a user would (ls, cat, cp, mv, rm -r, mkdir,
rmdir, rename, the flags file, outbox/, .search/) and compares with what
the server holds, read with Python's imaplib.

Not a test module: the runner runs only test_*.py. The test modules call
these functions with a Setup describing their server."""
import email.utils
import errno
import os
import re
import subprocess
import uuid

from harness import check, eq, mutf7_decode, wait_for

DIRNAME = re.compile(r"^\d{4}-\d\d-\d\d \d{4} .+ \u2014 .* \u00b7(\d+)$")
LIST_LINE = re.compile(rb'^\((.*?)\) (?:NIL|"((?:[^"\\]|\\.)*)") (.*)$')

# Seconds to wait for the mount to show what the server holds; the mounts
# of these modules list a folder again after refresh = 1 s.
WAIT = 15


class Setup:
    """One server setup and its mount.

    env: the Env of the setup's own servers; mount: the Mount;
    prefix, sep: the personal namespace's prefix and hierarchy delimiter;
    others: {prefix of another namespace: the directory that shows it};
    sent: the server's name of the folder that gets the sent copies."""

    def __init__(self, env, mount, prefix, sep, others, sent):
        self.env, self.mount = env, mount
        self.prefix, self.sep = prefix, sep
        self.others, self.sent = others, sent

    def path(self, *parts):
        return os.path.join(self.mount.path, *parts)

    def server_name(self, folder):
        """The server's name of the personal folder that the mount shows
        at folder ("Receipts", "Projects/2026"); INBOX stays INBOX."""
        if folder == "INBOX":
            return "INBOX"
        return self.prefix + self.sep.join(folder.split("/"))

    def mount_path(self, name):
        """Where the mount should show the server's folder name (str, as
        LIST gives it): INBOX, the personal folders without their prefix,
        another namespace's folders under its directory."""
        if name.upper() == "INBOX":
            return "INBOX"
        for prefix, top in self.others.items():
            if name == prefix or name + self.sep == prefix:
                return top
            if name.startswith(prefix):
                return "/".join([top] + name[len(prefix):].split(self.sep))
        if self.prefix and name.startswith(self.prefix):
            name = name[len(self.prefix):]
        return "/".join(name.split(self.sep))

    def imap(self):
        return self.env.imap()


# --- what the server holds (imaplib) ---------------------------------------

def quote(name):
    return '"%s"' % name.replace("\\", "\\\\").replace('"', '\\"')


def server_folders(s):
    """The server's folder names (LIST "" "*"), modified UTF-7 decoded."""
    c = s.imap()
    typ, data = c.list()
    c.logout()
    eq(typ, "OK", "LIST")
    out = []
    for line in data:
        if line is None:
            continue
        m = LIST_LINE.match(line)
        check(m, "unexpected LIST line %r" % line)
        name = m.group(3).decode()
        if name.startswith('"'):
            name = name[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        out.append(mutf7_decode(name))
    return out


def server_uids(s, name):
    c = s.imap()
    typ, _ = c.select(quote(name), readonly=True)
    eq(typ, "OK", "EXAMINE %s" % name)
    typ, data = c.uid("SEARCH", "ALL")
    c.logout()
    return sorted(int(x) for x in data[0].split())


def server_uid_of(s, name, msgid):
    """The UIDs in folder name of the messages with that Message-ID."""
    c = s.imap()
    typ, _ = c.select(quote(name), readonly=True)
    eq(typ, "OK", "EXAMINE %s" % name)
    typ, data = c.uid("SEARCH", "HEADER", "Message-ID", "<%s>" % msgid)
    c.logout()
    return sorted(int(x) for x in data[0].split())


def server_flags(s, name, uid):
    c = s.imap()
    c.select(quote(name), readonly=True)
    typ, data = c.uid("FETCH", str(uid), "(FLAGS)")
    c.logout()
    check(data and data[0] is not None, "no message %d in %s" % (uid, name))
    fl = re.search(rb"FLAGS \((.*?)\)", data[0]).group(1).decode().split()
    return sorted(f for f in fl if f != "\\Recent")


def server_body(s, name, uid):
    c = s.imap()
    c.select(quote(name), readonly=True)
    typ, data = c.uid("FETCH", str(uid), "(BODY.PEEK[])")
    c.logout()
    check(data and isinstance(data[0], tuple),
          "no message %d in %s" % (uid, name))
    return data[0][1]


def server_append(s, name, data, flags=None):
    """APPENDs data to folder name; returns its UID (found by its
    Message-ID: not every setup offers UIDPLUS's APPENDUID)."""
    c = s.imap()
    typ, _ = c.append(quote(name), flags, None, data)
    c.logout()
    eq(typ, "OK", "APPEND to %s" % name)
    msgid = re.search(rb"Message-ID: <([^>]+)>", data).group(1).decode()
    uids = server_uid_of(s, name, msgid)
    eq(len(uids), 1, "the message appended to %s" % name)
    return uids[0]


def tag():
    return uuid.uuid4().hex[:10]


def make_message(t, i, sender=None, subject=None):
    """A message whose Message-ID is <srv-T-I@example.test>."""
    date = email.utils.formatdate(1795000000 + i * 60, localtime=False)
    return "\r\n".join([
        "From: %s" % (sender or "Writer %d <w%d@example.test>" % (i, i)),
        "To: alice@example.test",
        "Subject: %s" % (subject or "Server check %s %d" % (t, i)),
        "Date: %s" % date,
        "Message-ID: <srv-%s-%d@example.test>" % (t, i),
        "",
        "Body of message %d of check %s." % (i, t),
        ""]).encode()


def msgid_of(t, i):
    return "srv-%s-%d@example.test" % (t, i)


# --- what the mount shows ----------------------------------------------------

def msg_dir(folder_path, uid):
    """The message directory of uid, waiting for the mount to show it."""
    found = []

    def look():
        found[:] = [n for n in os.listdir(folder_path)
                    if DIRNAME.match(n) and int(DIRNAME.match(n).group(1)) == uid]
        return bool(found)
    wait_for(look, WAIT, "message %d in %s" % (uid, folder_path))
    return os.path.join(folder_path, found[0])


def uids_in(folder_path):
    return sorted(int(DIRNAME.match(n).group(1))
                  for n in os.listdir(folder_path) if DIRNAME.match(n))


def mount_folders(s):
    """Every folder directory of the mount, as paths relative to it: the
    directories that are not message directories, outbox/ excepted."""
    out = []

    def walk(rel):
        for n in os.listdir(s.path(rel)):
            p = os.path.join(rel, n) if rel else n
            if DIRNAME.match(n) or not os.path.isdir(s.path(p)):
                continue
            if not rel and n == "outbox":
                continue
            out.append(p)
            walk(p)
    walk("")
    return sorted(out)


def cp(src, dst):
    r = subprocess.run(["cp", src, dst], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=60)
    eq(r.returncode, 0, "cp %s %s: %s" % (src, dst, r.stdout))


def write_file(s, name, data):
    """A file outside the mount holding data, to copy in."""
    path = os.path.join(s.env.dir, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


# --- the checks ----------------------------------------------------------------

def root_shows_folders(s):
    """The mount's folder tree is the server's: INBOX and the personal
    folders at the root (not inside INBOX/ where the prefix is INBOX.),
    another namespace under its own directory."""
    names = server_folders(s)
    expected = sorted(s.mount_path(n) for n in names)
    root = os.listdir(s.mount.path)
    for top in ["INBOX", "Archive", "Drafts", "Sent", "Trash"]:
        check(top in root, "%s at the root of the mount: %r (server: %r)"
              % (top, root, names))
    eq(len(root), len(set(root)), "no name twice at the root: %r" % root)
    inbox = [n for n in os.listdir(s.path("INBOX")) if not DIRNAME.match(n)]
    for top in ["Archive", "Drafts", "Sent", "Trash"]:
        check(top not in inbox, "%s inside INBOX/: %r" % (top, inbox))
    eq(mount_folders(s), expected,
       "the mount's folders against the server's %r" % names)


def mkdir_and_cp(s):
    """mkdir at the root creates the folder in the personal namespace; a
    message file copied into it, and into INBOX, is appended byte for
    byte and then shows as a message directory."""
    t = tag()
    folder = "Receipts"
    name = s.server_name(folder)
    os.mkdir(s.path(folder))
    folders = server_folders(s)
    check(name in folders, "mkdir %s made %s on the server: %r"
          % (folder, name, folders))
    check(os.path.isdir(s.path(folder)), "the new folder shows")
    eq(server_uids(s, name), [], "the new folder is empty")

    data = make_message(t, 1)
    cp(write_file(s, "receipt-%s.eml" % t, data), s.path(folder) + "/")
    wait_for(lambda: server_uid_of(s, name, msgid_of(t, 1)), WAIT,
             "the APPEND to %s" % name)
    uids = server_uids(s, name)
    eq(len(uids), 1, "one message in %s" % name)
    eq(server_body(s, name, uids[0]), data, "the appended bytes")
    d = msg_dir(s.path(folder), uids[0])
    with open(os.path.join(d, "message.eml"), "rb") as f:
        eq(f.read(), data, "message.eml of the appended message")

    data = make_message(t, 2)
    cp(write_file(s, "inbox-%s.eml" % t, data), s.path("INBOX") + "/")
    wait_for(lambda: server_uid_of(s, "INBOX", msgid_of(t, 2)), WAIT,
             "the APPEND to INBOX")
    uids = server_uid_of(s, "INBOX", msgid_of(t, 2))
    eq(len(uids), 1, "appended to INBOX once")
    eq(server_body(s, "INBOX", uids[0]), data, "the bytes appended to INBOX")
    msg_dir(s.path("INBOX"), uids[0])


def flags_change(s):
    """Writing the flags file changes the flags on the server."""
    t = tag()
    folder = "Flagbox"
    name = s.server_name(folder)
    os.mkdir(s.path(folder))
    uid = server_append(s, name, make_message(t, 1))
    flags = os.path.join(msg_dir(s.path(folder), uid), "flags")
    with open(flags, "w") as f:
        f.write("+\\Flagged\n")
    eq(server_flags(s, name, uid), ["\\Flagged"], "+\\Flagged added")
    with open(flags, "w") as f:
        f.write("\\Seen\n\\Answered\n")
    eq(server_flags(s, name, uid), ["\\Answered", "\\Seen"], "set exactly")

    def shown():
        with open(flags) as f:
            return sorted(f.read().split())
    wait_for(lambda: shown() == ["\\Answered", "\\Seen"], WAIT,
             "the flags file to show the new flags")


def mv_message(s):
    """mv of a message to another folder: it arrives there and leaves the
    source, where a message another client marked \\Deleted stays."""
    t = tag()
    src, dst = "MoveFrom", "MoveTo"
    sname, dname = s.server_name(src), s.server_name(dst)
    os.mkdir(s.path(src))
    os.mkdir(s.path(dst))
    data = make_message(t, 1)
    uid = server_append(s, sname, data)
    keep = server_append(s, sname, make_message(t, 2))
    theirs = server_append(s, sname, make_message(t, 3), "(\\Deleted)")
    d = msg_dir(s.path(src), uid)
    r = subprocess.run(["mv", d, s.path(dst) + "/"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=60)
    eq(r.returncode, 0, "mv of a message: %s" % r.stdout)
    eq(server_uids(s, sname), sorted([keep, theirs]),
       "only the moved message left %s" % sname)
    eq(server_flags(s, sname, theirs), ["\\Deleted"],
       "the other client's \\Deleted message keeps its flag")
    moved = server_uids(s, dname)
    eq(len(moved), 1, "one message arrived in %s" % dname)
    eq(server_body(s, dname, moved[0]), data, "the moved message")
    check("\\Deleted" not in server_flags(s, dname, moved[0]),
          "the moved message is not \\Deleted in %s" % dname)
    check(not os.path.exists(d), "the message left %s in the mount" % src)
    msg_dir(s.path(dst), moved[0])
    check(uid not in uids_in(s.path(src)) and keep in uids_in(s.path(src)),
          "the mount's %s: %r" % (src, uids_in(s.path(src))))


def rm_message(s):
    """rm -r of a message removes it on the server, and only it: a message
    of the same folder another client marked \\Deleted stays, \\Deleted."""
    t = tag()
    folder = "Removals"
    name = s.server_name(folder)
    os.mkdir(s.path(folder))
    mine = server_append(s, name, make_message(t, 1))
    theirs = server_append(s, name, make_message(t, 2), "(\\Deleted)")
    keep = server_append(s, name, make_message(t, 3))
    d = msg_dir(s.path(folder), mine)
    r = subprocess.run(["rm", "-r", d], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=60)
    eq(r.returncode, 0, "rm -r of a message: %s" % r.stdout)
    eq(server_uids(s, name), sorted([theirs, keep]),
       "only the removed message left %s" % name)
    eq(server_flags(s, name, theirs), ["\\Deleted"],
       "the other client's message keeps \\Deleted")
    eq(server_flags(s, name, keep), [], "the untouched message keeps no flag")
    check(not os.path.exists(d), "the directory is gone")
    check(mine not in uids_in(s.path(folder)), "the mount agrees")


def rename_and_rmdir(s):
    """Renaming a folder (with a subfolder and a message) renames it on
    the server; rmdir of an empty folder deletes it there."""
    t = tag()
    old, new = "RenameOld", "RenameNew"
    os.mkdir(s.path(old))
    os.mkdir(s.path(old, "Sub"))
    check(s.server_name(old + "/Sub") in server_folders(s),
          "mkdir of a subfolder made %s" % s.server_name(old + "/Sub"))
    uid = server_append(s, s.server_name(old), make_message(t, 1))
    msg_dir(s.path(old), uid)
    os.rename(s.path(old), s.path(new))
    folders = server_folders(s)
    check(s.server_name(old) not in folders, "%s is gone from the server: %r"
          % (s.server_name(old), folders))
    check(s.server_name(new) in folders and
          s.server_name(new + "/Sub") in folders,
          "%s and its subfolder on the server: %r" % (s.server_name(new), folders))
    eq(server_uids(s, s.server_name(new)), [uid], "the message moved with it")
    check(not os.path.exists(s.path(old)), "the old name left the mount")
    check(os.path.isdir(s.path(new, "Sub")), "the subfolder shows")
    msg_dir(s.path(new), uid)

    os.mkdir(s.path("Empty"))
    check(s.server_name("Empty") in server_folders(s), "mkdir Empty")
    os.rmdir(s.path("Empty"))
    check(s.server_name("Empty") not in server_folders(s),
          "rmdir Empty deleted %s" % s.server_name("Empty"))
    check(not os.path.exists(s.path("Empty")), "and it left the mount")
    try:
        os.rmdir(s.path(new))
    except OSError as e:
        eq(e.errno, errno.ENOTEMPTY, "rmdir of a folder holding a message")
    else:
        raise AssertionError("rmdir of a folder holding a message succeeded")
    check(s.server_name(new) in server_folders(s), "and it stays")


def find_subject(s, name, subject):
    """UIDs in folder name whose Subject holds subject."""
    c = s.imap()
    c.select(quote(name), readonly=True)
    typ, data = c.uid("SEARCH", "SUBJECT", subject)
    c.logout()
    return sorted(int(x) for x in data[0].split())


def outbox_sent_copy(s):
    """A message written into outbox/ is delivered, and its copy lands in
    the setup's Sent folder, once."""
    t = tag()
    subject = "Outbox check %s" % t
    data = ("From: Alice <%s>\r\nTo: %s\r\nSubject: %s\r\n\r\nHello.\r\n"
            % (s.env["MFS_EMAIL"], s.env["MFS_EMAIL"], subject)).encode()
    with open(s.path("outbox", "check-%s.eml" % t), "wb") as f:
        f.write(data)
    wait_for(lambda: find_subject(s, "INBOX", t), 20, "the delivery to INBOX")
    wait_for(lambda: find_subject(s, s.sent, t), 20,
             "the copy in %s" % s.sent)
    uids = find_subject(s, s.sent, t)
    eq(len(uids), 1, "one copy in %s" % s.sent)
    body = server_body(s, s.sent, uids[0])
    check(b"Subject: " + subject.encode() in body and b"Hello." in body,
          "the copy is the message: %r" % body[:500])


def search_lists_match(s):
    """FOLDER/.search/from:X/ links the matching message of that folder,
    in INBOX and in another personal folder, and MOUNT/.search/from:X/
    shows the tree of the folders that match."""
    t = tag()
    sender = "Searched %s <searched-%s@example.test>" % (t, t)
    hits = {}
    for i, folder in enumerate(["INBOX", "Archive"]):
        name = s.server_name(folder)
        hits[folder] = server_append(s, name, make_message(t, i, sender))
        server_append(s, name, make_message(t, 10 + i))
    query = "from:searched-%s" % t
    for folder, uid in hits.items():
        d = s.path(folder, ".search", query)
        found = []

        def look():
            found[:] = os.listdir(d)
            return bool(found)
        wait_for(look, WAIT, "a match in %s" % d)
        eq(len(found), 1, "one match in %s: %r" % (folder, found))
        m = DIRNAME.match(found[0])
        check(m and int(m.group(1)) == uid,
              "the match in %s is message %d: %r" % (folder, uid, found))
        link = os.path.join(d, found[0])
        check(os.path.islink(link), "a symbolic link")
        with open(os.path.join(link, "message.eml"), "rb") as f:
            eq(f.read(), server_body(s, s.server_name(folder), uid),
               "message.eml through the link in %s" % folder)
    eq(os.listdir(s.path("INBOX", ".search", "from:nobody-" + t)), [],
       "a query nothing matches")
    top = s.path(".search", query)
    wait_for(lambda: sorted(os.listdir(top)) == ["Archive", "INBOX"], WAIT,
             "the folders of the matches in %s (it has %r)"
             % (top, os.listdir(top) if os.path.isdir(top) else None))


def new_mail_without_idle(s, refresh):
    """A message appended by another client shows in INBOX once refresh
    seconds have passed (the server offers no IDLE)."""
    t = tag()
    os.listdir(s.path("INBOX"))
    uid = server_append(s, "INBOX", make_message(t, 1))
    found = []

    def look():
        found[:] = [u for u in uids_in(s.path("INBOX")) if u == uid]
        return bool(found)
    wait_for(look, refresh + 10, "message %d in INBOX" % uid)
