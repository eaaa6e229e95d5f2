"""Files in the cache and publish directories: never visible until complete.

Everything is written to ``.tmp-<name>-<random>`` (O_EXCL, no symlink followed) in the
destination directory, flushed to disk, then renamed over the final name, and the
directory is fsynced so the rename survives a crash.
"""

import errno
import os
import secrets
from contextlib import contextmanager
from typing import Iterator

from racf_vm.core.errors import TemporaryError

TMP_PREFIX = ".tmp-"


class CacheWriteError(TemporaryError):
    """Writing into the cache (or publish) directory failed: full disk, I/O error..."""


def describe_oserror(exc: OSError, path: str) -> str:
    if exc.errno == errno.ENOSPC:
        return f"no space left on the device holding {os.path.dirname(path)} (writing {path})"
    return f"{path}: {exc.strerror or exc}"


def fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class TempFile:
    """An O_EXCL temporary file beside its final name; ``commit()`` renames it into place."""

    def __init__(self, directory: str, name: str):
        self.directory = directory
        self.final = os.path.join(directory, name)
        self.path = os.path.join(directory, f"{TMP_PREFIX}{name}-{secrets.token_hex(6)}")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            self.fd = os.open(self.path, flags, 0o600)
        except OSError as e:
            raise CacheWriteError(f"cannot create a temporary file: {describe_oserror(e, self.path)}") from None
        self.done = False

    def write(self, data) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view):]
        except OSError as e:
            raise CacheWriteError(describe_oserror(e, self.final)) from None

    def truncate(self) -> None:
        os.ftruncate(self.fd, 0)
        os.lseek(self.fd, 0, os.SEEK_SET)

    def commit(self, mode: int = 0o644) -> os.stat_result:
        """fsync, chmod, rename into place, fsync the directory; the stat of the result."""
        try:
            os.fsync(self.fd)
            os.fchmod(self.fd, mode)
            st = os.fstat(self.fd)
            os.rename(self.path, self.final)
            self.done = True
            fsync_dir(self.directory)
        except OSError as e:
            raise CacheWriteError(describe_oserror(e, self.final)) from None
        finally:
            self.close()
        return st

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def discard(self) -> None:
        self.close()
        if not self.done:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            self.done = True


@contextmanager
def temp_file(directory: str, name: str) -> Iterator[TempFile]:
    """A TempFile removed again unless it was committed, whatever happens inside."""
    tmp = TempFile(directory, name)
    try:
        yield tmp
    finally:
        tmp.discard()


def write_atomic(directory: str, name: str, data: bytes, mode: int = 0o644) -> None:
    with temp_file(directory, name) as tmp:
        tmp.write(data)
        tmp.commit(mode)
