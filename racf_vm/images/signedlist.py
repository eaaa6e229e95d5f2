"""The signed checksum list: one file, so a job checks it with one conditional request.

Layout (ASCII)::

    racf-vm signed list 1
    serial <decimal, at most 20 digits>
    signature <SHA256:... fingerprint of the key> <base64 of the 64-byte Ed25519 signature>
    (one to four signature lines)
    <empty line>
    <the sha256sum lines: racf_vm.images.checksums>

Each signature covers ``MAGIC NUL <list file name> NUL <serial> NUL <body>``: the list's
name and serial are signed with its lines, so neither a list published under another
name nor an older list passes as the current one. The serial grows with every publish
(nanoseconds since the epoch, and always above the previous one); a node refuses a list
whose serial is below the highest it has verified (a rollback to older, maybe
vulnerable, images) and, if ``[images] max_list_age`` is set, one signed too long ago
(a server frozen on an old list).

A node accepts the list when at least one signature is by a key it trusts and every
signature by a trusted key verifies; signatures by other keys are ignored. So during a
key change the publisher may sign with the old and the new key, and nodes trusting
either accept it.

Ed25519 is done by Debian's python3-cryptography (OpenSSL underneath): in process, about
0.2 ms a verification, no temporary files and no helper process per job. Loading the
library costs about 50 ms in a new process, so a node loads it only when a list arrives;
the copy it stored after verifying is checked without it (``recheck_stored``).
"""

from __future__ import annotations

import base64
import re
import time
from dataclasses import dataclass
from typing import Optional, Sequence

from racf_vm.config.sshkeys import PublicKey
from racf_vm.core.errors import TemporaryError

MAGIC = b"racf-vm signed list 1"
MAX_SIGNATURES = 4
_SIG_RE = re.compile(rb"signature (SHA256:[A-Za-z0-9+/]{43}) ([A-Za-z0-9+/]{86}==)")
_SERIAL_RE = re.compile(rb"serial ([0-9]{1,20})")


class BadSignatureError(TemporaryError):
    """The list is not signed as this node requires: nothing in it is used."""


@dataclass(frozen=True)
class Signature:
    fingerprint: str
    value: bytes


@dataclass(frozen=True)
class SignedList:
    serial: int
    body: bytes
    signatures: tuple[Signature, ...]


@dataclass(frozen=True)
class VerifiedList:
    """A list this node may use: its body, serial and who signed it (empty if unsigned)."""

    body: bytes
    serial: int
    signer: str = ""


def is_signed(data: bytes) -> bool:
    return data.startswith(MAGIC + b"\n")


def message(checksum_file: str, serial: int, body: bytes) -> bytes:
    return b"\0".join((MAGIC, checksum_file.encode("ascii"), str(serial).encode(), body))


def split(data: bytes, source: str) -> SignedList:
    """Parse the signed layout (strictly: every line in its place); BadSignatureError else."""
    def bad(why: str) -> BadSignatureError:
        return BadSignatureError(f"{source}: not a well-formed signed list: {why}")

    if not is_signed(data):
        raise bad("it does not start with the signed-list header")
    lines = data.split(b"\n", 2 + MAX_SIGNATURES + 1)
    m = _SERIAL_RE.fullmatch(lines[1]) if len(lines) > 1 else None
    if not m:
        raise bad("the second line is not 'serial N'")
    serial = int(m.group(1))
    sigs: list[Signature] = []
    rest = lines[2:]
    while rest and rest[0].startswith(b"signature "):
        sm = _SIG_RE.fullmatch(rest[0])
        if not sm:
            raise bad("a signature line is malformed")
        sigs.append(Signature(sm.group(1).decode(), base64.b64decode(sm.group(2))))
        rest = rest[1:]
    if not sigs or len(sigs) > MAX_SIGNATURES:
        raise bad(f"it needs 1 to {MAX_SIGNATURES} signature lines")
    if len(rest) < 2 or rest[0] != b"":
        raise bad("no empty line after the signatures")
    body = b"\n".join(rest[1:])
    return SignedList(serial=serial, body=body, signatures=tuple(sigs))


def compose(body: bytes, serial: int, signatures: Sequence[Signature]) -> bytes:
    head = [MAGIC, b"serial %d" % serial]
    head += [b"signature %s %s" % (s.fingerprint.encode(), base64.b64encode(s.value))
             for s in signatures]
    return b"\n".join(head) + b"\n\n" + body


