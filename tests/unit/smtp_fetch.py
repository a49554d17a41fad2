#!/usr/bin/python3
"""Fetch the messages that reached a test mailbox, for smtp_test and spool_test.

usage: smtp_fetch.py ENVFILE USER TOKEN EXPECT OUTDIR [WAIT]

Logs in over IMAPS (user 1 = alice, 2 = bob), waits up to WAIT seconds
(default 30) until at least EXPECT messages in INBOX have a header
X-Test-Id whose value contains TOKEN, then waits one more second (so that
a duplicate would show) and writes each one to OUTDIR/N.eml. Prints the
number found. Exit status 0 even when fewer arrived: the caller compares.
"""
import imaplib
import os
import ssl
import sys
import time


def main():
    envfile, user, token, expect, outdir = sys.argv[1:6]
    wait = float(sys.argv[6]) if len(sys.argv) > 6 else 30.0
    env = {}
    for line in open(envfile):
        if "=" in line:
            k, v = line.rstrip("\n").split("=", 1)
            env[k] = v
    suffix = "" if user == "1" else "2"
    ctx = ssl.create_default_context(cafile=env["MFS_CA"])
    imap = imaplib.IMAP4_SSL("localhost", int(env["MFS_IMAPS_PORT"]),
                             ssl_context=ctx)
    imap.login(env["MFS_USER" + suffix], env["MFS_PASS" + suffix])
    deadline = time.time() + wait
    nums = []
    settled = False
    while True:
        imap.select("INBOX", readonly=True)
        typ, data = imap.search(None, "HEADER", "X-Test-Id", token)
        nums = data[0].split()
        if len(nums) >= int(expect):
            if settled:
                break
            settled = True
            time.sleep(1)
            continue
        if time.time() > deadline:
            break
        time.sleep(0.3)
    os.makedirs(outdir, exist_ok=True)
    for i, n in enumerate(nums):
        typ, data = imap.fetch(n, "(BODY.PEEK[])")
        with open(os.path.join(outdir, "%d.eml" % i), "wb") as f:
            f.write(data[0][1])
    imap.logout()
    print(len(nums))


main()
