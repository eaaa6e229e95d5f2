"""Prepare each base image once: a root-owned qcow2 layer on it holding the guest runner
and the hook that starts it at boot.

Jobs then start without any libguestfs launch: their overlay sits on the prepared layer
(base <- prepared <- job). The layer is keyed by (base sha256, runner sha256, boot hook,
the base's path), all in its file name, so a change of any of them gives a new layer and
``racf-vm gc`` removes the old one when no job holds it. A cached image's base path is
its version link (racf_vm.images.versions), whose content never changes.

``images maintain`` prepares the master copy with a maintenance layer: the same runner
and hook, but the files the hook replaces are first moved aside into ``/racf/orig``, so
the runner can put them back before the maintained image is committed.

libguestfs, the tool that writes into images, runs as the unprivileged preparation
account (``[guestfs] user``) with private temporary and cache directories, never as root
and never in the job's /tmp. It writes a staged copy of the layer; root then copies the
bytes into a file of its own and validates that file's header (exactly one backing file,
the expected base, its format named) before moving it into place. So what the account
could still change afterwards, and any header it wrote, never reaches QEMU unchecked.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pwd
import shutil
import stat
import time
from dataclasses import dataclass

from racf_vm.core import locking, runcmd
from racf_vm.core.child import run_in_child
from racf_vm.core.errors import ConfigError, RefusedError, TemporaryError
from racf_vm.guest.guestfs import GuestfsSettings, guestfs_apply
from racf_vm.guest.install import runner_entries
from racf_vm.images.catalog import ImageEntry
from racf_vm.images.imageheader import (
    BaseImageInfo,
    backing_file_name,
    validate_base_image,
)

log = logging.getLogger(__name__)

PREPARED_DIR = "prepared"
STAGING_DIR = ".staging"
LOCK_DIR = ".locks"
HOME_DIR = "prepare-home"  # the preparation account's own tmp/ and cache/
QEMU_IMG = "/usr/bin/qemu-img"
COPY_CHUNK = 1 << 20


@dataclass(frozen=True)
class PrepAccount:
    name: str
    uid: int
    gid: int


def layer_name(entry: ImageEntry, runner: bytes, maintenance: bool = False) -> str:
    """The layer's file name: the image, then every input the layer depends on (the base
    is ``entry.path``; its path matters too: the layer's header names it)."""
    if not entry.sha256:
        raise ValueError(f"image {entry.name}: a layer needs the resolved sha256")
    hook = entry.context.hook.replace(".", "") + ("-maint" if maintenance else "")
    where = hashlib.sha256(entry.path.encode()).hexdigest()[:8]
    return (f"{entry.name}-{entry.sha256[:16]}-{hashlib.sha256(runner).hexdigest()[:16]}-"
            f"{where}-{hook}.qcow2")


def prepared_dir(state_dir: str) -> str:
    return os.path.join(state_dir, PREPARED_DIR)


def prep_account(name: str) -> PrepAccount:
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        raise ConfigError(f"the image preparation account {name!r} does not exist; "
                          "create it with make install (or set [guestfs] user)") from None
    if pw.pw_uid == 0 or pw.pw_gid == 0:
        raise ConfigError(f"the image preparation account {name!r} must not be root")
    return PrepAccount(name, pw.pw_uid, pw.pw_gid)


def _own_dir(path: str, uid: int, gid: int, mode: int) -> str:
    """``path`` as a real directory of ``uid`` with ``mode`` (created if missing)."""
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise RefusedError(f"{path} must be a directory (not a symlink)")
    if (st.st_uid, stat.S_IMODE(st.st_mode)) != (uid, mode):
        if st.st_uid not in (0, uid):
            raise RefusedError(f"{path} belongs to uid {st.st_uid}; remove it")
        os.chown(path, uid, gid, follow_symlinks=False)
        os.chmod(path, mode, follow_symlinks=False)
    return path


def ensure_prepared(entry: ImageEntry, base: BaseImageInfo, runner: bytes, config,
                    accel: str, *, maintenance: bool = False) -> BaseImageInfo:
    """The validated prepared layer of ``entry`` (made first when missing; concurrent
    callers wait, within ``[timeouts] prepare``, for the one that makes it).
    ``maintenance``: the layer ``images maintain`` boots the master copy on."""
    if os.path.normpath(entry.path) != os.path.normpath(base.path):
        raise ValueError(f"image {entry.name}: the entry's path is not the base's")
    directory = _own_dir(prepared_dir(config.paths.state_dir), 0, 0, 0o755)
    name = layer_name(entry, runner, maintenance)
    path = os.path.join(directory, name)
    expect = (base.path, base.format)
    if os.path.lexists(path):
        return validate_base_image(path, "qcow2", expect)
    locks = _own_dir(os.path.join(directory, LOCK_DIR), 0, 0, 0o700)
    with locking.locked(os.path.join(locks, name), timeout=config.timeouts.prepare,
                        what=f"another racf-vm preparing image {entry.name}"):
        if not os.path.lexists(path):
            entries = runner_entries(runner, entry.context.hook, keep_originals=maintenance)
            _prepare(entry, base, entries, config, accel, directory, name)
    return validate_base_image(path, "qcow2", expect)


