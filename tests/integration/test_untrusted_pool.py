"""The untrusted address pool against wrappers killed before their teardown.

A real libvirt network with a /29 (five guest addresses) and real firewall rules; no
guest is needed: what is tested is who holds an address.
"""

import subprocess

import pytest

pytestmark = [pytest.mark.root]

NET = "racf-pool-test"
BRIDGE = "racfpool0"
SUBNET = "10.213.91.0/29"  # .1 is the host: five addresses for guests


def _config(state_dir: str):
    from racf_vm import config

    text = f"""
[paths]
state_dir = "{state_dir}"
catalog_dir = "{state_dir}/images.d"

[untrusted_network]
name = "{NET}"
bridge = "{BRIDGE}"
subnet = "{SUBNET}"
"""
    return config.parse_config(text.encode(), "test")


def _tag(n: int, alive: bool) -> str:
    from racf_vm.core import jobtag

    me = jobtag.self_owner()
    # our own pid with another start time is a process that has gone
    owner = me if alive else jobtag.Owner(me.pid, me.start + 1)
    return jobtag.make_tag(f"slot{n}", n, 0, owner)


@pytest.fixture
def pool(libvirtd, tmp_path):
    from netpolicy import guard, guardplan, network
    from netpolicy.backend_iptables import IptablesBackend
    from netpolicy.backend_nft import NftBackend
    from racf_vm.vm import domain

    cfg = _config(str(tmp_path))
    conn = domain.open_connection(libvirtd)
    releases = []
    try:
        yield conn, cfg, releases
    finally:
        for release in releases:
            release()
        for cmd in ("net-destroy", "net-undefine"):
            subprocess.run(["/usr/bin/virsh", "-c", libvirtd, cmd, NET], capture_output=True)
        NftBackend().remove_all()
        IptablesBackend().remove_all()
        guard.remove(guardplan.plan(network.settings_from_config(cfg).spec))
        domain.close_connection(conn)


def test_addresses_of_killed_wrappers_are_taken_back_when_the_pool_is_full(pool):
    import netpolicy
    from netpolicy import guard, network
    from netpolicy.errors import PoolExhausted

    conn, cfg, releases = pool
    # five jobs whose wrappers were killed: their reservations, rules and neighbours stay
    dead = [_tag(n, alive=False) for n in range(5)]
    for tag in dead:
        lease, _release = netpolicy.acquire_untrusted(conn, cfg, tag)  # never released
    net = network.lookup_network(conn, NET)
    assert len(network.reservations(net)) == 5

    live, release = netpolicy.acquire_untrusted(conn, cfg, _tag(10, alive=True))
    releases.append(release)

    held = network.reservations(net)
    assert [r.ip for r in held] == [live.ip], "the dead jobs' addresses should have been taken back"
    backend = live.backend
    assert set(backend.job_tags()) == {live.tag}
    pinned = {ip for ip, (_mac, permanent) in guard.neighbours(BRIDGE).items() if permanent}
    assert pinned == {live.ip}

    # live jobs are never evicted: with every address held by one, the next job is refused
    for n in range(11, 15):
        _lease, release = netpolicy.acquire_untrusted(conn, cfg, _tag(n, alive=True))
        releases.append(release)
    with pytest.raises(PoolExhausted, match="no free address"):
        netpolicy.acquire_untrusted(conn, cfg, _tag(20, alive=True))
    assert len(network.reservations(net)) == 5
    assert _tag(20, alive=True) not in backend.job_tags(), "a refused job left rules behind"

