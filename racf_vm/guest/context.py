"""The guest's job context: what is written into the overlay before it boots.

``plan_context`` is pure (a list of files and directories with owners and modes, laid
out as docs/ARCHITECTURE.md fixes); racf_vm.guest.guestfs writes such a plan.
Arguments and environment travel as one file per value, never through a shell.
"""

from dataclasses import dataclass
from typing import Optional

RC_LOCAL = b"#!/bin/sh\n# Written by racf-vm: run the job, then power off.\nexec /racf/runner.sh\n"


@dataclass(frozen=True)
class GuestEntry:
    """One directory (``data is None and upload is None``) or file in the guest."""

    path: str
    mode: int
    data: Optional[bytes] = None
    upload: Optional[str] = None  # host path whose content becomes the file
    uid: int = 0
    gid: int = 0

    @property
    def is_dir(self) -> bool:
        return self.data is None and self.upload is None


def plan_context(request, runner: bytes, input_tar: Optional[str]) -> tuple:
    """The entries that make the guest run ``request``'s command as the job's user."""
    entries = [
        GuestEntry("/racf", 0o700),
        GuestEntry("/racf/runner.sh", 0o700, data=runner),
        GuestEntry("/racf/job", 0o700),
        GuestEntry("/racf/job/uid", 0o600, data=b"%d\n" % request.uid),
        GuestEntry("/racf/job/gid", 0o600, data=b"%d\n" % request.gid),
        GuestEntry("/racf/job/user", 0o600, data=request.user.encode() + b"\n"),
        GuestEntry("/racf/job/workdir", 0o600, data=request.workdir.encode() + b"\n"),
        GuestEntry("/racf/job/argv", 0o700),
        GuestEntry("/racf/job/env", 0o700),
    ]
    argv = (request.command, *request.args)
    entries += _numbered("/racf/job/argv", (a.encode() for a in argv))
    entries += _numbered("/racf/job/env", (f"{k}={v}".encode() for k, v in request.env))
    if input_tar is not None:
        entries.append(GuestEntry("/racf/job/input.tar", 0o600, upload=input_tar))
    entries.append(GuestEntry("/etc/rc.local", 0o755, data=RC_LOCAL))
    return tuple(entries)


def _numbered(directory: str, values) -> list:
    return [GuestEntry(f"{directory}/{i:04d}", 0o600, data=v) for i, v in enumerate(values)]
