"""Host side of the guest's virtio-serial channels (unix sockets created by qemu).

``GuestChannels`` connects to the four sockets and ``pump`` forwards what the guest
writes: stdout/stderr bytes as they arrive, output-port bytes into a capped sink, status
lines parsed into ``StatusLine``. ``pump`` returns on EOF of every socket (qemu exited),
on the deadline, or when the caller writes to ``wakeup_fd`` (e.g. from a SIGTERM handler:
``os.write(ch.wakeup_fd, b"x")`` is async-signal-safe). Guest data is hostile: nothing is
interpreted beyond the status-line grammar, and every buffer is bounded.
"""

from __future__ import annotations

import errno
import os
import selectors
import socket
import time
from dataclasses import dataclass
from typing import BinaryIO, Callable, Literal, Optional

from racf_vm.core.errors import TemporaryError
from racf_vm.guest.protocol import CHANNEL_NAMES, StatusLine, StatusParser

STDOUT, STDERR, OUTPUT, STATUS = CHANNEL_NAMES
READ_CHUNK = 65536


@dataclass(frozen=True)
class PumpResult:
    reason: Literal["eof", "deadline", "interrupted"]
    output_bytes: int
    output_overflow: bool


class GuestChannels:
    """The four host-side channel sockets of one domain."""

    def __init__(self, paths: dict[str, str], *, max_output_bytes: int = 1 << 30):
        missing = [n for n in CHANNEL_NAMES if n not in paths]
        if missing:
            raise TemporaryError(f"the virtual machine has no channel {missing[0]}")
        self._paths = dict(paths)
        self._socks: dict[str, socket.socket] = {}
        self._max_output = max_output_bytes
        self._output_bytes = 0
        self._output_overflow = False
        self._status: Optional[StatusParser] = None
        self._rpipe, self._wpipe = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._open: set[str] = set()

    @property
    def wakeup_fd(self) -> int:
        """Write any byte here (signal-handler safe) to make ``pump`` return "interrupted"."""
        return self._wpipe

    def interrupt(self) -> None:
        try:
            os.write(self._wpipe, b"x")
        except BlockingIOError:
            pass  # already pending

    def connect(self, timeout: float = 10.0) -> None:
        """Connect to every socket, retrying while qemu has not created them yet."""
        deadline = time.monotonic() + timeout
        for name in CHANNEL_NAMES:
            path = self._paths[name]
            while True:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
                try:
                    s.connect(path)
                    break
                except (FileNotFoundError, ConnectionRefusedError) as exc:
                    s.close()
                    if time.monotonic() >= deadline:
                        self.close()
                        raise TemporaryError(
                            f"could not connect to the guest channel {name}", detail=f"{path}: {exc}"
                        ) from exc
                    time.sleep(0.05)
                except OSError:
                    s.close()
                    self.close()
                    raise
            s.setblocking(False)
            self._socks[name] = s
            self._open.add(name)

    def close(self) -> None:
        for s in self._socks.values():
            s.close()
        self._socks.clear()
        self._open.clear()
        for fd in (self._rpipe, self._wpipe):
            try:
                os.close(fd)
            except OSError:
                pass
        self._rpipe = self._wpipe = -1

    def __enter__(self) -> "GuestChannels":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write_output(self, sink: Optional[BinaryIO], data: bytes) -> None:
        room = self._max_output - self._output_bytes
        if len(data) > room:
            data = data[: max(room, 0)]
            self._output_overflow = True
        if data:
            if sink is not None:
                sink.write(data)
            self._output_bytes += len(data)

    def pump(
        self,
        deadline: float,
        on_stdout: Callable[[bytes], None],
        on_stderr: Callable[[bytes], None],
        output_sink: Optional[BinaryIO],
        on_status_line: Callable[[StatusLine], None],
    ) -> PumpResult:
        """Forward guest data until EOF on all sockets, ``deadline`` (time.monotonic) or wakeup.

        May be called again after "deadline"/"interrupted" to keep draining.
        """
        if self._status is None:
            self._status = StatusParser(on_status_line)
        handlers: dict[str, Callable[[bytes], None]] = {
            STDOUT: on_stdout,
            STDERR: on_stderr,
            OUTPUT: lambda d: self._write_output(output_sink, d),
            STATUS: self._status.feed,
        }
        sel = selectors.DefaultSelector()
        try:
            sel.register(self._rpipe, selectors.EVENT_READ, None)
            for name in self._open:
                sel.register(self._socks[name], selectors.EVENT_READ, name)
            while self._open:
                left = deadline - time.monotonic()
                if left <= 0:
                    return self._result("deadline")
                for key, _ in sel.select(left):
                    if key.data is None:
                        self._drain_wakeup()
                        return self._result("interrupted")
                    name = key.data
                    try:
                        data = self._socks[name].recv(READ_CHUNK)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError as exc:
                        if exc.errno not in (errno.ECONNRESET, errno.EPIPE):
                            raise
                        data = b""
                    if data:
                        handlers[name](data)
                    else:
                        sel.unregister(self._socks[name])
                        self._open.discard(name)
                        if name == STATUS:
                            self._status.finish()
            return self._result("eof")
        finally:
            sel.close()

    def _drain_wakeup(self) -> None:
        try:
            while os.read(self._rpipe, 512):
                pass
        except BlockingIOError:
            pass

    def _result(self, reason: Literal["eof", "deadline", "interrupted"]) -> PumpResult:
        return PumpResult(reason, self._output_bytes, self._output_overflow)
