"""COMPRESS=DEFLATE (RFC 4978) against the test Dovecot, which offers it
with its imap_zlib plugin (tests/servers/mailservers.sh): a mount through
a plain-IMAP proxy that inflates what it relays negotiates compression
once per connection, sends binary data after it, and reads every message
byte-exact; compress = no keeps the connection plain; a server whose
compressed stream is corrupt is an error, not a crash or a hang."""
import os
import random
import re
import time

from harness import CountingProxy, FakeServer, check, eq

FOLDER = "Zip"
UID = re.compile(r"\u00b7(\d+)$")
SENT = {}  # uid -> the message as the server holds it


def message(i, extra=b""):
    return (b"From: Sender %d <s%d@example.test>\r\n"
            b"To: alice@example.test\r\n"
            b"Subject: compressed message %d\r\n"
            b"Date: Mon, 16 Nov 2026 08:%02d:00 +0000\r\n"
            b"Message-ID: <zip-%d@example.test>\r\n"
            b"MIME-Version: 1.0\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: 8bit\r\n\r\n" % (i, i, i, i % 60, i) +
            (b"Line %d of a text that repeats, as mail does. \xc3\xa4\xc3\xb6\r\n"
             * 40) % tuple(range(40)) + extra)


def setup_module(env):
    rnd = random.Random(4978)
    c = env.imap()
    c.create(FOLDER)
    for i in range(20):
        c.append(FOLDER, None, None, message(i))
    # random bytes, base64: they hardly compress
    blob = rnd.randbytes(1500000)
    import base64
    b64 = base64.encodebytes(blob).replace(b"\n", b"\r\n")
    c.append(FOLDER, None, None, message(99, b"\r\n" + b64))
    c.select(FOLDER, readonly=True)
    _, data = c.uid("FETCH", "1:*", "(BODY.PEEK[])")
    for item in data:
        if isinstance(item, tuple):
            uid = int(re.search(rb"UID (\d+)", item[0]).group(1))
            SENT[uid] = item[1]
    c.logout()
    eq(len(SENT), 21, "messages appended")


def proxied_config(env, name, proxy, extra=None):
    keys = {"imap": "imap://127.0.0.1:%d" % proxy.port, "tls": "none"}
    keys.update(extra or {})
    return env.write_config(name, keys)


def read_all(m):
    """{uid: message.eml} of every message of FOLDER in mount m."""
    path = os.path.join(m.path, FOLDER)
    got = {}
    for name in os.listdir(path):
        uid = int(UID.search(name).group(1))
        with open(os.path.join(path, name, "message.eml"), "rb") as f:
            got[uid] = f.read()
    return got


def test_mount_negotiates_compression_and_reads_byte_exact(env):
    proxy = CountingProxy(int(env["MFS_IMAP_PORT"]))
    try:
        cfg = proxied_config(env, "config-zip", proxy)
        with env.mount(config=cfg, args=["-d"]) as m:
            got = read_all(m)
            log = m.output()
        sent = proxy.sent_bytes()
        wire = proxy.wire_sent_bytes()
        compressed = set(proxy.compressed)
        idle = set(proxy.idle)
        received, wire_received = proxy.received, proxy.wire_received
    finally:
        proxy.close()
    eq(sorted(got), sorted(SENT), "the messages listed")
    for uid in SENT:
        check(got[uid] == SENT[uid], "message.eml of UID %d byte-exact "
              "(%d bytes, server %d)" % (uid, len(got[uid]), len(SENT[uid])))
    check(compressed, "no connection was compressed: %r" % proxy.commands)
    check("compression (DEFLATE) on" in log, log[-2000:])
    # the connection that only waits in IDLE stays plain
    eq(compressed & idle, set(), "compressed connections in IDLE")
    for cid, data in sent.items():
        eq(data.count(b"COMPRESS DEFLATE\r\n") <= 1, True,
           "COMPRESS at most once on connection %d" % cid)
        if cid not in compressed:
            continue
        # what went over the wire after the command is deflate, not text
        at = wire[cid].index(b"COMPRESS DEFLATE\r\n") + 18
        after = wire[cid][at:]
        check(after, "connection %d sent nothing after COMPRESS" % cid)
        for word in (b"FETCH", b"EXAMINE", b"LOGOUT", b"\r\n"):
            check(word not in after,
                  "%r in the plain on connection %d: %r" % (
                      word, cid, after[:80]))
        # and the proxy read commands out of it
        check(re.search(rb"COMPRESS DEFLATE\r\n.*\d+ ", sent[cid], re.S),
              "no command after COMPRESS on connection %d" % cid)
        # COMPRESS comes after the login, never before
        check(sent[cid].upper().find(b" LOGIN ") <
              sent[cid].find(b"COMPRESS"), "COMPRESS after LOGIN")
    print("server to mailfs: %d bytes of IMAP in %d bytes on the wire "
          "(%.2f)" % (received, wire_received, wire_received / received))
    check(wire_received < received * 0.8,
          "compressed: %d of %d bytes" % (wire_received, received))


