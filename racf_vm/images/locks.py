"""flock-based locks: one per image for downloads, shared locks for running jobs.

Lock files live in ``<cache>/.locks/`` and may be removed by whoever holds them (when an
image is withdrawn); every acquire therefore checks, once it holds the lock, that the
file it locked is still the one at that path, and starts again otherwise.
"""

import logging
import os
from contextlib import contextmanager
from typing import Iterator

from racf_vm.core import locking
from racf_vm.core.errors import TemporaryError

log = logging.getLogger(__name__)

LOCK_DIR = ".locks"


@contextmanager
def image_lock(cache_dir: str, name: str, timeout: float) -> Iterator["HeldLock"]:
    """Exclusive lock on one image name: whoever holds it alone downloads, verifies,
    replaces or withdraws that image."""
    lock_dir = os.path.join(cache_dir, LOCK_DIR)
    os.makedirs(lock_dir, mode=0o700, exist_ok=True)
    path = os.path.join(lock_dir, name)
    fd = locking.acquire(path, timeout=timeout, what=f"another racf-vm fetching image {name!r}",
                         same_file=True)
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
        fd = locking.acquire(path, timeout=timeout, what=f"image {path}", shared=True, create=False,
                             same_file=True)
    except FileNotFoundError:
        raise TemporaryError(f"base image {path} is not on this node (withdrawn?)") from None
    try:
        yield fd
    finally:
        os.close(fd)


def try_exclusive(path: str) -> int | None:
    """A non-blocking exclusive lock on an image file: the fd, or None if a job uses it.
    FileNotFoundError if there is no such file."""
    fd = locking.try_lock(path)
    if fd is None:
        log.debug("%s is in use by a running job", path)
    return fd
