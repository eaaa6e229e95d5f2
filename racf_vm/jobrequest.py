"""The job's request, read from untrusted sources and reduced to one validated value.

Everything here runs in the unprivileged child (racf_vm.privsep) on data the job user
controls: the wrapper's argv, the environment blob the shim saved, ``.job.ad`` and
``.machine.ad``. The result is a ``JobRequest`` that travels to the privileged parent as
JSON, where ``JobRequest.from_json`` runs the very same validators again: the parent never
trusts the child's word (security.md §0 rules 2 and 3).

Identity (uid, gid, user name) is given by the caller from the kernel, never taken from
the ad or the environment. Arguments and environment values are data: any UTF-8 text
without NUL, newlines included, capped in count and size (security.md §5 rows 10 and 29).
"""

import json
import os
import posixpath
import re
import stat
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from . import condor_args
from .catalog import validate_image_name
from .config import LimitsConfig
from .errors import RefusedError, UsageError

ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
USER_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}\$?")
SLOT_RE = re.compile(r"[A-Za-z0-9_.@-]{1,128}")
MAX_PATH = 4096
MAX_ID = 2**63 - 1
# Kernel "no id" / overflow ids; never a job identity.
BAD_IDS = frozenset({65534, 2**32 - 2, 2**32 - 1})

USAGE = (
    "usage: vm -i IMAGE  (submit file: executable = /usr/local/racf/vm, "
    "arguments = -i IMAGE, transfer_executable = false, "
    '+VM_Command = "/path/to/program", +VM_Args = "its arguments")'
)
SUBMIT_HINT = 'put +VM_Command = "/path/to/program" (and optionally +VM_Args = "...") in the submit file'

# --- guest environment filter --------------------------------------------------------
# Rule: everything the job had goes to the guest EXCEPT
#  1. names that change how a loader, libc or shell behaves before the job's own code runs
#     (the in-guest runner is root until it drops to the job user): prefixes LD_ and
#     BASH_FUNC_, glibc's list of variables it ignores for setuid programs, and shell
#     start-up/parsing variables;
#  2. names that only make sense on the host: HTCondor's channels back to the starter
#     (chirp, wrapper error file, job pids, starter pid, condor binaries, port range) and
#     per-login host sockets. _CONDOR_SCRATCH_DIR, _CONDOR_JOB_AD and other sandbox paths
#     stay: the guest's working directory is the same path.
DENY_PREFIXES = ("LD_", "BASH_FUNC_")
DENY_NAMES = frozenset({
    # shell start-up and parsing
    "BASH_ENV", "ENV", "IFS", "SHELLOPTS", "BASHOPTS", "PS4", "PROMPT_COMMAND", "CDPATH",
    "GLOBIGNORE", "BASH_XTRACEFD", "POSIXLY_CORRECT",
    # glibc UNSECURE_ENVVARS (not covered by LD_)
    "GCONV_PATH", "GETCONF_DIR", "GLIBC_TUNABLES", "HOSTALIASES", "LOCALDOMAIN", "LOCPATH",
    "MALLOC_TRACE", "NIS_PATH", "NLSPATH", "RESOLV_HOST_CONF", "RES_OPTIONS", "TZDIR",
    # HTCondor channels that point back into the host
    "_CONDOR_CHIRP_CONFIG", "_CONDOR_WRAPPER_ERROR_FILE", "_CONDOR_JOB_PIDS",
    "CONDOR_STARTER_PID", "_CONDOR_BIN", "_CONDOR_HIGHPORT", "_CONDOR_LOWPORT",
    "_CHIRP_DELAYED_UPDATE_PREFIX",
    # host login session
    "SSH_AUTH_SOCK", "XDG_RUNTIME_DIR", "DBUS_SESSION_BUS_ADDRESS", "DISPLAY", "XAUTHORITY",
})


def guest_env_allowed(name: str) -> bool:
    """True when variable ``name`` of the job may be passed into the guest."""
    return name not in DENY_NAMES and not name.startswith(DENY_PREFIXES)


