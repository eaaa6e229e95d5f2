"""The VM's state into the job's ad over chirp (racf_vm.condor.chirp), driven directly as the
wrapper drives it: as root, for a job user's sandbox, against a chirp server stand-in
(tests/support/chirpserver.py). Updates arrive in order, as the job's user; every failure
costs the job nothing and is logged once."""

import logging
import os
import shutil
import signal
import tempfile
from pathlib import Path

import classad2
import pytest

from racf_vm.condor import chirp
from racf_vm.core import logsetup
from racf_vm.trust.privsep import Caller
from tests.support.chirpserver import ChirpServer

pytestmark = pytest.mark.root
TEST_ROOT = Path("/var/lib/racf-vm-test")


@pytest.fixture
def job(job_user):
    """A sandbox as the starter makes it (0700, the job user's) in a root-owned tree."""
    TEST_ROOT.mkdir(mode=0o755, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="cron-chirp-", dir=TEST_ROOT))
    os.chmod(root, 0o755)
    sandbox = root / "dir_4242"
    sandbox.mkdir(mode=0o700)
    os.chown(sandbox, job_user.pw_uid, job_user.pw_gid)
    try:
        yield sandbox, Caller(job_user.pw_uid, job_user.pw_gid)
    finally:
        shutil.rmtree(root)


