import io
import os
import socket
import tarfile

import pytest

from racf_vm.condor import sandbox as sandbox_io
from racf_vm.core.errors import UsageError

CAP = 1 << 20
NO_MANIFEST = ()


def _tar(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(data)
                info.mode = 0o640
                tar.addfile(info, io.BytesIO(data))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
                         "chr": tarfile.CHRTYPE, "blk": tarfile.BLKTYPE, "fifo": tarfile.FIFOTYPE}[kind]
            if kind in ("symlink", "hardlink"):
                info.linkname = data
            if kind in ("chr", "blk"):
                info.devmajor, info.devminor = 1, 3
            tar.addfile(info)
    buf.seek(0)
    return buf


def _extract(tar, dst, manifest=NO_MANIFEST, cap=CAP):
    return sandbox_io.extract_output_tar(tar, str(dst), manifest, cap)


def _sandbox(tmp_path, files):
    box = tmp_path / "sandbox"
    box.mkdir()
    for name, data in files.items():
        (box / name).parent.mkdir(parents=True, exist_ok=True)
        (box / name).write_bytes(data)
    return box


def _manifest(box):
    return sandbox_io.write_input_tar(io.BytesIO(), str(box))["manifest"]


def test_round_trip_skips_condor_files(tmp_path):
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "a.txt").write_text("A")
    (src / "d" / "b.txt").write_text("B")
    (src / "_condor_stdout").write_text("not me")
    os.symlink("/etc/passwd", src / "link")
    buf = io.BytesIO()
    sent = sandbox_io.write_input_tar(buf, str(src))
    assert sent["entries"] == 3 and len(sent["manifest"]) == 2  # a manifest entry per regular file
    buf.seek(0)
    names = tarfile.open(fileobj=buf).getnames()
    assert sorted(names) == ["a.txt", "d", "d/b.txt"]
    dst = tmp_path / "dst"
    dst.mkdir()
    buf.seek(0)
    counts = _extract(buf, dst)
    assert counts["written"] == 2 and counts["bytes"] == 2
    assert (dst / "d" / "b.txt").read_text() == "B"


def test_hostile_members_are_skipped_or_refused(tmp_path):
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
    counts = _extract(tar, dst)
    assert (counts["written"], counts["skipped"], counts["refused"], counts["failed"]) == (1, 5, 2, 0)
    assert counts["first_refused"] == ["link: symbolic link", "hard: hard link"]
    assert sorted(os.listdir(dst)) == ["fine.txt"]
    assert not os.listdir(tmp_path / "outside")


def test_links_devices_and_fifos_are_refused_and_reported(tmp_path):
    """Only regular files and directories are ever made; the first five refusals are named."""
    dst = tmp_path / "sandbox"
    dst.mkdir()
    tar = _tar([
        ("a.txt", "file", b"A"),
        ("again", "hardlink", "a.txt"),       # a hard link to a member of the same archive
        ("null", "chr", None),
        ("disk", "blk", None),
        ("pipe", "fifo", None),
        ("d", "dir", None),
        ("d/sym", "symlink", "../a.txt"),      # relative, inside the sandbox: still refused
        ("d/b.txt", "file", b"B"),
    ])
    counts = _extract(tar, dst)
    assert (counts["written"], counts["refused"]) == (2, 5)
    assert counts["first_refused"] == ["again: hard link", "null: device", "disk: device",
                                       "pipe: fifo", "d/sym: symbolic link"]
    assert sorted(os.listdir(dst)) == ["a.txt", "d"] and os.listdir(dst / "d") == ["b.txt"]


