"""The starter's job hooks, driven as condor_starter drives them (tests/support/condorsim.py):
PREPARE_JOB stages a VM-universe job's disk or rewrites a vanilla job into the wrapper
form; JOB_EXIT removes what PREPARE_JOB staged. Every ad they print is parsed by classad2."""

import pwd
import stat

import classad2
import pytest

from racf_vm.condor import adio, vmudisk
from racf_vm.condor.ads import read_job_ad
from racf_vm.condor.arguments import parse_ad_arguments, parse_args
from racf_vm.condor.intake import parse_wrapper_argv
from tests.support import condorsim, condorsite

pytestmark = pytest.mark.root

USER = "racfjob"


@pytest.fixture(scope="module")
def site():
    s = condorsite.make_site()
    yield s
    s.remove()


def _vm_job(**extra) -> classad2.ClassAd:
    ad = classad2.ClassAd({"MyType": "Job", "JobUniverse": 13, "ClusterId": 41, "ProcId": 0,
                           "Owner": USER, "Cmd": "an-instance", "JobVMType": "kvm", "JobVMMemory": 256,
                           "VMPARAM_vm_Disk": "placeholder:vda:w", "HookKeyword": "RACFVM",
                           "VM_Image": "busybox"})
    ad.update(extra)
    return ad


def _vanilla_job(sandbox, **extra) -> classad2.ClassAd:
    ad = classad2.ClassAd({"MyType": "Job", "JobUniverse": 5, "ClusterId": 42, "ProcId": 1,
                           "Owner": USER, "Cmd": "/home/racfjob/analysis.sh",
                           "Arguments": "-n 'two words' \"q\" ''", "Iwd": "/home/racfjob",
                           "HookKeyword": "RACFVM", "VM_Image": "busybox"})
    ad.update(extra)
    return ad


def _output(proc) -> classad2.ClassAd:
    assert proc.returncode == 0, proc.stderr.decode()
    return adio.parse_old_ad(proc.stdout.decode(), "the hook's output")


def test_prepare_stages_a_vm_universe_disk_and_exit_removes_it(site):
    sandbox = site.make_sandbox(USER, 6101)
    text = condorsim.write_ad_files(sandbox, USER, _vm_job())
    out = _output(condorsim.run_starter_hook(site, "racf-vm-hook-prepare", [], text, user=USER,
                                             sandbox=sandbox))
    assert out["VMPARAM_vm_Disk"] == "racf-busybox.qcow2:vda:w:qcow2"
    assert out["RacfVMStaged"] == "racf-busybox.qcow2" and out["RacfVMStagedImage"] == "busybox"
    staged = sandbox / "racf-busybox.qcow2"
    st = staged.lstat()
    assert stat.S_ISREG(st.st_mode) and st.st_uid == pwd.getpwnam(USER).pw_uid  # the user's
    # what LIBVIRT_XML_SCRIPT will make of it: an overlay on the catalog's busybox
    head = staged.read_bytes()[:vmudisk.HEADER_BYTES]
    from racf_vm.images import catalog

    cat = catalog.load_catalog(str(site.catalog))
    assert vmudisk.identify_image(head, st.st_size, cat, "busybox", staged.name).name == "busybox"
    # JOB_EXIT gets the job ad with PREPARE_JOB's updates and the exit attributes
    merged = _vm_job()
    merged.update(out)
    merged.update({"ExitCode": 0, "ExitBySignal": False, "JobState": "Exited", "JobDuration": 7})
    done = condorsim.run_starter_hook(site, "racf-vm-hook-exit", ["exit"], merged.printOld(),
                                      user=USER, sandbox=sandbox)
    assert done.returncode == 0, done.stderr.decode()
    assert not staged.exists()
    assert sorted(p.name for p in sandbox.iterdir()) == [".job.ad", ".machine.ad"]


