"""Trusted guests on the site network, the pure parts: ``[network]`` checks, the MAC
planner (racf_vm.vm.trustednet) and reservation planning."""

import pytest

from racf_vm.config import parse_config
from racf_vm.config.network import UNTRUSTED_MAC_PREFIX
from racf_vm.core.errors import ConfigError, InternalError, TemporaryError
from racf_vm.core.jobtag import Owner, make_tag
from racf_vm.vm import trustednet
from racf_vm.vm.trustednet import PID_SEATS, owner_mac, plan_reservation, pool_mac

SITE = b'''[network]
trusted_bridge = "br0"
trusted_mac_prefix = "0a:00:07"
trusted_dhcp_hostsdir = "/etc/racf-site/hosts.d"
trusted_pool = "10.1.2.100-10.1.2.199"
'''


def test_defaults_give_a_mac_prefix_and_no_reservations():
    net = parse_config(b"", "t").network
    assert (net.trusted_bridge, net.trusted_mac_prefix, net.trusted_dhcp_hostsdir, net.trusted_pool) == \
        ("", "02:72:74", "", "")


def test_a_site_with_fixed_addresses():
    net = parse_config(SITE, "t").network
    assert (net.trusted_mac_prefix, net.trusted_dhcp_hostsdir, net.trusted_pool) == \
        ("0a:00:07", "/etc/racf-site/hosts.d", "10.1.2.100-10.1.2.199")


def test_the_untrusted_prefix_is_netpolicys():
    from netpolicy.network import MAC_PREFIX

    assert UNTRUSTED_MAC_PREFIX == MAC_PREFIX


def _without(text: bytes, key: bytes) -> bytes:
    return b"\n".join(line for line in text.split(b"\n") if not line.startswith(key))


@pytest.mark.parametrize("config, message", [
    (SITE.replace(b'"/etc/racf-site/hosts.d"', b'"hosts.d"'), "not an absolute path"),
    (SITE.replace(b'"/etc/racf-site/hosts.d"', b'"/etc/../tmp"'), "'..' component"),
    (_without(SITE, b"trusted_pool"), "go together"),
    (_without(SITE, b"trusted_dhcp_hostsdir"), "go together"),
    (_without(SITE, b"trusted_bridge"), "need trusted_bridge"),
    (SITE.replace(b"10.1.2.100-10.1.2.199", b"10.1.2.199-10.1.2.100"), "below the first"),
    (SITE.replace(b"10.1.2.100-10.1.2.199", b"10.1.2.100-10.2.2.199"), "more than 65536"),
    (SITE.replace(b"10.1.2.100-10.1.2.199", b"10.1.2.300"), "not FIRST-LAST"),
    (SITE.replace(b"10.1.2.100-10.1.2.199", b"224.0.0.1-224.0.0.9"), "cannot be a guest's address"),
    (SITE.replace(b"10.1.2.100-10.1.2.199", b"10.213.0.50-10.213.0.60"), "overlaps untrusted_network.subnet"),
    (SITE.replace(b"0a:00:07", b"0A:00:07"), "lower-case hex"),
    (SITE.replace(b"0a:00:07", b"0a:00:07:01"), "three lower-case hex octets"),
    (SITE.replace(b"0a:00:07", b"03:00:07"), "multicast"),
    (SITE.replace(b"0a:00:07", b"00:16:3e"), "not locally administered"),
    (SITE.replace(b"0a:00:07", b"fe:54:00"), "tap device"),
    (SITE.replace(b"0a:00:07", b"02:72:66"), "untrusted NAT network's"),
    (SITE.replace(b"0a:00:07", b"52:54:00"), "libvirt's and QEMU's default"),
    (SITE + b"trusted_mac = 1\n", "unknown key"),
])
def test_unsafe_or_inconsistent_settings_are_refused(config, message):
    with pytest.raises(ConfigError, match=message) as info:
        parse_config(config, "site.toml")
    assert info.value.exit_status == 78 and "\n" not in info.value.message


