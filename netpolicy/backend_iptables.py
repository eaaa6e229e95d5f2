"""python-iptables backend, for hosts whose ``iptables`` is the legacy (x_tables) build.

Our own chains, jumped to from the built-ins (inserted at their head, in this order):

    mangle  PREROUTING -i B -j RACF_GUEST_PRE;  PREROUTING -i B -j RACF_VET   (before DNAT)
    filter  FORWARD -i B -j RACF_GUEST_DEST;  FORWARD -i B -j RACF_GUEST_OUT;
            FORWARD -o B -j RACF_GUEST_IN;  INPUT -i B -j RACF_GUEST_HOST
    nat     POSTROUTING -j RACF_NAT
    the same filter chains (GUEST_OUT, GUEST_IN, GUEST_HOST) in ip6tables for the IPv6 drops

Per-job rules carry ``-m comment --comment racf:<tag>`` and are inserted at the head of
their chain; skeleton rules carry ``racf:base:<bridge>:<version>``. python-iptables commits whole
tables and takes no lock: we hold ``/run/xtables.lock`` (the lock iptables -w uses) from
reading a table to committing it.

Not expressible here: the POST_NAT check (legacy has no filter hook after srcnat) — the
masquerade rules alone enforce the port range on this backend — and BRIDGE (guest <-> guest
frames are stopped by the network's isolated ports, as with nft).

``import iptc`` happens only inside this module's functions, after the variables
python-iptables would dlopen from have been removed from the environment.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Optional

from racf_vm.core import locking, runcmd
from racf_vm.core.errors import CommandError

from . import planner
from .backend import shortfall
from .errors import NetpolicyError
from .iptables_rules import Spec, job_specs, jump_specs, saved_counts, skeleton_specs

XTABLES_LOCK = "/run/xtables.lock"
SAVE = ("/usr/sbin/iptables-legacy-save", "/usr/sbin/ip6tables-legacy-save")
_SCRUB = ("XTABLES_LIBDIR", "IPTABLES_LIBDIR", "PYTHON_IPTABLES_XTABLES_VERSION")


def xtables_lock(timeout: float = 10.0):
    return locking.locked(XTABLES_LOCK, timeout=timeout,
                          what=f"{XTABLES_LOCK} (another iptables writer holds it)")


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
        """A fresh snapshot of one table. python-iptables keeps one object per table and its
        ``refresh()`` first commits the copy it holds when ``autocommit`` is on, which would
        write a stale table back over everyone's later changes: ours stay off for good."""
        iptc = self.iptc
        cls = iptc.Table6 if ipv6 else iptc.Table
        t = cls(getattr(cls, name.upper()), autocommit=False)
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
        for ipv6, name in ((False, "filter"), (False, "nat"), (False, "mangle"), (True, "filter")):
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
    @staticmethod
    def _expected(specs) -> Counter:
        return Counter((s.where, s.comment) for s in specs)

    def _installed(self) -> Counter:
        """Our rules per chain and comment, read with ``iptables-legacy-save``: no lock, no
        write, a tenth of what python-iptables takes to decode every rule's comment."""
        have: Counter = Counter()
        for ipv6, argv in ((False, [SAVE[0]]), (True, [SAVE[1], "-t", "filter"])):
            try:
                text = runcmd.run(argv, timeout=10, what="iptables-legacy-save").stdout.decode(errors="replace")
            except CommandError as exc:
                raise NetpolicyError(f"could not read the iptables rules: {exc.message}", detail=exc.detail) from exc
            have += saved_counts(text, ipv6)
        return have

    def ensure_base(self, rules: planner.Rules, bridge: str, version: str) -> None:
        """Install the skeleton, or replace one of another version or that lost rules."""
        skeleton = skeleton_specs(bridge, rules.base, version)
        jumps = jump_specs(bridge, version)
        if not shortfall(self._expected(skeleton + jumps), self._installed()):
            return

        def fn(get):
            for chain, rule in self._our_rules(get, lambda c: planner.replaces(c, bridge)):
                chain.delete_rule(rule)
            for spec in skeleton:
                t = get(spec.table, spec.ipv6)
                self._chain(t, spec.chain).append_rule(self._to_rule(spec))
            for spec in reversed(jumps):  # each goes to the head: the last inserted ends first
                t = get(spec.table, spec.ipv6)
                self._chain(t, spec.target)
                self._chain(t, spec.chain, create=False).insert_rule(self._to_rule(spec))

        self._apply(fn)

    def verify(self, rules: planner.Rules, bridge: str, version: str) -> list:
        """Read-only, no lock (see ``_installed``)."""
        want = self._expected(jump_specs(bridge, version) + skeleton_specs(bridge, rules.base, version)
                              + job_specs(rules.job))
        return [f"iptables {p}" for p in shortfall(want, self._installed())]

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