def _prepare(entry, base, entries, config, accel, directory, name) -> None:
    account = prep_account(config.guestfs.user)
    home = _own_dir(os.path.join(config.paths.state_dir, HOME_DIR), account.uid, account.gid, 0o700)
    settings = GuestfsSettings(
        backend=config.guestfs.backend, force_tcg=accel != "kvm",
        memsize_mib=config.guestfs.memsize_mib,
        cachedir=_own_dir(os.path.join(home, "cache"), account.uid, account.gid, 0o700),
        tmpdir=_own_dir(os.path.join(home, "tmp"), account.uid, account.gid, 0o700),
    )
    staging_root = _own_dir(os.path.join(directory, STAGING_DIR), 0, 0, 0o711)
    staging = os.path.join(staging_root, f"{name}.{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    os.mkdir(staging, 0o700)
    try:
        os.chown(staging, account.uid, account.gid)
        staged = os.path.join(staging, "layer.qcow2")
        runcmd.run([QEMU_IMG, "create", "-q", "-f", "qcow2", "-F", base.format, "-b", base.path, staged],
                   timeout=60, what="qemu-img create")
        os.chown(staged, account.uid, account.gid)
        log.info("preparing image %s as %s (%s)", entry.name, account.name, name)
        started = time.monotonic()
        _write_as_account(account, staged, entry, entries, settings, config.timeouts.prepare)
        _take_over(staged, account, directory, name, (base.path, base.format))
        log.info("prepared image %s in %.1fs", entry.name, time.monotonic() - started)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_as_account(account: PrepAccount, staged: str, entry: ImageEntry, entries,
                      settings: GuestfsSettings, timeout: float) -> None:
    def body(_stream) -> bool:
        os.setgroups([])
        os.setresgid(account.gid, account.gid, account.gid)
        os.setresuid(account.uid, account.uid, account.uid)
        # libguestfs reads LIBGUESTFS_*, TMPDIR, HOME and XDG_RUNTIME_DIR (its sockets):
        # only ours, all in the account's private directories
        os.environ.clear()
        os.environ.update({"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
                           "HOME": settings.cachedir, "TMPDIR": settings.tmpdir,
                           "XDG_RUNTIME_DIR": settings.tmpdir})
        os.chdir(settings.tmpdir)
        guestfs_apply(staged, entry.context.filesystem, entry.context.fstype, entries, settings)
        return True

    report = run_in_child(body, timeout=timeout, what=f"preparation of image {entry.name}")
    payload = report.payload or {}
    if payload.get("ok") is not True:
        reason = payload.get("message") or f"the preparation helper died (wait status {report.wait_status})"
        raise TemporaryError(f"preparing image {entry.name} failed: " + " ".join(str(reason).split())[-500:])


def _take_over(staged: str, account: PrepAccount, directory: str, name: str,
               expect: tuple[str, str]) -> None:
    """Copy the staged layer into a root-owned file, validate it, move it into place."""
    fd = os.open(staged, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    tmp = os.path.join(directory, f".{name}.{os.getpid()}")
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != account.uid or st.st_nlink != 1:
            raise RefusedError(f"the staged layer {staged} is not a plain file of {account.name}")
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            while chunk := os.read(fd, COPY_CHUNK):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(out, view):]
            os.fsync(out)
            os.fchmod(out, 0o644)
        finally:
            os.close(out)
        validate_base_image(tmp, "qcow2", expect)  # what the account wrote is data, not trust
        os.rename(tmp, os.path.join(directory, name))
    finally:
        os.close(fd)
        if os.path.lexists(tmp):
            os.unlink(tmp)


def current_layers(entries, runner: bytes) -> set[str]:
    """The names of the layers ``entries`` (resolved: racf_vm.images.jobimage) need now."""
    return {layer_name(entry, runner) for entry in entries}


def remove_stale_layers(state_dir: str, current: set[str]) -> tuple[list[str], list[str]]:
    """Remove every prepared layer that no current catalog image needs, or whose base left
    the cache, unless a job holds it; returns (removed, kept because in use)."""
    directory = prepared_dir(state_dir)
    removed, in_use = [], []
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(".qcow2") and not n.startswith("."))
    except FileNotFoundError:
        return removed, in_use
    for name in names:
        path = os.path.join(directory, name)
        backing = backing_file_name(path)
        if name in current and backing is not None and os.path.exists(backing):
            continue
        fd = locking.try_lock(path)  # a job holds a shared lock on the layer it runs on
        if fd is None:
            in_use.append(name)
            continue
        try:
            os.unlink(path)
            removed.append(name)
            log.info("removed the prepared layer %s (%s)", name,
                     "its base left the cache" if name in current else "no image needs it")
        finally:
            os.close(fd)
    return removed, in_use
