"""The guest's stdout and stderr into the job's own, bounded.

A guest can write without end, and the job's stdout may be a pipe nobody reads: neither
may cost the host unbounded disk, memory or time. Each stream has a byte cap (config
``[limits] max_stdout_bytes``/``max_stderr_bytes``; past it the job is ended), and a
reader that stops reading stalls the wrapper once, for at most ``[timeouts]
output_stall`` seconds, after which the rest is dropped and said so once.
"""

from __future__ import annotations

import logging
import os
import select
from typing import Callable

log = logging.getLogger(__name__)

CHUNK = 4096  # a pipe that select() calls writable takes this much without blocking


class StreamSink:
    def __init__(self, fd: int, name: str, cap: int, stall: float, on_overflow: Callable[[], None]):
        self.fd, self.name, self.cap, self.stall = fd, name, cap, stall
        self.on_overflow = on_overflow
        self.total = 0  # bytes the guest sent, up to the cap
        self.dropped = 0  # bytes not delivered to a reader that stopped reading
        self.overflow = False
        self.dead = False

    def write(self, data: bytes) -> None:
        if self.overflow:
            return
        room = self.cap - self.total
        if len(data) > room:
            data = data[:room]
            self.overflow = True
        self.total += len(data)
        self._deliver(data)
        if self.overflow:
            self.on_overflow()

    def _deliver(self, data: bytes) -> None:
        view = memoryview(data)
        while view and not self.dead:
            try:
                ready = select.select([], [self.fd], [], self.stall)[1]
                if not ready:
                    self._give_up(f"nobody read it for {self.stall:g}s")
                    break
                view = view[os.write(self.fd, view[:CHUNK]):]
            except BlockingIOError:
                continue
            except OSError as exc:  # the job's stdout went away: the job runs on regardless
                self._give_up(exc.strerror or str(exc))
                break
        self.dropped += len(view)

    def _give_up(self, why: str) -> None:
        self.dead = True
        log.warning("the job's %s is not being read (%s); the rest of it is dropped", self.name, why)
