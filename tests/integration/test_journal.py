"""Offline writes: kept in the journal, shown at once, replayed in order.

The server is reached through tests/faultproxy.py. A warm mount makes the
cache; the next mount starts with the server refusing connections, the user
changes things with the usual tools, the server comes back, and what the
server holds (read with imaplib) must be what the user did: nothing lost,
nothing doubled, also across kill -9.
"""
import email
import errno
import email.utils
import os
import re
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from faultproxy import FaultProxy  # noqa: E402
from harness import check, eq  # noqa: E402
from test_faults import dirs_by_uid, fill, read, server_msgs  # noqa: E402

STANDIN = 0xF0000000


def proxied(env, name):
    p = FaultProxy(int(env["MFS_IMAP_PORT"]))
    keys = {"imap": "imap://127.0.0.1:%d" % p.port, "tls": "none",
            "timeout": "5", "ca_file": None,
            "cache_dir": os.path.join(env.dir, "cache-" + name)}
    return p, env.write_config(name, keys)


def new_msg(tag):
    return ("From: Journal <j@example.test>\r\n"
            "To: alice@example.test\r\n"
            "Subject: written offline %s\r\n"
            "Date: %s\r\n"
            "Message-ID: <%s@journal.test>\r\n"
            "\r\n"
            "Body of %s\r\n" % (tag, email.utils.formatdate(1760000000),
                                tag, tag)).encode()


def status(m):
    return read(os.path.join(m.path, ".mailfs", "status")).decode()


def waiting(m):
    s = status(m)
    g = re.search(r"^journal: (\d+) steps? waiting", s, re.M)
    check(g is not None, "no journal line in the status: %r" % s)
    return int(g.group(1))


def wait_replayed(m, limit=90):
    deadline = time.time() + limit
    while waiting(m) != 0:
        if time.time() > deadline:
            raise AssertionError("journal not replayed after %d s:\n%s"
                                 % (limit, status(m)))
        time.sleep(0.3)


def server_folders(env):
    c = env.imap()
    typ, data = c.list()
    c.logout()
    out = set()
    for line in data:
        name = line.decode().rsplit(' "/" ', 1)[-1].strip('"')
        out.add(name)
    return out


def server_flags(env, folder):
    c = env.imap()
    c.select('"%s"' % folder, readonly=True)
    typ, data = c.uid("FETCH", "1:*", "(UID FLAGS)")
    c.logout()
    out = {}
    for item in data:
        if item is None:
            continue
        g = re.search(rb"UID (\d+) FLAGS \(([^)]*)\)", item)
        if g:
            out[int(g.group(1))] = set(g.group(2).decode().split())
    return out


def bodies(env, folder):
    return sorted(server_msgs(env, folder).values())


def warm(env, cfg, folder):
    """A mount that lists folder (kept for the offline mount); its
    {uid: directory name}."""
    m = env.mount(config=cfg)
    names = dirs_by_uid(os.path.join(m.path, folder))
    m.umount()
    return names


def offline_mount(env, p, cfg):
    p.refuse()
    p.kill_all(rst=True)
    m = env.mount(config=cfg)
    check(status(m).startswith("state: offline"), status(m))
    return m


def setup_module(env):
    fill(env, "JA", "ja", 5)
    fill(env, "JB", "jb", 2)
    fill(env, "JC", "jc", 1)
    c = env.imap()
    c.create("JEmpty")
    c.logout()
    fill(env, "JK", "jk", 3)
    fill(env, "JX", "jx", 3)
    fill(env, "JR", "jr", 2)
    c = env.imap()
    c.create("JT")
    c.logout()


