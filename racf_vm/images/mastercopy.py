"""The master copy of an image (``racf-vm images maintain``): never a node's cache copy,
and replaced only whole, by a complete, checked file.

The maintenance guest writes into an overlay on the master (through its maintenance
layer). Only when the command succeeded and the guest powered off by itself is the
overlay's chain flattened by ``qemu-img convert`` into a new file beside the master,
validated like any base image, and renamed over the master, provided the master is
still the very file the maintenance started from. Any failure before that rename
leaves the master exactly as it was.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
from typing import Optional

from racf_vm.core import runcmd
from racf_vm.core.errors import ConfigError, RefusedError, TemporaryError
from racf_vm.images import versions
from racf_vm.images.fsutil import fsync_dir
from racf_vm.images.imageheader import BaseImageInfo, validate_base_image
from racf_vm.images.stream import Progress
from racf_vm.trust import pathtrust

QEMU_IMG = "/usr/bin/qemu-img"
CHUNK = 4 << 20
CONVERT_TIMEOUT = 6 * 3600.0


def _inside(path: str, directory: str) -> bool:
    directory = os.path.normpath(directory)
    return os.path.commonpath([os.path.normpath(path), directory]) == directory


def check_master(path: str, config) -> os.stat_result:
    """Refuse a path that is (or is a hard link of) a node's cache copy or racf-vm state."""
    if not os.path.isabs(path):
        raise ConfigError(f"{path}: give the master copy as an absolute path")
    cache = os.path.normpath(config.images.cache_dir)
    for where, what in ((cache, "the node's image cache"),
                        (config.paths.state_dir, "racf-vm's state directory")):
        if _inside(path, where):
            raise RefusedError(f"{path} is in {what} ({where}): maintain the master copy, never "
                               "a node's copy")
    # root writes the new master beside it: nobody else may create names there
    pathtrust.check_trusted_dir(os.path.dirname(path))
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{path}: the master copy must be a regular file (not a symlink)")
    cached = [os.path.join(cache, n) for n in _names(cache)]
    cached += [p for n in versions.all_names(cache) for p in versions.existing(cache, n).values()]
    for other in cached:
        o = os.stat(other, follow_symlinks=False)
        if (o.st_dev, o.st_ino) == (st.st_dev, st.st_ino):
            raise RefusedError(f"{path} is the same file as the cache's {other}: maintain the "
                               "master copy, never a node's copy")
    return st


def _names(directory: str) -> list[str]:
    try:
        return [n for n in os.listdir(directory) if not n.startswith(".")]
    except FileNotFoundError:
        return []


def hash_file(path: str, progress: Optional[Progress] = None) -> str:
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        total = os.fstat(f.fileno()).st_size
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            if progress is not None:
                progress(len(chunk), total)
    return digest.hexdigest()


def same_file(before: os.stat_result, path: str) -> bool:
    now = os.stat(path, follow_symlinks=False)
    return (now.st_dev, now.st_ino, now.st_size, now.st_mtime_ns) == (
        before.st_dev, before.st_ino, before.st_size, before.st_mtime_ns)


def commit(overlay: str, master: BaseImageInfo, before: os.stat_result) -> BaseImageInfo:
    """Flatten ``overlay`` (on the master's maintenance layer) into a new master copy and
    rename it over the master; the new master, validated."""
    result = runcmd.run([QEMU_IMG, "check", "-q", "-f", "qcow2", overlay],
                        timeout=CONVERT_TIMEOUT, what="qemu-img check", check=False)
    if result.returncode not in (0, 3):  # 3: leaked clusters only, harmless
        raise TemporaryError(f"the maintenance overlay is damaged (qemu-img check status "
                             f"{result.returncode}); the master copy is unchanged")
    directory, name = os.path.split(master.path)
    tmp = os.path.join(directory, f".{name}.maintained-{secrets.token_hex(6)}")
    try:
        runcmd.run([QEMU_IMG, "convert", "-q", "-f", "qcow2", "-O", master.format, overlay, tmp],
                   timeout=CONVERT_TIMEOUT, what="qemu-img convert")
        os.chown(tmp, 0, 0)
        os.chmod(tmp, stat.S_IMODE(before.st_mode) & 0o755)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        validate_base_image(tmp, master.format)  # the same rules as any base image
        if not same_file(before, master.path):
            raise TemporaryError(f"{master.path} changed while it was being maintained; the "
                                 "maintained copy is discarded")
        os.rename(tmp, master.path)
        fsync_dir(directory)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    return validate_base_image(master.path, master.format)
