"""netpolicy with real guests and real packets, for both firewall backends.

Topology and guest scripts: tests/integration/netprobe/harness.py. Untrusted guests run
their probes as root (the image's rc.local); the trusted guest's probes run as uid 2501.
While they run, the test plays the wrapper's supervisor (``lease.check()`` every 0.5 s),
the peer guest forges ARP for the prober all along, and at the end the host's firewall
is reloaded as an admin or a package upgrade would do it.
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
        yield {"root": root, "topo": topo, "guests": guests, "image_dir": image_dir, "state": state, "probe": probe}
    finally:
        H.set_alternatives(alts)
        _wipe_rules()
        _remove_guard(root)
        H.destroy_network()
        topo.down()
        H.remove_root(root)
        assert {n: H.alternatives_state(n) for n in alts} == alts


def _wipe_rules():
    from netpolicy.backend_iptables import IptablesBackend
    from netpolicy.backend_nft import NftBackend

    NftBackend().remove_all()
    IptablesBackend().remove_all()


def _remove_guard(state):
    from netpolicy import guard, guardplan, network

    guard.remove(guardplan.plan(network.settings_from_config(H.load_config(state)).spec))


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
    assert H.neighbour(ip) == {}, "the job's pinned neighbour entry outlived it"


@pytest.mark.parametrize("kind", ["nft", "iptables"])
def test_untrusted_guest_behind_nat(netsite, kind):
    import netpolicy
    from netpolicy import conntrack, detect
    from netpolicy.errors import NetpolicyError
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
        checker = restore = None
        try:
            with netpolicy.untrusted_lease(conn, cfg, tag_b) as lb, \
                    netpolicy.untrusted_lease(conn, cfg, tag_a) as la, H.port_forward(kind):
                if not any(p.args[-1].endswith("7003") for p in topo.procs):
                    topo.start_host_listener()
                host_addrs = H.host_addresses()  # now with the untrusted bridge's
                assert backend.job_rule_count(tag_a) == 7
                la.check()  # intact before boot (no port to pin yet)
                lb.check()
                t0 = time.monotonic()
                guests.boot(conn, guests.spec(f"B{kind}", tag_b, owner.pid, network=lb.network_name, mac=lb.mac,
                                              cmdline=f"racfsecs=150 racfvictim={la.ip} racfvictimmac={la.mac}"))
                guests.boot(conn, guests.spec(f"A{kind}", tag_a, owner.pid, network=la.network_name, mac=la.mac,
                                              cmdline=f"racfpeer={lb.ip} racfhost={','.join(host_addrs)}"))
                checker = H.Checker({"A": la, "B": lb})
                checker.start()
                guests.boot(conn, guests.spec(f"T{kind}", tag_t, owner.pid, bridge=H.TRUSTED_BRIDGE,
                                              cmdline="racf.nodhcp"))
                ca = guests.wait_for(f"A{kind}", "LOOP", 300, count=3)
                # B has forged ARP for A's address all along: where does the host send A's traffic?
                neigh_a, fdb_a, ports = H.neighbour(la.ip), H.fdb_entries(la.mac), (la.port, lb.port)
                conntrack_during = conntrack.entries_for(la.ip)
                # a job's own rules go: its check fails, the other job's does not
                with checker.lock:
                    assert backend.remove_job(tag_b) == 7
                b_failed = checker.wait_failed("B", 5)
                a_before_reload = checker.failed.get("A")
                # the host's firewall is reloaded under the running guest
                with checker.lock:
                    reloaded_at = time.time()
                    restore = H.reload_firewall(kind)
                a_failed = checker.wait_failed("A", 5)
                with checker.lock, pytest.raises(NetpolicyError, match="protection is gone"):
                    la.check()
                checker.stop()
                ca = guests.wait_for(f"A{kind}", "DONE", 240)
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
            if checker is not None:
                checker.stop()
            if restore is not None:
                restore()
            for tag in (tag_a, tag_b, tag_t):
                with contextlib.suppress(Exception):
                    domain.destroy(conn.lookupByName(f"racf-vm-{tag}"))
            domain.close_connection(conn)

    site = [e for e in topo.site_entries() if e["t"] >= test_start]
    hostlog = [e for e in topo.host_entries() if e["t"] >= test_start]
    print(f"{kind}: prober A: {ca}\n{kind}: peer B: {cb}\n{kind}: checks failed: {checker.failed} "
          f"(reload at {reloaded_at:.2f})")
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
    # the host's own services are unreachable, from low and high ports, on every host address,
    # and so are its port forwards (checked before DNAT)
    for key in ("TCP600_HOSTBR", "UDPLOW_HOSTBR", "TCPHI_HOSTBR", "TCP600_HOSTVETH", "UDPHI_HOSTVETH"):
        assert ca[key][0].startswith("FAIL"), (key, ca[key])
    probed = [k for k in ca if k.startswith(("HOSTADDR_", "DNAT_"))]
    assert len(probed) == 3 * len(host_addrs) and len(host_addrs) >= 4, (host_addrs, probed)
    for key in probed:
        assert ca[key][0].startswith("FAIL"), (key, ca[key], host_addrs)
    before_reload = [e for e in hostlog if e["t"] < reloaded_at]
    assert before_reload == [], before_reload
    assert not [e for e in site if e["port"] == H.DNAT_TARGET_PORT], "a guest used the host's port forward"
    # deny-listed destinations: a private site network and link-local are unreachable
    for key in ("TCP_DENY", "UDP_DENY", "TCP_LINKLOCAL", "UDP_LINKLOCAL"):
        assert ca[key][0].startswith("FAIL"), (key, ca[key])
    assert not [e for e in site if e["dst"] in (H.DENY_IP, H.LINKLOCAL_IP)], site
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
    assert cb.get("PEER", [])[:1] == ["OK listening 7004"], cb
    # neighbour spoofing: B forged ARP replies and requests for A's address and sent frames
    # from A's MAC the whole time; the host still sent A's traffic to A, and only to A
    assert ca["UDP_BURST"] == ["10 of 10"], ca
    spoof = cb.get("SPOOF", [])
    assert spoof and int(spoof[-1].split("sent=")[1].split()[0]) > 100, cb
    assert all(line.endswith(" seen=0") for line in spoof), f"B saw frames for A: {spoof}"
    assert neigh_a.get("lladdr") == la.mac and neigh_a.get("state") == ["PERMANENT"], neigh_a
    assert all(ports), ports
    assert [e.get("ifname") for e in fdb_a] == [la.port] and "sticky" in fdb_a[0].get("flags", []), fdb_a
    # fail closed while running: the job whose rules went is reported at the next check,
    # the others are not; a reload is reported for every job
    assert b_failed and tag_b in b_failed[1] and "protection is gone" in b_failed[1], b_failed
    assert a_before_reload is None, a_before_reload
    assert a_failed and a_failed[0] - reloaded_at < 2.0, a_failed
    durations = [d for ds in checker.durations.values() for d in ds]
    print(f"{kind}: check() x{len(durations)}: mean {1000 * sum(durations) / len(durations):.1f} ms, "
          f"max {1000 * max(durations):.1f} ms; reload reported after {a_failed[0] - reloaded_at:.2f}s")
    assert sum(durations) / len(durations) < 0.05 and max(durations) < 0.5
    # ... and what the guest still reached after the reload, with none of our rules left:
    # the host's address on its own bridge, nothing beyond (not the site, not the host's
    # other addresses): the routing guard survived the reload
    loops = ca["LOOP"]
    assert any("OK tcp" in x for x in loops[:3])
    after = [e for e in site if e["t"] > reloaded_at + 1.0]
    assert after == [], after
    reached = {e["dst"] for e in hostlog if e["t"] > reloaded_at + 1.0}
    print(f"{kind}: reached after the reload: {sorted(reached)}")
    assert reached == {H.HOST_IP}, hostlog
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


@pytest.mark.parametrize("kind,how", [("nft", "flush"), ("nft", "delete-table"), ("iptables", "restore"),
                                      ("iptables", "job-rules")])
def test_a_reload_leaves_a_guest_nothing_beyond_its_bridge(netsite, kind, how):
    """A firewall reload under a running guest (a guest stand-in in a namespace: fast, and
    the same packets): every rule of ours goes, the routing guard stays. Before, the guest
    reaches the site NATed and not the host; after, not the site (new flows nor the one it
    had open), not the host's other addresses: only the host's address on its own bridge.
    When only the job's own rules go (how="job-rules"), the skeleton closes that too.
    ``check()`` reports it on its next call."""
    import netpolicy
    from netpolicy import detect
    from netpolicy.errors import NetpolicyError
    from racf_vm.vm import domain

    topo = netsite["topo"]
    if not any(p.args[-1].endswith("7003") for p in topo.procs):
        topo.start_host_listener()
    conn = domain.open_connection("qemu:///system")
    guest = None
    try:
        with _backend_host(kind), netpolicy.untrusted_lease(conn, H.load_config(netsite["state"]),
                                                             _make_tag(f"R{kind}")) as lease:
            guest = H.NsGuest("r", lease, netsite["probe"])
            lease.check()
            assert lease.port == guest.port  # found by its tap-like MAC and pinned
            before = {k: guest.probe(*a) for k, a in (
                ("flow", ("udp", "600", H.SITE_IP, "7002")), ("veth", ("tcp", "600", H.SITE_HOST_IP, "7003")),
                ("bridge", ("tcp", "600", H.HOST_IP, "7003")))}
            if how == "job-rules":
                assert detect.get_backend("auto").remove_job(lease.tag) == 7
                restore = lambda: None  # noqa: E731
            else:
                restore = H.reload_firewall(kind, how)
            reloaded_at = time.time()
            try:
                with pytest.raises(NetpolicyError, match="protection is gone"):
                    lease.check()
                after = {k: guest.probe(*a) for k, a in (
                    ("flow", ("udp", "600", H.SITE_IP, "7002")), ("new", ("tcp", "600", H.SITE_IP, "7001")),
                    ("veth", ("tcp", "600", H.SITE_HOST_IP, "7003")), ("bridge", ("tcp", "600", H.HOST_IP, "7003")))}
            finally:
                restore()
    finally:
        if guest is not None:
            guest.close()
        domain.close_connection(conn)
    print(f"{kind}/{how}: before {before}; after {after}")
    assert before["flow"].startswith("OK udp reply=sport=") and int(before["flow"].rsplit("=", 1)[1]) >= 1024
    assert before["veth"].startswith("FAIL") and before["bridge"].startswith("FAIL")
    assert after["flow"].startswith("FAIL") and after["new"].startswith("FAIL"), after
    assert after["veth"].startswith("FAIL"), after
    assert not [e for e in topo.site_entries() if e["t"] > reloaded_at], "the site heard from the guest after the reload"
    reached = {e["dst"] for e in topo.host_entries() if e["t"] > reloaded_at}
    if how == "job-rules":  # the skeleton still closes the host
        assert after["bridge"].startswith("FAIL") and reached == set(), after
    else:  # its own bridge: until check() stops it
        assert after["bridge"] == "OK tcp reply=sport=600" and reached == {H.HOST_IP}, after


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
        assert H.neighbour(ip).get("state") == ["PERMANENT"], "the killed job's pinned neighbour should be there"
        out = subprocess.run([H.PY, "-m", "racf_vm.cli", "--config", conf, "gc"], cwd=H.REPO,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert "1 job rule set(s), 1 reservation(s), 1 pinned neighbour entry" in out.stdout, out.stdout
        assert backend.job_rule_count(tag) == 0
        assert tag not in backend.job_tags()
        assert not any(network.owner_of_name(r.name) and r.ip == ip for r in network.reservations(net))
        assert conntrack.entries_for(ip) == []
        assert H.neighbour(ip) == {}, "gc left the dead job's pinned neighbour entry"
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
