"""The guest kernel the test images boot: the newest one `make deps` installed on this host.

Debian's security archive moves `linux-image-amd64` to a new release now and then, so no
test names a release: every recipe and test asks ``installed_kernel()``. A release counts
only when both its ``/boot/vmlinuz-<release>`` and its ``/lib/modules/<release>/modules.dep``
exist (a half-removed kernel has one without the other). Releases are compared as
versions, number by number (``6.1.0-9`` is older than ``6.1.0-57``), never as text.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from pathlib import Path

BOOT = Path("/boot")
MODULES = Path("/lib/modules")
PACKAGE = "linux-image-amd64"


class KernelMissing(RuntimeError):
    """No usable kernel: a prerequisite `make deps` installs is missing."""


@dataclasses.dataclass(frozen=True)
class HostKernel:
    release: str
    vmlinuz: Path
    modules: Path

    def fingerprint(self) -> str:
        """sha256 of the kernel image: a rebuilt package can keep its release name."""
        h = hashlib.sha256()
        with open(self.vmlinuz, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()


def version_key(release: str) -> tuple:
    """Sort key comparing digit runs as numbers and the rest as text ("6.1.0-9" < "6.1.0-57")."""
    key = []
    for run in re.findall(r"\d+|\D+", release):
        key.append((1, int(run), "") if run.isdigit() else (0, 0, run))
    return tuple(key)


def candidates(boot: Path = BOOT, modules: Path = MODULES) -> list[HostKernel]:
    """Every release with both a kernel image and a module index, oldest first."""
    found = []
    try:
        names = os.listdir(boot)
    except FileNotFoundError:
        names = []
    for name in names:
        if not name.startswith("vmlinuz-"):
            continue
        release = name[len("vmlinuz-"):]
        vmlinuz = boot / name
        moddir = modules / release
        if vmlinuz.is_file() and (moddir / "modules.dep").is_file():
            found.append(HostKernel(release, vmlinuz, moddir))
    return sorted(found, key=lambda k: version_key(k.release))


def installed_kernel(boot: Path = BOOT, modules: Path = MODULES) -> HostKernel:
    """The newest complete kernel; KernelMissing (naming the package) when there is none."""
    found = candidates(boot, modules)
    if not found:
        raise KernelMissing(
            f"no kernel with both {boot}/vmlinuz-RELEASE and {modules}/RELEASE/modules.dep: "
            f"install {PACKAGE} (make deps)"
        )
    return found[-1]
