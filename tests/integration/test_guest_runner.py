"""The guest runner (images.d/guest/runner.sh) inside real guests, booted with bare QEMU (TCG).

The image is prepared once by the product (runner and hook in a layer, libguestfs as the
preparation account); each test writes its context disk with the product's own writer and
boots a guest (~3-5 s for the small busybox image, longer for the Debian/systemd one).
"""
import io
import os
import tarfile

import pytest

from tests.images import build, qemu_direct

pytestmark = [pytest.mark.vm, pytest.mark.root]

UID = 2501
WORKDIR = "/var/lib/condor/execute/dir_4242"
ARGS = [b"a b", b"it's \"q\" \\", b"$(id)", b"l1\nl2", b"trail\n\n", b"", b"-l", b"*"]
ENV = [b"RACF_T1=x y", b"RACF_T2=multi\nline\n", b"PATH=/usr/bin:/bin"]
SCRIPT = rb"""
for a in "$@"; do printf '<%s>' "$a"; done; printf '\n'
id -u
cat /proc/$$/environ > env.out
echo data > out.txt
cat in/hello.txt
sleep 1000 &
echo to-stderr >&2
exit 3
"""


def needs_root():
    if os.geteuid() != 0:
        pytest.skip("needs root (guestfs, image build)")


@pytest.fixture(scope="module")
def small_image():
    needs_root()
    return build.build("small")


HOSTILE_NAMES = ["in/sp ace", "in/new\nline", "in/-leading-dash", "in/\u00fcml\u00e4ut \u4e2d",
                 "in/'quote\"", "in/$(id)"]


def input_tar():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in [("in/hello.txt", b"hello input\n")] + [(n, n.encode()) for n in HOSTILE_NAMES]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def roundtrip(image_dir):
    ctx = qemu_direct.Context(uid=UID, gid=UID, user="racfjob", workdir=WORKDIR,
                              argv=[b"/bin/sh", b"-c", SCRIPT, b"sh"] + ARGS, env=ENV,
                              input_tar=input_tar())
    res = qemu_direct.run_job(image_dir, ctx, timeout=240)
    print("timings", res.timings)
    assert res.status_lines == ["started", "exit 3"], res.console.decode(errors="replace")[-3000:]
    expected = b"".join(b"<" + a + b">" for a in ARGS) + b"\n" + b"%d\n" % UID
    assert res.stdout == expected + b"hello input\n"
    assert res.stderr == b"to-stderr\n"
    with tarfile.open(fileobj=io.BytesIO(res.output)) as t:
        members = {m.name.lstrip("./").rstrip("/"): m for m in t.getmembers()}
        out = members["out.txt"]
        assert (out.uid, out.gid) == (UID, UID)
        assert t.extractfile(out).read() == b"data\n"
        assert t.extractfile(members["in/hello.txt"]).read() == b"hello input\n"
        for name in HOSTILE_NAMES:  # names from the sandbox arrive and come back as they were
            assert t.extractfile(members[name]).read() == name.encode(), name
        # the job's initial environment is exactly the requested one
        assert t.extractfile(members["env.out"]).read() == b"".join(e + b"\0" for e in ENV)
    return res


def test_job_roundtrip_small(small_image):
    roundtrip(small_image)


def test_empty_environment_and_many_large_arguments(small_image):
    args = [b"%04d" % i + b"x" * 4096 for i in range(200)]
    ctx = qemu_direct.Context(uid=UID, gid=UID, user="racfjob", workdir=WORKDIR, env=[],
                              argv=[b"/bin/sh", b"-c", b'cat /proc/$$/environ | wc -c; echo $#; '
                                    b'for a in "$@"; do printf "%s" "$a"; done | md5sum', b"sh"] + args)
    res = qemu_direct.run_job(small_image, ctx, timeout=120)
    assert res.status_lines == ["started", "exit 0"], res.console.decode(errors="replace")[-2000:]
    import hashlib

    lines = res.stdout.decode().split()
    assert lines[:2] == ["0", "200"]  # nothing in the environment, every argument there
    assert lines[2] == hashlib.md5(b"".join(args)).hexdigest()


def test_uid0_refused_by_runner(small_image):
    ctx = qemu_direct.Context(uid=0, gid=0, user="root", workdir="/tmp/job",
                              argv=[b"/bin/sh", b"-c", b"echo should-not-run"])
    res = qemu_direct.run_job(small_image, ctx, timeout=120)
    assert len(res.status_lines) == 1 and res.status_lines[0].startswith("error ")
    assert "uid 0" in res.status_lines[0]
    assert res.stdout == b"" and res.output == b""


def test_killed_by_signal_is_128_plus_sig(small_image):
    ctx = qemu_direct.Context(uid=UID, gid=UID, user="racfjob", workdir=WORKDIR,
                              argv=[b"/bin/sh", b"-c", b"kill -9 $$"])
    res = qemu_direct.run_job(small_image, ctx, timeout=120)
    assert res.status_lines == ["started", "exit 137"]


@pytest.mark.slow
def test_job_roundtrip_debian_systemd():
    needs_root()
    image = build.build("debian")
    roundtrip(image)
