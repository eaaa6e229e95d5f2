"""Prove that our parent process is the real condor_starter (security.md §0.2).

Runs as root (after the shim), before anything acts on the job's request. All /proc
reads go through one directory fd of /proc/<ppid>, so they all concern the same process;
if that process dies and its pid is recycled, reads through the old fd fail instead of
describing the new process, and the final getppid() re-check catches a reparenting.
"""

import errno
import os

from racf_vm.core.errors import RefusedError

_RUN_BY_CONDOR = (
    "racf-vm must be run by HTCondor as a job's executable (transfer_executable = false)"
)
_DELETED = " (deleted)"


def _refuse(what: str, todo: str = _RUN_BY_CONDOR) -> RefusedError:
    return RefusedError(f"{what}; {todo}")


def _real_uid(status_text: str) -> int:
    for line in status_text.splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise ValueError("no Uid line")


def check_parent(starter_path: str, *, allow_pid_ns_init: bool = False) -> int:
    """Return our parent's pid if it is condor_starter at ``starter_path``; else refuse."""
    ppid = os.getppid()
    if ppid <= 1:
        if allow_pid_ns_init:
            raise _refuse(
                f"the parent process is pid {ppid} (a pid namespace init?), and the "
                "condor_pid_ns_init rule is not implemented",
                "set USE_PID_NAMESPACES = False for racf-vm jobs",
            )
        raise _refuse(f"the parent process is gone (parent pid {ppid})")

    try:
        dfd = os.open(f"/proc/{ppid}", os.O_DIRECTORY | os.O_PATH | os.O_CLOEXEC)
    except OSError as exc:
        raise _refuse(f"cannot inspect the parent process {ppid}: {exc.strerror}") from exc
    try:
        try:
            exe = os.readlink("exe", dir_fd=dfd)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ESRCH):
                raise _refuse(f"the parent process {ppid} exited during the check") from exc
            raise _refuse(f"cannot read the parent's program ({exc.strerror})") from exc

        if exe.endswith(_DELETED):
            if exe[: -len(_DELETED)] == starter_path:
                raise RefusedError(
                    "the condor_starter binary was replaced (shown as deleted); "
                    "restart HTCondor on this node"
                )
            raise _refuse(f"the parent's program {exe!r} is deleted, not {starter_path}")
        if exe != starter_path:
            raise _refuse(f"the parent process runs {exe!r}, not {starter_path}")

        try:
            running = os.stat("exe", dir_fd=dfd)  # follows the magic link: the running file
            configured = os.stat(starter_path)
        except OSError as exc:
            raise _refuse(f"cannot stat the parent's program ({exc.strerror})") from exc
        if (running.st_dev, running.st_ino) != (configured.st_dev, configured.st_ino):
            raise RefusedError(
                f"the parent runs a different file than {starter_path} (another mount or "
                "a replaced binary); restart HTCondor on this node"
            )

        try:
            fd = os.open("status", os.O_RDONLY | os.O_CLOEXEC, dir_fd=dfd)
            try:
                status = os.read(fd, 65536).decode("ascii", "replace")
            finally:
                os.close(fd)
            uid = _real_uid(status)
        except (OSError, ValueError) as exc:
            raise _refuse(f"cannot read the parent's status ({exc})") from exc
        if uid != 0:
            raise _refuse(
                f"the parent condor_starter runs as uid {uid}, not root (a personal HTCondor?)",
                "racf-vm only works under a condor_starter started by root",
            )

        for ns in ("user", "pid"):
            try:
                theirs = os.stat(f"ns/{ns}", dir_fd=dfd)
                ours = os.stat(f"/proc/self/ns/{ns}")
            except OSError as exc:
                raise _refuse(f"cannot read the parent's {ns} namespace ({exc.strerror})") from exc
            if (theirs.st_dev, theirs.st_ino) != (ours.st_dev, ours.st_ino):
                raise _refuse(
                    f"the parent process is in another {ns} namespace",
                    "run racf-vm directly as the job's executable, not inside a container",
                )
    finally:
        os.close(dfd)

    if os.getppid() != ppid:
        raise _refuse(f"the parent process {ppid} exited during the check")
    return ppid


def sandbox_paths(execute: str, starter_pid: int) -> tuple[str, str]:
    """The sandbox the starter made for this job: ``EXECUTE/dir_<pid>``, or its ``scratch``
    when STARTER_NESTED_SCRATCH is on."""
    sandbox = os.path.join(execute, f"dir_{starter_pid}")
    return sandbox, os.path.join(sandbox, "scratch")


def check_sandbox(workdir: str, execute: str, starter_pid: int) -> None:
    """Refuse a working directory (from the job's own _CONDOR_SCRATCH_DIR) that is not the
    sandbox the verified starter made: the guest creates it, so it must never be a path of
    the user's choosing."""
    if workdir not in sandbox_paths(execute, starter_pid):
        raise RefusedError(
            f"_CONDOR_SCRATCH_DIR is {workdir!r:.120}, not the sandbox HTCondor made for this job "
            f"({sandbox_paths(execute, starter_pid)[0]}); run racf-vm as the job's executable, "
            "or ask the administrator to set [parent] execute to EXECUTE")
