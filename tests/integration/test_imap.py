"""The IMAP tree: folders and message.eml through a real mount, compared
with what Python's imaplib reads from the same Dovecot."""
import base64
import email
import email.utils
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from harness import (ROOT, CountingProxy, FakeServer, check, eq,
                     mutf7_decode, wait_for)

M = None  # the shared mount of this module

DIRNAME = re.compile(r"^\d{4}-\d\d-\d\d \d{4} .+ \u2014 .* \u00b7(\d+)$")


def make_message(i, subject=None, date=None):
    date = date or email.utils.formatdate(1700000000 + i * 3600, localtime=False)
    subject = subject or "Bulk message %d" % i
    return ("From: Sender %d <s%d@example.test>\r\n"
            "To: alice@example.test\r\n"
            "Subject: %s\r\n"
            "Date: %s\r\n"
            "Message-ID: <bulk-%d@example.test>\r\n"
            "\r\n"
            "Body of message %d.\r\n" % (i, i, subject, date, i, i)).encode()


def setup_module(env):
    global M
    subprocess.run([os.path.join(os.path.dirname(__file__), "..", "servers",
                                 "mailservers.sh"), "populate", env.srvdir, "demo"],
                   check=True, timeout=120)
    c = env.imap()
    for box in ("Bulk", "Small"):
        c.create(box)
    for i in range(40):
        c.append("Bulk", None, None, make_message(i))
    for i in range(3):
        c.append("Small", None, None, make_message(100 + i))
    c.logout()
    M = env.mount()


def teardown_module(env):
    if M is not None:
        M.umount()


