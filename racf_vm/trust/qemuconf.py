"""Refuse libvirt set-ups that would run guests' QEMU as root (security.md §3f)."""

import os
import re

from racf_vm.core.errors import ConfigError, RefusedError
from racf_vm.core.files import read_capped

QEMU_CONF = "/etc/libvirt/qemu.conf"
MAX_QEMU_CONF = 1 << 20
_SETTING = re.compile(r'^\s*(user|group|dynamic_ownership)\s*=\s*("?)([^"#\s]*)\2', re.M)


def qemu_conf_problems(text: str) -> list:
    """Reasons why this qemu.conf text is unsafe for racf-vm (empty when it is fine)."""
    problems = []
    for key, _, value in _SETTING.findall(text):
        if key in ("user", "group") and value in ("root", "0", "+0"):
            problems.append(f'{key} = "{value}" makes QEMU run as root, so a guest escape is a root escape')
        if key == "dynamic_ownership" and value == "0":
            problems.append("dynamic_ownership = 0 is the usual companion of running QEMU as root")
    return problems


def check_qemu_conf(path: str = QEMU_CONF) -> None:
    if not os.path.lexists(path):
        return  # libvirt's defaults: QEMU runs as libvirt-qemu
    text = read_capped(path, MAX_QEMU_CONF, "libvirt's qemu.conf", error=ConfigError,
                       follow_symlinks=True).decode("utf-8", errors="replace")
    problems = qemu_conf_problems(text)
    if problems:
        raise RefusedError(f"{path}: {problems[0]}; remove it and restart libvirtd")
