#!/usr/bin/python3
"""mailfs benchmark: mailfs against mbsync, curl, msmtp and bare Python
floors, every connection through a proxy that delays each direction.

    /usr/bin/python3 tests/bench/bench.py        (as root: make bench)

Environment:
    BENCH_MESSAGES  messages in INBOX (default 10000)
    BENCH_MANY      messages in the memory-test folder (default 100000)
    BENCH_REAL      messages in Real, the folder of a real mailbox's size
                    mix (gen.real_message; default 10000)
    BENCH_RUNS      runs per measurement; the median is shown (default 3)
    BENCH_DELAY_MS  one-way delay of the proxy (default 20)
    BENCH_QUICK=1   smoke run: 500 messages, 2,000 in the memory test,
                    500 in Real, 1 run, 10 outbox messages
    BENCH_ROWS      only these steps, comma-separated: listing, attach,
                    grep, grep_real, search, memory, du, prefetch, pop3,
                    new_mail, outbox, slowlink
    BENCH_REAL_GREP messages of Real the grep_real row reads (default 1000)
    BENCH_OUT       where results.json and table.md go; with it, the
                    temporary directory (mail, caches, logs) is removed
                    at the end unless BENCH_KEEP=1. Without it, the
                    temporary directory is kept and holds them.
    BENCH_COMPRESS=no  every mailfs config says compress = no (the
                    slowlink row still measures both)
    MAILFS_BIN      the binary to measure (default ./mailfs; it is copied
                    first so that a rebuild during the run changes nothing)

It starts tests/servers/mailservers.sh in a fresh temporary directory,
writes the test mail with tests/bench/gen.py, and prints one table. A row
whose mailfs feature is missing or broken reads "n/a (reason)".
"""
import datetime
import json
import os
import re
import resource
import shutil
import smtplib
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import delayproxy  # noqa: E402
import gen  # noqa: E402

SERVERS = os.path.join(ROOT, "tests", "servers", "mailservers.sh")
PY = "/usr/bin/python3"
FLOOR = os.path.join(HERE, "floor.py")

QUICK = os.environ.get("BENCH_QUICK") == "1"
MESSAGES = int(os.environ.get("BENCH_MESSAGES", 500 if QUICK else 10000))
MANY = int(os.environ.get("BENCH_MANY", 2000 if QUICK else 100000))
REAL = int(os.environ.get("BENCH_REAL", 500 if QUICK else 10000))
REAL_GREP = int(os.environ.get("BENCH_REAL_GREP", 1000))
ROWS = [r for r in os.environ.get("BENCH_ROWS", "").split(",") if r]
RUNS = int(os.environ.get("BENCH_RUNS", 1 if QUICK else 3))
DELAY_MS = float(os.environ.get("BENCH_DELAY_MS", 20))
OUTBOX_COUNT = 10 if QUICK else 100
# The slow link of the compression row: 100 ms round trip, 8 Mbit/s each
# way (shared by the connections, as one link).
SLOW_DELAY_MS = 50
SLOW_RATE = 8e6 / 8
MB = 1024 * 1024


def log(msg):
    print("bench: " + msg, file=sys.stderr, flush=True)


class NA(Exception):
    """The row cannot be measured: mailfs lacks or breaks the feature."""


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def run_timed(cmd, stdin=None, stdout=subprocess.DEVNULL, shell=False,
              timeout=900):
    """Runs cmd to its end; returns (seconds from start, rc, max RSS in
    bytes, stdout text or None)."""
    out = subprocess.PIPE if stdout is None else stdout
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdin=stdin, stdout=out,
                         stderr=subprocess.PIPE, shell=shell)
    text = None
    if out == subprocess.PIPE:
        text = p.stdout.read().decode("utf-8", "replace")
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    err = p.stderr.read().decode("utf-8", "replace")
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise RuntimeError("%s exited %d: %s" % (
            cmd if isinstance(cmd, str) else " ".join(cmd), p.returncode,
            err.strip()[-400:]))
    return wall, p.returncode, ru.ru_maxrss * 1024, text


