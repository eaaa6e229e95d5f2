"""netpolicy with real guests and real packets, for both firewall backends.

Topology and guest scripts: tests/integration/netprobe/harness.py. Untrusted guests run
their probes as root (the image's rc.local); the trusted guest's probes run as uid 2501.
"""

import contextlib
import os
import signal
import subprocess
import time

import pytest

from tests.integration.netprobe import harness as H
from tests.support import prereq

pytestmark = [pytest.mark.root, pytest.mark.vm, pytest.mark.slow]


@pytest.fixture(scope="module")
def netsite(libvirtd):
    from tests.support import testenv

    if os.geteuid() != 0:
        pytest.skip("needs root")
    for tool, package in (("/usr/sbin/conntrack", "conntrack"), ("/usr/sbin/iptables-legacy", "iptables"),
                          ("/usr/bin/gcc", "gcc")):
        prereq.require_file(tool, package)
    image_dir = str(testenv.build_image("small"))
    root = H.make_root()
    topo = H.Topology(root)
    alts = {n: H.alternatives_state(n) for n in ("iptables", "ip6tables")}
    H.destroy_network()
    try:
        topo.up()
        probe = H.build_probe(os.path.join(root, "probe"))
        guests = H.Guests(root, image_dir)
        scripts = {}
        for b in ("nft", "iptables"):
            scripts[f"A{b}"] = H.UNTRUSTED_PROBER
            scripts[f"B{b}"] = H.PEER_LISTENER
            scripts[f"T{b}"] = H.TRUSTED_JOB
        scripts["K"] = H.KEEPALIVE
        t0 = time.monotonic()
        guests.prepare(scripts, probe)
        print(f"guestfs: {time.monotonic() - t0:.1f}s for {len(scripts)} overlays")
        state = os.path.join(root, "gcstate")
        os.makedirs(state, mode=0o711)
        yield {"root": root, "topo": topo, "guests": guests, "image_dir": image_dir, "state": state}
    finally:
        H.set_alternatives(alts)
        _wipe_rules()
        H.destroy_network()
        topo.down()
        H.remove_root(root)
        assert {n: H.alternatives_state(n) for n in alts} == alts


def _wipe_rules():
    from netpolicy.backend_iptables import IptablesBackend
    from netpolicy.backend_nft import NftBackend

    NftBackend().remove_all()
    IptablesBackend().remove_all()


@contextlib.contextmanager
def _backend_host(kind):
    """The host's iptables alternative set for ``kind`` (restored afterwards)."""
    alts = {n: H.alternatives_state(n) for n in ("iptables", "ip6tables")}
    try:
        if kind == "iptables":
            H.sh("update-alternatives", "--quiet", "--set", "iptables", "/usr/sbin/iptables-legacy")
            H.sh("update-alternatives", "--quiet", "--set", "ip6tables", "/usr/sbin/ip6tables-legacy")
        else:
            H.sh("update-alternatives", "--quiet", "--set", "iptables", "/usr/sbin/iptables-nft")
            H.sh("update-alternatives", "--quiet", "--set", "ip6tables", "/usr/sbin/ip6tables-nft")
        yield
    finally:
        H.set_alternatives(alts)
        _wipe_rules()


def _owner():
    from racf_vm.core import jobtag

    return jobtag.self_owner()


def _make_tag(name):
    from racf_vm.core import jobtag

    return jobtag.make_tag(name, 1, 0, _owner())


def _assert_released(backend, cfg, conn, tag, ip):
    from netpolicy import conntrack, network

    assert backend.job_rule_count(tag) == 0
    net = network.lookup_network(conn, cfg.untrusted_network.name)
    assert all(r.ip != ip for r in network.reservations(net))
    assert conntrack.entries_for(ip) == []


