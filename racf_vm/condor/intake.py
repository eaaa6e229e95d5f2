"""Reading one job's request from what HTCondor hands the wrapper.

Runs in the unprivileged child (racf_vm.trust.privsep): the wrapper's argv, the
environment blob the shim saved, ``.job.ad`` and ``.machine.ad`` are all the user's.
Identity (uid, gid, user name) is given by the caller from the kernel, never taken from
the ad or the environment.
"""

import posixpath
from dataclasses import dataclass
from typing import Optional

from racf_vm.condor.ads import read_job_ad, read_machine_ad
from racf_vm.condor.environment import filter_guest_env, parse_env_blob
from racf_vm.condor.request import JobRequest
from racf_vm.condor.values import normalize_abs_path
from racf_vm.config import LimitsConfig
from racf_vm.config.integration import PROFILE_NAME_RE
from racf_vm.core.errors import UsageError
from racf_vm.images.catalog import validate_image_name

USAGE = (
    "usage: vm -i IMAGE [-p PROFILE]  (submit file: executable = /usr/local/racf/vm, "
    "arguments = -i IMAGE, transfer_executable = false, "
    '+VM_Command = "/path/to/program", +VM_Args = "its arguments")'
)
# (short form, long form, WrapperArgs field)
_OPTIONS = (("-i", "--image", "image"), ("-p", "--profile", "profile"))


@dataclass(frozen=True)
class WrapperArgs:
    """What the wrapper's own arguments ask for: an image, and maybe an instance profile."""

    image: str
    profile: Optional[str] = None


def _option(argv: list[str], i: int) -> tuple[str, str, int]:
    """The field, value and next index of the option at ``argv[i]`` (``-x V``, ``-xV``,
    ``--long V``, ``--long=V``); UsageError for anything else."""
    a = argv[i]
    for short, long, field in _OPTIONS:
        if a in (short, long):
            if i + 1 >= len(argv):
                raise UsageError(f"{a} needs {'an' if field == 'image' else 'a'} {field} name; {USAGE}")
            return field, argv[i + 1], i + 2
        if a.startswith(long + "="):
            return field, a[len(long) + 1:], i + 1
        if a.startswith(short) and not a.startswith("--"):
            return field, a[len(short):], i + 1
    raise UsageError(f"unexpected argument {a!r:.80}; {USAGE}")


def parse_wrapper_argv(argv: list[str]) -> WrapperArgs:
    """The image (``-i IMAGE``, ``-iIMAGE``, ``--image IMAGE``, ``--image=IMAGE``) and the
    optional instance profile (``-p``/``--profile``, same forms) from the wrapper's own
    arguments; anything else is a UsageError with the usage. Whether the profile exists is
    the site's to say (racf_vm.config.integration.find_profile); here only its form."""
    found: dict[str, str] = {}
    i = 0
    while i < len(argv):
        field, value, i = _option(argv, i)
        if field in found:
            raise UsageError(f"the {field} is given twice; {USAGE}")
        found[field] = value
    if "image" not in found:
        raise UsageError(f"no image given; {USAGE}")
    profile = found.get("profile")
    if profile is not None and not PROFILE_NAME_RE.fullmatch(profile):
        raise UsageError(f"invalid profile name {profile!r:.80}: use lower-case letters, digits "
                         f"and '_', starting with a letter; {USAGE}")
    return WrapperArgs(validate_image_name(found["image"]), profile)


def build_request(argv: list[str], env_blob: bytes, uid: int, gid: int, user: str,
                  limits: LimitsConfig) -> JobRequest:
    """Read everything the job supplies and return a validated JobRequest.

    ``uid``, ``gid`` and ``user`` come from the kernel (the shim's getuid()/getgid() and
    the passwd entry of that uid); the ads and the environment cannot change them.
    """
    wanted = parse_wrapper_argv(argv)
    env = parse_env_blob(env_blob, limits.max_env_bytes)
    scratch = env.get("_CONDOR_SCRATCH_DIR")
    if not scratch:
        raise UsageError("_CONDOR_SCRATCH_DIR is not set: racf-vm must be run by HTCondor "
                         "as a vanilla job's executable")
    workdir = normalize_abs_path("_CONDOR_SCRATCH_DIR", scratch)
    job_ad_path = env.get("_CONDOR_JOB_AD") or posixpath.join(workdir, ".job.ad")
    ad = read_job_ad(job_ad_path, limits.max_job_ad_bytes,
                     max_arg_bytes=limits.max_arg_bytes, max_args=limits.max_args)
    machine_ad_path = env.get("_CONDOR_MACHINE_AD") or posixpath.join(workdir, ".machine.ad")
    hints = read_machine_ad(machine_ad_path, limits.max_job_ad_bytes)
    slot = env.get("_CONDOR_SLOT") or "slot"
    request = JobRequest(
        image=wanted.image,
        profile=wanted.profile,
        command=ad.command,
        args=ad.args,
        env=filter_guest_env(env),
        user=user,
        uid=uid,
        gid=gid,
        workdir=workdir,
        slot=slot,
        cluster=ad.cluster,
        proc=ad.proc,
        machine_hint_cpus=hints.cpus,
        machine_hint_memory_mib=hints.memory_mib,
    )
    return request.validate(limits)


def build_request_json(argv: list[str], env_blob: str | bytes, uid: int, gid: int, user: str,
                       limits: LimitsConfig) -> str:
    """``build_request(...).to_json()`` for the privsep child.

    ``env_blob`` may arrive as a latin-1 decoded str (a lossless carrier for the bytes).
    """
    if isinstance(env_blob, str):
        env_blob = env_blob.encode("latin-1")
    return build_request(argv, env_blob, uid, gid, user, limits).to_json()
