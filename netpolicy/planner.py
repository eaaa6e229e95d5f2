"""The firewall of the untrusted network, as data. Pure: no I/O, no root.

``plan(job)`` turns one job's identity (tag, MAC, address) on its network (``NetSpec``:
bridge, subnet, deny list, vetted mark) into ``Rules``: the skeleton every untrusted guest
relies on (``base``) and the job's own tagged rules (``job``). Backends render the same
rules; no policy lives in a backend. What survives a firewall reload is in ``guardplan``.

The policy (docs: reference/security.md §4):
- from a guest, only tcp and udp leave, only from that guest's own MAC + address, never to
  the untrusted subnet, never to a deny-listed network (checked on the address the guest
  used, before any DNAT, and on the one it leaves for, after), and always masqueraded to
  source ports 1024-65535;
- to the host: DHCP and DNS on the host's address on the bridge, nothing else on any of
  the host's addresses, checked before DNAT so the host's port forwards are closed too;
- every other protocol, IPv6, and any packet not matched by a job's rule is dropped
  (fail closed: without our per-job rules a guest is cut off, not set free);
- a guest's reserved address sent from another MAC is dropped (spoofing); guest <-> guest:
  dropped (layer 2 and layer 3); into the bridge only replies to connections guests opened;
- the packets a job's rules let leave are marked "vetted" (one bit, ``NetSpec.mark``):
  routing refuses unvetted guest packets (``guardplan``), so when a reload removes our
  rules the guests lose the network instead of leaving un-NATed;
- after NAT (where the backend can see it), a connection from the subnet that leaves
  un-NATed or with a source port below 1024 is dropped.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Optional

# Logical chains. Each backend maps them to its own tables/chains and hooks.
GUEST_PRE = "guest_pre"     # prerouting before DNAT: destinations as the guest addressed them
VET = "vet"                 # prerouting: mark what a job's rules will let leave (routing guard)
GUEST_DEST = "guest_dest"   # forward, before GUEST_OUT: destinations after DNAT
GUEST_OUT = "guest_out"     # forward, packets arriving from the untrusted bridge
GUEST_IN = "guest_in"       # forward, packets leaving into the untrusted bridge
GUEST_HOST = "guest_host"   # input, packets from the untrusted bridge to the host itself
NAT = "nat"                 # postrouting source NAT
POST_NAT = "post_nat"       # postrouting after NAT: last check on what leaves
BRIDGE = "bridge"           # layer-2 forwarding between ports of the untrusted bridge
CHAINS = (GUEST_PRE, VET, GUEST_DEST, GUEST_OUT, GUEST_IN, GUEST_HOST, NAT, POST_NAT, BRIDGE)

COMMENT_PREFIX = "racf:"
HIGH_PORTS = (1024, 65535)
LOW_PORTS = (0, 1023)
BROADCAST = "255.255.255.255"

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_IFACE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_TAG = re.compile(r"^[A-Za-z0-9_.-]{1,120}$")


class PlanError(ValueError):
    """The job's network identity is not something we will write rules for."""


