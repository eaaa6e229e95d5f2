"""Hostile-user suite: the real installed setuid test shim, run by the starter stand-in as
the unprivileged user racfjob, against security.md §5 (every row) and §0 (every rule).

Every test asserts the sysexits status, exactly one ``racf-vm:`` line on stderr (the
stand-in's own lines start with ``starter:``), and — through the autouse ``unchanged``
fixture — that the host is as before: no domain, no job dir, no firewall change, no chown
or write of trusted files, no new file of the job user or root in /tmp, /var/tmp, /dev/shm.
"""

import contextlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.hostile import snapshot
from tests.support import services, testenv

JOB_UID = testenv.JOB_USERS["racfjob"]
HOSTILE_DIR = testenv.IMAGE_CACHE / "hostile"  # root-owned 0755: crafted base images
PREFIX = "h-"  # catalog names of crafted entries


@pytest.fixture(scope="session")
def site():
    started = services.ensure_libvirtd()
    images = testenv.small_site(prepare=True)  # snapshots must not see a first preparation
    small = images["busybox"][0]
    if HOSTILE_DIR.exists():
        shutil.rmtree(HOSTILE_DIR)
    HOSTILE_DIR.mkdir(mode=0o755)
    os.chmod(HOSTILE_DIR, 0o755)
    yield {"images": images, "small": small}
    for p in testenv.TEST_CATALOG.glob(PREFIX + "*.toml"):
        p.unlink()
    shutil.rmtree(HOSTILE_DIR, ignore_errors=True)
    services.stop_libvirtd(started)


@pytest.fixture
def evil(site):
    """A directory of traps owned by the job user; every trap sprung leaves a file in
    ``markers/`` (mode 0777 so that both root and the user could write there)."""
    # outside /tmp: under MOUNT_UNDER_SCRATCH the job's /tmp is its own, not the host's
    d = Path(tempfile.mkdtemp(prefix="racf-hostile-evil-", dir=testenv.TEST_ROOT))
    os.chmod(d, 0o755)
    m = d / "markers"
    m.mkdir(mode=0o777)
    os.chmod(m, 0o777)
    touch = lambda name: f"open({str(m / name)!r}, 'w').close()\n"
    for mod in ("os", "site", "sitecustomize", "usercustomize", "racf_vm", "json", "encodings",
                "libvirt", "guestfs", "iptc", "evilbp"):
        (d / f"{mod}.py").write_text(touch(mod) + "def f(*a, **k): pass\n")
    (d / "evil.pth").write_text("import os; " + touch("pth"))
    (d / "startup.py").write_text(touch("startup"))
    for sub in ("lib/python3.11/site-packages", "userbase/lib/python3.11/site-packages"):
        (d / sub).mkdir(parents=True)
        (d / sub / "sitecustomize.py").write_text(touch("sitecustomize-" + sub.split("/")[0]))
    for prog in ("python3", "python3.11", "sh", "bash", "iptables", "iptables-restore", "nft",
                 "qemu-img", "qemu-system-x86_64", "virsh", "ldconfig", "supermin", "tar", "id",
                 "setpriv", "env"):
        p = d / prog
        p.write_text(f"#!/bin/sh\ntouch {m / prog}\n")
        p.chmod(0o755)
    for f in ("bashenv", "env.sh"):
        (d / f).write_text(f"touch {m / f}\n")
    (d / "tmp").mkdir()
    so_src = d / "evil.c"
    so_src.write_text('#include <fcntl.h>\n#include <unistd.h>\n__attribute__((constructor))'
                      f' static void f(void) {{ close(open("{m}/preload", O_CREAT|O_WRONLY, 0644)); }}\n')
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(d / "evil.so"), str(so_src)], check=True)
    shutil.copy(d / "evil.so", d / "libc.so.6")
    shutil.copy(d / "evil.so", d / "libxtables.so.12")
    for p in [d, *d.rglob("*")]:
        os.lchown(p, JOB_UID, JOB_UID)
    os.chmod(m, 0o777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(autouse=True)
def unchanged(request, site):
    """Nothing on the host changes during a hostile test (see tests/hostile/snapshot.py)."""
    exclude = [p for p in Path(tempfile.gettempdir()).glob("racf-hostile-*")]
    before = snapshot.Snapshot.take(exclude)
    yield before
    exclude = [p for p in Path(tempfile.gettempdir()).glob("racf-hostile-*")]
    snapshot.assert_unchanged(before, exclude)
    left = testenv.leftovers()
    if os.environ.get("RACF_HOSTILE_SHARED") == "1":
        left = []
    assert left == []


def markers(evil_dir: Path) -> list:
    return sorted(p.name for p in (evil_dir / "markers").iterdir())


def run(*args, keep_sandbox=False, timeout=300, **kw) -> testenv.JobResult:
    """One job through the installed test shim under the stand-in, as racfjob."""
    return testenv.run_job(*args, keep_sandbox=keep_sandbox, timeout=timeout, **kw)


def racf_lines(result) -> list:
    lines = result.stderr.splitlines()
    others = [l for l in lines if not l.startswith(("racf-vm:", "starter:"))]
    assert not others, f"unexpected stderr lines: {others}\n{result.stderr}"
    return [l for l in lines if l.startswith("racf-vm:")]


def assert_refused(result, status: int, *words: str) -> str:
    """Exit ``status`` and exactly one ``racf-vm:`` line containing every word."""
    lines = racf_lines(result)
    assert result.status == status, (result.status, result.stderr)
    assert len(lines) == 1, result.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


@contextlib.contextmanager
def catalog_entry(site, name: str, path, **kw):
    """A crafted catalog entry (root-owned, valid TOML) for the duration of a test."""
    assert name.startswith(PREFIX)
    f = testenv.TEST_CATALOG / f"{name}.toml"
    testenv.write_root_file(f, testenv.catalog_entry(name, site["small"], path=str(path), **kw))
    try:
        yield name
    finally:
        f.unlink()
        prepared = testenv.STATE_DIR / "prepared"  # a crafted image's layer goes with it
        for leftover in [*prepared.glob(f"{name}-*"), *prepared.glob(f".locks/{name}-*")]:
            leftover.unlink()


@contextlib.contextmanager
def mode_changed(path, mode=None, uid=None):
    """Temporarily chmod/chown a trusted path (restored exactly afterwards)."""
    st = os.lstat(path)
    try:
        if uid is not None:
            os.lchown(path, uid, -1)
        if mode is not None:
            os.chmod(path, mode)
        yield
    finally:
        os.lchown(path, st.st_uid, st.st_gid)
        os.chmod(path, stat_mode(st))


def stat_mode(st):
    import stat as _s

    return _s.S_IMODE(st.st_mode)
