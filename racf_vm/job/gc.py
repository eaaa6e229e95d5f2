"""Find and remove what dead wrappers left behind, and prepared layers nobody needs.

Judged from the resources themselves: libvirt domains carrying our metadata, job
directories and site DHCP reservation files, whose tags name the owning wrapper (pid +
start time); prepared layers by
their names (which carry what they were made from) and the base their header names.
Nothing is read from a side file.
"""

import logging
import os
import shutil
from dataclasses import dataclass, field

import libvirt

from racf_vm.core import jobtag
from racf_vm.core.errors import RacfError
from racf_vm.guest import install
from racf_vm.images import catalog, jobimage, prepare
from racf_vm.trust import pathtrust
from racf_vm.vm import domain, sitedhcp

log = logging.getLogger(__name__)


@dataclass
class GcReport:
    domains: list = field(default_factory=list)
    job_dirs: list = field(default_factory=list)
    kept: list = field(default_factory=list)
    net: object = None  # netpolicy.lease.NetGcReport, when the untrusted network was checked
    layers: list = field(default_factory=list)  # prepared layers removed
    site: object = None  # racf_vm.vm.sitedhcp.SiteGcReport: the site DHCP's reservation files


def collect(conn, state_dir: str, config=None) -> GcReport:
    report = GcReport()
    for name, meta in domain.list_job_domains(conn):
        owner = jobtag.parse_tag(meta.get("tag", "")) if meta else None
        if owner is not None and jobtag.is_alive(owner):
            report.kept.append(name)
            continue
        log.info("destroying orphaned domain %s", name)
        try:
            domain.destroy(conn.lookupByName(name))
        except libvirt.libvirtError:
            continue  # it went away by itself meanwhile
        report.domains.append(name)
    jobs_dir = os.path.join(state_dir, "jobs")
    try:
        names = sorted(os.listdir(jobs_dir))
    except FileNotFoundError:
        names = []
    for name in names:
        owner = jobtag.parse_tag(name)
        if owner is None:
            log.warning("leaving %s alone: not a racf-vm job directory", os.path.join(jobs_dir, name))
            continue
        if jobtag.is_alive(owner):
            report.kept.append(name)
            continue
        path = os.path.join(jobs_dir, name)
        log.info("removing orphaned job directory %s", path)
        shutil.rmtree(path)
        report.job_dirs.append(path)
    if config is not None:
        import netpolicy

        report.net = netpolicy.gc_network(conn, config, jobtag.is_alive)
        report.site = sitedhcp.gc_reservations(config.network, jobtag.is_alive)
        report.kept += report.site.kept
        current = _current_layers(config)
        if current is not None:
            report.layers, in_use = prepare.remove_stale_layers(state_dir, current)
            report.kept += in_use
    return report


def _current_layers(config):
    """What the catalog needs now; None (remove no layer) when it cannot be read."""
    try:
        runner = install.read_runner(config.paths.runner)
        cat = catalog.load_catalog(config.paths.catalog_dir, check_trust=pathtrust.check_trusted_file)
    except RacfError as exc:
        log.warning("prepared layers left alone: %s", exc.message)
        return None
    resolved = (jobimage.resolve_offline(cat[name], config) for name in cat)
    return prepare.current_layers((e for e in resolved if e is not None), runner)
