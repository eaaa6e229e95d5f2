"""HTTP: the checksum list (conditional GET) and images (stream -> decompress -> hash -> file).

requests does the HTTP. The list is fetched with If-None-Match / If-Modified-Since and
``Cache-Control: max-age=0``, so a Squid in front of the server revalidates it cheaply
instead of serving a stale list, and still serves unchanged bytes from its cache. Images
are read raw (``decode_content=False``): a server that labels ``.gz`` files with
``Content-Encoding: gzip`` must not make us decompress twice.

Network trouble (refused or reset connections, timeouts, 5xx, a body shorter than its
Content-Length) is retried a bounded number of times with exponential backoff; a wrong
checksum, corrupt data, a 4xx or a local write error is not.
"""

import hashlib
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Optional, TypeVar

import requests
import urllib3

from racf_vm.core.errors import TemporaryError
from racf_vm.images.codecs import CODECS, CorruptDataError, TruncatedDataError
from racf_vm.images.fsutil import CacheWriteError, temp_file

log = logging.getLogger(__name__)

READ_CHUNK = 1024 * 1024
_HASH_AHEAD = 8  # decompressed chunks queued for the hashing thread
USER_AGENT = "racf-vm-images/1"
T = TypeVar("T")

# Called for each piece read: (compressed bytes in this piece, Content-Length or None).
Progress = Callable[[int, Optional[int]], None]


class FetchError(TemporaryError):
    """The server could not be reached or did not give us the file."""


class _Retryable(Exception):
    """Internal: a failure worth another attempt."""


class ChecksumMismatchError(TemporaryError):
    """A downloaded image does not have the sha256 the list (and catalog) promise."""


@dataclass(frozen=True)
class HttpSettings:
    timeout: float = 30.0  # connect, and each read
    retries: int = 3
    retry_delay: float = 2.0  # doubled after each failed attempt
    proxy: str = ""


@dataclass(frozen=True)
class ListResponse:
    body: Optional[bytes]  # None: not modified since the validators we sent
    etag: str = ""
    last_modified: str = ""


@dataclass(frozen=True)
class Downloaded:
    sha256: str
    size: int


class Client:
    def __init__(self, settings: HttpSettings):
        self.settings = settings
        self.session = requests.Session()
        self.session.trust_env = False  # the environment is the caller's, not the site's
        self.session.headers["User-Agent"] = USER_AGENT
        if settings.proxy:
            self.session.proxies = {"http": settings.proxy, "https": settings.proxy}
        self.requests = 0  # requests sent, for tests and the bench

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _retrying(self, what: str, attempt: Callable[[], T]) -> T:
        delay = self.settings.retry_delay
        for number in range(self.settings.retries + 1):
            try:
                return attempt()
            except _Retryable as e:
                if number == self.settings.retries:
                    raise FetchError(f"{what}: {e} (gave up after {number + 1} attempts)") from None
                log.info("%s: %s; retrying in %.3gs", what, e, delay)
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def _get(self, url: str, headers: dict[str, str]) -> requests.Response:
        self.requests += 1
        try:
            resp = self.session.get(url, headers=headers, stream=True, allow_redirects=True,
                                    timeout=self.settings.timeout)
        except requests.RequestException as e:
            raise _Retryable(_describe(e)) from None
        if resp.status_code >= 500 or resp.status_code == 429:
            resp.close()
            raise _Retryable(f"server answered {resp.status_code} {resp.reason}")
        return resp

    def get_list(self, url: str, etag: str = "", last_modified: str = "",
                 max_bytes: int = 4 * 1024 * 1024) -> ListResponse:
        headers = {"Cache-Control": "max-age=0", "Accept-Encoding": "identity"}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified

        def attempt() -> ListResponse:
            with self._get(url, headers) as resp:
                if resp.status_code == 304:
                    return ListResponse(None, etag, last_modified)
                _check_ok(resp, url)
                body = _read_all(resp, max_bytes)
                return ListResponse(body, resp.headers.get("ETag", ""),
                                    resp.headers.get("Last-Modified", ""))

        return self._retrying(f"fetching {url}", attempt)

    def download_image(self, url: str, directory: str, name: str, codec: str,
                       expected_sha256: str, progress: Optional[Progress] = None) -> Downloaded:
        """Download, decompress and hash ``url`` into ``directory/name`` in one pass.

        The data goes into ``.tmp-<name>-<random>``; only if the decompressed image has
        ``expected_sha256`` is it fsynced and renamed to ``name``. Whatever fails, the
        temporary file is removed.
        """
        headers = {"Cache-Control": "max-age=0", "Accept-Encoding": "identity"}
        with temp_file(directory, name) as tmp:
            def attempt() -> Downloaded:
                tmp.truncate()
                with self._get(url, headers) as resp:
                    _check_ok(resp, url)
                    return _pump(resp, codec, tmp.write, progress)

            got = self._retrying(f"downloading {url}", attempt)
            if got.sha256 != expected_sha256:
                # The seed's "BAD checksums found": always a CRITICAL record for the
                # operators, whatever the caller then does with the exception.
                log.critical("BAD checksum for image %s from %s: got %s, expected %s; "
                             "file discarded", name, url, got.sha256, expected_sha256)
                raise ChecksumMismatchError(
                    f"image {name} from {url} has sha256 {got.sha256}, expected "
                    f"{expected_sha256}: discarded (publisher or proxy serves a bad file)")
            tmp.commit(0o644)
            return got