def test_offline_writes_are_kept_shown_and_replayed(env):
    p, cfg = proxied(env, "config-journal")
    ja0, jb0 = server_msgs(env, "JA"), server_msgs(env, "JB")
    try:
        m = env.mount(config=cfg)
        names = dirs_by_uid(os.path.join(m.path, "JA"))
        uids = sorted(names)
        for u in uids:  # cached: readable offline, also after the move
            read(os.path.join(m.path, "JA", names[u], "message.eml"))
        for f in ("JB", "JC", "JEmpty"):
            os.listdir(os.path.join(m.path, f))
        m.umount()

        m = offline_mount(env, p, cfg)
        ja, jb = os.path.join(m.path, "JA"), os.path.join(m.path, "JB")
        # flags
        with open(os.path.join(ja, names[uids[0]], "flags"), "w") as f:
            f.write("+\\Flagged\n")
        check("\\Flagged" in read(os.path.join(ja, names[uids[0]], "flags"))
              .decode(), "flags shown at once")
        # mv of a message; it shows in JB at once, readable from the cache
        os.rename(os.path.join(ja, names[uids[1]]),
                  os.path.join(jb, names[uids[1]]))
        check(uids[1] not in dirs_by_uid(ja), "moved: gone from JA")
        in_jb = {u: n for u, n in dirs_by_uid(jb).items() if u >= STANDIN}
        eq(len(in_jb), 1, "moved: shown in JB under a stand-in")
        eq(read(os.path.join(jb, list(in_jb.values())[0], "message.eml")),
           ja0[uids[1]], "moved message read offline")
        # rm -r of a message
        shutil.rmtree(os.path.join(ja, names[uids[2]]))
        check(uids[2] not in dirs_by_uid(ja), "removed: gone from JA")
        # folders
        os.mkdir(os.path.join(m.path, "JNew"))
        os.rename(os.path.join(m.path, "JC"), os.path.join(m.path, "JCr"))
        os.rmdir(os.path.join(m.path, "JEmpty"))
        root = os.listdir(m.path)
        check("JNew" in root and "JCr" in root and "JC" not in root and
              "JEmpty" not in root, "folders shown at once: %s" % root)
        eq(len(dirs_by_uid(os.path.join(m.path, "JCr"))), 1,
           "renamed folder keeps its message")
        # cp into a folder made offline, and into JB
        src = os.path.join(env.dir, "journal-new.eml")
        with open(src, "wb") as f:
            f.write(new_msg("one"))
        subprocess.run(["cp", src, os.path.join(m.path, "JNew", "a.eml")],
                       check=True)
        with open(src, "wb") as f:
            f.write(new_msg("two"))
        subprocess.run(["cp", "-p", src, os.path.join(jb, "b.eml")],
                       check=True)
        jnew = dirs_by_uid(os.path.join(m.path, "JNew"))
        eq(len(jnew), 1, "appended offline: shown in JNew")
        eq(read(os.path.join(m.path, "JNew", list(jnew.values())[0],
                             "message.eml")), new_msg("one"),
           "appended message read offline")
        check("b.eml" not in os.listdir(jb), "the written name left JB")
        eq(len(dirs_by_uid(jb)), 4, "JB: 2 + moved + appended")
        eq(waiting(m), 8, "steps waiting:\n" + status(m))
        check("append to JNew" in status(m), status(m))

        # the server is back: replayed in order, by itself
        p.passthrough()
        wait_replayed(m)
        m.umount()
    finally:
        p.close()

    ja1 = server_msgs(env, "JA")
    eq(sorted(ja1), [uids[0]] + uids[3:], "JA on the server")
    check("\\Flagged" in server_flags(env, "JA")[uids[0]], "flag replayed")
    eq(bodies(env, "JB"), sorted(list(jb0.values()) +
                                 [ja0[uids[1]], new_msg("two")]),
       "JB on the server: moved and appended, once each")
    eq(bodies(env, "JNew"), [new_msg("one")], "JNew on the server")
    folders = server_folders(env)
    check("JCr" in folders and "JC" not in folders and
          "JEmpty" not in folders, "folders on the server: %s" % folders)
    eq(len(server_msgs(env, "JCr")), 1, "JCr keeps its message")


def test_kill9_offline_and_remount_loses_and_doubles_nothing(env):
    p, cfg = proxied(env, "config-journal-kill")
    jk0 = server_msgs(env, "JK")
    try:
        names = warm(env, cfg, "JK")
        uids = sorted(names)

        m = offline_mount(env, p, cfg)
        jk = os.path.join(m.path, "JK")
        src = os.path.join(env.dir, "journal-kill.eml")
        with open(src, "wb") as f:
            f.write(new_msg("kill"))
        subprocess.run(["cp", src, os.path.join(jk, "k.eml")], check=True)
        shutil.rmtree(os.path.join(jk, names[uids[0]]))
        # a message never read: only its flags file, which can be written
        msg1 = os.path.join(jk, names[uids[1]])
        eq(os.listdir(msg1), ["flags"], "uncached message offline")
        with open(os.path.join(msg1, "flags"), "w") as f:
            f.write("+\\Answered\n")
        try:
            read(os.path.join(msg1, "message.eml"))
            raise AssertionError("message.eml of an uncached message read "
                                 "offline")
        except OSError as e:
            eq(e.errno, errno.EHOSTDOWN, "message.eml offline: %s" % e)
        eq(waiting(m), 3, status(m))
        m.proc.send_signal(signal.SIGKILL)
        m.proc.wait(timeout=10)
        subprocess.run(["fusermount3", "-uz", m.path],
                       stderr=subprocess.DEVNULL)
        m.umount(check_exit=False)

        # still offline: the journal of the killed mount is shown
        m = env.mount(config=cfg)
        jk = os.path.join(m.path, "JK")
        eq(waiting(m), 3, "steps after kill -9:\n" + status(m))
        shown = dirs_by_uid(jk)
        check(uids[0] not in shown, "removed message still gone")
        eq(len([u for u in shown if u >= STANDIN]), 1, "appended shown")
        p.passthrough()
        wait_replayed(m)
        m.umount()
    finally:
        p.close()
    eq(bodies(env, "JK"), sorted([jk0[u] for u in uids[1:]] +
                                 [new_msg("kill")]),
       "JK on the server: the append once, the removal done")
    check("\\Answered" in server_flags(env, "JK")[uids[1]],
          "the flag of a message never read, replayed")


