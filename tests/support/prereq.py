"""What a test may do when the machine cannot run it: fail, or skip for a listed reason.

A prerequisite that `make deps` installs (a binary, a Python module, a kernel) is never a
reason to skip: ``require_file``/``require_module`` fail the test and name the package.
A skip is legitimate only when it is about the machine itself, and then it is one of
``MACHINE_SKIPS``; tests/conftest.py fails the run when anything else skipped.
"""

from __future__ import annotations

import importlib
import os

import pytest

# Keep this list short: every entry is a part of the product that this machine cannot test.
MACHINE_SKIPS = {
    "kvm-unusable": "KVM does not boot guests on this machine (TCG used); "
                    "the KVM path is booted where the accelerator probe finds KVM working",
}

MARK = "[machine:"


def machine_skip(key: str) -> None:
    """Skip for one of the listed machine reasons (KeyError for anything else)."""
    pytest.skip(f"{MARK}{key}] {MACHINE_SKIPS[key]}")


def listed_reason(reason: str) -> str | None:
    """The MACHINE_SKIPS key a skip message carries, or None when it is not a listed one."""
    start = reason.find(MARK)
    if start < 0:
        return None
    key = reason[start + len(MARK):].partition("]")[0]
    return key if key in MACHINE_SKIPS else None


def require_file(path: str, package: str) -> str:
    """``path`` exists, or the test fails naming the Debian package that provides it."""
    if not os.path.exists(path):
        pytest.fail(f"{path} is missing: install the Debian package {package} (make deps)",
                    pytrace=False)
    return path


def require_module(name: str, package: str):
    """Import ``name``, or fail the test naming the package that provides it."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        pytest.fail(f"cannot import {name} ({exc}): install {package} (make deps)", pytrace=False)
