"""The decoded message tree through the mount: every corpus message is
appended to a folder, and its message directory (body.txt, body.html,
parts/*/content, attachments) is checked against Python's email package
by tests/integration/mime_reference.py."""
import base64
import glob
import os
import quopri
import re
import subprocess

from harness import CountingProxy, check, eq

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


def large_messages():
    """Messages over 1 MiB, which the mount reads lazily (a skeleton from
    BODYSTRUCTURE, large parts fetched on their own): nested multiparts, a
    forwarded message with a large attachment, large quoted-printable and
    8-bit text, and a message that is one large base64 part."""
    import random
    rnd = random.Random(7)
    blob = rnd.randbytes(1200000)
    b64 = base64.encodebytes(blob).decode().replace("\n", "\r\n")
    qp_line = "Caf\u00e9 cr\u00e8me, " * 10
    qp = quopri.encodestring(((qp_line + "\n") * 9000).encode("utf-8"))
    qp = qp.decode().replace("\n", "\r\n")
    latin = ("na\xefve r\xe9sum\xe9 " * 8 + "\r\n") * 2000
    inner = ("From: Inner <inner@example.test>\r\n"
             "Subject: =?utf-8?q?forwarded_=C3=A9?=\r\n"
             "MIME-Version: 1.0\r\n"
             "Content-Type: multipart/mixed; boundary=in\r\n\r\n"
             "--in\r\nContent-Type: text/plain\r\n\r\nInner text.\r\n"
             "--in\r\nContent-Type: image/png; name=photo.png\r\n"
             "Content-Transfer-Encoding: base64\r\n\r\n" + b64 +
             "--in--\r\n")
    head = ("From: Large <large@example.test>\r\nTo: alice@example.test\r\n"
            "Date: Wed, 15 Nov 2023 09:00:00 +0000\r\nMIME-Version: 1.0\r\n")
    one = (head + "Subject: nested large\r\n"
           "Content-Type: multipart/mixed; boundary=out\r\n\r\n"
           "preamble\r\n--out\r\n"
           "Content-Type: multipart/alternative; boundary=alt\r\n\r\n"
           "--alt\r\nContent-Type: text/plain; charset=utf-8\r\n"
           "Content-Transfer-Encoding: quoted-printable\r\n\r\n" + qp +
           "\r\n--alt\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
           "<p>Caf\u00e9</p>\r\n--alt--\r\n"
           "\r\n--out\r\nContent-Type: message/rfc822\r\n\r\n" + inner +
           "\r\n--out\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
           "Content-Disposition: attachment; filename=latin.txt\r\n"
           "Content-Transfer-Encoding: 8bit\r\n\r\n" + latin +
           "\r\n--out\r\nContent-Type: application/octet-stream\r\n"
           "Content-Disposition: attachment; filename*=utf-8''%C3%A9t%C3%A9.bin\r\n"
           "Content-Transfer-Encoding: base64\r\n\r\n" + b64 +
           "--out--\r\nepilogue\r\n")
    two = (head + "Subject: one large part\r\n"
           "Content-Type: application/pdf; name=report.pdf\r\n"
           "Content-Transfer-Encoding: base64\r\n\r\n" + b64)
    three = (head + "Subject: large text\r\n"
             "Content-Type: multipart/alternative; boundary=a\r\n\r\n"
             "--a\r\nContent-Type: text/plain; charset=utf-8\r\n"
             "Content-Transfer-Encoding: quoted-printable\r\n\r\n" + qp +
             "\r\n--a--\r\n")
    one = one.replace(latin, "\0latin\0").encode("utf-8")
    one = one.replace(b"\0latin\0", latin.encode("iso-8859-1"))
    return [one, two.encode("ascii"), three.encode("ascii")]


