"""racf_vm.trust.selfcheck on crafted trees (root-owned temp dirs) and on the real runtime."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from racf_vm.core.errors import RefusedError
from racf_vm.trust import selfcheck

pytestmark = pytest.mark.root
BASE = Path("/var/cache/racf-vm-test")


@pytest.fixture
def tree():
    if os.geteuid() != 0:
        pytest.fail("needs root (root-owned trees)")
    BASE.mkdir(mode=0o755, parents=True, exist_ok=True)
    d = Path(tempfile.mkdtemp(prefix="selfcheck-", dir=BASE))
    os.chmod(d, 0o755)
    (d / "pkg" / "__pycache__").mkdir(parents=True)
    for p in (d / "pkg", d / "pkg" / "__pycache__"):
        os.chmod(p, 0o755)
    (d / "pkg" / "mod.py").write_text("")
    (d / "pkg" / "__pycache__" / "mod.pyc").write_text("")
    yield d
    import shutil

    shutil.rmtree(d)


def test_clean_tree_passes(tree):
    assert selfcheck.check_package(str(tree / "pkg")) == 3
    assert selfcheck.check_sys_path([str(tree), str(tree / "missing.zip")]) >= 1


@pytest.mark.parametrize("rel, mode, uid, words", [
    ("pkg/mod.py", 0o664, 0, "writable by group"),
    ("pkg/__pycache__/mod.pyc", 0o646, 0, "writable by others"),
    ("pkg/__pycache__", 0o777, 0, "writable by others"),
    ("pkg/mod.py", 0o644, 2501, "owned by uid 2501"),
])
def test_package_file_problems(tree, rel, mode, uid, words):
    os.chown(tree / rel, uid, -1)
    os.chmod(tree / rel, mode)
    with pytest.raises(RefusedError) as exc:
        selfcheck.check_package(str(tree / "pkg"))
    assert str(tree / rel) in exc.value.message and words in exc.value.message


def test_sys_path_problems(tree):
    (tree / "evil.pth").write_text("import os")
    os.chmod(tree / "evil.pth", 0o666)
    with pytest.raises(RefusedError, match="evil.pth is writable by others"):
        selfcheck.check_sys_path([str(tree)])
    with pytest.raises(RefusedError, match="relative"):
        selfcheck.check_sys_path([""])
    with pytest.raises(RefusedError, match="sticky"):
        selfcheck.check_sys_path(["/tmp/nonexistent-racf-entry"])


def test_symlink_into_user_dir_is_refused(tree):
    user_dir = Path(tempfile.mkdtemp())
    try:
        (user_dir / "x.py").write_text("")
        os.symlink(user_dir / "x.py", tree / "pkg" / "x.py")
        with pytest.raises(RefusedError, match="sticky"):
            selfcheck.check_package(str(tree / "pkg"))
    finally:
        import shutil

        shutil.rmtree(user_dir)


def test_interpreter():
    selfcheck.check_interpreter()
    with pytest.raises(RefusedError):
        selfcheck.check_interpreter("python3")


def test_not_dumpable_in_child():
    pid = os.fork()
    if pid == 0:
        try:
            selfcheck.set_not_dumpable()
            import ctypes

            os._exit(ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))  # PR_GET_DUMPABLE
        except BaseException:
            os._exit(99)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_installed_runtime_is_trusted():
    # The runtime as the wrapper sees it: the installed package under `python -I`, cwd /.
    # (pytest's own view includes the checkout, which may sit anywhere, /tmp included.)
    # How long the check takes is a bench matter, not an assert here.
    code = ("from racf_vm.trust import selfcheck; selfcheck.check_interpreter(); "
            "selfcheck.check_package(); selfcheck.check_sys_path(); print('trusted')")
    proc = subprocess.run([sys.executable, "-I", "-B", "-c", code], cwd="/",
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "trusted"


def test_subpackages_are_checked_at_any_depth(tree):
    sub = tree / "pkg" / "sub" / "deeper"
    sub.mkdir(parents=True)
    for p in (tree / "pkg" / "sub", sub):
        os.chmod(p, 0o755)
    (sub / "m.py").write_text("")
    assert selfcheck.check_package(str(tree / "pkg")) == 6
    os.chmod(sub / "m.py", 0o666)
    with pytest.raises(RefusedError, match="deeper/m.py is writable by others"):
        selfcheck.check_package(str(tree / "pkg"))


def test_project_packages_are_racf_vm_and_netpolicy():
    names = [os.path.basename(p) for p in selfcheck.project_packages()]
    assert names == ["racf_vm", "netpolicy"]
