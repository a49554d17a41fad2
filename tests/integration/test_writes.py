"""Files written into the mount with the tools people use (SPEC "Files
written into the mount"): each tool writes a fresh message into a folder and
into outbox/; it must exit 0 and leave exactly one complete message, read
back with Python's imaplib (the folder; the recipient's INBOX for
outbox/)."""
import email
import email.policy
import errno
import os
import shutil
import subprocess
import sys
import tarfile
import time
import uuid

from harness import check, eq, wait_for

M = None
FOLDER = "Writes"
SETTLE = 1.5  # seconds a second copy would need to show up


def setup_module(env):
    global M
    c = env.imap()
    c.create(FOLDER)
    c.logout()
    cfg = env.write_config("config-writes", {
        "smtp": "smtps://localhost:%s" % env["MFS_SMTPS_PORT"],
        "from": "Alice <%s>" % env["MFS_EMAIL"],
        "retry_min": "1", "retry_max": "2",
        "cache_dir": os.path.join(env.dir, "cache-writes")})
    M = env.mount(config=cfg)


def teardown_module(env):
    if M is not None:
        M.umount()


def message(env, subject, to):
    """A message of several lines, so that a cut one is seen."""
    body = "".join("line %d of %s\n" % (i, subject) for i in range(1, 41))
    return ("From: Alice <%s>\nTo: %s\nSubject: %s\n"
            "Date: Mon, 16 Nov 2026 10:00:00 +0000\n\n%s"
            % (env["MFS_EMAIL"], to, subject, body)).encode()


def body_of(raw):
    m = email.message_from_bytes(raw, policy=email.policy.default)
    return m.get_body(("plain",)).get_content().replace("\r\n", "\n")


def matches(env, subject, user=None, password=None, folder="INBOX"):
    c = env.imap(user, password)
    c.select(folder, readonly=True)
    uids = c.uid("SEARCH", "SUBJECT", subject)[1][0].split()
    raws = [c.uid("FETCH", u, "(BODY.PEEK[])")[1][0][1] for u in uids]
    c.logout()
    return raws


def exactly_one(env, subject, want, user=None, password=None,
                folder="INBOX"):
    """Waits for the message, then checks that it stays alone and whole."""
    wait_for(lambda: matches(env, subject, user, password, folder), 30,
             "a message %s in %s" % (subject, folder))
    time.sleep(SETTLE)
    got = matches(env, subject, user, password, folder)
    eq(len(got), 1, "messages with subject %s" % subject)
    eq(body_of(got[0]), body_of(want), "the body as written")


def where(kind):
    return os.path.join(M.path, FOLDER if kind == "folder" else "outbox")


def check_one(env, kind, subject, data):
    if kind == "folder":
        exactly_one(env, subject, data, folder=FOLDER)
    else:
        exactly_one(env, subject, data, env["MFS_USER2"], env["MFS_PASS2"])


def run(cmd, **kw):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=60, **kw)
    eq(r.returncode, 0, "%s exit status (%s)" %
       (cmd if isinstance(cmd, str) else " ".join(cmd),
        r.stdout.decode(errors="replace").strip()))


def source(env, subject, kind, mode=0o644):
    """A message file outside the mount."""
    d = os.path.join(env.dir, "src-" + uuid.uuid4().hex[:8])
    os.mkdir(d)
    data = message(env, subject, env["MFS_EMAIL2"] if kind == "outbox"
                   else env["MFS_EMAIL"])
    path = os.path.join(d, subject + ".eml")
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)
    os.utime(path, (1700000000, 1700000000))
    return path, data


# --- the tools -------------------------------------------------------------
# Each writes src (a file outside the mount) into directory dest.

def tool_cp(src, dest):
    run(["cp", src, dest])


def tool_cp_p(src, dest):
    run(["cp", "-p", src, dest])


def tool_cp_a(src, dest):
    run(["cp", "-a", src, dest])


def tool_cp_readonly(src, dest):
    os.chmod(src, 0o400)
    run(["cp", src, dest])


def tool_mv(src, dest):
    # /dev/shm or the test directory: either way another file system
    run(["mv", src, dest])
    check(not os.path.exists(src), "mv removed the source")


def tool_install(src, dest):
    run(["install", "-m", "644", src, dest])


def tool_tar(src, dest):
    archive = src + ".tar"
    with tarfile.open(archive, "w") as t:
        t.add(src, arcname=os.path.basename(src))
    run(["tar", "-xf", archive, "-C", dest])


