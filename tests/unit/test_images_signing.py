"""Signed checksum lists and site keys: racf_vm.images.signedlist, signkeys, config.sshkeys."""

import base64
import os
import subprocess

import pytest

from racf_vm.config import parse_config
from racf_vm.config.sshkeys import fingerprint, parse_public_key
from racf_vm.core.errors import ConfigError
from racf_vm.images import signedlist, signkeys
from racf_vm.images.signedlist import BadSignatureError
from tests.support import prereq

BODY = b"%s  a.raw.gz\n" % (b"a" * 64)


@pytest.fixture
def keys(tmp_path):
    prereq.require_module("cryptography", "python3-cryptography")
    out = {}
    for name in ("one", "two"):
        path = str(tmp_path / name)
        public = signkeys.generate_keypair(path, f"{name} key")
        from cryptography.hazmat.primitives import serialization

        private = serialization.load_ssh_private_key(open(path, "rb").read(), None)
        out[name] = (public, private, path)
    return out


def test_keygen_writes_openssh_files_that_ssh_keygen_reads(keys):
    public, _, path = keys["one"]
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert oct(os.stat(path + ".pub").st_mode & 0o777) == "0o644"
    line = open(path + ".pub").read().strip()
    assert parse_public_key(line) == public and line.endswith(" one key")
    derived = subprocess.run(["/usr/bin/ssh-keygen", "-y", "-f", path], capture_output=True,
                             text=True, check=True).stdout.split()
    assert derived[:2] == line.split()[:2]  # OpenSSH derives the same public key
    listed = subprocess.run(["/usr/bin/ssh-keygen", "-l", "-f", path + ".pub"],
                            capture_output=True, text=True, check=True).stdout
    assert public.fingerprint in listed  # and prints the fingerprint our messages use
    with pytest.raises(ConfigError, match="never overwritten"):
        signkeys.generate_keypair(path, "again")


def test_sign_and_verify_round_trip(keys):
    public, private, _ = keys["one"]
    data = signedlist.sign(BODY, "SHA256SUMS", 7, [private])
    got = signedlist.verify(data, "SHA256SUMS", [public], "L")
    assert (got.body, got.serial, got.signer) == (BODY, 7, public.fingerprint)
    empty = signedlist.sign(b"", "SHA256SUMS", 8, [private])  # every image withdrawn
    assert signedlist.verify(empty, "SHA256SUMS", [public], "L").body == b""


@pytest.mark.parametrize("mutate, why", [
    (lambda d: d.replace(b"a.raw.gz", b"b.raw.gz"), "does not match"),
    (lambda d: d.replace(b"a" * 64, b"b" * 64), "does not match"),
    (lambda d: d + b"%s  extra.raw.gz\n" % (b"c" * 64), "does not match"),
    (lambda d: d.replace(b"serial 7", b"serial 8"), "does not match"),
    (lambda d: d.replace(b"\n\n", b"\n"), "no empty line"),
    (lambda d: d.replace(b"serial 7", b"serial x"), "serial N"),
    (lambda d: d.split(b"\n", 1)[1], "not signed"),
    (lambda d: b"\n".join(line for line in d.split(b"\n") if not line.startswith(b"signature")), "signature lines"),
])
def test_any_change_is_refused(keys, mutate, why):
    public, private, _ = keys["one"]
    data = mutate(signedlist.sign(BODY, "SHA256SUMS", 7, [private]))
    with pytest.raises(BadSignatureError, match=why):
        signedlist.verify(data, "SHA256SUMS", [public], "L")


def test_a_flipped_signature_bit_and_another_list_name_are_refused(keys):
    public, private, _ = keys["one"]
    data = signedlist.sign(BODY, "SHA256SUMS", 7, [private])
    signed = signedlist.split(data, "L")
    sig = bytearray(signed.signatures[0].value)
    sig[10] ^= 1
    bad = signedlist.compose(BODY, 7, [signedlist.Signature(public.fingerprint, bytes(sig))])
    with pytest.raises(BadSignatureError, match="does not match"):
        signedlist.verify(bad, "SHA256SUMS", [public], "L")
    with pytest.raises(BadSignatureError, match="does not match"):  # signed for another list
        signedlist.verify(data, "OTHERSUMS", [public], "L")


