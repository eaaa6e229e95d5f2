"""One job, carried out: gather what the plan needs, make the plan, execute it.

The decisions are racf_vm.job.plan's; the guest's lifetime is racf_vm.job.supervise's.
Every resource the job creates is entered into one ExitStack the moment it exists (the
holds on the base image and its prepared layer, the job directory, the libvirt
connection, the network lease, the domain), so ``cleanup`` removes them on every path: success, error, and SIGTERM from
HTCondor. SIGKILL is covered by libvirt's autodestroy and ``racf-vm gc``.
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import pwd
import signal
import time
from typing import Optional

from racf_vm import config as config_mod
from racf_vm.condor import chirp, intake, sandbox
from racf_vm.condor.request import JobRequest
from racf_vm.config.integration import find_profile
from racf_vm.core import jobtag, logsetup
from racf_vm.core.errors import Cancelled, ConfigError, JobError, RefusedError
from racf_vm.guest import channels, contextdisk, install
from racf_vm.images import catalog, imageheader, jobimage, locks, prepare
from racf_vm.job import plan as planner
from racf_vm.job import storage
from racf_vm.job.supervise import Supervisor
from racf_vm.trust import pathtrust, privsep, selfcheck, starter
from racf_vm.vm import accel, disks, domain, domain_xml, sitedhcp, sizing, workspace

log = logging.getLogger(__name__)



def exec_time() -> float:
    """The time.monotonic() of this process's start (not of this line: the interpreter's
    start-up counts), so that "after exec" in the log means what it says."""
    ticks = jobtag.process_start(os.getpid())
    age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    return time.monotonic() - max(age, 0.0)


class JobRun:
    def __init__(self, *, config_path: str, caller: privsep.Caller, user_args):
        self.config_path = config_path
        self.caller = caller
        self.user_args = list(user_args)
        self.config = None
        self.request: Optional[JobRequest] = None
        self.starter_pid: Optional[int] = None
        self.verbose = False
        self.terminated = False
        self.conn = None
        self._chans = None
        self._lease = None  # the untrusted network's lease, checked while the guest runs
        self._qemu_exited = False
        self._stack = contextlib.ExitStack()  # everything the job holds, released in reverse
        self._input_manifest: list = []  # sandbox.write_input_tar's, for extract_output_tar
        self.publisher = chirp.NullPublisher()  # the VM's state into the job's ad (chirp)
        self.started_at = exec_time()

    # -- set-up -----------------------------------------------------------------
    def load_trusted_state(self) -> None:
        """Runtime and config trust, then the parent check: before any user input is parsed."""
        selfcheck.check_runtime_trust(self.config_path)
        self.config = config_mod.load_config(self.config_path)
        logsetup.set_level(self.config.log_level)
        self.starter_pid = starter.check_parent(self.config.parent.starter)
        signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum, frame) -> None:
        self.terminated = True
        if self._chans is not None:
            self._chans.interrupt()

    def _check_cancelled(self) -> None:
        if self.terminated:
            raise Cancelled()

    # -- the job ------------------------------------------------------------------
    def run(self, env_blob: bytes) -> int:
        plan = planner.plan_job(self._gather(env_blob))
        self._check_cancelled()
        return self._execute(plan)

    def _gather(self, env_blob: bytes) -> planner.PlanInputs:
        """Read, validate and measure everything the plan depends on (and hold the image)."""
        cfg = self.config
        if self.caller.uid < cfg.limits.min_uid:
            raise RefusedError(
                f"jobs of uid {self.caller.uid} may not boot VMs (site minimum is {cfg.limits.min_uid})"
            )
        try:
            user = pwd.getpwuid(self.caller.uid).pw_name
        except KeyError:
            raise RefusedError(f"uid {self.caller.uid} has no passwd entry on this node") from None
        raw = privsep.call_as_user(
            self.caller, intake.build_request_json, self.user_args, env_blob.decode("latin-1"),
            self.caller.uid, self.caller.gid, user, cfg.limits, timeout=60,
        )
        self.request = req = JobRequest.from_json(raw, cfg.limits)
        starter.check_sandbox(req.workdir, cfg.parent.execute, self.starter_pid)
        find_profile(cfg.profiles, req.profile)  # an unknown profile fails before any work
        # forked now, before libvirt's threads exist; the agent is the job's user
        self.publisher = self._stack.enter_context(chirp.publisher_for(req.workdir, self.caller))
        runner = install.read_runner(cfg.paths.runner)  # refuse before any state exists
        image = self._lookup_image(req.image)
        if not image.trusted:  # a firewall that cannot work refuses the job before any state
            from netpolicy import detect

            detect.choose(cfg.untrusted_network.backend, detect.host_flavour())
        image, base, layer, kind = self.image_inputs(image, runner)
        return planner.PlanInputs(
            request=req, image=image, base=base, layer=layer, slot=sizing.read_slot(), config=cfg,
            accel=kind, owner=jobtag.self_owner(),
            qemu_uid=pwd.getpwnam(cfg.libvirt.qemu_user).pw_uid,
            qemu_gid=grp.getgrnam(cfg.libvirt.qemu_group).gr_gid,
        )

    def image_inputs(self, image, runner: bytes):
        """The job's image at its start (racf_vm.images.jobimage: the version it runs,
        fetched if needed, held), its validated base, its prepared layer (held) and the
        accelerator: (resolved entry, base, layer, accel)."""
        cfg = self.config
        image = self._stack.enter_context(jobimage.hold_for_job(image, cfg)).entry
        pathtrust.check_trusted_file(image.path)
        base = imageheader.validate_base_image(image.path, image.format)
        for boot_file in (image.boot.kernel, image.boot.initrd):
            if boot_file:
                pathtrust.check_trusted_file(boot_file)
        kind = accel.choose_accel(cfg.libvirt.accel, cfg.paths.state_dir, cfg.libvirt.emulator)
        layer = prepare.ensure_prepared(image, base, runner, cfg, kind)
        self._stack.enter_context(locks.hold_image(layer.path))
        return image, base, layer, kind

    def _lookup_image(self, name: str):
        cat = catalog.load_catalog(self.config.paths.catalog_dir, check_trust=pathtrust.check_trusted_file)
        entry = cat.lookup(name)
        if not jobimage.cache_managed(entry, self.config):
            pathtrust.check_trusted_file(entry.path)  # a cached one is checked once resolved
        if entry.checksum_is_placeholder:
            raise ConfigError(
                f"image '{name}': the catalog still has the example placeholder sha256; "
                "ask your administrator to put the image's real checksum in the catalog"
            )
        return entry

    def _execute(self, plan: planner.JobPlan) -> int:
        cfg, t = self.config, plan.timeouts
        log.info("VM size: %d CPUs, %d MiB", plan.size.cpus, plan.size.memory_mib)
        workspace.make_job_dir(cfg.paths.state_dir, plan.tag)
        self._stack.callback(workspace.remove_job_dir, plan.job_dir)
        self._write_context_disk(plan)
        self._check_cancelled()
        # the overlay may grow to the image's size, the output archive to its cap, the
        # storage disks to theirs
        workspace.check_free_space(
            plan.job_dir, plan.chain[0].virtual_size + cfg.limits.max_output_bytes + plan.storage.may_grow_to,
            "the job's disks")
        storage.make_disks(plan.storage, self.caller, self.request.workdir, plan.domain.qemu_uid,
                           plan.domain.qemu_gid, t.sandbox)
        self._check_cancelled()
        layer = plan.chain[0]
        disks.create_overlay(plan.job_dir, layer.path, layer.format,
                             plan.domain.qemu_uid, plan.domain.qemu_gid)
        self.conn = domain.open_connection(cfg.libvirt.uri, t.libvirt_connect)
        self._stack.callback(self._close_connection)
        address = {}
        if plan.network == "untrusted":
            import netpolicy

            lease = self._lease = self._stack.enter_context(netpolicy.untrusted_lease(self.conn, cfg, plan.tag))
            plan = plan.with_mac(lease.mac)
            address["RacfVMAddress"] = lease.ip
        elif plan.network == "bridge":  # a fixed address from the site's DHCP, if it gives them
            site = self._stack.enter_context(sitedhcp.site_reservation(cfg.network, plan.tag))
            if site is not None:
                plan = plan.with_mac(site.mac)
                address["RacfVMAddress"] = site.ip
        self._check_cancelled()
        for image in plan.chain:  # QEMU must get the very files we validated
            imageheader.recheck_base_image(image)
        self.publisher.update(RacfVMState="booting",
                              RacfVMAccel="kvm" if plan.domain.domain_type == "kvm" else "tcg", **address)
        return self._boot_and_wait(plan)

    def _write_context_disk(self, plan: planner.JobPlan) -> None:
        """The job's context disk: written by root from the validated request, with the
        sandbox's input files tarred into it by a child running as the job's user."""
        disk = plan.context_disk
        fd = os.open(disk.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w+b") as out:

            def write_input(stream) -> None:
                env = dict(self.request.env) if plan.withhold_credentials else None
                sent = privsep.call_as_user(
                    self.caller, sandbox.write_input_tar, self.request.workdir, env,
                    stream_to=stream, stream_limit=self.config.limits.max_input_bytes,
                    timeout=plan.timeouts.sandbox, what="job's input files",
                )
                self._input_manifest = sent["manifest"]
                if sent["withheld"]:
                    log.info("credentials withheld from the guest: %s", ", ".join(sent["withheld"]))

            # the workdir is the starter's sandbox (checked against [parent] execute), so
            # its parent is a directory of the site's choosing, never the user's
            workdir_root = os.path.dirname(plan.guest_request.workdir)
            contextdisk.write_context_disk(out, plan.guest_request, workdir_root, write_input)
            os.fchown(out.fileno(), plan.domain.qemu_uid, plan.domain.qemu_gid)
            os.fchmod(out.fileno(), 0o400)

    # -- the guest ----------------------------------------------------------------
    def _boot_and_wait(self, plan: planner.JobPlan) -> int:
        dom = domain.start_domain(self.conn, domain_xml.build_domain_xml(plan.domain))
        self._stack.callback(self._destroy_unless_exited, dom)
        log.info("domain %s started %.2fs after exec", plan.domain.name, time.monotonic() - self.started_at)
        fd = os.open(plan.output_tar, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w+b") as spool:
            chans = channels.GuestChannels(domain.channel_socket_paths(dom),
                                           max_output_bytes=self.config.limits.max_output_bytes)
            self._chans = chans
            try:
                chans.connect(timeout=plan.timeouts.libvirt_connect)
                outcome = Supervisor(dom, chans, spool, plan.timeouts, self.config.limits,
                                     exec_time=self.started_at, terminated=lambda: self.terminated,
                                     checks=self._health_checks(dom),
                                     on_started=lambda: self.publisher.update(RacfVMState="running")).run()
            finally:
                self._chans = None
                chans.close()
            self._qemu_exited = True
            log.info("guest gone %.2fs after exec", time.monotonic() - self.started_at)
            self.publisher.update(RacfVMState="exited", RacfVMExitCode=outcome.exit_status)
            if outcome.output_overflow:
                raise JobError(
                    f"the job's output files exceed the site limit of {self.config.limits.max_output_bytes} bytes"
                )
            if outcome.output_bytes:
                self._return_output(spool, plan)
        for item in plan.storage.exports:
            storage.export(item, self.caller, self.request.workdir, plan.timeouts.sandbox)
        return outcome.exit_status

    def _health_checks(self, dom) -> list:
        """What must stay true while the guest runs (racf_vm.job.supervise). For an untrusted
        guest, its confinement: a firewall reload or a removed rule ends the job (75) rather
        than leave the guest unconfined; the first check also pins its bridge port."""
        checks = [lambda: domain.check_not_stopped_on_error(dom)]
        if self._lease is not None:
            checks.append(self._lease.check)
        return checks

    def _return_output(self, spool, plan: planner.JobPlan) -> None:
        spool.flush()
        spool.seek(0)
        counts = privsep.call_as_user(
            self.caller, sandbox.extract_output_tar, self.request.workdir, self._input_manifest,
            self.config.limits.max_output_bytes,
            pass_file=spool, timeout=plan.timeouts.sandbox, what="job's output files",
        )
        for kind, what in (("failed", "could not be written back to the sandbox"),
                           ("refused", "refused (links, devices, FIFOs, sparse files)"),
                           ("conflicts", "kept the sandbox's version (changed there while the job ran)")):
            if counts[kind]:
                log.warning("%d output entr%s %s; first: %s", counts[kind],
                            "y" if counts[kind] == 1 else "ies", what, "; ".join(counts[f"first_{kind}"]))

    # -- teardown -----------------------------------------------------------------
    def _destroy_unless_exited(self, dom) -> None:
        # Once QEMU has exited, libvirt's own bookkeeping takes ~1.5 s more; closing our
        # connection lets autodestroy finish it without making the job wait.
        if not self._qemu_exited:
            domain.destroy(dom)

    def _close_connection(self) -> None:
        domain.close_connection(self.conn)
        self.conn = None

    def cleanup(self) -> None:
        """Release everything this job holds, newest first. Safe to call more than once."""
        try:
            self._stack.close()
        finally:
            log.info("teardown done %.2fs after exec", time.monotonic() - self.started_at)
