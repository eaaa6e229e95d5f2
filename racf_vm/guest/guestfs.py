"""Write a context plan (racf_vm.guest.context) into an overlay with libguestfs."""

from dataclasses import dataclass
from typing import Optional, Sequence

from racf_vm.guest.context import GuestEntry


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
