"""Instance profiles: the site's list, and a job's -p PROFILE clamped to its slot."""

import dataclasses

import pytest

from racf_vm.config import Profile, parse_config
from racf_vm.config.integration import DEFAULT_PROFILES, find_profile
from racf_vm.core.errors import ConfigError, UsageError
from racf_vm.job import plan as planner
from racf_vm.vm.sizing import Slot, SlotLimits, VMSize, apply_profile
from tests.unit.test_job_plan import REQUEST, inputs

GIB = 1 << 30


def test_seed_000_profiles_by_default():
    assert parse_config(b"", "t.toml").profiles == (
        Profile("small", 1, 512), Profile("medium", 2, 1024), Profile("large", 4, 2048))
    assert DEFAULT_PROFILES == parse_config(b"", "t.toml").profiles


def test_site_profiles_replace_the_defaults():
    cfg = parse_config(b"[profiles.tiny]\ncpus = 1\nmemory_mib = 256\n"
                       b"[profiles.huge_mem]\ncpus = 2\nmemory_mib = 16384\n", "t.toml")
    assert cfg.profiles == (Profile("tiny", 1, 256), Profile("huge_mem", 2, 16384))  # file order


@pytest.mark.parametrize("text, needle", [
    (b"[profiles.Big]\ncpus = 1\nmemory_mib = 512\n", "profile name 'Big' must match"),
    (b"[profiles.a-b]\ncpus = 1\nmemory_mib = 512\n", "must match"),
    (b"[profiles.x]\ncpus = 1\n", "profiles.x.memory_mib: is required"),
    (b"[profiles.x]\nmemory_mib = 512\n", "profiles.x.cpus: is required"),
    (b"[profiles.x]\ncpus = 0\nmemory_mib = 512\n", "outside 1..4096"),
    (b"[profiles.x]\ncpus = 1\nmemory_mib = 512\ngpus = 1\n", "unknown key"),
    (b"[profiles.x]\ncpus = \"2\"\nmemory_mib = 512\n", "must be an integer"),
    (b"[profiles]\n", "at least one"),
    (b"profiles = 1\n", "at least one"),
    # below the site's minimum VM: it could never be honoured
    (b"[profiles.x]\ncpus = 1\nmemory_mib = 128\n", r"below \[sizing\]"),
    (b"[sizing]\nmin_cpus = 2\n[profiles.x]\ncpus = 1\nmemory_mib = 4096\n", r"below \[sizing\]"),
])
def test_bad_profiles_are_refused(text, needle):
    with pytest.raises(ConfigError, match=needle):
        parse_config(text, "t.toml")


def test_find_profile():
    assert find_profile(DEFAULT_PROFILES, None) is None
    assert find_profile(DEFAULT_PROFILES, "medium") == Profile("medium", 2, 1024)
    with pytest.raises(UsageError, match="unknown instance profile 'xl'; this site has: small, medium, large"):
        find_profile(DEFAULT_PROFILES, "xl")


@pytest.mark.parametrize("slot, profile, expected", [
    (VMSize(8, 16384), Profile("large", 4, 2048), VMSize(4, 2048)),    # a big slot: the profile's size
    (VMSize(1, 512), Profile("large", 4, 2048), VMSize(1, 512)),       # never above the slot
    (VMSize(2, 4096), Profile("medium", 4, 1024), VMSize(2, 1024)),    # each dimension on its own
    (VMSize(2, 4096), None, VMSize(2, 4096)),                          # no profile: the slot's
])
def test_a_profile_only_ever_lowers_the_slot(slot, profile, expected):
    assert apply_profile(slot, profile) == expected


def test_the_plan_applies_the_requested_profile_to_the_slot():
    cfg = b"[sizing]\nmemory_per_core_mib = 2048\n"
    big = Slot(SlotLimits(memory_bytes=16 * GIB, cpus=8), host_cpus=8, host_memory_mib=24576)
    small = Slot(SlotLimits(memory_bytes=GIB, cpus=1), host_cpus=8, host_memory_mib=24576)

    def size(profile, slot):
        req = dataclasses.replace(REQUEST, profile=profile)
        p = planner.plan_job(inputs(cfg, request=req, slot=slot))
        assert (p.domain.vcpus, p.domain.memory_mib) == (p.size.cpus, p.size.memory_mib)
        return p.size.cpus, p.size.memory_mib

    assert size(None, big) == (8, 16384)
    assert size("small", big) == (1, 512)
    assert size("medium", big) == (2, 1024)
    assert size("large", big) == (4, 2048)
    assert size("large", small) == (1, 1024)  # the slot wins: 1 CPU, its 1 GiB
    with pytest.raises(UsageError, match="unknown instance profile"):
        size("xl", big)


def test_the_admin_guide_config_lines_are_the_defaults():
    import re
    from pathlib import Path

    from racf_vm.config import CondorConfig

    text = (Path(__file__).resolve().parents[2] / "docs" / "admin-guide.md").read_text()
    blocks = re.findall(r"```\n(.*?)```", text, re.S)
    [profiles] = [b for b in blocks if b.startswith("[profiles.")]
    assert parse_config(profiles.encode(), "guide").profiles == DEFAULT_PROFILES
    [condor] = [b for b in blocks if b.startswith("[condor]")]
    assert parse_config(condor.encode(), "guide").condor == CondorConfig()
