"""Every module the privileged process imports from now on passes the trust check first.

The self check (selfcheck) covers what is already loaded and the top of every ``sys.path``
entry; this covers the rest, at the moment it matters: before Python reads a module's
source or cached bytecode, its file (and the ``__pycache__`` file it would use, and a
package's directories) must be trusted in the safefile sense (pathtrust). An untrusted
module makes the import raise RefusedError, which ends the wrapper with status 77.
"""

from __future__ import annotations

import importlib.machinery
import os
import sys

from racf_vm.trust import pathtrust


class TrustedPathFinder:
    """A meta path finder in front of Python's own path finder: same answers, checked."""

    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None:
            return None
        if spec.origin and os.path.isabs(spec.origin):
            pathtrust.check_trusted_file(spec.origin)
        if spec.cached and os.path.exists(spec.cached):
            pathtrust.check_trusted_file(spec.cached)
        for location in spec.submodule_search_locations or ():
            pathtrust.check_trusted_dir(location)
        return spec

    @classmethod
    def invalidate_caches(cls) -> None:
        importlib.machinery.PathFinder.invalidate_caches()


def install() -> None:
    """Put the checking finder before Python's path finder (idempotent)."""
    if TrustedPathFinder in sys.meta_path:
        return
    for i, finder in enumerate(sys.meta_path):
        if finder is importlib.machinery.PathFinder:
            sys.meta_path.insert(i, TrustedPathFinder)
            return
    sys.meta_path.append(TrustedPathFinder)
