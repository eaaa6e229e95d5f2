"""The server's checksum list on a node: fetched with one conditional request, verified
before any line is trusted, and kept (with its validators) for the next check.

The local copy, ``<cache>/.remote-list.json``, holds the list exactly as the server sent
it (signature included), its ETag / Last-Modified, the serial and the key that signed it.
It is written only after the list verified, and never replaced by an older one (the
serial: racf_vm.images.signedlist). Each time it is read, its signer must still be a
trusted key (a key dropped from the config stops it at once) and its age within
``max_list_age``; the signature itself is checked when a list arrives, not again at
every job (``signedlist.recheck_stored``).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Optional

from racf_vm.config.sshkeys import PublicKey
from racf_vm.core import locking
from racf_vm.core.files import read_capped_or_none
from racf_vm.images import signedlist
from racf_vm.images.checksums import RemoteImage, parse_list
from racf_vm.images.fetch import Client, FetchError
from racf_vm.images.fsutil import write_atomic
from racf_vm.images.signedlist import BadSignatureError, VerifiedList
from racf_vm.images.signkeys import trusted_keys

log = logging.getLogger(__name__)

LIST_STATE = ".remote-list.json"
_STATE_LOCK = ".remote-list.lock"
_MAX_STATE = 8 * 1024 * 1024


@dataclass(frozen=True)
class ListPolicy:
    """What a node requires of the list: its name (signed with it), keys, maximum age."""

    checksum_file: str
    keys: tuple[PublicKey, ...] = ()
    max_age: int = 0

    @classmethod
    def of(cls, images_cfg) -> "ListPolicy":
        return cls(images_cfg.checksum_file, trusted_keys(images_cfg), images_cfg.max_list_age)

    @property
    def signed(self) -> bool:
        return bool(self.keys)


@dataclass(frozen=True)
class RemoteList:
    images: dict[str, RemoteImage]
    not_modified: bool  # the server answered 304 (or the node used its copy)
    serial: int = 0
    signer: str = ""


@dataclass(frozen=True)
class _Stored:
    state: dict
    verified: Optional[VerifiedList]  # None: present but no longer acceptable


def _read_state(cache_dir: str, list_url: str) -> dict:
    raw = read_capped_or_none(os.path.join(cache_dir, LIST_STATE), _MAX_STATE)
    if not raw:
        return {}
    try:
        state = json.loads(raw)
    except ValueError:
        log.warning("%s/%s is damaged; fetching the list again", cache_dir, LIST_STATE)
        return {}
    if not isinstance(state, dict) or state.get("url") != list_url or not isinstance(state.get("data"), str):
        return {}  # another source, or the layout of an older racf-vm
    return state


def _stored(cache_dir: str, list_url: str, policy: ListPolicy) -> _Stored:
    state = _read_state(cache_dir, list_url)
    if not state:
        return _Stored({}, None)
    try:
        verified = signedlist.recheck_stored(state["data"].encode("ascii"),
                                             str(state.get("signer", "")), policy.keys, list_url,
                                             max_age=policy.max_age)
    except (BadSignatureError, UnicodeEncodeError) as e:
        log.warning("the stored copy of %s is no longer acceptable (%s); fetching it again",
                    list_url, getattr(e, "message", e))
        return _Stored(state, None)
    return _Stored(state, verified)


def _serial(state: dict) -> int:
    value = state.get("serial", 0)
    return value if isinstance(value, int) and value >= 0 else 0


def load_offline(cache_dir: str, list_url: str, policy: ListPolicy) -> Optional[RemoteList]:
    """The stored list if it still verifies (no network); None otherwise."""
    stored = _stored(cache_dir, list_url, policy)
    if stored.verified is None:
        return None
    v = stored.verified
    return RemoteList(parse_list(v.body, list_url), True, v.serial, v.signer)


def refresh(client: Client, cache_dir: str, list_url: str, policy: ListPolicy) -> RemoteList:
    """The server's list, verified: one conditional request while the stored copy is good.

    BadSignatureError (logged CRITICAL) or BadListError when the server's list is not
    acceptable: then nothing of it is kept or returned, and the stored copy stays.
    """
    stored = _stored(cache_dir, list_url, policy)
    usable = stored.verified is not None
    resp = client.get_list(list_url, etag=stored.state.get("etag", "") if usable else "",
                           last_modified=stored.state.get("last_modified", "") if usable else "")
    if resp.body is None:
        if not usable:
            raise FetchError(f"{list_url}: server answered 304 to an unconditional request")
        v = stored.verified
        return RemoteList(parse_list(v.body, list_url), True, v.serial, v.signer)
    try:
        verified = signedlist.verify(resp.body, policy.checksum_file, policy.keys, list_url,
                                     min_serial=_serial(stored.state), max_age=policy.max_age)
        if (policy.signed and usable and verified.serial == stored.verified.serial
                and verified.body != stored.verified.body):
            raise BadSignatureError(f"{list_url}: a different list under the serial this node "
                                    f"already verified ({verified.serial}): refused")
    except BadSignatureError as e:
        log.critical("REFUSED checksum list: %s", e.message)
        raise
    images = parse_list(verified.body, list_url)  # refuse a bad list before keeping it
    _keep(cache_dir, {"url": list_url, "etag": resp.etag, "last_modified": resp.last_modified,
                      "data": resp.body.decode("ascii"), "serial": verified.serial,
                      "signer": verified.signer})
    return RemoteList(images, False, verified.serial, verified.signer)


def _keep(cache_dir: str, state: dict) -> None:
    """Store ``state`` unless a concurrent job already stored a newer list."""
    with locking.locked(os.path.join(cache_dir, _STATE_LOCK), timeout=30.0,
                        what=f"another racf-vm storing {LIST_STATE}"):
        current = _read_state(cache_dir, state["url"])
        if current and _serial(current) > state["serial"]:
            return
        write_atomic(cache_dir, LIST_STATE, json.dumps(state).encode())
