"""The guest's lifetime, from boot to gone: forward its output, watch its status, enforce
every time limit, and stop it when HTCondor asks.

Every wait is bounded by the site's [timeouts]: ``boot`` until the runner reports
``started``, ``job`` while the command runs, ``poweroff`` for the output archive after the
command's end, ``shutdown_grace`` after SIGTERM, ``after_destroy`` for a destroyed VM to go.
Every ``health`` seconds the run's checks look at what must stay true while the guest runs
(the domain is not paused on a disk error, the untrusted network's rules are in place); a
failed check stops the guest.
Once the job has ended and its output archive is complete, the guest is destroyed rather
than waited for: its disk is thrown away, so its power-off buys nothing. With
``clean_poweroff`` (``images maintain``, whose disk is kept) the guest must power itself
off within ``poweroff`` of its command's end; a guest destroyed instead is a failure.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import BinaryIO, Callable, Optional, Sequence

from racf_vm.condor.sandbox import archive_complete
from racf_vm.config import LimitsConfig, TimeoutsConfig
from racf_vm.core.errors import Cancelled, JobError, RacfError, TemporaryError
from racf_vm.guest.channels import GuestChannels, PumpResult
from racf_vm.guest.protocol import StatusLine
from racf_vm.job.streams import StreamSink
from racf_vm.vm import domain

log = logging.getLogger(__name__)

MAX_LOGGED_INVALID = 3  # the job's stderr gets a few, then one count


@dataclass(frozen=True)
class GuestOutcome:
    exit_status: int
    output_bytes: int
    output_overflow: bool


class GuestState:
    """What the runner reported on the status channel."""

    def __init__(self, exec_time: float, on_end: Callable[[], None],
                 on_started: Callable[[], None] = lambda: None):
        self.exec_time = exec_time
        self._on_end = on_end  # wakes the pump so the host can stop waiting early
        self._on_started = on_started  # e.g. publishes "running" into the job's ad (chirp)
        self.started_at: Optional[float] = None
        self.ended_at: Optional[float] = None
        self.exit_status: Optional[int] = None
        self.error: Optional[str] = None
        self.job_error = False
        self.invalid = 0  # invalid status lines: a hostile guest may send millions

    def on_status(self, line: StatusLine) -> None:
        now = time.monotonic()
        if line.kind == "started" and self.started_at is None:
            self.started_at = now
            log.info("guest command started %.2fs after exec", now - self.exec_time)
            self._on_started()
        elif line.kind == "exit" and self.ended_at is None:
            self.exit_status, self.ended_at = line.code, now
            log.info("guest command exited with %d, %.2fs after exec", line.code, now - self.exec_time)
            self._on_end()
        elif line.kind == "error" and self.ended_at is None:
            self.error, self.job_error, self.ended_at = line.text, line.job, now
            self._on_end()
        elif line.kind == "invalid":
            self.invalid += 1
            if self.invalid <= MAX_LOGGED_INVALID:
                log.warning("ignoring an invalid status line from the guest: %r", line.text)


def output_complete(spool: BinaryIO) -> bool:
    spool.flush()
    position = spool.tell()
    try:
        return archive_complete(spool)
    finally:
        spool.seek(position)


class Supervisor:
    """Runs one guest to its end on its connected channels."""

    def __init__(self, dom, chans: GuestChannels, spool: BinaryIO, timeouts: TimeoutsConfig,
                 limits: LimitsConfig, *, exec_time: float, terminated: Callable[[], bool],
                 checks: Sequence[Callable[[], None]] = (), on_started: Callable[[], None] = lambda: None,
                 clean_poweroff: bool = False):
        self.dom = dom
        self.clean_poweroff = clean_poweroff
        self.checks = checks  # each raises a RacfError when the guest must not go on
        self._next_check = 0.0
        self._destroyed = False
        self.chans = chans
        self.spool = spool
        self.t = timeouts
        self.terminated = terminated
        self.state = GuestState(exec_time, on_end=chans.interrupt, on_started=on_started)
        self.streams = (StreamSink(1, "stdout", limits.max_stdout_bytes, timeouts.output_stall, chans.interrupt),
                        StreamSink(2, "stderr", limits.max_stderr_bytes, timeouts.output_stall, chans.interrupt))

    def _pump(self, deadline: float) -> PumpResult:
        """Pump until ``deadline`` or the next health check, whichever comes first."""
        now = time.monotonic()
        if now >= self._next_check and not self._destroyed:
            self._next_check = now + self.t.health
            for check in self.checks:
                try:
                    check()
                except RacfError:
                    self._destroy()
                    raise
        out, err = self.streams
        # a destroyed guest is not checked any more: wait for its end, not for a past check time
        until = deadline if self._destroyed else min(deadline, self._next_check)
        result = self.chans.pump(until, out.write, err.write, self.spool,
                                 self.state.on_status)
        for sink in self.streams:
            if sink.overflow:
                self._destroy()
                raise JobError(f"the job wrote more than the site limit of {sink.cap} bytes to its "
                               f"{sink.name}; it was stopped")
        return result

    def _destroy(self) -> float:
        self._destroyed = True
        domain.destroy(self.dom)
        return time.monotonic()

    def run(self) -> GuestOutcome:
        """Until the guest is gone; then its exit status (TemporaryError if it never said)."""
        result = self._until_gone()
        if self.state.invalid > MAX_LOGGED_INVALID:
            log.warning("ignored %d more invalid status lines from the guest",
                        self.state.invalid - MAX_LOGGED_INVALID)
        if self.terminated():
            raise Cancelled()
        state = self.state
        if state.error is not None:
            cls = JobError if state.job_error else TemporaryError
            raise cls(f"the guest could not run the job: {state.error}")
        if state.exit_status is None:
            raise TemporaryError("the guest stopped without reporting the job's exit status")
        return GuestOutcome(state.exit_status, result.output_bytes, result.output_overflow)

    def _until_gone(self) -> PumpResult:
        t, state = self.t, self.state
        deadline = time.monotonic() + t.boot
        destroyed_at = drain_until = None
        while True:
            result = self._pump(deadline)
            if result.reason == "eof":
                return result
            if self.terminated():
                return self._stop()
            now = time.monotonic()
            if destroyed_at is not None:
                if now >= destroyed_at + t.after_destroy:
                    raise TemporaryError("the virtual machine did not go away after being destroyed")
                deadline = destroyed_at + t.after_destroy
            elif drain_until is not None:
                if now >= drain_until:
                    destroyed_at = self._destroy()
                deadline = drain_until if now < drain_until else now + t.after_destroy
            elif state.ended_at is not None and self.clean_poweroff and state.error is None:
                deadline = state.ended_at + t.poweroff  # QEMU exits by itself: channels' EOF
                if now >= deadline:
                    self._destroy()
                    raise TemporaryError(f"the guest did not power off within {t.poweroff:g}s "
                                         "of its command's end; its disk is not used")
            elif state.ended_at is not None:
                if state.error is not None or output_complete(self.spool):
                    drain_until = deadline = now + t.drain
                elif now >= state.ended_at + t.poweroff:
                    log.warning("the job's output did not arrive within %gs of its end", t.poweroff)
                    destroyed_at = self._destroy()
                    deadline = now + t.after_destroy
                else:
                    deadline = min(now + t.end_poll, state.ended_at + t.poweroff)
            elif state.started_at is not None:
                deadline = state.started_at + t.job
                if now >= deadline:
                    self._destroy()
                    raise JobError(f"the job ran longer than the site limit of {t.job:g}s")
            elif now >= deadline:
                self._destroy()
                raise TemporaryError(f"the guest did not start the job within {t.boot:g}s")

    def _stop(self) -> PumpResult:
        grace = self.t.shutdown_grace
        log.warning("asked to stop: shutting the guest down (grace %gs)", grace)
        domain.request_shutdown(self.dom)
        result = self._pump(time.monotonic() + grace)
        if result.reason != "eof":
            domain.destroy(self.dom)
        return result
