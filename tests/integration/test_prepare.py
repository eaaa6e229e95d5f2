"""racf_vm.images.prepare with real libguestfs: once per (base, runner, hook), as the
unprivileged account, concurrent callers waiting for one preparation, and gc."""

import dataclasses
import hashlib
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from racf_vm.config import parse_config
from racf_vm.core.errors import RefusedError
from racf_vm.images import imageheader, locks, prepare
from racf_vm.images.catalog import BootSpec, ContextSpec, ImageEntry
from tests.support import testenv

pytestmark = [pytest.mark.root, pytest.mark.vm]

RUNNER = b"#!/bin/sh\necho runner one\n"


@pytest.fixture(scope="module")
def site():
    small = testenv.build_image("small")
    meta = testenv._image_toml(small)
    testenv.IMAGE_CACHE.mkdir(mode=0o755, parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="prepare-", dir=testenv.IMAGE_CACHE))
    os.chmod(root, 0o711)
    config = parse_config(f'[paths]\nstate_dir = "{root}"\n'.encode(), "test")
    entry = ImageEntry(name="small", trust="trusted", path=str(small / meta["disk"]), format="qcow2",
                       sha256=meta["sha256"], boot=BootSpec("bootloader"),
                       context=ContextSpec(meta["root_device"], "ext4", "rc.local"))
    base = imageheader.validate_base_image(entry.path, "qcow2")
    yield {"root": root, "config": config, "entry": entry, "base": base, "small": small}
    shutil.rmtree(root)


def _guestfs_uids(stop: threading.Event, seen: set) -> None:
    """Real uids of every libguestfs QEMU seen while preparation runs."""
    while not stop.is_set():
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                cmd = open(f"/proc/{pid}/cmdline", "rb").read()
                if b"qemu-system" in cmd and b"guestfs" in cmd:
                    seen.add(os.stat(f"/proc/{pid}").st_uid)
            except OSError:
                continue
        time.sleep(0.2)


def test_preparation_runs_as_the_account_and_yields_a_checked_root_layer(site):
    account = pwd.getpwnam("racf-prep")
    seen: set = set()
    stop = threading.Event()
    watcher = threading.Thread(target=_guestfs_uids, args=(stop, seen), daemon=True)
    watcher.start()
    try:
        layer = prepare.ensure_prepared(site["entry"], site["base"], RUNNER, site["config"], "tcg")
    finally:
        stop.set()
        watcher.join()
    assert seen == {account.pw_uid}, seen  # libguestfs's QEMU ran as racf-prep, never as root
    st = os.stat(layer.path)
    assert (st.st_uid, st.st_mode & 0o777) == (0, 0o644)
    assert layer.backing == (site["base"].path, "qcow2")
    assert imageheader.backing_file_name(layer.path) == site["base"].path
    home = site["root"] / "prepare-home"
    assert os.stat(home).st_uid == account.pw_uid and os.stat(home).st_mode & 0o777 == 0o700
    assert list((site["root"] / "prepared" / ".staging").iterdir()) == []
    # the runner and its hook are in the layer (read back by guestfish, read-only)
    out = subprocess.run(["/usr/bin/guestfish", "--ro", "--format=qcow2", "-a", layer.path,
                          "-m", "/dev/sda", "cat", "/racf/runner.sh", ":", "cat", "/etc/rc.local"],
                         capture_output=True, env={"LIBGUESTFS_BACKEND_SETTINGS": "force_tcg",
                                                   "PATH": "/usr/bin:/bin", "HOME": "/root"})
    assert out.returncode == 0, out.stderr
    assert b"echo runner one" in out.stdout and b"exec /racf/runner.sh" in out.stdout


