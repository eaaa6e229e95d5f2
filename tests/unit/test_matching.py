"""The user guide's submit file against what a node advertises, evaluated by classad2:
its requirements match a node that holds the image, its rank prefers one, and its
``$$()`` references resolve in the machine ad."""

import re
from pathlib import Path

import classad2
import pytest

from racf_vm.condor.arguments import parse_args
from racf_vm.condor.intake import WrapperArgs, parse_wrapper_argv
from racf_vm.condor.nodead import ImageFact, NodeFacts, cron_output, node_attributes
from racf_vm.config import parse_config
from racf_vm.config.integration import DEFAULT_PROFILES, find_profile
from tests.support.classads import parse_cron

REPO = Path(__file__).resolve().parents[2]
MARK = "# racf-vm: matching example"
SHA = "ab12cd34ef56" + "0" * 52
_DOLLAR = re.compile(r"\$\$\((\[.*?\]|[A-Za-z_][A-Za-z0-9_]*)\)")


def submit_file() -> dict:
    """The example's commands (``+Attr`` keeps its plus) from docs/user-guide.md."""
    text = (REPO / "docs" / "user-guide.md").read_text()
    blocks = re.findall(r"```\n(.*?)```", text, re.S)
    [block] = [b for b in blocks if b.startswith(MARK)]
    commands = {}
    for line in block.splitlines():
        if line.strip() and not line.startswith("#") and line.strip() != "queue":
            key, _, value = line.partition("=")
            commands[key.strip()] = value.strip()
    return commands


def machine(images=(ImageFact("busybox", "trusted", SHA, "cached"),), problems=()) -> classad2.ClassAd:
    """A slot ad as the startd would publish it: its own attributes plus the advertiser's
    output (exactly as printed for STARTD_CRON, read back)."""
    facts = NodeFacts(problems, "", "tcg", tuple(images), DEFAULT_PROFILES)
    [cron] = parse_cron(cron_output(node_attributes(facts)))
    ad = classad2.parseOne('Name = "slot1@node"\nRequirements = true\nCpus = 8\nMemory = 16384')
    ad.update(cron)
    return ad


def job_ad(commands: dict) -> classad2.ClassAd:
    ad = classad2.ClassAd()
    ad["Requirements"] = classad2.ExprTree(commands["requirements"])
    ad["Rank"] = classad2.ExprTree(commands["rank"])
    ad["RequestCpus"] = int(commands["request_cpus"])
    ad["RequestMemory"] = int(commands["request_memory"])
    return ad


def test_the_example_is_a_well_formed_racf_vm_job():
    c = submit_file()
    assert (c["universe"], c["executable"], c["transfer_executable"]) == (
        "vanilla", parse_config(b"", "t").condor.wrapper, "false")
    wanted = parse_wrapper_argv(parse_args(c["arguments"]))
    assert wanted == WrapperArgs("busybox", "medium")
    profile = find_profile(DEFAULT_PROFILES, wanted.profile)
    assert (int(c["request_cpus"]), int(c["request_memory"])) == (profile.cpus, profile.memory_mib)


def test_requirements_match_a_node_holding_the_image_and_rank_prefers_it():
    job = job_ad(submit_file())
    holding = machine()
    assert holding.matches(job) and job.symmetricMatch(holding)
    fetching = machine(images=(ImageFact("busybox", "trusted", SHA, "fetchable"),))
    assert fetching.matches(job)  # may run there after a download...
    rank = classad2.ExprTree(submit_file()["rank"])
    assert rank.eval(holding) is True and rank.eval(fetching) is False  # ...but prefers the cache


@pytest.mark.parametrize("node", [
    machine(images=(ImageFact("debian12", "trusted", SHA, "cached"),)),       # not this image
    machine(problems=("libvirtd is not running",)),                           # cannot run at all
    machine(images=(ImageFact("busybox", "trusted", SHA, "missing"),)),       # gone from the node
    classad2.parseOne('Name = "slot1@plain"\nRequirements = true\nCpus = 8'),  # no racf-vm there
])
def test_requirements_refuse_nodes_that_cannot_run_the_job(node):
    assert not node.matches(job_ad(submit_file()))


def test_dollar_dollar_references_resolve_in_the_machine_ad():
    node = machine()
    custom = {k[1:]: v for k, v in submit_file().items() if k.startswith("+")}
    refs = {name: _DOLLAR.findall(value) for name, value in custom.items()}
    assert {n for n, r in refs.items() if r} == {"MatchedImageSha256", "MatchedAccel", "MatchedVMMemory"}

    def substitute(m: re.Match) -> str:  # what HTCondor puts in when the job starts
        inner = m.group(1)
        value = classad2.ExprTree(inner[1:-1] if inner.startswith("[") else inner).eval(node)
        assert value not in (classad2.Value.Undefined, classad2.Value.Error), inner
        return value if isinstance(value, str) else str(value)

    resolved = classad2.parseOne("\n".join(f"{name} = {_DOLLAR.sub(substitute, value)}"
                                           for name, value in custom.items() if refs[name]))
    assert resolved["MatchedImageSha256"] == SHA[:12]
    assert resolved["MatchedAccel"] == "tcg"
    assert resolved["MatchedVMMemory"] == 1024
