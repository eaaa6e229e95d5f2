"""Gather what racf_vm.condor.nodead advertises, as the condor user (never root).

Everything here is read-only and quick (the whole run stays well under a second): sockets
are only connected to, files only stat'ed or read (the catalog, the cache index, the
accelerator probe's cached answer), and the one command is ``iptables -V``. Nothing is
probed that needs root: an accelerator not probed yet is "unknown" until a job probes it.

What the condor user must be able to read (make install sets it up that way): the config
file and the catalog (files 0644 in 0755 directories), the cache directory and its
``.verified.json`` (0755/0644), and the state directory must be searchable (0711) for
``accel.json`` (0644) and its free space.
"""

from __future__ import annotations

import os
import stat
from typing import Optional
from urllib.parse import parse_qs, urlsplit

from racf_vm import config as config_mod
from racf_vm.condor.nodead import ImageFact, NodeFacts
from racf_vm.core import runcmd
from racf_vm.core.errors import RacfError
from racf_vm.core.unixsock import socket_status
from racf_vm.images import catalog, index
from racf_vm.trust import pathtrust
from racf_vm.vm import accel

SOCKET_TIMEOUT = 0.2
IPTABLES_TIMEOUT = 0.4
SYSTEM_SOCKETS = ("/run/libvirt/virtqemud-sock", "/run/libvirt/libvirt-sock")
VIRTLOGD_SOCKET = "/run/libvirt/virtlogd-sock"
MIB = 1 << 20


def libvirt_sockets(uri: str) -> tuple[str, ...]:
    """The local sockets one of which must answer for ``uri`` (none to check: remote, test,
    or per-user URIs)."""
    parts = urlsplit(uri)
    if parts.scheme not in ("qemu", "qemu+unix") or parts.netloc or parts.path != "/system":
        return ()
    given = parse_qs(parts.query).get("socket")
    return (given[0],) if given else SYSTEM_SOCKETS


def daemon_problems(uri: str) -> list[str]:
    """libvirtd (its socket is world-connectable) and virtlogd (root-only socket: only a
    missing or refusing one can be seen from here) for a local ``uri``."""
    sockets = libvirt_sockets(uri)
    if not sockets:
        return []
    problems = []
    if all(socket_status(s, SOCKET_TIMEOUT) == "down" for s in sockets):
        problems.append(f"libvirtd is not running (nothing answers on {' or '.join(sockets)})")
    if socket_status(VIRTLOGD_SOCKET, SOCKET_TIMEOUT) == "down":
        problems.append(f"virtlogd is not running (nothing answers on {VIRTLOGD_SOCKET})")
    return problems


def wrapper_problem(path: str) -> Optional[str]:
    """Why jobs naming ``path`` as their executable would not get root, or None."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return f"the wrapper {path} is missing ({exc.strerror}; make install)"
    if st.st_uid != 0 or not st.st_mode & stat.S_ISUID:
        return f"the wrapper {path} is not setuid root (chown root:root {path}; chmod 4755 {path})"
    if not st.st_mode & stat.S_IXOTH:
        return f"the wrapper {path} is not executable by job users (chmod 4755 {path})"
    if os.statvfs(path).f_flag & os.ST_NOSUID:
        return f"the wrapper {path} is on a filesystem mounted nosuid"
    return None


def state_problem(state_dir: str, min_free_mib: int) -> Optional[str]:
    try:
        st = os.statvfs(state_dir)
    except OSError as exc:
        return f"cannot check the state directory {state_dir}: {exc.strerror}"
    free = st.f_bavail * st.f_frsize // MIB
    if free < min_free_mib:
        return (f"the state directory {state_dir} is nearly full ({free} MiB free, "
                f"[condor] state_min_free_mib is {min_free_mib})")
    return None


def untrusted_problem(configured: str) -> str:
    """Why the untrusted network's firewall cannot work on this host ("" when it can)."""
    from netpolicy import detect

    try:
        out = runcmd.run([detect.IPTABLES, "-V"], timeout=IPTABLES_TIMEOUT, what="iptables -V")
        detect.choose(configured, detect.parse_version(out.stdout.decode(errors="replace")))
    except RacfError as exc:
        return exc.message
    return ""