def _gnu_sparse_member(name: str, data: bytes, realsize: int) -> bytes:
    """An old-GNU sparse ('S') member: ``data`` placed at the end of a ``realsize`` file."""
    info = tarfile.TarInfo(name)
    info.type = tarfile.GNUTYPE_SPARSE
    info.size = len(data)
    info.mode = 0o644
    hdr = bytearray(info.tobuf(format=tarfile.GNU_FORMAT))
    assert len(hdr) == 512
    hdr[386:398] = b"%011o\0" % (realsize - len(data))   # sparse map: (offset, numbytes)
    hdr[398:410] = b"%011o\0" % len(data)
    hdr[483:495] = b"%011o\0" % realsize
    hdr[148:156] = b" " * 8
    hdr[148:156] = b"%06o\0 " % sum(hdr)
    return bytes(hdr) + data + b"\0" * (-len(data) % 512)


def test_sparse_members_are_refused(tmp_path):
    """A sparse member declares a huge file it does not carry (old GNU and PAX 1.0 forms)."""
    dst = tmp_path / "sandbox"
    dst.mkdir()
    pax = io.BytesIO()
    with tarfile.open(fileobj=pax, mode="w", format=tarfile.PAX_FORMAT) as t:
        data = b"1\n%d\n6\n" % ((1 << 40) - 6)
        data += b"\0" * (-len(data) % 512) + b"sparse"
        info = tarfile.TarInfo("GNUSparseFile.0/big2")
        info.size = len(data)
        info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0",
                            "GNU.sparse.name": "big2", "GNU.sparse.realsize": str(1 << 40)}
        t.addfile(info, io.BytesIO(data))
        after = tarfile.TarInfo("after.txt")
        after.size = 5
        t.addfile(after, io.BytesIO(b"after"))
    archive = _gnu_sparse_member("big1", b"sparse", 1 << 32) + pax.getvalue()
    counts = _extract(io.BytesIO(archive), dst)
    assert counts["refused"] == 2 and counts["first_refused"] == ["big1: sparse file", "big2: sparse file"]
    assert os.listdir(dst) == ["after.txt"] and (dst / "after.txt").read_bytes() == b"after"


def test_symlinked_directories_anywhere_along_the_path_are_never_followed(tmp_path):
    dst = _sandbox(tmp_path, {"a/b/keep.txt": b"k"})
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, dst / "top")
    os.symlink(outside, dst / "a" / "b" / "link")
    os.symlink("../..", dst / "a" / "up")
    tar = _tar([
        ("top/x", "file", b"1"),
        ("top", "dir", None),
        ("a/b/link/x", "file", b"2"),
        ("a/b/link/deeper/x", "file", b"3"),
        ("a/b/link/newdir", "dir", None),
        ("a/up/outside/x", "file", b"4"),
        ("a/b/new.txt", "file", b"ok"),
    ])
    counts = _extract(tar, dst)
    assert os.listdir(outside) == []
    assert counts["conflicts"] == 6 and counts["written"] == 1 and counts["failed"] == 0
    assert counts["first_conflicts"][0] == "top/x: top is a symbolic link in the sandbox"
    assert all(os.path.islink(p) for p in (dst / "top", dst / "a/b/link", dst / "a/up"))
    assert (dst / "a/b/new.txt").read_bytes() == b"ok"


def test_existing_symlink_in_sandbox_is_not_followed(tmp_path):
    dst = tmp_path / "sandbox"
    dst.mkdir()
    target = tmp_path / "target"
    target.write_text("keep")
    os.symlink(target, dst / "out.txt")
    counts = _extract(_tar([("out.txt", "file", b"new"), ("ok", "file", b"y")]), dst)
    assert counts["conflicts"] == 1 and counts["first_conflicts"] == ["out.txt: a symbolic link in the sandbox"]
    assert counts["written"] == 1 and (dst / "ok").read_bytes() == b"y"
    assert target.read_text() == "keep" and os.path.islink(dst / "out.txt")


