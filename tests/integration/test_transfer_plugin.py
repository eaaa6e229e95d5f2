"""The racfimg:// transfer plugin, run as the starter runs it (as the job's user, protocol 1
and 2, a pre-allocated output file); every ad it prints is parsed by classad2."""

import os
import pwd

import classad2
import pytest

from racf_vm.condor import adio, vmudisk
from tests.support import condorsim, condorsite

pytestmark = pytest.mark.root

USER = "racfjob"


@pytest.fixture(scope="module")
def site():
    s = condorsite.make_site()
    yield s
    s.remove()


def _overlay_on(site, path) -> str:
    """The catalog image the file at ``path`` is an overlay on (as LIBVIRT_XML_SCRIPT sees it)."""
    from racf_vm.images import catalog

    head = path.read_bytes()[:vmudisk.HEADER_BYTES]
    cat = catalog.load_catalog(str(site.catalog))
    return vmudisk.identify_image(head, path.stat().st_size, cat, None, path.name).name


def test_the_query_ad(site):
    sandbox = site.make_sandbox(USER, 6201)
    proc = condorsim.run_plugin(site, ["-classad"], user=USER, sandbox=sandbox)
    assert proc.returncode == 0, proc.stderr.decode()
    ad = adio.parse_old_ad(proc.stdout.decode(), "the query ad")
    assert ad["PluginType"] == "FileTransfer" and ad["SupportedMethods"] == "racfimg"
    assert ad["MultipleFileSupport"] is True and ad["ProtocolVersion"] == 2


def test_protocol2_one_result_per_request_in_order(site):
    sandbox = site.make_sandbox(USER, 6202)
    requests = [
        ("racfimg://busybox", f"{sandbox}/busybox"),
        ("racfimg://nosuch", f"{sandbox}/nosuch"),
        ("racfimg://busybox-unsynced", f"{sandbox}/busybox-unsynced"),
        ("racfimg://busybox-nat", f"{sandbox}/disk two"),
    ]
    infile, outfile = condorsim.plugin_files(sandbox, USER, requests)
    proc = condorsim.run_plugin(site, ["-infile", str(infile), "-outfile", str(outfile)], user=USER,
                                sandbox=sandbox)
    assert proc.returncode == 1  # not every transfer succeeded
    data = outfile.read_bytes()
    assert len(data) >= condorsim.OUTFILE_PREALLOCATION  # written into, never truncated
    results = list(classad2.parseAds(data.decode(), classad2.ParserType.New))
    assert [(r["TransferURL"], r["TransferFileName"]) for r in results] == requests
    assert [r["TransferSuccess"] for r in results] == [True, False, False, True]
    assert "unknown image 'nosuch'" in results[1]["TransferError"]
    assert "not in this node's verified image cache" in results[2]["TransferError"]
    uid = pwd.getpwnam(USER).pw_uid
    for (_url, local), image in ((requests[0], "busybox"), (requests[3], "busybox-nat")):
        path = sandbox / os.path.basename(local)
        assert path.stat().st_uid == uid and _overlay_on(site, path) == image
    assert results[0]["TransferTotalBytes"] == (sandbox / "busybox").stat().st_size
    assert not (sandbox / "nosuch").exists() and not (sandbox / "busybox-unsynced").exists()


def test_protocol2_all_good(site):
    sandbox = site.make_sandbox(USER, 6203)
    infile, outfile = condorsim.plugin_files(sandbox, USER, [("racfimg://busybox", f"{sandbox}/busybox")])
    proc = condorsim.run_plugin(site, ["-infile", str(infile), "-outfile", str(outfile)], user=USER,
                                sandbox=sandbox)
    assert proc.returncode == 0, proc.stderr.decode()
    (result,) = classad2.parseAds(outfile.read_text(), classad2.ParserType.New)
    assert result["TransferSuccess"] is True and "TransferError" not in result


def test_an_upload_is_refused(site):
    sandbox = site.make_sandbox(USER, 6204)
    condorsim.write_as_user(sandbox / "out.img", "data", USER)
    infile, outfile = condorsim.plugin_files(sandbox, USER, [("racfimg://busybox", f"{sandbox}/out.img")])
    proc = condorsim.run_plugin(site, ["-infile", str(infile), "-outfile", str(outfile), "-upload"],
                                user=USER, sandbox=sandbox)
    assert proc.returncode == 1
    (result,) = classad2.parseAds(outfile.read_text(), classad2.ParserType.New)
    assert result["TransferSuccess"] is False and "input only" in result["TransferError"]
    assert (sandbox / "out.img").read_text() == "data"


def test_protocol1(site):
    sandbox = site.make_sandbox(USER, 6205)
    good = condorsim.run_plugin(site, ["racfimg://busybox-nat", f"{sandbox}/busybox-nat"], user=USER,
                                sandbox=sandbox)
    assert good.returncode == 0, good.stderr.decode()
    assert _overlay_on(site, sandbox / "busybox-nat") == "busybox-nat"
    bad = condorsim.run_plugin(site, ["racfimg://nosuch", f"{sandbox}/x"], user=USER, sandbox=sandbox)
    assert bad.returncode == 64
    assert bad.stderr.decode().startswith("racf-vm: unknown image 'nosuch'") and bad.stderr.count(b"\n") == 1
    missing = condorsim.run_plugin(site, ["racfimg://busybox-unsynced", f"{sandbox}/y"], user=USER,
                                   sandbox=sandbox)
    assert missing.returncode == 75 and not (sandbox / "y").exists()


def test_a_file_in_the_way_is_replaced_not_written_through(site):
    """A symlink where the overlay goes is replaced: qemu-img never writes through it."""
    sandbox = site.make_sandbox(USER, 6206)
    victim = sandbox / "victim.dat"
    condorsim.write_as_user(victim, "keep me", USER)
    os.symlink(victim, sandbox / "busybox")
    proc = condorsim.run_plugin(site, ["racfimg://busybox", f"{sandbox}/busybox"], user=USER, sandbox=sandbox)
    assert proc.returncode == 0, proc.stderr.decode()
    assert victim.read_text() == "keep me" and not (sandbox / "busybox").is_symlink()