def tool_rsync(src, dest):
    if shutil.which("rsync") is None:
        raise AssertionError("rsync is not installed (make deps)")
    run(["rsync", "-a", src, dest + "/"])


def tool_shutil_copy(src, dest):
    run([sys.executable, "-c", "import shutil, sys; "
         "shutil.copy(sys.argv[1], sys.argv[2])", src, dest])


def tool_shutil_copy2(src, dest):
    run([sys.executable, "-c", "import shutil, sys; "
         "shutil.copy2(sys.argv[1], sys.argv[2])", src, dest])


def tool_shell_fork(src, dest):
    # the shell opens the file, closes the empty descriptor after dup2,
    # and /bin/true inherits it and closes it in the middle
    run(["sh", "-c", 'f="$1"; { head -n 5 "$f"; /bin/true; tail -n +6 "$f"; }'
         ' > "$2/$(basename "$f")"', "sh", src, dest])


def tool_python_subprocess(src, dest):
    # a writer whose descriptor a child inherits and closes halfway
    run([sys.executable, "-c", """
import os, subprocess, sys
src, dest = sys.argv[1], sys.argv[2]
data = open(src, "rb").read()
fd = os.open(os.path.join(dest, os.path.basename(src)),
             os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.write(fd, data[:100])
subprocess.run(["/bin/true"], pass_fds=(fd,), check=True)
os.write(fd, data[100:])
os.close(fd)
""", src, dest])


TOOLS = [("cp", tool_cp), ("cp_p", tool_cp_p), ("cp_a", tool_cp_a),
         ("cp_readonly_file", tool_cp_readonly), ("mv_other_fs", tool_mv),
         ("install_m", tool_install), ("tar_x", tool_tar),
         ("rsync", tool_rsync), ("shutil_copy", tool_shutil_copy),
         ("shutil_copy2", tool_shutil_copy2),
         ("shell_redirect_with_fork", tool_shell_fork),
         ("python_subprocess_inherits", tool_python_subprocess)]


def make_test(kind, name, tool):
    def test(env):
        subject = "%s-%s-%s" % (name, kind, uuid.uuid4().hex[:8])
        src, data = source(env, subject, kind)
        tool(src, where(kind))
        check_one(env, kind, subject, data)
    test.__name__ = "test_%s_into_%s" % (name, kind)
    return test


for _kind in ("folder", "outbox"):
    for _name, _tool in TOOLS:
        _t = make_test(_kind, _name, _tool)
        globals()[_t.__name__] = _t


# --- around the commit -------------------------------------------------------

