"""Per-job state directory and the job's throw-away qcow2 overlay.

Everything happens in root-owned directories nobody else can write, and every entry we
create is created exclusively (mkdir without exist_ok, O_CREAT|O_EXCL|O_NOFOLLOW), so a
pre-planted symlink or hard link makes us fail instead of writing through it.

The overlay: we create ``overlay.qcow2`` ourselves (empty, 0600, exclusive) and let
``qemu-img create`` write into the existing file (QEMU's file driver opens it with
O_CREAT without O_EXCL and truncates it; verified with qemu-img 7.2). The job directory
is root-owned 0711, so between our create and qemu-img's open nobody but root can swap
the entry; afterwards we check that the path still names the inode we created, then
fchown it to the qemu uid/gid (libvirt is told not to relabel anything).
"""

from __future__ import annotations

import os
import re
import stat

from . import runcmd
from .errors import InternalError, RefusedError, TemporaryError
from .imageheader import ImageFormat

QEMU_IMG = "/usr/bin/qemu-img"
OVERLAY_NAME = "overlay.qcow2"
JOBS_DIR = "jobs"
_TAG_RE = re.compile(r"[A-Za-z0-9_.-]{1,200}")


def check_root_path(path: str) -> None:
    """Refuse unless every component of ``path`` is a real directory, root-owned and
    not writable by group or others (no symlinks anywhere)."""
    if not os.path.isabs(path):
        raise RefusedError(f"{path} is not an absolute path")
    current = "/"
    for part in [p for p in path.split("/") if p] or [""]:
        current = os.path.join(current, part)
        try:
            st = os.lstat(current)
        except FileNotFoundError as exc:
            raise TemporaryError(f"{current} does not exist") from exc
        if not stat.S_ISDIR(st.st_mode):
            raise RefusedError(f"{current} is not a directory (symlinks are not accepted)")
        if st.st_uid != 0 or st.st_mode & 0o022:
            raise RefusedError(
                f"{current} must be owned by root and not writable by others "
                f"(uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o})"
            )


def _open_dir(path: str, dir_fd: int | None = None) -> int:
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)


def _check_dir_fd(fd: int, what: str) -> None:
    st = os.fstat(fd)
    if st.st_uid != 0 or st.st_mode & 0o022:
        raise RefusedError(f"{what} must be owned by root and not writable by others")


def make_job_dir(state_dir: str, tag: str) -> str:
    """Create ``<state_dir>/jobs/<tag>`` (root 0711, must not exist yet); return its path."""
    if not _TAG_RE.fullmatch(tag) or tag in (".", ".."):
        raise InternalError(f"bad job tag {tag!r}")
    check_root_path(state_dir)
    sfd = _open_dir(state_dir)
    try:
        try:
            os.mkdir(JOBS_DIR, 0o711, dir_fd=sfd)
        except FileExistsError:
            pass
        jfd = _open_dir(JOBS_DIR, sfd)
        try:
            _check_dir_fd(jfd, os.path.join(state_dir, JOBS_DIR))
            os.fchmod(jfd, 0o711)
            try:
                os.mkdir(tag, 0o700, dir_fd=jfd)
            except FileExistsError as exc:
                raise InternalError(f"job directory {tag} already exists") from exc
            tfd = _open_dir(tag, jfd)
            try:
                os.fchown(tfd, 0, 0)
                os.fchmod(tfd, 0o711)  # qemu traverses to the overlay; no listing
            finally:
                os.close(tfd)
        finally:
            os.close(jfd)
    finally:
        os.close(sfd)
    return os.path.join(state_dir, JOBS_DIR, tag)


def create_overlay(
    job_dir: str,
    base: str,
    base_format: ImageFormat,
    qemu_uid: int,
    qemu_gid: int,
    *,
    qemu_img: str = QEMU_IMG,
) -> str:
    """Create ``<job_dir>/overlay.qcow2`` backed by ``base``; owned by qemu uid/gid, 0600."""
    if base_format not in ("qcow2", "raw"):
        raise InternalError(f"bad base format {base_format!r}")
    if not os.path.isabs(base):
        raise InternalError(f"base image path must be absolute: {base!r}")
    if qemu_uid <= 0 or qemu_gid <= 0:
        raise InternalError("the qemu uid/gid must not be root")
    dfd = _open_dir(job_dir)
    path = os.path.join(job_dir, OVERLAY_NAME)
    try:
        _check_dir_fd(dfd, job_dir)
        fd = os.open(
            OVERLAY_NAME,
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
                now = os.stat(OVERLAY_NAME, dir_fd=dfd, follow_symlinks=False)
                if (now.st_dev, now.st_ino) != (ours.st_dev, ours.st_ino) or not stat.S_ISREG(now.st_mode):
                    raise RefusedError(f"{path} was replaced while qemu-img wrote it")
                if os.fstat(fd).st_size == 0:
                    raise TemporaryError("qemu-img wrote an empty overlay")
                os.fchown(fd, qemu_uid, qemu_gid)
                os.fchmod(fd, 0o600)
            except BaseException:
                try:
                    os.unlink(OVERLAY_NAME, dir_fd=dfd)
                except OSError:
                    pass
                raise
        finally:
            os.close(fd)
    finally:
        os.close(dfd)
    return path
