"""The plan of one ``racf-vm images maintain`` boot, in one pure function.

Like a job's (racf_vm.job.plan), from which it takes the boot, the network rule (the
image's trust decides: a trusted master on the site bridge if there is one, an untrusted
one behind the NAT network) and the disk layout: a writable overlay on the master's
maintenance layer (master <- maintenance layer <- overlay) and a read-only context disk,
this time the maintenance one (racf_vm.guest.maintdisk). The master copy itself is
only ever a backing file, opened read-only; the overlay is what the command changes.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from racf_vm.config import Config, TimeoutsConfig
from racf_vm.core import jobtag
from racf_vm.guest.protocol import CHANNEL_NAMES
from racf_vm.images.catalog import ImageEntry
from racf_vm.images.imageheader import BaseImageInfo
from racf_vm.job.plan import OUTPUT_TAR, JobPlan, boot_disks, boot_of, plan_network
from racf_vm.job.storageplan import StoragePlan
from racf_vm.vm import sizing, workspace
from racf_vm.vm.domain_xml import DomainSpec

TAG_SLOT = "maintain"
GUEST_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class MaintenanceInputs:
    entry: ImageEntry  # the master copy: path and sha256 of the master, boot and context
    base: BaseImageInfo  # the master, validated
    layer: BaseImageInfo  # its maintenance layer (racf_vm.images.prepare)
    config: Config
    accel: str
    owner: jobtag.Owner
    qemu_uid: int
    qemu_gid: int
    command: str  # run by /bin/sh -c as root in the guest
    cpus: int = 1
    memory_mib: int = 1024
    timeout: float = 4 * 3600.0  # the command's own limit


@dataclass(frozen=True)
class MaintenancePlan:
    job: JobPlan  # tag, job dir, disks, network, domain, timeouts: as for a job
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]

    @property
    def overlay(self) -> str:
        return self.job.root_disk.path


def plan_maintenance(inputs: MaintenanceInputs) -> MaintenancePlan:
    cfg, entry = inputs.config, inputs.entry
    tag = jobtag.make_tag(TAG_SLOT, 0, 0, inputs.owner)
    job_dir = os.path.join(cfg.paths.state_dir, workspace.JOBS_DIR, tag)
    root, context = boot_disks(job_dir, inputs.layer, inputs.base)
    network, nics = plan_network(entry, cfg, inputs.owner.pid)
    domain = DomainSpec(
        name=jobtag.DOMAIN_PREFIX + tag, tag=tag, pid=inputs.owner.pid, start=inputs.owner.start,
        uid=0, domain_type="kvm" if inputs.accel == "kvm" else "qemu",
        memory_mib=inputs.memory_mib, vcpus=inputs.cpus, emulator=cfg.libvirt.emulator,
        boot=boot_of(entry.boot), qemu_uid=inputs.qemu_uid, qemu_gid=inputs.qemu_gid,
        disks=(root, context), channels=CHANNEL_NAMES, nics=nics, machine=cfg.libvirt.machine,
    )
    timeouts: TimeoutsConfig = dataclasses.replace(cfg.timeouts, job=inputs.timeout)
    size = sizing.VMSize(inputs.cpus, inputs.memory_mib)
    job = JobPlan(tag=tag, job_dir=job_dir, chain=(inputs.layer, inputs.base), size=size,
                  network=network, domain=domain, guest_request=None, withhold_credentials=True,
                  storage=StoragePlan(),  # the master's own disks only
                  output_tar=os.path.join(job_dir, OUTPUT_TAR), timeouts=timeouts)
    env = (("PATH", GUEST_PATH), ("HOME", "/root"), ("LANG", "C"), ("TERM", "dumb"))
    return MaintenancePlan(job=job, argv=("/bin/sh", "-c", inputs.command), env=env)
