"""racf-vm-advertise run exactly as STARTD_CRON runs it: as an unprivileged user (the
condor user's stand-in), argv ``EXECUTABLE RACFVM --config PATH`` from the printed
configuration, a daemon's environment, stdin closed, cwd ``/``; every ad it prints read
back with classad2; and the reasons a node cannot run racf-vm jobs, from crafted failures.
"""

import hashlib
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from netpolicy import detect
from racf_vm.images import index
from racf_vm.vm import accel
from tests.support import condorconfig as cc
from tests.support.classads import parse_cron

pytestmark = pytest.mark.root
REPO = Path(__file__).resolve().parents[2]
TEST_ROOT = Path("/var/lib/racf-vm-test")
CONDOR_USER = "racfjob2"  # any unprivileged account: STARTD_CRON runs as the condor user
# what condor_startd's children find in their environment (DaemonCore passes its own on)
STARTD_ENV = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "CONDOR_CONFIG": "/etc/condor/condor_config",
              "_CONDOR_ANCESTOR_1000": "1000:1700000000:123456"}
SHA_PLACEHOLDER = "0" * 64


def _root_file(path: Path, data: bytes, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chown(path, 0, 0)
    os.chmod(path, mode)
    return path


def _entry(name: str, path: Path, trust: str, sha: str) -> bytes:
    return (f'name = "{name}"\ntrust = "{trust}"\npath = "{path}"\nformat = "raw"\nsha256 = "{sha}"\n'
            f'[boot]\nmethod = "bootloader"\n[context]\nfilesystem = "/dev/sda1"\n').encode()


class Site:
    """A root-owned test site under /var/lib/racf-vm-test: config, catalog, cache, state."""

    def __init__(self, root: Path):
        self.root = root
        self.catalog = root / "images.d"
        self.cache = root / "cache"
        self.state = root / "state"
        self.local = root / "local"
        for d in (self.catalog, self.cache, self.local):
            d.mkdir(mode=0o755)
        self.state.mkdir(mode=0o711)
        os.chmod(self.state, 0o711)
        self.wrapper = _root_file(root / "wrapper" / "vm", b"#!/bin/false\n", 0o4755)  # only stat'ed
        self.starter = _root_file(root / "condor_starter", b"", 0o755)
        self.launcher = _root_file(root / "bin" / "racf-vm-advertise", (
            # what pip's console script does, with this checkout on sys.path
            f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(REPO)!r})\n"
            "from racf_vm.condor.advertise import main\nsys.exit(main())\n").encode(), 0o755)
        self.images = {}
        self._add("busybox", self.cache / "busybox.img", "trusted", verified=True)     # cached
        self._add("sl-5.3", self.local / "sl53.img", "untrusted")                       # local
        self._add("debian12", self.cache / "debian12.img", "trusted", create=False)     # fetchable
        self._add("stale", self.cache / "stale.img", "trusted", verified=False)         # fetchable
        self._add("gone", self.local / "gone.img", "trusted", create=False)             # missing
        self._add("loose", self.local / "loose.img", "trusted", mode=0o666)             # refused
        self._add("example", self.local / "example.img", "trusted", sha=SHA_PLACEHOLDER)  # refused
        emulator = "/usr/bin/qemu-system-x86_64"
        _root_file(self.state / accel.ACCEL_FILE,
                   json.dumps({"key": accel._cache_key(emulator), "accel": "tcg"}).encode())

    def _add(self, name, path, trust, *, verified=None, create=True, mode=0o644, sha=None):
        data = hashlib.sha256(name.encode()).digest() * 2048
        real = hashlib.sha256(data).hexdigest()
        if create:
            _root_file(path, data, mode)
        if verified is not None:
            index.record(str(self.cache), path.name, real if verified else "f" * 64, os.stat(path))
        self.images[name] = sha or real
        _root_file(self.catalog / f"{name}.toml", _entry(name, path, trust, sha or real))

    def config(self, name="racf-vm.toml", *, uri="qemu:///system", backend="auto", wrapper=None,
               state=None, min_free_mib=16) -> Path:
        return _root_file(self.root / name, f"""
[paths]
catalog_dir = "{self.catalog}"
state_dir = "{state or self.state}"
image_dir = "{self.cache}"
[parent]
starter = "{self.starter}"
[libvirt]
uri = "{uri}"
[untrusted_network]
backend = "{backend}"
[images]
source_url = "http://127.0.0.1:9/images"
[condor]
wrapper = "{wrapper or self.wrapper}"
state_min_free_mib = {min_free_mib}
""".encode())

    def run(self, args, user=CONDOR_USER):
        """argv exactly as STARTD_CRON builds it: EXECUTABLE, the job's name, then _ARGS."""
        pw = pwd.getpwnam(user)
        started = time.monotonic()
        proc = subprocess.run([str(self.launcher), "RACFVM", *args], env=STARTD_ENV, cwd="/",
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
                              user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
        seconds = time.monotonic() - started
        assert proc.returncode == 0, proc.stderr
        [ad] = parse_cron(proc.stdout)
        print(f"racf-vm-advertise as {user}: {seconds:.3f} s")
        return ad, proc.stderr

    def advertise(self, config: Path):
        return self.run(["--config", str(config)])


@pytest.fixture(scope="module")
def site(job_user):
    TEST_ROOT.mkdir(mode=0o755, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="cron-adv-", dir=TEST_ROOT))
    os.chmod(root, 0o755)
    try:
        yield Site(root)
    finally:
        shutil.rmtree(root)


