"""End-to-end: an untrusted image's job runs behind the NAT network, through the real shim.

What the guest can and cannot reach is proven with real packets in
tests/integration/test_netpolicy_guests.py; here the wrapper's own path: lease, rules and
reservation made before boot, the guest gets its reserved address, all removed after.
"""

import subprocess

import pytest

from tests.support import testenv

pytestmark = [pytest.mark.vm, pytest.mark.root]


def test_untrusted_job_gets_its_reserved_address_and_leaves_nothing(site):
    small = site["images"]["busybox"][0]
    images = dict(site["images"], **{"busybox-nat": (small, "untrusted")})
    testenv.write_site(images)
    try:
        script = "id -u; ip -4 -o addr show dev eth0"
        result = testenv.run_job("busybox-nat", "/bin/sh", ["-c", script])
    finally:
        testenv.write_site(site["images"])
    assert result.status == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == str(testenv.JOB_USERS["racfjob"])  # untrusted or not: never root
    assert "inet 10.213.0." in lines[1], result.stdout


CREDS_SCRIPT = "ls -a; env | grep -E '^(X509|BEARER|KRB5|_CONDOR_CREDS)' || echo no-credential-variables"
CREDS_ENV = {"X509_USER_PROXY": "x509up_u2501", "BEARER_TOKEN": "s3cr3t", "KRB5CCNAME": "FILE:krb5cc_2501",
             "_CONDOR_CREDS": ".condor_creds"}
CREDS_INPUTS = {"x509up_u2501": "PROXY", "krb5cc_2501": "KRB5", "data.txt": "DATA"}


def test_untrusted_guests_get_none_of_the_jobs_credentials(site):
    """Issue 11 item 6: an untrusted image runs code nobody vetted as root in its guest, so
    neither credential variables nor credential files reach it; a trusted image gets both
    (the catalog default, which `credentials = ...` changes)."""
    small = site["images"]["busybox"][0]
    testenv.write_site(dict(site["images"], **{"busybox-nat": (small, "untrusted")}))
    try:
        jail = testenv.run_job("busybox-nat", "/bin/sh", ["-c", CREDS_SCRIPT], env=CREDS_ENV,
                               inputs=CREDS_INPUTS)
        trusted = testenv.run_job("busybox", "/bin/sh", ["-c", CREDS_SCRIPT], env=CREDS_ENV,
                                  inputs=CREDS_INPUTS)
    finally:
        testenv.write_site(site["images"])
    assert jail.status == 0 and trusted.status == 0, (jail.stderr, trusted.stderr)
    seen = jail.stdout.split()
    assert "data.txt" in seen and "no-credential-variables" in seen
    assert not {"x509up_u2501", "krb5cc_2501"} & set(seen)
    assert "BEARER_TOKEN=s3cr3t" in trusted.stdout and "x509up_u2501" in trusted.stdout.split()


def _gc() -> str:
    gc = subprocess.run([testenv.PYTHON, "-m", "racf_vm.cli", "--config", str(testenv.TEST_CONFIG), "gc"],
                        capture_output=True, text=True, cwd="/", timeout=120)
    assert gc.returncode == 0, gc.stderr
    return gc.stdout


def test_gc_while_jobs_run_removes_nothing_of_theirs(site):
    """The periodic gc runs while jobs run: a live wrapper's domain, job directory, firewall
    rules and reservation are kept (their owner is alive), and the jobs finish normally,
    still reaching what they reached before the gc."""
    small = site["images"]["busybox"][0]
    images = dict(site["images"], **{"busybox-nat": (small, "untrusted")})
    testenv.write_site(images)
    # each job: ready, then run long enough for the other to boot and the gc to run
    script = "echo ready; sleep 40; ip -4 -o addr show dev eth0 2>/dev/null | grep -c inet; echo done"
    procs = []
    try:
        for slot, image in enumerate(("busybox", "busybox-nat"), start=1):
            cmd = testenv.job_command(image, "/bin/sh", ["-c", script], starter_opts=["--slot", f"slot{slot}_1"])
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    stdin=subprocess.DEVNULL)
            procs.append(proc)
            assert proc.stdout.readline().strip() == b"ready", proc.stderr.read(4000)
        before = testenv.leftovers()
        assert len([x for x in before if x.startswith("job dir")]) == 2, before
        report = _gc()
        assert report.startswith("removed 0 domain(s), 0 job dir(s), 0 job rule set(s), "
                                 "0 reservation(s)"), report
        assert testenv.leftovers() == before
        outs = [p.communicate(timeout=600) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()  # the stand-in vacates: the wrapper tears its VM down
                p.communicate(timeout=120)
        testenv.write_site(site["images"])
    for proc, (out, err) in zip(procs, outs):
        assert proc.returncode == 0, err
        assert out.decode().split()[-1] == "done", out
    assert outs[1][0].decode().split()[-2] == "1"  # the untrusted guest kept its address
    assert testenv.leftovers() == []


def test_a_firewall_reload_ends_the_untrusted_job(site):
    """Issue 11 item 10, the wrapper's side: while an untrusted guest runs, its wrapper checks
    its confinement every [timeouts] health seconds (netpolicy Lease.check); when the
    firewall is flushed under it, the guest is destroyed and the job ends with 75 (run it
    again) instead of running on unconfined. What the guest can reach in between is proven
    with packets in tests/integration/test_netpolicy_guests.py."""
    small = site["images"]["busybox"][0]
    images = dict(site["images"], **{"busybox-nat": (small, "untrusted")})
    testenv.write_site(images)
    try:
        cmd = testenv.job_command("busybox-nat", "/bin/sh", ["-c", "echo ready; sleep 300; echo survived"])
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        try:
            assert proc.stdout.readline().strip() == b"ready", proc.stderr.read(4000)
            # what a careless `nft flush ruleset` or firewalld reload does to our table
            subprocess.run(["/usr/sbin/nft", "delete", "table", "inet", "racf_vm"], check=True)
            out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    finally:
        testenv.write_site(site["images"])
    assert b"survived" not in out
    assert b"starter: job exited with status 75" in err, err
    assert b"protection is gone" in err, err
    assert testenv.leftovers() == []
