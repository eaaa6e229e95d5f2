"""Issue 14 end to end with real guests: ``images add`` then a first job on a fresh site,
and ``images maintain`` whose change reaches the next job through a signed publish.

The CLI runs as the administrator runs it (``python -m racf_vm.cli --config ...``, this
worktree's code); jobs are driven through the wrapper's own code from the image onwards
(racf_vm.job.run.JobRun: ``image_inputs`` holds and prepares the image as a job start
does, ``plan_job`` plans, ``_execute`` boots it through libvirt with the context disk,
channels and supervisor), without the setuid shim and its parent checks.
"""

import grp
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from racf_vm.condor.request import JobRequest
from racf_vm.config import load_config
from racf_vm.core import jobtag
from racf_vm.guest import install
from racf_vm.images import catalog, catalogwrite, index, versions
from racf_vm.images.catalog import ImageEntry
from racf_vm.job import plan as planner
from racf_vm.job.run import JobRun
from racf_vm.trust import pathtrust, privsep
from racf_vm.vm import sizing
from tests.support import testenv
from tests.support.imageserver import ImageServer

pytestmark = [pytest.mark.root, pytest.mark.vm]

REPO = Path(__file__).resolve().parents[2]
JOB_UID = 2501
MARKER = "/etc/racf-maintained"


def _cli(config: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "racf_vm.cli", "--config", str(config), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=1200,
                          env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"})
    if check:
        assert proc.returncode == 0, f"{args}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def _sha(path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


@pytest.fixture
def area(libvirtd, job_user):
    small = testenv.build_image("small")
    testenv.TEST_ROOT.mkdir(mode=0o755, parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="lifecycle-", dir=testenv.TEST_ROOT))
    os.chmod(root, 0o755)
    for d in ("etc", "etc/images.d", "cache", "execute", "master", "web", "keys"):
        (root / d).mkdir(mode=0o755)
    (root / "state").mkdir(mode=0o711)
    os.chmod(root / "keys", 0o700)
    shutil.copy(REPO / "images.d" / "guest" / "runner.sh", root / "etc" / "runner.sh")
    yield root, small
    shutil.rmtree(root, ignore_errors=True)


def _write_config(root: Path, extra: str = "") -> Path:
    path = root / "etc" / "racf-vm.toml"
    path.write_text(f"""
[paths]
catalog_dir = "{root}/etc/images.d"
state_dir = "{root}/state"
image_dir = "{root}/cache"
runner = "{root}/etc/runner.sh"

[sizing]
memory_per_core_mib = 512
min_memory_mib = 128

[timeouts]
boot = 300
poweroff = 60
prepare = 600
after_destroy = 60   # libvirt's destroy waits 10 s for QEMU before SIGKILL; shared machine

[images]
{extra}
""")
    os.chmod(path, 0o644)
    return path


def _run_job(config_path: Path, image: str, script: str, capfd) -> tuple[int, str]:
    """One job as the wrapper runs it from the image onwards; (exit status, its stdout)."""
    cfg = load_config(str(config_path))
    workdir = config_path.parent.parent / "execute" / f"dir_{os.getpid()}"
    workdir.mkdir(mode=0o700)
    os.chown(workdir, JOB_UID, JOB_UID)
    run = JobRun(config_path=str(config_path), caller=privsep.Caller(JOB_UID, JOB_UID), user_args=[])
    run.config = cfg
    run.request = req = JobRequest(image=image, command="/bin/sh", args=("-c", script), env=(),
                                   user="racfjob", uid=JOB_UID, gid=JOB_UID, workdir=str(workdir),
                                   slot="slot1", cluster=1, proc=0)
    try:
        entry = catalog.load_catalog(cfg.paths.catalog_dir, check_trust=pathtrust.check_trusted_file).lookup(image)
        resolved, base, layer, kind = run.image_inputs(entry, install.read_runner(cfg.paths.runner))
        plan = planner.plan_job(planner.PlanInputs(
            request=req, image=resolved, base=base, layer=layer, slot=sizing.read_slot(), config=cfg,
            accel=kind, owner=jobtag.self_owner(),
            qemu_uid=pwd.getpwnam(cfg.libvirt.qemu_user).pw_uid,
            qemu_gid=grp.getgrnam(cfg.libvirt.qemu_group).gr_gid))
        capfd.readouterr()
        status = run._execute(plan)
        return status, capfd.readouterr().out
    finally:
        run.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