def test_compress_no_keeps_the_connection_plain(env):
    proxy = CountingProxy(int(env["MFS_IMAP_PORT"]))
    try:
        cfg = proxied_config(env, "config-nozip", proxy, {"compress": "no"})
        with env.mount(config=cfg) as m:
            path = os.path.join(m.path, FOLDER)
            name = sorted(os.listdir(path))[0]
            uid = int(UID.search(name).group(1))
            with open(os.path.join(path, name, "message.eml"), "rb") as f:
                eq(f.read(), SENT[uid], "message.eml")
        commands = list(proxy.commands)
        compressed = set(proxy.compressed)
    finally:
        proxy.close()
    check(not any("COMPRESS" in c.upper() for c in commands), commands)
    eq(compressed, set(), "compressed connections")


def test_corrupt_compressed_stream_is_an_error(env):
    """A server that accepts COMPRESS and then sends what is no deflate
    stream: --check fails with the reason, at once, and mailfs exits
    cleanly (no sanitizer report). Its INBOX holds enough messages for
    the listing to ask for compression first."""
    junk = bytes(random.Random(1).randbytes(300))

    def handler(line):
        tag = line.split(b" ", 1)[0]
        verb = line.split(b" ")[1:2]
        if verb == [b"LOGIN"]:
            return tag + (b" OK [CAPABILITY IMAP4rev1 COMPRESS=DEFLATE] "
                          b"logged in\r\n")
        if verb == [b"COMPRESS"]:
            return tag + b" OK DEFLATE active\r\n" + junk
        if verb == [b"LIST"]:
            return b'* LIST () "/" INBOX\r\n' + tag + b" OK done\r\n"
        if verb in ([b"EXAMINE"], [b"SELECT"]):
            return (b"* 1000 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n"
                    b"* OK [UIDNEXT 1001] ok\r\n" + tag +
                    b" OK [READ-ONLY] done\r\n")
        if verb == [b"LOGOUT"]:
            return b"* BYE\r\n" + tag + b" OK\r\n"
        return tag + b" OK\r\n"
    srv = FakeServer(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n",
                     handler)
    try:
        # an account of its own: other tests' mounts are not timed here
        cfg = env.write_config("config-badzip", {
            "imap": "imap://127.0.0.1:%d" % srv.port, "tls": "none",
            "timeout": "3"}, account="badzip")
        t0 = time.time()
        r = env.mailfs(["--check", "-o", "config=" + cfg, "badzip"])
        took = time.time() - t0
    finally:
        srv.close()
    out = r.stdout.decode(errors="replace")
    check(r.returncode == 1, "exit status %d: %s" % (r.returncode, out))
    check("corrupt compressed stream" in out, out)
    check("Sanitizer" not in out and "runtime error" not in out, out)
    check(took < 3, "gave up after %.1f s" % took)
    print(out.strip())
