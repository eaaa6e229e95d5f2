"""The condor_starter stand-in (tests/starter/condor_starter.c) behaves like the real one."""

import json
import os
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.support import prereq

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]

# The job: report what it sees, as JSON on stdout.
JOB_PROBE = r"""
import json, os, sys
cg = {}
for line in open("/proc/self/cgroup"):
    n, ctrl, path = line.rstrip("\n").split(":", 2)
    for c in ctrl.split(","):
        cg[c or "v2"] = path
def read(p):
    try:
        return open(p).read().strip()
    except OSError:
        return None
print(json.dumps({
    "ids": [os.getuid(), os.geteuid(), os.getgid(), os.getegid(), sorted(os.getgroups())],
    "cwd": os.getcwd(), "env": dict(e.split("=", 1) for e in open("/proc/self/environ").read().split("\0") if e), "argv": sys.argv,
    "sid": os.getsid(0), "pid": os.getpid(), "ppid": os.getppid(),
    "fds": sorted(int(f) for f in os.listdir("/proc/self/fd")),
    "mem_limit": read(f"/sys/fs/cgroup/memory{cg.get('memory', '/-')}/memory.limit_in_bytes")
                 or read(f"/sys/fs/cgroup{cg.get('v2', '/-')}/../memory.max"),
    "cpu_shares": read(f"/sys/fs/cgroup/cpu{cg.get('cpu', '/-')}/cpu.shares")
                  or read(f"/sys/fs/cgroup{cg.get('v2', '/-')}/../cpu.weight"),
    "cgroups": cg,
}))
"""


@pytest.fixture(scope="module")
def starter(job_user):
    parent = Path("/var/cache/racf-vm-test")
    parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="starter-", dir=parent))
    os.chmod(root, 0o755)
    exe = root / "condor_starter"
    subprocess.run(["make", "-s", "-C", str(REPO / "tests/starter"), f"STARTER_OUT={exe}"],
                   check=True)
    (root / "job_probe.py").write_text(JOB_PROBE)
    os.chmod(root / "job_probe.py", 0o644)
    yield exe, root / "execute"
    shutil.rmtree(root)


