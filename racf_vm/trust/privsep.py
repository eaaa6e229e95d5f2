"""Run a piece of work as the job's user, in a child that has dropped root for good.

Everything the user controls (argv, environment, job ad, the sandbox) is read in such a
child; the privileged parent only receives a small JSON result (and, optionally, a byte
stream it copies into a root-owned file under a size cap). This is the Apptainer stage-1
pattern from security.md §0 rule 2.
"""

import os
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Optional

from racf_vm.core import errors
from racf_vm.core.child import run_in_child
from racf_vm.core.errors import InternalError, UsageError

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

    def body(stream_fd: Optional[int]) -> Any:
        drop_privileges(caller)
        call_args = list(args)
        if pass_file is not None:
            call_args.insert(0, pass_file)
        if stream_fd is None:
            return func(*call_args)
        with os.fdopen(stream_fd, "wb", buffering=1 << 16) as stream:
            return func(stream, *call_args)

    report = run_in_child(body, timeout=timeout, what=what, stream_to=stream_to,
                          stream_limit=stream_limit)
    if report.stream_overflow:
        raise UsageError(f"the {what} is larger than the site limit of {stream_limit} bytes")
    payload = report.payload
    if payload is None:
        raise InternalError(f"the helper reading the {what} died (wait status {report.wait_status})")
    if "ok" in payload:
        return payload["ok"]
    cls = _REPORTABLE.get(payload.get("error"), InternalError)
    raise cls(_one_line(payload.get("message", "unknown error")))
