"""``racf-vm-libvirt-xml``: condor_vm-gahp's LIBVIRT_XML_SCRIPT (htcondor.md §4.2).

condor_vm-gahp runs it as root, with LIBVIRT_XML_SCRIPT_ARGS as arguments (here: an
optional ``--config PATH``), writes the VM job's ad to its stdin and closes it, reads the
domain XML from its stdout and creates a transient domain from it (qemu:///session opened
by root, which libvirt serves from the system daemon). Exit 0 with the XML, or non-zero
with one line ``racf-vm: ...`` on stderr (the gahp logs it and the job does not start).

Order of work: read and parse the ad as nobody; pick the catalog image from the staged
disk (racf_vm.condor.vmudisk, read as the job's user); refuse what is wrong before any
state exists; then make the job directory, a fresh overlay on the verified base and,
for an untrusted image, the NAT network lease; print the XML of the typed builder. If
anything fails after that, what was made is removed before the error is reported. What
outlives the script belongs to condor_vm-gahp's lifetime; ``racf-vm gc`` removes it once
the gahp has exited (racf_vm.condor.vmuplan).
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import pwd
import sys
from typing import Optional

from racf_vm.condor import adio, tools, vmudisk
from racf_vm.condor.vmuad import VmuRequest, parse_vmu_ad_json
from racf_vm.condor.vmuplan import VmuInputs, VmuPlan, plan_vmu
from racf_vm.core import jobtag, logsetup
from racf_vm.core.errors import ConfigError, RefusedError, UsageError
from racf_vm.images import catalog as catalog_mod
from racf_vm.images import imageheader, jobimage
from racf_vm.trust import pathtrust, privsep
from racf_vm.vm import accel, disks, domain, domain_xml, sizing, workspace

log = logging.getLogger(__name__)

PARSE_ACCOUNT = "nobody"  # who parses the gahp's ad: it is no user's file, but mostly user data


def parse_account() -> privsep.Caller:
    try:
        pw = pwd.getpwnam(PARSE_ACCOUNT)
    except KeyError:
        raise ConfigError(f"the account {PARSE_ACCOUNT} does not exist on this node") from None
    return privsep.Caller(pw.pw_uid, pw.pw_gid)


def gahp_owner() -> jobtag.Owner:
    """Our parent, condor_vm-gahp: what outlives us lives as long as it does."""
    ppid = os.getppid()
    start = jobtag.process_start(ppid) if ppid > 1 else None
    if start is None:
        raise RefusedError("racf-vm-libvirt-xml must be run by condor_vm-gahp (LIBVIRT_XML_SCRIPT); "
                           f"its parent process {ppid} is gone")
    return jobtag.Owner(ppid, start)


class XmlScript:
    def __init__(self, config, request: VmuRequest):
        self.config = config
        self.request = request
        self.base: Optional[imageheader.BaseImageInfo] = None
        self._always = contextlib.ExitStack()  # closed when the run ends (the libvirt connection)
        self._undo = contextlib.ExitStack()  # what this run made, removed if it fails

    def run(self) -> str:
        """The domain XML; on failure, nothing this run made is left behind."""
        with self._always, self._undo:
            plan = plan_vmu(self.gather())
            xml = self.execute(plan)
            self._undo.pop_all()  # success: from now on it is the gahp's, and gc's
            return xml

    def gather(self) -> VmuInputs:
        cfg, req = self.config, self.request
        cat = catalog_mod.load_catalog(cfg.paths.catalog_dir, check_trust=pathtrust.check_trusted_file)
        if req.image is not None:
            cat.lookup(req.image)  # an unknown image is refused before anything is read
        uid, gid = vmudisk.sandbox_owner(req.working_dir, cfg.parent.execute, cfg.limits.min_uid)
        result = privsep.call_as_user(privsep.Caller(uid, gid), vmudisk.read_disk_header,
                                      req.working_dir, req.disk_file, timeout=60,
                                      what="VM's staged disk")
        head, size = vmudisk.decode_header(result)
        image = vmudisk.identify_image(head, size, cat, req.image, req.disk_file)
        pathtrust.check_trusted_file(image.path)
        if image.checksum_is_placeholder:
            raise ConfigError(f"image '{image.name}': the catalog still has the example "
                              "placeholder sha256; put the image's real checksum there")
        if not image.trusted:  # a firewall that cannot work refuses before any state
            from netpolicy import detect

            detect.choose(cfg.untrusted_network.backend, detect.host_flavour())
        owner = gahp_owner()
        # root may fetch into the node cache; verified. The VM boots on the version link, a
        # file that a newer version of the image never replaces (racf_vm.images.versions)
        image = jobimage.resolve(image, cfg)
        self.base = base = imageheader.validate_base_image(image.path, image.format)
        for boot_file in (image.boot.kernel, image.boot.initrd):
            if boot_file:
                pathtrust.check_trusted_file(boot_file)
        kind = accel.choose_accel(cfg.libvirt.accel, cfg.paths.state_dir, cfg.libvirt.emulator)
        return VmuInputs(
            request=req, image=image, base=base, slot=sizing.read_slot(), config=cfg, accel=kind,
            owner=owner, script_pid=os.getpid(), uid=uid,
            qemu_uid=pwd.getpwnam(cfg.libvirt.qemu_user).pw_uid,
            qemu_gid=grp.getgrnam(cfg.libvirt.qemu_group).gr_gid,
        )

    def execute(self, plan: VmuPlan) -> str:
        cfg, base = self.config, self.base
        workspace.make_job_dir(cfg.paths.state_dir, plan.tag)
        self._undo.callback(workspace.remove_job_dir, plan.job_dir)
        workspace.check_free_space(plan.job_dir, base.virtual_size, "the VM's disk")
        disks.create_overlay(plan.job_dir, base.path, base.format,
                             plan.domain.qemu_uid, plan.domain.qemu_gid)
        if plan.network == "untrusted":
            plan = plan.with_mac(self._lease(plan.tag))
        if not plan.ready_to_boot:
            raise RefusedError("the VM's network is not ready")
        imageheader.recheck_base_image(base)  # QEMU must get the very file we validated
        log.info("VM %s: %d MiB, %d vCPUs, network %s, tag %s", plan.domain.name,
                 plan.size.memory_mib, plan.size.cpus, plan.network, plan.tag)
        return domain_xml.build_domain_xml(plan.domain)

    def _lease(self, tag: str) -> str:
        import netpolicy

        conn = domain.open_connection(self.config.libvirt.uri, self.config.timeouts.libvirt_connect)
        self._always.callback(domain.close_connection, conn)  # after any undo below
        lease, release = netpolicy.acquire_untrusted(conn, self.config, tag)
        self._undo.callback(release)
        return lease.mac


def _parse_args(argv: list[str]) -> str:
    path, rest = tools.split_config_option(argv)
    if rest:
        raise UsageError(f"unexpected arguments {rest!r:.80}; usage: racf-vm-libvirt-xml "
                         "[--config PATH] < job ad")
    return path


def main(argv: Optional[list[str]] = None) -> int:
    def body() -> int:
        config_path = _parse_args(list(sys.argv[1:] if argv is None else argv))
        if os.geteuid() != 0:
            raise RefusedError("racf-vm-libvirt-xml runs as root (condor_vm-gahp runs "
                               "LIBVIRT_XML_SCRIPT as root)")
        cfg = tools.load_config(config_path)
        logsetup.set_level(cfg.log_level)
        text = adio.read_stdin(cfg.limits.max_job_ad_bytes, "the VM job ad")
        raw = privsep.call_as_user(parse_account(), parse_vmu_ad_json, text, timeout=60,
                                   what="VM job ad")
        xml = XmlScript(cfg, VmuRequest.from_json(raw)).run()
        sys.stdout.write(xml + "\n")
        sys.stdout.flush()
        return 0

    return tools.run_tool(body)
