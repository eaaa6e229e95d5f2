"""The wrapper's own arguments (the submit file's ``arguments``), parsed strictly.

``-i IMAGE`` (also ``-iIMAGE``, ``--image IMAGE``, ``--image=IMAGE``) is required;
``-p PROFILE`` (same forms; an instance profile: its name only here, the site's list
decides whether it exists), ``--scratch SIZE[:PATH]``, ``--data FILE[:PATH[:ro|rw]]``, ``--data-format qcow2|raw`` and
``--export-scratch`` are optional. Each at most once; anything else is a UsageError that
shows the usage. Values are returned as given: racf_vm.condor.intake checks them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from racf_vm.config.integration import PROFILE_NAME_RE
from racf_vm.core.errors import UsageError

USAGE = (
    "usage: vm -i IMAGE [-p PROFILE] [--scratch SIZE[:PATH]] [--data FILE[:PATH[:ro|rw]]] "
    "[--data-format qcow2|raw] [--export-scratch]  (submit file: executable = /usr/local/racf/vm, "
    "arguments = -i IMAGE, transfer_executable = false, "
    '+VM_Command = "/path/to/program", +VM_Args = "its arguments")'
)
# option -> (field, what its value is; None: it takes none)
OPTIONS = {
    "--image": ("image", "an image name"),
    "--profile": ("profile", "a profile name"),
    "--scratch": ("scratch", "a size (SIZE[:PATH])"),
    "--data": ("data", "a file (FILE[:PATH[:ro|rw]])"),
    "--data-format": ("data_format", "a format (qcow2 or raw)"),
    "--export-scratch": ("export_scratch", None),
}
SHORT = {"-i": "--image", "-p": "--profile"}


@dataclass(frozen=True)
class WrapperArgs:
    image: str
    profile: Optional[str] = None
    scratch: Optional[str] = None
    data: Optional[str] = None
    data_format: Optional[str] = None
    export_scratch: bool = False


def parse_wrapper_argv(argv: list[str]) -> WrapperArgs:
    found: dict = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        name, value = arg, None
        if arg.startswith("--") and "=" in arg:
            name, _, value = arg.partition("=")
        elif arg[:2] in SHORT and len(arg) > 2:
            name, value = arg[:2], arg[2:]
        name = SHORT.get(name, name)
        if name not in OPTIONS:
            raise UsageError(f"unexpected argument {arg!r:.80}; {USAGE}")
        field, value_is = OPTIONS[name]
        takes_value = value_is is not None
        if field in found:
            raise UsageError(f"{name} is given twice; {USAGE}")
        if takes_value and value is None:
            if i >= len(argv):
                raise UsageError(f"{arg} needs a value: {value_is}; {USAGE}")
            value = argv[i]
            i += 1
        elif not takes_value and value is not None:
            raise UsageError(f"{name} takes no value; {USAGE}")
        found[field] = value if takes_value else True
    if "image" not in found:
        raise UsageError(f"no image given; {USAGE}")
    profile = found.get("profile")
    if profile is not None and not PROFILE_NAME_RE.fullmatch(profile):
        raise UsageError(f"invalid profile name {profile!r:.80}: use lower-case letters, digits "
                         f"and '_', starting with a letter; {USAGE}")
    return WrapperArgs(**found)
