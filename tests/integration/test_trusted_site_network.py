"""Issue 12 item 5: trusted guests on the site network, with real guests under TCG.

The site network is a test bridge (tests/integration/sitenet/site.py): the site's DHCP
server (dnsmasq, static leases only, reading ``[network] trusted_dhcp_hostsdir``), a
site server in a namespace with an NFS export (``secure``: reserved source ports only)
and a low-port service, and the same service on the node's own address. The image is
sitenfs (tests/images/sitenfs/): busybox whose boot step (``/etc/rc.site``, as root,
before the job) connects from source port 600 and mounts the site's export, as a site's
trusted image does. The same image runs once as trusted (on the site bridge) and once as
untrusted (netpolicy's NAT network).

What trusted means, tested here: root in a trusted guest sits on the site network with
reserved ports, so services that trust port numbers (NFS ``secure``) trust it; root in
an untrusted guest never gets a reserved port to the site (NAT remaps it) and never
reaches the node itself. That is why only images the site trusts go on the bridge.

Jobs run end to end: the stand-in starter runs the installed test shim, whose site (the
test config) is switched to this network for the module and switched back afterwards.
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from racf_vm.config import load_config
from racf_vm.core import jobtag
from racf_vm.vm import trustednet
from tests.integration.sitenet import site as sitenet
from tests.support import prereq, testenv

pytestmark = [pytest.mark.root, pytest.mark.vm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
JOB_UID = testenv.JOB_USERS["racfjob"]
SITE_STATIC = "00:16:3e:00:00:01"  # a host the site itself reserved an address for
CONFIG = testenv.TEST_CONFIG


@pytest.fixture(scope="module")
def site(libvirtd, job_user):
    for path, package in ((sitenet.GANESHA, "nfs-ganesha"), (sitenet.GANESHA_VFS, "nfs-ganesha-vfs"),
                          (sitenet.DNSMASQ, "dnsmasq-base")):
        prereq.require_file(path, package)
    image_dir = testenv.build_image("sitenfs")
    testenv.TEST_ROOT.mkdir(mode=0o755, parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="bridge-", dir=testenv.TEST_ROOT))
    os.chmod(root, 0o755)
    net = sitenet.SiteNetwork(root, JOB_UID)
    untrusted_net = f"racf-untrusted-site{net.bridge[len('racfsite'):]}"
    try:
        net.up()
        _write_site(net, image_dir, untrusted_net)
        yield {"net": net}
    finally:
        net.down()
        sitenet.sh("virsh", "-c", "qemu:///system", "net-destroy", untrusted_net, check=False)
        sitenet.sh("virsh", "-c", "qemu:///system", "net-undefine", untrusted_net, check=False)
        from netpolicy import detect

        detect.get_backend("auto").remove_all()  # the skeleton named our NAT bridge
        sitenet.remove_tree(root)
        testenv.small_site()  # the test site as the other suites know it


def _write_site(net, image_dir: Path, untrusted_net: str) -> None:
    """The test site on this network: its config, and a catalog of the sitenfs image as
    trusted and as untrusted (kernel command lines naming the site's servers)."""
    n = net.bridge[len("racfsite"):]
    testenv.write_site({}, extra=f"""after_destroy = 60

[network]
trusted_bridge = "{net.bridge}"
trusted_dhcp_hostsdir = "{net.hostsdir}"
trusted_pool = "{net.pool}"

[untrusted_network]
name = "{untrusted_net}"
bridge = "racfus{n}"
subnet = "10.232.{n}.0/24"
# the default deny list keeps untrusted guests off every private network, the test site's
# too; this site opens its own so that the NAT's port remapping is what is tested
deny = ["169.254.0.0/16", "127.0.0.0/8", "224.0.0.0/4", "240.0.0.0/4"]
""")
    for name, trust in (("sitenfs", "trusted"), ("sitenfs-untrusted", "untrusted")):
        entry = testenv.catalog_entry(name, image_dir, trust)
        meta = testenv._image_toml(image_dir)
        entry = entry.replace(f'cmdline = "{meta["cmdline"]}"', f'cmdline = "{meta["cmdline"]} {net.guest_cmdline()}"')
        assert net.guest_cmdline() in entry
        testenv.write_root_file(testenv.TEST_CATALOG / f"{name}.toml", entry)


def _run_job(image: str, script: str) -> tuple[int, str]:
    """One job through the stand-in starter and the test shim; (exit status, its stdout)."""
    one_line = "; ".join(line for line in script.splitlines() if line.strip())  # a job ad string has no line breaks
    r = testenv.run_job(image, "/bin/sh", ["-c", one_line], keep_sandbox=False)
    return r.status, r.stdout + r.stderr


REPORT = """
echo "address $(cat /var/site/address)"
while read -r target reply; do echo "lowport $target $reply"; done </var/site/lowport
echo "nfs $(cat /var/site/nfs)"
echo "uid $(id -u)"
"""


def _report(stdout: str) -> dict:
    out: dict = {}
    for line in stdout.splitlines():
        key, _, rest = line.partition(" ")
        out.setdefault(key, []).append(rest)
    return out


def _reservation_files(net) -> list:
    return sorted(p.name for p in net.hostsdir.iterdir() if p.name.startswith(trustednet.FILE_PREFIX))


def test_a_trusted_guest_gets_its_reserved_address_reserved_ports_and_the_sites_nfs(site):
    net = site["net"]
    # the site's own reservation in the same directory: racf-vm must not hand out its address
    first = net.pool.split("-")[0]
    (net.hostsdir / "site-static").write_text(f"{SITE_STATIC},{first}\n")
    os.chmod(net.hostsdir / "site-static", 0o644)
    host_file = net.export / "from-host"
    host_file.write_text("written by the site\n")
    os.chmod(host_file, 0o644)
    script = REPORT + """
echo "host-file $(cat /site/from-host)"
echo "written by uid $(id -u)" >/site/from-job && echo "wrote /site/from-job"
"""
    status, stdout = _run_job("sitenfs", script)
    report = _report(stdout)
    assert status == 0, stdout

    # the reservation gave the guest its fixed address: the second of the pool (the site
    # holds the first), with the MAC that always comes with it on this node
    prefix = load_config(str(CONFIG)).network.trusted_mac_prefix
    expected_ip = first.rsplit(".", 1)[0] + "." + str(int(first.rsplit(".", 1)[1]) + 1)
    expected_mac = trustednet.pool_mac(prefix, 1)
    assert report["address"] == [f"{expected_ip}/24"], stdout
    assert f"{expected_ip} {expected_mac}" in net.dhcp_acks(), net.dhcp_acks()
    assert _reservation_files(net) == []  # released when the job ended
    assert (net.hostsdir / "site-static").exists()  # the site's own file is never touched

    # root in the guest connects from a reserved port and is trusted, on the node and beyond
    targets = net.lowport_targets
    assert sorted(report["lowport"]) == sorted([f"{targets['host']} OK tcp reply=ok 600",
                                                f"{targets['server']} OK tcp reply=ok 600"]), stdout
    for which in ("host", "server"):
        seen = [e for e in net.lowport_log(which) if e["src"] == expected_ip]
        assert [(e["sport"], e["verdict"]) for e in seen] == [(600, "ok")], net.lowport_log(which)

    # the site's NFS export (secure: reserved ports only) is mounted read-write at boot, and
    # the job, as its own uid, reads the site's file and writes its own
    assert report["nfs"] == [f"mounted {net.nfs_source}"], stdout
    assert report["uid"] == [str(JOB_UID)]
    assert report["host-file"] == ["written by the site"]
    assert report["wrote"] == ["/site/from-job"]
    written = net.export / "from-job"
    assert written.read_text() == f"written by uid {JOB_UID}\n"
    assert (written.stat().st_uid, written.stat().st_gid) == (JOB_UID, JOB_UID)


def test_an_untrusted_guests_root_never_gets_a_reserved_port_to_the_site(site):
    net = site["net"]
    before = sorted(p.name for p in net.export.iterdir())
    seen_before = {w: len(net.lowport_log(w)) for w in ("host", "server")}
    status, stdout = _run_job("sitenfs-untrusted", REPORT + "ls /site\n")
    report = _report(stdout)
    assert status == 0, stdout
    assert report["uid"] == [str(JOB_UID)]
    targets = net.lowport_targets
    replies = dict(line.split(" ", 1) for line in report["lowport"])
    # The site server sees the connection NATed by the node: from the node's address and a
    # port >= 1024, whatever port root in the guest bound, so it refuses it. This is the
    # trust boundary: a service on the site network cannot tell an untrusted guest's root
    # from any user process on the node, which never has a reserved port.
    assert replies[targets["server"]].startswith("OK tcp reply=refused "), stdout
    port = replies[targets["server"]].rsplit(" ", 1)[1]
    assert int(port) >= 1024, stdout
    new = net.lowport_log("server")[seen_before["server"]:]
    assert [(e["src"], e["sport"], e["verdict"]) for e in new] == [(net.host_ip, int(port), "refused")], new
    # The node's own address on the site network is not reachable at all (netpolicy drops
    # every guest->host packet but DHCP and DNS): nc gets no answer, the service sees nothing.
    assert replies[targets["host"]].startswith("FAIL tcp"), stdout
    assert net.lowport_log("host")[seen_before["host"]:] == []
    # and so the secure NFS export refuses its root's mount
    assert report["nfs"][0].startswith("failed"), stdout
    assert sorted(p.name for p in net.export.iterdir()) == before
    assert _reservation_files(net) == []  # untrusted guests never touch the site's DHCP


def test_gc_removes_reservations_whose_job_is_gone(site):
    net = site["net"]
    dead = jobtag.make_tag("slot1", 9, 0, jobtag.Owner(os.getpid(), 1))  # our pid, another start
    alive = jobtag.make_tag("slot1", 9, 1, jobtag.self_owner())
    for tag, ip in ((dead, "10.0.0.1"), (alive, "10.0.0.2")):
        path = net.hostsdir / trustednet.file_name(tag)
        path.write_text(f"02:72:74:80:00:09,{ip}\n")
        os.chmod(path, 0o644)
    try:
        out = subprocess.run([sys.executable, "-m", "racf_vm.cli", "--config", str(CONFIG), "gc"],
                             cwd=REPO, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        assert "1 site network reservation(s)" in out.stdout, out.stdout
        assert _reservation_files(net) == [trustednet.file_name(alive)]
    finally:
        for p in net.hostsdir.glob(trustednet.FILE_PREFIX + "*"):
            p.unlink()


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "racf_vm.cli", "--config", str(config), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=300)


def test_policy_explains_and_checks_the_site_network(site):
    net, config = site["net"], CONFIG
    out = _cli(config, "policy", "explain", "sitenfs")
    assert out.returncode == 0, out.stderr
    assert f"network:  site bridge {net.bridge} (the guest root has reserved ports there)" in out.stdout
    assert "mac:      02:72:74:<seat> (the wrapper's pid; with a reservation 02:72:74:80:00:00" in out.stdout
    assert f"address:  fixed, from {net.pool} (a file per job in {net.hostsdir})" in out.stdout
    assert f"{net.hostsdir}:" not in _cli(config, "policy", "check").stdout
    os.chmod(net.hostsdir, 0o777)
    try:
        check = _cli(config, "policy", "check")
    finally:
        os.chmod(net.hostsdir, 0o755)
    assert check.returncode != 0
    assert [line for line in check.stdout.splitlines() if line.startswith(f"{net.hostsdir}: untrusted path")], check.stdout
