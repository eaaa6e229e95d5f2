"""Keep the node cache in step with the server's verified list: the whole-cache ``sync``
(``racf-vm images sync``), and the expiry a job start does when the list changed. One
job's own image: racf_vm.images.jobimage.

Every change to one image (verify, download, replace, withdraw) happens under that
image's lock, so N jobs wanting the same missing image cause one download while the
others wait, then find it verified. An unchanged, verified cache costs one conditional
request and a stat per image.

Every wait is bounded: for an image's lock, ``[images] lock_timeout``; the list is fetched
(before any image lock is taken) within ``download_timeout``, and a lock's holder does
its image transfer, retries included, within ``download_timeout``, after which the
transfer is cut off and the lock freed; an image stops growing at
``max_image_bytes`` (or the exact size the catalog gives). An image a running job holds
is never removed, and the file it holds never changes under it (racf_vm.images.versions).
"""

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Callable, Optional
from urllib.parse import quote

from racf_vm.core.errors import ConfigError, TemporaryError
from racf_vm.core.locking import LockTimeout
from racf_vm.images import index, remotelist, versions
from racf_vm.images.cacheimage import bring_locked, sweep_temps, withdraw
from racf_vm.images.checksums import RemoteImage
from racf_vm.images.fetch import ChecksumMismatchError, Client, HttpSettings
from racf_vm.images.locks import image_lock
from racf_vm.images.stream import Progress
from racf_vm.images.syncplan import LocalImage, plan_sync
from racf_vm.trust import pathtrust

log = logging.getLogger(__name__)

ProgressFactory = Callable[[str], Progress]


@dataclass
class SyncReport:
    fetched: list[str] = field(default_factory=list)
    verified: list[str] = field(default_factory=list)  # already here, hashed once, correct
    removed: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)  # withdrawn, but in use by a job: kept
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


def source_of(images_cfg, source_url: Optional[str] = None) -> _Source:
    base = source_url if source_url is not None else images_cfg.source_url
    if not base:
        raise ConfigError("no image source: set [images] source_url or pass --source")
    return _Source(base, images_cfg.checksum_file)


def settings(images_cfg) -> HttpSettings:
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
                                 managed=known is not None,
                                 local=known is not None and known.origin == "local")
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
    source = source_of(images_cfg, source_url)
    cache_dir = prepare_cache_dir(cache_dir or images_cfg.cache_dir)
    report = SyncReport()
    failed: list[str] = []
    with Client(settings(images_cfg)) as client:
        listed = remotelist.refresh(client, cache_dir, source.list_url,
                                    remotelist.ListPolicy.of(images_cfg))
        remote, report.list_not_modified = listed.images, listed.not_modified
        sweep_temps(cache_dir, remote)
        plan = plan_sync(remote, local_state(cache_dir))
        report.unchanged = len(plan.keep)
        report.removed, report.busy = expire(cache_dir, plan, images_cfg.lock_timeout)
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
    tidy_versions(cache_dir, set(plan.keep) | versions.all_names(cache_dir))
    if failed:
        raise SyncError(f"{len(failed)} image(s) could not be updated: {', '.join(failed)}")
    return report


def expire(cache_dir: str, plan, lock_timeout: float) -> tuple[list[str], list[str]]:
    """Withdraw what the verified list no longer names; returns (removed, kept busy)."""
    removed, busy = [], []
    for name in plan.remove:
        try:
            (removed if withdraw(cache_dir, name, lock_timeout) else busy).append(name)
        except LockTimeout:
            busy.append(name)  # being fetched or withdrawn right now: a later check
    if busy:
        log.info("withdrawn images kept while jobs use them: %s", ", ".join(busy))
    if plan.forget:
        index.forget(cache_dir, list(plan.forget))
    return removed, busy


def expire_unlisted(cache_dir: str, remote: Mapping[str, RemoteImage]) -> list[str]:
    """At a job's start, when the verified list changed: remove what it no longer names,
    without waiting for any lock (a busy image waits for a later check)."""
    removed, _ = expire(cache_dir, plan_sync(remote, local_state(cache_dir)), 0.0)
    return removed


def tidy_versions(cache_dir: str, names: Iterable[str]) -> None:
    """Give each current image its version link, and remove version links nobody holds;
    images whose lock is taken (a download) are left for later."""
    idx = index.load(cache_dir)
    for name in sorted(names):
        try:
            with image_lock(cache_dir, name, 0.0):
                keep = None
                known = idx.get(name)
                try:
                    st = os.stat(os.path.join(cache_dir, name), follow_symlinks=False)
                except FileNotFoundError:
                    st = None
                if known is not None and st is not None and known.matches(st):
                    keep = known.sha256
                    versions.link_current(cache_dir, name, keep, st)
                versions.prune(cache_dir, name, keep)
        except LockTimeout:
            continue
