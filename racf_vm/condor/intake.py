"""Reading one job's request from what HTCondor hands the wrapper.

Runs in the unprivileged child (racf_vm.trust.privsep): the wrapper's argv, the
environment blob the shim saved, ``.job.ad`` and ``.machine.ad`` are all the user's.
Identity (uid, gid, user name) is given by the caller from the kernel, never taken from
the ad or the environment.
"""

import posixpath

from racf_vm.condor import storage, userfiles
from racf_vm.condor.ads import read_job_ad, read_machine_ad
from racf_vm.condor.environment import filter_guest_env, parse_env_blob
from racf_vm.condor.request import JobRequest
from racf_vm.condor.values import normalize_abs_path
from racf_vm.condor.wrapperargs import WrapperArgs, parse_wrapper_argv
from racf_vm.config import LimitsConfig
from racf_vm.core.errors import UsageError
from racf_vm.images.catalog import validate_image_name


def build_request(argv: list[str], env_blob: bytes, uid: int, gid: int, user: str,
                  limits: LimitsConfig) -> JobRequest:
    """Read everything the job supplies and return a validated JobRequest.

    ``uid``, ``gid`` and ``user`` come from the kernel (the shim's getuid()/getgid() and
    the passwd entry of that uid); the ads and the environment cannot change them.
    """
    wargs = parse_wrapper_argv(argv)
    image = validate_image_name(wargs.image)
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
        profile=wargs.profile,
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
        export_scratch=wargs.export_scratch,
        **_storage(wargs, workdir, limits),
    )
    return request.validate(limits)


def _storage(wargs: WrapperArgs, workdir: str, limits: LimitsConfig) -> dict:
    fields: dict = {}
    if wargs.scratch is not None:
        fields["scratch_bytes"], fields["scratch_path"] = storage.parse_scratch(
            wargs.scratch, limits.max_scratch_bytes, workdir)
    if wargs.data is not None:
        name, path, mode, fmt = storage.parse_data(wargs.data, workdir, wargs.data_format)
        size = userfiles.check_data_file(workdir, name, fmt, limits.max_data_bytes)
        fields.update(data_file=name, data_path=path, data_mode=mode, data_format=fmt, data_bytes=size)
    elif wargs.data_format is not None:
        raise UsageError("--data-format goes with --data")
    return fields


def build_request_json(argv: list[str], env_blob: str | bytes, uid: int, gid: int, user: str,
                       limits: LimitsConfig) -> str:
    """``build_request(...).to_json()`` for the privsep child.

    ``env_blob`` may arrive as a latin-1 decoded str (a lossless carrier for the bytes).
    """
    if isinstance(env_blob, str):
        env_blob = env_blob.encode("latin-1")
    return build_request(argv, env_blob, uid, gid, user, limits).to_json()
