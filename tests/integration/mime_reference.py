#!/usr/bin/python3
"""An independent decoder for mailfs's MIME layout, built on Python's email.

    mime_reference.py FILE.eml           print the expected decoded content
                                         as JSON (bytes as latin-1 strings
                                         are ambiguous, so as hex)
    mime_reference.py check FILE.eml DIR compare the message directory DIR
                                         (as mailfs lays it out) with Python;
                                         print mismatches, exit 1 on any

What is compared: body.txt, body.html, parts/**/content (by IMAP section
number), every attachment file (its bytes must be the decoded content of
some leaf part, and the count must match), recursively for every
message/rfc822 part directory.

The text rules mirror mailfs (src/mime.h): charset labels widened as
browsers do (iso-8859-1 -> cp1252, gb2312 -> gb18030, shift_jis -> cp932),
no charset / us-ascii / unknown charset -> UTF-8 when valid else cp1252,
an undecodable byte -> one U+FFFD and decoding resumes at the next byte,
CRLF -> LF in body.txt and body.html. The decoding of transfer encodings
and the MIME structure is Python's own.

Where Python decodes differently on purpose, the part is skipped with a
note (listed by `skip_reason`):
  - base64 whose data characters count 4n+1: Python returns the encoded
    text undecoded, mailfs drops the lone sextet;
  - base64 with data after a '=' pad: Python stops at the pad, mailfs goes
    on (concatenated base64 blobs);
  - quoted-printable "=" followed by blanks before the line end, or "=\\r"
    without "\\n": RFC 2045 soft breaks for mailfs, literal for Python;
  - uuencode transfer encodings: Python decodes them, mailfs does not;
  - message/rfc822 content is not compared (Python holds it parsed), its
    parts and bodies are;
  - a lone CR is a line end for Python's parser, an ordinary byte for mailfs
    (messages with one are not compared structurally).
"""
import codecs
import email
import email.header
import email.policy
import json
import os
import re
import sys

ALIASES = {
    "iso-8859-1": "cp1252", "iso8859-1": "cp1252", "iso_8859-1": "cp1252",
    "latin1": "cp1252", "l1": "cp1252", "gb2312": "gb18030",
    "gbk": "gb18030", "x-gbk": "gb18030", "euc-cn": "gb18030",
    "shift_jis": "cp932", "shift-jis": "cp932", "sjis": "cp932",
    "x-sjis": "cp932", "ms_kanji": "cp932", "windows-31j": "cp932",
    "euc-kr": "cp949", "ks_c_5601-1987": "cp949",
    "iso-8859-8-i": "iso-8859-8", "iso-8859-6-i": "iso-8859-6",
    "iso-8859-6-e": "iso-8859-6", "iso-8859-8-e": "iso-8859-8",
}
FIXED = {"message.eml", "headers", "from", "to", "cc", "subject", "date",
         "body.txt", "body.html", "flags", "parts", "type", "content"}
DEPTH_MAX = 64
PARTS_MAX = 10000


def one_byte_replace(exc):
    return ("\ufffd", exc.start + 1)


codecs.register_error("mfs-replace", one_byte_replace)


def codec_for(charset):
    if charset is None:
        return None
    cs = charset.lower()
    if cs in ("us-ascii", "ascii") or not re.fullmatch(r"[A-Za-z0-9._:-]{1,40}", cs):
        return None
    cs = ALIASES.get(cs, cs)
    try:
        return codecs.lookup(cs).name
    except LookupError:
        return None


def to_text(data, charset):
    codec = codec_for(charset)
    if codec is None:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = data.decode("cp1252", "mfs-replace")
    else:
        text = data.decode(codec, "mfs-replace")
    return text.replace("\r\n", "\n").encode("utf-8")


def is_split(p, depth=0):
    """A multipart that mailfs splits: it has parts and is not nested
    deeper than DEPTH_MAX (deeper ones are opaque leaves)."""
    return p.get_content_maintype() == "multipart" and p.is_multipart() \
        and depth < DEPTH_MAX


def embedded(p):
    if p.get_content_maintype() == "message" and p.is_multipart():
        return p.get_payload(0)
    return None


def filename(p):
    name = p.get_filename() or p.get_param("name")
    if isinstance(name, tuple):
        name = email.utils.collapse_rfc2231_value(name)
    if name:
        try:
            name = str(email.header.make_header(
                email.header.decode_header(name)))
        except Exception:
            pass
    return name or None


