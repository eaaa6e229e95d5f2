"""The job plan: every decision about one job, made in one pure function.

``plan_job`` turns what was validated and measured (the request, its catalog entry, base
image and prepared layer, the slot, the site config, the accelerator) into a ``JobPlan``:
the job's tag and directory, the VM's size (the slot's, lowered to the instance profile
the job asked for), its disks (the overlay on the prepared layer,
the read-only context disk) and NICs as a DomainSpec, the network, the timeouts. Nothing here touches the system; racf_vm.job.run carries a
plan out, and unit tests check each decision without root.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Optional

from racf_vm.condor.credentials import strip_credentials
from racf_vm.condor.request import JobRequest
from racf_vm.config import Config, TimeoutsConfig
from racf_vm.config.integration import find_profile
from racf_vm.core import jobtag
from racf_vm.core.errors import InternalError
from racf_vm.guest import contextdisk
from racf_vm.guest.protocol import CHANNEL_NAMES
from racf_vm.images.catalog import ImageEntry
from racf_vm.images.imageheader import BaseImageInfo
from racf_vm.job.storageplan import StoragePlan, plan_storage
from racf_vm.vm import imagepolicy, sizing, workspace
from racf_vm.vm.devices import BackingFile, Disk, target_name
from racf_vm.vm.disks import OVERLAY_NAME
from racf_vm.vm.domain_xml import DomainSpec
from racf_vm.vm.imagepolicy import Network, boot_of, plan_network  # noqa: F401 (re-exported)

CONTEXT_DISK = "context.img"
OUTPUT_TAR = "output.tar"


@dataclass(frozen=True)
class PlanInputs:
    request: JobRequest
    image: ImageEntry
    base: BaseImageInfo
    layer: BaseImageInfo  # the prepared layer on ``base`` (racf_vm.images.prepare)
    slot: sizing.Slot
    config: Config
    accel: str  # "kvm" | "tcg", from racf_vm.vm.accel
    owner: jobtag.Owner  # this wrapper process
    qemu_uid: int
    qemu_gid: int


@dataclass(frozen=True)
class JobPlan:
    tag: str
    job_dir: str
    chain: tuple[BaseImageInfo, ...]  # layer, base: re-checked just before boot
    size: sizing.VMSize
    network: Network
    domain: DomainSpec  # for "untrusted", its NIC gets its MAC from the lease (with_mac); for
    #                     "bridge", the owner's (or the site reservation's, with_mac)
    guest_request: Optional[JobRequest]  # what the context disk carries (credentials only if
    #                                      allowed); None for a maintenance boot
    withhold_credentials: bool  # leave credential files out of the input archive
    storage: StoragePlan  # scratch and data disks, and what goes back to the sandbox
    output_tar: str
    timeouts: TimeoutsConfig

    @property
    def root_disk(self) -> Disk:
        return self.domain.disks[0]

    @property
    def context_disk(self) -> Disk:
        return self.domain.disks[1]

    def with_mac(self, mac: str) -> "JobPlan":
        """The plan once a network reserved ``mac`` for the job: the untrusted network's
        lease, or the site DHCP reservation on the trusted bridge."""
        if self.network not in ("untrusted", "bridge"):
            raise InternalError("only a job with a NIC gets a reserved MAC")
        return dataclasses.replace(self, domain=imagepolicy.with_reserved_mac(self.domain, mac))

    @property
    def ready_to_boot(self) -> bool:
        """False while a NIC still waits for its reserved MAC."""
        return imagepolicy.ready_to_boot(self.domain)


def boot_disks(job_dir: str, layer: BaseImageInfo, base: BaseImageInfo) -> tuple[Disk, Disk]:
    """The root disk (a writable overlay: base <- prepared layer <- overlay) and the
    read-only context disk, first and second, as every boot of ours has them."""
    root = Disk(role="root", path=os.path.join(job_dir, OVERLAY_NAME), format="qcow2",
                target=target_name("virtio", 0),
                backing=(BackingFile(layer.path, "qcow2"), BackingFile(base.path, base.format)))
    context = Disk(role="context", path=os.path.join(job_dir, CONTEXT_DISK), format="raw",
                   target=target_name("virtio", 1), readonly=True, serial=contextdisk.SERIAL)
    return root, context


def plan_job(inputs: PlanInputs) -> JobPlan:
    req, cfg, image = inputs.request, inputs.config, inputs.image
    size = sizing.apply_profile(sizing.plan_vm_size(
        inputs.slot.limits, cfg.sizing,
        host_cpus=inputs.slot.host_cpus, host_memory_mib=inputs.slot.host_memory_mib,
        hint_cpus=req.machine_hint_cpus, hint_memory_mib=req.machine_hint_memory_mib,
    ), find_profile(cfg.profiles, req.profile))
    tag = jobtag.make_tag(req.slot, req.cluster, req.proc, inputs.owner)
    job_dir = os.path.join(cfg.paths.state_dir, workspace.JOBS_DIR, tag)
    root, context = boot_disks(job_dir, inputs.layer, inputs.base)
    storage = plan_storage(req, job_dir, 2, cfg.limits.max_data_bytes)
    network, nics = plan_network(image, cfg, inputs.owner.pid)
    domain = DomainSpec(
        name=jobtag.DOMAIN_PREFIX + tag, tag=tag, pid=inputs.owner.pid, start=inputs.owner.start,
        uid=req.uid, domain_type="kvm" if inputs.accel == "kvm" else "qemu",
        memory_mib=size.memory_mib, vcpus=size.cpus, emulator=cfg.libvirt.emulator,
        boot=boot_of(image.boot), qemu_uid=inputs.qemu_uid, qemu_gid=inputs.qemu_gid,
        disks=(root, context, *storage.disks), channels=CHANNEL_NAMES, nics=nics, machine=cfg.libvirt.machine,
    )
    guest_request = req if image.credentials else dataclasses.replace(req, env=strip_credentials(req.env))
    return JobPlan(
        tag=tag, job_dir=job_dir, chain=(inputs.layer, inputs.base), size=size, network=network,
        domain=domain, guest_request=guest_request, withhold_credentials=not image.credentials,
        storage=storage, output_tar=os.path.join(job_dir, OUTPUT_TAR), timeouts=cfg.timeouts,
    )