def proc_status(pid, key):
    """VmHWM, VmRSS... of pid in bytes, or None."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class Mailfs:
    """One mailfs -f process and its mount point."""

    def __init__(self, bench, config, account="bench"):
        self.b = bench
        self.path = tempfile.mkdtemp(prefix="mnt-", dir=bench.dir)
        self.logpath = self.path + ".log"
        self.logf = open(self.logpath, "w")
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [bench.mailfs, "-f", "-o", "config=" + config, account,
             self.path], stdout=self.logf, stderr=subprocess.STDOUT)
        deadline = self.t0 + 60
        while not os.path.ismount(self.path):
            if self.proc.poll() is not None:
                self.logf.close()
                raise NA("mailfs exited %d: %s" % (
                    self.proc.returncode, self.output()[-300:].strip()))
            if time.monotonic() > deadline:
                self.umount()
                raise NA("mailfs did not mount within 60 s")
            time.sleep(0.002)

    def output(self):
        with open(self.logpath, errors="replace") as f:
            return f.read()

    def hwm(self):
        return proc_status(self.proc.pid, "VmHWM")

    def rss(self):
        return proc_status(self.proc.pid, "VmRSS")

    def umount(self):
        if os.path.ismount(self.path):
            subprocess.run(["fusermount3", "-u", self.path],
                           stderr=subprocess.DEVNULL)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            subprocess.run(["fusermount3", "-uz", self.path],
                           stderr=subprocess.DEVNULL)
        if not self.logf.closed:
            self.logf.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.umount()


class Bench:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="mailfs-bench-")
        os.chmod(self.dir, 0o755)
        self.srv = os.path.join(self.dir, "servers")
        self.rows = []
        self.commands = []
        self.ncache = 0
        self.proxies = []
        self.traces = {}

    # --- setup ------------------------------------------------------------

    def start(self):
        src = os.environ.get("MAILFS_BIN", os.path.join(ROOT, "mailfs"))
        if not os.access(src, os.X_OK):
            raise SystemExit("no mailfs binary at %s; run make" % src)
        self.mailfs = os.path.join(self.dir, "mailfs")
        shutil.copy2(src, self.mailfs)
        self.mailfs_mtime = datetime.datetime.fromtimestamp(
            os.path.getmtime(src)).isoformat(timespec="seconds")
        self.tools()
        subprocess.run([SERVERS, "start", self.srv], check=True,
                       timeout=120, stdout=subprocess.DEVNULL)
        self.env = gen.read_env(self.srv)
        self.ca = self.env["MFS_CA"]
        self.alice_pass = os.path.join(self.srv, "alice.pass")
        self.bob_pass = os.path.join(self.srv, "bob.pass")
        self.facts = gen.generate(self.srv, MESSAGES, MANY, log=log,
                                  real=REAL)
        d = DELAY_MS / 1000.0
        e = self.env
        self.imaps = self.proxy(e["MFS_IMAPS_PORT"], d, None)
        self.imap = self.proxy(e["MFS_IMAP_PORT"], d, "imap")
        self.pop3s = self.proxy(e["MFS_POP3S_PORT"], d, None)
        self.pop3 = self.proxy(e["MFS_POP3_PORT"], d, "pop3")
        self.smtps = self.proxy(e["MFS_SMTPS_PORT"], d, None)
        self.local = os.path.join(self.dir, "report.bin")
        with open(self.local, "wb") as f:
            f.write(self.facts["attach_data"])
        self.netrc = os.path.join(self.dir, "netrc")
        with open(self.netrc, "w") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write("machine localhost login alice password %s\n" %
                    self.env["MFS_PASS"])

    def tools(self):
        missing = [p for p, exe in (("isync", "mbsync"), ("curl", "curl"),
                                    ("msmtp", "msmtp"))
                   if shutil.which(exe) is None]
        if missing:
            log("installing " + " ".join(missing))
            subprocess.run(["apt-get", "install", "-y",
                            "--no-install-recommends"] + missing,
                           env=dict(os.environ,
                                    DEBIAN_FRONTEND="noninteractive"),
                           stdout=subprocess.DEVNULL, check=False)

    def proxy(self, port, delay, proto, rate=None):
        p = delayproxy.DelayProxy(int(port), delay, proto, rate=rate)
        self.proxies.append(p)
        return p

    def stop(self):
        for p in self.proxies:
            p.close()
        subprocess.run([SERVERS, "stop", self.srv], timeout=120,
                       stdout=subprocess.DEVNULL)

    # --- configs ----------------------------------------------------------

    def cache(self):
        self.ncache += 1
        return os.path.join(self.dir, "cache-%d" % self.ncache)

    def config(self, kind="imaps", cache=None, smtp=False, via=None,
               extra=()):
        """A mailfs config file: kind imaps, imap (plaintext), pop3s or
        pop3 (plaintext, as bob); via: the IMAPS proxy, if not the
        usual one; extra: more lines."""
        user, pw = "alice", self.alice_pass
        lines = []
        if kind == "imaps":
            lines.append("imap = imaps://localhost:%d" %
                         (via or self.imaps).port)
        elif kind == "imap":
            lines.append("imap = imap://localhost:%d" % self.imap.port)
        elif kind == "pop3s":
            lines.append("pop3 = pop3s://localhost:%d" % self.pop3s.port)
            user, pw = "bob", self.bob_pass
        else:
            lines.append("pop3 = pop3://localhost:%d" % self.pop3.port)
            user, pw = "bob", self.bob_pass
        if kind in ("imap", "pop3"):
            lines.append("tls = none")
        lines += ["user = " + user, "password_file = " + pw,
                  "ca_file = " + self.ca,
                  "cache_dir = " + (cache or self.cache()),
                  "timeout = 60"]
        if smtp:
            lines += ["smtp = smtps://localhost:%d" % self.smtps.port,
                      "from = alice@example.test"]
        if os.environ.get("BENCH_COMPRESS") == "no" and kind in ("imap", "imaps") \
                and not any(x.startswith("compress") for x in extra):
            lines.append("compress = no")
        lines += list(extra)
        path = os.path.join(self.dir, "config-%d" % self.ncache)
        self.ncache += 1
        with open(path, "w") as f:
            f.write("[bench]\n" + "\n".join(lines) + "\n")
        return path

    # --- rows -------------------------------------------------------------

    def add(self, op, target, mailfs=None, alt_name="", alt=None,
            ratio_max=None, rts=None, rts_login=None, alt_rts=None,
            rss=None, met=None, note=""):
        ratio = None
        if mailfs is not None and alt:
            ratio = mailfs / alt
            if met is None and ratio_max is not None:
                met = ratio <= ratio_max
        row = dict(op=op, target=target, mailfs=mailfs, alt_name=alt_name,
                   alt=alt, ratio=ratio, rts=rts, rts_login=rts_login,
                   alt_rts=alt_rts, rss=rss, met=met, note=note)
        self.rows.append(row)
        log(fmt_row(row))

    def na(self, op, target, reason, alt_name="", alt=None, alt_rts=None):
        self.add(op, target, alt_name=alt_name, alt=alt, alt_rts=alt_rts,
                 note="n/a (%s)" % reason)

    def timed_alt(self, proxy, cmd, runs=RUNS, **kw):
        """Median wall of cmd and the median round trips it made."""
        walls, rts = [], []
        for _ in range(runs):
            proxy.reset()
            walls.append(run_timed(cmd, **kw)[0])
            time.sleep(DELAY_MS / 1000.0 * 3)
            rts.append(proxy.round_trips())
        self.cmd(cmd)
        return median(walls), median(rts)

    def cmd(self, cmd):
        if isinstance(cmd, list) and cmd[:2] == ["sh", "-c"]:
            cmd = cmd[2]
        text = cmd if isinstance(cmd, str) else " ".join(cmd)
        text = text.replace(self.dir, "$B")
        for name in ("imaps", "pop3s", "smtps"):
            port = str(getattr(self, name).port)
            text = re.sub(r"\b%s\b" % port, "$%s_PROXY" % name.upper(),
                          text)
        if text not in self.commands:
            self.commands.append(text)

    def floor(self, *args):
        return [PY, FLOOR] + [str(a) for a in args]

    # --- cold and warm listing ----------------------------------------------

    def ls_mount(self, config, folder, expect):
        """Mounts, runs ls -l FOLDER; returns (wall from mailfs start to ls
        returning, VmHWM, mount) with the mount still up."""
        m = Mailfs(self, config)
        try:
            _, _, _, out = run_timed(["ls", "-l", os.path.join(m.path,
                                                              folder)],
                                     stdout=None)
            wall = time.monotonic() - m.t0
            n = len(out.splitlines()) - 1
            if expect is not None and n != expect:
                raise NA("ls -l showed %d entries, not %d" % (n, expect))
            return wall, m.hwm(), m
        except BaseException:
            m.umount()
            raise

    def listing_rows(self):
        op_cold = "cold `ls -l` INBOX (%d msgs), start to end" % MESSAGES
        op_warm = "warm remount `ls -l` INBOX, no change"
        floor_wall, floor_rts = self.timed_alt(self.imaps, self.floor(
            "imap-list", self.imaps.port, self.ca, "alice", self.alice_pass,
            "INBOX"))
        walls, rts, hwms, caches = [], [], [], []
        try:
            for _ in range(RUNS):
                cache = self.cache()
                caches.append(cache)
                self.imaps.reset()
                wall, hwm, m = self.ls_mount(self.config(cache=cache),
                                             "INBOX", MESSAGES)
                rts.append(self.imaps.round_trips())
                m.umount()
                walls.append(wall)
                hwms.append(hwm)
            self.cmd("mailfs -f -o config=CONFIG bench MNT & "
                     "(wait for the mount); ls -l MNT/INBOX")
            cold_login = self.plain_rts("imap", self.imap, "INBOX",
                                        MESSAGES, warm=False)
            self.add(op_cold, "≤ 4 RTs after login; ≤ 1.5× floor",
                     median(walls), "imaplib UID FETCH 1:* floor",
                     floor_wall, 1.5, median(rts), cold_login, floor_rts,
                     max(hwms))
            if cold_login is not None and cold_login > 4:
                self.rows[-1]["met"] = False
        except NA as e:
            self.na(op_cold, "≤ 4 RTs after login; ≤ 1.5× floor", str(e),
                    "imaplib UID FETCH 1:* floor", floor_wall, floor_rts)
            return
        mb_wall, mb_rts = self.mbsync_resync()
        walls, rts, hwms = [], [], []
        try:
            for i in range(RUNS):
                self.imaps.reset()
                wall, hwm, m = self.ls_mount(
                    self.config(cache=caches[-1]), "INBOX", MESSAGES)
                rts.append(self.imaps.round_trips())
                m.umount()
                walls.append(wall)
                hwms.append(hwm)
            warm_login = self.plain_rts("imap", self.imap, "INBOX",
                                        MESSAGES, warm=True)
            self.add(op_warm, "≤ 2 RTs after login; ≤ mbsync resync",
                     median(walls), "mbsync no-change resync", mb_wall,
                     1.0, median(rts), warm_login, mb_rts, max(hwms))
            if warm_login is not None and warm_login > 2:
                self.rows[-1]["met"] = False
        except NA as e:
            self.na(op_warm, "≤ 2 RTs after login; ≤ mbsync resync",
                    str(e), "mbsync no-change resync", mb_wall, mb_rts)

    def plain_rts(self, kind, proxy, folder, expect, warm):
        """Round trips after login of a plaintext mount + ls -l (the login
        is visible only without TLS); with warm, of a second mount on the
        first one's cache."""
        try:
            cache = self.cache()
            proxy.reset()
            _, _, m = self.ls_mount(self.config(kind, cache=cache), folder,
                                    expect)
            n = proxy.round_trips_after_login()
            trace = proxy.stats()
            m.umount()
            if warm:
                proxy.reset()
                _, _, m = self.ls_mount(self.config(kind, cache=cache),
                                        folder, expect)
                n = proxy.round_trips_after_login()
                trace = proxy.stats()
                m.umount()
            self.trace("%s%s ls -l %s" % ("warm " if warm else "", kind,
                                          folder), trace)
            return n
        except (NA, RuntimeError) as e:
            log("plaintext %s run failed: %s" % (kind, e))
            return None

    def trace(self, what, stats):
        """Keeps what the client sent in each round trip (plaintext runs),
        first line of each burst, for the report."""
        lines = []
        for c in stats:
            for i, b in enumerate(c["bursts"]):
                first = b.split(b"\r\n")[0].decode("ascii", "replace")
                first = re.sub(r"^(\S+ LOGIN \S+) .*", r"\1 ***", first)
                first = re.sub(r"^PASS .*", "PASS ***", first)
                more = b.count(b"\r\n") - 1
                lines.append("conn %d burst %d: %s%s" % (
                    c["id"], i, first[:70],
                    " (+%d more lines)" % more if more > 0 else ""))
        self.traces[what] = lines
        log("client bursts of %s:\n  %s" % (what, "\n  ".join(lines)))

    def mbsync_resync(self):
        local = os.path.join(self.dir, "mbsync-mail")
        os.makedirs(local, exist_ok=True)
        cfg = os.path.join(self.dir, "mbsyncrc")
        with open(cfg, "w") as f:
            f.write("""IMAPAccount bench
Host localhost
Port %d
User alice
PassCmd "cat %s"
SSLType IMAPS
CertificateFile %s

IMAPStore remote
Account bench

MaildirStore local
Path %s/
Inbox %s/INBOX

Channel bench
Far :remote:
Near :local:
Patterns INBOX
Create Near
SyncState *
""" % (self.imaps.port, self.alice_pass, self.ca, local, local))
        t = time.monotonic()
        run_timed(["mbsync", "-q", "-c", cfg, "-a"], timeout=1800)
        log("mbsync first sync: %.1f s" % (time.monotonic() - t))
        return self.timed_alt(self.imaps, ["mbsync", "-q", "-c", cfg, "-a"])

    # --- attachment, cache ----------------------------------------------------

    def only_entry(self, m, folder):
        names = os.listdir(os.path.join(m.path, folder))
        if len(names) != 1:
            raise NA("%s shows %d entries, not 1" % (folder, len(names)))
        return os.path.join(m.path, folder, names[0])

    def attach_rows(self):
        op1 = "`cat` 2 MB attachment (cold cache)"
        op2 = "`cat` it again (from cache)"
        url = "imaps://localhost:%d/Attach;UID=1" % self.imaps.port
        curl_wall, curl_rts = self.timed_alt(self.imaps, [
            "curl", "-sS", "--netrc-file", self.netrc, "--cacert", self.ca,
            url, "-o", "/dev/null"])
        local_wall, _ = self.timed_alt(self.imaps, ["cat", self.local])
        walls, rts, hwms, again = [], [], [], []
        try:
            for _ in range(RUNS):
                with Mailfs(self, self.config()) as m:
                    path = os.path.join(self.only_entry(m, "Attach"),
                                        "report.bin")
                    self.imaps.reset()
                    wall, _, _, _ = run_timed(["cat", path])
                    time.sleep(0.1)
                    rts.append(self.imaps.round_trips())
                    walls.append(wall)
                    again.append(run_timed(["cat", path])[0])
                    with open(path, "rb") as f:
                        if f.read() != self.facts["attach_data"]:
                            raise NA("report.bin differs from the "
                                     "attachment")
                    hwms.append(m.hwm())
            self.cmd("cat MNT/Attach/*/report.bin  (twice)")
            self.add(op1, "≤ 1.2× curl", median(walls),
                     "curl whole message", curl_wall, 1.2, median(rts),
                     None, curl_rts, max(hwms))
            self.add(op2, "≤ 2× cat of a local file", median(again),
                     "cat local file", local_wall, 2.0, 0, None, 0,
                     max(hwms))
        except NA as e:
            self.na(op1, "≤ 1.2× curl", str(e), "curl whole message",
                    curl_wall, curl_rts)
            self.na(op2, "≤ 2× cat of a local file", str(e),
                    "cat local file", local_wall)

    # --- grep -----------------------------------------------------------------

    def grep_row(self):
        op = "`grep -l WORD Words/*/body.txt`, %d msgs" % gen.WORDS_COUNT
        floor_wall, floor_rts = self.timed_alt(self.imaps, self.floor(
            "imap-bodies", self.imaps.port, self.ca, "alice",
            self.alice_pass, "Words", "1:%d" % gen.WORDS_COUNT))
        want = sorted(self.facts["word_hits"])
        walls, rts, hwms = [], [], []
        try:
            for _ in range(RUNS):
                with Mailfs(self, self.config()) as m:
                    os.listdir(os.path.join(m.path, "Words"))
                    self.imaps.reset()
                    wall, _, _, out = run_timed(
                        "grep -l %s %s/Words/*/body.txt" % (
                            self.facts["word"], m.path),
                        shell=True, stdout=None)
                    time.sleep(0.1)
                    rts.append(self.imaps.round_trips())
                    got = sorted(re.search(r"Words \d{4}", line).group(0)
                                 for line in out.splitlines())
                    if got != want:
                        raise NA("grep found %d files, expected %d" % (
                            len(got), len(want)))
                    walls.append(wall)
                    hwms.append(m.hwm())
            self.cmd("ls MNT/Words; grep -l %s MNT/Words/*/body.txt" %
                     self.facts["word"])
            self.add(op, "≤ 2× bulk fetch", median(walls),
                     "imaplib UID FETCH 1:1000 BODY.PEEK[]", floor_wall,
                     2.0, median(rts), None, floor_rts, max(hwms))
        except NA as e:
            self.na(op, "≤ 2× bulk fetch", str(e),
                    "imaplib UID FETCH 1:1000 BODY.PEEK[]", floor_wall,
                    floor_rts)

    def grep_real_row(self):
        """grep -l over body.txt of the first REAL_GREP messages of Real by
        name (as a glob sorts them), against one bulk fetch of the same
        messages (the names sort by date, and gen.py dates Real's messages
        in UID order, so they are UIDs 1..REAL_GREP)."""
        count = min(REAL_GREP, REAL)
        op = "`grep -l WORD` over body.txt of the first %d of Real" % count
        target = "≤ 1× bulk fetch"
        alt_name = "imaplib UID FETCH 1:%d BODY.PEEK[]" % count
        floor_wall, floor_rts = self.timed_alt(self.imaps, self.floor(
            "imap-bodies", self.imaps.port, self.ca, "alice",
            self.alice_pass, "Real", "1:%d" % count))
        walls, rts, hwms = [], [], []
        try:
            for _ in range(RUNS):
                with Mailfs(self, self.config()) as m:
                    names = sorted(os.listdir(os.path.join(m.path, "Real")),
                                   key=lambda n: n.encode())[:count]
                    lst = os.path.join(self.dir, "real-grep.list")
                    with open(lst, "w") as f:
                        for n in names:
                            f.write(os.path.join(m.path, "Real", n,
                                                 "body.txt") + "\n")
                    self.imaps.reset()
                    # grep says 1 when no file matches
                    wall, _, _, out = run_timed(
                        "xargs -a %s -d '\\n' grep -l %s; "
                        "test $? -le 123" % (lst, self.facts["word"]),
                        shell=True, stdout=None)
                    time.sleep(0.1)
                    rts.append(self.imaps.round_trips())
                    walls.append(wall)
                    hwms.append(m.hwm())
                    log("grep_real run: %.3f s, %d RTs" % (wall, rts[-1]))
            self.cmd("ls MNT/Real; grep -l %s (first %d names of "
                     "MNT/Real)/body.txt" % (self.facts["word"], count))
            self.add(op, target, median(walls), alt_name, floor_wall,
                     1.0, median(rts), None, floor_rts, max(hwms))
        except (NA, RuntimeError, OSError) as e:
            self.na(op, target, str(e), alt_name, floor_wall, floor_rts)

    # --- search ---------------------------------------------------------------

    def search_row(self):
        """ls INBOX/.search/body:"PHRASE" from mailfs's start on a fresh
        cache, against imaplib's login + UID SEARCH BODY; then grep -il
        of the phrase in INBOX/*/body.txt through a fresh mount."""
        phrase = gen.SEARCH_PHRASE
        query = 'body:"%s"' % phrase
        op = "fresh `ls INBOX/.search/%s`, %d msgs" % (query, MESSAGES)
        op_grep = "fresh `grep -il '%s' INBOX/*/body.txt`" % phrase
        floor_cmd = self.floor("imap-search", self.imaps.port, self.ca,
                               "alice", self.alice_pass, "INBOX", phrase)
        floor_wall, floor_rts = self.timed_alt(self.imaps, floor_cmd)
        want = int(run_timed(floor_cmd, stdout=None)[3].split()[0])
        walls, rts, hwms = [], [], []
        try:
            for _ in range(RUNS):
                self.imaps.reset()
                m = Mailfs(self, self.config())
                try:
                    _, rc, _, out = run_timed(
                        ["ls", os.path.join(m.path, "INBOX", ".search",
                                            query)], stdout=None)
                    walls.append(time.monotonic() - m.t0)
                    rts.append(self.imaps.round_trips())
                    hwms.append(m.hwm())
                finally:
                    m.umount()
                if rc != 0 or len(out.splitlines()) != want:
                    raise NA("ls showed %d matches, the server %d" % (
                        len(out.splitlines()), want))
            self.cmd("mailfs -f -o config=CONFIG bench MNT & (wait for "
                     "the mount); ls 'MNT/INBOX/.search/%s'" % query)
            self.add(op, "≤ 1.5× imaplib login + UID SEARCH",
                     median(walls), "imaplib login + UID SEARCH BODY",
                     floor_wall, 1.5, median(rts), None, floor_rts,
                     max(hwms), note="%d matches" % want)
        except NA as e:
            self.na(op, "≤ 1.5× imaplib login + UID SEARCH", str(e),
                    "imaplib login + UID SEARCH BODY", floor_wall,
                    floor_rts)
            return
        search_wall = median(walls)
        walls, rts, hwms = [], [], []
        try:
            for _ in range(RUNS):
                with Mailfs(self, self.config()) as m:
                    self.imaps.reset()
                    t0 = time.monotonic()
                    _, _, _, out = run_timed(
                        "grep -il '%s' %s/INBOX/*/body.txt" % (
                            phrase, m.path), shell=True, stdout=None)
                    walls.append(time.monotonic() - t0)
                    time.sleep(0.1)
                    rts.append(self.imaps.round_trips())
                    hwms.append(m.hwm())
            self.cmd("grep -il '%s' MNT/INBOX/*/body.txt" % phrase)
            self.add(op_grep, "(for comparison)", median(walls),
                     "the search above", search_wall, None, median(rts),
                     None, None, max(hwms),
                     note="grep found %d files" % len(out.splitlines()))
        except NA as e:
            self.na(op_grep, "(for comparison)", str(e), "the search above",
                    search_wall)

    # --- POP3 -----------------------------------------------------------------

    def pop3_row(self):
        op = "POP3 cold `ls -l INBOX`, %d msgs" % gen.POP3_COUNT
        floor_wall, floor_rts = self.timed_alt(self.pop3s, self.floor(
            "pop3-retr", self.pop3s.port, self.ca, "bob", self.bob_pass))
        walls, rts, hwms = [], [], []
        try:
            for _ in range(RUNS):
                self.pop3s.reset()
                wall, hwm, m = self.ls_mount(self.config("pop3s"), "INBOX",
                                             gen.POP3_COUNT)
                rts.append(self.pop3s.round_trips())
                m.umount()
                walls.append(wall)
                hwms.append(hwm)
            login = self.plain_rts("pop3", self.pop3, "INBOX",
                                   gen.POP3_COUNT, warm=False)
            self.add(op, "≤ 1× pipelined RETR of all", median(walls),
                     "pipelined RETR 1..n floor", floor_wall, 1.0,
                     median(rts), login, floor_rts, max(hwms))
        except NA as e:
            self.na(op, "≤ 1× pipelined RETR of all", str(e),
                    "pipelined RETR 1..n floor", floor_wall, floor_rts)

    # --- outbox ---------------------------------------------------------------

    def outbox_messages(self):
        d = os.path.join(self.dir, "outgoing")
        os.makedirs(d, exist_ok=True)
        import random
        rng = random.Random("outbox")
        files = []
        for i in range(OUTBOX_COUNT):
            msg = gen.small_message(rng, gen.BASE_DATE + i * 60,
                                    "Outgoing %03d" % i)
            msg = msg.replace(b"To: Alice <alice@example.test>",
                              b"To: Bob <bob@example.test>")
            msg = re.sub(rb"^From: [^\r]*", b"From: alice@example.test",
                         msg)
            path = os.path.join(d, "msg%03d.eml" % i)
            with open(path, "wb") as f:
                f.write(msg)
            files.append(path)
        return files

    def msmtp_loop(self, files):
        cfg = os.path.join(self.dir, "msmtprc")
        with open(cfg, "w") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write("""account bench
host localhost
port %d
tls on
tls_starttls off
tls_trust_file %s
auth on
user alice
passwordeval "cat %s"
from alice@example.test
account default : bench
""" % (self.smtps.port, self.ca, self.alice_pass))
        loop = "for f in %s/outgoing/*.eml; do msmtp -C %s -t < $f; done" % (
            self.dir, cfg)
        return self.timed_alt(self.smtps, ["sh", "-c", loop])

    def outbox_row(self):
        op = "%d × `cp` into outbox/" % OUTBOX_COUNT
        files = self.outbox_messages()
        alt_wall, alt_rts = self.msmtp_loop(files)
        walls, rts, hwms, drains = [], [], [], []
        try:
            for _ in range(RUNS):
                with Mailfs(self, self.config(smtp=True)) as m:
                    ob = os.path.join(m.path, "outbox")
                    if not os.path.isdir(ob):
                        raise NA("no outbox/ in the mount")
                    self.smtps.reset()
                    self.imaps.reset()
                    loop = "for f in %s/outgoing/*.eml; do cp $f %s/; done" % (
                        self.dir, ob)
                    wall = run_timed(["sh", "-c", loop])[0]
                    t = time.monotonic()
                    while [n for n in os.listdir(ob) if n != ".status"]:
                        if time.monotonic() - t > 300:
                            raise NA("outbox/ not empty 300 s later")
                        time.sleep(0.05)
                    drains.append(wall + time.monotonic() - t)
                    time.sleep(0.5)
                    walls.append(wall)
                    rts.append(self.smtps.round_trips() +
                               self.imaps.round_trips())
                    hwms.append(m.hwm())
            self.cmd("for f in outgoing/*.eml; do cp $f MNT/outbox/; done")
            self.add(op, "≤ 0.3× msmtp per message", median(walls),
                     "msmtp once per message", alt_wall, 0.3, median(rts),
                     None, alt_rts, max(hwms),
                     note="outbox/ empty after %.2f s; RTs are SMTP + "
                     "IMAP (Sent copies)" % median(drains))
        except (NA, RuntimeError) as e:
            self.na(op, "≤ 0.3× msmtp per message", str(e),
                    "msmtp once per message", alt_wall, alt_rts)

    # --- memory ---------------------------------------------------------------

    def memory_rows(self):
        op0 = "cold `ls -l` of %d msgs, start to end" % MANY
        op1 = "RSS after `ls -l` of %d msgs" % MANY
        op2 = "RSS while reading a 50 MB message"
        target0 = "≤ 1.2× floor"
        target1 = "VmHWM ≤ 64 MB; RssAnon ≤ 48 MB"
        floor_wall, floor_rts = self.timed_alt(self.imaps, self.floor(
            "imap-list", self.imaps.port, self.ca, "alice", self.alice_pass,
            "Many"))
        try:
            # Cold listings from the start of the process, as the INBOX
            # row; the last one stays mounted for the memory rows.
            walls, rts = [], []
            m = None
            for i in range(RUNS):
                if m is not None:
                    m.umount()
                self.imaps.reset()
                wall, hwm, m = self.ls_mount(self.config(), "Many", MANY)
                time.sleep(0.1)
                rts.append(self.imaps.round_trips())
                walls.append(wall)
            self.cmd("mailfs -f -o config=CONFIG bench MNT & "
                     "(wait for the mount); ls -l MNT/Many")
            self.add(op0, target0, median(walls),
                     "imaplib UID FETCH 1:* floor", floor_wall, 1.2,
                     median(rts), None, floor_rts, hwm)
        except NA as e:
            self.na(op0, target0, str(e), "imaplib UID FETCH 1:* floor",
                    floor_wall, floor_rts)
            self.na(op1, target1, str(e))
            self.na(op2, "≤ 1.1× the RSS after listing", str(e))
            return
        try:
            with m:
                listed = m.hwm()
                now = m.rss()
                anon = proc_status(m.proc.pid, "RssAnon")
                self.add(op1, target1, walls[-1], rts=rts[-1], rss=listed,
                         met=listed <= 64 * MB and anon <= 48 * MB,
                         note="time is the last cold ls -l, start to end; "
                         "after it VmRSS %s, RssAnon %s" % (
                             fmt_mb(now), fmt_mb(anon)))
                peak = [0]
                done = threading.Event()

                def sample():
                    while not done.is_set():
                        peak[0] = max(peak[0], m.rss() or 0)
                        time.sleep(0.02)
                th = threading.Thread(target=sample)
                th.start()
                huge = self.only_entry(m, "Huge")
                self.imaps.reset()
                try:
                    wall = run_timed(["cat", os.path.join(
                        huge, "message.eml")])[0]
                    wall2 = run_timed(["cat", os.path.join(
                        huge, "huge.bin")])[0]
                finally:
                    done.set()
                    th.join()
                rts = self.imaps.round_trips()
                hwm = m.hwm()
                self.cmd("cat MNT/Huge/*/message.eml; "
                         "cat MNT/Huge/*/huge.bin")
                # The peak while reading: the sampled VmRSS, or VmHWM if
                # reading raised it above what listing had reached.
                top = max(peak[0], hwm if hwm > listed else 0)
                self.add(op2, "≤ 1.1× the RSS after listing", wall,
                         rts=rts, rss=top, met=top <= now * 1.1,
                         note="peak RSS while reading %s = %.2f× the VmRSS "
                         "after listing (%s); VmHWM %s; message.eml %.2f s,"
                         " huge.bin %.2f s" % (
                             fmt_mb(top), top / now, fmt_mb(now),
                             fmt_mb(hwm), wall, wall2))
        except (NA, RuntimeError) as e:
            self.na(op2, "≤ 1.1× the RSS after listing", str(e))

    def du_row(self):
        """du -s of Real on a fresh mount; the memory the daemon holds
        after it, and after the kernel forgot the inodes (drop_caches)."""
        op = "RSS after `du -s` of %d real msgs" % REAL
        target = "anon ≤ 64 MB; no cache file mapped after drop_caches"
        try:
            cache = self.cache()
            with Mailfs(self, self.config(cache=cache)) as m:
                self.imaps.reset()
                wall, _, _, out = run_timed(
                    ["du", "-s", os.path.join(m.path, "Real")], stdout=None)
                rts = self.imaps.round_trips()
                pid = m.proc.pid

                def mem():
                    with open("/proc/%d/maps" % pid) as f:
                        mapped = sum(1 for line in f if cache in line)
                    return (proc_status(pid, "RssAnon"),
                            proc_status(pid, "RssFile"), mapped)
                anon, file_, mapped = mem()
                with open("/proc/sys/vm/drop_caches", "w") as f:
                    f.write("2")
                time.sleep(2)
                anon2, file2, mapped2 = mem()
                hwm = m.hwm()
            self.cmd("du -s MNT/Real; echo 2 > /proc/sys/vm/drop_caches")
            self.add(op, target, wall, rts=rts, rss=hwm,
                     met=anon <= 64 * MB and mapped2 == 0,
                     note="du says %s KB; after du: RssAnon %s, RssFile %s, "
                     "%d cache files mapped; after drop_caches: RssAnon %s, "
                     "RssFile %s, %d mapped" % (
                         out.split()[0], fmt_mb(anon), fmt_mb(file_), mapped,
                         fmt_mb(anon2), fmt_mb(file2), mapped2))
        except (NA, RuntimeError, OSError) as e:
            self.na(op, target, str(e))

    # --- slow link: compression ---------------------------------------------

    def slowlink_row(self):
        """Cold ls -l of INBOX through a link of 100 ms round trip and 8
        Mbit/s, with COMPRESS=DEFLATE (the default; Dovecot offers it)
        and with compress = no, RUNS runs each, alternating."""
        op = ("cold `ls -l` INBOX (%d msgs), 100 ms RTT, 8 Mbit/s, "
              "COMPRESS=DEFLATE" % MESSAGES)
        target = "≤ 0.5× without compression"
        alt_name = "the same with compress = no"
        link = self.proxy(self.env["MFS_IMAPS_PORT"], SLOW_DELAY_MS / 1000.0,
                          None, rate=SLOW_RATE)
        # the new-mail row, run before, delivers into INBOX
        count = self.inbox_count()
        got = {True: ([], [], [], []), False: ([], [], [], [])}
        try:
            for _ in range(RUNS):
                for on in (True, False):
                    cfg = self.config(via=link, extra=[
                        "compress = %s" % ("yes" if on else "no")])
                    link.reset()
                    wall, hwm, m = self.ls_mount(cfg, "INBOX", count)
                    stats = link.stats()
                    m.umount()
                    walls, rts, down, hwms = got[on]
                    walls.append(wall)
                    rts.append(sum(s["round_trips"] for s in stats))
                    down.append(sum(s["bytes_down"] for s in stats))
                    hwms.append(hwm)
                    log("slowlink: compress %s: %.2f s, %d bytes down" % (
                        "on" if on else "off", wall, down[-1]))
            self.cmd("mailfs -f -o config=CONFIG bench MNT & (wait for the "
                     "mount); ls -l MNT/INBOX  [through delayproxy "
                     "--delay-ms %d --rate-kbit 8000; compress = yes, then "
                     "compress = no]" % SLOW_DELAY_MS)
            on, off = got[True], got[False]
            self.traces["slowlink"] = {
                "compressed_walls": on[0], "plain_walls": off[0],
                "compressed_bytes_down": on[2], "plain_bytes_down": off[2]}
            self.add(op, target, median(on[0]), alt_name, median(off[0]),
                     0.5, median(on[1]), None, median(off[1]), max(on[3]),
                     note="bytes from the server (TLS records included): "
                     "%d compressed, %d without (%.2f); each run, "
                     "compressed: %s; without: %s" % (
                         median(on[2]), median(off[2]),
                         median(on[2]) / median(off[2]),
                         ", ".join("%.2f s" % w for w in on[0]),
                         ", ".join("%.2f s" % w for w in off[0])))
        except (NA, RuntimeError, OSError) as e:
            self.na(op, target, str(e), alt_name)

    # --- prefetch -------------------------------------------------------------

    def inbox(self):
        """A plaintext imaplib connection to Dovecot, past the proxies,
        with INBOX selected read-only, and the SELECT's count."""
        import imaplib
        c = imaplib.IMAP4("127.0.0.1", int(self.env["MFS_IMAP_PORT"]))
        c.login("alice", self.env["MFS_PASS"])
        typ, data = c.select("INBOX", readonly=True)
        if typ != "OK":
            c.logout()
            raise NA("SELECT INBOX: %r" % data)
        return c, int(data[0])

    def inbox_count(self):
        """How many messages INBOX holds, asked of Dovecot directly."""
        c, count = self.inbox()
        c.logout()
        return count

    def inbox_bytes(self):
        """The sizes of INBOX's messages summed, asked of Dovecot directly."""
        c, _ = self.inbox()
        _, data = c.uid("FETCH", "1:*", "(RFC822.SIZE)")
        c.logout()
        return sum(int(m.group(1)) for m in
                   (re.search(rb"RFC822\.SIZE (\d+)", d) for d in data
                    if isinstance(d, bytes)) if m)

    def mbsync_first(self):
        """A first full sync of INBOX into an empty maildir, each run."""
        walls, rts = [], []
        for i in range(RUNS):
            local = os.path.join(self.dir, "mbsync-first-%d" % i)
            os.makedirs(local)
            cfg = os.path.join(self.dir, "mbsyncrc-first-%d" % i)
            with open(cfg, "w") as f:
                f.write("IMAPAccount b\nHost localhost\nPort %d\n"
                        "User alice\nPassCmd \"cat %s\"\nSSLType IMAPS\n"
                        "CertificateFile %s\n\nIMAPStore r\nAccount b\n\n"
                        "MaildirStore l\nPath %s/\nInbox %s/INBOX\n\n"
                        "Channel b\nFar :r:\nNear :l:\nPatterns INBOX\n"
                        "Create Near\nSyncState *\n" % (
                            self.imaps.port, self.alice_pass, self.ca,
                            local, local))
            self.imaps.reset()
            walls.append(run_timed(["mbsync", "-q", "-c", cfg, "-a"],
                                   timeout=1800)[0])
            rts.append(self.imaps.round_trips())
            shutil.rmtree(local, ignore_errors=True)
        return median(walls), median(rts)

    def prefetch_row(self):
        """prefetch = INBOX on a fresh mount: from the start of mailfs
        until the cache holds every message of INBOX, against mbsync's
        first full sync of INBOX."""
        op = "prefetch of INBOX (%d msgs), fresh cache" % MESSAGES
        target = "≤ 1.0× mbsync first full sync"
        alt_name = "mbsync first full sync of INBOX"
        total = self.inbox_bytes()
        mb_wall, mb_rts = self.mbsync_first()
        walls, rts, hwms = [], [], []
        try:
            for _ in range(RUNS):
                cfg = self.config()
                with open(cfg, "a") as f:
                    f.write("prefetch = INBOX\n")
                self.imaps.reset()
                with Mailfs(self, cfg) as m:
                    status = os.path.join(m.path, ".mailfs", "status")
                    deadline = time.monotonic() + 1800
                    have = 0
                    while have < total:
                        if time.monotonic() > deadline:
                            raise NA("prefetched %d of %d bytes in 30 min"
                                     % (have, total))
                        with open(status) as f:
                            have = int(re.search(r"^cache: (\d+)",
                                                 f.read(), re.M).group(1))
                        time.sleep(0.05)
                    walls.append(time.monotonic() - m.t0)
                    rts.append(self.imaps.round_trips())
                    hwms.append(m.hwm())
            self.cmd("mailfs -f -o config=CONFIG bench MNT (prefetch = "
                     "INBOX) & until the cache holds all of INBOX")
            self.add(op, target, median(walls), alt_name, mb_wall, 1.0,
                     median(rts), None, mb_rts, max(hwms),
                     note="%d bytes" % total)
        except (NA, RuntimeError, OSError) as e:
            self.na(op, target, str(e), alt_name, mb_wall, mb_rts)

    # --- new mail -------------------------------------------------------------

    def new_mail_row(self):
        op = "new mail shows in `ls` (no access meanwhile)"
        target = "≤ 5 s"
        try:
            with Mailfs(self, self.config()) as m:
                inbox = os.path.join(m.path, "INBOX")
                before = len(os.listdir(inbox))
                time.sleep(1)
                self.imaps.reset()
                token = "Newmail %d" % os.getpid()
                msg = ("From: bob@example.test\r\nTo: alice@example.test\r\n"
                       "Subject: %s\r\nDate: %s\r\n\r\nhello\r\n" % (
                           token, time.strftime(
                               "%a, %d %b %Y %H:%M:%S +0000",
                               time.gmtime())))
                ctx = ssl.create_default_context(cafile=self.ca)
                with smtplib.SMTP_SSL("localhost",
                                      int(self.env["MFS_SMTPS_PORT"]),
                                      context=ctx, timeout=30) as s:
                    s.login("bob", self.env["MFS_PASS2"])
                    s.sendmail("bob@example.test", ["alice@example.test"],
                               msg)
                t0 = time.monotonic()
                newdir = os.path.join(self.env["MFS_MAILDIR"], "new")
                delivered = None
                noticed = None
                while time.monotonic() - t0 < 5:
                    if delivered is None and os.listdir(newdir):
                        delivered = time.monotonic() - t0
                    if (delivered is not None and
                            self.imaps.round_trips() > 0):
                        noticed = time.monotonic() - t0
                        break
                    time.sleep(0.01)
                if noticed is not None:
                    time.sleep(0.5)
                names = os.listdir(inbox)
                shown = any(token in n for n in names)
                seen = time.monotonic() - t0
                note = "MTA delivered after %s s; " % (
                    "%.2f" % delivered if delivered is not None else "?")
                if noticed is None:
                    note += ("mailfs sent nothing to the server within "
                             "5 s (no IDLE); ls then %s it by its own "
                             "refresh" % ("showed" if shown else
                                          "did not show"))
                    self.add(op, target, None, met=False, rss=m.hwm(),
                             rts=0, note="not noticed: " + note)
                else:
                    note += "mailfs talked to the server at %.2f s" % (
                        noticed)
                    self.add(op, target, seen if shown else None,
                             met=shown and noticed <= 5, rss=m.hwm(),
                             rts=self.imaps.round_trips(), note=note +
                             ("" if shown else "; ls did not show it"))
                del before
        except (NA, RuntimeError, OSError, smtplib.SMTPException) as e:
            self.na(op, target, str(e))

    # --- report ---------------------------------------------------------------

    def run(self):
        start = time.monotonic()
        self.start()
        log("servers in %s; mailfs from %s" % (self.srv, self.mailfs_mtime))
        steps = [self.listing_rows, self.attach_rows, self.grep_row,
                 self.grep_real_row, self.search_row,
                 self.memory_rows, self.du_row, self.prefetch_row,
                 self.pop3_row,
                 self.new_mail_row, self.outbox_row, self.slowlink_row]
        if ROWS:
            steps = [s for s in steps if re.sub(
                r"_rows?$", "", s.__name__) in ROWS]
        for step in steps:
            t = time.monotonic()
            try:
                step()
            except Exception:
                log("%s failed:\n%s" % (step.__name__,
                                         traceback.format_exc()))
            log("%s took %.1f s" % (step.__name__, time.monotonic() - t))
        self.elapsed = time.monotonic() - start

    def report(self):
        out = os.environ.get("BENCH_OUT", self.dir)
        os.makedirs(out, exist_ok=True)
        head = ("Date: %s. Messages: %d (memory test %d, Real %d), runs: "
                "%d (median), delay: %g ms each way (one round trip = %g "
                "ms). mailfs binary of %s. Bench took %.0f s." % (
                    datetime.datetime.now().isoformat(timespec="minutes"),
                    MESSAGES, MANY, REAL, RUNS, DELAY_MS, 2 * DELAY_MS,
                    self.mailfs_mtime, self.elapsed))
        table = render(self.rows)
        text = head + "\n\n" + table + "\nCommands (MNT the mount point, " \
            "$B the bench directory):\n\n" + "".join(
                "    %s\n" % c for c in self.commands)
        with open(os.path.join(out, "table.md"), "w") as f:
            f.write(text)
        with open(os.path.join(out, "results.json"), "w") as f:
            json.dump(dict(date=head, rows=self.rows, traces=self.traces,
                           commands=self.commands), f, indent=1)
        print(text)
        log("results in %s" % out)


