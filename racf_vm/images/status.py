"""``racf-vm images list``: each catalog image with the state of its cached file.

Read-only and without network: the verified index, the stored copy of the server's
list (for entries that follow it), the prepared layers, and ``/proc/locks`` for the
jobs holding a file (a job holds a shared flock on its base: counting those disturbs
nobody, unlike trying a lock).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass
from typing import Optional

from racf_vm.images import index, prepare, remotelist, sync, versions
from racf_vm.images.catalog import ImageEntry
from racf_vm.images.jobimage import cache_managed

_LOCK_RE = re.compile(r"\d+: FLOCK\s+ADVISORY\s+READ\s+\d+\s+([0-9a-f]+):([0-9a-f]+):(\d+)\s")


@dataclass(frozen=True)
class ImageStatus:
    name: str
    trust: str
    follows: bool
    sha256: str  # the version a job would run now; "" when not known without network
    present: bool
    verified: bool  # the file is verified with that sha256 (always False outside the cache)
    size: Optional[int]
    in_use: int  # jobs holding a version of it
    old_versions: int  # older versions kept because jobs still run on them
    prepared: bool
    cached: bool  # the file lives in the node cache (else: the administrator's own path)


def shared_flocks(text: str) -> Counter:
    """(major, minor, inode) -> number of shared flocks, from /proc/locks text (pure)."""
    held: Counter = Counter()
    for line in text.splitlines():
        m = _LOCK_RE.match(line)
        if m:
            held[(int(m.group(1), 16), int(m.group(2), 16), int(m.group(3)))] += 1
    return held


def _key(st: os.stat_result) -> tuple[int, int, int]:
    return (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)


def _stat(path: str) -> Optional[os.stat_result]:
    try:
        return os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _listed(config) -> dict:
    cfg = config.images
    if not cfg.source_url:
        return {}
    url = sync.source_of(cfg).list_url
    stored = remotelist.load_offline(cfg.cache_dir, url, remotelist.ListPolicy.of(cfg))
    return stored.images if stored is not None else {}


def image_status(config, catalog, runner: bytes, locks_text: str) -> list[ImageStatus]:
    holders = shared_flocks(locks_text)
    listed = _listed(config)
    cache_dir = os.path.normpath(config.images.cache_dir)
    idx = index.load(cache_dir)
    layers = set(os.listdir(prepare.prepared_dir(config.paths.state_dir))) \
        if os.path.isdir(prepare.prepared_dir(config.paths.state_dir)) else set()
    rows = []
    for name in catalog:
        entry: ImageEntry = catalog[name]
        if not cache_managed(entry, config):
            st = _stat(entry.path)
            rows.append(ImageStatus(
                name, entry.trust, entry.follow, entry.sha256, st is not None, False,
                st.st_size if st else None, holders[_key(st)] if st else 0, 0,
                prepare.layer_name(entry, runner) in layers if entry.sha256 else False, False))
            continue
        file = os.path.basename(entry.path)
        want = listed[file].sha256 if entry.follow and file in listed else entry.sha256
        st = _stat(os.path.join(cache_dir, file))
        known = idx.get(file)
        verified = bool(want) and st is not None and known is not None \
            and known.matches(st) and known.sha256 == want
        links = versions.existing(cache_dir, file)
        held = {sha: holders[_key(s)] for sha, p in links.items() if (s := _stat(p)) is not None}
        current = entry.resolved(want, versions.version_path(cache_dir, file, want)) if want else None
        rows.append(ImageStatus(
            name, entry.trust, entry.follow, want, st is not None, verified,
            st.st_size if st else None, sum(held.values()),
            sum(1 for sha, n in held.items() if n and sha != want),
            current is not None and prepare.layer_name(current, runner) in layers, True))
    return rows
