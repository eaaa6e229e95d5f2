"""Shared pytest configuration: markers and session fixtures."""

import os

import pytest


def pytest_configure(config):
    for line in (
        "vm: boots a real guest under QEMU",
        "root: needs root",
        "slow: takes more than a minute",
    ):
        config.addinivalue_line("markers", line)


@pytest.fixture(scope="session")
def libvirtd():
    """virtlogd + libvirtd running (started here if needed, stopped again afterwards)."""
    if os.geteuid() != 0:
        pytest.skip("needs root for qemu:///system")
    from tests.support.services import ensure_libvirtd, stop_libvirtd

    started = ensure_libvirtd()
    yield "qemu:///system"
    stop_libvirtd(started)


@pytest.fixture(scope="session")
def job_user():
    """The unprivileged test job users racfjob (2501) and racfjob2 (2502) exist (idempotent);
    returns racfjob's passwd entry."""
    import pwd
    import subprocess

    for name, uid in {"racfjob": 2501, "racfjob2": 2502}.items():
        try:
            pwd.getpwnam(name)
        except KeyError:
            subprocess.run(["/usr/sbin/groupadd", "-g", str(uid), name], check=False)
            subprocess.run(
                ["/usr/sbin/useradd", "-u", str(uid), "-g", str(uid), "-M",
                 "-d", "/nonexistent", "-s", "/bin/sh", name],
                check=True,
            )
    return pwd.getpwnam("racfjob")
