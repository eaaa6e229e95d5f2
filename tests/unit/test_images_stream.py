"""The download pipeline's bounds, without a network: the decompressed and compressed
caps, xz's memory limit, and the deadline that cuts a blocked read."""

import lzma
import socket
import time
import zlib

import pytest

from racf_vm.images import codecs
from racf_vm.images.deadline import ConnectionWatch, Deadline
from racf_vm.images.stream import ImageTooLargeError, compressed_cap, pump


def _gzip(data: bytes) -> bytes:
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    return comp.compress(data) + comp.flush()


def _run(body: bytes, max_bytes: int, total=None, piece=4096):
    written = []
    chunks = (body[i:i + piece] for i in range(0, len(body), piece))
    got = pump(chunks, total, "gzip", written.append, None, max_bytes, "image t")
    return got, sum(map(len, written))


def test_an_image_of_exactly_the_cap_passes():
    got, size = _run(_gzip(bytes(3 << 20)), 3 << 20)
    assert got.size == size == 3 << 20


def test_one_byte_over_the_cap_stops_with_nothing_past_it_written():
    written = []
    body = _gzip(bytes((3 << 20) + 1))
    with pytest.raises(ImageTooLargeError, match=r"image t decompresses to more than its cap of 3145728"):
        pump([body], None, "gzip", written.append, None, 3 << 20, "image t")
    assert sum(map(len, written)) <= 3 << 20


def test_compressed_input_is_capped_too():
    empty = _gzip(b"")
    cap = compressed_cap(1 << 20)
    with pytest.raises(ImageTooLargeError, match=f"sent more than {cap} compressed bytes"):
        _run(empty * (cap // len(empty) + 1), 1 << 20, piece=65536)
    consumed = []

    def never():
        consumed.append(1)
        yield b""

    with pytest.raises(ImageTooLargeError, match="is 2000000 bytes compressed"):  # announced: refused unread
        pump(never(), 2_000_000, "gzip", lambda b: None, None, 1 << 20, "image t")
    assert not consumed


def test_xz_memory_limit(monkeypatch):
    data = lzma.compress(b"x" * 1000, format=lzma.FORMAT_XZ, preset=6)  # an 8 MiB dictionary
    assert b"".join(codecs.CODECS["xz"].decompressor().feed(data)) == b"x" * 1000
    monkeypatch.setattr(codecs, "XZ_MEMLIMIT", 1 << 20)
    with pytest.raises(codecs.CorruptDataError, match="corrupt xz data"):
        list(codecs.CODECS["xz"].decompressor().feed(data))


class _Conn:
    def __init__(self, sock):
        self.sock = sock


def test_deadline_cuts_a_blocked_read():
    a, b = socket.socketpair()
    watch = ConnectionWatch()
    conn = _Conn(a)
    watch.add(conn)
    a.settimeout(5)  # a read timeout that a trickle would always beat
    start = time.monotonic()
    with Deadline(0.3, watch) as dl:
        assert not dl.expired and 0 < dl.remaining() <= 0.3
        assert a.recv(10) == b""  # woken at the deadline, not after 5 s
    assert dl.fired and dl.expired and 0.25 < time.monotonic() - start < 2
    a.close()
    b.close()


def test_deadline_left_in_time_never_fires():
    a, b = socket.socketpair()
    watch = ConnectionWatch()
    conn = _Conn(a)
    watch.add(conn)
    with Deadline(0.2, watch) as dl:
        b.sendall(b"x")
        assert a.recv(1) == b"x"
    time.sleep(0.3)
    assert not dl.fired
    b.sendall(b"y")
    assert a.recv(1) == b"y"  # the connection is still usable
    a.close()
    b.close()
