"""racf_vm.vm.domain_xml: structure, escaping, and acceptance by libvirt's test driver."""

import dataclasses
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from racf_vm.core.errors import InternalError
from racf_vm.guest.protocol import CHANNEL_NAMES
from racf_vm.vm.domain_xml import (
    JOB_NS,
    BootloaderBoot,
    DomainSpec,
    KernelBoot,
    build_domain_xml,
    parse_job_metadata,
)
from tests.support import prereq
from tests.support.specs import job_spec

TEST_NODE = Path(__file__).parent / "data" / "libvirt-test-node.xml"
HOSTILE = "x<y>&z\"q'"


def spec(**over) -> DomainSpec:
    return job_spec(**over)


def tree(s: DomainSpec) -> ET.Element:
    return ET.fromstring(build_domain_xml(s))


def test_top_level_structure():
    root = tree(spec())
    assert root.tag == "domain" and root.get("type") == "qemu"
    assert root.findtext("name") == "racf-vm-slot1-12.0-4242-99"
    assert root.find("memory").text == "512" and root.find("memory").get("unit") == "MiB"
    assert root.findtext("vcpu") == "2"
    assert root.find("features/acpi") is not None
    for ev in ("on_poweroff", "on_reboot", "on_crash"):
        assert root.findtext(ev) == "destroy"
    assert root.find("cpu") is None  # TCG: no host-passthrough
    os_el = root.find("os")
    assert os_el.find("type").get("machine") == "pc"
    assert os_el.findtext("kernel") == "/boot/vmlinuz"
    assert os_el.findtext("initrd") == "/boot/initrd.img"
    assert os_el.findtext("cmdline") == "console=ttyS0 quiet"


def test_kvm_uses_host_passthrough():
    root = tree(spec(domain_type="kvm"))
    assert root.get("type") == "kvm"
    assert root.find("cpu").get("mode") == "host-passthrough"


def test_bootloader_boot():
    root = tree(spec(boot=BootloaderBoot()))
    assert root.find("os/kernel") is None
    assert root.find("os/boot").get("dev") == "hd"


def test_seclabel_static_dac_no_relabel():
    labels = tree(spec()).findall("seclabel")
    assert len(labels) == 1
    sl = labels[0]
    assert (sl.get("type"), sl.get("model"), sl.get("relabel")) == ("static", "dac", "no")
    assert sl.findtext("label") == "+64055:+64055"


def test_disk_and_backing_chain():
    disks = tree(spec()).findall("devices/disk")
    assert len(disks) == 1
    d = disks[0]
    assert d.get("type") == "file" and d.get("device") == "disk"
    assert d.find("driver").get("type") == "qcow2"
    assert d.find("source").get("file") == "/var/lib/racf-vm/jobs/t/overlay.qcow2"
    bs = d.find("backingStore")
    assert bs.get("type") == "file"
    assert bs.find("format").get("type") == "qcow2"
    assert bs.find("source").get("file") == "/var/lib/racf-vm/images/base.qcow2"
    end = bs.find("backingStore")
    assert end is not None and len(end) == 0 and not end.attrib
    assert d.find("target").get("dev") == "vda"


def test_raw_base_format_is_explicit():
    d = tree(spec(base_format="raw")).find("devices/disk")
    assert d.find("driver").get("type") == "qcow2"  # the overlay is always qcow2
    assert d.find("backingStore/format").get("type") == "raw"


def test_channels():
    chans = tree(spec()).findall("devices/channel")
    assert [c.find("target").get("name") for c in chans] == list(CHANNEL_NAMES)
    for c in chans:
        assert c.get("type") == "unix"
        src = c.find("source")
        assert src.get("mode") == "bind" and src.get("path") is None
        assert c.find("target").get("type") == "virtio"
    assert tree(spec()).find("devices/controller[@type='virtio-serial']") is not None



def test_no_channels_no_virtio_serial():
    """A VM-universe guest runs its own init: no ports, and no controller for them."""
    root = tree(spec(channels=()))
    assert root.findall("devices/channel") == []
    assert root.find("devices/controller[@type='virtio-serial']") is None

