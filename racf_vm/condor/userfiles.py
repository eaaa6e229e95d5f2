"""A single file of the sandbox, read or written as the job's user (in a privsep child).

Storage uses these: the user's data image is read from the sandbox into a copy root owns;
an exported scratch image is written back into the sandbox as the user's own file. Only
plain names directly in the sandbox, never following a symlink, never a FIFO or device.
"""

from __future__ import annotations

import os
import stat
from typing import BinaryIO

from racf_vm.core.errors import RacfError, UsageError
from racf_vm.images import imageheader

CHUNK = 1 << 20


def _open_sandbox(workdir: str) -> int:
    return os.open(workdir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)


def _open_data(workdir: str, name: str) -> int:
    root = _open_sandbox(workdir)
    try:
        return os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=root)
    except FileNotFoundError:
        raise UsageError(f"--data: {name} is not in the job's sandbox (transfer it as an input file)") from None
    except OSError as exc:
        raise UsageError(f"--data: cannot open {name} ({exc.strerror}): it must be a regular file") from None
    finally:
        os.close(root)


def check_data_file(workdir: str, name: str, fmt: str, limit: int) -> int:
    """Refuse a --data file early, before anything is made for the job (root checks its own
    copy again later: this is for a clear, early message); its virtual size, which bounds
    what the file and a read-write overlay on it may take."""
    fd = _open_data(workdir, name)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(f"--data: {name} is not a regular file")
        if st.st_size > limit:
            raise UsageError(f"--data: {name} is larger than the site limit of {limit >> 20} MiB")
        try:
            if fmt == "qcow2":
                virtual = imageheader.check_qcow2_header(os.pread(fd, 1 << 21, 0), st.st_size, name)
            else:
                imageheader.check_raw_header(os.pread(fd, 512, 0), name)
                virtual = st.st_size
        except RacfError as exc:
            raise UsageError(f"--data {name}: " + exc.message.split(": ", 1)[-1]) from None
        if virtual > limit:
            raise UsageError(f"--data: {name} is a disk of {virtual >> 20} MiB, more than the site "
                             f"limit of {limit >> 20} MiB")
        return max(virtual, st.st_size)
    finally:
        os.close(fd)


def stream_file(out: BinaryIO, workdir: str, name: str) -> int:
    """Copy the sandbox's regular file ``name`` to ``out``; its size."""
    fd = _open_data(workdir, name)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UsageError(f"--data: {name} is not a regular file")
        total = 0
        while chunk := f.read(CHUNK):
            out.write(chunk)
            total += len(chunk)
    return total


def write_export(src: BinaryIO, workdir: str, name: str) -> int:
    """Write ``src`` into the sandbox as ``name`` (replacing a regular file of that name,
    never anything else); its size."""
    root = _open_sandbox(workdir)
    tmp = f".{name}.racf-vm-{os.getpid()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                     dir_fd=root)
        try:
            with os.fdopen(fd, "wb") as out:
                total = 0
                while chunk := src.read(CHUNK):
                    out.write(chunk)
                    total += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            try:
                st = os.stat(name, dir_fd=root, follow_symlinks=False)
                if not stat.S_ISREG(st.st_mode):
                    raise UsageError(f"cannot export {name}: the sandbox has a non-file of that name")
            except FileNotFoundError:
                pass
            os.rename(tmp, name, src_dir_fd=root, dst_dir_fd=root)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=root)
            except OSError:
                pass
            raise
    finally:
        os.close(root)
    return total
