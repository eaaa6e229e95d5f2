"""One job's place on the untrusted network, from before boot to after teardown.

    with netpolicy.untrusted_lease(conn, config, tag) as lease:
        ... boot a guest with lease.network_name / lease.mac (it will get lease.ip) ...

    lease, release = netpolicy.acquire_untrusted(conn, config, tag)   # outlives the caller

On entry: the network exists and runs, the firewall skeleton is current, the job has a
DHCP reservation and its tagged rules are installed — all before the caller boots.
On exit (every path): the rules, the reservation and the conntrack entries of the
address are removed. If the process dies instead (SIGKILL), ``gc_network`` finds what is
left from the tags in the firewall and the names in the network's XML.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from dataclasses import dataclass
from typing import Callable, Optional

from racf_vm.core import jobtag

from . import conntrack, detect, network, planner
from .backend import Backend

log = logging.getLogger(__name__)


@dataclass
class Lease:
    tag: str
    mac: str
    ip: str
    network_name: str
    bridge: str
    rules: planner.Rules
    backend_name: str


def base_version(rules: planner.Rules) -> str:
    return hashlib.sha256(repr(rules.base).encode()).hexdigest()[:12]


def plan_for(config, tag: str, mac: str, ip: str) -> planner.Rules:
    s = network.settings_from_config(config)
    return planner.plan(planner.JobNet(tag=tag, mac=mac, ip=ip, bridge=s.bridge, subnet=s.subnet,
                                       host_ip=s.host_ip))


def example_plan(config) -> planner.Rules:
    """The rules of a hypothetical job (for ``policy explain``): real skeleton, sample job."""
    s = network.settings_from_config(config)
    hosts = s.net.hosts()
    next(hosts)
    return plan_for(config, "SLOT-CLUSTER.PROC-PID-START", network.MAC_PREFIX + ":00:00:01", str(next(hosts)))


@contextlib.contextmanager
def untrusted_lease(conn, config, tag: str, backend: Optional[Backend] = None):
    lease, release = acquire_untrusted(conn, config, tag, backend)
    try:
        yield lease
    finally:
        release()


def acquire_untrusted(conn, config, tag: str,
                      backend: Optional[Backend] = None) -> tuple[Lease, Callable[[], None]]:
    """The lease, and the function that releases it: for a caller that exits while its
    guest still runs (the VM universe's LIBVIRT_XML_SCRIPT). Such a caller releases only on
    its own failure; otherwise ``gc_network`` does, once the tag's owner is gone. On
    failure here, whatever was already set up is released before the error is raised."""
    s = network.settings_from_config(config)
    if backend is None:
        backend = detect.get_backend(config.untrusted_network.backend)
    res = None
    net = None
    try:
        with network.host_lock():
            net = network.ensure_network(conn, s)
            res = network.reserve(net, tag, s)
            rules = plan_for(config, tag, res.mac, res.ip)
            backend.ensure_base(rules, s.bridge, base_version(rules))
            backend.remove_job(tag)  # idempotent re-entry
            # a previous user of the address may have left connections behind
            conntrack.delete_for(res.ip)
            backend.add_job(rules)
    except BaseException:
        _release(backend, net, res, tag)
        raise
    lease = Lease(tag=tag, mac=res.mac, ip=res.ip, network_name=s.name, bridge=s.bridge,
                  rules=rules, backend_name=backend.name)
    log.info("job %s: untrusted network %s, MAC %s, address %s, %s rules", tag, s.name,
             res.mac, res.ip, backend.name)
    return lease, lambda: _release(backend, net, res, tag)


def _release(backend: Backend, net, res, tag: str) -> None:
    errors = []
    with network.host_lock():
        try:
            backend.remove_job(tag)
        except Exception as exc:  # go on: gc will retry
            errors.append(f"rules: {exc}")
        if res is not None:
            try:
                conntrack.delete_for(res.ip)
            except Exception as exc:
                errors.append(f"conntrack: {exc}")
            if net is not None:
                try:
                    network.release(net, res)
                except Exception as exc:
                    errors.append(f"reservation: {exc}")
    if errors:
        log.warning("job %s: network teardown incomplete (racf-vm gc will finish it): %s", tag,
                    "; ".join(errors))


@dataclass
class NetGcReport:
    rules: list
    reservations: list
    conntrack_addresses: list
    kept: list


def gc_network(conn, config, is_alive: Callable = jobtag.is_alive,
               backend: Optional[Backend] = None) -> NetGcReport:
    """Remove rules and reservations of dead wrappers, and their addresses' conntrack entries."""
    report = NetGcReport([], [], [], [])
    s = network.settings_from_config(config)
    net = network.lookup_network(conn, s.name)
    if backend is None:
        backend = detect.get_backend(config.untrusted_network.backend)
    with network.host_lock():
        for tag in sorted(backend.job_tags()):
            owner = jobtag.parse_tag(tag)
            if owner is not None and is_alive(owner):
                report.kept.append(tag)
                continue
            log.info("removing orphaned firewall rules of %s", tag)
            backend.remove_job(tag)
            report.rules.append(tag)
        if net is None:
            return report
        for r in network.reservations(net):
            owner = network.owner_of_name(r.name)
            if owner is None:
                continue  # not ours
            if is_alive(owner):
                report.kept.append(r.name)
                continue
            log.info("removing orphaned DHCP reservation %s (%s, %s)", r.name, r.mac, r.ip)
            conntrack.delete_for(r.ip)
            network.release(net, r)
            report.reservations.append(r.name)
            report.conntrack_addresses.append(r.ip)
    return report
