"""One job's image at its start: which version, fetched if needed, held until the job ends.

A catalog entry either pins a sha256 or follows the server (``sha256 = "follow"``):

* pinned, with the cached file verified with that sha256: no network at all;
* pinned otherwise: the server's list must name that very sha256, which is fetched;
* following: one conditional request for the list (a 304 when nothing changed),
  verified with the site's keys before any line is used; the job gets the version the
  list names, fetched if the cache has another. If the server cannot be reached, the
  copy of the list this node verified last is used. A follow entry never runs a file
  whose sha256 did not come from a verified, signed list.

When the list changed, images it no longer names are expired (racf_vm.images.sync).
The job then holds the version link of its file (racf_vm.images.versions): the file
under that name never changes, so a newer version may arrive for the next jobs while
this one runs, and the prepared layer made for this version stays valid.
"""

from __future__ import annotations

import logging
import os
import stat
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Optional

from racf_vm.core.errors import ConfigError, RefusedError, TemporaryError
from racf_vm.images import index, remotelist, sync, versions
from racf_vm.images.cacheimage import bring_locked
from racf_vm.images.catalog import ImageEntry
from racf_vm.images.checksums import RemoteImage
from racf_vm.images.fetch import Client, FetchError
from racf_vm.images.locks import hold_image, image_lock
from racf_vm.images.stream import Progress, hash_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeldImage:
    entry: ImageEntry  # resolved: the sha256 the job runs and the file it uses
    fd: int  # the shared flock that keeps the file


def cache_managed(entry: ImageEntry, config) -> bool:
    return os.path.dirname(os.path.normpath(entry.path)) == os.path.normpath(config.images.cache_dir)


def _check_entry(entry: ImageEntry, config) -> None:
    cfg = config.images
    if entry.follow:
        if not cache_managed(entry, config):
            raise ConfigError(f"image {entry.name}: sha256 = \"follow\" needs its path in the "
                              f"image cache ({cfg.cache_dir})")
        if not cfg.source_url or not cfg.trusted_keys:
            raise ConfigError(f"image {entry.name} follows the image server: set [images] "
                              "source_url and trusted_keys (lists must be signed)")
    elif entry.checksum_is_placeholder:
        raise ConfigError(f"image {entry.name}: the catalog has the placeholder sha256; "
                          "put the image's real checksum there")


def resolve_offline(entry: ImageEntry, config) -> Optional[ImageEntry]:
    """Without network: the entry as a job would run it now, if the cache has its verified
    file (for a follow entry, the current one); None if not. Entries outside the cache
    are returned as they are."""
    if not cache_managed(entry, config):
        return None if entry.follow else entry
    cache_dir = os.path.normpath(config.images.cache_dir)
    name = os.path.basename(entry.path)
    found = _verified_on_disk(cache_dir, name, None if entry.follow else entry.sha256)
    if found is None:
        return None
    sha256, _st = found
    return entry.resolved(sha256, versions.version_path(cache_dir, name, sha256))


def resolve(entry: ImageEntry, config, *, progress: Optional[Progress] = None) -> ImageEntry:
    """The entry as this job runs it (sha256 and version link), its file in the cache and
    verified; see the module's description. TemporaryError (exit 75: the job runs
    elsewhere) when that cannot be done now."""
    _check_entry(entry, config)
    cfg = config.images
    if not cache_managed(entry, config):
        return entry  # the administrator's own file: checked by path, as before
    cache_dir = sync.prepare_cache_dir(os.path.normpath(cfg.cache_dir))
    name = os.path.basename(os.path.normpath(entry.path))
    if not entry.follow:
        path = _current(cache_dir, name, entry.sha256, cfg.lock_timeout)
        if path is not None:
            return entry.resolved(entry.sha256, path)
        if not cfg.source_url:
            return entry.resolved(entry.sha256, _verify_here(cache_dir, name, entry, config))
    source = sync.source_of(cfg)
    with Client(sync.settings(cfg)) as client:
        remote = _listed(client, cache_dir, source, cfg, entry)
        img = remote.images.get(name)
        if img is None:
            raise FetchError(f"image {entry.name}: {name} is not on the image server "
                             f"({source.list_url})")
        want = img.sha256 if entry.follow else entry.sha256
        if img.sha256 != want:
            raise FetchError(
                f"image {entry.name}: the server has sha256 {img.sha256} but the catalog "
                f"expects {want}; update the catalog or republish the image")
        path = _current(cache_dir, name, want, cfg.lock_timeout)
        if path is None:
            want, path = _fetch(client, cache_dir, source, img, remote.serial, entry, config, progress)
    return entry.resolved(want, path)


