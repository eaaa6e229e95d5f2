"""Version links: the file a job uses never changes under it.

Each verified image in the cache, ``<cache>/<name>``, also has a hard link named after
its content, ``<cache>/.versions/<name>@<sha256>``. Jobs use the version link (their
hold, the prepared layer's backing file, QEMU), never ``<cache>/<name>``. So a new
version can replace ``<cache>/<name>`` at any time, even while jobs run on the old one:
those jobs keep the old file through its version link until they end, and jobs that
start afterwards get the new one. A version link is removed once it is neither the
current version nor held by a job (a job holds a shared flock on the file: same inode,
whichever name it was opened by).

Links are only made by root, under the image's lock, to a file the index has verified
with that sha256, and files in the cache are never written in place (downloads are
renamed in), so a version link's content is always the sha256 its name says.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
from typing import Optional

from racf_vm.images.fsutil import (
    TMP_PREFIX,
    CacheWriteError,
    describe_oserror,
    fsync_dir,
)
from racf_vm.images.locks import try_exclusive

log = logging.getLogger(__name__)

VERSIONS_DIR = ".versions"
_LINK_RE = re.compile(r"(.+)@([0-9a-f]{64})")


def version_path(cache_dir: str, name: str, sha256: str) -> str:
    return os.path.join(cache_dir, VERSIONS_DIR, f"{name}@{sha256}")


def is_version_path(cache_dir: str, path: str) -> bool:
    return os.path.dirname(os.path.normpath(path)) == os.path.join(os.path.normpath(cache_dir), VERSIONS_DIR)


def _dir(cache_dir: str) -> str:
    path = os.path.join(cache_dir, VERSIONS_DIR)
    try:
        os.mkdir(path, 0o755)
    except FileExistsError:
        pass
    return path


def link_current(cache_dir: str, name: str, sha256: str, st: os.stat_result) -> str:
    """The version link of ``<cache>/<name>``, whose verified stat is ``st``, made (or
    made again, replacing an older link of another inode) if needed. The caller holds the
    image's lock, so the file cannot change meanwhile."""
    path = version_path(cache_dir, name, sha256)
    try:
        have = os.stat(path, follow_symlinks=False)
        if (have.st_dev, have.st_ino) == (st.st_dev, st.st_ino):
            return path
    except FileNotFoundError:
        pass
    directory = _dir(cache_dir)
    tmp = os.path.join(directory, f"{TMP_PREFIX}{name}@{sha256}-{secrets.token_hex(6)}")
    try:
        os.link(os.path.join(cache_dir, name), tmp, follow_symlinks=False)
        made = os.stat(tmp, follow_symlinks=False)
        if (made.st_dev, made.st_ino) != (st.st_dev, st.st_ino):
            raise CacheWriteError(f"{os.path.join(cache_dir, name)} changed while it was being "
                                  "linked; try again")
        os.rename(tmp, path)  # a job holding an older link keeps its file
        fsync_dir(directory)
    except OSError as e:
        raise CacheWriteError(describe_oserror(e, path)) from None
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    return path


def current_link(cache_dir: str, name: str, sha256: str, st: os.stat_result) -> Optional[str]:
    """The version link if it is already the very file ``st`` describes (no lock needed)."""
    path = version_path(cache_dir, name, sha256)
    try:
        have = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return None
    return path if (have.st_dev, have.st_ino) == (st.st_dev, st.st_ino) else None


def existing(cache_dir: str, name: str) -> dict[str, str]:
    """sha256 -> version link path, for every version of ``name`` present."""
    try:
        entries = os.listdir(os.path.join(cache_dir, VERSIONS_DIR))
    except FileNotFoundError:
        return {}
    out = {}
    for entry in entries:
        m = _LINK_RE.fullmatch(entry)
        if m and m.group(1) == name:
            out[m.group(2)] = os.path.join(cache_dir, VERSIONS_DIR, entry)
    return out


def prune(cache_dir: str, name: str, keep_sha256: Optional[str]) -> tuple[list[str], list[str]]:
    """Remove the version links of ``name`` other than ``keep_sha256`` that no job holds;
    returns (removed, held) as sha256s. Called under the image's lock."""
    removed, held = [], []
    directory = os.path.join(cache_dir, VERSIONS_DIR)
    for leftover in _temps(directory, name):  # of a killed process: we hold the lock
        os.unlink(os.path.join(directory, leftover))
    for sha, path in sorted(existing(cache_dir, name).items()):
        if sha == keep_sha256:
            continue
        try:
            fd = try_exclusive(path)
        except FileNotFoundError:
            continue
        if fd is None:
            held.append(sha)
            continue
        try:
            os.unlink(path)
            removed.append(sha)
            log.info("image %s: removed version %s, no job uses it any more", name, sha[:16])
        finally:
            os.close(fd)
    if removed:
        fsync_dir(os.path.join(cache_dir, VERSIONS_DIR))
    return removed, held


def _temps(directory: str, name: str) -> list[str]:
    try:
        return [e for e in os.listdir(directory) if e.startswith(f"{TMP_PREFIX}{name}@")]
    except FileNotFoundError:
        return []


def all_names(cache_dir: str) -> set[str]:
    """Every image name that has a version link."""
    try:
        entries = os.listdir(os.path.join(cache_dir, VERSIONS_DIR))
    except FileNotFoundError:
        return set()
    return {m.group(1) for e in entries if (m := _LINK_RE.fullmatch(e))}
