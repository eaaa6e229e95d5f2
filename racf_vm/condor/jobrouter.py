"""The JobRouter hooks (htcondor.md §8): ``racf-vm-route-translate`` (TRANSLATE_JOB) and
``racf-vm-route-finalize`` (JOB_FINALIZE), on the access point.

The JobRouter runs them with no arguments (here an optional ``--config``; the access
point may have no racf-vm config at all, then the defaults hold), the route's ad, a line
``------`` and a job ad on stdin, and reads stdout; they must exit 0.

TRANSLATE_JOB prints the complete routed job. A vanilla job with ``VM_Image = "NAME"``
becomes the wrapper form (racf_vm.condor.wrapperform): its own ``Cmd`` and arguments become
``VM_Command`` and ``VM_Args`` (every argument kept as submitted); a transferred
executable is transferred as an input file instead, and runs in the guest as
``./<its name>`` from the job's working directory, which holds the job's input files;
``Requirements`` gain the node's advertised readiness and image:
``(<original>) && (TARGET.RacfVMCanRun =?= true) && (member("NAME", TARGET.RacfVMImages) =?= true)``.
A job without ``VM_Image``, or already in the wrapper form (only its requirements
change), is otherwise printed as it came.

JOB_FINALIZE prints, for the source job, the routed job's exit status: ``ExitCode``,
``ExitBySignal``, ``ExitSignal``, ``ExitStatus`` (each only when present, with its type).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Optional

from racf_vm.condor import adio, tools, wrapperform
from racf_vm.condor import attributes as A
from racf_vm.config import LimitsConfig
from racf_vm.core.errors import UsageError

MAX_INPUT_BYTES = 2 * LimitsConfig.max_job_ad_bytes  # two ads
VANILLA = 5
EXIT_TYPES = {"ExitCode": int, "ExitBySignal": bool, "ExitSignal": int, "ExitStatus": int}


def image_requirement(image: str) -> str:
    """The match on what the node advertises (racf_vm.condor.attributes), as ClassAd text."""
    import classad2

    return (f"(TARGET.{A.ATTR_READY} =?= true) && "
            f"(member({classad2.quote(image)}, TARGET.{A.ATTR_IMAGES}) =?= true)")


def _expression_text(value: Any) -> str:
    """An attribute's value as expression text written by classad2 (True when absent)."""
    import classad2

    if value is None:
        return "true"
    if isinstance(value, classad2.ExprTree):
        return str(value)
    ad = classad2.ClassAd()
    ad["X"] = value
    return ad.printOld().partition("=")[2].strip()


def with_requirements(ad, image: str):
    import classad2

    old = _expression_text(adio.lookup(ad, A.ATTR_REQUIREMENTS))
    return classad2.ExprTree(f"({old}) && {image_requirement(image)}")


def with_input(ad, path: str) -> str:
    """``TransferInput`` with ``path`` added (a comma-separated list)."""
    current = adio.lookup(ad, A.ATTR_TRANSFER_INPUT)
    if current is not None and not isinstance(current, str):
        raise UsageError("TransferInput must be a string list to add the executable to it")
    if "," in path:
        raise UsageError(f"the executable's path {path!r:.80} holds a comma, which a transfer "
                         "list cannot carry")
    items = [i.strip() for i in (current or "").split(",") if i.strip()]
    return ",".join(items + [path])


def translate(job, wrapper: str):
    """The routed job (a new classad2.ClassAd) for the source job ``job``."""
    import classad2

    routed = classad2.ClassAd()
    routed.update(job)
    if not wrapperform.wants_vm(job):
        return routed
    image = wrapperform.job_image(job)
    if adio.lookup(job, A.ATTR_JOB_UNIVERSE) not in (None, VANILLA):
        raise UsageError(f"{A.ATTR_VM_IMAGE} is for vanilla jobs: the router rewrites them into "
                         "the wrapper form")
    routed[A.ATTR_REQUIREMENTS] = with_requirements(job, image)
    if wrapperform.is_wrapper_form(job, wrapper):
        return routed
    cmd = wrapperform.job_command(job)
    if wrapperform.transfers_executable(job):
        routed[A.ATTR_TRANSFER_INPUT] = with_input(job, cmd)
        vm_command = "./" + os.path.basename(cmd)
    else:
        vm_command = cmd
    routed.update(wrapperform.wrapper_form(job, image, wrapper, vm_command))
    if A.ATTR_ARGS in routed:
        del routed[A.ATTR_ARGS]  # Arguments now hold the wrapper's
    return routed


def finalize(routed) -> dict:
    """The exit status of the routed job, for the source job."""
    out = {}
    for name, kind in EXIT_TYPES.items():
        value = adio.lookup(routed, name)
        if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
            out[name] = value
    return out


def _read_pair(what: str):
    first, second = adio.split_router_input(adio.read_stdin(MAX_INPUT_BYTES, what), what)
    return adio.parse_old_ad(first, f"the first ad of {what}"), \
        adio.parse_old_ad(second, f"the second ad of {what}")


def _no_arguments(argv: Optional[list[str]]) -> str:
    config_path, rest = tools.split_config_option(list(sys.argv[1:] if argv is None else argv))
    if rest:
        raise UsageError(f"unexpected arguments {rest!r:.80} (JobRouter hooks take none)")
    return config_path


def translate_main(argv: Optional[list[str]] = None) -> int:
    def body() -> int:
        config = tools.load_config_if_present(_no_arguments(argv))
        _route, job = _read_pair("TRANSLATE_JOB's input")
        sys.stdout.write(adio.format_whole_ad(translate(job, config.condor.wrapper)))
        return 0

    return tools.run_tool(body)


def finalize_main(argv: Optional[list[str]] = None) -> int:
    def body() -> int:
        _no_arguments(argv)
        _source, routed = _read_pair("JOB_FINALIZE's input")
        updates = finalize(routed)
        if updates:
            sys.stdout.write(adio.format_ad(updates))
        return 0

    return tools.run_tool(body)
