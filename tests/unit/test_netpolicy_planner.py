"""netpolicy's planner and both backends' renderings, as data (no root, no kernel)."""

import pytest

from netpolicy import backend_nft as nft
from netpolicy import detect, network, planner
from netpolicy import iptables_rules as ipt
from netpolicy.errors import BackendMismatch

TAG = "slot1_1-42.0-4242-987654"
JOB = planner.JobNet(tag=TAG, mac="02:72:66:aa:bb:cc", ip="10.213.0.7", bridge="racfu0",
                     subnet="10.213.0.0/24", host_ip="10.213.0.1")
RULES = planner.plan(JOB)
V = "v1"


def _by_why(word):
    return [r for r in RULES.all() if word in r.why]


def test_every_rule_of_the_plan():
    base = [(r.chain, r.family, r.match, r.action) for r in RULES.base]
    assert base == [
        ("guest_out", "any", (("iif", "racfu0"),), "drop"),
        ("guest_in", "ipv4", (("oif", "racfu0"), ("ct_state", ("established", "related"))), "accept"),
        ("guest_in", "any", (("oif", "racfu0"),), "drop"),
        ("guest_host", "ipv4", (("iif", "racfu0"), ("proto", "udp"), ("sport", (68, 68)), ("dport", (67, 67))), "accept"),
        ("guest_host", "ipv4", (("iif", "racfu0"), ("daddr", "10.213.0.1"), ("proto", "udp"),
                                ("sport", (1024, 65535)), ("dport", (53, 53))), "accept"),
        ("guest_host", "ipv4", (("iif", "racfu0"), ("daddr", "10.213.0.1"), ("proto", "tcp"),
                                ("sport", (1024, 65535)), ("dport", (53, 53))), "accept"),
        ("guest_host", "any", (("iif", "racfu0"),), "drop"),
        ("post_nat", "ipv4", (("oif_not", "racfu0"), ("ct_orig_saddr", "10.213.0.0/24"),
                              ("ct_reply_daddr", "10.213.0.0/24")), "drop"),
        ("post_nat", "ipv4", (("oif_not", "racfu0"), ("ct_orig_saddr", "10.213.0.0/24"),
                              ("proto", ("tcp", "udp")), ("ct_reply_dport", (0, 1023))), "drop"),
        ("bridge", "any", (("ibridge", "racfu0"),), "drop"),
    ]
    job = [(r.chain, r.match, r.action, r.to_ports, r.comment) for r in RULES.job]
    common = (("iif", "racfu0"), ("smac", "02:72:66:aa:bb:cc"), ("saddr", "10.213.0.7"),
              ("daddr_not", "10.213.0.0/24"))
    nat = (("saddr", "10.213.0.7"), ("daddr_not", "10.213.0.0/24"))
    assert job == [
        ("guest_out", common + (("proto", "tcp"),), "accept", None, "racf:" + TAG),
        ("guest_out", common + (("proto", "udp"),), "accept", None, "racf:" + TAG),
        ("nat", nat + (("proto", "tcp"),), "masquerade", (1024, 65535), "racf:" + TAG),
        ("nat", nat + (("proto", "udp"),), "masquerade", (1024, 65535), "racf:" + TAG),
    ]
    assert all(r.tag is None and r.comment == "racf:base" for r in RULES.base)
    assert all(planner.describe(r) for r in RULES.all())


@pytest.mark.parametrize("field,value", [
    ("tag", "a b"), ("mac", "02:72:66:AA:BB:CC"), ("mac", "nonsense"), ("ip", "10.213.1.7"),
    ("ip", "10.213.0.0"), ("ip", "10.213.0.255"), ("ip", "10.213.0.1"), ("bridge", "x" * 16),
    ("bridge", "br;rm"), ("subnet", "10.213.0.1/24"), ("subnet", "10.0.0.0/8"), ("host_ip", "1.2.3.4"),
])
def test_bad_job_identity_is_refused(field, value):
    kw = dict(JOB.__dict__)
    kw[field] = value
    with pytest.raises(planner.PlanError):
        planner.JobNet(**kw)


def test_comment_tags():
    assert planner.tag_of_comment("racf:" + TAG) == TAG
    for c in ("racf:base", "racf:base:abc", "other", None, "racf:", "racf:a b"):
        assert planner.tag_of_comment(c) is None


# -- nftables -----------------------------------------------------------------------------
def _nft(rule):
    return nft.render_rule(rule)


def test_nft_job_rules():
    out_tcp, out_udp, nat_tcp, nat_udp = (_nft(r) for r in RULES.job)
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
    cmds = nft.job_commands(RULES.job)
    assert [c["insert"]["rule"]["chain"] for c in cmds] == ["nat", "nat", "guest_out", "guest_out"]
    assert all(c["insert"]["rule"]["comment"] == "racf:" + TAG for c in cmds)
    assert all(c["insert"]["rule"]["table"] == "racf_vm" and c["insert"]["rule"]["family"] == "inet" for c in cmds)


