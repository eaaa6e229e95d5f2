"""racf_vm.job.supervise: the guest's lifetime as a state machine, driven by a scripted
guest (the real channels and libvirt are exercised by the integration and e2e suites)."""

import dataclasses
import io
import tarfile
import time

import pytest

from racf_vm.config import LimitsConfig, TimeoutsConfig
from racf_vm.core.errors import Cancelled, JobError, TemporaryError
from racf_vm.guest.channels import PumpResult
from racf_vm.guest.protocol import StatusLine
from racf_vm.job import supervise

FAST = TimeoutsConfig(boot=0.3, job=0.5, poweroff=0.3, shutdown_grace=0.2, after_destroy=0.3,
                      drain=0.02, end_poll=0.01, output_stall=0.2)


def _tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("out.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    return buf.getvalue()


class FakeGuest:
    """Plays the guest: ``script`` holds what it does at each pump call, in order:
    ("status", line) | ("output", bytes) | ("wait",) until the deadline | ("eof",) once
    destroyed or powered off."""

    def __init__(self, script):
        self.script = list(script)
        self.destroyed = self.shutdown_requested = False
        self.output = 0

    def interrupt(self):
        pass

    def pump(self, deadline, on_out, on_err, sink, on_status):
        while self.script:
            step = self.script.pop(0)
            if step[0] == "status":
                on_status(StatusLine(*step[1:]))
                return PumpResult("interrupted", self.output, False)
            if step[0] == "output":
                sink.write(step[1])
                self.output += len(step[1])
            if step[0] == "stdout":
                on_out(step[1])
            if step[0] == "wait":
                time.sleep(max(0.0, deadline - time.monotonic()))
                return PumpResult("deadline", self.output, False)
        if self.destroyed or self.shutdown_requested:
            return PumpResult("eof", self.output, False)
        time.sleep(max(0.0, deadline - time.monotonic()))
        return PumpResult("deadline", self.output, False)


@pytest.fixture
def fake_domain(monkeypatch):
    guests = {}

    def destroy(dom):
        guests["g"].destroyed = True

    def shutdown(dom):
        guests["g"].shutdown_requested = True

    monkeypatch.setattr(supervise.domain, "destroy", destroy)
    monkeypatch.setattr(supervise.domain, "request_shutdown", shutdown)
    return guests


def _run(guests, script, terminated=lambda: False, limits=LimitsConfig()):
    guest = guests["g"] = FakeGuest(script)
    spool = io.BytesIO()
    sup = supervise.Supervisor("dom", guest, spool, FAST, limits, exec_time=time.monotonic(),
                               terminated=terminated)
    return sup, guest, spool


def test_exit_status_passes_through_and_the_guest_is_destroyed_once_output_is_complete(fake_domain):
    sup, guest, spool = _run(fake_domain, [("status", "started"), ("output", _tar()), ("status", "exit", 3)])
    outcome = sup.run()
    assert (outcome.exit_status, outcome.output_bytes) == (3, len(_tar()))
    assert guest.destroyed  # not waited for: its disk is thrown away anyway


class SlowToDie(FakeGuest):
    """Its channels close ``delay`` seconds after the destroy (QEMU takes a while to exit); a
    pump whose deadline has passed returns at once, as the real one does."""

    def __init__(self, script, delay):
        super().__init__(script)
        self.delay, self.eof_at, self.pumps_after_destroy = delay, None, 0

    def pump(self, deadline, *args):
        if not self.destroyed:
            return super().pump(deadline, *args)
        self.pumps_after_destroy += 1
        if self.eof_at is None:
            self.eof_at = time.monotonic() + self.delay
        if deadline <= time.monotonic():
            return PumpResult("deadline", self.output, False)
        time.sleep(max(0.0, min(deadline, self.eof_at) - time.monotonic()))
        return PumpResult("eof" if time.monotonic() >= self.eof_at else "deadline", self.output, False)


def test_a_destroyed_guest_is_waited_for_without_spinning(fake_domain):
    """Health checks stop with the destroy; the wait for the guest's end must then not be cut
    to the (past) time of the next check: that spun the CPU and missed the end."""
    guest = fake_domain["g"] = SlowToDie([("status", "started"), ("output", _tar()), ("status", "exit", 3)], 0.15)
    t = dataclasses.replace(FAST, health=0.01, after_destroy=1.0)
    sup = supervise.Supervisor("dom", guest, io.BytesIO(), t, LimitsConfig(), exec_time=time.monotonic(),
                               terminated=lambda: False, checks=[lambda: time.sleep(0.02)])
    assert sup.run().exit_status == 3
    assert guest.destroyed and guest.pumps_after_destroy <= 5, guest.pumps_after_destroy


def test_incomplete_output_waits_for_poweroff_then_destroys(fake_domain):
    sup, guest, _ = _run(fake_domain, [("status", "started"), ("output", _tar()[:600]), ("status", "exit", 0)])
    started = time.monotonic()
    assert sup.run().exit_status == 0
    assert guest.destroyed and time.monotonic() - started >= FAST.poweroff


def test_a_guest_that_never_starts_the_job(fake_domain):
    sup, guest, _ = _run(fake_domain, [])
    with pytest.raises(TemporaryError, match="did not start the job within 0.3s"):
        sup.run()
    assert guest.destroyed


def test_the_site_time_limit_ends_the_job_without_requeue(fake_domain):
    sup, guest, _ = _run(fake_domain, [("status", "started")])
    with pytest.raises(JobError, match="longer than the site limit of 0.5s"):
        sup.run()
    assert guest.destroyed


def test_runner_errors_are_temporary_unless_the_job_caused_them(fake_domain):
    sup, _, _ = _run(fake_domain, [("status", "started"), ("status", "error", "", "no context disk")])
    with pytest.raises(TemporaryError, match="could not run the job: no context disk"):
        sup.run()
    sup, _, _ = _run(fake_domain, [("status", "error", "", "user name taken", True)])
    with pytest.raises(JobError, match="could not run the job: user name taken") as exc:
        sup.run()
    assert exc.value.exit_status == 65


def test_sigterm_asks_for_a_shutdown_then_stops(fake_domain):
    calls = {"n": 0}

    def terminated():
        calls["n"] += 1
        return calls["n"] > 1

    sup, guest, _ = _run(fake_domain, [("status", "started"), ("wait",)], terminated)
    with pytest.raises(Cancelled):
        sup.run()
    assert guest.shutdown_requested


def test_a_guest_flooding_stdout_is_stopped_at_the_cap(fake_domain, capfd):
    limits = LimitsConfig(max_stdout_bytes=10)
    sup, guest, _ = _run(fake_domain, [("status", "started"), ("stdout", b"0123456789abcdef"),
                                       ("wait",)], limits=limits)
    with pytest.raises(JobError, match="more than the site limit of 10 bytes to its stdout"):
        sup.run()
    assert guest.destroyed and capfd.readouterr().out == "0123456789"


def test_status_garbage_costs_a_bounded_number_of_log_lines(fake_domain, caplog):
    garbage = [("status", "invalid", None, f"junk {i}") for i in range(1000)]
    sup, _, _ = _run(fake_domain, [("status", "started"), *garbage, ("output", _tar()), ("status", "exit", 0)])
    with caplog.at_level("WARNING"):
        assert sup.run().exit_status == 0
    lines = [r.getMessage() for r in caplog.records if "invalid status line" in r.getMessage()]
    assert len(lines) == 4 and "ignored 997 more" in lines[-1]


def test_a_failed_health_check_stops_the_guest(fake_domain):
    calls = []

    def disk_full():
        calls.append(1)
        if len(calls) > 1:
            raise TemporaryError("the guest stopped on a disk error")

    guest = fake_domain["g"] = FakeGuest([("status", "started"), ("wait",), ("wait",)])
    t = TimeoutsConfig(boot=5, job=5, health=0.1, after_destroy=1)
    sup = supervise.Supervisor("dom", guest, io.BytesIO(), t, LimitsConfig(), exec_time=time.monotonic(),
                               terminated=lambda: False, checks=[disk_full])
    with pytest.raises(TemporaryError, match="disk error"):
        sup.run()
    assert guest.destroyed and len(calls) >= 2


def test_the_start_of_the_job_is_announced_once(fake_domain):
    """on_started is how the wrapper publishes "running" into the job's ad (chirp)."""
    calls = []
    guest = fake_domain["g"] = FakeGuest([("status", "started"), ("status", "started"),
                                          ("output", _tar()), ("status", "exit", 0)])
    sup = supervise.Supervisor("dom", guest, io.BytesIO(), FAST, LimitsConfig(), exec_time=time.monotonic(),
                               terminated=lambda: False, on_started=lambda: calls.append("running"))
    assert sup.run().exit_status == 0
    assert calls == ["running"]
    never = fake_domain["g"] = FakeGuest([])
    calls.clear()
    with pytest.raises(TemporaryError):
        supervise.Supervisor("dom", never, io.BytesIO(), FAST, LimitsConfig(), exec_time=time.monotonic(),
                             terminated=lambda: False, on_started=lambda: calls.append("running")).run()
    assert calls == []