@pytest.mark.parametrize("kind", ["nft", "iptables"])
def test_untrusted_guest_behind_nat(netsite, kind):
    import netpolicy
    from netpolicy import conntrack, detect
    from racf_vm.vm import domain

    topo, guests = netsite["topo"], netsite["guests"]
    test_start = time.time()
    with _backend_host(kind):
        cfg = H.load_config(netsite["state"])
        backend = detect.get_backend("auto")
        assert backend.name == kind
        conn = domain.open_connection("qemu:///system")
        owner = _owner()
        tag_a, tag_b = _make_tag(f"A{kind}"), _make_tag(f"B{kind}")
        tag_t = _make_tag(f"T{kind}")
        try:
            with netpolicy.untrusted_lease(conn, cfg, tag_b) as lb, \
                    netpolicy.untrusted_lease(conn, cfg, tag_a) as la:
                if not any(p.args[-1].endswith("7003") for p in topo.procs):
                    topo.start_host_listener()
                assert backend.job_rule_count(tag_a) == 4
                t0 = time.monotonic()
                guests.boot(conn, guests.spec(f"B{kind}", tag_b, owner.pid, network=lb.network_name,
                                              mac=lb.mac, cmdline="racfsecs=120"))
                guests.boot(conn, guests.spec(f"A{kind}", tag_a, owner.pid, network=la.network_name,
                                              mac=la.mac, cmdline=f"racfpeer={lb.ip}"))
                guests.boot(conn, guests.spec(f"T{kind}", tag_t, owner.pid, bridge=H.TRUSTED_BRIDGE,
                                              cmdline="racf.nodhcp"))
                ca = guests.wait_for(f"A{kind}", "LOOP", 240, count=3)
                # fail closed: our rules for A go away mid-job -> A is cut off
                conntrack_during = conntrack.entries_for(la.ip)
                flushed_at = time.time()
                assert backend.remove_job(tag_a) > 0
                ca = guests.wait_for(f"A{kind}", "DONE", 120)
                ct = guests.wait_for(f"T{kind}", "DONE", 120)
                cb = guests.console(f"B{kind}")
                print(f"{kind}: guests done in {time.monotonic() - t0:.1f}s")
                a_ip = la.ip
                for tag in (tag_a, tag_b, tag_t):
                    with contextlib.suppress(Exception):
                        domain.destroy(conn.lookupByName(f"racf-vm-{tag}"))
            _assert_released(backend, cfg, conn, tag_a, la.ip)
            _assert_released(backend, cfg, conn, tag_b, lb.ip)
        finally:
            for tag in (tag_a, tag_b, tag_t):
                with contextlib.suppress(Exception):
                    domain.destroy(conn.lookupByName(f"racf-vm-{tag}"))
            domain.close_connection(conn)

    site = [e for e in topo.site_entries() if e["t"] >= test_start]
    hostlog = topo.host_entries()
    # the guest got its reserved address and runs as root
    assert ca["ADDR"] == [f"{a_ip}/24"], ca
    assert ca["ID"] == ["0"]
    # TCP and UDP from source port 600 reach the site with a port >= 1024, NATed
    for key, proto, port in (("TCP600_SITE", "tcp", 7001), ("UDP600_SITE", "udp", 7002)):
        assert ca[key][0].startswith(f"OK {proto} reply=sport="), ca[key]
        seen = int(ca[key][0].rsplit("=", 1)[1])
        assert seen >= 1024
        entries = [e for e in site if e["proto"] == proto and e["port"] == port and e["sport"] == seen]
        assert entries and all(e["src"] == H.SITE_HOST_IP for e in entries), site
    assert not [e for e in site if e["sport"] < 1024], site
    assert not [e for e in site if e["src"] == a_ip], "a guest address reached the site un-NATed"
    # the host's own services are unreachable, from low and high ports, on every host address
    for key in ("TCP600_HOSTBR", "UDP600_HOSTBR", "TCPHI_HOSTBR", "TCP600_HOSTVETH", "UDPHI_HOSTVETH"):
        assert ca[key][0].startswith("FAIL"), (key, ca[key])
    assert hostlog == []
    # other protocols are dropped
    assert ca["RAW132_SITE"] == ["OK raw sent"]
    assert not [e for e in site if e["proto"] == "raw"], site
    assert ca["PING_SITE"] == ["FAIL"]
    # IPv6: no route out, nothing arrives
    assert ca["IP6ROUTE"] == ["0 default"]
    assert ca["PING6_SITE"] == ["FAIL"]
    assert ca["TCP600_SITE6"][0].startswith("FAIL")
    assert not [e for e in site if ":" in e["src"]], site
    # guest <-> guest: neither directly (layer 2) nor through the host
    assert ca["PING_PEER"] == ["FAIL"]
    for key in ("TCP_PEER", "UDP_PEER", "TCP_PEER_VIA_HOST"):
        assert ca[key][0].startswith("FAIL"), (key, ca[key])
    assert cb.get("PEER", []) == ["OK listening 7004"], cb
    # fail closed: after our rules for A were flushed, A's connections stop
    loops = ca["LOOP"]
    assert any("OK tcp" in x for x in loops[:3])
    after = [e for e in site if e["port"] == 7005 and e["t"] > flushed_at + 1.0]
    assert after == [], after
    assert "FAIL" in loops[-1]
    # conntrack saw the guest while it ran (the rules' subject), and nothing is left after
    assert conntrack_during, "expected conntrack entries for the guest while it ran"
    # the trusted guest's job (uid 2501) cannot bind a low port, and reaches the site un-NATed
    assert ct["ID"] == ["2501"]
    assert ct["TCP600_SITE"][0].startswith("FAIL tcp bind"), ct
    assert ct["TCP_SITE"][0].startswith("OK tcp reply=sport="), ct
    assert ct["UDP_SITE"][0].startswith("OK udp reply=sport="), ct
    tport = int(ct["TCP_SITE"][0].rsplit("=", 1)[1])
    assert [e for e in site if e["src"] == H.TRUSTED_GUEST_IP and e["sport"] == tport and tport >= 1024]


