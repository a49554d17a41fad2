"""Warm remounts: a folder listing kept in the cache_dir is served again when
the server shows no change (EXAMINE only), refreshed with CHANGEDSINCE when
only flags changed, and replaced by a full listing when messages came or
went. Commands are counted through a plain-IMAP proxy."""
import email.utils
import os
import re

from harness import CountingProxy, check, eq

FOLDER = "WarmBox"
UIDNAME = re.compile(r"\u00b7(\d+)$")


def make_message(i):
    date = email.utils.formatdate(1710000000 + i * 60, localtime=False)
    subject = ("=?UTF-8?B?UsOpc3Vtw6kgbsKw?= %d" % i if i % 3 == 0
               else "Warm message %d" % i)
    return ("From: =?UTF-8?Q?Ren=C3=A9e?= %d <w%d@example.test>\r\n"
            "To: alice@example.test\r\n"
            "Subject: %s\r\n"
            "Date: %s\r\n"
            "Message-ID: <warm-%d@example.test>\r\n"
            "\r\n"
            "Body %s.\r\n" % (i, i, subject, date, i, "x" * i)).encode()


def setup_module(env):
    c = env.imap()
    c.create(FOLDER)
    for i in range(40):
        c.append(FOLDER, None, None, make_message(i))
    c.logout()


def listing(mnt):
    """{name: (size of message.eml, contents of flags)} of the folder."""
    path = os.path.join(mnt.path, FOLDER)
    out = {}
    for name in os.listdir(path):
        if not UIDNAME.search(name):
            continue
        d = os.path.join(path, name)
        size = os.stat(os.path.join(d, "message.eml")).st_size
        with open(os.path.join(d, "flags")) as f:
            out[name] = (size, f.read())
    return out


def uid_of(name):
    return int(UIDNAME.search(name).group(1))


def server_uids(env):
    c = env.imap()
    c.select(FOLDER, readonly=True)
    typ, data = c.uid("SEARCH", "ALL")
    c.logout()
    return sorted(int(u) for u in data[0].split())


def envelope_fetches(cmds):
    """The commands that list a folder in full: FETCH 1:N (... ENVELOPE),
    in pieces for a large folder."""
    return [c for c in cmds if re.search(r"^\S+ FETCH 1:\d+ ", c.upper())
            and "ENVELOPE" in c.upper()]


def after_login(cmds):
    """The commands after the last LOGIN or AUTHENTICATE among cmds."""
    for i in range(len(cmds) - 1, -1, -1):
        verb = (cmds[i].split(" ")[1:2] or [""])[0].upper()
        if verb in ("LOGIN", "AUTHENTICATE"):
            return cmds[i + 1:]
    return cmds


class Mounts:
    """Mounts of the test account through one proxy, all sharing one
    cache_dir unless told otherwise."""

    def __init__(self, env, name):
        self.env = env
        self.name = name
        self.proxy = CountingProxy(int(env["MFS_IMAP_PORT"]))
        self.cache = os.path.join(env.dir, name + "-cache")
        self.cfg = env.write_config("config-" + name, {
            "imap": "imap://127.0.0.1:%d" % self.proxy.port, "tls": "none",
            "cache_dir": self.cache})

    def list_once(self, cold=False):
        """Mounts, lists the folder, unmounts. Returns the listing, the
        commands on the non-IDLE connections since the mount, and those
        that the listing itself sent."""
        cfg = self.cfg
        if cold:  # a cache_dir of its own, empty
            cfg = self.env.write_config("config-%s-cold" % self.name, {
                "imap": "imap://127.0.0.1:%d" % self.proxy.port,
                "tls": "none"})
        before = set(self.proxy.conns)
        with self.env.mount(config=cfg) as m:
            self.proxy.wait_idle()
            # the folder list (LIST), asked when the root is first used,
            # is not part of the folder's listing
            os.listdir(m.path)
            with self.proxy.lock:
                mark = {cid: len(c) for cid, c in self.proxy.conns.items()}
            got = listing(m)
            with self.proxy.lock:
                conns = {cid: list(c) for cid, c in self.proxy.conns.items()
                         if cid not in before and cid not in self.proxy.idle}
        everything = [c for cmds in conns.values() for c in cmds]
        during = [c for cid, cmds in conns.items()
                  for c in after_login(cmds[mark.get(cid, 0):])]
        return got, everything, during

    def close(self):
        self.proxy.close()


