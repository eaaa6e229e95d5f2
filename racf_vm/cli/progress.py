"""What a long admin command shows while it works: a progress bar per transfer and the
phases of maintenance on a terminal, plain lines otherwise (logs, cron, pipes).

Everything goes to stderr, so a command's stdout (and a maintained guest's output, which
``images maintain`` forwards to stdout and stderr as it comes) stays as it is.
"""

from __future__ import annotations

import sys
import time
from typing import Optional, TextIO

import click

from racf_vm.images.stream import Progress


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class Reporter:
    """Phases and byte counts; ``tty`` says whether bars may be drawn (default: stderr is
    a terminal)."""

    def __init__(self, stream: Optional[TextIO] = None, tty: Optional[bool] = None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self._bar = None
        self._label = ""
        self._done = 0
        self._started = 0.0

    def phase(self, text: str) -> None:
        """One line saying what happens now."""
        self.close()
        click.echo(f"racf-vm: {text}", file=self.stream)

    def bar(self, label: str) -> Progress:
        """A Progress for one transfer: a bar on a terminal, a line at its start and end
        otherwise."""
        self.close()
        self._label, self._done, self._started = label, 0, time.monotonic()

        def update(nbytes: int, total: Optional[int]) -> None:
            if self._done == 0 and self._bar is None:
                if self.tty:
                    self._bar = click.progressbar(length=total, label=label, file=self.stream,
                                                  show_pos=total is None)
                    self._bar.__enter__()
                else:
                    click.echo(f"racf-vm: {label}" + (f" ({_size(total)})" if total else ""),
                               file=self.stream)
            self._done += nbytes
            if self._bar is not None:
                self._bar.update(nbytes)

        return update

    def close(self) -> None:
        """End the current bar (a closing line when there is no terminal)."""
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None
        elif self._done and not self.tty:
            took = time.monotonic() - self._started
            click.echo(f"racf-vm: {self._label}: {_size(self._done)} in {took:.1f}s", file=self.stream)
        self._done = 0

    def for_image(self, name: str) -> Progress:
        """``images sync``'s factory: one bar per image fetched."""
        return self.bar(f"fetching {name}")
