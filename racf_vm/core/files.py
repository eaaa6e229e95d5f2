"""One way to read a small file: never through a symlink, never a FIFO or device, never
more than a cap. Over the cap is refused, not truncated (a cut-off config, catalog entry
or runner would be worse than none).
"""

from __future__ import annotations

import os
import stat
from typing import Optional

from racf_vm.core.errors import RacfError, RefusedError, UsageError


def read_capped(
    path: str,
    limit: int,
    what: str,
    *,
    error: type[RacfError] = UsageError,
    dir_fd: Optional[int] = None,
    follow_symlinks: bool = False,
    missing_hint: str = "",
    root_only: bool = False,
) -> bytes:
    """The bytes of the regular file ``path`` (at most ``limit``), or ``error`` naming ``what``.

    O_NONBLOCK: a FIFO planted where a file was expected must not hang us.
    ``follow_symlinks`` is for user paths read by an unprivileged child only.
    ``missing_hint`` is added to the message when the file does not exist.
    ``root_only`` refuses a file that anyone but root owns or can write.
    Paths are shown quoted and cut short: they may come from the user.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
    if not follow_symlinks:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        raise error(f"{what} {path!r:.200} does not exist{missing_hint}") from None
    except (OSError, ValueError) as exc:
        raise error(f"cannot open {what} {path!r:.200}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        if root_only:
            st = os.fstat(fd)
            if st.st_uid != 0 or st.st_mode & 0o022:
                raise error(f"{what} {path!r:.200} must be owned by root and writable by nobody else")
        return _read_fd(fd, limit, what, path, error)
    finally:
        os.close(fd)


def read_capped_or_none(path: str, limit: int, *, root_only: bool = False) -> Optional[bytes]:
    """Bookkeeping files (caches, indexes, stamps): their bytes, or None when missing,
    unreadable, not a regular file or over ``limit`` — the caller then starts afresh."""
    try:
        return read_capped(path, limit, "file", error=RacfError, root_only=root_only)
    except RacfError:
        return None


def _read_fd(fd: int, limit: int, what: str, path: str, error: type[RacfError]) -> bytes:
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise error(f"{what} {path!r:.200} is not a regular file")
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise error(f"cannot read {what} {path!r:.200}: {exc.strerror}") from None
    if size > limit:
        raise error(f"{what} is larger than the limit of {limit} bytes")
    return b"".join(chunks)


def open_dir(path: str, dir_fd: Optional[int] = None) -> int:
    """An fd of the directory ``path``, never through a symlink."""
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)


def check_root_dir_fd(fd: int, what: str) -> None:
    """Refuse a directory that anyone but root owns or can write."""
    st = os.fstat(fd)
    if st.st_uid != 0 or st.st_mode & 0o022:
        raise RefusedError(f"{what} must be owned by root and not writable by others")
