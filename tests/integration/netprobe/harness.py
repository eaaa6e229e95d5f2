"""Topology and guests for the netpolicy integration tests.

Topology (all built here, removed afterwards):

    guests -- racfut0 (untrusted network, 10.213.77.0/24, libvirt + netpolicy)
                 |  host (NAT)  -- veth 198.51.100.1 / fd00:214:77::1 --  "site" netns
    trusted guest -- racft0 (10.215.77.1/24, a plain bridge: the "site network" of
                                             trusted images; routed, no NAT)

The site namespace stands in for the outside world (a documentation range, which the
default deny list leaves open) and runs listener.py on TCP 7001, UDP 7002, TCP 7005,
TCP 7006, TCP 7009 (v4 and v6) and a raw socket for protocol 132 (SCTP). It also holds
two deny-listed addresses the host routes to it, a private one (192.168.77.2) and a
link-local one (169.254.77.77, where cloud metadata services live), each with TCP and UDP
7007. The host runs one listener on 0.0.0.0 TCP and UDP 7003 (every address of the host)
and, during a test, a port forward TCP 7008 on every host address to the site's 7009.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
PY = sys.executable

NET_NAME = "racf-untrusted-test"
BRIDGE = "racfut0"
SUBNET = "10.213.77.0/24"
HOST_IP = "10.213.77.1"
SITE_HOST_IP = "198.51.100.1"
SITE_IP = "198.51.100.2"
DENY_IP = "192.168.77.2"      # RFC 1918: a site network
LINKLOCAL_IP = "169.254.77.77"  # link-local (not the real metadata address: the host may use that)
DNAT_PORT, DNAT_TARGET_PORT = 7008, 7009
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
        for addr in (DENY_IP, LINKLOCAL_IP):
            sh(*ns, "ip", "addr", "add", f"{addr}/32", "dev", "lo")
            sh("ip", "route", "add", f"{addr}/32", "via", SITE_IP)
        # the trusted "site network" is routed (no NAT) by the site's router, here the host
        sh(*ns, "ip", "route", "add", TRUSTED_NET, "via", SITE_HOST_IP)
        sh("ip", "link", "add", TRUSTED_BRIDGE, "type", "bridge")
        sh("ip", "addr", "add", f"{TRUSTED_HOST_IP}/24", "dev", TRUSTED_BRIDGE)
        sh("ip", "link", "set", TRUSTED_BRIDGE, "up")
        with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
            f.write("1\n")
        self._start(list(ns) + [PY, os.path.join(HERE, "listener.py"), self.site_log,
                                ":::tcp:7001", ":::udp:7002", ":::tcp:7005",
                                ":::tcp:7006", f":::tcp:{DNAT_TARGET_PORT}",
                                f"{DENY_IP}:tcp:7007", f"{DENY_IP}:udp:7007",
                                f"{LINKLOCAL_IP}:tcp:7007", f"{LINKLOCAL_IP}:udp:7007", "--raw", "132"])

    def start_host_listener(self):
        """TCP and UDP 7003 on every address of the host (the log names the one reached)."""
        self._start([PY, os.path.join(HERE, "listener.py"), self.host_log, "0.0.0.0:tcp:7003",
                     "0.0.0.0:udp:7003"])

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
        for addr in (DENY_IP, LINKLOCAL_IP):
            sh("ip", "route", "del", f"{addr}/32", check=False)
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
# each probe in the background, its result in a file: a closed path costs its timeout once
# (UDP probes running at the same time use distinct source ports: a reply must find its probe)
par() {{ k=$1; shift; "$@" >/tmp/r.$k 2>&1 & }}
show() {{ wait; for k in "$@"; do out $k $(cat /tmp/r.$k); done; }}
par TCP600_SITE $P tcp 600 {SITE_IP} 7001
par UDP600_SITE $P udp 600 {SITE_IP} 7002
par TCP600_HOSTBR $P tcp 600 {HOST_IP} 7003
par UDPLOW_HOSTBR $P udp 601 {HOST_IP} 7003
par TCPHI_HOSTBR $P tcp 40000 {HOST_IP} 7003
par TCP600_HOSTVETH $P tcp 600 {SITE_HOST_IP} 7003
par UDPHI_HOSTVETH $P udp 40001 {SITE_HOST_IP} 7003
par RAW132_SITE $P raw 132 {SITE_IP}
show TCP600_SITE UDP600_SITE TCP600_HOSTBR UDPLOW_HOSTBR TCPHI_HOSTBR TCP600_HOSTVETH UDPHI_HOSTVETH RAW132_SITE
# every address of the host (from the kernel command line), from a low and a high port
n=0; for a in $(arg racfhost | tr , ' '); do
    par HOSTADDR_TCP_$n $P tcp $((600+n)) $a 7003; par HOSTADDR_UDP_$n $P udp $((40010+n)) $a 7003
    par DNAT_$n $P tcp 0 $a {DNAT_PORT}; n=$((n+1)); done
k=""; i=0; while [ $i -lt $n ]; do k="$k HOSTADDR_TCP_$i HOSTADDR_UDP_$i DNAT_$i"; i=$((i+1)); done
show $k
# deny-listed destinations (a site network, link-local)
par TCP_DENY $P tcp 0 {DENY_IP} 7007; par UDP_DENY $P udp 0 {DENY_IP} 7007
par TCP_LINKLOCAL $P tcp 0 {LINKLOCAL_IP} 7007; par UDP_LINKLOCAL $P udp 0 {LINKLOCAL_IP} 7007
show TCP_DENY UDP_DENY TCP_LINKLOCAL UDP_LINKLOCAL
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
# while the peer forges ARP for this guest: every reply must still come here
ok=0; i=0; while [ $i -lt 10 ]; do $P udp 0 {SITE_IP} 7002 | grep -q ^OK && ok=$((ok+1)); i=$((i+1)); done
out UDP_BURST $ok of 10
out LOOP_START
i=0
while [ $i -lt 14 ]; do
    par L1 $P tcp 0 {SITE_IP} 7005; par L2 $P udp 600 {SITE_IP} 7002
    par L3 $P tcp 600 {HOST_IP} 7003; par L4 $P tcp 600 {SITE_HOST_IP} 7003; par L5 $P udp 601 {HOST_IP} 7003
    wait
    out LOOP $i $(cat /tmp/r.L1) / $(cat /tmp/r.L2) / $(cat /tmp/r.L3) / $(cat /tmp/r.L4) / $(cat /tmp/r.L5)
    i=$((i+1))
    sleep 0.5
done
out DONE
"""

