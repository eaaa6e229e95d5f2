"""Contextualize an overlay with libguestfs in a child process under a time limit.

libguestfs has no overall timeout and its appliance can hang (hostile filesystem, a
stuck QEMU): running it in its own process group lets us kill all of it at the deadline
or when HTCondor asks us to stop.
"""

import logging
import time
from typing import Callable, Sequence

from racf_vm.core.child import run_in_child
from racf_vm.core.errors import TemporaryError
from racf_vm.guest.appliance import fixed_appliance
from racf_vm.guest.context import GuestEntry
from racf_vm.guest.guestfs import GuestfsSettings, guestfs_apply

log = logging.getLogger(__name__)


def contextualize(
    overlay: str,
    filesystem: str,
    entries: Sequence[GuestEntry],
    settings: GuestfsSettings,
    *,
    timeout: float,
    cancelled: Callable[[], bool] = lambda: False,
) -> float:
    """Write ``entries`` into ``overlay``; returns the seconds it took."""
    started = time.monotonic()

    def body(_stream) -> bool:  # root, in its own process group
        guestfs_apply(overlay, filesystem, entries, settings, fixed_appliance(settings.cachedir))
        return True

    report = run_in_child(body, timeout=timeout, what="contextualization with libguestfs",
                          cancelled=cancelled)
    payload = report.payload or {}
    if not payload.get("ok"):
        reason = payload.get("message") or f"the libguestfs helper died (wait status {report.wait_status})"
        raise TemporaryError("contextualizing the guest with libguestfs failed: "
                             + " ".join(str(reason).split())[-600:])
    elapsed = time.monotonic() - started
    log.info("contextualized %s in %.1fs", overlay, elapsed)
    return elapsed
