"""The guest runner's root mode is out of a job's reach (issue 14, images maintain).

The runner runs its command as root only when the control archive at the start of the
context disk holds ``job/maintenance``. Only racf_vm.guest.maintdisk writes it; a job's
disk (racf_vm.guest.contextdisk) refuses it, whatever the job asks for, and nothing on
the wrapper's path imports maintdisk.
"""

import ast
import io
import subprocess
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from racf_vm.core.errors import InternalError
from racf_vm.guest import contextdisk, maintdisk
from racf_vm.guest.contextdisk import MAINTENANCE_MARKER
from tests.support import prereq

REPO = Path(__file__).resolve().parents[2]
BUSYBOX = "/bin/busybox"
# modules a job's wrapper runs (racf_vm.job.main and everything it reaches at run time)
WRAPPER_PATH = ["racf_vm/job/main.py", "racf_vm/job/run.py", "racf_vm/job/plan.py",
                "racf_vm/job/supervise.py", "racf_vm/job/storage.py", "racf_vm/job/storageplan.py",
                "racf_vm/job/streams.py", "racf_vm/condor",
                "racf_vm/images", "racf_vm/vm", "racf_vm/trust", "racf_vm/core",
                "racf_vm/guest/contextdisk.py", "racf_vm/guest/channels.py"]


def _hostile_request():
    marker = MAINTENANCE_MARKER
    return SimpleNamespace(
        uid=2501, gid=2501, user="racfjob", workdir="/scratch/job",
        command=marker, args=(marker, "../" + marker, "/racf/" + marker, "\n" + marker),
        env=(("job_maintenance", marker), ("X", "1")))


def _input_tar() -> bytes:
    """The job's own input files, trying to plant the marker where the runner looks."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in (MAINTENANCE_MARKER, "./" + MAINTENANCE_MARKER, "../racf/" + MAINTENANCE_MARKER):
            info = tarfile.TarInfo(name)
            info.size = 2
            tar.addfile(info, io.BytesIO(b"1\n"))
    return buf.getvalue()


def test_a_job_disk_never_carries_the_marker(tmp_path):
    disk = tmp_path / "context.img"
    with open(disk, "w+b") as out:
        contextdisk.write_context_disk(out, _hostile_request(), "/scratch",
                                       lambda f: f.write(_input_tar()))
    files, _ = contextdisk.read_context_disk(disk.read_bytes())
    assert MAINTENANCE_MARKER not in files and "job/argv/0000" in files
    # and as the guest runner reads it: busybox tar from the start of the disk into /racf
    prereq.require_file(BUSYBOX, "busybox-static")
    dest = tmp_path / "racf"
    dest.mkdir()
    subprocess.run([BUSYBOX, "tar", "-x", "-f", str(disk), "-C", str(dest)], check=True,
                   capture_output=True)
    assert not (dest / MAINTENANCE_MARKER).exists()
    assert sorted(p.name for p in (dest / "job").iterdir()) == [
        "argv", "env", "gid", "input_offset", "uid", "user", "workdir", "workdir_root"]


def test_the_job_writer_refuses_the_marker_outright(monkeypatch):
    real = contextdisk.control_files
    monkeypatch.setattr(contextdisk, "control_files",
                        lambda req, root: real(req, root) + [(MAINTENANCE_MARKER, b"1\n")])
    with pytest.raises(InternalError, match="never carry the maintenance marker"):
        contextdisk.control_archive(_hostile_request(), "/scratch", False)


def test_the_maintenance_disk_carries_it_first(tmp_path):
    disk = tmp_path / "m.img"
    with open(disk, "w+b") as out:
        maintdisk.write_maintenance_disk(out, ["/bin/sh", "-c", "echo hi"], [("PATH", "/bin")])
    files, extra = contextdisk.read_context_disk(disk.read_bytes())
    assert list(files)[0] == MAINTENANCE_MARKER and extra is None
    assert files["job/argv/0002"] == b"echo hi" and files["job/env/0000"] == b"PATH=/bin"
    assert "job/uid" not in files  # no identity: maintenance runs as root
    with pytest.raises(InternalError):
        maintdisk.control_files([], [])


def _imports(path: Path) -> set:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return names


def test_nothing_on_the_wrapper_path_imports_the_maintenance_writer():
    files = []
    for rel in WRAPPER_PATH:
        p = REPO / rel
        files += sorted(p.rglob("*.py")) if p.is_dir() else [p]
    users = [str(f.relative_to(REPO)) for f in files
             if any("maintdisk" in name or "maintain" in name.split(".")[-1] for name in _imports(f))]
    assert users == []
    # the one user is the maintenance command
    assert "racf_vm.guest.maintdisk" in _imports(REPO / "racf_vm/job/maintain.py")
