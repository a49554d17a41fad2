"""mailfs against a server that offers IMAP4rev1 and nothing else (README,
"Other IMAP servers"): no MOVE, UIDPLUS, IDLE, CONDSTORE, QRESYNC,
LITERAL+, ESEARCH, NAMESPACE, SPECIAL-USE, UNSELECT, ENABLE, COMPRESS
(the test servers load Dovecot's imap_zlib, but the capability list set
here leaves COMPRESS=DEFLATE out). The module starts a Dovecot of its own
that advertises only IMAP4rev1 and marks no folder with a special use,
runs the checks of server_checks.py against it,
and checks that mailfs sent no command the server did not advertise:
the module's mount runs with the -d trace, and one more mount goes
through a plain-IMAP proxy that keeps every byte mailfs sent. Dovecot
still understands the extensions it does not advertise, so only what went
over the wire shows such a mistake."""
import imaplib
import os
import re
import subprocess

import harness
import server_checks as sc
from harness import CountingProxy, check, eq

ENV = None  # the servers of this module
S = None  # its server_checks.Setup
REFRESH = 1  # the mount's refresh, in seconds

DOVECOT_CONF = """protocol imap {
  imap_capability = IMAP4rev1
}
namespace inbox {
  mailbox Sent {
    special_use =
  }
  mailbox Drafts {
    special_use =
  }
  mailbox Trash {
    special_use =
  }
  mailbox Archive {
    special_use =
  }
}
"""

# The commands of RFC 3501, and those that may follow UID.
RFC3501 = {"CAPABILITY", "NOOP", "LOGOUT", "STARTTLS", "AUTHENTICATE",
           "LOGIN", "SELECT", "EXAMINE", "CREATE", "DELETE", "RENAME",
           "SUBSCRIBE", "UNSUBSCRIBE", "LIST", "LSUB", "STATUS", "APPEND",
           "CHECK", "CLOSE", "EXPUNGE", "SEARCH", "FETCH", "STORE", "COPY",
           "UID"}
RFC3501_UID = {"COPY", "FETCH", "STORE", "SEARCH"}

# What an extension the server does not offer looks like in a command
# line (its tag removed).
EXTENSIONS = [
    (re.compile(r"^IDLE\b", re.I), "IDLE"),
    (re.compile(r"^(UID )?MOVE\b", re.I), "MOVE"),
    (re.compile(r"^UID EXPUNGE\b", re.I), "UID EXPUNGE (UIDPLUS)"),
    (re.compile(r"^NAMESPACE\b", re.I), "NAMESPACE"),
    (re.compile(r"^ENABLE\b", re.I), "ENABLE"),
    (re.compile(r"^UNSELECT\b", re.I), "UNSELECT"),
    (re.compile(r"^COMPRESS\b", re.I), "COMPRESS"),
    (re.compile(r"\b(CONDSTORE|QRESYNC|CHANGEDSINCE|UNCHANGEDSINCE|VANISHED)\b"
                r"|MODSEQ", re.I), "CONDSTORE/QRESYNC"),
    (re.compile(r"\bRETURN \(", re.I), "RETURN (ESEARCH, LIST-EXTENDED)"),
    (re.compile(r"^LIST \(", re.I), "LIST selection options (LIST-EXTENDED)"),
    (re.compile(r"\{\d+\+\}"), "a non-synchronizing literal (LITERAL+)"),
]


