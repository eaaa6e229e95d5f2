"""Moving job files between the HTCondor sandbox and the guest.

All of this runs in children that have become the job's user (racf_vm.privsep), so the
sandbox is only ever read and written with the user's own rights: root never follows a
path the user controls.
"""

import os
import posixpath
import stat
import tarfile
from typing import BinaryIO

from racf_vm.core.errors import UsageError

# Files HTCondor owns in the sandbox: never sent to the guest (stdout/stderr are being
# written by us while the job runs) or overwritten from the guest's output.
CONDOR_FILES = frozenset(
    {
        "_condor_stdout",
        "_condor_stderr",
        ".job_wrapper_failure",
        ".chirp.config",
        ".update.ad",
        ".execution_overlay.ad",
        ".condor_pid_ns_status",
        ".condor_container_launched",
    }
)
# Read-only in the guest: sent in, never taken back.
INPUT_ONLY = frozenset({".job.ad", ".machine.ad"})

FAILURE_FILE = ".job_wrapper_failure"


def write_input_tar(out: BinaryIO, workdir: str) -> dict:
    """Write a tar of the sandbox's regular files and directories to ``out``."""
    count = 0
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for rel in _walk(workdir):
            path = os.path.join(workdir, rel)
            st = os.lstat(path)
            info = tarfile.TarInfo(rel)
            info.mode = stat.S_IMODE(st.st_mode) & 0o777
            info.mtime = int(st.st_mtime)
            if stat.S_ISDIR(st.st_mode):
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif stat.S_ISREG(st.st_mode):
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                with os.fdopen(fd, "rb") as f:
                    info.size = os.fstat(fd).st_size
                    tar.addfile(info, f)
            else:
                continue
            count += 1
    return {"entries": count}


def _walk(top: str):
    """Relative paths of directories and regular files under ``top``, no symlinks."""
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        rel_dir = os.path.relpath(dirpath, top)
        for name in sorted(dirnames + filenames):
            if rel_dir == "." and name in CONDOR_FILES:
                continue
            rel = name if rel_dir == "." else os.path.join(rel_dir, name)
            if not os.path.islink(os.path.join(top, rel)):
                yield rel


def extract_output_tar(tar_file: BinaryIO, workdir: str) -> dict:
    """Unpack the guest's output archive into the sandbox, as the job's user.

    Only directories and regular files with safe relative names are written; HTCondor's
    own files and the input-only ads are skipped. Returns counts for the log.
    """
    written = skipped = failed = 0
    first_failure = ""
    os.umask(0o022)  # this child only: the shim's 077 would hide results from the user's group
    root_fd = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        with tarfile.open(fileobj=tar_file, mode="r|") as tar:
            for member in tar:
                rel = _safe_name(member.name)
                if rel is None or rel.split("/")[0] in CONDOR_FILES | INPUT_ONLY:
                    skipped += 1
                    continue
                if not (member.isdir() or member.isreg()):
                    skipped += 1
                    continue
                try:
                    _extract_member(tar, member, rel, root_fd)
                except OSError as exc:
                    # As the user, in the user's own sandbox: whatever the user made
                    # unwritable (or pointed elsewhere) stays as it is; the rest comes back.
                    failed += 1
                    first_failure = first_failure or f"{rel}: {exc.strerror}"
                    continue
                written += member.isreg()
    except tarfile.TarError as exc:
        raise UsageError(f"the guest's output archive is damaged: {exc}") from exc
    finally:
        os.close(root_fd)
    return {"written": written, "skipped": skipped, "failed": failed, "first_failure": first_failure}


def _extract_member(tar, member, rel: str, root_fd: int) -> None:
    mode = member.mode & 0o777
    if member.isdir():
        _makedirs(root_fd, rel, mode | 0o700)
        return
    parent = posixpath.dirname(rel)
    if parent:
        _makedirs(root_fd, parent, 0o755)
    _write_file(root_fd, rel, tar.extractfile(member), mode | 0o600)


def _safe_name(name: str):
    if name.startswith("/") or "\0" in name:
        return None
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        return None
    return "/".join(parts)


def _makedirs(root_fd: int, rel: str, mode: int) -> None:
    path = ""
    for part in rel.split("/"):
        path = f"{path}/{part}" if path else part
        try:
            os.mkdir(path, mode, dir_fd=root_fd)
        except FileExistsError:
            pass


def _write_file(root_fd: int, rel: str, src, mode: int) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(rel, flags, mode, dir_fd=root_fd)
    with os.fdopen(fd, "wb") as dst:
        while True:
            chunk = src.read(1 << 20)
            if not chunk:
                break
            dst.write(chunk)


def write_failure_file(workdir: str, message: str) -> bool:
    """Tell HTCondor this attempt failed for reasons outside the job (it requeues it)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(os.path.join(workdir, FAILURE_FILE), flags, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(message.rstrip("\n") + "\n")
    return True


def archive_complete(f: BinaryIO) -> bool:
    """True when ``f`` holds a whole tar archive: headers walk to the end-of-archive blocks.

    Lets the host stop waiting for the guest's power-off once the output is all here: the
    overlay is thrown away anyway, so nothing else in the guest matters after that.
    """
    offset = 0
    while True:
        f.seek(offset)
        header = f.read(512)
        if len(header) < 512:
            return False
        if header == bytes(512):
            return f.read(512) == bytes(512)
        size = _tar_size(header[124:136])
        if size is None:
            return False
        offset += 512 + (size + 511) // 512 * 512


def _tar_size(field: bytes):
    if field[0] & 0x80:  # GNU base-256 for sizes of 8 GiB and more
        return int.from_bytes(field[1:], "big")
    digits = field.strip(b" \0")
    try:
        return int(digits, 8) if digits else 0
    except ValueError:
        return None
