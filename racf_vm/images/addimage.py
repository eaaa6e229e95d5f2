"""``racf-vm images add``: a local image file into the node cache and the catalog.

The image is copied (holes kept, hashed in the same pass) into a temporary file in the
cache, its header validated there, then renamed into ``<cache>/<name>.<format>`` under
the image's lock and recorded in the verified index as a local image (the server's list
neither replaces nor withdraws it). A kernel and initrd for direct boot are copied beside
it. The catalog entry, pinned to the sha256 just computed, is written last, so a job
never sees an entry whose file is not in place.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import stat
from typing import Optional

from racf_vm.core.errors import ConfigError
from racf_vm.images import catalogwrite, index, versions
from racf_vm.images.catalog import ImageEntry, validate_image_name
from racf_vm.images.checksums import validate_file_name
from racf_vm.images.fsutil import TempFile, temp_file
from racf_vm.images.imageheader import validate_base_image
from racf_vm.images.locks import image_lock
from racf_vm.images.stream import Progress
from racf_vm.images.sync import prepare_cache_dir

CHUNK = 4 << 20


def _open_source(path: str) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as e:
        raise ConfigError(f"{path}: cannot open: {e.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ConfigError(f"{path}: not a regular file")
    return fd


def copy_hashed(src: str, tmp: TempFile, progress: Optional[Progress] = None) -> tuple[str, int]:
    """Copy ``src`` into ``tmp`` (all-zero chunks left as holes); (sha256, size)."""
    fd = _open_source(src)
    digest, size = hashlib.sha256(), 0
    try:
        total = os.fstat(fd).st_size
        while chunk := os.read(fd, CHUNK):
            digest.update(chunk)
            size += len(chunk)
            if chunk.count(0) == len(chunk):
                os.lseek(tmp.fd, len(chunk), os.SEEK_CUR)
            else:
                tmp.write(chunk)
            if progress is not None:
                progress(len(chunk), total)
    finally:
        os.close(fd)
    os.ftruncate(tmp.fd, size)
    return digest.hexdigest(), size


def _boot_file(cache_dir: str, src: str, name: str) -> str:
    """Copy a kernel or initrd into the cache as ``name`` (root 0644); its path."""
    dest = os.path.join(cache_dir, name)
    if os.path.abspath(src) == dest:
        return dest
    with temp_file(cache_dir, name) as tmp:
        copy_hashed(src, tmp)
        tmp.commit(0o644)
    return dest


def add_image(config, src: str, template: ImageEntry, *, replace: bool = False,
              progress: Optional[Progress] = None) -> tuple[ImageEntry, str]:
    """Put ``src`` into the cache as ``template.name`` and write its catalog entry;
    returns (the entry, the catalog file). ``template`` gives everything but the path,
    the sha256 and the size."""
    name = validate_image_name(template.name)
    catalog_file = os.path.join(config.paths.catalog_dir, f"{name}.toml")
    if os.path.lexists(catalog_file) and not replace:
        raise ConfigError(f"{catalog_file} already exists; pass --replace to overwrite it")
    cache_dir = prepare_cache_dir(os.path.normpath(config.images.cache_dir))
    file = validate_file_name(f"{name}.{template.format}")
    known = index.load(cache_dir).get(file)
    if known is not None and known.origin == "server":
        raise ConfigError(f"{file} in {cache_dir} comes from the image server; choose another "
                          "--name (the server's list would replace or withdraw it)")
    with image_lock(cache_dir, file, config.images.lock_timeout):
        with temp_file(cache_dir, file) as tmp:
            sha, size = copy_hashed(src, tmp, progress)
            os.fchmod(tmp.fd, 0o644)
            validate_base_image(tmp.path, template.format)  # before it is anyone's base
            st = tmp.commit(0o644)
        index.record(cache_dir, file, sha, st, origin="local")
        versions.link_current(cache_dir, file, sha, st)
        versions.prune(cache_dir, file, sha)
    boot = template.boot
    if boot.method == "kernel":
        boot = dataclasses.replace(boot, kernel=_boot_file(cache_dir, boot.kernel, f"{name}.vmlinuz"),
                                   initrd=_boot_file(cache_dir, boot.initrd, f"{name}.initrd"))
    entry = dataclasses.replace(template, path=os.path.join(cache_dir, file), sha256=sha,
                                size=size, follow=False, boot=boot)
    return entry, catalogwrite.write_entry(config.paths.catalog_dir, entry, replace=replace)
