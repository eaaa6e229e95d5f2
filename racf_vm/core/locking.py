"""One way to take a file lock: flock, polled, and every wait bounded.

A lock file may be removed by whoever holds it (an image withdrawn); with
``same_file=True`` an acquire checks, once it holds the lock, that the file it locked is
still the one at that path, and starts again otherwise.
"""

from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from typing import Iterator, Optional

from racf_vm.core.errors import TemporaryError

POLL_MAX = 0.25  # seconds between attempts while someone else holds the lock


class LockTimeout(TemporaryError):
    """Waited longer than the bound for a lock someone else holds."""


def _same_file(fd: int, path: str) -> bool:
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _open(path: str, create: bool, shared: bool) -> int:
    flags = os.O_NOFOLLOW | os.O_CLOEXEC
    if create:
        flags |= os.O_RDWR | os.O_CREAT
    else:
        flags |= os.O_RDONLY
    return os.open(path, flags, 0o600)


def acquire(path: str, *, timeout: float, what: str, shared: bool = False, create: bool = True,
            same_file: bool = False) -> int:
    """Open ``path`` and flock it within ``timeout`` seconds; return the locked fd.

    LockTimeout names ``what`` (who else holds it) when the bound passes;
    FileNotFoundError when ``create`` is False and there is no such file.
    """
    operation = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        fd = _open(path, create, shared)
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if time.monotonic() >= deadline:
                raise LockTimeout(f"gave up after {timeout:g}s waiting for {what}") from None
            time.sleep(min(delay, max(deadline - time.monotonic(), 0.001)))
            delay = min(delay * 2, POLL_MAX)
            continue
        except BaseException:
            os.close(fd)
            raise
        if not same_file or _same_file(fd, path):
            return fd
        os.close(fd)  # removed or replaced while we waited: lock the new one


@contextmanager
def locked(path: str, *, timeout: float, what: str, shared: bool = False, create: bool = True,
           same_file: bool = False) -> Iterator[int]:
    """``acquire`` for a ``with`` block; the lock goes with the fd at the end."""
    fd = acquire(path, timeout=timeout, what=what, shared=shared, create=create, same_file=same_file)
    try:
        yield fd
    finally:
        os.close(fd)


def try_lock(path: str, *, shared: bool = False, create: bool = False) -> Optional[int]:
    """A lock taken without waiting: the fd, or None when someone else holds it.
    FileNotFoundError when ``create`` is False and there is no such file."""
    fd = _open(path, create, shared)
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd
