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

Jobs run through the wrapper's own code from the image onwards (racf_vm.job.run.JobRun:
``image_inputs``, ``plan_job``, ``_execute``), as tests/integration/test_images_maintain.py
does, without the setuid shim and its parent checks.
"""

import grp
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from racf_vm.condor.request import JobRequest
from racf_vm.config import load_config
from racf_vm.core import jobtag
from racf_vm.guest import install
from racf_vm.images import catalog
from racf_vm.job import plan as planner
from racf_vm.job.run import JobRun
from racf_vm.trust import pathtrust, privsep
from racf_vm.vm import sizing, trustednet
from tests.integration.sitenet import site as sitenet
from tests.support import prereq, testenv

pytestmark = [pytest.mark.root, pytest.mark.vm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
JOB_UID = 2501
SITE_STATIC = "00:16:3e:00:00:01"  # a host the site itself reserved an address for


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
        for d in ("etc", "etc/images.d", "cache", "execute"):
            (root / d).mkdir(mode=0o755)
        (root / "state").mkdir(mode=0o711)
        shutil.copy(REPO / "images.d" / "guest" / "runner.sh", root / "etc" / "runner.sh")
        net.up()
        config = _write_site(root, net, image_dir, untrusted_net)
        yield {"root": root, "net": net, "config": config}
    finally:
        net.down()
        sitenet.sh("virsh", "-c", "qemu:///system", "net-destroy", untrusted_net, check=False)
        sitenet.sh("virsh", "-c", "qemu:///system", "net-undefine", untrusted_net, check=False)
        from netpolicy import detect

        detect.get_backend("auto").remove_all()  # the skeleton named our NAT bridge
        sitenet.remove_tree(root)


def _write_site(root: Path, net, image_dir: Path, untrusted_net: str) -> Path:
    n = net.bridge[len("racfsite"):]
    config = root / "etc" / "racf-vm.toml"
    config.write_text(f"""
[paths]
catalog_dir = "{root}/etc/images.d"
state_dir = "{root}/state"
image_dir = "{root}/cache"
runner = "{root}/etc/runner.sh"

[sizing]
memory_per_core_mib = 512
min_memory_mib = 128

[timeouts]
boot = 300
poweroff = 60
prepare = 600
after_destroy = 60

[network]
trusted_bridge = "{net.bridge}"
trusted_dhcp_hostsdir = "{net.hostsdir}"
trusted_pool = "{net.pool}"

[untrusted_network]
name = "{untrusted_net}"
bridge = "racfus{n}"
subnet = "10.232.{n}.0/24"
""")
    os.chmod(config, 0o644)
    for name, trust in (("sitenfs", "trusted"), ("sitenfs-untrusted", "untrusted")):
        entry = testenv.catalog_entry(name, image_dir, trust)
        meta = testenv._image_toml(image_dir)
        entry = entry.replace(f'cmdline = "{meta["cmdline"]}"', f'cmdline = "{meta["cmdline"]} {net.guest_cmdline()}"')
        assert net.guest_cmdline() in entry
        path = root / "etc" / "images.d" / f"{name}.toml"
        path.write_text(entry)
        os.chmod(path, 0o644)
    return config


def _run_job(config_path: Path, image: str, script: str, capfd) -> tuple[int, str]:
    """One job as the wrapper runs it from the image onwards; (exit status, its stdout)."""
    cfg = load_config(str(config_path))
    workdir = config_path.parent.parent / "execute" / f"dir_{os.getpid()}"
    workdir.mkdir(mode=0o700)
    os.chown(workdir, JOB_UID, JOB_UID)
    run = JobRun(config_path=str(config_path), caller=privsep.Caller(JOB_UID, JOB_UID), user_args=[])
    run.config = cfg
    run.request = req = JobRequest(image=image, command="/bin/sh", args=("-c", script), env=(),
                                   user="racfjob", uid=JOB_UID, gid=JOB_UID, workdir=str(workdir),
                                   slot="slot1", cluster=12, proc=0)
    try:
        entry = catalog.load_catalog(cfg.paths.catalog_dir, check_trust=pathtrust.check_trusted_file).lookup(image)
        resolved, base, layer, kind = run.image_inputs(entry, install.read_runner(cfg.paths.runner))
        plan = planner.plan_job(planner.PlanInputs(
            request=req, image=resolved, base=base, layer=layer, slot=sizing.read_slot(), config=cfg,
            accel=kind, owner=jobtag.self_owner(),
            qemu_uid=pwd.getpwnam(cfg.libvirt.qemu_user).pw_uid,
            qemu_gid=grp.getgrnam(cfg.libvirt.qemu_group).gr_gid))
        capfd.readouterr()
        status = run._execute(plan)
        return status, capfd.readouterr().out
    finally:
        run.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


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


def test_a_trusted_guest_gets_its_reserved_address_reserved_ports_and_the_sites_nfs(site, capfd):
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
    status, stdout = _run_job(site["config"], "sitenfs", script, capfd)
    report = _report(stdout)
    assert status == 0, stdout

    # the reservation gave the guest its fixed address: the second of the pool (the site
    # holds the first), with the MAC that always comes with it on this node
    prefix = load_config(str(site["config"])).network.trusted_mac_prefix
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


def test_an_untrusted_guests_root_never_gets_a_reserved_port_to_the_site(site, capfd):
    net = site["net"]
    before = sorted(p.name for p in net.export.iterdir())
    seen_before = {w: len(net.lowport_log(w)) for w in ("host", "server")}
    status, stdout = _run_job(site["config"], "sitenfs-untrusted", REPORT + "ls /site\n", capfd)
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
        out = subprocess.run([sys.executable, "-m", "racf_vm.cli", "--config", str(site["config"]), "gc"],
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
    net, config = site["net"], site["config"]
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
