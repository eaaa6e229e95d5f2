"""HTTP: the checksum list (conditional GET) and images (stream -> decompress -> hash -> file).

requests does the HTTP. The list is fetched with If-None-Match / If-Modified-Since and
``Cache-Control: max-age=0``, so a Squid in front of the server revalidates it cheaply
instead of serving a stale list, and still serves unchanged bytes from its cache. Images
are read raw (``decode_content=False``): a server that labels ``.gz`` files with
``Content-Encoding: gzip`` must not make us decompress twice.

Network trouble (refused or reset connections, timeouts, 5xx, a body shorter than its
Content-Length) is retried a bounded number of times with exponential backoff; a wrong
checksum, corrupt data, a 4xx, an image over its cap or a local write error is not.
Every request runs under a Deadline (racf_vm.images.deadline) that covers its retries
too: the caller's ``client.deadline(...)`` block, else one of ``HttpSettings.deadline``.
An image stops at ``max_bytes`` decompressed (and about as many compressed), so neither
a decompression bomb nor an endless body fills the disk.
"""

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, TypeVar

import requests
import urllib3

from racf_vm.core.errors import InternalError, TemporaryError
from racf_vm.images.codecs import TruncatedDataError
from racf_vm.images.deadline import ConnectionWatch, Deadline, WatchedAdapter
from racf_vm.images.fsutil import TempFile
from racf_vm.images.stream import Downloaded, Progress, pump

log = logging.getLogger(__name__)

READ_CHUNK = 1024 * 1024
USER_AGENT = "racf-vm-images/1"
T = TypeVar("T")


class FetchError(TemporaryError):
    """The server could not be reached or did not give us the file."""


class DeadlineError(FetchError):
    """A transfer (with its retries) did not finish within its deadline: cut off."""


class _Retryable(Exception):
    """Internal: a failure worth another attempt."""


class ChecksumMismatchError(TemporaryError):
    """A downloaded image does not have the sha256 the list (and catalog) promise."""


@dataclass(frozen=True)
class HttpSettings:
    timeout: float = 30.0  # connect, and each read
    deadline: float = 3600.0  # one request with its retries, outside a client.deadline() block
    retries: int = 3
    retry_delay: float = 2.0  # doubled after each failed attempt
    proxy: str = ""


@dataclass(frozen=True)
class ListResponse:
    body: Optional[bytes]  # None: not modified since the validators we sent
    etag: str = ""
    last_modified: str = ""


class Client:
    def __init__(self, settings: HttpSettings):
        self.settings = settings
        self.session = requests.Session()
        self.session.trust_env = False  # the environment is the caller's, not the site's
        self._watch = ConnectionWatch()
        adapter = WatchedAdapter(self._watch)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self._deadline: Optional[Deadline] = None
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

    @contextmanager
    def deadline(self, seconds: float) -> Iterator[Deadline]:
        """One deadline for every request made inside the block (e.g. all of an image
        lock's hold); when it passes, the transfer under way is cut off."""
        if self._deadline is not None:
            raise InternalError("client.deadline() blocks do not nest")
        with Deadline(seconds, self._watch) as dl:
            self._deadline = dl
            try:
                yield dl
            finally:
                self._deadline = None

    def _retrying(self, what: str, attempt: Callable[[Deadline], T]) -> T:
        if self._deadline is None:
            with self.deadline(self.settings.deadline):
                return self._retrying(what, attempt)
        dl = self._deadline
        delay = self.settings.retry_delay
        for number in range(self.settings.retries + 1):
            if dl.expired:
                break
            try:
                result = attempt(dl)
            except _Retryable as e:
                if dl.expired:
                    break
                if number == self.settings.retries:
                    raise FetchError(f"{what}: {e} (gave up after {number + 1} attempts)") from None
                log.info("%s: %s; retrying in %.3gs", what, e, delay)
                time.sleep(min(delay, dl.remaining()))
                delay *= 2
                continue
            if not dl.fired:  # else the cut may have ended the data early
                return result
            break
        raise DeadlineError(f"{what}: not finished within {dl.seconds:g}s ([images] "
                            "download_timeout): cut off")

    def _get(self, url: str, headers: dict[str, str], dl: Deadline) -> requests.Response:
        self.requests += 1
        timeout = max(min(self.settings.timeout, dl.remaining()), 0.001)
        try:
            resp = self.session.get(url, headers=headers, stream=True, allow_redirects=True,
                                    timeout=timeout)
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

        def attempt(dl: Deadline) -> ListResponse:
            with self._get(url, headers, dl) as resp:
                if resp.status_code == 304:
                    return ListResponse(None, etag, last_modified)
                _check_ok(resp, url)
                body = _read_all(resp, max_bytes)
                return ListResponse(body, resp.headers.get("ETag", ""),
                                    resp.headers.get("Last-Modified", ""))

        return self._retrying(f"fetching {url}", attempt)

    def download_image(self, url: str, tmp: TempFile, name: str, codec: str,
                       expected_sha256: str, *, max_bytes: int,
                       progress: Optional[Progress] = None) -> Downloaded:
        """Download, decompress and hash ``url`` into ``tmp`` in one pass, at most
        ``max_bytes`` of image; return only if it has ``expected_sha256``.

        The caller commits ``tmp`` (or, on any error, lets ``temp_file`` remove it).
        """
        headers = {"Cache-Control": "max-age=0", "Accept-Encoding": "identity"}

        def attempt(dl: Deadline) -> Downloaded:
            tmp.truncate()
            with self._get(url, headers, dl) as resp:
                _check_ok(resp, url)
                length = resp.headers.get("Content-Length", "")
                try:
                    return pump(_raw_chunks(resp), int(length) if length.isdigit() else None,
                                codec, tmp.write, progress, max_bytes, f"image {name} from {url}")
                except TruncatedDataError as e:
                    raise _Retryable(str(e)) from None

        got = self._retrying(f"downloading {url}", attempt)
        if got.sha256 != expected_sha256:
            # The seed's "BAD checksums found": always a CRITICAL record for the
            # operators, whatever the caller then does with the exception.
            log.critical("BAD checksum for image %s from %s: got %s, expected %s; "
                         "file discarded", name, url, got.sha256, expected_sha256)
            raise ChecksumMismatchError(
                f"image {name} from {url} has sha256 {got.sha256}, expected "
                f"{expected_sha256}: discarded (publisher or proxy serves a bad file)")
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
