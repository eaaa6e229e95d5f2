"""racf_vm.condor.arguments: HTCondor V1/V2 argument syntax."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from racf_vm.condor.arguments import is_v2, parse_args, quote_v2
from racf_vm.core.errors import UsageError


@pytest.mark.parametrize(
    "value, expected",
    [
        ("", []),
        ("   ", []),
        ("a b  c", ["a", "b", "c"]),
        ("/phenix/data33/run10/data_file 123", ["/phenix/data33/run10/data_file", "123"]),
        ("\ta\nb\r", ["a", "b"]),
        # V1: quotes and backslashes are ordinary characters
        ("it's a\\b", ["it's", "a\\b"]),
        ("a\"b c", ['a"b', "c"]),
        # V2
        ('""', []),
        ('"a b"', ["a", "b"]),
        ('  "a b"  ', ["a", "b"]),
        ("\"'one arg' two\"", ["one arg", "two"]),
        ("\"'it''s' x\"", ["it's", "x"]),
        ("\"''\"", [""]),
        ("\"a '' b\"", ["a", "", "b"]),
        ('"say ""hi"""', ["say", '"hi"']),
        ("\"a'b c'd\"", ["ab cd"]),
        ("\"'new\nline'\"", ["new\nline"]),
        ('"back\\slash"', ["back\\slash"]),
        ("\"'$(id)' ';' 'rm -rf /'\"", ["$(id)", ";", "rm -rf /"]),
        ("\"' '\"", [" "]),
        ("\"a\tb\"", ["a", "b"]),
    ],
)
def test_parse(value, expected):
    assert parse_args(value) == expected


@pytest.mark.parametrize(
    "value, needle",
    [
        ('"a b', "unbalanced double quote"),
        ('"', "unbalanced double quote"),
        ("\"'a b\"", "unbalanced single quote"),
        ("\"'it''s\"", "unbalanced single quote"),
        ('"a" b', "after the closing double quote"),
        ('"a"b"', "after the closing double quote"),
        ("a\0b", "NUL"),
    ],
)
def test_errors(value, needle):
    with pytest.raises(UsageError) as e:
        parse_args(value)
    assert needle in str(e.value)
    assert e.value.exit_status == 64


def test_is_v2():
    assert is_v2('"x"') and is_v2('  "x"') and not is_v2("x \"y\"")


def test_quote_examples():
    assert quote_v2([]) == '""'
    assert quote_v2(["a", "b c", "it's", "", 'q"']) == "\"a 'b c' 'it''s' '' q\"\"\""


# Any text an argv can carry: everything but NUL (surrogates cannot be UTF-8).
arg_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"))


@settings(max_examples=500)
@given(st.lists(arg_text, max_size=12))
def test_v2_round_trip(args):
    assert parse_args(quote_v2(args)) == args


@settings(max_examples=300)
@given(st.lists(st.text(st.characters(blacklist_categories=("Cs",),
                                      blacklist_characters="\0 \t\n\r\v\f"), min_size=1),
                max_size=8))
def test_v1_simple_join(args):
    value = " ".join(args)
    if not is_v2(value):
        assert parse_args(value) == args


@settings(max_examples=500)
@given(arg_text)
def test_never_crashes(value):
    try:
        out = parse_args(value)
    except UsageError:
        return
    assert all(isinstance(a, str) and "\0" not in a for a in out)
