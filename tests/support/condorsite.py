"""A node for the HTCondor integration tests: config, catalog, a verified image cache, the
execute directory, and the racf-vm tools installed as HTCondor would call them.

Everything lives in one root-owned directory ``/var/lib/racf-vm-test/condor-<pid>/``
(removed by ``remove()``). The catalog holds the small busybox test image three times, as
``busybox`` (trusted), ``busybox-nat`` (untrusted) and ``busybox-unsynced`` (trusted, but
not verified in the cache), each a file of its own in the cache; the first two are
recorded in the cache's verified index as a sync would. The untrusted network is
this site's own (name, bridge and subnet nobody else uses). The tools are small scripts
like the console scripts pip installs, with ``--config`` naming this site's file; they
import the racf_vm of this checkout.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.support import testenv

REPO = Path(__file__).resolve().parents[2]
PYTHON = "/opt/racf-vm/venv/bin/python"
NET_NAME = "racf-untrusted-cx"
NET_BRIDGE = "racfcx0"
NET_SUBNET = "10.213.93.0/24"
TOOLS = {
    "racf-vm-libvirt-xml": ("racf_vm.condor.xmlscript", "main"),
    "racf-vm-hook-prepare": ("racf_vm.condor.hooks", "prepare_main"),
    "racf-vm-hook-exit": ("racf_vm.condor.hooks", "exit_main"),
    "racf-vm-transfer": ("racf_vm.condor.transfer", "main"),
    "racf-vm-route-translate": ("racf_vm.condor.jobrouter", "translate_main"),
    "racf-vm-route-finalize": ("racf_vm.condor.jobrouter", "finalize_main"),
}
# name -> (trust, recorded as verified in the cache's index)
IMAGES = {"busybox": ("trusted", True), "busybox-nat": ("untrusted", True),
          "busybox-unsynced": ("trusted", False)}


@dataclass
class Site:
    root: Path
    image_dir: Path  # the built test image (kernel, initrd)

    @property
    def etc(self) -> Path:
        return self.root / "etc"

    @property
    def config(self) -> Path:
        return self.etc / "racf-vm.toml"

    @property
    def catalog(self) -> Path:
        return self.etc / "images.d"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def execute(self) -> Path:
        return self.root / "execute"

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    def tool(self, name: str) -> str:
        return str(self.bin / name)

    def image_path(self, name: str) -> str:
        return str(self.cache / f"{name}.qcow2")

    def load_config(self):
        from racf_vm import config

        return config.load_config(str(self.config))

    def job_dirs(self) -> list[Path]:
        jobs = self.state / "jobs"
        return sorted(jobs.iterdir()) if jobs.is_dir() else []

    def make_sandbox(self, user: str, number: int, mode: int = 0o755) -> Path:
        """``execute/dir_<number>`` owned by ``user``, as the starter makes it (0755 for VM
        jobs, whose disks libvirt must reach; 0700 otherwise)."""
        pw = pwd.getpwnam(user)
        path = self.execute / f"dir_{number}"
        path.mkdir(mode=mode)
        os.chown(path, pw.pw_uid, pw.pw_gid)
        os.chmod(path, mode)
        return path

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _root_dir(path: Path, mode: int = 0o755) -> Path:
    path.mkdir(mode=mode, parents=True, exist_ok=True)
    os.chown(path, 0, 0)
    os.chmod(path, mode)
    return path


def _root_file(path: Path, text: str, mode: int = 0o644) -> None:
    path.write_text(text)
    os.chown(path, 0, 0)
    os.chmod(path, mode)


def config_text(site: Site, *, extra: str = "") -> str:
    return f"""# racf-vm HTCondor integration test node (tests/support/condorsite.py)
log_level = "warning"

[paths]
catalog_dir = "{site.catalog}"
state_dir = "{site.state}"
image_dir = "{site.cache}"

[parent]
execute = "{site.execute}"

[sizing]
memory_per_core_mib = 512
min_memory_mib = 64

[untrusted_network]
name = "{NET_NAME}"
bridge = "{NET_BRIDGE}"
subnet = "{NET_SUBNET}"

[vm_universe]
console_log = true

