"""The HTCondor side of the site configuration: ``[condor]`` and the instance profiles.

``[profiles.NAME]`` tables (``cpus``, ``memory_mib``) replace the seed-000 defaults (small
1 CPU / 512 MiB, medium 2 / 1024, large 4 / 2048) when any is given. A profile is an upper
bound a job may ask for with ``-p NAME``; the slot still decides (racf_vm.vm.sizing), so a
profile never makes a VM larger than its slot. ``[condor]`` holds what the printed HTCondor
configuration and the node's advertisement need to know about this install.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from racf_vm.core.errors import ConfigError, UsageError
from racf_vm.core.tomlreader import TableReader, where

PROFILE_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")  # also a ClassAd attribute-name part
HOOK_KEYWORD_RE = r"[A-Za-z][A-Za-z0-9_]{0,31}"
MAX_PROFILES = 64


@dataclass(frozen=True)
class Profile:
    """An instance profile: at most this many CPUs and MiB of memory."""

    name: str
    cpus: int
    memory_mib: int


DEFAULT_PROFILES = (
    Profile("small", 1, 512),
    Profile("medium", 2, 1024),
    Profile("large", 4, 2048),
)


@dataclass(frozen=True)
class CondorConfig:
    """What `racf-vm condor-config` prints and `racf-vm-advertise` reports."""

    wrapper: str = "/usr/local/racf/vm"  # the setuid shim jobs name as their executable
    libexec_dir: str = "/usr/local/libexec/racf-vm"  # make install's $(PREFIX)/libexec/racf-vm
    hook_keyword: str = "RACFVM"  # the job-hook keyword (PREPARE_JOB, JOB_EXIT, JobRouter)
    advertise_period: int = 300  # seconds between two runs of the STARTD_CRON advertiser
    state_min_free_mib: int = 2048  # below this free in paths.state_dir the node cannot run jobs


def parse_condor(r: TableReader) -> CondorConfig:
    d = CondorConfig()
    return CondorConfig(
        wrapper=r.path("wrapper", d.wrapper),
        libexec_dir=r.path("libexec_dir", d.libexec_dir),
        hook_keyword=r.string("hook_keyword", d.hook_keyword, pattern=HOOK_KEYWORD_RE,
                              allow_empty=False),
        advertise_period=r.integer("advertise_period", d.advertise_period, minimum=10,
                                   maximum=86400),
        state_min_free_mib=r.integer("state_min_free_mib", d.state_min_free_mib, minimum=0,
                                     maximum=2**40),
    )


def parse_profiles(table: object, source: str, text: str) -> tuple[Profile, ...]:
    """The ``[profiles]`` table (None when absent: the defaults)."""
    if table is None:
        return DEFAULT_PROFILES
    if not isinstance(table, dict) or not table:
        raise ConfigError(f"{where(source, text, None, 'profiles')}: [profiles] must hold at "
                          "least one [profiles.NAME] table with cpus and memory_mib")
    if len(table) > MAX_PROFILES:
        raise ConfigError(f"{source}: more than {MAX_PROFILES} profiles")
    profiles = []
    for name in table:  # the file's order is the advertised order
        r = TableReader(table[name], source, text, f"profiles.{name}")
        if not PROFILE_NAME_RE.fullmatch(name):
            raise ConfigError(f"{where(source, text, None, 'profiles.' + name)}: profile name "
                              f"{name!r} must match {PROFILE_NAME_RE.pattern}")
        for key in ("cpus", "memory_mib"):
            if not r.has(key):
                raise r.fail(key, "is required")
        profiles.append(Profile(name, r.integer("cpus", 1, minimum=1, maximum=4096),
                                r.integer("memory_mib", 1, minimum=1, maximum=2**30)))
        r.finish()
    return tuple(profiles)


def check_profiles_fit_sizing(profiles: tuple[Profile, ...], min_cpus: int, min_memory_mib: int,
                              source: str) -> None:
    """A profile below the site's minimum VM could never be honoured: refuse it here."""
    for p in profiles:
        if p.cpus < min_cpus or p.memory_mib < min_memory_mib:
            raise ConfigError(f"{source}: profiles.{p.name} ({p.cpus} CPUs, {p.memory_mib} MiB) "
                              f"is below [sizing] min_cpus {min_cpus} / min_memory_mib "
                              f"{min_memory_mib}")


def find_profile(profiles: tuple[Profile, ...], name: str | None) -> Profile | None:
    """The profile a job asked for (None: it asked for none); UsageError when unknown."""
    if name is None:
        return None
    for p in profiles:
        if p.name == name:
            return p
    known = ", ".join(p.name for p in profiles) or "none"
    raise UsageError(f"unknown instance profile '{name}'; this site has: {known}")
