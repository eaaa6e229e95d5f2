"""Stand-in for racf_vm.job.main in a test build of the shim: dump what it was given.

Installed as ``racf_shim_probe`` into a throw-away venv by tests/integration/test_shim.py.
Prints one JSON object on stdout. Options after "--": ``--sleep`` sleeps first (signal
tests); ``--report PATH`` also writes the JSON to PATH (for callers whose stdout is not a
pipe); ``--exit N`` then exits with status N, as the Python side does when it refuses.
"""

import fcntl
import json
import os
import resource
import signal
import stat
import sys
import time

F_GET_SEALS = 1034  # fcntl.F_GET_SEALS is missing from some Python builds


def _sigset(hexmask: str) -> list:
    mask = int(hexmask, 16)
    return [n for n in range(1, 65) if mask & (1 << (n - 1))]


def _stdio() -> dict:
    out = {}
    for fd in range(3):
        try:
            st = os.fstat(fd)
            fl = fcntl.fcntl(fd, fcntl.F_GETFL)
        except OSError:
            out[fd] = None
            continue
        acc = {os.O_RDONLY: "r", os.O_WRONLY: "w", os.O_RDWR: "rw"}.get(fl & os.O_ACCMODE, "?")
        rdev = [os.major(st.st_rdev), os.minor(st.st_rdev)] if stat.S_ISCHR(st.st_mode) else None
        out[fd] = {"access": acc, "rdev": rdev}
    return out


def _mount_at(path: str):
    """The top mount at ``path`` in /proc/self/mountinfo, or None."""
    top = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            if fields[4] == path:
                top = {"fstype": fields[sep + 1], "options": fields[5].split(","),
                       "super": fields[sep + 3].split(",")}
    return top


def _scratch() -> dict:
    out = {}
    for path in ("/tmp", "/var/tmp"):
        st = os.stat(path)
        vfs = os.statvfs(path)
        out[path] = {"dev": st.st_dev, "ino": st.st_ino, "uid": st.st_uid, "gid": st.st_gid,
                     "mode": stat.S_IMODE(st.st_mode), "entries": sorted(os.listdir(path)),
                     "bytes": vfs.f_blocks * vfs.f_frsize, "mount": _mount_at(path)}
    return out


def main() -> None:
    user_args = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
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
    report = json.dumps({
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
        "stdio": _stdio(),
        "signals": {"blocked": _sigset(status["SigBlk"]), "ignored": _sigset(status["SigIgn"]),
                    "caught": _sigset(status["SigCgt"])},
        "itimers": {name: signal.getitimer(getattr(signal, name))
                    for name in ("ITIMER_REAL", "ITIMER_VIRTUAL", "ITIMER_PROF")},
        "scratch": _scratch(),
    })
    if "--report" in user_args:
        with open(user_args[user_args.index("--report") + 1], "w") as f:
            f.write(report)
    print(report)
    if "--exit" in user_args:
        sys.exit(int(user_args[user_args.index("--exit") + 1]))


if __name__ == "__main__":
    main()
