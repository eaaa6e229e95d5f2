"""Keep the node cache in step with the server: whole-cache ``sync`` and, for one job's
image, ``ensure_image``.

Every change to one image (verify, download, replace, withdraw) happens under that
image's lock, so N jobs wanting the same missing image cause one download while the
others wait, then find it verified. An unchanged, verified cache costs one conditional
request and a stat per image.

Every wait is bounded: for an image's lock, ``[images] lock_timeout``; a lock's holder
does all its network work (the list, the image, retries) within ``download_timeout``,
after which the transfer is cut off and the lock freed; an image stops growing at
``max_image_bytes`` (or the exact size the catalog gives). A file a running job holds
is never removed or replaced (racf_vm.images.cacheimage).
"""

import json
import logging
import os
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional
from urllib.parse import quote

from racf_vm.core.errors import ConfigError, TemporaryError
from racf_vm.core.files import read_capped_or_none
from racf_vm.images import index
from racf_vm.images.cacheimage import bring_locked, sweep_temps, withdraw
from racf_vm.images.checksums import RemoteImage, parse_list
from racf_vm.images.fetch import ChecksumMismatchError, Client, FetchError, HttpSettings
from racf_vm.images.fsutil import write_atomic
from racf_vm.images.locks import hold_image, image_lock
from racf_vm.images.stream import Progress
from racf_vm.images.syncplan import LocalImage, plan_sync
from racf_vm.trust import pathtrust

log = logging.getLogger(__name__)

LIST_STATE = ".remote-list.json"
ProgressFactory = Callable[[str], Progress]


@dataclass
class SyncReport:
    fetched: list[str] = field(default_factory=list)
    verified: list[str] = field(default_factory=list)  # already here, hashed once, correct
    removed: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)  # withdrawn or changed, in use by a job: kept
    unchanged: int = 0
    list_not_modified: bool = False
    requests: int = 0


class SyncError(TemporaryError):
    """Some images could not be brought up to date (each one is in the log)."""


@dataclass(frozen=True)
class _Source:
    base_url: str
    checksum_file: str

    @property
    def list_url(self) -> str:
        return f"{self.base_url.rstrip('/')}/{quote(self.checksum_file)}"

    def image_url(self, img: RemoteImage) -> str:
        return f"{self.base_url.rstrip('/')}/{quote(img.file)}"


def _settings(images_cfg) -> HttpSettings:
    return HttpSettings(timeout=images_cfg.http_timeout, deadline=images_cfg.download_timeout,
                        retries=images_cfg.retries, retry_delay=images_cfg.retry_delay,
                        proxy=images_cfg.proxy)


def prepare_cache_dir(path: str) -> str:
    """Create the cache directory if needed (root 0755) and, as root, refuse an untrusted one."""
    try:
        os.mkdir(path, 0o755)
    except FileExistsError:
        pass
    except OSError as e:
        raise ConfigError(f"cannot create the image cache {path}: {e.strerror}") from None
    if os.geteuid() == 0:
        pathtrust.check_trusted_dir(path)
    return path


# -- the remote list and its local copy ------------------------------------------------

def refresh_list(client: Client, cache_dir: str, list_url: str) -> tuple[dict[str, RemoteImage], bool]:
    """The server's list (and whether it was unchanged), using and updating the local copy."""
    state: dict = {}
    raw = read_capped_or_none(os.path.join(cache_dir, LIST_STATE), 8 * 1024 * 1024)
    if raw:
        try:
            state = json.loads(raw)
        except ValueError:
            log.warning("%s/%s is damaged; fetching the list again", cache_dir, LIST_STATE)
    usable = state.get("url") == list_url and isinstance(state.get("body"), str)
    resp = client.get_list(list_url, etag=state.get("etag", "") if usable else "",
                           last_modified=state.get("last_modified", "") if usable else "")
    if resp.body is None:
        if not usable:
            raise FetchError(f"{list_url}: server answered 304 to an unconditional request")
        return parse_list(state["body"].encode("ascii"), list_url), True
    images = parse_list(resp.body, list_url)  # refuse a bad list before keeping it
    new_state = {"url": list_url, "etag": resp.etag, "last_modified": resp.last_modified,
                 "body": resp.body.decode("ascii")}
    write_atomic(cache_dir, LIST_STATE, json.dumps(new_state).encode())
    return images, False


# -- local state -------------------------------------------------------------------------

def local_state(cache_dir: str) -> dict[str, LocalImage]:
    idx = index.load(cache_dir)
    present: dict[str, os.stat_result] = {}
    with os.scandir(cache_dir) as it:
        for entry in it:
            if not entry.name.startswith(".") and entry.is_file(follow_symlinks=False):
                present[entry.name] = entry.stat(follow_symlinks=False)
    state = {}
    for name in set(present) | set(idx):
        st = present.get(name)
        known = idx.get(name)
        verified = known.sha256 if known is not None and st is not None and known.matches(st) else None
        state[name] = LocalImage(present=st is not None, verified_sha256=verified,
                                 managed=known is not None)
    return state


# -- entry points ----------------------------------------------------------------------------

