"""racf_vm.trust.pathtrust: HTCondor safefile semantics on crafted trees."""

import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

from racf_vm.core.errors import RefusedError
from racf_vm.trust.pathtrust import check_trusted_dir, check_trusted_file

USER = 2501  # racfjob; only the number matters for chown


@pytest.fixture
def base():
    """A fresh root-owned 0755 directory in a trusted place (not under sticky /tmp)."""
    parent = Path("/var/cache/racf-vm-test")
    parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    d = Path(tempfile.mkdtemp(prefix="pathtrust-", dir=parent))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d)


def mk(path: Path, *, mode=0o644, uid=0, gid=0, text="x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chown(path, uid, gid)
    os.chmod(path, mode)
    return path


def mkd(path: Path, *, mode=0o755, uid=0, gid=0) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, uid, gid)
    os.chmod(path, mode)
    return path


def refused(fn, path, *needles):
    with pytest.raises(RefusedError) as ei:
        fn(str(path))
    msg = str(ei.value)
    for n in needles:
        assert n in msg, msg
    assert "\n" not in msg
    return msg


@pytest.mark.root
def test_good_tree(base):
    f = mk(base / "etc" / "racf-vm.toml")
    check_trusted_file(str(f))
    check_trusted_dir(str(base / "etc"))
    check_trusted_file(str(base / "etc" / "." / ".." / "etc" / "racf-vm.toml"))


@pytest.mark.root
def test_group_writable_dir(base):
    d = mkd(base / "gw", mode=0o775, gid=USER)
    f = mk(d / "conf.toml")
    refused(check_trusted_file, f, f"{d} is writable by group")
    refused(check_trusted_dir, d, f"{d} is writable by group")


@pytest.mark.root
def test_group_writable_file(base):
    f = mk(base / "conf.toml", mode=0o664)
    refused(check_trusted_file, f, f"{f} is writable by group")


@pytest.mark.root
def test_world_writable_file(base):
    f = mk(base / "conf.toml", mode=0o646)
    refused(check_trusted_file, f, f"{f} is writable by others")


@pytest.mark.root
def test_other_owned_file(base):
    f = mk(base / "conf.toml", uid=USER, gid=USER)
    refused(check_trusted_file, f, f"{f} is owned by uid {USER}")


@pytest.mark.root
def test_other_owned_dir_in_the_middle(base):
    d = mkd(base / "a" / "user", uid=USER)
    f = mk(d / "b" / "conf.toml")
    refused(check_trusted_file, f, f"{d} is owned by uid {USER}")


@pytest.mark.root
def test_symlink_to_user_file(base):
    ud = mkd(base / "home", uid=USER, gid=USER)
    target = mk(ud / "evil.toml", uid=USER, gid=USER)
    link = base / "conf.toml"
    link.symlink_to(target)
    refused(check_trusted_file, link, f"{ud} is owned by uid {USER}")


@pytest.mark.root
def test_symlink_to_root_file_owned_by_user_in_root_dir(base):
    # The target is checked too, not only the directories on the way.
    target = mk(base / "real.toml", uid=USER)
    (base / "conf.toml").symlink_to("real.toml")
    refused(check_trusted_file, base / "conf.toml", f"{target} is owned by uid {USER}")


@pytest.mark.root
def test_good_symlinks_are_followed(base):
    real = mk(base / "v1" / "racf-vm.toml")
    (base / "current").symlink_to("v1")  # relative
    (base / "abs.toml").symlink_to(real)  # absolute
    (base / "up.toml").symlink_to("current/../v1/racf-vm.toml")
    check_trusted_file(str(base / "current" / "racf-vm.toml"))
    check_trusted_file(str(base / "abs.toml"))
    check_trusted_file(str(base / "up.toml"))
    check_trusted_dir(str(base / "current"))


@pytest.mark.root
def test_symlink_into_tmp(base):
    d = Path(tempfile.mkdtemp(prefix="racf-pathtrust-"))
    try:
        os.chmod(d, 0o755)
        target = mk(d / "conf.toml")
        (base / "conf.toml").symlink_to(target)
        refused(check_trusted_file, base / "conf.toml", "/tmp is a sticky world-writable")
    finally:
        shutil.rmtree(d)


@pytest.mark.root
def test_sticky_tmp_subtree():
    # Root-owned 0755 dir and 0644 file, but under /tmp: anyone could have made the name.
    d = Path(tempfile.mkdtemp(prefix="racf-pathtrust-", dir="/tmp"))
    try:
        os.chmod(d, 0o755)
        f = mk(d / "conf.toml")
        msg = refused(check_trusted_file, f, "/tmp is a sticky world-writable directory")
        assert "nothing under it is trusted" in msg
        refused(check_trusted_dir, d, "/tmp is a sticky")
    finally:
        shutil.rmtree(d)


@pytest.mark.root
def test_symlink_loop(base):
    (base / "a").symlink_to("b")
    (base / "b").symlink_to("a")
    refused(check_trusted_file, base / "a", "too many symlinks")


@pytest.mark.root
def test_wrong_kinds(base):
    f = mk(base / "f")
    refused(check_trusted_file, base, "is not a regular file")
    refused(check_trusted_dir, f, "is not a directory")
    refused(check_trusted_file, f / "x", f"{f} is not a directory")
    os.mkfifo(base / "fifo", 0o644)
    refused(check_trusted_file, base / "fifo", "is not a regular file")


@pytest.mark.root
def test_missing_and_relative(base):
    refused(check_trusted_file, base / "nope", f"cannot check {base / 'nope'}")
    refused(check_trusted_file, "etc/passwd", "is not absolute")


@pytest.mark.root
def test_real_system_paths():
    check_trusted_file("/etc/passwd")
    check_trusted_dir("/usr/bin")
    check_trusted_file("/bin/sh")  # /bin -> usr/bin on merged-/usr systems


# ---- with a fake lstat: no root needed ----

def fake_fs(entries):
    """entries: path -> (mode, uid) or ("link", target)."""

    def lstat(p):
        e = entries.get(p)
        if e is None:
            raise FileNotFoundError(2, "No such file or directory", p)
        if e[0] == "link":
            return os.stat_result((stat.S_IFLNK | 0o777, 0, 0, 1, 0, 0, 0, 0, 0, 0))
        mode, uid = e
        return os.stat_result((mode, 0, 0, 1, uid, 0, 0, 0, 0, 0))

    def readlink(p):
        return entries[p][1]

    return {"lstat": lstat, "readlink": readlink}


D, F = stat.S_IFDIR, stat.S_IFREG


def test_fake_tree():
    fs = fake_fs({
        "/": (D | 0o755, 0),
        "/etc": (D | 0o755, 0),
        "/etc/a.toml": (F | 0o644, 0),
        "/etc/link": ("link", "/srv/x.toml"),
        "/srv": (D | 0o1777, 0),
        "/srv/x.toml": (F | 0o644, 0),
    })
    check_trusted_file("/etc/a.toml", **fs)
    with pytest.raises(RefusedError, match="/srv is a sticky world-writable"):
        check_trusted_file("/etc/link", **fs)
    with pytest.raises(RefusedError, match="cannot check /etc/b"):
        check_trusted_file("/etc/b", **fs)


def test_fake_root_itself_untrusted():
    fs = fake_fs({"/": (D | 0o775, 0), "/f": (F | 0o644, 0)})
    with pytest.raises(RefusedError, match="untrusted path: / is writable by group"):
        check_trusted_file("/f", **fs)
