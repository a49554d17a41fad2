"""The decoded message tree through the mount: every corpus message is
appended to a folder, and its message directory (body.txt, body.html,
parts/*/content, attachments) is checked against Python's email package
by tests/integration/mime_reference.py."""
import glob
import os
import re
import subprocess

from harness import check, eq

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "..", "mime-corpus")
M = None
FILES = []


def setup_module(env):
    global M, FILES
    c = env.imap()
    c.create("Corpus")
    for path in sorted(glob.glob(os.path.join(CORPUS, "*.eml"))):
        with open(path, "rb") as f:
            raw = f.read()
        if not raw.strip():
            continue  # IMAP servers refuse an empty message
        # IMAP stores CRLF lines; give the server what it will hold
        raw = re.sub(rb"(?<!\r)\n", b"\r\n", raw)
        typ, data = c.append("Corpus", None, None, raw)
        eq(typ, "OK", "APPEND %s" % path)
        FILES.append(path)
    c.logout()
    check(len(FILES) >= 40, "corpus of %d messages" % len(FILES))
    M = env.mount()


def teardown_module(env):
    if M is not None:
        M.umount()


def server_raw_by_uid(env):
    c = env.imap()
    c.select("Corpus", readonly=True)
    typ, data = c.uid("FETCH", "1:*", "(UID BODY.PEEK[])")
    c.logout()
    out = {}
    for item in data:
        if isinstance(item, tuple):
            uid = int(re.search(rb"UID (\d+)", item[0]).group(1))
            out[uid] = item[1]
    return out


def test_every_corpus_message_decodes_like_python(env):
    raw = server_raw_by_uid(env)
    folder = os.path.join(M.path, "Corpus")
    dirs = [d for d in os.listdir(folder) if "\u00b7" in d]
    eq(len(dirs), len(FILES), "one directory per corpus message")
    failures = []
    for d in dirs:
        uid = int(d.rsplit("\u00b7", 1)[1])
        tmp = os.path.join(env.dir, "corpus-%d.eml" % uid)
        with open(tmp, "wb") as f:
            f.write(raw[uid])
        r = subprocess.run(["/usr/bin/python3", os.path.join(HERE, "mime_reference.py"),
                            "check", tmp, os.path.join(folder, d)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
        if r.returncode != 0:
            failures.append("%s: %s" % (d, r.stdout.decode()[-2000:]))
    check(not failures, "\n".join(failures))


def test_sizes_are_exact(env):
    folder = os.path.join(M.path, "Corpus")
    n = 0
    for d in os.listdir(folder):
        for root, dirs, files in os.walk(os.path.join(folder, d)):
            for name in files:
                p = os.path.join(root, name)
                with open(p, "rb") as f:
                    data = f.read()
                eq(os.stat(p).st_size, len(data), "st_size of %s" % p)
                n += 1
    check(n > 200, "checked %d files" % n)


def test_hostile_names_stay_inside(env):
    folder = os.path.join(M.path, "Corpus")
    for d in os.listdir(folder):
        for root, dirs, files in os.walk(os.path.join(folder, d)):
            for name in dirs + files:
                check(name not in (".", "..") and "/" not in name, repr(name))
                check(len(name.encode()) <= 255, repr(name))
                check(not any(0x202a <= ord(ch) <= 0x202e or ord(ch) < 32 for ch in name),
                      "control or bidi character in %r" % name)
            check(os.path.realpath(root).startswith(os.path.realpath(folder)), root)
