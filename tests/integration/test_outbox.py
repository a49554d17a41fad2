"""outbox/ through the mount: copy a file in, the local Postfix delivers it
into Dovecot, and Python's imaplib reads it back (SPEC "outbox/")."""
import email
import email.policy
import errno
import os
import re
import signal
import subprocess
import sys
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from faultproxy import FaultProxy  # noqa: E402
from harness import check, eq, wait_for  # noqa: E402

M = None
CFG = None


def setup_module(env):
    global M, CFG
    CFG = env.write_config("config-outbox", {
        "smtp": "smtps://localhost:%s" % env["MFS_SMTPS_PORT"],
        "from": "Alice <%s>" % env["MFS_EMAIL"],
        "retry_min": "1", "retry_max": "2",
        "cache_dir": os.path.join(env.dir, "cache-outbox")})
    M = env.mount(config=CFG)


def teardown_module(env):
    if M is not None:
        M.umount()


def tag():
    return uuid.uuid4().hex[:12]


def message(env, subject, body="Hello.\r\n", to=None, extra="", eol="\r\n"):
    lines = ["From: Alice <%s>" % env["MFS_EMAIL"],
             "To: %s" % (to or env["MFS_EMAIL"]),
             "Subject: %s" % subject]
    if extra:
        lines.append(extra)
    return (eol.join(lines) + eol + eol + body).encode()


def find(env, subject_tag, user=None, password=None, folder="INBOX", wait=30):
    """Raw messages in folder whose Subject contains subject_tag."""
    found = []

    def look():
        c = env.imap(user, password)
        c.select(folder, readonly=True)
        typ, data = c.uid("SEARCH", "SUBJECT", subject_tag)
        uids = data[0].split()
        found[:] = []
        for u in uids:
            typ, d = c.uid("FETCH", u, "(BODY.PEEK[])")
            found.append(d[0][1])
        c.logout()
        return bool(found)
    wait_for(look, wait, "a message with %s in %s" % (subject_tag, folder))
    return found


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def test_plain_message_is_sent_and_leaves_outbox(env):
    t = tag()
    p = os.path.join(M.path, "outbox", "hello.eml")
    write(p, message(env, "plain " + t))
    msgs = find(env, t)
    eq(len(msgs), 1, "delivered once")
    m = email.message_from_bytes(msgs[0])
    check(m["Message-ID"] and m["Date"], "Date and Message-ID added")
    # it stays a few seconds, read-only, its status "sent", then leaves
    if os.path.exists(p):
        eq(os.stat(p).st_mode & 0o222, 0, "an accepted file is read-only")
        st = open(os.path.join(M.path, "outbox", ".status", "hello.eml"))
        check("status: sent" in st.read(), "its status says sent")
        st.close()
    wait_for(lambda: not os.path.exists(p), 15, "the file leaving outbox/")
    sent = find(env, t, folder="Sent")
    eq(len(sent), 1, "a copy in Sent")


def test_dot_lines_and_bare_lf_arrive_intact(env):
    t = tag()
    body = "first\n.\n.foo\n..bar\nlast\n"
    write(os.path.join(M.path, "outbox", "dots"),
          message(env, "dots " + t, body=body, eol="\n"))
    raw = find(env, t)[0]
    got = raw.split(b"\r\n\r\n", 1)[1]
    eq(got, body.replace("\n", "\r\n").encode(), "body with dot lines")


def test_utf8_subject_and_body(env):
    t = tag()
    subject = "Gr\u00fc\u00dfe \u65e5\u672c " + t
    body = "K\u00f6ln \u2014 \u6771\u4eac\n"
    data = ("From: Alice <%s>\nTo: %s\nSubject: %s\n\n%s" %
            (env["MFS_EMAIL"], env["MFS_EMAIL"], subject, body)).encode()
    write(os.path.join(M.path, "outbox", "utf8"), data)
    m = email.message_from_bytes(find(env, t)[0], policy=email.policy.default)
    eq(str(m["Subject"]), subject, "decoded subject")
    eq(m.get_content().replace("\r\n", "\n"), body, "decoded body")


def test_bcc_is_delivered_but_not_shown(env):
    t = tag()
    write(os.path.join(M.path, "outbox", "bcc"),
          message(env, "bcc " + t, extra="Bcc: %s" % env["MFS_EMAIL2"]))
    for user, pw in ((None, None), (env["MFS_USER2"], env["MFS_PASS2"])):
        raw = find(env, t, user, pw)[0]
        check(b"\nBcc:" not in raw and not raw.startswith(b"Bcc:"),
              "no Bcc header for %s" % user)


