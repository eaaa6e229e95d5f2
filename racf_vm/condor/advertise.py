"""``racf-vm-advertise``: the STARTD_CRON job that tells the pool what this node can run.

HTCondor runs it as the condor user with argv ``racf-vm-advertise RACFVM [--config PATH]``
(argv[1] is always the cron job's name), stdin closed, and reads ``Attr = value`` lines
from its stdout (racf_vm.condor.nodead has the attributes). One exit path: whatever goes
wrong, it still prints an ad, then saying ``RacfVMCanRun = false`` and why, and exits 0;
details for the admin go to stderr (the StartLog at D_FULLDEBUG).
"""

from __future__ import annotations

import argparse
import sys

from racf_vm.condor import integration_paths as ip

PROG = ip.ADVERTISE


def _parse_argv(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=PROG, add_help=True,
                                description="Print this node's racf-vm ClassAd attributes "
                                            "(a STARTD_CRON job).")
    p.add_argument("job_name", nargs="?", default=ip.CRON_JOB_NAME,
                   help="the STARTD_CRON job name HTCondor passes first (ignored)")
    p.add_argument("--config", default=ip.DEFAULT_CONFIG, help="the racf-vm site configuration")
    return p.parse_args(argv)


def advertise(config_path: str) -> tuple[str, list[str]]:
    """The cron output for this node, and lines for stderr."""
    from racf_vm.condor import nodead, nodefacts

    facts = nodefacts.gather(config_path)
    notes = [f"{PROG}: image {i.name}: {i.state}: {i.reason}" for i in facts.images if i.reason]
    return nodead.cron_output(nodead.node_attributes(facts)), notes


def _failed(reason: str) -> str:
    """The ad of a node that cannot tell: it must not look usable."""
    from racf_vm.condor import nodead

    return nodead.cron_output(nodead.node_attributes(nodead.NodeFacts((reason,), "", "unknown", (), ())))


def main(argv: list[str] | None = None) -> int:
    try:
        ns = _parse_argv(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:
        if exc.code in (0, None):
            return 0  # --help
        ns = None  # argparse said what is wrong on stderr
    if ns is None:
        out, notes = _failed(f"{PROG}: bad arguments; fix STARTD_CRON_{ip.CRON_JOB_NAME}_ARGS"), []
    else:
        try:
            out, notes = advertise(ns.config)
        except Exception as exc:  # still an ad, saying why
            out = _failed(f"{PROG} failed: {type(exc).__name__}: {exc}")
            notes = [f"{PROG}: internal error: {type(exc).__name__}: {exc}"]
    for line in notes:
        print(line, file=sys.stderr)
    sys.stdout.write(out)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
