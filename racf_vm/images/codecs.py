"""Compression codecs: streaming decompressors with bounded output, and compressors.

Every decompressor accepts concatenated members (gzip members, zstd frames, xz streams,
as parallel compressors write them), yields output in pieces of bounded size however
well the input compresses (a few KiB of zeros must not become a GiB in memory), and
``finish()`` refuses input that stopped in the middle of a member, so a truncated
download is always detected even without a Content-Length.
"""

import lzma
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Callable, Protocol

import zstandard

from racf_vm.core.errors import TemporaryError

OUT_CHUNK = 4 * 1024 * 1024  # largest piece of output handed to the caller at once
# An xz header may ask for a 1.5 GiB dictionary; xz -9 needs 65 MiB. (zstd's own default
# already refuses windows over 128 MiB.)
XZ_MEMLIMIT = 256 * 1024 * 1024


class CorruptDataError(TemporaryError):
    """The compressed stream is damaged or incomplete."""


class TruncatedDataError(CorruptDataError):
    """The compressed stream stopped in the middle (a cut connection, usually)."""


class Compressor(Protocol):
    def compress(self, data: bytes) -> bytes: ...
    def flush(self) -> bytes: ...


class _Members:
    """Shared loop: one decoder object per member, a fresh one after each member ends."""

    def __init__(self, what: str):
        self.what = what
        self.obj = self._new()
        self.in_member = False  # input seen since the last member ended
        self.seen_any = False

    def _new(self):
        raise NotImplementedError

    def _step(self, data: bytes) -> Iterator[bytes]:
        """Decode ``data`` into the current member; when the member ends, put the input
        that follows it in ``self.leftover`` and return."""
        raise NotImplementedError

    def feed(self, data: bytes) -> Iterator[bytes]:
        try:
            while data:
                self.in_member = self.seen_any = True
                self.leftover = b""
                yield from self._step(data)
                if self.obj.eof:
                    data = self.leftover
                    self.obj = self._new()
                    self.in_member = False
                else:
                    data = b""
        except (zlib.error, lzma.LZMAError, zstandard.ZstdError, EOFError) as e:
            raise CorruptDataError(f"corrupt {self.what} data: {e}") from None

    def finish(self) -> None:
        if self.in_member or not self.seen_any:
            raise TruncatedDataError(f"{self.what} data ends early (truncated download?)")


class _Gzip(_Members):
    def _new(self):
        return zlib.decompressobj(wbits=31)

    def _step(self, data: bytes) -> Iterator[bytes]:
        while data:
            out = self.obj.decompress(data, OUT_CHUNK)
            if out:
                yield out
            if self.obj.eof:
                self.leftover = self.obj.unused_data
                return
            data = self.obj.unconsumed_tail


class _Xz(_Members):
    def _new(self):
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=XZ_MEMLIMIT)

    def _step(self, data: bytes) -> Iterator[bytes]:
        out = self.obj.decompress(data, OUT_CHUNK)
        while True:
            if out:
                yield out
            if self.obj.eof:
                self.leftover = self.obj.unused_data
                return
            if self.obj.needs_input:
                return
            out = self.obj.decompress(b"", OUT_CHUNK)


class _Zstd(_Members):
    """zstandard's decompressobj has no output limit, so input is fed in pieces sized to
    keep each output near OUT_CHUNK. zstd expands at most ~32768x (an RLE block), so with
    pieces of at least 1 KiB one output is never above ~32 MiB."""

    def __init__(self, what: str):
        self.piece = 1024
        self.dctx = zstandard.ZstdDecompressor()
        super().__init__(what)

    def _new(self):
        return self.dctx.decompressobj()

    def _step(self, data: bytes) -> Iterator[bytes]:
        view = memoryview(data)
        pos = 0
        while pos < len(view):
            piece = view[pos:pos + self.piece]
            out = self.obj.decompress(piece)
            pos += len(piece)
            if out:
                yield out
            if len(out) > 4 * OUT_CHUNK:
                self.piece = max(1024, self.piece // 4)
            elif len(out) < OUT_CHUNK // 2:
                self.piece = min(1024 * 1024, self.piece * 2)
            if self.obj.eof:
                # unused_data covers only the last piece; the rest was never fed.
                self.leftover = self.obj.unused_data + bytes(view[pos:])
                return


@dataclass(frozen=True)
class Codec:
    name: str
    suffix: str
    decompressor: Callable[[], _Members]
    compressor: Callable[[int], Compressor]
    default_level: int
    levels: range


def _gzip_compressor(level: int) -> Compressor:
    return zlib.compressobj(level, zlib.DEFLATED, 31)


def _zstd_compressor(level: int) -> Compressor:
    return zstandard.ZstdCompressor(level=level, threads=-1, write_checksum=True).compressobj()


def _xz_compressor(level: int) -> Compressor:
    return lzma.LZMACompressor(format=lzma.FORMAT_XZ, preset=level)


CODECS: dict[str, Codec] = {
    "gzip": Codec("gzip", ".gz", lambda: _Gzip("gzip"), _gzip_compressor, 6, range(1, 10)),
    "zstd": Codec("zstd", ".zst", lambda: _Zstd("zstd"), _zstd_compressor, 3, range(1, 20)),
    "xz": Codec("xz", ".xz", lambda: _Xz("xz"), _xz_compressor, 6, range(0, 10)),
}


def codec_for_file(file: str) -> str:
    """The codec name for a server file name, from its suffix; ValueError if none fits."""
    for codec in CODECS.values():
        if file.endswith(codec.suffix) and len(file) > len(codec.suffix):
            return codec.name
    raise ValueError(f"{file!r} does not end with .gz, .zst or .xz")
