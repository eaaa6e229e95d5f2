from types import SimpleNamespace

from racf_vm.guest.context import RC_LOCAL, plan_context


def _request(**kw):
    base = dict(
        uid=2501, gid=2501, user="racfjob", workdir="/var/lib/condor/execute/dir_1",
        command="/bin/sh", args=("-c", "echo $1", "x\ny "), env=(("A", "1"), ("B", "two words=x")),
    )
    base.update(kw)
    return SimpleNamespace(**base)


def _by_path(entries):
    return {e.path: e for e in entries}


def test_layout_owners_and_modes():
    entries = _by_path(plan_context(_request(), b"#!/bin/sh\n", None))
    assert entries["/racf"].is_dir and entries["/racf"].mode == 0o700
    assert entries["/racf/runner.sh"].mode == 0o700
    assert entries["/etc/rc.local"].data == RC_LOCAL and entries["/etc/rc.local"].mode == 0o755
    assert entries["/racf/job/uid"].data == b"2501\n"
    assert entries["/racf/job/user"].data == b"racfjob\n"
    assert entries["/racf/job/workdir"].data == b"/var/lib/condor/execute/dir_1\n"
    assert all(e.uid == 0 and e.gid == 0 for e in entries.values())
    assert all(e.mode & 0o077 == 0 for p, e in entries.items() if p.startswith("/racf"))
    assert "/racf/job/input.tar" not in entries


def test_arguments_and_environment_are_verbatim_data():
    entries = _by_path(plan_context(_request(), b"", "/x/input.tar"))
    assert entries["/racf/job/argv/0000"].data == b"/bin/sh"
    assert entries["/racf/job/argv/0001"].data == b"-c"
    assert entries["/racf/job/argv/0002"].data == b"echo $1"
    assert entries["/racf/job/argv/0003"].data == b"x\ny "
    assert "/racf/job/argv/0004" not in entries
    assert entries["/racf/job/env/0001"].data == b"B=two words=x"
    assert entries["/racf/job/input.tar"].upload == "/x/input.tar"


def test_directories_come_before_their_files():
    paths = [e.path for e in plan_context(_request(), b"", None)]
    for i, p in enumerate(paths):
        parent = p.rsplit("/", 1)[0]
        if parent and parent in paths:
            assert paths.index(parent) < i
