"""The one place racf-vm runs external commands.

Absolute paths only, an explicit minimal environment, captured output, a timeout, and a
CommandError carrying the command, its status and its stderr when it fails.
"""

import logging
import os
import subprocess
from typing import Mapping, Optional, Sequence

from racf_vm.core.errors import CommandError, InternalError

log = logging.getLogger(__name__)

SAFE_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


def run(
    argv: Sequence[str],
    *,
    env: Optional[Mapping[str, str]] = None,
    input: Optional[bytes] = None,
    timeout: float = 120.0,
    check: bool = True,
    what: str = "",
) -> subprocess.CompletedProcess:
    """Run ``argv`` (argv[0] must be absolute) and return the completed process.

    ``env`` is added to a fixed safe environment; nothing is inherited from ours.
    """
    if not argv or not os.path.isabs(argv[0]):
        raise InternalError(f"refusing to run a command without an absolute path: {argv!r}")
    full_env = dict(SAFE_ENV)
    if env:
        full_env.update(env)
    log.debug("running %r", list(argv))
    try:
        proc = subprocess.run(
            list(argv),
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            env=full_env,
            timeout=timeout,
            close_fds=True,
            cwd="/",
        )
    except subprocess.TimeoutExpired as exc:
        raise CommandError(argv, "timeout", f"timed out after {timeout:g}s", what=what) from exc
    except OSError as exc:
        raise CommandError(argv, "not run", str(exc), what=what) from exc
    if check and proc.returncode != 0:
        raise CommandError(argv, proc.returncode, proc.stderr.decode(errors="replace"), what=what)
    return proc
