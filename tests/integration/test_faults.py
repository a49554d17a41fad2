"""Reliability under network faults: mounts through tests/faultproxy.py
(plain IMAP, tls = none) whose faults the tests switch at run time, and
what a crash or a broken cache directory leaves behind. Every read that
succeeds must return the server's bytes; every failure must be an error."""
import base64
import email
import email.utils
import errno
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from faultproxy import FaultProxy  # noqa: E402
from harness import check, eq  # noqa: E402

DIRNAME = re.compile(r"^\d{4}-\d\d-\d\d \d{4} .+ \u2014 .* \u00b7(\d+)$")
NETERR = (errno.EIO, errno.ETIMEDOUT)
SEED = int(os.environ.get("MAILFS_FAULT_SEED", "20261120"))
# random cuts: "MAXBYTES:PROBABILITY" per connection
CUTS = os.environ.get("MAILFS_FAULT_CUTS", "4000:1.0").split(":")
STATS = {}  # fault -> [times, outcome words], printed at the end


def note(fault, n, what):
    t = STATS.setdefault(fault, [0, []])
    t[0] += n
    t[1].append(what)
    print("  fault %-28s x%-4d %s" % (fault, n, what))


def msg(tag, i, body_extra=""):
    date = email.utils.formatdate(1750000000 + i * 60, localtime=False)
    return ("From: Fault %s %d <f%d@example.test>\r\n"
            "To: alice@example.test\r\n"
            "Subject: %s message %d\r\n"
            "Date: %s\r\n"
            "Message-ID: <%s-%d@faults.test>\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "\r\n"
            "Body %s %d %s\r\n%s" % (tag, i, i, tag, i, date, tag, i, tag, i,
                                     "x" * (i * 37 % 3000), body_extra)).encode()


def fill(env, folder, tag, n):
    c = env.imap()
    c.create(folder)
    for i in range(n):
        c.append(folder, None, None, msg(tag, i))
    c.logout()


def fill_more(env, folder, tag, n):
    c = env.imap()
    for i in range(n):
        c.append(folder, None, None, msg(tag, i))
    c.logout()


def server_msgs(env, folder):
    """{uid: bytes} through a direct imaplib connection."""
    c = env.imap()
    typ, _ = c.select('"%s"' % folder, readonly=True)
    out = {}
    if typ == "OK":
        typ, data = c.uid("FETCH", "1:*", "(UID BODY.PEEK[])")
        for item in data:
            if isinstance(item, tuple):
                uid = int(re.search(rb"UID (\d+)", item[0]).group(1))
                out[uid] = item[1]
    c.logout()
    return out


def msgids(env, folder):
    return [re.search(rb"Message-ID: (<[^>]*>)", b, re.I).group(1).decode()
            for b in server_msgs(env, folder).values()]


def dirs_by_uid(path):
    return {int(DIRNAME.match(n).group(1)): n for n in os.listdir(path)
            if DIRNAME.match(n)}


def read(path):
    with open(path, "rb") as f:
        return f.read()


def proxied(env, name, seed=SEED, timeout="2", extra=None, account="test"):
    """A FaultProxy to the plain IMAP port and a config through it."""
    p = FaultProxy(int(env["MFS_IMAP_PORT"]), seed=seed)
    keys = {"imap": "imap://127.0.0.1:%d" % p.port, "tls": "none",
            "timeout": timeout, "ca_file": None}
    keys.update(extra or {})
    return p, env.write_config(name, keys, account=account)


def expect_neterr(fn, limit, what):
    t0 = time.time()
    try:
        fn()
    except OSError as e:
        took = time.time() - t0
        check(e.errno in NETERR, "%s: errno %s (%s)" % (what, e.errno, e))
        check(took <= limit, "%s failed only after %.1f s" % (what, took))
        return took
    raise AssertionError("%s succeeded while the server stalled" % what)


def setup_module(env):
    fill(env, "FStall", "stall", 4)
    fill(env, "FStall2", "stall2", 2)
    fill(env, "FCut", "cut", 150)
    fill(env, "FMv", "mv", 40)
    c = env.imap()
    for f in ("FMvDst", "FCp"):
        c.create(f)
    c.logout()
    fill(env, "FPar", "par", 16)
    fill(env, "FKill", "kill", 10)
    fill(env, "FNoCache", "nocache", 6)


