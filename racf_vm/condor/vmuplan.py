"""The VM-universe plan: every decision LIBVIRT_XML_SCRIPT makes about one VM, in one
pure function (the wrapper's counterpart is racf_vm.job.plan).

- Name: the one condor_vm-gahp gave (``VMPARAM_VM_NAME``), so the gahp finds, shuts down
  and kills its VM as usual.
- Tag: ``vmu<script pid>-<cluster>.<proc>-<gahp pid>-<gahp start>``. Its owner is
  condor_vm-gahp, which lives exactly as long as the VM job: the job directory and, for
  an untrusted image, the network lease carry the tag, and ``racf-vm gc`` removes them
  once the gahp is gone (the script itself exits before the VM starts).
- Size: the job's request (``vm_memory``, ``vm_vcpus``) within the slot. The slot's limit
  is what the wrapper would give a job in this slot (racf_vm.vm.sizing, from the cgroup
  condor_vm-gahp and this script run in); more memory than that is refused, vCPUs are
  clamped to it.
- Disk: a fresh qcow2 overlay root creates in the job directory on the verified catalog
  base (not the prepared layer: a VM-universe guest runs its own init, not the runner).
- Network and boot: exactly as the wrapper (racf_vm.vm.imagepolicy): trust decides.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from racf_vm.condor.vmuad import VmuRequest
from racf_vm.config import Config
from racf_vm.core import jobtag
from racf_vm.core.errors import InternalError, RefusedError, UsageError
from racf_vm.images.catalog import ImageEntry
from racf_vm.images.imageheader import BaseImageInfo
from racf_vm.vm import imagepolicy, sizing, workspace
from racf_vm.vm.devices import BackingFile, Disk, target_name
from racf_vm.vm.disks import OVERLAY_NAME
from racf_vm.vm.domain_xml import DomainSpec
from racf_vm.vm.imagepolicy import Network

CONSOLE_LOG = "console.log"


@dataclass(frozen=True)
class VmuInputs:
    request: VmuRequest
    image: ImageEntry
    base: BaseImageInfo
    slot: sizing.Slot
    config: Config
    accel: str  # "kvm" | "tcg"
    owner: jobtag.Owner  # condor_vm-gahp: the VM job's lifetime
    script_pid: int
    uid: int  # the job's user (owner of its sandbox)
    qemu_uid: int
    qemu_gid: int


@dataclass(frozen=True)
class VmuPlan:
    tag: str
    job_dir: str
    size: sizing.VMSize
    network: Network
    domain: DomainSpec

    def with_mac(self, mac: str) -> "VmuPlan":
        if self.network != "untrusted":
            raise InternalError("only a VM on the untrusted network gets a reserved MAC")
        return dataclasses.replace(self, domain=imagepolicy.with_reserved_mac(self.domain, mac))

    @property
    def ready_to_boot(self) -> bool:
        return imagepolicy.ready_to_boot(self.domain)


def plan_vmu_size(request: VmuRequest, slot: sizing.Slot, policy) -> sizing.VMSize:
    """The job's vm_memory (refused above the slot) and vm_vcpus (clamped to the slot)."""
    limit = sizing.plan_vm_size(slot.limits, policy, host_cpus=slot.host_cpus,
                                host_memory_mib=slot.host_memory_mib)
    if request.memory_mib > limit.memory_mib:
        raise RefusedError(f"vm_memory {request.memory_mib} MiB is more than this slot gives a VM "
                           f"({limit.memory_mib} MiB); submit with a smaller vm_memory, or "
                           "request_memory and request_cpus for a larger slot")
    if request.memory_mib < policy.min_memory_mib:
        raise UsageError(f"vm_memory {request.memory_mib} MiB is below the site minimum of "
                         f"{policy.min_memory_mib} MiB")
    return sizing.VMSize(cpus=min(request.vcpus, limit.cpus), memory_mib=request.memory_mib)


def plan_vmu(inputs: VmuInputs) -> VmuPlan:
    req, cfg = inputs.request, inputs.config
    size = plan_vmu_size(req, inputs.slot, cfg.sizing)
    tag = jobtag.make_tag(f"vmu{inputs.script_pid}", req.cluster, req.proc, inputs.owner)
    job_dir = os.path.join(cfg.paths.state_dir, workspace.JOBS_DIR, tag)
    root = Disk(role="root", path=os.path.join(job_dir, OVERLAY_NAME), format="qcow2",
                target=target_name("virtio", 0),
                backing=(BackingFile(inputs.base.path, inputs.base.format),))
    network, nics = imagepolicy.plan_network(inputs.image, cfg, inputs.owner.pid)
    domain = DomainSpec(
        name=req.vm_name, tag=tag, pid=inputs.owner.pid, start=inputs.owner.start, uid=inputs.uid,
        domain_type="kvm" if inputs.accel == "kvm" else "qemu",
        memory_mib=size.memory_mib, vcpus=size.cpus, emulator=cfg.libvirt.emulator,
        boot=imagepolicy.boot_of(inputs.image.boot), qemu_uid=inputs.qemu_uid,
        qemu_gid=inputs.qemu_gid, disks=(root,), channels=(), nics=nics,
        machine=cfg.libvirt.machine,
        console_log=os.path.join(job_dir, CONSOLE_LOG) if cfg.vm_universe.console_log else None,
    )
    return VmuPlan(tag=tag, job_dir=job_dir, size=size, network=network, domain=domain)
