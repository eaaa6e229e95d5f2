"""Which firewall backend matches this host.

The host's ``iptables`` (what libvirt, Docker and the admin use) decides: ``iptables -V``
prints ``(nf_tables)`` or ``(legacy)``. Rules of one kind are invisible to the other's
tools and both sets of hooks run in the kernel, so we never split our rules across both:
a configured backend that does not match the host is refused.
"""

from __future__ import annotations

import re

from racf_vm.core import runcmd
from racf_vm.core.errors import CommandError

from .backend import Backend
from .errors import BackendMismatch

IPTABLES = "/usr/sbin/iptables"
CHOICES = ("auto", "nft", "iptables")


def host_flavour(iptables: str = IPTABLES) -> str:
    """'nft' or 'legacy' from ``iptables -V``; BackendMismatch when it cannot tell."""
    try:
        out = runcmd.run([iptables, "-V"], timeout=10, what="iptables -V").stdout.decode(errors="replace")
    except CommandError as exc:
        raise BackendMismatch(f"cannot tell which iptables this host uses: {exc.message}") from None
    return parse_version(out)


def parse_version(text: str) -> str:
    m = re.search(r"\((nf_tables|legacy)\)", text)
    if m:
        return "nft" if m.group(1) == "nf_tables" else "legacy"
    if re.match(r"^iptables v1\.[0-6]\.", text.strip()):
        return "legacy"  # before 1.8 there was only the legacy build
    raise BackendMismatch(f"cannot tell which iptables this host uses from {text.strip()!r}")


def choose(configured: str, flavour: str) -> str:
    """The backend name ('nft' or 'iptables') for ``configured`` on a host of ``flavour``."""
    if configured not in CHOICES:
        raise BackendMismatch(f"unknown firewall backend {configured!r} (want one of {', '.join(CHOICES)})")
    matching = "nft" if flavour == "nft" else "iptables"
    if configured == "auto":
        return matching
    if configured != matching:
        host = "nf_tables" if flavour == "nft" else "legacy"
        raise BackendMismatch(
            f"untrusted_network.backend = {configured!r} but this host's iptables is the {host} build; "
            f"rules written by the {configured} backend would be invisible to the host's own iptables "
            f"and split the firewall in two. Set backend = \"{matching}\" or \"auto\", "
            "or switch the iptables alternative"
        )
    return configured


def get_backend(configured: str = "auto", iptables: str = IPTABLES) -> Backend:
    """An instance of the backend that matches the host (refuses on a mismatch)."""
    name = choose(configured, host_flavour(iptables))
    if name == "nft":
        from .backend_nft import NftBackend

        return NftBackend()
    from .backend_iptables import IptablesBackend

    return IptablesBackend()