def test_owner_macs_carry_the_pid_and_never_collide():
    macs = {owner_mac("02:72:74", pid) for pid in (1, 2, 255, 256, 65535, 65536, PID_SEATS - 1)}
    assert len(macs) == 7
    assert owner_mac("02:72:74", 0x123456) == "02:72:74:12:34:56"
    assert owner_mac("0a:00:07", 1) == "0a:00:07:00:00:01"
    for bad in (0, -1, PID_SEATS):
        with pytest.raises(InternalError):
            owner_mac("02:72:74", bad)


def test_pool_macs_never_meet_owner_macs_nor_the_untrusted_range():
    owners = {owner_mac("02:72:74", pid) for pid in range(1, PID_SEATS, 4099)} | {owner_mac("02:72:74", PID_SEATS - 1)}
    pool = {pool_mac("02:72:74", i) for i in range(0, 1 << 16, 7)} | {pool_mac("02:72:74", (1 << 16) - 1)}
    assert not owners & pool
    assert pool_mac("02:72:74", 0) == "02:72:74:80:00:00"
    assert not any(m.startswith(UNTRUSTED_MAC_PREFIX) for m in owners | pool)
    with pytest.raises(InternalError):
        pool_mac("02:72:74", 1 << 16)
    with pytest.raises(InternalError):  # a prefix the config refuses never makes a MAC
        trustednet.mac_of_seat(UNTRUSTED_MAC_PREFIX, 1)


def test_jobs_of_one_node_get_distinct_macs_from_their_tags():
    from racf_vm.job import plan as planner
    from tests.unit.test_job_plan import (
        inputs,  # the plan's own inputs, another owner each
    )

    cfg = b'[network]\ntrusted_bridge = "br0"\n'
    macs = [planner.plan_job(inputs(cfg, owner=Owner(pid, 77))).domain.nics[0].mac for pid in (100, 101, 4242)]
    assert macs == ["02:72:74:00:00:64", "02:72:74:00:00:65", "02:72:74:00:10:92"]


def _tag(pid: int) -> str:
    return make_tag("slot1", 7, 0, Owner(pid, 5))


def test_the_lowest_free_address_comes_with_its_own_mac():
    first = plan_reservation("02:72:74", "10.1.2.100-10.1.2.103", _tag(10), set())
    assert (first.mac, first.ip, first.line) == ("02:72:74:80:00:00", "10.1.2.100", "02:72:74:80:00:00,10.1.2.100\n")
    assert first.file_name == f"racf-{_tag(10)}"
    taken = {"10.1.2.100", "10.1.2.101"}
    second = plan_reservation("02:72:74", "10.1.2.100-10.1.2.103", _tag(11), taken)
    assert (second.mac, second.ip) == ("02:72:74:80:00:02", "10.1.2.102")
    # whoever gets an address again, it comes with the same MAC (dnsmasq's records stay true)
    again = plan_reservation("02:72:74", "10.1.2.100-10.1.2.103", _tag(12), {"10.1.2.101"})
    assert (again.mac, again.ip) == (first.mac, first.ip)


def test_a_used_up_pool_is_a_temporary_failure():
    taken = {"10.1.2.100", "10.1.2.101"}
    with pytest.raises(TemporaryError) as info:
        plan_reservation("02:72:74", "10.1.2.100-10.1.2.101", _tag(10), taken)
    assert info.value.exit_status == 75
    assert info.value.message == ("all 2 addresses of the site network's pool (10.1.2.100-10.1.2.101, "
                                  "[network] trusted_pool) are reserved by jobs on this node; the job "
                                  "will run again later")


def test_addresses_in_hosts_files_ours_and_the_sites():
    text = ("# the site's own\n"
            "00:16:3e:00:00:01,10.1.2.100,nfs-client,infinite\n"
            "id:01:02:03,10.1.2.101\n"
            "# 10.1.2.102 is a comment\n"
            "02:72:74:80:00:03,10.1.2.103\n"
            "garbage\n")
    assert trustednet.addresses_in(text) == {"10.1.2.100", "10.1.2.101", "10.1.2.103"}


def test_reservation_files_name_their_owner():
    assert trustednet.owner_of_file(f"racf-{_tag(10)}") == Owner(10, 5)
    for other in ("site-hosts", ".racf-vm.lock", f".racf-{_tag(10)}.tmp", "racf-notatag"):
        assert trustednet.owner_of_file(other) is None
    with pytest.raises(InternalError):
        trustednet.file_name("../../etc/passwd")
