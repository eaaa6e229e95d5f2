"""What preparing an image installs in it: the guest runner and the hook that starts it.

Pure: a plan of files (GuestEntry) for racf_vm.guest.guestfs to write. Nothing of any
job goes into the image; each job's context arrives on its own disk (contextdisk).
"""

import dataclasses

from racf_vm.core.errors import ConfigError
from racf_vm.core.files import read_capped
from racf_vm.guest.guestfs import GuestEntry
from racf_vm.trust import pathtrust

RUNNER_PATH = "/racf/runner.sh"
ORIG_DIR = "/racf/orig"  # maintenance layers: the image's own files the hook replaced
UNDO_LIST = "/racf/undo"  # maintenance layers: the hook's files, one path a line
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


def original_path(path: str) -> str:
    """Where a maintenance layer keeps the image's own file that a hook file replaced."""
    return f"{ORIG_DIR}/" + path.strip("/").replace("/", "%")


def runner_entries(runner: bytes, hook: str, *, keep_originals: bool = False) -> tuple[GuestEntry, ...]:
    """The runner and its boot hook ("rc.local" or "systemd"), root-owned.

    ``keep_originals`` (the master copy's layer in ``images maintain``): each file the
    hook writes first moves the image's own file (if any) to ``original_path``, and
    ``UNDO_LIST`` names those files, so the runner in maintenance mode can leave the
    image as it found it (racf_vm/guest/maintdisk.py).
    """
    entries = [
        GuestEntry("/racf", 0o700),
        GuestEntry(RUNNER_PATH, 0o700, data=runner),
    ]
    if hook == "rc.local":
        hooks = [GuestEntry("/etc/rc.local", 0o755, data=RC_LOCAL)]
    elif hook == "systemd":
        unit = f"/etc/systemd/system/{UNIT_NAME}"
        entries.append(GuestEntry("/etc/systemd/system/multi-user.target.wants", 0o755))
        hooks = [
            GuestEntry(unit, 0o644, data=SYSTEMD_UNIT),
            GuestEntry(f"/etc/systemd/system/multi-user.target.wants/{UNIT_NAME}", 0o777, link=unit),
        ]
    else:
        raise ValueError(f"unknown boot hook {hook!r}")
    if keep_originals:
        undo = "".join(f"{h.path}\n" for h in hooks).encode()
        entries += [GuestEntry(ORIG_DIR, 0o700), GuestEntry(UNDO_LIST, 0o600, data=undo)]
        hooks = [dataclasses.replace(h, keep_original=original_path(h.path)) for h in hooks]
    return tuple(entries + hooks)


def read_runner(path: str) -> bytes:
    """The guest runner from the site's trusted path (refused, never cut short, when odd)."""
    pathtrust.check_trusted_file(path)
    return read_capped(path, MAX_RUNNER_BYTES, "the guest runner", error=ConfigError,
                       follow_symlinks=True, root_only=True)
