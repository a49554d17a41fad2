"""Offline: a mount without the server, from the cache of an earlier mount.

The server is reached through tests/faultproxy.py, which refuses new
connections (the server is down) or cuts the open ones (the network went)
on demand, and lets them through again. What the mount shows is compared
with what the server holds, read with imaplib.
"""
import base64
import errno
import os
import random
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from faultproxy import FaultProxy  # noqa: E402
from harness import check, eq  # noqa: E402
from test_faults import dirs_by_uid, fill, read, server_msgs  # noqa: E402


def proxied(env, name, extra=None):
    p = FaultProxy(int(env["MFS_IMAP_PORT"]))
    keys = {"imap": "imap://127.0.0.1:%d" % p.port, "tls": "none",
            "timeout": "5", "ca_file": None,
            "cache_dir": os.path.join(env.dir, "cache-" + name)}
    keys.update(extra or {})
    return p, env.write_config(name, keys)


def attached(i, blob):
    """Message i: a line of text, and blob attached (base64)."""
    enc = base64.b64encode(blob).decode()
    return "\r\n".join(
        ["From: Sender <s@example.test>", "To: alice@example.test",
         "Subject: message %d" % i, "Date: Tue, 14 Nov 2023 10:00:00 +0000",
         "MIME-Version: 1.0",
         'Content-Type: multipart/mixed; boundary="b%d"' % i, "",
         "--b%d" % i, "Content-Type: text/plain; charset=utf-8", "",
         "Message %d is here." % i, "--b%d" % i,
         "Content-Type: application/octet-stream",
         'Content-Disposition: attachment; filename="data.bin"',
         "Content-Transfer-Encoding: base64", ""] +
        [enc[j:j + 76] for j in range(0, len(enc), 76)] +
        ["--b%d--" % i, ""]).encode()


def setup_module(env):
    fill(env, "Off1", "off1", 4)
    fill(env, "Off2", "off2", 3)
    fill(env, "Off3", "off3", 2)
    fill(env, "Pre/A", "prea", 30)
    fill(env, "Pre/B", "preb", 5)
    fill(env, "PreSkip", "pres", 5)


def fails_at_once(fn, what):
    """fn() must fail with EHOSTDOWN (offline), and at once."""
    t0 = time.time()
    try:
        fn()
    except OSError as e:
        took = time.time() - t0
        eq(e.errno, errno.EHOSTDOWN, "%s: %s" % (what, e))
        check(took < 2, "%s failed only after %.1f s" % (what, took))
        return
    raise AssertionError("%s succeeded offline" % what)


def until(fn, limit, what):
    """fn() once it stops raising OSError, within limit seconds."""
    deadline = time.time() + limit
    while True:
        try:
            return fn()
        except OSError:
            if time.time() > deadline:
                raise AssertionError("%s: still failing after %d s"
                                     % (what, limit))
            time.sleep(0.3)


