"""One job, from validated request to the guest's exit status, with teardown.

``JobRun`` holds every resource it creates (job directory, overlay, domain) so that
``cleanup`` can remove them on every path: success, error, and SIGTERM from HTCondor.
SIGKILL is covered by libvirt's autodestroy and ``racf-vm gc``.
"""

import contextlib
import logging
import grp
import os
import pwd
import shutil
import signal
import time
from typing import Optional

from . import (
    accel,
    catalog,
    channels,
    config as config_mod,
    context,
    contextualize,
    domain,
    domain_xml,
    imageheader,
    images,
    jobrequest,
    jobtag,
    overlay,
    parent,
    pathtrust,
    privsep,
    sandbox_io,
    selfcheck,
    sizing,
)
from .errors import ConfigError, RefusedError, TemporaryError, UsageError

log = logging.getLogger(__name__)


class JobRun:
    def __init__(self, *, config_path: str, caller: privsep.Caller, user_args):
        self.config_path = config_path
        self.caller = caller
        self.user_args = list(user_args)
        self.config = None
        self.request = None
        self.verbose = False
        self.terminated = False
        self.job_dir: Optional[str] = None
        self.conn = None
        self.dom = None
        self._chans = None
        self._qemu_exited = False
        # held for the job's life: the base image's lock, the untrusted network lease
        self._held = contextlib.ExitStack()
        self.started_at = time.monotonic()

    # -- set-up -----------------------------------------------------------------
    def load_trusted_state(self) -> None:
        """Runtime and config trust, then the parent check: before any user input is parsed."""
        selfcheck.check_runtime_trust(self.config_path)
        self.config = config_mod.load_config(self.config_path)
        logging.getLogger("racf_vm").setLevel(self.config.log_level.upper())
        parent.check_parent(self.config.parent.starter)
        signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum, frame) -> None:
        self.terminated = True
        if self._chans is not None:
            self._chans.interrupt()

    def _cancelled(self) -> bool:
        return self.terminated

    def _check_cancelled(self) -> None:
        if self.terminated:
            raise contextualize.Cancelled()

    # -- the job ------------------------------------------------------------------
    def run(self, env_blob: bytes) -> int:
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
            self.caller,
            jobrequest.build_request_json,
            self.user_args,
            env_blob.decode("latin-1"),
            self.caller.uid,
            self.caller.gid,
            user,
            cfg.limits,
            timeout=60,
        )
        self.request = req = jobrequest.JobRequest.from_json(raw, cfg.limits)
        runner = _read_trusted(cfg.paths.runner)  # refuse before any state exists
        image = self._lookup_image(req.image)
        images.ensure_image(image, self.config)
        self._held.enter_context(images.hold_image(image.path))
        base = imageheader.validate_base_image(image.path, image.format)
        for boot_file in (image.boot.kernel, image.boot.initrd):
            if boot_file:
                pathtrust.check_trusted_file(boot_file)
        size = self._size(req)
        accel_kind = accel.choose_accel(cfg.libvirt.accel, cfg.paths.state_dir, cfg.libvirt.emulator)
        owner = jobtag.self_owner()
        tag = jobtag.make_tag(req.slot, req.cluster, req.proc, owner)
        self.job_dir = overlay.make_job_dir(cfg.paths.state_dir, tag)
        qemu_uid = pwd.getpwnam(cfg.libvirt.qemu_user).pw_uid
        qemu_gid = grp.getgrnam(cfg.libvirt.qemu_group).gr_gid
        overlay_path = self._prepare_overlay(req, image, base, runner, accel_kind, qemu_uid, qemu_gid)
        self._check_cancelled()
        if image.trust == "trusted":
            net_kw = {"bridge": cfg.network.trusted_bridge or None}
        else:
            net_kw = self._untrusted_network(tag)
        spec = domain_xml.DomainSpec(
            name=jobtag.DOMAIN_PREFIX + tag,
            tag=tag,
            pid=owner.pid,
            start=owner.start,
            uid=req.uid,
            domain_type="kvm" if accel_kind == "kvm" else "qemu",
            memory_mib=size.memory_mib,
            vcpus=size.cpus,
            emulator=cfg.libvirt.emulator,
            overlay_path=overlay_path,
            base_path=base.path,
            base_format=image.format,
            boot=_boot_spec(image.boot),
            qemu_uid=qemu_uid,
            qemu_gid=qemu_gid,
            machine=cfg.libvirt.machine,
            **net_kw,
        )
        self._check_cancelled()
        imageheader.recheck_base_image(base)  # qemu must get the very file we validated
        return self._boot_and_wait(domain_xml.build_domain_xml(spec), spec.name)

    def _prepare_overlay(self, req, image, base, runner: bytes, accel_kind: str, qemu_uid: int, qemu_gid: int) -> str:
        """The job's overlay on the base image, with the job written into it."""
        cfg = self.config
        input_tar = self._collect_input(req)
        self._check_cancelled()
        overlay_path = overlay.create_overlay(self.job_dir, base.path, image.format, qemu_uid, qemu_gid)
        settings = context.GuestfsSettings(
            backend=cfg.guestfs.backend,
            force_tcg=accel_kind != "kvm",
            memsize_mib=cfg.guestfs.memsize_mib,
            cachedir=_guestfs_dir(cfg.paths.state_dir),
        )
        contextualize.contextualize(
            overlay_path,
            image.context.filesystem,
            context.plan_context(req, runner, input_tar),
            settings,
            timeout=cfg.timeouts.contextualize,
            cancelled=self._cancelled,
        )
        os.unlink(input_tar)  # it now lives in the overlay
        return overlay_path

    def _lookup_image(self, name: str):
        cat = catalog.load_catalog(self.config.paths.catalog_dir, check_trust=pathtrust.check_trusted_file)
        entry = cat.lookup(name)
        pathtrust.check_trusted_file(entry.path)
        if entry.checksum_is_placeholder:
            raise ConfigError(
                f"image '{name}': the catalog still has the example placeholder sha256; "
                "ask your administrator to put the image's real checksum in the catalog"
            )
        return entry

    def _untrusted_network(self, tag: str) -> dict:
        """Reserve the job's place on the NAT network and install its rules (before boot)."""
        import netpolicy

        t = self.config.timeouts
        self.conn = domain.open_connection(self.config.libvirt.uri, t.libvirt_connect)
        lease = self._held.enter_context(netpolicy.untrusted_lease(self.conn, self.config, tag))
        return {"network": lease.network_name, "mac": lease.mac}

    def _size(self, req):
        with open("/proc/self/cgroup") as f:
            limits = sizing.read_cgroup_limits(f.read())
        host_mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1 << 20)
        size = sizing.plan_vm_size(
            limits,
            self.config.sizing,
            host_cpus=os.cpu_count() or 1,
            host_memory_mib=host_mem,
            hint_cpus=req.machine_hint_cpus,
            hint_memory_mib=req.machine_hint_memory_mib,
        )
        log.info("VM size: %d CPUs, %d MiB (cgroup %s)", size.cpus, size.memory_mib, limits)
        return size

    def _collect_input(self, req) -> Optional[str]:
        """Tar the sandbox as the user into a root-owned file the guest will receive."""
        path = os.path.join(self.job_dir, "input.tar")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as out:
            privsep.call_as_user(
                self.caller,
                sandbox_io.write_input_tar,
                req.workdir,
                stream_to=out,
                stream_limit=self.config.limits.max_input_bytes,
                timeout=self.config.timeouts.contextualize,
                what="job's input files",
            )
        return path

    # -- the guest ----------------------------------------------------------------
    def _boot_and_wait(self, xml: str, name: str) -> int:
        t = self.config.timeouts
        if self.conn is None:
            self.conn = domain.open_connection(self.config.libvirt.uri, t.libvirt_connect)
        self.dom = domain.start_domain(self.conn, xml)
        log.info("domain %s started %.2fs after exec", name, time.monotonic() - self.started_at)
        spool_path = os.path.join(self.job_dir, "output.tar")
        fd = os.open(spool_path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w+b") as spool:
            chans = channels.GuestChannels(
                domain.channel_socket_paths(self.dom), max_output_bytes=self.config.limits.max_output_bytes
            )
            self._chans = chans
            state = _GuestState(self.started_at, on_end=chans.interrupt)
            try:
                chans.connect(timeout=t.libvirt_connect)
                result = self._pump(chans, spool, state)
            finally:
                self._chans = None
                chans.close()
            if self.terminated:
                raise contextualize.Cancelled()
            log.info("guest gone %.2fs after exec", time.monotonic() - self.started_at)
            self._qemu_exited = True
            self._guest_gone(state)
            if result.output_overflow:
                raise UsageError(
                    f"the job's output files exceed the site limit of {self.config.limits.max_output_bytes} bytes"
                )
            if result.output_bytes:
                spool.flush()
                spool.seek(0)
                counts = privsep.call_as_user(
                    self.caller,
                    sandbox_io.extract_output_tar,
                    self.request.workdir,
                    pass_file=spool,
                    timeout=t.contextualize,
                    what="job's output files",
                )
                if counts["failed"]:
                    log.warning(
                        "%d output file(s) could not be written back to the sandbox (first: %s)",
                        counts["failed"],
                        counts["first_failure"],
                    )
        return state.exit_status

    @staticmethod
    def _guest_gone(state) -> None:
        if state.error is not None:
            raise TemporaryError(f"the guest could not run the job: {state.error}")
        if state.exit_status is None:
            raise TemporaryError("the guest stopped without reporting the job's exit status")

    def _pump(self, chans, spool, state):
        """Forward the guest's output until it is gone; every wait bounded by config.

        Once the job has ended and its output archive is complete, the guest is destroyed
        rather than waited for: its disk is thrown away, so its power-off buys nothing.
        """
        t = self.config.timeouts
        deadline = time.monotonic() + t.boot
        destroyed_at = drain_until = None
        while True:
            result = chans.pump(deadline, _writer(1), _writer(2), spool, state.on_status)
            if result.reason == "eof":
                return result
            if self.terminated:
                return self._stop_guest(chans, spool, state)
            now = time.monotonic()
            if destroyed_at is not None:
                if now >= destroyed_at + 10:
                    raise TemporaryError("the virtual machine did not go away after being destroyed")
                deadline = destroyed_at + 10
            elif drain_until is not None:
                # a last moment for bytes already queued on the other channels
                if now >= drain_until:
                    domain.destroy(self.dom)
                    destroyed_at = now
                deadline = drain_until if now < drain_until else now + 10
            elif state.ended_at is not None:
                if state.error is not None or _output_complete(spool):
                    drain_until = now + 0.1
                    deadline = drain_until
                    continue
                if now >= state.ended_at + t.poweroff:
                    log.warning("the job's output did not arrive within %gs of its end", t.poweroff)
                    domain.destroy(self.dom)
                    destroyed_at = now
                    deadline = now + 10
                else:
                    deadline = min(now + 0.05, state.ended_at + t.poweroff)
            elif state.started_at is not None:
                deadline = state.started_at + t.job
                if now >= deadline:
                    domain.destroy(self.dom)
                    raise TemporaryError(f"the job ran longer than the site limit of {t.job:g}s")
            elif now >= deadline:
                domain.destroy(self.dom)
                raise TemporaryError(f"the guest did not start the job within {t.boot:g}s")

    def _stop_guest(self, chans, spool, state):
        grace = self.config.timeouts.shutdown_grace
        log.warning("asked to stop: shutting the guest down (grace %gs)", grace)
        domain.request_shutdown(self.dom)
        result = chans.pump(time.monotonic() + grace, _writer(1), _writer(2), spool, state.on_status)
        if result.reason != "eof":
            domain.destroy(self.dom)
        return result

    # -- teardown -----------------------------------------------------------------
    def cleanup(self) -> None:
        """Remove everything this job created. Safe to call more than once."""
        if self.dom is not None and not self._qemu_exited:
            # (once QEMU has exited, libvirt's own bookkeeping takes ~1.5 s more; closing our
            # connection below lets autodestroy finish it without making the job wait)
            try:
                domain.destroy(self.dom)
            except Exception:  # teardown must go on; gc will find what is left
                log.warning("could not destroy the domain", exc_info=True)
            self.dom = None
        try:
            # the network lease (rules, reservation, conntrack entries: after the guest is
            # gone, before the connection closes) and the base image's lock
            self._held.close()
        except Exception:
            log.warning("could not release the job's network; racf-vm gc will", exc_info=True)
        if self.conn is not None:
            domain.close_connection(self.conn)
            self.conn = None
        if self.job_dir is not None:
            shutil.rmtree(self.job_dir, ignore_errors=True)
            if os.path.exists(self.job_dir):
                log.warning("could not remove %s; racf-vm gc will", self.job_dir)
            self.job_dir = None
        log.info("teardown done %.2fs after exec", time.monotonic() - self.started_at)


class _GuestState:
    """What the runner reported on the status channel."""

    def __init__(self, exec_time: float, on_end):
        self.exec_time = exec_time
        self._on_end = on_end  # wakes the pump so the host can stop waiting early
        self.started_at: Optional[float] = None
        self.ended_at: Optional[float] = None
        self.exit_status: Optional[int] = None
        self.error: Optional[str] = None

    def on_status(self, line) -> None:
        now = time.monotonic()
        if line.kind == "started" and self.started_at is None:
            self.started_at = now
            log.info("guest command started %.2fs after exec", now - self.exec_time)
        elif line.kind == "exit" and self.ended_at is None:
            self.exit_status, self.ended_at = line.code, now
            log.info("guest command exited with %d, %.2fs after exec", line.code, now - self.exec_time)
            self._on_end()
        elif line.kind == "error" and self.ended_at is None:
            self.error, self.ended_at = line.text, now
            self._on_end()
        elif line.kind == "invalid":
            log.warning("ignoring an invalid status line from the guest: %r", line.text)

def _writer(fd: int):
    def write(data: bytes) -> None:
        try:
            while data:
                n = os.write(fd, data)
                data = data[n:]
        except OSError:  # the job's stdout went away: keep the job running regardless
            pass

    return write


def _boot_spec(boot):
    if boot.method == "kernel":
        return domain_xml.KernelBoot(boot.kernel, boot.initrd or None, boot.cmdline)
    return domain_xml.BootloaderBoot()


def _output_complete(spool) -> bool:
    spool.flush()
    position = spool.tell()
    try:
        return sandbox_io.archive_complete(spool)
    finally:
        spool.seek(position)


def _read_trusted(path: str) -> bytes:
    pathtrust.check_trusted_file(path)
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        return f.read(1 << 20)


def _guestfs_dir(state_dir: str) -> str:
    path = os.path.join(state_dir, "guestfs")
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.lstat(path)
    if st.st_uid != 0 or st.st_mode & 0o077:
        raise RefusedError(f"{path} must be a root-owned 0700 directory")
    return path
