"""racf_vm.condor.adio: ClassAds in and out of the HTCondor-facing tools, through classad2."""

import io

import classad2
import pytest

from racf_vm.condor import adio
from racf_vm.core.errors import UsageError


def test_parse_old_ad():
    ad = adio.parse_old_ad('MyType = "Job"\nClusterId = 12\nRequirements = TARGET.Memory > 10\n', "t")
    assert adio.lookup_str(ad, "mytype") == "Job"  # names are case-insensitive
    assert adio.lookup_int(ad, "ClusterId") == 12
    assert isinstance(adio.lookup(ad, "Requirements"), classad2.ExprTree)
    assert adio.lookup(ad, "Missing") is None
    assert adio.lookup_int(ad, "MyType") is None and adio.lookup_str(ad, "ClusterId") is None


@pytest.mark.parametrize("text", [
    'A = 1\nB = "x\ny"\nC = 3\n',  # a raw line break in a string: classad2 stops quietly
    "A = 1\nB = (((\nC = 3\n",
    "",
    "   \n",
])
def test_an_ad_that_did_not_parse_whole_is_refused(text):
    with pytest.raises(UsageError):
        adio.parse_old_ad(text, "the job ad")


@pytest.mark.parametrize("value", ['a\\b', 'a\\"b', 'x\\', 'q"', 'ab\\cd"e', "", "ünï", "$(id); rm -rf /"])
def test_format_ad_round_trips_through_classad2(value):
    text = adio.format_ad({"S": value, "N": 3, "B": False, "E": classad2.ExprTree("TARGET.X =?= true")})
    ad = adio.parse_old_ad(text, "out")
    assert ad["S"] == value and ad["N"] == 3 and ad["B"] is False
    assert str(ad["E"]) in ("TARGET.X =?= true", "TARGET.X is true")  # the same operator


@pytest.mark.parametrize("value", ["a\nb", "a\rb"])
def test_a_line_break_is_refused_not_printed(value):
    with pytest.raises(UsageError, match="line break"):
        adio.format_ad({"S": value})


def test_read_stream_caps_and_decodes():
    assert adio.read_stream(io.BytesIO(b"A = 1\n"), 10, "x") == "A = 1\n"
    with pytest.raises(UsageError, match="larger than"):
        adio.read_stream(io.BytesIO(b"x" * 11), 10, "x")
    with pytest.raises(UsageError, match="UTF-8"):
        adio.read_stream(io.BytesIO(b"\xff"), 10, "x")
    with pytest.raises(UsageError, match="NUL"):
        adio.read_stream(io.BytesIO(b"A\0"), 10, "x")


def test_router_input():
    first, second = adio.split_router_input('Name = "r"\n------\nCmd = "/bin/sh"\n', "in")
    assert adio.parse_old_ad(first, "1")["Name"] == "r"
    assert adio.parse_old_ad(second, "2")["Cmd"] == "/bin/sh"
    for bad in ('Name = "r"\n', 'A = 1\n------\nB = 2\n------\nC = 3\n'):
        with pytest.raises(UsageError):
            adio.split_router_input(bad, "in")
