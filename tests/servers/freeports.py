#!/usr/bin/python3
"""Print N distinct free TCP ports on 127.0.0.1, one per line.

The ports are drawn at random below the kernel's ephemeral range
(/proc/sys/net/ipv4/ip_local_port_range), where no outgoing connection
takes its local port: a port from bind(("127.0.0.1", 0)) could be taken
by one of the many connections a test run makes in the moment between
its choice here and the server's bind. All sockets are held open until
every port is chosen, so the ports are distinct; they are closed before
printing, so a server can bind them.
"""
import random
import socket
import sys

LOWEST = 10000


def ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def main():
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    top = ephemeral_low() - 1
    socks = []
    try:
        tries = 0
        while len(socks) < count:
            tries += 1
            if tries > 10000:
                raise SystemExit("freeports: no free port below %d" % top)
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind(("127.0.0.1", random.randint(LOWEST, top)))
            except OSError:
                s.close()
                continue
            socks.append(s)
        ports = [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()
    for p in ports:
        print(p)


if __name__ == "__main__":
    main()