def teardown_module(env):
    print("fault summary (fault: times, outcomes):")
    for k, (n, what) in STATS.items():
        print("  %s: %d: %s" % (k, n, "; ".join(what)))


# --- a server that stops answering ---------------------------------------

def test_stall_fails_in_time_and_recovers(env):
    p, cfg = proxied(env, "config-stall")
    try:
        with env.mount(config=cfg) as m:
            d2 = os.path.join(m.path, "FStall2")
            want = server_msgs(env, "FStall2")
            names = dirs_by_uid(d2)  # listed, nothing read yet
            eq(len(names), 2, "FStall2 listing")
            p.stall()
            took1 = expect_neterr(lambda: os.listdir(os.path.join(m.path, "FStall")),
                                  3.0, "ls of an unlisted folder")
            uid = min(names)
            took2 = expect_neterr(
                lambda: read(os.path.join(d2, names[uid], "message.eml")),
                3.0, "cat of an uncached message")
            note("stall", 2, "ls EIO/ETIMEDOUT in %.1f s, cat in %.1f s"
                 % (took1, took2))
            # the mount answers what it knows without the network
            check("FStall" in os.listdir(m.path), "root still lists")
            os.stat(os.path.join(d2, names[uid]))
            p.passthrough()
            got = dirs_by_uid(os.path.join(m.path, "FStall"))
            eq(len(got), 4, "FStall listed after the stall")
            eq(read(os.path.join(d2, names[uid], "message.eml")), want[uid],
               "message.eml after the stall")
    finally:
        p.close()


