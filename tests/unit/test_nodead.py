"""racf_vm.condor.nodead: the node's ClassAd from its facts, printed for STARTD_CRON and
read back with classad2."""

import pytest

from racf_vm.condor.nodead import (
    ImageFact,
    NodeFacts,
    attr_part,
    cron_output,
    node_attributes,
)
from racf_vm.config.integration import DEFAULT_PROFILES
from tests.support.classads import parse_cron

SHA = "0123456789abcdef" * 4


def facts(**over):
    fields = dict(problems=(), untrusted_problem="", accel="tcg", profiles=DEFAULT_PROFILES, images=(
        ImageFact("busybox", "trusted", SHA, "cached"),
        ImageFact("sl-5.3", "untrusted", "f" * 64, "local"),
        ImageFact("debian12", "trusted", "e" * 64, "fetchable"),
        ImageFact("gone", "trusted", "d" * 64, "missing", "/x does not exist"),
        ImageFact("bad", "trusted", "c" * 64, "refused", "owned by uid 5"),
    ))
    fields.update(over)
    return NodeFacts(**fields)


def test_a_healthy_node():
    [ad] = parse_cron(cron_output(node_attributes(facts())))
    assert ad["RacfVMCanRun"] is True and ad["RacfVMUntrustedOK"] is True
    assert ad["RacfVMOfflineReason"] == ""
    assert ad["RacfVMAccel"] == "tcg"
    assert list(ad["RacfVMImages"]) == ["busybox", "sl-5.3", "debian12"]
    assert list(ad["RacfVMCachedImages"]) == ["busybox", "sl-5.3"]
    assert (ad["RacfVMImage_busybox_Trust"], ad["RacfVMImage_busybox_Sha256"],
            ad["RacfVMImage_busybox_State"]) == ("trusted", SHA[:12], "cached")
    assert (ad["RacfVMImage_sl_5_3_Trust"], ad["RacfVMImage_sl_5_3_State"]) == ("untrusted", "local")
    assert ad["RacfVMImage_debian12_State"] == "fetchable"
    assert not any(k.startswith(("RacfVMImage_gone", "RacfVMImage_bad")) for k in ad.keys())
    assert list(ad["RacfVMProfiles"]) == ["small", "medium", "large"]
    assert (ad["RacfVMProfile_medium_Cpus"], ad["RacfVMProfile_medium_Memory"]) == (2, 1024)
    # every line is one old-syntax assignment, in the advertiser's order
    names = [line.split(" = ", 1)[0] for line in cron_output(node_attributes(facts())).splitlines()[:-1]]
    assert names[:6] == ["RacfVMCanRun", "RacfVMOfflineReason", "RacfVMUntrustedOK", "RacfVMAccel",
                         "RacfVMImages", "RacfVMCachedImages"]


def test_a_node_that_cannot_run_says_why():
    problems = ("libvirtd is not running (nothing answers on /run/x)",
                "the wrapper /usr/local/racf/vm is not setuid root")
    [ad] = parse_cron(cron_output(node_attributes(facts(problems=problems))))
    assert ad["RacfVMCanRun"] is False and ad["RacfVMUntrustedOK"] is False
    assert ad["RacfVMOfflineReason"] == ("libvirtd is not running (nothing answers on /run/x); "
                                         "the wrapper /usr/local/racf/vm is not setuid root")


def test_a_firewall_mismatch_takes_only_the_untrusted_images_away():
    [ad] = parse_cron(cron_output(node_attributes(facts(untrusted_problem="backend mismatch"))))
    assert ad["RacfVMCanRun"] is True and ad["RacfVMUntrustedOK"] is False
    assert list(ad["RacfVMImages"]) == ["busybox", "debian12"]
    assert ad["RacfVMOfflineReason"] == "untrusted images cannot run: backend mismatch"
    assert "RacfVMImage_sl_5_3_Trust" not in ad


def test_no_usable_image_means_the_node_cannot_run():
    [ad] = parse_cron(cron_output(node_attributes(facts(images=(ImageFact("gone", "trusted", SHA, "missing"),)))))
    assert ad["RacfVMCanRun"] is False and list(ad["RacfVMImages"]) == []
    assert "no catalog image can run on this node" in ad["RacfVMOfflineReason"]


def test_names_that_collide_as_attributes_get_no_per_image_attributes():
    assert attr_part("sl-5.3") == "sl_5_3" and attr_part("a_b") == "a_b"
    images = (ImageFact("a-b", "trusted", SHA, "cached"), ImageFact("a_b", "trusted", SHA, "cached"),
              ImageFact("c", "trusted", SHA, "cached"))
    attrs = node_attributes(facts(images=images))
    assert attrs["RacfVMImages"] == ["a-b", "a_b", "c"]
    assert "RacfVMImage_a_b_Trust" not in attrs and attrs["RacfVMImage_c_Trust"] == "trusted"


@pytest.mark.parametrize("reason", ['a "quoted" path', "back\\slash in the middle", "tab\there"])
def test_values_with_quotes_survive_the_old_syntax(reason):
    [ad] = parse_cron(cron_output(node_attributes(facts(problems=(reason,)))))
    assert ad["RacfVMOfflineReason"] == reason


@pytest.mark.parametrize("argv, needle", [
    (["RACFVM", "--bogus"], "bad arguments; fix STARTD_CRON_RACFVM_ARGS"),
    (["RACFVM", "--config", "/nonexistent/racf-vm.toml"], "/nonexistent/racf-vm.toml"),
])
def test_the_advertiser_always_prints_an_ad_and_exits_0(argv, needle, capsys):
    from racf_vm.condor import advertise

    assert advertise.main(argv) == 0
    [ad] = parse_cron(capsys.readouterr().out)
    assert ad["RacfVMCanRun"] is False and needle in ad["RacfVMOfflineReason"]


def test_an_internal_error_still_gives_an_ad(monkeypatch, capsys):
    from racf_vm.condor import advertise, nodefacts

    def broken(path):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(nodefacts, "gather", broken)
    assert advertise.main(["RACFVM"]) == 0
    out = capsys.readouterr()
    [ad] = parse_cron(out.out)
    assert ad["RacfVMCanRun"] is False and "ZeroDivisionError: boom" in ad["RacfVMOfflineReason"]
    assert "internal error" in out.err
