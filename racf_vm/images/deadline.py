"""A wall-clock bound on HTTP transfers: connecting, the headers and every byte of the body.

requests and urllib3 bound each socket operation (one connect, one read), never a whole
transfer: a server that trickles a few bytes now and then, each within the read timeout,
keeps its reader (and the image lock the reader holds) for ever. So every connection a
Client opens joins that Client's ConnectionWatch, and a Deadline, when it passes, shuts
their sockets down from a timer thread: a read blocked on one returns at once, and the
reader, seeing ``fired``, gives up instead of retrying or trusting what it got.
"""

import socket
import threading
import time
import weakref

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool


class ConnectionWatch:
    """The live connections of one Client (held weakly: closing one is urllib3's business)."""

    def __init__(self):
        self._conns: "weakref.WeakSet" = weakref.WeakSet()
        self._lock = threading.Lock()

    def add(self, conn) -> None:
        with self._lock:
            self._conns.add(conn)

    def cut(self) -> None:
        """Shut every connection's socket down; whatever read waits on one returns at once."""
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            sock = getattr(conn, "sock", None)
            sock = getattr(sock, "socket", sock)  # TLS inside TLS (an https proxy)
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except (AttributeError, OSError):
                pass  # closed already, or not connected yet (connect has its own timeout)


def _watched(conn_cls: type, watch: ConnectionWatch) -> type:
    class Watched(conn_cls):
        def connect(self) -> None:
            watch.add(self)
            super().connect()

    return Watched


class WatchedAdapter(HTTPAdapter):
    """An HTTPAdapter whose connections, direct or through an http(s) proxy, join ``watch``.
    (The config accepts no SOCKS proxy, whose pools this would replace.)"""

    def __init__(self, watch: ConnectionWatch):
        self._pool_classes = {
            "http": type("WatchedPool", (HTTPConnectionPool,),
                         {"ConnectionCls": _watched(HTTPConnection, watch)}),
            "https": type("WatchedHTTPSPool", (HTTPSConnectionPool,),
                          {"ConnectionCls": _watched(HTTPSConnection, watch)}),
        }
        super().__init__()

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = self._pool_classes

    def proxy_manager_for(self, proxy: str, **kwargs):
        manager = super().proxy_manager_for(proxy, **kwargs)
        manager.pool_classes_by_scheme = self._pool_classes
        return manager


class Deadline:
    """``seconds`` from now; while entered, its passing cuts every connection of ``watch``."""

    def __init__(self, seconds: float, watch: ConnectionWatch):
        self.seconds = seconds
        self.end = time.monotonic() + seconds  # set again when entered
        self.fired = False
        self._watch = watch
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def _fire(self) -> None:
        self.fired = True  # first: a reader that sees its data end must also see this
        self._watch.cut()

    def remaining(self) -> float:
        return max(0.0, self.end - time.monotonic())

    @property
    def expired(self) -> bool:
        return self.fired or self.remaining() <= 0.0

    def __enter__(self) -> "Deadline":
        self.end = time.monotonic() + self.seconds
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()
        self._timer.join()  # no cut may land on the connections of a later request
