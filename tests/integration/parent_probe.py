"""Run as a job under the condor_starter stand-in: call check_parent and print the verdict.

Usage: python -I parent_probe.py STARTER_PATH [--allow-pid-ns-init]
(racf_vm is the installed one: make test-setup installs the checkout's)
With PROBE_WAIT_FOR=<file> in the environment, waits for that file to exist first.
"""

import json
import os
import sys
import time

from racf_vm.core.errors import RefusedError
from racf_vm.trust.starter import check_parent

flag = os.environ.get("PROBE_WAIT_FOR")
deadline = time.monotonic() + 30
while flag and not os.path.exists(flag) and time.monotonic() < deadline:
    time.sleep(0.02)
try:
    pid = check_parent(sys.argv[1], allow_pid_ns_init="--allow-pid-ns-init" in sys.argv)
    print(json.dumps({"ok": pid, "ppid": os.getppid()}))
except RefusedError as exc:
    print(json.dumps({"refused": str(exc), "status": exc.exit_status}))
