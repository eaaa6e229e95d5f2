"""The VM universe's LIBVIRT_XML_SCRIPT without root: the gahp's ad (racf_vm.condor.vmuad),
the staged disk (racf_vm.condor.vmudisk) and the plan (racf_vm.condor.vmuplan), checked
as data; the XML is parsed by libvirt's test driver."""

import os
import struct
import subprocess
import xml.etree.ElementTree as ET

import classad2
import pytest

from racf_vm.condor import vmudisk
from racf_vm.condor.vmuad import VmuRequest, parse_disk_spec, parse_vmu_ad
from racf_vm.condor.vmuplan import VmuInputs, plan_vmu, plan_vmu_size
from racf_vm.config import parse_config
from racf_vm.core.errors import InternalError, RefusedError, UsageError
from racf_vm.core.jobtag import Owner, parse_tag
from racf_vm.images.catalog import BootSpec, Catalog, ContextSpec, ImageEntry
from racf_vm.images.imageheader import BaseImageInfo
from racf_vm.vm.domain_xml import build_domain_xml
from racf_vm.vm.sizing import Slot, SlotLimits

MIB = 1 << 20
QEMU_IMG = "/usr/bin/qemu-img"
SANDBOX = "/var/lib/condor/execute/dir_4242"


def gahp_ad(**over) -> str:
    """The ad condor_vm-gahp writes: the job ad (old syntax, as sPrintAd) and its lines."""
    ad = classad2.ClassAd({
        "MyType": "Job", "TargetType": "Machine", "ClusterId": 77, "ProcId": 3,
        "Owner": "racfjob", "User": "racfjob@example.org", "JobUniverse": 13, "Cmd": "an-instance",
        "JobVMType": "kvm", "JobVMMemory": 256, "JobVM_VCPUS": 2, "JobVMNetworking": True,
        "VMPARAM_vm_Disk": "busybox:vda:w:qcow2", "VMPARAM_No_Output_VM": True,
        "TransferInput": "racfimg://busybox", "VMPARAM_VM_NAME": "racfjob_77.3",
        "VM_WORKING_DIR": SANDBOX,
    })
    ad["RequestMemory"] = classad2.ExprTree("MY.JobVMMemory")
    ad["Requirements"] = classad2.ExprTree('TARGET.HasVM =?= true && TARGET.VM_Type == "kvm"')
    for name, value in over.items():
        if value is None:
            del ad[name]
        else:
            ad[name] = value
    return ad.printOld() + 'VMPARAM_Xen_Bootloader = ""\nVMPARAM_Xen_Initrd = ""\nJobVMNetworkingType = "nat"\n'


def test_the_gahps_ad():
    req = parse_vmu_ad(gahp_ad())
    assert req == VmuRequest(vm_name="racfjob_77.3", working_dir=SANDBOX, memory_mib=256, vcpus=2,
                             disk_file="busybox", image=None, cluster=77, proc=3)
    assert VmuRequest.from_json(req.to_json()) == req
    assert parse_vmu_ad(gahp_ad(VM_Image="busybox", JobVM_VCPUS=None)).image == "busybox"
    assert parse_vmu_ad(gahp_ad(JobVM_VCPUS=None)).vcpus == 1
    # RequestMemory is an expression here: nothing is evaluated, JobVMMemory is required
    with pytest.raises(UsageError, match="JobVMMemory"):
        parse_vmu_ad(gahp_ad(JobVMMemory=None))
    assert parse_vmu_ad(gahp_ad(JobVMMemory=None, RequestMemory=300)).memory_mib == 300


@pytest.mark.parametrize("over, error, needle", [
    ({"VMPARAM_VM_NAME": None}, UsageError, "VMPARAM_VM_NAME"),
    ({"VM_WORKING_DIR": "relative/dir"}, UsageError, "VM_WORKING_DIR"),
    ({"VM_WORKING_DIR": "/a/../etc"}, UsageError, "normalized"),
    ({"VMPARAM_VM_NAME": "racf-vm-slot1-1.0-1-1"}, UsageError, "VM name"),
    ({"VMPARAM_VM_NAME": "a/b"}, UsageError, "VM name"),
    ({"VMPARAM_VM_NAME": "x<y>"}, UsageError, "VM name"),
    ({"JobVMMemory": "512"}, UsageError, "integer"),
    ({"JobVMMemory": 0}, UsageError, "JobVMMemory"),
    ({"JobVM_VCPUS": 0}, UsageError, "JobVM_VCPUS"),
    ({"VM_Image": "../etc"}, UsageError, "invalid image name"),
    ({"VM_Image": 3}, UsageError, "quoted string"),
    ({"VMPARAM_vm_Disk": None}, UsageError, "vm_disk"),
])
def test_bad_ads_are_refused(over, error, needle):
    with pytest.raises(error, match=needle):
        parse_vmu_ad(gahp_ad(**over))


