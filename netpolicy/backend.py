"""What a firewall backend does: the interface both backends implement.

A backend owns netpolicy's rules in one firewall (nftables, or legacy iptables through
python-iptables). Rules are ``planner.Rules``; the base (skeleton) rules are versioned so a
changed policy replaces them, and each job's rules carry its tag so ``gc`` finds them in
the firewall itself.
"""

from __future__ import annotations

from collections import Counter
from typing import Protocol

from . import planner


class Backend(Protocol):
    name: str

    def ensure_base(self, rules: planner.Rules, bridge: str, version: str) -> None:
        """Install the skeleton for ``bridge`` unless this ``version`` is already there."""

    def add_job(self, rules: planner.Rules) -> None:
        """Install one job's rules (tagged with its job tag)."""

    def remove_job(self, tag: str) -> int:
        """Remove every rule of job ``tag``; how many there were (0 is fine)."""

    def job_tags(self) -> set:
        """The tags of every job that has rules installed."""

    def job_rule_count(self, tag: str) -> int:
        """How many rules job ``tag`` has installed."""

    def verify(self, rules: planner.Rules, bridge: str, version: str) -> list:
        """What of the skeleton of ``version`` and of ``rules.job`` is not installed ([] when
        all of it is). Read-only, takes no lock; cheap enough to run every few seconds."""

    def remove_all(self) -> None:
        """Remove netpolicy's rules and chains entirely (tests, uninstall)."""

    def listing(self) -> str:
        """The installed rules as the firewall's own tools show them."""


def shortfall(expected: Counter, actual: Counter) -> list:
    """One line per place where fewer of our rules are installed than ``expected`` says.

    Both counters map (where, comment) -> number of rules; ``where`` names a chain."""
    out = []
    for (where, comment), n in sorted(expected.items()):
        have = actual.get((where, comment), 0)
        if have < n:
            out.append(f"{where}: {have} of {n} rules {comment}")
    return out
