"""Hostile jobs that must still run (rows 1-3, 5-8, 12-14, 20, 25, 27, 29, 30) and a
hostile guest filesystem for libguestfs (row 40). Few real boots: attacks are combined.
"""

import os
import re
import resource
import signal
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.hostile.conftest import (
    HOSTILE_DIR,
    JOB_UID,
    assert_refused,
    catalog_entry,
    markers,
    racf_lines,
    run,
)
from tests.support import testenv

pytestmark = [pytest.mark.root, pytest.mark.vm]

STATE_JOBS = testenv.STATE_DIR / "jobs"


def hostile_env(evil: Path) -> dict:
    """Rows 1, 2, 3, 5, 6, 7, 8 (and 30's env part) in one environment."""
    e = str(evil)
    return {
        # row 1: loader
        "LD_PRELOAD": f"{e}/evil.so", "LD_LIBRARY_PATH": e, "LD_AUDIT": f"{e}/evil.so",
        "GLIBC_TUNABLES": "glibc.malloc.check=3", "GCONV_PATH": e,
        # rows 2, 3: Python
        "PYTHONPATH": e, "PYTHONHOME": e, "PYTHONINSPECT": "1", "PYTHONSTARTUP": f"{e}/startup.py",
        "PYTHONBREAKPOINT": "evilbp.f", "PYTHONUSERBASE": f"{e}/userbase", "PYTHONSAFEPATH": "0",
        "PYTHONPLATLIBDIR": e, "PYTHONWARNINGS": "error",
        # row 5: libguestfs / supermin / temp dirs
        "LIBGUESTFS_HV": f"{e}/qemu-system-x86_64", "LIBGUESTFS_PATH": e, "LIBGUESTFS_BACKEND": "libvirt:evil",
        "LIBGUESTFS_DEBUG": "1", "LIBGUESTFS_TRACE": "1", "LIBGUESTFS_CACHEDIR": f"{e}/tmp",
        "LIBGUESTFS_TMPDIR": f"{e}/tmp", "SUPERMIN_KERNEL": f"{e}/evil.so", "TMPDIR": f"{e}/tmp",
        "XDG_RUNTIME_DIR": f"{e}/tmp", "LIBVIRT_DEFAULT_URI": "qemu:///session", "VIRSH_DEFAULT_CONNECT_URI": "test:///default",
        # row 6: iptables
        "IPTABLES_LIBDIR": e, "XTABLES_LIBDIR": e, "PYTHON_IPTABLES_XTABLES_VERSION": "12",
        # row 7: PATH with fake tools
        "PATH": f"{e}:/usr/bin:/bin",
        # row 8: shell
        "BASH_FUNC_id%%": f"() {{ touch {e}/markers/bashfunc; }}", "BASH_ENV": f"{e}/bashenv",
        "ENV": f"{e}/env.sh", "IFS": "/", "SHELLOPTS": "xtrace", "PS4": f"$(touch {e}/markers/ps4)",
        # row 30 (env part): claims of another identity
        "UID": "0", "USER": "root", "LOGNAME": "root", "_CONDOR_UID": "0", "HOME": "/root",
        # a harmless variable that must reach the guest verbatim
        "RACF_HOSTILE_OK": "it's $(id) `id` ; rm -rf / \\ \"q\"",
    }


# rows 29, 30: arguments delivered verbatim, never evaluated by a shell on the host
# (no raw newline: an old-syntax job ad cannot hold one; an ad that tries is refused, 64,
# and newlines in arguments are delivered verbatim by the runner: test_guest_runner.py)
ARGS = ["'; rm -rf /", "$(id)", "`id`", "a\tb", "--uid=0", "-u", "0", "", "*", "~root", "\\", "4294967295"]

GUEST_SCRIPT = (
    "id -u; id -g; "
    "for a in \"$@\"; do printf '<%s>' \"$a\" | od -An -c | tr -d ' \\n'; echo; done; "
    "printf '%s\\n' \"$RACF_HOSTILE_OK\"; "
    "env | cut -d= -f1 | sort | tr '\\n' ' '; echo; "
    "echo ready; sleep 6; echo done"
)


