"""The site's image catalog: one ``<catalog_dir>/NAME.toml`` file per image.

The catalog is the trust policy: it alone says which images exist, whether each is
trusted (site network) or untrusted (NAT jail), where the base file lives and which
checksum it must have. A job only names an image; the name is checked against a strict
pattern before any lookup and the lookup is a dict access, so a hostile name can never
make racf-vm open a path of the user's choosing (security.md §5 row 21).
"""

import dataclasses
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Optional

from racf_vm.core.errors import ConfigError, RacfError, UsageError
from racf_vm.core.files import read_capped
from racf_vm.core.tomlreader import TableReader, decode_toml

IMAGE_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
# The guest device that receives the context, as libguestfs names it: a whole disk or a
# partition (/dev/sda, /dev/sda1; libguestfs always calls disks sdX), or an LVM volume
# (/dev/VG/LV).
FILESYSTEM_RE = re.compile(
    r"/dev/sd[a-z]{1,2}(?:[1-9][0-9]{0,2})?|/dev/[A-Za-z0-9_][A-Za-z0-9_.+-]{0,63}"
    r"/[A-Za-z0-9_][A-Za-z0-9_.+-]{0,63}"
)
SHA256_RE = r"[0-9a-f]{64}"
FOLLOW = "follow"  # sha256 = "follow": the version the newest verified, signed list names
FSTYPES = ("ext4", "ext3", "ext2", "xfs", "btrfs")
HOOKS = ("rc.local", "systemd")
# Examples carry this placeholder; code that verifies an image must refuse it.
PLACEHOLDER_SHA256 = "0" * 64
MAX_CMDLINE = 1024
MAX_CATALOG_FILE = 64 * 1024


def validate_image_name(name: object) -> str:
    """Return ``name`` if it is a well-formed image name, else raise UsageError.

    The pattern allows no ``/``, no leading dot and nothing longer than 64 characters;
    ``..`` is refused on top so that no name ever looks like a path step.
    """
    if not isinstance(name, str) or not IMAGE_NAME_RE.fullmatch(name) or ".." in name:
        shown = repr(name)[:80] if isinstance(name, str) else type(name).__name__
        raise UsageError(
            f"invalid image name {shown}: use lower-case letters, digits, '.', '_' and '-' "
            "(at most 64, starting with a letter or digit)"
        )
    return name


@dataclass(frozen=True)
class BootSpec:
    """How the guest boots: direct kernel boot (kernel+initrd on the host) or its own
    bootloader from the disk."""

    method: str  # "kernel" | "bootloader"
    kernel: Optional[str] = None
    initrd: Optional[str] = None
    cmdline: str = ""


@dataclass(frozen=True)
class ContextSpec:
    """Where racf-vm puts its guest runner when it prepares the image (racf_vm.images.prepare):
    the device and its filesystem type (both named, never probed) and how the guest starts
    the runner at boot."""

    filesystem: str
    fstype: str = "ext4"
    hook: str = "rc.local"  # "rc.local" (busybox init, systemd's rc-local) | "systemd" (a unit)


@dataclass(frozen=True)
class ImageEntry:
    """One catalog entry, fully validated."""

    name: str
    trust: str  # "trusted" | "untrusted"
    path: str
    format: str  # "qcow2" | "raw"
    sha256: str  # "" for an entry that follows the server until resolved for a job
    boot: BootSpec
    context: ContextSpec
    credentials: bool = False  # does the guest get the job's credentials (racf_vm.condor.credentials)
    size: int = 0  # exact bytes of the base file if the catalog says; 0: not given
    follow: bool = False  # the sha256 comes from the server's verified list at each job start

    @property
    def trusted(self) -> bool:
        return self.trust == "trusted"

    @property
    def checksum_is_placeholder(self) -> bool:
        """True for the all-zero example checksum, which verification must refuse."""
        return self.sha256 == PLACEHOLDER_SHA256

    @property
    def pinned(self) -> bool:
        return not self.follow

    def resolved(self, sha256: str, path: str) -> "ImageEntry":
        """This entry as one job runs it: the verified sha256 and the file it uses."""
        if not re.fullmatch(SHA256_RE, sha256) or (not self.follow and sha256 != self.sha256):
            raise ValueError(f"image {self.name}: cannot run sha256 {sha256!r}")
        return dataclasses.replace(self, sha256=sha256, path=path)


def _stem(source: str) -> str:
    base = os.path.basename(source)
    return base[:-5] if base.endswith(".toml") else base


