"""The job's context on a small read-only disk of its own, written by the wrapper itself.

No filesystem and no libguestfs: the disk is a byte stream the guest runner reads with
``tar``, so nothing the user supplied ever reaches a guest filesystem driver. Layout:

- offset 0: a ustar archive of control files, all under ``job/``: ``uid``, ``gid``,
  ``user``, ``workdir``, ``workdir_root`` (one line each: the working directory is always
  exactly ``<workdir_root>/<one name>``; the runner refuses anything else),
  ``argv/0000``... (the command, then each argument,
  exact bytes), ``env/0000``... (``NAME=value``, exact bytes) and ``input_offset``
  (decimal, 20 digits: where the input archive starts; 0 when there is none);
- at ``input_offset`` (a multiple of ALIGN): the tar of the job's input files, as the
  job's user wrote it (racf_vm.condor.sandbox); the runner extracts it as that user.

The disk is attached read-only with the serial SERIAL; the busybox guest has no udev, so
the runner finds it through ``/sys/block/vdX/serial``.
"""

from __future__ import annotations

import io
import os
import tarfile
from typing import BinaryIO, Callable, Optional

from racf_vm.core.errors import InternalError

SERIAL = "racf-context"
ALIGN = 4096
OFFSET_DIGITS = 20
BLOCK = 512
# Present only on the disk ``racf-vm images maintain`` writes (racf_vm.guest.maintdisk):
# then the runner runs the command as root. A job's disk never carries it.
MAINTENANCE_MARKER = "job/maintenance"


def member(name: str, data: bytes) -> bytes:
    """One ustar member (root's, 0600, no time): the control archive's only kind."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o600
    info.mtime = 0
    info.uname = info.gname = "root"
    header = info.tobuf(format=tarfile.USTAR_FORMAT, encoding="utf-8", errors="strict")
    return header + data + b"\0" * (-len(data) % BLOCK)


def control_files(request, workdir_root: str) -> list[tuple[str, bytes]]:
    """(name, content) of every control file, in archive order.

    ``workdir_root`` is the directory the working directory must sit directly in (the
    site's execute directory): an absolute, normalized path the caller has checked. It is
    carried as it is; the guest runner checks both paths again and refuses a mismatch.
    """
    files = [
        ("job/uid", b"%d\n" % request.uid),
        ("job/gid", b"%d\n" % request.gid),
        ("job/user", request.user.encode() + b"\n"),
        ("job/workdir", request.workdir.encode() + b"\n"),
        ("job/workdir_root", workdir_root.encode() + b"\n"),
    ]
    # storage: where the disk with serial racf-scratch / racf-data is mounted, and how
    if getattr(request, "scratch_path", ""):
        files.append(("job/scratch_path", request.scratch_path.encode() + b"\n"))
    if getattr(request, "data_path", ""):
        files.append(("job/data_path", request.data_path.encode() + b"\n"))
        files.append(("job/data_mode", request.data_mode.encode() + b"\n"))
    argv = (request.command, *request.args)
    files += [(f"job/argv/{i:04d}", a.encode()) for i, a in enumerate(argv)]
    files += [(f"job/env/{i:04d}", f"{k}={v}".encode()) for i, (k, v) in enumerate(request.env)]
    return files


def control_archive(request, workdir_root: str, with_input: bool) -> tuple[bytes, int]:
    """The control archive and the offset of the input archive (0 without input).

    Pure. The offset member has a fixed width, so the archive's size does not depend on
    the value it carries.
    """
    files = control_files(request, workdir_root)
    if any(name == MAINTENANCE_MARKER for name, _ in files):
        raise InternalError("a job's context disk must never carry the maintenance marker")
    body = b"".join(member(name, data) for name, data in files)

    def archive(offset: int) -> bytes:
        return body + member("job/input_offset", b"%0*d\n" % (OFFSET_DIGITS, offset)) + b"\0" * (2 * BLOCK)

    if not with_input:
        return archive(0), 0
    size = len(archive(0))
    offset = size + (-size % ALIGN)
    return archive(offset), offset


def write_context_disk(out: BinaryIO, request, workdir_root: str,
                       write_input: Optional[Callable[[BinaryIO], None]] = None) -> int:
    """Write the context disk to ``out`` (a new, empty file); returns its size.

    ``write_input(out)`` appends the input archive at the current position (it is called
    with ``out`` positioned at the input offset).
    """
    control, offset = control_archive(request, workdir_root, write_input is not None)
    out.write(control)
    if write_input is not None:
        out.write(b"\0" * (offset - len(control)))
        out.flush()
        write_input(out)
    out.flush()
    size = out.seek(0, os.SEEK_END)
    pad = -size % BLOCK or 0
    if size == 0 or pad:
        out.write(b"\0" * (pad or BLOCK))
    out.flush()
    return out.seek(0, os.SEEK_END)


def read_context_disk(data: bytes) -> tuple[dict[str, bytes], Optional[bytes]]:
    """What a guest would read: {name: content} and the input archive (for tests and tools)."""
    files = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for m in tar:
            files[m.name] = tar.extractfile(m).read()
    offset = int(files.get("job/input_offset", b"0"))
    return files, (data[offset:] if offset else None)