# forges ARP for the victim (racfvictim, racfvictimmac) all the time it listens for the peer
PEER_LISTENER = _PRELUDE + f"""
$P listen 7004 $(arg racfsecs) | while read -r l; do out PEER $l; done &
$P spoof eth0 $(arg racfvictim) $(arg racfvictimmac) {HOST_IP} $(arg racfsecs) | while read -r l; do out SPOOF $l; done
wait
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


# -- what a running job meets: a supervisor, a host port forward, a firewall reload ------------
def host_addresses() -> list:
    """Every IPv4 address of the host a guest could name (loopback ones excepted: a guest
    sending to 127/8 reaches its own loopback)."""
    out = []
    for link in json.loads(sh("ip", "-j", "-4", "addr", "show").stdout):
        for a in link.get("addr_info", []):
            if a.get("family") == "inet" and not a["local"].startswith("127."):
                out.append(a["local"])
    return out


class Checker(threading.Thread):
    """Calls lease.check() every ``period`` seconds, as the wrapper's supervisor does; records
    how long each call took and when (and why) each lease first failed. Hold ``lock`` to
    change rules from the test meanwhile (python-iptables shares its table objects)."""

    def __init__(self, leases: dict, period: float = 0.5):
        super().__init__(daemon=True)
        self.leases, self.period = leases, period
        self.lock = threading.Lock()
        self.durations: dict = {name: [] for name in leases}
        self.failed: dict = {}
        self._stop_event = threading.Event()

    def run(self):
        while not self._stop_event.wait(self.period):
            with self.lock:
                for name, lease in self.leases.items():
                    if name in self.failed:
                        continue
                    t0 = time.monotonic()
                    try:
                        lease.check()
                    except Exception as exc:  # NetpolicyError expected; anything else is recorded too
                        self.failed[name] = (time.time(), f"{type(exc).__name__}: {exc}")
                    self.durations[name].append(time.monotonic() - t0)

    def wait_failed(self, name: str, timeout: float):
        deadline = time.monotonic() + timeout
        while name not in self.failed and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.failed.get(name)

    def stop(self):
        self._stop_event.set()
        self.join(10)


TEST_NFT_TABLE = "racftestfwd"
_IPT_FORWARD = ["-t", "nat", "PREROUTING", "-m", "addrtype", "--dst-type", "LOCAL", "-p", "tcp", "--dport",
                str(DNAT_PORT), "-m", "comment", "--comment", "racftest-fwd", "-j", "DNAT",
                "--to-destination", f"{SITE_IP}:{DNAT_TARGET_PORT}"]


@contextlib.contextmanager
def port_forward(kind: str):
    """A port forward of the host, as Docker or an admin adds one: TCP DNAT_PORT on every
    address of the host goes to the site's DNAT_TARGET_PORT."""
    if kind == "nft":
        sh("nft", "-f", "-", input=f"table ip {TEST_NFT_TABLE} {{\n chain pre {{\n"
           "  type nat hook prerouting priority dstnat; policy accept;\n"
           f"  fib daddr type local tcp dport {DNAT_PORT} dnat to {SITE_IP}:{DNAT_TARGET_PORT}\n }}\n}}\n")
    else:
        sh("iptables-legacy", *_IPT_FORWARD[:2], "-A", *_IPT_FORWARD[2:])
    try:
        yield
    finally:
        if kind == "nft":
            sh("nft", "delete", "table", "ip", TEST_NFT_TABLE, check=False)
        else:
            sh("iptables-legacy", *_IPT_FORWARD[:2], "-D", *_IPT_FORWARD[2:], check=False)


