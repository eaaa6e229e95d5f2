"""Record who connects: a TCP/UDP listener writing one JSON line per peer (network tests).

    listener.py LOG ADDR:PROTO:PORT... [--raw PROTO]

Each TCP connection and UDP datagram is logged as {"proto", "dst", "port", "src",
"sport", "t"} and answered with "sport=N" (what we saw), so the sender can check it too.
"dst" is the local address the peer reached (for IPv4 wildcard listeners too), so one
listener on 0.0.0.0 shows which of a host's addresses were reachable.
--raw PROTO also logs every IPv4 packet of that protocol number ({"proto": "raw", ...}).
Runs until killed. Used inside the test's "site" namespace and on the host.
"""

import json
import select
import socket
import sys
import time

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # Linux <netinet/in.h>; Python < 3.13 lacks the name


def main():
    log = open(sys.argv[1], "a", buffering=1)
    socks = {}
    args = sys.argv[2:]
    raw = None
    if "--raw" in args:
        i = args.index("--raw")
        raw = int(args[i + 1])
        del args[i:i + 2]
    for spec in args:
        addr, proto, port = spec.rsplit(":", 2)
        fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if fam == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if addr == "::" else 1)
        if fam == socket.AF_INET and proto == "udp":
            s.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        s.bind((addr, int(port)))
        if proto == "tcp":
            s.listen(16)
        socks[s] = (proto, addr, int(port))
    if raw is not None:
        r = socket.socket(socket.AF_INET, socket.SOCK_RAW, raw)
        socks[r] = ("raw", "*", raw)
    print("ready", flush=True)

    def record(proto, addr, port, peer):
        log.write(json.dumps({"proto": proto, "dst": addr, "port": port, "src": peer[0],
                              "sport": peer[1], "t": time.time()}) + "\n")

    while True:
        ready, _, _ = select.select(list(socks), [], [], 1.0)
        for s in ready:
            proto, addr, port = socks[s]
            try:
                if proto == "tcp":
                    c, peer = s.accept()
                    record("tcp", c.getsockname()[0], port, peer)
                    c.settimeout(2)
                    try:
                        c.sendall(f"sport={peer[1]}\n".encode())
                    except OSError:
                        pass
                    c.close()
                elif proto == "udp":
                    data, anc, _flags, peer = s.recvmsg(2048, socket.CMSG_SPACE(12))
                    dst = addr
                    for level, kind, blob in anc:  # struct in_pktinfo: ifindex, spec_dst, addr
                        if level == socket.IPPROTO_IP and kind == IP_PKTINFO:
                            dst = socket.inet_ntoa(blob[8:12])
                    record("udp", dst, port, peer)
                    s.sendto(f"sport={peer[1]}\n".encode(), peer)
                else:
                    data, peer = s.recvfrom(65535)
                    record("raw", addr, port, (peer[0], 0))
            except OSError:
                pass


if __name__ == "__main__":
    main()
