"""End-to-end: real jobs through the starter stand-in, the setuid shim, libvirt and QEMU."""

import signal
import subprocess
import time

import pytest

from tests.support import testenv

pytestmark = [pytest.mark.vm, pytest.mark.root]

JOB_UID = testenv.JOB_USERS["racfjob"]


def _lines(text):
    return text.splitlines()


def test_success_identity_arguments_environment(site):
    script = 'id -u; for a in "$@"; do printf "<%s>\\n" "$a"; done; echo "MYVAR=$MYVAR"; pwd'
    args = ["-c", script, "sh", "two words", 'a "quoted" arg', "it's", "$(id)"]
    result = testenv.run_job("busybox", "/bin/sh", args, env={"MYVAR": "hello from the job"})
    assert result.status == 0, result.stderr
    out = _lines(result.stdout)
    assert out[0] == str(JOB_UID)
    assert out[1:5] == ["<two words>", '<a "quoted" arg>', "<it's>", "<$(id)>"]
    assert out[5] == "MYVAR=hello from the job"
    assert out[6] == str(result.sandbox)
    assert "racf-vm:" not in result.stderr


def test_nonzero_exit_status_and_stderr(site):
    result = testenv.run_job("busybox", "/bin/sh", ["-c", "echo to-stderr >&2; exit 3"])
    assert result.status == 3, result.stderr
    assert "to-stderr" in result.stderr


def test_input_and_output_files(site):
    script = "cat in.txt > out.txt; echo made >> out.txt; mkdir -p sub; echo deep > sub/file"
    result = testenv.run_job("busybox", "/bin/sh", ["-c", script], inputs={"in.txt": "from the submit side\n"})
    assert result.status == 0, result.stderr
    out = result.sandbox / "out.txt"
    assert out.read_text() == "from the submit side\nmade\n"
    assert out.stat().st_uid == JOB_UID
    assert (result.sandbox / "sub" / "file").read_text() == "deep\n"
    assert (result.sandbox / "sub" / "file").stat().st_uid == JOB_UID
    assert not (result.sandbox / ".job_wrapper_failure").exists()


def _start_job(command_script):
    """Start a job in the background; return the Popen after the guest printed 'ready'."""
    cmd = testenv.job_command("busybox", "/bin/sh", ["-c", command_script])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    line = b""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line or line.strip() == b"ready":
            break
    assert line.strip() == b"ready", "the guest never printed ready"
    return proc


def test_sigterm_mid_run_tears_everything_down(site):
    proc = _start_job("echo ready; sleep 600")
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)  # the stand-in vacates: SIGTERM to the job pid only
    _, err = proc.communicate(timeout=120)
    assert time.monotonic() - started < 60
    assert b"starter: job killed by signal 15" in err, err
    assert testenv.leftovers() == []


def test_sigkill_of_wrapper_then_gc(site):
    proc = _start_job("echo ready; sleep 600")
    proc.send_signal(signal.SIGUSR2)  # the stand-in hard-kills the job pid
    _, err = proc.communicate(timeout=60)
    assert b"starter: job killed by signal 9" in err, err
    # libvirt autodestroy removes the domain when the wrapper's connection closes.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(x.startswith("domain") for x in testenv.leftovers()):
        time.sleep(0.5)
    left = testenv.leftovers()
    assert not [x for x in left if x.startswith("domain")], left
    assert [x for x in left if x.startswith("job dir")], "expected the job dir to need gc"
    gc = subprocess.run(
        [testenv.PYTHON, "-m", "racf_vm.cli", "--config", str(testenv.TEST_CONFIG), "gc"],
        capture_output=True,
        text=True,
        cwd="/",
    )
    assert gc.returncode == 0, gc.stderr
    assert "removed 0 domain(s), 1 job dir(s)" in gc.stdout
    assert testenv.leftovers() == []


def test_refused_when_not_started_by_the_starter(site):
    # The test shim run straight from a user's shell: its parent is not condor_starter.
    proc = subprocess.run(
        ["/usr/bin/setpriv", "--reuid", str(JOB_UID), "--regid", str(JOB_UID), "--clear-groups",
         "/bin/sh", "-c", f"{testenv.SHIM} -i busybox; echo status=$?"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "status=77" in proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("racf-vm: ") and "condor_starter" in lines[0], proc.stderr


@pytest.mark.slow
def test_real_debian12_systemd_guest(site, debian_image):
    script = 'id -u; printf "<%s>\\n" "$@"; test -d /run/systemd/system && echo systemd; exit 3'
    result = testenv.run_job("debian12", "/bin/sh", ["-c", script, "sh", "one arg", "it's"])
    assert result.status == 3, result.stderr
    out = _lines(result.stdout)
    assert out[:4] == [str(JOB_UID), "<one arg>", "<it's>", "systemd"], result.stdout
