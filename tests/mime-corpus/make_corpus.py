#!/usr/bin/python3
"""Writes the MIME test corpus of mailfs: deterministic .eml files.

    make_corpus.py [DIR]             write every case into DIR (default: the
                                     directory of this script)
    make_corpus.py big SIZE FILE     write one message with a SIZE-byte
                                     binary attachment (base64) to FILE

Only the Python standard library; the same bytes on every run.
"""
import base64
import os
import random
import sys

HDR = (b"From: Alice Example <alice@example.com>\n"
       b"To: Bob <bob@example.org>\n"
       b"Subject: %s\n"
       b"Date: Thu, 20 Nov 2025 15:32:01 +0100\n"
       b"Message-ID: <%s@example.com>\n"
       b"MIME-Version: 1.0\n")


def hdr(subject, mid):
    if isinstance(subject, str):
        subject = subject.encode()
    return HDR % (subject, mid.encode())


def b64(data, width=76):
    s = base64.b64encode(data)
    return b"\n".join(s[i:i + width] for i in range(0, len(s), width)) + b"\n"


def rnd(n, seed):
    r = random.Random(seed)
    return bytes(r.getrandbits(8) for _ in range(n))


def crlf(b):
    return b.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def plain(subject, mid, body, charset="utf-8", cte="8bit"):
    return (hdr(subject, mid) +
            b"Content-Type: text/plain; charset=" + charset.encode() +
            b"\nContent-Transfer-Encoding: " + cte.encode() + b"\n\n" + body)


def multipart(sub, bnd, parts, pre=b"", epi=b"", close=True):
    out = b"Content-Type: multipart/" + sub.encode() + b"; boundary=\"" + \
        bnd.encode() + b"\"\n\n" + pre
    for p in parts:
        out += b"--" + bnd.encode() + b"\n" + p + b"\n"
    if close:
        out += b"--" + bnd.encode() + b"--\n" + epi
    return out


def part(ctype, body, cte=None, extra=b""):
    h = b"Content-Type: " + ctype.encode() + b"\n"
    if cte:
        h += b"Content-Transfer-Encoding: " + cte.encode() + b"\n"
    return h + extra + b"\n" + body


def qp(text):
    """A quoted-printable encoder with soft breaks at 76 columns."""
    out, line = [], b""
    for ch in text:
        if ch == 0x0A:
            out.append(line + b"\n")
            line = b""
            continue
        tok = bytes([ch]) if (33 <= ch <= 126 and ch != 0x3D) or ch == 0x20 \
            else b"=%02X" % ch
        if len(line) + len(tok) > 75:
            out.append(line + b"=\n")
            line = b""
        line += tok
    return b"".join(out) + line


def attach(ctype, name_params, data, disp=b"attachment"):
    return (b"Content-Type: " + ctype.encode() + b"\n"
            b"Content-Transfer-Encoding: base64\n"
            b"Content-Disposition: " + disp + name_params + b"\n\n" +
            b64(data))


TXT_UTF8 = "Grüße aus Köln — naïve café, ½ € ≠ ¥.\nZweite Zeile.\n"
HTML = b"<html><body><p>Hello <b>world</b></p></body></html>\n"
LONG_NAME = "Übersicht der Quartalsergebnisse — Région Île-de-France " \
    "et Provence-Alpes-Côte d'Azur, année 2025 (version définitive).pdf"


def rfc2231(name, value, chunk=30):
    enc = "".join(c if c.isalnum() or c in "-." else
                  "".join("%%%02X" % b for b in c.encode())
                  for c in value)
    pieces, i = [], 0
    while i < len(enc):
        j = min(i + chunk, len(enc))
        while "%" in enc[j - 2:j]:  # never cut an escape
            j -= 1
        pieces.append(enc[i:j])
        i = j
    out = b""
    for n, p in enumerate(pieces):
        pre = "utf-8''" if n == 0 else ""
        out += (";\n %s*%d*=%s%s" % (name, n, pre, p)).encode()
    return out


