"""iptables rules as data: what the legacy backend installs, one ``Spec`` per rule.

Pure: netpolicy.planner's rules in, ``Spec`` values out (for ``policy explain``, tests and
backend_iptables, which applies them with python-iptables). Chains: see backend_iptables.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

from . import planner
from .errors import NetpolicyError

_CHAINS = {
    planner.GUEST_PRE: ("mangle", "RACF_GUEST_PRE"),
    planner.VET: ("mangle", "RACF_VET"),
    planner.GUEST_DEST: ("filter", "RACF_GUEST_DEST"),
    planner.GUEST_OUT: ("filter", "RACF_GUEST_OUT"),
    planner.GUEST_IN: ("filter", "RACF_GUEST_IN"),
    planner.GUEST_HOST: ("filter", "RACF_GUEST_HOST"),
    planner.NAT: ("nat", "RACF_NAT"),
}
# (table, built-in chain, match {"in_interface"/"out_interface"}, our chain, ipv6 too),
# in the order they end up at the head of the built-in chains
_JUMPS = (
    ("mangle", "PREROUTING", "in_interface", "RACF_GUEST_PRE", False),
    ("mangle", "PREROUTING", "in_interface", "RACF_VET", False),
    ("filter", "FORWARD", "in_interface", "RACF_GUEST_DEST", False),
    ("filter", "FORWARD", "in_interface", "RACF_GUEST_OUT", True),
    ("filter", "FORWARD", "out_interface", "RACF_GUEST_IN", True),
    ("filter", "INPUT", "in_interface", "RACF_GUEST_HOST", True),
    ("nat", "POSTROUTING", None, "RACF_NAT", False),
)


@dataclass(frozen=True)
class Spec:
    """One iptables rule as data (what ``iptables -t TABLE -I CHAIN ...`` would say)."""

    ipv6: bool
    table: str
    chain: str
    in_interface: Optional[str] = None
    out_interface: Optional[str] = None
    src: Optional[str] = None
    dst: Optional[str] = None
    protocol: Optional[str] = None
    matches: tuple = field(default_factory=tuple)  # ((name, ((param, value), ...)), ...)
    target: str = "ACCEPT"
    target_params: tuple = field(default_factory=tuple)

    def argv(self) -> list:
        """The equivalent iptables arguments (for display and tests)."""
        out = ["-t", self.table, "-A", self.chain]
        if self.in_interface:
            out += ["-i", self.in_interface]
        if self.out_interface:
            neg = self.out_interface.startswith("!")
            out += (["!"] if neg else []) + ["-o", self.out_interface.lstrip("!")]
        for flag, value in (("-s", self.src), ("-d", self.dst)):
            if value:
                neg = value.startswith("!")
                out += (["!"] if neg else []) + [flag, value.lstrip("!")]
        if self.protocol:
            out += ["-p", self.protocol]
        for name, params in self.matches:
            out += ["-m", name]
            for k, v in params:
                neg = v.startswith("!")
                out += (["!"] if neg else []) + [f"--{k.replace('_', '-')}", v.lstrip("!")]
        out += ["-j", self.target]
        for k, v in self.target_params:
            out += [f"--{k.replace('_', '-')}", v]
        return out

    @property
    def where(self) -> str:
        return f"{'ip6' if self.ipv6 else 'ip4'} {self.table} {self.chain}"

    @property
    def comment(self) -> Optional[str]:
        for name, params in self.matches:
            if name == "comment":
                return dict(params)["comment"]
        return None

    def text(self) -> str:
        return ("ip6tables " if self.ipv6 else "iptables ") + " ".join(self.argv())


def _net(value: str) -> str:
    net = ipaddress.ip_network(value, strict=False)
    return str(net.network_address) if net.num_addresses == 1 and "/" not in value else str(net)


def _ports(lohi) -> str:
    lo, hi = lohi
    return str(lo) if lo == hi else f"{lo}:{hi}"


def render_rule(rule: planner.Rule, comment: str) -> list:
    """The Specs of one rule: [] when this backend does not install it, two for "any"."""
    if rule.chain not in _CHAINS:
        return []  # POST_NAT and BRIDGE: see the module docstring
    table, chain = _CHAINS[rule.chain]
    families = {"ipv4": (False,), "ipv6": (True,), "any": (False, True)}[rule.family]
    specs = []
    for ipv6 in families:
        if ipv6 and table != "filter":  # our IPv6 rules are filter drops only
            continue
        kw: dict = {}
        matches = []
        proto = rule.get("proto")
        for key, value in rule.match:
            if key == "iif":
                kw["in_interface"] = value
            elif key == "oif":
                kw["out_interface"] = value
            elif key == "oif_not":
                kw["out_interface"] = "!" + value
            elif key == "saddr":
                kw["src"] = _net(value)
            elif key == "daddr":
                kw["dst"] = _net(value)
            elif key == "daddr_not":
                kw["dst"] = "!" + _net(value)
            elif key in ("smac", "smac_not"):
                neg = "!" if key == "smac_not" else ""
                matches.append(("mac", (("mac_source", neg + value.upper()),)))
            elif key == "daddr_type":
                matches.append(("addrtype", (("dst_type", value.upper()),)))
            elif key == "proto":
                if isinstance(value, tuple):
                    raise NetpolicyError("iptables backend: protocol sets are not supported")
                kw["protocol"] = value
            elif key in ("sport", "dport"):
                matches.append((proto, ((key, _ports(value)),)))
            elif key == "ct_state":
                matches.append(("conntrack", (("ctstate", ",".join(s.upper() for s in value)),)))
            else:
                raise NetpolicyError(f"iptables backend: unsupported match {key!r}")
        # merge the tcp/udp port matches into one match
        merged: list = []
        for name, params in matches:
            if merged and merged[-1][0] == name and name in ("tcp", "udp"):
                merged[-1] = (name, merged[-1][1] + params)
            else:
                merged.append((name, params))
        merged.append(("comment", (("comment", comment),)))
        if rule.action == "accept":
            target, tparams = "ACCEPT", ()
        elif rule.action == "drop":
            target, tparams = "DROP", ()
        elif rule.action == "return":
            target, tparams = "RETURN", ()
        elif rule.action == "vet":
            target, tparams = "MARK", (("set_xmark", f"{rule.mark:#x}/{rule.mark:#x}"),)
        elif rule.action == "masquerade":
            target, tparams = "MASQUERADE", (("to_ports", f"{rule.to_ports[0]}-{rule.to_ports[1]}"),)
        else:
            raise NetpolicyError(f"iptables backend: unknown action {rule.action!r}")
        specs.append(Spec(ipv6=ipv6, table=table, chain=chain, matches=tuple(merged),
                          target=target, target_params=tparams, **kw))
    return specs


def skeleton_specs(bridge: str, base, version: str) -> list:
    comment = planner.base_comment(bridge, version)
    out = []
    for rule in base:
        out += render_rule(rule, comment)
    return out


def jump_specs(bridge: str, version: str) -> list:
    comment = planner.base_comment(bridge, version)
    out = []
    for table, builtin, iface_key, target, v6 in _JUMPS:
        for ipv6 in (False, True) if v6 else (False,):
            kw = {iface_key: bridge} if iface_key else {}
            out.append(Spec(ipv6=ipv6, table=table, chain=builtin, target=target,
                            matches=(("comment", (("comment", comment),)),), **kw))
    return out


def job_specs(job_rules) -> list:
    out = []
    for rule in job_rules:
        out += render_rule(rule, rule.comment)
    return out


_SAVED_RULE = re.compile(r'^-A (\S+) .*--comment "?(racf:[^"\s]+)"?')


def saved_counts(text: str, ipv6: bool) -> Counter:
    """(where, comment) -> how many of our rules ``iptables-save`` output holds per chain
    (``where`` as ``Spec.where``)."""
    out: Counter = Counter()
    table = None
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif table and (m := _SAVED_RULE.match(line)):
            out[(f"{'ip6' if ipv6 else 'ip4'} {table} {m.group(1)}", m.group(2))] += 1
    return out
