"""Find and remove what dead wrappers left behind.

Judged from the resources themselves: libvirt domains carrying our metadata and job
directories, whose tags name the owning wrapper (pid + start time). Nothing is read from
a side file.
"""

import logging
import os
import shutil
from dataclasses import dataclass, field

import libvirt

from racf_vm.core import jobtag
from racf_vm.vm import domain

log = logging.getLogger(__name__)


@dataclass
class GcReport:
    domains: list = field(default_factory=list)
    job_dirs: list = field(default_factory=list)
    kept: list = field(default_factory=list)
    net: object = None  # netpolicy.lease.NetGcReport, when the untrusted network was checked


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
    return report
