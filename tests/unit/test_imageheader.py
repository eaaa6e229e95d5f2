"""racf_vm.images.imageheader (base image validation), racf_vm.vm.workspace (job dir) and racf_vm.vm.disks (overlay)."""

import os
import shutil
import struct
import subprocess
import tempfile

import pytest

from racf_vm.core.errors import InternalError, RefusedError, TemporaryError
from racf_vm.images.imageheader import check_qcow2_header, validate_base_image
from racf_vm.vm import disks, workspace

QEMU_IMG = "/usr/bin/qemu-img"
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown, root-owned dirs)")
needs_qemu_img = pytest.mark.skipif(not os.path.exists(QEMU_IMG), reason="qemu-img missing")


@pytest.fixture
def root_dir():
    """A root-owned 0755 directory on a path whose every component is root-owned."""
    parent = "/run" if os.path.isdir("/run") and os.stat("/run").st_uid == 0 else None
    d = tempfile.mkdtemp(prefix="racf-unit-", dir=parent)
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def qcow2_header(
    version=3,
    backing=(0, 0),
    cluster_bits=16,
    size=1 << 20,
    crypt=0,
    incompat=0,
    header_len=112,
    compression=0,
    refcount_order=4,
    extensions=b"",
) -> bytes:
    h = b"QFI\xfb" + struct.pack(">IQIIQI", version, backing[0], backing[1], cluster_bits, size, crypt)
    h += struct.pack(">IQQIIQ", 0, 0x30000, 0x10000, 1, 0, 0)  # l1 size/offset, refcount table, snapshots
    h += struct.pack(">QQQII", incompat, 0, 0, refcount_order, header_len)
    h += bytes([compression]) + b"\0" * 7
    h = h[:header_len] if header_len < len(h) else h + b"\0" * (header_len - len(h))
    h += extensions + b"\0" * 8  # end-of-extensions marker
    return h + b"\0" * (4096 - len(h))


def write(path, data: bytes, mode=0o644) -> str:
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)
    return path


# --- pure header checks ------------------------------------------------------------


def test_crafted_good_v3():
    assert check_qcow2_header(qcow2_header(), 1 << 18) == 1 << 20


@pytest.mark.parametrize(
    "kwargs, why",
    [
        ({"version": 2, "header_len": 72}, "version 2"),
        ({"version": 4}, "version 4"),
        ({"backing": (0x1000, 10)}, "backing file"),
        ({"backing": (0, 10)}, "backing file"),
        ({"incompat": 0x04}, "external data file"),
        ({"incompat": 0x01}, "dirty"),
        ({"incompat": 0x02}, "corrupt"),
        ({"incompat": 0x10}, "unknown incompatible"),
        ({"incompat": 1 << 40}, "unknown incompatible"),
        ({"incompat": 0x08, "compression": 0}, "compression type 0"),
        ({"incompat": 0x08, "compression": 7}, "compression type 7"),
        ({"compression": 1}, "without its feature bit"),
        ({"crypt": 1}, "encrypted"),
        ({"cluster_bits": 8}, "cluster_bits"),
        ({"size": 0}, "virtual size"),
        ({"size": 1 << 60}, "virtual size"),
        ({"header_len": 100}, "header length"),
        ({"header_len": 113}, "header length"),
        ({"refcount_order": 7}, "refcount_order"),
        ({"extensions": struct.pack(">II", 0x44415441, 8) + b"/etc/pas"}, "extension 0x44415441"),
        ({"extensions": struct.pack(">II", 0xE2792ACA, 5) + b"raw\0\0\0\0\0"}, "extension 0xe2792aca"),
    ],
)
def test_crafted_bad_headers(kwargs, why):
    with pytest.raises(RefusedError, match=why):
        check_qcow2_header(qcow2_header(**kwargs), 1 << 18)


def test_zstd_compression_bit_allowed():
    assert check_qcow2_header(qcow2_header(incompat=0x08, compression=1), 1 << 18) == 1 << 20


def test_feature_table_extension_allowed():
    ext = struct.pack(">II", 0x6803F857, 48) + b"\0" * 48
    assert check_qcow2_header(qcow2_header(extensions=ext), 1 << 18)


@pytest.mark.parametrize("cut", [0, 3, 4, 50, 71, 72, 103])
def test_truncated_header(cut):
    with pytest.raises(RefusedError):
        check_qcow2_header(qcow2_header()[:cut], cut)


