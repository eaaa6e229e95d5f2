"""LIBVIRT_XML_SCRIPT driven as condor_vm-gahp drives it (tests/support/vmgahp.py): as root,
from the job's cgroup, the job ad on stdin; the XML it prints is started by libvirt as the
gahp starts it (qemu:///session opened by root, a transient domain, flags 0).

The guest runs its own init (the VM universe has no racf runner): the small image's
busybox init mounts, asks DHCP when it has a NIC, and powers off. The test sees it boot on
the serial console ([vm_universe] console_log: the kernel's boot lines, then its
"reboot: Power down" when init powers off) and, on the NAT network, in dnsmasq's leases.
What the script leaves lives as long as the gahp; `racf-vm gc` removes it after."""

import os
import subprocess
import xml.etree.ElementTree as ET

import classad2
import pytest

from racf_vm.core.jobtag import Owner, parse_tag, process_start
from racf_vm.vm.domain_xml import JOB_NS
from tests.support import condorsim, condorsite, prereq

pytestmark = [pytest.mark.root, pytest.mark.vm]

USER = "racfjob"


@pytest.fixture(scope="module")
def site(libvirtd):
    prereq.require_file("/usr/bin/qemu-system-x86_64", "qemu-system-x86")
    s = condorsite.make_site()
    yield s
    _destroy_our_domains()
    _gc(s)
    condorsite.remove_network(s)
    s.remove()


def assert_boots_on_version_of(backing: str, cached: str) -> None:
    """The VM's base is the cached image's version link (racf_vm.images.versions): the very
    file, by a name a newer version never replaces."""
    assert os.path.dirname(backing) == os.path.join(os.path.dirname(cached), ".versions"), backing
    assert os.path.basename(backing).startswith(os.path.basename(cached) + "@")
    assert os.path.samefile(backing, cached)


def _destroy_our_domains() -> None:
    import libvirt

    conn = libvirt.open("qemu:///system")
    try:
        for dom in conn.listAllDomains():
            if dom.name().startswith(f"{USER}_7") and dom.isActive():
                dom.destroy()
    finally:
        conn.close()