@pytest.fixture
def wrapper_log(capfd):
    """Log as the wrapper does: one handler on stderr (set up once the test runs, so that it
    is the stderr capfd captures); the previous logging comes back afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    yield lambda: logsetup.configure("racf-vm: %(message)s", "info")
    root.handlers[:], _ = saved
    root.setLevel(saved[1])


def write_config(sandbox: Path, text: str, uid: int) -> None:
    path = sandbox / ".chirp.config"
    path.write_text(text)
    os.chown(path, uid, uid)


def chirp_lines(capfd) -> list:
    return [line for line in capfd.readouterr().err.splitlines() if "chirp" in line]


def test_state_changes_reach_the_job_ad_in_order_as_the_job_user(job, wrapper_log, capfd):
    wrapper_log()
    sandbox, caller = job
    server = ChirpServer()
    try:
        write_config(sandbox, server.config_line, caller.uid)
        pub = chirp.publisher_for(str(sandbox), caller)
        pub.update(RacfVMState="booting", RacfVMAccel="tcg", RacfVMAddress="10.213.0.5")
        pub.update(RacfVMState="running")
        pub.update(RacfVMState="exited", RacfVMExitCode=3)
        pub.close()
    finally:
        server.close()
    sent = [(name, classad2.ExprTree(value).eval()) for name, value in server.updates]
    assert sent == [("RacfVMState", "booting"), ("RacfVMAccel", "tcg"), ("RacfVMAddress", "10.213.0.5"),
                    ("RacfVMState", "running"), ("RacfVMState", "exited"), ("RacfVMExitCode", 3)]
    assert server.client_uids and set(server.client_uids) == {caller.uid}  # never root
    assert chirp_lines(capfd) == []


def test_without_a_chirp_config_nothing_is_sent_or_said(job, wrapper_log, capfd):
    wrapper_log()
    sandbox, caller = job
    server = ChirpServer()
    try:
        pub = chirp.publisher_for(str(sandbox), caller)
        for state in ("booting", "running", "exited"):
            pub.update(RacfVMState=state)
        pub.close()
    finally:
        server.close()
    assert server.updates == [] and server.client_uids == []
    assert chirp_lines(capfd) == []


@pytest.mark.parametrize("mode, config, needle", [
    ("ok", "127.0.0.1 1 c00kie\n", "ConnectionRefusedError"),          # no chirp server
    ("refuse", None, "NotAuthenticated"),                              # a cookie it refuses
    ("hang", None, "no answer within 1s"),                             # accepts, never answers
    ("ok", "127.0.0.1 notaport c00kie\n", "bad port"),                 # a broken file
    ("ok", "just-one-field\n", "must hold 'host port cookie'"),
])
def test_a_chirp_failure_is_logged_once_and_the_job_goes_on(job, wrapper_log, capfd, mode, config, needle):
    wrapper_log()
    sandbox, caller = job
    server = ChirpServer(mode=mode)
    try:
        write_config(sandbox, config or server.config_line, caller.uid)
        pub = chirp.publisher_for(str(sandbox), caller, timeout=1.0, close_timeout=5.0)
        for state in ("booting", "running", "exited"):
            pub.update(RacfVMState=state)  # never raises, never waits
        pub.close()
    finally:
        server.close()
    lines = chirp_lines(capfd)
    assert len(lines) == 1, lines
    assert lines[0].startswith("racf-vm: chirp: ") and needle in lines[0]
    assert server.updates == []


def test_the_chirp_config_is_read_as_the_user_never_as_root(job, wrapper_log, capfd):
    wrapper_log()
    sandbox, caller = job
    server = ChirpServer()
    try:
        # a link to a file only root may read: following it must not work
        secret = sandbox.parent / "root-only"
        secret.write_text(server.config_line)
        os.chmod(secret, 0o600)
        os.symlink(secret, sandbox / ".chirp.config")
        pub = chirp.publisher_for(str(sandbox), caller)
        pub.update(RacfVMState="booting")
        pub.close()
    finally:
        server.close()
    assert server.client_uids == [] and server.updates == []
    [line] = chirp_lines(capfd)
    assert "Permission denied" in line


def test_a_stopped_agent_cannot_stall_the_wrapper(job, wrapper_log, capfd):
    """The user owns the agent and may stop it: updates are dropped, the end is bounded."""
    wrapper_log()
    sandbox, caller = job
    server = ChirpServer()
    try:
        write_config(sandbox, server.config_line, caller.uid)
        pub = chirp.publisher_for(str(sandbox), caller, close_timeout=0.5)
        os.kill(pub._pid, signal.SIGSTOP)
        for i in range(5000):  # far more than the pipe holds
            pub.update(RacfVMState="running", RacfVMExitCode=i)
        pub.close()
        with pytest.raises(ChildProcessError):
            os.waitpid(pub._pid, os.WNOHANG)  # reaped: nothing left behind
    finally:
        server.close()
    lines = chirp_lines(capfd)
    assert len(lines) == 1 and "not keeping up" in lines[0]


def test_a_hung_agent_is_stopped_after_the_close_timeout(job, wrapper_log, capfd):
    wrapper_log()
    sandbox, caller = job
    server = ChirpServer(mode="hang")
    try:
        write_config(sandbox, server.config_line, caller.uid)
        pub = chirp.publisher_for(str(sandbox), caller, timeout=30.0, close_timeout=0.5)
        pub.update(RacfVMState="booting")
        pub.close()
        with pytest.raises(ChildProcessError):
            os.waitpid(pub._pid, os.WNOHANG)
    finally:
        server.close()
    lines = chirp_lines(capfd)
    assert len(lines) == 1 and "did not finish within 0.5s" in lines[0]


def test_a_chirp_config_only_root_can_read_is_not_read(job, wrapper_log, capfd):
    """Root never reads the job's .chirp.config for it: a file the user cannot read is
    as good as none, whoever put it there."""
    wrapper_log()
    sandbox, caller = job
    server = ChirpServer()
    try:
        write_config(sandbox, server.config_line, 0)
        os.chmod(sandbox / ".chirp.config", 0o600)
        pub = chirp.publisher_for(str(sandbox), caller)
        pub.update(RacfVMState="booting")
        pub.close()
    finally:
        server.close()
    assert server.updates == [] and server.client_uids == []
    [line] = chirp_lines(capfd)
    assert "cannot open .chirp.config" in line and "Permission denied" in line
