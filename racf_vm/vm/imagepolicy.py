"""What a catalog entry decides about its VM, whoever starts it (the wrapper's job plan,
the VM universe's LIBVIRT_XML_SCRIPT): how it boots and which network it gets.

Pure: a catalog entry and the site config in, typed devices out.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from racf_vm.config import Config
from racf_vm.images.catalog import BootSpec, ImageEntry
from racf_vm.vm.devices import Nic
from racf_vm.vm.domain_xml import Boot, BootloaderBoot, DomainSpec, KernelBoot

Network = Literal["none", "bridge", "untrusted"]


def boot_of(boot: BootSpec) -> Boot:
    if boot.method == "kernel":
        return KernelBoot(boot.kernel, boot.initrd or None, boot.cmdline)
    return BootloaderBoot()


def plan_network(image: ImageEntry, config: Config) -> tuple[Network, tuple[Nic, ...]]:
    """Trust decides the network: untrusted images only ever get the NAT network."""
    if not image.trusted:
        return "untrusted", (Nic("network", config.untrusted_network.name),)
    if config.network.trusted_bridge:
        return "bridge", (Nic("bridge", config.network.trusted_bridge),)
    return "none", ()


def with_reserved_mac(domain: DomainSpec, mac: str) -> DomainSpec:
    """``domain`` once the untrusted network reserved ``mac`` for it (its network NIC)."""
    nics = tuple(dataclasses.replace(n, mac=mac) if n.kind == "network" else n for n in domain.nics)
    return dataclasses.replace(domain, nics=nics)


def ready_to_boot(domain: DomainSpec) -> bool:
    """False while a NIC on the untrusted network still waits for its reserved MAC."""
    return all(n.mac is not None for n in domain.nics if n.kind == "network")
