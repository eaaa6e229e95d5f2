"""A vanilla job in the wrapper form: the documented JAVA5 pattern (htcondor.md §5), used by
the PREPARE_JOB hook on the execute node and by the JobRouter's TRANSLATE_JOB hook.

    Cmd = "/usr/local/racf/vm"          (the setuid wrapper, [condor] wrapper)
    Arguments = "-i NAME"               (the job's VM_Image)
    TransferExecutable = false          (the starter must run the installed wrapper)
    VM_Command = the job's own program  (as the guest finds it)
    VM_Args = the job's own arguments   (V2 syntax: every argument exactly as submitted)

Pure: ads in, typed attribute values out; classad2 writes them.
"""

from __future__ import annotations

from typing import Any

from racf_vm.condor import adio, arguments
from racf_vm.condor import attributes as A
from racf_vm.condor.values import check_text
from racf_vm.core.errors import UsageError
from racf_vm.images.catalog import validate_image_name

MAX_TEXT = 131072


def wants_vm(ad) -> bool:
    return adio.lookup(ad, A.ATTR_VM_IMAGE) is not None


def job_image(ad) -> str:
    value = adio.lookup(ad, A.ATTR_VM_IMAGE)
    if not isinstance(value, str):
        raise UsageError(f'{A.ATTR_VM_IMAGE} must be a quoted string, e.g. +VM_Image = "NAME"')
    return validate_image_name(value)


def job_command(ad) -> str:
    cmd = adio.lookup(ad, A.ATTR_CMD)
    if not isinstance(cmd, str) or not cmd:
        raise UsageError("the job has no Cmd (executable) to run in the VM")
    return check_text("the job's executable", cmd, MAX_TEXT)


def transfers_executable(ad) -> bool:
    """TransferExecutable as submitted (absent: true, HTCondor's default)."""
    value = adio.lookup(ad, A.ATTR_TRANSFER_EXECUTABLE)
    return value is not False


def is_wrapper_form(ad, wrapper: str) -> bool:
    return adio.lookup(ad, A.ATTR_CMD) == wrapper


def wrapper_form(ad, image: str, wrapper: str, vm_command: str) -> dict[str, Any]:
    """The attribute updates that turn the vanilla job ``ad`` into the wrapper form, the
    job's program (``vm_command``, as the guest will find it) and arguments kept."""
    args = arguments.parse_ad_arguments(adio.lookup(ad, A.ATTR_ARGUMENTS), adio.lookup(ad, A.ATTR_ARGS))
    for i, a in enumerate(args):
        check_text(f"argument {i + 1}", a, MAX_TEXT)
        adio.check_printable(f"argument {i + 1}", a)
    check_text(A.ATTR_VM_COMMAND, vm_command, MAX_TEXT)
    return {
        A.ATTR_CMD: wrapper,
        A.ATTR_ARGUMENTS: f"-i {validate_image_name(image)}",
        A.ATTR_TRANSFER_EXECUTABLE: False,
        A.ATTR_VM_COMMAND: vm_command,
        A.ATTR_VM_ARGS: arguments.quote_v2(args),
    }