def attachment_like(p):
    disp = p.get_content_disposition()
    return (disp is not None and disp != "inline") or filename(p) is not None


def leaves(p, depth=0):
    """The leaves mailfs looks at for bodies and attachments (opaque
    multiparts beyond the depth bound are left out)."""
    if is_split(p, depth):
        for c in p.get_payload():
            yield from leaves(c, depth + 1)
    elif not (p.get_content_maintype() == "multipart" and p.is_multipart()):
        yield p


def may_be_body(p):
    """RFC 2183: a part marked inline is a body even with a file name."""
    return p.get_content_disposition() == "inline" or not attachment_like(p)


def find_text(m, sub, depth=0):
    for p in leaves(m, depth):
        if not may_be_body(p):
            continue
        if p.get_content_maintype() == "multipart":
            if sub == "plain":
                return p
            continue
        if p.get_content_type() == "text/" + sub:
            return p
    return None


def payload(p):
    data = p.get_payload(decode=True)
    return data if data is not None else b""


def skip_reason(p):
    cte = str(p.get("content-transfer-encoding", "")).strip().lower()
    raw = p._payload  # the undecoded text; get_payload() may decode it
    if not isinstance(raw, str):
        return None
    raw = raw.encode("utf-8", "surrogateescape")
    if cte == "base64":
        data = re.sub(rb"[^A-Za-z0-9+/=]", b"", raw)
        if len(re.sub(rb"=", b"", data)) % 4 == 1:
            return "base64 with a lone final character"
        if re.search(rb"=+[A-Za-z0-9+/]", data.rstrip(b"=")):
            return "base64 data after padding"
    if cte == "quoted-printable":
        if re.search(rb"=[ \t]+(\r?\n|$)", raw) or re.search(rb"=\r(?!\n)", raw):
            return "quoted-printable soft break with blanks"
    if cte in ("x-uuencode", "uuencode", "uue", "x-uue"):
        return "uuencode"
    return None


def body_text(p):
    charset = None if p.get_content_maintype() == "multipart" else \
        p.get_content_charset()
    return to_text(payload(p), charset)


def sections(m, prefix, depth, out):
    """Fills out with section -> (part, depth) for the parts of message m."""
    if is_split(m, depth):
        kids = m.get_payload()
        for i, c in enumerate(kids, 1):
            walk(c, "%s%s%d" % (prefix, "." if prefix else "", i),
                 depth + 1, out)
    else:
        walk(m, (prefix + "." if prefix else "") + "1", depth, out)


def walk(p, sec, depth, out):
    out[sec] = (p, depth)
    if is_split(p, depth):
        for i, c in enumerate(p.get_payload(), 1):
            walk(c, "%s.%d" % (sec, i), depth + 1, out)
    m = embedded(p)
    if m is not None and depth < DEPTH_MAX:
        sections(m, sec, depth + 1, out)


def expected(m):
    res = {}
    t = find_text(m, "plain")
    h = find_text(m, "html")
    if t is not None:
        res["body.txt"] = body_text(t).hex()
    if h is not None:
        res["body.html"] = body_text(h).hex()
    atts = []
    for p in leaves(m):
        if p is t or p is h:
            continue
        mt = p.get_content_maintype()
        if not attachment_like(p) and mt in ("text", "multipart"):
            continue
        atts.append({"filename": filename(p), "type": p.get_content_type(),
                     "content": payload(p).hex()})
    res["attachments"] = atts
    secs = {}
    sections(m, "", 0, secs)
    res["parts"] = {s: (None if p.is_multipart() else payload(p).hex())
                    for s, (p, _) in secs.items()}
    return res


def read(path):
    with open(path, "rb") as f:
        return f.read()