@pytest.mark.parametrize("spec", [
    "/var/lib/racf-vm/images/busybox.qcow2:vda:w:qcow2",  # a path, even the catalog's own
    "../busybox:vda:w", "sub/busybox:vda:w", "/etc/shadow:vda:w:raw",
    "busybox:vda:w:raw", "busybox:vda:w:vmdk",
    "busybox:vda:w,data.raw:vdb:w:raw",  # a second disk of the user's
    ".:vda:w", "..:vda:w",
])
def test_a_disk_of_the_users_choosing_is_refused(spec):
    with pytest.raises(RefusedError, match="racfimg://NAME"):
        parse_disk_spec(spec)


def test_disk_spec_forms():
    assert parse_disk_spec("busybox:vda:w") == "busybox"
    assert parse_disk_spec(" racf-busybox.qcow2 : vda : rw : QCOW2 ") == "racf-busybox.qcow2"
    with pytest.raises(UsageError):
        parse_disk_spec("busybox:vda")


# -- the staged disk ------------------------------------------------------------------

def entry(name: str, path: str, trust: str = "trusted", fmt: str = "qcow2") -> ImageEntry:
    return ImageEntry(name=name, trust=trust, path=path, format=fmt, sha256="ab" * 32,
                      boot=BootSpec("kernel", "/boot/vmlinuz", "/boot/initrd.img", "console=ttyS0"),
                      context=ContextSpec("/dev/sda"))


@pytest.fixture
def images(tmp_path):
    base = tmp_path / "busybox.qcow2"
    other = tmp_path / "user-base.qcow2"
    for path in (base, other):
        subprocess.run([QEMU_IMG, "create", "-q", "-f", "qcow2", str(path), "64M"], check=True)
    raw = tmp_path / "raw.img"
    raw.write_bytes(b"\0" * 4096)
    cat = Catalog({"busybox": entry("busybox", str(base)),
                   "other": entry("other", str(tmp_path / "elsewhere.qcow2"), "untrusted")})
    return tmp_path, cat, base, other, raw


def overlay(tmp_path, name: str, backing, fmt: str = "qcow2") -> bytes:
    path = tmp_path / name
    subprocess.run([QEMU_IMG, "create", "-q", "-f", "qcow2", "-F", fmt, "-b", str(backing), str(path)],
                   check=True)
    return path.read_bytes()[:vmudisk.HEADER_BYTES]


def test_the_overlay_names_its_catalog_image(images):
    tmp, cat, base, _other, _raw = images
    head = overlay(tmp, "staged", base)
    assert vmudisk.identify_image(head, len(head), cat, None, "staged").name == "busybox"
    assert vmudisk.identify_image(head, len(head), cat, "busybox", "staged").name == "busybox"
    with pytest.raises(RefusedError, match="not on image other"):
        vmudisk.identify_image(head, len(head), cat, "other", "staged")
    with pytest.raises(UsageError, match="unknown image"):
        vmudisk.identify_image(head, len(head), cat, "nosuch", "staged")


def test_what_is_not_an_overlay_on_a_catalog_image_is_refused(images):
    tmp, cat, base, other, raw = images
    cases = {
        "on a base of the user's": overlay(tmp, "o1", other),
        "no backing file": base.read_bytes()[:vmudisk.HEADER_BYTES],
        "a raw file": raw.read_bytes(),
        "the catalog's base as raw": overlay(tmp, "o2", base, fmt="raw"),
    }
    for why, head in cases.items():
        with pytest.raises(RefusedError):
            vmudisk.identify_image(head, max(len(head), 1), cat, None, why)


def test_the_overlays_header_is_checked_like_a_layer(images):
    tmp, cat, base, _other, _raw = images
    head = bytearray(overlay(tmp, "o3", base))
    struct.pack_into(">Q", head, 72, 0x04)  # the external data file bit
    with pytest.raises(RefusedError, match="external data file"):
        vmudisk.identify_image(bytes(head), len(head), cat, None, "o3")


def test_two_catalog_images_on_one_file_need_a_name(images):
    tmp, _cat, base, _other, _raw = images
    cat = Catalog({"a": entry("a", str(base)), "b": entry("b", str(base), "untrusted")})
    head = overlay(tmp, "o4", base)
    with pytest.raises(UsageError, match="several"):
        vmudisk.identify_image(head, len(head), cat, None, "o4")
    assert vmudisk.identify_image(head, len(head), cat, "b", "o4").trust == "untrusted"


def test_a_working_dir_outside_the_execute_dir_is_refused(tmp_path):
    for wd in ("/etc", f"{tmp_path}/execute/dir_1/../../x", f"{tmp_path}/execute/other",
               f"{tmp_path}/execute/dir_1/scratch/deeper"):
        with pytest.raises(RefusedError, match="not a sandbox"):
            vmudisk.sandbox_owner(wd, f"{tmp_path}/execute", 1000)


# -- the plan -------------------------------------------------------------------------

CONFIG = parse_config(b"""
[paths]
state_dir = "/var/lib/racf-vm"
[sizing]
memory_per_core_mib = 1024
min_memory_mib = 128
[vm_universe]
console_log = true
""", "test")
BASE = BaseImageInfo("/var/lib/racf-vm/images/busybox.qcow2", "qcow2", 4 * MIB, 64 * MIB, 1, 2, 3)
SLOT = Slot(SlotLimits(memory_bytes=1536 * MIB, cpus=2), host_cpus=8, host_memory_mib=16384)


