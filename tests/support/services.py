"""Start virtlogd and libvirtd for tests on machines without an init system.

``ensure_libvirtd()`` starts whichever of the two is not answering on its socket and
returns what it started; ``stop_libvirtd(started)`` stops exactly those (by the pid in
their pid files), never a daemon someone else started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

from racf_vm.cli.doctor import socket_answers

DAEMONS = {
    # name: (binary, control socket, pid file)
    "virtlogd": ("/usr/sbin/virtlogd", "/run/libvirt/virtlogd-sock", "/run/virtlogd.pid"),
    "libvirtd": ("/usr/sbin/libvirtd", "/run/libvirt/libvirt-sock", "/run/libvirtd.pid"),
}


def ensure_libvirtd(timeout: float = 20.0) -> list[str]:
    """Start virtlogd then libvirtd if they are not running; return the names started."""
    started: list[str] = []
    for name, (binary, sock, _pidfile) in DAEMONS.items():
        if socket_answers(sock):
            continue
        subprocess.run([binary, "-d"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=True, timeout=timeout)
        deadline = time.monotonic() + timeout
        while not socket_answers(sock):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not come up within {timeout:g}s")
            time.sleep(0.1)
        started.append(name)
    return started


def stop_libvirtd(started: list[str]) -> None:
    """SIGTERM the daemons named in ``started`` (libvirtd first), by their pid files."""
    for name in reversed(list(DAEMONS)):
        if name not in started:
            continue
        try:
            pid = int(open(DAEMONS[name][2]).read().strip())
            os.kill(pid, signal.SIGTERM)
        except (OSError, ValueError):
            pass