def test_extension_walk_is_bounded():
    runaway = qcow2_header(extensions=struct.pack(">II", 0x6803F857, 0xFFFFFFF0))
    with pytest.raises(RefusedError, match="past the first cluster"):
        check_qcow2_header(runaway, 1 << 18)


# --- files -------------------------------------------------------------------------


@needs_root
def test_crafted_file_good_and_bad(root_dir):
    good = write(os.path.join(root_dir, "good.qcow2"), qcow2_header())
    info = validate_base_image(good, "qcow2")
    assert info.format == "qcow2" and info.virtual_size == 1 << 20 and info.file_size == 4096
    bad = write(os.path.join(root_dir, "v2.qcow2"), qcow2_header(version=2, header_len=72))
    with pytest.raises(RefusedError, match="version 2"):
        validate_base_image(bad, "qcow2")
    with pytest.raises(RefusedError, match="truncated|magic"):
        validate_base_image(write(os.path.join(root_dir, "t.qcow2"), qcow2_header()[:90]), "qcow2")


@needs_root
@needs_qemu_img
@pytest.mark.parametrize("extra", [[], ["-o", "compression_type=zstd"]])
def test_qemu_img_v3_images_accepted(root_dir, extra):
    path = os.path.join(root_dir, "base.qcow2")
    subprocess.run([QEMU_IMG, "create", "-q", "-f", "qcow2", *extra, path, "64M"], check=True)
    os.chmod(path, 0o644)
    assert validate_base_image(path, "qcow2").virtual_size == 64 << 20


@needs_root
@needs_qemu_img
def test_qemu_img_v2_and_backed_images_refused(root_dir):
    v2 = os.path.join(root_dir, "v2.qcow2")
    subprocess.run([QEMU_IMG, "create", "-q", "-f", "qcow2", "-o", "compat=0.10", v2, "1M"], check=True)
    os.chmod(v2, 0o644)
    with pytest.raises(RefusedError, match="version 2"):
        validate_base_image(v2, "qcow2")
    backed = os.path.join(root_dir, "backed.qcow2")
    subprocess.run([QEMU_IMG, "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", v2, backed], check=True)
    os.chmod(backed, 0o644)
    with pytest.raises(RefusedError, match="backing file"):
        validate_base_image(backed, "qcow2")


@needs_root
def test_raw_base_with_qcow2_header_is_refused(root_dir):
    # A guest can write a qcow2 header (even one naming a backing file) into a raw disk;
    # a base image declared raw that looks like qcow2 is refused, never probed.
    evil = qcow2_header(backing=(0x200, 11)) + b"/etc/shadow"
    path = write(os.path.join(root_dir, "disk.raw"), evil)
    with pytest.raises(RefusedError, match="qcow2 header"):
        validate_base_image(path, "raw")


@needs_root
def test_symlink_refused(root_dir):
    target = write(os.path.join(root_dir, "good.qcow2"), qcow2_header())
    link = os.path.join(root_dir, "link.qcow2")
    os.symlink(target, link)
    with pytest.raises(RefusedError, match="cannot open it safely"):
        validate_base_image(link, "qcow2")


@needs_root
def test_non_root_owner_refused(root_dir):
    path = write(os.path.join(root_dir, "good.qcow2"), qcow2_header())
    os.chown(path, 2501, 2501)
    with pytest.raises(RefusedError, match="owned by uid 2501"):
        validate_base_image(path, "qcow2")


@needs_root
@pytest.mark.parametrize("mode", [0o664, 0o646, 0o666])
def test_writable_by_others_refused(root_dir, mode):
    path = write(os.path.join(root_dir, "good.qcow2"), qcow2_header(), mode)
    with pytest.raises(RefusedError, match="writable"):
        validate_base_image(path, "qcow2")


@needs_root
def test_not_regular_and_missing(root_dir):
    fifo = os.path.join(root_dir, "fifo")
    os.mkfifo(fifo, 0o644)
    with pytest.raises(RefusedError, match="regular"):
        validate_base_image(fifo, "raw")  # O_NONBLOCK: no hang on a FIFO
    with pytest.raises(RefusedError, match="regular"):
        validate_base_image(root_dir, "raw")
    with pytest.raises(TemporaryError, match="missing"):
        validate_base_image(os.path.join(root_dir, "nope"), "qcow2")
    with pytest.raises(RefusedError, match="empty"):
        validate_base_image(write(os.path.join(root_dir, "empty"), b""), "raw")


