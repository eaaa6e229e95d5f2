"""Boot a tiny guest through qemu:///system with the project's own modules.

domain_xml (XML) + imageheader/overlay (base, job dir, overlay) + domain (libvirt) +
channels (virtio-serial sockets). Also: autodestroy when the owning process is SIGKILLed,
and libvirt never chowns the base image (seclabel relabel='no').
"""

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

from racf_vm.guest.channels import GuestChannels
from racf_vm.images.imageheader import validate_base_image
from racf_vm.vm import accel, disks, domain, workspace
from racf_vm.vm.domain_xml import DomainSpec, KernelBoot, build_domain_xml
from tests.support import prereq, tinyguest
from tests.support.specs import job_spec

pytestmark = [pytest.mark.vm, pytest.mark.root]

EMULATOR = "/usr/bin/qemu-system-x86_64"
QEMU_IMG = "/usr/bin/qemu-img"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _qemu_ids() -> tuple[int, int]:
    pw = pwd.getpwnam("libvirt-qemu")
    return pw.pw_uid, pw.pw_gid


@pytest.fixture(scope="module")
def site(libvirtd):
    prereq.require_file(EMULATOR, "qemu-system-x86")
    kernel = tinyguest.kernel()  # fails naming linux-image-amd64 when there is none
    root = tempfile.mkdtemp(prefix="racf-itest-", dir="/run")
    os.chmod(root, 0o755)
    images = os.path.join(root, "images")
    os.mkdir(images, 0o755)
    initrd = tinyguest.build_initramfs(os.path.join(images, "initrd.img"))
    base = os.path.join(images, "base.qcow2")
    subprocess.run([QEMU_IMG, "create", "-q", "-f", "qcow2", base, "64M"], check=True)
    os.chmod(base, 0o644)
    state = os.path.join(root, "state")
    os.mkdir(state, 0o711)
    accelerator = accel.choose_accel("auto", state, EMULATOR)
    yield {"root": root, "base": base, "kernel": kernel, "initrd": initrd, "state": state,
           "uri": libvirtd, "accel": accelerator}
    shutil.rmtree(root, ignore_errors=True)


def _spec(site, tag: str, cmdline: str, domain_type: str) -> DomainSpec:
    info = validate_base_image(site["base"], "qcow2")
    job_dir = workspace.make_job_dir(site["state"], tag)
    uid, gid = _qemu_ids()
    ov = disks.create_overlay(job_dir, info.path, info.format, uid, gid)
    return job_spec(
        name=f"racf-vm-{tag}", tag=tag, pid=os.getpid(), start=1, uid=0,
        domain_type=domain_type, memory_mib=256, vcpus=1, emulator=EMULATOR,
        overlay_path=ov, base_path=info.path, base_format=info.format,
        boot=KernelBoot(site["kernel"], site["initrd"], cmdline),
        qemu_uid=uid, qemu_gid=gid,
        console_log=os.path.join(job_dir, "console.log"),
    )


def _base_state(path: str) -> tuple:
    st = os.stat(path)
    xattrs = tuple(sorted(os.listxattr(path)))
    return (st.st_uid, st.st_gid, st.st_mode, xattrs)


def test_accelerator_decision_matches_the_machine(site):
    """The probe's answer holds through libvirt too: where it chose TCG although /dev/kvm
    exists, a KVM domain must not boot the guest (otherwise the probe wrongly gave up KVM)."""
    if site["accel"] == "kvm":
        assert os.path.exists("/dev/kvm")
        return  # test_boot_channels_and_teardown[kvm] boots the KVM path
    if not os.path.exists("/dev/kvm"):
        return
    spec = _spec(site, "kvmcheck-1.0-1-1", "console=ttyS0 panic=-1", "kvm")
    conn = domain.open_connection(site["uri"], timeout=10)
    status = []
    try:
        try:
            dom = domain.start_domain(conn, build_domain_xml(spec))
        except Exception as exc:  # QEMU refused to start with KVM: consistent with "tcg"
            print(f"\nKVM domain refused: {exc}")
            return
        try:
            with GuestChannels(domain.channel_socket_paths(dom)) as ch:
                ch.connect(timeout=10)
                deadline = time.monotonic() + 60
                while not status and time.monotonic() < deadline and dom.isActive():
                    ch.pump(min(deadline, time.monotonic() + 1), lambda b: None, lambda b: None,
                            None, status.append)
        except Exception as exc:  # QEMU died under KVM: consistent with "tcg"
            print(f"\nKVM domain died: {exc}")
        finally:
            domain.destroy(dom)
    finally:
        domain.close_connection(conn)
    assert not status, "a KVM domain booted the guest although the probe chose TCG"