def test_a_healthy_node_as_startd_cron_runs_it(site, libvirtd):
    # the argv and working directory come from what racf-vm condor-config prints
    out = subprocess.run([sys.executable, "-m", "racf_vm.cli", "--config", str(site.config()),
                          "condor-config"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    conf = cc.expand(cc.parse(out))
    assert conf["STARTD_CRON_RACFVM_CWD"] == "/"
    ad, stderr = site.run(conf["STARTD_CRON_RACFVM_ARGS"].split())
    assert ad["RacfVMCanRun"] is True, ad["RacfVMOfflineReason"]
    assert ad["RacfVMOfflineReason"] == "" and ad["RacfVMUntrustedOK"] is True
    assert ad["RacfVMAccel"] == "tcg"  # the wrapper's cached probe, read as the condor user
    assert list(ad["RacfVMImages"]) == ["busybox", "debian12", "sl-5.3", "stale"]
    assert list(ad["RacfVMCachedImages"]) == ["busybox", "sl-5.3"]
    assert (ad["RacfVMImage_busybox_Trust"], ad["RacfVMImage_busybox_State"],
            ad["RacfVMImage_busybox_Sha256"]) == ("trusted", "cached", site.images["busybox"][:12])
    assert (ad["RacfVMImage_sl_5_3_Trust"], ad["RacfVMImage_sl_5_3_State"]) == ("untrusted", "local")
    assert ad["RacfVMImage_debian12_State"] == ad["RacfVMImage_stale_State"] == "fetchable"
    assert list(ad["RacfVMProfiles"]) == ["small", "medium", "large"]
    assert (ad["RacfVMProfile_large_Cpus"], ad["RacfVMProfile_large_Memory"]) == (4, 2048)
    # what is not advertised is explained for the admin
    assert "image gone: missing" in stderr and "image loose: refused" in stderr
    assert "writable by others" in stderr and "image example: refused: the catalog has the placeholder" in stderr


def test_a_dead_libvirt_socket(site):
    dead = site.root / "dead.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(dead))
    s.close()  # the socket file stays, nobody listens on it: libvirtd died
    os.chmod(dead, 0o777)  # as libvirt makes its socket (unix_sock_rw_perms 0777 on Debian)
    try:
        ad, _ = site.advertise(site.config("dead.toml", uri=f"qemu:///system?socket={dead}"))
    finally:
        dead.unlink()
    assert ad["RacfVMCanRun"] is False
    assert f"libvirtd is not running (nothing answers on {dead})" in ad["RacfVMOfflineReason"]


def test_a_wrapper_copy_that_is_not_setuid(site):
    copy = _root_file(site.root / "wrapper" / "vm-copy", b"#!/bin/false\n", 0o755)
    ad, _ = site.advertise(site.config("copy.toml", wrapper=copy))
    assert ad["RacfVMCanRun"] is False
    assert f"the wrapper {copy} is not setuid root" in ad["RacfVMOfflineReason"]
    missing = site.root / "wrapper" / "nothing"
    ad, _ = site.advertise(site.config("missing.toml", wrapper=missing))
    assert f"the wrapper {missing} is missing" in ad["RacfVMOfflineReason"]


def test_a_nearly_full_state_directory(site):
    small = site.root / "smallstate"
    small.mkdir(mode=0o711)
    subprocess.run(["/bin/mount", "-t", "tmpfs", "-o", "size=8m,mode=0711,uid=0,gid=0",
                    "racf-test", str(small)], check=True)
    try:
        config = site.config("small.toml", state=small, min_free_mib=4)
        ad, _ = site.advertise(config)
        assert "nearly full" not in ad["RacfVMOfflineReason"]  # 8 MiB free: enough
        _root_file(small / "filler", b"\0" * (6 << 20))
        ad, _ = site.advertise(config)
        assert ad["RacfVMCanRun"] is False
        assert (f"the state directory {small} is nearly full (2 MiB free, [condor] "
                "state_min_free_mib is 4)") in ad["RacfVMOfflineReason"]
        assert ad["RacfVMAccel"] == "unknown"  # no probe answer there, and none is run
    finally:
        subprocess.run(["/bin/umount", str(small)], check=True)
        small.rmdir()


def test_a_firewall_backend_that_does_not_match_the_host(site):
    other = "iptables" if detect.host_flavour() == "nft" else "nft"
    ad, _ = site.advertise(site.config("fw.toml", backend=other))
    assert ad["RacfVMUntrustedOK"] is False
    assert "untrusted images cannot run: untrusted_network.backend" in ad["RacfVMOfflineReason"]
    assert "sl-5.3" not in list(ad["RacfVMImages"]) and "busybox" in list(ad["RacfVMImages"])
    assert "RacfVMImage_sl_5_3_Trust" not in ad


def test_a_catalog_file_the_condor_user_cannot_read(site):
    entry = site.catalog / "busybox.toml"
    os.chmod(entry, 0o600)
    try:
        ad, _ = site.advertise(site.config())
    finally:
        os.chmod(entry, 0o644)
    assert ad["RacfVMCanRun"] is False
    uid = pwd.getpwnam(CONDOR_USER).pw_uid
    assert f"{entry}: cannot open catalog file" in ad["RacfVMOfflineReason"]
    assert "Permission denied" in ad["RacfVMOfflineReason"] and "files 0644" in ad["RacfVMOfflineReason"]
    # and the same for the whole catalog directory
    os.chmod(site.catalog, 0o700)
    try:
        ad, _ = site.advertise(site.config())
    finally:
        os.chmod(site.catalog, 0o755)
    assert f"(uid {uid} must be able to read it" in ad["RacfVMOfflineReason"]


def test_a_broken_or_missing_config_still_gives_an_ad(site):
    ad, _ = site.advertise(site.root / "no-such.toml")
    assert ad["RacfVMCanRun"] is False and "no-such.toml" in ad["RacfVMOfflineReason"]
    bad = _root_file(site.root / "bad.toml", b"[condor]\nstate_min_free_mib = -1\n")
    ad, _ = site.advertise(bad)
    assert ad["RacfVMCanRun"] is False and "state_min_free_mib" in ad["RacfVMOfflineReason"]
    assert list(ad["RacfVMImages"]) == [] and ad["RacfVMAccel"] == "unknown"
