"""The job's environment: the shim's copy of it, and what of it the guest receives.

Runs in the unprivileged child (racf_vm.trust.privsep) on data the job user controls.
"""

import re
from typing import Mapping

from racf_vm.core.errors import UsageError

ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

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
