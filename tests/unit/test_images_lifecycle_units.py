"""Pure parts of the image lifecycle (issue 14): follow entries, the catalog writer, the
maintenance layer's files and plan, the sync plan's local images, /proc/locks parsing."""

import dataclasses
import os

import pytest

from racf_vm.config import parse_config
from racf_vm.core import jobtag
from racf_vm.core.errors import ConfigError
from racf_vm.guest import install
from racf_vm.images import prepare
from racf_vm.images.catalog import BootSpec, ContextSpec, ImageEntry, parse_image_entry
from racf_vm.images.catalogwrite import check_template, render_entry, toml_string
from racf_vm.images.checksums import RemoteImage
from racf_vm.images.imageheader import BaseImageInfo
from racf_vm.images.status import shared_flocks
from racf_vm.images.syncplan import LocalImage, plan_sync
from racf_vm.job.maintplan import MaintenanceInputs, plan_maintenance

SHA = "ab" * 32
ENTRY = """name = "img"
trust = "trusted"
path = "/var/lib/racf-vm/images/img.qcow2"
format = "qcow2"
sha256 = "{sha}"
{extra}
[boot]
method = "bootloader"

[context]
filesystem = "/dev/sda1"
"""


def _parse(sha, extra=""):
    return parse_image_entry(ENTRY.format(sha=sha, extra=extra).encode(), "/c/img.toml")


def test_follow_entries():
    e = _parse("follow")
    assert e.follow and e.sha256 == "" and not e.checksum_is_placeholder and not e.pinned
    assert _parse(SHA).pinned and _parse(SHA).sha256 == SHA
    with pytest.raises(ConfigError, match="not with sha256 = \"follow\""):
        _parse("follow", "size = 10")
    with pytest.raises(ConfigError, match="or \"follow\""):
        _parse("Follow!")
    r = e.resolved(SHA, "/cache/.versions/img.qcow2@" + SHA)
    assert (r.sha256, r.path, r.follow) == (SHA, "/cache/.versions/img.qcow2@" + SHA, True)
    with pytest.raises(ValueError):
        _parse(SHA).resolved("cd" * 32, "/x")  # a pinned entry runs only its own sha256
    with pytest.raises(ValueError):
        e.resolved("", "/x")
    with pytest.raises(ValueError, match="resolved sha256"):
        prepare.layer_name(e, b"runner")  # an unresolved follow entry has no layer


def test_layer_names_carry_every_input():
    e = _parse(SHA)
    name = prepare.layer_name(e, b"r")
    assert name.startswith(f"img-{SHA[:16]}-") and name.endswith("-rclocal.qcow2")
    assert prepare.layer_name(dataclasses.replace(e, path="/other/img.qcow2"), b"r") != name
    assert prepare.layer_name(e, b"r2") != name
    assert prepare.layer_name(e, b"r", maintenance=True).endswith("-rclocal-maint.qcow2")


@pytest.mark.parametrize("cmdline", ["console=ttyS0 root=/dev/vda", 'quote " back \\ slash',
                                     "unicode \u00e9\u4e2d = [x]"])
def test_catalog_writer_round_trip(cmdline):
    entry = ImageEntry(name="x-1.2", trust="untrusted", path="/var/lib/racf-vm/images/x-1.2.raw",
                       format="raw", sha256=SHA, size=12345, credentials=True,
                       boot=BootSpec("kernel", "/k/vmlinuz", "/k/initrd", cmdline),
                       context=ContextSpec("/dev/vg0/root", "xfs", "systemd"))
    data = render_entry(entry, "note line 1\nnote line 2")
    assert data.startswith(b"# note line 1\n# note line 2\n")
    assert parse_image_entry(data, "/c/x-1.2.toml") == entry
    follow = dataclasses.replace(entry, sha256="", follow=True, size=0)
    assert parse_image_entry(render_entry(follow), "/c/x-1.2.toml") == follow


def test_toml_strings_escape_what_toml_cannot_carry():
    assert toml_string('a"b\\c') == '"a\\"b\\\\c"'
    assert toml_string("\x01\x7f") == '"\\u0001\\u007f"'


