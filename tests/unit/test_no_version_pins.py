"""Nothing pins a version of something `make deps` installs.

Debian's security archive moves packages (the kernel above all) under our feet; a kernel
release or a Debian package version written into the code breaks the next fresh machine.
This scans the product and the tests for such strings, and the dependency lists for pins.
"""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCANNED = ("tests", "racf_vm", "netpolicy", "images.d", "wrapper")
DEPENDENCY_FILES = ("Makefile", "requirements-dev.txt", "pyproject.toml")

_ARCH = r"(?:amd64|arm64|i386|686(?:-pae)?|armmp(?:-lpae)?|ppc64el|s390x)"
PATTERNS = {
    # 6.1.0-57-amd64, 6.1.0-57-cloud-amd64, 6.12.9+bpo-amd64
    "kernel release": re.compile(r"\b\d+\.\d+(?:\.\d+)?[-+][0-9a-z.+~-]*-" + _ARCH + r"\b"),
    "kernel file of one release": re.compile(r"(?:vmlinuz|initrd\.img|System\.map)-\d"),
    "module directory of one release": re.compile(r"/lib/modules/\d"),
    # 9.0.0-4+deb12u2, 1:7.2+dfsg-7+deb12u7, 1.8.9-2~bpo11+1
    "Debian package version": re.compile(
        r"\b\d[\w.]*-\d[\w.]*(?:\+deb\d+u\d+|~bpo\d+|\+b\d+)\b|\b\d+:\d[\w.]*\+dfsg"
    ),
}


def findings(text: str) -> list[tuple[int, str, str]]:
    """(line number, what, matched text) for every pinned version in ``text``."""
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        for what, pattern in PATTERNS.items():
            for m in pattern.finditer(line):
                out.append((number, what, m.group(0)))
    return out


def _files():
    for top in SCANNED:
        for path in sorted((REPO / top).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path != Path(__file__):
                yield path


@pytest.mark.parametrize(
    "text",
    [
        "KVER = '6.1.0-" + "56-amd64'",
        "/boot/vmlinuz-" + "6.1.0-57-amd64",
        "cloud kernel 6.1.0-" + "57-cloud-amd64 here",
        "backport 6.12.9+" + "bpo-amd64",
        "Path('/lib/modules/" + "6.1.0-57-amd64')",
        "libvirt 9.0.0-4+" + "deb12u2",
        "qemu 1:7.2+" + "dfsg-7",
        "iptables 1.8.9-2~" + "bpo11+1",
    ],
)
def test_detector_catches_pins(text):
    assert findings(text), text


@pytest.mark.parametrize(
    "text",
    [
        'tag = "slot1-12.0-4242-99"',
        "Verified against libvirt 9.0 (Debian 12)",
        'os.path.join("/lib/modules", release)',
        'f"/boot/vmlinuz-{release}"',
        "sha256 3f786850e387550fdab836ed7e6dc881de23001b",
        "2026-11-30",
    ],
)
def test_detector_passes_ordinary_text(text):
    assert findings(text) == []


def test_no_file_pins_a_version():
    bad = []
    for path in _files():
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue  # binary test data
        for number, what, match in findings(text):
            bad.append(f"{path.relative_to(REPO)}:{number}: {what} {match!r}")
    assert bad == [], "find it at run time instead (tests/support/hostkernel.py):\n" + "\n".join(bad)


def test_dependency_lists_pin_nothing():
    makefile = (REPO / "Makefile").read_text()
    for var in ("DEBIAN_PACKAGES", "TEST_DEBIAN_PACKAGES"):
        m = re.search(rf"^{var} :=(.*?)(?:\n\n|\n[^\t ])", makefile, re.S | re.M)
        assert m, f"Makefile has no {var} list"
        packages = m.group(1).replace("\\", " ").split()
        assert packages and [p for p in packages if "=" in p] == []
    for name in DEPENDENCY_FILES:
        for number, line in enumerate((REPO / name).read_text().splitlines(), 1):
            assert not re.search(r"[A-Za-z0-9_.\]-]\s*(===?|~=)\s*\d", line.split("#")[0]), \
                f"{name}:{number} pins a version: {line.strip()}"
