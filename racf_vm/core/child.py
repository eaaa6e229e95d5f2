"""One way to run a piece of work in a child process with a deadline.

The child leads its own process group (so everything it starts can be killed with it),
runs ``body`` and reports one JSON value on a pipe: ``{"ok": result}`` or
``{"error": class name, "message": text}``. The parent waits for that report within the
deadline, optionally copying a byte stream the child writes (capped), and kills the whole
group on timeout, on cancellation, or on any error of its own. libguestfs and work done
as the job's user both run like this: neither has a timeout of its own.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import time
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Optional

from racf_vm.core.errors import Cancelled, InternalError, RacfError, TemporaryError

MAX_REPORT = 8 * 1024 * 1024
CANCEL_POLL = 0.1  # seconds: how soon a cancellation is noticed


def kill_group(pid: int) -> None:
    """SIGKILL the process group led by ``pid`` and reap the leader."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    os.waitpid(pid, 0)


@dataclass(frozen=True)
class ChildReport:
    payload: Optional[dict]  # None: the child died without a report
    wait_status: int
    stream_overflow: bool = False


def _child_main(body: Callable[[Optional[int]], Any], report_w: int, stream_w: Optional[int]) -> None:
    status = 0
    try:
        os.setpgid(0, 0)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        payload = {"ok": body(stream_w)}
    except RacfError as exc:
        payload = {"error": type(exc).__name__, "message": exc.message}
        status = 1
    except BaseException as exc:  # the parent must learn of every failure
        payload = {"error": "InternalError", "message": f"{type(exc).__name__}: {exc}"}
        status = 2
    try:
        data = json.dumps(payload).encode()
        with os.fdopen(report_w, "wb") as out:
            out.write(data)
    finally:
        os._exit(status)


def run_in_child(
    body: Callable[[Optional[int]], Any],
    *,
    timeout: float,
    what: str,
    cancelled: Callable[[], bool] = lambda: False,
    stream_to: Optional[BinaryIO] = None,
    stream_limit: int = 0,
) -> ChildReport:
    """Run ``body(stream_fd)`` in a child; return its report.

    ``stream_fd`` is the write end of a pipe whose bytes go to ``stream_to`` (at most
    ``stream_limit``; more sets ``stream_overflow``), or None without ``stream_to``.
    TemporaryError when ``timeout`` passes, Cancelled when ``cancelled()`` turns true.
    """
    report_r, report_w = os.pipe()
    stream_r = stream_w = None
    if stream_to is not None:
        stream_r, stream_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(report_r)
        if stream_r is not None:
            os.close(stream_r)
        _child_main(body, report_w, stream_w)
    os.close(report_w)
    if stream_w is not None:
        os.close(stream_w)
    try:
        data, overflow = _collect(report_r, stream_r, stream_to, stream_limit,
                                  time.monotonic() + timeout, cancelled, what, timeout)
    except BaseException:
        kill_group(pid)
        raise
    finally:
        os.close(report_r)
        if stream_r is not None:
            os.close(stream_r)
    _, status = os.waitpid(pid, 0)
    try:
        payload = json.loads(data.decode()) if data else None
    except ValueError:
        payload = None
    return ChildReport(payload if isinstance(payload, dict) else None, status, overflow)


def _collect(report_r, stream_r, stream_to, stream_limit, deadline, cancelled, what, timeout):
    sel = selectors.DefaultSelector()
    sel.register(report_r, selectors.EVENT_READ, "report")
    if stream_r is not None:
        sel.register(stream_r, selectors.EVENT_READ, "stream")
    chunks, size, copied, overflow = [], 0, 0, False
    try:
        while sel.get_map():
            if cancelled():
                raise Cancelled()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TemporaryError(f"the {what} took longer than {timeout:g}s")
            for key, _ in sel.select(min(remaining, CANCEL_POLL)):
                data = os.read(key.fd, 1 << 16)
                if not data:
                    sel.unregister(key.fd)
                elif key.data == "report":
                    size += len(data)
                    if size > MAX_REPORT:
                        raise InternalError(f"the {what} sent too large a report")
                    chunks.append(data)
                elif not overflow:
                    copied += len(data)
                    overflow = copied > stream_limit
                    if not overflow:
                        stream_to.write(data)
    finally:
        sel.close()
    return b"".join(chunks), overflow