def umount_dead(env, how):
    # an account of its own: `mailfs --check test` in another test reads
    # the status of every mount of "test", which keeps it busy a moment
    p, cfg = proxied(env, "config-umount-" + how, timeout="10",
                     account="umount")
    try:
        m = env.mount(config=cfg, account="umount")
        os.listdir(os.path.join(m.path, "FStall"))
        if how == "stall":
            p.stall()
        else:
            p.refuse()
            p.kill_all(rst=True)
        t0 = time.time()
        r = subprocess.run(["fusermount3", "-u", m.path], timeout=20,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        took = time.time() - t0
        eq(r.returncode, 0, "fusermount3 -u (%s)" % r.stdout)
        check(took < 5, "fusermount3 -u took %.1f s" % took)
        try:
            m.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
        finally:
            gone = time.time() - t0
            m.umount()
        check(gone < 5, "mailfs ran on %.1f s after fusermount3 -u with "
              "the server %s (timeout = 10)" % (gone, how))
        note("umount/" + how, 1, "unmounted in %.1f s, exited in %.1f s"
             % (took, time.time() - t0))
    finally:
        p.close()


def test_umount_with_server_stalled(env):
    umount_dead(env, "stall")


def test_umount_with_server_refusing(env):
    umount_dead(env, "refused")


# --- connections cut at random points --------------------------------------

def test_random_cuts_never_give_wrong_bytes(env):
    rng = random.Random(SEED)
    p, cfg = proxied(env, "config-cuts")
    ref = server_msgs(env, "FCut")
    errors = {}
    done = {"read": 0, "part": 0, "list": 0, "flags": 0, "cp": 0, "mv": 0}
    ok = dict.fromkeys(done, 0)
    cp_ok, cp_tried, mv_tried = [], [], []
    checker = env.imap()
    tmp = tempfile.mkdtemp(dir=env.dir)
    t_end = time.time() + 70

    busy = {"since": None, "what": None, "hung": None}

    def watchdog(proc):
        # an operation that outlives every timeout is a hang: note it and
        # end mailfs so that the test itself stays bounded
        while proc.poll() is None:
            t = busy["since"]
            if t is not None and time.time() - t > 15:
                busy["hung"] = busy["what"]
                proc.kill()
                return
            time.sleep(0.2)

    def attempt(kind, fn):
        done[kind] += 1
        busy["what"], busy["since"] = kind, time.time()
        try:
            r = fn()
        except OSError as e:
            busy["since"] = None
            check(busy["hung"] is None,
                  "HANG: a %s did not end within 15 s (timeout = 2); mailfs "
                  "was killed" % busy["hung"])
            errors[(kind, e.errno)] = errors.get((kind, e.errno), 0) + 1
            check(e.errno in NETERR or (kind == "mv" and e.errno == errno.ENOENT),
                  "%s failed with errno %s: %s" % (kind, e.errno, e))
            return None
        busy["since"] = None
        ok[kind] += 1
        return r if r is not None else True

    try:
        with env.mount(config=cfg) as m:
            src = os.path.join(m.path, "FCut")
            names = dirs_by_uid(src)
            eq(len(names), len(ref), "FCut listing")
            mvnames = dirs_by_uid(os.path.join(m.path, "FMv"))
            threading.Thread(target=watchdog, args=(m.proc,), daemon=True).start()
            p.random_cuts(int(CUTS[0]), probability=float(CUTS[1]))
            unread = sorted(names)
            rng.shuffle(unread)
            mvleft = sorted(mvnames)
            n = 0
            while n < 300 and time.time() < t_end:
                n += 1
                op = rng.choice(("read", "read", "part", "list", "flags",
                                 "cp", "mv"))
                if op in ("read", "part") and unread:
                    uid = unread.pop()
                    f = "message.eml" if op == "read" else "body.txt"
                    got = attempt(op, lambda: read(os.path.join(
                        src, names[uid], f)))
                    if got is not None and op == "read":
                        eq(got, ref[uid], "message.eml of uid %d" % uid)
                    elif got is not None:
                        body = email.message_from_bytes(ref[uid]).get_payload(
                            decode=True).decode()
                        eq(got.decode().replace("\r\n", "\n"),
                           body.replace("\r\n", "\n"), "body.txt of uid %d" % uid)
                elif op == "list":
                    box = rng.choice(("FCut", "FMv", "FMvDst", "FCp"))
                    got = attempt(op, lambda: os.listdir(os.path.join(m.path, box)))
                    # a copied file keeps its name until a listing shows
                    # its message (SPEC, "Files written into the mount")
                    if got is not None:
                        check(all(DIRNAME.match(x) or
                                  (box == "FCp" and re.match(r"new-\d+\.eml$", x))
                                  for x in got), "names %r" % got)
                elif op == "flags":
                    uid = rng.choice(sorted(names))
                    add = rng.random() < 0.5
                    line = ("+" if add else "-") + "\\Flagged\n"

                    def wr():
                        with open(os.path.join(src, names[uid], "flags"), "w") as f:
                            f.write(line)
                    if attempt(op, wr):
                        checker.select("FCut", readonly=True)
                        typ, d = checker.uid("FETCH", str(uid), "(FLAGS)")
                        eq(b"\\Flagged" in d[0], add,
                           "server flags of uid %d after %r: %r" % (uid, line, d))
                elif op == "cp":
                    i = 1000 + len(cp_tried)
                    local = os.path.join(tmp, "new-%d.eml" % i)
                    with open(local, "wb") as f:
                        f.write(msg("cp", i))
                    cp_tried.append("<cp-%d@faults.test>" % i)
                    if attempt(op, lambda: shutil.copyfile(
                            local, os.path.join(m.path, "FCp", "new-%d.eml" % i))):
                        cp_ok.append(cp_tried[-1])
                elif op == "mv" and mvleft:
                    uid = mvleft.pop()
                    mv_tried.append("<mv-%d@faults.test>" % (uid - 1))
                    attempt(op, lambda: os.rename(
                        os.path.join(m.path, "FMv", mvnames[uid]),
                        os.path.join(m.path, "FMvDst", mvnames[uid])))
            p.passthrough()
            st = dict(p.stats)
    finally:
        p.close()
        checker.logout()
    total = sum(done.values())
    note("random cut (close/reset)", st["close"] + st["reset"],
         "%d connections, %d closes, %d resets over %d operations; done %r, "
         "succeeded %r, errors %r" % (st["connections"], st["close"],
                                      st["reset"], total, done, ok, errors))
    check(total >= 200, "only %d operations" % total)
    check(st["close"] + st["reset"] >= 15, "too few faults: %r" % st)
    check(ok["read"] > 10 and ok["cp"] > 2, "too little succeeded: %r" % ok)
    # nothing APPENDed twice, every successful cp there once
    ids = msgids(env, "FCp")
    dup = sorted({i for i in ids if ids.count(i) > 1})
    eq(dup, [], "messages APPENDed twice")
    eq(sorted(set(cp_ok) - set(ids)), [], "cp succeeded but the message is missing")
    # mv: every message exactly once in FMv or FMvDst
    both = msgids(env, "FMv") + msgids(env, "FMvDst")
    for i in range(40):
        mid = "<mv-%d@faults.test>" % i
        eq(both.count(mid), 1, "copies of %s after mv under faults" % mid)


# --- UIDVALIDITY ------------------------------------------------------------

def test_uidvalidity_change_serves_no_stale_content(env):
    fill(env, "FUv", "uvold", 3)
    # a listing trusted for 1 s, not the 5 s of the default
    with env.mount(config=env.write_config("config-uv", {"refresh": "1"})) as m:
        path = os.path.join(m.path, "FUv")
        old = dirs_by_uid(path)
        eq(len(old), 3, "old listing")
        old_bytes = {u: read(os.path.join(path, n, "message.eml"))
                     for u, n in old.items()}
        c = env.imap()
        typ, d = c.select("FUv", readonly=True)
        v1 = c.response("UIDVALIDITY")[1]
        c.close()
        c.delete("FUv")
        c.create("FUv")
        # uid 1 again with the same headers (so the same directory name)
        # and a different body of the same length; two others new
        same = old_bytes[min(old)].replace(b"Body uvold 0", b"Body UVNEW 0")
        eq(len(same), len(old_bytes[min(old)]), "same length")
        c.append("FUv", None, None, same)
        for i in (1, 2):
            c.append("FUv", None, None, msg("uvnew", i))
        c.select("FUv", readonly=True)
        v2 = c.response("UIDVALIDITY")[1]
        c.logout()
        check(v1 != v2, "the server changed UIDVALIDITY (%r %r)" % (v1, v2))
        want = server_msgs(env, "FUv")
        # the listing is stale after 1 s: wait for the new one (the
        # uvnew names), no longer
        from harness import wait_for
        wait_for(lambda: dirs_by_uid(path) not in (old, {}) and
                 sorted(dirs_by_uid(path)) == sorted(want), 20,
                 "the listing after the UIDVALIDITY change")
        new = dirs_by_uid(path)
        eq(sorted(new), sorted(want), "UIDs after the change")
        stale = []
        for u, n in old.items():
            if n in new.values():
                continue
            check(n not in os.listdir(path), "old name listed")
            try:
                got = read(os.path.join(path, n, "message.eml"))
            except FileNotFoundError:
                continue
            stale.append("%r: message.eml %s" % (
                n, "served the OLD bytes" if got == old_bytes[u]
                else "served %d bytes" % len(got)))
        eq(stale, [], "old message directories still reachable")
        for u, n in new.items():
            try:
                got = read(os.path.join(path, n, "message.eml"))
            except OSError as e:
                raise AssertionError(
                    "new uid %d %s (listed as %r): message.eml gives %s" % (
                        u, "with the same name as an old message"
                        if n in old.values() else "", n, e.strerror))
            eq(got, want[u], "message.eml of new uid %d (%s)" % (u, n))
        note("UIDVALIDITY change", 1, "old names ENOENT, new content served")


# --- many readers at once ---------------------------------------------------

def test_sixteen_parallel_readers(env):
    want = server_msgs(env, "FPar")
    with env.mount() as m:
        path = os.path.join(m.path, "FPar")
        names = dirs_by_uid(path)
        eq(len(names), 16, "FPar listing")
        procs = {u: subprocess.Popen(["cat", os.path.join(path, n, "message.eml")],
                                     stdout=subprocess.PIPE)
                 for u, n in names.items()}
        deadline = time.time() + 30
        for u, pr in procs.items():
            out, _ = pr.communicate(timeout=max(1, deadline - time.time()))
            eq(pr.returncode, 0, "cat of uid %d" % u)
            eq(out, want[u], "bytes of uid %d" % u)
    note("16 parallel cat", 16, "all bytes right, no deadlock")


# --- crash and remount -------------------------------------------------------

def test_kill9_and_remount(env):
    want = server_msgs(env, "FKill")
    big = ("From: big@example.test\r\nSubject: big\r\nDate: %s\r\n"
           "Message-ID: <big@faults.test>\r\n\r\n" %
           email.utils.formatdate(1750000000)).encode() + b"y" * 200000 + b"\r\n"
    c = env.imap()
    c.append("FKill", None, None, big)
    c.logout()
    want = server_msgs(env, "FKill")
    p, cfg = proxied(env, "config-kill", timeout="10",
                     extra={"cache_dir": os.path.join(env.dir, "cache-kill")})
    try:
        m = env.mount(config=cfg)
        path = os.path.join(m.path, "FKill")
        names = dirs_by_uid(path)
        for u in sorted(names)[:5]:  # cached before the crash
            eq(read(os.path.join(path, names[u], "message.eml")), want[u], "pre")
        bigdir = [n for n in names.values() if "big" in n][0]
        p.trickle(1)  # the big message arrives slowly: killed mid-fetch
        reader = subprocess.Popen(["cat", os.path.join(path, bigdir, "message.eml")],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        m.proc.send_signal(signal.SIGKILL)
        m.proc.wait(timeout=10)
        reader.wait(timeout=10)
        subprocess.run(["fusermount3", "-uz", m.path], stderr=subprocess.DEVNULL)
        m.umount()
        p.passthrough()
        m2 = env.mount(config=cfg)
        try:
            path = os.path.join(m2.path, "FKill")
            names = dirs_by_uid(path)
            eq(sorted(names), sorted(want), "UIDs after remount")
            for u, n in names.items():
                eq(read(os.path.join(path, n, "message.eml")), want[u],
                   "message.eml of uid %d after kill -9" % u)
        finally:
            m2.umount()
    finally:
        p.close()
    note("kill -9 mid-fetch + remount", 1, "every message read back right")


# --- a cache directory that cannot be written -------------------------------

def check_reads_without_cache(env, cache_dir, name):
    want = server_msgs(env, "FNoCache")
    cfg = env.write_config(name, {"cache_dir": cache_dir})
    with env.mount(config=cfg) as m:
        path = os.path.join(m.path, "FNoCache")
        names = dirs_by_uid(path)
        eq(sorted(names), sorted(want), "listing")
        for rnd in range(2):
            for u, n in names.items():
                eq(read(os.path.join(path, n, "message.eml")), want[u],
                   "message.eml of uid %d (round %d)" % (u, rnd))
                read(os.path.join(path, n, "body.txt"))


def test_cache_dir_full_or_read_only(env):
    if os.geteuid() != 0:
        from harness import Skip
        raise Skip("mounting a tmpfs needs root")
    c = env.imap()
    big = ("From: b@example.test\r\nSubject: big nocache\r\nDate: %s\r\n\r\n"
           % email.utils.formatdate(1750000000)).encode() + b"z" * 150000 + b"\r\n"
    c.append("FNoCache", None, None, big)
    c.logout()
    for variant in ("full", "ro"):
        top = tempfile.mkdtemp(prefix="tmpfs-", dir=env.dir)
        opts = "size=64k,mode=0700" + (",ro" if variant == "ro" else "")
        cache = os.path.join(top, "cache")
        if variant == "full":
            subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", top],
                           check=True)
            os.mkdir(cache, 0o700)
            try:
                with open(os.path.join(top, "filler"), "wb") as f:
                    while True:
                        f.write(b"\0" * 4096)
                        f.flush()
            except OSError as e:
                check(e.errno == errno.ENOSPC, "filled: %s" % e)
        else:
            os.mkdir(cache, 0o700)
            subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", cache],
                           check=True)
        try:
            check_reads_without_cache(env, cache, "config-nocache-" + variant)
        finally:
            subprocess.run(["umount", "-l", cache if variant == "ro" else top])
        note("cache dir " + variant, 1, "messages read right from the network")