class Checker:
    def __init__(self):
        self.errors = []
        self.notes = []
        self.checked = 0
        self.bounded = False  # more parts than PARTS_MAX

    def fail(self, msg):
        self.errors.append(msg)

    def same(self, where, got, want):
        self.checked += 1
        if got != want:
            i = next((k for k in range(min(len(got), len(want)))
                      if got[k] != want[k]), min(len(got), len(want)))
            self.fail("%s: differs at byte %d (got %d bytes, want %d): "
                      "got %r want %r" % (where, i, len(got), len(want),
                                          got[max(0, i - 20):i + 20],
                                          want[max(0, i - 20):i + 20]))

    def message_dir(self, m, d, prefix, depth):
        t = find_text(m, "plain", depth)
        h = find_text(m, "html", depth)
        for name, p in (("body.txt", t), ("body.html", h)):
            path = os.path.join(d, name)
            if p is None:
                if os.path.exists(path):
                    self.fail("%s: exists, Python finds no such body" % path)
                continue
            if not os.path.exists(path):
                self.fail("%s: missing" % path)
                continue
            why = skip_reason(p)
            if why:
                self.notes.append("%s: skipped (%s)" % (path, why))
                continue
            self.same(path, read(path), body_text(p))
        want = []
        for p in leaves(m, depth):
            if p is t or p is h:
                continue
            if not attachment_like(p) and \
                    p.get_content_maintype() in ("text", "multipart"):
                continue
            want.append(p)
        got = [n for n in sorted(os.listdir(d)) if n not in FIXED and
               os.path.isfile(os.path.join(d, n))]
        if len(got) != len(want) and not self.bounded:
            self.fail("%s: %d attachments, Python finds %d" %
                      (d, len(got), len(want)))
        pool = [payload(p) for p in want if not skip_reason(p) and
                embedded(p) is None]
        for n in got:
            data = read(os.path.join(d, n))
            self.checked += 1
            if data in pool:
                pool.remove(data)
            elif not any(skip_reason(p) or embedded(p) is not None
                         for p in want):
                self.fail("%s: matches no attachment Python decodes" %
                          os.path.join(d, n))
        secs = {}
        sections(m, prefix, depth, secs)
        self.parts_dir(secs, os.path.join(d, "parts"), prefix, depth)

    def parts_dir(self, secs, d, prefix, depth):
        if not os.path.isdir(d):
            self.fail("%s: missing" % d)
            return
        for name in sorted(os.listdir(d), key=lambda n: (len(n), n)):
            sec = (prefix + "." if prefix else "") + name
            self.part_dir(secs, os.path.join(d, name), sec, depth)
        mine = {(prefix + "." if prefix else "") + n for n in os.listdir(d)}
        for sec in secs:
            if sec.count(".") == (prefix.count(".") + 1 if prefix else 0) \
                    and sec.startswith(prefix) and sec not in mine:
                if self.bounded:
                    self.notes.append("%s: section %s beyond the part "
                                      "bound" % (d, sec))
                else:
                    self.fail("%s: section %s missing" % (d, sec))

    def part_dir(self, secs, d, sec, depth):
        if sec not in secs:
            if not self.bounded:
                self.fail("%s: Python has no part %s" % (d, sec))
            return
        p, depth = secs[sec]
        content = os.path.join(d, "content")
        if self.bounded and read(os.path.join(d, "type")) == \
                b"application/octet-stream\n" and \
                p.get_content_type() != "application/octet-stream":
            self.notes.append("%s: the rest beyond the part bound" % d)
            return
        m = embedded(p)
        if m is not None:
            self.notes.append("%s: message/rfc822 content not compared" %
                              content)
            self.message_dir(m, d, sec, depth + 1)
            return
        if p.get_content_maintype() == "multipart" and p.is_multipart() \
                and depth >= DEPTH_MAX:
            self.notes.append("%s: opaque beyond the depth bound" % d)
        elif not p.is_multipart():
            why = skip_reason(p)
            if why:
                self.notes.append("%s: skipped (%s)" % (content, why))
            elif not os.path.exists(content):
                self.fail("%s: missing" % content)
            else:
                self.same(content, read(content), payload(p))
        kids = [n for n in os.listdir(d) if n.isdigit()]
        for n in sorted(kids, key=int):
            self.part_dir(secs, os.path.join(d, n), "%s.%s" % (sec, n),
                          depth + 1)


def parse(path):
    return email.message_from_bytes(read(path), policy=email.policy.compat32)


def main(argv):
    sys.setrecursionlimit(20000)
    if len(argv) == 2:
        json.dump(expected(parse(argv[1])), sys.stdout, indent=1)
        print()
        return 0
    if len(argv) == 4 and argv[1] == "check":
        raw = read(argv[2])
        if re.search(rb"\r(?!\n)", raw):
            print("note: %s has a lone CR; not compared" % argv[2])
            return 0
        c = Checker()
        c.bounded = sum(1 for _ in parse(argv[2]).walk()) >= PARTS_MAX
        c.message_dir(parse(argv[2]), argv[3], "", 0)
        for n in c.notes:
            print("note:", n)
        for e in c.errors:
            print("MISMATCH:", e)
        print("%s: %d files compared, %d mismatches" %
              (argv[2], c.checked, len(c.errors)))
        return 1 if c.errors else 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
