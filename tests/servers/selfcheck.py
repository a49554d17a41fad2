#!/usr/bin/python3
"""Check a running set of test mail servers: selfcheck.py DIR/env

Logs in over IMAPS, IMAP+STARTTLS, plaintext IMAP, POP3S and POP3+STLS
with the generated CA and host name verification, sends a message through
both submission ports and reads it back over IMAP, and checks that
relaying, unknown local users and AUTH before STARTTLS are refused.
Prints one line per check and "N passed, N failed" at the end; exits 1
if anything failed.
"""
import email
import imaplib
import poplib
import smtplib
import ssl
import sys
import time
import uuid


def load_env(path):
    env = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                key, _, value = line.partition("=")
                env[key] = value
    return env


class Checker:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def run(self, name, fn):
        try:
            fn()
        except Exception as e:  # report every failure, go on
            self.failed += 1
            print("FAIL %s: %s: %s" % (name, type(e).__name__, e))
        else:
            self.passed += 1
            print("ok   %s" % name)


def ctx_for(cafile):
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def main():
    env = load_env(sys.argv[1])
    host = "localhost"
    ca = env["MFS_CA"]
    user, pw = env["MFS_USER"], env["MFS_PASS"]
    c = Checker()

    def imaps():
        m = imaplib.IMAP4_SSL(host, int(env["MFS_IMAPS_PORT"]),
                              ssl_context=ctx_for(ca))
        m.login(user, pw)
        typ, boxes = m.list()
        names = b"\n".join(boxes)
        for want in (b"INBOX", b"Sent", b"Drafts", b"Trash", b"Archive"):
            assert want in names, "missing folder %r in %r" % (want, names)
        assert b"\\Sent" in names, names
        typ, data = m.capability()
        caps = data[0].decode().split()
        for cap in ("MOVE", "UIDPLUS", "CONDSTORE", "QRESYNC", "IDLE",
                    "SPECIAL-USE"):
            assert cap in caps, "missing capability %s" % cap
        m.logout()

    def imap_starttls():
        m = imaplib.IMAP4(host, int(env["MFS_IMAP_PORT"]))
        assert "STARTTLS" in m.capabilities, m.capabilities
        m.starttls(ssl_context=ctx_for(ca))
        m.login(user, pw)
        m.select("INBOX", readonly=True)
        m.logout()

    def imap_plain():
        m = imaplib.IMAP4(host, int(env["MFS_IMAP_PORT"]))
        m.login(env["MFS_USER2"], env["MFS_PASS2"])
        m.logout()

    def imap_wrong_ca():
        try:
            imaplib.IMAP4_SSL(host, int(env["MFS_IMAPS_PORT"]),
                              ssl_context=ctx_for(env["MFS_OTHER_CA"]))
        except ssl.SSLCertVerificationError:
            return
        raise AssertionError("connection with the other CA succeeded")

    def imap_bad_password():
        m = imaplib.IMAP4_SSL(host, int(env["MFS_IMAPS_PORT"]),
                              ssl_context=ctx_for(ca))
        try:
            m.login(user, pw + "x")
        except imaplib.IMAP4.error:
            return
        raise AssertionError("login with a wrong password succeeded")

    def pop3s():
        p = poplib.POP3_SSL(host, int(env["MFS_POP3S_PORT"]),
                            context=ctx_for(ca))
        p.user(user)
        p.pass_(pw)
        p.stat()
        p.quit()

    def pop3_stls():
        p = poplib.POP3(host, int(env["MFS_POP3_PORT"]))
        p.stls(context=ctx_for(ca))
        p.user(user)
        p.pass_(pw)
        p.quit()

    def message(tag):
        return ("From: %s\r\nTo: %s\r\nSubject: selfcheck %s\r\n"
                "Message-ID: <%s@example.test>\r\n\r\nbody %s\r\n"
                % (env["MFS_EMAIL2"], env["MFS_EMAIL"], tag, tag, tag))

    def wait_in_inbox(tag):
        m = imaplib.IMAP4_SSL(host, int(env["MFS_IMAPS_PORT"]),
                              ssl_context=ctx_for(ca))
        m.login(user, pw)
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                m.select("INBOX", readonly=True)
                typ, data = m.search(None, "SUBJECT", '"selfcheck %s"' % tag)
                if data[0].split():
                    num = data[0].split()[-1]
                    typ, msg = m.fetch(num, "(BODY.PEEK[])")
                    parsed = email.message_from_bytes(msg[0][1])
                    assert parsed["Subject"] == "selfcheck " + tag
                    return
                time.sleep(0.2)
            raise AssertionError("message %s not delivered in 20 s" % tag)
        finally:
            m.logout()

    def smtp_starttls():
        s = smtplib.SMTP(host, int(env["MFS_SMTP_PORT"]), timeout=20)
        s.ehlo()
        assert not s.has_extn("auth"), "AUTH offered before STARTTLS"
        s.starttls(context=ctx_for(ca))
        s.ehlo()
        assert s.has_extn("auth"), "AUTH not offered after STARTTLS"
        s.login(env["MFS_USER2"], env["MFS_PASS2"])
        tag = uuid.uuid4().hex
        s.sendmail(env["MFS_EMAIL2"], [env["MFS_EMAIL"]], message(tag))
        s.quit()
        wait_in_inbox(tag)

    def smtps():
        s = smtplib.SMTP_SSL(host, int(env["MFS_SMTPS_PORT"]),
                             context=ctx_for(ca), timeout=20)
        s.login(user, pw)
        tag = uuid.uuid4().hex
        s.sendmail(env["MFS_EMAIL"], [env["MFS_EMAIL"]], message(tag))
        s.quit()
        wait_in_inbox(tag)

    def rcpt_code(addr):
        s = smtplib.SMTP_SSL(host, int(env["MFS_SMTPS_PORT"]),
                             context=ctx_for(ca), timeout=20)
        s.login(user, pw)
        s.mail(env["MFS_EMAIL"])
        code, text = s.rcpt(addr)
        s.quit()
        return code, text

    def relay_refused():
        code, text = rcpt_code("nobody@elsewhere.invalid")
        assert 500 <= code < 600, (code, text)

    def unknown_local_refused():
        code, text = rcpt_code("nobody@example.test")
        assert 500 <= code < 600, (code, text)

    def smtp_no_auth_refused():
        s = smtplib.SMTP(host, int(env["MFS_SMTP_PORT"]), timeout=20)
        s.starttls(context=ctx_for(ca))
        s.ehlo()
        s.mail(env["MFS_EMAIL2"])
        code, text = s.rcpt(env["MFS_EMAIL"])
        s.quit()
        assert 500 <= code < 600, (code, text)

    c.run("IMAPS login, folders, capabilities", imaps)
    c.run("IMAP STARTTLS login", imap_starttls)
    c.run("IMAP plaintext login (tls = none)", imap_plain)
    c.run("IMAPS refused with the other CA", imap_wrong_ca)
    c.run("IMAP wrong password refused", imap_bad_password)
    c.run("POP3S login", pop3s)
    c.run("POP3 STLS login", pop3_stls)
    c.run("SMTP STARTTLS+AUTH send, read back over IMAP", smtp_starttls)
    c.run("SMTPS+AUTH send, read back over IMAP", smtps)
    c.run("relay to elsewhere.invalid refused with 5xx", relay_refused)
    c.run("unknown local recipient refused with 5xx", unknown_local_refused)
    c.run("unauthenticated submission refused with 5xx", smtp_no_auth_refused)
    print("%d passed, %d failed" % (c.passed, c.failed))
    sys.exit(1 if c.failed else 0)


if __name__ == "__main__":
    main()