def filter_guest_env(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The job's environment as the guest receives it, sorted by name (see rule above)."""
    return tuple(sorted((k, v) for k, v in env.items() if guest_env_allowed(k)))


# --- value checks shared by build_request and from_json -------------------------------

def _check_text(what: str, value: Any, max_bytes: int) -> str:
    """Data text: str, UTF-8 encodable, no NUL, at most ``max_bytes`` bytes."""
    if not isinstance(value, str):
        raise UsageError(f"{what} must be a string")
    if "\0" in value:
        raise UsageError(f"{what} contains a NUL character")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise UsageError(f"{what} is not valid UTF-8") from None
    if size > max_bytes:
        raise UsageError(f"{what} is {size} bytes, more than the limit of {max_bytes}")
    return value


def _check_int(what: str, value: Any, minimum: int = 0, maximum: int = MAX_ID) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise UsageError(f"{what} must be an integer in {minimum}..{maximum}, not {value!r:.40}")
    return value


def _check_abs_path(what: str, value: Any) -> str:
    """An absolute, lexically normalized path on one line."""
    value = _check_text(what, value, MAX_PATH)
    if not value.startswith("/") or "\n" in value or "\r" in value:
        raise UsageError(f"{what} must be an absolute path on one line, not {value!r:.80}")
    if posixpath.normpath(value) != value or value.startswith("//"):
        raise UsageError(f"{what} is not a normalized path: {value!r:.80}")
    return value


def normalize_abs_path(what: str, value: str) -> str:
    """Normalize a path the user gave (e.g. _CONDOR_SCRATCH_DIR) and check it."""
    _check_text(what, value, MAX_PATH)
    if not value.startswith("/"):
        raise UsageError(f"{what} must be an absolute path, not {value!r:.80}")
    norm = posixpath.normpath(value)
    if norm.startswith("//"):
        norm = "/" + norm.lstrip("/")
    return _check_abs_path(what, norm)


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

    def validate(self, limits: LimitsConfig) -> "JobRequest":
        """Check every field against the format rules and the site limits; return self.

        UsageError for a malformed request, RefusedError for a forbidden identity.
        """
        validate_image_name(self.image)
        _check_text("VM_Command", self.command, limits.max_arg_bytes)
        if not self.command:
            raise UsageError(f"VM_Command is empty: {SUBMIT_HINT}")
        if not isinstance(self.args, tuple):
            raise UsageError("arguments must be a list")
        if len(self.args) + 1 > limits.max_args:
            raise UsageError(f"{len(self.args)} arguments, more than the limit of "
                             f"{limits.max_args - 1}")
        for i, a in enumerate(self.args):
            _check_text(f"argument {i + 1}", a, limits.max_arg_bytes)
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
            _check_text(f"environment variable {name}", value, limits.max_env_bytes)
            total += len(name) + 2 + len(value.encode("utf-8"))
        if total > limits.max_env_bytes:
            raise UsageError(f"environment is {total} bytes, more than the limit of "
                             f"{limits.max_env_bytes}")
        if not isinstance(self.user, str) or not USER_RE.fullmatch(self.user):
            raise UsageError(f"invalid user name {self.user!r:.80}")
        for what, ident in (("uid", self.uid), ("gid", self.gid)):
            _check_int(what, ident, 0, 2**32 - 1)
        if self.uid < limits.min_uid or self.uid in BAD_IDS:
            raise RefusedError(f"refusing to run a VM for uid {self.uid} "
                               f"(system and overflow uids are not allowed; min_uid is "
                               f"{limits.min_uid})")
        if self.gid == 0 or self.gid in BAD_IDS:
            raise RefusedError(f"refusing to run a VM for gid {self.gid}")
        _check_abs_path("working directory (_CONDOR_SCRATCH_DIR)", self.workdir)
        if not isinstance(self.slot, str) or not SLOT_RE.fullmatch(self.slot):
            raise UsageError(f"invalid slot name {self.slot!r:.80}")
        _check_int("ClusterId", self.cluster)
        _check_int("ProcId", self.proc)
        if self.machine_hint_cpus is not None:
            _check_int("machine ad Cpus", self.machine_hint_cpus, 1, 2**20)
        if self.machine_hint_memory_mib is not None:
            _check_int("machine ad Memory", self.machine_hint_memory_mib, 1, 2**40)
        return self

    def to_json(self) -> str:
        """Serialize for the privsep pipe (ensure_ascii keeps it 7-bit clean)."""
        return json.dumps({
            "image": self.image,
            "command": self.command,
            "args": list(self.args),
            "env": [[k, v] for k, v in self.env],
            "user": self.user,
            "uid": self.uid,
            "gid": self.gid,
            "workdir": self.workdir,
            "slot": self.slot,
            "cluster": self.cluster,
            "proc": self.proc,
            "machine_hint_cpus": self.machine_hint_cpus,
            "machine_hint_memory_mib": self.machine_hint_memory_mib,
        }, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes, limits: LimitsConfig) -> "JobRequest":
        """Rebuild and fully re-validate a request received from the unprivileged child."""
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            raise UsageError("job request is not valid JSON") from None
        expected = {f for f in cls.__dataclass_fields__}
        if not isinstance(data, dict) or set(data) != expected:
            raise UsageError("job request has missing or unexpected fields")
        args = data["args"]
        env = data["env"]
        if not isinstance(args, list) or not isinstance(env, list):
            raise UsageError("job request arguments and environment must be lists")
        if not all(isinstance(e, list) and len(e) == 2 for e in env):
            raise UsageError("job request environment entries must be pairs")
        data["args"] = tuple(args)
        data["env"] = tuple(tuple(e) for e in env)
        return cls(**data).validate(limits)


# --- wrapper argv ------------------------------------------------------------------------

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


# --- environment blob --------------------------------------------------------------------

def parse_env_blob(blob: bytes, max_bytes: int) -> dict[str, str]:
    """Decode the shim's copy of the caller's environment (NUL-separated ``K=V``).

    Decisions: a blob larger than ``max_bytes`` is refused (UsageError); empty entries,
    entries without ``=`` and entries whose name is not ``[A-Za-z_][A-Za-z0-9_]*`` are
    dropped (no shell could export them and the guest layout cannot carry them); a value
    that is not UTF-8 is refused, naming the variable; a name given twice is refused (the
    host and the guest could otherwise disagree on which value counts). Values cannot
    contain NUL: it is the separator.
    """
    if not isinstance(blob, (bytes, bytearray)):
        raise UsageError("environment must be bytes")
    if len(blob) > max_bytes:
        raise UsageError(f"environment is {len(blob)} bytes, more than the limit of {max_bytes}")
    env: dict[str, str] = {}
    for entry in bytes(blob).split(b"\0"):
        name_b, sep, value_b = entry.partition(b"=")
        if not sep:
            continue
        try:
            name = name_b.decode("ascii")
        except UnicodeDecodeError:
            continue
        if not ENV_NAME_RE.fullmatch(name):
            continue
        try:
            value = value_b.decode("utf-8")
        except UnicodeDecodeError:
            raise UsageError(f"environment variable {name} is not valid UTF-8") from None
        if name in env:
            raise UsageError(f"environment variable {name} is set twice")
        env[name] = value
    return env


# --- job and machine ads -----------------------------------------------------------------

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


def _read_capped(path: str, max_bytes: int, what: str, missing_hint: str = "") -> str:
    """Read a user-supplied text file: regular files only, at most ``max_bytes``.

    Only UsageError escapes (privsep reports error classes by name, so no subclasses).
    """
    try:
        # O_NONBLOCK: a FIFO planted by the user must not hang us.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError:
        raise UsageError(f"{what} {path!r:.200} does not exist{missing_hint}") from None
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot open {what} {path!r:.200}: {getattr(e, 'strerror', e)}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UsageError(f"{what} {path!r:.200} is not a regular file")
        chunks = []
        size = 0
        while size <= max_bytes:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as e:
        raise UsageError(f"cannot read {what} {path!r:.200}: {e.strerror}") from None
    finally:
        os.close(fd)
    if size > max_bytes:
        raise UsageError(f"{what} is larger than the limit of {max_bytes} bytes")
    try:
        text = b"".join(chunks).decode("utf-8")
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
    _check_text("VM_Command", command, max_arg_bytes)
    if not command:
        raise UsageError(f"VM_Command is empty: {SUBMIT_HINT}")
    raw_args = _ad_get(ad, "VM_Args")
    if raw_args is None:
        args: list[str] = []
    elif isinstance(raw_args, str):
        args = condor_args.parse_args(raw_args)
    else:
        raise UsageError('VM_Args must be a quoted string, e.g. +VM_Args = "a b c"')
    if len(args) + 1 > max_args:
        raise UsageError(f"VM_Args has {len(args)} arguments, more than the limit of "
                         f"{max_args - 1}")
    for i, a in enumerate(args):
        _check_text(f"argument {i + 1}", a, max_arg_bytes)
    ids = []
    for attr in ("ClusterId", "ProcId"):
        value = _ad_get(ad, attr)
        if value is None:
            ids.append(0)  # labels only; a hand-made ad may lack them
        else:
            ids.append(_check_int(attr, value))
    return JobAdInfo(command=command, args=tuple(args), cluster=ids[0], proc=ids[1])


def read_job_ad(path: str, max_bytes: int, *, max_arg_bytes: int = 131072,
                max_args: int = 4096) -> JobAdInfo:
    """Read ``.job.ad`` (user-writable) with a size cap and extract what racf-vm needs."""
    text = _read_capped(path, max_bytes, "the job ad", f": {SUBMIT_HINT}")
    return parse_job_ad_text(text, max_arg_bytes, max_args)


def read_machine_ad(path: str, max_bytes: int) -> MachineHints:
    """Cpus and Memory (MiB) from ``.machine.ad``; anything missing or odd gives None."""
    try:
        ad = _parse_ad(_read_capped(path, max_bytes, "the machine ad"), "the machine ad")
    except UsageError:
        return MachineHints(None, None)
    values = []
    for attr, limit in (("Cpus", 2**20), ("Memory", 2**40)):
        v = _ad_get(ad, attr)
        ok = isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= limit
        values.append(v if ok else None)
    return MachineHints(cpus=values[0], memory_mib=values[1])


# --- putting it together -----------------------------------------------------------------

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
