"""The wrapper form (racf_vm.condor.wrapperform) and the JobRouter hooks' logic
(racf_vm.condor.jobrouter), as data; every expression evaluated by classad2."""

import classad2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from racf_vm.condor import adio, jobrouter, wrapperform
from racf_vm.condor.arguments import parse_ad_arguments, parse_args, quote_v2
from racf_vm.condor.intake import parse_wrapper_argv
from racf_vm.core.errors import UsageError

WRAPPER = "/usr/local/racf/vm"


def v2_raw(args: list) -> str:
    """How a job ad holds V2 arguments: the submit file's value without its outer quotes,
    a doubled quote undone (condor_submit's conversion, for the tests' inputs)."""
    return quote_v2(args)[1:-1].replace('""', '"')


def job(**attrs) -> classad2.ClassAd:
    ad = classad2.ClassAd({"MyType": "Job", "JobUniverse": 5, "ClusterId": 12, "ProcId": 0,
                           "Cmd": "/home/alice/analysis.sh", "VM_Image": "busybox"})
    for name, value in attrs.items():
        if value is None:
            del ad[name]
        else:
            ad[name] = value
    return ad


def reparse(ad) -> classad2.ClassAd:
    """What HTCondor reads back: our output in old syntax, parsed again."""
    return adio.parse_old_ad(adio.format_whole_ad(ad), "output")


ARG = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0\n\r"), max_size=12)


@settings(max_examples=300, deadline=None)
@given(st.lists(ARG, max_size=6))
def test_arguments_survive_the_rewrite(args):
    """Every argument arrives in VM_Args exactly as submitted (quotes, spaces, empties)."""
    ad = job(Arguments=v2_raw(args))
    assert parse_ad_arguments(ad["Arguments"], None) == args
    updates = wrapperform.wrapper_form(ad, "busybox", WRAPPER, "./analysis.sh")
    out = adio.parse_old_ad(adio.format_ad(updates), "updates")
    assert parse_args(out["VM_Args"]) == args


def test_v1_arguments_and_none():
    assert parse_ad_arguments(None, "a  b\\c 'd") == ["a", "b\\c", "'d"]
    assert parse_ad_arguments("x 'y z'", "ignored") == ["x", "y z"]  # Arguments wins
    assert parse_ad_arguments(None, None) == []
    with pytest.raises(UsageError):
        parse_ad_arguments(3, None)


def test_the_wrapper_form_is_what_the_wrapper_reads():
    updates = wrapperform.wrapper_form(job(Arguments="-n 'two words'"), "busybox", WRAPPER, "./analysis.sh")
    assert updates["Cmd"] == WRAPPER and updates["TransferExecutable"] is False
    assert parse_wrapper_argv(parse_ad_arguments(updates["Arguments"], None)).image == "busybox"
    assert updates["VM_Command"] == "./analysis.sh"
    with pytest.raises(UsageError, match="line break"):
        wrapperform.wrapper_form(job(Arguments="'a\nb'"), "busybox", WRAPPER, "x")


# -- TRANSLATE_JOB --------------------------------------------------------------------

MACHINES = {
    "ready, has it": {"RacfVMCanRun": True, "RacfVMImages": ["debian12", "busybox"], "Arch": "X86_64"},
    "ready, lacks it": {"RacfVMCanRun": True, "RacfVMImages": ["debian12"], "Arch": "X86_64"},
    "has it, not ready": {"RacfVMCanRun": False, "RacfVMImages": ["busybox"], "Arch": "X86_64"},
    "no racf-vm": {"Arch": "X86_64"},
}


def matching(routed) -> set:
    """The machines whose ads satisfy the routed job's requirements (classad2 decides)."""
    return {name for name, attrs in MACHINES.items() if classad2.ClassAd(attrs).matches(routed)}


def test_translate_a_transferred_executable():
    source = job(Arguments="-n 'two words'", TransferInput="in.dat, cfg.txt",
                 Requirements=classad2.ExprTree('TARGET.Arch == "X86_64"'))
    routed = reparse(jobrouter.translate(source, WRAPPER))
    assert routed["Cmd"] == WRAPPER and routed["Arguments"] == "-i busybox"
    assert routed["TransferExecutable"] is False
    assert routed["VM_Command"] == "./analysis.sh"
    assert parse_args(routed["VM_Args"]) == ["-n", "two words"]
    assert routed["TransferInput"] == "in.dat,cfg.txt,/home/alice/analysis.sh"
    assert matching(routed) == {"ready, has it"}
    assert routed["ClusterId"] == 12 and routed["VM_Image"] == "busybox"  # the rest is kept


