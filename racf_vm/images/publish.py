"""Publish a directory of images for the web server: compressed files + checksum list.

For each image ``SRC/<name>`` this writes ``OUT/<name>.<gz|zst|xz>`` and records the
sha256 of the uncompressed bytes, then replaces ``OUT/SHA256SUMS`` atomically and last,
so a node never reads a list that names a file not yet complete. An image whose hash and
codec did not change keeps its compressed file untouched (same ETag, so Squid keeps
serving it from its cache). Files of images no longer in SRC are removed only after the
new list is in place.
"""

import hashlib
import logging
import os
from dataclasses import dataclass, field
from typing import Optional

from racf_vm.core.errors import ConfigError, TemporaryError
from racf_vm.core.files import read_capped
from racf_vm.images.checksums import (
    MAX_LIST_BYTES,
    RemoteImage,
    format_list,
    parse_list,
    validate_file_name,
)
from racf_vm.images.codecs import CODECS
from racf_vm.images.fsutil import CacheWriteError, fsync_dir, temp_file, write_atomic
from racf_vm.images.stream import hash_file

log = logging.getLogger(__name__)

READ_CHUNK = 4 * 1024 * 1024


@dataclass
class PublishReport:
    compressed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


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


def _old_list(out: str, checksum_file: str) -> dict[str, RemoteImage]:
    path = os.path.join(out, checksum_file)
    if not os.path.lexists(path):
        return {}
    try:
        # one byte over the list's own limit, so parse_list names what is wrong
        return parse_list(read_capped(path, MAX_LIST_BYTES + 1, "the checksum list",
                                      error=TemporaryError), path)
    except TemporaryError as e:  # a damaged old list: republish everything
        log.warning("ignoring the old list: %s", e.message)
        return {}


def _compress(src_path: str, out: str, file: str, codec: str, level: int) -> str:
    """Compress into ``out/file`` (atomically), hashing the input in the same pass."""
    digest = hashlib.sha256()
    comp = CODECS[codec].compressor(level)
    with temp_file(out, file) as tmp:
        try:
            with open(src_path, "rb", buffering=0) as f:
                while chunk := f.read(READ_CHUNK):
                    digest.update(chunk)
                    tmp.write(comp.compress(chunk))
        except OSError as e:
            raise ConfigError(f"{src_path}: cannot read: {e.strerror}") from None
        tmp.write(comp.flush())
        tmp.commit(0o644)
    return digest.hexdigest()


def publish(src: str, out: str, *, codec: str = "gzip", level: Optional[int] = None,
            checksum_file: str = "SHA256SUMS") -> PublishReport:
    if codec not in CODECS:
        raise ConfigError(f"unknown compression {codec!r}; use one of {', '.join(CODECS)}")
    spec = CODECS[codec]
    level = spec.default_level if level is None else level
    if level not in spec.levels:
        raise ConfigError(f"{codec} level {level} is outside {spec.levels.start}..{spec.levels.stop - 1}")
    if not os.path.isdir(out):
        raise ConfigError(f"{out}: not a directory")
    old = _old_list(out, checksum_file)
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
    try:
        write_atomic(out, checksum_file, format_list(new))  # last: now nodes see the new set
    except CacheWriteError as e:
        raise CacheWriteError(f"checksum list not replaced: {e.message}") from None
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