def _file_state(path: str, in_cache: bool, fetchable: bool) -> tuple[str, str]:
    """("present", ""), or the state and reason of a file a job could not use as it is."""
    try:
        os.lstat(path)
    except FileNotFoundError:
        if in_cache and fetchable:
            return "fetchable", ""
        return "missing", f"{path} does not exist"
    except OSError as exc:
        return "refused", f"cannot check {path} as uid {os.getuid()}: {exc.strerror}"
    try:
        pathtrust.check_trusted_file(path)
    except RacfError as exc:
        return "refused", exc.message
    return "present", ""


def image_fact(entry: catalog.ImageEntry, cfg, idx: dict) -> ImageFact:
    """Where one catalog image stands on this node (see racf_vm.images.jobimage.resolve for
    what a job does with it)."""
    def fact(state: str, reason: str = "") -> ImageFact:
        return ImageFact(entry.name, entry.trust, entry.sha256, state, reason)

    if entry.checksum_is_placeholder:
        return fact("refused", "the catalog has the placeholder sha256")
    for boot_file in (entry.boot.kernel, entry.boot.initrd):
        if boot_file:
            state, reason = _file_state(boot_file, False, False)
            if state != "present":
                return fact(state, reason)
    cache_dir = os.path.normpath(cfg.images.cache_dir)
    in_cache = os.path.dirname(os.path.normpath(entry.path)) == cache_dir
    managed = in_cache and bool(cfg.images.source_url)  # else a job uses the file as it is
    state, reason = _file_state(entry.path, in_cache, managed)
    if state != "present":
        return fact(state, reason)
    verified = index.verified_sha(cache_dir, os.path.basename(entry.path), idx) if in_cache else None
    if verified and (verified == entry.sha256 or entry.follow):  # follow: the last verified list's
        return ImageFact(entry.name, entry.trust, verified, "cached")
    # a job re-fetches what the cache manages but has not verified; anything else it uses as is
    return fact("fetchable" if managed else "local")


def catalog_facts(cfg) -> tuple[list[ImageFact], list[str]]:
    """Every catalog image's fact, and the problems that refuse every job (a refused
    catalog file makes the wrapper refuse the whole catalog)."""
    directory = cfg.paths.catalog_dir
    uid = os.getuid()
    try:
        pathtrust.check_trusted_dir(directory)
        files = list(catalog.scan_catalog(directory, check_trust=pathtrust.check_trusted_file))
    except RacfError as exc:
        return [], [f"the image catalog {directory}: {exc.message} (uid {uid} must be able "
                    "to read it: directory 0755, files 0644)"]
    problems, images = [], []
    for item in files:
        if item.error is not None:
            problems.append(f"{item.source}: {item.error.message} (racf-vm policy check; "
                            "files 0644 so that the condor user can read them)")
        else:
            images.append(item.entry)
    idx = index.load(cfg.images.cache_dir)
    return [image_fact(e, cfg, idx) for e in images], problems


def accel_fact(cfg) -> str:
    if cfg.libvirt.accel in ("kvm", "tcg"):
        return cfg.libvirt.accel
    return accel.cached_accel(cfg.paths.state_dir, cfg.libvirt.emulator) or "unknown"


def gather(config_path: str) -> NodeFacts:
    """The facts about this node for the site config at ``config_path``."""
    try:
        pathtrust.check_trusted_file(config_path)
        cfg = config_mod.load_config(config_path)
    except RacfError as exc:
        return NodeFacts((f"the racf-vm config {config_path}: {exc.message}",), "", "unknown", (), ())
    problems = daemon_problems(cfg.libvirt.uri)
    for problem in (wrapper_problem(cfg.condor.wrapper),
                    state_problem(cfg.paths.state_dir, cfg.condor.state_min_free_mib)):
        if problem:
            problems.append(problem)
    if not os.path.exists(cfg.parent.starter):
        problems.append(f"the condor_starter {cfg.parent.starter} does not exist ([parent] starter)")
    images, catalog_problems = catalog_facts(cfg)
    problems += catalog_problems
    return NodeFacts(tuple(problems), untrusted_problem(cfg.untrusted_network.backend),
                     accel_fact(cfg), tuple(images), cfg.profiles)
