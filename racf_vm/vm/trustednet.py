"""Trusted guests on the site network: their MACs and their fixed addresses, as plain data.

Pure: racf_vm.vm.sitedhcp writes the reservations this plans; the job plan carries the MAC.

A trusted NIC's MAC is ``<prefix>:<seat>``: the node's three-octet prefix
(``[network] trusted_mac_prefix``: each node on one site network needs its own) and a
24-bit seat that no other live guest of the node holds:

- without a reservation, the seat is the pid of the guest's owner (the wrapper, the VM
  universe's condor_vm-gahp, ``images maintain``: the pid in the job tag). The kernel
  never gives one pid to two live processes, and every pid is below ``PID_SEATS``;
- with a reservation, the seat is ``POOL_SEAT_BASE`` + the address's index in
  ``[network] trusted_pool`` (allocated under a lock): an address always comes with the
  same MAC on this node. A site dnsmasq keeps the host record of a removed reservation
  file until its next SIGHUP, and its lease for the address's last guest until it expires;
  with fixed pairs neither can give the address to another MAC or the MAC another address.

Pid seats are below 2**22 and pool seats 2**23 and up, so the two never meet; the prefix
is never the untrusted NAT network's (racf_vm.config.network refuses it).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Optional

from racf_vm.config.network import MAX_POOL, parse_pool, prefix_problem
from racf_vm.core import jobtag
from racf_vm.core.errors import InternalError, TemporaryError

PID_SEATS = 1 << 22  # PID_MAX_LIMIT of 64-bit Linux: /proc/sys/kernel/pid_max cannot exceed it
POOL_SEAT_BASE = 1 << 23
FILE_PREFIX = "racf-"  # a reservation file is racf-<job tag> (dnsmasq skips dot files)


def mac_of_seat(prefix: str, seat: int) -> str:
    if prefix_problem(prefix) or not 0 <= seat < 1 << 24:
        raise InternalError(f"trusted MAC: bad prefix {prefix!r} or seat {seat}")
    return f"{prefix}:{seat >> 16:02x}:{(seat >> 8) & 0xFF:02x}:{seat & 0xFF:02x}"


def owner_mac(prefix: str, owner_pid: int) -> str:
    """The MAC of a guest without a reservation: its owner's pid is the seat."""
    if not 0 < owner_pid < PID_SEATS:
        raise InternalError(f"trusted MAC: pid {owner_pid} is outside the kernel's pid range")
    return mac_of_seat(prefix, owner_pid)


def pool_mac(prefix: str, index: int) -> str:
    """The MAC that always comes with the pool's ``index``-th address on this node."""
    if not 0 <= index < MAX_POOL:
        raise InternalError(f"trusted MAC: pool index {index} is out of range")
    return mac_of_seat(prefix, POOL_SEAT_BASE + index)


@dataclass(frozen=True)
class SiteReservation:
    """One job's fixed address: the line ``mac,ip`` in the file ``racf-<tag>``."""

    tag: str
    mac: str
    ip: str

    @property
    def file_name(self) -> str:
        return file_name(self.tag)

    @property
    def line(self) -> str:
        """dnsmasq's dhcp-hostsfile syntax: what --dhcp-host takes after its '='."""
        return f"{self.mac},{self.ip}\n"


def file_name(tag: str) -> str:
    if jobtag.parse_tag(tag) is None:
        raise InternalError(f"not a job tag: {tag!r}")
    return FILE_PREFIX + tag


def owner_of_file(name: str) -> Optional[jobtag.Owner]:
    """The owner a reservation file's name encodes; None when the file is not ours."""
    if not name.startswith(FILE_PREFIX):
        return None
    return jobtag.parse_tag(name[len(FILE_PREFIX):])


def addresses_in(text: str) -> set[str]:
    """The IPv4 addresses the lines of a dhcp-hostsfile name (ours, or the site's own)."""
    found = set()
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        for word in line.split(","):
            try:
                found.add(str(ipaddress.IPv4Address(word.strip())))
            except ValueError:
                continue
    return found


def plan_reservation(prefix: str, pool: str, tag: str, taken: set[str]) -> SiteReservation:
    """The lowest free address of ``pool`` and the MAC that goes with it, for ``tag``.

    ``taken``: the addresses the files of the hosts directory name. A freed address is
    reused at once: it comes back with the same MAC (see the module doc).
    """
    first, last = parse_pool(pool)
    size = int(last) - int(first) + 1
    for index in range(size):
        ip = str(first + index)
        if ip not in taken:
            return SiteReservation(tag=tag, mac=pool_mac(prefix, index), ip=ip)
    raise TemporaryError(
        f"all {size} addresses of the site network's pool ({pool}, [network] trusted_pool) are "
        f"reserved by jobs on this node; the job will run again later")
