"""Decide between KVM and TCG by booting a 512-byte boot sector, and remember the answer.

Nested KVM can be present (/dev/kvm opens) and still not boot guests (QEMU aborts, or
hangs). So the only trustworthy test is to boot something: a boot sector that writes to
an isa-debug-exit port, which makes QEMU exit with status (value << 1) | 1. Every probe
runs under a timeout (runcmd kills QEMU on expiry), so a hanging KVM means "tcg".
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from typing import Literal

from racf_vm.core import runcmd
from racf_vm.core.errors import CommandError, ConfigError, TemporaryError
from racf_vm.core.files import read_capped_or_none

log = logging.getLogger(__name__)

Accel = Literal["kvm", "tcg"]

EXIT_VALUE = 0x31
EXPECTED_STATUS = (EXIT_VALUE << 1) | 1  # 99
ACCEL_FILE = "accel.json"


def boot_sector() -> bytes:
    """Real-mode code: ``mov al,0x31; out 0xf4,al; cli; hlt; jmp $-1`` + MBR signature."""
    code = bytes([0xB0, EXIT_VALUE, 0xE6, 0xF4, 0xFA, 0xF4, 0xEB, 0xFD])
    return code + b"\0" * (510 - len(code)) + b"\x55\xaa"


def _probe(emulator: str, accel: Accel, timeout: float) -> bool:
    with tempfile.TemporaryDirectory(prefix="racf-accel-") as tmp:
        disk = os.path.join(tmp, "boot.img")
        fd = os.open(disk, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(boot_sector())
        argv = [emulator, "-accel", accel]
        if accel == "kvm":
            argv += ["-cpu", "host"]
        argv += [
            "-nodefaults", "-display", "none", "-no-reboot", "-m", "16",
            "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
            "-drive", f"file={disk},format=raw,if=ide",
        ]
        try:
            proc = runcmd.run(argv, timeout=timeout, check=False, what=f"{accel} probe")
        except CommandError as exc:  # timeout (QEMU killed) or could not run
            log.debug("%s probe failed: %s", accel, exc)
            return False
    ok = proc.returncode == EXPECTED_STATUS
    if not ok:
        log.debug("%s probe: status %s, stderr %r", accel, proc.returncode, proc.stderr[-500:])
    return ok


def probe_kvm(emulator: str, timeout: float = 10) -> bool:
    """True when ``emulator`` really boots a guest with KVM (never hangs beyond timeout)."""
    if not os.path.exists("/dev/kvm"):
        return False
    return _probe(emulator, "kvm", timeout)


def probe_tcg(emulator: str, timeout: float = 20) -> bool:
    """Sanity check: the same boot sector under TCG."""
    return _probe(emulator, "tcg", timeout)


def _cache_key(emulator: str) -> dict:
    st = os.stat(emulator)
    return {
        "kernel": os.uname().release,
        "emulator": emulator,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
    }


def _read_cache(path: str) -> dict | None:
    raw = read_capped_or_none(path, 4096, root_only=True)  # anyone else's answer is ignored
    try:
        data = json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _write_cache(state_dir: str, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".accel.", dir=state_dir)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fchown(f.fileno(), 0, 0)
            os.fchmod(f.fileno(), 0o644)
            os.fsync(f.fileno())
        os.rename(tmp, os.path.join(state_dir, ACCEL_FILE))
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def cached_accel(state_dir: str, emulator: str) -> Accel | None:
    """The probe's remembered answer if it still holds for this kernel and emulator, else
    None. Never probes: an unprivileged reader (the node advertiser) calls this."""
    try:
        key = _cache_key(emulator)
    except OSError:
        return None
    cached = _read_cache(os.path.join(state_dir, ACCEL_FILE))
    if cached and cached.get("key") == key and cached.get("accel") in ("kvm", "tcg"):
        return cached["accel"]
    return None


def choose_accel(
    config_accel: str,
    state_dir: str,
    emulator: str = "/usr/bin/qemu-system-x86_64",
    timeout: float = 10,
) -> Accel:
    """``config_accel`` is "kvm" or "tcg" (forced by the site) or "auto" (probe, cached)."""
    if config_accel in ("kvm", "tcg"):
        return config_accel  # type: ignore[return-value]
    if config_accel != "auto":
        raise ConfigError(f"accel must be auto, kvm or tcg, not {config_accel!r}")
    try:
        key = _cache_key(emulator)
    except OSError as exc:
        raise ConfigError(f"the emulator {emulator} is missing", detail=str(exc)) from exc
    path = os.path.join(state_dir, ACCEL_FILE)
    cached = cached_accel(state_dir, emulator)
    if cached is not None:
        return cached
    if probe_kvm(emulator, timeout):
        accel: Accel = "kvm"
    elif probe_tcg(emulator, timeout * 2):
        accel = "tcg"
    else:
        raise TemporaryError(f"{emulator} boots nothing, neither with KVM nor with TCG")
    try:
        _write_cache(state_dir, {"key": key, "accel": accel})
    except OSError as exc:  # the answer is still right; only the cache failed
        log.warning("could not record %s: %s", path, exc)
    return accel
