"""The starter's job hooks: ``racf-vm-hook-prepare`` (PREPARE_JOB) and ``racf-vm-hook-exit``
(JOB_EXIT), htcondor.md §5.

The starter runs both as the job's user, with the environment it gives the job
(``_CONDOR_SCRATCH_DIR``, ``_CONDOR_JOB_AD``, ...), the job ad on stdin (old syntax), in
its own working directory; PREPARE_JOB's stdout is merged into the job ad. Neither is
privileged and nothing either makes is trusted by root later: the wrapper reads the job
ad as user data, LIBVIRT_XML_SCRIPT re-validates a staged disk and boots its own overlay.

PREPARE_JOB, for a job with ``VM_Image = "NAME"``:
- vm universe: stages ``racf-NAME.qcow2`` in the sandbox (racf_vm.condor.staging) and
  prints ``VMPARAM_vm_Disk`` (the disk condor_vm-gahp and LIBVIRT_XML_SCRIPT see),
  ``RacfVMStaged`` and ``RacfVMStagedImage``;
- vanilla universe: prints the wrapper form (racf_vm.condor.wrapperform), the JAVA5
  pattern, and writes the same attributes into ``.job.ad`` (the starter wrote that file
  before the hook ran, and the wrapper reads the job's command from it).
Any other job is not racf-vm's: nothing is printed. A refusal prints ``HookStatusCode``
and ``HookStatusMessage``: 1-299 holds the job (its own mistake), 375 sends it back to
idle (this node cannot serve it now, another may).

JOB_EXIT (argv: exit|remove|hold|evict) removes the file PREPARE_JOB staged, before the
starter transfers output.
"""

from __future__ import annotations

import os
import sys
from typing import Optional

from racf_vm.condor import adio, staging, tools, wrapperform
from racf_vm.condor import attributes as A
from racf_vm.condor.values import normalize_abs_path
from racf_vm.config import LimitsConfig
from racf_vm.core import errors
from racf_vm.core.errors import RacfError, UsageError

MAX_AD_BYTES = LimitsConfig.max_job_ad_bytes
UNIVERSE_VANILLA = 5
UNIVERSE_VM = 13
EXIT_MODES = ("exit", "remove", "hold", "evict")
REQUEUE_STATUS = 300 + errors.EX_TEMPFAIL  # >= 300: back to idle, not held


def sandbox_from_env() -> str:
    value = os.environ.get("_CONDOR_SCRATCH_DIR")
    if not value:
        raise UsageError("_CONDOR_SCRATCH_DIR is not set: the starter runs this hook")
    return normalize_abs_path("_CONDOR_SCRATCH_DIR", value)


def stage_vm_job(config, image: str, sandbox: str) -> dict:
    entry = staging.verified_image(config, image)
    name = staging.staged_name(image)
    staging.make_overlay(os.path.join(sandbox, name), entry)
    return {A.ATTR_VM_DISK: f"{name}:vda:w:qcow2", A.ATTR_STAGED: name,
            A.ATTR_STAGED_IMAGE: image}


def guest_command(ad, sandbox: str) -> str:
    """The job's program as the guest sees it: the sandbox copy the starter made of a
    transferred executable (the guest's working directory is the same path, holding the
    same files), else the path as submitted."""
    cmd = wrapperform.job_command(ad)
    if not wrapperform.transfers_executable(ad):
        return cmd
    for name in (os.path.basename(cmd), "condor_exec.exe"):  # before about 10.x: the latter
        if name and os.path.isfile(os.path.join(sandbox, name)):
            return os.path.join(sandbox, name)
    raise UsageError(f"the transferred executable {os.path.basename(cmd)!r:.80} is not in the sandbox")


def rewrite_vanilla_job(config, ad, image: str, sandbox: str) -> dict:
    wrapper = config.condor.wrapper
    if wrapperform.is_wrapper_form(ad, wrapper):
        return {}
    updates = wrapperform.wrapper_form(ad, image, wrapper, guest_command(ad, sandbox))
    write_job_ad_file(os.environ.get("_CONDOR_JOB_AD") or os.path.join(sandbox, ".job.ad"), updates)
    return updates


def write_job_ad_file(path: str, updates: dict) -> None:
    """``updates`` merged into the ad file at ``path`` (the user's own; replaced whole)."""
    from racf_vm.core.files import read_capped

    text = read_capped(path, MAX_AD_BYTES, "the job ad file").decode("utf-8", "replace")
    ad = adio.parse_old_ad(text, "the job ad file")
    for name, value in updates.items():
        ad[name] = value
    body = adio.format_whole_ad(ad).encode()
    tmp = f"{path}.racf-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(body)
        os.rename(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


def prepare(config_path: str) -> dict:
    ad = adio.parse_old_ad(adio.read_stdin(MAX_AD_BYTES, "the job ad"), "the job ad")
    if not wrapperform.wants_vm(ad):
        return {}  # not racf-vm's job: the keyword may be forced on every job
    image = wrapperform.job_image(ad)
    universe = adio.lookup_int(ad, A.ATTR_JOB_UNIVERSE)
    config = tools.load_config(config_path)
    sandbox = sandbox_from_env()
    if universe == UNIVERSE_VM:
        return stage_vm_job(config, image, sandbox)
    if universe == UNIVERSE_VANILLA:
        return rewrite_vanilla_job(config, ad, image, sandbox)
    raise UsageError(f"{A.ATTR_VM_IMAGE} works for vanilla and vm universe jobs, not universe {universe}")


def _hook_refusal(exc: RacfError) -> int:
    """A refusal in the form the starter reads: HookStatusCode/Message in the output."""
    code = REQUEUE_STATUS if isinstance(exc, errors.TemporaryError) else exc.exit_status
    message = "racf-vm: " + " ".join(exc.message.split())
    sys.stdout.write(adio.format_ad({A.ATTR_HOOK_STATUS_CODE: code,
                                     A.ATTR_HOOK_STATUS_MESSAGE: message}))
    sys.stdout.flush()
    print(message, file=sys.stderr)
    return code if code < 256 else 1


def prepare_main(argv: Optional[list[str]] = None) -> int:
    def body() -> int:
        config_path, rest = tools.split_config_option(list(sys.argv[1:] if argv is None else argv))
        if rest:
            raise UsageError(f"unexpected arguments {rest!r:.80}")
        updates = prepare(config_path)
        if updates:
            sys.stdout.write(adio.format_ad(updates))
            sys.stdout.flush()
        return 0

    return tools.run_tool(body, on_error=_hook_refusal)


def exit_main(argv: Optional[list[str]] = None) -> int:
    def body() -> int:
        _config_path, rest = tools.split_config_option(list(sys.argv[1:] if argv is None else argv))
        if len(rest) != 1 or rest[0] not in EXIT_MODES:
            raise UsageError(f"usage: racf-vm-hook-exit {'|'.join(EXIT_MODES)} < job ad")
        ad = adio.parse_old_ad(adio.read_stdin(MAX_AD_BYTES, "the job ad"), "the job ad")
        staged = adio.lookup(ad, A.ATTR_STAGED)
        if staged is not None:
            staging.remove_staged(sandbox_from_env(), staged)
        return 0

    return tools.run_tool(body)
