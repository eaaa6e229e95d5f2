"""``.job.ad`` and ``.machine.ad``: user-writable files, read in the unprivileged child.

Only the few attributes racf-vm uses are looked at, without evaluating anything.
"""

import re
from dataclasses import dataclass
from typing import Optional

from racf_vm.condor import arguments
from racf_vm.condor.values import check_int, check_text
from racf_vm.core.errors import UsageError
from racf_vm.core.files import read_capped

SUBMIT_HINT = 'put +VM_Command = "/path/to/program" (and optionally +VM_Args = "...") in the submit file'


@dataclass(frozen=True)
class JobAdInfo:
    """The few job-ad attributes racf-vm uses; nothing else is looked at."""

    command: str
    args: tuple[str, ...]
    cluster: int
    proc: int


@dataclass(frozen=True)
class MachineHints:
    """Slot size claimed by ``.machine.ad``: user-writable, so only ever a hint."""

    cpus: Optional[int]
    memory_mib: Optional[int]


def _read_text(path: str, max_bytes: int, what: str, missing_hint: str = "") -> str:
    """A user-supplied text file (UTF-8, no NUL) of at most ``max_bytes``.

    Only UsageError escapes (privsep reports error classes by name, so no subclasses).
    """
    data = read_capped(path, max_bytes, what, follow_symlinks=True, missing_hint=missing_hint)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{what} is not valid UTF-8") from None
    if "\0" in text:
        raise UsageError(f"{what} contains a NUL byte")
    return text


def _parse_ad(text: str, what: str):
    import classad2  # heavy C extension: loaded only when an ad is read

    try:
        return classad2.parseOne(text)
    except Exception as e:  # the library raises several types; all mean "bad ad"
        raise UsageError(f"cannot parse {what}: {str(e)[:200]}") from None


def _ad_get(ad, name: str):
    """Look an attribute up without evaluating it (ClassAd names are case-insensitive)."""
    try:
        return ad[name]
    except KeyError:
        return None
    except Exception:  # an attribute the bindings cannot convert is as good as absent
        return None


def _check_not_lost(ad, text: str, names: tuple[str, ...]) -> None:
    """classad2 silently stops at the first line it cannot parse (e.g. a raw newline in
    an old-syntax string); refuse rather than run the job with its arguments dropped."""
    for name in names:
        if _ad_get(ad, name) is None and re.search(
            r"^[ \t\[;]*%s\s*=" % name, text, re.IGNORECASE | re.MULTILINE
        ):
            raise UsageError(f"the job ad could not be parsed at {name} (a line break inside "
                             "a string?)")


def parse_job_ad_text(text: str, max_arg_bytes: int = 131072, max_args: int = 4096) -> JobAdInfo:
    """Extract VM_Command, VM_Args, ClusterId, ProcId from the text of a job ad."""
    ad = _parse_ad(text, "the job ad")
    _check_not_lost(ad, text, ("VM_Command", "VM_Args", "ClusterId", "ProcId"))
    command = _ad_get(ad, "VM_Command")
    if command is None:
        raise UsageError(f"the job ad has no VM_Command: {SUBMIT_HINT}")
    if not isinstance(command, str):
        raise UsageError(f"VM_Command must be a quoted string: {SUBMIT_HINT}")
    check_text("VM_Command", command, max_arg_bytes)
    if not command:
        raise UsageError(f"VM_Command is empty: {SUBMIT_HINT}")
    raw_args = _ad_get(ad, "VM_Args")
    if raw_args is None:
        args: list[str] = []
    elif isinstance(raw_args, str):
        args = arguments.parse_args(raw_args)
    else:
        raise UsageError('VM_Args must be a quoted string, e.g. +VM_Args = "a b c"')
    if len(args) + 1 > max_args:
        raise UsageError(f"VM_Args has {len(args)} arguments, more than the limit of "
                         f"{max_args - 1}")
    for i, a in enumerate(args):
        check_text(f"argument {i + 1}", a, max_arg_bytes)
    ids = []
    for attr in ("ClusterId", "ProcId"):
        value = _ad_get(ad, attr)
        if value is None:
            ids.append(0)  # labels only; a hand-made ad may lack them
        else:
            ids.append(check_int(attr, value))
    return JobAdInfo(command=command, args=tuple(args), cluster=ids[0], proc=ids[1])


def read_job_ad(path: str, max_bytes: int, *, max_arg_bytes: int = 131072,
                max_args: int = 4096) -> JobAdInfo:
    """Read ``.job.ad`` (user-writable) with a size cap and extract what racf-vm needs."""
    text = _read_text(path, max_bytes, "the job ad", f": {SUBMIT_HINT}")
    return parse_job_ad_text(text, max_arg_bytes, max_args)


def read_machine_ad(path: str, max_bytes: int) -> MachineHints:
    """Cpus and Memory (MiB) from ``.machine.ad``; anything missing or odd gives None."""
    try:
        ad = _parse_ad(_read_text(path, max_bytes, "the machine ad"), "the machine ad")
    except UsageError:
        return MachineHints(None, None)
    values = []
    for attr, limit in (("Cpus", 2**20), ("Memory", 2**40)):
        v = _ad_get(ad, attr)
        ok = isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= limit
        values.append(v if ok else None)
    return MachineHints(cpus=values[0], memory_mib=values[1])
