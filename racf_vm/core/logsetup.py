"""One logger tree for operators: racf_vm and netpolicy log alike, at the configured level."""

import logging
import sys

LOGGERS = ("racf_vm", "netpolicy")


def configure(fmt: str, level: str = "warning") -> None:
    """One handler on stderr for every racf-vm message; ``level`` applies to all of them."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)  # other libraries: warnings only
    set_level(level)


def set_level(level: str) -> None:
    for name in LOGGERS:
        logging.getLogger(name).setLevel(level.upper())
