#!/usr/bin/python3
"""Put sample messages into alice's mailboxes: populate.py ENV SAMPLEDIR

ENV is the env file written by "mailservers.sh start".  SAMPLEDIR holds
RFC 5322 .eml files and a MANIFEST with one "folder<TAB>file<TAB>flags"
line per message (folder in UTF-8 with "/" as separator, flags comma
separated or "-").  Folders are created as needed (names sent in modified
UTF-7), and each message is APPENDed with CRLF line endings, its flags and
the date of its Date header as internal date.
"""
import base64
import email.utils
import imaplib
import os
import ssl
import sys


def load_env(path):
    env = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                key, _, value = line.partition("=")
                env[key] = value
    return env


def mutf7_encode(name):
    """Encode a mailbox name in IMAP modified UTF-7 (RFC 3501 5.1.3)."""
    out = []
    pending = []

    def flush():
        if pending:
            raw = "".join(pending).encode("utf-16-be")
            b64 = base64.b64encode(raw).decode("ascii").rstrip("=")
            out.append("&" + b64.replace("/", ",") + "-")
            pending.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7e:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    flush()
    return "".join(out)


def quote(name):
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def crlf(data):
    data = data.replace(b"\r\n", b"\n")
    return data.replace(b"\n", b"\r\n")


def check(typ, data, what):
    if typ != "OK":
        raise SystemExit("populate: %s failed: %r" % (what, data))


def read_manifest(sample_dir):
    entries = []
    with open(os.path.join(sample_dir, "MANIFEST"), encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line or line.startswith("#"):
                continue
            folder, name, flags = line.split("\t")
            flags = "" if flags == "-" else " ".join(flags.split(","))
            entries.append((folder, name, flags))
    return entries


def ensure_folder(m, folder, created):
    parts = folder.split("/")
    for i in range(1, len(parts) + 1):
        path = "/".join(parts[:i])
        if path.upper() == "INBOX" or path in created:
            continue
        created.add(path)
        typ, data = m.list('""', quote(mutf7_encode(path)))
        if data and data[0] is not None:
            continue
        check(*m.create(quote(mutf7_encode(path))), "CREATE " + path)
        m.subscribe(quote(mutf7_encode(path)))


def main():
    if len(sys.argv) != 3:
        raise SystemExit("usage: populate.py ENV SAMPLEDIR")
    env = load_env(sys.argv[1])
    sample_dir = sys.argv[2]
    ctx = ssl.create_default_context(cafile=env["MFS_CA"])
    m = imaplib.IMAP4_SSL("localhost", int(env["MFS_IMAPS_PORT"]),
                          ssl_context=ctx)
    m.login(env["MFS_USER"], env["MFS_PASS"])
    created = set()
    count = 0
    for folder, name, flags in read_manifest(sample_dir):
        ensure_folder(m, folder, created)
        with open(os.path.join(sample_dir, name), "rb") as f:
            data = crlf(f.read())
        msg = email.message_from_bytes(data)
        when = email.utils.parsedate_to_datetime(msg["Date"])
        typ, resp = m.append(quote(mutf7_encode(folder)),
                             "(%s)" % flags if flags else None,
                             imaplib.Time2Internaldate(when), data)
        check(typ, resp, "APPEND %s to %s" % (name, folder))
        count += 1
    m.logout()
    print("populate: appended %d messages for %s" % (count, env["MFS_USER"]))


if __name__ == "__main__":
    main()
