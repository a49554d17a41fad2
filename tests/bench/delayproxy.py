#!/usr/bin/python3
"""A TCP relay on 127.0.0.1 that delays every byte by a fixed time in each
direction and counts round trips.

    delayproxy.py [--delay-ms 20] [--rate-kbit N] [--proto imap|pop3|smtp]
                  TARGET_PORT

prints the port it listens on, relays until killed, and prints the counts
of every connection on SIGINT/SIGTERM. In-process use:

    p = DelayProxy(target_port, delay=0.020, proto="imap", rate=None)
    ... connect to 127.0.0.1:p.port ...
    p.round_trips()        # total over all connections
    p.stats()              # per connection
    p.reset()              # forget the connections counted so far
    p.close()

A round trip is counted each time the client sends data after the server's
data has reached it since the client last sent, i.e. a client->server burst
that follows a server->client burst. The bytes are not looked at for that,
so TLS traffic is counted the same way (the TLS handshake's own round trips
included).

For plaintext traffic, `proto` also marks the end of login (the server's
answer to IMAP LOGIN/AUTHENTICATE, POP3 PASS/AUTH/APOP, SMTP AUTH), so that
stats() can say how many round trips came after it.

Order is kept: each direction of each connection has one queue of
(due time, bytes) and one sender thread that sleeps until the head is due.

`rate` (bytes per second; --rate-kbit in kbit/s) caps the bandwidth of
each direction, shared by all connections, as one link of that speed
would: a chunk read waits until the bytes before it (of any connection,
in that direction) have gone out, takes
len/rate seconds to go out itself (in pieces of RATE_PIECE bytes, each
delivered when its last byte would have arrived), and then the delay.
The link's buffer is unbounded, so the server is never slowed down by
it, only what reaches the client.
"""
import argparse
import collections
import re
import signal
import socket
import sys
import threading
import time

RATE_PIECE = 4096

LOGIN_RE = {
    "imap": re.compile(rb"^(\S+) (LOGIN|AUTHENTICATE)\b", re.I),
    "pop3": re.compile(rb"^(PASS|AUTH|APOP)\b", re.I),
    "smtp": re.compile(rb"^(AUTH)\b", re.I),
}


class Conn:
    """One relayed connection: the counters and the login tracker."""

    def __init__(self, cid, proto):
        self.id = cid
        self.proto = proto
        self.opened = time.monotonic()
        self.closed = None
        self.lock = threading.Lock()
        self.rts = 0
        self.server_spoke = False  # server data reached the client
        self.bytes_up = 0
        self.bytes_down = 0
        self.login_tag = None  # waiting for the answer to this
        self.login_rts = None  # rts when login was answered
        self.up_buf = b""
        self.down_buf = b""
        self.base = (0, 0, 0)  # counts at the last reset
        self.bursts = []  # the start of each client->server burst

    def client_data(self, data):
        with self.lock:
            self.bytes_up += len(data)
            if self.server_spoke or not self.bursts:
                self.bursts.append(data[:200])
            elif len(self.bursts[-1]) < 200:
                self.bursts[-1] += data[:200 - len(self.bursts[-1])]
            if self.server_spoke:
                self.rts += 1
                self.server_spoke = False
            if self.proto and self.login_rts is None:
                self._scan_up(data)

    def delivered_to_client(self, data):
        with self.lock:
            self.bytes_down += len(data)
            self.server_spoke = True
            if self.login_tag is not None and self.login_rts is None:
                self._scan_down(data)

    def _lines(self, attr, data):
        buf = getattr(self, attr) + data
        lines = buf.split(b"\r\n")
        setattr(self, attr, lines.pop()[-4096:])
        return lines

    def _scan_up(self, data):
        for line in self._lines("up_buf", data):
            m = LOGIN_RE[self.proto].match(line)
            if m:
                self.login_tag = m.group(1) + b" "
                self.down_buf = b""

    def _scan_down(self, data):
        for line in self._lines("down_buf", data):
            if self.proto == "imap":
                done = line.startswith(self.login_tag)
            elif self.proto == "pop3":
                done = line.startswith((b"+OK", b"-ERR"))
            else:
                done = line[:3].isdigit() and line[:1] in (b"2", b"5")
            if done:
                self.login_rts = self.rts
                return

    def rebase(self):
        with self.lock:
            self.base = (self.rts, self.bytes_up, self.bytes_down)
            self.bursts = []

    def snapshot(self):
        with self.lock:
            rts0, up0, down0 = self.base
            after = None
            if self.login_rts is not None:
                after = self.rts - max(self.login_rts, rts0)
            return {
                "id": self.id,
                "round_trips": self.rts - rts0,
                "after_login": after,
                "bytes_up": self.bytes_up - up0,
                "bytes_down": self.bytes_down - down0,
                "open": self.closed is None,
                "bursts": list(self.bursts),
            }