def sign(body: bytes, checksum_file: str, serial: int, private_keys: Sequence) -> bytes:
    """The whole signed file, signed by each of ``private_keys`` (Ed25519PrivateKey)."""
    from racf_vm.images.signkeys import public_key_of

    if not 1 <= len(private_keys) <= MAX_SIGNATURES:
        raise ValueError(f"sign with 1 to {MAX_SIGNATURES} keys")
    msg = message(checksum_file, serial, body)
    sigs = [Signature(public_key_of(k).fingerprint, k.sign(msg)) for k in private_keys]
    return compose(body, serial, sigs)


def verify(data: bytes, checksum_file: str, keys: Sequence[PublicKey], source: str, *,
           min_serial: int = 0, max_age: int = 0, now_ns: Optional[int] = None) -> VerifiedList:
    """The list's body if ``data`` is acceptable to a node trusting ``keys``.

    With no keys, an unsigned list is accepted as it is (a signed one is not checked:
    nobody could say by whom). Otherwise BadSignatureError for an unsigned, malformed or
    tampered list, one signed by no trusted key, a rollback below ``min_serial`` and, with
    ``max_age`` (seconds), a list signed longer ago than that. The caller logs the refusal
    (CRITICAL for what came from the network).
    """
    if not keys:
        body = split(data, source).body if is_signed(data) else data
        return VerifiedList(body=body, serial=0)
    if not is_signed(data):
        raise BadSignatureError(f"{source}: the checksum list is not signed, but this node "
                                "requires a signature ([images] trusted_keys); nothing in it "
                                "is used (sign it: racf-vm images publish --key)")
    signed = split(data, source)
    trusted = {k.fingerprint: k for k in keys}
    mine = [s for s in signed.signatures if s.fingerprint in trusted]
    if not mine:
        names = ", ".join(s.fingerprint for s in signed.signatures)
        raise BadSignatureError(f"{source}: signed by no key this node trusts ({names}); "
                                "nothing in it is used")
    msg = message(checksum_file, signed.serial, signed.body)
    for sig in mine:
        if not _valid(trusted[sig.fingerprint], sig.value, msg):
            raise BadSignatureError(f"{source}: the signature by {sig.fingerprint} does not "
                                    "match the list (tampered with on the way?); nothing in it "
                                    "is used")
    if signed.serial < min_serial:
        raise BadSignatureError(f"{source}: serial {signed.serial} is older than the list this "
                                f"node already verified (serial {min_serial}): refused as a "
                                "rollback")
    _check_age(signed.serial, max_age, now_ns, source)
    return VerifiedList(body=signed.body, serial=signed.serial, signer=mine[0].fingerprint)


def recheck_stored(data: bytes, signer: str, keys: Sequence[PublicKey], source: str, *,
                   max_age: int = 0, now_ns: Optional[int] = None) -> VerifiedList:
    """A list this node verified when it arrived and stored since (root's own file, in a
    root-owned cache), checked again without the cryptography: its signer must still be
    one of ``keys`` (a key dropped from the config stops it at once) and its age within
    ``max_age``. Keeps the per-job check of an unchanged list free of the ~50 ms the
    cryptography library takes to load in each new wrapper process."""
    if not keys:
        return verify(data, "", (), source)
    signed = split(data, source)
    trusted = {k.fingerprint for k in keys}
    if signer not in trusted or signer not in {s.fingerprint for s in signed.signatures}:
        raise BadSignatureError(f"{source}: signed by {signer or 'nobody'}, not by a key this "
                                "node trusts now")
    _check_age(signed.serial, max_age, now_ns, source)
    return VerifiedList(body=signed.body, serial=signed.serial, signer=signer)


def _check_age(serial: int, max_age: int, now_ns: Optional[int], source: str) -> None:
    if max_age:
        now = time.time_ns() if now_ns is None else now_ns
        age = (now - serial) / 1e9
        if age > max_age:
            raise BadSignatureError(f"{source}: signed {age / 86400:.1f} days ago, longer than "
                                    f"[images] max_list_age ({max_age}s); republish the list")


def _valid(key: PublicKey, value: bytes, msg: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(key.raw).verify(value, msg)
    except (InvalidSignature, ValueError):  # ValueError: bytes that are no key at all
        return False
    return True

