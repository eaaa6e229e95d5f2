"""Small process helpers shared by the children racf-vm forks."""

import os
import signal


def kill_group(pid: int) -> None:
    """SIGKILL the process group led by ``pid`` and reap the leader."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    os.waitpid(pid, 0)
