"""Reading one job's request from what HTCondor hands the wrapper.

Runs in the unprivileged child (racf_vm.trust.privsep): the wrapper's argv, the
environment blob the shim saved, ``.job.ad`` and ``.machine.ad`` are all the user's.
Identity (uid, gid, user name) is given by the caller from the kernel, never taken from
the ad or the environment.
"""

import posixpath
from typing import Optional

from racf_vm.condor.ads import read_job_ad, read_machine_ad
from racf_vm.condor.environment import filter_guest_env, parse_env_blob
from racf_vm.condor.request import JobRequest
from racf_vm.condor.values import normalize_abs_path
from racf_vm.config import LimitsConfig
from racf_vm.core.errors import UsageError
from racf_vm.images.catalog import validate_image_name

USAGE = (
    "usage: vm -i IMAGE  (submit file: executable = /usr/local/racf/vm, "
    "arguments = -i IMAGE, transfer_executable = false, "
    '+VM_Command = "/path/to/program", +VM_Args = "its arguments")'
)


def parse_wrapper_argv(argv: list[str]) -> str:
    """The image name from the wrapper's own arguments (``-i IMAGE``, ``-iIMAGE``,
    ``--image IMAGE``, ``--image=IMAGE``); anything else is a UsageError with the usage."""
    image: Optional[str] = None
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("-i", "--image"):
            if i + 1 >= len(argv):
                raise UsageError(f"{a} needs an image name; {USAGE}")
            value = argv[i + 1]
            i += 2
        elif a.startswith("--image="):
            value = a[len("--image="):]
            i += 1
        elif a.startswith("-i") and not a.startswith("--"):
            value = a[2:]
            i += 1
        else:
            raise UsageError(f"unexpected argument {a!r:.80}; {USAGE}")
        if image is not None:
            raise UsageError(f"the image is given twice; {USAGE}")
        image = value
    if image is None:
        raise UsageError(f"no image given; {USAGE}")
    return validate_image_name(image)


def build_request(argv: list[str], env_blob: bytes, uid: int, gid: int, user: str,
                  limits: LimitsConfig) -> JobRequest:
    """Read everything the job supplies and return a validated JobRequest.

    ``uid``, ``gid`` and ``user`` come from the kernel (the shim's getuid()/getgid() and
    the passwd entry of that uid); the ads and the environment cannot change them.
    """
    image = parse_wrapper_argv(argv)
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
        image=image,
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
