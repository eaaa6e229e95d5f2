"""Collect the ``fuzz_*.py`` entry points here (``make fuzz`` runs ``pytest tests/fuzz``)."""

import pytest


def pytest_collect_file(file_path, parent):
    if file_path.name.startswith("fuzz_") and file_path.suffix == ".py":
        return pytest.Module.from_parent(parent, path=file_path)
    return None
