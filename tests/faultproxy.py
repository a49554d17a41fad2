"""A fault-injecting TCP proxy for tests: 127.0.0.1:port -> target.

    p = FaultProxy(target_port, seed=1)
    p.stall()            # stop forwarding, keep every connection open
    p.passthrough()      # forward again (held bytes flow on)
    p.close_after(100, "down")   # close each connection after 100 bytes
    p.reset_after(0, "up")       # same, but with a TCP RST (SO_LINGER 0)
    p.trickle(20)        # 1 byte every 20 ms, both directions
    p.refuse()           # new connections get ECONNREFUSED
    p.random_cuts(5000)  # each new connection: a cut point drawn from the seed
    p.kill_all()         # close every open connection now
    p.close()

The mode applies to data forwarded from the moment it is set, on new and
open connections alike. Random cut points come from random.Random(seed), one
draw per new connection in the order connections arrive, so one seed gives
one sequence of faults. `stats` counts what was done. Every thread is a
daemon thread and ends when its sockets close; close() ends them all. Only
127.0.0.1 is ever contacted.
"""
import random
import select
import socket
import struct
import sys
import threading
import time

UP, DOWN, ANY = "up", "down", "any"  # client->server, server->client, both


class _Conn:
    def __init__(self, client, server, cut):
        self.client = client
        self.server = server
        self.sent = {UP: 0, DOWN: 0}
        self.cut = cut  # None or (limit, direction, rst)
        self.dead = False
        self.lock = threading.Lock()

    def shut(self, rst=False):
        with self.lock:
            if self.dead:
                return
            self.dead = True
        for s in (self.client, self.server):
            try:
                if rst:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                 struct.pack("ii", 1, 0))
                else:
                    s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass


def _stop_listening(sock):
    """Closes a listening socket so that new connections are refused at
    once: close() alone leaves it listening while the accept thread
    still waits in accept() on it; shutdown() wakes that thread."""
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


