"""How the guest runner talks to the host: four virtio-serial ports, and on the status
port one text line per event.

``started`` just before the command is exec'd; ``exit N`` (0..255) after it ended;
``error <text>`` when the runner itself failed, ``error job <text>`` when it failed for a
reason of the job's own that would repeat on any node. Guest data is hostile: anything else is
``invalid``, and a line is never longer than MAX_STATUS_LINE.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Optional

CHANNEL_NAMES: tuple[str, ...] = (
    "org.racf.vm.stdout",
    "org.racf.vm.stderr",
    "org.racf.vm.output",  # a tar of the job's output files
    "org.racf.vm.status",
)
MAX_STATUS_LINE = 4096


@dataclass(frozen=True)
class StatusLine:
    kind: Literal["started", "exit", "error", "invalid"]
    code: Optional[int] = None  # for "exit"
    text: str = ""  # for "error" and "invalid"
    job: bool = False  # for "error": the job's own fault, not the node's


def _clean(text: bytes) -> str:
    s = text.decode("utf-8", errors="replace")
    return "".join(c if c.isprintable() else "?" for c in s)


def parse_status_line(line: bytes) -> StatusLine:
    """Parse one status line (without its newline)."""
    line = line.rstrip(b"\r")
    if line == b"started":
        return StatusLine("started")
    if line.startswith(b"exit "):
        num = line[5:]
        if num.isdigit() and len(num) <= 3 and int(num) <= 255:
            return StatusLine("exit", code=int(num))
        return StatusLine("invalid", text=_clean(line[:200]))
    if line.startswith(b"error job "):
        return StatusLine("error", text=_clean(line[10:]), job=True)
    if line.startswith(b"error "):
        return StatusLine("error", text=_clean(line[6:]))
    return StatusLine("invalid", text=_clean(line[:200]))


class StatusParser:
    def __init__(self, on_line: Callable[[StatusLine], None]):
        self._on_line = on_line
        self._buf = bytearray()
        self._discarding = False  # inside an over-long line

    def feed(self, data: bytes) -> None:
        self._buf += data
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                if len(self._buf) > MAX_STATUS_LINE:
                    if not self._discarding:
                        self._on_line(StatusLine("invalid", text="status line too long"))
                    self._discarding = True
                    del self._buf[:]
                return
            line = bytes(self._buf[:nl])
            del self._buf[: nl + 1]
            if self._discarding:
                self._discarding = False
                continue
            if len(line) > MAX_STATUS_LINE:
                self._on_line(StatusLine("invalid", text="status line too long"))
                continue
            self._on_line(parse_status_line(line))

    def finish(self) -> None:
        if self._buf and not self._discarding:
            self._on_line(parse_status_line(bytes(self._buf)))
        del self._buf[:]