def check_server(env):
    """The server is set up as this module means: it advertises
    IMAP4rev1 alone (and, before login, its AUTH= mechanisms), LOGIN still
    works, and LIST marks no folder \\Sent."""
    c = imaplib.IMAP4_SSL(
        "localhost", int(env["MFS_IMAPS_PORT"]),
        ssl_context=env.ssl_context(), timeout=30)
    try:
        pre = set(c.capabilities)
        check("IMAP4REV1" in pre, "capabilities before login: %r" % pre)
        other = {x for x in pre if x != "IMAP4REV1" and
                 not x.startswith("AUTH=")}
        eq(other, set(), "extensions advertised before login")
        typ, _ = c.login(env["MFS_USER"], env["MFS_PASS"])
        eq(typ, "OK", "LOGIN")
        typ, data = c.capability()
        eq(typ, "OK", "CAPABILITY")
        eq(data[-1].split(), [b"IMAP4rev1"], "capabilities after login")
        typ, data = c.list()
        eq(typ, "OK", "LIST")
        check(not any(b"\\Sent" in line for line in data),
              "no folder marked \\Sent: %r" % data)
        check(any(line.endswith(b" Sent") for line in data),
              "a folder named Sent: %r" % data)
    finally:
        c.logout()


def config(env, name, keys):
    return env.write_config(name, dict({"refresh": str(REFRESH)}, **keys))


def setup_module(env):
    global ENV, S
    ENV = harness.Env.start(DOVECOT_CONF)
    try:
        check_server(ENV)
        cfg = config(ENV, "config-rev1", {
            "smtp": "smtps://localhost:%s" % ENV["MFS_SMTPS_PORT"],
            "from": "Alice <%s>" % ENV["MFS_EMAIL"],
            "retry_min": "1", "retry_max": "2"})
        S = sc.Setup(ENV, ENV.mount(config=cfg, args=["-d"]), "", "/", {},
                     "Sent")
    except Exception:
        ENV.stop()
        ENV = None
        raise


def teardown_module(env):
    try:
        if S is not None:
            S.mount.umount()
    finally:
        if ENV is not None:
            ENV.stop()


def test_root_shows_folders(env):
    sc.root_shows_folders(S)


def test_mkdir_at_root_and_cp(env):
    sc.mkdir_and_cp(S)


def test_flags(env):
    sc.flags_change(S)


def test_mv_message(env):
    sc.mv_message(S)


def test_rm_message(env):
    sc.rm_message(S)


def test_rename_and_rmdir(env):
    sc.rename_and_rmdir(S)


def test_outbox_copy_in_sent(env):
    sc.outbox_sent_copy(S)


def test_search(env):
    sc.search_lists_match(S)


def test_new_mail_shows_without_idle(env):
    sc.new_mail_without_idle(S, REFRESH)


# --- what went over the wire ---------------------------------------------

def client_commands(stream):
    """The command lines in the bytes a client sent on one connection:
    literals skipped (their {N} or {N+} kept), tags removed. A line of one
    word is an answer to a continuation request (AUTHENTICATE, or DONE
    after IDLE) and is left out."""
    cmds, cur, pos = [], b"", 0
    while True:
        end = stream.find(b"\r\n", pos)
        if end < 0:
            break
        line = stream[pos:end]
        pos = end + 2
        lit = re.search(rb"\{(\d+)\+?\}$", line)
        if lit:
            cur += line + b" "
            pos += int(lit.group(1))
            continue
        words = (cur + line).decode("latin-1").split(" ", 1)
        cur = b""
        if len(words) == 2:
            cmds.append(words[1])
    return cmds


def unadvertised(command):
    """Why command is not plain IMAP4rev1, or None."""
    words = command.upper().split()
    if words[0] not in RFC3501:
        return "%s is not an IMAP4rev1 command" % words[0]
    if words[0] == "UID" and (len(words) < 2 or words[1] not in RFC3501_UID):
        return "UID %s is not an IMAP4rev1 command" % " ".join(words[1:2])
    if words[0] == "AUTHENTICATE" and len(words) > 2:
        return "an initial response (SASL-IR)"
    for pattern, what in EXTENSIONS:
        if pattern.search(command):
            return what
    return None


def shown(command):
    """command as a failure may show it: a login without its secret."""
    words = command.split(" ", 2)
    if words[0].upper() in ("LOGIN", "AUTHENTICATE"):
        return " ".join(words[:2]) + " ..."
    return command