class Direction:
    """One direction of one connection: a reader that stamps each chunk
    with its due time and a sender that writes it out when due."""

    def __init__(self, proxy, src, dst, on_recv, on_sent, link):
        self.proxy = proxy
        self.link = link  # "up" or "down": whose bandwidth it shares
        self.src = src
        self.dst = dst
        self.on_recv = on_recv
        self.on_sent = on_sent
        self.queue = collections.deque()
        self.cond = threading.Condition()
        self.eof = False
        self.done = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._send, daemon=True).start()

    def _read(self):
        while True:
            try:
                data = self.src.recv(262144)
            except OSError:
                data = b""
            now = time.monotonic()
            if data:
                self.on_recv(data)
            with self.cond:
                if data and self.proxy.rate:
                    with self.proxy.link_lock:
                        t = max(now, self.proxy.free_at[self.link])
                        for i in range(0, len(data), RATE_PIECE):
                            piece = data[i:i + RATE_PIECE]
                            t += len(piece) / self.proxy.rate
                            self.queue.append((t + self.proxy.delay, piece))
                        self.proxy.free_at[self.link] = t
                elif data:
                    self.queue.append((now + self.proxy.delay, data))
                else:
                    self.eof = True
                self.cond.notify()
            if not data:
                return

    def _send(self):
        try:
            while True:
                with self.cond:
                    while not self.queue and not self.eof:
                        self.cond.wait()
                    if not self.queue:
                        break
                    due, data = self.queue[0]
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                with self.cond:
                    # Everything else already due goes out in one write.
                    chunks = []
                    now = time.monotonic()
                    while self.queue and self.queue[0][0] <= now:
                        chunks.append(self.queue.popleft()[1])
                data = b"".join(chunks)
                if not data:
                    continue
                # Counted before the write: the peer cannot answer bytes
                # it has not got, and counting after the write would race
                # with a fast answer read by the other direction's thread.
                self.on_sent(data)
                try:
                    self.dst.sendall(data)
                except OSError:
                    break
            try:
                self.dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        finally:
            self.done.set()


class DelayProxy:
    def __init__(self, target_port, delay=0.020, proto=None,
                 target_host="127.0.0.1", port=0, rate=None):
        self.target = (target_host, target_port)
        self.delay = delay
        self.rate = rate  # bytes per second each way, or None
        self.link_lock = threading.Lock()
        self.free_at = {"up": 0.0, "down": 0.0}  # when each direction's
        # link has sent what is queued on it
        self.proto = proto
        self.lock = threading.Lock()
        self.conns = []
        self.next_id = 1
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._start, args=(c,),
                             daemon=True).start()

    def _start(self, c):
        try:
            s = socket.create_connection(self.target, timeout=10)
            s.settimeout(None)
        except OSError:
            c.close()
            return
        for x in (c, s):
            x.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.lock:
            conn = Conn(self.next_id, self.proto)
            self.next_id += 1
            self.conns.append(conn)
        up = Direction(self, c, s, conn.client_data, lambda d: None, "up")
        down = Direction(self, s, c, lambda d: None, conn.delivered_to_client,
                         "down")
        up.done.wait()
        down.done.wait()
        conn.closed = time.monotonic()
        for x in (c, s):
            x.close()

    def stats(self):
        with self.lock:
            conns = list(self.conns)
        return [c.snapshot() for c in conns]

    def round_trips(self):
        return sum(s["round_trips"] for s in self.stats())

    def round_trips_after_login(self):
        """Sum over connections of the round trips after login; None when
        no connection's login was seen (TLS, or no login yet)."""
        vals = [s["after_login"] for s in self.stats()]
        if all(v is None for v in vals):
            return None
        return sum(v for v in vals if v is not None)

    def connections(self):
        with self.lock:
            return len(self.conns)

    def reset(self):
        """Counts start again from zero: closed connections are forgotten,
        open ones keep being relayed and count only what follows."""
        with self.lock:
            self.conns = [c for c in self.conns if c.closed is None]
            conns = list(self.conns)
        for c in conns:
            c.rebase()

    def close(self):
        self.stopped = True
        try:
            self.sock.close()
        except OSError:
            pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--delay-ms", type=float, default=20.0)
    ap.add_argument("--rate-kbit", type=float, default=0,
                    help="bandwidth of each direction (0: no cap)")
    ap.add_argument("--proto", choices=sorted(LOGIN_RE))
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("target_port", type=int)
    a = ap.parse_args()
    p = DelayProxy(a.target_port, a.delay_ms / 1000.0, a.proto, port=a.port,
                   rate=a.rate_kbit * 1000 / 8 if a.rate_kbit else None)
    print(p.port, flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    for s in p.stats():
        print("conn %(id)d: %(round_trips)d round trips "
              "(after login: %(after_login)s), %(bytes_up)d bytes up, "
              "%(bytes_down)d down" % s)
    print("total: %d round trips" % p.round_trips())
    p.close()


if __name__ == "__main__":
    sys.exit(main())
