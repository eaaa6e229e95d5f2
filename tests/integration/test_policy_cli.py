"""`racf-vm policy check` / `policy explain` on crafted sites in root-owned temp dirs."""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from racf_vm.cli import doctor
from tests.support import testenv

pytestmark = pytest.mark.root


def _cli(config, *args):
    return subprocess.run([testenv.PYTHON, "-m", "racf_vm.cli", "--config", str(config), *args],
                          capture_output=True, text=True, cwd="/", timeout=120)


def _write(path: Path, text: str, mode=0o644):
    path.write_text(text)
    os.chown(path, 0, 0)
    os.chmod(path, mode)


@pytest.fixture
def policy_site():
    small = testenv.build_image("small")
    testenv.IMAGE_CACHE.mkdir(mode=0o755, parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="policy-", dir=testenv.IMAGE_CACHE))
    os.chmod(root, 0o755)
    (root / "images.d").mkdir(mode=0o755)
    config = root / "racf-vm.toml"
    _write(config, f'[paths]\ncatalog_dir = "{root / "images.d"}"\nstate_dir = "{root}"\n'
                   f'runner = "{testenv.RUNNER}"\n')
    _write(root / "images.d" / "good.toml", testenv.catalog_entry("good", small))
    yield {"root": root, "config": config, "small": small, "catalog": root / "images.d"}
    shutil.rmtree(root)


def test_clean_site_is_ok(policy_site):
    r = _cli(policy_site["config"], "policy", "check")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().splitlines()[-1] == "policy: ok"


def test_every_problem_one_line_with_file_and_reason(policy_site):
    cat, small = policy_site["catalog"], policy_site["small"]
    _write(cat / "worldw.toml", testenv.catalog_entry("worldw", small), mode=0o666)
    _write(cat / "broken.toml", "name = \n")
    _write(cat / "mismatch.toml", testenv.catalog_entry("other", small))
    text = testenv.catalog_entry("zeros", small)
    import re

    _write(cat / "zeros.toml", re.sub(r'sha256 = "[0-9a-f]+"', 'sha256 = "' + "0" * 64 + '"', text))
    user_img = policy_site["root"] / "user.qcow2"
    shutil.copy(small / "disk.qcow2", user_img)
    os.chown(user_img, 2501, 2501)
    _write(cat / "userimg.toml", re.sub(r'path = "[^"]+"', f'path = "{user_img}"',
                                        testenv.catalog_entry("userimg", small)))
    os.chown(user_img, 2501, 2501)
    r = _cli(policy_site["config"], "policy", "check")
    assert r.returncode == 78, r.stdout + r.stderr
    lines = r.stdout.strip().splitlines()
    expect = {
        "worldw.toml": "writable by others",
        "broken.toml": "",
        "mismatch.toml": "does not match the file name",
        "zeros.toml": "placeholder",
        "userimg.toml": "owned by uid 2501",
    }
    for fname, reason in expect.items():
        hits = [l for l in lines if l.startswith(str(cat / fname) + ":")]
        assert hits, (fname, lines)
        assert reason in " ".join(hits), (fname, hits)
    assert not [l for l in lines if "good.toml" in l], lines
    assert r.stderr.strip() == f"racf-vm: {len(lines)} problem(s) found"


def test_untrusted_config_and_catalog_dir(policy_site):
    os.chmod(policy_site["catalog"], 0o777)
    r = _cli(policy_site["config"], "policy", "check")
    assert r.returncode == 78
    assert any(l.startswith(str(policy_site["catalog"]) + ":") and "writable by others" in l
               for l in r.stdout.splitlines()), r.stdout
    os.chmod(policy_site["catalog"], 0o755)
    os.chmod(policy_site["config"], 0o664)
    r = _cli(policy_site["config"], "policy", "check")
    assert r.returncode == 78
    assert r.stdout.splitlines()[0].startswith(str(policy_site["config"]) + ":"), r.stdout
    assert "writable by group" in r.stdout


def test_config_under_tmp_is_refused():
    d = Path(tempfile.mkdtemp())
    try:
        _write(d / "c.toml", "")
        r = _cli(d / "c.toml", "policy", "check")
        assert r.returncode == 78
        assert "sticky world-writable" in r.stdout
    finally:
        shutil.rmtree(d)


def test_explain_trusted_and_untrusted(policy_site):
    r = _cli(policy_site["config"], "policy", "explain", "good")
    assert r.returncode == 0, r.stderr
    for word in ("trust:    trusted", "network:", "firewall:", "sizing:", "checksum: sha256"):
        assert word in r.stdout, r.stdout
    _write(policy_site["catalog"] / "jail.toml",
           testenv.catalog_entry("jail", policy_site["small"], trust="untrusted"))
    r = _cli(policy_site["config"], "policy", "explain", "jail")
    assert r.returncode == 0, r.stderr
    assert "trust:    untrusted" in r.stdout and "firewall:" in r.stdout


def test_explain_unknown_image(policy_site):
    r = _cli(policy_site["config"], "policy", "explain", "../../etc/shadow")
    assert r.returncode == 64
    assert r.stderr.startswith("racf-vm: invalid image name")


def test_doctor_on_a_fresh_install_names_each_fix(policy_site):
    """What a new admin sees after `make install`: every missing piece, one line each with
    the command or step that fixes it."""
    (policy_site["catalog"] / "good.toml").unlink()
    _write(policy_site["config"],
           f'[paths]\ncatalog_dir = "{policy_site["catalog"]}"\nstate_dir = "{policy_site["root"]}"\n'
           f'runner = "{testenv.RUNNER}"\n\n[parent]\nstarter = "/nonexistent/condor_starter"\n\n'
           '[libvirt]\nuri = "qemu+unix:///system?socket=/nonexistent/libvirt-sock"\n')
    r = _cli(policy_site["config"], "doctor")
    assert r.returncode == 78, r.stdout + r.stderr
    fails = [l for l in r.stdout.splitlines() if l.startswith("FAIL")]
    expect = {
        "libvirtd is not reachable": doctor.start_command("libvirtd"),
        "/nonexistent/condor_starter does not exist": "condor_config_val STARTER",
        "the image catalog has no images": "sha256sum IMAGE",
    }
    for what, fix in expect.items():
        hits = [l for l in fails if what in l]
        assert len(hits) == 1 and fix in hits[0], (what, r.stdout)
    assert r.stderr.strip().startswith(f"racf-vm: {len(fails)} check(s) failed")
    r = _cli(policy_site["config"], "policy", "check")
    assert r.returncode == 78 and "sha256sum IMAGE" in r.stdout, r.stdout


@pytest.mark.parametrize("flag", ["-v", "--verbose", None])
def test_verbose_adds_the_detail_either_way(policy_site, flag):
    _write(policy_site["config"],
           f'[paths]\ncatalog_dir = "{policy_site["catalog"]}"\nstate_dir = "{policy_site["root"]}"\n'
           '[libvirt]\nuri = "qemu+unix:///system?socket=/nonexistent/libvirt-sock"\n')
    args = [flag] if flag else []
    r = subprocess.run([testenv.PYTHON, "-m", "racf_vm.cli", *args, "--config", str(policy_site["config"]), "gc"],
                       capture_output=True, text=True, cwd="/", timeout=120)
    assert r.returncode == 75
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert lines[0].startswith("racf-vm: libvirtd is not reachable")
    detail = [l for l in lines[1:] if "nonexistent" in l]
    assert bool(detail) == bool(flag), r.stderr
