"""Shared fixtures of the integration tests: real servers, configs, mounts.

Env.start() starts Dovecot and Postfix through tests/servers/mailservers.sh
in a fresh temporary directory (ports and passwords in its env file);
Env.stop() stops them. Mount mounts ./mailfs in the foreground on a fresh
directory and unmounts it again. Nothing here talks to anything but
127.0.0.1.
"""
import base64
import imaplib
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SERVERS = os.path.join(ROOT, "tests", "servers", "mailservers.sh")
MAILFS = os.environ.get("MAILFS_BIN", os.path.join(ROOT, "mailfs"))


class Skip(Exception):
    """Raised by a test (or Env.start) that cannot run here."""


def check(cond, msg="check failed"):
    if not cond:
        raise AssertionError(msg)


def eq(a, b, what=""):
    if a != b:
        ra, rb = repr(a), repr(b)
        raise AssertionError("%s: %s != %s" % (what, ra[:300], rb[:300]))


def mutf7_decode(name):
    """IMAP modified UTF-7 to str (independent of mailfs's own decoder)."""
    out, i = [], 0
    while i < len(name):
        c = name[i]
        if c != "&":
            out.append(c)
            i += 1
            continue
        j = name.index("-", i)
        if j == i + 1:
            out.append("&")
        else:
            b64 = name[i + 1:j].replace(",", "/")
            b64 += "=" * (-len(b64) % 4)
            out.append(base64.b64decode(b64).decode("utf-16-be"))
        i = j + 1
    return "".join(out)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_for(cond, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("timed out after %s s waiting for %s" % (timeout, what))


class Mount:
    """A mailfs mount in the foreground. umount() unmounts it and checks
    that mailfs exited cleanly (status 0, no sanitizer report)."""
    live = []

    @classmethod
    def leftover(cls):
        """Unmounts and returns the paths of mounts a test did not
        unmount."""
        left = [m.path for m in cls.live]
        for m in list(cls.live):
            m.umount(check_exit=False)
        return left

    def __init__(self, env, account="test", config=None, args=()):
        self.env = env
        self.path = tempfile.mkdtemp(prefix="mnt-", dir=env.dir)
        self.log = open(os.path.join(env.dir, "mailfs-%s.log" %
                                     os.path.basename(self.path)), "w+",
                        errors="replace")
        cmd = [MAILFS, "-f", "-o", "config=" + (config or env.config)]
        cmd += list(args) + [account, self.path]
        self.proc = subprocess.Popen(cmd, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        Mount.live.append(self)
        try:
            wait_for(lambda: os.path.ismount(self.path) or
                     self.proc.poll() is not None, 20, "the mount")
        except AssertionError:
            self.umount()
            raise
        if not os.path.ismount(self.path):
            out = self.output()
            self.umount(check_exit=False)  # leaves Mount.live
            raise AssertionError("mailfs exited %s: %s\n%s" %
                                 (self.proc.returncode, out,
                                  env.server_log_tail()))

    def output(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def umount(self, check_exit=True):
        if self in Mount.live:
            Mount.live.remove(self)
        if self.log.closed:
            return self.proc.returncode
        # also when the mount is dead (mailfs killed): ismount() is false
        # then, but the kernel still holds it. A mount is busy for a moment
        # while another test's `mailfs --check` reads its status (every
        # mount of the account "test"): try again, as a user would.
        for _ in range(20):
            r = subprocess.run(["fusermount3", "-u", self.path],
                               stderr=subprocess.PIPE)
            if r.returncode == 0 or b"busy" not in r.stderr.lower():
                break
            time.sleep(0.25)
        hung = False
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            hung = True
            self.proc.kill()
            self.proc.wait()
            subprocess.run(["fusermount3", "-uz", self.path],
                           stderr=subprocess.DEVNULL)
        out = self.output()
        self.log.close()
        if check_exit and (hung or self.proc.returncode not in (0, -9) or
                           "Sanitizer" in out or "runtime error" in out):
            raise AssertionError("mailfs did not exit cleanly (status %s%s):\n%s"
                                 % (self.proc.returncode,
                                    ", hung" if hung else "", out[-4000:]))
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.umount()


class Env:
    """The servers of one test run, and ways to reach them."""

    @classmethod
    def start(cls, dovecot_conf=None):
        """Starts the servers. dovecot_conf, when given, is text appended
        to Dovecot's configuration (mailservers.sh's DOVECOT_EXTRA_CONF),
        or a function of the server directory that returns that text (for
        settings naming paths in it)."""
        if not os.path.exists("/dev/fuse"):
            raise Skip("no /dev/fuse on this machine")
        if not os.access(MAILFS, os.X_OK):
            raise Skip("no mailfs binary at %s" % MAILFS)
        env = cls()
        env.dir = tempfile.mkdtemp(prefix="mailfs-test-")
        os.chmod(env.dir, 0o755)
        env.srvdir = os.path.join(env.dir, "servers")
        senv = None
        if dovecot_conf is not None:
            if callable(dovecot_conf):
                dovecot_conf = dovecot_conf(env.srvdir)
            senv = dict(os.environ, DOVECOT_EXTRA_CONF=dovecot_conf)
        for attempt in (1, 2):
            try:
                subprocess.run([SERVERS, "start", env.srvdir], check=True,
                               timeout=120, env=senv)
                break
            except subprocess.CalledProcessError:
                # a port taken between its choice and the server's bind
                # (mailservers.sh says which): once more, on new ports
                subprocess.run([SERVERS, "stop", env.srvdir], timeout=60)
                if attempt == 2:
                    raise
                env.srvdir = os.path.join(env.dir, "servers-again")
        env.vars = {}
        with open(os.path.join(env.srvdir, "env")) as f:
            for line in f:
                line = line.strip()
                if line and not line.startswith("#") and "=" in line:
                    k, v = line.split("=", 1)
                    env.vars[k] = v
        env.config = env.write_config("config", {})
        return env

    def server_log_tail(self, lines=12):
        """The end of Dovecot's log, to tell a server's refusal from a
        fault of mailfs when a mount fails."""
        try:
            with open(os.path.join(self.srvdir, "dovecot.log"),
                      errors="replace") as f:
                tail = f.readlines()[-lines:]
        except OSError as e:
            return "(no Dovecot log: %s)" % e
        return "Dovecot's log ends with:\n" + "".join(tail)

    def stop(self):
        subprocess.run([SERVERS, "stop", self.srvdir], timeout=60)
        if os.environ.get("MAILFS_KEEP") is None:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __getitem__(self, key):
        return self.vars[key]

    # --- configuration ---------------------------------------------------

    def account_lines(self, overrides):
        v = self.vars
        keys = {
            "imap": "imaps://localhost:%s" % v["MFS_IMAPS_PORT"],
            "user": v["MFS_USER"],
            "password_file": os.path.join(self.srvdir, "alice.pass"),
            "ca_file": v["MFS_CA"],
            "cache_dir": os.path.join(self.dir, "cache-" + str(len(os.listdir(self.dir)))),
            "timeout": "5",
        }
        keys.update(overrides)
        return ["%s = %s" % (k, val) for k, val in keys.items() if val is not None]

    def write_config(self, name, overrides, account="test"):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write("[%s]\n" % account)
            f.write("\n".join(self.account_lines(overrides)) + "\n")
        return path

    # --- independent clients ---------------------------------------------

    def ssl_context(self):
        ctx = ssl.create_default_context(cafile=self["MFS_CA"])
        return ctx

    def imap(self, user=None, password=None):
        c = imaplib.IMAP4_SSL("localhost", int(self["MFS_IMAPS_PORT"]),
                              ssl_context=self.ssl_context(), timeout=30)
        c.login(user or self["MFS_USER"], password or self["MFS_PASS"])
        return c

    def mount(self, **kw):
        return Mount(self, **kw)

    def mailfs(self, args, timeout=60):
        return subprocess.run([MAILFS] + list(args), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=timeout)


class CountingProxy:
    """A TCP relay from a local port to target that counts the IMAP
    commands (tagged lines) the client sends and the bytes the server
    sends back, and keeps every byte the client sent (sent_bytes()). For
    plaintext IMAP only. After COMPRESS DEFLATE (RFC 4978) it inflates
    both directions to read them: commands, sent_bytes() and received are
    the protocol's bytes; wire_sent_bytes() and wire_received are what
    went over the connection, and compressed holds the connections that
    were compressed."""

    def __init__(self, target_port):
        self.target = target_port
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.commands = []
        self.sent_at = []  # (time.monotonic(), command) of each command
        self.conns = {}  # connection number -> its command lines
        self.idle = set()  # connections that went into IDLE
        self.sent = {}  # connection number -> every byte the client sent
        self.wire_sent = {}  # the same, as it went over the connection
        self.received = 0  # bytes from the server to mailfs
        self.wire_received = 0
        self.compress_tag = {}  # connection -> tag of its COMPRESS
        self.compressed = set()  # connections compressed since an OK
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            s = socket.create_connection(("127.0.0.1", self.target))
            with self.lock:
                cid = len(self.conns)
                self.conns[cid] = []
                self.sent[cid] = bytearray()
                self.wire_sent[cid] = bytearray()
            threading.Thread(target=self._pipe, args=(c, s, cid, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(s, c, cid, False), daemon=True).start()

    def _server_data(self, cid, raw, state):
        """The protocol bytes of raw, from the server on connection cid;
        switches to inflating after the OK to the client's COMPRESS."""
        if state.get("inflate") is not None:
            return state["inflate"].decompress(raw)
        with self.lock:
            tag = self.compress_tag.get(cid)
        if tag is None:
            return raw
        prev = state.get("lines", b"")
        buf = prev + raw
        while b"\r\n" in buf:
            line, buf = buf.split(b"\r\n", 1)
            if not line.startswith(tag + b" "):
                continue
            with self.lock:
                del self.compress_tag[cid]
                if line[len(tag) + 1:].upper().startswith(b"OK"):
                    self.compressed.add(cid)
                    state["inflate"] = zlib.decompressobj(-15)
            if state.get("inflate") is not None:
                plain = len(raw) - len(buf)  # buf lies within raw
                return raw[:plain] + state["inflate"].decompress(buf)
            break
        state["lines"] = buf[-4096:]
        return raw

    def _pipe(self, src, dst, cid, count):
        buf = b""
        state = {}
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            raw = data
            if count:
                with self.lock:
                    self.wire_sent[cid] += raw
                    if cid in self.compressed and "inflate" not in state:
                        state["inflate"] = zlib.decompressobj(-15)
                if "inflate" in state:
                    data = state["inflate"].decompress(raw)
                with self.lock:
                    self.sent[cid] += data
                buf += data
                while b"\r\n" in buf:
                    line, buf = buf.split(b"\r\n", 1)
                    parts = line.split(b" ", 2)
                    if len(parts) >= 2 and parts[0].isalnum():
                        with self.lock:
                            text = line.decode("ascii", "replace")
                            self.commands.append(text)
                            self.sent_at.append((time.monotonic(), text))
                            self.conns[cid].append(text)
                            if text.split(" ")[1:2] == ["IDLE"]:
                                self.idle.add(cid)
                            if line.split(b" ")[1:] == [b"COMPRESS", b"DEFLATE"]:
                                self.compress_tag[cid] = parts[0]
            else:
                data = self._server_data(cid, raw, state)
                with self.lock:
                    self.received += len(data)
                    self.wire_received += len(raw)
            try:
                dst.sendall(raw)
            except OSError:
                return

    def reset(self):
        with self.lock:
            self.received = 0
            self.wire_received = 0
            self.commands = []
            self.sent_at = []
            for cid in self.conns:
                self.conns[cid] = []

    def sent_bytes(self):
        """{connection number: the bytes the client sent on it}, since
        the proxy started (reset() keeps them)."""
        with self.lock:
            return {cid: bytes(b) for cid, b in self.sent.items()}

    def wire_sent_bytes(self):
        """sent_bytes() as they went over the connection."""
        with self.lock:
            return {cid: bytes(b) for cid, b in self.wire_sent.items()}

    def count(self):
        with self.lock:
            return len(self.commands)

    def count_without_idle(self):
        """Commands since reset() on the connections that never went into
        IDLE (mailfs watches INBOX on a connection of its own)."""
        with self.lock:
            return sum(len(cmds) for cid, cmds in self.conns.items()
                       if cid not in self.idle)

    def wait_idle(self, timeout=15):
        """Waits until a connection has gone into IDLE."""
        wait_for(lambda: bool(self.idle), timeout, "a connection in IDLE")

    def close(self):
        self.closed = True
        self.sock.close()


class FakeServer:
    """A scripted TCP server on 127.0.0.1: greets with `greeting`, answers
    each line with handler(line) -> bytes (None: stay silent), and records
    every line it received."""

    def __init__(self, greeting, handler):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.lines = []
        self.greeting = greeting
        self.handler = handler
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._client, args=(c,), daemon=True).start()

    def _client(self, c):
        try:
            if self.greeting:
                c.sendall(self.greeting)
            f = c.makefile("rb")
            for line in f:
                self.lines.append(line)
                reply = self.handler(line)
                if reply:
                    c.sendall(reply)
        except OSError:
            pass

    def close(self):
        self.sock.close()
