"""racf_vm.accel: boot-sector probe, decision and its cache."""

import json
import os
import shutil
import stat
import tempfile
import time

import pytest

from racf_vm import accel
from racf_vm.errors import ConfigError, TemporaryError

EMULATOR = "/usr/bin/qemu-system-x86_64"
needs_qemu = pytest.mark.skipif(not os.path.exists(EMULATOR), reason="qemu missing")


@pytest.fixture
def state_dir():
    d = tempfile.mkdtemp(prefix="racf-accel-test-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_boot_sector_shape():
    mbr = accel.boot_sector()
    assert len(mbr) == 512 and mbr[510:] == b"\x55\xaa"
    assert mbr[:4] == bytes([0xB0, accel.EXIT_VALUE, 0xE6, 0xF4])  # mov al,v; out 0xf4,al


def test_forced_values(state_dir):
    assert accel.choose_accel("tcg", state_dir) == "tcg"
    assert accel.choose_accel("kvm", state_dir) == "kvm"
    with pytest.raises(ConfigError):
        accel.choose_accel("hvf", state_dir)
    assert os.listdir(state_dir) == []


@needs_qemu
def test_tcg_probe_boots():
    assert accel.probe_tcg(EMULATOR, timeout=20)


@needs_qemu
def test_auto_is_tcg_here_and_cached(state_dir):
    t = time.monotonic()
    assert accel.choose_accel("auto", state_dir, EMULATOR) == "tcg"  # nested KVM aborts here
    assert time.monotonic() - t < 30
    path = os.path.join(state_dir, "accel.json")
    st = os.lstat(path)
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o644 and st.st_uid == 0
    data = json.load(open(path))
    assert data["accel"] == "tcg" and data["key"]["kernel"] == os.uname().release
    assert data["key"]["emulator"] == EMULATOR and data["key"]["size"] == os.stat(EMULATOR).st_size
    # Cached answer wins (no probe): tamper the value, it is returned.
    data["accel"] = "kvm"
    with open(path, "w") as f:
        json.dump(data, f)
    os.chmod(path, 0o644)
    assert accel.choose_accel("auto", state_dir, EMULATOR) == "kvm"
    # A stale key (other emulator mtime) means probe again.
    data["key"]["mtime_ns"] += 1
    with open(path, "w") as f:
        json.dump(data, f)
    assert accel.choose_accel("auto", state_dir, EMULATOR) == "tcg"
    assert [n for n in os.listdir(state_dir) if n.startswith(".accel")] == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_untrusted_cache_is_ignored(state_dir):
    path = os.path.join(state_dir, "accel.json")
    with open(path, "w") as f:
        json.dump({"key": accel._cache_key(EMULATOR), "accel": "kvm"}, f)
    os.chmod(path, 0o666)
    assert accel.choose_accel("auto", state_dir, EMULATOR) == "tcg"


def test_hanging_emulator_never_hangs(state_dir, monkeypatch):
    fake = os.path.join(state_dir, "fake-qemu")
    with open(fake, "w") as f:
        f.write("#!/bin/sh\nexec sleep 60\n")
    os.chmod(fake, 0o755)
    monkeypatch.setattr(accel.os.path, "exists", lambda p: True)  # pretend /dev/kvm exists
    t = time.monotonic()
    assert accel.probe_kvm(fake, timeout=1) is False
    with pytest.raises(TemporaryError, match="boots nothing"):
        accel.choose_accel("auto", state_dir, fake, timeout=1)
    assert time.monotonic() - t < 10
    assert "accel.json" not in os.listdir(state_dir)
