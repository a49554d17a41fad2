"""A small test runner for the integration tests.

Each tests/integration/test_*.py module may define setup_module(env) and
teardown_module(env), and test_* functions taking the shared Env. A test
passes when it returns, fails on any exception, and is skipped when it
raises Skip. One line per test is printed: PASS, FAIL (with the traceback)
or SKIP (with the reason). Set MAILFS_TESTS=substring to run only the
tests whose name contains it.
"""
import glob
import importlib
import os
import sys
import time
import traceback

import harness


def run_all(directory):
    passed = failed = skipped = 0
    only = os.environ.get("MAILFS_TESTS", "")
    env = None
    try:
        env = harness.Env.start()
    except Exception as e:
        names = []
        for path in sorted(glob.glob(os.path.join(directory, "test_*.py"))):
            mod = importlib.import_module(os.path.basename(path)[:-3])
            names += [n for n in dir(mod) if n.startswith("test_")]
        if isinstance(e, harness.Skip):
            for n in names:
                print("SKIP %s: %s" % (n, e))
            return 0, 0, len(names)
        traceback.print_exc(file=sys.stdout)
        for n in names:
            print("FAIL %s: the test servers did not start" % n)
        return 0, len(names), 0
    try:
        for path in sorted(glob.glob(os.path.join(directory, "test_*.py"))):
            mod = importlib.import_module(os.path.basename(path)[:-3])
            tests = [getattr(mod, n) for n in sorted(dir(mod))
                     if n.startswith("test_") and callable(getattr(mod, n))]
            tests = [t for t in tests
                     if only in "%s.%s" % (mod.__name__, t.__name__)]
            if not tests:
                continue
            if hasattr(mod, "setup_module"):
                try:
                    mod.setup_module(env)
                except Exception:
                    traceback.print_exc()
                    for t in tests:
                        print("FAIL %s.%s: setup failed" % (mod.__name__, t.__name__))
                    failed += len(tests)
                    continue
            for t in tests:
                name = "%s.%s" % (mod.__name__, t.__name__)
                t0 = time.time()
                try:
                    t(env)
                except harness.Skip as e:
                    skipped += 1
                    print("SKIP %s: %s" % (name, e))
                except Exception:
                    failed += 1
                    print("FAIL %s (%.1f s)" % (name, time.time() - t0))
                    traceback.print_exc(file=sys.stdout)
                else:
                    passed += 1
                    print("PASS %s (%.1f s)" % (name, time.time() - t0))
                sys.stdout.flush()
            if hasattr(mod, "teardown_module"):
                name = "%s.teardown_module" % mod.__name__
                try:
                    mod.teardown_module(env)
                except Exception:
                    failed += 1
                    print("FAIL %s" % name)
                    traceback.print_exc(file=sys.stdout)
            for m in harness.Mount.leftover():
                failed += 1
                print("FAIL %s: a mount was left behind: %s" % (mod.__name__, m))
    finally:
        env.stop()
    return passed, failed, skipped
