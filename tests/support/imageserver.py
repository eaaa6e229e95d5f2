"""A real HTTP image server for tests and the bench, with faults on demand.

Serves files from a directory on 127.0.0.1 (HTTP/1.1, keep-alive, sendfile), with ETag,
Last-Modified and 304 answers to If-None-Match / If-Modified-Since, and counts requests
per path. ``fault(path, kind, ...)`` makes the next request(s) for that path misbehave:
``500``, ``truncate`` (send part of the body, close), ``stall`` (send part, go silent),
``corrupt`` (flip bytes in the middle), ``no-validators`` (no ETag/Last-Modified),
``slow`` (throttled body, to make concurrent clients overlap), ``trickle`` (``keep``
bytes every ``seconds``, each well within a read timeout, so only an overall deadline
ends it), ``bomb`` (instead of the file, a stream in the codec its name ends with that
expands to ``keep`` bytes of zeros) and ``empty-members`` (``keep`` bytes of empty
members of that codec: endless input, no output). The last two send no Content-Length.
"""

import email.utils
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional
from urllib.parse import unquote, urlsplit

from racf_vm.images.codecs import CODECS, codec_for_file

_BOMB_MEMBER = 1 << 20  # zeros per member of a bomb


@dataclass
class Fault:
    kind: str
    times: Optional[int] = None  # None: every request
    keep: int = 0  # bytes sent before truncate/stall, per trickle step, or bomb size
    seconds: float = 0.0  # stall length, total time for slow, or pause between trickles


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, fmt, *args):  # quiet
        pass

    def do_GET(self):
        owner = self.server.owner
        rel = unquote(urlsplit(self.path).path).lstrip("/")
        fault = owner.note(rel, self.headers)
        if fault and fault.kind == "500":
            self._bare(500)
            return
        path = os.path.join(owner.root, rel)
        if "/" in rel or rel.startswith(".") or not os.path.isfile(path):
            self._bare(404)
            return
        if fault and fault.kind in ("bomb", "empty-members"):
            self._bomb(rel, fault)
            return
        st = os.stat(path)
        etag = f'"{st.st_mtime_ns:x}-{st.st_size:x}"'
        modified = email.utils.formatdate(int(st.st_mtime), usegmt=True)
        validators = not (fault and fault.kind == "no-validators")
        if validators and self._not_modified(etag, int(st.st_mtime)):
            owner.count_304 += 1
            self.send_response(304)
            self.send_header("ETag", etag)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(st.st_size))
        if validators:
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", modified)
        self.end_headers()
        with open(path, "rb") as f:
            self._body(f, st.st_size, fault)

    def _not_modified(self, etag: str, mtime: int) -> bool:
        inm = self.headers.get("If-None-Match")
        if inm is not None:
            return etag in [t.strip() for t in inm.split(",")]
        ims = self.headers.get("If-Modified-Since")
        if ims:
            try:
                return mtime <= email.utils.parsedate_to_datetime(ims).timestamp()
            except (TypeError, ValueError):
                return False
        return False

    def _bare(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _bomb(self, rel: str, fault: Fault) -> None:
        """Concatenated members, as parallel compressors write them; the decoder must
        take them all, so only a cap on its output (or input) stops it."""
        codec = CODECS[codec_for_file(rel)]
        comp = codec.compressor(codec.default_level)
        if fault.kind == "bomb":
            member = comp.compress(bytes(_BOMB_MEMBER)) + comp.flush()
            count = -(-fault.keep // _BOMB_MEMBER)
        else:
            member = comp.compress(b"") + comp.flush()
            count = -(-fault.keep // len(member))
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Connection", "close")  # the body ends when the connection does
        self.end_headers()
        self.close_connection = True
        batch = max(1, (1 << 20) // len(member))
        try:
            for start in range(0, count, batch):
                self.wfile.write(member * min(batch, count - start))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading: what the test wants

    def _body(self, f, size: int, fault: Optional[Fault]) -> None:
        kind = fault.kind if fault else ""
        if kind in ("truncate", "stall"):
            self.wfile.write(f.read(fault.keep))
            if kind == "stall":
                time.sleep(fault.seconds)
            self.close_connection = True
            return
        if kind == "corrupt":
            data = bytearray(f.read())
            mid = len(data) // 2
            for i in range(mid, min(mid + 64, len(data))):
                data[i] ^= 0x5A
            self.wfile.write(bytes(data))
            return
        if kind == "trickle":
            try:
                while chunk := f.read(fault.keep):
                    self.wfile.write(chunk)
                    self.wfile.flush()
                    time.sleep(fault.seconds)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
            return
        if kind == "slow":
            step = max(1, size // 20)
            while chunk := f.read(step):
                self.wfile.write(chunk)
                time.sleep(fault.seconds / 20)
            return
        self.connection.sendfile(f, 0, size)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: "ImageServer"


class ImageServer:
    def __init__(self, root: str):
        self.root = root
        self.counts: Counter = Counter()
        self.count_304 = 0
        self.conditional: list[str] = []  # paths requested with a validator
        self._faults: dict[str, Fault] = {}
        self._lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,),
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/"

    def __enter__(self) -> "ImageServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def fault(self, path: str, kind: str, *, times: Optional[int] = None, keep: int = 0,
              seconds: float = 0.0) -> None:
        with self._lock:
            self._faults[path] = Fault(kind, times, keep, seconds)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()
            self.counts.clear()
            self.conditional.clear()
            self.count_304 = 0

    def note(self, path: str, headers) -> Optional[Fault]:
        with self._lock:
            self.counts[path] += 1
            if headers.get("If-None-Match") or headers.get("If-Modified-Since"):
                self.conditional.append(path)
            fault = self._faults.get(path)
            if fault and fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    del self._faults[path]
            return fault