def test_check_template_refuses_what_the_catalog_refuses():
    good = _parse(SHA)
    check_template(good)
    with pytest.raises(ConfigError, match="filesystem"):
        check_template(dataclasses.replace(good, context=ContextSpec("sda", "ext4", "rc.local")))
    with pytest.raises(ConfigError, match="cmdline"):
        check_template(dataclasses.replace(good, boot=BootSpec("kernel", "/k", "/i", "x\x00y")))


def test_maintenance_layer_moves_the_hook_files_aside():
    plain = install.runner_entries(b"R", "rc.local")
    assert [e.path for e in plain] == ["/racf", "/racf/runner.sh", "/etc/rc.local"]
    assert all(e.keep_original is None for e in plain)
    kept = install.runner_entries(b"R", "systemd", keep_originals=True)
    by_path = {e.path: e for e in kept}
    unit = "/etc/systemd/system/racf-runner.service"
    link = "/etc/systemd/system/multi-user.target.wants/racf-runner.service"
    assert by_path[unit].keep_original == "/racf/orig/etc%systemd%system%racf-runner.service"
    assert by_path[link].keep_original == install.original_path(link)
    assert by_path["/racf/undo"].data == f"{unit}\n{link}\n".encode()
    order = [e.path for e in kept]
    assert order.index("/racf/orig") < order.index(unit)  # the place exists before it is used


def test_local_images_are_neither_replaced_nor_withdrawn():
    local = LocalImage(present=True, verified_sha256=SHA, managed=True, local=True)
    remote = {"a": RemoteImage("a", "a.gz", "gzip", "cd" * 32)}
    assert plan_sync(remote, {"a": local}).keep == ("a",)
    assert plan_sync({}, {"a": local}).keep == ("a",)


def test_shared_flocks_from_proc_locks():
    text = ("1: POSIX  ADVISORY  WRITE 4845 fe:00:1501179 0 0\n"
            "2: FLOCK  ADVISORY  READ 7663 fe:00:15343619 0 EOF\n"
            "3: FLOCK  ADVISORY  READ 7664 fe:00:15343619 0 EOF\n"
            "3: -> FLOCK  ADVISORY  WRITE 7665 fe:00:15343619 0 EOF\n"
            "4: FLOCK  ADVISORY  WRITE 7666 08:01:99 0 EOF\n")
    assert shared_flocks(text) == {(254, 0, 15343619): 2}


def test_the_maintenance_plan():
    cfg = parse_config(b'[paths]\nstate_dir = "/var/lib/r"\n[network]\ntrusted_bridge = "br0"\n', "f")
    master = "/srv/master/img.qcow2"
    base = BaseImageInfo(master, "qcow2", 10, 1 << 30, 1, 2, 3)
    layer = BaseImageInfo("/var/lib/r/prepared/l.qcow2", "qcow2", 10, 1 << 30, 1, 3, 3,
                          backing=(master, "qcow2"))
    entry = dataclasses.replace(_parse(SHA), path=master)
    plan = plan_maintenance(MaintenanceInputs(
        entry=entry, base=base, layer=layer, config=cfg, accel="tcg",
        owner=jobtag.Owner(1234, 99), qemu_uid=64055, qemu_gid=994, command="yum -y update",
        cpus=2, memory_mib=2048, timeout=600))
    job = plan.job
    assert job.tag == "maintain-0.0-1234-99" and jobtag.parse_tag(job.tag) == jobtag.Owner(1234, 99)
    assert job.job_dir == "/var/lib/r/jobs/maintain-0.0-1234-99"
    assert plan.overlay == os.path.join(job.job_dir, "overlay.qcow2")
    assert [b.path for b in job.root_disk.backing] == [layer.path, master]  # master: backing only
    assert job.context_disk.readonly and job.context_disk.serial == "racf-context"
    assert job.network == "bridge" and job.domain.nics[0].source == "br0"
    assert (job.domain.vcpus, job.domain.memory_mib, job.timeouts.job) == (2, 2048, 600)
    assert plan.argv == ("/bin/sh", "-c", "yum -y update") and ("HOME", "/root") in plan.env
    untrusted = plan_maintenance(MaintenanceInputs(
        entry=dataclasses.replace(entry, trust="untrusted"), base=base, layer=layer, config=cfg,
        accel="tcg", owner=jobtag.Owner(1, 1), qemu_uid=1, qemu_gid=1, command="x"))
    assert untrusted.job.network == "untrusted" and not untrusted.job.ready_to_boot