def sync(images_cfg, *, source_url: Optional[str] = None, cache_dir: Optional[str] = None,
         progress: Optional[ProgressFactory] = None,
         sizes: Optional[Mapping[str, int]] = None) -> SyncReport:
    """Bring the whole cache in step with the server's list.

    ``images_cfg`` is the ``[images]`` config section; ``source_url`` and ``cache_dir``
    override it. ``sizes`` maps a sha256 to the exact size of that image (the catalog's),
    a tighter cap than ``max_image_bytes``. Raises SyncError (after trying every image)
    if some image failed; an image a job holds is kept and reported ``busy``.
    """
    base = source_url if source_url is not None else images_cfg.source_url
    if not base:
        raise ConfigError("no image source: set [images] source_url or pass --source")
    source = _Source(base, images_cfg.checksum_file)
    cache_dir = prepare_cache_dir(cache_dir or images_cfg.cache_dir)
    report = SyncReport()
    failed: list[str] = []
    with Client(_settings(images_cfg)) as client:
        remote, report.list_not_modified = refresh_list(client, cache_dir, source.list_url)
        sweep_temps(cache_dir, remote)
        plan = plan_sync(remote, local_state(cache_dir))
        report.unchanged = len(plan.keep)
        for name in plan.remove:
            (report.removed if withdraw(cache_dir, name, images_cfg.lock_timeout)
             else report.busy).append(name)
        if plan.forget:
            index.forget(cache_dir, list(plan.forget))
        for name in plan.verify + plan.fetch:
            img = remote[name]
            cap = min(images_cfg.max_image_bytes,
                      (sizes or {}).get(img.sha256, images_cfg.max_image_bytes))
            try:
                with image_lock(cache_dir, name, images_cfg.lock_timeout), \
                        client.deadline(images_cfg.download_timeout):
                    done = bring_locked(client, source.image_url(img), cache_dir, img, cap,
                                        progress(name) if progress else None)
            except ChecksumMismatchError:
                failed.append(name)  # already logged as CRITICAL where it was found
                continue
            except TemporaryError as e:
                log.error("image %s: %s", name, e.message)
                failed.append(name)
                continue
            if done == "unchanged":
                report.unchanged += 1
            else:
                getattr(report, done).append(name)
        report.requests = client.requests
    if failed:
        raise SyncError(f"{len(failed)} image(s) could not be updated: {', '.join(failed)}")
    return report


def ensure_image(entry, config, *, progress: Optional[ProgressFactory] = None) -> bool:
    """For a job: make sure ``entry``'s base image is in the cache and verified; True if
    the cache manages it (then it is verified with the catalog's sha256).

    A no-op when no source is configured, when the entry's file lives outside the cache,
    or when the cached file is verified with the catalog's sha256 (a stat and an index
    read; no network). Otherwise fetches that one image under its lock, requiring the
    server's list to agree with the catalog, within ``download_timeout`` for the list
    and the image together, and no larger than the catalog's ``size`` (if given) or
    ``max_image_bytes``. Raises TemporaryError (exit 75: the job runs elsewhere) when
    that fails, or when another version is cached and running jobs still hold it.
    """
    cfg = config.images
    if not cfg.source_url:
        return False
    cache_dir = os.path.normpath(cfg.cache_dir)
    path = os.path.normpath(entry.path)
    if os.path.dirname(path) != cache_dir:
        log.debug("image %s lives outside the cache (%s); not fetched", entry.name, path)
        return False
    if entry.checksum_is_placeholder:
        raise ConfigError(f"image {entry.name}: the catalog has the placeholder sha256; "
                          "put the image's real checksum there")
    name = os.path.basename(path)
    prepare_cache_dir(cache_dir)
    if index.verified_sha(cache_dir, name) == entry.sha256:
        return True
    source = _Source(cfg.source_url, cfg.checksum_file)
    cap = min(cfg.max_image_bytes, entry.size or cfg.max_image_bytes)
    with Client(_settings(cfg)) as client:
        with image_lock(cache_dir, name, cfg.lock_timeout), client.deadline(cfg.download_timeout):
            if index.verified_sha(cache_dir, name) == entry.sha256:
                return True  # another job fetched it while we waited
            remote, _ = refresh_list(client, cache_dir, source.list_url)
            img = remote.get(name)
            if img is None:
                raise FetchError(f"image {entry.name}: {name} is not on the image server "
                                 f"({source.list_url})")
            if img.sha256 != entry.sha256:
                raise FetchError(
                    f"image {entry.name}: the server has sha256 {img.sha256} but the catalog "
                    f"expects {entry.sha256}; update the catalog or republish the image")
            done = bring_locked(client, source.image_url(img), cache_dir, img, cap,
                                progress(name) if progress else None)
            if done == "busy":
                raise TemporaryError(
                    f"image {entry.name}: the node has another version of {name} that running "
                    "jobs still use; it is replaced once they end")
    return True


@contextmanager
def hold_for_job(entry, config, hold_timeout: float = 60.0) -> Iterator[int]:
    """``ensure_image``, then hold the image for the job's lifetime (``locks.hold_image``).

    A sync may replace a file no job holds yet, so once held, a cache-managed file is
    checked to still be the one verified with the catalog's sha256, and fetched again
    once if not.
    """
    for _ in range(2):
        managed = ensure_image(entry, config)
        with hold_image(entry.path, hold_timeout) as fd:
            known = index.load(config.images.cache_dir).get(os.path.basename(entry.path))
            if not managed or (known is not None and known.sha256 == entry.sha256
                               and known.matches(os.fstat(fd))):
                yield fd
                return
        log.info("image %s changed before the job could hold it; checking again", entry.name)
    raise TemporaryError(f"image {entry.name}: the cached file keeps changing (a sync is "
                         "replacing it); the job can run elsewhere")
