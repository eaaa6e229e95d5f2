"""The VM's devices as typed values, each building its own libvirt XML element.

Pure, like domain_xml: values are checked when a device is made (``check()``, called by
DomainSpec) and then serialized by ElementTree, so nothing a user supplied can change the
XML's structure. Every disk names its format and every backing file's format: libvirt and
QEMU never probe one.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Literal, Optional

from racf_vm.core.errors import InternalError
from racf_vm.images.imageheader import ImageFormat

DiskRole = Literal["root", "context", "scratch", "data"]
NicKind = Literal["bridge", "network"]

# Characters XML 1.0 cannot represent (even escaped): C0 controls except TAB/LF/CR,
# surrogates, U+FFFE/U+FFFF.
XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
_TARGET = re.compile(r"(vd|sd)[a-z]{1,2}")
_SERIAL = re.compile(r"[A-Za-z0-9_.-]{1,20}")


def check_text(what: str, value: str) -> None:
    if not isinstance(value, str) or value == "":
        raise InternalError(f"domain spec: {what} must be a non-empty string")
    if XML_INVALID.search(value):
        raise InternalError(f"domain spec: {what} contains characters XML cannot carry")


def check_abs(what: str, value: str) -> None:
    check_text(what, value)
    if not value.startswith("/"):
        raise InternalError(f"domain spec: {what} must be an absolute path: {value!r}")


def check_format(what: str, value: str) -> None:
    if value not in ("qcow2", "raw"):
        raise InternalError(f"domain spec: bad {what} format {value!r}")


def sub(parent: ET.Element, tag: str, text: Optional[str] = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def target_name(bus: str, index: int) -> str:
    """The guest device name of the ``index``-th disk (0 -> vda / sda, 1 -> vdb, ...)."""
    prefix = "vd" if bus == "virtio" else "sd"
    if not 0 <= index < 26:
        raise InternalError(f"domain spec: too many disks ({index + 1})")
    return prefix + chr(ord("a") + index)


@dataclass(frozen=True)
class BackingFile:
    """One file below a disk in its backing chain."""

    path: str
    format: ImageFormat


@dataclass(frozen=True)
class Disk:
    """One file-backed disk. ``backing`` is its chain, nearest file first; a qcow2 disk
    without one gets an explicit end of chain, so QEMU never reads a backing name from it."""

    role: DiskRole
    path: str
    format: ImageFormat
    target: str
    bus: str = "virtio"
    readonly: bool = False
    serial: Optional[str] = None
    backing: tuple[BackingFile, ...] = ()

    def check(self) -> None:
        check_abs(f"{self.role} disk path", self.path)
        check_format(f"{self.role} disk", self.format)
        check_text(f"{self.role} disk bus", self.bus)
        if not _TARGET.fullmatch(self.target):
            raise InternalError(f"domain spec: bad disk target {self.target!r}")
        if self.serial is not None and not _SERIAL.fullmatch(self.serial):
            raise InternalError(f"domain spec: bad disk serial {self.serial!r}")
        if self.backing and self.format != "qcow2":
            raise InternalError("domain spec: only a qcow2 disk can have a backing file")
        for i, b in enumerate(self.backing):
            check_abs(f"{self.role} disk backing file", b.path)
            check_format(f"{self.role} disk backing file", b.format)
            if b.format != "qcow2" and i != len(self.backing) - 1:
                raise InternalError("domain spec: a raw backing file must end the chain")

    def element(self) -> ET.Element:
        disk = ET.Element("disk", type="file", device="disk")
        driver = {"name": "qemu", "type": self.format, "cache": "none"}
        if not self.readonly:
            driver["discard"] = "unmap"
        sub(disk, "driver", **driver)
        sub(disk, "source", file=self.path)
        if self.backing or self.format == "qcow2":
            parent = disk
            for b in self.backing:
                store = sub(parent, "backingStore", type="file")
                sub(store, "format", type=b.format)
                sub(store, "source", file=b.path)
                parent = store
            sub(parent, "backingStore")  # end of the chain
        sub(disk, "target", dev=self.target, bus=self.bus)
        if self.serial is not None:
            sub(disk, "serial", self.serial)
        if self.readonly:
            sub(disk, "readonly")
        return disk


@dataclass(frozen=True)
class Nic:
    """A virtio NIC on a host bridge (trusted guests) or a libvirt network (untrusted)."""

    kind: NicKind
    source: str
    mac: Optional[str] = None

    def check(self) -> None:
        if self.kind not in ("bridge", "network"):
            raise InternalError(f"domain spec: bad NIC kind {self.kind!r}")
        check_text(f"{self.kind} name", self.source)
        if self.mac is not None and not _MAC.fullmatch(self.mac):
            raise InternalError(f"domain spec: bad MAC {self.mac!r}")

    def element(self) -> ET.Element:
        iface = ET.Element("interface", type=self.kind)
        sub(iface, "source", **{self.kind: self.source})
        if self.mac is not None:
            sub(iface, "mac", address=self.mac)
        sub(iface, "model", type="virtio")
        return iface
