"""The JobRouter hooks, run as the JobRouter runs them (no arguments, route ad + ``------`` +
job ad on stdin, the daemon's unprivileged account); their output is parsed by classad2,
and classad2 decides which nodes the routed job matches."""

import classad2
import pytest

from racf_vm.condor import adio
from racf_vm.condor.arguments import parse_args
from tests.support import condorsim, condorsite

pytestmark = pytest.mark.root

ROUTE = classad2.ClassAd({"Name": "racf_vm", "TargetUniverse": 5})
NODES = {
    "has busybox": {"RacfVMCanRun": True, "RacfVMImages": ["busybox", "debian12"], "Arch": "X86_64",
                    "OpSys": "LINUX"},
    "lacks it": {"RacfVMCanRun": True, "RacfVMImages": ["debian12"], "Arch": "X86_64", "OpSys": "LINUX"},
    "not ready": {"RacfVMCanRun": False, "RacfVMImages": ["busybox"], "Arch": "X86_64", "OpSys": "LINUX"},
}


@pytest.fixture(scope="module")
def site():
    s = condorsite.make_site()
    yield s
    s.remove()


def _job(**extra) -> classad2.ClassAd:
    ad = classad2.ClassAd({
        "MyType": "Job", "JobUniverse": 5, "ClusterId": 501, "ProcId": 2, "Owner": "racfjob",
        "Cmd": "/home/racfjob/analysis.sh", "Arguments": "run10 'file with spaces' ''",
        "TransferInput": "data.in", "VM_Image": "busybox", "Iwd": "/home/racfjob",
        "ShouldTransferFiles": "YES", "WhenToTransferOutput": "ON_EXIT",
    })
    ad["Requirements"] = classad2.ExprTree('(TARGET.Arch == "X86_64") && (TARGET.OpSys == "LINUX")')
    ad.update(extra)
    return ad


def test_translate(site):
    proc = condorsim.run_router_hook(site, "racf-vm-route-translate", ROUTE, _job())
    assert proc.returncode == 0, proc.stderr.decode()
    routed = adio.parse_old_ad(proc.stdout.decode(), "the routed job")
    assert routed["Cmd"] == "/usr/local/racf/vm" and routed["Arguments"] == "-i busybox"
    assert routed["TransferExecutable"] is False
    assert routed["VM_Command"] == "./analysis.sh"
    assert parse_args(routed["VM_Args"]) == ["run10", "file with spaces", ""]
    # the executable still reaches the sandbox, hence the guest's working directory
    assert routed["TransferInput"] == "data.in,/home/racfjob/analysis.sh"
    for name in ("ClusterId", "Owner", "Iwd", "ShouldTransferFiles", "VM_Image"):
        assert routed[name] == _job()[name]
    assert {n for n, attrs in NODES.items() if classad2.ClassAd(attrs).matches(routed)} == {"has busybox"}


def test_translate_leaves_other_jobs_as_they_are(site):
    job = _job()
    del job["VM_Image"]
    proc = condorsim.run_router_hook(site, "racf-vm-route-translate", ROUTE, job)
    assert proc.returncode == 0
    routed = adio.parse_old_ad(proc.stdout.decode(), "the routed job")
    assert sorted(routed.keys()) == sorted(job.keys())
    assert routed["Cmd"] == job["Cmd"] and routed["Arguments"] == job["Arguments"]


def test_translate_refuses_a_bad_job_with_one_line(site):
    proc = condorsim.run_router_hook(site, "racf-vm-route-translate", ROUTE, _job(VM_Image="../x"))
    assert proc.returncode == 64 and proc.stdout == b""
    assert proc.stderr.decode().startswith("racf-vm: invalid image name") and proc.stderr.count(b"\n") == 1


def test_finalize_copies_the_exit_status_back(site):
    source = _job()
    routed = _job(Cmd="/usr/local/racf/vm", ExitCode=3, ExitBySignal=False, JobStatus=4,
                  RemoteWallClockTime=12.0)
    proc = condorsim.run_router_hook(site, "racf-vm-route-finalize", source, routed)
    assert proc.returncode == 0, proc.stderr.decode()
    updates = adio.parse_old_ad(proc.stdout.decode(), "the source job's updates")
    assert dict(updates) == {"ExitCode": 3, "ExitBySignal": False}
    killed = _job(ExitBySignal=True, ExitSignal=9)
    proc = condorsim.run_router_hook(site, "racf-vm-route-finalize", source, killed)
    assert dict(adio.parse_old_ad(proc.stdout.decode(), "updates")) == {"ExitBySignal": True,
                                                                         "ExitSignal": 9}
