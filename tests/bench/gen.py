#!/usr/bin/python3
"""Deterministic benchmark mail, written straight into Dovecot's Maildirs.

    gen.py SERVERS_DIR [--messages 10000] [--many 100000] [--seed 1]

SERVERS_DIR is a directory made by `tests/servers/mailservers.sh start`.
The same seed gives the same bytes. What it makes (alice unless noted):

    INBOX    --messages small messages (varied senders, subjects, dates)
    Attach   one message with a 2,000,000-byte attachment `report.bin`
    Huge     one message of about 50 MB (attachment `huge.bin`)
    Words    1,000 messages; the body of a known subset holds WORD
    Many     --many small messages (the memory test)
    Real     --real messages of a real mailbox's size mix (gen_real)
    bob's INBOX: 1,000 small messages (the POP3 test)

Files are written into cur/ as Maildir++ folders, owned by the `mail` user
as Dovecot requires, with the message date as mtime (Dovecot's INTERNALDATE).
Then every folder is opened and listed once over IMAP, so that Dovecot's
index and cache are built before anything is timed.
"""
import argparse
import base64
import email.header
import email.utils
import imaplib
import os
import pwd
import random
import ssl
import sys
import time

WORD = "quokkaberry"
# Two words of VOCAB in a row: in about one INBOX message in ten.
SEARCH_PHRASE = "urgent deploy"
WORDS_COUNT = 1000
ATTACH_BYTES = 2000000
HUGE_BYTES = 50 * 1000 * 1000
POP3_COUNT = 1000
BASE_DATE = 1735689600  # 2025-01-01 00:00:00 UTC

FIRST = ("Alice Bob Carol Dave Erin Frank Grace Heidi Ivan Judy Mallory "
         "Niaj Olivia Peggy Rupert Sybil Trent Victor Walter Zoë Jürgen "
         "Chloé Søren Łukasz").split()
LAST = ("Smith Jones Müller García Rossi Novak Kim Tanaka Silva Dubois "
        "Nowak Ivanova Olsen Brown Wilson Taylor").split()
DOMAINS = ("example.com example.org mail.example.net corp.example "
           "lists.example.edu").split()
VOCAB = ("budget report meeting quarterly review draft invoice schedule "
         "project update release plan notes minutes travel lunch offsite "
         "contract proposal feedback agenda call question answer status "
         "server backup deploy test results figures summary weekly "
         "design spec issue ticket reminder follow-up urgent").split()


def words(rng, n):
    return " ".join(rng.choice(VOCAB) for _ in range(n))


def sender(rng):
    first, last = rng.choice(FIRST), rng.choice(LAST)
    addr = "%s.%s@%s" % (first.lower(), last.lower(), rng.choice(DOMAINS))
    addr = addr.encode("ascii", "replace").decode().replace("?", "x")
    return email.utils.formataddr((first + " " + last, addr), "utf-8")


def header_block(rng, date, subject, extra=()):
    subj = subject
    if not subject.isascii():
        subj = email.header.Header(subject, "utf-8").encode()
    lines = [
        "From: " + sender(rng),
        "To: Alice <alice@example.test>",
        "Subject: " + subj,
        "Date: " + email.utils.formatdate(date, localtime=False),
        "Message-ID: <%08x.%d@bench.example>" % (rng.getrandbits(32),
                                                 int(date)),
        "MIME-Version: 1.0",
    ]
    lines += list(extra)
    return "\r\n".join(lines) + "\r\n"


def body_lines(rng, n):
    return ["%s." % words(rng, rng.randint(6, 14)).capitalize()
            for _ in range(n)]


