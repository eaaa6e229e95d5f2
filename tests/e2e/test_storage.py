"""End-to-end: --scratch, --data, --export-scratch through the real shim (issue 12), and the
VM having the slot's size."""

import os
import subprocess
from pathlib import Path

import pytest

from tests.support import testenv

pytestmark = [pytest.mark.vm, pytest.mark.root]

UID = testenv.JOB_USERS["racfjob"]
SHIM = str(testenv.SHIM)


def _job(wrapper_args, script, **kw):
    return testenv.run_job(wrapper_args=["-i", "busybox", *wrapper_args], command="/bin/sh",
                           args=["-c", script], **kw)


def _racf_lines(result):
    return [l for l in result.stderr.splitlines() if l.startswith("racf-vm:")]


def _qemu_img_info(path: Path) -> str:
    return subprocess.run(["/usr/bin/qemu-img", "info", "-f", "qcow2", str(path)], check=True,
                          capture_output=True, text=True).stdout


def test_scratch_disk_mounted_for_the_user_and_exported(site):
    script = ("stat -c '%u %a' /scratch; "
              "awk '$2 == \"/scratch\" {s = $4} $2 == \"/tmp\" {t = $4} END {print \"/scratch \" s; print \"/tmp \" t}' /proc/mounts; "
              "dd if=/dev/zero of=/scratch/big bs=1M count=20 2>/dev/null; echo kept > /scratch/result; "
              "echo t > /tmp/t && ls /scratch/.tmp; df -k /scratch | tail -1 | awk '{print $2}'")
    r = _job(["--scratch", "100M", "--export-scratch"], script)
    try:
        assert r.status == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[0] == f"{UID} 755"
        mounts = dict(l.split(" ", 1) for l in lines[1:3])
        for point in ("/scratch", "/tmp"):  # /tmp lives on the scratch disk when there is one
            assert {"nosuid", "nodev", "rw"} <= set(mounts[point].split(",")), mounts
        assert lines[3] == "t"
        assert 90_000 < int(lines[4]) <= 102_400  # the size asked for (less the filesystem's own)
        export = r.sandbox / "scratch.qcow2"
        st = export.stat()
        assert (st.st_uid, st.st_gid) == (UID, UID)
        assert "file format: qcow2" in _qemu_img_info(export)
        assert st.st_size < 20 << 20  # compact: 20 MiB of zeros do not come back as 20 MiB
    finally:
        subprocess.run(["rm", "-rf", str(r.sandbox)])


def test_two_job_chain_scratch_export_becomes_data(site):
    """Job 1 exports its scratch; job 2 brings it as --data and reads what job 1 wrote,
    read-only; job 3 opens it read-write, and its export replaces the file."""
    first = _job(["--scratch", "64M", "--export-scratch"], "echo from-job-1 > /scratch/result")
    try:
        assert first.status == 0, first.stderr
        image = first.sandbox / "scratch.qcow2"
        bring = f"cp {image} data.qcow2 && exec {SHIM} -i busybox --data data.qcow2"
        second = testenv.run_job(command="/bin/sh", job_argv=["/bin/sh", "-c", bring], args=[
            "-c", "cat /data/result; echo x > /data/new 2>/dev/null || echo read-only; "
                  "grep ' /data ' /proc/mounts | cut -d' ' -f4"])
        assert second.status == 0, second.stderr
        out = second.stdout.splitlines()
        assert out[0] == "from-job-1" and out[1] == "read-only"
        assert {"ro", "nosuid", "nodev"} <= set(out[2].split(","))
        rw = f"cp {image} data.qcow2 && exec {SHIM} -i busybox --data data.qcow2:/data:rw --export-scratch"
        third = testenv.run_job(command="/bin/sh", job_argv=["/bin/sh", "-c", rw],
                                args=["-c", "echo from-job-3 >> /data/result"])
        assert third.status == 0, third.stderr
        exported = third.sandbox / "data.qcow2"
        assert exported.stat().st_uid == UID
        assert "backing file" not in _qemu_img_info(exported)  # flattened: stands on its own
        for r in (second, third):
            subprocess.run(["rm", "-rf", str(r.sandbox)])
    finally:
        subprocess.run(["rm", "-rf", str(first.sandbox)])


