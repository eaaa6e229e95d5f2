"""A site network on this machine for trusted guests (all built here, removed afterwards):

    trusted guest --+                                    netns racfsrv<N> ("a site server")
                    |-- racfsite<N> bridge -- veth --  10.231.<N>.2: NFS (nfs-ganesha, v4.1,
    host 10.231.<N>.1: dnsmasq (the site's DHCP,          PrivilegedPort = secure), low-port
      static leases only, --dhcp-hostsdir), low-port     service :7010
      service :7010

    untrusted guest -- netpolicy's NAT network -- host (NAT, ports >= 1024) -- the bridge

The site's DHCP server answers only the MACs its hosts directory names, so a guest has an
address on this network only through a reservation. The NFS server runs in userspace
(nfs-ganesha): this machine's kernel has no NFS server, and a server on another host of
the site network (a namespace here) is what a site has. Both services trust reserved
source ports only, like an NFS export with ``secure``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
LOWPORT_PORT = 7010
EXPORT_PSEUDO = "/export"
DNSMASQ = "/usr/sbin/dnsmasq"
GANESHA = "/usr/bin/ganesha.nfsd"
GANESHA_VFS = "/usr/lib/x86_64-linux-gnu/ganesha/libfsalvfs.so"


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), check=check, capture_output=True, text=True, timeout=60)


def ganesha_config(export: Path, clients: str, recovery: Path) -> str:
    """NFSv4.1 only, one export for the site subnet only: rw, root squashed, and
    ``PrivilegedPort`` (what ``secure`` is for the kernel's NFS server)."""
    return f"""
NFS_CORE_PARAM {{
    Protocols = 4;
    Enable_NLM = false;
    Enable_RQUOTA = false;
    Enable_UDP = false;
}}
NFSV4 {{
    Graceless = true;
    Minor_Versions = 1, 2;
    RecoveryRoot = "{recovery}";
}}
EXPORT_DEFAULTS {{
    Access_Type = None;
}}
EXPORT {{
    Export_Id = 1;
    Path = "{export}";
    Pseudo = "{EXPORT_PSEUDO}";
    Protocols = 4;
    Transports = TCP;
    SecType = sys;
    Squash = Root_Squash;
    PrivilegedPort = true;
    CLIENT {{
        Clients = {clients};
        Access_Type = RW;
    }}
    FSAL {{
        Name = VFS;
    }}
}}
"""


class SiteNetwork:
    def __init__(self, root: Path, export_uid: int):
        n = os.getpid() % 200 + 20
        self.root = root
        self.bridge = f"racfsite{n}"
        self.ns = f"racfsrv{n}"
        self.veth_host, self.veth_server = f"rss{n}h", f"rss{n}s"
        net = f"10.231.{n}"
        self.subnet = f"{net}.0/24"
        self.host_ip, self.server_ip = f"{net}.1", f"{net}.2"
        self.pool = f"{net}.100-{net}.103"
        self.hostsdir = root / "hosts.d"
        self.export = root / "export"
        self.export_uid = export_uid
        self.dnsmasq_log = root / "dnsmasq.log"
        self.ganesha_log = root / "ganesha.log"
        self.lowport_logs = {"host": root / "lowport-host.jsonl", "server": root / "lowport-server.jsonl"}
        self.procs: list[subprocess.Popen] = []
        self._forward = None
        self._made: list[tuple[str, ...]] = []

    # -- what the guests are told (the catalog entry's kernel command line) ---------------
    @property
    def lowport_targets(self) -> dict:
        return {"host": f"{self.host_ip}:{LOWPORT_PORT}", "server": f"{self.server_ip}:{LOWPORT_PORT}"}

    @property
    def nfs_source(self) -> str:
        return f"{self.server_ip}:{EXPORT_PSEUDO}"

    def guest_cmdline(self) -> str:
        return f"site.lowport={','.join(self.lowport_targets.values())} site.nfs={self.nfs_source}"

    # -- up and down ----------------------------------------------------------------------------
    def up(self) -> None:
        for d, mode in ((self.hostsdir, 0o755), (self.export, 0o755), (self.root / "recovery", 0o700)):
            d.mkdir(mode=mode)
            os.chmod(d, mode)
        os.chown(self.export, self.export_uid, self.export_uid)
        with open("/proc/sys/net/ipv4/ip_forward") as f:
            self._forward = f.read().strip()
        self._link("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "addr", "add", f"{self.host_ip}/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        sh("ip", "netns", "add", self.ns)
        self._made.append(("ip", "netns", "del", self.ns))
        self._link("ip", "link", "add", self.veth_host, "type", "veth", "peer", "name", self.veth_server)
        sh("ip", "link", "set", self.veth_server, "netns", self.ns)
        sh("ip", "link", "set", self.veth_host, "master", self.bridge)
        sh("ip", "link", "set", self.veth_host, "up")
        ns = ("ip", "netns", "exec", self.ns)
        sh(*ns, "ip", "link", "set", "lo", "up")
        sh(*ns, "ip", "addr", "add", f"{self.server_ip}/24", "dev", self.veth_server)
        sh(*ns, "ip", "link", "set", self.veth_server, "up")
        # the untrusted NAT network reaches the site through this host, as on a real node
        with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
            f.write("1\n")
        self._start_dnsmasq()
        self._start_ganesha(ns)
        self._start([sys.executable, str(HERE / "lowport.py"), str(self.lowport_logs["host"]),
                     self.lowport_targets["host"]], ready="ready")
        self._start([*ns, sys.executable, str(HERE / "lowport.py"), str(self.lowport_logs["server"]),
                     self.lowport_targets["server"]], ready="ready")

    def _link(self, *argv: str) -> None:
        sh(*argv)
        self._made.append(("ip", "link", "del", argv[3]))

    def _start_dnsmasq(self) -> None:
        self._start([DNSMASQ, "--keep-in-foreground", "--conf-file=/dev/null", "--port=0",
                     f"--interface={self.bridge}", "--bind-interfaces", "--except-interface=lo",
                     f"--dhcp-range={self.subnet.split('/')[0]},static,255.255.255.0,2m",
                     f"--dhcp-hostsdir={self.hostsdir}",
                     f"--dhcp-leasefile={self.root / 'dnsmasq.leases'}",
                     f"--pid-file={self.root / 'dnsmasq.pid'}", "--log-dhcp",
                     f"--log-facility={self.dnsmasq_log}"],
                    ready_log=self.dnsmasq_log, ready="static leases only")

    def _start_ganesha(self, ns: tuple) -> None:
        conf = self.root / "ganesha.conf"
        conf.write_text(ganesha_config(self.export, self.subnet, self.root / "recovery"))
        self._start([*ns, GANESHA, "-F", "-f", str(conf), "-L", str(self.ganesha_log),
                     "-p", str(self.root / "ganesha.pid"), "-N", "NIV_EVENT"],
                    ready_log=self.ganesha_log, ready="NFS SERVER INITIALIZED")

    def _start(self, argv: list, *, ready: str, ready_log: Path = None, timeout: float = 30.0) -> None:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        self.procs.append(p)
        if ready_log is None:
            line = p.stdout.readline()
            if line.strip() != ready:
                raise RuntimeError(f"{argv[0]} did not start: {line!r} {p.stderr.read()}")
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready_log.exists() and ready in ready_log.read_text(errors="replace"):
                return
            if p.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"{argv[0]} did not start within {timeout:g}s: {p.stderr.read() if p.poll() is not None else ''}"
                           f"{ready_log.read_text(errors='replace')[-2000:] if ready_log.exists() else ''}")

    def down(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.procs.clear()
        for argv in reversed(self._made):
            sh(*argv, check=False)
        self._made.clear()
        if self._forward is not None:
            with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
                f.write(self._forward + "\n")
            self._forward = None

    # -- what happened ------------------------------------------------------------------------
    def lowport_log(self, which: str) -> list:
        path = self.lowport_logs[which]
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    def dhcp_acks(self) -> list[str]:
        """The DHCPACK lines of the site's DHCP server ("<ip> <mac>")."""
        text = self.dnsmasq_log.read_text(errors="replace") if self.dnsmasq_log.exists() else ""
        return [line.split("DHCPACK(")[1].split(") ", 1)[1].strip()
                for line in text.splitlines() if "DHCPACK(" in line]


def remove_tree(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)