[condor]
wrapper = "/usr/local/racf/vm"
{extra}"""


def _tool_script(module: str, func: str, config: Path) -> str:
    return (f"#!{PYTHON} -I\n"
            f"# like pip's console script for {module}:{func}, with this site's config\n"
            "import sys\n"
            f"sys.path.insert(0, {str(REPO)!r})\n"
            f"from {module} import {func}\n"
            f"sys.exit({func}(['--config', {str(config)!r}] + sys.argv[1:]))\n")


def make_site(*, extra_config: str = "") -> Site:
    """Build the node (the small image is built or reused first)."""
    testenv.ensure_users()
    image_dir = testenv.build_image("small")
    parent = _root_dir(Path("/var/lib/racf-vm-test"))
    site = Site(root=parent / f"condor-{os.getpid()}", image_dir=image_dir)
    shutil.rmtree(site.root, ignore_errors=True)
    for d in (site.root, site.etc, site.catalog, site.cache, site.execute, site.bin):
        _root_dir(d)
    _root_dir(site.state, 0o711)
    _root_file(site.config, config_text(site, extra=extra_config))
    from racf_vm.images import index

    disk = image_dir / "disk.qcow2"
    digest = hashlib.sha256(disk.read_bytes()).hexdigest()
    for name, (trust, verified) in IMAGES.items():
        target = Path(site.image_path(name))
        shutil.copyfile(disk, target)
        os.chown(target, 0, 0)
        os.chmod(target, 0o644)
        if verified:
            index.record(str(site.cache), target.name, digest, os.stat(target))
        entry = testenv.catalog_entry(name, image_dir, trust, path=str(target), sha256=digest)
        # the kernel's boot messages on the console, so a test sees the guest boot
        _root_file(site.catalog / f"{name}.toml", entry.replace(" quiet", ""))
    for name, (module, func) in TOOLS.items():
        _root_file(site.bin / name, _tool_script(module, func, site.config), 0o755)
    return site


def as_user(user: str):
    """A preexec_fn that makes a child the job's user for good, as the starter does
    (PRIV_USER_FINAL): supplementary groups gone, real/effective/saved ids the user's."""
    pw = pwd.getpwnam(user)

    def become() -> None:
        os.setgroups([])
        os.setresgid(pw.pw_gid, pw.pw_gid, pw.pw_gid)
        os.setresuid(pw.pw_uid, pw.pw_uid, pw.pw_uid)

    return become


def run_as(user: str, argv: list, *, env: dict, cwd: str, stdin: bytes = b"",
           timeout: float = 120) -> subprocess.CompletedProcess:
    """``argv`` as ``user`` with exactly ``env``, like a daemon spawns a hook or plugin."""
    return subprocess.run(argv, input=stdin, capture_output=True, env=env, cwd=cwd,
                          preexec_fn=as_user(user), timeout=timeout, close_fds=True)



def _others_on_untrusted_networks() -> list:
    """What shows another racf-vm untrusted network in use on this host now: a test network
    of another config, or per-job firewall rules of a live process."""
    from netpolicy import detect
    from racf_vm.core import jobtag

    busy = [n for n in subprocess.run(["/usr/bin/virsh", "-q", "net-list", "--name"], capture_output=True,
                                      text=True).stdout.split()
            if n.startswith("racf-untrusted-") and n != NET_NAME]
    try:
        tags = detect.get_backend("auto").job_tags()
    except Exception:  # no usable backend now (another test switching it): not quiet
        return busy + ["firewall backend"]
    return busy + [t for t in tags if (o := jobtag.parse_tag(t)) is not None and jobtag.is_alive(o)]


def wait_for_other_network_tests(timeout: float = 1800) -> None:
    """The firewall skeleton is one per host: an untrusted network of another config in use
    now would have ours replace its skeleton (and it ours). Wait until nobody uses one."""
    import time

    deadline = time.monotonic() + timeout
    while _others_on_untrusted_networks() and time.monotonic() < deadline:
        time.sleep(5)


def remove_network(site: Site) -> None:
    """Our untrusted network, and the firewall skeleton installed for it if it is still
    ours (the per-job rules are racf-vm gc's to remove)."""
    import shlex

    from netpolicy import lease

    for verb in ("net-destroy", "net-undefine"):
        subprocess.run(["/usr/bin/virsh", "-q", verb, NET_NAME], capture_output=True)
    comment = f"racf:base:{lease.base_version(lease.example_plan(site.load_config()))}"
    listing = subprocess.run(["/usr/sbin/nft", "-j", "list", "table", "inet", "racf_vm"],
                             capture_output=True, text=True)
    if listing.returncode == 0:
        import json

        for obj in json.loads(listing.stdout)["nftables"]:
            rule = obj.get("rule")
            if rule and rule.get("comment") == comment:
                subprocess.run(["/usr/sbin/nft", "delete", "rule", "inet", "racf_vm", rule["chain"],
                                "handle", str(rule["handle"])], capture_output=True)
    for table in ("filter", "nat", "mangle", "raw"):
        rules = subprocess.run(["/usr/sbin/iptables-legacy", "-w", "-t", table, "-S"],
                               capture_output=True, text=True).stdout.splitlines()
        for line in rules:
            if f'"{comment}"' in line or f" {comment} " in line + " ":
                argv = shlex.split(line)
                subprocess.run(["/usr/sbin/iptables-legacy", "-w", "-t", table, "-D"] + argv[1:],
                               capture_output=True)
