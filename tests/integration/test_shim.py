"""The setuid shim (wrapper/racf-vm-shim.c), run as an unprivileged user in a hostile setup.

A test build of the shim execs a probe module (shim_probe.py) instead of
racf_vm.job.main; the probe reports what the Python side would receive. The probe
lives in a throw-away venv so that `python -I` finds it without touching the system.
"""

import ctypes
import json
import os
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
CONFIG = "/etc/racf-vm-test/probe.toml"  # only passed through; never read by the probe
SAFE_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
NOT_SETUID = ("racf-vm: not installed setuid root (or no_new_privs is set); "
              "ask your administrator\n")
SCRATCH = ("/tmp", "/var/tmp")
DEV_FULL = [1, 7]
# What CPython itself ignores at startup; every other disposition must be the default.
PYTHON_IGNORES = sorted([signal.SIGPIPE, signal.SIGXFSZ])

libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNS, MS_BIND, MS_REC, MS_PRIVATE = 0x20000, 0x1000, 0x4000, 1 << 18


class Shim:
    def __init__(self, root: Path):
        self.root = root
        self.reports = root / "reports"  # root-owned, outside /tmp: the probe writes here
        self.python = str(root / "venv/bin/python3")
        self.path = str(root / "vm")           # root:root 4755
        self.nosuid = str(root / "vm-nosuid")  # same binary, 0755
        self.argv0_empty = str(root / "exec-empty-argv")


@pytest.fixture(scope="module")
def shim(job_user):
    parent = Path("/var/cache/racf-vm-test")
    parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="shim-", dir=parent))
    os.chmod(root, 0o755)
    s = Shim(root)
    s.reports.mkdir(mode=0o700)
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(root / "venv")],
                   check=True)
    site = next((root / "venv/lib").glob("python3*/site-packages"))
    shutil.copy(REPO / "tests/integration/shim_probe.py", site / "racf_shim_probe.py")
    subprocess.run(
        ["make", "-s", "-C", str(REPO / "wrapper"), f"SHIM_OUT={s.path}",
         f"RACF_PYTHON={s.python}", "RACF_ENTRY=racf_shim_probe", f"RACF_CONFIG={CONFIG}"],
        check=True,
    )
    os.chown(s.path, 0, 0)
    os.chmod(s.path, 0o4755)
    shutil.copy(s.path, s.nosuid)
    os.chmod(s.nosuid, 0o755)
    # A caller that execs with argc == 0 (the kernel may turn that into argv = {""}).
    src = root / "exec-empty-argv.c"
    src.write_text('#include <unistd.h>\nint main(int c, char **v) { (void)c;\n'
                   '  char *a[] = {0}; char *e[] = {"GCONV_PATH=.", "X=--evil", 0};\n'
                   '  execve(v[1], a, e); return 127; }\n')
    subprocess.run(["cc", "-o", s.argv0_empty, str(src)], check=True)
    yield s
    shutil.rmtree(root)


@pytest.fixture
def evil(job_user):
    """A user-owned directory full of traps; every trap creates a marker file if sprung."""
    d = Path(tempfile.mkdtemp(prefix="racf-evil-"))
    os.chmod(d, 0o755)
    m = d / "markers"
    m.mkdir(mode=0o777)
    for mod in ("sitecustomize", "usercustomize", "racf_shim_probe", "json", "encodings"):
        (d / f"{mod}.py").write_text(f"open({str(m / mod)!r}, 'w').close()\n")
    (d / "startup.py").write_text(f"open({str(m / 'startup')!r}, 'w').close()\n")
    for prog in ("python3", "sh", "iptables"):
        p = d / prog
        p.write_text(f"#!/bin/sh\ntouch {m / prog}\n")
        p.chmod(0o755)
    so_src = d / "evil.c"
    so_src.write_text('#include <fcntl.h>\n#include <unistd.h>\n__attribute__((constructor))'
                      f' static void f(void) {{ close(open("{m}/preload", O_CREAT|O_WRONLY, 0644)); }}\n')
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(d / "evil.so"), str(so_src)], check=True)
    for p in [d, *d.rglob("*")]:
        os.lchown(p, job_user.pw_uid, job_user.pw_gid)
    yield d
    shutil.rmtree(d)


