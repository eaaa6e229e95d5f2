"""One image of the node cache, under its lock: verify, fetch, replace, withdraw, and the
temporary files killed downloads left behind.

A running job holds a shared flock on its base image (``locks.hold_image``) and uses it
through its version link (racf_vm.images.versions), never by ``<cache>/<name>``. So a new
version may replace the file at an image's name while jobs run on the old one; but an
image is withdrawn only when no job holds it: a non-blocking exclusive flock on the file
is taken first and kept across the unlink; a held image is reported ``busy`` and left for
a later check.
"""

import errno
import logging
import os
import re
from contextlib import contextmanager
from typing import Container, Iterator, Optional

from racf_vm.core.locking import LockTimeout
from racf_vm.images import index, versions
from racf_vm.images.checksums import RemoteImage, validate_file_name
from racf_vm.images.fetch import Client
from racf_vm.images.fsutil import (
    TMP_PREFIX,
    CacheWriteError,
    describe_oserror,
    fsync_dir,
    temp_file,
)
from racf_vm.images.locks import image_lock, try_exclusive
from racf_vm.images.stream import Progress, hash_file

log = logging.getLogger(__name__)

_TEMP_RE = re.compile(re.escape(TMP_PREFIX) + r"(.+)-[0-9a-f]{12}")  # fsutil.TempFile's names


@contextmanager
def _unless_held(path: str) -> Iterator[bool]:
    """False if a job holds the file at ``path``; else True, and no job can start holding
    it until the block ends (True too when there is no file)."""
    try:
        fd = try_exclusive(path)
    except OSError as e:
        if e.errno not in (errno.ENOENT, errno.ELOOP):
            raise CacheWriteError(describe_oserror(e, path)) from None
        fd = -1  # nothing a job could hold: no file, or a symlink (hold_image never follows one)
    if fd is None:
        yield False
    elif fd < 0:
        yield True
    else:
        try:
            yield True
        finally:
            os.close(fd)


def remove_stale_temps(cache_dir: str, name: str) -> None:
    """Temp files of ``name`` left by a killed process; only called under ``name``'s lock,
    when nobody else can be writing one."""
    for leftover in os.listdir(cache_dir):
        m = _TEMP_RE.fullmatch(leftover)
        if m and m.group(1) == name:
            log.info("removing %s left by an interrupted download", leftover)
            os.unlink(os.path.join(cache_dir, leftover))


def sweep_temps(cache_dir: str, listed: Container[str]) -> None:
    """Remove the temp files of every image name, listed or not, whose lock is free (a
    held lock means a live download: its file stays)."""
    names = set()
    for entry in os.listdir(cache_dir):
        m = _TEMP_RE.fullmatch(entry)
        if m:
            try:
                names.add(validate_file_name(m.group(1)))
            except ValueError:
                pass  # not an image's (the index's and list's own start with a dot)
    for name in sorted(names):
        try:
            with image_lock(cache_dir, name, 0.0) as held:
                remove_stale_temps(cache_dir, name)
                held.remove = name not in listed and not os.path.lexists(
                    os.path.join(cache_dir, name))
        except LockTimeout:
            log.debug("image %s: a download is under way; its temp file stays", name)


def bring_locked(client: Client, url: str, cache_dir: str, img: RemoteImage, max_bytes: int,
                 progress: Optional[Progress]) -> str:
    """Make ``cache_dir/img.name`` the verified image the list names, at most ``max_bytes``,
    with its version link; says what it did: unchanged, verified or fetched. A running job
    keeps the file it holds (through that file's own version link), so the new file goes
    in even then. The caller holds the image's lock."""
    path = os.path.join(cache_dir, img.name)
    done = _bring(client, url, cache_dir, img, max_bytes, progress, path)
    st = os.stat(path, follow_symlinks=False)
    versions.link_current(cache_dir, img.name, img.sha256, st)
    versions.prune(cache_dir, img.name, img.sha256)
    return done


def _bring(client, url, cache_dir, img, max_bytes, progress, path) -> str:
    sha = index.verified_sha(cache_dir, img.name)
    if sha == img.sha256:
        return "unchanged"  # someone did it while we waited
    if sha is None and os.path.lexists(path):
        before = os.stat(path, follow_symlinks=False)
        if before.st_size <= max_bytes:  # a larger file cannot be it: not worth hashing
            got = hash_file(path)
            after = os.stat(path, follow_symlinks=False)
            if got.sha256 == img.sha256 and index.Verified.of(got.sha256, before).matches(after):
                index.record(cache_dir, img.name, got.sha256, after)
                return "verified"
    remove_stale_temps(cache_dir, img.name)
    with temp_file(cache_dir, img.name) as tmp:
        client.download_image(url, tmp, img.name, img.codec, img.sha256, max_bytes=max_bytes,
                              progress=progress)
        st = tmp.commit(0o644)
    index.record(cache_dir, img.name, img.sha256, st)
    log.info("fetched image %s (%s)", img.name, img.sha256)
    return "fetched"


def withdraw(cache_dir: str, name: str, lock_timeout: float) -> bool:
    """Remove an image the verified list no longer names, unless a running job holds it
    (then it stays, for a later check); True if it is gone. Versions of it that jobs
    still hold stay until they end."""
    path = os.path.join(cache_dir, name)
    with image_lock(cache_dir, name, lock_timeout) as held:
        with _unless_held(path) as free:
            if not free:
                return False
            remove_stale_temps(cache_dir, name)
            try:
                os.unlink(path)
                fsync_dir(cache_dir)
            except FileNotFoundError:
                pass
            except OSError as e:
                raise CacheWriteError(f"cannot remove withdrawn image {path}: {e.strerror}") from None
        index.forget(cache_dir, [name])
        _, still_held = versions.prune(cache_dir, name, None)  # our own flock is gone now
        held.remove = not still_held
        log.info("removed withdrawn image %s", name)
        return True
