"""Naming of per-job resources, and deciding whether their owner still lives.

Every resource a wrapper creates carries a tag ending in ``-<pid>-<start>``: the wrapper's
pid and its start time in clock ticks since boot. The pair is unique for the life of
the machine, so ``gc`` can judge any resource by its name alone.
"""

import re
from dataclasses import dataclass
from typing import Optional

DOMAIN_PREFIX = "racf-vm-"
_PART = re.compile(r"[^A-Za-z0-9_.]")
_TAG = re.compile(r"^(?P<head>[A-Za-z0-9_.-]*)-(?P<pid>[0-9]{1,10})-(?P<start>[0-9]{1,20})$")


@dataclass(frozen=True)
class Owner:
    pid: int
    start: int


def _clean(value: object) -> str:
    return _PART.sub("_", str(value))[:24] or "_"


def make_tag(slot: str, cluster: int, proc: int, owner: Owner) -> str:
    return f"{_clean(slot)}-{_clean(cluster)}.{_clean(proc)}-{owner.pid}-{owner.start}"


def parse_tag(tag: str) -> Optional[Owner]:
    """The owner encoded in ``tag``, or None when it is not one of our tags."""
    m = _TAG.match(tag)
    if not m:
        return None
    return Owner(int(m.group("pid")), int(m.group("start")))


def process_start(pid: int) -> Optional[int]:
    """Start time of ``pid`` in clock ticks since boot, None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return int(fields[19])


def self_owner() -> Owner:
    import os

    pid = os.getpid()
    return Owner(pid, process_start(pid))


def is_alive(owner: Owner) -> bool:
    return process_start(owner.pid) == owner.start