# --- the connection ends in the middle of a message --------------------------

def test_connection_closed_mid_literal(env):
    big = ("From: mid@example.test\r\nSubject: mid literal\r\nDate: %s\r\n"
           "Message-ID: <mid@faults.test>\r\n\r\n" %
           email.utils.formatdate(1750000000)).encode() + \
        (b"0123456789" * 7 + b"\r\n") * 3000
    fill(env, "FMid", "mid", 0)
    c = env.imap()
    c.append("FMid", None, None, big)
    c.append("FMid", None, None, big.replace(b"<mid@", b"<mid2@"))
    c.logout()
    fill_more(env, "FMid", "midsmall", 14)
    want = server_msgs(env, "FMid")
    p, cfg = proxied(env, "config-mid")
    try:
        with env.mount(config=cfg) as m:
            path = os.path.join(m.path, "FMid")
            names = dirs_by_uid(path)
            eq(len(names), 16, "FMid listing")
            # greeting, login, EXAMINE are a few hundred bytes: 60000
            # falls inside the big BODY[] literals; the small messages get
            # cut points swept across the whole exchange
            small = [u for u in sorted(names) if len(want[u]) < 10000]
            plan = [(u, rst, 60000) for u, rst in
                    zip([u for u in sorted(names) if u not in small],
                        (False, True))]
            plan += [(u, False, 150 + 120 * k) for k, u in enumerate(small)]
            for uid, rst, cut in plan:
                p.kill_all()
                (p.reset_after if rst else p.close_after)(cut, "down")
                res = {}

                def cat():
                    try:
                        res["data"] = read(os.path.join(path, names[uid],
                                                        "message.eml"))
                    except OSError as e:
                        res["err"] = e
                t = threading.Thread(target=cat, daemon=True)
                t0 = time.time()
                t.start()
                t.join(10)
                kind = "reset" if rst else "close (FIN)"
                if t.is_alive():
                    m.proc.kill()
                    t.join(10)
                    raise AssertionError(
                        "HANG: cat of a %d-byte message whose connection "
                        "ended by %s after %d bytes did not return in 10 s "
                        "(timeout = 2); mailfs killed" % (len(want[uid]),
                                                         kind, cut))
                took = time.time() - t0
                if "data" in res:  # the cut came after the message
                    eq(res["data"], want[uid], "message.eml read whole")
                    outcome = "read whole"
                else:
                    check(res["err"].errno in NETERR, "errno %r" % res["err"])
                    outcome = res["err"].strerror
                note("cut by %s after %d B" % (kind, cut), 1,
                     "%s in %.1f s" % (outcome, took))
                p.passthrough()
                eq(read(os.path.join(path, names[uid], "message.eml")),
                   want[uid], "message.eml after the cut")
    finally:
        p.close()