def run_starter(starter, *opts, job, timeout=60):
    exe, execute = starter
    r = subprocess.run([str(exe), "--execute", str(execute), *opts, "--", *job],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    lines = r.stderr.decode().splitlines()
    sandbox = next(l.split("=", 1)[1] for l in lines if l.startswith("starter: sandbox="))
    return r, Path(sandbox), lines


def test_job_environment_sandbox_cgroup(starter, job_user):
    r, sandbox, lines = run_starter(
        starter, "--user", "racfjob", "--slot", "slot1_7", "--cluster", "42", "--proc", "3",
        "--memory", "300", "--cpus", "2", "--ad", 'VM_Command = "/bin/echo"',
        "--ad", 'VM_Args = "a \\"b\\" c"', "--machine-ad", "Foo = 17",
        "--env", "A=b=c", "--env", "OMP_NUM_THREADS=9", "--env", "_CONDOR_SLOT=forged",
        "--keep-sandbox", job=["/usr/bin/python3", str(starter[0].parent / "job_probe.py"), "x y", "'q'"])
    try:
        assert r.returncode == 0, r.stderr
        assert lines[-1] == "starter: job exited with status 0"
        out = json.loads(r.stdout)
        pid = int(sandbox.name.removeprefix("dir_"))
        assert sandbox.parent == starter[1]
        st = sandbox.stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (2501, 2501, 0o700)
        assert out["ids"] == [2501, 2501, 2501, 2501, [2501]]
        assert out["cwd"] == str(sandbox)
        assert out["sid"] == out["pid"] and out["ppid"] == pid
        assert out["fds"] == [0, 1, 2, 3]  # 3: listdir's own
        assert out["argv"][1:] == ["x y", "'q'"]
        s = str(sandbox)
        threads = {k: "2" for k in (
            "CUBACORES GOMAXPROCS JULIA_NUM_THREADS MKL_NUM_THREADS NUMEXPR_NUM_THREADS "
            "OMP_THREAD_LIMIT OPENBLAS_NUM_THREADS PYTHON_CPU_COUNT ROOT_MAX_THREADS "
            "TF_LOOP_PARALLEL_ITERATIONS TF_NUM_THREADS").split()}
        assert out["env"] == {
            "A": "b=c", "OMP_NUM_THREADS": "9", **threads,
            "BATCH_SYSTEM": "HTCondor", "_CONDOR_SCRATCH_DIR": s, "_CONDOR_JOB_IWD": s,
            "_CONDOR_JOB_AD": f"{s}/.job.ad", "_CONDOR_MACHINE_AD": f"{s}/.machine.ad",
            "_CONDOR_SLOT": "slot1_7", "_CONDOR_JOB_PIDS": "", "TMPDIR": s, "TEMP": s, "TMP": s,
            "HOME": "/nonexistent", "CONDOR_STARTER_PID": str(pid),
        }
        assert out["mem_limit"] == str(300 << 20)
        assert out["cpu_shares"] == "200"
        cg_name = f"condor_var_lib_condor_execute_slot1_7@{os.uname().nodename}"
        assert cg_name in json.dumps(out["cgroups"])
        for ctrl in ("memory", "cpu"):  # removed at the end (cgroup v1 host)
            if "memory" in out["cgroups"]:
                assert not Path(f"/sys/fs/cgroup/{ctrl}{out['cgroups'][ctrl]}").exists()
        for ad in (".job.ad", ".machine.ad"):
            st = (sandbox / ad).stat()
            assert (st.st_uid, st.st_gid) == (2501, 2501)
        job_ad = (sandbox / ".job.ad").read_text().splitlines()
        for line in ("ClusterId = 42", "ProcId = 3", 'Owner = "racfjob"',
                     'Cmd = "/usr/bin/python3"', f'Iwd = "{s}"', "RequestCpus = 2",
                     "RequestMemory = 300", 'VM_Command = "/bin/echo"', 'VM_Args = "a \\"b\\" c"'):
            assert line in job_ad
        assert any(l.startswith("Arguments = ") for l in job_ad)
        machine_ad = (sandbox / ".machine.ad").read_text().splitlines()
        for line in ("Cpus = 2", "Memory = 300", "SlotID = 1", "Foo = 17",
                     f'Name = "slot1_7@{os.uname().nodename}"'):
            assert line in machine_ad
    finally:
        shutil.rmtree(sandbox, ignore_errors=True)


def test_job_ad_parses_with_classad2(starter, job_user):
    classad2 = prereq.require_module("classad2", "the htcondor wheel")
    r, sandbox, _ = run_starter(starter, "--user", "racfjob", "--keep-sandbox",
                                "--ad", 'VM_Args = "x\\y \\"z\\""',
                                job=["/bin/true", "it's", "a b"])
    try:
        ad = classad2.parseOne((sandbox / ".job.ad").read_text())
        assert ad["VM_Args"] == 'x\\y "z"'
        assert ad["Arguments"] == "'it''s' 'a b'"
        assert ad["Cmd"] == "/bin/true"
    finally:
        shutil.rmtree(sandbox, ignore_errors=True)


def test_exit_status_and_signal(starter, job_user):
    r, sandbox, lines = run_starter(starter, "--user", "racfjob", job=["/bin/sh", "-c", "exit 7"])
    assert r.returncode == 7 and lines[-1] == "starter: job exited with status 7"
    assert not sandbox.exists()
    r, _, lines = run_starter(starter, "--user", "racfjob", job=["/bin/sh", "-c", "kill -9 $$"])
    assert r.returncode == 137 and lines[-1] == "starter: job killed by signal 9"


def test_vacate_graceful_then_hard(starter, job_user):
    trap = "trap 'echo got-TERM; exit 3' TERM; while :; do sleep 0.05; done"
    t = time.monotonic()
    r, _, lines = run_starter(starter, "--user", "racfjob", "--vacate-after", "0.3",
                              job=["/bin/sh", "-c", trap])
    assert r.returncode == 3 and b"got-TERM" in r.stdout
    assert time.monotonic() - t < 5
    ignore = "trap '' TERM; while :; do sleep 0.05; done"
    r, _, lines = run_starter(starter, "--user", "racfjob", "--vacate-after", "0.2",
                              "--vacate-timeout", "0.5", job=["/bin/sh", "-c", ignore])
    assert r.returncode == 137 and lines[-1] == "starter: job killed by signal 9"


def test_kill_after_and_family(starter, job_user):
    # The job leaves a grandchild behind; the stand-in kills its whole cgroup at the end.
    script = "sleep 300 & echo $!; exec sleep 300"
    t = time.monotonic()
    r, _, lines = run_starter(starter, "--user", "racfjob", "--kill-after", "0.3",
                              job=["/bin/sh", "-c", script])
    assert r.returncode == 137 and time.monotonic() - t < 5
    grandchild = int(r.stdout.split()[0])
    time.sleep(0.1)
    assert not Path(f"/proc/{grandchild}").exists() or \
        "Z" in Path(f"/proc/{grandchild}/stat").read_text().split()[2]


def test_stdio_files(starter, job_user):
    r, sandbox, _ = run_starter(starter, "--user", "racfjob", "--stdio", "files", "--keep-sandbox",
                                job=["/bin/sh", "-c", "echo out; echo err >&2"])
    try:
        assert r.returncode == 0 and r.stdout == b""
        assert (sandbox / "_condor_stdout").read_text() == "out\n"
        assert (sandbox / "_condor_stderr").read_text() == "err\n"
        assert (sandbox / "_condor_stdout").stat().st_uid == 2501
    finally:
        shutil.rmtree(sandbox, ignore_errors=True)


def test_sandbox_removal_does_not_follow_symlinks(starter, job_user, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("x")
    script = f"ln -s {victim} link; mkdir -p d/e; touch d/e/f"
    r, sandbox, _ = run_starter(starter, "--user", "racfjob", job=["/bin/sh", "-c", script])
    assert r.returncode == 0
    assert not sandbox.exists()
    assert (victim / "keep").exists()


def test_failure_cleans_up(starter, job_user):
    # An argument the old ClassAd syntax cannot hold: refused, and nothing is left behind.
    exe, execute = starter
    before = set(execute.iterdir()) if execute.exists() else set()
    r = subprocess.run([str(exe), "--execute", str(execute), "--user", "racfjob", "--",
                        "/bin/echo", "a\nb"], capture_output=True, timeout=30)
    assert r.returncode == 64 and b"contains a newline" in r.stderr
    assert set(execute.iterdir()) == before


def test_busy_slot_is_refused(starter, job_user):
    exe, execute = starter
    first = subprocess.Popen([str(exe), "--execute", str(execute), "--user", "racfjob",
                              "--slot", "slot5_5", "--", "/bin/sleep", "30"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    try:
        first.stderr.readline()
        time.sleep(0.3)  # let the job join its cgroup
        r, _, lines = run_starter(starter, "--user", "racfjob", "--slot", "slot5_5",
                                  job=["/bin/true"])
        assert r.returncode == 75 and "slot slot5_5 is busy" in lines[-1]
        assert first.poll() is None  # the first job was not touched
    finally:
        first.terminate()
        assert first.wait(timeout=30) == 128 + 15


@pytest.mark.parametrize("args", [
    ["--bogus", "--user", "racfjob", "--", "/bin/true"],
    ["--", "/bin/true"],                                     # no --user
    ["--user", "racfjob"],                                   # no job
    ["--user", "racfjob", "--memory", "lots", "--", "/bin/true"],
    ["--user", "racfjob", "--stdio", "tty", "--", "/bin/true"],
    ["--user", "racfjob", "--slot", "../x", "--", "/bin/true"],
])
def test_usage_errors(starter, args):
    r = subprocess.run([str(starter[0]), *args], capture_output=True, timeout=30)
    assert r.returncode == 64
    assert b"usage: condor_starter" in r.stderr or b"starter:" in r.stderr