def inputs(request=None, image=None, config=CONFIG, slot=SLOT) -> VmuInputs:
    return VmuInputs(
        request=request or parse_vmu_ad(gahp_ad()), image=image or entry("busybox", BASE.path),
        base=BASE, slot=slot, config=config, accel="tcg", owner=Owner(4000, 555), script_pid=4100,
        uid=2501, qemu_uid=64055, qemu_gid=107)


def test_size_is_the_jobs_within_the_slot():
    req = parse_vmu_ad(gahp_ad(JobVMMemory=1024, JobVM_VCPUS=8))
    size = plan_vmu_size(req, SLOT, CONFIG.sizing)
    assert (size.memory_mib, size.cpus) == (1024, 2)  # vCPUs clamped to the slot's 2
    # the slot gives a VM 2 CPUs x 1024 MiB, capped by its 1536 MiB: more is refused
    with pytest.raises(RefusedError, match="vm_memory 1537 MiB is more than this slot gives a VM .1536 MiB."):
        plan_vmu_size(parse_vmu_ad(gahp_ad(JobVMMemory=1537)), SLOT, CONFIG.sizing)
    with pytest.raises(UsageError, match="below the site minimum"):
        plan_vmu_size(parse_vmu_ad(gahp_ad(JobVMMemory=64)), SLOT, CONFIG.sizing)
    # no cgroup limit: the site's sizing policy for the cpus it assumes
    unknown = Slot(SlotLimits(None, None), host_cpus=8, host_memory_mib=16384)
    with pytest.raises(RefusedError):
        plan_vmu_size(parse_vmu_ad(gahp_ad(JobVMMemory=2048)), unknown, CONFIG.sizing)


def test_trusted_plan():
    plan = plan_vmu(inputs())
    assert plan.tag == "vmu4100-77.3-4000-555" and parse_tag(plan.tag) == Owner(4000, 555)
    assert plan.job_dir == "/var/lib/racf-vm/jobs/vmu4100-77.3-4000-555"
    d = plan.domain
    assert d.name == "racfjob_77.3" and (d.pid, d.start, d.uid) == (4000, 555, 2501)
    assert (d.memory_mib, d.vcpus, d.channels, d.nics) == (256, 2, (), ())
    (disk,) = d.disks
    assert disk.path == plan.job_dir + "/overlay.qcow2" and disk.format == "qcow2"
    assert [(b.path, b.format) for b in disk.backing] == [(BASE.path, "qcow2")]
    assert d.console_log == plan.job_dir + "/console.log"
    assert plan.network == "none" and plan.ready_to_boot


def test_untrusted_plan_waits_for_its_mac():
    plan = plan_vmu(inputs(image=entry("busybox", BASE.path, "untrusted")))
    assert plan.network == "untrusted" and not plan.ready_to_boot
    assert [(n.kind, n.source) for n in plan.domain.nics] == [("network", "racf-untrusted")]
    ready = plan.with_mac("02:72:66:00:00:09")
    assert ready.ready_to_boot and ready.domain.nics[0].mac == "02:72:66:00:00:09"
    with pytest.raises(InternalError):
        plan_vmu(inputs()).with_mac("02:72:66:00:00:09")


def test_trusted_bridge_and_no_console():
    cfg = parse_config(b'[network]\ntrusted_bridge = "br0"\n[sizing]\nmemory_per_core_mib = 1024\n', "t")
    plan = plan_vmu(inputs(config=cfg))
    assert [(n.kind, n.source) for n in plan.domain.nics] == [("bridge", "br0")]
    assert plan.domain.console_log is None


def test_the_xml_has_only_what_root_chose():
    """No path from the job in the XML: the disk is root's overlay on the catalog base,
    the boot files are the catalog's; libvirt (test driver) accepts it."""
    import libvirt

    plan = plan_vmu(inputs(image=entry("busybox", BASE.path, "untrusted"))).with_mac("02:72:66:00:00:09")
    xml = build_domain_xml(plan.domain)
    root = ET.fromstring(xml)
    files = {e.get("file") for e in root.iter("source") if e.get("file")}
    assert files == {plan.job_dir + "/overlay.qcow2", BASE.path}
    assert SANDBOX not in xml
    assert root.find("devices/serial/source").get("path") == plan.job_dir + "/console.log"
    assert root.find("seclabel").get("relabel") == "no"
    assert root.find("on_poweroff").text == "destroy"
    conn = libvirt.open("test:///default")
    try:
        dom = conn.createXML(xml, 0)
        assert dom.name() == "racfjob_77.3"
        dom.destroy()
    finally:
        conn.close()


def test_tag_stays_a_job_tag_for_odd_cluster_values():
    req = parse_vmu_ad(gahp_ad(ClusterId=123456789012, ProcId=0))
    plan = plan_vmu(inputs(request=req))
    assert parse_tag(plan.tag) == Owner(4000, 555)
    assert os.path.basename(plan.job_dir) == plan.tag
