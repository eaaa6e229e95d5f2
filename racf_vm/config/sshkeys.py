"""Ed25519 public keys as OpenSSH writes them: ``ssh-ed25519 <base64> [comment]``.

Pure parsing, no cryptography library: the config is checked when it is read, and the
image signature code (racf_vm.images.signedlist) takes the 32 raw key bytes from here.
The fingerprint is OpenSSH's own (``SHA256:`` + unpadded base64 of the SHA-256 of the
key blob), so ``ssh-keygen -lf KEY.pub`` prints the same string an admin sees in our
messages.
"""

import base64
import binascii
import hashlib
import re
import struct
from dataclasses import dataclass

KEY_TYPE = "ssh-ed25519"
RAW_KEY_BYTES = 32
_LINE_RE = re.compile(r"ssh-ed25519 ([A-Za-z0-9+/]{68}={0,2})(?: ([\x21-\x7e][\x20-\x7e]{0,199}))?")
FINGERPRINT_RE = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")


@dataclass(frozen=True)
class PublicKey:
    raw: bytes  # the 32 bytes of the Ed25519 public key
    fingerprint: str  # SHA256:... as ssh-keygen -l prints it
    comment: str = ""

    @property
    def line(self) -> str:
        return openssh_line(self.raw, self.comment)


def _blob(raw: bytes) -> bytes:
    kind = KEY_TYPE.encode()
    return struct.pack(">I", len(kind)) + kind + struct.pack(">I", len(raw)) + raw


def fingerprint(raw: bytes) -> str:
    digest = hashlib.sha256(_blob(raw)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def openssh_line(raw: bytes, comment: str = "") -> str:
    line = f"{KEY_TYPE} {base64.b64encode(_blob(raw)).decode()}"
    return f"{line} {comment}" if comment else line


def parse_public_key(line: str) -> PublicKey:
    """The key of one ``ssh-ed25519 AAAA... comment`` line; ValueError says what is wrong."""
    m = _LINE_RE.fullmatch(line.strip())
    if not m:
        raise ValueError("not an OpenSSH Ed25519 public key line (ssh-ed25519 AAAA... [comment])")
    try:
        blob = base64.b64decode(m.group(1), validate=True)
    except binascii.Error:
        raise ValueError("the key's base64 is damaged") from None
    kind = KEY_TYPE.encode()
    head = struct.pack(">I", len(kind)) + kind + struct.pack(">I", RAW_KEY_BYTES)
    if len(blob) != len(head) + RAW_KEY_BYTES or not blob.startswith(head):
        raise ValueError("the key's base64 does not hold an Ed25519 key")
    raw = blob[len(head):]
    return PublicKey(raw=raw, fingerprint=fingerprint(raw), comment=m.group(2) or "")
