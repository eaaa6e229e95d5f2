"""Write a catalog entry: ``<catalog_dir>/<name>.toml``, atomically, root's, 0644.

``render_entry`` is pure and its output is parsed back with the catalog's own reader
before anything is written, so a file this module writes is always one the catalog
accepts, with exactly the values given.
"""

from __future__ import annotations

import dataclasses
import os
import time

from racf_vm.core.errors import ConfigError, InternalError
from racf_vm.images.catalog import FOLLOW, ImageEntry, parse_image_entry
from racf_vm.images.fsutil import temp_file
from racf_vm.trust import pathtrust


def toml_string(value: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    out = []
    for ch in value:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def render_entry(entry: ImageEntry, note: str = "") -> bytes:
    """The catalog file for ``entry`` (pure)."""
    q = toml_string
    lines = [f"# {line}" for line in note.splitlines()] + [
        f"name = {q(entry.name)}",
        f"trust = {q(entry.trust)}",
        f"credentials = {'true' if entry.credentials else 'false'}",
        f"path = {q(entry.path)}",
        f"format = {q(entry.format)}",
        f"sha256 = {q(FOLLOW if entry.follow else entry.sha256)}",
    ]
    if entry.size and not entry.follow:
        lines.append(f"size = {entry.size}")
    lines += ["", "[boot]", f"method = {q(entry.boot.method)}"]
    if entry.boot.method == "kernel":
        lines += [f"kernel = {q(entry.boot.kernel)}", f"initrd = {q(entry.boot.initrd)}"]
        if entry.boot.cmdline:
            lines.append(f"cmdline = {q(entry.boot.cmdline)}")
    ctx = entry.context
    lines += ["", "[context]", f"filesystem = {q(ctx.filesystem)}", f"fstype = {q(ctx.fstype)}",
              f"hook = {q(ctx.hook)}", ""]
    return "\n".join(lines).encode("utf-8")


def check_template(entry: ImageEntry) -> None:
    """Refuse (ConfigError naming the key) what the catalog would refuse, before any work."""
    sample = entry if entry.follow or entry.sha256 else dataclasses.replace(entry, sha256="0" * 64)
    parse_image_entry(render_entry(sample), f"{entry.name}.toml")


def write_entry(catalog_dir: str, entry: ImageEntry, *, replace: bool = False) -> str:
    """Write ``entry`` as ``<catalog_dir>/<name>.toml`` (root 0644, atomically); its path.
    ConfigError if the entry exists and ``replace`` is not given."""
    if os.geteuid() == 0:
        pathtrust.check_trusted_dir(catalog_dir)
    path = os.path.join(catalog_dir, f"{entry.name}.toml")
    if os.path.lexists(path) and not replace:
        raise ConfigError(f"{path} already exists; pass --replace to overwrite it")
    note = f"Written by racf-vm images add, {time.strftime('%Y-%m-%d %H:%M:%S %z')}."
    data = render_entry(entry, note)
    if parse_image_entry(data, path) != entry:
        raise InternalError(f"the catalog entry for {entry.name} does not read back as written")
    with temp_file(catalog_dir, f"{entry.name}.toml") as tmp:
        tmp.write(data)
        if os.geteuid() == 0:
            os.fchown(tmp.fd, 0, 0)
        tmp.commit(0o644)
    return path