def _describe(e: BaseException) -> str:
    if isinstance(e, (requests.Timeout, urllib3.exceptions.TimeoutError)):
        return "timed out waiting for the server"
    if isinstance(e, requests.ConnectionError):
        return f"connection failed: {e}"
    return f"{type(e).__name__}: {e}"


def _check_ok(resp: requests.Response, url: str) -> None:
    if resp.status_code != 200:
        raise FetchError(f"{url}: server answered {resp.status_code} {resp.reason}")


def _raw_chunks(resp: requests.Response):
    """The body as sent (no Content-Encoding decoding); network errors become _Retryable."""
    raw = resp.raw
    try:
        while True:
            chunk = raw.read(READ_CHUNK, decode_content=False)
            if not chunk:
                return
            yield chunk
    except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as e:
        if isinstance(e, urllib3.exceptions.ProtocolError) or "IncompleteRead" in repr(e):
            raise _Retryable(f"connection closed early: {e}") from None
        raise _Retryable(_describe(e)) from None


def _read_all(resp: requests.Response, max_bytes: int) -> bytes:
    parts, size = [], 0
    for chunk in _raw_chunks(resp):
        size += len(chunk)
        if size > max_bytes:
            raise FetchError(f"{resp.url}: larger than {max_bytes} bytes")
        parts.append(chunk)
    return b"".join(parts)


def _pump(resp: requests.Response, codec: str, write: Callable[[bytes], None],
          progress: Optional[Progress]) -> Downloaded:
    """Read -> decompress -> write here, hash in a second thread (hashlib and zlib release
    the GIL), so decompressing and hashing run on two CPUs like a shell pipeline."""
    decoder = CODECS[codec].decompressor()
    digest = hashlib.sha256()
    total = int(resp.headers["Content-Length"]) if resp.headers.get("Content-Length", "").isdigit() else None
    size = 0
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sha256") as hasher:
        pending: deque = deque()
        try:
            for chunk in _raw_chunks(resp):
                if progress is not None:
                    progress(len(chunk), total)
                for out in decoder.feed(chunk):
                    pending.append(hasher.submit(digest.update, out))
                    write(out)
                    size += len(out)
                    while len(pending) > _HASH_AHEAD:
                        pending.popleft().result()
            decoder.finish()
        except TruncatedDataError as e:
            raise _Retryable(str(e)) from None
        except CorruptDataError as e:
            raise CorruptDataError(f"{resp.url}: {e}") from None
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
            while chunk := f.read(4 * READ_CHUNK):
                digest.update(chunk)
                size += len(chunk)
    except OSError as e:
        raise CacheWriteError(f"{path}: cannot read: {e.strerror}") from None
    return Downloaded(digest.hexdigest(), size)
