"""The checksum list: ``sha256sum`` format, strict about every line.

Each line is ``<64 lower-case hex>  <file>`` (``sha256sum`` text mode) or
``<64 hex> *<file>`` (binary mode). ``<file>`` is ``<basename>.<gz|zst|xz>``; the hash is
of the uncompressed image. The list comes from a web server, so it is untrusted input:
names are checked against a pattern with no ``/`` and no leading dot, so no line can
make a node write outside its cache or over its own bookkeeping files.
"""

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from racf_vm.core.errors import TemporaryError
from racf_vm.images.codecs import CODECS, codec_for_file

FILE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}")
_LINE_RE = re.compile(r"([0-9a-fA-F]{64}) [ *](.*)")
MAX_LIST_BYTES = 4 * 1024 * 1024


class BadListError(TemporaryError):
    """The server's checksum list is malformed (fix the publisher; the job can go elsewhere)."""


@dataclass(frozen=True)
class RemoteImage:
    """One line of the list: the cached name, the file on the server, its codec, its hash."""

    name: str
    file: str
    codec: str
    sha256: str


def validate_file_name(name: str) -> str:
    """Return ``name`` if it is safe as a file name in the cache, else raise ValueError."""
    if not FILE_NAME_RE.fullmatch(name) or ".." in name:
        raise ValueError(f"{name!r} is not a valid image file name ({FILE_NAME_RE.pattern}, no '..')")
    return name


def parse_list(data: bytes, source: str) -> dict[str, RemoteImage]:
    """Parse a checksum list into cached name -> RemoteImage; BadListError names the line."""
    if len(data) > MAX_LIST_BYTES:
        raise BadListError(f"{source}: checksum list larger than {MAX_LIST_BYTES} bytes")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as e:
        raise BadListError(f"{source}: checksum list is not ASCII (byte {e.start})") from None
    if text and not text.endswith("\n"):
        raise BadListError(f"{source}: checksum list does not end with a newline (truncated?)")
    images: dict[str, RemoteImage] = {}
    for number, line in enumerate(text.splitlines(), 1):
        m = _LINE_RE.fullmatch(line)
        if not m:
            raise BadListError(f"{source}:{number}: not a sha256sum line: {line[:80]!r}")
        sha, file = m.group(1).lower(), m.group(2)
        try:
            validate_file_name(file)
            codec = codec_for_file(file)
        except ValueError as e:
            raise BadListError(f"{source}:{number}: {e}") from None
        name = file[: -len(CODECS[codec].suffix)]
        try:
            validate_file_name(name)
        except ValueError as e:
            raise BadListError(f"{source}:{number}: {e}") from None
        if name in images:
            raise BadListError(f"{source}:{number}: image {name!r} is listed twice")
        images[name] = RemoteImage(name=name, file=file, codec=codec, sha256=sha)
    return images


def format_list(images: Iterable[RemoteImage]) -> bytes:
    """The list as ``sha256sum`` would print it, sorted by file name."""
    lines = [f"{img.sha256}  {img.file}\n" for img in sorted(images, key=lambda i: i.file)]
    return "".join(lines).encode("ascii")


def as_mapping(images: Iterable[RemoteImage]) -> Mapping[str, RemoteImage]:
    return {img.name: img for img in images}
