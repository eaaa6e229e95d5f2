"""``racf-vm images maintain MASTER --run CMD OUT``: boot the master copy writable, run CMD
as root in it, and on success commit, compress, checksum, sign and publish it (seed 003:
"periodically booting the master copies, running a yum update, recomputing the
checksums, compressing them, and uploading the new image and checksum file").

The boot is a job's in every part that matters (racf_vm.job.maintplan): the master's
maintenance layer made by racf_vm.images.prepare, an overlay made by racf_vm.vm.disks in
a job directory ``racf-vm gc`` knows, the domain XML of racf_vm.vm.domain_xml started by
racf_vm.vm.domain, the guest's output forwarded live by racf_vm.guest.channels and
racf_vm.job.supervise. Only the context disk differs (racf_vm.guest.maintdisk: the runner
then runs the command as root) and the supervisor waits for a clean power-off instead
of destroying the guest. The master copy is replaced only after all that succeeded
(racf_vm.images.mastercopy), so a failing command leaves it unchanged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import grp
import logging
import os
import pwd
import signal
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from racf_vm.core import jobtag, locking
from racf_vm.core.errors import Cancelled, JobError, TemporaryError
from racf_vm.guest import channels, install, maintdisk
from racf_vm.images import imageheader, locks, mastercopy, prepare, publish
from racf_vm.images.catalog import ImageEntry
from racf_vm.images.stream import Progress
from racf_vm.job.maintplan import MaintenanceInputs, MaintenancePlan, plan_maintenance
from racf_vm.job.supervise import Supervisor
from racf_vm.vm import accel, disks, domain, domain_xml, workspace

log = logging.getLogger(__name__)

LOCK_DIR = "maintain-locks"


@dataclass(frozen=True)
class Options:
    command: str
    out: str
    signers: Sequence = ()
    codec: str = "gzip"
    level: Optional[int] = None
    cpus: int = 1
    memory_mib: int = 1024
    timeout: float = 4 * 3600.0


@dataclass(frozen=True)
class Result:
    old_sha256: str
    new_sha256: str
    published: str  # the file written into OUT
    serial: int  # of the signed list (0: unsigned)


class Phases:
    """What the command shows: ``phase(text)`` lines and ``bar(label)`` transfers."""

    def __init__(self, phase: Callable[[str], None], bar: Callable[[str], Progress]):
        self.phase, self.bar = phase, bar


class Maintenance:
    def __init__(self, config, master: str, template: ImageEntry, options: Options, shown: Phases):
        self.config, self.master, self.template = config, master, template
        self.options, self.shown = options, shown
        self.terminated = False
        self._chans = None
        self._stack = contextlib.ExitStack()

    def _on_signal(self, signum, frame) -> None:
        self.terminated = True
        if self._chans is not None:
            self._chans.interrupt()

    def run(self) -> Result:
        old = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            with self._stack:
                return self._run()
        except Cancelled:
            raise TemporaryError(f"maintenance interrupted; the master copy {self.master} is "
                                 "unchanged") from None
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)

    def _run(self) -> Result:
        cfg, opts = self.config, self.options
        before = mastercopy.check_master(self.master, cfg)
        locks_dir = workspace.ensure_private_dir(os.path.join(cfg.paths.state_dir, LOCK_DIR))
        self._stack.enter_context(locking.locked(  # one maintenance of a master at a time
            os.path.join(locks_dir, f"{before.st_dev}-{before.st_ino}"), timeout=0.0,
            what=f"another maintenance of {self.master}"))
        base = imageheader.validate_base_image(self.master, self.template.format)
        sha = mastercopy.hash_file(self.master, self.shown.bar("checksumming the master copy"))
        if not mastercopy.same_file(before, self.master):
            raise JobError(f"{self.master} changed while it was read; try again")
        entry = dataclasses.replace(self.template, path=self.master, sha256=sha, follow=False, size=0)
        plan = self._plan(entry, base)
        net = {"none": "no network", "bridge": "the site bridge",
               "untrusted": "the untrusted NAT network"}[plan.job.network]
        self.shown.phase(f"booting {os.path.basename(self.master)} writable ({net}); the "
                         "command's output follows")
        status = self._boot(plan)
        if status != 0:
            raise JobError(f"the maintenance command exited with {status}; the master copy "
                           f"{self.master} is unchanged")
        self.shown.phase("the command succeeded and the guest powered off; committing the master copy")
        new = mastercopy.commit(plan.overlay, base, before)
        name = os.path.basename(self.master)
        self.shown.phase(f"publishing {name} into {opts.out}")
        report = publish.publish_image(
            new.path, opts.out, name=name, codec=opts.codec, level=opts.level,
            checksum_file=cfg.images.checksum_file, signers=opts.signers,
            progress=self.shown.bar(f"compressing and checksumming {name}"))
        return Result(sha, report.sha256[name], name + _suffix(opts.codec), report.serial)

    def _plan(self, entry: ImageEntry, base) -> MaintenancePlan:
        cfg, opts = self.config, self.options
        runner = install.read_runner(cfg.paths.runner)
        kind = accel.choose_accel(cfg.libvirt.accel, cfg.paths.state_dir, cfg.libvirt.emulator)
        self.shown.phase(f"preparing the master copy's maintenance layer ({kind})")
        layer = prepare.ensure_prepared(entry, base, runner, cfg, kind, maintenance=True)
        self._stack.enter_context(locks.hold_image(layer.path))
        return plan_maintenance(MaintenanceInputs(
            entry=entry, base=base, layer=layer, config=cfg, accel=kind, owner=jobtag.self_owner(),
            qemu_uid=pwd.getpwnam(cfg.libvirt.qemu_user).pw_uid,
            qemu_gid=grp.getgrnam(cfg.libvirt.qemu_group).gr_gid, command=opts.command,
            cpus=opts.cpus, memory_mib=opts.memory_mib, timeout=opts.timeout))

    def _boot(self, mplan: MaintenancePlan) -> int:
        cfg, plan = self.config, mplan.job
        workspace.make_job_dir(cfg.paths.state_dir, plan.tag)
        self._stack.callback(workspace.remove_job_dir, plan.job_dir)
        fd = os.open(plan.context_disk.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w+b") as out:
            maintdisk.write_maintenance_disk(out, mplan.argv, mplan.env)
            os.fchown(out.fileno(), plan.domain.qemu_uid, plan.domain.qemu_gid)
            os.fchmod(out.fileno(), 0o400)
        workspace.check_free_space(plan.job_dir, plan.chain[0].virtual_size, "the maintenance overlay")
        disks.create_overlay(plan.job_dir, plan.chain[0].path, "qcow2", plan.domain.qemu_uid,
                             plan.domain.qemu_gid)
        conn = domain.open_connection(cfg.libvirt.uri, plan.timeouts.libvirt_connect)
        self._stack.callback(domain.close_connection, conn)
        if plan.network == "untrusted":
            import netpolicy

            lease = self._stack.enter_context(netpolicy.untrusted_lease(conn, cfg, plan.tag))
            plan = plan.with_mac(lease.mac)
        for image in plan.chain:
            imageheader.recheck_base_image(image)
        dom = domain.start_domain(conn, domain_xml.build_domain_xml(plan.domain))
        self._stack.callback(domain.destroy, dom)
        started = time.monotonic()
        fd = os.open(plan.output_tar, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w+b") as spool:  # the runner sends an empty archive
            chans = channels.GuestChannels(domain.channel_socket_paths(dom), max_output_bytes=1 << 20)
            self._chans = chans
            try:
                chans.connect(timeout=plan.timeouts.libvirt_connect)
                outcome = Supervisor(dom, chans, spool, plan.timeouts, cfg.limits, exec_time=started,
                                     terminated=lambda: self.terminated,
                                     checks=[lambda: domain.check_not_stopped_on_error(dom)],
                                     clean_poweroff=True).run()
            finally:
                self._chans = None
                chans.close()
        if self.terminated:
            raise Cancelled()
        log.info("maintenance guest done in %.1fs, exit %d", time.monotonic() - started,
                 outcome.exit_status)
        return outcome.exit_status


def _suffix(codec: str) -> str:
    from racf_vm.images.codecs import CODECS

    return CODECS[codec].suffix


def maintain(config, master: str, template: ImageEntry, options: Options, shown: Phases) -> Result:
    return Maintenance(config, master, template, options, shown).run()
