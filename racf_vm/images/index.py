"""The verified index: which cached files were hashed, with what result.

An entry is valid only while the file keeps the same device, inode, size and mtime, so
an image is hashed once when it arrives and never again while it is unchanged; any
change to the file (or a new file under the same name) makes it unknown again.
Updates are read-modify-write under a lock on the index file itself.
"""

import json
import logging
import os
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Iterator, Optional

from racf_vm.core import locking
from racf_vm.core.files import read_capped_or_none
from racf_vm.images.fsutil import write_atomic

log = logging.getLogger(__name__)

INDEX_NAME = ".verified.json"
_INDEX_LOCK = ".verified.lock"
_MAX_INDEX = 16 * 1024 * 1024
_LOCK_TIMEOUT = 60.0  # the lock is held for one read and one small write


ORIGINS = ("server", "local")


@dataclass(frozen=True)
class Verified:
    sha256: str
    size: int
    mtime_ns: int
    ino: int
    dev: int
    # "server": fetched from the image server, withdrawn when its list drops it;
    # "local": put here by `racf-vm images add`, never touched by the server's list
    origin: str = "server"

    def matches(self, st: os.stat_result) -> bool:
        return (self.size, self.mtime_ns, self.ino, self.dev) == (
            st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)

    @classmethod
    def of(cls, sha256: str, st: os.stat_result, origin: str = "server") -> "Verified":
        return cls(sha256, st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev, origin)


def load(cache_dir: str) -> dict[str, Verified]:
    """The index; an unreadable or damaged index is treated as empty (files get re-hashed)."""
    data = read_capped_or_none(os.path.join(cache_dir, INDEX_NAME), _MAX_INDEX)
    if not data:
        return {}
    try:
        raw = json.loads(data)
        index = {name: Verified(**fields) for name, fields in raw["images"].items()}
        if any(v.origin not in ORIGINS for v in index.values()):
            raise ValueError("unknown origin")
        return index
    except (ValueError, KeyError, TypeError, AttributeError):
        log.warning("%s/%s is damaged; cached images will be verified again", cache_dir, INDEX_NAME)
        return {}


def verified_sha(cache_dir: str, name: str, index: Optional[dict[str, Verified]] = None) -> Optional[str]:
    """The sha256 of the cached image ``name`` if it is verified and unchanged, else None."""
    entry = (load(cache_dir) if index is None else index).get(name)
    if entry is None:
        return None
    try:
        st = os.stat(os.path.join(cache_dir, name), follow_symlinks=False)
    except FileNotFoundError:
        return None
    return entry.sha256 if entry.matches(st) else None


@contextmanager
def _locked(cache_dir: str) -> Iterator[dict[str, Verified]]:
    with locking.locked(os.path.join(cache_dir, _INDEX_LOCK), timeout=_LOCK_TIMEOUT,
                        what=f"another racf-vm updating {INDEX_NAME}"):
        index = load(cache_dir)
        yield index
        body = {"version": 1, "images": {n: asdict(v) for n, v in sorted(index.items())}}
        write_atomic(cache_dir, INDEX_NAME, json.dumps(body, indent=1).encode())


def record(cache_dir: str, name: str, sha256: str, st: os.stat_result,
           origin: str = "server") -> None:
    with _locked(cache_dir) as index:
        index[name] = Verified.of(sha256, st, origin)


def forget(cache_dir: str, names: list[str]) -> None:
    with _locked(cache_dir) as index:
        for name in names:
            index.pop(name, None)