def test_images_add_then_a_first_job_on_a_fresh_site(area, capfd):
    root, small = area
    meta = testenv._image_toml(small)
    config = _write_config(root)
    assert list((root / "etc" / "images.d").iterdir()) == []  # nothing in the catalog yet
    out = _cli(config, "images", "add", str(small / meta["disk"]), "--name", "small",
               "--trust", "trusted", "--kernel", str(small / meta["kernel"]),
               "--initrd", str(small / meta["initrd"]), "--cmdline", meta["cmdline"],
               "--filesystem", meta["root_device"]).stdout
    assert "added: small (trusted, qcow2" in out and "prepared: small" in out
    entry_file = root / "etc" / "images.d" / "small.toml"
    st = entry_file.stat()
    assert (st.st_uid, st.st_mode & 0o777) == (0, 0o644)
    pathtrust.check_trusted_file(str(entry_file))
    entry = catalog.load_catalog(str(root / "etc" / "images.d"))["small"]
    cached = root / "cache" / "small.qcow2"
    assert entry.path == str(cached) and entry.sha256 == meta["sha256"] == _sha(cached)
    assert (cached.stat().st_uid, cached.stat().st_mode & 0o777) == (0, 0o644)
    assert index.load(str(root / "cache"))["small.qcow2"].origin == "local"
    assert entry.boot.kernel == str(root / "cache" / "small.vmlinuz")
    listing = _cli(config, "images", "list").stdout
    row = [line for line in listing.splitlines() if line.startswith("small")][0]
    assert "pinned " + meta["sha256"][:16] in row and "present, verified" in row
    assert row.rstrip().endswith("yes")  # prepared
    status, stdout = _run_job(config, "small", 'echo "first job as $(id -u)"', capfd)
    assert (status, stdout) == (0, f"first job as {JOB_UID}\n")
    again = _cli(config, "images", "add", str(small / meta["disk"]), "--name", "small",
                 "--trust", "trusted", "--bootloader", check=False)
    assert again.returncode == 78 and "already exists; pass --replace" in again.stderr


def _guest_paths_exist(disk: Path, *paths: str) -> list[bool]:
    """Whether each path exists in the image (guestfish, read-only, TCG)."""
    cmd = ["/usr/bin/guestfish", "--ro", "--format=qcow2", "-a", str(disk), "-m", "/dev/sda"]
    for i, p in enumerate(paths):
        cmd += ([":"] if i else []) + ["exists", p]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True,
                         env={"LIBGUESTFS_BACKEND_SETTINGS": "force_tcg", "PATH": "/usr/bin:/bin",
                              "HOME": "/root"}).stdout
    return [line == "true" for line in out.split()]


def test_maintain_commits_only_on_success_and_the_next_job_sees_the_change(area, capfd):
    root, small = area
    meta = testenv._image_toml(small)
    key = root / "keys" / "site"
    keygen = _cli(_write_config(root), "images", "keygen", str(key)).stdout
    trusted = [line for line in keygen.splitlines() if line.startswith("trusted_keys = ")][0]
    master = root / "master" / "small.qcow2"
    shutil.copy(small / meta["disk"], master)
    os.chmod(master, 0o644)
    with ImageServer(str(root / "web")) as server:
        config = _write_config(root, f'source_url = "{server.url}"\n{trusted}\n'
                                     f'signing_key = "{key}"\n')
        _cli(config, "images", "publish", str(root / "master"), str(root / "web"))
        # the node follows the server: its entry names no checksum
        node_entry = ImageEntry(
            name="small", trust="trusted", path=str(root / "cache" / "small.qcow2"), format="qcow2",
            sha256="", follow=True,
            boot=catalog.BootSpec("kernel", str(small / meta["kernel"]), str(small / meta["initrd"]),
                                  meta["cmdline"]),
            context=catalog.ContextSpec(meta["root_device"]))
        catalogwrite.write_entry(str(root / "etc" / "images.d"), node_entry)
        original = _sha(master)
        before = master.stat()
        listed = (root / "web" / "SHA256SUMS").read_bytes()

        failed = _cli(config, "images", "maintain", str(master), "--run",
                      f"echo broken > {MARKER}; echo about to fail; exit 3", str(root / "web"),
                      check=False)
        assert failed.returncode == 65, failed.stderr
        assert "about to fail" in failed.stdout
        assert "exited with 3; the master copy" in failed.stderr and "is unchanged" in failed.stderr
        now = master.stat()
        assert (now.st_ino, now.st_mtime_ns, _sha(master)) == (before.st_ino, before.st_mtime_ns, original)
        assert (root / "web" / "SHA256SUMS").read_bytes() == listed

        done = _cli(config, "images", "maintain", str(master), "--run",
                    f"echo maintained-$((6 * 7)) > {MARKER}; echo maintenance ran as $(id -u)",
                    str(root / "web"))
        assert "maintenance ran as 0" in done.stdout  # live output of the command, as root
        assert "committing the master copy" in done.stderr
        new = _sha(master)
        assert new != original and f"-> {new}" in done.stdout
        assert [ln for ln in (root / "web" / "SHA256SUMS").read_text().splitlines()
                if ln.endswith("small.qcow2.gz")] == [f"{new}  small.qcow2.gz"]
        # the maintenance layer's runner and hook are gone from the master; the change stays
        assert _guest_paths_exist(master, "/racf", "/etc/rc.local", MARKER) == [False, False, True]
        assert list((root / "state" / "jobs").iterdir()) == []

        # the next job start on the node: one signed list, the new image, the change
        status, stdout = _run_job(config, "small", f"cat {MARKER}", capfd)
        assert (status, stdout) == (0, "maintained-42\n")
        assert index.verified_sha(str(root / "cache"), "small.qcow2") == new
        assert sorted(versions.existing(str(root / "cache"), "small.qcow2")) == [new]
        row = [line for line in _cli(config, "images", "list").stdout.splitlines()
               if line.startswith("small")][0]
        assert f"follows {new[:16]}" in row and "present, verified" in row
        assert row.rstrip().endswith("yes")
