"""DomainSpecs for tests, written in the words of one job: an overlay on a base image and
at most one NIC (the shape every job had before typed devices; the golden XML uses it)."""

from typing import Optional

from racf_vm.guest.protocol import CHANNEL_NAMES
from racf_vm.vm.devices import BackingFile, Disk, Nic, target_name
from racf_vm.vm.domain_xml import DomainSpec, KernelBoot

DEFAULTS = dict(
    name="racf-vm-slot1-12.0-4242-99", tag="slot1-12.0-4242-99", pid=4242, start=99, uid=2501,
    domain_type="qemu", memory_mib=512, vcpus=2, emulator="/usr/bin/qemu-system-x86_64",
    boot=KernelBoot("/boot/vmlinuz", "/boot/initrd.img", "console=ttyS0 quiet"),
    qemu_uid=64055, qemu_gid=64055, channels=CHANNEL_NAMES,
)


def job_spec(*, overlay_path: str = "/var/lib/racf-vm/jobs/t/overlay.qcow2",
             base_path: str = "/var/lib/racf-vm/images/base.qcow2", base_format: str = "qcow2",
             disk_bus: str = "virtio", bridge: Optional[str] = None, network: Optional[str] = None,
             mac: Optional[str] = None, **over) -> DomainSpec:
    disk = Disk(role="root", path=overlay_path, format="qcow2", target=target_name(disk_bus, 0),
                bus=disk_bus, backing=(BackingFile(base_path, base_format),))
    nics = []
    if bridge is not None:
        nics.append(Nic("bridge", bridge, mac))
    if network is not None:
        nics.append(Nic("network", network, mac))
    fields = dict(DEFAULTS, disks=(disk,), nics=tuple(nics))
    fields.update(over)
    return DomainSpec(**fields)
