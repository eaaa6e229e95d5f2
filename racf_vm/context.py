"""The guest's job context: what is written into the overlay before it boots.

``plan_context`` is pure (a list of files and directories with owners and modes, laid
out as docs/ARCHITECTURE.md fixes); ``guestfs_apply`` writes such a plan with libguestfs.
Arguments and environment travel as one file per value, never through a shell.
"""

from dataclasses import dataclass
from typing import Optional, Sequence

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


@dataclass(frozen=True)
class GuestfsSettings:
    """How libguestfs is run: from the site config and the accelerator probe."""

    backend: str
    force_tcg: bool
    memsize_mib: int
    cachedir: str  # root-owned: appliance cache and temporary files


def guestfs_apply(
    overlay: str,
    filesystem: str,
    entries: Sequence[GuestEntry],
    settings: GuestfsSettings,
    appliance: Optional[str] = None,
) -> None:
    """Write ``entries`` into the qcow2 ``overlay`` with one libguestfs appliance launch.

    Raises guestfs errors as they come: the caller translates them (it runs this in a
    child with a time limit, see racf_vm.contextualize).
    """
    import guestfs  # Debian's python3-guestfs; imported here so planning needs no C library

    g = guestfs.GuestFS(python_return_dict=True, close_on_exit=False)
    try:
        g.set_backend(settings.backend)
        if settings.force_tcg:
            g.set_backend_settings(["force_tcg"])
        g.set_cachedir(settings.cachedir)
        if appliance is not None:
            g.set_path(appliance)
        g.set_tmpdir(settings.cachedir)
        g.set_memsize(settings.memsize_mib)
        g.set_network(False)
        g.add_drive_opts(overlay, format="qcow2", readonly=False)
        g.launch()
        g.mount(filesystem, "/")
        for entry in entries:
            _apply_one(g, entry)
        g.sync()
        g.umount_all()
        g.shutdown()  # write errors surface here
    finally:
        g.close()


def _apply_one(g, entry: GuestEntry) -> None:
    if entry.is_dir:
        if g.is_dir(entry.path, followsymlinks=False):
            pass
        else:
            if g.exists(entry.path):
                g.rm_rf(entry.path)
            g.mkdir(entry.path)
    else:
        # A symlink or directory planted at this path by the image must not redirect us.
        if g.exists(entry.path) or g.is_symlink(entry.path):
            g.rm_rf(entry.path)
        if entry.upload is not None:
            g.upload(entry.upload, entry.path)
        else:
            g.write(entry.path, entry.data)
    g.chown(entry.uid, entry.gid, entry.path)
    g.chmod(entry.mode, entry.path)
