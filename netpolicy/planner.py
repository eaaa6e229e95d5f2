"""The firewall of the untrusted network, as data. Pure: no I/O, no root.

``plan(job)`` turns one job's network identity (tag, MAC, address) and the network it
sits on (bridge, subnet, the host's address on it) into ``Rules``: the static skeleton
every untrusted guest relies on (``base``) and the job's own tagged rules (``job``).
Backends render the same rules; nothing about the policy lives in a backend.

The policy (docs: reference/security.md §4):
- from a guest, only tcp and udp leave, only from that guest's own MAC + address, never to
  the untrusted subnet, and always masqueraded to source ports 1024-65535;
- every other protocol, IPv6, and any packet not matched by a job's rule is dropped
  (fail closed: without our per-job rules a guest is cut off, not set free);
- guest -> host: DHCP (udp 68 -> 67) and DNS (from ports >= 1024 to the host's address on
  the bridge) only; guest <-> guest: dropped (layer 2 and layer 3);
- into the bridge only replies to connections the guests opened;
- after NAT (where the backend can see it), a connection from the subnet that leaves
  un-NATed or with a source port below 1024 is dropped.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Optional

# Logical chains. Each backend maps them to its own tables/chains and hooks.
GUEST_OUT = "guest_out"     # forward, packets arriving from the untrusted bridge
GUEST_IN = "guest_in"       # forward, packets leaving into the untrusted bridge
GUEST_HOST = "guest_host"   # input, packets from the untrusted bridge to the host itself
NAT = "nat"                 # postrouting source NAT
POST_NAT = "post_nat"       # postrouting after NAT: last check on what leaves
BRIDGE = "bridge"           # layer-2 forwarding between ports of the untrusted bridge
CHAINS = (GUEST_OUT, GUEST_IN, GUEST_HOST, NAT, POST_NAT, BRIDGE)

COMMENT_PREFIX = "racf:"
HIGH_PORTS = (1024, 65535)
LOW_PORTS = (0, 1023)

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_IFACE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_TAG = re.compile(r"^[A-Za-z0-9_.-]{1,120}$")


class PlanError(ValueError):
    """The job's network identity is not something we will write rules for."""


@dataclass(frozen=True)
class JobNet:
    tag: str
    mac: str
    ip: str
    bridge: str
    subnet: str
    host_ip: str

    def __post_init__(self) -> None:
        if not _TAG.match(self.tag or ""):
            raise PlanError(f"bad job tag {self.tag!r}")
        if not _MAC.match(self.mac or ""):
            raise PlanError(f"bad MAC {self.mac!r} (want lower-case aa:bb:cc:dd:ee:ff)")
        if not _IFACE.match(self.bridge or ""):
            raise PlanError(f"bad bridge name {self.bridge!r}")
        net = parse_subnet(self.subnet)
        for what, value in (("guest address", self.ip), ("host address", self.host_ip)):
            try:
                addr = ipaddress.IPv4Address(value)
            except ValueError:
                raise PlanError(f"bad {what} {value!r}") from None
            if addr not in net or addr in (net.network_address, net.broadcast_address):
                raise PlanError(f"{what} {value} is not a host address of {net}")
        if self.ip == self.host_ip:
            raise PlanError("guest and host addresses are the same")


