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
for f in in/*; do [ "$f" = in/hello.txt ] || touch -- "$f"; done
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
        assert "in/hello.txt" not in members  # read, not changed: it does not come back
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


# -- what comes back: only what the job created or changed ------------------------------------

CHANGES = rb"""set -e
echo first > first.txt
echo more >> edit.txt
printf SAME > same.txt
chmod 600 mode.txt
mv moved.txt moved2.txt
touch -r keep.txt old.txt
cp -p keep.txt copy.txt
echo y > d/changed/y
mkdir -p new/dir emptynew
echo n > new/dir/n.txt
echo h > h1
ln h1 h2
ln -s keep.txt sym
stat -c '%u %g %a %n' "$PWD" "${PWD%/*}" "${PWD%/*/*}"
"""


def changes_input():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in [("keep.txt", b"keep"), ("edit.txt", b"edit\n"), ("same.txt", b"same"),
                           ("mode.txt", b"m"), ("moved.txt", b"mv"), ("old.txt", b"old"),
                           ("d/unchanged/x", b"x"), ("d/changed/z", b"z"), ("emptyin/", None)]:
            info = tarfile.TarInfo(name.rstrip("/"))
            info.mtime = 1600000000
            info.mode = 0o755 if data is None else 0o644
            if data is None:
                info.type = tarfile.DIRTYPE
                t.addfile(info)
            else:
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_only_what_the_job_created_or_changed_comes_back(small_image):
    """By ctime against a marker made just after the input was extracted: a write, a
    same-size rewrite, a chmod, a rename and an utime back to an old mtime all count, from
    the job's first millisecond on; untouched input files and directories left empty do
    not come back. A hard link comes back as two files (the host takes no links)."""
    ctx = qemu_direct.Context(uid=UID, gid=UID, user="racfjob", workdir=WORKDIR,
                              workdir_root=os.path.dirname(WORKDIR),
                              argv=[b"/bin/sh", b"-c", CHANGES], input_tar=changes_input())
    res = qemu_direct.run_job(small_image, ctx, timeout=120)
    assert res.status_lines == ["started", "exit 0"], res.console.decode(errors="replace")[-2000:]
    # the workdir root is made root-owned 0755 where absent, the workdir 0700 the user's
    assert res.stdout.decode().splitlines() == [
        f"{UID} {UID} 700 {WORKDIR}", "0 0 755 /var/lib/condor/execute", "0 0 755 /var/lib/condor"]
    with tarfile.open(fileobj=io.BytesIO(res.output)) as t:
        members = {m.name.lstrip("./").rstrip("/"): m for m in t.getmembers()}
        members.pop("", None)
        assert set(members) == {"first.txt", "edit.txt", "same.txt", "mode.txt", "moved2.txt", "old.txt",
                                "copy.txt", "d", "d/changed", "d/changed/y", "new", "new/dir",
                                "new/dir/n.txt", "h1", "h2", "sym"}
        assert t.extractfile(members["edit.txt"]).read() == b"edit\nmore\n"
        assert t.extractfile(members["same.txt"]).read() == b"SAME"
        assert members["old.txt"].mtime == members["copy.txt"].mtime == 1600000000
        assert members["h1"].isreg() and members["h2"].isreg()
        assert t.extractfile(members["h2"]).read() == b"h\n"
        assert members["sym"].issym()


# -- refusals: the command never runs ------------------------------------------------------

def refused(image, timeout=120, **over):
    fields = dict(uid=UID, gid=UID, user="racfjob", workdir=WORKDIR, argv=[b"/bin/sh", b"-c", b"echo RAN"])
    fields.update(over)
    res = qemu_direct.run_job(image, qemu_direct.Context(**fields), timeout=timeout)
    assert len(res.status_lines) == 1 and res.status_lines[0].startswith("error "), (
        res.status_lines, res.console.decode(errors="replace")[-2000:])
    assert res.stdout == b"" and res.output == b""
    return res.status_lines[0]


ROOT = os.path.dirname(WORKDIR)


@pytest.mark.parametrize("root,workdir,why", [
    (ROOT, "/etc/sudoers.d", "workdir /etc/sudoers.d is not in the workdir root " + ROOT),
    (ROOT, "/var/spool/cron/crontabs", "workdir /var/spool/cron/crontabs is not in the workdir root " + ROOT),
    (ROOT, ROOT + "/../../../../etc/cron.d", "bad workdir"),
    ("/var/lib/condor", WORKDIR, f"workdir {WORKDIR} is not one directory below the workdir root /var/lib/condor"),
    (ROOT + "/", WORKDIR, "bad workdir root"),
    ("var/lib/condor/execute", WORKDIR, "workdir root not absolute"),
    # the job's own against this image: "error job", so the host ends it without requeue
    ("/bin/sh", "/bin/sh/job", "job /bin/sh is a symbolic link in the image"),
    ("/bin/busybox", "/bin/busybox/job", "job /bin/busybox is not a directory in the image"),
    ("/etc", "/etc/inittab", "job workdir already exists in the image"),
])
def test_workdir_outside_its_root_is_refused(small_image, root, workdir, why):
    assert refused(small_image, workdir=workdir, workdir_root=root) == f"error {why}"


@pytest.mark.parametrize("uid,gid,user,why", [
    (65534, 2501, "racfjob", "job uid 65534 is the image account nobody"),
    (UID, 65534, "racfjob", "job gid 65534 is the primary group of the image account nobody"),
    (UID, UID, "nobody", "job user name nobody is taken by uid 65534 in the image"),
])
def test_image_accounts_with_more_rights_are_refused(small_image, uid, gid, user, why):
    assert refused(small_image, uid=uid, gid=gid, user=user) == f"error {why}"


@pytest.mark.slow
@pytest.mark.parametrize("over,why", [
    (dict(workdir_root="/var/run", workdir="/var/run/sudo"), "job /var/run is a symbolic link in the image"),
    (dict(gid=27), "job gid 27 is the image group sudo"),
])
def test_debian_refusals(over, why):
    needs_root()
    assert refused(build.build("debian"), timeout=240, **over) == f"error {why}"