def server_folders(env):
    c = env.imap()
    typ, data = c.list()
    c.logout()
    out = {}
    for line in data:
        m = re.match(rb'\((.*?)\) (NIL|"(.)") (.*)$', line)
        flags, delim, name = m.group(1), m.group(3), m.group(4)
        name = name.decode()
        if name.startswith('"'):
            name = name[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        out[name] = (delim.decode() if delim else None, flags)
    return out


def server_messages(env, folder):
    """{uid: raw bytes} of folder, read with BODY.PEEK[]."""
    c = env.imap()
    c.select('"%s"' % folder, readonly=True)
    typ, data = c.uid("FETCH", "1:*", "(UID BODY.PEEK[])")
    c.logout()
    msgs = {}
    for item in data:
        if isinstance(item, tuple):
            uid = int(re.search(rb"UID (\d+)", item[0]).group(1))
            msgs[uid] = item[1]
    return msgs


def folder_path(mount, name, delim):
    parts = name.split(delim) if delim else [name]
    return os.path.join(mount.path, *[mutf7_decode(p) for p in parts])


def message_dirs(path):
    return [n for n in os.listdir(path) if DIRNAME.match(n)]


def listed(m, folder, count):
    """The path of folder in mount m and its message directories, sorted;
    checks that there are count of them."""
    path = os.path.join(m.path, folder)
    names = sorted(message_dirs(path))
    eq(len(names), count, "messages listed")
    return path, names


def counted(env, name, **extra):
    """A CountingProxy to the plaintext IMAP server and a config named name
    that mounts through it (extra: more config keys)."""
    proxy = CountingProxy(int(env["MFS_IMAP_PORT"]))
    keys = {"imap": "imap://127.0.0.1:%d" % proxy.port, "tls": "none"}
    keys.update(extra)
    return proxy, env.write_config(name, keys)


def delayed(env, name, rate=None, **extra):
    """The bench's DelayProxy (20 ms each way; rate: bytes a second) to the
    IMAPS server and a config named name that mounts through it (extra:
    more config keys)."""
    sys.path.insert(0, os.path.join(ROOT, "tests", "bench"))
    from delayproxy import DelayProxy
    proxy = DelayProxy(int(env["MFS_IMAPS_PORT"]), delay=0.020,
                       proto="imap", rate=rate)
    keys = {"imap": "imaps://localhost:%d" % proxy.port}
    keys.update(extra)
    return proxy, env.write_config(name, keys)


def test_folders_match_server(env):
    folders = server_folders(env)
    check("INBOX" in folders, "server lists INBOX")
    check(len(folders) >= 6, "the sample has nested folders: %r" % folders)
    for name, (delim, flags) in folders.items():
        path = folder_path(M, name, delim)
        check(os.path.isdir(path), "folder %r shows as %r" % (name, path))
    # and nothing else at the top
    top = {mutf7_decode(n.split(d)[0] if d else n) for n, (d, _) in folders.items()}
    eq(set(os.listdir(M.path)), top, "top-level folders")


def test_non_ascii_folder_decoded(env):
    folders = server_folders(env)
    encoded = [n for n in folders if "&" in n]
    check(encoded, "the sample has a modified UTF-7 folder name")
    for n in encoded:
        delim = folders[n][0]
        path = folder_path(M, n, delim)
        check(os.path.isdir(path), "decoded folder %r exists" % path)
        check("&" not in os.path.basename(path), "name decoded: %r" % path)


def test_every_message_eml_is_byte_exact(env):
    total = 0
    for name, (delim, flags) in server_folders(env).items():
        if b"\\Noselect" in flags or b"\\NonExistent" in flags:
            continue
        path = folder_path(M, name, delim)
        msgs = server_messages(env, name)
        dirs = message_dirs(path)
        eq(len(dirs), len(msgs), "message count of %s" % name)
        for d in dirs:
            uid = int(DIRNAME.match(d).group(1))
            with open(os.path.join(path, d, "message.eml"), "rb") as f:
                data = f.read()
            eq(data, msgs[uid], "message.eml of %s uid %d" % (name, uid))
            total += 1
    check(total >= 45, "read %d messages" % total)


def test_stat_size_and_mtime(env):
    msgs = server_messages(env, "Bulk")
    dirs = message_dirs(os.path.join(M.path, "Bulk"))
    check(len(msgs) > 0, "Bulk holds messages on the server")
    eq(len(dirs), len(msgs), "one directory per message of Bulk")
    for d in dirs:
        uid = int(DIRNAME.match(d).group(1))
        st = os.stat(os.path.join(M.path, "Bulk", d, "message.eml"))
        eq(st.st_size, len(msgs[uid]), "st_size of uid %d" % uid)
        date = email.message_from_bytes(msgs[uid])["Date"]
        eq(int(st.st_mtime), int(email.utils.parsedate_to_datetime(date).timestamp()),
           "mtime of uid %d" % uid)
        dst = os.stat(os.path.join(M.path, "Bulk", d))
        eq(int(dst.st_mtime), int(st.st_mtime), "directory mtime")


def test_dirnames_sort_by_date_and_are_safe(env):
    names = message_dirs(os.path.join(M.path, "Bulk"))
    eq(len(names), 40, "Bulk count")
    # Bulk message i is dated i hours after the first: sorting names sorts dates
    by_name = [int(DIRNAME.match(n).group(1)) for n in sorted(names)]
    eq(by_name, sorted(by_name), "names sort in date order (UIDs follow dates here)")
    for n in os.listdir(os.path.join(M.path, "INBOX")):
        b = n.encode("utf-8", "surrogateescape")
        check(len(b) <= 255, "name at most 255 bytes")
        b.decode("utf-8")
        check(not any(ord(ch) < 32 or ch == "\x7f" for ch in n), "no control")
    sample = sorted(names)[0]
    check("Sender 0" in sample and "Bulk message 0" in sample,
          "sender and subject in %r" % sample)


def test_reading_does_not_set_seen(env):
    path = os.path.join(M.path, "Small")
    dirs = message_dirs(path)
    check(len(dirs) > 0, "Small shows messages to read")
    for d in dirs:
        with open(os.path.join(path, d, "message.eml"), "rb") as f:
            check(len(f.read()) > 0, "message.eml of %s has bytes" % d)
    c = env.imap()
    c.select("Small", readonly=True)
    typ, data = c.search(None, "SEEN")
    c.logout()
    eq(data[0], b"", "no message became \\Seen")


def test_new_and_expunged_messages_show(env):
    c = env.imap()
    c.create("Live")
    c.append("Live", None, None, make_message(500))
    path = os.path.join(M.path, "Live")
    wait_for(lambda: os.path.isdir(path), 15, "the new folder")
    eq(len(message_dirs(path)), 1, "one message")
    c.append("Live", None, None, make_message(501))
    wait_for(lambda: len(message_dirs(path)) == 2, 15, "the new message")
    c.select("Live")
    c.store("1", "+FLAGS", "\\Deleted")
    c.expunge()
    c.logout()
    wait_for(lambda: len(message_dirs(path)) == 1, 15, "the expunge")
    left = message_dirs(path)[0]
    with open(os.path.join(path, left, "message.eml"), "rb") as f:
        check(b"message 501" in f.read(), "the remaining message is 501")


def test_message_files_are_read_only(env):
    d = os.path.join(M.path, "Small", message_dirs(os.path.join(M.path, "Small"))[0])
    for fn in (lambda: open(os.path.join(d, "message.eml"), "w"),
               lambda: open(os.path.join(d, "headers"), "a"),
               lambda: open(os.path.join(d, "new-file"), "w"),
               lambda: os.mkdir(os.path.join(d, "x")),
               lambda: os.chmod(os.path.join(d, "message.eml"), 0o644)):
        try:
            fn()
        except OSError as e:
            check(e.errno in (30, 1, 13), "errno %d" % e.errno)
        else:
            raise AssertionError("a write inside a message directory succeeded")


def test_missing_message_is_enoent(env):
    try:
        os.stat(os.path.join(M.path, "INBOX", "2020-01-01 0000 x \u2014 y \u00b799999"))
    except FileNotFoundError:
        pass
    else:
        raise AssertionError("a message that does not exist was found")


def test_listing_costs_constant_commands(env):
    proxy, cfg = counted(env, "config-proxy")
    try:
        with env.mount(config=cfg) as m:
            proxy.wait_idle()  # the IDLE connection is set up and quiet
            os.listdir(m.path)  # the folder list (LIST) is not counted
            counts = {}
            for box in ("Small", "Bulk"):
                proxy.reset()
                names = os.listdir(os.path.join(m.path, box))
                for n in names:
                    os.stat(os.path.join(m.path, box, n))
                counts[box] = proxy.count_without_idle()
                check(len(names) in (3, 40), "listed %s" % box)
            eq(counts["Small"], counts["Bulk"],
               "commands for 3 vs 40 messages (%r)" % proxy.commands)
            check(counts["Bulk"] <= 2, "at most 2 commands per listing: %r" % counts)
    finally:
        proxy.close()


def test_starttls_mount(env):
    cfg = env.write_config("config-starttls", {
        "imap": "imap://localhost:%s" % env["MFS_IMAP_PORT"]})
    with env.mount(config=cfg) as m:
        check("INBOX" in os.listdir(m.path), "INBOX over STARTTLS")
        check(len(message_dirs(os.path.join(m.path, "Small"))) == 3, "Small over STARTTLS")


def test_check_reports_a_good_account(env):
    r = env.mailfs(["--check", "-o", "config=" + env.config, "test"])
    out = r.stdout.decode()
    eq(r.returncode, 0, "exit status (%s)" % out)
    check("TLSv1." in out and "login: ok" in out, out)
    check(re.search(r"INBOX messages: \d+", out), out)


def test_unknown_ca_is_refused(env):
    cfg = env.write_config("config-otherca", {"ca_file": env["MFS_OTHER_CA"]})
    r = env.mailfs(["--check", "-o", "config=" + cfg, "test"])
    out = r.stdout.decode()
    check(r.returncode != 0, "refused")
    check("unknown CA" in out, out)


def s_server(cert, key):
    """openssl s_server on a free port with the given certificate."""
    from harness import free_port
    port = free_port()
    p = subprocess.Popen(["openssl", "s_server", "-quiet", "-accept",
                          "127.0.0.1:%d" % port, "-cert", cert, "-key", key],
                         stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    import socket

    def up():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False
    wait_for(up, 10, "openssl s_server")
    return p, port


def tls_check_fails(env, cert, key, word):
    p, port = s_server(env[cert], env[key])
    try:
        cfg = env.write_config("config-" + word.replace(" ", ""), {
            "imap": "imaps://localhost:%d" % port})
        r = env.mailfs(["--check", "-o", "config=" + cfg, "test"])
        out = r.stdout.decode()
        check(r.returncode != 0, "refused")
        check(word in out, out)
    finally:
        p.kill()
        p.wait()


def test_wrong_host_name_is_refused(env):
    tls_check_fails(env, "MFS_WRONGHOST_CERT", "MFS_WRONGHOST_KEY", "does not match")


def test_expired_certificate_is_refused(env):
    tls_check_fails(env, "MFS_EXPIRED_CERT", "MFS_EXPIRED_KEY", "expired")


def test_wrong_password_is_refused(env):
    pw = os.path.join(env.dir, "wrong.pass")
    with open(pw, "w") as f:
        f.write("not-the-password\n")
    os.chmod(pw, 0o600)
    cfg = env.write_config("config-wrongpw", {"password_file": pw})
    r = env.mailfs(["--check", "-o", "config=" + cfg, "test"])
    out = r.stdout.decode()
    check(r.returncode != 0, "refused")
    check("refused" in out and "not-the-password" not in out, out)
    mnt = os.path.join(env.dir, "mnt-refused")
    os.mkdir(mnt)
    r = env.mailfs(["-f", "-o", "config=" + cfg, "test", mnt])
    check(r.returncode != 0 and not os.path.ismount(mnt), "no mount")


def test_no_starttls_sends_no_password(env):
    def handler(line):
        tag = line.split(b" ", 1)[0]
        if b"CAPABILITY" in line.upper():
            return b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n" + tag + b" OK done\r\n"
        return tag + b" OK\r\n"
    srv = FakeServer(b"* OK fake server ready\r\n", handler)
    cfg = env.write_config("config-nostarttls", {"imap": "imap://127.0.0.1:%d" % srv.port})
    r = env.mailfs(["--check", "-o", "config=" + cfg, "test"])
    out = r.stdout.decode()
    srv.close()
    check(r.returncode != 0, "refused")
    check("STARTTLS" in out, out)
    sent = b"".join(srv.lines)
    check(env["MFS_PASS"].encode() not in sent and b"LOGIN" not in sent.upper(),
          "no login was sent: %r" % sent)


def test_silent_server_times_out(env):
    srv = FakeServer(None, lambda line: None)
    # an account of its own: --check also reads the status of each mount
    # of the account, and other tests' mounts are not timed here
    cfg = env.write_config("config-silent", {
        "imap": "imaps://127.0.0.1:%d" % srv.port, "timeout": "2"},
        account="silent")
    t0 = time.time()
    r = env.mailfs(["--check", "-o", "config=" + cfg, "silent"], timeout=30)
    took = time.time() - t0
    srv.close()
    check(r.returncode != 0, "failed")
    check(took < 2 + 2, "gave up in %.1f s" % took)
    check("answer" in r.stdout.decode() or "timed out" in r.stdout.decode(),
          r.stdout.decode())


def test_connection_refused_is_reported(env):
    from harness import free_port
    cfg = env.write_config("config-refused", {"imap": "imaps://127.0.0.1:%d" % free_port()})
    r = env.mailfs(["--check", "-o", "config=" + cfg, "test"])
    check(r.returncode != 0 and "refused" in r.stdout.decode().lower(), r.stdout.decode())


def test_idle_shows_new_mail_before_the_listing_ages(env):
    path = os.path.join(M.path, "INBOX")
    before = set(message_dirs(path))
    t0 = time.time()
    c = env.imap()
    c.append("INBOX", None, None, make_message(777, subject="idle check"))
    c.logout()
    # The listing above is less than 5 s old, so only IDLE can have told
    # the mount that INBOX changed.
    wait_for(lambda: any("idle check" in n for n in set(message_dirs(path)) - before),
             3, "the new message through IDLE")
    check(time.time() - t0 < 4.5, "seen before the listing aged")


def test_reading_a_folder_in_a_row_fetches_ahead(env):
    proxy, cfg = counted(env, "config-ahead")
    want = server_messages(env, "Bulk")
    try:
        with env.mount(config=cfg) as m:
            path = os.path.join(m.path, "Bulk")
            names = sorted(message_dirs(path))
            proxy.reset()
            for n in names:
                uid = int(DIRNAME.match(n).group(1))
                with open(os.path.join(path, n, "message.eml"), "rb") as f:
                    eq(f.read(), want[uid], "message.eml of uid %d" % uid)
            fetches = [c for c in proxy.commands if "BODY.PEEK[]" in c]
            print("reading 40 messages in a row: %d fetch commands" % len(fetches))
            check(len(fetches) <= 3, "fetched ahead: %r" % fetches)
    finally:
        proxy.close()


def test_a_long_read_in_a_row_fetches_ahead_in_growing_batches(env):
    """Reading 400 messages one after the other: each batch asks for twice
    as many messages as the one before (32, 64, 128, 256), so the whole
    folder costs 4 fetch commands, and every byte is right. From the
    second batch on, the next batch is asked for while the reader is still
    in the one before: for a reader that takes 5 ms a message (time enough
    for the connection the next batch goes to), the commands for 97.. and
    225.. went out before the reader opened UID 97 and UID 225."""
    want = filled(env, "Row", [make_message(1000 + i) for i in range(400)])
    proxy, cfg = counted(env, "config-row")
    try:
        with env.mount(config=cfg) as m:
            path, names = listed(m, "Row", 400)
            proxy.reset()
            opened = {}
            for n in names:
                uid = int(DIRNAME.match(n).group(1))
                opened[uid] = time.monotonic()
                with open(os.path.join(path, n, "message.eml"), "rb") as f:
                    eq(f.read(), want[uid], "message.eml of uid %d" % uid)
                time.sleep(0.005)
            fetches = [x for x in proxy.commands if "BODY.PEEK[]" in x]
            sets = [re.search(r"FETCH (\S+)", x).group(1) for x in fetches]
            print("reading 400 messages in a row: %d fetch commands: %r"
                  % (len(fetches), sets))
            eq(len(fetches), 4, "fetch commands: %r" % sets)
            uids = sorted(want)
            early = set()
            for t, x in proxy.sent_at:
                m = re.search(r"FETCH (\d+)[:,]", x)
                if "BODY.PEEK[]" not in x or m is None:
                    continue
                first = int(m.group(1))
                if first in (uids[96], uids[224]):
                    check(t < opened[first],
                          "%s sent %.3f s after the reader opened uid %d"
                          % (x[:40], t - opened[first], first))
                    early.add(first)
            eq(early, {uids[96], uids[224]}, "batches asked for early")
    finally:
        proxy.close()


def filled(env, folder, raws):
    """Makes folder on the server with the messages raws, in order;
    returns {uid: bytes} as the server holds them."""
    c = env.imap()
    c.create(folder)
    for raw in raws:
        c.append(folder, None, None, raw)
    c.logout()
    return server_messages(env, folder)


def lazy_message(blobs):
    """A multipart/mixed message: a text body and one base64 attachment
    per blob, named part1.bin, part2.bin, ..."""
    out = ["From: Big <big@example.test>", "To: alice@example.test",
           "Subject: three large attachments",
           "Date: Tue, 14 Nov 2023 10:00:00 +0000",
           "MIME-Version: 1.0",
           'Content-Type: multipart/mixed; boundary="b0undary"', "",
           "preamble that only the whole message has", "--b0undary",
           "Content-Type: text/plain; charset=utf-8", "",
           "See the attached files.", ""]
    for i, blob in enumerate(blobs, 1):
        out += ["--b0undary",
                "Content-Type: application/octet-stream",
                'Content-Disposition: attachment; filename="part%d.bin"' % i,
                "Content-Transfer-Encoding: base64", ""]
        enc = base64.b64encode(blob).decode()
        out += [enc[j:j + 76] for j in range(0, len(enc), 76)]
    out += ["--b0undary--", "epilogue", ""]
    return "\r\n".join(out).encode()


def test_attachment_read_at_once_takes_no_new_connection(env):
    """cat of an attachment of a large message, first thing: fetch-ahead
    brings the message's skeleton, and the attachment comes on the
    connection that brought it once that one is free: no new connection
    (login and the rest: several round trips) for it. Through a link of
    20 ms each way, where that connection is still reading its last reply
    when the reader asks; each run a fresh mount."""
    rnd = random.Random(5)
    blobs = [rnd.randbytes(n) for n in (1200000, 300000)]
    filled(env, "LazyOne", [lazy_message(blobs)])
    proxy, cfg = delayed(env, "config-lazy-one")
    try:
        for run in range(3):
            with env.mount(config=cfg) as m:
                path = os.path.join(m.path, "LazyOne")
                (name,) = message_dirs(path)
                time.sleep(0.5)  # the mount's IDLE connection is up
                before = len(proxy.stats())
                with open(os.path.join(path, name, "part1.bin"), "rb") as f:
                    eq(f.read(), blobs[0], "part1.bin (run %d)" % run)
                # a connection opened meanwhile that brought the
                # attachment (1.6 MB encoded) is what must not happen
                new = [c["bytes_down"] for c in proxy.stats()[before:]]
                check(all(b < 256 * 1024 for b in new),
                      "the attachment came on a new connection (run %d): "
                      "bytes down on each new one: %r" % (run, new))
    finally:
        proxy.close()


def test_reading_one_attachment_fetches_that_attachment_only(env):
    rnd = random.Random(3)
    blobs = [rnd.randbytes(n)
             for n in (1500000, 2000000, 1700000)]
    raw = lazy_message(blobs)
    c = env.imap()
    c.create("Lazy")
    c.append("Lazy", None, None, raw)
    c.logout()
    proxy, cfg = counted(env, "config-lazy")
    try:
        with env.mount(config=cfg) as m:
            path = os.path.join(m.path, "Lazy")
            (name,) = message_dirs(path)
            msg = os.path.join(path, name)
            proxy.reset()
            names = os.listdir(msg)
            for f in ("body.txt", "from", "subject", "headers", "message.eml"):
                os.stat(os.path.join(msg, f))
            looked = proxy.received
            print("looking into a %d-byte message: %d bytes from the server, "
                  "commands %r" % (len(raw), looked,
                                        [c for c in proxy.commands if "FETCH" in c]))
            check(looked < 64 * 1024, "looking inside fetched %d bytes" % looked)
            check({"part1.bin", "part2.bin", "part3.bin"} <= set(names),
                  "attachments listed: %r" % names)
            eq(os.stat(os.path.join(msg, "message.eml")).st_size, len(raw),
               "st_size of message.eml")
            with open(os.path.join(msg, "body.txt"), "rb") as f:
                eq(f.read(), b"See the attached files.\n", "body.txt")

            proxy.reset()
            eq(os.stat(os.path.join(msg, "part2.bin")).st_size, len(blobs[1]),
               "st_size of part2.bin")
            with open(os.path.join(msg, "part2.bin"), "rb") as f:
                eq(f.read(), blobs[1], "part2.bin")
            enc = len(base64.b64encode(blobs[1])) * 78 // 76
            got = proxy.received
            print("reading part2.bin (%d bytes encoded): %d bytes from the "
                  "server, commands %r" % (enc, got, [c for c in proxy.commands if "FETCH" in c]))
            check(enc <= got < enc + 64 * 1024,
                  "one attachment of %d bytes cost %d bytes" % (enc, got))
            check(not any("BODY.PEEK[]" in c for c in proxy.commands),
                  "the whole message was not fetched: %r" % proxy.commands)

            proxy.reset()
            with open(os.path.join(msg, "parts", "3", "content"), "rb") as f:
                eq(f.read(), blobs[1], "parts/3/content, from the cache")
            eq(proxy.received, 0, "bytes for a part already fetched")
            for i in (1, 3):
                eq(os.stat(os.path.join(msg, "part%d.bin" % i)).st_size,
                   len(blobs[i - 1]), "st_size of part%d.bin" % i)
                with open(os.path.join(msg, "part%d.bin" % i), "rb") as f:
                    eq(f.read(), blobs[i - 1], "part%d.bin" % i)
            with open(os.path.join(msg, "message.eml"), "rb") as f:
                eq(f.read(), raw, "message.eml")
    finally:
        proxy.close()
    c = env.imap()
    c.select("Lazy", readonly=True)
    typ, data = c.fetch("1", "(FLAGS)")
    check(b"\\Seen" not in data[0], "still unseen: %r" % data)
    c.logout()


def head_lines(kind, i, step):
    """The header lines of message i of a generated folder: subject
    "kind i", dated step seconds after message i - 1."""
    date = email.utils.formatdate(1700000000 + i * step, localtime=False)
    return ["From: Sender %d <s%d@example.test>" % (i, i),
            "To: alice@example.test", "Subject: %s %d" % (kind, i),
            "Date: " + date, "Message-ID: <%s-%d@example.test>" % (kind, i)]


def read_bodies(path, names, exp):
    """Reads body.txt of the message directories names of path in order,
    each checked against exp[uid]["body.txt"] (mime_reference)."""
    for n in names:
        uid = int(DIRNAME.match(n).group(1))
        with open(os.path.join(path, n, "body.txt"), "rb") as f:
            eq(f.read().hex(), exp[uid]["body.txt"],
               "body.txt of uid %d" % uid)


def with_attachment(head, boundary, text, filename, blob):
    """A multipart/mixed message: header lines head, a text part (its
    lines, headers first) and blob as a base64 attachment."""
    enc = base64.b64encode(blob).decode()
    out = head + ["MIME-Version: 1.0",
                  'Content-Type: multipart/mixed; boundary="%s"' % boundary,
                  "", "--" + boundary] + text + [
                  "", "--" + boundary,
                  "Content-Type: application/octet-stream",
                  'Content-Disposition: attachment; filename="%s"' % filename,
                  "Content-Transfer-Encoding: base64", ""]
    out += [enc[j:j + 76] for j in range(0, len(enc), 76)]
    out += ["--%s--" % boundary, ""]
    return "\r\n".join(out).encode()


def mixed_message(i, rnd):
    """Message i of the Mixed folder: every tenth one is large (a text body
    in quoted-printable and a base64 attachment of 1.1 to 1.5 MB), the
    others small plain text; dates follow i."""
    head = head_lines("mixed", i, 3600)
    if i % 10 != 5:
        return ("\r\n".join(head + ["", "Small body %d, caf\u00e9." % i,
                                     ""])).encode("latin-1", "replace")
    blob = rnd.randbytes(rnd.randint(1100000, 1500000))
    return with_attachment(head, "mx%d" % i, [
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: quoted-printable", "",
        "Large body %d: caf=C3=A9 and a long line that goes=" % i,
        " on after a soft break."], "data%d.bin" % i, blob)


def test_fetch_ahead_brings_large_messages_as_skeletons(env):
    """Reading body.txt of 60 messages in name order, six of them large:
    each batch asks for the structures of its large messages in one
    command (not one per message), in the same burst as its small
    messages, and their headers and small parts in the next; body.txt of
    every message and the attachments of the large ones are byte-exact
    (Python's email module on the server's copy), and reading body.txt of
    a large message fetches none of its attachment."""
    import email.policy
    import mime_reference
    rnd = random.Random(18)
    want = filled(env, "Mixed", [mixed_message(i, rnd) for i in range(60)])
    exp = {uid: mime_reference.expected(email.message_from_bytes(
        raw, policy=email.policy.compat32)) for uid, raw in want.items()}
    large = sorted(u for u, raw in want.items() if len(raw) >= 1024 * 1024)
    eq(len(large), 6, "large messages")
    proxy, cfg = counted(env, "config-mixed")
    try:
        with env.mount(config=cfg) as m:
            path, names = listed(m, "Mixed", 60)
            proxy.reset()
            read_bodies(path, names, exp)
            fetches = [x for x in proxy.commands if "FETCH" in x]
            structs = [x for x in fetches if "BODYSTRUCTURE" in x]
            print("body.txt of 60 messages, 6 large: %d received, "
                  "commands %r" % (proxy.received,
                                   [x[:90] for x in fetches]))
            check(1 <= len(structs) <= 2,
                  "structures asked in batches: %r" % structs)
            check(all("," in x or ":" in x for x in structs),
                  "several structures per command: %r" % structs)
            check(proxy.received < 60 * 4096 + 6 * 64 * 1024,
                  "no attachment fetched: %d bytes" % proxy.received)
            check(not any(re.search(r"FETCH %d \(.*BODY\.PEEK\[\]" % u,
                                    x) for u in large for x in fetches),
                  "no large message fetched whole")
            by_uid = {int(DIRNAME.match(n).group(1)): n for n in names}
            for u in large:
                (att,) = exp[u]["attachments"]
                f = os.path.join(path, by_uid[u], att["filename"])
                eq(os.stat(f).st_size, len(att["content"]) // 2,
                   "st_size of %s" % att["filename"])
                with open(f, "rb") as fh:
                    eq(fh.read().hex(), att["content"],
                       "%s of uid %d" % (att["filename"], u))
                with open(os.path.join(path, by_uid[u], "message.eml"),
                          "rb") as fh:
                    eq(fh.read(), want[u], "message.eml of uid %d" % u)
    finally:
        proxy.close()
        # the module's shared mount may have listed the folders already
        c = env.imap()
        c.delete("Mixed")
        c.logout()


def medium_message(i, rnd):
    """Message i of the Carried folder: every seventh one has an attachment
    of 70 to 150 kB (it comes as a skeleton ahead of a read), the others
    are small; dates follow i."""
    head = head_lines("carried", i, 60)
    if i % 7 != 3:
        return "\r\n".join(head + ["", "Small body %d." % i, ""]).encode()
    return with_attachment(head, "cb%d" % i, [
        "Content-Type: text/plain; charset=utf-8", "",
        "Medium body %d." % i], "c%d.bin" % i,
        rnd.randbytes(rnd.randint(70000, 150000)))


def test_batches_carried_on_one_call_bring_every_message(env):
    """body.txt of 300 messages read in name order through a link of 20
    ms each way and 2 Mbit/s (TLS): the next batches go out on the same
    call while the ones before still come (the server may mix their
    responses), and every body.txt is byte-exact (Python's email module on
    the server's copy); then the attachments of the first messages with
    one, from the skeletons the batches left."""
    import email.policy
    import mime_reference
    rnd = random.Random(21)
    want = filled(env, "Carried", [medium_message(i, rnd)
                                   for i in range(300)])
    exp = {uid: mime_reference.expected(email.message_from_bytes(
        raw, policy=email.policy.compat32)) for uid, raw in want.items()}
    # 2 Mbit/s, uncompressed: a batch takes long enough for the reader to
    # ask for the next one while it still comes, whatever the machine's
    # speed
    proxy, cfg = delayed(env, "config-carried", rate=250000, compress="no")
    try:
        with env.mount(config=cfg, args=("-d",)) as m:
            path, names = listed(m, "Carried", 300)
            proxy.reset()
            read_bodies(path, names, exp)
            rts = proxy.round_trips()
            carried = m.output().count("(carried)")
            print("body.txt of 300 messages, 43 with an attachment: %d "
                  "round trips, %d batches carried" % (rts, carried))
            check(rts <= 12, "round trips for 300 messages: %d" % rts)
            check(carried >= 1, "no batch went out on the call of the "
                  "batch before")
            for n in names[:11]:
                uid = int(DIRNAME.match(n).group(1))
                for att in exp[uid]["attachments"]:
                    with open(os.path.join(path, n, att["filename"]),
                              "rb") as f:
                        eq(f.read().hex(), att["content"],
                           "%s of uid %d" % (att["filename"], uid))
    finally:
        proxy.close()
        c = env.imap()
        c.delete("Carried")
        c.logout()


def test_fetch_ahead_leaves_attachments_out_until_a_run_reads_them(env):
    """50 messages of 120 to 200 kB, each a short text and an attachment,
    read in a row twice on fresh caches. body.txt of each: the attachments
    never come (well under a tenth of the folder's bytes). cp -r of every
    message directory: every file byte-exact, and after the first batch,
    whose messages came without their attachments, the run brings whole
    messages: at most 32 commands ask for one message's bytes."""
    rnd = random.Random(23)
    blobs = [rnd.randbytes(rnd.randint(90000, 150000)) for _ in range(50)]
    want = filled(env, "MidSize", [lazy_message([b]) for b in blobs])
    total = sum(len(raw) for raw in want.values())
    try:
        proxy, cfg = counted(env, "config-midsize-grep")
        try:
            with env.mount(config=cfg) as m:
                path, names = listed(m, "MidSize", 50)
                proxy.reset()
                for n in names:
                    with open(os.path.join(path, n, "body.txt"), "rb") as f:
                        eq(f.read(), b"See the attached files.\n",
                           "body.txt of %s" % n)
                print("body.txt of 50 messages of %d bytes in all: %d "
                      "received" % (total, proxy.received))
                check(proxy.received < total // 10,
                      "attachments fetched: %d bytes of %d"
                      % (proxy.received, total))
        finally:
            proxy.close()
        proxy, cfg = counted(env, "config-midsize-cp")
        out = tempfile.mkdtemp(dir=env.dir)
        try:
            with env.mount(config=cfg) as m:
                path = os.path.join(m.path, "MidSize")
                names = sorted(message_dirs(path))
                proxy.reset()
                subprocess.run(["cp", "-r", "-t", out] +
                               [os.path.join(path, n) for n in names],
                               check=True)
                singles = [x for x in proxy.commands
                           if re.search(r"UID FETCH \d+ \(UID BODY\.PEEK"
                                        r"\[(\]|\d)", x)]
                print("cp -r of 50 messages: %d commands, %d for one "
                      "message's bytes" % (len(proxy.commands), len(singles)))
                check(len(singles) <= 32,
                      "one command a message: %r" % singles[:40])
            for n in names:
                uid = int(DIRNAME.match(n).group(1))
                with open(os.path.join(out, n, "message.eml"), "rb") as f:
                    eq(f.read(), want[uid], "message.eml of uid %d" % uid)
                with open(os.path.join(out, n, "part1.bin"), "rb") as f:
                    eq(f.read(), blobs[uid - 1], "part1.bin of uid %d" % uid)
        finally:
            proxy.close()
            shutil.rmtree(out, ignore_errors=True)
    finally:
        c = env.imap()
        c.delete("MidSize")
        c.logout()


def test_unmount_while_a_batch_comes(env):
    """The first read of a folder starts a batch of 32 messages on its own
    thread; unmounting at once ends the process cleanly, within seconds
    (the batch is finished first), and the message read was right."""
    want = filled(env, "Quit", [make_message(3000 + i) for i in range(120)])
    # an account of its own: `mailfs --check test` elsewhere reads the
    # status of every mount of "test", which keeps it busy a moment
    cfg = env.write_config("config-quit", {}, account="quit")
    try:
        m = env.mount(config=cfg, account="quit")
        try:
            path = os.path.join(m.path, "Quit")
            names = sorted(message_dirs(path))
            uid = int(DIRNAME.match(names[0]).group(1))
            with open(os.path.join(path, names[0], "message.eml"), "rb") as f:
                eq(f.read(), want[uid], "message.eml of uid %d" % uid)
            t0 = time.time()
            r = subprocess.run(["fusermount3", "-u", m.path], timeout=20,
                               stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
            eq(r.returncode, 0, "fusermount3 -u (%s)" % r.stdout)
            rc = m.proc.wait(timeout=20)
            print("unmounted during a batch: exited %d in %.2f s"
                  % (rc, time.time() - t0))
            eq(rc, 0, "mailfs exit status")
            check(time.time() - t0 < 5, "exit took %.1f s" % (time.time() - t0))
        finally:
            m.umount()
    finally:
        c = env.imap()
        c.delete("Quit")
        c.logout()


def test_parallel_readers_use_several_connections(env):
    rnd = random.Random(11)
    blobs = [rnd.randbytes(1300000) for _ in range(6)]
    c = env.imap()
    c.create("Parallel")
    for blob in blobs:
        c.append("Parallel", None, None, lazy_message([blob]))
    c.logout()
    proxy, cfg = counted(env, "config-parallel", connections="3")
    got = {}
    try:
        with env.mount(config=cfg) as m:
            path, names = listed(m, "Parallel", 6)

            def read(name):
                with open(os.path.join(path, name, "part1.bin"), "rb") as f:
                    got[name] = f.read()

            threads = [threading.Thread(target=read, args=(n,)) for n in names]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            with proxy.lock:
                fetching = {cid for cid, cmds in proxy.conns.items()
                            if any("BODYSTRUCTURE" in x or "BODY.PEEK[" in x
                                   for x in cmds)}
            print("6 parallel readers, connections = 3: %d connections "
                  "fetched" % len(fetching))
            check(2 <= len(fetching) <= 3,
                  "fetches spread over the readers, at most 3: %d" % len(fetching))
    finally:
        proxy.close()
    eq(sorted(got.values()), sorted(blobs), "every reader got its bytes")
