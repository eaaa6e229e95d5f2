"""The privileged side of /usr/local/racf/vm, exec'd by the setuid shim.

The shim has already cleaned the process (fds, umask, rlimits, environment) and become
root for good; it passes the caller's kernel uid/gid, the caller's environment as a
memfd, and the user's own arguments. Order of work (security.md §0.1): trust the config,
check the parent, read the request as the user, then act on validated data only.
"""

import argparse
import logging
import os
import resource
import signal
import sys

from racf_vm.condor import sandbox
from racf_vm.core import errors, logsetup
from racf_vm.core.errors import RacfError
from racf_vm.trust import importguard, privsep

log = logging.getLogger("racf_vm.job.main")  # not __name__: run with -m, that is "__main__"


def _parse_shim_argv(argv):
    p = argparse.ArgumentParser(prog="racf-vm-wrapper", add_help=False)
    p.add_argument("--config", required=True)
    p.add_argument("--caller-uid", type=int, required=True)
    p.add_argument("--caller-gid", type=int, required=True)
    p.add_argument("--env-fd", type=int, required=True)
    p.add_argument("user_args", nargs=argparse.REMAINDER)
    ns = p.parse_args(argv)
    user_args = ns.user_args[1:] if ns.user_args[:1] == ["--"] else ns.user_args
    return ns, user_args


def _read_env_fd(fd: int, limit: int) -> bytes:
    chunks, size = [], 0
    try:
        while True:
            data = os.read(fd, 1 << 16)
            if not data:
                break
            size += len(data)
            if size > limit:
                raise errors.UsageError(
                    f"the job's environment is larger than the site limit of {limit} bytes; "
                    "submit with a smaller environment"
                )
            chunks.append(data)
    finally:
        os.close(fd)
    return b"".join(chunks)


def main(argv=None) -> int:
    logsetup.configure("racf-vm: %(levelname)s %(name)s: %(message)s")
    if os.getuid() != 0 or os.geteuid() != 0:
        print("racf-vm: the wrapper must be started through the setuid shim", file=sys.stderr)
        return errors.EX_NOPERM
    try:
        ns, user_args = _parse_shim_argv(sys.argv[1:] if argv is None else argv)
    except SystemExit:
        print("racf-vm: internal error: bad arguments from the shim", file=sys.stderr)
        return errors.EX_SOFTWARE
    importguard.install()  # from here on, nothing is imported without its trust check
    try:  # after the argv check: nothing heavy for a bad call
        from racf_vm.job.run import JobRun
    except RacfError as exc:
        print(f"racf-vm: {exc.message}", file=sys.stderr)
        return exc.exit_status

    run = JobRun(
        config_path=ns.config,
        caller=privsep.Caller(ns.caller_uid, ns.caller_gid),
        user_args=user_args,
    )
    try:
        run.load_trusted_state()
        env_blob = _read_env_fd(ns.env_fd, run.config.limits.max_env_bytes)
        status = run.run(env_blob)
    except RacfError as exc:
        status = _report(run, exc)
    except Exception as exc:  # a bug: one line for the user, the traceback for the admin
        log.debug("internal error", exc_info=True)
        status = _report(run, errors.InternalError(f"internal error: {type(exc).__name__}: {exc}"))
    finally:
        try:
            run.cleanup()
        except Exception:  # teardown problems must not hide the job's status; gc finishes
            log.warning("teardown failed; racf-vm gc will remove what is left", exc_info=run.verbose)
    log.info("peak memory %d MiB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
    if run.terminated:
        # Die of the signal HTCondor sent, as a job without a wrapper would.
        sys.stdout.flush()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
    return status


def _report(run, exc: RacfError) -> int:
    print(f"racf-vm: {exc.message}", file=sys.stderr)
    if exc.detail and run.verbose:
        print(exc.detail, file=sys.stderr)
    if isinstance(exc, errors.TemporaryError) and run.request is not None:
        try:
            privsep.call_as_user(
                run.caller,
                sandbox.write_failure_file,
                run.request.workdir,
                exc.message,
                timeout=30,
                what="failure note",
            )
        except RacfError as note_exc:
            print(f"racf-vm: could not write {sandbox.FAILURE_FILE}: {note_exc}", file=sys.stderr)
    return exc.exit_status


if __name__ == "__main__":
    sys.exit(main())