def _foreign(saved: str) -> str:
    return "\n".join(line for line in saved.splitlines() if "racf" not in line.lower()) + "\n"


def reload_firewall(kind: str, how: str = "flush"):
    """Do what a firewall reload does to every rule on the host: ``nft flush ruleset``
    (nftables.service restart), ``nft delete table inet racf_vm`` (how="delete-table") or an
    ``iptables-restore`` of rules that are not ours. Returns a function that puts back
    whatever else (not racf's) was loaded before."""
    if how == "delete-table":
        sh("nft", "delete", "table", "inet", "racf_vm")
        return lambda: None
    if kind == "nft":
        tables = [(t["table"]["family"], t["table"]["name"]) for t in
                  json.loads(sh("nft", "-j", "list", "tables").stdout)["nftables"] if "table" in t]
        saved = [sh("nft", "list", "table", fam, name).stdout for fam, name in tables
                 if name not in ("racf_vm", TEST_NFT_TABLE)]
        sh("nft", "flush", "ruleset")
        return lambda: [sh("nft", "-f", "-", input=text) for text in saved]
    saved4, saved6 = sh("iptables-legacy-save").stdout, sh("ip6tables-legacy-save").stdout
    empty = "".join(f"*{t}\n{''.join(f':{c} ACCEPT [0:0]' + chr(10) for c in chains)}COMMIT\n" for t, chains in (
        ("filter", ("INPUT", "FORWARD", "OUTPUT")), ("nat", ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING")),
        ("mangle", ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"))))
    sh("iptables-legacy-restore", input=empty)
    sh("ip6tables-legacy-restore", input=empty.split("*nat")[0])

    def restore():
        sh("iptables-legacy-restore", input=_foreign(saved4))
        sh("ip6tables-legacy-restore", input=_foreign(saved6))
    return restore


def neighbour(ip: str) -> dict:
    entries = json.loads(sh("ip", "-j", "neigh", "show", ip, "dev", BRIDGE).stdout or "[]")
    return entries[0] if entries else {}


def fdb_entries(mac: str) -> list:
    return [e for e in json.loads(sh("bridge", "-j", "fdb", "show", "br", BRIDGE).stdout or "[]")
            if e.get("mac") == mac]


class NsGuest:
    """A guest stand-in on the untrusted bridge: a network namespace with the lease's MAC and
    address, its bridge end addressed as libvirt addresses a guest's tap (fe:...)."""

    def __init__(self, name: str, lease, probe: str):
        self.ns, self.port, self.probe_path = f"racfg{name}{os.getpid() % 10000}", f"rg{name}{os.getpid() % 10000}", probe
        sh("ip", "netns", "add", self.ns)
        sh("ip", "link", "add", self.port, "type", "veth", "peer", "name", "eth0", "netns", self.ns)
        sh("ip", "link", "set", self.port, "address", "fe" + lease.mac[2:], "master", BRIDGE, "up")
        sh("bridge", "link", "set", "dev", self.port, "isolated", "on")  # as libvirt plugs it
        for cmd in (("link", "set", "lo", "up"), ("link", "set", "eth0", "address", lease.mac),
                    ("addr", "add", f"{lease.ip}/24", "dev", "eth0"), ("link", "set", "eth0", "up"),
                    ("route", "add", "default", "via", HOST_IP)):
            sh("ip", "netns", "exec", self.ns, "ip", *cmd)

    def probe(self, *args) -> str:
        return sh("ip", "netns", "exec", self.ns, self.probe_path, *args, check=False).stdout.strip()

    def close(self):
        sh("ip", "netns", "del", self.ns, check=False)
        sh("ip", "link", "del", self.port, check=False)