def test_sigkill_then_gc_leaves_nothing(netsite):
    from netpolicy import conntrack, detect, network
    from racf_vm.vm import domain

    guests = netsite["guests"]
    root, state = netsite["root"], netsite["state"]
    conf = os.path.join(root, "racf-vm.toml")
    with open(conf, "w") as f:
        f.write(H.config_text(state))
    os.chmod(conf, 0o644)
    cfg = H.load_config(state)
    backend = detect.get_backend("auto")
    proc = subprocess.Popen([H.PY, os.path.join(H.HERE, "killme.py"), state, "K", root, netsite["image_dir"],
                             guests.overlays["K"][0], guests.overlays["K"][1]],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=H.REPO)
    try:
        line = proc.stdout.readline().split()
        if not line or line[0] != "READY":
            proc.wait(10)
            raise AssertionError(f"killme: {line} {proc.stderr.read()}")
        tag, ip, console = line[1], line[2], line[3]
        guests.consoles["K"] = console
        guests.wait_for("K", "K", 240, count=2)
        assert backend.job_rule_count(tag) > 0
        assert conntrack.entries_for(ip)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    conn = domain.open_connection("qemu:///system")
    try:
        # autodestroy takes the guest with the killed wrapper; its network state stays behind
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(n == f"racf-vm-{tag}" for n, _ in domain.list_job_domains(conn)):
            time.sleep(0.2)
        net = network.lookup_network(conn, cfg.untrusted_network.name)
        assert any(r.ip == ip for r in network.reservations(net))
        assert backend.job_rule_count(tag) > 0
        assert conntrack.entries_for(ip), "the killed job's conntrack entries should still be there"
        out = subprocess.run([H.PY, "-m", "racf_vm.cli", "--config", conf, "gc"], cwd=H.REPO,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert "1 job rule set(s), 1 reservation(s)" in out.stdout, out.stdout
        assert backend.job_rule_count(tag) == 0
        assert tag not in backend.job_tags()
        assert not any(network.owner_of_name(r.name) and r.ip == ip for r in network.reservations(net))
        assert conntrack.entries_for(ip) == []
    finally:
        domain.close_connection(conn)


def test_backend_mismatch_is_refused(netsite):
    import netpolicy
    from netpolicy import detect
    from netpolicy.errors import BackendMismatch
    from racf_vm.vm import domain

    conn = domain.open_connection("qemu:///system")
    try:
        for kind, wrong in (("nft", "iptables"), ("iptables", "nft")):
            with _backend_host(kind):
                cfg = H.load_config(netsite["state"], backend=wrong)
                with pytest.raises(BackendMismatch, match="invisible"):
                    detect.get_backend(wrong)
                tag = _make_tag("mismatch")
                with pytest.raises(BackendMismatch):
                    with netpolicy.untrusted_lease(conn, cfg, tag):
                        pass
                net = H.sh("virsh", "-c", "qemu:///system", "net-dumpxml", H.NET_NAME, check=False).stdout
                from netpolicy import network

                assert network.reservation_name(tag) not in net
    finally:
        domain.close_connection(conn)
