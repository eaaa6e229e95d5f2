"""Carrying out a StoragePlan (racf_vm.job.storageplan): making the disks, and exporting.

Root makes every file in the job directory itself (created exclusively, then handed to
QEMU's uid); the user's files are only ever read or written by a child running as the
user (racf_vm.condor.userfiles); what the user brought is validated like a base image
before QEMU sees it.
"""

from __future__ import annotations

import logging
import os

from racf_vm.condor import userfiles
from racf_vm.core import runcmd
from racf_vm.core.errors import RacfError, UsageError
from racf_vm.images.imageheader import validate_base_image
from racf_vm.job.storageplan import Export, StoragePlan
from racf_vm.trust import privsep
from racf_vm.vm import disks

log = logging.getLogger(__name__)

QEMU_IMG = "/usr/bin/qemu-img"
MKFS = "/usr/sbin/mkfs.ext4"
SETPRIV = "/usr/bin/setpriv"


def _new_file(path: str) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)


def make_disks(plan: StoragePlan, caller: privsep.Caller, workdir: str, qemu_uid: int, qemu_gid: int,
               timeout: float) -> None:
    if plan.scratch is not None:
        _make_scratch(plan.scratch.path, plan.scratch_bytes, caller, qemu_uid, qemu_gid)
    copy = plan.data_copy
    if copy is None:
        return
    with os.fdopen(_new_file(copy.path), "wb") as out:
        privsep.call_as_user(caller, userfiles.stream_file, workdir, copy.source, stream_to=out,
                             stream_limit=copy.limit, timeout=timeout, what=f"--data file {copy.source}")
    try:
        validate_base_image(copy.path, copy.format)  # what the user brought is data, not trust
    except RacfError as exc:
        raise UsageError(f"--data {copy.source}: " + exc.message.split(": ", 1)[-1]) from None
    os.chown(copy.path, qemu_uid, qemu_gid)
    data = next(d for d in plan.disks if d.role == "data")
    if data.path != copy.path:  # read-write: the job writes an overlay, never the copy
        disks.create_overlay(os.path.dirname(data.path), copy.path, copy.format, qemu_uid, qemu_gid,
                             name=os.path.basename(data.path))


def _make_scratch(path: str, size: int, caller: privsep.Caller, qemu_uid: int, qemu_gid: int) -> None:
    """A sparse raw disk with an ext4 filesystem whose root the job's user owns. mkfs runs
    as QEMU's account, on a file that account owns: nothing privileged parses anything."""
    fd = _new_file(path)
    try:
        os.ftruncate(fd, size)
        os.fchown(fd, qemu_uid, qemu_gid)
    finally:
        os.close(fd)
    runcmd.run([SETPRIV, f"--reuid={qemu_uid}", f"--regid={qemu_gid}", "--clear-groups", "--",
                MKFS, "-q", "-F", "-m", "0", "-L", "scratch",
                "-E", f"root_owner={caller.uid}:{caller.gid},lazy_itable_init=1,lazy_journal_init=1", path],
               timeout=120, what="mkfs.ext4 (scratch disk)")


def export(item: Export, caller: privsep.Caller, workdir: str, timeout: float) -> None:
    """Flatten ``item``'s disk into a compact qcow2 and give it to the user as ``item.name``."""
    disk = item.disk
    out = os.path.join(os.path.dirname(disk.path), f"export-{item.name}")
    runcmd.run([QEMU_IMG, "convert", "-q", "-c", "-f", disk.format, "-O", "qcow2", disk.path, out],
               timeout=timeout, what="qemu-img convert (export)")
    with open(out, "rb") as src:
        size = privsep.call_as_user(caller, userfiles.write_export, workdir, item.name, pass_file=src,
                                    timeout=timeout, what=f"exported {item.name}")
    os.unlink(out)
    log.info("exported %s (%d bytes) into the sandbox", item.name, size)
