#!/usr/bin/python3
"""Print N distinct free TCP ports on 127.0.0.1, one per line.

All sockets are held open until every port is chosen, so the ports are
distinct; they are closed before printing, so a server can bind them.
"""
import socket
import sys


def main():
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        ports = [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()
    for p in ports:
        print(p)


if __name__ == "__main__":
    main()
