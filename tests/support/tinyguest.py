"""A tiny busybox guest for libvirt tests: the Debian kernel plus an initramfs built here.

The initramfs holds busybox-static, the virtio_console module and its dependencies (from
modules.dep) and an /init that finds the racf channels via /sys/class/virtio-ports/*/name,
writes to them and powers off. Kernel command line ``racftest=hang`` makes it sleep
forever instead (for autodestroy tests). No dependency on the project's image recipes.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tests.support.hostkernel import installed_kernel

BUSYBOX = "/bin/busybox"
WANTED_MODULES = ("kernel/drivers/virtio/virtio_pci.ko", "kernel/drivers/char/virtio_console.ko")

GUEST_STDOUT = b"hello from the guest\n"
GUEST_STDERR = b"a warning from the guest\n"
GUEST_OUTPUT = b"OUTPUT-BYTES" * 100
GUEST_EXIT = 7

INIT = r"""#!/bin/sh
export PATH=/bin
mkdir -p /proc /sys /dev
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /modules.order); do insmod /modules/$m || echo "insmod $m failed"; done
port() {
  for p in /sys/class/virtio-ports/*; do
    [ "$(cat $p/name 2>/dev/null)" = "$1" ] && { echo /dev/${p##*/}; return 0; }
  done
  return 1
}
i=0
while [ $i -lt 100 ]; do
  port org.racf.vm.status >/dev/null && port org.racf.vm.output >/dev/null && break
  sleep 0.1; i=$((i+1))
done
if grep -q racftest=hang /proc/cmdline; then
  echo started > $(port org.racf.vm.status)
  while true; do sleep 3600; done
fi
echo started > $(port org.racf.vm.status)
printf 'hello from the guest\n' > $(port org.racf.vm.stdout)
printf 'a warning from the guest\n' > $(port org.racf.vm.stderr)
i=0; while [ $i -lt 100 ]; do printf 'OUTPUT-BYTES'; i=$((i+1)); done > $(port org.racf.vm.output)
echo "exit 7" > $(port org.racf.vm.status)
sync
poweroff -f
"""


def kernel() -> str:
    """The kernel image to boot with the initramfs (the host's newest complete kernel)."""
    return str(installed_kernel().vmlinuz)


def _module_closure(module_dir: Path) -> list[str]:
    """Modules needed for WANTED_MODULES, dependencies first (from modules.dep)."""
    deps: dict[str, list[str]] = {}
    for line in (module_dir / "modules.dep").read_text().splitlines():
        mod, _, rest = line.partition(":")
        deps[mod] = rest.split()
    order: list[str] = []

    def visit(mod: str) -> None:
        if mod in order:
            return
        for dep in reversed(deps[mod]):
            visit(dep)
        order.append(mod)

    for mod in WANTED_MODULES:
        visit(mod)
    return order


class _Cpio:
    """Minimal cpio "newc" writer."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.ino = 1

    def _entry(self, name: str, mode: int, body: bytes = b"") -> None:
        nameb = name.encode() + b"\0"
        fields = [self.ino, mode, 0, 0, 1, 0, len(body), 0, 0, 0, 0, len(nameb), 0]
        self.ino += 1
        self.data += b"070701" + b"".join(b"%08X" % f for f in fields) + nameb
        self.data += b"\0" * (-len(self.data) % 4)
        self.data += body
        self.data += b"\0" * (-len(self.data) % 4)

    def dir(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, body: bytes, perm: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | perm, body)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return bytes(self.data)


def build_initramfs(dest: str) -> str:
    """Write the initramfs (uncompressed newc cpio) to ``dest``; mode 0644. Its modules come
    from the same kernel as ``kernel()``."""
    module_dir = installed_kernel().modules
    mods = _module_closure(module_dir)
    c = _Cpio()
    for d in ("bin", "dev", "proc", "sys", "modules"):
        c.dir(d)
    c.file("bin/busybox", Path(BUSYBOX).read_bytes(), 0o755)
    for applet in ("sh", "mount", "mkdir", "insmod", "cat", "sleep", "grep", "printf",
                   "echo", "poweroff", "sync", "true"):
        c.symlink(f"bin/{applet}", "busybox")
    for mod in mods:
        c.file(f"modules/{os.path.basename(mod)}", (module_dir / mod).read_bytes())
    c.file("modules.order", "".join(os.path.basename(m) + "\n" for m in mods).encode())
    c.file("init", INIT.encode(), 0o755)
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(c.finish())
    os.chmod(dest, 0o644)
    return dest
