"""tests/support/hostkernel.py: which installed kernel the test images use."""

import pytest

from tests.support import hostkernel


def rel(abi: int, base: str = "6.1.0") -> str:
    """A Debian-style release name, built here (tests must not spell one out)."""
    return f"{base}-{abi}-amd64"


def _install(boot, modules, release, *, image=True, moddep=True):
    if image:
        (boot / f"vmlinuz-{release}").write_bytes(b"kernel " + release.encode())
    if moddep:
        (modules / release).mkdir(parents=True)
        (modules / release / "modules.dep").write_text("")


@pytest.fixture
def dirs(tmp_path):
    boot, modules = tmp_path / "boot", tmp_path / "modules"
    boot.mkdir()
    modules.mkdir()
    return boot, modules


def test_versions_compare_as_numbers_not_text():
    assert hostkernel.version_key(rel(9)) < hostkernel.version_key(rel(57))
    assert hostkernel.version_key(rel(57)) < hostkernel.version_key(rel(1, "6.10.0"))
    assert hostkernel.version_key(rel(30, "5.10.0")) < hostkernel.version_key(rel(9))


def test_newest_complete_kernel_wins(dirs):
    boot, modules = dirs
    _install(boot, modules, rel(9))
    _install(boot, modules, rel(57))
    _install(boot, modules, rel(60), moddep=False)  # image without modules
    _install(boot, modules, rel(61), image=False)  # modules without image
    k = hostkernel.installed_kernel(boot, modules)
    assert k.release == rel(57)
    assert k.vmlinuz == boot / f"vmlinuz-{rel(57)}"
    assert k.modules == modules / rel(57)
    assert [c.release for c in hostkernel.candidates(boot, modules)] == [rel(9), rel(57)]


def test_fingerprint_follows_the_image(dirs):
    boot, modules = dirs
    _install(boot, modules, rel(57))
    before = hostkernel.installed_kernel(boot, modules).fingerprint()
    (boot / f"vmlinuz-{rel(57)}").write_bytes(b"rebuilt, same release")
    assert hostkernel.installed_kernel(boot, modules).fingerprint() != before


def test_no_kernel_names_the_package(dirs):
    boot, modules = dirs
    _install(boot, modules, rel(57), moddep=False)
    with pytest.raises(hostkernel.KernelMissing, match="linux-image-amd64"):
        hostkernel.installed_kernel(boot, modules)


def test_this_host_has_one():
    """`make deps` installs linux-image-amd64: the real host must have a complete kernel."""
    k = hostkernel.installed_kernel()
    assert k.vmlinuz.is_file() and (k.modules / "modules.dep").is_file()


def test_a_kernel_update_changes_the_test_images_recipe_key(dirs, monkeypatch):
    """The cached small image is keyed by the kernel it carries: an update rebuilds it."""
    from tests.images import build

    boot, modules = dirs
    _install(boot, modules, rel(57))
    monkeypatch.setattr(build, "installed_kernel", lambda: hostkernel.installed_kernel(boot, modules))
    before = {name: build.recipe_hash(name) for name in ("small", "sitenfs")}
    _install(boot, modules, rel(58))
    after = {name: build.recipe_hash(name) for name in ("small", "sitenfs")}
    assert all(after[n] != before[n] for n in before)
    assert build.recipe_hash("small") == after["small"]  # and stays put while nothing changes
