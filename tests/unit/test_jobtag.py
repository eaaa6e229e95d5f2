import os

from racf_vm.core import jobtag


def test_tag_round_trip_and_sanitizing():
    owner = jobtag.Owner(1234, 98765)
    tag = jobtag.make_tag("slot1_1@host/../x", "12", "0; rm", owner)
    assert "/" not in tag and " " not in tag and ";" not in tag
    assert jobtag.parse_tag(tag) == owner


def test_parse_rejects_foreign_names():
    assert jobtag.parse_tag("default") is None
    assert jobtag.parse_tag("x-12-") is None


def test_liveness_uses_pid_and_start_time():
    me = jobtag.self_owner()
    assert jobtag.is_alive(me)
    assert not jobtag.is_alive(jobtag.Owner(me.pid, me.start + 1))
    assert jobtag.process_start(2**22 + 12345) is None
    assert me.pid == os.getpid()
