"""The sync plan, a pure function: what the cache holds + what the server lists -> actions.

Only images the cache itself fetched from the server (named in its index, origin
"server") are ever removed: an administrator's own file in the same directory, or an
image ``racf-vm images add`` put there (origin "local"), is not the server's to withdraw
or replace.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Optional

from racf_vm.images.checksums import RemoteImage


@dataclass(frozen=True)
class LocalImage:
    """One name in the cache: is a file there, what hash is it verified to have, and is it
    one of ours (recorded in the index)."""

    present: bool
    verified_sha256: Optional[str]  # None: not verified in its current state
    managed: bool
    local: bool = False  # added by `racf-vm images add`: the server's list does not apply


@dataclass(frozen=True)
class SyncPlan:
    fetch: tuple[str, ...] = ()   # missing or changed on the server
    verify: tuple[str, ...] = ()  # present but never hashed: hash first, fetch if it differs
    remove: tuple[str, ...] = ()  # withdrawn from the server
    forget: tuple[str, ...] = ()  # index entries whose file is gone
    keep: tuple[str, ...] = ()    # verified and current

    @property
    def needs_work(self) -> bool:
        return bool(self.fetch or self.verify or self.remove or self.forget)


def plan_sync(remote: Mapping[str, RemoteImage], local: Mapping[str, LocalImage]) -> SyncPlan:
    fetch, verify, remove, forget, keep = [], [], [], [], []
    for name in sorted(set(remote) | set(local)):
        want = remote.get(name)
        have = local.get(name, LocalImage(present=False, verified_sha256=None, managed=False))
        if have.local:
            keep.append(name)
        elif want is None:
            if have.present and have.managed:
                remove.append(name)
            elif not have.present and have.managed:
                forget.append(name)
        elif not have.present:
            fetch.append(name)
        elif have.verified_sha256 is None:
            verify.append(name)
        elif have.verified_sha256 == want.sha256:
            keep.append(name)
        else:
            fetch.append(name)
    return SyncPlan(tuple(fetch), tuple(verify), tuple(remove), tuple(forget), tuple(keep))