def test_connection_cut_while_a_part_is_fetched(env):
    """A message of 1 MiB or more is read part by part: its attachment is
    a hole fetched on its own (BODY.PEEK[2]) when first read. A connection
    cut inside that fetch gives a network error within the timeout, never
    wrong bytes, and leaves nothing torn in the cache: once the server is
    reachable again the attachment reads back exactly, twice."""
    blob = random.Random(SEED).randbytes(1500000)
    enc = base64.b64encode(blob).decode()
    raw = "\r\n".join(
        ["From: Lazy <lazy@example.test>", "To: alice@example.test",
         "Subject: cut inside a part",
         "Date: %s" % email.utils.formatdate(1750000000),
         "MIME-Version: 1.0",
         'Content-Type: multipart/mixed; boundary="cutb"', "",
         "--cutb", "Content-Type: text/plain", "", "see attached", "",
         "--cutb", "Content-Type: application/octet-stream",
         'Content-Disposition: attachment; filename="part1.bin"',
         "Content-Transfer-Encoding: base64", ""] +
        [enc[j:j + 76] for j in range(0, len(enc), 76)] +
        ["--cutb--", ""]).encode()
    fill(env, "FLazy", "lazy", 0)
    c = env.imap()
    c.append("FLazy", None, None, raw)
    c.logout()
    p, cfg = proxied(env, "config-lazycut")
    try:
        with env.mount(config=cfg) as m:
            (name,) = os.listdir(os.path.join(m.path, "FLazy"))
            part = os.path.join(m.path, "FLazy", name, "part1.bin")
            check("part1.bin" in os.listdir(os.path.dirname(part)),
                  "the skeleton names the attachment")
            # greeting, login and EXAMINE of a new connection are a few
            # hundred bytes: both cuts fall inside the 2 MB literal
            for rst, cut in ((False, 300000), (True, 1200000)):
                p.kill_all()
                (p.reset_after if rst else p.close_after)(cut, "down")
                res = {}

                def cat():
                    try:
                        res["data"] = read(part)
                    except OSError as e:
                        res["err"] = e
                t = threading.Thread(target=cat, daemon=True)
                t0 = time.time()
                t.start()
                t.join(15)
                kind = "reset" if rst else "close (FIN)"
                if t.is_alive():
                    m.proc.kill()
                    t.join(10)
                    raise AssertionError("HANG: reading a part whose fetch "
                                         "was cut by %s did not return in "
                                         "15 s; mailfs killed" % kind)
                check("data" not in res,
                      "a cut %s at %d B still read %d bytes" %
                      (kind, cut, len(res.get("data", b""))))
                check(res["err"].errno in NETERR, "errno %r" % res["err"])
                note("cut by %s inside a part's fetch" % kind, 1,
                     "%s in %.1f s" % (res["err"].strerror, time.time() - t0))
            p.kill_all()
            p.passthrough()
            eq(read(part), blob, "part1.bin once the server is back")
            eq(read(part), blob, "part1.bin read again")
    finally:
        p.close()