def test_trusted_keys_rollback_and_age(keys):
    one, two = keys["one"], keys["two"]
    data = signedlist.sign(BODY, "SHA256SUMS", 7, [one[1], two[1]])  # a key change: both sign
    assert signedlist.verify(data, "SHA256SUMS", [one[0]], "L").signer == one[0].fingerprint
    assert signedlist.verify(data, "SHA256SUMS", [two[0]], "L").signer == two[0].fingerprint
    only_two = signedlist.sign(BODY, "SHA256SUMS", 7, [two[1]])
    with pytest.raises(BadSignatureError, match="no key this node trusts"):
        signedlist.verify(only_two, "SHA256SUMS", [one[0]], "L")
    # a trusted key's bad signature beside a good one: refused (someone changed the file)
    signed = signedlist.split(data, "L")
    broken = [signed.signatures[0], signedlist.Signature(signed.signatures[1].fingerprint,
                                                         signed.signatures[0].value)]
    with pytest.raises(BadSignatureError, match="does not match"):
        signedlist.verify(signedlist.compose(BODY, 7, broken), "SHA256SUMS", [one[0], two[0]], "L")
    with pytest.raises(BadSignatureError, match="rollback"):
        signedlist.verify(data, "SHA256SUMS", [one[0]], "L", min_serial=8)
    day = 86400 * 10**9
    with pytest.raises(BadSignatureError, match="max_list_age"):
        signedlist.verify(data, "SHA256SUMS", [one[0]], "L", max_age=3600, now_ns=7 + day)
    assert signedlist.verify(data, "SHA256SUMS", [one[0]], "L", max_age=86400, now_ns=7 + day)


def test_a_stored_list_is_rechecked_without_the_signature(keys):
    one, two = keys["one"], keys["two"]
    data = signedlist.sign(BODY, "SHA256SUMS", 7, [one[1]])
    got = signedlist.recheck_stored(data, one[0].fingerprint, [one[0], two[0]], "S")
    assert (got.body, got.serial, got.signer) == (BODY, 7, one[0].fingerprint)
    with pytest.raises(BadSignatureError, match="not by a key this node trusts now"):
        signedlist.recheck_stored(data, one[0].fingerprint, [two[0]], "S")  # key dropped
    with pytest.raises(BadSignatureError, match="not by a key this node trusts now"):
        signedlist.recheck_stored(data, two[0].fingerprint, [two[0]], "S")  # not its signer
    with pytest.raises(BadSignatureError, match="max_list_age"):
        signedlist.recheck_stored(data, one[0].fingerprint, [one[0]], "S", max_age=1, now_ns=7 + 2 * 10**9)


def test_without_keys_the_body_is_taken_as_it_is(keys):
    assert signedlist.verify(BODY, "SHA256SUMS", [], "L").body == BODY
    data = signedlist.sign(BODY, "SHA256SUMS", 7, [keys["one"][1]])
    assert signedlist.verify(data, "SHA256SUMS", [], "L").body == BODY


def test_public_key_lines():
    raw = bytes(range(32))
    blob = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00 " + raw
    line = "ssh-ed25519 " + base64.b64encode(blob).decode() + " a b"
    key = parse_public_key(line)
    assert key.raw == raw and key.comment == "a b" and key.fingerprint == fingerprint(raw)
    for bad in ("", "ssh-rsa AAAAB3NzaC1yc2E", line.replace("ssh-ed25519 ", "ssh-ed25519  "),
                "ssh-ed25519 " + base64.b64encode(b"\x00\x00\x00\x07ssh-rsa" + raw + b"xx").decode()):
        with pytest.raises(ValueError):
            parse_public_key(bad)


def test_config_trusted_keys(keys):
    line = keys["one"][0].line
    cfg = parse_config(f'[images]\ntrusted_keys = ["{line}"]\nmax_list_age = 86400\n'.encode(), "f")
    assert cfg.images.trusted_keys == (line,) and cfg.images.max_list_age == 86400
    assert signkeys.trusted_keys(cfg.images) == (keys["one"][0],)
    for text, why in ((f'trusted_keys = ["{line}", "{line}"]', "listed twice"),
                      ('trusted_keys = ["ssh-ed25519 AAAA"]', "not an OpenSSH Ed25519"),
                      ('trusted_keys = "x"', "list of strings"),
                      ('signing_key = "relative"', "absolute"),
                      ("max_list_age = -1", "outside")):
        with pytest.raises(ConfigError, match=why):
            parse_config(f"[images]\n{text}\n".encode(), "f")


def test_a_private_key_readable_by_others_is_refused_as_root(keys, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root (the key file rules apply to root)")
    d = "/var/lib/racf-vm-test-images"
    os.makedirs(d, 0o755, exist_ok=True)
    path = os.path.join(d, f"unit-key-{os.getpid()}")
    try:
        signkeys.generate_keypair(path, "k")
        assert signkeys.load_private_key(path)
        os.chmod(path, 0o640)
        with pytest.raises(Exception, match="readable by others"):
            signkeys.load_private_key(path)
    finally:
        for p in (path, path + ".pub"):
            if os.path.exists(p):
                os.unlink(p)
