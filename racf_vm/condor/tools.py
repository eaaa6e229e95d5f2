"""What every HTCondor-facing tool of racf-vm shares: its one exit path and its config.

Tools: racf-vm-libvirt-xml (root, LIBVIRT_XML_SCRIPT), racf-vm-hook-prepare and
racf-vm-hook-exit (the job's user), racf-vm-transfer (the job's user), racf-vm-route-translate
and racf-vm-route-finalize (the JobRouter's account). Each takes an optional leading
``--config PATH`` (LIBVIRT_XML_SCRIPT_ARGS and <KEYWORD>_HOOK_PREPARE_JOB_ARGS can pass it;
the default is the installed /etc/racf-vm/racf-vm.toml) before the arguments HTCondor gives.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Callable, Optional

from racf_vm.core import errors, logsetup
from racf_vm.core.errors import RacfError, UsageError

log = logging.getLogger(__name__)

DEFAULT_CONFIG = "/etc/racf-vm/racf-vm.toml"


def split_config_option(argv: list[str]) -> tuple[str, list[str]]:
    """``(config path, the remaining arguments)`` from ``[--config PATH] ARGS...``."""
    if argv[:1] == ["--config"]:
        if len(argv) < 2:
            raise UsageError("--config needs a path")
        return argv[1], argv[2:]
    if argv and argv[0].startswith("--config="):
        return argv[0][len("--config="):], argv[1:]
    return DEFAULT_CONFIG, list(argv)


def load_config(path: str):
    """The site config, after the safefile walk of its path (works unprivileged too)."""
    from racf_vm import config as config_mod
    from racf_vm.trust import pathtrust

    pathtrust.check_trusted_file(path)
    return config_mod.load_config(path)


def load_config_if_present(path: str):
    """For tools on an access point, which may have no racf-vm config: the defaults when
    the file does not exist, else the trusted file."""
    from racf_vm import config as config_mod

    if not os.path.lexists(path):
        return config_mod.Config()
    return load_config(path)


def run_tool(body: Callable[[], int], *, on_error: Optional[Callable[[RacfError], int]] = None) -> int:
    """Run ``body``; a RacfError becomes one line ``racf-vm: ...`` on stderr and its
    sysexits status (or what ``on_error`` returns after reporting it its own way)."""
    logsetup.configure("racf-vm: %(message)s", "warning")
    # classad2 reads HTCondor's configuration when it starts: these tools need none of it,
    # and a daemon's CONDOR_CONFIG must not make it print to our stderr
    os.environ["CONDOR_CONFIG"] = "ONLY_ENV"
    try:
        return body()
    except RacfError as exc:
        return _fail(exc, on_error)
    except Exception as exc:  # a bug: one line for HTCondor's log, the traceback at debug
        log.debug("internal error", exc_info=True)
        return _fail(errors.InternalError(f"internal error: {type(exc).__name__}: {exc}"), on_error)


def _fail(exc: RacfError, on_error) -> int:
    if on_error is not None:
        return on_error(exc)
    print(f"racf-vm: {' '.join(exc.message.split())}", file=sys.stderr)
    return exc.exit_status
