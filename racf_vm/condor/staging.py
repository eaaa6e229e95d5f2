"""What the job's user stages in its own sandbox: a qcow2 overlay on a cached, verified
catalog image (the PREPARE_JOB hook and the racfimg:// transfer plugin both run as the
job's user, so they do exactly this and no more).

They cannot fetch: the node cache is root's. An image the cache manages must already be
there and verified (the cache's index records the catalog's sha256 for that very file);
an image the catalog keeps outside the cache is the site's own file. Either way the base
passes the same checks root applies (trusted path, header), and the overlay names it and
its format explicitly (``qemu-img create -f qcow2 -F FMT -b BASE``). Nothing root does
later trusts the overlay: LIBVIRT_XML_SCRIPT only reads which image it is on and boots a
fresh overlay of its own (racf_vm.condor.vmudisk).
"""

from __future__ import annotations

import os
import re
import stat

from racf_vm.condor import attributes as A
from racf_vm.core import runcmd
from racf_vm.core.errors import ConfigError, TemporaryError, UsageError
from racf_vm.images import catalog as catalog_mod
from racf_vm.images import index
from racf_vm.images.catalog import ImageEntry
from racf_vm.images.imageheader import validate_base_image
from racf_vm.trust import pathtrust

QEMU_IMG = "/usr/bin/qemu-img"
STAGED_RE = re.compile(r"racf-[a-z0-9][a-z0-9_.-]{0,63}\.qcow2")


def staged_name(image: str) -> str:
    """The file PREPARE_JOB stages for ``image``."""
    return f"racf-{image}.qcow2"


def verified_image(config, name: str) -> ImageEntry:
    """The catalog entry ``name``, if its base is on this node, verified, and trusted."""
    cat = catalog_mod.load_catalog(config.paths.catalog_dir, check_trust=pathtrust.check_trusted_file)
    entry = cat.lookup(name)
    if entry.checksum_is_placeholder:
        raise ConfigError(f"image '{name}': the catalog still has the example placeholder sha256")
    cache = os.path.normpath(config.images.cache_dir)
    path = os.path.normpath(entry.path)
    verified = index.verified_sha(cache, os.path.basename(path)) if os.path.dirname(path) == cache else ""
    if verified is None or (verified and not entry.follow and verified != entry.sha256):
        raise TemporaryError(
            f"image '{name}' is not in this node's verified image cache; the job can run on a "
            f"node that has it (requirements: member(\"{name}\", TARGET.{A.ATTR_IMAGES})), or "
            "an administrator fetches it with racf-vm images sync")
    pathtrust.check_trusted_file(entry.path)
    validate_base_image(entry.path, entry.format)
    return entry


def make_overlay(dest: str, entry: ImageEntry) -> int:
    """Create the overlay ``dest`` (absolute, in the sandbox) on ``entry``; its size."""
    if not os.path.isabs(dest):
        raise UsageError(f"the overlay's path {dest!r:.120} is not absolute")
    directory, name = os.path.split(dest)
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            st = os.lstat(name, dir_fd=dfd)
        except FileNotFoundError:
            st = None
        if st is not None:
            if stat.S_ISDIR(st.st_mode):
                raise UsageError(f"{dest!r:.120} is a directory")
            os.unlink(name, dir_fd=dfd)  # a left-over of an earlier attempt (or a link)
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o644, dir_fd=dfd)
        os.close(fd)
        try:
            runcmd.run([QEMU_IMG, "create", "-q", "-f", "qcow2", "-F", entry.format, "-b",
                        entry.path, dest], timeout=60, what="qemu-img create")
        except BaseException:
            os.unlink(name, dir_fd=dfd)
            raise
        return os.stat(name, dir_fd=dfd, follow_symlinks=False).st_size
    finally:
        os.close(dfd)


def remove_staged(sandbox: str, name: object) -> bool:
    """Remove the file PREPARE_JOB staged (only a name it could have made); True if gone now."""
    if not isinstance(name, str) or not STAGED_RE.fullmatch(name):
        return False
    dfd = os.open(sandbox, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.unlink(name, dir_fd=dfd)
    except FileNotFoundError:
        pass
    finally:
        os.close(dfd)
    return True