class FaultProxy:
    def __init__(self, target_port, seed=0, target_host="127.0.0.1"):
        if target_host not in ("127.0.0.1", "localhost"):
            raise ValueError("the proxy only talks to 127.0.0.1")
        self.target = ("127.0.0.1", target_port)
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.conns = []
        self.mode = "pass"
        self.limit = None  # (bytes, direction, rst) for close/reset modes
        self.trickle_ms = 0
        self.cut_max = 0
        self.cut_prob = 1.0
        self.stats = {"connections": 0, "refused": 0, "close": 0,
                      "reset": 0, "stalled_bytes": 0, "trickled_bytes": 0}
        self.closed = False
        self.port = None
        self.sock = None
        self._listen(0)

    # --- modes ------------------------------------------------------------

    def passthrough(self):
        self._set("pass")

    def stall(self):
        self._set("stall")

    def trickle(self, ms):
        with self.lock:
            self.trickle_ms = ms
        self._set("trickle")

    def close_after(self, n, direction=ANY):
        with self.lock:
            self.limit = (n, direction, False)
        self._set("limit")

    def reset_after(self, n, direction=ANY):
        with self.lock:
            self.limit = (n, direction, True)
        self._set("limit")

    def random_cuts(self, max_bytes, probability=1.0):
        """Each new connection is cut (closed or reset, in either
        direction) after a number of bytes in [0, max_bytes], with the
        given probability; all drawn from the seed."""
        with self.lock:
            self.cut_max = max_bytes
            self.cut_prob = probability
            for c in self.conns:  # open ones: counted from now
                if not c.dead:
                    c.cut = self._draw(c)
        self._set("random")

    def _draw(self, conn):
        """A cut for conn (None: none), counted from what it has sent.
        Always three draws, so that the sequence of faults depends only on
        the seed and the order of the connections."""
        hit = self.rng.random() < self.cut_prob
        n = self.rng.randint(0, self.cut_max)
        direction, rst = self.rng.choice(((UP, False), (DOWN, False),
                                          (UP, True), (DOWN, True)))
        if not hit:
            return None
        if direction == UP:  # commands are far fewer bytes than replies
            n //= 8
        return (conn.sent[direction] + n, direction, rst)

    def refuse(self):
        """New connections are refused (the listening socket is closed);
        open ones are left alone. passthrough() or another mode listens
        again on the same port."""
        with self.lock:
            self.mode = "refuse"
            sock, self.sock = self.sock, None
        _stop_listening(sock)

    def kill_all(self, rst=False):
        with self.lock:
            conns, self.conns = self.conns, []
        for c in conns:
            c.shut(rst)

    def open_connections(self):
        with self.lock:
            self.conns = [c for c in self.conns if not c.dead]
            return len(self.conns)

    def close(self):
        self.closed = True
        with self.lock:
            sock, self.sock = self.sock, None
        _stop_listening(sock)
        self.kill_all()

    # --- machinery --------------------------------------------------------

    def _set(self, mode):
        with self.lock:
            self.mode = mode
            need_listen = self.sock is None and not self.closed
        if need_listen:
            self._listen(self.port)

    def _listen(self, port):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen(64)
        with self.lock:
            self.sock = s
            self.port = s.getsockname()[1]
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def _accept(self, lsock):
        while not self.closed:
            try:
                c, _ = lsock.accept()
            except OSError:
                return
            try:
                s = socket.create_connection(self.target, timeout=5)
                s.settimeout(None)
            except OSError as e:
                # said, so that a test that then fails shows why
                sys.stderr.write("faultproxy: cannot reach %s:%d: %s\n"
                                 % (self.target + (e,)))
                c.close()
                continue
            with self.lock:
                conn = _Conn(c, s, None)
                if self.mode == "random":
                    conn.cut = self._draw(conn)
                self.conns.append(conn)
                self.stats["connections"] += 1
            threading.Thread(target=self._pipe, args=(conn, c, s, UP),
                             daemon=True).start()
            threading.Thread(target=self._pipe, args=(conn, s, c, DOWN),
                             daemon=True).start()

    def _limit_for(self, conn):
        """(bytes, direction, rst) that applies to conn now, or None."""
        with self.lock:
            if self.mode == "limit":
                return self.limit
            if self.mode == "random":
                return conn.cut
        return None

    def _cut(self, conn, rst):
        with self.lock:
            self.stats["reset" if rst else "close"] += 1
        conn.shut(rst)

    def _pipe(self, conn, src, dst, direction):
        pending = b""
        while not conn.dead and not self.closed:
            mode = self.mode
            if mode == "stall":
                time.sleep(0.02)
                continue
            if not pending:
                try:
                    r, _, _ = select.select([src], [], [], 0.05)
                except (OSError, ValueError):
                    break
                if not r:
                    continue
                try:
                    pending = src.recv(65536)
                except OSError:
                    pending = b""
                if not pending:
                    break
                if self.mode == "stall":
                    with self.lock:
                        self.stats["stalled_bytes"] += len(pending)
                    continue
            lim = self._limit_for(conn)
            chunk = pending
            if lim is not None and lim[1] in (direction, ANY):
                used = (conn.sent[UP] + conn.sent[DOWN] if lim[1] == ANY
                        else conn.sent[direction])
                room = max(0, lim[0] - used)
                if room < len(chunk):
                    chunk = chunk[:room]
                    try:
                        if chunk:
                            dst.sendall(chunk)
                    except OSError:
                        pass
                    conn.sent[direction] += len(chunk)
                    self._cut(conn, lim[2])
                    return
            if self.mode == "trickle":
                chunk = chunk[:1]
                with self.lock:
                    self.stats["trickled_bytes"] += 1
                time.sleep(self.trickle_ms / 1000.0)
            try:
                dst.sendall(chunk)
            except OSError:
                break
            conn.sent[direction] += len(chunk)
            pending = pending[len(chunk):]
        # one side ended: pass the end on, as a TCP relay would
        if not conn.dead:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            if direction == DOWN or self.closed:
                conn.shut()
