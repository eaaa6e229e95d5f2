"""Checks for values the job supplies (text, integers, paths): one rule set, used both
when the unprivileged child builds a request and when the privileged side re-reads it."""

import posixpath
from typing import Any

from racf_vm.core.errors import UsageError

MAX_PATH = 4096
MAX_ID = 2**63 - 1


def check_text(what: str, value: Any, max_bytes: int) -> str:
    """Data text: str, UTF-8 encodable, no NUL, at most ``max_bytes`` bytes."""
    if not isinstance(value, str):
        raise UsageError(f"{what} must be a string")
    if "\0" in value:
        raise UsageError(f"{what} contains a NUL character")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise UsageError(f"{what} is not valid UTF-8") from None
    if size > max_bytes:
        raise UsageError(f"{what} is {size} bytes, more than the limit of {max_bytes}")
    return value


def check_int(what: str, value: Any, minimum: int = 0, maximum: int = MAX_ID) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise UsageError(f"{what} must be an integer in {minimum}..{maximum}, not {value!r:.40}")
    return value


def check_abs_path(what: str, value: Any) -> str:
    """An absolute, lexically normalized path on one line."""
    value = check_text(what, value, MAX_PATH)
    if not value.startswith("/") or "\n" in value or "\r" in value:
        raise UsageError(f"{what} must be an absolute path on one line, not {value!r:.80}")
    if posixpath.normpath(value) != value or value.startswith("//"):
        raise UsageError(f"{what} is not a normalized path: {value!r:.80}")
    return value


def normalize_abs_path(what: str, value: str) -> str:
    """Normalize a path the user gave (e.g. _CONDOR_SCRATCH_DIR) and check it."""
    check_text(what, value, MAX_PATH)
    if not value.startswith("/"):
        raise UsageError(f"{what} must be an absolute path, not {value!r:.80}")
    norm = posixpath.normpath(value)
    if norm.startswith("//"):
        norm = "/" + norm.lstrip("/")
    return check_abs_path(what, norm)
