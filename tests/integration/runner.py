"""A small test runner for the integration tests.

Each tests/integration/test_*.py module may define setup_module(env) and
teardown_module(env), and test_* functions taking the shared Env. A test
passes when it returns, fails on any exception, and is skipped when it
raises Skip. One line per test is printed: PASS, FAIL (with the traceback)
or SKIP (with the reason). Set MAILFS_TESTS=substring to run only the
tests whose name contains it.

run_all(DIR) runs every module in this process against one Env.
`runner.py --worker DIR` is one of the parallel workers of
tests/run_all.py: it starts its own Env (servers of its own) when the
first module comes, reads module names on stdin, one a line, runs each
and ends its output with "@@ done MODULE PASSED FAILED SKIPPED". Modules
that change the machine outside the Env (SYSTEM_MODULES) run under a
lock shared by every run on the machine, so that two of them never
overlap.
"""
import contextlib
import fcntl
import glob
import importlib
import os
import sys
import time
import traceback

import harness

# Modules that change things outside their Env: test_mounting makes
# /sbin/mount.mailfs, /usr/local/bin/mailfs and a test user, and writes
# /etc/fstab. Only one of them runs at a time on this machine.
SYSTEM_MODULES = {"test_mounting"}
SYSTEM_LOCK = "/run/lock/mailfs-tests-system.lock"


def module_names(directory):
    return [os.path.basename(p)[:-3] for p in
            sorted(glob.glob(os.path.join(directory, "test_*.py")))]


def selected_tests(mod):
    only = os.environ.get("MAILFS_TESTS", "")
    tests = [getattr(mod, n) for n in sorted(dir(mod))
             if n.startswith("test_") and callable(getattr(mod, n))]
    return [t for t in tests if only in "%s.%s" % (mod.__name__, t.__name__)]


@contextlib.contextmanager
def system_lock(name):
    """Held while a module of SYSTEM_MODULES runs."""
    if name not in SYSTEM_MODULES:
        yield
        return
    path = SYSTEM_LOCK if os.path.isdir(os.path.dirname(SYSTEM_LOCK)) \
        else "/tmp/mailfs-tests-system.lock"
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def run_module(env, name):
    """Runs the selected tests of module `name` against env, printing one
    line per test. Returns (passed, failed, skipped)."""
    passed = failed = skipped = 0
    mod = importlib.import_module(name)
    tests = selected_tests(mod)
    if not tests:
        return 0, 0, 0
    with system_lock(name):
        if hasattr(mod, "setup_module"):
            try:
                mod.setup_module(env)
            except Exception:
                traceback.print_exc(file=sys.stdout)
                for t in tests:
                    print("FAIL %s.%s: setup failed" % (name, t.__name__))
                return 0, len(tests), 0
        for t in tests:
            tname = "%s.%s" % (name, t.__name__)
            t0 = time.time()
            try:
                t(env)
            except harness.Skip as e:
                skipped += 1
                print("SKIP %s: %s" % (tname, e))
            except Exception:
                failed += 1
                print("FAIL %s (%.1f s)" % (tname, time.time() - t0))
                traceback.print_exc(file=sys.stdout)
            else:
                passed += 1
                print("PASS %s (%.1f s)" % (tname, time.time() - t0))
            sys.stdout.flush()
        if hasattr(mod, "teardown_module"):
            try:
                mod.teardown_module(env)
            except Exception:
                failed += 1
                print("FAIL %s.teardown_module" % name)
                traceback.print_exc(file=sys.stdout)
        for m in harness.Mount.leftover():
            failed += 1
            print("FAIL %s: a mount was left behind: %s" % (name, m))
    return passed, failed, skipped


def no_env(name, e):
    """Every selected test of module `name` skipped (e is Skip) or failed
    (the servers did not start)."""
    tests = selected_tests(importlib.import_module(name))
    for t in tests:
        if isinstance(e, harness.Skip):
            print("SKIP %s.%s: %s" % (name, t.__name__, e))
        else:
            print("FAIL %s.%s: the test servers did not start" %
                  (name, t.__name__))
    if isinstance(e, harness.Skip):
        return 0, 0, len(tests)
    return 0, len(tests), 0


def start_env():
    """(Env, None), or (None, the exception) with its traceback printed
    unless it is Skip."""
    try:
        return harness.Env.start(), None
    except Exception as e:
        if not isinstance(e, harness.Skip):
            traceback.print_exc(file=sys.stdout)
        return None, e


def run_all(directory):
    """Every module, one after another, against one Env."""
    sys.path.insert(0, directory)
    names = [n for n in module_names(directory)
             if selected_tests(importlib.import_module(n))]
    passed = failed = skipped = 0
    if not names:
        return 0, 0, 0
    env, err = start_env()
    try:
        for name in names:
            if env is None:
                p, f, s = no_env(name, err)
            else:
                p, f, s = run_module(env, name)
            passed, failed, skipped = passed + p, failed + f, skipped + s
    finally:
        if env is not None:
            env.stop()
    return passed, failed, skipped


def worker(directory):
    """The loop of `runner.py --worker DIR` (see the module comment)."""
    sys.path.insert(0, directory)
    env = err = None
    try:
        for line in sys.stdin:
            name = line.strip()
            if not name:
                continue
            mod = importlib.import_module(name)
            if selected_tests(mod) and env is None and err is None:
                env, err = start_env()
            if env is None and err is not None:
                p, f, s = no_env(name, err)
            else:
                p, f, s = run_module(env, name)
            print("@@ done %s %d %d %d" % (name, p, f, s))
            sys.stdout.flush()
    finally:
        if env is not None:
            env.stop()
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"] and len(sys.argv) == 3:
        sys.exit(worker(sys.argv[2]))
    sys.exit("usage: runner.py --worker DIR")
