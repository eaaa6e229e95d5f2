"""racf_vm.images.catalog: entry validation, names, lookup without filesystem access."""

import os
from pathlib import Path

import pytest

from racf_vm.core.errors import ConfigError, RefusedError, UsageError
from racf_vm.images.catalog import (
    PLACEHOLDER_SHA256,
    Catalog,
    load_catalog,
    parse_image_entry,
    validate_image_name,
)

REPO = Path(__file__).resolve().parents[2]
SHA = "ab" * 32

GOOD = f"""
name = "img1"
trust = "untrusted"
path = "/var/lib/racf-vm/images/img1.qcow2"
format = "qcow2"
sha256 = "{SHA}"

[boot]
method = "kernel"
kernel = "/var/lib/racf-vm/images/vmlinuz"
initrd = "/var/lib/racf-vm/images/initrd"
cmdline = "console=ttyS0"

[context]
filesystem = "/dev/sda"
"""


def entry(text=GOOD, source="/etc/racf-vm/images.d/img1.toml"):
    return parse_image_entry(text.encode(), source)


def test_good_entry():
    e = entry()
    assert e.name == "img1" and e.trust == "untrusted" and not e.trusted
    assert e.boot.method == "kernel" and e.boot.initrd.endswith("initrd")
    assert e.context.filesystem == "/dev/sda"
    assert not e.checksum_is_placeholder
    assert e.size == 0  # not given
    assert entry(GOOD.replace(f'sha256 = "{SHA}"', f'sha256 = "{SHA}"\nsize = 1048576')).size == 1 << 20


def test_examples_parse():
    cat = load_catalog(str(REPO / "images.d"))
    assert set(cat) >= {"busybox", "debian12"}
    assert cat["debian12"].boot.method == "bootloader"
    assert cat["busybox"].checksum_is_placeholder
    assert cat["busybox"].sha256 == PLACEHOLDER_SHA256


@pytest.mark.parametrize(
    "old, new, needle",
    [
        ('name = "img1"', 'name = "img2"', "does not match the file name"),
        ('name = "img1"', 'name = "../x"', "not a valid image name"),
        ('trust = "untrusted"', 'trust = "maybe"', "not one of"),
        ('format = "qcow2"', 'format = "vmdk"', "not one of"),
        ('path = "/var/lib/racf-vm/images/img1.qcow2"', 'path = "img1.qcow2"', "absolute"),
        (f'sha256 = "{SHA}"', 'sha256 = "abc"', "64 hexadecimal"),
        (f'sha256 = "{SHA}"', f'sha256 = "{"g" * 64}"', "64 hexadecimal"),
        ('method = "kernel"', 'method = "pxe"', "not one of"),
        ('kernel = "/var/lib/racf-vm/images/vmlinuz"\n', "", "boot.kernel: must not be empty"),
        ('initrd = "/var/lib/racf-vm/images/initrd"', 'initrd = "rel"', "absolute"),
        ('cmdline = "console=ttyS0"', 'cmdline = "a\\nb"', "control characters"),
        ('cmdline = "console=ttyS0"', f'cmdline = "{"x" * 1025}"', "longer than 1024"),
        ('filesystem = "/dev/sda"', 'filesystem = "/etc/passwd/x/y"', "not a guest device"),
        ('filesystem = "/dev/sda"', 'filesystem = "sda"', "not a guest device"),
        ('filesystem = "/dev/sda"', 'filesystem = "/dev/sda1"\nextra = 1', "context.extra: unknown key"),
        ('format = "qcow2"', 'format = "qcow2"\nurl = "http://x"', "url: unknown key"),
        ("[context]", "[contex]", "missing [context] table"),
        (f'sha256 = "{SHA}"', f'sha256 = "{SHA}"\nsize = -1', "size: -1 is outside"),
        (f'sha256 = "{SHA}"', f'sha256 = "{SHA}"\nsize = "1G"', "size: must be an integer"),
    ],
)
def test_bad_entries(old, new, needle):
    text = GOOD.replace(old, new)
    assert text != GOOD
    with pytest.raises(ConfigError) as e:
        entry(text)
    assert needle in str(e.value)
    assert str(e.value).startswith("/etc/racf-vm/images.d/img1.toml")


