"""What this node advertises about racf-vm, as a ClassAd (pure; racf_vm.condor.nodefacts
gathers the facts, racf_vm.condor.advertise prints the ad for STARTD_CRON).

Attributes (every run prints all of them, so a value never lingers from an earlier run):

- ``RacfVMCanRun`` (bool): this node can run racf-vm jobs now;
- ``RacfVMOfflineReason`` (string): why not, or why untrusted images cannot run ("" when
  nothing is wrong);
- ``RacfVMUntrustedOK`` (bool): untrusted images can run (their firewall works here);
- ``RacfVMAccel`` (string): "kvm", "tcg", or "unknown" before the first job probed it;
- ``RacfVMImages`` (list of strings): the catalog images a job can run here now (the node
  cache fetches a missing one first); ``RacfVMCachedImages``: those already on the node,
  verified (seed 000's CACHED_IMAGES: ``rank = member("NAME", RacfVMCachedImages)``);
- per image of ``RacfVMImages``, with ``.`` and ``-`` of its name written ``_``:
  ``RacfVMImage_<name>_Trust`` ("trusted"/"untrusted"), ``..._Sha256`` (the first 12 hex
  digits of the catalog's sha256), ``..._State`` ("cached": verified in the node cache;
  "local": a file a job uses as it is (outside the cache, or no image server to fetch it
  from); "fetchable": a job fetches and verifies it first);
- ``RacfVMProfiles`` (list of strings) and, per profile, ``RacfVMProfile_<name>_Cpus`` and
  ``RacfVMProfile_<name>_Memory`` (MiB, like the slot's ``Memory``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from racf_vm.condor.attributes import ATTR_IMAGES, ATTR_READY, PREFIX
from racf_vm.config.integration import Profile

SHORT_SHA = 12
READY_STATES = ("cached", "local")  # on the node: a job starts without a download
USABLE_STATES = READY_STATES + ("fetchable",)


@dataclass(frozen=True)
class ImageFact:
    name: str
    trust: str  # "trusted" | "untrusted"
    sha256: str
    state: str  # "cached" | "local" | "fetchable" | "missing" | "refused"
    reason: str = ""  # for missing/refused: what is wrong (the advertiser's stderr)


@dataclass(frozen=True)
class NodeFacts:
    problems: tuple[str, ...]  # why no racf-vm job can run here ("" nowhere)
    untrusted_problem: str  # why untrusted images cannot run ("" when they can)
    accel: str  # "kvm" | "tcg" | "unknown"
    images: tuple[ImageFact, ...]
    profiles: tuple[Profile, ...]


def attr_part(name: str) -> str:
    """An image name as part of an attribute name (ClassAd names: letters, digits, _)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def usable_images(facts: NodeFacts) -> list[ImageFact]:
    return [i for i in facts.images if i.state in USABLE_STATES
            and (i.trust == "trusted" or not facts.untrusted_problem)]


def node_attributes(facts: NodeFacts) -> dict[str, object]:
    """The advertised attributes, in a stable order (plain Python values)."""
    usable = usable_images(facts)
    reasons = list(facts.problems)
    if not usable and not facts.problems:
        reasons.append("no catalog image can run on this node (racf-vm images sync; "
                       "racf-vm policy check)")
    if facts.untrusted_problem:
        reasons.append(f"untrusted images cannot run: {facts.untrusted_problem}")
    attrs: dict[str, object] = {
        ATTR_READY: not facts.problems and bool(usable),
        f"{PREFIX}OfflineReason": "; ".join(reasons),
        f"{PREFIX}UntrustedOK": not facts.untrusted_problem and not facts.problems,
        f"{PREFIX}Accel": facts.accel,
        ATTR_IMAGES: [i.name for i in usable],
        f"{PREFIX}CachedImages": [i.name for i in usable if i.state in READY_STATES],
    }
    parts = [attr_part(i.name) for i in usable]
    for image, part in zip(usable, parts):
        if parts.count(part) > 1:
            continue  # two names map to one attribute name: neither gets per-image attributes
        base = f"{PREFIX}Image_{part}_"
        attrs[base + "Trust"] = image.trust
        attrs[base + "Sha256"] = image.sha256[:SHORT_SHA]
        attrs[base + "State"] = image.state
    attrs[f"{PREFIX}Profiles"] = [p.name for p in facts.profiles]
    for p in facts.profiles:
        attrs[f"{PREFIX}Profile_{p.name}_Cpus"] = p.cpus
        attrs[f"{PREFIX}Profile_{p.name}_Memory"] = p.memory_mib
    return attrs


def cron_output(attrs: dict[str, object]) -> str:
    """STARTD_CRON output: one ad as ``Attr = value`` lines (old ClassAd syntax, written by
    classad2), ended by a ``-`` line."""
    import classad2  # only here: the advertiser's one heavy import

    ad = classad2.ClassAd()
    lines = []
    for name, value in attrs.items():
        ad.clear()
        ad[name] = value
        lines.append(ad.printOld().strip())  # one attribute at a time keeps our order
    return "\n".join(lines) + "\n-\n"