def test_write_after_the_commit_fails_and_nothing_is_sent_twice(env):
    for kind in ("folder", "outbox"):
        subject = "after-%s-%s" % (kind, uuid.uuid4().hex[:8])
        _, data = source(env, subject, kind)
        fd = os.open(os.path.join(where(kind), subject),
                     os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        keep = os.dup(fd)
        os.write(fd, data)
        os.close(fd)  # the opener's close: committed
        try:
            os.write(keep, b"more\n")
        except OSError as e:
            eq(e.errno, errno.EPERM, "errno of a write after the commit")
        else:
            raise AssertionError("a write after the commit succeeded")
        finally:
            os.close(keep)
        check_one(env, kind, subject, data)


def test_written_name_stays_readonly_and_takes_chmod_chown_utime(env):
    for kind in ("folder", "outbox"):
        subject = "stays-%s-%s" % (kind, uuid.uuid4().hex[:8])
        _, data = source(env, subject, kind)
        p = os.path.join(where(kind), subject)
        with open(p, "wb") as f:
            f.write(data)
        st = os.stat(p)
        eq(st.st_size, len(data), "size of the written name")
        eq(st.st_mode & 0o222, 0, "read-only once committed")
        with open(p, "rb") as f:
            eq(f.read(), data, "the bytes written")
        os.chmod(p, 0o644)
        os.chown(p, os.getuid(), os.getgid())
        os.utime(p, (1700000000, 1700000000))
        try:
            os.chown(p, 4242, 4242)
        except OSError as e:
            eq(e.errno, errno.EPERM, "chown to another user")
        else:
            raise AssertionError("chown to another user succeeded")
        check_one(env, kind, subject, data)


def test_time_set_before_the_commit_is_the_internal_date(env):
    subject = "date-%s" % uuid.uuid4().hex[:8]
    src, data = source(env, subject, "folder")
    run(["cp", "-p", src, where("folder")])
    exactly_one(env, subject, data, folder=FOLDER)
    c = env.imap()
    c.select(FOLDER, readonly=True)
    uid = c.uid("SEARCH", "SUBJECT", subject)[1][0].split()[0]
    resp = c.uid("FETCH", uid, "(INTERNALDATE)")[1][0]
    c.logout()
    # 1700000000 is 2023-11-14 22:13:20 UTC (the source's mtime)
    check(b'"14-Nov-2023 22:13:20 +0000"' in resp, resp)


def test_empty_close_then_rename_commits_once(env):
    # rsync's way by hand: a waiting name, closed, renamed
    subject = "rename-%s" % uuid.uuid4().hex[:8]
    _, data = source(env, subject, "folder")
    tmp = os.path.join(where("folder"), ".%s.XXXXXX" % subject)
    with open(tmp, "wb") as f:
        f.write(data)
    time.sleep(SETTLE)
    eq(matches(env, subject, folder=FOLDER), [], "nothing before the rename")
    os.rename(tmp, os.path.join(where("folder"), subject + ".eml"))
    exactly_one(env, subject, data, folder=FOLDER)


def test_empty_file_is_never_appended(env):
    p = os.path.join(where("folder"), "empty-%s" % uuid.uuid4().hex[:8])
    open(p, "wb").close()
    time.sleep(SETTLE)
    check(not os.path.exists(p), "an empty file leaves at its last close")


def test_mv_of_a_message_shows_at_once_in_both_folders(env):
    subject = "move-%s" % uuid.uuid4().hex[:8]
    src, data = source(env, subject, "folder")
    run(["cp", src, os.path.join(M.path, "INBOX")])
    exactly_one(env, subject, data)
    inbox = os.path.join(M.path, "INBOX")
    names = [n for n in os.listdir(inbox) if subject in n]
    eq(len(names), 1, "the message directory in INBOX")
    os.rename(os.path.join(inbox, names[0]),
              os.path.join(M.path, "Archive", names[0]))
    eq([n for n in os.listdir(inbox) if subject in n], [],
       "gone from INBOX at once")
    moved = [n for n in os.listdir(os.path.join(M.path, "Archive"))
             if subject in n]
    eq(len(moved), 1, "in Archive at once")
    with open(os.path.join(M.path, "Archive", moved[0], "body.txt"),
              "rb") as f:
        eq(f.read().decode(), body_of(data), "its body.txt")
    eq(len(matches(env, subject, folder="Archive")), 1, "on the server")
    eq(matches(env, subject), [], "not left in INBOX on the server")


def test_touch_sends_a_refused_message_again(env):
    subject = "refused-%s" % uuid.uuid4().hex[:8]
    p = os.path.join(where("outbox"), subject)
    data = ("From: Alice <%s>\nTo: nobody@elsewhere.invalid\nSubject: %s\n\n"
            "hello\n" % (env["MFS_EMAIL"], subject)).encode()
    try:
        with open(p, "wb") as f:
            f.write(data)
    except OSError as e:
        eq(e.errno, errno.EIO, "close() of a refused message")
    else:
        raise AssertionError("close() of a refused message succeeded")
    status = os.path.join(where("outbox"), ".status", subject)

    def attempts():
        text = open(status).read()
        for line in text.splitlines():
            if line.startswith("attempts:"):
                return int(line.split(":")[1])
        raise AssertionError("no attempts line: " + text)
    eq(attempts(), 1, "attempts after the refusal")
    os.utime(p)  # touch
    # attempts: 2 is written when the attempt starts, "status: failed"
    # when the refusal has come: wait for both (the last reply may hold
    # the word "failed" while the second attempt still runs)
    wait_for(lambda: attempts() == 2 and
             "status: failed\n" in open(status).read(), 20,
             "a second attempt after touch, refused")
    eq(attempts(), 2, "attempts after the second refusal")
    check("status: failed\n" in open(status).read(), "refused again")
    # the status is written before the sending thread lets the entry go:
    # for that moment an unlink is refused ("being sent", EACCES)
    deadline = time.time() + 5
    while True:
        try:
            os.unlink(p)
            break
        except PermissionError:
            if time.time() > deadline:
                raise
            time.sleep(0.05)