def fmt_s(x):
    if x is None:
        return "—"
    return "%.3f s" % x if x < 10 else "%.1f s" % x


def fmt_mb(x):
    return "—" if not x else "%.1f MB" % (x / MB)


def fmt_row(r):
    return " | ".join(str(c) for c in row_cells(r))


def row_cells(r):
    rts = "—" if r["rts"] is None else "%g" % r["rts"]
    if r["rts_login"] is not None:
        rts += " (%d after login)" % r["rts_login"]
    met = {True: "met", False: "NOT met", None: "—"}[r["met"]]
    mailfs = fmt_s(r["mailfs"])
    if r["note"].startswith("n/a"):
        mailfs, met = r["note"], "—"
    return [r["op"], mailfs, r["alt_name"] or "—", fmt_s(r["alt"]),
            "—" if r["ratio"] is None else "%.2f×" % r["ratio"],
            "—" if r["alt_rts"] is None else "%g" % r["alt_rts"],
            rts, fmt_mb(r["rss"]), r["target"], met]


def render(rows):
    head = ["operation", "mailfs", "alternative", "alt time", "ratio",
            "alt RTs", "mailfs RTs", "mailfs peak RSS", "target", "result"]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]
    notes = []
    for i, r in enumerate(rows):
        lines.append("| " + " | ".join(row_cells(r)) + " |")
        if r["note"] and not r["note"].startswith("n/a"):
            notes.append("- %s: %s" % (r["op"], r["note"]))
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"


def main():
    if os.geteuid() != 0:
        raise SystemExit("bench: run as root (the mail servers need it)")
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    b = Bench()
    try:
        b.run()
    finally:
        b.stop()
    b.report()
    if os.environ.get("BENCH_KEEP") != "1" and "BENCH_OUT" in os.environ:
        shutil.rmtree(b.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