def test_no_graphics_usb_balloon_network_by_default():
    dev = tree(spec()).find("devices")
    assert dev.find("graphics") is None and dev.find("video") is None
    assert dev.find("controller[@type='usb']").get("model") == "none"
    assert dev.find("memballoon").get("model") == "none"
    assert dev.find("interface") is None
    assert dev.find("serial").get("type") == "pty"
    assert dev.findtext("emulator") == "/usr/bin/qemu-system-x86_64"


def test_bridge_and_console_log():
    dev = tree(spec(bridge="racfbr0", console_log="/var/lib/racf-vm/jobs/t/console.log")).find("devices")
    iface = dev.find("interface")
    assert iface.get("type") == "bridge" and iface.find("source").get("bridge") == "racfbr0"
    assert iface.find("model").get("type") == "virtio"
    ser = dev.find("serial")
    assert ser.get("type") == "file"
    assert ser.find("source").get("path") == "/var/lib/racf-vm/jobs/t/console.log"


def test_metadata_roundtrip():
    xml = build_domain_xml(spec())
    job = ET.fromstring(xml).find(f"metadata/{{{JOB_NS}}}job")
    assert job.attrib == {"tag": "slot1-12.0-4242-99", "pid": "4242", "start": "99", "uid": "2501"}
    assert 'xmlns:racf="urn:racf-vm:job:1"' in xml and "<racf:job" in xml
    assert parse_job_metadata(xml) == {"tag": "slot1-12.0-4242-99", "pid": 4242, "start": 99, "uid": 2501}


@pytest.mark.parametrize(
    "xml",
    [
        "",
        "<domain",
        "<domain><name>x</name></domain>",
        f'<domain><metadata><j:job xmlns:j="{JOB_NS}" tag="t" pid="x" start="1" uid="1"/></metadata></domain>',
        f'<domain><metadata><j:job xmlns:j="{JOB_NS}" pid="1" start="1" uid="1"/></metadata></domain>',
        '<domain><metadata><j:job xmlns:j="urn:other" tag="t" pid="1" start="1" uid="1"/></metadata></domain>',
        f'<domain><metadata><j:job xmlns:j="{JOB_NS}" tag="t" pid="-1" start="1" uid="1"/></metadata></domain>',
    ],
)
def test_parse_job_metadata_rejects(xml):
    assert parse_job_metadata(xml) is None


def test_hostile_values_are_escaped():
    s = spec(
        name="racf-vm-" + HOSTILE,
        tag=HOSTILE,
        overlay_path="/j/" + HOSTILE + "/overlay.qcow2",
        base_path="/i/" + HOSTILE,
        boot=KernelBoot("/k/" + HOSTILE, None, "a=" + HOSTILE + " ]]>"),
        channels=("org." + HOSTILE,),
        bridge="br" + HOSTILE,
    )
    xml = build_domain_xml(s)
    root = ET.fromstring(xml)  # still well-formed
    assert root.findtext("name") == "racf-vm-" + HOSTILE
    assert root.find("devices/disk/source").get("file") == "/j/" + HOSTILE + "/overlay.qcow2"
    assert root.find("devices/disk/backingStore/source").get("file") == "/i/" + HOSTILE
    assert root.findtext("os/kernel") == "/k/" + HOSTILE
    assert root.findtext("os/cmdline") == "a=" + HOSTILE + " ]]>"
    assert root.find("devices/channel/target").get("name") == "org." + HOSTILE
    assert parse_job_metadata(xml)["tag"] == HOSTILE
    # Exactly one element of each injectable kind: no value created structure.
    assert len(root.findall("devices/disk")) == 1
    assert len(root.findall("seclabel")) == 1
    assert len(root.findall(".//qemu:commandline", {"qemu": "http://libvirt.org/schemas/domain/qemu/1.0"})) == 0


@pytest.mark.parametrize(
    "over",
    [
        {"name": "a\x00b"},
        {"tag": "t\x1b[0m"},
        {"overlay_path": "relative/overlay.qcow2"},
        {"base_path": ""},
        {"domain_type": "xen"},
        {"base_format": "vmdk"},
        {"memory_mib": 0},
        {"vcpus": 0},
        {"qemu_uid": 0},
        {"pid": True},
        {"channels": ("org.a", "org.a")},
        {"boot": KernelBoot("/k", None, "x\x07")},
    ],
)
def test_invalid_specs_rejected(over):
    with pytest.raises(InternalError):
        spec(**over)


