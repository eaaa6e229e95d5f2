"""flock-based locks: one per image for downloads, shared locks for running jobs.

Lock files live in ``<cache>/.locks/`` and may be removed by whoever holds them (when an
image is withdrawn); every acquire therefore checks, once it holds the lock, that the
file it locked is still the one at that path, and starts again otherwise.
"""

import fcntl
import logging
import os
import time
from contextlib import contextmanager
from typing import Iterator

from ..errors import TemporaryError

log = logging.getLogger(__name__)

LOCK_DIR = ".locks"
_POLL_MAX = 0.25  # seconds between attempts while someone else holds a lock


class LockTimeout(TemporaryError):
    """Waited too long for a lock (another download of the same image is stuck)."""


def _same_file(fd: int, path: str) -> bool:
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _acquire(path: str, flags: int, operation: int, timeout: float, what: str) -> int:
    """Open ``path`` and flock it, polling until ``timeout``; returns the locked fd."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if time.monotonic() >= deadline:
                raise LockTimeout(f"gave up after {timeout:g}s waiting for {what}") from None
            time.sleep(delay)
            delay = min(delay * 2, _POLL_MAX)
            continue
        except BaseException:
            os.close(fd)
            raise
        if _same_file(fd, path):
            return fd
        os.close(fd)  # removed or replaced while we waited: lock the new one


@contextmanager
def image_lock(cache_dir: str, name: str, timeout: float) -> Iterator["HeldLock"]:
    """Exclusive lock on one image name: whoever holds it alone downloads, verifies,
    replaces or withdraws that image."""
    lock_dir = os.path.join(cache_dir, LOCK_DIR)
    os.makedirs(lock_dir, mode=0o700, exist_ok=True)
    path = os.path.join(lock_dir, name)
    fd = _acquire(path, os.O_RDWR | os.O_CREAT, fcntl.LOCK_EX, timeout,
                  f"another racf-vm fetching image {name!r}")
    held = HeldLock(path)
    try:
        yield held
    finally:
        if held.remove:
            try:
                os.unlink(path)  # still locked: waiters see a different file and retry
            except FileNotFoundError:
                pass
        os.close(fd)


class HeldLock:
    def __init__(self, path: str):
        self.path = path
        self.remove = False  # set when the image is gone for good, to leave nothing behind


@contextmanager
def hold_image(path: str, timeout: float = 60.0) -> Iterator[int]:
    """Hold a shared lock on a base image for as long as a job uses it; yields the fd.

    While any job holds it, ``sync`` does not withdraw the image. If the image is
    replaced while we wait, the new file is the one held; if it is missing or withdrawn,
    TemporaryError.
    """
    try:
        fd = _acquire(path, os.O_RDONLY, fcntl.LOCK_SH, timeout, f"image {path}")
    except FileNotFoundError:
        raise TemporaryError(f"base image {path} is not on this node (withdrawn?)") from None
    try:
        yield fd
    finally:
        os.close(fd)


def try_exclusive(path: str) -> int | None:
    """A non-blocking exclusive lock on an image file: the fd, or None if a job uses it.
    FileNotFoundError if there is no such file."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        log.debug("%s is in use by a running job", path)
        return None
    return fd