def traced_commands(log):
    """The lines mailfs traced as sent to the IMAP server (-d: "imap C:"
    and the lines of the same write that follow), tags removed."""
    out, inside = [], False
    for line in log.splitlines():
        if line.startswith("mailfs: "):
            inside = line.startswith("mailfs: imap C: ")
            if not inside:
                continue
            line = line[len("mailfs: imap C: "):]
        if inside and " " in line:
            out.append(line.split(" ", 1)[1])
    return out


def workload(s, t):
    """What a user does that could tempt mailfs into an extension, on the
    mount of s: list, read, flag, copy in, move, remove, search. Their
    results are checked by the tests above; here only what went over the
    wire matters, so a refused mv or rm -r is returned, not raised."""
    done = []
    for folder in ("TraceA", "TraceB"):
        os.mkdir(s.path(folder))
    uids = [sc.server_append(s, "TraceA", sc.make_message(t, i))
            for i in range(3)]
    sc.server_append(s, "TraceA", sc.make_message(t, 3), "(\\Deleted)")
    dirs = [sc.msg_dir(s.path("TraceA"), u) for u in uids]
    with open(os.path.join(dirs[0], "message.eml"), "rb") as f:
        f.read()
    with open(os.path.join(dirs[0], "flags"), "w") as f:
        f.write("+\\Flagged\n")
    sc.cp(sc.write_file(s, "trace-%s.eml" % t, sc.make_message(t, 9)),
          s.path("TraceA") + "/")
    for cmd in (["mv", dirs[1], s.path("TraceB") + "/"], ["rm", "-r", dirs[2]]):
        r = subprocess.run(cmd, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=60)
        done.append((cmd[0], r.returncode, r.stdout))
    os.listdir(s.path("TraceA", ".search", "from:w1@example.test"))
    os.listdir(s.path("TraceB"))
    os.listdir(s.path("INBOX"))
    os.rename(s.path("TraceB"), s.path("TraceC"))
    return done


def test_trace_shows_only_advertised_commands(env):
    """mailfs sends only IMAP4rev1 without extensions. A mount through a
    plain-IMAP proxy that keeps every byte mailfs sent does what a user
    does; every command it sent is checked, and so is its -d trace (the
    first 200 bytes of each write). The module's own mount, traced with
    -d since setup_module, is checked too: this test is named to run last,
    so that covers what the other tests (outbox/ among them) made mailfs
    send."""
    for folder in ("", "INBOX"):  # the module's mount too, when run alone
        os.listdir(S.path(folder))
    proxy = CountingProxy(int(ENV["MFS_IMAP_PORT"]))
    try:
        cfg = config(ENV, "config-rev1-proxy", {
            "imap": "imap://127.0.0.1:%d" % proxy.port, "tls": "none"})
        with ENV.mount(config=cfg, args=["-d"]) as m:
            done = workload(sc.Setup(ENV, m, "", "/", {}, "Sent"), sc.tag())
            log = m.output()
        sent = proxy.sent_bytes()
    finally:
        proxy.close()
    commands = [c for stream in sent.values() for c in client_commands(stream)]
    verbs = {" ".join(c.upper().split()[:2]) for c in commands}
    for want in ("UID STORE", "APPEND", "RENAME"):
        check(any(v.startswith(want) for v in verbs),
              "the proxy saw no %s: %r" % (want, sorted(verbs)))
    bad = [(shown(c), unadvertised(c)) for c in commands if unadvertised(c)]
    eq(bad, [], "commands the server did not advertise (the user's mv and "
       "rm -r: %r)" % done)

    for what, text in (("the proxied mount", log),
                       ("the module's mount", S.mount.output())):
        traced = traced_commands(text)
        check(any(c.upper().startswith("LIST ") for c in traced),
              "%s: the -d trace shows no LIST: %s" % (what, text[-3000:]))
        bad = [(c, why) for c in traced for pattern, why in EXTENSIONS
               if pattern.search(c)]
        eq(bad, [], "extensions in the -d trace of %s" % what)
