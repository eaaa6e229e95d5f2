"""racf_vm.cli.doctor's socket checks: virtlogd, judged by whether its socket answers."""

import socket

from racf_vm.cli import doctor


def test_virtlogd_not_running_names_the_command_that_starts_it(tmp_path):
    missing = doctor.check_virtlogd(str(tmp_path / "virtlogd-sock"))
    assert not missing.ok and "virtlogd is not running" in missing.what
    assert missing.fix == doctor.start_command("virtlogd") and "virtlogd" in missing.fix

    stale = tmp_path / "stale-sock"  # a socket file left by a daemon that is gone
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(stale))
    s.close()
    assert not doctor.check_virtlogd(str(stale)).ok


def test_virtlogd_running(tmp_path):
    path = tmp_path / "virtlogd-sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
        s.listen(1)
        found = doctor.check_virtlogd(str(path))
    assert found.ok and found.what == "virtlogd is running"
