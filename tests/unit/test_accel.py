"""racf_vm.vm.accel: boot-sector probe, decision and its cache."""

import json
import os
import shutil
import stat
import tempfile
import time

import pytest

from racf_vm.core.errors import ConfigError, TemporaryError
from racf_vm.vm import accel
from tests.support import prereq

EMULATOR = "/usr/bin/qemu-system-x86_64"


@pytest.fixture
def emulator():
    return prereq.require_file(EMULATOR, "qemu-system-x86")


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


def test_tcg_probe_boots(emulator):
    assert accel.probe_tcg(emulator, timeout=20)


def test_auto_follows_the_kvm_probe_and_is_cached(state_dir, emulator):
    """"auto" is whatever the KVM probe finds on this machine (kvm on a KVM node, tcg where
    nested KVM does not boot guests); the answer is cached and re-probed when stale."""
    decided = accel.choose_accel("auto", state_dir, EMULATOR)
    kvm_boots = accel.probe_kvm(EMULATOR)
    assert decided == ("kvm" if kvm_boots else "tcg")
    if not os.path.exists("/dev/kvm"):
        assert decided == "tcg"
    path = os.path.join(state_dir, "accel.json")
    st = os.lstat(path)
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o644 and st.st_uid == 0
    data = json.load(open(path))
    assert data["accel"] == decided and data["key"]["kernel"] == os.uname().release
    assert data["key"]["emulator"] == EMULATOR and data["key"]["size"] == os.stat(EMULATOR).st_size
    # Cached answer wins (no probe): tamper the value, it is returned.
    other = "tcg" if decided == "kvm" else "kvm"
    data["accel"] = other
    with open(path, "w") as f:
        json.dump(data, f)
    os.chmod(path, 0o644)
    assert accel.choose_accel("auto", state_dir, EMULATOR) == other
    # A stale key (other emulator mtime) means probe again.
    data["key"]["mtime_ns"] += 1
    with open(path, "w") as f:
        json.dump(data, f)
    assert accel.choose_accel("auto", state_dir, EMULATOR) == decided
    assert [n for n in os.listdir(state_dir) if n.startswith(".accel")] == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_untrusted_cache_is_ignored(state_dir, emulator):
    decided = "kvm" if accel.probe_kvm(emulator) else "tcg"
    path = os.path.join(state_dir, "accel.json")
    with open(path, "w") as f:  # a world-writable answer that contradicts the probe
        json.dump({"key": accel._cache_key(emulator), "accel": "tcg" if decided == "kvm" else "kvm"}, f)
    os.chmod(path, 0o666)
    assert accel.choose_accel("auto", state_dir, emulator) == decided


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
