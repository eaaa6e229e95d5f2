"""Run a piece of work as the job's user, in a child that has dropped root for good.

Everything the user controls (argv, environment, job ad, the sandbox) is read in such a
child; the privileged parent only receives a small JSON result (and, optionally, a byte
stream it copies into a root-owned file under a size cap). This is the Apptainer stage-1
pattern from security.md §0 rule 2.
"""

import json
import os
import selectors
import signal
import time
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Optional

from . import errors
from .errors import InternalError, RacfError, TemporaryError, UsageError
from .procutil import kill_group

# Error classes a child may report; anything else becomes an internal error.
_REPORTABLE = {
    cls.__name__: cls
    for cls in (
        errors.UsageError,
        errors.RefusedError,
        errors.TemporaryError,
        errors.ConfigError,
        errors.InternalError,
    )
}
_MAX_RESULT = 8 * 1024 * 1024
_MAX_MESSAGE = 400


@dataclass(frozen=True)
class Caller:
    uid: int
    gid: int


def drop_privileges(caller: Caller) -> None:
    """Become the caller for good: no supplementary groups, all uids/gids the caller's."""
    os.setgroups([])
    os.setresgid(caller.gid, caller.gid, caller.gid)
    os.setresuid(caller.uid, caller.uid, caller.uid)
    if os.getresuid() != (caller.uid,) * 3 or os.getresgid() != (caller.gid,) * 3:
        raise InternalError("could not drop privileges")
    if caller.uid != 0:
        try:
            os.setresuid(0, 0, 0)
        except PermissionError:
            return
        raise InternalError("privileges could be regained after dropping them")


def _one_line(text: str) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= _MAX_MESSAGE else line[: _MAX_MESSAGE - 3] + "..."


def _child(caller, func, args, result_w, stream_w, pass_file) -> None:
    status = 0
    try:
        os.setpgid(0, 0)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        drop_privileges(caller)
        call_args = list(args)
        if pass_file is not None:
            call_args.insert(0, pass_file)
        if stream_w is not None:
            call_args.insert(0, os.fdopen(stream_w, "wb", buffering=1 << 16))
        result = func(*call_args)
        if stream_w is not None:
            call_args[0].close()
        payload = {"ok": result}
    except RacfError as exc:
        payload = {"error": type(exc).__name__, "message": exc.message}
        status = 1
    except BaseException as exc:  # the parent must learn of every failure
        payload = {"error": "InternalError", "message": f"{type(exc).__name__}: {exc}"}
        status = 2
    try:
        data = json.dumps(payload).encode()
        with os.fdopen(result_w, "wb") as out:
            out.write(data)
    finally:
        os._exit(status)


def call_as_user(
    caller: Caller,
    func: Callable[..., Any],
    *args: Any,
    timeout: float = 120.0,
    stream_to: Optional[BinaryIO] = None,
    stream_limit: int = 0,
    pass_file: Optional[BinaryIO] = None,
    what: str = "job request",
) -> Any:
    """Call ``func(*args)`` in a child running as ``caller``; return its JSON result.

    With ``stream_to``, ``func`` gets a writable binary file as its first argument and
    what it writes is copied into ``stream_to`` (at most ``stream_limit`` bytes: more is
    a UsageError). With ``pass_file``, ``func`` gets that already-open file (opened by
    the privileged side) as its first argument. A RacfError raised in the child is
    re-raised here with the same class and message.
    """
    result_r, result_w = os.pipe()
    stream_r = stream_w = None
    if stream_to is not None:
        stream_r, stream_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(result_r)
        if stream_r is not None:
            os.close(stream_r)
        _child(caller, func, args, result_w, stream_w, pass_file)
    os.close(result_w)
    if stream_w is not None:
        os.close(stream_w)
    try:
        result, overflow = _collect(result_r, stream_r, stream_to, stream_limit, timeout, what)
    except BaseException:
        kill_group(pid)
        raise
    finally:
        os.close(result_r)
        if stream_r is not None:
            os.close(stream_r)
    _, status = os.waitpid(pid, 0)
    if overflow:
        raise UsageError(f"the {what} is larger than the site limit of {stream_limit} bytes")
    return _decode(result, status, what)


def _collect(result_r, stream_r, stream_to, stream_limit, timeout, what):
    deadline = time.monotonic() + timeout
    sel = selectors.DefaultSelector()
    sel.register(result_r, selectors.EVENT_READ, "result")
    if stream_r is not None:
        sel.register(stream_r, selectors.EVENT_READ, "stream")
    chunks, size, copied, overflow = [], 0, 0, False
    while sel.get_map():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TemporaryError(f"reading the {what} took longer than {timeout:g}s")
        for key, _ in sel.select(min(remaining, 1.0)):
            data = os.read(key.fd, 1 << 16)
            if not data:
                sel.unregister(key.fd)
                continue
            if key.data == "result":
                size += len(data)
                if size > _MAX_RESULT:
                    raise InternalError(f"the {what} result is too large")
                chunks.append(data)
            elif not overflow:
                copied += len(data)
                if copied > stream_limit:
                    overflow = True
                else:
                    stream_to.write(data)
    sel.close()
    return b"".join(chunks), overflow


def _decode(result: bytes, status: int, what: str) -> Any:
    try:
        payload = json.loads(result.decode()) if result else None
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        raise InternalError(f"the helper reading the {what} died (wait status {status})")
    if "ok" in payload:
        return payload["ok"]
    cls = _REPORTABLE.get(payload.get("error"), InternalError)
    return_msg = _one_line(payload.get("message", "unknown error"))
    raise cls(return_msg)
