"""racf_vm.job.plan: every decision about one job, checked without root."""

import dataclasses
import xml.etree.ElementTree as ET

import pytest

from racf_vm.condor.request import JobRequest
from racf_vm.config import parse_config
from racf_vm.core.errors import InternalError, RefusedError
from racf_vm.core.jobtag import Owner
from racf_vm.images.catalog import BootSpec, ContextSpec, ImageEntry
from racf_vm.images.imageheader import BaseImageInfo
from racf_vm.job import plan as planner
from racf_vm.vm.domain_xml import BootloaderBoot, KernelBoot, build_domain_xml
from racf_vm.vm.sizing import Slot, SlotLimits

GIB = 1 << 30

REQUEST = JobRequest(
    image="busybox", command="/bin/sh", args=("-c", "echo hi"), env=(("A", "1"),), user="racfjob",
    uid=2501, gid=2501, workdir="/var/lib/condor/execute/dir_7", slot="slot1_2", cluster=12, proc=3,
)
IMAGE = ImageEntry(
    name="busybox", trust="trusted", path="/var/lib/racf-vm/images/busybox.qcow2", format="qcow2",
    sha256="ab" * 32,
    boot=BootSpec("kernel", "/var/lib/racf-vm/images/vmlinux", "/var/lib/racf-vm/images/initrd",
                  "console=ttyS0"),
    context=ContextSpec("/dev/sda"),
)
BASE = BaseImageInfo(IMAGE.path, "qcow2", 1 << 20, 1 << 30, 1, 2, 3)
LAYER = BaseImageInfo("/var/lib/racf-vm/prepared/busybox-abab-cdcd-rclocal.qcow2", "qcow2",
                      1 << 16, 1 << 30, 1, 4, 5, backing=(IMAGE.path, "qcow2"))
SLOT = Slot(SlotLimits(memory_bytes=4 * GIB, cpus=2), host_cpus=8, host_memory_mib=24576)


def inputs(config=b"", **over):
    fields = dict(request=REQUEST, image=IMAGE, base=BASE, layer=LAYER, slot=SLOT,
                  config=parse_config(config, "test.toml"), accel="tcg",
                  owner=Owner(4242, 99), qemu_uid=64055, qemu_gid=64055)
    fields.update(over)
    return planner.PlanInputs(**fields)


def test_names_and_paths_come_from_the_tag():
    p = planner.plan_job(inputs())
    assert p.tag == "slot1_2-12.3-4242-99"
    assert p.job_dir == "/var/lib/racf-vm/jobs/slot1_2-12.3-4242-99"
    assert p.domain.name == "racf-vm-" + p.tag
    assert (p.domain.pid, p.domain.start, p.domain.uid) == (4242, 99, 2501)
    assert p.root_disk.path == p.job_dir + "/overlay.qcow2"
    assert p.context_disk.path == p.job_dir + "/context.img" and p.output_tar == p.job_dir + "/output.tar"


def test_root_disk_is_an_overlay_on_the_prepared_layer_on_the_verified_base():
    p = planner.plan_job(inputs())
    disk = p.root_disk
    assert (disk.role, disk.format, disk.target, disk.readonly) == ("root", "qcow2", "vda", False)
    assert [(b.path, b.format) for b in disk.backing] == [(LAYER.path, "qcow2"), (BASE.path, "qcow2")]
    assert p.chain == (LAYER, BASE)  # both re-checked before boot


def test_the_context_comes_on_a_read_only_raw_disk_found_by_its_serial():
    ctx = planner.plan_job(inputs()).context_disk
    assert (ctx.role, ctx.format, ctx.target, ctx.readonly, ctx.serial, ctx.backing) == (
        "context", "raw", "vdb", True, "racf-context", ())


def test_size_comes_from_the_slot_and_hints_only_lower_it():
    cfg = b"[sizing]\nmemory_per_core_mib = 1024\n"
    p = planner.plan_job(inputs(cfg))
    assert (p.size.cpus, p.size.memory_mib) == (2, 2048)
    assert (p.domain.vcpus, p.domain.memory_mib) == (2, 2048)
    lower = dataclasses.replace(REQUEST, machine_hint_cpus=1, machine_hint_memory_mib=700)
    assert planner.plan_job(inputs(cfg, request=lower)).size == type(p.size)(1, 700)
    higher = dataclasses.replace(REQUEST, machine_hint_cpus=6, machine_hint_memory_mib=99999)
    assert planner.plan_job(inputs(cfg, request=higher)).size == p.size
    tiny = Slot(SlotLimits(memory_bytes=64 << 20, cpus=1), 8, 24576)
    with pytest.raises(RefusedError, match="slot too small"):
        planner.plan_job(inputs(slot=tiny))


