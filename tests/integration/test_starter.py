"""The condor_starter stand-in (tests/starter/condor_starter.c) behaves like the real one."""

import json
import os
import shlex
import shutil
import stat
import subprocess
import tempfile
import time
import uuid
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
touched = {}
if sys.argv[1:2] == ["--touch"]:  # create a file in /tmp and /var/tmp, as the job
    for d in ("/tmp", "/var/tmp"):
        try:
            open(os.path.join(d, sys.argv[2]), "x").close()
            touched[d] = True
        except OSError as e:
            touched[d] = str(e)
def scratch(d):
    st = os.stat(d)
    return {"dev": st.st_dev, "ino": st.st_ino, "uid": st.st_uid, "gid": st.st_gid,
            "mode": st.st_mode & 0o7777, "writable": os.access(d, os.W_OK),
            "entries": sorted(os.listdir(d)) if os.access(d, os.R_OK) else None}
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
    "touched": touched,
    "scratch": {d: scratch(d) for d in ("/tmp", "/var/tmp")},
}))
"""
SCRATCH = ("/tmp", "/var/tmp")


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


# --- MOUNT_UNDER_SCRATCH (HTCondor's default "/tmp,/var/tmp") ---------------------------

def _ident(path):
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _mounts_at(paths):
    with open("/proc/self/mountinfo") as f:
        return sorted(line for line in f if line.split()[4] in paths)


def _probe_job(starter, *opts, slot, touch=None):
    exe = str(starter[0].parent / "job_probe.py")
    job = ["/usr/bin/python3", exe] + (["--touch", touch] if touch else [])
    r, sandbox, lines = run_starter(starter, "--user", "racfjob", "--slot", slot,
                                    "--keep-sandbox", *opts, job=job)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout), sandbox, lines


def test_mount_under_scratch_default(starter, job_user):
    """By default the job's /tmp and /var/tmp are <sandbox>/tmp and <sandbox>/var/tmp: its
    own directories, 0700, owned and writable by it; the host's stay as they were."""
    name = f"racf-starter-{uuid.uuid4().hex}"
    host_before = {d: _ident(d) for d in SCRATCH}
    mounts_before = _mounts_at(SCRATCH)
    out, sandbox, _ = _probe_job(starter, slot="slot9_1", touch=name)
    try:
        assert out["touched"] == {"/tmp": True, "/var/tmp": True}
        for d in SCRATCH:
            inside = sandbox / d.lstrip("/")
            seen = out["scratch"][d]
            assert (seen["dev"], seen["ino"]) == _ident(inside), d
            assert (seen["uid"], seen["gid"], seen["mode"], seen["writable"]) == \
                (2501, 2501, 0o700, True), (d, seen)
            assert seen["entries"] == [name], (d, seen)
            st = (inside / name).stat()
            assert (st.st_uid, st.st_gid) == (2501, 2501)
            assert not Path(d, name).exists()  # nothing reached the host's directory
        st = (sandbox / "var").stat()  # parents as HTCondor makes them: the user's, 0700
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (2501, 0o700)
        assert {d: _ident(d) for d in SCRATCH} == host_before
        assert _mounts_at(SCRATCH) == mounts_before  # the job's mounts stayed its own
    finally:
        shutil.rmtree(sandbox, ignore_errors=True)
        for d in SCRATCH:  # only there if the job wrote to the host's directories
            Path(d, name).unlink(missing_ok=True)


def test_mount_under_scratch_disabled(starter, job_user):
    out, sandbox, _ = _probe_job(starter, "--mount-under-scratch", "", slot="slot9_2")
    try:
        for d in SCRATCH:
            assert (out["scratch"][d]["dev"], out["scratch"][d]["ino"]) == _ident(d), d
        assert not (sandbox / "tmp").exists() and not (sandbox / "var").exists()
    finally:
        shutil.rmtree(sandbox, ignore_errors=True)


def test_mount_under_scratch_list(starter, job_user):
    """A list of its own; like HTCondor, a directory missing on the host is skipped with a
    warning."""
    out, sandbox, lines = _probe_job(
        starter, "--mount-under-scratch", "/var/tmp/, /no-such-dir-racf", slot="slot9_3")
    try:
        assert (out["scratch"]["/tmp"]["dev"], out["scratch"]["/tmp"]["ino"]) == _ident("/tmp")
        seen = out["scratch"]["/var/tmp"]
        assert (seen["dev"], seen["ino"]) == _ident(sandbox / "var/tmp")
        assert not (sandbox / "tmp").exists() and not (sandbox / "no-such-dir-racf").exists()
        assert "starter: warning: /no-such-dir-racf does not exist; not mounted under scratch" \
            in lines
    finally:
        shutil.rmtree(sandbox, ignore_errors=True)


@pytest.mark.parametrize("bad", ["tmp", "/tmp,/var/../etc", "/", "/tmp/./x"])
def test_mount_under_scratch_bad_list(starter, job_user, bad):
    exe, execute = starter
    before = set(execute.iterdir()) if execute.exists() else set()
    r = subprocess.run([str(exe), "--execute", str(execute), "--user", "racfjob", "--slot",
                        "slot9_4", "--mount-under-scratch", bad, "--", "/bin/true"],
                       capture_output=True, timeout=30)
    assert r.returncode == 64
    assert b"is not a plain absolute path" in r.stderr
    assert (set(execute.iterdir()) if execute.exists() else set()) == before


def test_mount_under_scratch_does_not_propagate(starter, job_user):
    """Run from a namespace whose mounts are shared (as / is on a systemd host): the job's
    bind mounts stay in the job's own namespace."""
    exe, execute = starter
    count = "awk '$5 == \"/tmp\" || $5 == \"/var/tmp\"' /proc/self/mountinfo | wc -l"
    job = shlex.join(["/bin/sh", "-c", f"echo job=$({count})"])
    script = (f"echo before=$({count}); {exe} --execute {execute} --user racfjob --slot slot9_5 "
              f"-- {job} 2>/dev/null; echo status=$?; echo after=$({count})")
    r = subprocess.run(["unshare", "--mount", "--propagation", "shared", "--", "/bin/sh", "-c",
                        script], stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    lines = dict(line.split("=", 1) for line in r.stdout.decode().split())
    assert lines["status"] == "0", r
    assert int(lines["job"]) == int(lines["before"]) + 2, r  # the job has its two mounts
    assert lines["after"] == lines["before"], r  # and they stayed its own
