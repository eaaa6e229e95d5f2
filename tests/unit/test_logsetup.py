"""racf_vm.core.logsetup: one logger tree, the configured level for racf_vm and netpolicy alike."""

import logging

import pytest

from racf_vm.core import logsetup


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, {n: logging.getLogger(n).level for n in logsetup.LOGGERS})
    yield
    root.handlers[:], level, levels = saved
    root.setLevel(level)
    for name, lvl in levels.items():
        logging.getLogger(name).setLevel(lvl)


def test_the_level_applies_to_netpolicy_too(restore_logging, capsys):
    logsetup.configure("racf-vm: %(name)s %(message)s", "info")
    logging.getLogger("netpolicy.lease").info("lease line")
    logging.getLogger("racf_vm.job.run").info("run line")
    logging.getLogger("racf_vm.job.run").debug("not shown")
    logging.getLogger("urllib3.connectionpool").info("library chatter")
    err = capsys.readouterr().err.splitlines()
    assert err == ["racf-vm: netpolicy.lease lease line", "racf-vm: racf_vm.job.run run line"]
    logsetup.set_level("debug")
    logging.getLogger("netpolicy.planner").debug("now shown")
    assert capsys.readouterr().err == "racf-vm: netpolicy.planner now shown\n"
