"""The test site: users, images, config and catalog, and running a job like HTCondor does.

Shared by the end-to-end tests, `make demo` and `make bench`. Everything lives in
root-owned places outside the repository (security checks require it).
"""

import dataclasses
import os
import pwd
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

REPO = Path(__file__).resolve().parents[2]
TEST_ETC = Path("/etc/racf-vm-test")
TEST_CONFIG = TEST_ETC / "racf-vm.toml"
TEST_CATALOG = TEST_ETC / "images.d"
TEST_ROOT = Path("/var/lib/racf-vm-test")
STATE_DIR = TEST_ROOT / "state"
EXECUTE_DIR = TEST_ROOT / "execute"
IMAGE_CACHE = Path("/var/cache/racf-vm-test")
LIBEXEC = Path("/usr/local/libexec/racf-vm-test")
SHIM = LIBEXEC / "vm"
STARTER = LIBEXEC / "condor_starter"
RUNNER = Path("/usr/local/share/racf-vm/guest/runner.sh")
PYTHON = "/opt/racf-vm/venv/bin/python"

JOB_USERS = {"racfjob": 2501, "racfjob2": 2502}


def ensure_users() -> None:
    for name, uid in JOB_USERS.items():
        try:
            pwd.getpwnam(name)
        except KeyError:
            subprocess.run(["/usr/sbin/groupadd", "-g", str(uid), name], check=False)
            subprocess.run(
                ["/usr/sbin/useradd", "-u", str(uid), "-g", str(uid), "-M", "-d", "/nonexistent", "-s", "/bin/sh", name],
                check=True,
            )


def build_image(kind: str) -> Path:
    """Build (or reuse from the cache) a test image; returns its directory."""
    out = subprocess.run(
        [sys.executable, "-m", "tests.images.build", kind, "--cache", str(IMAGE_CACHE)],
        cwd=REPO,
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    ).stdout
    return Path(out.strip().splitlines()[-1])


def _image_toml(image_dir: Path) -> dict:
    import tomllib

    return tomllib.loads((image_dir / "image.toml").read_text())


def catalog_entry(name: str, image_dir: Path, trust: str = "trusted", *, path: Optional[str] = None,
                  fmt: Optional[str] = None, sha256: Optional[str] = None) -> str:
    """The one catalog writer of the tests: an entry for a built test image, booting its
    kernel and initrd; ``path``, ``fmt`` and ``sha256`` replace the image's own values."""
    meta = _image_toml(image_dir)
    q = _toml_str
    return "\n".join(
        [
            f"name = {q(name)}",
            f"trust = {q(trust)}",
            f"path = {q(path or str(image_dir / meta['disk']))}",
            f"format = {q(fmt or meta['format'])}",
            f"sha256 = {q(sha256 or meta['sha256'])}",
            "",
            "[boot]",
            'method = "kernel"',
            f"kernel = {q(str(image_dir / meta['kernel']))}",
            f"initrd = {q(str(image_dir / meta['initrd']))}",
            f"cmdline = {q(meta['cmdline'])}",
            "",
            "[context]",
            f"filesystem = {q(meta['root_device'])}",
            'fstype = "ext4"',
            f"hook = {q('systemd' if meta.get('init') == 'systemd' else 'rc.local')}",
            "",
        ]
    )


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_site(images: dict, *, log_level: str = "warning", extra: str = "", boot_timeout: float = 300) -> None:
    """Write the test config and catalog; ``images`` maps catalog name -> image dir."""
    for d in (TEST_ETC, TEST_CATALOG, TEST_ROOT, STATE_DIR, EXECUTE_DIR):
        d.mkdir(mode=0o755, parents=True, exist_ok=True)
        os.chown(d, 0, 0)
        os.chmod(d, 0o755)
    os.chmod(STATE_DIR, 0o711)
    config = f"""# racf-vm test site (written by tests/support/testenv.py)
log_level = "{log_level}"

[paths]
catalog_dir = "{TEST_CATALOG}"
state_dir = "{STATE_DIR}"
image_dir = "{IMAGE_CACHE}"
runner = "{RUNNER}"

[parent]
starter = "{STARTER}"
execute = "{EXECUTE_DIR}"

[sizing]
memory_per_core_mib = 512
min_memory_mib = 128

[timeouts]
prepare = 600
sandbox = 300
boot = {boot_timeout}
shutdown_grace = 5
poweroff = 60
{extra}
"""
    write_root_file(TEST_CONFIG, config)
    wanted = {f"{name}.toml" for name in images}
    for old in TEST_CATALOG.glob("*.toml"):
        if old.name not in wanted:
            old.unlink()
    for name, (image_dir, trust) in images.items():
        write_root_file(TEST_CATALOG / f"{name}.toml", catalog_entry(name, image_dir, trust))


def small_site(*, prepare: bool = False, **write_kw) -> dict:
    """Test users, the small busybox image built (or reused), the site written for it and
    what dead wrappers of earlier runs left collected; with ``prepare``, its prepared layer made now rather than by the first job.

    Returns the catalog mapping (name -> (image dir, trust)) that ``write_site`` took.
    """
    ensure_users()
    images = {"busybox": (build_image("small"), "trusted")}
    write_site(images, **write_kw)
    # a run killed part-way (SIGKILL, host restart) leaves its jobs' resources; the product's
    # answer is gc, and without it every later test would report them as its own leftovers
    cli("gc")
    if prepare:
        cli("images", "prepare", "busybox")
    return images