@pytest.mark.parametrize("args, words", [
    (["--scratch", "0"], "more than zero"),
    (["--scratch", "-1G"], "not a size"),
    (["--scratch", "lots"], "not a size"),
    (["--scratch", "100T"], "site limit"),
    (["--scratch", "1G:scratch"], "must be absolute"),
    (["--scratch", "1G:/data/../etc"], "not a plain"),
    (["--scratch", "1G:/"], "not a plain"),
    (["--scratch", "1G:/etc"], "hide part of the system"),
    (["--scratch", "1G:/usr"], "hide part of the system"),
    (["--data", "missing.qcow2"], "not in the job's sandbox"),
    (["--data", "blob"], "name the format"),
    (["--export-scratch"], "needs --scratch"),
])
def test_bad_storage_requests_are_refused_before_anything_is_made(site, args, words):
    r = _job(args, "echo should-not-run")
    lines = _racf_lines(r)
    assert r.status == 64 and len(lines) == 1 and words in lines[0], r.stderr
    assert "should-not-run" not in r.stdout
    assert testenv.leftovers() == []


def test_scratch_path_hiding_the_working_directory_is_refused(site):
    r = _job(["--scratch", "1G:/var"], "true")  # the sandbox lives under /var
    assert r.status == 64 and "hide part of the system" in _racf_lines(r)[0]


@pytest.mark.parametrize("make, name, words", [
    ("ln -s /etc/shadow data.img", "data.img", "cannot open"),
    ("mkfifo data.img", "data.img", "not a regular file"),
    ("/usr/bin/qemu-img create -q -f qcow2 -F raw -b /etc/shadow -u data.qcow2 64M", "data.qcow2", "backing file"),
    ("/usr/bin/qemu-img create -q -f qcow2 data.qcow2 64M && cp data.qcow2 data.img", "data.img",
     "declared raw but it starts with a qcow2 header"),
])
def test_hostile_data_files_are_refused_before_anything_is_made(site, make, name, words):
    job = f"{make} && exec {SHIM} -i busybox --data {name}"
    r = testenv.run_job(job_argv=["/bin/sh", "-c", job])
    lines = _racf_lines(r)
    assert r.status == 64 and len(lines) == 1 and words in lines[0], r.stderr
    assert testenv.leftovers() == []


def test_a_device_as_data_file_is_refused(site):
    job = f"while [ ! -e dev.img ]; do sleep 0.1; done; exec {SHIM} -i busybox --data dev.img"
    cmd = testenv.job_command(job_argv=["/bin/sh", "-c", job])
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sandbox = Path(proc.stderr.readline().strip().split("=", 1)[1])
    os.mknod(sandbox / "dev.img", 0o666 | 0o020000, os.makedev(1, 3))  # /dev/null's numbers
    out, err = proc.communicate(timeout=120)
    lines = [l for l in err.splitlines() if l.startswith("racf-vm:")]
    assert proc.returncode == 64 and "not a regular file" in lines[0], err


def test_a_data_file_over_the_limit_is_refused(site):
    images = site["images"]
    testenv.write_site(images, extra="\n[limits]\nmax_data_bytes = 1048576\n")
    try:
        job = f"dd if=/dev/zero of=big.img bs=1M count=2 2>/dev/null && exec {SHIM} -i busybox --data big.img"
        r = testenv.run_job(job_argv=["/bin/sh", "-c", job])
    finally:
        testenv.write_site(images)
    assert r.status == 64 and "larger than the site limit of 1 MiB" in _racf_lines(r)[0], r.stderr


def test_the_vm_has_the_slots_size(site):
    """Issue 12 items 6 and 4: the guest's CPUs and memory are the stand-in starter's cgroup
    limits; with no scratch disk, /tmp is a tmpfs of a quarter of that memory."""
    r = testenv.run_job("busybox", "/bin/sh", ["-c", "grep -c ^processor /proc/cpuinfo; "
                                                     "awk '/MemTotal/ {print $2}' /proc/meminfo; "
                                                     "awk '$2 == \"/tmp\" {t = $3 \" \" $4} END {print t}' /proc/mounts; "  # the top one
                                                     "df -k /tmp | tail -1 | awk '{print $2}'"],
                        cpus=2, memory_mib=1024)
    assert r.status == 0, r.stderr
    lines = r.stdout.splitlines()
    cpus, mem_kib = int(lines[0]), int(lines[1])
    assert cpus == 2
    assert 900 * 1024 < mem_kib <= 1024 * 1024  # the kernel keeps a little for itself
    fstype, options = lines[2].split()
    assert fstype == "tmpfs" and {"nosuid", "nodev"} <= set(options.split(",")), lines[2]
    assert abs(int(lines[3]) - mem_kib // 4) <= 4, (lines[3], mem_kib)