def as_user(uid, *, umask=None, limits=(), close=(), nnp=False):
    """preexec_fn: drop to uid (gid = uid), then make the process hostile."""
    def fn():
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        if umask is not None:
            os.umask(umask)
        for res, val in limits:
            resource.setrlimit(res, val)
        for fd in close:
            os.close(fd)
        if nnp:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
                raise OSError(ctypes.get_errno(), "prctl")
    return fn


def _check(ret, what):
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def condor_namespace(binds, uid):
    """preexec_fn: what the real starter does for MOUNT_UNDER_SCRATCH (as root: a private
    mount namespace, user-owned directories bind-mounted over /tmp and /var/tmp), then
    become the job user."""
    def fn():
        _check(libc.unshare(CLONE_NEWNS), "unshare")
        _check(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")
        for src, dst in binds:
            _check(libc.mount(os.fsencode(src), os.fsencode(dst), None, MS_BIND, None),
                   f"bind {src} on {dst}")
        as_user(uid)()
    return fn


def mount_at(path, mountinfo="/proc/self/mountinfo"):
    """Mount points equal to ``path`` (one line each) in a mountinfo file."""
    with open(mountinfo) as f:
        return [line for line in f if line.split()[4] == path]


def report_path(shim) -> Path:
    return shim.reports / f"{uuid.uuid4().hex}.json"


def assert_private_tmp(out, *, not_dev=()):
    """The probe's /tmp and /var/tmp: each a fresh, empty, root-only tmpfs of its own."""
    devs = set()
    for path in SCRATCH:
        d = out["scratch"][path]
        assert d["mount"] is not None and d["mount"]["fstype"] == "tmpfs", (path, d)
        assert {"nosuid", "nodev"} <= set(d["mount"]["options"]), (path, d)
        assert (d["uid"], d["gid"], d["mode"]) == (0, 0, 0o700), (path, d)
        assert d["entries"] == [], (path, d)
        assert d["bytes"] == 64 << 20, (path, d)
        assert d["dev"] not in not_dev, (path, d)
        devs.add(d["dev"])
    assert len(devs) == 2  # two separate instances


def run(cmd, *, env=None, uid=2501, timeout=60, **kw):
    kw.setdefault("preexec_fn", as_user(uid))
    kw.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.run(cmd, env=SAFE_ENV if env is None else env, capture_output=True,
                          timeout=timeout, cwd="/", **kw)


def probe(shim, args=(), **kw):
    r = run([shim.path, *args], **kw)
    assert r.returncode == 0, (r.returncode, r.stderr.decode())
    return json.loads(r.stdout)


def test_hostile_caller(shim, evil, job_user):
    """Env, fds, umask, rlimits, cwd, credentials of a hostile caller do not get through."""
    m = evil / "markers"
    env = {
        "LD_PRELOAD": str(evil / "evil.so"),
        "LD_LIBRARY_PATH": str(evil),
        "GCONV_PATH": str(evil),
        "PYTHONPATH": str(evil),
        "PYTHONHOME": str(evil),
        "PYTHONINSPECT": "1",
        "PYTHONSTARTUP": str(evil / "startup.py"),
        "PYTHONUSERBASE": str(evil),
        "PATH": f"{evil}:/usr/bin:/bin",
        "BASH_FUNC_x%%": "() { touch /tmp/pwned; }",
        "BASH_ENV": str(evil / "startup.py"),
        "IFS": "/",
        "LANG": "xx_XX.evil",
        "XTABLES_LIBDIR": str(evil),
        "WEIRD": "a\nb=c\x01",
    }
    user_file = os.open(evil / "startup.py", os.O_RDONLY)
    sock_a, sock_b = socket.socketpair()
    high = os.dup2(user_file, 200, inheritable=True)
    # Soft limits only: restoring these never needs CAP_SYS_RESOURCE (see test_hard_limits).
    inf = resource.RLIM_INFINITY
    limits = [
        (resource.RLIMIT_NOFILE, (16, resource.getrlimit(resource.RLIMIT_NOFILE)[1])),
        (resource.RLIMIT_FSIZE, (1024, inf)),
        (resource.RLIMIT_CORE, (1 << 30, inf)),
        (resource.RLIMIT_STACK, (1 << 20, inf)),
        (resource.RLIMIT_AS, (512 << 20, inf)),
        (resource.RLIMIT_DATA, (256 << 20, inf)),
        (resource.RLIMIT_NPROC, (1, resource.getrlimit(resource.RLIMIT_NPROC)[1])),
    ]
    user_args = ["-i", "sl_53", "a b", "", "--config", "/tmp/evil.toml", "x\ny", "\u00e9"]
    try:
        out = probe(shim, user_args, env=env,
                    preexec_fn=as_user(job_user.pw_uid, umask=0, limits=limits),
                    pass_fds=(user_file, sock_a.fileno(), high))
    finally:
        os.close(user_file)
        os.close(high)
        sock_a.close()
        sock_b.close()

    # The exact command line of the contract, the user's argv verbatim after "--".
    assert out["orig_argv"] == [
        shim.python, "-I", "-B", "-m", "racf_shim_probe", "--config", CONFIG,
        "--caller-uid", str(job_user.pw_uid), "--caller-gid", str(job_user.pw_gid),
        "--env-fd", "3", "--", *user_args,
    ]
    assert out["argv_hex"][-len(user_args):] == [a.encode().hex() for a in user_args]
    assert out["flags"] == {"isolated": 1, "dont_write_bytecode": 1, "inspect": 0}
    assert out["executable"] == shim.python and out["prefix"] == str(shim.root / "venv")
    # Environment: exactly the fixed allowlist; nothing loaded from the user's directory.
    assert out["environ"] == SAFE_ENV
    assert out["modules_from_tmp"] == []
    assert sorted(os.listdir(m)) == []
    # The caller's environment arrives as data only, on a sealed memfd at fd 3.
    assert out["env_blob"][-1] == ""  # every entry is NUL-terminated
    blob = out["env_blob"][:-1]
    for k in ("PYTHONPATH", "PYTHONINSPECT", "PATH", "BASH_FUNC_x%%", "WEIRD", "LANG"):
        assert f"{k}={env[k]}" in blob
    assert not any(e.startswith("LD_PRELOAD=") for e in blob)  # glibc's AT_SECURE scrub
    assert out["seals"] == 0b1111  # F_SEAL_SEAL | SHRINK | GROW | WRITE
    assert out["fd3_cloexec"] is False
    assert out["fds"]["3"].startswith("/memfd:racf-vm-env")
    # No inherited fd survives; 0-2 are the ones we gave.
    assert sorted(out["fds"]) == ["0", "1", "2", "3"]
    assert out["umask"] == "0077"
    rl = {k: tuple(v) for k, v in out["rlimits"].items()}
    assert rl["RLIMIT_CORE"] == (0, 0)
    assert rl["RLIMIT_NOFILE"] == (4096, 4096)
    assert rl["RLIMIT_FSIZE"] == (inf, inf)
    assert rl["RLIMIT_AS"] == (inf, inf)
    assert rl["RLIMIT_DATA"] == (inf, inf)
    assert rl["RLIMIT_STACK"] == (8 << 20, inf)
    assert rl["RLIMIT_NPROC"] == (65536, 65536)
    assert out["resuid"] == [0, 0, 0] and out["resgid"] == [0, 0, 0]
    assert out["groups"] == []
    assert out["cwd"] == "/"


def test_closed_stdio_is_repaired(shim, job_user):
    r = subprocess.Popen([shim.path], env=SAFE_ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, preexec_fn=as_user(job_user.pw_uid, close=(0,)))
    out, err = r.communicate(timeout=60)
    assert r.returncode == 0, err
    # glibc already fills closed 0-2 in AT_SECURE processes (/dev/full for fd 0); the
    # shim's own repair covers the rest. Either way fd 0 is no longer a free slot.
    assert json.loads(out)["fds"]["0"] in ("/dev/null", "/dev/full")


def _have_cap_sys_resource() -> bool:
    with open("/proc/self/status") as f:
        bnd = next(int(line.split()[1], 16) for line in f if line.startswith("CapBnd:"))
    return bool(bnd & (1 << 24))


@pytest.mark.parametrize("res,name,low", [
    (resource.RLIMIT_FSIZE, "FSIZE", 1024),
    (resource.RLIMIT_NOFILE, "NOFILE", 16),
    (resource.RLIMIT_AS, "AS", 1 << 30),
])
def test_hard_limits(shim, job_user, res, name, low):
    """A lowered hard limit is restored with CAP_SYS_RESOURCE, else a clean refusal."""
    r = run([shim.path], preexec_fn=as_user(job_user.pw_uid, limits=[(res, (low, low))]))
    if _have_cap_sys_resource():
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["rlimits"][f"RLIMIT_{name}"][0] > low
    else:  # e.g. a container whose bounding set lacks it: root cannot raise hard limits
        assert r.returncode == 77, r.stderr
        assert r.stderr.decode() == (
            f"racf-vm: the caller's hard RLIMIT_{name} ({low}) is too low and cannot be "
            "raised; run racf-vm with the default resource limits\n")
        assert r.stdout == b""


def test_caller_identity_passed(shim):
    out = probe(shim, uid=2502)
    argv = out["orig_argv"]
    assert argv[argv.index("--caller-uid") + 1] == "2502"
    assert argv[argv.index("--caller-gid") + 1] == "2502"


def test_empty_environment(shim):
    out = probe(shim, env={})
    assert out["env_blob"] == [""]  # empty memfd: no entries
    assert out["environ"] == SAFE_ENV


def test_not_setuid(shim):
    r = run([shim.nosuid, "-i", "x"])
    assert r.returncode == 77
    assert r.stderr.decode() == NOT_SETUID
    assert r.stdout == b""


def test_no_new_privs(shim, job_user):
    r = run([shim.path], preexec_fn=as_user(job_user.pw_uid, nnp=True))
    assert r.returncode == 77
    assert r.stderr.decode() == NOT_SETUID


def test_empty_argv(shim):
    r = run([shim.argv0_empty, shim.path])
    assert r.returncode == 77, r
    assert r.stderr.decode() == "racf-vm: refusing to run with an empty argument list\n"
    assert r.stdout == b""


@pytest.mark.parametrize("env", [
    {f"V{i}": "x" for i in range(5000)},                     # too many entries
    {f"BIG{i}": "y" * (100 << 10) for i in range(11)},       # more than 1 MiB in total
])
def test_oversized_environment(shim, env):
    r = run([shim.path], env=env)
    assert r.returncode == 64
    err = r.stderr.decode()
    assert err.startswith("racf-vm: the job environment is too large") and err.count("\n") == 1
    assert r.stdout == b""


def test_user_cannot_signal(shim, job_user):
    """After setresuid(0,0,0) the caller has lost the right to signal or trace us."""
    p = subprocess.Popen([shim.path, "--sleep"], env=SAFE_ENV, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         preexec_fn=as_user(job_user.pw_uid))
    try:
        pid = json.loads(p.stdout.readline())["pid"]
        assert pid == p.pid  # execve, never fork
        r = run(["/bin/kill", "-STOP", str(pid)])
        assert r.returncode != 0 and b"ermitted" in r.stderr
        r = run(["/bin/kill", "-KILL", str(pid)])
        assert r.returncode != 0
        assert p.poll() is None
    finally:
        p.kill()
        p.wait()


# --- a private /tmp and /var/tmp for the privileged side ---------------------------------

def test_private_tmp(shim, job_user):
    """Run from the host's namespace: fresh, empty tmpfs mounts (none of the host's files),
    and nothing changes in the caller's namespace. (Nothing is planted in the host's /tmp:
    the hostile suite, which may run at the same time, watches it.)"""
    before = {p: mount_at(p) for p in SCRATCH}
    out = probe(shim)
    assert_private_tmp(out, not_dev={os.stat(d).st_dev for d in SCRATCH})
    assert {p: mount_at(p) for p in SCRATCH} == before


def test_private_tmp_under_mount_under_scratch(shim, job_user):
    """The caller's /tmp and /var/tmp are user-owned directories bind-mounted by the
    starter (HTCondor's MOUNT_UNDER_SCRATCH): the probe sees neither them nor their files."""
    scratch = Path(tempfile.mkdtemp(prefix="scratch-", dir=shim.root))
    binds = []
    try:
        for d in SCRATCH:
            src = scratch / d.lstrip("/")
            src.mkdir(parents=True)
            (src / "planted-by-user").write_text("x")
            binds.append((src, d))
        for p in [scratch, *scratch.rglob("*")]:
            os.lchown(p, job_user.pw_uid, job_user.pw_gid)
        user_devs = {os.stat(src).st_dev for src, _ in binds}
        # The setup is real: a plain program in that namespace sees the user's files.
        seen = run(["/bin/ls", *SCRATCH], preexec_fn=condor_namespace(binds, job_user.pw_uid))
        assert seen.returncode == 0 and seen.stdout.count(b"planted-by-user") == 2, seen
        r = run([shim.path], preexec_fn=condor_namespace(binds, job_user.pw_uid))
        assert r.returncode == 0, r.stderr
        assert_private_tmp(json.loads(r.stdout), not_dev=user_devs)
        for src, _ in binds:  # the user's directories are untouched
            assert sorted(os.listdir(src)) == ["planted-by-user"]
    finally:
        shutil.rmtree(scratch)


def test_private_tmp_does_not_propagate(shim, job_user):
    """A caller whose mounts are shared (as / is on a systemd host): the shim's tmpfs mounts
    stay in the shim's own namespace."""
    report = report_path(shim)
    count = "awk '$5 == \"/tmp\" || $5 == \"/var/tmp\"' /proc/self/mountinfo | wc -l"
    script = (f"echo before=$({count}); "
              f"setpriv --reuid={job_user.pw_uid} --regid={job_user.pw_gid} --clear-groups -- "
              f"{shlex.quote(shim.path)} --report {shlex.quote(str(report))} >/dev/null; "
              f"echo status=$?; echo after=$({count})")
    r = subprocess.run(["unshare", "--mount", "--propagation", "shared", "--", "/bin/sh", "-c",
                        script], env=SAFE_ENV, capture_output=True, timeout=60, cwd="/")
    lines = dict(line.split("=", 1) for line in r.stdout.decode().split())
    assert lines["status"] == "0", r
    assert lines["after"] == lines["before"], r
    assert_private_tmp(json.loads(report.read_text()))


def test_private_tmp_fails_closed(shim, job_user):
    """When the fresh /var/tmp cannot be mounted (here: there is no /var/tmp in the caller's
    namespace), the shim refuses; it never goes on with the caller's directories."""
    fakevar = Path(tempfile.mkdtemp(prefix="fakevar-", dir=shim.root))
    (fakevar / "cache").mkdir()  # the shim itself lives under /var/cache
    script = (f"mount --bind /var/cache {fakevar}/cache && mount --rbind {fakevar} /var && "
              f"test ! -e /var/tmp && exec setpriv --reuid={job_user.pw_uid} "
              f"--regid={job_user.pw_gid} --clear-groups -- {shlex.quote(shim.path)}")
    try:
        r = subprocess.run(["unshare", "--mount", "--", "/bin/sh", "-c", script], env=SAFE_ENV,
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=60, cwd="/")
    finally:
        shutil.rmtree(fakevar)
    assert r.returncode == 70, r
    assert r.stderr.decode() == "racf-vm: cannot mount a private /var/tmp: No such file or directory\n"
    assert r.stdout == b""


# --- signals, timers and stdio left behind by the caller --------------------------------

IGNORED_BY_CALLER = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
                     signal.SIGALRM, signal.SIGVTALRM, signal.SIGPROF, signal.SIGCHLD,
                     signal.SIGRTMIN + 2)


