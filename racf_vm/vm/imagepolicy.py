"""What a catalog entry decides about its VM, whoever starts it (the wrapper's job plan,
the VM universe's LIBVIRT_XML_SCRIPT): how it boots and which network it gets.

Pure: a catalog entry and the site config in, typed devices out.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from racf_vm.config import Config
from racf_vm.core.errors import InternalError
from racf_vm.images.catalog import BootSpec, ImageEntry
from racf_vm.vm import trustednet
from racf_vm.vm.devices import Nic
from racf_vm.vm.domain_xml import Boot, BootloaderBoot, DomainSpec, KernelBoot

Network = Literal["none", "bridge", "untrusted"]


def boot_of(boot: BootSpec) -> Boot:
    if boot.method == "kernel":
        return KernelBoot(boot.kernel, boot.initrd or None, boot.cmdline)
    return BootloaderBoot()


def plan_network(image: ImageEntry, config: Config, owner_pid: int) -> tuple[Network, tuple[Nic, ...]]:
    """Trust decides the network: untrusted images only ever get the NAT network (whose
    lease brings the MAC); a trusted one joins the site bridge with this node's MAC for
    the guest's owner (racf_vm.vm.trustednet), unless a reservation replaces it."""
    if not image.trusted:
        return "untrusted", (Nic("network", config.untrusted_network.name),)
    net = config.network
    if net.trusted_bridge:
        mac = trustednet.owner_mac(net.trusted_mac_prefix, owner_pid)
        return "bridge", (Nic("bridge", net.trusted_bridge, mac),)
    return "none", ()


def with_reserved_mac(domain: DomainSpec, mac: str) -> DomainSpec:
    """``domain`` once its network reserved ``mac`` for it: the untrusted network's lease,
    or the site DHCP reservation of a trusted guest (its one NIC)."""
    if len(domain.nics) != 1:
        raise InternalError(f"a reserved MAC is for a guest with one NIC, not {len(domain.nics)}")
    return dataclasses.replace(domain, nics=(dataclasses.replace(domain.nics[0], mac=mac),))


def ready_to_boot(domain: DomainSpec) -> bool:
    """False while a NIC still waits for its reserved MAC (libvirt would pick a random one)."""
    return all(n.mac is not None for n in domain.nics)
