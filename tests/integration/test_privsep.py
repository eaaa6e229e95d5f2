"""privsep: the child really is the caller, and errors cross back as the same class."""

import io
import os

import pytest

from racf_vm.core.errors import InternalError, UsageError
from racf_vm.trust import privsep
from tests.support import testenv

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def caller():
    testenv.ensure_users()
    uid = testenv.JOB_USERS["racfjob"]
    return privsep.Caller(uid, uid)


def _ids():
    return {"res": list(os.getresuid()), "gid": list(os.getresgid()), "groups": os.getgroups()}


def test_child_runs_as_caller_for_good(caller):
    ids = privsep.call_as_user(caller, _ids)
    assert ids == {"res": [caller.uid] * 3, "gid": [caller.gid] * 3, "groups": []}


def _raise_usage():
    raise UsageError("bad\nrequest")


def _crash():
    raise KeyError("boom")


def test_errors_cross_with_their_class(caller):
    with pytest.raises(UsageError, match="^bad request$"):
        privsep.call_as_user(caller, _raise_usage)
    with pytest.raises(InternalError, match="KeyError"):
        privsep.call_as_user(caller, _crash)


def _stream(out, n):
    out.write(b"x" * n)
    return n


def test_stream_copied_and_capped(caller):
    sink = io.BytesIO()
    assert privsep.call_as_user(caller, _stream, 1000, stream_to=sink, stream_limit=5000) == 1000
    assert sink.getvalue() == b"x" * 1000
    with pytest.raises(UsageError, match="larger than the site limit"):
        privsep.call_as_user(caller, _stream, 10000, stream_to=io.BytesIO(), stream_limit=5000)


def _sleep():
    import time

    time.sleep(30)


def test_timeout_kills_child(caller):
    from racf_vm.core.errors import TemporaryError

    with pytest.raises(TemporaryError, match="longer than"):
        privsep.call_as_user(caller, _sleep, timeout=0.5)
