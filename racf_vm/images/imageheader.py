"""Validate a base image before anything else touches it (security.md §3d).

The format always comes from the trusted catalog: a raw image is never probed (a guest
can write a qcow2 header into its raw disk at any time), a qcow2 image's header is checked
here in pure Python: version 3 only, no backing file, no external data file, no
encryption, no incompatible feature we do not know, sane sizes, and no header extension
that names another file. A prepared layer (racf_vm.images.prepare) is the one exception:
it must name exactly its expected backing file, with the backing format given explicitly.
"""

from __future__ import annotations

import os
import stat
import struct
from dataclasses import dataclass
from typing import Literal, Optional

from racf_vm.core.errors import RefusedError, TemporaryError

ImageFormat = Literal["qcow2", "raw"]

QCOW2_MAGIC = b"QFI\xfb"
V3_MIN_HEADER = 104
MAX_VIRTUAL_SIZE = 16 << 40  # 16 TiB

INCOMPAT_DIRTY = 0x01
INCOMPAT_CORRUPT = 0x02
INCOMPAT_DATA_FILE = 0x04
INCOMPAT_COMPRESSION = 0x08  # compression type byte (offset 104) is not zlib
KNOWN_SAFE_INCOMPAT = INCOMPAT_COMPRESSION
COMPRESSION_ZLIB = 0
COMPRESSION_ZSTD = 1

# Header extensions (type -> meaning); rejected ones could make QEMU open another file.
EXT_END = 0x00000000
EXT_BACKING_FORMAT = 0xE2792ACA
EXT_FEATURE_TABLE = 0x6803F857
EXT_BITMAPS = 0x23852875
EXT_CRYPTO = 0x0537BE77
EXT_DATA_FILE = 0x44415441
ALLOWED_EXTENSIONS = {EXT_FEATURE_TABLE, EXT_BITMAPS}

# Headers of formats whose readers open other files (backing files, extents, parents).
FOREIGN_MAGICS = (
    (QCOW2_MAGIC, "qcow2"),
    (b"QFI", "qcow"),
    (b"KDMV", "VMDK"),
    (b"# Disk DescriptorFile", "VMDK descriptor"),
    (b"conectix", "VHD"),
    (b"vhdxfile", "VHDX"),
    (b"QED\x00", "QED"),
)


@dataclass(frozen=True)
class BaseImageInfo:
    path: str
    format: ImageFormat
    file_size: int
    virtual_size: int
    st_dev: int
    st_ino: int
    mtime_ns: int
    backing: Optional[tuple[str, ImageFormat]] = None  # (path, format) of a prepared layer's base


def _refuse(path: str, why: str) -> RefusedError:
    return RefusedError(f"the base image {path} is not acceptable: {why}")


def check_qcow2_header(data: bytes, file_size: int, path: str = "image",
                       backing: Optional[tuple[str, ImageFormat]] = None) -> int:
    """Check a qcow2 header (the first cluster or less of the file); return the virtual size.

    ``backing`` (path, format): the header must name exactly that backing file and carry
    its format in a backing-format extension; without it, any backing file is refused.
    """
    if len(data) < 72 or data[:4] != QCOW2_MAGIC:
        raise _refuse(path, "not a qcow2 file (bad magic or truncated header)")
    (version,) = struct.unpack_from(">I", data, 4)
    if version != 3:
        raise _refuse(path, f"qcow2 version {version} (only version 3 is accepted)")
    if len(data) < V3_MIN_HEADER:
        raise _refuse(path, "truncated qcow2 header")
    (backing_off, backing_size, cluster_bits, size, crypt) = struct.unpack_from(">QIIQI", data, 8)
    if backing is None and (backing_off != 0 or backing_size != 0):
        raise _refuse(path, "it names a backing file")
    if backing is not None:
        want = backing[0].encode()
        if data[backing_off:backing_off + backing_size] != want or backing_size != len(want) \
                or backing_off + backing_size > len(data):
            raise _refuse(path, f"its backing file is not {backing[0]}")
    if crypt != 0:
        raise _refuse(path, "it is encrypted")
    if not 9 <= cluster_bits <= 21:
        raise _refuse(path, f"cluster_bits {cluster_bits} out of range")
    if size == 0 or size > MAX_VIRTUAL_SIZE:
        raise _refuse(path, f"virtual size {size} out of range")
    (incompat, _compat, _autoclear, refcount_order, header_len) = struct.unpack_from(">QQQII", data, 72)
    for bit, why in (
        (INCOMPAT_DATA_FILE, "it uses an external data file"),
        (INCOMPAT_DIRTY, "it is marked dirty"),
        (INCOMPAT_CORRUPT, "it is marked corrupt"),
    ):
        if incompat & bit:
            raise _refuse(path, why)
    unknown = incompat & ~KNOWN_SAFE_INCOMPAT & ~(INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE)
    if unknown:
        raise _refuse(path, f"unknown incompatible features 0x{unknown:x}")
    cluster_size = 1 << cluster_bits
    if header_len < V3_MIN_HEADER or header_len % 8 or header_len > min(cluster_size, len(data)):
        raise _refuse(path, f"header length {header_len} is not sane")
    if refcount_order > 6:
        raise _refuse(path, f"refcount_order {refcount_order} out of range")
    compression = data[104] if header_len > 104 else COMPRESSION_ZLIB
    if incompat & INCOMPAT_COMPRESSION:
        if compression != COMPRESSION_ZSTD:
            raise _refuse(path, f"compression type {compression} is not accepted")
    elif compression != COMPRESSION_ZLIB:
        raise _refuse(path, "compression type set without its feature bit")
    if file_size < header_len:
        raise _refuse(path, "file shorter than its header")
    backing_format = _check_extensions(data, header_len, path, allow_backing_format=backing is not None)
    if backing is not None and backing_format != backing[1]:
        raise _refuse(path, f"its backing format is not given as {backing[1]}")
    return size


