"""The one exception hierarchy of racf-vm.

Every error a user or operator can see is a RacfError; its ``exit_status`` follows
sysexits(3). Errors from libvirt, libguestfs, the firewall and external commands are
translated into these where they enter the program.
"""

EX_USAGE = 64
EX_DATAERR = 65
EX_SOFTWARE = 70
EX_TEMPFAIL = 75
EX_NOPERM = 77
EX_CONFIG = 78


class RacfError(Exception):
    """Base class. ``message`` is one line for the user; ``detail`` is shown with -v."""

    exit_status = EX_SOFTWARE

    def __init__(self, message: str, *, detail: str = ""):
        super().__init__(message)
        self.message = message
        self.detail = detail

    def __str__(self) -> str:
        return self.message


class UsageError(RacfError):
    """The job's request is malformed (bad option, bad image name...)."""

    exit_status = EX_USAGE


class RefusedError(RacfError):
    """A security check refused to go on (wrong parent, untrusted file, bad uid...)."""

    exit_status = EX_NOPERM


class JobError(RacfError):
    """The job failed for a reason of its own that would repeat on any node (the guest
    cannot create its user, its working directory collides, it exceeded the site's time
    limit or output cap): the job ends, it is not requeued (sites may hold it on 65)."""

    exit_status = EX_DATAERR


class TemporaryError(RacfError):
    """Infrastructure failure: the job should run again, maybe elsewhere."""

    exit_status = EX_TEMPFAIL


class ConfigError(RacfError):
    """The site's configuration or catalog is wrong."""

    exit_status = EX_CONFIG


class InternalError(RacfError):
    """A bug or an unexpected state in racf-vm itself."""

    exit_status = EX_SOFTWARE


class CommandError(TemporaryError):
    """An external command failed. Carries the command, its status and its stderr."""

    def __init__(self, argv, status, stderr: str, *, what: str = ""):
        self.argv = list(argv)
        self.status = status
        self.stderr = stderr
        name = what or self.argv[0]
        last = stderr.strip().splitlines()[-1] if stderr.strip() else "no error output"
        super().__init__(
            f"{name} failed (status {status}): {last}",
            detail=f"command: {self.argv!r}\nstderr:\n{stderr}",
        )


class Cancelled(RacfError):
    """The wrapper was asked to stop (SIGTERM from HTCondor) before the guest ran."""

    def __init__(self):
        super().__init__("stopped by HTCondor (SIGTERM); the job's VM was shut down and removed")