def test_rejected_recipient_fails_cp_and_explains(env):
    t = tag()
    src = os.path.join(env.dir, "reject.eml")
    write(src, message(env, "reject " + t, to="nobody@elsewhere.invalid"))
    r = subprocess.run(["cp", src, os.path.join(M.path, "outbox", "reject.eml")],
                       stderr=subprocess.PIPE, timeout=60)
    check(r.returncode != 0, "cp reports the refusal")
    status = open(os.path.join(M.path, "outbox", ".status", "reject.eml")).read()
    check("failed" in status and "554" in status, status)
    check(os.path.exists(os.path.join(M.path, "outbox", "reject.eml")), "file stays")
    os.unlink(os.path.join(M.path, "outbox", "reject.eml"))
    check(not os.path.exists(os.path.join(M.path, "outbox", "reject.eml")), "rm removes it")


def test_message_without_recipients_is_einval(env):
    p = os.path.join(M.path, "outbox", "norcpt")
    try:
        write(p, b"Subject: nobody\n\nno one to send to\n")
    except OSError as e:
        eq(e.errno, errno.EINVAL, "errno")
    else:
        raise AssertionError("close succeeded")
    check(os.path.exists(p), "the file stays for the user to fix")
    os.unlink(p)


def test_address_too_long_for_smtp_is_einval(env):
    """RFC 5321 bounds a path to 256 octets: a 1,200-byte address is the
    user's input to fix, refused at close() before any byte is sent, not
    retried for the queue lifetime as a lost connection."""
    t = tag()
    p = os.path.join(M.path, "outbox", "longaddr")
    to = "%s@example.test" % ("x" * 1200)
    try:
        write(p, message(env, "longaddr " + t, to=to))
    except OSError as e:
        eq(e.errno, errno.EINVAL, "errno")
    else:
        raise AssertionError("close succeeded")
    status = open(os.path.join(M.path, "outbox", ".status", "longaddr")).read()
    check("status: invalid" in status and "bytes long" in status, status)
    os.unlink(p)


def test_editor_names_wait_until_renamed(env):
    t = tag()
    tmp = os.path.join(M.path, "outbox", ".draft.swp")
    write(tmp, message(env, "renamed " + t))
    time.sleep(2)
    c = env.imap()
    c.select("INBOX", readonly=True)
    eq(c.uid("SEARCH", "SUBJECT", t)[1][0], b"", "not sent before the rename")
    c.logout()
    os.rename(tmp, os.path.join(M.path, "outbox", "draft"))
    eq(len(find(env, t)), 1, "sent after the rename")


def test_burst_of_messages_each_arrives_once(env):
    t = tag()
    for i in range(30):
        write(os.path.join(M.path, "outbox", "burst-%d" % i),
              message(env, "burst %s %d" % (t, i)))
    msgs = find(env, t)
    wait_for(lambda: len(find(env, t)) >= 30, 60, "30 messages")
    subjects = sorted(email.message_from_bytes(m)["Subject"] for m in find(env, t))
    eq(subjects, sorted("burst %s %d" % (t, i) for i in range(30)), "each once")
    check(msgs is not None, "")


def test_mta_down_cp_succeeds_and_message_arrives_later(env):
    t = tag()
    pf = os.path.join(env.srvdir, "postfix")
    subprocess.run(["postfix", "-c", pf, "stop"], check=True, timeout=60)
    try:
        p = os.path.join(M.path, "outbox", "later")
        write(p, message(env, "later " + t))  # close() succeeds
        status = open(os.path.join(M.path, "outbox", ".status", "later")).read()
        check("queued" in status, status)
    finally:
        subprocess.run(["postfix", "-c", pf, "start"], check=True, timeout=60)
    eq(len(find(env, t, wait=60)), 1, "delivered after the MTA came back")
    wait_for(lambda: not os.path.exists(p), 20, "the file to leave outbox/")


