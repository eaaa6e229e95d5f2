"""The domain XML of typical jobs, byte for byte as it was before the typed devices.

The golden files were written by the flat-spec builder (before issue 9's refactor);
changing them needs a reason (a libvirt behaviour, a new device), not a refactor.
"""

from pathlib import Path

import pytest

from racf_vm.vm.domain_xml import (
    BootloaderBoot,
    DomainSpec,
    KernelBoot,
    build_domain_xml,
)
from tests.support.specs import job_spec

GOLDEN = Path(__file__).parent / "data" / "golden"
HOSTILE = "x<y>&z\"q'"


def spec(**over) -> DomainSpec:
    return job_spec(**over)


CASES = {
    "trusted-no-nic-kernel": lambda: spec(),
    "trusted-bridge-kvm-console": lambda: spec(
        domain_type="kvm", bridge="br0", mac="52:54:00:12:34:56",
        console_log="/var/lib/racf-vm/jobs/t/console.log"),
    "untrusted-network-raw-bootloader": lambda: spec(
        network="racf-untrusted", mac="52:54:00:ab:cd:ef", base_format="raw",
        base_path="/var/lib/racf-vm/images/base.img", boot=BootloaderBoot(), machine="q35"),
    "hostile-values-sata": lambda: spec(
        name="racf-vm-" + HOSTILE, tag=HOSTILE, base_path="/i/" + HOSTILE,
        boot=KernelBoot("/k/" + HOSTILE, None, "a=" + HOSTILE), disk_bus="sata"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_xml_is_byte_for_byte_unchanged(name):
    expected = (GOLDEN / f"{name}.xml").read_text()
    assert build_domain_xml(CASES[name]()) + "\n" == expected
