"""racf_vm.trust.starter.check_parent against real process trees (security.md §0.2, table §5 #15-19).

A probe (parent_probe.py) runs as root under different parents and reports the verdict.
"""

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
PY = "/opt/racf-vm/venv/bin/python"
TODO = "racf-vm must be run by HTCondor as a job's executable (transfer_executable = false)"


@pytest.fixture(scope="module")
def site(job_user):
    """A root-owned dir with a freshly built starter stand-in, the probe and an execute dir
    (the probe is copied: under the stand-in's private /tmp and /var/tmp a checkout there
    would be out of the job's sight)."""
    parent = Path("/var/cache/racf-vm-test")
    parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="parent-", dir=parent))
    os.chmod(root, 0o755)
    starter = root / "condor_starter"
    subprocess.run(["make", "-s", "-C", str(REPO / "tests/starter"), f"STARTER_OUT={starter}"],
                   check=True)
    shutil.copy(REPO / "tests/integration/parent_probe.py", root / "parent_probe.py")
    os.chmod(root / "parent_probe.py", 0o644)
    yield root, str(starter)
    shutil.rmtree(root)


def probe_cmd(root, starter, *extra):
    return [PY, "-I", str(root / "parent_probe.py"), starter, *extra]


def under_starter(root, exe, starter, *, env=(), preexec_fn=None, job_prefix=(), after_start=None):
    """Run the probe as the job (user root) of the stand-in ``exe``; return (verdict, pid)."""
    cmd = [exe, "--user", "root", "--execute", str(root / "execute"), "--slot", "slot9_9"]
    for e in env:
        cmd += ["--env", e]
    p = subprocess.Popen([*cmd, "--", *job_prefix, *probe_cmd(root, starter)], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=preexec_fn)
    first = p.stderr.readline().decode()
    assert first.startswith("starter: sandbox="), first
    if after_start:
        after_start()
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    return json.loads(out), p.pid


def refused(verdict, text):
    assert "refused" in verdict, verdict
    assert verdict["status"] == 77
    assert text in verdict["refused"], verdict["refused"]
    assert "\n" not in verdict["refused"]
    return verdict["refused"]


def test_accepted_under_starter(site):
    root, starter = site
    verdict, pid = under_starter(root, starter, starter)
    assert verdict == {"ok": pid, "ppid": pid}


def test_refused_under_shell(site):
    root, starter = site
    # "; exit" keeps the shell alive as the probe's parent (no exec optimisation).
    r = subprocess.run(["/bin/sh", "-c", '"$@"; exit $?', "sh", *probe_cmd(root, starter)],
                       capture_output=True, check=True)
    msg = refused(json.loads(r.stdout), "the parent process runs '/usr/bin/dash', not " + starter)
    assert msg.endswith(TODO)


def test_refused_under_copy_at_other_path(site):
    root, starter = site
    other = root / "elsewhere" / "condor_starter"
    other.parent.mkdir(exist_ok=True)
    shutil.copy2(starter, other)
    verdict, _ = under_starter(root, str(other), starter)
    refused(verdict, f"the parent process runs '{other}', not {starter}")


def test_refused_when_starter_replaced(site):
    root, starter = site
    # Own copy at its own path, so replacing it does not disturb the other tests.
    path = root / "upgraded" / "condor_starter"
    path.parent.mkdir(exist_ok=True)
    shutil.copy2(starter, path)
    flag = root / "replaced.flag"

    def upgrade():  # what a package upgrade does: a new inode renamed over the old path
        shutil.copy2(starter, str(path) + ".new")
        os.replace(str(path) + ".new", path)
        flag.touch()

    verdict, _ = under_starter(root, str(path), str(path), env=[f"PROBE_WAIT_FOR={flag}"],
                               after_start=upgrade)
    assert refused(verdict, "") == (
        "the condor_starter binary was replaced (shown as deleted); restart HTCondor on this node")


def test_refused_when_starter_real_uid_not_root(site, job_user):
    root, starter = site

    def ruid_user():  # real uid of the user, effective root: e.g. a setuid copy
        os.setresuid(job_user.pw_uid, 0, 0)

    verdict, _ = under_starter(root, starter, starter, preexec_fn=ruid_user)
    msg = refused(verdict, f"the parent condor_starter runs as uid {job_user.pw_uid}, not root")
    assert msg.endswith("racf-vm only works under a condor_starter started by root")


def test_refused_with_no_parent(site):
    root, starter = site
    # In a new pid namespace the probe is pid 1 and its parent pid reads as 0.
    r = subprocess.run(["unshare", "--pid", "--fork", *probe_cmd(root, starter)],
                       capture_output=True, check=True)
    msg = refused(json.loads(r.stdout), "the parent process is gone (parent pid 0)")
    assert msg.endswith(TODO)
    r = subprocess.run(["unshare", "--pid", "--fork", *probe_cmd(root, starter, "--allow-pid-ns-init")],
                       capture_output=True, check=True)
    refused(json.loads(r.stdout), "condor_pid_ns_init rule is not implemented")


def test_refused_in_other_user_namespace(site):
    root, starter = site
    # unshare without --fork execs in place: the parent is still the starter, but the
    # probe is in a new user namespace and cannot (and must not) vouch for it.
    verdict, _ = under_starter(root, starter, starter,
                               job_prefix=["/usr/bin/unshare", "--user", "--map-root-user"])
    msg = refused(verdict, "")
    assert ("cannot read the parent's program" in msg  # /proc access denied across userns
            or "the parent process is in another user namespace" in msg), msg


def test_the_working_directory_must_be_the_starters_sandbox():
    from racf_vm.core.errors import RefusedError
    from racf_vm.trust.starter import check_sandbox

    check_sandbox("/var/lib/condor/execute/dir_4242", "/var/lib/condor/execute", 4242)
    check_sandbox("/var/lib/condor/execute/dir_4242/scratch", "/var/lib/condor/execute", 4242)
    for bad in ("/etc/sudoers.d", "/var/lib/condor/execute/dir_4243", "/var/lib/condor/execute",
                "/var/lib/condor/execute/dir_4242/scratch/x", "/root/.ssh"):
        with pytest.raises(RefusedError, match="not the sandbox HTCondor made"):
            check_sandbox(bad, "/var/lib/condor/execute", 4242)
