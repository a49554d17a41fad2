#!/usr/bin/python3
"""Runs every test of mailfs and prints one closing line:

    N passed, N failed[, N skipped]

    run_all.py --pass NAME [--build-first CMD] [--build CMD] MAILFS
               UNIT_TEST... [--pass ...]

Each pass runs its unit tests, GoogleTest binaries whose results are read
from the JSON report each writes, and the integration tests (the test_*
functions of tests/integration/test_*.py, run against real servers that
tests/integration/harness.py starts) with MAILFS_BIN set to the pass's
mailfs binary. `make test` runs two passes: the normal build, and the build
with AddressSanitizer and UndefinedBehaviorSanitizer. The closing line
counts every test of every pass. Exit status: 0 when nothing failed.

Everything runs at once, as far as it can: the tests mostly wait for
servers, timeouts and mailfs, not for the processor.

- Unit test binaries (and the fuzz targets' seed replays, *_replay, one
  test each) run MAILFS_UNIT_JOBS at a time (default 3), the longest
  first, from both passes.
- The integration modules of a pass are shared out among
  MAILFS_TEST_WORKERS worker processes (default 3; runner.py --worker)
  by their usual times (MODULE_SECONDS), the same way every run. Each
  worker has servers of its own (one Env), and runs its modules one after
  another against them in alphabetical order, as a single run did: no two
  modules that run at the same time share a server, and a module only
  follows modules that it followed in a run of all of them.
- A pass given --build CMD runs CMD (a shell command, e.g. the make of
  the sanitizer build) while the other passes test, and starts its own
  tests when CMD has succeeded. A failed CMD counts as one failure. With
  --build-first FIRST too, FIRST (the make of the pass's mailfs, and of
  unit tests that take long) runs before CMD, and the pass's integration
  tests, and its unit tests that FIRST names, start as soon as it has
  succeeded, while CMD builds the rest.

The output stays one line per test: each unit binary and each module is
printed in one piece when it ends, under a line naming its pass and its
time, so that the pieces of the passes do not mix. MAILFS_TEST_WORKERS=1
MAILFS_UNIT_JOBS=1 gives the order of a run one thing at a time.
"""
import collections
import importlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
INTEGRATION = os.path.join(HERE, "integration")
sys.path.insert(0, INTEGRATION)

# Seconds each takes on the 2-core machine, for the order only (longest
# first); anything not named here counts as DEFAULT_SECONDS.
DEFAULT_SECONDS = 10
UNIT_SECONDS = {"spool_test": 50, "smtp_test": 34, "imap_test": 26,
                "mime_test": 24, "pop3_test": 17, "tls_test": 6,
                "config_test": 3}
MODULE_SECONDS = {"test_writes": 55, "test_mime": 45, "test_imap": 45,
                  "test_faults": 35, "test_outbox": 23,
                  "test_imap_writes": 18, "test_security": 13,
                  "test_server_rev1": 12, "test_server_prefix": 10,
                  "test_pop3": 10, "test_offline": 7, "test_search": 6,
                  "test_mounting": 3, "test_warm": 2}

OUT = threading.Lock()


def emit(lines):
    """Prints lines in one piece."""
    with OUT:
        sys.stdout.write("".join(l if l.endswith("\n") else l + "\n"
                                 for l in lines))
        sys.stdout.flush()


class Pass:
    def __init__(self, name, mailfs, units, build, first=None):
        self.name, self.mailfs, self.units, self.build = \
            name, mailfs, units, build
        self.first = first
        self.counts = {"unit": [0, 0, 0], "integration": [0, 0, 0]}
        self.failures = []
        self.ready = threading.Event()  # the build is done
        self.usable = build is None     # ... and succeeded
        # mailfs is built (by first, or with the rest)
        self.mailfs_ready = threading.Event()
        self.mailfs_usable = build is None
        self.lock = threading.Lock()
        self.shares = []  # the modules of each worker
        if build is None:
            self.ready.set()
            self.mailfs_ready.set()

    def add(self, kind, p, f, s, failed_names=()):
        with self.lock:
            c = self.counts[kind]
            c[0], c[1], c[2] = c[0] + p, c[1] + f, c[2] + s
            self.failures += list(failed_names)