def _watch(proc, found, stop):
    """Rows 12, 13, 20, 25 while the job runs: inherited fds, modes under jobs/, the user's
    signals, and the formats in the live domain XML."""
    import libvirt

    conn = libvirt.open("qemu:///system")
    try:
        while not stop.is_set() and proc.poll() is None:
            try:
                kids = open(f"/proc/{proc.pid}/task/{proc.pid}/children").read().split()
            except OSError:
                kids = []
            wrapper = next((k for k in kids if "python" in _exe(k)), None)
            if wrapper:
                found["wrapper"] = wrapper
                for pid in _descendants(int(wrapper)) + [int(wrapper)]:
                    for fd in _fds(pid):
                        if "racf-hostile-secret" in fd[1] or fd[1] == found["sock"]:
                            found.setdefault("leaked", []).append((pid, _exe(pid), fd))
                if "signals" not in found:
                    probe = subprocess.run(
                        ["/usr/bin/setpriv", "--reuid", str(JOB_UID), "--regid", str(JOB_UID),
                         "--clear-groups", "/bin/sh", "-c",
                         f"kill -STOP {wrapper}; echo stop=$?; kill -KILL {wrapper}; echo kill=$?"],
                        capture_output=True, text=True)
                    found["signals"] = probe.stdout + probe.stderr
            if STATE_JOBS.is_dir():
                for d in STATE_JOBS.iterdir():
                    for p in [d, *d.iterdir()] if d.is_dir() else [d]:
                        try:
                            st = os.lstat(p)
                        except FileNotFoundError:
                            continue
                        found.setdefault("modes", {})[p.name] = (oct(st.st_mode & 0o7777), st.st_uid)
            for dom in conn.listAllDomains():
                if dom.name().startswith("racf-vm-"):
                    try:
                        found["xml"] = dom.XMLDesc(0)
                    except libvirt.libvirtError:
                        pass
                    for pid in _qemu_pids():
                        for fd in _fds(pid):
                            if "racf-hostile-secret" in fd[1] or fd[1] == found["sock"]:
                                found.setdefault("leaked", []).append((pid, "qemu", fd))
            time.sleep(0.2)
    finally:
        conn.close()


def _exe(pid):
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""