def test_large_messages_read_lazily_decode_like_python(env):
    msgs = large_messages()
    c = env.imap()
    c.create("Large")
    for raw in msgs:
        check(len(raw) > 1024 * 1024, "a large message (%d bytes)" % len(raw))
        eq(c.append("Large", None, None, raw)[0], "OK", "APPEND")
    c.logout()
    proxy = CountingProxy(int(env["MFS_IMAP_PORT"]))
    cfg = env.write_config("config-large", {
        "imap": "imap://127.0.0.1:%d" % proxy.port, "tls": "none"})
    failures = []
    try:
        with env.mount(config=cfg) as m:
            folder = os.path.join(m.path, "Large")
            dirs = [d for d in os.listdir(folder) if "\u00b7" in d]
            eq(len(dirs), len(msgs), "one directory per message")
            for d in dirs:
                uid = int(d.rsplit("\u00b7", 1)[1])
                tmp = os.path.join(env.dir, "large-%d.eml" % uid)
                with open(tmp, "wb") as f:
                    f.write(msgs[uid - 1])
                r = subprocess.run(["/usr/bin/python3",
                                    os.path.join(HERE, "mime_reference.py"),
                                    "check", tmp, os.path.join(folder, d)],
                                   stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, timeout=120)
                if r.returncode != 0:
                    failures.append("%s: %s" % (d, r.stdout.decode()[-2000:]))
                for root, _, files in os.walk(os.path.join(folder, d)):
                    for name in files:
                        p = os.path.join(root, name)
                        with open(p, "rb") as f:
                            eq(os.stat(p).st_size, len(f.read()),
                               "st_size of %s" % p)
            # each message's structure asked once, alone or in a batch
            structure = []
            for c in proxy.commands:
                g = re.search(r"UID FETCH ([\d,:]+) \(.*BODYSTRUCTURE", c)
                for part in (g.group(1).split(",") if g else []):
                    lo, _, hi = part.partition(":")
                    structure += range(int(lo), int(hi or lo) + 1)
            eq(sorted(structure), list(range(1, len(msgs) + 1)),
               "a skeleton for each message: %r" %
               [c for c in proxy.commands if "BODYSTRUCTURE" in c])
            holes = sorted(set(re.findall(r"UID FETCH (\d+) \(UID BODY\.PEEK\[([\d.]+)\]\)$",
                                          "\n".join(proxy.commands), re.M)))
            print("holes fetched on their own: %r" % holes)
            # a hole is fetched by section, unless its message came whole
            # before (its message.eml read): then it comes from that, and
            # is not fetched a second time
            whole_at = {}
            for i, c in enumerate(proxy.commands):
                g = re.search(r"UID FETCH (\d+) \(UID BODY\.PEEK\[\]\)$", c)
                if g:
                    whole_at.setdefault(g.group(1), i)
            for i, c in enumerate(proxy.commands):
                g = re.search(r"UID FETCH (\d+) \(UID BODY\.PEEK\[[\d.]+\]\)$",
                              c)
                check(g is None or i < whole_at.get(g.group(1), i + 1),
                      "%s after the message came whole" % c)
            for want in (("1", "2.2"), ("1", "4"), ("2", "1"), ("3", "1")):
                check(want in holes or want[0] in whole_at,
                      "hole %s of message %s fetched by section: %r"
                      % (want[1], want[0], holes))
            check(any(h[0] == "1" for h in holes),
                  "a hole of message 1 fetched by section: %r" % holes)
    finally:
        proxy.close()
    check(not failures, "\n".join(failures))