def _check_extensions(data: bytes, offset: int, path: str, allow_backing_format: bool = False) -> Optional[str]:
    """Walk the header extensions (bounded by the buffer) and refuse dangerous ones;
    return the backing format an allowed backing-format extension names."""
    allowed = ALLOWED_EXTENSIONS | ({EXT_BACKING_FORMAT} if allow_backing_format else set())
    backing_format = None
    while True:
        if offset + 8 > len(data):
            raise _refuse(path, "header extensions run past the first cluster")
        ext_type, ext_len = struct.unpack_from(">II", data, offset)
        if ext_type == EXT_END:
            return backing_format
        if ext_type not in allowed:
            raise _refuse(path, f"header extension 0x{ext_type:08x} is not accepted")
        if ext_type == EXT_BACKING_FORMAT:
            backing_format = data[offset + 8:offset + 8 + ext_len].decode("ascii", "replace")
        offset += 8 + ((ext_len + 7) & ~7)


def check_raw_header(head: bytes, path: str = "image") -> None:
    """A raw image is never probed, but one that starts like another image format is a
    catalog mistake or a planted header (CVE-2008-2004): refuse it outright."""
    for magic, what in FOREIGN_MAGICS:
        if head.startswith(magic):
            raise _refuse(path, f"declared raw but it starts with a {what} header")


def validate_base_image(path: str, fmt: ImageFormat,
                        backing: Optional[tuple[str, ImageFormat]] = None) -> BaseImageInfo:
    """Open ``path`` without following symlinks, check owner, mode and (qcow2) header.
    ``backing``: a prepared layer, which must be qcow2 on exactly that base."""
    if fmt not in ("qcow2", "raw"):
        raise _refuse(path, f"unknown format {fmt!r}")
    if not os.path.isabs(path):
        raise _refuse(path, "not an absolute path")
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
    try:
        fd = os.open(path, flags)
    except FileNotFoundError as exc:
        raise TemporaryError(f"the base image {path} is missing", detail=str(exc)) from exc
    except OSError as exc:
        raise _refuse(path, f"cannot open it safely ({exc.strerror})") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _refuse(path, "not a regular file")
        if st.st_uid != 0:
            raise _refuse(path, f"owned by uid {st.st_uid}, not root")
        if st.st_mode & 0o022:
            raise _refuse(path, f"writable by group or others (mode {stat.S_IMODE(st.st_mode):o})")
        if st.st_size == 0:
            raise _refuse(path, "empty file")
        if backing is not None and fmt != "qcow2":
            raise _refuse(path, "a layer on a base image must be qcow2")
        if fmt == "raw":
            check_raw_header(os.pread(fd, 512, 0), path)
            virtual_size = st.st_size
        else:
            head = os.pread(fd, 1 << 21, 0)  # at most one maximal cluster
            virtual_size = check_qcow2_header(head, st.st_size, path, backing)
        return BaseImageInfo(path, fmt, st.st_size, virtual_size, st.st_dev, st.st_ino, st.st_mtime_ns,
                             backing)
    finally:
        os.close(fd)


def recheck_base_image(info: BaseImageInfo) -> BaseImageInfo:
    """Just before QEMU gets ``info.path``: validate it again and refuse unless the path
    still names the very file (device, inode, size, mtime) that was validated first."""
    now = validate_base_image(info.path, info.format, info.backing)
    if (now.st_dev, now.st_ino, now.file_size, now.mtime_ns) != (
        info.st_dev, info.st_ino, info.file_size, info.mtime_ns
    ):
        raise _refuse(info.path, "it was replaced or modified while the job was being prepared")
    return now


def backing_file_name(path: str) -> Optional[str]:
    """The backing file a qcow2 header names (None: none, or not a qcow2 file). For gc only:
    it decides nothing QEMU reads."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        head = os.pread(fd, 1 << 16, 0)
    finally:
        os.close(fd)
    if len(head) < 20 or head[:4] != QCOW2_MAGIC:
        return None
    offset, size = struct.unpack_from(">QI", head, 8)
    if not offset or not size or offset + size > len(head):
        return None
    return head[offset:offset + size].decode("utf-8", "replace")
