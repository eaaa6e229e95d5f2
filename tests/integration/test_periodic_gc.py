"""`make install` installs a periodic `racf-vm gc`: a systemd timer where systemd runs, a
cron entry otherwise; the command it runs works on the installed configuration."""

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.root

CRON = Path("/etc/cron.d/racf-vm-gc")
TIMER = Path("/etc/systemd/system/racf-vm-gc.timer")
SERVICE = Path("/etc/systemd/system/racf-vm-gc.service")


def _command() -> list:
    if Path("/run/systemd/system").is_dir():
        enabled = subprocess.run(["systemctl", "is-enabled", "racf-vm-gc.timer"], capture_output=True, text=True)
        assert enabled.stdout.strip() == "enabled", enabled
        line = next(l for l in SERVICE.read_text().splitlines() if l.startswith("ExecStart="))
        return shlex.split(line.removeprefix("ExecStart="))
    assert CRON.is_file(), "make install puts a cron entry where systemd does not run"
    st = CRON.stat()
    assert st.st_uid == 0 and st.st_mode & 0o022 == 0
    line = next(l for l in CRON.read_text().splitlines() if l and not l.startswith("#"))
    fields = line.split(None, 6)
    assert fields[:5] == ["*/5", "*", "*", "*", "*"] and fields[5] == "root"
    return shlex.split(re.sub(r"\s*>.*$", "", fields[6]))


def test_the_periodic_gc_is_installed_and_its_command_works(libvirtd):
    cmd = _command()
    assert cmd[0].endswith("/sbin/racf-vm") and cmd[1:] == ["gc"]
    assert os.access(cmd[0], os.X_OK) and TIMER.is_file() and SERVICE.is_file()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd="/")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("removed ")
