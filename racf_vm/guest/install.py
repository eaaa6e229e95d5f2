"""What preparing an image installs in it: the guest runner and the hook that starts it.

Pure: a plan of files (GuestEntry) for racf_vm.guest.guestfs to write. Nothing of any
job goes into the image; each job's context arrives on its own disk (contextdisk).
"""

from racf_vm.core.errors import ConfigError
from racf_vm.core.files import read_capped
from racf_vm.guest.guestfs import GuestEntry
from racf_vm.trust import pathtrust

RUNNER_PATH = "/racf/runner.sh"
MAX_RUNNER_BYTES = 1 << 20
RC_LOCAL = b"#!/bin/sh\n# Written by racf-vm: run the job, then power off.\nexec /racf/runner.sh\n"
UNIT_NAME = "racf-runner.service"
SYSTEMD_UNIT = b"""# Written by racf-vm: run the job, then power off.
[Unit]
Description=racf-vm job runner
After=local-fs.target
ConditionPathExists=/racf/runner.sh

[Service]
Type=oneshot
ExecStart=/racf/runner.sh
StandardOutput=journal+console

[Install]
WantedBy=multi-user.target
"""


def runner_entries(runner: bytes, hook: str) -> tuple[GuestEntry, ...]:
    """The runner and its boot hook ("rc.local" or "systemd"), root-owned."""
    entries = [
        GuestEntry("/racf", 0o700),
        GuestEntry(RUNNER_PATH, 0o700, data=runner),
    ]
    if hook == "rc.local":
        entries.append(GuestEntry("/etc/rc.local", 0o755, data=RC_LOCAL))
    elif hook == "systemd":
        unit = f"/etc/systemd/system/{UNIT_NAME}"
        entries += [
            GuestEntry(unit, 0o644, data=SYSTEMD_UNIT),
            GuestEntry("/etc/systemd/system/multi-user.target.wants", 0o755),
            GuestEntry(f"/etc/systemd/system/multi-user.target.wants/{UNIT_NAME}", 0o777, link=unit),
        ]
    else:
        raise ValueError(f"unknown boot hook {hook!r}")
    return tuple(entries)


def read_runner(path: str) -> bytes:
    """The guest runner from the site's trusted path (refused, never cut short, when odd)."""
    pathtrust.check_trusted_file(path)
    return read_capped(path, MAX_RUNNER_BYTES, "the guest runner", error=ConfigError,
                       follow_symlinks=True, root_only=True)
