"""Publish the VM's state into the job's ad over HTCondor's chirp, never failing the job.

    publisher = publisher_for(request.workdir, caller)   # once the request is validated
    publisher.update(RacfVMState="booting", RacfVMAccel="tcg")
    ...
    publisher.close()                                    # bounded; also on every error path

``publisher_for`` forks an agent (racf_vm.condor.chirpagent) that drops to the job's user
for good before it reads the job's ``.chirp.config``: the chirp cookie is the user's, and
root never trusts that file. ``update`` only writes one short line to the agent's pipe
without blocking: a slow, dead or absent chirp server costs the job nothing. Neither
method raises; the first failure is logged once (to the job's stderr) and later updates
are dropped.

Attributes the wrapper publishes: ``RacfVMState`` ("booting", "running", "exited"),
``RacfVMExitCode`` (with "exited"), ``RacfVMAccel`` ("kvm"/"tcg"), ``RacfVMAddress`` (the
guest's address, when racf-vm knows it: the untrusted network's lease).
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import sys
import time

from racf_vm.trust.privsep import Caller, drop_privileges

log = logging.getLogger(__name__)

ATTR_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")
MAX_VALUE = 1024
MAX_MESSAGE = 4096  # at most PIPE_BUF: one write, never interleaved or split
UPDATE_TIMEOUT = 5.0  # one batch of set_job_attr, in the agent
CLOSE_TIMEOUT = 2.0  # how long the wrapper waits for the agent at the end
_REAP_POLL = 0.02


def _message(attrs: dict) -> bytes:
    for name, value in attrs.items():
        if not ATTR_RE.fullmatch(name):
            raise ValueError(f"bad attribute name {name!r:.40}")
        if not isinstance(value, (str, int, bool)) or (isinstance(value, str) and len(value) > MAX_VALUE):
            raise ValueError(f"{name}: unsupported value {type(value).__name__}")
    data = json.dumps(attrs).encode() + b"\n"
    if len(data) > MAX_MESSAGE:
        raise ValueError("update too large")
    return data


class NullPublisher:
    """When there is nothing to publish to (or the agent could not start)."""

    def update(self, **attrs) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Publisher(NullPublisher):
    """The wrapper's end of one job's chirp agent."""

    def __init__(self, pid: int, write_fd: int, close_timeout: float = CLOSE_TIMEOUT):
        self._pid = pid
        self._fd = write_fd
        self._close_timeout = close_timeout
        self._warned = False

    def _warn_once(self, what: str) -> None:
        if not self._warned:
            self._warned = True
            log.warning("chirp: %s; the job goes on without these updates to its ad", what)

    def update(self, **attrs) -> None:
        """Queue ``attrs`` (names -> str, int or bool) for the job's ad; never blocks or raises."""
        if self._fd < 0:
            return
        try:
            os.write(self._fd, _message(attrs))
        except BlockingIOError:
            self._warn_once("the chirp agent is not keeping up; an update was dropped")
        except BrokenPipeError:
            self._shut()  # the agent ended: no chirp config, or it already said why
        except Exception as exc:
            self._warn_once(f"cannot queue an update ({exc})")

    def _shut(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def close(self) -> None:
        """Let the agent send what is queued, at most ``close_timeout``; then it is gone."""
        try:
            self._shut()
            deadline = time.monotonic() + self._close_timeout
            while os.waitpid(self._pid, os.WNOHANG) == (0, 0):
                if time.monotonic() >= deadline:
                    self._warn_once(f"the chirp agent did not finish within {self._close_timeout:g}s")
                    os.kill(self._pid, signal.SIGKILL)
                    os.waitpid(self._pid, 0)
                    break
                time.sleep(_REAP_POLL)
        except ChildProcessError:
            pass  # already reaped
        except Exception as exc:
            self._warn_once(f"stopping the chirp agent failed ({exc})")


def _close_all_but(read_fd: int) -> None:
    """Nothing root opened goes with the agent: only stdio, the pipe, and the stream the
    log writes to (the job's stderr)."""
    keep = {read_fd}
    try:
        keep.add(sys.stderr.fileno())
    except (AttributeError, OSError, ValueError):
        pass
    low = 3
    for fd in sorted(k for k in keep if k >= 3):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, os.sysconf("SC_OPEN_MAX"))


def _agent(read_fd: int, workdir: str, caller: Caller, timeout: float) -> None:
    """The forked child: keep only the pipe and stdio, become the user, forward updates."""
    status = 0
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        _close_all_but(read_fd)
        drop_privileges(caller)
        from racf_vm.condor import chirpagent

        chirpagent.run_agent(read_fd, workdir, timeout)
    except BaseException as exc:  # the wrapper must never see this child's trouble
        status = 1
        try:
            log.warning("chirp: the agent failed (%s: %s); the job goes on without updates "
                        "to its ad", type(exc).__name__, exc)
        except BaseException:
            pass
    finally:
        os._exit(status)


def publisher_for(workdir: str, caller: Caller, *, timeout: float = UPDATE_TIMEOUT,
                  close_timeout: float = CLOSE_TIMEOUT) -> NullPublisher:
    """A publisher for the job whose sandbox is ``workdir`` (validated by the caller) and
    whose user is ``caller``. Never raises: without an agent, updates go nowhere."""
    try:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(write_fd)
            _agent(read_fd, workdir, caller, timeout)
        os.close(read_fd)
        os.set_blocking(write_fd, False)
        os.set_inheritable(write_fd, False)
        return Publisher(pid, write_fd, close_timeout)
    except Exception as exc:
        log.warning("chirp: cannot start the agent (%s); the job's ad will not show the VM's state", exc)
        return NullPublisher()