def parse_subnet(subnet: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.IPv4Network(subnet, strict=True)
    except ValueError:
        raise PlanError(f"bad subnet {subnet!r} (want an IPv4 network such as 10.213.0.0/24)") from None
    if not 16 <= net.prefixlen <= 29:
        raise PlanError(f"subnet {subnet} must be between /16 and /29")
    return net


def parse_deny(deny) -> tuple:
    """The deny list as normalised IPv4 networks (strings); PlanError on anything else."""
    out = []
    for entry in deny:
        try:
            out.append(str(ipaddress.IPv4Network(entry, strict=True)))
        except (ValueError, TypeError):
            raise PlanError(f"bad deny-list entry {entry!r} (want an IPv4 network such as "
                            "10.0.0.0/8; IPv6 is closed to guests anyway)") from None
    return tuple(out)


def check_mark(mark) -> int:
    if isinstance(mark, bool) or not isinstance(mark, int) or not 0 < mark < 2**32 or mark & (mark - 1):
        raise PlanError(f"bad vetted mark {mark!r} (want one bit of the 32-bit packet mark)")
    return mark


@dataclass(frozen=True)
class NetSpec:
    """The untrusted network as the firewall sees it (one per host and config)."""

    bridge: str
    subnet: str
    deny: tuple  # IPv4 networks no guest reaches
    mark: int  # the packet-mark bit our rules set on the guest packets they let leave

    def __post_init__(self) -> None:
        if not _IFACE.match(self.bridge or ""):
            raise PlanError(f"bad bridge name {self.bridge!r}")
        parse_subnet(self.subnet)
        if parse_deny(self.deny) != tuple(self.deny):
            raise PlanError(f"deny list {self.deny!r} is not in normal form")
        check_mark(self.mark)

    @property
    def net(self) -> ipaddress.IPv4Network:
        return parse_subnet(self.subnet)

    @property
    def host_ip(self) -> str:
        """The host's address on the bridge: the subnet's first address."""
        return str(next(self.net.hosts()))


@dataclass(frozen=True)
class JobNet:
    tag: str
    mac: str
    ip: str
    net: NetSpec

    def __post_init__(self) -> None:
        if not _TAG.match(self.tag or ""):
            raise PlanError(f"bad job tag {self.tag!r}")
        if not _MAC.match(self.mac or ""):
            raise PlanError(f"bad MAC {self.mac!r} (want lower-case aa:bb:cc:dd:ee:ff)")
        net = self.net.net
        try:
            addr = ipaddress.IPv4Address(self.ip)
        except ValueError:
            raise PlanError(f"bad guest address {self.ip!r}") from None
        if addr not in net or addr in (net.network_address, net.broadcast_address):
            raise PlanError(f"guest address {self.ip} is not a host address of {net}")
        if self.ip == self.net.host_ip:
            raise PlanError("guest and host addresses are the same")


@dataclass(frozen=True)
class Rule:
    """One rule. ``match`` is a tuple of (key, value) pairs, all of which must hold.

    Keys: ``iif``/``oif`` (interface name), ``oif_not``, ``saddr``/``daddr`` (address or
    CIDR), ``daddr_not``, ``daddr_type`` ("local": any address of the host), ``smac``,
    ``smac_not``, ``proto`` ("tcp"/"udp"), ``sport``/``dport`` ((lo, hi) inclusive),
    ``ct_state`` (tuple of states), ``ct_orig_saddr`` (CIDR), ``ct_reply_daddr`` (CIDR),
    ``ct_reply_dport`` ((lo, hi)), ``ibridge`` (bridge name, layer 2). ``family``:
    "ipv4", "ipv6" or "any" (both, and for BRIDGE: every frame). ``action``: "accept",
    "drop", "return" (leave this chain), "masquerade" (with ``to_ports``) or "vet" (set
    the ``mark`` bit and go on).
    """

    chain: str
    family: str
    match: tuple
    action: str
    why: str
    to_ports: Optional[tuple] = None
    tag: Optional[str] = None  # set on per-job rules only
    mark: Optional[int] = None  # the bit a "vet" rule sets

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


def _r(chain, family, action, why, tag=None, to_ports=None, mark=None, **match) -> Rule:
    return Rule(chain, family, tuple(match.items()), action, why, to_ports, tag, mark)


def host_services(s: NetSpec) -> tuple:
    """(why, match) of the only host services guests may use: dnsmasq on the bridge address
    (and DHCP's broadcast, which the deny list's 240.0.0.0/4 would catch otherwise)."""
    b, h = s.bridge, s.host_ip
    return (
        ("DHCP requests (broadcast) to the network's dnsmasq",
         dict(iif=b, daddr=BROADCAST, proto="udp", sport=(68, 68), dport=(67, 67))),
        ("DHCP renewals to the network's dnsmasq",
         dict(iif=b, daddr=h, proto="udp", sport=(68, 68), dport=(67, 67))),
        ("DNS over udp to the network's dnsmasq, from ports >= 1024",
         dict(iif=b, daddr=h, proto="udp", sport=HIGH_PORTS, dport=(53, 53))),
        ("DNS over tcp to the network's dnsmasq, from ports >= 1024",
         dict(iif=b, daddr=h, proto="tcp", sport=HIGH_PORTS, dport=(53, 53))),
    )


def plan_base(s: NetSpec) -> tuple:
    """The static skeleton: defaults that hold whether or not any job runs. Order matters."""
    b, net = s.bridge, str(s.net)
    out = []
    # prerouting, before DNAT: the destination the guest chose (what the host serves first)
    for why, m in host_services(s):
        out.append(_r(GUEST_PRE, "ipv4", "return", why, **m))
    out.append(_r(GUEST_PRE, "ipv4", "drop", "any other packet to any address of the host, before "
                  "DNAT could pass it on (the host's own port forwards included)", iif=b, daddr_type="local"))
    for cidr in s.deny:
        out.append(_r(GUEST_PRE, "ipv4", "drop", f"deny list: {cidr}, as the guest addressed it",
                      iif=b, daddr=cidr))
    # forward, out of the bridge
    for cidr in s.deny:
        out.append(_r(GUEST_DEST, "ipv4", "drop", f"deny list: {cidr}, after any DNAT", iif=b, daddr=cidr))
    # per-job accepts are inserted above this
    out.append(_r(GUEST_OUT, "any", "drop", "anything from a guest no job rule accepted (other "
                  "protocols, spoofed MAC/address, IPv6, to another guest, or our rules lost): fail closed",
                  iif=b))
    # forward, into the bridge
    out.append(_r(GUEST_IN, "ipv4", "accept", "replies to connections the guests opened", oif=b,
                  ct_state=("established", "related")))
    out.append(_r(GUEST_IN, "any", "drop", "nothing else is forwarded into the untrusted bridge", oif=b))
    # guest -> host
    for why, m in host_services(s):
        out.append(_r(GUEST_HOST, "ipv4", "accept", why, **m))
    out.append(_r(GUEST_HOST, "any", "drop", "every other packet from a guest to the host's own services",
                  iif=b))
    # after NAT: whoever NATed (or failed to), nothing from the subnet leaves un-NATed or low
    out.append(_r(POST_NAT, "ipv4", "drop", "a guest's connection leaving without NAT", oif_not=b,
                  ct_orig_saddr=net, ct_reply_daddr=net))
    out.append(_r(POST_NAT, "ipv4", "drop", "a guest's connection leaving with a source port below 1024",
                  oif_not=b, ct_orig_saddr=net, proto=("tcp", "udp"), ct_reply_dport=LOW_PORTS))
    # layer 2
    out.append(_r(BRIDGE, "any", "drop", "guest <-> guest frames on the untrusted bridge", ibridge=b))
    return tuple(out)


def plan_job(job: JobNet) -> tuple:
    """The rules one job adds (all tagged with it), installed before its guest boots."""
    s = job.net
    b, net, t = s.bridge, str(s.net), job.tag
    out = [_r(GUEST_PRE, "ipv4", "drop", "this guest's address sent from another MAC (spoofed)",
              tag=t, iif=b, saddr=job.ip, smac_not=job.mac)]
    ident = dict(iif=b, smac=job.mac, saddr=job.ip, daddr_not=net)
    for proto in ("tcp", "udp"):
        out.append(_r(VET, "ipv4", "vet", f"mark {proto} from this guest's MAC and address to outside the "
                      "untrusted subnet as vetted, so routing lets it leave", tag=t, mark=s.mark,
                      **ident, proto=proto))
    for proto in ("tcp", "udp"):
        out.append(_r(GUEST_OUT, "ipv4", "accept",
                      f"{proto} from this guest's MAC and address to outside the untrusted subnet",
                      tag=t, **ident, proto=proto))
    for proto in ("tcp", "udp"):
        out.append(_r(NAT, "ipv4", "masquerade",
                      f"{proto} from this guest leaves NATed to source ports 1024-65535",
                      tag=t, to_ports=HIGH_PORTS, saddr=job.ip, daddr_not=net, proto=proto))
    return tuple(out)


def plan(job: JobNet) -> Rules:
    return Rules(base=plan_base(job.net), job=plan_job(job))


def base_comment(bridge: str, version: str) -> str:
    """The comment of the skeleton rules of ``bridge``: each network's skeleton is its own."""
    return f"{COMMENT_PREFIX}base:{bridge}:{version}"


def replaces(comment: Optional[str], bridge: str) -> bool:
    """Whether a new skeleton of ``bridge`` replaces a rule: that bridge's, or one of a
    racf-vm that did not name the bridge (racf:base:VERSION)."""
    c = comment or ""
    return c.startswith(f"{COMMENT_PREFIX}base:{bridge}:") or bool(re.fullmatch(r"racf:base:[0-9a-f]{12}", c))


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
    if rule.mark:
        act += f" (mark |= {rule.mark:#x})"
    return f"[{rule.chain}/{rule.family}] {' '.join(parts)} -> {act}    # {rule.why}"
