"""End-to-end: infrastructure failures requeue the job (exit 75 + .job_wrapper_failure)."""

import contextlib

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
