"""End-to-end: infrastructure failures requeue the job (exit 75 + .job_wrapper_failure);
failures of the job's own that would repeat on any node end it (exit 65, no requeue note)."""

import contextlib
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.support import testenv

pytestmark = [pytest.mark.vm, pytest.mark.root]


@contextlib.contextmanager
def site_config(site, extra):
    testenv.write_site(site["images"], extra=extra)
    try:
        yield
    finally:
        testenv.write_site(site["images"])


def _assert_requeued(result, words):
    assert result.status == 75, result.stderr
    lines = [l for l in result.stderr.splitlines() if l.startswith("racf-vm:")]
    assert len(lines) == 1 and words in lines[0], result.stderr
    note = (result.sandbox / ".job_wrapper_failure").read_text()
    assert words in note
    assert (result.sandbox / ".job_wrapper_failure").stat().st_uid == testenv.JOB_USERS["racfjob"]


def _assert_ended(result, words):
    assert result.status == 65, result.stderr
    lines = [l for l in result.stderr.splitlines() if l.startswith("racf-vm:")]
    assert len(lines) == 1 and words in lines[0], result.stderr
    assert not (result.sandbox / ".job_wrapper_failure").exists(), "a job's own failure must not requeue it"


@contextlib.contextmanager
def small_jobs_disk(size: str):
    """The jobs directory on a tmpfs of ``size`` (standing in for a nearly full node disk)."""
    jobs = testenv.STATE_DIR / "jobs"
    subprocess.run(["/usr/bin/mount", "-t", "tmpfs", "-o", f"size={size},mode=0711", "tmpfs", str(jobs)],
                   check=True)
    try:
        yield jobs
    finally:
        subprocess.run(["/usr/bin/umount", str(jobs)], check=True)


def test_libvirtd_unreachable(site):
    with site_config(site, '\n[libvirt]\nuri = "qemu:///system?socket=/run/racf-vm-test-no-such-socket"\n'):
        result = testenv.run_job("busybox", "/bin/true")
    _assert_requeued(result, "libvirtd")


def test_guest_never_reports(site):
    # A boot bound far too short for any guest: the wrapper must give up, tear down, requeue.
    testenv.write_site(site["images"], boot_timeout=1)
    try:
        result = testenv.run_job("busybox", "/bin/true")
    finally:
        testenv.write_site(site["images"])
    _assert_requeued(result, "did not start the job")


def test_a_full_node_disk_stops_the_job_within_seconds(site):
    """Item 8: the node's disk fills while the job runs; QEMU pauses the guest on ENOSPC (its
    default), the wrapper notices within seconds, tears down and requeues the job, instead
    of waiting for the week-long job time limit. (A small tmpfs stands in for the disk.)"""
    with small_jobs_disk("400m") as jobs, site_config(site, "\n[limits]\nmax_output_bytes = 1048576\n"):
        cmd = testenv.job_command("busybox", "/bin/sh", [
            "-c", "echo ready; sleep 3; dd if=/dev/urandom of=big bs=1M count=150; echo wrote"])
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout.readline() == b"ready\n"
        with open(jobs / "filler", "wb") as f:  # the rest of the disk goes to someone else
            try:
                while True:
                    f.write(b"\0" * (1 << 20))
                    f.flush()
            except OSError:
                pass
        started = time.monotonic()
        out, err = proc.communicate(timeout=300)
        noticed = time.monotonic() - started
    sandbox = Path(re.search(r"^starter: sandbox=(.*)$", err.decode(), re.M).group(1))
    result = testenv.JobResult(proc.returncode, out.decode(), err.decode(), sandbox, noticed)
    _assert_requeued(result, "stopped on a disk error")
    assert b"wrote" not in out
    assert noticed < 120, noticed  # seconds, not the job time limit (a bound, not a timing goal)


def test_a_job_whose_disks_could_not_grow_is_not_started(site):
    """Issue 11 item 8: the state directory lacks room for what the job's disks may grow to
    (here a 1 GiB scratch disk on a 64 MiB filesystem): the job is requeued before any guest
    boots, and nothing of it is left."""
    with small_jobs_disk("64m") as jobs:
        result = testenv.run_job(wrapper_args=["-i", "busybox", "--scratch", "1G"], command="/bin/true")
        assert list(jobs.iterdir()) == []
    _assert_requeued(result, "may need")
    assert "the job's disks" in result.stderr
    assert testenv.leftovers() == []


def test_the_site_time_limit_ends_the_job_without_requeue(site):
    """Issue 11 item 13: a job past the site's time limit would be past it on every node."""
    with site_config(site, "job = 15\n"):  # lands in the [timeouts] section
        result = testenv.run_job("busybox", "/bin/sh", ["-c", "echo started; sleep 600"])
    _assert_ended(result, "ran longer than the site limit of 15s")
    assert result.stdout == "started\n"


def test_output_over_the_site_cap_ends_the_job_without_requeue(site):
    """Issue 11 item 13: output over the cap would be over it on every node; none of it comes back."""
    with site_config(site, "\n[limits]\nmax_output_bytes = 1048576\n"):
        result = testenv.run_job("busybox", "/bin/sh", ["-c", "dd if=/dev/zero of=big bs=1M count=3 2>/dev/null"])
    _assert_ended(result, "output files exceed the site limit of 1048576 bytes")
    assert not (result.sandbox / "big").exists()
