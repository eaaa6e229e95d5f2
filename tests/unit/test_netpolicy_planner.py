"""netpolicy's planner and both backends' renderings, as data (no root, no kernel)."""

import pytest

from netpolicy import backend_nft as nft
from netpolicy import detect, network, planner
from netpolicy import iptables_rules as ipt
from netpolicy.errors import BackendMismatch

TAG = "slot1_1-42.0-4242-987654"
MARK = 0x400000
SPEC = planner.NetSpec(bridge="racfu0", subnet="10.213.0.0/24", deny=("10.0.0.0/8", "169.254.0.0/16"),
                       mark=MARK)
JOB = planner.JobNet(tag=TAG, mac="02:72:66:aa:bb:cc", ip="10.213.0.7", net=SPEC)
RULES = planner.plan(JOB)
V = "v1"


def _by_why(word):
    return [r for r in RULES.all() if word in r.why]


def _chain(rules, chain):
    return [r for r in rules if r.chain == chain]


def test_every_rule_of_the_plan():
    base = [(r.chain, r.family, r.match, r.action) for r in RULES.base]
    dhcp = (("iif", "racfu0"), ("daddr", "10.213.0.1"), ("proto", "udp"), ("sport", (68, 68)), ("dport", (67, 67)))
    dns_udp = (("iif", "racfu0"), ("daddr", "10.213.0.1"), ("proto", "udp"), ("sport", (1024, 65535)),
               ("dport", (53, 53)))
    dns_tcp = (("iif", "racfu0"), ("daddr", "10.213.0.1"), ("proto", "tcp"), ("sport", (1024, 65535)),
               ("dport", (53, 53)))
    bcast = (("iif", "racfu0"), ("daddr", "255.255.255.255"), ("proto", "udp"), ("sport", (68, 68)),
             ("dport", (67, 67)))
    assert base == [
        ("guest_pre", "ipv4", bcast, "return"),
        ("guest_pre", "ipv4", dhcp, "return"),
        ("guest_pre", "ipv4", dns_udp, "return"),
        ("guest_pre", "ipv4", dns_tcp, "return"),
        ("guest_pre", "ipv4", (("iif", "racfu0"), ("daddr_type", "local")), "drop"),
        ("guest_pre", "ipv4", (("iif", "racfu0"), ("daddr", "10.0.0.0/8")), "drop"),
        ("guest_pre", "ipv4", (("iif", "racfu0"), ("daddr", "169.254.0.0/16")), "drop"),
        ("guest_dest", "ipv4", (("iif", "racfu0"), ("daddr", "10.0.0.0/8")), "drop"),
        ("guest_dest", "ipv4", (("iif", "racfu0"), ("daddr", "169.254.0.0/16")), "drop"),
        ("guest_out", "any", (("iif", "racfu0"),), "drop"),
        ("guest_in", "ipv4", (("oif", "racfu0"), ("ct_state", ("established", "related"))), "accept"),
        ("guest_in", "any", (("oif", "racfu0"),), "drop"),
        ("guest_host", "ipv4", bcast, "accept"),
        ("guest_host", "ipv4", dhcp, "accept"),
        ("guest_host", "ipv4", dns_udp, "accept"),
        ("guest_host", "ipv4", dns_tcp, "accept"),
        ("guest_host", "any", (("iif", "racfu0"),), "drop"),
        ("post_nat", "ipv4", (("oif_not", "racfu0"), ("ct_orig_saddr", "10.213.0.0/24"),
                              ("ct_reply_daddr", "10.213.0.0/24")), "drop"),
        ("post_nat", "ipv4", (("oif_not", "racfu0"), ("ct_orig_saddr", "10.213.0.0/24"),
                              ("proto", ("tcp", "udp")), ("ct_reply_dport", (0, 1023))), "drop"),
        ("bridge", "any", (("ibridge", "racfu0"),), "drop"),
    ]
    job = [(r.chain, r.match, r.action, r.to_ports, r.mark, r.comment) for r in RULES.job]
    common = (("iif", "racfu0"), ("smac", "02:72:66:aa:bb:cc"), ("saddr", "10.213.0.7"),
              ("daddr_not", "10.213.0.0/24"))
    nat = (("saddr", "10.213.0.7"), ("daddr_not", "10.213.0.0/24"))
    c = "racf:" + TAG
    assert job == [
        ("guest_pre", (("iif", "racfu0"), ("saddr", "10.213.0.7"), ("smac_not", "02:72:66:aa:bb:cc")),
         "drop", None, None, c),
        ("vet", common + (("proto", "tcp"),), "vet", None, MARK, c),
        ("vet", common + (("proto", "udp"),), "vet", None, MARK, c),
        ("guest_out", common + (("proto", "tcp"),), "accept", None, None, c),
        ("guest_out", common + (("proto", "udp"),), "accept", None, None, c),
        ("nat", nat + (("proto", "tcp"),), "masquerade", (1024, 65535), None, c),
        ("nat", nat + (("proto", "udp"),), "masquerade", (1024, 65535), None, c),
    ]
    assert all(r.tag is None and r.comment == "racf:base" for r in RULES.base)
    assert all(planner.describe(r) for r in RULES.all())


