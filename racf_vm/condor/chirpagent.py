"""The chirp side of racf_vm.condor.chirp: runs in a child that has become the job's user.

It reads the job's ``.chirp.config`` (``host port cookie``, written by the starter when the
job asked for ``want_io_proxy``; the user's file, so only the user reads it), then sends
each batch of attribute updates it receives on its pipe with htcondor2's chirp client
(``set_job_attr``), each batch within a deadline. The first failure is logged once to the
job's stderr and ends the agent: the job goes on, its ad just stops being updated.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Optional

from racf_vm.core.errors import UsageError
from racf_vm.core.files import read_capped

log = logging.getLogger("racf_vm.condor.chirp")

CONFIG_NAME = ".chirp.config"
MAX_CONFIG_BYTES = 4096
MAX_LINE = 64 * 1024
_HOST_RE = re.compile(r"[A-Za-z0-9.:_-]{1,255}|\[[0-9A-Fa-f:.]{2,64}\]")
_COOKIE_RE = re.compile(r"[!-~]{1,1024}")


@dataclass(frozen=True)
class ChirpEndpoint:
    host: str
    port: int
    cookie: str


def parse_chirp_config(text: str) -> ChirpEndpoint:
    """``host port cookie`` (HTCondor's .chirp.config), each checked; UsageError otherwise."""
    fields = text.split()
    if len(fields) != 3:
        raise UsageError(f"{CONFIG_NAME} must hold 'host port cookie', not {len(fields)} field(s)")
    host, port, cookie = fields
    if not _HOST_RE.fullmatch(host):
        raise UsageError(f"{CONFIG_NAME}: bad host {host[:80]!r}")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise UsageError(f"{CONFIG_NAME}: bad port {port[:20]!r}")
    if not _COOKIE_RE.fullmatch(cookie):
        raise UsageError(f"{CONFIG_NAME}: bad cookie")
    return ChirpEndpoint(host.strip("[]"), int(port), cookie)


def read_chirp_config(workdir: str) -> Optional[ChirpEndpoint]:
    """The job's chirp endpoint, or None when the job has no chirp configuration. Call it
    as the job's user: the file, and any link it is, are the user's."""
    path = os.path.join(workdir, CONFIG_NAME)
    if not os.path.lexists(path):
        return None
    data = read_capped(path, MAX_CONFIG_BYTES, CONFIG_NAME, follow_symlinks=True)
    try:
        return parse_chirp_config(data.decode("ascii"))
    except UnicodeDecodeError:
        raise UsageError(f"{CONFIG_NAME} is not ASCII") from None


class _Deadline(Exception):
    pass


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise _Deadline in this (single-threaded) process when ``seconds`` pass."""
    def on_alarm(signum, frame):
        raise _Deadline()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def expressions(values: dict) -> list[tuple[str, str]]:
    """Each value as the ClassAd expression set_job_attr wants (strings quoted), by classad2."""
    import classad2

    ad = classad2.ClassAd()
    out = []
    for name, value in values.items():
        ad[name] = value
        out.append((name, str(ad.lookup(name))))
    return out


def run_agent(read_fd: int, workdir: str, timeout: float) -> None:
    """Forward every batch from ``read_fd`` until EOF or the first failure."""
    with os.fdopen(read_fd, "rb") as pipe:
        try:
            endpoint = read_chirp_config(workdir)
        except UsageError as exc:
            log.warning("chirp: %s; the job's ad will not show the VM's state", exc.message)
            return
        if endpoint is None:
            return  # the job did not ask for chirp (want_io_proxy)
        from htcondor2.htchirp import HTChirp

        client = None
        for line in iter(lambda: pipe.readline(MAX_LINE), b""):
            try:
                updates = expressions(json.loads(line))
                with deadline(timeout):
                    if client is None:  # its constructor tries the cookie once
                        client = HTChirp(host=endpoint.host, port=endpoint.port, auth=["cookie"],
                                         cookie=endpoint.cookie, timeout=timeout)
                    with client:
                        for name, expr in updates:
                            client.set_job_attr(name, expr)
            except Exception as exc:  # whatever it is, the job must not notice
                why = "no answer within %gs" % timeout if isinstance(exc, _Deadline) else \
                    f"{type(exc).__name__}: {exc}"
                log.warning("chirp: could not update the job ad through %s:%d (%s); the job "
                            "goes on without these updates", endpoint.host, endpoint.port, why)
                return
