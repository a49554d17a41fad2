#!/usr/bin/python3
"""Runs every test of mailfs and prints one closing line:

    N passed, N failed[, N skipped]

Unit tests are GoogleTest binaries (given on the command line); their
results are read from the JSON report each writes. Integration tests are the
test_* functions of tests/integration/test_*.py, run against real servers
that tests/integration/harness.py starts. Exit status: 0 when nothing failed.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "integration"))


def run_unit(binaries):
    passed = failed = skipped = 0
    for binary in binaries:
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


def main():
    start = time.time()
    p1, f1, s1 = run_unit(sys.argv[1:])
    print("unit tests: %d passed, %d failed, %d skipped" % (p1, f1, s1))
    import runner
    p2, f2, s2 = runner.run_all(os.path.join(HERE, "integration"))
    print("integration tests: %d passed, %d failed, %d skipped" % (p2, f2, s2))
    print("wall time: %.0f s" % (time.time() - start))
    passed, failed, skipped = p1 + p2, f1 + f2, s1 + s2
    line = "%d passed, %d failed" % (passed, failed)
    if skipped:
        line += ", %d skipped" % skipped
    print(line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
