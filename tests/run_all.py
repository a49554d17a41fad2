#!/usr/bin/python3
"""Runs every test of mailfs and prints one closing line:

    N passed, N failed[, N skipped]

    run_all.py --pass NAME MAILFS UNIT_TEST... [--pass NAME MAILFS UNIT...]

Each pass runs its unit tests, GoogleTest binaries whose results are read
from the JSON report each writes, then the integration tests (the test_*
functions of tests/integration/test_*.py, run against real servers that
tests/integration/harness.py starts) with MAILFS_BIN set to the pass's
mailfs binary. `make test` runs two passes: the normal build, and the build
with AddressSanitizer and UndefinedBehaviorSanitizer. The closing line
counts every test of every pass. Exit status: 0 when nothing failed.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "integration"))


def run_replay(binary):
    """Replays a fuzz target's seed corpus (tests/fuzz/README.md): one
    test, PASS or FAIL."""
    name = os.path.basename(binary)[:-len("_replay")]
    dirs = [os.path.join(HERE, "fuzz", name + "-seeds")]
    if name == "mime":
        dirs.append(os.path.join(HERE, "mime-corpus"))
    proc = subprocess.run([binary] + [d for d in dirs if os.path.isdir(d)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=300)
    if proc.returncode != 0:
        print(proc.stdout.decode("utf-8", "replace")[-4000:])
        print("FAIL fuzz %s: seed replay exited %d" % (name, proc.returncode))
        return 0, 1, 0
    print("PASS fuzz %s: seeds replayed" % name)
    return 1, 0, 0


def run_unit(binaries):
    passed = failed = skipped = 0
    for binary in binaries:
        if binary.endswith("_replay"):
            p, f, s = run_replay(binary)
            passed, failed, skipped = passed + p, failed + f, skipped + s
            continue
        with tempfile.NamedTemporaryFile(suffix=".json") as report:
            proc = subprocess.run(
                [binary, "--gtest_brief=1",
                 "--gtest_output=json:" + report.name],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                timeout=600)
            out = proc.stdout.decode("utf-8", "replace")
            try:
                with open(report.name) as f:
                    data = json.load(f)
            except (OSError, ValueError):
                data = None
        if data is None:
            print(out)
            print("FAIL %s: no report (exit %d)" % (binary, proc.returncode))
            failed += 1
            continue
        for suite in data.get("testsuites", []):
            for t in suite.get("testsuite", []):
                name = "%s.%s" % (suite["name"], t["name"])
                if t.get("result") == "SKIPPED" or t.get("status") == "NOTRUN":
                    skipped += 1
                    print("SKIP unit %s" % name)
                elif t.get("failures"):
                    failed += 1
                    print("FAIL unit %s" % name)
                    for fl in t["failures"]:
                        print("    " + fl.get("failure", "").replace("\n", "\n    "))
                else:
                    passed += 1
        if proc.returncode != 0 and not any(
                t.get("failures") for s in data.get("testsuites", [])
                for t in s.get("testsuite", [])):
            print(out)
            print("FAIL %s exited %d" % (binary, proc.returncode))
            failed += 1
        print("unit %s: done" % os.path.basename(binary))
    return passed, failed, skipped


def parse_passes(argv):
    """[(name, mailfs, [unit binaries])] from the command line."""
    passes = []
    for word in argv:
        if word == "--pass":
            passes.append([None, None, []])
        elif not passes:
            raise SystemExit("usage: run_all.py --pass NAME MAILFS UNIT...")
        elif passes[-1][0] is None:
            passes[-1][0] = word
        elif passes[-1][1] is None:
            passes[-1][1] = os.path.abspath(word)
        else:
            passes[-1][2].append(word)
    if not passes or any(p[1] is None for p in passes):
        raise SystemExit("usage: run_all.py --pass NAME MAILFS UNIT...")
    return passes


def run_pass(name, mailfs, units):
    """One pass, in a process of its own (the integration modules read
    MAILFS_BIN when imported). Returns (passed, failed, skipped)."""
    env = dict(os.environ, MAILFS_BIN=mailfs)
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__),
                             "--one", name] + units, env=env,
                            stdout=subprocess.PIPE)
    counts = None
    for raw in proc.stdout:
        line = raw.decode("utf-8", "replace")
        if line.startswith("pass counts: "):
            counts = tuple(int(x) for x in line.split()[2:5])
        else:
            sys.stdout.write(line)
            sys.stdout.flush()
    proc.wait()
    if counts is None:
        print("FAIL %s pass: ended without counts (exit %d)" %
              (name, proc.returncode))
        return 0, 1, 0
    return counts


def one_pass(name, units):
    import runner
    print("== %s pass: %s ==" % (name, os.environ["MAILFS_BIN"]))
    p1, f1, s1 = run_unit(units)
    print("%s unit tests: %d passed, %d failed, %d skipped" %
          (name, p1, f1, s1))
    p2, f2, s2 = runner.run_all(os.path.join(HERE, "integration"))
    print("%s integration tests: %d passed, %d failed, %d skipped" %
          (name, p2, f2, s2))
    print("pass counts: %d %d %d" % (p1 + p2, f1 + f2, s1 + s2))
    sys.stdout.flush()
    return 0


def main():
    if sys.argv[1:2] == ["--one"]:
        return one_pass(sys.argv[2], sys.argv[3:])
    start = time.time()
    passed = failed = skipped = 0
    for name, mailfs, units in parse_passes(sys.argv[1:]):
        p, f, s = run_pass(name, mailfs, units)
        passed, failed, skipped = passed + p, failed + f, skipped + s
    print("wall time: %.0f s" % (time.time() - start))
    line = "%d passed, %d failed" % (passed, failed)
    if skipped:
        line += ", %d skipped" % skipped
    print(line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
