"""tests/conftest.py's skip policy: only skips listed in MACHINE_SKIPS keep a run green."""

from pathlib import Path

pytest_plugins = ["pytester"]

CONFTEST = (Path(__file__).resolve().parents[1] / "conftest.py").read_text()


def _run(pytester, body, *args):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_sample=body)
    return pytester.runpytest_inprocess("-p", "no:cacheprovider", *args)


LISTED = """
from tests.support import prereq

def test_ok():
    pass

def test_machine():
    prereq.machine_skip("kvm-unusable")
"""

UNLISTED = LISTED + """
import pytest

def test_other():
    pytest.skip("qemu missing")

@pytest.mark.skipif(True, reason="needs root")
def test_marked():
    pass
"""


def test_listed_skip_keeps_the_run_green_and_is_reported(pytester):
    r = _run(pytester, LISTED)
    assert r.ret == 0
    r.stdout.fnmatch_lines(["*skipped for reasons about this machine*",
                            "*test_machine*machine:kvm-unusable*"])


def test_other_skips_fail_the_run_and_are_named(pytester):
    r = _run(pytester, UNLISTED)
    assert r.ret == 1
    r.stdout.fnmatch_lines(["*skipped for reasons NOT on the list: the run fails*",
                            "*test_other*qemu missing*", "*test_marked*needs root*"])


def test_allow_skips_lifts_the_rule(pytester):
    assert _run(pytester, UNLISTED, "--allow-skips").ret == 0


def test_unknown_machine_reason_is_a_bug():
    import pytest

    from tests.support import prereq

    with pytest.raises(KeyError):
        prereq.machine_skip("no-such-reason")
    assert prereq.listed_reason("[machine:no-such-reason] x") is None