def cases():
    c = {}
    c["plain-lf"] = plain("Plain", "1", b"Hello world.\nSecond line.\n",
                          "us-ascii", "7bit")
    c["plain-crlf"] = crlf(plain("Plain CRLF", "2",
                                 b"Hello world.\nSecond line.\n",
                                 "us-ascii", "7bit"))
    c["alternative"] = hdr("Alternative", "3") + multipart(
        "alternative", "alt-1",
        [part("text/plain; charset=utf-8", TXT_UTF8.encode(), "8bit"),
         part("text/html; charset=utf-8", HTML, "7bit")],
        pre=b"This is a multi-part message in MIME format.\n")
    img = rnd(700, 4)
    pdf = b"%PDF-1.4\n" + rnd(2500, 5)
    c["nested-mixed"] = hdr("Nested", "4") + multipart(
        "mixed", "outer",
        [b"Content-Type: multipart/alternative; boundary=inner\n\n" +
         b"--inner\n" +
         part("text/plain; charset=utf-8", qp(TXT_UTF8.encode()),
              "quoted-printable") + b"\n--inner\n" +
         b"Content-Type: multipart/related; boundary=rel\n\n--rel\n" +
         part("text/html; charset=utf-8", HTML, "7bit") +
         b"\n--rel\n" +
         b"Content-Type: image/png\nContent-ID: <img1>\n"
         b"Content-Transfer-Encoding: base64\n\n" + b64(img) +
         b"--rel--\n--inner--\n",
         attach("application/pdf", b"; filename=\"report.pdf\"", pdf)])
    inner = hdr("Innermost", "5a") + \
        b"Content-Type: text/plain; charset=iso-8859-1\n" \
        b"Content-Transfer-Encoding: quoted-printable\n\n" + \
        qp("Très bien, the innermost message.\n".encode("latin-1"))
    middle = hdr("Middle forward", "5b") + multipart(
        "mixed", "mid",
        [part("text/plain; charset=utf-8", b"See the message below.\n"),
         part("message/rfc822", inner,
              extra=b"Content-Disposition: inline\n")])
    c["forward-nested"] = hdr("Fwd: Fwd: nested", "5") + multipart(
        "mixed", "top",
        [part("text/plain; charset=utf-8", b"Forwarding twice.\n"),
         part("message/rfc822", middle,
              extra=b"Content-Disposition: attachment; "
                    b"filename=\"forwarded.eml\"\n")])
    long_qp = ("Ceci est une très longue ligne qui doit être coupée par "
               "des sauts de ligne doux, encore et encore, " * 4 +
               "fin.\n= signe égal, tab\tici.\n").encode()
    c["qp-soft"] = plain("QP soft", "6", qp(long_qp), "utf-8",
                         "quoted-printable")
    c["base64-binary"] = hdr("Binary", "7") + multipart(
        "mixed", "b7",
        [part("text/plain", b"Binary attached.\n"),
         attach("application/octet-stream", b"; filename=\"blob.bin\"",
                rnd(3001, 7))])
    c["iso-8859-1"] = plain("Latin-1", "8", qp(
        "Déjà vu, garçon! Ça coûte 5 £.\n".encode("latin-1")),
        "iso-8859-1", "quoted-printable")
    c["iso-8859-15"] = plain("Latin-9", "9",
                             "Prix: 10 € — œuvre, Šárka.\n".replace(
                                 "—", "-").encode("iso-8859-15"),
                             "iso-8859-15", "8bit")
    c["windows-1252"] = plain("CP1252", "10",
                              "“Smart quotes” – and … ellipsis €.\n".encode(
                                  "cp1252"), "windows-1252", "8bit")
    c["koi8-r"] = plain("KOI8-R", "11", b64(
        "Привет, мир! Съешь ещё этих мягких французских булок.\n".encode(
            "koi8-r")), "koi8-r", "base64")
    c["shift-jis"] = plain("Shift_JIS", "12", b64(
        "こんにちは、世界。日本語のメールです。\n".encode("shift_jis")),
        "shift_jis", "base64")
    c["gb2312"] = plain("GB2312", "13", b64(
        "你好，世界。这是一封中文邮件。\n".encode("gb2312")),
        "gb2312", "base64")
    c["utf8-base64"] = plain("UTF-8 base64", "14", b64(
        ("😀 emoji, ĉapelo, ß, 中文, עברית.\n" * 3).encode()),
        "UTF-8", "base64")
    c["rfc2231-long"] = hdr("RFC 2231", "15") + multipart(
        "mixed", "b15",
        [part("text/plain", b"A long name.\n"),
         b"Content-Type: application/pdf\n"
         b"Content-Transfer-Encoding: base64\n"
         b"Content-Disposition: attachment" +
         rfc2231("filename", LONG_NAME) + b"\n\n" + b64(pdf[:300])])
    c["rfc2047-name"] = hdr("RFC 2047 name", "16") + multipart(
        "mixed", "b16",
        [part("text/plain", b"Encoded-word name.\n"),
         b"Content-Type: application/pdf; name=\"=?UTF-8?B?" +
         base64.b64encode("Prüfbericht №5.pdf".encode()) + b"?=\"\n"
         b"Content-Transfer-Encoding: base64\n"
         b"Content-Disposition: attachment\n\n" + b64(pdf[:200]),
         b"Content-Type: image/gif\n"
         b"Content-Transfer-Encoding: base64\n"
         b"Content-Disposition: attachment; filename=\"=?iso-8859-1?Q?"
         b"caf=E9_photo.gif?=\"\n\n" + b64(b"GIF89a" + rnd(50, 16))])
    c["hostile-names"] = hdr("Hostile names", "17") + multipart(
        "mixed", "b17",
        [part("text/plain", b"Names.\n"),
         attach("text/plain", b"; filename=\"../../etc/passwd\"",
                b"root:x:0:0\n"),
         attach("application/octet-stream",
                b"; filename*=utf-8''evil%E2%80%AEfdp.exe", b"MZ" + rnd(30, 1)),
         attach("text/plain", b"; filename=\"body.txt\"", b"not the body\n"),
         attach("application/pdf", b"; filename=\"report.pdf\"", pdf[:100]),
         attach("application/pdf", b"; filename=\"report.pdf\"", pdf[:120]),
         attach("application/octet-stream", b"; filename=\"..\"", b"dots"),
         attach("application/octet-stream", b"; filename=\"parts\"", b"p"),
         attach("application/octet-stream",
                b"; filename=\"a\\\"b;c.txt\"", b"quoted")])
    c["missing-close"] = hdr("Missing close", "18") + multipart(
        "mixed", "b18",
        [part("text/plain", b"First part.\n"),
         part("application/octet-stream", b64(rnd(90, 18)), "base64")],
        close=False)
    c["no-charset-utf8"] = hdr("No charset", "19") + \
        b"Content-Type: text/plain\n\n" + TXT_UTF8.encode()
    c["no-charset-latin1"] = hdr("No charset latin", "20") + \
        b"\n" + "Caf\xe9 cr\xe8me \x93quoted\x94.\n".encode("latin-1")
    c["unknown-charset"] = plain("Unknown charset", "21",
                                 TXT_UTF8.encode(), "x-no-such-charset")
    c["unknown-charset-8bit"] = plain("Unknown charset 2", "21b",
                                      b"caf\xe9\n", "x-unknown")
    c["unknown-cte"] = plain("Unknown CTE", "22", b"raw =41 bytes QQ==\n",
                             "utf-8", "x-weird")
    c["8bit-headers"] = (b"From: J\xfcrgen M\xfcller <jm@example.de>\n"
                         b"To: =?utf-8?q?Bj=C3=B6rk?= <b@example.is>\n"
                         b"Cc: \xc3\x89lodie <e@example.fr>\n"
                         b"Subject: Gr\xfc\xdfe \xe2\x80\x94 mixed\n"
                         b"Date: Mon, 1 Dec 2025 08:00:00 +0000\n\n"
                         b"Body.\n")
    c["base64-nopad"] = plain("No padding", "23",
                              base64.b64encode(b"Hello, no pad!!").rstrip(
                                  b"=") + b"\n", "utf-8", "base64")
    c["base64-garbage"] = plain(
        "Garbage", "24",
        b"SGVs*bG8s\nIHdv!!cmxk\n\n  IQ==\n", "utf-8", "base64")
    trunc = hdr("Truncated", "25") + multipart(
        "mixed", "b25",
        [part("text/plain", b"Before the cut.\n"),
         attach("application/pdf", b"; filename=\"cut.pdf\"", pdf)])
    c["truncated"] = trunc[:len(trunc) // 2]
    c["header-only"] = b"From: a@example.com\nSubject: headers only"
    c["body-only"] = b"Just a body line without headers.\nAnother.\n"
    c["lf-multipart"] = hdr("LF", "26") + multipart(
        "alternative", "lf", [part("text/plain", b"lf text\n"),
                              part("text/html", HTML)])
    c["crlf-multipart"] = crlf(c["nested-mixed"])
    deep, bnd = part("text/plain", b"deep leaf\n"), None
    for i in range(80):
        bnd = "d%d" % i
        deep = (b"Content-Type: multipart/mixed; boundary=" + bnd.encode() +
                b"\n\n--" + bnd.encode() + b"\n" + deep + b"\n--" +
                bnd.encode() + b"--\n")
    c["deep-nesting"] = hdr("Deep", "27") + deep
    many = [part("text/plain", b"p%d" % i) for i in range(10050)]
    c["many-parts"] = hdr("Many parts", "28") + multipart("mixed", "m", many)
    c["long-line"] = plain("Long line", "29", b"x" * 300000 + b"\n")
    c["html-only"] = hdr("HTML only", "30") + \
        b"Content-Type: text/html; charset=utf-8\n\n" + HTML
    c["digest"] = hdr("Digest", "31") + multipart(
        "digest", "dg",
        [b"\n" + hdr("Digest one", "31a") + b"\nFirst.\n",
         b"\n" + hdr("Digest two", "31b") + b"\nSecond.\n"])
    c["unnamed-attachments"] = hdr("Unnamed", "32") + multipart(
        "mixed", "b32",
        [part("text/plain", b"Two unnamed.\n"),
         part("application/pdf", b64(pdf[:64]), "base64"),
         part("image/png", b64(img[:64]), "base64"),
         part("application/x-unknown-thing", b64(b"zz"), "base64")])
    c["qp-edge"] = plain("QP edge", "33",
                         b"lower=c3=a9 upper=C3=A9 eq==41 bad=4g end=\n"
                         b"soft=\nbreak and =3D sign\n", "utf-8",
                         "quoted-printable")
    c["multipart-no-boundary"] = hdr("No boundary", "34") + \
        b"Content-Type: multipart/mixed\n\nJust text really.\n"
    c["boundary-never"] = hdr("Boundary never", "35") + \
        b"Content-Type: multipart/mixed; boundary=zz\n\n" \
        b"No delimiter anywhere.\n--z\n"
    c["encoded-headers"] = (
        b"From: =?iso-8859-1?Q?Andr=E9?= Pirard <pirard@example.be>\n"
        b"To: =?koi8-r?B?8NLJ18XU?= <ivan@example.ru>,\n"
        b" =?utf-8?B?5byg5LiJ?= <zhang@example.cn>\n"
        b"Cc: =?shift_jis?B?k/qWe4zq?= <jp@example.jp>\n"
        b"Subject: =?utf-8?Q?Caf=C3=A9?= =?utf-8?Q?_cr=C3=A8me?=\n"
        b" folded continuation\n"
        b"Date: Fri, 21 Nov 2025 09:00:00 -0500\n"
        b"Content-Type: text/plain; charset=utf-8\n\nBody.\n")
    c["text-attachment-charset"] = hdr("Text attachment", "36") + multipart(
        "mixed", "b36",
        [part("text/plain; charset=utf-8", b"Body.\n"),
         b"Content-Type: text/plain; charset=iso-8859-1\n"
         b"Content-Disposition: attachment; filename=notes.txt\n\n"
         b"caf\xe9 notes\n"])
    inner2 = (b"From: Carol <carol@example.net>\nSubject: Inner base64\n"
              b"Content-Type: text/plain; charset=koi8-r\n"
              b"Content-Transfer-Encoding: base64\n\n" +
              b64("Текст во вложенном письме.\n".encode("koi8-r")))
    c["rfc822-simple"] = hdr("Fwd simple", "37") + multipart(
        "mixed", "b37",
        [part("text/plain", b"See inner.\n"), part("message/rfc822", inner2)])
    c["mixed-line-ends"] = hdr("Mixed ends", "38").replace(b"\n", b"\r\n") + \
        b"Content-Type: text/plain\r\n\r\nline one\r\nline two\nline 3\r\n"
    c["empty"] = b""
    c["invalid-utf8"] = plain("Invalid UTF-8", "39",
                              b"ok \xe2\x82 cut, lone \x80, overlong \xc0\xaf,"
                              b" surrogate \xed\xa0\x80 end\n")
    c["two-inline-texts"] = hdr("Two texts", "40") + multipart(
        "mixed", "b40",
        [part("text/plain", b"First text.\n"),
         part("text/plain", b"Footer text.\n"),
         part("text/html", HTML)])
    c["inline-named-body"] = hdr("Inline with a name", "60") + multipart(
        "mixed", "b60",
        [part("text/plain; name=note.txt", b"The body, named.\n",
              extra=b"Content-Disposition: inline; filename=note.txt\n"),
         part("text/plain", b"Second text.\n",
              extra=b"Content-Disposition: inline; filename=second.txt\n"),
         part("text/plain; name=unmarked.txt", b"Named, no disposition.\n")])
    c["transport-padding"] = hdr("Padding", "41") + (
        b"Content-Type: multipart/mixed; boundary=pad\n\n"
        b"--pad   \n\nFirst.\n--pad\t\n\nSecond.\n--pad--  \n")
    c["rfc2231-latin1"] = hdr("2231 latin", "42") + multipart(
        "mixed", "b42",
        [part("text/plain", b"x\n"),
         b"Content-Type: application/octet-stream; name*=iso-8859-1'fr'"
         b"r%E9sum%E9.doc\nContent-Transfer-Encoding: base64\n\n" +
         b64(b"doc")])
    c["from-line"] = b"From alice@example.com Thu Nov 20 15:32:01 2025\n" + \
        plain("mbox From line", "43", b"Body after From line.\n")
    c["utf8-charset-html-alt"] = hdr("Alt latin", "44") + multipart(
        "alternative", "b44",
        [part("text/plain; charset=iso-8859-15", qp(
            "Preis 20 €\n".encode("iso-8859-15")), "quoted-printable"),
         part("text/html; charset=windows-1252", b64(
             "<p>Preis 20 \u20ac \u201cok\u201d</p>\n".encode("cp1252")),
             "base64")])
    # where Python decodes differently on purpose (the reference skips)
    c["python-differs"] = hdr("Python differs", "45") + multipart(
        "mixed", "b45",
        [part("text/plain; charset=utf-8", b"soft break= \nwith a blank.\n",
              "quoted-printable"),
         part("application/octet-stream", b"QUJD\nRA\n", "base64"),
         part("application/octet-stream", b"QUI=\nQ0Q=\n", "base64")])
    return c


def big(size, path):
    data = rnd(size, 99)
    msg = hdr("Big attachment", "big") + multipart(
        "mixed", "big",
        [part("text/plain", b"A big one.\n"),
         attach("application/octet-stream", b"; filename=\"big.bin\"", data)])
    with open(path, "wb") as f:
        f.write(msg)


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "big":
        big(int(sys.argv[2]), sys.argv[3])
        return
    out = sys.argv[1] if len(sys.argv) > 1 else \
        os.path.dirname(os.path.abspath(__file__))
    for i, (name, raw) in enumerate(sorted(cases().items())):
        with open(os.path.join(out, "%s.eml" % name), "wb") as f:
            f.write(raw)


if __name__ == "__main__":
    main()