def cli(*args: str) -> subprocess.CompletedProcess:
    """The installed ``racf-vm`` CLI on the test site (fails loudly)."""
    return subprocess.run([PYTHON, "-m", "racf_vm.cli", "--config", str(TEST_CONFIG), *args],
                          check=True, capture_output=True, text=True, cwd="/", timeout=900)


def write_root_file(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.chown(tmp, 0, 0)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def classad_string(value: str) -> str:
    """A ClassAd old-syntax string literal (backslash literal except before a quote)."""
    if value.endswith("\\"):
        raise ValueError("old ClassAd syntax cannot end a string with a backslash")
    return '"' + value.replace('"', '\\"') + '"'


def condor_args(args: Sequence[str]) -> str:
    """VM_Args in HTCondor's V2 argument syntax (as a submit file's arguments would be)."""
    from racf_vm.condor.arguments import quote_v2

    return quote_v2(list(args))


@dataclasses.dataclass
class JobResult:
    status: int  # the stand-in's exit status: the job's, or 128+signal
    stdout: str
    stderr: str
    sandbox: Optional[Path]
    seconds: float


def job_command(
    image: str = "busybox",
    command: str = "/bin/sh",
    args: Sequence[str] = (),
    *,
    env: dict = None,
    user: str = "racfjob",
    memory_mib: int = 512,
    cpus: int = 1,
    ads: Sequence[str] = (),
    inputs: dict = None,
    wrapper_args: Optional[Sequence[str]] = None,
    job_argv: Optional[Sequence[str]] = None,
    starter_opts: Sequence[str] = (),
    keep_sandbox: bool = True,
) -> list:
    """The stand-in starter's command line for one job through the installed test shim."""
    cmd = [
        str(STARTER),
        "--user", user,
        "--execute", str(EXECUTE_DIR),
        "--memory", str(memory_mib),
        "--cpus", str(cpus),
        "--ad", f"VM_Command = {classad_string(command)}",
    ]
    if args:
        cmd += ["--ad", f"VM_Args = {classad_string(condor_args(args))}"]
    for ad in ads:
        cmd += ["--ad", ad]
    for k, v in (env or {}).items():
        cmd += ["--env", f"{k}={v}"]
    for name, content in (inputs or {}).items():
        cmd += ["--input", f"{name}={content}"]
    if keep_sandbox:
        cmd.append("--keep-sandbox")
    cmd += list(starter_opts)
    if job_argv is None:
        job_argv = [str(SHIM)] + list(wrapper_args if wrapper_args is not None else ["-i", image])
    return cmd + ["--"] + list(job_argv)


def run_job(*args, timeout: float = 900, **kwargs) -> JobResult:
    """Run one job to the end; see job_command for the arguments."""
    cmd = job_command(*args, **kwargs)
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    seconds = time.monotonic() - started
    stderr = proc.stderr.decode(errors="replace")
    m = re.search(r"^starter: sandbox=(.*)$", stderr, re.M)
    return JobResult(proc.returncode, proc.stdout.decode(errors="replace"), stderr, Path(m.group(1)) if m else None, seconds)


def _racf_domains() -> list:
    import libvirt

    conn = libvirt.open("qemu:///system")
    try:
        return [d.name() for d in conn.listAllDomains() if d.name().startswith("racf-vm-")]
    finally:
        conn.close()


def leftovers(settle: float = 15.0) -> list:
    """Every racf-vm resource still present: domains and job directories.

    A domain whose QEMU has exited may stay listed while libvirtd finishes tearing it
    down (about 1.5 s); it gets ``settle`` seconds to go before it counts as left over.
    """
    deadline = time.monotonic() + settle
    domains = _racf_domains()
    while domains and time.monotonic() < deadline:
        time.sleep(0.2)
        domains = _racf_domains()
    jobs = STATE_DIR / "jobs"
    found = [f"job dir {p}" for p in jobs.iterdir()] if jobs.is_dir() else []
    if os.environ.get("RACF_TESTS_SHARED") == "1":
        # a development host where other suites boot guests at the same time (CI runs strict)
        return found
    return [f"domain {name}" for name in domains] + found + _network_leftovers()


def _network_leftovers() -> list:
    """Per-job firewall rules (comment racf:<tag>) and DHCP reservations of the NAT network."""
    found = []
    nft = subprocess.run(["/usr/sbin/nft", "list", "table", "inet", "racf_vm"], capture_output=True, text=True)
    for line in nft.stdout.splitlines():
        m = re.search(r'comment "(racf:[^"]*)"', line)
        if m and not m.group(1).startswith("racf:base"):
            found.append(f"nft rule {m.group(1)}")
    net = subprocess.run(["/usr/bin/virsh", "-q", "net-dumpxml", "racf-untrusted"], capture_output=True, text=True)
    found += [f"dhcp reservation {h}" for h in re.findall(r"<host [^>]*>", net.stdout)]
    return found
