"""Fixed addresses on the site network: one file per job in a site dnsmasq's hostsdir.

    with sitedhcp.site_reservation(config.network, tag) as res:   # None when off
        ... boot the guest with res.mac: the site's DHCP gives it res.ip ...

The directory (``[network] trusted_dhcp_hostsdir``) is what a site dnsmasq reads with
``--dhcp-hostsdir``: it picks up new files by itself. A reservation is taken under a lock
(a dot file in the directory, which dnsmasq ignores) with a bounded wait: the addresses
every file names are taken, the lowest free one of the pool is planned
(racf_vm.vm.trustednet), and ``racf-<tag>`` appears whole (written as a dot file, then
renamed). It is removed on every exit path of the job; ``gc_reservations`` removes the
files whose tag's owner is gone (a SIGKILLed wrapper), judged from the names alone.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

from racf_vm.config.model import NetworkConfig
from racf_vm.core import files, jobtag, locking
from racf_vm.core.errors import RacfError, TemporaryError
from racf_vm.trust import pathtrust
from racf_vm.vm import trustednet
from racf_vm.vm.trustednet import SiteReservation

log = logging.getLogger(__name__)

LOCK_NAME = ".racf-vm.lock"
LOCK_TIMEOUT = 60.0  # held for a directory listing and one small file: seconds at most
MAX_FILE_BYTES = 64 * 1024  # a hosts file of the site's own among ours


@contextlib.contextmanager
def site_reservation(net: NetworkConfig, tag: str) -> Iterator[Optional[SiteReservation]]:
    """The job's reservation while the block runs; None when the site hands out no fixed
    addresses (the guest still has its per-job MAC)."""
    if not net.trusted_dhcp_hostsdir:
        yield None
        return
    res = reserve(net, tag)
    try:
        yield res
    finally:
        release(net.trusted_dhcp_hostsdir, res)


def reserve(net: NetworkConfig, tag: str) -> SiteReservation:
    """Plan and write ``tag``'s reservation; RefusedError for an untrusted directory,
    TemporaryError when the pool is used up or the lock is held too long."""
    hostsdir = net.trusted_dhcp_hostsdir
    pathtrust.check_trusted_dir(hostsdir)
    with locking.locked(os.path.join(hostsdir, LOCK_NAME), timeout=LOCK_TIMEOUT,
                        what=f"another racf-vm reserving a site address ({hostsdir})"):
        res = trustednet.plan_reservation(net.trusted_mac_prefix, net.trusted_pool, tag,
                                          _taken(hostsdir))
        _write(hostsdir, res)
    log.info("job %s: site network reservation %s -> %s (%s)", tag, res.mac, res.ip,
             os.path.join(hostsdir, res.file_name))
    return res


def release(hostsdir: str, res: SiteReservation) -> None:
    """Remove the job's file (no lock: an unlink is atomic, and teardown must not wait)."""
    try:
        os.unlink(os.path.join(hostsdir, res.file_name))
    except FileNotFoundError:
        pass
    except OSError as exc:  # go on with the teardown: gc removes it once we are gone
        log.warning("job %s: site network reservation %s not removed (racf-vm gc will): %s",
                    res.tag, res.file_name, exc)


def _taken(hostsdir: str) -> set[str]:
    taken: set[str] = set()
    dir_fd = files.open_dir(hostsdir)
    try:
        for name in os.listdir(dir_fd):
            if name.startswith(".") or name.endswith("~"):
                continue  # dnsmasq ignores these too
            try:
                data = files.read_capped(name, MAX_FILE_BYTES, "site DHCP hosts file",
                                         error=TemporaryError, dir_fd=dir_fd)
            except TemporaryError as exc:
                # an address we cannot rule out is not handed out: refuse rather than guess
                raise TemporaryError(f"{os.path.join(hostsdir, name)}: {exc.message}; "
                                     "ask your administrator to fix the site DHCP hosts directory") from None
            taken |= trustednet.addresses_in(data.decode("utf-8", "replace"))
    finally:
        os.close(dir_fd)
    return taken


def _write(hostsdir: str, res: SiteReservation) -> None:
    dir_fd = files.open_dir(hostsdir)
    tmp = f".{res.file_name}.tmp"
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)  # a crashed writer's, under the same lock
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o644, dir_fd=dir_fd)
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o644)  # dnsmasq reads it as its own unprivileged user
            f.write(res.line)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, res.file_name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    finally:
        os.close(dir_fd)


@dataclass
class SiteGcReport:
    removed: list = field(default_factory=list)
    kept: list = field(default_factory=list)


def gc_reservations(net: NetworkConfig, is_alive: Callable = jobtag.is_alive) -> SiteGcReport:
    """Remove the reservation files of jobs whose owner is gone; leave every other file."""
    report = SiteGcReport()
    hostsdir = net.trusted_dhcp_hostsdir
    if not hostsdir:
        return report
    try:
        pathtrust.check_trusted_dir(hostsdir)
        names = sorted(os.listdir(hostsdir))
    except (RacfError, OSError) as exc:  # the rest of gc goes on; the admin hears of it
        log.warning("site network reservations left alone: %s", getattr(exc, "message", exc))
        return report
    for name in names:
        owner = trustednet.owner_of_file(name)
        if owner is None:
            continue  # the site's own file, or our lock
        if is_alive(owner):
            report.kept.append(name)
            continue
        log.info("removing orphaned site network reservation %s", os.path.join(hostsdir, name))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(hostsdir, name))
        report.removed.append(name)
    return report
