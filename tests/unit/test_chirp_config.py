"""racf_vm.condor.chirp / chirpagent without a server: the .chirp.config format, what an
update may carry, and that a publisher never raises."""

import json

import pytest

from racf_vm.condor import chirp
from racf_vm.condor.chirpagent import ChirpEndpoint, expressions, parse_chirp_config
from racf_vm.core.errors import UsageError


@pytest.mark.parametrize("text, endpoint", [
    ("127.0.0.1 40123 3a9fCookie\n", ChirpEndpoint("127.0.0.1", 40123, "3a9fCookie")),
    ("node.example.org 9618 x/y+z=\n", ChirpEndpoint("node.example.org", 9618, "x/y+z=")),
    ("[::1] 1 c", ChirpEndpoint("::1", 1, "c")),
])
def test_chirp_config_ok(text, endpoint):
    assert parse_chirp_config(text) == endpoint


@pytest.mark.parametrize("text, needle", [
    ("", "not 0 field"),
    ("127.0.0.1 40123", "not 2 field"),
    ("127.0.0.1 40123 c extra", "not 4 field"),
    ("127.0.0.1 0 c", "bad port"),
    ("127.0.0.1 65536 c", "bad port"),
    ("127.0.0.1 -1 c", "bad port"),
    ("host;rm 1 c", "bad host"),
    ("127.0.0.1 1 c\x7f", "bad cookie"),
])
def test_chirp_config_bad(text, needle):
    with pytest.raises(UsageError, match=needle):
        parse_chirp_config(text)


def test_values_become_classad_expressions_by_classad2():
    assert expressions({"RacfVMState": "booting", "RacfVMExitCode": 3, "Flag": True,
                        "Q": 'a "b"'}) == [
        ("RacfVMState", '"booting"'), ("RacfVMExitCode", "3"), ("Flag", "true"), ("Q", '"a \\"b\\""')]


@pytest.mark.parametrize("attrs", [
    {"bad name": "x"}, {"1abc": "x"}, {"A": 1.5}, {"A": None}, {"A": ["x"]}, {"A": "x" * 2000},
    {f"A{i}": "x" * 1000 for i in range(5)},
])
def test_updates_that_cannot_be_sent_are_refused(attrs):
    with pytest.raises(ValueError):
        chirp._message(attrs)


def test_a_message_is_one_json_line_within_pipe_buf():
    data = chirp._message({"RacfVMState": "exited", "RacfVMExitCode": 0})
    assert data.endswith(b"\n") and data.count(b"\n") == 1 and len(data) <= chirp.MAX_MESSAGE
    assert json.loads(data) == {"RacfVMState": "exited", "RacfVMExitCode": 0}


def test_publishers_never_raise(caplog):
    null = chirp.NullPublisher()
    null.update(RacfVMState="booting")
    null.close()
    closed = chirp.Publisher(pid=2**22 + 5, write_fd=-1)  # no pipe, no such process
    closed.update(RacfVMState="booting", **{"bad name": 1})
    closed.close()
    bad_fd = chirp.Publisher(pid=2**22 + 7, write_fd=9999)  # a fd and a pid that are not there
    bad_fd.update(RacfVMState="booting")
    bad_fd.update(**{"bad name": "x"})
    bad_fd.close()
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1  # once, whatever the number of failures