def test_a_new_runner_or_base_gives_a_new_layer_and_gc_removes_the_old(site):
    cfg, entry, base = site["config"], site["entry"], site["base"]
    first = prepare.ensure_prepared(entry, base, RUNNER, cfg, "tcg")
    again = prepare.ensure_prepared(entry, base, RUNNER, cfg, "tcg")
    assert again.path == first.path and os.stat(again.path).st_ino == os.stat(first.path).st_ino
    runner2 = RUNNER + b"echo runner two\n"
    second = prepare.ensure_prepared(entry, base, runner2, cfg, "tcg")
    assert second.path != first.path
    other_base = dataclasses.replace(entry, sha256=hashlib.sha256(b"v2").hexdigest())
    assert prepare.layer_name(other_base, runner2) != os.path.basename(second.path)
    current = {os.path.basename(second.path)}
    with locks.hold_image(first.path):  # a job still runs on the old layer: kept
        removed, in_use = prepare.remove_stale_layers(str(site["root"]), current)
    assert removed == [] and in_use == [os.path.basename(first.path)]
    removed, in_use = prepare.remove_stale_layers(str(site["root"]), current)
    assert removed == [os.path.basename(first.path)] and in_use == []
    assert os.path.exists(second.path)


def test_a_layer_whose_base_left_the_cache_is_removed(site):
    cfg = site["config"]
    base_copy = site["root"] / "gone.qcow2"
    shutil.copy(site["entry"].path, base_copy)
    os.chmod(base_copy, 0o644)
    entry = dataclasses.replace(site["entry"], name="gone", path=str(base_copy))
    layer = prepare.ensure_prepared(entry, imageheader.validate_base_image(str(base_copy), "qcow2"),
                                    RUNNER, cfg, "tcg")
    name = os.path.basename(layer.path)
    current = set(os.listdir(prepare.prepared_dir(str(site["root"]))))  # everything is still needed
    assert prepare.remove_stale_layers(str(site["root"]), current) == ([], [])
    base_copy.unlink()
    assert prepare.remove_stale_layers(str(site["root"]), current) == ([name], [])


def test_a_staged_layer_naming_another_file_is_refused(site):
    """What the account wrote is data: a header pointing at /etc/shadow never gets in."""
    account = prepare.prep_account("racf-prep")
    staging = site["root"] / "evil-staging"
    staging.mkdir(mode=0o700)
    staged = staging / "layer.qcow2"
    subprocess.run(["/usr/bin/qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", "/etc/shadow",
                    "-u", str(staged), "64M"], check=True)
    os.chown(staged, account.uid, account.gid)
    directory = str(site["root"] / "prepared")
    with pytest.raises(RefusedError, match="backing file is not"):
        prepare._take_over(str(staged), account, directory, "evil.qcow2", (site["base"].path, "qcow2"))
    assert not [n for n in os.listdir(directory) if "evil" in n]


def test_eight_concurrent_preparations_make_one(site):
    """Eight processes need the same never-prepared layer: one prepares, seven wait."""
    entry = dataclasses.replace(site["entry"], name="busy")
    code = ("import sys, logging; logging.basicConfig(level=logging.INFO, format='%(message)s')\n"
            "from racf_vm.config import parse_config\n"
            "from racf_vm.images import imageheader, prepare\n"
            "from racf_vm.images.catalog import BootSpec, ContextSpec, ImageEntry\n"
            f"entry = ImageEntry(**{dataclasses.asdict(entry)!r})\n"
            "entry = ImageEntry(**{**entry.__dict__, 'boot': BootSpec(**entry.boot), "
            "'context': ContextSpec(**entry.context)})\n"
            f"cfg = parse_config(b'[paths]\\nstate_dir = \"{site['root']}\"\\n', 't')\n"
            "base = imageheader.validate_base_image(entry.path, 'qcow2')\n"
            f"print(prepare.ensure_prepared(entry, base, {RUNNER!r}, cfg, 'tcg').path)\n")
    procs = [subprocess.Popen([testenv.PYTHON, "-c", code], cwd=str(testenv.REPO), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(8)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-500:] for o in outs]
    assert len({o[0].strip() for o in outs}) == 1
    assert sum("preparing image busy" in o[1] for o in outs) == 1
