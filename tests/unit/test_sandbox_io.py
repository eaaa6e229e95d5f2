import io
import os
import tarfile

import pytest

from racf_vm.condor import sandbox as sandbox_io
from racf_vm.core.errors import UsageError


def _tar(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(data)
                info.mode = 0o640
                tar.addfile(info, io.BytesIO(data))
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = data
                tar.addfile(info)
            elif kind == "hardlink":
                info.type = tarfile.LNKTYPE
                info.linkname = data
                tar.addfile(info)
    buf.seek(0)
    return buf


def test_round_trip_skips_condor_files(tmp_path):
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "a.txt").write_text("A")
    (src / "d" / "b.txt").write_text("B")
    (src / "_condor_stdout").write_text("not me")
    os.symlink("/etc/passwd", src / "link")
    buf = io.BytesIO()
    sandbox_io.write_input_tar(buf, str(src))
    buf.seek(0)
    names = tarfile.open(fileobj=buf).getnames()
    assert sorted(names) == ["a.txt", "d", "d/b.txt"]
    dst = tmp_path / "dst"
    dst.mkdir()
    buf.seek(0)
    counts = sandbox_io.extract_output_tar(buf, str(dst))
    assert counts["written"] == 2
    assert (dst / "d" / "b.txt").read_text() == "B"


def test_hostile_members_are_skipped(tmp_path):
    dst = tmp_path / "sandbox"
    dst.mkdir()
    (tmp_path / "outside").mkdir()
    tar = _tar(
        [
            ("../outside/evil", "file", b"x"),
            ("/abs/evil", "file", b"x"),
            ("link", "symlink", "/etc"),
            ("hard", "hardlink", "/etc/passwd"),
            ("_condor_stdout", "file", b"clobber"),
            (".job.ad", "file", b"clobber"),
            ("./ok/../ok.txt", "file", b"x"),
            ("./fine.txt", "file", b"fine"),
        ]
    )
    counts = sandbox_io.extract_output_tar(tar, str(dst))
    assert (counts["written"], counts["skipped"], counts["failed"]) == (1, 7, 0)
    assert sorted(os.listdir(dst)) == ["fine.txt"]
    assert not os.listdir(tmp_path / "outside")


def test_existing_symlink_in_sandbox_is_not_followed(tmp_path):
    dst = tmp_path / "sandbox"
    dst.mkdir()
    target = tmp_path / "target"
    target.write_text("keep")
    os.symlink(target, dst / "out.txt")
    counts = sandbox_io.extract_output_tar(_tar([("out.txt", "file", b"new"), ("ok", "file", b"y")]), str(dst))
    assert counts["failed"] == 1 and counts["first_failure"].startswith("out.txt:")
    assert counts["written"] == 1 and (dst / "ok").read_bytes() == b"y"
    assert target.read_text() == "keep"


def test_damaged_archive_is_a_clear_error(tmp_path):
    with pytest.raises(UsageError, match="damaged"):
        sandbox_io.extract_output_tar(io.BytesIO(b"\x00garbage" * 100), str(tmp_path))


def test_failure_file(tmp_path):
    sandbox_io.write_failure_file(str(tmp_path), "libvirtd down\n")
    assert (tmp_path / ".job_wrapper_failure").read_text() == "libvirtd down\n"


def test_archive_complete_only_with_end_blocks(tmp_path):
    whole = _tar([("a.txt", "file", b"x" * 700), ("d", "dir", None)]).getvalue()
    assert sandbox_io.archive_complete(io.BytesIO(whole))
    body = whole.rstrip(b"\0")
    for cut in (0, 100, 512, 1024, len(body), len(body) + 512):
        assert not sandbox_io.archive_complete(io.BytesIO(whole[:cut]))
    assert not sandbox_io.archive_complete(io.BytesIO(b"junk" * 200))
