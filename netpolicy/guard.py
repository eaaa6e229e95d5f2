"""Apply and read back what ``guardplan`` plans: routing rules, sysctls, neighbours, ports.

Thin: every decision is in guardplan. Writes go through ``ip``/``bridge`` (racf_vm.core's
runcmd) and /proc/sys, /sys; the reads a running job repeats (``Lease.check``) are one
``ip -j rule show`` and a few small /proc and /sys files.
"""

from __future__ import annotations

import logging
import os
from typing import Optional

from racf_vm.core import runcmd
from racf_vm.core.errors import CommandError

from . import guardplan
from .errors import NetpolicyError

log = logging.getLogger(__name__)

IP = "/usr/sbin/ip"
BRIDGE = "/usr/sbin/bridge"
PROC_SYS = "/proc/sys"
PROC_ARP = "/proc/net/arp"
SYS_NET = "/sys/class/net"


def _run(args: list, what: str, check: bool = True):
    try:
        return runcmd.run(args, timeout=10, what=what, check=check)
    except CommandError as exc:
        raise NetpolicyError(f"could not {what}: {exc.message}", detail=exc.detail) from exc


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return None


def _write(path: str, value: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(value + "\n")
    except OSError as exc:
        raise NetpolicyError(f"could not write {value} to {path}: {exc}") from exc


# -- the routing guard ------------------------------------------------------------------------
def _installed_rules() -> set:
    return guardplan.installed_rules(_run([IP, "-j", "rule", "show"], "list the routing rules").stdout.decode())


def ensure(g: guardplan.Guard) -> None:
    """Set the bridge's sysctls and add the routing rules that are missing (idempotent)."""
    for s in g.sysctls:
        path = os.path.join(PROC_SYS, s.path)
        current = _read(path)
        if current is None and s.path.startswith("net/ipv6/"):
            continue  # no IPv6 on this host at all
        if current is None:
            raise NetpolicyError(f"{path} does not exist (is the bridge {g.bridge} up?)")
        if current.strip() != s.value:
            _write(path, s.value)
    have = _installed_rules()
    for r in g.rules:
        if r.key() not in have:
            log.info("adding routing rule: %s", r.text())
            _run([IP, "rule", "add"] + r.selector(), "add a routing rule of the untrusted network")


def problems(g: guardplan.Guard) -> list:
    """What of the guard is missing (empty when all of it is in place)."""
    out = []
    for s in g.sysctls:
        current = _read(os.path.join(PROC_SYS, s.path))
        if current is None and s.path.startswith("net/ipv6/"):
            continue
        if current is None or current.strip() != s.value:
            out.append(f"sysctl {s.path} is {current.strip() if current else 'missing'}, not {s.value}")
    have = _installed_rules()
    out += [f"routing rule missing: {r.text()}" for r in g.rules if r.key() not in have]
    return out


def remove(g: guardplan.Guard) -> None:
    """Delete our routing rules (tests, uninstall); the sysctls go with the bridge."""
    have = _installed_rules()
    for r in g.rules:
        if r.key() in have:
            _run([IP, "rule", "del"] + r.selector(), "remove a routing rule of the untrusted network")


# -- neighbours -------------------------------------------------------------------------------
def neighbours(bridge: str) -> dict:
    """{ip: (mac, permanent)} of the bridge's neighbour entries."""
    return guardplan.neighbours(_read(PROC_ARP) or "", bridge)


def pin_neighbour(bridge: str, ip: str, mac: str) -> None:
    _run([IP, "neigh", "replace", guardplan.check_ip(ip), "lladdr", mac, "dev", bridge, "nud", "permanent"],
         "pin the guest's neighbour entry")


def unpin_neighbour(bridge: str, ip: str, mac: str) -> None:
    """Remove the pinned entry of ``ip`` if it is still ours (``mac``)."""
    if neighbours(bridge).get(ip, (None,))[0] == mac:
        _run([IP, "neigh", "del", guardplan.check_ip(ip), "dev", bridge], "remove the guest's neighbour entry",
             check=False)


def neighbour_problems(bridge: str, ip: str, mac: str) -> list:
    have = neighbours(bridge).get(ip)
    if have != (mac, True):
        return [f"neighbour entry of {ip} is {have or 'missing'}, not permanent {mac}"]
    return []


# -- bridge ports -----------------------------------------------------------------------------
def find_port(bridge: str, mac: str) -> Optional[str]:
    """The bridge port (tap) of the guest NIC with ``mac``, or None while it is not plugged in."""
    want = guardplan.tap_mac(mac)
    try:
        ports = os.listdir(os.path.join(SYS_NET, bridge, "brif"))
    except FileNotFoundError:
        return None
    for port in ports:
        if (_read(os.path.join(SYS_NET, port, "address")) or "").strip().lower() == want:
            return port
    return None


def pin_port(bridge: str, port: str, mac: str) -> None:
    """Learning and unknown-unicast flooding off on ``port``; ``mac`` sticky on it."""
    for flag in ("learning", "unicast_flood"):
        _write(os.path.join(SYS_NET, port, "brport", flag), "0")
    _run([BRIDGE, "fdb", "replace", mac, "dev", port, "master", "static", "sticky"],
         "pin the guest's MAC to its bridge port")


def port_problems(bridge: str, port: str, mac: str) -> list:
    base = os.path.join(SYS_NET, port, "brport")
    port_no = _read(os.path.join(base, "port_no"))
    address = (_read(os.path.join(SYS_NET, port, "address")) or "").strip().lower()
    if port_no is None or address != guardplan.tap_mac(mac):
        return []  # the port is gone (or its name reused): so is the guest
    out = [f"bridge port {port}: {flag} is on" for flag in ("learning", "unicast_flood")
           if (_read(os.path.join(base, flag)) or "").strip() != "0"]
    with open(os.path.join(SYS_NET, bridge, "brforward"), "rb") as f:
        where = guardplan.fdb(f.read()).get(mac)
    if where != int(port_no, 0):
        out.append(f"MAC {mac} is not pinned to bridge port {port}")
    return out