def test_an_entry_of_another_type_in_the_sandbox_stays(tmp_path):
    """Host wins on a type mismatch: nothing is removed or replaced, the member is a conflict."""
    dst = _sandbox(tmp_path, {"d/inner": b"i", "f": b"file"})
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(dst / "s"))
    try:
        tar = _tar([("d", "file", b"x"), ("f", "dir", None), ("f/x", "file", b"y"), ("s", "file", b"z")])
        counts = _extract(tar, dst, _manifest(dst))
    finally:
        sock.close()
    assert (counts["conflicts"], counts["written"], counts["failed"]) == (4, 0, 0)
    assert counts["first_conflicts"] == ["d: a directory in the sandbox", "f: f is a file in the sandbox",
                                         "f/x: f is a file in the sandbox", "s: a socket in the sandbox"]
    assert (dst / "d/inner").read_bytes() == b"i" and (dst / "f").read_bytes() == b"file"


def test_declared_size_beyond_the_data_leaves_nothing_behind(tmp_path):
    dst = tmp_path / "sandbox"
    dst.mkdir()
    whole = _tar([("first.txt", "file", b"1"), ("lie.bin", "file", b"x" * 5000)]).getvalue()
    cut = whole.index(b"x" * 5000) + 1000   # the header says 5000 bytes, 1000 arrive
    with pytest.raises(UsageError, match="damaged"):
        _extract(io.BytesIO(whole[:cut]), dst)
    assert os.listdir(dst) == ["first.txt"]


def test_a_declared_size_over_the_cap_touches_nothing(tmp_path):
    """A PAX size far above the cap (and above what the archive holds) stops before the
    sandbox's file is unlinked."""
    dst = _sandbox(tmp_path, {"big": b"host copy"})
    manifest = _manifest(dst)
    info = tarfile.TarInfo("big")
    info.size = 10   # the ustar field; the extended header below overrides it
    raw = info.tobuf(format=tarfile.PAX_FORMAT)
    ext = b"%d size=%d\n" % (len(b"size=%d\n" % (10 << 30)) + 3, 10 << 30)
    assert raw.count(b"size=") == 0 and len(ext) == int(ext.split()[0])
    pax = tarfile.TarInfo("././@PaxHeader")
    pax.type, pax.size = tarfile.XHDTYPE, len(ext)
    raw = (pax.tobuf(format=tarfile.USTAR_FORMAT) + ext.ljust(512, b"\0") + raw
           + b"0123456789".ljust(512, b"\0") + b"\0" * 1024)
    assert tarfile.open(fileobj=io.BytesIO(raw)).next().size == 10 << 30
    with pytest.raises(UsageError, match="exceed the site limit of 1000 bytes"):
        _extract(io.BytesIO(raw), dst, manifest, cap=1000)
    assert os.listdir(dst) == ["big"] and (dst / "big").read_bytes() == b"host copy"


def test_bytes_really_written_are_capped(tmp_path):
    dst = tmp_path / "sandbox"
    dst.mkdir()
    tar = _tar([(f"f{i}", "file", b"x" * 400) for i in range(5)])
    with pytest.raises(UsageError, match="exceed the site limit of 1000 bytes .2 file.s. written"):
        _extract(tar, dst, cap=1000)
    assert sorted(os.listdir(dst)) == ["f0", "f1"]   # the third would cross the cap: not made
    counts = _extract(_tar([(f"g{i}", "file", b"y" * 200) for i in range(5)]), dst, cap=1000)
    assert (counts["written"], counts["bytes"]) == (5, 1000)