def test_a_large_folder_opens_at_the_first_part_of_its_listing(env):
    """A folder of 3,000 messages, never listed, is shown in parts of
    1,000 as its listing comes: the directory opens at the first part and
    shows the rest as it comes. Cold, it shows exactly the server's messages. With the
    connection cut after the first part, the directory still opens, but
    reading it fails: part of the folder is never shown as all of it; with
    the server back, the next read shows every message."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(
        __file__)), "..", "bench"))
    from gen import Maildir  # noqa: E402
    md = Maildir(env["MFS_MAILDIR"])
    for folder in ("Parts", "PartsCut"):
        path = md.folder(folder)
        for i in range(3000):
            md.add(path, msg(folder, i)[:300] + b"\r\n", 1750000000 + i * 60)
    want = {}
    c = env.imap()
    for f in ("Parts", "PartsCut"):
        c.select(f, readonly=True)
        want[f] = sorted(int(u) for u in c.uid("SEARCH", "ALL")[1][0].split())
    c.logout()
    eq(len(want["Parts"]), 3000, "messages on the server")
    p, cfg = proxied(env, "config-parts", timeout="5",
                     extra={"compress": "no"})
    try:
        with env.mount(config=cfg) as m:
            d = os.path.join(m.path, "Parts")
            eq(sorted(dirs_by_uid(d)), want["Parts"], "Parts, listed cold")
            # about 750 kB of listing: cut 450 kB on, after the first part
            sent = max([c.sent["up"] + c.sent["down"] for c in p.conns
                        if not c.dead] or [0])
            p.close_after(sent + 450000)
            d = os.path.join(m.path, "PartsCut")
            fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
            try:
                try:
                    got = os.listdir(fd)
                except OSError as e:
                    print("reading the folder cut in its listing: %s" % e)
                else:
                    raise AssertionError("a listing cut short read as "
                                         "whole: %d entries" % len(got))
            finally:
                os.close(fd)
            p.passthrough()
            eq(sorted(dirs_by_uid(d)), want["PartsCut"],
               "PartsCut, listed again")
    finally:
        p.close()
        c = env.imap()
        for f in ("Parts", "PartsCut"):
            c.delete(f)
        c.logout()
