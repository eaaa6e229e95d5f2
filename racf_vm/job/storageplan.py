"""The job's storage disks as a plan: pure, from the validated request.

- ``--scratch SIZE``: a blank raw disk in the job directory (``scratch.img``), formatted on
  the host by an unprivileged step, its root owned by the job's user; serial racf-scratch.
- ``--data FILE``: the user's image, copied into the job directory by root (the user's
  file is opened and read as the user; QEMU only ever gets root's copy, validated:
  ``data.<format>``). Read-only: that copy, attached read-only. Read-write: a qcow2 overlay
  on it (``data-overlay.qcow2``), so the copy itself is never written. Serial racf-data.
- ``--export-scratch``: after the job, the scratch disk (or the read-write data overlay,
  flattened) goes back into the sandbox as a compact qcow2 image of the user's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

from racf_vm.condor.request import JobRequest
from racf_vm.vm.devices import BackingFile, Disk, target_name

SCRATCH_SERIAL = "racf-scratch"
DATA_SERIAL = "racf-data"
SCRATCH_EXPORT = "scratch.qcow2"


@dataclass(frozen=True)
class DataCopy:
    source: str  # a plain name in the sandbox, opened as the user
    path: str  # root's copy in the job directory
    format: str
    limit: int  # bytes the copy may take (the site's limit)
    size: int  # the disk's virtual size when the job asked


@dataclass(frozen=True)
class Export:
    disk: Disk  # what to flatten into a compact qcow2
    name: str  # its name in the sandbox


@dataclass(frozen=True)
class StoragePlan:
    disks: tuple[Disk, ...] = ()
    scratch: Optional[Disk] = None
    scratch_bytes: int = 0
    data_copy: Optional[DataCopy] = None
    exports: tuple[Export, ...] = ()

    @property
    def may_grow_to(self) -> int:
        """Bytes these disks may take in the job directory: the scratch disk, the data copy
        and its read-write overlay (each at most the data disk's virtual size)."""
        return self.scratch_bytes + (2 * self.data_copy.size if self.data_copy else 0)


def export_name(data_file: str) -> str:
    stem = data_file.rsplit(".", 1)[0] if "." in data_file else data_file
    return f"{stem}.qcow2"


def plan_storage(req: JobRequest, job_dir: str, first_index: int, max_data_bytes: int) -> StoragePlan:
    disks, exports = [], []
    scratch = data_copy = None
    index = first_index
    if req.scratch_bytes:
        scratch = Disk(role="scratch", path=os.path.join(job_dir, "scratch.img"), format="raw",
                       target=target_name("virtio", index), serial=SCRATCH_SERIAL)
        disks.append(scratch)
        index += 1
        if req.export_scratch:
            exports.append(Export(scratch, SCRATCH_EXPORT))
    if req.data_file:
        data_copy = DataCopy(req.data_file, os.path.join(job_dir, f"data.{req.data_format}"),
                             req.data_format, max_data_bytes, req.data_bytes)
        if req.data_mode == "rw":
            disk = Disk(role="data", path=os.path.join(job_dir, "data-overlay.qcow2"), format="qcow2",
                        target=target_name("virtio", index), serial=DATA_SERIAL,
                        backing=(BackingFile(data_copy.path, data_copy.format),))
            if req.export_scratch:
                exports.append(Export(disk, export_name(req.data_file)))
        else:
            disk = Disk(role="data", path=data_copy.path, format=data_copy.format,
                        target=target_name("virtio", index), readonly=True, serial=DATA_SERIAL)
        disks.append(disk)
    return StoragePlan(tuple(disks), scratch, req.scratch_bytes, data_copy, tuple(exports))