def test_trusted_image_without_a_site_bridge_has_no_nic():
    p = planner.plan_job(inputs())
    assert (p.network, p.domain.nics, p.ready_to_boot) == ("none", (), True)
    with pytest.raises(InternalError):
        p.with_mac("02:72:66:00:00:01")


def test_trusted_image_joins_the_site_bridge_with_its_owners_mac():
    p = planner.plan_job(inputs(b'[network]\ntrusted_bridge = "br0"\n'))
    assert p.network == "bridge" and p.ready_to_boot
    # the default prefix and the wrapper's pid (4242 = 0x001092) as the seat
    assert [(n.kind, n.source, n.mac) for n in p.domain.nics] == [("bridge", "br0", "02:72:74:00:10:92")]
    assert '<mac address="02:72:74:00:10:92" />' in build_domain_xml(p.domain)
    # a site reservation replaces it with the pool's MAC
    reserved = p.with_mac("02:72:74:80:00:05")
    assert [(n.kind, n.source, n.mac) for n in reserved.domain.nics] == [("bridge", "br0", "02:72:74:80:00:05")]


def test_untrusted_image_only_ever_gets_the_nat_network():
    untrusted = dataclasses.replace(IMAGE, trust="untrusted")
    p = planner.plan_job(inputs(b'[network]\ntrusted_bridge = "br0"\n', image=untrusted))
    assert p.network == "untrusted"
    assert [(n.kind, n.source) for n in p.domain.nics] == [("network", "racf-untrusted")]
    assert not p.ready_to_boot  # no MAC before the lease
    leased = p.with_mac("02:72:66:aa:bb:cc")
    assert leased.ready_to_boot and leased.domain.nics[0].mac == "02:72:66:aa:bb:cc"
    assert p.domain.nics[0].mac is None  # plans are values


def test_accelerator_decides_the_domain_type():
    tcg = planner.plan_job(inputs())
    kvm = planner.plan_job(inputs(accel="kvm"))
    assert tcg.domain.domain_type == "qemu" and kvm.domain.domain_type == "kvm"
    assert ET.fromstring(build_domain_xml(kvm.domain)).find("cpu").get("mode") == "host-passthrough"


def test_boot_method_from_the_catalog():
    assert planner.plan_job(inputs()).domain.boot == KernelBoot(
        "/var/lib/racf-vm/images/vmlinux", "/var/lib/racf-vm/images/initrd", "console=ttyS0")
    own = dataclasses.replace(IMAGE, boot=BootSpec("bootloader"))
    assert planner.plan_job(inputs(image=own)).domain.boot == BootloaderBoot()


def test_paths_and_timeouts_come_from_the_config():
    p = planner.plan_job(inputs(b'[paths]\nstate_dir = "/srv/racf"\n[timeouts]\njob = 60\n'))
    assert p.timeouts.job == 60 and p.job_dir.startswith("/srv/racf/jobs/")


def test_untrusted_images_get_no_credentials_unless_the_catalog_says_so():
    creds = (("A", "1"), ("X509_USER_PROXY", "/s/x509up_u2501"), ("_CONDOR_CREDS", "/s/.condor_creds"),
             ("BEARER_TOKEN_FILE", "/s/t"), ("KRB5CCNAME", "FILE:/tmp/krb5cc_2501"))
    req = dataclasses.replace(REQUEST, env=creds)
    untrusted = dataclasses.replace(IMAGE, trust="untrusted", credentials=False)
    p = planner.plan_job(inputs(request=req, image=untrusted))
    assert p.guest_request.env == (("A", "1"),) and p.withhold_credentials
    allowed = dataclasses.replace(untrusted, credentials=True)
    p = planner.plan_job(inputs(request=req, image=allowed))
    assert p.guest_request.env == creds and not p.withhold_credentials


@pytest.mark.parametrize("mode", ["ro", "rw"])
def test_libvirt_gets_only_paths_root_controls(mode):
    """Issue 12 item 2: the user's data file is copied by root into the job directory; the
    domain names that copy (or an overlay on it), never a path in the user's sandbox."""
    req = dataclasses.replace(REQUEST, scratch_bytes=GIB, scratch_path="/scratch", data_file="in.qcow2",
                              data_path="/data", data_mode=mode, data_format="qcow2", data_bytes=GIB,
                              export_scratch=True)
    p = planner.plan_job(inputs(request=req))
    xml = ET.fromstring(build_domain_xml(p.domain))
    sources = [e.get("file") for e in xml.iter("source") if e.get("file")]
    assert len(sources) >= 5  # root, its layer and base, context, scratch, data (+ its copy)
    root_owned = (p.job_dir + "/", "/var/lib/racf-vm/")
    assert all(s.startswith(root_owned) for s in sources), sources
    assert not any(s.startswith(REQUEST.workdir) for s in sources), sources
    assert p.storage.data_copy.source == "in.qcow2"  # read (as the user) from the sandbox by name only