def test_sandbox_file_changed_while_the_job_ran_keeps_the_host_version(tmp_path):
    """The observed loss: a log another process of the job appended to on the host came
    back as the guest's input-time copy. Now only files still as the input saw them are
    replaced; anything changed, replaced or created on the host meanwhile is a conflict."""
    dst = _sandbox(tmp_path, {"log.txt": b"line 1\n", "data.txt": b"old", "mode.txt": b"m",
                              "renamed.txt": b"r", "sub/deep.txt": b"d", "gone.txt": b"g"})
    manifest = _manifest(dst)
    with open(dst / "log.txt", "ab") as f:
        f.write(b"line 2 (appended on the host)\n")
    os.chmod(dst / "mode.txt", 0o600)
    (dst / "renamed.tmp").write_bytes(b"r")                 # same name, size and content
    st = os.stat(dst / "renamed.txt")
    os.utime(dst / "renamed.tmp", ns=(st.st_atime_ns, st.st_mtime_ns))  # ... and same mtime
    os.rename(dst / "renamed.tmp", dst / "renamed.txt")
    (dst / "created.txt").write_bytes(b"host")
    os.unlink(dst / "gone.txt")
    tar = _tar([(n, "file", b"guest " + n.encode()) for n in
                ("log.txt", "data.txt", "mode.txt", "renamed.txt", "sub/deep.txt", "created.txt",
                 "gone.txt", "new.txt")])
    counts = _extract(tar, dst, manifest)
    assert counts["conflicts"] == 4
    assert {c.split(":")[0] for c in counts["first_conflicts"]} == {"log.txt", "mode.txt", "renamed.txt",
                                                                    "created.txt"}
    assert (dst / "log.txt").read_bytes() == b"line 1\nline 2 (appended on the host)\n"
    assert (dst / "created.txt").read_bytes() == b"host" and (dst / "renamed.txt").read_bytes() == b"r"
    for name in ("data.txt", "sub/deep.txt", "gone.txt", "new.txt"):  # unchanged on the host, or absent
        assert (dst / name).read_bytes() == b"guest " + name.encode()
    assert counts["written"] == 4


def test_a_replaced_file_is_a_new_file_not_written_through(tmp_path):
    """An unchanged file is unlinked and created anew: a hard link the user keeps elsewhere
    still has the old bytes (writing through O_TRUNC would change it)."""
    dst = _sandbox(tmp_path, {"out.txt": b"old"})
    keep = tmp_path / "elsewhere"
    os.link(dst / "out.txt", keep)
    manifest = _manifest(dst)   # the link count is in the ctime, so after the link
    counts = _extract(_tar([("out.txt", "file", b"new")]), dst, manifest)
    assert counts["written"] == 1 and (dst / "out.txt").read_bytes() == b"new"
    assert keep.read_bytes() == b"old"


def test_without_a_manifest_no_existing_file_is_replaced(tmp_path):
    dst = _sandbox(tmp_path, {"a.txt": b"host"})
    counts = _extract(_tar([("a.txt", "file", b"guest"), ("b.txt", "file", b"guest")]), dst)
    assert (counts["conflicts"], counts["written"]) == (1, 1)
    assert (dst / "a.txt").read_bytes() == b"host" and (dst / "b.txt").read_bytes() == b"guest"


def test_damaged_archive_is_a_clear_error(tmp_path):
    with pytest.raises(UsageError, match="damaged"):
        _extract(io.BytesIO(b"\x00garbage" * 100), tmp_path)


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


def test_credentials_are_left_out_when_asked(tmp_path):
    import io
    import tarfile

    from racf_vm.condor import sandbox

    (tmp_path / "data.txt").write_text("data")
    (tmp_path / ".condor_creds").mkdir()
    (tmp_path / ".condor_creds" / "scitokens.use").write_text("token")
    (tmp_path / "x509up_u2501").write_text("proxy")
    (tmp_path / "proxy").mkdir()
    (tmp_path / "proxy" / "p.pem").write_text("pem")
    env = {"X509_USER_PROXY": str(tmp_path / "proxy" / "p.pem")}
    for withhold, expect in ((env, {"data.txt", "proxy"}),
                             (None, {"data.txt", "proxy", "proxy/p.pem", ".condor_creds",
                                     ".condor_creds/scitokens.use", "x509up_u2501"})):
        buf = io.BytesIO()
        sandbox.write_input_tar(buf, str(tmp_path), withhold)
        buf.seek(0)
        assert {m.name for m in tarfile.open(fileobj=buf)} == expect
