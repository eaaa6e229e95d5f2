"""The job's own directory in the state directory: ``<state_dir>/jobs/<tag>``.

Root-owned 0711 (QEMU traverses to the disks in it; nobody lists it), created
exclusively, so a pre-planted entry makes us fail instead of writing through it. Its name
is the job tag: ``racf-vm gc`` judges it by that alone.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat

from racf_vm.core.errors import InternalError, RefusedError, TemporaryError
from racf_vm.core.files import check_root_dir_fd, open_dir

log = logging.getLogger(__name__)

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


def make_job_dir(state_dir: str, tag: str) -> str:
    """Create ``<state_dir>/jobs/<tag>`` (root 0711, must not exist yet); return its path."""
    if not _TAG_RE.fullmatch(tag) or tag in (".", ".."):
        raise InternalError(f"bad job tag {tag!r}")
    check_root_path(state_dir)
    sfd = open_dir(state_dir)
    try:
        try:
            os.mkdir(JOBS_DIR, 0o711, dir_fd=sfd)
        except FileExistsError:
            pass
        jfd = open_dir(JOBS_DIR, sfd)
        try:
            check_root_dir_fd(jfd, os.path.join(state_dir, JOBS_DIR))
            os.fchmod(jfd, 0o711)
            try:
                os.mkdir(tag, 0o700, dir_fd=jfd)
            except FileExistsError as exc:
                raise InternalError(f"job directory {tag} already exists") from exc
            tfd = open_dir(tag, jfd)
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


def remove_job_dir(path: str) -> None:
    """Remove the job directory and all it holds; what cannot go is left for gc."""
    shutil.rmtree(path, ignore_errors=True)
    if os.path.exists(path):
        log.warning("could not remove %s; racf-vm gc will", path)


def ensure_private_dir(path: str) -> str:
    """``path`` as a root-owned 0700 directory (created if missing), or refused."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o077:
        raise RefusedError(f"{path} must be a root-owned 0700 directory")
    return path


def check_free_space(path: str, need: int, what: str) -> None:
    """TemporaryError unless the filesystem of ``path`` has ``need`` bytes free for root's
    non-reserved use: a job must not start with disks that cannot grow as they may."""
    st = os.statvfs(path)
    free = st.f_bavail * st.f_frsize
    if free < need:
        gib = 1 << 30
        raise TemporaryError(f"{path} has {free / gib:.1f} GiB free but {what} may need "
                             f"{need / gib:.1f} GiB; the job will be retried")
