"""The context disk of ``racf-vm images maintain``: the one disk on which the guest runner
runs its command as root.

Same layout as a job's (racf_vm.guest.contextdisk: a ustar control archive at offset 0,
read by the runner with ``tar``), but it carries ``job/maintenance`` and no identity,
working directory or input files. The runner in maintenance mode runs ``argv`` as root
in ``/``, then puts back the image's own files that the maintenance layer moved aside
(racf_vm.guest.install), removes ``/racf`` and powers off cleanly.

Only the ``images maintain`` command (racf_vm.job.maintain) writes this disk: the job
path builds its disk with ``contextdisk.control_archive``, which refuses the marker, and
never imports this module (tests/unit/test_maintenance_marker.py checks both).
"""

from __future__ import annotations

import os
from typing import BinaryIO, Sequence

from racf_vm.core.errors import InternalError
from racf_vm.guest.contextdisk import BLOCK, MAINTENANCE_MARKER, OFFSET_DIGITS, member

MAX_ARGS = 256
MAX_BYTES = 1 << 20


def control_files(argv: Sequence[str], env: Sequence[tuple[str, str]]) -> list[tuple[str, bytes]]:
    """The control files, marker first; argv and env as the job path writes them."""
    if not argv or not argv[0]:
        raise InternalError("a maintenance command needs argv[0]")
    if len(argv) > MAX_ARGS:
        raise InternalError(f"a maintenance command takes at most {MAX_ARGS} arguments")
    files = [(MAINTENANCE_MARKER, b"1\n")]
    files += [(f"job/argv/{i:04d}", a.encode()) for i, a in enumerate(argv)]
    files += [(f"job/env/{i:04d}", f"{k}={v}".encode()) for i, (k, v) in enumerate(env)]
    files.append(("job/input_offset", b"%0*d\n" % (OFFSET_DIGITS, 0)))
    if sum(len(d) for _, d in files) > MAX_BYTES or any("\0" in a for a in argv):
        raise InternalError("the maintenance command is too large or holds a NUL byte")
    return files


def write_maintenance_disk(out: BinaryIO, argv: Sequence[str],
                           env: Sequence[tuple[str, str]]) -> int:
    """Write the maintenance context disk to ``out`` (a new, empty file); its size."""
    archive = b"".join(member(name, data) for name, data in control_files(argv, env))
    archive += b"\0" * (2 * BLOCK)
    out.write(archive)
    out.flush()
    return out.seek(0, os.SEEK_END)