def test_nft_base_rules():
    r = {x.why: _nft(x) for x in RULES.base}
    drops = [_nft(x) for x in RULES.base if x.action == "drop" and x.chain != "bridge"]
    assert all(d[-1] == {"drop": None} for d in drops)
    dhcp = r[_by_why("DHCP")[0].why]
    assert {"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "sport"}}, "right": 68}} in dhcp
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
    assert chains["input"]["hook"] == "input"
    assert chains["nat"]["type"] == "nat" and chains["nat"]["prio"] == 100
    assert chains["post_nat"]["hook"] == "postrouting" and chains["post_nat"]["prio"] > 100
    rules = [c["add"]["rule"] for c in cmds if "rule" in c.get("add", {})]
    assert all(r["comment"] == "racf:base:v1" for r in rules)
    jumps = [(r["chain"], r["expr"][-1]["jump"]["target"]) for r in rules if "jump" in r["expr"][-1]]
    assert jumps == [("forward", "guest_out"), ("forward", "guest_in"), ("input", "guest_host")]
    # the final drop of each guest chain comes after its accepts
    out = [r for r in rules if r["chain"] == "guest_host"]
    assert out[-1]["expr"][-1] == {"drop": None}


# -- iptables -----------------------------------------------------------------------------
def test_iptables_job_rules():
    specs = ipt.job_specs(RULES.job)
    assert [s.text() for s in specs] == [
        "iptables -t filter -A RACF_GUEST_OUT -i racfu0 -s 10.213.0.7 ! -d 10.213.0.0/24 -p tcp "
        f"-m mac --mac-source 02:72:66:AA:BB:CC -m comment --comment racf:{TAG} -j ACCEPT",
        "iptables -t filter -A RACF_GUEST_OUT -i racfu0 -s 10.213.0.7 ! -d 10.213.0.0/24 -p udp "
        f"-m mac --mac-source 02:72:66:AA:BB:CC -m comment --comment racf:{TAG} -j ACCEPT",
        "iptables -t nat -A RACF_NAT -s 10.213.0.7 ! -d 10.213.0.0/24 -p tcp "
        f"-m comment --comment racf:{TAG} -j MASQUERADE --to-ports 1024-65535",
        "iptables -t nat -A RACF_NAT -s 10.213.0.7 ! -d 10.213.0.0/24 -p udp "
        f"-m comment --comment racf:{TAG} -j MASQUERADE --to-ports 1024-65535",
    ]


def test_iptables_base_rules():
    texts = [s.text() for s in ipt.skeleton_specs("racfu0", RULES.base, V)]
    c = "-m comment --comment racf:base:v1"
    assert texts == [
        f"iptables -t filter -A RACF_GUEST_OUT -i racfu0 {c} -j DROP",
        f"ip6tables -t filter -A RACF_GUEST_OUT -i racfu0 {c} -j DROP",
        f"iptables -t filter -A RACF_GUEST_IN -o racfu0 -m conntrack --ctstate ESTABLISHED,RELATED {c} -j ACCEPT",
        f"iptables -t filter -A RACF_GUEST_IN -o racfu0 {c} -j DROP",
        f"ip6tables -t filter -A RACF_GUEST_IN -o racfu0 {c} -j DROP",
        f"iptables -t filter -A RACF_GUEST_HOST -i racfu0 -p udp -m udp --sport 68 --dport 67 {c} -j ACCEPT",
        f"iptables -t filter -A RACF_GUEST_HOST -i racfu0 -d 10.213.0.1 -p udp -m udp --sport 1024:65535 --dport 53 {c} -j ACCEPT",
        f"iptables -t filter -A RACF_GUEST_HOST -i racfu0 -d 10.213.0.1 -p tcp -m tcp --sport 1024:65535 --dport 53 {c} -j ACCEPT",
        f"iptables -t filter -A RACF_GUEST_HOST -i racfu0 {c} -j DROP",
        f"ip6tables -t filter -A RACF_GUEST_HOST -i racfu0 {c} -j DROP",
    ]
    # not expressible on legacy x_tables: post-NAT check, bridge (isolated ports instead)
    for r in RULES.base:
        if r.chain in ("post_nat", "bridge"):
            assert ipt.render_rule(r, "x") == []
    jumps = [s.text() for s in ipt.jump_specs("racfu0", V)]
    assert jumps == [
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
    c = config.parse_config(b'[untrusted_network]\nbridge = "u1"\nsubnet = "10.9.8.0/24"\nbackend = "nft"\n', "t")
    assert c.untrusted_network.subnet == "10.9.8.0/24" and c.untrusted_network.backend == "nft"
    for bad in (b'[untrusted_network]\nsubnet = "8.8.8.0/24"\n', b'[untrusted_network]\nsubnet = "10.9.8.1/24"\n',
                b'[untrusted_network]\nbackend = "pf"\n', b'[untrusted_network]\ncolour = "x"\n',
                b'[network]\ntrusted_bridge = "racfu0"\n'):
        with pytest.raises(ConfigError):
            config.parse_config(bad, "t")


def test_both_backends_implement_the_interface():
    from netpolicy.backend_iptables import IptablesBackend
    from netpolicy.backend_nft import NftBackend

    for cls in (NftBackend, IptablesBackend):
        missing = [m for m in ("ensure_base", "add_job", "remove_job", "job_tags", "job_rule_count",
                               "remove_all", "listing") if not callable(getattr(cls, m, None))]
        assert missing == [] and isinstance(getattr(cls, "name"), str), (cls, missing)