def _raw_ignore_and_block_glibc_reserved():
    """Ignore and block signals 32 and 33 with the raw system calls (glibc's wrappers refuse
    the numbers it reserves for itself, so a shim using them could not reset these)."""
    libc = ctypes.CDLL(None, use_errno=True)
    act = (ctypes.c_ulong * 4)(1, 0, 0, 0)  # SIG_IGN, no flags, no restorer, empty mask
    for sig in (32, 33):
        assert libc.syscall(13, sig, ctypes.byref(act), None, 8) == 0  # SYS_rt_sigaction
    mask = ctypes.c_ulong((1 << 31) | (1 << 32))
    assert libc.syscall(14, 0, ctypes.byref(mask), None, 8) == 0  # SYS_rt_sigprocmask, SIG_BLOCK


def test_signals_and_timers_reset(shim, job_user):
    """A caller that ignores signals (condor_rm's SIGTERM among them), blocks every signal
    and arms all three interval timers: the Python side starts clean."""
    def hostile():
        as_user(job_user.pw_uid)()
        for sig in IGNORED_BY_CALLER:
            signal.signal(sig, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        _raw_ignore_and_block_glibc_reserved()
        signal.alarm(1000)  # ITIMER_REAL
        signal.setitimer(signal.ITIMER_VIRTUAL, 1000, 1000)
        signal.setitimer(signal.ITIMER_PROF, 1000, 1000)

    out = probe(shim, preexec_fn=hostile)
    assert out["signals"]["blocked"] == []
    assert out["signals"]["ignored"] == PYTHON_IGNORES
    assert out["itimers"] == {"ITIMER_REAL": [0.0, 0.0], "ITIMER_VIRTUAL": [0.0, 0.0],
                              "ITIMER_PROF": [0.0, 0.0]}


def _reopen(fd, path, flags):
    def fn():
        new = os.open(path, flags)
        os.dup2(new, fd)
        os.close(new)
    return fn


@pytest.mark.parametrize("name, setup", [
    ("stdout read-only", [_reopen(1, "/dev/null", os.O_RDONLY)]),
    ("stdout on /dev/full", [_reopen(1, "/dev/full", os.O_WRONLY)]),
    ("stderr read-only", [_reopen(2, "/dev/null", os.O_RDONLY)]),
    ("stdin write-only", [_reopen(0, "/dev/null", os.O_WRONLY)]),
    ("stdio closed", [lambda: [os.close(fd) for fd in (0, 1, 2)]]),
])
def test_unusable_stdio_is_replaced(shim, job_user, name, setup):
    """Descriptors 0-2 that are open but unusable (glibc's own fill-ins for closed ones in a
    setuid program among them) become /dev/null the right way round, so the Python side
    ends with its own status: here 77, as when it refuses, never Python's 120 for an
    unwritable stdout."""
    report = report_path(shim)

    def hostile():
        as_user(job_user.pw_uid)()
        for step in setup:
            step()

    r = run([shim.path, "--report", str(report), "--exit", "77"], preexec_fn=hostile)
    assert r.returncode == 77, (r.returncode, r.stderr.decode())
    stdio = json.loads(report.read_text())["stdio"]
    assert stdio["0"]["access"] in ("r", "rw"), stdio
    for fd in ("1", "2"):
        assert stdio[fd]["access"] in ("w", "rw") and stdio[fd]["rdev"] != DEV_FULL, stdio
