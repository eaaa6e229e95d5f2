"""A stand-in for condor_vm-gahp around LIBVIRT_XML_SCRIPT (htcondor.md §4.2, from
src/condor_vm-gahp/xen_type.linux.cpp and vmgahp_common.cpp systemCommand).

    python -m tests.support.vmgahp --script PATH --ad FILE [--memory MIB] [--cpus N] [--start]

What the real gahp does, in order:
1. it runs in the job's cgroup (the starter starts it as the VM job's process, with the
   slot's memory limit and a cpu weight of 100 x Cpus);
2. it runs the script as root: fork, exec of ``[script]``, stdin = the job ad in old syntax
   with ``VMPARAM_Xen_Bootloader``, ``VMPARAM_Xen_Initrd`` and ``JobVMNetworkingType``
   appended, written whole and closed; stdout read to its end (the lines concatenated
   make the XML), then stderr; the exit status decides;
3. with --start, it opens qemu:///session as root and creates a transient domain from
   the XML with flags 0 (no autodestroy: the gahp kills the VM by name when it must).

It reports each step as one JSON line on stdout (``script``, ``started``, ``gone``), waits
for the domain to end (destroying it after --timeout), then for a line on its stdin before
it leaves its cgroup and exits: so a test can look at what the script left while the
"gahp" still lives, and again after it is gone.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

CGROOT = "/sys/fs/cgroup"


class JobCgroup:
    """The slot's cgroup (v1: memory + cpu controllers; v2: one group), joined by us."""

    def __init__(self, name: str, memory_mib: int, cpus: int):
        self.paths: list[tuple[str, str]] = []  # (cgroup dir, where we came from)
        own = {}
        for line in open("/proc/self/cgroup").read().splitlines():
            hier, ctrls, path = line.split(":", 2)
            own[ctrls] = path
        if os.path.exists(f"{CGROOT}/cgroup.controllers"):
            base = f"{CGROOT}{own['']}"
            self._make(f"{base}/{name}", base, {"memory.max": memory_mib << 20,
                                                  "cpu.weight": 100 * cpus})
        else:
            for ctrl, knob, value in (("memory", "memory.limit_in_bytes", memory_mib << 20),
                                      ("cpu", "cpu.shares", 100 * cpus)):
                came = next(p for c, p in own.items() if ctrl in c.split(","))
                os.makedirs(f"{CGROOT}/{ctrl}/htcondor", exist_ok=True)
                self._make(f"{CGROOT}/{ctrl}/htcondor/{name}", f"{CGROOT}/{ctrl}{came}", {knob: value})

    def _make(self, path: str, came_from: str, knobs: dict) -> None:
        os.mkdir(path)
        self.paths.append((path, came_from))
        for knob, value in knobs.items():
            with open(f"{path}/{knob}", "w") as f:
                f.write(str(value))
        with open(f"{path}/cgroup.procs", "w") as f:
            f.write(str(os.getpid()))

    def leave(self) -> None:
        for path, came_from in self.paths:
            with open(f"{came_from}/cgroup.procs", "w") as f:
                f.write(str(os.getpid()))
            for _ in range(50):
                try:
                    os.rmdir(path)
                    break
                except OSError:
                    time.sleep(0.1)


def emit(event: str, **fields) -> None:
    print(json.dumps(dict(fields, event=event)), flush=True)


def run_script(script: str, ad_text: str) -> tuple[int, str, str]:
    """systemCommand(args, PRIV_ROOT, &out, &in, &err, false): stdin whole then closed,
    stdout to its end, then stderr."""
    appended = ad_text
    if not appended.endswith("\n"):
        appended += "\n"
    appended += 'VMPARAM_Xen_Bootloader = ""\n'
    if "VMPARAM_Xen_Initrd" not in ad_text:
        appended += 'VMPARAM_Xen_Initrd = ""\n'
    if "JobVMNetworkingType" not in ad_text:
        appended += 'JobVMNetworkingType = "nat"\n'
    proc = subprocess.Popen([script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd="/")
    proc.stdin.write(appended.encode())
    proc.stdin.close()
    out = proc.stdout.read()
    err = proc.stderr.read()
    status = proc.wait()
    xml = "".join(line for line in out.decode(errors="replace").splitlines())
    return status, xml, err.decode(errors="replace")


def qemu_uids(name: str) -> list:
    """Real, effective, saved uid of the domain's QEMU (an observation for the tests: the
    real gahp does not look)."""
    try:
        pid = int(open(f"/run/libvirt/qemu/{name}.pid").read().strip())
        status = open(f"/proc/{pid}/status").read()
    except (OSError, ValueError):
        return []
    line = next(l for l in status.splitlines() if l.startswith("Uid:"))
    return [int(x) for x in line.split()[1:4]]


def start_and_wait(xml: str, timeout: float) -> None:
    import libvirt

    libvirt.registerErrorHandler(lambda *_: None, None)
    conn = libvirt.open("qemu:///session")
    try:
        t0 = time.monotonic()
        dom = conn.createXML(xml, 0)
        name = dom.name()
        created = time.monotonic() - t0
        emit("started", name=name, uri=conn.getURI(), qemu_uids=qemu_uids(name),
             seconds=round(created, 3))
        deadline = time.monotonic() + timeout
        destroyed = False
        while True:
            try:
                alive = conn.lookupByName(name).isActive()
            except libvirt.libvirtError:
                alive = False
            if not alive:
                break
            if time.monotonic() > deadline:
                dom.destroy()
                destroyed = True
                break
            time.sleep(0.2)
        emit("gone", name=name, destroyed=destroyed, seconds=round(time.monotonic() - t0, 3))
    except libvirt.libvirtError as exc:
        emit("start-failed", error=str(exc))
    finally:
        conn.close()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--script", required=True)
    p.add_argument("--ad", required=True)
    p.add_argument("--memory", type=int, default=512)
    p.add_argument("--cpus", type=int, default=1)
    p.add_argument("--start", action="store_true")
    p.add_argument("--timeout", type=float, default=120)
    ns = p.parse_args()
    cgroup = JobCgroup(f"racf_cx_gahp_{os.getpid()}", ns.memory, ns.cpus)
    try:
        t0 = time.monotonic()
        status, xml, err = run_script(ns.script, open(ns.ad).read())
        emit("script", status=status, xml=xml, stderr=err, pid=os.getpid(),
             seconds=round(time.monotonic() - t0, 3))
        if ns.start and status == 0:
            start_and_wait(xml, ns.timeout)
        sys.stdin.readline()  # the test says when the gahp may go
    finally:
        cgroup.leave()
    return 0


if __name__ == "__main__":
    sys.exit(main())