@pytest.mark.parametrize("domain_type", ["qemu", "kvm"])
def test_boot_channels_and_teardown(site, domain_type):
    if domain_type == "kvm" and site["accel"] != "kvm":
        prereq.machine_skip("kvm-unusable")
    base_before = _base_state(site["base"])
    spec = _spec(site, f"boot{domain_type}-1.0-1-1", "console=ttyS0 panic=-1", domain_type)
    conn = domain.open_connection(site["uri"], timeout=10)
    try:
        t0 = time.monotonic()
        dom = domain.start_domain(conn, build_domain_xml(spec))
        t_created = time.monotonic()
        try:
            paths = domain.channel_socket_paths(dom)
            assert sorted(paths) == sorted(spec.channels)
            for p in paths.values():
                assert p.startswith("/var/lib/libvirt/qemu/channel/target/")
            assert (spec.name, {"tag": spec.tag, "pid": spec.pid, "start": 1, "uid": 0}) in domain.list_job_domains(conn)
            out, err, status = bytearray(), bytearray(), []
            sink = tempfile.TemporaryFile()
            with GuestChannels(paths, max_output_bytes=1000) as ch:
                ch.connect(timeout=10)
                result = ch.pump(time.monotonic() + 120, out.extend, err.extend, sink, status.append)
            t_eof = time.monotonic()
            assert result.reason == "eof", open(spec.console_log, errors="replace").read()[-3000:]
            assert bytes(out) == tinyguest.GUEST_STDOUT
            assert bytes(err) == tinyguest.GUEST_STDERR
            assert [(s.kind, s.code) for s in status] == [("started", None), ("exit", tinyguest.GUEST_EXIT)]
            assert result.output_overflow and result.output_bytes == 1000  # 1200 bytes sent, capped
            sink.seek(0)
            assert sink.read() == tinyguest.GUEST_OUTPUT[:1000]
            assert domain.wait_gone(conn, spec.name, timeout=30)
            t_gone = time.monotonic()
        finally:
            domain.destroy(dom)
        domain.destroy(dom)  # idempotent
        domain.request_shutdown(dom)  # ignored when gone
    finally:
        domain.close_connection(conn)
    assert _base_state(site["base"]) == base_before  # libvirt chowned/labelled nothing
    st = os.stat(spec.disks[0].path)
    assert (st.st_uid, st.st_gid) == _qemu_ids()
    print(
        f"\nTIMINGS createXML {t_created - t0:.3f}s, createXML->channels EOF {t_eof - t0:.2f}s, "
        f"createXML->domain gone {t_gone - t0:.2f}s, EOF->gone {t_gone - t_eof:.2f}s"
    )


CHILD = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {repo!r})
    from racf_vm.vm import domain
    conn = domain.open_connection({uri!r}, timeout=10)
    domain.start_domain(conn, open({xml!r}).read())
    print("created", flush=True)
    time.sleep(600)
    """
)


def test_autodestroy_on_sigkill(site):
    spec = _spec(site, "kill-1.0-1-1", "console=ttyS0 panic=-1 racftest=hang", "qemu")
    xml_path = os.path.join(site["root"], "kill.xml")
    with open(xml_path, "w") as f:
        f.write(build_domain_xml(spec))
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(repo=REPO, uri=site["uri"], xml=xml_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    conn = domain.open_connection(site["uri"], timeout=10)
    try:
        line = child.stdout.readline()
        assert line == "created\n", child.stderr.read()
        dom = conn.lookupByName(spec.name)
        paths = domain.channel_socket_paths(dom)
        status = []
        with GuestChannels(paths) as ch:  # wait until the guest runs (then hangs)
            ch.connect(timeout=10)
            deadline = time.monotonic() + 120
            while not status and time.monotonic() < deadline:
                ch.pump(min(deadline, time.monotonic() + 1), lambda b: None, lambda b: None, None, status.append)
            assert [s.kind for s in status] == ["started"]
            assert dom.isActive()
            t0 = time.monotonic()
            child.send_signal(signal.SIGKILL)
            child.wait(10)
            gone = domain.wait_gone(conn, spec.name, timeout=15)
            t_gone = time.monotonic() - t0
        if not gone:
            domain.destroy(dom)
        assert gone, "autodestroy did not remove the domain"
        print(f"\nTIMINGS SIGKILL->domain gone {t_gone:.2f}s")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        domain.close_connection(conn)


def test_interrupt_and_shutdown_request(site):
    """The caller's wakeup fd interrupts pump; an ACPI shutdown request powers a hung guest off."""
    spec = _spec(site, "term-1.0-1-1", "console=ttyS0 panic=-1 racftest=hang", "qemu")
    conn = domain.open_connection(site["uri"], timeout=10)
    try:
        dom = domain.start_domain(conn, build_domain_xml(spec))
        try:
            status = []
            with GuestChannels(domain.channel_socket_paths(dom)) as ch:
                ch.connect(timeout=10)
                deadline = time.monotonic() + 120
                while not status and time.monotonic() < deadline:
                    ch.pump(min(deadline, time.monotonic() + 1), lambda b: None, lambda b: None, None, status.append)
                assert status, "the hanging guest never reported its status"
                os.write(ch.wakeup_fd, b"T")  # what a SIGTERM handler does
                assert ch.pump(time.monotonic() + 30, print, print, None, status.append).reason == "interrupted"
                domain.request_shutdown(dom)  # busybox init-less guest: no acpid, so destroy
                t0 = time.monotonic()
                domain.destroy(dom)
                assert ch.pump(time.monotonic() + 30, print, print, None, status.append).reason == "eof"
            assert domain.wait_gone(conn, spec.name, timeout=15)
            print(f"\nTIMINGS destroy->gone {time.monotonic() - t0:.2f}s")
        finally:
            domain.destroy(dom)
    finally:
        domain.close_connection(conn)


def test_unreachable_libvirtd_is_temporary():
    from racf_vm.core.errors import TemporaryError

    with pytest.raises(TemporaryError, match="not reachable"):
        domain.open_connection("qemu+unix:///system?socket=/nonexistent/sock", timeout=5)