def _descendants(pid):
    out = []
    try:
        kids = [int(k) for k in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        return out
    for k in kids:
        out += [k] + _descendants(k)
    return out


def _qemu_pids():
    pids = []
    for p in os.listdir("/proc"):
        if p.isdigit() and _exe(p).endswith("qemu-system-x86_64"):
            pids.append(int(p))
    return pids


def _fds(pid):
    out = []
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                out.append((fd, os.readlink(f"/proc/{pid}/fd/{fd}")))
            except OSError:
                pass
    except OSError:
        pass
    return out


def test_hostile_environment_fds_umask_rlimits_signals_args(site, evil):
    """One real job carrying rows 1-3, 5-8, 12, 13, 14, 20, 25, 29, 30 at once."""
    secret = evil / "racf-hostile-secret"
    secret.write_text("secret")
    secret_fd = os.open(secret, os.O_RDONLY)  # row 12: a user file ...
    a, b = __import__("socket").socketpair()  # ... and a socket, inherited through the starter
    os.set_inheritable(secret_fd, True)
    os.set_inheritable(a.fileno(), True)
    found = {"sock": os.readlink(f"/proc/self/fd/{a.fileno()}")}

    def hostile_process():
        os.umask(0)  # row 13
        # row 14: hostile soft limits (the shim sets them back); a hard limit the host does
        # not let root raise is refused cleanly instead (test_refusals, RLIMIT_NOFILE).
        for res, soft in ((resource.RLIMIT_FSIZE, 1024), (resource.RLIMIT_AS, 1 << 30),
                          (resource.RLIMIT_NPROC, 200), (resource.RLIMIT_NOFILE, 16)):
            resource.setrlimit(res, (soft, resource.getrlimit(res)[1]))

    cmd = testenv.job_command("busybox", "/bin/sh", ["-c", GUEST_SCRIPT, "sh", *ARGS],
                              env=hostile_env(evil), keep_sandbox=False)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            pass_fds=(secret_fd, a.fileno()), preexec_fn=hostile_process)
    os.close(secret_fd)
    stop = threading.Event()
    watcher = threading.Thread(target=_watch, args=(proc, found, stop), daemon=True)
    watcher.start()
    try:
        out, err = proc.communicate(timeout=600)
    finally:
        stop.set()
        watcher.join(10)
        a.close()
        b.close()
    out, err = out.decode(), err.decode()
    result = testenv.JobResult(proc.returncode, out, err, None, 0)
    assert result.status == 0, err
    assert racf_lines(result) == [], err
    # rows 1-3, 5-8: not a single trap was sprung, on the host or by any helper.
    assert markers(evil) == []
    lines = out.splitlines()
    # row 30: identity from the kernel, whatever the environment and arguments claim.
    assert lines[0:2] == [str(JOB_UID), str(JOB_UID)], out
    # row 29: every argument arrived verbatim (od shows the bytes), nothing evaluated.
    expected = [subprocess.run(["od", "-An", "-c"], input=f"<{x}>".encode(), capture_output=True)
                .stdout.decode().replace(" ", "").replace("\n", "") for x in ARGS]
    assert lines[2:2 + len(ARGS)] == expected, out
    assert lines[2 + len(ARGS)] == hostile_env(evil)["RACF_HOSTILE_OK"]
    guest_env = set(lines[3 + len(ARGS)].split())
    for name in ("LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "GLIBC_TUNABLES", "GCONV_PATH",
                 "BASH_ENV", "ENV", "IFS", "SHELLOPTS", "PS4", "XDG_RUNTIME_DIR"):
        assert name not in guest_env, (name, guest_env)
    assert not any(n.startswith("BASH_FUNC_") for n in guest_env)
    # row 12: neither the wrapper, its children, nor QEMU held the inherited fds.
    assert "wrapper" in found, "never saw the wrapper"
    assert not found.get("leaked"), found.get("leaked")
    # row 20: the user's SIGSTOP/SIGKILL were refused (EPERM); the job ran to its end.
    assert "stop=1" in found["signals"] and "kill=1" in found["signals"], found["signals"]
    assert "not permitted" in found["signals"], found["signals"]
    assert "done" in lines
    # row 13: with umask 000 the job dir is 0711 and the overlay 0600 (explicit modes).
    modes = found.get("modes", {})
    assert modes, "never saw the job directory"
    for name, (mode, uid) in modes.items():
        assert mode in ("0o711", "0o700", "0o600", "0o400"), (name, mode)
    # row 25: the live domain states every disk format; the base is reached via backingStore.
    import xml.etree.ElementTree as ET

    disk = ET.fromstring(found["xml"]).find("devices/disk")
    assert disk.find("driver").get("type") == "qcow2"
    layer = disk.find("backingStore")  # the prepared layer, then the base below it
    assert layer.get("type") == "file" and layer.find("format").get("type") == "qcow2"
    base = layer.find("backingStore")
    assert base.find("format").get("type") == "qcow2" and base.find("backingStore") is not None
    context = ET.fromstring(found["xml"]).findall("devices/disk")[1]
    assert context.find("driver").get("type") == "raw" and context.find("readonly") is not None


