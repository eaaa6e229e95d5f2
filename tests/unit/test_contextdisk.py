"""racf_vm.guest.contextdisk: the job's context as the guest reads it, byte for byte."""

import io
import tarfile

import pytest

from racf_vm.condor.request import JobRequest
from racf_vm.config import LimitsConfig
from racf_vm.guest import contextdisk

HOSTILE = ["", "-c", "a b", "it's \"q\" \\", "$(id)", "l1\nl2", "trail\n\n", "../../etc/passwd",
           "\u00e9\u4e2d\U0001f600", "x" * 1000]


def request(**over):
    fields = dict(image="busybox", command="/bin/sh", args=tuple(HOSTILE),
                  env=(("A", "1"), ("B", "two words=x\n"), ("EMPTY", "")), user="racfjob",
                  uid=2501, gid=2502, workdir="/var/lib/condor/execute/dir_7", slot="slot1",
                  cluster=1, proc=0)
    fields.update(over)
    return JobRequest(**fields).validate(LimitsConfig())


ROOT = "/var/lib/condor/execute"


def disk(req, input_bytes=None, root=ROOT) -> bytes:
    out = io.BytesIO()
    write = None if input_bytes is None else (lambda f: f.write(input_bytes))
    size = contextdisk.write_context_disk(out, req, root, write)
    data = out.getvalue()
    assert size == len(data) and len(data) % 512 == 0
    return data


def test_control_files_are_the_request_verbatim():
    files, inputs = contextdisk.read_context_disk(disk(request()))
    assert inputs is None and files["job/input_offset"] == b"0" * 20 + b"\n"
    assert (files["job/uid"], files["job/gid"], files["job/user"]) == (b"2501\n", b"2502\n", b"racfjob\n")
    assert files["job/workdir"] == b"/var/lib/condor/execute/dir_7\n"
    assert files["job/workdir_root"] == b"/var/lib/condor/execute\n"
    argv = [files[f"job/argv/{i:04d}"].decode() for i in range(len(HOSTILE) + 1)]
    assert argv == ["/bin/sh", *HOSTILE] and f"job/argv/{len(HOSTILE) + 1:04d}" not in files
    assert [files[f"job/env/{i:04d}"] for i in range(3)] == [b"A=1", b"B=two words=x\n", b"EMPTY="]


def test_only_fixed_names_in_the_archive():
    """No name in the archive comes from the user: values are contents, never names."""
    names = [m.name for m in tarfile.open(fileobj=io.BytesIO(disk(request())))]
    assert all(n.startswith("job/") and ".." not in n for n in names)
    assert {n.split("/")[1] for n in names} == {"uid", "gid", "user", "workdir", "workdir_root", "argv", "env",
                                                 "input_offset"}


def test_empty_environment_and_no_arguments():
    files, _ = contextdisk.read_context_disk(disk(request(args=(), env=())))
    assert not [n for n in files if n.startswith(("job/env/", "job/argv/0001"))]
    assert files["job/argv/0000"] == b"/bin/sh"


def test_input_archive_starts_aligned_after_the_control_archive():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name in ("in/hello.txt", "sp ace/new\nline", "\u00fcml"):
            data = name.encode() * 3
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    data = disk(request(), buf.getvalue())
    files, inputs = contextdisk.read_context_disk(data)
    offset = int(files["job/input_offset"])
    assert offset % contextdisk.ALIGN == 0 and offset > 0
    with tarfile.open(fileobj=io.BytesIO(inputs)) as t:
        got = {m.name: t.extractfile(m).read() for m in t}
    assert got == {n: n.encode() * 3 for n in ("in/hello.txt", "sp ace/new\nline", "\u00fcml")}


@pytest.mark.parametrize("with_input", [False, True])
def test_offset_field_does_not_change_the_archive_size(with_input):
    a, off_a = contextdisk.control_archive(request(), ROOT, with_input)
    b, _ = contextdisk.control_archive(request(), ROOT, False)
    assert len(a) == len(b)
    assert (off_a > 0) == with_input


def test_workdir_root_is_carried_verbatim_and_moves_the_input():
    """The root is the request's own business to check (the host has); a longer root
    only moves the aligned input offset, and the input stays intact behind it."""
    long_root = "/" + "/".join(["d" * 200] * 20)
    payload = b"INPUT" * 1000
    for root in ("/", ROOT, long_root):
        files, inputs = contextdisk.read_context_disk(disk(request(), payload, root=root))
        assert files["job/workdir_root"] == root.encode() + b"\n"
        assert int(files["job/input_offset"]) % contextdisk.ALIGN == 0
        assert inputs.startswith(payload)


def test_maximum_sizes_fit():
    limits = LimitsConfig(max_args=64, max_arg_bytes=65536)
    big = request(args=tuple("y" * 65536 for _ in range(63)))
    big.validate(limits)
    files, _ = contextdisk.read_context_disk(disk(big))
    assert len(files) == 5 + 64 + 3 + 1 and files["job/argv/0063"] == b"y" * 65536
