"""The job's request, reduced to one validated value.

A ``JobRequest`` is built by the unprivileged child (racf_vm.condor.intake) and travels
to the privileged parent as JSON, where ``JobRequest.from_json`` runs the very same
validators again: the parent never trusts the child's word (security.md §0 rules 2 and 3).
Arguments and environment values are data: any UTF-8 text without NUL, newlines
included, capped in count and size (security.md §5 rows 10 and 29).
"""

import dataclasses
import json
import re
from dataclasses import dataclass
from typing import Optional

from racf_vm.condor import storage
from racf_vm.condor.ads import SUBMIT_HINT
from racf_vm.condor.environment import ENV_NAME_RE
from racf_vm.condor.values import check_abs_path, check_int, check_text
from racf_vm.config import LimitsConfig
from racf_vm.config.integration import PROFILE_NAME_RE
from racf_vm.core.errors import RefusedError, UsageError
from racf_vm.images.catalog import validate_image_name

USER_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}\$?")
SLOT_RE = re.compile(r"[A-Za-z0-9_.@-]{1,128}")
# Kernel "no id" / overflow ids; never a job identity.
BAD_IDS = frozenset({65534, 2**32 - 2, 2**32 - 1})


@dataclass(frozen=True)
class JobRequest:
    """What one job asks for, validated. Built by the unprivileged child."""

    image: str
    command: str
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    user: str
    uid: int
    gid: int
    workdir: str
    slot: str
    cluster: int
    proc: int
    machine_hint_cpus: Optional[int] = None
    machine_hint_memory_mib: Optional[int] = None
    profile: Optional[str] = None  # an instance profile name (-p); the site's list decides
    # storage (racf_vm.condor.storage): 0 / "" when not asked for
    scratch_bytes: int = 0
    scratch_path: str = ""
    data_file: str = ""  # a plain name in the sandbox
    data_path: str = ""
    data_mode: str = ""  # "ro" | "rw"
    data_format: str = ""  # "qcow2" | "raw"
    data_bytes: int = 0  # its virtual size when the request was made (root checks its copy)
    export_scratch: bool = False

    def validate(self, limits: LimitsConfig) -> "JobRequest":
        """Check every field against the format rules and the site limits; return self.

        UsageError for a malformed request, RefusedError for a forbidden identity.
        """
        validate_image_name(self.image)
        check_text("VM_Command", self.command, limits.max_arg_bytes)
        if not self.command:
            raise UsageError(f"VM_Command is empty: {SUBMIT_HINT}")
        if not isinstance(self.args, tuple):
            raise UsageError("arguments must be a list")
        if len(self.args) + 1 > limits.max_args:
            raise UsageError(f"{len(self.args)} arguments, more than the limit of "
                             f"{limits.max_args - 1}")
        for i, a in enumerate(self.args):
            check_text(f"argument {i + 1}", a, limits.max_arg_bytes)
        if not isinstance(self.env, tuple):
            raise UsageError("environment must be a list")
        total = 0
        names = set()
        for item in self.env:
            if not (isinstance(item, tuple) and len(item) == 2):
                raise UsageError("environment entries must be name/value pairs")
            name, value = item
            if not isinstance(name, str) or not ENV_NAME_RE.fullmatch(name):
                raise UsageError(f"invalid environment variable name {name!r:.80}")
            if name in names:
                raise UsageError(f"environment variable {name} given twice")
            names.add(name)
            check_text(f"environment variable {name}", value, limits.max_env_bytes)
            total += len(name) + 2 + len(value.encode("utf-8"))
        if total > limits.max_env_bytes:
            raise UsageError(f"environment is {total} bytes, more than the limit of "
                             f"{limits.max_env_bytes}")
        if not isinstance(self.user, str) or not USER_RE.fullmatch(self.user):
            raise UsageError(f"invalid user name {self.user!r:.80}")
        for what, ident in (("uid", self.uid), ("gid", self.gid)):
            check_int(what, ident, 0, 2**32 - 1)
        if self.uid < limits.min_uid or self.uid in BAD_IDS:
            raise RefusedError(f"refusing to run a VM for uid {self.uid} "
                               f"(system and overflow uids are not allowed; min_uid is "
                               f"{limits.min_uid})")
        if self.gid == 0 or self.gid in BAD_IDS:
            raise RefusedError(f"refusing to run a VM for gid {self.gid}")
        check_abs_path("working directory (_CONDOR_SCRATCH_DIR)", self.workdir)
        if not isinstance(self.slot, str) or not SLOT_RE.fullmatch(self.slot):
            raise UsageError(f"invalid slot name {self.slot!r:.80}")
        check_int("ClusterId", self.cluster)
        check_int("ProcId", self.proc)
        if self.machine_hint_cpus is not None:
            check_int("machine ad Cpus", self.machine_hint_cpus, 1, 2**20)
        if self.machine_hint_memory_mib is not None:
            check_int("machine ad Memory", self.machine_hint_memory_mib, 1, 2**40)
        if self.profile is not None and not (isinstance(self.profile, str)
                                             and PROFILE_NAME_RE.fullmatch(self.profile)):
            raise UsageError(f"invalid profile name {self.profile!r:.80}")
        self._validate_storage(limits)
        return self

    def _validate_storage(self, limits: LimitsConfig) -> None:
        if self.scratch_bytes or self.scratch_path:
            check_int("scratch size", self.scratch_bytes, 512, limits.max_scratch_bytes)
            storage.check_mount_path(self.scratch_path, "--scratch", self.workdir)
        if self.data_file or self.data_path:
            storage.parse_data(f"{self.data_file}:{self.data_path}:{self.data_mode}", self.workdir,
                               self.data_format)
            check_int("data size", self.data_bytes, 1, limits.max_data_bytes)
            a, b = self.data_path, self.scratch_path
            if b and (a == b or a.startswith(b + "/") or b.startswith(a + "/")):
                raise UsageError("--data and --scratch cannot be mounted one on or in the other")
        if not isinstance(self.export_scratch, bool):
            raise UsageError("export_scratch must be true or false")
        if self.export_scratch and not (self.scratch_bytes or self.data_mode == "rw"):
            raise UsageError("--export-scratch needs --scratch SIZE or --data FILE:PATH:rw")

    def to_json(self) -> str:
        """Serialize for the privsep pipe (ensure_ascii keeps it 7-bit clean)."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes, limits: LimitsConfig) -> "JobRequest":
        """Rebuild and fully re-validate a request received from the unprivileged child."""
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            raise UsageError("job request is not valid JSON") from None
        if not isinstance(data, dict) or set(data) != {f.name for f in dataclasses.fields(cls)}:
            raise UsageError("job request has missing or unexpected fields")
        args, env = data["args"], data["env"]
        if not isinstance(args, list) or not isinstance(env, list):
            raise UsageError("job request arguments and environment must be lists")
        if not all(isinstance(e, list) and len(e) == 2 for e in env):
            raise UsageError("job request environment entries must be pairs")
        data["args"] = tuple(args)
        data["env"] = tuple(tuple(e) for e in env)
        return cls(**data).validate(limits)