def decoded_messages():
    """Small bodies in quoted-printable and base64 (decoded in memory at
    each open), a Latin-1 one (converted), and a base64 attachment larger
    than what is decoded in memory (through a cache file)."""
    import random
    head = ("From: Dec <dec@example.test>\r\nTo: alice@example.test\r\n"
            "Date: Thu, 16 Nov 2023 10:00:00 +0000\r\nMIME-Version: 1.0\r\n")
    text = ("Gr\u00fc\u00dfe aus K\u00f6ln \u2014 caf\u00e9 = 3\u20ac, "
            "line %d\n")
    utf8 = "".join(text % i for i in range(300)).encode("utf-8")
    qp = quopri.encodestring(utf8).decode().replace("\n", "\r\n")
    b64 = base64.encodebytes(utf8).decode().replace("\n", "\r\n")
    latin = quopri.encodestring(("na\xefve r\xe9sum\xe9\n" * 200)
                                .encode("iso-8859-1"))
    latin = latin.decode().replace("\n", "\r\n")
    blob = random.Random(3).randbytes(300 * 1024)
    big = base64.encodebytes(blob).decode().replace("\n", "\r\n")
    return [
        (head + "Subject: qp body\r\n"
         "Content-Type: text/plain; charset=utf-8\r\n"
         "Content-Transfer-Encoding: quoted-printable\r\n\r\n" + qp),
        (head + "Subject: base64 body\r\n"
         "Content-Type: text/plain; charset=utf-8\r\n"
         "Content-Transfer-Encoding: base64\r\n\r\n" + b64),
        (head + "Subject: latin-1 body\r\n"
         "Content-Type: text/plain; charset=iso-8859-1\r\n"
         "Content-Transfer-Encoding: quoted-printable\r\n\r\n" + latin),
        (head + "Subject: body and a large attachment\r\n"
         "Content-Type: multipart/mixed; boundary=b\r\n\r\n"
         "--b\r\nContent-Type: text/plain; charset=utf-8\r\n"
         "Content-Transfer-Encoding: base64\r\n\r\n" + b64 +
         "--b\r\nContent-Type: application/octet-stream\r\n"
         "Content-Disposition: attachment; filename=blob.bin\r\n"
         "Content-Transfer-Encoding: base64\r\n\r\n" + big + "--b--\r\n"),
    ]


def test_decoded_files_read_alike_every_way(env):
    """body.txt of quoted-printable and base64 bodies, and a large
    decoded attachment: the bytes of Python's email decoding, their
    st_size, read twice, read while another reader has the file open,
    and again after the cached message files are gone (while mounted,
    and after a remount)."""
    import email
    import email.policy
    import shutil
    import mime_reference
    msgs = [m.encode("ascii") for m in decoded_messages()]
    c = env.imap()
    c.create("Decoded")
    for raw in msgs:
        eq(c.append("Decoded", None, None, raw)[0], "OK", "APPEND")
    c.logout()
    want = {}  # uid -> {file name: bytes}
    for uid, raw in enumerate(msgs, 1):
        exp = mime_reference.expected(
            email.message_from_bytes(raw, policy=email.policy.compat32))
        want[uid] = {"body.txt": bytes.fromhex(exp["body.txt"])}
        for a in exp["attachments"]:
            want[uid][a["filename"]] = bytes.fromhex(a["content"])
    check(len(want[4]["blob.bin"]) > 256 * 1024, "a large attachment")
    cache = os.path.join(env.dir, "cache-decoded")
    cfg = env.write_config("config-decoded", {"cache_dir": cache})

    def read_all(path):
        with open(path, "rb") as f:
            return f.read()

    def check_all(m, when):
        folder = os.path.join(m.path, "Decoded")
        dirs = {int(d.rsplit("\u00b7", 1)[1]): d for d in os.listdir(folder)}
        eq(sorted(dirs), sorted(want), "one directory per message")
        for uid, files in want.items():
            for name, data in files.items():
                p = os.path.join(folder, dirs[uid], name)
                what = "%s of message %d %s" % (name, uid, when)
                eq(os.stat(p).st_size, len(data), "st_size of " + what)
                check(read_all(p) == data, what + " as Python decodes it")
                check(read_all(p) == data, what + ", read again")
                with open(p, "rb") as first:
                    head = first.read(100)
                    check(read_all(p) == data,
                          what + " while another reader has it open")
                    check(head + first.read() == data,
                          what + ", the first reader's bytes")

    with env.mount(config=cfg) as m:
        check_all(m, "at the first read")
        shutil.rmtree(os.path.join(cache, "m"))
        check_all(m, "after the cache files went")
    shutil.rmtree(os.path.join(cache, "m"), ignore_errors=True)
    with env.mount(config=cfg) as m:
        check_all(m, "after a remount without the cache")