def test_prepare_rewrites_a_vanilla_job_into_the_wrapper_form(site):
    sandbox = site.make_sandbox(USER, 6102, mode=0o700)
    condorsim.write_as_user(sandbox / "analysis.sh", "#!/bin/sh\necho hi\n", USER, 0o755)
    text = condorsim.write_ad_files(sandbox, USER, _vanilla_job(sandbox))
    out = _output(condorsim.run_starter_hook(site, "racf-vm-hook-prepare", [], text, user=USER,
                                             sandbox=sandbox))
    assert out["Cmd"] == "/usr/local/racf/vm" and out["TransferExecutable"] is False
    assert parse_wrapper_argv(parse_ad_arguments(out["Arguments"], None)).image == "busybox"
    # the transferred executable: the sandbox copy, which the guest gets with the input
    assert out["VM_Command"] == f"{sandbox}/analysis.sh"
    assert parse_args(out["VM_Args"]) == ["-n", "two words", '"q"', ""]
    # the wrapper reads the command from .job.ad (written before the hook ran): now there
    info = read_job_ad(str(sandbox / ".job.ad"), 1 << 20)
    assert (info.command, info.args, info.cluster, info.proc) == (
        f"{sandbox}/analysis.sh", ("-n", "two words", '"q"', ""), 42, 1)
    st = (sandbox / ".job.ad").lstat()
    assert st.st_uid == pwd.getpwnam(USER).pw_uid and stat.S_ISREG(st.st_mode)


def test_an_executable_on_the_node_stays_as_submitted(site):
    sandbox = site.make_sandbox(USER, 6103, mode=0o700)
    job = _vanilla_job(sandbox, Cmd="/phenix/u/chris/job.sh", TransferExecutable=False)
    del job["Arguments"]
    job["Args"] = "/phenix/data33/run10/data_file 7"
    text = condorsim.write_ad_files(sandbox, USER, job)
    out = _output(condorsim.run_starter_hook(site, "racf-vm-hook-prepare", [], text, user=USER,
                                             sandbox=sandbox))
    assert out["VM_Command"] == "/phenix/u/chris/job.sh"
    assert parse_args(out["VM_Args"]) == ["/phenix/data33/run10/data_file", "7"]


def test_a_job_not_for_racf_vm_is_left_alone(site):
    """The keyword may be forced on every job (STARTER_JOB_HOOK_KEYWORD): no output, no files."""
    sandbox = site.make_sandbox(USER, 6104, mode=0o700)
    job = _vanilla_job(sandbox)
    del job["VM_Image"]
    text = condorsim.write_ad_files(sandbox, USER, job)
    before = (sandbox / ".job.ad").read_bytes()
    proc = condorsim.run_starter_hook(site, "racf-vm-hook-prepare", [], text, user=USER, sandbox=sandbox)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b"")
    assert (sandbox / ".job.ad").read_bytes() == before


@pytest.mark.parametrize("image, code, needle", [
    ("nosuch", 64, "unknown image 'nosuch'"),  # the job's mistake: held
    ("busybox-unsynced", 375, "not in this node's verified image cache"),  # another node: idle
    ("Bad/Name", 64, "invalid image name"),
])
def test_prepare_refusals_are_hook_status_ads(site, image, code, needle):
    sandbox = site.make_sandbox(USER, 6110 + len(image), mode=0o755)
    text = condorsim.write_ad_files(sandbox, USER, _vm_job(VM_Image=image))
    proc = condorsim.run_starter_hook(site, "racf-vm-hook-prepare", [], text, user=USER, sandbox=sandbox)
    assert proc.returncode != 0
    out = adio.parse_old_ad(proc.stdout.decode(), "the hook's output")
    assert out["HookStatusCode"] == code and needle in out["HookStatusMessage"]
    assert out["HookStatusMessage"].startswith("racf-vm: ")
    assert proc.stderr.decode().count("\n") == 1
    assert sorted(p.name for p in sandbox.iterdir()) == [".job.ad", ".machine.ad"]


def test_exit_refuses_a_name_it_did_not_stage(site):
    sandbox = site.make_sandbox(USER, 6120, mode=0o700)
    condorsim.write_as_user(sandbox / "results.dat", "precious", USER)
    ad = _vm_job(RacfVMStaged="results.dat")
    proc = condorsim.run_starter_hook(site, "racf-vm-hook-exit", ["remove"], ad.printOld(), user=USER,
                                      sandbox=sandbox)
    assert proc.returncode == 0
    assert (sandbox / "results.dat").read_text() == "precious"
    bad = condorsim.run_starter_hook(site, "racf-vm-hook-exit", ["bogus"], ad.printOld(), user=USER,
                                     sandbox=sandbox)
    assert bad.returncode == 64 and bad.stderr.decode().startswith("racf-vm: usage")

