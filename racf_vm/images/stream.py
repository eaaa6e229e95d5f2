"""One pass over an image's compressed bytes: decompress, write, hash, within a cap.

Free of HTTP: fetch feeds it the body of a response, piece by piece as it arrives.
"""

import hashlib
from collections import deque
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Optional

from racf_vm.core.errors import TemporaryError
from racf_vm.images.codecs import CODECS, CorruptDataError, TruncatedDataError
from racf_vm.images.fsutil import CacheWriteError

_HASH_AHEAD = 8  # decompressed chunks queued for the hashing thread
_HASH_CHUNK = 4 * 1024 * 1024

# Called for each piece read: (compressed bytes in this piece, Content-Length or None).
Progress = Callable[[int, Optional[int]], None]


class ImageTooLargeError(TemporaryError):
    """An image grew past its cap while downloading: stopped there and discarded."""


@dataclass(frozen=True)
class Downloaded:
    sha256: str
    size: int


def compressed_cap(max_bytes: int) -> int:
    """The most compressed bytes an image of ``max_bytes`` may take: incompressible data
    grows by well under 1% in gzip, zstd or xz, member headers included."""
    return max_bytes + max_bytes // 64 + 65536


def pump(chunks: Iterable[bytes], total: Optional[int], codec: str,
         write: Callable[[bytes], None], progress: Optional[Progress], max_bytes: int,
         what: str) -> Downloaded:
    """Decompress -> write here, hash in a second thread (hashlib and zlib release the
    GIL), so decompressing and hashing run on two CPUs like a shell pipeline.

    ``total`` is the announced compressed size, if any. Nothing past ``max_bytes`` of
    output is written, nor read past its compressed_cap (endless empty members):
    ImageTooLargeError. TruncatedDataError and CorruptDataError name ``what``.
    """
    in_cap = compressed_cap(max_bytes)
    if total is not None and total > in_cap:
        raise ImageTooLargeError(f"{what} is {total} bytes compressed, more than an image "
                                 f"capped at {max_bytes} bytes can take: refused")
    decoder = CODECS[codec].decompressor()
    digest = hashlib.sha256()
    size = received = 0
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sha256") as hasher:
        pending: deque = deque()
        try:
            for chunk in chunks:
                received += len(chunk)
                if received > in_cap:
                    raise ImageTooLargeError(f"{what} sent more than {in_cap} compressed bytes "
                                             f"for an image capped at {max_bytes} bytes: "
                                             "stopped there and discarded")
                if progress is not None:
                    progress(len(chunk), total)
                for out in decoder.feed(chunk):
                    if size + len(out) > max_bytes:
                        raise ImageTooLargeError(f"{what} decompresses to more than its cap of "
                                                 f"{max_bytes} bytes: stopped there and discarded")
                    pending.append(hasher.submit(digest.update, out))
                    write(out)
                    size += len(out)
                    while len(pending) > _HASH_AHEAD:
                        pending.popleft().result()
            decoder.finish()
        except TruncatedDataError as e:
            raise TruncatedDataError(f"{what}: {e}") from None
        except CorruptDataError as e:
            raise CorruptDataError(f"{what}: {e}") from None
        finally:
            for fut in pending:
                fut.result()
    return Downloaded(digest.hexdigest(), size)


def hash_file(path: str) -> Downloaded:
    """sha256 of a file already in the cache (one present but never verified)."""
    digest = hashlib.sha256()
    size = 0
    try:
        with open(path, "rb", buffering=0) as f:
            while chunk := f.read(_HASH_CHUNK):
                digest.update(chunk)
                size += len(chunk)
    except OSError as e:
        raise CacheWriteError(f"{path}: cannot read: {e.strerror}") from None
    return Downloaded(digest.hexdigest(), size)
