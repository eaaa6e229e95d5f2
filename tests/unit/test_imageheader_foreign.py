"""Raw bases that start like another image format; re-validation before boot."""

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from racf_vm.core.errors import RefusedError
from racf_vm.images import imageheader


def _file(tmp_path, data, mode=0o644):
    p = tmp_path / "base.img"
    p.write_bytes(data)
    os.chmod(p, mode)
    return str(p)


@pytest.mark.skipif(os.geteuid() != 0, reason="base images must be root-owned")
@pytest.mark.parametrize("magic", [m for m, _ in imageheader.FOREIGN_MAGICS])
def test_raw_with_foreign_header_refused(tmp_path, magic):
    with pytest.raises(RefusedError, match="declared raw"):
        imageheader.validate_base_image(_file(tmp_path, magic + b"\0" * 1000), "raw")


@pytest.mark.skipif(os.geteuid() != 0, reason="base images must be root-owned")
@given(st.binary(min_size=1, max_size=600))
@settings(max_examples=200, deadline=None)
def test_raw_is_never_more_than_a_prefix_check(tmp_path_factory, data):
    path = _file(tmp_path_factory.mktemp("raw"), data)
    try:
        info = imageheader.validate_base_image(path, "raw")
        assert info.virtual_size == len(data)
        assert not any(data.startswith(m) for m, _ in imageheader.FOREIGN_MAGICS)
    except RefusedError:
        assert any(data.startswith(m) for m, _ in imageheader.FOREIGN_MAGICS)


@pytest.mark.skipif(os.geteuid() != 0, reason="base images must be root-owned")
def test_recheck_detects_replacement(tmp_path):
    path = _file(tmp_path, b"x" * 4096)
    info = imageheader.validate_base_image(path, "raw")
    assert imageheader.recheck_base_image(info).st_ino == info.st_ino
    os.rename(path, path + ".old")
    _file(tmp_path, b"y" * 4096)
    with pytest.raises(RefusedError, match="replaced or modified"):
        imageheader.recheck_base_image(info)
    os.unlink(path)
    os.symlink(path + ".old", path)
    with pytest.raises(RefusedError):
        imageheader.recheck_base_image(info)
