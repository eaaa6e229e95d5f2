"""python-iptables backend, for hosts whose ``iptables`` is the legacy (x_tables) build.

Our own chains, jumped to from the built-ins (inserted at their head):

    filter  FORWARD -i B -j RACF_GUEST_OUT;  FORWARD -o B -j RACF_GUEST_IN
            INPUT   -i B -j RACF_GUEST_HOST
    nat     POSTROUTING -j RACF_NAT
    the same filter chains in ip6tables for the IPv6 drops

Per-job rules carry ``-m comment --comment racf:<tag>`` and are inserted at the head of
their chain; skeleton rules carry ``racf:base:<version>``. python-iptables commits whole
tables and takes no lock: we hold ``/run/xtables.lock`` (the lock iptables -w uses) from
reading a table to committing it.

Not expressible here: the POST_NAT check (legacy has no filter hook after srcnat) — the
masquerade rules alone enforce the port range on this backend — and BRIDGE (guest <-> guest
frames are stopped by the network's isolated ports, as with nft).

``import iptc`` happens only inside this module's functions, after the variables
python-iptables would dlopen from have been removed from the environment.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
from dataclasses import dataclass, field
from typing import Optional

from . import planner
from .errors import NetpolicyError

XTABLES_LOCK = "/run/xtables.lock"
_SCRUB = ("XTABLES_LIBDIR", "IPTABLES_LIBDIR", "PYTHON_IPTABLES_XTABLES_VERSION")

_CHAINS = {
    planner.GUEST_OUT: ("filter", "RACF_GUEST_OUT"),
    planner.GUEST_IN: ("filter", "RACF_GUEST_IN"),
    planner.GUEST_HOST: ("filter", "RACF_GUEST_HOST"),
    planner.NAT: ("nat", "RACF_NAT"),
}
# (table, built-in chain, match {"in_interface"/"out_interface"}, our chain, ipv6 too)
_JUMPS = (
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
                out += [f"--{k.replace('_', '-')}", v]
        out += ["-j", self.target]
        for k, v in self.target_params:
            out += [f"--{k.replace('_', '-')}", v]
        return out

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
        if ipv6 and table == "nat":
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
            elif key == "smac":
                matches.append(("mac", (("mac_source", value.upper()),)))
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
        elif rule.action == "masquerade":
            target, tparams = "MASQUERADE", (("to_ports", f"{rule.to_ports[0]}-{rule.to_ports[1]}"),)
        else:
            raise NetpolicyError(f"iptables backend: unknown action {rule.action!r}")
        specs.append(Spec(ipv6=ipv6, table=table, chain=chain, matches=tuple(merged),
                          target=target, target_params=tparams, **kw))
    return specs


def skeleton_specs(bridge: str, base, version: str) -> list:
    comment = f"{planner.COMMENT_PREFIX}base:{version}"
    out = []
    for rule in base:
        out += render_rule(rule, comment)
    return out


def jump_specs(bridge: str, version: str) -> list:
    comment = f"{planner.COMMENT_PREFIX}base:{version}"
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


@contextlib.contextmanager
def xtables_lock(timeout: float = 10.0):
    import time

    fd = os.open(XTABLES_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise NetpolicyError(f"could not take {XTABLES_LOCK} within {timeout:g}s "
                                         "(another iptables writer holds it)") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


def _iptc():
    for name in _SCRUB:
        os.environ.pop(name, None)
    try:
        import iptc  # noqa: PLC0415 - only here, after the scrub
    except Exception as exc:  # ImportError, or XTablesError from the C library
        raise NetpolicyError("python3-iptables is not usable", detail=str(exc)) from exc
    return iptc


class IptablesBackend:
    name = "iptables"

    def __init__(self):
        self.iptc = _iptc()

    # -- low level -------------------------------------------------------------------
    def _table(self, name: str, ipv6: bool):
        iptc = self.iptc
        cls = iptc.Table6 if ipv6 else iptc.Table
        t = cls(getattr(cls, name.upper()))
        t.autocommit = False
        t.refresh()
        return t

    def _chain(self, table, name: str, create: bool = True):
        iptc = self.iptc
        if table.is_chain(name):
            return iptc.Chain(table, name)
        if not create:
            return None
        return table.create_chain(name)

    def _to_rule(self, spec: Spec):
        iptc = self.iptc
        r = iptc.Rule6() if spec.ipv6 else iptc.Rule()
        if spec.in_interface:
            r.in_interface = spec.in_interface
        if spec.out_interface:
            r.out_interface = spec.out_interface
        if spec.src:
            r.src = spec.src
        if spec.dst:
            r.dst = spec.dst
        if spec.protocol:
            r.protocol = spec.protocol
        for name, params in spec.matches:
            m = r.create_match(name)
            for k, v in params:
                setattr(m, k, v)
        t = r.create_target(spec.target)
        for k, v in spec.target_params:
            setattr(t, k, v)
        return r

    @staticmethod
    def _comment(rule) -> Optional[str]:
        for m in rule.matches:
            if m.name == "comment":
                return m.parameters.get("comment")
        return None

    def _tables(self):
        for ipv6, name in ((False, "filter"), (False, "nat"), (True, "filter")):
            yield ipv6, name

    def _apply(self, fn) -> None:
        """Run ``fn(get_table)`` under the xtables lock and commit every table it touched."""
        with xtables_lock():
            tables: dict = {}

            def get(name, ipv6):
                key = (name, ipv6)
                if key not in tables:
                    tables[key] = self._table(name, ipv6)
                return tables[key]

            try:
                fn(get)
                for t in tables.values():
                    t.commit()
            except self.iptc.IPTCError as exc:
                raise NetpolicyError("iptables (python-iptables) refused our rules", detail=str(exc)) from exc
            finally:
                for t in tables.values():
                    t.autocommit = True

    def _our_rules(self, get, pred):
        """(chain, rule) pairs of every rule of ours whose comment satisfies pred."""
        found = []
        for ipv6, name in self._tables():
            t = get(name, ipv6)
            for chain in t.chains:
                for rule in chain.rules:
                    c = self._comment(rule)
                    if c is not None and pred(c):
                        found.append((chain, rule))
        return found

    # -- interface -------------------------------------------------------------------
    def ensure_base(self, rules: planner.Rules, bridge: str, version: str) -> None:
        want = f"{planner.COMMENT_PREFIX}base:{version}"

        def fn(get):
            base = self._our_rules(get, lambda c: c.startswith(planner.COMMENT_PREFIX + "base"))
            if base and all(self._comment(r) == want for _, r in base):
                # ensure count matches (someone may have deleted some)
                if len(base) == len(skeleton_specs(bridge, rules.base, version)) + len(jump_specs(bridge, version)):
                    return
            for chain, rule in base:
                chain.delete_rule(rule)
            for spec in skeleton_specs(bridge, rules.base, version):
                t = get(spec.table, spec.ipv6)
                self._chain(t, spec.chain).append_rule(self._to_rule(spec))
            for spec in jump_specs(bridge, version):
                t = get(spec.table, spec.ipv6)
                self._chain(t, spec.target)
                self._chain(t, spec.chain, create=False).insert_rule(self._to_rule(spec))

        self._apply(fn)

    def add_job(self, rules: planner.Rules) -> None:
        def fn(get):
            for spec in reversed(job_specs(rules.job)):
                t = get(spec.table, spec.ipv6)
                self._chain(t, spec.chain).insert_rule(self._to_rule(spec))

        self._apply(fn)

    def remove_job(self, tag: str) -> int:
        want = planner.COMMENT_PREFIX + tag
        count = []

        def fn(get):
            doomed = self._our_rules(get, lambda c: c == want)
            for chain, rule in doomed:
                chain.delete_rule(rule)
            count.append(len(doomed))

        self._apply(fn)
        return count[0]

    def job_tags(self) -> set:
        tags: set = set()

        def fn(get):
            for _, rule in self._our_rules(get, lambda c: c.startswith(planner.COMMENT_PREFIX)):
                t = planner.tag_of_comment(self._comment(rule))
                if t:
                    tags.add(t)

        self._apply(fn)
        return tags

    def job_rule_count(self, tag: str) -> int:
        want = planner.COMMENT_PREFIX + tag
        n = []
        self._apply(lambda get: n.append(len(self._our_rules(get, lambda c: c == want))))
        return n[0]

    def remove_all(self) -> None:
        """Remove our jumps and chains (tests and uninstall only)."""
        def fn(get):
            for chain, rule in self._our_rules(get, lambda c: c.startswith(planner.COMMENT_PREFIX)):
                chain.delete_rule(rule)
            for ipv6, name in self._tables():
                t = get(name, ipv6)
                for chain in list(t.chains):
                    if chain.name.startswith("RACF_"):
                        chain.flush()
                        chain.delete()

        self._apply(fn)

    def listing(self) -> str:
        lines = []

        def fn(get):
            for ipv6, name in self._tables():
                t = get(name, ipv6)
                for chain in t.chains:
                    for rule in chain.rules:
                        c = self._comment(rule) or ""
                        if c.startswith(planner.COMMENT_PREFIX) or chain.name.startswith("RACF_"):
                            lines.append(f"{'ip6' if ipv6 else 'ip4'} {name} {chain.name}: {c} -> {rule.target.name}")

        self._apply(fn)
        return "\n".join(lines)
