"""A stand-in for the starter's chirp server: TCP, one text line per request, as HTCondor's
chirp protocol (and htcondor2.htchirp) has it: ``cookie <cookie>`` answered ``0`` (or
``-1``, not authenticated), then ``set_job_attr <name> <value>`` answered ``0``; names and
values backslash-escaped. It records every update and, for each connection, the uid that
owns the client's socket (from /proc/net/tcp), so tests see who really spoke to it.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field


def unquote_words(line: str) -> list[str]:
    """Split a chirp request on unescaped spaces; ``\\X`` stands for ``X``."""
    words, current, escaped = [], [], False
    for ch in line:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == " ":
            words.append("".join(current))
            current = []
        else:
            current.append(ch)
    words.append("".join(current))
    return words


def socket_owner(local_port: int, remote_port: int) -> int | None:
    """The uid owning the TCP socket 127.0.0.1:local_port -> :remote_port (a client's)."""
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            local, remote, uid = fields[1], fields[2], int(fields[7])
            if int(local.split(":")[1], 16) == local_port and int(remote.split(":")[1], 16) == remote_port:
                return uid
    return None


@dataclass
class ChirpServer:
    cookie: str = "c00kie-racf"
    mode: str = "ok"  # "ok" | "hang" (accept, never answer) | "refuse" (wrong cookie for all)
    updates: list = field(default_factory=list)  # (name, value as sent)
    client_uids: list = field(default_factory=list)

    def __post_init__(self):
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept_loop, daemon=True)]
        self._threads[0].start()

    @property
    def config_line(self) -> str:
        return f"127.0.0.1 {self.port} {self.cookie}\n"

    def _accept_loop(self) -> None:
        self._sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, peer = self._sock.accept()
            except OSError:
                continue
            self.client_uids.append(socket_owner(peer[1], self.port))
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rwb") as f:
            authenticated = False
            for raw in iter(f.readline, b""):
                if self.mode == "hang":
                    self._stop.wait(60)
                    return
                words = unquote_words(raw.decode().rstrip("\n"))
                if words[0] == "cookie":
                    authenticated = self.mode != "refuse" and words[1:] == [self.cookie]
                    answer = 0 if authenticated else -1
                elif not authenticated:
                    answer = -1
                elif words[0] == "set_job_attr" and len(words) == 3:
                    self.updates.append((words[1], words[2]))
                    answer = 0
                else:
                    answer = -8  # invalid request
                f.write(b"%d\n" % answer)
                f.flush()

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        for t in self._threads:
            t.join(timeout=5)
