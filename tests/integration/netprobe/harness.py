"""Topology and guests for the netpolicy integration tests.

Topology (all built here, removed afterwards):

    guests -- racfut0 (untrusted network, 10.213.77.0/24, libvirt + netpolicy)
                 |  host (NAT)  -- veth 10.214.77.1 / fd00:214:77::1 --  "site" netns
    trusted guest -- racft0 (10.215.77.1/24, a plain bridge: the "site network" of
                                             trusted images; routed, no NAT)

The site namespace runs listener.py on TCP 7001, UDP 7002, TCP 7005, TCP 7006 (v4 and
v6) and a raw socket for protocol 132 (SCTP); the host runs one on the untrusted bridge's
address and on its veth address, TCP and UDP 7003.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
PY = sys.executable

NET_NAME = "racf-untrusted-test"
BRIDGE = "racfut0"
SUBNET = "10.213.77.0/24"
HOST_IP = "10.213.77.1"
SITE_HOST_IP = "10.214.77.1"
SITE_IP = "10.214.77.2"
SITE_HOST_IP6 = "fd00:214:77::1"
SITE_IP6 = "fd00:214:77::2"
TRUSTED_BRIDGE = "racft0"
TRUSTED_HOST_IP = "10.215.77.1"
TRUSTED_GUEST_IP = "10.215.77.10"
TRUSTED_NET = "10.215.77.0/24"


def sh(*argv, check=True, **kw):
    return subprocess.run(list(argv), check=check, capture_output=True, text=True, **kw)


def config_text(state_dir: str, backend: str = "auto") -> str:
    return f"""
[paths]
state_dir = "{state_dir}"
catalog_dir = "{state_dir}/images.d"

