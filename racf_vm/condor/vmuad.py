"""The VM-universe job ad condor_vm-gahp hands LIBVIRT_XML_SCRIPT, as a validated request.

condor_vm-gahp (root) writes the job ad in old syntax to the script's stdin and appends a
few lines of its own (htcondor.md §4.2-4.3): ``VMPARAM_VM_NAME`` (the domain name it will
look the VM up by), ``VM_WORKING_DIR`` (the job's sandbox), ``JobVMMemory`` (MiB) and
``JobVM_VCPUS`` from ``vm_memory``/``vm_vcpus``, ``VMPARAM_vm_Disk`` from ``vm_disk``
(``file:device:permission[:format]``, comma-separated). Every custom attribute, and most
of the rest, is the user's: the ad is parsed in a child that gave up root for good
(``parse_vmu_ad_json``), and the result is validated again by root (``VmuRequest.from_json``).

What is accepted: exactly one disk, named by a plain file name in the sandbox (the
overlay racf-vm's hook or transfer plugin staged there). A path, several disks or a
format other than qcow2 is a disk of the user's choosing, and refused.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from typing import Optional

from racf_vm.condor import adio
from racf_vm.condor import attributes as A
from racf_vm.condor.values import check_abs_path, check_int
from racf_vm.core.errors import RefusedError, UsageError
from racf_vm.core.jobtag import DOMAIN_PREFIX
from racf_vm.images.catalog import validate_image_name

VM_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,199}")
DISK_FILE_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}")
MAX_MEMORY_MIB = 1 << 30
MAX_VCPUS = 4096
DISK_HINT = ("stage the VM's disk with racf-vm: transfer_input_files = racfimg://NAME and "
             "vm_disk = NAME:vda:w:qcow2, or +VM_Image = \"NAME\" with the racf-vm job hook")


@dataclass(frozen=True)
class VmuRequest:
    vm_name: str  # the domain name condor_vm-gahp looks the VM up by
    working_dir: str  # the job's sandbox (VM_WORKING_DIR)
    memory_mib: int
    vcpus: int
    disk_file: str  # a plain file name in the sandbox
    image: Optional[str]  # VM_Image, when the job names its catalog image
    cluster: int
    proc: int

    def validate(self) -> "VmuRequest":
        if not isinstance(self.vm_name, str) or not VM_NAME_RE.fullmatch(self.vm_name) \
                or self.vm_name.startswith(DOMAIN_PREFIX):
            raise UsageError(f"{A.ATTR_VM_NAME} {self.vm_name!r:.80} is not a VM name racf-vm accepts")
        check_abs_path(A.ATTR_VM_WORKING_DIR, self.working_dir)
        check_int(A.ATTR_VM_MEMORY, self.memory_mib, 1, MAX_MEMORY_MIB)
        check_int(A.ATTR_VM_VCPUS, self.vcpus, 1, MAX_VCPUS)
        check_disk_file(self.disk_file)
        if self.image is not None:
            validate_image_name(self.image)
        check_int("ClusterId", self.cluster)
        check_int("ProcId", self.proc)
        return self

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str) -> "VmuRequest":
        """Root's re-validation of what the unprivileged child sent."""
        try:
            fields = json.loads(raw)
            request = cls(**fields)
        except (ValueError, TypeError) as exc:
            raise UsageError(f"malformed VM request from the parsing child: {exc}") from None
        return request.validate()


def check_disk_file(name: object) -> str:
    if not isinstance(name, str) or not DISK_FILE_RE.fullmatch(name) or name in (".", ".."):
        shown = repr(name)[:80] if isinstance(name, str) else type(name).__name__
        raise RefusedError(f"the VM's disk {shown} is not a file racf-vm staged in the job's "
                           f"sandbox (a disk path of the job's choosing is never used); {DISK_HINT}")
    return name


def parse_disk_spec(value: object) -> str:
    """The one disk file of ``VMPARAM_vm_Disk`` (``file:device:permission[:format]``)."""
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"the job has no {A.ATTR_VM_DISK} (vm_disk); {DISK_HINT}")
    disks = [d.strip() for d in value.split(",") if d.strip()]
    if len(disks) != 1:
        raise RefusedError(f"the job lists {len(disks)} disks in vm_disk; racf-vm boots exactly "
                           f"one, the catalog image it staged; {DISK_HINT}")
    fields = [f.strip() for f in disks[0].split(":")]
    if len(fields) not in (3, 4):
        raise UsageError(f"vm_disk {disks[0]!r:.80} is not file:device:permission[:format]")
    if len(fields) == 4 and fields[3].lower() != "qcow2":
        raise RefusedError(f"vm_disk gives the format {fields[3]!r:.20}; racf-vm stages qcow2 "
                           f"overlays only; {DISK_HINT}")
    return check_disk_file(fields[0])


def _int_attr(ad, names: tuple[str, ...], default: Optional[int], what: str) -> int:
    """The first of ``names`` holding a literal integer. Nothing is evaluated: the first
    name must be a literal when present; a fallback (RequestMemory is often an
    expression) only counts when it is one."""
    for i, name in enumerate(names):
        value = adio.lookup(ad, name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if value is not None and i == 0:
            raise UsageError(f"{name} must be an integer, not {str(value)[:40]!r}")
    if default is None:
        raise UsageError(f"the job ad has no {what}")
    return default


def parse_vmu_ad(text: str) -> VmuRequest:
    """The request in the text of the gahp's ad (runs in the unprivileged child)."""
    ad = adio.parse_old_ad(text, "the VM job ad")
    name = adio.lookup(ad, A.ATTR_VM_NAME)
    workdir = adio.lookup(ad, A.ATTR_VM_WORKING_DIR)
    if not isinstance(name, str) or not isinstance(workdir, str):
        raise UsageError(f"the ad has no {A.ATTR_VM_NAME} or {A.ATTR_VM_WORKING_DIR}: "
                         "racf-vm-libvirt-xml is condor_vm-gahp's LIBVIRT_XML_SCRIPT")
    image = adio.lookup(ad, A.ATTR_VM_IMAGE)
    if image is not None and not isinstance(image, str):
        raise UsageError(f'{A.ATTR_VM_IMAGE} must be a quoted string, e.g. +VM_Image = "NAME"')
    return VmuRequest(
        vm_name=name,
        working_dir=workdir,
        memory_mib=_int_attr(ad, (A.ATTR_VM_MEMORY, A.ATTR_REQUEST_MEMORY), None,
                             "JobVMMemory (submit with vm_memory = MiB)"),
        vcpus=_int_attr(ad, (A.ATTR_VM_VCPUS, A.ATTR_REQUEST_CPUS), 1, "JobVM_VCPUS"),
        disk_file=parse_disk_spec(adio.lookup(ad, A.ATTR_VM_DISK)),
        image=image,
        cluster=_int_attr(ad, ("ClusterId",), 0, "ClusterId"),
        proc=_int_attr(ad, ("ProcId",), 0, "ProcId"),
    ).validate()


def parse_vmu_ad_json(text: str) -> str:
    """``parse_vmu_ad(text).to_json()``, for the privsep child."""
    return parse_vmu_ad(text).to_json()