def test_mount_without_the_server_serves_the_cache(env):
    p, cfg = proxied(env, "config-offline")
    want = server_msgs(env, "Off1")
    try:
        m = env.mount(config=cfg)
        root = sorted(os.listdir(m.path))
        d1 = os.path.join(m.path, "Off1")
        names = dirs_by_uid(d1)
        eq(sorted(names), sorted(want), "Off1 listed")
        uids = sorted(names)
        for uid in uids[:2]:  # read once: in the cache from now on
            read(os.path.join(d1, names[uid], "message.eml"))
        names2 = dirs_by_uid(os.path.join(m.path, "Off2"))
        m.umount()

        p.refuse()
        t0 = time.time()
        m = env.mount(config=cfg)
        check(time.time() - t0 < 10, "the offline mount took %.1f s"
              % (time.time() - t0))
        eq(sorted(os.listdir(m.path)), root, "root offline")
        d1 = os.path.join(m.path, "Off1")
        eq(dirs_by_uid(d1), names, "Off1 offline")
        eq(dirs_by_uid(os.path.join(m.path, "Off2")), names2,
           "Off2 offline (listed, never read)")
        for uid in uids[:2]:
            eq(read(os.path.join(d1, names[uid], "message.eml")), want[uid],
               "cached message.eml offline")
        d2 = os.path.join(m.path, "Off2")
        fails_at_once(lambda: read(os.path.join(d2, names2[min(names2)],
                                                "message.eml")),
                      "cat of an uncached message")
        fails_at_once(lambda: os.listdir(os.path.join(m.path, "Off3")),
                      "ls of a folder never listed")
        check(m.proc.poll() is None, "mailfs still runs")
        status = read(os.path.join(m.path, ".mailfs", "status")).decode()
        check(status.startswith("state: offline since "), status)
        check("Connection refused" in status, "why: %s" % status)
        check(".mailfs" not in os.listdir(m.path), ".mailfs is not listed")
        # --check tells the same of the mounted account, and fails: the
        # server cannot be reached
        r = env.mailfs(["--check", "-o", "config=" + cfg, "test"])
        out = r.stdout.decode()
        check(r.returncode != 0, "--check offline exited 0: %s" % out)
        check("mounted at: %s\n  state: offline since " % m.path in out,
              "--check shows the mount's state: %s" % out)

        # the server is back: the mount catches up by itself
        p.passthrough()
        want2 = server_msgs(env, "Off2")
        got = until(lambda: read(os.path.join(d2, names2[min(names2)],
                                              "message.eml")),
                    70, "cat once the server is back")
        eq(got, want2[min(names2)], "message.eml read once online")
        eq(len(until(lambda: dirs_by_uid(os.path.join(m.path, "Off3")),
                     70, "ls Off3 once online")), 2, "Off3 online")
        status = read(os.path.join(m.path, ".mailfs", "status")).decode()
        check(status.startswith("state: online\n"), status)
        m.umount()
    finally:
        p.close()


def test_network_gone_after_mount_shows_kept_listings(env):
    p, cfg = proxied(env, "config-offline-later")
    try:
        m = env.mount(config=cfg)
        names2 = dirs_by_uid(os.path.join(m.path, "Off2"))  # kept on disk
        m.umount()
        m = env.mount(config=cfg)
        os.listdir(m.path)
        p.refuse()
        p.kill_all(rst=True)
        # listed by the earlier mount, not by this one
        eq(dirs_by_uid(os.path.join(m.path, "Off2")), names2,
           "Off2 from the kept listing")
        m.umount()
    finally:
        p.close()


def test_first_mount_without_the_server_fails_clearly(env):
    p, cfg = proxied(env, "config-offline-first")
    try:
        p.refuse()
        try:
            env.mount(config=cfg)
        except AssertionError as e:
            check("refused" in str(e) or "connect" in str(e),
                  "the reason is said: %s" % e)
            return
        raise AssertionError("a first mount without the server mounted")
    finally:
        p.close()


def cache_bytes(m):
    status = read(os.path.join(m.path, ".mailfs", "status")).decode()
    for line in status.splitlines():
        if line.startswith("cache: "):
            return int(line.split()[1])
    raise AssertionError("no cache line in %r" % status)


def test_prefetch_then_read_offline(env):
    """prefetch = "Pre/*": every message of Pre/A and Pre/B is fetched in
    the background, none of "PreSkip"; offline, all of them read."""
    p, cfg = proxied(env, "config-prefetch", {"prefetch": "Pre/*"})
    want = {f: server_msgs(env, f) for f in ("Pre/A", "Pre/B", "PreSkip")}
    total = sum(len(b) for f in ("Pre/A", "Pre/B") for b in want[f].values())
    try:
        m = env.mount(config=cfg)
        deadline = time.time() + 30
        while cache_bytes(m) < total and time.time() < deadline:
            time.sleep(0.2)
        check(cache_bytes(m) >= total, "prefetched %d of %d bytes"
              % (cache_bytes(m), total))
        eq(len(dirs_by_uid(os.path.join(m.path, "PreSkip"))), 5,
           "PreSkip listed (not prefetched)")
        m.umount()

        p.refuse()
        m = env.mount(config=cfg)
        for f in ("Pre/A", "Pre/B"):
            d = os.path.join(m.path, f)
            names = dirs_by_uid(d)
            eq(sorted(names), sorted(want[f]), "%s listed offline" % f)
            for uid, name in names.items():
                eq(read(os.path.join(d, name, "message.eml")), want[f][uid],
                   "%s: prefetched message.eml offline" % f)
        d = os.path.join(m.path, "PreSkip")
        names = dirs_by_uid(d)
        fails_at_once(lambda: read(os.path.join(d, names[min(names)],
                                                "message.eml")),
                      "a folder not prefetched")
        m.umount()
    finally:
        p.close()


