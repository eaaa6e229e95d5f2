"""Shared pytest configuration: markers, session fixtures and the skip policy.

The skip policy: on the reference machine (Debian 12, root, after `make deps`) every test
runs. A test may skip only for a reason listed in ``tests/support/prereq.MACHINE_SKIPS``
(something about the machine, such as KVM not booting guests); any other skip makes the
run fail, and the summary says which tests skipped and why. ``--allow-skips`` lifts the
rule for a developer's partial run (as a non-root user, say).
"""

import os

import pytest

from tests.support import prereq


def pytest_addoption(parser):
    parser.addoption("--allow-skips", action="store_true",
                     help="do not fail the run when tests skip for reasons outside MACHINE_SKIPS")


def pytest_configure(config):
    for line in (
        "vm: boots a real guest under QEMU",
        "root: needs root",
        "slow: takes more than a minute",
    ):
        config.addinivalue_line("markers", line)
    config.pluginmanager.register(SkipPolicy(config.getoption("--allow-skips")), "racf-skip-policy")


class SkipPolicy:
    """Sorts skips into listed (machine) and other reasons; other ones fail the run."""

    def __init__(self, allow_other: bool):
        self.allow_other = allow_other
        self.listed: list[tuple[str, str]] = []
        self.other: list[tuple[str, str]] = []

    def _record(self, report) -> None:
        if not report.skipped:
            return
        longrepr = report.longrepr
        if isinstance(longrepr, tuple) and len(longrepr) == 3:
            reason = str(longrepr[2]).removeprefix("Skipped: ")
        else:
            reason = str(longrepr)
        if hasattr(report, "wasxfail"):
            reason = f"xfail: {report.wasxfail}"
        (self.listed if prereq.listed_reason(reason) else self.other).append((report.nodeid, reason))

    def pytest_runtest_logreport(self, report):
        if report.when in ("setup", "call"):
            self._record(report)

    def pytest_collectreport(self, report):
        self._record(report)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session, exitstatus):
        if self.other and not self.allow_other and exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter):
        tr = terminalreporter
        if self.listed:
            tr.section("skipped for reasons about this machine (tests/support/prereq.py MACHINE_SKIPS)")
            for nodeid, reason in self.listed:
                tr.line(f"{nodeid}: {reason}")
        if self.other:
            tail = " (allowed by --allow-skips)" if self.allow_other else ": the run fails"
            tr.section("skipped for reasons NOT on the list" + tail, red=not self.allow_other)
            for nodeid, reason in self.other:
                tr.line(f"{nodeid}: {reason}")
        elif not self.listed:
            tr.line("skips: none")


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

    from tests.support.testenv import ensure_users

    ensure_users()
    return pwd.getpwnam("racfjob")