def _gc(site) -> str:
    """`racf-vm gc` with this site's config (what the installed timer runs). It also judges
    other racf-vm resources on this host; the tests only look at their own."""
    proc = subprocess.run([condorsite.PYTHON, "-m", "racf_vm.cli", "--config", str(site.config), "gc"],
                          cwd=str(condorsite.REPO), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _stage(site, sandbox, image: str, name: str) -> None:
    """The disk, staged as in a real job: the racfimg:// plugin, as the job's user."""
    infile, outfile = condorsim.plugin_files(sandbox, USER, [(f"racfimg://{image}", f"{sandbox}/{name}")])
    proc = condorsim.run_plugin(site, ["-infile", str(infile), "-outfile", str(outfile)], user=USER,
                                sandbox=sandbox)
    assert proc.returncode == 0, outfile.read_text()


def _vm_ad(sandbox, cluster: int, *, disk: str = "busybox:vda:w:qcow2", memory: int = 256,
           vcpus: int = 1, **extra) -> str:
    """The VM job's ad as the gahp has it (condor_submit's attributes and the gahp's own)."""
    ad = classad2.ClassAd({
        "MyType": "Job", "TargetType": "Machine", "ClusterId": cluster, "ProcId": 0, "Owner": USER,
        "User": f"{USER}@example.org", "JobUniverse": 13, "Cmd": "busybox-instance", "JobVMType": "kvm",
        "JobVMMemory": memory, "JobVM_VCPUS": vcpus, "JobVMNetworking": True, "VMPARAM_vm_Disk": disk,
        "VMPARAM_No_Output_VM": True, "TransferInput": "racfimg://busybox",
        "VMPARAM_VM_NAME": f"{USER}_{cluster}.0", "VM_WORKING_DIR": str(sandbox),
    })
    ad["RequestMemory"] = classad2.ExprTree("MY.JobVMMemory")
    ad.update(extra)
    return ad.printOld()


def _tag(xml: str) -> str:
    return ET.fromstring(xml).find(f"metadata/{{{JOB_NS}}}job").get("tag")


def _console(site, tag: str) -> str:
    return (site.state / "jobs" / tag / "console.log").read_text(errors="replace")


def _qemu_uid() -> int:
    import pwd

    return pwd.getpwnam("libvirt-qemu").pw_uid


def test_a_trusted_image_boots_like_the_gahp_starts_it(site):
    sandbox = site.make_sandbox(USER, 7001)
    _stage(site, sandbox, "busybox", "busybox")
    gahp = condorsim.GahpRun(site, _vm_ad(sandbox, 7001), start=True)
    try:
        script = gahp.event("script")
        assert (script["status"], script["stderr"]) == (0, ""), script
        dom = ET.fromstring(script["xml"])
        tag = _tag(script["xml"])
        assert parse_tag(tag) == Owner(gahp.pid, process_start(gahp.pid))  # the gahp's lifetime
        job_dir = site.state / "jobs" / tag
        disk = dom.find("devices/disk")
        assert disk.find("source").get("file") == f"{job_dir}/overlay.qcow2"
        assert_boots_on_version_of(disk.find("backingStore/source").get("file"), site.image_path("busybox"))
        assert dom.findall("devices/interface") == []  # trusted, and no site bridge here
        assert (dom.find("name").text, dom.find("memory").text, dom.find("vcpu").text) == (
            f"{USER}_7001.0", "256", "1")
        started = gahp.event("started")
        assert started["uri"] == "qemu:///session"
        assert started["qemu_uids"] in ([], [_qemu_uid()] * 3)  # [] only if it was already gone
        gone = gahp.event("gone")
        assert gone["destroyed"] is False  # the guest's init powered it off
        print(f"\nTIMINGS trusted: script {script['seconds']:.2f}s, createXML {started['seconds']:.2f}s, "
              f"createXML->gone {gone['seconds']:.2f}s")
        console = _console(site, tag)
        assert "Linux version" in console and "reboot: Power down" in console, console[-2000:]
        _gc(site)
        assert job_dir.is_dir()  # the gahp still lives: kept
    finally:
        gahp.finish()
    _gc(site)
    assert not job_dir.exists()


def test_an_untrusted_image_boots_behind_the_nat(site):
    from netpolicy import detect, network
    from netpolicy import lease as netlease

    condorsite.wait_for_other_network_tests()
    cfg = site.load_config()
    sandbox = site.make_sandbox(USER, 7002)
    _stage(site, sandbox, "busybox-nat", "disk.qcow2")
    gahp = condorsim.GahpRun(site, _vm_ad(sandbox, 7002, disk="disk.qcow2:vda:w:qcow2"), start=True)
    import libvirt

    conn = libvirt.open("qemu:///system")
    try:
        script = gahp.event("script")
        assert script["status"] == 0, script
        tag = _tag(script["xml"])
        (iface,) = ET.fromstring(script["xml"]).findall("devices/interface")
        assert (iface.get("type"), iface.find("source").get("network")) == ("network", condorsite.NET_NAME)
        mac = iface.find("mac").get("address")
        net = network.lookup_network(conn, condorsite.NET_NAME)
        (res,) = [r for r in network.reservations(net) if r.mac == mac]
        assert network.owner_of_name(res.name) == Owner(gahp.pid, process_start(gahp.pid))
        backend = detect.get_backend(cfg.untrusted_network.backend)
        planned = len(netlease.plan_for(cfg, tag, mac, res.ip).job)  # the job's rules, all of them
        assert planned > 0 and backend.job_rule_count(tag) == planned
        started = gahp.event("started")
        assert started["qemu_uids"] in ([], [_qemu_uid()] * 3)
        gone = gahp.event("gone")
        assert gone["destroyed"] is False
        print(f"\nTIMINGS untrusted: script {script['seconds']:.2f}s, createXML {started['seconds']:.2f}s, "
              f"createXML->gone {gone['seconds']:.2f}s")
        leases = {lease["mac"]: lease["ipaddr"] for lease in net.DHCPLeases()}
        assert leases.get(mac) == res.ip  # the guest's own init got its reserved address
        assert "reboot: Power down" in _console(site, tag)
        _gc(site)
        assert backend.job_rule_count(tag) == planned  # kept while the gahp lives
    finally:
        gahp.finish()
    _gc(site)
    assert backend.job_rule_count(tag) == 0
    assert [r for r in network.reservations(net) if r.mac == mac] == []
    assert not (site.state / "jobs" / tag).exists()
    conn.close()


def test_vcpus_are_clamped_to_the_slot(site):
    sandbox = site.make_sandbox(USER, 7003)
    _stage(site, sandbox, "busybox", "busybox")
    gahp = condorsim.GahpRun(site, _vm_ad(sandbox, 7003, vcpus=4), start=False, cpus=1, memory_mib=512)
    try:
        script = gahp.event("script")
        assert script["status"] == 0, script
        assert ET.fromstring(script["xml"]).find("vcpu").text == "1"
    finally:
        gahp.finish()
    _gc(site)
    assert not (site.state / "jobs" / _tag(script["xml"])).exists()  # gone with the gahp


def test_a_disk_staged_by_the_job_hook(site):
    """PREPARE_JOB (as the user) stages the disk and sets vm_disk; the script takes it."""
    from racf_vm.condor import adio

    sandbox = site.make_sandbox(USER, 7004)
    job = classad2.ClassAd({"MyType": "Job", "JobUniverse": 13, "ClusterId": 7004, "ProcId": 0,
                            "JobVMType": "kvm", "JobVMMemory": 256, "VM_Image": "busybox",
                            "VMPARAM_vm_Disk": "placeholder:vda:w"})
    prepared = condorsim.run_starter_hook(site, "racf-vm-hook-prepare", [],
                                          condorsim.write_ad_files(sandbox, USER, job), user=USER,
                                          sandbox=sandbox)
    assert prepared.returncode == 0, prepared.stderr.decode()
    updates = adio.parse_old_ad(prepared.stdout.decode(), "PREPARE_JOB's output")
    gahp = condorsim.GahpRun(site, _vm_ad(sandbox, 7004, disk=updates["VMPARAM_vm_Disk"],
                                          VM_Image="busybox"), start=False)
    try:
        script = gahp.event("script")
    finally:
        gahp.finish()
    assert script["status"] == 0, script
    dom = ET.fromstring(script["xml"])
    assert_boots_on_version_of(dom.find("devices/disk/backingStore/source").get("file"), site.image_path("busybox"))
    assert dom.find("devices/disk/source").get("file").startswith(f"{site.state}/jobs/")
    _gc(site)
    assert not (site.state / "jobs" / _tag(script["xml"])).exists()


def _user_base_overlay(site, sandbox) -> None:
    """A qcow2 the user made on a base of their own."""
    for argv in (["/usr/bin/qemu-img", "create", "-q", "-f", "qcow2", f"{sandbox}/mybase.qcow2", "64M"],
                 ["/usr/bin/qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                  f"{sandbox}/mybase.qcow2", f"{sandbox}/busybox"]):
        assert condorsite.run_as(USER, argv, env={}, cwd=str(sandbox)).returncode == 0


def _symlink_to_the_base(site, sandbox) -> None:
    import os
    import pwd

    os.symlink(site.image_path("busybox"), sandbox / "busybox")
    pw = pwd.getpwnam(USER)
    os.lchown(sandbox / "busybox", pw.pw_uid, pw.pw_gid)


def _raw_file(site, sandbox) -> None:
    condorsim.write_as_user(sandbox / "busybox", "\0" * 4096, USER)


REFUSALS = {
    # a disk path of the user's choosing, even the catalog's own base file
    "absolute path": (None, {"VMPARAM_vm_Disk": "{base}:vda:w:qcow2"}, 77, "not a file racf-vm staged"),
    "overlay on a user's base": (_user_base_overlay, {}, 77, "mybase.qcow2"),
    "symlink to the base": (_symlink_to_the_base, {}, 77, "a symlink?"),
    "raw file": (_raw_file, {}, 77, "not a qcow2 overlay"),
    "two disks": ("stage", {"VMPARAM_vm_Disk": "busybox:vda:w:qcow2,data.raw:vdb:w:raw"}, 77, "2 disks"),
    "unknown image": ("stage", {"VM_Image": "nosuch"}, 64, "unknown image 'nosuch'"),
    "another image than staged": ("stage", {"VM_Image": "busybox-nat"}, 77, "not on image busybox-nat"),
    "oversized memory": ("stage", {"JobVMMemory": 4096}, 77, "vm_memory 4096 MiB is more than this slot"),
    "missing disk": (None, {}, 64, "not in the job's sandbox"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refusals(site, case):
    make, extra, status, needle = REFUSALS[case]
    number = 7100 + sorted(REFUSALS).index(case)
    sandbox = site.make_sandbox(USER, number)
    if make == "stage":
        _stage(site, sandbox, "busybox", "busybox")
    elif make is not None:
        make(site, sandbox)
    extra = {k: (v.format(base=site.image_path("busybox")) if isinstance(v, str) else v)
             for k, v in extra.items()}
    before = site.job_dirs()
    gahp = condorsim.GahpRun(site, _vm_ad(sandbox, number, **extra), start=False, memory_mib=512)
    try:
        script = gahp.event("script")
    finally:
        gahp.finish()
    assert script["status"] == status and script["xml"] == "", script
    assert script["stderr"].startswith("racf-vm: ") and script["stderr"].count("\n") == 1, script
    assert needle in script["stderr"], script["stderr"]
    assert site.job_dirs() == before  # nothing made, nothing to clean
