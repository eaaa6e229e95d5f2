"""The site's image signing keys: made by ``racf-vm images keygen``, used by ``images
publish|maintain`` on the publisher; nodes hold only the public halves, in their config.

Keys are Ed25519 in OpenSSH's own formats, so the usual tools read them: the private key
is an unencrypted ``OPENSSH PRIVATE KEY`` file (``ssh-keygen -y -f KEY`` prints its
public line), the public key one ``ssh-ed25519 AAAA... comment`` line.
"""

from __future__ import annotations

import os
import stat

from racf_vm.config.sshkeys import PublicKey, fingerprint, parse_public_key
from racf_vm.core.errors import ConfigError, RefusedError
from racf_vm.core.files import read_capped
from racf_vm.trust import pathtrust

MAX_KEY_FILE = 64 * 1024


def trusted_keys(images_cfg) -> tuple[PublicKey, ...]:
    """The public keys a node accepts (the config checked each line when it was read)."""
    return tuple(parse_public_key(line) for line in images_cfg.trusted_keys)


def public_key_of(private) -> PublicKey:
    from cryptography.hazmat.primitives import serialization

    raw = private.public_key().public_bytes(serialization.Encoding.Raw,
                                            serialization.PublicFormat.Raw)
    return PublicKey(raw=raw, fingerprint=fingerprint(raw))


def _create(path: str, data: bytes, mode: int) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, mode)
    except FileExistsError:
        raise ConfigError(f"{path} already exists; keys are never overwritten (remove it "
                          "first, or choose another name)") from None
    except OSError as e:
        raise ConfigError(f"cannot create {path}: {e.strerror}") from None
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def generate_keypair(path: str, comment: str) -> PublicKey:
    """Write a new private key to ``path`` (0600) and its public line to ``path.pub``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    for p in (path, path + ".pub"):
        if os.path.lexists(p):
            raise ConfigError(f"{p} already exists; keys are never overwritten")
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = public_key_of(private)
    public = PublicKey(raw=public.raw, fingerprint=public.fingerprint, comment=comment)
    _create(path, pem, 0o600)
    _create(path + ".pub", (public.line + "\n").encode(), 0o644)
    return public


def load_private_key(path: str):
    """The Ed25519 private key in ``path``; as root, the file must be root's alone."""
    if os.geteuid() == 0:
        pathtrust.check_trusted_file(path)
        st = os.stat(path)
        if st.st_mode & 0o077:
            raise RefusedError(f"the signing key {path} is readable by others (mode "
                               f"{stat.S_IMODE(st.st_mode):o}); chmod 600 it")
    data = read_capped(path, MAX_KEY_FILE, "the signing key", error=ConfigError,
                       follow_symlinks=True)
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_ssh_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{path}: not an unencrypted OpenSSH private key ({e})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path}: not an Ed25519 key (make one with racf-vm images keygen)")
    return key
