"""Which catalog image a VM-universe job's staged disk is on, without trusting the disk.

The disk named by ``vm_disk`` lives in the job's sandbox, so it is the user's: they could
have replaced what the hook or the plugin staged with anything. root therefore never
hands it to libvirt, never opens it (a child running as the job's user reads its first
64 KiB, no symlink followed), and uses it for one thing only: its qcow2 header must name
exactly a catalog image's file as its backing file, with that image's format, and pass
the same header checks as a prepared layer (racf_vm.images.imageheader). That tells which
image the job wants; the VM then boots a fresh overlay root creates on that image.

The sandbox itself must be one the starter made, ``[parent] execute``/``dir_<N>`` (or its
``scratch``), every component up to it a real directory; its owner is the job's user, the
only identity used (never one from the ad), and the reading child runs as that user.
"""

from __future__ import annotations

import base64
import os
import pwd
import re
import stat
import struct
from typing import Optional

from racf_vm.condor.vmuad import DISK_HINT, check_disk_file
from racf_vm.core.errors import RefusedError, UsageError
from racf_vm.images.catalog import Catalog, ImageEntry
from racf_vm.images.imageheader import QCOW2_MAGIC, check_qcow2_header
from racf_vm.vm.workspace import check_root_path

HEADER_BYTES = 64 * 1024  # one default qcow2 cluster: header, extensions, backing name
_SANDBOX = re.compile(r"dir_[0-9]{1,10}(/scratch)?")


def sandbox_owner(working_dir: str, execute: str, min_uid: int) -> tuple[int, int]:
    """(uid, gid) of the job's user: the owner of its sandbox ``working_dir``, which must
    be ``<execute>/dir_<N>[/scratch]`` made of real directories under a root-owned
    ``execute``."""
    rel = os.path.relpath(working_dir, execute)
    if not _SANDBOX.fullmatch(rel) or os.path.join(execute, rel) != working_dir:
        raise RefusedError(f"VM_WORKING_DIR {working_dir!r:.120} is not a sandbox the starter "
                           f"made in {execute}; set [parent] execute to EXECUTE")
    check_root_path(execute)
    current = execute
    for part in rel.split("/"):
        current = os.path.join(current, part)
        try:
            st = os.lstat(current)
        except OSError as exc:
            raise RefusedError(f"cannot check the sandbox {current}: {exc.strerror}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise RefusedError(f"{current} is not a directory (symlinks are not accepted)")
        if current != working_dir and st.st_mode & 0o022:  # nested: dir_<N> is HTCondor's
            raise RefusedError(f"{current} must not be writable by group or others")
    uid = st.st_uid
    if uid < min_uid:
        raise RefusedError(f"the sandbox {working_dir} belongs to uid {uid}; jobs of uids below "
                           f"{min_uid} may not boot VMs")
    try:
        gid = pwd.getpwuid(uid).pw_gid
    except KeyError:
        raise RefusedError(f"uid {uid} (owner of {working_dir}) has no passwd entry on this node") from None
    return uid, gid


def read_disk_header(working_dir: str, name: str) -> dict:
    """The size and first bytes of the sandbox file ``name``; run as the job's user."""
    check_disk_file(name)
    dfd = os.open(working_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY
                         | os.O_CLOEXEC, dir_fd=dfd)
        except FileNotFoundError:
            raise UsageError(f"the VM's disk {name} is not in the job's sandbox; {DISK_HINT}") from None
        except OSError as exc:
            raise RefusedError(f"cannot open the VM's disk {name} as the job's user "
                               f"({exc.strerror}; a symlink?)") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise RefusedError(f"the VM's disk {name} is not a regular file")
            head = os.pread(fd, HEADER_BYTES, 0)
        finally:
            os.close(fd)
    finally:
        os.close(dfd)
    return {"size": st.st_size, "head": base64.b64encode(head).decode("ascii")}


def backing_name(head: bytes) -> Optional[str]:
    """The backing file a qcow2 header names; None when it is no qcow2 file or names none."""
    if len(head) < 20 or head[:4] != QCOW2_MAGIC:
        return None
    offset, size = struct.unpack_from(">QI", head, 8)
    if not offset or not size or offset + size > len(head):
        return None
    try:
        return head[offset:offset + size].decode("utf-8")
    except UnicodeDecodeError:
        return None


def identify_image(head: bytes, size: int, catalog: Catalog, wanted: Optional[str],
                   label: str) -> ImageEntry:
    """The catalog image the staged overlay ``head`` is on (``wanted``, when the job names
    one, must be it); refused when it is on anything else or is no such overlay."""
    backing = backing_name(head)
    if backing is None:
        raise RefusedError(f"the VM's disk {label} is not a qcow2 overlay on a catalog image "
                           f"(a disk of the job's choosing is never booted); {DISK_HINT}")
    found = [e for e in catalog.values() if e.path == backing]
    if wanted is not None:
        catalog.lookup(wanted)  # an unknown name is the job's mistake: say so
        found = [e for e in found if e.name == wanted]
    if not found:
        what = f"image {wanted}" if wanted else "any catalog image"
        raise RefusedError(f"the VM's disk {label} is on {backing!r:.120}, not on {what} "
                           f"(a disk of the job's choosing is never booted); {DISK_HINT}")
    if len(found) > 1:
        names = ", ".join(e.name for e in found)
        raise UsageError(f"several catalog images ({names}) use the base of {label}; "
                         'name one with +VM_Image = "NAME"')
    entry = found[0]
    check_qcow2_header(head, size, label, backing=(entry.path, entry.format))
    return entry


def decode_header(result: dict) -> tuple[bytes, int]:
    """``read_disk_header``'s result, as root receives it (checked, not trusted)."""
    try:
        head = base64.b64decode(result["head"], validate=True)
        size = result["size"]
    except (KeyError, TypeError, ValueError):
        raise RefusedError("malformed disk header from the reading child") from None
    if len(head) > HEADER_BYTES or not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise RefusedError("malformed disk header from the reading child")
    return head, size
