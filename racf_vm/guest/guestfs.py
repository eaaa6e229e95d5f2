"""Write a plan of guest files into an image layer with libguestfs.

Only image preparation (racf_vm.images.prepare) uses this, in a child that runs as the
unprivileged preparation account with a deadline. The disk format and the filesystem
type are named, never probed.
"""

from dataclasses import dataclass
from typing import Optional, Sequence


@dataclass(frozen=True)
class GuestEntry:
    """One directory (no data, no link), file (``data``) or symlink (``link``) in the guest."""

    path: str
    mode: int
    data: Optional[bytes] = None
    link: Optional[str] = None
    uid: int = 0
    gid: int = 0
    keep_original: Optional[str] = None  # move what the image has at ``path`` there first

    @property
    def is_dir(self) -> bool:
        return self.data is None and self.link is None


@dataclass(frozen=True)
class GuestfsSettings:
    """How libguestfs is run: from the site config and the accelerator probe."""

    backend: str
    force_tcg: bool
    memsize_mib: int
    cachedir: str  # the preparation account's own: appliance cache
    tmpdir: str  # the preparation account's own: sockets and temporary files


def guestfs_apply(layer: str, filesystem: str, fstype: str, entries: Sequence[GuestEntry],
                  settings: GuestfsSettings) -> None:
    """Write ``entries`` into the qcow2 ``layer`` with one libguestfs appliance launch.

    Raises guestfs errors as they come: the caller runs this in a child with a deadline
    and reports them.
    """
    import guestfs  # Debian's python3-guestfs; imported here so planning needs no C library

    g = guestfs.GuestFS(python_return_dict=True, close_on_exit=False)
    try:
        g.set_backend(settings.backend)
        if settings.force_tcg:
            g.set_backend_settings(["force_tcg"])
        g.set_cachedir(settings.cachedir)
        g.set_tmpdir(settings.tmpdir)
        g.set_memsize(settings.memsize_mib)
        g.set_network(False)
        g.add_drive_opts(layer, format="qcow2", readonly=False)
        g.launch()
        g.mount_vfs("", fstype, filesystem, "/")
        for entry in entries:
            _apply_one(g, entry)
        g.sync()
        g.umount_all()
        g.shutdown()  # write errors surface here
    finally:
        g.close()


def _apply_one(g, entry: GuestEntry) -> None:
    if entry.is_dir:
        if not g.is_dir(entry.path, followsymlinks=False):
            if g.exists(entry.path) or g.is_symlink(entry.path):
                g.rm_rf(entry.path)
            g.mkdir(entry.path)
    else:
        # A symlink or directory the image has at this path must not redirect us.
        if g.exists(entry.path) or g.is_symlink(entry.path):
            if entry.keep_original is not None:
                g.mv(entry.path, entry.keep_original)  # the very file: owner, mode, times
            else:
                g.rm_rf(entry.path)
        if entry.link is not None:
            g.ln_s(entry.link, entry.path)
            g.lchown(entry.uid, entry.gid, entry.path)
            return
        g.write(entry.path, entry.data)
    g.chown(entry.uid, entry.gid, entry.path)
    g.chmod(entry.mode, entry.path)