def test_row27_sandbox_symlink_swap_and_hardlink(site, evil):
    """The user swaps a sandbox subdirectory for a symlink to /etc while the guest runs and
    tries to hardlink a root file into the sandbox: nothing is written outside the sandbox,
    nothing is written or chowned as root."""
    script = "sleep 4; mkdir -p sub; echo pwned > sub/racf-hostile-marker; echo pwned > hl; echo done"
    cmd = testenv.job_command("busybox", "/bin/sh", ["-c", script], keep_sandbox=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    sandbox = testenv.EXECUTE_DIR / f"dir_{proc.pid}"
    planted = {}
    import libvirt

    conn = libvirt.open("qemu:///system")
    try:
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline and not planted:
            if any(d.name().startswith("racf-vm-") for d in conn.listAllDomains()):
                p = subprocess.run(
                    ["/usr/bin/setpriv", "--reuid", str(JOB_UID), "--regid", str(JOB_UID),
                     "--clear-groups", "/bin/sh", "-c",
                     f"cd {sandbox} && ln -s /etc sub && echo sym=$?; "
                     f"ln {testenv.TEST_CONFIG} {sandbox}/hl; echo hard=$?"],
                    capture_output=True, text=True)
                planted["out"] = p.stdout + p.stderr
            time.sleep(0.2)
    finally:
        conn.close()
    out, err = proc.communicate(timeout=300)
    err = err.decode()
    try:
        assert "sym=0" in planted.get("out", ""), planted
        # fs.protected_hardlinks: the kernel refuses the user a link to a root file.
        assert "hard=1" in planted["out"], planted
        assert not Path("/etc/racf-hostile-marker").exists()
        assert testenv.TEST_CONFIG.read_text().startswith("# racf-vm test site")
        lines = racf_lines(testenv.JobResult(proc.returncode, "", err, None, 0))
        # Extraction runs as the user: writing through the symlink into /etc fails.
        assert proc.returncode in (0, 64, 75), err
        assert len(lines) <= 1, err
        for p in sandbox.rglob("*"):
            assert os.lstat(p).st_uid == JOB_UID, p
    finally:
        Path("/etc/racf-hostile-marker").unlink(missing_ok=True)
        subprocess.run(["rm", "-rf", str(sandbox)])


def test_row40_hostile_guest_filesystem(site):
    """A catalog image whose filesystem is garbage: its preparation (libguestfs, as the
    unprivileged account) fails in bounded time, the job is requeued (75 +
    .job_wrapper_failure), and no layer or staging file is left behind."""
    disk = HOSTILE_DIR / "corrupt.qcow2"
    raw = HOSTILE_DIR / "corrupt.raw"
    with open(raw, "wb") as f:
        f.write(os.urandom(1 << 20))
        f.seek(1024)
        f.write(b"\x53\xef" * 512)  # ext-ish garbage: a superblock magic in the wrong place
        f.truncate(32 << 20)
    subprocess.run(["/usr/bin/qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", "-o", "compat=1.1",
                    str(raw), str(disk)], check=True)
    raw.unlink()
    os.chmod(disk, 0o644)
    started = time.monotonic()
    with catalog_entry(site, "h-corrupt", disk):
        result = run(wrapper_args=["-i", "h-corrupt"], keep_sandbox=True)
    seconds = time.monotonic() - started
    try:
        assert_refused(result, 75, "preparing image h-corrupt failed")
        note = result.sandbox / ".job_wrapper_failure"
        assert note.stat().st_uid == JOB_UID and "preparing image h-corrupt failed" in note.read_text()
        prepared = testenv.STATE_DIR / "prepared"
        assert not list(prepared.glob("h-corrupt-*")) and not list((prepared / ".staging").iterdir())
        assert seconds < 240, seconds
    finally:
        if result.sandbox:
            subprocess.run(["rm", "-rf", str(result.sandbox)])


def test_sizing_the_machine_ad_cannot_raise_the_vm_above_the_slot(site):
    """Item 5: .machine.ad is user-writable; claiming a bigger slot there changes nothing.
    The guest sees the slot's CPU count and at most the slot's memory."""
    result = run(command="/bin/sh", args=["-c", "grep -c ^processor /proc/cpuinfo; "
                                                "awk '/MemTotal/ {print $2}' /proc/meminfo"],
                 memory_mib=512, cpus=1, starter_opts=["--machine-ad", "Cpus = 8",
                                                       "--machine-ad", "Memory = 65536"])
    assert result.status == 0, result.stderr
    cpus, mem_kib = (int(x) for x in result.stdout.split())
    assert cpus == 1
    assert mem_kib <= 512 * 1024


def test_item1_nothing_privileged_touches_the_jobs_private_tmp(site):
    """Under HTCondor's default MOUNT_UNDER_SCRATCH (the stand-in's too) the job's /tmp and
    /var/tmp are <sandbox>/tmp and <sandbox>/var/tmp, owned by the user. With the KVM probe
    forced to run (no cached answer) and the job running, nothing root owns ever appears in
    them: the wrapper works in /tmp and /var/tmp of its own."""
    accel_cache = testenv.STATE_DIR / "accel.json"
    accel_cache.unlink(missing_ok=True)
    cmd = testenv.job_command("busybox", "/bin/sh", ["-c", "sleep 2; echo done"])
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = proc.stderr.readline().decode()
    assert line.startswith("starter: sandbox="), line
    sandbox = Path(line.split("=", 1)[1].strip())
    seen, stop = set(), threading.Event()

    def watch():
        while not stop.is_set():
            for top in (sandbox / "tmp", sandbox / "var" / "tmp"):
                for p in top.rglob("*") if top.is_dir() else ():
                    try:
                        if p.lstat().st_uid != JOB_UID:
                            seen.add(str(p))
                    except FileNotFoundError:
                        pass
            time.sleep(0.005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        out, err = proc.communicate(timeout=600)
    finally:
        stop.set()
        watcher.join()
    try:
        assert proc.returncode == 0, err
        assert out == b"done\n"
        assert (sandbox / "tmp").is_dir() and (sandbox / "tmp").stat().st_uid == JOB_UID
        assert seen == set()
        assert accel_cache.exists()  # the probe did run
    finally:
        subprocess.run(["rm", "-rf", str(sandbox)])


# bounds for the flooded job, far above what it measures (see the closing note of issue 11)
FLOOD_CPU_SECONDS = 30
FLOOD_MAXRSS_KIB = 256 * 1024
FLOOD = r"""
# hostile guest (test image): before the runner starts, flood the status port with garbage
for p in /sys/class/virtio-ports/*; do
    [ "$(cat $p/name)" = org.racf.vm.status ] || continue
    i=0
    while [ $i -lt 20000 ]; do echo "garbage line $i"; i=$((i + 1)); done > /dev/${p##*/}
done
"""


def test_item9_a_guest_flooding_the_status_port_costs_bounded_log_lines(site):
    """A hostile (untrusted-style) image writes tens of thousands of invalid status lines
    before the runner starts; the job still runs, and its stderr gets a few racf-vm lines,
    not one per line the guest sent."""
    disk = HOSTILE_DIR / "flood.qcow2"
    subprocess.run(["/usr/bin/cp", str(site["small"] / "disk.qcow2"), str(disk)], check=True)
    rcs = HOSTILE_DIR / "rcS"
    original = subprocess.run(["/usr/bin/guestfish", "--ro", "--format=qcow2", "-a", str(site["small"] / "disk.qcow2"),
                               "-m", "/dev/sda", "cat", "/etc/init.d/rcS"], check=True, capture_output=True,
                              env={"LIBGUESTFS_BACKEND_SETTINGS": "force_tcg", "PATH": "/usr/bin:/bin",
                                   "HOME": "/root"}).stdout.decode()
    rcs.write_text(original.replace("if [ -x /etc/rc.local ]; then", FLOOD + "if [ -x /etc/rc.local ]; then"))
    subprocess.run(["/usr/bin/guestfish", "--format=qcow2", "-a", str(disk), "-m", "/dev/sda",
                    "upload", str(rcs), "/etc/init.d/rcS"], check=True,
                   env={"LIBGUESTFS_BACKEND_SETTINGS": "force_tcg", "PATH": "/usr/bin:/bin", "HOME": "/root"})
    os.chmod(disk, 0o644)
    sha = subprocess.run(["/usr/bin/sha256sum", str(disk)], check=True, capture_output=True,
                         text=True).stdout.split()[0]
    with catalog_entry(site, "h-flood", disk, sha256=sha):
        testenv.cli("images", "prepare", "h-flood")  # the job's cost is then the wrapper's alone
        result = run(wrapper_args=["-i", "h-flood"], command="/bin/sh", args=["-c", "echo still-ran"])
    assert result.status == 0, result.stderr
    assert result.stdout == "still-ran\n"
    lines = racf_lines(result)
    assert 1 <= len(lines) <= 5 and "more invalid status lines" in lines[-1], lines
    # what the wrapper and its helpers cost the host (QEMU is libvirtd's, not the job's)
    used = re.search(r"^starter: job used cpu=([0-9.]+)s maxrss=([0-9]+)KiB$", result.stderr, re.M)
    assert used, result.stderr
    print(f"\nflooded job: {used.group(0)}")
    assert float(used.group(1)) < FLOOD_CPU_SECONDS and int(used.group(2)) < FLOOD_MAXRSS_KIB, used.group(0)


OUTPUT_ATTACK = ("echo data > a.txt; ln a.txt again; mkfifo pipe; ln -s /etc/passwd passwd-link; "
                 "mkdir d; ln -s /etc d/etc; ln -s .. d/up; echo kept > d/b.txt; echo done")


def test_item7_the_guests_output_comes_back_as_regular_files_only(site):
    """The job (as its user in the guest) leaves a hard link, a FIFO and symbolic links,
    one of them to a directory outside the sandbox, among its output: only regular files
    (a hard link comes back as a copy of its own, the host never links) and directories
    come back; the rest is refused and named in one line."""
    result = run(command="/bin/sh", args=["-c", OUTPUT_ATTACK], keep_sandbox=True)
    try:
        assert result.status == 0 and result.stdout == "done\n", result.stderr
        sb = result.sandbox
        assert (sb / "a.txt").read_text() == "data\n" and (sb / "d" / "b.txt").read_text() == "kept\n"
        for name in ("pipe", "passwd-link", "d/etc", "d/up"):
            assert not os.path.lexists(sb / name), name
        for path in [sb / "a.txt", sb / "again", sb / "d", sb / "d" / "b.txt"]:
            assert path.lstat().st_uid == JOB_UID, path
        for name in ("a.txt", "again"):
            st = (sb / name).lstat()
            assert stat.S_ISREG(st.st_mode) and st.st_nlink == 1, name
        lines = racf_lines(result)
        assert len(lines) == 1 and "4 output entries refused" in lines[0], lines
        for name in ("pipe: fifo", "passwd-link: symbolic link", "d/etc: symbolic link", "d/up: symbolic link"):
            assert name in lines[0], (name, lines[0])
    finally:
        if result.sandbox:
            subprocess.run(["rm", "-rf", str(result.sandbox)])


# issue 11 item 3: the job's process (as the user, under the starter) blocks every signal,
# ignores the ones a wrapper relies on and arms a timer, then execs the shim: all of that
# survives exec, and the wrapper must start from defaults (SIGCHLD ignored would make its
# waits fail; the timer's SIGALRM would kill it)
SIGNAL_STATE_THEN_EXEC = (  # one line: the job ad's Arguments cannot hold a line break
    "import os, signal, sys; "
    "signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals()); "
    "[signal.signal(s, signal.SIG_IGN) for s in "
    "(signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD, signal.SIGALRM)]; "
    "signal.setitimer(signal.ITIMER_REAL, 2.0, 1.0); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


def _signal_state(pid: int) -> dict:
    status = open(f"/proc/{pid}/status").read()
    return {k: int(v, 16) for k, v in re.findall(r"^(SigBlk|SigIgn):\s*([0-9a-f]+)$", status, re.M)}


def test_item3_signal_state_left_through_exec_is_reset(site):
    """The wrapper starts from default signal state whatever the process that exec'd it
    left: nothing blocked, nothing ignored but what Python ignores itself, no timer armed
    (it would have killed the wrapper with SIGALRM two seconds in)."""
    cmd = testenv.job_command("busybox", "/bin/sh", ["-c", "echo ready; sleep 4; echo done"], keep_sandbox=False,
                              job_argv=[testenv.PYTHON, "-c", SIGNAL_STATE_THEN_EXEC, str(testenv.SHIM),
                                        "-i", "busybox"])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout.readline() == b"ready\n"  # the guest runs: the wrapper is in its job loop
        kids = open(f"/proc/{proc.pid}/task/{proc.pid}/children").read().split()
        (wrapper,) = [int(k) for k in kids if "python" in _exe(k)]
        state = _signal_state(wrapper)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode()
    assert out == b"done\n"
    assert state["SigBlk"] == 0, state
    python_ignores = (1 << (signal.SIGPIPE - 1)) | (1 << (signal.SIGXFSZ - 1))
    assert state["SigIgn"] & ~python_ignores == 0, hex(state["SigIgn"])
