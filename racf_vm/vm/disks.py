"""The job's disks, created in its root-owned job directory (racf_vm.vm.workspace).

Every entry is created exclusively (O_CREAT|O_EXCL|O_NOFOLLOW), so a pre-planted symlink
or hard link makes us fail instead of writing through it.

The overlay: we create ``overlay.qcow2`` ourselves (empty, 0600, exclusive) and let
``qemu-img create`` write into the existing file (QEMU's file driver opens it with
O_CREAT without O_EXCL and truncates it; verified with qemu-img 7.2). The job directory
is root-owned 0711, so between our create and qemu-img's open nobody but root can swap
the entry; afterwards we check that the path still names the inode we created, then
fchown it to the qemu uid/gid (libvirt is told not to relabel anything).
"""

from __future__ import annotations

import os
import stat

from racf_vm.core import runcmd
from racf_vm.core.errors import InternalError, RefusedError, TemporaryError
from racf_vm.core.files import check_root_dir_fd, open_dir
from racf_vm.images.imageheader import ImageFormat

QEMU_IMG = "/usr/bin/qemu-img"
OVERLAY_NAME = "overlay.qcow2"


def create_overlay(
    job_dir: str,
    base: str,
    base_format: ImageFormat,
    qemu_uid: int,
    qemu_gid: int,
    *,
    name: str = OVERLAY_NAME,
    qemu_img: str = QEMU_IMG,
) -> str:
    """Create ``<job_dir>/<name>`` backed by ``base``; owned by qemu uid/gid, 0600."""
    if base_format not in ("qcow2", "raw"):
        raise InternalError(f"bad base format {base_format!r}")
    if not os.path.isabs(base):
        raise InternalError(f"base image path must be absolute: {base!r}")
    if qemu_uid <= 0 or qemu_gid <= 0:
        raise InternalError("the qemu uid/gid must not be root")
    dfd = open_dir(job_dir)
    path = os.path.join(job_dir, name)
    try:
        check_root_dir_fd(dfd, job_dir)
        fd = os.open(
            name,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
            dir_fd=dfd,
        )
        try:
            ours = os.fstat(fd)
            try:
                runcmd.run(
                    [qemu_img, "create", "-q", "-f", "qcow2", "-F", base_format, "-b", base, path],
                    timeout=60,
                    what="qemu-img create",
                )
                now = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                if (now.st_dev, now.st_ino) != (ours.st_dev, ours.st_ino) or not stat.S_ISREG(now.st_mode):
                    raise RefusedError(f"{path} was replaced while qemu-img wrote it")
                if os.fstat(fd).st_size == 0:
                    raise TemporaryError("qemu-img wrote an empty overlay")
                os.fchown(fd, qemu_uid, qemu_gid)
                os.fchmod(fd, 0o600)
            except BaseException:
                try:
                    os.unlink(name, dir_fd=dfd)
                except OSError:
                    pass
                raise
        finally:
            os.close(fd)
    finally:
        os.close(dfd)
    return path
