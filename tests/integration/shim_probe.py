"""Stand-in for racf_vm.job.main in a test build of the shim: dump what it was given.

Installed as ``racf_shim_probe`` into a throw-away venv by tests/integration/test_shim.py.
Prints one JSON object on stdout. With ``--sleep`` after "--": sleeps first (signal tests).
"""

import fcntl
import json
import os
import resource
import sys
import time

F_GET_SEALS = 1034  # fcntl.F_GET_SEALS is missing from some Python builds


def main() -> None:
    if "--sleep" in sys.argv:
        print(json.dumps({"pid": os.getpid()}), flush=True)
        time.sleep(5)
    fds = {}
    for fd in range(4096):  # fstat loop: listing /proc/self/fd would add an fd of its own
        try:
            os.fstat(fd)
        except OSError:
            continue
        fds[fd] = os.readlink(f"/proc/self/fd/{fd}")
    blob, seals, fd3_cloexec = None, None, None
    if 3 in fds:
        seals = fcntl.fcntl(3, F_GET_SEALS)
        fd3_cloexec = bool(fcntl.fcntl(3, fcntl.F_GETFD) & fcntl.FD_CLOEXEC)
        data = b""
        while chunk := os.read(3, 65536):
            data += chunk
        blob = [e.decode("utf-8", "surrogateescape") for e in data.split(b"\0")]
    with open("/proc/self/status") as f:
        status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    limits = {
        name: resource.getrlimit(getattr(resource, name))
        for name in dir(resource) if name.startswith("RLIMIT_")
    }
    print(json.dumps({
        "orig_argv": sys.orig_argv,
        "argv_hex": [os.fsencode(a).hex() for a in sys.argv[1:]],
        "executable": sys.executable,
        "prefix": sys.prefix,
        "flags": {"isolated": sys.flags.isolated, "dont_write_bytecode": sys.flags.dont_write_bytecode,
                  "inspect": sys.flags.inspect},
        "environ": dict(os.environ),
        "env_blob": blob,
        "seals": seals,
        "fd3_cloexec": fd3_cloexec,
        "fds": fds,
        "umask": status["Umask"],
        "rlimits": limits,
        "resuid": os.getresuid(),
        "resgid": os.getresgid(),
        "groups": os.getgroups(),
        "cwd": os.getcwd(),
        "modules_from_tmp": sorted(m for m, mod in sys.modules.items()
                                   if (getattr(mod, "__file__", "") or "").startswith("/tmp")),
    }))


if __name__ == "__main__":
    main()