def test_translate_an_installed_executable_with_v1_args():
    source = job(TransferExecutable=False, Cmd="/phenix/u/chris/job.sh", Args="/data/f 7")
    routed = reparse(jobrouter.translate(source, WRAPPER))
    assert routed["VM_Command"] == "/phenix/u/chris/job.sh"
    assert parse_args(routed["VM_Args"]) == ["/data/f", "7"]
    assert "Args" not in routed and "TransferInput" not in routed
    assert matching(routed) == {"ready, has it"}


def test_a_job_not_for_racf_vm_is_routed_as_it_came():
    source = job(VM_Image=None, Arguments="a b")
    assert adio.format_whole_ad(jobrouter.translate(source, WRAPPER)) == adio.format_whole_ad(source)


def test_a_job_already_in_the_wrapper_form_only_gains_the_match():
    source = job(Cmd=WRAPPER, Arguments="-i busybox", TransferExecutable=False, VM_Command="/bin/true")
    routed = reparse(jobrouter.translate(source, WRAPPER))
    assert routed["Arguments"] == "-i busybox" and routed["VM_Command"] == "/bin/true"
    assert "VM_Args" not in routed
    assert matching(routed) == {"ready, has it"}


@pytest.mark.parametrize("attrs, needle", [
    ({"VM_Image": "Bad Name"}, "invalid image name"),
    ({"Cmd": None}, "no Cmd"),
    ({"TransferInput": classad2.ExprTree("strcat(\"a\", \"b\")")}, "TransferInput"),
    ({"Cmd": "/home/a,b/x.sh"}, "comma"),
    ({"JobUniverse": 13}, "vanilla jobs"),
])
def test_translate_refusals(attrs, needle):
    with pytest.raises(UsageError, match=needle):
        jobrouter.translate(job(**attrs), WRAPPER)


def test_the_image_requirement_quotes_through_classad2():
    expr = classad2.ExprTree(jobrouter.image_requirement("a.b-c_1"))
    assert classad2.ClassAd({"RacfVMCanRun": True, "RacfVMImages": ["a.b-c_1"]}).matches(
        classad2.ClassAd({"Requirements": expr}))


# -- JOB_FINALIZE ---------------------------------------------------------------------

def test_finalize_copies_the_exit_status():
    routed = classad2.ClassAd({"ExitCode": 3, "ExitBySignal": False, "JobStatus": 4, "Cmd": WRAPPER})
    assert jobrouter.finalize(routed) == {"ExitCode": 3, "ExitBySignal": False}
    signalled = classad2.ClassAd({"ExitBySignal": True, "ExitSignal": 9})
    assert jobrouter.finalize(signalled) == {"ExitBySignal": True, "ExitSignal": 9}
    odd = classad2.ClassAd({"ExitCode": "3", "ExitBySignal": 1, "ExitSignal": True})
    assert jobrouter.finalize(odd) == {}  # wrong types are not copied
    assert jobrouter.finalize(classad2.ClassAd({"JobStatus": 3})) == {}


@pytest.mark.parametrize("images, problems, matches", [
    ((("busybox", "cached"),), (), True),
    ((("busybox", "fetchable"),), (), True),  # the wrapper fetches it first
    ((("busybox", "missing"), ("debian12", "cached")), (), False),
    ((("busybox", "cached"),), ("libvirtd is not running",), False),
])
def test_routed_jobs_match_what_the_advertiser_prints(images, problems, matches):
    """The attribute names and list form the route's requirements use are the ones the
    STARTD_CRON advertiser really prints (nodead, read back as HTCondor would)."""
    from racf_vm.condor.nodead import ImageFact, NodeFacts, cron_output, node_attributes
    from racf_vm.config.integration import DEFAULT_PROFILES
    from tests.support.classads import parse_cron

    facts = NodeFacts(problems=problems, untrusted_problem="", accel="tcg", profiles=DEFAULT_PROFILES,
                      images=tuple(ImageFact(n, "trusted", "a" * 64, s) for n, s in images))
    [machine] = parse_cron(cron_output(node_attributes(facts)))
    machine["Arch"] = "X86_64"
    routed = reparse(jobrouter.translate(job(), WRAPPER))
    assert machine.matches(routed) is matches
