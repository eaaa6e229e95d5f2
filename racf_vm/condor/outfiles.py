"""The primitives that write the guest's output into the sandbox, as the job's user.

Used by racf_vm.condor.sandbox.extract_output_tar; nothing here trusts the archive:

- a member's type decides whether it is written at all (``refusal``): only regular files
  and directories are; GNU/PAX sparse members, hard links, symbolic links, devices, FIFOs
  and any other type are refused;
- every directory on a member's path is opened from the sandbox's own fd, one component
  at a time, ``O_NOFOLLOW | O_DIRECTORY`` (``open_dir``): a symbolic link or a
  non-directory anywhere on the path is a ``Conflict`` (nothing is written there), never
  followed, never replaced;
- a file is created ``O_CREAT | O_EXCL | O_NOFOLLOW`` (``write_new_file``) and the bytes
  really written are counted against the cap (``Tally.add_bytes``), whatever size the
  archive declared.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import BinaryIO, Optional

from racf_vm.core.errors import UsageError

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
CHUNK = 1 << 20
FIRST = 5  # how many examples of each kind of trouble the result names


class Conflict(Exception):
    """The sandbox holds something at this path the guest's copy must not replace."""


def refusal(member) -> Optional[str]:
    """Why a member of the guest's archive is never written (None: it may be)."""
    if member.issparse():  # GNU 'S' members and the PAX GNU.sparse.* forms
        return "sparse file"
    if member.islnk():
        return "hard link"
    if member.issym():
        return "symbolic link"
    if member.ischr() or member.isblk():
        return "device"
    if member.isfifo():
        return "fifo"
    if not (member.isreg() or member.isdir()):
        return f"unsupported member type {member.type!r}"
    return None


def describe(st: os.stat_result) -> str:
    mode = st.st_mode
    for test, name in ((stat.S_ISDIR, "directory"), (stat.S_ISLNK, "symbolic link"),
                       (stat.S_ISFIFO, "fifo"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISCHR, "device"), (stat.S_ISBLK, "device"), (stat.S_ISREG, "file")):
        if test(mode):
            return name
    return "special file"


def entry(dir_fd: int, name: str) -> Optional[os.stat_result]:
    """lstat of ``name`` in ``dir_fd`` (None when absent)."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _open_subdir(dir_fd: int, name: str, mode: int) -> int:
    for _ in range(3):
        try:
            return os.open(name, DIR_FLAGS, dir_fd=dir_fd)
        except FileNotFoundError:
            try:
                os.mkdir(name, mode, dir_fd=dir_fd)
            except FileExistsError:
                pass
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            st = entry(dir_fd, name)
            kind = describe(st) if st is not None else "entry"
            raise Conflict(f"{name} is a {kind} in the sandbox") from None
    raise Conflict(f"{name} keeps changing in the sandbox")


def open_dir(root_fd: int, parts: list[str], last_mode: int = 0o755) -> int:
    """An fd of ``root/parts[0]/...``: each component opened from the one before it,
    without following symbolic links; absent ones are made (0755, the last one
    ``last_mode``). Existing directories are used as they are (their mode is left alone)."""
    fd = os.dup(root_fd)
    try:
        for i, part in enumerate(parts):
            sub = _open_subdir(fd, part, last_mode if i == len(parts) - 1 else 0o755)
            os.close(fd)
            fd = sub
        return fd
    except BaseException:
        os.close(fd)
        raise


class Tally:
    """What happened to the members of one archive, and the byte budget."""

    KINDS = ("written", "skipped", "refused", "conflicts", "failed")

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.bytes = 0
        self.counts = dict.fromkeys(self.KINDS, 0)
        self.first: dict[str, list[str]] = {"refused": [], "conflicts": [], "failed": []}

    def note(self, kind: str, rel: str = "", why: str = "") -> None:
        self.counts[kind] += 1
        examples = self.first.get(kind)
        if examples is not None and len(examples) < FIRST:
            examples.append(f"{rel}: {why}")

    def check_room(self, declared: int) -> None:
        """Before anything of a file is touched: a declared size over the rest of the
        budget stops here (the real count in ``add_bytes`` is what binds)."""
        if declared > self.max_bytes - self.bytes:
            self.over()

    def add_bytes(self, n: int) -> None:
        self.bytes += n
        if self.bytes > self.max_bytes:
            self.over()

    def over(self):
        raise UsageError(
            f"the job's output files exceed the site limit of {self.max_bytes} bytes "
            f"({self.counts['written']} file(s) written back before the limit)"
        )

    def result(self) -> dict:
        out = dict(self.counts, bytes=self.bytes)
        out["first_refused"] = self.first["refused"]
        out["first_conflicts"] = self.first["conflicts"]
        out["first_failed"] = self.first["failed"]
        out["first_failure"] = self.first["failed"][0] if self.first["failed"] else ""
        return out


def write_new_file(dir_fd: int, name: str, src: BinaryIO, mode: int, tally: Tally) -> None:
    """Create ``name`` (it must not exist) and copy ``src`` into it, counting every byte.
    On any error the partial file is removed again."""
    try:
        fd = os.open(name, NEW_FILE_FLAGS, mode, dir_fd=dir_fd)
    except FileExistsError:
        raise Conflict("appeared in the sandbox while the output was written back") from None
    try:
        with os.fdopen(fd, "wb", closefd=True) as dst:
            while True:
                chunk = src.read(CHUNK)
                if not chunk:
                    break
                tally.add_bytes(len(chunk))
                dst.write(chunk)
    except BaseException:
        try:
            os.unlink(name, dir_fd=dir_fd)
        except OSError:
            pass
        raise