def parse_image_entry(data: bytes, source: str) -> ImageEntry:
    """Parse one catalog file; ``source`` is its path (its stem must equal ``name``)."""
    doc, text = decode_toml(data, source)
    top = TableReader(doc, source, text, None)
    name = top.string("name", "", allow_empty=False)
    if not IMAGE_NAME_RE.fullmatch(name) or ".." in name:
        raise top.fail("name", f"{name!r} is not a valid image name "
                               f"({IMAGE_NAME_RE.pattern}, no '..')")
    if name != _stem(source):
        raise top.fail("name", f"{name!r} does not match the file name {os.path.basename(source)!r}")
    trust = top.choice("trust", "", ("trusted", "untrusted"))
    # the job's credentials (tokens, proxies, Kerberos): trusted images only, unless said
    credentials = top.boolean("credentials", trust == "trusted")
    path = top.path("path", "")
    fmt = top.choice("format", "", ("qcow2", "raw"))
    sha = top.string("sha256", "", allow_empty=False).lower()
    follow = sha == FOLLOW
    if follow:
        sha = ""
    elif not re.fullmatch(SHA256_RE, sha):
        raise top.fail("sha256", f"must be 64 hexadecimal digits, or \"{FOLLOW}\"")
    size = top.integer("size", 0, minimum=0, maximum=1 << 50)
    if follow and size:
        raise top.fail("size", "is the exact size of one version: not with sha256 = \"follow\"")

    boot_r = TableReader(top.raw("boot", None), source, text, "boot")
    method = boot_r.choice("method", "", ("kernel", "bootloader"))
    kernel = initrd = None
    if method == "kernel":
        kernel = boot_r.path("kernel", "")
        initrd = boot_r.path("initrd", "")
    else:
        for key in ("kernel", "initrd"):
            if boot_r.has(key):
                raise boot_r.fail(key, "only allowed with method = \"kernel\"")
    cmdline = boot_r.string("cmdline", "", max_len=MAX_CMDLINE)
    if cmdline and method != "kernel":
        raise boot_r.fail("cmdline", "only allowed with method = \"kernel\"")
    boot_r.finish()

    ctx_r = TableReader(top.raw("context", None), source, text, "context")
    fs = ctx_r.string("filesystem", "", allow_empty=False)
    if not FILESYSTEM_RE.fullmatch(fs):
        raise ctx_r.fail("filesystem", f"{fs!r} is not a guest device such as /dev/sda, "
                                       "/dev/sda1 or /dev/VG/LV")
    fstype = ctx_r.choice("fstype", ContextSpec.fstype, FSTYPES)
    hook = ctx_r.choice("hook", ContextSpec.hook, HOOKS)
    ctx_r.finish()
    top.finish()
    return ImageEntry(
        name=name, trust=trust, path=path, format=fmt, sha256=sha, size=size, follow=follow,
        boot=BootSpec(method=method, kernel=kernel, initrd=initrd, cmdline=cmdline),
        context=ContextSpec(filesystem=fs, fstype=fstype, hook=hook), credentials=credentials,
    )


@dataclass(frozen=True)
class Catalog(Mapping):
    """Image name -> ImageEntry, read once; lookups never touch the filesystem."""

    entries: Mapping[str, ImageEntry]
    source: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "entries", MappingProxyType(dict(self.entries)))

    def __getitem__(self, name: str) -> ImageEntry:
        return self.entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self.entries))

    def __len__(self) -> int:
        return len(self.entries)

    def lookup(self, name: object) -> ImageEntry:
        """The entry for a job-supplied name, or UsageError listing what exists."""
        name = validate_image_name(name)
        entry = self.entries.get(name)
        if entry is None:
            available = ", ".join(sorted(self.entries)) or "none"
            raise UsageError(f"unknown image '{name}'; available: {available}")
        return entry


@dataclass(frozen=True)
class CatalogFile:
    """One ``*.toml`` of the catalog directory: its entry, or why it was refused."""

    source: str
    entry: Optional[ImageEntry] = None
    error: Optional[RacfError] = None


def scan_catalog(directory: str,
                 check_trust: Optional[Callable[[str], object]] = None) -> Iterator[CatalogFile]:
    """Every ``*.toml`` in ``directory`` (dot-files and other names are ignored), in name
    order, each parsed or with the error that refused it; the scan goes on after an error.

    ``check_trust`` (e.g. pathtrust.check_trusted_file) is called with each file's path
    before it is read and raises to refuse it; symlinked entries are refused anyway.
    ConfigError when the directory itself cannot be read.
    """
    try:
        dirfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise ConfigError(f"{directory}: cannot open the image catalog: {e.strerror}") from None
    try:
        for filename in sorted(os.listdir(dirfd)):
            if not filename.endswith(".toml") or filename.startswith("."):
                continue
            source = os.path.join(directory, filename)
            try:
                if check_trust is not None:
                    check_trust(source)
                data = read_capped(filename, MAX_CATALOG_FILE, "catalog file", error=ConfigError,
                                   dir_fd=dirfd)
                yield CatalogFile(source, entry=parse_image_entry(data, source))
            except RacfError as exc:
                yield CatalogFile(source, error=exc)
    finally:
        os.close(dirfd)


def load_catalog(directory: str,
                 check_trust: Optional[Callable[[str], object]] = None) -> Catalog:
    """The whole catalog; the first refused file refuses it all (a job must never run
    against a catalog the admin did not mean)."""
    entries: dict[str, ImageEntry] = {}
    for item in scan_catalog(directory, check_trust):
        if item.error is not None:
            raise item.error
        entries[item.entry.name] = item.entry
    return Catalog(entries, directory)
