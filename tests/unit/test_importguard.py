"""racf_vm.trust.importguard: a module whose file is not trusted is never executed."""

import os
import sys
import tempfile
from pathlib import Path

import pytest

from racf_vm.core.errors import RefusedError
from racf_vm.trust import importguard

BASE = Path("/var/lib/racf-vm-test/importguard")


@pytest.fixture
def tree():
    if os.geteuid() != 0:
        pytest.fail("needs root (root-owned trees)")
    BASE.mkdir(mode=0o755, parents=True, exist_ok=True)
    d = Path(tempfile.mkdtemp(prefix="guard-", dir=BASE))
    os.chmod(d, 0o755)
    (d / "guardpkg").mkdir(mode=0o755)
    (d / "guardpkg" / "__init__.py").write_text("")
    (d / "guardpkg" / "good.py").write_text("VALUE = 1\n")
    (d / "guardpkg" / "evil.py").write_text(f"open({str(d / 'ran')!r}, 'w').close()\n")
    os.chmod(d / "guardpkg" / "evil.py", 0o666)
    sys.path.insert(0, str(d))
    saved = list(sys.meta_path)
    importguard.install()
    yield d
    sys.meta_path[:] = saved
    sys.path.remove(str(d))
    for name in [m for m in sys.modules if m.startswith("guardpkg")]:
        del sys.modules[name]
    import shutil

    shutil.rmtree(d)


def test_trusted_modules_import_and_untrusted_ones_never_run(tree):
    import guardpkg.good

    assert guardpkg.good.VALUE == 1
    with pytest.raises(RefusedError, match="evil.py is writable by others"):
        import guardpkg.evil  # noqa: F401
    assert not (tree / "ran").exists()


def test_stale_bytecode_of_another_owner_is_refused(tree):
    cache = tree / "guardpkg" / "__pycache__"
    cache.mkdir(mode=0o755)
    os.chmod(tree / "guardpkg" / "evil.py", 0o644)
    import importlib.util

    pyc = Path(importlib.util.cache_from_source(str(tree / "guardpkg" / "evil.py")))
    pyc.write_bytes(b"")
    os.chown(pyc, 2501, 2501)
    with pytest.raises(RefusedError, match="owned by uid 2501"):
        import guardpkg.evil  # noqa: F401
    assert not (tree / "ran").exists()


def test_install_is_idempotent_and_first_in_front_of_the_path_finder():
    import importlib.machinery

    saved = list(sys.meta_path)
    try:
        importguard.install()
        importguard.install()
        assert sys.meta_path.count(importguard.TrustedPathFinder) == 1
        i = sys.meta_path.index(importguard.TrustedPathFinder)
        assert sys.meta_path[i + 1] is importlib.machinery.PathFinder
    finally:
        sys.meta_path[:] = saved
