"""The untrusted libvirt network and its per-job DHCP reservations.

The network is ``<forward mode='open'/>``: libvirt creates the bridge and runs dnsmasq
(DHCP, DNS) and adds no firewall rules of its own — netpolicy owns all of them. IPv6 is
off (no IPv6 address: libvirt sets disable_ipv6 on the bridge and dnsmasq sends no RAs).
Bridge ports are isolated (``<port isolated='yes'/>``): the kernel bridge never forwards a
frame from one guest's port to another's. dnsmasq answers DHCP by broadcast only
(``dhcp-broadcast``): its unicast replies would write the client's MAC into the host's
neighbour table, over the entry the lease pinned (see guardplan). A network defined by an
older racf-vm without it is redefined, but only while no guest uses it.

Each job gets a ``<host mac= name= ip=/>`` in the network's DHCP section before its guest
boots. The name encodes the owner (wrapper pid + start time, as in the job tag) and a
hash of the tag, in the characters DHCP host names allow: ``racf-<pid>-<start>-<hash10>``;
so ``gc`` judges reservations from libvirt itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import logging
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Optional

from racf_vm.core import jobtag, locking

from .errors import NetpolicyError, PoolExhausted
from .planner import NetSpec, parse_subnet

log = logging.getLogger(__name__)

MAC_PREFIX = "02:72:66"  # locally administered, unicast ("rf")
DNSMASQ_NS = "http://libvirt.org/schemas/network/dnsmasq/1.0"
DNSMASQ_OPTIONS = ("dhcp-broadcast",)
ET.register_namespace("dnsmasq", DNSMASQ_NS)
LOCK_DIR = "/run/racf-vm"
LOCK_FILE = os.path.join(LOCK_DIR, "netpolicy.lock")
HOST_LOCK_TIMEOUT = 60.0  # held for a reservation and a rule edit: seconds at most
_NAME = re.compile(r"^racf-(?P<pid>[0-9]{1,10})-(?P<start>[0-9]{1,20})-(?P<hash>[0-9a-f]{10})$")


@dataclass(frozen=True)
class NetSettings:
    name: str
    bridge: str
    subnet: str
    deny: tuple = ()
    mark: int = 0

    @property
    def spec(self) -> NetSpec:
        return NetSpec(bridge=self.bridge, subnet=self.subnet, deny=self.deny, mark=self.mark)

    @property
    def net(self) -> ipaddress.IPv4Network:
        return parse_subnet(self.subnet)

    @property
    def host_ip(self) -> str:
        return str(next(self.net.hosts()))


@dataclass(frozen=True)
class Reservation:
    mac: str
    ip: str
    name: str


def settings_from_config(config) -> NetSettings:
    u = config.untrusted_network
    return NetSettings(name=u.name, bridge=u.bridge, subnet=u.subnet, deny=tuple(u.deny), mark=u.fwmark)


# -- locking ----------------------------------------------------------------------------
@contextlib.contextmanager
def host_lock(timeout: float = HOST_LOCK_TIMEOUT):
    """Serialize netpolicy's changes on this host (allocation, rule edits)."""
    os.makedirs(LOCK_DIR, mode=0o700, exist_ok=True)
    with locking.locked(LOCK_FILE, timeout=timeout, what=f"another racf-vm changing the network ({LOCK_FILE})"):
        yield


# -- the network ------------------------------------------------------------------------
def network_xml(s: NetSettings) -> str:
    net = s.net
    root = ET.Element("network")
    ET.SubElement(root, "name").text = s.name
    ET.SubElement(root, "forward", mode="open")
    ET.SubElement(root, "bridge", name=s.bridge, stp="off", delay="0")
    ET.SubElement(root, "port", isolated="yes")
    ip = ET.SubElement(root, "ip", address=s.host_ip, netmask=str(net.netmask))
    ET.SubElement(ip, "dhcp")  # hosts only (added per job): dnsmasq serves reservations only
    opts = ET.SubElement(root, f"{{{DNSMASQ_NS}}}options")
    for value in DNSMASQ_OPTIONS:
        ET.SubElement(opts, f"{{{DNSMASQ_NS}}}option", value=value)
    return ET.tostring(root, encoding="unicode")


def _outdated(xml: str) -> list:
    """What an older racf-vm's definition lacks (fixed by redefining the network)."""
    have = {o.get("value") for o in ET.fromstring(xml).iterfind(f"{{{DNSMASQ_NS}}}options/{{{DNSMASQ_NS}}}option")}
    return [f"dnsmasq option {v} missing" for v in DNSMASQ_OPTIONS if v not in have]


def _check_existing(xml: str, s: NetSettings) -> None:
    root = ET.fromstring(xml)
    problems = []
    fwd = root.find("forward")
    if fwd is None or fwd.get("mode") != "open":
        problems.append("forward mode is not 'open'")
    br = root.find("bridge")
    if br is None or br.get("name") != s.bridge:
        problems.append(f"bridge is not {s.bridge}")
    port = root.find("port")
    if port is None or port.get("isolated") != "yes":
        problems.append("ports are not isolated")
    ips = root.findall("ip")
    if len(ips) != 1 or ips[0].get("family", "ipv4") != "ipv4" or ips[0].get("address") != s.host_ip:
        problems.append(f"it must have exactly one IPv4 address {s.host_ip} and no IPv6")
    elif str(ipaddress.IPv4Network(f"{s.host_ip}/{ips[0].get('netmask') or ips[0].get('prefix')}",
                                   strict=False)) != str(s.net):
        problems.append(f"its subnet is not {s.net}")
    if problems:
        raise NetpolicyError(
            f"libvirt network {s.name} exists with other settings ({'; '.join(problems)}); "
            "remove it (virsh net-destroy/net-undefine) or fix [untrusted_network]")