def _listed(client: Client, cache_dir: str, source, cfg, entry: ImageEntry):
    """The verified list; for a follow entry, the stored one when the server is down."""
    policy = remotelist.ListPolicy.of(cfg)
    try:
        remote = remotelist.refresh(client, cache_dir, source.list_url, policy)
    except FetchError as e:
        stored = remotelist.load_offline(cache_dir, source.list_url, policy) if entry.follow else None
        if stored is None:
            raise
        log.warning("image %s: %s; using the list this node verified last", entry.name, e.message)
        return stored
    if not remote.not_modified:
        sync.expire_unlisted(cache_dir, remote.images)
    return remote


def _verified_on_disk(cache_dir: str, name: str, sha256: Optional[str]):
    """(sha256, stat) of the cached file ``name`` while the index's record of it still
    matches the file (and has ``sha256``, when given); None otherwise."""
    known = index.load(cache_dir).get(name)
    if known is None or (sha256 is not None and known.sha256 != sha256):
        return None
    try:
        st = os.stat(os.path.join(cache_dir, name), follow_symlinks=False)
    except FileNotFoundError:
        return None
    return (known.sha256, st) if known.matches(st) else None


def _current(cache_dir: str, name: str, sha256: str, lock_timeout: float) -> Optional[str]:
    """The version link if the cached file is verified with ``sha256`` (made under the
    image's lock when missing); None otherwise. A stat and an index read when all is well."""
    found = _verified_on_disk(cache_dir, name, sha256)
    if found is None:
        return None
    path = versions.current_link(cache_dir, name, sha256, found[1])
    if path is not None:
        return path
    with image_lock(cache_dir, name, lock_timeout):
        if index.verified_sha(cache_dir, name) != sha256:
            return None
        st = os.stat(os.path.join(cache_dir, name), follow_symlinks=False)
        return versions.link_current(cache_dir, name, sha256, st)


def _verify_here(cache_dir: str, name: str, entry: ImageEntry, config) -> str:
    """No image server: a file put into the cache by hand is hashed once (under its lock)
    and used only if it has the sha256 the catalog pins."""
    with image_lock(cache_dir, name, config.images.lock_timeout):
        path = os.path.join(cache_dir, name)
        try:
            before = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            raise TemporaryError(f"image {entry.name}: {path} is not on this node and no image "
                                 "server is configured ([images] source_url)") from None
        if not stat.S_ISREG(before.st_mode):  # never hash (or follow) whatever else is there
            raise RefusedError(f"image {entry.name}: {path} is not a regular file")
        if index.verified_sha(cache_dir, name) != entry.sha256:
            got = hash_file(path).sha256
            after = os.stat(path, follow_symlinks=False)
            if got != entry.sha256 or not index.Verified.of(got, before).matches(after):
                raise ConfigError(f"image {entry.name}: {path} has sha256 {got}, but the "
                                  f"catalog pins {entry.sha256}")
            index.record(cache_dir, name, got, after, origin="local")
        st = os.stat(path, follow_symlinks=False)
        return versions.link_current(cache_dir, name, entry.sha256, st)


def _fetch(client: Client, cache_dir: str, source, img: RemoteImage, serial: int,
           entry: ImageEntry, config, progress: Optional[Progress]) -> tuple[str, str]:
    """Fetch ``img`` under its lock; (sha256, version link). A follow entry takes the
    version of a newer list another job stored meanwhile (a publish between two job
    starts), so the older list's version never replaces the newer one."""
    cfg = config.images
    cap = min(cfg.max_image_bytes, entry.size or cfg.max_image_bytes)
    with image_lock(cache_dir, img.name, cfg.lock_timeout), client.deadline(cfg.download_timeout):
        if entry.follow:
            newer = remotelist.load_offline(cache_dir, source.list_url, remotelist.ListPolicy.of(cfg))
            if newer is not None and newer.serial > serial and img.name in newer.images:
                img = newer.images[img.name]
        bring_locked(client, source.image_url(img), cache_dir, img, cap, progress)
    return img.sha256, versions.version_path(cache_dir, img.name, img.sha256)


@contextmanager
def hold_for_job(entry: ImageEntry, config, hold_timeout: float = 60.0) -> Iterator[HeldImage]:
    """``resolve``, then hold the resolved file for the job's lifetime (a shared flock).

    A version link nobody held yet may be removed by a concurrent check (its version was
    superseded meanwhile): then the job resolves once more and runs the newer version.
    """
    for _ in range(2):
        resolved = resolve(entry, config)
        try:
            holder = hold_image(resolved.path, hold_timeout)
            fd = holder.__enter__()
        except TemporaryError:
            if resolved.path == entry.path:
                raise
            log.info("image %s: version %s went away before the job could hold it; checking "
                     "again", entry.name, resolved.sha256[:16])
            continue
        try:
            yield HeldImage(resolved, fd)
        finally:
            holder.__exit__(None, None, None)
        return
    raise TemporaryError(f"image {entry.name}: the cached file keeps changing; the job can "
                         "run elsewhere")

