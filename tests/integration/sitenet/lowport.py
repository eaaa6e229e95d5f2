"""A service that, like an NFS server exporting with ``secure``, trusts only peers whose
source port is reserved (below 1024): it answers "ok <port>" to those and "refused <port>"
to everyone else, then closes. Each connection is logged as a JSON line.

    python lowport.py LOG ADDR:PORT [ADDR:PORT ...]      (prints "ready" once listening)
"""

import json
import selectors
import socket
import sys
import time


def main() -> None:
    log_path, endpoints = sys.argv[1], sys.argv[2:]
    sel = selectors.DefaultSelector()
    for ep in endpoints:
        host, port = ep.rsplit(":", 1)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, int(port)))
        s.listen(16)
        sel.register(s, selectors.EVENT_READ)
    print("ready", flush=True)
    deadline = time.monotonic() + 3600  # a forgotten service stops by itself
    while time.monotonic() < deadline:
        for key, _ in sel.select(timeout=1.0):
            conn, (src, sport) = key.fileobj.accept()
            with conn:
                verdict = "ok" if sport < 1024 else "refused"
                conn.settimeout(2.0)
                try:
                    conn.sendall(f"{verdict} {sport}\n".encode())
                except OSError:
                    pass
            with open(log_path, "a") as f:
                f.write(json.dumps({"t": time.time(), "dst": key.fileobj.getsockname()[0], "src": src,
                                    "sport": sport, "verdict": verdict}) + "\n")


if __name__ == "__main__":
    main()