def ensure_network(conn, s: NetSettings):
    """The running untrusted network (defined, started, autostarted if it was missing)."""
    import libvirt

    try:
        net = conn.networkLookupByName(s.name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_NETWORK:
            raise NetpolicyError("libvirt could not look up the untrusted network", detail=str(exc)) from exc
        net = None
    try:
        if net is not None:
            _check_existing(net.XMLDesc(0), s)
            outdated = _outdated(net.XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE))
            if outdated:
                net = _redefine_if_idle(net, s, outdated)
        if net is None:
            log.info("defining libvirt network %s (bridge %s, %s)", s.name, s.bridge, s.subnet)
            net = conn.networkDefineXML(network_xml(s))
            net.setAutostart(1)
        if not net.isActive():
            net.create()
    except libvirt.libvirtError as exc:
        raise NetpolicyError("libvirt could not set up the untrusted network", detail=str(exc)) from exc
    return net


def _redefine_if_idle(net, s: NetSettings, outdated: list):
    """None after removing ``net`` (no guest plugged in, no reservation); refuses otherwise."""
    if net.isActive() and (net.listAllPorts() or reservations(net)):
        raise NetpolicyError(f"libvirt network {s.name} predates this racf-vm ({'; '.join(outdated)}) and "
                             "guests still use it; it is redefined once they are gone")
    log.info("redefining libvirt network %s: %s", s.name, "; ".join(outdated))
    if net.isActive():
        net.destroy()
    net.undefine()
    return None


def lookup_network(conn, name: str):
    """The network, or None when it does not exist."""
    import libvirt

    try:
        return conn.networkLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
            return None
        raise NetpolicyError("libvirt could not look up the untrusted network", detail=str(exc)) from exc


# -- reservations -----------------------------------------------------------------------
def reservation_name(tag: str) -> str:
    owner = jobtag.parse_tag(tag)
    if owner is None:
        raise NetpolicyError(f"not a job tag: {tag!r}")
    return f"racf-{owner.pid}-{owner.start}-{hashlib.sha256(tag.encode()).hexdigest()[:10]}"


def owner_of_name(name: str) -> Optional[jobtag.Owner]:
    m = _NAME.match(name or "")
    return jobtag.Owner(int(m.group("pid")), int(m.group("start"))) if m else None


def reservations(net) -> list:
    """Every DHCP host entry of the network's live definition."""
    root = ET.fromstring(net.XMLDesc(0))
    out = []
    for host in root.iterfind("ip/dhcp/host"):
        out.append(Reservation(mac=(host.get("mac") or "").lower(), ip=host.get("ip") or "",
                               name=host.get("name") or ""))
    return out


def host_xml(r: Reservation) -> str:
    return ET.tostring(ET.Element("host", mac=r.mac, name=r.name, ip=r.ip), encoding="unicode")


def pick(tag: str, s: NetSettings, taken: list) -> Reservation:
    """A MAC and address for ``tag``: deterministic from the tag, skipping those in use."""
    used_macs = {r.mac for r in taken}
    used_ips = {r.ip for r in taken} | {s.host_ip}
    mac = None
    for i in range(4096):
        h = hashlib.sha256(f"{tag}/{i}".encode()).digest()
        cand = MAC_PREFIX + ":" + ":".join(f"{b:02x}" for b in h[:3])
        if cand not in used_macs:
            mac = cand
            break
    hosts = [str(a) for a in s.net.hosts()]
    start = int.from_bytes(hashlib.sha256(tag.encode()).digest()[:4], "big") % len(hosts)
    ip = None
    for k in range(len(hosts)):
        cand = hosts[(start + k) % len(hosts)]
        if cand not in used_ips:
            ip = cand
            break
    if mac is None or ip is None:
        raise PoolExhausted(f"the untrusted network {s.name} has no free address left",
                            detail="racf-vm gc frees the addresses of dead jobs; or widen [untrusted_network] cidr")
    return Reservation(mac=mac, ip=ip, name=reservation_name(tag))


def _update(net, command: int, r: Reservation) -> None:
    import libvirt

    flags = libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE
    if net.isPersistent():
        flags |= libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG
    net.update(command, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, -1, host_xml(r), flags)


def reserve(net, tag: str, s: NetSettings) -> Reservation:
    """Add the job's DHCP reservation (idempotent for the same tag). Call under host_lock."""
    import libvirt

    name = reservation_name(tag)
    last = None
    for _attempt in range(5):
        taken = reservations(net)
        for r in taken:
            if r.name == name:
                return r
        r = pick(tag, s, taken)
        try:
            _update(net, libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, r)
            return r
        except libvirt.libvirtError as exc:  # raced with another host entry: look again
            last = exc
    raise NetpolicyError("libvirt refused the job's DHCP reservation", detail=str(last))


def release(net, r: Reservation) -> None:
    import libvirt

    try:
        _update(net, libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE, r)
    except libvirt.libvirtError as exc:
        if r in reservations(net):
            raise NetpolicyError("libvirt could not remove the job's DHCP reservation", detail=str(exc)) from exc
