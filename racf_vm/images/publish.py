"""Publish images for the web server: compressed files + checksum list, signed.

``publish`` (a directory): for each image ``SRC/<name>`` this writes
``OUT/<name>.<gz|zst|xz>`` and records the sha256 of the uncompressed bytes, then replaces
``OUT/SHA256SUMS`` atomically and last, so a node never reads a list that names a file
not yet complete. An image whose hash and codec did not change keeps its compressed file
untouched (same ETag, so Squid keeps serving it from its cache). Files of images no
longer in SRC are removed only after the new list is in place.
``publish_image`` (``images maintain``): one image into OUT, the rest of OUT's list kept.

With signing keys the list is written in the signed layout (racf_vm.images.signedlist)
under a serial above the previous list's, so nodes take it as the newest.
"""

import hashlib
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

from racf_vm.core.errors import ConfigError, TemporaryError
from racf_vm.core.files import read_capped
from racf_vm.images import signedlist
from racf_vm.images.checksums import (
    MAX_LIST_BYTES,
    RemoteImage,
    format_list,
    parse_list,
    validate_file_name,
)
from racf_vm.images.codecs import CODECS
from racf_vm.images.fsutil import CacheWriteError, fsync_dir, temp_file, write_atomic
from racf_vm.images.stream import Progress, hash_file

log = logging.getLogger(__name__)

READ_CHUNK = 4 * 1024 * 1024


@dataclass
class PublishReport:
    compressed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    serial: int = 0  # of the signed list (0: unsigned)
    sha256: dict = field(default_factory=dict)  # name -> sha256 of what was published


def _source_images(src: str) -> list[str]:
    try:
        entries = sorted(os.scandir(src), key=lambda e: e.name)
    except OSError as e:
        raise ConfigError(f"{src}: cannot list the images to publish: {e.strerror}") from None
    names = []
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
            continue
        try:
            names.append(validate_file_name(entry.name))
        except ValueError as e:
            raise ConfigError(f"{src}: {e}") from None
    return names


def _old_list(out: str, checksum_file: str) -> tuple[dict[str, RemoteImage], int]:
    """OUT's current list and its serial (our own directory: not verified, only parsed)."""
    path = os.path.join(out, checksum_file)
    if not os.path.lexists(path):
        return {}, 0
    try:
        # one byte over the list's own limit, so parse_list names what is wrong
        data = read_capped(path, MAX_LIST_BYTES + 8192, "the checksum list", error=TemporaryError)
        serial = 0
        if signedlist.is_signed(data):
            signed = signedlist.split(data, path)
            data, serial = signed.body, signed.serial
        return parse_list(data, path), serial
    except TemporaryError as e:  # a damaged old list: republish everything
        log.warning("ignoring the old list: %s", e.message)
        return {}, 0


def _write_list(out: str, checksum_file: str, images: Sequence[RemoteImage], old_serial: int,
                signers: Sequence) -> int:
    """Replace OUT's list atomically: signed (serial above the old one) when ``signers``."""
    body = format_list(images)
    serial = 0
    if signers:
        serial = max(time.time_ns(), old_serial + 1)
        body = signedlist.sign(body, checksum_file, serial, signers)
    try:
        write_atomic(out, checksum_file, body)  # last: now nodes see the new set
    except CacheWriteError as e:
        raise CacheWriteError(f"checksum list not replaced: {e.message}") from None
    return serial


def _codec(codec: str, level: Optional[int]) -> int:
    if codec not in CODECS:
        raise ConfigError(f"unknown compression {codec!r}; use one of {', '.join(CODECS)}")
    spec = CODECS[codec]
    level = spec.default_level if level is None else level
    if level not in spec.levels:
        raise ConfigError(f"{codec} level {level} is outside {spec.levels.start}..{spec.levels.stop - 1}")
    return level


def _compress(src_path: str, out: str, file: str, codec: str, level: int,
              progress: Optional[Progress] = None) -> str:
    """Compress into ``out/file`` (atomically), hashing the input in the same pass."""
    digest = hashlib.sha256()
    comp = CODECS[codec].compressor(level)
    with temp_file(out, file) as tmp:
        try:
            with open(src_path, "rb", buffering=0) as f:
                total = os.fstat(f.fileno()).st_size
                while chunk := f.read(READ_CHUNK):
                    digest.update(chunk)
                    tmp.write(comp.compress(chunk))
                    if progress is not None:
                        progress(len(chunk), total)
        except OSError as e:
            raise ConfigError(f"{src_path}: cannot read: {e.strerror}") from None
        tmp.write(comp.flush())
        tmp.commit(0o644)
    return digest.hexdigest()


def publish(src: str, out: str, *, codec: str = "gzip", level: Optional[int] = None,
            checksum_file: str = "SHA256SUMS", signers: Sequence = ()) -> PublishReport:
    level = _codec(codec, level)
    spec = CODECS[codec]
    if not os.path.isdir(out):
        raise ConfigError(f"{out}: not a directory")
    old, old_serial = _old_list(out, checksum_file)
    report = PublishReport()
    new: list[RemoteImage] = []
    for name in _source_images(src):
        src_path = os.path.join(src, name)
        file = name + spec.suffix
        prev = old.get(name)
        if prev is not None and prev.file == file and os.path.isfile(os.path.join(out, file)):
            sha = hash_file(src_path).sha256
            if sha == prev.sha256:
                report.unchanged.append(name)
                new.append(prev)
                continue
        sha = _compress(src_path, out, file, codec, level)
        log.info("published %s (%s)", file, sha)
        report.compressed.append(name)
        new.append(RemoteImage(name=name, file=file, codec=codec, sha256=sha))
    report.serial = _write_list(out, checksum_file, new, old_serial, signers)
    report.sha256 = {img.name: img.sha256 for img in new}
    keep = {img.file for img in new}
    for prev in old.values():
        if prev.file not in keep:
            try:
                os.unlink(os.path.join(out, prev.file))
                report.removed.append(prev.file)
            except FileNotFoundError:
                pass
    fsync_dir(out)
    return report


def publish_image(path: str, out: str, *, name: str, codec: str = "gzip",
                  level: Optional[int] = None, checksum_file: str = "SHA256SUMS",
                  signers: Sequence = (), progress: Optional[Progress] = None) -> PublishReport:
    """Publish the one image at ``path`` as ``name`` into OUT: its compressed file, then
    OUT's list with that line replaced (the other images' lines and files kept)."""
    level = _codec(codec, level)
    validate_file_name(name)
    if not os.path.isdir(out):
        raise ConfigError(f"{out}: not a directory")
    old, old_serial = _old_list(out, checksum_file)
    file = name + CODECS[codec].suffix
    sha = _compress(path, out, file, codec, level, progress)
    log.info("published %s (%s)", file, sha)
    new = [img for img in old.values() if img.name != name]
    new.append(RemoteImage(name=name, file=file, codec=codec, sha256=sha))
    report = PublishReport(compressed=[name], sha256={name: sha})
    report.serial = _write_list(out, checksum_file, new, old_serial, signers)
    prev = old.get(name)
    if prev is not None and prev.file != file:  # another codec than before: the old file goes
        try:
            os.unlink(os.path.join(out, prev.file))
            report.removed.append(prev.file)
        except FileNotFoundError:
            pass
    fsync_dir(out)
    return report