def test_spec_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec().name = "other"  # type: ignore[misc]


def _test_conn():
    libvirt = prereq.require_module("libvirt", "the Debian package python3-libvirt")
    libvirt.registerErrorHandler(lambda *_: None, None)
    return libvirt, libvirt.open(f"test://{TEST_NODE.resolve()}")


@pytest.mark.parametrize("domain_type", ["qemu", "kvm"])
@pytest.mark.parametrize("boot", [KernelBoot("/boot/vmlinuz", "/boot/initrd.img", "console=ttyS0"), BootloaderBoot()])
def test_libvirt_test_driver_accepts_xml(domain_type, boot):
    libvirt, conn = _test_conn()
    try:
        s = spec(domain_type=domain_type, boot=boot, bridge="virbr9", console_log="/tmp/c.log")
        dom = conn.defineXML(build_domain_xml(s))
        back = dom.XMLDesc(0)
        assert parse_job_metadata(back) == {"tag": s.tag, "pid": s.pid, "start": s.start, "uid": s.uid}
        root = ET.fromstring(back)
        assert root.find("features/acpi") is not None
        assert root.find("seclabel").get("relabel") == "no"
        assert root.find("devices/disk/backingStore/format").get("type") == "qcow2"
        assert len(root.findall("devices/channel")) == 4
        dom.undefine()
    finally:
        conn.close()


def test_libvirt_test_driver_creates_transient_domain_with_hostile_values():
    libvirt, conn = _test_conn()
    try:
        s = spec(name="racf-vm-" + HOSTILE, tag=HOSTILE, base_path="/i/" + HOSTILE)
        dom = conn.createXML(build_domain_xml(s), 0)
        assert dom.isActive() and not dom.isPersistent()
        back = ET.fromstring(dom.XMLDesc(0))
        assert back.findtext("name") == "racf-vm-" + HOSTILE
        assert back.find("devices/disk/backingStore/source").get("file") == "/i/" + HOSTILE
        dom.destroy()
    finally:
        conn.close()


def test_disks_of_every_role_each_with_its_own_element():
    from racf_vm.vm.devices import BackingFile, Disk

    root = Disk("root", "/j/overlay.qcow2", "qcow2", "vda",
                backing=(BackingFile("/i/prepared.qcow2", "qcow2"), BackingFile("/i/base.img", "raw")))
    ctx = Disk("context", "/j/context.img", "raw", "vdb", readonly=True, serial="racf-context")
    devices = tree(spec(disks=(root, ctx))).find("devices")
    first, second = devices.findall("disk")
    chain = first.find("backingStore")
    assert (chain.find("format").get("type"), chain.find("source").get("file")) == ("qcow2", "/i/prepared.qcow2")
    inner = chain.find("backingStore")
    assert (inner.find("format").get("type"), inner.find("source").get("file")) == ("raw", "/i/base.img")
    assert list(inner.find("backingStore")) == [] and inner.find("backingStore").attrib == {}
    assert second.find("driver").get("type") == "raw" and second.find("readonly") is not None
    assert second.findtext("serial") == "racf-context" and second.find("backingStore") is None
    assert second.find("driver").get("discard") is None


@pytest.mark.parametrize("disks, words", [
    ((), "needs a disk"),
    (("dup",), "targets must be unique"),
    (("rawbacked",), "only a qcow2 disk"),
    (("badserial",), "bad disk serial"),
])
def test_bad_disks_are_refused(disks, words):
    from racf_vm.vm.devices import BackingFile, Disk

    made = {
        "dup": (Disk("root", "/a", "qcow2", "vda"), Disk("data", "/b", "raw", "vda")),
        "rawbacked": (Disk("root", "/a", "raw", "vda", backing=(BackingFile("/b", "raw"),)),),
        "badserial": (Disk("root", "/a", "qcow2", "vda", serial="x y<"),),
    }
    chosen = made[disks[0]] if disks else ()
    with pytest.raises(InternalError, match=words):
        spec(disks=chosen)


def test_bridge_and_nat_network_never_together():
    from racf_vm.vm.devices import Nic

    with pytest.raises(InternalError, match="never both"):
        spec(nics=(Nic("bridge", "br0"), Nic("network", "racf-untrusted", "02:72:66:00:00:01")))
