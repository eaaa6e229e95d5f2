"""Driving racf-vm's HTCondor integrations exactly as HTCondor drives them (no HTCondor
daemons can be installed here; reference/htcondor.md says what each one does).

- Starter job hooks (§5, HookClientMgr::spawn): argv ``[hook] + args``, the job ad in old
  syntax on stdin, stdout and stderr captured, run as the job's user (PRIV_USER_FINAL) with
  exactly the environment Starter::PublishToEnv builds (no PATH among it), in the
  starter's own working directory (its EXECUTE).
- Transfer plugins (§7): run as the job's user by the starter's transfer child, with
  ``_CONDOR_JOB_AD`` and ``_CONDOR_MACHINE_AD`` set; protocol 2 gets a pre-allocated
  output file.
- JobRouter hooks (§8): no arguments, two ads separated by ``------`` on stdin, run with
  the router daemon's account (here ``nobody``) and environment.
- condor_vm-gahp around LIBVIRT_XML_SCRIPT: tests/support/vmgahp.py.
"""

from __future__ import annotations

import itertools
import json
import os
import pwd
import queue
import subprocess
import sys
import threading
from pathlib import Path

import classad2

from tests.support.condorsite import REPO, Site, run_as

ROUTER_ACCOUNT = "nobody"
OUTFILE_PREALLOCATION = 8192


def publish_env(sandbox: Path, user: str, *, slot: str = "slot1_1") -> dict:
    """Starter::PublishToEnv's variables for a job in ``sandbox`` (htcondor.md §2.2)."""
    s = str(sandbox)
    return {
        "BATCH_SYSTEM": "HTCondor",
        "_CONDOR_SCRATCH_DIR": s,
        "_CONDOR_JOB_AD": f"{s}/.job.ad",
        "_CONDOR_MACHINE_AD": f"{s}/.machine.ad",
        "_CONDOR_SLOT": slot,
        "_CONDOR_JOB_IWD": s,
        "_CONDOR_JOB_PIDS": "",
        "_CONDOR_BIN": "/usr/bin",
        "_CHIRP_DELAYED_UPDATE_PREFIX": "Chirp*",
        "CONDOR_STARTER_PID": str(os.getpid()),
        "TMPDIR": s, "TEMP": s, "TMP": s,
        "HOME": pwd.getpwnam(user).pw_dir,
        "OMP_NUM_THREADS": "1",
    }


def write_as_user(path: Path, text: str, user: str, mode: int = 0o644) -> None:
    """A sandbox file the starter wrote under the user's priv (so the user's)."""
    pw = pwd.getpwnam(user)
    path.write_text(text)
    os.chown(path, pw.pw_uid, pw.pw_gid)
    os.chmod(path, mode)


def write_ad_files(sandbox: Path, user: str, job_ad: classad2.ClassAd, memory_mib: int = 512,
                   cpus: int = 1) -> str:
    """``.job.ad`` and ``.machine.ad`` as Starter::WriteAdFiles leaves them; the job ad's text."""
    text = job_ad.printOld()
    write_as_user(sandbox / ".job.ad", text, user)
    machine = classad2.ClassAd({"MyType": "Machine", "Cpus": cpus, "Memory": memory_mib,
                                "Name": "slot1_1@node"})
    write_as_user(sandbox / ".machine.ad", machine.printOld(), user)
    return text


def run_starter_hook(site: Site, tool: str, args: list, job_ad_text: str, *, user: str,
                     sandbox: Path) -> subprocess.CompletedProcess:
    return run_as(user, [site.tool(tool)] + list(args), env=publish_env(sandbox, user),
                  cwd=str(site.execute), stdin=job_ad_text.encode())


def run_plugin(site: Site, args: list, *, user: str, sandbox: Path) -> subprocess.CompletedProcess:
    env = {"_CONDOR_JOB_AD": f"{sandbox}/.job.ad", "_CONDOR_MACHINE_AD": f"{sandbox}/.machine.ad"}
    return run_as(user, [site.tool("racf-vm-transfer")] + list(args), env=env, cwd=str(sandbox))


def plugin_files(sandbox: Path, user: str, requests: list) -> tuple[Path, Path]:
    """The -infile (new-syntax ads) and the pre-allocated -outfile of one protocol 2 run."""
    infile, outfile = sandbox / ".plugin.in", sandbox / ".plugin.out"
    ads = []
    for url, local in requests:
        ads.append(str(classad2.ClassAd({"URL": url, "LocalFileName": local,
                                         "TransferUrlDomain": "example.org"})))
    write_as_user(infile, "\n".join(ads) + "\n", user)
    write_as_user(outfile, " " * OUTFILE_PREALLOCATION, user)
    return infile, outfile


def run_router_hook(site: Site, tool: str, first: classad2.ClassAd,
                    second: classad2.ClassAd) -> subprocess.CompletedProcess:
    stdin = first.printOld() + "------\n" + second.printOld()
    return run_as(ROUTER_ACCOUNT, [site.tool(tool)], env={"CONDOR_CONFIG": "/etc/condor/condor_config"},
                  cwd="/", stdin=stdin.encode())



_GAHP_RUNS = itertools.count(1)


class GahpRun:
    """One condor_vm-gahp stand-in (tests/support/vmgahp.py) around LIBVIRT_XML_SCRIPT: it
    lives, like the real gahp, until ``finish()``; its JSON events are read with deadlines."""

    def __init__(self, site: Site, ad_text: str, *, start: bool, memory_mib: int = 512,
                 cpus: int = 1, timeout: float = 180):
        ads = site.root / "ads"
        ads.mkdir(mode=0o700, exist_ok=True)
        ad_file = ads / f"ad-{next(_GAHP_RUNS)}"
        ad_file.write_text(ad_text)
        argv = [sys.executable, "-m", "tests.support.vmgahp", "--script", site.tool("racf-vm-libvirt-xml"),
                "--ad", str(ad_file), "--memory", str(memory_mib), "--cpus", str(cpus),
                "--timeout", str(timeout)] + (["--start"] if start else [])
        self.proc = subprocess.Popen(argv, cwd=str(REPO), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        self.events: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.events.put(json.loads(line))
        self.events.put({"event": "eof"})

    def event(self, kind: str, timeout: float = 240) -> dict:
        try:
            ev = self.events.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the gahp stand-in sent no {kind!r} within {timeout}s") from None
        assert ev["event"] == kind, ev
        return ev

    @property
    def pid(self) -> int:
        return self.proc.pid

    def finish(self, timeout: float = 60) -> int:
        """The gahp exits (the VM job is over)."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("exit\n")
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
        return self.proc.wait(timeout)
