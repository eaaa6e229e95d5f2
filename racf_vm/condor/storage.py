"""The job's storage requests: a blank scratch disk, a data image from the sandbox.

Seed 003, "I/O Methods": a job may ask for a blank disk mounted where it says, bring a
disk image of its own mounted as /data, and take the scratch disk back as an image. All
of it is user input: sizes, mount paths and file names are checked here, once when the
unprivileged child builds the request and again when root re-reads it. Pure.
"""

from __future__ import annotations

import posixpath
import re
from typing import Optional

from racf_vm.core.errors import UsageError

DEFAULT_SCRATCH_PATH = "/scratch"
DEFAULT_DATA_PATH = "/data"
DATA_MODES = ("ro", "rw")
DATA_FORMATS = ("qcow2", "raw")
FORMAT_BY_SUFFIX = {".qcow2": "qcow2", ".raw": "raw", ".img": "raw"}
# A mount here would hide (or shadow part of) something the guest's root relies on.
SYSTEM_DIRS = frozenset({
    "bin", "boot", "dev", "etc", "lib", "lib32", "lib64", "libx32", "opt", "proc", "root", "run",
    "sbin", "srv", "sys", "tmp", "usr", "var", "racf", "lost+found", "media", "snap",
})
_SIZE = re.compile(r"([0-9]{1,15})([KMGT]?)(i?B)?", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_NAME = re.compile(r"[A-Za-z0-9_.+-]{1,128}")


def parse_size(text: str, what: str, limit: int) -> int:
    """``10G``, ``512M``, ``4096`` (bytes; K/M/G/T are powers of 1024): > 0, <= ``limit``."""
    m = _SIZE.fullmatch(text.strip())
    if not m:
        raise UsageError(f"{what}: {text!r:.40} is not a size such as 10G or 512M")
    size = int(m.group(1)) * _UNITS[m.group(2).upper()]
    if size <= 0:
        raise UsageError(f"{what}: the size must be more than zero")
    if size > limit:
        raise UsageError(f"{what}: {text} is more than the site limit of {limit >> 20} MiB")
    if size % 512:
        size += 512 - size % 512  # a disk is made of sectors
    return size


def check_mount_path(path: str, what: str, workdir: str) -> str:
    """An absolute, normalized mount point that hides nothing of the system or the job."""
    if not path.startswith("/") or "\0" in path or "\n" in path:
        raise UsageError(f"{what}: the mount path must be absolute, not {path!r:.80}")
    parts = path.split("/")[1:]
    if path == "/" or posixpath.normpath(path) != path or any(p in ("", ".", "..") for p in parts):
        raise UsageError(f"{what}: {path!r:.80} is not a plain absolute path (no '..', no '//')")
    if not all(_NAME.fullmatch(p) for p in parts) or len(parts) > 8:
        raise UsageError(f"{what}: {path!r:.80} may use letters, digits and . _ + - in at most 8 parts")
    if parts[0] in SYSTEM_DIRS:
        raise UsageError(f"{what}: {path} would hide part of the system ({'/' + parts[0]}); "
                         f"choose a path such as {DEFAULT_SCRATCH_PATH} or /mnt/NAME")
    if workdir == path or workdir.startswith(path + "/") or path.startswith(workdir + "/"):
        raise UsageError(f"{what}: {path} would hide the job's working directory")
    return path


def parse_scratch(value: str, limit: int, workdir: str) -> tuple[int, str]:
    """``SIZE[:PATH]`` -> (bytes, mount path)."""
    size, _, path = value.partition(":")
    return (parse_size(size, "--scratch", limit),
            check_mount_path(path or DEFAULT_SCRATCH_PATH, "--scratch", workdir))


def parse_data(value: str, workdir: str, fmt: Optional[str] = None) -> tuple[str, str, str, str]:
    """``FILE[:PATH[:ro|rw]]`` -> (file name in the sandbox, mount path, mode, format).

    The file is a plain name in the sandbox (no directories: it is opened by name, as the
    user); its format comes from ``fmt`` or its suffix, never from its content.
    """
    name, _, rest = value.partition(":")
    path, _, mode = rest.partition(":")
    if not _NAME.fullmatch(name) or name in (".", ".."):
        raise UsageError(f"--data: {name!r:.80} must be a plain file name in the job's sandbox")
    mode = mode or "ro"
    if mode not in DATA_MODES:
        raise UsageError(f"--data: the mode must be ro or rw, not {mode!r:.20}")
    if fmt is None:
        fmt = next((f for suffix, f in FORMAT_BY_SUFFIX.items() if name.endswith(suffix)), None)
    if fmt not in DATA_FORMATS:
        raise UsageError(f"--data: name the format of {name} (a .qcow2, .raw or .img file, "
                         "or --data-format qcow2|raw)")
    return name, check_mount_path(path or DEFAULT_DATA_PATH, "--data", workdir), mode, fmt