def test_a_step_that_no_longer_applies_is_shown(env):
    p, cfg = proxied(env, "config-journal-conflict")
    jx0 = server_msgs(env, "JX")
    try:
        names = warm(env, cfg, "JX")
        uids = sorted(names)

        m = offline_mount(env, p, cfg)
        jx = os.path.join(m.path, "JX")
        os.mkdir(os.path.join(m.path, "JXdest"))
        os.rename(os.path.join(jx, names[uids[0]]),
                  os.path.join(m.path, "JXdest", names[uids[0]]))
        src = os.path.join(env.dir, "journal-conflict.eml")
        with open(src, "wb") as f:
            f.write(new_msg("conflict"))
        subprocess.run(["cp", src, os.path.join(jx, "c.eml")], check=True)
        # meanwhile another client deletes the message and the folder
        c = env.imap()
        c.select("JX")
        c.uid("STORE", str(uids[0]), "+FLAGS.SILENT", "(\\Deleted)")
        c.expunge()
        c.close()
        c.delete("JX")
        c.logout()
        p.passthrough()
        wait_replayed(m)
        s = status(m)
        check(re.search(r"^journal: 2 steps failed", s, re.M) is not None,
              "the failed steps are counted:\n" + s)
        check("move JX UID %d to JXdest" % uids[0] in s, s)
        kept = re.search(r"the message is kept in (\S+\.eml)\)", s)
        check(kept is not None, "the appended message is kept:\n" + s)
        eq(read(kept.group(1)), new_msg("conflict"), "kept bytes")
        m.umount()
    finally:
        p.close()
    check("JXdest" in server_folders(env), "the mkdir before was replayed")
    eq(server_msgs(env, "JXdest"), {}, "nothing moved into JXdest")
    check(len(jx0) == 3, "JX had 3 messages")


def test_kill9_in_the_middle_of_the_replay(env):
    """The replay of a cp is on its way (the server stalls) when mailfs is
    killed: the next mount sends it again, and the server gets it once."""
    p, cfg = proxied(env, "config-journal-replay")
    jr0 = server_msgs(env, "JR")
    try:
        warm(env, cfg, "JR")

        m = offline_mount(env, p, cfg)
        src = os.path.join(env.dir, "journal-replay.eml")
        with open(src, "wb") as f:
            f.write(new_msg("replay"))
        subprocess.run(["cp", src, os.path.join(m.path, "JR", "r.eml")],
                       check=True)
        p.stall()  # connections are taken, nothing goes through
        deadline = time.time() + 30
        while "(being sent)" not in status(m):
            check(time.time() < deadline, "the replay never began:\n%s"
                  % status(m))
            time.sleep(0.1)
        m.proc.send_signal(signal.SIGKILL)
        m.proc.wait(timeout=10)
        subprocess.run(["fusermount3", "-uz", m.path],
                       stderr=subprocess.DEVNULL)
        m.umount(check_exit=False)

        p.passthrough()
        m = env.mount(config=cfg)
        wait_replayed(m)
        eq(len(dirs_by_uid(os.path.join(m.path, "JR"))), len(jr0) + 1,
           "JR shows the message once")
        m.umount()
    finally:
        p.close()
    eq(bodies(env, "JR"), sorted(list(jr0.values()) + [new_msg("replay")]),
       "JR on the server: appended once")


def test_offline_writes_with_everyday_tools(env):
    """tar -x, rsync (temporary name, then rename), a shell redirect whose
    command forks, and Python's shutil.copy2 into a folder while offline:
    each message reaches the server once when it is back."""
    import shutil as sh
    import tarfile
    p, cfg = proxied(env, "config-journal-tools")
    try:
        warm(env, cfg, "JT")
        m = offline_mount(env, p, cfg)
        jt = os.path.join(m.path, "JT")
        work = os.path.join(env.dir, "journal-tools")
        os.makedirs(work, exist_ok=True)
        for tag in ("tar", "rsync", "shell", "copy2"):
            with open(os.path.join(work, tag + ".eml"), "wb") as f:
                f.write(new_msg(tag))
        with tarfile.open(os.path.join(work, "a.tar"), "w") as t:
            t.add(os.path.join(work, "tar.eml"), arcname="tar.eml")
        subprocess.run(["tar", "-xf", os.path.join(work, "a.tar"), "-C", jt],
                       check=True)
        subprocess.run(["rsync", os.path.join(work, "rsync.eml"), jt + "/"],
                       check=True)
        subprocess.run("(cat '%s'; true) > '%s'" % (
            os.path.join(work, "shell.eml"), os.path.join(jt, "shell.eml")),
            shell=True, check=True)
        sh.copy2(os.path.join(work, "copy2.eml"), os.path.join(jt, "c.eml"))
        eq(waiting(m), 4, "four appends kept:\n" + status(m))
        eq(len([u for u in dirs_by_uid(jt) if u >= STANDIN]), 4,
           "four messages shown")
        p.passthrough()
        wait_replayed(m)
        m.umount()
    finally:
        p.close()
    eq(bodies(env, "JT"), sorted(new_msg(t) for t in
                                 ("tar", "rsync", "shell", "copy2")),
       "JT on the server: each once")
