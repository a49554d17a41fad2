#!/usr/bin/python3
"""The bare floors the benchmark compares mailfs with: the least a client
must do for the same result, as one short-lived process.

    floor.py imap-list  PORT CA USER PASSFILE FOLDER
        one UID FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE)
    floor.py imap-bodies PORT CA USER PASSFILE FOLDER RANGE
        one UID FETCH RANGE (BODY.PEEK[])
    floor.py imap-search PORT CA USER PASSFILE FOLDER PHRASE
        one UID SEARCH BODY "PHRASE" (the server searches; no message
        comes)
    floor.py pop3-retr  PORT CA USER PASSFILE
        STAT, then RETR 1 .. RETR n sent at once (pipelined), then QUIT

Every connection is TLS to localhost:PORT, verified against CA. It prints
the number of messages (and bytes) it received.
"""
import imaplib
import socket
import ssl
import sys


def password(path):
    with open(path) as f:
        return f.readline().rstrip("\n")


def imap(port, ca, user, passfile):
    ctx = ssl.create_default_context(cafile=ca)
    c = imaplib.IMAP4_SSL("localhost", int(port), ssl_context=ctx,
                          timeout=600)
    c.login(user, password(passfile))
    return c


def imap_fetch(port, ca, user, passfile, folder, rng, items):
    c = imap(port, ca, user, passfile)
    typ, _ = c.select(folder, readonly=True)
    if typ != "OK":
        raise SystemExit("cannot open %s" % folder)
    typ, data = c.uid("FETCH", rng, items)
    if typ != "OK":
        raise SystemExit("FETCH failed: %r" % data)
    n = sum(1 for d in data if isinstance(d, tuple) or
            (isinstance(d, bytes) and b"UID" in d))
    size = sum(len(d[1]) for d in data if isinstance(d, tuple))
    c.logout()
    print("%d messages, %d literal bytes" % (n, size))


def imap_search(port, ca, user, passfile, folder, phrase):
    c = imap(port, ca, user, passfile)
    typ, _ = c.select(folder, readonly=True)
    if typ != "OK":
        raise SystemExit("cannot open %s" % folder)
    typ, data = c.uid("SEARCH", "BODY", '"%s"' % phrase)
    if typ != "OK":
        raise SystemExit("SEARCH failed: %r" % data)
    c.logout()
    print("%d messages" % len(data[0].split()))


class Lines:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def fill(self):
        data = self.sock.recv(1 << 20)
        if not data:
            raise SystemExit("connection closed")
        self.buf += data

    def line(self):
        while b"\r\n" not in self.buf:
            self.fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def until_dot(self):
        """Skips a multi-line answer; returns its size."""
        start = 0
        while True:
            i = self.buf.find(b"\r\n.\r\n", start)
            if i >= 0:
                n = i
                self.buf = self.buf[i + 5:]
                return n
            start = max(0, len(self.buf) - 4)
            self.fill()


def ok(line, what):
    if not line.startswith(b"+OK"):
        raise SystemExit("%s: %r" % (what, line))
    return line


def pop3_retr(port, ca, user, passfile):
    ctx = ssl.create_default_context(cafile=ca)
    raw = socket.create_connection(("localhost", int(port)), timeout=600)
    s = ctx.wrap_socket(raw, server_hostname="localhost")
    r = Lines(s)
    ok(r.line(), "greeting")
    s.sendall(b"USER %s\r\n" % user.encode())
    ok(r.line(), "USER")
    s.sendall(b"PASS %s\r\n" % password(passfile).encode())
    ok(r.line(), "PASS")
    s.sendall(b"STAT\r\n")
    n = int(ok(r.line(), "STAT").split()[1])
    s.sendall(b"".join(b"RETR %d\r\n" % i for i in range(1, n + 1)))
    size = 0
    for _ in range(n):
        ok(r.line(), "RETR")
        size += r.until_dot()
    s.sendall(b"QUIT\r\n")
    ok(r.line(), "QUIT")
    s.close()
    print("%d messages, %d bytes" % (n, size))


def main(argv):
    if len(argv) < 2:
        raise SystemExit(__doc__)
    cmd, args = argv[1], argv[2:]
    if cmd == "imap-list" and len(args) == 5:
        imap_fetch(*args, "1:*",
                   "(UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE)")
    elif cmd == "imap-bodies" and len(args) == 6:
        imap_fetch(*args, "(BODY.PEEK[])")
    elif cmd == "imap-search" and len(args) == 6:
        imap_search(*args)
    elif cmd == "pop3-retr" and len(args) == 4:
        pop3_retr(*args)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