def test_warm_remount(env):
    ms = Mounts(env, "warm")
    try:
        first, cmds, _ = ms.list_once()
        eq(len(first), 40, "messages listed")
        check(envelope_fetches(cmds), "the first mount lists in full")

        # no change on the server: EXAMINE only
        second, cmds, during = ms.list_once()
        print("warm remount, no change: %d commands for the listing: %r"
              % (len(during), during))
        eq(envelope_fetches(cmds), [], "full listing on a warm remount")
        check(not any("FETCH" in c.upper() for c in during),
              "no FETCH at all: %r" % during)
        check(len(during) <= 2, "at most 2 round trips: %r" % during)
        eq(second, first, "the warm listing")

        # a flag changed: CHANGEDSINCE, still no ENVELOPE
        name = sorted(first, key=uid_of)[5]
        c = env.imap()
        c.select(FOLDER)
        c.uid("STORE", str(uid_of(name)), "+FLAGS", "(\\Flagged)")
        c.logout()
        third, cmds, during = ms.list_once()
        print("warm remount, a flag changed: %r" % during)
        eq(envelope_fetches(cmds), [], "full listing after a flag change")
        check(any("CHANGEDSINCE" in c.upper() for c in during),
              "flags fetched with CHANGEDSINCE: %r" % during)
        check(len(during) <= 2, "at most 2 round trips: %r" % during)
        eq(set(third), set(first), "names after a flag change")
        check("\\Flagged" in third[name][1],
              "the new flag shows: %r" % (third[name],))
        for n in first:
            if n != name:
                eq(third[n], first[n], "untouched message %s" % n)
        cold, _, _ = ms.list_once(cold=True)
        eq(third, cold, "warm listing against a cold one")

        # messages came and went: listed in full, exactly the server's
        c = env.imap()
        c.append(FOLDER, None, None, make_message(99))
        c.select(FOLDER)
        gone = uid_of(sorted(first, key=uid_of)[7])
        c.uid("STORE", str(gone), "+FLAGS", "(\\Deleted)")
        c.expunge()
        c.logout()
        fourth, cmds, _ = ms.list_once()
        eq(sorted(uid_of(n) for n in fourth), server_uids(env),
           "UIDs after append and expunge")
        check(gone not in [uid_of(n) for n in fourth], "expunged one gone")
        cold, _, _ = ms.list_once(cold=True)
        eq(fourth, cold, "warm listing against a cold one")

        # and that listing is kept in turn
        fifth, cmds, during = ms.list_once()
        eq(envelope_fetches(cmds), [], "full listing after the refresh")
        eq(fifth, fourth, "listing kept after the refresh")
    finally:
        ms.close()


def test_warm_corrupt_cache_is_ignored(env):
    ms = Mounts(env, "torn")
    try:
        first, _, _ = ms.list_once()
        index = os.path.join(ms.cache, ".index")
        files = [f for f in os.listdir(index) if ".tmp." not in f]
        check(files, "a listing file was written")
        for f in files:
            p = os.path.join(index, f)
            eq(os.stat(p).st_mode & 0o777, 0o600, "mode of %s" % f)
            with open(p, "r+b") as fh:
                fh.truncate(os.path.getsize(p) // 2)
        eq(os.stat(index).st_mode & 0o777, 0o700, "mode of .index")
        second, cmds, _ = ms.list_once()
        check(envelope_fetches(cmds), "a torn file is not used")
        eq(second, first, "listing after a torn file")
        third, cmds, _ = ms.list_once()
        eq(envelope_fetches(cmds), [], "the rewritten file is used")
        eq(third, first, "listing from the rewritten file")
    finally:
        ms.close()