def test_messages_read_ahead_without_attachments_serve_offline(env):
    """40 messages, most small, some with attachments of 100 to 300 kB and
    two of 1.2 MB: body.txt of each read in a row, so that fetch-ahead
    brings the large ones without their attachments. After a remount
    without the server, every message directory lists the same files and
    every body.txt reads the same; what never came (those attachments, the
    whole message.eml of those messages) fails at once."""
    rnd = random.Random(41)
    sizes = [rnd.choice([300, 2000, 5000]) for _ in range(40)]
    for i in range(3, 40, 5):
        sizes[i] = rnd.randint(75000, 225000)  # 100-300 kB in base64
    sizes[20] = sizes[31] = 900000
    c = env.imap()
    c.create("OffSkel")
    for i, n in enumerate(sizes):
        c.append("OffSkel", None, None, attached(i, rnd.randbytes(n)))
    c.logout()
    want = server_msgs(env, "OffSkel")
    p, cfg = proxied(env, "config-offline-skeletons")
    try:
        with env.mount(config=cfg) as m:
            d = os.path.join(m.path, "OffSkel")
            names = dirs_by_uid(d)
            eq(len(names), 40, "OffSkel listed")
            files, bodies = {}, {}
            for uid in sorted(names, key=lambda u: names[u]):
                bodies[uid] = read(os.path.join(d, names[uid], "body.txt"))
                files[uid] = sorted(os.listdir(os.path.join(d, names[uid])))
            for uid in names:
                eq(bodies[uid], b"Message %d is here." % (uid - min(names)),
                   "body.txt of uid %d" % uid)
            got = cache_bytes(m)
            check(got < sum(len(b) for b in want.values()) // 2,
                  "the attachments stayed out: %d bytes cached" % got)

        p.refuse()
        with env.mount(config=cfg) as m:
            d = os.path.join(m.path, "OffSkel")
            eq(dirs_by_uid(d), names, "OffSkel listed offline")
            for uid in sorted(names, key=lambda u: names[u]):
                md = os.path.join(d, names[uid])
                eq(sorted(os.listdir(md)), files[uid],
                   "files of uid %d offline" % uid)
                eq(read(os.path.join(md, "body.txt")), bodies[uid],
                   "body.txt of uid %d offline" % uid)
            large = [u for u in names if len(want[u]) >= 64 * 1024]
            eq(len(large), 10, "messages of 64 KiB or more")
            for uid in large:
                md = os.path.join(d, names[uid])
                fails_at_once(lambda: read(os.path.join(md, "data.bin")),
                              "an attachment that never came")
                fails_at_once(lambda: read(os.path.join(md, "message.eml")),
                              "a message that came without its attachment")
            small = min(u for u in names if len(want[u]) < 64 * 1024)
            eq(read(os.path.join(d, names[small], "message.eml")),
               want[small], "a message that came whole, offline")
    finally:
        p.close()
        c = env.imap()
        c.delete("OffSkel")
        c.logout()


def test_check_does_not_wait_for_a_mount_that_does_not_answer(env):
    """--check reads the status of each mount of the account; a mount
    that answers nothing (here: stopped) costs it 2 s, not a hang."""
    import signal
    p, cfg = proxied(env, "config-offline-stopped")
    try:
        m = env.mount(config=cfg)
        os.listdir(m.path)
        p.refuse()
        m.proc.send_signal(signal.SIGSTOP)
        try:
            t0 = time.time()
            r = env.mailfs(["--check", "-o", "config=" + cfg, "test"],
                           timeout=30)
            took = time.time() - t0
        finally:
            m.proc.send_signal(signal.SIGCONT)
        out = r.stdout.decode()
        check("mounted at: %s\n  (status: no answer within 2 s)" % m.path
              in out, out)
        check(took < 10, "--check took %.1f s" % took)
        # running again: it answers (within bounds), then unmounts
        s = subprocess.run(["timeout", "20", "cat",
                            os.path.join(m.path, ".mailfs", "status")],
                           stdout=subprocess.PIPE)
        eq(s.returncode, 0, "the status read after SIGCONT")
        m.umount()
    finally:
        p.close()
