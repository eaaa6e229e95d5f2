"""What the untrusted network keeps outside any firewall, as data. Pure: no I/O, no root.

A firewall reload (``nft flush ruleset``, ``iptables-restore``, restarting nftables,
deleting our table) removes every netfilter rule at once, ours included, and libvirt's
``<forward mode='open'/>`` network adds none of its own: with the host forwarding, a
guest would then leave un-NATed with its own low source ports and reach every service
of the host. What a reload does not touch: policy routing rules, per-interface sysctls,
neighbour entries and bridge port settings. So beside the firewall the network keeps:

- the routing guard (``plan``). Our firewall sets one mark bit ("vetted") on the guest
  packets a job's rules let leave. Routing then refuses, with the bridge's source
  validation on (``rp_filter``, ``src_valid_mark``): a packet from the bridge that is not
  vetted may not be forwarded, and may not be delivered to any address of the host but
  the bridge's own. After a reload nothing is vetted: a guest reaches its own bridge (the
  host's address on it, broadcasts), nothing beyond, until ``Lease.check`` ends it.
  (The host's own packets to guests pass: from the bridge address, or with no source
  chosen yet, as the kernel's ICMP errors and dnsmasq's DHCP replies are routed.)
- per reservation, a permanent neighbour entry (IP -> reserved MAC) on the bridge: no ARP
  reply, request or gratuitous ARP from a guest changes where the host sends a guest's
  traffic (dnsmasq runs with ``dhcp-broadcast``, so it never rewrites the entry itself);
- per guest, once plugged in, its bridge port pinned: learning and unknown-unicast
  flooding off, its MAC a sticky static entry on its own port, so a guest sending with
  another guest's MAC cannot pull that guest's frames to its port.
Bridge-family filtering (ARP/MAC per port) was the other choice: it exists only for
nftables (no ebtables here), needs each port's name before boot, and a reload removes it.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from typing import Optional

from .planner import NetSpec

RULE_PREF = 100  # our routing rules take RULE_PREF.. RULE_PREF+3, before main (32766)


@dataclass(frozen=True)
class IpRule:
    """One ``ip rule``. ``table`` or ``action`` says what a match does."""

    pref: int
    iif: str
    why: str
    dst: Optional[str] = None     # CIDR
    src: Optional[str] = None     # one address
    fwmark: Optional[tuple] = None  # (value, mask)
    table: Optional[str] = None
    action: Optional[str] = None  # "blackhole"

    def selector(self) -> list:
        """``ip rule`` arguments naming exactly this rule (for add and del)."""
        out = ["pref", str(self.pref), "iif", self.iif]
        if self.src:
            out += ["from", f"{self.src}/32"]
        if self.dst:
            out += ["to", self.dst]
        if self.fwmark:
            out += ["fwmark", f"{self.fwmark[0]:#x}/{self.fwmark[1]:#x}"]
        return out + (["lookup", self.table] if self.table else [self.action])

    def key(self) -> tuple:
        src = f"{self.src}/32" if self.src else None
        return (self.pref, self.iif, src, self.dst, self.fwmark, self.table or self.action)

    def text(self) -> str:
        return "ip rule add " + " ".join(self.selector())


@dataclass(frozen=True)
class Sysctl:
    path: str  # under /proc/sys
    value: str
    why: str


@dataclass(frozen=True)
class Guard:
    bridge: str
    rules: tuple
    sysctls: tuple


def plan(s: NetSpec) -> Guard:
    """The routing guard of the untrusted network ``s`` (see the module docstring)."""
    b, net, host, vetted = s.bridge, str(s.net), s.host_ip, (0, s.mark)
    rules = (
        IpRule(RULE_PREF, b, "a packet from the bridge our firewall did not vet is never forwarded",
               fwmark=vetted, action="blackhole"),
        IpRule(RULE_PREF + 1, "lo", "packets to guests with no source chosen yet (the kernel's ICMP "
               "errors, DHCP replies) and source validation of guests' broadcasts: routed as usual",
               dst=net, src="0.0.0.0", table="main"),
        IpRule(RULE_PREF + 2, "lo", "the host's address on the bridge and guests: routed as usual",
               dst=net, src=host, table="main"),
        IpRule(RULE_PREF + 3, "lo", "source validation of a guest's packet to any other address of the "
               "host fails unless our firewall vetted it (the host's other addresses are closed)",
               dst=net, fwmark=vetted, action="blackhole"),
    )
    sysctls = (
        Sysctl(f"net/ipv4/conf/{b}/rp_filter", "1", "validate guests' source addresses (strict)"),
        Sysctl(f"net/ipv4/conf/{b}/src_valid_mark", "1", "source validation sees the vetted mark"),
        Sysctl(f"net/ipv6/conf/{b}/disable_ipv6", "1", "no IPv6 on the untrusted bridge at all"),
    )
    return Guard(bridge=b, rules=rules, sysctls=sysctls)


def describe(g: Guard) -> list:
    lines = [f"{r.text()}    # {r.why}" for r in g.rules]
    lines += [f"sysctl {x.path.replace('/', '.')}={x.value}    # {x.why}" for x in g.sysctls]
    return lines


def installed_rules(ip_json: str) -> set:
    """The ``IpRule.key()`` of every rule in ``ip -j rule show`` output (others' too)."""
    out = set()
    for r in json.loads(ip_json or "[]"):
        src = r.get("src")
        src = None if src in (None, "all") else f"{src}/{r.get('srclen', 32)}"
        dst = f"{r['dst']}/{r.get('dstlen', 32)}" if r.get("dst") and r.get("dst") != "all" else None
        fwmark = None
        if "fwmark" in r:
            fwmark = (int(r["fwmark"], 0), int(r.get("fwmask", "0xffffffff"), 0))
        out.add((r.get("priority"), r.get("iif"), src, dst, fwmark, r.get("table") or r.get("action")))
    return out


# -- neighbours and ports ---------------------------------------------------------------------
ATF_COM, ATF_PERM = 0x2, 0x4


def neighbours(proc_net_arp: str, bridge: str) -> dict:
    """{ip: (mac, permanent)} of the bridge's IPv4 neighbour entries (/proc/net/arp)."""
    out = {}
    for line in proc_net_arp.splitlines()[1:]:
        f = line.split()
        if len(f) >= 6 and f[5] == bridge:
            flags = int(f[2], 16)
            out[f[0]] = (f[3].lower(), bool(flags & ATF_COM) and bool(flags & ATF_PERM))
    return out


def tap_mac(guest_mac: str) -> str:
    """The MAC libvirt gives the host end (tap) of a guest NIC: first byte 0xfe."""
    return "fe" + guest_mac[2:]


def fdb(brforward: bytes) -> dict:
    """{mac: port number} from a bridge's /sys/class/net/BR/brforward (16-byte records)."""
    out = {}
    for i in range(0, len(brforward) - 15, 16):
        rec = brforward[i:i + 16]
        mac = ":".join(f"{b:02x}" for b in rec[:6])
        out[mac] = rec[6] | (rec[12] << 8)
    return out


def check_ip(ip: str) -> str:
    return str(ipaddress.IPv4Address(ip))