# --- the build of a pass ------------------------------------------------

def build_step(ps, cmd, what, t0):
    """Runs cmd; True when it succeeded, else counts one failure."""
    with tempfile.TemporaryFile() as log:
        rc = subprocess.call(cmd, shell=True, stdout=log,
                             stderr=subprocess.STDOUT)
        log.seek(0)
        out = log.read().decode("utf-8", "replace").splitlines()
    if rc == 0:
        emit(["[%s] %s: done (%.0f s)" % (ps.name, what, time.time() - t0)])
        return True
    ps.add("unit", 0, 1, 0, [what])
    emit(out[-60:] + ["FAIL [%s] %s: `%s` exited %d" % (ps.name, what, cmd,
                                                       rc)])
    return False


def run_build(ps):
    t0 = time.time()
    if ps.first is not None:
        ps.mailfs_usable = build_step(ps, ps.first, "build of mailfs", t0)
        ps.mailfs_ready.set()
        if not ps.mailfs_usable:
            ps.ready.set()
            return
    ps.usable = build_step(ps, ps.build, "build", t0)
    if ps.first is None:
        ps.mailfs_usable = ps.usable
        ps.mailfs_ready.set()
    ps.ready.set()


# --- unit tests ---------------------------------------------------------

def run_replay(ps, binary):
    """Replays a fuzz target's seed corpus (tests/fuzz/README.md): one
    test, PASS or FAIL."""
    name = os.path.basename(binary)[:-len("_replay")]
    dirs = [os.path.join(HERE, "fuzz", name + "-seeds")]
    if name == "mime":
        dirs.append(os.path.join(HERE, "mime-corpus"))
    t0 = time.time()
    proc = subprocess.run([binary] + [d for d in dirs if os.path.isdir(d)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=300)
    head = "[%s] fuzz %s (%.1f s)" % (ps.name, name, time.time() - t0)
    if proc.returncode != 0:
        ps.add("unit", 0, 1, 0, ["fuzz " + name])
        emit([head, proc.stdout.decode("utf-8", "replace")[-4000:],
              "FAIL fuzz %s: seed replay exited %d" % (name, proc.returncode)])
    else:
        ps.add("unit", 1, 0, 0)
        emit([head, "PASS fuzz %s: seeds replayed" % name])


def run_unit(ps, binary):
    """One GoogleTest binary; prints its results in one piece."""
    if binary.endswith("_replay"):
        return run_replay(ps, binary)
    lines, failed_names = [], []
    passed = failed = skipped = 0
    t0 = time.time()
    with tempfile.NamedTemporaryFile(suffix=".json") as report:
        proc = subprocess.run(
            [binary, "--gtest_brief=1", "--gtest_output=json:" + report.name],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
        out = proc.stdout.decode("utf-8", "replace")
        try:
            with open(report.name) as f:
                data = json.load(f)
        except (OSError, ValueError):
            data = None
    base = os.path.basename(binary)
    if data is None:
        lines += [out, "FAIL %s: no report (exit %d)" % (binary,
                                                          proc.returncode)]
        failed += 1
        failed_names.append(base)
    else:
        for suite in data.get("testsuites", []):
            for t in suite.get("testsuite", []):
                name = "%s.%s" % (suite["name"], t["name"])
                if t.get("result") == "SKIPPED" or t.get("status") == "NOTRUN":
                    skipped += 1
                    lines.append("SKIP unit %s" % name)
                elif t.get("failures"):
                    failed += 1
                    failed_names.append(name)
                    lines.append("FAIL unit %s" % name)
                    for fl in t["failures"]:
                        lines.append("    " + fl.get("failure", "")
                                     .replace("\n", "\n    "))
                else:
                    passed += 1
        if proc.returncode != 0 and not failed:
            lines += [out, "FAIL %s exited %d" % (binary, proc.returncode)]
            failed += 1
            failed_names.append(base)
    ps.add("unit", passed, failed, skipped, failed_names)
    emit(["[%s] unit %s: %d passed, %d failed, %d skipped (%.1f s)" %
          (ps.name, base, passed, failed, skipped, time.time() - t0)] + lines)


def runnable(ps, binary):
    """Whether unit test binary of pass ps is built: by the whole build,
    or by its first step when that names it."""
    return ps.ready.is_set() or (
        ps.mailfs_ready.is_set() and ps.first is not None and
        binary in ps.first.split())


def unit_runner(jobs, cond):
    """Takes the first unit job whose pass is built, until none is left."""
    while True:
        with cond:
            while True:
                if not jobs:
                    return
                job = next((j for j in jobs if runnable(*j)), None)
                if job:
                    jobs.remove(job)
                    break
                cond.wait(1)
        ps, binary = job
        if ps.usable or (ps.mailfs_usable and not ps.ready.is_set()):
            try:
                run_unit(ps, binary)
            except Exception as e:
                ps.add("unit", 0, 1, 0, [binary])
                emit(["FAIL [%s] unit %s: %r" % (ps.name, binary, e)])


# --- integration tests --------------------------------------------------

def module_tests(name):
    """The selected test names of module `name` (MAILFS_TESTS)."""
    import runner
    mod = importlib.import_module(name)
    return ["%s.%s" % (name, t.__name__) for t in runner.selected_tests(mod)]


class Worker:
    """One `runner.py --worker` process of a pass, started when it is
    first given a module."""

    def __init__(self, ps, number):
        self.ps, self.number, self.proc = ps, number, None

    def start(self):
        env = dict(os.environ, MAILFS_BIN=self.ps.mailfs,
                   PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(INTEGRATION, "runner.py"),
             "--worker", INTEGRATION], env=env, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def run(self, name, tests):
        """Runs one module; returns (passed, failed, skipped, lines)."""
        if self.proc is None:
            self.start()
        t0 = time.time()
        self.proc.stdin.write((name + "\n").encode())
        self.proc.stdin.flush()
        lines, counts = [], None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace")
            if line.startswith("@@ done "):
                counts = tuple(int(x) for x in line.split()[3:6])
                break
            lines.append(line)
        took = time.time() - t0
        if counts is None:  # the worker died: what did not end failed
            rc = self.proc.wait()
            self.proc = None
            seen = {l.split()[1] for l in lines
                    if l.split()[:1] in (["PASS"], ["FAIL"], ["SKIP"])
                    and len(l.split()) > 1}
            seen = {s.rstrip(":") for s in seen}
            lost = [t for t in tests if t not in seen]
            for t in lost:
                lines.append("FAIL %s: the worker exited (status %s) before "
                             "it ended\n" % (t, rc))
            counts = (sum(l.startswith("PASS ") for l in lines),
                      sum(l.startswith("FAIL ") for l in lines),
                      sum(l.startswith("SKIP ") for l in lines))
        return counts + (lines, took)

    def stop(self):
        if self.proc is None:
            return []
        self.proc.stdin.close()
        rest = self.proc.stdout.read().decode("utf-8", "replace")
        self.proc.wait()
        return [l for l in rest.splitlines() if l.strip()]


def share_out(modules, n):
    """n lists of modules: the longest first, each to the list with the
    least time so far; each list then in alphabetical order, so that a
    module only ever follows modules it also followed in a run of all
    of them one after another (a module may leave mail behind)."""
    shares = [[] for _ in range(n)]
    load = [0] * n
    for m in sorted(modules, key=lambda m: -MODULE_SECONDS.get(
            m[0], DEFAULT_SECONDS)):
        i = load.index(min(load))
        shares[i].append(m)
        load[i] += MODULE_SECONDS.get(m[0], DEFAULT_SECONDS)
    return [sorted(sh) for sh in shares if sh]


def integration_worker(ps, number, share):
    ps.mailfs_ready.wait()
    if not ps.mailfs_usable:
        return
    w = Worker(ps, number)
    try:
        for name, tests in share:
            p, f, s, lines, took = w.run(name, tests)
            failed = [l.split()[1].rstrip(":") for l in lines
                      if l.startswith("FAIL ") and len(l.split()) > 1]
            ps.add("integration", p, f, s, failed)
            emit(["[%s] %s: %d passed, %d failed, %d skipped (%.1f s, "
                  "worker %d)" % (ps.name, name, p, f, s, took, number)]
                 + lines)
    finally:
        rest = w.stop()
        if rest:
            emit(["[%s] worker %d, at its end:" % (ps.name, number)] + rest)


# --- the command line ---------------------------------------------------

def parse_passes(argv):
    """[Pass] from the command line."""
    passes, cur = [], None
    words = list(argv)
    while words:
        word = words.pop(0)
        if word == "--pass":
            cur = {"name": None, "build": None, "first": None,
                   "mailfs": None, "units": []}
            passes.append(cur)
        elif cur is None:
            raise SystemExit(__doc__)
        elif cur["name"] is None:
            cur["name"] = word
        elif word == "--build" and cur["mailfs"] is None and words:
            cur["build"] = words.pop(0)
        elif word == "--build-first" and cur["mailfs"] is None and words:
            cur["first"] = words.pop(0)
        elif cur["mailfs"] is None:
            cur["mailfs"] = os.path.abspath(word)
        else:
            cur["units"].append(word)
    if not passes or any(p["mailfs"] is None or
                         (p["first"] is not None and p["build"] is None)
                         for p in passes):
        raise SystemExit(__doc__)
    return [Pass(p["name"], p["mailfs"], p["units"], p["build"], p["first"])
            for p in passes]


def main():
    start = time.time()
    passes = parse_passes(sys.argv[1:])
    unit_jobs = int(os.environ.get("MAILFS_UNIT_JOBS", "3"))
    workers = int(os.environ.get("MAILFS_TEST_WORKERS", "3"))
    for ps in passes:
        emit(["== %s pass: %s ==" % (ps.name, ps.mailfs)])

    import runner
    import traceback
    modules = []
    for name in runner.module_names(INTEGRATION):
        try:
            tests = module_tests(name)
        except Exception:
            for ps in passes:
                ps.add("integration", 0, 1, 0, [name])
            emit([traceback.format_exc(), "FAIL %s: cannot be imported" % name])
            continue
        if tests:
            modules.append((name, tests))
    for ps in passes:
        ps.shares = share_out(modules, max(1, workers))

    threads = []
    for ps in passes:
        if ps.build:
            threads.append(threading.Thread(target=run_build, args=(ps,)))
    jobs = []
    for ps in passes:
        jobs += sorted(((ps, b) for b in ps.units), key=lambda j:
                       -UNIT_SECONDS.get(os.path.basename(j[1]), 1))
    cond = threading.Condition()
    for _ in range(max(1, unit_jobs)):
        threads.append(threading.Thread(target=unit_runner,
                                        args=(jobs, cond)))
    for ps in passes:
        for i, share in enumerate(ps.shares):
            threads.append(threading.Thread(target=integration_worker,
                                            args=(ps, i + 1, share)))
    for t in threads:
        t.daemon = True
        t.start()
    for t in threads:
        t.join()

    passed = failed = skipped = 0
    summary = []
    for ps in passes:
        for kind in ("unit", "integration"):
            p, f, s = ps.counts[kind]
            summary.append("%s %s tests: %d passed, %d failed, %d skipped" %
                           (ps.name, kind, p, f, s))
            passed, failed, skipped = passed + p, failed + f, skipped + s
    for ps in passes:
        for name in ps.failures:
            summary.append("failed in the %s pass: %s" % (ps.name, name))
    summary.append("wall time: %.0f s" % (time.time() - start))
    line = "%d passed, %d failed" % (passed, failed)
    if skipped:
        line += ", %d skipped" % skipped
    emit(summary + [line])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