def test_the_host_is_reached_only_for_dhcp_and_dns_on_the_bridge_address():
    """Every accept toward the host names the bridge address (or DHCP broadcast); before
    DNAT, any other packet to any local address of the host is dropped."""
    host = _chain(RULES.base, "guest_host")
    for r in host[:-1]:
        assert r.action == "accept" and r.get("daddr") in ("10.213.0.1", "255.255.255.255"), r
    assert host[-1].action == "drop" and host[-1].match == (("iif", "racfu0"),)
    pre = _chain(RULES.base, "guest_pre")
    local = pre.index(next(r for r in pre if r.get("daddr_type") == "local"))
    assert all(r.action == "return" for r in pre[:local]) and pre[local].action == "drop"


def test_nothing_the_host_serves_is_dropped_before_it_gets_there():
    """Each accept in guest_host is let through guest_pre (ahead of the local-address and
    deny-list drops) by a rule with the same match: the default deny list's 240.0.0.0/4
    holds 255.255.255.255, DHCP's broadcast."""
    default = planner.NetSpec("racfu0", "10.213.0.0/24", parse_default_deny(), MARK)
    base = planner.plan_base(default)
    accepts = [r.match for r in _chain(base, "guest_host") if r.action == "accept"]
    pre = _chain(base, "guest_pre")
    first_drop = next(i for i, r in enumerate(pre) if r.action == "drop")
    assert [r.match for r in pre[:first_drop]] == accepts
    assert any(r.get("daddr") == "240.0.0.0/4" for r in pre[first_drop:])  # the reason this matters


def parse_default_deny():
    from racf_vm.config.model import DEFAULT_DENY

    return DEFAULT_DENY


def test_deny_list_is_checked_before_and_after_dnat():
    for chain in ("guest_pre", "guest_dest"):
        drops = [r.get("daddr") for r in _chain(RULES.base, chain) if r.action == "drop" and r.get("daddr")]
        assert drops == ["10.0.0.0/8", "169.254.0.0/16"], chain
    empty = planner.plan_base(planner.NetSpec("racfu0", "10.213.0.0/24", (), MARK))
    assert _chain(empty, "guest_dest") == [] and len(_chain(empty, "guest_pre")) == 5


def test_vet_marks_exactly_what_the_job_accepts():
    vets, accepts = _chain(RULES.job, "vet"), _chain(RULES.job, "guest_out")
    assert [v.match for v in vets] == [a.match for a in accepts]
    assert all(v.mark == MARK and v.action == "vet" for v in vets)
    assert not [r for r in RULES.base if r.action == "vet"]  # nothing is vetted without a job


def test_spoofed_source_of_a_reserved_address_is_dropped_first():
    spoof = _chain(RULES.job, "guest_pre")
    assert [r.action for r in spoof] == ["drop"]
    assert spoof[0].get("saddr") == JOB.ip and spoof[0].get("smac_not") == JOB.mac


@pytest.mark.parametrize("field,value", [
    ("tag", "a b"), ("mac", "02:72:66:AA:BB:CC"), ("mac", "nonsense"), ("ip", "10.213.1.7"),
    ("ip", "10.213.0.0"), ("ip", "10.213.0.255"), ("ip", "10.213.0.1"),
])
def test_bad_job_identity_is_refused(field, value):
    kw = dict(JOB.__dict__)
    kw[field] = value
    with pytest.raises(planner.PlanError):
        planner.JobNet(**kw)


@pytest.mark.parametrize("field,value", [
    ("bridge", "x" * 16), ("bridge", "br;rm"), ("subnet", "10.213.0.1/24"), ("subnet", "10.0.0.0/8"),
    ("deny", ("10.0.0.1/8",)), ("deny", ("fd00::/8",)), ("deny", ("nonsense",)), ("deny", ("10.0.0.0/08",)),
    ("mark", 0), ("mark", 3), ("mark", 2**32), ("mark", True), ("mark", "0x400000"),
])
def test_bad_network_spec_is_refused(field, value):
    kw = dict(SPEC.__dict__)
    kw[field] = value
    with pytest.raises(planner.PlanError):
        planner.NetSpec(**kw)


def test_comment_tags():
    assert planner.tag_of_comment("racf:" + TAG) == TAG
    for c in ("racf:base", "racf:base:abc", "racf:base:racfu0:0123456789ab", "other", None, "racf:", "racf:a b"):
        assert planner.tag_of_comment(c) is None