def test_kill_9_during_burst_loses_nothing(env):
    t = tag()
    cfg = env.write_config("config-outbox-kill", {
        "smtp": "smtps://localhost:%s" % env["MFS_SMTPS_PORT"],
        "from": env["MFS_EMAIL"], "retry_min": "1", "retry_max": "2",
        "cache_dir": os.path.join(env.dir, "cache-outbox-kill")})
    m = env.mount(config=cfg)
    procs = []
    for i in range(50):
        src = os.path.join(env.dir, "kill-%s-%d.eml" % (t, i))
        write(src, message(env, "kill %s %d" % (t, i)))
        procs.append(subprocess.Popen(["cp", src, os.path.join(m.path, "outbox", "k%d" % i)],
                                      stderr=subprocess.DEVNULL))
        if i < 25:
            procs[-1].wait(timeout=60)  # acknowledged before the kill
        if i == 40:
            m.proc.send_signal(signal.SIGKILL)
    for p in procs:
        p.wait(timeout=60)
    check(sum(p.returncode == 0 for p in procs) >= 25, "25 copies acknowledged")
    m.umount(check_exit=False)
    m2 = env.mount(config=cfg)
    try:
        # Whatever cp managed to close before the kill must arrive; entries
        # the crash left unknown are listed in outbox/ for the user.
        def settled():
            names = [n for n in os.listdir(os.path.join(m2.path, "outbox"))
                     if n != ".status"]
            return all("unknown" in open(os.path.join(m2.path, "outbox", ".status", n)).read()
                       or "writing" in open(os.path.join(m2.path, "outbox", ".status", n)).read()
                       for n in names)
        wait_for(settled, 60, "the spool to settle")
        time.sleep(2)
        c = env.imap()
        c.select("INBOX", readonly=True)
        uids = c.uid("SEARCH", "SUBJECT", t)[1][0].split()
        subjects = []
        for u in uids:
            d = c.uid("FETCH", u, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")[1]
            subjects.append(d[0][1].decode().strip())
        c.logout()
        left = [n for n in os.listdir(os.path.join(m2.path, "outbox")) if n != ".status"]
        dups = len(subjects) - len(set(subjects))
        print("kill -9 during a burst: %d delivered, %d duplicates, %d left in outbox"
              % (len(subjects), dups, len(left)))
        eq(dups, 0, "no message delivered twice")
        for i, p in enumerate(procs):
            if p.returncode == 0:
                check(any(s.endswith("kill %s %d" % (t, i)) for s in subjects) or
                      "k%d" % i in left, "message %d acknowledged by cp is not lost" % i)
    finally:
        m2.umount()


def test_from_header_added_from_the_setting(env):
    t = tag()
    write(os.path.join(M.path, "outbox", "nofrom"),
          ("To: %s\nSubject: nofrom %s\n\nhi\n" % (env["MFS_EMAIL"], t)).encode())
    m = email.message_from_bytes(find(env, t, folder="Sent")[0])
    eq(m["From"], "Alice <%s>" % env["MFS_EMAIL"], "From of the Sent copy")


def sent_count(env, subject_tag):
    """Messages in Sent whose Subject contains subject_tag, now."""
    c = env.imap()
    c.select("Sent", readonly=True)
    n = len(c.uid("SEARCH", "SUBJECT", subject_tag)[1][0].split())
    c.logout()
    return n


def listen_again(proxy):
    try:
        proxy.passthrough()
    except OSError:  # the port is still held by a closing connection
        return False
    return True


def test_sent_copy_waits_while_imap_is_unreachable(env):
    """SMTP accepts while the IMAP server cannot be reached: cp returns at
    once, the message leaves outbox/, and its Sent copy is made once the
    IMAP server is back, exactly once."""
    p = FaultProxy(int(env["MFS_IMAPS_PORT"]))
    cfg = env.write_config("config-outbox-sentdown", {
        "imap": "imaps://localhost:%d" % p.port,
        "smtp": "smtps://localhost:%s" % env["MFS_SMTPS_PORT"],
        "from": "Alice <%s>" % env["MFS_EMAIL"],
        "retry_min": "1", "retry_max": "2",
        "cache_dir": os.path.join(env.dir, "cache-outbox-sentdown")})
    m = env.mount(config=cfg)
    try:
        check("Sent" in os.listdir(m.path), "the folders are listed")
        p.refuse()
        p.kill_all(rst=True)  # no FIN_WAIT holds the port for later
        t = tag()
        path = os.path.join(m.path, "outbox", "down.eml")
        t0 = time.time()
        write(path, message(env, "sentdown " + t))
        secs = time.time() - t0
        print("close() with the IMAP server unreachable: %.2f s" % secs)
        check(secs < 5, "close() took %.1f s" % secs)
        eq(len(find(env, t)), 1, "delivered while IMAP is unreachable")
        wait_for(lambda: "Sent copy of down.eml failed" in m.output(), 30,
                 "the failed Sent copy in the log")
        eq(sent_count(env, t), 0, "no Sent copy while IMAP is unreachable")
        wait_for(lambda: not os.path.exists(path), 15,
                 "the file leaving outbox/")
        eq([n for n in os.listdir(os.path.join(m.path, "outbox"))
            if n != ".status"], [], "outbox/ lists no pending Sent copy")
        wait_for(lambda: listen_again(p), 20, "the proxy to listen again")
        eq(len(find(env, t, folder="Sent", wait=30)), 1, "the Sent copy")
        wait_for(lambda: "Sent copy of down.eml was made" in m.output(), 10,
                 "the Sent copy in the log")
        time.sleep(1)
        eq(sent_count(env, t), 1, "exactly one Sent copy")
    finally:
        m.umount()
        p.close()


def test_check_says_hello_to_smtp(env):
    r = env.mailfs(["--check", "-o", "config=" + CFG, "test"])
    out = r.stdout.decode()
    eq(r.returncode, 0, "exit status (%s)" % out)
    check("smtp tls: TLSv1." in out and "smtp login: ok" in out, out)
    check("smtp extensions:" in out and "PIPELINING" in out, out)
    bad = env.write_config("config-outbox-badsmtp", {
        "smtp": "smtps://localhost:%s" % env["MFS_POP3S_PORT"]})  # not SMTP
    r = env.mailfs(["--check", "-o", "config=" + bad, "test"], timeout=60)
    check(r.returncode != 0, "a server that is not SMTP fails the check: %s"
          % r.stdout.decode())
