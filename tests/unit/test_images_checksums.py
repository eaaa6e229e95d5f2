"""racf_vm.images.checksums: the sha256sum list is untrusted input, parsed strictly."""

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from racf_vm.images.checksums import BadListError, RemoteImage, format_list, parse_list

H1 = hashlib.sha256(b"one").hexdigest()
H2 = hashlib.sha256(b"two").hexdigest()


def test_text_and_binary_mode_lines():
    data = f"{H1}  deb12.qcow2.gz\n{H2.upper()} *sl7.raw.zst\n{H1}  c.img.xz\n".encode()
    images = parse_list(data, "L")
    assert images["deb12.qcow2"] == RemoteImage("deb12.qcow2", "deb12.qcow2.gz", "gzip", H1)
    assert images["sl7.raw"] == RemoteImage("sl7.raw", "sl7.raw.zst", "zstd", H2)
    assert images["c.img"].codec == "xz"


def test_empty_list_is_valid():
    assert parse_list(b"", "L") == {}


@pytest.mark.parametrize("data, needle", [
    (f"{H1}  ../etc.gz\n", "L:1: '../etc.gz' is not a valid"),
    (f"{H1}  /abs.gz\n", "not a valid"),
    (f"{H1}  .verified.json.gz\n", "not a valid"),
    (f"{H1}  a/b.gz\n", "not a valid"),
    (f"{H1}  image.qcow2\n", "does not end with .gz, .zst or .xz"),
    (f"{H1}  .gz\n", "not a valid"),
    (f"{H1}  x.gz\n{H2}  x.zst\n", "L:2: image 'x' is listed twice"),
    (f"{H1[:-1]}  x.gz\n", "L:1: not a sha256sum line"),
    (f"{H1} x.gz\n", "not a sha256sum line"),
    (f"\\{H1}  x\\nz.gz\n", "not a sha256sum line"),
    (f"{H1}  x.gz\n\n", "L:2: not a sha256sum line"),
    (f"{H1}  x.gz", "does not end with a newline"),
    ("caf\u00e9\n", "not ASCII"),
])
def test_bad_lists(data, needle):
    with pytest.raises(BadListError) as e:
        parse_list(data.encode(), "L")
    assert needle in str(e.value)
    assert e.value.exit_status == 75


def test_too_large():
    with pytest.raises(BadListError, match="larger than"):
        parse_list(b"x" * (4 * 1024 * 1024 + 1), "L")


_names = st.from_regex(r"[a-z0-9][a-z0-9_+-]{0,20}", fullmatch=True)


@given(st.dictionaries(_names, st.tuples(st.sampled_from([".gz", ".zst", ".xz"]),
                                         st.binary(max_size=8)), max_size=10))
def test_format_parse_roundtrip(spec):
    images = [RemoteImage(n, n + suf, {".gz": "gzip", ".zst": "zstd", ".xz": "xz"}[suf],
                          hashlib.sha256(b).hexdigest()) for n, (suf, b) in spec.items()]
    parsed = parse_list(format_list(images), "L")
    assert parsed == {img.name: img for img in images}