def test_each_network_replaces_only_its_own_skeleton():
    """Two untrusted networks on one host (two configs, or tests beside production) share
    the firewall's chains but not their skeletons: installing one never takes the other's
    away (with Lease.check that would end the other's jobs). A skeleton from a racf-vm that
    did not name its bridge is replaced."""
    assert planner.base_comment("racfu0", "0123456789ab") == "racf:base:racfu0:0123456789ab"
    assert planner.replaces("racf:base:racfu0:0123456789ab", "racfu0")
    assert planner.replaces("racf:base:racfu0:ffffffffffff", "racfu0")  # another version
    assert planner.replaces("racf:base:0123456789ab", "racfu0")  # before bridges were named
    for other in ("racf:base:racfut0:0123456789ab", "racf:base:racfu:0123456789ab", "racf:" + TAG, "x", None):
        assert not planner.replaces(other, "racfu0"), other


# -- nftables -----------------------------------------------------------------------------
def _nft(rule):
    return nft.render_rule(rule)


def test_nft_job_rules():
    by = {(r.chain, r.get("proto"), r.action): _nft(r) for r in RULES.job}
    out_tcp, out_udp = by[("guest_out", "tcp", "accept")], by[("guest_out", "udp", "accept")]
    nat_tcp, nat_udp = by[("nat", "tcp", "masquerade")], by[("nat", "udp", "masquerade")]
    assert out_tcp == [
        {"match": {"op": "==", "left": {"meta": {"key": "nfproto"}}, "right": "ipv4"}},
        {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "racfu0"}},
        {"match": {"op": "==", "left": {"payload": {"protocol": "ether", "field": "saddr"}}, "right": "02:72:66:aa:bb:cc"}},
        {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "10.213.0.7"}},
        {"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                   "right": {"prefix": {"addr": "10.213.0.0", "len": 24}}}},
        {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}},
        {"accept": None},
    ]
    assert out_udp[-2]["match"]["right"] == "udp"
    assert nat_tcp[-1] == {"masquerade": {"port": {"range": [1024, 65535]}}}
    assert nat_tcp[-2]["match"]["right"] == "tcp" and nat_udp[-2]["match"]["right"] == "udp"
    vet = by[("vet", "tcp", "vet")]
    mark = {"meta": {"key": "mark"}}
    assert vet == out_tcp[:-1] + [{"mangle": {"key": mark, "value": {"|": [mark, MARK]}}}]
    assert by[("guest_pre", None, "drop")][-2:] == [
        {"match": {"op": "!=", "left": {"payload": {"protocol": "ether", "field": "saddr"}}, "right": "02:72:66:aa:bb:cc"}},
        {"drop": None}]
    cmds = nft.job_commands(RULES.job)
    assert [c["insert"]["rule"]["chain"] for c in cmds] == [
        "nat", "nat", "guest_out", "guest_out", "guest_vet", "guest_vet", "guest_pre"]
    assert all(c["insert"]["rule"]["comment"] == "racf:" + TAG for c in cmds)
    assert all(c["insert"]["rule"]["table"] == "racf_vm" and c["insert"]["rule"]["family"] == "inet" for c in cmds)


