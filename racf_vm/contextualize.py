"""Contextualize an overlay with libguestfs in a child process under a time limit.

libguestfs has no overall timeout and its appliance can hang (hostile filesystem, a
stuck QEMU): running it in its own process group lets us kill all of it at the deadline
or when HTCondor asks us to stop.
"""

import json
import logging
import os
import signal
import time
from typing import Callable, Sequence

from .appliance import fixed_appliance
from .context import GuestEntry, GuestfsSettings, guestfs_apply
from .errors import RacfError, TemporaryError
from .procutil import kill_group

log = logging.getLogger(__name__)


class Cancelled(RacfError):
    """The wrapper was asked to stop (SIGTERM from HTCondor) before the guest ran."""

    def __init__(self):
        super().__init__("stopped by HTCondor (SIGTERM); the job's VM was shut down and removed")


def contextualize(
    overlay: str,
    filesystem: str,
    entries: Sequence[GuestEntry],
    settings: GuestfsSettings,
    *,
    timeout: float,
    cancelled: Callable[[], bool] = lambda: False,
) -> float:
    """Write ``entries`` into ``overlay``; returns the seconds it took."""
    started = time.monotonic()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: root, its own process group, reports one JSON line
        os.close(read_fd)
        os.setpgid(0, 0)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        result = {"ok": True}
        try:
            guestfs_apply(overlay, filesystem, entries, settings, fixed_appliance(settings.cachedir))
        except BaseException as exc:  # report every failure to the parent
            result = {"ok": False, "error": " ".join(str(exc).split())[-600:]}
        os.write(write_fd, json.dumps(result).encode())
        os._exit(0)
    os.close(write_fd)
    try:
        status = _wait(pid, started + timeout, cancelled)
        report = _read_all(read_fd)
    finally:
        os.close(read_fd)
    try:
        result = json.loads(report or b"{}")
    except ValueError:
        result = {}
    if not result.get("ok"):
        reason = result.get("error") or f"the libguestfs helper died (wait status {status})"
        raise TemporaryError(f"contextualizing the guest with libguestfs failed: {reason}")
    elapsed = time.monotonic() - started
    log.info("contextualized %s in %.1fs", overlay, elapsed)
    return elapsed


def _wait(pid: int, deadline: float, cancelled: Callable[[], bool]) -> int:
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if cancelled():
            kill_group(pid)
            raise Cancelled()
        if time.monotonic() > deadline:
            kill_group(pid)
            raise TemporaryError("contextualizing the guest with libguestfs timed out")
        time.sleep(0.05)


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        data = os.read(fd, 65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)