def parse_subnet(subnet: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.IPv4Network(subnet, strict=True)
    except ValueError:
        raise PlanError(f"bad subnet {subnet!r} (want an IPv4 network such as 10.213.0.0/24)") from None
    if not 16 <= net.prefixlen <= 29:
        raise PlanError(f"subnet {subnet} must be between /16 and /29")
    return net


@dataclass(frozen=True)
class Rule:
    """One rule. ``match`` is a tuple of (key, value) pairs, all of which must hold.

    Keys: ``iif``/``oif`` (interface name), ``oif_not``, ``saddr``/``daddr`` (address or
    CIDR), ``daddr_not``, ``smac``, ``proto`` ("tcp"/"udp"), ``sport``/``dport`` ((lo, hi)
    inclusive), ``ct_state`` (tuple of states), ``ct_orig_saddr`` (CIDR),
    ``ct_reply_daddr`` (CIDR), ``ct_reply_dport`` ((lo, hi)), ``ibridge`` (bridge name,
    layer 2). ``family``: "ipv4", "ipv6" or "any" (both, and for BRIDGE: every frame).
    ``action``: "accept", "drop" or "masquerade" (with ``to_ports``).
    """

    chain: str
    family: str
    match: tuple
    action: str
    why: str
    to_ports: Optional[tuple] = None
    tag: Optional[str] = None  # set on per-job rules only

    @property
    def comment(self) -> str:
        return COMMENT_PREFIX + (self.tag if self.tag else "base")

    def get(self, key: str, default=None):
        for k, v in self.match:
            if k == key:
                return v
        return default


@dataclass(frozen=True)
class Rules:
    base: tuple = field(default_factory=tuple)
    job: tuple = field(default_factory=tuple)

    def all(self) -> tuple:
        return self.base + self.job


def _r(chain, family, action, why, tag=None, to_ports=None, **match) -> Rule:
    return Rule(chain, family, tuple(match.items()), action, why, to_ports, tag)


def plan_base(bridge: str, subnet: str, host_ip: str) -> tuple:
    """The static skeleton: defaults that hold whether or not any job runs. Order matters."""
    net = str(parse_subnet(subnet))
    b = bridge
    return (
        # forward, out of the bridge: per-job accepts are inserted above this
        _r(GUEST_OUT, "any", "drop", "anything from a guest no job rule accepted (other protocols, "
           "spoofed MAC/address, IPv6, to another guest, or our rules lost): fail closed", iif=b),
        # forward, into the bridge
        _r(GUEST_IN, "ipv4", "accept", "replies to connections the guests opened", oif=b,
           ct_state=("established", "related")),
        _r(GUEST_IN, "any", "drop", "nothing else is forwarded into the untrusted bridge", oif=b),
        # guest -> host
        _r(GUEST_HOST, "ipv4", "accept", "DHCP requests to the network's dnsmasq", iif=b,
           proto="udp", sport=(68, 68), dport=(67, 67)),
        _r(GUEST_HOST, "ipv4", "accept", "DNS over udp to the network's dnsmasq, from ports >= 1024",
           iif=b, daddr=host_ip, proto="udp", sport=HIGH_PORTS, dport=(53, 53)),
        _r(GUEST_HOST, "ipv4", "accept", "DNS over tcp to the network's dnsmasq, from ports >= 1024",
           iif=b, daddr=host_ip, proto="tcp", sport=HIGH_PORTS, dport=(53, 53)),
        _r(GUEST_HOST, "any", "drop", "every other packet from a guest to the host's own services",
           iif=b),
        # after NAT: whoever NATed (or failed to), nothing from the subnet leaves un-NATed or low
        _r(POST_NAT, "ipv4", "drop", "a guest's connection leaving without NAT", oif_not=b,
           ct_orig_saddr=net, ct_reply_daddr=net),
        _r(POST_NAT, "ipv4", "drop", "a guest's connection leaving with a source port below 1024",
           oif_not=b, ct_orig_saddr=net, proto=("tcp", "udp"), ct_reply_dport=LOW_PORTS),
        # layer 2
        _r(BRIDGE, "any", "drop", "guest <-> guest frames on the untrusted bridge", ibridge=b),
    )


def plan_job(job: JobNet) -> tuple:
    """The rules one job adds (all tagged with it), installed before its guest boots."""
    net = str(parse_subnet(job.subnet))
    out = []
    for proto in ("tcp", "udp"):
        out.append(_r(GUEST_OUT, "ipv4", "accept",
                      f"{proto} from this guest's MAC and address to outside the untrusted subnet",
                      tag=job.tag, iif=job.bridge, smac=job.mac, saddr=job.ip, daddr_not=net,
                      proto=proto))
    for proto in ("tcp", "udp"):
        out.append(_r(NAT, "ipv4", "masquerade",
                      f"{proto} from this guest leaves NATed to source ports 1024-65535",
                      tag=job.tag, to_ports=HIGH_PORTS, saddr=job.ip, daddr_not=net, proto=proto))
    return tuple(out)


def plan(job: JobNet) -> Rules:
    return Rules(base=plan_base(job.bridge, job.subnet, job.host_ip), job=plan_job(job))


def tag_of_comment(comment: Optional[str]) -> Optional[str]:
    """The job tag in one of our rule comments; None for base rules and foreign comments."""
    if not comment or not comment.startswith(COMMENT_PREFIX):
        return None
    tag = comment[len(COMMENT_PREFIX):]
    if tag == "base" or not _TAG.match(tag):
        return None
    return tag


def describe(rule: Rule) -> str:
    """One human line per rule (backend-neutral), for ``policy explain``."""
    parts = []
    for k, v in rule.match:
        if isinstance(v, tuple) and len(v) == 2 and all(isinstance(x, int) for x in v):
            v = str(v[0]) if v[0] == v[1] else f"{v[0]}-{v[1]}"
        elif isinstance(v, tuple):
            v = ",".join(v)
        parts.append(f"{k}={v}")
    act = rule.action
    if rule.to_ports:
        act += f" to ports {rule.to_ports[0]}-{rule.to_ports[1]}"
    return f"[{rule.chain}/{rule.family}] {' '.join(parts)} -> {act}    # {rule.why}"
