"""racf_vm.guest.channels against unix sockets standing in for qemu's."""

import io
import os
import shutil
import socket
import tempfile
import threading
import time

import pytest

from racf_vm.core.errors import TemporaryError
from racf_vm.guest.channels import GuestChannels
from racf_vm.guest.protocol import CHANNEL_NAMES, StatusLine, parse_status_line


@pytest.mark.parametrize(
    "line, expect",
    [
        (b"started", StatusLine("started")),
        (b"exit 0", StatusLine("exit", code=0)),
        (b"exit 255\r", StatusLine("exit", code=255)),
        (b"error no such user", StatusLine("error", text="no such user")),
        (b"error job workdir exists", StatusLine("error", text="workdir exists", job=True)),
        (b"error \x1b[31mred\xff", StatusLine("error", text="?[31mred\ufffd")),
    ],
)
def test_parse_status_line(line, expect):
    assert parse_status_line(line) == expect


@pytest.mark.parametrize("line", [b"exit 256", b"exit -1", b"exit 0x1", b"exit 0001", b"exit", b"bogus", b""])
def test_parse_status_line_invalid(line):
    assert parse_status_line(line).kind == "invalid"


class FakeQemu:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="racf-ch-")
        self.paths = {n: os.path.join(self.dir, n) for n in CHANNEL_NAMES}
        self.listeners = {}
        for n, p in self.paths.items():
            s = socket.socket(socket.AF_UNIX)
            s.bind(p)
            s.listen(1)
            self.listeners[n] = s
        self.conns = {}

    def accept(self):
        for n, s in self.listeners.items():
            self.conns[n] = s.accept()[0]

    def send(self, name, data):
        self.conns[name].sendall(data)

    def close(self):
        for c in self.conns.values():
            c.close()
        for s in self.listeners.values():
            s.close()

    def cleanup(self):
        self.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def fake():
    f = FakeQemu()
    yield f
    f.cleanup()


def _pump(ch, seconds=5, sink=None):
    out, err, status = bytearray(), bytearray(), []
    r = ch.pump(time.monotonic() + seconds, out.extend, err.extend, sink, status.append)
    return r, bytes(out), bytes(err), status


def test_pump_until_eof(fake):
    ch = GuestChannels(fake.paths, max_output_bytes=10)
    ch.connect(timeout=2)
    fake.accept()
    fake.send(CHANNEL_NAMES[3], b"started\nexi")
    fake.send(CHANNEL_NAMES[0], b"hello ")
    fake.send(CHANNEL_NAMES[1], b"warn")
    fake.send(CHANNEL_NAMES[2], b"0123456789ABCDEF")
    fake.send(CHANNEL_NAMES[0], b"world")
    fake.send(CHANNEL_NAMES[3], b"t 3\n" + b"x" * 5000 + b"\nerror boom")
    fake.close()
    sink = io.BytesIO()
    r, out, err, status = _pump(ch, sink=sink)
    ch.close()
    assert r.reason == "eof" and r.output_overflow and r.output_bytes == 10
    assert sink.getvalue() == b"0123456789"
    assert (out, err) == (b"hello world", b"warn")
    assert [(s.kind, s.code, s.text) for s in status] == [
        ("started", None, ""),
        ("exit", 3, ""),
        ("invalid", None, "status line too long"),
        ("error", None, "boom"),
    ]


def test_deadline_and_interrupt(fake):
    with GuestChannels(fake.paths) as ch:
        ch.connect(timeout=2)
        fake.accept()
        t = time.monotonic()
        assert _pump(ch, seconds=0.3)[0].reason == "deadline"
        assert 0.25 < time.monotonic() - t < 2
        threading.Timer(0.2, lambda: os.write(ch.wakeup_fd, b"x")).start()
        assert _pump(ch, seconds=10)[0].reason == "interrupted"
        fake.send(CHANNEL_NAMES[0], b"later")
        fake.close()
        r, out, _, _ = _pump(ch)  # resumable after an interrupt
        assert (r.reason, out) == ("eof", b"later")


def test_connect_waits_then_gives_up():
    d = tempfile.mkdtemp(prefix="racf-ch-")
    try:
        paths = {n: os.path.join(d, n) for n in CHANNEL_NAMES}
        ch = GuestChannels(paths)
        t = time.monotonic()
        with pytest.raises(TemporaryError, match="could not connect"):
            ch.connect(timeout=0.5)
        assert time.monotonic() - t < 3
    finally:
        shutil.rmtree(d)


def test_missing_channel_name():
    with pytest.raises(TemporaryError):
        GuestChannels({CHANNEL_NAMES[0]: "/x"})
