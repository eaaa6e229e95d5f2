"""Site DHCP reservation files (racf_vm.vm.sitedhcp) in a real root-owned directory: the
lock, concurrent jobs, the refusals and every exit path. Root: pathtrust trusts only
root's directories. The guests that get these addresses: test_trusted_site_network.py."""

import dataclasses
import multiprocessing
import os
import stat
import tempfile
from pathlib import Path

import pytest

from racf_vm.config import parse_config
from racf_vm.core import jobtag
from racf_vm.core.errors import RefusedError, TemporaryError
from racf_vm.vm import sitedhcp, trustednet
from tests.support import testenv

pytestmark = [pytest.mark.root]


@pytest.fixture
def hostsdir():
    if os.geteuid() != 0:
        pytest.skip("needs root")  # not a listed reason: fails a full run as non-root, on purpose
    testenv.TEST_ROOT.mkdir(mode=0o755, parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="sitedhcp-", dir=testenv.TEST_ROOT))
    os.chmod(root, 0o755)
    d = root / "hosts.d"
    d.mkdir(mode=0o755)
    yield d
    for p in d.iterdir():
        p.unlink()
    d.rmdir()
    root.rmdir()


def _net(hostsdir: Path, pool: str = "10.9.8.10-10.9.8.17"):
    return parse_config(f'[network]\ntrusted_bridge = "br0"\ntrusted_dhcp_hostsdir = "{hostsdir}"\n'
                        f'trusted_pool = "{pool}"\n'.encode(), "t").network


def _tag(n: int) -> str:
    return jobtag.make_tag("slot1", n, 0, jobtag.self_owner())


def _ours(hostsdir: Path) -> dict:
    return {p.name: p.read_text() for p in hostsdir.iterdir() if p.name.startswith(trustednet.FILE_PREFIX)}


def test_a_reservation_is_one_file_while_the_job_runs(hostsdir):
    net = _net(hostsdir)
    with sitedhcp.site_reservation(net, _tag(1)) as res:
        assert (res.mac, res.ip) == ("02:72:74:80:00:00", "10.9.8.10")
        path = hostsdir / f"racf-{_tag(1)}"
        assert _ours(hostsdir) == {path.name: "02:72:74:80:00:00,10.9.8.10\n"}
        st = path.stat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o644)  # dnsmasq reads it unprivileged
        # everything else in the directory is a dot file dnsmasq skips (the lock)
        assert [p.name for p in hostsdir.iterdir() if p != path] == [sitedhcp.LOCK_NAME]
    assert _ours(hostsdir) == {}


def test_the_file_goes_on_an_error_path_too(hostsdir):
    with pytest.raises(RuntimeError):
        with sitedhcp.site_reservation(_net(hostsdir), _tag(1)):
            raise RuntimeError("the guest failed to boot")
    assert _ours(hostsdir) == {}


def test_off_by_default_no_file_and_no_reservation(hostsdir):
    net = parse_config(b'[network]\ntrusted_bridge = "br0"\n', "t").network
    with sitedhcp.site_reservation(net, _tag(1)) as res:
        assert res is None
    assert list(hostsdir.iterdir()) == []


def _reserve_in_child(args):
    hostsdir, tag = args
    res = sitedhcp.reserve(_net(Path(hostsdir)), tag)
    return res.mac, res.ip


def test_concurrent_jobs_get_distinct_addresses_and_a_full_pool_is_temporary(hostsdir):
    (hostsdir / "site-own").write_text("00:16:3e:00:00:01,10.9.8.12\n")  # the site's own line
    with multiprocessing.get_context("fork").Pool(7) as pool:
        # tags of this (live) process: the children are only the racing writers
        got = pool.map(_reserve_in_child, [(str(hostsdir), _tag(n)) for n in range(7)])
    assert len({ip for _, ip in got}) == len({mac for mac, _ in got}) == 7
    assert sorted(ip for _, ip in got) == [f"10.9.8.{i}" for i in (10, 11, 13, 14, 15, 16, 17)]
    for mac, ip in got:  # each address with its own MAC, whoever got it
        assert mac == trustednet.pool_mac("02:72:74", int(ip.rsplit(".", 1)[1]) - 10)
    with pytest.raises(TemporaryError) as info:
        sitedhcp.reserve(_net(hostsdir), _tag(99))
    assert info.value.exit_status == 75 and "are reserved by jobs on this node" in info.value.message
    report = sitedhcp.gc_reservations(_net(hostsdir))  # all of them are ours, and we live
    assert (report.removed, len(report.kept)) == ([], 7)


def test_a_directory_others_can_write_is_refused(hostsdir):
    os.chmod(hostsdir, 0o777)
    try:
        with pytest.raises(RefusedError, match="untrusted path") as info:
            sitedhcp.reserve(_net(hostsdir), _tag(1))
        assert info.value.exit_status == 77
        os.chmod(hostsdir, 0o755)
        os.chown(hostsdir, 2501, 0)
        with pytest.raises(RefusedError):
            sitedhcp.reserve(_net(hostsdir), _tag(1))
    finally:
        os.chown(hostsdir, 0, 0)
        os.chmod(hostsdir, 0o755)
    assert _ours(hostsdir) == {}


def test_gc_judges_files_by_their_owner_only(hostsdir):
    dead = jobtag.make_tag("slot2", 5, 0, jobtag.Owner(os.getpid(), 1))
    for name in (f"racf-{dead}", f"racf-{_tag(1)}", "site-own", "racf-not-a-tag"):
        (hostsdir / name).write_text("02:72:74:80:00:01,10.9.8.11\n")
    report = sitedhcp.gc_reservations(_net(hostsdir))
    assert report.removed == [f"racf-{dead}"]
    assert report.kept == [f"racf-{_tag(1)}"]
    assert sorted(p.name for p in hostsdir.iterdir()) == sorted([f"racf-{_tag(1)}", "site-own", "racf-not-a-tag"])
    off = dataclasses.replace(_net(hostsdir), trusted_dhcp_hostsdir="")
    assert sitedhcp.gc_reservations(off).removed == []
