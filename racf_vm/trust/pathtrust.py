"""Is a path trustworthy for root? HTCondor safefile semantics (security.md §0 rule 10).

A path is trusted only if nobody but root could have changed what it names: starting at
"/", every directory walked through and the final object are owned by root and not
writable by group or others. Nothing is resolved implicitly: each component is lstat'ed,
and a symlink is followed by hand (bounded), its target walked with the same rules.
A sticky world-writable directory (/tmp) protects entries from deletion, but anyone may
create names in it, so nothing beneath it is trusted.

Only stat information is used: this checks a path at one moment. Callers that then open
the file should still open with O_NOFOLLOW and fstat what they got.
"""

import os
import stat
from typing import Callable, List

from racf_vm.core.errors import RefusedError

_MAX_SYMLINKS = 40  # the kernel's own limit for one lookup
_FIX = "make it owned by root and not writable by group or others"


def _refuse(path: str, reason: str) -> RefusedError:
    return RefusedError(f"untrusted path: {path} {reason}; {_FIX}")


def _check_object(path: str, st: os.stat_result) -> None:
    """The rules for one directory or final object (never a symlink)."""
    if st.st_uid != 0:
        raise _refuse(path, f"is owned by uid {st.st_uid}")
    mode = st.st_mode
    if stat.S_ISDIR(mode) and mode & stat.S_IWOTH and mode & stat.S_ISVTX:
        raise RefusedError(
            f"untrusted path: {path} is a sticky world-writable directory (like /tmp) and "
            f"nothing under it is trusted; move the file to a root-owned directory"
        )
    if mode & stat.S_IWOTH:
        raise _refuse(path, "is writable by others")
    if mode & stat.S_IWGRP:
        raise _refuse(path, f"is writable by group (gid {st.st_gid})")


def _split(path: str) -> List[str]:
    return [c for c in path.split("/") if c not in ("", ".")]


def _walk(path: str, lstat: Callable, readlink: Callable) -> os.stat_result:
    """Check every component of ``path``; return the stat of the object it names."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise RefusedError(f"untrusted path: {path!r} is not absolute; use an absolute path")
    if "\0" in path:
        raise RefusedError(f"untrusted path: {path!r} contains a NUL byte")

    def do_lstat(p: str) -> os.stat_result:
        try:
            return lstat(p)
        except OSError as exc:
            raise RefusedError(f"cannot check {p}: {exc.strerror}; check that it exists") from exc

    cur = "/"  # always a symlink-free path whose every component passed the checks
    cur_st = do_lstat("/")
    _check_object("/", cur_st)
    todo = _split(path)
    links = 0
    while todo:
        name = todo.pop(0)
        if not stat.S_ISDIR(cur_st.st_mode):
            raise RefusedError(f"untrusted path: {cur} is not a directory (in {path})")
        if name == "..":
            # The parent of a checked path was itself checked on the way down.
            cur = os.path.dirname(cur)
            cur_st = do_lstat(cur)
            continue
        p = os.path.join(cur, name)
        st = do_lstat(p)
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > _MAX_SYMLINKS:
                raise RefusedError(f"untrusted path: too many symlinks in {path}")
            try:
                target = readlink(p)
            except OSError as exc:
                raise RefusedError(f"cannot read symlink {p}: {exc.strerror}") from exc
            if target.startswith("/"):
                cur, cur_st = "/", do_lstat("/")
            todo = _split(target) + todo  # relative targets resolve from cur
            continue
        _check_object(p, st)
        cur, cur_st = p, st
    return cur_st


def check_trusted_file(path: str, *, lstat: Callable = os.lstat,
                       readlink: Callable = os.readlink) -> None:
    """Refuse unless ``path`` names a trusted regular file reached through trusted dirs."""
    st = _walk(path, lstat, readlink)
    if not stat.S_ISREG(st.st_mode):
        raise RefusedError(f"untrusted path: {path} is not a regular file; point to a file")


def check_trusted_dir(path: str, *, lstat: Callable = os.lstat,
                      readlink: Callable = os.readlink) -> None:
    """Refuse unless ``path`` names a trusted directory reached through trusted dirs."""
    st = _walk(path, lstat, readlink)
    if not stat.S_ISDIR(st.st_mode):
        raise RefusedError(f"untrusted path: {path} is not a directory; point to a directory")
