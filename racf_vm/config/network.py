"""``[network]``: the site network of trusted images, checked once, and apart from the
untrusted NAT network's settings (the two never share a bridge, addresses or MACs).

What a trusted MAC prefix and an address pool may be is decided here; racf_vm.vm.trustednet
builds MACs and reservations from values that passed.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Optional

from racf_vm.config.model import NetworkConfig, UntrustedNetworkConfig
from racf_vm.core.errors import ConfigError
from racf_vm.core.tomlreader import TableReader

IFACE_RE = r"[A-Za-z0-9_.-]{1,15}"
UNTRUSTED_MAC_PREFIX = "02:72:66"  # netpolicy.network.MAC_PREFIX (a unit test keeps them equal)
RESERVED_PREFIXES = {
    UNTRUSTED_MAC_PREFIX: "the untrusted NAT network's",
    "52:54:00": "libvirt's and QEMU's default",
}
MAX_POOL = 1 << 16  # addresses in one node's pool
_PREFIX = re.compile(r"[0-9a-f]{2}:[0-9a-f]{2}:[0-9a-f]{2}")


def prefix_problem(prefix: str) -> Optional[str]:
    """Why ``prefix`` cannot be a node's trusted MAC prefix, or None when it can."""
    if not _PREFIX.fullmatch(prefix):
        return f"{prefix!r} is not three lower-case hex octets like '02:72:74'"
    first = int(prefix[:2], 16)
    if first & 0x01:
        return f"{prefix} is a multicast prefix (the first octet's lowest bit is set)"
    if not first & 0x02:
        return f"{prefix} is not locally administered (set bit 0x02 of the first octet)"
    if first == 0xFE:
        return f"{prefix}: libvirt gives fe: MACs to the host side of every guest's tap device"
    if prefix in RESERVED_PREFIXES:
        return f"{prefix} is {RESERVED_PREFIXES[prefix]} MAC prefix"
    return None


def parse_pool(text: str) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
    """``"FIRST-LAST"`` (or one address) as its first and last address; ValueError if bad."""
    first_text, sep, last_text = text.partition("-")
    try:
        first = ipaddress.IPv4Address(first_text.strip())
        last = ipaddress.IPv4Address(last_text.strip()) if sep else first
    except ValueError as exc:
        raise ValueError(f"{text!r} is not FIRST-LAST IPv4 addresses: {exc}") from None
    if last < first:
        raise ValueError(f"{text!r}: the last address is below the first")
    if int(last) - int(first) + 1 > MAX_POOL:
        raise ValueError(f"{text!r} holds more than {MAX_POOL} addresses")
    for a in (first, last):
        if a.is_multicast or a.is_loopback or a.is_unspecified or a.is_link_local or a.is_reserved:
            raise ValueError(f"{text!r}: {a} cannot be a guest's address")
    return first, last


def pool_overlaps(text: str, subnet: str) -> bool:
    first, last = parse_pool(text)
    net = ipaddress.IPv4Network(subnet, strict=False)
    return first <= net.broadcast_address and net.network_address <= last


def parse_network(r: TableReader) -> NetworkConfig:
    d = NetworkConfig()
    n = NetworkConfig(
        trusted_bridge=r.string("trusted_bridge", d.trusted_bridge, pattern=IFACE_RE),
        trusted_mac_prefix=r.string("trusted_mac_prefix", d.trusted_mac_prefix, allow_empty=False,
                                    max_len=64),
        trusted_dhcp_hostsdir=(r.path("trusted_dhcp_hostsdir", "/") if r.has("trusted_dhcp_hostsdir")
                               else d.trusted_dhcp_hostsdir),
        trusted_pool=r.string("trusted_pool", d.trusted_pool, max_len=64),
    )
    problem = prefix_problem(n.trusted_mac_prefix)
    if problem:
        raise r.fail("trusted_mac_prefix", problem)
    if n.trusted_pool:
        try:
            parse_pool(n.trusted_pool)
        except ValueError as exc:
            raise r.fail("trusted_pool", str(exc)) from None
    if bool(n.trusted_pool) != bool(n.trusted_dhcp_hostsdir):
        key = "trusted_pool" if n.trusted_dhcp_hostsdir else "trusted_dhcp_hostsdir"
        raise r.fail(key, "trusted_dhcp_hostsdir and trusted_pool go together: set both "
                          "(fixed addresses) or neither")
    if n.trusted_pool and not n.trusted_bridge:
        raise r.fail("trusted_pool", "fixed addresses need trusted_bridge (the site network)")
    return n


def check_networks_apart(n: NetworkConfig, u: UntrustedNetworkConfig, source: str) -> None:
    """Trusted and untrusted guests never share a bridge or an address."""
    if n.trusted_bridge and n.trusted_bridge == u.bridge:
        raise ConfigError(f"{source}: network.trusted_bridge and untrusted_network.bridge are both "
                          f"{n.trusted_bridge!r}: trusted and untrusted guests never share a bridge")
    if n.trusted_pool and pool_overlaps(n.trusted_pool, u.subnet):
        raise ConfigError(f"{source}: network.trusted_pool {n.trusted_pool} overlaps "
                          f"untrusted_network.subnet {u.subnet}: take the site network's "
                          f"addresses from outside the NAT network")