[untrusted_network]
name = "{NET_NAME}"
bridge = "{BRIDGE}"
subnet = "{SUBNET}"
backend = "{backend}"
"""


def load_config(state_dir: str, backend: str = "auto"):
    from racf_vm import config

    return config.parse_config(config_text(state_dir, backend).encode(), "test")


class Topology:
    def __init__(self, root: str):
        self.root = root
        n = os.getpid() % 100000
        self.ns = f"racfsite{n}"
        self.veth_h = f"rcs{n}h"
        self.veth_s = f"rcs{n}s"
        self.site_log = os.path.join(root, "site.jsonl")
        self.host_log = os.path.join(root, "host.jsonl")
        self.procs = []
        self._forward = None

    def up(self):
        with open("/proc/sys/net/ipv4/ip_forward") as f:
            self._forward = f.read().strip()
        sh("ip", "netns", "add", self.ns)
        sh("ip", "link", "add", self.veth_h, "type", "veth", "peer", "name", self.veth_s)
        sh("ip", "link", "set", self.veth_s, "netns", self.ns)
        sh("ip", "addr", "add", f"{SITE_HOST_IP}/24", "dev", self.veth_h)
        sh("ip", "-6", "addr", "add", f"{SITE_HOST_IP6}/64", "dev", self.veth_h, "nodad")
        sh("ip", "link", "set", self.veth_h, "up")
        ns = ("ip", "netns", "exec", self.ns)
        sh(*ns, "ip", "link", "set", "lo", "up")
        sh(*ns, "ip", "addr", "add", f"{SITE_IP}/24", "dev", self.veth_s)
        sh(*ns, "ip", "-6", "addr", "add", f"{SITE_IP6}/64", "dev", self.veth_s, "nodad")
        sh(*ns, "ip", "link", "set", self.veth_s, "up")
        # the trusted "site network" is routed (no NAT) by the site's router, here the host
        sh(*ns, "ip", "route", "add", TRUSTED_NET, "via", SITE_HOST_IP)
        sh("ip", "link", "add", TRUSTED_BRIDGE, "type", "bridge")
        sh("ip", "addr", "add", f"{TRUSTED_HOST_IP}/24", "dev", TRUSTED_BRIDGE)
        sh("ip", "link", "set", TRUSTED_BRIDGE, "up")
        with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
            f.write("1\n")
        self._start(list(ns) + [PY, os.path.join(HERE, "listener.py"), self.site_log,
                                ":::tcp:7001", ":::udp:7002", ":::tcp:7005",
                                ":::tcp:7006", "--raw", "132"])

    def start_host_listener(self):
        self._start([PY, os.path.join(HERE, "listener.py"), self.host_log,
                     f"{HOST_IP}:tcp:7003", f"{HOST_IP}:udp:7003",
                     f"{SITE_HOST_IP}:tcp:7003", f"{SITE_HOST_IP}:udp:7003"])

    def _start(self, argv):
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = p.stdout.readline()
        if line.strip() != "ready":
            p.kill()
            raise RuntimeError(f"listener did not start: {line} {p.stderr.read()}")
        self.procs.append(p)

    def down(self):
        for p in self.procs:
            p.kill()
            p.wait()
        sh("ip", "link", "del", TRUSTED_BRIDGE, check=False)
        sh("ip", "link", "del", self.veth_h, check=False)
        sh("ip", "netns", "del", self.ns, check=False)
        if self._forward is not None:
            with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
                f.write(self._forward + "\n")

    @staticmethod
    def read_log(path):
        out = []
        if os.path.exists(path):
            with open(path) as f:
                for line in f:
                    e = json.loads(line)
                    e["src"] = e["src"].removeprefix("::ffff:")
                    out.append(e)
        return out

    def site_entries(self):
        return self.read_log(self.site_log)

    def host_entries(self):
        return self.read_log(self.host_log)


# -- guest scripts (/etc/rc.local, run as root by the small image's rcS) ----------------------
_PRELUDE = r"""#!/bin/sh
exec >/dev/ttyS0 2>&1
P=/usr/local/bin/probe
out() { echo "RACFNET $*"; }
arg() { sed -n "s/.*$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
n=0; while ! ip -4 addr show dev eth0 | grep -q inet && [ $n -lt 50 ]; do sleep 0.2; n=$((n+1)); done
out ADDR $(ip -4 addr show dev eth0 | awk '/inet /{print $2}')
out ID $(id -u)
"""

UNTRUSTED_PROBER = _PRELUDE + f"""
PEER=$(arg racfpeer)
out TCP600_SITE $($P tcp 600 {SITE_IP} 7001)
out UDP600_SITE $($P udp 600 {SITE_IP} 7002)
out TCP600_HOSTBR $($P tcp 600 {HOST_IP} 7003)
out UDP600_HOSTBR $($P udp 600 {HOST_IP} 7003)
out TCPHI_HOSTBR $($P tcp 40000 {HOST_IP} 7003)
out TCP600_HOSTVETH $($P tcp 600 {SITE_HOST_IP} 7003)
out UDPHI_HOSTVETH $($P udp 40001 {SITE_HOST_IP} 7003)
out RAW132_SITE $($P raw 132 {SITE_IP})
if ping -c 1 -W 2 {SITE_IP} >/dev/null 2>&1; then out PING_SITE OK; else out PING_SITE FAIL; fi
out IP6ROUTE $(ip -6 route show | grep -c default) default
out IP6ADDR $(ip -6 addr show dev eth0 | awk '/inet6/{{print $2}}')
if ping6 -c 1 -W 2 {SITE_IP6} >/dev/null 2>&1; then out PING6_SITE OK; else out PING6_SITE FAIL; fi
out TCP600_SITE6 $($P tcp 600 {SITE_IP6} 7001)
if ping -c 1 -W 2 $PEER >/dev/null 2>&1; then out PING_PEER OK; else out PING_PEER FAIL; fi
out TCP_PEER $($P tcp 0 $PEER 7004)
out UDP_PEER $($P udp 0 $PEER 7004)
out TCP_PEER_VIA_HOST $(ip route add $PEER/32 via {HOST_IP} dev eth0 2>&1; $P tcp 0 $PEER 7004)
ip route del $PEER/32 2>/dev/null
out LOOP_START
i=0
while [ $i -lt 8 ]; do
    r=$($P tcp 0 {SITE_IP} 7005)
    out LOOP $i $r
    i=$((i+1))
    sleep 0.5
done
out DONE
"""

PEER_LISTENER = _PRELUDE + """
$P listen 7004 $(arg racfsecs) | while read -r l; do out PEER $l; done
out DONE
"""

KEEPALIVE = _PRELUDE + f"""
while true; do out K $($P tcp 0 {SITE_IP} 7006) $($P udp 0 {SITE_IP} 7002); sleep 1; done
"""

TRUSTED_JOB = r"""#!/bin/sh
exec >/dev/ttyS0 2>&1
P=/usr/local/bin/probe
out() { echo "RACFNET $*"; }
ip link set eth0 up
ip addr add """ + TRUSTED_GUEST_IP + """/24 dev eth0
ip route add default via """ + TRUSTED_HOST_IP + """
echo 'racfjob:x:2501:2501::/tmp:/bin/sh' >>/etc/passwd
echo 'racfjob:x:2501:' >>/etc/group
# as the runner does it on busybox: the job runs as the job user, never root
job() { su -s /bin/sh -c 'exec "$@"' -- racfjob sh "$@"; }
out ID $(job id -u)
out TCP600_SITE $(job $P tcp 600 """ + SITE_IP + """ 7001)
out TCP_SITE $(job $P tcp 0 """ + SITE_IP + """ 7001)
out UDP_SITE $(job $P udp 0 """ + SITE_IP + """ 7002)
out DONE
"""


def parse_console(text: str) -> dict:
    """{KEY: [rest, ...]} from the RACFNET lines of a console log."""
    out: dict = {}
    for line in text.splitlines():
        m = re.search(r"RACFNET (\S+) ?(.*)$", line)
        if m:
            out.setdefault(m.group(1), []).append(m.group(2).strip())
    return out


def build_probe(dest: str) -> str:
    sh("gcc", "-static", "-O2", "-o", dest, os.path.join(HERE, "probe.c"))
    return dest


def write_guests(overlays: dict, root_device: str, probe: str) -> None:
    """One libguestfs launch for all guests: /etc/rc.local and the probe into each overlay."""
    import guestfs

    with open(probe, "rb") as f:
        probe_bytes = f.read()
    g = guestfs.GuestFS(python_return_dict=True)
    try:
        g.set_backend("direct")
        g.set_backend_settings(["force_tcg"])
        names = list(overlays)
        for name in names:
            g.add_drive_opts(overlays[name][0], format="qcow2", readonly=False)
        g.launch()
        devs = g.list_devices()
        for name, dev in zip(names, devs):
            g.mount(dev, "/")
            g.mkdir_p("/usr/local/bin")
            g.write("/usr/local/bin/probe", probe_bytes)
            g.chmod(0o755, "/usr/local/bin/probe")
            g.write("/etc/rc.local", overlays[name][1].encode())
            g.chmod(0o755, "/etc/rc.local")
            g.umount_all()
        g.shutdown()
    finally:
        g.close()


class Guests:
    """Overlays and domains of the test guests (qemu:///system, autodestroy)."""

    def __init__(self, root: str, image_dir: str):
        import tomllib

        self.root = root
        self.image_dir = image_dir
        with open(os.path.join(image_dir, "image.toml"), "rb") as f:
            self.meta = tomllib.load(f)
        self.state = os.path.join(root, "state")
        os.makedirs(self.state, mode=0o711, exist_ok=True)
        self.overlays: dict = {}
        self.consoles: dict = {}

    def prepare(self, scripts: dict, probe: str) -> None:
        import pwd

        from racf_vm.images import imageheader
        from racf_vm.vm import disks, workspace

        base = imageheader.validate_base_image(os.path.join(self.image_dir, self.meta["disk"]), "qcow2")
        pw = pwd.getpwnam("libvirt-qemu")
        todo = {}
        for name, script in scripts.items():
            job_dir = workspace.make_job_dir(self.state, f"nt{name}-1.0-{os.getpid()}-1")
            ov = disks.create_overlay(job_dir, base.path, "qcow2", pw.pw_uid, pw.pw_gid)
            self.overlays[name] = (ov, job_dir, base.path)
            todo[name] = (ov, script)
        write_guests(todo, self.meta["root_device"], probe)

    def spec(self, name: str, tag: str, owner_pid: int, *, network=None, mac=None, bridge=None,
             cmdline: str = ""):
        import pwd

        from racf_vm.vm.domain_xml import KernelBoot
        from tests.support.specs import job_spec

        ov, job_dir, base = self.overlays[name]
        pw = pwd.getpwnam("libvirt-qemu")
        console = os.path.join(job_dir, f"console-{tag}.log")
        self.consoles[name] = console
        d = self.image_dir
        return job_spec(
            name=f"racf-vm-{tag}", tag=tag, pid=owner_pid, start=1, uid=0, domain_type="qemu",
            memory_mib=256, vcpus=1, emulator="/usr/bin/qemu-system-x86_64", overlay_path=ov,
            base_path=base, base_format="qcow2",
            boot=KernelBoot(os.path.join(d, self.meta["kernel"]), os.path.join(d, self.meta["initrd"]),
                            self.meta["cmdline"] + (" " + cmdline if cmdline else "")),
            qemu_uid=pw.pw_uid, qemu_gid=pw.pw_gid, network=network, mac=mac, bridge=bridge,
            console_log=console,
        )

    def boot(self, conn, spec):
        from racf_vm.vm import domain
        from racf_vm.vm.domain_xml import build_domain_xml

        return domain.start_domain(conn, build_domain_xml(spec))

    def console(self, name: str) -> dict:
        try:
            with open(self.consoles[name], errors="replace") as f:
                return parse_console(f.read())
        except FileNotFoundError:
            return {}

    def wait_for(self, name: str, key: str, timeout: float, count: int = 1) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            c = self.console(name)
            if len(c.get(key, [])) >= count:
                return c
            time.sleep(0.3)
        with open(self.consoles[name], errors="replace") as f:
            raise AssertionError(f"guest {name}: no {key} within {timeout}s; console:\n{f.read()[-3000:]}")


def alternatives_state(name: str) -> tuple:
    out = sh("update-alternatives", "--query", name).stdout
    status = re.search(r"^Status: (\S+)", out, re.M).group(1)
    value = re.search(r"^Value: (\S+)", out, re.M).group(1)
    return status, value


def set_alternatives(state: dict) -> None:
    for name, (status, value) in state.items():
        if status == "auto":
            sh("update-alternatives", "--quiet", "--auto", name)
        else:
            sh("update-alternatives", "--quiet", "--set", name, value)


def destroy_network() -> None:
    sh("virsh", "-c", "qemu:///system", "net-destroy", NET_NAME, check=False)
    sh("virsh", "-c", "qemu:///system", "net-undefine", NET_NAME, check=False)


def make_root() -> str:
    root = tempfile.mkdtemp(prefix="racf-nettest-", dir="/run")
    os.chmod(root, 0o755)
    return root


def remove_root(root: str) -> None:
    shutil.rmtree(root, ignore_errors=True)
