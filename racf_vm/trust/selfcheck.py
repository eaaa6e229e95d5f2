"""The privileged side checks its own runtime before it trusts anything (security.md §0.1 step 8).

Run first thing in the root process the shim exec'd, before the config is parsed and long
before any user input is read. Every object whose content decides what root executes must
be changeable by root only (HTCondor safefile semantics, racf_vm.pathtrust):

- the interpreter: ``sys.executable`` (every symlink on the way walked) and its realpath;
- the project's packages (racf_vm and netpolicy): every directory and file in them, at
  any depth (subpackages, ``__pycache__``);
- every ``sys.path`` entry: the directory (or zip) itself and each top-level entry in it
  (modules, packages, ``.pth`` files); a missing entry's nearest existing ancestor, since
  whoever can create it decides what gets imported;
- every module already imported (its file);
- the site config file;
- ``/etc/libvirt/qemu.conf`` must not make QEMU run as root (libvirt_policy).

It also clears the dumpable flag: the shim set it, but execve of the interpreter reset it.

Nothing is cached between runs; one run costs a few milliseconds (a few thousand lstat()
calls; measured by tests/unit/test_selfcheck.py).
"""

from __future__ import annotations

import ctypes
import os
import stat
import sys
from typing import Iterable, Optional

from racf_vm.core.errors import InternalError, RefusedError
from racf_vm.trust import pathtrust
from racf_vm.trust import qemuconf as libvirt_policy

PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3


def set_not_dumpable() -> None:
    """prctl(PR_SET_DUMPABLE, 0): no core dumps, no ptrace attach by the caller's uid."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise InternalError(f"prctl(PR_SET_DUMPABLE, 0) failed: {os.strerror(err)}")
    if libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise InternalError("the process is still dumpable after PR_SET_DUMPABLE")


def _check_entry(path: str, st: os.stat_result) -> None:
    """One object inside an already-trusted directory (symlinks are walked in full)."""
    if stat.S_ISLNK(st.st_mode):
        # Its target must be trusted wherever it points (a dangling link is refused too).
        _walk_any(path)
        return
    pathtrust._check_object(path, st)


def _walk_any(path: str) -> os.stat_result:
    """Walk ``path`` with safefile rules whatever it names; return the final stat."""
    return pathtrust._walk(path, os.lstat, os.readlink)


MAX_PACKAGE_DEPTH = 16


def _check_dir_entries(directory: str, recursive: bool = False, depth: int = 0) -> int:
    """Check every entry of a trusted directory; with ``recursive``, every subdirectory
    too (subpackages, ``__pycache__``, data: whatever an import could read)."""
    if depth > MAX_PACKAGE_DEPTH:
        raise RefusedError(f"untrusted path: {directory} is nested too deep (a symlink loop?)")
    count = 0
    try:
        it = os.scandir(directory)
    except OSError as exc:
        raise RefusedError(f"cannot list {directory}: {exc.strerror}") from exc
    with it:
        for entry in it:
            st = entry.stat(follow_symlinks=False)
            _check_entry(entry.path, st)
            count += 1
            if recursive and entry.is_dir(follow_symlinks=True):
                count += _check_dir_entries(entry.path, True, depth + 1)
    return count


def _nearest_existing(path: str) -> str:
    p = path
    while p != "/" and not os.path.lexists(p):
        p = os.path.dirname(p)
    return p


def check_interpreter(executable: Optional[str] = None) -> None:
    exe = executable if executable is not None else sys.executable
    if not exe or not os.path.isabs(exe):
        raise RefusedError(f"untrusted interpreter: {exe!r} is not an absolute path")
    pathtrust.check_trusted_file(exe)
    real = os.path.realpath(exe)
    if real != exe:
        pathtrust.check_trusted_file(real)


def project_packages() -> tuple[str, ...]:
    """The directories of every package of the project (racf_vm and netpolicy), found
    without importing them: nothing of theirs runs before it is checked."""
    import importlib.util

    racf_vm_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.find_spec("netpolicy")
    if spec is None or not spec.submodule_search_locations:
        raise RefusedError("the netpolicy package is missing; reinstall racf-vm (make install)")
    return (racf_vm_dir, *spec.submodule_search_locations)


def check_package(package_dir: Optional[str] = None) -> int:
    """Every file under the project's packages (or under ``package_dir``), at any depth."""
    count = 0
    for pkg in (package_dir,) if package_dir else project_packages():
        pathtrust.check_trusted_dir(pkg)
        count += _check_dir_entries(pkg, recursive=True)
    return count


def check_sys_path(paths: Optional[Iterable[str]] = None) -> int:
    count = 0
    for entry in list(sys.path if paths is None else paths):
        if not entry or not os.path.isabs(entry):
            raise RefusedError(
                f"untrusted path: sys.path entry {entry!r} is relative (the current directory "
                "would be searched); the wrapper must run with python -I"
            )
        if not os.path.lexists(entry):
            pathtrust.check_trusted_dir(_nearest_existing(entry))
            continue
        st = _walk_any(entry)
        if stat.S_ISDIR(st.st_mode):
            count += _check_dir_entries(entry)
        elif not stat.S_ISREG(st.st_mode):  # a zip archive is a file
            raise RefusedError(f"untrusted path: sys.path entry {entry} is neither a directory nor a file")
    return count


def check_loaded_modules(modules: Optional[dict] = None) -> int:
    count = 0
    for mod in list((sys.modules if modules is None else modules).values()):
        path = getattr(mod, "__file__", None)
        if isinstance(path, str) and os.path.isabs(path) and os.path.exists(path):
            pathtrust.check_trusted_file(path)
            count += 1
    return count


def check_runtime_trust(config_path: str, *, qemu_conf: str = libvirt_policy.QEMU_CONF) -> None:
    """Refuse (RefusedError naming the path and why) unless this process may be trusted."""
    set_not_dumpable()
    check_interpreter()
    check_package()
    check_sys_path()
    check_loaded_modules()
    pathtrust.check_trusted_file(config_path)
    libvirt_policy.check_qemu_conf(qemu_conf)