def small_message(rng, date, subject=None, body_extra=None):
    """A plain-text message of about 0.5 to 3 KB."""
    subject = subject or words(rng, rng.randint(2, 7)).capitalize()
    if rng.random() < 0.05:
        subject += " — Grüße"
    body = body_lines(rng, rng.randint(3, 30))
    if body_extra is not None:
        body.insert(len(body) // 2, body_extra)
    head = header_block(rng, date, subject, [
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit"])
    return (head + "\r\n" + "\r\n".join(body) + "\r\n").encode("utf-8")


def attachment_message(rng, date, subject, name, size):
    """multipart/mixed: a short text and `size` random bytes in base64."""
    boundary = "=_bench_%08x" % rng.getrandbits(32)
    head = header_block(rng, date, subject, [
        'Content-Type: multipart/mixed; boundary="%s"' % boundary])
    data = rng.randbytes(size)
    b64 = base64.encodebytes(data).replace(b"\n", b"\r\n")
    parts = [
        head.encode(), b"\r\n",
        b"--", boundary.encode(), b"\r\n",
        b"Content-Type: text/plain; charset=us-ascii\r\n\r\n",
        "\r\n".join(body_lines(rng, 5)).encode(), b"\r\n",
        b"--", boundary.encode(), b"\r\n",
        b"Content-Type: application/octet-stream\r\n",
        b'Content-Disposition: attachment; filename="', name.encode(),
        b'"\r\n', b"Content-Transfer-Encoding: base64\r\n\r\n",
        b64,
        b"--", boundary.encode(), b"--\r\n",
    ]
    return b"".join(parts), data


def html_of(lines):
    return ("<html><body>\r\n" + "\r\n".join(
        "<p>%s</p>" % l for l in lines) + "\r\n</body></html>\r\n")


def real_message(rng, date):
    """One message of a real mailbox's mix: mostly 1-10 kB of text or
    multipart/alternative, some HTML only, some with attachments of
    10-400 kB, about 2% of 1.1-2.4 MB."""
    subject = words(rng, rng.randint(2, 7)).capitalize()
    r = rng.random()
    boundary = "=_real_%08x" % rng.getrandbits(32)
    text = body_lines(rng, rng.randint(10, 90))
    if r < 0.45:  # plain text, 1-10 kB
        head = header_block(rng, date, subject, [
            "Content-Type: text/plain; charset=utf-8",
            "Content-Transfer-Encoding: 8bit"])
        return (head + "\r\n" + "\r\n".join(text) + "\r\n").encode()
    if r < 0.50:  # HTML only
        head = header_block(rng, date, subject, [
            "Content-Type: text/html; charset=utf-8",
            "Content-Transfer-Encoding: 8bit"])
        return (head + "\r\n" + html_of(text)).encode()
    alt = ("Content-Type: multipart/alternative; boundary=\"%s-a\"\r\n"
           "\r\n--%s-a\r\nContent-Type: text/plain; charset=utf-8\r\n"
           "\r\n%s\r\n--%s-a\r\nContent-Type: text/html; charset=utf-8"
           "\r\n\r\n%s--%s-a--\r\n" % (
               boundary, boundary, "\r\n".join(text), boundary,
               html_of(text), boundary))
    if r < 0.88:  # multipart/alternative
        head = header_block(rng, date, subject, [])
        return (head + alt).encode()
    # with attachments of 10-300 kB (base64: 14-400 kB), or (2%) one of
    # 1.1-2.4 MB once in base64
    if r < 0.98:
        sizes = [rng.randint(10000, 300000)
                 for _ in range(rng.choice((1, 1, 1, 2)))]
    else:
        sizes = [rng.randint(1100000, 2400000) * 57 // 78]
    head = header_block(rng, date, subject, [
        "Content-Type: multipart/mixed; boundary=\"%s\"" % boundary])
    parts = [head.encode(), b"\r\n--", boundary.encode(), b"\r\n",
             alt.encode()]
    for i, size in enumerate(sizes):
        name = "%s-%d.%s" % (rng.choice(VOCAB), i + 1,
                             rng.choice(("pdf", "jpg", "docx", "zip")))
        data = base64.encodebytes(rng.randbytes(size)).replace(b"\n",
                                                               b"\r\n")
        parts += [b"--", boundary.encode(), b"\r\n",
                  b"Content-Type: application/octet-stream; name=\"",
                  name.encode(), b"\"\r\nContent-Disposition: attachment;"
                  b" filename=\"", name.encode(), b"\"\r\n"
                  b"Content-Transfer-Encoding: base64\r\n\r\n", data]
    parts += [b"--", boundary.encode(), b"--\r\n"]
    return b"".join(parts)


def gen_real(md, folder, n, seed):
    """n messages of real_message(); returns their total size."""
    rng = random.Random("%s-%s" % (seed, folder))
    path = md.folder(folder)
    total = 0
    for d in dates(rng, n):
        msg = real_message(rng, d)
        md.add(path, msg, d, flags_for(rng))
        total += len(msg)
    return total


def dates(rng, n, span_days=365):
    """n sorted dates in the year after BASE_DATE."""
    return sorted(BASE_DATE + rng.randint(0, span_days * 86400)
                  for _ in range(n))


class Maildir:
    """A user's Maildir++ root; files become the mail user's."""

    def __init__(self, root):
        self.root = root
        pw = pwd.getpwnam("mail")
        self.uid, self.gid = pw.pw_uid, pw.pw_gid
        self.seq = 0
        self._mkdir(root)

    def _mkdir(self, path):
        if not os.path.isdir(path):
            os.makedirs(path, 0o700, exist_ok=True)
        os.chown(path, self.uid, self.gid)

    def folder(self, name):
        path = self.root if name == "INBOX" else os.path.join(
            self.root, "." + name)
        for sub in ("", "cur", "new", "tmp"):
            self._mkdir(os.path.join(path, sub))
        return path

    def add(self, folder_path, data, date, flags=""):
        self.seq += 1
        name = "%d.M%dP1.bench,S=%d:2,%s" % (date, self.seq, len(data),
                                               flags)
        path = os.path.join(folder_path, "cur", name)
        with open(path, "wb") as f:
            f.write(data)
        os.chown(path, self.uid, self.gid)
        os.utime(path, (date, date))
        return path


def flags_for(rng):
    r = rng.random()
    return "S" if r < 0.6 else ("FS" if r < 0.65 else "")


def gen_small_folder(md, folder, n, seed):
    rng = random.Random("%s-%s" % (seed, folder))
    path = md.folder(folder)
    total = 0
    for d in dates(rng, n):
        msg = small_message(rng, d)
        md.add(path, msg, d, flags_for(rng))
        total += len(msg)
    return total


def gen_words(md, seed):
    """Words: WORDS_COUNT messages; returns the subject prefixes ("Words
    0042") of those whose body holds WORD."""
    rng = random.Random("%s-words" % seed)
    path = md.folder("Words")
    hits = []
    for i, d in enumerate(dates(rng, WORDS_COUNT)):
        token = "Words %04d" % i
        subject = "%s %s" % (token, words(rng, 2))
        extra = None
        if rng.random() < 0.1:
            extra = "This line carries the word %s in it." % WORD
            hits.append(token)
        md.add(path, small_message(rng, d, subject, extra), d, "S")
    return hits


def gen_attach(md, folder, name, size, seed):
    rng = random.Random("%s-%s" % (seed, folder))
    path = md.folder(folder)
    d = dates(rng, 1)[0]
    msg, data = attachment_message(rng, d, "%s attachment %s" % (
        folder, name), name, size)
    md.add(path, msg, d, "S")
    return len(msg), data


def warm(env, user, password, folders):
    """Opens and lists each folder once, directly (no proxy), so that
    Dovecot's index and header cache exist before timing starts."""
    ctx = ssl.create_default_context(cafile=env["MFS_CA"])
    c = imaplib.IMAP4_SSL("localhost", int(env["MFS_IMAPS_PORT"]),
                          ssl_context=ctx, timeout=600)
    c._mode_utf8 = False
    c.login(user, password)
    for f in folders:
        typ, _ = c.select(f, readonly=True)
        if typ != "OK":
            raise RuntimeError("cannot select %s" % f)
        c.uid("FETCH", "1:*",
              "(UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE)")
    c.logout()


def read_env(srvdir):
    env = {}
    with open(os.path.join(srvdir, "env")) as f:
        for line in f:
            if "=" in line:
                k, v = line.strip().split("=", 1)
                env[k] = v
    return env


def generate(srvdir, messages, many, seed=1, log=print, real=0):
    """Writes every set and warms Dovecot; returns facts the benchmark
    needs (expected WORD hits, attachment bytes, sizes)."""
    env = read_env(srvdir)
    t = time.time()
    alice = Maildir(env["MFS_MAILDIR"])
    bob = Maildir(os.path.join(srvdir, "mail", "bob", "Maildir"))
    facts = {"word": WORD}
    facts["inbox_bytes"] = gen_small_folder(alice, "INBOX", messages, seed)
    facts["attach_size"], facts["attach_data"] = gen_attach(
        alice, "Attach", "report.bin", ATTACH_BYTES, seed)
    raw = HUGE_BYTES * 57 // 78  # base64 with CRLF: 78 bytes per 57
    facts["huge_size"], _ = gen_attach(alice, "Huge", "huge.bin", raw, seed)
    facts["word_hits"] = gen_words(alice, seed)
    facts["many_bytes"] = gen_small_folder(alice, "Many", many, seed)
    folders = ["INBOX", "Attach", "Huge", "Words", "Many"]
    if real > 0:
        facts["real_bytes"] = gen_real(alice, "Real", real, seed)
        folders.append("Real")
    gen_small_folder(bob, "INBOX", POP3_COUNT, seed)
    log("gen: wrote %d + %d + %d + 1,002 messages in %.1f s" % (
        messages, many, real, time.time() - t))
    t = time.time()
    warm(env, env["MFS_USER"], env["MFS_PASS"], folders)
    warm(env, env["MFS_USER2"], env["MFS_PASS2"], ["INBOX"])
    log("gen: Dovecot indexed them in %.1f s" % (time.time() - t))
    return facts


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("srvdir")
    ap.add_argument("--messages", type=int, default=10000)
    ap.add_argument("--many", type=int, default=100000)
    ap.add_argument("--real", type=int, default=0)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    facts = generate(a.srvdir, a.messages, a.many, a.seed, real=a.real)
    print("WORD %s in %d of %d Words messages" % (
        facts["word"], len(facts["word_hits"]), WORDS_COUNT))


if __name__ == "__main__":
    sys.exit(main())