def test_nft_base_rules():
    r = {x.why: _nft(x) for x in RULES.base}
    drops = [_nft(x) for x in RULES.base if x.action == "drop" and x.chain != "bridge"]
    assert all(d[-1] == {"drop": None} for d in drops)
    dhcp = _nft(_chain(_by_why("DHCP renewals"), "guest_pre")[0])
    assert {"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "sport"}}, "right": 68}} in dhcp
    assert dhcp[-1] == {"return": None}  # this packet may go on to the host's dnsmasq
    local = r[_by_why("any address of the host")[0].why]
    assert local[-2:] == [{"match": {"op": "==", "left": {"fib": {"result": "type", "flags": ["daddr"]}},
                                     "right": "local"}}, {"drop": None}]
    dns = r[_by_why("DNS over udp")[0].why]
    assert {"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "sport"}},
                      "right": {"range": [1024, 65535]}}} in dns
    est = r[_by_why("replies")[0].why]
    assert {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}} in est
    low = r[_by_why("below 1024")[0].why]
    assert {"match": {"op": "==", "left": {"ct": {"key": "proto-dst", "dir": "reply"}},
                      "right": {"range": [0, 1023]}}} in low
    assert {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": {"set": ["tcp", "udp"]}}} in low
    unnat = r[_by_why("without NAT")[0].why]
    assert {"match": {"op": "==", "left": {"ct": {"key": "ip daddr", "dir": "reply"}},
                      "right": {"prefix": {"addr": "10.213.0.0", "len": 24}}}} in unnat
    # "any" rules carry no nfproto: they drop IPv6 too
    assert all(m.get("match", {}).get("left") != {"meta": {"key": "nfproto"}} for m in r[_by_why("fail closed")[0].why])
    assert _nft(_by_why("guest <-> guest")[0]) is None  # isolated bridge ports instead


def test_nft_skeleton_commands():
    cmds = nft.skeleton_commands("racfu0", RULES.base, V)
    chains = {c["add"]["chain"]["name"]: c["add"]["chain"] for c in cmds if "chain" in c.get("add", {})}
    assert chains["forward"]["hook"] == "forward" and chains["forward"]["policy"] == "accept"
    # before the kernel's DNAT (priority -100): destinations as the guest addressed them
    assert chains["prerouting"]["hook"] == "prerouting" and chains["prerouting"]["prio"] < -100
    assert chains["input"]["hook"] == "input"
    assert chains["nat"]["type"] == "nat" and chains["nat"]["prio"] == 100
    assert chains["post_nat"]["hook"] == "postrouting" and chains["post_nat"]["prio"] > 100
    rules = [c["add"]["rule"] for c in cmds if "rule" in c.get("add", {})]
    assert all(r["comment"] == "racf:base:racfu0:v1" for r in rules)
    jumps = [(r["chain"], r["expr"][-1]["jump"]["target"]) for r in rules if "jump" in r["expr"][-1]]
    assert jumps == [("prerouting", "guest_pre"), ("prerouting", "guest_vet"), ("forward", "guest_dest"),
                     ("forward", "guest_out"), ("forward", "guest_in"), ("input", "guest_host")]
    # the final drop of each guest chain comes after its accepts
    out = [r for r in rules if r["chain"] == "guest_host"]
    assert out[-1]["expr"][-1] == {"drop": None}


# -- iptables -----------------------------------------------------------------------------
def test_iptables_job_rules():
    specs = ipt.job_specs(RULES.job)
    ident = "-i racfu0 -s 10.213.0.7 ! -d 10.213.0.0/24"
    mac, c = "-m mac --mac-source 02:72:66:AA:BB:CC", f"-m comment --comment racf:{TAG}"
    assert [s.text() for s in specs] == [
        f"iptables -t mangle -A RACF_GUEST_PRE -i racfu0 -s 10.213.0.7 -m mac ! --mac-source 02:72:66:AA:BB:CC {c} -j DROP",
        f"iptables -t mangle -A RACF_VET {ident} -p tcp {mac} {c} -j MARK --set-xmark 0x400000/0x400000",
        f"iptables -t mangle -A RACF_VET {ident} -p udp {mac} {c} -j MARK --set-xmark 0x400000/0x400000",
        f"iptables -t filter -A RACF_GUEST_OUT {ident} -p tcp {mac} {c} -j ACCEPT",
        f"iptables -t filter -A RACF_GUEST_OUT {ident} -p udp {mac} {c} -j ACCEPT",
        f"iptables -t nat -A RACF_NAT -s 10.213.0.7 ! -d 10.213.0.0/24 -p tcp {c} -j MASQUERADE --to-ports 1024-65535",
        f"iptables -t nat -A RACF_NAT -s 10.213.0.7 ! -d 10.213.0.0/24 -p udp {c} -j MASQUERADE --to-ports 1024-65535",
    ]
    assert specs[1].target_params == (("set_xmark", "0x400000/0x400000"),)
    assert specs[0].matches[0] == ("mac", (("mac_source", "!02:72:66:AA:BB:CC"),))  # python-iptables' negation


def test_iptables_base_rules():
    texts = [s.text() for s in ipt.skeleton_specs("racfu0", RULES.base, V)]
    c = "-m comment --comment racf:base:racfu0:v1"
    dns = "--sport 1024:65535 --dport 53"
    assert texts == [
        f"iptables -t mangle -A RACF_GUEST_PRE -i racfu0 -d 255.255.255.255 -p udp -m udp --sport 68 --dport 67 {c} -j RETURN",
        f"iptables -t mangle -A RACF_GUEST_PRE -i racfu0 -d 10.213.0.1 -p udp -m udp --sport 68 --dport 67 {c} -j RETURN",
        f"iptables -t mangle -A RACF_GUEST_PRE -i racfu0 -d 10.213.0.1 -p udp -m udp {dns} {c} -j RETURN",
        f"iptables -t mangle -A RACF_GUEST_PRE -i racfu0 -d 10.213.0.1 -p tcp -m tcp {dns} {c} -j RETURN",
        f"iptables -t mangle -A RACF_GUEST_PRE -i racfu0 -m addrtype --dst-type LOCAL {c} -j DROP",
        f"iptables -t mangle -A RACF_GUEST_PRE -i racfu0 -d 10.0.0.0/8 {c} -j DROP",
        f"iptables -t mangle -A RACF_GUEST_PRE -i racfu0 -d 169.254.0.0/16 {c} -j DROP",
        f"iptables -t filter -A RACF_GUEST_DEST -i racfu0 -d 10.0.0.0/8 {c} -j DROP",
        f"iptables -t filter -A RACF_GUEST_DEST -i racfu0 -d 169.254.0.0/16 {c} -j DROP",
        f"iptables -t filter -A RACF_GUEST_OUT -i racfu0 {c} -j DROP",
        f"ip6tables -t filter -A RACF_GUEST_OUT -i racfu0 {c} -j DROP",
        f"iptables -t filter -A RACF_GUEST_IN -o racfu0 -m conntrack --ctstate ESTABLISHED,RELATED {c} -j ACCEPT",
        f"iptables -t filter -A RACF_GUEST_IN -o racfu0 {c} -j DROP",
        f"ip6tables -t filter -A RACF_GUEST_IN -o racfu0 {c} -j DROP",
        f"iptables -t filter -A RACF_GUEST_HOST -i racfu0 -d 255.255.255.255 -p udp -m udp --sport 68 --dport 67 {c} -j ACCEPT",
        f"iptables -t filter -A RACF_GUEST_HOST -i racfu0 -d 10.213.0.1 -p udp -m udp --sport 68 --dport 67 {c} -j ACCEPT",
        f"iptables -t filter -A RACF_GUEST_HOST -i racfu0 -d 10.213.0.1 -p udp -m udp {dns} {c} -j ACCEPT",
        f"iptables -t filter -A RACF_GUEST_HOST -i racfu0 -d 10.213.0.1 -p tcp -m tcp {dns} {c} -j ACCEPT",
        f"iptables -t filter -A RACF_GUEST_HOST -i racfu0 {c} -j DROP",
        f"ip6tables -t filter -A RACF_GUEST_HOST -i racfu0 {c} -j DROP",
    ]
    # not expressible on legacy x_tables: post-NAT check, bridge (isolated ports instead)
    for r in RULES.base:
        if r.chain in ("post_nat", "bridge"):
            assert ipt.render_rule(r, "x") == []
    jumps = [s.text() for s in ipt.jump_specs("racfu0", V)]
    # in this order at the head of the built-in chains: mangle runs before nat (DNAT),
    # the deny list (RACF_GUEST_DEST) before the job accepts (RACF_GUEST_OUT)
    assert jumps == [
        f"iptables -t mangle -A PREROUTING -i racfu0 {c} -j RACF_GUEST_PRE",
        f"iptables -t mangle -A PREROUTING -i racfu0 {c} -j RACF_VET",
        f"iptables -t filter -A FORWARD -i racfu0 {c} -j RACF_GUEST_DEST",
        f"iptables -t filter -A FORWARD -i racfu0 {c} -j RACF_GUEST_OUT",
        f"ip6tables -t filter -A FORWARD -i racfu0 {c} -j RACF_GUEST_OUT",
        f"iptables -t filter -A FORWARD -o racfu0 {c} -j RACF_GUEST_IN",
        f"ip6tables -t filter -A FORWARD -o racfu0 {c} -j RACF_GUEST_IN",
        f"iptables -t filter -A INPUT -i racfu0 {c} -j RACF_GUEST_HOST",
        f"ip6tables -t filter -A INPUT -i racfu0 {c} -j RACF_GUEST_HOST",
        f"iptables -t nat -A POSTROUTING {c} -j RACF_NAT",
    ]


# -- backend choice, network, MACs ------------------------------------------------------------
def test_detect_parses_and_refuses_mismatch():
    assert detect.parse_version("iptables v1.8.9 (nf_tables)\n") == "nft"
    assert detect.parse_version("iptables v1.8.9 (legacy)\n") == "legacy"
    assert detect.parse_version("iptables v1.6.1\n") == "legacy"
    with pytest.raises(BackendMismatch):
        detect.parse_version("something else")
    assert detect.choose("auto", "nft") == "nft"
    assert detect.choose("auto", "legacy") == "iptables"
    assert detect.choose("iptables", "legacy") == "iptables"
    with pytest.raises(BackendMismatch, match="nf_tables build"):
        detect.choose("iptables", "nft")
    with pytest.raises(BackendMismatch, match="legacy build"):
        detect.choose("nft", "legacy")
    with pytest.raises(BackendMismatch):
        detect.choose("bogus", "nft")


def test_network_xml_and_reservations():
    s = network.NetSettings(name="racf-untrusted", bridge="racfu0", subnet="10.213.0.0/24")
    xml = network.network_xml(s)
    assert "<forward mode=\"open\" />" in xml and "<port isolated=\"yes\" />" in xml
    assert 'address="10.213.0.1" netmask="255.255.255.0"' in xml and "ipv6" not in xml
    network._check_existing(xml, s)
    # dnsmasq never writes a client's MAC into the host's neighbour table (that would
    # replace the entry the lease pinned): it answers DHCP by broadcast only
    assert '<dnsmasq:option value="dhcp-broadcast" />' in xml
    assert network._outdated(xml) == []
    old = xml[:xml.index("<dnsmasq:options")] + "</network>"
    assert network._outdated(old) == ["dnsmasq option dhcp-broadcast missing"]
    r1 = network.pick(TAG, s, [])
    assert r1.mac.startswith("02:72:66:") and r1.ip != "10.213.0.1"
    assert network.pick(TAG, s, []) == r1  # deterministic
    r2 = network.pick(TAG, s, [r1])  # collision with an existing reservation: another one
    assert r2.mac != r1.mac and r2.ip != r1.ip
    assert network.owner_of_name(r1.name).pid == 4242
    assert network.owner_of_name("somebody-else") is None
    tiny = network.NetSettings(name="n", bridge="b", subnet="10.0.0.0/29")
    taken = []
    for i in range(5):
        taken.append(network.pick(f"x-1.0-{i}-1", tiny, taken))
    with pytest.raises(Exception, match="no free address"):
        network.pick("x-1.0-9-1", tiny, taken)


def test_domain_xml_interface_on_the_untrusted_network():
    from racf_vm.core.errors import InternalError
    from racf_vm.vm.domain_xml import KernelBoot, build_domain_xml
    from tests.support.specs import job_spec as DomainSpec

    kw = dict(name="racf-vm-" + TAG, tag=TAG, pid=4242, start=1, uid=2501, domain_type="qemu",
              memory_mib=256, vcpus=1, emulator="/usr/bin/qemu-system-x86_64", overlay_path="/s/o.qcow2",
              base_path="/i/b.qcow2", base_format="qcow2", boot=KernelBoot("/i/k"), qemu_uid=64, qemu_gid=64)
    xml = build_domain_xml(DomainSpec(network="racf-untrusted", mac="02:72:66:aa:bb:cc", **kw))
    assert ("<interface type=\"network\"><source network=\"racf-untrusted\" />"
            "<mac address=\"02:72:66:aa:bb:cc\" /><model type=\"virtio\" /></interface>") in xml
    with pytest.raises(InternalError):
        DomainSpec(network="n", bridge="br0", **kw)
    with pytest.raises(InternalError):
        DomainSpec(network="n", mac="02:72:66:AA:BB:CC", **kw)


def test_config_untrusted_network_section():
    from racf_vm import config
    from racf_vm.core.errors import ConfigError

    c = config.parse_config(b"", "t")
    assert (c.untrusted_network.name, c.untrusted_network.bridge, c.untrusted_network.subnet,
            c.untrusted_network.backend) == ("racf-untrusted", "racfu0", "10.213.0.0/24", "auto")
    # the default deny list: site networks (private, shared), metadata (link-local), and
    # what is never a job's destination; one bit of the mark
    assert c.untrusted_network.deny == ("0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8",
                                        "169.254.0.0/16", "172.16.0.0/12", "192.168.0.0/16", "224.0.0.0/4",
                                        "240.0.0.0/4")
    assert c.untrusted_network.fwmark == 0x400000
    spec = network.settings_from_config(c).spec  # what the config gives, the planner takes
    assert spec.deny == c.untrusted_network.deny and spec.mark == 0x400000
    c = config.parse_config(b'[untrusted_network]\ndeny = ["130.199.0.0/16", "10.0.0.0/8"]\nfwmark = 0x10\n', "t")
    assert c.untrusted_network.deny == ("130.199.0.0/16", "10.0.0.0/8") and c.untrusted_network.fwmark == 16
    assert config.parse_config(b"[untrusted_network]\ndeny = []\n", "t").untrusted_network.deny == ()
    c = config.parse_config(b'[untrusted_network]\nbridge = "u1"\nsubnet = "10.9.8.0/24"\nbackend = "nft"\n', "t")
    assert c.untrusted_network.subnet == "10.9.8.0/24" and c.untrusted_network.backend == "nft"
    for bad in (b'[untrusted_network]\nsubnet = "8.8.8.0/24"\n', b'[untrusted_network]\nsubnet = "10.9.8.1/24"\n',
                b'[untrusted_network]\nbackend = "pf"\n', b'[untrusted_network]\ncolour = "x"\n',
                b'[untrusted_network]\ndeny = "10.0.0.0/8"\n', b'[untrusted_network]\ndeny = ["10.0.0.1/8"]\n',
                b'[untrusted_network]\ndeny = ["fd00::/8"]\n', b'[untrusted_network]\ndeny = [10]\n',
                b'[untrusted_network]\ndeny = ["10.0.0.0/8", "10.0.0.0/8"]\n',
                b'[untrusted_network]\nfwmark = 3\n', b'[untrusted_network]\nfwmark = 0\n',
                b'[untrusted_network]\nfwmark = "0x10"\n',
                b'[network]\ntrusted_bridge = "racfu0"\n'):
        with pytest.raises(ConfigError):
            config.parse_config(bad, "t")


def test_etc_config_documents_the_untrusted_network_defaults():
    """etc/racf-vm.toml shows [untrusted_network] with every key; uncommented, the values
    shown are the defaults."""
    import re
    from pathlib import Path

    from racf_vm import config

    text = (Path(__file__).resolve().parents[2] / "etc" / "racf-vm.toml").read_text()
    section = text[text.index("[untrusted_network]"):]
    body = "\n".join(re.sub(r"^# ?", "", line) if re.match(r'^# ?(\w+ =|  +")', line) else line
                     for line in section.splitlines())
    body = re.sub(r'\s+#[^\n"]*$', "", body, flags=re.M)
    for key in ("name", "bridge", "subnet", "backend", "deny", "fwmark"):
        assert re.search(rf"^{key} =", body, re.M), key
    assert config.parse_config(body.encode(), "t").untrusted_network == config.Config().untrusted_network


def test_both_backends_implement_the_interface():
    from netpolicy.backend_iptables import IptablesBackend
    from netpolicy.backend_nft import NftBackend

    for cls in (NftBackend, IptablesBackend):
        missing = [m for m in ("ensure_base", "add_job", "remove_job", "job_tags", "job_rule_count",
                               "verify", "remove_all", "listing") if not callable(getattr(cls, m, None))]
        assert missing == [] and isinstance(getattr(cls, "name"), str), (cls, missing)


# -- what survives a firewall reload (guardplan) ------------------------------------------------
# `ip -j rule show` on this host with the guard of SPEC installed (and the defaults)
IP_RULES_JSON = (
    '[{"priority":0,"src":"all","table":"local"},'
    '{"priority":100,"src":"all","fwmark":"0","fwmask":"0x400000","iif":"racfu0","action":"blackhole"},'
    '{"priority":101,"src":"0.0.0.0","dst":"10.213.0.0","dstlen":24,"iif":"lo","table":"main"},'
    '{"priority":102,"src":"10.213.0.1","dst":"10.213.0.0","dstlen":24,"iif":"lo","table":"main"},'
    '{"priority":103,"src":"all","dst":"10.213.0.0","dstlen":24,"fwmark":"0","fwmask":"0x400000",'
    '"iif":"lo","action":"blackhole"},'
    '{"priority":32766,"src":"all","table":"main"},{"priority":32767,"src":"all","table":"default"}]')


def test_guard_plan():
    from netpolicy import guardplan

    g = guardplan.plan(SPEC)
    assert [r.text() for r in g.rules] == [
        "ip rule add pref 100 iif racfu0 fwmark 0x0/0x400000 blackhole",
        "ip rule add pref 101 iif lo from 0.0.0.0/32 to 10.213.0.0/24 lookup main",
        "ip rule add pref 102 iif lo from 10.213.0.1/32 to 10.213.0.0/24 lookup main",
        "ip rule add pref 103 iif lo to 10.213.0.0/24 fwmark 0x0/0x400000 blackhole",
    ]
    assert [(x.path, x.value) for x in g.sysctls] == [
        ("net/ipv4/conf/racfu0/rp_filter", "1"), ("net/ipv4/conf/racfu0/src_valid_mark", "1"),
        ("net/ipv6/conf/racfu0/disable_ipv6", "1")]
    # what `ip` prints back is recognised as exactly these rules, and nothing else is
    have = guardplan.installed_rules(IP_RULES_JSON)
    assert {r.key() for r in g.rules} <= have
    assert len(have - {r.key() for r in g.rules}) == 3  # local, main, default
    other = guardplan.plan(planner.NetSpec("racfu1", "10.214.0.0/24", (), 0x10))
    assert not {r.key() for r in other.rules} & have
    # a foreign rule that differs only in its source prefix is not ours
    assert guardplan.installed_rules('[{"priority":102,"src":"10.213.0.1","srclen":24,"dst":"10.213.0.0",'
                                     '"dstlen":24,"iif":"lo","table":"main"}]').isdisjoint({g.rules[2].key()})
    assert all(guardplan.describe(g))


def test_neighbour_port_and_fdb_readers():
    from netpolicy import guardplan

    arp = ("IP address       HW type     Flags       HW address            Mask     Device\n"
           "10.213.0.7       0x1         0x6         02:72:66:aa:bb:cc     *        racfu0\n"
           "10.213.0.8       0x1         0x2         02:72:66:aa:bb:cd     *        racfu0\n"
           "192.0.2.1        0x1         0x2         02:fc:00:00:00:05     *        eth0\n")
    assert guardplan.neighbours(arp, "racfu0") == {"10.213.0.7": ("02:72:66:aa:bb:cc", True),
                                                   "10.213.0.8": ("02:72:66:aa:bb:cd", False)}
    assert guardplan.tap_mac("02:72:66:aa:bb:cc") == "fe:72:66:aa:bb:cc"
    rec = bytes.fromhex("027266010203" "03" "00" "00000000" "01" "00" "0000")  # port 0x103
    local = bytes.fromhex("fe7266010203" "01" "01" "00000000" "00" "00" "0000")
    assert guardplan.fdb(rec + local) == {"02:72:66:01:02:03": 0x103, "fe:72:66:01:02:03": 1}


def test_verify_counts_what_is_missing():
    """verify compares how many of our rules each chain should and does hold, per comment:
    a reload that took the table, a job's rules or one base rule shows up."""
    from collections import Counter

    from netpolicy.backend import shortfall

    skeleton = nft.skeleton_commands("racfu0", RULES.base, V)
    want = nft.expected_counts(skeleton + nft.job_commands(RULES.job))
    assert want[("guest_vet", "racf:" + TAG)] == 2 and want[("prerouting", "racf:base:racfu0:v1")] == 2
    assert shortfall(want, Counter(want)) == []
    assert len(shortfall(want, Counter())) == len(want)  # table gone: everything missing
    no_job = Counter({k: n for k, n in want.items() if k[1] != "racf:" + TAG})
    missing = shortfall(want, no_job)
    assert missing and all(TAG in m for m in missing)
    other_version = Counter({(c, "racf:base:racfu0:v0" if m == "racf:base:racfu0:v1" else m): n for (c, m), n in want.items()})
    assert all("racf:base:racfu0:v1" in m for m in shortfall(want, other_version))
    one_less = Counter(want)
    one_less[("guest_pre", "racf:" + TAG)] -= 1  # one rule short in its chain
    assert shortfall(want, one_less) == [f"guest_pre: 0 of 1 rules racf:{TAG}"]
    # iptables: the same comparison over its specs, keyed by table and chain
    specs = ipt.jump_specs("racfu0", V) + ipt.skeleton_specs("racfu0", RULES.base, V) + ipt.job_specs(RULES.job)
    want = Counter((s.where, s.comment) for s in specs)
    assert ("ip4 mangle RACF_VET", "racf:" + TAG) in want and ("ip4 mangle PREROUTING", "racf:base:racfu0:v1") in want
    assert shortfall(want, want) == [] and len(shortfall(want, Counter())) == len(want)


def test_explain_names_the_deny_list_and_the_guard():
    import netpolicy
    from racf_vm import config

    text = "\n".join(netpolicy.explain(config.parse_config(b'[untrusted_network]\ndeny = ["192.168.0.0/16"]\n', "t")))
    assert "guests never reach 192.168.0.0/16" in text
    assert "ip rule add pref 100 iif racfu0 fwmark 0x0/0x400000 blackhole" in text
    assert "net.ipv4.conf.racfu0.rp_filter=1" in text and "neighbour entry" in text
    assert "[guest_dest/ipv4] iif=racfu0 daddr=192.168.0.0/16 -> drop" in text


def test_iptables_reads_never_write_a_table_back():
    """python-iptables keeps one object per table, and its refresh() commits the copy that
    object holds when autocommit is on: a read would put a stale table back over the
    rules others changed since (a reload's, another job's). Every python-iptables read of
    the backend goes through _table(); verify does not use python-iptables at all."""
    import types

    from netpolicy import backend_iptables

    commits = []

    class FakeTable:
        _cache: dict = {}
        FILTER, NAT, MANGLE = "filter", "nat", "mangle"

        def __new__(cls, name, autocommit=None):
            obj = cls._cache.get(name)
            if obj is None:
                obj = cls._cache[name] = object.__new__(cls)
                obj.name, obj.autocommit, obj.chains = name, True, []
            if autocommit is not None:
                obj.autocommit = autocommit
            return obj

        def refresh(self):
            if self.autocommit:
                commits.append(self.name)

        def commit(self):
            commits.append(self.name)

    class FakeTable6(FakeTable):
        _cache: dict = {}

    backend = object.__new__(backend_iptables.IptablesBackend)
    backend.iptc = types.SimpleNamespace(Table=FakeTable, Table6=FakeTable6, IPTCError=Exception)
    FakeTable("filter"), FakeTable6("filter")  # as a default user of python-iptables leaves them
    for ipv6, name in backend._tables():
        assert not backend._table(name, ipv6).autocommit
    assert commits == []
    assert all(not t.autocommit for t in list(FakeTable._cache.values()) + list(FakeTable6._cache.values()))


def test_verify_reads_what_the_firewall_tools_print():
    """The readers of ``nft list table`` text and ``iptables-legacy-save`` output find every
    rule of a plan installed exactly as the backends put it (output recorded on Debian 12
    from this plan with deny = ["10.0.0.0/8"], skeleton version "v1")."""
    from pathlib import Path

    from netpolicy.backend import shortfall

    data = Path(__file__).parent / "data"
    spec = planner.NetSpec("racfu0", "10.213.0.0/24", ("10.0.0.0/8",), MARK)
    rules = planner.plan(planner.JobNet(TAG, "02:72:66:aa:bb:cc", "10.213.0.7", spec))
    nft_want = nft.expected_counts(nft.skeleton_commands("racfu0", rules.base, V) + nft.job_commands(rules.job))
    nft_have = nft.listed_counts((data / "netpolicy-nft-list.txt").read_text())
    assert nft_have == nft_want
    specs = ipt.jump_specs("racfu0", V) + ipt.skeleton_specs("racfu0", rules.base, V) + ipt.job_specs(rules.job)
    from collections import Counter

    ipt_want = Counter((s.where, s.comment) for s in specs)
    ipt_have = (ipt.saved_counts((data / "netpolicy-iptables-save.txt").read_text(), False)
                + ipt.saved_counts((data / "netpolicy-ip6tables-save.txt").read_text(), True))
    assert ipt_have == ipt_want
    assert shortfall(nft_want, nft.listed_counts("")) and shortfall(ipt_want, Counter())