def test_error_has_line():
    with pytest.raises(ConfigError) as e:
        entry(GOOD.replace('format = "qcow2"', 'format = "vmdk"'))
    assert str(e.value).startswith("/etc/racf-vm/images.d/img1.toml:5:")


def test_bootloader_forbids_kernel():
    text = GOOD.replace('method = "kernel"', 'method = "bootloader"')
    with pytest.raises(ConfigError, match="only allowed"):
        entry(text)
    text = GOOD.replace('method = "kernel"', 'method = "bootloader"').replace(
        'kernel = "/var/lib/racf-vm/images/vmlinuz"\ninitrd = "/var/lib/racf-vm/images/initrd"\ncmdline = "console=ttyS0"\n', ""
    )
    e = entry(text)
    assert e.boot.kernel is None and e.boot.initrd is None


@pytest.mark.parametrize("fs", ["/dev/sda", "/dev/sdb2", "/dev/sdaa", "/dev/vg0/root"])
def test_filesystem_ok(fs):
    assert entry(GOOD.replace('"/dev/sda"', f'"{fs}"')).context.filesystem == fs


def test_missing_sections():
    with pytest.raises(ConfigError, match=r"missing \[boot\] table"):
        entry(GOOD.split("[boot]")[0])
    with pytest.raises(ConfigError, match="must be a table"):
        entry(GOOD.split("[boot]")[0] + "boot = 1\n")


@pytest.mark.parametrize(
    "name",
    ["../../etc/shadow", "/etc/shadow", "a/../../b", "name\0x", "x" * 4096, "", "a..b",
     ".hidden", "Upper", "sl_53\n", "ѕl53", "-x", None, 3],
)
def test_hostile_names_rejected(name):
    with pytest.raises(UsageError):
        validate_image_name(name)


def test_lookup(tmp_path, monkeypatch):
    (tmp_path / "img1.toml").write_text(GOOD)
    (tmp_path / "README").write_text("ignored")
    (tmp_path / "img1.toml~").write_text("ignored")
    (tmp_path / ".tmp.toml").write_text("ignored")
    cat = load_catalog(str(tmp_path))
    assert list(cat) == ["img1"] and len(cat) == 1
    assert cat.lookup("img1").name == "img1"

    def boom(*a, **k):
        raise AssertionError("lookup touched the filesystem")

    for fn in ("open", "stat", "lstat", "listdir", "scandir"):
        monkeypatch.setattr(os, fn, boom)
    with pytest.raises(UsageError, match=r"unknown image 'nope'; available: img1"):
        cat.lookup("nope")
    with pytest.raises(UsageError, match="invalid image name"):
        cat.lookup("../img1")
    assert cat.lookup("img1").format == "qcow2"


def test_lookup_empty_catalog():
    with pytest.raises(UsageError, match="available: none"):
        Catalog({}).lookup("x")


def test_load_catalog_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot open the image catalog"):
        load_catalog(str(tmp_path / "missing"))
    (tmp_path / "img1.toml").write_text(GOOD.replace('format = "qcow2"', 'format = "qcow3"'))
    with pytest.raises(ConfigError, match=r"img1.toml:\d+: format"):
        load_catalog(str(tmp_path))


def test_load_catalog_refuses_symlink_and_big(tmp_path):
    real = tmp_path / "real"
    real.write_text(GOOD)
    d = tmp_path / "cat"
    d.mkdir()
    (d / "img1.toml").symlink_to(real)
    with pytest.raises(ConfigError, match="cannot open"):
        load_catalog(str(d))
    (d / "img1.toml").unlink()
    (d / "img1.toml").write_text(GOOD + "#" * 70000)
    with pytest.raises(ConfigError, match="larger than"):
        load_catalog(str(d))


def test_check_trust_hook(tmp_path):
    (tmp_path / "img1.toml").write_text(GOOD)
    seen = []
    load_catalog(str(tmp_path), check_trust=seen.append)
    assert seen == [str(tmp_path / "img1.toml")]

    def refuse(path):
        raise RefusedError(f"untrusted path: {path}")

    with pytest.raises(RefusedError):
        load_catalog(str(tmp_path), check_trust=refuse)
