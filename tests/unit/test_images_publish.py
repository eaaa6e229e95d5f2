"""racf_vm.images.publish and codecs: compressed files + list, round trips, bad streams."""

import hashlib
import os

import pytest

from racf_vm.core.errors import ConfigError
from racf_vm.images.checksums import parse_list
from racf_vm.images.codecs import CODECS, CorruptDataError, TruncatedDataError
from racf_vm.images.publish import publish


def _decompress(codec, blob, piece=7777):
    dec = CODECS[codec].decompressor()
    out = []
    for i in range(0, len(blob), piece):
        out.extend(dec.feed(blob[i:i + piece]))
    dec.finish()
    return b"".join(out)


@pytest.fixture
def images(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    (src / "a.qcow2").write_bytes(os.urandom(5000) + b"\0" * 300000)
    (src / "b.raw").write_bytes(b"hello world\n" * 1000)
    (src / ".hidden").write_bytes(b"ignored")
    return src, out


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_publish_round_trip(images, codec):
    src, out = images
    report = publish(str(src), str(out), codec=codec)
    assert report.compressed == ["a.qcow2", "b.raw"]
    listed = parse_list((out / "SHA256SUMS").read_bytes(), "L")
    assert set(listed) == {"a.qcow2", "b.raw"}
    for name, img in listed.items():
        original = (src / name).read_bytes()
        assert img.sha256 == hashlib.sha256(original).hexdigest()  # of the uncompressed bytes
        blob = (out / img.file).read_bytes()
        assert _decompress(codec, blob) == original
        assert oct((out / img.file).stat().st_mode & 0o777) == "0o644"
    assert sorted(os.listdir(out)) == sorted(["SHA256SUMS", *(i.file for i in listed.values())])


def test_unchanged_images_are_not_recompressed_and_withdrawn_removed_after_list(images):
    src, out = images
    publish(str(src), str(out))
    before = (out / "a.qcow2.gz").stat().st_mtime_ns
    (src / "b.raw").unlink()
    (src / "c.raw").write_bytes(b"new")
    report = publish(str(src), str(out))
    assert report.unchanged == ["a.qcow2"]
    assert report.compressed == ["c.raw"]
    assert report.removed == ["b.raw.gz"]
    assert (out / "a.qcow2.gz").stat().st_mtime_ns == before
    assert set(parse_list((out / "SHA256SUMS").read_bytes(), "L")) == {"a.qcow2", "c.raw"}
    assert sorted(os.listdir(out)) == ["SHA256SUMS", "a.qcow2.gz", "c.raw.gz"]


def test_changed_image_is_recompressed(images):
    src, out = images
    publish(str(src), str(out))
    (src / "b.raw").write_bytes(b"changed")
    report = publish(str(src), str(out))
    assert report.compressed == ["b.raw"]
    assert _decompress("gzip", (out / "b.raw.gz").read_bytes()) == b"changed"


def test_bad_names_and_options(images, tmp_path):
    src, out = images
    (src / "bad name").write_bytes(b"x")
    with pytest.raises(ConfigError, match="not a valid image file name"):
        publish(str(src), str(out))
    (src / "bad name").unlink()
    with pytest.raises(ConfigError, match="unknown compression"):
        publish(str(src), str(out), codec="lz4")
    with pytest.raises(ConfigError, match="level 42"):
        publish(str(src), str(out), level=42)
    assert os.listdir(out) == []


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_decompressor_detects_truncation_corruption_and_concatenation(codec):
    data = os.urandom(20000) * 3 + b"\0" * 100000
    comp = CODECS[codec].compressor(CODECS[codec].default_level)
    blob = comp.compress(data) + comp.flush()
    assert _decompress(codec, blob + blob) == data + data  # parallel compressors' output
    with pytest.raises(TruncatedDataError, match="ends early"):
        _decompress(codec, blob[:-9])
    with pytest.raises(TruncatedDataError):
        _decompress(codec, b"")
    bad = bytearray(blob)
    for i in range(len(bad) // 2, len(bad) // 2 + 32):
        bad[i] ^= 0xFF
    with pytest.raises(CorruptDataError):
        _decompress(codec, bytes(bad))


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_output_pieces_are_bounded_for_a_decompression_bomb(codec):
    comp = CODECS[codec].compressor(CODECS[codec].default_level)
    blob = comp.compress(b"\0" * (64 << 20)) + comp.flush()
    dec = CODECS[codec].decompressor()
    total = biggest = 0
    for out in dec.feed(blob):
        total += len(out)
        biggest = max(biggest, len(out))
    dec.finish()
    assert total == 64 << 20
    assert biggest <= 40 << 20


def test_cli_publish(images):
    from click.testing import CliRunner

    from racf_vm.cli.images import images_group

    src, out = images
    result = CliRunner().invoke(images_group, ["publish", str(src), str(out), "--compression", "xz"])
    assert result.exit_code != 0 and "no signing key" in str(result.exception)  # never by mistake
    result = CliRunner().invoke(images_group, ["publish", str(src), str(out), "--compression", "xz",
                                               "--unsigned"])
    assert result.exit_code == 0, result.output
    assert "published: 2 compressed, 0 unchanged, 0 removed; list NOT signed" in result.output
    assert sorted(os.listdir(out)) == ["SHA256SUMS", "a.qcow2.xz", "b.raw.xz"]


def test_publish_image_replaces_one_line_signed_above_the_old_serial(images, tmp_path):
    from racf_vm.config.sshkeys import parse_public_key
    from racf_vm.images import signedlist, signkeys
    from racf_vm.images.checksums import RemoteImage
    from racf_vm.images.publish import publish_image
    from tests.support import prereq

    prereq.require_module("cryptography", "python3-cryptography")
    from cryptography.hazmat.primitives import serialization

    src, out = images
    public = signkeys.generate_keypair(str(tmp_path / "k"), "k")
    key = serialization.load_ssh_private_key((tmp_path / "k").read_bytes(), None)
    first = publish(str(src), str(out), signers=[key])
    before = (out / "b.raw.gz").read_bytes()
    new = tmp_path / "a.qcow2"
    new.write_bytes(b"maintained" * 1000)
    report = publish_image(str(new), str(out), name="a.qcow2", codec="zstd", signers=[key])
    assert report.serial > first.serial > 0
    data = (out / "SHA256SUMS").read_bytes()
    listed = parse_list(signedlist.verify(data, "SHA256SUMS", [parse_public_key(public.line)],
                                          "L", min_serial=first.serial).body, "L")
    assert listed["a.qcow2"].sha256 == hashlib.sha256(new.read_bytes()).hexdigest()
    assert listed["a.qcow2"].file == "a.qcow2.zst" and report.removed == ["a.qcow2.gz"]
    assert listed["b.raw"] == RemoteImage("b.raw", "b.raw.gz", "gzip", first.sha256["b.raw"])
    assert (out / "b.raw.gz").read_bytes() == before  # the other image untouched
    assert sorted(os.listdir(out)) == ["SHA256SUMS", "a.qcow2.zst", "b.raw.gz"]