# --- job dir and overlay -----------------------------------------------------------


@needs_root
def test_make_job_dir(root_dir):
    path = workspace.make_job_dir(root_dir, "slot1-1.0-99-123")
    assert path == os.path.join(root_dir, "jobs", "slot1-1.0-99-123")
    for d in (os.path.dirname(path), path):
        st = os.lstat(d)
        assert st.st_uid == 0 and (st.st_mode & 0o7777) == 0o711
    with pytest.raises(InternalError, match="already exists"):
        workspace.make_job_dir(root_dir, "slot1-1.0-99-123")
    for bad in ("..", ".", "a/b", "", "x" * 300, "a\nb"):
        with pytest.raises(InternalError):
            workspace.make_job_dir(root_dir, bad)


@needs_root
def test_make_job_dir_refuses_untrusted_state_dir(root_dir):
    user_dir = os.path.join(root_dir, "user")
    os.mkdir(user_dir)
    os.chown(user_dir, 2501, 2501)
    with pytest.raises(RefusedError, match="owned by root"):
        workspace.make_job_dir(user_dir, "t")
    writable = os.path.join(root_dir, "w")
    os.mkdir(writable)
    os.chmod(writable, 0o777)
    with pytest.raises(RefusedError):
        workspace.make_job_dir(writable, "t")
    link = os.path.join(root_dir, "link")
    os.symlink(root_dir, link)
    with pytest.raises(RefusedError, match="symlink"):
        workspace.make_job_dir(link, "t")
    # A pre-planted jobs symlink is refused too.
    planted = os.path.join(root_dir, "planted")
    os.mkdir(planted)
    os.symlink(user_dir, os.path.join(planted, "jobs"))
    with pytest.raises(OSError):
        workspace.make_job_dir(planted, "t")


@needs_root
@needs_qemu_img
@pytest.mark.parametrize("fmt", ["qcow2", "raw"])
def test_create_overlay(root_dir, fmt):
    base = os.path.join(root_dir, "base." + fmt)
    subprocess.run([QEMU_IMG, "create", "-q", "-f", fmt, base, "16M"], check=True)
    os.chmod(base, 0o644)
    before = os.stat(base)
    job = workspace.make_job_dir(root_dir, "t1")
    path = disks.create_overlay(job, base, fmt, 64055, 64055)
    st = os.lstat(path)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (64055, 64055, 0o600)
    info = subprocess.run(
        [QEMU_IMG, "info", "-f", "qcow2", "--output=json", path], check=True, capture_output=True, text=True
    ).stdout
    assert f'"backing-filename": "{base}"' in info and f'"backing-filename-format": "{fmt}"' in info
    after = os.stat(base)
    assert (after.st_uid, after.st_mode, after.st_mtime_ns) == (before.st_uid, before.st_mode, before.st_mtime_ns)
    with pytest.raises(FileExistsError):
        disks.create_overlay(job, base, fmt, 64055, 64055)


@needs_root
@needs_qemu_img
def test_create_overlay_refuses_planted_entries(root_dir):
    base = os.path.join(root_dir, "base.qcow2")
    subprocess.run([QEMU_IMG, "create", "-q", "-f", "qcow2", base, "16M"], check=True)
    victim = write(os.path.join(root_dir, "victim"), b"precious")
    for i, plant in enumerate((lambda p: os.symlink(victim, p), lambda p: os.link(victim, p))):
        job = workspace.make_job_dir(root_dir, f"p{i}")
        plant(os.path.join(job, "overlay.qcow2"))
        with pytest.raises(FileExistsError):
            disks.create_overlay(job, base, "qcow2", 64055, 64055)
        assert open(victim, "rb").read() == b"precious"
        assert os.stat(victim).st_uid == 0


@needs_root
@needs_qemu_img
def test_create_overlay_failure_leaves_nothing(root_dir):
    job = workspace.make_job_dir(root_dir, "f")
    with pytest.raises(TemporaryError, match="qemu-img"):
        disks.create_overlay(job, os.path.join(root_dir, "missing.qcow2"), "qcow2", 64055, 64055)
    assert os.listdir(job) == []


def test_free_space_check(tmp_path):
    workspace.check_free_space(str(tmp_path), 1, "a test")
    with pytest.raises(TemporaryError, match="GiB free but the job's disks may need"):
        workspace.check_free_space(str(tmp_path), 1 << 60, "the job's disks")
