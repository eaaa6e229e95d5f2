"""A libguestfs "fixed appliance" with an uncompressed kernel.

libguestfs builds its supermin appliance into the cache directory on first use. From it we
derive a fixed appliance (same initrd and root, the kernel decompressed), which saves
seconds per launch under TCG. It is keyed on the supermin appliance and on dpkg's status
file: when host packages change it is not used, the next launch refreshes the supermin
appliance, and the following job derives a new fixed one.
"""

import json
import logging
import os
import shutil
import tempfile
from typing import Optional

from racf_vm.core import locking
from racf_vm.core.files import read_capped_or_none
from racf_vm.vm.kernelimage import extract_vmlinux

log = logging.getLogger(__name__)

DPKG_STATUS = "/var/lib/dpkg/status"
_PARTS = ("kernel", "initrd", "root")


def fixed_appliance(cachedir: str) -> Optional[str]:
    """The fixed appliance's directory, deriving it first when needed; None to use defaults."""
    supermin = os.path.join(cachedir, f".guestfs-{os.getuid()}", "appliance.d")
    fixed = os.path.join(cachedir, "fixed-appliance")
    stamp = _stamp(supermin)
    if stamp is None:
        return None  # no supermin appliance yet: this launch builds it
    if _read_stamp(fixed) == stamp:
        return fixed
    lock_fd = locking.try_lock(os.path.join(cachedir, ".fixed-appliance.lock"), create=True)
    if lock_fd is None:
        return None  # another job is deriving it: use the default appliance this time
    try:
        if _read_stamp(fixed) != stamp:
            _derive(supermin, fixed, stamp, cachedir)
        return fixed
    except OSError as exc:
        log.warning("could not derive the fixed libguestfs appliance: %s", exc)
        return None
    finally:
        os.close(lock_fd)


def _stamp(supermin: str) -> Optional[dict]:
    try:
        parts = {}
        for name in _PARTS:
            st = os.stat(os.path.join(supermin, name))
            parts[name] = [st.st_size, st.st_mtime_ns, st.st_ino]
        dpkg = os.stat(DPKG_STATUS).st_mtime_ns if os.path.exists(DPKG_STATUS) else 0
    except FileNotFoundError:
        return None
    return {"supermin": parts, "dpkg_status": dpkg}


def _read_stamp(fixed: str) -> Optional[dict]:
    raw = read_capped_or_none(os.path.join(fixed, "stamp.json"), 4096)
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def _derive(supermin: str, fixed: str, stamp: dict, cachedir: str) -> None:
    tmp = tempfile.mkdtemp(prefix=".fixed-appliance-", dir=cachedir)
    try:
        for name in ("initrd", "root"):
            os.link(os.path.join(supermin, name), os.path.join(tmp, name))
        if not extract_vmlinux(os.path.join(supermin, "kernel"), os.path.join(tmp, "kernel")):
            os.link(os.path.join(supermin, "kernel"), os.path.join(tmp, "kernel"))
        open(os.path.join(tmp, "README.fixed"), "w").close()  # marks a fixed appliance for libguestfs
        with open(os.path.join(tmp, "stamp.json"), "w") as f:
            json.dump(stamp, f)
        if os.path.exists(fixed):
            old = tempfile.mkdtemp(prefix=".fixed-appliance-old-", dir=cachedir)
            os.rename(fixed, os.path.join(old, "a"))
            shutil.rmtree(old)
        os.rename(tmp, fixed)
        log.info("derived a fixed libguestfs appliance in %s", fixed)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
