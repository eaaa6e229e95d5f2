"""nftables backend: our own table ``inet racf_vm`` through libnftables' JSON API.

Layout (all base chains policy accept, so other traffic on the host is not touched; what
goes through our bridge meets our explicit drops):

    prerouting   filter hook prerouting prio -150 (before DNAT):
                 iifname B jump guest_pre; iifname B jump guest_vet
    forward      filter hook forward prio 0:
                 iifname B jump guest_dest; iifname B jump guest_out; oifname B jump guest_in
    input        filter hook input prio 0:     iifname B jump guest_host
    nat          nat hook postrouting prio 100 (srcnat): per-job masquerade rules
    post_nat     filter hook postrouting prio 300: after every srcnat chain, drop what
                 leaves from the subnet un-NATed or with a low source port

Per-job rules carry the comment ``racf:<tag>`` and are inserted at the head of their chain
(above the skeleton's final drop); skeleton rules carry ``racf:base:<bridge>:<version>``. Every
change is one atomic nft transaction.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections import Counter
from typing import Iterable, Optional

from . import planner
from .backend import shortfall
from .errors import NetpolicyError

log = logging.getLogger(__name__)

TABLE = "racf_vm"
FAMILY = "inet"

# logical chain -> (nft chain, base chain spec or None)
_CHAINS = {
    planner.GUEST_PRE: "guest_pre",
    planner.VET: "guest_vet",
    planner.GUEST_DEST: "guest_dest",
    planner.GUEST_OUT: "guest_out",
    planner.GUEST_IN: "guest_in",
    planner.GUEST_HOST: "guest_host",
    planner.NAT: "nat",
    planner.POST_NAT: "post_nat",
}
_BASE_CHAINS = {
    "prerouting": {"type": "filter", "hook": "prerouting", "prio": -150, "policy": "accept"},
    "forward": {"type": "filter", "hook": "forward", "prio": 0, "policy": "accept"},
    "input": {"type": "filter", "hook": "input", "prio": 0, "policy": "accept"},
    "nat": {"type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"},
    "post_nat": {"type": "filter", "hook": "postrouting", "prio": 300, "policy": "accept"},
}
_REGULAR_CHAINS = ("guest_pre", "guest_vet", "guest_dest", "guest_out", "guest_in", "guest_host")
# (base chain, interface key, target), in order
_JUMPS = (("prerouting", "iifname", "guest_pre"), ("prerouting", "iifname", "guest_vet"),
          ("forward", "iifname", "guest_dest"), ("forward", "iifname", "guest_out"),
          ("forward", "oifname", "guest_in"), ("input", "iifname", "guest_host"))


def _match(left, right, op="=="):
    return {"match": {"op": op, "left": left, "right": right}}


def _addr(value: str):
    net = ipaddress.ip_network(value, strict=False)
    if net.num_addresses == 1 and "/" not in value:
        return str(net.network_address)
    return {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}


def _ports(lohi):
    lo, hi = lohi
    return lo if lo == hi else {"range": [lo, hi]}


def render_rule(rule: planner.Rule) -> Optional[list]:
    """The nft JSON ``expr`` list of one rule; None when this backend does not install it
    (BRIDGE rules: guest <-> guest frames are stopped by the network's isolated ports)."""
    if rule.chain == planner.BRIDGE:
        return None
    expr = []
    if rule.family == "ipv4":
        expr.append(_match({"meta": {"key": "nfproto"}}, "ipv4"))
    elif rule.family == "ipv6":
        expr.append(_match({"meta": {"key": "nfproto"}}, "ipv6"))
    proto = rule.get("proto")
    for key, value in rule.match:
        if key == "iif":
            expr.append(_match({"meta": {"key": "iifname"}}, value))
        elif key == "oif":
            expr.append(_match({"meta": {"key": "oifname"}}, value))
        elif key == "oif_not":
            expr.append(_match({"meta": {"key": "oifname"}}, value, "!="))
        elif key in ("smac", "smac_not"):
            expr.append(_match({"payload": {"protocol": "ether", "field": "saddr"}}, value,
                               "!=" if key == "smac_not" else "=="))
        elif key == "saddr":
            expr.append(_match({"payload": {"protocol": "ip", "field": "saddr"}}, _addr(value)))
        elif key == "daddr":
            expr.append(_match({"payload": {"protocol": "ip", "field": "daddr"}}, _addr(value)))
        elif key == "daddr_type":
            expr.append(_match({"fib": {"result": "type", "flags": ["daddr"]}}, value))
        elif key == "daddr_not":
            expr.append(_match({"payload": {"protocol": "ip", "field": "daddr"}}, _addr(value), "!="))
        elif key == "proto":
            right = {"set": list(value)} if isinstance(value, tuple) else value
            expr.append(_match({"meta": {"key": "l4proto"}}, right))
        elif key in ("sport", "dport"):
            expr.append(_match({"payload": {"protocol": proto, "field": key}}, _ports(value)))
        elif key == "ct_state":
            expr.append(_match({"ct": {"key": "state"}}, list(value), "in"))
        elif key == "ct_orig_saddr":
            expr.append(_match({"ct": {"key": "ip saddr", "dir": "original"}}, _addr(value)))
        elif key == "ct_reply_daddr":
            expr.append(_match({"ct": {"key": "ip daddr", "dir": "reply"}}, _addr(value)))
        elif key == "ct_reply_dport":
            expr.append(_match({"ct": {"key": "proto-dst", "dir": "reply"}}, _ports(value)))
        else:
            raise NetpolicyError(f"nft backend: unknown match key {key!r}")
    if rule.action == "accept":
        expr.append({"accept": None})
    elif rule.action == "drop":
        expr.append({"drop": None})
    elif rule.action == "return":
        expr.append({"return": None})
    elif rule.action == "vet":
        mark = {"meta": {"key": "mark"}}
        expr.append({"mangle": {"key": mark, "value": {"|": [mark, rule.mark]}}})
    elif rule.action == "masquerade":
        expr.append({"masquerade": {"port": _ports(rule.to_ports)}})
    else:
        raise NetpolicyError(f"nft backend: unknown action {rule.action!r}")
    return expr


def _rule_obj(rule: planner.Rule, comment: str, expr: list) -> dict:
    return {"family": FAMILY, "table": TABLE, "chain": _CHAINS[rule.chain], "comment": comment,
            "expr": expr}


def skeleton_commands(bridge: str, base: Iterable[planner.Rule], version: str) -> list:
    """``add`` commands for the table, its chains, the jumps and the base rules (in order)."""
    comment = planner.base_comment(bridge, version)
    cmds: list = [{"add": {"table": {"family": FAMILY, "name": TABLE}}}]
    for name, spec in _BASE_CHAINS.items():
        cmds.append({"add": {"chain": dict({"family": FAMILY, "table": TABLE, "name": name}, **spec)}})
    for name in _REGULAR_CHAINS:
        cmds.append({"add": {"chain": {"family": FAMILY, "table": TABLE, "name": name}}})
    for chain, key, target in _JUMPS:
        cmds.append({"add": {"rule": {
            "family": FAMILY, "table": TABLE, "chain": chain, "comment": comment,
            "expr": [_match({"meta": {"key": key}}, bridge), {"jump": {"target": target}}]}}})
    for rule in base:
        expr = render_rule(rule)
        if expr is not None:
            cmds.append({"add": {"rule": _rule_obj(rule, comment, expr)}})
    return cmds


def job_commands(job_rules: Iterable[planner.Rule]) -> list:
    """``insert`` commands (head of chain) for one job's rules."""
    cmds = []
    for rule in reversed(list(job_rules)):  # inserting at the head reverses the order
        expr = render_rule(rule)
        if expr is not None:
            cmds.append({"insert": {"rule": _rule_obj(rule, rule.comment, expr)}})
    return cmds


def expected_counts(cmds: list) -> Counter:
    """(chain, comment) -> how many rules the ``add``/``insert`` commands ``cmds`` create."""
    return Counter((r["chain"], r["comment"]) for c in cmds for op in ("add", "insert")
                   if "rule" in c.get(op, {}) for r in (c[op]["rule"],))


def listed_counts(text: str) -> Counter:
    """(chain, comment) -> how many rules of ``nft list table`` text carry that comment. Text,
    not JSON: libnftables makes it about 2.5 times faster (verify reads every job's rules,
    every few seconds, for every job)."""
    out: Counter = Counter()
    chain = None
    for line in text.splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == "chain" and words[2] == "{":
            chain = words[1]
        elif chain and line.endswith('"') and ' comment "' in line:
            out[(chain, line.rsplit(' comment "', 1)[1][:-1])] += 1
    return out


class NftBackend:
    name = "nft"

    def __init__(self):
        try:
            import nftables
        except ImportError as exc:
            raise NetpolicyError("python3-nftables is not installed") from exc
        self._nft = nftables.Nftables()
        self._nft.set_json_output(True)
        self._nft.set_handle_output(True)
        self._text = nftables.Nftables()  # for verify and listing

    # -- low level -------------------------------------------------------------------
    def _cmd(self, cmds: list, what: str):
        if not cmds:
            return None
        rc, out, err = self._nft.json_cmd({"nftables": cmds})
        if rc != 0:
            raise NetpolicyError(f"nft could not {what}", detail=f"{err}\n{json.dumps(cmds)[:4000]}")
        return out

    def _list(self) -> list:
        """Our table's objects (JSON), or [] when the table does not exist."""
        rc, out, err = self._nft.json_cmd(
            {"nftables": [{"list": {"table": {"family": FAMILY, "name": TABLE}}}]})
        if rc != 0:
            if "No such file or directory" in (err or ""):
                return []
            raise NetpolicyError("nft could not list our table", detail=str(err))
        return (out or {}).get("nftables", [])

    def _rules(self):
        for obj in self._list():
            rule = obj.get("rule")
            if rule is not None:
                yield rule

    # -- interface -------------------------------------------------------------------
    def ensure_base(self, rules: planner.Rules, bridge: str, version: str) -> None:
        """Create the table and skeleton, or replace a skeleton of another version or one
        that lost rules (job rules stay: they sit above the skeleton's rules)."""
        skeleton = skeleton_commands(bridge, rules.base, version)
        if not shortfall(expected_counts(skeleton), listed_counts(self.listing())):
            return
        base = [r for r in self._rules() if planner.replaces(r.get("comment"), bridge)]
        cmds = [{"delete": {"rule": {"family": FAMILY, "table": TABLE, "chain": r["chain"],
                                     "handle": r["handle"]}}} for r in base]
        self._cmd(cmds + skeleton, "install the untrusted network's base rules")

    def verify(self, rules: planner.Rules, bridge: str, version: str) -> list:
        want = expected_counts(skeleton_commands(bridge, rules.base, version) + job_commands(rules.job))
        return [f"nft table {FAMILY} {TABLE}: {p}" for p in shortfall(want, listed_counts(self.listing()))]

    def add_job(self, rules: planner.Rules) -> None:
        self._cmd(job_commands(rules.job), "install the job's firewall rules")

    def remove_job(self, tag: str) -> int:
        want = planner.COMMENT_PREFIX + tag
        doomed = [r for r in self._rules() if r.get("comment") == want]
        self._cmd([{"delete": {"rule": {"family": FAMILY, "table": TABLE, "chain": r["chain"],
                                        "handle": r["handle"]}}} for r in doomed],
                  "remove the job's firewall rules")
        return len(doomed)

    def job_tags(self) -> set:
        return {t for t in (planner.tag_of_comment(r.get("comment")) for r in self._rules()) if t}

    def job_rule_count(self, tag: str) -> int:
        want = planner.COMMENT_PREFIX + tag
        return sum(1 for r in self._rules() if r.get("comment") == want)

    def remove_all(self) -> None:
        """Delete our whole table (tests and uninstall only)."""
        if self._list():
            self._cmd([{"delete": {"table": {"family": FAMILY, "name": TABLE}}}], "delete our table")

    def listing(self) -> str:
        """Our table as ``nft list table`` prints it ("" when it does not exist)."""
        rc, out, err = self._text.cmd(f"list table {FAMILY} {TABLE}")
        if rc != 0 and "No such file or directory" not in (err or ""):
            raise NetpolicyError("nft could not list our table", detail=str(err))
        return out if rc == 0 else ""
